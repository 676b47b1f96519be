"""NIES GOSAT TANSO-FTS SWIR L2 (C01S CO2, C02S CH4) and GOSAT-2 TANSO-FTS-2 L2 (SWFP), HDF5.

Both are plain HDF5 (read with h5py), not CF netCDF: attributes are string arrays
(``unit``, ``longName``, ``invalidValue``). **No real file of either product was
available** (L2_FORMATS.md c): every path below is data in :data:`NIES_GOSAT_VARIABLES`
and :data:`NIES_GOSAT2_VARIABLES`, taken from HARP ``harp-ingest-gosat_fts_l2.c`` and
xtralite where marked [CODE], else from third-party scripts [3P] or inferred [INF]. A
layout correction is an edit of those tables.

Conventions applied:

- Units: from the dataset's ``unit`` attribute when present (``ppm``/``ppmv``/``1e-6``,
  ``ppb``/``ppbv``/``1e-9``), else the table default. **GOSAT (NIES) XCH4 is in ppm**
  [CODE HARP], converted to ppb here.
- Fills: ``invalidValue`` when present, else -1.0e30 for mixing ratios and -9999 for
  geolocation [CODE HARP]; any value <= -9999 is treated as fill.
- Uncertainty: root-sum-square of the four error components (external, interference,
  retrieval noise, smoothing) for GOSAT; HARP reports their plain sum instead.
- Level order: detected per file from the pressure grid (surface = highest pressure),
  and every level array is flipped together when the file is top-first [INF: the
  order is unverified]. When the product holds no pressure-weighting function, ``h`` is
  computed from the pressure levels with the trapezoid rule
  (:math:`h_j = (p_{j-1} - p_{j+1}) / (2 p_s)`, end levels half-weighted, sum 1).
- Bias correction: GOSAT ``XCO2BiasCorrected`` (V02.46 and later) [CODE xtralite] when
  ``bias_corrected=True`` and present; ``bias_corrected=False`` reads the raw ``XCO2``.

Recommended screen: GOSAT general-user L2 has no per-sounding flag (NIES screens before
release [INF]), so only fill values are dropped; GOSAT-2 keeps ``x{gas}_quality_flag == 0``
[3P].
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import h5py
import numpy as np
import pandas as pd

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io._common import check_gas, check_readable, plan_from_flags, wrap_longitude
from gosat_pipeline.io._registry import FileSummary, GranulePlan, GranuleReader

__all__ = ["NiesGosatReader", "NiesGosat2Reader", "NIES_GOSAT_VARIABLES", "NIES_GOSAT2_VARIABLES"]

logger = logging.getLogger(__name__)

_UNIT_FACTORS = {
    ("CO2", "ppm"): 1.0, ("CO2", "ppmv"): 1.0, ("CO2", "1e-6"): 1.0, ("CO2", "ppb"): 1e-3,
    ("CH4", "ppb"): 1.0, ("CH4", "ppbv"): 1.0, ("CH4", "1e-9"): 1.0, ("CH4", "ppm"): 1e3,
    ("CH4", "ppmv"): 1e3, ("CH4", "1e-6"): 1e3,
}  # fmt: skip


def _gosat_map(gas: str) -> dict[str, Any]:
    g = gas.upper()
    return {
        "time": {"path": "scanAttribute/time", "kind": "time"},  # CODE HARP
        "latitude": {"path": "Data/geolocation/latitude"},  # CODE HARP
        "longitude": {"path": "Data/geolocation/longitude"},
        "xgas": {"path": f"Data/mixingRatio/X{g}", "gas_units": "ppm"},  # CODE HARP (ppm for both gases)
        "xgas_bc": {"path": f"Data/mixingRatio/X{g}BiasCorrected", "gas_units": "ppm", "required": False},
        "xgas_uncertainty": {"paths": [f"Data/mixingRatio/X{g}{e}" for e in
                             ("ExternalError", "InterferenceError", "RetrievalNoise", "SmoothingError")],
                             "gas_units": "ppm"},  # fmt: skip
        "averaging_kernel": {"path": "Data/retrievalQuality/columnAveragingKernel", "required": False},  # CODE XTL
        "profile_apriori": {"path": f"scanAttribute/referenceData/{g}Profile", "gas_units": "ppm",
                            "required": False},  # fmt: skip  CODE XTL (CO2Profile); CH4 by analogy
        "pressure": {"path": "scanAttribute/referenceData/pressure", "required": False},  # INF
        "pressure_weight": {"path": "Data/retrievalQuality/pressureWeightingFunction", "required": False},  # INF
        "surface_pressure": {"path": "Data/auxiliaryParameter/surfacePressure", "required": False},  # 3P
        "solar_zenith_angle": {"path": "Data/geolocation/solarZenith", "required": False},  # CODE HARP
        "land_fraction": {"path": "Data/geolocation/landFraction", "required": False},  # 3P, percent
        "sounding_id": {"path": "scanAttribute/scanID", "kind": "id", "required": False},  # CODE GOSAT_h5
    }


def _gosat2_map(gas: str) -> dict[str, Any]:
    g = gas.lower()
    return {
        "time": {"path": "SoundingAttribute/observationTime", "kind": "time"},  # 3P
        "latitude": {"path": "SoundingGeometry/latitude"},  # CODE pynadc
        "longitude": {"path": "SoundingGeometry/longitude"},
        "xgas": {"path": f"RetrievalResult/x{g}", "gas_units": {"CO2": "ppm", "CH4": "ppb"}[gas]},  # 3P/INF
        "xgas_uncertainty": {"paths": [f"RetrievalResult/x{g}_uncertainty"],
                             "gas_units": {"CO2": "ppm", "CH4": "ppb"}[gas]},  # fmt: skip  3P
        "flag": {"path": f"RetrievalResult/x{g}_quality_flag"},  # 3P, 0 = good
        "averaging_kernel": {"path": f"RetrievalResult/x{g}_column_averaging_kernel", "required": False},  # 3P
        "profile_apriori": {"path": f"RetrievalResult/{g}_profile_apriori", "required": False,
                            "gas_units": {"CO2": "ppm", "CH4": "ppb"}[gas]},  # fmt: skip  INF
        "pressure": {"path": "RetrievalResult/pressure_level", "required": False, "layers": True},  # 3P
        "pressure_weight": {"path": "RetrievalResult/pressure_weight", "required": False},  # INF
        "surface_pressure": {"path": "RetrievalResult/surface_pressure", "required": False},  # 3P
        "solar_zenith_angle": {"path": "SoundingGeometry/solarZenith", "required": False},  # 3P
        "land_fraction": {"path": "SoundingGeometry/landFraction", "required": False},  # CODE pynadc
        "sounding_id": {"path": "SoundingAttribute/soundingUniqueID", "kind": "id", "required": False},  # 3P
    }


#: GOSAT TANSO-FTS SWIR L2 map per gas (C01S CO2, C02S CH4).
NIES_GOSAT_VARIABLES: dict[str, dict[str, Any]] = {"CO2": _gosat_map("CO2"), "CH4": _gosat_map("CH4")}
#: GOSAT-2 TANSO-FTS-2 L2 (SWFP) map per gas [3P, unverified].
NIES_GOSAT2_VARIABLES: dict[str, dict[str, Any]] = {"CO2": _gosat2_map("CO2"), "CH4": _gosat2_map("CH4")}


def _attr_str(ds: h5py.Dataset, key: str) -> str | None:
    if key not in ds.attrs:
        return None
    v = np.asarray(ds.attrs[key]).reshape(-1)
    if v.size == 0:
        return None
    s = v[0]
    return s.decode("utf-8", "replace").strip() if isinstance(s, bytes) else str(s).strip()


def _open_h5(path: str) -> h5py.File:
    check_readable(path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise GranuleError(path, f"not a readable HDF5 file (truncated or corrupt?): {exc}") from None


def _values(f: h5py.File, vpath: str, path: str) -> tuple[np.ndarray, h5py.Dataset]:
    try:
        ds = f[vpath]
        return np.asarray(ds[()]), ds
    except KeyError:
        raise GranuleError(path, f"missing variable {vpath!r}") from None
    except (OSError, RuntimeError) as exc:
        raise GranuleError(path, f"cannot read {vpath!r} (truncated or corrupt?): {exc}") from None


def _masked(f: h5py.File, vpath: str, path: str) -> np.ndarray:
    raw, ds = _values(f, vpath, path)
    out = raw.astype(np.float64)
    inv = _attr_str(ds, "invalidValue")
    if inv is not None:
        try:
            out[out == float(inv)] = np.nan
        except ValueError:
            logger.debug("%s: %s invalidValue %r is not a number", path, vpath, inv)
    out[out <= -9999.0] = np.nan
    return out


def _factor(gas: str, ds_unit: str | None, default: str, path: str, vpath: str) -> float:
    unit = (ds_unit or default).strip().lower()
    if (gas, unit) not in _UNIT_FACTORS:
        raise GranuleError(path, f"{vpath}: unit {unit!r} not understood for {gas}; expected ppm or ppb")
    return _UNIT_FACTORS[(gas, unit)]


def _parse_times(raw: np.ndarray) -> np.ndarray:
    strs = [s.decode("ascii", "replace") if isinstance(s, bytes) else str(s) for s in raw.reshape(-1)]
    strs = [s.strip().rstrip("Z").replace("T", " ") for s in strs]
    return pd.to_datetime(pd.Series(strs), format="%Y-%m-%d %H:%M:%S.%f", errors="coerce").to_numpy("datetime64[ns]")


def trapezoid_weights(p: np.ndarray) -> np.ndarray:
    """Pressure weights of a surface-first level grid: trapezoid rule, rows sum to 1."""
    dp = -np.diff(p, axis=1)
    h = np.zeros_like(p)
    h[:, :-1] += 0.5 * dp
    h[:, 1:] += 0.5 * dp
    tot = h.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return h / tot


class _NiesBase(GranuleReader):
    variable_map: ClassVar[dict[str, dict[str, Any]]] = {}
    product: ClassVar[str] = ""

    def file_gas(self, f: h5py.File, path: str) -> str:
        for gas, vmap in self.variable_map.items():
            if vmap["xgas"]["path"] in f:
                return gas
        raise GranuleError(path, f"missing variable: none of {[m['xgas']['path'] for m in self.variable_map.values()]}")

    def product_version(self, f: h5py.File, path: str) -> str:
        import re

        m = re.search(r"V(\d{4,10})", path.rsplit("/", 1)[-1])
        return m.group(1) if m else "unknown"

    def flag_bad(self, f: h5py.File, vmap: dict[str, Any], path: str, n: int) -> np.ndarray:
        if "flag" not in vmap:
            return np.zeros(n, dtype=bool)
        flag = _masked(f, vmap["flag"]["path"], path)
        return ~(flag == 0)

    def _xgas(self, f: h5py.File, vmap: dict[str, Any], gas: str, path: str, bias_corrected: bool) -> np.ndarray:
        spec = vmap["xgas"]
        if bias_corrected and "xgas_bc" in vmap and vmap["xgas_bc"]["path"] in f:
            spec = vmap["xgas_bc"]
        vals = _masked(f, spec["path"], path)
        return vals * _factor(gas, _attr_str(f[spec["path"]], "unit"), spec["gas_units"], path, spec["path"])

    def scan(self, path: str, *, gas: str | None, screen: bool) -> GranulePlan:
        """Check variables and gas; plan the soundings (fills dropped, product flag where it exists)."""
        with _open_h5(path) as f:
            found = check_gas(path, self.file_gas(f, path), gas)
            vmap = self.variable_map[found]
            missing = [s["path"] for s in vmap.values() if "path" in s and s.get("required", True) and s["path"] not in f]
            missing += [p for s in vmap.values() for p in s.get("paths", []) if p not in f]
            if missing:
                raise GranuleError(path, f"missing variable(s) {missing} required by the {self.name} reader")
            self._check_units(f, vmap, found, path)
            xgas = self._xgas(f, vmap, found, path, True)
            bad = self.flag_bad(f, vmap, path, xgas.size)
            ak = vmap["averaging_kernel"]["path"]
            n_levels = int(f[ak].shape[-1]) if ak in f else 0
            attrs = {"product": self.product, "product_version": self.product_version(f, path), "reader": self.name}
            variables = self._variables(f, vmap)
            ids = self._ids(f, vmap, path)
            bc = vmap.get("xgas_bc")
            xpath = bc["path"] if bc is not None and bc["path"] in f else vmap["xgas"]["path"]
        plan = plan_from_flags(path, found, xgas, bad, screen=screen, n_levels=n_levels, attrs=attrs, ids=ids,
                               variable=xpath)  # fmt: skip
        plan.variables = variables
        return plan

    @staticmethod
    def _check_units(f: h5py.File, vmap: dict[str, Any], gas: str, path: str) -> None:
        """Every unit attribute ``read`` converts must be understood (else GranuleError now, not at read)."""
        for spec in vmap.values():
            if "gas_units" not in spec:
                continue
            for p in spec.get("paths", [spec.get("path")]):
                if p is not None and p in f:
                    _factor(gas, _attr_str(f[p], "unit"), spec["gas_units"], path, p)

    @staticmethod
    def _ids(f: h5py.File, vmap: dict[str, Any], path: str) -> np.ndarray | None:
        sid = vmap["sounding_id"]["path"]
        if sid not in f:
            return None
        raw = _values(f, sid, path)[0]
        if raw.dtype.kind in "SOU":
            return np.array([s.decode() if isinstance(s, bytes) else str(s) for s in raw], dtype=object)
        return raw.astype(np.int64)

    @staticmethod
    def _variables(f: h5py.File, vmap: dict[str, Any]) -> dict[str, str]:
        out = {"time": "datetime64[ns]", "latitude": "float64", "longitude": "float64", "xgas": "float64",
               "xgas_uncertainty": "float64", "quality_flag": "int8"}  # fmt: skip
        for name in ("averaging_kernel", "profile_apriori", "pressure", "pressure_weight"):
            if vmap[name]["path"] in f:
                out[name] = "float32"
        if "pressure" in out:
            out["pressure_weight"] = "float32"
        if {"profile_apriori", "pressure_weight"} <= set(out):
            out["xgas_apriori"] = "float64"
        for name in ("surface_pressure", "solar_zenith_angle"):
            if vmap[name]["path"] in f:
                out[name] = "float64"
        if vmap["land_fraction"]["path"] in f:
            out["surface_type"] = "int8"
        sid = vmap["sounding_id"]["path"]
        if sid in f:
            out["sounding_id"] = "object" if f[sid].dtype.kind in "SOU" else "int64"
        return out

    def read(self, plan: GranulePlan, *, bias_corrected: bool) -> dict[str, np.ndarray]:
        """Canonical arrays of the planned soundings (see the module docstring)."""
        path, gas, idx = plan.path, plan.gas, plan.index
        vmap = self.variable_map[gas]
        out: dict[str, np.ndarray] = {}
        with _open_h5(path) as f:
            out["time"] = _parse_times(_values(f, vmap["time"]["path"], path)[0])[idx]
            out["latitude"] = _masked(f, vmap["latitude"]["path"], path)[idx]
            out["longitude"] = wrap_longitude(_masked(f, vmap["longitude"]["path"], path)[idx])
            out["xgas"] = self._xgas(f, vmap, gas, path, bias_corrected)[idx]
            spec = vmap["xgas_uncertainty"]
            parts = [_masked(f, p, path) * _factor(gas, _attr_str(f[p], "unit"), spec["gas_units"], path, p)
                     for p in spec["paths"]]  # fmt: skip
            out["xgas_uncertainty"] = np.sqrt(np.sum([q**2 for q in parts], axis=0))[idx]
            self._optional(f, vmap, gas, idx, out, path)
        out["quality_flag"] = plan.extra["bad"][idx].astype(np.int8)
        return self._levels(out)

    def _optional(self, f: h5py.File, vmap: dict[str, Any], gas: str, idx: np.ndarray,
                  out: dict[str, np.ndarray], path: str) -> None:  # fmt: skip
        for name in ("averaging_kernel", "profile_apriori", "pressure", "pressure_weight",
                     "surface_pressure", "solar_zenith_angle"):  # fmt: skip
            spec = vmap[name]
            if spec["path"] not in f:
                continue
            vals = _masked(f, spec["path"], path)[idx]
            if "gas_units" in spec:
                vals = vals * _factor(gas, _attr_str(f[spec["path"]], "unit"), spec["gas_units"], path, spec["path"])
            if spec.get("layers") and vals.ndim == 2:
                vals = 0.5 * (vals[:, :-1] + vals[:, 1:])
            out[name] = vals
        lf = vmap["land_fraction"]["path"]
        if lf in f:
            out["surface_type"] = (_masked(f, lf, path)[idx] < 50.0).astype(np.int8)  # INF: water = glint mode
        ids = self._ids(f, vmap, path)
        if ids is not None:
            out["sounding_id"] = ids[idx]

    @staticmethod
    def _levels(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        p = out.get("pressure")
        if p is not None and p.shape[1] > 1 and np.nanmedian(p[:, 0] - p[:, -1]) < 0:
            for name in ("averaging_kernel", "profile_apriori", "pressure", "pressure_weight"):
                if name in out:
                    out[name] = out[name][:, ::-1]
        if "pressure_weight" not in out and p is not None:
            out["pressure_weight"] = trapezoid_weights(out["pressure"])
        for name in ("averaging_kernel", "profile_apriori", "pressure", "pressure_weight"):
            if name in out:
                out[name] = out[name].astype(np.float32)
        if "profile_apriori" in out and "pressure_weight" in out:
            out["xgas_apriori"] = np.nansum(out["pressure_weight"].astype(np.float64) * out["profile_apriori"], axis=1)
        return out


class NiesGosatReader(_NiesBase):
    """NIES GOSAT TANSO-FTS SWIR L2 (C01S XCO2, C02S XCH4 in ppm), HDF5; see the module docstring."""

    name = "nies_gosat_l2"
    description = "NIES GOSAT TANSO-FTS SWIR L2 XCO2/XCH4 (C01S/C02S), HDF5 [layout from reader code, unverified]"
    gases = ("CO2", "CH4")
    filename_patterns = (r"GOSATTFTS\d{8}_02C0[12]SV\d{4}R\d{6}GU000\.h5",)
    screen = "no product flag (NIES pre-screens); soundings with fill values dropped"
    product = "NIES GOSAT TANSO-FTS SWIR L2"
    variable_map: ClassVar[dict[str, dict[str, Any]]] = NIES_GOSAT_VARIABLES

    def sniff(self, summary: FileSummary) -> bool:
        """GOSAT L2: ``Global/metadata/sensorName`` etc., or the mixing-ratio group."""
        v = summary.variables
        return ("Data/mixingRatio/XCO2" in v or "Data/mixingRatio/XCH4" in v) and "scanAttribute/time" in v


class NiesGosat2Reader(_NiesBase):
    """NIES GOSAT-2 TANSO-FTS-2 L2 (SWFP) XCO2/XCH4, HDF5; layout unverified (3P)."""

    name = "nies_gosat2_l2"
    description = "NIES GOSAT-2 TANSO-FTS-2 L2 XCO2/XCH4 (SWFP), HDF5 [third-party layout, unverified]"
    gases = ("CO2", "CH4")
    filename_patterns = (r"GOSAT2TFTS2\d{8}_02(SWPR|SWFP)V\d{10}\.h5",)
    screen = "x{gas}_quality_flag == 0 and a valid gas value"
    product = "NIES GOSAT-2 TANSO-FTS-2 L2"
    variable_map: ClassVar[dict[str, dict[str, Any]]] = NIES_GOSAT2_VARIABLES

    def sniff(self, summary: FileSummary) -> bool:
        """GOSAT-2 L2: ``SoundingGeometry`` + ``RetrievalResult`` groups."""
        v = summary.variables
        return "SoundingGeometry/latitude" in v and ("RetrievalResult/xco2" in v or "RetrievalResult/xch4" in v)
