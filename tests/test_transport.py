"""Simple transport operator, column sensitivity, observation vector, Jacobian and footprints."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.special import k0

from gosat_pipeline.errors import SchemaError, WindError
from gosat_pipeline.grids import EARTH_RADIUS_M, GridSpec
from gosat_pipeline.testing.osse import make_osse_case
from gosat_pipeline.transport import (
    SimpleTransport,
    TransportSettings,
    build_jacobian,
    column_sensitivity,
    dry_air_column,
    observation_vector,
    period_label,
)

K_H, TAU = 5.0e4, 172800.0


def _point_source(u: float) -> tuple[GridSpec, SimpleTransport, np.ndarray, int, int]:
    grid = GridSpec.from_resolution(0.1, (-6.0, -6.0, 6.0, 6.0))  # 120 x 120 cells of ~11 km
    op = SimpleTransport(grid, u, 0.0, eddy_diffusivity=K_H, ventilation_time=TAU)
    i0, j0 = grid.shape[0] // 2, grid.shape[1] // 2
    flux = np.zeros(grid.shape)
    flux[i0, j0] = 1.0 / grid.cell_area()[i0, j0]  # 1 mol s-1
    return grid, op, op.solve(flux), i0, j0


def _green(x: np.ndarray, y: np.ndarray, u: float, kx: float, ky: float, n_air: float) -> np.ndarray:
    """2-D steady advection-diffusion-decay Green's function for a 1 mol s-1 point source.

    c = Q / (2 pi sqrt(Kx Ky) N) exp(u x / (2 Kx)) K0(sqrt(u^2/(4 Kx) + 1/tau) sqrt(x^2/Kx + y^2/Ky));
    with Kx = Ky = K this is Q/(2 pi K N) exp(u x/(2K)) K0(r sqrt(u^2/(4K^2) + 1/(K tau))).
    """
    rho = np.sqrt(x**2 / kx + y**2 / ky)
    return (
        np.exp(u * x / (2 * kx)) * k0(np.sqrt(u**2 / (4 * kx) + 1 / TAU) * rho) / (2 * np.pi * np.sqrt(kx * ky) * n_air)
    )


OFFSETS = [(3, 0), (6, 0), (10, 0), (-3, 0), (-6, 0), (0, 5), (0, 10), (5, 5), (-4, 7)]


def _xy(grid: GridSpec, i0: int, j0: int, di: int, dj: int) -> tuple[float, float]:
    x = EARTH_RADIUS_M * np.deg2rad(grid.lon[j0 + dj] - grid.lon[j0]) * np.cos(np.deg2rad(grid.lat[i0]))
    y = EARTH_RADIUS_M * np.deg2rad(grid.lat[i0 + di] - grid.lat[i0])
    return x, y


def test_point_source_matches_analytic_without_wind() -> None:
    """Tolerance 2 %: 5-point Laplacian error O((h kappa)^2) plus the cos(lat) metric over +-6 deg."""
    grid, op, c, i0, j0 = _point_source(0.0)
    for dj, di in OFFSETS:
        x, y = _xy(grid, i0, j0, di, dj)
        expected = _green(np.array(x), np.array(y), 0.0, K_H, K_H, op.n_air)
        assert c[i0 + di, j0 + dj] == pytest.approx(float(expected), rel=0.02), (di, dj)


def test_point_source_matches_analytic_with_wind() -> None:
    """u = 1 m/s: within 3 % of the analytic solution once the first-order upwind scheme's
    numerical diffusion u dx / 2 (the modified equation) is added to K in x; the plain
    physical-K solution is within 15 % (upwind tail) at 3-10 cells."""
    u = 1.0
    grid, op, c, i0, j0 = _point_source(u)
    dx = grid.cell_size_m()[0][i0, j0]
    for dj, di in OFFSETS:
        x, y = _xy(grid, i0, j0, di, dj)
        modified = _green(np.array(x), np.array(y), u, K_H + u * dx / 2, K_H, op.n_air)
        physical = _green(np.array(x), np.array(y), u, K_H, K_H, op.n_air)
        assert c[i0 + di, j0 + dj] == pytest.approx(float(modified), rel=0.03), (di, dj)
        assert c[i0 + di, j0 + dj] == pytest.approx(float(physical), rel=0.15), (di, dj)
    assert c[i0, j0 + 6] > c[i0, j0 - 6]  # downwind exceeds upwind


def test_mass_balance_exact_for_nondivergent_wind() -> None:
    grid = GridSpec.from_resolution(1.0, (100.0, 10.0, 125.0, 30.0))
    op = SimpleTransport(grid, 4.0, 0.0, eddy_diffusivity=K_H, ventilation_time=TAU)
    rng = np.random.default_rng(1)
    flux = rng.uniform(0, 1e-8, grid.shape)
    c = op.solve(flux)
    emission = float((flux * grid.cell_area()).sum())
    b = op.budget(c)
    assert b["convergence"] == pytest.approx(0.0, abs=1e-12 * emission)
    assert b["advective_outflow"] > 0 and b["diffusive_outflow"] > 0
    total = b["ventilation"] + b["advective_outflow"] + b["diffusive_outflow"] + b["convergence"]
    assert total == pytest.approx(emission, rel=1e-10)
    # With a meridional wind the budget still closes once the convergence term is counted.
    op2 = SimpleTransport(grid, -2.0, 3.0, eddy_diffusivity=K_H, ventilation_time=TAU)
    b2 = op2.budget(op2.solve(flux))
    assert b2["convergence"] != 0.0
    total2 = b2["ventilation"] + b2["advective_outflow"] + b2["diffusive_outflow"] + b2["convergence"]
    assert total2 == pytest.approx(emission, rel=1e-10)


def test_response_is_nonnegative_linear_and_batched() -> None:
    grid = GridSpec.from_resolution(1.0, (0.0, 0.0, 12.0, 10.0))
    u = np.linspace(-3, 3, grid.size).reshape(grid.shape)
    op = SimpleTransport(grid, u, 1.5)
    rng = np.random.default_rng(2)
    pats = rng.uniform(0, 1e-8, (4, *grid.shape))
    many = op.response(pats)
    assert many.shape == (4, *grid.shape)
    assert np.all(many >= 0)
    np.testing.assert_allclose(many[2], op.solve(pats[2]), rtol=1e-12)
    np.testing.assert_allclose(op.solve(pats[0] + 2 * pats[1]), many[0] + 2 * many[1], rtol=1e-10)
    # footprints are the rows of the inverse: fp . F = c at the receptor
    fp = op.footprints([5, 17])
    np.testing.assert_allclose((fp[1] * pats[3]).sum(), many[3].ravel()[17], rtol=1e-10)
    assert op.attrs["transport_eddy_diffusivity_m2_per_s"] == 5.0e4


def test_steady_lu_keeps_fill_in_below_the_default_ordering() -> None:
    """Fine grids (issue 19): the factorisation orders the symmetric stencil by minimum degree on
    A^T + A; same solution as a direct sparse solve, and fewer non-zeros than SuperLU's COLAMD."""
    from scipy.sparse.linalg import splu, spsolve

    grid = GridSpec.from_resolution(0.25, (95.0, -5.0, 115.0, 10.0))  # 80 x 60 cells
    u = np.linspace(-4, 6, grid.size).reshape(grid.shape)
    op = SimpleTransport(grid, u, -2.0)
    colamd = splu(op.matrix, permc_spec="COLAMD")
    ours = op._lu.L.nnz + op._lu.U.nnz
    assert ours < 0.8 * (colamd.L.nnz + colamd.U.nnz)
    flux = np.random.default_rng(0).uniform(0, 1e-8, grid.shape)
    expected = spsolve(op.matrix, flux.ravel() / op.n_air)
    np.testing.assert_allclose(op.solve(flux).ravel(), expected, rtol=1e-9)


