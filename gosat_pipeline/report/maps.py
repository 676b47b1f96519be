"""Figures of the report as base64 PNG: cartopy maps and reported-vs-estimated bars.

Maps use PlateCarree and draw region outlines from the run's own boundary polygons
with ``ax.add_geometries``; no Natural Earth feature is ever requested
(``coastlines``/``cfeature`` would download). While a figure is drawn,
``cartopy.config["downloaders"]`` is emptied so that an accidental download request
fails instead of reaching the network. Figures are ``matplotlib.figure.Figure`` objects
rendered by the Agg canvas directly: pyplot and the global backend are never touched.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure as MplFigure

__all__ = ["Figure", "map_figures", "bar_figures", "no_cartopy_downloads", "mpl_text"]

logger = logging.getLogger(__name__)

#: kg m-2 s-1 -> t km-2 yr-1 (365.25 days)
FLUX_TO_T_KM2_YR = 365.25 * 86400.0 * 1e6 / 1e3
_MAX_PANELS = 6


@dataclass(frozen=True)
class Figure:
    """A rendered figure: title, caption (plain text) and PNG bytes as base64."""

    title: str
    caption: str
    png_base64: str
    width: int
    height: int


def mpl_text(s: Any, limit: int = 60) -> str:
    """Text safe for matplotlib: no mathtext (``$``), no control characters, bounded length."""
    t = "".join(ch if ch.isprintable() else " " for ch in str(s))
    t = t.replace("\\", "\\\\").replace("$", r"\$")
    return t if len(t) <= limit else t[: limit - 1] + "\u2026"


@contextmanager
def no_cartopy_downloads() -> Iterator[None]:
    """Empty cartopy's downloader registry for the duration (restored afterwards)."""
    import cartopy

    saved = cartopy.config.get("downloaders", {})
    cartopy.config["downloaders"] = {}
    try:
        yield
    finally:
        cartopy.config["downloaders"] = saved


def _png(fig: Any, title: str, caption: str) -> Figure:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    png = buf.getvalue()
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # IHDR
    return Figure(title, caption, base64.b64encode(png).decode("ascii"), w, h)


def _extent(ds: xr.Dataset) -> list[float]:
    lon, lat = ds["longitude"].values, ds["latitude"].values
    dlon = float(np.abs(np.diff(lon)).min()) if lon.size > 1 else 1.0
    dlat = float(np.abs(np.diff(lat)).min()) if lat.size > 1 else 1.0
    return [float(lon.min()) - dlon / 2, float(lon.max()) + dlon / 2,
            float(lat.min()) - dlat / 2, float(lat.max()) + dlat / 2]  # fmt: skip


def _panels(da: xr.DataArray) -> list[tuple[str, xr.DataArray]]:
    """(label, 2-D field) per period (or the only field)."""
    extra = [d for d in da.dims if d not in ("latitude", "longitude")]
    if not extra:
        return [("", da)]
    dim = extra[0]
    others = {d: 0 for d in extra[1:]}
    da = da.isel(others) if others else da
    n = min(da.sizes[dim], _MAX_PANELS)
    labels = [str(v) for v in da[dim].values[:n]] if dim in da.coords else [str(i) for i in range(n)]
    return [(f"{dim} {lab}", da.isel({dim: i})) for i, lab in enumerate(labels)]


def _draw_map(ax: Any, field: xr.DataArray, boundaries: Sequence[Mapping[str, Any]], style: Mapping[str, Any],
              extent: list[float]) -> Any:  # fmt: skip
    import cartopy.crs as ccrs

    pc = ccrs.PlateCarree()
    ax.set_extent(extent, crs=pc)
    values = np.ma.masked_invalid(np.asarray(field.transpose("latitude", "longitude").values, dtype="float64"))
    mesh = ax.pcolormesh(field["longitude"].values, field["latitude"].values, values, transform=pc,
                         shading="nearest", cmap=style.get("cmap", "viridis"), norm=style.get("norm"),
                         vmin=None if style.get("norm") else style.get("vmin"),
                         vmax=None if style.get("norm") else style.get("vmax"))  # fmt: skip
    geoms = [b["geometry"] for b in boundaries if b.get("geometry") is not None]
    if geoms:
        ax.add_geometries(geoms, crs=pc, facecolor="none", edgecolor="black", linewidth=0.8)
    gl = ax.gridlines(crs=pc, draw_labels=True, linewidth=0.3, color="grey", alpha=0.5)
    gl.top_labels = gl.right_labels = False
    return mesh


