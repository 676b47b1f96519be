"""Shared reading machinery: file peeking, fill masking and the table-driven netCDF reader.

The CCI (OCPR, OCFP, SRFP) and Lite (ACOS, OCO-2, OCO-3) readers are instances of
:class:`NcTableReader`: their layouts are **data** (a typed
:class:`~gosat_pipeline.io._layout.ReaderLayout` per gas, canonical name ->
:class:`~gosat_pipeline.io._layout.VarSpec` of path, transform, unit factor and
required), so a layout correction is a table edit, checked when the class is defined.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import h5py
import netCDF4
import numpy as np
import pandas as pd

from gosat_pipeline.errors import GranuleError, ReaderContractError
from gosat_pipeline.io._layout import ReaderLayout, VarSpec, as_layout
from gosat_pipeline.io._registry import FileSummary, GranulePlan, GranuleReader
from gosat_pipeline.schema import LEVEL_VARIABLES

__all__ = [
    "NcTableReader",
    "summarise_file",
    "open_nc",
    "mask_fill",
    "cf_time",
    "time_epoch",
    "check_gas",
    "check_time_coverage",
    "check_plausible_units",
    "wrap_longitude",
]

logger = logging.getLogger(__name__)


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO" and v.size == 1:
        return _decode(v.reshape(-1)[0])
    return v


def check_readable(path: str) -> None:
    """Raise :class:`GranuleError` for a missing or zero-byte file."""
    p = Path(path)
    if not p.exists():
        raise GranuleError(path, "file does not exist")
    if p.is_dir():
        raise GranuleError(path, "is a directory, not a granule")
    if p.stat().st_size == 0:
        raise GranuleError(path, "zero-byte file (an interrupted download?)")


def summarise_file(path: str) -> FileSummary:
    """Variable paths and root attributes of an HDF5/netCDF file, for content detection.

    Opens the file through the handle cache (:func:`cached_nc`), so detection followed
    by a read opens it once, and a file already open in this process (scanned, not yet
    read) is not opened a second time.

    Raises
    ------
    GranuleError
        Zero-byte, truncated, corrupt, or not HDF5/netCDF at all.
    """
    check_readable(path)
    with cached_nc(path) as ds:
        if isinstance(ds, H5NcFile):
            variables, attrs = ds.summary()
        else:  # netCDF-3 through netCDF4: no groups
            variables = set(ds.variables)
            attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}
    return FileSummary(path, variables, attrs)


#: HDF5 attributes that netCDF-4 uses for its own bookkeeping (not netCDF attributes).
_HIDDEN_ATTRS = frozenset(
    {
        "DIMENSION_LIST",
        "REFERENCE_LIST",
        "CLASS",
        "NAME",
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_nc3_strict",
        "_NCProperties",
        "_IsNetcdf4",
    }
)
#: The ``NAME`` attribute netCDF-4 gives a dimension that has no coordinate variable.
_PURE_DIMENSION = b"This is a netCDF dimension but not a netCDF variable"


def _nc_attr(value: Any) -> Any:
    """An HDF5 attribute value as netCDF4-python returns it (text as str, one number as a scalar)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SOU":
            items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]
            return items[0] if len(items) == 1 else items
        if value.size == 1:
            return value.reshape(-1)[0]
    return value


def _read_attr(oid: Any, name: str) -> Any:
    """Attribute ``name`` of a low-level h5py object, as netCDF4-python returns it."""
    aid = h5py.h5a.open(oid, name.encode())
    if aid.shape is None:  # null dataspace: an empty attribute
        return ""
    dtype = aid.dtype
    if dtype.kind in "biufS":  # numbers and fixed-length text: a plain read
        values = np.empty(aid.shape, dtype=dtype)
        aid.read(values)
    else:  # variable-length strings and other special types: h5py's own conversion
        values = h5py.AttributeManager(_Parent(oid))[name]
    return _nc_attr(values)


class _Parent:
    """The least of a high-level h5py object that :class:`h5py.AttributeManager` needs."""

    def __init__(self, oid: Any) -> None:
        self.id = oid


def _attr_names(oid: Any) -> list[str]:
    names: list[str] = []
    h5py.h5a.iterate(oid, lambda name, *_: names.append(name.decode("utf-8", "replace")))
    return [n for n in names if n not in _HIDDEN_ATTRS]


def _is_pure_dimension(oid: Any) -> bool:
    if not h5py.h5a.exists(oid, b"CLASS") or not h5py.h5a.exists(oid, b"NAME"):
        return False
    return str(_read_attr(oid, "NAME")).startswith(_PURE_DIMENSION.decode())


