"""Bad-input corpus (issue 9): every expected fault is a clear error or a recorded skip.

Every input is generated in a temporary folder by the package's own factories (no
binary fixtures): granules of each product layout broken in every way a download,
a disk or a producer breaks them, reported-totals tables, boundary files and run
configurations. Each case goes through the public API and the command line:

- a fault that makes an input unusable raises the right exception class of
  :mod:`gosat_pipeline.errors`, naming the file (and variable, row or key) and what was
  found; ``open_granules(errors="skip")`` records it in ``skipped_inputs`` with the same
  reason, and ``gosat-pipeline inspect|validate`` exits 2 with one line on stderr and
  no traceback;
- a fault that spoils single soundings (positions off the globe, times outside the
  run window or missing) is screened by :func:`apply_quality_filter`, which counts the
  soundings dropped for each reason;
- duplicate soundings across files are read once and the duplicates recorded;
- a documented assumption (a missing units attribute: units come from the product's
  documentation) reads the values unchanged.

The terminal summary states how many corpus cases were tried (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from gosat_pipeline.cli import main
from gosat_pipeline.config import load_config
from gosat_pipeline.errors import (
    BoundaryError,
    ConfigError,
    GranuleError,
    ReportedTotalsError,
    UnknownFormatError,
)
from gosat_pipeline.gridding import grid_soundings
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.inventory import read_reported_totals
from gosat_pipeline.io import close_cached, open_granule, open_granules
from gosat_pipeline.quality import DROP_REASONS, apply_quality_filter
from gosat_pipeline.regions import load_boundaries
from gosat_pipeline.testing.granules import (
    GRANULE_FORMATS,
    granule_filename,
    granule_soundings,
    write_granule,
)
from gosat_pipeline.testing.inventories import write_edgar_like
from gosat_pipeline.testing.readers import BUILTIN_READER_FACTS

ROOT = Path(__file__).resolve().parents[1]
FORMATS = list(GRANULE_FORMATS)
NIES = ("nies_gosat_l2", "nies_gosat2_l2")
NETCDF = [f for f in FORMATS if f not in NIES]
N = 40  # soundings per synthetic granule
BBOX = (-170.0, -60.0, 170.0, 60.0)
DAY0 = pd.Timestamp("2020-03-01")
WINDOW = ("2020-01-01", "2020-12-31")  # the run period of the screened cases

#: per-product file layout facts of the files the factories write (default gas of each format)
FACTS = {f: BUILTIN_READER_FACTS[f].for_gas(GRANULE_FORMATS[f][0]) for f in FORMATS}
#: file variables holding each product's gas value (bias-corrected first, then its raw twin)
XGAS_VARS = {f: list(FACTS[f].gas_variables) for f in FORMATS}
UNCERTAINTY_VAR = {f: FACTS[f].uncertainty_variable for f in FORMATS}
#: the variable the missing-variable case renames: the uncertainty, except where it is built from
#: components of which any one may be absent (NIES GOSAT)
MISSING_VAR = {f: FACTS[f].missing_variable for f in FORMATS}
#: numeric time variables with CF units (the blended product has only ISO strings, ``time_utc``)
TIME_VAR = {f: FACTS[f].time_variable for f in NETCDF if FACTS[f].time_variable}
NIES_TIME_VAR = {
    "nies_gosat_l2": "scanAttribute/time",
    "nies_gosat2_l2": "SoundingAttribute/observationTime",
}


# ------------------------------------------------------------------------------ file helpers
def _source(fmt: str, seed: int, start: Any = DAY0, **kw: Any) -> xr.Dataset:
    return granule_soundings(fmt, N, seed=seed, bbox=BBOX, start=str(pd.Timestamp(start)), **kw)


def _good_mask(src: xr.Dataset) -> np.ndarray:
    """Soundings the product screen keeps: flag 0 and a gas value."""
    return (np.asarray(src.quality_flag.values) == 0) & np.isfinite(src.xgas.values)


def _n_good(src: xr.Dataset) -> int:
    return int(_good_mask(src).sum())


def _edit_nc(path: Path, fn: Callable[[netCDF4.Dataset], None]) -> None:
    close_cached(path)
    with netCDF4.Dataset(path, "a") as nc:
        fn(nc)


def _edit_h5(path: Path, fn: Callable[[h5py.File], None]) -> None:
    close_cached(path)
    with h5py.File(path, "a") as f:
        fn(f)


def _rename_nc(nc: netCDF4.Dataset, vpath: str) -> None:
    group, _, name = vpath.rpartition("/")
    (nc[group] if group else nc).renameVariable(name, name + "_renamed")


def _set_nan(path: Path, fmt: str, vpaths: list[str]) -> None:
    """Write true NaN (not the product's fill value) into the variables."""

    def nc_fn(nc: netCDF4.Dataset) -> None:
        for vp in vpaths:
            v = nc[vp]
            v.set_auto_maskandscale(False)
            v[...] = np.full(v.shape, np.nan, dtype=v.dtype)

    def h5_fn(f: h5py.File) -> None:
        for vp in vpaths:
            f[vp][...] = np.nan

    if fmt in NIES:
        _edit_h5(path, h5_fn)
    else:
        _edit_nc(path, nc_fn)


# ------------------------------------------------------------------------------ the corpus
#: what a builder made: (path, soundings the quality filter must drop, soundings the reader returns)
Built = tuple[Path, int, int]


@dataclass(frozen=True)
class GranuleCase:
    """One bad granule: how to make it and what must happen to it."""

    id: str
    fmt: str | None  # the batch it belongs to; None: any batch
    # (folder, seed) -> (path, soundings spoilt, soundings read)
    build: Callable[[Path, int], Built]
    outcome: str  # "error" | "screened" | "assumed"
    error: type[Exception] = GranuleError
    fragments: tuple[str, ...] = ()
    reason: str = ""  # screened: the DROP_REASONS key

    def __str__(self) -> str:
        return self.id


def _write(fmt: str, d: Path, seed: int, mutate: Callable | None = None, start: Any = None) -> tuple[Path, xr.Dataset]:
    day = pd.Timestamp(start) if start is not None else DAY0 + pd.Timedelta(days=seed % 300)
    src = _source(fmt, seed, start=day)
    if mutate is not None:
        src = mutate(src)
    path = write_granule(src, d / fmt / granule_filename(fmt, day), fmt)
    return path, src


def _empty_name(fmt: str, d: Path, seed: int) -> Path:
    p = d / fmt / granule_filename(fmt, DAY0 + pd.Timedelta(days=seed % 300))
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _zero_byte(fmt: str) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        p = _empty_name(fmt, d, seed)
        p.touch()
        return p, 0, 0

    return build


def _truncated(fmt: str) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        p, _ = _write(fmt, d, seed)
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * 0.6)])  # an interrupted download
        return p, 0, 0

    return build


