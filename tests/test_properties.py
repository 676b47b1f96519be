"""Property checks (hypothesis) of the reliability requirement (issue 9).

- Readers: a fill value written at random positions of a granule, in any product's
  own convention, reads back as NaN exactly there (and a sounding without a gas value
  is dropped by the product screen, exactly those).
- Gridding (extending tests/test_gridding_dask.py, which checks counts and chunking
  without time bins): with time bins, uncertainties and boundary-layer AKs, in any
  order and any chunking, every counted sounding lands in exactly one bin, the sums
  are conserved, the statistics do not depend on the order or the chunking, and the
  weighted mean stays within each cell's values.
- Inversion (extending tests/test_inversion.py, which samples well-conditioned
  problems): over badly scaled, rank-deficient Jacobians, correlated priors and
  observation errors across six orders of magnitude, in the state, observation and
  chunked forms, posterior variances never exceed prior variances, the posterior
  covariance is symmetric positive definite, and the averaging-kernel eigenvalues
  are real and in [0, 1].
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gosat_pipeline.gridding import grid_arrays, grid_soundings
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inversion import analytic_inversion, analytic_inversion_chunked
from gosat_pipeline.io import open_granule
from gosat_pipeline.schema import GRIDDED_VARIABLES
from gosat_pipeline.testing.granules import (
    GRANULE_FORMATS,
    granule_filename,
    granule_soundings,
    write_granule,
)

FORMATS = list(GRANULE_FORMATS)
N = 12
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------------------ readers
def _read(fmt: str, src: xr.Dataset, screen: bool) -> xr.Dataset:
    with tempfile.TemporaryDirectory() as d:
        path = write_granule(src, Path(d) / granule_filename(fmt, "2020-06-01"), fmt)
        return open_granule(path, screen=screen).compute()


@SETTINGS
@given(
    fmt=st.sampled_from(FORMATS),
    variable=st.sampled_from(["xgas", "xgas_uncertainty", "latitude", "longitude", "surface_pressure"]),
    filled=st.lists(st.booleans(), min_size=N, max_size=N),
    seed=st.integers(0, 1000),
)
def test_scalar_fills_read_back_as_nan_exactly_there(fmt: str, variable: str, filled: list[bool], seed: int) -> None:
    mask = np.array(filled)
    assume(not (variable == "xgas" and mask.all()))  # an all-fill granule is an error (the corpus tests it)
    src = granule_soundings(fmt, N, seed=seed, start="2020-06-01")
    src[variable] = src[variable].where(~mask)  # the writer stores each product's own fill convention
    good = np.asarray(src.quality_flag.values) == 0
    if variable == "xgas":
        kept = _read(fmt, src, screen=True)  # the product screen drops exactly the soundings without a value
        np.testing.assert_allclose(kept.xgas.values, src.xgas.values[good & ~mask], rtol=1e-6)
    everything = _read(fmt, src, screen=False)
    rows = np.arange(N)
    if fmt == "nies_gosat_l2":  # the product holds only soundings NIES screened as good
        rows = rows[good]
    if fmt == "tropomi_ch4" and variable == "xgas":  # a pixel without methane is not a sounding
        rows = rows[~mask]
    assert everything.sizes["sounding"] == rows.size
    got = np.isnan(everything[variable].values)
    np.testing.assert_array_equal(got, mask[rows], err_msg=f"{fmt} {variable}")
    if variable == "xgas":
        assert np.all(everything.quality_flag.values[got] == 1)


@SETTINGS
@given(
    fmt=st.sampled_from(FORMATS),
    cells=st.sets(st.tuples(st.integers(0, N - 1), st.integers(0, 11)), min_size=1, max_size=15),
    seed=st.integers(0, 1000),
)
def test_profile_fills_read_back_as_nan_at_their_level(fmt: str, cells: set[tuple[int, int]], seed: int) -> None:
    src = granule_soundings(fmt, N, seed=seed, start="2020-06-01", bad_fraction=0.0)
    mask = np.zeros(src.averaging_kernel.shape, dtype=bool)
    for i, j in cells:
        mask[i, j] = True  # level j counted from the surface, whatever the file's level order
    src["averaging_kernel"] = src["averaging_kernel"].where(~mask)
    got = _read(fmt, src, screen=False)
    np.testing.assert_array_equal(np.isnan(got.averaging_kernel.values), mask, err_msg=fmt)
    np.testing.assert_allclose(got.averaging_kernel.values[~mask], src.averaging_kernel.values[~mask], rtol=1e-6)


# ------------------------------------------------------------------------------ gridding
T0 = np.datetime64("2020-01-01", "ns")
EDGES = pd.date_range("2020-01-01", periods=5, freq="7D").values.astype("datetime64[ns]")
finite = st.floats(-1e3, 1e3, allow_nan=False)
soundings = st.lists(
    st.tuples(
        st.one_of(st.floats(-92, 92), st.sampled_from([-90.0, 90.0, 0.0]), st.just(float("nan"))),
        st.one_of(st.floats(-200, 400), st.sampled_from([-180.0, 180.0, 0.0]), st.just(float("nan"))),
        st.one_of(finite, st.just(float("nan"))),
        st.one_of(st.integers(-2, 30), st.just(None)),  # day offset; outside [0, 28) is outside the bins
        st.one_of(st.floats(0.1, 10.0), st.sampled_from([0.0, -1.0, float("nan")])),
        st.one_of(st.floats(0.0, 1.2), st.just(float("nan"))),
    ),
    max_size=80,
)


def _columns(pts: list[tuple]) -> dict[str, np.ndarray]:
    col = list(zip(*pts, strict=True)) if pts else [[]] * 6
    days = np.array([np.nan if d is None else d for d in col[3]], dtype=float)
    t = np.where(
        np.isnan(days),
        np.datetime64("NaT"),
        T0 + (np.nan_to_num(days) * 86400e9 + 3600e9).astype("timedelta64[ns]"),
    )
    return {
        "lat": np.asarray(col[0], float),
        "lon": np.asarray(col[1], float),
        "x": np.asarray(col[2], float),
        "time": t.astype("datetime64[ns]"),
        "unc": np.asarray(col[4], float),
        "ak": np.asarray(col[5], float),
    }


def _dataset(c: dict[str, np.ndarray], order: np.ndarray) -> xr.Dataset:
    n = order.size
    ak = np.repeat(c["ak"][order][:, None], 3, axis=1)  # a constant AK profile: its boundary-layer mean is ak
    return xr.Dataset(
        {
            "xgas": ("sounding", c["x"][order]),
            "xgas_uncertainty": ("sounding", c["unc"][order]),
            "averaging_kernel": (("sounding", "level"), ak),
            "pressure_weight": (("sounding", "level"), np.full((n, 3), 1 / 3)),
            "pressure": (("sounding", "level"), np.tile([1000.0, 900.0, 500.0], (n, 1))),
        },
        coords={
            "latitude": ("sounding", c["lat"][order]),
            "longitude": ("sounding", c["lon"][order]),
            "time": ("sounding", c["time"][order]),
        },
        attrs={"gas": "CH4"},
    )


@SETTINGS
@given(
    pts=soundings,
    res=st.sampled_from([10.0, 45.0, (7.5, 20.0)]),
    chunk=st.integers(1, 25),
    perm_seed=st.integers(0, 2**32 - 1),
)
def test_gridding_conserves_and_ignores_order_and_chunking(pts: list[tuple], res, chunk: int, perm_seed: int) -> None:
    c = _columns(pts)
    n = c["x"].size
    grid = GridSpec.from_resolution(res)
    ref = grid_arrays(
        c["lat"], c["lon"], c["x"], grid=grid, time=c["time"], time_edges=EDGES, uncertainty=c["unc"], ak_pbl=c["ak"]
    )
    # conservation: each sounding with a value, a position on the grid and a time in the bins counts once
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore")
        cell = grid.flat_index(c["lat"], c["lon"])
        t = c["time"]
        in_time = ~np.isnat(t) & (t >= EDGES[0]) & (t < EDGES[-1])
    counted = (cell >= 0) & np.isfinite(c["x"]) & in_time
    assert int(ref["n_soundings"].sum()) == int(counted.sum())
    occupied = ref["n_soundings"] > 0
    np.testing.assert_allclose(
        (ref["xgas_mean"][occupied] * ref["n_soundings"][occupied]).sum(),
        c["x"][counted].sum(),
        rtol=1e-9,
        atol=1e-9 * max(1.0, np.abs(c["x"]).sum()),
    )
    for name in GRIDDED_VARIABLES:
        if name != "n_soundings":
            assert np.isnan(ref[name][~occupied]).all(), name
    assert np.all(ref["xgas_std"][~np.isnan(ref["xgas_std"])] >= 0)
    # any order, any chunking: the same answer (to rounding)
    order = np.random.default_rng(perm_seed).permutation(n)
    lazy = grid_soundings(
        _dataset(c, order).chunk({"sounding": chunk}),
        grid=grid,
        time_bin="7D",
        time_range=(str(EDGES[0]), str(EDGES[-1])),
    )
    got = lazy.compute(scheduler="synchronous")
    np.testing.assert_array_equal(got.n_soundings.values, ref["n_soundings"])
    scale = max(1.0, float(np.nanmax(np.abs(c["x"]))) if n and np.isfinite(c["x"]).any() else 1.0)
    for name in GRIDDED_VARIABLES:
        if name != "n_soundings":
            np.testing.assert_allclose(got[name].values, ref[name], rtol=1e-12, atol=1e-12 * scale, err_msg=name)


@SETTINGS
@given(
    values=st.lists(st.tuples(finite, st.floats(0.1, 10.0)), min_size=1, max_size=40),
)
def test_weighted_mean_within_the_cell_values(values: list[tuple[float, float]]) -> None:
    x = np.array([v[0] for v in values])
    u = np.array([v[1] for v in values])
    out = grid_arrays(
        np.full(x.size, 1.0),
        np.full(x.size, 1.0),
        x,
        grid=GridSpec.from_resolution(90.0),
        uncertainty=u,
    )
    n = out["n_soundings"].reshape(-1)
    k = int(np.flatnonzero(n)[0])
    wm = out["xgas_weighted_mean"].reshape(-1)[k]
    span = 1e-12 * max(1.0, np.abs(x).max())
    assert n[k] == x.size and x.min() - span <= wm <= x.max() + span
    np.testing.assert_allclose(wm, np.sum(x / u**2) / np.sum(1 / u**2), rtol=1e-12, atol=span)


# ------------------------------------------------------------------------------ inversion
@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """Badly scaled, possibly rank-deficient linear problems with correlated prior errors."""
    m, n = draw(st.integers(1, 30)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    K = rng.normal(size=(m, n)) * 10.0 ** rng.uniform(-3, 3, size=n)[None, :]  # columns six decades apart
    rank = draw(st.integers(1, min(m, n)))
    if draw(st.booleans()):  # rank-deficient: K = B C with inner dimension rank
        K = rng.normal(size=(m, rank)) @ rng.normal(size=(rank, n))
    if draw(st.booleans()):  # sparse: zero out most entries (possibly whole columns)
        K = K * (rng.uniform(size=K.shape) < 0.3)
    sd = 10.0 ** rng.uniform(-1, 1, n)
    corr_length = draw(st.sampled_from([0.0, 0.5, 3.0]))
    d = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    R = np.exp(-d / corr_length) if corr_length else np.eye(n)
    Sa = sd[:, None] * R * sd[None, :] if corr_length else sd**2
    So = 10.0 ** rng.uniform(-3, 3, m)
    xa = rng.normal(size=n)
    y = K @ (xa + rng.normal(size=n) * sd) + rng.normal(size=m) * np.sqrt(So)
    return K, y, xa, Sa, So


def _check_invariants(res, Sa: np.ndarray) -> None:
    assert res.status == 0, res.status
    n = res.x_hat.size
    Sa_full = np.diag(Sa) if Sa.ndim == 1 else Sa
    S, A = res.S_hat, res.A
    assert np.all(np.isfinite(res.x_hat)) and np.all(np.isfinite(S)) and np.all(np.isfinite(A))
    # posterior variances never above prior variances
    assert np.all(np.diag(S) <= np.diag(Sa_full) * (1 + 1e-9)), (np.diag(S), np.diag(Sa_full))
    # symmetric positive definite
    np.testing.assert_allclose(S, S.T, rtol=0, atol=1e-12 * np.abs(S).max())
    ev_s = np.linalg.eigvalsh(0.5 * (S + S.T))
    assert ev_s.min() > 0, ev_s
    np.linalg.cholesky(S)
    # averaging-kernel eigenvalues real and in [0, 1]
    ev = np.linalg.eigvals(A)
    tol = 1e-7
    assert np.all(np.abs(ev.imag) <= tol) and ev.real.min() >= -tol and ev.real.max() <= 1 + tol, ev
    assert -tol <= res.dofs <= n + tol


@settings(max_examples=60, deadline=None)
@given(problem=problems(), form=st.sampled_from(["state", "observation", "chunked", "sparse"]))
def test_posterior_invariants(problem: tuple[np.ndarray, ...], form: str) -> None:
    K, y, xa, Sa, So = problem
    if form == "chunked":
        rows = max(1, K.shape[0] // 3)
        chunks = [(K[i : i + rows], y[i : i + rows], So[i : i + rows]) for i in range(0, K.shape[0], rows)]
        res = analytic_inversion_chunked(chunks, xa, Sa)
    elif form == "sparse":
        res = analytic_inversion(sp.csr_matrix(K), y, xa, Sa, So, form="state")
    else:
        res = analytic_inversion(K, y, xa, Sa, So, form=form)
    if not np.any(K):
        assert res.status == 2  # no information at all: the prior, flagged
        return
    _check_invariants(res, Sa)
