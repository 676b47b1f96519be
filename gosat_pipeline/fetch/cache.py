"""The download cache and its index, ``<cache>/fetch-index.json``.

Files live at ``<cache>/<source>/...``: the cache is keyed by source and file. The index
records, for every file the tool put there or found there and checked, the source URL,
the retrieval time (UTC), the size, the SHA-256 computed here and the checksum the
archive published (if any), plus the file's modification time so that a later fetch
trusts an unchanged file without re-reading it.

This module needs only the standard library: :func:`provenance_for` is what
``pipeline.py`` calls to write where each input of a run came from into ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["INDEX_NAME", "Cache", "file_digest", "provenance_for"]

INDEX_NAME = "fetch-index.json"
_INDEX_VERSION = 1


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file (``sha256`` or ``md5``), read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Cache:
    """A cache directory and its index.

    Parameters
    ----------
    root : path-like
        The cache folder (created when missing).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self._lock = threading.Lock()
        self._data: dict[str, Any] | None = None

    @property
    def index_path(self) -> Path:
        """``<root>/fetch-index.json``."""
        return self.root / INDEX_NAME

    def path(self, relpath: str) -> Path:
        """Absolute path of a cache entry."""
        return self.root / relpath

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            data: dict[str, Any] = {}
            if self.index_path.is_file():
                try:
                    data = json.loads(self.index_path.read_text())
                except (OSError, json.JSONDecodeError):
                    data = {}  # an unreadable index only costs a re-check of every file
            data.setdefault("version", _INDEX_VERSION)
            data.setdefault("files", {})
            self._data = data
        return self._data

    def entry(self, relpath: str) -> dict[str, Any] | None:
        """The index record of a file, or None."""
        with self._lock:
            rec = self._load()["files"].get(relpath)
            return dict(rec) if rec else None

    def is_current(self, relpath: str) -> bool:
        """True when the file exists and has the size and mtime recorded when it was checked."""
        rec = self.entry(relpath)
        p = self.path(relpath)
        if rec is None or not p.is_file():
            return False
        st = p.stat()
        return st.st_size == rec.get("bytes") and abs(st.st_mtime - rec.get("mtime", -1.0)) < 1e-3

    def record(
        self,
        relpath: str,
        *,
        source: str,
        url: str,
        sha256: str,
        published_checksum: str | None,
        retrieved: str | None = None,
        how: str = "downloaded",
        **extra: Any,
    ) -> dict[str, Any]:
        """Store a checked file in the index and save it atomically."""
        st = self.path(relpath).stat()
        rec = {
            "source": source,
            "url": url,
            "retrieved": retrieved or _now(),
            "how": how,
            "bytes": st.st_size,
            "sha256": sha256,
            "published_checksum": published_checksum,
            "mtime": st.st_mtime,
            **extra,
        }
        with self._lock:
            self._load()["files"][relpath] = rec
            self._save()
        return rec

    def forget(self, relpath: str) -> None:
        """Drop a file's record (the file is being replaced)."""
        with self._lock:
            if self._load()["files"].pop(relpath, None) is not None:
                self._save()

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_name(f".{INDEX_NAME}.{os.getpid()}.{threading.get_ident()}.partial")
        tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
        os.replace(tmp, self.index_path)


def _find_index(path: Path, found: dict[Path, Path | None]) -> Path | None:
    """The nearest ancestor folder of ``path`` that holds a fetch index."""
    for parent in path.parents:
        if parent in found:
            return found[parent]
        if (parent / INDEX_NAME).is_file():
            found[parent] = parent
            return parent
    return None


def provenance_for(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Where each input file came from, for the files found in a fetch cache.

    Parameters
    ----------
    records : dict
        ``{path: {"sha256": ..., ...}}``, the manifest's input records.

    Returns
    -------
    dict
        ``{path: {"source", "url", "retrieved", "published_checksum", "sha256_matches"}}``
        for every path inside a folder with a ``fetch-index.json``; ``sha256_matches`` is
        false when the file changed since it was fetched.
    """
    roots: dict[Path, Path | None] = {}
    indices: dict[Path, dict[str, Any]] = {}
    out: dict[str, dict[str, Any]] = {}
    for path, rec in records.items():
        p = Path(path).resolve()
        root = _find_index(p, roots)
        if root is None:
            continue
        if root not in indices:
            try:
                indices[root] = json.loads((root / INDEX_NAME).read_text()).get("files", {})
            except (OSError, json.JSONDecodeError):
                indices[root] = {}
        entry = indices[root].get(p.relative_to(root).as_posix())
        if entry is None:
            continue
        out[path] = {
            "source": entry.get("source"),
            "url": entry.get("url"),
            "retrieved": entry.get("retrieved"),
            "published_checksum": entry.get("published_checksum"),
            "fetched_sha256": entry.get("sha256"),
            "sha256_matches": entry.get("sha256") == rec.get("sha256"),
        }
    return out
