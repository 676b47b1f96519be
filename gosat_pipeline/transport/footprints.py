"""External footprints (STILT, FLEXPART, NAME, IMI's GEOS-Chem Jacobian) as the forward operator.

A footprint :math:`f_{i,c}` (m2 s mol-1) is the sensitivity of receptor *i*'s
column-average dry-air mole fraction (mol mol-1) to a surface flux density (mol m-2 s-1)
in cell *c* that is constant over the receptor's back trajectory, so that
:math:`\\Delta X_i = \\sum_c f_{i,c} F_c`. :func:`open_footprints` reads the output of a peer
model in its own layout (:data:`FOOTPRINT_FORMATS`, detected from the content), converts it
to that canonical form on ``(obs, latitude, longitude)`` with the receptors' positions and
times, and sums it conservatively onto the inversion grid;
:func:`gosat_pipeline.transport.build_jacobian` then averages the footprints of each L3
super-observation's (time bin, cell) and multiplies them by the prior emission patterns of
the state elements. ``docs/footprints.md`` describes every format.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import FootprintError, SchemaError
from gosat_pipeline.grids import GridSpec, regrid_extensive, same_axes, same_grid
from gosat_pipeline.paths import expand_paths, has_glob
from gosat_pipeline.schema import GAS_UNIT_TO_MOLMOL, MOLAR_MASS, gas_units, output_attrs
from gosat_pipeline.transport.footprint_formats import (
    STILT_NAME,
    Block,
    edges_from_centres,
    find_imi_run,
    open_netcdf,
    read_flexpart,
    read_imi,
    read_name,
    read_stilt,
)
from gosat_pipeline.transport.observations import time_bins

__all__ = [
    "AVERAGING_KERNEL_APPLIED",
    "FOOTPRINT_FORMATS",
    "FOOTPRINT_UNITS",
    "detect_footprint_format",
    "footprint_files",
    "open_footprints",
    "read_footprints",
]

logger = logging.getLogger(__name__)

#: Accepted units of generic footprints and their factor to (mol mol-1) / (mol m-2 s-1),
#: i.e. m2 s mol-1. ``{gas unit} (kg m-2 s-1)-1`` (per mass flux) is handled separately.
FOOTPRINT_UNITS: dict[str, float] = {
    "m2 s mol-1": 1.0,
    "mol mol-1 (mol m-2 s-1)-1": 1.0,
    "ppm (umol m-2 s-1)-1": 1.0,  # STILT: 1e-6 / 1e-6
    "ppm m2 s umol-1": 1.0,
    "ppb (nmol m-2 s-1)-1": 1.0,
    "ppb m2 s nmol-1": 1.0,
}

#: Layouts :func:`open_footprints` reads ("auto" detects them from the content).
FOOTPRINT_FORMATS: tuple[str, ...] = ("generic", "stilt", "flexpart", "name", "imi")

#: Whether each format's footprints already include the retrieval's averaging kernel (then
#: the Jacobian does not multiply them by the boundary-layer column sensitivity again).
AVERAGING_KERNEL_APPLIED: dict[str, bool] = {
    "generic": False,
    "stilt": False,
    "flexpart": False,
    "name": True,
    "imi": True,
}


# ------------------------------------------------------------------------------ sources
def footprint_files(source: str | Path | Sequence[str | Path], format: str = "auto") -> list[Path]:  # noqa: A002
    """The files :func:`open_footprints` reads from ``source``.

    A file; a glob's matches; under a folder, the layout's own files (STILT ``*_foot.nc``,
    FLEXPART ``grid_time_*.nc``; of an IMI run its ``StateVector.nc``, prior emission files and
    Jacobian pickles), not everything the folder holds. Used to checksum a run's footprints
    into its manifest and to check them before a run.

    Raises
    ------
    FootprintError
        The path does not exist, the pattern matches nothing or no footprint files are there.
    """
    if format not in ("auto", *FOOTPRINT_FORMATS):
        raise FootprintError(str(source)[:200], f"format {format!r}; allowed: {['auto', *FOOTPRINT_FORMATS]}")
    where, src = _sources(source)
    if isinstance(src, xr.Dataset):
        return []
    fmt = detect_footprint_format(source) if format == "auto" else format
    if fmt == "imi":
        _, pkls, statevector, prior = find_imi_run(src)
        return [statevector, *prior, *pkls]
    return _paths_for(fmt, src)


def _sources(source: Any) -> tuple[str, list[Path] | Path | xr.Dataset]:
    """(description, paths / folder / dataset) of what the user gave."""
    if isinstance(source, xr.Dataset):
        return "footprints dataset", source
    if isinstance(source, str | Path):
        p = Path(source)
        if p.is_dir() and (p / "out" / "footprints").is_dir():
            p = p / "out" / "footprints"  # an R-STILT project: out/footprints links every simulation's footprint
        if p.exists():
            return str(p), p
        if has_glob(source):
            hits = expand_paths(source, recursive=False)
            if not hits:
                raise FootprintError(str(source), "matches no file; check the pattern")
            return str(source), hits
        raise FootprintError(str(source), "does not exist; check the path (relative to the working directory)")
    if isinstance(source, Sequence) and source and all(isinstance(s, str | Path) for s in source):
        paths = [Path(s) for s in source]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FootprintError(missing[0], f"does not exist ({len(missing)} of {len(paths)} footprint files missing)")
        return f"{paths[0]} and {len(paths) - 1} more", paths
    raise FootprintError(
        repr(source)[:80], "footprints must be a path, a glob pattern, a list of paths or an xarray.Dataset"
    )


def _content_format(ds: xr.Dataset) -> str | None:
    names = set(map(str, ds.variables))
    if any(n.startswith("spec") and n.endswith("_mr") for n in names) or "RELLAT1" in names:
        return "flexpart"
    if "foot" in ds.data_vars:
        return "stilt"
    if "fp" in ds.data_vars and {"lat", "lon"} <= set(ds["fp"].dims):
        return "name"
    if "footprint" in ds.data_vars or (len(ds.data_vars) == 1 and "obs" in next(iter(ds.data_vars.values())).dims):
        return "generic"
    return None


def _file_format(path: Path) -> str:
    if path.suffix == ".pkl":
        return "imi"
    if STILT_NAME.match(path.name):
        return "stilt"  # R-STILT's <simulation_id>_foot.nc (its reader checks the content)
    with open_netcdf(path, decode_times=False) as ds:
        fmt = _content_format(ds)
        found = sorted(map(str, ds.data_vars))
    if fmt is None:
        raise FootprintError(
            str(path),
            f"is not a footprint file of a known layout (variables {found[:12]}); expected "
            "'footprint' (obs, latitude, longitude), STILT 'foot', FLEXPART 'spec001_mr' or NAME "
            "'fp' (see docs/footprints.md)",
        )
    return fmt


def detect_footprint_format(source: str | Path | Sequence[str | Path] | xr.Dataset) -> str:
    """The layout of footprints, from their content.

    Parameters
    ----------
    source : path, glob pattern, list of paths, folder or xarray.Dataset

    Returns
    -------
    str
        One of :data:`FOOTPRINT_FORMATS`.

    Notes
    -----
    A folder is an IMI run when it (or ``inversion/data_converted``) holds ``*.pkl``
    Jacobian files or a ``StateVector.nc``; otherwise its ``*_foot.nc`` files are STILT
    footprints and its ``grid_time_*.nc`` files FLEXPART output. A file named like a STILT
    simulation (``yyyymmddHHMM_lon_lat_zagl_foot.nc``) is STILT; other netCDF files are
    recognised by their variables (FLEXPART ``specNNN_mr``/``RELLAT1``, STILT ``foot``, NAME
    ``fp``, generic ``footprint``). Every file of a list must have the same layout.
    """
    where, src = _sources(source)
    if isinstance(src, xr.Dataset):
        fmt = _content_format(src)
        if fmt is None:
            raise FootprintError(
                where, f"has none of the known footprint variables (has {sorted(map(str, src.data_vars))})"
            )
        return fmt
    if isinstance(src, Path) and src.is_dir():
        if (
            (src / "StateVector.nc").is_file()
            or any(src.glob("*.pkl"))
            or any(src.glob("inversion/data_converted/*.pkl"))
        ):
            return "imi"
        if any(src.glob("*_foot.nc")):
            return "stilt"
        if any(src.glob("grid_time_*.nc")):
            return "flexpart"
        ncs = sorted(src.glob("*.nc"))
        if not ncs:
            listing = sorted(p.name for p in src.iterdir())[:10]
            raise FootprintError(
                where,
                f"holds no footprint files (found {listing}); expected STILT *_foot.nc, FLEXPART "
                "grid_time_*.nc, an IMI run (StateVector.nc, *.pkl) or footprint netCDF files",
            )
        return _file_format(ncs[0])
    paths = [src] if isinstance(src, Path) else src
    fmts = {p: _file_format(p) for p in paths}
    kinds = sorted(set(fmts.values()))
    if len(kinds) > 1:
        example = {k: next(str(p) for p, f in fmts.items() if f == k) for k in kinds}
        raise FootprintError(where, f"mixes footprint layouts {example}; read one layout at a time")
    return kinds[0]


def _paths_for(fmt: str, src: Path | list[Path]) -> list[Path]:
    if isinstance(src, list):
        return src
    if src.is_dir():
        pattern = {"stilt": "*_foot.nc", "flexpart": "grid_time_*.nc"}.get(fmt, "*.nc")
        hits = sorted(src.glob(pattern))
        if fmt == "flexpart" and any(not h.name.endswith("_nest.nc") for h in hits):
            hits = [h for h in hits if not h.name.endswith("_nest.nc")]  # the main grid unless only nests are there
        if not hits:
            raise FootprintError(str(src), f"holds no {fmt} footprint files ({pattern})")
        return hits
    return [src]


# ------------------------------------------------------------------------------ generic
def _generic_units(units: str, gas: str, where: str) -> float:
    gu = gas_units(gas)
    if units in FOOTPRINT_UNITS:
        return FOOTPRINT_UNITS[units]
    if units.replace(" ", "") == f"{gu}(kgm-2s-1)-1".replace(" ", "") or units == f"{gu} m2 s kg-1":
        # (gas unit) per (kg m-2 s-1) -> (mol/mol) per (mol m-2 s-1)
        return GAS_UNIT_TO_MOLMOL[gas.upper()] * MOLAR_MASS[gas.upper()]
    allowed = [*FOOTPRINT_UNITS, f"{gu} (kg m-2 s-1)-1"]
    raise FootprintError(where, f"footprint units {units!r} not understood; allowed: {allowed}")


def _read_generic(ds: xr.Dataset, gas: str, where: str) -> tuple[Block, bool | None]:
    name = "footprint" if "footprint" in ds else (list(ds.data_vars)[0] if len(ds.data_vars) == 1 else None)
    if name is None:
        raise FootprintError(where, f"no 'footprint' variable; has {sorted(map(str, ds.data_vars))}")
    fp = ds[name]
    if set(fp.dims) != {"obs", "latitude", "longitude"}:
        raise FootprintError(where, f"{name!r} has dims {fp.dims}; expected (obs, latitude, longitude)")
    missing = [c for c in ("obs_latitude", "obs_longitude", "obs_time") if c not in ds.variables]
    if missing:
        raise FootprintError(where, f"missing observation coordinates {missing} on dim 'obs'")
    factor = _generic_units(str(fp.attrs.get("units", "")).strip(), gas, where)
    vals = fp.transpose("obs", "latitude", "longitude").values.astype("float64") * factor
    lat, lon = ds["latitude"].values.astype("float64"), ds["longitude"].values.astype("float64")
    try:
        times = pd.DatetimeIndex(ds["obs_time"].values).values.astype("datetime64[ns]")
    except (TypeError, ValueError):
        raise FootprintError(
            where, f"obs_time is not a time ({ds['obs_time'].dtype}); write it with CF time units"
        ) from None
    ak = fp.attrs.get("averaging_kernel_applied")
    ids = (
        ds["obs_id"].values.astype(str).tolist()
        if "obs_id" in ds.variables
        else [f"{where}:{k}" for k in range(vals.shape[0])]
    )
    blk = Block(
        np.nan_to_num(vals),
        edges_from_centres(lat, where, "latitude", clip=(-90.0, 90.0)),
        edges_from_centres(lon, where, "longitude"),
        ds["obs_latitude"].values.astype("float64"),
        ds["obs_longitude"].values.astype("float64"),
        times,
        ids,
        where,
    )
    return blk, (None if ak is None else bool(int(ak)))


# ------------------------------------------------------------------------------ combine
def _same_grid(a: Block, b: Block) -> bool:
    return same_axes(a.lat_edges, a.lon_edges, b.lat_edges, b.lon_edges)


def _on_grid(blk: Block, grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """The block's footprints summed onto ``grid`` and the share of each footprint outside it."""
    same = same_axes(blk.lat_edges, blk.lon_edges, grid.lat_edges, grid.lon_edges)
    vals = blk.values if same else regrid_extensive(blk.values, blk.lat_edges, blk.lon_edges, grid)
    total = blk.native_total if blk.native_total is not None else blk.values.reshape(blk.values.shape[0], -1).sum(1)
    inside = vals.reshape(vals.shape[0], -1).sum(1)
    outside = np.where(total > 0, 1.0 - inside / np.where(total > 0, total, 1.0), 0.0)
    return vals, np.clip(outside, 0.0, 1.0)


