"""Winds for the transport operator: uniform, or time-mean fields from reanalysis files.

Readers accept the ERA5 (``u10``/``v10``, ``u``/``v`` on ``pressure_level`` or ``level``,
``blh``; time ``valid_time`` or ``time``; latitude descending, longitude 0..360),
MERRA-2 (``U10M``/``V10M``, ``U``/``V`` on ``lev``, ``PBLH``; fill 1e15) and GEOS-FP
(MERRA-2 names, one file per time step) layouts; see shared/reference/INVENTORIES.md
section 3. Several files (a list, directory or glob) are combined by coordinates, so a
MERRA-2 ``slv`` file and a ``flx`` file (``PBLH``) can be given together.

The time axis may be called ``time``, ``valid_time`` (ERA5 from the new CDS), ``month``
(monthly means: datetimes, or month numbers 1-12 of a climatology such as the
ERA-Interim monthly means of the xarray tutorial) or be absent. Pressure levels are chosen
by value (hPa or Pa). Every layout fault is a :class:`WindError` that says what was found.

The returned winds are on the inversion grid, **bilinearly interpolated** (winds are
intensive fields; no mass is conserved): the time mean over ``time_range`` by default, or
every time step inside it with ``time_resolved=True`` (what the time-resolved transport
needs). Grid centres within half a source cell of the source's outermost centres take the
edge value; centres further out raise :class:`WindError`.
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
from gosat_pipeline.paths import expand_paths

__all__ = ["PBL_PRESSURE_RANGE_HPA", "open_winds"]

logger = logging.getLogger(__name__)

#: Pressure range (hPa, bottom, top) of the boundary-layer mean wind from pressure levels.
PBL_PRESSURE_RANGE_HPA: tuple[float, float] = (1000.0, 850.0)

_U10 = ("u10", "U10M")
_V10 = ("v10", "V10M")
_U3D = ("u", "U")
_V3D = ("v", "V")
_BLH = ("blh", "PBLH")
_TIME = ("valid_time", "time", "month", "date", "Time")
_LEVEL = ("pressure_level", "level", "lev", "isobaricInhPa", "plev")
_LAT = ("latitude", "lat")
_LON = ("longitude", "lon")


def _paths(path: Any) -> list[Path]:
    out = expand_paths(path, suffixes=(".nc", ".nc4", ".netcdf"))
    missing = [str(p) for p in out if not p.is_file()]
    if not out or missing:
        raise WindError(f"wind file(s) not found: {missing or path}")
    return out


def _open(paths: list[Path]) -> xr.Dataset:
    try:
        if len(paths) == 1:
            return xr.open_dataset(paths[0]).load()
        dsets = [_rename(xr.open_dataset(p).load()) for p in paths]
        combined = xr.combine_by_coords(dsets, combine_attrs="drop_conflicts", join="outer")
        return combined if isinstance(combined, xr.Dataset) else combined.to_dataset()
    except Exception as exc:  # netCDF4, h5py and xarray raise many types for unreadable files
        raise WindError(
            f"cannot open wind files {[str(p) for p in paths]} ({type(exc).__name__}: {exc}); "
            "give netCDF files with u/v (ERA5) or U/V (MERRA-2, GEOS-FP)"
        ) from exc


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


def _month_numbers(ds: xr.Dataset) -> bool:
    """True when the time axis holds month numbers 1-12 (a monthly climatology), not dates."""
    if "time" not in ds.coords:
        return False
    vals = np.asarray(ds["time"].values)
    return np.issubdtype(vals.dtype, np.number) and vals.size > 0 and bool(np.all((vals >= 1) & (vals <= 12)))


def _normalise(ds: xr.Dataset) -> xr.Dataset:
    ds = _rename(ds)
    if "time" in ds.dims and "time" in ds.coords and not _month_numbers(ds):
        if not np.issubdtype(np.asarray(ds["time"].values).dtype, np.datetime64):
            raise WindError(
                f"the wind file's time axis holds {ds['time'].dtype} values "
                f"({np.asarray(ds['time'].values)[:3].tolist()}...), neither dates nor month numbers 1-12; "
                "give CF time units ('hours since ...')"
            )
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
        raise WindError(
            f"variable {name!r} has units {da.attrs.get('units')!r}, not convertible to {want}: {exc}"
        ) from None
    return da * factor if factor != 1.0 else da


def _expand_months(ds: xr.Dataset, time_range: Any) -> xr.Dataset:
    """A climatology on month numbers 1-12 -> a dated series (mid-month) over ``time_range``'s years."""
    months = np.asarray(ds["time"].values).astype(int)
    if time_range is None or any(t is None for t in time_range):
        return ds.mean("time", keep_attrs=True)
    start, end = (pd.Timestamp(t) for t in time_range)
    dates, idx = [], []
    for year in range(start.year, end.year + 1):
        for k, mo in enumerate(months):
            t = pd.Timestamp(year=year, month=int(mo), day=15)
            dates.append(t)
            idx.append(k)
    out = ds.isel(time=idx).assign_coords(time=pd.DatetimeIndex(dates))
    missing = sorted(set(range(1, 13)) - set(months.tolist()))
    if missing:
        logger.warning(
            "wind climatology has months %s only; months %s take the nearest month's winds", months.tolist(), missing
        )
    return out.sortby("time")


