"""Plain-language tables of the report: headline verdicts, detail rows, provenance.

Functions here return plain Python strings and dicts; escaping is the template's job
(jinja2 autoescape), so nothing here builds markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["fmt", "headline_rows", "detail_rows", "change_rows", "numeric_columns", "provenance", "VERDICT_CLASS"]

#: verdict -> CSS class of its badge
VERDICT_CLASS: dict[str, str] = {
    "consistent": "ok",
    "higher than reported": "high",
    "lower than reported": "low",
    "not constrained": "nc",
    "no reported value": "nr",
}


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def fmt(x: Any, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits; "n/a" for missing values."""
    v = _num(x)
    if not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - mag)
    return f"{v:,.{decimals}f}"


def _unit(gas: str) -> str:
    return f"Tg {gas}/yr" if gas else "Tg/yr"


def sentence(row: Mapping[str, Any]) -> str:
    """One plain-language sentence for a discrepancy row."""
    name = str(row.get("region_name") or row.get("region") or "?")
    unit = _unit(str(row.get("gas") or ""))
    est = f"{fmt(row.get('posterior_total'))} \u00b1 {fmt(row.get('posterior_sigma'))} {unit}"
    ref = str(row.get("reference") or "reported")
    rep = f"{fmt(row.get('reported_total'))} \u00b1 {fmt(row.get('reported_sigma'))}"
    z = fmt(row.get("z_score"), 2)
    verdict = str(row.get("verdict") or "")
    if verdict == "higher than reported":
        return f"{name}: satellite estimate {est} is higher than the reported {rep} ({ref}; z = {z})."
    if verdict == "lower than reported":
        return f"{name}: satellite estimate {est} is lower than the reported {rep} ({ref}; z = {z})."
    if verdict == "consistent":
        return f"{name}: satellite estimate {est} is consistent with the reported {rep} ({ref}; z = {z})."
    if verdict == "not constrained":
        why = str(row.get("reason") or "the satellite data do not constrain this total")
        return f"{name}: no verdict, because {why} (estimate {est})."
    if verdict == "no reported value":
        return f"{name}: satellite estimate {est}; {ref} has no reported value to compare with."
    return f"{name}: {verdict}"


def headline_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Headline table: one line per row, in the order of the file."""
    out = []
    for r in rows:
        verdict = str(r.get("verdict") or "")
        out.append({
            "region": str(r.get("region_name") or r.get("region") or ""),
            "code": str(r.get("region") or ""),
            "gas": str(r.get("gas") or ""),
            "period": str(r.get("period") or ""),
            "reference": str(r.get("reference") or ""),
            "verdict": verdict,
            "css": VERDICT_CLASS.get(verdict, "nr"),
            "sentence": sentence(r),
        })  # fmt: skip
    return out


_DETAIL = (
    ("region", "Region", None), ("gas", "Gas", None), ("period", "Period", None), ("reference", "Reference", None),
    ("prior_total", "Prior", "num"), ("posterior_total", "Estimate", "num"), ("posterior_sigma", "\u00b1", "num"),
    ("reported_total", "Reported", "num"), ("reported_sigma", "\u00b1", "num"),
    ("reported_total_smoothed", "Reported seen by the data", "num"), ("difference", "Difference", "num"),
    ("relative_difference", "Relative", "pct"), ("z_score", "z", "z"), ("z_form", "z form", None),
    ("error_reduction", "Error reduction", "pct"), ("sensitivity", "Sensitivity", "num"),
    ("n_observations", "Obs.", "int"), ("verdict", "Verdict", None),
)  # fmt: skip


def _cell(value: Any, kind: str | None) -> str:
    if kind is None:
        return "" if value is None else str(value)
    v = _num(value)
    if not math.isfinite(v):
        return "n/a"
    if kind == "pct":
        return f"{100 * v:.0f} %"
    if kind == "int":
        return f"{int(v):d}"
    if kind == "z":
        return f"{v:+.2f}"
    return fmt(v)


def detail_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows of cell strings) of the full comparison table."""
    header = [h for _, h, _ in _DETAIL]
    body = [[_cell(r.get(k), kind) for k, _, kind in _DETAIL] for r in rows]
    return header, body


_CHANGE = (
    ("region", "Region", None), ("gas", "Gas", None), ("reference", "Reference", None), ("period_a", "From", None),
    ("period_b", "To", None), ("posterior_change", "Estimated change", "num"),
    ("posterior_change_sigma", "\u00b1", "num"), ("change_z", "z", "z"), ("change_verdict", "In the atmosphere", None),
    ("reported_change", "Reported change", "num"), ("reported_change_sigma", "\u00b1", "num"),
    ("verdict", "Estimated vs reported", None),
)  # fmt: skip


def change_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the period-change table."""
    header = [h for _, h, _ in _CHANGE]
    body = [[_cell(r.get(k), kind) for k, _, kind in _CHANGE] for r in rows]
    return header, body


def numeric_columns(table: str = "detail") -> list[bool]:
    """Which columns of :func:`detail_rows` (``"detail"``) or :func:`change_rows` (``"change"``) are numbers.

    Parameters
    ----------
    table : {"detail", "change"}

    Returns
    -------
    list of bool
        One flag per column, in header order (True: right-aligned number).
    """
    spec = {"detail": _DETAIL, "change": _CHANGE}[table]
    return [kind is not None for _, _, kind in spec]


def _as_items(obj: Any) -> list[tuple[str, str]]:
    if isinstance(obj, Mapping):
        return [(str(k), str(v)) for k, v in obj.items()]
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        return [(str(i), str(v)) for i, v in enumerate(obj)]
    return [] if obj is None else [("", str(obj))]


def _inputs(items: Any) -> list[dict[str, str]]:
    out = []
    if isinstance(items, Mapping):
        items = [{"path": k, **(v if isinstance(v, Mapping) else {"sha256": v})} for k, v in items.items()]
    for it in items or []:
        if isinstance(it, Mapping):
            out.append({"path": str(it.get("path") or it.get("file") or it.get("name") or ""),
                        "sha256": str(it.get("sha256") or ""),
                        "detail": str(it.get("reason") or it.get("reader") or it.get("format") or "")})  # fmt: skip
        else:
            out.append({"path": str(it), "sha256": "", "detail": ""})
    return out


def provenance(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance sections from ``manifest.json``, tolerant of missing keys."""
    stages = manifest.get("stages")
    return {
        "inputs": _inputs(manifest.get("inputs")),
        "skipped": _inputs(manifest.get("skipped_inputs")),
        "versions": _as_items(manifest.get("versions")),
        "config_sha256": str(manifest.get("config_sha256") or "not recorded"),
        "stages": _as_items(stages) if stages is not None else [],
        "other": [(str(k), str(v)) for k, v in manifest.items()
                  if k not in ("inputs", "skipped_inputs", "versions", "config_sha256", "stages", "synthetic")
                  and isinstance(v, str | int | float | bool)],
    }  # fmt: skip
