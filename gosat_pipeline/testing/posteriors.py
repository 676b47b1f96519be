"""Synthetic posteriors and run directories for the comparison and report stages.

:func:`make_posterior` builds a small but exact Bayesian posterior (Rodgers 2000,
eqs. 4.25-4.29) from a hand-made Jacobian: every region gets its own observations
whose signal strength per unit scale factor is set by ``constraint`` (0 = the data
do not see the region), plus a little cross-talk to the next region so that the
posterior errors of neighbours are correlated, as in a real inversion. Prior errors
may be correlated across periods and across regions. The result follows the posterior
schema of the inversion stage exactly (state coords, matrices, scalars and the
regional totals on ``total`` from :func:`gosat_pipeline.inversion.region_totals`).

:func:`write_run_dir` writes a complete synthetic run directory (``posterior.nc``,
``emissions.nc``, ``gridded.nc``, or with ``gases=("CH4", "CO2")`` the pipeline's
per-gas ``posterior_<GAS>.nc``, ``emissions_<GAS>.nc``, ``gridded_<GAS>.nc``; plus
``boundaries.geojson``, ``manifest.json``, ``config.resolved.yaml``,
``discrepancies.*``) for report tests and demos.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.compare import compare_to_inventory, period_change, write_discrepancies
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inversion import region_totals
from gosat_pipeline.outputs import atomic_write_netcdf, atomic_write_text
from gosat_pipeline.params import InversionSettings
from gosat_pipeline.schema import (
    GAS_STANDARD_NAMES,
    INVERSION_STATUS,
    SECONDS_PER_YEAR,
    cf_attrs,
    cf_encoding,
    gas_units,
    global_attrs,
    status_attrs,
)
from gosat_pipeline.statevector import StateVector

__all__ = [
    "DEFAULT_REGIONS",
    "make_posterior",
    "make_reported",
    "make_flux_maps",
    "make_gridded_l3",
    "boundaries_geojson",
    "write_netcdf",
    "write_run_dir",
]

#: code -> (name, prior total Tg yr-1, box (west, south, east, north)), Southeast Asia-like.
DEFAULT_REGIONS: dict[str, tuple[str, float, tuple[float, float, float, float]]] = {
    "IDN": ("Indonesia", 8.0, (105.0, -8.0, 118.0, 0.0)),
    "MYS": ("Malaysia", 2.0, (100.0, 1.0, 110.0, 7.0)),
    "THA": ("Thailand", 4.0, (98.0, 8.0, 105.0, 18.0)),
    "VNM": ("Viet Nam", 3.0, (106.0, 9.0, 110.0, 19.0)),
}

_BBOX = (95.0, -10.0, 125.0, 20.0)


def _regions(regions: Sequence[str] | Mapping[str, Any] | None) -> dict[str, tuple[str, float, tuple]]:
    if regions is None:
        return dict(DEFAULT_REGIONS)
    out = {}
    for i, code in enumerate(regions):
        spec = regions[code] if isinstance(regions, Mapping) else DEFAULT_REGIONS.get(code)
        if spec is None:
            spec = (code, 2.0 + i, (96.0 + 6 * (i % 4), -8.0 + 7 * (i // 4), 101.0 + 6 * (i % 4), -2.0 + 7 * (i // 4)))
        out[str(code)] = tuple(spec)
    return out  # type: ignore[return-value]


def _per_region(value: float | Mapping[str, float], code: str, default: float) -> float:
    if isinstance(value, Mapping):
        return float(value.get(code, default))
    return float(value)


def _prior_covariance(
    sv: StateVector, prior_error: float, period_corr: float, region_corr: float, bg_sigma: float
) -> np.ndarray:
    n = len(sv)
    Sa = np.zeros((n, n))
    meta = list(zip(sv.kind, sv.region, sv.sector, sv.period, strict=True))
    for i, (ki, ri, si, pi) in enumerate(meta):
        for j, (kj, rj, sj, pj) in enumerate(meta):
            if ki != kj:
                continue
            if ki == "background":
                Sa[i, j] = bg_sigma**2 if i == j else 0.0
                continue
            if si != sj:
                continue
            c = 1.0 if (ri == rj and pi == pj) else period_corr if ri == rj else region_corr if pi == pj else 0.0
            Sa[i, j] = c * prior_error**2
    return Sa


def make_posterior(
    regions: Sequence[str] | Mapping[str, tuple[str, float, tuple[float, float, float, float]]] | None = None,
    *,
    gas: str = "CH4",
    periods: Sequence[str] = ("2019",),
    sectors: Sequence[str] = ("total",),
    truth: float | Mapping[str, float] = 1.0,
    constraint: float | Mapping[str, float] = 30.0,
    n_obs: int = 20,
    obs_sigma: float = 10.0,
    prior_error: float = InversionSettings.prior_error,
    period_correlation: float = 0.0,
    region_correlation: float = 0.0,
    crosstalk: float = 0.15,
    background_sigma: float = 20.0,
    noise: bool = True,
    seed: int = 0,
    synthetic: bool = True,
) -> xr.Dataset:
    """A posterior Dataset with the inversion stage's schema, from an exact small inversion.

    Parameters
    ----------
    regions : sequence of ISO-3 codes or dict code -> (name, prior Tg yr-1, box), optional
        Default :data:`DEFAULT_REGIONS`.
    gas : {"CH4", "CO2"}
    periods : sequence of str
        ISO 8601 period labels (one set of emission elements each, one background each).
    sectors : sequence of str
        The region's prior is split equally between sectors.
    truth : float or dict code -> float
        True scale factor (the observations are simulated from it).
    constraint : float or dict code -> float
        Signal per observation per unit scale factor (gas units); 0 = unseen region.
    n_obs : int
        Observations per region and period.
    obs_sigma : float
        Observation error (gas units).
    prior_error : float
        Relative prior 1-sigma of each emission element.
    period_correlation, region_correlation : float
        Prior error correlation between periods of one region / regions of one period.
    crosstalk : float
        Fraction of a region's signal that its observations also take from the next region.
    background_sigma : float
        Prior 1-sigma of the background offset (gas units), one per period.
    noise : bool
        Add seeded Gaussian noise to the simulated observations.
    seed : int
    synthetic : bool
        Global attribute ``synthetic`` ("true"/"false").

    Returns
    -------
    xarray.Dataset
        dims ``state``, ``state2``, ``total``, ``total2``: see the inversion stage.
    """
    regs = _regions(regions)
    codes = list(regs)
    units = gas_units(gas)
    sv = StateVector.from_records(
        [
            {
                "kind": "emission",
                "region": r,
                "region_name": regs[r][0],
                "role": "requested",
                "sector": s,
                "period": p,
                "prior_emission": regs[r][1] * 1e9 / len(sectors),
            }
            for p in periods
            for r in codes
            for s in sectors
        ]
        + [{"kind": "background", "sector": "total", "period": p, "units": units} for p in periods]
    )
    n = len(sv)
    rng = np.random.default_rng(seed)
    rows = []
    for p in periods:
        for ir, r in enumerate(codes):
            nxt = codes[(ir + 1) % len(codes)] if len(codes) > 1 else None
            for _ in range(n_obs):
                k = np.zeros(n)
                for j, (kind, rj, pj) in enumerate(zip(sv.kind, sv.region, sv.period, strict=True)):
                    if kind == "background" and pj == p:
                        k[j] = 1.0
                    elif kind == "emission" and pj == p and rj == r:
                        k[j] = _per_region(constraint, r, 30.0) / len(sectors) * (1 + 0.2 * rng.random())
                    elif kind == "emission" and pj == p and rj == nxt:
                        k[j] = crosstalk * _per_region(constraint, rj, 30.0) / len(sectors)
                rows.append(k)
    K = np.array(rows).reshape(-1, n)
    xa = np.where(sv.emission, 1.0, 0.0)
    x_true = np.array([_per_region(truth, r, 1.0) if e else 3.0 for e, r in zip(sv.emission, sv.region, strict=True)])
    Sa = _prior_covariance(sv, prior_error, period_correlation, region_correlation, background_sigma)
    y = K @ x_true + (rng.normal(0.0, obs_sigma, K.shape[0]) if noise else 0.0)
    KtK = K.T @ K / obs_sigma**2
    Sa_inv = np.linalg.inv(Sa)
    S_hat = np.linalg.inv(KtK + Sa_inv)
    S_hat = 0.5 * (S_hat + S_hat.T)
    x_hat = xa + S_hat @ (K.T @ (y - K @ xa)) / obs_sigma**2
    A = np.eye(n) - S_hat @ Sa_inv
    r = y - K @ x_hat
    ds = _posterior_dataset(sv, xa, x_hat, Sa, S_hat, A)
    ds["dofs"] = ((), float(np.trace(A)), {"units": "1", "long_name": "degrees of freedom for signal, tr(A)"})
    ds["chi2_obs"] = ((), float(r @ r / obs_sigma**2 / max(K.shape[0], 1)), {"units": "1", "long_name": "J_o / m"})
    dx = x_hat - xa
    ds["chi2_state"] = ((), float(dx @ Sa_inv @ dx / n), {"units": "1", "long_name": "J_a / n"})
    ds["n_observations"] = ((), np.int64(K.shape[0]), {"units": "1", "long_name": "number of observations"})
    ds["status"] = ((), np.int8(0), {"units": "1", "long_name": "inversion status", **status_attrs(INVERSION_STATUS)})
    totals = region_totals(ds, K=K, region_names={c: regs[c][0] for c in codes})
    ds = xr.merge([ds, totals], combine_attrs="override")
    ds.attrs = global_attrs(
        f"{gas} posterior emissions (synthetic)",
        source="gosat_pipeline.testing.make_posterior",
        gas=gas.upper(),
        prior_error=float(prior_error),
        obs_sigma=float(obs_sigma),
        seed=int(seed),
        synthetic="true" if synthetic else "false",
        transport_model="synthetic Jacobian",
    )
    return ds


def _posterior_dataset(
    sv: StateVector, xa: np.ndarray, x_hat: np.ndarray, Sa: np.ndarray, S_hat: np.ndarray, A: np.ndarray
) -> xr.Dataset:
    n = len(sv)
    coords: dict[str, Any] = {
        "state": ("state", np.arange(n), {"long_name": "state element index", "units": "1"}),
        "state2": ("state2", np.arange(n), {"long_name": "state element index (second matrix dim)", "units": "1"}),
        **sv.to_coords(),
    }
    # element units differ (1 for scale factors, gas units for backgrounds): state_units says which;
    # the variable units are "1" so that the file is CF-valid (udunits-parseable).
    note = "see state_units: 1 for emission scale factors, gas units for background offsets"
    ds = xr.Dataset(coords=coords)
    for name, val, ln in (
        ("x_prior", xa, "prior state"),
        ("x_posterior", x_hat, "posterior state (mean)"),
        ("x_posterior_sigma", np.sqrt(np.diag(S_hat)), "posterior 1-sigma"),
        ("x_prior_sigma", np.sqrt(np.diag(Sa)), "prior 1-sigma"),
    ):
        ds[name] = ("state", val, {"units": "1", "long_name": ln, "comment": note})
    for name, val, ln in (
        ("S_prior", Sa, "prior error covariance"),
        ("S_posterior", S_hat, "posterior error covariance"),
        ("averaging_kernel", A, "averaging kernel d x_hat / d x_true"),
    ):
        ds[name] = (
            ("state", "state2"),
            val,
            {"units": "1", "long_name": ln, "comment": "element units: product of the two elements' state_units"},
        )
    return ds


def make_reported(
    posterior: xr.Dataset,
    values: Mapping[str, float] | None = None,
    *,
    relative_sigma: float = 0.15,
    source: str = "national submission",
    years: Sequence[int] | None = None,
    category: str = "M.0.EL",
) -> pd.DataFrame:
    """A reported-totals table for the regions of ``posterior`` (the schema of the inventory stage).

    ``values`` maps ISO-3 -> Tg yr-1 (default: each region's prior total); regions
    missing from ``values`` get no row. Years default to those of the posterior periods.
    """
    gas = str(posterior.attrs.get("gas", "CH4"))
    regs = posterior["total_region"].values.astype(str)
    pers = posterior["total_period"].values.astype(str)
    prior = posterior["total_prior"].values
    rows = []
    for r, p, e in zip(regs, pers, prior):
        if values is not None and r not in values:
            continue
        year = int(str(p)[:4]) if years is None else int(years[list(pers).index(p) % len(years)])
        v = float(values[r]) if values is not None else float(e)
        rows.append(
            {
                "area": r,
                "year": year,
                "gas": gas,
                "category": category,
                "source": source,
                "value_tg_per_yr": v,
                "sigma_tg_per_yr": abs(v) * relative_sigma,
                "uncertainty_source": f"default model ({relative_sigma:.0%})",
            }
        )
    return pd.DataFrame(rows)


def _grid() -> GridSpec:
    return GridSpec.from_resolution(1.0, _BBOX)


def _box_mask(grid: GridSpec, box: tuple[float, float, float, float]) -> np.ndarray:
    lat, lon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    w, s, e, n = box
    return (lon >= w) & (lon < e) & (lat >= s) & (lat < n)


def make_flux_maps(posterior: xr.Dataset, regions: Mapping[str, tuple] | None = None) -> xr.Dataset:
    """Prior/posterior flux maps (kg m-2 s-1) on a 1-degree grid: the ``emissions.nc`` schema.

    Each region's prior total is spread uniformly over its box; the posterior scales it
    by the region's first-period scale factor. dims (latitude, longitude).
    """
    sv = StateVector.from_coords(posterior)
    regs = _regions(regions) if regions is not None else _regions(list(dict.fromkeys(r for r in sv.region if r)))
    grid = _grid()
    area = grid.cell_area()
    prior = np.zeros(grid.shape)
    post = np.zeros(grid.shape)
    aks = np.zeros(grid.shape)
    p0 = sv.periods()[0]
    A = np.diag(posterior["averaging_kernel"].values)
    for code, (_name, total, box) in regs.items():
        m = _box_mask(grid, box)
        if not m.any():
            continue
        sel = sv.emission & (sv.region == code) & (sv.period == p0)
        sf = float(posterior["x_posterior"].values[sel].mean()) if sel.any() else 1.0
        flux = total * 1e9 / SECONDS_PER_YEAR / area[m].sum()
        prior[m] += flux
        post[m] += flux * sf
        aks[m] = float(A[sel].mean()) if sel.any() else 0.0
    scale = np.where(prior > 0, post / np.where(prior > 0, prior, 1.0), 1.0)
    fu = "kg m-2 s-1"
    ds = xr.Dataset(
        {
            "prior_flux": (("latitude", "longitude"), prior, {"units": fu, "long_name": "prior emission flux"}),
            "posterior_flux": (("latitude", "longitude"), post, {"units": fu, "long_name": "posterior emission flux"}),
            "scale_factor": (("latitude", "longitude"), scale, {"units": "1", "long_name": "posterior / prior flux"}),
            "averaging_kernel_sensitivity": (
                ("latitude", "longitude"),
                aks,
                {"units": "1", "long_name": "diagonal of the averaging kernel mapped to cells"},
            ),
        },
        coords=grid.coords(),
    )
    ds = xr.merge([ds, grid.bounds_dataset()[["latitude_bounds", "longitude_bounds"]]])
    ds.attrs = global_attrs(
        "prior and posterior emission maps (synthetic)",
        "gosat_pipeline.testing.make_flux_maps",
        gas=str(posterior.attrs.get("gas", "CH4")),
        synthetic=posterior.attrs.get("synthetic", "true"),
    )
    return ds


def make_gridded_l3(gas: str = "CH4", *, n_times: int = 2, seed: int = 0, synthetic: bool = True) -> xr.Dataset:
    """A small L3 dataset (time, latitude, longitude) with sparse GOSAT-like coverage."""
    grid = _grid()
    rng = np.random.default_rng(seed)
    units = gas_units(gas)
    base = 1900.0 if gas.upper() == "CH4" else 410.0
    shape = (n_times, *grid.shape)
    n = rng.poisson(0.6, shape).astype("int32")
    mean = np.where(n > 0, base + rng.normal(0, 8.0 if gas.upper() == "CH4" else 1.0, shape), np.nan)
    times = pd.date_range("2019-01-01", periods=n_times, freq="MS")
    coords = {
        "time": ("time", times.values, {"standard_name": "time", "long_name": "start of time bin"}),
        **grid.coords(),
    }
    ds = xr.Dataset(
        {
            "n_soundings": (("time", "latitude", "longitude"), n, cf_attrs("n_soundings")),
            "xgas_mean": (("time", "latitude", "longitude"), mean, cf_attrs("xgas_mean", gas)),
        },
        coords=coords,
    )
    ds["xgas_mean"].attrs["ancillary_variables"] = "n_soundings"
    ds["xgas_mean"].attrs["standard_name"] = GAS_STANDARD_NAMES[gas.upper()]
    ds["xgas_mean"].attrs["units"] = units
    ds.attrs = global_attrs(
        f"{gas} L3 (synthetic)",
        "gosat_pipeline.testing.make_gridded_l3",
        gas=gas.upper(),
        synthetic="true" if synthetic else "false",
    )
    return ds


def boundaries_geojson(regions: Mapping[str, tuple] | None = None) -> dict[str, Any]:
    """GeoJSON FeatureCollection of box polygons with properties ``region`` and ``name``."""
    feats = []
    for code, (name, _total, (w, s, e, n)) in _regions(regions).items():
        ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
        feats.append(
            {
                "type": "Feature",
                "properties": {"region": code, "name": name},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` atomically with the CF-safe encoding of :func:`gosat_pipeline.schema.cf_encoding`."""
    return atomic_write_netcdf(ds, path, encoding=cf_encoding(ds))


def _default_posterior(
    regs: Mapping[str, tuple], gas: str, index: int, periods: Sequence[str], synthetic: bool
) -> xr.Dataset:
    """A posterior with a planted discrepancy (region ``index`` mod n) and an unseen last region."""
    codes = list(regs)
    planted = codes[index % len(codes)]
    truth = {c: (1.6 if c == planted else 1.0) for c in codes}
    if index % 2:  # the second gas has its discrepancy the other way round
        truth[planted] = 0.5
    constraint = {c: (0.0 if i == len(codes) - 1 else 30.0) for i, c in enumerate(codes)}
    return make_posterior(
        regs, gas=gas, periods=periods, truth=truth, constraint=constraint, seed=index, synthetic=synthetic
    )


def _gas_regions(regs: Mapping[str, tuple], gas: str, scaled: bool) -> dict[str, tuple]:
    """CO2 priors of the default regions scaled to CO2-like magnitudes (x 60)."""
    factor = 60.0 if scaled and gas.upper() == "CO2" else 1.0
    return {c: (name, total * factor, box) for c, (name, total, box) in regs.items()}


def _posteriors(
    posterior: xr.Dataset | Mapping[str, xr.Dataset] | None,
    gases: Sequence[str] | None,
    regs: Mapping[str, tuple],
    scaled: bool,
    periods: Sequence[str],
    synthetic: bool,
) -> dict[str, tuple[xr.Dataset, dict[str, tuple]]]:
    """gas -> (posterior, its regions) for :func:`write_run_dir`."""
    if gases is None:
        gas = str(posterior.attrs.get("gas", "CH4")) if isinstance(posterior, xr.Dataset) else "CH4"
        gases = [gas]
    gases = [str(g).upper() for g in gases]
    if isinstance(posterior, xr.Dataset) and len(gases) > 1:
        raise ValueError("several gases: pass posterior as a dict gas -> Dataset (or leave it out)")
    out = {}
    for i, gas in enumerate(gases):
        if isinstance(posterior, xr.Dataset):
            out[gas] = (posterior, dict(regs))
        elif isinstance(posterior, Mapping) and gas in posterior:
            out[gas] = (posterior[gas], dict(regs))
        else:
            gregs = _gas_regions(regs, gas, scaled)
            out[gas] = (_default_posterior(gregs, gas, i, periods, synthetic), gregs)
    return out


def write_run_dir(
    run_dir: str | Path,
    *,
    posterior: xr.Dataset | Mapping[str, xr.Dataset] | None = None,
    reported: pd.DataFrame | None = None,
    regions: Mapping[str, tuple] | None = None,
    synthetic: bool = True,
    manifest: Mapping[str, Any] | None = None,
    skip: Sequence[str] = (),
    compare_kwargs: Mapping[str, Any] | None = None,
    gases: Sequence[str] | None = None,
    periods: Sequence[str] = ("2019",),
    change: tuple[str, str] | None = None,
) -> Path:
    """Write a complete synthetic run directory for report tests and demos.

    Parameters
    ----------
    run_dir : path-like
    posterior : xarray.Dataset or dict gas -> xarray.Dataset, optional
        Default :func:`make_posterior` on ``regions`` with a planted discrepancy (one
        per gas, in opposite directions for the second gas).
    reported : pandas.DataFrame, optional
        Default :func:`make_reported` (prior totals, 15 %) for each gas. With several
        gases, each gas is compared with the rows of its ``gas`` column.
    regions : dict, optional
        code -> (name, prior Tg yr-1, box); default :data:`DEFAULT_REGIONS` (whose prior
        totals are multiplied by 60 for a default CO2 posterior).
    synthetic : bool
        Value of ``manifest["synthetic"]`` and the global ``synthetic`` attributes.
    manifest : dict, optional
        Extra manifest keys (override the defaults).
    skip : sequence of str
        File names not to write (to test graceful degradation), e.g.
        ``"emissions_CO2.nc"``.
    compare_kwargs : dict, optional
        Passed to :func:`gosat_pipeline.compare.compare_to_inventory`. The posteriors
        here stand for a perfect forward model, so ``transport_error`` defaults to 0.
    gases : sequence of str, optional
        Write one ``posterior_<GAS>.nc``, ``emissions_<GAS>.nc`` and ``gridded_<GAS>.nc``
        per gas, as the pipeline does, e.g. ``("CH4", "CO2")``, and one
        ``discrepancies.json`` with the rows of every gas. Default: one gas (that of
        ``posterior``, else CH4) under the legacy names ``posterior.nc``,
        ``emissions.nc``, ``gridded.nc``.
    periods : sequence of str
        Periods of the default posteriors.
    change : (str, str), optional
        ``(period_a, period_b)``: also write the period changes of every gas
        (:func:`gosat_pipeline.compare.period_change`) into ``discrepancies.json``.

    Returns
    -------
    pathlib.Path
        ``run_dir``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    regs = _regions(regions)
    per_gas = _posteriors(posterior, gases, regs, regions is None, periods, synthetic)
    if reported is None:
        reported = pd.concat([make_reported(post) for post, _ in per_gas.values()], ignore_index=True)
    legacy = gases is None
    for i, (gas, (post, gregs)) in enumerate(per_gas.items()):
        suffix = "" if legacy else f"_{gas}"
        files: dict[str, Any] = {
            f"posterior{suffix}.nc": lambda p, post=post: write_netcdf(post, p),
            f"emissions{suffix}.nc": lambda p, post=post, gregs=gregs: write_netcdf(make_flux_maps(post, gregs), p),
            f"gridded{suffix}.nc": lambda p, gas=gas, i=i: write_netcdf(
                make_gridded_l3(gas, seed=i, synthetic=synthetic), p
            ),
        }
        for name, write in files.items():
            if name not in skip:
                write(run_dir / name)
    shared: dict[str, Any] = {
        "boundaries.geojson": lambda p: atomic_write_text(json.dumps(boundaries_geojson(regs)), p),
        "config.resolved.yaml": lambda p: atomic_write_text(
            f"run:\n  name: synthetic demo\ngases: [{', '.join(per_gas)}]\n"
            "compare:\n  z_critical: 2.0\n  min_error_reduction: 0.2\n",
            p,
        ),
    }
    for name, write in shared.items():
        if name not in skip:
            write(run_dir / name)
    if "discrepancies.json" not in skip:
        _write_comparison(
            run_dir, per_gas, reported, {"transport_error": 0.0, **dict(compare_kwargs or {})}, change, legacy
        )
    man: dict[str, Any] = {
        "synthetic": bool(synthetic),
        "config_sha256": "0" * 64,
        "versions": {"gosat_pipeline": "0.1.0", "numpy": np.__version__, "xarray": xr.__version__},
        "inputs": [{"path": "synthetic/granule_001.h5", "sha256": "ab" * 32, "reader": "synthetic"}],
        "skipped_inputs": [],
        "stages": {"invert": {"seconds": 0.1}, "compare": {"seconds": 0.01}},
    }
    man.update(manifest or {})
    if "manifest.json" not in skip:
        atomic_write_text(json.dumps(man, indent=2, default=str), run_dir / "manifest.json")
    return run_dir


def _write_comparison(
    run_dir: Path,
    per_gas: Mapping[str, tuple[xr.Dataset, Any]],
    reported: pd.DataFrame,
    compare_kwargs: dict[str, Any],
    change: tuple[str, str] | None,
    legacy: bool,
) -> None:
    """discrepancies.* of every gas (the pipeline's compare stage on the synthetic posteriors)."""
    frames, changes = [], []
    for gas, (post, _) in per_gas.items():
        # the legacy single-gas directory compares with the whole table, as it always did
        sub = reported if legacy or "gas" not in reported else reported[reported["gas"].str.upper() == gas]
        frames.append(compare_to_inventory(post, sub, **compare_kwargs))
        if change is not None:
            changes.append(
                period_change(
                    post,
                    sub,
                    period_a=change[0],
                    period_b=change[1],
                    transport_error=compare_kwargs.get("transport_error"),
                )
            )
    df = pd.concat(frames, ignore_index=True)
    df.attrs = frames[0].attrs
    write_discrepancies(df, run_dir, changes=pd.concat(changes, ignore_index=True) if changes else None)
