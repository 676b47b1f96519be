"""Gridding of soundings into L3 super-observations (DESIGN.md sections 4, 5.0 and 5.1).

The work is split the way flox splits a reduction into *chunk*, *combine* and
*finalize* steps:

* **chunk** -- two numba passes over the soundings of one chunk: the first finds
  the (time bin, cell) of each sounding with exactly the semantics of
  :meth:`gosat_pipeline.grids.GridSpec.locate`, the second accumulates float64
  partial statistics into compact rows, one per bin the chunk touches: count,
  mean and sum of squared deviations (shifted-data algorithm), sum of weights,
  sum of weighted values, the uncertainty and averaging-kernel sums and their
  counts. Memory per chunk scales with the soundings, not with the grid;
* **combine** -- partials are merged pairwise with the parallel update of
  Chan, Golub & LeVeque (1979) for mean and variance and plain float64 sums for the
  rest, in a fixed tree (``split_every`` partials per node), so the result does not
  depend on the chunking beyond rounding (~1e-15 relative) and is the same on any
  scheduler;
* **finalize** -- the statistics of the L3 schema (``schema.GRIDDED_VARIABLES``).

:func:`grid_arrays` is the numpy core; :func:`grid_soundings` is the xarray wrapper,
lazy for dask-backed input (one delayed task per chunk plus the tree).

Edge traps handled (DESIGN.md 5.0): longitudes wrap explicitly on a global grid
(lon = 180 and lon = -180 both land in the first column), cells are closed below
and open above except the outermost edges (lat = +90 in the top row, lat = -90 in
the bottom row), NaN positions, times or values are dropped before indexing, and
all accumulation is in float64.
"""

from __future__ import annotations

import logging
from typing import Any

import dask
import dask.array as da
import numba
import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.schema import GASES, GRIDDED_VARIABLES, cf_attrs, global_attrs

__all__ = [
    "grid_soundings",
    "grid_arrays",
    "boundary_layer_ak",
    "time_bin_edges",
    "STD_DDOF",
]

logger = logging.getLogger(__name__)

#: Delta degrees of freedom of ``xgas_std`` (1: the sample standard deviation).
STD_DDOF = 1

# Columns of a partial-statistics row (one row per occupied (time bin, cell));
# the last column is scratch space of the kernel (S1) and is zero in every partial.
_N, _MEAN, _M2, _SW, _SWX, _NU, _SU, _NA, _SA = range(9)
_NSTAT = 10
#: Largest number of (time bin, cell) pairs gridded (the dense output alone is 56 bytes a bin).
_MAX_BINS = 2**31 - 1

#: Output variables in the order of the finalized stack.
_OUTPUTS: tuple[str, ...] = (
    "n_soundings",
    "xgas_mean",
    "xgas_weighted_mean",
    "xgas_std",
    "xgas_standard_error",
    "xgas_uncertainty_mean",
    "averaging_kernel_pbl",
)

# Weight modes of the kernel.
_W_ONE, _W_FROM_UNC, _W_GIVEN = 0, 1, 2


# ---------------------------------------------------------------------------- kernel
@numba.njit(cache=True, nogil=True, inline="always")
def _edge_locate(x: float, edges: np.ndarray, inv_d: float) -> int:  # pragma: no cover - numba
    """Index g with edges[g] <= x < edges[g+1]; the last edge is closed; -1 outside/NaN.

    Identical to ``searchsorted(edges, x, 'right') - 1`` with the outer upper edge
    closed (``grids._edge_index``): an arithmetic first guess corrected against
    the actual edges, so rounding in the guess can never move a point.
    """
    n = edges.size - 1
    if not (x >= edges[0] and x <= edges[n]):
        return -1
    if x == edges[n]:
        return n - 1
    g = int((x - edges[0]) * inv_d)
    if g > n - 1:
        g = n - 1
    while x < edges[g]:
        g -= 1
    while x >= edges[g + 1]:
        g += 1
    return g


@numba.njit(cache=True, nogil=True, inline="always")
def _wrap(lon: float, west: float) -> float:  # pragma: no cover - numba
    """``grids.wrap_longitude`` followed by the shift above the western edge.

    Bit-identical to numpy: for ``lon + 180`` in [0, 360) ``np.mod`` returns it
    unchanged, so the common case skips the (slow) modulo but keeps its rounding.
    """
    y = lon + 180.0
    if y >= 0.0 and y < 360.0:
        out = y - 180.0
    else:
        out = np.mod(y, 360.0) - 180.0
    if out >= 180.0:
        out -= 360.0
    if out < west:
        out += 360.0
    return out


