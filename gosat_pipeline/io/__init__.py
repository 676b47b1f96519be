"""INGEST: L2 granules of any supported product -> one canonical soundings Dataset.

One reader per product (``list_formats()``), chosen by file name, then by content, or
forced with ``format=``. Third-party readers plug in through the entry-point group
``gosat_pipeline.readers`` or :func:`register_reader` (see :mod:`._registry` for the
contract). Every reader returns the canonical schema of DESIGN.md section 4: dims
``sounding`` and ``level``; level arrays **surface first** whatever the file order;
every fill convention as NaN; ``xgas`` in ppm (CO2) or ppb (CH4); ``time`` UTC
datetime64[ns]; longitude in [-180, 180); ``quality_flag`` int8 with 0 = good;
attrs ``gas``, ``product``, ``product_version``, ``reader``. :func:`open_granules` adds
the file of each sounding as ``file_index`` (int32) into the file table ``granule_path``
(dims ``granule``), and ``source_file`` decoded from them (lazily, per chunk).

:func:`open_granules` is lazy: each file is checked and planned at open time (1-D
variables only) and read inside one dask task when the data are computed. Bad files
are skipped and recorded (``errors="skip"``) or raise (``errors="raise"``).

Units: each reader applies the units of its product's documentation (L2_FORMATS.md),
not the file's ``units`` attributes, which are wrong in released CCI files; a missing
or odd attribute therefore changes nothing. NIES HDF5 products read their ``unit``
attribute (table default when absent) and an unknown unit is an error. Whatever the
product, a file whose median gas value is not plausible in canonical units (ppm read
as ppb, a mole fraction) is an error, and so are missing or wrong time units.
Longitudes outside [-180, 360] are not wrapped but set to NaN, for the quality filter
to drop and count.
"""

from __future__ import annotations

import dataclasses
import glob as _glob
import itertools
import json
import logging
import math
import operator
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.local
import dask.threaded
import numba
import numpy as np
import pandas as pd
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from gosat_pipeline.errors import GranuleError, UnknownFormatError
from gosat_pipeline.io._common import IO_LOCK, NcTableReader, close_cached, summarise_file
from gosat_pipeline.io._layout import TRANSFORMS, ReaderLayout, VarSpec
from gosat_pipeline.io._registry import (
    ENTRY_POINT_GROUP,
    FileSummary,
    GranulePlan,
    GranuleReader,
    available_readers,
    get_reader,
    register_reader,
    unregister_reader,
)
from gosat_pipeline.schema import LEVEL_DIM, LEVEL_VARIABLES, SOUNDING_DIM, cf_attrs, gas_units

__all__ = [
    "DEFAULT_CHUNK_SOUNDINGS",
    "ENTRY_POINT_GROUP",
    "FILE_INDEX",
    "GRANULE_DIM",
    "GRANULE_PATH",
    "FileSummary",
    "GroupRead",
    "decode_source_file",
    "first_occurrences",
    "key_hashes",
    "read_granule_group",
    "sounding_keys",
    "close_cached",
    "GranulePlan",
    "GranuleReader",
    "NcTableReader",
    "ReaderLayout",
    "TRANSFORMS",
    "VarSpec",
    "available_readers",
    "get_reader",
    "detect_format",
    "inspect_granule",
    "list_formats",
    "open_granule",
    "open_granules",
    "register_reader",
    "unregister_reader",
]

logger = logging.getLogger(__name__)

_COORDS = ("time", "latitude", "longitude")

#: Per-sounding index into the file table :data:`GRANULE_PATH` (int32; dims ``sounding``).
FILE_INDEX = "file_index"
#: The file table: path of each granule read, in input order (dims :data:`GRANULE_DIM`).
GRANULE_PATH = "granule_path"
GRANULE_DIM = "granule"

#: Default size of a chunk of :func:`open_granules` (soundings); consecutive files are grouped up to it.
DEFAULT_CHUNK_SOUNDINGS = 200_000


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
    raise UnknownFormatError(p, f"no reader recognised {Path(p).name!r} by name or content; "
                                f"installed: {sorted(readers)}; pass format=")  # fmt: skip


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
    batches = [list(zip(paths[i:i + per_task], resolved[i:i + per_task])) for i in range(0, len(paths), per_task)]
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