def test_periodic_global_grid_and_winds_dataarray() -> None:
    grid = GridSpec.from_resolution(10.0)
    ds = xr.Dataset({"u": (("latitude", "longitude"), np.full(grid.shape, 5.0))}, coords=grid.coords())
    op = SimpleTransport(grid, ds["u"], 0.0)
    flux = np.zeros(grid.shape)
    flux[9, 0] = 1e-7
    c = op.solve(flux)
    assert c[9, -1] > 0  # wraps across the dateline (upwind neighbour of column 0 is the last column)
    b = op.budget(c)
    assert b["advective_outflow"] == 0.0


def test_invalid_inputs() -> None:
    grid = GridSpec.from_resolution(1.0, (0.0, 0.0, 5.0, 5.0))
    with pytest.raises(WindError, match="shape"):
        SimpleTransport(grid, np.zeros((2, 2)), 0.0)
    with pytest.raises(SchemaError, match="ventilation_time"):
        SimpleTransport(grid, 1.0, 0.0, ventilation_time=0.0)
    with pytest.raises(WindError, match="non-finite"):
        SimpleTransport(grid, np.full(grid.shape, np.nan), 0.0)
    assert dry_air_column(1013.25) == pytest.approx(3.567e5, rel=1e-3)


def test_period_labels() -> None:
    assert period_label("2020-01-01", "2021-01-01") == "2020"
    assert period_label("2020-03-01", "2020-04-01") == "2020-03"
    assert period_label("2020-03-05", "2020-03-06") == "2020-03-05"
    assert period_label("2020-01-01", "2020-04-01") == "2020-01-01/2020-04-01"