def _missing_variable(fmt: str) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        p, _ = _write(fmt, d, seed)
        vp = MISSING_VAR[fmt]
        if fmt in NIES:
            _edit_h5(p, lambda f: f.move(vp, vp + "_renamed"))
        else:
            _edit_nc(p, lambda nc: _rename_nc(nc, vp))
        return p, 0, 0

    return build


def _all_fill(fmt: str) -> Callable[[Path, int], Built]:
    def mutate(src: xr.Dataset) -> xr.Dataset:
        src["xgas"][:] = np.nan  # the writer stores the product's fill value
        return src

    return lambda d, seed: (_write(fmt, d, seed, mutate)[0], 0, 0)


def _all_nan(fmt: str) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        p, _ = _write(fmt, d, seed)
        _set_nan(p, fmt, XGAS_VARS[fmt])
        return p, 0, 0

    return build


def _wrong_scale(fmt: str) -> Callable[[Path, int], Built]:
    def mutate(src: xr.Dataset) -> xr.Dataset:
        # CH4 in ppm where the product stores ppb; CO2 as a mole fraction where it stores ppm
        src["xgas"] = src["xgas"] * (1e-3 if src.attrs["gas"] == "CH4" else 1e-6)
        return src

    return lambda d, seed: (_write(fmt, d, seed, mutate)[0], 0, 0)


def _time_units(fmt: str, units: str | None) -> Callable[[Path, int], Built]:
    def fn(nc: netCDF4.Dataset) -> None:
        v = nc[TIME_VAR[fmt]]
        if units is None:
            v.delncattr("units")
        else:
            v.units = units

    def build(d: Path, seed: int) -> Built:
        p, _ = _write(fmt, d, seed)
        _edit_nc(p, fn)
        return p, 0, 0

    return build


def _unknown_units(fmt: str) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        p, _ = _write(fmt, d, seed)
        _edit_h5(p, lambda f: f[UNCERTAINTY_VAR[fmt]].attrs.__setitem__("unit", np.array([b"furlongs"])))
        return p, 0, 0

    return build


def _some_good(src: xr.Dataset, k: int = 3) -> np.ndarray:
    return np.flatnonzero(_good_mask(src))[:k]


def _positions(fmt: str, lat: list[float] | None, lon: list[float] | None) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        idx: list[np.ndarray] = []

        def mutate(src: xr.Dataset) -> xr.Dataset:
            i = _some_good(src, 4)
            idx.append(i)
            la, lo = src.latitude.values.copy(), src.longitude.values.copy()
            if lat is not None:
                la[i] = np.resize(lat, i.size)
            if lon is not None:
                lo[i] = np.resize(lon, i.size)
            return src.assign_coords(latitude=("sounding", la), longitude=("sounding", lo))

        p, src = _write(fmt, d, seed, mutate)
        return p, idx[0].size, _n_good(src)

    return build


def _outside_window(fmt: str) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        p, src = _write(fmt, d, seed, start=pd.Timestamp("2019-06-01") + pd.Timedelta(days=seed % 100))
        return p, _n_good(src), _n_good(src)  # a granule of another year mixed into the run

    return build


def _nat_times(fmt: str) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        if fmt in NIES:  # times are strings: write garbage into some
            p, src = _write(fmt, d, seed)
            # GOSAT holds only the good soundings (rows 0..n_good-1); GOSAT-2 holds all
            rows = np.arange(3) if fmt == "nies_gosat_l2" else _some_good(src, 3)

            def fn(f: h5py.File) -> None:
                t = f[NIES_TIME_VAR[fmt]][...]
                t[rows] = b"not a time"
                f[NIES_TIME_VAR[fmt]][...] = t

            _edit_h5(p, fn)
            return p, len(rows), _n_good(src)
        idx: list[np.ndarray] = []

        def mutate(src: xr.Dataset) -> xr.Dataset:
            i = _some_good(src, 3)
            idx.append(i)
            t = src.time.values.copy()
            t[i] = np.datetime64("NaT")
            return src.assign_coords(time=("sounding", t))

        p, src = _write(fmt, d, seed, mutate)
        return p, idx[0].size, _n_good(src)

    return build


def _no_xgas_units(fmt: str) -> Callable[[Path, int], Built]:
    def build(d: Path, seed: int) -> Built:
        p, src = _write(fmt, d, seed)
        if fmt in NIES:
            _edit_h5(p, lambda f: [f[v].attrs.__delitem__("unit") for v in XGAS_VARS[fmt]])
        else:
            _edit_nc(p, lambda nc: [nc[v].delncattr("units") for v in XGAS_VARS[fmt]])
        return p, 0, _n_good(src)

    return build


def _uncertainty_all_fill(fmt: str) -> Callable[[Path, int], Built]:
    def mutate(src: xr.Dataset) -> xr.Dataset:
        src["xgas_uncertainty"][:] = np.nan  # every error component written as the fill value
        return src

    return lambda d, seed: (_write(fmt, d, seed, mutate)[0], 0, 0)


def _nies_times_off_by(days: int) -> Callable[[Path, int], Built]:
    """Sounding times moved ``days`` away from the file's own day (a wrongly decoded time)."""

    def build(d: Path, seed: int) -> Built:
        p, src = _write("nies_gosat_l2", d, seed)

        def fn(f: h5py.File) -> None:
            t = pd.to_datetime([x.decode() for x in f["scanAttribute/time"][...]]) + pd.Timedelta(days=days)
            f["scanAttribute/time"][...] = np.array([x.encode() for x in t.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]])

        _edit_h5(p, fn)
        return p, 0, 0

    return build


def _nies_layer_mismatch(d: Path, seed: int) -> Built:
    p, _ = _write("nies_gosat_l2", d, seed)

    def fn(f: h5py.File) -> None:
        vp = "scanAttribute/referenceData/dryAirPartialColumn"
        old = f[vp][...]
        attrs = dict(f[vp].attrs)
        del f[vp]
        f.create_dataset(vp, data=old[:, 1:])  # 14 layers for a 15-layer kernel
        f[vp].attrs.update(attrs)

    _edit_h5(p, fn)
    return p, 0, 0


def _tropomi_delta_time(units: str | None, scale: float | None, blank_utc: bool) -> Callable[[Path, int], Built]:
    """``delta_time`` as a subsetting service left it: units removed or values rescaled; time_utc blanked or kept."""

    def fn(nc: netCDF4.Dataset) -> None:
        v = nc["PRODUCT/delta_time"]
        v.set_auto_maskandscale(False)
        ms = v[...].astype(np.int64)
        if scale is None:  # nanoseconds wrapped to 32 bits, as in the real _subsetted.nc4
            v[...] = ((ms * 10**6 + 2**31) % 2**32 - 2**31).astype(np.int32)
        else:
            v[...] = np.round(ms * scale).astype(np.int32)
        if units is None:
            v.delncattr("units")
        else:
            v.units = units
        if blank_utc:
            u = nc["PRODUCT/time_utc"]
            u[...] = np.full(u.shape, "", dtype=object)

    def build(d: Path, seed: int) -> Built:
        p, src = _write("tropomi_ch4", d, seed)
        _edit_nc(p, fn)
        return p, 0, _n_good(src)

    return build


