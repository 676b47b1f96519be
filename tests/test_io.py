"""Ingest: per-product behaviour, batches, bad input and the plug-in seam.

The reader contract over every built-in format is in ``tests/test_readers_contract.py``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.errors import GosatPipelineError, GranuleError, UnknownFormatError
from gosat_pipeline.io import (
    GranulePlan,
    GranuleReader,
    _registry,
    detect_format,
    inspect_granule,
    list_formats,
    open_granule,
    open_granules,
    register_reader,
    unregister_reader,
)
from gosat_pipeline.schema import validate_soundings
from gosat_pipeline.testing.granules import (
    GRANULE_FORMATS,
    RAW_OFFSET,
    granule_filename,
    granule_soundings,
    make_granule_files,
    write_granule,
)

CASES = [(fmt, gas) for fmt, (_, _, gases) in GRANULE_FORMATS.items() for gas in gases]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, xr.Dataset]]:
    d = tmp_path_factory.mktemp("granules")
    out = {}
    for fmt, gas in CASES:
        src = granule_soundings(fmt, 60, gas, seed=11, bbox=(-179.9, -80, 179.9, 80), start="2021-03-04")
        path = write_granule(src, d / gas / granule_filename(fmt, "2021-03-04", gas=gas), fmt)
        out[(fmt, gas)] = (path, src)
    return out


def test_bias_corrected_switch(written: dict) -> None:
    for fmt, gas in [("cci_ocpr", "CH4"), ("acos_lite", "CO2"), ("tropomi_ch4", "CH4"), ("tropomi_blended_ch4", "CH4")]:
        path, _ = written[(fmt, gas)]
        bc = open_granule(path).xgas.values
        raw = open_granule(path, bias_corrected=False).xgas.values
        np.testing.assert_allclose(raw - bc, RAW_OFFSET[gas], atol=2e-3, err_msg=fmt)


def test_nies_without_bias_correction_says_so_and_uses_one_where_present(written: dict, tmp_path: Path) -> None:
    """V02.80 has no XCO2BiasCorrected: xgas is XCO2 as released, recorded; a version with one uses it."""
    import h5py

    path, src = written[("nies_gosat_l2", "CO2")]
    ds = open_granule(path)
    np.testing.assert_array_equal(ds.xgas.values, open_granule(path, bias_corrected=False).xgas.values)
    assert "XCO2BiasCorrected: not in this product version" in ds.attrs["components_left_out"]
    with_bc = tmp_path / path.name
    shutil.copy(path, with_bc)
    with h5py.File(with_bc, "a") as f:
        x = f["Data/mixingRatio/XCO2"]
        f.create_dataset("Data/mixingRatio/XCO2BiasCorrected", data=np.where(x[()] > -9999, x[()] - 0.5, -9999.0))
        for k, v in x.attrs.items():
            f["Data/mixingRatio/XCO2BiasCorrected"].attrs[k] = v
    bc, raw = open_granule(with_bc), open_granule(with_bc, bias_corrected=False)
    np.testing.assert_allclose(raw.xgas.values - bc.xgas.values, 0.5, atol=1e-4)
    assert "BiasCorrected" not in bc.attrs["components_left_out"]


def test_nies_xch4_ppm_becomes_ppb(written: dict) -> None:
    path, src = written[("nies_gosat_l2", "CH4")]
    import h5py

    with h5py.File(path) as f:
        in_file = f["Data/mixingRatio/XCH4"][()]
        assert f["Data/mixingRatio/XCH4"].attrs["unit"][0] == b"ppmv"
    ds = open_granule(path)
    np.testing.assert_allclose(ds.xgas.values, in_file.astype(np.float64) * 1000.0, rtol=1e-12)
    assert 1700 < float(ds.xgas.mean()) < 2000


def test_nies_layout_is_the_real_one_and_reads_surface_first(written: dict) -> None:
    """The synthetic V02.80 file is top-first with no pressure grid; the reader flips and derives h and p."""
    import h5py

    path, src = written[("nies_gosat_l2", "CO2")]
    with h5py.File(path) as f:
        assert "scanAttribute/referenceData/pressure" not in f
        assert "Data/retrievalQuality/pressureWeightingFunction" not in f
        prof = f["scanAttribute/referenceData/CO2Profile"][()]
        assert np.all(prof[:, 0] < prof[:, -1])  # the file: index 0 = top of atmosphere (stratospheric)
        assert (f["Data/mixingRatio/XCO2ExternalError"][()] == -9999).all()
    ds = open_granule(path).compute()
    assert np.all(ds.profile_apriori.values[:, -1] < ds.profile_apriori.values[:, 0])  # canonical: surface first
    assert np.all(np.diff(ds.pressure.values, axis=1) < 0)
    np.testing.assert_allclose(ds.pressure_weight.values.sum(axis=1), 1.0, rtol=1e-6)
    assert np.isfinite(ds.xgas_uncertainty.values).all()
    assert ds.attrs["xgas_uncertainty_components"].split() == [
        f"Data/mixingRatio/XCO2{e}" for e in ("InterferenceError", "RetrievalNoise", "SmoothingError")
    ]
    assert "XCO2ExternalError: every value is a fill value" in ds.attrs["components_left_out"]
    assert ds.attrs["reference_pressure_levels_hPa"].split()[0] == "1000"


def test_lite_file_is_top_first(written: dict) -> None:
    path, src = written[("acos_lite", "CO2")]
    with netCDF4.Dataset(path) as nc:
        p = nc["pressure_levels"][:]
        assert np.all(p[:, 0] < p[:, -1])  # the file: index 0 = top of atmosphere
        assert float(nc["xco2"].missing_value) == -999999.0


def test_format_override_wins(written: dict, tmp_path: Path) -> None:
    path, _ = written[("cci_ocpr", "CH4")]
    with pytest.raises(GranuleError, match="missing variable"):
        open_granule(path, format="acos_lite")
    with pytest.raises(GranuleError, match="unknown format 'nope'"):
        open_granule(path, format="nope")


def test_open_granules_glob_list_and_attrs(tmp_path: Path) -> None:
    files = make_granule_files(tmp_path, "cci_ocpr", n_files=3, n_per_file=40, seed=5, start="2020-05-01")
    ds = open_granules(str(tmp_path / "*.nc"), chunks={"sounding": 25})
    assert json.loads(ds.attrs["input_files"]) == [str(p) for p in files]
    assert json.loads(ds.attrs["skipped_inputs"]) == []
    assert ds.xgas.data.chunks[0][0] == 25
    ds2 = open_granules([files[0], str(files[1]), files[2]])
    assert ds2.sizes["sounding"] == ds.sizes["sounding"]
    np.testing.assert_array_equal(ds.xgas.values, ds2.xgas.values)
    assert open_granules(files[0]).sizes["sounding"] == open_granule(files[0]).sizes["sounding"]


def test_chunks_default_groups_files_and_zero_gives_one_per_file(tmp_path: Path, monkeypatch) -> None:
    files = make_granule_files(tmp_path, "cci_ocpr", n_files=5, n_per_file=40, seed=6, bad_fraction=0.0)
    assert open_granules(files).xgas.data.chunks[0] == (200,)  # default: all five in one chunk
    assert open_granules(files, chunks=0).xgas.data.chunks[0] == (40,) * 5
    assert open_granules(files, chunks={"sounding": 100}).xgas.data.chunks[0] == (80, 40, 80)  # even, <= 100
    monkeypatch.setattr("gosat_pipeline.io._assemble.DEFAULT_CHUNK_SOUNDINGS", 120)
    assert open_granules(files).xgas.data.chunks[0] == (80, 120)
    np.testing.assert_array_equal(open_granules(files).xgas.values, open_granules(files, chunks=0).xgas.values)


def test_inspect_granule(written: dict) -> None:
    path, src = written[("acos_lite", "CO2")]
    info = inspect_granule(path)
    assert info["format"] == "acos_lite" and info["gas"] == "CO2" and info["units"] == "ppm"
    assert info["n_soundings"] == 60 and info["n_good"] == int((src.quality_flag.values == 0).sum())
    assert info["n_levels"] == 20
    assert info["latitude_range"][0] >= -80 and info["latitude_range"][1] <= 80
    json.dumps(info)


def test_list_formats_has_every_builtin() -> None:
    formats = list_formats()
    assert set(GRANULE_FORMATS) <= set(formats)
    assert all(isinstance(v, str) and v for v in formats.values())


# -- bad input -------------------------------------------------------------------------------
@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = make_granule_files(tmp_path / "good", "cci_ocpr", n_files=1, n_per_file=30, seed=1)[0]
    out: dict[str, Path] = {"good": good}
    d = tmp_path / "bad"
    d.mkdir()
    trunc = d / granule_filename("cci_ocpr", "2020-02-01")
    data = good.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    out["truncated"] = trunc
    zero = d / granule_filename("cci_ocpr", "2020-02-02")
    zero.touch()
    out["zero-byte"] = zero
    unknown = d / "mystery_product.nc"
    xr.Dataset({"foo": ("x", np.arange(3.0))}).to_netcdf(unknown)
    out["unknown"] = unknown
    missing = d / granule_filename("cci_ocpr", "2020-02-03")
    shutil.copy(good, missing)
    with netCDF4.Dataset(missing, "a") as nc:
        nc.renameVariable("xch4_averaging_kernel", "something_else")
    out["missing variable"] = missing
    src = granule_soundings("cci_ocpr", 20, seed=2)
    src["xgas"][:] = np.nan
    out["all-fill"] = write_granule(src, d / granule_filename("cci_ocpr", "2020-02-04"), "cci_ocpr")
    out["wrong gas"] = make_granule_files(d, "acos_lite", n_files=1, n_per_file=10)[0]
    return out


_REASONS = {
    "truncated": "truncated or corrupt",
    "zero-byte": "zero-byte",
    "unknown": "pass format=",
    "missing variable": "xch4_averaging_kernel",
    "all-fill": "fill values",
    "wrong gas": "holds CO2",
}


@pytest.mark.parametrize("kind", list(_REASONS))
def test_bad_file_raises_typed_error_naming_file(bad_files: dict[str, Path], kind: str) -> None:
    path = bad_files[kind]
    with pytest.raises(GranuleError, match=_REASONS[kind]) as info:
        open_granules([bad_files["good"], path], gas="CH4", errors="raise")
    assert str(path) in str(info.value) and info.value.path == str(path)
    if kind == "unknown":
        assert isinstance(info.value, UnknownFormatError)
        assert "cci_ocpr" in str(info.value)


def test_bad_files_skipped_and_recorded(bad_files: dict[str, Path]) -> None:
    paths = list(bad_files.values())
    with pytest.warns(UserWarning, match="skipping"):
        ds = open_granules(paths, gas="CH4", errors="skip")
    skipped = json.loads(ds.attrs["skipped_inputs"])
    assert {s["path"] for s in skipped} == {str(p) for k, p in bad_files.items() if k != "good"}
    for s in skipped:
        kind = next(k for k, p in bad_files.items() if str(p) == s["path"])
        assert _REASONS[kind] in s["reason"]
    assert json.loads(ds.attrs["input_files"]) == [str(bad_files["good"])]
    assert ds.sizes["sounding"] == open_granule(bad_files["good"]).sizes["sounding"]


def test_no_readable_file_lists_every_reason(bad_files: dict[str, Path]) -> None:
    bad = [p for k, p in bad_files.items() if k not in ("good", "wrong gas")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(GranuleError, match="no readable granule") as info:
            open_granules(bad)
    for p in bad:
        assert str(p) in str(info.value)


def test_zero_good_soundings_is_an_empty_dataset(tmp_path: Path) -> None:
    src = granule_soundings("cci_ocpr", 15, seed=4, bad_fraction=1.0)
    path = write_granule(src, tmp_path / granule_filename("cci_ocpr", "2020-01-01"), "cci_ocpr")
    ds = open_granules([path])
    assert ds.sizes["sounding"] == 0 and ds.sizes["level"] == 20
    validate_soundings(ds)
    assert ds.xgas.attrs["units"] == "ppb" and ds.attrs["product"]
    assert open_granule(path, screen=False).sizes["sounding"] == 15


def test_errors_argument_is_checked(bad_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="errors="):
        open_granules([bad_files["good"]], errors="ignore")
    with pytest.raises(GranuleError, match="no file matches"):
        open_granules(str(bad_files["good"].parent / "*.nothing"))


# -- the plug-in seam ------------------------------------------------------------------------
class ToyReader(GranuleReader):
    """A third-party reader for flat canonical netCDF files named ``toy_*.nc``."""

    name = "toy_flat"
    description = "toy canonical netCDF (tests)"
    gases = ("CO2",)
    filename_patterns = (r"toy_.*\.nc",)
    screen = "quality_flag == 0"

    def scan(self, path: str, *, gas: str | None, screen: bool) -> GranulePlan:
        with xr.open_dataset(path) as ds:
            flag = ds.quality_flag.values
            n_levels = ds.sizes.get("level", 0)
        index = np.flatnonzero(flag == 0) if screen else np.arange(flag.size)
        return GranulePlan(
            path,
            "CO2",
            index,
            flag.size,
            int((flag == 0).sum()),
            n_levels,
            {"product": "toy", "product_version": "1", "reader": self.name},
        )

    def read(self, plan: GranulePlan, *, bias_corrected: bool) -> dict[str, np.ndarray]:
        with xr.open_dataset(plan.path) as ds:
            sub = ds.isel(sounding=plan.index).load()
        return {
            k: sub[k].values
            for k in (
                "time",
                "latitude",
                "longitude",
                "xgas",
                "xgas_uncertainty",
                "quality_flag",
                "averaging_kernel",
                "pressure",
            )
        }


def _toy_file(tmp_path: Path) -> Path:
    from gosat_pipeline.testing import make_soundings

    p = tmp_path / "toy_001.nc"
    make_soundings(12, "CO2", seed=3).drop_vars(["source_file"]).to_netcdf(p)
    return p


def test_register_reader_seam(tmp_path: Path) -> None:
    path = _toy_file(tmp_path)
    register_reader(ToyReader)
    try:
        assert "toy_flat" in list_formats()
        assert detect_format(path) == "toy_flat"
        ds = open_granules([path])
        assert ds.attrs["reader"] == "toy_flat"
        assert ds.sizes["sounding"] == int((xr.open_dataset(path).quality_flag.values == 0).sum())
        with pytest.raises(GosatPipelineError, match="already registered"):
            register_reader(ToyReader)
    finally:
        unregister_reader("toy_flat")
    assert "toy_flat" not in list_formats()


def test_contract_is_enforced_at_registration() -> None:
    class NoName(ToyReader):
        name = ""

    class Sloppy(ToyReader):
        name = "sloppy"

        def read(self, plan: GranulePlan, **kwargs: Any) -> dict[str, np.ndarray]:  # type: ignore[override]
            return {}

    class Incomplete(GranuleReader):
        name = "incomplete"
        description = "no scan/read"

    for bad, msg in ((NoName, "lower_snake_case"), (Sloppy, r"\*\*kwargs"), (Incomplete, "does not implement")):
        with pytest.raises(GosatPipelineError, match=msg):
            register_reader(bad)


def test_entry_point_group_is_discovered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class FakeEntryPoint:
        name, value = "toy", "tests.test_io:ToyReader"

        def load(self) -> type:
            return ToyReader

    class BrokenEntryPoint:
        name, value = "broken", "nowhere:Nothing"

        def load(self) -> type:
            raise ImportError("no module named nowhere")

    seen: list[str] = []

    def fake_entry_points(*, group: str) -> list[Any]:
        seen.append(group)
        return [FakeEntryPoint(), BrokenEntryPoint()]

    monkeypatch.setattr(_registry, "entry_points", fake_entry_points)
    monkeypatch.setattr(_registry, "_LOADED", False)
    monkeypatch.setattr(_registry, "_REGISTERED", {})
    formats = list_formats()
    assert seen == ["gosat_pipeline.readers"]
    assert "toy_flat" in formats and "cci_ocpr" in formats
    assert open_granule(_toy_file(tmp_path)).attrs["reader"] == "toy_flat"


def test_file_groups_are_even_and_within_the_chunk() -> None:
    from types import SimpleNamespace

    from gosat_pipeline.io._assemble import _groups

    def sizes(ns: list[int], chunk: int) -> list[int]:
        live = [(None, SimpleNamespace(n=n)) for n in ns]
        groups = _groups(live, chunk)  # type: ignore[arg-type]
        assert [item for g in groups for item in g] == live  # every file once, in order
        return [sum(p.n for _, p in g) for g in groups]

    year = sizes([2000] * 365, 200_000)
    assert len(year) == 4 and max(year) <= 200_000 and max(year) - min(year) <= 2000  # not 3 full + a small one
    assert sizes([40] * 5, 100) == [80, 40, 80]
    assert sizes([2400] * 40, 30_000) == [24_000] * 4
    assert sizes([10, 500, 10, 10], 100) == [10, 500, 10, 10]  # a file above the chunk: one file per group
    assert sizes([40] * 3, 0) == [40, 40, 40]
    assert sizes([0, 0], 10) == [0]
    assert max(sizes([7, 53, 31, 31, 45, 55, 38, 5, 51, 54], 58)) <= 58  # no even split fits: filled up
    rng = np.random.default_rng(1)
    for _ in range(2000):  # never above the chunk, whatever the file sizes
        chunk = int(rng.integers(1, 200))
        got = sizes(list(rng.integers(0, chunk + 1, int(rng.integers(1, 15)))), chunk)
        assert max(got) <= chunk
