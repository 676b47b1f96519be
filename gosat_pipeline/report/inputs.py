"""Reading the stored outputs of a run directory for the report.

The report is rebuilt from files only (``gosat-pipeline report RUN_DIR``), never from
objects in memory, so that what the agency reads is exactly what was archived.

A run directory holds one set of files per gas, ``posterior_<GAS>.nc``,
``emissions_<GAS>.nc`` and ``gridded_<GAS>.nc`` (GAS matching ``[A-Z0-9]+``, as the
pipeline writes them), or the legacy single-gas ``posterior.nc``, ``emissions.nc``,
``gridded.nc``; plus one ``discrepancies.json`` for all gases. At least one posterior
and ``discrepancies.json`` are required; every other file is optional and its absence
(or a read failure) becomes a note in the report.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from gosat_pipeline.errors import GosatPipelineError
from gosat_pipeline.schema import DISCREPANCY_SCHEMA_VERSION

__all__ = ["GasData", "RunData", "load_run", "is_synthetic_flag", "gas_files"]

logger = logging.getLogger(__name__)

REQUIRED = ("posterior_<GAS>.nc or posterior.nc", "discrepancies.json")
#: per-gas optional outputs: role -> what the report loses without it
GAS_OPTIONAL = {
    "emissions": "prior and posterior emission maps",
    "gridded": "gridded satellite observations (L3)",
}
OPTIONAL = {
    "boundaries.geojson": "region outlines for the maps",
    "manifest.json": "provenance (inputs, checksums, versions)",
    "config.resolved.yaml": "the resolved configuration",
}
_POSTERIOR = re.compile(r"^posterior_([A-Z0-9]+)\.nc$")


@dataclass
class GasData:
    """The outputs of one gas of a run.

    Attributes
    ----------
    gas : str
        "CH4", "CO2", ... ("" when a legacy ``posterior.nc`` does not say).
    files : dict
        role ("posterior", "emissions", "gridded") -> file name in the run directory.
    posterior : xarray.Dataset, optional
        None only for a gas that has discrepancy rows but no posterior file.
    emissions, gridded : xarray.Dataset, optional
    mass_balance : pandas.DataFrame, optional
        ``mass_balance_<GAS>.csv``: region, region_name, mass_balance_emission (Tg yr-1).
    missing : list of (file name, why)
        This gas's optional files that were not found or could not be read.
    """

    gas: str
    files: dict[str, str]
    posterior: xr.Dataset | None = None
    emissions: xr.Dataset | None = None
    gridded: xr.Dataset | None = None
    mass_balance: pd.DataFrame | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class RunData:
    """Everything the report shows, read from a run directory.

    ``gases`` maps each gas to its :class:`GasData` (sorted by gas); ``missing`` lists
    the run-wide optional files that were not found or not readable (per-gas files are
    in each :attr:`GasData.missing`); ``notes`` are other caveats for the reader.
    """

    run_dir: Path
    discrepancies: dict[str, Any]
    gases: dict[str, GasData] = field(default_factory=dict)
    boundaries: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def gas_files(gas: str, legacy: bool = False) -> dict[str, str]:
    """File names of one gas's outputs: role -> name.

    Parameters
    ----------
    gas : str
        e.g. "CH4".
    legacy : bool
        The single-gas names (``posterior.nc``, ``emissions.nc``, ``gridded.nc``).

    Returns
    -------
    dict
        ``{"posterior": ..., "emissions": ..., "gridded": ..., "mass_balance": ...}``.
    """
    roles = ("posterior", "emissions", "gridded")
    names = {r: f"{r}.nc" if legacy else f"{r}_{gas}.nc" for r in roles}
    names["mass_balance"] = "mass_balance.csv" if legacy else f"mass_balance_{gas}.csv"
    return names


def is_synthetic_flag(value: Any) -> bool:
    """True for True, 1, "true", "yes", "1" (the ways a ``synthetic`` flag is stored)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1", "y")
    try:
        return bool(value)
    except (TypeError, ValueError):
        return False


