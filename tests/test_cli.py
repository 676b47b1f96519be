"""The command line: exit codes, one-line errors, tracebacks only with -v."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gosat_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_validate_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "configs" / "template.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_errors_exit_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((ROOT / "configs" / "template.yaml").read_text())
    data["run"]["nmae"] = "x"
    data["period"]["end"] = "2019-01-01"
    data["gases"][0]["screen"]["surface"] = "sea"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err
    assert "run.nmae: unknown key; did you mean 'name'?" in err
    assert "gases[0].screen.surface" in err and "'land'" in err
    assert "Traceback" not in err


def test_verbose_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "validate", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "config file not found" in err


def test_console_script_installed() -> None:
    exe = Path(sys.executable).with_name("gosat-pipeline")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("gosat-pipeline ")


def test_run_with_missing_granules_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((ROOT / "configs" / "template.yaml").read_text())
    data["gases"][0]["granules"] = [str(tmp_path / "none" / "*.nc")]
    data["run"]["output_dir"] = str(tmp_path / "out")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err
    assert "no file matches" in err and "Traceback" not in err


def test_synth_samples_writes_the_demo_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gosat_pipeline.cli import main
    from gosat_pipeline.io import open_granules

    assert main(["synth", "samples", "--out", str(tmp_path / "ds")]) == 0
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1:] == [f"wrote 53 demonstration files to {tmp_path / 'ds'} "
                                        "(described in data_samples/README.md)"]  # fmt: skip
    assert sum(1 for p in (tmp_path / "ds").rglob("*") if p.is_file()) == 53  # 48 granules, 2 priors, 3 more
    truth = json.loads((tmp_path / "ds" / "truth.json").read_text())
    assert truth["planted"] == {"gas": "CH4", "region": "THA", "factor": 2.0}
    ch4 = open_granules(str(tmp_path / "ds" / "granules" / "CH4" / "*.nc"), gas="CH4")
    co2 = open_granules(str(tmp_path / "ds" / "granules" / "CO2" / "*.nc4"), gas="CO2")
    assert ch4.attrs["skipped_inputs"] == co2.attrs["skipped_inputs"] == "[]"
    assert ch4.sizes["sounding"] > 4000 and co2.sizes["sounding"] > 3000
