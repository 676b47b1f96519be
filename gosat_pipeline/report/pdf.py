"""``report.pdf``: the report's own HTML printed by a headless Chromium.

The PDF is the same page as ``report.html``, printed with its print stylesheet (A4
landscape, every column of every table kept), with every collapsed section opened so
that the provenance and technical columns are on paper too, and with page numbers in
the footer. Printing is done by Chromium through playwright (``pip install
'gosat_pipeline[pdf]'``); the browser is the first found of: the ``browser`` argument,
the ``GOSAT_PIPELINE_BROWSER`` environment variable, a system Chromium/Chrome on the
PATH (Debian: ``apt-get install chromium``), playwright's own Chromium
(``python -m playwright install chromium``). Nothing is fetched while printing: every
request other than the report file itself is refused.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from gosat_pipeline.errors import ReportError
from gosat_pipeline.outputs import atomic_write_bytes

__all__ = ["find_browser", "write_pdf", "INSTALL_HINT"]

logger = logging.getLogger(__name__)

#: How to get what printing needs, named in every error.
INSTALL_HINT = (
    "install playwright with `pip install 'gosat_pipeline[pdf]'` (part of `make install`), then a browser: "
    "`apt-get install chromium` (Debian/Ubuntu) or `python -m playwright install chromium`; or point "
    "GOSAT_PIPELINE_BROWSER at a Chromium or Chrome executable"
)
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
_FOOTER = (
    '<div style="font-size:7.5pt; width:100%; padding:0 10mm; color:#555; display:flex; '
    'justify-content:space-between;"><span class="title"></span>'
    '<span>page <span class="pageNumber"></span> of <span class="totalPages"></span></span></div>'
)


def _playwright_chromium() -> str | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    try:
        with sync_playwright() as p:
            path = p.chromium.executable_path
    except Exception:  # noqa: BLE001 - a broken playwright install just means "no browser here"
        return None
    return path if path and Path(path).is_file() else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _print(browser: Any, html: Path, timeout_s: float) -> bytes:
    """Load the page (refusing every other request), open every <details>, print it."""
    url = html.resolve().as_uri()
    page = browser.new_page()
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith((url, "data:")) else r.abort())
    page.goto(url, wait_until="load", timeout=timeout_s * 1000)
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    page.emulate_media(media="print")
    return page.pdf(
        prefer_css_page_size=True,
        print_background=True,
        display_header_footer=True,
        header_template="<span></span>",
        footer_template=_FOOTER,
        outline=True,
        tagged=True,
    )


def find_browser(browser: str | os.PathLike[str] | None = None) -> str | None:
    """The Chromium-family executable used to print, or None when there is none.

    Parameters
    ----------
    browser : path-like, optional
        Use this executable (a name on the PATH or a path).

    Returns
    -------
    str or None

    Raises
    ------
    ReportError
        When ``browser`` (or ``GOSAT_PIPELINE_BROWSER``) names an executable that does not exist.
    """
    for candidate in (browser, os.environ.get("GOSAT_PIPELINE_BROWSER")):
        if candidate:
            found = shutil.which(str(candidate)) or (str(candidate) if Path(candidate).is_file() else None)
            if found is None:
                raise ReportError(f"browser {str(candidate)!r} not found; {INSTALL_HINT}")
            return found
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return _playwright_chromium()


def write_pdf(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    browser: str | os.PathLike[str] | None = None,
    timeout_s: float = 120.0,
) -> Path:
    """Print ``report.html`` of a run directory to PDF.

    Parameters
    ----------
    run_dir : path-like
        A run directory with ``report.html`` (write it first with
        :func:`gosat_pipeline.report.write_report`).
    out : path-like, optional
        Default ``run_dir / "report.pdf"``; written atomically.
    browser : path-like, optional
        The Chromium/Chrome executable (default: see :func:`find_browser`).
    timeout_s : float
        Give up after this long (seconds) for starting the browser, loading or printing.

    Returns
    -------
    pathlib.Path
        The PDF.

    Raises
    ------
    ReportError
        When ``report.html`` is missing, when playwright or a browser is not installed
        (the message says what to install), or when the browser fails.
    """
    run_dir = Path(run_dir)
    html = run_dir / "report.html"
    if not html.is_file():
        raise ReportError(f"{html}: not found; write the report first (gosat-pipeline report {run_dir})")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ReportError(f"making a PDF needs playwright, which is not installed: {INSTALL_HINT}") from None
    exe = find_browser(browser)
    if exe is None:
        raise ReportError(f"making a PDF needs a Chromium-family browser and none was found: {INSTALL_HINT}")
    target = Path(out) if out is not None else run_dir / "report.pdf"
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=_ARGS, headless=True, timeout=timeout_s * 1000)
        except PlaywrightError as exc:
            raise ReportError(f"{exe} could not be started: {_first_line(exc)}; {INSTALL_HINT}") from exc
        try:
            pdf = _print(b, html, timeout_s)
        except PlaywrightError as exc:
            raise ReportError(f"{exe} could not print {html}: {_first_line(exc)}") from exc
        finally:
            b.close()
    path = atomic_write_bytes(pdf, target)
    logger.info("wrote %s (%d kB, printed by %s)", path, len(pdf) // 1024, exe)
    return path
