"""Boundaries (Natural Earth offline, user files), fractional masks, region totals."""

from __future__ import annotations

import json
import warnings

import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr
from pyproj import Geod

from gosat_pipeline.errors import BoundaryError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.regions import (
    ASEAN_MEMBERS,
    SECONDS_PER_YEAR,
    load_boundaries,
    region_masks,
    region_totals,
)
from gosat_pipeline.testing.inventories import make_box_boundaries, make_prior_flux

ASEAN_BBOX = (90.0, -12.0, 142.0, 30.0)
GEOD = Geod(ellps="WGS84")


def _uniform(grid: GridSpec) -> xr.DataArray:
    """1 / seconds-per-year kg m-2 s-1: region totals (kg/yr) equal covered areas (m2)."""
    return xr.DataArray(
        np.full(grid.shape, 1.0 / SECONDS_PER_YEAR), dims=("latitude", "longitude"), coords=grid.coords()
    )


@pytest.fixture(scope="module")
def asean() -> gpd.GeoDataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_boundaries(iso3=list(ASEAN_MEMBERS), groups={"ASEAN": list(ASEAN_MEMBERS)})


@pytest.fixture(scope="module")
def asean_masks_1deg(asean) -> xr.DataArray:
    return region_masks(asean, GridSpec.from_resolution(1.0, ASEAN_BBOX), include_groups=True)


def test_natural_earth_minus99_fix_and_dissolve():
    b = load_boundaries(iso3=["FRA", "NOR", "AUS"])
    assert sorted(b["region"]) == ["AUS", "FRA", "NOR"]  # ISO_A3 is -99 for FRA and NOR in Natural Earth
    assert b["region"].is_unique  # AUS: mainland + Ashmore, Coral Sea, Indian Ocean Territories dissolved
    assert b.crs.to_epsg() == 4326 and set(b.columns) >= {"region", "name", "geometry"}
    assert b.set_index("region").loc["NOR", "name"] == "Norway"
    with pytest.raises(BoundaryError, match="QQX"):
        load_boundaries(iso3=["FRA", "QQX"])


def test_uniform_flux_over_large_countries_matches_geodesic_area(asean, asean_masks_1deg):
    grid = GridSpec.from_resolution(1.0, (110.0, -45.0, 156.0, -9.0))
    aus = load_boundaries(iso3=["AUS"])
    tot = region_totals(_uniform(grid), region_masks(aus, grid))
    true = abs(GEOD.geometry_area_perimeter(aus.geometry.iloc[0])[0])
    assert float(tot.sel(region="AUS")) == pytest.approx(true, rel=0.01)
    fine = GridSpec.from_resolution(0.5, ASEAN_BBOX)
    base = asean[~asean["is_group"]]
    tot = region_totals(_uniform(fine), region_masks(base, fine))
    for code in ("IDN", "THA", "MMR", "VNM"):
        true = abs(GEOD.geometry_area_perimeter(base.set_index("region").loc[code, "geometry"])[0])
        assert float(tot.sel(region=code)) == pytest.approx(true, rel=0.01), code


def test_fractions_sum_to_at_most_one_and_totals_close(asean_masks_1deg):
    m = asean_masks_1deg
    countries = m.sel(region=~m["is_group"])
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert float(countries.sum("region").max()) <= 1 + 1e-12
    grid = GridSpec.from_coords(m.latitude.values, m.longitude.values)
    flux = make_prior_flux(grid, "CH4", seed=2)
    tot = region_totals(flux, m)
    assert tot.attrs["units"] == "kg yr-1"
    grid_total = float((flux.values * grid.cell_area()).sum() * SECONDS_PER_YEAR)
    assert tot.attrs["grid_total_kg_per_yr"] == pytest.approx(grid_total, rel=1e-12)
    closure = float(tot.where(~m["is_group"], 0).sum()) + tot.attrs["outside_kg_per_yr"]
    assert closure == pytest.approx(grid_total, rel=1e-12)
    assert tot.attrs["outside_kg_per_yr"] > 0  # ocean and neighbours
    # ASEAN group = sum of its members
    assert float(tot.sel(region="ASEAN")) == pytest.approx(float(tot.sel(region=list(ASEAN_MEMBERS)).sum()), rel=1e-12)


def test_small_countries_listed_as_not_resolvable_not_dropped(asean_masks_1deg):
    m = asean_masks_1deg
    not_res = json.loads(m.attrs["not_resolvable"])
    assert {"SGP", "BRN"} <= set(not_res)
    assert {"SGP", "BRN"} <= set(m.region.values)  # still there
    assert not bool(m.sel(region="SGP")["resolvable"]) and bool(m.sel(region="IDN")["resolvable"])
    assert "IDN" not in not_res and m.dims == ("region", "latitude", "longitude")
    assert list(m.region_name.sel(region=["THA"]).values) == ["Thailand"]


def test_asean_group_polygon(asean):
    row = asean.set_index("region").loc["ASEAN"]
    assert bool(row["is_group"]) and row["members"].split(",") == list(ASEAN_MEMBERS)
    members = asean[~asean["is_group"]]
    a_group = abs(GEOD.geometry_area_perimeter(row["geometry"])[0])
    a_members = sum(abs(GEOD.geometry_area_perimeter(g)[0]) for g in members.geometry)
    assert a_group == pytest.approx(a_members, rel=1e-3)