def _read_blocks(
    fmt: str, src: Any, where: str, gas: str, grid: GridSpec | None
) -> tuple[list[Block], bool | None, dict[str, Any]]:
    """The blocks of one layout, the generic file's averaging-kernel flag and the reader's counts."""
    ak_file: bool | None = None
    info: dict[str, Any] = {}
    if fmt == "generic":
        if isinstance(src, xr.Dataset):
            blk, ak_file = _read_generic(src, gas, where)
            return [blk], ak_file, info
        blocks = []
        for p in _paths_for(fmt, src):
            with open_netcdf(p) as ds:
                blk, ak_file = _read_generic(ds, gas, str(p))
                blocks.append(blk)
        return blocks, ak_file, info
    if isinstance(src, xr.Dataset):
        raise FootprintError(where, f"a {fmt} layout is read from its files; pass the path(s)")
    if fmt == "stilt":
        return read_stilt(_paths_for(fmt, src)), None, info
    if fmt == "flexpart":
        return [b for p in _paths_for(fmt, src) for b in read_flexpart(p, gas)], None, info
    if fmt == "name":
        return [b for p in _paths_for(fmt, src) for b in read_name(p)], None, info
    blocks, info = read_imi(src, gas, grid)
    return blocks, None, info


def open_footprints(
    source: str | Path | Sequence[str | Path] | xr.Dataset,
    gas: str,
    *,
    format: str = "auto",  # noqa: A002 - the natural name of the option
    grid: GridSpec | None = None,
    averaging_kernel_applied: bool | None = None,
) -> xr.Dataset:
    """Read external footprints in any supported layout as one canonical dataset.

    Parameters
    ----------
    source : path, glob pattern, list of paths, folder or xarray.Dataset
        A generic footprint netCDF; STILT ``*_foot.nc`` files (one per receptor: a folder,
        a glob or a list combine into one); a FLEXPART ``grid_time_*.nc``; a processed
        NAME footprint netCDF; an IMI run folder.
    gas : {"CO2", "CH4"}
    format : {"auto", "generic", "stilt", "flexpart", "name", "imi"}
        The layout; ``auto`` detects it (:func:`detect_footprint_format`).
    grid : GridSpec, optional
        Sum the footprints onto this grid by exact overlap fractions
        (:func:`gosat_pipeline.grids.regrid_extensive`); the share of each footprint
        outside it is kept as ``obs_outside_fraction``. Without it every file must be on
        the same grid.
    averaging_kernel_applied : bool, optional
        Whether the footprints already include the retrieval's averaging kernel (default:
        :data:`AVERAGING_KERNEL_APPLIED` of the format, or the generic file's
        ``averaging_kernel_applied`` attribute).

    Returns
    -------
    xarray.Dataset
        ``footprint`` (obs, latitude, longitude) in m2 s mol-1 with coordinates
        ``obs_latitude``, ``obs_longitude`` (degrees), ``obs_time``, ``obs_id`` and
        ``obs_outside_fraction`` (1) on ``obs``; CF latitude/longitude; attributes
        ``footprint_format``, ``footprint_source`` and ``averaging_kernel_applied`` (0/1).
        Written with ``to_netcdf`` it is a generic footprint file, which is how folders of
        per-receptor files (STILT, IMI) are handed to ``transport.footprints`` of a run.

    Raises
    ------
    FootprintError
        For every layout fault, naming the file, the variable, what was found and what to do.
    """
    gas = gas.upper()
    if format not in ("auto", *FOOTPRINT_FORMATS):
        raise FootprintError(str(source)[:200], f"format {format!r}; allowed: {['auto', *FOOTPRINT_FORMATS]}")
    where, src = _sources(source)
    fmt = detect_footprint_format(source) if format == "auto" else format
    blocks, ak_file, info = _read_blocks(fmt, src, where, gas, grid)
    if grid is not None:
        parts = [_on_grid(b, grid) for b in blocks]
        vals = np.concatenate([v for v, _ in parts])
        outside = np.concatenate([o for _, o in parts])
        lat_e, lon_e = grid.lat_edges, grid.lon_edges
    else:
        odd = next((b for b in blocks[1:] if not _same_grid(blocks[0], b)), None)
        if odd is not None:
            raise FootprintError(
                odd.source,
                f"is on another grid ({odd.values.shape[-2:]} cells) than "
                f"{blocks[0].source} ({blocks[0].values.shape[-2:]}); pass grid= to sum them onto "
                "one grid",
            )
        vals = np.concatenate([b.values for b in blocks])
        outside = np.zeros(vals.shape[0])
        lat_e, lon_e = blocks[0].lat_edges, blocks[0].lon_edges
    lat = 0.5 * (lat_e[:-1] + lat_e[1:])
    lon = 0.5 * (lon_e[:-1] + lon_e[1:])
    if not np.all(np.isfinite(vals)):
        raise FootprintError(where, "footprints have non-finite values after conversion")
    ak = (
        averaging_kernel_applied
        if averaging_kernel_applied is not None
        else (ak_file if ak_file is not None else AVERAGING_KERNEL_APPLIED[fmt])
    )
    cat = np.concatenate
    ds = xr.Dataset(
        {
            "footprint": (
                ("obs", "latitude", "longitude"),
                vals,
                {**output_attrs("footprints", "footprint"), "averaging_kernel_applied": int(ak)},
            )
        },
        coords={
            name: (dim, values, output_attrs("footprints", name))
            for name, dim, values in (
                ("obs_latitude", "obs", cat([b.obs_latitude for b in blocks]).astype("float64")),
                ("obs_longitude", "obs", cat([b.obs_longitude for b in blocks]).astype("float64")),
                ("obs_time", "obs", cat([b.obs_time for b in blocks]).astype("datetime64[ns]")),
                ("obs_id", "obs", np.array([i for b in blocks for i in b.obs_id], dtype=str)),
                ("obs_outside_fraction", "obs", outside),
                ("latitude", "latitude", lat),
                ("longitude", "longitude", lon),
            )
        },
        attrs={
            "footprint_format": fmt,
            "footprint_source": where,
            "averaging_kernel_applied": int(ak),
            "gas": gas,
            "Conventions": "CF-1.8",
            **{k: v for k, v in info.items() if isinstance(v, int | float | str)},
        },
    )
    if grid is not None and ds.sizes["obs"] and float(outside.max()) > 0.05:
        logger.info(
            "footprints: %d of %d receptors have more than 5 %% of their footprint outside the inversion grid "
            "(median %.1f %%)",
            int((outside > 0.05).sum()),
            outside.size,
            100 * float(np.median(outside)),
        )
    if info.get("imi_extra_columns") or info.get("imi_rows_dropped"):
        logger.info(
            "IMI Jacobian: %s boundary/OH column(s) not used, %s observation row(s) with missing values dropped",
            info["imi_extra_columns"],
            info["imi_rows_dropped"],
        )
    return ds


