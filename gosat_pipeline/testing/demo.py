"""Build the bundled demonstration inputs (``make data-samples``).

A Southeast Asia domain (the ASEAN member states) for 2020 with:

- synthetic GOSAT-like soundings written in two real public layouts: UoL/ESA CCI proxy
  XCH4 (OCPR, one file per observing day) and NASA ACOS GOSAT Lite XCO2;
- an EDGAR-like prior for each gas (EDGAR v8 ``fluxes`` layout, 0.5 degree);
- a reported-totals CSV in the long schema (INVENTORIES.md 1.6.1);
- ERA5-like winds.

The soundings are made by the same forward model the inversion uses (the simple
transport operator of DESIGN.md 5.2 and the column averaging kernel of 5.1) from a
*true* emission field, plus a monthly background and retrieval noise. The truth equals
the reported inventory everywhere except one planted country and gas
(:data:`PLANTED`), whose true emissions exceed the reported total. The demo run must flag
that country and call the others consistent or not constrained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.gridding import boundary_layer_ak
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.regions import ASEAN_MEMBERS
from gosat_pipeline.schema import GAS_UNIT_TO_MOLMOL, MOLAR_MASS
from gosat_pipeline.testing.soundings import BACKGROUND_XGAS, make_soundings

__all__ = [
    "ASEAN",
    "DEMO_BBOX",
    "PLANTED",
    "REPORTED_TG",
    "build_demo_samples",
]

logger = logging.getLogger(__name__)

#: The demonstration's countries (the ASEAN member states).
ASEAN: tuple[str, ...] = ASEAN_MEMBERS
DEMO_BBOX: tuple[float, float, float, float] = (90.0, -12.0, 142.0, 30.0)
YEAR = 2020

#: Reported national totals (Tg yr-1), of the order of the countries' real inventories.
REPORTED_TG: dict[str, dict[str, float]] = {
    "CH4": {"IDN": 14.0, "THA": 4.0, "VNM": 4.5, "MMR": 4.0, "PHL": 3.0, "MYS": 2.0,
            "KHM": 1.5, "LAO": 0.6, "BRN": 0.1, "SGP": 0.1},
    "CO2": {"IDN": 600.0, "THA": 280.0, "VNM": 330.0, "MYS": 260.0, "PHL": 150.0, "SGP": 50.0,
            "MMR": 40.0, "KHM": 15.0, "LAO": 20.0, "BRN": 8.0},
}  # fmt: skip

#: Relative 1-sigma uncertainty stated with each reported total.
REPORTED_UNCERTAINTY: dict[str, float] = {"CH4": 0.2, "CO2": 0.08}

#: The planted discrepancy: true emissions = factor x reported, for this country and gas.
PLANTED: dict[str, Any] = {"gas": "CH4", "region": "THA", "factor": 2.0}

_WIND_U, _WIND_V = -2.0, 1.0  # m s-1: easterly trades with a weak southerly component
_K_H, _TAU = 5.0e4, 172800.0  # must match transport: in configs/demo.yaml
_N_SOUNDINGS = {"CH4": 4800, "CO2": 3600}
_OBS_DAYS = 24


def _true_scale(gas: str, region: str) -> float:
    if gas == PLANTED["gas"] and region == PLANTED["region"]:
        return float(PLANTED["factor"])
    return 1.0


def _flux_pattern(
    grid: GridSpec, masks: xr.DataArray, totals_tg: dict[str, float], seed: int
) -> xr.DataArray:
    """A flux field (kg m-2 s-1) whose per-country totals equal ``totals_tg`` (Tg yr-1)."""
    rng = np.random.default_rng(seed)
    area = grid.cell_area()
    hotspots = np.exp(rng.normal(0.0, 0.6, grid.shape))  # spatial structure inside countries
    flux = np.zeros(grid.shape)
    seconds = 365.25 * 86400.0
    for region in masks["region"].values:
        frac = masks.sel(region=region).values
        target = totals_tg.get(str(region))
        if target is None or frac.sum() == 0:
            continue
        pattern = frac * hotspots
        mass = (pattern * area).sum()
        flux += pattern * (target * 1e9 / seconds) / mass
    coords = grid.coords()
    return xr.DataArray(flux, dims=("latitude", "longitude"), coords=coords, name="flux",
                        attrs={"units": "kg m-2 s-1"})  # fmt: skip


def _block_regrid(flux: xr.DataArray, fine: GridSpec, coarse: GridSpec) -> np.ndarray:
    """Mass-conserving 2x2 block sum of a nested fine grid onto the coarse grid (kg m-2 s-1)."""
    mass = flux.values * fine.cell_area()
    ny, nx = coarse.shape
    summed = mass.reshape(ny, 2, nx, 2).sum(axis=(1, 3))
    return summed / coarse.cell_area()


def _enhancement(grid: GridSpec, flux: np.ndarray, gas: str) -> np.ndarray:
    """Column enhancement in the gas's canonical units from the simple transport operator."""
    from gosat_pipeline.transport import SimpleTransport

    op = SimpleTransport(grid, _WIND_U, _WIND_V, eddy_diffusivity=_K_H, ventilation_time=_TAU)
    f_mol = flux / MOLAR_MASS[gas]  # mol m-2 s-1
    c = op.solve(f_mol)  # mol mol-1
    return np.asarray(c).reshape(grid.shape) / GAS_UNIT_TO_MOLMOL[gas]