def test_user_file_boxes_exact_fractions_and_user_polygon_group(tmp_path):
    boxes = make_box_boundaries()
    path = tmp_path / "boxes.geojson"
    boxes.to_file(path, driver="GeoJSON")
    poly = tmp_path / "basin.gpkg"
    gpd.GeoDataFrame({"iso3": ["XZZ"]}, geometry=[shapely.box(12, 2, 16, 6)], crs=4326).to_file(poly)
    b = load_boundaries(path, groups={"Basin": str(poly)})
    assert list(b["region"]) == ["XAA", "XAB", "XAC", "XAD", "Basin"]
    grid = GridSpec.from_resolution(1.0, (5.0, -5.0, 35.0, 20.0))
    m = region_masks(b, grid, include_groups=True)
    xaa = m.sel(region="XAA")
    assert float(xaa.sum()) == pytest.approx(100.0)  # 10 x 10 whole cells
    assert set(np.unique(xaa.values)) <= {0.0, 1.0}
    assert float(m.sel(region="Basin").sum()) == pytest.approx(16.0)
    assert json.loads(m.attrs["not_resolvable"]) == ["XAD"]
    area = grid.cell_area()
    assert float((m.sel(region="XAD") * area).sum()) > 0  # covered, though below one cell


def test_invalid_geometry_repaired_with_warning_or_named(tmp_path):
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    gdf = gpd.GeoDataFrame({"iso3": ["XBA", "XBB"]}, geometry=[bowtie, shapely.box(3, 0, 4, 1)], crs=4326)
    p = tmp_path / "bad.gpkg"
    gdf.to_file(p)
    with pytest.warns(UserWarning, match="XBA"):
        b = load_boundaries(p)
    assert b.geometry.is_valid.all()
    flat = shapely.Polygon([(0, 0), (1, 1), (2, 2), (0, 0)])
    gpd.GeoDataFrame({"iso3": ["XBC"]}, geometry=[flat], crs=4326).to_file(tmp_path / "flat.gpkg")
    with pytest.raises(BoundaryError, match="XBC"):
        load_boundaries(tmp_path / "flat.gpkg")


def test_missing_key_column_is_named(tmp_path):
    gpd.GeoDataFrame({"foo": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326).to_file(tmp_path / "k.gpkg")
    with pytest.raises(BoundaryError, match="iso3_column"):
        load_boundaries(tmp_path / "k.gpkg")
    b = load_boundaries(tmp_path / "k.gpkg", iso3_column="foo")
    assert list(b["region"]) == ["a"]


def test_fractions_computed_in_bands_of_rows_equal_one_pass(asean):
    """Fine grids (issue 19): the masks are sampled in bands of rows, so regionmask's 10 x 10
    samples per cell never exist for the whole grid at once; every cell's fraction is the same as
    in one pass (bands of 2 to 4 rows here, a last band of one row taken with its neighbour)."""
    from gosat_pipeline.regions import _crop, _frac_regionmask

    grid = GridSpec.from_resolution(0.5, (96.0, 0.0, 110.0, 20.5))  # 41 rows: the last band has one
    gdf = _crop(asean[~asean["is_group"].astype(bool)].reset_index(drop=True), grid)
    gdf = gdf[~gdf.geometry.is_empty].reset_index(drop=True)
    whole = _frac_regionmask(gdf, grid, max_cells=10**9)
    for max_cells in (grid.shape[1] * 2, grid.shape[1] * 3 + 5, 1):
        np.testing.assert_array_equal(_frac_regionmask(gdf, grid, max_cells=max_cells), whole)
    assert whole.sum() > 100  # THA, KHM, VNM, LAO, MYS ... cover many cells


def test_default_bands_shrink_with_the_number_of_regions(asean, monkeypatch):
    """regionmask holds (regions x 100 samples x cells) per call: the default band keeps regions x
    cells bounded, so a per-cell state's many regions take thinner bands, same fractions."""
    import gosat_pipeline.regions as regions_mod
    from gosat_pipeline.regions import _crop, _frac_regionmask

    grid = GridSpec.from_resolution(0.5, (96.0, 0.0, 110.0, 20.5))
    gdf = _crop(asean[~asean["is_group"].astype(bool)].reset_index(drop=True), grid)
    gdf = gdf[~gdf.geometry.is_empty].reset_index(drop=True)
    whole = _frac_regionmask(gdf, grid, max_cells=10**9)
    calls = []
    import regionmask

    orig = regionmask.Regions.mask_3D_frac_approx

    def counting(self, lon, lat, **kw):
        calls.append(len(lat))
        return orig(self, lon, lat, **kw)

    monkeypatch.setattr(regionmask.Regions, "mask_3D_frac_approx", counting)
    monkeypatch.setattr(regions_mod, "_MASK_REGION_CELLS", len(gdf) * grid.shape[1] * 5)  # 5 rows a band
    np.testing.assert_array_equal(_frac_regionmask(gdf, grid), whole)
    assert max(calls) <= 5 and len(calls) >= grid.shape[0] // 5
