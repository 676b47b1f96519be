"""Observing-system simulation experiments (OSSE) for the transport + inversion stages.

:func:`make_osse_case` builds a known truth (box regions whose emissions are scaled
away from the prior), GOSAT-like sparse sampling, seeded noise, and returns the same
objects the pipeline passes between stages (L3 dataset, prior flux, region masks, winds).
Two truth models:

- ``truth="identical"`` (the teaching twin): the truth is made by the inversion's own
  steady operator (:class:`~gosat_pipeline.transport.SimpleTransport`, uniform winds) with
  a uniform background per month; it tests the algebra only.
- ``truth="independent"`` (a non-identical twin, DESIGN.md 7): the truth is made by an
  atmosphere that is not the inversion's operator
  (:class:`~gosat_pipeline.testing.atmosphere.TruthAtmosphere` under 6-hourly monsoon
  winds, on its own finer and larger grid), with prior pattern errors, a background that
  is not a plane, and soundings near 13:00 local time gridded into daily L3 bins; the
  inversion reads the winds from the same ERA5-like file and uses the time-resolved
  operator.

:func:`run_osse` runs the Jacobian and the inversion on it (optionally with the posteriors
of an ensemble of perturbed inversions, :func:`osse_inversion_inputs` giving their
inputs) and reports which elements and region totals the data constrain and whether
their truth lies within 2 sigma: the analytic one, and the combined one of the
comparison stage (ensemble spread and structural transport error).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import ConfigError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inversion import invert, mass_balance
from gosat_pipeline.params import InversionSettings
from gosat_pipeline.schema import GAS_UNIT_TO_MOLMOL, MOLAR_MASS, cf_attrs, gas_units
from gosat_pipeline.statevector import REST_REGION, StateVector
from gosat_pipeline.testing.soundings import BACKGROUND_XGAS
from gosat_pipeline.transport import (
    DEFAULT_EDDY_DIFFUSIVITY,
    DEFAULT_SIGMA_MODEL,
    DEFAULT_VENTILATION_TIME,
    SECONDS_PER_YEAR,
    SimpleTransport,
    TransportSettings,
    build_jacobian,
)

__all__ = ["OSSE_BBOX", "TRUTH_MODELS", "make_osse_case", "osse_inversion_inputs", "run_osse"]

logger = logging.getLogger(__name__)

#: Default OSSE domain (west, south, east, north): a 30 x 30 degree box.
OSSE_BBOX: tuple[float, float, float, float] = (100.0, 5.0, 130.0, 35.0)

#: The truth models of :func:`make_osse_case`.
TRUTH_MODELS: tuple[str, ...] = ("identical", "independent")

#: Per gas: (single-sounding retrieval error, model error, regional totals range Tg yr-1).
_GAS_DEFAULTS: dict[str, tuple[float, float, tuple[float, float]]] = {
    "CH4": (12.0, 3.0, (1.5, 6.0)),
    "CO2": (1.5, 0.4, (60.0, 300.0)),
}


def _box_regions(grid: GridSpec, regions: int | dict[str, tuple[float, float, float, float]]) -> dict[str, Any]:
    """Region boxes (west, south, east, north): a dict as given, or a k x k layout with gaps."""
    if isinstance(regions, dict):
        return dict(regions)
    k = max(1, math.ceil(math.sqrt(int(regions))))
    w, s, e, n = grid.bbox
    dlon, dlat = (e - w) / k, (n - s) / k
    out: dict[str, Any] = {}
    for idx in range(int(regions)):
        i, j = divmod(idx, k)
        # inset every box by ~15 % so that neighbouring regions are separated by unscaled cells
        box = (w + (j + 0.15) * dlon, s + (i + 0.15) * dlat, w + (j + 0.85) * dlon, s + (i + 0.85) * dlat)
        out[f"R{idx + 1:02d}"] = box
    return out


def _masks(grid: GridSpec, boxes: dict[str, Any]) -> xr.DataArray:
    """Exact area fractions of each box in each cell (regular boxes on a regular grid)."""
    la0, la1 = grid.lat_edges[:-1], grid.lat_edges[1:]
    lo0, lo1 = grid.lon_edges[:-1], grid.lon_edges[1:]
    fr = []
    for w, s, e, n in boxes.values():
        sin = lambda a: np.sin(np.deg2rad(a))  # noqa: E731
        fy = np.clip(sin(np.minimum(la1, n)) - sin(np.maximum(la0, s)), 0, None) / (sin(la1) - sin(la0))
        fx = np.clip(np.minimum(lo1, e) - np.maximum(lo0, w), 0, None) / (lo1 - lo0)
        fr.append(np.outer(fy, fx))
    codes = list(boxes)
    return xr.DataArray(
        np.array(fr),
        dims=("region", "latitude", "longitude"),
        coords={
            "region": np.array(codes, dtype=str),
            "region_name": ("region", np.array([f"Synthetic region {c[1:]}" for c in codes], dtype=str)),
            **grid.coords(),
        },
        name="region_fraction",
        attrs={"units": "1", "long_name": "fraction of the cell area in the region"},
    )


def _prior_flux(grid: GridSpec, masks: xr.DataArray, gas: str, rng: np.random.Generator) -> xr.DataArray:
    """Prior flux (kg m-2 s-1): lognormal hot spots scaled to a random total per region."""
    lo, hi = _GAS_DEFAULTS[gas][2]
    area = grid.cell_area()
    hot = np.exp(rng.normal(0.0, 0.7, grid.shape))
    fr = masks.values
    flux = np.zeros(grid.shape)
    for r in range(fr.shape[0]):
        total = rng.uniform(lo, hi) * 1e9 / SECONDS_PER_YEAR  # kg s-1
        pat = fr[r] * hot
        flux += pat * total / (pat * area).sum()
    outside = np.clip(1.0 - fr.sum(0), 0.0, 1.0)
    # weak unscaled emissions between the regions: 5 % of the mean regional flux density
    flux += outside * 0.05 * flux[fr.sum(0) > 0.5].mean() * hot
    return xr.DataArray(
        flux,
        dims=("latitude", "longitude"),
        coords=grid.coords(),
        name="flux",
        attrs={"units": "kg m-2 s-1", "long_name": f"prior {gas} emission flux"},
    )


def _sampling(
    shape: tuple[int, int, int],
    land: np.ndarray,
    fraction: float,
    per_cell: float,
    sampling: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Soundings per (time, cell): GOSAT-like sparse sampling, mostly over the regions."""
    nt = shape[0]
    if sampling == "full":
        return np.full(shape, max(1, round(per_cell)), dtype="int64")
    if sampling != "gosat":
        raise ValueError(f"sampling={sampling!r}; allowed: 'gosat', 'full'")
    # GOSAT observes a fixed pattern of points every 3 days: cells over land are seen far
    # more often than cells over sea (glint only); counts per cell-month are small.
    p = fraction * (0.25 + 0.75 * np.clip(land, 0.0, 1.0))
    seen = rng.uniform(size=shape) < np.broadcast_to(p, shape)
    n = 1 + rng.poisson(max(per_cell - 1.0, 0.0), size=shape)
    del nt
    return np.where(seen, n, 0).astype("int64")


