"""Analytic Bayesian inversion (Rodgers 2000), regional totals and a mass-balance cross-check.

Layers (STYLE.md b.3): a pure numpy/scipy core (:func:`analytic_inversion`,
:func:`accumulate_normal_equations`, :func:`analytic_inversion_chunked`,
:func:`solve_normal_equations`, :func:`lognormal_map`) and a thin xarray wrapper
(:func:`invert`) that reads the Jacobian of :func:`gosat_pipeline.transport.build_jacobian`,
builds the covariances of DESIGN.md 5.3 and returns the posterior schema with region
totals :math:`E = w^T x`, :math:`\\sigma^2 = w^T S w` (full covariance, DESIGN.md 5.5).

References
----------
Rodgers, C. D. (2000): Inverse Methods for Atmospheric Sounding, World Scientific,
chapters 2, 4 and 5.
Varon, D. J. et al. (2018): Quantifying methane point sources from fine-scale satellite
observations of atmospheric methane plumes, Atmos. Meas. Tech., 11, 5673-5686.
Buchwitz, M. et al. (2017): Satellite-derived methane hotspot emission estimates using a
fast data-driven method, Atmos. Chem. Phys., 17, 5751-5774.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import xarray as xr

from gosat_pipeline.blocksparse import jacobian_matrix, rows_with_nonfinite
from gosat_pipeline.errors import InversionError, SchemaError
from gosat_pipeline.grids import EARTH_RADIUS_M, GridSpec, same_grid
from gosat_pipeline.params import STANDARD_SURFACE_PRESSURE, InversionSettings, with_overrides
from gosat_pipeline.schema import (
    G0,
    GAS_UNIT_TO_MOLMOL,
    INVERSION_STATUS,
    MOLAR_MASS,
    SECONDS_PER_YEAR,
    gas_units,
    global_attrs,
    output_attrs,
)
from gosat_pipeline.statevector import StateVector, _c_ordered, total_moments, total_sensitivity

__all__ = [
    "DEFAULT_BACKGROUND_PRIOR_SIGMA",
    "STATUS_MEANINGS",
    "InversionResult",
    "NormalEquations",
    "accumulate_normal_equations",
    "analytic_inversion",
    "analytic_inversion_chunked",
    "invert",
    "lognormal_map",
    "mass_balance",
    "posterior_flux_maps",
    "region_totals",
    "solve_normal_equations",
]

logger = logging.getLogger(__name__)

#: Status flag values of every inversion result.
STATUS_MEANINGS: dict[int, str] = INVERSION_STATUS
#: Default 1-sigma prior of background offsets, canonical units (wide: estimated, not guessed).
DEFAULT_BACKGROUND_PRIOR_SIGMA: dict[str, float] = {"CO2": 5.0, "CH4": 30.0}


@dataclass(frozen=True)
class InversionResult:
    """Posterior of an analytic (or lognormal MAP) inversion.

    Attributes
    ----------
    x_hat : ndarray (n,)
        Posterior mean (MAP).
    S_hat : ndarray (n, n)
        Posterior error covariance.
    A : ndarray (n, n)
        Averaging kernel :math:`\\partial \\hat x / \\partial x`.
    dofs : float
        Degrees of freedom for signal, tr(A).
    chi2_obs : float
        :math:`J_o / m`, NaN without observations.
    chi2_state : float
        :math:`J_a / n`.
    status : int
        0 ok, 1 no observations, 2 degenerate
        (:data:`gosat_pipeline.schema.INVERSION_STATUS`, also :data:`STATUS_MEANINGS`).
    n_obs : int
    form : str
        "state", "observation", "normal-equations", "lognormal" or "prior".
    gradient_norm : float
        Achieved gradient norm (lognormal mode), else 0.
    iterations : int
    """

    x_hat: np.ndarray
    S_hat: np.ndarray
    A: np.ndarray
    dofs: float
    chi2_obs: float
    chi2_state: float
    status: int
    n_obs: int
    form: str
    gradient_norm: float = 0.0
    iterations: int = 0


@dataclass
class NormalEquations:
    """Accumulated :math:`G = K^T S_o^{-1} K`, :math:`b = K^T S_o^{-1} y`, :math:`c = y^T S_o^{-1} y`."""

    G: np.ndarray
    b: np.ndarray
    c: float
    m: int

    def __add__(self, other: NormalEquations) -> NormalEquations:
        return NormalEquations(self.G + other.G, self.b + other.b, self.c + other.c, self.m + other.m)


# ---------------------------------------------------------------------------- helpers
def _as_cov(S: Any, n: int, name: str) -> np.ndarray:
    S = np.asarray(S.toarray() if sp.issparse(S) else S, dtype="float64")
    if S.ndim == 0:
        S = np.full(n, float(S))
    if S.ndim == 1 and S.shape != (n,) or S.ndim == 2 and S.shape != (n, n) or S.ndim > 2:
        raise InversionError(f"{name} has shape {S.shape}; expected ({n},) variances or ({n}, {n})")
    return S


def _prior_result(xa: np.ndarray, Sa: np.ndarray, status: int, m: int) -> InversionResult:
    n = xa.size
    S = np.diag(Sa) if Sa.ndim == 1 else Sa.copy()
    return InversionResult(xa.copy(), S, np.zeros((n, n)), 0.0, math.nan, 0.0, status, m, "prior")


def _whiten(K: Any, So: np.ndarray, y: np.ndarray | None = None) -> tuple[Any, np.ndarray | None]:
    """:math:`L^{-1} K` and :math:`L^{-1} y` with :math:`S_o = L L^T` (Cholesky), no inverse."""
    if So.ndim == 1:
        if not np.all(So > 0):
            raise np.linalg.LinAlgError("observation error variances must be > 0")
        w = 1.0 / np.sqrt(So)
        Kw = sp.diags(w) @ K if sp.issparse(K) else K * w[:, None]
        return Kw, (None if y is None else y * w)
    L = sla.cholesky(So, lower=True)
    Kd = K.toarray() if sp.issparse(K) else K
    Kw = sla.solve_triangular(L, Kd, lower=True)
    yw = None if y is None else sla.solve_triangular(L, y, lower=True)
    return Kw, yw


def _quad_inv(S: np.ndarray, r: np.ndarray) -> float:
    """:math:`r^T S^{-1} r` by Cholesky (S full) or division (S diagonal)."""
    if S.ndim == 1:
        return float(np.sum(r * r / S))
    c = sla.cho_factor(S, lower=True)
    return float(r @ sla.cho_solve(c, r))


def _symmetrize(S: np.ndarray) -> np.ndarray:
    S += S.T
    S *= 0.5
    return S


# ---------------------------------------------------------------------------- normal equations
#: The dense accumulation whitens at least this many values of K per BLAS call (and at
#: least n rows): a small state still goes through dsyrk in large calls.
_MIN_BLOCK_VALUES = 1 << 19


def _block_rows(n: int, K: Any = None) -> int:
    """Rows per chunk of the state-space accumulation: n (one n x n work block), or more for small n.

    For a sparse K, as many rows as hold about 2**22 stored values (each chunk is densified
    over the columns it uses).
    """
    rows = max(n, 1, -(-_MIN_BLOCK_VALUES // max(n, 1)))
    if K is not None and sp.issparse(K) and K.shape[0]:
        per_row = max(1.0, K.nnz / K.shape[0])
        rows = max(rows, int(2**22 / per_row))
    return rows


class _NormalAccumulator:
    """Lower triangle of :math:`[K_w\\,|\\,y_w]^T [K_w\\,|\\,y_w]` by BLAS ``dsyrk`` over chunks.

    With the whitened chunk :math:`A = [K_w | y_w]` (rows x (n + 1)) one symmetric rank-k
    update :math:`C \\leftarrow C + A^T A` gives :math:`G = K^T S_o^{-1} K` (top-left),
    :math:`b = K^T S_o^{-1} y` (last row) and :math:`c = y^T S_o^{-1} y` (corner) in one
    BLAS call, half the flops of a general product and one pass over the chunk. ``C``
    is Fortran-ordered and only its lower triangle is updated; the whitened chunk is
    written into one reused C-ordered buffer whose transpose BLAS reads without a copy.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.C = np.zeros((n + 1, n + 1), order="F")
        self.m = 0
        self._work: np.ndarray | None = None

    def _buffer(self, rows: int) -> np.ndarray:
        if self._work is None or self._work.shape[0] < rows:
            self._work = np.empty((rows, self.n + 1))
        return self._work[:rows]

    def _syrk(self, A: np.ndarray) -> None:
        """C += A^T A (lower triangle) for a C-contiguous A (rows, n + 1)."""
        if A.shape[0]:
            self.C = sla.blas.dsyrk(1.0, A.T, beta=1.0, c=self.C, trans=0, lower=1, overwrite_c=1)

    def add(self, Kc: Any, yc: Any, Soc: Any) -> None:
        """Add one observation chunk; ``Soc`` variances (rows,) or a full (rows, rows) block."""
        yc = np.asarray(yc, dtype="float64").ravel()
        rows = yc.size
        if Kc.shape != (rows, self.n):
            raise InversionError(f"K chunk has shape {Kc.shape}; expected ({rows}, {self.n})")
        Soc = _as_cov(Soc, rows, "So chunk")
        if sp.issparse(Kc):
            self._add_sparse(Kc, yc, Soc)
        elif Soc.ndim == 1:
            _accumulate_dense(self, Kc, yc, Soc)
        else:  # a full block: whiten by its Cholesky factor, then the same update
            Kw, yw = _whiten(np.asarray(Kc, dtype="float64"), Soc, yc)
            A = self._buffer(rows)
            A[:, : self.n] = Kw
            A[:, self.n] = yw
            self._syrk(A)
        self.m += rows

    def _add_sparse(self, Kc: Any, yc: np.ndarray, Soc: np.ndarray) -> None:
        if Soc.ndim == 1:
            self._add_sparse_diagonal(sp.csr_matrix(Kc), yc, Soc)
            return
        Kw, yw = _whiten(Kc, Soc, yc)
        assert yw is not None  # y was given
        n = self.n
        if sp.issparse(Kw):
            self.C[:n, :n] += (Kw.T @ Kw).toarray()
            self.C[n, :n] += np.asarray(Kw.T @ yw).ravel()
        else:  # a full S_o block made the whitened chunk dense
            self.C[:n, :n] += Kw.T @ Kw
            self.C[n, :n] += Kw.T @ yw
        self.C[n, n] += float(yw @ yw)

    def _add_sparse_diagonal(self, Kc: sp.csr_matrix, yc: np.ndarray, Soc: np.ndarray) -> None:
        r"""A sparse chunk with diagonal S_o: one dsyrk over the columns the chunk uses.

        Rows of one time bin see the same few columns of a block-sparse Jacobian, so the
        chunk is densified over those columns only (:math:`u \ll n`) and its
        :math:`(u + 1)^2` lower triangle added to the matching rows and columns of C.
        """
        if not np.all(Soc > 0):
            raise np.linalg.LinAlgError("observation error variances must be > 0")
        w = 1.0 / np.sqrt(Soc)
        used = np.unique(Kc.indices)
        A = np.empty((yc.size, used.size + 1))
        A[:, : used.size] = Kc[:, used].toarray()
        A[:, : used.size] *= w[:, None]
        np.multiply(yc, w, out=A[:, used.size])
        local = sla.blas.dsyrk(1.0, A.T, trans=0, lower=1)
        idx = np.append(used, self.n)
        self.C[np.ix_(idx, idx)] += np.tril(local)

    def result(self) -> NormalEquations:
        """The accumulated sums, G symmetric (lower triangle mirrored)."""
        self._work = None
        n = self.n
        G = np.ascontiguousarray(self.C[:n, :n])
        _fill_upper_from_lower(G)
        b = np.array(self.C[n, :n])
        c = float(self.C[n, n])
        self.C = np.zeros((0, 0))
        return NormalEquations(G, b, c, self.m)


