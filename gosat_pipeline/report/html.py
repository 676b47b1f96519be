"""The self-contained HTML report (``report.html``) of a run directory.

Everything comes from the stored outputs (see :mod:`gosat_pipeline.report.inputs`); the
page embeds its images as base64 PNG data URIs, has its CSS inline and needs no
JavaScript nor any external resource. The template is rendered by a jinja2
Environment with ``autoescape=True``, so every string that comes from an input
(region names, reference names, file names, configuration text, attributes) is
HTML-escaped; the only markup is the template's own.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import xarray as xr

from gosat_pipeline.outputs import atomic_write_text
from gosat_pipeline.report.inputs import RunData, is_synthetic_flag, load_run
from gosat_pipeline.report.maps import bar_figures, map_figures
from gosat_pipeline.report.tables import (
    change_rows,
    detail_rows,
    fmt,
    headline_rows,
    numeric_columns,
    provenance,
)
from gosat_pipeline.schema import DISCREPANCY_SCHEMA_VERSION, VERDICTS

__all__ = ["write_report", "render_report"]

logger = logging.getLogger(__name__)

_THRESHOLD_TEXT = {
    "z_critical": "A difference counts as a discrepancy when |z| is at least",
    "min_error_reduction": "Minimum error reduction (1 - posterior sigma / prior sigma) for a verdict",
    "min_sensitivity": "Minimum averaging-kernel sensitivity of the region for a verdict",
    "min_observations": "Minimum number of observations seeing the region for a verdict",
}

_VERDICT_TEXT = {
    "consistent": "the satellite estimate and the reported value agree within their combined uncertainty",
    "higher than reported": "the satellite estimate is significantly higher than the reported value",
    "lower than reported": "the satellite estimate is significantly lower than the reported value",
    "not constrained": "the satellite data are too sparse or too weakly sensitive here to say anything",
    "no reported value": "the reference inventory has no value for this region and period",
}


def _environment() -> jinja2.Environment:
    templates = resources.files("gosat_pipeline.report") / "templates"
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _scalar(ds: Any, name: str) -> str:
    if name not in ds.variables:
        return "not recorded"
    v = ds[name].values
    try:
        return fmt(float(v), 3) if np.issubdtype(np.asarray(v).dtype, np.floating) else str(v.item())
    except (TypeError, ValueError):
        return str(v)


def _synthetic_sources(data: RunData) -> list[str]:
    """Names of the inputs that say they are synthetic."""
    found = []
    if is_synthetic_flag(data.manifest.get("synthetic", False)):
        found.append("manifest.json")
    for gd in data.gases.values():
        for role, ds in (("posterior", gd.posterior), ("emissions", gd.emissions), ("gridded", gd.gridded)):
            if ds is not None and is_synthetic_flag(ds.attrs.get("synthetic", False)):
                found.append(gd.files[role])
    if is_synthetic_flag((data.discrepancies.get("metadata") or {}).get("synthetic", False)):
        found.append("discrepancies.json")
    for item in data.manifest.get("inputs") or []:
        if isinstance(item, Mapping) and is_synthetic_flag(item.get("synthetic", False)):
            found.append(str(item.get("path", "an input")))
    return found


def _method(thresholds: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The run-wide part of the method section: thresholds, z forms, verdict meanings."""
    forms = sorted({str(r.get("z_form")) for r in rows if r.get("z_form")})
    return {
        "thresholds": [(_THRESHOLD_TEXT.get(k, k), k, str(v)) for k, v in thresholds.items()],
        "z_forms": forms,
        "verdicts": [(v, _VERDICT_TEXT[v]) for v in VERDICTS],
    }


def _inversion(post: xr.Dataset | None) -> dict[str, list[tuple[str, str]]]:
    """Inversion settings and diagnostics of one gas's posterior."""
    if post is None:
        return {"parameters": [], "diagnostics": []}
    attrs = post.attrs
    keep = ("gas", "mode", "solver_form", "prior_error", "prior_correlation_length_km",
            "obs_correlation_length_km", "background_prior_sigma", "sigma_model", "sensitivity_fraction")  # fmt: skip
    params = [(k, str(attrs[k])) for k in keep if k in attrs]
    params += [(str(k), str(v)) for k, v in attrs.items() if str(k).startswith(("transport", "footprints"))]
    return {
        "parameters": params,
        "diagnostics": [("Degrees of freedom for signal (DOFS)", _scalar(post, "dofs")),
                        ("Observation chi-square per observation (ideal about 1)", _scalar(post, "chi2_obs")),
                        ("State chi-square per element", _scalar(post, "chi2_state")),
                        ("Observations used", _scalar(post, "n_observations")),
                        ("Inversion status (0 = ok)", _scalar(post, "status"))],
    }  # fmt: skip


def _row_gas(row: Mapping[str, Any]) -> str:
    return str(row.get("gas") or "").upper()


