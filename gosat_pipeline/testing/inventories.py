"""Synthetic inventories, reported totals, boundaries and winds in the real file layouts.

Each writer produces a small netCDF/CSV in the layout of the public product it mimics
(shared/reference/INVENTORIES.md), from a canonical field, so that tests can check that
every reader returns the same canonical field. Everything is deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr

from gosat_pipeline.grids import GridSpec

__all__ = [
    "make_box_boundaries",
    "make_prior_flux",
    "make_reported_totals",
    "write_cams_like",
    "write_edgar_like",
    "write_era5_like",
    "write_geosfp_like",
    "write_gfei_like",
    "write_merra2_like",
    "write_odiac_like",
    "write_crf_workbook",
    "write_primap_csv",
    "write_reported_totals_csv",
]

_CARBON_TO_CO2 = 44.0 / 12.0  # as openscm-units (and so the reader) converts carbon to CO2
_EDGAR_YEAR_S = 365.0 * 86400.0
_ENC = {"zlib": True, "complevel": 1}


def make_prior_flux(
    grid: GridSpec,
    gas: str = "CH4",
    seed: int = 0,
    *,
    mean_flux: float | None = None,
    sectors: Sequence[str] | None = None,
) -> xr.DataArray:
    """A positive, spatially structured flux (kg m-2 s-1) on ``grid``.

    Parameters
    ----------
    grid : GridSpec
    gas : str
    seed : int
    mean_flux : float, optional
        Area-weighted mean flux, kg m-2 s-1 (default 1e-10 for CH4, 5e-9 for CO2).
    sectors : sequence of str, optional
        Return ``(sector, latitude, longitude)`` with one field per sector.

    Returns
    -------
    xarray.DataArray named ``flux``, units kg m-2 s-1.
    """
    rng = np.random.default_rng(seed)
    mean = mean_flux if mean_flux is not None else (1e-10 if gas.upper() == "CH4" else 5e-9)
    lat, lon = np.meshgrid(np.deg2rad(grid.lat), np.deg2rad(grid.lon), indexing="ij")
    n = len(sectors) if sectors else 1
    fields = []
    for _ in range(n):
        smooth = 1.0 + 0.5 * np.sin(3 * lon + rng.uniform(0, 6)) * np.cos(2 * lat)
        f = smooth * np.exp(rng.normal(0.0, 0.5, grid.shape))
        area = grid.cell_area()
        fields.append(f * mean / ((f * area).sum() / area.sum()) / n)
    coords = grid.coords()
    attrs = {"units": "kg m-2 s-1", "gas": gas.upper(), "long_name": f"{gas.upper()} emission flux"}
    if sectors:
        return xr.DataArray(
            np.stack(fields),
            dims=("sector", "latitude", "longitude"),
            coords={"sector": list(sectors), **coords},
            name="flux",
            attrs=attrs,
        )
    return xr.DataArray(fields[0], dims=("latitude", "longitude"), coords=coords, name="flux", attrs=attrs)


def _field(grid_or_flux: GridSpec | xr.DataArray, gas: str, seed: int) -> tuple[GridSpec, np.ndarray]:
    if isinstance(grid_or_flux, GridSpec):
        return grid_or_flux, make_prior_flux(grid_or_flux, gas, seed).values
    da = grid_or_flux.transpose("latitude", "longitude")
    return GridSpec.from_coords(da["latitude"].values, da["longitude"].values), np.asarray(da.values, "float64")


def _raw_coords(
    grid: GridSpec, values: np.ndarray, *, lon360: bool, lat_desc: bool = False, names: tuple[str, str] = ("lat", "lon")
) -> tuple[dict[str, Any], np.ndarray]:
    lat, lon = grid.lat, grid.lon
    if lon360:
        lon = np.mod(lon, 360.0)
        order = np.argsort(lon)
        lon, values = lon[order], values[..., order]
    if lat_desc:
        lat, values = lat[::-1], values[..., ::-1, :]
    coords = {
        names[0]: (names[0], lat, {"units": "degrees_north", "standard_name": "latitude"}),
        names[1]: (names[1], lon, {"units": "degrees_east", "standard_name": "longitude"}),
    }
    return coords, values


def _monthly_factors(year: int, seed: int) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """12 month starts and factors whose day-weighted mean is 1."""
    t = pd.date_range(f"{year}-01-01", periods=12, freq="MS")
    f = 1.0 + 0.3 * np.sin(2 * np.pi * (np.arange(12) + seed) / 12)
    d = t.days_in_month.values
    return t, f / ((f * d).sum() / d.sum())


def write_edgar_like(
    path: str | Path,
    grid: GridSpec | xr.DataArray,
    gas: str = "CH4",
    layout: str = "v8_fluxes",
    *,
    year: int = 2020,
    seed: int = 0,
    sector: str = "TOTALS",
) -> Path:
    """Write an EDGAR-like netCDF.

    Parameters
    ----------
    path : path-like
    grid : GridSpec or DataArray
        A grid (a :func:`make_prior_flux` field is drawn) or the flux itself
        (kg m-2 s-1 on ``(latitude, longitude)``).
    layout : {"v7_emi", "v8_fluxes", "v8_emissions", "2024"}
        ``emi_<gas>`` in kg m-2 s-1 (<= v7); ``fluxes`` in kg m-2 s-1 (v8);
        ``emissions`` in tonnes per cell per (365-day) year (v8 ``_emi``); 12 monthly
        ``fluxes`` with NaN fill where zero (EDGAR 2024). Longitudes 0..360 as EDGAR.
    """
    g, flux = _field(grid, gas, seed)
    gl = gas.lower()
    if layout == "v7_emi":
        coords, vals = _raw_coords(g, flux, lon360=True)
        tot = float((flux * g.cell_area()).sum() * _EDGAR_YEAR_S)
        var = {
            f"emi_{gl}": (
                ("lat", "lon"),
                vals.astype("float32"),
                {
                    "units": "kg m-2 s-1",
                    "cell_method": "time: mean (interval: 1 year, 365 days)",
                    "total_emi_" + gl: f"{tot:.5e} kg/year",
                },
            )
        }
        ds = xr.Dataset(var, coords=coords)
    elif layout == "v8_fluxes":
        coords, vals = _raw_coords(g, flux, lon360=True)
        ds = xr.Dataset(
            {"fluxes": (("lat", "lon"), vals, {"units": "kg m-2 s-1", "substance": gas.upper()})}, coords=coords
        )
    elif layout == "v8_emissions":
        tonnes = flux * g.cell_area() * _EDGAR_YEAR_S / 1000.0
        coords, vals = _raw_coords(g, tonnes, lon360=True)
        ds = xr.Dataset(
            {"emissions": (("lat", "lon"), vals, {"units": "Tonnes", "substance": gas.upper()})}, coords=coords
        )
    elif layout == "2024":
        t, fac = _monthly_factors(year, seed)
        coords, vals = _raw_coords(g, flux, lon360=True)
        data = (fac[:, None, None] * vals[None]).astype("float32")
        data[data == 0] = np.nan
        coords["time"] = ("time", t)
        ds = xr.Dataset(
            {
                "fluxes": (
                    ("time", "lat", "lon"),
                    data,
                    {
                        "units": "kg m-2 s-1",
                        "substance": gas.upper(),
                        "year": str(year),
                        "release": "EDGARv2024ghg",
                        "long_name": sector,
                    },
                )
            },
            coords=coords,
        )
    else:
        raise ValueError(f"layout must be v7_emi, v8_fluxes, v8_emissions or 2024; got {layout!r}")
    ds.attrs.update(
        institution="European Commission, Joint Research Centre (synthetic copy)",
        source="synthetic EDGAR-like file (gosat_pipeline.testing)",
        Conventions="CF-1.0",
    )
    return _write(ds, path)


def _write(ds: xr.Dataset, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    enc = {v: dict(_ENC) for v in ds.data_vars}
    ds.to_netcdf(p, encoding=enc)
    return p


def write_gfei_like(path: str | Path, grid: GridSpec | xr.DataArray, *, seed: int = 0) -> Path:
    """GFEI-like ``emis_ch4`` in Mg km-2 a-1 (365-day year), lat/lon cell centres."""
    g, flux = _field(grid, "CH4", seed)
    coords, vals = _raw_coords(g, flux * _EDGAR_YEAR_S * 1e6 / 1e3, lon360=False)
    ds = xr.Dataset(
        {"emis_ch4": (("lat", "lon"), vals, {"units": "Mg km-2 a-1", "long_name": "CH4 emissions"})},
        coords=coords,
        attrs={"source": "synthetic GFEI-like file"},
    )
    return _write(ds, path)


def write_odiac_like(
    path: str | Path, grid: GridSpec | xr.DataArray, *, year: int = 2020, seed: int = 0, bunker_fraction: float = 0.1
) -> Path:
    """ODIAC-like 1x1 degree file: ``land`` + ``intl_bunker`` in gC m-2 d-1 on ``(month, lat, lon)``.

    The CO2 flux is split into land (1 - ``bunker_fraction``) and bunker parts and
    modulated by month with a day-weighted mean of 1 over ``year``.
    """
    g, flux = _field(grid, "CO2", seed)
    gc = flux / _CARBON_TO_CO2 * 1e3 * 86400.0
    _, fac = _monthly_factors(year, seed)
    coords, vals = _raw_coords(g, gc, lon360=False)
    coords["month"] = ("month", np.arange(1, 13, dtype="int32"))
    land = fac[:, None, None] * vals[None] * (1 - bunker_fraction)
    bunk = fac[:, None, None] * vals[None] * bunker_fraction
    u = "gC/m2/d"
    ds = xr.Dataset(
        {
            "land": (("month", "lat", "lon"), land, {"units": u}),
            "intl_bunker": (("month", "lat", "lon"), bunk, {"units": u}),
        },
        coords=coords,
        attrs={"source": "synthetic ODIAC-like file"},
    )
    return _write(ds, path)


def write_cams_like(
    path: str | Path,
    grid: GridSpec | xr.DataArray,
    gas: str = "CH4",
    *,
    year: int = 2020,
    seed: int = 0,
    sectors: Sequence[str] = ("ene", "fef", "agl", "swd"),
) -> Path:
    """CAMS-GLOB-ANT-like monthly file: one variable per sector plus ``sum`` (kg m-2 s-1), lon 0..360.

    The sectors split the flux with fixed shares; ``sum`` is their sum.
    """
    g, flux = _field(grid, gas, seed)
    t, fac = _monthly_factors(year, seed)
    shares = np.linspace(1.0, 2.0, len(sectors))
    shares = shares / shares.sum()
    coords, vals = _raw_coords(g, flux, lon360=True)
    coords["time"] = ("time", t)
    data = {
        s: (("time", "lat", "lon"), fac[:, None, None] * vals[None] * w, {"units": "kg m-2 s-1"})
        for s, w in zip(sectors, shares, strict=True)
    }
    data["sum"] = (("time", "lat", "lon"), fac[:, None, None] * vals[None], {"units": "kg m-2 s-1"})
    return _write(xr.Dataset(data, coords=coords, attrs={"source": "synthetic CAMS-GLOB-ANT-like file"}), path)


# ------------------------------------------------------------------------ reported totals
def make_reported_totals(
    areas: Mapping[str, float] | Sequence[str] = ("IDN", "THA", "VNM"),
    gas: str = "CH4",
    year: int | Sequence[int] = 2020,
    *,
    seed: int = 0,
    unit: str | None = None,
    source: str = "synthetic-national-submission",
    uncertainty_rel: float | None = 0.2,
) -> pd.DataFrame:
    """A long-schema table (INVENTORIES.md 1.6.1), category ``M.0.EL``.

    ``areas`` maps ISO-3 to Tg yr-1 (or lists codes: random totals of 0.5-10 Tg yr-1).
    Values are written in ``unit`` (default ``kt <gas>/yr``).
    """
    rng = np.random.default_rng(seed)
    totals = dict(areas) if isinstance(areas, Mapping) else {a: float(rng.uniform(0.5, 10)) for a in areas}
    years = [year] if isinstance(year, int) else list(year)
    unit = unit or f"kt {gas}/yr"
    rows = []
    for y in years:
        for a, tg in totals.items():
            rows.append(
                {
                    "area": a,
                    "year": y,
                    "gas": gas,
                    "category": "M.0.EL",
                    "value": tg * 1000.0,
                    "unit": unit,
                    "source": source,
                    "category_scheme": "IPCC2006_PRIMAP",
                    "uncertainty_rel": "" if uncertainty_rel is None else uncertainty_rel,
                    "notes": "synthetic",
                }
            )
    return pd.DataFrame(rows)


def write_reported_totals_csv(path: str | Path, rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> Path:
    """Write rows (a DataFrame or dicts) as a long-schema CSV; return the path."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(p, index=False)
    return p


