"""Readers against the real L2 files in ../shared/real_samples (skipped when absent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io import detect_format, inspect_granule, open_granule, open_granules
from gosat_pipeline.quality import apply_quality_filter
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
    for canon, name in (
        ("xgas", "xch4"),
        ("xgas_uncertainty", "xch4_uncertainty"),
        ("latitude", "latitude"),
        ("surface_pressure", "surface_air_pressure_apriori"),
    ):
        np.testing.assert_array_equal(ds[canon].values, _direct(path, name), err_msg=canon)
    for canon, name in (
        ("averaging_kernel", "xch4_averaging_kernel"),
        ("pressure", "pressure_levels"),
        ("profile_apriori", "ch4_profile_apriori"),
        ("pressure_weight", "pressure_weight"),
    ):
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
    for src, fmt in (
        (_ocpr(real_samples, "20120101"), "cci_ocpr"),
        (real_samples / S5P, "tropomi_ch4"),
        (real_samples / SUBSETTED, "tropomi_ch4"),
        (real_samples / BLENDED, "tropomi_blended_ch4"),
        (_nies(real_samples, "20181103"), "nies_gosat_l2"),
    ):
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


# -- NIES GOSAT TANSO-FTS SWIR L2 V02.80 (nies_gosat/) ------------------------------------------------
#: soundings per daily file (valid XCO2 = numScan), read with h5py independently of the project
NIES_COUNTS = {
    "20181101": 369,
    "20181102": 331,
    "20181103": 305,
    "20181104": 368,
    "20181105": 334,
    "20181106": 354,
    "20181107": 314,
}


def _nies(real_samples: Path, day: str) -> Path:
    return real_samples / "nies_gosat" / f"GOSATTFTS{day}_02C01SV0280R{day[2:]}GU000.h5"


def _h5(path: Path, name: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        a = np.asarray(f[name][()], dtype=np.float64)
    a[a <= -9999] = np.nan
    return a


@pytest.mark.parametrize("day", list(NIES_COUNTS))
def test_nies_counts_uncertainty_levels_and_times(real_samples: Path, day: str) -> None:
    path = _nies(real_samples, day)
    xco2 = _h5(path, "Data/mixingRatio/XCO2")
    assert np.isfinite(xco2).sum() == NIES_COUNTS[day] == int(_h5(path, "scanAttribute/numScan")[0])
    assert np.isnan(_h5(path, "Data/mixingRatio/XCO2ExternalError")).all()  # the fact the reader must survive
    ds = open_granule(path).compute()
    validate_soundings(ds)
    # counts: no product flag, every released sounding is read and passes
    assert ds.sizes["sounding"] == NIES_COUNTS[day] == ds.attrs["n_soundings_good"] == ds.attrs["n_soundings_in_files"]
    np.testing.assert_array_equal(ds.xgas.values, xco2)
    # uncertainty: finite everywhere, the root-sum-square of the three components that hold values
    comps = [_h5(path, f"Data/mixingRatio/XCO2{e}") for e in ("InterferenceError", "RetrievalNoise", "SmoothingError")]
    assert np.isfinite(ds.xgas_uncertainty.values).all()
    np.testing.assert_allclose(ds.xgas_uncertainty.values, np.sqrt(sum(c**2 for c in comps)), rtol=1e-12)
    assert "XCO2ExternalError: every value is a fill value" in ds.attrs["components_left_out"]
    assert "ExternalError" not in ds.attrs["xgas_uncertainty_components"]
    # a max_uncertainty screen keeps the day (it dropped every sounding when the uncertainty was NaN)
    kept = apply_quality_filter(ds, max_uncertainty=3.0)
    assert kept.sizes["sounding"] >= 0.95 * NIES_COUNTS[day]
    # levels surface first: pressures fall upwards, the top layer's a priori is stratospheric, the surface's not
    p = ds.pressure.values.astype(np.float64)
    assert np.all(np.diff(p, axis=1) < 0) and np.all(p[:, 0] < ds.surface_pressure.values)
    xa = ds.profile_apriori.values.astype(np.float64)
    assert 392.0 < np.median(xa[:, -1]) < 399.0  # ~395 ppm: the file's first (top) layer
    assert np.median(xa[:, 0]) > 400.0 and np.mean(xa[:, -1] < xa[:, 0]) > 0.95
    raw_profile = _h5(path, "scanAttribute/referenceData/CO2Profile")
    np.testing.assert_array_equal(xa, raw_profile[:, ::-1].astype(np.float32))  # every array flipped together
    np.testing.assert_array_equal(
        ds.averaging_kernel.values, _h5(path, "Data/retrievalQuality/columnAveragingKernel")[:, ::-1].astype(np.float32)
    )
    # weights from the dry-air columns sum to 1 and give the file's own a-priori column
    np.testing.assert_allclose(ds.pressure_weight.values.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ds.xgas_apriori.values, _h5(path, "scanAttribute/referenceData/XCO2"), atol=2e-3)
    # times within the file's day
    t = ds.time.values
    assert not np.isnat(t).any()
    assert (t >= np.datetime64(f"{day[:4]}-{day[4:6]}-{day[6:]}")).all()
    assert (t < np.datetime64(f"{day[:4]}-{day[4:6]}-{day[6:]}") + np.timedelta64(1, "D")).all()
    assert ds.attrs["product_version"] == "V02.80" and ds.attrs["reader"] == "nies_gosat_l2"


def test_nies_week_as_one_batch(real_samples: Path) -> None:
    ds = open_granules(str(real_samples / "nies_gosat" / "GOSATTFTS*.h5"), gas="CO2")
    assert ds.sizes["sounding"] == sum(NIES_COUNTS.values()) and ds.sizes["level"] == 15
    assert json.loads(ds.attrs["skipped_inputs"]) == [] and ds.attrs["n_duplicate_soundings"] == 0
    assert "XCO2ExternalError: every value is a fill value" in ds.attrs["components_left_out"]
    assert "(in " not in ds.attrs["components_left_out"]  # the same in all seven files
    assert detect_format(_nies(real_samples, "20181101")) == "nies_gosat_l2"


# -- TROPOMI subsets ----------------------------------------------------------------------------------
SUBSETTED = "tropomi/S5P_OFFL_L2_CH4_20190311T101655_20190311T115825_07293_01_010202_20190317T121015_subsetted.nc4"


def test_tropomi_subset_with_broken_delta_time_is_an_error_naming_it(real_samples: Path) -> None:
    path = real_samples / SUBSETTED
    for _ in range(2):  # a second open in the same process: no false "truncated or corrupt HDF5 file"
        assert detect_format(path) == "tropomi_ch4"  # by content: the name is not the ESA pattern
        for screen in (True, False):
            with pytest.raises(GranuleError) as info:
                open_granule(path, screen=screen)
            msg = str(info.value)
            assert "'PRODUCT/delta_time' has no units attribute" in msg and "truncated" not in msg
            assert "outside the granule's time_coverage_start/end (2019-03-11T10:38:29Z to 2019-03-11T11:36:52Z)" in msg


def test_tropomi_sub_times_within_coverage_and_second_open(real_samples: Path) -> None:
    path = real_samples / S5P
    a = open_granule(path, screen=False)
    b = open_granule(path, screen=False)  # the first handle is still cached
    t = b.time.values
    np.testing.assert_array_equal(a.time.values, t)
    assert (t >= np.datetime64("2019-03-11T10:38:29")).all() and (t <= np.datetime64("2019-03-11T11:36:52")).all()
    assert b.attrs["time_source"] == "PRODUCT/delta_time"


# -- the blended TROPOMI+GOSAT product ----------------------------------------------------------------
BLENDED = "tropomi/S5P_BLND_L2__CH4____20180501T201854_20180501T220024_02844_03_020400_20230614T000922.nc"


def test_blended_counts_values_levels_and_times(real_samples: Path) -> None:
    path = real_samples / BLENDED
    with netCDF4.Dataset(path) as nc:
        n = len(nc.dimensions["nobs"])
        qa = nc["qa_value"][:].filled(np.nan)
        kind = nc["surface_classification"][:].filled(255).astype(int) & 3
        chi2 = nc["chi_square_SWIR"][:].filled(np.nan)
        blended = nc["methane_mixing_ratio_blended"][:].filled(np.nan).astype(np.float64)
        raw = nc["methane_mixing_ratio"][:].filled(np.nan).astype(np.float64)
        precision = nc["methane_mixing_ratio_precision"][:].filled(np.nan).astype(np.float64)
        ca = nc["methane_profile_apriori"][:].filled(np.nan).astype(np.float64)
        dry = nc["dry_air_subcolumns"][:].filled(np.nan).astype(np.float64)
        ak = nc["column_averaging_kernel"][:].filled(np.nan).astype(np.float64)
    good = (qa >= 0.5) & (kind != 3) & ~((kind == 2) & (chi2 > 20000)) & np.isfinite(blended)
    assert n == 1858 and good.sum() == 1807  # 49 coastal and 2 poorly fitted inland-water pixels out
    ds = open_granule(path).compute()
    validate_soundings(ds)
    assert detect_format(path) == "tropomi_blended_ch4" and ds.attrs["reader"] == "tropomi_blended_ch4"
    assert ds.sizes["sounding"] == good.sum() and ds.attrs["n_soundings_in_files"] == n
    np.testing.assert_array_equal(ds.xgas.values, blended[good])
    np.testing.assert_array_equal(ds.xgas_uncertainty.values, precision[good])
    assert np.isfinite(ds.xgas_uncertainty.values).all()
    np.testing.assert_array_equal(open_granule(path, bias_corrected=False).xgas.values, raw[good])
    t = ds.time.values  # within the orbit in the name
    assert (t >= np.datetime64("2018-05-01T20:18:54")).all() and (t <= np.datetime64("2018-05-01T22:00:24")).all()
    # surface first: the file's first layer is the stratospheric one
    xa = ds.profile_apriori.values.astype(np.float64)
    assert np.median(xa[:, -1]) < 1750.0 < np.median(xa[:, 0])
    assert np.all(np.diff(ds.pressure.values, axis=1) < 0)
    np.testing.assert_allclose(ds.pressure_weight.values.sum(axis=1), 1.0, rtol=1e-5)
    # the generic form equals the partial-column form of the file's own top-first arrays
    rng = np.random.default_rng(1)
    x_model = 1.0e-9 * (1850.0 + 30.0 * rng.standard_normal((int(good.sum()), 12)))  # top first, mol/mol
    form2 = 1e9 * np.sum(ca[good] + ak[good] * (x_model * dry[good] - ca[good]), axis=1) / dry[good].sum(axis=1)
    h, a = (ds[k].values.astype(np.float64) for k in ("pressure_weight", "averaging_kernel"))
    generic = ds.xgas_apriori.values + np.sum(h * a * (1e9 * x_model[:, ::-1] - xa), axis=1)
    np.testing.assert_allclose(generic, form2, rtol=1e-6)


# -- inspect on every real L2 sample ------------------------------------------------------------------
def _l2_samples(real_samples: Path) -> list[Path]:
    return [
        *(_ocpr(real_samples, d) for d in OCPR_DAYS),
        real_samples / S5P,
        real_samples / SUBSETTED,
        real_samples / BLENDED,
        *(_nies(real_samples, d) for d in NIES_COUNTS),
    ]


def test_inspect_every_real_l2_sample(real_samples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gosat_pipeline.cli import main

    expected = {  # reader, soundings in the file, passing the product screen
        _ocpr(real_samples, "20120101").name: ("cci_ocpr", 2417, 1053),
        _ocpr(real_samples, "20120102").name: ("cci_ocpr", 2278, 959),
        S5P: ("tropomi_ch4", 3, 0),
        Path(BLENDED).name: ("tropomi_blended_ch4", 1858, 1807),
        **{_nies(real_samples, d).name: ("nies_gosat_l2", c, c) for d, c in NIES_COUNTS.items()},
    }
    seen = 0
    for path in _l2_samples(real_samples):
        assert path.is_file(), path
        capsys.readouterr()
        rc = main(["inspect", str(path)])
        out, err = capsys.readouterr()
        if path.name == Path(SUBSETTED).name:  # times cannot be derived: one line naming the variable and reader
            assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1
            assert "'PRODUCT/delta_time'" in err and "(read as tropomi_ch4, recognised by its content)" in err
            continue
        assert rc == 0 and err == "", err
        reader, total, passing = expected[path.name]
        rows = {ln.split("  ", 1)[0].strip(): ln.split("  ", 1)[-1].strip() for ln in out.splitlines() if ln.strip()}
        assert rows["reader"].startswith(f"{reader}: ")
        assert rows["soundings"] == f"{total} in the file, {passing} pass the product screen"
        first, _, last = rows["time (UTC)"].partition(" to ")
        assert first[:2] == "20" and first[10] == "T" and first[19] == "Z" and last[19] == "Z", rows["time (UTC)"]
        assert rows["levels"].endswith("surface first")
        if reader == "nies_gosat_l2":
            assert rows["left out"].startswith("Data/mixingRatio/XCO2ExternalError: every value is a fill value")
        else:
            assert rows["left out"] == "nothing"
        seen += 1
    assert seen == len(expected) == 11