class H5NcVariable:
    """A netCDF-4 variable read through h5py, with the part of netCDF4.Variable the readers use.

    Values are always the stored values (no masking or scaling, as
    ``set_auto_maskandscale(False)`` gives with netCDF4); char arrays stay ``S1``
    arrays; variable-length strings are decoded to ``str``. Attributes are read once.
    Any index reads the whole variable, then selects (the readers read whole
    variables). h5py's low-level API is used: the high-level objects cost more than
    reading a small compressed variable.
    """

    __slots__ = ("_id", "_fid", "_vpath", "_names", "_values", "name", "shape", "dtype")

    def __init__(self, dsid: Any, name: str, fid: Any = None, vpath: str = "") -> None:
        self._id = dsid
        self._fid = fid
        self._vpath = vpath
        self._names: list[str] | None = None
        self._values: dict[str, Any] = {}
        self.name = name
        self.shape: tuple[int, ...] = tuple(dsid.shape) if hasattr(dsid, "shape") else ()
        self.dtype: np.dtype = dsid.dtype if hasattr(dsid, "dtype") else np.dtype("f8")

    def _obj(self) -> Any:
        if self._id is None:  # released (see H5NcFile.release): reopen, cheap while the file is open
            self._id = h5py.h5o.open(self._fid, self._vpath.encode())
        return self._id

    def release(self) -> None:
        """Drop the HDF5 object identifier, keeping what was read of the metadata."""
        if self._fid is not None:
            self._id = None

    def ncattrs(self) -> list[str]:
        if self._names is None:
            self._names = _attr_names(self._obj())
        return list(self._names)

    def getncattr(self, name: str) -> Any:
        if name not in self._values:
            if name not in self.ncattrs():
                raise AttributeError(f"variable {self.name!r} has no attribute {name!r}")
            self._values[name] = _read_attr(self._obj(), name)
        return self._values[name]

    def set_auto_maskandscale(self, flag: bool) -> None:
        """Accepted for netCDF4 compatibility: values are always read as stored."""

    def __getitem__(self, key: Any) -> np.ndarray:
        if self.dtype.kind in "biufS" and self.shape:
            out = np.empty(self.shape, dtype=self.dtype)  # the whole variable, straight into a new array
            if out.size:
                self._obj().read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            return out if key is Ellipsis else out[key]
        values = np.asarray(h5py.Dataset(self._obj())[key])  # scalars, strings, compound types
        if values.dtype.kind == "O":  # variable-length strings arrive as bytes
            values = np.array(
                [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values.reshape(-1)], dtype=object
            ).reshape(values.shape)
        return values


class H5NcFile:
    """A netCDF-4 (HDF5) file read with h5py, with the part of netCDF4.Dataset the readers use.

    netCDF4-python reads every variable's metadata when it opens a file; h5py opens
    lazily and reads a variable with less overhead, which matters for daily granules
    of a few MB (``benchmarks/bench_ingest.py``). Paths are ``"Group/name"``;
    groups and dimensions without a variable are not variables (KeyError).
    """

    def __init__(self, path: str) -> None:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        # h5py's own degree: HDF5 refuses to open a file that is already open in the process
        # with another degree ("file close degree doesn't match"), and h5py.File (used by
        # users, h5netcdf, xarray) opens with CLOSE_WEAK; close() releases our objects itself
        fapl.set_fclose_degree(h5py.h5f.CLOSE_WEAK)
        self._fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY, fapl=fapl)
        self.filepath = path
        self._vars: dict[str, H5NcVariable | str] = {}  # vpath -> variable, or why it is not one
        self._global: H5NcVariable | None = None

    def __getitem__(self, vpath: str) -> H5NcVariable:
        var = self._vars.get(vpath)
        if var is None:
            try:
                oid = h5py.h5o.open(self._fid, vpath.encode())
            except (KeyError, ValueError):
                oid = None
            if oid is None:
                var = f"no variable {vpath!r}"
            elif not isinstance(oid, h5py.h5d.DatasetID):
                var = f"{vpath!r} is a group, not a variable"
            elif _is_pure_dimension(oid):
                var = f"{vpath!r} is a netCDF dimension, not a variable"
            else:
                var = H5NcVariable(oid, vpath.rsplit("/", 1)[-1], self._fid, vpath)
            self._vars[vpath] = var
        if isinstance(var, str):
            raise KeyError(var)
        return var

    def _root(self) -> H5NcVariable:
        if self._global is None:  # the root group's attributes, read like a variable's
            self._global = H5NcVariable(h5py.h5g.open(self._fid, b"/"), "/", self._fid, "/")
        return self._global

    def release(self) -> None:
        """Drop the HDF5 identifiers of the variables (metadata kept; reopened when read).

        h5py's cost of closing a file grows with the identifiers alive in the process:
        a batch that keeps every scanned file open would otherwise make each close
        scan the identifiers of all the others.
        """
        for var in self._vars.values():
            if not isinstance(var, str):
                var.release()
        if self._global is not None:
            self._global.release()

    def ncattrs(self) -> list[str]:
        return self._root().ncattrs()

    def getncattr(self, name: str) -> Any:
        try:
            return self._root().getncattr(name)
        except AttributeError:
            raise AttributeError(f"{self.filepath}: no global attribute {name!r}") from None

    def summary(self) -> tuple[set[str], dict[str, Any]]:
        """Every dataset path (no leading slash) and the root attributes, for content detection.

        Raises
        ------
        GranuleError
            The file's object headers cannot be read (truncated or corrupt).
        """
        names: list[str] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                names.append(name)

        try:
            h5py.Group(h5py.h5g.open(self._fid, b"/")).visititems(visit)
            attrs = {k: _decode(self.getncattr(k)) for k in self.ncattrs()}
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise GranuleError(self.filepath, f"truncated or corrupt HDF5 file: {exc}") from None
        return set(names), attrs

    def close(self) -> None:
        """Close the file and every HDF5 object opened through it (as ``h5py.File.close`` does)."""
        self._vars.clear()
        self._global = None
        if self._fid.valid:
            self._fid._close_open_objects(h5py.h5f.OBJ_LOCAL | ~h5py.h5f.OBJ_FILE)
            self._fid._close_open_objects(h5py.h5f.OBJ_LOCAL | h5py.h5f.OBJ_FILE)
            self._fid.close()

    def __enter__(self) -> H5NcFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: A read handle: netCDF4-python for netCDF-3 files, h5py (through :class:`H5NcFile`) for netCDF-4.