@pytest.fixture(scope="module")
def case() -> dict:
    return make_osse_case(seed=3, regions=4, n_months=2)


def test_column_sensitivity_and_observation_vector(case: dict) -> None:
    l3 = case["obs"].copy()
    l3["averaging_kernel_pbl"][0, 0, 0] = np.nan
    ak = column_sensitivity(l3)
    assert float(ak[0, 0, 0]) == 1.0 and ak.attrs["units"] == "1"
    ov = observation_vector(case["obs"], sigma_model=2.0)
    n_cells = int((case["obs"].n_soundings > 0).sum())
    assert ov.sizes["obs"] == n_cells
    expected = np.sqrt(ov["sigma_retrieval"] ** 2 / ov["n"] + 2.0**2)
    np.testing.assert_allclose(ov["sigma"], expected)
    assert ov["y"].attrs["units"] == "ppb"


def test_jacobian_structure(case: dict) -> None:
    jac = build_jacobian(case["obs"], case["prior_flux"], case["masks"], winds=case["winds"], period_split="MS")
    kind = jac["state_kind"].values
    assert list(jac.dims) == ["obs", "state"]
    # 4 regions and the rest of the domain, two months; a background plane (offset and two
    # gradients) per month; inflow across 4 edges per month
    assert (kind == "emission").sum() == 5 * 2 and (kind == "background").sum() == 3 * 2
    assert (kind == "inflow").sum() == 4 * 2
    assert set(jac["state_role"].values[kind == "emission"]) == {"requested", "rest"}
    em = jac.values[:, kind != "background"]
    assert np.all(em >= 0) and em.max() > 0
    # an observation only sees the emission period it belongs to
    for j in np.flatnonzero(kind == "emission"):
        per = str(jac["state_period"].values[j])
        outside = jac["obs_time"].values.astype("datetime64[M]").astype(str) != per
        assert np.all(jac.values[outside, j] == 0)
    offset = jac.values[:, (kind == "background") & (jac["state_sector"].values == "offset")]
    np.testing.assert_array_equal(offset.sum(1), 1.0)
    north = jac.values[:, (kind == "background") & (jac["state_sector"].values == "gradient_north")].sum(1)
    y_km = EARTH_RADIUS_M * np.deg2rad(jac["obs_latitude"].values - 20.0) / 1e6  # OSSE box 5-35 N: centre 20 N
    np.testing.assert_allclose(north, y_km, rtol=1e-12)
    area = GridSpec.from_coords(case["obs"].latitude, case["obs"].longitude).cell_area()
    r0 = (case["prior_flux"] * case["masks"].isel(region=0)).values
    assert float(jac["state_prior_emission"].values[0]) == pytest.approx((r0 * area).sum() * 365.25 * 86400, rel=1e-12)
    assert "transport_ventilation_time_s" in jac.attrs and jac.attrs["gas"] == "CH4"