def accumulate_normal_equations(
    chunks: Iterable[tuple[Any, Any, Any]] | Any,
    y: Any = None,
    So: Any = None,
) -> NormalEquations:
    """Accumulate :math:`K^T S_o^{-1} K`, :math:`K^T S_o^{-1} y`, :math:`y^T S_o^{-1} y` over chunks.

    Parameters
    ----------
    chunks : iterable of (K_chunk, y_chunk, So_chunk), or a dask array K
        Observation chunks; ``So_chunk`` is a vector of variances (diagonal) or a full
        block (block-diagonal :math:`S_o`). A generator keeps memory at
        O(n^2 + chunk): chunks can be produced on the fly. With a dask array ``K``
        (chunked along observations), ``y`` and ``So`` (variances, numpy or dask) are
        required; each block is reduced to its (n, n) contribution on the workers and
        the contributions are summed in a tree (:func:`dask.array.reduction` style).
    y, So : array, optional
        Only with a dask ``K``.

    Returns
    -------
    NormalEquations

    Notes
    -----
    With :math:`S_o` block diagonal,

    .. math:: K^T S_o^{-1} K = \\sum_c K_c^T S_{o,c}^{-1} K_c

    (IMI accumulates the same sums file by file; DESIGN.md 5.4). Each dense chunk is
    one symmetric rank-k update (BLAS ``dsyrk``) of the lower triangle of
    :math:`[K_w | y_w]^T [K_w | y_w]`, with :math:`K_w = L^{-1} K_c`, :math:`y_w = L^{-1} y_c`
    and :math:`S_{o,c} = L L^T` (:math:`L` diagonal for variances): G, b and c in one
    BLAS call with half the flops of a general matrix product.
    """
    import dask.array as da  # a hard dependency

    if isinstance(chunks, da.Array):
        return _accumulate_dask(chunks, y, So)
    acc: _NormalAccumulator | None = None
    for Kc, yc, Soc in chunks:
        if not sp.issparse(Kc):
            Kc = np.asarray(Kc, dtype="float64")
        if acc is None:
            if Kc.ndim != 2:
                raise InversionError(f"K chunk must be 2-D (observations, state); got shape {Kc.shape}")
            acc = _NormalAccumulator(Kc.shape[1])
        acc.add(Kc, yc, Soc)
    if acc is None:
        raise InversionError("accumulate_normal_equations received no chunks")
    return acc.result()


def _accumulate_dense(acc: _NormalAccumulator, Kc: np.ndarray, yc: np.ndarray, Soc: np.ndarray) -> None:
    """Add a dense chunk with diagonal S_o (variances ``Soc``) to ``acc`` by one dsyrk.

    The whitened rows :math:`[K_c / \\sigma \\,|\\, y_c / \\sigma]` are written into the
    accumulator's work buffer (no other temporary of the chunk's size).
    """
    if not np.all(Soc > 0):
        raise np.linalg.LinAlgError("observation error variances must be > 0")
    w = 1.0 / np.sqrt(Soc)
    A = acc._buffer(yc.size)
    np.multiply(Kc, w[:, None], out=A[:, : acc.n])
    np.multiply(yc, w, out=A[:, acc.n])
    acc._syrk(A)


def _chunk_normal(Kc: Any, yc: Any, Soc: Any) -> NormalEquations:
    """Normal equations of one chunk (G symmetric)."""
    Kc = Kc if sp.issparse(Kc) else np.asarray(Kc, dtype="float64")
    acc = _NormalAccumulator(Kc.shape[1])
    acc.add(Kc, yc, Soc)
    return acc.result()


def _accumulate_dask(K: Any, y: Any, So: Any) -> NormalEquations:
    import dask
    import dask.array as da

    if y is None or So is None:
        raise InversionError("a dask K needs y= and So= (observation variances)")
    K = K.rechunk({1: -1})
    y = da.asarray(y).rechunk((K.chunks[0],))
    So = da.asarray(So)
    if So.ndim != 1:
        raise InversionError("with a dask K, So must be a vector of variances (diagonal)")
    So = So.rechunk((K.chunks[0],))
    parts = [
        dask.delayed(_chunk_normal)(kb, yb, sb)
        for kb, yb, sb in zip(K.to_delayed().ravel(), y.to_delayed().ravel(), So.to_delayed().ravel(), strict=True)
    ]
    while len(parts) > 1:  # pairwise tree: few (n, n) partial sums alive at once
        parts = [
            dask.delayed(_add)(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)
        ]
    (total,) = dask.compute(parts[0])
    return total


def _add(a: NormalEquations, b: NormalEquations) -> NormalEquations:
    return a + b


def solve_normal_equations(ne: NormalEquations, xa: Any, Sa: Any, *, overwrite_G: bool = False) -> InversionResult:
    """Posterior from accumulated normal equations (state-space form).

    Parameters
    ----------
    ne : NormalEquations
    xa : array (n,)
    Sa : array (n,) variances or (n, n)
    overwrite_G : bool
        Reuse ``ne.G`` as work space (saves one n x n array).

    Returns
    -------
    InversionResult

    Notes
    -----
    With :math:`G = K^T S_o^{-1} K` and the Cholesky factor :math:`S_a = L_a L_a^T`,

    .. math::
        \\hat S = (G + S_a^{-1})^{-1} = L_a (I + L_a^T G L_a)^{-1} L_a^T
        \\qquad \\text{(Rodgers 2000, eq. 4.26)}

    .. math::
        \\hat x = x_a + \\hat S \\, (K^T S_o^{-1} y - G x_a)
        \\qquad \\text{(eq. 4.25)}

    .. math:: A = \\hat S G = I - \\hat S S_a^{-1} \\qquad \\text{(eq. 4.27 / 3.10)}

    The cost :math:`J_o = (y - K\\hat x)^T S_o^{-1} (y - K\\hat x) = c - 2\\hat x^T b +
    \\hat x^T G \\hat x` comes from the accumulated sums, with :math:`G\\hat x = G x_a + A^T r`,
    so neither a second pass over K nor G itself is needed after the solve.
    Memory: G is transformed in place; with diagonal :math:`S_a` the solve holds four
    n x n arrays (G/factor, :math:`\\hat S`, A and one work array).
    """
    xa = np.asarray(xa, dtype="float64")
    n = xa.size
    Sa = _as_cov(Sa, n, "Sa")
    G, b = ne.G, ne.b
    if ne.m == 0:
        return _prior_result(xa, Sa, 1, 0)
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(b))):
        logger.warning("normal equations have non-finite values: returning the prior (status 2)")
        return _prior_result(xa, Sa, 2, ne.m)
    if not np.any(G):
        logger.warning("the observations are insensitive to every state element: returning the prior")
        return _prior_result(xa, Sa, 2, ne.m)
    Gxa = G @ xa
    r = b - Gxa
    try:
        S_hat, A = _posterior_from_G(G if overwrite_G else G.copy(), Sa)
    except (np.linalg.LinAlgError, sla.LinAlgError) as exc:
        logger.warning("posterior covariance failed (%s): returning the prior (status 2)", exc)
        return _prior_result(xa, Sa, 2, ne.m)
    x_hat = xa + S_hat @ r
    # G x_hat = G x_a + G S_hat r = G x_a + A^T r  (A = S_hat G, both symmetric): G not needed
    jo = ne.c - 2.0 * float(x_hat @ b) + float(x_hat @ (Gxa + A.T @ r))
    d = x_hat - xa
    ja = _quad_inv(Sa, d)
    return InversionResult(
        x_hat, S_hat, A, float(np.trace(A)), max(jo, 0.0) / ne.m, ja / n, 0, ne.m, "normal-equations"
    )


