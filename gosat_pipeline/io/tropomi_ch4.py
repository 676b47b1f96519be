"""Sentinel-5P TROPOMI CH4 L2 (``S5P_*_L2__CH4____*.nc``), partial-column averaging kernel.

Layout verified on a real (subsetted) OFFL v01.02.02 file (L2_FORMATS.md d): groups
``PRODUCT`` and ``PRODUCT/SUPPORT_DATA/{GEOLOCATIONS,DETAILED_RESULTS,INPUT_DATA}``, dims
``(time=1, scanline, ground_pixel)``, 12 ``layer`` profiles stored **top of atmosphere
first** (flipped here, all together, to surface first), CF ``_FillValue`` 9.96921e36,
``qa_value`` uint8 with ``scale_factor = 0.01`` (decoded before comparing).

A *sounding* is a pixel with a methane retrieval (``methane_mixing_ratio`` not fill);
pixels without one are not soundings, so ``screen=False`` returns every retrieved pixel.
Recommended screen (``screen=True``): ``qa_value >= 0.5`` (the product's own comment).
``bias_corrected=True`` reads ``methane_mixing_ratio_bias_corrected`` (its "known to be
empty" comment is stale: it holds data); ``False`` reads ``methane_mixing_ratio``.

Averaging kernel on the canonical ``level`` (= layer) grid. TROPOMI applies the
partial-column form (Hasekamp et al. 2019, ATBD eq. 46; IMI ``apply_averaging_kernel``)

.. math:: X = \\frac{\\sum_i [c_{a,i} + A_i (x_i d_i - c_{a,i})]}{\\sum_i d_i}

with a-priori partial columns :math:`c_{a,i}` and dry-air sub-columns :math:`d_i`
(mol m-2). The reader expresses it in the generic form used for every product,

.. math:: X = X_a + \\sum_i h_i a_i (x_i - x_{a,i}),

with ``pressure_weight`` :math:`h_i = d_i / \\sum_j d_j`, ``averaging_kernel``
:math:`a_i = A_i`, ``profile_apriori`` :math:`x_{a,i} = 10^9 c_{a,i} / d_i` (ppb) and
``xgas_apriori`` :math:`X_a = 10^9 \\sum_i c_{a,i} / \\sum_i d_i`; the two are identical
term by term. ``pressure`` is the layer mid-pressure of the equidistant grid
:math:`p_k = p_s - k \\Delta p` (k = 0 at the surface), in hPa. ``surface_type`` is 1
for water pixels (``surface_classification & 3 == 1``; TROPOMI has no glint mode), else 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io._common import (
    NcHandle,
    _attrs,
    _has,
    cached_nc,
    cf_time,
    check_gas,
    check_time_coverage,
    get_var,
    mask_fill,
    plan_from_flags,
    read_raw,
    wrap_longitude,
)
from gosat_pipeline.io._registry import FileSummary, GranulePlan, GranuleReader

__all__ = ["TropomiCh4Reader", "TROPOMI_VARIABLES"]

_P = "PRODUCT/"
_G = "PRODUCT/SUPPORT_DATA/GEOLOCATIONS/"
_D = "PRODUCT/SUPPORT_DATA/DETAILED_RESULTS/"
_I = "PRODUCT/SUPPORT_DATA/INPUT_DATA/"

#: role -> path in the file (verified on the real sample).
TROPOMI_VARIABLES: dict[str, str] = {
    "latitude": _P + "latitude",
    "longitude": _P + "longitude",
    "time": _P + "time",
    "delta_time": _P + "delta_time",
    "time_utc": _P + "time_utc",
    "qa_value": _P + "qa_value",
    "xgas_raw": _P + "methane_mixing_ratio",
    "xgas_bc": _P + "methane_mixing_ratio_bias_corrected",
    "xgas_uncertainty": _P + "methane_mixing_ratio_precision",
    "averaging_kernel": _D + "column_averaging_kernel",
    "apriori_subcolumns": _I + "methane_profile_apriori",
    "dry_air_subcolumns": _I + "dry_air_subcolumns",
    "surface_pressure": _I + "surface_pressure",
    "pressure_interval": _I + "pressure_interval",
    "solar_zenith_angle": _G + "solar_zenith_angle",
    "surface_classification": _I + "surface_classification",
}
_OPTIONAL = {"xgas_bc", "solar_zenith_angle", "surface_classification", "time_utc"}


def _field(ds: NcHandle, role: str, path: str) -> np.ndarray:
    var = get_var(ds, TROPOMI_VARIABLES[role], path)
    return mask_fill(read_raw(var, path), _attrs(var), None)


class TropomiCh4Reader(GranuleReader):
    """Sentinel-5P TROPOMI CH4 L2; see the module docstring for the AK form."""

    name = "tropomi_ch4"
    description = "Sentinel-5P TROPOMI CH4 L2 (OFFL/RPRO/NRTI), netCDF-4 groups, partial-column AK"
    gases = ("CH4",)
    filename_patterns = (
        r"S5P_(OFFL|RPRO|NRTI)_L2__CH4____\d{8}T\d{6}_\d{8}T\d{6}_\d{5}_\d{2}_\d{6}_\d{8}T\d{6}"
        r"(\.SUB)?\.nc4?",
    )
    screen = "qa_value >= 0.5 (decoded) and a valid methane value"

    def sniff(self, summary: FileSummary) -> bool:
        """TROPOMI CH4: ``PRODUCT/methane_mixing_ratio`` and ``PRODUCT/qa_value``."""
        return {TROPOMI_VARIABLES["xgas_raw"], TROPOMI_VARIABLES["qa_value"]} <= summary.variables

    def scan(self, path: str, *, gas: str | None, screen: bool) -> GranulePlan:
        """Check the variables; soundings = retrieved pixels; flag = qa_value < 0.5."""
        with cached_nc(path) as ds:
            try:
                ds[TROPOMI_VARIABLES["xgas_raw"]]
            except (KeyError, IndexError):
                raise GranuleError(path, f"missing variable {TROPOMI_VARIABLES['xgas_raw']!r}") from None
            found = check_gas(path, "CH4", gas)
            missing = [p for r, p in TROPOMI_VARIABLES.items() if r not in _OPTIONAL and not _has(ds, p)]
            if missing:
                raise GranuleError(path, f"missing variable(s) {missing} required by the {self.name} reader")
            raw = _field(ds, "xgas_raw", path).reshape(-1)
            cand = np.flatnonzero(np.isfinite(raw))
            if raw.size and cand.size == 0:
                raise GranuleError(
                    path,
                    f"all {raw.size} pixels are fill values or NaN (no methane retrieval in "
                    f"{TROPOMI_VARIABLES['xgas_raw']!r})",
                )
            qa = _field(ds, "qa_value", path).reshape(-1)[cand]
            bad = ~(qa >= 0.5)
            n_levels = int(get_var(ds, TROPOMI_VARIABLES["averaging_kernel"], path).shape[-1])
            attrs = {
                "product": "S5P TROPOMI CH4 L2",
                "reader": self.name,
                "product_version": str(ds.getncattr("processor_version"))
                if "processor_version" in ds.ncattrs()
                else _version_from_name(path),
            }
            orbit = int(ds.getncattr("orbit")) if "orbit" in ds.ncattrs() else 0
            keys, attrs["time_source"] = self._sounding_keys(ds, path, cand)
            variables = {
                n: "float64"
                for n in ("latitude", "longitude", "xgas", "xgas_uncertainty", "surface_pressure", "xgas_apriori")
            }
            variables.update(
                {n: "float32" for n in ("averaging_kernel", "pressure_weight", "profile_apriori", "pressure")}
            )
            variables.update(time="datetime64[ns]", quality_flag="int8", sounding_id="int64")
            if _has(ds, TROPOMI_VARIABLES["solar_zenith_angle"]):
                variables["solar_zenith_angle"] = "float64"
            if _has(ds, TROPOMI_VARIABLES["surface_classification"]):
                variables["surface_type"] = "int8"
        plan = plan_from_flags(
            path,
            found,
            raw[cand],
            bad,
            screen=screen,
            n_levels=n_levels,
            attrs=attrs,
            extra={"pixels": cand, "orbit": orbit},
            ids=keys,
            variable=TROPOMI_VARIABLES["xgas_raw"],
        )
        plan.variables = variables
        return plan

    def read(self, plan: GranulePlan, *, bias_corrected: bool) -> dict[str, np.ndarray]:
        """Canonical arrays of the planned pixels, in the generic AK form."""
        path = plan.path
        pix = plan.extra["pixels"][plan.index]
        out: dict[str, np.ndarray] = {}
        with cached_nc(path) as ds:
            shape = get_var(ds, TROPOMI_VARIABLES["qa_value"], path).shape  # (time, scanline, ground_pixel)
            out["time"] = pixel_times(ds, path, shape, pix)[0]
            out["latitude"] = _field(ds, "latitude", path).reshape(-1)[pix]
            out["longitude"] = wrap_longitude(_field(ds, "longitude", path).reshape(-1)[pix])
            role = "xgas_bc" if bias_corrected and _has(ds, TROPOMI_VARIABLES["xgas_bc"]) else "xgas_raw"
            out["xgas"] = _field(ds, role, path).reshape(-1)[pix]
            out["xgas_uncertainty"] = _field(ds, "xgas_uncertainty", path).reshape(-1)[pix]
            layer = {
                r: _field(ds, r, path).reshape(-1, plan.n_levels)[pix][:, ::-1]
                for r in ("averaging_kernel", "apriori_subcolumns", "dry_air_subcolumns")
            }
            ps = _field(ds, "surface_pressure", path).reshape(-1)[pix]
            dp = _field(ds, "pressure_interval", path).reshape(-1)[pix]
            if _has(ds, TROPOMI_VARIABLES["solar_zenith_angle"]):
                out["solar_zenith_angle"] = _field(ds, "solar_zenith_angle", path).reshape(-1)[pix]
            if _has(ds, TROPOMI_VARIABLES["surface_classification"]):
                sc = read_raw(get_var(ds, TROPOMI_VARIABLES["surface_classification"], path), path).reshape(-1)[pix]
                out["surface_type"] = ((sc & 0x03) == 1).astype(np.int8)
        out.update(self._column_terms(layer, ps, dp))
        out["quality_flag"] = plan.extra["bad"][plan.index].astype(np.int8)
        out["sounding_id"] = _pixel_ids(plan.extra["orbit"], pix, shape[-1])
        if np.isnan(out["xgas"]).any():
            out["quality_flag"] = np.where(np.isnan(out["xgas"]), 1, out["quality_flag"]).astype(np.int8)
        return out

    @classmethod
    def _sounding_keys(cls, ds: NcHandle, path: str, cand: np.ndarray) -> tuple[np.ndarray, str]:
        """Rows (time ns, latitude bits, longitude bits) of the retrieved pixels: the duplicate check key.

        Pixel numbers restart in every subset of an orbit (``.SUB`` files), so they do not
        identify a sounding across files; time and position do. Decoding the times here
        also rejects bad time units and times outside the granule at scan time. Returns
        the keys and the variable the times came from.
        """
        shape = get_var(ds, TROPOMI_VARIABLES["qa_value"], path).shape
        times, source = pixel_times(ds, path, shape, cand)
        lat = _field(ds, "latitude", path).reshape(-1)[cand].astype(np.float64).view(np.int64)
        lon = _field(ds, "longitude", path).reshape(-1)[cand].astype(np.float64).view(np.int64)
        return np.stack([times.view(np.int64), lat, lon], axis=1), source

    @staticmethod
    def _column_terms(layer: dict[str, np.ndarray], ps: np.ndarray, dp: np.ndarray) -> dict[str, Any]:
        d = layer["dry_air_subcolumns"].astype(np.float64)
        ca = layer["apriori_subcolumns"].astype(np.float64)
        dsum = d.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            h = d / dsum[:, None]
            xa = 1e9 * ca / d
            xa_col = 1e9 * ca.sum(axis=1) / dsum
        k = np.arange(d.shape[1]) + 0.5
        p_mid = (ps[:, None] - k[None, :] * dp[:, None]) / 100.0
        return {
            "averaging_kernel": layer["averaging_kernel"].astype(np.float32),
            "pressure_weight": h.astype(np.float32),
            "profile_apriori": xa.astype(np.float32),
            "pressure": p_mid.astype(np.float32),
            "surface_pressure": ps / 100.0,
            "xgas_apriori": xa_col,
        }


#: Overshoot allowed beyond ``time_coverage_start/end`` (the attributes are whole seconds).
COVERAGE_TOLERANCE = pd.Timedelta(seconds=60)
_DURATION_NS = {"milliseconds": 10**6, "millisecond": 10**6, "ms": 10**6, "seconds": 10**9, "second": 10**9, "s": 10**9}
_NAME_TIMES = re.compile(r"_(\d{8}T\d{6})_(\d{8}T\d{6})_")


def parse_iso_times(values: np.ndarray) -> np.ndarray:
    """ISO 8601 strings (``2019-03-11T11:12:39.322999Z``; bytes or str) -> datetime64[ns]; empty/bad -> NaT."""
    flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)]
    flat = [v.strip().rstrip("Z") for v in flat]
    out = pd.to_datetime(pd.Series(flat, dtype=object), format="ISO8601", errors="coerce")
    return out.to_numpy("datetime64[ns]").reshape(np.shape(values))


def granule_coverage(ds: NcHandle, path: str) -> tuple[pd.Timestamp, pd.Timestamp, str] | None:
    """The granule's own time coverage: ``time_coverage_start/end``, else the orbit times in its name."""
    names = ds.ncattrs()
    if "time_coverage_start" in names and "time_coverage_end" in names:
        try:
            a = pd.Timestamp(str(ds.getncattr("time_coverage_start")).rstrip("Z"))
            b = pd.Timestamp(str(ds.getncattr("time_coverage_end")).rstrip("Z"))
            return a, b, "the granule's time_coverage_start/end"
        except ValueError:
            pass
    m = _NAME_TIMES.search(Path(path).name)
    if m:
        return pd.Timestamp(m.group(1)), pd.Timestamp(m.group(2)), "the orbit start/end in the file name"
    return None


