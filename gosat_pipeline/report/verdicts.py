"""What each verdict means, in plain words, and how the report orders and colours it.

The report renders verdicts generically: any string in a row's ``verdict`` column is
shown as it is. :data:`VERDICT_EXPLANATIONS` explains every verdict of
:data:`gosat_pipeline.schema.VERDICTS` (a test keeps it complete) and the verdicts the
comparison is about to gain; a verdict the table does not know is shown with
:data:`UNKNOWN_EXPLANATION`, and a row without a verdict (a state element such as
"rest of domain" that is estimated but not compared) with :data:`NO_VERDICT`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "VERDICT_EXPLANATIONS",
    "UNKNOWN_EXPLANATION",
    "NO_VERDICT",
    "FLAGGED",
    "COMPARED",
    "verdict_of",
    "verdict_class",
    "verdict_rank",
    "explain",
]

#: Label of a row that carries no verdict (estimated, not compared).
NO_VERDICT = "estimate only"

#: verdict -> one or two plain sentences (what it means for the reader).
VERDICT_EXPLANATIONS: dict[str, str] = {
    "higher than reported": (
        "The satellite estimate is higher than the reported total by more than the two uncertainties "
        "allow. The reported total may be too low; the inventory (and this analysis) deserve a closer look."
    ),
    "lower than reported": (
        "The satellite estimate is lower than the reported total by more than the two uncertainties "
        "allow. The reported total may be too high; the inventory (and this analysis) deserve a closer look."
    ),
    "consistent": (
        "The satellite estimate and the reported total agree within their combined uncertainty: "
        "the satellite data give no reason to doubt the reported total."
    ),
    "not constrained": (
        "The satellite data carry too little information about this total to confirm or contradict it "
        "(too few observations, or the estimate stays close to the inventory it started from). "
        "This is not a finding of agreement."
    ),
    "not constrained (transport-sensitive)": (
        "The answer depends on how the movement of air is modelled: across a set of plausible transport "
        "settings the verdict changes, so no conclusion is drawn. This is not a finding of agreement."
    ),
    "partly outside the domain": (
        "Only part of this country lies inside the area analysed. Its estimate covers that part only, "
        "so it is not compared with the national total."
    ),
    "no reported value": (
        "The reference inventory has no value for this region and period; the satellite estimate is "
        "shown without a comparison."
    ),
    NO_VERDICT: (
        "A part of the inversion that is not a reporting country (for example the rest of the domain): "
        "its emissions are estimated so that they are not wrongly attributed to a country, and are not "
        "compared with any reported total."
    ),
}

#: Shown for a verdict string this version of the report does not know.
UNKNOWN_EXPLANATION = (
    "A verdict this version of the report does not explain; see the comparison's documentation "
    "(docs/design.md, section 5.5) and the row's reason in the technical columns."
)

#: Verdicts that are findings of a difference.
FLAGGED: frozenset[str] = frozenset({"higher than reported", "lower than reported"})
#: Verdicts of a total that was compared with a reported value (constrained or not).
COMPARED: frozenset[str] = frozenset(
    {
        "higher than reported",
        "lower than reported",
        "consistent",
        "not constrained",
        "not constrained (transport-sensitive)",
    }
)

_CLASS = {
    "higher than reported": "high",
    "lower than reported": "low",
    "consistent": "ok",
    "no reported value": "nr",
    "partly outside the domain": "out",
}


def verdict_of(row: Any) -> str:
    """The verdict string of a row (:data:`NO_VERDICT` when empty or missing)."""
    v = row.get("verdict") if hasattr(row, "get") else None
    if v is None:
        return NO_VERDICT
    text = str(v).strip()
    return text if text and text.lower() not in ("nan", "none", "null") else NO_VERDICT


def verdict_class(verdict: str) -> str:
    """CSS class of a verdict's badge (``high``, ``low``, ``ok``, ``nc``, ``nr``, ``out``, ``other``)."""
    if verdict in _CLASS:
        return _CLASS[verdict]
    if verdict.startswith("not constrained"):
        return "nc"
    return "other"


def verdict_rank(verdict: str) -> int:
    """Order of the findings: differences (0), agreement (1), not constrained (2), the rest (3)."""
    if verdict in FLAGGED:
        return 0
    if verdict == "consistent":
        return 1
    if verdict.startswith("not constrained"):
        return 2
    return 3


def explain(verdict: str) -> str:
    """Plain-words meaning of ``verdict`` (:data:`UNKNOWN_EXPLANATION` for an unknown one)."""
    return VERDICT_EXPLANATIONS.get(verdict, UNKNOWN_EXPLANATION)
