"""Assemble: the planned soundings as one lazy canonical Dataset (hand-written dask graph).

The second half of :func:`gosat_pipeline.io.open_granules`: consecutive files are
grouped into read tasks, each feeding every variable's chunk; the Dataset gets the
canonical CF attributes and the batch's global attributes.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
from collections.abc import Iterable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io._common import IO_LOCK, close_cached
from gosat_pipeline.io._registry import (
    GranulePlan,
    GranuleReader,
)
from gosat_pipeline.schema import LEVEL_DIM, LEVEL_VARIABLES, SOUNDING_DIM, cf_attrs, gas_units

logger = logging.getLogger(__name__)


_COORDS = ("time", "latitude", "longitude")

#: Per-sounding index into the file table :data:`GRANULE_PATH` (int32; dims ``sounding``).
FILE_INDEX = "file_index"
#: The file table: path of each granule read, in input order (dims :data:`GRANULE_DIM`).
GRANULE_PATH = "granule_path"
GRANULE_DIM = "granule"

#: Default size of a chunk of :func:`open_granules` (soundings); consecutive files are grouped up to it.
DEFAULT_CHUNK_SOUNDINGS = 200_000


_READ_FAULTS = (OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError, AttributeError)


def _read_task(reader: GranuleReader, plan: GranulePlan, bias_corrected: bool) -> dict[str, np.ndarray]:
    try:
        with IO_LOCK:
            out = reader.read(plan, bias_corrected=bias_corrected)
            close_cached(plan.path)  # read once per compute: free the slot for a file still to be read
    except GranuleError:
        raise
    except _READ_FAULTS as exc:  # a fault scan() did not catch: still name the file, never a bare traceback
        raise GranuleError(
            plan.path,
            f"reader {reader.name} failed while reading (after a successful scan): {type(exc).__name__}: {exc}",
        ) from exc
    return out


def _read_group(
    group: list[tuple[GranuleReader, GranulePlan, int]],
    bias_corrected: bool,
    variables: dict[str, str],
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
    parts: list[tuple[GranuleReader, GranulePlan]],
    variables: dict[str, str],
    n_levels: int,
    bias_corrected: bool,
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
        layer = {
            ((vname, i, 0) if level else (vname, i)): (operator.getitem, (read_name, i), name)
            for i in range(len(groups))
        }
        graph = HighLevelGraph({read_name: read_layer, vname: layer}, {read_name: set(), vname: {read_name}})
        chunks = (sizes, (n_levels,)) if level else (sizes,)
        out[name] = da.Array(graph, vname, chunks, dtype=np.dtype(dtype))
    return out


def _assemble(
    parts: list[tuple[GranuleReader, GranulePlan]],
    gas: str,
    bias_corrected: bool,
    screen: bool,
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
    data_vars[GRANULE_PATH] = (
        GRANULE_DIM,
        da.from_array(np.array(paths, dtype=object), chunks=-1),
        _var_attrs(GRANULE_PATH, gas),
    )
    data_vars["source_file"] = (
        SOUNDING_DIM,
        decode_source_file(arrays[FILE_INDEX], paths),
        _var_attrs("source_file", gas),
    )
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


def _global_attrs(
    parts: list[tuple[GranuleReader, GranulePlan]], gas: str, bias_corrected: bool, screen: bool
) -> dict[str, Any]:
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
