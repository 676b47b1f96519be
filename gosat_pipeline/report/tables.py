"""Plain-language text and tables of the report: headline, findings, the full table.

Functions here return plain Python strings, lists and dicts; escaping is the
template's job (jinja2 autoescape), so nothing here builds markup. Every number a
sentence prints is formatted by :func:`fmt` from the row's own columns, so a reader can
redo the arithmetic of each z-score from the numbers on the page.

Rows are the discrepancy rows of ``discrepancies.json`` (columns of
:data:`gosat_pipeline.schema.DISCREPANCY_COLUMNS`); any column may be missing or
empty, and columns this module does not know are passed through to
:func:`technical_table`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gosat_pipeline.params import VerdictThresholds
from gosat_pipeline.report.names import display_name
from gosat_pipeline.report.verdicts import (
    COMPARED,
    FLAGGED,
    NO_VERDICT,
    verdict_class,
    verdict_of,
    verdict_rank,
)
from gosat_pipeline.schema import DISCREPANCY_COLUMNS

__all__ = [
    "fmt",
    "num",
    "unit",
    "Thresholds",
    "row_sentence",
    "row_text",
    "headline_sentences",
    "findings_rows",
    "detail_table",
    "technical_table",
    "change_rows",
    "numeric_columns",
]

#: The comparison's defaults, for a document that does not record its thresholds.
_DEFAULT_THRESHOLDS: dict[str, float | int] = VerdictThresholds().as_dict()


def num(x: Any) -> float:
    """``x`` as a float; NaN for None, text and anything unparseable."""
    if isinstance(x, bool):
        return float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def fmt(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (at least the integer part); "n/a" when missing."""
    v = num(x)
    if not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - mag)
    return f"{v:,.{decimals}f}"


def _pm(value: Any, sigma: Any) -> str:
    s = num(sigma)
    return fmt(value) if not math.isfinite(s) else f"{fmt(value)} \u00b1 {fmt(s)}"


def _pct(x: float) -> str:
    """A fraction as a percentage for prose ("less than 1 %" rather than "0 %")."""
    if not math.isfinite(x):
        return "n/a"
    if 0 < abs(x) < 0.005:
        return "less than 1 %"
    return f"{100 * x:.0f} %"


def _threshold(x: float) -> str:
    """A threshold as written in a configuration (2 rather than 2.00)."""
    return f"{x:g}" if math.isfinite(x) else "n/a"


def _signed(z: float) -> str:
    """z with a sign and two decimals, using the minus sign; "0.00" rather than "-0.00"."""
    if not math.isfinite(z):
        return "n/a"
    text = f"{z:+.2f}"
    if text in ("+0.00", "-0.00"):
        return "0.00"
    return text.replace("-", "\u2212")


def unit(gas: Any) -> str:
    """Unit of a row's totals, e.g. "Tg CH4/yr"."""
    g = str(gas or "").strip()
    return f"Tg {g}/yr" if g else "Tg/yr"


