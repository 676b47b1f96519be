"""Winds for the transport operator: uniform, or time-mean fields from reanalysis files.

Readers accept the ERA5 (``u10``/``v10``, ``u``/``v`` on ``pressure_level`` or ``level``,
``blh``; time ``valid_time`` or ``time``; latitude descending, longitude 0..360),
MERRA-2 (``U10M``/``V10M``, ``U``/``V`` on ``lev``, ``PBLH``; fill 1e15) and GEOS-FP
(MERRA-2 names, one file per time step) layouts; see shared/reference/INVENTORIES.md
section 3. Several files (a list, directory or glob) are combined by coordinates, so a
MERRA-2 ``slv`` file and a ``flx`` file (``PBLH``) can be given together.

The returned winds are the time mean over ``time_range`` on the inversion grid,
**bilinearly interpolated** (winds are intensive fields; no mass is conserved). Grid
centres within half a source cell of the source's outermost centres take the edge value;
centres further out raise :class:`WindError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import WindError
from gosat_pipeline.grids import GridSpec, wrap_longitude

__all__ = ["PBL_PRESSURE_RANGE_HPA", "open_winds"]

logger = logging.getLogger(__name__)

#: Pressure range (hPa, bottom, top) of the boundary-layer mean wind from pressure levels.
PBL_PRESSURE_RANGE_HPA: tuple[float, float] = (1000.0, 850.0)

_U10 = ("u10", "U10M")
_V10 = ("v10", "V10M")
_U3D = ("u", "U")
_V3D = ("v", "V")
_BLH = ("blh", "PBLH")
_TIME = ("valid_time", "time")
_LEVEL = ("pressure_level", "level", "lev", "isobaricInhPa", "plev")
_LAT = ("latitude", "lat")
_LON = ("longitude", "lon")


def _paths(path: Any) -> list[Path]:
    if isinstance(path, (list, tuple)):
        out = [Path(p) for p in path]
    else:
        p = Path(path)
        if p.is_dir():
            out = sorted(q for q in p.iterdir() if q.suffix in (".nc", ".nc4", ".netcdf"))
        elif any(c in str(p) for c in "*?["):
            out = sorted(p.parent.glob(p.name))
        else:
            out = [p]
    missing = [str(p) for p in out if not p.is_file()]
    if not out or missing:
        raise WindError(f"wind file(s) not found: {missing or path}")
    return out


def _open(paths: list[Path]) -> xr.Dataset:
    try:
        if len(paths) == 1:
            return xr.open_dataset(paths[0]).load()
        dsets = [_rename(xr.open_dataset(p).load()) for p in paths]
        return xr.combine_by_coords(dsets, combine_attrs="drop_conflicts", join="outer")
    except (OSError, ValueError) as exc:
        raise WindError(f"cannot open wind files {[str(p) for p in paths]}: {exc}") from exc


def _first(ds: xr.Dataset, names: Sequence[str]) -> str | None:
    return next((n for n in names if n in ds.variables), None)


def _rename(ds: xr.Dataset) -> xr.Dataset:
    ren = {}
    for names, canon in ((_LAT, "latitude"), (_LON, "longitude"), (_TIME, "time"), (_LEVEL, "level")):
        found = _first(ds, names)
        if found and found != canon and canon not in ds.variables:
            ren[found] = canon
    ds = ds.rename(ren)
    drop = [c for c in ("number", "expver") if c in ds.coords and c not in ds.dims]
    return ds.drop_vars(drop)


def _normalise(ds: xr.Dataset) -> xr.Dataset:
    ds = _rename(ds)
    for c in ("latitude", "longitude"):
        if c not in ds.coords:
            raise WindError(f"wind file has no {c} coordinate; coordinates are {list(ds.coords)}")
    ds = ds.assign_coords(longitude=wrap_longitude(ds["longitude"].values)).sortby("longitude").sortby("latitude")
    for name in ds.data_vars:  # MERRA-2 / GEOS-FP fill value 1e15 when it is not declared
        if np.issubdtype(ds[name].dtype, np.floating):
            ds[name] = ds[name].where(np.abs(ds[name]) < 1e14)
    return ds


def _check_units(da: xr.DataArray, want: str, name: str) -> xr.DataArray:
    import pint

    units = str(da.attrs.get("units", want)).replace("**", "^")
    units = re.sub(r"([A-Za-z])(-?\d+)", r"\1^\2", units)
    try:
        factor = pint.Quantity(1.0, units).to(want).magnitude
    except Exception as exc:  # pint raises several error types
        raise WindError(f"variable {name!r} has units {da.attrs.get('units')!r}, not convertible to {want}: "
                        f"{exc}") from None  # fmt: skip
    return da * factor if factor != 1.0 else da


def _select_time(ds: xr.Dataset, time_range: Any) -> xr.Dataset:
    if time_range is None or "time" not in ds.dims:
        return ds
    start, end = (pd.Timestamp(t) if t is not None else None for t in time_range)
    times = pd.DatetimeIndex(ds["time"].values)
    keep = np.ones(times.size, bool)
    if start is not None:
        keep &= times >= start
    if end is not None:
        keep &= times <= end
    if not keep.any():
        raise WindError(f"no wind time step in {time_range}; the files cover {times.min()} .. {times.max()}")
    return ds.isel(time=np.flatnonzero(keep))


def _layer_weights(levels_hpa: np.ndarray, bottom: float, top: float) -> np.ndarray:
    """Pressure thickness (hPa) of each level's layer clipped to [top, bottom]."""
    order = np.argsort(-levels_hpa)  # descending pressure
    p = levels_hpa[order]
    inter = np.concatenate([[max(p[0], bottom)], 0.5 * (p[1:] + p[:-1]), [min(p[-1], top)]])
    w_sorted = np.clip(np.minimum(inter[:-1], bottom) - np.maximum(inter[1:], top), 0.0, None)
    w = np.empty_like(w_sorted)
    w[order] = w_sorted
    return w