def _map_figure(da: xr.DataArray, title: str, caption: str, units: str,
                boundaries: Sequence[Mapping[str, Any]], style: Mapping[str, Any]) -> Figure:  # fmt: skip
    import cartopy.crs as ccrs

    panels = _panels(da)
    ncol = min(len(panels), 3)
    nrow = math.ceil(len(panels) / ncol)
    size = 6.0 if len(panels) == 1 else 4.6
    fig = MplFigure(figsize=(size * ncol + 0.6, (size - 0.8) * nrow))
    extent = _extent(da.to_dataset(name="v"))
    mesh = None
    for i, (label, field) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1, projection=ccrs.PlateCarree())
        mesh = _draw_map(ax, field, boundaries, style, extent)
        if label:
            ax.set_title(mpl_text(label), fontsize=9)
    if mesh is not None:
        cb = fig.colorbar(mesh, ax=fig.axes, shrink=0.8, pad=0.04)
        cb.set_label(mpl_text(units))
    fig.suptitle(mpl_text(title, 90), fontsize=11)
    return _png(fig, title, caption)


def _l3_mean(gridded: xr.Dataset) -> xr.DataArray:
    """Time mean of the L3 mean column, weighted by the number of soundings."""
    x = gridded["xgas_mean"]
    if "time" not in x.dims:
        return x
    if "n_soundings" in gridded:
        n = gridded["n_soundings"].fillna(0).astype("float64")
        tot = (x.fillna(0.0) * n).sum("time")
        cnt = n.sum("time")
        return (tot / cnt.where(cnt > 0)).rename("xgas_mean")
    return x.mean("time")


def _of(title: str, gas: str) -> str:
    """``title`` naming the gas (each gas has its own maps in the report)."""
    return f"{title} ({gas})" if gas else title


def _map_specs(emissions: xr.Dataset | None, gridded: xr.Dataset | None, gas: str) -> list[tuple]:
    specs: list[tuple] = []
    if gridded is not None and "xgas_mean" in gridded:
        units = str(gridded["xgas_mean"].attrs.get("units", ""))
        specs.append((_l3_mean(gridded), f"Satellite observations: mean X{gas or ' column'}",
                      "Mean column-averaged dry-air mole fraction of the gridded soundings over the whole "
                      "run (empty cells had no good sounding).", units, {"cmap": "viridis"}))  # fmt: skip
        if "n_soundings" in gridded:
            n = gridded["n_soundings"].sum("time") if "time" in gridded["n_soundings"].dims else gridded["n_soundings"]
            specs.append((n.where(n > 0), _of("Number of soundings per cell", gas),
                          "How many quality-filtered soundings fell in each cell.", "count", {"cmap": "magma_r"}))  # fmt: skip
    if emissions is None:
        return specs
    flux_style = {"cmap": "YlOrRd", "vmin": 0.0}
    flux_units = f"t {gas} km-2 yr-1" if gas else "t km-2 yr-1"
    for var, title, caption in (
        ("prior_flux", "Prior emissions", "The emission map the inversion started from (the prior inventory)."),
        ("posterior_flux", "Posterior emissions", "Emissions after the satellite data were taken into account."),
    ):
        if var in emissions:
            specs.append((emissions[var] * FLUX_TO_T_KM2_YR, _of(title, gas), caption, flux_units, flux_style))
    if "scale_factor" in emissions:
        sf = emissions["scale_factor"]
        hi = max(2.0, float(np.nanmax(sf.values)) if np.isfinite(sf.values).any() else 2.0)
        specs.append((sf, _of("Scale factors (posterior / prior)", gas),
                      "Above 1: the satellite data suggest more emissions than the prior; below 1: fewer.",
                      "1", {"cmap": "RdBu_r", "norm": TwoSlopeNorm(vcenter=1.0, vmin=0.0, vmax=hi)}))  # fmt: skip
    if "averaging_kernel_sensitivity" in emissions:
        specs.append((emissions["averaging_kernel_sensitivity"], _of("Averaging-kernel sensitivity", gas),
                      "How much of the estimate comes from the satellite data (1) rather than the prior (0). "
                      "Where it is low, the data cannot confirm or contradict the inventory.",
                      "1", {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0}))  # fmt: skip
    return specs


