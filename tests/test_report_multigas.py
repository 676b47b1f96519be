"""report.html of a run directory with several gases (posterior_<GAS>.nc, as the pipeline writes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import Collector, assert_self_contained, parse

from gosat_pipeline.cli import main
from gosat_pipeline.errors import GosatPipelineError
from gosat_pipeline.report import write_report
from gosat_pipeline.report.inputs import load_run
from gosat_pipeline.testing.posteriors import make_posterior, write_netcdf, write_run_dir

GASES = ("CH4", "CO2")


class Tables(Collector):
    """The cells of each table of a page, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, list[list[str]]] = {}
        self._table: str | None = None

    def handle_starttag(self, tag, attrs):
        super().handle_starttag(tag, attrs)
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.cells[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.cells[self._table].append([])
        elif tag == "td" and self._table is not None:
            self.cells[self._table][-1].append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        super().handle_data(data)
        rows = self.cells.get(self._table or "", [])
        if rows and rows[-1]:
            rows[-1][-1] += data


def tables(html: str) -> Tables:
    t = Tables()
    t.feed(html)
    t.close()
    return t


def ids(html: str) -> set[str]:
    return {a["id"] for _, a in parse(html).tags if a.get("id")}


def alts(html: str) -> list[str]:
    return [a.get("alt") or "" for t, a in parse(html).tags if t == "img"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("multigas")
    return write_run_dir(d, gases=GASES, periods=("2019", "2020"), change=("2019", "2020"))


@pytest.fixture(scope="module")
def report_html(run_dir) -> str:
    return write_report(run_dir).read_text(encoding="utf-8")


def test_write_run_dir_writes_the_pipeline_names(run_dir):
    for gas in GASES:
        for role in ("posterior", "emissions", "gridded"):
            assert (run_dir / f"{role}_{gas}.nc").is_file()
    assert not (run_dir / "posterior.nc").exists()
    data = load_run(run_dir)
    assert list(data.gases) == list(GASES)
    for gas, gd in data.gases.items():
        assert gd.posterior.attrs["gas"] == gas and gd.emissions is not None and gd.gridded is not None
        assert not gd.missing
    assert {r["gas"] for r in data.discrepancies["rows"]} == set(GASES)


def test_one_section_per_gas_with_bars_and_maps(report_html):
    assert_self_contained(report_html)
    found = ids(report_html)
    for gas in GASES:
        for part in ("gas", "bars", "maps", "inversion", "parameter-table", "diagnostics-table"):
            assert f"{part}-{gas}" in found, (part, gas)
    for section in ("headline", "details", "changes", "method", "provenance"):
        assert section in found
    images = alts(report_html)
    # per gas: observations, emissions, constraint + bars for 2019 and 2020
    assert len(images) == 2 * (3 + 2)
    for gas in GASES:
        assert f"Emissions ({gas})" in images
        assert f"Satellite observations ({gas})" in images
        assert f"{gas} totals of the countries, 2020" in images
    # each gas's maps and diagnostics are inside its own section
    co2 = report_html.split('id="gas-CO2"')[1]
    assert "Emissions (CO2)" in co2 and "Emissions (CH4)" not in co2


def test_headline_has_the_rows_of_every_gas(report_html):
    t = tables(report_html)
    rows = [[c.strip() for c in r] for r in t.cells["findings-table"][1:]]  # the first row is the header
    assert {r[1] for r in rows} == set(GASES)
    assert len(rows) == 2 * 4 * 2  # gases x regions x periods
    sentences = " ".join(r[-1] for r in rows)
    assert "Tg CH4/yr" in sentences and "Tg CO2/yr" in sentences
    assert {r[2] for r in rows} == {"2019", "2020"}  # several periods: a period column
    verdicts = {(r[1], r[0], r[3]) for r in rows}
    assert ("CH4", "Indonesia", "higher than reported") in verdicts
    assert ("CO2", "Malaysia", "lower than reported") in verdicts
    detail = [[c.strip() for c in r] for r in t.cells["detail-table"][1:]]
    assert {r[1] for r in detail} == set(GASES)
    changes = [[c.strip() for c in r] for r in t.cells["change-table"][1:]]
    assert {r[1] for r in changes} == set(GASES)
    text = " ".join(parse(report_html).text)
    assert "CH4 and CO2 emissions seen from space" in text
    assert "Totals in Tg of the row's gas per year" in text  # the units line of the detail table
    headline = report_html.split('id="headline-sentence">')[1].split("</p>")[0]
    # every flagged total is named, per gas, before anything else
    assert headline.startswith(
        "2 of 8 CH4 totals differ from the national submission: Indonesia\u2019s CH4 "
        "emissions in 2020 appear about 65 % above the reported 8.0 million tonnes a year"
    )
    assert "; 2 of 8 CO2 totals differ from the national submission: Malaysia\u2019s CO2 emissions in 2020" in headline


def test_diagnostics_per_gas(report_html, run_dir):
    t = tables(report_html)
    for gas in GASES:
        diag = {r[0].strip(): r[2].strip() for r in t.cells[f"diagnostics-table-{gas}"] if len(r) == 3}
        post = load_run(run_dir).gases[gas].posterior
        assert diag["n_observations"] == str(int(post["n_observations"]))
        assert diag["status"] == "0"
        params = {r[0].strip(): r[2].strip() for r in t.cells[f"parameter-table-{gas}"] if len(r) == 3}
        assert params["gas"] == gas


def test_missing_emissions_of_one_gas_is_a_note(tmp_path):
    d = write_run_dir(tmp_path / "noco2maps", gases=GASES, skip=("emissions_CO2.nc",))
    html = write_report(d).read_text()
    assert_self_contained(html)
    images = alts(html)
    assert "Emissions (CH4)" in images and "Emissions (CO2)" not in images
    assert "Satellite observations (CO2)" in images  # gridded_CO2.nc is still drawn
    assert len(images) == (1 + 3) + (1 + 1)  # CH4: bars and 3 maps; CO2: bars and the observations
    co2 = html.split('id="gas-CO2"')[1].split('id="method"')[0]
    assert "emissions_CO2.nc" in co2 and "not found" in co2
    missing = html.split('id="missing"')[1]
    assert "emissions_CO2.nc" in missing and "emissions_CH4.nc" not in missing


def test_no_posterior_at_all_raises_naming_the_files(tmp_path):
    d = write_run_dir(tmp_path / "nopost", gases=GASES, skip=("posterior_CH4.nc", "posterior_CO2.nc"))
    with pytest.raises(GosatPipelineError, match=r"no posterior file found.*posterior_CH4\.nc.*posterior\.nc"):
        write_report(d)
    assert main(["-q", "report", str(d)]) != 0  # the CLI turns it into an error exit


def test_rows_of_a_gas_without_posterior_still_reported(tmp_path):
    d = write_run_dir(tmp_path / "noco2post", gases=GASES, skip=("posterior_CO2.nc",))
    data = load_run(d)
    assert data.gases["CO2"].posterior is None and not data.gases["CO2"].missing
    assert any("posterior_CO2.nc" in n for n in data.notes)
    html = write_report(d).read_text()
    co2 = html.split('id="gas-CO2"')[1].split('id="method"')[0]
    assert "No posterior file for CO2" in co2
    assert "CO2 totals of the countries, 2019" in alts(html)  # bars come from the rows
    assert "Emissions (CO2)" not in alts(html)


def test_synthetic_banner_names_the_per_gas_file(tmp_path):
    posts = {
        "CH4": make_posterior(gas="CH4", synthetic=False),
        "CO2": make_posterior(gas="CO2", synthetic=True),
    }
    d = write_run_dir(tmp_path / "mixed", gases=GASES, posterior=posts, synthetic=False)
    html = write_report(d).read_text()
    banner = html.split('id="synthetic-banner"')[1].split("</div>")[0]
    assert "posterior_CO2.nc" in banner and "posterior_CH4.nc" not in banner


def test_legacy_gas_from_rows_and_odd_names(tmp_path):
    d = write_run_dir(tmp_path / "legacy")
    post = load_run(d).gases["CH4"].posterior
    del post.attrs["gas"]
    write_netcdf(post, d / "posterior.nc")
    (d / "posterior_ch4.nc").write_bytes(b"")  # lower-case suffix: not a gas file
    data = load_run(d)
    assert list(data.gases) == ["CH4"] and data.gases["CH4"].files["emissions"] == "emissions.nc"
    assert any("posterior_ch4.nc ignored" in n for n in data.notes)
    # a legacy file next to the per-gas file of the same gas: the per-gas file wins
    write_netcdf(make_posterior(gas="CH4", seed=3), d / "posterior_CH4.nc")
    data = load_run(d)
    assert list(data.gases) == ["CH4"] and data.gases["CH4"].files["posterior"] == "posterior_CH4.nc"
    assert any("posterior.nc ignored: it does not record its gas" in n for n in data.notes)
    post.attrs["gas"] = "CH4"
    write_netcdf(post, d / "posterior.nc")
    data = load_run(d)
    assert list(data.gases) == ["CH4"] and data.gases["CH4"].files["posterior"] == "posterior_CH4.nc"
    assert any("posterior.nc (gas CH4) ignored" in n for n in data.notes)


def test_cli_report_on_a_multigas_run(run_dir, capsys):
    assert main(["report", str(run_dir), "--title", "Two gases"]) == 0
    html = (run_dir / "report.html").read_text()
    assert "<title>Two gases</title>" in html
    assert {"gas-CH4", "gas-CO2"} <= ids(html)
