"""The self-contained HTML report (``report.html``) of a run directory.

Everything comes from the stored outputs (see :mod:`gosat_pipeline.report.inputs`); the
page embeds its images as base64 PNG data URIs, has its CSS inline and needs no
JavaScript nor any external resource. The template is rendered by a jinja2
Environment with ``autoescape=True``, so every string that comes from an input
(region names, reference names, file names, configuration text, attributes) is
HTML-escaped; the only markup is the template's own.

Order of the page: the headline (one or two sentences), a "How to read this" box, the
findings (differences first, then agreement, then what the data cannot check, then the
rest), the full table, then per gas the bars, maps, cross-check and inversion details,
the method, and the provenance (collapsed). The page has a phone-width layout and a
print stylesheet that keeps every column; :func:`gosat_pipeline.report.pdf.write_pdf`
prints it to PDF.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import xarray as xr
import yaml

from gosat_pipeline.outputs import atomic_write_text
from gosat_pipeline.report.inputs import GasData, RunData, is_synthetic_flag, load_run
from gosat_pipeline.report.maps import Outline, bar_figures, map_figures, read_outlines
from gosat_pipeline.report.names import display_name
from gosat_pipeline.report.names import region_names as _region_names
from gosat_pipeline.report.provenance import config_for_display, provenance, relativise_text
from gosat_pipeline.report.tables import (
    Thresholds,
    change_rows,
    detail_table,
    findings_rows,
    fmt,
    headline_sentences,
    num,
    numeric_columns,
    technical_table,
    unit,
)
from gosat_pipeline.report.verdicts import (
    NO_VERDICT,
    VERDICT_EXPLANATIONS,
    explain,
    verdict_class,
    verdict_of,
    verdict_rank,
)
from gosat_pipeline.schema import DISCREPANCY_SCHEMA_VERSION, VERDICTS

__all__ = ["write_report", "render_report", "report_settings"]

logger = logging.getLogger(__name__)

_THRESHOLD_TEXT = {
    "z_critical": "A difference counts when |z| is at least",
    "min_error_reduction": "Smallest error reduction (1 \u2212 posterior \u03c3 / prior \u03c3) for a verdict",
    "min_sensitivity": "Smallest share of the estimate from the satellite data (averaging-kernel sensitivity) for a verdict",
    "min_observations": "Fewest satellite observations seeing the region for a verdict",
}

_PARAMETER_TEXT = {
    "gas": "gas",
    "mode": "inversion mode (linear: analytic Gaussian)",
    "solver_form": "form of the solution",
    "prior_error": "prior uncertainty, as a fraction of the prior emissions",
    "prior_correlation_length_km": "prior error correlation length (km; 0 = none)",
    "obs_correlation_length_km": "observation error correlation length (km; 0 = none)",
    "background_prior_sigma": "prior uncertainty of the background offsets (gas units)",
    "sigma_model": "model error added to each observation (gas units)",
    "sensitivity_fraction": "fraction used for the sensitivity maps",
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
    """Names of the inputs that say they are synthetic (relative to the run directory)."""
    found = []
    base = data.run_dir.resolve()
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
            found.append(relativise_text(str(item.get("path", "an input")), base))
    return found


def _method(thr: Thresholds, thresholds: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The run-wide part of the method section: thresholds, z forms, verdict meanings."""
    forms = sorted({str(r.get("z_form")) for r in rows if r.get("z_form")})
    seen = list(dict.fromkeys(verdict_of(r) for r in rows))
    known = list(VERDICTS) + [v for v in VERDICT_EXPLANATIONS if v not in VERDICTS]
    listed = known + [v for v in seen if v not in known]
    listed = sorted(listed, key=lambda v: (verdict_rank(v), listed.index(v)))
    return {
        "thresholds": [(_THRESHOLD_TEXT.get(k, k), k, str(v)) for k, v in thresholds.items()],
        "z_forms": forms,
        "verdicts": [(v, verdict_class(v), explain(v), v in seen) for v in listed if v != NO_VERDICT or v in seen],
    }


