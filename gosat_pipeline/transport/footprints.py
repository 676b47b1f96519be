"""External footprints (STILT, FLEXPART, NAME, CTM Jacobians) as the forward operator."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.schema import GAS_UNIT_TO_MOLMOL, MOLAR_MASS, gas_units
from gosat_pipeline.transport.observations import time_bins

__all__ = ["FOOTPRINT_UNITS", "read_footprints"]

logger = logging.getLogger(__name__)

#: Accepted units of external footprints and their factor to (mol mol-1) / (mol m-2 s-1),
#: i.e. m2 s mol-1. ``{gas}`` per kg flux is handled separately (needs the molar mass).
FOOTPRINT_UNITS: dict[str, float] = {
    "m2 s mol-1": 1.0,
    "mol mol-1 (mol m-2 s-1)-1": 1.0,
    "ppm (umol m-2 s-1)-1": 1.0,  # STILT: 1e-6 / 1e-6
    "ppm m2 s umol-1": 1.0,
    "ppb (nmol m-2 s-1)-1": 1.0,
    "ppb m2 s nmol-1": 1.0,
}


def read_footprints(footprints: str | Path | xr.Dataset, gas: str) -> tuple[xr.DataArray, xr.Dataset]:
    """Read external footprints and convert them to m2 s mol-1.

    Parameters
    ----------
    footprints : path or xarray.Dataset
        netCDF with a variable ``footprint`` (or the only data variable) on dims
        ``(obs, latitude, longitude)`` and coordinates ``obs_latitude``,
        ``obs_longitude``, ``obs_time`` on ``obs``. Units attribute: one of
        :data:`FOOTPRINT_UNITS`, or ``"<gas unit> (kg m-2 s-1)-1"`` (e.g.
        ``"ppb (kg m-2 s-1)-1"``, sensitivity to a mass flux).
    gas : {"CO2", "CH4"}

    Returns
    -------
    (footprint, coords)
        footprint (obs, latitude, longitude) in m2 s mol-1, and the obs coordinates.
    """
    ds = xr.open_dataset(footprints) if isinstance(footprints, str | Path) else footprints
    where = str(footprints) if isinstance(footprints, str | Path) else "footprints dataset"
    name = "footprint" if "footprint" in ds else (list(ds.data_vars)[0] if len(ds.data_vars) == 1 else None)
    if name is None:
        raise SchemaError(f"{where}: no 'footprint' variable; has {list(ds.data_vars)}")
    fp = ds[name]
    if set(fp.dims) != {"obs", "latitude", "longitude"}:
        raise SchemaError(f"{where}: {name!r} has dims {fp.dims}; expected (obs, latitude, longitude)")
    missing = [c for c in ("obs_latitude", "obs_longitude", "obs_time") if c not in ds.variables]
    if missing:
        raise SchemaError(f"{where}: missing observation coordinates {missing} on dim 'obs'")
    units = str(fp.attrs.get("units", "")).strip()
    gu = gas_units(gas)
    if units in FOOTPRINT_UNITS:
        factor = FOOTPRINT_UNITS[units]
    elif units.replace(" ", "") == f"{gu}(kgm-2s-1)-1".replace(" ", "") or units == f"{gu} m2 s kg-1":
        # (gas unit) per (kg m-2 s-1) -> (mol/mol) per (mol m-2 s-1)
        factor = GAS_UNIT_TO_MOLMOL[gas.upper()] * MOLAR_MASS[gas.upper()]
    else:
        allowed = [*FOOTPRINT_UNITS, f"{gu} (kg m-2 s-1)-1"]
        raise SchemaError(f"{where}: footprint units {units!r} not understood; allowed: {allowed}")
    fp = (fp.transpose("obs", "latitude", "longitude").astype("float64") * factor).load()
    fp.attrs = {"units": "m2 s mol-1", "long_name": "column sensitivity to surface flux"}
    coords = ds[["obs_latitude", "obs_longitude", "obs_time"]].load()
    return fp, coords


def _match_footprints(
    fp: xr.DataArray, fcoords: xr.Dataset, ov: xr.Dataset, grid: GridSpec, obs: xr.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Footprint (obs, cell) rows for each super-observation; mean of footprints per (bin, cell).

    Returns the (m_kept, ncell) sensitivities and the indices of the kept observations.
    """
    fgrid = GridSpec.from_coords(fp["latitude"].values, fp["longitude"].values)
    if fgrid.shape != grid.shape or not np.allclose(fgrid.lat, grid.lat) or not np.allclose(fgrid.lon, grid.lon):
        raise SchemaError(
            f"footprint grid {fgrid.shape} ({fgrid.bbox}) differs from the inversion grid "
            f"{grid.shape} ({grid.bbox}); regrid the footprints to the inversion grid first"
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
    for k, key in enumerate(key_o):
        sel = np.flatnonzero(key_f == key)
        if sel.size:
            rows.append(flat[sel].mean(axis=0))
            kept.append(k)
    if len(kept) < key_o.size:
        warnings.warn(
            f"{key_o.size - len(kept)} of {key_o.size} super-observations have no footprint and are dropped",
            stacklevel=3,
        )
    mat = np.array(rows) if rows else np.zeros((0, grid.size))
    return mat, np.asarray(kept, dtype="int64")