def _blended_other_orbit(d: Path, seed: int) -> Built:
    """A blended granule whose times lie a week after the orbit its name gives (renamed to another orbit)."""
    day = DAY0 + pd.Timedelta(days=seed % 300)
    src = _source("tropomi_blended_ch4", seed, start=day + pd.Timedelta(days=7))
    return write_granule(src, d / "blended" / granule_filename("tropomi_blended_ch4", day), "tropomi_blended_ch4"), 0, 0


def _generic_cases() -> list[GranuleCase]:
    def edgar(d: Path, seed: int) -> Built:
        p = d / "generic" / "v8.0_FT2022_GHG_CH4_2020_TOTALS_flx.nc"
        p.parent.mkdir(parents=True, exist_ok=True)
        write_edgar_like(p, GridSpec.from_resolution(10.0), gas="CH4", year=2020)
        return p, 0, 0

    def netcdf3(d: Path, seed: int) -> Built:
        p = d / "generic" / "mystery_product.nc"
        p.parent.mkdir(parents=True, exist_ok=True)
        xr.Dataset({"foo": ("x", np.arange(3.0))}).to_netcdf(p, format="NETCDF3_CLASSIC")
        return p, 0, 0

    def ocfp_as_ocpr(d: Path, seed: int) -> Built:
        src, _ = _write("cci_ocfp", d / "generic-src", seed)
        p = d / "generic" / granule_filename("cci_ocpr", "2020-02-02")
        shutil.copy(src, p)
        return p, 0, 0

    def h5_as_nies(d: Path, seed: int) -> Built:
        p = d / "generic" / granule_filename("nies_gosat_l2", "2020-02-03")
        with h5py.File(p, "w") as f:
            f.create_dataset("Calibration/radiance", data=np.zeros((3, 4)))
        return p, 0, 0

    def text_as_lite(d: Path, seed: int) -> Built:
        p = d / "generic" / granule_filename("acos_lite", "2020-02-04")
        p.write_text("<html>403 Forbidden: this is what the download server sent</html>\n")
        return p, 0, 0

    def directory(d: Path, seed: int) -> Built:
        p = d / "generic" / granule_filename("cci_ocpr", "2020-02-05")
        p.mkdir(parents=True)
        return p, 0, 0

    def missing(d: Path, seed: int) -> Built:
        return d / "generic" / granule_filename("cci_ocpr", "2020-02-06"), 0, 0

    def zero_neutral(d: Path, seed: int) -> Built:
        p = d / "generic" / "granule_0001.nc"
        p.touch()
        return p, 0, 0

    return [
        GranuleCase(
            "granule:other-product:edgar-prior",
            None,
            edgar,
            "error",
            UnknownFormatError,
            ("no reader recognised", "pass format=", "cci_ocpr"),
        ),
        GranuleCase(
            "granule:other-product:netcdf3-unrelated",
            None,
            netcdf3,
            "error",
            UnknownFormatError,
            ("no reader recognised",),
        ),
        GranuleCase(
            "granule:other-product:ocfp-named-ocpr",
            None,
            ocfp_as_ocpr,
            "error",
            GranuleError,
            ("missing variable", "xch4"),
        ),
        GranuleCase(
            "granule:other-product:hdf5-named-nies",
            None,
            h5_as_nies,
            "error",
            GranuleError,
            ("missing variable",),
        ),
        GranuleCase(
            "granule:other-product:html-named-lite",
            None,
            text_as_lite,
            "error",
            GranuleError,
            ("not a readable netCDF/HDF5 file",),
        ),
        GranuleCase("granule:generic:directory", None, directory, "error", GranuleError, ("is a directory",)),
        GranuleCase(
            "granule:generic:missing-file",
            None,
            missing,
            "error",
            GranuleError,
            ("does not exist",),
        ),
        GranuleCase(
            "granule:generic:zero-byte-unknown-name",
            None,
            zero_neutral,
            "error",
            GranuleError,
            ("zero-byte",),
        ),
    ]


def _format_cases(fmt: str) -> list[GranuleCase]:
    xv, uv, mv = XGAS_VARS[fmt][0], UNCERTAINTY_VAR[fmt], MISSING_VAR[fmt]
    cases = [
        GranuleCase(f"granule:{fmt}:zero-byte", fmt, _zero_byte(fmt), "error", fragments=("zero-byte",)),
        GranuleCase(
            f"granule:{fmt}:truncated",
            fmt,
            _truncated(fmt),
            "error",
            fragments=("truncated or corrupt",),
        ),
        GranuleCase(
            f"granule:{fmt}:missing-variable",
            fmt,
            _missing_variable(fmt),
            "error",
            fragments=("missing variable", mv),
        ),
        GranuleCase(f"granule:{fmt}:all-fill", fmt, _all_fill(fmt), "error", fragments=("fill values",)),
        GranuleCase(f"granule:{fmt}:all-nan", fmt, _all_nan(fmt), "error", fragments=("fill values or NaN",)),
        GranuleCase(
            f"granule:{fmt}:wrong-units-scale",
            fmt,
            _wrong_scale(fmt),
            "error",
            fragments=(
                "not plausible",
                "wrong units",
                XGAS_VARS[fmt][-1] if fmt == "tropomi_ch4" else xv,
            ),
        ),
        GranuleCase(
            f"granule:{fmt}:latitude-out-of-range",
            fmt,
            _positions(fmt, [95.0, -91.0, 90.5, 1e6], None),
            "screened",
            reason="invalid_position",
        ),
        GranuleCase(
            f"granule:{fmt}:longitude-out-of-range",
            fmt,
            _positions(fmt, None, [500.0, -200.0, 361.0, -1e6]),
            "screened",
            reason="invalid_position",
        ),
        GranuleCase(
            f"granule:{fmt}:position-fill",
            fmt,
            _positions(fmt, [np.nan], [np.nan]),
            "screened",
            reason="invalid_position",
        ),
        GranuleCase(
            f"granule:{fmt}:outside-time-window",
            fmt,
            _outside_window(fmt),
            "screened",
            reason="outside_time_window",
        ),
        GranuleCase(f"granule:{fmt}:xgas-units-missing", fmt, _no_xgas_units(fmt), "assumed"),
    ]
    if fmt in TIME_VAR:
        tv = TIME_VAR[fmt]
        cases += [
            GranuleCase(
                f"granule:{fmt}:time-units-wrong",
                fmt,
                _time_units(fmt, "fortnights since launch"),
                "error",
                fragments=("time units", "'fortnights since launch'", tv),
            ),
            GranuleCase(
                f"granule:{fmt}:time-units-missing",
                fmt,
                _time_units(fmt, None),
                "error",
                fragments=("no units attribute", tv),
            ),
        ]
    # TROPOMI times are an orbit epoch plus per-scanline offsets: no NaT to write
    if fmt != "tropomi_ch4":
        cases.append(
            GranuleCase(
                f"granule:{fmt}:missing-times",
                fmt,
                _nat_times(fmt),
                "screened",
                reason="invalid_time",
            )
        )
    if fmt in NIES:
        cases.append(
            GranuleCase(
                f"granule:{fmt}:unknown-gas-units",
                fmt,
                _unknown_units(fmt),
                "error",
                fragments=("'furlongs'", uv),
            )
        )
        cases.append(
            GranuleCase(
                f"granule:{fmt}:uncertainty-all-fill",
                fmt,
                _uncertainty_all_fill(fmt),
                "error",
                fragments=("no uncertainty component holds a value", uv),
            )
        )
    if fmt == "tropomi_ch4":
        cases += [
            GranuleCase(
                f"granule:{fmt}:delta-time-without-units-and-no-time-utc",
                fmt,
                _tropomi_delta_time(None, None, blank_utc=True),
                "error",
                fragments=(
                    "'PRODUCT/delta_time' has no units attribute",
                    "cannot be derived",
                    "outside the granule's time_coverage_start/end",
                ),
            ),
            GranuleCase(
                f"granule:{fmt}:delta-time-not-milliseconds",
                fmt,
                _tropomi_delta_time("milliseconds", 1e-3, blank_utc=False),
                "error",
                fragments=("'PRODUCT/delta_time'", "sounding times fall outside", "time_coverage_start/end"),
            ),
            GranuleCase(
                f"granule:{fmt}:delta-time-without-units-time-utc-kept",
                fmt,
                _tropomi_delta_time(None, None, blank_utc=False),
                "assumed",
            ),
        ]
    if fmt == "tropomi_blended_ch4":
        cases.append(
            GranuleCase(
                f"granule:{fmt}:times-outside-the-named-orbit",
                fmt,
                _blended_other_orbit,
                "error",
                fragments=("variable 'time_utc'", "outside the orbit start/end in the file name"),
            )
        )
    if fmt == "nies_gosat_l2":
        cases += [
            GranuleCase(
                f"granule:{fmt}:times-outside-the-file-day",
                fmt,
                _nies_times_off_by(31),
                "error",
                fragments=("'scanAttribute/time'", "outside the file's day"),
            ),
            GranuleCase(
                f"granule:{fmt}:layer-count-mismatch",
                fmt,
                _nies_layer_mismatch,
                "error",
                fragments=("disagree on the number of levels", "dryAirPartialColumn"),
            ),
        ]
    return cases


