"""Gridding of soundings into L3 super-observations (DESIGN.md sections 4, 5.0 and 5.1).

The work is split the way flox splits a reduction into *chunk*, *combine* and
*finalize* steps:

* **chunk** -- numba passes over the soundings of one chunk: the first finds the
  (time bin, cell) of each sounding with exactly the semantics of
  :meth:`gosat_pipeline.grids.GridSpec.locate`; a counting sort then moves the
  soundings into buckets of a few thousand bins (skipped when the chunk spans few
  bins), and each bucket is accumulated in a small cache-resident table into compact
  rows, one per bin the chunk touches, **sorted by bin**: count, mean and sum of
  squared deviations (shifted-data algorithm), sum of weights, sum of weighted
  values, the uncertainty and averaging-kernel sums and their counts. Work and memory
  per chunk scale with its soundings, never with the grid;
* **combine** -- sorted partials are merged by a linear k-way merge with the
  parallel update of Chan, Golub & LeVeque (1979) for mean and variance and plain
  float64 sums for the rest, in a fixed tree (``split_every`` partials per node), so
  the result does not depend on the chunking beyond rounding (~1e-15 relative) and
  is the same on any scheduler. Partials stay sparse (cost O(rows), no grid-sized
  array) and are kept in windows of 2**21 bins;
* **finalize** -- the last partials of the tree are merged window by window straight
  into the dense L3 arrays (schema ``GRIDDED_VARIABLES``; allocated once, each value
  written once), and each window of the partials is freed once written: the dense
  grid exists once, and the peak is about the grid plus the partials, not a multiple
  of the grid. Total cost O(soundings + grid).

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
import threading
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numba
import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.params import DEFAULT_PBL_PRESSURE_DEPTH
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

# Columns of a partial-statistics row (one row per occupied (time bin, cell)).
_N, _MEAN, _M2, _SW, _SWX, _NU, _SU, _NA, _SA = range(9)
_NSTAT = 9
#: Largest number of (time bin, cell) pairs gridded (the dense output alone is 52 bytes a bin).
_MAX_BINS = 2**31 - 1
#: Partials are reduced, and the dense grid built, in blocks of about this many bins ...
_BLOCK_BINS = 1 << 15
#: ... and at most this many blocks (a graph task per chunk and block).
_MAX_BLOCKS = 256
#: A chunk spanning at most this many bins is accumulated in one local table (80 bytes a bin).
_DIRECT_SPAN = 1 << 16
#: Otherwise soundings are first sorted into buckets of at least 2**_BUCKET_SHIFT bins ...
_BUCKET_SHIFT = 11
#: ... and at most this many buckets (the counting sort writes one run per bucket).
_MAX_BUCKETS = 4096

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

    Exposed for tests and for callers that need the cell of each sounding. ``t`` is
    int64 ns, or empty for no time binning. See :func:`_bin_index_into`.
    """
    out = np.empty(lat.size, dtype=np.int32)  # int32: half the memory traffic of int64 indices
    _bin_index_into(lat, lon, t, lat_e, lon_e, t_e, wrap, out)
    return out


@numba.njit(cache=True, nogil=True)
def _bin_index_into(lat, lon, t, lat_e, lon_e, t_e, wrap, out):  # pragma: no cover - numba
    """:func:`_bin_index` written into ``out`` (int32, (n,)), e.g. a reused work array."""
    n = lat.size
    ny = lat_e.size - 1
    nx = lon_e.size - 1
    nt = t_e.size - 1
    inv_lat = ny / (lat_e[ny] - lat_e[0])
    inv_lon = nx / (lon_e[nx] - lon_e[0])
    if nt * ny * nx > 2147483647:  # _MAX_BINS
        raise ValueError("more than 2**31 - 1 (time bin, cell) pairs: bin indices do not fit int32")
    tb = 0
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
        if t.size == n:
            tk = t[k]
            if tk < t_e[0] or tk >= t_e[nt]:
                continue
            if nt > 1 and not (t_e[tb] <= tk < t_e[tb + 1]):  # soundings come in time order: try the last bin
                tb = np.searchsorted(t_e, tk, side="right") - 1
        out[k] = (tb * ny + i) * nx + j


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
def _valid_range(idx, x):  # pragma: no cover - numba
    """(lowest bin, highest bin, count) of the soundings kept (bin >= 0, finite value); (0, -1, 0) if none."""
    lo = np.int64(2**62)
    hi = np.int64(-1)
    nv = 0
    for k in range(idx.size):
        b = np.int64(idx[k])
        if b < 0 or not np.isfinite(x[k]):
            continue
        nv += 1
        lo = min(lo, b)
        hi = max(hi, b)
    if nv == 0:
        return np.int64(0), np.int64(-1), 0
    return lo, hi, nv


