"""Observing-system simulation experiments (OSSE) for the transport + inversion stages.

:func:`make_osse_case` builds a known truth (box regions whose emissions are scaled
away from the prior), GOSAT-like sparse sampling of the grid cells per time bin, the
forward model (:class:`~gosat_pipeline.transport.SimpleTransport` + column averaging
kernel + a background per time bin) and seeded noise, returned as the same objects the
pipeline passes between stages (L3 dataset, prior flux, region masks, winds).
:func:`run_osse` runs the Jacobian and the inversion on it and reports which elements
the data constrain and whether their truth lies within 2 posterior sigma (DESIGN.md 7).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inversion import invert, mass_balance
from gosat_pipeline.schema import GAS_UNIT_TO_MOLMOL, MOLAR_MASS, cf_attrs, gas_units
from gosat_pipeline.statevector import REST_REGION, StateVector
from gosat_pipeline.testing.soundings import BACKGROUND_XGAS
from gosat_pipeline.transport import (
    DEFAULT_EDDY_DIFFUSIVITY,
    DEFAULT_VENTILATION_TIME,
    SECONDS_PER_YEAR,
    SimpleTransport,
    build_jacobian,
)

__all__ = ["OSSE_BBOX", "make_osse_case", "run_osse"]

logger = logging.getLogger(__name__)

#: Default OSSE domain (west, south, east, north): a 30 x 30 degree box.
OSSE_BBOX: tuple[float, float, float, float] = (100.0, 5.0, 130.0, 35.0)

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
        np.array(fr), dims=("region", "latitude", "longitude"),
        coords={"region": np.array(codes, dtype=str),
                "region_name": ("region", np.array([f"Synthetic region {c[1:]}" for c in codes], dtype=str)),
                **grid.coords()},
        name="region_fraction", attrs={"units": "1", "long_name": "fraction of the cell area in the region"},
    )  # fmt: skip


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
    return xr.DataArray(flux, dims=("latitude", "longitude"), coords=grid.coords(), name="flux",
                        attrs={"units": "kg m-2 s-1", "long_name": f"prior {gas} emission flux"})  # fmt: skip


def _sampling(shape: tuple[int, int, int], land: np.ndarray, fraction: float, per_cell: float,
              sampling: str, rng: np.random.Generator) -> np.ndarray:  # fmt: skip
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
    prior_error: float = 0.5,
    period_split: str | None = None,
) -> dict[str, Any]:
    """Build a seeded OSSE case.

    Parameters
    ----------
    seed : int
        Seed of every random draw.
    gas : {"CH4", "CO2"}
    grid : GridSpec, optional
        Default: 1 degree over :data:`OSSE_BBOX` (30 x 30 cells).
    regions : int or dict
        Number of box regions laid out on a k x k pattern, or {code: (w, s, e, n)}.
    truth_scale : dict, optional
        True scale factor per region; default drawn away from the prior:
        :math:`1 \\pm U(0.2, 0.7)`, half of the regions above and half below the prior.
    n_months : int
        Monthly time bins.
    obs_fraction : float
        Probability that a land (region) cell is observed in a month (a quarter of it over
        the sea between regions).
    soundings_per_cell : float
        Mean soundings in an observed cell-month (1 + Poisson).
    sigma_retrieval, sigma_model : float, optional
        Single-sounding retrieval error and model error (gas units); defaults per gas.
    sampling : {"gosat", "full"}
    u, v, eddy_diffusivity, ventilation_time
        Forward-model parameters (m s-1, m2 s-1, s).
    prior_error : float
        Relative prior error the case is meant to be inverted with.
    period_split : str, optional
        Emission periods for the inversion (the truth is constant in time).

    Returns
    -------
    dict
        ``obs`` (L3 dataset), ``prior_flux``, ``truth_flux`` (kg m-2 s-1), ``masks``,
        ``winds`` (Dataset u, v), ``truth_scale`` (DataArray region), ``background``
        (DataArray time, gas units), ``grid``, ``gas``, ``sigma_model``, ``prior_error``,
        ``period_split``, ``transport`` (dict of parameters), ``seed``.
    """
    gas = gas.upper()
    units = gas_units(gas)
    rng = np.random.default_rng(seed)
    grid = grid or GridSpec.from_resolution(1.0, OSSE_BBOX)
    boxes = _box_regions(grid, regions)
    masks = _masks(grid, boxes)
    codes = [str(c) for c in masks["region"].values]
    if truth_scale is None:
        # balanced signs: as many regions above as below the prior (no common-mode bias)
        sign = rng.permutation(np.resize([1.0, -1.0], len(codes)))
        truth = dict(zip(codes, 1.0 + sign * rng.uniform(0.2, 0.7, size=len(codes)), strict=True))
    else:
        truth = {c: float(truth_scale.get(c, 1.0)) for c in codes}
    prior = _prior_flux(grid, masks, gas, rng)
    fr = masks.values
    svec = np.array([truth[c] for c in codes])
    cell_scale = np.tensordot(svec, fr, axes=1) + np.clip(1.0 - fr.sum(0), 0.0, 1.0)
    truth_flux = prior * cell_scale
    truth_flux.attrs = {"units": "kg m-2 s-1", "long_name": f"true {gas} emission flux"}
    op = SimpleTransport(grid, u, v, eddy_diffusivity=eddy_diffusivity, ventilation_time=ventilation_time)
    enh = op.solve(truth_flux.values / MOLAR_MASS[gas]) / GAS_UNIT_TO_MOLMOL[gas]
    sr_default, sm_default, _ = _GAS_DEFAULTS[gas]
    sr = sr_default if sigma_retrieval is None else float(sigma_retrieval)
    sm = sm_default if sigma_model is None else float(sigma_model)
    times = pd.date_range(start, periods=n_months, freq="MS")
    ends = times + pd.DateOffset(months=1)
    nt = times.size
    n = _sampling((nt, *grid.shape), fr.sum(0), obs_fraction, soundings_per_cell, sampling, rng)
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
        coords={"time": ("time", times.values, {"long_name": "start of the time bin", "bounds": "time_bounds"}),
                **grid.coords()},
        attrs={"gas": gas, "title": f"OSSE synthetic L3 {gas}", "synthetic": "true", "seed": seed},
    )  # fmt: skip
    winds = xr.Dataset(
        {"u": (("latitude", "longitude"), np.full(grid.shape, float(u)), {"units": "m s-1"}),
         "v": (("latitude", "longitude"), np.full(grid.shape, float(v)), {"units": "m s-1"})},
        coords=grid.coords(),
    )  # fmt: skip
    logger.info("OSSE case: %d regions, %d months, %d observed cell-months", len(codes), nt, int((n > 0).sum()))
    return {
        "obs": obs,
        "prior_flux": prior,
        "truth_flux": truth_flux,
        "masks": masks,
        "winds": winds,
        "truth_scale": xr.DataArray(svec, dims="region", coords={"region": masks["region"].values},
                                    name="truth_scale", attrs={"units": "1"}),  # fmt: skip
        "background": xr.DataArray(bg, dims="time", coords={"time": times.values}, name="background",
                                   attrs={"units": units}),  # fmt: skip
        "grid": grid,
        "gas": gas,
        "sigma_model": sm,
        "prior_error": prior_error,
        "period_split": period_split,
        "transport": {"u": u, "v": v, "eddy_diffusivity": eddy_diffusivity, "ventilation_time": ventilation_time},
        "seed": seed,
    }


def _truth_per_element(case: dict[str, Any], post: xr.Dataset) -> np.ndarray:
    """The true value of every state element: region scale factors (1 for the rest of the
    domain), the background offset of the month, zero gradients and zero inflow (the OSSE's
    background is uniform and its transport has no inflow)."""
    truth = dict(zip(case["truth_scale"]["region"].values.astype(str), case["truth_scale"].values, strict=True))
    bg = case["background"]
    bg_by_label = {f"{pd.Timestamp(t):%Y-%m}": float(v) for t, v in zip(bg["time"].values, bg.values, strict=True)}
    sv = StateVector.from_coords(post)
    out = []
    for kind, reg, sec, per in zip(sv.kind, sv.region, sv.sector, sv.period, strict=True):
        if kind == "emission":
            out.append(truth.get(str(reg), 1.0 if reg == REST_REGION else np.nan))
        elif kind == "background" and sec == "offset":
            out.append(bg_by_label.get(str(per), np.nan))
        else:
            out.append(0.0)
    return np.array(out) - sv.background_reference  # background truth as an offset from the Jacobian's reference


def run_osse(case: dict[str, Any], *, constrained_threshold: float = 0.5, **invert_kwargs: Any) -> dict[str, Any]:
    """Invert an OSSE case and score the recovery of the truth.

    Parameters
    ----------
    case : dict
        From :func:`make_osse_case`.
    constrained_threshold : float
        An element is constrained when its error reduction 1 - sigma_post/sigma_prior or
        its averaging-kernel diagonal reaches this value.
    **invert_kwargs
        Passed to :func:`gosat_pipeline.inversion.invert` (default ``prior_error`` from
        the case).

    Returns
    -------
    dict
        ``dofs``, ``chi2_obs``, ``chi2_state``, ``status``, ``n_observations``,
        ``n_elements``, ``n_constrained``, ``n_constrained_within_2sigma``,
        ``fraction_within_2sigma`` (of constrained elements), ``regions_total`` (list of
        per-region dicts: truth, prior and posterior totals in Tg yr-1, mass balance),
        ``table`` (pandas.DataFrame, one row per state element).
    """
    tp = case["transport"]
    jac = build_jacobian(
        case["obs"], case["prior_flux"], case["masks"], winds=case["winds"],
        eddy_diffusivity=tp["eddy_diffusivity"], ventilation_time=tp["ventilation_time"],
        sigma_model=case["sigma_model"], period_split=case.get("period_split"),
    )  # fmt: skip
    kw = {"prior_error": case.get("prior_error", 0.5), **invert_kwargs}
    post = invert(jac, **kw)
    truth = _truth_per_element(case, post)
    xp = post["x_posterior"].values
    sp_ = post["x_posterior_sigma"].values
    sa = post["x_prior_sigma"].values
    aii = np.diag(post["averaging_kernel"].values)
    er = np.where(sa > 0, 1.0 - sp_ / sa, 0.0)
    constrained = (er >= constrained_threshold) | (aii >= constrained_threshold)
    within = np.abs(xp - truth) <= 2.0 * sp_
    kind = post["state_kind"].values.astype(str)
    label = [f"{r} {p}" if k == "emission" else f"{k} {s} {p}"
             for k, r, s, p in zip(kind, post["state_region"].values.astype(str), post["state_sector"].values.astype(str),
                                   post["state_period"].values.astype(str), strict=True)]  # fmt: skip
    table = pd.DataFrame({
        "element": label, "kind": kind, "region": post["state_region"].values.astype(str),
        "period": post["state_period"].values.astype(str), "truth": truth, "prior": post["x_prior"].values,
        "posterior": xp, "posterior_sigma": sp_, "prior_sigma": sa, "error_reduction": er,
        "averaging_kernel": aii, "constrained": constrained, "within_2sigma": within,
    })  # fmt: skip
    nc = int(constrained.sum())
    mb = mass_balance(case["obs"], case["masks"], u=case["winds"]["u"], v=case["winds"]["v"], gas=case["gas"])
    area = case["grid"].cell_area()
    totals = []
    codes = [str(r) for r in case["masks"]["region"].values]
    for t in range(post.sizes["total"]):
        reg = str(post["total_region"].values[t])
        if reg not in codes:  # the rest of the domain
            continue
        mask = case["masks"].sel(region=reg).values
        true_tg = float((case["truth_flux"].values * mask * area).sum() * SECONDS_PER_YEAR / 1e9)
        totals.append({
            "region": reg, "period": str(post["total_period"].values[t]), "truth": true_tg,
            "prior": float(post["total_prior"].values[t]), "posterior": float(post["total_posterior"].values[t]),
            "posterior_sigma": float(post["total_posterior_sigma"].values[t]),
            "error_reduction": float(post["total_error_reduction"].values[t]),
            "mass_balance": float(mb.sel(region=reg)),
        })  # fmt: skip
    summary = {
        "seed": case.get("seed"),
        "gas": case["gas"],
        "dofs": float(post["dofs"]),
        "chi2_obs": float(post["chi2_obs"]),
        "chi2_state": float(post["chi2_state"]),
        "status": int(post["status"]),
        "n_observations": int(post["n_observations"]),
        "n_elements": int(kind.size),
        "n_constrained": nc,
        "n_constrained_within_2sigma": int((constrained & within).sum()),
        "fraction_within_2sigma": float((constrained & within).sum() / nc) if nc else math.nan,
        "fraction_all_within_2sigma": float(within.mean()),
        "mode": post.attrs.get("mode"),
        "regions_total": totals,
        "table": table,
    }
    logger.info("OSSE: DOFS %.2f, %d/%d constrained elements within 2 sigma", summary["dofs"],
                summary["n_constrained_within_2sigma"], nc)  # fmt: skip
    return summary
