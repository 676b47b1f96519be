"""Analytic inversion core (Rodgers 2000), chunked/dask accumulation, lognormal mode."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from gosat_pipeline.errors import InversionError
from gosat_pipeline.inversion import (
    accumulate_normal_equations,
    analytic_inversion,
    analytic_inversion_chunked,
    lognormal_map,
)


def _case(m: int, n: int, seed: int, full: bool = True):
    rng = np.random.default_rng(seed)
    K = rng.normal(size=(m, n))
    xa = rng.normal(size=n)
    y = K @ (xa + rng.normal(size=n)) + rng.normal(size=m)
    B = rng.normal(size=(n, n))
    C = rng.normal(size=(m, m))
    Sa = B @ B.T / n + 0.5 * np.eye(n) if full else rng.uniform(0.2, 2.0, n)
    So = C @ C.T / m + np.eye(m) if full else rng.uniform(0.5, 2.0, m)
    return K, y, xa, Sa, So


def _textbook(K, y, xa, Sa, So):
    """Rodgers (2000) eqs. 4.25-4.27 with explicit inverses (reference only)."""
    Sa = np.diag(Sa) if Sa.ndim == 1 else Sa
    So = np.diag(So) if So.ndim == 1 else So
    Soi, Sai = np.linalg.inv(So), np.linalg.inv(Sa)
    S = np.linalg.inv(K.T @ Soi @ K + Sai)
    x = xa + S @ K.T @ Soi @ (y - K @ xa)
    A = np.eye(xa.size) - S @ Sai
    r = y - K @ x
    return x, S, A, r @ Soi @ r / y.size, (x - xa) @ Sai @ (x - xa) / xa.size


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize(("m", "n"), [(60, 8), (6, 15), (30, 30)])
@pytest.mark.parametrize("full", [True, False])
@pytest.mark.parametrize("form", ["state", "observation"])
def test_matches_textbook(m: int, n: int, full: bool, form: str) -> None:
    K, y, xa, Sa, So = _case(m, n, seed=m + n, full=full)
    x, S, A, chi2o, chi2a = _textbook(K, y, xa, Sa, So)
    r = analytic_inversion(K, y, xa, Sa, So, form=form)
    assert r.status == 0
    assert _rel(r.x_hat, x) < 1e-10
    assert _rel(r.S_hat, S) < 1e-10
    assert _rel(r.A, A) < 1e-10
    assert r.dofs == pytest.approx(np.trace(A), rel=1e-10)
    assert r.chi2_obs == pytest.approx(chi2o, rel=1e-10)
    assert r.chi2_state == pytest.approx(chi2a, rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 25), seed=st.integers(0, 10_000), full=st.booleans())
def test_state_space_equals_observation_space(m: int, n: int, seed: int, full: bool) -> None:
    K, y, xa, Sa, So = _case(m, n, seed, full)
    s = analytic_inversion(K, y, xa, Sa, So, form="state")
    o = analytic_inversion(K, y, xa, Sa, So, form="observation")
    assert _rel(s.x_hat, o.x_hat) < 1e-10
    assert _rel(s.S_hat, o.S_hat) < 1e-10
    assert _rel(s.A, o.A) < 1e-10
    # posterior properties
    Sa_d = np.diag(Sa) if Sa.ndim == 2 else Sa
    assert np.all(np.diag(s.S_hat) <= Sa_d * (1 + 1e-12))
    np.testing.assert_allclose(s.S_hat, s.S_hat.T, rtol=0, atol=1e-14 * np.abs(s.S_hat).max())
    assert np.linalg.eigvalsh(s.S_hat).min() > 0
    ev = np.linalg.eigvals(s.A).real
    assert ev.min() > -1e-10 and ev.max() < 1 + 1e-10


def test_dense_equals_sparse_and_full_equals_diagonal() -> None:
    K, y, xa, Sa, So = _case(80, 12, seed=4, full=False)
    K[np.abs(K) < 1.0] = 0.0
    dense = analytic_inversion(K, y, xa, Sa, So)
    for Kx in (sp.csr_matrix(K), sp.csc_matrix(K)):
        for form in ("state", "observation"):
            s = analytic_inversion(Kx, y, xa, Sa, So, form=form)
            assert _rel(s.x_hat, dense.x_hat) < 1e-10 and _rel(s.S_hat, dense.S_hat) < 1e-10
    full = analytic_inversion(K, y, xa, np.diag(Sa), np.diag(So))
    assert _rel(full.x_hat, dense.x_hat) < 1e-10
    assert _rel(full.S_hat, dense.S_hat) < 1e-10
    assert _rel(full.A, dense.A) < 1e-10


def test_chunked_equals_unchunked() -> None:
    K, y, xa, Sa, So = _case(203, 17, seed=5, full=False)
    ref = analytic_inversion(K, y, xa, Sa, So, form="state")
    chunks = [(K[i : i + 37], y[i : i + 37], So[i : i + 37]) for i in range(0, 203, 37)]
    for src in (chunks, iter(chunks), lambda: iter(chunks)):
        r = analytic_inversion_chunked(src, xa, Sa)
        assert _rel(r.x_hat, ref.x_hat) < 1e-10
        assert _rel(r.S_hat, ref.S_hat) < 1e-10
        assert _rel(r.A, ref.A) < 1e-10
        assert r.chi2_obs == pytest.approx(ref.chi2_obs, rel=1e-8)
    r = analytic_inversion_chunked(da.from_array(K, chunks=(50, 17)), xa, Sa, y=da.from_array(y, chunks=50), So=So)
    assert _rel(r.x_hat, ref.x_hat) < 1e-10 and _rel(r.S_hat, ref.S_hat) < 1e-10
    ne = accumulate_normal_equations(chunks)
    np.testing.assert_allclose(ne.G, (K / So[:, None]).T @ K, rtol=1e-12)
    assert ne.m == 203


def test_chunked_block_diagonal_so() -> None:
    K, y, xa, Sa, _ = _case(40, 6, seed=6, full=False)
    rng = np.random.default_rng(0)
    blocks = []
    for _ in range(4):
        B = rng.normal(size=(10, 10))
        blocks.append(B @ B.T / 10 + np.eye(10))
    So = np.zeros((40, 40))
    for i, b in enumerate(blocks):
        So[i * 10 : (i + 1) * 10, i * 10 : (i + 1) * 10] = b
    ref = analytic_inversion(K, y, xa, Sa, So)
    r = analytic_inversion_chunked(
        [(K[i * 10 : (i + 1) * 10], y[i * 10 : (i + 1) * 10], blocks[i]) for i in range(4)], xa, Sa
    )
    assert _rel(r.x_hat, ref.x_hat) < 1e-10 and _rel(r.S_hat, ref.S_hat) < 1e-10


def test_no_observations_and_degenerate_return_prior() -> None:
    n = 5
    xa, Sa = np.ones(n), np.full(n, 0.25)
    r = analytic_inversion(np.zeros((0, n)), np.zeros(0), xa, Sa, np.zeros(0))
    assert r.status == 1 and np.array_equal(r.x_hat, xa) and np.allclose(r.S_hat, np.diag(Sa)) and r.dofs == 0
    r = analytic_inversion(np.zeros((4, n)), np.ones(4), xa, Sa, np.ones(4))
    assert r.status == 2 and np.array_equal(r.x_hat, xa)
    r = analytic_inversion(np.ones((4, n)), np.array([1.0, np.nan, 1.0, 1.0]), xa, Sa, np.ones(4))
    assert r.status == 2
    r = analytic_inversion(np.ones((4, n)), np.ones(4), xa, Sa, -np.ones(4), form="state")
    assert r.status == 2
    r = analytic_inversion_chunked(iter([]), xa, Sa)
    assert r.status == 1
    with pytest.raises(InversionError, match="shape"):
        analytic_inversion(np.ones((4, 3)), np.ones(4), xa, Sa, np.ones(4))


def test_zero_column_keeps_prior_for_that_element() -> None:
    K, y, xa, Sa, So = _case(30, 5, seed=8, full=False)
    K[:, 2] = 0.0
    r = analytic_inversion(K, y, xa, Sa, So)
    assert r.status == 0
    assert r.x_hat[2] == pytest.approx(xa[2], abs=1e-12)
    assert r.S_hat[2, 2] == pytest.approx(Sa[2], rel=1e-12)
    assert abs(r.A[2, 2]) < 1e-12


def test_lognormal_converges_and_is_positive() -> None:
    rng = np.random.default_rng(11)
    m, n = 120, 6
    K = np.abs(rng.normal(size=(m, n))) * 3
    K = np.column_stack([K, np.ones(m)])  # plus one Gaussian background offset
    truth = np.array([0.2, 0.05, 1.5, 3.0, 0.8, 1.0, 4.0])
    So = np.full(m, 1.0)
    y = K @ truth + rng.normal(size=m)
    ne = accumulate_normal_equations([(K, y, So)])
    lm = np.array([True] * n + [False])
    s2 = np.log(1 + 0.5**2)
    za = np.where(lm, -s2 / 2, 0.0)
    Sa = np.where(lm, s2, 100.0)
    tol = 1e-8
    r = lognormal_map(ne, lm, za, Sa, gradient_tolerance=tol)
    assert r.status == 0 and r.gradient_norm < tol and r.iterations > 1
    x = np.where(lm, np.exp(r.x_hat), r.x_hat)
    assert np.all(x[lm] > 0)

    # the MAP: gradient of the cost vanishes (checked independently, finite differences)
    def cost(z):
        xx = np.where(lm, np.exp(z), z)
        return 0.5 * np.sum((y - K @ xx) ** 2 / So) + 0.5 * np.sum((z - za) ** 2 / Sa)

    eps = 1e-6
    g = np.array([(cost(r.x_hat + eps * e) - cost(r.x_hat - eps * e)) / (2 * eps) for e in np.eye(n + 1)])
    assert np.max(np.abs(g * np.sqrt(Sa))) < 1e-4
    assert np.linalg.eigvalsh(r.S_hat).min() > 0
    # a linear problem (no log elements) gives the analytic answer
    lin = lognormal_map(ne, np.zeros(n + 1, bool), np.zeros(n + 1), np.full(n + 1, 4.0), gradient_tolerance=1e-10)
    ref = analytic_inversion(K, y, np.zeros(n + 1), np.full(n + 1, 4.0), So)
    assert _rel(lin.x_hat, ref.x_hat) < 1e-8 and _rel(lin.S_hat, ref.S_hat) < 1e-10


def test_symmetric_update_equals_the_plain_sums_over_mixed_chunks() -> None:
    """dsyrk on [K_w | y_w] gives G, b and c as the plain products, whatever the chunk kind and memory order."""
    K, y, _, _, So = _case(130, 9, seed=12, full=False)
    G = (K / So[:, None]).T @ K
    b = K.T @ (y / So)
    c = float(y @ (y / So))
    rng = np.random.default_rng(1)
    B = rng.normal(size=(20, 20))
    block = B @ B.T / 20 + np.eye(20)  # a correlated block of S_o for rows 110..129
    L = np.linalg.cholesky(block)
    Kw, yw = np.linalg.solve(L, K[110:]), np.linalg.solve(L, y[110:])
    G_full = G - (K[110:] / So[110:, None]).T @ K[110:] + Kw.T @ Kw
    b_full = b - K[110:].T @ (y[110:] / So[110:]) + Kw.T @ yw
    c_full = c - float(y[110:] @ (y[110:] / So[110:])) + float(yw @ yw)
    chunks = [
        (np.asfortranarray(K[:40]), y[:40], So[:40]),  # Fortran-ordered rows
        (sp.csr_matrix(K[40:70]), y[40:70], So[40:70]),  # sparse between dense chunks
        (K[70:70], y[70:70], So[70:70]),  # an empty chunk
        (K[70:110], y[70:110], So[70:110]),
        (K[110:], y[110:], block),  # a full S_o block
    ]
    ne = accumulate_normal_equations(chunks)
    np.testing.assert_allclose(ne.G, G_full, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ne.G, ne.G.T)  # symmetric exactly: one triangle mirrored
    np.testing.assert_allclose(ne.b, b_full, rtol=1e-12, atol=1e-12)
    assert ne.c == pytest.approx(c_full, rel=1e-12) and ne.m == 130
    with pytest.raises(InversionError, match="expected"):
        accumulate_normal_equations([(K[:5], y[:5], So[:5]), (K[5:10, :4], y[5:10], So[5:10])])


def test_small_states_are_accumulated_in_large_blocks() -> None:
    from gosat_pipeline.inversion import _block_rows

    assert _block_rows(1000) == 1000  # one n x n work block
    assert _block_rows(4) * 4 >= 2**19  # not 4-row BLAS calls
    K, y, xa, Sa, So = _case(3000, 4, seed=3, full=False)
    ref = analytic_inversion(K, y, xa, Sa, So, form="observation")
    got = analytic_inversion(K, y, xa, Sa, So, form="state")
    assert _rel(got.x_hat, ref.x_hat) < 1e-10 and _rel(got.S_hat, ref.S_hat) < 1e-10
