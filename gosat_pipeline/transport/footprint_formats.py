"""Readers of the output of peer transport models: STILT, FLEXPART, NAME and IMI's Jacobians.

Each reader turns one model's own files into :class:`Block` objects: footprints of
receptors (total-column receptors) on the model's own latitude/longitude cells, in
m2 s mol-1 (mol mol-1 of column-average dry-air mole fraction per mol m-2 s-1 of surface
flux), integrated over the back-trajectory time, with the receptor's position and time.
:func:`gosat_pipeline.transport.open_footprints` combines the blocks, regrids them
conservatively and checks them. The layouts, units and conventions of every format are
documented in ``docs/footprints.md`` with their sources.

References
----------
Lin, J. C. et al. (2003): A near-field tool for simulating the upstream influence of
atmospheric observations: the STILT model, J. Geophys. Res. 108, 4493.
Fasoli, B. et al. (2018): Simulating atmospheric tracer concentrations for spatially
distributed receptors: updates to the STILT model (STILT-R version 2), Geosci. Model Dev.
11, 2813-2824.
Wu, D. et al. (2018): A Lagrangian approach towards extracting signals of urban CO2
emissions from satellite observations of atmospheric column CO2 (X-STILT v1), Geosci. Model
Dev. 11, 4843-4871.
Stohl, A. et al. (2005): Technical note: The Lagrangian particle dispersion model FLEXPART
version 6.2, Atmos. Chem. Phys. 5, 2461-2474 (table 1: output units of backward runs).
Pisso, I. et al. (2019): The Lagrangian particle dispersion model FLEXPART version 10.4,
Geosci. Model Dev. 12, 4955-4997.
Jones, A. et al. (2007): The U.K. Met Office's next-generation atmospheric dispersion model,
NAME III, in Air Pollution Modeling and its Application XVII, Springer, 580-589.
Varon, D. J. et al. (2022): Integrated Methane Inversion (IMI 1.0), Geosci. Model Dev. 15,
5787-5805.
"""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr

from gosat_pipeline.errors import FootprintError
from gosat_pipeline.grids import overlap_fractions, same_axes
from gosat_pipeline.paths import expand_paths
from gosat_pipeline.schema import G0, MOLAR_MASS

__all__ = [
    "Block",
    "STILT_UNITS",
    "NAME_UNITS",
    "FLEXPART_UNITS",
    "read_flexpart",
    "read_imi",
    "read_name",
    "read_stilt",
    "standard_atmosphere_pressure",
]

#: STILT footprint units (R-STILT v2 writes the first; older releases the others): ppm per
#: umol m-2 s-1 = mol mol-1 per mol m-2 s-1 = m2 s mol-1.
STILT_UNITS: tuple[str, ...] = (
    "ppm (umol-1 m2 s)",
    "ppm (umol m-2 s-1)-1",
    "ppm/(umol m-2 s-1)",
    "ppm / (umol m-2 s-1)",
    "ppm m2 s umol-1",
)
#: NAME footprints processed to netCDF (ACRG / OpenGHG layout): already m2 s mol-1.
NAME_UNITS: tuple[str, ...] = ("(mol/mol)/(mol/m2/s)", "mol/mol/(mol/m2/s)", "(mol mol-1) (mol m-2 s-1)-1")
#: FLEXPART backward runs with a mass source and a mass-mixing-ratio receptor
#: (IND_SOURCE = 1, IND_RECEPTOR = 2), Stohl et al. (2005) table 1.
FLEXPART_UNITS = "s m3 kg-1"

# US Standard Atmosphere 1976, troposphere and lower stratosphere
_T0, _LAPSE, _R, _Z11 = 288.15, 0.0065, 8.314462618, 11000.0


@dataclass
class Block:
    """Footprints of some receptors on one source grid.

    Attributes
    ----------
    values : numpy.ndarray, shape (n, ny, nx)
        m2 s mol-1 on the source cells (NaN read as 0).
    lat_edges, lon_edges : numpy.ndarray
        Cell edges of the source grid, degrees (longitude in any 360-degree window).
    obs_latitude, obs_longitude : numpy.ndarray, shape (n,)
    obs_time : numpy.ndarray of datetime64[ns], shape (n,)
    obs_id : list of str
        Where each receptor came from (file name, release name).
    source : str
        The file or folder.
    native_total : numpy.ndarray, optional
        Sum of each footprint over the model's whole grid, when ``values`` is already cut to
        the inversion grid (to report the share that falls outside it).
    """

    values: np.ndarray
    lat_edges: np.ndarray
    lon_edges: np.ndarray
    obs_latitude: np.ndarray
    obs_longitude: np.ndarray
    obs_time: np.ndarray
    obs_id: list[str]
    source: str
    native_total: np.ndarray | None = None


