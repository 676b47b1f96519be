"""Comparison of the satellite estimate with reported inventories (DESIGN.md 5.5).

The comparison turns a posterior (the output of the inversion stage), optionally an
ensemble of inversions over the uncertain transport and error choices, and a table of
reported national totals into one verdict per requested region (and aggregate) x gas x
period x reference inventory, and writes ``discrepancies.csv`` / ``discrepancies.json``.

Totals
------
Regional totals are linear maps of the state, :math:`E_R = w_R^T x` with
:math:`w_{R,j}` the prior emission (Tg yr-1) of emission element *j* when it belongs to
region *R* and period *p*, 0 otherwise. Every uncertainty uses the full covariance,
:math:`\\sigma_R^2 = w_R^T \\hat S w_R`; an aggregate (e.g. ASEAN) has
:math:`w = \\sum_R w_R`, never the sum of the members' variances.

With an ensemble of M inversions (members differing in transport parameters, winds,
error settings and background treatment; the configured one is member 0), the estimate
is the members' mean and its variance the law of total variance,

.. math:: \\bar E = \\frac{1}{M}\\sum_m E_m, \\qquad
          \\sigma^2 = \\frac{1}{M}\\sum_m \\sigma_m^2 + \\frac{1}{M-1}\\sum_m (E_m - \\bar E)^2
          + (f_T \\bar E)^2,

the analytic posterior error (scaled by the inversion's state chi-square :math:`J_a/DOFS`
when it exceeds 1: the state moved further than its prior errors allowed) plus the spread that
transport-model error causes (the
practice of national methane inversions, e.g. Maasakkers et al. 2019, Worden et al.
2022, Shen et al. 2023), plus a structural transport error :math:`f_T` (``transport_error``,
default 25 %) for what a parametric ensemble of one model cannot sample: regional CH4
emissions inverted with different transport models differ by tens of percent (Locatelli
et al. 2013), and the package's non-identical-twin benchmark shows national totals off by
20-30 % when the truth's transport differs in structure (land/sea ventilation, wind shear,
unresolved eddies) from the inversion's.

The z-score
-----------
Every row prints the two numbers its z was computed from: ``compared_value`` and
``compared_sigma``, with ``z_score = (posterior_total - compared_value) / compared_sigma``.

``direct`` (the prior is another inventory)
    ``compared_value`` is the reported total seen through the averaging kernel,
    :math:`r^s_R = w_R^T (x_a + A (x_{rep} - x_a))` (mean over members), with the
    reported inventory in state space as :math:`x_{rep,j} = x_{a,j}\\, r_R / P_R` for
    every region with a reported value (:math:`P_R` the region's whole prior, inside and
    outside the domain), and ``compared_sigma`` is
    :math:`\\sqrt{\\sigma^2 + \\sigma_{rep}^2}`. Where the data constrain the region well
    (:math:`A \\approx I`) :math:`r^s_R \\approx r_R`; where they constrain it weakly the
    comparison is against what the inversion could have seen of the reported inventory
    (Rodgers 2000, section 3.2; Rodgers and Connor 2003). If :math:`r^s_R` is not within a
    factor of two of :math:`r_R` the inversion cannot separate the region from its
    neighbours and the verdict is "not constrained".
``shift`` (the prior *is* the reported inventory)
    ``compared_value`` is the prior total and ``compared_sigma``
    :math:`\\sqrt{w^T (S_a - \\hat S) w + s^2}` (s the ensemble spread): the posterior shift
    against its expected spread if the report is right.

Verdicts (``schema.VERDICTS``), in the order they are decided:

1. ``partly outside the domain``: less than ``min_domain_share`` of the region's area or
   prior emission lies inside the inversion domain. Its in-domain estimate is reported
   but never compared with the national total. Aggregates follow from their members.
2. ``no reported value``: the reference has no value for the region and period.
3. ``not constrained``: the inversion failed (status != 0), or the error reduction
   :math:`1 - \\sigma/\\sigma_{prior}` (with the combined sigma) < ``min_error_reduction``,
   or the averaging-kernel sensitivity :math:`w^T A w / w^T w` < ``min_sensitivity``,
   or fewer than ``min_observations`` observations see the region, or the model fits the
   observations that see it worse than ``max_chi2_obs`` (their mean squared whitened residual),
   or the reported total cannot be seen through the averaging kernel (above).
4. ``not constrained (transport-sensitive)``: the members disagree, each member's total
   tested against the same combined sigma: one would flag the region and another would
   not, or they flag it in opposite directions.
5. ``higher than reported`` / ``lower than reported`` when :math:`|z| \\ge z_{crit}`;
   otherwise ``consistent`` if the test could have detected a difference of
   ``max_detectable_difference`` times the reported total (:math:`z_{crit}\\,\\sigma_z`,
   printed as ``detectable_difference``), else ``not constrained``: "no significant
   difference" from a test too weak to see one is not agreement.

Regions of the state that were not requested (other countries in the domain, the rest
of the domain) get no verdict: :func:`domain_budget` reports them.

The ``reason`` column says in words which gate failed or what the z test found, with the
numbers, so the verdict never claims more than the data support.

References
----------
Rodgers, C. D. (2000): Inverse Methods for Atmospheric Sounding, World Scientific.
Rodgers, C. D. and Connor, B. J. (2003): Intercomparison of remote sounding instruments,
J. Geophys. Res. 108(D3), 4116.
Maasakkers, J. D. et al. (2019): Global distribution of methane emissions, emission trends,
and OH concentrations and trends inferred from an inversion of GOSAT satellite data for
2010-2015, Atmos. Chem. Phys. 19, 7859-7881.
Worden, J. R. et al. (2022): The 2019 methane budget and uncertainties at 1 degree resolution
and each country through Bayesian integration of GOSAT total column methane data and a
priori inventory estimates, Atmos. Chem. Phys. 22, 6811-6841.
Locatelli, R. et al. (2013): Impact of transport model errors on the global and regional
methane emissions estimated by inverse modelling, Atmos. Chem. Phys. 13, 9917-9937.
Shen, L. et al. (2023): National quantifications of methane emissions from fuel exploitation
using high resolution inversions of satellite observations, Nat. Commun. 14, 4948.

Output schema
-------------
``discrepancies.csv``: a plain CSV (no comment lines), one row per region x gas x
period x reference, columns in the order of ``schema.DISCREPANCY_COLUMNS``; thresholds
are repeated on every row. ``discrepancies.json``: ``{"schema_version", "kind",
"columns", "thresholds", "verdicts", "metadata", "rows"[, "period_changes"]}`` with the
JSON Schema of :func:`discrepancy_json_schema` beside it (``discrepancies.schema.json``).
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
import scipy.sparse as sp
import xarray as xr

from gosat_pipeline.errors import GosatPipelineError, SchemaError
from gosat_pipeline.outputs import atomic_write_text
from gosat_pipeline.params import VerdictThresholds, with_overrides
from gosat_pipeline.schema import (
    DISCREPANCY_COLUMNS,
    DISCREPANCY_SCHEMA_VERSION,
    VERDICTS,
    status_text,
)
from gosat_pipeline.statevector import StateVector, total_moments, total_sensitivity, total_variances

__all__ = [
    "BUDGET_COLUMNS",
    "CHANGE_COLUMNS",
    "Thresholds",
    "compare_to_inventory",
    "discrepancy_document",
    "discrepancy_json_schema",
    "domain_budget",
    "ensemble_members",
    "period_change",
    "write_discrepancies",
]

logger = logging.getLogger(__name__)

#: The verdict thresholds (one definition, in gosat_pipeline.params).
Thresholds = VerdictThresholds


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
            logger.warning(
                "reported value %s %s %s has no uncertainty; using 0", rec["_source"], rec["area"], rec["year"]
            )
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


def _mean_reported(
    table: Mapping[str, Mapping[Any, _Reported]], code: str, members: Sequence[str], periods: Sequence[str]
) -> tuple[float, float] | None:
    vals = [_aggregate_reported(table, code, members, p)[0] for p in periods]
    if any(v is None for v in vals):
        return None
    n = len(vals)
    return sum(v.value for v in vals) / n, math.sqrt(sum(v.sigma**2 for v in vals)) / n  # type: ignore[union-attr]


#: Columns of ``domain_budget_<GAS>.csv``: every emission region of the state, with units.
BUDGET_COLUMNS: dict[str, str] = {
    "region": "region code (ISO 3166-1 alpha-3, REST for the rest of the domain)",
    "region_name": "human-readable name",
    "role": "requested (given a verdict), other (a country in the domain not asked for), rest",
    "gas": "CO2 or CH4",
    "period": "ISO 8601 period label",
    "prior_total": "Tg yr-1 (in-domain prior)",
    "posterior_total": "Tg yr-1 (in-domain posterior, mean over members)",
    "posterior_sigma": "Tg yr-1 (combined: analytic and ensemble spread)",
    "error_reduction": "1",
    "domain_share_area": "1",
    "domain_share_emission": "1 (empty if unknown)",
}


# ---------------------------------------------------------------------------- state views
@dataclass(frozen=True)
class _Member:
    """One inversion restricted to the emission elements: x_hat, S_hat, A and S_a (emission block)."""

    xh: np.ndarray
    Sh: np.ndarray
    A: np.ndarray
    Sa: np.ndarray


@dataclass(frozen=True)
class _State:
    """The base posterior's emission block, its metadata and the ensemble members."""

    sv: StateVector  # emission elements only
    xa: np.ndarray
    Sa: np.ndarray
    members: list[_Member]
    gas: str
    status: int
    n_obs: dict[tuple[str, str], int]
    n_obs_total: int | None
    chi2_state: dict[tuple[str, str], float]
    chi2_obs: dict[tuple[str, str], float]
    inflation: float = 1.0  # variance factor: the inversion's normalised state chi-square when above 1

    @property
    def base(self) -> _Member:
        return self.members[0]

    @property
    def index(self) -> dict[tuple[str, str], np.ndarray]:
        """(region, period) -> its elements (:attr:`StateVector.element_index`)."""
        return self.sv.element_index

    def elements(self, members: Sequence[str], period: str) -> np.ndarray:
        """The elements of ``members`` in ``period`` (:meth:`StateVector.elements`)."""
        return self.sv.elements(members, period)


