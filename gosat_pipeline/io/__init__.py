"""INGEST: L2 granules of any supported product -> one canonical soundings Dataset.

One reader per product (``list_formats()``), chosen by file name, then by content, or
forced with ``format=``. Third-party readers plug in through the entry-point group
``gosat_pipeline.readers`` or :func:`register_reader` (see :mod:`._registry` for the
contract). Every reader returns the canonical schema of DESIGN.md section 4: dims
``sounding`` and ``level``; level arrays **surface first** whatever the file order;
every fill convention as NaN; ``xgas`` in ppm (CO2) or ppb (CH4); ``time`` UTC
datetime64[ns]; longitude in [-180, 180); ``quality_flag`` int8 with 0 = good;
``source_file`` per sounding; attrs ``gas``, ``product``, ``product_version``, ``reader``.

:func:`open_granules` is lazy: each file is checked and planned at open time (1-D
variables only) and read inside one dask task when the data are computed. Bad files
are skipped and recorded (``errors="skip"``) or raise (``errors="raise"``).
"""

from __future__ import annotations

import glob as _glob
import json
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.utils import SerializableLock

from gosat_pipeline.errors import GranuleError, UnknownFormatError
from gosat_pipeline.io._common import summarise_file
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
    "ENTRY_POINT_GROUP",
    "FileSummary",
    "GranulePlan",
    "GranuleReader",
    "detect_format",
    "inspect_granule",
    "list_formats",
    "open_granule",
    "open_granules",
    "register_reader",
    "unregister_reader",
]

logger = logging.getLogger(__name__)

#: netCDF-C / HDF5 are not thread-safe: reads in one process are serialised (as xarray does).
_IO_LOCK = SerializableLock("gosat_pipeline.io")

_COORDS = ("time", "latitude", "longitude")


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
    name = fmt or detect_format(path)
    reader = get_reader(name, path)
    try:
        plan = reader.scan(path, gas=gas, screen=screen)
    except GranuleError:
        raise
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError) as exc:
        raise GranuleError(path, f"reader {name} failed: {type(exc).__name__}: {exc}") from exc
    return reader, plan


def _read_task(reader: GranuleReader, plan: GranulePlan, bias_corrected: bool) -> dict[str, np.ndarray]:
    with _IO_LOCK:
        out = reader.read(plan, bias_corrected=bias_corrected)
    out["source_file"] = np.full(plan.n, plan.path, dtype=object)
    return out