def write_primap_csv(
    path: str | Path,
    df: pd.DataFrame,
    *,
    scenario: str = "HISTCR",
    source: str = "PRIMAP-hist_v2.6",
    yaml: bool = False,
) -> Path:
    """Write a long table as a PRIMAP-hist / primap2 interchange wide CSV (Gg / a units).

    ``df`` needs ``area, year, gas, category, value_gg`` or ``value`` + ``unit`` in kt
    (kt = Gg). With ``yaml=True`` a primap2 metadata sidecar ``<stem>.yaml`` is written too.
    """
    d = df.copy()
    d["entity"] = d["gas"]
    d["unit"] = d["gas"].map(lambda g: f"{g} * gigagram / a")
    wide = d.pivot_table(
        index=["area", "category", "entity", "unit"], columns="year", values="value", aggfunc="first"
    ).reset_index()
    wide.columns = [str(c) for c in wide.columns]
    out = pd.DataFrame(
        {
            "source": source,
            "scenario (PRIMAP-hist)": scenario,
            "provenance": "derived",
            "area (ISO3)": wide["area"],
            "entity": wide["entity"],
            "unit": wide["unit"],
            "category (IPCC2006_PRIMAP)": wide["category"],
        }
    )
    for c in wide.columns:
        if c.isdigit():
            out[c] = wide[c]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(p, index=False)
    if yaml:
        p.with_suffix(".yaml").write_text(
            f"attrs:\n  area: area (ISO3)\n  cat: category (IPCC2006_PRIMAP)\n  scen: scenario (PRIMAP-hist)\n"
            f"data_file: {p.name}\ndimensions:\n  '*': [source, scenario (PRIMAP-hist), provenance, area (ISO3), "
            f"entity, unit, category (IPCC2006_PRIMAP)]\ntime_format: '%Y'\n"
        )
    return p