def _line_times_from_delta(ds: NcHandle, path: str, units: str) -> np.ndarray:
    """(time, scanline) times from ``time`` + ``delta_time`` (a duration unit) or ``delta_time`` alone (CF units)."""
    dvar = get_var(ds, TROPOMI_VARIABLES["delta_time"], path)
    dt = mask_fill(read_raw(dvar, path), _attrs(dvar), None)
    unit = units.strip().lower()
    if " since " in unit:  # newer processors: "milliseconds since 2019-03-11 00:00:00"
        return cf_time(dt, units, path, TROPOMI_VARIABLES["delta_time"])
    tvar = get_var(ds, TROPOMI_VARIABLES["time"], path)
    t0 = mask_fill(read_raw(tvar, path), _attrs(tvar), None).reshape(-1)
    ref = cf_time(t0, tvar.getncattr("units") if "units" in tvar.ncattrs() else None, path, TROPOMI_VARIABLES["time"])
    ns = np.round(dt * _DURATION_NS[unit])
    out = np.full(dt.shape, np.datetime64("NaT"), dtype="datetime64[ns]")
    ok = np.isfinite(ns) & ~np.isnat(ref)[:, None]
    out[ok] = (np.broadcast_to(ref.view(np.int64)[:, None], dt.shape)[ok] + ns[ok].astype(np.int64)).view(
        "datetime64[ns]"
    )
    return out


