"""Reading the stored outputs of a run directory for the report.

The report is rebuilt from files only (``gosat-pipeline report RUN_DIR``), never from
objects in memory, so that what the agency reads is exactly what was archived.
``posterior.nc`` and ``discrepancies.json`` are required; every other file is optional
and its absence (or a read failure) becomes a note in the report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from gosat_pipeline.errors import GosatPipelineError
from gosat_pipeline.schema import DISCREPANCY_SCHEMA_VERSION

__all__ = ["RunData", "load_run", "is_synthetic_flag"]

logger = logging.getLogger(__name__)

REQUIRED = ("posterior.nc", "discrepancies.json")
OPTIONAL = {
    "emissions.nc": "prior and posterior emission maps",
    "gridded.nc": "gridded satellite observations (L3)",
    "boundaries.geojson": "region outlines for the maps",
    "manifest.json": "provenance (inputs, checksums, versions)",
    "config.resolved.yaml": "the resolved configuration",
}


@dataclass
class RunData:
    """Everything the report shows, read from a run directory."""

    run_dir: Path
    posterior: xr.Dataset
    discrepancies: dict[str, Any]
    emissions: xr.Dataset | None = None
    gridded: xr.Dataset | None = None
    boundaries: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    config_text: str | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _read_required(run_dir: Path) -> tuple[xr.Dataset, dict[str, Any]]:
    for name in REQUIRED:
        if not (run_dir / name).is_file():
            raise GosatPipelineError(
                f"{run_dir / name}: required for the report but not found; run the inversion and "
                "compare stages first (gosat-pipeline run CONFIG) or point to the right run directory"
            )
    try:
        posterior = _open_netcdf(run_dir / "posterior.nc")
    except (OSError, ValueError) as exc:
        raise GosatPipelineError(f"{run_dir / 'posterior.nc'}: cannot be read as netCDF ({exc})") from exc
    try:
        doc = json.loads((run_dir / "discrepancies.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GosatPipelineError(f"{run_dir / 'discrepancies.json'}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise GosatPipelineError(
            f"{run_dir / 'discrepancies.json'}: expected an object with a 'rows' list "
            f"(schema {DISCREPANCY_SCHEMA_VERSION}); found {type(doc).__name__} with keys "
            f"{sorted(doc) if isinstance(doc, dict) else []}"
        )
    return posterior, doc


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
        out.append({"region": str(props.get("region", "")), "name": str(props.get("name", "")),
                    "geometry": shape(geom)})  # fmt: skip
    return out


def _read_optional(data: RunData) -> None:
    readers = {
        "emissions.nc": lambda p: setattr(data, "emissions", _open_netcdf(p)),
        "gridded.nc": lambda p: setattr(data, "gridded", _open_netcdf(p)),
        "boundaries.geojson": lambda p: setattr(data, "boundaries", _read_boundaries(p)),
        "manifest.json": lambda p: setattr(data, "manifest", _manifest(json.loads(p.read_text(encoding="utf-8")))),
        "config.resolved.yaml": lambda p: setattr(data, "config_text", p.read_text(encoding="utf-8")),
    }  # fmt: skip
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
    """Read a run directory.

    Raises
    ------
    GosatPipelineError
        When ``posterior.nc`` or ``discrepancies.json`` is missing or unreadable
        (the message names the file).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GosatPipelineError(f"{run_dir}: run directory not found")
    posterior, doc = _read_required(run_dir)
    data = RunData(run_dir=run_dir, posterior=posterior, discrepancies=doc)
    version = doc.get("schema_version")
    if version != DISCREPANCY_SCHEMA_VERSION:
        data.notes.append(f"discrepancies.json has schema version {version!s}; this report expects "
                          f"{DISCREPANCY_SCHEMA_VERSION} (columns may be missing)")  # fmt: skip
    _read_optional(data)
    return data