def _soundings(
    gas: str, grid: GridSpec, masks: xr.DataArray, enh: np.ndarray, seed: int
) -> xr.Dataset:
    """GOSAT-like soundings: mostly over land, on fixed observing days, with noise."""
    rng = np.random.default_rng(seed)
    n_target = _N_SOUNDINGS[gas]
    land = masks.sum("region").values
    pool = make_soundings(4 * n_target, gas, seed=seed, bbox=DEMO_BBOX, start=f"{YEAR}-01-01",
                          end=f"{YEAR + 1}-01-01", bad_fraction=0.08)  # fmt: skip
    i, j = grid.locate(pool.latitude.values, pool.longitude.values)
    keep_p = np.where(
        i >= 0, 0.08 + 0.92 * np.clip(land[np.maximum(i, 0), np.maximum(j, 0)], 0, 1), 0.0
    )
    keep = np.flatnonzero(rng.uniform(size=keep_p.size) < keep_p)[:n_target]
    ds = pool.isel(sounding=keep)
    i, j = i[keep], j[keep]
    # Observing days: GOSAT repeats every 3 days; use _OBS_DAYS days spread over the year.
    days = pd.date_range(f"{YEAR}-01-05", f"{YEAR}-12-28", periods=_OBS_DAYS).normalize()
    day_idx = rng.integers(0, days.size, ds.sizes["sounding"])
    seconds = rng.uniform(3 * 3600, 7 * 3600, ds.sizes["sounding"])  # ~13:00 local overpass in UTC
    time = days.values[day_idx] + (seconds * 1e9).astype("timedelta64[ns]")
    order = np.argsort(time)
    ds = ds.isel(sounding=order)
    i, j, time = i[order], j[order], time[order]
    month = pd.DatetimeIndex(time).month.values
    background = BACKGROUND_XGAS[gas] * (
        1.0 + (0.004 if gas == "CH4" else 0.006) * np.sin(2 * np.pi * month / 12)
    )
    # the same boundary-layer sensitivity the gridding stage computes (DESIGN.md 5.1)
    ps = ds["surface_pressure"].values if "surface_pressure" in ds else None
    ak = boundary_layer_ak(
        ds["averaging_kernel"].values, ds["pressure_weight"].values, ds["pressure"].values, ps
    )
    signal = enh[i, j] * np.where(np.isfinite(ak), ak, 1.0)
    noise = ds["xgas_uncertainty"].values * rng.standard_normal(ds.sizes["sounding"])
    ds = ds.assign_coords(time=("sounding", time))
    ds["xgas"] = ds["xgas"].copy(data=background + signal + noise)
    ds.attrs["synthetic"] = "true"
    return ds


