"""An atmosphere that is not the inversion's forward model: truths for non-identical twins.

An identical twin (the truth made by the operator the inversion uses) only tests the
algebra. The experiments that count (DESIGN.md 7) make their truth with a *different*,
time-dependent transport and let the inversion meet transport-model error. This module
provides the pieces:

- :func:`make_monsoon_winds`: ERA5-like 6-hourly winds on pressure levels over Southeast
  Asia that reverse with the monsoon (north-easterly in boreal winter, south-westerly in
  summer north of the equator; the opposite pattern south of it), with a zonal shear
  towards the Pacific and resolved synoptic eddies (a divergence-free random field that
  decorrelates over about two days).
- :class:`TruthAtmosphere`: a semi-Lagrangian boundary-layer tracer model on its own,
  finer grid with hourly steps. It differs from the inversion's operator
  (:mod:`gosat_pipeline.transport`) in everything a real model would: numerics
  (semi-Lagrangian, bilinear departure points, explicit diffusion, not implicit upwind
  finite volumes), resolution, time step, eddy diffusivity, a ventilation time that
  varies in space (shorter over land, where convection vents the boundary layer), a
  boundary-layer wind that is not the pressure-weighted 1000-850 hPa mean the inversion
  reads (stronger and veered), and unresolved wind noise that is not in the wind file.
- :func:`background_field`: the free-tropospheric background column with a seasonal cycle,
  a curved latitude gradient and day-to-day synoptic variation (not the plane the
  inversion estimates).

References
----------
Staniforth, A. and Cote, J. (1991): Semi-Lagrangian integration schemes for atmospheric
models - a review, Mon. Wea. Rev. 119, 2206-2223.
Chang, C.-P. et al. (2005): Annual cycle of Southeast Asia - Maritime Continent rainfall
and the asymmetric monsoon transition, J. Climate 18, 287-301 (the monsoon wind regimes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.grids import EARTH_RADIUS_M, GridSpec
from gosat_pipeline.params import STANDARD_SURFACE_PRESSURE
from gosat_pipeline.schema import GAS_UNIT_TO_MOLMOL, MOLAR_MASS

__all__ = [
    "TruthAtmosphere",
    "background_field",
    "make_monsoon_winds",
    "monsoon_climatology",
]

logger = logging.getLogger(__name__)

_G0 = 9.80665
#: Pressure levels (hPa) of the ERA5-like wind files, and each level's speed factor
#: relative to 850 hPa (surface friction slows the lowest levels).
WIND_LEVELS: tuple[float, ...] = (1000.0, 925.0, 850.0)
_LEVEL_FACTOR = {1000.0: 0.7, 925.0: 0.9, 850.0: 1.0}


def _season(times: pd.DatetimeIndex) -> np.ndarray:
    """+1 in mid-January (north-east monsoon) ... -1 in mid-July (south-west monsoon)."""
    doy = times.day_of_year.values + times.hour.values / 24.0
    return np.cos(2.0 * np.pi * (doy - 15.0) / 365.25)


def monsoon_climatology(lat: np.ndarray, lon: np.ndarray, times: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Seasonal-mean 850 hPa wind over Southeast Asia, m s-1, shape (time, lat, lon).

    North of the equator the wind is north-easterly in boreal winter (u = -6, v = -4 m s-1)
    and south-westerly in summer (u = +8, v = +2); south of it north-westerly in austral
    summer and south-easterly trades in winter; a tanh blend across the equator and an
    easterly shear east of 125 E. The annual mean is close to zero over Indochina: one
    steady operator from it would be mostly diffusion.
    """
    s = _season(times)[:, None, None]
    la = np.asarray(lat, dtype="float64")[None, :, None]
    lo = np.asarray(lon, dtype="float64")[None, None, :]
    north = 0.5 * (1.0 + np.tanh((la - 2.0) / 6.0))
    u = north * (1.0 - 7.0 * s) + (1.0 - north) * (-0.5 + 4.5 * s)
    v = north * (-1.0 - 3.0 * s) + (1.0 - north) * (1.0 - 2.0 * s)
    u = u - 2.0 * np.clip((lo - 125.0) / 20.0, 0.0, None)
    return u, np.broadcast_to(v, u.shape).copy()