def test_jacobian_reproduces_forward_model(case: dict) -> None:
    """K x_truth + background reproduces the noise-free synthetic observations."""
    jac = build_jacobian(case["obs"], case["prior_flux"], case["masks"], winds=case["winds"])
    truth = dict(zip(case["truth_scale"]["region"].values, case["truth_scale"].values, strict=True))
    kind = jac["state_kind"].values
    x = np.zeros(jac.sizes["state"])
    emis = np.flatnonzero(kind == "emission")
    # the unscaled flux between the regions is the rest-of-domain element, scale 1
    x[emis] = [truth.get(r, 1.0) for r in jac["state_region"].values[emis]]
    model = jac.values @ x  # background and inflow elements at 0
    bg = case["background"].values[jac["obs_time_index"].values]
    pred = model + bg
    resid = (jac["obs_value"].values - pred) / jac["obs_sigma"].values
    assert abs(resid.mean()) < 0.2 and 0.7 < resid.std() < 1.3


def test_footprint_operator_equals_simple_transport(case: dict, tmp_path) -> None:
    obs, prior, masks, winds = case["obs"], case["prior_flux"], case["masks"], case["winds"]
    # footprint models bring their own boundary treatment: compare without inflow elements
    jac = build_jacobian(obs, prior, masks, winds=winds, settings=TransportSettings(inflow=False))
    grid = GridSpec.from_coords(obs.latitude, obs.longitude)
    tp = case["transport"]
    op = SimpleTransport(
        grid, winds["u"], winds["v"], eddy_diffusivity=tp["eddy_diffusivity"], ventilation_time=tp["ventilation_time"]
    )
    # write in "ppb (kg m-2 s-1)-1": d(ppb)/d(kg m-2 s-1) = fp[m2 s mol-1] / 1e-9 / M
    fp = op.footprints(jac["obs_cell"].values) / 1e-9 / 16.0425e-3
    ds = xr.Dataset(
        {"footprint": (("obs", "latitude", "longitude"), fp, {"units": "ppb (kg m-2 s-1)-1"})},
        coords={
            "obs_latitude": ("obs", jac["obs_latitude"].values),
            "obs_longitude": ("obs", jac["obs_longitude"].values),
            "obs_time": ("obs", jac["obs_time"].values + np.timedelta64(3, "h")),
            **grid.coords(),
        },
    )
    path = tmp_path / "footprints.nc"
    ds.to_netcdf(path)
    jfp = build_jacobian(obs, prior, masks, footprints=path)
    assert jfp.shape == jac.shape
    np.testing.assert_allclose(jfp.values, jac.values, rtol=1e-9, atol=1e-12 * np.abs(jac.values).max())
    np.testing.assert_array_equal(jfp["state_region"].values, jac["state_region"].values)
    assert jfp.attrs["transport_operator"] == "external footprints"
    bad = ds.copy()
    bad["footprint"].attrs["units"] = "furlongs"
    with pytest.raises(SchemaError, match="units"):
        build_jacobian(obs, prior, masks, footprints=bad)


def test_jacobian_rejects_other_grid(case: dict) -> None:
    other = case["prior_flux"].isel(latitude=slice(0, 10))
    with pytest.raises(SchemaError, match="regrid"):
        build_jacobian(case["obs"], other, case["masks"], u=1.0, v=0.0)


