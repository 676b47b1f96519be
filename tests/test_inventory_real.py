"""Inventories and reported totals read from the real public files in ../shared/real_samples.

Expected values are read here independently (netCDF4, openpyxl, csv), never through the
package, and the figures named in ../shared/real_samples/README.md are asserted.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest

from gosat_pipeline.inventory import open_prior_inventory

pytestmark = pytest.mark.real_samples

EDGAR_NC = "v6.0_CH4_2015_TOTALS.5.3x5.1.nc"


def _netcdf4_emi(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    with netCDF4.Dataset(path) as nc:
        v = nc["emi_ch4"]
        return (
            np.asarray(v[:], dtype="float64"),
            np.asarray(nc["lat"][:], dtype="float64"),
            np.asarray(nc["lon"][:], dtype="float64"),
            v.units,
        )


def test_edgar_v6_file_and_its_download_zip_read_the_file_values(real_samples: Path, tmp_path: Path) -> None:
    nc_path = real_samples / "edgar" / EDGAR_NC
    vals, lat, lon, units = _netcdf4_emi(nc_path)
    assert units == "kg m-2 s-1" and vals.shape == (35, 71)
    for src in (nc_path, real_samples / "edgar" / "TOTALS_nc.zip"):
        out = open_prior_inventory(src, gas="CH4")
        assert out.attrs["units"] == "kg m-2 s-1" and out.attrs["gas"] == "CH4"
        assert out.attrs["layout"] == "edgar_v7_emi"
        assert out.shape == (35, 71) and out.dtype == np.float64
        # the file's longitudes 0.05..359.95 wrap into [-180, 180); values stay in place
        assert float(out.longitude.min()) >= -180.0 and float(out.longitude.max()) < 180.0
        for i in (0, 17, 34):
            for j in (0, 35, 70):
                lo = (lon[j] + 180.0) % 360.0 - 180.0
                got = out.sel(latitude=lat[i], longitude=lo, method="nearest")
                assert float(got.latitude) == pytest.approx(lat[i]) and float(got.longitude) == pytest.approx(lo)
                assert float(got) == vals[i, j]  # kg m-2 s-1 both sides: no conversion
        assert float(out.sum()) == pytest.approx(float(vals.sum()), rel=1e-12)
    # the zip is read in place: nothing unpacked beside it
    with zipfile.ZipFile(real_samples / "edgar" / "TOTALS_nc.zip") as zf:
        assert sorted(zf.namelist()) == ["_readme.html", EDGAR_NC]
    assert not (real_samples / "edgar" / "_readme.html").exists()


# ------------------------------------------------------------------------ UNFCCC CRF workbook
CRF = "national_totals/GBR_2023_2021_13042023_170954.xlsx"


def _sheet_rows(path: Path, sheet: str) -> list[tuple]:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        return list(wb[sheet].iter_rows(values_only=True))
    finally:
        wb.close()


def _row(rows: list[tuple], label: str, after: str | None = None) -> tuple:
    start = 0 if after is None else next(i for i, r in enumerate(rows) if r[0] and str(r[0]).startswith(after))
    return next(r for r in rows[start:] if r[0] and str(r[0]).strip().startswith(label))


def test_crf_national_totals_of_the_real_gbr_workbook(real_samples: Path) -> None:
    from gosat_pipeline.inventory import read_reported_totals, reported_for

    path = real_samples / CRF
    tot = read_reported_totals(path, categories=["0"]).set_index(["gas", "year"])
    assert set(tot["area"]) == {"GBR"} and set(tot["source"]) == {"UNFCCC-CRF-2023"}
    assert set(tot["category_scheme"]) == {"CRF2013"}
    ch4 = tot.loc[("CH4", 2021)]
    assert ch4["value"] == pytest.approx(2051.168, abs=5e-4) and ch4["unit"] == "kt CH4 / yr"
    assert ch4["value_tg_per_yr"] == pytest.approx(2.051168, abs=5e-7)
    assert tot.loc[("CO2", 2021), "value"] == pytest.approx(342591.1, abs=0.05)
    assert tot.loc[("CO2", 2021), "value_tg_per_yr"] == pytest.approx(342.5911, abs=5e-5)
    # the same cells read independently with openpyxl: Summary1.As1, row "Total national emissions and removals"
    summary = _row(_sheet_rows(path, "Summary1.As1"), "Total national emissions and removals")
    assert ch4["value"] == summary[2] and tot.loc[("CO2", 2021), "value"] == summary[1]
    assert tot.loc[("N2O", 2021), "value"] == summary[3]
    assert sorted(tot.loc["CH4"].index) == list(range(1990, 2022))
    # the default is the total without LULUCF, as reported_for (and so the comparison) takes it
    default = read_reported_totals(path, gases=["CH4"])
    assert set(default["gas"]) == {"CH4"} and set(default["category"]) == {"M.0.EL"}
    one = reported_for(default, gas="CH4", year=2021).iloc[0]
    assert one["category"] == "M.0.EL" and one["value_tg_per_yr"] == pytest.approx(1.847809, abs=5e-7)


def test_crf_ch4_trend_1990_2021_by_category_matches_table10s3(real_samples: Path) -> None:
    from gosat_pipeline.inventory import read_reported_totals

    path = real_samples / CRF
    levels = (["1", "2", "3", "4", "5", "6"], ["1.A", "1.B", "3.A", "3.B", "3.C", "5.A"], ["1.B.2"])
    frames = [read_reported_totals(path, gases=["CH4"], categories=lv) for lv in levels]  # one level at a time
    wide = pd.concat(frames).pivot_table(
        index="year", columns="category", values="value", aggfunc="first", dropna=False
    )
    assert list(wide.index) == list(range(1990, 2022))
    rows = _sheet_rows(path, "Table10s3")
    header = next(r for r in rows if r[0] and str(r[0]).startswith("GREENHOUSE GAS"))
    col = {int(v): j for j, v in enumerate(header) if v is not None and str(v).isdigit()}
    expect = {
        "1": _row(rows, "1. Energy"),
        "1.B.2": _row(rows, "2.  Oil and natural gas"),
        "3.A": _row(rows, "A.  Enteric fermentation"),
        "5.A": _row(rows, "A.  Solid waste disposal"),
        "4": _row(rows, "4. Land use"),
    }
    for code, cells in expect.items():
        for y in (1990, 2005, 2021):
            assert wide.loc[y, code] == pytest.approx(float(cells[col[y]]), rel=1e-12), (code, y)
    assert wide["3.C"].isna().all()  # rice cultivation: notation key NO, kept as not reported
    # internal consistency of the table: sectors sum to the totals every year
    totals = read_reported_totals(path, gases=["CH4"], categories=["M.0.EL"]).set_index("year")["value"]
    top = wide[["1", "2", "3", "5", "6"]].sum(axis=1, min_count=1)
    np.testing.assert_allclose(top.values, totals.loc[top.index].values, rtol=1e-9)
    with_lulucf = read_reported_totals(path, gases=["CH4"], categories=["0"]).set_index("year")["value"]
    np.testing.assert_allclose((top + wide["4"]).values, with_lulucf.loc[top.index].values, rtol=1e-9)


# ------------------------------------------------------------------------ PRIMAP
PRIMAP_CSV = "national_totals/Guetschow-et-al-2021-PRIMAP-crf96_2021-v1.csv"


def test_primap_crf_subset_reads_with_its_other_gases(real_samples: Path) -> None:
    import csv

    from gosat_pipeline.inventory import parse_unit, read_reported_totals

    path = real_samples / PRIMAP_CSV
    with path.open() as fh:
        raw = [r for r in csv.DictReader(fh)]
    want = next(r for r in raw if r["entity"] == "CH4" and r["category (IPCC1996)"] == "0")
    assert want["1990"] == "5697" and want["unit"] == "kt CH4 / yr"
    df = read_reported_totals(path)  # the whole file, C2F6 and CF4 rows included
    assert set(df["gas"]) == {"CH4", "C2F6", "CF4"}
    aus = df[(df["gas"] == "CH4") & (df["year"] == 1990)].iloc[0]
    assert aus["area"] == "AUS" and aus["category"] == "0" and aus["category_scheme"] == "IPCC1996"
    assert aus["value"] == 5697.0 and aus["value_tg_per_yr"] == pytest.approx(5.697, rel=1e-12)
    assert aus["source"] == "PRIMAP-crf_2021V1"
    c2f6 = df[(df["gas"] == "C2F6") & (df["year"] == 1990)].iloc[0]
    assert c2f6["unit"] == "t C2F6 / yr" and c2f6["value_tg_per_yr"] == pytest.approx(66.67e-6, rel=1e-12)
    for unit, species in (("t C2F6 / yr", "C2F6"), ("t CF4 / yr", "CF4"), ("t HFC134a / yr", "HFC134a")):
        assert parse_unit(unit).species == species
    # the run's gases only, through the YAML sidecar: the same CH4 rows
    via_yaml = read_reported_totals(path.with_suffix(".yaml"), gases=["CH4"])
    assert set(via_yaml["gas"]) == {"CH4"} and len(via_yaml) == 30
    assert via_yaml.set_index("year").loc[1990, "value"] == 5697.0


def test_primap2_native_netcdf(real_samples: Path) -> None:
    from gosat_pipeline.errors import ReportedTotalsError
    from gosat_pipeline.inventory import read_reported_totals

    path = real_samples / "national_totals" / "primap2_test_data_v2.5.1_final.nc"
    with netCDF4.Dataset(path) as nc:
        names = set(nc.variables)
        assert {"CO2", "CH4", "N2O", "SF6", "HFCS (AR5GWP100)", "HFCS (AR6GWP100)"} <= names
        areas = [str(a) for a in nc["area (ISO3)"][:]]
        cats = [str(c) for c in nc["category (IPCC2006_PRIMAP)"][:]]
        sources = [str(s) for s in nc["source"][:]]
        times = netCDF4.num2date(nc["time"][:], nc["time"].units, nc["time"].calendar)
        ch4 = np.asarray(nc["CH4"][:], dtype="float64")
        unit = nc["CH4"].units
    assert len(areas) == 7 and len(sources) == 9 and unit == "CH4 * kt / a"
    t, a, c, s = (
        next(i for i, tt in enumerate(times) if tt.year == 1990),
        areas.index("DEU"),
        cats.index("4"),
        sources.index("CRF 2023, 240108"),
    )
    df = read_reported_totals(path)
    assert set(df["gas"]) == {"CO2", "CH4", "N2O", "SF6"}  # GWP-weighted HFC baskets left out
    assert set(df["area"]) == set(areas) and set(df["source"]) == set(sources)
    assert set(df["category_scheme"]) == {"IPCC2006_PRIMAP"}
    crf = read_reported_totals(path, gases=["CH4"], source="CRF 2023, 240108")
    deu = crf[(crf["area"] == "DEU") & (crf["year"] == 1990)].set_index("category")
    assert deu.loc["4", "value"] == ch4[t, a, c, s] and deu.loc["4", "unit"] == "CH4 * kt / a"
    assert deu.loc["4", "value_tg_per_yr"] == pytest.approx(ch4[t, a, c, s] / 1000.0, rel=1e-12)
    # no national total in this file: the top-level categories of each series (2.B is part of 2)
    assert "2.B" not in deu.index and {"1.A", "1.B.2", "2", "4", "M.AG.ELV", "M.LULUCF"} <= set(deu.index)
    with pytest.raises(ReportedTotalsError, match=r"source: 'CRF 2024' is not in the table; sources are \["):
        read_reported_totals(path, source="CRF 2024")


# ------------------------------------------------------------------------ OCO-2 v10 MIP pilot budgets
OCO2 = "national_totals/pilot_topdown_CO2_Budget_countries_v1.csv"


def _oco2_raw(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    import csv

    lines = path.read_text().splitlines()
    assert lines[52].startswith("Alpha 3 Code,Year,")  # 52 descriptive lines, then the columns
    return {(r["Alpha 3 Code"], r["Year"]): r for r in csv.DictReader(lines[52:])}


def test_oco2_mip_pilot_budgets_as_a_reference(real_samples: Path) -> None:
    from gosat_pipeline.inventory import read_reported_totals, reported_for

    path = real_samples / OCO2
    raw = _oco2_raw(path)
    codes = {k[0] for k in raw}
    assert len(codes) == 201 and sum(c.startswith("Region_") for c in codes) == 14
    fossil = read_reported_totals(path)  # format detected from the header; fossil by default
    assert set(fossil["category"]) == {"M.0.EL"} and set(fossil["gas"]) == {"CO2"}
    assert fossil["area"].nunique() == 201 and sorted(set(fossil["year"])) == list(range(2015, 2021))
    assert "ASEAN" in set(fossil["area"])
    idn = fossil[(fossil["area"] == "IDN") & (fossil["year"] == 2018)].iloc[0]
    assert idn["value_tg_per_yr"] == pytest.approx(float(raw[("IDN", "2018")]["FF (TgCO2)"]), rel=1e-12)
    assert idn["sigma_tg_per_yr"] == pytest.approx(float(raw[("IDN", "2018")]["FF unc (TgCO2)"]), rel=1e-12)
    assert idn["uncertainty_source"] == "file (uncertainty_abs, 1 sigma)"
    net = read_reported_totals(path, categories=["0"])
    asean = net[(net["area"] == "ASEAN") & (net["year"] == 2019)].iloc[0]
    assert asean["value_tg_per_yr"] == pytest.approx(
        float(raw[("Region_ASEAN", "2019")]["LNLG NCE (TgCO2)"]), rel=1e-12
    )
    assert asean["sigma_tg_per_yr"] == pytest.approx(float(raw[("Region_ASEAN", "2019")]["LNLG NCE unc (TgCO2)"]))
    assert asean["source"].endswith("LNLG")
    insitu = read_reported_totals(path, categories=["0"], experiment="IS")
    tha = insitu[(insitu["area"] == "THA") & (insitu["year"] == 2016)].iloc[0]
    assert tha["value_tg_per_yr"] == pytest.approx(float(raw[("THA", "2016")]["IS NCE (TgCO2)"]), rel=1e-12)
    # the file's own 2015-2020 'mean' rows of FF: the mean of the years, and of their 1-sigma, as reported_for
    # averages a period (its NCE 'mean' is the ensemble's own multi-year estimate, left out by the reader)
    for area, key, col in (("ASEAN", "Region_ASEAN", "FF"), ("JPN", "JPN", "FF")):
        per = reported_for(fossil, gas="CO2", period="2015-2020").set_index("area").loc[area]
        assert per["n_years"] == 6
        assert per["value_tg_per_yr"] == pytest.approx(float(raw[(key, "mean")][f"{col} (TgCO2)"]), rel=1e-4)
        assert per["sigma_tg_per_yr"] == pytest.approx(float(raw[(key, "mean")][f"{col} unc (TgCO2)"]), rel=1e-3)