#: Row labels of the CRF/CRT CH4 trend table (Table10s3) written by :func:`write_crf_workbook`.
CRF_CH4_ROWS: tuple[tuple[str, str], ...] = (
    ("1. Energy", "1"),
    ("A. Fuel combustion (sectoral approach)", "1.A"),
    ("1.  Energy industries", "1.A.1"),
    ("B. Fugitive emissions from fuels", "1.B"),
    ("1.  Solid fuels", "1.B.1"),
    ("2.  Oil and natural gas and other emissions from energy production", "1.B.2"),
    ("2.  Industrial processes", "2"),
    ("3.  Agriculture", "3"),
    ("A.  Enteric fermentation", "3.A"),
    ("C.  Rice cultivation", "3.C"),
    ("4. Land use, land-use change and forestry", "4"),
    ("5.  Waste", "5"),
    ("A.  Solid waste disposal ", "5.A"),
    ("6.  Other (as specified in summary 1.A)", "6"),
    ("Total CH4 emissions without CH4 from LULUCF", "M.0.EL"),
    ("Total CH4 emissions with CH4 from LULUCF", "0"),
    ("Memo items:", ""),
    ("International bunkers", "M.Memo.Int"),
)


def write_crf_workbook(
    path: str | Path,
    ch4_kt: Mapping[str, Sequence[Any]],
    years: Sequence[int],
    *,
    summary_ch4: float | None = None,
    party_name: str = "SYNTHETIA",
) -> Path:
    """Write a workbook in the layout of the UNFCCC CRF/CRT tables (``Table10s3`` and ``Summary1.As1``).

    Parameters
    ----------
    path : path-like
        Name it as UNFCCC does (``GBR_2023_2021_13042023_170954.xlsx`` for CRF,
        ``DEU-CRT-2024-V1.0-2022-20240412-123456.xlsx`` for CRT): the reader takes the
        party from it.
    ch4_kt : mapping CRF2013 code -> values per year
        CH4 in kt for codes of :data:`CRF_CH4_ROWS` (numbers, notation keys such as
        ``"NO"``, or anything to test a reader); missing codes get ``"NO"``.
    years : sequence of int
    summary_ch4 : float, optional
        CH4 'Total national emissions and removals' of the last year in ``Summary1.As1``;
        default the ``0`` row of ``ch4_kt``.
    """
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Table10s3"
    last = len(years) + 2
    ws.append(["TABLE 10  EMISSION TRENDS"] + [None] * (last - 1) + [f"Inventory {years[-1]}"])
    ws.append(["CH4"] + [None] * (last - 1) + ["Submission 2023 v1"])
    ws.append(["(Sheet 3 of 6)"] + [None] * (last - 1) + [party_name])
    ws.append([])
    ws.append(
        [
            "GREENHOUSE GAS SOURCE AND SINK CATEGORIES",
            "Base year(1)",
            *[str(y) for y in years],
            "Change from base to latest reported year",
        ]
    )
    ws.append([None, "(kt)", *[None] * len(years), "%"])
    for label, code in CRF_CH4_ROWS:
        if not code:
            ws.append([label])
            continue
        vals = list(ch4_kt.get(code, ["NO"] * len(years)))
        ws.append([label, vals[0], *vals, None])
    ws.append([])
    ws.append(["Note: All footnotes for this table are given at the end of the table on sheet 6."])
    summ = wb.create_sheet("Summary1.As1")
    total = summary_ch4 if summary_ch4 is not None else list(ch4_kt.get("0", [None]))[-1]
    summ.append(
        [
            "SUMMARY 1.A  SUMMARY REPORT FOR NATIONAL GREENHOUSE GAS INVENTORIES",
            None,
            None,
            None,
            f"Inventory {years[-1]}",
        ]
    )
    summ.append(["(Sheet 1 of 3)", None, None, None, "Submission 2023 v1"])
    summ.append([])
    summ.append(["GREENHOUSE GAS SOURCE AND SINK CATEGORIES", "Net CO2 emissions/removals", "CH4", "N2O", "HFCs(1)"])
    summ.append([None, "(kt)", None, None, "(kt CO2 equivalent)"])
    summ.append(["Total national emissions and removals", "NE", total, "NE", 10.0])
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    wb.save(p)
    return p