# ---------------------------------------------------------------- time-resolved operator and periods
def _daily_case(n_days: int = 40) -> tuple[xr.Dataset, xr.DataArray, xr.DataArray, GridSpec]:
    import pandas as pd

    g = GridSpec.from_resolution(1.0, (100.0, 0.0, 116.0, 12.0))
    times = pd.date_range("2020-01-01", periods=n_days, freq="D")
    rng = np.random.default_rng(0)
    n = np.where(rng.uniform(size=(n_days, *g.shape)) < 0.3, 2, 0)
    dims = ("time", "latitude", "longitude")
    y = np.where(n > 0, 1850.0, np.nan)
    obs = xr.Dataset(
        {
            "n_soundings": (dims, n),
            "xgas_mean": (dims, y),
            "xgas_weighted_mean": (dims, y),
            "xgas_uncertainty_mean": (dims, np.where(n > 0, 12.0, np.nan)),
            "time_bounds": (("time", "nv"), np.column_stack([times.values, (times + pd.Timedelta(days=1)).values])),
        },
        coords={"time": times.values, **g.coords()},
        attrs={"gas": "CH4"},
    )
    flux = xr.DataArray(np.full(g.shape, 1e-9), dims=("latitude", "longitude"), coords=g.coords())
    masks = xr.DataArray(
        np.zeros((2, *g.shape)),
        dims=("region", "latitude", "longitude"),
        coords={"region": ["AAA", "BBB"], **g.coords()},
    )
    masks[0, 3:7, 3:7] = 1.0
    masks[1, 6:10, 9:14] = 1.0
    return obs, flux, masks, g


def _winds(g: GridSpec, u, v, start="2019-12-01", end="2020-03-01") -> xr.Dataset:
    import pandas as pd

    t = pd.date_range(start, end, freq="6h")
    shape = (t.size, *g.shape)
    uu = np.broadcast_to(np.asarray(u, dtype=float).reshape(-1, 1, 1) if np.ndim(u) else u, shape)
    vv = np.broadcast_to(np.asarray(v, dtype=float).reshape(-1, 1, 1) if np.ndim(v) else v, shape)
    return xr.Dataset(
        {
            "u": (("time", "latitude", "longitude"), np.array(uu, dtype=float)),
            "v": (("time", "latitude", "longitude"), np.array(vv, dtype=float)),
        },
        coords={"time": t, **g.coords()},
    )


def test_time_resolved_operator_converges_to_the_steady_one_under_constant_winds() -> None:
    obs, flux, masks, g = _daily_case()
    w = _winds(g, 5.0, 1.0)
    jt = build_jacobian(obs, flux, masks, winds=w, settings=TransportSettings(mode="time_resolved"))
    js = build_jacobian(obs, flux, masks, winds=w, settings=TransportSettings(mode="steady"))
    assert jt.attrs["transport_operator"].startswith("time-resolved") and js.shape == jt.shape
    late = jt["obs_time_index"].values > 20  # after the spin-up the response is steady
    for k in np.flatnonzero(jt["state_kind"].values == "emission"):
        np.testing.assert_allclose(jt.values[late, k], js.values[late, k], rtol=1e-9, atol=1e-12)
    inflow = jt.values[:, jt["state_kind"].values == "inflow"]
    assert np.all(inflow >= 0)
    edges = jt["state_sector"].values[jt["state_kind"].values == "inflow"]
    # the west edge is upwind of u = 5 m/s: its inflow reaches much further than the downwind east's
    assert inflow[:, list(edges).index("west")].max() > 5 * inflow[:, list(edges).index("east")].max()


def test_time_resolved_operator_follows_reversing_winds() -> None:
    """A source's footprint lies downwind of it on each day: east one fortnight, west the next."""
    import pandas as pd

    obs, flux, masks, g = _daily_case(28)
    t = pd.date_range("2019-12-01", "2020-03-01", freq="6h")
    u = np.where(t < pd.Timestamp("2020-01-15"), 6.0, -6.0)
    w = _winds(g, u, 0.0)
    jt = build_jacobian(obs, flux, masks, winds=w, settings=TransportSettings(mode="time_resolved"))
    k = int(np.flatnonzero(jt["state_region"].values == "AAA")[0])
    lon = jt["obs_longitude"].values
    day = jt["obs_time_index"].values
    east, west = (lon > 107.0) & (lon < 110.0), lon < 103.0  # AAA spans 103-107 E: 0-3 cells either side
    first, second = (day > 4) & (day < 13), day > 19
    assert jt.values[first & east, k].mean() > 3 * jt.values[first & west, k].mean()
    assert jt.values[second & west, k].mean() > 3 * jt.values[second & east, k].mean()
    # the steady operator from the fortnight-reversing wind's mean (zero) sees no such asymmetry
    js = build_jacobian(obs, flux, masks, winds=w, settings=TransportSettings(mode="steady"))
    ratio = js.values[first & east, k].mean() / js.values[first & west, k].mean()
    assert 0.5 < ratio < 2.0


