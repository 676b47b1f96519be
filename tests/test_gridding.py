"""Gridding (issue 4): hand-built expectations, DESIGN 5.0 edge traps, references, chunking, laziness."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.gridding import (
    _bin_index,
    _grid_edges,
    _single_bin_edges,
    boundary_layer_ak,
    grid_arrays,
    grid_soundings,
    time_bin_edges,
)
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.schema import GRIDDED_VARIABLES, validate_gridded
from gosat_pipeline.testing import make_soundings

QUAD = GridSpec(np.array([-90.0, 0.0, 90.0]), np.array([-180.0, 0.0, 180.0]))  # 2 x 2, global


def _cells(grid: GridSpec, lat, lon) -> np.ndarray:
    lat = np.asarray(lat, dtype="float64")
    lon = np.asarray(lon, dtype="float64")
    idx = _bin_index(
        lat, lon, np.zeros(0, dtype="int64"), *_grid_edges(grid)[:2], _single_bin_edges(), _grid_edges(grid)[2]
    )
    return idx


def _soundings(lat, lon, x, unc=None, time=None, gas="CO2") -> xr.Dataset:
    n = len(x)
    unc = np.ones(n) if unc is None else unc
    time = np.full(n, np.datetime64("2020-01-15T12:00", "ns")) if time is None else time
    return xr.Dataset(
        {
            "xgas": ("sounding", np.asarray(x, dtype="float64"), {"units": "ppm"}),
            "xgas_uncertainty": ("sounding", np.asarray(unc, dtype="float64"), {"units": "ppm"}),
        },
        coords={
            "time": ("sounding", np.asarray(time, dtype="datetime64[ns]")),
            "latitude": ("sounding", np.asarray(lat, dtype="float64")),
            "longitude": ("sounding", np.asarray(lon, dtype="float64")),
        },
        attrs={"gas": gas},
    )


# ---------------------------------------------------------------------------- hand-built
def test_two_by_two_hand_built() -> None:
    lat = [10.0, 20.0, 30.0, -10.0, -45.0]
    lon = [10.0, 20.0, 170.0, -100.0, -100.0]
    x = [1.0, 2.0, 6.0, 5.0, 7.0]
    unc = [1.0, 2.0, 1.0, 1.0, np.nan]
    out = grid_arrays(lat, lon, x, grid=QUAD, uncertainty=unc)
    n = out["n_soundings"][0]
    np.testing.assert_array_equal(n, [[2, 0], [0, 3]])  # rows south->north, cols west->east
    assert out["n_soundings"].dtype == np.int32
    # north-east cell: x = 1, 2, 6; w = 1, 1/4, 1
    ne = (1, 1)
    assert out["xgas_mean"][0][ne] == pytest.approx(3.0, rel=1e-15)
    assert out["xgas_std"][0][ne] == pytest.approx(np.std([1, 2, 6], ddof=1), rel=1e-14)
    assert out["xgas_standard_error"][0][ne] == pytest.approx(np.std([1, 2, 6], ddof=1) / np.sqrt(3), rel=1e-14)
    assert out["xgas_weighted_mean"][0][ne] == pytest.approx((1 + 0.25 * 2 + 6) / 2.25, rel=1e-15)
    assert out["xgas_uncertainty_mean"][0][ne] == pytest.approx(4.0 / 3.0, rel=1e-15)
    assert out["averaging_kernel_pbl"][0][ne] == 1.0
    # south-west cell: x = 5, 7; the second uncertainty is NaN -> weight 0, not in the mean uncertainty
    sw = (0, 0)
    assert out["xgas_mean"][0][sw] == 6.0
    assert out["xgas_weighted_mean"][0][sw] == 5.0
    assert out["xgas_uncertainty_mean"][0][sw] == 1.0
    assert out["xgas_std"][0][sw] == pytest.approx(np.sqrt(2.0), rel=1e-15)
    # empty cells are NaN everywhere with n = 0
    for name in GRIDDED_VARIABLES:
        if name != "n_soundings":
            assert np.isnan(out[name][0][0, 1]) and np.isnan(out[name][0][1, 0])


def test_single_sounding_cell_has_nan_std_and_given_weights() -> None:
    out = grid_arrays([5.0, 6.0, 50.0], [5.0, 6.0, 50.0], [1.0, 4.0, 9.0], weights=[3.0, 1.0, -1.0], grid=QUAD)
    assert out["n_soundings"][0][1, 1] == 3
    assert out["xgas_weighted_mean"][0][1, 1] == pytest.approx((3 * 1 + 4 + 0 * 9) / 4.0)
    solo = grid_arrays([5.0], [5.0], [1.0], grid=QUAD)
    assert solo["n_soundings"][0][1, 1] == 1 and solo["xgas_mean"][0][1, 1] == 1.0
    assert np.isnan(solo["xgas_std"][0][1, 1]) and np.isnan(solo["xgas_standard_error"][0][1, 1])
    # without uncertainty the weights are 1: the weighted mean is the mean
    assert solo["xgas_weighted_mean"][0][1, 1] == 1.0


# ---------------------------------------------------------------------------- DESIGN 5.0 traps
@pytest.mark.parametrize(
    "grid",
    [
        GridSpec.from_resolution(1.0),
        GridSpec.from_resolution(0.1),
        GridSpec.from_resolution((2.0, 2.5)),
        GridSpec.from_resolution(0.3),
        GridSpec.from_resolution(0.5, bbox=(100.0, -12.0, 180.0, 55.3)),
        GridSpec(
            np.array([-90.0, -60.0, -1.0, 0.0, 33.3, 90.0]),
            np.array([-180.0, -7.0, 0.0, 120.0, 180.0]),
        ),
    ],
    ids=["1deg", "0.1deg", "2x2.5", "0.3deg", "regional", "irregular"],
)
def test_cell_lookup_identical_to_gridspec(grid: GridSpec) -> None:
    rng = np.random.default_rng(3)
    lat = np.concatenate([rng.uniform(-95, 95, 20000), grid.lat_edges, [90.0, -90.0, np.nan, np.inf, -0.0]])
    lon = np.concatenate(
        [
            rng.uniform(-400, 400, 20000),
            rng.choice(grid.lon_edges, grid.lat_edges.size),
            [180.0, -180.0, 0.0, 1.0, np.nan],
        ]
    )
    lon_edges_pts = np.concatenate(
        [grid.lon_edges, [540.0, -540.0, 180.0 - 1e-13, -180.0 - 1e-13, -1e-300, 1e-300, 360.0, -360.0, np.inf]]
    )
    lat2 = np.concatenate([lat, rng.uniform(-90, 90, lon_edges_pts.size)])
    lon2 = np.concatenate([lon, lon_edges_pts])
    with np.errstate(invalid="ignore"):  # GridSpec's np.mod of inf
        expected = grid.flat_index(lat2, lon2)
    np.testing.assert_array_equal(_cells(grid, lat2, lon2), expected)


def test_bin_index_refuses_grids_whose_indices_overflow_int32() -> None:
    lat_e, lon_e = np.linspace(-90, 90, 50_001), np.linspace(-180, 180, 50_001)  # 2.5e9 cells
    one = np.zeros(1)
    with pytest.raises(ValueError, match="int32"):
        _bin_index(one, one, np.zeros(0, dtype="int64"), lat_e, lon_e, np.array([0, 1], dtype="int64"), True)
    small = _bin_index(
        one, one, np.zeros(0, dtype="int64"), lat_e[::10], lon_e[::10], np.array([0, 1], dtype="int64"), True
    )
    assert small.dtype == np.int32 and small[0] == 2500 * 5000 + 2500


def test_edge_traps_on_global_grid() -> None:
    g = GridSpec.from_resolution(1.0)
    ny, nx = g.shape
    lat = np.array([90.0, -90.0, 0.0, 45.0, 10.5, 10.5, 10.5, 10.5])
    lon = np.array([0.5, 0.5, 0.5, 0.5, 180.0, -180.0, 179.999999, 1.0])
    i, j = np.divmod(_cells(g, lat, lon), nx)
    assert i[0] == ny - 1  # lat = +90 stays in the top row
    assert i[1] == 0  # lat = -90 in the bottom row
    assert i[2] == 90 and i[3] == 135  # interior edges: closed below
    assert (i[4], j[4]) == (100, 0)  # lon = 180 wraps to the first column, same row
    assert (i[5], j[5]) == (100, 0)  # lon = -180 likewise
    assert j[6] == nx - 1 and j[7] == 181
    # and through the public API: every one is counted, in those cells
    out = grid_arrays(lat, lon, np.arange(8.0), grid=g)
    assert out["n_soundings"].sum() == 8
    assert out["n_soundings"][0, 100, 0] == 2 and out["xgas_mean"][0, 100, 0] == 4.5


def test_regional_grid_closes_its_outer_edges_and_drops_outside() -> None:
    g = GridSpec.from_resolution(1.0, bbox=(170.0, 0.0, 180.0, 10.0))
    out = grid_arrays(
        [10.0, 0.0, 5.0, 5.0, 11.0, 5.0],
        [180.0, 170.0, -180.0, 169.9, 175.0, 175.5],
        np.ones(6),
        grid=g,
    )
    n = out["n_soundings"][0]
    assert n.sum() == 3
    assert n[9, 9] == 1 and n[0, 0] == 1 and n[5, 5] == 1  # lon=-180 is not wrapped on a regional grid


@pytest.mark.parametrize("bad", ["lat", "lon", "value", "time"])
def test_nan_never_poisons_or_lands_in_a_cell(bad: str) -> None:
    lat = np.array([-89.5, -89.5, 20.0])
    lon = np.array([-179.5, -179.5, 20.0])
    x = np.array([1.0, 3.0, 5.0])
    t = np.array(["2020-01-02", "2020-01-02", "2020-01-03"], dtype="datetime64[ns]")
    {"lat": lat, "lon": lon, "value": x}.get(bad, x)[0] = np.nan
    if bad == "time":
        t[0] = np.datetime64("NaT")
    edges = np.array(["2020-01-01", "2020-02-01"], dtype="datetime64[ns]")
    out = grid_arrays(lat, lon, x, grid=GridSpec.from_resolution(1.0), time=t, time_edges=edges)
    assert out["n_soundings"].sum() == 2
    assert out["n_soundings"][0, 0, 0] == 1  # the NaN did not fall into the south-west corner
    assert out["xgas_mean"][0, 0, 0] == 3.0 and out["xgas_mean"][0, 110, 200] == 5.0


def test_float64_accumulation_of_float32_values() -> None:
    n = 1_000_000
    x = (1850.0 + np.random.default_rng(0).standard_normal(n)).astype("float32")
    out = grid_arrays(np.full(n, 1.0), np.full(n, 1.0), x, grid=QUAD)
    ref = x.astype("float64")
    assert out["xgas_mean"][0, 1, 1] == pytest.approx(ref.mean(), rel=1e-13)
    assert out["xgas_std"][0, 1, 1] == pytest.approx(ref.std(ddof=1), rel=1e-10)
    assert out["n_soundings"][0, 1, 1] == n


def test_std_accurate_with_large_offset() -> None:
    rng = np.random.default_rng(1)
    x = 1e8 + 1e-3 * rng.standard_normal(50_000)
    out = grid_arrays(np.full(x.size, -3.0), np.full(x.size, -3.0), x, grid=QUAD)
    assert out["xgas_std"][0, 0, 0] == pytest.approx(np.std(x - 1e8, ddof=1), rel=1e-6)


# ---------------------------------------------------------------------------- references
def _pandas_reference(ds: xr.Dataset, grid: GridSpec, edges: pd.DatetimeIndex, akp: np.ndarray) -> dict:
    cell = grid.flat_index(ds.latitude.values, ds.longitude.values)
    tb = np.searchsorted(edges.asi8, ds.time.values.astype("datetime64[ns]").view("int64"), side="right") - 1
    ok = (cell >= 0) & (tb >= 0) & (tb < edges.size - 1) & np.isfinite(ds.xgas.values)
    unc = ds.xgas_uncertainty.values
    df = pd.DataFrame(
        {
            "b": (tb * grid.size + cell)[ok],
            "x": ds.xgas.values[ok],
            "u": unc[ok],
            "w": unc[ok] ** -2.0,
            "ak": akp[ok],
        }
    )
    df["wx"] = df.w * df.x
    g = df.groupby("b")
    return {
        "n_soundings": g.x.count(),
        "xgas_mean": g.x.mean(),
        "xgas_std": g.x.std(ddof=1),
        "xgas_standard_error": g.x.std(ddof=1) / np.sqrt(g.x.count()),
        "xgas_weighted_mean": g.wx.sum() / g.w.sum(),
        "xgas_uncertainty_mean": g.u.mean(),
        "averaging_kernel_pbl": g.ak.mean(),
    }


@pytest.mark.parametrize(
    ("time_bin", "chunk"), [("1D", 3001), ("MS", 3001), (None, 3001), ("7D", 3001), ("MS", -1), (None, 4096)]
)
def test_equals_pandas_groupby_reference(time_bin: str | None, chunk: int) -> None:
    """Several chunks and a tree of partials, or one chunk whose partial is final (dense, used as is)."""
    ds = make_soundings(20_000, "CH4", seed=7, start="2020-01-20", end="2020-03-10")
    ds["xgas"][::97] = np.nan
    grid = GridSpec.from_resolution(5.0)
    l3 = grid_soundings(ds.chunk({"sounding": chunk}), grid=grid, time_bin=time_bin).compute()
    edges = time_bin_edges(ds.time.values, time_bin)
    akp = boundary_layer_ak(
        ds.averaging_kernel.values, ds.pressure_weight.values, ds.pressure.values, ds.surface_pressure.values, 150.0
    )
    ref = _pandas_reference(ds, grid, edges, akp)
    assert l3.sizes["time"] == edges.size - 1
    for name, series in ref.items():
        full = np.full(l3.sizes["time"] * grid.size, np.nan)
        full[series.index.values] = series.values
        if name == "n_soundings":
            full = np.nan_to_num(full)
        np.testing.assert_allclose(l3[name].values.ravel(), full, rtol=1e-11, atol=0, err_msg=name)
    assert int(l3.n_soundings.sum()) == int(np.isfinite(ds.xgas.values).sum())  # count conservation


def test_chunk_independence_to_1e_12() -> None:
    ds = make_soundings(30_000, "CO2", seed=11)
    base = grid_soundings(ds.chunk({"sounding": -1}), 3.0, time_bin="7D").compute()
    for chunk, split in ((997, 2), (4096, 8), (30_000 // 7, 3)):
        other = grid_soundings(ds.chunk({"sounding": chunk}), 3.0, time_bin="7D", split_every=split).compute()
        np.testing.assert_array_equal(other.n_soundings.values, base.n_soundings.values)
        for name in GRIDDED_VARIABLES:
            np.testing.assert_allclose(other[name].values, base[name].values, rtol=1e-12, atol=0, err_msg=name)
    eager = grid_soundings(ds, 3.0, time_bin="7D")
    for name in GRIDDED_VARIABLES:
        np.testing.assert_allclose(eager[name].values, base[name].values, rtol=1e-12, atol=0, err_msg=name)


# ---------------------------------------------------------------------------- boundary-layer AK
def test_boundary_layer_ak_hand_computed() -> None:
    p = np.array([[1000.0, 900.0, 800.0, 500.0], [950.0, 850.0, 700.0, 100.0]])
    h = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    a = np.array([[1.2, 1.0, 0.8, 0.5], [2.0, 1.0, 3.0, 4.0]])
    # sounding 0: levels >= 850 -> 0, 1; sounding 1 with surface pressure 1000: >= 850 -> 0, 1
    got = boundary_layer_ak(a, h, p, np.array([1000.0, 1000.0]), 150.0)
    np.testing.assert_allclose(got, [(0.1 * 1.2 + 0.2 * 1.0) / 0.3, 1.5])
    # surface pressure absent -> level 0: sounding 1 then keeps levels >= 800 -> 0, 1 as well
    np.testing.assert_allclose(boundary_layer_ak(a, h, p, None, 150.0), [(0.12 + 0.2) / 0.3, 1.5])
    assert boundary_layer_ak(None, h, p) is None


def test_no_averaging_kernel_gives_one_and_ak_mean_is_gridded() -> None:
    ds = _soundings([1.0, 2.0], [1.0, 2.0], [400.0, 402.0])
    assert float(grid_soundings(ds, 10.0).averaging_kernel_pbl.max()) == 1.0
    ds["averaging_kernel"] = (("sounding", "level"), np.array([[0.5, 1.0], [1.5, 1.0]]))
    ds["pressure_weight"] = (("sounding", "level"), np.array([[0.5, 0.5], [0.5, 0.5]]))
    ds["pressure"] = (("sounding", "level"), np.array([[1000.0, 500.0], [1000.0, 500.0]]))
    l3 = grid_soundings(ds.chunk({"sounding": 1}), 10.0, pbl_pressure_depth=100.0)
    assert float(l3.averaging_kernel_pbl.max()) == pytest.approx(1.0)
    l3 = grid_soundings(ds, 10.0, pbl_pressure_depth=600.0)
    assert float(l3.averaging_kernel_pbl.max()) == pytest.approx(1.0)  # (0.75 + 1.25) / 2
    ds["averaging_kernel"][0, 0] = 0.1
    l3 = grid_soundings(ds, 10.0, pbl_pressure_depth=100.0)
    assert float(l3.averaging_kernel_pbl.max()) == pytest.approx((0.1 + 1.5) / 2)


# ---------------------------------------------------------------------------- time bins, bbox, empty
def test_time_bins_daily_monthly_none_and_range() -> None:
    t = np.array(
        ["2020-01-31T23:59:59", "2020-02-01T00:00", "2020-02-01T12:00", "2020-03-15"],
        dtype="datetime64[ns]",
    )
    ds = _soundings([1.0] * 4, [1.0] * 4, [1.0, 2.0, 3.0, 4.0], time=t)
    monthly = grid_soundings(ds, 10.0, time_bin="MS")
    assert list(monthly.time.values.astype("datetime64[D]").astype(str)) == [
        "2020-01-01",
        "2020-02-01",
        "2020-03-01",
    ]
    assert monthly.n_soundings.sum(("latitude", "longitude")).values.tolist() == [1, 2, 1]
    assert monthly.time_bounds.values[-1, 1] == np.datetime64("2020-04-01")
    assert monthly.time.attrs["bounds"] == "time_bounds"
    daily = grid_soundings(ds, 10.0, time_bin="1D")
    assert daily.sizes["time"] == 45  # 2020-01-31 .. 2020-03-15
    assert daily.n_soundings.sum(("latitude", "longitude")).values[1] == 2  # midnight is the start of its day
    whole = grid_soundings(ds, 10.0, time_bin=None)
    assert whole.sizes["time"] == 1 and int(whole.n_soundings.sum()) == 4
    assert whole.time_bounds.values[0].tolist() == [
        np.datetime64("2020-01-31").astype("datetime64[ns]").tolist(),
        np.datetime64("2020-03-16").astype("datetime64[ns]").tolist(),
    ]
    ranged = grid_soundings(ds, 10.0, time_bin="MS", time_range=("2020-02-01", "2020-03-01"))
    assert ranged.sizes["time"] == 1 and int(ranged.n_soundings.sum()) == 2  # outside the range: dropped
    with pytest.raises(SchemaError, match="pandas frequency"):
        grid_soundings(ds, 10.0, time_bin="fortnightly-ish")


def test_regional_bbox_grid() -> None:
    ds = make_soundings(5000, "CH4", seed=2)
    l3 = grid_soundings(ds, 0.5, bbox=(-10.2, 35.0, 30.0, 60.1), time_bin=None)
    assert l3.sizes["latitude"] == 51 and l3.sizes["longitude"] == 81
    assert (
        float(l3.latitude_bounds[0, 0]) == 35.0
        and float(l3.longitude_bounds[0, 0]) == -10.5
        and float(l3.longitude_bounds[-1, 1]) == 30.0
    )
    inside = GridSpec.from_resolution(0.5, (-10.2, 35.0, 30.0, 60.1)).flat_index(ds.latitude, ds.longitude) >= 0
    assert int(l3.n_soundings.sum()) == int(inside.sum()) > 0


@pytest.mark.parametrize("lazy", [False, True])
def test_empty_input_gives_an_all_empty_grid(lazy: bool, tmp_path) -> None:
    ds = make_soundings(10, "CO2").isel(sounding=slice(0, 0))
    ds = ds.chunk() if lazy else ds
    l3 = grid_soundings(ds, 30.0)
    assert l3.sizes["time"] == 1 and int(l3.n_soundings.sum()) == 0
    assert bool(l3.xgas_mean.isnull().all())
    l3.to_netcdf(tmp_path / "empty.nc")
    ranged = grid_soundings(ds, 30.0, time_bin="1D", time_range=("2020-01-01", "2020-01-04"))
    assert ranged.sizes["time"] == 3 and int(ranged.n_soundings.sum()) == 0
    nan_only = _soundings([np.nan], [1.0], [1.0])
    assert int(grid_soundings(nan_only, 30.0).n_soundings.sum()) == 0


# ---------------------------------------------------------------------------- schema, CF, laziness
def test_cf_attrs_and_netcdf_round_trip(tmp_path) -> None:
    ds = make_soundings(3000, "CH4", seed=4)
    l3 = grid_soundings(ds.chunk({"sounding": 1000}), 10.0)
    validate_gridded(l3)
    for name, spec in GRIDDED_VARIABLES.items():
        assert l3[name].dims == ("time", "latitude", "longitude")
        assert l3[name].attrs["cell_methods"] == spec["cell_methods"]
        assert "units" in l3[name].attrs and "long_name" in l3[name].attrs
    assert l3.xgas_mean.attrs["units"] == "ppb"
    assert l3.xgas_mean.attrs["standard_name"] == "dry_atmosphere_mole_fraction_of_methane"
    assert "xgas_std" in l3.xgas_mean.attrs["ancillary_variables"]
    assert "ddof=1" in l3.xgas_std.attrs["comment"]
    assert l3.cell_area.attrs["units"] == "m2"
    assert float(l3.cell_area.sum()) == pytest.approx(4 * np.pi * 6_371_007.181**2, rel=1e-12)
    assert l3.latitude.attrs["bounds"] == "latitude_bounds" and "longitude_bounds" in l3
    assert l3.attrs["gas"] == "CH4" and l3.attrs["n_input_soundings"] == 3000 and l3.attrs["time_bin"] == "MS"
    path = tmp_path / "l3.nc"
    l3.to_netcdf(path)
    with xr.open_dataset(path) as back:
        assert back.n_soundings.dtype == np.int32
        np.testing.assert_array_equal(back.n_soundings.values, l3.n_soundings.values)
        np.testing.assert_array_equal(back.time_bounds.values, l3.time_bounds.values)
        assert back.xgas_mean.attrs["units"] == "ppb"


class _CountingScheduler:
    def __init__(self) -> None:
        self.computes = 0

    def __call__(self, dsk, keys, **kwargs):
        self.computes += 1
        return dask.get(dsk, keys, **kwargs)


def test_lazy_until_computed() -> None:
    ds = make_soundings(4000, "CH4", seed=5).chunk({"sounding": 500})
    sched = _CountingScheduler()
    with dask.config.set(scheduler=sched):
        l3 = grid_soundings(ds, 10.0, time_range=("2020-01-01", "2020-02-01"))
        assert sched.computes == 0
        assert isinstance(l3.xgas_mean.data, da.Array) and isinstance(l3.n_soundings.data, da.Array)
        # without a range, dask-backed times cost exactly one small compute (the time extent)
        grid_soundings(ds, 10.0)
        assert sched.computes == 1
        got = l3.compute()
        assert sched.computes == 2
    assert int(got.n_soundings.sum()) == 4000


def test_bad_input_messages() -> None:
    ds = make_soundings(10, "CO2")
    with pytest.raises(SchemaError, match="'gas'"):
        grid_soundings(ds.assign_attrs(gas="N2O"))
    with pytest.raises(SchemaError, match="'xgas'"):
        grid_soundings(ds.drop_vars("xgas"))
    with pytest.raises(SchemaError, match="datetime64"):
        grid_soundings(ds.assign_coords(time=("sounding", np.arange(10.0))))


def test_netcdf_opened_with_chunks_like_the_pipeline(tmp_path) -> None:
    ds = make_soundings(6000, "CO2", seed=9, start="2020-01-01", end="2020-03-01")
    path = tmp_path / "soundings.nc"
    ds.to_netcdf(path)
    eager = grid_soundings(ds, 10.0, time_bin="MS", pbl_pressure_depth=100.0)
    with xr.open_dataset(path, chunks={"sounding": 1000}) as snd:
        lazy = grid_soundings(snd, 10.0, time_bin="MS", pbl_pressure_depth=100.0)
        assert isinstance(lazy.xgas_mean.data, da.Array)
        out = lazy.compute()
    assert out.attrs["n_input_soundings"] == 6000 and out.sizes["time"] == 2
    for name in GRIDDED_VARIABLES:
        np.testing.assert_allclose(out[name].values, eager[name].values, rtol=1e-12, atol=0, err_msg=name)


def test_refuses_absurdly_large_grids() -> None:
    edges = np.arange(np.datetime64("2000-01-01"), np.datetime64("2030-01-01"), np.timedelta64(1, "D"))
    with pytest.raises(SchemaError, match="coarser resolution"):
        grid_arrays(
            [0.0],
            [0.0],
            [1.0],
            grid=GridSpec.from_resolution(0.1),
            time=edges[:1],
            time_edges=edges,
        )


# ---------------------------------------------------------------------------- sparse partials (issue 19)
@pytest.mark.parametrize("layout", ["direct", "buckets", "blocks"])
def test_every_kernel_path_equals_pandas_reference(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One local table, the bucket sort (sparse and dense buckets) and many blocks give the reference."""
    import gosat_pipeline.gridding as gridding

    if layout != "direct":  # small buckets and blocks, so that a small test crosses many of them
        monkeypatch.setattr(gridding, "_DIRECT_SPAN", 64)
        monkeypatch.setattr(gridding, "_BUCKET_SHIFT", 4)
        monkeypatch.setattr(gridding, "_MAX_BUCKETS", 64)
    if layout == "blocks":
        monkeypatch.setattr(gridding, "_BLOCK_BINS", 500)  # bands of 2 rows of 2 degree cells: 45 a month
    ds = make_soundings(6000, "CH4", seed=21, start="2020-01-01", end="2020-03-01")
    # half the soundings crowd into a few cells (dense buckets), the rest are spread out (sparse ones)
    ds["latitude"][:3000] = 10.0 + (np.arange(3000) % 7) * 0.3
    ds["longitude"][:3000] = 20.0 + (np.arange(3000) % 5) * 0.3
    ds["xgas"][::89] = np.nan
    grid = GridSpec.from_resolution(2.0)
    lazy = grid_soundings(ds.chunk({"sounding": 1700}), grid=grid, time_bin="MS", split_every=2)
    if layout == "blocks":
        assert lazy.xgas_mean.data.numblocks == (2, 45, 1)
    edges = time_bin_edges(ds.time.values, "MS")
    akp = boundary_layer_ak(
        ds.averaging_kernel.values, ds.pressure_weight.values, ds.pressure.values, ds.surface_pressure.values, 150.0
    )
    ref = _pandas_reference(ds, grid, edges, akp)
    for l3 in (lazy.compute(), grid_soundings(ds, grid=grid, time_bin="MS")):
        for name, series in ref.items():
            full = np.full(l3.sizes["time"] * grid.size, np.nan)
            full[series.index.values] = series.values
            if name == "n_soundings":
                full = np.nan_to_num(full)
            np.testing.assert_allclose(l3[name].values.ravel(), full, rtol=1e-11, atol=0, err_msg=name)