@numba.njit(cache=True, nogil=True)
def _bin_index(lat, lon, t, lat_e, lon_e, t_e, wrap):  # pragma: no cover - numba
    """Flat (time bin, row, column) index of each sounding (int32), -1 when dropped.

    The same lookup as the accumulation kernel (kept as straight-line code in
    both: a shared helper function made numba's loop ~6x slower), exposed for
    tests and for callers that need the cell of each sounding. ``t`` is int64 ns,
    or empty for no time binning.
    """
    n = lat.size
    ny = lat_e.size - 1
    nx = lon_e.size - 1
    nt = t_e.size - 1
    inv_lat = ny / (lat_e[ny] - lat_e[0])
    inv_lon = nx / (lon_e[nx] - lon_e[0])
    if nt * ny * nx > 2147483647:  # _MAX_BINS
        raise ValueError("more than 2**31 - 1 (time bin, cell) pairs: bin indices do not fit int32")
    out = np.empty(n, dtype=np.int32)  # int32: half the memory traffic of int64 indices
    for k in range(n):
        out[k] = -1
        i = _edge_locate(lat[k], lat_e, inv_lat)
        if i < 0:
            continue
        xl = lon[k]
        if wrap:
            xl = _wrap(xl, lon_e[0])
        j = _edge_locate(xl, lon_e, inv_lon)
        if j < 0:
            continue
        tb = 0
        if t.size == n:
            tk = t[k]
            if tk < t_e[0] or tk >= t_e[nt]:
                continue
            if nt > 1:
                tb = np.searchsorted(t_e, tk, side="right") - 1
        out[k] = (tb * ny + i) * nx + j
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _weight(wmode, w, u, k):  # pragma: no cover - numba
    """Weight of sounding k: 1, uncertainty**-2 or given; 0 when not finite and positive."""
    if wmode == 0:
        return 1.0
    if wmode == 1:
        uk = u[k]
        return 1.0 / (uk * uk) if (np.isfinite(uk) and uk > 0.0) else 0.0
    wk = w[k]
    return wk if (np.isfinite(wk) and wk > 0.0) else 0.0


@numba.njit(cache=True, nogil=True)
def _accumulate(idx, x, w, u, a, wmode, has_u, has_a, slot, ncell):  # pragma: no cover - numba
    """Sparse partial statistics of one chunk from the bin of each sounding.

    ``idx`` (from :func:`_bin_index`, -1 = dropped) indexes ``slot`` (zeros, one
    int32 per (time bin, cell)), which maps each touched bin to a compact row
    (stored as row + 1): the memory touched scales with the soundings, not with
    the grid; allocate ``slot`` with ``np.zeros`` so untouched pages are never
    faulted in. (Two passes, index then accumulate, measured faster than one
    fused pass: the random accesses of the second pass overlap better.)

    Mean and M2 use the shifted-data algorithm with the first value seen in each
    bin as the shift K: S1 = sum(x - K), S2 = sum((x - K)^2), mean = K + S1/n,
    M2 = S2 - S1^2/n, accurate because K is a sample of the same cell (Chan,
    Golub & LeVeque 1983, section 3). Column 9 holds S1 while accumulating.

    Returns
    -------
    bins : int64 (m,), flat (time bin, cell) index of each row
    rows : float64 (m, 10), columns n, mean, M2, sum w, sum w x, n_u, sum u,
        n_a, sum a, 0
    tlo, thi : first and last time bin touched (-1, -1 if none)
    """
    cap = min(idx.size, slot.size)
    bins = np.empty(cap, dtype=np.int64)
    out = np.zeros((cap, 10))
    m = 0
    bmin = slot.size
    bmax = -1
    for k in range(idx.size):
        b = idx[k]
        xv = x[k]
        if b < 0 or not np.isfinite(xv):
            continue
        r = np.int64(slot[b]) - 1
        if r < 0:
            r = m
            m += 1
            slot[b] = m
            bins[r] = b
            out[r, 1] = xv  # the shift K while accumulating
            bmin = min(bmin, b)
            bmax = max(bmax, b)
        d = xv - out[r, 1]
        out[r, 0] += 1.0
        out[r, 9] += d
        out[r, 2] += d * d
        wk = _weight(wmode, w, u, k)
        out[r, 3] += wk
        out[r, 4] += wk * xv
        if has_u:
            uk = u[k]
            if np.isfinite(uk):
                out[r, 5] += 1.0
                out[r, 6] += uk
        ak = a[k] if has_a else 1.0
        if np.isfinite(ak):
            out[r, 7] += 1.0
            out[r, 8] += ak
    for r in range(m):
        nr = out[r, 0]
        s1 = out[r, 9]
        m2 = out[r, 2] - s1 * s1 / nr
        out[r, 1] += s1 / nr
        out[r, 2] = m2 if m2 > 0.0 else 0.0
        out[r, 9] = 0.0
    if m == 0:
        return bins[:0], out[:0], -1, -1
    return bins[:m], out[:m], bmin // ncell, bmax // ncell


@numba.njit(cache=True, nogil=True)
def _merge_rows(dst, rows, bins, dense, offset):  # pragma: no cover - numba
    """Merge partial ``rows`` into ``dst`` at ``bins + offset`` (or row + offset if dense).

    Mean and M2 by the pairwise update of Chan, Golub & LeVeque (1979):
    n = na + nb, delta = mean_b - mean_a, mean = mean_a + delta nb / n,
    M2 = M2a + M2b + delta^2 na nb / n; the other columns are sums.
    """
    for r in range(rows.shape[0]):
        nb = rows[r, 0]
        if nb == 0.0:
            continue
        b = (r if dense else bins[r]) + offset
        na = dst[b, 0]
        if na == 0.0:
            for c in range(10):
                dst[b, c] = rows[r, c]
            continue
        n = na + nb
        frac = nb / n
        delta = rows[r, 1] - dst[b, 1]
        dst[b, 2] += rows[r, 2] + delta * delta * na * frac
        dst[b, 1] += delta * frac
        dst[b, 0] = n
        for c in range(3, 10):
            dst[b, c] += rows[r, c]


