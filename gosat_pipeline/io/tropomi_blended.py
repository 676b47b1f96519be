"""Blended TROPOMI+GOSAT CH4 (``S5P_BLND_L2__CH4____*.nc``; Balasus et al., 2023).

The product of Balasus et al. (2023, Atmos. Meas. Tech. 16, 3787-3807): TROPOMI XCH4
corrected towards GOSAT with a machine-learning model, one file per orbit, the default
input of the Integrated Methane Inversion (IMI). Layout checked on the real v02.04.00 file
in ``shared/real_samples/tropomi`` and against IMI's ``read_blended``/``filter_blended``
(``src/inversion_scripts/utils.py``):

- flat netCDF-4 (no ``PRODUCT`` group), dimensions ``nobs``, ``layer`` (12), ``corner`` (4);
- ``methane_mixing_ratio_blended`` (ppb, units ``1e-9``): the product's XCH4, returned with
  ``bias_corrected=True``; ``bias_corrected=False`` returns the TROPOMI retrieval
  ``methane_mixing_ratio`` before any correction; ``methane_mixing_ratio_precision`` is
  the uncertainty;
- ``time_utc`` ISO 8601 strings (no numeric time); they must fall within the orbit's start
  and end in the file name (60 s tolerance) or the ``time_coverage_start/end`` attributes
  if a version has them, else :class:`GranuleError` naming ``time_utc``;
- ``qa_value`` uint8 with ``scale_factor`` 0.01 (all 1.0 in the sample), CF
  ``_FillValue`` 9.96921e36;
- ``column_averaging_kernel``, ``methane_profile_apriori`` and ``dry_air_subcolumns``
  (mol m-2) on 12 layers **top of atmosphere first** (the first a-priori layer is
  stratospheric, about 1656 ppb in the sample, and its kernel the smallest; IMI reverses
  them), flipped here, all together, to surface first; ``surface_pressure`` and
  ``pressure_interval`` in Pa give the equidistant grid :math:`p_k = p_s - k\\Delta p`.

The averaging kernel is expressed in the generic form exactly as for operational TROPOMI
(:mod:`gosat_pipeline.io.tropomi_ch4`): :math:`h_i = d_i/\\sum_j d_j`,
:math:`x_{a,i} = 10^9 c_{a,i}/d_i`, :math:`X_a = 10^9 \\sum_i c_{a,i} / \\sum_i d_i`.

Recommended screen (``screen=True``), the product's and Balasus et al.'s: ``qa_value >= 0.5``,
no coastal pixel (``surface_classification & 3 == 3``), no inland-water pixel with a poor
fit (``surface_classification & 3 == 2`` and ``chi_square_SWIR > 20000``). IMI further drops
water pixels, latitudes south of 60 S and snow/ice by choice; here ``surface_type`` is 1 for
water pixels (``& 3 == 1``) so that the run's ``screen.surface`` can do it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io._common import (
    NcHandle,
    _attrs,
    _has,
    cached_nc,
    check_gas,
    check_time_coverage,
    get_var,
    mask_fill,
    plan_from_flags,
    read_raw,
    wrap_longitude,
)
from gosat_pipeline.io._registry import FileSummary, GranulePlan, GranuleReader
from gosat_pipeline.io.tropomi_ch4 import (
    COVERAGE_TOLERANCE,
    TropomiCh4Reader,
    granule_coverage,
    parse_iso_times,
)

__all__ = ["TropomiBlendedCh4Reader", "BLENDED_VARIABLES", "CHI2_SWIR_INLAND_WATER_MAX"]

#: role -> variable (verified on the real v02.04.00 file).
BLENDED_VARIABLES: dict[str, str] = {
    "latitude": "latitude",
    "longitude": "longitude",
    "time_utc": "time_utc",
    "qa_value": "qa_value",
    "xgas": "methane_mixing_ratio_blended",
    "xgas_raw": "methane_mixing_ratio",
    "xgas_uncertainty": "methane_mixing_ratio_precision",
    "averaging_kernel": "column_averaging_kernel",
    "apriori_subcolumns": "methane_profile_apriori",
    "dry_air_subcolumns": "dry_air_subcolumns",
    "surface_pressure": "surface_pressure",
    "pressure_interval": "pressure_interval",
    "surface_classification": "surface_classification",
    "chi_square_swir": "chi_square_SWIR",
}
_OPTIONAL = {"xgas_raw"}
#: Balasus et al. (2023): inland-water pixels (classification 2) with a SWIR chi-square above this are dropped.
CHI2_SWIR_INLAND_WATER_MAX = 20000.0


def _field(ds: NcHandle, role: str, path: str) -> np.ndarray:
    var = get_var(ds, BLENDED_VARIABLES[role], path)
    return mask_fill(read_raw(var, path), _attrs(var), None)


def _orbit(ds: NcHandle, path: str) -> int:
    if "orbit" in ds.ncattrs():
        return int(ds.getncattr("orbit"))
    m = re.search(r"_\d{8}T\d{6}_\d{8}T\d{6}_(\d{5})_", Path(path).name)
    return int(m.group(1)) if m else 0


def _version(path: str) -> str:
    m = re.search(r"_\d{5}_(\d{2})_(\d{2})(\d{2})(\d{2})_", Path(path).name)
    return f"{m.group(2)}.{m.group(3)}.{m.group(4)} (collection {m.group(1)})" if m else "unknown"


class TropomiBlendedCh4Reader(GranuleReader):
    """Blended TROPOMI+GOSAT XCH4 (Balasus et al. 2023); see the module docstring."""

    name = "tropomi_blended_ch4"
    description = "Blended TROPOMI+GOSAT XCH4 (Balasus et al. 2023; S5P_BLND_L2__CH4____*.nc), flat netCDF-4"
    gases = ("CH4",)
    filename_patterns = (r"S5P_BLND_L2__CH4____\d{8}T\d{6}_\d{8}T\d{6}_\d{5}_\d{2}_\d{6}_\d{8}T\d{6}\.nc4?",)
    screen = (
        f"qa_value >= 0.5, not coastal (surface_classification & 3 == 3), not inland water with "
        f"chi_square_SWIR > {CHI2_SWIR_INLAND_WATER_MAX:g} (Balasus et al. 2023), and a valid methane value"
    )

    def sniff(self, summary: FileSummary) -> bool:
        """Blended: ``methane_mixing_ratio_blended`` with the flat TROPOMI-like layout."""
        return {"methane_mixing_ratio_blended", "column_averaging_kernel", "time_utc"} <= summary.variables

    def scan(self, path: str, *, gas: str | None, screen: bool) -> GranulePlan:
        """Check the variables and times; flag = the recommended screen (module docstring)."""
        with cached_nc(path) as ds:
            found = check_gas(path, "CH4", gas)
            missing = [p for r, p in BLENDED_VARIABLES.items() if r not in _OPTIONAL and not _has(ds, p)]
            if missing:
                raise GranuleError(path, f"missing variable(s) {missing} required by the {self.name} reader")
            xgas = _field(ds, "xgas", path).reshape(-1)
            n_levels = int(get_var(ds, BLENDED_VARIABLES["averaging_kernel"], path).shape[-1])
            qa = _field(ds, "qa_value", path).reshape(-1)
            sc = read_raw(get_var(ds, BLENDED_VARIABLES["surface_classification"], path), path).reshape(-1)
            chi2 = _field(ds, "chi_square_swir", path).reshape(-1)
            kind = sc.astype(np.int64) & 0x03
            with np.errstate(invalid="ignore"):
                bad = ~(qa >= 0.5) | (kind == 3) | ((kind == 2) & (chi2 > CHI2_SWIR_INLAND_WATER_MAX))
            times = self._times(ds, path, np.isfinite(xgas))
            lat = _field(ds, "latitude", path).reshape(-1).astype(np.float64)
            lon = _field(ds, "longitude", path).reshape(-1).astype(np.float64)
            keys = np.stack([times.view(np.int64), lat.view(np.int64), lon.view(np.int64)], axis=1)
            attrs = {
                "product": "Blended TROPOMI+GOSAT CH4 (Balasus et al. 2023)",
                "reader": self.name,
                "product_version": _version(path),
                "time_source": BLENDED_VARIABLES["time_utc"],
            }
            orbit = _orbit(ds, path)
            if not _has(ds, BLENDED_VARIABLES["xgas_raw"]):
                attrs["components_left_out"] = [
                    f"{BLENDED_VARIABLES['xgas_raw']}: absent; bias_corrected=False returns the blended value"
                ]
        variables = {
            n: "float64"
            for n in ("latitude", "longitude", "xgas", "xgas_uncertainty", "surface_pressure", "xgas_apriori")
        }
        variables.update({n: "float32" for n in ("averaging_kernel", "pressure_weight", "profile_apriori", "pressure")})
        variables.update(time="datetime64[ns]", quality_flag="int8", sounding_id="int64", surface_type="int8")
        plan = plan_from_flags(
            path,
            found,
            xgas,
            bad,
            screen=screen,
            n_levels=n_levels,
            attrs=attrs,
            ids=keys,
            extra={"orbit": orbit},
            variable=BLENDED_VARIABLES["xgas"],
        )
        plan.variables = variables
        return plan

    @staticmethod
    def _times(ds: NcHandle, path: str, needed: np.ndarray) -> np.ndarray:
        """``time_utc`` decoded, checked against the orbit's coverage for the soundings with a value."""
        vpath = BLENDED_VARIABLES["time_utc"]
        times = parse_iso_times(read_raw(get_var(ds, vpath, path), path)).reshape(-1)
        coverage = granule_coverage(ds, path)
        if coverage is not None:
            check_time_coverage(
                path,
                times[needed],
                coverage[0],
                coverage[1],
                vpath,
                coverage[2],
                COVERAGE_TOLERANCE,
                hint="wrong time strings, or a file renamed to another orbit",
            )
        return times

    def read(self, plan: GranulePlan, *, bias_corrected: bool) -> dict[str, np.ndarray]:
        """Canonical arrays of the planned soundings, in the generic AK form."""
        path, idx = plan.path, plan.index
        out: dict[str, np.ndarray] = {}
        with cached_nc(path) as ds:
            out["time"] = parse_iso_times(read_raw(get_var(ds, BLENDED_VARIABLES["time_utc"], path), path)).reshape(-1)[
                idx
            ]
            out["latitude"] = _field(ds, "latitude", path).reshape(-1)[idx]
            out["longitude"] = wrap_longitude(_field(ds, "longitude", path).reshape(-1)[idx])
            role = "xgas" if bias_corrected or not _has(ds, BLENDED_VARIABLES["xgas_raw"]) else "xgas_raw"
            out["xgas"] = _field(ds, role, path).reshape(-1)[idx]
            out["xgas_uncertainty"] = _field(ds, "xgas_uncertainty", path).reshape(-1)[idx]
            layer = {
                r: _field(ds, r, path).reshape(-1, plan.n_levels)[idx][:, ::-1]  # top first in the file
                for r in ("averaging_kernel", "apriori_subcolumns", "dry_air_subcolumns")
            }
            ps = _field(ds, "surface_pressure", path).reshape(-1)[idx]
            dp = _field(ds, "pressure_interval", path).reshape(-1)[idx]
            sc = read_raw(get_var(ds, BLENDED_VARIABLES["surface_classification"], path), path).reshape(-1)[idx]
        out["surface_type"] = ((sc.astype(np.int64) & 0x03) == 1).astype(np.int8)
        out.update(TropomiCh4Reader._column_terms(layer, ps, dp))
        out["quality_flag"] = plan.extra["bad"][idx].astype(np.int8)
        out["sounding_id"] = (plan.extra["orbit"] * 10**8 + idx).astype(np.int64)
        if np.isnan(out["xgas"]).any():
            out["quality_flag"] = np.where(np.isnan(out["xgas"]), 1, out["quality_flag"]).astype(np.int8)
        return out