def test_time_resolved_needs_winds_in_time_and_short_steps() -> None:
    obs, flux, masks, g = _daily_case(5)
    with pytest.raises(SchemaError, match="time axis"):
        build_jacobian(obs, flux, masks, u=1.0, v=0.0, settings=TransportSettings(mode="time_resolved"))
    with pytest.raises(SchemaError, match="background"):
        TransportSettings(background="bumpy")


@pytest.mark.parametrize(
    ("split", "labels"),
    [
        ("MS", ["2020-01", "2020-02", "2020-03", "2020-04", "2020-05", "2020-06"]),
        ("QS", ["2020-01-01/2020-04-01", "2020-04-01/2020-07-01"]),
        ("6MS", ["2020-01-01/2020-07-01"]),
        ("2QS", ["2020-01-01/2020-07-01"]),
        ("YS", ["2020-01-01/2020-07-01"]),
        ("4MS", ["2020-01-01/2020-05-01", "2020-05-01/2020-07-01"]),
    ],
)
def test_split_yields_exactly_the_periods_it_names(split: str, labels: list[str]) -> None:
    import pandas as pd

    from gosat_pipeline.transport import periods

    starts = pd.date_range("2020-01-01", periods=6, freq="MS")
    ends = starts + pd.DateOffset(months=1)
    index, got, bounds = periods(starts.values, ends.values, split)
    assert got == labels
    assert index.max() == len(labels) - 1 and bounds.shape == (len(labels), 2)


def test_split_that_cuts_a_time_bin_is_an_error() -> None:
    import pandas as pd

    from gosat_pipeline.transport import periods

    starts = pd.date_range("2020-01-01", periods=4, freq="QS")
    with pytest.raises(SchemaError, match="straddles"):
        periods(starts.values, (starts + pd.DateOffset(months=3)).values, "MS")


# ---------------------------------------------------------------- the explicit kernel: sparse sources, threads
def _kernel_case(ncol: int = 40):
    import scipy.sparse as sp

    from gosat_pipeline.transport.operator import _Stencil

    grid = GridSpec.from_resolution(1.0, (100.0, 0.0, 130.0, 20.0))
    op = _Stencil(grid, K_H, TAU)
    rng = np.random.default_rng(4)
    op.update(5.0 + 3.0 * rng.standard_normal(grid.shape), 2.0 * rng.standard_normal(grid.shape))
    state = rng.random((grid.size, ncol))
    owner = rng.integers(0, ncol, grid.size)  # every cell under one national-like forcing
    emission = sp.csr_matrix((rng.random(grid.size) * 1e-6, (np.arange(grid.size), owner)), shape=state.shape)
    cells, coef = op.edge_inflow_cells("west")
    inflow = sp.csr_matrix((coef * 0.5, (cells, np.full(cells.size, ncol - 1))), shape=state.shape)
    return op, state, emission, inflow


def test_explicit_kernel_sparse_sources_equal_dense_substeps():
    """The fused kernel on sparse sources = c <- c + h (s - M c) with the dense sources and M's CSR matrix."""
    from gosat_pipeline.transport.operator import _advance

    op, state, emission, inflow = _kernel_case()
    step = 21600.0
    nsub = max(1, int(np.ceil(step * op.diag_max / 0.95)))
    assert nsub > 1  # several sub-steps, so the alternating buffers are exercised
    h = step / nsub
    ref = state.copy()
    dense = (emission + inflow).toarray()
    for _ in range(nsub):
        ref += h * (dense - op.matrix @ ref)
    out = state.copy()
    _advance(out, [emission, inflow], op, step)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=0.0)
    # to the bit: the dense-source update c + h (s - Mc) with M c summed in the kernel's order
    c = [np.where(op.valid_arr[f], op.coef_arr[f], 0.0)[:, None] for f in range(4)]
    nb = op.nb_arr
    same = state.copy()
    for _ in range(nsub):
        acc = (
            op.diag[:, None] * same - c[0] * same[nb[0]] - c[1] * same[nb[1]] - c[2] * same[nb[2]] - c[3] * same[nb[3]]
        )
        same = same + h * (dense - acc)
    assert np.array_equal(out, same)
    # a column without sources decays: the sources reach only their own columns
    none = state.copy()
    _advance(none, [], op, step)
    assert np.all(none[:, 0] <= out[:, 0]) and np.any(none[:, 0] < out[:, 0])


