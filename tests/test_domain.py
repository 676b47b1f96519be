"""Domain accounting: grid-independent national totals (issue 22) and domain shares (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.attribution import attribute_emissions
from gosat_pipeline.domain import national_emission, prior_emissions, requested_regions
from gosat_pipeline.errors import BoundaryError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inventory import regrid_conservative, source_grid
from gosat_pipeline.regions import ASEAN_MEMBERS, domain_regions, load_boundaries, region_masks
from gosat_pipeline.schema import SECONDS_PER_YEAR

ASEAN_BBOX = (90.0, -12.0, 142.0, 30.0)
SOURCE = GridSpec.from_resolution(0.25, (70.0, -20.0, 150.0, 56.0))  # holds China whole


@pytest.fixture(scope="module")
def boundaries():
    return load_boundaries()


@pytest.fixture(scope="module")
def source_flux(boundaries) -> xr.DataArray:
    """An inventory at 0.25 degree whose emissions sit on land only, as EDGAR's do (CH4-like, ~1e-10)."""
    rng = np.random.default_rng(7)
    near = domain_regions(boundaries, SOURCE.bbox)
    land = (
        region_masks(boundaries[boundaries["region"].isin(list(near["region"]))], SOURCE, min_fraction=0.0)
        .sum("region")
        .values
    )
    flux = 1e-10 * np.exp(rng.normal(0.0, 0.8, SOURCE.shape)) * np.clip(land, 0.0, 1.0)
    return xr.DataArray(
        flux, dims=("latitude", "longitude"), coords=SOURCE.coords(), name="flux", attrs={"units": "kg m-2 s-1"}
    )


def _direct_sums(flux: xr.DataArray, boundaries, codes) -> dict[str, float]:
    """Each country's emission summed on the inventory's own grid (land rule), Tg yr-1."""
    near = domain_regions(boundaries, SOURCE.bbox)
    masks = region_masks(boundaries[boundaries["region"].isin(list(near["region"]))], SOURCE, min_fraction=0.0)
    fields = attribute_emissions(flux, masks, rest=False)
    area = SOURCE.cell_area()
    return {c: float((fields.sel(region=c).values * area).sum() * SECONDS_PER_YEAR / 1e9) for c in codes}


def _totals(em: xr.DataArray, grid: GridSpec) -> dict[str, float]:
    tot = (em.values * grid.cell_area()).sum(axis=(-2, -1)) * SECONDS_PER_YEAR / 1e9
    return dict(zip(em["region"].values.astype(str), tot, strict=True))


@pytest.mark.slow
def test_prior_totals_do_not_depend_on_the_inversion_grid(source_flux, boundaries) -> None:
    """Each ASEAN member's prior total equals the direct sum on the source grid at 1, 0.5 and
    0.25 degree (within 1 %), Indonesia and the Philippines included; the old coarse-grid rule
    ((area fraction of a coarse cell) x (cell-mean flux)) loses their coastal emissions."""
    direct = _direct_sums(source_flux, boundaries, ASEAN_MEMBERS)
    for res in (1.0, 0.5, 0.25):
        grid = GridSpec.from_resolution(res, ASEAN_BBOX)
        em = prior_emissions(source_flux, boundaries, grid, iso3=list(ASEAN_MEMBERS))
        got = _totals(em, grid)
        for c in ASEAN_MEMBERS:
            assert got[c] == pytest.approx(direct[c], rel=0.01), (res, c)
        # nothing is lost: the regions and the rest of the domain hold all of the flux in the box
        assert sum(got.values()) == pytest.approx(
            float((regrid_conservative(source_flux, grid).values * grid.cell_area()).sum() * SECONDS_PER_YEAR / 1e9),
            rel=1e-9,
        )
    coarse = GridSpec.from_resolution(1.0, ASEAN_BBOX)
    old_flux = regrid_conservative(source_flux, coarse)
    old_masks = region_masks(boundaries[boundaries["region"].isin(list(ASEAN_MEMBERS))], coarse)
    old = {
        c: float((old_flux.values * old_masks.sel(region=c).values * coarse.cell_area()).sum() * SECONDS_PER_YEAR / 1e9)
        for c in ("IDN", "PHL")
    }
    assert old["PHL"] < 0.9 * direct["PHL"] and old["IDN"] < 0.95 * direct["IDN"]


def test_partial_countries_carry_their_domain_shares(source_flux, boundaries) -> None:
    grid = GridSpec.from_resolution(1.0, (96.0, 4.0, 111.0, 25.0))  # the Mekong countries
    em = prior_emissions(source_flux, boundaries, grid, iso3=["THA", "VNM", "KHM", "LAO"])
    roles = dict(zip(em["region"].values, em["region_role"].values, strict=True))
    assert {c for c, r in roles.items() if r == "requested"} == {"THA", "VNM", "KHM", "LAO"}
    assert roles["REST"] == "rest" and roles["MMR"] == roles["MYS"] == roles["CHN"] == "other"
    share_a = dict(zip(em["region"].values, em["region_domain_share_area"].values, strict=True))
    share_e = dict(zip(em["region"].values, em["region_domain_share_emission"].values, strict=True))
    for c in ("THA", "VNM", "KHM", "LAO"):
        assert share_a[c] == pytest.approx(1.0, abs=1e-3) and share_e[c] == 1.0
    for c in ("MMR", "MYS", "CHN"):
        assert 0.0 < share_a[c] < 0.95 and 0.0 < share_e[c] < 0.95, c
    # the emission share is the in-domain prior over the whole country's, both from the inventory
    inside = _totals(em, grid)["MMR"] * 1e9
    assert share_e["MMR"] == pytest.approx(inside / national_emission(source_flux, boundaries, "MMR"), rel=1e-9)
    # a country the inventory does not cover whole has an unknown emission share
    small = source_flux.sel(longitude=slice(96.0, 112.0))
    em2 = prior_emissions(small, boundaries, grid, iso3=["THA"])
    assert np.isnan(dict(zip(em2["region"].values, em2["region_domain_share_emission"].values, strict=True))["CHN"])


def test_iso3_null_means_the_countries_inside_the_domain(boundaries) -> None:
    dom = domain_regions(boundaries, (96.0, 4.0, 111.0, 25.0))
    got = requested_regions(dom, None, boundaries)
    assert set(got) == set(dom["region"]) and {"THA", "MMR", "CHN"} <= set(got) and "IDN" in got
    assert "FRA" not in got and len(got) < 20  # not the ~250 countries of the world
    with pytest.raises(BoundaryError, match="not region codes"):
        requested_regions(dom, ["THA", "XYZ"], boundaries)
    with pytest.raises(BoundaryError, match="no area inside domain.bbox"):
        requested_regions(dom, ["THA", "AUS"], boundaries)


def test_source_grid_of_a_cropped_inventory(source_flux) -> None:
    g = source_grid(source_flux)
    assert g.shape == SOURCE.shape and np.allclose(g.lat_edges, SOURCE.lat_edges)