def read_footprints(
    footprints: str | Path | Sequence[str | Path] | xr.Dataset,
    gas: str,
    format: str = "auto",  # noqa: A002
    *,
    grid: GridSpec | None = None,
    averaging_kernel_applied: bool | None = None,
) -> tuple[xr.DataArray, xr.Dataset]:
    """Read external footprints and convert them to m2 s mol-1.

    Parameters
    ----------
    footprints : path, glob, list of paths, folder or xarray.Dataset
        See :func:`open_footprints`. The generic layout is a netCDF with ``footprint`` on
        ``(obs, latitude, longitude)`` and ``obs_latitude``, ``obs_longitude``,
        ``obs_time`` on ``obs``; units one of :data:`FOOTPRINT_UNITS` or
        ``"<gas unit> (kg m-2 s-1)-1"`` (e.g. ``"ppb (kg m-2 s-1)-1"``).
    gas : {"CO2", "CH4"}
    format : {"auto", "generic", "stilt", "flexpart", "name", "imi"}
    grid : GridSpec, optional
        Sum the footprints onto this grid (conservatively).
    averaging_kernel_applied : bool, optional

    Returns
    -------
    (footprint, coords)
        footprint (obs, latitude, longitude) in m2 s mol-1 (attrs ``averaging_kernel_applied``,
        ``footprint_format``), and the obs coordinates.
    """
    ds = open_footprints(footprints, gas, format=format, grid=grid, averaging_kernel_applied=averaging_kernel_applied)
    fp = ds["footprint"].reset_coords(drop=True)
    fp.attrs.update(footprint_format=ds.attrs["footprint_format"], footprint_source=ds.attrs["footprint_source"])
    coords = ds[["obs_latitude", "obs_longitude", "obs_time", "obs_id", "obs_outside_fraction"]].reset_coords()
    return fp, coords


