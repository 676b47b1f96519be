"""report.html in a real headless browser (Debian's chromium through playwright): desktop, phone, paper.

Skips only when no chromium is installed (``apt-get install chromium``; .ci/run does it).
At 1400 px: the page loads from a file:// URL with no console error and no page error,
requests nothing outside the file itself, every <img> has decoded, the full table fits
without sideways scrolling, the headline names every flagged region before any other,
the maps outline countries the run did not solve for, and no absolute path is on the
page. At 400 px: nothing overflows horizontally. Printed to PDF (the `report --pdf`
code path): every column and every cell of the full table is in the PDF's text.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from pathlib import Path

import pytest

from gosat_pipeline.regions import default_boundaries_path
from gosat_pipeline.report import write_report
from gosat_pipeline.report.names import region_names
from gosat_pipeline.report.pdf import _ARGS as _BROWSER_ARGS
from gosat_pipeline.report.tables import detail_table
from gosat_pipeline.report.verdicts import FLAGGED
from gosat_pipeline.testing.posteriors import write_run_dir

pytestmark = [
    pytest.mark.slow,  # headless chromium
    pytest.mark.browser,
    pytest.mark.skipif(
        (shutil.which("chromium") or shutil.which("chromium-browser")) is None,
        reason="no chromium installed (apt-get install chromium)",
    ),
]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", *_BROWSER_ARGS]  # the flags report --pdf launches Chromium with
ABSOLUTE = re.compile(r"(?<![\w.~:/-])/(?:[\w.-]+/)+[\w.*-]*")
SOLVED = {"IDN", "MYS", "THA", "VNM"}  # the synthetic run directory's regions


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("browser")
    inputs = base / "data_samples" / "granule_001.nc"
    manifest = {
        "status": "complete",
        "wall_time_s": 12.5,
        "inputs": [{"path": str(inputs), "sha256": "ab" * 32, "kind": "granule:CH4"}],
        "config_path": str(base / "configs" / "x.yaml"),
    }
    single = write_run_dir(base / "outputs" / "single", manifest=manifest)
    (single / "config.resolved.yaml").write_text(f"run:\n  output_dir: {base / 'outputs'}\n")
    multi = write_run_dir(base / "outputs" / "multi", gases=("CH4", "CO2"), manifest=manifest)
    for d in (single, multi):
        write_report(d, outlines=default_boundaries_path())
    return {"single": single, "multi": multi, "base": base}


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _open(browser, report: Path, width: int, shot: Path | None = None) -> tuple[object, dict]:
    """A page of ``report`` at ``width`` px; collects errors and foreign requests."""
    url = report.resolve().as_uri()
    out: dict = {"console": [], "page": [], "foreign": []}
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.on("console", lambda m: out["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: out["page"].append(str(e)))

    def route(r):
        if r.request.url.startswith(("data:", url)):
            r.continue_()
        else:
            out["foreign"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="load")
    if shot is not None:
        page.screenshot(path=str(shot), full_page=False)
    return page, out


def test_desktop_loads_cleanly_and_the_full_table_fits(browser, runs, tmp_path):
    for name, n_images in (("single", 4), ("multi", 8)):
        page, out = _open(browser, runs[name] / "report.html", 1400, tmp_path / f"{name}.png")
        assert not out["console"] and not out["page"] and not out["foreign"], out
        images = page.evaluate(
            "Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, src: i.src.slice(0, 22)}))"
        )
        assert len(images) == n_images and all(i["ok"] and i["src"] == "data:image/png;base64," for i in images)
        assert page.is_visible("#synthetic-banner")
        fit = page.evaluate("""() => { const t = document.querySelector('#detail-table');
            const cell = t.querySelector('td');
            return {doc: document.documentElement.scrollWidth, right: t.getBoundingClientRect().right,
                    scroll: t.scrollWidth, client: t.parentElement.clientWidth,
                    font: parseFloat(getComputedStyle(cell).fontSize)}; }""")
        assert fit["doc"] <= 1400 and fit["right"] <= 1400 and fit["scroll"] <= fit["client"], fit
        assert fit["font"] >= 11, fit  # readable, not shrunk to fit
        page.close()
    assert (tmp_path / "single.png").stat().st_size > 10_000


def test_headline_sentence_names_every_flagged_region_first(browser, runs):
    names = region_names()
    for name in ("single", "multi"):
        rows = json.loads((runs[name] / "discrepancies.json").read_text())["rows"]
        page, _ = _open(browser, runs[name] / "report.html", 1400)
        sentence = page.inner_text("#headline-sentence")
        page.close()
        flagged = {names.get(r["region"], r["region_name"]) for r in rows if r["verdict"] in FLAGGED}
        others = {names.get(r["region"], r["region_name"]) for r in rows} - flagged
        assert flagged, "the synthetic run has planted discrepancies"
        positions = {n: sentence.find(n) for n in flagged}
        assert all(p >= 0 for p in positions.values()), (sentence, positions)
        later = [sentence.find(n) for n in others if n in sentence]
        assert not later or max(positions.values()) < min(later), sentence


def test_phone_width_has_no_horizontal_overflow(browser, runs, tmp_path):
    for name in ("single", "multi"):
        page, _ = _open(browser, runs[name] / "report.html", 400, tmp_path / f"{name}-400.png")
        page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        res = page.evaluate("""() => {
            const wide = [];
            for (const el of document.body.querySelectorAll('*')) {
                const r = el.getBoundingClientRect();
                if (r.width > 0 && r.right > window.innerWidth + 1) wide.push(el.tagName + '#' + el.id + '.' + el.className);
            }
            return {doc: document.documentElement.scrollWidth, inner: window.innerWidth, wide: wide.slice(0, 5),
                    cards: getComputedStyle(document.querySelector('#detail-table td')).display}; }""")
        page.close()
        assert res["doc"] <= 400 and not res["wide"], res
        assert res["cards"] == "block"  # the tables became cards


def test_maps_show_borders_of_countries_not_solved(browser, runs):
    page, _ = _open(browser, runs["single"] / "report.html", 1400)
    outlines = page.evaluate("Array.from(document.querySelectorAll('figure.map')).map(f => f.dataset.outlines)")
    page.close()
    assert len(outlines) == 3
    for codes in outlines:
        drawn = set(codes.split())
        assert SOLVED <= drawn
        assert {"KHM", "LAO", "MMR", "PHL", "BRN", "SGP"} <= drawn - SOLVED, drawn


def test_no_absolute_path_anywhere_on_the_page(browser, runs):
    base = str(runs["base"])
    for name in ("single", "multi"):
        html = (runs[name] / "report.html").read_text()
        assert base not in html
        page, _ = _open(browser, runs[name] / "report.html", 1400)
        page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        text = page.inner_text("body")
        page.close()
        assert not ABSOLUTE.findall(text), ABSOLUTE.findall(text)
        assert "../../data_samples/granule_001.nc" in text  # relative to the run directory instead


def _pdf_text(path: Path) -> str:
    pypdf = pytest.importorskip("pypdf")
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(str(path)).pages)
    return " ".join(unicodedata.normalize("NFKC", text).split())


def test_print_to_pdf_keeps_every_column_and_every_cell(runs):
    from concurrent.futures import ThreadPoolExecutor

    from gosat_pipeline.report.pdf import write_pdf

    for name in ("single", "multi"):
        # a thread of its own: the module's browser fixture holds this thread's playwright loop
        with ThreadPoolExecutor(1) as pool:
            pdf = pool.submit(write_pdf, runs[name], browser=CHROMIUM).result()
        assert pdf == runs[name] / "report.pdf" and pdf.read_bytes()[:5] == b"%PDF-"
        text = _pdf_text(pdf)
        rows = json.loads((runs[name] / "discrepancies.json").read_text())["rows"]
        table = detail_table(rows, region_names())
        # the header row and every body row, cell after cell, in the order of the table
        assert " ".join(" ".join(table["header"]).split()) in text
        for cells in table["rows"]:
            assert " ".join(" ".join(cells).split()) in text, cells
        # the collapsed sections are opened on paper: provenance and the technical columns
        assert "Reason recorded by the comparison" in text and "Software versions" in text
        assert "page 1 of" in text
