"""Emission periods and background windows of the state vector, from the L3 time bins."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.transport.observations import period_label

__all__ = ["period_edges", "periods", "windows"]


def period_edges(start: object, end: object, freq: str | None) -> pd.DatetimeIndex:
    """Edges of the periods a frequency names inside ``[start, end)``.

    The first period starts at ``start`` and the last ends at ``end``; in between, the
    edges are the dates of ``pandas.date_range(start, end, freq=freq)``: ``6MS`` from
    2020-01-01 gives 2020-01-01, 2020-07-01, 2021-01-01 (two half-years); ``YS`` from
    2020-03-01 to 2021-06-01 gives a first period of ten months and a second of five.

    Parameters
    ----------
    start, end : timestamp-like
    freq : str or None
        Any pandas frequency ("MS", "QS", "6MS", "2QS", "YS", "10D" ...); None: one period.

    Raises
    ------
    SchemaError
        ``freq`` is not a pandas frequency.
    """
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    if freq is None:
        return pd.DatetimeIndex([s, e])
    try:
        inner = pd.date_range(s, e, freq=freq)
    except ValueError as exc:
        raise SchemaError(f"{freq!r} is not a pandas frequency (e.g. 'MS', 'QS', '6MS', 'YS'): {exc}") from None
    mid = [t for t in inner if s < t < e]
    return pd.DatetimeIndex([s, *mid, e])


def _assign(starts: np.ndarray, ends: np.ndarray, edges: pd.DatetimeIndex) -> np.ndarray:
    """Index of the interval of ``edges`` holding each bin, -1 where a bin straddles an edge."""
    e = edges.values
    k = np.searchsorted(e, starts, side="right") - 1
    k = np.clip(k, 0, e.size - 2)
    inside = (starts >= e[k]) & (ends <= e[k + 1])
    return np.where(inside, k, -1)


def _by_edges(
    starts: np.ndarray, ends: np.ndarray, edges: pd.DatetimeIndex, what: str
) -> tuple[np.ndarray, list[str], np.ndarray]:
    st, en = np.asarray(starts, "datetime64[ns]"), np.asarray(ends, "datetime64[ns]")
    k = _assign(st, en, edges)
    if np.any(k < 0):
        bad = int(np.flatnonzero(k < 0)[0])
        raise SchemaError(
            f"{what}: the time bin {period_label(starts[bad], ends[bad])} straddles a period boundary "
            f"({[str(t.date()) for t in edges[1:-1]][:6]}); choose a split that is a multiple of period.time_bin"
        )
    used = np.unique(k)
    remap = {int(old): new for new, old in enumerate(used)}
    index = np.array([remap[int(x)] for x in k], dtype="int64")
    ev = edges.values
    bounds = np.stack([ev[used], ev[used + 1]], axis=1)
    return index, [period_label(a, b) for a, b in bounds], bounds


def periods(starts: np.ndarray, ends: np.ndarray, split: str | None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Emission period of every time bin.

    Parameters
    ----------
    starts, ends : array (B,) datetime64
        The L3 time bins (end exclusive), sorted.
    split : str or None
        Pandas frequency of the emission periods (:func:`period_edges`); None: one period
        for the whole record.

    Returns
    -------
    (index, labels, bounds)
        Period index of each bin, ISO 8601 labels of the periods that hold bins, and the
        (P, 2) start/end of those periods.

    Raises
    ------
    SchemaError
        A time bin straddles a period boundary (choose a split that is a multiple of the
        time bin).
    """
    if len(starts) == 0:
        return np.zeros(0, dtype="int64"), ["all"], np.zeros((1, 2), dtype="datetime64[ns]")
    edges = period_edges(pd.DatetimeIndex(starts).min(), pd.DatetimeIndex(ends).max(), split)
    return _by_edges(starts, ends, edges, f"period.split {split!r}")


def windows(starts: np.ndarray, ends: np.ndarray, freq: str | None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Background / inflow window of every time bin.

    Like :func:`periods`, but an edge that a bin straddles is dropped (the two windows
    merge) instead of raising; ``freq=None`` gives one window per bin.
    """
    if len(starts) == 0:
        return np.zeros(0, dtype="int64"), [], np.zeros((0, 2), dtype="datetime64[ns]")
    st, en = np.asarray(starts, "datetime64[ns]"), np.asarray(ends, "datetime64[ns]")
    if freq is None:
        bounds = np.stack([st, en], axis=1)
        return np.arange(st.size), [period_label(a, b) for a, b in bounds], bounds
    edges = period_edges(pd.DatetimeIndex(starts).min(), pd.DatetimeIndex(ends).max(), freq)
    keep = [t for t in edges[1:-1].values if not np.any((st < t) & (t < en))]
    return _by_edges(starts, ends, pd.DatetimeIndex([edges[0], *keep, edges[-1]]), "windows")