def _select_time(ds: xr.Dataset, time_range: Any, *, pad: bool = False) -> xr.Dataset:
    if "time" in ds.dims and _month_numbers(ds):
        ds = _expand_months(ds, time_range)
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
        near = (
            np.flatnonzero((times >= start - pd.Timedelta(days=45)) & (times <= end + pd.Timedelta(days=45)))
            if start is not None and end is not None
            else np.zeros(0, int)
        )
        if near.size == 0:
            raise WindError(f"no wind time step in {time_range}; the files cover {times.min()} .. {times.max()}")
        keep[near] = True
    k = np.flatnonzero(keep)
    if pad:  # one step either side, so that a time-resolved run can interpolate up to the window's ends
        k = np.unique(np.clip(np.concatenate([k, [k[0] - 1, k[-1] + 1]]), 0, times.size - 1))
    return ds.isel(time=k)


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


def _select_winds(
    ds: xr.Dataset, level: str, pressure_range: tuple[float, float]
) -> tuple[xr.DataArray, xr.DataArray, str]:
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
        raise WindError(
            f"no wind variables: need u/v on pressure levels or u10/v10 (ERA5), U/V or U10M/V10M "
            f"(MERRA-2, GEOS-FP); found {found}"
        )
    if re.fullmatch(r"\d+(\.\d+)?", str(level)):
        if not has3d:
            raise WindError(f"level={level!r} needs u/v (ERA5) or U/V (MERRA-2) on pressure levels; found {found}")
        return _pick_level(ds[u3], level), _pick_level(ds[v3], level), f"{level} hPa wind ({u3}, {v3})"
    raise WindError(f"level must be 'pbl', '10m' or a pressure in hPa; got {level!r}")


#: Values (time steps x cells) interpolated at once when winds are regridded in time.
_BLOCK_VALUES = 2**24


