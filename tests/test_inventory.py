"""Gridded prior inventories: every layout to one canonical flux, units, conservative regridding."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.errors import InventoryError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inventory import (
    CARBON_TO_CO2,
    open_prior_inventory,
    parse_unit,
    regrid_conservative,
)
from gosat_pipeline.testing.inventories import (
    make_prior_flux,
    write_cams_like,
    write_edgar_like,
    write_gfei_like,
    write_odiac_like,
)

GRID = GridSpec.from_resolution(2.0)


@pytest.fixture(scope="module")
def ch4() -> xr.DataArray:
    return make_prior_flux(GRID, "CH4", seed=3)


@pytest.mark.parametrize("layout", ["v7_emi", "v8_fluxes", "v8_emissions", "2024"])
def test_edgar_layouts_read_to_the_same_flux(tmp_path, ch4, layout):
    p = write_edgar_like(tmp_path / f"edgar_{layout}.nc", ch4, "CH4", layout, year=2020)
    out = open_prior_inventory(p, gas="CH4", year=2020 if layout == "2024" else None)
    assert out.name == "flux" and out.dims == ("latitude", "longitude")
    assert out.attrs["units"] == "kg m-2 s-1" and out.attrs["gas"] == "CH4"
    assert np.all(np.diff(out.latitude) > 0) and out.longitude.min() >= -180 and out.longitude.max() < 180
    # float32 storage in v7/2024 files: relative agreement to float32 precision
    np.testing.assert_allclose(out.values, ch4.values, rtol=2e-7 if layout in ("v7_emi", "2024") else 1e-12)


def test_gfei_odiac_cams_read_to_the_same_flux(tmp_path, ch4):
    gfei = open_prior_inventory(write_gfei_like(tmp_path / "Global_Fuel_Exploitation_Inventory_v2_2019_Coal.nc", ch4))
    np.testing.assert_allclose(gfei.values, ch4.values, rtol=1e-12)
    assert gfei.attrs["layout"] == "gfei" and gfei.attrs["gas"] == "CH4"
    co2 = make_prior_flux(GRID, "CO2", seed=4)
    odiac = open_prior_inventory(write_odiac_like(tmp_path / "odiac2023_1x1d_2020.nc", co2, year=2020), gas="CO2")
    np.testing.assert_allclose(odiac.values, co2.values, rtol=1e-12)
    kept = open_prior_inventory(tmp_path / "odiac2023_1x1d_2020.nc", sectors="keep")
    assert list(kept.sector.values) == ["land", "intl_bunker"]
    cams_p = write_cams_like(tmp_path / "CAMS-GLOB-ANT_Glb_0.1x0.1_anthro_ch4_v6.2_monthly.nc", ch4, year=2020)
    cams = open_prior_inventory(cams_p, year=2020)
    np.testing.assert_allclose(cams.values, ch4.values, rtol=1e-12)
    sect = open_prior_inventory(cams_p, sectors="keep")
    assert sect.dims == ("sector", "latitude", "longitude") and "sum" not in sect.sector.values
    np.testing.assert_allclose(sect.sum("sector").values, ch4.values, rtol=1e-12)


def test_sector_files_summed_or_kept_and_totals_not_double_counted(tmp_path):
    parts = make_prior_flux(GRID, "CH4", seed=5, sectors=["ENE", "AGS"])
    d = tmp_path / "v8"
    for s in ("ENE", "AGS"):
        write_edgar_like(d / f"v8.0_FT2022_GHG_CH4_2020_{s}_flx.nc", parts.sel(sector=s), "CH4", "v8_fluxes")
    total = open_prior_inventory(d, gas="CH4")
    np.testing.assert_allclose(total.values, parts.sum("sector").values, rtol=1e-12)
    kept = open_prior_inventory(d, sectors="keep")
    assert sorted(kept.sector.values) == ["AGS", "ENE"]
    write_edgar_like(d / "v8.0_FT2022_GHG_CH4_2020_TOTALS_flx.nc", parts.sum("sector"), "CH4", "v8_fluxes")
    with pytest.raises(InventoryError, match="double count"):
        open_prior_inventory(d)


def test_variable_override_year_selection_and_gas_mismatch(tmp_path, ch4):
    ds = xr.Dataset(
        {"post_oil": (("lat", "lon"), ch4.values * 1e3 * 86400 * 365.25, {"units": "g m-2 yr-1"})},
        coords={"lat": GRID.lat, "lon": GRID.lon},
    )
    ds.to_netcdf(tmp_path / "topdown.nc")
    out = open_prior_inventory(tmp_path / "topdown.nc", variable="post_oil", gas="CH4")
    np.testing.assert_allclose(out.values, ch4.values, rtol=1e-12)
    with pytest.raises(InventoryError, match="not found"):
        open_prior_inventory(tmp_path / "topdown.nc", variable="nope")
    p = write_edgar_like(tmp_path / "EDGAR_2024_GHG_CH4_2020_TOTALS_flx.nc", ch4, "CH4", "2024", year=2020)
    with pytest.raises(InventoryError, match="year 2019"):
        open_prior_inventory(p, year=2019)
    with pytest.raises(InventoryError, match="CO2"):
        open_prior_inventory(p, gas="CO2")


def test_unknown_unit_names_the_unit_variable_and_file(tmp_path, ch4):
    ds = xr.Dataset(
        {"fluxes": (("lat", "lon"), ch4.values, {"units": "furlongs per fortnight"})},
        coords={"lat": GRID.lat, "lon": GRID.lon},
    )
    p = tmp_path / "weird.nc"
    ds.to_netcdf(p)
    with pytest.raises(InventoryError) as err:
        open_prior_inventory(p)
    msg = str(err.value)
    assert "furlongs per fortnight" in msg and "fluxes" in msg and "weird.nc" in msg
    ds["fluxes"].attrs["units"] = "blorbs m-2 s-1"
    ds.to_netcdf(tmp_path / "weird2.nc")
    with pytest.raises(InventoryError, match="blorbs m-2 s-1"):
        open_prior_inventory(tmp_path / "weird2.nc")


@pytest.mark.parametrize(
    ("unit", "to_kg_m2_s"),
    [
        ("kg m-2 s-1", 1.0),
        ("kg/m2/s", 1.0),
        ("kg m**-2 s**-1", 1.0),
        ("Mg km-2 yr-1", 1e3 / 1e6 / (365.25 * 86400)),
        ("g m-2 d-1", 1e-3 / 86400),
        ("gC m-2 d-1", CARBON_TO_CO2 * 1e-3 / 86400),
        ("g(C) m-2 day-1", CARBON_TO_CO2 * 1e-3 / 86400),
    ],
)
def test_flux_unit_conversions_round_trip(unit, to_kg_m2_s):
    from gosat_pipeline.inventory import _species_factor

    pu = parse_unit(unit)
    f = pu.factor_to("kg/m**2/s") * _species_factor(pu, "CO2")
    assert f == pytest.approx(to_kg_m2_s, rel=1e-12)
    back = parse_unit(unit)
    assert (1.0 * f) / (back.factor_to("kg/m**2/s") * _species_factor(back, "CO2")) == pytest.approx(1.0, rel=1e-14)


def test_gfei_and_edgar_use_a_365_day_year():
    assert parse_unit("Mg km-2 a-1", year_days=365.0).factor_to("kg/m**2/s") == pytest.approx(1e-3 / (365 * 86400))


# ------------------------------------------------------------------------ regridding
def _mass(flux: xr.DataArray, grid: GridSpec) -> float:
    return float((flux.values * grid.cell_area()).sum())


@pytest.mark.parametrize("target", [0.75, 1.2, 2.5, (3.0, 4.5), 0.5])
def test_regrid_preserves_global_total(ch4, target):
    tg = GridSpec.from_resolution(target)
    out = regrid_conservative(ch4, tg)
    assert out.dims == ("latitude", "longitude") and out.shape == tg.shape
    assert _mass(out, tg) == pytest.approx(_mass(ch4, GRID), rel=1e-10)
    back = regrid_conservative(out, GRID)  # fine -> coarse, non-nesting
    assert _mass(back, GRID) == pytest.approx(_mass(ch4, GRID), rel=1e-10)


def test_regrid_regional_target_preserves_mass_inside_the_domain(ch4):
    tg = GridSpec.from_resolution(0.7, (95.3, -10.1, 140.9, 25.2))
    out = regrid_conservative(ch4, tg)
    # expected: each source cell's mass times its (sin-lat x lon) fraction inside the target box
    w, s, e, n = tg.bbox
    se = np.sin(np.deg2rad(GRID.lat_edges))
    flat = np.clip(np.minimum(se[1:], np.sin(np.deg2rad(n))) - np.maximum(se[:-1], np.sin(np.deg2rad(s))), 0, None)
    flon = np.clip(np.minimum(GRID.lon_edges[1:], e) - np.maximum(GRID.lon_edges[:-1], w), 0, None)
    frac = np.outer(flat / np.diff(se), flon / np.diff(GRID.lon_edges))
    expected = float((ch4.values * GRID.cell_area() * frac).sum())
    assert _mass(out, tg) == pytest.approx(expected, rel=1e-10)


def test_regrid_uniform_flux_stays_uniform_and_handles_0_360_sources():
    flux = xr.DataArray(np.full(GRID.shape, 2e-10), dims=("latitude", "longitude"), coords=GRID.coords())
    out = regrid_conservative(flux, GridSpec.from_resolution(1.5))
    np.testing.assert_allclose(out.values, 2e-10, rtol=1e-12)
    shifted = flux.assign_coords(longitude=np.mod(flux.longitude.values, 360.0)).sortby("longitude")
    out2 = regrid_conservative(shifted, GridSpec.from_resolution(1.5, (-20, -10, 20, 10)))
    np.testing.assert_allclose(out2.values, 2e-10, rtol=1e-12)


def test_regrid_keeps_sector_dimension():
    parts = make_prior_flux(GRID, "CH4", seed=1, sectors=["a", "b"])
    tg = GridSpec.from_resolution(3.0)
    out = regrid_conservative(parts, tg)
    assert out.dims == ("sector", "latitude", "longitude") and list(out.sector.values) == ["a", "b"]
    assert _mass(out.sel(sector="b"), tg) == pytest.approx(_mass(parts.sel(sector="b"), GRID), rel=1e-10)


# ------------------------------------------------------------------------ EDGAR as downloaded
def _zip(path, members: dict) -> object:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("_readme.html", "<html><title>EDGAR v6.0</title></html>")
        for name, src in members.items():
            zf.write(src, name)
    return path


def test_edgar_zip_is_read_in_place_and_matches_the_netcdf(tmp_path, ch4):
    nc = write_edgar_like(tmp_path / "v6.0_CH4_2015_TOTALS.0.1x0.1.nc", ch4, "CH4", "v7_emi")
    z = _zip(tmp_path / "v6.0_CH4_2015_TOTALS_nc.zip", {nc.name: nc})
    out = open_prior_inventory(z, gas="CH4")
    np.testing.assert_array_equal(out.values, open_prior_inventory(nc).values)
    assert out.attrs["source_file"].endswith("v6.0_CH4_2015_TOTALS_nc.zip/v6.0_CH4_2015_TOTALS.0.1x0.1.nc")


def test_zip_with_several_years_is_chosen_by_year_or_listed(tmp_path, ch4):
    a = write_edgar_like(tmp_path / "a" / "v6.0_CH4_2014_TOTALS.0.1x0.1.nc", ch4, "CH4", "v7_emi")
    b = write_edgar_like(tmp_path / "b" / "v6.0_CH4_2015_TOTALS.0.1x0.1.nc", ch4 * 2, "CH4", "v7_emi")
    z = _zip(tmp_path / "two_years.zip", {a.name: a, b.name: b})
    with pytest.raises(InventoryError, match=r"several years \[2014, 2015\].*prior.year") as err:
        open_prior_inventory(z)
    assert a.name in str(err.value) and b.name in str(err.value)
    np.testing.assert_allclose(open_prior_inventory(z, year=2015).values, ch4.values * 2, rtol=2e-7)
    with pytest.raises(InventoryError, match="no file for year 2019.*2014, 2015"):
        open_prior_inventory(z, year=2019)


def test_monthly_sector_files_are_day_weighted_not_summed(tmp_path):
    import pandas as pd

    base = make_prior_flux(GRID, "CH4", seed=7)
    d = tmp_path / "monthly"
    scale = np.arange(1, 13, dtype=float)
    for m in range(1, 13):
        write_edgar_like(d / f"v6.0_CH4_2015_{m}_ENE.0.1x0.1.nc", base * scale[m - 1], "CH4", "v7_emi")
        write_edgar_like(d / f"v6.0_CH4_2015_{m}_AGS.0.1x0.1.nc", base, "CH4", "v7_emi")
    days = pd.DatetimeIndex([f"2015-{m:02d}-01" for m in range(1, 13)]).days_in_month.values
    expected = base * (float((scale * days).sum() / days.sum()) + 1.0)
    out = open_prior_inventory(d, gas="CH4")
    np.testing.assert_allclose(out.values, expected.values, rtol=1e-6)
    kept = open_prior_inventory(d, gas="CH4", sectors="keep")
    assert sorted(kept.sector.values) == ["AGS", "ENE"]
    z = tmp_path / "v6.0_CH4_2015_monthly_ENE_nc.zip"
    _zip(z, {p.name: p for p in sorted(d.glob("*_ENE.*"))})
    np.testing.assert_allclose(open_prior_inventory(z).values, (expected - base).values, rtol=1e-6)


def test_downloads_that_are_not_netcdf_are_named(tmp_path, ch4):
    import gzip

    nc = write_edgar_like(tmp_path / "v6.0_CH4_2015_TOTALS.0.1x0.1.nc", ch4, "CH4", "v7_emi")
    gz = tmp_path / "odiac2023_1x1d_2020.nc.gz"
    gz.write_bytes(gzip.compress(nc.read_bytes()))
    with pytest.raises(InventoryError, match="gzip-compressed; unpack it first"):
        open_prior_inventory(gz)
    html = tmp_path / "v6.0_CH4_2015_TOTALS.0.1x0.1.nc.html"
    html.write_text("<html>404 not found</html>")
    with pytest.raises(InventoryError, match="not a netCDF file or a zip"):
        open_prior_inventory(html)
    empty = _zip(tmp_path / "readme_only.zip", {})
    with pytest.raises(InventoryError, match=r"holds no netCDF file \(members: \['_readme.html'\]\)"):
        open_prior_inventory(empty)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(InventoryError, match="damaged zip"):
        open_prior_inventory(broken)
    truncated = tmp_path / "v6.0_CH4_2016_TOTALS.0.1x0.1.nc"
    truncated.write_bytes(nc.read_bytes()[:300])
    with pytest.raises(InventoryError, match="cannot read as netCDF"):
        open_prior_inventory(truncated)
