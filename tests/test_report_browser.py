"""report.html in a real headless browser (Debian's chromium through playwright).

Skips only when no chromium is installed (``apt-get install chromium``; .ci/run does it).
Checks: the page loads from a file:// URL with no console error and no page error,
requests nothing outside the file itself, and every <img> has decoded (naturalWidth > 0).
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


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    run = write_run_dir(tmp_path / "run")
    report = write_report(run)
    url = report.resolve().as_uri()
    console_errors: list[str] = []
    page_errors: list[str] = []
    foreign: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))

            def route(r):
                if r.request.url.startswith(("data:", url)):
                    r.continue_()
                else:
                    foreign.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(url, wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => ({complete: i.complete, w: i.naturalWidth,"
                " h: i.naturalHeight, src: i.src.slice(0, 30)}))"
            )
            headline = page.inner_text("#headline-table")
            banner = page.is_visible("#synthetic-banner")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        finally:
            browser.close()
    assert not console_errors, console_errors
    assert not page_errors, page_errors
    assert not foreign, foreign
    assert len(images) == 7, images
    bad = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not bad, bad
    assert all(i["src"].startswith("data:image/png;base64,") for i in images)
    assert "Indonesia" in headline and "higher than reported" in headline
    assert banner
    assert (tmp_path / "report.png").stat().st_size > 10_000
