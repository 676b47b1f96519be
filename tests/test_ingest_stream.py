"""The pipeline's streamed ingest (issue 21): groups read once, duplicates across groups, file index.

The ingest stage reads each group of granules once on a worker, screens it, checks
duplicates across groups by hashed keys and writes the kept soundings. It must give
exactly what the library chain ``apply_quality_filter(open_granules(files))`` gives
on the same files, with its records and counts, whatever the grouping.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline import run
from gosat_pipeline.config import config_from_dict
from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io import (
    decode_source_file,
    first_occurrences,
    key_hashes,
    open_granules,
    sounding_keys,
)
from gosat_pipeline.quality import apply_quality_filter
from gosat_pipeline.testing import make_granule_files
from gosat_pipeline.testing.demo import DEMO_BBOX

PERIOD = ("2020-01-01", "2021-01-01")


# ------------------------------------------------------------------------------ keys and hashes
def test_keys_equal_whatever_the_storage_and_never_across_kinds() -> None:
    text = ["2020010112", "2020010113", "été"]
    as_u = sounding_keys(np.array(text))
    as_s = sounding_keys(np.array([t.encode() for t in text], dtype="S12"))
    as_o = sounding_keys(np.array(text, dtype=object))
    np.testing.assert_array_equal(as_u, as_s)
    np.testing.assert_array_equal(as_u, as_o)
    ints32, ints64 = sounding_keys(np.array([1, 2, 3], dtype=np.int32)), sounding_keys(np.array([1, 2, 3]))
    np.testing.assert_array_equal(ints32, ints64)
    rows = sounding_keys(np.array([[1, 2], [1, 3]]))
    assert rows[0] != rows[1]
    # an integer and the text of its bytes, or an integer and a row holding it, are different keys
    one_text = sounding_keys(np.array([np.int64(1).tobytes()], dtype="S8"))
    assert ints64[0] != one_text[0] and ints64[0] != sounding_keys(np.array([[1]]))[0]
    np.testing.assert_array_equal(key_hashes(as_u), key_hashes(as_o))
    assert len(set(key_hashes(np.concatenate([as_u, ints64, rows])).tolist())) == 8
    with pytest.raises(GranuleError, match="not supported"):
        sounding_keys(np.zeros((2, 2, 2)))


def test_first_occurrences_are_exact_even_when_every_hash_collides() -> None:
    keys = sounding_keys(np.array([5, 7, 5, 9, 7, 5]))
    calls: list[int] = []

    def key_of(pos: np.ndarray) -> np.ndarray:
        calls.append(pos.size)
        return keys[pos]

    np.testing.assert_array_equal(first_occurrences(key_hashes(keys), key_of), [0, 1, 0, 3, 1, 0])
    # all hashes equal (the worst collision): the keys still decide
    np.testing.assert_array_equal(first_occurrences(np.zeros(6, dtype=np.uint64), key_of), [0, 1, 0, 3, 1, 0])
    # no repeated hash: the keys are never looked at
    calls.clear()
    np.testing.assert_array_equal(first_occurrences(np.arange(4, dtype=np.uint64), key_of), [0, 1, 2, 3])
    assert calls == []


# ------------------------------------------------------------------------------ the stage
@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, demo_samples: Path) -> dict[str, Any]:
    """Demo prior and winds; 9 CCI granules, one empty (bad), one delivered twice (a later copy)."""
    root = tmp_path_factory.mktemp("ingest")
    files = make_granule_files(
        root / "granules", "cci_ocpr", n_files=8, n_per_file=700, seed=5, bbox=DEMO_BBOX, start="2020-03-01"
    )
    (root / "granules" / "zz-empty.nc").write_bytes(b"")
    copy = root / "granules" / "zz-copy" / files[1].name  # sorts after the original
    copy.parent.mkdir()
    shutil.copy(files[1], copy)
    return {"root": root, "samples": demo_samples, "pattern": str(root / "granules" / "**" / "*.nc")}


def _config(
    inputs: dict[str, Any],
    name: str,
    *,
    chunk: int,
    resolution: float = 2.0,
    strict: bool = False,
    cluster: str = "threads",
) -> Any:
    s = inputs["samples"]
    return config_from_dict(
        {
            "run": {"name": name, "output_dir": str(inputs["root"] / "out"), "synthetic": True, "strict": strict},
            "period": {"start": PERIOD[0], "end": PERIOD[1], "time_bin": "MS"},
            "domain": {"bbox": [95.0, -5.0, 130.0, 25.0], "resolution": resolution},
            "gases": [
                {
                    "gas": "CH4",
                    "granules": [inputs["pattern"]],
                    "prior": {"path": str(s / "prior_CH4.nc")},
                    "sigma_model": 8.0,
                    "background_prior_sigma": 30.0,
                    "screen": {"max_solar_zenith": 60.0},
                }
            ],
            "regions": {"iso3": ["THA", "VNM"]},
            "winds": {"path": str(s / "winds_era5.nc")},
            "cluster": {
                "type": cluster,
                "chunk_size": chunk,
                "n_workers": 2,
                "threads_per_worker": 1,
                "tiny_job_bytes": 0,
            },
        }
    )


def _reference(inputs: dict[str, Any]) -> xr.Dataset:
    """The library chain on the same files, in one process."""
    import glob
    import warnings

    files = sorted(glob.glob(inputs["pattern"], recursive=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = open_granules(files, gas="CH4")
        return apply_quality_filter(
            ds, bbox=[95.0, -5.0, 130.0, 25.0], time_range=PERIOD, max_solar_zenith=60.0
        ).compute()


@pytest.mark.parametrize("chunk", [1000, 200_000])  # several groups (duplicates across them), or one
def test_streamed_ingest_equals_the_library_chain(inputs: dict[str, Any], chunk: int) -> None:
    res = run(_config(inputs, f"stream{chunk}", chunk=chunk), until="ingest")
    ref = _reference(inputs)
    with xr.open_dataset(res.run_dir / "soundings_CH4.nc") as got:
        got = got.load()
    assert got.sizes["sounding"] == ref.sizes["sounding"] > 1000
    for name in ref.variables:
        if name in ("source_file", "granule_path"):
            continue
        np.testing.assert_array_equal(got[name].values, ref[name].values, err_msg=name)
    np.testing.assert_array_equal(
        decode_source_file(got.file_index.values, got.granule_path.values.tolist()), ref.source_file.values
    )
    for attr in (
        "input_files",
        "skipped_inputs",
        "duplicate_soundings",
        "n_duplicate_soundings",
        "n_soundings_before_filter",
        "quality_filter",
        "quality_filter_dropped",
        "n_soundings_in_files",
        "n_soundings_good",
        "product",
        "reader",
    ):
        assert got.attrs[attr] == ref.attrs[attr], attr
    dup = json.loads(got.attrs["duplicate_soundings"])
    assert [d["path"] for d in dup] == [str(next(inputs["root"].glob("granules/zz-copy/*.nc")))]
    scr = res.manifest["screening"]["CH4"]
    assert scr["soundings_kept"] == ref.sizes["sounding"] and scr["duplicate_soundings"] == dup
    assert scr["quality_filter_dropped"] == json.loads(ref.attrs["quality_filter_dropped"])
    reasons = {s["path"]: s["reason"] for s in res.manifest["skipped_inputs"]}
    assert any(p.endswith("zz-empty.nc") for p in reasons) and any("duplicate" in r for r in reasons.values())
    assert not list(res.run_dir.glob(".ingest-*"))  # work files removed


def test_a_new_grid_does_not_ingest_again(inputs: dict[str, Any]) -> None:
    first = run(_config(inputs, "regrid", chunk=1000, resolution=2.0), until="grid")
    assert {"ingest:CH4", "grid:CH4"} <= set(first.ran)
    again = run(_config(inputs, "regrid", chunk=1000, resolution=1.0), until="grid")
    assert "ingest:CH4" in again.skipped and "grid:CH4" in again.ran


def test_strict_run_stops_at_the_bad_granule(inputs: dict[str, Any]) -> None:
    with pytest.raises(GranuleError, match="zz-empty"):
        run(_config(inputs, "strict", chunk=1000, strict=True), until="ingest")


@pytest.mark.slow
def test_streamed_ingest_on_worker_processes(inputs: dict[str, Any]) -> None:
    res = run(_config(inputs, "workers", chunk=1000, cluster="local"), until="ingest")
    ref = _reference(inputs)
    with xr.open_dataset(res.run_dir / "soundings_CH4.nc") as got:
        np.testing.assert_array_equal(got.xgas.values, ref.xgas.values)
        assert got.attrs["duplicate_soundings"] == ref.attrs["duplicate_soundings"]
    rec = res.manifest["stages"]["ingest:CH4"]
    assert rec["peak_memory_bytes"] > rec["peak_memory_main_bytes"] > 0


def test_overlapping_granules_in_different_groups(inputs: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Part of a later group's granule repeats an earlier group's: those soundings are dropped, the rest kept."""
    from gosat_pipeline.testing.granules import granule_filename, granule_soundings, write_granule

    src = granule_soundings("acos_lite", 2400, "CO2", seed=8, bbox=(96.0, -4.0, 129.0, 24.0), start="2020-04-01")
    root = inputs["root"] / "overlap"
    a = write_granule(
        src.isel(sounding=slice(0, 1400)), root / granule_filename("acos_lite", "2020-04-01"), "acos_lite"
    )
    b = write_granule(
        src.isel(sounding=slice(900, 2400)), root / granule_filename("acos_lite", "2020-04-02"), "acos_lite"
    )
    s = inputs["samples"]
    cfg = config_from_dict(
        {
            "run": {"name": "overlap", "output_dir": str(inputs["root"] / "out"), "synthetic": True},
            "period": {"start": PERIOD[0], "end": PERIOD[1]},
            "domain": {"bbox": [95.0, -5.0, 130.0, 25.0], "resolution": 2.0},
            "gases": [
                {
                    "gas": "CO2",
                    "granules": [str(root / "*.nc4")],
                    "prior": {"path": str(s / "prior_CO2.nc")},
                    "sigma_model": 1.0,
                    "background_prior_sigma": 5.0,
                }
            ],
            "winds": {"path": str(s / "winds_era5.nc")},
            "cluster": {"type": "threads", "chunk_size": 1000},
        }
    )
    with caplog.at_level("INFO", logger="gosat_pipeline.pipeline"):
        res = run(cfg, until="ingest")
    found = re.search(r"(\d+) duplicate\(s\) across groups", caplog.text)
    assert "2 group(s)" in caplog.text and found and int(found.group(1)) > 0  # one granule a group
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = apply_quality_filter(
            open_granules([a, b], gas="CO2"), bbox=[95.0, -5.0, 130.0, 25.0], time_range=PERIOD
        ).compute()
    with xr.open_dataset(res.run_dir / "soundings_CO2.nc") as got:
        np.testing.assert_array_equal(got.sounding_id.values, ref.sounding_id.values)
        rec = json.loads(got.attrs["duplicate_soundings"])
        assert rec == json.loads(ref.attrs["duplicate_soundings"])
        assert rec[0]["path"] == str(b) and rec[0]["n_duplicates"] > 0 and rec[0]["n_kept"] > 0
        assert got.attrs["n_soundings_in_files"] == ref.attrs["n_soundings_in_files"]
        np.testing.assert_array_equal(got.granule_path.values, [str(a), str(b)])
