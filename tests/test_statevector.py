"""The state vector's named view and the region weight matrix (one region-total calculation)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.statevector import REST_REGION, StateVector


def _sv() -> StateVector:
    recs = []
    for p in ("2020-01", "2020-02"):
        for r, pe in (("AAA", 2e9), ("BBB", 1e9), (REST_REGION, 5e8)):
            recs.append(
                {
                    "kind": "emission",
                    "region": r,
                    "region_name": f"name {r}",
                    "period": p,
                    "role": "rest" if r == REST_REGION else "requested",
                    "prior_emission": pe,
                }
            )
        recs.append({"kind": "background", "sector": "offset", "period": p, "units": "ppb"})
        recs.append({"kind": "inflow", "sector": "west", "period": p, "units": "ppb"})
    return StateVector.from_records(recs)


def test_records_round_trip_through_coordinates() -> None:
    sv = _sv()
    assert len(sv) == 10 and sv.emission.sum() == 6
    da = xr.DataArray(np.zeros(len(sv)), dims="state", coords=sv.to_coords())
    back = StateVector.from_coords(da)
    for name in sv.__dataclass_fields__:
        a, b = getattr(sv, name), getattr(back, name)
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(np.nan_to_num(a, nan=-1), np.nan_to_num(b, nan=-1))
        else:
            assert list(a) == list(b), name
    assert sv.regions("requested") == ["AAA", "BBB"] and sv.regions("rest") == [REST_REGION]
    assert sv.periods() == ["2020-01", "2020-02"]
    assert sv.names()["AAA"] == "name AAA"


def test_older_files_without_new_coordinates_read_with_defaults() -> None:
    da = xr.DataArray(
        np.zeros(2),
        dims="state",
        coords={"state_kind": ("state", ["emission", "background"]), "state_region": ("state", ["AAA", ""])},
    )
    sv = StateVector.from_coords(da)
    assert list(sv.role) == ["requested", ""]
    assert sv.domain_share_area.tolist() == [1.0, 1.0] and np.isnan(sv.area_km2).all()
    with pytest.raises(KeyError, match="state_kind"):
        StateVector.from_coords(xr.DataArray(np.zeros(2), dims="state"))
    with pytest.raises(KeyError, match="unknown state fields"):
        StateVector.from_records([{"kind": "emission", "colour": "red"}])


def test_weights_and_weight_matrix_agree() -> None:
    sv = _sv()
    w = sv.region_weights(["AAA", "BBB"], "2020-02")
    assert w.sum() == pytest.approx(3.0)  # Tg yr-1
    assert np.all(w[~sv.emission] == 0) and np.all(w[sv.period != "2020-02"] == 0)
    mean = sv.region_weights(["AAA"], ["2020-01", "2020-02"])
    assert mean.sum() == pytest.approx(2.0)  # the mean rate over the two periods
    W = sv.weight_matrix([(("AAA", "BBB"), "2020-02"), (("AAA",), "2020-01")])
    np.testing.assert_allclose(W.toarray()[0], w)
    np.testing.assert_allclose(W.toarray()[1], sv.region_weights(["AAA"], "2020-01"))
    # the (region, period) lookup behind it: emission elements only, ascending, members deduplicated
    e = sv.elements(["BBB", "AAA", "AAA"], "2020-02")
    assert e.tolist() == sorted(np.flatnonzero(w).tolist()) and np.all(sv.emission[e])
    assert sv.elements(["ZZZ"], "2020-02").size == 0 and sv.weight_matrix([]).shape == (0, len(sv))


def test_total_variances_is_the_diagonal_of_total_moments_on_any_layout() -> None:
    """Targets on a few elements take their block of S; a strided view or a Fortran-ordered S gives the same."""
    import scipy.sparse as sp

    from gosat_pipeline.statevector import total_moments, total_sensitivity, total_variances

    rng = np.random.default_rng(7)
    n = 40
    B = rng.normal(size=(n, n))
    S = B @ B.T + np.eye(n)
    big = np.zeros((n + 5, n + 5))
    big[:n, :n] = S
    view = big[:n, :n]  # the emission block of a posterior: not contiguous
    W = sp.random(30, n, density=0.08, random_state=3, format="csr")
    W = sp.vstack([W, sp.csr_matrix(np.ones((1, n)))]).tocsr()  # one target on every element
    x = rng.normal(size=n)
    tot, C = total_moments(W, x, S)
    np.testing.assert_allclose(tot, W @ x, rtol=1e-12)
    np.testing.assert_allclose(C, W.toarray() @ S @ W.toarray().T, rtol=1e-10, atol=1e-12)
    for layout in (S, view, np.asfortranarray(S)):
        np.testing.assert_allclose(total_variances(W, layout), np.diag(C), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(total_moments(W, x, layout)[1], C, rtol=1e-12, atol=1e-12)
    A = rng.normal(size=(n, n))  # not symmetric
    Wd = W.toarray()
    ww = (Wd**2).sum(axis=1)
    expected = np.where(ww > 0, np.einsum("ti,ij,tj->t", Wd, A, Wd) / np.where(ww > 0, ww, 1.0), 0.0)
    np.testing.assert_allclose(total_sensitivity(W, np.asfortranarray(A)), expected, rtol=1e-10, atol=1e-12)
