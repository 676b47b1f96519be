"""NIES GOSAT TANSO-FTS SWIR L2 (C01S CO2, C02S CH4) and GOSAT-2 TANSO-FTS-2 L2 (SWFP), HDF5.

Both are plain HDF5, not CF netCDF: per-dataset attributes ``unit``, ``longName``,
``invalidValue`` (a number) and ``validRange``; metadata as string datasets. They are
read through the same cached h5py handle as the netCDF-4 products
(:func:`gosat_pipeline.io._common.cached_nc`). The layouts are data
(:data:`NIES_GOSAT_VARIABLES`, :data:`NIES_GOSAT2_VARIABLES`): a correction is a table edit.

GOSAT (checked on the real V02.80 CO2 files in ``shared/real_samples/nies_gosat``)
------------------------------------------------------------------------------------
- ``Global/metadata/productVersion`` (``V02.80``), ``productCode`` (``C01S`` CO2,
  ``C02S`` CH4); ``scanAttribute/time`` is ``YYYY-MM-DD hh:mm:ss.sss`` UTC; the daily
  file's day is ``Global/MD_Metadata/.../EX_TemporalExtent/extent/beginEnd/{begin,end}``
  (else the file name). A sounding time outside that day is a :class:`GranuleError`
  naming ``scanAttribute/time``.
- Units come from each dataset's ``unit`` attribute (``ppmv`` in the files; ppm
  assumed when absent, as HARP does for both gases; CH4 is converted to ppb).
  Fills: ``invalidValue`` (-9999 for mixing ratios, -1e30 for columns) and any value
  <= -9999.
- **No quality flag**: the general-user file holds only retrievals that passed the NIES
  screening (``totalPostScreeningResult`` is 0 for every sounding of the samples), so the
  product screen drops only soundings without a valid gas value.
- **No bias-corrected XCO2** in V02.80 (``XCO2BiasCorrected`` is read when a version has it);
  its absence is recorded in the attribute ``components_left_out``.
- **Uncertainty** :math:`\\sigma = \\sqrt{\\sum_k \\sigma_k^2}` over the error components
  (``X{gas}ExternalError``, ``InterferenceError``, ``RetrievalNoise``, ``SmoothingError``)
  *that hold values*: ``XCO2ExternalError`` is all fill (-9999) in V02.80, and a
  root-sum-square over it would make every uncertainty NaN. A component that is fill for
  every sounding of a file is left out; per sounding, a component that is fill there is
  skipped. The components used and those left out (and why) go into the attributes
  ``xgas_uncertainty_components`` and ``components_left_out``; a file in which no
  component holds a value is a :class:`GranuleError` naming the components.
- **Vertical grid.** The 15-layer arrays (``columnAveragingKernel``,
  ``referenceData/{gas}Profile``, ``referenceData/dryAirPartialColumn``) are stored **top
  of atmosphere first** (the first a-priori CO2 layer is stratospheric, ~395 ppm; the last
  is the surface layer) and are flipped here, all together, to surface first. The file
  stores no per-sounding pressure grid and no pressure weighting function. The weights are
  the dry-air mass fractions of the layers,

  .. math:: h_j = d_j / \\sum_k d_k,

  with :math:`d_j` = ``dryAirPartialColumn`` (this reproduces the file's own a-priori
  column ``referenceData/XCO2`` = :math:`\\sum_j h_j x_{a,j}` to 2e-5 ppm on every
  sounding of the samples). The layer pressures are those of the same dry-air-mass
  coordinate, anchored at the a-priori surface pressure :math:`p_s`
  (``referenceData/surfacePressure``, the pressure the dry-air columns were computed
  for: :math:`\\sum_j d_j` is its hydrostatic column within 0.5 %): edges
  :math:`p_k = p_s (1 - \\sum_{j<k} h_j)` from the surface (k = 0) to the top
  (:math:`p_{15} = 0`), ``pressure`` = layer mid-points. The 15 layers are nearly equal
  in dry-air mass, i.e. about :math:`p_s/15` thick each. The 21 reference levels
  ``ancillary/FTSL2DataInformation/prsRefLevel`` (1000 -> 10 hPa, surface first) are the
  grid of the 21-value temperature and water-vapour profiles, not of the 15 layers; the
  reader records them in the attribute ``reference_pressure_levels_hPa``. Where a
  version stores a pressure grid (``referenceData/pressure``) or weights, those are used
  and the order is read from the pressures themselves.
- ``xgas_apriori`` :math:`= \\sum_j h_j x_{a,j}` (Connor et al. 2008; the generic Form 1
  of L2_FORMATS.md). ``surface_type`` = ``scanAttribute/sensor/sunglintModeFlag``
  (1 = ocean glint; all glint soundings of the samples have land fraction 0), else
  ``landFraction < 50`` %. ``sounding_id`` = ``scanAttribute/scanID``.

GOSAT-2 (TANSO-FTS-2) SWFP: **unverified layout** (third-party readers, L2_FORMATS.md c.2)
--------------------------------------------------------------------------------------------
``SoundingGeometry``, ``SoundingAttribute``, ``RetrievalResult`` groups; a quality flag
``x{gas}_quality_flag`` (0 = good, the product screen); per-sounding level edges
``RetrievalResult/pressure_level`` (16) for 15-layer arrays. The level order is read from
the pressures (flipped together when top-first); the weights are the layers' pressure
thickness over the column, :math:`h_j = \\Delta p_j / (p_0 - p_{15})`, when no weights are
stored; without any pressure grid the level arrays are left out (recorded), since their
order cannot be told. The uncertainty follows the same component rule (one component).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io._common import (
    NcHandle,
    _has,
    cached_nc,
    check_gas,
    check_time_coverage,
    get_var,
    plan_from_flags,
    read_raw,
    wrap_longitude,
)
from gosat_pipeline.io._registry import FileSummary, GranulePlan, GranuleReader

__all__ = [
    "NiesGosatReader",
    "NiesGosat2Reader",
    "NIES_GOSAT_VARIABLES",
    "NIES_GOSAT2_VARIABLES",
    "dry_air_layers",
    "uncertainty_from_components",
]

logger = logging.getLogger(__name__)

_UNIT_FACTORS = {
    ("CO2", "ppm"): 1.0,
    ("CO2", "ppmv"): 1.0,
    ("CO2", "1e-6"): 1.0,
    ("CO2", "ppb"): 1e-3,
    ("CO2", "ppbv"): 1e-3,
    ("CH4", "ppb"): 1.0,
    ("CH4", "ppbv"): 1.0,
    ("CH4", "1e-9"): 1.0,
    ("CH4", "ppm"): 1e3,
    ("CH4", "ppmv"): 1e3,
    ("CH4", "1e-6"): 1e3,
}
_PRESSURE_FACTORS = {"hpa": 1.0, "mb": 1.0, "mbar": 1.0, "pa": 0.01}

_ERROR_COMPONENTS = ("ExternalError", "InterferenceError", "RetrievalNoise", "SmoothingError")
_EXTENT = "Global/MD_Metadata/identificationInfo/MD_DataIdentification/extent/temporalElement/EX_TemporalExtent/extent/"


def _gosat_map(gas: str) -> dict[str, Any]:
    g = gas.upper()
    return {
        "time": "scanAttribute/time",  # FILE
        "latitude": "Data/geolocation/latitude",  # FILE
        "longitude": "Data/geolocation/longitude",  # FILE
        "xgas": f"Data/mixingRatio/X{g}",  # FILE (unit "ppmv")
        "xgas_bc": f"Data/mixingRatio/X{g}BiasCorrected",  # CODE xtralite; absent in V02.80 [FILE]
        "uncertainty": [f"Data/mixingRatio/X{g}{e}" for e in _ERROR_COMPONENTS],  # FILE
        "averaging_kernel": "Data/retrievalQuality/columnAveragingKernel",  # FILE, 15 layers, top first
        "profile_apriori": f"scanAttribute/referenceData/{g}Profile",  # FILE (CO2Profile), top first
        "dry_air": "scanAttribute/referenceData/dryAirPartialColumn",  # FILE, molecules cm-2, top first
        "pressure": "scanAttribute/referenceData/pressure",  # not in V02.80 [FILE]; used when a version has it
        "pressure_is_edges": False,
        "pressure_weight": "Data/retrievalQuality/pressureWeightingFunction",  # not in V02.80 [FILE]
        "surface_pressure": [
            "scanAttribute/referenceData/surfacePressure",  # FILE, the a-priori grid's
            "Data/auxiliaryParameter/surfacePressure",
        ],  # FILE, retrieved
        "solar_zenith_angle": "Data/geolocation/solarZenith",  # FILE
        "glint_flag": "scanAttribute/sensor/sunglintModeFlag",  # FILE, 1 = glint
        "land_fraction": "Data/geolocation/landFraction",  # FILE, percent
        "sounding_id": "scanAttribute/scanID",  # FILE
        "flag": None,  # no product flag [FILE]
        "reference_levels": "ancillary/FTSL2DataInformation/prsRefLevel",  # FILE, 21 levels 1000 -> 10 hPa
        "layer_order": "toa_first",  # FILE (a-priori CO2: stratospheric first layer)
        "gas_units": "ppm",  # CODE HARP, FILE ("ppmv")
        "version": "Global/metadata/productVersion",  # FILE
        "product_code": "Global/metadata/productCode",  # FILE
        "coverage": (_EXTENT + "beginEnd/begin", _EXTENT + "beginEnd/end"),  # FILE (dates)
    }


def _gosat2_map(gas: str) -> dict[str, Any]:
    g = gas.lower()
    unit = {"CO2": "ppm", "CH4": "ppb"}[gas]
    return {
        "time": "SoundingAttribute/observationTime",  # 3P
        "latitude": "SoundingGeometry/latitude",  # CODE pynadc
        "longitude": "SoundingGeometry/longitude",
        "xgas": f"RetrievalResult/x{g}",  # 3P
        "xgas_bc": None,
        "uncertainty": [f"RetrievalResult/x{g}_uncertainty"],  # 3P
        "averaging_kernel": f"RetrievalResult/x{g}_column_averaging_kernel",  # 3P (15 layers)
        "profile_apriori": f"RetrievalResult/{g}_profile_apriori",  # INF
        "dry_air": None,
        "pressure": "RetrievalResult/pressure_level",  # 3P (16 level edges)
        "pressure_is_edges": True,
        "pressure_weight": "RetrievalResult/pressure_weight",  # INF
        "surface_pressure": ["RetrievalResult/surface_pressure"],  # 3P
        "solar_zenith_angle": "SoundingGeometry/solarZenith",  # 3P
        "glint_flag": None,
        "land_fraction": "SoundingGeometry/landFraction",  # CODE pynadc
        "sounding_id": "SoundingAttribute/soundingUniqueID",  # 3P
        "flag": f"RetrievalResult/x{g}_quality_flag",  # 3P, 0 = good
        "reference_levels": None,
        "layer_order": None,  # unknown: read from the pressure grid, never assumed
        "gas_units": unit,
        "version": "Metadata/algorithmVersion",  # CODE pynadc
        "product_code": None,
        "coverage": ("Metadata/startDate", "Metadata/endDate"),  # CODE pynadc (format unverified)
    }


#: GOSAT TANSO-FTS SWIR L2 layout per gas (C01S CO2 verified on V02.80 files; C02S CH4 by analogy).
NIES_GOSAT_VARIABLES: dict[str, dict[str, Any]] = {"CO2": _gosat_map("CO2"), "CH4": _gosat_map("CH4")}
#: GOSAT-2 TANSO-FTS-2 L2 (SWFP) layout per gas [3P, unverified].
NIES_GOSAT2_VARIABLES: dict[str, dict[str, Any]] = {"CO2": _gosat2_map("CO2"), "CH4": _gosat2_map("CH4")}

_LEVEL_NAMES = ("averaging_kernel", "profile_apriori", "pressure", "pressure_weight")


# -- numerics (pure functions on arrays) ---------------------------------------------------------
def uncertainty_from_components(parts: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Root-sum-square of the error components that hold values.

    .. math:: \\sigma_i = \\sqrt{\\sum_{k \\in V_i} \\sigma_{k,i}^2}

    where :math:`V_i` are the components valid (finite) for sounding ``i`` among those
    valid for at least one sounding of the file; :math:`\\sigma_i` is NaN when no
    component is valid for sounding ``i``.

    Parameters
    ----------
    parts : dict
        Component name -> values (sounding,), NaN for fill, canonical units.

    Returns
    -------
    sigma : numpy.ndarray
        (sounding,) float64.
    used : list of str
        Components valid for at least one sounding.
    left_out : dict
        Component -> why it was left out or only partly used.
    """
    used: list[str] = []
    left_out: dict[str, str] = {}
    n = next(iter(parts.values())).size if parts else 0
    total = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    for name, values in parts.items():
        ok = np.isfinite(values)
        if n and not ok.any():
            left_out[name] = "every value is a fill value: not used in xgas_uncertainty"
            continue
        used.append(name)
        if not ok.all():
            left_out[name] = "fill for some soundings: their xgas_uncertainty uses the other components"
        total += np.where(ok, values, 0.0) ** 2
        count += ok
    with np.errstate(invalid="ignore"):
        sigma = np.where(count > 0, np.sqrt(total), np.nan)
    return sigma, used, left_out


