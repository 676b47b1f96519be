"""Gridding on a real two-process dask cluster, and property checks (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gosat_pipeline.gridding import grid_arrays, grid_soundings
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.schema import GRIDDED_VARIABLES
from gosat_pipeline.testing import make_soundings


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_threaded_and_distributed_cluster_agree() -> None:
    distributed = pytest.importorskip("distributed")
    ds = make_soundings(40_000, "CH4", seed=21, n_levels=6).chunk({"sounding": 5000})
    threaded = grid_soundings(ds, 5.0, time_bin="7D").compute(scheduler="threads")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        with distributed.Client(cl) as client:
            lazy = grid_soundings(ds, 5.0, time_bin="7D")
            remote = client.compute(lazy).result()
            workers_used = len(client.scheduler_info()["workers"])
    assert workers_used == 2
    np.testing.assert_array_equal(remote.n_soundings.values, threaded.n_soundings.values)
    for name in GRIDDED_VARIABLES:
        np.testing.assert_allclose(remote[name].values, threaded[name].values, rtol=1e-12, atol=0, err_msg=name)
    assert int(remote.n_soundings.sum()) == 40_000


nan = st.just(float("nan"))
lat_st = st.one_of(st.floats(-91, 91), st.sampled_from([-90.0, 90.0, 0.0, 45.0, -7.5]), nan)
lon_st = st.one_of(st.floats(-400, 400), st.sampled_from([-180.0, 180.0, 0.0, 540.0, 36.0]), nan)
val_st = st.one_of(st.floats(-1e3, 1e3), nan)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pts=st.lists(st.tuples(lat_st, lon_st, val_st), min_size=0, max_size=60),
    res=st.sampled_from([1.0, 7.5, 45.0, (10.0, 36.0)]),
    chunk=st.integers(1, 17),
)
def test_counts_conserved_and_chunking_irrelevant(pts, res, chunk) -> None:
    import xarray as xr

    lat = np.array([p[0] for p in pts], dtype="float64")
    lon = np.array([p[1] for p in pts], dtype="float64")
    x = np.array([p[2] for p in pts], dtype="float64")
    grid = GridSpec.from_resolution(res)
    out = grid_arrays(lat, lon, x, grid=grid)
    with np.errstate(invalid="ignore"):
        expected = int(((grid.flat_index(lat, lon) >= 0) & np.isfinite(x)).sum())
    assert int(out["n_soundings"].sum()) == expected
    ds = xr.Dataset(
        {"xgas": ("sounding", x, {"units": "ppm"})},
        coords={
            "latitude": ("sounding", lat),
            "longitude": ("sounding", lon),
            "time": ("sounding", np.full(x.size, np.datetime64("2021-06-01", "ns"))),
        },
        attrs={"gas": "CO2"},
    )
    lazy = grid_soundings(ds.chunk({"sounding": chunk}), grid=grid, time_bin=None).compute()
    np.testing.assert_array_equal(lazy.n_soundings.values[0], out["n_soundings"][0])
    for name in ("xgas_mean", "xgas_std", "xgas_weighted_mean"):
        np.testing.assert_allclose(lazy[name].values[0], out[name][0], rtol=1e-12, atol=1e-12, err_msg=name)
