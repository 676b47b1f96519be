"""report.html from a synthetic run directory: self-contained, plain language, safe."""

from __future__ import annotations

import base64
import json
import os
import socket
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from gosat_pipeline.compare import compare_to_inventory, period_change, write_discrepancies
from gosat_pipeline.errors import GosatPipelineError
from gosat_pipeline.report import write_report
from gosat_pipeline.testing.posteriors import make_posterior, make_reported, write_run_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Collector(HTMLParser):
    """Every start tag with its attributes, and the text, of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Collector:
    c = Collector()
    c.feed(html)
    c.close()
    return c


def assert_self_contained(html: str) -> Collector:
    page = parse(html)
    imgs = [a for t, a in page.tags if t == "img"]
    assert imgs, "the report has no images"
    for a in imgs:
        src = a.get("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
        assert set(a) <= {"src", "width", "height", "alt"}, a.keys()
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for k, v in attrs.items():
            assert not k.startswith("on"), (tag, k)
            if k in ("href", "src", "action") and v:
                assert v.startswith(("data:", "#")), (tag, k, v)
    assert "http://" not in html and "https://" not in html
    return page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    write_run_dir(d)
    return d


@pytest.fixture(scope="module")
def report_html(run_dir) -> str:
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    return path.read_text(encoding="utf-8")


def test_report_is_self_contained(report_html):
    page = assert_self_contained(report_html)
    alts = [a.get("alt") for t, a in page.tags if t == "img"]
    # maps: observations, emissions (prior | posterior | difference), constraint; bars of the countries
    assert alts == [
        "CH4 totals of the countries, 2019",
        "Satellite observations (CH4)",
        "Emissions (CH4)",
        "What the satellite data constrain (CH4)",
    ]


def test_headline_in_plain_language(report_html):
    page = parse(report_html)
    text = " ".join(page.text)
    headline = report_html.split('id="headline-sentence">')[1].split("</p>")[0]
    assert headline == (
        "1 of 4 CH4 totals differs from the national submission: Indonesia\u2019s CH4 emissions "
        "appear about 70 % above the reported 8.0 million tonnes a year."
    )
    assert (
        "Of the other 3 CH4 totals, 2 agree with the reported value within the uncertainties and 1 cannot be "
        "checked with these satellite data."
    ) in text
    assert any(t == "table" and a.get("id") == "findings-table" for t, a in page.tags)
    # the box that explains the units, the uncertainty, z and "not constrained" once
    howto = report_html.split('id="how-to-read"')[1].split("</section>")[0]
    for words in (
        "1 Tg = 1 million tonnes",
        "2 chances in 3",
        "19 chances in 20",
        "combined",
        "uncertainty",
        "5 times in 100",
        "<strong>not</strong> a finding",
    ):
        assert words in howto, words
    assert "The satellite estimate, 13.5 \u00b1 0.792 Tg CH4/yr, is 68 % above the reported 8.00 \u00b1 1.20" in text
    assert "No verdict: the satellite data do not shrink the uncertainty of this total at all (20 % needed)" in text
    # no internal names in the plain-words sentences
    findings = report_html.split('id="findings-table"')[1].split("</table>")[0]
    for internal in ("averaging-kernel", "error reduction", "sensitivity 0.", "z_form", "reported_total"):
        assert internal not in findings, internal
    # thresholds printed, method and provenance present
    assert "min_observations" in text and "z_critical" in text
    # run-wide sections, then one section per gas (ids suffixed with the gas)
    for section in (
        "how-to-read",
        "findings",
        "method",
        "provenance",
        "details",
        "gas-CH4",
        "maps-CH4",
        "bars-CH4",
        "inversion-CH4",
        "verdict-meanings",
        "stage-table",
    ):
        assert any(a.get("id") == section for _, a in page.tags), section
    assert "0" * 64 in text  # config hash from the manifest
    assert "synthetic/granule_001.h5" in text
    # provenance and configuration are collapsed by default
    assert '<details class="section" id="provenance-details">' in report_html
    assert '<details id="config-details">' in report_html


def test_synthetic_banner(run_dir, report_html, tmp_path):
    assert 'id="synthetic-banner"' in report_html
    assert "SYNTHETIC DATA" in report_html
    real = write_run_dir(tmp_path / "real", synthetic=False)
    html = write_report(real).read_text()
    assert "synthetic-banner" not in html
    # one synthetic input is enough, even when the manifest says otherwise
    post = make_posterior(synthetic=True)
    mixed = write_run_dir(tmp_path / "mixed", posterior=post, synthetic=False)
    html = write_report(mixed).read_text()
    assert "synthetic-banner" in html and "posterior.nc" in html.split("synthetic-banner")[1][:400]


def test_missing_optional_files_degrade_gracefully(tmp_path):
    d = write_run_dir(
        tmp_path / "sparse",
        skip=("emissions.nc", "gridded.nc", "boundaries.geojson", "manifest.json", "config.resolved.yaml"),
    )
    html = write_report(d).read_text()
    page = assert_self_contained(html)  # the bar chart is still there
    text = " ".join(page.text)
    for name in ("emissions.nc", "gridded.nc", "boundaries.geojson", "manifest.json", "config.resolved.yaml"):
        assert name in text
    assert "No maps" in text
    assert "Indonesia" in text and "13.5 \u00b1 0.792 Tg CH4/yr" in text


def test_unreadable_optional_file_is_a_note(tmp_path):
    d = write_run_dir(tmp_path / "broken")
    (d / "gridded.nc").write_bytes(b"not a netcdf file")
    (d / "manifest.json").write_text("[1, 2, 3]")
    html = write_report(d).read_text()
    text = " ".join(parse(html).text)
    assert "could not be read" in text and "gridded.nc" in text and "manifest.json" in text
    assert "Emissions (CH4)" in text  # the emission maps are still drawn


@pytest.mark.parametrize("name", ["posterior.nc", "discrepancies.json"])
def test_missing_required_file_raises_naming_it(tmp_path, name):
    d = write_run_dir(tmp_path / "req", skip=(name,))
    with pytest.raises(GosatPipelineError, match=name.replace(".", r"\.")):
        write_report(d)


def test_malformed_discrepancies_raise(tmp_path):
    d = write_run_dir(tmp_path / "bad")
    (d / "discrepancies.json").write_text('{"schema_version": "1.0.0"}')
    with pytest.raises(GosatPipelineError, match="rows"):
        write_report(d)
    (d / "discrepancies.json").write_text("{not json")
    with pytest.raises(GosatPipelineError, match="discrepancies.json"):
        write_report(d)


def test_period_changes_and_several_references(tmp_path):
    post = make_posterior(periods=("2019", "2020"), truth={"IDN": 1.5}, period_correlation=0.5)
    rep = pd.concat([make_reported(post), make_reported(post, source="EDGAR", relative_sigma=0.3)])
    d = write_run_dir(tmp_path / "multi", posterior=post, reported=rep)
    df = compare_to_inventory(post, rep, aggregates={"ASEAN": ["IDN", "MYS", "THA", "VNM"]})
    write_discrepancies(df, d, changes=period_change(post, rep, period_a="2019", period_b="2020"))
    html = write_report(d, title="Two years").read_text()
    page = assert_self_contained(html)
    text = " ".join(page.text)
    assert any(a.get("id") == "change-table" for _, a in page.tags)
    assert "EDGAR" in text and "ASEAN" in text and "Two years" in text
    # 3 maps; bars of the countries and of ASEAN (its own axis), for 2019 and 2020
    alts = [a.get("alt") for t, a in page.tags if t == "img"]
    assert len(alts) == 3 + 2 * 2
    assert "CH4 totals of the groups of countries, 2020" in alts


def test_no_download_is_attempted(tmp_path, monkeypatch):
    import cartopy

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    data_dir = Path(cartopy.config["data_dir"])
    before = sorted(p for p in data_dir.rglob("*")) if data_dir.exists() else []
    d = write_run_dir(tmp_path / "offline")
    write_report(d)
    after = sorted(p for p in data_dir.rglob("*")) if data_dir.exists() else []
    assert before == after
    assert cartopy.config["downloaders"]  # restored after rendering


# ---------------------------------------------------------------------------- hostile inputs
HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "<b onmouseover=alert(1)>bold</b>",
    "{{ 7*7 }}{% raw %}",
    "$\\frac{1}{0}$ & <i>",
]


def test_hostile_strings_are_never_markup(tmp_path):
    regions = {
        "IDN": (HOSTILE[0], 8.0, (105.0, -8.0, 118.0, 0.0)),
        "MYS": (HOSTILE[1], 2.0, (100.0, 1.0, 110.0, 7.0)),
        "THA": (HOSTILE[4], 4.0, (98.0, 8.0, 105.0, 18.0)),
    }
    post = make_posterior(regions, truth={"IDN": 1.6})
    post.attrs["transport_model"] = HOSTILE[2]
    post.attrs["prior_error"] = HOSTILE[3]
    rep = pd.concat([make_reported(post, source=HOSTILE[1]), make_reported(post, source=HOSTILE[0])])
    rep.loc[:, "uncertainty_source"] = HOSTILE[2]
    manifest = {
        "inputs": [{"path": HOSTILE[0], "sha256": HOSTILE[1], "reader": HOSTILE[2]}],
        "skipped_inputs": [{"path": HOSTILE[1], "reason": HOSTILE[0]}],
        "versions": {HOSTILE[0]: HOSTILE[1]},
        "config_sha256": HOSTILE[2],
        "stages": {HOSTILE[1]: {"seconds": HOSTILE[0]}},
        HOSTILE[2]: HOSTILE[3],
    }
    d = write_run_dir(
        tmp_path / '"><img src=x onerror=alert(1)>',
        posterior=post,
        reported=rep,
        regions=regions,
        manifest=manifest,
        compare_kwargs={"aggregates": {HOSTILE[0]: ["IDN", "MYS"]}},
    )
    (d / "config.resolved.yaml").write_text(f"name: '{HOSTILE[0]}'\nnote: '{HOSTILE[1]}'\n")
    html = write_report(d, title=HOSTILE[0]).read_text()
    page = assert_self_contained(html)
    tags = [t for t, _ in page.tags]
    assert "script" not in tags and "b" not in tags and "i" not in tags
    assert all(a.get("src", "").startswith("data:") for t, a in page.tags if t == "img")
    text = "".join(page.text)
    for s in HOSTILE:
        assert s in text, s  # shown as text, escaped in the source
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html or "&quot;&gt;&lt;img" in html
    # template syntax in an input is shown literally, not evaluated (HOSTILE[3] was found above)


def test_report_package_imports_no_stage(monkeypatch):
    import ast

    pkg = Path(__file__).resolve().parents[1] / "gosat_pipeline" / "report"
    for path in pkg.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gosat_pipeline."):
                top = node.module.split(".")[1]
                assert top in {"errors", "schema", "grids", "outputs", "params", "report"}, (path, node.module)
    assert os.path.isfile(pkg / "templates" / "report.html")


def test_json_document_is_what_the_report_reads(run_dir):
    doc = json.loads((run_dir / "discrepancies.json").read_text())
    html = write_report(run_dir).read_text()
    for r in doc["rows"]:
        assert r["region_name"] in html
