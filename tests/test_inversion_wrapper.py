"""invert(): the posterior schema, region totals with full covariance, maps, mass balance."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.inversion import invert, mass_balance, posterior_flux_maps, region_totals
from gosat_pipeline.testing.osse import make_osse_case
from gosat_pipeline.transport import build_jacobian


@pytest.fixture(scope="module")
def case() -> dict:
    return make_osse_case(seed=1, regions=4, n_months=2)


@pytest.fixture(scope="module")
def jac(case: dict) -> xr.DataArray:
    return build_jacobian(
        case["obs"],
        case["prior_flux"],
        case["masks"],
        winds=case["winds"],
        sigma_model=case["sigma_model"],
        period_split="MS",
    )


def test_posterior_schema_and_netcdf(jac: xr.DataArray, tmp_path) -> None:
    post = invert(jac, prior_error=0.5, correlation_length_km=500.0)
    n = jac.sizes["state"]
    assert post.sizes["state"] == post.sizes["state2"] == n
    assert post.sizes["total"] == post.sizes["total2"] == 5 * 2  # 4 regions and the rest of the domain
    assert list(post["total_role"].values).count("rest") == 2
    for v in (
        "x_prior",
        "x_posterior",
        "x_posterior_sigma",
        "S_prior",
        "S_posterior",
        "averaging_kernel",
        "dofs",
        "chi2_obs",
        "chi2_state",
        "n_observations",
        "status",
        "total_prior",
        "total_prior_sigma",
        "total_posterior",
        "total_posterior_sigma",
        "total_prior_covariance",
        "total_posterior_covariance",
        "total_error_reduction",
        "total_sensitivity",
        "total_n_observations",
        "total_chi2_state",
        "total_chi2_obs",
        "chi2_obs_normalized",
        "chi2_state_normalized",
        "chi2_obs_by_time",
    ):
        assert v in post, v
        assert "units" in post[v].attrs, v
    for c in (
        "state_kind",
        "state_region",
        "state_sector",
        "state_period",
        "state_prior_emission",
        "state_units",
        "total_region",
        "total_region_name",
        "total_period",
    ):
        assert c in post.coords, c
    assert post["S_prior"].dims == ("state", "state2")
    assert int(post["status"]) == 0 and post["status"].attrs["flag_meanings"] == "ok no_observations degenerate"
    assert post.attrs["mode"] == "linear" and post.attrs["prior_error"] == 0.5
    assert "transport_eddy_diffusivity_m2_per_s" in post.attrs
    assert 0 < float(post["dofs"]) < n
    assert np.all(post["x_posterior_sigma"] <= np.sqrt(np.diag(post["S_prior"])) + 1e-12)
    assert np.all(post["total_error_reduction"] >= 0) and np.all(post["total_error_reduction"] < 1)
    assert set(post["total_period"].values) == {"2020-01", "2020-02"}
    names = dict(zip(post["total_region"].values, post["total_region_name"].values, strict=True))
    assert names.pop("REST") == "Rest of domain"
    assert all(str(v).startswith("Synthetic region") for v in names.values())
    path = tmp_path / "posterior.nc"
    post.to_netcdf(path)
    back = xr.open_dataset(path)
    np.testing.assert_allclose(back["S_posterior"], post["S_posterior"])
    assert list(back["total_region"].values) == list(post["total_region"].values)


def test_totals_use_full_covariance(jac: xr.DataArray) -> None:
    post = invert(jac, prior_error=0.5, correlation_length_km=2000.0)
    t = 0
    kind = post["state_kind"].values
    sel = (
        (kind == "emission")
        & (post["state_region"].values == post["total_region"].values[t])
        & (post["state_period"].values == post["total_period"].values[t])
    )
    w = np.where(sel, post["state_prior_emission"].values / 1e9, 0.0)
    S = post["S_prior"].values
    full = np.sqrt(w @ S @ w)
    assert float(post["total_prior_sigma"][t]) == pytest.approx(full, rel=1e-12)
    # an aggregate over all regions of one period, by hand, with and without off-diagonal terms
    per = post["state_period"].values == "2020-01"
    wall = np.where((kind == "emission") & per, post["state_prior_emission"].values / 1e9, 0.0)
    diag_only = np.sqrt(np.sum(wall**2 * np.diag(S)))
    full_all = np.sqrt(wall @ S @ wall)
    assert full_all > 1.2 * diag_only  # positively correlated prior: the diagonal underestimates
    tot = post["total_prior_covariance"].values
    idx = np.flatnonzero(post["total_period"].values == "2020-01")
    assert np.sqrt(tot[np.ix_(idx, idx)].sum()) == pytest.approx(full_all, rel=1e-12)
    assert np.all(np.linalg.eigvalsh(post["total_posterior_covariance"].values) > -1e-12)


def test_region_without_signal_and_period_without_obs(case: dict) -> None:
    obs = case["obs"].copy(deep=True)
    obs["n_soundings"][1] = 0  # February empty
    for v in ("xgas_mean", "xgas_weighted_mean"):
        obs[v][1] = np.nan
    prior = case["prior_flux"].copy()
    prior = prior.where(case["masks"].sel(region="R04") == 0, 0.0)  # a region with no emission: no signal
    jac = build_jacobian(obs, prior, case["masks"], winds=case["winds"], period_split="MS")
    post = invert(jac)
    assert int(post["status"]) == 0
    feb = post["state_period"].values == "2020-02"
    np.testing.assert_allclose(post["x_posterior"].values[feb & (post["state_kind"].values == "emission")], 1.0)
    tfeb = (post["total_period"].values == "2020-02") & (post["total_region"].values != "R04")
    assert np.all(post["total_status"].values[tfeb] == 1)
    assert np.all(post["total_n_observations"].values[tfeb] == 0)
    np.testing.assert_allclose(post["total_error_reduction"].values[tfeb], 0.0, atol=1e-12)
    r4 = post["total_region"].values == "R04"
    assert np.all(post["total_status"].values[r4] == 2) and np.all(post["total_prior"].values[r4] == 0)


def test_no_observations_returns_prior(case: dict, tmp_path) -> None:
    obs = case["obs"].copy(deep=True)
    obs["n_soundings"][:] = 0
    for v in ("xgas_mean", "xgas_weighted_mean"):
        obs[v][:] = np.nan
    jac = build_jacobian(obs, case["prior_flux"], case["masks"], winds=case["winds"])
    assert jac.sizes["obs"] == 0
    for lognormal in (False, True):
        post = invert(jac, lognormal=lognormal)
        assert int(post["status"]) == 1
        np.testing.assert_allclose(post["x_posterior"], post["x_prior"])
        np.testing.assert_allclose(post["S_posterior"], post["S_prior"])
        assert float(post["dofs"]) == 0.0
    post.to_netcdf(tmp_path / "empty.nc")


def test_lognormal_mode(jac: xr.DataArray) -> None:
    tol = 1e-7
    post = invert(jac, lognormal=True, gradient_tolerance=tol)
    assert post.attrs["mode"] == "lognormal" and int(post["status"]) == 0
    assert post.attrs["gradient_norm"] < tol
    emis = post["state_kind"].values == "emission"
    assert np.all(post["x_posterior"].values[emis] > 0) and np.all(post["x_posterior_median"].values[emis] > 0)
    lin = invert(jac)
    # both modes see the same data: totals agree within their uncertainties
    d = np.abs(post["total_posterior"] - lin["total_posterior"]) / lin["total_posterior_sigma"]
    assert float(d.max()) < 1.5


def test_observations_dataset_calling_convention(case: dict, jac: xr.DataArray) -> None:
    from gosat_pipeline.transport import observation_vector

    ov = observation_vector(case["obs"], sigma_model=case["sigma_model"])
    a = invert(ov, jac)
    b = invert(jac)
    np.testing.assert_allclose(a["x_posterior"], b["x_posterior"], rtol=1e-12)
    c = invert(jac, obs_correlation_length_km=300.0)
    assert c.attrs["obs_correlation_length_km"] == 300.0
    assert np.all(c["x_posterior_sigma"] >= b["x_posterior_sigma"] - 1e-9)  # correlated errors carry less information


def test_posterior_flux_maps(case: dict, jac: xr.DataArray) -> None:
    post = invert(jac)
    maps = posterior_flux_maps(post, case["prior_flux"], case["masks"])
    assert maps["posterior_flux"].dims == ("period", "latitude", "longitude")
    assert all("units" in maps[v].attrs for v in maps.data_vars)
    area = np.asarray(case["grid"].cell_area())
    yr = 365.25 * 86400 / 1e9
    for k, per in enumerate(maps["period"].values):
        # every emission is in some element (the rest of the domain too): the map sums to the totals
        t = post["total_period"].values == per
        mapped = float((maps["posterior_flux"][k] * area).sum()) * yr
        assert mapped == pytest.approx(float(post["total_posterior"].values[t].sum()), rel=1e-9)
    rest = post["x_posterior"].values[
        (post["state_region"].values == "REST") & (post["state_period"].values == maps["period"].values[0])
    ]
    outside = (case["masks"].sum("region").values == 0) & (case["prior_flux"].values > 0)
    np.testing.assert_allclose(maps["scale_factor"].values[0][outside], rest[0])
    assert float(maps["averaging_kernel_sensitivity"].max()) <= 1.0


def test_posterior_flux_sigma_is_the_full_covariance_sum(case: dict, jac: xr.DataArray) -> None:
    """sigma_c^2 = sum_ef F_ec F_fc S_ef with every element's field dense (the maps take it sparse)."""
    from gosat_pipeline.attribution import attribute_emissions

    post = invert(jac)
    maps = posterior_flux_maps(post, case["prior_flux"], case["masks"])
    em = attribute_emissions(case["prior_flux"], case["masks"], rule="area")
    fields = em.transpose("region", "latitude", "longitude").values.reshape(em.sizes["region"], -1)
    S = post["S_posterior"].values
    x = post["x_posterior"].values
    kind, reg, per = (post[f"state_{c}"].values.astype(str) for c in ("kind", "region", "period"))
    for k, p in enumerate(maps["period"].values):
        ix = [int(np.flatnonzero((kind == "emission") & (reg == r) & (per == p))[0]) for r in em["region"].values]
        var = np.einsum("ec,ef,fc->c", fields, S[np.ix_(ix, ix)], fields).reshape(maps["posterior_flux"].shape[1:])
        np.testing.assert_allclose(maps["posterior_flux_sigma"].values[k], np.sqrt(var), rtol=1e-10, atol=1e-30)
        flux = (x[ix] @ fields).reshape(var.shape)
        np.testing.assert_allclose(maps["posterior_flux"].values[k], flux, rtol=1e-10, atol=1e-30)