def _total_maps(
    posterior: xr.Dataset,
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    n_obs: dict[tuple[str, str], int] = {}
    chi_s: dict[tuple[str, str], float] = {}
    chi_o: dict[tuple[str, str], float] = {}
    if "total" in posterior.dims and "total_region" in posterior.variables:
        keys = list(
            zip(posterior["total_region"].values.astype(str), posterior["total_period"].values.astype(str), strict=True)
        )
        for name, out in (("total_n_observations", n_obs), ("total_chi2_state", chi_s), ("total_chi2_obs", chi_o)):
            if name in posterior:
                for key, v in zip(keys, posterior[name].values, strict=True):
                    out[key] = int(v) if name == "total_n_observations" else float(v)
    return n_obs, chi_s, chi_o


def _state_from_posterior(posterior: xr.Dataset, ensemble: Any = None) -> _State:
    need = (
        "x_prior",
        "x_posterior",
        "S_prior",
        "S_posterior",
        "averaging_kernel",
        "state_kind",
        "state_region",
        "state_period",
        "state_prior_emission",
    )
    missing = [v for v in need if v not in posterior.variables]
    if missing:
        raise SchemaError(
            f"posterior dataset is missing {missing}; the comparison needs the posterior "
            "schema of the inversion stage (DESIGN.md 4)"
        )
    sv_all = StateVector.from_coords(posterior)
    e = np.flatnonzero(sv_all.emission)
    # the emission elements come first in the state (build_jacobian): a slice, not a fancy index
    ix: Any = (slice(0, e.size), slice(0, e.size)) if np.array_equal(e, np.arange(e.size)) else np.ix_(e, e)

    def block(name: str) -> np.ndarray:  # a view when the emission elements come first
        return np.asarray(posterior[name].values[ix], dtype="float64")

    base = _Member(
        np.asarray(posterior["x_posterior"].values[e], dtype="float64"),
        block("S_posterior"),
        block("averaging_kernel"),
        block("S_prior"),
    )
    sv = sv_all.subset(e)
    members = [base] if ensemble is None else ensemble_members(ensemble, sv)
    n_obs, chi_s, chi_o = _total_maps(posterior)
    return _State(
        sv=sv,
        xa=np.asarray(posterior["x_prior"].values[e], dtype="float64"),
        Sa=base.Sa,
        members=members,
        gas=str(posterior.attrs.get("gas", "")).upper(),
        status=int(posterior["status"].values) if "status" in posterior else 0,
        n_obs=n_obs,
        n_obs_total=int(posterior["n_observations"].values) if "n_observations" in posterior else None,
        chi2_state=chi_s,
        chi2_obs=chi_o,
        inflation=_inflation(posterior),
    )


def _inflation(posterior: xr.Dataset) -> float:
    """max(1, J_a / DOFS) of the base inversion: the state moved further than its prior errors allow.

    The observation chi-square does not reveal transport error (the state absorbs the misfit);
    the state chi-square does (DESIGN.md 5.3). When it exceeds its expected value the prior and
    model errors were too small, and the analytic variances are scaled by it, the usual a
    posteriori error scaling (Michalak et al. 2005).
    """
    if "chi2_state_normalized" not in posterior:
        return 1.0
    v = float(posterior["chi2_state_normalized"].values)
    return v if math.isfinite(v) and v > 1.0 else 1.0


def ensemble_members(ensemble: Any, sv: StateVector | None = None) -> list[_Member]:
    """Members of an ensemble as emission-block views, aligned with ``sv``'s elements.

    Parameters
    ----------
    ensemble : xarray.Dataset or sequence of posterior Datasets
        The ensemble file of the inversion stage (dims ``member``, ``emission``,
        ``emission2``; variables ``member_x_posterior``, ``member_S_posterior``,
        ``member_averaging_kernel``, ``member_S_prior``; coords ``emission_region``, ``emission_sector``,
        ``emission_period``) or the members' posteriors themselves.
    sv : StateVector, optional
        The emission elements to align to (default: the ensemble's own order).
    """
    if isinstance(ensemble, xr.Dataset):
        keys = list(
            zip(
                ensemble["emission_region"].values.astype(str),
                ensemble["emission_sector"].values.astype(str),
                ensemble["emission_period"].values.astype(str),
                strict=True,
            )
        )
        order = _align(keys, sv)
        ix = np.ix_(order, order)
        return [
            _Member(
                ensemble["member_x_posterior"].values[m][order],
                ensemble["member_S_posterior"].values[m][ix],
                ensemble["member_averaging_kernel"].values[m][ix],
                ensemble["member_S_prior"].values[m][ix],
            )
            for m in range(ensemble.sizes["member"])
        ]
    out = []
    for post in ensemble:
        msv = StateVector.from_coords(post)
        e = np.flatnonzero(msv.emission)
        keys = list(zip(msv.region[e], msv.sector[e], msv.period[e], strict=True))
        order = e[_align(keys, sv)]
        ix = np.ix_(order, order)
        out.append(
            _Member(
                post["x_posterior"].values[order],
                post["S_posterior"].values[ix],
                post["averaging_kernel"].values[ix],
                post["S_prior"].values[ix],
            )
        )
    if not out:
        raise SchemaError("the ensemble has no members")
    return out


def _align(keys: list[tuple[str, str, str]], sv: StateVector | None) -> np.ndarray:
    if sv is None:
        return np.arange(len(keys))
    pos = {k: i for i, k in enumerate(keys)}
    want = list(zip(sv.region, sv.sector, sv.period, strict=True))
    missing = [k for k in want if k not in pos]
    if missing:
        raise SchemaError(
            f"ensemble members lack emission elements {missing[:3]} of the posterior; they must "
            "come from the same state definition"
        )
    return np.array([pos[k] for k in want], dtype="int64")


# ---------------------------------------------------------------------------- algebra
def _sqrt(x: float) -> float:
    return math.sqrt(x) if x > 0 else 0.0


def _div(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(b) else math.nan


@dataclass(frozen=True)
class _Totals:
    """A target's totals over the ensemble (Tg yr-1)."""

    prior: float
    prior_sigma: float
    estimates: np.ndarray  # per member
    variances: np.ndarray  # analytic, per member
    sensitivity: float
    shift_sigma: float  # sqrt(w^T (S_a - S_hat) w), base
    structural: float = 0.0  # relative structural transport error

    @property
    def mean(self) -> float:
        return float(self.estimates.mean())

    @property
    def structural_sigma(self) -> float:
        return self.structural * abs(self.mean)

    @property
    def spread(self) -> float:
        return float(self.estimates.std(ddof=1)) if self.estimates.size > 1 else 0.0

    @property
    def analytic_sigma(self) -> float:
        return _sqrt(float(self.variances.mean()))

    @property
    def sigma(self) -> float:
        return _sqrt(float(self.variances.mean()) + self.spread**2 + self.structural_sigma**2)

    @property
    def error_reduction(self) -> float:
        return 1.0 - self.sigma / self.prior_sigma if self.prior_sigma > 0 else 0.0


def _moments(W: Any, x: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return total_moments(W, x, S)


def _totals(st: _State, w: np.ndarray, structural: float = 0.0) -> _Totals:
    """A target's totals from weights ``w`` (Tg yr-1 per unit of the emission state)."""
    return _totals_many(st, sp.csr_matrix(w[None, :]), structural)[0]


def _totals_many(st: _State, W: sp.csr_matrix, structural: float = 0.0) -> list[_Totals]:
    """Totals of every row of W (targets x emission elements), by the calculation of ``region_totals``.

    Each target needs only its own variance, the diagonal of :math:`W S W^T`
    (:func:`gosat_pipeline.statevector.total_variances`): all targets at once, per member.
    """
    W = sp.csr_matrix(W)
    prior, var_a = np.asarray(W @ st.xa).ravel(), total_variances(W, st.Sa)
    est = np.array([np.asarray(W @ m.xh).ravel() for m in st.members])  # (members, targets)
    var = np.array([total_variances(W, m.Sh) for m in st.members])
    prior_var = np.mean([total_variances(W, m.Sa) for m in st.members], axis=0)
    sens = total_sensitivity(W, st.base.A)
    return [
        _Totals(
            structural=structural,
            prior=float(prior[t]),
            prior_sigma=_sqrt(float(prior_var[t])),
            estimates=est[:, t].copy(),
            variances=var[:, t] * st.inflation,
            sensitivity=float(sens[t]),
            shift_sigma=_sqrt(float(var_a[t]) - float(var[0, t])),
        )
        for t in range(W.shape[0])
    ]


def _national_prior(st: _State, members: Sequence[str], period: str) -> float:
    """The whole regions' prior (in-domain prior / emission share), Tg yr-1."""
    tot = 0.0
    for r in members:
        sel = st.elements((r,), period)
        inside = float((st.sv.prior_emission[sel] / 1e9) @ st.xa[sel])
        share = st.sv.domain_share_emission[sel]
        share = float(share[0]) if share.size and np.isfinite(share[0]) and share[0] > 0 else 1.0
        tot += inside / share
    return tot


def _reported_state(st: _State, table: Mapping[str, Mapping[Any, _Reported]]) -> np.ndarray:
    """The reported inventory in state space: x_rep = x_a * r_R / P_R (P_R the whole region's prior)."""
    x_rep = st.xa.copy()
    for r, p in st.index:
        rep = _lookup(table, r, p)
        if rep is not None:
            sel = st.index[(r, p)]
            whole = _national_prior(st, (r,), p)
            if whole > 0:
                x_rep[sel] = st.xa[sel] * rep.value / whole
    return x_rep


def _n_observations(st: _State, members: Sequence[str], period: str) -> int:
    """Observations seeing a region; an aggregate gets the largest member's (a lower bound)."""
    counts = [st.n_obs[(m, period)] for m in members if (m, period) in st.n_obs]
    if counts:
        return int(max(counts))
    if st.n_obs_total is not None:
        logger.warning(
            "posterior has no total_n_observations for %s %s; using the inversion's total count %d",
            list(members),
            period,
            st.n_obs_total,
        )
        return st.n_obs_total
    return 0


def _domain_share(st: _State, members: Sequence[str], period: str) -> tuple[float, float, float]:
    """(share, area share, emission share) of the target inside the domain."""
    areas, area_in, e_in, e_all = 0.0, 0.0, 0.0, 0.0
    e_known = True
    a_shares = []
    for r in members:
        sel = st.elements((r,), period)
        if not sel.size:
            continue
        i = int(sel[0])
        sa, se, ak = float(st.sv.domain_share_area[i]), float(st.sv.domain_share_emission[i]), float(st.sv.area_km2[i])
        a_shares.append(sa)
        if math.isfinite(ak):
            areas += ak
            area_in += ak * sa
        inside = float((st.sv.prior_emission[sel] / 1e9) @ st.xa[sel])
        e_in += inside
        if math.isfinite(se) and se > 0:
            e_all += inside / se
        else:
            e_known = False
    share_a = area_in / areas if areas > 0 else (min(a_shares) if a_shares else 1.0)
    share_e = e_in / e_all if e_known and e_all > 0 else math.nan
    share = min(share_a, share_e) if math.isfinite(share_e) else share_a
    return share, share_a, share_e


# ---------------------------------------------------------------------------- verdicts
def _gate(st: _State, tot: _Totals, nobs: int, thr: Thresholds, chi2_obs: float = math.nan) -> str | None:
    """Reason (plain words) the data do not constrain the total, or None."""
    if st.status:
        return f"the inversion failed ({status_text(st.status)}): the estimate is the prior"
    fails = []
    er = tot.error_reduction
    if not er >= thr.min_error_reduction:
        fails.append(
            f"the satellite data reduce its uncertainty by only {100 * max(er, 0):.0f} % "
            f"(at least {100 * thr.min_error_reduction:.0f} % needed)"
        )
    if not tot.sensitivity >= thr.min_sensitivity:
        fails.append(
            f"the data see only {100 * max(tot.sensitivity, 0):.0f} % of a change in its emissions "
            f"(averaging-kernel sensitivity; at least {100 * thr.min_sensitivity:.0f} % needed)"
        )
    if nobs < thr.min_observations:
        fails.append(f"only {nobs} observations see it (at least {thr.min_observations} needed)")
    if math.isfinite(chi2_obs) and chi2_obs > thr.max_chi2_obs:
        fails.append(
            f"the transport model fits the observations that see it poorly (their mean squared "
            f"normalised misfit is {chi2_obs:.2f}, at most {thr.max_chi2_obs:g} allowed)"
        )
    return "; ".join(fails) if fails else None


def _direction(z: float, thr: Thresholds) -> int:
    return 0 if not math.isfinite(z) or abs(z) < thr.z_critical else (1 if z > 0 else -1)


def _word(direction: int) -> str:
    return {1: "higher than reported", -1: "lower than reported", 0: "consistent"}[direction]


def _targets(st: _State, aggregates: Mapping[str, Sequence[str]] | None) -> list[tuple[str, str, tuple[str, ...]]]:
    """(code, name, members) of every requested region, then aggregates."""
    names = st.sv.names()
    out = [(r, names.get(r, r), (r,)) for r in st.sv.regions("requested")]
    known = set(st.sv.regions())
    for name, members in (aggregates or {}).items():
        members = tuple(str(m) for m in members)
        unknown = [m for m in members if m not in known]
        if unknown:
            raise GosatPipelineError(
                f"aggregate {name!r} has member(s) {unknown} that are not regions of the posterior; "
                f"regions: {sorted(known)}"
            )
        out.append((str(name), str(name), members))
    return out


def _fmt(x: float) -> str:
    """A total in Tg yr-1 with sensible digits."""
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


@dataclass(frozen=True)
class _Test:
    """The z test of one target: what was compared, and the verdict it gives."""

    form: str
    compared: float
    sigma: float
    z: float
    z_members: np.ndarray
    z_direct: float
    z_shift: float
    separable: bool


def _seen(st: _State, w: np.ndarray, xr_t: np.ndarray) -> np.ndarray:
    """w^T (x_a + A (x_rep - x_a)) per member, from the rows of A the weights touch."""
    i = np.flatnonzero(w)
    d = xr_t - st.xa
    return np.array([float(w[i] @ (st.xa[i] + m.A[i] @ d)) for m in st.members])


def _z_test(st: _State, tot: _Totals, w: np.ndarray, rep: _Reported, xr_t: np.ndarray, shift: bool) -> _Test:
    seen = _seen(st, w, xr_t)
    r_s = float(seen.mean())
    sig_d = math.hypot(tot.sigma, rep.sigma)
    z_direct = _div(tot.mean - r_s, sig_d)
    sig_s = math.sqrt(tot.shift_sigma**2 + tot.spread**2 + tot.structural_sigma**2)
    z_shift = _div(tot.mean - tot.prior, sig_s)
    separable = rep.value <= 0 or 0.5 * rep.value <= r_s <= 2.0 * rep.value
    if shift:
        zm = np.array([_div(e - tot.prior, sig_s) for e in tot.estimates])
        return _Test("shift", tot.prior, sig_s, z_shift, zm, z_direct, z_shift, True)
    zm = np.array([_div(e - s, sig_d) for e, s in zip(tot.estimates, seen, strict=True)])
    return _Test("direct", r_s, sig_d, z_direct, zm, z_direct, z_shift, separable)


def _verdict(test: _Test, gate: str | None, rep: _Reported, tot: _Totals, thr: Thresholds) -> tuple[str, str]:
    """(verdict, reason) for a region that is inside the domain and has a reported value."""
    nums = (
        f"estimate {_fmt(tot.mean)} ± {_fmt(tot.sigma)} Tg/yr against "
        + (
            f"{_fmt(test.compared)} Tg/yr (the reported {_fmt(rep.value)} ± {_fmt(rep.sigma)} Tg/yr as the "
            "satellite data would see it)"
            if test.form == "direct"
            else f"the prior (= reported) {_fmt(test.compared)} Tg/yr"
        )
        + f": z = ({_fmt(tot.mean)} - {_fmt(test.compared)}) / {_fmt(test.sigma)} = {test.z:.2f}"
    )
    if gate:
        return "not constrained", "the satellite data cannot tell: " + gate
    if not test.separable:
        return "not constrained", (
            f"the satellite data cannot tell this region apart from its neighbours: seen "
            f"through the inversion, the reported {_fmt(rep.value)} Tg/yr would look like "
            f"{_fmt(test.compared)} Tg/yr"
        )
    if not math.isfinite(test.z):
        return "not constrained", "the satellite data cannot tell: the z-score is undefined (zero expected spread)"
    dirs = {_direction(z, thr) for z in test.z_members}
    if len(dirs) > 1:
        said = ", ".join(sorted(_word(d) for d in dirs))
        return "not constrained (transport-sensitive)", (
            f"the answer depends on the transport model: the {test.z_members.size} inversions of the ensemble "
            f"say {said} (z from {np.nanmin(test.z_members):.2f} to {np.nanmax(test.z_members):.2f}); {nums}"
        )
    d = _direction(test.z, thr)
    if d:
        return _word(d), f"|z| >= {thr.z_critical:g}: {nums}"
    detectable = thr.z_critical * test.sigma
    if rep.value > 0 and detectable > thr.max_detectable_difference * rep.value:
        return "not constrained", (
            f"the satellite data cannot tell: with this uncertainty only a difference larger than "
            f"{_fmt(detectable)} Tg/yr ({100 * detectable / rep.value:.0f} % of the reported total; at most "
            f"{100 * thr.max_detectable_difference:.0f} % allowed) could be detected; {nums}"
        )
    return "consistent", f"|z| < {thr.z_critical:g}: {nums}"


def _row(
    st: _State,
    target: tuple[str, str, tuple[str, ...]],
    period: str,
    source: str,
    table: Mapping[str, Mapping[Any, _Reported]],
    x_rep: np.ndarray,
    shift: bool,
    thr: Thresholds,
    tot: _Totals,
) -> dict[str, Any]:
    code, name, members = target
    w = st.sv.weight_matrix([(members, period)]).toarray()[0]  # the target's weights, as tot's
    rep, own_row = _aggregate_reported(table, code, members, period)
    nobs = _n_observations(st, members, period)
    share, share_a, share_e = _domain_share(st, members, period)
    key = (code, period)
    row: dict[str, Any] = {
        "region": code,
        "region_name": name,
        "gas": st.gas,
        "period": period,
        "reference": source,
        "prior_total": tot.prior,
        "prior_sigma": tot.prior_sigma,
        "posterior_total": tot.mean,
        "posterior_sigma": tot.sigma,
        "posterior_sigma_analytic": tot.analytic_sigma,
        "ensemble_spread": tot.spread,
        "ensemble_members": len(st.members),
        "transport_error_sigma": tot.structural_sigma,
        "ensemble_min": float(tot.estimates.min()),
        "ensemble_max": float(tot.estimates.max()),
        "error_reduction": tot.error_reduction,
        "sensitivity": tot.sensitivity,
        "n_observations": nobs,
        "members": " ".join(members) if len(members) > 1 else "",
        "domain_share": share,
        "domain_share_area": share_a,
        "domain_share_emission": share_e,
        "chi2_state": st.chi2_state.get(key, math.nan),
        "chi2_obs": st.chi2_obs.get(key, math.nan),
    }
    if rep is not None:
        diff = tot.mean - rep.value
        row.update(
            reported_total=rep.value,
            reported_sigma=rep.sigma,
            reported_year=rep.year,
            uncertainty_source=rep.uncertainty_source,
            difference=diff,
            relative_difference=_div(diff, abs(rep.value)) if rep.value else math.nan,
        )
    if share < thr.min_domain_share:
        extra = "" if rep is not None else "; the reference has no value for it either"
        txt = f"{100 * share_a:.0f} % of its area"
        if math.isfinite(share_e):
            txt += f" and {100 * share_e:.0f} % of its prior emissions"
        row.update(
            verdict="partly outside the domain",
            reason=f"only {txt} lie inside the inversion domain (at least {100 * thr.min_domain_share:.0f} % "
            f"needed): the estimate {_fmt(tot.mean)} ± {_fmt(tot.sigma)} Tg/yr covers the part inside "
            f"and is not compared with the national total{extra}",
        )
        return row
    if rep is None:
        gate = _gate(st, tot, nobs, thr)
        row.update(
            verdict="no reported value",
            reason="the reference has no value for this region and period"
            + (f" (and the satellite data cannot tell: {gate})" if gate else ""),
        )
        return row
    xr_t = x_rep
    if own_row and tot.prior > 0:  # aggregate value only: scale its members uniformly
        xr_t = x_rep.copy()
        sel = w != 0
        xr_t[sel] = st.xa[sel] * rep.value / _national_prior(st, members, period)
    test = _z_test(st, tot, w, rep, xr_t, shift)
    verdict, reason = _verdict(test, _gate(st, tot, nobs, thr, st.chi2_obs.get(key, math.nan)), rep, tot, thr)
    zm = test.z_members[np.isfinite(test.z_members)]
    row.update(
        reported_total_smoothed=test.compared if test.form == "direct" else float(np.mean(_seen(st, w, xr_t))),
        z_direct=test.z_direct,
        z_shift=test.z_shift,
        z_score=test.z,
        z_form=test.form,
        compared_value=test.compared,
        compared_sigma=test.sigma,
        detectable_difference=thr.z_critical * test.sigma,
        z_min=float(zm.min()) if zm.size else math.nan,
        z_max=float(zm.max()) if zm.size else math.nan,
        verdict=verdict,
        reason=reason,
    )
    return row


def _finish(rows: list[dict[str, Any]], columns: Mapping[str, str], thr: Thresholds, **attrs: Any) -> pd.DataFrame:
    from gosat_pipeline import __version__

    df = pd.DataFrame(rows)
    for c, v in thr.as_dict().items():
        df[c] = v
    df["gosat_pipeline_version"] = __version__
    text = ("reason", "members", "uncertainty_source", "z_form")
    for c in columns:
        if c not in df.columns:
            df[c] = np.nan if c not in text else ""
    df = df[list(columns)] if len(df) else pd.DataFrame(columns=list(columns))
    for c in text:
        if c in df.columns:
            df[c] = df[c].fillna("")
    df.attrs.update({"thresholds": thr.as_dict(), "schema_version": DISCREPANCY_SCHEMA_VERSION, **attrs})
    return df


def _shift_for(prior_is_reported: bool | str, source: str) -> bool:
    if isinstance(prior_is_reported, str):
        return source == prior_is_reported
    return bool(prior_is_reported)


def _thresholds(thresholds: Thresholds | None, overrides: Mapping[str, Any]) -> Thresholds:
    """``thresholds`` (default :class:`Thresholds`) with the keyword overrides that are not None."""
    return with_overrides(
        thresholds or Thresholds(), {k: v for k, v in overrides.items() if v is not None}, "verdict threshold"
    )


# ---------------------------------------------------------------------------- public API
def compare_to_inventory(
    posterior: xr.Dataset,
    reported: pd.DataFrame | None,
    *,
    thresholds: Thresholds | None = None,
    ensemble: Any = None,
    prior_is_reported: bool | str = False,
    aggregates: Mapping[str, Sequence[str]] | None = None,
    reference: str = "reported",
    **overrides: float | None,
) -> pd.DataFrame:
    """Compare posterior regional totals with reported totals (DESIGN.md 5.5).

    Parameters
    ----------
    posterior : xarray.Dataset
        The posterior schema of :func:`gosat_pipeline.inversion.invert` (state vectors,
        ``S_prior``, ``S_posterior``, ``averaging_kernel`` and the ``state_*`` coords;
        optionally ``total_n_observations``, ``total_chi2_*`` on ``total``).
    reported : pandas.DataFrame or None
        Columns ``area`` (ISO-3), ``year``, ``value_tg_per_yr`` and optionally ``gas``
        (rows of other gases are ignored), ``source`` (one reference inventory per
        distinct value; missing/empty -> ``reference``), ``sigma_tg_per_yr`` (missing ->
        0 with a warning), ``uncertainty_source``, ``period`` (matched to the posterior's
        period labels before ``year``). One row per (source, area, year). A period is
        matched to the reported year holding its midpoint.
    thresholds : Thresholds, optional
        Verdict thresholds and the structural transport error
        (:class:`gosat_pipeline.params.VerdictThresholds`, which documents each one).
    ensemble : xarray.Dataset or sequence of posteriors, optional
        The ensemble of inversions (member 0 the configured one), see
        :func:`ensemble_members`; totals then combine the members (module docstring).
    prior_is_reported : bool or str
        True: the prior is the reported inventory, the verdict uses the ``shift`` z for
        every reference. A string names the one reference that is the prior.
    aggregates : dict, optional
        ``{"ASEAN": ["BRN", "IDN", ...]}``: extra rows whose totals use
        :math:`w = \\sum w_R` (full covariance). Their reported value is the aggregate's
        own row if the table has one, else the sum of the members' values when every
        member reports (sigma added in quadrature), else "no reported value". Their
        observation count is the largest member's (a lower bound of the union).
    reference : str
        Reference name for rows of ``reported`` without a ``source``.
    **overrides
        Fields of ``thresholds`` to replace (``z_critical=3.0``); ``None`` keeps the
        field.

    Returns
    -------
    pandas.DataFrame
        One row per requested region (then aggregate) x period x reference, columns
        :data:`gosat_pipeline.schema.DISCREPANCY_COLUMNS` in order (Tg yr-1 totals).
        ``df.attrs`` holds ``thresholds``, ``schema_version``, ``gas``.
    """
    thr = _thresholds(thresholds, overrides)
    st = _state_from_posterior(posterior, ensemble)
    tables = _prepare_reported(reported, st.gas, reference)
    targets = _targets(st, aggregates)
    periods = st.sv.periods()
    codes = {t[0] for t in targets} | set(st.sv.regions())
    for source, table in tables.items():
        unused = sorted(set(table) - codes)
        if unused:
            logger.info("reference %r: reported areas %s are not regions of the posterior", source, unused)
    rows = []
    pairs = [(t, p) for t in targets for p in periods if st.elements(t[2], p).size]
    # every target's totals at once (they do not depend on the reference)
    tots = _totals_many(st, st.sv.weight_matrix([(t[2], p) for t, p in pairs]), thr.transport_error)
    for source, table in tables.items():
        x_rep = _reported_state(st, table)
        shift = _shift_for(prior_is_reported, source)
        for (target, p), tot in zip(pairs, tots, strict=True):
            rows.append(_row(st, target, p, source, table, x_rep, shift, thr, tot))
    df = _finish(
        rows,
        DISCREPANCY_COLUMNS,
        thr,
        gas=st.gas,
        prior_is_reported=prior_is_reported,
        references=list(tables),
        inversion_status=st.status,
        ensemble_members=len(st.members),
    )
    counts = df["verdict"].value_counts().to_dict() if len(df) else {}
    logger.info("comparison: %d rows, verdicts %s", len(df), counts)
    return df


def domain_budget(posterior: xr.Dataset, *, ensemble: Any = None, transport_error: float | None = None) -> pd.DataFrame:
    """Every emission region of the state (requested, other countries, rest of the domain).

    Regions that were not asked for get no verdict, but their estimates are what keeps
    their emissions from aliasing into the requested ones; this table shows them.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`BUDGET_COLUMNS`, Tg yr-1.
    """
    st = _state_from_posterior(posterior, ensemble)
    f_t = _thresholds(None, {"transport_error": transport_error}).transport_error
    names = st.sv.names()
    rows = []
    roles: dict[str, str] = {}
    for r, ro in zip(st.sv.region, st.sv.role, strict=True):
        roles.setdefault(str(r), str(ro))
    pairs = [(r, p) for r in st.sv.regions() for p in st.sv.periods() if (r, p) in st.index]
    tots = _totals_many(st, st.sv.weight_matrix([((r,), p) for r, p in pairs]), f_t)
    for (r, p), tot in zip(pairs, tots, strict=True):
        role = roles[r]
        _, sa, se = _domain_share(st, (r,), p)
        rows.append(
            {
                "region": r,
                "region_name": names.get(r, r),
                "role": role,
                "gas": st.gas,
                "period": p,
                "prior_total": tot.prior,
                "posterior_total": tot.mean,
                "posterior_sigma": tot.sigma,
                "error_reduction": tot.error_reduction,
                "domain_share_area": sa,
                "domain_share_emission": se,
            }
        )
    return pd.DataFrame(rows, columns=list(BUDGET_COLUMNS))


def _as_list(periods: str | Sequence[str]) -> list[str]:
    return [periods] if isinstance(periods, str) else [str(p) for p in periods]


def _change_row(
    st: _State,
    target: tuple[str, str, tuple[str, ...]],
    pa: list[str],
    pb: list[str],
    source: str,
    table: Mapping[str, Mapping[Any, _Reported]],
    thr: Thresholds,
) -> dict[str, Any]:
    code, name, members = target
    e = st.sv.emission
    wa, wb = st.sv.region_weights(members, pa)[e], st.sv.region_weights(members, pb)[e]
    ab = [_moments(sp.csr_matrix(np.vstack([wa, wb, wb - wa])), m.xh, m.Sh) for m in st.members]
    changes = np.array([float(t[2]) for t, _ in ab])
    var = float(np.mean([c[2, 2] for _, c in ab])) + (float(changes.var(ddof=1)) if changes.size > 1 else 0.0)
    ea = float(np.mean([t[0] for t, _ in ab]))
    eb = float(np.mean([t[1] for t, _ in ab]))
    change = eb - ea
    sig = _sqrt(var + (thr.transport_error * change) ** 2)  # a relative transport bias scales the change too
    z = _div(change, sig)
    per = [_totals(st, st.sv.region_weights(members, p)[e], thr.transport_error) for p in pa + pb]
    er = min(t.error_reduction for t in per)
    sens = min(t.sensitivity for t in per)
    nobs = min(_n_observations(st, members, p) for p in pa + pb)
    worst = min(per, key=lambda t: t.error_reduction)
    gate = _gate(st, worst, nobs, thr) or (
        None if sens >= thr.min_sensitivity else _gate(st, min(per, key=lambda t: t.sensitivity), nobs, thr)
    )
    share = min(_domain_share(st, members, p)[0] for p in pa + pb)
    if share < thr.min_domain_share:
        gate = f"only {100 * share:.0f} % of it lies inside the inversion domain"
    significant = gate is None and math.isfinite(z) and abs(z) >= thr.z_critical
    cverdict = (
        "not constrained"
        if gate
        else (("increase" if change > 0 else "decrease") if significant else "no significant change")
    )
    row: dict[str, Any] = {
        "region": code,
        "region_name": name,
        "members": " ".join(members) if len(members) > 1 else "",
        "gas": st.gas,
        "period_a": " ".join(pa),
        "period_b": " ".join(pb),
        "reference": source,
        "posterior_a": ea,
        "posterior_b": eb,
        "posterior_change": change,
        "posterior_change_sigma": sig,
        "posterior_cross_covariance": float(np.mean([c[0, 1] for _, c in ab])),
        "relative_change": _div(change, abs(ea)),
        "change_z": z,
        "significant": bool(significant),
        "change_verdict": cverdict,
        "error_reduction": er,
        "sensitivity": sens,
        "n_observations": nobs,
    }
    ra, rb = _mean_reported(table, code, members, pa), _mean_reported(table, code, members, pb)
    has_rep = ra is not None and rb is not None
    if share < thr.min_domain_share:
        verdict, reason = "partly outside the domain", gate
    elif not has_rep:
        verdict, reason = "no reported value", "the reference has no value for both periods"
    elif gate:
        verdict, reason = "not constrained", "the satellite data cannot tell: " + gate
    else:
        rch, rsig = rb[0] - ra[0], math.hypot(ra[1], rb[1])  # type: ignore[index]
        zd = _div(change - rch, math.hypot(sig, rsig))
        row.update(
            reported_a=ra[0],
            reported_b=rb[0],
            reported_change=rch,  # type: ignore[index]
            reported_change_sigma=rsig,
            change_difference=change - rch,
            change_difference_z=zd,
        )
        d_ = _direction(zd, thr)
        verdict = _word(d_)
        reason = (
            f"|z| {'>=' if d_ else '<'} {thr.z_critical:g}: estimated change {_fmt(change)} ± {_fmt(sig)} "
            f"against the reported {_fmt(rch)} ± {_fmt(rsig)} Tg/yr, z = {zd:.2f}"
        )
    row.update(verdict=verdict, reason=f"change {cverdict} (z = {z:.2f}); vs reported: {reason}")
    return row


def period_change(
    posterior: xr.Dataset,
    reported: pd.DataFrame | None,
    *,
    period_a: str | Sequence[str],
    period_b: str | Sequence[str],
    thresholds: Thresholds | None = None,
    ensemble: Any = None,
    aggregates: Mapping[str, Sequence[str]] | None = None,
    reference: str = "reported",
    **overrides: float | None,
) -> pd.DataFrame:
    """Estimated change of each region's total between two periods, next to the reported change.

    Parameters
    ----------
    posterior, reported, thresholds, ensemble, aggregates, reference, **overrides
        As in :func:`compare_to_inventory`.
    period_a, period_b : str or sequence of str
        Period labels of the posterior (``state_period``). A sequence (e.g. every year
        before and after a policy date) means the mean rate over those periods.

    Returns
    -------
    pandas.DataFrame
        One row per requested region (then aggregate) x reference, columns
        :data:`CHANGE_COLUMNS` (Tg yr-1). ``change_verdict`` says whether the atmosphere
        shows a significant increase or decrease; ``verdict`` compares the estimated with
        the reported change (one of VERDICTS).

    Notes
    -----
    With :math:`d = \\bar w_b - \\bar w_a` (mean weights over each set of periods) the
    change is :math:`d^T \\hat x` and its variance :math:`d^T \\hat S d =
    \\sigma_a^2 + \\sigma_b^2 - 2\\,\\mathrm{cov}_{ab}` (plus the ensemble's spread of the
    change): the cross-period covariance is included. Reported values of different years
    are taken as independent (conservative). The constraint gate applies to every period.
    """
    thr = _thresholds(thresholds, overrides)
    st = _state_from_posterior(posterior, ensemble)
    pa, pb = _as_list(period_a), _as_list(period_b)
    known = set(st.sv.periods())
    unknown = [p for p in pa + pb if p not in known]
    if unknown:
        raise GosatPipelineError(f"period(s) {unknown} are not periods of the posterior; periods: {sorted(known)}")
    tables = _prepare_reported(reported, st.gas, reference)
    rows = [
        _change_row(st, t, pa, pb, source, table, thr)
        for source, table in tables.items()
        for t in _targets(st, aggregates)
    ]
    return _finish(rows, dict(CHANGE_COLUMNS), thr, gas=st.gas)


# ---------------------------------------------------------------------------- writing
_INT_COLUMNS = ("n_observations", "reported_year", "min_observations", "ensemble_members")


def discrepancy_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``discrepancies.json``."""
    num = {"type": ["number", "null"]}
    row_props: dict[str, Any] = {c: num for c in DISCREPANCY_COLUMNS}
    for c in (
        "region",
        "region_name",
        "gas",
        "period",
        "reference",
        "z_form",
        "reason",
        "members",
        "uncertainty_source",
        "gosat_pipeline_version",
    ):
        row_props[c] = {"type": ["string", "null"]}
    row_props["verdict"] = {"enum": list(VERDICTS)}
    row_props["z_form"] = {"enum": ["shift", "direct", "", None]}
    for c in _INT_COLUMNS:
        row_props[c] = {"type": ["integer", "null"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "gosat_pipeline discrepancies",
        "type": "object",
        "required": ["schema_version", "columns", "thresholds", "rows"],
        "properties": {
            "schema_version": {"const": DISCREPANCY_SCHEMA_VERSION},
            "kind": {"const": "gosat_pipeline.discrepancies"},
            "columns": {
                "type": "object",
                "required": list(DISCREPANCY_COLUMNS),
                "additionalProperties": {"type": "string"},
            },
            "thresholds": {
                "type": "object",
                "required": ["z_critical", "min_error_reduction", "min_sensitivity", "min_observations"],
                "properties": {"min_observations": {"type": "integer"}},
                "additionalProperties": {"type": "number"},
            },
            "verdicts": {"type": "array", "items": {"enum": list(VERDICTS)}},
            "metadata": {"type": "object"},
            "rows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": list(DISCREPANCY_COLUMNS),
                    "properties": row_props,
                    "additionalProperties": False,
                },
            },
            "period_changes": {"type": "object", "required": ["columns", "rows"]},
        },
    }


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


def discrepancy_document(df: pd.DataFrame, changes: pd.DataFrame | None = None) -> dict[str, Any]:
    """The ``discrepancies.json`` document of a comparison table (see the module docstring)."""
    from gosat_pipeline import __version__

    thresholds = dict(df.attrs.get("thresholds") or {})
    if not thresholds and len(df):
        thresholds = {k: _jsonable(df[k].iloc[0]) for k in Thresholds().as_dict() if k in df.columns}
    thresholds = thresholds or Thresholds().as_dict()
    meta = {
        k: _jsonable(v) if not isinstance(v, list | dict) else v
        for k, v in df.attrs.items()
        if k not in ("thresholds", "schema_version")
    }
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
        doc["period_changes"] = {
            "columns": dict(CHANGE_COLUMNS),
            "rows": _records(changes[list(CHANGE_COLUMNS)], _INT_COLUMNS),
        }
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
        "json": atomic_write_text(
            json.dumps(discrepancy_document(df, changes), indent=2) + "\n", directory / "discrepancies.json"
        ),
        "schema": atomic_write_text(
            json.dumps(discrepancy_json_schema(), indent=2) + "\n", directory / "discrepancies.schema.json"
        ),
    }
    if changes is not None:
        paths["changes_csv"] = atomic_write_text(
            changes[list(CHANGE_COLUMNS)].to_csv(index=False), directory / "period_changes.csv"
        )
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