def _inversion(post: xr.Dataset | None) -> dict[str, list[tuple[str, str, str]]]:
    """Inversion settings and diagnostics of one gas's posterior: (key, meaning, value)."""
    if post is None:
        return {"parameters": [], "diagnostics": []}
    attrs = post.attrs
    keep = (
        "gas",
        "mode",
        "solver_form",
        "prior_error",
        "prior_correlation_length_km",
        "obs_correlation_length_km",
        "background_prior_sigma",
        "sigma_model",
        "sensitivity_fraction",
    )
    params = [(k, _PARAMETER_TEXT.get(k, ""), str(attrs[k])) for k in keep if k in attrs]
    params += [(str(k), "", str(v)) for k, v in attrs.items() if str(k).startswith(("transport", "footprints"))]
    return {
        "parameters": params,
        "diagnostics": [
            (
                "dofs",
                "Degrees of freedom for signal: how many independent pieces of information the data give",
                _scalar(post, "dofs"),
            ),
            (
                "chi2_obs",
                "Observation chi-square per observation (about 1 when the assumed errors are right)",
                _scalar(post, "chi2_obs"),
            ),
            ("chi2_state", "State chi-square per element", _scalar(post, "chi2_state")),
            ("n_observations", "Observations used", _scalar(post, "n_observations")),
            ("status", "Inversion status (0 = completed normally)", _scalar(post, "status")),
        ],
    }


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


def _mass_balance(gd: GasData, rows: list[Mapping[str, Any]], names: Mapping[str, str]) -> list[dict[str, str]]:
    """Mass-balance cross-check next to the inversion estimate, per region."""
    if gd.mass_balance is None:
        return []
    out = []
    for rec in gd.mass_balance.to_dict("records"):
        code = str(rec.get("region"))
        mine = [r for r in rows if str(r.get("region")) == code]
        post = num(mine[0].get("posterior_total")) if mine else math.nan
        sig = num(mine[0].get("posterior_sigma")) if mine else math.nan
        mb = num(rec.get("mass_balance_emission"))
        ratio = mb / post if math.isfinite(mb) and math.isfinite(post) and post > 0 else math.nan
        out.append(
            {
                "region": display_name(mine[0] if mine else rec, names),
                "mass_balance": fmt(mb) if math.isfinite(mb) else "no estimate (no observations over the region)",
                "inversion": f"{fmt(post)} \u00b1 {fmt(sig)}" if math.isfinite(post) else "n/a",
                "ratio": f"{ratio:.2f}" if math.isfinite(ratio) else "n/a",
            }
        )
    return out


def _gas_sections(
    data: RunData, rows: list[Mapping[str, Any]], names: Mapping[str, str], background: dict[str, list[Outline]]
) -> list[dict[str, Any]]:
    """One section per gas: its rows' bars, its maps, its cross-check, its inversion details."""
    sections = []
    taken: set[str] = set()
    for gas, gd in data.gases.items():
        # a single gas (e.g. a legacy posterior.nc without a gas attribute) gets every row
        mine = rows if len(data.gases) == 1 else [r for r in rows if _row_gas(r) == gas]
        counts: dict[str, int] = {}
        for r in mine:
            counts[verdict_of(r)] = counts.get(verdict_of(r), 0) + 1
        anchor = _anchor(gas, taken)
        missing = list(gd.missing)
        maps = map_figures(gd.emissions, gd.gridded, data.boundaries, gas, background=background.get(gas, []))
        if gd.posterior is not None and gd.emissions is None and gd.gridded is None:
            missing.append(("maps", f"no {gd.files['emissions']} or {gd.files['gridded']}: no maps drawn"))
        sections.append(
            {
                "gas": gas,
                "label": gas or "unknown gas",
                "unit": unit(gas),
                "id": anchor,
                "files": [name for role, name in gd.files.items() if getattr(gd, role) is not None],
                "has_posterior": gd.posterior is not None,
                "counts": [
                    (v, verdict_class(v), n) for v, n in sorted(counts.items(), key=lambda kv: verdict_rank(kv[0]))
                ],
                "bars": bar_figures(mine, gas, names=names),
                "maps": maps,
                "mass_balance": _mass_balance(gd, mine, names),
                "mass_balance_file": gd.files["mass_balance"],
                "missing": missing,
                **_inversion(gd.posterior),
            }
        )
    return sections