@dataclass
class _Eddies:
    """Divergence-free random eddies: a streamfunction of Fourier modes with AR(1) amplitudes."""

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray  # (n_times, n_modes)

    @classmethod
    def draw(
        cls,
        n_times: int,
        dt_hours: float,
        *,
        rms: float,
        decorrelation_hours: float,
        wavelengths_km: tuple[float, float],
        n_modes: int,
        rng: np.random.Generator,
    ) -> _Eddies:
        lam = rng.uniform(*wavelengths_km, n_modes) * 1e3
        ang = rng.uniform(0.0, 2.0 * np.pi, n_modes)
        k = 2.0 * np.pi / lam
        kx, ky = k * np.cos(ang), k * np.sin(ang)
        phase = rng.uniform(0.0, 2.0 * np.pi, n_modes)
        rho = np.exp(-dt_hours / decorrelation_hours)
        amp = np.empty((n_times, n_modes))
        a = rng.standard_normal(n_modes)
        for t in range(n_times):
            a = rho * a + np.sqrt(1.0 - rho**2) * rng.standard_normal(n_modes)
            amp[t] = a
        # velocity of one mode has magnitude |k| psi: scale psi so the rms speed is `rms`
        amp *= rms / (k[None, :] * np.sqrt(n_modes / 2.0))
        return cls(kx, ky, phase, amp)

    def winds(self, lat: np.ndarray, lon: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        """u, v (lat, lon) at step t from psi = sum a sin(kx x + ky y + phase).

        x = R lon cos(lat_ref) and y = R lat, so every mode is separable (divergence-free
        in the x-y plane). The modes' unit-amplitude wind patterns are computed once per
        grid; each step is their amplitude-weighted sum (``np.einsum``, not a BLAS call:
        multithreaded BLAS on such small products is slow on a busy machine).
        """
        key = (lat.size, float(lat[0]), lon.size, float(lon[0]))
        if getattr(self, "_key", None) != key:
            lat_ref = np.deg2rad(float(np.mean(lat)))
            y = np.deg2rad(lat) * EARTH_RADIUS_M
            x = np.deg2rad(lon) * EARTH_RADIUS_M * np.cos(lat_ref)
            ey = np.exp(1j * np.outer(self.ky, y))  # (M, ny)
            ex = np.exp(1j * np.outer(self.kx, x) + 1j * self.phase[:, None])  # (M, nx)
            mode = (ey[:, :, None] * ex[:, None, :]).real  # (M, ny, nx): cos(kx x + ky y + phase)
            self._pu = -self.ky[:, None, None] * mode
            self._pv = self.kx[:, None, None] * mode
            self._key = key
        a = self.amp[t]
        return np.einsum("m,mij->ij", a, self._pu), np.einsum("m,mij->ij", a, self._pv)


def make_monsoon_winds(
    grid: GridSpec,
    start: str | pd.Timestamp,
    end: str | pd.Timestamp,
    *,
    freq: str = "6h",
    seed: int = 0,
    eddy_rms: float = 3.0,
) -> xr.Dataset:
    """ERA5-like monsoon winds on pressure levels (the "resolved" winds a run reads).

    Parameters
    ----------
    grid : GridSpec
        Horizontal grid of the file (e.g. 1 or 2.5 degrees over the domain plus a margin).
    start, end : timestamp-like
        Time range, end exclusive.
    freq : str
        Time step (pandas frequency), 6-hourly like ERA5 analyses.
    seed : int
        Seed of the synoptic eddies.
    eddy_rms : float, m s-1
        Rms speed of the resolved synoptic eddies.

    Returns
    -------
    xarray.Dataset
        ``u``, ``v`` (time, level, latitude, longitude), m s-1, levels
        :data:`WIND_LEVELS` hPa; the 1000-850 hPa pressure-weighted mean is the
        boundary-layer wind the pipeline reads (``winds.level: pbl``).
    """
    times = pd.date_range(start, end, freq=freq, inclusive="left")
    step_h = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).total_seconds() / 3600.0
    rng = np.random.default_rng(seed)
    eddies = _Eddies.draw(
        times.size, step_h, rms=eddy_rms, decorrelation_hours=48.0, wavelengths_km=(1200.0, 3500.0), n_modes=24, rng=rng
    )
    uc, vc = monsoon_climatology(grid.lat, grid.lon, times)
    ue = np.empty_like(uc)
    ve = np.empty_like(vc)
    for t in range(times.size):
        ue[t], ve[t] = eddies.winds(grid.lat, grid.lon, t)
    u850, v850 = uc + ue, vc + ve
    fac = np.array([_LEVEL_FACTOR[p] for p in WIND_LEVELS])[None, :, None, None]
    dims = ("time", "level", "latitude", "longitude")
    ds = xr.Dataset(
        {
            "u": (dims, (u850[:, None] * fac).astype("float32"), {"units": "m s-1", "standard_name": "eastward_wind"}),
            "v": (dims, (v850[:, None] * fac).astype("float32"), {"units": "m s-1", "standard_name": "northward_wind"}),
        },
        coords={
            "time": times.values,
            "level": ("level", np.array(WIND_LEVELS), {"units": "hPa"}),
            "latitude": ("latitude", grid.lat, {"units": "degrees_north"}),
            "longitude": ("longitude", grid.lon, {"units": "degrees_east"}),
        },
        attrs={
            "title": "synthetic ERA5-like monsoon winds (gosat_pipeline.testing.atmosphere)",
            "synthetic": "true",
            "seed": seed,
        },
    )
    return ds


