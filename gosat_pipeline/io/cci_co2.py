"""CCI GOSAT CO2 family: UoL full-physics XCO2 (OCFP) and SRON RemoTeC (SRFP/SRPR).

**OCFP** (``ESACCI-GHG-L2-CO2-GOSAT-OCFP-YYYYMMDD-fv*.nc``): the layout is **not
verified** on a real file (L2_FORMATS.md b.3). It is assumed to mirror OCPR from the
same producer (dims ``n``/``m``, 20 levels surface-first, bare -9999.99 fills, units
``"1e-6"``): :data:`OCFP_VARIABLES` is the OCPR layout with only the gas-named
variables changed (``xco2``, ``xco2_uncertainty``, ``xco2_averaging_kernel``,
``co2_profile_apriori``). It is data: correct it there.

**SRFP/SRPR** (``ESACCI-GHG-L2-(CO2|CH4)-GOSAT[2]-(SRFP|SRPR)-YYYYMMDD-fv*.nc``): the
structure follows a **real header** of the GOSAT-2 fv2 file (L2_FORMATS.md b.2; no real
values were available): ``sounding_dim``, ``level_dim = 13`` levels and ``layer_dim = 12``
layers, surface first. Averaging kernel, pressure weight and a-priori are **layer**
quantities, so the canonical ``level`` dimension holds the 12 layers and ``pressure``
is the layer mid-pressure ``(p_k + p_{k+1}) / 2`` of ``pressure_levels``. The header
labels XCO2 ``"1e-9"`` although it is ppm: the reader takes ppm (CO2) and ppb (CH4) from
the product documentation, never from that attribute. Fills: ``_FillValue`` when present,
and the CCI bare -9999.99.

Recommended screen (both): ``x{co2,ch4}_quality_flag == 0`` and a valid gas value.
``bias_corrected=False`` returns ``raw_xco2`` / ``raw_xch4``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from gosat_pipeline.io._common import NcTableReader
from gosat_pipeline.io._layout import ReaderLayout, VarSpec
from gosat_pipeline.io._registry import FileSummary
from gosat_pipeline.io.cci_ocpr import OCPR_VARIABLES

__all__ = ["CciOcfpReader", "CciSrfpReader", "OCFP_VARIABLES", "SRFP_VARIABLES"]

#: OCFP XCO2 map [INF: OCPR v7.2 from the same producer with the gas names changed; verify on a real file].
OCFP_VARIABLES = OCPR_VARIABLES.derive(
    reader="cci_ocfp",
    xgas=VarSpec("xco2"),  # ppm ("1e-6")
    xgas_uncertainty=VarSpec("xco2_uncertainty"),
    averaging_kernel=VarSpec("xco2_averaging_kernel"),
    profile_apriori=VarSpec("co2_profile_apriori"),
)


def _srfp_map(gas: str) -> ReaderLayout:
    g = gas.lower()
    return ReaderLayout(
        {
            "time": VarSpec("time", transform="time"),
            "latitude": VarSpec("latitude"),
            "longitude": VarSpec("longitude"),
            "xgas": VarSpec(f"x{g}"),
            "xgas_uncertainty": VarSpec(f"x{g}_uncertainty"),
            "averaging_kernel": VarSpec(f"x{g}_averaging_kernel"),
            "pressure_weight": VarSpec("pressure_weight"),
            "profile_apriori": VarSpec(f"{g}_profile_apriori"),
            "pressure": VarSpec("pressure_levels", transform="layer_mid"),
            "surface_pressure": VarSpec("pressure_levels", transform="first"),  # "1st element = surface"
            "solar_zenith_angle": VarSpec("solar_zenith_angle", required=False),
            "surface_type": VarSpec("flag_sunglint", transform="glint_eq1", required=False),
            "sounding_id": VarSpec("exposure_id", transform="int", required=False),
        },
        reader=f"cci_srfp ({gas})",
    )


#: SRFP/SRPR maps per gas [CDL: real GOSAT-2 XCO2 header; CH4 names by analogy].
SRFP_VARIABLES: dict[str, ReaderLayout] = {"CO2": _srfp_map("CO2"), "CH4": _srfp_map("CH4")}


class CciOcfpReader(NcTableReader):
    """CCI / UoL GOSAT full-physics XCO2 (OCFP); layout unverified, see the module docstring."""

    name = "cci_ocfp"
    description = "ESA CCI / Univ. of Leicester GOSAT full-physics XCO2 (OCFP), netCDF [layout unverified]"
    gases = ("CO2",)
    filename_patterns = (r"(ESACCI|UoL)-GHG-L2-CO2-GOSAT-OCFP-\d{8}-fv[\d.]+\.nc",)
    screen = "xco2_quality_flag == 0 and xco2 not -9999.99"
    product = "CCI GOSAT OCFP XCO2"
    variable_map: ClassVar[Mapping[str, ReaderLayout]] = {"CO2": OCFP_VARIABLES}
    raw_variable: ClassVar[dict[str, str]] = {"CO2": "raw_xco2"}
    flag_variable: ClassVar[dict[str, str]] = {"CO2": "xco2_quality_flag"}
    bare_fill = -9999.99

    def sniff(self, summary: FileSummary) -> bool:
        """``xco2`` + ``xco2_quality_flag`` on the flat ``n``/``m`` layout (no ``sounding_dim`` names)."""
        v = summary.variables
        return (
            {"xco2", "xco2_quality_flag", "pressure_levels"} <= v and "flag_sunglint" not in v and "/" not in "".join(v)
        )


class CciSrfpReader(NcTableReader):
    """CCI SRON RemoTeC XCO2/XCH4 (SRFP/SRPR), GOSAT and GOSAT-2; layer grid, see the module docstring."""

    name = "cci_srfp"
    description = "ESA CCI SRON RemoTeC GOSAT/GOSAT-2 XCO2/XCH4 (SRFP, SRPR), netCDF, layer averaging kernels"
    gases = ("CO2", "CH4")
    filename_patterns = (r"ESACCI-GHG-L2-(CO2|CH4)-GOSAT2?-SR(FP|PR)-\d{8}-fv[\d.]+\.nc",)
    screen = "x{gas}_quality_flag == 0 and a valid gas value"
    product = "CCI GOSAT SRFP"
    variable_map: ClassVar[Mapping[str, ReaderLayout]] = SRFP_VARIABLES
    raw_variable: ClassVar[dict[str, str]] = {"CO2": "raw_xco2", "CH4": "raw_xch4"}
    flag_variable: ClassVar[dict[str, str]] = {"CO2": "xco2_quality_flag", "CH4": "xch4_quality_flag"}
    bare_fill = -9999.99

    def sniff(self, summary: FileSummary) -> bool:
        """SRFP files have ``flag_sunglint`` and ``dry_airmass_layer``."""
        return {"flag_sunglint", "pressure_levels"} <= summary.variables and (
            "xco2" in summary.variables or "xch4" in summary.variables
        )