def _match_footprints(
    fp: xr.DataArray, fcoords: xr.Dataset, ov: xr.Dataset, grid: GridSpec, obs: xr.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Footprint (obs, cell) rows for each super-observation; mean of footprints per (bin, cell).

    Returns the (m_kept, ncell) sensitivities and the indices of the kept observations.
    """
    fgrid = GridSpec.from_coords(fp["latitude"].values, fp["longitude"].values)
    if not same_grid(fgrid, grid):
        raise SchemaError(
            f"footprint grid {fgrid.shape} ({fgrid.bbox}) differs from the inversion grid "
            f"{grid.shape} ({grid.bbox}); read them with read_footprints(..., grid=) to regrid them"
        )
    starts, ends = time_bins(obs)
    ft = pd.DatetimeIndex(fcoords["obs_time"].values).values
    tbin = np.searchsorted(starts, ft, side="right") - 1
    tbin = np.where((tbin >= 0) & (ft < ends[np.clip(tbin, 0, None)]), tbin, -1)
    fcell = grid.flat_index(fcoords["obs_latitude"].values, fcoords["obs_longitude"].values)
    key_f = np.where((tbin >= 0) & (fcell >= 0), tbin * grid.size + fcell, -1)
    key_o = ov["time_index"].values * grid.size + ov["cell"].values
    flat = fp.values.reshape(fp.sizes["obs"], -1)
    rows, kept = [], []
    order = np.argsort(key_f, kind="stable")
    sorted_keys = key_f[order]
    for k, key in enumerate(key_o):
        lo, hi = np.searchsorted(sorted_keys, key, side="left"), np.searchsorted(sorted_keys, key, side="right")
        if hi > lo:
            rows.append(flat[order[lo:hi]].mean(axis=0))
            kept.append(k)
    if len(kept) < key_o.size:
        warnings.warn(
            f"{key_o.size - len(kept)} of {key_o.size} super-observations have no footprint and are dropped",
            stacklevel=3,
        )
    mat = np.array(rows) if rows else np.zeros((0, grid.size))
    return mat, np.asarray(kept, dtype="int64")