_READ_FAULTS = (OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError, AttributeError)


def _read_task(reader: GranuleReader, plan: GranulePlan, bias_corrected: bool) -> dict[str, np.ndarray]:
    try:
        with IO_LOCK:
            out = reader.read(plan, bias_corrected=bias_corrected)
            close_cached(plan.path)  # read once per compute: free the slot for a file still to be read
    except GranuleError:
        raise
    except _READ_FAULTS as exc:  # a fault scan() did not catch: still name the file, never a bare traceback
        raise GranuleError(plan.path, f"reader {reader.name} failed while reading (after a successful scan): "
                                      f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
    return out


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
        raise GranuleError("<ids>", f"sounding identifiers of shape {a.shape} and dtype {a.dtype} are not "
                                    "supported (integers, integer rows or text)")  # fmt: skip
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
        records.append({"path": plan.path, "n_duplicates": int(dup.size), "n_kept": int(mine.sum()),
                        "duplicates_of": sources})  # fmt: skip
        if not mine.any():
            skipped.append({"path": plan.path, "reason": f"all {plan.n} soundings duplicate sounding_id values "
                                                         f"already read from {sources}"})  # fmt: skip
            out[k] = None
        else:
            out[k] = (parts[k][0], dataclasses.replace(plan, index=plan.index[mine], ids=plan.ids[mine]))
            out_keys[k] = out_keys[k][mine]
    live = [k for k in range(len(parts)) if out[k] is not None]
    return [out[k] for k in live], records, skipped, [out_keys[k] for k in live]


def _read_group(
    group: list[tuple[GranuleReader, GranulePlan, int]], bias_corrected: bool, variables: dict[str, str],
    n_levels: int,
) -> dict[str, np.ndarray]:
    """Read consecutive files and concatenate them per variable (one task of the graph).

    Each item is (reader, plan, file number); ``file_index`` gets the file number.
    """
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in variables}
    for reader, plan, file_no in group:
        d = _read_task(reader, plan, bias_corrected)
        d[FILE_INDEX] = np.full(plan.n, file_no, dtype=np.int32)
        for name, dtype in variables.items():
            shape = (plan.n, n_levels) if name in LEVEL_VARIABLES else (plan.n,)
            pieces[name].append(np.asarray(d[name]).astype(dtype, copy=False) if name in d else _fill(dtype, shape))
    return {k: v[0] if len(v) == 1 else np.concatenate(v, axis=0) for k, v in pieces.items()}


def _groups(live: list[tuple[GranuleReader, GranulePlan]], chunk: int | None) -> list[list[Any]]:
    """Consecutive files in groups of at most ``chunk`` soundings, as even as the files allow.

    The fewest groups ``g`` whose even split (each file goes to the group holding the
    middle of its soundings) keeps every group within ``chunk``: filling groups up to
    ``chunk`` would leave a small last one, an idle worker while the others read.
    When no even split fits (very uneven file sizes), groups are filled up to
    ``chunk``. ``chunk`` 0 or None, or a file larger than ``chunk`` (large swaths,
    rechunked afterwards): one file per group.
    """
    sizes = np.array([p.n for _, p in live], dtype=np.float64)
    if not chunk or chunk < 0 or not live or sizes.max() > chunk:
        return [[item] for item in live]
    mids = np.cumsum(sizes) - sizes / 2.0
    total = float(sizes.sum())
    owner = np.zeros(len(live), dtype=np.int64)
    for g in range(min(max(1, math.ceil(total / chunk)), len(live)), len(live) + 1):
        owner = np.minimum((mids * g / total).astype(np.int64), g - 1) if total > 0 else owner
        if np.bincount(owner, weights=sizes, minlength=g).max() <= chunk:
            break
    else:  # no even split fits (uneven file sizes): fill each group up to chunk
        owner = np.empty(len(live), dtype=np.int64)
        k, count = 0, 0.0
        for i, n in enumerate(sizes):
            if count and count + n > chunk:
                k, count = k + 1, 0.0
            owner[i], count = k, count + n
    return [[item for item, _ in run] for _, run in itertools.groupby(zip(live, owner), key=lambda t: t[1])]