NcHandle = netCDF4.Dataset | H5NcFile
NcVariable = netCDF4.Variable | H5NcVariable


def open_granule_file(path: str) -> NcHandle:
    """Open a netCDF-4 file with h5py (:class:`H5NcFile`), anything else with netCDF4.

    Any failure ends in :func:`open_nc`, whose GranuleError names the file.
    """
    check_readable(path)
    try:
        return H5NcFile(path)
    except (OSError, ValueError):  # not HDF5 (netCDF-3), or unreadable: netCDF4 opens it or explains why not
        return open_nc(path)


#: Serialises netCDF-C/HDF5 calls in a process (neither library is thread-safe).
IO_LOCK = threading.RLock()
_CACHE: OrderedDict[tuple[str, int, int], NcHandle] = OrderedDict()
_CACHE_SIZE = 64


def close_cached(path: str | None = None) -> None:
    """Close cached read handles (of ``path``, or all); call before rewriting a file."""
    with IO_LOCK:
        where = None if path is None else str(Path(path).resolve())
        for key in [k for k in _CACHE if where is None or k[0] == where]:
            _CACHE.pop(key).close()


@contextmanager
def cached_nc(path: str) -> Iterator[NcHandle]:
    """A read-only handle (:func:`open_granule_file`) kept open between :meth:`scan` and :meth:`read` (LRU of 64).

    Opening an HDF5-based netCDF file costs about as much as reading a small granule,
    so a batch opens each file once. Keyed by path, size and mtime, so a rewritten
    file is reopened (after closing the old handle: HDF5 shares one open file per
    inode, and a rewritten file keeps its inode). Holds :data:`IO_LOCK` while in use.
    """
    with IO_LOCK:
        st = os.stat(path) if os.path.exists(path) else None
        key = (str(Path(path).resolve()), st.st_mtime_ns if st else 0, st.st_size if st else 0)
        ds = _CACHE.pop(key, None)
        if ds is None:
            for stale in [k for k in _CACHE if k[0] == key[0]]:  # the file was rewritten: HDF5 would reuse the
                _CACHE.pop(stale).close()  # open file (same inode) and serve the old data
            ds = open_granule_file(path)
        _CACHE[key] = ds
        while len(_CACHE) > max(1, _CACHE_SIZE):  # the oldest, never the handle about to be used
            _CACHE.popitem(last=False)[1].close()
        try:
            yield ds
        finally:
            if isinstance(ds, H5NcFile):
                ds.release()


def open_nc(path: str) -> netCDF4.Dataset:
    """Open a netCDF file read-only, turning every library failure into a GranuleError."""
    check_readable(path)
    try:
        return netCDF4.Dataset(path, "r")
    except OSError as exc:
        size = os.path.getsize(path)
        raise GranuleError(
            path, f"not a readable netCDF/HDF5 file ({size} bytes; truncated or corrupt?): {exc}"
        ) from None


def get_var(ds: NcHandle, vpath: str, path: str) -> NcVariable:
    """The variable at ``vpath`` (``"Group/name"``), or GranuleError naming it."""
    try:
        return ds[vpath]
    except (KeyError, IndexError):
        raise GranuleError(path, f"missing variable {vpath!r}") from None


