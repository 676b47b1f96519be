"""Checks before a run: each mistake found with one precise line, before any stage runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gosat_pipeline import load_config
from gosat_pipeline.cli import main
from gosat_pipeline.errors import ConfigError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.preflight import preflight, synthetic_mark
from gosat_pipeline.testing.granules import make_granule_files
from gosat_pipeline.testing.inventories import (
    make_reported_totals,
    write_edgar_like,
    write_reported_totals_csv,
)

ROOT = Path(__file__).resolve().parents[1]
BBOX = [96.0, 4.0, 111.0, 25.0]  # the Mekong countries, cutting Myanmar, China, Malaysia, Laos' neighbours


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pre")
    make_granule_files(d / "g", "cci_ocpr", n_files=2, n_per_file=50, gas="CH4", bbox=tuple(BBOX))
    write_edgar_like(d / "prior.nc", GridSpec.from_resolution(0.5, (90.0, 0.0, 120.0, 30.0)), gas="CH4")
    rep = make_reported_totals({"THA": 4.0, "VNM": 4.5, "KHM": 1.5}, gas="CH4", year=2020)
    write_reported_totals_csv(d / "reported.csv", rep)
    return d


def _config(d: Path, tmp: Path, **changes: object) -> Path:
    data = yaml.safe_load((ROOT / "configs" / "template.yaml").read_text())
    data["run"]["output_dir"] = str(tmp / "out")
    data["run"]["synthetic"] = False
    data["domain"]["bbox"] = BBOX
    data["gases"] = [data["gases"][0]]
    data["gases"][0]["granules"] = [str(d / "g" / "*.nc")]
    data["gases"][0]["prior"]["path"] = str(d / "prior.nc")
    data["reported"] = [{"path": str(d / "reported.csv"), "name": "submission"}]
    data["regions"] = {"iso3": ["THA", "VNM", "KHM", "LAO"], "groups": {}}
    data["compare"]["change"] = None
    for key, value in changes.items():
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    p = tmp / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _problems(d: Path, tmp: Path, **changes: object) -> list[str]:
    return preflight(load_config(_config(d, tmp, **changes))).problems


def test_a_good_config_passes_with_what_the_run_should_know(inputs: Path, tmp_path: Path) -> None:
    rep = preflight(load_config(_config(inputs, tmp_path)))
    assert rep.ok, rep.problems
    text = "\n".join(rep.notices)
    # LAO has no reported value; other countries of the box are estimated too; the granules are synthetic
    assert "no CH4 value for 2020 for LAO" in text
    assert "MMR" in text and "MYS" in text and "CHN" in text
    assert any("gosat_pipeline.testing" in s["mark"] for s in rep.synthetic_inputs)
    assert rep.partial_regions == {}  # the four requested countries lie wholly inside the box


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"gases.0.granules": ["/nowhere/*.nc"]}, "gases[0].granules[0]: '/nowhere/*.nc' matches no file"),
        ({"gases.0.prior.path": "/nowhere/prior.nc"}, "gases[0].prior.path: /nowhere/prior.nc does not exist"),
        ({"reported": [{"path": "/nowhere/r.csv"}]}, "reported[0].path: /nowhere/r.csv does not exist"),
        ({"regions.iso3": ["THA", "XYZ"]}, "regions.iso3: ['XYZ'] are not region codes"),
        ({"regions.iso3": ["THA", "AUS"]}, "regions.iso3: ['AUS'] have no area inside domain.bbox"),
        ({"regions.groups": {"MEKONG": ["THA", "ZZZ"]}}, "regions.groups.MEKONG: members ['ZZZ']"),
        (
            {"compare.change": {"period_a": "2020-13", "period_b": "2020"}},
            "compare.change.period_a: '2020-13' is not a period of this run",
        ),
        ({"period.time_bin": "QS", "period.split": "MS"}, "period.split: period.split 'MS': the time bin"),
        ({"gases.0.format": "no_such_reader"}, "gases[0].format: 'no_such_reader' is not an installed reader"),
        (
            {"transport.type": "footprints", "transport.footprints": "/nowhere/stilt/*_foot.nc"},
            "transport.footprints: /nowhere/stilt/*_foot.nc: matches no file",
        ),
        ({"transport.type": "footprints", "transport.footprints": "/"}, "transport.footprints: /: holds no"),
    ],
)
def test_each_mistake_is_one_precise_line(inputs: Path, tmp_path: Path, changes: dict, expected: str) -> None:
    problems = _problems(inputs, tmp_path, **changes)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]


def test_partial_countries_are_listed_with_their_share(inputs: Path, tmp_path: Path) -> None:
    rep = preflight(load_config(_config(inputs, tmp_path, **{"regions.iso3": None})))
    assert rep.ok
    assert {"MMR", "CHN", "MYS"} <= set(rep.partial_regions)
    assert all(0 < v < 0.95 for v in rep.partial_regions.values())
    assert any("partly outside the domain" in n and "MMR" in n for n in rep.notices)


def test_validate_and_run_stop_before_any_stage(
    inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gosat_pipeline import run

    cfg = _config(inputs, tmp_path, **{"gases.0.granules": ["/nowhere/*.nc"], "regions.iso3": ["XYZ"]})
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "problem: gases[0].granules[0]" in err and "problem: regions.iso3" in err and "Traceback" not in err
    with pytest.raises(ConfigError) as info:
        run(load_config(cfg))
    assert len(info.value.problems) == 2
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_synthetic_inputs_make_the_run_synthetic(inputs: Path, tmp_path: Path) -> None:
    from gosat_pipeline import run

    assert synthetic_mark(inputs / "reported.csv") == "notes: synthetic"
    cfg = load_config(_config(inputs, tmp_path))
    assert cfg.run.synthetic is False
    res = run(cfg, until="ingest")
    man = json.loads((res.run_dir / "manifest.json").read_text())
    assert man["synthetic"] is True
    assert any(s["path"].endswith(".nc") for s in man["synthetic_inputs"])


def test_template_checks_keys_without_its_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config-only", str(ROOT / "configs" / "template.yaml")]) == 0
    assert "valid" in capsys.readouterr().out