def _posterior_from_G(G: np.ndarray, Sa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S_hat, A) from G (overwritten) and Sa, without inverting Sa or So."""
    n = G.shape[0]
    if Sa.ndim == 1:
        if np.any(Sa <= 0):
            raise InversionError("prior variances must be > 0")
        s = np.sqrt(Sa)
        Gs = G  # M = I + s G s, in place
        Gs *= s[:, None]
        Gs *= s[None, :]
        Gs[np.diag_indices(n)] += 1.0
        c, low = sla.cho_factor(Gs, lower=True, overwrite_a=True, check_finite=False)
        inv, info = sla.lapack.dpotri(c, lower=1, overwrite_c=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"dpotri info={info}")
        _fill_upper_from_lower(inv)
        S_hat = inv
        S_hat *= s[:, None]
        S_hat *= s[None, :]
        A = S_hat / Sa[None, :]
        A *= -1.0
        A[np.diag_indices(n)] += 1.0
        return S_hat, A
    # Triangular BLAS throughout (about 6.7 n^3 flops instead of 10.7 n^3 with general products):
    # M = La^T G La (two dtrmm), M + I = R R^T, B = La R^-T (dtrsm), S_hat = B B^T (dsyrk), A = S_hat G.
    blas = sla.blas
    La = np.asfortranarray(sla.cholesky(Sa, lower=True))
    W = blas.dtrmm(1.0, La, np.asfortranarray(G), side=1, lower=1)  # G La
    M = blas.dtrmm(1.0, La, W, side=0, lower=1, trans_a=1, overwrite_b=1)  # La^T (G La)
    M[np.diag_indices(n)] += 1.0
    R = sla.cholesky(M, lower=True, overwrite_a=True, check_finite=False)
    B = blas.dtrsm(1.0, R, La, side=1, lower=1, trans_a=1)  # B R^T = La
    S_hat = blas.dsyrk(1.0, B)  # upper triangle of B B^T
    _fill_lower_from_upper(S_hat)
    A = S_hat @ G
    return np.ascontiguousarray(S_hat), A


def _fill_lower_from_upper(a: np.ndarray) -> None:
    """Mirror the upper triangle of ``a`` into its lower triangle (in place)."""
    _fill_upper_from_lower(a.T)


def _fill_upper_from_lower(a: np.ndarray, block: int = 256) -> None:
    """Mirror the lower triangle of ``a`` into its upper triangle, in row blocks (small temporaries)."""
    n = a.shape[0]
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        blk = a[i0:i1, i0:i1]
        blk[np.triu_indices(i1 - i0, 1)] = blk.T[np.triu_indices(i1 - i0, 1)]
        if i1 < n:
            a[i0:i1, i1:] = a[i1:, i0:i1].T


# ---------------------------------------------------------------------------- analytic core
def analytic_inversion(
    K: Any,
    y: Any,
    xa: Any,
    Sa: Any,
    So: Any,
    *,
    form: str = "auto",
    chunk_size: int | None = None,
) -> InversionResult:
    """Analytic Bayesian inversion with Gaussian errors (linear forward model y = K x).

    Parameters
    ----------
    K : array or scipy.sparse matrix (m, n)
        Jacobian.
    y : array (m,)
        Observations.
    xa : array (n,)
        Prior state.
    Sa : array (n,) variances or (n, n)
        Prior error covariance.
    So : array (m,) variances or (m, m)
        Observation error covariance.
    form : {"auto", "state", "observation"}
        State-space (n x n solves) or observation-space (m x m solves) form; "auto" takes
        the observation space when m < n.
    chunk_size : int, optional
        Rows per chunk of the state-space accumulation (default: n rows, so the extra
        memory is one n x n block, and at least 2**19 / n rows for small states).

    Returns
    -------
    InversionResult

    Notes
    -----
    State space (Rodgers 2000, eqs. 4.25-4.27; Cholesky solves, no inverse of
    :math:`S_o`):

    .. math:: \\hat S = (K^T S_o^{-1} K + S_a^{-1})^{-1}

    .. math:: \\hat x = x_a + \\hat S K^T S_o^{-1} (y - K x_a)

    .. math:: A = I - \\hat S S_a^{-1}, \\qquad \\mathrm{DOFS} = \\mathrm{tr}(A)

    Observation space (Rodgers 2000, eqs. 4.28-4.29):

    .. math:: \\hat x = x_a + S_a K^T (K S_a K^T + S_o)^{-1} (y - K x_a)

    .. math:: \\hat S = S_a - S_a K^T (K S_a K^T + S_o)^{-1} K S_a

    Diagnostics: :math:`\\chi^2_{obs} = J_o/m` with :math:`J_o = (y - K\\hat x)^T S_o^{-1}
    (y - K\\hat x)` and :math:`\\chi^2_{state} = J_a/n` with :math:`J_a = (\\hat x - x_a)^T
    S_a^{-1} (\\hat x - x_a)`. No observations returns the prior with status 1; a
    numerically degenerate problem returns the prior with status 2.
    """
    xa = np.asarray(xa, dtype="float64").ravel()
    n = xa.size
    y = np.asarray(y, dtype="float64").ravel()
    m = y.size
    Sa = _as_cov(Sa, n, "Sa")
    if m == 0:
        return _prior_result(xa, Sa, 1, 0)
    if not sp.issparse(K):
        K = np.asarray(K, dtype="float64")
    if K.shape != (m, n):
        raise InversionError(f"K has shape {K.shape}; expected (m, n) = ({m}, {n}) from y and xa")
    So = _as_cov(So, m, "So")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(So))):
        logger.warning("non-finite y or So: returning the prior (status 2)")
        return _prior_result(xa, Sa, 2, m)
    if form == "auto":
        form = "observation" if m < n else "state"
    if form == "observation":
        return _observation_space(K, y, xa, Sa, So)
    if form != "state":
        raise InversionError(f"form={form!r}; allowed: 'auto', 'state', 'observation'")
    try:
        ne = _normal_in_chunks(K, y, So, chunk_size or _block_rows(n, K))
    except (np.linalg.LinAlgError, sla.LinAlgError) as exc:
        logger.warning("So is not positive definite (%s): returning the prior (status 2)", exc)
        return _prior_result(xa, Sa, 2, m)
    res = solve_normal_equations(ne, xa, Sa, overwrite_G=True)
    return res if res.status else InversionResult(**{**res.__dict__, "form": "state"})


def _normal_in_chunks(K: Any, y: np.ndarray, So: np.ndarray, rows: int) -> NormalEquations:
    if So.ndim == 2:  # correlated: whiten the whole system once
        return _chunk_normal(K, y, So)
    m = y.size
    return accumulate_normal_equations((K[i : i + rows], y[i : i + rows], So[i : i + rows]) for i in range(0, m, rows))


def _observation_space(K: Any, y: np.ndarray, xa: np.ndarray, Sa: np.ndarray, So: np.ndarray) -> InversionResult:
    m, n = K.shape
    Kd = K.toarray() if sp.issparse(K) else K
    SaKt = (Kd * Sa[None, :]).T if Sa.ndim == 1 else Sa @ Kd.T  # (n, m)
    C = Kd @ SaKt
    C += np.diag(So) if So.ndim == 1 else So
    try:
        cf = sla.cho_factor(C, lower=True)
    except (np.linalg.LinAlgError, sla.LinAlgError) as exc:
        logger.warning("K Sa K^T + So not positive definite (%s): returning the prior", exc)
        return _prior_result(xa, Sa, 2, m)
    if not np.any(Kd):
        return _prior_result(xa, Sa, 2, m)
    gain_t = sla.cho_solve(cf, SaKt.T)  # (m, n) = C^-1 K Sa
    x_hat = xa + gain_t.T @ (y - Kd @ xa)
    Sa_full = np.diag(Sa) if Sa.ndim == 1 else Sa
    S_hat = Sa_full - SaKt @ gain_t
    _symmetrize(S_hat)
    A = gain_t.T @ Kd  # Sa K^T C^-1 K
    jo = _quad_inv(So, y - Kd @ x_hat)
    ja = _quad_inv(Sa, x_hat - xa)
    return InversionResult(x_hat, S_hat, A, float(np.trace(A)), jo / m, ja / n, 0, m, "observation")


def analytic_inversion_chunked(
    chunks: Iterable[tuple[Any, Any, Any]] | Callable[[], Iterable[tuple[Any, Any, Any]]] | Any,
    xa: Any,
    Sa: Any,
    *,
    y: Any = None,
    So: Any = None,
) -> InversionResult:
    """Analytic inversion streamed over observation chunks, memory O(n^2 + chunk).

    Parameters
    ----------
    chunks : iterable of (K_chunk, y_chunk, So_chunk), a callable returning one, or a dask array K
        See :func:`accumulate_normal_equations` (``y`` and ``So`` go with a dask K).
    xa, Sa
        Prior mean (n,) and covariance ((n,) variances or (n, n)).

    Returns
    -------
    InversionResult
        Equal to :func:`analytic_inversion` on the stacked chunks (S_o block diagonal);
        ``chi2_obs`` uses the accumulated form of :func:`solve_normal_equations`.
    """
    if callable(chunks) and not hasattr(chunks, "shape"):
        chunks = chunks()
    try:
        ne = accumulate_normal_equations(chunks, y, So)
    except InversionError:
        xa = np.asarray(xa, dtype="float64")
        return _prior_result(xa, _as_cov(Sa, xa.size, "Sa"), 1, 0)
    res = solve_normal_equations(ne, xa, Sa)
    return res if res.status else InversionResult(**{**res.__dict__, "form": "chunked"})


# ---------------------------------------------------------------------------- lognormal
def _damped_newton_step(
    H: np.ndarray, H_gn: np.ndarray, grad: np.ndarray, lam: float, accept: Any, tries: int = 30
) -> tuple[np.ndarray | None, float]:
    """Levenberg-Marquardt step ``-(H + lam diag H)^-1 grad`` (Gauss-Newton H where H is not
    positive definite), damping raised tenfold until ``accept(step)``; (None, lam) if never."""
    for _ in range(tries):
        for Hc in (H, H_gn):
            try:
                cf = sla.cho_factor(Hc + lam * np.diag(np.diag(Hc)), lower=True)
                break
            except (np.linalg.LinAlgError, sla.LinAlgError):
                continue
        step = -sla.cho_solve(cf, grad)
        if accept(step):
            return step, max(lam / 10.0, 1e-12)
        lam *= 10.0
    return None, lam


def lognormal_map(
    ne: NormalEquations,
    log_mask: Any,
    za: Any,
    Sa_z: Any,
    *,
    gradient_tolerance: float = InversionSettings.gradient_tolerance,
    max_iterations: int = 200,
) -> InversionResult:
    """MAP of a state whose ``log_mask`` elements are lognormal (x = exp(z)), others Gaussian.

    Parameters
    ----------
    ne : NormalEquations
        :math:`G = K^T S_o^{-1} K`, :math:`b = K^T S_o^{-1} y`, c, m of the linear model
        :math:`y = K x`.
    log_mask : bool array (n,)
        True where :math:`x = e^{z}` (non-negative scale factors).
    za, Sa_z : arrays
        Prior mean (n,) and covariance ((n,) or (n, n)) of z (ln x where log_mask).
    gradient_tolerance : float
        Stop when the prior-whitened gradient norm :math:`\\|L_a^T \\nabla_z J\\|_2` (with
        :math:`J` half the cost, :math:`S_a = L_a L_a^T`; dimensionless) is below it.

    Returns
    -------
    InversionResult
        In z space: ``x_hat`` = :math:`\\hat z`, ``S_hat`` = inverse Gauss-Newton Hessian
        at the MAP (Rodgers 2000, eq. 5.38), ``A`` = :math:`I - \\hat S S_a^{-1}`,
        ``gradient_norm`` the achieved whitened gradient norm; status 2 if the tolerance
        was not reached.

    Notes
    -----
    .. math:: J(z) = \\tfrac12 (y - K x(z))^T S_o^{-1} (y - K x(z)) + \\tfrac12 (z - z_a)^T S_a^{-1} (z - z_a)

    .. math:: \\nabla J = -D (b - G x) + S_a^{-1}(z - z_a), \\quad D = \\partial x/\\partial z = \\mathrm{diag}(x_{log}, 1)

    Newton steps with the exact Hessian :math:`D G D + S_a^{-1} - \\mathrm{diag}(x \\odot (b - Gx))_{log}`
    (Gauss-Newton where that is not positive definite), Levenberg-Marquardt damping
    and step acceptance on the cost (or, where the cost change is below its rounding
    error, on a smaller gradient). Every iteration costs O(n^3), independent of m.
    """
    za = np.asarray(za, dtype="float64")
    n = za.size
    lm = np.asarray(log_mask, dtype=bool)
    Sa_z = _as_cov(Sa_z, n, "Sa")
    if ne.m == 0:
        return _prior_result(za, Sa_z, 1, 0)
    Sa_full = np.diag(Sa_z) if Sa_z.ndim == 1 else Sa_z
    La = sla.cholesky(Sa_full, lower=True)
    Sa_inv = sla.cho_solve((La, True), np.eye(n))
    G, b = ne.G, ne.b

    def x_of(z: np.ndarray) -> np.ndarray:
        return np.where(lm, np.exp(np.where(lm, z, 0.0)), z)

    def cost(z: np.ndarray) -> float:
        x = x_of(z)
        d = z - za
        return 0.5 * (ne.c - 2 * x @ b + x @ (G @ x)) + 0.5 * d @ (Sa_inv @ d)

    def gradient(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        x = x_of(z)
        dx = np.where(lm, x, 1.0)
        r = b - G @ x
        grad = -dx * r + Sa_inv @ (z - za)
        return x, dx, r, grad, float(np.linalg.norm(La.T @ grad))

    # Near the MAP a Newton step changes the cost by less than its rounding error (the cost
    # is c - 2 x.b + x.Gx with c large), so a step is also accepted when the cost is equal
    # to rounding and the gradient shrinks.
    eps_cost = 64.0 * np.finfo(np.float64).eps
    z = za.copy()
    lam = 1e-3
    gnorm = math.inf
    it = 0
    for it in range(1, max_iterations + 1):  # noqa: B007
        x, dx, r, grad, gnorm = gradient(z)
        if gnorm < gradient_tolerance:
            break
        H_gn = dx[:, None] * G * dx[None, :] + Sa_inv
        H = H_gn - np.diag(np.where(lm, x * r, 0.0))
        f0 = cost(z)
        f_tol = eps_cost * (abs(ne.c) + abs(f0))

        def accept(
            step: np.ndarray, z: np.ndarray = z, f0: float = f0, f_tol: float = f_tol, gnorm: float = gnorm
        ) -> bool:
            f1 = cost(z + step)
            return f1 <= f0 or (f1 <= f0 + f_tol and gradient(z + step)[4] < gnorm)

        step, lam = _damped_newton_step(H, H_gn, grad, lam, accept)
        if step is None:
            break
        z = z + step
    x = x_of(z)
    dx = np.where(lm, x, 1.0)
    H_gn = dx[:, None] * G * dx[None, :] + Sa_inv
    S_hat = sla.cho_solve(sla.cho_factor(H_gn, lower=True), np.eye(n))
    _symmetrize(S_hat)
    A = np.eye(n) - S_hat @ Sa_inv
    jo = max(ne.c - 2 * x @ b + x @ (G @ x), 0.0)
    d = z - za
    status = 0 if gnorm < gradient_tolerance else 2
    if status:
        logger.warning("lognormal MAP stopped at gradient norm %.3g > tolerance %.3g", gnorm, gradient_tolerance)
    return InversionResult(
        z, S_hat, A, float(np.trace(A)), jo / ne.m, float(d @ Sa_inv @ d) / n, status, ne.m, "lognormal", gnorm, it
    )


# ---------------------------------------------------------------------------- xarray wrapper
def _haversine_km(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    p = np.deg2rad(lat)
    q = np.deg2rad(lon)
    dp = p[:, None] - p[None, :]
    dq = q[:, None] - q[None, :]
    h = np.sin(dp / 2) ** 2 + np.cos(p)[:, None] * np.cos(p)[None, :] * np.sin(dq / 2) ** 2
    return 2.0 * EARTH_RADIUS_M / 1000.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _prior_covariance(
    jac: xr.DataArray,
    prior_error: float,
    corr_km: float | None,
    bg_sigma: float,
    gradient_sigma: float,
    inflow_sigma: float,
) -> np.ndarray:
    """S_a (n, n): relative prior error on scale factors (optionally correlated); wide background
    offsets, their gradients (per 1000 km) and the boundary inflow."""
    sv = StateVector.from_coords(jac)
    emis = sv.emission
    sig = np.where(emis, prior_error, bg_sigma)
    sig = np.where((sv.kind == "background") & (sv.sector != "offset"), gradient_sigma, sig)
    sig = np.where(sv.kind == "inflow", inflow_sigma, sig)
    S = np.diag(sig**2)
    if corr_km and emis.sum() > 1:
        idx = np.flatnonzero(emis)
        rho = np.exp(-_haversine_km(np.nan_to_num(sv.latitude[idx]), np.nan_to_num(sv.longitude[idx])) / corr_km)
        same = (sv.period[idx][:, None] == sv.period[idx][None, :]) & (
            sv.sector[idx][:, None] == sv.sector[idx][None, :]
        )
        S[np.ix_(idx, idx)] = prior_error**2 * np.where(same, rho, 0.0)
    return S


def _obs_covariance(jac: xr.DataArray, sigma: np.ndarray, corr_km: float | None) -> np.ndarray:
    """S_o: diagonal variances, or full with exponentially correlated model error within a time bin."""
    var = sigma**2
    if not corr_km or var.size < 2 or "obs_sigma_model" not in jac.coords:
        return var
    sm = jac["obs_sigma_model"].values.astype("float64")
    d = _haversine_km(jac["obs_latitude"].values, jac["obs_longitude"].values)
    tb = jac["obs_time_index"].values if "obs_time_index" in jac.coords else np.zeros(var.size)
    rho = np.exp(-d / corr_km) * (tb[:, None] == tb[None, :])
    So = sm[:, None] * sm[None, :] * rho
    So[np.diag_indices(var.size)] = var
    return So


def _resolve_inputs(observations: Any, jacobian: Any) -> tuple[xr.DataArray, np.ndarray, np.ndarray]:
    """(jacobian, y, sigma) from ``invert``'s two calling conventions."""
    if jacobian is None:
        jacobian = observations
        observations = None
    if not isinstance(jacobian, xr.DataArray) or jacobian.dims != ("obs", "state"):
        raise SchemaError("jacobian must be an xarray.DataArray with dims ('obs', 'state') from build_jacobian")
    if observations is None:
        missing = [c for c in ("obs_value", "obs_sigma") if c not in jacobian.coords]
        if missing:
            raise SchemaError(f"jacobian lacks observation coords {missing}; pass observations= (observation_vector)")
        return jacobian, jacobian["obs_value"].values - _reference(jacobian), jacobian["obs_sigma"].values
    if observations.sizes.get("obs", -1) != jacobian.sizes["obs"]:
        raise SchemaError(
            f"observations have {observations.sizes.get('obs')} obs, the jacobian {jacobian.sizes['obs']}"
        )
    return jacobian, observations["y"].values - _reference(jacobian), observations["sigma"].values


