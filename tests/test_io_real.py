"""Readers against the real L2 files in ../shared/real_samples (skipped when absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from gosat_pipeline.io import detect_format, inspect_granule, open_granule, open_granules
from gosat_pipeline.schema import validate_soundings

pytestmark = pytest.mark.real_samples

OCPR_DAYS = ["20120101", "20120102"]
S5P = "S5P_OFFL_L2__CH4____20190311T101655_20190311T115825_07293_01_010202_20190317T121015.SUB.nc4"


def _ocpr(real_samples: Path, day: str) -> Path:
    return real_samples / f"ESACCI-GHG-L2-CH4-GOSAT-OCPR-{day}-fv7.2.nc"


def _direct(path: Path, name: str) -> np.ndarray:
    with netCDF4.Dataset(path) as nc:
        v = nc[name]
        v.set_auto_maskandscale(False)
        a = np.asarray(v[...], dtype=np.float64)
    a[a <= -9998.99] = np.nan  # the bare -9999.99 fill (no attribute)
    return a


@pytest.mark.parametrize("day", OCPR_DAYS)
def test_ocpr_good_count_matches_file_attribute(real_samples: Path, day: str) -> None:
    path = _ocpr(real_samples, day)
    with netCDF4.Dataset(path) as nc:
        expected, total = int(nc.total_good_retrievals), int(nc.total_retrievals)
    ds = open_granule(path)
    assert ds.sizes["sounding"] == expected
    assert open_granule(path, screen=False).sizes["sounding"] == total
    validate_soundings(ds)


@pytest.mark.parametrize("day", OCPR_DAYS)
def test_ocpr_values_equal_direct_read(real_samples: Path, day: str) -> None:
    path = _ocpr(real_samples, day)
    ds = open_granule(path, screen=False).compute()
    flag = _direct(path, "xch4_quality_flag")
    for canon, name in (("xgas", "xch4"), ("xgas_uncertainty", "xch4_uncertainty"), ("latitude", "latitude"),
                        ("surface_pressure", "surface_air_pressure_apriori")):  # fmt: skip
        np.testing.assert_array_equal(ds[canon].values, _direct(path, name), err_msg=canon)
    for canon, name in (("averaging_kernel", "xch4_averaging_kernel"), ("pressure", "pressure_levels"),
                        ("profile_apriori", "ch4_profile_apriori"), ("pressure_weight", "pressure_weight")):  # fmt: skip
        np.testing.assert_array_equal(ds[canon].values.astype(np.float64), _direct(path, name), err_msg=canon)
    # every fill became NaN; fills are bad soundings; good ones are the file's flag == 0
    assert not (ds.xgas.values < -9000).any() and not (ds.pressure.values < -9000).any()
    assert np.isnan(ds.xgas.values).sum() > 0 or day != "20120101"
    np.testing.assert_array_equal(ds.quality_flag.values == 0, (flag == 0) & np.isfinite(ds.xgas.values))
    secs = _direct(path, "time")
    np.testing.assert_array_equal(ds.time.values, (secs * 1e9).astype("int64").astype("datetime64[ns]"))
    raw = open_granule(path, screen=False, bias_corrected=False).xgas.values
    np.testing.assert_array_equal(raw, _direct(path, "raw_xch4"))
    # surface first, as stored: level 0 is the surface pressure
    good = ds.quality_flag.values == 0
    np.testing.assert_array_equal(ds.pressure.values[good, 0].astype(float), ds.surface_pressure.values[good])
    assert ds.surface_type.isin([0, 1]).all()


def test_ocpr_apriori_column_is_plausible(real_samples: Path) -> None:
    ds = open_granule(_ocpr(real_samples, "20120101")).compute()
    med_xa, med_x = float(ds.xgas_apriori.median()), float(ds.xgas.median())
    assert abs(med_xa - 1780.0) < 2.0 and abs(med_x - 1784.3) < 2.0  # L2_FORMATS.md b.1 sanity check


def test_ocpr_batch_of_two_days(real_samples: Path) -> None:
    ds = open_granules(str(real_samples / "ESACCI-GHG-L2-CH4-GOSAT-OCPR-*-fv7.2.nc"), gas="CH4")
    assert ds.sizes["sounding"] == 1053 + 959
    assert len(set(ds.source_file.values)) == 2


def test_detect_real_files_by_content(real_samples: Path, tmp_path: Path) -> None:
    for src, fmt in ((_ocpr(real_samples, "20120101"), "cci_ocpr"), (real_samples / S5P, "tropomi_ch4")):
        assert detect_format(src) == fmt
        anon = tmp_path / f"anonymous{src.suffix}"
        shutil.copy(src, anon)
        assert detect_format(anon) == fmt


def test_tropomi_default_screen_is_empty_cleanly(real_samples: Path) -> None:
    ds = open_granule(real_samples / S5P)
    assert ds.sizes["sounding"] == 0 and ds.sizes["level"] == 12
    validate_soundings(ds)
    assert ds.attrs["n_soundings_good"] == 0 and ds.attrs["n_soundings_in_files"] == 3


def test_tropomi_three_raw_pixels(real_samples: Path) -> None:
    path = real_samples / S5P
    ds = open_granule(path, screen=False).compute()
    assert ds.sizes["sounding"] == 3
    assert (ds.quality_flag.values == 1).all()  # qa_value 0.4 < 0.5
    with netCDF4.Dataset(path) as nc:
        bc = nc["PRODUCT/methane_mixing_ratio_bias_corrected"][:].compressed()
        raw = nc["PRODUCT/methane_mixing_ratio"][:].compressed()
        grp = nc["PRODUCT/SUPPORT_DATA"]
        sel = ~np.ma.getmaskarray(nc["PRODUCT/methane_mixing_ratio"][:])
        ak = nc["PRODUCT/SUPPORT_DATA/DETAILED_RESULTS/column_averaging_kernel"][:][sel]
        ca = grp["INPUT_DATA/methane_profile_apriori"][:][sel]
        dry = grp["INPUT_DATA/dry_air_subcolumns"][:][sel]
    np.testing.assert_allclose(ds.xgas.values, bc, rtol=1e-7)
    np.testing.assert_allclose(open_granule(path, screen=False, bias_corrected=False).xgas.values, raw, rtol=1e-7)
    assert abs(ds.xgas_apriori.values[0] - 1837.6) < 0.1  # L2_FORMATS.md d: a-priori XCH4 of the sample pixel
    p = ds.pressure.values
    assert np.all(p[:, 0] > p[:, -1])
    # the generic form with h, a, x_a equals the TROPOMI partial-column form (IMI, ATBD eq. 46)
    rng = np.random.default_rng(0)
    x_model = 1.0e-9 * (1850.0 + 30.0 * rng.standard_normal((3, 12)))  # mol/mol, top-first like the file
    form2 = 1e9 * np.sum(ca + ak * (x_model * dry - ca), axis=1) / np.sum(dry, axis=1)
    xs = 1e9 * x_model[:, ::-1]  # surface-first, ppb
    h, a, xa = (ds[n].values.astype(np.float64) for n in ("pressure_weight", "averaging_kernel", "profile_apriori"))
    generic = ds.xgas_apriori.values + np.sum(h * a * (xs - xa), axis=1)
    np.testing.assert_allclose(generic, form2, rtol=1e-6)


def test_inspect_real_files(real_samples: Path) -> None:
    info = inspect_granule(_ocpr(real_samples, "20120101"))
    assert info["format"] == "cci_ocpr" and info["product_version"] == "v7.2"
    assert info["n_soundings"] == 2417 and info["n_good"] == 1053 and info["units"] == "ppb"
    t = inspect_granule(real_samples / S5P)
    assert t["n_soundings"] == 3 and t["n_good"] == 0 and t["xgas_range_good"] is None
