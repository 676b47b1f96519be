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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.attribution import attribute_emissions
from gosat_pipeline.blocksparse import csr_from_blocks, wrap_jacobian
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
    response_blocks,
    rotate_winds,
)
from gosat_pipeline.transport.state import periods, windows

__all__ = ["BACKGROUND_MODES", "TRANSPORT_MODES", "TransportSettings", "build_jacobian", "steady_winds"]

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
def _time_mean(w: xr.DataArray, block: int = 64) -> np.ndarray:
    """Mean over ``time`` of a (time, latitude, longitude) field, float64, read ``block`` steps at a time.

    The steps are added one after the other into a float64 sum (the order of
    ``numpy.mean(axis=0)`` on the whole array, so the same value to the bit) and no
    float64 copy of all the steps is made; ``w`` may be lazily loaded from a file.
    """
    w = w.transpose("time", "latitude", "longitude")
    total = np.zeros(w.shape[1:])
    nt = w.sizes["time"]
    for a in range(0, nt, block):
        part = np.asarray(w.isel(time=slice(a, a + block)).values, dtype="float64")
        for k in range(part.shape[0]):
            total += part[k]
    return total / nt


def steady_winds(winds: xr.Dataset) -> xr.Dataset:
    """The time mean of ``u`` and ``v`` (float64, dims latitude, longitude): what the steady operator uses.

    Parameters
    ----------
    winds : xarray.Dataset
        ``u``, ``v`` (m s-1) with or without ``time``; may be lazily opened (read in blocks
        of time steps, so a year at 0.1 degree is never held whole).

    Returns
    -------
    xarray.Dataset
        ``u``, ``v`` on the same grid, attributes kept.
    """
    out = {}
    for name in ("u", "v"):
        w = winds[name]
        mean = _time_mean(w) if "time" in w.dims else np.asarray(w.values, dtype="float64")
        out[name] = (("latitude", "longitude"), mean, dict(w.attrs))
    return xr.Dataset(out, coords={c: winds[c] for c in ("latitude", "longitude")}, attrs=dict(winds.attrs))


def _winds_arrays(
    winds: Any, u: Any, v: Any, grid: GridSpec, settings: TransportSettings
) -> tuple[np.ndarray, Any, Any, bool]:
    """(times, u, v, time_resolved): the winds on ``grid`` as the operator of ``settings`` uses them.

    Time-resolved: ``u``, ``v`` (T, ny, nx) as stored (float32 stays float32; the settings'
    scale and rotation are applied step by step during the integration). Steady: the
    time mean (1, ny, nx), float64, already scaled and turned, computed without a float64
    copy of every step.
    """
    from gosat_pipeline.transport.operator import _wind_field

    uu, vv = _resolve_winds(u, v, winds)
    in_time = isinstance(uu, xr.DataArray) and "time" in uu.dims and uu.sizes["time"] > 1
    if settings.mode == "time_resolved" and not in_time:
        raise SchemaError(
            "transport mode 'time_resolved' needs winds with a time axis (winds.path to a "
            "reanalysis file with several time steps)"
        )
    time_resolved = in_time and settings.mode in ("time_resolved", "auto")
    perturb = (settings.wind_scale, settings.wind_rotation)
    if in_time:
        require_same_grid(uu, grid, "winds")
        for name, w in (("u", uu), ("v", vv)):
            if not bool(np.isfinite(w).all()):
                raise SchemaError(f"winds have non-finite values of {name} on the inversion grid")
    if time_resolved:
        times = pd.DatetimeIndex(uu["time"].values).values
        ua = np.asarray(uu.transpose("time", "latitude", "longitude").values)
        va = np.asarray(vv.transpose("time", "latitude", "longitude").values)
        return times, ua, va, True
    times = np.array([np.datetime64("NaT")])
    if in_time:  # the steady operator's time mean, accumulated in float64
        ur, vr = rotate_winds(_time_mean(uu), _time_mean(vv), *perturb)
    else:
        ur, vr = rotate_winds(_wind_field(uu, grid, "u"), _wind_field(vv, grid, "v"), *perturb)
    return times, ur[None], vr[None], False


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


def _bin_groups(obs_start: np.ndarray) -> list[np.ndarray]:
    """Observation indices per time bin (same bin start), in order of first appearance."""
    keys = np.asarray(obs_start, "datetime64[ns]").astype("int64")
    if keys.size == 0:
        return []
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(inv.ravel(), kind="stable")
    bounds = np.flatnonzero(np.diff(inv.ravel()[order])) + 1
    groups = np.split(order, bounds)
    return [groups[i] for i in np.argsort(first, kind="stable")]


def _on_columns(forcings: list[Forcing], start: np.datetime64) -> np.ndarray:
    """Forcings on at ``start`` (their window holds it): the columns a steady response sees."""
    fs = np.array([f.start for f in forcings], dtype="datetime64[ns]")
    fe = np.array([f.end for f in forcings], dtype="datetime64[ns]")
    return np.flatnonzero((start >= fs) & (start < fe))