GENERIC = _generic_cases()
GRANULE_CASES = [c for fmt in FORMATS for c in _format_cases(fmt)] + GENERIC
ERROR_CASES = [c for c in GRANULE_CASES if c.outcome == "error"]
READABLE_CASES = [c for c in GRANULE_CASES if c.outcome in ("screened", "assumed")]
SEED = {c.id: 1000 + k for k, c in enumerate(GRANULE_CASES)}


@dataclass
class Corpus:
    root: Path
    files: dict[str, Built] = field(default_factory=dict)
    good: dict[str, list[tuple[Path, xr.Dataset]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Every bad granule, plus two good granules of each format, written once."""
    c = Corpus(tmp_path_factory.mktemp("corpus"))
    for case in GRANULE_CASES:
        c.files[case.id] = case.build(c.root, SEED[case.id])
    for k, fmt in enumerate(FORMATS):
        c.good[fmt] = [_write(fmt, c.root / "good", 10 * k + j, start=DAY0 - pd.Timedelta(days=j + 1)) for j in (1, 2)]
    return c


@pytest.fixture()
def cli(
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Callable[[list[str]], tuple[int, str, str]]]:
    """Run ``gosat-pipeline`` in this process; restore the logging/warnings state it changes."""
    pkg = logging.getLogger("gosat_pipeline")
    saved = (list(pkg.handlers), pkg.level)

    def run(argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main(argv)
        out, err = capsys.readouterr()
        return rc, out, err

    with warnings.catch_warnings():
        try:
            yield run
        finally:
            pkg.handlers[:], pkg.level = saved
            logging.captureWarnings(False)


def _one_error_line(err: str, *fragments: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("gosat-pipeline: error: "), lines[0]
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def _reasons(ds: xr.Dataset) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in json.loads(ds.attrs["skipped_inputs"])}


# ------------------------------------------------------------------------------ granules: API
@pytest.mark.parametrize("case", ERROR_CASES, ids=str)
def test_bad_granule_is_a_clear_error(corpus: Corpus, case: GranuleCase, bad_input_corpus: Callable) -> None:
    path = corpus.files[case.id][0]
    with pytest.raises(case.error) as info:
        open_granule(path)
    exc = info.value
    assert type(exc) is case.error, f"{type(exc).__name__}: {exc}"
    assert exc.path == str(path) and str(path) in str(exc)
    for frag in case.fragments:
        assert frag in str(exc), (frag, str(exc))
    bad_input_corpus(case.id, "api-raise")


@pytest.mark.parametrize("case", ERROR_CASES, ids=str)
def test_bad_granule_cli_inspect_exits_2_with_one_line(
    corpus: Corpus, case: GranuleCase, cli: Callable, bad_input_corpus: Callable
) -> None:
    path = corpus.files[case.id][0]
    rc, out, err = cli(["inspect", str(path)])
    assert rc == 2, (out, err)
    # the command line speaks of its own option, not of the API's keyword
    fragments = [f.replace("pass format=", "use --format NAME") for f in case.fragments]
    _one_error_line(err, path.name, *fragments)
    bad_input_corpus(case.id, "cli")


@pytest.mark.parametrize("case", [c for c in READABLE_CASES if c.outcome == "screened"], ids=str)
def test_spoilt_soundings_are_screened_and_counted(
    corpus: Corpus, case: GranuleCase, bad_input_corpus: Callable
) -> None:
    path, k, n_read = corpus.files[case.id]
    assert k > 0
    ds = open_granule(path)
    assert ds.sizes["sounding"] == n_read  # spoilt soundings are read, to be screened and counted
    out = apply_quality_filter(ds, time_range=WINDOW)
    dropped = json.loads(out.attrs["quality_filter_dropped"])
    assert set(dropped) <= set(DROP_REASONS)
    n_in, n_out = ds.sizes["sounding"], out.sizes["sounding"]
    assert sum(dropped.values()) == n_in - n_out, dropped  # every dropped sounding has its reason
    assert dropped[case.reason] == k, dropped
    assert all(v == 0 for r, v in dropped.items() if r != case.reason), dropped
    lat, lon = out.latitude.values, out.longitude.values
    assert np.all((lat >= -90) & (lat <= 90) & (lon >= -180) & (lon < 180))
    assert not np.isnat(out.time.values).any()
    # what survives the screen is gridded completely: nothing is lost downstream either
    if n_out:
        l3 = grid_soundings(out, 10.0, time_bin=None)
        assert int(l3.n_soundings.sum()) == n_out
    bad_input_corpus(case.id, "api-screen")


@pytest.mark.parametrize("case", [c for c in READABLE_CASES if c.outcome == "assumed"], ids=str)
def test_missing_units_attribute_uses_the_documented_product_units(
    corpus: Corpus, case: GranuleCase, bad_input_corpus: Callable
) -> None:
    path = corpus.files[case.id][0]
    src = _source(case.fmt, SEED[case.id], start=DAY0 + pd.Timedelta(days=SEED[case.id] % 300))
    ds = open_granule(path).compute()
    want = np.sort(src.xgas.values[_good_mask(src)])
    np.testing.assert_allclose(np.sort(ds.xgas.values), want, rtol=1e-6)
    assert ds.xgas.attrs["units"] == {"CO2": "ppm", "CH4": "ppb"}[ds.attrs["gas"]]
    bad_input_corpus(case.id, "api-assumed")


@pytest.mark.parametrize("case", READABLE_CASES, ids=str)
def test_readable_granule_cli_inspect_succeeds(
    corpus: Corpus, case: GranuleCase, cli: Callable, bad_input_corpus: Callable
) -> None:
    path = corpus.files[case.id][0]
    rc, out, err = cli(["inspect", "--json", str(path)])
    assert rc == 0 and "Traceback" not in err, err
    info = json.loads(out)
    assert info["format"] == case.fmt and info["n_soundings"] > 0
    bad_input_corpus(case.id, "cli")


# ------------------------------------------------------------------------------ granules: batches
@pytest.mark.parametrize("fmt", FORMATS)
def test_mixed_batch_keeps_every_good_sounding_and_lists_every_bad_file(
    corpus: Corpus, fmt: str, bad_input_corpus: Callable
) -> None:
    good = corpus.good[fmt]
    mine = [c for c in GRANULE_CASES if c.fmt == fmt or c.fmt is None]
    bad = {corpus.files[c.id][0]: c for c in mine if c.outcome == "error"}
    readable = [c for c in mine if c.outcome != "error"]
    paths = [p for p, _ in good] + list(bad) + [corpus.files[c.id][0] for c in readable]
    with pytest.warns(UserWarning, match="skipping"):
        ds = open_granules(paths, errors="skip")
    # every bad file listed once, with its reason
    reasons = _reasons(ds)
    assert set(reasons) == {str(p) for p in bad}
    for p, case in bad.items():
        for frag in case.fragments:
            assert frag in reasons[str(p)], (case.id, frag, reasons[str(p)])
    # every good sounding kept, exactly: the two good files and the readable cases
    n_expected = sum(_n_good(src) for _, src in good) + sum(corpus.files[c.id][2] for c in readable)
    assert ds.sizes["sounding"] == n_expected
    assert json.loads(ds.attrs["duplicate_soundings"]) == []
    got = ds.compute()
    for p, src in good:
        sel = got.xgas.values[got.source_file.values == str(p)]
        np.testing.assert_allclose(np.sort(sel), np.sort(src.xgas.values[_good_mask(src)]), rtol=1e-6)
    # the quality filter then drops exactly the spoilt soundings, each with its reason
    out = apply_quality_filter(ds, time_range=WINDOW)
    dropped = json.loads(out.attrs["quality_filter_dropped"])
    for reason in ("invalid_position", "invalid_time", "outside_time_window"):
        want = sum(corpus.files[c.id][1] for c in readable if c.reason == reason)
        assert dropped.get(reason, 0) == want, (reason, dropped)
    assert out.sizes["sounding"] == ds.sizes["sounding"] - sum(dropped.values())
    bad_input_corpus(f"granule:{fmt}:mixed-batch", "api-skip")


def test_batch_context_faults_are_skipped_with_reason(corpus: Corpus, bad_input_corpus: Callable) -> None:
    ocpr = corpus.good["cci_ocpr"][0][0]
    acos = corpus.good["acos_lite"][0][0]
    srfp_name = granule_filename("cci_srfp", "2020-04-04", gas="CH4")
    srfp_ch4 = write_granule(_source("cci_srfp", 78, gas="CH4"), corpus.root / "levels" / srfp_name, "cci_srfp")
    for case_id, paths, gas, frag in (
        ("granule:batch:other-gas", [ocpr, acos], "CH4", "holds CO2"),
        ("granule:batch:other-level-count", [ocpr, srfp_ch4], None, "has 12 levels"),
    ):
        with pytest.raises(GranuleError, match=frag) as info:
            open_granules(paths, gas=gas, errors="raise")
        assert info.value.path == str(paths[1])
        with pytest.warns(UserWarning, match="skipping"):
            ds = open_granules(paths, gas=gas, errors="skip")
        assert frag in _reasons(ds)[str(paths[1])]
        assert ds.sizes["sounding"] == open_granule(paths[0]).sizes["sounding"]
        bad_input_corpus(case_id, "api-skip")


# ------------------------------------------------------------------------------ duplicates
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_granule_delivered_twice_counts_once(tmp_path: Path, fmt: str, bad_input_corpus: Callable) -> None:
    src = _source(fmt, 5, start="2020-05-01")
    a = write_granule(src, tmp_path / granule_filename(fmt, "2020-05-01"), fmt)
    # the same soundings again, under another day's name (the blended product's name carries the
    # orbit's times, checked against the soundings: there, a later production of the same orbit)
    other = (
        granule_filename(fmt, "2020-05-02")
        if fmt != "tropomi_blended_ch4"
        else a.name.replace("_20230614T000922.", "_20240101T000000.")
    )
    b = tmp_path / "copy" / other
    b.parent.mkdir()
    shutil.copy(a, b)
    n = _n_good(src)
    with pytest.warns(UserWarning, match="already read"):
        ds = open_granules([a, b])
    assert ds.sizes["sounding"] == n
    assert ds.attrs["n_duplicate_soundings"] == n
    rec = json.loads(ds.attrs["duplicate_soundings"])
    assert rec == [{"path": str(b), "n_duplicates": n, "n_kept": 0, "duplicates_of": [str(a)]}]
    assert str(b) in _reasons(ds) and "duplicate" in _reasons(ds)[str(b)]
    assert json.loads(ds.attrs["input_files"]) == [str(a)]
    assert set(ds.source_file.values) == {str(a)}
    bad_input_corpus(f"granule:{fmt}:duplicate-file", "api-dedupe")


def test_overlapping_granules_keep_each_sounding_once(tmp_path: Path, bad_input_corpus: Callable) -> None:
    fmt = "acos_lite"
    src = _source(fmt, 6)
    a = write_granule(src.isel(sounding=slice(0, 30)), tmp_path / granule_filename(fmt, "2020-05-01"), fmt)
    b = write_granule(src.isel(sounding=slice(20, 40)), tmp_path / granule_filename(fmt, "2020-05-02"), fmt)
    good = _good_mask(src)
    overlap = int(good[20:30].sum())
    with pytest.warns(UserWarning, match="already read"):
        ds = open_granules([a, b]).compute()
    assert ds.sizes["sounding"] == int(good.sum())  # the union, each once
    assert sorted(ds.sounding_id.values.tolist()) == sorted(src.sounding_id.values[good].tolist())
    rec = json.loads(ds.attrs["duplicate_soundings"])
    assert rec == [
        {
            "path": str(b),
            "n_duplicates": overlap,
            "n_kept": int(good[30:].sum()),
            "duplicates_of": [str(a)],
        }
    ]
    assert _reasons(ds) == {}  # b still contributes soundings: it is not a skipped file
    bad_input_corpus("granule:acos_lite:overlapping-files", "api-dedupe")


def test_duplicate_ids_within_one_granule(tmp_path: Path, bad_input_corpus: Callable) -> None:
    fmt = "cci_ocpr"
    src = _source(fmt, 7)
    i = _some_good(src, 2)
    ids = src.sounding_id.values.copy()
    ids[i[1]] = ids[i[0]]
    src["sounding_id"] = ("sounding", ids)
    p = write_granule(src, tmp_path / granule_filename(fmt, "2020-05-03"), fmt)
    with pytest.warns(UserWarning, match="already read"):
        ds = open_granules([p]).compute()
    assert ds.sizes["sounding"] == _n_good(src) - 1
    assert ds.attrs["n_duplicate_soundings"] == 1
    assert len(set(ds.sounding_id.values)) == ds.sizes["sounding"]
    bad_input_corpus("granule:cci_ocpr:duplicate-ids-in-file", "api-dedupe")


# ------------------------------------------------------------------------------ reported totals
HEADER = "area,year,gas,category,value,unit,source,category_scheme,uncertainty_rel,notes\n"
GOOD_ROW = "DEU,2019,CH4,M.0.EL,2165.3,kt CH4/yr,CRF,,0.15,\n"

REPORTED_CASES: list[tuple[str, bytes, tuple[str, ...]]] = [
    (
        "unknown-unit",
        HEADER + GOOD_ROW + "FRA,2019,CH4,M.0.EL,12,kt blorbs/yr,CRF,,,\n",
        ("line 3, column unit", "blorbs"),
    ),
    (
        "co2e-for-one-gas",
        HEADER + GOOD_ROW + "ITA,2019,CH4,M.0.EL,40,Mt CO2e/yr,CRF,,,\n",
        ("line 3, column unit", "CO2e"),
    ),
    (
        "mass-of-another-gas",
        HEADER + GOOD_ROW + "POL,2019,CH4,M.0.EL,40,kt CO2/yr,CRF,,,\n",
        ("line 3, column unit", "CO2"),
    ),
    (
        "non-numeric-value",
        HEADER + GOOD_ROW + "FRA,2019,CH4,M.0.EL,12.x,kt CH4/yr,CRF,,,\n",
        ("line 3, column value", "12.x"),
    ),
    (
        "infinite-value",
        HEADER + GOOD_ROW + "FRA,2019,CH4,M.0.EL,inf,kt CH4/yr,CRF,,,\n",
        ("line 3, column value", "'inf'"),
    ),
    (
        "unknown-area",
        HEADER + GOOD_ROW + "JJJ,2019,CH4,M.0.EL,10,kt CH4/yr,CRF,,,\n",
        ("line 3, column area", "JJJ"),
    ),
    (
        "bad-year",
        HEADER + GOOD_ROW + "PRT,20x9,CH4,M.0.EL,40,kt CH4/yr,CRF,,,\n",
        ("line 3, column year", "20x9"),
    ),
    (
        "negative-uncertainty",
        HEADER + GOOD_ROW + "ESP,2019,CH4,M.0.EL,40,kt CH4/yr,CRF,,-0.1,\n",
        ("line 3, column uncertainty_rel",),
    ),
    ("duplicate-row", HEADER + GOOD_ROW + GOOD_ROW, ("line 3",)),
    (
        "unquoted-thousands-comma",
        HEADER + GOOD_ROW + "FRA,2019,CH4,M.0.EL,1,234,kt CH4/yr,CRF,,,a note\n",
        ("line 3", "fields but the header has"),
    ),
    (
        "missing-column",
        "area,year,gas,value,source\nDEU,2019,CH4,1,x\n",
        ("column unit", "required column missing"),
    ),
    ("empty-file", "", ("line 1", "empty")),
    ("header-only", HEADER, ("no data rows",)),
    (
        "not-utf8",
        (HEADER + "CIV,2019,CH4,M.0.EL,40,kt CH4/yr,CRF,,,Côte d'Ivoire\n").encode("latin-1"),
        ("not UTF-8",),
    ),
    ("binary-garbage", bytes(range(256)) * 8, ("not UTF-8",)),
]


@pytest.mark.parametrize(("name", "content", "fragments"), REPORTED_CASES, ids=[c[0] for c in REPORTED_CASES])
def test_bad_reported_totals_name_line_column_and_value(
    tmp_path: Path,
    name: str,
    content: str | bytes,
    fragments: tuple[str, ...],
    bad_input_corpus: Callable,
) -> None:
    p = tmp_path / f"{name}.csv"
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(ReportedTotalsError) as info:
        read_reported_totals(p)
    msg = str(info.value)
    assert info.value.path == str(p) and str(p) in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    bad_input_corpus(f"reported:{name}", "api-raise")


def test_missing_reported_totals_file(tmp_path: Path, bad_input_corpus: Callable) -> None:
    with pytest.raises(ReportedTotalsError, match="cannot open"):
        read_reported_totals(tmp_path / "nope.csv")
    bad_input_corpus("reported:missing-file", "api-raise")


# Reported totals in the other formats: workbooks, netCDF and the OCO-2 MIP CSV.
_CRF_NAME = "GBR_2023_2021_13042023_170954.xlsx"
_CRF_CH4 = {"1": [10.0, 9.0], "3": [20.0, 19.0], "M.0.EL": [30.0, 28.0], "0": [31.0, 29.0]}
_OCO2_HEAD = "Datased name: Pilot top-down CO2 Budget constrained by the v10 OCO-2 MIP Version 1.0\n" + "x\n" * 51


def _crf(d: Path, name: str = _CRF_NAME, **kw: Any) -> Path:
    from gosat_pipeline.testing.inventories import write_crf_workbook

    table = {k: list(v) for k, v in _CRF_CH4.items()}
    table.update(kw.pop("table", {}))
    return write_crf_workbook(d / name, table, [2020, 2021], **kw)


def _no_tables(d: Path) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.title = "Sheet1"
    wb.save(d / _CRF_NAME)
    return d / _CRF_NAME


def _primap_nc(d: Path, units: str | None = "CH4 * kt / a", area: bool = True) -> Path:
    dims = ("time", "area (ISO3)" if area else "country", "category (IPCC2006_PRIMAP)", "source")
    ds = xr.Dataset(
        {"CH4": (dims, np.ones((2, 1, 1, 1)), {"entity": "CH4", **({"units": units} if units else {})})},
        coords={
            "time": pd.to_datetime(["2019-01-01", "2020-01-01"]),
            dims[1]: ["DEU"],
            dims[2]: ["M.0.EL"],
            "source": ["CRF 2023, 240108"],
        },
    )
    ds.to_netcdf(d / "primap.nc")
    return d / "primap.nc"


def _oco2(d: Path, header: str, rows: str) -> Path:
    (d / "pilot.csv").write_text(_OCO2_HEAD + header + "\n" + rows)
    return d / "pilot.csv"


_OCO2_COLS = "Alpha 3 Code,Year,LNLG NCE (TgCO2),LNLG NCE unc (TgCO2),FF (TgCO2),FF unc (TgCO2)"

REPORTED_FILE_CASES: list[tuple[str, Callable[[Path], tuple[Path, dict[str, Any]]], tuple[str, ...]]] = [
    (
        "crf-not-a-workbook",
        lambda d: ((d / _CRF_NAME).write_bytes(b"<html>403</html>") and d / _CRF_NAME, {}),
        ("not an Excel workbook openpyxl can read",),
    ),
    ("crf-no-tables", lambda d: (_no_tables(d), {}), ("no Table10s* trend sheet", "'Sheet1'")),
    (
        "crf-unknown-party",
        lambda d: (_crf(d, "uk_inventory.xlsx"), {}),
        ("cannot tell the party", "GBR_2023_2021_13042023_170954.xlsx"),
    ),
    (
        "crf-text-in-a-cell",
        lambda d: (_crf(d, table={"1": ["12,5", 9.0]}), {}),
        ("sheet 'Table10s3' row 7, column value: '12,5'", "notation key"),
    ),
    (
        "crf-summary-disagrees",
        lambda d: (_crf(d, summary_ch4=999.0), {}),
        ("sheet 'Summary1.As1' row 6", "differs from sheet 'Table10s3'", "inconsistent"),
    ),
    ("crf-bad-format-name", lambda d: (_crf(d), {"format": "unfccc"}), ("unknown format 'unfccc'", "crf")),
    ("primap-nc-not-primap", lambda d: (_primap_nc(d, area=False), {}), ("not the primap2 layout", "country")),
    ("primap-nc-no-units", lambda d: (_primap_nc(d, units=None), {}), ("variable 'CH4': no 'units' attribute",)),
    (
        "primap-nc-unknown-source",
        lambda d: (_primap_nc(d), {"source": "EDGAR 9"}),
        ("source: 'EDGAR 9' is not in the table", "CRF 2023, 240108"),
    ),
    (
        "primap-nc-mangled-unit",
        lambda d: (_primap_nc(d, units="CH4 * blorbs / a"), {"gases": ["CH4"]}),
        ("variable 'CH4' at area=DEU, category=M.0.EL, source=CRF 2023, 240108, time=2019, column unit", "blorbs"),
    ),
    (
        "oco2mip-missing-columns",
        lambda d: (
            _oco2(d, "Alpha 3 Code,Year,LNLG NCE (TgCO2),LNLG NCE unc (TgCO2)", "JPN,2019,1,1\n"),
            {"format": "oco2mip"},
        ),
        ("column FF (TgCO2): required column missing",),
    ),
    (
        "oco2mip-unknown-experiment",
        lambda d: (_oco2(d, _OCO2_COLS, "JPN,2019,1,1,2,2\n"), {"experiment": "OG"}),
        ("experiment: 'OG' is not one of",),
    ),
    (
        "oco2mip-short-row",
        lambda d: (_oco2(d, _OCO2_COLS, "JPN,2019,1,1,2,2\nJPN,2020,1,1\n"), {"format": "oco2mip"}),
        ("line 55: 4 fields but the header has 6",),
    ),
    (
        "oco2mip-negative-sigma",
        lambda d: (_oco2(d, _OCO2_COLS, "JPN,2019,1,1,2,-2\n"), {}),
        ("line 54, column uncertainty_abs: negative uncertainty",),
    ),
]


@pytest.mark.parametrize(("name", "build", "fragments"), REPORTED_FILE_CASES, ids=[c[0] for c in REPORTED_FILE_CASES])
def test_bad_reported_files_of_every_format_are_named_errors(
    tmp_path: Path,
    name: str,
    build: Callable[[Path], tuple[Path, dict[str, Any]]],
    fragments: tuple[str, ...],
    bad_input_corpus: Callable,
) -> None:
    path, kwargs = build(tmp_path)
    with pytest.raises(ReportedTotalsError) as info:
        read_reported_totals(path, **kwargs)
    msg = str(info.value)
    assert info.value.path == str(path) and str(path) in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    bad_input_corpus(f"reported:{name}", "api-raise")


# ------------------------------------------------------------------------------ boundaries
def _feature(geometry: Any, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"iso3": "XAA", "name": "Aland", **props},
        "geometry": geometry,
    }


def _poly(*xy: tuple[float, float]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[list(p) for p in xy]]}


BOX = _poly((0, 0), (1, 0), (1, 1), (0, 1), (0, 0))
BOUNDARY_CASES: list[tuple[str, Any, dict[str, Any], tuple[str, ...]]] = [
    (
        "point-geometry",
        [_feature({"type": "Point", "coordinates": [0, 0]})],
        {},
        ("XAA", "is a Point"),
    ),
    (
        "line-geometry",
        [_feature({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})],
        {},
        ("XAA", "LineString"),
    ),
    (
        "coordinates-off-the-globe",
        [_feature(_poly((0, 0), (400, 0), (400, 100), (0, 100), (0, 0)))],
        {},
        ("XAA", "outside longitude", "400"),
    ),
    ("null-geometry", [_feature(None)], {}, ("XAA", "no geometry")),
    (
        "unrepairable-geometry",
        [_feature(_poly((0, 0), (1, 1), (2, 2), (0, 0)))],
        {},
        ("XAA", "cannot be repaired"),
    ),
    (
        "unclosed-ring",
        [_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 0]]]})],
        {},
        ("cannot read",),
    ),
    (
        "no-key-column",
        [{"type": "Feature", "properties": {"foo": "a"}, "geometry": BOX}],
        {},
        ("iso3_column",),
    ),
    ("no-region-code", [_feature(BOX, iso3="-99")], {}, ("no region code",)),
    ("unknown-iso3-requested", [_feature(BOX)], {"iso3": ["XAA", "QQQ"]}, ("QQQ", "not found")),
    ("zero-byte", b"", {}, ("cannot read",)),
    ("not-geojson", b"hello, I am a shapefile", {}, ("cannot read",)),
]


# pyogrio warns about the unclosed ring before it refuses the file
@pytest.mark.filterwarnings("ignore:Non closed ring detected")
@pytest.mark.parametrize(
    ("name", "features", "kwargs", "fragments"), BOUNDARY_CASES, ids=[c[0] for c in BOUNDARY_CASES]
)
def test_bad_boundaries_name_the_feature(
    tmp_path: Path,
    name: str,
    features: Any,
    kwargs: dict,
    fragments: tuple[str, ...],
    bad_input_corpus: Callable,
) -> None:
    p = tmp_path / f"{name}.geojson"
    if isinstance(features, bytes):
        p.write_bytes(features)
    else:
        p.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(BoundaryError) as info:
        load_boundaries(p, **kwargs)
    msg = str(info.value)
    assert str(p) in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    bad_input_corpus(f"boundaries:{name}", "api-raise")


def test_missing_boundary_file_and_repairable_geometry(tmp_path: Path, bad_input_corpus: Callable) -> None:
    with pytest.raises(BoundaryError, match="cannot read"):
        load_boundaries(tmp_path / "nope.geojson")
    bad_input_corpus("boundaries:missing-file", "api-raise")
    # self-intersecting: repaired, with a warning
    bowtie = _poly((0, 0), (2, 2), (2, 0), (0, 2), (0, 0))
    p = tmp_path / "bowtie.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [_feature(bowtie)]}))
    with pytest.warns(UserWarning, match="repaired invalid geometries.*XAA"):
        b = load_boundaries(p)
    assert b.geometry.is_valid.all() and sum(g.area for g in b.geometry) == pytest.approx(2.0)
    bad_input_corpus("boundaries:self-intersecting-repaired", "api-assumed")


# ------------------------------------------------------------------------------ configurations
def _template() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "configs" / "template.yaml").read_text())


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for k in parents:
            node = node[int(k)] if k.isdigit() else node[k]
        node[last] = value

    return mutate


def _delete(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


CONFIG_CASES: list[tuple[str, Callable[[dict], None] | str, tuple[str, ...]]] = [
    ("wrong-type-number", _set("domain.resolution", "fine"), ("domain.resolution", '"fine"')),
    ("bool-for-number", _set("domain.resolution", True), ("domain.resolution", "boolean")),
    ("wrong-type-date", _set("period.start", "yesterday"), ("period.start", '"yesterday"')),
    ("string-for-list", _set("gases", "CH4"), ("gases", "valid list", '"CH4"')),
    (
        "string-for-granule-list",
        _set("gases.0.granules", "a/*.nc"),
        ("gases[0].granules", '"a/*.nc"'),
    ),
    (
        "fraction-for-integer",
        _set("compare.min_observations", 2.5),
        ("compare.min_observations", "2.5"),
    ),
    ("out-of-range", _set("cluster.n_workers", 0), ("cluster.n_workers", "0")),
    (
        "infinite-number",
        _set("gases.0.sigma_model", float("inf")),
        ("gases[0].sigma_model", "finite"),
    ),
    (
        "not-an-allowed-value",
        _set("gases.0.screen.surface", "sea"),
        ("gases[0].screen.surface", '"sea"', "'land'"),
    ),
    ("not-a-frequency", _set("period.time_bin", "fortnightly"), ("period.time_bin", "fortnightly")),
    ("unknown-top-level-key", _set("gasses", []), ("gasses: unknown key", "did you mean 'gases'")),
    (
        "unknown-nested-key",
        _set("inversion.prior_eror", 0.3),
        ("inversion.prior_eror", "did you mean 'prior_error'"),
    ),
    ("missing-required-section", _delete("period"), ("period: required key is missing",)),
    ("not-a-mapping", "- a\n- b\n", ("mapping of sections", "list")),
    ("invalid-yaml", "run: [unclosed\n", ("not valid YAML",)),
    ("empty-file", "", ("mapping of sections",)),
]


def _config_file(tmp_path: Path, name: str, spec: Callable[[dict], None] | str) -> Path:
    p = tmp_path / f"{name}.yaml"
    if isinstance(spec, str):
        p.write_text(spec)
    else:
        data = _template()
        spec(data)
        p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(("name", "spec", "fragments"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_api_and_cli_validate(
    tmp_path: Path,
    name: str,
    spec: Any,
    fragments: tuple[str, ...],
    cli: Callable,
    bad_input_corpus: Callable,
) -> None:
    p = _config_file(tmp_path, name, spec)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert str(p) in msg and len(info.value.problems) == 1, info.value.problems
    for frag in fragments:
        assert frag in msg, (frag, msg)
    bad_input_corpus(f"config:{name}", "api-raise")
    rc, out, err = cli(["validate", str(p)])
    assert rc == 2 and out == ""
    _one_error_line(err, *fragments)
    bad_input_corpus(f"config:{name}", "cli")


def test_config_with_several_problems_lists_each_on_its_line(
    tmp_path: Path, cli: Callable, bad_input_corpus: Callable
) -> None:
    data = _template()
    data["domain"]["resolutoin"] = 2.0
    data["compare"]["z_critical"] = "two"
    data["cluster"]["n_workers"] = True
    p = tmp_path / "several.yaml"
    p.write_text(yaml.safe_dump(data))
    rc, _, err = cli(["validate", str(p)])
    lines = err.splitlines()
    assert rc == 2 and "Traceback" not in err
    assert lines[0] == f"gosat-pipeline: error: {p}: 3 problems:" and len(lines) == 4
    assert any("domain.resolutoin" in ln for ln in lines[1:]) and any('"two"' in ln for ln in lines[1:])
    assert any("cluster.n_workers" in ln and "boolean" in ln for ln in lines[1:])
    rc, _, err = cli(["validate", str(tmp_path / "missing.yaml")])
    assert rc == 2
    _one_error_line(err, "config file not found", "missing.yaml")
    bad_input_corpus("config:several-problems", "cli")
    bad_input_corpus("config:missing-file", "cli")


# ------------------------------------------------------------------------------ the real console script
@pytest.mark.timeout(120)
def test_console_script_on_bad_inputs(corpus: Corpus, tmp_path: Path, bad_input_corpus: Callable) -> None:
    """The installed ``gosat-pipeline``, in its own process: exit 2, one line, no traceback."""
    exe = Path(sys.executable).with_name("gosat-pipeline")
    config = _config_file(tmp_path, "bad", _set("domain.resolution", "fine"))
    runs = [
        (
            ["inspect", str(corpus.files["granule:nies_gosat_l2:truncated"][0])],
            "truncated or corrupt",
        ),
        (
            ["inspect", str(corpus.files["granule:tropomi_ch4:time-units-missing"][0])],
            "no units attribute",
        ),
        (["validate", str(config)], "domain.resolution"),
    ]
    for argv, frag in runs:
        res = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res
        _one_error_line(res.stderr, frag)
    bad_input_corpus("granule:nies_gosat_l2:truncated", "console-script")
    bad_input_corpus("granule:tropomi_ch4:time-units-missing", "console-script")
    bad_input_corpus("config:wrong-type-number", "console-script")