@numba.njit(cache=True, nogil=True, inline="always")
def _add_one(tab, j, xv, wv, uv, av, has_u):  # pragma: no cover - numba
    """Add one sounding to row j of a local table (shifted-data sums; column 9 holds S1)."""
    if tab[j, 0] == 0.0:
        tab[j, 1] = xv  # the shift K: the first value of the bin
    d = xv - tab[j, 1]
    tab[j, 0] += 1.0
    tab[j, 9] += d
    tab[j, 2] += d * d
    tab[j, 3] += wv
    tab[j, 4] += wv * xv
    if has_u and np.isfinite(uv):
        tab[j, 5] += 1.0
        tab[j, 6] += uv
    if np.isfinite(av):
        tab[j, 7] += 1.0
        tab[j, 8] += av


@numba.njit(cache=True, nogil=True)
def _emit(tab, flag, touched, t, base, bins, rows, m):  # pragma: no cover - numba
    """Move the ``t`` touched rows of a local table, in bin order, to ``bins``/``rows`` from row ``m``.

    mean = K + S1/n and M2 = S2 - S1^2/n (shifted data, Chan, Golub & LeVeque 1983,
    section 3). Emitted table rows and their flags are zeroed again. Returns the new
    row count.
    """
    width = flag.size
    sparse = 16 * t < width
    if sparse:  # few bins touched: sort them
        touched[:t].sort()
    j = -1
    for q in range(t):
        if sparse:
            j = touched[q]
        else:  # many: a pass over the flags is cheaper than a sort
            j += 1
            while flag[j] == 0:
                j += 1
        flag[j] = 0
        n = tab[j, 0]
        s1 = tab[j, 9]
        m2 = tab[j, 2] - s1 * s1 / n
        bins[m] = base + j
        rows[m, 0] = n
        rows[m, 1] = tab[j, 1] + s1 / n
        rows[m, 2] = m2 if m2 > 0.0 else 0.0
        for c in range(3, 9):
            rows[m, c] = tab[j, c]
        for c in range(10):
            tab[j, c] = 0.0
        m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _direct_rows(idx, x, w, u, a, wmode, has_u, has_a, lo, tab, flag, touched, bins, rows):  # pragma: no cover
    """Accumulate every kept sounding into one local table (bins ``lo ..``), emit sorted rows."""
    t = 0
    for k in range(idx.size):
        b = np.int64(idx[k])
        xv = x[k]
        if b < 0 or not np.isfinite(xv):
            continue
        j = b - lo
        if flag[j] == 0:
            flag[j] = 1
            touched[t] = j
            t += 1
        _add_one(tab, j, xv, _weight(wmode, w, u, k), u[k] if has_u else 0.0, a[k] if has_a else 1.0, has_u)
    return _emit(tab, flag, touched, t, lo, bins, rows, 0)


@numba.njit(cache=True, nogil=True)
def _bucket_sort(idx, x, w, u, a, wmode, has_u, has_a, lo, shift, start, rec):  # pragma: no cover - numba
    """Stable counting sort of the kept soundings into buckets of ``2**shift`` bins.

    ``start`` (zeros, number of buckets + 1) receives the run offsets; each row of
    ``rec`` (nv, 5) the bin within its bucket, value, weight, uncertainty and AK (one
    write stream per bucket).
    """
    nb = start.size - 1
    for k in range(idx.size):
        b = np.int64(idx[k])
        if b >= 0 and np.isfinite(x[k]):
            start[((b - lo) >> shift) + 1] += 1
    for q in range(nb):
        start[q + 1] += start[q]
    pos = start[:-1].copy()
    mask = (np.int64(1) << shift) - 1
    for k in range(idx.size):
        b = np.int64(idx[k])
        xv = x[k]
        if b < 0 or not np.isfinite(xv):
            continue
        q = (b - lo) >> shift
        p = pos[q]
        pos[q] = p + 1
        rec[p, 0] = (b - lo) & mask
        rec[p, 1] = xv
        rec[p, 2] = _weight(wmode, w, u, k)
        rec[p, 3] = u[k] if has_u else 0.0
        rec[p, 4] = a[k] if has_a else 1.0


@numba.njit(cache=True, nogil=True)
def _bucket_rows(start, rec, has_u, lo, shift, tab, flag, touched, bins, rows):  # pragma: no cover - numba
    """Accumulate each bucket of :func:`_bucket_sort` in the local table and emit its rows in bin order."""
    m = 0
    for q in range(start.size - 1):
        t = 0
        for p in range(start[q], start[q + 1]):
            j = np.int64(rec[p, 0])
            if flag[j] == 0:
                flag[j] = 1
                touched[t] = j
                t += 1
            _add_one(tab, j, rec[p, 1], rec[p, 2], rec[p, 3], rec[p, 4], has_u)
        if t:
            m = _emit(tab, flag, touched, t, lo + (q << shift), bins, rows, m)
    return m


