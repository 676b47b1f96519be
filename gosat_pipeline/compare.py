"""Comparison of the satellite estimate with reported inventories (DESIGN.md 5.5).

The comparison turns a posterior (the output of the inversion stage) and a table of
reported national totals into one verdict per region x gas x period x reference
inventory, and writes ``discrepancies.csv`` / ``discrepancies.json``.

Regional totals are linear maps of the state, :math:`E_R = w_R^T x` with
:math:`w_{R,j}` the prior emission (Tg yr-1) of state element *j* when it belongs to
region *R* and period *p*, 0 otherwise. Every uncertainty uses the full covariance,
:math:`\\sigma_R^2 = w_R^T \\hat S w_R`; an aggregate of regions (e.g. ASEAN) has
:math:`w = \\sum_{R} w_R` so :math:`\\sigma^2 = 1^T C 1` with
:math:`C = W \\hat S W^T`, never the sum of the members' variances.

Two z-scores are computed for every row (both are in the output, ``z_form`` says which
one the verdict uses):

``shift`` (the prior *is* the reported inventory)
    :math:`z = (w^T \\hat x - w^T x_a) / \\sqrt{w^T (S_a - \\hat S) w}`: the posterior
    shift against its expected spread if the report is right (the denominator is the
    spread of :math:`w^T \\hat x` around :math:`w^T x_a` under the prior, since
    :math:`\\mathrm{cov}(\\hat x - x_a) = S_a - \\hat S` for the optimal estimate).
``direct`` (the prior is another inventory)
    :math:`z = (\\hat E_R - r^s_R) / \\sqrt{\\sigma_R^2 + \\sigma_{rep}^2}` with the
    reported total seen through the averaging kernel,
    :math:`r^s_R = w_R^T (x_a + A (x_{rep} - x_a))`. The reported inventory is put in
    state space as scale factors :math:`x_{rep,j} = x_{a,j}\\, r_R / (w_R^T x_a)` for the
    elements of every region that has a reported value (the prior pattern inside the
    region, scaled to the reported total); regions without a reported value keep
    :math:`x_{rep} = x_a`. Where the data constrain the region well
    (:math:`A \\approx I`) :math:`r^s_R \\approx r_R`; where they constrain it weakly the
    comparison is against what the inversion could have seen of the reported
    inventory, not against a value it could not resolve (Rodgers 2000, section 3.2;
    Rodgers and Connor 2003). The denominator keeps the full posterior and reported
    variances, which is conservative.

Verdicts (``schema.VERDICTS``), in the order they are decided:

1. ``no reported value``: the reference has no value for the region and period.
2. ``not constrained``: the inversion failed (status != 0), or the error reduction
   :math:`1 - \\sigma_{post}/\\sigma_{prior}` < ``min_error_reduction``, or the
   region's averaging-kernel sensitivity :math:`w^T A w / w^T w` < ``min_sensitivity``,
   or fewer than ``min_observations`` observations see the region.
3. ``higher than reported`` / ``lower than reported`` when :math:`|z| \\ge z_{crit}`,
   otherwise ``consistent``.

The ``reason`` column says in words which gate failed or what the z test found, so the
verdict never claims more than the data support.

Output schema (copy into the README)
------------------------------------
``discrepancies.csv``: a plain CSV (no comment lines), one row per region x gas x
period x reference, columns in the order of ``schema.DISCREPANCY_COLUMNS``; thresholds
are repeated on every row (``z_critical``, ``min_error_reduction``, ``min_sensitivity``,
``min_observations``). Empty cells are missing values.

``discrepancies.json``::

    {
      "schema_version": "1.0.0",            # schema.DISCREPANCY_SCHEMA_VERSION
      "kind": "gosat_pipeline.discrepancies",
      "columns": {name: "description / units", ...},
      "thresholds": {"z_critical": 2.0, "min_error_reduction": 0.2,
                     "min_sensitivity": 0.1, "min_observations": 5},
      "verdicts": [...],                     # schema.VERDICTS
      "metadata": {...},                     # gas, z form, package version, ...
      "rows": [{column: value, ...}, ...],   # missing values are null
      "period_changes": {"columns": {...}, "rows": [...]}   # optional
    }

``discrepancies.schema.json`` (beside it) is the JSON Schema (draft 2020-12) of that
document; :func:`discrepancy_json_schema` returns it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import GosatPipelineError, SchemaError
from gosat_pipeline.outputs import atomic_write_text
from gosat_pipeline.schema import (
    DISCREPANCY_COLUMNS,
    DISCREPANCY_SCHEMA_VERSION,
    VERDICTS,
)

__all__ = [
    "CHANGE_COLUMNS",
    "compare_to_inventory",
    "period_change",
    "write_discrepancies",
    "discrepancy_json_schema",
    "discrepancy_document",
]

logger = logging.getLogger(__name__)

#: Columns of the period-change table (``period_changes.csv``), with units.
CHANGE_COLUMNS: dict[str, str] = {
    "region": "ISO 3166-1 alpha-3 code or aggregate name",
    "region_name": "human-readable name",
    "members": "space-separated member codes of an aggregate; empty for a single region",
    "gas": "CO2 or CH4",
    "period_a": "first period(s), space-separated ISO 8601 labels",
    "period_b": "second period(s), space-separated ISO 8601 labels",
    "reference": "name of the reported inventory compared against",
    "posterior_a": "Tg yr-1 (posterior total, mean over period_a)",
    "posterior_b": "Tg yr-1 (posterior total, mean over period_b)",
    "posterior_change": "Tg yr-1 (posterior_b - posterior_a)",
    "posterior_change_sigma": "Tg yr-1 (sqrt(var_a + var_b - 2 cov_ab), full covariance)",
    "posterior_cross_covariance": "Tg2 yr-2 (cov(posterior_a, posterior_b))",
    "relative_change": "1 (posterior_change / posterior_a)",
    "change_z": "1 (posterior_change / posterior_change_sigma)",
    "significant": "true when |change_z| >= z_critical and the region is constrained",
    "change_verdict": "increase, decrease, no significant change, or not constrained",
    "reported_a": "Tg yr-1 (reported, mean over the years of period_a)",
    "reported_b": "Tg yr-1 (reported, mean over the years of period_b)",
    "reported_change": "Tg yr-1 (reported_b - reported_a)",
    "reported_change_sigma": "Tg yr-1 (independent reported errors assumed: conservative)",
    "change_difference": "Tg yr-1 (posterior_change - reported_change)",
    "change_difference_z": "1 (change_difference / sqrt(posterior_change_sigma^2 + reported_change_sigma^2))",
    "verdict": "estimated vs reported change: one of VERDICTS",
    "reason": "plain-language reason for the verdicts",
    "error_reduction": "1 (smaller of the two periods' error reductions)",
    "sensitivity": "1 (smaller of the two periods' averaging-kernel sensitivities)",
    "n_observations": "count (smaller of the two periods' counts)",
    "z_critical": "1 (threshold)",
    "min_error_reduction": "1 (threshold)",
    "min_sensitivity": "1 (threshold)",
    "min_observations": "count (threshold)",
}

_REQUIRED_REPORTED = ("area", "year", "value_tg_per_yr")
_STATUS_TEXT = {1: "no observations", 2: "degenerate inversion"}


@dataclass(frozen=True)
class Thresholds:
    """Verdict thresholds, repeated in every output (DESIGN.md 5.5)."""

    z_critical: float = 2.0
    min_error_reduction: float = 0.2
    min_sensitivity: float = 0.1
    min_observations: int = 5

    def as_dict(self) -> dict[str, Any]:
        return {
            "z_critical": float(self.z_critical),
            "min_error_reduction": float(self.min_error_reduction),
            "min_sensitivity": float(self.min_sensitivity),
            "min_observations": int(self.min_observations),
        }


@dataclass(frozen=True)
class _State:
    """Numpy view of a posterior: state metadata, vectors and matrices."""

    kind: np.ndarray
    region: np.ndarray
    period: np.ndarray
    prior_tg: np.ndarray
    xa: np.ndarray
    xh: np.ndarray
    Sa: np.ndarray
    Sh: np.ndarray
    A: np.ndarray
    gas: str
    status: int
    names: dict[str, str]
    n_obs: dict[tuple[str, str], int]
    n_obs_total: int | None


# ---------------------------------------------------------------------------- inputs
def _state_from_posterior(posterior: xr.Dataset) -> _State:
    need = ("x_prior", "x_posterior", "S_prior", "S_posterior", "averaging_kernel",
            "state_kind", "state_region", "state_period", "state_prior_emission")  # fmt: skip
    missing = [v for v in need if v not in posterior.variables]
    if missing:
        raise SchemaError(
            f"posterior dataset is missing {missing}; the comparison needs the posterior "
            "schema of the inversion stage (DESIGN.md 4)"
        )
    names: dict[str, str] = {}
    n_obs: dict[tuple[str, str], int] = {}
    if "total" in posterior.dims and "total_region" in posterior.variables:
        regs = posterior["total_region"].values.astype(str)
        pers = posterior["total_period"].values.astype(str)
        rn = posterior["total_region_name"].values.astype(str) if "total_region_name" in posterior.variables else regs
        nn = posterior["total_n_observations"].values if "total_n_observations" in posterior else None
        for t, (r, p) in enumerate(zip(regs, pers)):
            names.setdefault(r, rn[t] or r)
            if nn is not None:
                n_obs[(r, p)] = int(nn[t])
    if "state_region_name" in posterior.variables:
        for r, n in zip(posterior["state_region"].values.astype(str),
                        posterior["state_region_name"].values.astype(str)):  # fmt: skip
            if r and n:
                names.setdefault(r, n)
    n_total = int(posterior["n_observations"].values) if "n_observations" in posterior else None
    status = int(posterior["status"].values) if "status" in posterior else 0
    return _State(
        kind=posterior["state_kind"].values.astype(str),
        region=posterior["state_region"].values.astype(str),
        period=posterior["state_period"].values.astype(str),
        prior_tg=posterior["state_prior_emission"].values.astype("float64") / 1e9,
        xa=posterior["x_prior"].values.astype("float64"),
        xh=posterior["x_posterior"].values.astype("float64"),
        Sa=posterior["S_prior"].values.astype("float64"),
        Sh=posterior["S_posterior"].values.astype("float64"),
        A=posterior["averaging_kernel"].values.astype("float64"),
        gas=str(posterior.attrs.get("gas", "")).upper(),
        status=status,
        names=names,
        n_obs=n_obs,
        n_obs_total=n_total,
    )


def _period_year(label: str) -> int | None:
    """Calendar year a period label is compared with: the year of its midpoint.

    ``"2020"`` and ``"2020-03"`` give 2020; ``"2019-10-01/2020-10-01"`` gives 2020 (its
    midpoint is 2020-04-01); labels that are not dates (e.g. ``"all"``) give None.
    """
    label = str(label).strip()
    if re.fullmatch(r"\d{4}", label):
        return int(label)
    try:
        if "/" in label:
            start, end = (pd.Timestamp(s) for s in label.split("/", 1))
            return int((start + (end - start) / 2).year)
        return int(pd.Timestamp(label).year)
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class _Reported:
    value: float
    sigma: float
    uncertainty_source: str
    year: int | None


def _prepare_reported(
    reported: pd.DataFrame | None, gas: str, reference: str
) -> dict[str, dict[str, dict[Any, _Reported]]]:
    """{source: {area: {year or period label: _Reported}}} for ``gas``."""
    if reported is None or len(reported) == 0:
        return {reference: {}}
    missing = [c for c in _REQUIRED_REPORTED if c not in reported.columns]
    if missing:
        raise SchemaError(
            f"reported totals table is missing column(s) {missing}; has {list(map(str, reported.columns))}; "
            "expected the long format of INVENTORIES.md 1.6 (area, year, gas, source, value_tg_per_yr, "
            "sigma_tg_per_yr, uncertainty_source)"
        )
    df = reported.copy()
    if "gas" in df.columns and gas:
        df = df[df["gas"].astype(str).str.upper() == gas]
    src = df["source"].astype(str).where(df["source"].notna(), reference) if "source" in df.columns else None
    df["_source"] = src if src is not None else reference
    df.loc[df["_source"].str.strip() == "", "_source"] = reference
    dup = df.duplicated(subset=["_source", "area", "year"], keep=False)
    if dup.any():
        rows = df.loc[dup, ["_source", "area", "year"]].drop_duplicates().values.tolist()
        raise SchemaError(
            f"reported totals have several rows for (source, area, year) {rows[:5]}; select one "
            "category (e.g. the national total) per area before comparing"
        )
    out: dict[str, dict[str, dict[Any, _Reported]]] = {}
    for source in dict.fromkeys(df["_source"]) if len(df) else [reference]:
        out[source] = {}
    for rec in df.to_dict("records"):
        sigma = float(rec.get("sigma_tg_per_yr", math.nan))
        usrc = str(rec.get("uncertainty_source") or "reported")
        if not math.isfinite(sigma):
            sigma, usrc = 0.0, "none given (treated as 0)"
            logger.warning("reported value %s %s %s has no uncertainty; using 0",
                           rec["_source"], rec["area"], rec["year"])  # fmt: skip
        year = int(rec["year"]) if pd.notna(rec["year"]) else None
        entry = _Reported(float(rec["value_tg_per_yr"]), sigma, usrc, year)
        key: Any = str(rec["period"]) if "period" in rec and pd.notna(rec.get("period")) else year
        out[rec["_source"]].setdefault(str(rec["area"]), {})[key] = entry
    return out


def _lookup(table: Mapping[str, Mapping[Any, _Reported]], area: str, period: str) -> _Reported | None:
    by_key = table.get(area)
    if not by_key:
        return None
    if period in by_key:
        return by_key[period]
    return by_key.get(_period_year(period))


# ---------------------------------------------------------------------------- algebra
def _weights(st: _State, members: Sequence[str], period: str) -> np.ndarray:
    """w (state,) in Tg yr-1: prior emissions of the members' elements in ``period``."""
    sel = (st.kind == "emission") & np.isin(st.region, list(members)) & (st.period == period)
    return np.where(sel, st.prior_tg, 0.0)