def _fill(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    kind = np.dtype(dtype).kind
    if kind == "M":
        return np.full(shape, np.datetime64("NaT"), dtype=dtype)
    if kind == "f":
        return np.full(shape, np.nan, dtype=dtype)
    if kind == "O":
        return np.full(shape, "", dtype=object)
    return np.full(shape, -1, dtype=dtype)


def _lazy_arrays(
    parts: list[tuple[GranuleReader, GranulePlan]], variables: dict[str, str], n_levels: int, bias_corrected: bool,
    chunk: int | None,
) -> dict[str, da.Array]:
    """One dask array per variable; one read task per group of files feeds every variable.

    The graph is written by hand (as xarray's backends do): building it through
    ``dask.delayed`` + ``concatenate`` costs more than reading a small granule.
    """
    variables = {**variables, FILE_INDEX: "int32"}
    live = [(r, p) for r, p in parts if p.n > 0]
    numbers = {id(p): k for k, (_, p) in enumerate(parts)}
    groups = [[(r, p, numbers[id(p)]) for r, p in g] for g in _groups(live, chunk)]
    token = tokenize([(p.path, p.n, p.n_total, r.name) for r, p in parts], bias_corrected, sorted(variables), chunk)
    read_name = f"read-granules-{token}"
    read_layer: dict[Any, Any] = {}
    for i, group in enumerate(groups):
        if all(p.variables for _, p, _ in group):
            read_layer[(read_name, i)] = (_read_group, group, bias_corrected, variables, n_levels)
        else:  # a plug-in without a declared variable list: read now
            read_layer[(read_name, i)] = _read_group(group, bias_corrected, variables, n_levels)
    sizes = tuple(sum(p.n for _, p, _ in g) for g in groups)
    out: dict[str, da.Array] = {}
    for name, dtype in variables.items():
        level = name in LEVEL_VARIABLES
        if not live:
            out[name] = da.from_array(_fill(dtype, (0, n_levels) if level else (0,)), chunks=-1)
            continue
        vname = f"{name}-{token}"
        layer = {((vname, i, 0) if level else (vname, i)): (operator.getitem, (read_name, i), name)
                 for i in range(len(groups))}  # fmt: skip
        graph = HighLevelGraph({read_name: read_layer, vname: layer}, {read_name: set(), vname: {read_name}})
        chunks = (sizes, (n_levels,)) if level else (sizes,)
        out[name] = da.Array(graph, vname, chunks, dtype=np.dtype(dtype))
    return out


def _assemble(
    parts: list[tuple[GranuleReader, GranulePlan]], gas: str, bias_corrected: bool, screen: bool,
    chunk: int | None = None,
) -> xr.Dataset:
    variables: dict[str, str] = {}
    for _, plan in parts:
        for k, v in plan.variables.items():
            variables.setdefault(k, v)
    if not variables:  # plug-in readers without declared variables: take the first file's arrays
        first = _read_task(parts[0][0], parts[0][1], bias_corrected)
        variables = {k: str(np.asarray(v).dtype) for k, v in first.items() if k not in (FILE_INDEX, "source_file")}
    variables.pop("source_file", None)  # decoded from the file index below
    n_levels = max((p.n_levels for _, p in parts), default=0)
    arrays = _lazy_arrays(parts, variables, n_levels, bias_corrected, chunk)
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for name, arr in arrays.items():
        dims = (SOUNDING_DIM, LEVEL_DIM) if name in LEVEL_VARIABLES else (SOUNDING_DIM,)
        attrs = _var_attrs(name, gas)
        (coords if name in _COORDS else data_vars)[name] = (dims, arr, attrs)
    paths = [p.path for _, p in parts]
    data_vars[GRANULE_PATH] = (GRANULE_DIM, da.from_array(np.array(paths, dtype=object), chunks=-1),
                               _var_attrs(GRANULE_PATH, gas))  # fmt: skip
    data_vars["source_file"] = (SOUNDING_DIM, decode_source_file(arrays[FILE_INDEX], paths),
                                _var_attrs("source_file", gas))  # fmt: skip
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(_global_attrs(parts, gas, bias_corrected, screen))
    return ds


def decode_source_file(file_index: Any, paths: list[str]) -> Any:
    """Per-sounding granule paths from ``file_index`` and the file table (lazy for a dask index).

    A convenience for notebooks; files keep the integer index and the table (per-sounding
    text costs about 100 bytes a sounding to write and to read back).
    """
    table = np.array([*paths, ""], dtype=object)  # -1 (no file) decodes to ""
    if isinstance(file_index, da.Array):
        return file_index.map_blocks(_take, table, dtype=object)
    return _take(np.asarray(file_index), table)


def _take(index: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[index]


def _var_attrs(name: str, gas: str) -> dict[str, Any]:
    if name == "time":
        return {"standard_name": "time", "long_name": "time of the sounding (UTC)"}
    if name == "latitude":
        return {"units": "degrees_north", "standard_name": "latitude"}
    if name == "longitude":
        return {"units": "degrees_east", "standard_name": "longitude"}
    try:
        return cf_attrs(name, gas)
    except Exception:  # a plug-in's extra variable has no canonical attributes
        return {}


def _unique_join(values: Iterable[str]) -> str:
    seen: list[str] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return "; ".join(seen)


#: plan attributes that are not copied into the dataset's (the three named ones are joined above).
_PLAN_ATTRS_HANDLED = ("product", "product_version", "reader")


def _merge_plan_attrs(plans: list[GranulePlan]) -> dict[str, str]:
    """Reader-specific plan attributes over a batch, as netCDF-safe strings.

    Text values are joined (unique, in order); list values (e.g.
    ``components_left_out``) become one ``"; "``-separated string with, when not every
    file has the item, ``(in k of n files)``.
    """
    n = len(plans)
    text: dict[str, list[str]] = {}
    items: dict[str, dict[str, int]] = {}
    for p in plans:
        for k, v in p.attrs.items():
            if k in _PLAN_ATTRS_HANDLED:
                continue
            if isinstance(v, (list, tuple)):
                seen = items.setdefault(k, {})
                for item in dict.fromkeys(str(x) for x in v):
                    seen[item] = seen.get(item, 0) + 1
            elif v is not None and str(v) != "":
                text.setdefault(k, []).append(str(v))
    out = {k: _unique_join(v) for k, v in text.items()}
    for k, seen in items.items():
        out[k] = "; ".join(item if c == n else f"{item} (in {c} of {n} files)" for item, c in seen.items())
    return out


def _global_attrs(parts: list[tuple[GranuleReader, GranulePlan]], gas: str, bias_corrected: bool,
                  screen: bool) -> dict[str, Any]:  # fmt: skip
    plans = [p for _, p in parts]
    return {
        "gas": gas,
        "product": _unique_join(str(p.attrs.get("product", "")) for p in plans),
        "product_version": _unique_join(str(p.attrs.get("product_version", "")) for p in plans),
        "reader": _unique_join(r.name for r, _ in parts),
        "xgas_units": gas_units(gas),
        "product_screen": _unique_join(r.screen for r, _ in parts) if screen else "none (screen=False)",
        "bias_corrected": "true" if bias_corrected else "false",
        "n_soundings_in_files": int(sum(p.n_total for p in plans)),
        "n_soundings_good": int(sum(p.n_good for p in plans)),
        **_merge_plan_attrs(plans),
    }


def _chunk_soundings(chunks: dict[str, int] | int | None) -> int:
    """Soundings per chunk from ``open_granules``' ``chunks`` (0: one chunk per file)."""
    if chunks is None:
        return DEFAULT_CHUNK_SOUNDINGS
    return chunks if isinstance(chunks, int) else int(chunks.get(SOUNDING_DIM, DEFAULT_CHUNK_SOUNDINGS))


def open_granules(
    paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    gas: str | None = None,
    format: str | None = None,
    chunks: dict[str, int] | int | None = None,
    screen: bool = True,
    bias_corrected: bool = True,
    errors: str = "skip",
) -> xr.Dataset:
    """Open many granules as one lazy canonical soundings Dataset.

    Parameters
    ----------
    paths_or_glob : str, Path, or list of them
        Files, or glob patterns (``"data/*.nc"``), read in sorted order per pattern.
    gas : {"CO2", "CH4"}, optional
        Expected gas. A file holding another gas is bad input. Default: the gas of
        the first readable file.
    format : str, optional
        Reader name (see :func:`list_formats`); default: detect per file.
    chunks : dict or int, optional
        ``{"sounding": n}`` (or ``n``): consecutive files are grouped into one read
        task and chunk of at most about ``n`` soundings (a larger single file is
        rechunked to ``n``); ``n = 0``: one chunk per file. Default
        :data:`DEFAULT_CHUNK_SOUNDINGS` (200 000, ~90 MB of OCPR-like soundings):
        a daily granule holds a few thousand soundings, far too little for a dask
        chunk (365 files as one chunk each read 1.09-1.22x slower than in
        200 000-sounding chunks over six runs of ``benchmarks/bench_ingest.py``).
    screen : bool
        Apply each product's recommended screen (documented per reader). ``False``
        keeps every sounding, with ``quality_flag`` set (0 good, 1 bad).
    bias_corrected : bool
        Bias-corrected values where the product has both (else the raw retrieval).
    errors : {"skip", "raise"}
        ``"skip"``: a bad file (zero-byte, truncated/corrupt, unknown product, missing
        variables, all-fill, wrong gas or level count) is skipped with a warning and
        recorded; ``"raise"``: the first bad file raises :class:`GranuleError`.

    Returns
    -------
    xarray.Dataset
        Canonical soundings (dims ``sounding``, ``level``; dask-backed). Attributes
        ``skipped_inputs`` (JSON list of ``{"path", "reason"}``), ``input_files``
        (JSON list of paths read), ``duplicate_soundings`` (JSON list of
        ``{"path", "n_duplicates", "n_kept", "duplicates_of"}``) and
        ``n_duplicate_soundings``. Zero good soundings gives an empty dataset.

    Notes
    -----
    A ``sounding_id`` seen more than once (within a file or across files, e.g. the
    same day downloaded twice) is kept once: the first occurrence in input order
    (sorted order within a glob) is read, later ones are dropped with a warning and
    recorded in ``duplicate_soundings``; a file left with no sounding is also listed
    in ``skipped_inputs``. Products without identifiers are not deduplicated.

    Raises
    ------
    GranuleError
        ``errors="raise"`` and a bad file; or no file at all is readable (every
        reason listed).
    """
    ds, _, _ = _open(paths_or_glob, gas=gas, format=format, chunks=chunks, screen=screen,
                     bias_corrected=bias_corrected, errors=errors)  # fmt: skip
    return ds


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
                raise GranuleError(plan.path, f"has {plan.n_levels} levels; earlier files have "
                                              f"{parts[0][1].n_levels}")  # fmt: skip
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


def _open(
    paths_or_glob: Any, *, gas: str | None, format: str | None, chunks: Any, screen: bool, bias_corrected: bool,
    errors: str,
) -> tuple[xr.Dataset, np.ndarray, list[tuple[str, int, int]]]:
    """:func:`open_granules`, also returning the duplicate-check key of each sounding (``S``; b"" if none)
    and (path, soundings in the file, good soundings) of each file read."""
    if errors not in ("skip", "raise"):
        raise ValueError(f"errors={errors!r}; expected 'skip' or 'raise'")
    paths = _expand(paths_or_glob)
    if not paths:
        raise GranuleError(str(paths_or_glob), "no file matches; check the path or glob pattern")
    want = gas.upper() if gas else None
    parts, skipped = _scan_checked(paths, want, format, screen, errors)
    if not parts:
        lines = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped)
        raise GranuleError(str(paths_or_glob), f"no readable granule among {len(paths)} file(s): {lines}")
    parts, duplicates, dup_skipped, keys = _drop_duplicates(parts)
    keys = [k if k.size == p.n else np.zeros(p.n, dtype="S1") for k, (_, p) in zip(keys, parts, strict=True)]
    # the ids have done their work: keep them out of the read graph (readers read them again)
    parts = [(r, dataclasses.replace(p, ids=None)) for r, p in parts]
    for rec in duplicates:
        msg = (f"dropping {rec['n_duplicates']} soundings of {rec['path']} whose sounding_id was already read "
               f"from {rec['duplicates_of']} (kept the first)")  # fmt: skip
        warnings.warn(msg, stacklevel=3)
        logger.warning(msg)
    skipped += dup_skipped
    n = _chunk_soundings(chunks)
    ds = _assemble(parts, want or parts[0][1].gas, bias_corrected, screen, n)
    if n and n > 0 and ds.sizes[SOUNDING_DIM] > 0 and max(ds.xgas.data.chunks[0]) > n:
        ds = ds.chunk({SOUNDING_DIM: n})  # a single file larger than the chunk
    ds.attrs["input_files"] = json.dumps([p.path for _, p in parts])
    ds.attrs["skipped_inputs"] = json.dumps(skipped)
    ds.attrs["duplicate_soundings"] = json.dumps(duplicates)
    ds.attrs["n_duplicate_soundings"] = int(sum(r["n_duplicates"] for r in duplicates))
    logger.info("ingest: %d soundings from %d file(s), %d skipped", ds.sizes[SOUNDING_DIM], len(parts),
                len(skipped))  # fmt: skip
    counts = [(p.path, int(p.n_total), int(p.n_good)) for _, p in parts]
    return ds, np.concatenate(keys) if keys else np.zeros(0, dtype="S1"), counts


@dataclasses.dataclass
class GroupRead:
    """What :func:`read_granule_group` returns.

    Attributes
    ----------
    ds : xarray.Dataset or None
        The canonical soundings in memory (as :func:`open_granules`, its attributes
        included; ``file_index`` into this group's ``granule_path``), or None when no
        file is readable (``errors="skip"``).
    keys : numpy.ndarray, ``S`` (n,)
        :func:`sounding_keys` of each sounding (``b""`` for a product without
        identifiers), for a duplicate check across groups.
    skipped : list of dict
        ``{"path", "reason"}`` of the files skipped (also in ``ds.attrs``).
    files : list of (str, int, int)
        Path, soundings in the file and good soundings of each file read, in
        ``granule_path`` order (the terms of ``n_soundings_in_files`` and ``n_soundings_good``).
    """

    ds: xr.Dataset | None
    keys: np.ndarray
    skipped: list[dict[str, str]]
    files: list[tuple[str, int, int]]


def read_granule_group(
    paths: list[str], *, gas: str | None = None, format: str | None = None, screen: bool = True,
    bias_corrected: bool = True, errors: str = "skip",
) -> GroupRead:
    """Scan and read a few granules into memory in this process, each file opened and read once.

    The building block of a streaming ingest (``gosat_pipeline.pipeline`` runs one per
    group of files on a worker): :func:`open_granules` on ``paths`` computed at once
    with the synchronous scheduler, warnings kept as records (:class:`GroupRead`).
    """
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # every skip and duplicate is returned as a record
        try:
            ds, keys, files = _open(paths, gas=gas, format=format, chunks=0, screen=screen,
                                    bias_corrected=bias_corrected, errors=errors)  # fmt: skip
        except GranuleError as exc:
            if errors == "raise" or not exc.reason.startswith("no readable granule"):
                raise
            _, skipped = _scan_checked(paths, gas.upper() if gas else None, format, screen, "skip")
            return GroupRead(None, np.zeros(0, dtype="S1"), skipped, [])
        ds = ds.drop_vars("source_file").compute()
    return GroupRead(ds, keys, json.loads(ds.attrs["skipped_inputs"]), files)


def open_granule(
    path: str | os.PathLike[str],
    *,
    gas: str | None = None,
    format: str | None = None,
    screen: bool = True,
    bias_corrected: bool = True,
) -> xr.Dataset:
    """Open one granule as a lazy canonical soundings Dataset.

    Parameters are those of :func:`open_granules`; any problem with the file raises a
    :class:`GranuleError` naming it.
    """
    return open_granules([path], gas=gas, format=format, screen=screen, bias_corrected=bias_corrected,
                         errors="raise")  # fmt: skip


#: Decimals of the rounded values ``inspect_granule`` reports, per canonical unit.
_DECIMALS = {"ppm": 2, "ppb": 1, "degrees": 3}


def _iso_range(values: np.ndarray) -> list[str] | None:
    v = values[~np.isnat(values)]
    if v.size == 0:
        return None
    return [pd.Timestamp(x).strftime("%Y-%m-%dT%H:%M:%SZ") for x in (v.min(), v.max())]


def _stats(values: np.ndarray, decimals: int) -> dict[str, float] | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    return {k: round(float(f(v)), decimals) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))}