def _open_netcdf(path: Path) -> xr.Dataset:
    with xr.open_dataset(path) as ds:
        return ds.load()


def _read_discrepancies(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "discrepancies.json"
    if not path.is_file():
        raise GosatPipelineError(
            f"{path}: required for the report but not found; run the compare stage first "
            "(gosat-pipeline run CONFIG) or point to the right run directory"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GosatPipelineError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise GosatPipelineError(
            f"{path}: expected an object with a 'rows' list "
            f"(schema {DISCREPANCY_SCHEMA_VERSION}); found {type(doc).__name__} with keys "
            f"{sorted(doc) if isinstance(doc, dict) else []}"
        )
    return doc


def _row_gases(doc: dict[str, Any]) -> list[str]:
    """Gases named by the discrepancy rows, in order of appearance."""
    rows = [r for r in doc.get("rows", []) if isinstance(r, dict)]
    return list(dict.fromkeys(str(r.get("gas") or "").upper() for r in rows if r.get("gas")))


def _read_posterior(run_dir: Path, name: str) -> xr.Dataset:
    try:
        return _open_netcdf(run_dir / name)
    except (OSError, ValueError) as exc:
        raise GosatPipelineError(f"{run_dir / name}: cannot be read as netCDF ({exc})") from exc


def _discover(run_dir: Path, doc: dict[str, Any], notes: list[str]) -> dict[str, GasData]:
    """Per-gas outputs: every ``posterior_<GAS>.nc`` plus a legacy ``posterior.nc``."""
    gases: dict[str, GasData] = {}
    for path in sorted(run_dir.glob("posterior_*.nc")):
        m = _POSTERIOR.match(path.name)
        if m is None:
            notes.append(f"{path.name} ignored: the gas suffix must match [A-Z0-9]+ (e.g. posterior_CH4.nc)")
            continue
        gas = m.group(1)
        post = _read_posterior(run_dir, path.name)
        attr = str(post.attrs.get("gas") or "").upper()
        if attr and attr != gas:
            notes.append(f"{path.name} says gas {attr!r} in its attributes; it is shown as {gas}, from its name")
        gases[gas] = GasData(gas, gas_files(gas), posterior=post)
    if (run_dir / "posterior.nc").is_file():
        post = _read_posterior(run_dir, "posterior.nc")
        gas = str(post.attrs.get("gas") or "").upper()
        if not gas:  # an old file without the attribute: the rows no suffixed posterior claims
            left = [g for g in _row_gases(doc) if g not in gases]
            gas = left[0] if len(left) == 1 else ""
        if gas in gases:
            notes.append(f"posterior.nc (gas {gas}) ignored: posterior_{gas}.nc is the output of this run")
        elif not gas and gases:
            notes.append(
                "posterior.nc ignored: it does not record its gas, and the posterior_<GAS>.nc files "
                f"({', '.join(gases)}) cover every gas of discrepancies.json"
            )
        else:
            gases[gas] = GasData(gas, gas_files(gas, legacy=True), posterior=post)
    return gases


def _read_gas_optional(run_dir: Path, gd: GasData) -> None:
    for role, what in GAS_OPTIONAL.items():
        name = gd.files[role]
        path = run_dir / name
        label = f"{what} ({gd.gas})" if gd.gas else what
        if not path.is_file():
            gd.missing.append((name, f"not found: {label} not shown"))
            continue
        try:
            setattr(gd, role, _open_netcdf(path))
        except Exception as exc:  # any failure of an optional file degrades to a note
            logger.warning("report: cannot read %s: %s", path, exc)
            gd.missing.append((name, f"could not be read ({type(exc).__name__}: {exc}): {label} not shown"))
    _read_mass_balance(run_dir, gd)


def _read_mass_balance(run_dir: Path, gd: GasData) -> None:
    """The mass-balance cross-check of one gas (optional; absent in runs made before it existed)."""
    name = gd.files["mass_balance"]
    path = run_dir / name
    if not path.is_file():
        return
    try:
        df = pd.read_csv(path)
        if not {"region", "mass_balance_emission"} <= set(df.columns):
            raise ValueError(f"expected columns region, mass_balance_emission; found {list(df.columns)}")
        gd.mass_balance = df
    except Exception as exc:  # any failure of an optional file degrades to a note
        logger.warning("report: cannot read %s: %s", path, exc)
        gd.missing.append(
            (name, f"could not be read ({type(exc).__name__}: {exc}): mass-balance cross-check not shown")
        )


def _read_boundaries(path: Path) -> list[dict[str, Any]]:
    """Features of a GeoJSON file as {region, name, geometry (shapely)}."""
    from shapely.geometry import shape

    doc = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for feat in doc.get("features", []):
        geom = feat.get("geometry")
        if not geom:
            continue
        props = feat.get("properties") or {}
        out.append(
            {"region": str(props.get("region", "")), "name": str(props.get("name", "")), "geometry": shape(geom)}
        )
    return out


def _read_optional(data: RunData) -> None:
    readers = {
        "boundaries.geojson": lambda p: setattr(data, "boundaries", _read_boundaries(p)),
        "manifest.json": lambda p: setattr(data, "manifest", _manifest(json.loads(p.read_text(encoding="utf-8")))),
        "config.resolved.yaml": lambda p: setattr(data, "config_text", p.read_text(encoding="utf-8")),
    }
    for name, read in readers.items():
        path = data.run_dir / name
        if not path.is_file():
            data.missing.append((name, f"not found: {OPTIONAL[name]} not shown"))
            continue
        try:
            read(path)
        except Exception as exc:  # any failure of an optional file degrades to a note
            logger.warning("report: cannot read %s: %s", path, exc)
            data.missing.append((name, f"could not be read ({type(exc).__name__}: {exc}): {OPTIONAL[name]} not shown"))


def _manifest(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
    return obj


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory, one :class:`GasData` per gas.

    Parameters
    ----------
    run_dir : path-like
        With ``posterior_<GAS>.nc`` for each gas (GAS matching ``[A-Z0-9]+``) and/or the
        legacy ``posterior.nc`` (its gas from its ``gas`` attribute, else from the
        discrepancy rows), ``discrepancies.json``, and optionally ``emissions_<GAS>.nc``,
        ``gridded_<GAS>.nc`` (``emissions.nc``, ``gridded.nc`` beside ``posterior.nc``),
        ``boundaries.geojson``, ``manifest.json``, ``config.resolved.yaml``.

    Returns
    -------
    RunData
        A gas with discrepancy rows but no posterior file gets a :class:`GasData`
        without datasets and a note.

    Raises
    ------
    GosatPipelineError
        When the directory has no posterior file at all, when ``discrepancies.json`` is
        missing or malformed, or when a posterior file cannot be read (the message
        names the file).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GosatPipelineError(f"{run_dir}: run directory not found")
    doc = _read_discrepancies(run_dir)
    notes: list[str] = []
    gases = _discover(run_dir, doc, notes)
    if not gases:
        raise GosatPipelineError(
            f"{run_dir}: no posterior file found (posterior_<GAS>.nc, e.g. posterior_CH4.nc, or posterior.nc); "
            "the report needs the inversion output of at least one gas: run the inversion stage first "
            "(gosat-pipeline run CONFIG) or point to the right run directory"
        )
    for gas in _row_gases(doc):
        if gas not in gases:
            notes.append(
                f"discrepancies.json has rows for {gas} but the run directory has no posterior_{gas}.nc: "
                f"its maps and inversion diagnostics are not shown"
            )
            gases[gas] = GasData(gas, gas_files(gas))
    data = RunData(run_dir=run_dir, discrepancies=doc, gases=dict(sorted(gases.items())), notes=notes)
    version = doc.get("schema_version")
    if version != DISCREPANCY_SCHEMA_VERSION:
        data.notes.append(
            f"discrepancies.json has schema version {version!s}; this report expects "
            f"{DISCREPANCY_SCHEMA_VERSION} (columns may be missing)"
        )
    for gd in data.gases.values():
        if gd.posterior is not None:
            _read_gas_optional(run_dir, gd)
    _read_optional(data)
    return data
