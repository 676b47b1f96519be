"""Build the bundled demonstration inputs (``make data-samples``): a non-identical twin.

A Southeast Asia domain (the ASEAN member states) for 2020 with:

- synthetic GOSAT-like soundings written in two real public layouts: UoL/ESA CCI proxy
  XCH4 (OCPR, one file per observing day) and NASA ACOS GOSAT Lite XCO2;
- an EDGAR-like prior for each gas (EDGAR v8 ``fluxes`` layout, 0.25 degree) over a box that
  holds the domain's neighbours whole (China, India, Australia ...), whose national totals,
  attributed at the inventory's resolution, equal the reported totals;
- a reported-totals CSV in the long schema (INVENTORIES.md 1.6.1) for the ASEAN members and
  their neighbours;
- ERA5-like 6-hourly monsoon winds on pressure levels for the whole year.

The soundings are made by an atmosphere that is **not** the inversion's forward model
(:class:`gosat_pipeline.testing.atmosphere.TruthAtmosphere`: semi-Lagrangian, finer, with a
different ventilation time over land and sea, a different boundary-layer wind and
unresolved eddies that are not in the wind file), from a *true* emission field whose
spatial pattern differs from the prior's (correlated lognormal errors) while its national
totals equal the reported ones, except for the planted discrepancies (:data:`PLANTED`).
A background that is not a plane (curved latitude gradient, synoptic variation) and
retrieval noise are added, and the soundings are sampled like GOSAT: fixed points every
three days near 13:00 local time, clear skies more often over land and in the dry season.

``truth="identical"`` keeps the teaching case: the truth made by the inversion's own steady
operator from the time-mean wind (it only tests the algebra).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.attribution import attribute_emissions
from gosat_pipeline.gridding import boundary_layer_ak
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.regions import ASEAN_MEMBERS
from gosat_pipeline.schema import GAS_UNIT_TO_MOLMOL, MOLAR_MASS, SECONDS_PER_YEAR
from gosat_pipeline.testing.soundings import make_soundings

__all__ = [
    "ASEAN",
    "DEMO_VERSION",
    "DEMO_BBOX",
    "INVENTORY_BBOX",
    "PLANTED",
    "REPORTED_TG",
    "TRUTH_BBOX",
    "build_demo_samples",
    "true_totals",
]

logger = logging.getLogger(__name__)

#: The demonstration's countries (the ASEAN member states).
ASEAN: tuple[str, ...] = ASEAN_MEMBERS
#: The inversion domain of configs/demo.yaml (west, south, east, north).
DEMO_BBOX: tuple[float, float, float, float] = (90.0, -12.0, 142.0, 30.0)
#: The prior inventory's box: holds the domain's neighbours whole, so their domain shares are known.
INVENTORY_BBOX: tuple[float, float, float, float] = (62.0, -46.0, 160.0, 56.0)
#: The true atmosphere's box: the domain with a margin, so that emissions outside it flow in.
TRUTH_BBOX: tuple[float, float, float, float] = (76.0, -26.0, 156.0, 44.0)
YEAR = 2020
#: Version of the demonstration builder, recorded in truth.json: samples made by an older
#: builder are rebuilt by the tests and notebooks rather than compared with new expectations.
DEMO_VERSION = "2"
SOURCE_RESOLUTION = 0.25  # degrees: the inventory's own resolution

#: Reported national totals (Tg yr-1), of the order of the countries' real inventories.
REPORTED_TG: dict[str, dict[str, float]] = {
    "CH4": {
        "IDN": 14.0,
        "THA": 4.0,
        "VNM": 4.5,
        "MMR": 4.0,
        "PHL": 3.0,
        "MYS": 2.0,
        "KHM": 1.5,
        "LAO": 0.6,
        "BRN": 0.1,
        "SGP": 0.1,
        "CHN": 55.0,
        "IND": 30.0,
        "BGD": 4.5,
        "AUS": 4.5,
        "JPN": 1.2,
        "PAK": 5.0,
        "NPL": 1.3,
        "LKA": 0.5,
        "MNG": 0.6,
        "KOR": 1.2,
        "PRK": 0.7,
        "TWN": 0.9,
        "PNG": 0.35,
        "TLS": 0.06,
    },
    "CO2": {
        "IDN": 600.0,
        "THA": 280.0,
        "VNM": 330.0,
        "MYS": 260.0,
        "PHL": 150.0,
        "SGP": 50.0,
        "MMR": 40.0,
        "KHM": 15.0,
        "LAO": 20.0,
        "BRN": 8.0,
        "CHN": 11500.0,
        "IND": 2600.0,
        "BGD": 95.0,
        "AUS": 390.0,
        "JPN": 1050.0,
        "PAK": 230.0,
        "NPL": 15.0,
        "LKA": 22.0,
        "MNG": 50.0,
        "KOR": 600.0,
        "PRK": 40.0,
        "TWN": 270.0,
        "PNG": 7.0,
        "TLS": 0.5,
    },
}
#: Emission density (Tg yr-1 per million km2) of the countries without a reported total.
_DENSITY: dict[str, float] = {"CH4": 1.0, "CO2": 60.0}

#: Relative 1-sigma uncertainty stated with each reported total.
REPORTED_UNCERTAINTY: dict[str, float] = {"CH4": 0.2, "CO2": 0.08}

#: The planted discrepancies: true emissions = factor x reported, for these countries and gases.
PLANTED: tuple[dict[str, Any], ...] = ({"gas": "CH4", "region": "THA", "factor": 2.0},)

#: Soundings a year after the product's screen, per gas (GOSAT over the domain).
_N_SOUNDINGS = {"CH4": 9000, "CO2": 6000}
#: Prior pattern error (lognormal sigma) and its correlation length in source cells.
_PATTERN_ERROR, _PATTERN_CELLS = 0.5, 6


def _streams(seed: int, n: int) -> list[np.random.Generator]:
    """Independent random streams (so that no draw reuses another's numbers)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _smooth_noise(shape: tuple[int, int], cells: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field with unit variance and a correlation length of ``cells``."""
    from scipy.ndimage import gaussian_filter

    z = gaussian_filter(rng.standard_normal(shape), cells, mode="wrap")
    return (z - z.mean()) / z.std()


def _countries(masks: xr.DataArray, gas: str, area: np.ndarray) -> dict[str, float]:
    """Target national total (Tg yr-1) of every country in the inventory box."""
    out = {}
    for code in masks["region"].values.astype(str):
        if code in REPORTED_TG[gas]:
            out[code] = REPORTED_TG[gas][code]
        else:
            km2 = float((masks.sel(region=code).values * area).sum()) / 1e6
            out[code] = _DENSITY[gas] * km2 / 1e6
    return out


def _solve_flux(
    masks: xr.DataArray,
    pattern: np.ndarray,
    totals: Mapping[str, float],
    area: np.ndarray,
    reported: Sequence[str] = (),
) -> np.ndarray:
    """A flux (kg m-2 s-1) sum_r f_r h k_r whose land-rule attributed totals match ``totals``.

    The attributed total of r is sum_q k_q sum_cells (f_r f_q / s) h A (s = sum of fractions):
    a small linear system, nearly diagonal (countries share only their border cells), solved
    for k >= 0 by non-negative least squares with the ``reported`` countries' totals weighted
    a thousand times more than the density-filled others (a small country next to a large
    one can only take what the large one's border cells leak into it).
    """
    from scipy.optimize import nnls

    codes = [str(c) for c in masks["region"].values]
    fr = masks.values
    s = fr.sum(axis=0)
    share = np.where(s > 0, fr / np.where(s > 0, s, 1.0), 0.0)
    ha = pattern * area
    M = np.einsum("rij,qij,ij->rq", share, fr, ha)
    target = np.array([totals.get(c, 0.0) for c in codes]) * 1e9 / SECONDS_PER_YEAR  # kg s-1
    wt = np.array([1e3 if c in reported else 1.0 for c in codes]) / np.maximum(target, 1e-3 * target.max())
    k, _ = nnls(M * wt[:, None], target * wt, maxiter=50 * len(codes))
    return np.einsum("rij,r->ij", fr, k) * pattern


def _gosat_sampling(gas: str, grid_land: tuple[GridSpec, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """GOSAT-like soundings: fixed points every 3 days at ~13:00 local time, clear skies by season."""
    grid, land = grid_land
    w, s, e, n = DEMO_BBOX
    lon0, lat0 = np.meshgrid(np.arange(w + 1.25, e, 2.5), np.arange(s + 1.25, n, 2.5))
    plon = (lon0.ravel() + rng.uniform(-0.6, 0.6, lon0.size)).clip(w + 0.01, e - 0.01)
    plat = (lat0.ravel() + rng.uniform(-0.6, 0.6, lat0.size)).clip(s + 0.01, n - 0.01)
    i, j = grid.locate(plat, plon)
    is_land = land[i, j] > 0.5
    phase = rng.integers(0, 3, plon.size)
    days = pd.date_range(f"{YEAR}-01-01", f"{YEAR}-12-31", freq="D")
    rows = []
    for d, day in enumerate(days):
        pts = np.flatnonzero(phase == d % 3)
        month = day.month
        wet_north = month in (6, 7, 8, 9)
        wet_south = month in (12, 1, 2)
        p = np.where(is_land[pts], 0.40, 0.12)
        p = np.where(wet_north & (plat[pts] > 5.0) & is_land[pts], p * 0.4, p)
        p = np.where(wet_south & (plat[pts] < 0.0) & is_land[pts], p * 0.5, p)
        seen = pts[rng.uniform(size=pts.size) < p]
        for k in seen:
            hours = 13.0 - plon[k] / 15.0 + rng.normal(0.0, 0.3)
            rows.append((day + pd.Timedelta(hours=hours), plat[k] + rng.normal(0, 0.05), plon[k] + rng.normal(0, 0.05)))
    df = pd.DataFrame(rows, columns=["time", "latitude", "longitude"])
    want = _N_SOUNDINGS[gas]
    if len(df) > want:
        df = df.iloc[np.sort(rng.choice(len(df), want, replace=False))]
    return df.sort_values("time").reset_index(drop=True)


def _write_winds(path: Path, winds: xr.Dataset) -> Path:
    """The ERA5 CDS layout: ``valid_time``, ``pressure_level``, latitude descending, float32."""
    ds = winds.rename({"time": "valid_time", "level": "pressure_level"}).sortby("latitude", ascending=False)
    for v in ("u", "v"):
        ds[v].attrs = {"units": "m s**-1", "standard_name": {"u": "eastward_wind", "v": "northward_wind"}[v]}
    ds["pressure_level"].attrs = {"units": "hPa", "long_name": "pressure"}
    ds.attrs = {
        "source": "synthetic ERA5-like monsoon winds (gosat_pipeline.testing.atmosphere)",
        "synthetic": "true",
        "Conventions": "CF-1.7",
    }
    # 0.1 m s-1 is far below the winds' own error; quantising to it lets zlib shrink the file
    enc = {v: {"zlib": True, "complevel": 4, "dtype": "float32", "least_significant_digit": 1} for v in ("u", "v")}
    tmp = path.with_suffix(".tmp")
    ds.to_netcdf(tmp, encoding=enc)
    tmp.replace(path)
    return path


def _truth_fields(
    masks: xr.DataArray,
    hot: np.ndarray,
    area: np.ndarray,
    planted: Sequence[Mapping],
    rng: np.random.Generator,
    pattern_error: float = _PATTERN_ERROR,
) -> dict[str, np.ndarray]:
    """True fluxes: the prior's pattern with correlated lognormal errors, national totals as reported
    (times the planted factors); ``pattern_error=0`` keeps the prior's pattern."""
    out = {}
    for gas in ("CH4", "CO2"):
        eps = np.exp(pattern_error * _smooth_noise(hot.shape, _PATTERN_CELLS, rng) - 0.5 * pattern_error**2)
        totals = _countries(masks, gas, area)
        for p in planted:
            if p["gas"] == gas and p["region"] in totals:
                totals[p["region"]] = totals[p["region"]] * float(p["factor"])
        out[gas] = _solve_flux(masks, hot * eps, totals, area, REPORTED_TG[gas])
    return out


def true_totals(
    truth_flux: np.ndarray, masks: xr.DataArray, grid: GridSpec, bbox: tuple[float, float, float, float] | None = None
) -> dict[str, float]:
    """National (or, with ``bbox``, in-box) totals of a flux, Tg yr-1, attributed by the land rule."""
    da = xr.DataArray(truth_flux, dims=("latitude", "longitude"), coords=grid.coords())
    fields = attribute_emissions(da, masks, rule="land", rest=False)
    area = grid.cell_area()
    if bbox is not None:
        w, s, e, n = bbox
        inside = (grid.lat[:, None] > s) & (grid.lat[:, None] < n) & (grid.lon[None, :] > w) & (grid.lon[None, :] < e)
        area = area * inside
    tot = (fields.values * area).sum(axis=(1, 2)) * SECONDS_PER_YEAR / 1e9
    return {str(c): float(v) for c, v in zip(fields["region"].values, tot, strict=True)}


def _identical_enhancement(
    gas: str, flux_src: np.ndarray, src: GridSpec, winds: xr.Dataset, snd: pd.DataFrame
) -> np.ndarray:
    """The teaching twin: the inversion's own steady operator on the 1-degree domain grid."""
    from gosat_pipeline.inventory import regrid_conservative
    from gosat_pipeline.transport import SimpleTransport
    from gosat_pipeline.winds import open_winds

    grid = GridSpec.from_resolution(1.0, DEMO_BBOX)
    flux = regrid_conservative(xr.DataArray(flux_src, dims=("latitude", "longitude"), coords=src.coords()), grid)
    with_path = winds.attrs.get("path")
    w = open_winds(with_path, grid=grid) if with_path else None
    op = SimpleTransport(grid, w["u"], w["v"])  # type: ignore[index]
    c = op.solve(flux.values / MOLAR_MASS[gas]) / GAS_UNIT_TO_MOLMOL[gas]
    i, j = grid.locate(snd["latitude"].values, snd["longitude"].values)
    return c[np.maximum(i, 0), np.maximum(j, 0)]


def _granules(
    gas: str, snd: pd.DataFrame, enh: np.ndarray, out: Path, rng: np.random.Generator, background: Mapping[str, Any]
) -> list[Path]:
    """Write one granule per observing day in the gas's real layout."""
    from gosat_pipeline.testing.atmosphere import background_field
    from gosat_pipeline.testing.granules import granule_filename, write_granule

    n = len(snd)
    pool = make_soundings(
        n,
        gas,
        seed=int(rng.integers(0, 2**31)),
        bbox=DEMO_BBOX,
        start=f"{YEAR}-01-01",
        end=f"{YEAR + 1}-01-01",
        bad_fraction=0.08,
    )
    ds = pool.assign_coords(
        time=("sounding", snd["time"].values.astype("datetime64[ns]")),
        latitude=("sounding", snd["latitude"].values),
        longitude=("sounding", snd["longitude"].values),
    )
    ps = ds["surface_pressure"].values if "surface_pressure" in ds else None
    ak = boundary_layer_ak(ds["averaging_kernel"].values, ds["pressure_weight"].values, ds["pressure"].values, ps)
    bg = background_field(
        gas,
        snd["latitude"].values,
        snd["longitude"].values,
        snd["time"].values,
        seed=int(rng.integers(0, 2**31)),
        **dict(background),
    )
    noise = ds["xgas_uncertainty"].values * rng.standard_normal(n)
    ds["xgas"] = ds["xgas"].copy(data=bg + np.where(np.isfinite(ak), ak, 1.0) * enh + noise)
    ds.attrs["synthetic"] = "true"
    fmt = {"CH4": "cci_ocpr", "CO2": "acos_lite"}[gas]
    gdir = out / "granules" / gas
    gdir.mkdir(parents=True, exist_ok=True)
    for old in gdir.iterdir():
        old.unlink()
    days = pd.DatetimeIndex(ds["time"].values).normalize()
    written = []
    for day in days.unique():
        sel = np.flatnonzero(days == day)
        path = gdir / granule_filename(fmt, day)
        write_granule(ds.isel(sounding=sel), path, fmt)
        written.append(path)
    return written


def _reported_table() -> pd.DataFrame:
    rows = []
    for gas, totals in REPORTED_TG.items():
        for area, tg in totals.items():
            rows.append(
                {
                    "area": area,
                    "year": YEAR,
                    "gas": gas,
                    "category": "M.0.EL",
                    "value": round(tg * 1000.0, 3),
                    "unit": f"kt {gas}/yr",
                    "source": "Synthetic national submission (demo)",
                    "category_scheme": "IPCC2006_PRIMAP",
                    "uncertainty_rel": REPORTED_UNCERTAINTY[gas],
                    "notes": "synthetic demonstration value",
                }
            )
    return pd.DataFrame(rows)


def _cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_demo_samples(
    out_dir: str | Path = "data_samples",
    *,
    seed: int = 2024,
    truth: str = "independent",
    planted: Sequence[Mapping[str, Any]] | None = None,
    noise_seed: int | None = None,
    atmosphere: Mapping[str, Any] | None = None,
    background: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write the demonstration inputs into ``out_dir``; return the files written.

    Parameters
    ----------
    out_dir : path-like
        Destination folder (created; existing demo files are replaced).
    seed : int
        Seed of the prior, the truth's pattern errors, the winds and the sampling: the same
        seed gives the same science content on every machine.
    truth : {"independent", "identical"}
        An atmosphere that is not the inversion's forward model (the default), or the
        inversion's own steady operator (a teaching twin).
    planted : sequence of dict, optional
        ``{"gas", "region", "factor"}``: true emissions = factor x reported. Default
        :data:`PLANTED`.
    noise_seed : int, optional
        Seed of the retrieval noise and the background's synoptic variation (default
        ``seed``): vary it to repeat an experiment with new noise on the same truth.
    atmosphere : mapping, optional
        Settings of :class:`~gosat_pipeline.testing.atmosphere.TruthAtmosphere` (e.g.
        ``ventilation_land``, ``wind_speedup``, ``unresolved_rms``) other than the defaults.
    background : mapping, optional
        Settings of :func:`~gosat_pipeline.testing.atmosphere.background_field`
        (``curvature``, ``synoptic``).

    Returns
    -------
    list of pathlib.Path
    """
    from gosat_pipeline.regions import domain_regions, load_boundaries, region_masks
    from gosat_pipeline.testing.atmosphere import make_monsoon_winds
    from gosat_pipeline.testing.inventories import write_edgar_like, write_reported_totals_csv

    if truth not in ("independent", "identical"):
        raise ValueError(f"truth={truth!r}; allowed: 'independent', 'identical'")
    planted = list(PLANTED if planted is None else planted)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r_prior, r_truth, r_winds, r_sample, r_atm = _streams(seed, 5)
    r_noise = _streams(seed if noise_seed is None else noise_seed, 2)
    src = GridSpec.from_resolution(SOURCE_RESOLUTION, INVENTORY_BBOX)
    area = src.cell_area()
    bnd = load_boundaries()
    inbox = domain_regions(bnd, INVENTORY_BBOX, min_area_km2=100.0)
    masks = region_masks(bnd[bnd["region"].isin(list(inbox["region"]))], src, min_fraction=0.0)
    hot = np.exp(0.6 * _smooth_noise(src.shape, 2, r_prior)) * (masks.values.sum(axis=0) > 0)
    written: list[Path] = []
    prior: dict[str, np.ndarray] = {}
    for gas in ("CH4", "CO2"):
        prior[gas] = _solve_flux(masks, hot, _countries(masks, gas, area), area, REPORTED_TG[gas])
        p = out / f"prior_{gas}.nc"
        da = xr.DataArray(
            prior[gas], dims=("latitude", "longitude"), coords=src.coords(), attrs={"units": "kg m-2 s-1"}
        )
        write_edgar_like(p, da, gas=gas, layout="v8_fluxes", year=YEAR)
        written.append(p)
    # the teaching twin keeps the prior's pattern (the inversion's state can represent it exactly)
    truth_flux = _truth_fields(masks, hot, area, planted, r_truth, 0.0 if truth == "identical" else _PATTERN_ERROR)
    wgrid = GridSpec.from_resolution(
        2.5, (TRUTH_BBOX[0] - 2.5, TRUTH_BBOX[1] - 2.5, TRUTH_BBOX[2] + 2.5, TRUTH_BBOX[3] + 2.5)
    )
    winds = make_monsoon_winds(wgrid, f"{YEAR - 1}-12-15", f"{YEAR + 1}-01-01", seed=int(r_winds.integers(0, 2**31)))
    wpath = _write_winds(out / "winds_era5.nc", winds)
    written.append(wpath)
    sgrid = GridSpec.from_resolution(1.0, DEMO_BBOX)
    land = region_masks(bnd[bnd["region"].isin(list(inbox["region"]))], sgrid, min_fraction=0.0).sum("region").values
    samples = {g: _gosat_sampling(g, (sgrid, land), r_sample) for g in ("CH4", "CO2")}
    enh = _truth_enhancements(
        truth,
        truth_flux,
        src,
        winds,
        wpath,
        samples,
        bnd,
        inbox,
        r_atm,
        out,
        key=_cache_key(seed, truth, planted, atmosphere),
        atmosphere=atmosphere or {},
    )
    for k, gas in enumerate(("CH4", "CO2")):
        written += _granules(gas, samples[gas], enh[gas], out, r_noise[k], background or {})
    rep = out / "reported_totals.csv"
    write_reported_totals_csv(rep, _reported_table())
    written.append(rep)
    record = {
        "builder": DEMO_VERSION,
        "truth_model": truth,
        "planted": planted,
        "reported_tg_per_yr": REPORTED_TG,
        "true_tg_per_yr": {
            g: {c: round(v, 4) for c, v in true_totals(truth_flux[g], masks, src).items() if c in REPORTED_TG[g]}
            for g in truth_flux
        },
        "true_in_domain_tg_per_yr": {
            g: {c: round(v, 4) for c, v in true_totals(truth_flux[g], masks, src, DEMO_BBOX).items() if v > 0}
            for g in truth_flux
        },
        "prior_tg_per_yr": {
            g: {c: round(v, 4) for c, v in true_totals(prior[g], masks, src).items() if c in REPORTED_TG[g]}
            for g in prior
        },
        "soundings": {g: len(samples[g]) for g in samples},
        "seed": seed,
        "noise_seed": seed if noise_seed is None else noise_seed,
    }
    path = out / "truth.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    written.append(path)
    return written


def _truth_enhancements(
    truth: str,
    flux: dict[str, np.ndarray],
    src: GridSpec,
    winds: xr.Dataset,
    wpath: Path,
    samples: dict[str, pd.DataFrame],
    bnd: Any,
    inbox: pd.DataFrame,
    rng: np.random.Generator,
    out: Path,
    *,
    key: str,
    atmosphere: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Each sounding's true boundary-layer enhancement (gas units), cached by the truth's key."""
    cache = out / f".truth_enhancement_{key}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            if all(g in z and z[g].size == len(samples[g]) for g in samples):
                return {g: z[g] for g in samples}
    if truth == "identical":
        winds = winds.assign_attrs(path=str(wpath))
        res = {g: _identical_enhancement(g, flux[g], src, winds, samples[g]) for g in samples}
    else:
        res = _independent_enhancement(flux, src, winds, samples, bnd, inbox, rng, atmosphere)
    for old in out.glob(".truth_enhancement_*.npz"):
        old.unlink()
    np.savez_compressed(cache, **res)
    return res


def _independent_enhancement(
    flux: dict[str, np.ndarray],
    src: GridSpec,
    winds: xr.Dataset,
    samples: dict[str, pd.DataFrame],
    bnd: Any,
    inbox: pd.DataFrame,
    rng: np.random.Generator,
    atmosphere: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    from gosat_pipeline.inventory import regrid_conservative
    from gosat_pipeline.regions import region_masks
    from gosat_pipeline.testing.atmosphere import TruthAtmosphere

    tgrid = GridSpec.from_resolution(0.5, TRUTH_BBOX)
    land = region_masks(bnd[bnd["region"].isin(list(inbox["region"]))], tgrid, min_fraction=0.0).sum("region").values
    gases = list(samples)
    fields = np.stack(
        [
            regrid_conservative(
                xr.DataArray(flux[g], dims=("latitude", "longitude"), coords=src.coords()), tgrid
            ).values
            for g in gases
        ]
    )
    atm = TruthAtmosphere(tgrid, winds, land=land, seed=int(rng.integers(0, 2**31)), **dict(atmosphere))
    pts = pd.concat(list(samples.values()), ignore_index=True)
    vals = atm.run(
        fields,
        gases,
        f"{YEAR}-01-01",
        f"{YEAR + 1}-01-01",
        pts["time"].values,
        pts["latitude"].values,
        pts["longitude"].values,
    )
    out, k0 = {}, 0
    for k, g in enumerate(gases):
        n = len(samples[g])
        out[g] = vals[k, k0 : k0 + n]
        k0 += n
    return out
