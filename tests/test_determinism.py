"""Same inputs and configuration, same outputs (issue 9).

Two runs in one process must agree bit for bit, and so must the synchronous
scheduler and a two-process ``distributed.LocalCluster`` wherever the order of
floating-point operations is fixed by the graph (ingest, gridding). Where it is not
(the BLAS inside the inversion runs single-threaded on dask workers and multi-threaded
here), results agree to 1e-12 relative.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import dask.array as da
import distributed
import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.gridding import grid_soundings
from gosat_pipeline.inversion import analytic_inversion, analytic_inversion_chunked, invert
from gosat_pipeline.io import close_cached, open_granules
from gosat_pipeline.quality import apply_quality_filter
from gosat_pipeline.schema import GRIDDED_VARIABLES
from gosat_pipeline.testing import make_granule_files, make_osse_case, make_soundings
from gosat_pipeline.transport import build_jacobian

PERIOD = ("2020-01-01", "2020-03-01")
RTOL = 1e-12

# functions of this module run on the workers: ship them by value (workers need not import tests/)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client() -> Any:
    """A two-process LocalCluster, default scheduler only inside ``with dask.config.set(...)``."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    ) as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


def _on(client: Any) -> Any:
    """Make ``client`` the scheduler of every dask computation in the block."""
    return dask.config.set(scheduler=client.get)


@pytest.fixture(scope="module")
def granules(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("granules")
    return make_granule_files(d, "cci_ocpr", n_files=6, n_per_file=400, seed=8, start="2020-01-10")


def _assert_same(a: xr.Dataset, b: xr.Dataset, rtol: float = 0.0) -> None:
    """Identical datasets (values, coordinates, attributes); floats to ``rtol`` if given."""
    if rtol == 0.0:
        xr.testing.assert_identical(a, b)
        return
    assert a.attrs == b.attrs
    for name in a.variables:
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=rtol, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


# ------------------------------------------------------------------------------ ingest
def _ingest(files: list[Path]) -> xr.Dataset:
    close_cached()  # each run opens every file afresh
    return open_granules(files, chunks={"sounding": 700})


def test_ingest_twice_gives_identical_datasets(granules: list[Path]) -> None:
    with dask.config.set(scheduler="synchronous"):
        a, b = _ingest(granules).compute(), _ingest(granules).compute()
    _assert_same(a, b)
    assert a.sizes["sounding"] > 0 and json.loads(a.attrs["skipped_inputs"]) == []


def test_ingest_on_two_workers_equals_one_thread(granules: list[Path], client: Any) -> None:
    with dask.config.set(scheduler="synchronous"):
        local = _ingest(granules).compute()
    with _on(client):
        lazy = _ingest(granules)  # files scanned on the workers
        remote = lazy.compute()
    _assert_same(local, remote)


# ------------------------------------------------------------------------------ ingest -> quality -> grid
def _l3(files: list[Path]) -> xr.Dataset:
    ds = apply_quality_filter(_ingest(files), time_range=PERIOD, max_solar_zenith=70.0)
    return grid_soundings(ds, 5.0, time_bin="7D", time_range=PERIOD)


def test_components_chain_twice_and_on_two_workers(granules: list[Path], client: Any) -> None:
    with dask.config.set(scheduler="synchronous"):
        first, second = _l3(granules).compute(), _l3(granules).compute()
    _assert_same(first, second)
    with _on(client):
        remote = _l3(granules).compute()
    _assert_same(first, remote)  # the combine tree is fixed: bit for bit
    assert int(first.n_soundings.sum()) > 0


# ------------------------------------------------------------------------------ gridding
def test_gridding_twice_and_on_two_workers_is_identical(client: Any) -> None:
    ds = make_soundings(40_000, "CO2", seed=31, n_levels=4, start=PERIOD[0], end=PERIOD[1])
    lazy = ds.chunk({"sounding": 2_500})

    def grid(d: xr.Dataset) -> xr.Dataset:
        return grid_soundings(d, 3.0, time_bin="1D", time_range=PERIOD)

    eager_a, eager_b = grid(ds), grid(ds)
    _assert_same(eager_a, eager_b)
    sync_a = grid(lazy).compute(scheduler="synchronous")
    sync_b = grid(lazy).compute(scheduler="synchronous")
    _assert_same(sync_a, sync_b)
    threads = grid(lazy).compute(scheduler="threads")
    _assert_same(sync_a, threads)
    remote = client.compute(grid(lazy)).result()
    _assert_same(sync_a, remote)
    # eager (one chunk) and lazy (16 chunks) differ only in the order of additions
    for name in GRIDDED_VARIABLES:
        np.testing.assert_allclose(eager_a[name].values, sync_a[name].values, rtol=RTOL, atol=0, err_msg=name)


# ------------------------------------------------------------------------------ inversion
@pytest.fixture(scope="module")
def osse() -> dict[str, Any]:
    return make_osse_case(seed=4, regions=9, n_months=2)


def _posterior(case: dict[str, Any]) -> xr.Dataset:
    tp = case["transport"]
    jac = build_jacobian(
        case["obs"],
        case["prior_flux"],
        case["masks"],
        winds=case["winds"],
        eddy_diffusivity=tp["eddy_diffusivity"],
        ventilation_time=tp["ventilation_time"],
        sigma_model=case["sigma_model"],
    )
    return invert(jac, prior_error=case["prior_error"], correlation_length_km=500.0)


def test_inversion_twice_is_identical(osse: dict[str, Any]) -> None:
    a, b = _posterior(osse), _posterior(osse)
    _assert_same(a, b)
    assert int(a["status"]) == 0 and float(a["dofs"]) > 1


def test_inversion_on_a_worker_process_equals_here(osse: dict[str, Any], client: Any) -> None:
    here = _posterior(osse)
    there = client.submit(_posterior, osse, pure=False).result()
    _assert_same(here, there, rtol=RTOL)


def test_chunked_inversion_on_two_workers_equals_one_thread(client: Any) -> None:
    rng = np.random.default_rng(17)
    m, n = 24_000, 40
    K = rng.normal(size=(m, n))
    xa = np.ones(n)
    y = K @ (xa + 0.3 * rng.normal(size=n)) + rng.normal(size=m)
    So = rng.uniform(0.5, 2.0, m)
    Sa = np.full(n, 0.25)
    Kd, yd, Sod = (
        da.from_array(K, chunks=(1_500, n)),
        da.from_array(y, chunks=1_500),
        da.from_array(So, chunks=1_500),
    )
    with dask.config.set(scheduler="synchronous"):
        one = analytic_inversion_chunked(Kd, xa, Sa, y=yd, So=Sod)
        again = analytic_inversion_chunked(Kd, xa, Sa, y=yd, So=Sod)
    with _on(client):
        two = analytic_inversion_chunked(Kd, xa, Sa, y=yd, So=Sod)
    dense = analytic_inversion(K, y, xa, Sa, So)
    for name in ("x_hat", "S_hat", "A"):
        np.testing.assert_array_equal(getattr(one, name), getattr(again, name), err_msg=name)
        np.testing.assert_allclose(getattr(two, name), getattr(one, name), rtol=RTOL, atol=0, err_msg=name)
        scale = np.abs(getattr(dense, name)).max()  # 16 chunk sums vs one product: rounding only
        np.testing.assert_allclose(getattr(one, name), getattr(dense, name), rtol=0, atol=1e-10 * scale)
    assert one.status == two.status == 0 and one.dofs == pytest.approx(two.dofs, rel=RTOL)