def _pick(d: dict[str, np.ndarray], name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if name in d:
        return np.asarray(d[name]).astype(dtype, copy=False)
    return _fill(dtype, shape)


def _fill(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    kind = np.dtype(dtype).kind
    if kind == "M":
        return np.full(shape, np.datetime64("NaT"), dtype=dtype)
    if kind == "f":
        return np.full(shape, np.nan, dtype=dtype)
    if kind == "O":
        return np.full(shape, "", dtype=object)
    return np.full(shape, -1, dtype=dtype)


def _lazy_pieces(
    parts: list[tuple[GranuleReader, GranulePlan]], variables: dict[str, str], n_levels: int, bias_corrected: bool
) -> dict[str, list[da.Array]]:
    pieces: dict[str, list[da.Array]] = {name: [] for name in [*variables, "source_file"]}
    for reader, plan in parts:
        if plan.n == 0:
            continue
        if plan.variables:
            task = dask.delayed(_read_task, pure=True)(reader, plan, bias_corrected,
                                                       dask_key_name=f"read-{plan.path}-{id(plan)}")  # fmt: skip
        else:  # a plug-in without a declared variable list: read now
            task = _read_task(reader, plan, bias_corrected)
        for name, dtype in [*variables.items(), ("source_file", "object")]:
            shape = (plan.n, n_levels) if name in LEVEL_VARIABLES else (plan.n,)
            if isinstance(task, dict):
                pieces[name].append(da.from_array(_pick(task, name, dtype, shape), chunks=-1))
                continue
            arr = dask.delayed(_pick, pure=True)(task, name, dtype, shape)
            pieces[name].append(da.from_delayed(arr, shape=shape, dtype=dtype))
    return pieces


def _assemble(
    parts: list[tuple[GranuleReader, GranulePlan]], gas: str, bias_corrected: bool, screen: bool
) -> xr.Dataset:
    variables: dict[str, str] = {}
    for _, plan in parts:
        for k, v in plan.variables.items():
            variables.setdefault(k, v)
    if not variables:  # plug-in readers without declared variables: take the first file's arrays
        first = _read_task(parts[0][0], parts[0][1], bias_corrected)
        variables = {k: str(np.asarray(v).dtype) for k, v in first.items() if k != "source_file"}
    n_levels = max((p.n_levels for _, p in parts), default=0)
    pieces = _lazy_pieces(parts, variables, n_levels, bias_corrected)
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for name, plist in pieces.items():
        dtype = variables.get(name, "object")
        level = name in LEVEL_VARIABLES
        dims = (SOUNDING_DIM, LEVEL_DIM) if level else (SOUNDING_DIM,)
        if plist:
            arr = da.concatenate(plist, axis=0)
        else:
            arr = da.from_array(_fill(dtype, (0, n_levels) if level else (0,)), chunks=-1)
        attrs = _var_attrs(name, gas)
        (coords if name in _COORDS else data_vars)[name] = (dims, arr, attrs)
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(_global_attrs(parts, gas, bias_corrected, screen))
    return ds


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
    }


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
        ``{"sounding": n}`` (or ``n``) to rechunk; default one chunk per file.
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
        ``skipped_inputs`` (JSON list of ``{"path", "reason"}``) and ``input_files``
        (JSON list of paths read). Zero good soundings gives an empty dataset.

    Raises
    ------
    GranuleError
        ``errors="raise"`` and a bad file; or no file at all is readable (every
        reason listed).
    """
    if errors not in ("skip", "raise"):
        raise ValueError(f"errors={errors!r}; expected 'skip' or 'raise'")
    paths = _expand(paths_or_glob)
    if not paths:
        raise GranuleError(str(paths_or_glob), "no file matches; check the path or glob pattern")
    want = gas.upper() if gas else None
    parts: list[tuple[GranuleReader, GranulePlan]] = []
    skipped: list[dict[str, str]] = []
    for path in paths:
        try:
            reader, plan = _scan_one(path, gas=want, fmt=format, screen=screen)
            if parts and plan.n_levels != parts[0][1].n_levels and plan.n_levels and parts[0][1].n_levels:
                raise GranuleError(path, f"has {plan.n_levels} levels; earlier files have {parts[0][1].n_levels}")
        except GranuleError as exc:
            if errors == "raise":
                raise
            reason = exc.reason if hasattr(exc, "reason") else str(exc)
            warnings.warn(f"skipping {path}: {reason}", stacklevel=2)
            logger.warning("skipping %s: %s", path, reason)
            skipped.append({"path": path, "reason": reason})
            continue
        want = want or plan.gas
        parts.append((reader, plan))
    if not parts:
        lines = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped)
        raise GranuleError(str(paths_or_glob), f"no readable granule among {len(paths)} file(s): {lines}")
    ds = _assemble(parts, want or parts[0][1].gas, bias_corrected, screen)
    if chunks is not None and ds.sizes[SOUNDING_DIM] > 0:
        n = chunks if isinstance(chunks, int) else chunks.get(SOUNDING_DIM, -1)
        ds = ds.chunk({SOUNDING_DIM: n})
    ds.attrs["input_files"] = json.dumps([p.path for _, p in parts])
    ds.attrs["skipped_inputs"] = json.dumps(skipped)
    logger.info("ingest: %d soundings from %d file(s), %d skipped", ds.sizes[SOUNDING_DIM], len(parts),
                len(skipped))  # fmt: skip
    return ds


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


def _range(values: np.ndarray) -> list[Any] | None:
    v = values[~np.isnan(values)] if values.dtype.kind == "f" else values[~np.isnat(values)]
    if v.size == 0:
        return None
    if v.dtype.kind == "M":
        return [str(v.min()), str(v.max())]
    return [float(v.min()), float(v.max())]


def inspect_granule(path: str | os.PathLike[str], *, format: str | None = None) -> dict[str, Any]:
    """Describe one granule for ``gosat-pipeline inspect FILE``.

    Returns
    -------
    dict
        ``path``, ``size_bytes``, ``format``, ``description``, ``product``,
        ``product_version``, ``gas``, ``units``, ``n_soundings``, ``n_good``,
        ``n_levels``, ``screen``, ``time_range``, ``latitude_range``,
        ``longitude_range``, ``xgas_range_good`` (canonical units).
    """
    p = str(path)
    reader, plan = _scan_one(p, gas=None, fmt=format, screen=False)
    with dask.config.set(scheduler="synchronous"):
        ds = _assemble([(reader, plan)], plan.gas, True, False).compute()
    good = ds.quality_flag.values == 0
    return {
        "path": p,
        "size_bytes": os.path.getsize(p),
        "format": reader.name,
        "description": reader.description,
        "product": plan.attrs.get("product", ""),
        "product_version": plan.attrs.get("product_version", ""),
        "gas": plan.gas,
        "units": gas_units(plan.gas),
        "n_soundings": plan.n_total,
        "n_good": plan.n_good,
        "n_levels": plan.n_levels,
        "screen": reader.screen,
        "time_range": _range(ds.time.values),
        "latitude_range": _range(ds.latitude.values),
        "longitude_range": _range(ds.longitude.values),
        "xgas_range_good": _range(ds.xgas.values[good]),
    }
