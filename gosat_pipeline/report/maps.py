"""Figures of the report as base64 PNG: cartopy maps and reported-vs-estimated bars.

Maps use PlateCarree and draw outlines from polygons only: the borders and coastlines
of every country in view from a boundary file passed in (the pipeline and the CLI pass
the Natural Earth admin-0 countries that ship with the package's dependencies), and on
top, thicker, the regions the run solved for (``boundaries.geojson``). No Natural Earth
*feature* is ever requested (``coastlines``/``cfeature`` would download); while a figure
is drawn, ``cartopy.config["downloaders"]`` is emptied so that an accidental download
request fails instead of reaching the network. Figures are
``matplotlib.figure.Figure`` objects rendered by the Agg canvas directly: pyplot and the
global backend are never touched.

Colour limits are robust (percentiles, with arrows on the colour bar where values go
beyond them), so that one extreme cell does not wash out a map; prior and posterior
emissions share one colour scale, and their difference has its own diverging scale.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure as MplFigure

from gosat_pipeline.report.names import display_name
from gosat_pipeline.report.tables import unit
from gosat_pipeline.report.verdicts import verdict_of
from gosat_pipeline.schema import SECONDS_PER_YEAR

__all__ = [
    "Figure",
    "Outline",
    "read_outlines",
    "map_figures",
    "bar_figures",
    "no_cartopy_downloads",
    "mpl_text",
    "FLUX_TO_T_KM2_YR",
]

logger = logging.getLogger(__name__)

#: kg m-2 s-1 -> t km-2 yr-1 (365.25 days)
FLUX_TO_T_KM2_YR = SECONDS_PER_YEAR * 1e6 / 1e3
_MAX_PERIODS = 4
_DPI = 100
#: ISO-3 columns of a boundary file, in the order they are tried (Natural Earth writes -99 for "none")
_CODE_COLUMNS = ("ISO_A3_EH", "ISO_A3", "ADM0_A3", "iso3", "iso_a3", "GID_0", "region")
_VERDICT_COLOURS = {"higher than reported": "#a11a2b", "lower than reported": "#1d4f91", "consistent": "#1e6b1e"}


@dataclass(frozen=True)
class Figure:
    """A rendered figure: title, caption (plain text), PNG bytes as base64, outline codes drawn."""

    title: str
    caption: str
    png_base64: str
    width: int
    height: int
    outlines: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Outline:
    """One background outline: region code (or name) and a shapely geometry (lon/lat)."""

    code: str
    geometry: Any


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


@functools.lru_cache(maxsize=8)
def _read_outlines_cached(path: str, bbox: tuple[float, float, float, float]) -> tuple[Outline, ...]:
    import geopandas as gpd
    import shapely

    gdf = gpd.read_file(path, bbox=bbox)
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs(4326)
    cols = [c for c in _CODE_COLUMNS if c in gdf.columns]
    out = []
    for i, geom in enumerate(gdf.geometry):
        if geom is None or geom.is_empty:
            continue
        code = next((str(gdf[c].iloc[i]) for c in cols if str(gdf[c].iloc[i]) not in ("-99", "", "None", "nan")), "")
        clipped = shapely.clip_by_rect(geom, *bbox)
        if clipped.is_empty:
            continue
        out.append(Outline(code or f"feature {i}", shapely.simplify(clipped, 0.01)))
    return tuple(out)


def read_outlines(path: str | None, extent: Sequence[float]) -> list[Outline]:
    """Outlines of every country of a boundary file that intersects a map extent.

    Parameters
    ----------
    path : str, optional
        Any file geopandas reads (GeoJSON, shapefile, GeoPackage, a ``zip://`` path
        such as :func:`gosat_pipeline.regions.default_boundaries_path`).
    extent : (west, east, south, north)
        Degrees; features are clipped to it plus one degree.

    Returns
    -------
    list of Outline
        Empty when ``path`` is None.

    Raises
    ------
    Exception
        Whatever geopandas raises for an unreadable file (the caller turns it into a note).
    """
    if not path:
        return []
    w, e, s, n = (float(v) for v in extent)
    bbox = (max(-180.0, w - 1.0), max(-90.0, s - 1.0), min(180.0, e + 1.0), min(90.0, n + 1.0))
    return list(_read_outlines_cached(str(path), bbox))


def _png(fig: Any, title: str, caption: str, outlines: Sequence[str] = ()) -> Figure:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    png = buf.getvalue()
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # IHDR
    return Figure(title, caption, base64.b64encode(png).decode("ascii"), w, h, tuple(outlines))


def _extent(da: xr.DataArray) -> list[float]:
    lon, lat = da["longitude"].values, da["latitude"].values
    dlon = float(np.abs(np.diff(lon)).min()) if lon.size > 1 else 1.0
    dlat = float(np.abs(np.diff(lat)).min()) if lat.size > 1 else 1.0
    return [
        float(lon.min()) - dlon / 2,
        float(lon.max()) + dlon / 2,
        float(lat.min()) - dlat / 2,
        float(lat.max()) + dlat / 2,
    ]


def _periods(da: xr.DataArray) -> list[tuple[str, xr.DataArray]]:
    """(label, 2-D field) per period (or the only field), at most :data:`_MAX_PERIODS`."""
    extra = [d for d in da.dims if d not in ("latitude", "longitude")]
    if not extra:
        return [("", da)]
    dim = extra[0]
    others = {d: 0 for d in extra[1:]}
    da = da.isel(others) if others else da
    n = min(da.sizes[dim], _MAX_PERIODS)
    labels = [str(v) for v in da[dim].values[:n]] if dim in da.coords else [str(i) for i in range(n)]
    return [(f"{dim} {lab}", da.isel({dim: i})) for i, lab in enumerate(labels)]


def _finite(*arrays: np.ndarray) -> np.ndarray:
    vals = np.concatenate([np.asarray(a, dtype="float64").ravel() for a in arrays])
    return vals[np.isfinite(vals)]


def _robust(values: np.ndarray, lo: float, hi: float, fallback: tuple[float, float]) -> tuple[float, float]:
    if values.size == 0:
        return fallback
    a, b = (float(v) for v in np.percentile(values, [lo, hi]))
    if not b > a:
        a, b = float(values.min()), float(values.max())
    if not b > a:
        a, b = a - abs(fallback[1] - fallback[0]) / 2, a + abs(fallback[1] - fallback[0]) / 2
    return a, b


def _extend(values: np.ndarray, vmin: float, vmax: float) -> str:
    below = values.size and float(values.min()) < vmin
    above = values.size and float(values.max()) > vmax
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get((bool(below), bool(above)), "neither")


@dataclass
class _Panel:
    field: xr.DataArray
    title: str
    cmap: str
    norm: Normalize
    label: str
    extend: str


def _draw(
    ax: Any, p: _Panel, extent: list[float], background: Sequence[Outline], solved: Sequence[Mapping[str, Any]]
) -> Any:
    import cartopy.crs as ccrs

    pc = ccrs.PlateCarree()
    ax.set_extent(extent, crs=pc)
    values = np.ma.masked_invalid(np.asarray(p.field.transpose("latitude", "longitude").values, dtype="float64"))
    mesh = ax.pcolormesh(
        p.field["longitude"].values,
        p.field["latitude"].values,
        values,
        transform=pc,
        shading="nearest",
        cmap=p.cmap,
        norm=p.norm,
    )
    if background:
        ax.add_geometries(
            [o.geometry for o in background], crs=pc, facecolor="none", edgecolor="#333333", linewidth=0.45
        )
    geoms = [b["geometry"] for b in solved if b.get("geometry") is not None]
    if geoms:
        ax.add_geometries(geoms, crs=pc, facecolor="none", edgecolor="black", linewidth=1.1)
    # plain ticks (cheaper than a labelled cartopy Gridliner) and light unlabelled grid lines
    from cartopy.mpl.ticker import LatitudeFormatter, LongitudeFormatter
    from matplotlib.ticker import MaxNLocator

    ax.set_xticks(MaxNLocator(6, steps=[1, 2, 2.5, 5, 10]).tick_values(extent[0], extent[1]), crs=pc)
    ax.set_yticks(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]).tick_values(extent[2], extent[3]), crs=pc)
    ax.set_extent(extent, crs=pc)
    ax.xaxis.set_major_formatter(LongitudeFormatter())
    ax.yaxis.set_major_formatter(LatitudeFormatter())
    ax.tick_params(labelsize=8, length=3)
    ax.gridlines(crs=pc, draw_labels=False, linewidth=0.3, color="grey", alpha=0.5)
    ax.set_title(mpl_text(p.title, 70), fontsize=10)
    return mesh


def _figure(
    panels: list[_Panel],
    shared: list[list[int]],
    suptitle: str,
    title: str,
    caption: str,
    background: Sequence[Outline],
    solved: Sequence[Mapping[str, Any]],
) -> Figure:
    """Panels side by side; each group of ``shared`` panel indices gets one horizontal colour bar below.

    The layout is computed in inches (no layout engine: measuring every cartopy label is
    slow), with room for the latitude labels left of each panel and the colour bars below.
    """
    import cartopy.crs as ccrs

    extent = _extent(panels[0].field)
    aspect = (extent[3] - extent[2]) / max(1e-6, extent[1] - extent[0])
    n = len(panels)
    width = 13.6 if n >= 3 else 11.0
    left, gap, right = 0.55, 0.7, 0.25
    pw = (width - left - right - (n - 1) * gap) / n
    ph = pw * aspect
    top, below = 0.8, 1.35  # suptitle + panel titles; longitude labels + colour bar with its label
    height = top + ph + below
    fig = MplFigure(figsize=(width, height))
    axes, meshes = [], []
    for i, p in enumerate(panels):
        x0 = left + i * (pw + gap)
        ax = fig.add_axes((x0 / width, below / height, pw / width, ph / height), projection=ccrs.PlateCarree())
        meshes.append(_draw(ax, p, extent, background, solved))
        axes.append(ax)
    for group in shared:
        p = panels[group[0]]
        x0 = left + group[0] * (pw + gap) + 0.05 * pw
        x1 = left + group[-1] * (pw + gap) + 0.95 * pw
        cax = fig.add_axes((x0 / width, 0.62 / height, (x1 - x0) / width, 0.16 / height))
        cb = fig.colorbar(meshes[group[0]], cax=cax, orientation="horizontal", extend=p.extend)
        cb.set_label(mpl_text(p.label, 100), fontsize=9)
        cb.ax.tick_params(labelsize=8)
    fig.suptitle(mpl_text(suptitle, 100), fontsize=12, y=1 - 0.12 / height, va="top")
    codes = sorted({o.code for o in background})
    return _png(fig, title, caption, codes)


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


def _of(text: str, gas: str) -> str:
    return f"{text} ({gas})" if gas else text


def _obs_panels(gridded: xr.Dataset | None, gas: str) -> list[_Panel]:
    if gridded is None or "xgas_mean" not in gridded:
        return []
    mean = _l3_mean(gridded)
    units = str(gridded["xgas_mean"].attrs.get("units", ""))
    vals = _finite(mean.values)
    lo, hi = _robust(vals, 2, 98, (0.0, 1.0))
    label = f"X{gas} in {units}" if gas else f"column mole fraction ({units})"
    panels = [
        _Panel(
            mean,
            f"Mean X{gas or ' column'} of the soundings",
            "viridis",
            Normalize(lo, hi),
            f"{label} (colours span the 2nd to 98th percentile)",
            _extend(vals, lo, hi),
        )
    ]
    if "n_soundings" in gridded:
        n = gridded["n_soundings"]
        n = n.sum("time") if "time" in n.dims else n
        n = n.where(n > 0)
        nv = _finite(n.values)
        top = max(1.0, float(np.percentile(nv, 99))) if nv.size else 1.0
        panels.append(
            _Panel(
                n,
                "Soundings per cell",
                "magma_r",
                Normalize(0, top),
                "quality-filtered soundings per grid cell, whole run",
                _extend(nv, 0, top),
            )
        )
    return panels


def _emission_panels(emissions: xr.Dataset, gas: str, i: int) -> tuple[list[_Panel], str]:
    prior = _periods(emissions["prior_flux"] * FLUX_TO_T_KM2_YR)[i]
    post = _periods(emissions["posterior_flux"] * FLUX_TO_T_KM2_YR)[i]
    vals = _finite(prior[1].values, post[1].values)
    top = float(np.percentile(vals, 99)) if vals.size else 1.0
    top = top if top > 0 else (float(vals.max()) if vals.size and vals.max() > 0 else 1.0)
    unit = f"t {gas} per km\u00b2 per year" if gas else "t per km\u00b2 per year"
    unit_short = f"t {gas}/km\u00b2/yr" if gas else "t/km\u00b2/yr"
    norm = Normalize(0.0, top)
    diff = post[1] - prior[1]
    dv = _finite(diff.values)
    nz = np.abs(dv[dv != 0])
    lim = float(np.percentile(nz, 98)) if nz.size else 1.0
    lim = lim if lim > 0 else 1.0
    panels = [
        _Panel(
            prior[1],
            "Prior: the inventory the inversion started from",
            "YlOrRd",
            norm,
            f"Emissions, {unit} (prior and posterior on this one scale)",
            _extend(vals, 0.0, top),
        ),
        _Panel(post[1], "Posterior: after the satellite data", "YlOrRd", norm, "", "neither"),
        _Panel(
            diff,
            "Difference: posterior \u2212 prior",
            "RdBu_r",
            Normalize(-lim, lim),
            f"Posterior \u2212 prior, {unit_short} (red: above the prior)",
            _extend(dv, -lim, lim),
        ),
    ]
    return panels, prior[0]


def _constraint_panels(emissions: xr.Dataset, gas: str, i: int) -> list[_Panel]:
    panels = []
    if "averaging_kernel_sensitivity" in emissions:
        ak = _periods(emissions["averaging_kernel_sensitivity"])[i][1]
        panels.append(
            _Panel(
                ak,
                "How much the satellite data inform each region",
                "YlGnBu",
                Normalize(0.0, 1.0),
                "Share of the estimate that comes from the satellite data (0 = none, 1 = all)",
                _extend(_finite(ak.values), 0.0, 1.0),
            )
        )
    if "scale_factor" in emissions:
        sf = _periods(emissions["scale_factor"])[i][1]
        sv = _finite(sf.values)
        d = float(np.percentile(np.abs(sv - 1.0), 98)) if sv.size else 0.5
        d = max(d, 0.05)
        panels.append(
            _Panel(
                sf,
                "Posterior \u00f7 prior emissions",
                "RdBu_r",
                Normalize(1.0 - d, 1.0 + d),
                "Posterior ÷ prior (1 = unchanged; above 1: more than the prior)",
                _extend(sv, 1.0 - d, 1.0 + d),
            )
        )
    return panels


def _maps(
    emissions: xr.Dataset | None,
    gridded: xr.Dataset | None,
    gas: str,
    background: Sequence[Outline],
    solved: Sequence[Mapping[str, Any]],
) -> list[Figure]:
    figs = []
    obs = _obs_panels(gridded, gas)
    if obs and {"latitude", "longitude"} <= set(obs[0].field.dims):
        figs.append(
            _figure(
                obs,
                [[i] for i in range(len(obs))],
                _of("Satellite observations", gas),
                _of("Satellite observations", gas),
                "Left: the mean column-averaged dry-air mole fraction of the quality-filtered soundings "
                "over the whole run (white: no good sounding). Right: how many soundings fell in each "
                "grid cell; the inversion can only see emissions where there are soundings downwind.",
                background,
                solved,
            )
        )
    if emissions is None:
        return figs
    if {"prior_flux", "posterior_flux"} <= set(emissions.data_vars):
        for i in range(len(_periods(emissions["prior_flux"]))):
            panels, label = _emission_panels(emissions, gas, i)
            when = f", {label}" if label else ""
            figs.append(
                _figure(
                    panels,
                    [[0, 1], [2]],
                    _of(f"Emissions{when}", gas),
                    _of(f"Emissions{when}", gas),
                    "Left and middle: prior and posterior emissions on one shared colour scale (its "
                    "top is the 99th percentile; the arrow marks cells above it). Right: their "
                    "difference. The inversion adjusts whole regions, so the difference follows the "
                    "region outlines.",
                    background,
                    solved,
                )
            )
    if {"averaging_kernel_sensitivity", "scale_factor"} & set(emissions.data_vars):
        base = "averaging_kernel_sensitivity" if "averaging_kernel_sensitivity" in emissions else "scale_factor"
        for i in range(len(_periods(emissions[base]))):
            panels = _constraint_panels(emissions, gas, i)
            label = _periods(emissions[base])[i][0]
            when = f", {label}" if label else ""
            figs.append(
                _figure(
                    panels,
                    [[j] for j in range(len(panels))],
                    _of(f"What the satellite data constrain{when}", gas),
                    _of(f"What the satellite data constrain{when}", gas),
                    "Left: how much of each region's estimate comes from the satellite data (1) rather "
                    "than from the prior (0); where it is low, the data cannot confirm or contradict "
                    "the inventory. Right: the posterior as a multiple of the prior.",
                    background,
                    solved,
                )
            )
    return figs


def map_figures(
    emissions: xr.Dataset | None,
    gridded: xr.Dataset | None,
    boundaries: Sequence[Mapping[str, Any]],
    gas: str = "",
    background: Sequence[Outline] = (),
) -> list[Figure]:
    """Maps of the observations, prior/posterior emissions and their difference, and the constraint.

    Parameters
    ----------
    emissions : xarray.Dataset, optional
        ``prior_flux``, ``posterior_flux`` (kg m-2 s-1; shown in t km-2 yr-1),
        ``scale_factor``, ``averaging_kernel_sensitivity`` on (latitude, longitude) or
        (period, latitude, longitude) (one figure per period, up to 4).
    gridded : xarray.Dataset, optional
        L3 ``xgas_mean`` and ``n_soundings`` on (time, latitude, longitude).
    boundaries : sequence of dict
        ``{"geometry": shapely geometry, ...}`` of the regions solved for (drawn bold).
    gas : str
        The gas of both datasets ("CH4", "CO2"), named in every title and unit.
    background : sequence of Outline
        Borders and coastlines of every country in view (:func:`read_outlines`).

    Returns
    -------
    list of Figure
        Observations (mean column, sounding counts); emissions (prior | posterior on one
        scale | difference) per period; constraint (sensitivity | scale factor) per
        period. A field without latitude/longitude dims is skipped with a warning.
    """
    with no_cartopy_downloads():
        for ds in (emissions, gridded):
            if ds is not None and not {"latitude", "longitude"} <= set(ds.dims):
                logger.warning("report: a map input has dims %s; no map drawn from it", dict(ds.sizes))
        emissions = emissions if emissions is not None and {"latitude", "longitude"} <= set(emissions.dims) else None
        gridded = gridded if gridded is not None and {"latitude", "longitude"} <= set(gridded.dims) else None
        return _maps(emissions, gridded, gas, background, boundaries)


# ---------------------------------------------------------------------------- bars
def _val(row: Mapping[str, Any], key: str) -> float:
    try:
        v = float(row.get(key))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _is_aggregate(row: Mapping[str, Any]) -> bool:
    members = str(row.get("members") or "").strip()
    return bool(members) and members.lower() != "nan"


def _short(v: float) -> str:
    """A bar's value label: three significant digits, thousands separated, never 1.4e+03."""
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _bar_panel(ax: Any, name: str, rows: Sequence[Mapping[str, Any]], refs: list[str]) -> None:
    """One region's bars: prior, estimate, each reference; value labels; its own x scale."""
    colours = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    first = rows[0]
    bars = [
        ("Prior", _val(first, "prior_total"), _val(first, "prior_sigma"), "#bbbbbb"),
        ("Satellite estimate", _val(first, "posterior_total"), _val(first, "posterior_sigma"), "#1f77b4"),
    ]
    for j, ref in enumerate(refs):
        r = next((x for x in rows if str(x.get("reference")) == ref), None)
        v, s = (_val(r, "reported_total"), _val(r, "reported_sigma")) if r is not None else (math.nan, math.nan)
        bars.append(("Reported" if len(refs) == 1 else f"Reported: {ref}", v, s, colours[j % len(colours)]))
    y = np.arange(len(bars))
    vals = np.array([b[1] for b in bars])
    errs = np.array([b[2] if math.isfinite(b[2]) else 0.0 for b in bars])
    ax.barh(y, np.nan_to_num(vals), xerr=errs, color=[b[3] for b in bars], capsize=2, height=0.7)
    top = np.nanmax(np.where(np.isfinite(vals), vals + errs, np.nan)) if np.isfinite(vals).any() else 1.0
    top = top if top > 0 else 1.0
    ax.set_xlim(0, top * 1.3)
    for yi, v in zip(y, vals, strict=True):
        ax.text(top * 1.28, yi, "no value" if not math.isfinite(v) else _short(v), va="center", ha="right", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([mpl_text(b[0], 32) for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    verdict = verdict_of(first) if len(refs) <= 1 else ""
    title = f"{name}: {verdict}" if verdict else name
    ax.set_title(mpl_text(title, 60), fontsize=9, loc="left", color=_VERDICT_COLOURS.get(verdict, "#333333"))


def _small_multiples(
    groups: list[tuple[str, list[Mapping[str, Any]]]], refs: list[str], gas: str, title: str, caption: str
) -> Figure:
    """Panels on a fixed grid (inches), so no layout engine has to measure every label (it is slow)."""
    ncol = 3 if len(groups) > 2 else max(1, len(groups))
    nrow = math.ceil(len(groups) / ncol)
    label_w = 1.6 if len(refs) > 1 else 1.25  # y tick labels
    ax_w, ax_h = 2.95, 0.34 * (2 + len(refs))
    gap_h, top, bottom, right = 0.62, 0.6, 0.55, 0.2
    fig_w = ncol * (label_w + ax_w) + right
    fig_w = max(fig_w, 7.0)
    fig_h = nrow * ax_h + (nrow - 1) * gap_h + top + bottom
    fig = MplFigure(figsize=(fig_w, fig_h))
    fig.subplots_adjust(
        left=label_w / fig_w,
        right=(label_w + ncol * (label_w + ax_w) - label_w) / fig_w,
        bottom=bottom / fig_h,
        top=1 - top / fig_h,
        wspace=label_w / ax_w,
        hspace=gap_h / ax_h,
    )
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, (name, rows) in zip(axes.ravel(), groups, strict=False):
        _bar_panel(ax, name, rows, refs)
    for ax in axes.ravel()[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(mpl_text(title, 110), fontsize=11, x=0.02, ha="left")
    fig.text(0.5, 0.12 / fig_h, mpl_text(f"{unit(gas)}, each panel on its own scale"), ha="center", fontsize=9)
    return _png(fig, title, caption)


def bar_figures(
    rows: Sequence[Mapping[str, Any]], gas: str = "", max_periods: int = 4, names: Mapping[str, str] | None = None
) -> list[Figure]:
    """Prior, estimate and reported totals with 1-sigma error bars, one small panel per region.

    Every region gets its own panel and x scale, so a small country is as readable as a
    large one; aggregates (rows with ``members``) get a figure of their own.

    Parameters
    ----------
    rows : sequence of dict
        Discrepancy rows of one gas (``region``, ``period``, ``reference``, totals and
        sigmas in Tg yr-1, ``verdict``, ``members``).
    gas : str
        Named in the titles and the axis label.
    max_periods : int
        At most this many periods (the first ones, in row order) get figures.
    names : mapping, optional
        Region code -> display name.

    Returns
    -------
    list of Figure
        Per period: the countries' figure, then the aggregates' figure (when any).
    """
    names = names or {}
    periods = list(dict.fromkeys(str(r.get("period")) for r in rows))
    refs = list(dict.fromkeys(str(r.get("reference")) for r in rows))
    figs = []
    for p in periods[:max_periods]:
        mine = [r for r in rows if str(r.get("period")) == p]
        for aggregate in (False, True):
            sub = [r for r in mine if _is_aggregate(r) == aggregate]
            if not sub:
                continue
            regions = list(dict.fromkeys(str(r.get("region")) for r in sub))
            groups = [
                (
                    display_name(next(r for r in sub if str(r.get("region")) == code), names),
                    [r for r in sub if str(r.get("region")) == code],
                )
                for code in regions
            ]
            what = "groups of countries" if aggregate else "countries"
            title = f"{gas + ' totals' if gas else 'Totals'} of the {what}, {p}"
            ref = f" ({refs[0]})" if len(refs) == 1 else ""
            caption = (
                f"Prior (grey), satellite estimate (blue) and reported total{ref} (red) of each "
                f"{'group' if aggregate else 'country'}, with 1-sigma error bars; the numbers are the bar "
                "values in Tg per year. Each panel has its own scale, so that small and large emitters "
                "are equally readable: compare the bars within a panel. Panel titles give the verdict."
            )
            figs.append(_small_multiples(groups, refs, gas, title, caption))
    return figs
