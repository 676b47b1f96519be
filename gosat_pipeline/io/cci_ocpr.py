"""ESA CCI / University of Leicester GOSAT proxy XCH4 (OCPR), v7.x and v9.

Layout verified on real v7.2 files (L2_FORMATS.md b.1): netCDF-4 classic, dims ``n``
(soundings) and ``m = 20`` levels, **surface first**; missing data are a bare
-9999.99 with no ``_FillValue`` attribute (masked here by value); units attributes
are the CCI strings ``"1e-9"`` (ppb) and ``"1e-6"`` (ppm). The v9.0 release
(``UoL-GHG-L2-CH4-GOSAT-OCPR-YYYYMMDD-fv9.0.nc``) uses the same names [CODE, GEOS-Chem].

Recommended screen (``screen=True``): ``xch4_quality_flag == 0`` and a valid (not
-9999.99) ``xch4``. Per sounding the reader also gives ``surface_type`` from
``retr_flag`` (0 land, 1 glint), ``solar_zenith_angle``, ``surface_pressure``
(``surface_air_pressure_apriori``, hPa) and ``sounding_id`` (the 22-digit
``exposure_id`` string). ``bias_corrected=False`` returns ``raw_xch4``.
The a-priori XCH4 is not stored; it is computed as :math:`X_a = \\sum_j h_j x_{a,j}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from gosat_pipeline.io._common import NcTableReader
from gosat_pipeline.io._layout import ReaderLayout, VarSpec
from gosat_pipeline.io._registry import FileSummary

__all__ = ["CciOcprReader", "OCPR_VARIABLES"]

#: canonical name -> file variable (the verified v7.2 layout).
OCPR_VARIABLES = ReaderLayout(
    {
        "time": VarSpec("time", transform="time"),
        "latitude": VarSpec("latitude"),
        "longitude": VarSpec("longitude"),
        "xgas": VarSpec("xch4"),  # ppb ("1e-9")
        "xgas_uncertainty": VarSpec("xch4_uncertainty"),
        "averaging_kernel": VarSpec("xch4_averaging_kernel"),
        "pressure_weight": VarSpec("pressure_weight"),
        "profile_apriori": VarSpec("ch4_profile_apriori"),  # ppb although described as ppm
        "pressure": VarSpec("pressure_levels"),
        "surface_pressure": VarSpec("surface_air_pressure_apriori", required=False),
        "solar_zenith_angle": VarSpec("solar_zenith_angle", required=False),
        "surface_type": VarSpec("retr_flag", transform="glint_eq1", required=False),
        "sounding_id": VarSpec("exposure_id", transform="chars", required=False),
    },
    reader="cci_ocpr",
)


class CciOcprReader(NcTableReader):
    """ESA CCI / UoL GOSAT OCPR proxy XCH4 (v7.x, v9); see the module docstring."""

    name = "cci_ocpr"
    description = "ESA CCI / Univ. of Leicester GOSAT proxy XCH4 (OCPR v7.x, v9), netCDF"
    gases = ("CH4",)
    filename_patterns = (
        r"ESACCI-GHG-L2-CH4-GOSAT-OCPR-\d{8}-fv[\d.]+\.nc",
        r"UoL-GHG-L2-CH4-GOSAT-OCPR-\d{8}-fv[\d.]+\.nc",
    )
    screen = "xch4_quality_flag == 0 and xch4 not -9999.99"
    product = "CCI GOSAT OCPR XCH4"
    variable_map: ClassVar[Mapping[str, ReaderLayout]] = {"CH4": OCPR_VARIABLES}
    raw_variable: ClassVar[dict[str, str]] = {"CH4": "raw_xch4"}
    flag_variable: ClassVar[dict[str, str]] = {"CH4": "xch4_quality_flag"}
    bare_fill = -9999.99

    def sniff(self, summary: FileSummary) -> bool:
        """OCPR: ``xch4``, ``raw_xch4``, ``xch4_quality_flag``, ``retr_flag``; not SRFP (``flag_sunglint``)."""
        v = summary.variables
        return {"xch4", "raw_xch4", "xch4_quality_flag", "retr_flag"} <= v and "flag_sunglint" not in v