# ------------------------------------------------------------------------------ helpers
def open_netcdf(path: Path, *, decode_times: bool = True) -> xr.Dataset:
    """Open a netCDF file or raise :class:`FootprintError` naming it."""
    try:
        return xr.open_dataset(path, decode_times=decode_times)
    except FileNotFoundError:
        raise FootprintError(str(path), "does not exist; check the path") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is an unreadable file
        raise FootprintError(
            str(path), f"cannot be read as netCDF ({type(exc).__name__}: {exc}); is it a complete netCDF file?"
        ) from None


def edges_from_centres(c: np.ndarray, where: str, name: str, *, clip: tuple[float, float] | None = None) -> np.ndarray:
    """Cell edges from equally spaced, ascending centres."""
    c = np.asarray(c, dtype="float64")
    if c.ndim != 1 or c.size < 2:
        raise FootprintError(where, f"coordinate {name!r} has {c.size} value(s); need at least 2 cell centres")
    d = np.diff(c)
    if not np.all(d > 0) or not np.allclose(d, d[0], rtol=1e-4, atol=0.0):
        raise FootprintError(
            where,
            f"coordinate {name!r} is not equally spaced and ascending "
            f"(steps {d.min():g}..{d.max():g}); only regular latitude/longitude grids are read",
        )
    step = float(np.mean(d))
    e = np.concatenate([c - step / 2, c[-1:] + step / 2])
    return np.clip(e, *clip) if clip else e