def _reference(jac: xr.DataArray) -> np.ndarray:
    """Per-observation background reference (0 when the Jacobian carries none)."""
    if "obs_background_reference" in jac.coords:
        return jac["obs_background_reference"].values.astype("float64")
    return np.zeros(jac.sizes["obs"])


def invert(
    observations: xr.Dataset | xr.DataArray,
    jacobian: xr.DataArray | None = None,
    *,
    settings: InversionSettings | None = None,
    region_names: dict[str, str] | None = None,
    **overrides: Any,
) -> xr.Dataset:
    """Bayesian inversion of the super-observations for the state of :func:`build_jacobian`.

    Parameters
    ----------
    observations : xarray.Dataset or DataArray
        The output of :func:`gosat_pipeline.transport.observation_vector` (``y``,
        ``sigma`` on ``obs``), or directly the Jacobian when it carries ``obs_value`` and
        ``obs_sigma`` (then ``jacobian`` is omitted: ``invert(jac)``).
    jacobian : xarray.DataArray (obs, state), optional
    settings : InversionSettings, optional
        Prior errors, lognormal mode and diagnostics settings (defaults:
        :class:`gosat_pipeline.params.InversionSettings`, which documents each one).
    region_names : dict, optional
        ISO-3 -> name for ``total_region_name`` (default: the jacobian's names).
    **overrides
        Fields of :class:`~gosat_pipeline.params.InversionSettings` that replace those of
        ``settings`` (``invert(jac, prior_error=0.3, lognormal=True)``).

    Returns
    -------
    xarray.Dataset
        The posterior schema: dims ``state``, ``state2``, ``total``, ``total2``;
        ``x_prior``, ``x_posterior``, ``x_posterior_sigma`` (state; emission elements are
        scale factors, units "1", background elements offsets in gas units: see
        ``state_units``), ``S_prior``, ``S_posterior``, ``averaging_kernel``
        (state, state2), scalars ``dofs``, ``chi2_obs``, ``chi2_state``,
        ``n_observations``, ``status``; region totals (Tg yr-1) per (region, period) on
        ``total`` (see :func:`region_totals`). In lognormal mode ``x_posterior`` is the
        posterior mean :math:`e^{\\hat z + \\sigma_z^2/2}`, ``x_posterior_median`` is
        :math:`e^{\\hat z}`, and ``S_posterior`` the exact lognormal covariance
        :math:`\\bar x_i \\bar x_j (e^{\\hat S_{z,ij}} - 1)`; the averaging kernel is that
        of z.
    """
    st = with_overrides(settings or InversionSettings(), overrides, "inversion")
    prior_error, correlation_length_km, lognormal = st.prior_error, st.correlation_length_km, st.lognormal
    background_prior_sigma, background_gradient_sigma = st.background_prior_sigma, st.background_gradient_sigma
    inflow_prior_sigma, gradient_tolerance = st.inflow_prior_sigma, st.gradient_tolerance
    obs_correlation_length_km, sensitivity_fraction = st.obs_correlation_length_km, st.sensitivity_fraction
    jac, y, sigma = _resolve_inputs(observations, jacobian)
    gas = str(jac.attrs.get("gas", "CH4")).upper()
    units = gas_units(gas)
    if not prior_error > 0:
        raise InversionError(f"prior_error must be > 0; got {prior_error}")
    bg_sigma = DEFAULT_BACKGROUND_PRIOR_SIGMA[gas] if background_prior_sigma is None else float(background_prior_sigma)
    if obs_correlation_length_km is None:
        obs_correlation_length_km = float(jac.attrs.get("obs_correlation_length_km", 0.0)) or None
    K = jacobian_matrix(jac)  # the CSR matrix of a block-sparse Jacobian; no copy of a dense float64 one
    ok = np.isfinite(y) & np.isfinite(sigma) & (sigma > 0) & ~rows_with_nonfinite(K)
    if not ok.all():
        logger.warning("dropping %d observations with non-finite values", int((~ok).sum()))
        jac, K, y, sigma = jac.isel(obs=np.flatnonzero(ok)), K[ok], y[ok], sigma[ok]
    n = K.shape[1]
    emis = StateVector.from_coords(jac).emission
    xa = np.where(emis, 1.0, 0.0)
    gr_sigma = bg_sigma / 3.0 if background_gradient_sigma is None else float(background_gradient_sigma)
    in_sigma = bg_sigma / 3.0 if inflow_prior_sigma is None else float(inflow_prior_sigma)
    Sa = _prior_covariance(jac, prior_error, correlation_length_km, bg_sigma, gr_sigma, in_sigma)
    So = _obs_covariance(jac, sigma, obs_correlation_length_km)
    extra: dict[str, Any] = {}
    if n == 0:
        raise InversionError("the state vector is empty: no regions and no background elements")
    if lognormal:
        res, S_x, x_post, extra = _invert_lognormal(K, y, So, Sa, emis, prior_error, gradient_tolerance)
    else:
        res = analytic_inversion(K, y, xa, Sa, So)
        S_x, x_post = res.S_hat, res.x_hat
    if res.status:
        logger.warning("inversion status %d (%s): posterior = prior", res.status, STATUS_MEANINGS[res.status])
    ds = _posterior_dataset(jac, xa, Sa, x_post, S_x, res, units, extra)
    names = region_names or {}
    diag, rw = consistency_diagnostics(jac, K, y, So, xa, Sa, x_post, res.dofs)
    ds = xr.merge(
        [
            ds,
            diag,
            region_totals(ds, K=K, sensitivity_fraction=sensitivity_fraction, region_names=names, whitened_residual=rw),
        ],
        combine_attrs="override",
    )
    transport_attrs = {k: v for k, v in jac.attrs.items() if k.startswith(("transport", "grid", "footprints"))}
    ds.attrs = global_attrs(
        f"{gas} posterior emissions (analytic Bayesian inversion)",
        source="gosat_pipeline.inversion.invert",
        gas=gas,
        mode="lognormal" if lognormal else "linear",
        solver_form=res.form,
        prior_error=float(prior_error),
        prior_correlation_length_km=float(correlation_length_km or 0.0),
        obs_correlation_length_km=float(obs_correlation_length_km or 0.0),
        background_prior_sigma=bg_sigma,
        background_gradient_sigma=gr_sigma,
        inflow_prior_sigma=in_sigma,
        gradient_tolerance=float(gradient_tolerance),
        gradient_norm=float(res.gradient_norm),
        iterations=int(res.iterations),
        sensitivity_fraction=float(sensitivity_fraction),
        sigma_model=float(jac.attrs.get("sigma_model", math.nan)),
        references="Rodgers (2000) Inverse Methods for Atmospheric Sounding, eqs. 4.25-4.29",
        **transport_attrs,
    )
    logger.info(
        "inversion: %d obs, %d state elements, DOFS %.2f, chi2_obs %.2f, status %d",
        res.n_obs,
        n,
        res.dofs,
        res.chi2_obs,
        res.status,
    )
    return ds


