"""Forward operators: the simple transport model and external footprints -> Jacobian.

Two operator types produce the same Jacobian object (DESIGN.md 5.2):

- :class:`SimpleTransport`: the steady-state column-enhancement model

  .. math:: u \\partial_x c + v \\partial_y c - K_h \\nabla^2 c + c / \\tau = F / N_{air}

  discretised on the inversion grid as one sparse matrix, factorised once with
  :func:`scipy.sparse.linalg.splu` and applied to every state element's emission
  pattern (build once, apply many).
- external footprints (STILT, FLEXPART, ... netCDF with dims ``(obs, latitude,
  longitude)``), read by :func:`read_footprints`.

:func:`build_jacobian` turns either into a :class:`xarray.DataArray` ``(obs, state)``
whose coordinates carry the observation vector and its error terms, so that
:func:`gosat_pipeline.inversion.invert` needs nothing else.

The column sensitivity of DESIGN.md 5.1 multiplies every row: the retrieved
enhancement is :math:`\\Delta X_{ret} = \\bar a_{PBL} \\, c`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr
from scipy.sparse.linalg import splu

from gosat_pipeline.errors import SchemaError, WindError
from gosat_pipeline.grids import EARTH_RADIUS_M, GridSpec
from gosat_pipeline.schema import GAS_UNIT_TO_MOLMOL, MOLAR_MASS, gas_units

__all__ = [
    "DEFAULT_EDDY_DIFFUSIVITY",
    "DEFAULT_VENTILATION_TIME",
    "DEFAULT_SIGMA_MODEL",
    "FOOTPRINT_UNITS",
    "G0",
    "SECONDS_PER_YEAR",
    "SimpleTransport",
    "build_jacobian",
    "column_sensitivity",
    "dry_air_column",
    "observation_vector",
    "period_label",
    "read_footprints",
]

logger = logging.getLogger(__name__)

#: Standard gravity, m s-2.
G0 = 9.80665
#: Julian year in seconds (used for every kg s-1 <-> kg yr-1 conversion).
SECONDS_PER_YEAR = 365.25 * 86400.0

#: Default horizontal eddy diffusivity, m2 s-1. Boundary-layer horizontal mixing by
#: unresolved mesoscale eddies on 50-200 km grids is of order 1e4-1e5 m2 s-1; 5e4 gives a
#: diffusion length sqrt(K tau) of ~90 km over one ventilation time, about one 1-degree
#: cell, so a source spreads over its neighbours without dominating advection.
DEFAULT_EDDY_DIFFUSIVITY = 5.0e4
#: Default ventilation time, s (2 days). A boundary-layer enhancement is vented to the free
#: troposphere on a time scale of 1-3 days; at 5 m s-1 it travels ~860 km in 2 days, the
#: size of a country-scale (~1000 km) domain, so upwind sources still matter downwind.
DEFAULT_VENTILATION_TIME = 2.0 * 86400.0
#: Default model (transport + representation) error per super-observation, canonical units.
DEFAULT_SIGMA_MODEL: dict[str, float] = {"CO2": 1.0, "CH4": 8.0}

#: Accepted units of external footprints and their factor to (mol mol-1) / (mol m-2 s-1),
#: i.e. m2 s mol-1. ``{gas}`` per kg flux is handled separately (needs the molar mass).
FOOTPRINT_UNITS: dict[str, float] = {
    "m2 s mol-1": 1.0,
    "mol mol-1 (mol m-2 s-1)-1": 1.0,
    "ppm (umol m-2 s-1)-1": 1.0,  # STILT: 1e-6 / 1e-6
    "ppm m2 s umol-1": 1.0,
    "ppb (nmol m-2 s-1)-1": 1.0,
    "ppb m2 s nmol-1": 1.0,
}


def dry_air_column(surface_pressure: float = 1013.25) -> float:
    """Dry-air column in mol m-2.

    Parameters
    ----------
    surface_pressure : float, hPa

    Notes
    -----
    .. math:: N_{air} = \\frac{p_s}{g \\, M_{air}}

    about 3.57e5 mol m-2 at 1013.25 hPa (DESIGN.md 5.2).
    """
    if not surface_pressure > 0:
        raise SchemaError(f"surface_pressure must be > 0 hPa; got {surface_pressure}")
    return float(surface_pressure) * 100.0 / (G0 * MOLAR_MASS["air"])


# ---------------------------------------------------------------------------- winds
def _wind_field(value: Any, grid: GridSpec, name: str) -> np.ndarray:
    """A wind component as an array (ny, nx) in m s-1 on ``grid``."""
    if isinstance(value, xr.DataArray):
        da = value
        extra = [d for d in da.dims if d not in ("latitude", "longitude")]
        if extra:
            da = da.mean(extra)
        if set(da.dims) == {"latitude", "longitude"}:
            lat, lon = grid.lat, grid.lon
            same = (
                da.sizes["latitude"] == lat.size
                and da.sizes["longitude"] == lon.size
                and np.allclose(da["latitude"].values, lat)
                and np.allclose(da["longitude"].values, lon)
            )
            if not same:
                da = da.interp(latitude=lat, longitude=lon, kwargs={"fill_value": None})
            arr = da.transpose("latitude", "longitude").values.astype("float64")
        elif da.ndim == 0:
            arr = np.full(grid.shape, float(da))
        else:
            raise WindError(f"wind {name!r} has dims {da.dims}; expected (latitude, longitude) or a scalar")
    else:
        arr = np.asarray(value, dtype="float64")
        if arr.ndim == 0:
            arr = np.full(grid.shape, float(arr))
    if arr.shape != grid.shape:
        raise WindError(f"wind {name!r} has shape {arr.shape}; the grid is {grid.shape}")
    if not np.all(np.isfinite(arr)):
        raise WindError(f"wind {name!r} has {int((~np.isfinite(arr)).sum())} non-finite values on the grid")
    return arr


def _resolve_winds(u: Any, v: Any, winds: Any) -> tuple[Any, Any]:
    if winds is not None:
        if isinstance(winds, xr.Dataset):
            missing = [k for k in ("u", "v") if k not in winds]
            if missing:
                raise WindError(f"winds dataset lacks {missing}; has {list(winds.data_vars)}")
            return winds["u"], winds["v"]
        if isinstance(winds, Mapping):
            return winds["u"], winds["v"]
        raise WindError(f"winds must be an xarray.Dataset or a mapping with u, v; got {type(winds).__name__}")
    if u is None or v is None:
        raise WindError("pass u= and v= (m s-1, scalars or (latitude, longitude) fields) or winds=")
    return u, v


# ---------------------------------------------------------------------------- operator
class SimpleTransport:
    """Steady-state advection-diffusion-ventilation operator on a lat/lon grid.

    Parameters
    ----------
    grid : GridSpec
        The inversion grid; metrics in metres come from the sphere of radius
        :data:`~gosat_pipeline.grids.EARTH_RADIUS_M`.
    u, v : float, array (ny, nx) or DataArray (latitude, longitude), m s-1
        Eastward and northward (time-mean, boundary-layer) wind. DataArrays on another
        grid are interpolated; extra dims (e.g. time) are averaged.
    eddy_diffusivity : float, m2 s-1
        Horizontal eddy diffusivity :math:`K_h` (default :data:`DEFAULT_EDDY_DIFFUSIVITY`).
    ventilation_time : float, s
        :math:`\\tau` (default :data:`DEFAULT_VENTILATION_TIME`).
    surface_pressure : float, hPa
        Sets :math:`N_{air}` (:func:`dry_air_column`).

    Notes
    -----
    Finite-volume discretisation of

    .. math:: \\mathbf u \\cdot \\nabla c - K_h \\nabla^2 c + c/\\tau = F / N_{air}

    on cells of area :math:`A_P` (exact spherical area). For every face :math:`f` of
    cell :math:`P` with length :math:`L_f` and outward normal wind :math:`u_f` (mean of
    the two cell winds), the volume flux is :math:`Q_f = u_f L_f`. Advection is first-order
    upwind in advective form, :math:`\\frac{1}{A_P}\\sum_{Q_f<0} |Q_f| (c_P - c_{nb})`,
    which keeps the matrix an M-matrix (non-negative response to non-negative sources)
    for any wind field. Diffusion is central, :math:`\\frac{1}{A_P}\\sum_f K_h L_f
    (c_P - c_{nb}) / d_f` with :math:`d_f` the centre distance. Outside the domain the
    enhancement is zero (ghost cells with :math:`c = 0`): nothing flows in, and mass leaves
    through the boundary by advection and diffusion (zero-inflow boundaries). A grid
    spanning 360 degrees of longitude is periodic in longitude.

    With a discretely non-divergent wind (e.g. uniform ``u`` and ``v = 0``) the operator
    conserves mass exactly: emission = ventilation + outflow (:meth:`budget`).

    Attributes
    ----------
    matrix : scipy.sparse.csc_matrix, (ncell, ncell), s-1
    attrs : dict
        Parameters of the operator, written into every output.
    """

    def __init__(
        self,
        grid: GridSpec,
        u: Any,
        v: Any,
        *,
        eddy_diffusivity: float = DEFAULT_EDDY_DIFFUSIVITY,
        ventilation_time: float = DEFAULT_VENTILATION_TIME,
        surface_pressure: float = 1013.25,
    ) -> None:
        if not eddy_diffusivity >= 0:
            raise SchemaError(f"eddy_diffusivity must be >= 0 m2 s-1; got {eddy_diffusivity}")
        if not ventilation_time > 0:
            raise SchemaError(f"ventilation_time must be > 0 s; got {ventilation_time}")
        self.grid = grid
        self.u = _wind_field(u, grid, "u")
        self.v = _wind_field(v, grid, "v")
        self.eddy_diffusivity = float(eddy_diffusivity)
        self.ventilation_time = float(ventilation_time)
        self.surface_pressure = float(surface_pressure)
        self.n_air = dry_air_column(surface_pressure)
        self._faces = _faces(grid, self.u, self.v, self.eddy_diffusivity)
        self.area = grid.cell_area()
        self.matrix = _assemble(self._faces, self.area, self.ventilation_time)
        self._lu = splu(self.matrix)
        self.attrs: dict[str, Any] = {
            "transport_operator": "simple steady-state advection-diffusion-ventilation (DESIGN.md 5.2)",
            "transport_eddy_diffusivity_m2_s-1": self.eddy_diffusivity,
            "transport_ventilation_time_s": self.ventilation_time,
            "transport_surface_pressure_hPa": self.surface_pressure,
            "transport_dry_air_column_mol_m-2": self.n_air,
            "transport_wind_u_mean_m_s-1": float(self.u.mean()),
            "transport_wind_v_mean_m_s-1": float(self.v.mean()),
            "transport_wind_uniform": int(np.ptp(self.u) == 0 and np.ptp(self.v) == 0),
            "transport_boundaries": "zero inflow (c = 0 outside the domain)",
            **grid.to_attrs(),
        }
        logger.info(
            "simple transport operator: %d cells, %d non-zeros, K_h=%.3g m2/s, tau=%.3g s",
            grid.size, self.matrix.nnz, self.eddy_diffusivity, self.ventilation_time,
        )  # fmt: skip

    def _rhs(self, flux: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        f = np.asarray(flux, dtype="float64")
        ny, nx = self.grid.shape
        if f.shape[-2:] == (ny, nx):
            lead = f.shape[:-2]
            return f.reshape(-1, ny * nx).T, (*lead, ny, nx)
        if f.shape[0] == ny * nx:
            return f.reshape(ny * nx, -1), f.shape
        raise SchemaError(f"flux has shape {f.shape}; expected (..., {ny}, {nx}) or ({ny * nx}, ...)")

    def solve(self, flux: Any) -> np.ndarray:
        """Column enhancement (mol mol-1) of an emission flux field.

        Parameters
        ----------
        flux : array (ny, nx), (k, ny, nx) or (ncell, k), mol m-2 s-1

        Returns
        -------
        numpy.ndarray
            Same shape as ``flux``, mol mol-1.
        """
        rhs, shape = self._rhs(flux)
        c = self._lu.solve(np.ascontiguousarray(rhs) / self.n_air)
        if len(shape) >= 2 and shape[-2:] == self.grid.shape:
            return c.T.reshape(shape)
        return c.reshape(shape)

    def response(self, patterns: Any) -> np.ndarray:
        """Responses to many emission patterns at once (one factorisation, many solves).

        Parameters
        ----------
        patterns : array (k, ny, nx), mol m-2 s-1

        Returns
        -------
        numpy.ndarray (k, ny, nx), mol mol-1
        """
        p = np.asarray(patterns, dtype="float64")
        if p.ndim == 2:
            p = p[None]
        return self.solve(p)

    def footprints(self, cells: Any) -> np.ndarray:
        """Sensitivity of the enhancement in ``cells`` to the flux in every cell.

        Parameters
        ----------
        cells : array of int, (k,)
            Flat (row-major) cell indices of the receptors.

        Returns
        -------
        numpy.ndarray (k, ny, nx), m2 s mol-1
            :math:`\\partial c_{cell} / \\partial F` (rows of :math:`M^{-1} / N_{air}`),
            computed with the transposed factorisation.
        """
        cells = np.atleast_1d(np.asarray(cells, dtype="int64"))
        e = np.zeros((self.grid.size, cells.size))
        e[cells, np.arange(cells.size)] = 1.0
        rows = self._lu.solve(e, trans="T") / self.n_air
        return rows.T.reshape(cells.size, *self.grid.shape)

    def budget(self, c: Any) -> dict[str, float]:
        """Mass budget of an enhancement field, mol s-1.

        Parameters
        ----------
        c : array (ny, nx), mol mol-1

        Returns
        -------
        dict
            ``ventilation`` (sum of N c / tau A), ``advective_outflow`` and
            ``diffusive_outflow`` through the domain boundary, and ``convergence``
            (sum of N c_P times the net volume inflow of cell P, zero for a discretely
            non-divergent wind). Emission = ventilation + outflows + convergence: the
            advective form :math:`u \\cdot \\nabla c = \\nabla \\cdot (u c) - c \\nabla \\cdot u`
            treats air converging into a cell as carrying its own enhancement away.
        """
        c = np.asarray(c, dtype="float64").reshape(self.grid.shape)
        fc = self._faces
        cflat = c.ravel()
        adv = diff = conv = 0.0
        for f in fc:
            p = f["cell"]
            out_bnd = (f["nb"] < 0) & (f["q"] > 0)
            adv += float(np.sum(f["q"][out_bnd] * cflat[p[out_bnd]]))
            bnd = f["nb"] < 0
            diff += float(np.sum(f["d"][bnd] * cflat[p[bnd]]))
            conv -= float(np.sum(f["q"] * cflat[p]))
        n = self.n_air
        return {
            "ventilation": float(np.sum(c * self.area)) * n / self.ventilation_time,
            "advective_outflow": adv * n,
            "diffusive_outflow": diff * n,
            "convergence": conv * n,
        }


def _faces(grid: GridSpec, u: np.ndarray, v: np.ndarray, kh: float) -> list[dict[str, np.ndarray]]:
    """Per cell and face direction: neighbour index, outward volume flux Q, diffusive conductance."""
    ny, nx = grid.shape
    idx = np.arange(ny * nx).reshape(ny, nx)
    r = EARTH_RADIUS_M
    dlat = np.deg2rad(np.diff(grid.lat_edges))  # (ny,)
    dlon = np.deg2rad(np.diff(grid.lon_edges))  # (nx,)
    latc = np.deg2rad(grid.lat)
    lonc = np.deg2rad(grid.lon)
    cos_edge = np.cos(np.deg2rad(grid.lat_edges))  # (ny+1,)
    periodic = grid.is_global_lon
    out = []
    # east (+x) and west (-x) faces: length R dlat, centre distance R cos(lat) dlon_c
    for step in (1, -1):
        j = np.arange(nx)
        jn = j + step
        if periodic:
            jn = jn % nx
        has = (jn >= 0) & (jn < nx)
        jn_c = np.clip(jn, 0, nx - 1)
        length = np.broadcast_to((r * dlat)[:, None], (ny, nx))
        un = np.where(has[None, :], 0.5 * (u + u[:, jn_c]), u) * step
        dl = np.where(has, np.abs(lonc[jn_c] - lonc), dlon)
        if periodic:
            dl = np.where(dl > np.pi, 2 * np.pi - dl, dl)
            dl = np.where(has, dl, dlon)
        dist = r * np.cos(latc)[:, None] * dl[None, :]
        nb = np.where(has[None, :], idx[:, jn_c], -1)
        out.append({"cell": idx.ravel(), "nb": nb.ravel(), "q": (un * length).ravel(),
                    "d": (kh * length / dist).ravel()})  # fmt: skip
    # north (+y) and south (-y) faces: length R cos(lat_edge) dlon, distance R dlat_c
    for step in (1, -1):
        i = np.arange(ny)
        inb = i + step
        has = (inb >= 0) & (inb < ny)
        in_c = np.clip(inb, 0, ny - 1)
        edge = i + 1 if step == 1 else i
        length = r * cos_edge[edge][:, None] * dlon[None, :]
        length = np.maximum(length, 0.0)
        vn = np.where(has[:, None], 0.5 * (v + v[in_c, :]), v) * step
        dist = np.where(has, r * np.abs(latc[in_c] - latc), r * dlat)
        nb = np.where(has[:, None], idx[in_c, :], -1)
        out.append({"cell": idx.ravel(), "nb": nb.ravel(), "q": (vn * length).ravel(),
                    "d": (kh * length / dist[:, None]).ravel()})  # fmt: skip
    return out


def _assemble(faces: list[dict[str, np.ndarray]], area: np.ndarray, tau: float) -> sp.csc_matrix:
    """The operator matrix (s-1): rows = cells, upwind advective form + diffusion + decay."""
    a = area.ravel()
    n = a.size
    diag = np.full(n, 1.0 / tau)
    rows, cols, vals = [], [], []
    for f in faces:
        p, nb, q, d = f["cell"], f["nb"], f["q"], f["d"]
        inflow = np.where(q < 0, -q, 0.0)
        diag += (inflow + d) / a[p]
        has = nb >= 0
        off = -(inflow + d)[has] / a[p[has]]
        rows.append(p[has])
        cols.append(nb[has])
        vals.append(off)
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    m = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return m.tocsc()


# ---------------------------------------------------------------------------- observations
def column_sensitivity(l3: xr.Dataset) -> xr.DataArray:
    """Per-observation boundary-layer column sensitivity (DESIGN.md 5.1).

    Parameters
    ----------
    l3 : xarray.Dataset
        Gridded observations with ``averaging_kernel_pbl`` (time, latitude, longitude).

    Returns
    -------
    xarray.DataArray
        Same dims, units "1": :math:`\\bar a_{PBL}`, 1.0 where missing or non-finite
        (products without an averaging kernel).
    """
    if "averaging_kernel_pbl" in l3:
        ak = l3["averaging_kernel_pbl"]
        ak = ak.where(np.isfinite(ak), 1.0)
    else:
        ak = xr.ones_like(l3["xgas_mean"], dtype="float64")
    ak = ak.rename("column_sensitivity")
    ak.attrs = {"units": "1", "long_name": "boundary-layer column averaging-kernel sensitivity (1 where missing)"}
    return ak


def period_label(start: Any, end: Any) -> str:
    """ISO 8601 label of the interval [start, end).

    ``"2020"`` for a calendar year, ``"2020-03"`` for a calendar month, ``"2020-03-05"``
    for one day, otherwise ``"2020-03-05/2020-04-17"`` (start/end).
    """
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    if s == s.normalize() and e == e.normalize():
        if s.month == 1 and s.day == 1 and e == s + pd.DateOffset(years=1):
            return f"{s.year:04d}"
        if s.day == 1 and e == s + pd.DateOffset(months=1):
            return f"{s.year:04d}-{s.month:02d}"
        if e == s + pd.Timedelta(days=1):
            return s.strftime("%Y-%m-%d")
        return f"{s.strftime('%Y-%m-%d')}/{e.strftime('%Y-%m-%d')}"
    return f"{s.isoformat()}/{e.isoformat()}"


def _time_bins(l3: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (datetime64) of every time bin of an L3 dataset."""
    t = pd.DatetimeIndex(l3["time"].values)
    if "time_bounds" in l3:
        b = l3["time_bounds"].values
        return pd.DatetimeIndex(b[:, 0]).values, pd.DatetimeIndex(b[:, 1]).values
    if t.size > 1:
        freq = pd.infer_freq(t)
        if freq is not None:
            return t.values, (t + pd.tseries.frequencies.to_offset(freq)).values
        step = np.median(np.diff(t.values))
        return t.values, (t + step).values
    return t.values, (t + pd.Timedelta(days=1)).values