def _ascending(values: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip (…, lat, lon) so both axes ascend."""
    if lat.size > 1 and lat[1] < lat[0]:
        values, lat = values[..., ::-1, :], lat[::-1]
    if lon.size > 1 and lon[1] < lon[0]:
        values, lon = values[..., ::-1], lon[::-1]
    return values, lat, lon


def standard_atmosphere_pressure(z: np.ndarray | float) -> np.ndarray:
    """Pressure relative to the surface at height ``z`` (m) in the US Standard Atmosphere 1976.

    .. math:: p/p_0 = (1 - L z / T_0)^{g M / (R L)} \\ (z \\le 11 \\text{ km}), \\quad
              p/p_0 = p_{11}/p_0 \\exp(-g M (z - z_{11}) / (R T_{11})) \\ \\text{above}

    with :math:`T_0` = 288.15 K, :math:`L` = 6.5 K km-1 (COESA 1976); heights are taken as
    geopotential (below 10 km they differ from geometric heights by less than 0.2 %).
    """
    z = np.clip(np.asarray(z, dtype="float64"), 0.0, None)
    expo = G0 * MOLAR_MASS["air"] / (_R * _LAPSE)
    t11 = _T0 - _LAPSE * _Z11
    p11 = (t11 / _T0) ** expo
    low = (1.0 - _LAPSE * np.minimum(z, _Z11) / _T0) ** expo
    return np.where(z <= _Z11, low, p11 * np.exp(-G0 * MOLAR_MASS["air"] * (z - _Z11) / (_R * t11)))


def _str_attr(obj: Any, name: str) -> str:
    v = obj.attrs.get(name, "")
    return v.decode() if isinstance(v, bytes) else str(v)


# ------------------------------------------------------------------------------ STILT
#: R-STILT simulation id: yyyymmddHHMM (or yyyymmddHH in STILT-R v1) _ long _ lati _ zagl, the
#: zagl of a column receptor being "X"; an optional foot id before "_foot.nc".
STILT_NAME = re.compile(
    r"^(?P<time>\d{12}|\d{10})_(?P<lon>[-+]?\d+(?:\.\d*)?)_(?P<lat>[-+]?\d+(?:\.\d*)?)_"
    r"(?P<zagl>X|[-+]?\d+(?:\.\d*)?)(?:_[^/]*)?_foot\.nc$"
)


def stilt_receptor(path: Path) -> tuple[pd.Timestamp, float, float, str]:
    """Receptor time (UTC), latitude, longitude and zagl from a STILT footprint's file name."""
    m = STILT_NAME.match(path.name)
    if m is None:
        raise FootprintError(
            str(path),
            "file name is not a STILT simulation id: expected "
            "'yyyymmddHHMM_<longitude>_<latitude>_<zagl or X>[_<foot id>]_foot.nc' "
            "(R-STILT writes <simulation_id>_foot.nc); rename the file or use the generic layout",
        )
    t = m["time"]
    time = pd.Timestamp(f"{t[:8]}T{t[8:10]}{t[10:12] if len(t) == 12 else '00'}")
    return time, float(m["lat"]), float(m["lon"]), m["zagl"]


def _stilt_foot(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(foot summed over its hourly layers, lat, lon) of one STILT file (netCDF4 directly: thousands of files)."""
    try:
        nc = netCDF4.Dataset(path)
    except FileNotFoundError:
        raise FootprintError(str(path), "does not exist; check the path") from None
    except OSError as exc:
        raise FootprintError(str(path), f"cannot be read as netCDF ({exc}); is it a complete netCDF file?") from None
    with nc:
        if "foot" not in nc.variables:
            raise FootprintError(
                str(path), f"has no variable 'foot' (found {sorted(nc.variables)}); not an R-STILT footprint file"
            )
        foot = nc["foot"]
        dims = tuple(foot.dimensions)
        crs = str(nc.getncattr("crs")).replace(" ", "") if "crs" in nc.ncattrs() else ""
        if "x" in dims or "y" in dims or (crs and "+proj=longlat" not in crs):
            raise FootprintError(
                str(path),
                f"footprint is on a projected grid (crs {crs!r}, dims {dims}); rerun "
                "calc_footprint with projection '+proj=longlat'",
            )
        if not {"lat", "lon"} <= set(dims) or not set(dims) <= {"time", "lat", "lon"}:
            raise FootprintError(str(path), f"variable 'foot' has dims {dims}; expected (time, lat, lon)")
        units = str(foot.getncattr("units")).strip() if "units" in foot.ncattrs() else ""
        if units not in STILT_UNITS:
            raise FootprintError(
                str(path), f"'foot' units {units!r}; expected {STILT_UNITS[0]!r} (ppm per umol m-2 s-1)"
            )
        raw = np.ma.filled(np.ma.asarray(foot[...]).astype("float64"), 0.0)  # _FillValue -1: no particle there
        order = [dims.index(d) for d in ("time", "lat", "lon") if d in dims]
        f = np.nan_to_num(np.transpose(raw, order), nan=0.0)
        if f.ndim == 3:
            f = f.sum(axis=0)  # integrate over the hourly back-trajectory layers
        return f, np.asarray(nc["lat"][:], "float64"), np.asarray(nc["lon"][:], "float64")


def read_stilt(paths: list[Path]) -> list[Block]:
    """Read R-STILT (or X-STILT) ``<simulation_id>_foot.nc`` files, one receptor each.

    Parameters
    ----------
    paths : list of pathlib.Path
        Footprint files; the receptor comes from the file name (see :data:`STILT_NAME`).

    Returns
    -------
    list of Block
        One block per file: ``foot`` (time, lat, lon) in ppm (umol m-2 s-1)-1 summed over
        its hourly back-trajectory layers (the sensitivity to a flux that is constant over
        the whole back trajectory), which is m2 s mol-1 unchanged.

    Notes
    -----
    Only column receptors (zagl ``X``) are accepted: a point receptor's footprint is the
    sensitivity of a near-surface mole fraction, several times larger than that of the
    column average, and must not stand in for a satellite sounding. X-STILT weights the
    particles of a column receptor by the pressure weighting function (``pwf_wgt``) and,
    with ``ak_wgt = TRUE``, by the retrieval's averaging kernel.
    """
    blocks = []
    for path in paths:
        time, lat, lon, zagl = stilt_receptor(path)
        if zagl != "X":
            raise FootprintError(
                str(path),
                f"is a point receptor (zagl {zagl} m): its footprint is the sensitivity "
                "of a near-surface mole fraction, not of a column average. Use column receptors "
                "(R-STILT Column receptor or X-STILT, simulation id ending in '_X')",
            )
        f, lat_c, lon_c = _stilt_foot(path)
        if np.any(f < 0):
            raise FootprintError(str(path), f"'foot' has {int((f < 0).sum())} negative value(s); footprints are >= 0")
        f, lat_c, lon_c = _ascending(f, np.asarray(lat_c), np.asarray(lon_c))
        blocks.append(
            Block(
                f[None],
                edges_from_centres(lat_c, str(path), "lat", clip=(-90.0, 90.0)),
                edges_from_centres(lon_c, str(path), "lon"),
                np.array([lat]),
                np.array([lon]),
                np.array([time.to_datetime64()], dtype="datetime64[ns]"),
                [path.name],
                str(path),
            )
        )
    return blocks


# ------------------------------------------------------------------------------ FLEXPART
_SPEC = re.compile(r"^spec(\d{3})_mr$")
_SINCE = re.compile(r"seconds since\s+(\d{4})-?(\d{2})-?(\d{2})[ T]?(\d{2}):?(\d{2})?:?(\d{2})?")


def _flexpart_reference(ds: xr.Dataset, where: str) -> pd.Timestamp:
    """The time the ``time`` axis and RELSTART/RELEND count from (iedate/ietime in backward runs)."""
    m = _SINCE.search(_str_attr(ds["time"], "units")) if "time" in ds.variables else None
    if m:
        y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return pd.Timestamp(year=y, month=mo, day=d, hour=h, minute=mi, second=s)
    if "iedate" in ds.attrs and "ietime" in ds.attrs:
        return pd.Timestamp(f"{_str_attr(ds, 'iedate')}T{_str_attr(ds, 'ietime').zfill(6)}")
    raise FootprintError(
        where,
        "cannot tell the simulation's reference time: 'time' has no 'seconds since' units "
        "and there are no iedate/ietime attributes",
    )


def _flexpart_spec(ds: xr.Dataset, gas: str, where: str) -> str:
    names = [v for v in ds.data_vars if _SPEC.match(str(v))]
    if not names:
        raise FootprintError(
            where,
            f"no 'specNNN_mr' variable (found {sorted(ds.data_vars)}); FLEXPART writes the "
            "source-receptor relationship there when IOUT is 1, 3 or 5",
        )
    if len(names) == 1:
        return names[0]
    named = [v for v in names if _str_attr(ds[v], "long_name").strip().upper() == gas.upper()]
    if len(named) == 1:
        return named[0]
    raise FootprintError(
        where,
        f"{len(names)} species {names} (long_name "
        f"{[_str_attr(ds[v], 'long_name') for v in names]}) and none, or several, named {gas}; "
        "write one species per file or name the species after the gas",
    )


def _relcom(ds: xr.Dataset, n: int) -> list[str]:
    if "RELCOM" not in ds.variables:
        return [f"release {k + 1}" for k in range(n)]
    raw = ds["RELCOM"].values
    if raw.dtype.kind == "S" and raw.ndim == 2:
        out = [b"".join(r).decode("ascii", "replace").strip() for r in raw]
    else:
        out = [(r.decode("ascii", "replace") if isinstance(r, bytes) else str(r)).strip() for r in raw.ravel()]
    return [o or f"release {k + 1}" for k, o in enumerate(out[:n])]


def column_weights(z1: np.ndarray, z2: np.ndarray, kindz: np.ndarray, where: str, names: list[str]) -> np.ndarray:
    """Pressure weights of the release layers of one column receptor.

    :math:`w_k = (p(z_{1,k}) - p(z_{2,k})) / p_s`, the share of the dry-air column in layer
    *k*; heights (RELKINDZ 1: above ground, 2: above sea level, the lowest release bottom
    taken as the surface) go through :func:`standard_atmosphere_pressure`, pressures
    (RELKINDZ 3, hPa) are used as they are. The column above the top release has no
    sensitivity to the surface within the back trajectory and adds nothing.
    """
    kinds = set(int(k) for k in kindz)
    if len(kinds) != 1 or kinds - {1, 2, 3}:
        raise FootprintError(
            where,
            f"releases {names} mix or use unknown RELKINDZ {sorted(kinds)}; "
            "use 1 (m above ground), 2 (m above sea level) or 3 (hPa) for every layer of a column",
        )
    if kinds == {3}:
        lo, hi = np.maximum(z1, z2), np.minimum(z1, z2)
        w = (lo - hi) / lo.max()
    else:
        bottom, top = np.minimum(z1, z2), np.maximum(z1, z2)
        base = bottom.min()
        w = standard_atmosphere_pressure(bottom - base) - standard_atmosphere_pressure(top - base)
    if np.any(w <= 0):
        bad = [names[k] for k in np.flatnonzero(w <= 0)]
        raise FootprintError(
            where,
            f"release(s) {bad} have no vertical extent (RELZZ1 == RELZZ2): a point receptor's "
            "footprint is not a column footprint. Release a column: several layers from the "
            "surface up (Z1 < Z2 in RELEASES), as for satellite receptors",
        )
    return w


def _check_flexpart_layout(ds: Any, name: str, where: str) -> int:
    """Units and dims of species ``name`` and the release metadata; returns the number of releases."""
    spec = ds[name]
    units = _str_attr(spec, "units").strip()
    if units != FLEXPART_UNITS:
        hint = (
            " (IND_RECEPTOR = 1, a mass-concentration receptor; rerun with IND_RECEPTOR = 2, mass mixing ratio)"
            if units == "s"
            else ""
        )
        raise FootprintError(
            where,
            f"{name} units {units!r}; expected {FLEXPART_UNITS!r} (backward run with "
            f"IND_SOURCE = 1 and IND_RECEPTOR = 2){hint}",
        )
    need = {"pointspec", "time", "height", "latitude", "longitude"}
    if not need <= set(spec.dims) or not set(spec.dims) <= need | {"nageclass"}:
        raise FootprintError(
            where, f"{name} has dims {spec.dims}; expected (nageclass, pointspec, time, height, latitude, longitude)"
        )
    rel = ["RELLAT1", "RELLNG1", "RELSTART", "RELEND", "RELZZ1", "RELZZ2"]
    missing = [v for v in rel if v not in ds.variables]
    if missing:
        raise FootprintError(
            where,
            f"no release metadata {missing}; FLEXPART writes RELLAT1/RELLNG1/RELZZ1/"
            "RELZZ2/RELSTART/RELEND unless write_releases is switched off",
        )
    npoint = int(ds["RELLAT1"].size)
    if spec.sizes["pointspec"] != npoint:
        raise FootprintError(
            where,
            f"{name} has {spec.sizes['pointspec']} pointspec entries for {npoint} releases: "
            "the releases were summed (IOUTPUTFOREACHRELEASE = 0); rerun with "
            "IOUTPUTFOREACHRELEASE = 1 so that each release keeps its own footprint",
        )
    return npoint


def read_flexpart(path: Path, gas: str) -> list[Block]:
    """Read a FLEXPART backward run's ``grid_time_<date>.nc`` (or ``..._nest.nc``).

    Parameters
    ----------
    path : pathlib.Path
    gas : {"CO2", "CH4"}
        Picks the species when the file has several.

    Returns
    -------
    list of Block
        One block holding every column receptor of the file.

    Notes
    -----
    ``specNNN_mr`` (nageclass, pointspec, time, height, latitude, longitude) in s m3 kg-1
    is summed over age classes and output times (the back trajectory). The lowest output
    layer (0 to ``height[0]`` m) is the surface layer: a surface flux *F* (kg m-2 s-1) is a
    volume source *F / h_0* in it, giving the receptor's mass mixing ratio, so

    .. math:: f = \\frac{M_{air}}{h_0} \\sum_{a,t} S_{a,t,0}  \\quad [\\text{m2 s mol-1}]

    (FLEXINVERT's conversion). Releases with the same box centre and release period form
    one column receptor, integrated with :func:`column_weights`.
    """
    where = str(path)
    with open_netcdf(path, decode_times=False) as ds:
        if "ldirect" in ds.attrs and int(ds.attrs["ldirect"]) != -1:
            raise FootprintError(
                where,
                f"is a forward run (ldirect = {int(ds.attrs['ldirect'])}); footprints come from "
                "backward runs (LDIRECT = -1 in COMMAND)",
            )
        name = _flexpart_spec(ds, gas, where)
        spec = ds[name]
        npoint = _check_flexpart_layout(ds, name, where)
        h = ds["height"].values.astype("float64") if "height" in ds.variables else np.array([])
        if h.size == 0 or not h[0] > 0:
            raise FootprintError(
                where, "cannot read the top of the lowest output layer ('height'); need OUTHEIGHTS > 0 m"
            )
        ref = _flexpart_reference(ds, where)
        sp = spec.isel(height=0).astype("float64")  # sum in double precision
        if "nageclass" in sp.dims:
            sp = sp.sum("nageclass")
        srr = sp.sum("time").transpose("pointspec", "latitude", "longitude").values.astype("float64")
        srr = np.nan_to_num(srr, nan=0.0)
        lat1, lon1 = ds["RELLAT1"].values.astype("float64"), ds["RELLNG1"].values.astype("float64")
        lat2 = ds["RELLAT2"].values.astype("float64") if "RELLAT2" in ds.variables else lat1
        lon2 = ds["RELLNG2"].values.astype("float64") if "RELLNG2" in ds.variables else lon1
        z1, z2 = ds["RELZZ1"].values.astype("float64"), ds["RELZZ2"].values.astype("float64")
        kindz = ds["RELKINDZ"].values.astype("int64") if "RELKINDZ" in ds.variables else np.ones(npoint, "int64")
        rs, re_ = ds["RELSTART"].values.astype("int64"), ds["RELEND"].values.astype("int64")
        names = _relcom(ds, npoint)
        lat_c, lon_c = ds["latitude"].values.astype("float64"), ds["longitude"].values.astype("float64")
        if {"outlon0", "outlat0", "dxout", "dyout"} <= set(ds.attrs):
            lon_e = float(ds.attrs["outlon0"]) + float(ds.attrs["dxout"]) * np.arange(lon_c.size + 1)
            lat_e = np.clip(float(ds.attrs["outlat0"]) + float(ds.attrs["dyout"]) * np.arange(lat_c.size + 1), -90, 90)
        else:
            lon_e = edges_from_centres(lon_c, where, "longitude")
            lat_e = edges_from_centres(lat_c, where, "latitude", clip=(-90.0, 90.0))
    if np.any(srr < 0):
        raise FootprintError(where, f"{name} has negative values; a source-receptor relationship is >= 0")
    clat, clon = 0.5 * (lat1 + lat2), 0.5 * (lon1 + lon2)
    keys = pd.MultiIndex.from_arrays([np.round(clat, 4), np.round(clon, 4), rs, re_])
    codes, uniq = pd.factorize(keys)
    conv = MOLAR_MASS["air"] / h[0]
    out = np.zeros((len(uniq), *srr.shape[1:]))
    for g in range(len(uniq)):
        sel = np.flatnonzero(codes == g)
        w = column_weights(z1[sel], z2[sel], kindz[sel], where, [names[k] for k in sel])
        out[g] = np.tensordot(w, srr[sel], axes=1) * conv
    first = np.array([np.flatnonzero(codes == g)[0] for g in range(len(uniq))])
    t = (ref + pd.to_timedelta(0.5 * (rs[first] + re_[first]), unit="s")).values.astype("datetime64[ns]")
    ids = [f"{path.name}:{names[k]}" for k in first]
    return [Block(out, lat_e, lon_e, clat[first], clon[first], t, ids, where)]


# ------------------------------------------------------------------------------ NAME
def read_name(path: Path) -> list[Block]:
    """Read NAME footprints processed to netCDF (the ACRG ``process.py`` / OpenGHG layout).

    ``fp`` (lat, lon, time) in (mol/mol)/(mol/m2/s) = m2 s mol-1, one time step per release
    period (the time stamp is the start of the period, ``period`` its length); the receptor
    is ``release_lat``/``release_lon`` (time). Only satellite column footprints are
    accepted (``lev`` = "column"): ACRG's ``satellite_vertical_profile`` weights the
    levels of a column release by the retrieval's pressure weights and averaging kernel.
    """
    where = str(path)
    with open_netcdf(path) as ds:
        if "fp" not in ds.data_vars:
            raise FootprintError(
                where, f"has no variable 'fp' (found {sorted(ds.data_vars)}); not a processed NAME footprint file"
            )
        fp = ds["fp"]
        if not {"lat", "lon", "time"} <= set(fp.dims) or not set(fp.dims) <= {"lat", "lon", "time", "lev"}:
            raise FootprintError(where, f"'fp' has dims {fp.dims}; expected (lat, lon, time)")
        units = _str_attr(fp, "units").strip()
        if units not in NAME_UNITS:
            raise FootprintError(where, f"'fp' units {units!r}; expected {NAME_UNITS[0]!r}")
        lev = (
            [str(v.decode() if isinstance(v, bytes) else v).strip() for v in np.atleast_1d(ds["lev"].values)]
            if "lev" in ds.variables
            else []
        )
        if lev != ["column"]:
            found = f"lev = {lev}" if lev else "no 'lev' coordinate"
            raise FootprintError(
                where,
                f"is not a satellite column footprint ({found}); a NAME release at one height "
                "gives the sensitivity of a near-surface mole fraction. Process a column release "
                "with ACRG's satellite option (lev 'column')",
            )
        missing = [v for v in ("release_lat", "release_lon") if v not in ds.variables]
        if missing:
            raise FootprintError(where, f"no receptor position {missing} on 'time'")
        if "lev" in fp.dims:
            fp = fp.isel(lev=0)
        vals = np.nan_to_num(fp.transpose("time", "lat", "lon").values.astype("float64"), nan=0.0)
        rlat = np.asarray(ds["release_lat"].values, dtype="float64").reshape(ds.sizes["time"], -1)[:, 0]
        rlon = np.asarray(ds["release_lon"].values, dtype="float64").reshape(ds.sizes["time"], -1)[:, 0]
        times = pd.DatetimeIndex(ds["time"].values)
        period = re.match(r"\s*([0-9.]+)\s*hour", _str_attr(ds["time"], "period"))
        if period and _str_attr(ds["time"], "label").strip() == "left":
            times = times + pd.to_timedelta(0.5 * float(period.group(1)), unit="h")
        lat_c, lon_c = ds["lat"].values, ds["lon"].values
    if np.any(vals < 0):
        raise FootprintError(where, "'fp' has negative values; footprints are >= 0")
    vals, lat_c, lon_c = _ascending(vals, np.asarray(lat_c, "float64"), np.asarray(lon_c, "float64"))
    ids = [f"{path.name}:{k}" for k in range(vals.shape[0])]
    return [
        Block(
            vals,
            edges_from_centres(lat_c, where, "lat", clip=(-90.0, 90.0)),
            edges_from_centres(lon_c, where, "lon"),
            rlat,
            rlon,
            times.values.astype("datetime64[ns]"),
            ids,
            where,
        )
    ]


# ------------------------------------------------------------------------------ IMI
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle plain containers and numpy arrays only: a pickle can run code, so nothing else is built."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and dicts are read)")


def load_imi_pickle(path: Path) -> dict[str, np.ndarray]:
    """Load one IMI ``*_GCtoTROPOMI.pkl`` / ``*_GCtoSatellite.pkl`` (``obs_GC`` and ``K``)."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError:
        raise FootprintError(str(path), "does not exist") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign pickle
        raise FootprintError(
            str(path), f"cannot be read as an IMI Jacobian pickle ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, dict) or "obs_GC" not in obj or "K" not in obj:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise FootprintError(
            str(path),
            f"holds {found}; an IMI Jacobian file is a dict with 'obs_GC' and 'K' "
            "(jacobian.py run with build_jacobian)",
        )
    obs, k = np.asarray(obj["obs_GC"], dtype="float64"), np.asarray(obj["K"], dtype="float64")
    if obs.ndim != 2 or obs.shape[1] < 4 or k.ndim != 2 or k.shape[0] != obs.shape[0]:
        raise FootprintError(
            str(path), f"obs_GC has shape {obs.shape} and K {k.shape}; expected (n, >= 4) and (n, n_elements)"
        )
    return {"obs_GC": obs, "K": k}


_ORBIT = re.compile(r"(\d{8}T\d{6})_(\d{8}T\d{6})")
_STAMP = re.compile(r"(\d{8}T\d{6})")


def imi_time(path: Path) -> np.datetime64:
    """The observation time of an IMI Jacobian file: the middle of the orbit in its satellite file name."""
    m = _ORBIT.search(path.name)
    if m:
        a, b = pd.Timestamp(m.group(1)), pd.Timestamp(m.group(2))
        return (a + (b - a) / 2).to_datetime64()
    m1 = _STAMP.search(path.name)
    if m1:
        return pd.Timestamp(m1.group(1)).to_datetime64()
    raise FootprintError(
        str(path),
        "no observation time in the file name: IMI names it after the satellite file "
        "(e.g. S5P_..._20200101T041523_20200101T055653_..._GCtoTROPOMI.pkl)",
    )


def find_imi_run(source: Path | list[Path]) -> tuple[Path, list[Path], Path, list[Path]]:
    """(run folder, Jacobian pickles, StateVector.nc, prior emission files) of an IMI run."""
    if isinstance(source, list):
        pkls = sorted(source)
        start = pkls[0].parent
    else:
        start = source
        conv = source / "inversion" / "data_converted"
        pkls = sorted((conv if conv.is_dir() else source).glob("*.pkl"))
    run = None
    for cand in (start, *list(start.parents)[:3]):
        if (cand / "StateVector.nc").is_file():
            run = cand
            break
    where = str(source if not isinstance(source, list) else start)
    if run is None:
        raise FootprintError(
            where,
            "no StateVector.nc here or in the 3 folders above: IMI's state vector file "
            "(StateVector(lat, lon), element numbers 1..n) is needed to place the Jacobian's columns",
        )
    if not pkls:
        raise FootprintError(
            where,
            "no Jacobian files (*.pkl) in inversion/data_converted/ or here; run IMI's "
            "jacobian.py with build_jacobian (or point to the folder that holds the .pkl files)",
        )
    prior = [
        str(p)
        for p in expand_paths(str(run / "hemco_prior_emis" / "OutputDir" / "HEMCO_sa_diagnostics*.nc"), recursive=False)
    ]
    if not prior:
        raise FootprintError(
            str(run),
            "no prior emissions hemco_prior_emis/OutputDir/HEMCO_sa_diagnostics*.nc: IMI's "
            "Jacobian is per unit scale factor of its prior, which is needed to turn it into footprints",
        )
    return run, pkls, run / "StateVector.nc", [Path(p) for p in prior]


def _imi_prior_field(p: Path, gas: str, lat_c: np.ndarray, lon_c: np.ndarray, sv_path: Path) -> np.ndarray:
    """IMI's prior emission (kg m-2 s-1) of one HEMCO file on the state-vector grid, (lat, lon)."""
    var_names = (f"Emis{gas.upper()}_Total_ExclSoilAbs", f"Emis{gas.upper()}_Total")
    with open_netcdf(p) as pr:
        name = next((v for v in var_names if v in pr.data_vars), None)
        if name is None:
            raise FootprintError(str(p), f"has none of {list(var_names)} (found {sorted(pr.data_vars)})")
        da = pr[name]
        da = da.mean([d for d in da.dims if d not in ("lat", "lon")]) if da.ndim > 2 else da
        if not same_axes(da["lat"].values, da["lon"].values, lat_c, lon_c):
            raise FootprintError(str(p), f"{name} is on another grid than {sv_path.name}")
        units = _str_attr(pr[name], "units").replace(" ", "").replace("^", "")
        if units and units not in ("kg/m2/s", "kgm-2s-1", "kg/m2s", "kgm-2s-1."):
            raise FootprintError(str(p), f"{name} units {_str_attr(pr[name], 'units')!r}; expected kg/m2/s")
        return np.nan_to_num(da.transpose("lat", "lon").values.astype("float64"))


def read_imi(source: Path | list[Path], gas: str, grid: Any = None) -> tuple[list[Block], dict[str, Any]]:
    """Read the Jacobian of an IMI (GEOS-Chem) run and turn its columns into footprints.

    Parameters
    ----------
    source : pathlib.Path or list of pathlib.Path
        The IMI run folder (with ``StateVector.nc``, ``hemco_prior_emis/OutputDir`` and
        ``inversion/data_converted/*.pkl``), its ``data_converted`` folder, or the pickles.
    gas : {"CH4", "CO2"}
    grid : GridSpec, optional
        When given, the footprints are summed onto it directly (IMI grids are large).

    Returns
    -------
    (blocks, info)
        ``info`` counts what was not used: boundary-condition and OH columns, rows with
        missing values, state-vector elements with no prior emission.

    Notes
    -----
    IMI's ``K`` is :math:`\\partial \\bar X / \\partial x_e` in mol mol-1 per unit scale
    factor of its prior emissions :math:`E` in element *e* (``invert.py`` multiplies it by
    1e9 for ppb), through the satellite's averaging kernel. Footprints
    :math:`f_c` (m2 s mol-1) give :math:`K_e = \\sum_{c \\in e} f_c E_c`; taking the
    footprint uniform over each element,

    .. math:: f_c = K_{e(c)} / \\sum_{c' \\in e(c)} E_{c'}  \\quad (E \\text{ in mol m-2 s-1})

    which is exact for one-cell elements and reproduces every :math:`K_e` for clustered
    ones. Columns after the last emission element (boundary conditions, OH) are dropped:
    the background plane of the state replaces them. Cells outside the state vector
    (``StateVector`` = -9999) get no footprint.
    """
    run, pkls, sv_path, prior_paths = find_imi_run(source)
    with open_netcdf(sv_path) as sv_ds:
        if "StateVector" not in sv_ds.data_vars or set(sv_ds["StateVector"].dims) != {"lat", "lon"}:
            raise FootprintError(str(sv_path), f"needs StateVector(lat, lon); found {dict(sv_ds.data_vars)}")
        sv = sv_ds["StateVector"].transpose("lat", "lon")
        labels = np.nan_to_num(sv.values.astype("float64"), nan=-9999.0)
        lat_c, lon_c = sv["lat"].values.astype("float64"), sv["lon"].values.astype("float64")
    fields = [_imi_prior_field(p, gas, lat_c, lon_c, sv_path) for p in prior_paths]
    emis = np.mean(fields, axis=0) / MOLAR_MASS[gas.upper()]  # mol m-2 s-1
    n_el = int(labels.max()) if np.any(labels > 0) else 0
    lab = np.where(labels > 0, np.rint(labels).astype("int64") - 1, -1)
    totals = np.bincount(lab[lab >= 0], weights=emis[lab >= 0], minlength=n_el)
    lat_e = edges_from_centres(lat_c, str(sv_path), "lat", clip=(-90.0, 90.0))
    lon_e = edges_from_centres(lon_c, str(sv_path), "lon")
    # one-hot (element, cell) and, on a target grid, the share of each cell in each target cell
    ok = lab.ravel() >= 0
    onehot = sp.csr_matrix((np.ones(int(ok.sum())), (lab.ravel()[ok], np.flatnonzero(ok))), shape=(n_el, lab.size))
    if grid is not None:
        wlat = sp.csr_matrix(overlap_fractions(np.sin(np.deg2rad(lat_e)), np.sin(np.deg2rad(grid.lat_edges))))
        wlon = sp.csr_matrix(overlap_fractions(lon_e, grid.lon_edges, periodic=True))
        basis = (onehot @ sp.kron(wlat, wlon).T.tocsr()).tocsr()
        shape, (ge_lat, ge_lon) = grid.shape, (grid.lat_edges, grid.lon_edges)
    else:
        basis, shape, (ge_lat, ge_lon) = onehot, lab.shape, (lat_e, lon_e)
    cells_per_element = np.asarray(onehot.sum(axis=1)).ravel()
    scale = np.divide(1.0, totals, out=np.zeros(n_el), where=totals > 0)
    info = {
        "imi_extra_columns": 0,
        "imi_rows_dropped": 0,
        "imi_elements_without_prior": int((totals <= 0).sum()),
        "imi_elements": n_el,
        "imi_run": str(run),
    }
    blocks = []
    for p in pkls:
        d = load_imi_pickle(p)
        k = d["K"]
        if k.shape[1] < n_el:
            raise FootprintError(
                str(p),
                f"K has {k.shape[1]} columns but {sv_path.name} has {n_el} elements; the "
                "Jacobian and the state vector are from different runs",
            )
        info["imi_extra_columns"] = max(info["imi_extra_columns"], k.shape[1] - n_el)
        k = k[:, :n_el]
        good = np.all(np.isfinite(k), axis=1) & np.all(np.isfinite(d["obs_GC"][:, 2:4]), axis=1)
        info["imi_rows_dropped"] += int((~good).sum())
        if not good.any():
            continue
        per_el = k[good] * scale
        vals = np.asarray(basis.T.dot(per_el.T)).T.reshape(-1, *shape)
        t = np.full(int(good.sum()), imi_time(p), dtype="datetime64[ns]")
        ids = [f"{p.name}:{i}" for i in np.flatnonzero(good)]
        blocks.append(
            Block(
                vals,
                ge_lat,
                ge_lon,
                d["obs_GC"][good, 3],
                d["obs_GC"][good, 2],
                t,
                ids,
                str(p),
                native_total=per_el @ cells_per_element,
            )
        )
    if not blocks:
        raise FootprintError(str(run), f"none of the {len(pkls)} Jacobian file(s) has a usable observation")
    return blocks, info