def _invert_lognormal(
    K: np.ndarray, y: np.ndarray, So: np.ndarray, Sa: np.ndarray, emis: np.ndarray, prior_error: float, tol: float
) -> tuple[InversionResult, np.ndarray, np.ndarray, dict[str, Any]]:
    """Lognormal inversion: returns (z-result, S_x, x mean, extra variables)."""
    n = K.shape[1]
    s2 = math.log1p(prior_error**2)
    za = np.where(emis, -0.5 * s2, 0.0)  # lognormal with mean 1 and relative sd prior_error
    # z-space covariance: scale the emission block to the log variance, keep correlations
    scale = np.where(emis, math.sqrt(s2) / prior_error, 1.0)
    Sa_z = Sa * scale[:, None] * scale[None, :]
    m = y.size
    if m == 0:
        ne = NormalEquations(np.zeros((n, n)), np.zeros(n), 0.0, 0)
    else:
        ne = _normal_in_chunks(K, y, So, _block_rows(n, K))
    res = lognormal_map(ne, emis, za, Sa_z, gradient_tolerance=tol)
    z, Sz = res.x_hat, res.S_hat
    mean = np.where(emis, np.exp(np.where(emis, z + 0.5 * np.diag(Sz), 0.0)), z)
    jac_d = np.where(emis, mean, 1.0)
    # exact lognormal covariance for the log block, linear elsewhere (cross terms by delta method)
    S_x = jac_d[:, None] * Sz * jac_d[None, :]
    both = emis[:, None] & emis[None, :]
    S_x = np.where(both, mean[:, None] * mean[None, :] * np.expm1(np.where(both, Sz, 0.0)), S_x)
    median = np.where(emis, np.exp(np.where(emis, z, 0.0)), z)
    return res, S_x, mean, {"x_posterior_median": median}