@pytest.mark.parametrize(
    ("nt", "ny", "nx"), [(12, 1800, 3600), (1, 180, 360), (400, 18, 36), (3, 7, 5000), (300, 1800, 3600)]
)
def test_blocks_tile_the_grid(nt: int, ny: int, nx: int) -> None:
    from gosat_pipeline.gridding import _MAX_BLOCKS, _Layout

    lay = _Layout.for_grid(nt, ny, nx)
    bounds = lay.bounds()
    assert bounds[0] == 0 and bounds[-1] == nt * ny * nx and np.all(np.diff(bounds) > 0)
    assert lay.nblocks <= _MAX_BLOCKS
    assert lay.tb == 1 or lay.rb == ny
    sizes = [tb * rb * nx for _, _, tb, rb in map(lay.block, range(lay.nblocks))]
    np.testing.assert_array_equal(np.diff(bounds), sizes)
    assert [sum(c) for c in lay.chunks()] == [nt, ny, nx]


def test_partials_scale_with_soundings_not_grid() -> None:
    """A few soundings on a 0.02 degree global grid: the chunk and merge steps allocate next to nothing."""
    import tracemalloc

    from gosat_pipeline.gridding import _chunk_partial, _merge_block

    grid = GridSpec.from_resolution(0.02)  # 1.6e8 cells: a dense partial would be 13 GB
    edges = _grid_edges(grid)
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(-80, 80, 2000), rng.uniform(-180, 180, 2000)
    x = rng.normal(400.0, 1.0, 2000)
    tracemalloc.start()
    parts = [_chunk_partial(edges, _single_bin_edges(), lat[k::4], lon[k::4], x[k::4]) for k in range(4)]
    blocks = sorted({w for p in parts for w in p.pieces})
    merged = [_merge_block(w, *parts) for w in blocks]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(b.size for b, _ in merged) == 2000  # every sounding in its own cell
    assert peak < 8 * 2**20, peak
