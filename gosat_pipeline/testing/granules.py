"""Synthetic L2 granules written in each product's real file layout (for round trips).

:func:`write_granule` writes a canonical soundings Dataset (e.g. from
:func:`gosat_pipeline.testing.make_soundings`) into the structure, groups, dtypes,
attributes, fill conventions, units strings and level order of a product, as
documented in ``shared/reference/L2_FORMATS.md``:

- ``cci_ocpr`` / ``cci_ocfp``: flat netCDF-4 classic, dims ``n``/``m``/``string_length``,
  surface first, bare -9999.99 fills (no attribute), units ``"1e-9"``/``"1e-6"``,
  ``total_retrievals``/``total_good_retrievals`` attributes; ``raw_x*`` = bias-corrected
  + a fixed offset (:data:`RAW_OFFSET`).
- ``cci_srfp``: ``sounding_dim``, ``level_dim`` = layers + 1, ``layer_dim``; layer AK,
  a-priori and pressure weight; XCO2 labelled ``"1e-9"`` as in the real header.
- ``acos_lite``/``oco2_lite``/``oco3_lite``: netCDF-4, root + ``Sounding``/``Retrieval``
  groups, ``missing_value = -999999``, 20 levels **top of atmosphere first**.
- ``nies_gosat_l2``: HDF5 via h5py, the real V02.80 general-user layout: ``unit``/``longName``
  string arrays and numeric ``invalidValue`` (-9999; -1e30 for columns), ``ppmv`` for both
  gases (XCH4 in ppm), 15-layer arrays **top of atmosphere first**, ``dryAirPartialColumn``
  instead of a pressure grid, ``XCO2ExternalError`` all fill, no bias-corrected value, the
  21 reference levels in ``ancillary/FTSL2DataInformation/prsRefLevel``. Only soundings with
  ``quality_flag == 0`` are written (the product holds NIES-screened retrievals).
- ``nies_gosat2_l2``: the third-party GOSAT-2 SWFP layout (unverified): 16 level edges in
  ``RetrievalResult/pressure_level`` and 15-layer arrays, written top of atmosphere first.
- ``tropomi_ch4``: ``PRODUCT`` + ``SUPPORT_DATA`` groups, ``(time=1, scanline, ground_pixel)``,
  12 layers top first, ``qa_value`` uint8 ``scale_factor = 0.01``, partial-column
  ``methane_profile_apriori`` and ``dry_air_subcolumns`` (mol m-2), Pa pressures.

- ``tropomi_blended_ch4``: the blended TROPOMI+GOSAT product (Balasus et al. 2023) as the
  real v02.04.00 file: flat netCDF-4, dims ``nobs``/``layer``/``corner``, ``time_utc``
  strings, ``methane_mixing_ratio_blended`` (raw ``methane_mixing_ratio`` = value +
  :data:`RAW_OFFSET`), the TROPOMI layer arrays top first, ``qa_value`` uint8 x 0.01.

:func:`granule_soundings` makes canonical soundings a format can represent exactly
(its gas, level count and vertical grid) so that write -> read returns the input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.io import close_cached
from gosat_pipeline.schema import cf_attrs
from gosat_pipeline.testing.soundings import make_soundings

__all__ = [
    "GRANULE_FORMATS",
    "RAW_OFFSET",
    "granule_filename",
    "granule_soundings",
    "write_granule",
    "make_granule_files",
]

#: format -> (default gas, levels on the canonical ``level`` dim, gases allowed)
GRANULE_FORMATS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "cci_ocpr": ("CH4", 20, ("CH4",)),
    "cci_ocfp": ("CO2", 20, ("CO2",)),
    "cci_srfp": ("CO2", 12, ("CO2", "CH4")),
    "acos_lite": ("CO2", 20, ("CO2",)),
    "oco2_lite": ("CO2", 20, ("CO2",)),
    "oco3_lite": ("CO2", 20, ("CO2",)),
    "nies_gosat_l2": ("CH4", 15, ("CO2", "CH4")),
    "nies_gosat2_l2": ("CO2", 15, ("CO2", "CH4")),
    "tropomi_ch4": ("CH4", 12, ("CH4",)),
    "tropomi_blended_ch4": ("CH4", 12, ("CH4",)),
}

#: raw (not bias-corrected) value written = canonical value + this offset (canonical units).
RAW_OFFSET: dict[str, float] = {"CO2": 0.8, "CH4": 7.71}

_CCI_FILL = np.float32(-9999.99)
_LITE_FILL = np.float32(-999999.0)
_S5P_FILL = np.float32(9.96921e36)
_G = 9.80665
_M_AIR = 0.0289644


def _day(date: Any) -> pd.Timestamp:
    return pd.Timestamp(date).tz_localize(None) if pd.Timestamp(date).tzinfo else pd.Timestamp(date)


def granule_filename(format: str, date: Any, *, gas: str | None = None) -> str:
    """A file name following the product's real naming pattern for day ``date``.

    Parameters
    ----------
    format : str
        A key of :data:`GRANULE_FORMATS`.
    date : str, datetime or Timestamp
        UTC day of the soundings.
    gas : {"CO2", "CH4"}, optional
        Needed by products whose name carries the gas (CCI SRFP, NIES GOSAT).
    """
    d = _day(date)
    gas = (gas or _spec(format)[0]).upper()
    ymd, yymmdd = d.strftime("%Y%m%d"), d.strftime("%y%m%d")
    names = {
        "cci_ocpr": f"ESACCI-GHG-L2-CH4-GOSAT-OCPR-{ymd}-fv7.2.nc",
        "cci_ocfp": f"ESACCI-GHG-L2-CO2-GOSAT-OCFP-{ymd}-fv7.3.nc",
        "cci_srfp": f"ESACCI-GHG-L2-{gas}-GOSAT2-SRFP-{ymd}-fv2.nc",
        "acos_lite": f"acos_LtCO2_{yymmdd}_v210210_B9213A_201026001634s.nc4",
        "oco2_lite": f"oco2_LtCO2_{yymmdd}_B11100Ar_230603215457s.nc4",
        "oco3_lite": f"oco3_LtCO2_{yymmdd}_B10400Br_220317000000s.nc4",
        "nies_gosat_l2": f"GOSATTFTS{ymd}_02{'C01S' if gas == 'CO2' else 'C02S'}V0280R{yymmdd}GU000.h5",
        "nies_gosat2_l2": f"GOSAT2TFTS2{ymd}_02SWFPV0220000018.h5",
        "tropomi_ch4": (
            f"S5P_OFFL_L2__CH4____{ymd}T000000_{ymd}T235959_{10000 + d.day_of_year:05d}_03_020400_{ymd}T120000.nc"
        ),
        "tropomi_blended_ch4": (
            f"S5P_BLND_L2__CH4____{ymd}T000000_{ymd}T235959_{10000 + d.day_of_year:05d}_03_020400_20230614T000922.nc"
        ),
    }
    return names[format]


def _spec(format: str) -> tuple[str, int, tuple[str, ...]]:
    if format not in GRANULE_FORMATS:
        raise ValueError(f"unknown granule format {format!r}; known: {sorted(GRANULE_FORMATS)}")
    return GRANULE_FORMATS[format]


def granule_soundings(
    format: str,
    n: int = 200,
    gas: str | None = None,
    *,
    seed: int = 0,
    bbox: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0),
    start: str = "2020-01-01",
    end: str | None = None,
    bad_fraction: float = 0.2,
) -> xr.Dataset:
    """Canonical soundings that ``format`` represents exactly (gas, levels, vertical grid).

    Adds ``surface_type`` (0 land / 1 glint) and, for layer products (SRFP, GOSAT-2,
    TROPOMI), replaces the level grid by the layer mid-pressures of an equidistant
    level grid from the surface pressure to the top, with ``h`` = layer thickness / p_s.
    Times fall within one UTC day from ``start`` unless ``end`` is given.
    """
    default_gas, n_levels, gases = _spec(format)
    gas = (gas or default_gas).upper()
    if gas not in gases:
        raise ValueError(f"{format} holds {gases}, not {gas}")
    t0 = pd.Timestamp(start)
    t1 = pd.Timestamp(end) if end else t0 + pd.Timedelta(hours=23, minutes=59)
    if format == "nies_gosat_l2":
        bad_fraction = 0.0  # the general-user product holds only soundings NIES screened as good
    ds = make_soundings(
        n, gas, seed=seed, bbox=bbox, start=str(t0), end=str(t1), n_levels=n_levels, bad_fraction=bad_fraction
    )
    rng = np.random.default_rng(seed + 7)
    ds["surface_type"] = ("sounding", (rng.uniform(size=n) < 0.3).astype("int8"), cf_attrs("surface_type"))
    ps = ds.surface_pressure.values
    if format in ("cci_srfp", "nies_gosat2_l2", "tropomi_ch4", "tropomi_blended_ch4"):
        edges = ps[:, None] * np.linspace(1.0, 0.0, n_levels + 1)[None, :]
        mid = 0.5 * (edges[:, :-1] + edges[:, 1:])
        ds["pressure"] = (("sounding", "level"), mid, ds.pressure.attrs)
        h = -np.diff(edges, axis=1) / ps[:, None]
        ds["pressure_weight"] = (("sounding", "level"), h, ds.pressure_weight.attrs)
    elif format == "nies_gosat_l2":
        # 15 layers of nearly equal dry-air mass, the upper ones slightly heavier (lower gravity, drier air),
        # as in the real V02.80 files; pressures in the reader's dry-air-mass coordinate
        w = np.broadcast_to(
            1.0 + 0.02 * np.linspace(0.0, 1.0, n_levels) + 0.004 * rng.standard_normal(n_levels), (n, n_levels)
        )
        h = w / w.sum(axis=1, keepdims=True)
        below = np.cumsum(h, axis=1) - h
        ds["pressure"] = (("sounding", "level"), ps[:, None] * (1.0 - below - 0.5 * h), ds.pressure.attrs)
        ds["pressure_weight"] = (("sounding", "level"), h, ds.pressure_weight.attrs)
        # a stratospheric top: the a-priori CO2 (CH4) of the upper layers falls off as in the real files
        frac = np.linspace(0.0, 1.0, n_levels) ** 4
        drop = {"CO2": 8.0, "CH4": 250.0}[gas]
        ds["profile_apriori"] = (
            ("sounding", "level"),
            ds.profile_apriori.values - drop * frac[None, :],
            ds.profile_apriori.attrs,
        )
    ds["xgas_apriori"] = (
        "sounding",
        (ds.profile_apriori.values * ds.pressure_weight.values).sum(axis=1),
        ds.xgas_apriori.attrs,
    )
    ds.attrs["gas"] = gas
    return ds


def _f32(values: Any, fill: np.float32) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(a), a, fill).astype(np.float32)


def _epoch_seconds(ds: xr.Dataset, epoch: str = "1970-01-01") -> np.ndarray:
    t = ds.time.values.astype("datetime64[ns]")
    out = (t - np.datetime64(epoch, "ns")).astype("timedelta64[ns]").astype(np.float64) / 1e9
    out[np.isnat(t)] = np.nan
    return out


def _ids(ds: xr.Dataset) -> np.ndarray:
    if "sounding_id" in ds:
        return np.asarray(ds.sounding_id.values)
    return np.arange(ds.sizes["sounding"], dtype=np.int64)


def _surface(ds: xr.Dataset) -> np.ndarray:
    if "surface_type" in ds:
        return np.nan_to_num(np.asarray(ds.surface_type.values, dtype=float)).astype(np.int8)
    return np.zeros(ds.sizes["sounding"], dtype=np.int8)


def _opt(ds: xr.Dataset, name: str, default: float) -> np.ndarray:
    if name in ds:
        return np.asarray(ds[name].values, dtype=np.float64)
    return np.full(ds.sizes["sounding"], default)


def _deflate(nc: Any, dims: tuple[str, ...], level: int) -> dict[str, Any]:
    """Compression as the real files have it: deflate ``level`` + shuffle, one chunk per variable.

    The released CCI GOSAT files (checked on ``../shared/real_samples``, OCPR v7.2)
    use level 4, TROPOMI L2 level 3, each variable in a single chunk.
    """
    shape = tuple(max(1, len(_dimension(nc, d))) for d in dims)
    return {"zlib": True, "complevel": level, "shuffle": True, "chunksizes": shape}


def _dimension(grp: Any, name: str) -> Any:
    while name not in grp.dimensions:  # dimensions are visible from the groups below their own
        grp = grp.parent
    return grp.dimensions[name]


# -- CCI -------------------------------------------------------------------------------------
def _write_cci_flat(ds: xr.Dataset, path: Path, gas: str) -> None:
    g, unit = gas.lower(), {"CH4": "1e-9", "CO2": "1e-6"}[gas]
    n, m = ds.sizes["sounding"], ds.sizes["level"]
    flag = np.asarray(ds.quality_flag.values, dtype=np.int8)
    with netCDF4.Dataset(path, "w", format="NETCDF4_CLASSIC") as nc:
        nc.createDimension("n", n)
        nc.createDimension("m", m)
        nc.createDimension("string_length", 22)

        def var(name: str, values: Any, dims: tuple[str, ...], units: str, dtype: str = "f4") -> None:
            v = nc.createVariable(name, dtype, dims, **_deflate(nc, dims, 4))
            v.long_name = name
            v.units = units
            v[:] = _f32(values, _CCI_FILL) if dtype == "f4" else values

        var(
            "time",
            np.nan_to_num(_epoch_seconds(ds), nan=float(_CCI_FILL)),
            ("n",),
            "seconds since 1970-01-01 00:00:00",
            "f8",
        )
        var("latitude", ds.latitude.values, ("n",), "degrees_north")
        var("longitude", ds.longitude.values, ("n",), "degrees_east")
        var(f"x{g}", ds.xgas.values, ("n",), unit)
        var(f"raw_x{g}", ds.xgas.values + RAW_OFFSET[gas], ("n",), unit)
        var(f"x{g}_uncertainty", ds.xgas_uncertainty.values, ("n",), unit)
        var(f"raw_x{g}_error", ds.xgas_uncertainty.values, ("n",), unit)
        var(f"x{g}_quality_flag", flag, ("n",), "1", "i1")
        nc[f"x{g}_quality_flag"].short_description = "good_quality potentially_bad_quality: 0=good, 1=bad"
        var(f"x{g}_averaging_kernel", ds.averaging_kernel.values, ("n", "m"), "1")
        var(f"{g}_profile_apriori", ds.profile_apriori.values, ("n", "m"), unit)
        var("pressure_levels", ds.pressure.values, ("n", "m"), "hPa")
        var("pressure_weight", ds.pressure_weight.values, ("n", "m"), "1")
        var("surface_air_pressure_apriori", _opt(ds, "surface_pressure", np.nan), ("n",), "hPa")
        var("solar_zenith_angle", _opt(ds, "solar_zenith_angle", np.nan), ("n",), "degree")
        var("sensor_zenith_angle", np.zeros(n), ("n",), "degree")
        var("retr_flag", _surface(ds), ("n",), "1", "i1")
        var("gain", np.zeros(n, dtype=np.int8), ("n",), "1", "i1")
        if gas == "CH4":
            var("raw_xco2", np.full(n, 400.0), ("n",), "1e-6")
            var("model_xco2", np.full(n, 400.0), ("n",), "1e-6")
        ids = [str(int(i)).zfill(22) if np.asarray(i).dtype.kind in "iu" else str(i)[:22].ljust(22) for i in _ids(ds)]
        v = nc.createVariable("exposure_id", "S1", ("n", "string_length"), **_deflate(nc, ("n", "string_length"), 4))
        v.units = "1"
        v[:] = netCDF4.stringtochar(np.array(ids, dtype="S22")) if n else np.zeros((0, 22), "S1")
        nc.setncatts(
            {
                "title": f"ESA CCI GOSAT {'OCPR CH4' if gas == 'CH4' else 'OCFP CO2'}",
                "institution": "University of Leicester",
                "Conventions": "CF-1.6",
                "product_version": "v7.2" if gas == "CH4" else "v7.3",
                "filter_used": "default",
                "total_retrievals": np.int32(n),
                "total_good_retrievals": np.int32(int((flag == 0).sum())),
                "platform": "GOSAT",
                "sensor": "TANSO-FTS",
                "comment": "synthetic (gosat_pipeline.testing)",
            }
        )


def _level_edges(mid: np.ndarray, ps: np.ndarray) -> np.ndarray:
    edges = np.empty((mid.shape[0], mid.shape[1] + 1))
    edges[:, 0] = ps
    for k in range(mid.shape[1]):
        edges[:, k + 1] = 2.0 * mid[:, k] - edges[:, k]
    return edges


def _write_cci_srfp(ds: xr.Dataset, path: Path, gas: str) -> None:
    g = gas.lower()
    n, nl = ds.sizes["sounding"], ds.sizes["level"]
    flag = np.asarray(ds.quality_flag.values, dtype=np.int32)
    ps = _opt(ds, "surface_pressure", np.nan)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("sounding_dim", n)
        nc.createDimension("level_dim", nl + 1)
        nc.createDimension("layer_dim", nl)

        def var(name: str, values: Any, dims: tuple[str, ...], units: str, dtype: str = "f4") -> None:
            v = nc.createVariable(name, dtype, dims, **_deflate(nc, dims, 4))
            v.units = units
            v[:] = _f32(values, _CCI_FILL) if dtype == "f4" else values

        s, lay, lev = ("sounding_dim",), ("sounding_dim", "layer_dim"), ("sounding_dim", "level_dim")
        var("time", _epoch_seconds(ds), s, "seconds since 1970-01-01 00:00:00", "f8")
        var("latitude", ds.latitude.values, s, "degrees_north")
        var("longitude", ds.longitude.values, s, "degrees_east")
        var(f"x{g}", ds.xgas.values, s, "1e-9")  # the real GOSAT-2 header labels XCO2 "1e-9" (it is ppm)
        var(f"raw_x{g}", ds.xgas.values + RAW_OFFSET[gas], s, "1e-9")
        var(f"x{g}_uncertainty", ds.xgas_uncertainty.values, s, "1e-9")
        var(f"x{g}_quality_flag", flag, s, "1", "i4")
        var(f"x{g}_averaging_kernel", ds.averaging_kernel.values, lay, "1")
        var(f"{g}_profile_apriori", ds.profile_apriori.values, lay, "1e-9")
        var("pressure_weight", ds.pressure_weight.values, lay, "1")
        var("pressure_levels", _level_edges(ds.pressure.values, ps), lev, "hPa")
        nc["pressure_levels"].comment = "Surface pressure is represented by the 1st element"
        var("dry_airmass_layer", ds.pressure_weight.values * 2.1e29, lay, "molecules m-2")
        var("solar_zenith_angle", _opt(ds, "solar_zenith_angle", np.nan), s, "degree")
        var("flag_sunglint", _surface(ds).astype(np.int32), s, "1", "i4")
        var("flag_landtype", (1 - _surface(ds)).astype(np.int32), s, "1", "i4")
        ids = _ids(ds)
        var("exposure_id", ids.astype(np.int64) if ids.dtype.kind in "iu" else np.arange(n), s, "1", "i8")
        nc.setncatts(
            {
                "title": f"ESA CCI GOSAT-2 SRFP X{gas}",
                "institution": "SRON",
                "product_version": "v2.0.0",
                "Conventions": "CF-1.6",
                "comment": "synthetic (gosat_pipeline.testing)",
            }
        )


# -- Lite ------------------------------------------------------------------------------------
def _write_lite(ds: xr.Dataset, path: Path, platform: str) -> None:
    n, m = ds.sizes["sounding"], ds.sizes["level"]
    oco = platform != "GOSAT"
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("sounding_id", n)
        nc.createDimension("levels", m)
        nc.createDimension("epoch_dimension", 7)
        nc.createDimension("bands", 3)
        if oco:
            nc.createDimension("vertices", 4)

        def var(grp: Any, name: str, values: Any, dims: tuple[str, ...], units: str, dtype: str = "f4") -> None:
            v = grp.createVariable(name, dtype, dims)
            if dtype == "f4":
                v.missing_value = _LITE_FILL
                values = _f32(values, _LITE_FILL)
            v.units = units
            v[:] = values

        s, lv = ("sounding_id",), ("sounding_id", "levels")
        ids = _ids(ds)
        var(nc, "sounding_id", ids.astype(np.int64) if ids.dtype.kind in "iu" else np.arange(n), s, "1", "i8")
        var(
            nc,
            "time",
            np.nan_to_num(_epoch_seconds(ds), nan=float(_LITE_FILL)),
            s,
            "seconds since 1970-01-01 00:00:00",
            "f8",
        )
        nc["time"].missing_value = np.float64(_LITE_FILL)
        t = pd.DatetimeIndex(ds.time.values)
        date = np.stack([t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond // 1000], axis=1)
        var(nc, "date", np.nan_to_num(date, nan=-1).astype(np.int16), ("sounding_id", "epoch_dimension"), "1", "i2")
        var(nc, "latitude", ds.latitude.values, s, "degrees_north")
        var(nc, "longitude", ds.longitude.values, s, "degrees_east")
        var(nc, "solar_zenith_angle", _opt(ds, "solar_zenith_angle", np.nan), s, "degrees")
        var(nc, "sensor_zenith_angle", np.zeros(n), s, "degrees")
        var(nc, "xco2", ds.xgas.values, s, "ppm")
        var(nc, "xco2_uncertainty", ds.xgas_uncertainty.values, s, "ppm")
        var(nc, "xco2_apriori", _opt(ds, "xgas_apriori", np.nan), s, "ppm")
        var(nc, "xco2_quality_flag", np.asarray(ds.quality_flag.values, dtype=np.int8), s, "1", "i1")
        if oco:
            var(nc, "xco2_qf_simple_bitflag", np.asarray(ds.quality_flag.values, dtype=np.int8), s, "1", "i1")
            for c in ("latitude", "longitude"):
                off = np.array([-0.01, 0.01, 0.01, -0.01])
                var(nc, f"vertex_{c}", ds[c].values[:, None] + off[None, :], ("sounding_id", "vertices"), "degrees")
        # profiles top of atmosphere first, as in the product
        var(nc, "pressure_levels", ds.pressure.values[:, ::-1], lv, "hPa")
        var(nc, "co2_profile_apriori", ds.profile_apriori.values[:, ::-1], lv, "ppm")
        var(nc, "xco2_averaging_kernel", ds.averaging_kernel.values[:, ::-1], lv, "1")
        var(nc, "pressure_weight", ds.pressure_weight.values[:, ::-1], lv, "1")
        snd, ret = nc.createGroup("Sounding"), nc.createGroup("Retrieval")
        var(snd, "operation_mode", _surface(ds), s, "1", "i1")
        if not oco:
            gain = snd.createVariable("gain", "S1", s)
            gain[:] = np.full(n, b"H", dtype="S1")
        var(ret, "psurf", _opt(ds, "surface_pressure", np.nan), s, "hPa")
        var(ret, "xco2_raw", ds.xgas.values + RAW_OFFSET["CO2"], s, "ppm")
        nc.setncatts(
            {
                "title": f"{'ACOS GOSAT' if not oco else platform} Lite XCO2",
                "platform": platform,
                "comment": "synthetic (gosat_pipeline.testing)",
            }
        )


# -- NIES HDF5 -------------------------------------------------------------------------------
def _h5(
    f: h5py.File,
    name: str,
    values: Any,
    unit: str | None = "",
    invalid: float | None = None,
    valid: tuple[float, float] | None = None,
) -> None:
    """A dataset with the NIES attributes: ``unit``/``longName`` string arrays, numeric ``invalidValue``."""
    arr = np.asarray(values)
    d = f.create_dataset(name, data=arr)
    if unit is None:  # as the real files: some datasets (flags, ids) have no attributes
        return
    if invalid is not None:
        d.attrs["invalidValue"] = np.array([invalid], dtype=arr.dtype)
    d.attrs["longName"] = np.array([name.rsplit("/", 1)[-1].encode()])
    d.attrs["unit"] = np.array([(unit or "none").encode()])
    if valid is not None:
        d.attrs["validRange"] = np.array(valid, dtype=arr.dtype)


def _nan_to(values: Any, fill: float, dtype: str = "f4") -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(a), a, fill).astype(dtype)


def _time_strings(ds: xr.Dataset, sep: str, z: str) -> np.ndarray:
    t = pd.DatetimeIndex(ds.time.values)
    s = t.strftime(f"%Y-%m-%d{sep}%H:%M:%S.%f").str[:-3] + z
    s = [x if isinstance(x, str) else "" for x in s]  # NaT -> empty
    return np.array([x.encode() for x in s], dtype=f"S{23 + len(z)}")


#: NIES GOSAT reference levels (``ancillary/FTSL2DataInformation/prsRefLevel``, V02.80), hPa.
NIES_REFERENCE_LEVELS = np.array(
    [1000, 975, 950, 925, 900, 850, 800, 700, 600, 500, 400, 300, 250, 200, 150, 100, 70, 50, 30, 20, 10],
    dtype=np.float32,
)
#: Split of the canonical uncertainty into the NIES error components (root-sum-square = 1).
NIES_ERROR_SPLIT = {"InterferenceError": 0.3, "RetrievalNoise": 0.8, "SmoothingError": float(np.sqrt(1 - 0.09 - 0.64))}
_AVOGADRO = 6.02214076e23


def _write_nies_gosat(ds: xr.Dataset, path: Path, gas: str) -> None:
    """The V02.80 general-user layout (checked on the real files): see L2_FORMATS.md c.1 and the reader.

    No ``X{gas}BiasCorrected``, no pressure grid, no weighting function; the 15-layer arrays
    top of atmosphere first; ``X{gas}ExternalError`` all -9999; units ``ppmv`` for both
    gases (CH4 as ppm, per HARP); ``dryAirPartialColumn`` in molecules cm-2 with the
    dry-air mass fractions of the canonical ``pressure_weight``.
    """
    g = gas.upper()
    to_file = 1e-3 if g == "CH4" else 1.0  # NIES mixing ratios are in ppm for both gases
    n = ds.sizes["sounding"]
    day = pd.Timestamp(
        ds.time.values[~np.isnat(ds.time.values)].min()
        if n and (~np.isnat(ds.time.values)).any()
        else pd.Timestamp(str(path.name)[9:17])
    ).normalize()
    with h5py.File(path, "w") as f:
        for k, v in {
            "operationLevel": "L2",
            "productCode": "C01S" if g == "CO2" else "C02S",
            "productName": f"L2 {g} column amount (SWIR)",
            "productVersion": "V02.80",
            "satelliteName": "GOSAT",
            "sensorName": "TANSO-FTS",
        }.items():
            f.create_dataset(f"Global/metadata/{k}", data=np.array([v.encode()]))
        ext = (
            "Global/MD_Metadata/identificationInfo/MD_DataIdentification/extent/temporalElement/"
            "EX_TemporalExtent/extent/beginEnd/"
        )
        for k in ("begin", "end"):
            f.create_dataset(ext + k, data=np.array([f"{day:%Y-%m-%d}".encode()]))
        f.create_dataset("Global/MD_Metadata/fileIdentifier", data=np.array([path.stem.encode()]))
        _h5(f, "scanAttribute/time", _time_strings(ds, " ", ""), "none")
        f["scanAttribute/time"].attrs["longName"] = np.array([b"time of the observation (UTC)"])
        ids = [str(i) for i in _ids(ds)]
        _h5(
            f, "scanAttribute/scanID", np.array([i.encode() for i in ids], dtype=f"S{max(19, *map(len, ids), 1)}"), None
        )
        _h5(f, "scanAttribute/numScan", np.array([n], dtype=np.int32), None)
        _h5(f, "Data/geolocation/latitude", _nan_to(ds.latitude.values, -9999.0), "deg", -9999.0, (-90, 90))
        _h5(f, "Data/geolocation/longitude", _nan_to(ds.longitude.values, -9999.0), "deg", -9999.0, (-180, 180))
        _h5(
            f,
            "Data/geolocation/solarZenith",
            _nan_to(_opt(ds, "solar_zenith_angle", np.nan), -9999.0),
            "deg",
            -9999.0,
            (0, 180),
        )
        glint = _surface(ds)
        _h5(
            f, "Data/geolocation/landFraction", np.where(glint == 0, 100.0, 0.0).astype("f4"), "none", -9999.0, (0, 100)
        )
        _h5(f, "scanAttribute/sensor/sunglintModeFlag", glint.astype(np.int8), None)
        _h5(f, "Data/retrievalQuality/totalPostScreeningResult", np.zeros(n, dtype=np.int8), None)
        _h5(f, f"Data/mixingRatio/X{g}", _nan_to(ds.xgas.values * to_file, -9999.0), "ppmv", -9999.0, (0, 1000))
        sigma = ds.xgas_uncertainty.values * to_file
        _h5(f, f"Data/mixingRatio/X{g}ExternalError", np.full(n, -9999.0, dtype="f4"), "ppmv", -9999.0, (-300, 300))
        for e, share in NIES_ERROR_SPLIT.items():
            _h5(f, f"Data/mixingRatio/X{g}{e}", _nan_to(sigma * share, -9999.0), "ppmv", -9999.0, (0, 300))
        # 15-layer arrays: top of atmosphere first, as in the product
        _h5(
            f,
            "Data/retrievalQuality/columnAveragingKernel",
            _nan_to(ds.averaging_kernel.values[:, ::-1], -9999.0),
            "none",
        )
        _h5(
            f,
            f"scanAttribute/referenceData/{g}Profile",
            _nan_to(ds.profile_apriori.values[:, ::-1] * to_file, -9999.0),
            "ppmv",
            -9999.0,
            (0, 1000),
        )
        ps = _opt(ds, "surface_pressure", np.nan)
        n_air = ps * 100.0 / (_G * _M_AIR) * _AVOGADRO * 1e-4  # molecules cm-2 of the whole column
        dry = ds.pressure_weight.values * n_air[:, None]
        _h5(
            f,
            "scanAttribute/referenceData/dryAirPartialColumn",
            _nan_to(dry[:, ::-1], -1e30),
            "molecules/cm^2",
            -1e30,
            (0, 3e24),
        )
        _h5(
            f,
            f"scanAttribute/referenceData/X{g}",
            _nan_to(_opt(ds, "xgas_apriori", np.nan) * to_file, -9999.0),
            "ppmv",
            -9999.0,
            (0, 1000),
        )
        _h5(f, "scanAttribute/referenceData/surfacePressure", _nan_to(ps, -9999.0), "hPa", -9999.0, (300, 1100))
        _h5(f, "Data/auxiliaryParameter/surfacePressure", _nan_to(ps - 1.5, -9999.0), "hPa", -9999.0, (0, 1200))
        _h5(f, "Data/auxiliaryParameter/dryAirTotalColumn", _nan_to(n_air, -1e30), "molecules/cm^2", -1e30)
        anc = "ancillary/FTSL2DataInformation/"
        _h5(f, anc + "prsRefLevel", NIES_REFERENCE_LEVELS, "hPa")
        _h5(f, anc + "numRefLevel", np.array([NIES_REFERENCE_LEVELS.size], dtype=np.int32), None)
        _h5(f, anc + "numRetLayer", np.array([ds.sizes["level"]], dtype=np.int32), None)


def _write_nies_gosat2(ds: xr.Dataset, path: Path, gas: str) -> None:
    """GOSAT-2 SWFP as the third-party readers describe it (L2_FORMATS.md c.2, unverified).

    ``RetrievalResult/pressure_level`` holds the 16 level edges of the 15 layers; level
    arrays are written top of atmosphere first, as the NIES GOSAT product stores them
    [INF]; no weighting function is stored (the reader derives it from the edges).
    """
    g = gas.lower()
    unit = {"co2": "ppm", "ch4": "ppb"}[g]
    ps = _opt(ds, "surface_pressure", np.nan)
    n = ds.sizes["sounding"]
    valid = ds.time.values[~np.isnat(ds.time.values)]
    t0 = pd.Timestamp(valid.min()) if valid.size else pd.Timestamp("2020-01-01")
    t1 = pd.Timestamp(valid.max()) if valid.size else t0
    with h5py.File(path, "w") as f:
        for k, v in {
            "sensorName": "TANSO-FTS-2",
            "algorithmVersion": "02.20",
            "processingDate": "20240101",
            "startDate": f"{t0:%Y-%m-%d}T00:00:00",
            "endDate": f"{t1:%Y-%m-%d}T23:59:59",
        }.items():
            f.create_dataset(f"Metadata/{k}", data=np.array([v.encode()]))
        _h5(f, "SoundingAttribute/observationTime", _time_strings(ds, "T", "Z"))
        ids = _ids(ds)
        _h5(
            f,
            "SoundingAttribute/soundingUniqueID",
            ids.astype(np.int64) if ids.dtype.kind in "iu" else np.array([str(i).encode() for i in ids]),
        )
        _h5(f, "SceneAttribute/numSounding", np.array([n], dtype=np.int32), None)
        _h5(f, "SoundingGeometry/latitude", _nan_to(ds.latitude.values, -9999.0), "deg", -9999.0)
        _h5(f, "SoundingGeometry/longitude", _nan_to(ds.longitude.values, -9999.0), "deg", -9999.0)
        _h5(f, "SoundingGeometry/solarZenith", _nan_to(_opt(ds, "solar_zenith_angle", np.nan), -9999.0), "deg")
        _h5(f, "SoundingGeometry/landFraction", np.where(_surface(ds) == 0, 100.0, 0.0).astype("f4"), "%")
        _h5(f, f"RetrievalResult/x{g}", _nan_to(ds.xgas.values, -9999.0), unit, -9999.0)
        _h5(f, f"RetrievalResult/x{g}_uncertainty", _nan_to(ds.xgas_uncertainty.values, -9999.0), unit, -9999.0)
        _h5(f, f"RetrievalResult/x{g}_quality_flag", np.asarray(ds.quality_flag.values, dtype=np.int8), None)
        # level arrays top of atmosphere first
        _h5(f, f"RetrievalResult/x{g}_column_averaging_kernel", _nan_to(ds.averaging_kernel.values[:, ::-1], -9999.0))
        _h5(
            f,
            f"RetrievalResult/{g}_profile_apriori",
            _nan_to(ds.profile_apriori.values[:, ::-1], -9999.0),
            unit,
            -9999.0,
        )
        edges = _level_edges(ds.pressure.values, ps)
        _h5(f, "RetrievalResult/pressure_level", _nan_to(edges[:, ::-1], -9999.0), "hPa", -9999.0)
        _h5(f, "RetrievalResult/surface_pressure", _nan_to(ps, -9999.0), "hPa", -9999.0)


# -- TROPOMI ---------------------------------------------------------------------------------
def _write_tropomi(ds: xr.Dataset, path: Path) -> None:
    n, nl = ds.sizes["sounding"], ds.sizes["level"]
    t = ds.time.values.astype("datetime64[ns]")
    valid = t[~np.isnat(t)]
    day = (valid.min() if valid.size else np.datetime64("2020-01-01", "ns")).astype("datetime64[D]")
    t0 = valid.min() if valid.size else day
    t1 = valid.max() if valid.size else day
    t_ref = int((day - np.datetime64("2010-01-01", "D")).astype(np.int64) * 86400)
    delta_ms = np.round((t - day.astype("datetime64[ns]")).astype(np.int64) / 1e6)
    if n and delta_ms.max() >= 2**31 - 1:
        raise ValueError("tropomi_ch4 granules hold one orbit: soundings must span less than 24 days")
    ps = _opt(ds, "surface_pressure", np.nan) * 100.0
    dp = 2.0 * (ps - ds.pressure.values[:, 0] * 100.0)
    n_air = ps / (_G * _M_AIR)
    d = ds.pressure_weight.values * n_air[:, None]
    ca = ds.profile_apriori.values * 1e-9 * d
    qa = np.where(np.asarray(ds.quality_flag.values) == 0, 100, 40).astype(np.uint8)
    x3 = ("time", "scanline", "ground_pixel")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        prod = nc.createGroup("PRODUCT")
        for dim, size in (
            ("time", 1),
            ("scanline", n),
            ("ground_pixel", 1),
            ("corner", 4),
            ("layer", nl),
            ("level", nl + 1),
        ):
            prod.createDimension(dim, size)
        sup = prod.createGroup("SUPPORT_DATA")
        geo, det, inp = (sup.createGroup(k) for k in ("GEOLOCATIONS", "DETAILED_RESULTS", "INPUT_DATA"))

        def var(
            grp: Any,
            name: str,
            values: Any,
            dims: tuple[str, ...],
            units: str | None,
            dtype: str = "f4",
            fill: Any = _S5P_FILL,
        ) -> Any:
            v = grp.createVariable(name, dtype, dims, fill_value=fill, **_deflate(grp, dims, 3))
            if units is not None:
                v.units = units
            arr = np.asarray(values)
            if dtype == "f4":
                arr = _f32(arr, _S5P_FILL)
            v.set_auto_maskandscale(False)
            v[:] = arr.reshape(
                tuple(len(grp.dimensions[k]) if k in grp.dimensions else len(prod.dimensions[k]) for k in dims)
            )
            return v

        var(prod, "time", [t_ref], ("time",), "seconds since 2010-01-01 00:00:00", "i4", np.int32(-2147483647))
        var(
            prod,
            "delta_time",
            np.nan_to_num(delta_ms, nan=-2147483647).astype(np.int32),
            ("time", "scanline"),
            "milliseconds",
            "i4",
            np.int32(-2147483647),
        )
        utc = prod.createVariable("time_utc", str, ("time", "scanline"))
        utc.long_name = "Time of observation as ISO 8601 date-time string"
        stamps = pd.DatetimeIndex(t).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        utc[:] = np.array([x if isinstance(x, str) else "" for x in stamps], dtype=object).reshape(1, n)
        var(prod, "latitude", ds.latitude.values, x3, "degrees_north")
        var(prod, "longitude", ds.longitude.values, x3, "degrees_east")
        q = var(prod, "qa_value", qa, x3, "1", "u1", np.uint8(255))
        q.scale_factor, q.add_offset = np.float32(0.01), np.float32(0.0)
        q.comment = "A continuous quality descriptor... Recommend to ignore data with qa_value < 0.5"
        var(prod, "methane_mixing_ratio", ds.xgas.values + RAW_OFFSET["CH4"], x3, "1e-9")
        var(prod, "methane_mixing_ratio_precision", ds.xgas_uncertainty.values, x3, "1e-9")
        var(prod, "methane_mixing_ratio_bias_corrected", ds.xgas.values, x3, "1e-9")
        var(geo, "solar_zenith_angle", _opt(ds, "solar_zenith_angle", np.nan), x3, "degree")
        for c in ("latitude", "longitude"):
            off = np.array([-0.03, -0.03, 0.03, 0.03])
            var(geo, f"{c}_bounds", ds[c].values[:, None] + off[None, :], (*x3, "corner"), None)
        var(det, "column_averaging_kernel", ds.averaging_kernel.values[:, ::-1], (*x3, "layer"), "1")
        var(inp, "methane_profile_apriori", ca[:, ::-1], (*x3, "layer"), "mol m-2")
        var(inp, "dry_air_subcolumns", d[:, ::-1], (*x3, "layer"), "mol m-2")
        alt = np.linspace(64000.0, 0.0, nl + 1)
        var(inp, "altitude_levels", np.broadcast_to(alt, (n, nl + 1)), (*x3, "level"), "m")
        var(inp, "surface_pressure", ps, x3, "Pa")
        var(inp, "pressure_interval", dp, x3, "Pa")
        var(inp, "surface_classification", _surface(ds).astype(np.uint8), x3, None, "u1", np.uint8(255))
        nc.setncatts(
            {
                "Conventions": "CF-1.7",
                "institution": "KNMI/SRON",
                "processor_version": "2.4.0",
                "product_version": "2.4.0",
                "orbit": np.int32(10000 + pd.Timestamp(day).day_of_year),
                "time_reference": f"{pd.Timestamp(day):%Y-%m-%d}T00:00:00Z",
                "time_coverage_start": f"{pd.Timestamp(t0).floor('s'):%Y-%m-%dT%H:%M:%S}Z",
                "time_coverage_end": f"{pd.Timestamp(t1).ceil('s'):%Y-%m-%dT%H:%M:%S}Z",
                "title": "TROPOMI/S5P Methane 1-Orbit L2 Swath",
                "comment": "synthetic (gosat_pipeline.testing)",
            }
        )


def _write_blended(ds: xr.Dataset, path: Path) -> None:
    """Blended TROPOMI+GOSAT CH4 (v02.04.00 layout, checked on the real file): see the reader's docstring."""
    n, nl = ds.sizes["sounding"], ds.sizes["level"]
    t = ds.time.values.astype("datetime64[ns]")
    ps = _opt(ds, "surface_pressure", np.nan) * 100.0
    dp = 2.0 * (ps - ds.pressure.values[:, 0] * 100.0)
    n_air = ps / (_G * _M_AIR)
    d = ds.pressure_weight.values * n_air[:, None]
    ca = ds.profile_apriori.values * 1e-9 * d
    qa = np.where(np.asarray(ds.quality_flag.values) == 0, 100, 40).astype(np.uint8)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("nobs", n)
        nc.createDimension("layer", nl)
        nc.createDimension("corner", 4)

        def var(
            name: str, values: Any, dims: tuple[str, ...], units: str | None, dtype: str = "f4", fill: Any = _S5P_FILL
        ) -> Any:
            v = nc.createVariable(name, dtype, dims, fill_value=fill, **_deflate(nc, dims, 4))
            if units is not None:
                v.units = units
            arr = np.asarray(values)
            v.set_auto_maskandscale(False)
            v[:] = _f32(arr, _S5P_FILL) if dtype == "f4" else arr
            return v

        q = var("qa_value", qa, ("nobs",), "1", "u1", np.uint8(255))
        q.scale_factor, q.add_offset = np.float32(0.01), np.float32(0.0)
        q.comment = "A continuous quality descriptor... Recommend to ignore data with qa_value < 0.5"
        var("latitude", ds.latitude.values, ("nobs",), "degrees_north")
        var("longitude", ds.longitude.values, ("nobs",), "degrees_east")
        var("methane_mixing_ratio", ds.xgas.values + RAW_OFFSET["CH4"], ("nobs",), "1e-9")
        var("methane_mixing_ratio_precision", ds.xgas_uncertainty.values, ("nobs",), "1e-9")
        var("methane_mixing_ratio_bias_corrected", ds.xgas.values + RAW_OFFSET["CH4"] / 2, ("nobs",), "1e-9")
        utc = nc.createVariable("time_utc", str, ("nobs",))
        utc.long_name = "Time of observation as ISO 8601 date-time string"
        stamps = pd.DatetimeIndex(t).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        utc[:] = np.array([x if isinstance(x, str) else "" for x in stamps], dtype=object)
        for c in ("latitude", "longitude"):
            off = np.array([-0.03, -0.03, 0.03, 0.03])
            var(f"{c}_bounds", ds[c].values[:, None] + off[None, :], ("nobs", "corner"), None)
        var("chi_square_SWIR", np.full(n, 1000.0), ("nobs",), "1")
        var("surface_albedo_SWIR", np.full(n, 0.2), ("nobs",), "1")
        var("surface_albedo_NIR", np.full(n, 0.3), ("nobs",), "1")
        var("column_averaging_kernel", ds.averaging_kernel.values[:, ::-1], ("nobs", "layer"), "1")
        var("surface_altitude", np.zeros(n), ("nobs",), "m")
        var("surface_classification", _surface(ds).astype(np.uint8), ("nobs",), None, "u1", np.uint8(255))
        var("surface_pressure", ps, ("nobs",), "Pa")
        var("pressure_interval", dp, ("nobs",), "Pa")
        var("methane_profile_apriori", ca[:, ::-1], ("nobs", "layer"), "mol m-2")
        var("dry_air_subcolumns", d[:, ::-1], ("nobs", "layer"), "mol m-2")
        b = var("methane_mixing_ratio_blended", ds.xgas.values, ("nobs",), "1e-9")
        b.comment = "produced as described in Balasus et al. (2023)"
        nc.setncatts(
            {"Title": "Blended TROPOMI+GOSAT Methane Product", "Contact": "synthetic (gosat_pipeline.testing)"}
        )