def _to_grid(da: xr.DataArray, grid: GridSpec, name: str) -> np.ndarray:
    """Bilinear interpolation of ([time,] latitude, longitude) onto the grid centres (periodic in lon).

    The weights are computed once and applied to the time steps in blocks; with a time axis
    the result is float32.
    """
    lead = [d for d in da.dims if d not in ("latitude", "longitude")]
    da = da.transpose(*lead, "latitude", "longitude")
    lat, lon = da["latitude"].values.astype("float64"), da["longitude"].values.astype("float64")
    vals = da.values.astype("float64")
    if lat.size > 1 and lon.size > 1:
        dlon = float(np.median(np.diff(lon)))
        if np.isclose(lon[-1] - lon[0] + dlon, 360.0, atol=1e-6 + 0.01 * dlon):  # global: pad for wrap
            vals = np.concatenate([vals[..., -1:], vals, vals[..., :1]], axis=-1)
            lon = np.concatenate([[lon[-1] - 360.0], lon, [lon[0] + 360.0]])
    tlat = _clamp(grid.lat.copy(), lat, "latitude", name)
    tlon = _clamp(grid.lon.copy(), lon, "longitude", name)
    (i0, i1, wi), (j0, j1, wj) = _weights_1d(lat, tlat), _weights_1d(lon, tlon)

    def interp(v: np.ndarray) -> np.ndarray:
        rows = v[..., i0, :] * (1.0 - wi)[:, None] + v[..., i1, :] * wi[:, None]
        return rows[..., j0] * (1.0 - wj) + rows[..., j1] * wj

    if vals.ndim < 3:
        return interp(vals)
    # time steps in blocks, stored as float32 (as the winds file keeps them): a year of 6-hourly
    # winds on a 0.1 degree ASEAN grid is 1.3 GB per component in float32, and the float64
    # intermediates of one pass over every step peaked at 9 GiB (open_winds alone)
    out = np.empty((*vals.shape[:-2], *grid.shape), dtype="float32")
    step = max(1, int(_BLOCK_VALUES // max(grid.size, 1)))
    for k in range(0, vals.shape[0], step):
        out[k : k + step] = interp(vals[k : k + step])
    return out


def _weights_1d(src: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the two source points around each target and the weight of the second."""
    if src.size == 1:
        z = np.zeros(target.size, dtype="int64")
        return z, z, np.zeros(target.size)
    k = np.clip(np.searchsorted(src, target, side="right") - 1, 0, src.size - 2)
    w = (target - src[k]) / (src[k + 1] - src[k])
    return k, k + 1, np.clip(w, 0.0, 1.0)


def _clamp(target: np.ndarray, src: np.ndarray, axis: str, name: str) -> np.ndarray:
    half = 0.5 * float(np.median(np.diff(src))) if src.size > 1 else 0.5
    lo, hi = src.min() - half - 1e-9, src.max() + half + 1e-9
    out = target[(target < lo) | (target > hi)]
    if out.size:
        raise WindError(
            f"wind {name!r} covers {axis} {src.min():g}..{src.max():g}; the grid needs "
            f"{target.min():g}..{target.max():g}: give winds covering the inversion domain"
        )
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
        "blh": {
            "units": "m",
            "standard_name": "atmosphere_boundary_layer_thickness",
            "long_name": "boundary layer height (time mean)",
        },
    }[name]


def open_winds(
    path: str | Path | Sequence[str | Path] | None = None,
    *,
    grid: GridSpec,
    u: float | None = None,
    v: float | None = None,
    time_range: tuple[Any, Any] | None = None,
    level: str = "pbl",
    pressure_range: tuple[float, float] = PBL_PRESSURE_RANGE_HPA,
    time_resolved: bool = False,
) -> xr.Dataset:
    """Winds on the inversion grid: the time mean, or every time step.

    Parameters
    ----------
    path : path-like, list, directory or glob, optional
        ERA5, MERRA-2 or GEOS-FP netCDF files. ``None``: uniform winds ``u``, ``v``.
    grid : GridSpec
        The inversion grid.
    u, v : float, optional
        Uniform eastward / northward wind, m s-1 (used when ``path`` is None; default 0).
    time_range : (start, end), optional
        Inclusive time window (anything ``pandas.Timestamp`` parses).
    level : str
        ``"pbl"`` (pressure-weighted mean over ``pressure_range`` when pressure-level
        winds exist, else 10 m winds), ``"10m"``, or a pressure in hPa (``"850"``).
    pressure_range : (bottom, top), hPa
        Boundary-layer pressure range for ``level="pbl"`` (default 1000-850 hPa).
    time_resolved : bool
        Keep every time step in ``time_range`` (and one either side of it) instead of the
        time mean: ``u``, ``v`` on ``(time, latitude, longitude)``.

    Returns
    -------
    xarray.Dataset
        ``u``, ``v`` (m s-1) and, when the files have it, ``blh`` (m), on
        ``(latitude, longitude)`` of ``grid`` (with a leading ``time`` when
        ``time_resolved``); attrs ``wind_source``, ``level``, ``n_times``,
        ``regrid_method``, ``time_coverage_start/end``.

    Raises
    ------
    WindError
        Missing variables (listing what was found), an unreadable file or time axis, no
        time step in ``time_range``, inconvertible units, or files not covering the grid.

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
    ds = _select_time(_normalise(_open(paths)), time_range, pad=time_resolved)
    uu, vv, desc = _select_winds(ds, str(level), pressure_range)
    out = xr.Dataset(coords=grid.coords())
    keep_time = time_resolved and "time" in uu.dims
    if keep_time:
        out = out.assign_coords(
            time=(
                "time",
                pd.DatetimeIndex(ds["time"].values).values,
                {"standard_name": "time", "long_name": "time of the wind field"},
            )
        )
    fields = [("u", uu), ("v", vv)]
    blh = _first(ds, _BLH)
    if blh is not None:
        fields.append(("blh", _check_units(ds[blh], "m", blh)))
    for name, da in fields:
        if name != "blh":
            da = _check_units(da, "m/s", str(da.name or name))
        out[name] = _regrid_field(da, grid, name, keep_time)
    n_times = int(ds.sizes.get("time", 1))
    out.attrs.update(
        wind_source=";".join(str(p) for p in paths),
        level=desc,
        n_times=n_times,
        regrid_method="bilinear interpolation" + ("" if keep_time else " of the time mean"),
    )
    if "time" in ds.coords and np.issubdtype(np.asarray(ds["time"].values).dtype, np.datetime64):
        t = pd.DatetimeIndex(np.atleast_1d(ds["time"].values))
        out.attrs.update(time_coverage_start=t.min().isoformat(), time_coverage_end=t.max().isoformat())
    if time_range is not None:
        out.attrs["time_range"] = f"{time_range[0]} .. {time_range[1]}"
    logger.info(
        "winds: %s, %d time steps%s, %s",
        desc,
        n_times,
        " (kept)" if keep_time else " (mean)",
        [str(p) for p in paths][:3],
    )
    return out


def _regrid_field(da: xr.DataArray, grid: GridSpec, name: str, keep_time: bool) -> tuple[tuple[str, ...], Any, dict]:
    """One wind field on the grid: (dims, values, attrs) for a Dataset assignment."""
    if "time" in da.dims and not keep_time:
        da = da.mean("time", skipna=True)
    extra = [d for d in da.dims if d not in ("time", "latitude", "longitude")]
    if extra:
        raise WindError(
            f"wind variable {name!r} has the unexpected dimension(s) {extra} (dims {da.dims}); "
            "expected (time, [level,] latitude, longitude)"
        )
    attrs = dict(_attrs(name))
    if "time" in da.dims:
        vals = _to_grid(da.transpose("time", "latitude", "longitude"), grid, name)
        attrs["long_name"] = attrs["long_name"].replace(" (time mean)", "")
        return ("time", "latitude", "longitude"), vals.astype("float32", copy=False), attrs
    return ("latitude", "longitude"), _to_grid(da, grid, name), attrs