def map_figures(
    emissions: xr.Dataset | None,
    gridded: xr.Dataset | None,
    boundaries: Sequence[Mapping[str, Any]],
    gas: str = "",
) -> list[Figure]:
    """Maps of the observations, prior and posterior emissions, scale factors and AK sensitivity.

    Parameters
    ----------
    emissions : xarray.Dataset, optional
        ``prior_flux``, ``posterior_flux`` (kg m-2 s-1; shown in t km-2 yr-1),
        ``scale_factor``, ``averaging_kernel_sensitivity`` on (latitude, longitude) or
        (period, latitude, longitude) (one panel per period, up to 6).
    gridded : xarray.Dataset, optional
        L3 ``xgas_mean`` and ``n_soundings`` on (time, latitude, longitude).
    boundaries : sequence of dict
        ``{"geometry": shapely geometry, ...}`` outlines.
    gas : str
        The gas of both datasets ("CH4", "CO2"); it is named in every title and in the
        flux units.

    Returns
    -------
    list of Figure
        In the order observations, sounding counts, prior, posterior, scale factors,
        sensitivity; a field without latitude/longitude dims is skipped.
    """
    figures = []
    with no_cartopy_downloads():
        for da, title, caption, units, style in _map_specs(emissions, gridded, gas):
            if not {"latitude", "longitude"} <= set(da.dims):
                logger.warning("report: %s has dims %s; no map drawn", title, da.dims)
                continue
            figures.append(_map_figure(da, title, caption, units, boundaries, style))
    return figures


def _bars(rows: Sequence[Mapping[str, Any]], period: str, gas: str) -> Figure:
    regions = list(dict.fromkeys(str(r.get("region_name") or r.get("region")) for r in rows))
    refs = list(dict.fromkeys(str(r.get("reference")) for r in rows))
    series = [("Prior", "prior_total", "prior_sigma", "#bbbbbb"),
              ("Satellite estimate", "posterior_total", "posterior_sigma", "#1f77b4")]  # fmt: skip
    colours = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    nser = len(series) + len(refs)
    h = 0.8 / nser
    fig = MplFigure(figsize=(8.5, 1.2 + 0.55 * len(regions) * max(1.0, nser / 3)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(regions), dtype=float)

    def value(region: str, ref: str | None, key: str) -> float:
        for r in rows:
            if str(r.get("region_name") or r.get("region")) == region and (ref is None or str(r.get("reference")) == ref):
                v = r.get(key)
                return float(v) if v is not None else math.nan
        return math.nan

    for i, (label, k, s, colour) in enumerate(series):
        vals = [value(g, None, k) for g in regions]
        errs = [value(g, None, s) for g in regions]
        ax.barh(y + i * h, vals, h, xerr=errs, color=colour, label=label, capsize=2)
    for j, ref in enumerate(refs):
        vals = [value(g, ref, "reported_total") for g in regions]
        errs = [value(g, ref, "reported_sigma") for g in regions]
        ax.barh(y + (len(series) + j) * h, vals, h, xerr=errs, color=colours[j % len(colours)],
                label=mpl_text(f"Reported: {ref}"), capsize=2)  # fmt: skip
    ax.set_yticks(y + h * (nser - 1) / 2)
    ax.set_yticklabels([mpl_text(g, 30) for g in regions])
    ax.invert_yaxis()
    ax.set_xlabel(mpl_text(f"Tg {gas}/yr" if gas else "Tg/yr"))
    fig.legend(fontsize=8, loc="outside lower center", ncol=min(nser, 4), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    title = f"{gas} reported and estimated totals, {period}" if gas else f"Reported and estimated totals, {period}"
    ax.set_title(mpl_text(title, 90))
    caption = ("Bars are totals with 1-sigma error bars. Missing bars: no reported value. "
               "See the table for the verdicts.")  # fmt: skip
    return _png(fig, title, caption)


def bar_figures(rows: Sequence[Mapping[str, Any]], gas: str = "", max_periods: int = 4) -> list[Figure]:
    """Reported vs estimated bars with 1-sigma error bars, one figure per period.

    Parameters
    ----------
    rows : sequence of dict
        Discrepancy rows of one gas (``region``, ``period``, ``reference``, totals and
        sigmas in Tg yr-1).
    gas : str
        Named in the titles and the axis label.
    max_periods : int
        At most this many periods (the first ones, in row order) get a figure.

    Returns
    -------
    list of Figure
    """
    periods = list(dict.fromkeys(str(r.get("period")) for r in rows))
    return [_bars([r for r in rows if str(r.get("period")) == p], p, gas) for p in periods[:max_periods]]