# ---------------------------------------------------------------------------- partials
class _Partial:
    """Partial statistics of the bins of time bins ``tlo .. tlo + ntr - 1``.

    ``rows`` has shape (k, _NSTAT). Sparse form: ``bins`` (k,) gives each row's
    flat bin (time bin times the number of cells plus the cell).
    Dense form: ``bins`` is None and ``rows`` covers all ``ntr * ncell`` bins.
    """

    __slots__ = ("tlo", "ntr", "bins", "rows")

    def __init__(self, tlo: int, ntr: int, bins: np.ndarray | None, rows: np.ndarray) -> None:
        self.tlo = tlo
        self.ntr = ntr
        self.bins = bins
        self.rows = rows

    @classmethod
    def empty(cls) -> _Partial:
        return cls(0, 0, np.zeros(0, dtype="int64"), np.zeros((0, _NSTAT)))


def _as_f64(x: Any) -> np.ndarray:
    return np.ascontiguousarray(x, dtype="float64").ravel()


def _time_ns(t: Any) -> np.ndarray:
    """Datetimes as int64 nanoseconds since 1970 (NaT stays int64 min)."""
    t = np.asarray(t)
    if t.dtype.kind == "M":
        return np.ascontiguousarray(t.astype("datetime64[ns]", copy=False).view("int64")).ravel()
    return np.ascontiguousarray(t, dtype="int64").ravel()


def _chunk_partial(
    grid_edges: tuple[np.ndarray, np.ndarray, bool],
    t_edges: np.ndarray,
    lat: Any,
    lon: Any,
    x: Any,
    t: Any = None,
    w: Any = None,
    u: Any = None,
    a: Any = None,
) -> _Partial:
    """Partial statistics of one chunk of soundings (the *chunk* step)."""
    lat_e, lon_e, wrap = grid_edges
    lat, lon, x = _as_f64(lat), _as_f64(lon), _as_f64(x)
    n = x.size
    if not (lat.size == lon.size == n):
        raise SchemaError(
            f"latitude ({lat.size}), longitude ({lon.size}) and values ({n}) differ in length"
        )
    for name, arr in (("time", t), ("weights", w), ("uncertainty", u), ("ak_pbl", a)):
        if arr is not None and np.size(arr) != n:
            raise SchemaError(f"{name} has {np.size(arr)} values; expected {n}")
    tt = _time_ns(t) if t is not None else np.zeros(0, dtype="int64")
    ncell = (lat_e.size - 1) * (lon_e.size - 1)
    nbins = (t_edges.size - 1) * ncell
    if nbins > _MAX_BINS:
        raise SchemaError(
            f"{t_edges.size - 1} time bins x {ncell} cells = {nbins} bins is too large a dense L3 grid "
            f"(limit {_MAX_BINS}); use a coarser resolution, a regional bbox or longer time bins"
        )
    dummy = np.zeros(1)
    wmode = _W_GIVEN if w is not None else (_W_FROM_UNC if u is not None else _W_ONE)
    ww = _as_f64(w) if w is not None else dummy
    uu = _as_f64(u) if u is not None else dummy
    aa = _as_f64(a) if a is not None else dummy
    slot = np.zeros(nbins, dtype=np.int32)  # calloc: pages never touched cost nothing
    idx = _bin_index(lat, lon, tt, lat_e, lon_e, t_edges, wrap)
    bins, rows, tlo, thi = _accumulate(
        idx, x, ww, uu, aa, wmode, u is not None, a is not None, slot, ncell
    )
    del slot
    if thi < 0:
        return _Partial.empty()
    if 4 * rows.shape[0] < min(n, nbins):  # do not keep a mostly empty work array alive
        bins, rows = bins.copy(), rows.copy()
    return _Partial(tlo, thi - tlo + 1, bins, rows)


def _combine(*parts: _Partial, ncell: int) -> _Partial:
    """Merge partials in the order given (the *combine* step of the tree).

    The result is dense over the union of the time ranges, or sparse again when
    fewer than a quarter of its bins are occupied.
    """
    parts_ = [p for p in parts if p.ntr > 0]
    if not parts_:
        return _Partial.empty()
    tlo = min(p.tlo for p in parts_)
    ntr = max(p.tlo + p.ntr for p in parts_) - tlo
    dst = np.zeros((ntr * ncell, _NSTAT))
    nobins = np.zeros(0, dtype="int64")
    for p in parts_:
        if p.bins is None:
            _merge_rows(dst, p.rows, nobins, True, (p.tlo - tlo) * ncell)
        else:
            _merge_rows(dst, p.rows, p.bins, False, -tlo * ncell)
    occupied = np.flatnonzero(dst[:, _N])
    if 4 * occupied.size < dst.shape[0]:
        return _Partial(tlo, ntr, occupied + tlo * ncell, dst[occupied])
    return _Partial(tlo, ntr, None, dst)