def observation_vector(
    obs: xr.Dataset,
    *,
    sigma_model: float | None = None,
    use_weighted_mean: bool = True,
    correlation_length_km: float | None = None,
) -> xr.Dataset:
    """Super-observations (non-empty L3 cells) and their error terms.

    Parameters
    ----------
    obs : xarray.Dataset
        L3 gridded dataset (DESIGN.md 4), attr ``gas``.
    sigma_model : float, optional
        Model (transport and representation) error, canonical gas units; default
        :data:`DEFAULT_SIGMA_MODEL` for the gas.
    use_weighted_mean : bool
        ``y`` from ``xgas_weighted_mean`` (else ``xgas_mean``), falling back per cell
        to the other where one is missing.
    correlation_length_km : float, optional
        If given, the model-error part is correlated between observations of the same
        time bin with :math:`\\rho = \\exp(-d / L)` (great-circle distance d); stored as
        the attribute ``obs_correlation_length_km`` and applied by the inversion.

    Returns
    -------
    xarray.Dataset, dims ``obs``
        ``y`` (gas units), ``sigma`` (total 1-sigma, gas units), ``sigma_retrieval``
        (per sounding), ``sigma_model``, ``n`` (soundings), ``column_sensitivity`` (1),
        ``latitude``, ``longitude``, ``time`` (bin start), ``time_index``, ``cell``
        (flat cell index).

    Notes
    -----
    .. math:: S_{o,ii} = \\sigma_{retrieval,i}^2 / n_i + \\sigma_{model}^2

    (DESIGN.md 5.3) with :math:`\\sigma_{retrieval}` = ``xgas_uncertainty_mean`` (the mean
    single-sounding uncertainty), or ``xgas_std`` where that is missing.
    """
    gas = str(obs.attrs.get("gas", "")).upper()
    units = gas_units(gas)
    sigma_model = DEFAULT_SIGMA_MODEL[gas] if sigma_model is None else float(sigma_model)
    if sigma_model < 0:
        raise SchemaError(f"sigma_model must be >= 0 {units}; got {sigma_model}")
    first, second = ("xgas_weighted_mean", "xgas_mean") if use_weighted_mean else ("xgas_mean", "xgas_weighted_mean")
    if first not in obs and second not in obs:
        raise SchemaError(f"gridded dataset has neither xgas_mean nor xgas_weighted_mean; has {list(obs.data_vars)}")
    dims = ("time", "latitude", "longitude")
    val = obs[first] if first in obs else obs[second]
    val = val.transpose(*dims).values.astype("float64")
    if second in obs and first in obs:
        val = np.where(np.isfinite(val), val, obs[second].transpose(*dims).values)
    n = obs["n_soundings"].transpose(*dims).values.astype("float64")
    sig_r = np.full(val.shape, np.nan)
    for name in ("xgas_std", "xgas_uncertainty_mean"):  # later entries take precedence
        if name in obs:
            s = obs[name].transpose(*dims).values.astype("float64")
            sig_r = np.where(np.isfinite(s) & (s > 0), s, sig_r)
    sig_r = np.where(np.isfinite(sig_r), sig_r, 0.0)
    ak = column_sensitivity(obs).transpose(*dims).values
    ok = (n > 0) & np.isfinite(val)
    ti, li, lj = np.nonzero(ok)
    grid = GridSpec.from_coords(obs["latitude"].values, obs["longitude"].values)
    nn = n[ok]
    var = sig_r[ok] ** 2 / nn + sigma_model**2
    if np.any(var <= 0):
        raise SchemaError("observation error variance is zero: give sigma_model > 0 or xgas_uncertainty_mean")
    starts, _ends = _time_bins(obs)
    ds = xr.Dataset(
        {
            "y": ("obs", val[ok], {"units": units, "long_name": f"{gas} super-observation ({first})"}),
            "sigma": ("obs", np.sqrt(var), {"units": units, "long_name": "total 1-sigma observation error"}),
            "sigma_retrieval": ("obs", sig_r[ok], {"units": units, "long_name": "single-sounding retrieval error"}),
            "sigma_model": ("obs", np.full(nn.size, sigma_model), {"units": units, "long_name": "model error"}),
            "n": ("obs", nn.astype("int64"), {"units": "1", "long_name": "soundings in the super-observation"}),
            "column_sensitivity": ("obs", ak[ok], {"units": "1", "long_name": "boundary-layer AK sensitivity"}),
            "latitude": ("obs", grid.lat[li], {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": ("obs", grid.lon[lj], {"units": "degrees_east", "standard_name": "longitude"}),
            "time": ("obs", starts[ti], {"long_name": "start of the time bin"}),
            "time_index": ("obs", ti.astype("int64"), {"units": "1", "long_name": "index of the L3 time bin"}),
            "cell": ("obs", (li * grid.shape[1] + lj).astype("int64"), {"units": "1", "long_name": "flat cell index"}),
        },
        attrs={"gas": gas, "sigma_model": sigma_model, "use_weighted_mean": int(use_weighted_mean),
               "obs_correlation_length_km": float(correlation_length_km or 0.0)},  # fmt: skip
    )
    logger.info("observation vector: %d super-observations from %d soundings", nn.size, int(nn.sum()))
    return ds


# ---------------------------------------------------------------------------- footprints
def read_footprints(footprints: str | Path | xr.Dataset, gas: str) -> tuple[xr.DataArray, xr.Dataset]:
    """Read external footprints and convert them to m2 s mol-1.

    Parameters
    ----------
    footprints : path or xarray.Dataset
        netCDF with a variable ``footprint`` (or the only data variable) on dims
        ``(obs, latitude, longitude)`` and coordinates ``obs_latitude``,
        ``obs_longitude``, ``obs_time`` on ``obs``. Units attribute: one of
        :data:`FOOTPRINT_UNITS`, or ``"<gas unit> (kg m-2 s-1)-1"`` (e.g.
        ``"ppb (kg m-2 s-1)-1"``, sensitivity to a mass flux).
    gas : {"CO2", "CH4"}

    Returns
    -------
    (footprint, coords)
        footprint (obs, latitude, longitude) in m2 s mol-1, and the obs coordinates.
    """
    ds = xr.open_dataset(footprints) if isinstance(footprints, str | Path) else footprints
    where = str(footprints) if isinstance(footprints, str | Path) else "footprints dataset"
    name = "footprint" if "footprint" in ds else (list(ds.data_vars)[0] if len(ds.data_vars) == 1 else None)
    if name is None:
        raise SchemaError(f"{where}: no 'footprint' variable; has {list(ds.data_vars)}")
    fp = ds[name]
    if set(fp.dims) != {"obs", "latitude", "longitude"}:
        raise SchemaError(f"{where}: {name!r} has dims {fp.dims}; expected (obs, latitude, longitude)")
    missing = [c for c in ("obs_latitude", "obs_longitude", "obs_time") if c not in ds.variables]
    if missing:
        raise SchemaError(f"{where}: missing observation coordinates {missing} on dim 'obs'")
    units = str(fp.attrs.get("units", "")).strip()
    gu = gas_units(gas)
    if units in FOOTPRINT_UNITS:
        factor = FOOTPRINT_UNITS[units]
    elif units.replace(" ", "") == f"{gu}(kgm-2s-1)-1".replace(" ", "") or units == f"{gu} m2 s kg-1":
        # (gas unit) per (kg m-2 s-1) -> (mol/mol) per (mol m-2 s-1)
        factor = GAS_UNIT_TO_MOLMOL[gas.upper()] * MOLAR_MASS[gas.upper()]
    else:
        allowed = [*FOOTPRINT_UNITS, f"{gu} (kg m-2 s-1)-1"]
        raise SchemaError(f"{where}: footprint units {units!r} not understood; allowed: {allowed}")
    fp = (fp.transpose("obs", "latitude", "longitude").astype("float64") * factor).load()
    fp.attrs = {"units": "m2 s mol-1", "long_name": "column sensitivity to surface flux"}
    coords = ds[["obs_latitude", "obs_longitude", "obs_time"]].load()
    return fp, coords


def _match_footprints(
    fp: xr.DataArray, fcoords: xr.Dataset, ov: xr.Dataset, grid: GridSpec, obs: xr.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """Footprint (obs, cell) rows for each super-observation; mean of footprints per (bin, cell).

    Returns the (m_kept, ncell) sensitivities and the indices of the kept observations.
    """
    fgrid = GridSpec.from_coords(fp["latitude"].values, fp["longitude"].values)
    if fgrid.shape != grid.shape or not np.allclose(fgrid.lat, grid.lat) or not np.allclose(fgrid.lon, grid.lon):
        raise SchemaError(
            f"footprint grid {fgrid.shape} ({fgrid.bbox}) differs from the inversion grid "
            f"{grid.shape} ({grid.bbox}); regrid the footprints to the inversion grid first"
        )
    starts, ends = _time_bins(obs)
    ft = pd.DatetimeIndex(fcoords["obs_time"].values).values
    tbin = np.searchsorted(starts, ft, side="right") - 1
    tbin = np.where((tbin >= 0) & (ft < ends[np.clip(tbin, 0, None)]), tbin, -1)
    fcell = grid.flat_index(fcoords["obs_latitude"].values, fcoords["obs_longitude"].values)
    key_f = np.where((tbin >= 0) & (fcell >= 0), tbin * grid.size + fcell, -1)
    key_o = ov["time_index"].values * grid.size + ov["cell"].values
    flat = fp.values.reshape(fp.sizes["obs"], -1)
    rows, kept = [], []
    for k, key in enumerate(key_o):
        sel = np.flatnonzero(key_f == key)
        if sel.size:
            rows.append(flat[sel].mean(axis=0))
            kept.append(k)
    if len(kept) < key_o.size:
        warnings.warn(
            f"{key_o.size - len(kept)} of {key_o.size} super-observations have no footprint and are dropped",
            stacklevel=3,
        )
    mat = np.array(rows) if rows else np.zeros((0, grid.size))
    return mat, np.asarray(kept, dtype="int64")


# ---------------------------------------------------------------------------- state
def _periods(starts: np.ndarray, ends: np.ndarray, split: str | None) -> tuple[np.ndarray, list[str]]:
    """Emission period index of each time bin, and the period labels."""
    s = pd.DatetimeIndex(starts)
    if split is None or s.size == 0:
        lab = period_label(s.min(), pd.DatetimeIndex(ends).max()) if s.size else "all"
        return np.zeros(s.size, dtype="int64"), [lab]
    off = pd.tseries.frequencies.to_offset(split)
    pstart = [off.rollback(t) if hasattr(off, "rollback") and not isinstance(off, pd.offsets.Tick)
              else t.floor(off) for t in s]  # fmt: skip
    uniq = sorted(set(pstart))
    labels = [period_label(p, p + off) for p in uniq]
    index = np.array([uniq.index(p) for p in pstart], dtype="int64")
    return index, labels


def _flux_sectors(prior_flux: xr.DataArray) -> tuple[np.ndarray, list[str]]:
    """Prior flux as (nsector, ny, nx) kg m-2 s-1 and the sector names ('total' if none)."""
    if "sector" in prior_flux.dims:
        f = prior_flux.transpose("sector", "latitude", "longitude").values.astype("float64")
        return f, [str(s) for s in prior_flux["sector"].values]
    return prior_flux.transpose("latitude", "longitude").values.astype("float64")[None], ["total"]


def _check_grid(da: xr.DataArray, grid: GridSpec, name: str) -> None:
    lat, lon = da["latitude"].values, da["longitude"].values
    if lat.size != grid.shape[0] or lon.size != grid.shape[1] or not (
        np.allclose(lat, grid.lat) and np.allclose(lon, grid.lon)
    ):
        raise SchemaError(
            f"{name} is on a grid ({lat.size} x {lon.size}) that differs from the observations' grid "
            f"{grid.shape}; regrid it to the inversion grid first"
        )


def _background_columns(
    background: str, tidx: np.ndarray, y: np.ndarray, starts: np.ndarray, ends: np.ndarray, units: str
) -> tuple[list[np.ndarray], list[tuple[Any, ...]], np.ndarray, list[float]]:
    """Background Jacobian columns, their state metadata, the per-obs reference and per-element reference.

    Background elements are offsets from a per-time-bin reference (median of the bin's
    super-observations), so their prior mean is 0 with a wide sigma.
    """
    m = y.size
    ref = np.zeros(m)
    cols: list[np.ndarray] = []
    meta: list[tuple[Any, ...]] = []
    bref: list[float] = []
    if background == "per_time":
        for t in np.unique(tidx):
            ref[tidx == t] = np.median(y[tidx == t])
        for t in range(starts.size):
            sel = tidx == t
            cols.append(sel.astype("float64"))
            meta.append(("background", "", "", "total", period_label(starts[t], ends[t]), 0.0, units, np.nan, np.nan))
            bref.append(float(ref[sel][0]) if sel.any() else 0.0)
    elif background == "single":
        ref[:] = np.median(y) if m else 0.0
        cols.append(np.ones(m))
        lab = period_label(pd.DatetimeIndex(starts).min(), pd.DatetimeIndex(ends).max()) if starts.size else "all"
        meta.append(("background", "", "", "total", lab, 0.0, units, np.nan, np.nan))
        bref.append(float(ref[0]) if m else 0.0)
    return cols, meta, ref, bref


def build_jacobian(
    obs: xr.Dataset,
    prior_flux: xr.DataArray,
    masks: xr.DataArray,
    *,
    u: Any = None,
    v: Any = None,
    winds: Any = None,
    eddy_diffusivity: float = DEFAULT_EDDY_DIFFUSIVITY,
    ventilation_time: float = DEFAULT_VENTILATION_TIME,
    surface_pressure: float = 1013.25,
    footprints: str | Path | xr.Dataset | None = None,
    background: str = "per_time",
    sigma_model: float | None = None,
    use_weighted_mean: bool = True,
    period_split: str | None = None,
    obs_correlation_length_km: float | None = None,
) -> xr.DataArray:
    """Jacobian of the super-observations with respect to the state vector.

    Parameters
    ----------
    obs : xarray.Dataset
        L3 gridded observations (DESIGN.md 4), attr ``gas``.
    prior_flux : xarray.DataArray (latitude, longitude) [or (sector, latitude, longitude)]
        Prior emission flux, kg m-2 s-1, on the observations' grid.
    masks : xarray.DataArray (region, latitude, longitude)
        Region fractions in [0, 1]; coords ``region`` (ISO-3) and optionally ``region_name``.
    u, v, winds
        Winds for :class:`SimpleTransport` (m s-1): scalars / fields, or a Dataset with
        ``u`` and ``v``. Not needed with ``footprints``.
    eddy_diffusivity, ventilation_time, surface_pressure
        Parameters of :class:`SimpleTransport` (m2 s-1, s, hPa).
    footprints : path or Dataset, optional
        External sensitivities (:func:`read_footprints`) instead of the simple operator.
    background : {"per_time", "single", "none"}
        Background offsets: one per L3 time bin, one in all, or none.
    sigma_model, use_weighted_mean, obs_correlation_length_km
        Passed to :func:`observation_vector`.
    period_split : str, optional
        Pandas frequency ("YS", "QS", "MS") splitting the emission state in time; one
        emission period for the whole record by default.

    Returns
    -------
    xarray.DataArray (obs, state), name ``jacobian``
        :math:`K_{ij} = \\partial y_i / \\partial x_j` in the gas's canonical units per
        state unit. Emission elements are scale factors of the prior (units 1): the
        column is :math:`\\bar a_{PBL} \\, c` of the element's prior emissions (only for
        observations in the element's period). Background elements are offsets in gas
        units: their column is 1 for the observations of their time bin(s).

        Observation coords: ``obs_value`` (y), ``obs_sigma`` (total sigma),
        ``obs_sigma_retrieval``, ``obs_sigma_model``, ``obs_n``, ``obs_time``,
        ``obs_latitude``, ``obs_longitude``, ``obs_time_index``, ``obs_cell``,
        ``obs_column_sensitivity``.
        State coords: ``state_kind`` ("emission" | "background"), ``state_region`` (ISO-3,
        "" for background), ``state_region_name``, ``state_sector``, ``state_period``,
        ``state_prior_emission`` (kg yr-1; 0 for background), ``state_units``,
        ``state_latitude``/``state_longitude`` (emission-weighted centroid, degrees).
        Attrs: gas, units, operator type and every transport parameter.
    """
    gas = str(obs.attrs.get("gas", "")).upper()
    units = gas_units(gas)
    grid = GridSpec.from_coords(obs["latitude"].values, obs["longitude"].values)
    _check_grid(prior_flux, grid, "prior_flux")
    _check_grid(masks, grid, "region masks")
    if background not in ("per_time", "single", "none"):
        raise SchemaError(f"background={background!r}; allowed: 'per_time', 'single', 'none'")
    ov = observation_vector(obs, sigma_model=sigma_model, use_weighted_mean=use_weighted_mean,
                            correlation_length_km=obs_correlation_length_km)  # fmt: skip
    starts, ends = _time_bins(obs)
    pindex, plabels = _periods(starts, ends, period_split)
    flux, sectors = _flux_sectors(prior_flux)
    fr = masks.transpose("region", "latitude", "longitude").values.astype("float64")
    regions = [str(r) for r in masks["region"].values]
    names = [str(x) for x in masks["region_name"].values] if "region_name" in masks.coords else regions
    area = grid.cell_area()
    # Emission patterns per (region, sector) in mol m-2 s-1.
    pats = (fr[:, None] * flux[None]).reshape(-1, *grid.shape) / MOLAR_MASS[gas]
    prior_kg_yr = (fr[:, None] * flux[None] * area).sum(axis=(-2, -1)).ravel() * SECONDS_PER_YEAR
    w = (fr[:, None] * flux[None] * area).reshape(len(regions) * len(sectors), -1)
    lat2d, lon2d = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    wsum = np.where(w.sum(1) > 0, w.sum(1), 1.0)
    cen_lat = (w * lat2d.ravel()).sum(1) / wsum
    cen_lon = (w * lon2d.ravel()).sum(1) / wsum
    attrs: dict[str, Any]
    if footprints is not None:
        fp, fcoords = read_footprints(footprints, gas)
        sens, kept = _match_footprints(fp, fcoords, ov, grid, obs)
        ov = ov.isel(obs=kept)
        # d(c_i)/d(scale_rs) = sum_cells fp_i(cell) * pattern_rs(cell)
        resp_obs = sens @ pats.reshape(pats.shape[0], -1).T  # (m, nrs) mol/mol
        attrs = {"transport_operator": "external footprints",
                 "footprints_source": str(footprints) if isinstance(footprints, str | Path) else "dataset"}  # fmt: skip
    else:
        uu, vv = _resolve_winds(u, v, winds)
        op = SimpleTransport(grid, uu, vv, eddy_diffusivity=eddy_diffusivity,
                             ventilation_time=ventilation_time, surface_pressure=surface_pressure)  # fmt: skip
        resp = op.response(pats).reshape(pats.shape[0], -1)  # (nrs, ncell) mol/mol
        resp_obs = resp[:, ov["cell"].values].T if ov.sizes["obs"] else np.zeros((0, pats.shape[0]))
        attrs = dict(op.attrs)
    resp_obs = resp_obs / GAS_UNIT_TO_MOLMOL[gas] * ov["column_sensitivity"].values[:, None]
    m = ov.sizes["obs"]
    obs_p = pindex[ov["time_index"].values] if m else np.zeros(0, dtype="int64")
    cols, meta = [], []
    nrs = len(regions) * len(sectors)
    for p, plab in enumerate(plabels):
        inp = (obs_p == p).astype("float64")
        for k in range(nrs):
            r, s = divmod(k, len(sectors))
            cols.append(resp_obs[:, k] * inp)
            meta.append(("emission", regions[r], names[r], sectors[s], plab, prior_kg_yr[k], "1",
                         cen_lat[k], cen_lon[k]))  # fmt: skip
    tidx = ov["time_index"].values
    bcols, bmeta, ref, bref = _background_columns(background, tidx, ov["y"].values, starts, ends, units)
    cols += bcols
    meta += bmeta
    bref = [0.0] * (len(meta) - len(bmeta)) + bref
    kmat = np.column_stack(cols) if cols else np.zeros((m, 0))
    kind, reg, rname, sec, per, pe, sunits, slat, slon = (list(c) for c in zip(*meta, strict=True))
    coords = {
        "state_kind": ("state", np.array(kind, dtype=str), {"long_name": "emission scale factor or background offset"}),
        "state_region": ("state", np.array(reg, dtype=str), {"long_name": "region code (ISO 3166-1 alpha-3)"}),
        "state_region_name": ("state", np.array(rname, dtype=str), {"long_name": "region name"}),
        "state_sector": ("state", np.array(sec, dtype=str), {"long_name": "emission sector"}),
        "state_period": ("state", np.array(per, dtype=str), {"long_name": "ISO 8601 period label"}),
        "state_prior_emission": ("state", np.array(pe, dtype="float64"),
                                 {"units": "kg yr-1", "long_name": "prior emission of the element"}),
        "state_units": ("state", np.array(sunits, dtype=str), {"long_name": "units of the state element"}),
        "state_latitude": ("state", np.array(slat, dtype="float64"),
                           {"units": "degrees_north", "long_name": "emission-weighted centroid latitude"}),
        "state_longitude": ("state", np.array(slon, dtype="float64"),
                            {"units": "degrees_east", "long_name": "emission-weighted centroid longitude"}),
    }  # fmt: skip
    coords["obs_background_reference"] = ("obs", ref, {"units": units, "long_name":
                                          "reference background subtracted before the inversion (median of the bin)"})
    coords["state_background_reference"] = ("state", np.array(bref), {"units": units, "long_name":
                                            "reference the background offset is relative to (0 for emissions)"})
    for name in ("y", "sigma", "sigma_retrieval", "sigma_model", "n", "time", "latitude", "longitude",
                 "time_index", "cell", "column_sensitivity"):  # fmt: skip
        target = "obs_value" if name == "y" else f"obs_{name}"
        coords[target] = ("obs", ov[name].values, dict(ov[name].attrs))
    jac = xr.DataArray(kmat, dims=("obs", "state"), coords=coords, name="jacobian")
    jac.attrs = {
        "units": units,
        "comment": f"d(observation)/d(state element): {units} per unit scale factor for emission elements; "
        f"{units} per {units} (i.e. 1) for background-offset elements (see state_units)",
        "long_name": f"Jacobian of {gas} super-observations with respect to the state vector",
        "gas": gas,
        "obs_units": units,
        "background": background,
        "period_split": period_split or "none",
        "sigma_model": float(ov.attrs["sigma_model"]),
        "use_weighted_mean": int(use_weighted_mean),
        "obs_correlation_length_km": float(obs_correlation_length_km or 0.0),
        **attrs,
    }
    logger.info("Jacobian: %d observations x %d state elements (%s)", m, kmat.shape[1],
                attrs["transport_operator"])  # fmt: skip
    return jac