def _reported_table() -> pd.DataFrame:
    rows = []
    for gas, totals in REPORTED_TG.items():
        for area, tg in totals.items():
            value_kt = tg * 1000.0
            rows.append({"area": area, "year": YEAR, "gas": gas, "category": "M.0.EL",
                         "value": round(value_kt, 3), "unit": f"kt {gas}/yr",
                         "source": "Synthetic national submission (demo)",
                         "category_scheme": "IPCC2006_PRIMAP",
                         "uncertainty_rel": REPORTED_UNCERTAINTY[gas],
                         "notes": "synthetic demonstration value"})  # fmt: skip
    return pd.DataFrame(rows)


def build_demo_samples(out_dir: str | Path = "data_samples", *, seed: int = 2024) -> list[Path]:
    """Write the demonstration inputs into ``out_dir``; return the files written.

    Parameters
    ----------
    out_dir : path-like
        Destination folder (created; existing demo files are replaced).
    seed : int
        Seed of every random draw: the same seed gives byte-identical science content.

    Returns
    -------
    list of pathlib.Path
    """
    from gosat_pipeline.regions import load_boundaries, region_masks
    from gosat_pipeline.testing.granules import granule_filename, write_granule
    from gosat_pipeline.testing.inventories import (
        write_edgar_like,
        write_era5_like,
        write_reported_totals_csv,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = GridSpec.from_resolution(1.0, DEMO_BBOX)
    fine = GridSpec.from_resolution(0.5, DEMO_BBOX)
    bnd = load_boundaries(iso3=list(ASEAN))
    masks = region_masks(bnd, grid)
    masks_fine = region_masks(bnd, fine)
    written: list[Path] = []
    formats = {"CH4": ("cci_ocpr", "nc"), "CO2": ("acos_lite", "nc4")}
    truth_record: dict[str, Any] = {
        "planted": PLANTED,
        "reported_tg_per_yr": REPORTED_TG,
        "true_tg_per_yr": {},
    }
    for k, gas in enumerate(("CH4", "CO2")):
        reported = REPORTED_TG[gas]
        prior_fine = _flux_pattern(fine, masks_fine, reported, seed + 10 * k)
        p = out / f"prior_{gas}.nc"
        write_edgar_like(p, prior_fine, gas=gas, layout="v8_fluxes", year=YEAR)
        written.append(p)
        prior = _block_regrid(prior_fine, fine, grid)
        # Truth = prior scaled inside the planted country's cells (the inversion's state definition).
        scale = 1.0 + sum(
            (_true_scale(gas, str(r)) - 1.0) * masks.sel(region=r).values
            for r in masks.region.values
        )
        truth_flux = prior * scale
        truth_record["true_tg_per_yr"][gas] = {
            r: v * _true_scale(gas, r) for r, v in reported.items()
        }
        enh = _enhancement(grid, truth_flux, gas)
        snd = _soundings(gas, grid, masks, enh, seed + 100 + k)
        fmt, _ext = formats[gas]
        gdir = out / "granules" / gas
        gdir.mkdir(parents=True, exist_ok=True)
        for old in gdir.iterdir():
            old.unlink()
        days = pd.DatetimeIndex(snd.time.values).normalize()
        for day in days.unique():
            sel = np.flatnonzero(days == day)
            path = gdir / granule_filename(fmt, day)
            write_granule(snd.isel(sounding=sel), path, fmt)
            written.append(path)
    rep = out / "reported_totals.csv"
    write_reported_totals_csv(rep, _reported_table())
    written.append(rep)
    winds = out / "winds_era5.nc"
    write_era5_like(
        winds, GridSpec.from_resolution(2.5, DEMO_BBOX), u=_WIND_U, v=_WIND_V, year=YEAR
    )
    written.append(winds)
    truth = out / "truth.json"
    truth.write_text(json.dumps(truth_record, indent=2) + "\n")
    written.append(truth)
    return written