def test_mass_balance_cross_check(case: dict) -> None:
    mb = mass_balance(case["obs"], case["masks"], u=case["winds"]["u"], v=case["winds"]["v"], gas="CH4")
    assert mb.attrs["units"] == "Tg yr-1" and mb.dims == ("region",)
    area = case["grid"].cell_area()
    truth = [(case["truth_flux"] * case["masks"].sel(region=r)).values * area for r in mb.region.values]
    truth = np.array([t.sum() for t in truth]) * 365.25 * 86400 / 1e9
    ratio = mb.values / truth
    assert np.all(np.isfinite(ratio)) and 0.2 < np.median(ratio) < 5  # order of magnitude cross-check
    assert np.corrcoef(mb.values, truth)[0, 1] > 0


def test_region_totals_function_is_reusable(jac: xr.DataArray) -> None:
    post = invert(jac)
    again = region_totals(post, K=jac.values)
    np.testing.assert_allclose(again["total_posterior"], post["total_posterior"])


def test_state_chi2_of_one_element_targets_is_the_general_formula() -> None:
    """The per-cell shortcut (one element per target) gives J_a / tr(S_a^-1 (S_a - S_hat)) like larger targets."""
    import scipy.sparse as sp

    from gosat_pipeline.inversion import _region_state_chi2

    rng = np.random.default_rng(4)
    n = 6
    B = rng.normal(size=(n, n))
    Sa = B @ B.T + n * np.eye(n)
    Sp = 0.4 * Sa - 0.05 * np.eye(n)
    xa, xp = np.ones(n), 1.0 + rng.normal(scale=0.5, size=n)
    groups = [[0], [1, 2], [3], [4, 5]]
    rows = np.concatenate([[t] * len(g) for t, g in enumerate(groups)])
    W = sp.csr_matrix((np.ones(rows.size), (rows, np.concatenate(groups))), shape=(len(groups), n))
    got = _region_state_chi2(W, xa, xp, Sa, Sp)
    for t, g in enumerate(groups):
        S, d = Sa[np.ix_(g, g)], (xp - xa)[g]
        ja = d @ np.linalg.solve(S, d)
        expected = np.trace(np.linalg.solve(S, S - Sp[np.ix_(g, g)]))
        assert got[t] == pytest.approx(ja / expected, rel=1e-12)