def write_granule(ds: xr.Dataset, path: str | Path, format: str) -> Path:
    """Write canonical soundings ``ds`` into ``format``'s real file layout at ``path``.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical soundings (surface-first levels, canonical units, NaN fills); its
        ``gas`` attribute must be one the format holds and its level count must fit
        (see :func:`granule_soundings`).
    path : path-like
        Destination; use :func:`granule_filename` for a name readers detect.
    format : str
        A key of :data:`GRANULE_FORMATS`.

    Returns
    -------
    pathlib.Path
    """
    _, _, gases = _spec(format)
    gas = str(ds.attrs.get("gas", "")).upper()
    if gas not in gases:
        raise ValueError(f"{format} holds {gases}; dataset gas is {gas!r}")
    ds = ds.load()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    close_cached(p)  # a read handle the io cache keeps open would block rewriting the file
    if format in ("cci_ocpr", "cci_ocfp"):
        _write_cci_flat(ds, p, gas)
    elif format == "cci_srfp":
        _write_cci_srfp(ds, p, gas)
    elif format.endswith("_lite"):
        _write_lite(ds, p, {"acos_lite": "GOSAT", "oco2_lite": "OCO-2", "oco3_lite": "OCO-3"}[format])
    elif format == "nies_gosat_l2":  # NIES releases only screened soundings: flagged ones are not written
        _write_nies_gosat(ds.isel(sounding=np.flatnonzero(np.asarray(ds.quality_flag.values) == 0)), p, gas)
    elif format == "nies_gosat2_l2":
        _write_nies_gosat2(ds, p, gas)
    elif format == "tropomi_blended_ch4":
        _write_blended(ds, p)
    else:
        _write_tropomi(ds, p)
    return p


def make_granule_files(
    directory: str | Path,
    format: str,
    *,
    n_files: int = 3,
    n_per_file: int = 500,
    gas: str | None = None,
    seed: int = 0,
    bbox: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0),
    start: str = "2020-01-01",
    bad_fraction: float = 0.2,
) -> list[Path]:
    """Write ``n_files`` daily granules of ``format`` (one per UTC day from ``start``).

    Returns
    -------
    list of pathlib.Path
        The files, named with :func:`granule_filename`. Seeds are ``seed + i``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    gas = (gas or _spec(format)[0]).upper()
    paths = []
    for i in range(n_files):
        day = pd.Timestamp(start).normalize() + pd.Timedelta(days=i)
        ds = granule_soundings(
            format, n_per_file, gas, seed=seed + i, bbox=bbox, start=str(day), bad_fraction=bad_fraction
        )
        paths.append(write_granule(ds, out / granule_filename(format, day, gas=gas), format))
    return paths