def test_integrate_responses_sparse_sources_match_dense_reference():
    """Time-resolved responses with sparse sources (per-cell patterns, an inflow) = the dense-source sub-steps."""
    import pandas as pd

    from gosat_pipeline.transport import Forcing, integrate_responses
    from gosat_pipeline.transport.operator import _Stencil, _winds_at

    grid = GridSpec.from_resolution(1.0, (100.0, 0.0, 116.0, 12.0))
    rng = np.random.default_rng(5)
    times = pd.date_range("2020-01-01", periods=4 * 3 + 1, freq="6h").values
    u = (5.0 + 3.0 * rng.standard_normal((times.size, *grid.shape))).astype("float32")
    v = (2.0 * rng.standard_normal((times.size, *grid.shape))).astype("float32")
    t0, day = np.datetime64("2020-01-01", "ns"), np.timedelta64(1, "D")
    cells = rng.choice(grid.size, 12, replace=False)  # one forcing per cell: a per-cell state
    patterns = np.zeros((cells.size, grid.size))
    patterns[np.arange(cells.size), cells] = 1e-7
    forcings = [Forcing("flux", t0, t0 + 3 * day, pattern=p) for p in patterns]
    forcings.append(Forcing("inflow", t0, t0 + 3 * day, edge="west", scale=1e-6))
    obs = np.arange(0, grid.size, 5)
    K = integrate_responses(
        grid,
        times,
        u,
        v,
        forcings,
        np.full(obs.size, t0 + 2 * day),
        np.full(obs.size, t0 + 3 * day),
        obs,
        eddy_diffusivity=K_H,
        ventilation_time=TAU,
        time_step=21600.0,
    )
    # the reference: dense sources, the operator's CSR matrix, the same sub-steps and sampling
    op = _Stencil(grid, K_H, TAU)
    n_air = dry_air_column()
    state = np.zeros((grid.size, len(forcings)))
    acc, count = np.zeros((obs.size, len(forcings))), 0
    for step in range(12):
        t = t0 + step * np.timedelta64(6, "h")
        op.update(*_winds_at(times, u, v, t + np.timedelta64(3, "h"), (1.0, 0.0)))
        src = np.zeros_like(state)
        src[:, :-1] = patterns.T / n_air
        src[:, -1] = op.edge_inflow("west") * 1e-6
        nsub = max(1, int(np.ceil(21600.0 * op.diag_max / 0.95)))
        for _ in range(nsub):
            state += (21600.0 / nsub) * (src - op.matrix @ state)
        if 48 <= (step + 1) * 6 < 72:  # the step ends inside the observations' bin [day 2, day 3)
            acc += state[obs]
            count += 1
    ref = acc / count
    assert np.count_nonzero(K[:, -1]) > 0 and np.all(K >= 0)
    np.testing.assert_allclose(K, ref, rtol=1e-10, atol=1e-14 * np.abs(ref).max())


@pytest.mark.parametrize("ordered", [True, False])
def test_bin_sampling_adds_rows_in_place(ordered: bool) -> None:
    """_add_rows: sums[i, cols] += state[cells[i]], the columns in order or scattered."""
    from gosat_pipeline.transport.operator import _add_rows

    rng = np.random.default_rng(8)
    state = rng.random((50, 6))
    cells = rng.choice(50, 9, replace=False)
    cols = np.arange(6) if ordered else np.array([4, 0, 7, 2, 5, 1])
    sums = rng.random((9, 8 if not ordered else 6))
    ref = sums.copy()
    ref[:, cols] += state[cells]
    _add_rows(sums, state, cells.astype("int64"), cols.astype("int64"), ordered)
    assert np.array_equal(sums, ref)
