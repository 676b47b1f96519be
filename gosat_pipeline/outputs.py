"""Atomic writes and checksums for every file the package produces.

A file is first written under a temporary name in the destination folder and then
renamed over the target with :func:`os.replace`, which is atomic on POSIX. A run
killed mid-write therefore leaves either the previous complete file or a
``*.partial`` temporary that no later run mistakes for output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import xarray as xr

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_netcdf",
    "atomic_write_text",
    "sha256_file",
]

logger = logging.getLogger(__name__)

#: HDF5 (under netCDF4 and h5py) is not thread-safe. Code of this package that opens HDF5 or
#: netCDF files from several threads of one process outside xarray's own locking (the
#: ingest's granule groups on a threaded scheduler, the fetcher's checks from its download
#: pool) holds this lock around each read or write; it is taken before any of xarray's locks,
#: never while holding one, so the two cannot deadlock. Reentrant: a holder may open again.
HDF5_IO_LOCK = threading.RLock()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import: os.umask() is process-wide and not safe to toggle from writer threads.
_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary is removed if the body raises. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("default", str)
    return atomic_write_text(json.dumps(obj, **kwargs) + "\n", path)


def atomic_write_netcdf(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    compute_hook: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> Path:
    """Write ``ds`` to netCDF-4 at ``path`` atomically; computes lazy data while writing.

    Parameters
    ----------
    ds : xarray.Dataset
    path : path-like
    compute_hook : callable, optional
        Called with the delayed write object when ``compute=False`` is passed
        in ``kwargs`` (used by the CLI to show a progress bar); it must compute it.
    **kwargs
        Passed to :meth:`xarray.Dataset.to_netcdf` (``encoding=`` and so on).
    """
    kwargs.setdefault("engine", "netcdf4")
    with atomic_path(path) as tmp:
        if compute_hook is not None:
            delayed = ds.to_netcdf(tmp, compute=False, **kwargs)
            compute_hook(delayed)
        else:
            ds.to_netcdf(tmp, **kwargs)
    logger.debug("wrote %s", path)
    return Path(path)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()