def make_osse_case(
    *,
    seed: int = 0,
    gas: str = "CH4",
    grid: GridSpec | None = None,
    regions: int | dict[str, tuple[float, float, float, float]] = 16,
    truth_scale: dict[str, float] | None = None,
    n_months: int = 3,
    start: str = "2020-01-01",
    obs_fraction: float = 0.35,
    soundings_per_cell: float = 3.0,
    sigma_retrieval: float | None = None,
    sigma_model: float | None = None,
    sampling: str = "gosat",
    u: float = -3.0,
    v: float = 1.0,
    eddy_diffusivity: float = DEFAULT_EDDY_DIFFUSIVITY,
    ventilation_time: float = DEFAULT_VENTILATION_TIME,
    prior_error: float = InversionSettings.prior_error,
    period_split: str | None = None,
    truth: str = "identical",
    margin: float = 8.0,
    truth_resolution: float = 0.5,
    pattern_error: float = 0.5,
    atmosphere: Mapping[str, Any] | None = None,
    background: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a seeded OSSE case.

    Parameters
    ----------
    seed : int
        Seed of every random draw.
    gas : {"CH4", "CO2"}
    grid : GridSpec, optional
        The inversion grid. Default: 1 degree over :data:`OSSE_BBOX` (30 x 30 cells).
    regions : int or dict
        Number of box regions laid out on a k x k pattern, or {code: (w, s, e, n)}.
    truth_scale : dict, optional
        True scale factor of each region's total; default drawn away from the prior:
        :math:`1 \\pm U(0.2, 0.7)`, half of the regions above and half below the prior.
    n_months : int
        Length of the experiment in months from ``start``.
    obs_fraction : float
        Probability that a land (region) cell is observed in a month (a quarter of it over
        the sea between regions). With ``truth="independent"`` the same expected number
        of observations is spread over the cell's overpass days (every third day).
    soundings_per_cell : float
        Mean soundings in an observed cell-month (identical) or cell-day (independent):
        1 + Poisson.
    sigma_retrieval, sigma_model : float, optional
        Single-sounding retrieval error and the model error the inversion assumes (gas
        units). Defaults: per gas for the identical twin (3 ppb CH4, 0.4 ppm CO2, the
        forward model is exact); the pipeline's default
        (:data:`gosat_pipeline.transport.DEFAULT_SIGMA_MODEL`) for the independent truth.
    sampling : {"gosat", "full"}
        ``full`` observes every cell in every time bin (identical) or on every overpass
        day (independent).
    u, v : float, m s-1
        Uniform winds of the identical twin (not used by the independent truth, whose
        winds are :func:`~gosat_pipeline.testing.atmosphere.make_monsoon_winds`).
    eddy_diffusivity, ventilation_time : float
        The inversion operator's parameters (m2 s-1, s); with the identical twin also the
        truth's.
    prior_error : float
        Relative prior error the case is meant to be inverted with.
    period_split : str, optional
        Emission periods for the inversion (the truth is constant in time).
    truth : {"identical", "independent"}
        ``identical`` (default, a teaching twin): the truth is made by the inversion's
        own steady operator with uniform winds, monthly super-observations, a uniform
        background per month. ``independent``: see Notes.
    margin : float, degrees
        Independent truth only: its atmosphere and winds extend this far beyond the
        inversion grid, so emissions outside flow in.
    truth_resolution : float, degrees
        Independent truth only: resolution of the truth's own grid.
    pattern_error : float
        Independent truth only: lognormal sigma of the true flux pattern's errors inside
        the regions (correlated over about 1.5 degrees); each region's total stays its
        ``truth_scale`` times the prior's.
    atmosphere, background : mapping, optional
        Independent truth only: settings of
        :class:`~gosat_pipeline.testing.atmosphere.TruthAtmosphere` and
        :func:`~gosat_pipeline.testing.atmosphere.background_field` other than their
        defaults.

    Returns
    -------
    dict
        ``obs`` (L3 dataset), ``prior_flux``, ``truth_flux`` (kg m-2 s-1 on the
        inversion grid), ``masks``, ``winds`` (Dataset ``u``, ``v``: uniform fields, or
        for the independent truth ``(time, latitude, longitude)`` on the inversion grid as
        :func:`gosat_pipeline.winds.open_winds` with ``time_resolved=True`` reads them
        from the ERA5-like file), ``truth_scale`` (DataArray region: true total / prior
        total), ``truth_totals`` (DataArray region, Tg yr-1, inside the inversion domain),
        ``background`` (DataArray, gas units: per month, or the true background of each
        cell-day), ``grid``, ``gas``, ``sigma_model``, ``prior_error``, ``period_split``,
        ``transport`` (the inversion operator's parameters), ``truth_model`` (name),
        ``seed``. The independent truth adds ``truth_flux_fine`` (on its own grid),
        ``truth_obs`` (noise-free L3 means), ``wind_file`` (the ERA5-like winds on
        pressure levels the run reads) and ``atmosphere`` (the truth model's settings).

    Notes
    -----
    The independent truth is a non-identical twin (DESIGN.md 7): 6-hourly monsoon winds
    with resolved synoptic eddies (:func:`~gosat_pipeline.testing.atmosphere.make_monsoon_winds`)
    over the domain plus ``margin``; a semi-Lagrangian boundary-layer model on its own finer
    grid with hourly steps, another diffusivity, a ventilation time that differs over land
    (the regions) and sea, a boundary-layer wind that is not the 1000-850 hPa mean the
    inversion reads, and unresolved eddies
    (:class:`~gosat_pipeline.testing.atmosphere.TruthAtmosphere`); emissions in the margin;
    a true flux pattern that differs from the prior's inside every region; soundings at
    about 13:00 local time on each cell's overpass days (GOSAT's three-day repeat), gridded
    into daily L3 bins (:func:`gosat_pipeline.gridding.grid_soundings`, ``time_bin="1D"``);
    a background with a curved latitude gradient and day-to-day synoptic variation
    (:func:`~gosat_pipeline.testing.atmosphere.background_field`); retrieval noise.
    """
    if truth not in TRUTH_MODELS:
        raise ConfigError(f"make_osse_case: truth={truth!r}; allowed: {list(TRUTH_MODELS)}")
    if truth == "independent" and not (margin >= 0 and truth_resolution > 0 and pattern_error >= 0):
        raise ConfigError(
            f"make_osse_case: margin >= 0, truth_resolution > 0 and pattern_error >= 0 are needed; got "
            f"{margin}, {truth_resolution}, {pattern_error}"
        )
    gas = gas.upper()
    rng = np.random.default_rng(seed)
    grid = grid or GridSpec.from_resolution(1.0, OSSE_BBOX)
    boxes = _box_regions(grid, regions)
    masks = _masks(grid, boxes)
    codes = [str(c) for c in masks["region"].values]
    if truth_scale is None:
        # balanced signs: as many regions above as below the prior (no common-mode bias)
        sign = rng.permutation(np.resize([1.0, -1.0], len(codes)))
        scales = dict(zip(codes, 1.0 + sign * rng.uniform(0.2, 0.7, size=len(codes)), strict=True))
    else:
        scales = {c: float(truth_scale.get(c, 1.0)) for c in codes}
    prior = _prior_flux(grid, masks, gas, rng)
    sr_default, sm_default, _ = _GAS_DEFAULTS[gas]
    sr = sr_default if sigma_retrieval is None else float(sigma_retrieval)
    common = {
        "gas": gas,
        "grid": grid,
        "masks": masks,
        "prior": prior,
        "scales": scales,
        "sr": sr,
        "start": start,
        "n_months": n_months,
        "obs_fraction": obs_fraction,
        "per_cell": soundings_per_cell,
        "sampling": sampling,
        "seed": seed,
    }
    if truth == "identical":
        sm = sm_default if sigma_model is None else float(sigma_model)
        case = _identical_case(common, rng, u, v, eddy_diffusivity, ventilation_time, sm)
    else:
        sm = DEFAULT_SIGMA_MODEL[gas] if sigma_model is None else float(sigma_model)
        case = _independent_case(
            common,
            boxes,
            margin=margin,
            resolution=truth_resolution,
            pattern_error=pattern_error,
            atmosphere=atmosphere or {},
            background=background or {},
            ventilation_time=ventilation_time,
        )
    case.update(
        {
            "prior_flux": prior,
            "masks": masks,
            "grid": grid,
            "gas": gas,
            "sigma_model": sm,
            "prior_error": prior_error,
            "period_split": period_split,
            "transport": {"u": u, "v": v, "eddy_diffusivity": eddy_diffusivity, "ventilation_time": ventilation_time},
            "truth_model": truth,
            "seed": seed,
        }
    )
    logger.info(
        "OSSE case (%s truth): %d regions, %d months, %d observed cell-bins",
        truth,
        len(codes),
        n_months,
        int((case["obs"]["n_soundings"].values > 0).sum()),
    )
    return case


def _region_da(values: np.ndarray, masks: xr.DataArray, name: str, units: str) -> xr.DataArray:
    return xr.DataArray(
        np.asarray(values, dtype="float64"),
        dims="region",
        coords={"region": masks["region"].values},
        name=name,
        attrs={"units": units},
    )


def _area_totals(flux: np.ndarray, fractions: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Region totals (Tg yr-1) by the ``area`` attribution rule: sum of f_r F A."""
    return np.einsum("rij,ij,ij->r", fractions, flux, area) * SECONDS_PER_YEAR / 1e9


def _identical_case(
    c: dict[str, Any],
    rng: np.random.Generator,
    u: float,
    v: float,
    eddy_diffusivity: float,
    ventilation_time: float,
    sm: float,
) -> dict[str, Any]:
    """The teaching twin: the truth made by the inversion's own steady operator (monthly bins)."""
    gas, grid, masks, prior, sr = c["gas"], c["grid"], c["masks"], c["prior"], c["sr"]
    units = gas_units(gas)
    codes = [str(x) for x in masks["region"].values]
    fr = masks.values
    svec = np.array([c["scales"][x] for x in codes])
    cell_scale = np.tensordot(svec, fr, axes=1) + np.clip(1.0 - fr.sum(0), 0.0, 1.0)
    truth_flux = prior * cell_scale
    truth_flux.attrs = {"units": "kg m-2 s-1", "long_name": f"true {gas} emission flux"}
    op = SimpleTransport(grid, u, v, eddy_diffusivity=eddy_diffusivity, ventilation_time=ventilation_time)
    enh = op.solve(truth_flux.values / MOLAR_MASS[gas]) / GAS_UNIT_TO_MOLMOL[gas]
    times = pd.date_range(c["start"], periods=c["n_months"], freq="MS")
    ends = times + pd.DateOffset(months=1)
    nt = times.size
    n = _sampling((nt, *grid.shape), fr.sum(0), c["obs_fraction"], c["per_cell"], c["sampling"], rng)
    bg = BACKGROUND_XGAS[gas] * (1.0 + 0.002 * np.arange(nt)) + rng.normal(0.0, 0.002 * BACKGROUND_XGAS[gas], nt)
    ak = rng.uniform(0.7, 1.0, size=n.shape)
    sigma = np.sqrt(sr**2 / np.maximum(n, 1) + sm**2)
    y = bg[:, None, None] + ak * enh[None] + sigma * rng.standard_normal(n.shape)
    empty = n == 0
    nanif = lambda a: np.where(empty, np.nan, a)  # noqa: E731
    dims = ("time", "latitude", "longitude")
    obs = xr.Dataset(
        {
            "n_soundings": (dims, n, cf_attrs("n_soundings")),
            "xgas_mean": (dims, nanif(y), cf_attrs("xgas_mean", gas)),
            "xgas_weighted_mean": (dims, nanif(y), cf_attrs("xgas_weighted_mean", gas)),
            "xgas_std": (dims, nanif(np.full(n.shape, sr)), cf_attrs("xgas_std", gas)),
            "xgas_standard_error": (dims, nanif(sr / np.sqrt(np.maximum(n, 1))), cf_attrs("xgas_standard_error", gas)),
            "xgas_uncertainty_mean": (dims, nanif(np.full(n.shape, sr)), cf_attrs("xgas_uncertainty_mean", gas)),
            "averaging_kernel_pbl": (dims, nanif(ak), cf_attrs("averaging_kernel_pbl")),
            "time_bounds": (("time", "nv"), np.column_stack([times.values, ends.values])),
        },
        coords={
            "time": ("time", times.values, {"long_name": "start of the time bin", "bounds": "time_bounds"}),
            **grid.coords(),
        },
        attrs={"gas": gas, "title": f"OSSE synthetic L3 {gas}", "synthetic": "true", "seed": c["seed"]},
    )
    winds = xr.Dataset(
        {
            "u": (("latitude", "longitude"), np.full(grid.shape, float(u)), {"units": "m s-1"}),
            "v": (("latitude", "longitude"), np.full(grid.shape, float(v)), {"units": "m s-1"}),
        },
        coords=grid.coords(),
    )
    totals = _area_totals(truth_flux.values, fr, grid.cell_area())
    return {
        "obs": obs,
        "truth_flux": truth_flux,
        "winds": winds,
        "truth_scale": _region_da(svec, masks, "truth_scale", "1"),
        "truth_totals": _region_da(totals, masks, "truth_total", "Tg yr-1"),
        "background": xr.DataArray(
            bg, dims="time", coords={"time": times.values}, name="background", attrs={"units": units}
        ),
    }


def _smooth_field(shape: tuple[int, int], cells: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field, zero mean and unit variance, correlated over about ``cells`` cells."""
    from scipy.ndimage import gaussian_filter

    z = gaussian_filter(rng.standard_normal(shape), cells, mode="wrap")
    return (z - z.mean()) / z.std()


def _truth_grid(grid: GridSpec, margin: float, resolution: float) -> GridSpec:
    w, s, e, n = grid.bbox
    return GridSpec.from_resolution(
        float(resolution),
        (max(w - margin, -180.0), max(s - margin, -90.0), min(e + margin, 180.0), min(n + margin, 90.0)),
    )


def _independent_flux(
    c: dict[str, Any], boxes: dict[str, Any], tgrid: GridSpec, pattern_error: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The true flux on the truth grid (kg m-2 s-1) and its land fraction (the regions).

    Inside region r: prior x k_r x eps (eps a correlated lognormal pattern error, k_r such
    that the region's total is its truth scale times the prior's); between the regions
    the prior; outside the inversion domain weak emissions like those between regions.
    """
    from gosat_pipeline.inventory import regrid_conservative

    grid, masks, prior = c["grid"], c["masks"], c["prior"]
    codes = [str(x) for x in masks["region"].values]
    fr_c = masks.values
    prior_tot = _area_totals(prior.values, fr_c, grid.cell_area())
    fr = _masks(tgrid, boxes).values
    area = tgrid.cell_area()
    pf = regrid_conservative(prior, tgrid).values
    cells = 1.5 / float(np.diff(tgrid.lat_edges)[0])
    eps = np.exp(pattern_error * _smooth_field(tgrid.shape, cells, rng) - 0.5 * pattern_error**2)
    between = np.clip(1.0 - fr.sum(0), 0.0, 1.0)
    flux = pf * between
    for r, code in enumerate(codes):
        fixed = float((fr[r] * pf * between * area).sum())
        scaled = float((fr[r] ** 2 * pf * eps * area).sum())
        target = c["scales"][code] * prior_tot[r] * 1e9 / SECONDS_PER_YEAR
        k = max(target - fixed, 0.0) / scaled if scaled > 0 else 0.0
        flux = flux + fr[r] * pf * eps * k
    w, s, e, n = grid.bbox
    outside = ~(
        (tgrid.lat[:, None] > s) & (tgrid.lat[:, None] < n) & (tgrid.lon[None, :] > w) & (tgrid.lon[None, :] < e)
    )
    dense = prior.values[fr_c.sum(0) > 0.5]
    level = 0.05 * float(dense.mean()) if dense.size else 0.0
    flux = flux + outside * level * np.exp(rng.normal(0.0, 0.7, tgrid.shape))
    return flux, fr.sum(0)


def _overpasses(c: dict[str, Any], rng: np.random.Generator) -> pd.DataFrame:
    """GOSAT-like soundings: each cell seen on its overpass days (every third day) near 13:00 local time."""
    grid, fr = c["grid"], c["masks"].values
    t0 = pd.Timestamp(c["start"])
    days = pd.date_range(t0, t0 + pd.DateOffset(months=c["n_months"]), freq="D", inclusive="left")
    phase = rng.integers(0, 3, grid.shape)
    land = np.clip(fr.sum(0), 0.0, 1.0)
    if c["sampling"] == "full":
        p = np.ones(grid.shape)
    elif c["sampling"] == "gosat":
        # clear enough to retrieve on an overpass: obs_fraction over land, a quarter of it over sea
        p = np.clip(c["obs_fraction"] * (0.25 + 0.75 * land), 0.0, 1.0)
    else:
        raise ConfigError(f"make_osse_case: sampling={c['sampling']!r}; allowed: 'gosat', 'full'")
    dlat, dlon = np.diff(grid.lat_edges), np.diff(grid.lon_edges)
    rows = []
    for d, day in enumerate(days):
        ii, jj = np.nonzero((phase == d % 3) & (rng.uniform(size=grid.shape) < p))
        n = (
            1 + rng.poisson(max(c["per_cell"] - 1.0, 0.0), ii.size)
            if c["sampling"] == "gosat"
            else np.full(ii.size, max(1, round(c["per_cell"])))
        )
        i, j = np.repeat(ii, n), np.repeat(jj, n)
        lat = grid.lat_edges[i] + dlat[i] * rng.uniform(0.02, 0.98, i.size)
        lon = grid.lon_edges[j] + dlon[j] * rng.uniform(0.02, 0.98, j.size)
        hours = 13.0 - lon / 15.0 + rng.normal(0.0, 0.3, i.size)
        rows.append(pd.DataFrame({"time": day + pd.to_timedelta(hours, unit="h"), "latitude": lat, "longitude": lon}))
    df = pd.concat(rows, ignore_index=True)
    # soundings whose UTC time falls outside the experiment (far-east cells at day boundaries) are dropped
    end = days[-1] + pd.Timedelta(days=1)
    return df[(df["time"] >= t0) & (df["time"] < end)].sort_values("time").reset_index(drop=True)


def _wind_files(
    c: dict[str, Any], tgrid: GridSpec, ventilation_time: float, rng: np.random.Generator
) -> tuple[xr.Dataset, xr.Dataset, float]:
    """The ERA5-like monsoon winds, and what the run reads from their file (open_winds, time-resolved)."""
    import tempfile
    from pathlib import Path

    from gosat_pipeline.testing.atmosphere import make_monsoon_winds
    from gosat_pipeline.winds import open_winds

    w, s, e, n = tgrid.bbox
    wgrid = GridSpec.from_resolution(
        2.5, (max(w - 2.5, -180.0), max(s - 2.5, -90.0), min(e + 2.5, 180.0), min(n + 2.5, 90.0))
    )
    t0 = pd.Timestamp(c["start"])
    t1 = t0 + pd.DateOffset(months=c["n_months"])
    spinup = 5.0 * ventilation_time
    first = min(t0 - pd.Timedelta(seconds=spinup), t0 - pd.Timedelta(days=10)) - pd.Timedelta(days=1)
    era5 = make_monsoon_winds(wgrid, first.floor("D"), t1 + pd.Timedelta(days=1), seed=int(rng.integers(0, 2**31)))
    with tempfile.TemporaryDirectory(prefix="gosat_osse_") as tmp:
        path = Path(tmp) / "winds_era5.nc"
        era5.to_netcdf(path)
        winds = open_winds(
            path, grid=c["grid"], time_range=(str(t0 - pd.Timedelta(seconds=spinup)), str(t1)), time_resolved=True
        )
    winds.attrs["wind_source"] = "synthetic ERA5-like monsoon winds (gosat_pipeline.testing.atmosphere)"
    return era5, winds, spinup


def _grid_values(c: dict[str, Any], snd: pd.DataFrame, values: np.ndarray, ak: np.ndarray | None) -> xr.Dataset:
    """Daily L3 bins of per-sounding values through the gridding stage."""
    from gosat_pipeline.gridding import grid_soundings

    t0 = pd.Timestamp(c["start"])
    ds = xr.Dataset(
        {
            "xgas": ("sounding", values, {"units": gas_units(c["gas"])}),
            "xgas_uncertainty": ("sounding", np.full(values.size, c["sr"]), {"units": gas_units(c["gas"])}),
            "time": ("sounding", snd["time"].values.astype("datetime64[ns]")),
            "latitude": ("sounding", snd["latitude"].values),
            "longitude": ("sounding", snd["longitude"].values),
        },
        attrs={"gas": c["gas"], "product": "OSSE synthetic soundings"},
    )
    if ak is not None:
        ds["averaging_kernel"] = (("sounding", "level"), ak[:, None])
        ds["pressure_weight"] = (("sounding", "level"), np.ones((ak.size, 1)))
    return grid_soundings(ds, grid=c["grid"], time_bin="1D", time_range=(t0, t0 + pd.DateOffset(months=c["n_months"])))


def _independent_case(
    c: dict[str, Any],
    boxes: dict[str, Any],
    *,
    margin: float,
    resolution: float,
    pattern_error: float,
    atmosphere: Mapping[str, Any],
    background: Mapping[str, Any],
    ventilation_time: float,
) -> dict[str, Any]:
    """A non-identical twin: the truth from an atmosphere that is not the inversion's operator."""
    from gosat_pipeline.inventory import regrid_conservative
    from gosat_pipeline.testing.atmosphere import TruthAtmosphere, background_field

    gas, grid, masks, prior = c["gas"], c["grid"], c["masks"], c["prior"]
    r_flux, r_winds, r_sample, r_atm, r_noise, r_bg = (
        np.random.default_rng(s) for s in np.random.SeedSequence([c["seed"], 15]).spawn(6)
    )
    tgrid = _truth_grid(grid, float(margin), float(resolution))
    flux_fine, land = _independent_flux(c, boxes, tgrid, float(pattern_error), r_flux)
    era5, winds, _spinup = _wind_files(c, tgrid, ventilation_time, r_winds)
    snd = _overpasses(c, r_sample)
    t0 = pd.Timestamp(c["start"])
    t1 = t0 + pd.DateOffset(months=c["n_months"])
    atm = TruthAtmosphere(tgrid, era5, land=land, seed=int(r_atm.integers(0, 2**31)), **dict(atmosphere))
    enh = atm.run(flux_fine, gas, t0, t1, snd["time"].values, snd["latitude"].values, snd["longitude"].values)
    ak = r_noise.uniform(0.7, 1.0, len(snd))
    bg = background_field(
        gas,
        snd["latitude"].values,
        snd["longitude"].values,
        snd["time"].values,
        seed=int(r_bg.integers(0, 2**31)),
        **dict(background),
    )
    clean = bg + ak * enh
    noisy = clean + c["sr"] * r_noise.standard_normal(len(snd))
    obs = _grid_values(c, snd, noisy, ak)
    obs.attrs.update(
        title=f"OSSE synthetic L3 {gas} (independent truth)",
        synthetic="true",
        seed=c["seed"],
        truth_model="independent",
    )
    fr_fine = _masks(tgrid, boxes).values
    totals = _area_totals(flux_fine, fr_fine, tgrid.cell_area())
    prior_tot = _area_totals(prior.values, masks.values, grid.cell_area())
    w, s, e, n = grid.bbox
    inside = (tgrid.lat[:, None] > s) & (tgrid.lat[:, None] < n) & (tgrid.lon[None, :] > w) & (tgrid.lon[None, :] < e)
    rest_true = _area_totals(flux_fine, (inside * np.clip(1.0 - fr_fine.sum(0), 0.0, 1.0))[None], tgrid.cell_area())
    rest_prior = _area_totals(prior.values, np.clip(1.0 - masks.values.sum(0), 0.0, 1.0)[None], grid.cell_area())
    fine = xr.DataArray(
        flux_fine,
        dims=("latitude", "longitude"),
        coords=tgrid.coords(),
        name="truth_flux",
        attrs={"units": "kg m-2 s-1", "long_name": f"true {gas} emission flux (truth grid)"},
    )
    truth_flux = regrid_conservative(fine, grid).rename("truth_flux")
    truth_flux.attrs = {"units": "kg m-2 s-1", "long_name": f"true {gas} emission flux"}
    bg_l3 = _grid_values(c, snd, bg, None)["xgas_mean"].rename("background")
    bg_l3.attrs = {"units": gas_units(gas), "long_name": "true background column of the soundings, cell-day mean"}
    settings = {
        "truth_grid_resolution_deg": float(resolution),
        "margin_deg": float(margin),
        "pattern_error": float(pattern_error),
        **{
            k: getattr(atm, k)
            for k in (
                "eddy_diffusivity",
                "ventilation_land",
                "ventilation_ocean",
                "wind_speedup",
                "wind_veer_deg",
                "unresolved_rms",
                "dt",
            )
        },
        **{f"background_{k}": v for k, v in dict(background).items()},
    }
    return {
        "obs": obs,
        "truth_flux": truth_flux,
        "truth_flux_fine": fine,
        "truth_obs": _grid_values(c, snd, clean, ak)["xgas_mean"].rename("truth_obs"),
        "winds": winds,
        "wind_file": era5,
        "truth_scale": _region_da(totals / np.where(prior_tot > 0, prior_tot, np.nan), masks, "truth_scale", "1"),
        "truth_totals": _region_da(totals, masks, "truth_total", "Tg yr-1"),
        "truth_rest_scale": float(rest_true[0] / rest_prior[0]) if rest_prior[0] > 0 else math.nan,
        "background": bg_l3,
        "atmosphere": settings,
    }


def _truth_per_element(case: dict[str, Any], post: xr.Dataset) -> np.ndarray:
    """The true value of every state element.

    Region scale factors (the rest of the domain: 1 for the identical twin, its true over
    prior total for the independent truth); for the identical twin also the background
    offset of the month and zero gradients and inflow (its background is uniform and its
    transport has no inflow). The independent truth's background is not a plane and its
    inflow not a state element, so their truth is NaN (not scored).
    """
    truth = dict(zip(case["truth_scale"]["region"].values.astype(str), case["truth_scale"].values, strict=True))
    truth[REST_REGION] = float(case.get("truth_rest_scale", 1.0))
    independent = case.get("truth_model", "identical") == "independent"
    bg = case["background"]
    bg_by_label = (
        {}
        if independent
        else {f"{pd.Timestamp(t):%Y-%m}": float(v) for t, v in zip(bg["time"].values, bg.values, strict=True)}
    )
    sv = StateVector.from_coords(post)
    out = []
    for kind, reg, sec, per in zip(sv.kind, sv.region, sv.sector, sv.period, strict=True):
        if kind == "emission":
            out.append(truth.get(str(reg), np.nan))
        elif independent:
            out.append(np.nan)
        elif kind == "background" and sec == "offset":
            out.append(bg_by_label.get(str(per), np.nan))
        else:
            out.append(0.0)
    return np.array(out) - sv.background_reference  # background truth as an offset from the Jacobian's reference


def osse_inversion_inputs(case: dict[str, Any]) -> dict[str, Any]:
    """What an inversion of an OSSE case needs: the same for :func:`run_osse` and an ensemble.

    Parameters
    ----------
    case : dict
        From :func:`make_osse_case`.

    Returns
    -------
    dict
        ``obs`` (L3), ``emissions`` (the prior attributed to the regions by area,
        with a rest-of-domain element: :func:`gosat_pipeline.attribution.attribute_emissions`),
        ``winds``, ``settings`` (:class:`gosat_pipeline.transport.TransportSettings`:
        the steady operator for the identical twin, the time-resolved one for the
        independent truth, with the pipeline's default spin-up of 5 ventilation times),
        ``sigma_model``, ``prior_error`` and ``jacobian_kwargs`` (``period_split``), in
        the form :func:`gosat_pipeline.ensemble.invert_ensemble` takes them.
    """
    from gosat_pipeline.attribution import attribute_emissions

    tp = case["transport"]
    if case.get("truth_model", "identical") == "independent":
        settings = TransportSettings(
            mode="time_resolved",
            eddy_diffusivity=tp["eddy_diffusivity"],
            ventilation_time=tp["ventilation_time"],
            spinup=5.0 * float(tp["ventilation_time"]),
        )
    else:
        settings = TransportSettings(eddy_diffusivity=tp["eddy_diffusivity"], ventilation_time=tp["ventilation_time"])
    return {
        "obs": case["obs"],
        "emissions": attribute_emissions(case["prior_flux"], case["masks"], rule="area"),
        "winds": case["winds"],
        "settings": settings,
        "sigma_model": case["sigma_model"],
        "prior_error": case.get("prior_error", InversionSettings.prior_error),
        "jacobian_kwargs": {"period_split": case.get("period_split")},
    }


def _element_table(post: xr.Dataset, truth: np.ndarray, constrained_threshold: float) -> pd.DataFrame:
    xp = post["x_posterior"].values
    sp_ = post["x_posterior_sigma"].values
    sa = post["x_prior_sigma"].values
    aii = np.diag(post["averaging_kernel"].values)
    er = np.where(sa > 0, 1.0 - sp_ / sa, 0.0)
    scored = np.isfinite(truth)
    constrained = ((er >= constrained_threshold) | (aii >= constrained_threshold)) & scored
    within = scored & (np.abs(xp - truth) <= 2.0 * sp_)
    sv = StateVector.from_coords(post)
    return pd.DataFrame(
        {
            "element": sv.labels(),
            "kind": sv.kind,
            "region": sv.region,
            "period": sv.period,
            "truth": truth,
            "prior": post["x_prior"].values,
            "posterior": xp,
            "posterior_sigma": sp_,
            "prior_sigma": sa,
            "error_reduction": er,
            "averaging_kernel": aii,
            "constrained": constrained,
            "within_2sigma": within,
        }
    )


def _region_rows(
    case: dict[str, Any], posts: list[xr.Dataset], transport_error: float, constrained_threshold: float
) -> list[dict[str, Any]]:
    """Per (region, period): truth, prior, estimate with analytic and combined sigma, coverage."""
    from gosat_pipeline.compare import domain_budget

    post = posts[0]
    budget = domain_budget(post, ensemble=posts if len(posts) > 1 else None, transport_error=transport_error)
    combined = {(str(r.region), str(r.period)): r for r in budget.itertuples()}
    winds = case["winds"]
    mean = lambda da: da.mean("time") if "time" in da.dims else da  # noqa: E731
    mb = mass_balance(case["obs"], case["masks"], u=mean(winds["u"]), v=mean(winds["v"]), gas=case["gas"])
    truth = dict(zip(case["truth_totals"]["region"].values.astype(str), case["truth_totals"].values, strict=True))
    keys = list(zip(post["total_region"].values.astype(str), post["total_period"].values.astype(str), strict=True))
    rows = []
    for t, key in enumerate(keys):
        if key[0] not in truth:  # the rest of the domain
            continue
        per_member = [_member_total(p, key) for p in posts]
        est = np.array([m[0] for m in per_member])
        analytic = math.sqrt(float(np.mean([m[1] ** 2 for m in per_member])))
        b = combined[key]
        true_tg = float(truth[key[0]])
        er = float(post["total_error_reduction"].values[t])
        sig = float(b.posterior_sigma)
        rows.append(
            {
                "region": key[0],
                "period": key[1],
                "truth": true_tg,
                "prior": float(post["total_prior"].values[t]),
                "posterior": float(b.posterior_total),
                "posterior_sigma": sig,
                "analytic_sigma": analytic,
                "ensemble_spread": float(est.std(ddof=1)) if est.size > 1 else 0.0,
                "structural_sigma": transport_error * abs(float(b.posterior_total)),
                "error_reduction": er,
                "constrained": bool(er >= constrained_threshold),
                "within_2sigma": bool(abs(float(b.posterior_total) - true_tg) <= 2.0 * sig),
                "within_2sigma_analytic": bool(abs(float(est.mean()) - true_tg) <= 2.0 * analytic),
                "mass_balance": float(mb.sel(region=key[0])),
            }
        )
    return rows


def _member_total(post: xr.Dataset, key: tuple[str, str]) -> tuple[float, float]:
    """A member's analytic total and sigma (Tg yr-1) of one (region, period)."""
    sel = (post["total_region"].values.astype(str) == key[0]) & (post["total_period"].values.astype(str) == key[1])
    t = int(np.flatnonzero(sel)[0])
    return float(post["total_posterior"].values[t]), float(post["total_posterior_sigma"].values[t])


def run_osse(
    case: dict[str, Any],
    *,
    ensemble: Sequence[xr.Dataset] | None = None,
    transport_error: float | None = None,
    constrained_threshold: float = 0.5,
    **invert_kwargs: Any,
) -> dict[str, Any]:
    """Invert an OSSE case and score the recovery of the truth.

    Parameters
    ----------
    case : dict
        From :func:`make_osse_case`.
    ensemble : sequence of xarray.Dataset, optional
        Posteriors of perturbed inversions of the same case (the members beyond the
        configured one, e.g. from :func:`gosat_pipeline.ensemble.invert_ensemble` on
        :func:`osse_inversion_inputs`); the region totals then carry the ensemble mean and
        the combined uncertainty of :func:`gosat_pipeline.compare.domain_budget`.
    transport_error : float, optional
        Relative structural transport error :math:`f_T` added to the region totals'
        uncertainty. Default: 0 for the identical twin (its operator is exact), the
        comparison stage's default (``compare.transport_error``, 25 %) for the independent
        truth.
    constrained_threshold : float
        An element (a region total) is constrained when its analytic error reduction
        1 - sigma_post/sigma_prior (or, for elements, the averaging-kernel diagonal)
        reaches this value.
    **invert_kwargs
        Passed to :func:`gosat_pipeline.inversion.invert` (default ``prior_error`` from
        the case).

    Returns
    -------
    dict
        ``dofs``, ``chi2_obs``, ``chi2_state``, ``status``, ``n_observations``,
        ``n_elements``, ``n_constrained``, ``n_constrained_within_2sigma``,
        ``fraction_within_2sigma`` (of the constrained elements whose truth is defined),
        ``truth_model``, ``members`` (inversions, 1 without an ensemble),
        ``transport_error``, ``constrained_threshold``, ``truth_settings`` (the independent
        truth's atmosphere, else None), ``regions_total`` (one dict per region and period: truth,
        prior, posterior (ensemble mean) with ``posterior_sigma`` (combined: analytic,
        ensemble spread and structural), ``analytic_sigma``, ``ensemble_spread``,
        ``structural_sigma``, ``error_reduction`` (analytic), ``constrained``,
        ``within_2sigma`` (combined), ``within_2sigma_analytic``, ``mass_balance``; Tg
        yr-1), ``n_regions_constrained``, ``n_regions_within_2sigma``,
        ``region_coverage`` and ``region_coverage_analytic`` (fractions of the
        constrained region totals whose truth is within 2 sigma), and ``table``
        (pandas.DataFrame, one row per state element).

    Notes
    -----
    The combined uncertainty of a region total is the law of total variance over the M
    inversions plus the structural term (:mod:`gosat_pipeline.compare`):
    :math:`\\sigma^2 = \\overline{\\sigma_m^2} + s^2_{E_m} + (f_T \\bar E)^2`.
    """
    inp = osse_inversion_inputs(case)
    jac = build_jacobian(
        inp["obs"],
        inp["emissions"],
        winds=inp["winds"],
        settings=inp["settings"],
        sigma_model=inp["sigma_model"],
        **inp["jacobian_kwargs"],
    )
    post = invert(jac, **{"prior_error": inp["prior_error"], **invert_kwargs})
    truth = _truth_per_element(case, post)
    table = _element_table(post, truth, constrained_threshold)
    constrained, within = table["constrained"].values, table["within_2sigma"].values
    scored = np.isfinite(truth)
    nc = int(constrained.sum())
    independent = case.get("truth_model", "identical") == "independent"
    f_t = (_default_transport_error() if independent else 0.0) if transport_error is None else float(transport_error)
    posts = [post, *(ensemble or [])]
    totals = _region_rows(case, posts, f_t, constrained_threshold)
    rc = [t for t in totals if t["constrained"]]
    n_in = sum(t["within_2sigma"] for t in rc)
    summary = {
        "seed": case.get("seed"),
        "gas": case["gas"],
        "truth_model": case.get("truth_model", "identical"),
        "dofs": float(post["dofs"]),
        "chi2_obs": float(post["chi2_obs"]),
        "chi2_state": float(post["chi2_state"]),
        "status": int(post["status"]),
        "n_observations": int(post["n_observations"]),
        "n_elements": int(len(table)),
        "n_constrained": nc,
        "n_constrained_within_2sigma": int((constrained & within).sum()),
        "fraction_within_2sigma": float((constrained & within).sum() / nc) if nc else math.nan,
        "fraction_all_within_2sigma": float(within[scored].mean()) if scored.any() else math.nan,
        "mode": post.attrs.get("mode"),
        "transport_operator": jac.attrs.get("transport_operator"),
        "members": len(posts),
        "transport_error": f_t,
        "constrained_threshold": float(constrained_threshold),
        "truth_settings": case.get("atmosphere"),
        "regions_total": totals,
        "n_regions_constrained": len(rc),
        "n_regions_within_2sigma": int(n_in),
        "region_coverage": n_in / len(rc) if rc else math.nan,
        "region_coverage_analytic": sum(t["within_2sigma_analytic"] for t in rc) / len(rc) if rc else math.nan,
        "table": table,
    }
    logger.info(
        "OSSE: DOFS %.2f, %d/%d constrained elements within 2 sigma; %d/%d constrained regions within "
        "2 combined sigma (%d inversions, transport error %.0f %%)",
        summary["dofs"],
        summary["n_constrained_within_2sigma"],
        nc,
        n_in,
        len(rc),
        len(posts),
        100 * f_t,
    )
    return summary


def _default_transport_error() -> float:
    """The comparison stage's default structural transport error."""
    from gosat_pipeline.compare import Thresholds

    return float(Thresholds().transport_error)
