"""NASA ACOS GOSAT Lite XCO2 and OCO-2 / OCO-3 Lite XCO2 (``*_LtCO2_*.nc4``).

**Unverified layout** (no real Lite file was available; L2_FORMATS.md a): the variable
map :data:`LITE_VARIABLES` follows HARP's ``harp-ingest-oco-ltco2.c``, xtralite and
X-STILT. Correct it there if a real file disagrees. netCDF-4 with root variables on
``sounding_id`` and groups ``Sounding/``, ``Retrieval/``; profiles on 20 ``levels`` stored
**top of atmosphere first** (index 0 = TOA), flipped here to surface first (all level
arrays together). Fills: the ``missing_value`` attribute (-999999) and ``_FillValue``.

Recommended screen (``screen=True``): ``xco2_quality_flag == 0`` [CODE HARP; DOC NASA].
``bias_corrected=False`` returns ``Retrieval/xco2_raw`` [3P] when the file has it (else
the bias-corrected ``xco2`` with a warning in the log). ``surface_type`` comes from
``Sounding/operation_mode`` (1 = glint, everything else land/target) [CODE xtralite; INF
for ACOS GOSAT]; ``surface_pressure`` from ``Retrieval/psurf`` (hPa).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from gosat_pipeline.io._common import NcTableReader, cached_nc
from gosat_pipeline.io._layout import ReaderLayout, VarSpec
from gosat_pipeline.io._registry import FileSummary, GranulePlan

__all__ = ["AcosLiteReader", "Oco2LiteReader", "Oco3LiteReader", "LITE_VARIABLES"]

logger = logging.getLogger(__name__)

#: Lite XCO2 map [CODE HARP/xtralite/X-STILT; groups partly 3P].
LITE_VARIABLES = ReaderLayout(
    {
        "time": VarSpec("time", transform="time"),
        "latitude": VarSpec("latitude"),
        "longitude": VarSpec("longitude"),
        "xgas": VarSpec("xco2"),  # ppm
        "xgas_uncertainty": VarSpec("xco2_uncertainty"),
        "xgas_apriori": VarSpec("xco2_apriori", required=False),
        "averaging_kernel": VarSpec("xco2_averaging_kernel"),
        "pressure_weight": VarSpec("pressure_weight"),
        "profile_apriori": VarSpec("co2_profile_apriori"),
        "pressure": VarSpec("pressure_levels"),
        "solar_zenith_angle": VarSpec("solar_zenith_angle", required=False),
        "sounding_id": VarSpec("sounding_id", transform="int", required=False),
        "surface_pressure": VarSpec("Retrieval/psurf", required=False),
        "surface_type": VarSpec("Sounding/operation_mode", transform="glint_eq1", required=False),
    },
    reader="acos_lite",
)


class _LiteBase(NcTableReader):
    gases = ("CO2",)
    screen = "xco2_quality_flag == 0"
    variable_map: ClassVar[Mapping[str, ReaderLayout]] = {"CO2": LITE_VARIABLES}
    raw_variable: ClassVar[dict[str, str]] = {"CO2": "Retrieval/xco2_raw"}
    flag_variable: ClassVar[dict[str, str]] = {"CO2": "xco2_quality_flag"}
    level_order = "toa_first"
    version_pattern = r"_B(\d+\w*?)_\d{12}s"
    prefix: ClassVar[str] = ""

    def sniff(self, summary: FileSummary) -> bool:
        """Lite variables; ACOS has no footprint vertices [CODE HARP], OCO-2/3 told apart by attributes."""
        v = summary.variables
        if not {"xco2", "xco2_quality_flag", "xco2_averaging_kernel"} <= v:
            return False
        oco = "vertex_latitude" in v
        if self.platform_word == "GOSAT":
            return not oco
        text = " ".join(str(a) for a in summary.attrs.values()).upper()
        named = "OCO-3" if "OCO-3" in text or "OCO3" in text else "OCO-2"
        return oco and named == self.platform_word

    platform_word: ClassVar[str] = ""

    def read(self, plan: GranulePlan, *, bias_corrected: bool) -> dict[str, np.ndarray]:
        """Canonical arrays (flipped to surface first)."""
        if not bias_corrected:
            with cached_nc(plan.path) as ds:
                try:
                    ds[self.raw_variable["CO2"]]
                except (KeyError, IndexError):
                    logger.warning("%s: no %s; bias-corrected xco2 returned", plan.path, self.raw_variable["CO2"])
                    bias_corrected = True
        return super().read(plan, bias_corrected=bias_corrected)


class AcosLiteReader(_LiteBase):
    """NASA ACOS GOSAT Lite XCO2 (v7.3, v9, v11); see the module docstring."""

    name = "acos_lite"
    description = "NASA ACOS GOSAT Lite XCO2 (acos_LtCO2_*.nc4) [layout from reader code, unverified]"
    filename_patterns = (r"acos_LtCO2_\d{6}_.*\.nc4",)
    product = "ACOS GOSAT Lite XCO2"
    platform_word = "GOSAT"


class Oco2LiteReader(_LiteBase):
    """OCO-2 Lite XCO2; same layout as ACOS Lite."""

    name = "oco2_lite"
    description = "NASA OCO-2 Lite XCO2 (oco2_LtCO2_*.nc4) [layout from reader code, unverified]"
    filename_patterns = (r"oco2_LtCO2_\d{6}_B\d+\w*_\d{12}s.*\.nc4",)
    product = "OCO-2 Lite XCO2"
    platform_word = "OCO-2"


class Oco3LiteReader(_LiteBase):
    """OCO-3 Lite XCO2; same layout as ACOS Lite."""

    name = "oco3_lite"
    description = "NASA OCO-3 Lite XCO2 (oco3_LtCO2_*.nc4) [layout from reader code, unverified]"
    filename_patterns = (r"oco3_LtCO2_\d{6}_B\d+\w*_\d{12}s.*\.nc4",)
    product = "OCO-3 Lite XCO2"
    platform_word = "OCO-3"