def _steady_responses(
    grid: GridSpec,
    times: np.ndarray,
    ua: np.ndarray,
    va: np.ndarray,
    settings: TransportSettings,
    forcings: list[Forcing],
    obs_start: np.ndarray,
    obs_cell: np.ndarray,
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray] | None], dict[str, Any]]:
    """Responses from one steady operator (time-mean winds), one block per time bin.

    The teaching / identical-twin operator: an observation sees the forcings on at its
    bin's start, with their steady responses.
    """
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
    del rhs
    blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    for rows in _bin_groups(obs_start):
        cols = _on_columns(forcings, obs_start[rows[0]])
        blocks.append((rows, cols, resp[np.ix_(obs_cell[rows], cols)]))
    return blocks, dict(op.attrs)


def _footprint_blocks(
    sens: Any, forcings: list[Forcing], obs_start: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """External footprints times the emission patterns on at each bin's start, one block per bin."""
    pats = np.array([f.pattern for f in forcings if f.kind == "flux"])
    blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    for rows in _bin_groups(obs_start):
        cols = _on_columns(forcings, obs_start[rows[0]])
        values = np.asarray(sens[rows] @ pats[cols].T) if cols.size and len(pats) else np.zeros((rows.size, 0))
        blocks.append((rows, cols, values))
    return blocks


def _complete_blocks(
    blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None],
    m: int,
    n_resp: int,
    row_scale: np.ndarray,
    background: tuple[list[tuple[int, str]], dict[str, np.ndarray], np.ndarray],
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Scale the response columns by ``row_scale`` and add each block's background columns.

    Rows without any response (no forcing on) get a block of their background columns only.
    """
    bkeys, basis, obs_w = background
    covered = np.zeros(m, dtype=bool)
    for blk in blocks:
        if blk is not None:
            covered[blk[0]] = True
    if not covered.all():
        blocks = [*blocks, (np.flatnonzero(~covered), np.zeros(0, "int64"), np.zeros(((~covered).sum(), 0)))]
    for i, blk in enumerate(blocks):
        if blk is None:
            continue
        rows, cols, values = blk
        values *= row_scale[rows][:, None]
        wins = set(obs_w[rows].tolist())
        bcols = [j for j, (w, _) in enumerate(bkeys) if w in wins]
        if bcols:
            extra = np.empty((rows.size, len(bcols)))
            for c, j in enumerate(bcols):
                w, comp = bkeys[j]
                extra[:, c] = np.where(obs_w[rows] == w, basis[comp][rows], 0.0)
            cols = np.concatenate([np.asarray(cols, "int64"), n_resp + np.asarray(bcols, "int64")])
            values = np.concatenate([values, extra], axis=1)
        blocks[i] = (rows, cols, values)
    return blocks


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
    dense_max_bytes: int | None = None,
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
    dense_max_bytes : int, optional
        The Jacobian is built block-sparse (each time bin over the columns it sees) and
        returned dense when it takes at most this many bytes dense (default
        :data:`gosat_pipeline.blocksparse.DENSE_MAX_BYTES`, 512 MiB); larger
        ones are a lazy dask array over the sparse matrix
        (:func:`gosat_pipeline.blocksparse.jacobian_matrix` gives it back to the
        inversion), so the dense matrix is never held.
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
        blocks = _footprint_blocks(sens, forc, obs_start)
        del sens
        attrs = {
            "transport_operator": "external footprints",
            "footprints_source": str(fp.attrs.get("footprint_source", "dataset")),
            "footprints_format": str(fp.attrs.get("footprint_format", "generic")),
            "footprints_averaging_kernel_applied": int(fp_ak_applied),
        }
    bkeys, brecs, ref = _background_records(s, windex, wlabels, ov, units)
    m, n_resp = ov.sizes["obs"], len(forc)
    if footprints is None:
        times, ua, va, time_resolved = _winds_arrays(winds, u, v, grid, s)
        if time_resolved:
            step = (
                min(s.time_step, float(np.min((ends - starts) / np.timedelta64(1, "s"))))
                if len(starts)
                else s.time_step
            )
            blocks = list(
                response_blocks(
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
                    wind_scale=s.wind_scale,
                    wind_rotation=s.wind_rotation,
                )
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
            blocks, attrs = _steady_responses(grid, times, ua, va, s, forc, obs_start, obs_cell)
            attrs["transport_operator"] = "steady advection-diffusion-ventilation from the time-mean wind"
        del ua, va
    # mol mol-1 -> gas units, times the boundary-layer column sensitivity (not for footprints whose
    # model already applied the retrieval's averaging kernel); the background plane per window
    ak = np.ones(m) if fp_ak_applied else ov["column_sensitivity"].values
    basis = _plane_basis(ov["latitude"].values, ov["longitude"].values, grid)
    blocks = _complete_blocks(blocks, m, n_resp, ak / GAS_UNIT_TO_MOLMOL[gas], (bkeys, basis, windex[tidx]))
    # the Jacobian, held once: block-sparse by time bin (issue 21), dense in the DataArray when small
    kcsr = csr_from_blocks((m, n_resp + len(bkeys)), blocks)
    kdata = wrap_jacobian(kcsr, dense_max_bytes)
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
    jac = xr.DataArray(kdata, dims=("obs", "state"), coords=coords, name="jacobian")
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
        "Jacobian: %d observations x %d state elements (%d emission, %s); %.1f %% of it non-zero, held %s",
        m,
        kcsr.shape[1],
        n_emis,
        attrs["transport_operator"],
        100.0 * kcsr.nnz / max(kcsr.shape[0] * kcsr.shape[1], 1),
        "dense" if isinstance(kdata, np.ndarray) else "sparse",
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