# ------------------------------------------------------------------------ boundaries
def make_box_boundaries(
    boxes: Mapping[str, tuple[float, float, float, float]] | None = None,
) -> gpd.GeoDataFrame:
    """Rectangular synthetic countries (EPSG:4326) with ISO 3166 user-assigned codes.

    Parameters
    ----------
    boxes : mapping code -> (west, south, east, north), optional
        Default: ``XAA`` (10..20E, 0..10N), ``XAB`` (20..32E, 0..8N), ``XAC``
        (10..14E, 12..15N) and a tiny ``XAD`` (30.1..30.3E, 12.1..12.3N).
    """
    boxes = boxes or {
        "XAA": (10.0, 0.0, 20.0, 10.0),
        "XAB": (20.0, 0.0, 32.0, 8.0),
        "XAC": (10.0, 12.0, 14.0, 15.0),
        "XAD": (30.1, 12.1, 30.3, 12.3),
    }
    return gpd.GeoDataFrame(
        {
            "region": list(boxes),
            "name": [f"Boxland {c}" for c in boxes],
            "geometry": [shapely.box(*b) for b in boxes.values()],
        },
        geometry="geometry",
        crs=4326,
    )


# ------------------------------------------------------------------------ winds
def _wind_arrays(grid: GridSpec, u: Any, v: Any) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.broadcast_to(np.asarray(u, "float64"), grid.shape).copy(),
        np.broadcast_to(np.asarray(v, "float64"), grid.shape).copy(),
    )


