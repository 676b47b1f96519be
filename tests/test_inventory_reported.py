"""Reported national totals: long schema, validation of every bad row, PRIMAP adapter, defaults."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from gosat_pipeline.errors import ReportedTotalsError
from gosat_pipeline.inventory import (
    DEFAULT_UNCERTAINTY,
    is_parent_category,
    read_reported_totals,
    reported_for,
)
from gosat_pipeline.testing.inventories import (
    make_reported_totals,
    write_primap_csv,
    write_reported_totals_csv,
)

HEADER = "area,year,gas,category,value,unit,source,category_scheme,uncertainty_rel,notes\n"


def _write(tmp_path, body: str, name: str = "rep.csv"):
    p = tmp_path / name
    p.write_text(HEADER + body)
    return p


def test_long_schema_units_converted_with_pint(tmp_path):
    p = _write(
        tmp_path,
        (
            "DEU,2019,CH4,M.0.EL,2165.3,kt CH4/yr,UNFCCC-CRF-2021,IPCC2006_PRIMAP,0.15,\n"
            "USA,2019,CH4,1.B.2,8210.0,Gg CH4 / yr,PRIMAP-hist_v2.6_HISTCR,IPCC2006_PRIMAP,,\n"
            "FRA,2019,CO2,M.0.EL,300.5,Mt CO2/yr,UNFCCC-CRF-2021,,0.05,\n"
            "NOR,2019,CO2,M.0.EL,12.0,Mt C/yr,UNFCCC-CRF-2021,,,\n"
            "IDN,2019,CH4,M.0.EL,7000000,t CH4/yr,national,,0.2,\n"
            "THA,2019,CH4,M.0.EL,,kt CH4/yr,national,,,not reported\n"
        ),
    )
    df = read_reported_totals(p)
    tg = dict(zip(df["area"], df["value_tg_per_yr"], strict=True))
    assert tg["DEU"] == pytest.approx(2.1653, rel=1e-12)
    assert tg["USA"] == pytest.approx(8.21, rel=1e-12)
    assert tg["FRA"] == pytest.approx(300.5, rel=1e-12)  # Mt = Tg
    assert tg["NOR"] == pytest.approx(12.0 * 44.0 / 12.0, rel=1e-12)  # carbon to CO2 as openscm-units: 44/12
    assert tg["IDN"] == pytest.approx(7.0, rel=1e-12)
    assert math.isnan(tg["THA"])
    row = df.set_index("area").loc["DEU"]
    assert row["value"] == 2165.3 and row["unit"] == "kt CH4/yr"  # as in the file
    assert row["sigma_tg_per_yr"] == pytest.approx(0.15 * 2.1653) and row["uncertainty_source"].startswith("file")
    assert df["year"].dtype == "int64"


def test_default_uncertainties_applied_with_their_source(tmp_path):
    p = _write(
        tmp_path,
        (
            "USA,2019,CH4,1.B.2,8210.0,Gg CH4 / yr,PRIMAP,IPCC2006_PRIMAP,,\n"
            "DEU,2019,CO2,M.0.EL,700,Mt CO2/yr,CRF,,,\n"
            "DEU,2019,N2O,M.0.EL,100,kt N2O/yr,CRF,,,\n"
        ),
    )
    df = read_reported_totals(p).set_index(["area", "gas"])
    usa = df.loc[("USA", "CH4")]
    rel, src = DEFAULT_UNCERTAINTY[("CH4", "1.B.2")]
    assert usa["uncertainty_rel"] == rel and usa["sigma_tg_per_yr"] == pytest.approx(rel * 8.21)
    assert "IPCC 2006" in usa["uncertainty_source"] and usa["uncertainty_source"].startswith("default")
    assert df.loc[("DEU", "CO2"), "uncertainty_rel"] == DEFAULT_UNCERTAINTY[("CO2", "M.0.EL")][0]
    assert df.loc[("DEU", "N2O"), "uncertainty_rel"] == DEFAULT_UNCERTAINTY[("N2O", "*")][0]


def test_every_bad_row_is_reported_with_line_and_column(tmp_path):
    p = _write(
        tmp_path,
        (
            "DEU,2019,CH4,M.0.EL,2165.3,kt CH4/yr,CRF,,0.15,\n"  # line 2 ok
            "JJJ,2019,CH4,M.0.EL,10,kt CH4/yr,CRF,,,\n"  # line 3 unknown ISO-3
            "DEU,2019,CH4,M.0.EL,2000,kt CH4/yr,CRF,,,\n"  # line 4 duplicate key of line 2
            "DEU,2019,CH4,1.B.2,300,kt CH4/yr,CRF,,,\n"  # line 5 child of M.0.EL (line 2)
            "FRA,2019,CH4,M.0.EL,12.x,kt CH4/yr,CRF,,,\n"  # line 6 non-numeric value
            "FRA,2018,CH4,M.0.EL,12,kt blorbs/yr,CRF,,,\n"  # line 7 unparsable unit
            "ITA,2019,CH4,M.0.EL,40,Mt CO2e/yr,CRF,,,\n"  # line 8 CO2e for a single gas
            "ESP,2019,CH4,M.0.EL,40,kt CH4/yr,CRF,,-0.1,\n"  # line 9 negative uncertainty
            "PRT,20x9,CH4,M.0.EL,40,kt CH4/yr,CRF,,,\n"  # line 10 bad year
            "POL,2019,CH4,M.0.EL,40,kt CO2/yr,CRF,,,\n"  # line 11 unit of another gas
        ),
    )
    with pytest.raises(ReportedTotalsError) as err:
        read_reported_totals(p)
    problems = err.value.problems
    expect = {
        3: "area",
        4: "category",
        5: "category",
        6: "value",
        7: "unit",
        8: "unit",
        9: "uncertainty_rel",
        10: "year",
        11: "unit",
    }
    for line, col in expect.items():
        assert any(f"line {line}, column {col}" in m for m in problems), (line, col, problems)
    assert not any("line 2," in m for m in problems)
    assert "blorbs" in " ".join(problems) and "JJJ" in " ".join(problems)
    assert str(p) in str(err.value)


def test_missing_required_column_is_reported(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("area,year,gas,value,source\nDEU,2019,CH4,1,x\n")
    with pytest.raises(ReportedTotalsError, match="column unit"):
        read_reported_totals(p)


def test_parent_child_relation():
    assert is_parent_category("1", "1.B.2") and is_parent_category("1.B", "1.B.2")
    assert is_parent_category("M.0.EL", "1.B.2") and is_parent_category("M.0.EL", "3.A")
    assert is_parent_category("M.AG", "3.A") and is_parent_category("0", "4")
    assert not is_parent_category("1.B.2", "1.B") and not is_parent_category("1.B.1", "1.B.2")
    assert not is_parent_category("M.0.EL", "M.LULUCF") and not is_parent_category("0", "M.BK")


def test_factory_round_trip_and_reported_for(tmp_path):
    df = make_reported_totals({"IDN": 14.0, "THA": 4.0, "XAA": 1.0}, "CH4", [2019, 2020], uncertainty_rel=0.2)
    p = write_reported_totals_csv(tmp_path / "rep.csv", df)
    got = read_reported_totals(p)
    assert len(got) == 6
    one = reported_for(got, gas="CH4", year=2020).set_index("area")
    assert one.loc["IDN", "value_tg_per_yr"] == pytest.approx(14.0)
    assert one.loc["THA", "sigma_tg_per_yr"] == pytest.approx(0.8)
    per = reported_for(got, gas="CH4", period="2019-2020").set_index("area")
    assert per.loc["IDN", "n_years"] == 2 and per.loc["IDN", "period"] == "2019-2020"
    assert reported_for(got, gas="CO2", year=2020).empty


def test_reported_for_prefers_total_then_sums_top_level_categories(tmp_path):
    p = _write(
        tmp_path,
        (
            "USA,2019,CH4,1.B.2,8.0,Tg CH4/yr,A,,0.5,\n"
            "USA,2019,CH4,3.A,6.0,Tg CH4/yr,A,,0.2,\n"
            "DEU,2019,CH4,M.0.EL,2.0,Tg CH4/yr,A,,0.1,\n"
        ),
    )
    out = reported_for(read_reported_totals(p), gas="CH4", year=2019).set_index("area")
    assert out.loc["USA", "value_tg_per_yr"] == pytest.approx(14.0)
    assert out.loc["USA", "sigma_tg_per_yr"] == pytest.approx((4.0**2 + 1.2**2) ** 0.5)
    assert out.loc["DEU", "category"] == "M.0.EL"


def test_primap_adapter_wide_csv_and_yaml(tmp_path):
    long = pd.DataFrame(
        {
            "area": ["DEU", "DEU", "USA", "USA"],
            "year": [2019, 2020, 2019, 2020],
            "gas": "CH4",
            "category": "M.0.EL",
            "value": [2165.3, 2100.0, 26000.0, 25500.0],
        }
    )
    sector = long.assign(category="1.B.2", value=long["value"] / 10)
    p = write_primap_csv(tmp_path / "primap.csv", pd.concat([long, sector]), yaml=True)
    with open(p, "a") as fh:  # a GWP basket series, and a third-party scenario row, both to be skipped
        fh.write("PRIMAP-hist_v2.6,HISTCR,derived,DEU,KYOTOGHG (AR6GWP100),CO2 * gigagram / a,M.0.EL,800000,790000\n")
        fh.write("PRIMAP-hist_v2.6,HISTTP,derived,DEU,CH4,CH4 * gigagram / a,M.0.EL,1,1\n")
    df = read_reported_totals(p)  # auto-detected; M.0.EL only by default
    assert set(df["category"]) == {"M.0.EL"} and len(df) == 4
    deu = df[(df["area"] == "DEU") & (df["year"] == 2019)].iloc[0]
    assert deu["value_tg_per_yr"] == pytest.approx(2.1653) and deu["unit"] == "CH4 * gigagram / a"
    assert deu["source"] == "PRIMAP-hist_v2.6_HISTCR" and deu["category_scheme"] == "IPCC2006_PRIMAP"
    via_yaml = read_reported_totals(p.with_suffix(".yaml"))
    pd.testing.assert_frame_equal(via_yaml, df)
    sectors = read_reported_totals(p, format="primap", categories=["1.B.2"])
    assert set(sectors["category"]) == {"1.B.2"}
    with pytest.raises(ReportedTotalsError, match="part of 'M.0.EL'"):
        read_reported_totals(p, format="primap", categories=["M.0.EL", "1.B.2"])


# ------------------------------------------------------------------------ CRF / CRT workbooks
YEARS = [2019, 2020, 2021]


def _ch4_table(scale: float = 1.0) -> dict:
    t = {
        "1": [100.0, 90.0, 80.0],
        "1.A": [10.0, 9.0, 8.0],
        "1.A.1": [5.0, 4.0, 3.0],
        "1.B": [90.0, 81.0, 72.0],
        "1.B.1": [60.0, 50.0, 40.0],
        "1.B.2": [30.0, 31.0, 32.0],
        "2": [1.0, 1.0, 1.0],
        "3": [200.0, 190.0, 180.0],
        "3.A": [150.0, 140.0, 130.0],
        "3.C": ["NO", "NO", "NO"],
        "4": [20.0, 20.0, 20.0],
        "5": [300.0, 280.0, "260.0"],
        "5.A": [250.0, 230.0, 210.0],
        "6": ["NO", "NO", "NO"],
        "M.Memo.Int": [0.5, 0.4, 0.3],
    }
    t = {k: [v * scale if isinstance(v, float) else v for v in vals] for k, vals in t.items()}
    t["M.0.EL"] = [sum(float(t[c][i]) for c in ("1", "2", "3", "5")) for i in range(3)]
    t["0"] = [t["M.0.EL"][i] + t["4"][i] for i in range(3)]
    return t


@pytest.mark.parametrize(
    ("name", "area", "source"),
    [
        ("GBR_2023_2021_13042023_170954.xlsx", "GBR", "UNFCCC-CRF-2023"),
        ("DEU-CRT-2024-V1.0-2021-20240412-123456.xlsx", "DEU", "UNFCCC-CRT-2024-V1.0"),
    ],
)
def test_crf_and_crt_workbooks_map_to_the_long_schema(tmp_path, name, area, source):
    from gosat_pipeline.testing.inventories import write_crf_workbook

    t = _ch4_table()
    p = write_crf_workbook(tmp_path / name, t, YEARS)
    df = read_reported_totals(p, gases=["CH4"])  # auto: .xlsx -> crf; default: the total without LULUCF
    assert set(df["area"]) == {area} and set(df["source"]) == {source} and set(df["category"]) == {"M.0.EL"}
    assert list(df["value"]) == t["M.0.EL"] and set(df["unit"]) == {"kt CH4 / yr"}
    assert df["value_tg_per_yr"].iloc[-1] == pytest.approx(t["M.0.EL"][-1] / 1000.0, rel=1e-12)
    sub = read_reported_totals(p, format="crt", categories=["1.A", "1.B", "3.A", "3.C", "5.A", "M.Memo.Int"])
    got = sub.pivot_table(index="category", columns="year", values="value", dropna=False)
    assert list(got.loc["1.B"]) == t["1.B"] and list(got.loc["5.A"]) == t["5.A"]
    assert got.loc["3.C"].isna().all()  # notation key NO: not reported
    assert sub[sub["category"] == "3.C"]["notes"].str.contains("notation key NO").all()
    assert set(sub["category_scheme"]) == {"CRF2013"}
    tot = read_reported_totals(p, categories=["0"], gases=["CH4"])
    assert list(tot["value"]) == t["0"]
    assert reported_for(df, gas="CH4", year=2021).iloc[0]["category"] == "M.0.EL"


def test_crf_memo_items_are_not_part_of_the_national_total():
    assert is_parent_category("0", "4", "CRF2013") and not is_parent_category("0", "M.Memo.Int", "CRF2013")
    assert not is_parent_category("M.0.EL", "4", "CRF2013") and is_parent_category("M.0.EL", "5.A", "CRF2013")
    assert is_parent_category("M.0.EL", "4", "IPCC2006_PRIMAP")  # waste is 4 in IPCC 2006
    assert not is_parent_category("M.0.EL", "5", "IPCC1996") and is_parent_category("M.0.EL", "6", "IPCC1996")


def test_gases_the_run_does_not_use_never_make_a_file_unreadable(tmp_path):
    p = _write(
        tmp_path,
        (
            "DEU,2019,CH4,M.0.EL,2165.3,kt CH4/yr,CRF,,,\n"
            "DEU,2019,HFC-xyz,M.0.EL,1.0,t HFC-xyz/yr,CRF,,,\n"  # a gas openscm-units does not know
            "DEU,2019,C2F6,M.0.EL,12.0,t C2F6 / yr,CRF,,,\n"
            "DEU,2019,HFC134a,M.0.EL,3.0,t HFC134a / yr,CRF,,,\n"
        ),
    )
    with pytest.raises(ReportedTotalsError, match=r"line 3, column unit: .*HFC-xyz"):
        read_reported_totals(p)
    df = read_reported_totals(p, gases=["CH4"])
    assert list(df["gas"]) == ["CH4"]
    both = read_reported_totals(p, gases=["C2F6", "HFC134a"]).set_index("gas")
    assert (
        both.loc["C2F6", "value_tg_per_yr"] == pytest.approx(12e-6) and both.loc["HFC134a", "unit"] == "t HFC134a / yr"
    )


def test_uncertainty_abs_is_one_sigma_in_the_row_unit(tmp_path):
    p = tmp_path / "abs.csv"
    p.write_text(
        "area,year,gas,category,value,unit,source,uncertainty_abs\n"
        "IDN,2019,CO2,M.0.EL,600,Mt CO2/yr,topdown,30\n"
        "THA,2019,CO2,M.0.EL,-5,Mt CO2/yr,topdown,20\n"
        "MYS,2019,CO2,M.0.EL,0,Mt CO2/yr,topdown,20\n"
    )
    df = read_reported_totals(p).set_index("area")
    assert df.loc["IDN", "sigma_tg_per_yr"] == pytest.approx(30.0) and df.loc[
        "IDN", "uncertainty_rel"
    ] == pytest.approx(0.05)
    assert df.loc["THA", "sigma_tg_per_yr"] == pytest.approx(20.0)  # a net sink keeps its sigma
    assert df.loc["MYS", "sigma_tg_per_yr"] == pytest.approx(20.0) and math.isnan(df.loc["MYS", "uncertainty_rel"])
