"""Who owns a cell's emissions: the land and area attribution rules (DESIGN.md 5.3)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.attribution import attribute_emissions
from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.statevector import REST_REGION


def _case() -> tuple[xr.DataArray, xr.DataArray]:
    g = GridSpec.from_resolution(1.0, (0.0, 0.0, 3.0, 1.0))  # three cells in a row
    flux = xr.DataArray(np.array([[1.0, 2.0, 4.0]]) * 1e-9, dims=("latitude", "longitude"), coords=g.coords())
    # cell 0: all A; cell 1: 30 % A, 20 % B, half sea; cell 2: open sea
    fr = np.array([[[1.0, 0.3, 0.0]], [[0.0, 0.2, 0.0]]])
    masks = xr.DataArray(
        fr,
        dims=("region", "latitude", "longitude"),
        coords={"region": ["AAA", "BBB"], "region_name": ("region", ["A", "B"]), **g.coords()},
    )
    return flux, masks


def test_land_rule_gives_a_coastal_cell_to_its_land() -> None:
    flux, masks = _case()
    em = attribute_emissions(flux, masks, rule="land", roles={"BBB": "other"})
    assert list(em["region"].values) == ["AAA", "BBB", REST_REGION]
    assert list(em["region_role"].values) == ["requested", "other", "rest"]
    v = em.values[:, 0, :] / 1e-9
    np.testing.assert_allclose(v[0], [1.0, 2.0 * 0.6, 0.0])  # A: all of cell 0, 3/5 of cell 1
    np.testing.assert_allclose(v[1], [0.0, 2.0 * 0.4, 0.0])
    np.testing.assert_allclose(v[2], [0.0, 0.0, 4.0])  # the open-sea cell is the rest of the domain
    np.testing.assert_allclose(em.sum("region").values, flux.values)  # nothing lost


def test_area_rule_leaves_the_sea_part_to_the_rest() -> None:
    flux, masks = _case()
    em = attribute_emissions(flux, masks, rule="area")
    v = em.values[:, 0, :] / 1e-9
    np.testing.assert_allclose(v[0], [1.0, 0.6, 0.0])
    np.testing.assert_allclose(v[2], [0.0, 1.0, 4.0])
    np.testing.assert_allclose(em.sum("region").values, flux.values)


def test_sectors_and_bad_inputs() -> None:
    flux, masks = _case()
    sec = xr.concat([flux, 2 * flux], dim="sector").assign_coords(sector=["a", "b"])
    em = attribute_emissions(sec, masks)
    assert em.dims == ("region", "sector", "latitude", "longitude")
    np.testing.assert_allclose(em.sum("region").values, sec.values)
    with pytest.raises(SchemaError, match="rule"):
        attribute_emissions(flux, masks, rule="population")
    overlap = masks.copy(data=masks.values + 0.6)
    with pytest.raises(SchemaError, match="overlap"):
        attribute_emissions(flux, overlap)
    other = flux.assign_coords(longitude=flux["longitude"] + 10)
    with pytest.raises(SchemaError, match="different grids"):
        attribute_emissions(other, masks)
