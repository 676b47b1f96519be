"""Open: the public entry points that chain plan (:mod:`._scan`) and assemble (:mod:`._assemble`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Iterable
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io._assemble import _PLAN_ATTRS_HANDLED, _assemble, _chunk_soundings
from gosat_pipeline.io._scan import _drop_duplicates, _expand, _scan_checked, _scan_one
from gosat_pipeline.schema import LEVEL_DIM, SOUNDING_DIM, gas_units

logger = logging.getLogger(__name__)


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
    ds, _, _ = _open(
        paths_or_glob,
        gas=gas,
        format=format,
        chunks=chunks,
        screen=screen,
        bias_corrected=bias_corrected,
        errors=errors,
    )
    return ds


def _open(
    paths_or_glob: Any,
    *,
    gas: str | None,
    format: str | None,
    chunks: Any,
    screen: bool,
    bias_corrected: bool,
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
        msg = (
            f"dropping {rec['n_duplicates']} soundings of {rec['path']} whose sounding_id was already read "
            f"from {rec['duplicates_of']} (kept the first)"
        )
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
    logger.info("ingest: %d soundings from %d file(s), %d skipped", ds.sizes[SOUNDING_DIM], len(parts), len(skipped))
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
    paths: list[str],
    *,
    gas: str | None = None,
    format: str | None = None,
    screen: bool = True,
    bias_corrected: bool = True,
    errors: str = "skip",
) -> GroupRead:
    """Scan and read a few granules into memory in this process, each file opened and read once.

    The building block of a streaming ingest (``gosat_pipeline.pipeline`` runs one per
    group of files on a worker): :func:`open_granules` on ``paths`` computed at once
    with the synchronous scheduler, warnings kept as records (:class:`GroupRead`).
    """
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # every skip and duplicate is returned as a record
        try:
            ds, keys, files = _open(
                paths, gas=gas, format=format, chunks=0, screen=screen, bias_corrected=bias_corrected, errors=errors
            )
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
    return open_granules([path], gas=gas, format=format, screen=screen, bias_corrected=bias_corrected, errors="raise")


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