@numba.njit(cache=True, nogil=True)
def _finalize_rows(rows, out, ddof):  # pragma: no cover - numba
    """The L3 statistics (``_OUTPUTS`` order) of dense partial ``rows`` (nbins, 10) into ``out`` (7, nbins).

    mean where n > 0; sum(w x)/sum(w) where sum(w) > 0; std = sqrt(M2 / (n - ddof))
    and std / sqrt(n) where n > ddof; uncertainty and AK means where they have
    values; NaN elsewhere.
    """
    nan = np.nan
    for b in range(rows.shape[0]):
        n = rows[b, 0]
        out[0, b] = n
        out[1, b] = rows[b, 1] if n > 0.0 else nan
        sw = rows[b, 3]
        out[2, b] = rows[b, 4] / sw if sw > 0.0 else nan
        if n > ddof:
            std = np.sqrt(max(rows[b, 2], 0.0) / (n - ddof))
            out[3, b] = std
            out[4, b] = std / np.sqrt(n)
        else:
            out[3, b] = nan
            out[4, b] = nan
        out[5, b] = rows[b, 6] / rows[b, 5] if rows[b, 5] > 0.0 else nan
        out[6, b] = rows[b, 8] / rows[b, 7] if rows[b, 7] > 0.0 else nan


def _finalize(part: _Partial, nt: int, shape: tuple[int, int]) -> np.ndarray:
    """Stack of the L3 statistics, shape (7, nt, ny, nx), in the order of ``_OUTPUTS``."""
    ny, nx = shape
    nbins = nt * ny * nx
    if part.ntr and part.bins is None and part.tlo == 0 and part.rows.shape[0] == nbins:
        full = part.rows  # dense over every bin already (the usual result of the tree)
    else:
        full = np.zeros((nbins, _NSTAT))
        if part.ntr and part.bins is None:
            _merge_rows(full, part.rows, np.zeros(0, dtype="int64"), True, part.tlo * ny * nx)
        elif part.ntr:
            _merge_rows(full, part.rows, part.bins, False, 0)
    out = np.empty((len(_OUTPUTS), nbins))
    _finalize_rows(full, out, float(STD_DDOF))
    return out.reshape(len(_OUTPUTS), nt, ny, nx)


# ---------------------------------------------------------------------------- numpy core
def _grid_edges(grid: GridSpec) -> tuple[np.ndarray, np.ndarray, bool]:
    return (
        np.ascontiguousarray(grid.lat_edges, dtype="float64"),
        np.ascontiguousarray(grid.lon_edges, dtype="float64"),
        bool(grid.is_global_lon),
    )


def _single_bin_edges() -> np.ndarray:
    return np.array([np.iinfo("int64").min + 1, np.iinfo("int64").max], dtype="int64")


def grid_arrays(
    lat: Any,
    lon: Any,
    values: Any,
    weights: Any = None,
    *,
    grid: GridSpec | None = None,
    time: Any = None,
    time_edges: Any = None,
    uncertainty: Any = None,
    ak_pbl: Any = None,
) -> dict[str, np.ndarray]:
    """Grid scattered values onto a regular lat/lon grid and time bins (numpy core).

    Parameters
    ----------
    lat, lon : array_like, dims (sounding,), degrees
        Positions; longitudes in any range (wrapped on a global grid). NaN drops
        the sounding.
    values : array_like, dims (sounding,), e.g. ppm or ppb
        Values to average; NaN drops the sounding.
    weights : array_like, dims (sounding,), optional
        Weights of ``xgas_weighted_mean``. Default ``uncertainty**-2`` when
        ``uncertainty`` is given, else 1. Non-finite or non-positive weights count
        as 0 (the sounding still counts in every unweighted statistic).
    grid : GridSpec, optional
        Default: global 1 degree.
    time : array_like of datetime64, dims (sounding,), optional
        Needed with ``time_edges``; NaT and times outside the bins drop the sounding.
    time_edges : array_like of datetime64, shape (nt + 1,), optional
        Ascending bin edges, bins closed below, open above. Default: one bin
        holding everything.
    uncertainty : array_like, dims (sounding,), same units as values, optional
        Averaged (NaN ignored) into ``xgas_uncertainty_mean``.
    ak_pbl : array_like, dims (sounding,), optional
        Per-sounding boundary-layer AK (see :func:`boundary_layer_ak`); averaged
        (NaN ignored) into ``averaging_kernel_pbl``. Default 1.0 for every sounding.

    Returns
    -------
    dict of str to numpy.ndarray
        Keys of :data:`gosat_pipeline.schema.GRIDDED_VARIABLES`, each float64 with
        shape (nt, ny, nx) except ``n_soundings`` (int32). Empty cells are NaN with
        ``n_soundings = 0``.

    Notes
    -----
    For the soundings :math:`x_k` of one cell and bin, with :math:`n` soundings:

    .. math::

        \\bar x = \\frac{1}{n}\\sum_k x_k, \\quad
        s = \\sqrt{\\frac{\\sum_k (x_k - \\bar x)^2}{n - 1}}, \\quad
        \\mathrm{SE} = s / \\sqrt{n}, \\quad
        \\bar x_w = \\frac{\\sum_k w_k x_k}{\\sum_k w_k}

    ``xgas_std`` is the *sample* standard deviation (ddof = 1, NaN when n < 2) and
    ``xgas_standard_error`` the standard error of the unweighted mean
    :math:`s/\\sqrt{n}`. Mean and :math:`\\sum (x-\\bar x)^2` are accumulated with
    the shifted-data algorithm within a chunk and combined with the update of
    Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise algorithm for
    computing sample variances", Stanford CS report STAN-CS-79-773.

    Examples
    --------
    >>> from gosat_pipeline.grids import GridSpec
    >>> g = GridSpec.from_resolution(90.0)
    >>> out = grid_arrays([10.0, 20.0], [10.0, 20.0], [1.0, 3.0], grid=g)
    >>> int(out["n_soundings"][0, 1, 2]), float(out["xgas_mean"][0, 1, 2])
    (2, 2.0)
    """
    grid = grid if grid is not None else GridSpec.from_resolution(1.0)
    if time_edges is not None:
        if time is None:
            raise SchemaError("time_edges given without time; pass time= (datetime64 per sounding)")
        t_edges = _time_ns(time_edges)
        if t_edges.size < 2 or np.any(np.diff(t_edges) <= 0):
            raise SchemaError("time_edges must be ascending with at least 2 values")
    else:
        t_edges, time = _single_bin_edges(), None
    part = _chunk_partial(
        _grid_edges(grid), t_edges, lat, lon, values, time, weights, uncertainty, ak_pbl
    )
    stack = _finalize(part, t_edges.size - 1, grid.shape)
    out = {name: stack[k] for k, name in enumerate(_OUTPUTS)}
    out["n_soundings"] = out["n_soundings"].astype("int32")
    return out