@pytest.mark.parametrize("n_period", [3, 8])  # a few of the state's elements (S's block), most of them (S in place)
def test_period_maps_both_paths_equal_dense(n_period: int) -> None:
    """_period_maps = the dense sums over the period's elements, whichever way S is taken."""
    import scipy.sparse as sp

    from gosat_pipeline.inversion import _period_maps

    rng = np.random.default_rng(11)
    n, ncell = 10, 40
    L = rng.standard_normal((n, n))
    S = L @ L.T + n * np.eye(n)
    x, a = rng.standard_normal(n), rng.uniform(0, 1, n)
    index = rng.permutation(n)[:n_period]  # the period's elements, not in state order
    fields = np.where(rng.uniform(size=(n_period, ncell)) < 0.4, rng.uniform(1e-10, 1e-9, (n_period, ncell)), 0.0)
    F = sp.csr_matrix(fields)
    post, var, akw, held = _period_maps(F, index, x, S, a)
    np.testing.assert_allclose(post, x[index] @ fields, rtol=1e-12)
    np.testing.assert_allclose(var, np.einsum("ec,ef,fc->c", fields, S[np.ix_(index, index)], fields), rtol=1e-12)
    np.testing.assert_allclose(akw, a[index] @ fields, rtol=1e-12)
    np.testing.assert_allclose(held, fields.sum(axis=0), rtol=1e-12)