def _pbl_mean(da: xr.DataArray, pressure_range: tuple[float, float]) -> xr.DataArray:
    """Pressure-weighted mean over the boundary-layer levels (NaN levels, e.g. below ground, skipped)."""
    lev = np.asarray(da["level"].values, dtype="float64")
    if np.nanmax(lev) > 2000.0:  # Pa
        lev = lev / 100.0
    w = xr.DataArray(_layer_weights(lev, *pressure_range), dims="level")
    if float(w.sum()) <= 0:
        raise WindError(f"no pressure level within {pressure_range} hPa; levels are {lev.tolist()}")
    valid = da.notnull()
    return (da.fillna(0.0) * w).sum("level") / (valid * w).sum("level")


def _pick_level(da: xr.DataArray, level: str) -> xr.DataArray:
    lev = np.asarray(da["level"].values, dtype="float64")
    scale = 100.0 if np.nanmax(lev) > 2000.0 else 1.0
    target = float(level) * scale
    k = np.flatnonzero(np.isclose(lev, target))
    if k.size == 0:
        raise WindError(f"pressure level {level} hPa not in the file; levels are {(lev / scale).tolist()}")
    return da.isel(level=int(k[0]))


def _select_winds(ds: xr.Dataset, level: str, pressure_range: tuple[float, float]) -> tuple[xr.DataArray, ...]:
    found = sorted(str(v) for v in ds.data_vars)
    u3, v3, u10, v10 = _first(ds, _U3D), _first(ds, _V3D), _first(ds, _U10), _first(ds, _V10)
    has3d = u3 is not None and v3 is not None and "level" in ds[u3].dims
    has10 = u10 is not None and v10 is not None
    if level in ("10m", "surface"):
        if not has10:
            raise WindError(f"level={level!r} needs u10/v10 (ERA5) or U10M/V10M (MERRA-2, GEOS-FP); found {found}")
        return ds[u10], ds[v10], f"10 m wind ({u10}, {v10})"
    if level == "pbl":
        if has3d:
            desc = f"pressure-weighted mean {pressure_range[0]:g}-{pressure_range[1]:g} hPa ({u3}, {v3})"
            return _pbl_mean(ds[u3], pressure_range), _pbl_mean(ds[v3], pressure_range), desc
        if has10:
            return ds[u10], ds[v10], f"10 m wind ({u10}, {v10}); no pressure-level winds in the file"
        raise WindError(f"no wind variables: need u/v on pressure levels or u10/v10 (ERA5), U/V or U10M/V10M "
                        f"(MERRA-2, GEOS-FP); found {found}")  # fmt: skip
    if re.fullmatch(r"\d+(\.\d+)?", str(level)):
        if not has3d:
            raise WindError(f"level={level!r} needs u/v (ERA5) or U/V (MERRA-2) on pressure levels; found {found}")
        return _pick_level(ds[u3], level), _pick_level(ds[v3], level), f"{level} hPa wind ({u3}, {v3})"
    raise WindError(f"level must be 'pbl', '10m' or a pressure in hPa; got {level!r}")


def _to_grid(da: xr.DataArray, grid: GridSpec, name: str) -> np.ndarray:
    """Bilinear interpolation of (latitude, longitude) onto the grid centres (periodic in lon)."""
    da = da.transpose("latitude", "longitude")
    lat, lon = da["latitude"].values, da["longitude"].values
    if lat.size > 1 and lon.size > 1:
        dlon = float(np.median(np.diff(lon)))
        if np.isclose(lon[-1] - lon[0] + dlon, 360.0, atol=1e-6 + 0.01 * dlon):  # global: pad for wrap
            da = xr.concat([da.isel(longitude=[-1]).assign_coords(longitude=[lon[-1] - 360.0]), da,
                            da.isel(longitude=[0]).assign_coords(longitude=[lon[0] + 360.0])], dim="longitude")  # fmt: skip
            lon = da["longitude"].values
    tlat, tlon = grid.lat.copy(), grid.lon.copy()
    tlat = _clamp(tlat, lat, "latitude", name)
    tlon = _clamp(tlon, lon, "longitude", name)
    if lat.size == 1 or lon.size == 1:
        out = da.sel(latitude=tlat, longitude=tlon, method="nearest")
    else:
        out = da.interp(latitude=tlat, longitude=tlon, method="linear")
    return out.transpose("latitude", "longitude").values.astype("float64")


