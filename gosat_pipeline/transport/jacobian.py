"""The Jacobian of the super-observations with respect to the state vector.

:func:`build_jacobian` turns the L3 observations, the region-attributed prior emissions
and the winds (or external footprints) into a :class:`xarray.DataArray` ``(obs, state)``
whose coordinates carry the observation vector, its error terms and the state vector's
metadata (:class:`gosat_pipeline.statevector.StateVector`), so the inversion needs
nothing else.

State elements (DESIGN.md 5.3): emission scale factors per region (requested regions,
other countries in the domain and the rest of the domain, so that no emission in the
domain is left out to alias into a solved region), sector and period; the background
column per window as a plane (offset plus north-south and east-west gradients) that is
not transported; and boundary inflow per domain edge and window, carried into the domain
by the transport operator (the boundary-condition elements of regional inversions, e.g.
Varon et al. 2022 for the Integrated Methane Inversion).

References
----------
Varon, D. J. et al. (2022): Integrated Methane Inversion (IMI 1.0): a user-friendly,
cloud-based facility for inferring high-resolution methane emissions from TROPOMI
satellite observations, Geosci. Model Dev. 15, 5787-5805.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.attribution import attribute_emissions
from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import EARTH_RADIUS_M, GridSpec, require_same_grid
from gosat_pipeline.params import (
    BACKGROUND_MODES,
    TRANSPORT_MODES,
    TransportSettings,
    with_overrides,
)
from gosat_pipeline.schema import (
    GAS_UNIT_TO_MOLMOL,
    MOLAR_MASS,
    SECONDS_PER_YEAR,
    gas_units,
    output_attrs,
)
from gosat_pipeline.statevector import REST_REGION, StateVector
from gosat_pipeline.transport.footprints import _match_footprints, read_footprints
from gosat_pipeline.transport.observations import observation_vector, period_label, time_bins
from gosat_pipeline.transport.operator import (
    EDGES,
    Forcing,
    SimpleTransport,
    _edge_inflow,
    _resolve_winds,
    integrate_responses,
)
from gosat_pipeline.transport.state import periods, windows

__all__ = ["BACKGROUND_MODES", "TRANSPORT_MODES", "TransportSettings", "build_jacobian"]

logger = logging.getLogger(__name__)

_KM = 1000.0e3  # gradients are per 1000 km


_LEGACY_BACKGROUND = {"per_time": ("offset", None), "single": ("offset", "single"), "none": ("none", None)}


def _settings(settings: TransportSettings | None, overrides: dict[str, Any]) -> TransportSettings:
    """``settings`` (default :class:`TransportSettings`) with the keyword overrides applied.

    ``background`` also takes the older names ``"per_time"`` (an offset per time bin) and
    ``"single"`` (one offset); a ``None`` override is ignored.
    """
    upd = {k: v for k, v in overrides.items() if v is not None}
    if upd.get("background") in _LEGACY_BACKGROUND:
        upd["background"], upd["background_period"] = _LEGACY_BACKGROUND[upd["background"]]
    return with_overrides(settings or TransportSettings(), upd, "transport")


# ---------------------------------------------------------------------------- emissions
def _emission_fields(emissions: xr.DataArray, masks: xr.DataArray | None, grid: GridSpec) -> xr.DataArray:
    """(region, sector, lat, lon) kg m-2 s-1 with region/region_name/region_role coords."""
    require_same_grid(emissions, grid, "prior emissions")
    if "region" not in emissions.dims:
        if masks is None:
            raise SchemaError(
                "pass region-attributed emissions (dims region, latitude, longitude) or the "
                "prior flux together with region masks"
            )
        require_same_grid(masks, grid, "region masks")
        emissions = attribute_emissions(emissions, masks, rule="area")
    if "sector" not in emissions.dims:
        emissions = emissions.expand_dims(sector=["total"], axis=1)
    em = emissions.transpose("region", "sector", "latitude", "longitude")
    codes = em["region"].values.astype(str)
    if "region_role" not in em.coords:
        em = em.assign_coords(region_role=("region", np.where(codes == REST_REGION, "rest", "requested")))
    if "region_name" not in em.coords:
        em = em.assign_coords(region_name=("region", codes))
    return em


def _windows_for(
    settings: TransportSettings, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, list[str], np.ndarray]:
    if settings.background_period == "single" and len(starts):
        st, en = np.asarray(starts, "datetime64[ns]"), np.asarray(ends, "datetime64[ns]")
        bounds = np.array([[st.min(), en.max()]])
        return np.zeros(st.size, dtype="int64"), [period_label(*bounds[0])], bounds
    return windows(starts, ends, settings.background_period)


# ---------------------------------------------------------------------------- background
def _plane_basis(lat: np.ndarray, lon: np.ndarray, grid: GridSpec) -> dict[str, np.ndarray]:
    """Offset and the north / east distance (in 1000 km) from the domain centre, per observation."""
    w, s, e, n = grid.bbox
    lat_c, lon_c = 0.5 * (s + n), 0.5 * (w + e)
    y = EARTH_RADIUS_M * np.deg2rad(lat - lat_c) / _KM
    x = EARTH_RADIUS_M * np.deg2rad(lon - lon_c) * np.cos(np.deg2rad(lat_c)) / _KM
    return {"offset": np.ones_like(lat), "gradient_north": y, "gradient_east": x}


def _background_records(
    settings: TransportSettings, wi: np.ndarray, wlabels: list[str], ov: xr.Dataset, units: str
) -> tuple[list[tuple[int, str]], list[dict[str, Any]], np.ndarray]:
    """(window, component) of every background column, their state records, and the per-observation
    reference (median of the window's observations)."""
    m = ov.sizes["obs"]
    y = ov["y"].values
    ref = np.zeros(m)
    keys: list[tuple[int, str]] = []
    recs: list[dict[str, Any]] = []
    if settings.background == "none" or m == 0:
        return keys, recs, ref
    obs_w = wi[ov["time_index"].values]
    comps = ("offset",) if settings.background == "offset" else ("offset", "gradient_north", "gradient_east")
    for w, lab in enumerate(wlabels):
        sel = obs_w == w
        if not sel.any():
            continue
        ref[sel] = np.median(y[sel])
        for comp in comps:
            keys.append((w, comp))
            recs.append(
                {
                    "kind": "background",
                    "sector": comp,
                    "period": lab,
                    "units": units if comp == "offset" else f"{units} (1000 km)-1",
                    "background_reference": float(ref[sel][0]) if comp == "offset" else 0.0,
                }
            )
    return keys, recs, ref


# ---------------------------------------------------------------------------- winds
def _winds_arrays(
    winds: Any, u: Any, v: Any, grid: GridSpec, settings: TransportSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, u, v) with u, v of shape (T, ny, nx) on ``grid``, perturbed by the settings."""
    from gosat_pipeline.transport.operator import _wind_field

    uu, vv = _resolve_winds(u, v, winds)
    if isinstance(uu, xr.DataArray) and "time" in uu.dims and uu.sizes["time"] > 1:
        require_same_grid(uu, grid, "winds")
        times = pd.DatetimeIndex(uu["time"].values).values
        ua = uu.transpose("time", "latitude", "longitude").values.astype("float64")
        va = vv.transpose("time", "latitude", "longitude").values.astype("float64")
        if not (np.all(np.isfinite(ua)) and np.all(np.isfinite(va))):
            raise SchemaError("winds have non-finite values on the inversion grid")
    else:
        times = np.array([np.datetime64("NaT")])
        ua = _wind_field(uu, grid, "u")[None]
        va = _wind_field(vv, grid, "v")[None]
    ang = math.radians(settings.wind_rotation)
    c, s = math.cos(ang), math.sin(ang)
    ur = settings.wind_scale * (ua * c - va * s)
    vr = settings.wind_scale * (ua * s + va * c)
    return times, ur, vr


# ---------------------------------------------------------------------------- responses
def _forcings(
    fields: np.ndarray,
    gas: str,
    pbounds: np.ndarray,
    wbounds: np.ndarray,
    wused: list[int],
    edges: list[str],
    spinup: np.timedelta64,
) -> tuple[list[Forcing], list[tuple[int, int]], list[tuple[int, str]]]:
    """Forcings of every emission (period, field) and inflow (window with observations, edge) column."""
    forc: list[Forcing] = []
    emis_keys: list[tuple[int, int]] = []
    inflow_keys: list[tuple[int, str]] = []
    for p, (a, b) in enumerate(pbounds):
        start = a - spinup if p == 0 else a
        for k in range(fields.shape[0]):
            forc.append(Forcing("flux", start, b, pattern=fields[k].ravel() / MOLAR_MASS[gas]))
            emis_keys.append((p, k))
    for w in wused:
        a, b = wbounds[w]
        start = a - spinup if w == 0 else a
        for e in edges:
            forc.append(Forcing("inflow", start, b, edge=e, scale=GAS_UNIT_TO_MOLMOL[gas]))
            inflow_keys.append((w, e))
    return forc, emis_keys, inflow_keys


def _steady_responses(
    grid: GridSpec,
    times: np.ndarray,
    ua: np.ndarray,
    va: np.ndarray,
    settings: TransportSettings,
    forcings: list[Forcing],
    obs_start: np.ndarray,
    obs_cell: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Responses from one steady operator (time-mean winds): the teaching / identical-twin operator."""
    op = SimpleTransport(
        grid,
        ua.mean(axis=0),
        va.mean(axis=0),
        eddy_diffusivity=settings.eddy_diffusivity,
        ventilation_time=settings.ventilation_time,
        surface_pressure=settings.surface_pressure,
    )
    rhs = np.zeros((grid.size, len(forcings)))
    for j, f in enumerate(forcings):
        if f.kind == "flux":
            rhs[:, j] = f.pattern / op.n_air  # type: ignore[operator]
        else:
            rhs[:, j] = _edge_inflow(op._faces, op.area, str(f.edge)) * f.scale
    resp = op._lu.solve(rhs) if len(forcings) else rhs
    K = resp[obs_cell]
    start = np.array([f.start for f in forcings], dtype="datetime64[ns]")
    end = np.array([f.end for f in forcings], dtype="datetime64[ns]")
    on = (obs_start[:, None] >= start[None]) & (obs_start[:, None] < end[None])
    return K * on, dict(op.attrs)


def _edges_of(grid: GridSpec, settings: TransportSettings, footprints: Any) -> list[str]:
    if not settings.inflow or footprints is not None:
        return []
    out = []
    if not grid.is_global_lon:
        out += ["east", "west"]
    if grid.lat_edges[-1] < 90.0:
        out.append("north")
    if grid.lat_edges[0] > -90.0:
        out.append("south")
    return [e for e in EDGES if e in out]


# ---------------------------------------------------------------------------- the builder
def build_jacobian(
    obs: xr.Dataset,
    emissions: xr.DataArray,
    masks: xr.DataArray | None = None,
    *,
    winds: Any = None,
    u: Any = None,
    v: Any = None,
    settings: TransportSettings | None = None,
    footprints: str | Path | Sequence[str | Path] | xr.Dataset | None = None,
    footprints_format: str = "auto",
    sigma_model: float | None = None,
    use_weighted_mean: bool = True,
    period_split: str | None = None,
    obs_correlation_length_km: float | None = None,
    progress: Any = None,
    **overrides: Any,
) -> xr.DataArray:
    """Jacobian of the super-observations with respect to the state vector.

    Parameters
    ----------
    obs : xarray.Dataset
        L3 gridded observations (DESIGN.md 4), attr ``gas``.
    emissions : xarray.DataArray
        Prior emissions attributed to regions, kg m-2 s-1 on the observations' grid:
        dims ``(region, [sector,] latitude, longitude)`` with coords ``region``,
        ``region_name``, ``region_role`` (``inventory.attribute_to_regions`` or
        :func:`gosat_pipeline.attribution.attribute_emissions`). Or the prior flux
        ``(latitude, longitude)`` together with ``masks``: it is then attributed on the
        inversion grid by area fraction, with a rest-of-domain element for the remainder.
    masks : xarray.DataArray (region, latitude, longitude), optional
        Region fractions, only with a plain prior flux.
    winds : Dataset with ``u``, ``v``, optional
        On the inversion grid: ``(time, latitude, longitude)`` for the time-resolved
        operator, ``(latitude, longitude)`` for the steady one. Or ``u``, ``v`` (m s-1,
        scalars or fields). Not needed with ``footprints``.
    settings : TransportSettings, optional
        The operator's settings (defaults: :class:`TransportSettings`).
    footprints : path, glob, list of paths, folder or Dataset, optional
        External sensitivities instead of the built-in operator, in any layout
        :func:`gosat_pipeline.transport.open_footprints` reads (generic netCDF, STILT,
        FLEXPART, NAME, an IMI Jacobian), summed conservatively onto the observations'
        grid (no inflow elements: the footprint model's own boundary treatment applies; the
        background plane remains). Footprints that already include the averaging kernel
        (NAME column footprints, IMI) are not multiplied by the column sensitivity again.
    footprints_format : {"auto", "generic", "stilt", "flexpart", "name", "imi"}
        The footprints' layout (``auto`` detects it).
    sigma_model, use_weighted_mean, obs_correlation_length_km
        Passed to :func:`gosat_pipeline.transport.observation_vector`.
    period_split : str, optional
        Pandas frequency splitting the emission state in time (:func:`periods`).
    progress : callable, optional
        Receives (steps done, steps total) from the time-resolved integration.
    **overrides
        Fields of :class:`TransportSettings` that replace those of ``settings``
        (``build_jacobian(..., eddy_diffusivity=3e4)``); ``background`` also accepts the
        older ``"per_time"`` (an offset per time bin) and ``"single"`` (one offset).

    Returns
    -------
    xarray.DataArray (obs, state), name ``jacobian``
        :math:`K_{ij} = \\partial y_i / \\partial x_j` in the gas's canonical units per
        state unit. Emission columns are :math:`\\bar a_{PBL} c` of the element's prior
        emissions during its period (the response is followed into later periods);
        inflow columns the same for a unit (1 gas unit) enhancement outside one edge;
        background columns the plane basis functions. Observation coords ``obs_*`` (value,
        sigma and its parts, n, time, latitude, longitude, time_index, cell,
        column_sensitivity, background_reference); state coords
        :meth:`StateVector.to_coords`. Attrs: gas, units and every transport setting.
    """
    s = _settings(settings, overrides)
    gas = str(obs.attrs.get("gas", "")).upper()
    units = gas_units(gas)
    grid = GridSpec.from_coords(obs["latitude"].values, obs["longitude"].values)
    em = _emission_fields(emissions, masks, grid)
    ov = observation_vector(
        obs,
        sigma_model=sigma_model,
        use_weighted_mean=use_weighted_mean,
        correlation_length_km=obs_correlation_length_km,
    )
    starts, ends = time_bins(obs)
    pindex, plabels, pbounds = periods(starts, ends, period_split)
    windex, wlabels, wbounds = _windows_for(s, starts, ends)
    nreg, nsec = em.sizes["region"], em.sizes["sector"]
    fields = em.values.reshape(nreg * nsec, *grid.shape).astype("float64")
    area = grid.cell_area()
    prior_kg_yr = (fields * area).sum(axis=(1, 2)) * SECONDS_PER_YEAR
    edges = _edges_of(grid, s, footprints)
    spinup = np.timedelta64(int((s.spinup if s.spinup is not None else 5.0 * s.ventilation_time) * 1e9), "ns")
    tidx = ov["time_index"].values
    wused = sorted({int(w) for w in windex[tidx]}) if edges else []
    forc, emis_keys, inflow_keys = _forcings(fields, gas, pbounds, wbounds, wused, edges, spinup)
    obs_start, obs_end, obs_cell = starts[tidx], ends[tidx], ov["cell"].values
    attrs: dict[str, Any]
    fp_ak_applied = False
    if footprints is not None:
        fp, fcoords = read_footprints(footprints, gas, format=footprints_format, grid=grid)
        sens, kept = _match_footprints(fp, fcoords, ov, grid, obs)
        fp_ak_applied = bool(fp.attrs.get("averaging_kernel_applied", 0))
        ov = ov.isel(obs=kept)
        tidx, obs_start, obs_cell = tidx[kept], obs_start[kept], obs_cell[kept]
        forc = forc[: len(emis_keys)]  # footprint models bring their own boundary treatment
        inflow_keys = []
        pats = np.array([f.pattern for f in forc if f.kind == "flux"])
        resp = sens @ pats.T if len(pats) else np.zeros((len(kept), 0))
        fs = np.array([f.start for f in forc], dtype="datetime64[ns]")
        fe = np.array([f.end for f in forc], dtype="datetime64[ns]")
        resp = resp * ((obs_start[:, None] >= fs[None]) & (obs_start[:, None] < fe[None]))
        attrs = {
            "transport_operator": "external footprints",
            "footprints_source": str(fp.attrs.get("footprint_source", "dataset")),
            "footprints_format": str(fp.attrs.get("footprint_format", "generic")),
            "footprints_averaging_kernel_applied": int(fp_ak_applied),
        }
    bkeys, brecs, ref = _background_records(s, windex, wlabels, ov, units)
    m, n_resp = ov.sizes["obs"], len(forc)
    kmat = np.zeros((m, n_resp + len(bkeys)))  # the Jacobian, held once: responses are written into it
    if footprints is not None:
        kmat[:, :n_resp] = resp
        del resp
    else:
        times, ua, va = _winds_arrays(winds, u, v, grid, s)
        time_resolved = s.mode == "time_resolved" or (s.mode == "auto" and ua.shape[0] > 1)
        if s.mode == "time_resolved" and ua.shape[0] < 2:
            raise SchemaError(
                "transport mode 'time_resolved' needs winds with a time axis (winds.path to a "
                "reanalysis file with several time steps)"
            )
        if time_resolved:
            step = (
                min(s.time_step, float(np.min((ends - starts) / np.timedelta64(1, "s"))))
                if len(starts)
                else s.time_step
            )
            integrate_responses(
                grid,
                times,
                ua,
                va,
                forc,
                obs_start,
                obs_end,
                obs_cell,
                eddy_diffusivity=s.eddy_diffusivity,
                ventilation_time=s.ventilation_time,
                surface_pressure=s.surface_pressure,
                time_step=step,
                progress=progress,
                out=kmat[:, :n_resp],
            )
            attrs = {
                "transport_operator": "time-resolved advection-diffusion-ventilation, explicit "
                "positivity-preserving sub-steps under each wind field (DESIGN.md 5.2)",
                "transport_wind_steps": int(ua.shape[0]),
                "transport_time_step_used_s": step,
                "transport_boundaries": "zero inflow plus estimated inflow per edge and window",
                **grid.to_attrs(),
            }
        else:
            kmat[:, :n_resp], attrs = _steady_responses(grid, times, ua, va, s, forc, obs_start, obs_cell)
            attrs["transport_operator"] = "steady advection-diffusion-ventilation from the time-mean wind"
    # mol mol-1 -> gas units, times the boundary-layer column sensitivity, in place (not for footprints
    # whose model already applied the retrieval's averaging kernel)
    ak = np.ones(m) if fp_ak_applied else ov["column_sensitivity"].values
    kmat[:, :n_resp] *= ak[:, None] / GAS_UNIT_TO_MOLMOL[gas]
    basis = _plane_basis(ov["latitude"].values, ov["longitude"].values, grid)
    obs_w = windex[tidx]
    for j, (w, comp) in enumerate(bkeys):
        kmat[:, n_resp + j] = np.where(obs_w == w, basis[comp], 0.0)
    names = em["region_name"].values.astype(str)
    roles = em["region_role"].values.astype(str)
    codes = em["region"].values.astype(str)
    sectors = em["sector"].values.astype(str)
    extra = {
        f: em[f"region_{f}"].values.astype("float64")
        for f in ("domain_share_area", "domain_share_emission", "area_km2")
        if f"region_{f}" in em.coords
    }
    lat2d, lon2d = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    wmass = fields * area
    wsum = np.where(wmass.sum(axis=(1, 2)) > 0, wmass.sum(axis=(1, 2)), 1.0)
    cen_lat = (wmass * lat2d).sum(axis=(1, 2)) / wsum
    cen_lon = (wmass * lon2d).sum(axis=(1, 2)) / wsum
    recs: list[dict[str, Any]] = []
    for p, k in emis_keys:
        r, sec = divmod(k, nsec)
        recs.append(
            {
                "kind": "emission",
                "region": codes[r],
                "region_name": names[r],
                "role": roles[r],
                "sector": sectors[sec],
                "period": plabels[p],
                "prior_emission": prior_kg_yr[k],
                "latitude": cen_lat[k],
                "longitude": cen_lon[k],
                **{f: float(v[r]) for f, v in extra.items()},
            }
        )
    recs += [{"kind": "inflow", "sector": e, "period": wlabels[w], "units": units} for w, e in inflow_keys]
    recs += brecs
    n_emis = len(emis_keys)
    sv = StateVector.from_records(recs)
    coords: dict[str, Any] = dict(sv.to_coords())
    coords["obs_background_reference"] = ("obs", ref, output_attrs("jacobian", "obs_background_reference", units=units))
    for name in (
        "y",
        "sigma",
        "sigma_retrieval",
        "sigma_model",
        "n",
        "time",
        "latitude",
        "longitude",
        "time_index",
        "cell",
        "column_sensitivity",
    ):
        target = "obs_value" if name == "y" else f"obs_{name}"
        coords[target] = ("obs", ov[name].values, dict(ov[name].attrs))
    jac = xr.DataArray(kmat, dims=("obs", "state"), coords=coords, name="jacobian")
    jac.attrs = {
        **output_attrs("jacobian", "jacobian", units=units, gas=gas),
        "gas": gas,
        "obs_units": units,
        "period_split": period_split or "none",
        "background": s.background,
        "sigma_model": float(ov.attrs["sigma_model"]),
        "use_weighted_mean": int(use_weighted_mean),
        "obs_correlation_length_km": float(obs_correlation_length_km or 0.0),
        **s.attrs(),
        **attrs,
    }
    logger.info(
        "Jacobian: %d observations x %d state elements (%d emission, %s)",
        m,
        kmat.shape[1],
        n_emis,
        attrs["transport_operator"],
    )
    return jac


def describe_state(jac: xr.DataArray) -> str:
    """One line per kind of element: how many, over which periods (for logs)."""
    sv = StateVector.from_coords(jac)
    parts = []
    for kind in ("emission", "background", "inflow"):
        sel = sv.kind == kind
        if sel.any():
            parts.append(f"{int(sel.sum())} {kind} ({len(set(sv.period[sel]))} periods)")
    return ", ".join(parts)


__all__ += ["describe_state", "period_label"]
