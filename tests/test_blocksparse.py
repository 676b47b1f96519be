"""The Jacobian built block-sparse by time bin, held once, and used sparse by the inversion (issue 21)."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import xarray as xr

from gosat_pipeline.blocksparse import csr_from_blocks, jacobian_matrix, rows_with_nonfinite, wrap_jacobian
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inversion import analytic_inversion, invert
from gosat_pipeline.testing.osse import make_osse_case
from gosat_pipeline.transport import Forcing, build_jacobian, integrate_responses, response_blocks


@pytest.fixture(scope="module")
def case() -> dict:
    """Three months of daily bins, time-resolved winds, a monthly state (split MS)."""
    return make_osse_case(seed=3, truth="independent", period_split="MS")


@pytest.fixture(scope="module")
def jacobians(case: dict) -> tuple[xr.DataArray, xr.DataArray]:
    kw = {"winds": case["winds"], "period_split": "MS"}
    dense = build_jacobian(case["obs"], case["prior_flux"], case["masks"], **kw)
    lazy = build_jacobian(case["obs"], case["prior_flux"], case["masks"], dense_max_bytes=0, **kw)
    return dense, lazy


def test_csr_from_blocks_is_the_dense_assembly() -> None:
    rng = np.random.default_rng(0)
    m, n = 50, 12
    rows = rng.permutation(m)
    expected = np.zeros((m, n))
    blocks: list = []
    for part in np.array_split(rows, 4):
        cols = rng.choice(n, size=5, replace=False)
        values = rng.normal(size=(part.size, cols.size))
        values[:, 2] = 0.0  # an all-zero column is not stored
        expected[np.ix_(part, cols)] = values
        blocks.append((part, cols, values))
    K = csr_from_blocks((m, n), blocks)
    assert sp.isspmatrix_csr(K) and K.has_sorted_indices
    np.testing.assert_array_equal(K.toarray(), expected)
    assert K.nnz == m * 4  # five columns a block, one of them zero
    assert all(b is None for b in blocks)  # each block released once copied


def test_a_row_in_two_blocks_is_an_error() -> None:
    one = (np.array([0, 1]), np.array([0]), np.ones((2, 1)))
    two = (np.array([1, 2]), np.array([1]), np.ones((2, 1)))
    with pytest.raises(ValueError, match="two blocks"):
        csr_from_blocks((3, 2), [one, two])
    # also when the first block stored nothing for the row (all its columns zero)
    empty = (np.array([0, 1]), np.array([0]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="two blocks"):
        csr_from_blocks((3, 2), [empty, (np.array([1, 2]), np.array([1]), np.ones((2, 1)))])


def test_block_sparse_jacobian_equals_the_dense_one(jacobians: tuple[xr.DataArray, xr.DataArray]) -> None:
    dense, lazy = jacobians
    assert isinstance(dense.data, np.ndarray)
    assert isinstance(lazy.data, dask.array.Array)
    np.testing.assert_array_equal(lazy.values, dense.values)
    for c in dense.coords:
        np.testing.assert_array_equal(lazy[c].values, dense[c].values)
    assert lazy.attrs == dense.attrs
    K = jacobian_matrix(lazy)
    assert sp.issparse(K) and K.shape == dense.shape
    np.testing.assert_array_equal(K.toarray(), dense.values)
    # a dense Jacobian comes back as itself, a sliced lazy one as its values
    assert jacobian_matrix(dense) is dense.values or np.shares_memory(jacobian_matrix(dense), dense.values)
    sub = lazy.isel(obs=slice(0, 40))
    np.testing.assert_array_equal(jacobian_matrix(sub), dense.values[:40])


def test_an_observation_sees_no_later_period(jacobians: tuple[xr.DataArray, xr.DataArray]) -> None:
    """The block structure by period: exact zeros, not small numbers, and at most two periods per row."""
    dense, lazy = jacobians
    K = jacobian_matrix(lazy)
    emis = dense["state_kind"].values == "emission"
    period = dense["state_period"].values
    labels = sorted(set(period[emis]))
    assert len(labels) == 3
    month = pd.DatetimeIndex(dense["obs_time"].values).month
    for j in range(len(labels)):
        later = emis & np.isin(period, labels[j + 1 :])
        rows = np.flatnonzero(month == j + 1)
        assert K[rows][:, np.flatnonzero(later)].nnz == 0
        earlier = emis & np.isin(period, labels[: max(j - 1, 0)])  # two months back: past the tail
        assert K[rows][:, np.flatnonzero(earlier)].nnz == 0
    assert K.nnz < 0.6 * K.shape[0] * K.shape[1]


def test_inversion_of_the_sparse_jacobian_matches_the_dense_one(
    jacobians: tuple[xr.DataArray, xr.DataArray],
) -> None:
    dense, lazy = jacobians
    for kw in ({}, {"lognormal": True}):
        pd_, ps = invert(dense, **kw), invert(lazy, **kw)
        for v in ("x_posterior", "S_posterior", "averaging_kernel", "total_posterior", "total_posterior_sigma"):
            np.testing.assert_allclose(ps[v].values, pd_[v].values, rtol=1e-9, atol=1e-14, err_msg=v)
        for v in ("total_n_observations", "total_status"):
            np.testing.assert_array_equal(ps[v].values, pd_[v].values)
        np.testing.assert_allclose(ps["total_chi2_obs"].values, pd_["total_chi2_obs"].values, rtol=1e-12)
    # many small chunks of the sparse matrix (each densified over the columns it uses)
    K = jacobian_matrix(lazy)
    y = lazy["obs_value"].values - lazy["obs_background_reference"].values
    So = lazy["obs_sigma"].values ** 2
    n = K.shape[1]
    xa, Sa = np.ones(n), np.full(n, 0.25)
    a = analytic_inversion(dense.values, y, xa, Sa, So, form="state")
    b = analytic_inversion(K, y, xa, Sa, So, form="state", chunk_size=97)
    np.testing.assert_allclose(b.x_hat, a.x_hat, rtol=1e-9)
    np.testing.assert_allclose(b.S_hat, a.S_hat, rtol=1e-9, atol=1e-15)


def test_a_non_finite_row_is_dropped_the_same_way() -> None:
    K = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, np.nan], [0.0, 0.0], [np.inf, 2.0]]))
    np.testing.assert_array_equal(rows_with_nonfinite(K), [False, True, False, True])
    np.testing.assert_array_equal(rows_with_nonfinite(K.toarray()), [False, True, False, True])


def test_a_lazy_jacobian_is_written_chunk_by_chunk_and_reads_back(
    jacobians: tuple[xr.DataArray, xr.DataArray], tmp_path: Path
) -> None:
    dense, lazy = jacobians
    path = tmp_path / "jacobian.nc"
    enc = {"jacobian": {"zlib": True, "complevel": 1, "chunksizes": lazy.data.chunksize}}
    with dask.config.set(scheduler="threads"):
        lazy.to_dataset(name="jacobian").to_netcdf(path, encoding=enc)
    with xr.open_dataset(path) as back:
        np.testing.assert_array_equal(back["jacobian"].values, dense.values)


def test_wrap_keeps_small_jacobians_dense() -> None:
    K = sp.random(100, 10, density=0.3, format="csr", random_state=1)
    assert isinstance(wrap_jacobian(K), np.ndarray)
    lazy = wrap_jacobian(K, dense_max_bytes=100 * 10 * 8 - 1)
    assert isinstance(lazy, dask.array.Array)
    np.testing.assert_array_equal(lazy.compute(), K.toarray())


def test_time_bins_are_handed_over_as_soon_as_they_are_complete() -> None:
    """Each daily bin's block leaves the integration before the next days are integrated."""
    grid = GridSpec.from_resolution(1.0, (100.0, 0.0, 110.0, 8.0))
    t0 = np.datetime64("2020-01-01T00:00", "ns")
    day = np.timedelta64(1, "D")
    times = t0 - day + np.arange(4 * 12) * np.timedelta64(6, "h")
    u = np.full((times.size, *grid.shape), 3.0)
    v = np.zeros_like(u)
    pattern = np.zeros(grid.size)
    pattern[grid.size // 2] = 1e-6
    forcings = [Forcing("flux", t0 - day, t0 + 10 * day, pattern=pattern)]
    cells = np.arange(grid.size)
    obs_start = np.repeat(t0 + np.arange(10) * day, 5)
    obs_cell = np.tile(cells[:5] + grid.size // 2 - 2, 10)

    class Reads:
        """The winds, counting the time steps the integration has read so far."""

        def __init__(self, a: np.ndarray) -> None:
            self.a, self.reads = a, 0

        def __getitem__(self, k: int) -> np.ndarray:
            self.reads += 1
            return self.a[k]

    uu = Reads(u)
    seen: list[int] = []
    for rows, cols, values in response_blocks(grid, times, uu, v, forcings, obs_start, obs_start + day, obs_cell):
        seen.append(uu.reads)
        assert rows.size == 5 and cols.tolist() == [0] and values.shape == (5, 1)
    assert len(seen) == 10 and seen == sorted(seen) and seen[0] < seen[-1] / 5
    K = integrate_responses(grid, times, u, v, forcings, obs_start, obs_start + day, obs_cell)
    assert K.shape == (50, 1) and np.all(K > 0)


def test_steady_winds_are_the_time_mean_read_in_blocks(tmp_path: Path) -> None:
    """The steady operator's winds: the float64 time mean of every step, the same to the bit from a
    lazily opened file read a block of steps at a time, and the Jacobian built from them equals the
    one built from all the steps."""
    from gosat_pipeline.transport import steady_winds

    rng = np.random.default_rng(2)
    grid = GridSpec.from_resolution(1.0, (100.0, 0.0, 110.0, 8.0))
    t = pd.date_range("2020-01-01", periods=150, freq="6h")
    shape = (t.size, *grid.shape)
    winds = xr.Dataset(
        {
            "u": (("time", "latitude", "longitude"), (3 + rng.normal(size=shape)).astype("float32")),
            "v": (("time", "latitude", "longitude"), rng.normal(size=shape).astype("float32")),
        },
        coords={"time": t, **grid.coords()},
    )
    path = tmp_path / "winds.nc"
    winds.to_netcdf(path)
    expected = np.mean(winds["u"].values.astype("float64"), axis=0)
    np.testing.assert_array_equal(steady_winds(winds)["u"].values, expected)
    with xr.open_dataset(path) as lazy:
        mean = steady_winds(lazy)
    np.testing.assert_array_equal(mean["u"].values, expected)
    assert mean["u"].dims == ("latitude", "longitude") and mean["u"].dtype == np.float64


def test_steady_jacobian_from_the_mean_winds_equals_the_one_from_every_step(case: dict) -> None:
    from gosat_pipeline.transport import TransportSettings, steady_winds

    kw = {"period_split": "MS", "settings": TransportSettings(mode="steady")}
    full = build_jacobian(case["obs"], case["prior_flux"], case["masks"], winds=case["winds"], **kw)
    mean = build_jacobian(case["obs"], case["prior_flux"], case["masks"], winds=steady_winds(case["winds"]), **kw)
    np.testing.assert_array_equal(mean.values, full.values)


def test_the_pipeline_writes_a_lazy_jacobian_compressed_and_whole(
    jacobians: tuple[xr.DataArray, xr.DataArray], tmp_path: Path
) -> None:
    """The run's jacobian file from a block-sparse Jacobian: computed chunk by chunk on local threads
    (also when a distributed client is the default scheduler), compressed, the same values."""
    import types

    from distributed import Client, LocalCluster

    from gosat_pipeline.pipeline import _Runner

    dense, lazy = jacobians
    stub = types.SimpleNamespace(run_dir=tmp_path, cfg=types.SimpleNamespace(run=types.SimpleNamespace(name="t")))
    stub.synthetic = True
    stub.write_nc = lambda ds, name, encoding=None: _Runner.write_nc(stub, ds, name, encoding)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        with Client(cl) as client:
            name = _Runner._write_jacobian(stub, lazy, "jacobian_CH4.nc")
            # nothing went through the cluster's scheduler: the chunks were computed here
            assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.transition_log)) == 0
    with xr.open_dataset(tmp_path / name) as back:
        assert back["jacobian"].encoding.get("zlib") is True
        np.testing.assert_array_equal(back["jacobian"].values, dense.values)
    assert _Runner._write_jacobian(stub, dense, "jacobian_CO2.nc") == "jacobian_CO2.nc"
    with xr.open_dataset(tmp_path / "jacobian_CO2.nc") as back:
        np.testing.assert_array_equal(back["jacobian"].values, dense.values)