def _posterior_dataset(
    jac: xr.DataArray,
    xa: np.ndarray,
    Sa: np.ndarray,
    x_post: np.ndarray,
    S_x: np.ndarray,
    res: InversionResult,
    units: str,
    extra: dict[str, Any],
) -> xr.Dataset:
    scoords = {c: jac[c].copy() for c in jac.coords if jac[c].dims == ("state",)}
    for c, std in (("state_latitude", "latitude"), ("state_longitude", "longitude")):
        if c in scoords:  # centroids of the elements: CF auxiliary latitude/longitude
            scoords[c].attrs = {**scoords[c].attrs, "standard_name": std}
    su = jac["state_units"].values.astype(str) if "state_units" in jac.coords else np.full(xa.size, "1")
    # The elements have different units (scale factors "1", background offsets in gas units);
    # a variable has one CF units string, so it says "1" and state_units gives each element's.
    state_note = (
        f"units differ by element and are given by the state_units coordinate: 1 for emission "
        f"scale factors (relative to the prior), {units} for background offsets and boundary inflow, "
        f"{units} (1000 km)-1 for background gradients"
    )
    cov_note = (
        f"the units of element (i, j) are the product of the state_units of elements i and j: 1 between "
        f"scale factors, {units} between a scale factor and an offset, {units}2 between offsets"
    )

    def attrs(name: str) -> dict[str, Any]:
        return output_attrs("posterior", name, state_note=state_note, cov_note=cov_note)

    sig = np.sqrt(np.clip(np.diag(S_x), 0.0, None))
    ds = xr.Dataset(coords=scoords)
    ds["x_prior"] = ("state", xa, attrs("x_prior"))
    ds["x_posterior"] = ("state", x_post, attrs("x_posterior"))
    ds["x_posterior_sigma"] = ("state", sig, attrs("x_posterior_sigma"))
    ds["x_prior_sigma"] = ("state", np.sqrt(np.diag(Sa)), attrs("x_prior_sigma"))
    for k, v in extra.items():
        ds[k] = ("state", v, attrs(k))
    ds["S_prior"] = (("state", "state2"), Sa, attrs("S_prior"))
    ds["S_posterior"] = (("state", "state2"), S_x, attrs("S_posterior"))
    ds["averaging_kernel"] = (("state", "state2"), res.A, attrs("averaging_kernel"))
    ds["dofs"] = ((), res.dofs, attrs("dofs"))
    ds["chi2_obs"] = ((), res.chi2_obs, attrs("chi2_obs"))
    ds["chi2_state"] = ((), res.chi2_state, attrs("chi2_state"))
    ds["n_observations"] = ((), np.int64(res.n_obs), attrs("n_observations"))
    ds["status"] = ((), np.int8(res.status), attrs("status"))
    ds["state_units"] = ("state", np.asarray(su, dtype=str), attrs("state_units"))
    ds = ds.set_coords("state_units")
    return ds


def consistency_diagnostics(
    jac: xr.DataArray,
    K: np.ndarray,
    y: np.ndarray,
    So: np.ndarray,
    xa: np.ndarray,
    Sa: np.ndarray,
    x_hat: np.ndarray,
    dofs: float,
) -> tuple[xr.Dataset, np.ndarray]:
    """Chi-square diagnostics normalised by their expected values, overall and per time bin.

    Parameters
    ----------
    jac : xarray.DataArray (obs, state)
        For ``obs_time_index`` and ``obs_time``.
    K, y, So, xa, Sa, x_hat : arrays
        Jacobian, observations (minus the background reference), S_o (variances or
        full), prior, S_a, posterior mean.
    dofs : float
        Degrees of freedom for signal.

    Returns
    -------
    (xarray.Dataset, ndarray)
        ``chi2_obs_normalized`` :math:`J_o / (m - \\mathrm{DOFS})`,
        ``chi2_state_normalized`` :math:`J_a / \\mathrm{DOFS}` (both 1 when the error
        statistics are consistent), ``chi2_obs_by_time`` (mean squared whitened residual
        per L3 time bin, dim ``time_bin``), and the whitened residuals
        :math:`L^{-1}(y - K\\hat x)` (one per observation).

    Notes
    -----
    For the optimal estimate :math:`E[J_o] = m - \\mathrm{DOFS}` and
    :math:`E[J_a] = \\mathrm{tr}(S_a^{-1}(S_a - \\hat S)) = \\mathrm{DOFS}` (Rodgers 2000,
    section 12.1; Michalak et al. 2005, JGR 110, D24107). Transport error shows in
    :math:`J_a` more than in :math:`J_o`: the state absorbs what the model cannot fit.
    """
    m, n = K.shape
    r = y - K @ x_hat if m else np.zeros(0)
    if So.ndim == 1:
        rw = r / np.sqrt(So) if m else r
    else:
        rw = sla.solve_triangular(sla.cholesky(So, lower=True), r, lower=True)
    jo = float(rw @ rw)
    d = x_hat - xa
    ja = _quad_inv(Sa, d) if n else 0.0
    chi_o = jo / max(m - dofs, 1.0) if m else math.nan
    chi_a = ja / dofs if dofs > 1e-9 else math.nan
    tb = jac["obs_time_index"].values.astype("int64") if "obs_time_index" in jac.coords else np.zeros(m, "int64")
    bins = np.unique(tb)
    by_time = np.array([float(np.mean(rw[tb == b] ** 2)) for b in bins])
    tstart = (
        np.array([jac["obs_time"].values[tb == b][0] for b in bins])
        if "obs_time" in jac.coords and m
        else np.zeros(bins.size, dtype="datetime64[ns]")
    )
    ds = xr.Dataset(
        {
            "chi2_obs_normalized": ((), chi_o, output_attrs("posterior", "chi2_obs_normalized")),
            "chi2_state_normalized": ((), chi_a, output_attrs("posterior", "chi2_state_normalized")),
            "chi2_obs_by_time": ("time_bin", by_time, output_attrs("posterior", "chi2_obs_by_time")),
        },
        coords={"time_bin_start": ("time_bin", tstart, output_attrs("posterior", "time_bin_start"))},
    )
    return ds, rw


