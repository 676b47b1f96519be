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
    merra = open_winds(write_merra2_like(tmp_path / "MERRA2_400.tavg1_2d_slv_Nx.20200101.nc4", SRC, u, v), grid=TARGET)
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
    xr.Dataset(
        {"t2m": (("latitude", "longitude"), np.zeros(SRC.shape))}, coords={"latitude": SRC.lat, "longitude": SRC.lon}
    ).to_netcdf(tmp_path / "t.nc")
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


# ---------------------------------------------------------------- time axes and the time-resolved output
def test_time_resolved_winds_keep_every_step(tmp_path) -> None:
    p = write_era5_like(tmp_path / "e.nc", SRC, -2.0, 1.0, n_times=8)
    ds = open_winds(p, grid=TARGET, time_range=("2020-01-01T06:00", "2020-01-01T12:00"), time_resolved=True)
    assert ds["u"].dims == ("time", "latitude", "longitude")
    # the steps inside the window and one either side, for interpolation up to its ends
    assert ds.sizes["time"] == 4 and str(ds["time"].values[0])[:13] == "2020-01-01T00"
    mean = open_winds(p, grid=TARGET)
    assert mean["u"].dims == ("latitude", "longitude")
    assert ds.attrs["time_coverage_start"].startswith("2020-01-01T00")


def test_month_axes_and_unreadable_time_axes(tmp_path) -> None:
    import pandas as pd

    grid = SRC
    lat, lon = grid.lat, grid.lon
    u = np.stack([np.full(grid.shape, -3.0), np.full(grid.shape, 5.0)])[:, None]
    base = xr.Dataset(
        {
            "u": (("month", "level", "latitude", "longitude"), u, {"units": "m s**-1"}),
            "v": (("month", "level", "latitude", "longitude"), np.zeros_like(u), {"units": "m s**-1"}),
        },
        coords={"month": [1, 7], "level": [850], "latitude": lat, "longitude": lon},
    )
    base.to_netcdf(tmp_path / "clim.nc")
    mean = open_winds(tmp_path / "clim.nc", grid=TARGET)
    np.testing.assert_allclose(mean["u"].values, 1.0)  # the mean of January and July
    tr = open_winds(tmp_path / "clim.nc", grid=TARGET, time_range=("2020-01-01", "2020-12-31"), time_resolved=True)
    assert list(pd.DatetimeIndex(tr["time"].values).month) == [1, 7]  # mid-month dates of the run's year
    bad = base.assign_coords(month=[1.5, 99.0])
    bad.to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(WindError, match="neither dates nor month numbers"):
        open_winds(tmp_path / "bad.nc", grid=TARGET)
    (tmp_path / "junk.nc").write_bytes(b"not a netCDF file at all")
    with pytest.raises(WindError, match="cannot open wind files"):
        open_winds(tmp_path / "junk.nc", grid=TARGET)


@pytest.mark.real_samples
def test_real_era_interim_monthly_means(real_samples) -> None:
    """The xarray tutorial's ERA-Interim file: time axis 'month' (1, 7), levels 200/500/850 hPa."""
    path = real_samples / "winds" / "eraint_uvz.nc"
    grid = GridSpec.from_resolution(1.0, (90.0, -12.0, 142.0, 30.0))
    ds = open_winds(path, grid=grid)
    assert ds["u"].shape == grid.shape and np.isfinite(ds["u"].values).all()
    assert abs(float(ds["u"].mean())) < 5 and ds.attrs["n_times"] == 1
    with xr.open_dataset(path) as raw:  # the 850 hPa mean of the two months, read independently
        ref = raw["u"].sel(level=850).mean("month").interp(latitude=15.5, longitude=100.5)
    pt = ds["u"].sel(latitude=15.5, longitude=100.5)
    assert float(pt) == pytest.approx(float(ref), abs=0.05)
    tr = open_winds(path, grid=grid, time_range=("2020-01-01", "2020-12-31"), time_resolved=True)
    assert tr.sizes["time"] == 2
    assert float(open_winds(path, grid=grid, level="500")["u"].mean()) != pytest.approx(float(ds["u"].mean()))
    with pytest.raises(WindError, match="925 hPa not in the file"):
        open_winds(path, grid=grid, level="925")


def test_time_steps_regridded_in_blocks_equal_one_pass(tmp_path, monkeypatch) -> None:
    """Fine grids over a year (issue 21): the time steps are interpolated in blocks into float32;
    the values are those of one pass in float64, cast once."""
    import gosat_pipeline.winds as winds

    rng = np.random.default_rng(3)
    src = xr.DataArray(
        rng.normal(0, 5, (7, 11, 13)),
        dims=("time", "latitude", "longitude"),
        coords={"latitude": np.linspace(-10, 10, 11), "longitude": np.linspace(90, 114, 13)},
    )
    grid = GridSpec.from_resolution(0.5, (92.0, -8.0, 112.0, 8.0))
    whole = winds._to_grid(src, grid, "u")
    monkeypatch.setattr(winds, "_BLOCK_VALUES", 2 * grid.size)  # blocks of two steps, the last of one
    blocks = winds._to_grid(src, grid, "u")
    assert whole.dtype == blocks.dtype == np.float32 and blocks.shape == (7, *grid.shape)
    expected = np.stack([winds._to_grid(src.isel(time=k), grid, "u") for k in range(7)]).astype("float32")
    np.testing.assert_array_equal(blocks, expected)
    np.testing.assert_array_equal(whole, expected)
