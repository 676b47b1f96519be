"""report.html in a real headless browser (Debian's chromium through playwright).

Skips only when no chromium is installed (``apt-get install chromium``; .ci/run does it).
Checks, for a single-gas and a two-gas run directory: the page loads from a file:// URL
with no console error and no page error, requests nothing outside the file itself, and
every <img> has decoded (naturalWidth > 0).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gosat_pipeline.report import write_report
from gosat_pipeline.testing.posteriors import write_run_dir

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def _visit(browser, report: Path, screenshot: Path) -> dict:
    """Load ``report`` in a fresh page; collect errors, foreign requests, images and texts."""
    url = report.resolve().as_uri()
    out: dict = {"console": [], "page": [], "foreign": []}
    page = browser.new_page(viewport={"width": 1200, "height": 900})
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
    out["images"] = page.evaluate(
        "Array.from(document.images).map(i => ({complete: i.complete, w: i.naturalWidth,"
        " h: i.naturalHeight, src: i.src.slice(0, 30), alt: i.alt}))"
    )
    out["headline"] = page.inner_text("#headline-table")
    out["banner"] = page.is_visible("#synthetic-banner")
    out["sections"] = page.evaluate("Array.from(document.querySelectorAll('section.gas')).map(s => s.id)")
    page.screenshot(path=str(screenshot), full_page=False)
    page.close()
    return out


def _check(res: dict, n_images: int) -> None:
    assert not res["console"], res["console"]
    assert not res["page"], res["page"]
    assert not res["foreign"], res["foreign"]
    assert len(res["images"]) == n_images, res["images"]
    bad = [i for i in res["images"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not bad, bad
    assert all(i["src"].startswith("data:image/png;base64,") for i in res["images"])
    assert res["banner"]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    single = write_report(write_run_dir(tmp_path / "run"))
    multi = write_report(write_run_dir(tmp_path / "multi", gases=("CH4", "CO2")))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            one = _visit(browser, single, tmp_path / "report.png")
            two = _visit(browser, multi, tmp_path / "report_multi.png")
        finally:
            browser.close()
    _check(one, 7)
    assert "Indonesia" in one["headline"] and "higher than reported" in one["headline"]
    assert one["sections"] == ["gas-CH4"]
    assert (tmp_path / "report.png").stat().st_size > 10_000
    # two gases: 7 images each, both gases' rows in the headline, one section per gas
    _check(two, 14)
    assert "CO2" in two["headline"] and "CH4" in two["headline"] and "lower than reported" in two["headline"]
    assert two["sections"] == ["gas-CH4", "gas-CO2"]
    assert {"Prior emissions (CH4)", "Prior emissions (CO2)"} <= {i["alt"] for i in two["images"]}