def region_totals(
    posterior: xr.Dataset,
    *,
    K: np.ndarray | None = None,
    sensitivity_fraction: float = 0.1,
    region_names: dict[str, str] | None = None,
    whitened_residual: np.ndarray | None = None,
) -> xr.Dataset:
    """Regional totals :math:`E = w^T x`, :math:`\\sigma^2 = w^T S w` per (region, period), Tg yr-1.

    Parameters
    ----------
    posterior : xarray.Dataset
        With ``x_prior``, ``x_posterior``, ``S_prior``, ``S_posterior``,
        ``averaging_kernel`` and the state coords.
    K : array (m, n), optional
        The Jacobian, for ``total_n_observations`` and ``total_chi2_obs``.
    sensitivity_fraction : float
        See :func:`invert`.
    region_names : dict, optional
    whitened_residual : array (m,), optional
        From :func:`consistency_diagnostics`, for ``total_chi2_obs``.

    Returns
    -------
    xarray.Dataset, dims ``total``, ``total2``
        ``total_prior``, ``total_prior_sigma``, ``total_posterior``,
        ``total_posterior_sigma`` (Tg yr-1), ``total_prior_covariance``,
        ``total_posterior_covariance`` (Tg2 yr-2), ``total_error_reduction``
        (1 - sigma_post/sigma_prior), ``total_sensitivity``
        (:math:`w^T A w / w^T w`), ``total_n_observations``, ``total_chi2_state``
        (the region's elements' :math:`J_a` over its expected value),
        ``total_chi2_obs`` (mean squared whitened residual of the observations that see
        the region), ``total_status`` (0 ok, 1 no observation sees the region in that
        period, 2 no prior emission: :data:`gosat_pipeline.schema.TOTAL_STATUS`); coords ``total_region``, ``total_region_name``,
        ``total_role``, ``total_period``.

    Notes
    -----
    :math:`w_j` = prior emission of element j (Tg yr-1) for the region's elements (all
    sectors) of that period, 0 elsewhere, so :math:`w^T x` is the scaled total. The
    totals come from one sparse weight matrix W: :math:`W \\hat S W^T` is the full
    covariance (DESIGN.md 5.5), never only the diagonal, and no n x n temporary is made
    per region.
    """
    sv = StateVector.from_coords(posterior)
    names = {**sv.names(), **dict(region_names or {})}
    keys: list[tuple[str, str]] = list(dict.fromkeys(zip(sv.region[sv.emission], sv.period[sv.emission], strict=True)))
    W = sv.weight_matrix([((r,), p) for r, p in keys])
    role = {r: ro for r, ro in zip(sv.region[sv.emission], sv.role[sv.emission], strict=True)}
    xa, xp = posterior["x_prior"].values, posterior["x_posterior"].values
    Sa, Sp, A = (posterior[v].values for v in ("S_prior", "S_posterior", "averaging_kernel"))
    prior_tot, Ca = total_moments(W, xa, Sa)
    post_tot, Cp = total_moments(W, xp, Sp)
    sa = np.sqrt(np.clip(np.diag(Ca), 0.0, None))
    spost = np.sqrt(np.clip(np.diag(Cp), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        er = np.where(sa > 0, 1.0 - spost / np.where(sa > 0, sa, 1.0), 0.0)
    sens = total_sensitivity(W, A)
    chi_s = _region_state_chi2(W, xa, xp, Sa, Sp)
    nobs = np.zeros(len(keys), dtype="int64")
    chi_o = np.full(len(keys), np.nan)
    if K is not None and K.shape[0]:
        r2 = None
        if whitened_residual is not None and whitened_residual.size == K.shape[0]:
            r2 = whitened_residual**2
        nobs, chi_o = _observations_seeing(K, sp.csr_matrix(W != 0, dtype="float64"), sensitivity_fraction, r2)
    status = np.where(np.asarray(W.sum(axis=1)).ravel() <= 0, 2, np.where(nobs == 0, 1, 0)).astype("int8")

    def tot(name: str, dims: str | tuple[str, ...], values: Any) -> tuple[Any, Any, dict[str, Any]]:
        return dims, values, output_attrs("region_totals", name)

    ds = xr.Dataset(
        {
            "total_prior": tot("total_prior", "total", prior_tot),
            "total_prior_sigma": tot("total_prior_sigma", "total", sa),
            "total_posterior": tot("total_posterior", "total", post_tot),
            "total_posterior_sigma": tot("total_posterior_sigma", "total", spost),
            "total_prior_covariance": tot("total_prior_covariance", ("total", "total2"), Ca),
            "total_posterior_covariance": tot("total_posterior_covariance", ("total", "total2"), Cp),
            "total_error_reduction": tot("total_error_reduction", "total", er),
            "total_sensitivity": tot("total_sensitivity", "total", sens),
            "total_n_observations": tot("total_n_observations", "total", nobs),
            "total_chi2_state": tot("total_chi2_state", "total", chi_s),
            "total_chi2_obs": tot("total_chi2_obs", "total", chi_o),
            "total_status": tot("total_status", "total", status),
        },
        coords={
            "total_region": tot("total_region", "total", np.array([k[0] for k in keys], dtype=str)),
            "total_region_name": tot(
                "total_region_name", "total", np.array([names.get(k[0], k[0]) for k in keys], dtype=str)
            ),
            "total_role": tot("total_role", "total", np.array([role.get(k[0], "requested") for k in keys], dtype=str)),
            "total_period": tot("total_period", "total", np.array([k[1] for k in keys], dtype=str)),
        },
    )
    return ds


def _observations_seeing(
    K: Any, ind: sp.csr_matrix, fraction: float, r2: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per total: observations that see it and their mean squared whitened residual.

    An observation sees a total when its response to all the total's elements (the sum of
    their columns) exceeds ``fraction`` of the largest such response. Two passes over row
    chunks (the largest response, then the counts), so no (observations x totals) array is
    held; ``K`` dense or sparse.
    """
    m, ntot = K.shape[0], ind.shape[0]
    if sp.issparse(K):
        return _observations_seeing_sparse(sp.csr_matrix(K), ind, fraction, r2)
    rows = max(1024, _MIN_BLOCK_VALUES // max(ntot, 1))
    indT = ind.T

    def cols(i: int) -> np.ndarray:
        c = K[i : i + rows] @ indT
        return np.abs(c.toarray() if sp.issparse(c) else np.asarray(c))

    mx = np.zeros(ntot)
    for i in range(0, m, rows):
        np.maximum(mx, cols(i).max(axis=0), out=mx)
    nobs = np.zeros(ntot, dtype="int64")
    r2sum = np.zeros(ntot)
    for i in range(0, m, rows):
        seen = (cols(i) > fraction * mx[None, :]) & (mx[None, :] > 0)
        nobs += seen.sum(axis=0)
        if r2 is not None:
            r2sum += r2[i : i + rows] @ seen
    chi = np.full(ntot, np.nan)
    if r2 is not None:
        chi = np.where(nobs > 0, r2sum / np.maximum(nobs, 1), np.nan)
    return nobs, chi


def _observations_seeing_sparse(
    K: sp.csr_matrix, ind: sp.csr_matrix, fraction: float, r2: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_observations_seeing` on the non-zeros of a sparse K @ ind^T, row chunk by row chunk."""
    m, ntot = K.shape[0], ind.shape[0]
    rows = max(1024, int(2**22 / max(1.0, K.nnz / max(m, 1))))
    indT = ind.T.tocsr()

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for i in range(0, m, rows):
            c = (K[i : i + rows] @ indT).tocoo()
            yield i + c.row, c.col, np.abs(c.data)

    mx = np.zeros(ntot)
    for _, col, v in chunks():
        if v.size:
            np.maximum.at(mx, col, v)
    nobs = np.zeros(ntot, dtype="int64")
    r2sum = np.zeros(ntot)
    for row, col, v in chunks():  # computed again rather than held: K @ ind^T has K's non-zeros
        seen = (v > fraction * mx[col]) & (mx[col] > 0)
        nobs += np.bincount(col[seen], minlength=ntot)
        if r2 is not None:
            r2sum += np.bincount(col[seen], weights=r2[row[seen]], minlength=ntot)
    chi = np.full(ntot, np.nan)
    if r2 is not None:
        chi = np.where(nobs > 0, r2sum / np.maximum(nobs, 1), np.nan)
    return nobs, chi


def _region_state_chi2(W: Any, xa: np.ndarray, xp: np.ndarray, Sa: np.ndarray, Sp: np.ndarray) -> np.ndarray:
    """Per target: J_a of its elements over its expected value tr(S_a,R^-1 (S_a - S_hat)_RR)."""
    out = np.full(W.shape[0], np.nan)
    W = sp.csr_matrix(W)
    size = np.diff(W.indptr)
    one = np.flatnonzero(size == 1)  # one element (a per-cell state): the same ratio, vectorised
    if one.size:
        j = W.indices[W.indptr[one]]
        s1, d1 = Sa[j, j], xp[j] - xa[j]
        with np.errstate(invalid="ignore", divide="ignore"):
            e1 = np.where(s1 > 0, (s1 - Sp[j, j]) / np.where(s1 > 0, s1, 1.0), np.nan)
            ratio = np.where(s1 > 0, d1 * d1 / np.where(s1 > 0, s1, 1.0), np.nan) / e1
        out[one] = np.where(e1 > 1e-9, ratio, np.nan)
    for t in np.flatnonzero(size > 1):
        idx = W.indices[W.indptr[t] : W.indptr[t + 1]]
        sa = Sa[np.ix_(idx, idx)]
        d = xp[idx] - xa[idx]
        try:
            c = sla.cho_factor(sa, lower=True)
            ja = float(d @ sla.cho_solve(c, d))
            expected = float(np.trace(sla.cho_solve(c, sa - Sp[np.ix_(idx, idx)])))
        except (np.linalg.LinAlgError, sla.LinAlgError):
            continue
        out[t] = ja / expected if expected > 1e-9 else np.nan
    return out


# ---------------------------------------------------------------------------- maps
def posterior_flux_maps(
    posterior: xr.Dataset, emissions: xr.DataArray, masks: xr.DataArray | None = None
) -> xr.Dataset:
    """Gridded prior and posterior fluxes for maps.

    Parameters
    ----------
    posterior : xarray.Dataset
        Output of :func:`invert`.
    emissions : xarray.DataArray
        The region-attributed prior emissions the Jacobian was built from, kg m-2 s-1,
        ``(region, [sector,] latitude, longitude)``; or the plain prior flux together
        with ``masks`` (attributed by area fraction with a rest-of-domain part, as
        :func:`gosat_pipeline.transport.build_jacobian` does).
    masks : xarray.DataArray (region, latitude, longitude), optional

    Returns
    -------
    xarray.Dataset, dims (latitude, longitude), or (period, latitude, longitude) with
    several emission periods
        ``prior_flux``, ``posterior_flux``, ``posterior_flux_sigma`` (kg m-2 s-1),
        ``scale_factor`` (1), ``averaging_kernel_sensitivity`` (1: the diagonal of A
        weighted by each element's share of the cell's prior flux). The fluxes carry the
        CF standard name of the inventory's prior flux; the string ``period`` labels are
        encoded as a CF character array when written.

    Notes
    -----
    With :math:`F_e` the prior field of element e (region, sector) in a period,
    :math:`F_{post} = \\sum_e F_e x_e` and
    :math:`\\sigma^2 = \\sum_{e,f} F_e F_f \\hat S_{ef}` per cell; a cell's emissions
    that no element holds keep their prior (there are none when the state has a
    rest-of-domain element).
    """
    from gosat_pipeline.attribution import attribute_emissions

    if "region" not in emissions.dims:
        if masks is None:
            raise SchemaError("posterior_flux_maps needs region-attributed emissions or the prior flux and masks")
        emissions = attribute_emissions(emissions, masks, rule="area")
    em = emissions if "sector" in emissions.dims else emissions.expand_dims(sector=["total"], axis=1)
    em = em.transpose("region", "sector", "latitude", "longitude")
    codes, sectors = em["region"].values.astype(str), em["sector"].values.astype(str)
    fields = np.asarray(em.values, dtype="float64")  # no copy of float64 emissions
    ny, nx = fields.shape[-2:]
    sv = StateVector.from_coords(posterior)
    xp = posterior["x_posterior"].values
    S = _c_ordered(posterior["S_posterior"].values, symmetric=True)
    Adiag = np.diag(posterior["averaging_kernel"].values)
    prior = fields.sum(axis=(0, 1))
    # each (region, sector) field as a sparse row: a region's field is zero outside it
    F_all = sp.csr_matrix(fields.reshape(len(codes) * len(sectors), ny * nx))
    del fields
    first: dict[tuple[str, str, str], int] = {}
    for i in np.flatnonzero(sv.emission):
        first.setdefault((str(sv.region[i]), str(sv.period[i]), str(sv.sector[i])), int(i))
    periods = sv.periods() or ["all"]
    post, sigma, scale, aks = [], [], [], []
    for p in periods:
        rows, idx = [], []
        for r_i, r in enumerate(codes):
            for s_i, sec in enumerate(sectors):
                hit = first.get((r, p, sec))
                if hit is not None:
                    rows.append(r_i * len(sectors) + s_i)
                    idx.append(hit)
        ix = np.array(idx, dtype="int64")
        fpost, var, akw, held = _period_maps(F_all[rows], ix, xp, S, Adiag)
        held, var = held.reshape(ny, nx), var.reshape(ny, nx)
        fpost = fpost.reshape(ny, nx) + (prior - held)
        with np.errstate(invalid="ignore", divide="ignore"):
            akm = np.where(held > 0, akw.reshape(ny, nx) / np.where(held > 0, held, 1.0), 0.0)
            scale.append(np.where(prior != 0, fpost / np.where(prior != 0, prior, 1.0), 1.0))
        post.append(fpost)
        sigma.append(np.sqrt(np.clip(var, 0.0, None)))
        aks.append(akm)
    coords: dict[str, Any] = {"latitude": em["latitude"], "longitude": em["longitude"]}
    dims: tuple[str, ...] = ("latitude", "longitude")
    pick: Any = (lambda a: a[0]) if len(periods) == 1 else np.stack
    if len(periods) > 1:
        dims = ("period", *dims)
        coords["period"] = ("period", np.array(periods, dtype=str), output_attrs("flux_maps", "period"))
    gas = str(posterior.attrs.get("gas", ""))
    va = {
        n: output_attrs("flux_maps", n, gas=gas)
        for n in (
            "prior_flux",
            "posterior_flux",
            "posterior_flux_sigma",
            "scale_factor",
            "averaging_kernel_sensitivity",
        )
    }
    ds = xr.Dataset(
        {
            "prior_flux": (("latitude", "longitude"), prior, va["prior_flux"]),
            "posterior_flux": (dims, pick(post), va["posterior_flux"]),
            "posterior_flux_sigma": (dims, pick(sigma), va["posterior_flux_sigma"]),
            "scale_factor": (dims, pick(scale), va["scale_factor"]),
            "averaging_kernel_sensitivity": (dims, pick(aks), va["averaging_kernel_sensitivity"]),
        },
        coords=coords,
        attrs={
            **global_attrs("prior and posterior emission maps", source="gosat_pipeline analytical inversion"),
            "gas": posterior.attrs.get("gas", ""),
        },
    )
    if "period" in ds.coords:
        _char_encoding(ds["period"])
    return ds


def _period_maps(
    F: sp.csr_matrix, index: np.ndarray, x: np.ndarray, S: np.ndarray, a: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: :math:`\\sum_e F_e x_e`, :math:`\\sum_{e,f} F_e F_f S_{ef}`, :math:`\\sum_e F_e a_e`, :math:`\\sum_e F_e`.

    ``F`` (elements, cells) sparse, its row e the field of state element ``index[e]`` of
    ``x``, ``S`` (C-ordered) and ``a``: the variance is taken on F's non-zeros only, over
    blocks of cells, :math:`\\sigma^2_c = \\sum_e F_{ec} (F^T S)_{ce}`, so the cost is
    (non-zeros of F) x (elements) and no (elements x cells) dense array is formed. A
    period holding most of the state (one period, a per-cell state) uses S in place
    rather than a copy of its block.
    """
    ncell = F.shape[1]
    if F.shape[0] == 0:
        z = np.zeros(ncell)
        return z, z.copy(), z.copy(), z.copy()
    index = np.asarray(index, dtype="int64")
    if 2 * index.size < x.size:  # a period's few elements: their block of S (small), in F's order
        x, S, a, index = x[index], S[np.ix_(index, index)], a[index], np.arange(index.size)
    Ft = F.T.tocsr()  # (cells, elements): its columns moved to the elements' places in x
    Ft = sp.csr_matrix((Ft.data, index[Ft.indices], Ft.indptr), shape=(ncell, x.size))
    var = np.zeros(ncell)
    block = max(1, _MIN_BLOCK_VALUES // max(x.size, 1))
    for c in range(0, ncell, block):
        part = Ft[c : c + block]
        if part.nnz:
            var[c : c + block] = np.asarray(part.multiply(part @ S).sum(axis=1)).ravel()
    held = np.asarray(Ft.sum(axis=1)).ravel()
    return Ft @ x, var, Ft @ a, held


def _char_encoding(coord: xr.DataArray) -> None:
    """Store a string dimension coordinate as a CF character array (``dtype="S1"``).

    A CF coordinate variable (a variable named after its dimension) must be numeric, and
    a netCDF-4 string variable of that kind is rejected by CF checkers. As a char array
    ``(dim, string<n>)`` it is a label variable (CF 1.8 section 6.1) on disk, and xarray
    decodes it back to the same string index. The encoding is kept by
    :func:`gosat_pipeline.schema.cf_encoding`.
    """
    coord.encoding["dtype"] = "S1"


# ---------------------------------------------------------------------------- mass balance
def mass_balance(
    obs: xr.Dataset,
    masks: xr.DataArray,
    *,
    u: Any,
    v: Any,
    surface_pressure: float = STANDARD_SURFACE_PRESSURE,
    gas: str | None = None,
    background_percentile: float = 10.0,
    min_fraction: float = 0.5,
) -> xr.DataArray:
    """Data-driven mass-balance emission estimate per region (independent cross-check).

    Parameters
    ----------
    obs : xarray.Dataset
        L3 gridded observations (time, latitude, longitude).
    masks : xarray.DataArray (region, latitude, longitude), fractions
    u, v : float or DataArray (latitude, longitude), m s-1
    surface_pressure : float, hPa
    gas : {"CO2", "CH4"}, optional
        Defaults to ``obs.attrs["gas"]``.
    background_percentile : float
        The background of each time bin is this percentile of all its non-empty cells
        (the cleanest cells of the domain).
    min_fraction : float
        Cells with a region fraction below this do not count for the region.

    Returns
    -------
    xarray.DataArray (region), Tg yr-1, name ``mass_balance_emission``

    Notes
    -----
    With the region's mean enhancement :math:`\\Delta X` (observation-weighted mean over its
    cells and time bins of ``xgas - background``, divided by the mean column averaging
    kernel), the dry-air column :math:`N_{air} = p_s/(g M_{air})`, the mean wind speed U
    over the region and the length scale :math:`L = \\sqrt{A}`:

    .. math:: Q = \\Delta X \\, N_{air} \\, M_{gas} \\, U \\, L

    the integrated-mass-enhancement / mass-balance form of Varon et al. (2018, eq. 4,
    with :math:`U_{eff}` = U) and Buchwitz et al. (2017). Regions without observations
    get NaN. It ignores ventilation and upwind sources, so it is a cross-check, not an
    estimate with an uncertainty.
    """
    gas = (gas or str(obs.attrs.get("gas", ""))).upper()
    gas_units(gas)
    dims = ("time", "latitude", "longitude")
    first = "xgas_weighted_mean" if "xgas_weighted_mean" in obs else "xgas_mean"
    val = obs[first].transpose(*dims).values.astype("float64")
    n = obs["n_soundings"].transpose(*dims).values.astype("float64")
    ak = obs["averaging_kernel_pbl"].transpose(*dims).values if "averaging_kernel_pbl" in obs else np.ones_like(val)
    ak = np.where(np.isfinite(ak) & (ak > 0), ak, 1.0)
    good = (n > 0) & np.isfinite(val)
    bg = np.array(
        [
            np.percentile(val[t][good[t]], background_percentile) if good[t].any() else np.nan
            for t in range(val.shape[0])
        ]
    )
    enh = val - bg[:, None, None]
    grid = GridSpec.from_coords(obs["latitude"].values, obs["longitude"].values)
    area = grid.cell_area()
    fr = masks.transpose("region", "latitude", "longitude").values.astype("float64")
    speed = np.hypot(_field(u, grid), _field(v, grid))
    n_air = surface_pressure * 100.0 / (G0 * MOLAR_MASS["air"])
    out = np.full(fr.shape[0], np.nan)
    for r in range(fr.shape[0]):
        inside = fr[r] >= min_fraction
        wts = np.where(good & inside[None], n * fr[r][None], 0.0)
        if wts.sum() <= 0:
            continue
        dx = np.sum(np.where(wts > 0, enh / ak, 0.0) * wts) / wts.sum()
        a_r = float((fr[r] * area).sum())
        u_r = float((speed * fr[r] * area).sum() / a_r)
        q = dx * GAS_UNIT_TO_MOLMOL[gas] * n_air * MOLAR_MASS[gas] * u_r * math.sqrt(a_r)  # kg s-1
        out[r] = q * SECONDS_PER_YEAR / 1e9
    coords: dict[str, Any] = {
        "region": ("region", masks["region"].values.astype(str), output_attrs("mass_balance", "region"))
    }
    if "region_name" in masks.coords:
        coords["region_name"] = (
            "region",
            masks["region_name"].values.astype(str),
            output_attrs("mass_balance", "region_name"),
        )
    da = xr.DataArray(
        out,
        dims="region",
        coords=coords,
        name="mass_balance_emission",
        attrs={
            **output_attrs("mass_balance", "mass_balance_emission", gas=gas),
            "background_percentile": background_percentile,
            "surface_pressure_hPa": surface_pressure,
        },
    )
    _char_encoding(da["region"])
    return da


def _field(value: Any, grid: GridSpec) -> np.ndarray:
    if isinstance(value, xr.DataArray):
        extra = [d for d in value.dims if d not in ("latitude", "longitude")]
        da = value.mean(extra) if extra else value
        if da.ndim == 0:
            return np.full(grid.shape, float(da))
        if da.shape != grid.shape or not same_grid(da, grid):
            da = da.interp(latitude=grid.lat, longitude=grid.lon, kwargs={"fill_value": None})
        return da.transpose("latitude", "longitude").values.astype("float64")
    arr = np.asarray(value, dtype="float64")
    return np.full(grid.shape, float(arr)) if arr.ndim == 0 else arr