def dry_air_layers(dry_air: np.ndarray, surface_pressure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pressure weights and layer mid-pressures of a surface-first grid of dry-air partial columns.

    .. math:: h_j = d_j / \\sum_k d_k, \\qquad p_k = p_s \\Big(1 - \\sum_{j<k} h_j\\Big),
              \\qquad \\bar p_j = (p_j + p_{j+1}) / 2

    i.e. the hydrostatic dry-air-mass coordinate (pressure for a dry atmosphere under
    constant gravity) anchored at the surface pressure, with the top edge at 0.

    Parameters
    ----------
    dry_air : numpy.ndarray
        (sounding, layer) dry-air partial columns, surface first, any unit.
    surface_pressure : numpy.ndarray
        (sounding,) hPa.

    Returns
    -------
    h, p_mid : numpy.ndarray
        (sounding, layer) weights (rows sum to 1) and mid-pressures (hPa).
    """
    d = np.asarray(dry_air, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = d / d.sum(axis=1, keepdims=True)
    below = np.cumsum(h, axis=1) - h  # fraction of the column below each layer's lower edge
    ps = np.asarray(surface_pressure, dtype=np.float64)[:, None]
    p_mid = ps * (1.0 - below - 0.5 * h)
    return h, p_mid


def _edge_layers(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights :math:`\\Delta p_j / (p_0 - p_L)` and mid-pressures of surface-first level edges (hPa)."""
    dp = edges[:, :-1] - edges[:, 1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        h = dp / (edges[:, :1] - edges[:, -1:])
    return h, 0.5 * (edges[:, :-1] + edges[:, 1:])


def _trapezoid(p: np.ndarray) -> np.ndarray:
    """Pressure weights of surface-first levels: trapezoid rule, rows sum to 1."""
    dp = -np.diff(p, axis=1)
    h = np.zeros_like(p)
    h[:, :-1] += 0.5 * dp
    h[:, 1:] += 0.5 * dp
    with np.errstate(invalid="ignore", divide="ignore"):
        return h / h.sum(axis=1, keepdims=True)


# -- file access ------------------------------------------------------------------------------------
def _attr(ds: NcHandle, vpath: str, key: str) -> Any:
    var = ds[vpath]
    return var.getncattr(key) if key in var.ncattrs() else None


def _text(value: Any) -> str:
    a = np.asarray(value).reshape(-1)
    if a.size == 0:
        return ""
    v = a[0]
    return v.decode("utf-8", "replace").strip() if isinstance(v, bytes) else str(v).strip()


def _masked(ds: NcHandle, vpath: str, path: str) -> np.ndarray:
    """float64 values with ``invalidValue`` and anything <= -9999 as NaN."""
    var = get_var(ds, vpath, path)
    raw = read_raw(var, path)
    out = raw.astype(np.float64)
    inv = _attr(ds, vpath, "invalidValue")
    if inv is not None:
        try:
            fill = float(_text(inv)) if np.asarray(inv).dtype.kind in "SUO" else float(np.asarray(inv).reshape(-1)[0])
        except ValueError:
            logger.debug("%s: %s invalidValue %r is not a number", path, vpath, inv)
        else:
            out[raw == np.asarray(fill).astype(raw.dtype)] = np.nan
    out[out <= -9999.0] = np.nan
    return out


def _gas_factor(gas: str, unit: Any, default: str, path: str, vpath: str) -> float:
    u = (_text(unit) if unit is not None else default).lower()
    if (gas, u) not in _UNIT_FACTORS:
        raise GranuleError(path, f"variable {vpath!r}: unit {u!r} not understood for {gas}; expected ppm(v) or ppb(v)")
    return _UNIT_FACTORS[(gas, u)]


def _pressure_factor(unit: Any, path: str, vpath: str) -> float:
    u = _text(unit).lower() if unit is not None else "hpa"
    if u not in _PRESSURE_FACTORS:
        raise GranuleError(path, f"variable {vpath!r}: pressure unit {u!r} not understood; expected hPa or Pa")
    return _PRESSURE_FACTORS[u]


def _parse_times(raw: np.ndarray) -> np.ndarray:
    strs = [s.decode("ascii", "replace") if isinstance(s, bytes) else str(s) for s in np.asarray(raw).reshape(-1)]
    strs = [s.strip().rstrip("Z").replace("T", " ") for s in strs]
    return pd.to_datetime(pd.Series(strs, dtype=object), format="%Y-%m-%d %H:%M:%S.%f", errors="coerce").to_numpy(
        "datetime64[ns]"
    )


def _day(value: Any) -> pd.Timestamp | None:
    s = _text(value)
    m = re.search(r"(\d{4})-?(\d{2})-?(\d{2})", s)
    if not m:
        return None
    try:
        return pd.Timestamp(f"{m.group(1)}-{m.group(2)}-{m.group(3)}")
    except ValueError:
        return None


class _NiesBase(GranuleReader):
    variable_map: ClassVar[dict[str, dict[str, Any]]] = {}
    product: ClassVar[str] = ""
    name_day: ClassVar[str] = r"(\d{8})_02"

    # -- scan ---------------------------------------------------------------------------------------
    def file_gas(self, ds: NcHandle, path: str) -> str:
        """The gas whose mixing-ratio dataset the file holds (product code first, where there is one)."""
        for gas, vmap in self.variable_map.items():
            code = vmap["product_code"]
            if code and _has(ds, code) and _text(read_raw(ds[code], path)) in ("C01S", "C02S"):
                want = {"C01S": "CO2", "C02S": "CH4"}[_text(read_raw(ds[code], path))]
                if want == gas and _has(ds, vmap["xgas"]):
                    return gas
        for gas, vmap in self.variable_map.items():
            if _has(ds, vmap["xgas"]):
                return gas
        wanted = [m["xgas"] for m in self.variable_map.values()]
        raise GranuleError(path, f"missing variable: none of {wanted} is present ({self.name} layout)")

    def product_version(self, ds: NcHandle, path: str) -> str:
        """``Global/metadata/productVersion`` (GOSAT) or ``Metadata/algorithmVersion``, else the file name."""
        vpath = next(iter(self.variable_map.values()))["version"]
        if vpath and _has(ds, vpath):
            v = _text(read_raw(ds[vpath], path))
            if v:
                return v
        m = re.search(r"V(\d{4,10})", Path(path).name)
        return m.group(1) if m else "unknown"

    def coverage(self, ds: NcHandle, vmap: dict[str, Any], path: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """The file's UTC days [first day 00:00, last day + 1 day) from its metadata, else its name."""
        begin_path, end_path = vmap["coverage"]
        if _has(ds, begin_path) and _has(ds, end_path):
            b, e = _day(read_raw(ds[begin_path], path)), _day(read_raw(ds[end_path], path))
            if b is not None and e is not None:
                return b, e + pd.Timedelta(days=1)
        m = re.search(self.name_day, Path(path).name)
        if m:
            b = _day(m.group(1))
            if b is not None:
                return b, b + pd.Timedelta(days=1)
        return None

    def scan(self, path: str, *, gas: str | None, screen: bool) -> GranulePlan:
        """Check variables, units, times and uncertainty components; plan the soundings."""
        with cached_nc(path) as ds:
            found = check_gas(path, self.file_gas(ds, path), gas)
            vmap = self.variable_map[found]
            required = [vmap[k] for k in ("time", "latitude", "longitude", "xgas")]
            if vmap["flag"]:
                required.append(vmap["flag"])
            missing = [p for p in required if not _has(ds, p)]
            present = [p for p in vmap["uncertainty"] if _has(ds, p)]
            if not present:
                missing.append(" or ".join(vmap["uncertainty"]))
            if missing:
                raise GranuleError(path, f"missing variable(s) {missing} required by the {self.name} reader")
            self._check_units(ds, vmap, found, path)
            bc = vmap["xgas_bc"] if vmap["xgas_bc"] and _has(ds, vmap["xgas_bc"]) else None
            xpath = bc or vmap["xgas"]
            xgas = self._xgas(ds, vmap, found, path, xpath)
            n = xgas.size
            bad = np.zeros(n, dtype=bool)
            if vmap["flag"]:
                bad = ~(_masked(ds, vmap["flag"], path) == 0)
            _, used, left = self._uncertainty(ds, vmap, found, path, present)
            if n and not used:
                raise GranuleError(
                    path,
                    f"no uncertainty component holds a value: every value of {present} is a "
                    "fill value; xgas_uncertainty cannot be built",
                )
            times = _parse_times(read_raw(get_var(ds, vmap["time"], path), path))
            if times.size != n:
                raise GranuleError(path, f"variable {vmap['time']!r} has {times.size} values for {n} soundings")
            window = self.coverage(ds, vmap, path)
            if window is not None:
                check_time_coverage(
                    path,
                    times[np.isfinite(xgas)],
                    window[0],
                    window[1],
                    vmap["time"],
                    "the file's day (metadata or name)",
                )
            levels = self._level_plan(ds, vmap, path)
            left_out = [f"{p}: {why}" for p, why in left.items()]
            left_out += [f"{p}: absent" for p in vmap["uncertainty"] if p not in present]
            if vmap["xgas_bc"] and not bc:
                left_out.append(
                    f"{vmap['xgas_bc']}: not in this product version; xgas is {vmap['xgas']} as "
                    "released (no bias correction applied)"
                )
            left_out += levels["left_out"]
            attrs = {
                "product": self.product,
                "product_version": self.product_version(ds, path),
                "reader": self.name,
                "xgas_uncertainty_components": " ".join(used),
                "components_left_out": left_out,
                "vertical_grid": levels["description"],
            }
            ref = vmap["reference_levels"]
            if ref and _has(ds, ref):
                attrs["reference_pressure_levels_hPa"] = " ".join(f"{v:g}" for v in _masked(ds, ref, path))
            variables = self._variables(ds, vmap, levels)
            ids = self._ids(ds, vmap, path)
        plan = plan_from_flags(
            path,
            found,
            xgas,
            bad,
            screen=screen,
            n_levels=levels["n_levels"],
            attrs=attrs,
            ids=ids,
            variable=xpath,
            extra={"levels": levels, "xgas_path": xpath, "uncertainty": present},
        )
        plan.variables = variables
        return plan

    def _xgas(self, ds: NcHandle, vmap: dict[str, Any], gas: str, path: str, vpath: str) -> np.ndarray:
        return _masked(ds, vpath, path) * _gas_factor(gas, _attr(ds, vpath, "unit"), vmap["gas_units"], path, vpath)

    def _uncertainty(
        self, ds: NcHandle, vmap: dict[str, Any], gas: str, path: str, present: list[str]
    ) -> tuple[np.ndarray, list[str], dict[str, str]]:
        parts = {
            p: _masked(ds, p, path) * _gas_factor(gas, _attr(ds, p, "unit"), vmap["gas_units"], path, p)
            for p in present
        }
        return uncertainty_from_components(parts)

    @staticmethod
    def _check_units(ds: NcHandle, vmap: dict[str, Any], gas: str, path: str) -> None:
        """Every unit ``read`` converts must be understood (GranuleError here, where a batch can skip)."""
        for p in [vmap["xgas"], vmap["xgas_bc"], *vmap["uncertainty"], vmap["profile_apriori"]]:
            if p and _has(ds, p):
                _gas_factor(gas, _attr(ds, p, "unit"), vmap["gas_units"], path, p)
        for p in [vmap["pressure"], *vmap["surface_pressure"]]:
            if p and _has(ds, p):
                _pressure_factor(_attr(ds, p, "unit"), path, p)

    def _level_plan(self, ds: NcHandle, vmap: dict[str, Any], path: str) -> dict[str, Any]:  # noqa: C901 - one branch per layout variant of the NIES products
        """Which level arrays exist, their order in the file and how weights and pressures are made."""
        have = {
            k: vmap[k]
            for k in ("averaging_kernel", "profile_apriori", "dry_air", "pressure", "pressure_weight")
            if vmap[k] and _has(ds, vmap[k])
        }
        sp = next((p for p in vmap["surface_pressure"] if _has(ds, p)), None)
        out: dict[str, Any] = {"have": have, "surface_pressure": sp, "left_out": [], "n_levels": 0, "order": None}
        layered = [k for k in ("averaging_kernel", "profile_apriori", "dry_air", "pressure_weight") if k in have]
        if not layered:
            out["description"] = "no level arrays in the file"
            return out
        widths = {k: int(ds[have[k]].shape[-1]) if len(ds[have[k]].shape) == 2 else -1 for k in layered}
        n_levels = widths[layered[0]]
        if any(w != n_levels for w in widths.values()) or n_levels < 1:
            raise GranuleError(
                path, f"level arrays disagree on the number of levels: { {have[k]: w for k, w in widths.items()} }"
            )
        if "pressure" in have:
            p = _masked(ds, have["pressure"], path)
            want = n_levels + 1 if vmap["pressure_is_edges"] else n_levels
            if p.ndim != 2 or p.shape[1] != want:
                raise GranuleError(
                    path,
                    f"variable {have['pressure']!r} has shape {p.shape}; expected (n, {want}) for {n_levels} layers",
                )
            med = np.nanmedian(p[:, 0] - p[:, -1]) if np.isfinite(p).any() else np.nan
            if not np.isfinite(med) or med == 0:
                raise GranuleError(
                    path,
                    f"variable {have['pressure']!r}: cannot tell the level order (no valid "
                    "pressure difference between the first and last level)",
                )
            out["order"] = "surface_first" if med > 0 else "toa_first"
            how = f"levels from {have['pressure']} ({out['order'].replace('_', ' ')} in the file)"
        elif vmap["layer_order"]:
            out["order"] = vmap["layer_order"]
            how = f"{n_levels} layers stored {out['order'].replace('_', ' ')} (product documentation)"
        else:
            names = [have[k] for k in layered]
            out["left_out"].append(
                f"{', '.join(names)}: no pressure grid in the file to tell the order of the "
                "levels; level arrays not returned"
            )
            out["description"] = "level arrays left out (order unknown)"
            out["have"] = {}
            return out
        out["n_levels"] = n_levels
        if "pressure_weight" in have:
            how += f"; weights {have['pressure_weight']}"
        elif "dry_air" in have:
            how += f"; weights h_j = d_j / sum(d) from {have['dry_air']}"
        elif "pressure" in have:
            how += "; weights from the pressure grid"
        else:
            out["left_out"].append("pressure_weight: no weights, dry-air columns or pressure grid in the file")
        if "pressure" not in have:
            if "dry_air" in have and sp is not None:
                how += f"; pressures: dry-air-mass coordinate anchored at {sp} (top edge 0 hPa)"
            else:
                out["left_out"].append("pressure: no pressure grid, and no dry-air columns with a surface pressure")
        out["description"] = how
        return out

    @staticmethod
    def _ids(ds: NcHandle, vmap: dict[str, Any], path: str) -> np.ndarray | None:
        sid = vmap["sounding_id"]
        if not _has(ds, sid):
            return None
        raw = read_raw(ds[sid], path)
        if raw.dtype.kind in "SOU":
            return np.array([s.decode() if isinstance(s, bytes) else str(s) for s in raw.reshape(-1)], dtype=object)
        return raw.astype(np.int64)

    @staticmethod
    def _variables(ds: NcHandle, vmap: dict[str, Any], levels: dict[str, Any]) -> dict[str, str]:  # noqa: C901 - one branch per layout variant of the NIES products
        out = {
            "time": "datetime64[ns]",
            "latitude": "float64",
            "longitude": "float64",
            "xgas": "float64",
            "xgas_uncertainty": "float64",
            "quality_flag": "int8",
        }
        have = levels["have"]
        if levels["n_levels"]:
            for name in ("averaging_kernel", "profile_apriori"):
                if name in have:
                    out[name] = "float32"
            if {"pressure_weight", "dry_air", "pressure"} & set(have):
                out["pressure_weight"] = "float32"
            if "pressure" in have or ("dry_air" in have and levels["surface_pressure"]):
                out["pressure"] = "float32"
            if {"profile_apriori", "pressure_weight"} <= set(out):
                out["xgas_apriori"] = "float64"
        if levels["surface_pressure"]:
            out["surface_pressure"] = "float64"
        if _has(ds, vmap["solar_zenith_angle"]):
            out["solar_zenith_angle"] = "float64"
        if (vmap["glint_flag"] and _has(ds, vmap["glint_flag"])) or (
            vmap["land_fraction"] and _has(ds, vmap["land_fraction"])
        ):
            out["surface_type"] = "int8"
        sid = vmap["sounding_id"]
        if _has(ds, sid):
            out["sounding_id"] = "object" if ds[sid].dtype.kind in "SOU" else "int64"
        return out

    # -- read ---------------------------------------------------------------------------------------
    def read(self, plan: GranulePlan, *, bias_corrected: bool) -> dict[str, np.ndarray]:
        """Canonical arrays of the planned soundings (see the module docstring)."""
        path, gas, idx = plan.path, plan.gas, plan.index
        vmap = self.variable_map[gas]
        levels = plan.extra["levels"]
        out: dict[str, np.ndarray] = {}
        with cached_nc(path) as ds:
            out["time"] = _parse_times(read_raw(get_var(ds, vmap["time"], path), path))[idx]
            out["latitude"] = _masked(ds, vmap["latitude"], path)[idx]
            out["longitude"] = wrap_longitude(_masked(ds, vmap["longitude"], path)[idx])
            xpath = plan.extra["xgas_path"] if bias_corrected else vmap["xgas"]
            out["xgas"] = self._xgas(ds, vmap, gas, path, xpath)[idx]
            out["xgas_uncertainty"] = self._uncertainty(ds, vmap, gas, path, plan.extra["uncertainty"])[0][idx]
            if _has(ds, vmap["solar_zenith_angle"]):
                out["solar_zenith_angle"] = _masked(ds, vmap["solar_zenith_angle"], path)[idx]
            if vmap["glint_flag"] and _has(ds, vmap["glint_flag"]):
                out["surface_type"] = (_masked(ds, vmap["glint_flag"], path)[idx] == 1).astype(np.int8)
            elif vmap["land_fraction"] and _has(ds, vmap["land_fraction"]):
                out["surface_type"] = (_masked(ds, vmap["land_fraction"], path)[idx] < 50.0).astype(np.int8)
            sp = levels["surface_pressure"]
            if sp is not None:
                out["surface_pressure"] = _masked(ds, sp, path)[idx] * _pressure_factor(_attr(ds, sp, "unit"), path, sp)
            if levels["n_levels"]:
                out.update(self._read_levels(ds, vmap, gas, path, idx, levels, out.get("surface_pressure")))
            ids = self._ids(ds, vmap, path)
            if ids is not None:
                out["sounding_id"] = ids[idx]
        out["quality_flag"] = plan.extra["bad"][idx].astype(np.int8)
        return out

    @staticmethod
    def _read_levels(
        ds: NcHandle,
        vmap: dict[str, Any],
        gas: str,
        path: str,
        idx: np.ndarray,
        levels: dict[str, Any],
        ps: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        have = levels["have"]
        arr = {k: _masked(ds, p, path)[idx] for k, p in have.items()}
        if "profile_apriori" in arr:
            p = have["profile_apriori"]
            arr["profile_apriori"] *= _gas_factor(gas, _attr(ds, p, "unit"), vmap["gas_units"], path, p)
        if "pressure" in arr:
            arr["pressure"] *= _pressure_factor(_attr(ds, have["pressure"], "unit"), path, have["pressure"])
        if levels["order"] == "toa_first":  # every level array together
            arr = {k: v[:, ::-1] for k, v in arr.items()}
        out = {name: arr[name] for name in ("averaging_kernel", "profile_apriori") if name in arr}
        out.update(_weights_and_pressures(arr, vmap["pressure_is_edges"], ps))
        if "profile_apriori" in out and "pressure_weight" in out:
            h, xa = out["pressure_weight"], out["profile_apriori"]
            out["xgas_apriori"] = np.sum(h * xa, axis=1)  # Connor et al. (2008): X_a = sum_j h_j x_a,j
        for name in _LEVEL_NAMES:
            if name in out:
                out[name] = out[name].astype(np.float32)
        return out


def _weights_and_pressures(arr: dict[str, np.ndarray], edges: bool, ps: np.ndarray | None) -> dict[str, np.ndarray]:
    """``pressure_weight`` and ``pressure`` from what the file holds (surface-first arrays), in order of preference.

    Weights: stored > dry-air mass fractions > the pressure grid (layer thickness over
    the column for level edges, trapezoid for levels). Pressures: stored (layer
    mid-points of edges) > the dry-air-mass coordinate anchored at ``ps``.
    """
    out: dict[str, np.ndarray] = {}
    h_grid = None
    if "pressure" in arr and edges:
        h_grid, out["pressure"] = _edge_layers(arr["pressure"])
    elif "pressure" in arr:
        out["pressure"] = arr["pressure"]
        h_grid = _trapezoid(arr["pressure"])
    if "pressure_weight" in arr:
        out["pressure_weight"] = arr["pressure_weight"]
    elif "dry_air" in arr:
        out["pressure_weight"] = dry_air_layers(arr["dry_air"], np.zeros(arr["dry_air"].shape[0]))[0]
    elif h_grid is not None:
        out["pressure_weight"] = h_grid
    if "pressure" not in out and "dry_air" in arr and ps is not None:
        out["pressure"] = dry_air_layers(arr["dry_air"], ps)[1]
    return out


class NiesGosatReader(_NiesBase):
    """NIES GOSAT TANSO-FTS SWIR L2 (C01S XCO2, C02S XCH4), HDF5; see the module docstring."""

    name = "nies_gosat_l2"
    description = "NIES GOSAT TANSO-FTS SWIR L2 XCO2/XCH4 (C01S/C02S, V02.xx), HDF5"
    gases = ("CO2", "CH4")
    filename_patterns = (r"GOSATTFTS\d{8}_02C0[12]SV\d{4}R\d{6}GU000\.h5",)
    screen = (
        "no product flag (the general-user file holds NIES-screened retrievals); soundings without a gas value dropped"
    )
    product = "NIES GOSAT TANSO-FTS SWIR L2"
    variable_map: ClassVar[dict[str, dict[str, Any]]] = NIES_GOSAT_VARIABLES
    name_day = r"GOSATTFTS(\d{8})_"

    def sniff(self, summary: FileSummary) -> bool:
        """GOSAT L2: the mixing-ratio group and ``scanAttribute/time``."""
        v = summary.variables
        return ("Data/mixingRatio/XCO2" in v or "Data/mixingRatio/XCH4" in v) and "scanAttribute/time" in v


class NiesGosat2Reader(_NiesBase):
    """NIES GOSAT-2 TANSO-FTS-2 L2 (SWFP) XCO2/XCH4, HDF5; layout from third-party readers (unverified)."""

    name = "nies_gosat2_l2"
    description = "NIES GOSAT-2 TANSO-FTS-2 L2 XCO2/XCH4 (SWFP), HDF5 [third-party layout, unverified]"
    gases = ("CO2", "CH4")
    filename_patterns = (r"GOSAT2TFTS2\d{8}_02(SWPR|SWFP)V\d{10}\.h5",)
    screen = "x{gas}_quality_flag == 0 and a valid gas value"
    product = "NIES GOSAT-2 TANSO-FTS-2 L2"
    variable_map: ClassVar[dict[str, dict[str, Any]]] = NIES_GOSAT2_VARIABLES
    name_day = r"GOSAT2TFTS2(\d{8})_"

    def sniff(self, summary: FileSummary) -> bool:
        """GOSAT-2 L2: ``SoundingGeometry`` + ``RetrievalResult`` groups."""
        v = summary.variables
        return "SoundingGeometry/latitude" in v and ("RetrievalResult/xco2" in v or "RetrievalResult/xch4" in v)
