"""The plan of a fetch: which files, from where, to which cache path, checked how.

A :class:`FileSpec` is one file to have in the cache; a :class:`Plan` is the list of
them for a run (or one source), with notes. Planning talks to the archives' listings or
search APIs but downloads nothing; :func:`gosat_pipeline.fetch.fetch` then executes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import PurePosixPath
from typing import Any

__all__ = ["FileSpec", "Plan", "Request", "CHECKS"]

#: How a file is opened and checked after its size and checksum: ``l2`` with the
#: project's own granule readers, ``netcdf`` with netCDF4, ``hdf5`` with h5py by reading
#: every dataset (for products whose layout the readers have not confirmed on a real file),
#: ``zip``/``xlsx`` by reading every member's CRC, ``tar`` by listing every member, ``csv``
#: by decoding it.
CHECKS = ("l2", "netcdf", "hdf5", "zip", "xlsx", "tar", "csv")


@dataclass(frozen=True)
class Request:
    """What one source needs: the run's period (UTC, end exclusive), box and options.

    Parameters
    ----------
    source : str
        Source name (``gosat-pipeline fetch --list``).
    start, end : datetime.date
        First day and the day after the last one.
    bbox : tuple of float
        (west, south, east, north), degrees.
    gas : str, optional
        ``CO2`` or ``CH4`` where the source serves both.
    options : dict
        Source options (product, version, year, url, base_url, record, file_pattern,
        stream, overpass_filter).
    """

    source: str
    start: date
    end: date
    bbox: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0)
    gas: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def opt(self, key: str, default: Any = None) -> Any:
        """An option, or ``default`` when unset or null."""
        v = self.options.get(key)
        return default if v is None else v


@dataclass(frozen=True)
class FileSpec:
    """One file the cache must hold.

    Parameters
    ----------
    source : str
        Source name; the first component of ``relpath``.
    url : str
        Where it comes from (``https://``; ``sftp://`` for the GOSAT-2 Product Archive;
        ``cds://DATASET`` for a Climate Data Store request).
    relpath : str
        POSIX path inside the cache (``<source>/...``).
    size : int, optional
        Bytes, when the archive publishes it (listing, search API or record).
    checksum : str, optional
        ``md5:<hex>`` or ``sha256:<hex>`` when the archive publishes one.
    check : str
        One of :data:`CHECKS`.
    role : str
        What the run uses it for: ``granule:<GAS>``, ``prior:<GAS>``, ``reported``,
        ``reference`` or ``winds``.
    credential : str, optional
        Credential id (``earthdata``, ``nies``, ``gosat2``, ``cds``) when the archive needs a login.
    extract : dict, optional
        For a ``tar`` or ``zip``: ``{"pattern": regex, "start": "YYYYMMDD", "end": "YYYYMMDD",
        "check": "l2"}``; members whose name matches (and, with start/end, whose first
        regex group is a date in [start, end)) are extracted next to it and checked
        (``check``, default ``l2``).
    request : dict, optional
        For ``cds://``: ``{"dataset": ..., "request": {...}}`` for the Climate Data Store.
    variables : tuple of str
        netCDF variables the file must hold.
    """

    source: str
    url: str
    relpath: str
    size: int | None = None
    checksum: str | None = None
    check: str = "netcdf"
    role: str = "reference"
    credential: str | None = None
    extract: dict[str, str] | None = None
    request: dict[str, Any] | None = None
    variables: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        p = PurePosixPath(self.relpath)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"cache path {self.relpath!r} must be relative and stay inside the cache")
        if self.check not in CHECKS:
            raise ValueError(f"check {self.check!r} is not one of {CHECKS}")

    @property
    def name(self) -> str:
        """The file name."""
        return PurePosixPath(self.relpath).name


@dataclass
class Plan:
    """Everything a fetch would download, in order, with notes for the user."""

    files: list[FileSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extend(self, other: Plan) -> None:
        """Append another plan, dropping files already listed (same cache path)."""
        seen = {f.relpath for f in self.files}
        self.files += [f for f in other.files if f.relpath not in seen]
        self.notes += other.notes

    @property
    def known_bytes(self) -> int:
        """Total of the published sizes."""
        return sum(f.size or 0 for f in self.files)

    @property
    def unknown_sizes(self) -> int:
        """How many files have no published size."""
        return sum(f.size is None for f in self.files)

    def to_json(self) -> str:
        """The plan as JSON (read back by :meth:`from_json`); holds no credential."""
        return json.dumps(
            {"version": 1, "files": [asdict(f) for f in self.files], "notes": self.notes}, indent=1, default=str
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        files = [FileSpec(**{**f, "variables": tuple(f.get("variables", ()))}) for f in data["files"]]
        return cls(files=files, notes=list(data.get("notes", [])))

    def url_list(self) -> str:
        """One ``URL<TAB>cache path`` line per file (``cds://`` requests are described in the JSON)."""
        return "".join(f"{f.url}\t{f.relpath}\n" for f in self.files)
