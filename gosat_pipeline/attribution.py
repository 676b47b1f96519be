"""Attribute gridded emissions to regions: who owns the emissions of each cell.

A gridded inventory gives a flux per cell, not per country. Region masks give the
fraction of each cell's *area* inside each region. Taking a region's emission as
(area fraction) x (cell flux) silently assumes emissions are spread evenly over land and
sea within a cell; inventories put them on the land (EDGAR distributes national totals
with land-based proxies), so every coastal cell would leak the emissions of its sea part
into no region at all (19 % of the demonstration prior at 1 degree; Indonesia -23 %,
the Philippines -45 %; DESIGN.md 5.3). Two rules are offered:

``land`` (default)
    A cell's emissions belong to the regions that hold land in it, in proportion to their
    area fractions: :math:`E_r = F f_r / \\sum_q f_q` where :math:`\\sum_q f_q > 0`. Cells
    that no region touches (open sea) go to the rest-of-domain element.
``area``
    :math:`E_r = F f_r`, and the rest of the cell's emissions go to the rest-of-domain
    element. Right for regions that are pieces of a continuous field (boxes of an OSSE).

Applied at the inventory's own resolution (or finer) and then regridded conservatively,
either rule gives region totals that do not depend on the inversion grid; on a coarse grid
the ``land`` rule still moves a coastal cell's sea emissions onto its country.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import same_grid
from gosat_pipeline.statevector import REST_REGION

__all__ = ["ATTRIBUTION_RULES", "attribute_emissions"]

#: Allowed attribution rules.
ATTRIBUTION_RULES: tuple[str, ...] = ("land", "area")


def attribute_emissions(
    flux: xr.DataArray,
    masks: xr.DataArray,
    *,
    rule: str = "land",
    roles: dict[str, str] | None = None,
    rest: bool = True,
) -> xr.DataArray:
    """Split a flux field into one field per region (and the rest of the domain).

    Parameters
    ----------
    flux : xarray.DataArray
        kg m-2 s-1 on ``(latitude, longitude)`` or ``(sector, latitude, longitude)``.
    masks : xarray.DataArray
        Area fractions ``(region, latitude, longitude)`` on the same grid, non-group
        regions only (they must not overlap: their sum is at most 1 per cell).
    rule : {"land", "area"}
        See the module docstring.
    roles : dict, optional
        Region code -> role (``requested``, ``other``); default ``requested``.
    rest : bool
        Append the rest-of-domain field (region :data:`REST_REGION`, role ``rest``).

    Returns
    -------
    xarray.DataArray
        Dims ``(region, [sector,] latitude, longitude)``, kg m-2 s-1, coords ``region``,
        ``region_name``, ``region_role``. Summed over regions it equals ``flux`` (with
        ``rest``): nothing is lost.
    """
    if rule not in ATTRIBUTION_RULES:
        raise SchemaError(f"attribution rule {rule!r}; allowed: {list(ATTRIBUTION_RULES)}")
    if not same_grid(masks, flux):
        raise SchemaError("flux and region masks are on different grids; build the masks on the flux's grid")
    if "is_group" in masks.coords:
        masks = masks.isel(region=np.flatnonzero(~masks["is_group"].values.astype(bool)))
    fr = np.clip(masks.transpose("region", "latitude", "longitude").values.astype("float64"), 0.0, 1.0)
    total = fr.sum(axis=0)
    if np.any(total > 1.0 + 1e-6):
        raise SchemaError(
            f"region masks overlap (fractions sum to {total.max():.3f} in a cell); pass non-group regions"
        )
    if rule == "land":
        share = np.where(total > 0, fr / np.where(total > 0, total, 1.0), 0.0)
        rest_share = (total <= 0).astype("float64")
    else:
        share = fr
        rest_share = np.clip(1.0 - total, 0.0, 1.0)
    codes = [str(c) for c in masks["region"].values]
    names = [str(x) for x in masks["region_name"].values] if "region_name" in masks.coords else codes
    roles = roles or {}
    role_list = [roles.get(c, "requested") for c in codes]
    if rest:
        share = np.concatenate([share, rest_share[None]], axis=0)
        codes, names, role_list = [*codes, REST_REGION], [*names, "Rest of domain"], [*role_list, "rest"]
    f = flux.transpose(..., "latitude", "longitude")
    vals = np.nan_to_num(f.values.astype("float64"))
    if "sector" in f.dims:
        out = share[:, None] * vals[None]
        dims: tuple[str, ...] = ("region", "sector", "latitude", "longitude")
    else:
        out = share * vals[None]
        dims = ("region", "latitude", "longitude")
    coords: dict[str, Any] = {
        "region": ("region", codes),
        "region_name": ("region", names),
        "region_role": ("region", role_list),
        "latitude": f["latitude"],
        "longitude": f["longitude"],
    }
    if "sector" in f.dims:
        coords["sector"] = f["sector"]
    return xr.DataArray(
        out,
        dims=dims,
        coords=coords,
        name="emissions",
        attrs={
            **{k: v for k, v in flux.attrs.items() if k != "long_name"},
            "units": "kg m-2 s-1",
            "long_name": "emission flux attributed to each region",
            "attribution_rule": rule,
        },
    )