def _title(gases: list[str]) -> str:
    named = [g for g in gases if g]
    if not named:
        return "Emissions seen from space: comparison with reported inventories"
    text = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return f"{text} emissions seen from space: comparison with reported inventories"


def report_settings(config_text: str | None) -> dict[str, Any]:
    """The ``report:`` section of a run's ``config.resolved.yaml`` (empty when absent or unreadable)."""
    if not config_text:
        return {}
    try:
        doc = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return {}
    section = doc.get("report") if isinstance(doc, dict) else None
    return dict(section) if isinstance(section, dict) else {}


def _background(data: RunData, outlines: str | None, notes: list[str]) -> dict[str, list[Outline]]:
    """Outlines of every country in view, per gas (each gas's maps have their own extent)."""
    out: dict[str, list[Outline]] = {}
    if not outlines:
        return out
    for gas, gd in data.gases.items():
        ds = gd.emissions if gd.emissions is not None else gd.gridded
        if ds is None or not {"latitude", "longitude"} <= set(ds.dims):
            continue
        lon, lat = ds["longitude"].values, ds["latitude"].values
        extent = (float(lon.min()) - 1, float(lon.max()) + 1, float(lat.min()) - 1, float(lat.max()) + 1)
        try:
            out[gas] = read_outlines(outlines, extent)
        except Exception as exc:  # an unreadable outline file degrades to a note
            logger.warning("report: cannot read outlines %s: %s", outlines, exc)
            notes.append(
                f"country outlines could not be read ({type(exc).__name__}); maps show the solved regions only"
            )
            return {}
    return out


def _context(
    data: RunData, title: str | None, names_override: Mapping[str, Any] | None, outlines: str | None
) -> dict[str, Any]:
    doc = data.discrepancies
    rows = [r for r in doc.get("rows", []) if isinstance(r, Mapping)]
    thresholds = doc.get("thresholds") if isinstance(doc.get("thresholds"), Mapping) else {}
    thr = Thresholds(thresholds)
    settings = report_settings(data.config_text)
    configured = settings.get("region_names") if isinstance(settings.get("region_names"), Mapping) else {}
    names = _region_names({**configured, **(names_override or {})})
    gases = sorted(set(data.gases) | {_row_gas(r) for r in rows if _row_gas(r)})
    changes = doc.get("period_changes") if isinstance(doc.get("period_changes"), Mapping) else None
    counts: dict[str, int] = {}
    for r in rows:
        counts[verdict_of(r)] = counts.get(verdict_of(r), 0) + 1
    notes = list(data.notes)
    background = _background(data, outlines, notes)
    sections = _gas_sections(data, rows, names, background)
    missing = list(data.missing) + [m for s in sections for m in s["missing"]]
    unreadable = {m[0] for m in data.missing}
    if any(s["maps"] for s in sections) and not data.boundaries and "boundaries.geojson" not in unreadable:
        notes.append("maps are drawn without the solved regions' outlines (boundaries.geojson has no polygons)")
    if any(s["maps"] for s in sections) and not outlines:
        notes.append(
            "maps show the solved regions' outlines only: no file of country outlines was given "
            "(gosat-pipeline report uses the bundled Natural Earth countries; from Python, pass "
            "outlines=gosat_pipeline.regions.default_boundaries_path() to write_report)"
        )
    named = [g for g in gases if g]
    zc = thr.base["z_critical"]
    detail = detail_table(rows, names)
    change_table = (
        change_rows([r for r in changes.get("rows", []) if isinstance(r, Mapping)], names) if changes else None
    )
    return {
        "title": title or settings.get("title") or _title(gases),
        "generated": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run_dir": data.run_dir.name,
        "gases": named,
        "periods": list(dict.fromkeys(str(r.get("period")) for r in rows if r.get("period") is not None)),
        "references": list(dict.fromkeys(str(r.get("reference")) for r in rows if r.get("reference"))),
        "synthetic": _synthetic_sources(data),
        "headline": headline_sentences(rows, names),
        "counts": [(v, verdict_class(v), n) for v, n in sorted(counts.items(), key=lambda kv: verdict_rank(kv[0]))],
        "findings": findings_rows(rows, names, thr),
        "many_periods": len({str(r.get("period")) for r in rows}) > 1,
        "many_references": len({str(r.get("reference")) for r in rows}) > 1,
        "detail": detail,
        "technical": technical_table(rows),
        "change_num": numeric_columns("change"),
        "changes": change_table,
        "sections": sections,
        "method": _method(thr, thresholds, rows),
        "z_critical": f"{float(zc):g}",
        "z_chance": f"{100 * math.erfc(float(zc) / math.sqrt(2)):.0f}" if math.isfinite(float(zc)) else "n/a",
        "provenance": provenance(data.manifest, data.run_dir),
        "config_text": config_for_display(data.config_text, data.run_dir.resolve()),
        "missing": missing,
        "notes": notes,
        "schema_version": str(doc.get("schema_version", "unknown")),
        "expected_schema": DISCREPANCY_SCHEMA_VERSION,
        "threshold_line": ", ".join(f"{k} = {v}" for k, v in thresholds.items()),
    }