def _time_wiggle(n: int) -> np.ndarray:
    """Zero-mean perturbation over n time steps."""
    w = np.sin(2 * np.pi * (np.arange(n) + 0.5) / n)
    return w - w.mean()


def write_era5_like(
    path: str | Path,
    grid: GridSpec,
    u: Any,
    v: Any,
    *,
    year: int = 2020,
    n_times: int = 4,
    blh: float = 800.0,
    pressure_levels: bool = True,
    new_cds: bool = True,
) -> Path:
    """ERA5-like winds whose time mean (and 1000-850 hPa pressure-weighted mean) is ``u``, ``v``.

    Latitude descending, longitude 0..360 when the grid is global, ``valid_time`` and
    ``pressure_level`` (``new_cds=False``: ``time`` and ``level``). Single-level
    ``u10``/``v10``/``blh`` always; ``u``/``v`` on 1000, 925, 850, 500 hPa when
    ``pressure_levels`` (500 hPa holds a 30 m s-1 jet that must not enter the PBL mean).
    """
    uu, vv = _wind_arrays(grid, u, v)
    tname, lname = ("valid_time", "pressure_level") if new_cds else ("time", "level")
    times = pd.date_range(f"{year}-01-01", periods=n_times, freq="6h")
    wig = _time_wiggle(n_times)[:, None, None]
    coords, _ = _raw_coords(grid, uu, lon360=grid.is_global_lon, lat_desc=True, names=("latitude", "longitude"))
    fix = lambda a: _raw_coords(grid, a, lon360=grid.is_global_lon, lat_desc=True)[1]  # noqa: E731
    coords[tname] = (tname, times)
    coords["number"] = 0
    data = {
        "u10": ((tname, "latitude", "longitude"), fix(uu)[None] + wig, {"units": "m s**-1"}),
        "v10": ((tname, "latitude", "longitude"), fix(vv)[None] - wig, {"units": "m s**-1"}),
        "blh": ((tname, "latitude", "longitude"), np.full((n_times, *grid.shape), blh) + 100 * wig, {"units": "m"}),
    }
    if pressure_levels:
        levels = np.array([1000.0, 925.0, 850.0, 500.0])
        dev = np.array([-1.0, 1.0, -1.0, 0.0])  # zero pressure-weighted mean over 1000-850 (weights 37.5, 75, 37.5)
        coords[lname] = (lname, levels, {"units": "hPa"})
        for name, arr in (("u", fix(uu)), ("v", fix(vv))):
            lev = arr[None, None] + dev[None, :, None, None] + wig[:, None]
            lev[:, 3] = 30.0
            data[name] = ((tname, lname, "latitude", "longitude"), lev, {"units": "m s**-1"})
    ds = xr.Dataset(data, coords=coords, attrs={"source": "synthetic ERA5-like file", "Conventions": "CF-1.7"})
    return _write(ds, path)


