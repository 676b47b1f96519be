"""Super-observations: the observation vector, its errors, and the time bins behind it."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.schema import gas_units, output_attrs

__all__ = ["DEFAULT_SIGMA_MODEL", "column_sensitivity", "observation_vector", "period_label", "time_bins"]

logger = logging.getLogger(__name__)

#: Default model (transport + representation) error per super-observation, canonical units.
DEFAULT_SIGMA_MODEL: dict[str, float] = {"CO2": 1.0, "CH4": 8.0}


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
    ak.attrs = output_attrs("observations", "column_sensitivity_l3")
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


def time_bins(l3: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
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
    starts, _ends = time_bins(obs)
    ds = xr.Dataset(
        {
            name: ("obs", values, output_attrs("observations", name, units=units, gas=gas, first=first))
            for name, values in (
                ("y", val[ok]),
                ("sigma", np.sqrt(var)),
                ("sigma_retrieval", sig_r[ok]),
                ("sigma_model", np.full(nn.size, sigma_model)),
                ("n", nn.astype("int64")),
                ("column_sensitivity", ak[ok]),
                ("latitude", grid.lat[li]),
                ("longitude", grid.lon[lj]),
                ("time", starts[ti]),
                ("time_index", ti.astype("int64")),
                ("cell", (li * grid.shape[1] + lj).astype("int64")),
            )
        },
        attrs={
            "gas": gas,
            "sigma_model": sigma_model,
            "use_weighted_mean": int(use_weighted_mean),
            "obs_correlation_length_km": float(correlation_length_km or 0.0),
        },
    )
    logger.info("observation vector: %d super-observations from %d soundings", nn.size, int(nn.sum()))
    return ds
