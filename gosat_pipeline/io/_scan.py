"""Plan: detect each file's product, scan it (checks and the soundings to read) and drop duplicates.

The first half of :func:`gosat_pipeline.io.open_granules`: every fault of a file
surfaces here (where a batch can skip and record it), and a sounding seen twice is
kept once. Cheap: readers read only 1-D variables while scanning.
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dask
import dask.base
import dask.local
import dask.threaded
import numba
import numpy as np

from gosat_pipeline.errors import GranuleError, UnknownFormatError
from gosat_pipeline.io._common import summarise_file
from gosat_pipeline.io._registry import (
    GranulePlan,
    GranuleReader,
    available_readers,
    get_reader,
)

logger = logging.getLogger(__name__)


def list_formats() -> dict[str, str]:
    """Installed readers: name -> one-line description (built-in, then plug-ins)."""
    return {name: r.description for name, r in available_readers().items()}


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the reader for ``path``: by file name first, then by content.

    Raises
    ------
    GranuleError
        The file is missing, zero-byte, truncated or corrupt (content detection).
    UnknownFormatError
        No reader recognises the file; the message lists the installed readers.
    """
    p = str(path)
    readers = available_readers()
    by_name = [n for n, r in readers.items() if r.guess_can_open(p)]
    if len(by_name) == 1:
        return by_name[0]
    summary = summarise_file(p)
    candidates = by_name or list(readers)
    for name in candidates:
        if readers[name].sniff(summary):
            return name
    raise UnknownFormatError(
        p, f"no reader recognised {Path(p).name!r} by name or content; installed: {sorted(readers)}; pass format="
    )


def _expand(paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    items = [paths_or_glob] if isinstance(paths_or_glob, (str, os.PathLike)) else list(paths_or_glob)
    out: list[str] = []
    for item in items:
        s = str(item)
        if isinstance(item, str) and _glob.has_magic(s):
            hits = sorted(_glob.glob(s))
            if not hits:
                logger.warning("no file matches %r", s)
            out.extend(hits)
        else:
            out.append(s)
    return out


def _scan_one(path: str, *, gas: str | None, fmt: str | None, screen: bool) -> tuple[GranuleReader, GranulePlan]:
    reader = get_reader(fmt or detect_format(path), path)
    return reader, _scan_with(reader, path, gas, screen)


def _scan_with(reader: GranuleReader, path: str, gas: str | None, screen: bool) -> GranulePlan:
    try:
        return reader.scan(path, gas=gas, screen=screen)
    except GranuleError:
        raise
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError) as exc:
        raise GranuleError(path, f"reader {reader.name} failed: {type(exc).__name__}: {exc}") from exc


_ScanResult = tuple[GranuleReader | None, GranulePlan | None, tuple[str, str, str] | None]


def _safe_scan(path: str, reader: GranuleReader | None, gas: str | None, screen: bool) -> _ScanResult:
    """Scan one file, returning the error as data (exceptions with custom ``__init__`` do not pickle)."""
    try:
        if reader is None:
            reader = get_reader(detect_format(path), path)
        return reader, _scan_with(reader, path, gas, screen), None
    except GranuleError as exc:
        return None, None, (type(exc).__name__, exc.path, exc.reason)