def _pbl_mean(winds: xr.Dataset, name: str) -> xr.DataArray:
    """Pressure-weighted 1000-850 hPa mean (weights 37.5, 75, 37.5 hPa): what the pipeline reads."""
    w = xr.DataArray([37.5, 75.0, 37.5], dims="level", coords={"level": list(WIND_LEVELS)})
    da = winds[name].astype("float64").sel(level=list(WIND_LEVELS))
    return (da * w).sum("level") / w.sum()


@dataclass
class TruthAtmosphere:
    """A semi-Lagrangian boundary-layer column-enhancement model: the "true" transport.

    Parameters
    ----------
    grid : GridSpec
        The truth's own grid (finer than and larger than the inversion's, so that
        emissions outside the inversion domain flow into it).
    winds : xarray.Dataset
        ERA5-like winds (:func:`make_monsoon_winds`), interpolated to ``grid`` and to
        every model step (linear in time).
    eddy_diffusivity : float, m2 s-1
        Horizontal diffusivity (not the inversion's).
    ventilation_land, ventilation_ocean : float, s
        Ventilation time over land and over ocean (convection vents land faster).
    land : array (ny, nx), optional
        Land fraction on ``grid`` (0 = ocean everywhere by default).
    wind_speedup, wind_veer_deg : float
        The truth's boundary-layer wind is the file's 925 hPa wind times ``wind_speedup``,
        veered by ``wind_veer_deg`` degrees: a different vertical structure than the
        1000-850 hPa mean the inversion uses.
    unresolved_rms : float, m s-1
        Rms of small, fast eddies that are not in the wind file.
    dt : float, s
        Time step (1 hour).
    seed : int
        Seed of the unresolved eddies.

    Notes
    -----
    Each step advects the enhancement c (mol mol-1) semi-Lagrangian (departure points
    one step upstream, bilinear interpolation; c = 0 outside the grid), adds
    :math:`F \\Delta t / N_{air}`, diffuses explicitly and decays by
    :math:`e^{-\\Delta t/\\tau(x)}` (Staniforth and Cote 1991).
    """

    grid: GridSpec
    winds: xr.Dataset
    eddy_diffusivity: float = 3.0e4
    ventilation_land: float = 1.5 * 86400.0
    ventilation_ocean: float = 3.0 * 86400.0
    land: np.ndarray | None = None
    wind_speedup: float = 1.15
    wind_veer_deg: float = 12.0
    unresolved_rms: float = 1.5
    dt: float = 3600.0
    seed: int = 1
    surface_pressure: float = STANDARD_SURFACE_PRESSURE
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def _wind_at(self, t: np.datetime64) -> tuple[np.ndarray, np.ndarray]:
        w = self._cache.get("winds")
        if w is None:
            u = self.winds["u"].astype("float64").sel(level=925.0)
            v = self.winds["v"].astype("float64").sel(level=925.0)
            lat, lon = self.grid.lat, self.grid.lon
            u = u.interp(latitude=lat, longitude=lon, kwargs={"fill_value": None})
            v = v.interp(latitude=lat, longitude=lon, kwargs={"fill_value": None})
            ang = np.deg2rad(self.wind_veer_deg)
            ur = self.wind_speedup * (u * np.cos(ang) - v * np.sin(ang))
            vr = self.wind_speedup * (u * np.sin(ang) + v * np.cos(ang))
            w = (pd.DatetimeIndex(self.winds["time"].values).values, ur.values, vr.values)
            self._cache["winds"] = w
        times, uu, vv = w
        k = int(np.clip(np.searchsorted(times, t, side="right") - 1, 0, times.size - 1))
        if k + 1 < times.size and t > times[k]:
            f = float((t - times[k]) / (times[k + 1] - times[k]))
            return (1 - f) * uu[k] + f * uu[k + 1], (1 - f) * vv[k] + f * vv[k + 1]
        return uu[k], vv[k]

    def run(
        self,
        flux: np.ndarray,
        gas: str | Sequence[str],
        start: Any,
        end: Any,
        times: Any,
        latitude: Any,
        longitude: Any,
        *,
        spinup_days: float = 10.0,
    ) -> np.ndarray:
        """Integrate constant emission fluxes and sample the enhancement at the given points.

        Parameters
        ----------
        flux : array (ny, nx) or (k, ny, nx), kg m-2 s-1
            Emission flux(es) on ``grid``: k tracers transported together.
        gas : str or sequence of str
            The gas of each tracer ("CH4", "CO2").
        start, end : timestamp-like
            Integration window (a spin-up of ``spinup_days`` precedes ``start``).
        times, latitude, longitude : array (m,)
            Where and when to sample (each time rounded to the nearest model step; bilinear
            in space).

        Returns
        -------
        numpy.ndarray
            (m,) or (k, m): the enhancement in each gas's canonical units (ppb CH4, ppm CO2).
        """
        from scipy.ndimage import map_coordinates

        f = np.asarray(flux, dtype="float64")
        single = f.ndim == 2
        f = f[None] if single else f
        gases = [gas] * f.shape[0] if isinstance(gas, str) else list(gas)
        g = self.grid
        ny, nx = g.shape
        n_air = self.surface_pressure * 100.0 / (_G0 * MOLAR_MASS["air"])
        src = np.stack([f[i] / MOLAR_MASS[gases[i].upper()] / n_air for i in range(f.shape[0])])  # mol mol-1 s-1
        land = np.zeros(g.shape) if self.land is None else np.clip(self.land, 0.0, 1.0)
        tau = 1.0 / (land / self.ventilation_land + (1.0 - land) / self.ventilation_ocean)
        decay = np.exp(-self.dt / tau)
        step = pd.Timedelta(seconds=self.dt)
        t_pts = pd.DatetimeIndex(times).round(step).values
        dlat, dlon = float(np.diff(g.lat_edges)[0]), float(np.diff(g.lon_edges)[0])
        fi = (np.asarray(latitude, dtype="float64") - g.lat[0]) / dlat
        fj = (np.asarray(longitude, dtype="float64") - g.lon[0]) / dlon
        order = np.argsort(t_pts, kind="stable")
        t0 = pd.Timestamp(start) - pd.Timedelta(days=spinup_days)
        nsteps = int(np.ceil((max(pd.Timestamp(end), pd.Timestamp(t_pts.max())) - t0) / step))
        coslat = np.cos(np.deg2rad(g.lat))[:, None]
        ii, jj = np.meshgrid(np.arange(ny, dtype="float64"), np.arange(nx, dtype="float64"), indexing="ij")
        dy = EARTH_RADIUS_M * np.deg2rad(dlat)
        dx = EARTH_RADIUS_M * np.deg2rad(dlon) * coslat
        kdt = self.eddy_diffusivity * self.dt
        if kdt / min(dy, float(dx.min())) ** 2 > 0.24:
            raise ValueError("explicit diffusion unstable: lower eddy_diffusivity or dt")
        rng = np.random.default_rng(self.seed)
        eddies = _Eddies.draw(
            nsteps + 2,
            self.dt / 3600.0,
            rms=self.unresolved_rms,
            decorrelation_hours=9.0,
            wavelengths_km=(300.0, 900.0),
            n_modes=16,
            rng=rng,
        )
        c = np.zeros((f.shape[0], ny, nx))
        out = np.zeros((f.shape[0], t_pts.size))
        nxt = 0
        for k in range(nsteps):
            t = (t0 + (k + 0.5) * step).to_datetime64()
            u, v = self._wind_at(t)
            ue, ve = eddies.winds(g.lat, g.lon, k)
            di = (v + ve) * self.dt / dy
            dj = (u + ue) * self.dt / dx
            for i in range(c.shape[0]):
                c[i] = map_coordinates(c[i], [ii - di, jj - dj], order=1, mode="constant", cval=0.0)
            c += src * self.dt
            lap = np.zeros_like(c)
            lap[:, 1:-1, :] += (c[:, 2:, :] - 2 * c[:, 1:-1, :] + c[:, :-2, :]) / dy**2
            lap[:, :, 1:-1] += (c[:, :, 2:] - 2 * c[:, :, 1:-1] + c[:, :, :-2]) / dx**2
            c += kdt * lap
            c *= decay
            tk = (t0 + (k + 1) * step).to_datetime64()
            first = nxt
            while nxt < order.size and t_pts[order[nxt]] <= tk:
                nxt += 1
            if nxt > first:
                sel = order[first:nxt]
                for i in range(c.shape[0]):
                    out[i, sel] = map_coordinates(c[i], [fi[sel], fj[sel]], order=1, mode="nearest")
        out /= np.array([GAS_UNIT_TO_MOLMOL[x.upper()] for x in gases])[:, None]
        return out[0] if single else out