def _anchor(gas: str, taken: set[str]) -> str:
    """A unique HTML id suffix for a gas ("CH4": ids gas-CH4, bars-CH4, maps-CH4, ...)."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", gas).strip("-") or "unknown"
    anchor, i = base, 2
    while anchor in taken:
        anchor, i = f"{base}-{i}", i + 1
    taken.add(anchor)
    return anchor


def _gas_sections(data: RunData, rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One section per gas: its rows' bars, its maps, its inversion settings and diagnostics."""
    sections = []
    taken: set[str] = set()
    for gas, gd in data.gases.items():
        # a single gas (e.g. a legacy posterior.nc without a gas attribute) gets every row
        mine = rows if len(data.gases) == 1 else [r for r in rows if _row_gas(r) == gas]
        counts = {v: sum(1 for r in mine if r.get("verdict") == v) for v in VERDICTS}
        anchor = _anchor(gas, taken)
        missing = list(gd.missing)
        maps = map_figures(gd.emissions, gd.gridded, data.boundaries, gas)
        if gd.posterior is not None and gd.emissions is None and gd.gridded is None:
            missing.append(("maps", f"no {gd.files['emissions']} or {gd.files['gridded']}: no maps drawn"))
        sections.append({
            "gas": gas,
            "label": gas or "unknown gas",
            "id": anchor,
            "files": [name for role, name in gd.files.items()
                      if getattr(gd, role) is not None],
            "has_posterior": gd.posterior is not None,
            "counts": [(v, counts[v]) for v in VERDICTS if counts[v]],
            "bars": bar_figures(mine, gas),
            "maps": maps,
            "missing": missing,
            **_inversion(gd.posterior),
        })  # fmt: skip
    return sections


def _title(gases: list[str]) -> str:
    named = [g for g in gases if g]
    if not named:
        return "Emissions seen from space: comparison with reported inventories"
    text = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return f"{text} emissions seen from space: comparison with reported inventories"


def _units_line(gases: list[str]) -> str:
    if not gases:
        return "Totals in Tg/yr."
    if len(gases) == 1:
        return f"Totals in Tg {gases[0]}/yr."
    return "Totals in Tg of the row's gas per year (" + ", ".join(f"Tg {g}/yr" for g in gases) + ")."


def _context(data: RunData, title: str | None) -> dict[str, Any]:
    doc = data.discrepancies
    rows = [r for r in doc.get("rows", []) if isinstance(r, Mapping)]
    thresholds = doc.get("thresholds") if isinstance(doc.get("thresholds"), Mapping) else {}
    gases = sorted(set(data.gases) | {_row_gas(r) for r in rows if _row_gas(r)})
    changes = doc.get("period_changes") if isinstance(doc.get("period_changes"), Mapping) else None
    counts = {v: sum(1 for r in rows if r.get("verdict") == v) for v in VERDICTS}
    sections = _gas_sections(data, rows)
    missing = list(data.missing) + [m for s in sections for m in s["missing"]]
    notes = list(data.notes)
    unreadable = {m[0] for m in data.missing}
    if any(s["maps"] for s in sections) and not data.boundaries and "boundaries.geojson" not in unreadable:
        notes.append("maps are drawn without region outlines (boundaries.geojson has no polygons)")
    named = [g for g in gases if g]
    return {
        "title": title or _title(gases),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run_dir": data.run_dir.name,
        "gases": named,
        "units_line": _units_line(named),
        "synthetic": _synthetic_sources(data),
        "headline": headline_rows(rows),
        "counts": [(v, counts[v]) for v in VERDICTS if counts[v]],
        "detail": detail_rows(rows),
        "detail_num": numeric_columns("detail"),
        "change_num": numeric_columns("change"),
        "changes": change_rows([r for r in changes.get("rows", []) if isinstance(r, Mapping)]) if changes else None,
        "sections": sections,
        "method": _method(thresholds, rows),
        "provenance": provenance(data.manifest),
        "config_text": data.config_text,
        "missing": missing,
        "notes": notes,
        "schema_version": str(doc.get("schema_version", "unknown")),
        "expected_schema": DISCREPANCY_SCHEMA_VERSION,
        "threshold_line": ", ".join(f"{k} = {v}" for k, v in thresholds.items()),
    }  # fmt: skip


def render_report(run_dir: str | Path, *, title: str | None = None) -> str:
    """The report HTML of a run directory as a string.

    Parameters
    ----------
    run_dir : path-like
        See :func:`write_report`.
    title : str, optional
        Page title (default names every gas).

    Returns
    -------
    str
        The self-contained page that :func:`write_report` writes.
    """
    data = load_run(run_dir)
    html = _environment().get_template("report.html").render(**_context(data, title))
    return html


def write_report(run_dir: str | Path, *, title: str | None = None) -> Path:
    """Build ``report.html`` in ``run_dir`` from the stored outputs of the run.

    Parameters
    ----------
    run_dir : path-like
        A run directory with, for each gas, ``posterior_<GAS>.nc`` (or the legacy
        single-gas ``posterior.nc``) and one ``discrepancies.json`` for all gases
        (required), and optionally ``emissions_<GAS>.nc``, ``gridded_<GAS>.nc`` (or
        ``emissions.nc``, ``gridded.nc``), ``boundaries.geojson``, ``manifest.json``,
        ``config.resolved.yaml``. A missing optional file becomes a note in the report.
        See :func:`gosat_pipeline.report.inputs.load_run`.
    title : str, optional
        Page title (default names every gas, e.g. "CH4 and CO2 emissions seen from
        space: ...").

    Returns
    -------
    pathlib.Path
        ``run_dir / "report.html"``, written atomically: self-contained (images as
        base64 data URIs, inline CSS, no scripts, no external URLs).

    Raises
    ------
    GosatPipelineError
        When no posterior file or no ``discrepancies.json`` is found, or a required file
        is unreadable (the message names it).
    """
    html = render_report(run_dir, title=title)
    path = atomic_write_text(html, Path(run_dir) / "report.html")
    logger.info("wrote %s (%d kB)", path, len(html) // 1024)
    return path