def pixel_times(ds: NcHandle, path: str, shape: tuple[int, ...], pixels: np.ndarray) -> tuple[np.ndarray, str]:
    """Times of the flattened ``pixels`` of a (time, scanline, ground_pixel) swath, and the variable they came from.

    ``PRODUCT/time`` + ``PRODUCT/delta_time`` when ``delta_time`` has a duration unit
    (``milliseconds`` in the product; CF ``<unit> since <epoch>`` in newer versions),
    else ``PRODUCT/time_utc`` when it holds a valid time for every needed scanline. A
    ``delta_time`` without units is never assumed to be milliseconds: a subsetting
    service has been seen writing one whose values are not (``_subsetted.nc4`` in
    ``shared/real_samples``). Times outside the granule's own coverage
    (:func:`granule_coverage`, 60 s tolerance) are a :class:`GranuleError` naming the
    variable.
    """
    n_gp = int(shape[-1])
    lines = np.asarray(pixels, dtype=np.int64) // max(n_gp, 1)
    needed = np.unique(lines)
    dpath, upath = TROPOMI_VARIABLES["delta_time"], TROPOMI_VARIABLES["time_utc"]
    dvar = get_var(ds, dpath, path)
    units = dvar.getncattr("units") if "units" in dvar.ncattrs() else None
    usable = units is not None and (" since " in str(units).lower() or str(units).strip().lower() in _DURATION_NS)
    coverage = granule_coverage(ds, path)
    if usable:
        per_line, source = _line_times_from_delta(ds, path, str(units)).reshape(-1), dpath
    else:
        utc = parse_iso_times(read_raw(get_var(ds, upath, path), path)).reshape(-1) if _has(ds, upath) else None
        if utc is None or utc.size <= (needed.max() if needed.size else -1) or np.isnat(utc[needed]).any():
            found = "no units attribute" if units is None else f"units {units!r} (not a duration or CF time unit)"
            bad = (
                0
                if utc is None or utc.size <= (needed.max() if needed.size else -1)
                else int(np.isnat(utc[needed]).sum())
            )
            utc_state = (
                f"no {upath!r}"
                if utc is None
                else f"{upath!r} has no valid time for {bad or needed.size} "
                f"of the {needed.size} scanlines with a retrieval"
            )
            hint = ""
            if coverage is not None and units is None:
                guess = _line_times_from_delta(ds, path, "milliseconds").reshape(-1)[needed]
                guess = guess[~np.isnat(guess)]
                if guess.size:
                    hint = (
                        f"; read as milliseconds since {TROPOMI_VARIABLES['time']!r} its values would put soundings "
                        f"at {_iso(guess.min())} to {_iso(guess.max())}, outside {coverage[2]} "
                        f"({_iso(coverage[0])} to {_iso(coverage[1])})"
                    )
            raise GranuleError(
                path,
                f"variable {dpath!r} has {found}, and {utc_state}: the sounding times cannot be "
                f"derived{hint}. The file may have been altered by a subsetting service; use "
                "the original granule or a subset that keeps delta_time's units or time_utc",
            )
        per_line, source = utc, upath
    times = per_line[lines]
    if coverage is not None:
        check_time_coverage(
            path,
            times,
            coverage[0],
            coverage[1],
            source,
            coverage[2],
            COVERAGE_TOLERANCE,
            hint="wrong units or values of the time variables; use the original granule",
        )
    return times, source


def _iso(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pixel_ids(orbit: int, pix: np.ndarray, ground_pixels: int) -> np.ndarray:
    """Sounding identifiers ``orbit * 1e8 + scanline * 1000 + ground_pixel``."""
    return (orbit * 10**8 + (pix // ground_pixels) * 1000 + pix % ground_pixels).astype(np.int64)


def _version_from_name(path: str) -> str:
    m = re.search(r"_\d{5}_\d{2}_(\d{6})_", Path(path).name)
    return m.group(1) if m else "unknown"