def boundary_layer_ak(
    averaging_kernel: np.ndarray | None,
    pressure_weight: np.ndarray | None,
    pressure: np.ndarray | None,
    surface_pressure: np.ndarray | None = None,
    pbl_pressure_depth: float = 150.0,
) -> np.ndarray | None:
    """Pressure-weighted boundary-layer column averaging kernel of each sounding.

    Parameters
    ----------
    averaging_kernel : numpy.ndarray, dims (sounding, level), 1, surface first, or None
    pressure_weight : numpy.ndarray, dims (sounding, level), 1, or None (equal weights)
    pressure : numpy.ndarray, dims (sounding, level), hPa, or None
        Without pressure only the lowest level counts as boundary layer.
    surface_pressure : numpy.ndarray, dims (sounding,), hPa, optional
        Default: the pressure of level 0.
    pbl_pressure_depth : float, hPa
        Levels with :math:`p_j \\ge p_s - \\Delta p` are in the boundary layer.

    Returns
    -------
    numpy.ndarray, dims (sounding,), or None
        :math:`\\bar a_{PBL} = \\sum_{j \\in PBL} h_j a_j / \\sum_{j \\in PBL} h_j`
        (DESIGN.md 5.1); NaN where no level with non-zero weight is in the
        boundary layer. None when ``averaging_kernel`` is None (the caller then uses
        1.0, the value for a product without AK).
    """
    if averaging_kernel is None:
        return None
    a = np.asarray(averaging_kernel, dtype="float64")
    if a.ndim != 2:
        raise SchemaError(f"averaging_kernel must have dims (sounding, level); got shape {a.shape}")
    h = np.ones_like(a) if pressure_weight is None else np.asarray(pressure_weight, dtype="float64")
    if pressure is None:
        mask = np.zeros(a.shape, dtype=bool)
        mask[:, 0] = True
    else:
        p = np.asarray(pressure, dtype="float64")
        ps = p[:, 0] if surface_pressure is None else np.asarray(surface_pressure, dtype="float64")
        mask = p >= (ps - pbl_pressure_depth)[:, None]
    hm = np.where(mask, h, 0.0)
    num = np.nansum(hm * a, axis=1)
    den = np.nansum(np.where(np.isfinite(a), hm, 0.0), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


# ---------------------------------------------------------------------------- time bins
def time_bin_edges(
    time: Any = None,
    time_bin: str | None = "MS",
    time_range: tuple[Any, Any] | None = None,
) -> pd.DatetimeIndex:
    """Edges of the time bins (bins closed below, open above).

    Parameters
    ----------
    time : array_like of datetime64, optional
        Sounding times; their range sets the bins when ``time_range`` is None.
    time_bin : str or None
        A pandas frequency ("1D", "MS", "7D", "6h", "YS" ...), anchored as
        ``pandas.Series.resample(freq, closed="left", label="left")`` anchors it;
        None for one bin.
    time_range : (start, end), optional
        Explicit period (end exclusive), e.g. the configured run period.

    Returns
    -------
    pandas.DatetimeIndex (ns)
        nt + 1 edges. With neither times nor a range, one bin around the Unix
        epoch day is returned so that empty input still gives a valid grid.
        With ``time_bin=None`` and times only, the bin spans whole UTC days.
    """
    if time_range is not None:
        start, end = pd.Timestamp(time_range[0]), pd.Timestamp(time_range[1])
        if end <= start:
            raise SchemaError(f"time_range end {end} must be after start {start}")
        last = end - pd.Timedelta(1, "ns")
    else:
        t = pd.DatetimeIndex(np.asarray(time).ravel() if time is not None else []).dropna()
        if t.size == 0:
            epoch = pd.Timestamp("1970-01-01")
            return pd.DatetimeIndex([epoch, epoch + pd.Timedelta(1, "D")]).as_unit("ns")
        start, last = t.min(), t.max()
        if time_bin is None:
            start, end = start.floor("D"), last.floor("D") + pd.Timedelta(1, "D")
    if time_bin is None:
        return pd.DatetimeIndex([start, end]).as_unit("ns")
    try:
        labels = (
            pd.Series([0, 0], index=pd.DatetimeIndex([start, last]))
            .resample(time_bin, closed="left", label="left")
            .sum()
            .index
        )
    except ValueError as exc:
        raise SchemaError(
            f"time_bin {time_bin!r} is not a pandas frequency (e.g. '1D', 'MS', '7D'): {exc}"
        ) from None
    edges = pd.date_range(labels[0], periods=labels.size + 1, freq=labels.freq or time_bin)
    if time_range is not None:
        edges = edges.where(edges > start, start).where(edges < end, end)
    return pd.DatetimeIndex(edges).as_unit("ns")


# ---------------------------------------------------------------------------- xarray wrapper
def _level_inputs(ds: xr.Dataset) -> dict[str, Any]:
    """The level arrays used for the boundary-layer AK (None when absent)."""
    out: dict[str, Any] = {}
    for name in ("averaging_kernel", "pressure_weight", "pressure"):
        if name in ds.variables:
            var = ds[name]
            if var.dims != ("sounding", "level"):
                var = var.transpose("sounding", "level")
            out[name] = var.data
        else:
            out[name] = None
    out["surface_pressure"] = (
        ds["surface_pressure"].data if "surface_pressure" in ds.variables else None
    )
    return out


def _sounding_inputs(ds: xr.Dataset) -> dict[str, Any]:
    for name in ("xgas", "latitude", "longitude", "time"):
        if name not in ds.variables:
            raise SchemaError(
                f"soundings dataset has no variable {name!r}; has {sorted(map(str, ds.variables))}"
            )
        if ds[name].dims != ("sounding",):
            raise SchemaError(
                f"soundings variable {name!r} has dims {ds[name].dims}; expected ('sounding',)"
            )
    if ds["time"].dtype.kind != "M":
        raise SchemaError(
            f"soundings 'time' has dtype {ds['time'].dtype}; expected datetime64 (open with decode_times=True)"
        )
    out = {k: ds[k].data for k in ("latitude", "longitude", "xgas", "time")}
    out["xgas_uncertainty"] = (
        ds["xgas_uncertainty"].data if "xgas_uncertainty" in ds.variables else None
    )
    out.update(_level_inputs(ds))
    return out


def _soundings_partial(
    grid_edges: tuple[np.ndarray, np.ndarray, bool],
    t_edges: np.ndarray,
    depth: float,
    lat: Any,
    lon: Any,
    x: Any,
    t: Any,
    u: Any,
    a: Any,
    h: Any,
    p: Any,
    ps: Any,
) -> _Partial:
    """Chunk step on one block of soundings: boundary-layer AK, then the partial sums."""
    ak = boundary_layer_ak(a, h, p, ps, depth)
    return _chunk_partial(grid_edges, t_edges, lat, lon, x, t, None, u, ak)


def _block_lists(arrays: list[da.Array | None], chunks: tuple[int, ...]) -> list[list[Any]]:
    """Delayed blocks of each array along ``sounding`` (all levels in one block); Nones if absent.

    Split without graph optimisation: optimising (even jointly) fuses a task that feeds
    several variables, such as ingest's one read of a granule group, into each of them,
    so it ran once per variable (every granule was read nine times).
    """
    out: list[list[Any]] = []
    for a in arrays:
        if a is None:
            out.append([None] * len(chunks))
            continue
        a = a.rechunk((chunks,) + ((-1,) * (a.ndim - 1)))
        out.append(list(a.to_delayed(optimize_graph=False).ravel()))
    return out


def _lazy_stack(
    inputs: dict[str, Any],
    grid: GridSpec,
    t_edges: np.ndarray,
    depth: float,
    split_every: int,
) -> da.Array:
    """Delayed chunk + tree-combine + finalize graph; returns the (7, nt, ny, nx) stack."""
    x = da.asarray(inputs["xgas"])
    chunks = x.chunks[0]

    def as_dask(v: Any) -> da.Array | None:
        if v is None or isinstance(v, da.Array):
            return v
        v = np.asarray(v)
        return da.from_array(v, chunks=(chunks,) + ((-1,) * (v.ndim - 1)))

    order = ("latitude", "longitude", "xgas", "time", "xgas_uncertainty",
             "averaging_kernel", "pressure_weight", "pressure", "surface_pressure")  # fmt: skip
    cols = _block_lists([as_dask(inputs[k]) for k in order], chunks)
    if inputs["averaging_kernel"] is None:
        cols[5:] = [[None] * len(chunks)] * 4
    edges = _grid_edges(grid)
    chunk_fn = dask.delayed(_soundings_partial, pure=True)
    token = dask.base.tokenize(x.name, t_edges, edges, depth)
    parts = [
        chunk_fn(
            edges,
            t_edges,
            depth,
            *(c[k] for c in cols),
            dask_key_name=f"gosat-grid-chunk-{token}-{k}",
        )
        for k in range(len(chunks))
    ]
    if not parts:
        parts = [dask.delayed(_Partial.empty())]
    while len(parts) > 1:
        parts = [
            dask.delayed(_combine, pure=True)(*parts[i : i + split_every], ncell=grid.size)
            for i in range(0, len(parts), split_every)
        ]
    final = dask.delayed(_finalize, pure=True)(parts[0], t_edges.size - 1, grid.shape)
    return da.from_delayed(
        final, shape=(len(_OUTPUTS), t_edges.size - 1, *grid.shape), dtype="float64"
    )


def _eager_stack(
    inputs: dict[str, Any], grid: GridSpec, t_edges: np.ndarray, depth: float
) -> np.ndarray:
    ak = boundary_layer_ak(
        inputs["averaging_kernel"],
        inputs["pressure_weight"],
        inputs["pressure"],
        inputs["surface_pressure"],
        depth,
    )
    part = _chunk_partial(
        _grid_edges(grid), t_edges, inputs["latitude"], inputs["longitude"], inputs["xgas"], inputs["time"],
        None, inputs["xgas_uncertainty"], ak,
    )  # fmt: skip
    return _finalize(part, t_edges.size - 1, grid.shape)


def _minmax_block(t: np.ndarray) -> np.ndarray:
    """[min, max] of valid int64 ns times in a block (sentinels when none)."""
    ti = _time_ns(t)
    ti = ti[ti != np.iinfo("int64").min]
    if ti.size == 0:
        return np.array([np.iinfo("int64").max, np.iinfo("int64").min], dtype="int64")
    return np.array([ti.min(), ti.max()], dtype="int64")


def _time_extent(time: Any) -> tuple[Any, Any] | None:
    """(min, max) of the sounding times, NaT ignored; None when there are none.

    For dask-backed times this is one compute reading only the time variable.
    """
    if isinstance(time, da.Array):
        if time.size == 0:
            return None
        nb = time.numblocks[0]
        mm = da.map_blocks(
            _minmax_block, time, chunks=((2,) * nb,), dtype="int64", name="gosat-time-extent"
        )
        arr = np.asarray(mm.compute()).reshape(nb, 2)
        lo, hi = int(arr[:, 0].min()), int(arr[:, 1].max())
    else:
        arr = _minmax_block(np.asarray(time))
        lo, hi = int(arr[0]), int(arr[1])
    if lo > hi:
        return None
    return np.datetime64(lo, "ns"), np.datetime64(hi, "ns")


def _build_dataset(
    stack: Any,
    grid: GridSpec,
    edges: pd.DatetimeIndex,
    gas: str,
    attrs: dict[str, Any],
) -> xr.Dataset:
    """The L3 dataset around ``stack`` (7, nt, ny, nx), built in one constructor call.

    (Adding variables one by one re-aligns the whole dataset each time: that was
    most of the fixed cost of :func:`grid_soundings`.)
    """
    dims = ("time", "latitude", "longitude")
    grid_ds = grid.bounds_dataset()
    grid_ds["cell_area"].attrs["comment"] = (
        "exact on a sphere: A = R**2 * (lon_east - lon_west) * (sin(lat_north) - sin(lat_south)), angles in radians"
    )
    time = xr.Variable(
        "time",
        edges[:-1].values,
        {"standard_name": "time", "long_name": "start of time bin", "bounds": "time_bounds", "axis": "T"},
    )
    time_bounds = xr.Variable(("time", "nv"), np.column_stack([edges[:-1].values, edges[1:].values]))
    # One units encoding for time and its bounds, as CF requires.
    for v in (time, time_bounds):
        v.encoding.update(units="seconds since 1970-01-01 00:00:00", calendar="proleptic_gregorian")
    comments = {
        "xgas_std": f"sample standard deviation (ddof={STD_DDOF}); NaN where n_soundings < 2",
        "xgas_standard_error": "standard error of the unweighted cell mean xgas_mean: xgas_std / sqrt(n_soundings); "
        "NaN where n_soundings < 2",
        "xgas_weighted_mean": "sum(w x) / sum(w) with w = xgas_uncertainty**-2; soundings with missing or "
        "non-positive uncertainty get w = 0",
        "averaging_kernel_pbl": "mean over soundings of sum(h a) / sum(h) over levels with p >= p_surface - "
        "pbl_pressure_depth (h pressure weight, a column averaging kernel); 1 for products without an averaging kernel",
    }
    data_vars: dict[str, Any] = {name: grid_ds[name].variable for name in grid_ds.data_vars}
    data_vars["time_bounds"] = time_bounds
    for k, name in enumerate(_OUTPUTS):
        data = stack[k]
        if name == "n_soundings":
            data = data.astype("int32")
        var_attrs = dict(cf_attrs(name, None if GRIDDED_VARIABLES[name].get("units") != "gas" else gas))
        if name in comments:
            var_attrs["comment"] = comments[name]
        if name == "n_soundings":
            var_attrs["ancillary_variables"] = "xgas_mean"
        data_vars[name] = xr.Variable(dims, data, var_attrs)
    coords = {name: grid_ds[name].variable for name in grid_ds.coords}
    coords["time"] = time
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def grid_soundings(
    soundings: xr.Dataset,
    resolution: float | tuple[float, float] = 1.0,
    *,
    grid: GridSpec | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    time_bin: str | None = "MS",
    pbl_pressure_depth: float = 150.0,
    time_range: tuple[Any, Any] | None = None,
    split_every: int = 8,
) -> xr.Dataset:
    """Grid canonical soundings into the L3 schema (DESIGN.md section 4).

    Parameters
    ----------
    soundings : xarray.Dataset
        Canonical soundings (dims ``sounding``, ``level``), numpy- or dask-backed:
        ``xgas`` (ppm/ppb), ``time``, ``latitude``, ``longitude`` (degrees), and
        optionally ``xgas_uncertainty``, ``averaging_kernel``, ``pressure_weight``,
        ``pressure`` (hPa), ``surface_pressure`` (hPa); attribute ``gas``. Every
        sounding given is gridded (filter quality first); soundings with NaN
        ``xgas``, position or time are dropped, and so are those outside the grid.
    resolution : float or (dlat, dlon), degrees
        Used with ``bbox`` when ``grid`` is None.
    grid : GridSpec, optional
        Overrides ``resolution`` and ``bbox``.
    bbox : (west, south, east, north), degrees, optional
        Regional grid; default global.
    time_bin : str or None
        A pandas frequency ("1D", "MS", "7D" ...) or None for one bin over the
        whole period (see :func:`time_bin_edges`).
    pbl_pressure_depth : float, hPa
        Depth of the boundary layer for ``averaging_kernel_pbl`` (DESIGN.md 5.1).
    time_range : (start, end), optional
        Period to bin (end exclusive), e.g. the configured run period. Without it
        the range of the sounding times is used, which for dask-backed times costs
        one small compute of the time variable when this function is called.
    split_every : int
        Fan-in of the tree reduction of chunk partials.

    Returns
    -------
    xarray.Dataset
        Dims ``time`` (bin start, with ``time_bounds``), ``latitude``, ``longitude``
        (cell centres with ``latitude_bounds``/``longitude_bounds``), variables
        :data:`gosat_pipeline.schema.GRIDDED_VARIABLES` and ``cell_area`` (m2).
        Dask-backed (lazy until computed or written) when the input is
        dask-backed, numpy otherwise. See :func:`grid_arrays` for the formulas
        (sample std, standard error of the unweighted mean).

    Examples
    --------
    >>> from gosat_pipeline.testing import make_soundings
    >>> l3 = grid_soundings(make_soundings(500, "CH4"), 10.0, time_bin=None)
    >>> int(l3.n_soundings.sum()), l3.xgas_mean.attrs["units"]
    (500, 'ppb')
    """
    gas = str(soundings.attrs.get("gas", "")).upper()
    if gas not in GASES:
        raise SchemaError(
            f"soundings attribute 'gas' is {soundings.attrs.get('gas')!r}; expected one of {GASES}"
        )
    if split_every < 2:
        raise SchemaError(f"split_every must be >= 2; got {split_every}")
    grid = grid if grid is not None else GridSpec.from_resolution(resolution, bbox)
    inputs = _sounding_inputs(soundings)
    if time_range is not None:
        edges = time_bin_edges(None, time_bin, time_range)
    else:
        extent = _time_extent(inputs["time"])
        edges = time_bin_edges(None if extent is None else list(extent), time_bin)
    t_edges = edges.asi8.copy()
    lazy = any(isinstance(v, da.Array) for v in inputs.values())
    if lazy:
        stack = _lazy_stack(inputs, grid, t_edges, float(pbl_pressure_depth), split_every)
    else:
        stack = _eager_stack(inputs, grid, t_edges, float(pbl_pressure_depth))
    dlat, dlon = np.diff(grid.lat_edges).mean(), np.diff(grid.lon_edges).mean()
    attrs = global_attrs(
        title=f"Gridded {gas} column-averaged dry-air mole fraction (L3)",
        source=str(soundings.attrs.get("product", "unknown product")),
        history="gridded by gosat_pipeline.gridding.grid_soundings",
        gas=gas,
        product=str(soundings.attrs.get("product", "")),
        resolution=np.array([dlat, dlon], dtype="float64"),
        resolution_units="degrees (dlat, dlon)",
        bbox=np.array(grid.bbox, dtype="float64"),
        time_bin=time_bin if time_bin is not None else "none (whole period)",
        pbl_pressure_depth_hPa=float(pbl_pressure_depth),
        n_input_soundings=int(soundings.sizes.get("sounding", 0)),
        xgas_std_ddof=STD_DDOF,
    )
    logger.info(
        "gridding %d %s soundings onto %dx%d cells x %d time bins (%s)",
        attrs["n_input_soundings"], gas, *grid.shape, edges.size - 1, "lazy" if lazy else "eager",
    )  # fmt: skip
    return _build_dataset(stack, grid, edges, gas, attrs)