class _ScratchPool:
    """Work arrays of the chunk step, kept between chunks (fresh memory costs page faults).

    A thread takes an array and gives it back when its chunk is done. Sort buffers
    (``take``) come back with any content; local tables (``take_table``) come back
    zeroed (the kernels zero every row they emit), so they are reused without being
    cleared. The finalize step (:func:`_block_stats`, :func:`_dense`), which runs once
    every chunk is done, empties the pool, so nothing is held after a gridding; meanwhile at most one array per concurrent chunk and kind is kept, each at most
    ``max_bytes``.
    """

    def __init__(self, max_bytes: int = 1 << 28) -> None:
        self.max_bytes = max_bytes
        self._free: dict[Any, list[Any]] = {}
        self._lock = threading.Lock()

    def take(self, size: int) -> np.ndarray:
        """A float64 array of at least ``size`` values (content undefined), as a view of ``size``."""
        with self._lock:
            free = self._free.get("buf", [])
            fits = [k for k, arr in enumerate(free) if arr.size >= size]
            if fits:
                return free.pop(min(fits, key=lambda k: free[k].size))[:size]
        return np.empty(size)

    def give(self, arr: np.ndarray) -> None:
        """Return an array from :meth:`take`."""
        base = arr.base if arr.base is not None else arr
        if base.nbytes <= self.max_bytes:
            with self._lock:
                self._free.setdefault("buf", []).append(base)

    def take_table(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """A zeroed local table (width, 10) and its zeroed uint8 flags (width,)."""
        with self._lock:
            free = self._free.get(width)
            if free:
                return free.pop()
        return np.zeros((width, 10)), np.zeros(width, dtype=np.uint8)

    def give_table(self, tab: np.ndarray, flag: np.ndarray) -> None:
        """Return a table from :meth:`take_table`, zeroed again by the kernel that used it."""
        if tab.nbytes <= self.max_bytes:
            with self._lock:
                self._free.setdefault(tab.shape[0], []).append((tab, flag))

    def clear(self) -> None:
        """Drop every kept array."""
        with self._lock:
            self._free.clear()


_SCRATCH = _ScratchPool()


def _chunk_rows(
    idx: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    u: np.ndarray,
    a: np.ndarray,
    wmode: int,
    has_u: bool,
    has_a: bool,
    lo: int,
    hi: int,
    nv: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse partial statistics of one chunk, one row per bin touched, sorted by bin.

    ``idx`` (from :func:`_bin_index`, -1 = dropped) gives each sounding's bin; bins
    ``lo .. hi`` hold the ``nv`` soundings kept (:func:`_valid_range`). A chunk that
    spans few bins is accumulated in one local table. Otherwise the range is cut into
    buckets (:func:`_bucket_shift`): a stable counting sort moves each sounding's values
    into its bucket's run (sequential reads), then each bucket is accumulated in a
    small local table that stays in cache and is emitted in bin order. Random scatter
    into a large grid never happens (DESIGN.md 5.0); work and memory scale with the
    soundings (and the range they span), never with the grid. The soundings of a bin
    are added in input order. Large arrays are allocated by numpy (which asks the
    kernel for huge pages) or reused from :data:`_SCRATCH`, not inside numba: page
    faults of fresh memory otherwise cost more than the accumulation.

    Returns
    -------
    bins : int64 (m,), flat (time bin, cell) index of each row, ascending
    rows : float64 (m, 9), columns n, mean, M2, sum w, sum w x, n_u, sum u, n_a, sum a
    """
    shift = _bucket_shift(hi - lo + 1, nv)
    nb = ((hi - lo) >> shift) + 1
    cap = min(nv, hi - lo + 1)  # at most one row a sounding and one a bin
    bins = np.empty(cap, dtype=np.int64)
    rows = np.empty((cap, _NSTAT))
    width = 1 << shift
    tab, flag = _SCRATCH.take_table(width)
    touched = np.empty(width, dtype=np.int64)
    if nb == 1:
        m = _direct_rows(idx, x, w, u, a, wmode, has_u, has_a, lo, tab, flag, touched, bins, rows)
    else:
        start = np.zeros(nb + 1, dtype=np.int64)
        buf = _SCRATCH.take(5 * nv)
        rec = buf.reshape(nv, 5)
        _bucket_sort(idx, x, w, u, a, wmode, has_u, has_a, lo, shift, start, rec)
        m = _bucket_rows(start, rec, has_u, lo, shift, tab, flag, touched, bins, rows)
        _SCRATCH.give(buf)
    _SCRATCH.give_table(tab, flag)  # zeroed again by the kernel (an error above drops it instead)
    if 4 * m < 3 * cap:  # do not keep a mostly empty work array alive
        return bins[:m].copy(), rows[:m].copy()
    return bins[:m], rows[:m]


@numba.njit(cache=True, nogil=True, inline="always")
def _merge_row(dst, i, src, r):  # pragma: no cover - numba
    """Merge row ``src[r]`` into ``dst[i]`` (Chan, Golub & LeVeque 1979); n of both > 0.

    n = na + nb, delta = mean_b - mean_a, mean = mean_a + delta nb / n,
    M2 = M2a + M2b + delta^2 na nb / n; the other columns are sums.
    """
    na = dst[i, 0]
    nb = src[r, 0]
    n = na + nb
    frac = nb / n
    delta = src[r, 1] - dst[i, 1]
    dst[i, 2] += src[r, 2] + delta * delta * na * frac
    dst[i, 1] += delta * frac
    dst[i, 0] = n
    for c in range(3, 9):
        dst[i, c] += src[r, c]


@numba.njit(cache=True, nogil=True)
def _merge_sorted(bins, rows, starts, out_b, out_r):  # pragma: no cover - numba
    """k-way merge of sorted sparse pieces stored one after another; returns the rows written.

    Piece s is ``bins[starts[s]:starts[s + 1]]`` (and the same rows). Rows of one bin are
    merged in piece order. Linear in the rows (k is small); no grid-sized array.
    """
    k = starts.size - 1
    cur = starts[:-1].copy()
    m = 0
    big = np.int64(2**62)
    while True:
        bmin = big
        for s in range(k):
            if cur[s] < starts[s + 1]:
                bmin = min(bmin, bins[cur[s]])
        if bmin == big:
            break
        first = True
        for s in range(k):
            c = cur[s]
            if c < starts[s + 1] and bins[c] == bmin:
                if first:
                    for col in range(9):
                        out_r[m, col] = rows[c, col]
                    first = False
                else:
                    _merge_row(out_r, m, rows, c)
                cur[s] = c + 1
        out_b[m] = bmin
        m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _merge_into(dst, lo, bins, rows):  # pragma: no cover - numba
    """Merge sorted rows into the dense table ``dst`` (bins ``lo ..``; n = 0 where empty)."""
    for r in range(bins.size):
        j = bins[r] - lo
        if dst[j, 0] == 0.0:
            for col in range(9):
                dst[j, col] = rows[r, col]
        else:
            _merge_row(dst, j, rows, r)


@numba.njit(cache=True, nogil=True)
def _emit_dense(dst, lo, out_b, out_r):  # pragma: no cover - numba
    """The occupied rows of a dense table, in bin order; returns their number."""
    m = 0
    for j in range(dst.shape[0]):
        if dst[j, 0] != 0.0:
            out_b[m] = lo + j
            for col in range(9):
                out_r[m, col] = dst[j, col]
            m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _finalize_block(bins, rows, w0, w1, o_n, o_mean, o_wmean, o_std, o_se, o_u, o_a, ddof):  # pragma: no cover
    """The L3 statistics of flat bins ``w0 .. w1 - 1`` from their sorted partial rows.

    Outputs (w1 - w0,) in ``_OUTPUTS`` order (n int32): mean where n > 0;
    sum(w x)/sum(w) where sum(w) > 0; std = sqrt(M2 / (n - ddof)) and std / sqrt(n)
    where n > ddof; uncertainty and AK means where they have values; n = 0 and NaN in
    bins without rows. Every value is written once.
    """
    nan = np.nan
    p = w0
    for r in range(bins.size + 1):
        b = bins[r] if r < bins.size else w1
        while p < b:
            q = p - w0
            o_n[q] = 0
            o_mean[q] = nan
            o_wmean[q] = nan
            o_std[q] = nan
            o_se[q] = nan
            o_u[q] = nan
            o_a[q] = nan
            p += 1
        if r == bins.size:
            break
        q = b - w0
        n = rows[r, 0]
        o_n[q] = np.int32(n)
        o_mean[q] = rows[r, 1]
        sw = rows[r, 3]
        o_wmean[q] = rows[r, 4] / sw if sw > 0.0 else nan
        if n > ddof:
            std = np.sqrt(max(rows[r, 2], 0.0) / (n - ddof))
            o_std[q] = std
            o_se[q] = std / np.sqrt(n)
        else:
            o_std[q] = nan
            o_se[q] = nan
        o_u[q] = rows[r, 6] / rows[r, 5] if rows[r, 5] > 0.0 else nan
        o_a[q] = rows[r, 8] / rows[r, 7] if rows[r, 7] > 0.0 else nan
        p = b + 1


# ---------------------------------------------------------------------------- blocks and partials
@dataclass(frozen=True)
class _Layout:
    """Blocks of the dense L3 grid: ``tb`` time bins x ``rb`` latitude rows x every column.

    Each block is a contiguous range of flat bins (time bin, row, column), so a sorted
    partial splits into per-block pieces with one ``searchsorted``. Either ``tb == 1``
    (bands of rows of one time bin) or ``rb == ny`` (whole time bins). Partials are
    reduced block by block and the dense grid is built (or written) block by block.
    """

    nt: int
    ny: int
    nx: int
    tb: int
    rb: int

    @classmethod
    def for_grid(cls, nt: int, ny: int, nx: int) -> _Layout:
        """About ``_BLOCK_BINS`` bins a block (more when there would be over ``_MAX_BLOCKS``)."""
        target = max(_BLOCK_BINS, -(-nt * ny * nx // _MAX_BLOCKS))
        if ny * nx >= target and nt <= _MAX_BLOCKS:  # bands of rows within each time bin
            rb = max(1, min(ny, target // nx), -(-ny // max(1, _MAX_BLOCKS // nt)))
            return cls(nt, ny, nx, 1, rb)
        tb = max(1, min(nt, target // (ny * nx)), -(-nt // _MAX_BLOCKS))
        return cls(nt, ny, nx, tb, ny)

    @property
    def nbands(self) -> int:
        return -(-self.ny // self.rb)

    @property
    def nblocks(self) -> int:
        return -(-self.nt // self.tb) * self.nbands

    def block(self, w: int) -> tuple[int, int, int, int]:
        """(first time bin, first row, time bins, rows) of block ``w``."""
        t0, r0 = (w // self.nbands) * self.tb, (w % self.nbands) * self.rb
        return t0, r0, min(self.tb, self.nt - t0), min(self.rb, self.ny - r0)

    def bounds(self) -> np.ndarray:
        """Flat bin where each block starts, and the total (int64, nblocks + 1)."""
        starts = [(t0 * self.ny + r0) * self.nx for t0, r0, _, _ in map(self.block, range(self.nblocks))]
        return np.array([*starts, self.nt * self.ny * self.nx], dtype=np.int64)

    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Dask chunks of the L3 arrays (time, latitude, longitude)."""
        nt, ny, tb, rb = self.nt, self.ny, self.tb, self.rb
        return (
            (tb,) * (nt // tb) + ((nt % tb,) if nt % tb else ()),
            (rb,) * (ny // rb) + ((ny % rb,) if ny % rb else ()),
            (self.nx,),
        )


#: Sorted sparse rows of one block: (bins int64 (k,), rows float64 (k, 9)), or None when empty.
_Piece = tuple[np.ndarray, np.ndarray] | None


class _Partial:
    """Sparse partial statistics of one chunk, split by the blocks of a :class:`_Layout`.

    ``pieces`` maps a block number to ``(bins, rows)``: the ascending flat bins (int64,
    (k,)) of that block holding soundings and their statistics (float64, (k, 9),
    columns of :func:`_chunk_rows`). Only bins with soundings are stored, so memory
    scales with the soundings, never with the grid.
    """

    __slots__ = ("pieces",)

    def __init__(self, pieces: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        self.pieces = pieces

    @classmethod
    def from_rows(cls, bins: np.ndarray, rows: np.ndarray, bounds: np.ndarray) -> _Partial:
        """Split sorted ``bins``/``rows`` at the block ``bounds`` (views, no copy)."""
        if bins.size == 0:
            return cls({})
        first = int(np.searchsorted(bounds, bins[0], "right")) - 1
        last = int(np.searchsorted(bounds, bins[-1], "right")) - 1
        cuts = [0, *np.searchsorted(bins, bounds[first + 1 : last + 1]).tolist(), bins.size]
        return cls(
            {
                first + k: (bins[cuts[k] : cuts[k + 1]], rows[cuts[k] : cuts[k + 1]])
                for k in range(len(cuts) - 1)
                if cuts[k + 1] > cuts[k]
            }
        )

    @property
    def n_rows(self) -> int:
        """Number of occupied bins stored."""
        return sum(b.size for b, _ in self.pieces.values())


def _merge_block(w: int, *items: _Partial | _Piece) -> _Piece:
    """Merge the pieces of block ``w`` in the order given (the *combine* step); linear in their rows.

    ``items`` are chunk partials (their piece of block ``w`` is taken) or pieces of
    block ``w`` merged before; None when there is no sounding in the block.
    """
    pieces = [it.pieces.get(w) if isinstance(it, _Partial) else it for it in items]
    live = [p for p in pieces if p is not None]
    if len(live) <= 1:
        return live[0] if live else None
    total = sum(b.size for b, _ in live)
    lo, hi = min(int(b[0]) for b, _ in live), max(int(b[-1]) for b, _ in live)
    if hi - lo + 1 <= 2 * total:  # dense enough: direct addressing, no comparisons
        dst = np.zeros((hi - lo + 1, _NSTAT))
        for b, r in live:
            _merge_into(dst, lo, b, r)
        m = int(np.count_nonzero(dst[:, 0]))
        out_b, out_r = np.empty(m, dtype=np.int64), np.empty((m, _NSTAT))
        _emit_dense(dst, lo, out_b, out_r)
        return out_b, out_r
    starts = np.cumsum([0] + [b.size for b, _ in live])
    bins, rows = np.concatenate([b for b, _ in live]), np.concatenate([r for _, r in live])
    out_b, out_r = np.empty(total, dtype=np.int64), np.empty((total, _NSTAT))
    m = _merge_sorted(bins, rows, starts, out_b, out_r)
    del bins, rows
    if 4 * m < 3 * total:
        return out_b[:m].copy(), out_r[:m].copy()
    return out_b[:m], out_r[:m]


def _block_stats(piece: _Piece, w: int, layout: _Layout) -> tuple[np.ndarray, ...]:
    """The L3 statistics of block ``w`` from its merged piece (the *finalize* step), ``_OUTPUTS`` order.

    Arrays of the block's shape (time bins, rows, columns); n_soundings int32.
    """
    _SCRATCH.clear()  # every chunk is done when a block is finalized
    t0, r0, nt, nr = layout.block(w)
    shape = (nt, nr, layout.nx)
    outs = _empty_outputs(nt * nr * layout.nx)
    _fill_block(piece, (t0 * layout.ny + r0) * layout.nx, outs)
    return tuple(o.reshape(shape) for o in outs)


def _empty_outputs(size: int) -> list[np.ndarray]:
    return [np.empty(size, dtype=np.int32)] + [np.empty(size) for _ in range(len(_OUTPUTS) - 1)]


def _fill_block(piece: _Piece, start: int, outs: list[np.ndarray]) -> None:
    bins, rows = piece if piece is not None else (np.zeros(0, dtype=np.int64), np.zeros((0, _NSTAT)))
    _finalize_block(bins, rows, start, start + outs[0].size, *outs, float(STD_DDOF))  # type: ignore[call-arg]  # numba dispatcher


def _dense(part: _Partial, layout: _Layout) -> tuple[np.ndarray, ...]:
    """The whole L3 grid of one partial (eager path), written block by block into arrays allocated once."""
    outs = _empty_outputs(layout.nt * layout.ny * layout.nx)
    bounds = layout.bounds()
    for w in range(layout.nblocks):
        piece = part.pieces.pop(w, None)  # our own partial: free it block by block
        _fill_block(piece, int(bounds[w]), [o[bounds[w] : bounds[w + 1]] for o in outs])
    _SCRATCH.clear()
    shape = (layout.nt, layout.ny, layout.nx)
    return tuple(o.reshape(shape) for o in outs)


def _as_f64(x: Any) -> np.ndarray:
    return np.ascontiguousarray(x, dtype="float64").ravel()


def _time_ns(t: Any) -> np.ndarray:
    """Datetimes as int64 nanoseconds since 1970 (NaT stays int64 min)."""
    t = np.asarray(t)
    if t.dtype.kind == "M":
        return np.ascontiguousarray(t.astype("datetime64[ns]", copy=False).view("int64")).ravel()
    return np.ascontiguousarray(t, dtype="int64").ravel()


def _bucket_shift(span: int, nv: int) -> int:
    """log2 of the bucket width of :func:`_chunk_rows` for ``nv`` soundings spanning ``span`` bins.

    One bucket (no sort) while the local table is small, or up to four times larger when
    the bins are crowded (8 soundings a bin or more: the table stays in cache; measured
    2x faster than the sort on a chunk spanning two months of a 1 degree grid). Beyond
    that, buckets of ``2**_BUCKET_SHIFT`` bins, widened so that there are at most
    ``_MAX_BUCKETS``.
    """
    if span <= _DIRECT_SPAN or (span <= 4 * _DIRECT_SPAN and nv >= 8 * span):
        return max(1, int(span - 1).bit_length())
    return max(_BUCKET_SHIFT, int(-(-span // _MAX_BUCKETS) - 1).bit_length())


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
        raise SchemaError(f"latitude ({lat.size}), longitude ({lon.size}) and values ({n}) differ in length")
    for name, arr in (("time", t), ("weights", w), ("uncertainty", u), ("ak_pbl", a)):
        if arr is not None and np.size(arr) != n:
            raise SchemaError(f"{name} has {np.size(arr)} values; expected {n}")
    tt = _time_ns(t) if t is not None else np.zeros(0, dtype="int64")
    _check_size(t_edges.size - 1, (lat_e.size - 1) * (lon_e.size - 1))
    bounds = _Layout.for_grid(t_edges.size - 1, lat_e.size - 1, lon_e.size - 1).bounds()
    dummy = np.zeros(1)
    wmode = _W_GIVEN if w is not None else (_W_FROM_UNC if u is not None else _W_ONE)
    ww = _as_f64(w) if w is not None else dummy
    uu = _as_f64(u) if u is not None else dummy
    aa = _as_f64(a) if a is not None else dummy
    buf = _SCRATCH.take(-(-n // 2))  # the int32 bin of each sounding, in a reused work array
    idx = buf.view(np.int32)[:n]
    _bin_index_into(lat, lon, tt, lat_e, lon_e, t_edges, wrap, idx)
    lo, hi, nv = _valid_range(idx, x)
    if nv == 0:
        _SCRATCH.give(buf)
        return _Partial({})
    bins, rows = _chunk_rows(idx, x, ww, uu, aa, wmode, u is not None, a is not None, int(lo), int(hi), nv)
    _SCRATCH.give(buf)
    return _Partial.from_rows(bins, rows, bounds)


def _check_size(nt: int, ncell: int) -> None:
    nbins = nt * ncell
    if nbins > _MAX_BINS:
        raise SchemaError(
            f"{nt} time bins x {ncell} cells = {nbins} bins is too large a dense L3 grid "
            f"(limit {_MAX_BINS}); use a coarser resolution, a regional bbox or longer time bins"
        )


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
    part = _chunk_partial(_grid_edges(grid), t_edges, lat, lon, values, time, weights, uncertainty, ak_pbl)
    stack = _dense(part, _Layout.for_grid(t_edges.size - 1, *grid.shape))
    return dict(zip(_OUTPUTS, stack, strict=True))


def boundary_layer_ak(
    averaging_kernel: np.ndarray | None,
    pressure_weight: np.ndarray | None,
    pressure: np.ndarray | None,
    surface_pressure: np.ndarray | None = None,
    pbl_pressure_depth: float = DEFAULT_PBL_PRESSURE_DEPTH,
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
        raise SchemaError(f"time_bin {time_bin!r} is not a pandas frequency (e.g. '1D', 'MS', '7D'): {exc}") from None
    edges = pd.date_range(labels[0], periods=labels.size + 1, freq=getattr(labels, "freq", None) or time_bin)
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
    out["surface_pressure"] = ds["surface_pressure"].data if "surface_pressure" in ds.variables else None
    return out


def _sounding_inputs(ds: xr.Dataset) -> dict[str, Any]:
    for name in ("xgas", "latitude", "longitude", "time"):
        if name not in ds.variables:
            raise SchemaError(f"soundings dataset has no variable {name!r}; has {sorted(map(str, ds.variables))}")
        if ds[name].dims != ("sounding",):
            raise SchemaError(f"soundings variable {name!r} has dims {ds[name].dims}; expected ('sounding',)")
    if ds["time"].dtype.kind != "M":
        raise SchemaError(
            f"soundings 'time' has dtype {ds['time'].dtype}; expected datetime64 (open with decode_times=True)"
        )
    out = {k: ds[k].data for k in ("latitude", "longitude", "xgas", "time")}
    out["xgas_uncertainty"] = ds["xgas_uncertainty"].data if "xgas_uncertainty" in ds.variables else None
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
) -> tuple[da.Array, ...]:
    """The graph: chunk, per-block tree of merges, per-block finalize; 7 arrays (nt, ny, nx).

    Each chunk's partial is split into the pieces of the blocks of the L3 grid
    (:class:`_Layout`); each block is reduced by its own tree (``split_every`` pieces
    per merge) and finalized into that block of the dense arrays, which are chunked by
    block. Memory follows the soundings (the sparse pieces) and one block at a time of
    the grid; written with ``to_netcdf``, the grid never exists whole in memory.
    """
    x = da.asarray(inputs["xgas"])
    chunks = x.chunks[0]

    def as_dask(v: Any) -> da.Array | None:
        if v is None or isinstance(v, da.Array):
            return v
        v = np.asarray(v)
        return da.from_array(v, chunks=(chunks,) + ((-1,) * (v.ndim - 1)))

    order = (
        "latitude",
        "longitude",
        "xgas",
        "time",
        "xgas_uncertainty",
        "averaging_kernel",
        "pressure_weight",
        "pressure",
        "surface_pressure",
    )
    cols = _block_lists([as_dask(inputs[k]) for k in order], chunks)
    if inputs["averaging_kernel"] is None:
        cols[5:] = [[None] * len(chunks)] * 4
    edges = _grid_edges(grid)
    layout = _Layout.for_grid(t_edges.size - 1, *grid.shape)
    token = dask.base.tokenize(x.name, t_edges, edges, depth, split_every)
    chunk_fn = dask.delayed(_soundings_partial, pure=True)
    parts = [
        chunk_fn(edges, t_edges, depth, *(c[k] for c in cols), dask_key_name=f"gosat-grid-chunk-{token}-{k}")
        for k in range(len(chunks))
    ]
    merge_fn = dask.delayed(_merge_block, pure=True)
    stats_fn = dask.delayed(_block_stats, pure=True, nout=len(_OUTPUTS))
    blocks: list[Any] = []
    for w in range(layout.nblocks):
        nodes: list[Any] = list(parts)  # the first merges take each chunk's piece of block w
        while len(nodes) > 1:
            nodes = [merge_fn(w, *nodes[i : i + split_every]) for i in range(0, len(nodes), split_every)]
        root = merge_fn(w, *nodes)  # one piece (or None), also with a single chunk
        blocks.append(stats_fn(root, w, layout, dask_key_name=f"gosat-grid-block-{token}-{w}"))
    out = []
    for k, name in enumerate(_OUTPUTS):
        dtype = np.int32 if k == 0 else np.float64
        arrs = [
            da.from_delayed(b[k], shape=(nt, nr, grid.shape[1]), dtype=dtype, name=f"gosat-l3-{name}-{token}-{w}")
            for w, (b, (_, _, nt, nr)) in enumerate(zip(blocks, map(layout.block, range(layout.nblocks))))
        ]
        rows_of = [arrs[i : i + layout.nbands] for i in range(0, len(arrs), layout.nbands)]
        out.append(da.concatenate([da.concatenate(r, axis=1) for r in rows_of], axis=0))
    return tuple(out)


def _eager_stack(inputs: dict[str, Any], grid: GridSpec, t_edges: np.ndarray, depth: float) -> tuple[np.ndarray, ...]:
    ak = boundary_layer_ak(
        inputs["averaging_kernel"],
        inputs["pressure_weight"],
        inputs["pressure"],
        inputs["surface_pressure"],
        depth,
    )
    part = _chunk_partial(
        _grid_edges(grid),
        t_edges,
        inputs["latitude"],
        inputs["longitude"],
        inputs["xgas"],
        inputs["time"],
        None,
        inputs["xgas_uncertainty"],
        ak,
    )
    return _dense(part, _Layout.for_grid(t_edges.size - 1, *grid.shape))


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
        mm = da.map_blocks(_minmax_block, time, chunks=((2,) * nb,), dtype="int64", name="gosat-time-extent")
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
    """The L3 dataset around ``stack`` (7 arrays (nt, ny, nx), ``_OUTPUTS`` order), built in one constructor call.

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
    data_vars: dict[str, Any] = {str(name): grid_ds[name].variable for name in grid_ds.data_vars}
    data_vars["time_bounds"] = time_bounds
    for k, name in enumerate(_OUTPUTS):
        data = stack[k]
        if name == "n_soundings":
            data = data if data.dtype == np.int32 else data.astype("int32")
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
    pbl_pressure_depth: float = DEFAULT_PBL_PRESSURE_DEPTH,
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
        (sample std, standard error of the unweighted mean). Lazy results are
        chunked in blocks of the grid (one time bin and a band of latitude rows,
        or whole time bins on small grids), each computed from its own reduction:
        ``to_netcdf`` writes the grid block by block, never whole in memory.
        (Computing it into memory holds it twice for a moment: dask copies every
        array it returns.)

    Examples
    --------
    >>> from gosat_pipeline.testing import make_soundings
    >>> l3 = grid_soundings(make_soundings(500, "CH4"), 10.0, time_bin=None)
    >>> int(l3.n_soundings.sum()), l3.xgas_mean.attrs["units"]
    (500, 'ppb')
    """
    gas = str(soundings.attrs.get("gas", "")).upper()
    if gas not in GASES:
        raise SchemaError(f"soundings attribute 'gas' is {soundings.attrs.get('gas')!r}; expected one of {GASES}")
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
    stack: tuple[Any, ...]
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
        attrs["n_input_soundings"],
        gas,
        *grid.shape,
        edges.size - 1,
        "lazy" if lazy else "eager",
    )
    return _build_dataset(stack, grid, edges, gas, attrs)
