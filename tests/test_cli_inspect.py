"""``gosat-pipeline inspect``: what it shows, and errors worded for the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.cli import main
from gosat_pipeline.io import list_formats
from gosat_pipeline.testing.granules import granule_filename, granule_soundings, write_granule


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture()
def nies(tmp_path: Path) -> Path:
    src = granule_soundings("nies_gosat_l2", 40, "CO2", seed=2, start="2019-02-03")
    return write_granule(src, tmp_path / granule_filename("nies_gosat_l2", "2019-02-03", gas="CO2"), "nies_gosat_l2")


def test_text_shows_reader_counts_times_values_and_what_was_left_out(
    nies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _run(["inspect", str(nies)], capsys)
    assert rc == 0 and err == ""
    lines = {ln.split("  ", 1)[0].strip(): ln.split("  ", 1)[-1].strip() for ln in out.splitlines() if ln.strip()}
    assert lines["reader"].startswith("nies_gosat_l2: ")
    n = int(lines["soundings"].split()[0])
    assert lines["soundings"] == f"{n} in the file, {n} pass the product screen"
    assert lines["levels"] == "15, surface first"
    first, _, last = lines["time (UTC)"].partition(" to ")
    assert first.startswith("2019-02-03T") and first.endswith("Z") and last.startswith("2019-02-03T")
    assert "ppm" in lines["xgas (passing)"] and "median" in lines["xgas (passing)"]
    assert lines["left out"].startswith("Data/mixingRatio/XCO2ExternalError: every value is a fill value")
    assert "XCO2BiasCorrected: not in this product version" in out


def test_json_has_the_same_facts(nies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["inspect", "--json", str(nies)], capsys)
    info = json.loads(out)
    assert rc == 0 and info["format"] == "nies_gosat_l2" and info["n_good"] == info["n_soundings"] > 0
    assert info["level_order"] == "surface first" and info["units"] == "ppm"
    assert info["xgas_good"]["min"] <= info["xgas_good"]["median"] <= info["xgas_good"]["max"]
    assert info["xgas_good"]["median"] == round(info["xgas_good"]["median"], 2)
    assert any("XCO2ExternalError" in x for x in info["components_left_out"])
    assert info["xgas_uncertainty_components"].count("Data/mixingRatio/XCO2") == 3


def test_unknown_file_says_use_format_and_lists_the_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "mystery.nc"
    xr.Dataset({"foo": ("x", np.arange(3.0))}).to_netcdf(p)
    rc, out, err = _run(["inspect", str(p)], capsys)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "use --format NAME" in err and "format=" not in err.replace("--format", "")
    for name in list_formats():
        assert name in err


def test_unknown_format_option(nies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["inspect", "--format", "gosat_l3", str(nies)], capsys)
    assert rc == 2 and "--format 'gosat_l3' is not an installed format" in err and "tropomi_blended_ch4" in err


def test_wrong_format_option_points_at_the_right_one(nies: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["inspect", "--format", "cci_ocpr", str(nies)], capsys)
    assert rc == 2 and "the file looks like nies_gosat_l2: use --format nies_gosat_l2" in err


def test_unreadable_file_names_the_reader_that_tried(
    nies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "renamed.h5"
    shutil.copy(nies, broken)
    with h5py.File(broken, "a") as f:
        f["Data/mixingRatio/XCO2"][...] = -9999.0
    rc, _, err = _run(["inspect", str(broken)], capsys)
    assert rc == 2 and "fill values" in err and "(read as nies_gosat_l2, recognised by its content)" in err