def _text(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return ""
    s = str(x).strip()
    return "" if s.lower() in ("nan", "none", "null") else s


class Thresholds:
    """The verdict thresholds of a row: its own columns, else the document's, else the defaults."""

    def __init__(self, doc_thresholds: Mapping[str, Any] | None = None) -> None:
        self.base = dict(_DEFAULT_THRESHOLDS)
        for k, v in (doc_thresholds or {}).items():
            if math.isfinite(num(v)):
                self.base[str(k)] = num(v)

    def of(self, row: Mapping[str, Any], key: str) -> float:
        """Threshold ``key`` for ``row``."""
        v = num(row.get(key))
        return v if math.isfinite(v) else float(self.base.get(key, _DEFAULT_THRESHOLDS.get(key, math.nan)))


# ---------------------------------------------------------------------------- sentences
def _z_arithmetic(row: Mapping[str, Any]) -> str:
    """The z-score as the arithmetic of the quantities it was computed from."""
    z = num(row.get("z_score"))
    form = _text(row.get("z_form")).lower()
    post, psig = row.get("posterior_total"), row.get("posterior_sigma")
    if form == "shift":
        sig = num(row.get("compared_sigma"))
        if math.isfinite(sig):  # sqrt(prior variance - posterior variance + ensemble spread^2 + transport error^2)
            return (
                f"z = ({fmt(post)} \u2212 {fmt(row.get('prior_total'))}) / {fmt(sig)} = {_signed(z)}, where "
                f"{fmt(sig)} is the spread the shift would have if the report were right"
            )
        return (
            f"z = ({fmt(post)} \u2212 {fmt(row.get('prior_total'))}) / "
            f"\u221a({fmt(row.get('prior_sigma'))}\u00b2 \u2212 {fmt(psig)}\u00b2) = {_signed(z)}"
        )
    smoothed = row.get("reported_total_smoothed")
    compared = smoothed if math.isfinite(num(smoothed)) else row.get("reported_total")
    return (
        f"z = ({fmt(post)} \u2212 {fmt(compared)}) / "
        f"\u221a({fmt(psig)}\u00b2 + {fmt(row.get('reported_sigma'))}\u00b2) = {_signed(z)}"
    )


def _what_z_compares(row: Mapping[str, Any]) -> str:
    form = _text(row.get("z_form")).lower()
    u = unit(row.get("gas"))
    if form == "shift":
        return (
            "The verdict tests how far the satellite data moved the estimate away from the inventory it "
            f"started from, which here is the reported inventory itself (prior {fmt(row.get('prior_total'))} {u}): "
        )
    smoothed = num(row.get("reported_total_smoothed"))
    if math.isfinite(smoothed):
        return (
            f"The verdict compares the estimate with {fmt(smoothed)} {u}, the reported total as these "
            "satellite data see it: "
        )
    return "The verdict compares the estimate with the reported total: "


def _relative(row: Mapping[str, Any]) -> str:
    """ "79 % above" / "14 % below" / "about the same as" the reported total."""
    rel = num(row.get("relative_difference"))
    if not math.isfinite(rel):
        rep, post = num(row.get("reported_total")), num(row.get("posterior_total"))
        rel = (post - rep) / rep if math.isfinite(rep) and rep > 0 and math.isfinite(post) else math.nan
    if not math.isfinite(rel):
        return "compared with"
    if abs(rel) < 0.005:
        return "about the same as"
    return f"{100 * abs(rel):.0f} % {'above' if rel > 0 else 'below'}"


def _gates(row: Mapping[str, Any], thr: Thresholds) -> list[str]:
    """Plain words for each constraint test the row fails (same tests as the comparison)."""
    out = []
    er, sens, nobs = num(row.get("error_reduction")), num(row.get("sensitivity")), num(row.get("n_observations"))
    t_er, t_sens, t_obs = (thr.of(row, k) for k in ("min_error_reduction", "min_sensitivity", "min_observations"))
    if math.isfinite(t_er) and not er >= t_er:
        if math.isfinite(er) and er <= 0:
            out.append(f"the satellite data do not shrink the uncertainty of this total at all ({_pct(t_er)} needed)")
        else:
            by = _pct(er) if math.isfinite(er) else "an unknown amount"
            by = by if by.startswith(("less", "an")) else f"only {by}"
            out.append(f"the satellite data shrink the uncertainty of this total by {by} ({_pct(t_er)} needed)")
    if math.isfinite(t_sens) and not sens >= t_sens:
        share = ("none" if sens <= 0 else _pct(sens)) if math.isfinite(sens) else "an unknown share"
        out.append(
            f"{share} of the estimate comes from the satellite data rather than the starting inventory "
            f"({_pct(t_sens)} needed)"
        )
    if math.isfinite(t_obs) and math.isfinite(nobs) and nobs < t_obs:
        out.append(f"only {int(nobs)} satellite observations see this region ({int(t_obs)} needed)")
    return out


def _why_not_constrained(row: Mapping[str, Any], thr: Thresholds, verdict: str) -> str:
    if verdict != "not constrained":
        spread = [(k, num(v)) for k, v in row.items() if "spread" in str(k).lower() and math.isfinite(num(v))]
        extra = "; ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in spread)
        return "across an ensemble of plausible transport settings the verdict changes" + (
            f" ({extra})" if extra else ""
        )
    gates = _gates(row, thr)
    if gates:
        return _join(gates, "and")
    reason = _text(row.get("reason")).lower()
    if "inversion status" in reason:
        return "the inversion did not complete normally, so the estimate is the inventory it started from"
    if "undefined" in reason:
        return "the comparison has no spread to measure the difference against"
    return "the satellite data cannot settle this total"


def row_text(row: Mapping[str, Any], names: Mapping[str, str], thr: Thresholds) -> tuple[str, str]:
    """(finding, test) of one row: what it says, and the arithmetic of its verdict ("" when none)."""
    verdict = verdict_of(row)
    u = unit(row.get("gas"))
    est = f"{_pm(row.get('posterior_total'), row.get('posterior_sigma'))} {u}"
    rep = f"{_pm(row.get('reported_total'), row.get('reported_sigma'))} {u}"
    ref = _text(row.get("reference")) or "the reference inventory"
    zc = _threshold(thr.of(row, "z_critical"))
    z = num(row.get("z_score"))
    if verdict in FLAGGED or verdict == "consistent":
        head = f"The satellite estimate, {est}, is {_relative(row)} the reported {rep} ({ref})."
        test = _what_z_compares(row) + _z_arithmetic(row)
        if verdict in FLAGGED:
            return head, f"{test}; |z| is at least {zc}, so the difference is larger than the uncertainties allow."
        return head, f"{test}; |z| is below {zc}, so the two agree within their uncertainties."
    if verdict.startswith("not constrained"):
        why = _why_not_constrained(row, thr, verdict)
        return f"No verdict: {why}.", f"The satellite estimate is {est}; reported {rep} ({ref})."
    if verdict == "partly outside the domain":
        share = num(row.get("domain_share"))
        part = f" (about {_pct(share)} of it)" if math.isfinite(share) else ""
        return (
            f"Only part of {display_name(row, names)} lies inside the area analysed{part}: the satellite "
            f"estimate for that part is {est}.",
            f"It is not compared with the national total of {rep} ({ref}).",
        )
    if verdict == "no reported value":
        return f"The satellite estimate is {est}; {ref} has no value for this region and period to compare with.", ""
    if verdict == NO_VERDICT:
        return f"Estimated at {est}; not compared with any reported total.", ""
    tail = f" z = {_signed(z)}." if math.isfinite(z) else ""
    return f"Verdict \u201c{verdict}\u201d: satellite estimate {est}; reported {rep} ({ref}).", tail.strip()


def row_sentence(row: Mapping[str, Any], names: Mapping[str, str], thr: Thresholds) -> str:
    """The plain-words sentence of one row, with the quantities its verdict was computed from.

    Parameters
    ----------
    row : mapping
        A discrepancy row.
    names : mapping
        Region code -> display name (:func:`gosat_pipeline.report.names.region_names`).
    thr : Thresholds

    Returns
    -------
    str
        e.g. "The satellite estimate, 7.15 ± 0.843 Tg CH4/yr, is 79 % above the reported
        4.00 ± 0.800 Tg CH4/yr (national submission). The verdict compares the estimate
        with 3.72 Tg CH4/yr, the reported total as these satellite data see it:
        z = (7.15 − 3.72) / √(0.843² + 0.800²) = +2.95; |z| is at least 2, so the
        difference is larger than the uncertainties allow."
    """
    main, test = row_text(row, names, thr)
    return f"{main} {test}".strip()


# ---------------------------------------------------------------------------- headline
def _about(rel: float) -> str:
    """A rounded relative difference for the headline: "about 80 % above", "about 2.1 times"."""
    a = abs(rel)
    if rel >= 1.0:
        return f"about {1 + rel:.1f} times"
    step = 5 if a >= 0.2 else 1
    return f"about {max(step, step * round(100 * a / step)):.0f} % {'above' if rel > 0 else 'below'}"


def _tonnes(x: float) -> str:
    """Tg as "4.0 million tonnes" (two significant digits)."""
    return f"{fmt(x, 2)} million tonnes"


def _flag_clause(row: Mapping[str, Any], names: Mapping[str, str], with_period: bool) -> str:
    name = display_name(row, names)
    gas = _text(row.get("gas"))
    when = f" in {_text(row.get('period'))}" if with_period and _text(row.get("period")) else ""
    rep, post = num(row.get("reported_total")), num(row.get("posterior_total"))
    rel = num(row.get("relative_difference"))
    if not math.isfinite(rel) and math.isfinite(rep) and rep > 0:
        rel = (post - rep) / rep
    if math.isfinite(rel) and math.isfinite(rep) and rep > 0:
        how = _about(rel)
        ref = f"the reported {_tonnes(rep)} a year"
        verb = f"appear {how} {ref}" if "times" in how else f"appear {how} {ref}"
    else:
        diff = post - rep
        direction = "above" if verdict_of(row) == "higher than reported" else "below"
        verb = f"appear {_tonnes(abs(diff))} a year {direction} the reported total"
    return f"{name}\u2019s {gas} emissions{when} {verb}".replace("  ", " ")


def _join(parts: Sequence[str], last: str = "and") -> str:
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + f" {last} " + parts[-1]


def _ref_phrase(rows: Sequence[Mapping[str, Any]]) -> str:
    refs = list(dict.fromkeys(_text(r.get("reference")) for r in rows if _text(r.get("reference"))))
    if len(refs) != 1:
        return "the reported totals"
    ref = refs[0]
    return f"the {ref}" if ref[:1].islower() else f"\u201c{ref}\u201d"


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _rest_phrase(gas: str, rows: Sequence[Mapping[str, Any]], n_flagged: int) -> str:
    """What the gas's other totals say: agree / cannot be checked / not compared."""
    verdicts = [verdict_of(r) for r in rows]
    compared = [v for v in verdicts if v in COMPARED]
    n = len(compared)
    ok = sum(v == "consistent" for v in compared)
    nc = sum(v.startswith("not constrained") for v in compared)
    parts = []
    if ok:
        parts.append(f"{ok} {_plural(ok, 'agrees', 'agree')} with the reported value within the uncertainties")
    if nc:
        parts.append(f"{nc} cannot be checked with these satellite data")
    if n_flagged:
        text = f"of the other {n - n_flagged} {gas} totals, " + _join(parts) if parts else ""
    elif n and nc == n:
        text = f"none of the {n} {gas} totals can be checked with these satellite data"
    elif n:
        text = f"none of the {n} {gas} totals differs from the reported value: " + _join(parts)
    else:
        text = ""
    other = {}
    for v in verdicts:
        if v not in COMPARED:
            other[v] = other.get(v, 0) + 1
    words = {
        "no reported value": ("has no reported value", "have no reported value"),
        "partly outside the domain": (
            "lies only partly inside the area analysed",
            "lie only partly inside the area analysed",
        ),
        NO_VERDICT: (
            "is estimated but not compared (not a reporting country)",
            "are estimated but not compared (not reporting countries)",
        ),
    }
    extras = []
    for v, k in other.items():
        one, many = words.get(v, (f"has the verdict \u201c{v}\u201d", f"have the verdict \u201c{v}\u201d"))
        extras.append(f"{k} {gas} {_plural(k, 'total', 'totals')} {_plural(k, one, many)}")
    return "; ".join([t for t in [text, _join(extras)] if t])


def headline_sentences(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> list[str]:
    """One or two sentences stating the findings, flagged regions named first.

    The first sentence names every total that differs from its reported value
    (largest |z| first, per gas); the second says what the other totals show.

    Parameters
    ----------
    rows : sequence of mapping
        Discrepancy rows (all gases).
    names : mapping
        Region code -> display name.

    Returns
    -------
    list of str
        e.g. ["1 of 11 CH4 totals differs from the national submission: Thailand's CH4
        emissions appear about 80 % above the reported 4.0 million tonnes a year.",
        "Of the other 10 CH4 totals, 6 agree ... ; none of the 11 CO2 totals can be
        checked with these satellite data."]
    """
    if not rows:
        return ["The comparison has no rows: there is nothing to report."]
    gases = list(dict.fromkeys(_text(r.get("gas")) for r in rows))
    by_gas = {g: [r for r in rows if _text(r.get("gas")) == g] for g in gases}
    flagged = {
        g: sorted((r for r in rs if verdict_of(r) in FLAGGED), key=lambda r: -abs(num(r.get("z_score"))))
        for g, rs in by_gas.items()
    }
    order = sorted(gases, key=lambda g: (not flagged[g], gases.index(g)))
    first = []
    for g in order:
        if not flagged[g]:
            continue
        rs = by_gas[g]
        n = sum(verdict_of(r) in COMPARED for r in rs)
        k = len(flagged[g])
        many_periods = len({_text(r.get("period")) for r in rs}) > 1
        clauses = [_flag_clause(r, names, many_periods) for r in flagged[g]]
        label = f"{g} " if g else ""
        first.append(
            f"{k} of {n} {label}{_plural(n, 'total', 'totals')} {_plural(k, 'differs', 'differ')} from "
            f"{_ref_phrase(rs)}: " + _join(clauses, "and")
        )
    if not first:
        first.append(f"No total differs significantly from {_ref_phrase(rows)}")
    rest = "; ".join(p for p in (_rest_phrase(g, by_gas[g], len(flagged[g])) for g in order) if p)
    out = ["; ".join(first) + "."]
    if rest:
        out.append(rest[0].upper() + rest[1:] + ".")
    return out


# ---------------------------------------------------------------------------- tables
def findings_rows(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str], thr: Thresholds) -> list[dict[str, str]]:
    """Rows of the findings table, differences first, then agreement, not constrained, the rest.

    Within a group, the largest |z| comes first; ties keep the file order.
    """
    indexed = list(enumerate(rows))
    indexed.sort(
        key=lambda ir: (
            verdict_rank(verdict_of(ir[1])),
            -abs(num(ir[1].get("z_score"))) if verdict_of(ir[1]) in FLAGGED else 0.0,
            ir[0],
        )
    )
    out = []
    for _, r in indexed:
        v = verdict_of(r)
        text = row_text(r, names, thr)
        out.append(
            {
                "region": display_name(r, names),
                "code": _text(r.get("region")),
                "gas": _text(r.get("gas")),
                "period": _text(r.get("period")),
                "reference": _text(r.get("reference")),
                "verdict": v,
                "css": verdict_class(v),
                "sentence": text[0],
                "test": text[1],
            }
        )
    return out


def _cell(row: Mapping[str, Any], key: Any, kind: str, names: Mapping[str, str]) -> str:
    if kind == "name":
        return display_name(row, names)
    if kind == "pm":
        return _pm(row.get(key[0]), row.get(key[1]))
    if kind == "verdict":
        return verdict_of(row)
    value = row.get(key)
    if kind == "text":
        return _text(value)
    v = num(value)
    if not math.isfinite(v):
        return "n/a"
    if kind == "pct":
        text = f"{100 * v:.0f} %"
        return "0 %" if text == "-0 %" else text.replace("-", "\u2212")
    if kind == "int":
        return f"{int(v):d}"
    if kind == "z":
        return _signed(v)
    return fmt(v).replace("-", "\u2212")


#: (key, header, kind, legend) of the full table; kinds: name, text, num, pm, pct, int, z, verdict.
DETAIL_COLUMNS: tuple[tuple[Any, str, str, str], ...] = (
    ("region", "Region", "name", "country or group of countries"),
    ("gas", "Gas", "text", "CH4 methane, CO2 carbon dioxide"),
    ("period", "Period", "text", "the period the totals cover"),
    ("reference", "Reference", "text", "the reported inventory compared with"),
    ("prior_total", "Prior", "num", "the inventory the inversion started from"),
    (
        ("posterior_total", "posterior_sigma"),
        "Estimate \u00b1 1\u03c3",
        "pm",
        "satellite estimate and its 1-sigma uncertainty",
    ),
    (
        ("reported_total", "reported_sigma"),
        "Reported \u00b1 1\u03c3",
        "pm",
        "reported total and its 1-sigma uncertainty",
    ),
    (
        "reported_total_smoothed",
        "Reported, as the data see it",
        "num",
        "the reported inventory seen through the satellite data's limited view: what the verdict compares with (z form direct)",
    ),
    ("difference", "Difference", "num", "estimate minus reported"),
    ("relative_difference", "Relative", "pct", "difference divided by the reported total"),
    ("z_score", "z", "z", "difference in units of the combined uncertainty (see How to read this)"),
    (
        "z_form",
        "z form",
        "text",
        "direct: estimate vs reported as the data see it; shift: how far the data moved the "
        "estimate from the reported inventory used as the prior",
    ),
    ("error_reduction", "Error reduction", "pct", "how much the satellite data shrink the uncertainty of the prior"),
    ("sensitivity", "Sensitivity", "num", "share of the estimate that comes from the satellite data (0 to 1)"),
    ("n_observations", "Obs.", "int", "number of gridded satellite observations that see the region"),
    ("verdict", "Verdict", "verdict", "see the verdict meanings under Method"),
)


def detail_table(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> dict[str, Any]:
    """The full comparison table: ``header``, ``legend`` [(header, text)], ``numeric`` flags, ``rows``.

    Each body row is a list of cell strings in header order; ``css`` gives each row's
    verdict class.
    """
    body = [[_cell(r, k, kind, names) for k, _, kind, _ in DETAIL_COLUMNS] for r in rows]
    return {
        "header": [h for _, h, _, _ in DETAIL_COLUMNS],
        "legend": [(h, text) for _, h, _, text in DETAIL_COLUMNS],
        "numeric": [kind in ("num", "pm", "pct", "int", "z") for _, _, kind, _ in DETAIL_COLUMNS],
        "pm": [kind == "pm" for _, _, kind, _ in DETAIL_COLUMNS],
        "rows": body,
        "css": [verdict_class(verdict_of(r)) for r in rows],
    }


_SHOWN = {k for k, _, kind, _ in DETAIL_COLUMNS if kind != "pm"} | {
    "posterior_total",
    "posterior_sigma",
    "reported_total",
    "reported_sigma",
}
_RUN_WIDE = {"z_critical", "min_error_reduction", "min_sensitivity", "min_observations", "gosat_pipeline_version"}
_TECH_LABELS = {
    "region": "Code",
    "region_name": "Name in the inputs",
    "gas": "Gas",
    "period": "Period",
    "reference": "Reference",
    "members": "Members",
    "reported_year": "Reported year",
    "uncertainty_source": "Reported uncertainty from",
    "prior_sigma": "Prior 1\u03c3",
    "z_direct": "z direct",
    "z_shift": "z shift",
    "reason": "Reason recorded by the comparison",
    "compared_value": "Compared with",
    "compared_sigma": "z denominator",
    "posterior_sigma_analytic": "Analytic 1\u03c3",
    "ensemble_spread": "Ensemble spread",
    "transport_error_sigma": "Transport error 1\u03c3",
    "detectable_difference": "Smallest detectable difference",
    "ensemble_members": "Inversions",
    "ensemble_min": "Lowest member",
    "ensemble_max": "Highest member",
    "z_min": "Lowest member z",
    "z_max": "Highest member z",
    "chi2_state": "State \u03c7\u00b2 ratio",
    "chi2_obs": "Observation \u03c7\u00b2 ratio",
    "domain_share": "Share in domain",
    "domain_share_area": "Area share in domain",
    "domain_share_emission": "Emission share in domain",
}
#: value columns per printed part of the technical table (the identifying columns repeat in each part)
_TECH_PART = 8


def _tech_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        if not math.isfinite(float(v)):
            return ""
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e9 else fmt(v)
    if isinstance(v, list | tuple):
        return " ".join(_text(x) for x in v)
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_text(x)}" for k, x in v.items())
    return _text(v)


def technical_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every other column of the rows, including columns this report does not know.

    Returns
    -------
    dict
        ``header`` (labels), ``keys`` (column names), ``rows`` (cell strings),
        ``unknown`` (names of columns outside the discrepancy schema), ``parts`` (the same
        columns split into tables of a few columns each, the code, gas and period repeated
        in every part, so that each fits a printed page). Columns that are
        empty in every row are left out; the run-wide thresholds and version are shown
        in the method section instead.
    """
    keys: list[str] = ["region", "region_name", "gas", "period", "reference"]
    for r in rows:
        for k in r:
            k = str(k)
            if k not in keys and k not in _SHOWN and k not in _RUN_WIDE:
                keys.append(k)
    keep = keys[:5] + [k for k in keys[5:] if any(_tech_value(r.get(k)) for r in rows)]
    known = [k for k in keep[5:] if k in DISCREPANCY_COLUMNS]
    unknown = [k for k in keep[5:] if k not in DISCREPANCY_COLUMNS]
    keep = keep[:5] + [k for k in known if k != "reason"] + unknown + (["reason"] if "reason" in known else [])
    header = [_TECH_LABELS.get(k, k) for k in keep]
    cells = [[_tech_value(r.get(k)) for k in keep] for r in rows]
    ids = [keep.index(k) for k in ("region", "gas", "period")]
    rest = [i for i in range(len(keep)) if i not in ids]
    parts = []
    for start in range(0, len(rest), _TECH_PART):  # narrow enough for a printed page
        cols = ids + rest[start : start + _TECH_PART]
        parts.append({"header": [header[i] for i in cols], "rows": [[row[i] for i in cols] for row in cells]})
    return {"header": header, "keys": keep, "rows": cells, "unknown": unknown, "parts": parts}


_CHANGE = (
    ("region", "Region", None),
    ("gas", "Gas", None),
    ("reference", "Reference", None),
    ("period_a", "From", None),
    ("period_b", "To", None),
    ("posterior_change", "Estimated change", "num"),
    ("posterior_change_sigma", "\u00b1", "num"),
    ("change_z", "z", "z"),
    ("change_verdict", "In the atmosphere", None),
    ("reported_change", "Reported change", "num"),
    ("reported_change_sigma", "\u00b1", "num"),
    ("verdict", "Estimated vs reported", None),
)


def change_rows(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the period-change table."""
    header = [h for _, h, _ in _CHANGE]
    body = []
    for r in rows:
        cells = []
        for k, _, kind in _CHANGE:
            if k == "region":
                cells.append(display_name(r, names))
            elif kind is None:
                cells.append(_text(r.get(k)))
            else:
                cells.append(_cell(r, k, kind, names))
        body.append(cells)
    return header, body


def numeric_columns(table: str = "change") -> list[bool]:
    """Which columns of the ``"change"`` table (or ``"detail"``) are numbers (right-aligned)."""
    if table == "detail":
        return [kind in ("num", "pm", "pct", "int", "z") for _, _, kind, _ in DETAIL_COLUMNS]
    return [kind is not None for _, _, kind in _CHANGE]
