"""Configuration loading: the template is complete and valid, every error is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gosat_pipeline.config import (
    RunConfig,
    config_from_dict,
    config_to_yaml,
    load_config,
    section_hash,
)
from gosat_pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "configs" / "template.yaml"


def _keys(model: type, prefix: str = "") -> set[str]:
    import typing

    from pydantic import BaseModel

    out: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.add(path)
        for cand in (field.annotation, *typing.get_args(field.annotation)):
            for inner in (cand, *typing.get_args(cand)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out |= _keys(inner, path + ".")
    return out


def _yaml_keys(obj: object, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if prefix.endswith("groups."):
                continue
            out.add(prefix + str(k))
            out |= _yaml_keys(v, prefix + str(k) + ".")
    elif isinstance(obj, list):
        for v in obj:
            out |= _yaml_keys(v, prefix)
    return out


def test_template_validates() -> None:
    cfg = load_config(TEMPLATE, base_dir=ROOT)
    assert isinstance(cfg, RunConfig)
    assert cfg.gases[0].gas == "CH4"


def test_template_covers_every_key() -> None:
    data = yaml.safe_load(TEMPLATE.read_text())
    in_template = {k for k in _yaml_keys(data) if not k.startswith("regions.groups.")}
    in_models = _keys(RunConfig)
    assert in_models - in_template == set(), "keys missing from configs/template.yaml"
    assert in_template - in_models == set(), "template documents keys the models do not know"


def test_three_mistakes_three_messages(tmp_path: Path) -> None:
    data = yaml.safe_load(TEMPLATE.read_text())
    data["domain"]["resolutoin"] = 2.0  # unknown key, close to 'resolution'
    data["gases"][0]["sigma_model"] = -3  # out of range
    data["compare"]["z_critical"] = "two"  # wrong type
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(p)
    problems = info.value.problems
    assert len(problems) == 3, problems
    text = "\n".join(problems)
    assert "domain.resolutoin: unknown key; did you mean 'resolution'?" in text
    assert "gases[0].sigma_model" in text and "-3" in text
    assert "compare.z_critical" in text and '"two"' in text
    assert str(p) in str(info.value)


def test_missing_required_and_wrong_bbox() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"domain": {"bbox": [10, 0, 5, 20]}})
    text = "\n".join(info.value.problems)
    assert "period: required key is missing" in text
    assert "gases: required key is missing" in text
    assert "domain.bbox" in text and "west<east" in text


def test_not_a_mapping_and_not_yaml(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(p)
    p.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_paths_resolved_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(TEMPLATE, base_dir=tmp_path)
    assert cfg.gases[0].prior.path == tmp_path / "data_samples" / "prior_CH4.nc"
    assert cfg.gases[0].granules[0].startswith(str(tmp_path))
    again = config_from_dict(yaml.safe_load(config_to_yaml(cfg)))
    assert again == cfg
    assert section_hash(again) == section_hash(cfg)


def test_duplicate_gas_and_cluster_needs() -> None:
    data = yaml.safe_load(TEMPLATE.read_text())
    data["gases"].append(dict(data["gases"][0]))
    data["cluster"] = {"type": "address"}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    text = "\n".join(info.value.problems)
    assert "each gas may appear once" in text
    assert "needs address" in text