def _clamp(target: np.ndarray, src: np.ndarray, axis: str, name: str) -> np.ndarray:
    half = 0.5 * float(np.median(np.diff(src))) if src.size > 1 else 0.5
    lo, hi = src.min() - half - 1e-9, src.max() + half + 1e-9
    out = target[(target < lo) | (target > hi)]
    if out.size:
        raise WindError(f"wind {name!r} covers {axis} {src.min():g}..{src.max():g}; the grid needs "
                        f"{target.min():g}..{target.max():g}: give winds covering the inversion domain")  # fmt: skip
    return np.clip(target, src.min(), src.max())


def _uniform(grid: GridSpec, u: float | None, v: float | None) -> xr.Dataset:
    u = 0.0 if u is None else float(u)
    v = 0.0 if v is None else float(v)
    ds = xr.Dataset(coords=grid.coords())
    ds["u"] = (("latitude", "longitude"), np.full(grid.shape, u), _attrs("u"))
    ds["v"] = (("latitude", "longitude"), np.full(grid.shape, v), _attrs("v"))
    ds.attrs.update(wind_source="uniform (config)", regrid_method="none", level="uniform")
    return ds


def _attrs(name: str) -> dict[str, str]:
    return {
        "u": {"units": "m s-1", "standard_name": "eastward_wind", "long_name": "eastward wind (time mean)"},
        "v": {"units": "m s-1", "standard_name": "northward_wind", "long_name": "northward wind (time mean)"},
        "blh": {"units": "m", "standard_name": "atmosphere_boundary_layer_thickness",
                "long_name": "boundary layer height (time mean)"},
    }[name]  # fmt: skip


def open_winds(
    path: str | Path | Sequence[str | Path] | None = None,
    *,
    grid: GridSpec,
    u: float | None = None,
    v: float | None = None,
    time_range: tuple[Any, Any] | None = None,
    level: str = "pbl",
    pressure_range: tuple[float, float] = PBL_PRESSURE_RANGE_HPA,
) -> xr.Dataset:
    """Time-mean winds on the inversion grid.

    Parameters
    ----------
    path : path-like, list, directory or glob, optional
        ERA5, MERRA-2 or GEOS-FP netCDF files. ``None``: uniform winds ``u``, ``v``.
    grid : GridSpec
        The inversion grid.
    u, v : float, optional
        Uniform eastward / northward wind, m s-1 (used when ``path`` is None; default 0).
    time_range : (start, end), optional
        Inclusive time window averaged over (anything ``pandas.Timestamp`` parses).
    level : str
        ``"pbl"`` (pressure-weighted mean over ``pressure_range`` when pressure-level
        winds exist, else 10 m winds), ``"10m"``, or a pressure in hPa (``"850"``).
    pressure_range : (bottom, top), hPa
        Boundary-layer pressure range for ``level="pbl"`` (default 1000-850 hPa).

    Returns
    -------
    xarray.Dataset
        ``u``, ``v`` (m s-1) and, when the files have it, ``blh`` (m), on
        ``(latitude, longitude)`` of ``grid``; attrs ``wind_source``, ``level``,
        ``n_times``, ``regrid_method``.

    Raises
    ------
    WindError
        Missing variables (listing what was found), no time step in ``time_range``,
        inconvertible units, or files not covering the grid.

    Notes
    -----
    The boundary-layer mean is :math:`\\bar u = \\sum_k u_k \\Delta p_k / \\sum_k \\Delta p_k`
    with :math:`\\Delta p_k` the pressure thickness of level *k*'s layer (interfaces
    half-way between levels) clipped to the range; levels with missing data (below
    ground) are left out of both sums.
    """
    if path is None:
        return _uniform(grid, u, v)
    paths = _paths(path)
    ds = _select_time(_normalise(_open(paths)), time_range)
    uu, vv, desc = _select_winds(ds, str(level), pressure_range)
    out = xr.Dataset(coords=grid.coords())
    for name, da in (("u", uu), ("v", vv)):
        da = _check_units(da, "m/s", str(da.name or name))
        if "time" in da.dims:
            da = da.mean("time", skipna=True)
        out[name] = (("latitude", "longitude"), _to_grid(da, grid, name), _attrs(name))
    blh = _first(ds, _BLH)
    if blh is not None:
        da = _check_units(ds[blh], "m", blh)
        da = da.mean("time", skipna=True) if "time" in da.dims else da
        out["blh"] = (("latitude", "longitude"), _to_grid(da, grid, blh), _attrs("blh"))
    n_times = int(ds.sizes.get("time", 1))
    out.attrs.update(wind_source=";".join(str(p) for p in paths), level=desc, n_times=n_times,
                     regrid_method="bilinear interpolation of the time mean")  # fmt: skip
    if time_range is not None:
        out.attrs["time_range"] = f"{time_range[0]} .. {time_range[1]}"
    logger.info("winds: %s, %d time steps, %s", desc, n_times, [str(p) for p in paths][:3])
    return out