def background_field(
    gas: str, lat: Any, lon: Any, t: Any, *, seed: int = 0, curvature: float = 0.012, synoptic: float = 3.0
) -> np.ndarray:
    """The true background column (gas units) at each sounding: not a plane.

    Seasonal cycle, a latitude gradient that steepens north of 10 N (inter-hemispheric
    gradient; ``curvature`` ppb per degree squared), a weak longitude gradient and
    day-to-day synoptic variation that is smooth in space (``synoptic`` ppb rms per
    component for CH4; CO2 is scaled to a few tenths of a ppm).
    """
    from gosat_pipeline.testing.soundings import BACKGROUND_XGAS

    gas = gas.upper()
    lat = np.asarray(lat, dtype="float64")
    lon = np.asarray(lon, dtype="float64")
    times = pd.DatetimeIndex(t)
    scale = 1.0 if gas == "CH4" else 410.0 / 1850.0 * 0.5
    doy = times.day_of_year.values
    seasonal = 8.0 * np.sin(2 * np.pi * (doy - 100) / 365.25)
    grad = 0.35 * lat + curvature * np.clip(lat - 10.0, 0.0, None) ** 2 + 0.05 * (lon - 115.0)
    rng = np.random.default_rng(seed)
    days = np.unique(times.normalize().values)
    day_index = np.searchsorted(days, times.normalize().values)
    a = rng.normal(0.0, synoptic, (days.size, 3))
    synoptic = (
        a[day_index, 0]
        + a[day_index, 1] * np.sin(np.deg2rad(lat) * 6)
        + a[day_index, 2] * np.cos(np.deg2rad(lon - 90.0) * 4)
    )
    return BACKGROUND_XGAS[gas] + scale * (seasonal + grad + synoptic)