def _level_order(ds: xr.Dataset) -> str | None:
    if "pressure" not in ds or ds.sizes.get(LEVEL_DIM, 0) < 2 or ds.sizes[SOUNDING_DIM] == 0:
        return None
    d = ds.pressure.values[:, 0].astype(np.float64) - ds.pressure.values[:, -1]
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    return "surface first" if np.all(d > 0) else "NOT surface first"


def inspect_granule(path: str | os.PathLike[str], *, format: str | None = None) -> dict[str, Any]:
    """Describe one granule: reader, counts, times, rounded values and what the reader left out.

    The library side of ``gosat-pipeline inspect FILE``. Values are canonical (ppm CO2,
    ppb CH4, surface-first levels) and rounded for reading (gas values to 0.01 ppm or
    0.1 ppb, positions to 0.001 degree); times are UTC ISO 8601.

    Parameters
    ----------
    path : path-like
    format : str, optional
        Reader name; default: detected by name, then content.

    Returns
    -------
    dict
        ``path``, ``size_bytes``, ``format`` (the reader), ``description``, ``product``,
        ``product_version``, ``gas``, ``units``, ``n_soundings`` (in the file),
        ``n_good`` (passing the product screen), ``screen``, ``n_levels``,
        ``level_order`` (checked on the pressures read), ``time_range`` ([first, last],
        ISO), ``time_source``, ``latitude_range``, ``longitude_range``,
        ``xgas_range_good`` ([min, max] of the passing soundings), ``xgas_good``,
        ``xgas_uncertainty_good``, ``xgas_apriori_good`` (``{"min", "median", "max"}``),
        ``xgas_uncertainty_components``, ``components_left_out`` (list of
        ``"component: why"``), ``vertical_grid`` and any other reader note.

    Raises
    ------
    GranuleError, UnknownFormatError
        As :func:`open_granule`.
    """
    p = str(path)
    reader, plan = _scan_one(p, gas=None, fmt=format, screen=False)
    with dask.config.set(scheduler="synchronous"):
        ds = _assemble([(reader, plan)], plan.gas, True, False).compute()
    good = ds.quality_flag.values == 0
    units = gas_units(plan.gas)
    dec, pos = _DECIMALS[units], _DECIMALS["degrees"]
    lat, lon = _stats(ds.latitude.values, pos), _stats(ds.longitude.values, pos)
    xgas = _stats(ds.xgas.values[good], dec)
    notes = {k: v for k, v in plan.attrs.items() if k not in _PLAN_ATTRS_HANDLED}
    info: dict[str, Any] = {
        "path": p,
        "size_bytes": os.path.getsize(p),
        "format": reader.name,
        "description": reader.description,
        "product": plan.attrs.get("product", ""),
        "product_version": plan.attrs.get("product_version", ""),
        "gas": plan.gas,
        "units": units,
        "n_soundings": plan.n_total,
        "n_good": plan.n_good,
        "screen": reader.screen,
        "n_levels": plan.n_levels,
        "level_order": _level_order(ds),
        "time_range": _iso_range(ds.time.values),
        "time_source": notes.pop("time_source", None),
        "latitude_range": [lat["min"], lat["max"]] if lat else None,
        "longitude_range": [lon["min"], lon["max"]] if lon else None,
        "xgas_range_good": [xgas["min"], xgas["max"]] if xgas else None,
        "xgas_good": xgas,
        "xgas_uncertainty_good": _stats(ds.xgas_uncertainty.values[good], dec + 1),
        "xgas_apriori_good": _stats(ds.xgas_apriori.values[good], dec) if "xgas_apriori" in ds else None,
        "xgas_uncertainty_components": notes.pop("xgas_uncertainty_components", None),
        "components_left_out": [str(x) for x in notes.pop("components_left_out", [])],
    }
    info.update({k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in notes.items()})
    return info