def _merra_ds(
    grid: GridSpec, uu: np.ndarray, vv: np.ndarray, times: pd.DatetimeIndex, *, levels: bool, blh: float
) -> xr.Dataset:
    n = times.size
    wig = _time_wiggle(n)[:, None, None] if n > 1 else np.zeros((1, 1, 1))
    coords, uu = _raw_coords(grid, uu, lon360=False)
    _, vv = _raw_coords(grid, vv, lon360=False)
    coords["time"] = ("time", times)
    data = {
        "U10M": (("time", "lat", "lon"), uu[None] + wig, {"units": "m s-1"}),
        "V10M": (("time", "lat", "lon"), vv[None] - wig, {"units": "m s-1"}),
        "PBLH": (("time", "lat", "lon"), np.full((n, *grid.shape), blh) + 50 * wig, {"units": "m"}),
    }
    if levels:
        lev = np.array([1000.0, 975.0, 950.0, 925.0, 900.0, 875.0, 850.0, 700.0])
        coords["lev"] = ("lev", lev, {"units": "hPa"})
        for name, arr in (("U", uu), ("V", vv)):
            a = np.repeat(arr[None, None], lev.size, axis=1) + wig[:, None]
            a = np.repeat(a, n, axis=0) if a.shape[0] != n else a
            a[:, 0] = 1e15  # below ground (MERRA-2 fill value, masked by the reader)
            a[:, -1] = 25.0
            data[name] = (("time", "lev", "lat", "lon"), a, {"units": "m s-1"})
    return xr.Dataset(data, coords=coords)


def write_merra2_like(
    path: str | Path,
    grid: GridSpec,
    u: Any,
    v: Any,
    *,
    year: int = 2020,
    n_times: int = 4,
    blh: float = 800.0,
    pressure_levels: bool = True,
) -> Path:
    """MERRA-2-like file (``U10M``, ``V10M``, ``PBLH``; ``U``/``V`` on ``lev`` with a 1e15 fill
    at 1000 hPa) whose time mean and 1000-850 hPa mean are ``u``, ``v``; lon -180..180, lat ascending."""
    uu, vv = _wind_arrays(grid, u, v)
    times = pd.date_range(f"{year}-01-01T00:30", periods=n_times, freq="1h")
    ds = _merra_ds(grid, uu, vv, times, levels=pressure_levels, blh=blh)
    ds.attrs["source"] = "synthetic MERRA-2-like file"
    return _write(ds, path)


def write_geosfp_like(
    directory: str | Path, grid: GridSpec, u: Any, v: Any, *, year: int = 2020, n_times: int = 4, blh: float = 800.0
) -> list[Path]:
    """GEOS-FP-like ``tavg1_2d_slv_Nx`` files, one per hour (``GEOS.fp.asm...YYYYMMDD_HH30.V01.nc4``)."""
    uu, vv = _wind_arrays(grid, u, v)
    times = pd.date_range(f"{year}-01-01T00:30", periods=n_times, freq="1h")
    full = _merra_ds(grid, uu, vv, times, levels=False, blh=blh)
    out = []
    for k, t in enumerate(times):
        name = f"GEOS.fp.asm.tavg1_2d_slv_Nx.{t:%Y%m%d}_{t:%H}30.V01.nc4"
        ds = full.isel(time=[k])
        ds.attrs["source"] = "synthetic GEOS-FP-like file"
        out.append(_write(ds, Path(directory) / name))
    return out