def _has_elements(st: _State, members: Sequence[str], period: str) -> bool:
    return bool(((st.kind == "emission") & np.isin(st.region, list(members)) & (st.period == period)).any())


def _quad(w: np.ndarray, S: np.ndarray, v: np.ndarray | None = None) -> float:
    return float(w @ S @ (w if v is None else v))


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x > 0 else 0.0


def _div(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(b) else math.nan


def _totals(st: _State, w: np.ndarray) -> dict[str, float]:
    """Prior/posterior totals, sigmas, error reduction, sensitivity and shift z of ``w``."""
    sa = _sqrt(_quad(w, st.Sa))
    sp = _sqrt(_quad(w, st.Sh))
    ww = float(w @ w)
    e_a, e_h = float(w @ st.xa), float(w @ st.xh)
    return {
        "prior_total": e_a,
        "prior_sigma": sa,
        "posterior_total": e_h,
        "posterior_sigma": sp,
        "error_reduction": 1.0 - sp / sa if sa > 0 else 0.0,
        "sensitivity": _quad(w, st.A) / ww if ww > 0 else 0.0,
        "z_shift": _div(e_h - e_a, _sqrt(_quad(w, st.Sa - st.Sh))),
    }


def _reported_state(st: _State, table: Mapping[str, Mapping[Any, _Reported]]) -> np.ndarray:
    """The reported inventory in state space: x_rep = x_a * r_R / (w_R^T x_a) per region."""
    x_rep = st.xa.copy()
    emis = st.kind == "emission"
    for r in dict.fromkeys(st.region[emis]):
        for p in dict.fromkeys(st.period[emis & (st.region == r)]):
            rep = _lookup(table, r, p)
            sel = emis & (st.region == r) & (st.period == p)
            e_a = float(st.prior_tg[sel] @ st.xa[sel])
            if rep is not None and e_a > 0:
                x_rep[sel] = st.xa[sel] * rep.value / e_a
    return x_rep


def _n_observations(st: _State, members: Sequence[str], period: str) -> int:
    """Observations seeing a region; an aggregate gets the largest member's (a lower bound)."""
    counts = [st.n_obs[(m, period)] for m in members if (m, period) in st.n_obs]
    if counts:
        return int(max(counts))
    if st.n_obs_total is not None:
        logger.warning("posterior has no total_n_observations for %s %s; using the inversion's "
                       "total count %d", list(members), period, st.n_obs_total)  # fmt: skip
        return st.n_obs_total
    return 0


# ---------------------------------------------------------------------------- verdicts
def _gate(st: _State, er: float, sens: float, nobs: int, thr: Thresholds) -> str | None:
    """Reason the region is not constrained, or None."""
    if st.status:
        return f"inversion status {st.status} ({_STATUS_TEXT.get(st.status, 'failed')}): posterior = prior"
    fails = []
    if not er >= thr.min_error_reduction:
        fails.append(f"error reduction {er:.2f} < {thr.min_error_reduction:g}")
    if not sens >= thr.min_sensitivity:
        fails.append(f"averaging-kernel sensitivity {sens:.2f} < {thr.min_sensitivity:g}")
    if nobs < thr.min_observations:
        fails.append(f"{nobs} observations < {thr.min_observations}")
    return "; ".join(fails) if fails else None


def _verdict(has_reported: bool, gate: str | None, z: float, thr: Thresholds) -> tuple[str, str]:
    """(verdict, reason) following the order of the module docstring."""
    if not has_reported:
        extra = f" (and not constrained: {gate})" if gate else ""
        return "no reported value", "the reference has no value for this region and period" + extra
    if gate:
        return "not constrained", "the satellite data do not constrain this total: " + gate
    if not math.isfinite(z):
        return "not constrained", "the z-score is undefined (zero expected spread)"
    if abs(z) >= thr.z_critical:
        word = "higher than reported" if z > 0 else "lower than reported"
        return word, f"|z| = {abs(z):.2f} >= {thr.z_critical:g}"
    return "consistent", f"|z| = {abs(z):.2f} < {thr.z_critical:g}"


def _targets(st: _State, aggregates: Mapping[str, Sequence[str]] | None) -> list[tuple[str, str, tuple[str, ...]]]:
    """(code, name, members) of every region with emission elements, then aggregates."""
    emis = st.kind == "emission"
    out = [(r, st.names.get(r, r), (r,)) for r in dict.fromkeys(st.region[emis])]
    for name, members in (aggregates or {}).items():
        members = tuple(str(m) for m in members)
        unknown = [m for m in members if m not in set(st.region[emis])]
        if unknown:
            raise GosatPipelineError(
                f"aggregate {name!r} has member(s) {unknown} that are not regions of the posterior; "
                f"regions: {sorted(set(st.region[emis]))}"
            )
        out.append((str(name), str(name), members))
    return out


def _aggregate_reported(
    table: Mapping[str, Mapping[Any, _Reported]], code: str, members: Sequence[str], period: str
) -> tuple[_Reported | None, bool]:
    """Reported value of a target; for an aggregate the sum of members (if all report).

    Returns the value and whether it came from a row of the aggregate itself.
    """
    own = _lookup(table, code, period)
    if len(members) == 1 or own is not None:
        return own, len(members) > 1
    parts = [_lookup(table, m, period) for m in members]
    if any(p is None for p in parts):
        return None, False
    value = sum(p.value for p in parts)  # type: ignore[union-attr]
    sigma = math.sqrt(sum(p.sigma**2 for p in parts))  # type: ignore[union-attr]
    return _Reported(value, sigma, "sum of members (independent errors)", parts[0].year), False  # type: ignore[union-attr]


def _row(
    st: _State, target: tuple[str, str, tuple[str, ...]], period: str, source: str,
    table: Mapping[str, Mapping[Any, _Reported]], x_rep: np.ndarray, shift: bool, thr: Thresholds,
) -> dict[str, Any]:  # fmt: skip
    code, name, members = target
    w = _weights(st, members, period)
    tot = _totals(st, w)
    rep, own_row = _aggregate_reported(table, code, members, period)
    nobs = _n_observations(st, members, period)
    row: dict[str, Any] = {"region": code, "region_name": name, "gas": st.gas, "period": period,
                           "reference": source, **tot, "n_observations": nobs,
                           "members": " ".join(members) if len(members) > 1 else ""}  # fmt: skip
    z_direct, r_s = math.nan, math.nan
    if rep is not None:
        xr_t = x_rep
        if own_row and tot["prior_total"] > 0:  # aggregate value only: scale its members uniformly
            xr_t = x_rep.copy()
            sel = w != 0
            xr_t[sel] = st.xa[sel] * rep.value / tot["prior_total"]
        r_s = float(w @ (st.xa + st.A @ (xr_t - st.xa)))
        z_direct = _div(tot["posterior_total"] - r_s, _sqrt(tot["posterior_sigma"] ** 2 + rep.sigma**2))
        diff = tot["posterior_total"] - rep.value
        row.update(reported_total=rep.value, reported_sigma=rep.sigma, reported_year=rep.year,
                   uncertainty_source=rep.uncertainty_source, difference=diff,
                   relative_difference=_div(diff, abs(rep.value)) if rep.value else math.nan)  # fmt: skip
    z = tot["z_shift"] if shift else z_direct
    gate = _gate(st, tot["error_reduction"], tot["sensitivity"], nobs, thr)
    verdict, reason = _verdict(rep is not None, gate, z, thr)
    row.update(reported_total_smoothed=r_s, z_direct=z_direct, z_score=z,
               z_form="shift" if shift else "direct", verdict=verdict, reason=reason)  # fmt: skip
    return row


def _finish(rows: list[dict[str, Any]], columns: Mapping[str, str], thr: Thresholds, **attrs: Any) -> pd.DataFrame:
    from gosat_pipeline import __version__

    df = pd.DataFrame(rows)
    for c, v in thr.as_dict().items():
        df[c] = v
    df["gosat_pipeline_version"] = __version__
    for c in columns:
        if c not in df.columns:
            df[c] = np.nan if c not in ("reason", "members", "uncertainty_source") else ""
    df = df[list(columns)] if len(df) else pd.DataFrame(columns=list(columns))
    for c in ("reason", "members", "uncertainty_source"):
        if c in df.columns:
            df[c] = df[c].fillna("")
    df.attrs.update({"thresholds": thr.as_dict(), "schema_version": DISCREPANCY_SCHEMA_VERSION, **attrs})
    return df


def _shift_for(prior_is_reported: bool | str, source: str) -> bool:
    if isinstance(prior_is_reported, str):
        return source == prior_is_reported
    return bool(prior_is_reported)


# ---------------------------------------------------------------------------- public API
def compare_to_inventory(
    posterior: xr.Dataset,
    reported: pd.DataFrame | None,
    *,
    z_critical: float = 2.0,
    min_error_reduction: float = 0.2,
    min_sensitivity: float = 0.1,
    min_observations: int = 5,
    prior_is_reported: bool | str = False,
    aggregates: Mapping[str, Sequence[str]] | None = None,
    reference: str = "reported",
) -> pd.DataFrame:
    """Compare posterior regional totals with reported totals (DESIGN.md 5.5).

    Parameters
    ----------
    posterior : xarray.Dataset
        The posterior schema (dims ``state``, ``state2``; ``x_prior``, ``x_posterior``,
        ``S_prior``, ``S_posterior``, ``averaging_kernel``; state coords ``state_kind``,
        ``state_region``, ``state_period``, ``state_prior_emission`` in kg yr-1;
        optionally ``total_region``/``total_period``/``total_region_name``/
        ``total_n_observations`` on ``total``; attr ``gas``).
    reported : pandas.DataFrame or None
        Columns ``area`` (ISO-3), ``year``, ``value_tg_per_yr`` and optionally ``gas``
        (rows of other gases are ignored), ``source`` (one reference inventory per
        distinct value; missing/empty -> ``reference``), ``sigma_tg_per_yr`` (missing ->
        0 with a warning), ``uncertainty_source``, ``period`` (matched to the posterior's
        period labels before ``year``). One row per (source, area, year). A period is
        matched to the reported year holding its midpoint.
    z_critical : float
        |z| at or above which a difference is a discrepancy.
    min_error_reduction, min_sensitivity : float
        Below either, the verdict is "not constrained".
    min_observations : int
        Fewer observations seeing the region -> "not constrained".
    prior_is_reported : bool or str
        True: the prior is the reported inventory, the verdict uses the ``shift`` z for
        every reference. A string names the one reference (``source``) that is the prior;
        the others use the ``direct`` z.
    aggregates : dict, optional
        ``{"ASEAN": ["BRN", "IDN", ...]}``: extra rows whose totals use
        :math:`w = \\sum w_R` (full covariance). Their reported value is the aggregate's
        own row if the table has one, else the sum of the members' values when every
        member reports (sigma added in quadrature, independent reporting errors), else
        "no reported value". Their observation count is the largest member's (a lower
        bound of the union).
    reference : str
        Reference name for rows of ``reported`` without a ``source``.

    Returns
    -------
    pandas.DataFrame
        One row per region (then aggregate) x period x reference, columns
        :data:`gosat_pipeline.schema.DISCREPANCY_COLUMNS` in order (Tg yr-1 totals).
        ``df.attrs`` holds ``thresholds``, ``schema_version``, ``gas``.

    Notes
    -----
    See the module docstring for the two z forms and the averaging-kernel smoothing.
    References: Rodgers, C. D. (2000), Inverse Methods for Atmospheric Sounding, eqs.
    3.16 and 4.25-4.29; Rodgers and Connor (2003), JGR 108(D3), 4116.
    """
    thr = Thresholds(z_critical, min_error_reduction, min_sensitivity, int(min_observations))
    st = _state_from_posterior(posterior)
    tables = _prepare_reported(reported, st.gas, reference)
    targets = _targets(st, aggregates)
    periods = list(dict.fromkeys(st.period[st.kind == "emission"]))
    codes = {t[0] for t in targets}
    for source, table in tables.items():
        unused = sorted(set(table) - codes)
        if unused:
            logger.info("reference %r: reported areas %s are not regions of the posterior", source, unused)
    rows = []
    for source, table in tables.items():
        x_rep = _reported_state(st, table)
        shift = _shift_for(prior_is_reported, source)
        for target in targets:
            for p in periods:
                if _has_elements(st, target[2], p):
                    rows.append(_row(st, target, p, source, table, x_rep, shift, thr))
    df = _finish(rows, DISCREPANCY_COLUMNS, thr, gas=st.gas, prior_is_reported=prior_is_reported,
                 references=list(tables), inversion_status=st.status)  # fmt: skip
    counts = df["verdict"].value_counts().to_dict() if len(df) else {}
    logger.info("comparison: %d rows, verdicts %s", len(df), counts)
    return df


def _as_list(periods: str | Sequence[str]) -> list[str]:
    return [periods] if isinstance(periods, str) else [str(p) for p in periods]


def _mean_weights(st: _State, members: Sequence[str], periods: Sequence[str]) -> np.ndarray:
    ws = [_weights(st, members, p) for p in periods]
    return sum(ws) / len(ws)  # type: ignore[return-value]


def _mean_reported(table: Mapping[str, Mapping[Any, _Reported]], code: str, members: Sequence[str],
                   periods: Sequence[str]) -> tuple[float, float] | None:  # fmt: skip
    vals = [_aggregate_reported(table, code, members, p)[0] for p in periods]
    if any(v is None for v in vals):
        return None
    n = len(vals)
    return sum(v.value for v in vals) / n, math.sqrt(sum(v.sigma**2 for v in vals)) / n  # type: ignore[union-attr]


def _change_row(st: _State, target: tuple[str, str, tuple[str, ...]], pa: list[str], pb: list[str],
                source: str, table: Mapping[str, Mapping[Any, _Reported]], thr: Thresholds) -> dict[str, Any]:  # fmt: skip
    code, name, members = target
    wa, wb = _mean_weights(st, members, pa), _mean_weights(st, members, pb)
    d = wb - wa
    ea, eb = float(wa @ st.xh), float(wb @ st.xh)
    change, sig = eb - ea, _sqrt(_quad(d, st.Sh))
    z = _div(change, sig)
    per = [_totals(st, _weights(st, members, p)) for p in pa + pb]
    er = min(t["error_reduction"] for t in per)
    sens = min(t["sensitivity"] for t in per)
    nobs = min(_n_observations(st, members, p) for p in pa + pb)
    gate = _gate(st, er, sens, nobs, thr)
    significant = gate is None and math.isfinite(z) and abs(z) >= thr.z_critical
    cverdict = "not constrained" if gate else (
        ("increase" if change > 0 else "decrease") if significant else "no significant change")
    row: dict[str, Any] = {
        "region": code, "region_name": name, "members": " ".join(members) if len(members) > 1 else "",
        "gas": st.gas, "period_a": " ".join(pa), "period_b": " ".join(pb), "reference": source,
        "posterior_a": ea, "posterior_b": eb, "posterior_change": change, "posterior_change_sigma": sig,
        "posterior_cross_covariance": _quad(wa, st.Sh, wb), "relative_change": _div(change, abs(ea)),
        "change_z": z, "significant": bool(significant), "change_verdict": cverdict,
        "error_reduction": er, "sensitivity": sens, "n_observations": nobs,
    }  # fmt: skip
    ra, rb = _mean_reported(table, code, members, pa), _mean_reported(table, code, members, pb)
    has_rep = ra is not None and rb is not None
    zd = math.nan
    if has_rep:
        rch, rsig = rb[0] - ra[0], math.hypot(ra[1], rb[1])  # type: ignore[index]
        zd = _div(change - rch, math.hypot(sig, rsig))
        row.update(reported_a=ra[0], reported_b=rb[0], reported_change=rch,  # type: ignore[index]
                   reported_change_sigma=rsig, change_difference=change - rch, change_difference_z=zd)
    verdict, reason = _verdict(has_rep, gate, zd, thr)
    row.update(verdict=verdict, reason=f"change {cverdict} (z = {z:.2f}); vs reported: {reason}")
    return row


def period_change(
    posterior: xr.Dataset,
    reported: pd.DataFrame | None,
    *,
    period_a: str | Sequence[str],
    period_b: str | Sequence[str],
    z_critical: float = 2.0,
    min_error_reduction: float = 0.2,
    min_sensitivity: float = 0.1,
    min_observations: int = 5,
    aggregates: Mapping[str, Sequence[str]] | None = None,
    reference: str = "reported",
) -> pd.DataFrame:
    """Estimated change of each region's total between two periods, next to the reported change.

    Parameters
    ----------
    posterior, reported, z_critical, min_error_reduction, min_sensitivity, min_observations, aggregates, reference
        As in :func:`compare_to_inventory`.
    period_a, period_b : str or sequence of str
        Period labels of the posterior (``state_period``). A sequence (e.g. every year
        before and after a policy date) means the mean rate over those periods.

    Returns
    -------
    pandas.DataFrame
        One row per region (then aggregate) x reference, columns :data:`CHANGE_COLUMNS`
        (Tg yr-1). ``change_verdict`` says whether the atmosphere shows a significant
        increase or decrease; ``verdict`` compares the estimated with the reported
        change (one of VERDICTS).

    Notes
    -----
    With :math:`d = \\bar w_b - \\bar w_a` (mean weights over each set of periods) the
    change is :math:`d^T \\hat x` and its variance :math:`d^T \\hat S d =
    \\sigma_a^2 + \\sigma_b^2 - 2\\,\\mathrm{cov}_{ab}`: the cross-period covariance is
    included (it is large when the prior errors of the two periods are correlated).
    Reported values of different years are taken as independent, which overstates the
    reported change's sigma when their errors are correlated (conservative). The
    constraint gate applies to every period involved.
    """
    thr = Thresholds(z_critical, min_error_reduction, min_sensitivity, int(min_observations))
    st = _state_from_posterior(posterior)
    pa, pb = _as_list(period_a), _as_list(period_b)
    known = set(st.period[st.kind == "emission"])
    unknown = [p for p in pa + pb if p not in known]
    if unknown:
        raise GosatPipelineError(f"period(s) {unknown} are not periods of the posterior; periods: {sorted(known)}")
    tables = _prepare_reported(reported, st.gas, reference)
    rows = [_change_row(st, t, pa, pb, source, table, thr)
            for source, table in tables.items() for t in _targets(st, aggregates)]  # fmt: skip
    return _finish(rows, {k: v for k, v in CHANGE_COLUMNS.items()}, thr, gas=st.gas)


# ---------------------------------------------------------------------------- writing
def discrepancy_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``discrepancies.json``."""
    num = {"type": ["number", "null"]}
    row_props: dict[str, Any] = {c: num for c in DISCREPANCY_COLUMNS}
    for c in ("region", "region_name", "gas", "period", "reference", "z_form", "reason", "members",
              "uncertainty_source", "gosat_pipeline_version"):  # fmt: skip
        row_props[c] = {"type": ["string", "null"]}
    row_props["verdict"] = {"enum": list(VERDICTS)}
    row_props["z_form"] = {"enum": ["shift", "direct"]}
    for c in ("n_observations", "reported_year", "min_observations"):
        row_props[c] = {"type": ["integer", "null"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "gosat_pipeline discrepancies",
        "type": "object",
        "required": ["schema_version", "columns", "thresholds", "rows"],
        "properties": {
            "schema_version": {"const": DISCREPANCY_SCHEMA_VERSION},
            "kind": {"const": "gosat_pipeline.discrepancies"},
            "columns": {"type": "object", "required": list(DISCREPANCY_COLUMNS),
                        "additionalProperties": {"type": "string"}},  # fmt: skip
            "thresholds": {
                "type": "object",
                "required": ["z_critical", "min_error_reduction", "min_sensitivity", "min_observations"],
                "properties": {"min_observations": {"type": "integer"}},
                "additionalProperties": {"type": "number"},
            },
            "verdicts": {"type": "array", "items": {"enum": list(VERDICTS)}},
            "metadata": {"type": "object"},
            "rows": {"type": "array", "items": {"type": "object", "required": list(DISCREPANCY_COLUMNS),
                                                "properties": row_props, "additionalProperties": False}},
            "period_changes": {"type": "object", "required": ["columns", "rows"]},
        },
    }  # fmt: skip


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is None:
        return None
    return value


def _records(df: pd.DataFrame, int_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    rows = []
    for rec in df.to_dict("records"):
        out = {k: _jsonable(v) for k, v in rec.items()}
        for c in int_columns:
            if out.get(c) is not None:
                out[c] = int(out[c])
        rows.append(out)
    return rows


_INT_COLUMNS = ("n_observations", "reported_year", "min_observations")


def discrepancy_document(df: pd.DataFrame, changes: pd.DataFrame | None = None) -> dict[str, Any]:
    """The ``discrepancies.json`` document of a comparison table (see the module docstring)."""
    from gosat_pipeline import __version__

    thresholds = dict(df.attrs.get("thresholds") or {})
    if not thresholds and len(df):
        thresholds = {k: _jsonable(df[k].iloc[0]) for k in Thresholds().as_dict() if k in df.columns}
    thresholds = thresholds or Thresholds().as_dict()
    meta = {k: _jsonable(v) if not isinstance(v, list | dict) else v
            for k, v in df.attrs.items() if k not in ("thresholds", "schema_version")}  # fmt: skip
    meta.setdefault("gosat_pipeline_version", __version__)
    doc: dict[str, Any] = {
        "schema_version": DISCREPANCY_SCHEMA_VERSION,
        "kind": "gosat_pipeline.discrepancies",
        "columns": dict(DISCREPANCY_COLUMNS),
        "thresholds": thresholds,
        "verdicts": list(VERDICTS),
        "metadata": meta,
        "rows": _records(df[list(DISCREPANCY_COLUMNS)], _INT_COLUMNS),
    }
    if changes is not None:
        doc["period_changes"] = {"columns": dict(CHANGE_COLUMNS),
                                 "rows": _records(changes[list(CHANGE_COLUMNS)], _INT_COLUMNS)}  # fmt: skip
    return doc


def write_discrepancies(
    df: pd.DataFrame, directory: str | Path, *, changes: pd.DataFrame | None = None
) -> dict[str, Path]:
    """Write ``discrepancies.csv``, ``discrepancies.json`` and ``discrepancies.schema.json``.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`compare_to_inventory` (columns DISCREPANCY_COLUMNS).
    directory : path-like
        The run directory (created if needed).
    changes : pandas.DataFrame, optional
        Output of :func:`period_change`; also written as ``period_changes.csv`` and in
        the JSON under ``period_changes``.

    Returns
    -------
    dict
        ``{"csv": ..., "json": ..., "schema": ...[, "changes_csv": ...]}`` paths, each
        written atomically.
    """
    missing = [c for c in DISCREPANCY_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"discrepancy table is missing columns {missing}; build it with compare_to_inventory")
    directory = Path(directory)
    paths = {
        "csv": atomic_write_text(df[list(DISCREPANCY_COLUMNS)].to_csv(index=False), directory / "discrepancies.csv"),
        "json": atomic_write_text(json.dumps(discrepancy_document(df, changes), indent=2) + "\n",
                                  directory / "discrepancies.json"),
        "schema": atomic_write_text(json.dumps(discrepancy_json_schema(), indent=2) + "\n",
                                    directory / "discrepancies.schema.json"),
    }  # fmt: skip
    if changes is not None:
        paths["changes_csv"] = atomic_write_text(changes[list(CHANGE_COLUMNS)].to_csv(index=False),
                                                 directory / "period_changes.csv")  # fmt: skip
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
