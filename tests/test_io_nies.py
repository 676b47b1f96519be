"""NIES GOSAT / GOSAT-2 readers: uncertainty components, level order and derived weights and pressures."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io import close_cached, open_granule, open_granules
from gosat_pipeline.io.nies_gosat import dry_air_layers, uncertainty_from_components
from gosat_pipeline.testing.granules import (
    NIES_ERROR_SPLIT,
    granule_filename,
    granule_soundings,
    write_granule,
)


def test_uncertainty_uses_the_components_that_hold_values() -> None:
    nan = np.nan
    parts = {"ext": np.array([nan, nan, nan]), "noise": np.array([3.0, nan, 1.0]), "smooth": np.array([4.0, 2.0, nan])}
    sigma, used, left = uncertainty_from_components(parts)
    np.testing.assert_allclose(sigma, [5.0, 2.0, 1.0])
    assert used == ["noise", "smooth"]
    assert "every value is a fill value" in left["ext"] and "some soundings" in left["noise"]
    sigma, used, _ = uncertainty_from_components({"a": np.array([nan, nan]), "b": np.array([nan, nan])})
    assert used == [] and np.isnan(sigma).all()
    sigma, used, left = uncertainty_from_components({"a": np.array([1.0, nan]), "b": np.array([nan, nan])})
    assert np.isnan(sigma[1]) and sigma[0] == 1.0 and list(left) == ["a", "b"]


def test_dry_air_layers_weights_and_pressures() -> None:
    d = np.array([[2.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    h, p = dry_air_layers(d, np.array([1000.0, 900.0]))
    np.testing.assert_allclose(h.sum(axis=1), 1.0)
    np.testing.assert_allclose(h[0], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(p[0], [750.0, 375.0, 125.0])  # edges 1000, 500, 250, 0
    np.testing.assert_allclose(p[1], [750.0, 450.0, 150.0])  # equal layers of 300 hPa


@pytest.fixture()
def gosat_file(tmp_path: Path) -> tuple[Path, object]:
    src = granule_soundings("nies_gosat_l2", 30, "CO2", seed=3, start="2020-04-02")
    path = write_granule(src, tmp_path / granule_filename("nies_gosat_l2", "2020-04-02", gas="CO2"), "nies_gosat_l2")
    return path, src.isel(sounding=np.flatnonzero(src.quality_flag.values == 0))


def test_a_missing_component_is_recorded_and_the_rest_used(gosat_file: tuple[Path, object]) -> None:
    path, src = gosat_file
    with h5py.File(path, "a") as f:
        del f["Data/mixingRatio/XCO2RetrievalNoise"]
    ds = open_granule(path).compute()
    others = [s for k, s in NIES_ERROR_SPLIT.items() if k != "RetrievalNoise"]
    np.testing.assert_allclose(ds.xgas_uncertainty.values, src.xgas_uncertainty.values * np.hypot(*others), rtol=1e-5)
    assert "Data/mixingRatio/XCO2RetrievalNoise: absent" in ds.attrs["components_left_out"]
    assert "RetrievalNoise" not in ds.attrs["xgas_uncertainty_components"]


def test_a_component_fill_for_some_soundings(gosat_file: tuple[Path, object]) -> None:
    path, src = gosat_file
    with h5py.File(path, "a") as f:
        v = f["Data/mixingRatio/XCO2SmoothingError"]
        a = v[...]
        a[:5] = -9999.0
        v[...] = a
    ds = open_granule(path).compute()
    share = NIES_ERROR_SPLIT
    want = src.xgas_uncertainty.values.copy()
    want[:5] *= np.hypot(share["InterferenceError"], share["RetrievalNoise"])
    np.testing.assert_allclose(ds.xgas_uncertainty.values, want, rtol=1e-5)
    assert "XCO2SmoothingError: fill for some soundings" in ds.attrs["components_left_out"]


def test_no_component_at_all_is_an_error_naming_them(gosat_file: tuple[Path, object]) -> None:
    path, _ = gosat_file
    with h5py.File(path, "a") as f:
        for e in ("ExternalError", "InterferenceError", "RetrievalNoise", "SmoothingError"):
            del f[f"Data/mixingRatio/XCO2{e}"]
    with pytest.raises(GranuleError, match="missing variable.*XCO2ExternalError or .*XCO2SmoothingError"):
        open_granule(path)


def test_batch_attributes_count_the_files(tmp_path: Path) -> None:
    paths = []
    for k, day in enumerate(("2020-04-02", "2020-04-03")):
        src = granule_soundings("nies_gosat_l2", 20, "CO2", seed=k, start=day)
        paths.append(write_granule(src, tmp_path / granule_filename("nies_gosat_l2", day, gas="CO2"), "nies_gosat_l2"))
    close_cached()
    with h5py.File(paths[1], "a") as f:
        del f["Data/mixingRatio/XCO2InterferenceError"]
    ds = open_granules(paths)
    left = ds.attrs["components_left_out"]
    assert "XCO2ExternalError: every value is a fill value: not used in xgas_uncertainty;" in left
    assert "XCO2InterferenceError: absent (in 1 of 2 files)" in left


@pytest.mark.parametrize("order", ["toa_first", "surface_first"])
def test_gosat2_order_is_read_from_the_pressures(tmp_path: Path, order: str) -> None:
    src = granule_soundings("nies_gosat2_l2", 25, "CH4", seed=8, start="2021-06-01")
    path = write_granule(src, tmp_path / granule_filename("nies_gosat2_l2", "2021-06-01", gas="CH4"), "nies_gosat2_l2")
    if order == "surface_first":  # the same file with every level array turned over
        with h5py.File(path, "a") as f:
            for vp in (
                "RetrievalResult/pressure_level",
                "RetrievalResult/xch4_column_averaging_kernel",
                "RetrievalResult/ch4_profile_apriori",
            ):
                f[vp][...] = f[vp][...][:, ::-1]
    ds = open_granule(path, screen=False).compute()
    assert f"({order.replace('_', ' ')} in the file)" in ds.attrs["vertical_grid"]
    for name in ("pressure", "averaging_kernel", "profile_apriori", "pressure_weight"):
        np.testing.assert_allclose(ds[name].values, src[name].values, rtol=2e-5, atol=1e-4, err_msg=name)


def test_gosat2_without_a_pressure_grid_leaves_the_levels_out_and_says_so(tmp_path: Path) -> None:
    src = granule_soundings("nies_gosat2_l2", 25, "CO2", seed=9, start="2021-06-02")
    path = write_granule(src, tmp_path / granule_filename("nies_gosat2_l2", "2021-06-02"), "nies_gosat2_l2")
    with h5py.File(path, "a") as f:
        del f["RetrievalResult/pressure_level"]
    ds = open_granule(path, screen=False)
    assert "averaging_kernel" not in ds and ds.sizes.get("level", 0) == 0
    assert "no pressure grid in the file to tell the order" in ds.attrs["components_left_out"]
    np.testing.assert_allclose(ds.xgas.values, src.xgas.values, rtol=1e-6)


def test_renamed_nies_file_reads_twice_by_content(gosat_file: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = gosat_file
    anon = tmp_path / "download.h5"
    shutil.copy(path, anon)
    a = open_granule(anon)
    b = open_granule(anon)  # the first handle is still cached
    np.testing.assert_array_equal(a.xgas.values, b.xgas.values)
    assert a.attrs["reader"] == "nies_gosat_l2"
