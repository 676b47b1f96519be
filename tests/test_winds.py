"""Winds: uniform, ERA5 / MERRA-2 / GEOS-FP layouts to the same time-mean u, v on the grid."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.errors import WindError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.testing.inventories import write_era5_like, write_geosfp_like, write_merra2_like
from gosat_pipeline.winds import open_winds

SRC = GridSpec.from_resolution(2.5, (90.0, -12.5, 142.5, 30.0))
TARGET = GridSpec.from_resolution(1.0, (95.0, -5.0, 135.0, 25.0))  # inside the source centres
GLOBAL = GridSpec.from_resolution(5.0)


def _linear(grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    lat, lon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    return -3.0 + 0.05 * lat + 0.02 * (lon - 100), 1.0 - 0.03 * lat


@pytest.fixture(scope="module")
def expected() -> tuple[np.ndarray, np.ndarray]:
    return _linear(TARGET)


def _check(ds: xr.Dataset, expected, *, blh: float | None = 800.0) -> None:
    assert ds["u"].dims == ("latitude", "longitude") and ds["u"].attrs["units"] == "m s-1"
    np.testing.assert_allclose(ds["u"].values, expected[0], atol=1e-9)
    np.testing.assert_allclose(ds["v"].values, expected[1], atol=1e-9)
    if blh is not None:
        np.testing.assert_allclose(ds["blh"].values, blh, atol=1e-9)


@pytest.mark.parametrize("new_cds", [True, False])
def test_era5_pressure_levels_pbl_mean(tmp_path, expected, new_cds):
    u, v = _linear(SRC)
    p = write_era5_like(tmp_path / "era5.nc", SRC, u, v, new_cds=new_cds)
    ds = open_winds(p, grid=TARGET)
    _check(ds, expected)
    assert "1000-850 hPa" in ds.attrs["level"]
    ten = open_winds(p, grid=TARGET, level="10m")
    _check(ten, expected)
    at850 = open_winds(p, grid=TARGET, level="850")
    np.testing.assert_allclose(at850["u"].values, expected[0] - 1.0, atol=1e-9)  # the level's own deviation


def test_era5_single_levels_merra2_and_geosfp_agree(tmp_path, expected):
    u, v = _linear(SRC)
    era = open_winds(write_era5_like(tmp_path / "e.nc", SRC, u, v, pressure_levels=False), grid=TARGET)
    merra = open_winds(write_merra2_like(tmp_path / "MERRA2_400.tavg1_2d_slv_Nx.20200101.nc4", SRC, u, v),
                       grid=TARGET)  # fmt: skip
    files = write_geosfp_like(tmp_path / "geosfp", SRC, u, v, n_times=3)
    assert files[0].name == "GEOS.fp.asm.tavg1_2d_slv_Nx.20200101_0030.V01.nc4"
    geos = open_winds(tmp_path / "geosfp", grid=TARGET)
    for ds in (era, merra, geos):
        _check(ds, expected)
    assert geos.attrs["n_times"] == 3 and "U/V" not in merra.attrs["level"]


def test_global_0_360_descending_source_wraps(tmp_path):
    lat, lon = np.meshgrid(GLOBAL.lat, GLOBAL.lon, indexing="ij")
    u = 5 * np.cos(np.deg2rad(lon))
    p = write_era5_like(tmp_path / "g.nc", GLOBAL, u, np.zeros_like(u))
    raw = xr.open_dataset(p)
    assert raw.latitude[0] > raw.latitude[-1] and float(raw.longitude.max()) > 180
    tgt = GridSpec.from_resolution(5.0, (-180, -30, 180, 30))
    ds = open_winds(p, grid=tgt)
    lat_t, lon_t = np.meshgrid(tgt.lat, tgt.lon, indexing="ij")
    np.testing.assert_allclose(ds["u"].values, 5 * np.cos(np.deg2rad(lon_t)), atol=1e-9)
    across = open_winds(p, grid=GridSpec.from_resolution(2.5, (-180, -30, 180, 30)))  # centres across 180
    first = across["u"].isel(longitude=0).values  # lon -178.75: between source centres 177.5 and -177.5
    np.testing.assert_allclose(first, 5 * np.cos(np.deg2rad(177.5)), atol=1e-9)


def test_uniform_winds_from_config():
    ds = open_winds(None, grid=TARGET, u=-2.0, v=1.0)
    assert ds["u"].shape == TARGET.shape and np.all(ds["u"].values == -2.0) and np.all(ds["v"].values == 1.0)
    assert "blh" not in ds and ds.attrs["wind_source"].startswith("uniform")


def test_time_range_selects_and_errors(tmp_path, expected):
    u, v = _linear(SRC)
    p = write_merra2_like(tmp_path / "m.nc4", SRC, u, v, n_times=4)
    ds = open_winds(p, grid=TARGET, time_range=("2020-01-01", "2020-12-31"))
    _check(ds, expected)
    one = open_winds(p, grid=TARGET, time_range=("2020-01-01T00:00", "2020-01-01T01:00"))
    assert one.attrs["n_times"] == 1
    with pytest.raises(WindError, match="no wind time step"):
        open_winds(p, grid=TARGET, time_range=("2019-01-01", "2019-02-01"))


def test_missing_variables_and_domain(tmp_path):
    xr.Dataset({"t2m": (("latitude", "longitude"), np.zeros(SRC.shape))},
               coords={"latitude": SRC.lat, "longitude": SRC.lon}).to_netcdf(tmp_path / "t.nc")  # fmt: skip
    with pytest.raises(WindError, match="t2m"):
        open_winds(tmp_path / "t.nc", grid=TARGET)
    u, v = _linear(SRC)
    p = write_era5_like(tmp_path / "e.nc", SRC, u, v, pressure_levels=False)
    with pytest.raises(WindError, match="pressure levels"):
        open_winds(p, grid=TARGET, level="850")
    with pytest.raises(WindError, match="covers"):
        open_winds(p, grid=GridSpec.from_resolution(1.0, (0, 0, 40, 20)))
    with pytest.raises(WindError, match="not found"):
        open_winds(tmp_path / "nope.nc", grid=TARGET)