def read_raw(var: NcVariable, path: str) -> np.ndarray:
    """The stored values of ``var`` (no masking, no scaling); GranuleError on I/O failure."""
    var.set_auto_maskandscale(False)
    try:
        return np.asarray(var[...])
    except (OSError, RuntimeError, IndexError) as exc:
        raise GranuleError(path, f"cannot read variable {var.name!r} (truncated or corrupt?): {exc}") from None


def mask_fill(values: np.ndarray, attrs: dict[str, Any], bare_fill: float | None) -> np.ndarray:
    """Float copy of ``values`` with every fill convention turned into NaN.

    Parameters
    ----------
    values : numpy.ndarray
        Modified in place when it is a float32 profile array that owns its data.
    attrs : dict
        The variable's attributes; ``_FillValue`` and ``missing_value`` are honoured.
    bare_fill : float or None
        A fill written without any attribute (CCI: -9999.99); values at or below
        ``bare_fill + 1`` are masked (the value is a float32 approximation).
    """
    if values.dtype == np.float32 and values.ndim > 1 and values.flags.owndata:
        out = values  # a fresh array from the file (level profile): mask in place, keep float32
    else:
        out = values.astype(np.float64)
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            for f in np.asarray(attrs[key]).reshape(-1):
                out[values == np.asarray(f).astype(values.dtype)] = np.nan
    if bare_fill is not None:
        out[out <= bare_fill + 1.0] = np.nan
    scale = attrs.get("scale_factor")
    offset = attrs.get("add_offset")
    if scale is not None:
        out *= float(np.asarray(scale))
    if offset is not None:
        out += float(np.asarray(offset))
    return out


_TIME_UNITS = re.compile(r"\s*(seconds|milliseconds|minutes|hours|days)\s+since\s+(.+)")
_UNIT_NS = {
    "seconds": 10**9,
    "milliseconds": 10**6,
    "minutes": 60 * 10**9,
    "hours": 3600 * 10**9,
    "days": 86400 * 10**9,
}


def time_epoch(units: Any, path: str, vpath: str = "time") -> tuple[str, pd.Timestamp]:
    """(unit, epoch) of CF time units ``"<unit> since <epoch>"``; GranuleError naming the variable.

    Readers call this in ``scan`` so that a file with missing or wrong time units is
    rejected (and skipped) at open time rather than failing the batch when read.
    """
    if units is None:
        raise GranuleError(path, f"variable {vpath!r} has no units attribute; expected '<unit> since <epoch>'")
    m = _TIME_UNITS.fullmatch(str(units))
    if not m:
        raise GranuleError(path, f"variable {vpath!r}: time units {units!r} are not '<unit> since <epoch>'")
    try:
        epoch = pd.Timestamp(m.group(2).strip().rstrip("Z").replace("UTC", "").strip())
    except (ValueError, TypeError) as exc:
        raise GranuleError(path, f"variable {vpath!r}: time units {units!r} have no valid epoch ({exc})") from None
    if epoch is pd.NaT:
        raise GranuleError(path, f"variable {vpath!r}: time units {units!r} have no valid epoch")
    return m.group(1), epoch