def _scan_all(paths: list[str], gas: str | None, fmt: str | None, screen: bool) -> list[_ScanResult]:
    """Scan every file; as dask tasks when the active scheduler runs other processes.

    Readers are resolved here by file name (cheap, and it sees readers registered at
    run time); content detection, when needed, runs inside the task.
    """
    readers = available_readers()
    if fmt is not None and fmt not in readers:
        reason = f"unknown format {fmt!r}; installed readers: {sorted(readers)}"
        return [(None, None, ("GranuleError", p, reason)) for p in paths]
    resolved: list[GranuleReader | None] = []
    for p in paths:
        if fmt is not None:
            resolved.append(readers[fmt])
            continue
        by_name = [r for r in readers.values() if r.guess_can_open(p)]
        resolved.append(by_name[0] if len(by_name) == 1 else None)
    sched = dask.base.get_scheduler()
    if len(paths) == 1 or sched is None or sched in (dask.local.get_sync, dask.threaded.get):
        # in-process: the netCDF/HDF5 lock serialises threads anyway, so a plain loop is cheapest
        return [_safe_scan(p, r, gas, screen) for p, r in zip(paths, resolved)]
    # a few tasks per worker thread, each scanning a run of files: one task per file costs more in
    # scheduling and messages than scanning a small granule
    per_task = -(-len(paths) // (2 * _threads(sched)))
    batches = [list(zip(paths[i : i + per_task], resolved[i : i + per_task])) for i in range(0, len(paths), per_task)]
    tasks = [dask.delayed(_scan_batch, pure=False)(b, gas, screen) for b in batches]
    return [res for batch in dask.compute(*tasks) for res in batch]


def _scan_batch(batch: list[tuple[str, GranuleReader | None]], gas: str | None, screen: bool) -> list[_ScanResult]:
    return [_safe_scan(p, r, gas, screen) for p, r in batch]


def _threads(sched: Any) -> int:
    """Worker threads behind a scheduler's ``get`` (a distributed Client's: its cluster's), else the CPUs."""
    client = getattr(sched, "__self__", None)
    try:
        return max(1, sum(client.nthreads().values()))  # type: ignore[union-attr]
    except Exception:  # not a distributed client, or it cannot tell
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------- duplicate check
_KEY_TAGS = {"int": b"i", "rows": b"r", "text": b"t"}


def sounding_keys(ids: Any) -> np.ndarray:
    """Canonical duplicate-check keys of a product's sounding identifiers, as fixed-width bytes.

    Parameters
    ----------
    ids : array_like
        :attr:`GranulePlan.ids`: integers (n,), integer rows (n, k) such as TROPOMI's
        (time, latitude bits, longitude bits), or text (bytes, str or objects).

    Returns
    -------
    numpy.ndarray, dtype ``S``, (n,)
        A kind tag (integer, row or text) followed by the raw bytes of the integer(s)
        or the UTF-8 text, so that equal identifiers give equal keys whatever the file's
        storage (``S`` or ``U`` text, int32 or int64) and identifiers of different kinds
        never match.
    """
    a = np.asarray(ids)
    n = a.shape[0] if a.ndim else 0
    if a.dtype.kind in "iu" and a.ndim in (1, 2):
        raw = np.ascontiguousarray(a.astype(np.int64).reshape(n, -1)).view(np.uint8).reshape(n, -1)
        tag = _KEY_TAGS["int" if a.ndim == 1 else "rows"]
    elif a.ndim == 1:
        if a.dtype.kind == "U":
            text = np.char.encode(a, "utf-8")
        elif a.dtype.kind == "S":
            text = a
        else:  # objects: str or bytes
            text = np.array([v if isinstance(v, bytes) else str(v).encode("utf-8") for v in a.tolist()], dtype="S")
        text = text if text.itemsize else text.astype("S1")
        raw = np.ascontiguousarray(text).view(np.uint8).reshape(n, text.itemsize)
        tag = _KEY_TAGS["text"]
    else:
        raise GranuleError(
            "<ids>",
            f"sounding identifiers of shape {a.shape} and dtype {a.dtype} are not "
            "supported (integers, integer rows or text)",
        )
    out = np.empty((n, raw.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = tag[0]
    out[:, 1:] = raw
    return out.view(f"S{out.shape[1]}").ravel()


@numba.njit(cache=True, nogil=True)
def _fnv_hashes(raw):  # pragma: no cover - numba
    """64-bit FNV-1a of each row of ``raw`` (uint8, (n, w)) without its trailing NUL bytes, then fmix64."""
    n, w = raw.shape
    out = np.empty(n, dtype=np.uint64)
    prime = np.uint64(1099511628211)
    for i in range(n):
        end = w
        while end > 0 and raw[i, end - 1] == 0:
            end -= 1
        h = np.uint64(14695981039346656037)
        for j in range(end):
            h = (h ^ np.uint64(raw[i, j])) * prime
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
        out[i] = h
    return out


def key_hashes(keys: np.ndarray) -> np.ndarray:
    """64-bit hash (uint64) of each key of :func:`sounding_keys` (equal keys, equal hashes).

    A hash only proposes duplicates: :func:`first_occurrences` confirms them on the keys.
    """
    keys = np.ascontiguousarray(keys)
    if keys.size == 0:
        return np.zeros(0, dtype=np.uint64)
    return _fnv_hashes(keys.view(np.uint8).reshape(keys.size, keys.itemsize))


def first_occurrences(hashes: np.ndarray, key_of: Any) -> np.ndarray:
    """Position of the first sounding with the same key, for every sounding (in input order).

    Parameters
    ----------
    hashes : uint64 (n,)
        :func:`key_hashes` of the soundings, in input order.
    key_of : callable
        ``key_of(positions) -> S array``: the keys at those positions; called only for
        the few soundings whose hash repeats, to confirm each duplicate exactly (a hash
        collision is never taken for a duplicate).

    Returns
    -------
    int64 (n,)
        ``first[i] == i`` for a first occurrence, else the position of the earlier
        sounding with the same key. Cost O(n log n) (one sort of the hashes), memory
        16 bytes a sounding.
    """
    n = hashes.size
    first = np.arange(n, dtype=np.int64)
    if n < 2:
        return first
    order = np.argsort(hashes, kind="stable")  # equal hashes stay in input order
    sh = hashes[order]
    rep = np.flatnonzero(sh[1:] == sh[:-1]) + 1  # sorted positions whose hash equals the previous one
    if rep.size == 0:
        return first
    starts = np.unique(np.concatenate([rep - 1, rep]))
    runs = np.split(starts, np.flatnonzero(np.diff(starts) > 1) + 1)  # consecutive sorted positions per hash
    cand = order[starts]
    keys = dict(zip(cand.tolist(), key_of(cand).tolist(), strict=True))
    for run in runs:
        seen: dict[bytes, int] = {}
        for pos in order[run].tolist():  # ascending input positions within a run
            first[pos] = seen.setdefault(keys[pos], pos)
    return first


def _drop_duplicates(
    parts: list[tuple[GranuleReader, GranulePlan]],
) -> tuple[list[tuple[GranuleReader, GranulePlan]], list[dict[str, Any]], list[dict[str, str]], list[np.ndarray]]:
    """Keep the first sounding of each repeated ``sounding_id`` (in input order), drop the others.

    The same sounding in two files (an overlapping download, a product delivered twice
    under two names) must count once. Files without identifiers are not compared. The
    check hashes the keys (:func:`sounding_keys`, :func:`key_hashes`) and confirms
    repeated hashes on the keys themselves: O(n log n), 16 bytes a sounding.

    Returns
    -------
    parts : the plans narrowed to first occurrences (files left empty removed)
    records : one ``{"path", "n_duplicates", "n_kept", "duplicates_of"}`` per file that lost soundings
    skipped : ``{"path", "reason"}`` of files whose every sounding was a duplicate
    keys : the keys (:func:`sounding_keys`) of the soundings kept, per part returned (empty
        for a file without identifiers)
    """
    with_ids = [k for k, (_, p) in enumerate(parts) if p.ids is not None and p.n > 0]
    keys_of = {k: sounding_keys(parts[k][1].ids) for k in with_ids}
    if not with_ids:
        return parts, [], [], [np.zeros(0, dtype="S1") for _ in parts]
    plans = [parts[k][1] for k in with_ids]
    bounds = np.concatenate([[0], np.cumsum([p.n for p in plans])])
    hashes = np.concatenate([key_hashes(keys_of[k]) for k in with_ids])

    def key_at(pos: np.ndarray) -> np.ndarray:
        owner = np.searchsorted(bounds, pos, "right") - 1
        return np.array([keys_of[with_ids[o]][p - bounds[o]] for o, p in zip(owner, pos, strict=True)])

    first = first_occurrences(hashes, key_at)
    keep = first == np.arange(first.size)
    out: list[Any] = list(parts)
    out_keys: list[Any] = [keys_of.get(k, np.zeros(0, dtype="S1")) for k in range(len(parts))]
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for j, k in enumerate(with_ids):
        mine = keep[bounds[j] : bounds[j + 1]]
        if mine.all():
            continue
        plan = plans[j]
        dup = np.flatnonzero(~mine) + bounds[j]
        owners = np.searchsorted(bounds, first[dup], "right") - 1
        sources = sorted({plans[i].path for i in owners.tolist()})
        records.append(
            {"path": plan.path, "n_duplicates": int(dup.size), "n_kept": int(mine.sum()), "duplicates_of": sources}
        )
        if not mine.any():
            skipped.append(
                {
                    "path": plan.path,
                    "reason": f"all {plan.n} soundings duplicate sounding_id values already read from {sources}",
                }
            )
            out[k] = None
        else:
            out[k] = (parts[k][0], dataclasses.replace(plan, index=plan.index[mine], ids=plan.ids[mine]))
            out_keys[k] = out_keys[k][mine]
    live = [k for k in range(len(parts)) if out[k] is not None]
    return [out[k] for k in live], records, skipped, [out_keys[k] for k in live]


def _scan_checked(
    paths: list[str], want: str | None, format: str | None, screen: bool, errors: str
) -> tuple[list[tuple[GranuleReader, GranulePlan]], list[dict[str, str]]]:
    """Scan every file; skip (and record) or raise on bad ones, other gases and other level counts."""
    parts: list[tuple[GranuleReader, GranulePlan]] = []
    skipped: list[dict[str, str]] = []
    for reader, plan, err in _scan_all(paths, want, format, screen):
        try:
            if err is not None:
                cls = UnknownFormatError if err[0] == "UnknownFormatError" else GranuleError
                raise cls(err[1], err[2])
            assert reader is not None and plan is not None
            if want is not None and plan.gas != want:
                raise GranuleError(plan.path, f"file holds {plan.gas}, but the batch is {want}")
            if parts and plan.n_levels != parts[0][1].n_levels and plan.n_levels and parts[0][1].n_levels:
                raise GranuleError(plan.path, f"has {plan.n_levels} levels; earlier files have {parts[0][1].n_levels}")
        except GranuleError as exc:
            if errors == "raise":
                raise
            warnings.warn(f"skipping {exc.path}: {exc.reason}", stacklevel=4)
            logger.warning("skipping %s: %s", exc.path, exc.reason)
            skipped.append({"path": exc.path, "reason": exc.reason})
            continue
        want = want or plan.gas
        parts.append((reader, plan))
    return parts, skipped
