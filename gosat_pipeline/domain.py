"""Domain accounting: every emission in the domain belongs to a state element.

A regional inversion sees the whole domain's emissions; if only the requested countries
are in the state, the rest (a neighbour's emissions, ships, the part of a country
outside the list) alias into them, and a country that the domain cuts would be compared
with its national total as if it were whole. :func:`prior_emissions` does the accounting
the inversion needs (DESIGN.md 5.3, 5.5):

- the regions of the state are every country with land inside the domain (requested ones
  get verdicts, the others are estimated and reported but not judged) plus the rest of the
  domain (sea and land no boundary claims);
- each region's prior emission is attributed at the inventory's own resolution and then
  regridded conservatively (:func:`gosat_pipeline.inventory.attribute_to_regions`), so its
  total does not depend on the inversion grid;
- each region carries the share of its area and of its prior emission that lies inside
  the domain, so that the comparison can refuse to set a partial estimate against a
  national total.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr

from gosat_pipeline.errors import BoundaryError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inventory import attribute_to_regions, covers, crop_to_bbox, source_grid
from gosat_pipeline.regions import domain_regions, region_masks
from gosat_pipeline.schema import SECONDS_PER_YEAR

__all__ = ["national_emission", "prior_emissions", "requested_regions"]

logger = logging.getLogger(__name__)


def requested_regions(domain: pd.DataFrame, iso3: Sequence[str] | None, boundaries: gpd.GeoDataFrame) -> list[str]:
    """The regions a run reports on: ``iso3``, or every region inside the domain when None.

    Raises
    ------
    BoundaryError
        A requested code is unknown to the boundaries, or has no area inside the domain.
    """
    inside = list(domain["region"])
    if iso3 is None:
        return inside
    known = set(boundaries["region"].astype(str))
    unknown = sorted(set(iso3) - known)
    if unknown:
        raise BoundaryError(
            f"regions.iso3: {unknown} are not region codes of the boundaries "
            f"({len(known)} regions, e.g. {sorted(known)[:6]})"
        )
    outside = sorted(set(iso3) - set(inside))
    if outside:
        raise BoundaryError(
            f"regions.iso3: {outside} have no area inside domain.bbox; enlarge the domain or remove them"
        )
    return list(iso3)


def national_emission(flux: xr.DataArray, boundaries: gpd.GeoDataFrame, code: str, *, rule: str = "land") -> float:
    """A region's whole prior emission in the inventory, kg yr-1 (NaN when the file does not cover it).

    The region's emissions are attributed with the same rule as inside the domain, with
    every region that touches its bounding box in the masks (so coastal and border cells
    are shared the same way).
    """
    from gosat_pipeline.attribution import attribute_emissions

    geom = boundaries.loc[boundaries["region"] == code, "geometry"]
    if geom.empty:
        return math.nan
    w, s, e, n = geom.iloc[0].bounds
    box = (w, s, e, n)
    if not covers(flux, box):
        return math.nan
    crop = crop_to_bbox(flux, box)
    grid = source_grid(crop)
    near = boundaries[shapely.intersects(boundaries.geometry.values, shapely.box(*grid.bbox))]
    masks = region_masks(near, grid, min_fraction=0.0)  # attribution only: no resolvability warning
    fields = attribute_emissions(crop, masks, rule=rule, rest=False)
    field = fields.sel(region=code)
    if "sector" in field.dims:
        field = field.sum("sector")
    return float((field.values * grid.cell_area()).sum() * SECONDS_PER_YEAR)


def prior_emissions(
    flux: xr.DataArray,
    boundaries: gpd.GeoDataFrame,
    grid: GridSpec,
    *,
    iso3: Sequence[str] | None = None,
    rule: str = "land",
) -> xr.DataArray:
    """Region-attributed prior emissions on the inversion grid, with the domain accounting.

    Parameters
    ----------
    flux : xarray.DataArray
        The prior inventory on its own grid, kg m-2 s-1 (``open_prior_inventory``).
    boundaries : geopandas.GeoDataFrame
        All region boundaries (``regions.load_boundaries()``), not only the requested ones.
    grid : GridSpec
        The inversion grid (its box is the domain).
    iso3 : sequence of str, optional
        The requested regions (None: every region inside the domain).
    rule : {"land", "area"}
        Attribution rule (:mod:`gosat_pipeline.attribution`).

    Returns
    -------
    xarray.DataArray
        ``(region, [sector,] latitude, longitude)`` kg m-2 s-1 on ``grid``: every region
        with area inside the domain and the rest of the domain (``REST``). Coords
        ``region_name``, ``region_role`` (requested, other, rest),
        ``region_domain_share_area``, ``region_domain_share_emission`` (NaN where the
        inventory does not cover the whole region), ``region_area_km2``.
    """
    dom = domain_regions(boundaries, grid.bbox)
    wanted = requested_regions(dom, iso3, boundaries)
    roles = {c: ("requested" if c in wanted else "other") for c in dom["region"]}
    crop = crop_to_bbox(flux, grid.bbox)
    if not covers(flux, grid.bbox):
        logger.warning(
            "the prior inventory covers only part of the domain %s: emissions outside it are zero", grid.bbox
        )
    src = source_grid(crop)
    bnd = boundaries[boundaries["region"].isin(list(dom["region"]))]
    if "is_group" in bnd:
        bnd = bnd[~bnd["is_group"].astype(bool)]
    masks = region_masks(
        bnd, src, min_fraction=0.0
    )  # on the inventory grid: resolvability is judged on the inversion grid
    em = attribute_to_regions(crop, masks, grid, rule=rule, roles=roles)
    codes = em["region"].values.astype(str)
    area_in = dom.set_index("region")
    share_a = np.array([float(area_in["share_area"].get(c, 1.0)) if c in area_in.index else 1.0 for c in codes])
    area_km2 = np.array([float(area_in["area_km2"].get(c, np.nan)) if c in area_in.index else np.nan for c in codes])
    tot = em.sum("sector") if "sector" in em.dims else em
    inside = (tot.values * grid.cell_area()).sum(axis=(-2, -1)) * SECONDS_PER_YEAR
    share_e = np.ones(codes.size)
    for k, c in enumerate(codes):
        if c == "REST" or share_a[k] >= 1.0 - 1e-9:
            continue
        whole = national_emission(flux, boundaries, c, rule=rule)
        share_e[k] = min(1.0, inside[k] / whole) if whole > 0 else (math.nan if not math.isfinite(whole) else 1.0)
    em = em.assign_coords(
        region_domain_share_area=(
            "region",
            share_a,
            {"units": "1", "long_name": "share of the region's area inside the domain"},
        ),
        region_domain_share_emission=(
            "region",
            share_e,
            {
                "units": "1",
                "long_name": "share of the region's prior "
                "emission inside the domain (NaN: not covered by the "
                "inventory)",
            },
        ),
        region_area_km2=("region", area_km2, {"units": "km2", "long_name": "area of the whole region"}),
    )
    partial = [
        f"{c} ({100 * min(a, e if math.isfinite(e) else a):.0f} %)"
        for c, a, e in zip(codes, share_a, share_e, strict=True)
        if c != "REST" and min(a, e if math.isfinite(e) else a) < 0.999
    ]
    logger.info(
        "domain: %d regions (%d requested), rest of domain %.3g Tg/yr; partly inside: %s",
        len(codes) - 1,
        len(wanted),
        inside[-1] / 1e9,
        ", ".join(partial) or "none",
    )
    return em