def render_report(
    run_dir: str | Path,
    *,
    title: str | None = None,
    region_names: Mapping[str, Any] | None = None,
    outlines: str | None = None,
) -> str:
    """The report HTML of a run directory as a string.

    Parameters
    ----------
    run_dir, title, region_names, outlines
        See :func:`write_report`.

    Returns
    -------
    str
        The self-contained page that :func:`write_report` writes.
    """
    data = load_run(run_dir)
    return _environment().get_template("report.html").render(**_context(data, title, region_names, outlines))


def write_report(
    run_dir: str | Path,
    *,
    title: str | None = None,
    region_names: Mapping[str, Any] | None = None,
    outlines: str | None = None,
) -> Path:
    """Build ``report.html`` in ``run_dir`` from the stored outputs of the run.

    Parameters
    ----------
    run_dir : path-like
        A run directory with, for each gas, ``posterior_<GAS>.nc`` (or the legacy
        single-gas ``posterior.nc``) and one ``discrepancies.json`` for all gases
        (required), and optionally ``emissions_<GAS>.nc``, ``gridded_<GAS>.nc``,
        ``mass_balance_<GAS>.csv`` (or ``emissions.nc``, ``gridded.nc``),
        ``boundaries.geojson``, ``manifest.json``, ``config.resolved.yaml``. A missing
        optional file becomes a note in the report. See
        :func:`gosat_pipeline.report.inputs.load_run`.
    title : str, optional
        Page title; default the run's ``report.title`` setting, else a title naming
        every gas ("CH4 and CO2 emissions seen from space: ...").
    region_names : mapping, optional
        Region code -> name shown, on top of the official short names
        (:data:`gosat_pipeline.report.names.OFFICIAL_SHORT_NAMES`) and the run's
        ``report.region_names`` setting.
    outlines : str, optional
        A boundary file with every country in view (e.g.
        :func:`gosat_pipeline.regions.default_boundaries_path`), drawn as thin borders and
        coastlines under the solved regions' outlines. Without it the maps show the
        solved regions only, and the report says so.

    Returns
    -------
    pathlib.Path
        ``run_dir / "report.html"``, written atomically: self-contained (images as
        base64 data URIs, inline CSS, no scripts, no external URLs), with every path
        relative to the run directory.

    Raises
    ------
    GosatPipelineError
        When no posterior file or no ``discrepancies.json`` is found, or a required file
        is unreadable (the message names it).
    """
    html = render_report(run_dir, title=title, region_names=region_names, outlines=outlines)
    path = atomic_write_text(html, Path(run_dir) / "report.html")
    logger.info("wrote %s (%d kB)", path, len(html) // 1024)
    return path
