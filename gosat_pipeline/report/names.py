"""Region names shown in the report: official short names, configurable.

The comparison writes each row's ``region_name`` as its boundary file spells it
(Natural Earth: "Vietnam", "Laos", "Brunei"). An agency report uses the names the
countries use themselves. :data:`OFFICIAL_SHORT_NAMES` holds the short names of the
ASEAN member states as the ASEAN Secretariat writes them (asean.org, "Member States")
and of Japan; the ``report.region_names`` setting of a run adds to or replaces them
(e.g. ``{VNM: Vietnam}`` to keep the Natural Earth spelling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["OFFICIAL_SHORT_NAMES", "region_names", "display_name"]

#: ISO 3166-1 alpha-3 -> official short name (ASEAN member states and Japan).
OFFICIAL_SHORT_NAMES: dict[str, str] = {
    "BRN": "Brunei Darussalam",
    "KHM": "Cambodia",
    "IDN": "Indonesia",
    "LAO": "Lao PDR",
    "MYS": "Malaysia",
    "MMR": "Myanmar",
    "PHL": "Philippines",
    "SGP": "Singapore",
    "THA": "Thailand",
    "TLS": "Timor-Leste",
    "VNM": "Viet Nam",
    "JPN": "Japan",
}


def region_names(overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The code -> name table of a report: :data:`OFFICIAL_SHORT_NAMES` updated with ``overrides``.

    Parameters
    ----------
    overrides : mapping, optional
        Region code -> name (the ``report.region_names`` setting). Codes are matched
        case-insensitively; an empty name removes the built-in one (the row's own
        ``region_name`` is shown instead).

    Returns
    -------
    dict
        Upper-case code -> name.
    """
    table = dict(OFFICIAL_SHORT_NAMES)
    for code, name in (overrides or {}).items():
        key = str(code).strip().upper()
        if name is None or not str(name).strip():
            table.pop(key, None)
        else:
            table[key] = str(name).strip()
    return table


def display_name(row: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """Name of a discrepancy row's region: ``names[code]``, else its ``region_name``, else its code."""
    code = str(row.get("region") or "").strip()
    if code.upper() in names:
        return names[code.upper()]
    own = row.get("region_name")
    if own is not None and str(own).strip() and str(own).lower() != "nan":
        return str(own).strip()
    return code or "unnamed region"
