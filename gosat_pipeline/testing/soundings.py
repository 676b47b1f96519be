"""Seeded synthetic soundings in the canonical schema (DESIGN.md section 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.schema import cf_attrs, gas_units

__all__ = ["make_soundings", "BACKGROUND_XGAS"]

#: Typical background column mole fractions, canonical units (ppm CO2, ppb CH4).
BACKGROUND_XGAS: dict[str, float] = {"CO2": 410.0, "CH4": 1850.0}
_NOISE: dict[str, float] = {"CO2": 1.5, "CH4": 12.0}


def make_soundings(
    n: int = 1000,
    gas: str = "CH4",
    *,
    seed: int = 0,
    bbox: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0),
    start: str = "2020-01-01",
    end: str = "2020-02-01",
    n_levels: int = 20,
    bad_fraction: float = 0.1,
) -> xr.Dataset:
    """Make ``n`` canonical soundings with random positions, times and values.

    Parameters
    ----------
    n : int
        Number of soundings.
    gas : {"CH4", "CO2"}
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same data.
    bbox : (west, south, east, north), degrees
        Soundings are uniform in longitude and in sin(latitude) inside the box.
    start, end : str
        Time window (UTC); times are uniform inside it.
    n_levels : int
        Number of retrieval levels, surface first.
    bad_fraction : float
        Fraction of soundings with ``quality_flag = 1``.

    Returns
    -------
    xarray.Dataset
        Dims ``sounding`` (n) and ``level`` (n_levels); ``xgas`` in ppm (CO2) or
        ppb (CH4), with attributes ``gas``, ``product = "synthetic"``.

    Examples
    --------
    >>> ds = make_soundings(10, "CO2", seed=1)
    >>> ds.sizes["sounding"], ds.xgas.attrs["units"]
    (10, 'ppm')
    """
    gas = gas.upper()
    rng = np.random.default_rng(seed)
    west, south, east, north = bbox
    lon = rng.uniform(west, east, n)
    s0, s1 = np.sin(np.deg2rad([south, north]))
    lat = np.rad2deg(np.arcsin(rng.uniform(s0, s1, n)))
    t0, t1 = pd.Timestamp(start).value, pd.Timestamp(end).value
    time = np.sort(rng.integers(t0, t1, n)).astype("datetime64[ns]")
    noise = _NOISE[gas]
    xgas = BACKGROUND_XGAS[gas] + noise * rng.standard_normal(n)
    unc = noise * rng.uniform(0.6, 1.4, n)
    flag = (rng.uniform(size=n) < bad_fraction).astype("int8")
    psurf = rng.uniform(950.0, 1013.25, n)
    frac = np.linspace(1.0, 0.0, n_levels)
    pressure = psurf[:, None] * frac[None, :]
    pressure[:, -1] = 0.1
    weight = np.full((n, n_levels), 1.0 / (n_levels - 1))
    weight[:, [0, -1]] *= 0.5
    weight /= weight.sum(axis=1, keepdims=True)
    ak = np.clip(1.05 - 0.4 * (1.0 - frac)[None, :] + 0.02 * rng.standard_normal((n, n_levels)), 0, None)
    apriori = np.full((n, n_levels), BACKGROUND_XGAS[gas]) * (1.0 - 0.05 * (1.0 - frac))[None, :]
    ds = xr.Dataset(
        {
            "xgas": ("sounding", xgas, cf_attrs("xgas", gas)),
            "xgas_uncertainty": ("sounding", unc, cf_attrs("xgas_uncertainty", gas)),
            "xgas_apriori": ("sounding", (apriori * weight).sum(axis=1), cf_attrs("xgas_apriori", gas)),
            "quality_flag": ("sounding", flag, cf_attrs("quality_flag")),
            "surface_pressure": ("sounding", psurf, cf_attrs("surface_pressure")),
            "solar_zenith_angle": ("sounding", rng.uniform(10, 75, n), cf_attrs("solar_zenith_angle")),
            "averaging_kernel": (("sounding", "level"), ak, cf_attrs("averaging_kernel")),
            "pressure_weight": (("sounding", "level"), weight, cf_attrs("pressure_weight")),
            "profile_apriori": (("sounding", "level"), apriori, cf_attrs("profile_apriori", gas)),
            "pressure": (("sounding", "level"), pressure, cf_attrs("pressure")),
            "sounding_id": ("sounding", np.arange(n, dtype="int64") + 10**9 * (seed + 1)),
            "source_file": ("sounding", np.full(n, f"synthetic-seed{seed}", dtype=object)),
        },
        coords={
            "time": ("sounding", time, {"standard_name": "time"}),
            "latitude": ("sounding", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": ("sounding", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={
            "gas": gas,
            "product": "synthetic",
            "product_version": "0",
            "reader": "gosat_pipeline.testing.make_soundings",
            "xgas_units": gas_units(gas),
        },
    )
    return ds