def cf_time(values: np.ndarray, units: str | None, path: str, vpath: str = "time") -> np.ndarray:
    """CF offsets (``"<unit> since <epoch>"``) -> UTC datetime64[ns]; NaN -> NaT."""
    unit, epoch = time_epoch(units, path, vpath)
    v = np.asarray(values, dtype=np.float64)
    ns = np.round(v * _UNIT_NS[unit])
    out = np.full(v.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = np.isfinite(ns)
    out[ok] = (epoch.value + ns[ok].astype(np.int64)).astype("datetime64[ns]")
    return out


def _iso(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_time_coverage(
    path: str,
    times: np.ndarray,
    start: Any,
    end: Any,
    vpath: str,
    what: str,
    tolerance: pd.Timedelta | None = None,
    hint: str = "",
) -> None:
    """GranuleError naming ``vpath`` when a sounding time falls outside the granule's own coverage.

    A time decoded with the wrong unit or epoch lands days or months away from the
    granule; read silently, it would put soundings into the wrong month of a run.

    Parameters
    ----------
    times : numpy.ndarray of datetime64
        Sounding times (NaT ignored: screened later as ``invalid_time``).
    start, end : timestamp-like
        The granule's coverage (UTC, naive or aware).
    vpath : str
        The variable the times were decoded from.
    what : str
        Where the coverage comes from, for the message (e.g. ``"time_coverage_start/end"``).
    tolerance : pandas.Timedelta, optional
        Allowed overshoot at either end (coverage attributes are often truncated to seconds).
    hint : str
        Appended to the message (what to do about it).
    """
    t = np.asarray(times).astype("datetime64[ns]")
    t = t[~np.isnat(t)]
    if t.size == 0:
        return
    tolerance = pd.Timedelta(0) if tolerance is None else pd.Timedelta(tolerance)
    lo = np.datetime64(
        pd.Timestamp(start).tz_localize(None) if pd.Timestamp(start).tzinfo else pd.Timestamp(start), "ns"
    ) - np.timedelta64(tolerance.value, "ns")
    hi = np.datetime64(
        pd.Timestamp(end).tz_localize(None) if pd.Timestamp(end).tzinfo else pd.Timestamp(end), "ns"
    ) + np.timedelta64(tolerance.value, "ns")
    out = (t < lo) | (t > hi)
    if out.any():
        raise GranuleError(
            path,
            f"variable {vpath!r}: {int(out.sum())} of {t.size} sounding times fall outside "
            f"{what} ({_iso(start)} to {_iso(end)}); found {_iso(t.min())} to {_iso(t.max())}"
            f"{'; ' + hint if hint else ''}",
        )


def check_gas(path: str, found: str, requested: str | None) -> str:
    """The file's gas; GranuleError when the caller asked for another one."""
    if requested is not None and requested.upper() != found:
        raise GranuleError(path, f"file holds {found}, but gas={requested.upper()!r} was requested")
    return found


#: Longitudes a product may use: [-180, 180] or [0, 360]. Anything else is not a position.
LONGITUDE_VALID_RANGE = (-180.0, 360.0)


def wrap_longitude(lon: np.ndarray) -> np.ndarray:
    """Longitude into [-180, 180); values outside [-180, 360] (not a longitude) become NaN.

    Wrapping such a value (e.g. 500 -> 140) would invent a position; as NaN the
    sounding is dropped and counted by the quality filter (``invalid_position``).
    """
    lon = np.asarray(lon, dtype=np.float64)
    out = ((lon + 180.0) % 360.0) - 180.0
    lo, hi = LONGITUDE_VALID_RANGE
    with np.errstate(invalid="ignore"):
        out[~((lon >= lo) & (lon <= hi))] = np.nan
    return out


#: Plausible range of a file's median column value in canonical units (ppm CO2, ppb CH4).
#: Far wider than any real atmosphere, far narrower than a unit error (x1000 or /1000).
PLAUSIBLE_XGAS = {"CO2": (150.0, 1500.0), "CH4": (500.0, 5000.0)}


def check_plausible_units(path: str, gas: str, xgas: np.ndarray, variable: str) -> None:
    """GranuleError when the file's median gas value cannot be in canonical units.

    Readers take the units of each product from its documentation, not from the
    (often wrong) units attribute (L2_FORMATS.md); this check catches a file whose
    values are on another scale (ppm read as ppb, mol/mol, another quantity).
    """
    valid = xgas[np.isfinite(xgas)]
    if valid.size == 0:
        return
    lo, hi = PLAUSIBLE_XGAS[gas]
    med = float(np.median(valid))
    if not lo <= med <= hi:
        units = {"CO2": "ppm", "CH4": "ppb"}[gas]
        raise GranuleError(
            path,
            f"variable {variable!r}: median {gas} value {med:.6g} is not plausible in {units} "
            f"(expected {lo:g}-{hi:g} after the reader's unit conversion); wrong units "
            "or another quantity in the file",
        )


def plan_from_flags(
    path: str,
    gas: str,
    xgas: np.ndarray,
    flag_bad: np.ndarray,
    *,
    screen: bool,
    n_levels: int,
    attrs: dict[str, Any],
    extra: dict[str, Any] | None = None,
    ids: np.ndarray | None = None,
    variable: str = "xgas",
) -> GranulePlan:
    """Build a plan from the file's gas values and its translated quality flag.

    A sounding whose gas value is a fill is flagged bad. A file with no valid gas
    value at all is an all-fill file, and a file whose values are on another scale
    fails :func:`check_plausible_units` (GranuleError). ``ids`` (one per sounding
    of the file) become the plan's ``ids`` for the planned soundings.
    """
    valid = np.isfinite(xgas)
    if xgas.size and not valid.any():
        raise GranuleError(
            path, f"all {xgas.size} soundings are fill values or NaN (no valid {gas} column in {variable!r})"
        )
    check_plausible_units(path, gas, xgas, variable)
    bad = np.asarray(flag_bad, dtype=bool) | ~valid
    good = ~bad
    index = np.flatnonzero(good) if screen else np.arange(xgas.size)
    ex = {"bad": bad, **(extra or {})}
    plan = GranulePlan(path, gas, index, int(xgas.size), int(good.sum()), n_levels, attrs, ex)
    if ids is not None:
        plan.ids = np.asarray(ids)[index]
    return plan


class NcTableReader(GranuleReader):
    """Base class of a netCDF/HDF5 reader whose layout is data: one :class:`ReaderLayout` per gas.

    A product whose soundings are 1-D variables along one dimension (and whose
    profiles are 2-D ``(sounding, level)``) needs no code: subclass, set the class
    attributes below and, for content detection, :meth:`sniff`. :meth:`scan` checks
    the required variables, the gas, the time units and the plausibility of the gas
    values, and plans the soundings passing ``flag_variable == 0``; :meth:`read`
    returns the canonical arrays (fills as NaN, level arrays surface first, longitude
    wrapped to [-180, 180), ``xgas_apriori = sum_j h_j x_a,j`` when the file has none).

    The layout is checked when the class is defined and again when the reader is
    registered: a plain dict is converted to :class:`ReaderLayout`, and an unknown
    transform, a misspelt key, a missing ``xgas``, a gas without ``flag_variable``
    raise :class:`~gosat_pipeline.errors.ReaderContractError` naming the reader.

    Attributes
    ----------
    variable_map : dict of str to ReaderLayout
        Gas (``"CO2"``, ``"CH4"``) -> layout. The gas of a file is the first whose
        ``xgas`` path exists in it.
    flag_variable : dict of str to str
        Gas -> path of the product quality flag (0 = good); every gas needs one.
    raw_variable : dict of str to str
        Gas -> path of the not-bias-corrected gas value, read when ``bias_corrected=False``.
    level_order : {"surface_first", "toa_first"}
        Order of the level dimension in the file; ``"toa_first"`` flips every 2-D array.
    bare_fill : float or None
        A fill value the product writes without a ``_FillValue`` attribute (CCI: -9999.99).
    product : str
        Product name written to the ``product`` attribute.
    version_pattern : str
        Regular expression whose group 1 is the version in the file name (used when
        the file has no ``product_version``/``version`` attribute).

    Examples
    --------
    A reader plug-in for a hypothetical flat XCO2 product::

        from gosat_pipeline.io import NcTableReader, ReaderLayout, VarSpec

        class MyXco2Reader(NcTableReader):
            name = "my_xco2"
            description = "My mission L2 XCO2, netCDF"
            gases = ("CO2",)
            filename_patterns = (r"MY-L2-XCO2-\\d{8}\\.nc",)
            screen = "qflag == 0"
            product = "My L2 XCO2"
            variable_map = {"CO2": ReaderLayout({
                "time": VarSpec("time", transform="time"),
                "latitude": VarSpec("lat"), "longitude": VarSpec("lon"),
                "xgas": VarSpec("xco2"), "xgas_uncertainty": VarSpec("xco2_err"),
                "averaging_kernel": VarSpec("ak"), "pressure_weight": VarSpec("pwf"),
                "profile_apriori": VarSpec("co2_apriori"),
                "pressure": VarSpec("p_levels", factor=0.01),  # Pa -> hPa
            }, reader="my_xco2")}
            flag_variable = {"CO2": "qflag"}
    """

    #: gas -> layout (canonical name -> VarSpec)
    variable_map: ClassVar[Mapping[str, ReaderLayout]] = {}
    #: gas -> path of the not-bias-corrected gas value (``bias_corrected=False``)
    raw_variable: ClassVar[dict[str, str]] = {}
    #: gas -> path of the product quality flag (0 = good)
    flag_variable: ClassVar[dict[str, str]] = {}
    level_order: ClassVar[str] = "surface_first"
    bare_fill: ClassVar[float | None] = None
    product: ClassVar[str] = ""
    version_pattern: ClassVar[str] = r"fv([\d.]+)\.nc"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "variable_map" in cls.__dict__:  # checked where it is written, converted once
            cls.variable_map = _checked_map(cls.variable_map, cls.name or cls.__qualname__)

    def check_definition(self) -> None:
        """Check the layouts against the contract (called by :func:`register_reader`).

        Raises
        ------
        ReaderContractError
            A layout that is not valid, a gas without ``flag_variable``, a gas not in
            ``gases``, or a ``level_order`` other than ``surface_first``/``toa_first``.
        """
        who = self.name or type(self).__qualname__
        vmap = _checked_map(self.variable_map, who)
        if not vmap:
            raise ReaderContractError(f"reader {who}: variable_map is empty; give one ReaderLayout per gas")
        for gas in vmap:
            if gas not in self.gases:
                raise ReaderContractError(f"reader {who}: variable_map has gas {gas!r} not in gases {self.gases}")
            if not self.flag_variable.get(gas):
                raise ReaderContractError(
                    f"reader {who}: flag_variable has no path for gas {gas!r} (the product quality flag, 0 = good)"
                )
        if self.level_order not in ("surface_first", "toa_first"):
            raise ReaderContractError(
                f"reader {who}: level_order {self.level_order!r}; expected 'surface_first' or 'toa_first'"
            )

    # -- scan -------------------------------------------------------------------------------
    def file_gas(self, ds: NcHandle, path: str) -> str:
        """The gas whose xgas variable the file holds."""
        for gas, vmap in self.variable_map.items():
            try:
                ds[vmap["xgas"].path]
            except (KeyError, IndexError):
                continue
            return gas
        wanted = [v["xgas"].path for v in self.variable_map.values()]
        raise GranuleError(path, f"missing variable: none of {wanted} is present ({self.name} layout)")

    def product_version(self, ds: NcHandle, path: str) -> str:
        """Product version from the global attribute, else from the file name."""
        for key in ("product_version", "version", "ProductionVersion"):
            if key in ds.ncattrs():
                return str(ds.getncattr(key))
        m = re.search(self.version_pattern, Path(path).name)
        return m.group(1) if m else "unknown"

    def scan(self, path: str, *, gas: str | None, screen: bool) -> GranulePlan:
        """Open, check required variables and gas, read the gas value and flag."""
        with cached_nc(path) as ds:
            found = check_gas(path, self.file_gas(ds, path), gas)
            vmap = self.variable_map[found]
            missing = [s.path for s in vmap.values() if s.required and not _has(ds, s.path)]
            if missing:
                raise GranuleError(path, f"missing variable(s) {missing} required by the {self.name} reader")
            xv = get_var(ds, vmap["xgas"].path, path)
            xgas = mask_fill(read_raw(xv, path), _attrs(xv), self.bare_fill)
            fv = get_var(ds, self.flag_variable[found], path)
            flag = mask_fill(read_raw(fv, path), _attrs(fv), None)
            n_levels = 0
            if "averaging_kernel" in vmap and _has(ds, vmap["averaging_kernel"].path):
                n_levels = int(get_var(ds, vmap["averaging_kernel"].path, path).shape[-1])
            for spec in vmap.values():  # what read() would fail on must fail here, where a batch can skip it
                if spec.transform == "time":
                    time_epoch(_attrs(get_var(ds, spec.path, path), "units").get("units"), path, spec.path)
            attrs = {"product": self.product, "product_version": self.product_version(ds, path), "reader": self.name}
            self._check_shapes(ds, vmap, path, n_levels)
            variables = self._variables(ds, vmap)
            plan = plan_from_flags(
                path,
                found,
                xgas,
                ~(flag == 0),
                screen=screen,
                n_levels=n_levels,
                attrs=attrs,
                variable=vmap["xgas"].path,
            )
            sid = vmap.get("sounding_id")
            if sid is not None and _has(ds, sid.path):  # ids of the planned soundings (duplicate check)
                # text ids stay fixed-width bytes: scan results travel from the workers, and
                # an object array of Python strings is slow to pickle (and 4x larger as str)
                plan.ids = self._read_one(ds, sid, plan.index, path, text_as_bytes=True)
        plan.variables = variables
        return plan

    def _check_shapes(self, ds: NcHandle, vmap: Mapping[str, VarSpec], path: str, n_levels: int) -> None:
        """GranuleError naming the variable when a mapped variable's dimensions do not fit its role.

        Per-sounding variables are 1-D (char arrays and ``first`` sources 2-D), level variables
        2-D with the levels of ``averaging_kernel`` (a ``layer_mid`` source one more), all with
        the soundings of ``xgas``. A layout pointing at the wrong variable, or a file of
        another layout, is refused here, where a batch can skip it, not while reading.
        """
        xshape = get_var(ds, vmap["xgas"].path, path).shape
        n = int(xshape[0]) if len(xshape) else 0
        for name, spec in vmap.items():
            if not _has(ds, spec.path):
                continue
            shape = tuple(int(k) for k in get_var(ds, spec.path, path).shape)
            level = name in LEVEL_VARIABLES
            ndims = (2,) if level or spec.transform == "first" else (1, 2) if spec.transform == "chars" else (1,)
            want = f"{' or '.join(f'{k}-D' for k in ndims)} with {n} soundings first"
            ok = len(shape) in ndims and shape[0] == n
            if ok and level and n_levels:
                m = n_levels + 1 if spec.transform == "layer_mid" else n_levels
                ok, want = shape[1] == m, f"(soundings, {m} levels) like the averaging kernel"
            if not ok:
                raise GranuleError(
                    path, f"variable {spec.path!r} ({name}) has shape {shape}; the {self.name} layout expects {want}"
                )

    @staticmethod
    def _variables(ds: NcHandle, vmap: Mapping[str, VarSpec]) -> dict[str, str]:
        """Canonical name -> dtype of what :meth:`read` returns for this file."""
        out = {"quality_flag": "int8"}
        for name, spec in vmap.items():
            if _has(ds, spec.path):
                out[name] = _DTYPES.get(spec.transform, "float32" if name in LEVEL_VARIABLES else "float64")
        if "xgas_apriori" not in out and {"profile_apriori", "pressure_weight"} <= set(out):
            out["xgas_apriori"] = "float64"
        return out

    # -- read -------------------------------------------------------------------------------
    def read(self, plan: GranulePlan, *, bias_corrected: bool) -> dict[str, np.ndarray]:
        """Canonical arrays of the planned soundings."""
        path = plan.path
        vmap = dict(self.variable_map[plan.gas])
        if not bias_corrected and plan.gas in self.raw_variable:
            vmap["xgas"] = dataclasses.replace(vmap["xgas"], path=self.raw_variable[plan.gas])
        out: dict[str, np.ndarray] = {}
        idx = plan.index
        with cached_nc(path) as ds:
            for name, spec in vmap.items():
                if not _has(ds, spec.path):
                    if spec.required:
                        raise GranuleError(path, f"missing variable {spec.path!r}")
                    continue
                out[name] = self._read_one(ds, spec, idx, path)
        out["quality_flag"] = plan.extra["bad"][idx].astype(np.int8)
        if "longitude" in out:
            out["longitude"] = wrap_longitude(out["longitude"])
        if self.level_order == "toa_first":
            for name, arr in out.items():
                if arr.ndim == 2:
                    out[name] = arr[:, ::-1]
        return add_apriori_column(out)

    def _read_one(  # noqa: C901 - one branch per transform
        self,
        ds: NcHandle,
        spec: VarSpec,
        idx: np.ndarray,
        path: str,
        text_as_bytes: bool = False,
    ) -> np.ndarray:
        var = get_var(ds, spec.path, path)
        raw = read_raw(var, path)
        if idx.size != raw.shape[0]:  # the plan's index is sorted and unique: same size = every sounding
            raw = raw[idx]
        # raw is a fresh array from here on: float32 level arrays are masked in place
        transform = spec.transform
        if transform == "chars":
            arr = raw
            if arr.ndim == 2:
                arr = np.ascontiguousarray(arr).view(f"S{arr.shape[1]}").reshape(arr.shape[0])
            if text_as_bytes:
                return arr if arr.dtype.kind == "S" else np.char.encode(arr.astype("U"), "utf-8")
            return arr.astype("U").astype(object)  # numpy drops the trailing NUL padding of S arrays
        if transform == "int":
            return raw.astype(np.int64)
        if transform == "glint_eq1":
            return (raw == 1).astype(np.int8)
        attrs = _attrs(var, "units") if transform == "time" else _attrs(var)
        if transform == "time":
            return cf_time(mask_fill(raw, attrs, self.bare_fill), attrs.get("units"), path, spec.path)
        vals = mask_fill(raw, attrs, self.bare_fill)
        if spec.factor != 1.0:
            vals = vals.astype(np.float64) * spec.factor
        if transform == "layer_mid":
            vals = 0.5 * (vals[:, :-1] + vals[:, 1:])
        elif transform == "first":
            return vals[:, 0]
        if vals.ndim == 2:
            return vals.astype(np.float32, copy=False)
        return vals


_DTYPES = {"time": "datetime64[ns]", "chars": "object", "int": "int64", "glint_eq1": "int8"}


def _checked_map(value: Any, who: str) -> dict[str, ReaderLayout]:
    """``variable_map`` with every layout checked (plain dicts converted), errors naming ``who``."""
    if not isinstance(value, Mapping):
        raise ReaderContractError(
            f"reader {who}: variable_map must map each gas to a ReaderLayout, found {type(value).__name__}"
        )
    return {gas: as_layout(layout, f"{who} ({gas})") for gas, layout in value.items()}


def add_apriori_column(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add ``xgas_apriori = sum_j h_j x_a,j`` (Form 1, L2_FORMATS.md) when the file has none."""
    if "xgas_apriori" not in out and "profile_apriori" in out and "pressure_weight" in out:
        h = out["pressure_weight"].astype(np.float64)
        xa = out["profile_apriori"].astype(np.float64)
        out["xgas_apriori"] = np.sum(h * xa, axis=1)
    return out


def _has(ds: NcHandle, vpath: str) -> bool:
    try:
        ds[vpath]
    except (KeyError, IndexError):
        return False
    return True


#: The attributes that turn stored values into physical ones (fills and packing).
DECODING_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset")


def _attrs(var: NcVariable, *extra: str) -> dict[str, Any]:
    """The :data:`DECODING_ATTRS` (and ``extra``, e.g. ``"units"``) that ``var`` has.

    Reading any other attribute costs time (~25 us each through HDF5), not meaning.
    """
    wanted = DECODING_ATTRS + extra
    return {k: var.getncattr(k) for k in var.ncattrs() if k in wanted}
