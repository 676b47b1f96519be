"""Checks of a downloaded or cached file: size, checksum, then open-and-check.

The open-and-check uses the project's own readers where they exist: an L2 granule must
open with :func:`gosat_pipeline.io.open_granule`, a netCDF file with netCDF4, an HDF5 file
with h5py reading every dataset, a zip or an xlsx workbook must pass every member's CRC,
a tar must list to its end, a CSV must decode.
A file that fails any of them raises :class:`CorruptFileError` and is removed and fetched
again by the caller.
"""

from __future__ import annotations

import logging
import tarfile
import zipfile
from pathlib import Path

from gosat_pipeline.fetch._core import FileSpec
from gosat_pipeline.fetch._errors import CorruptFileError
from gosat_pipeline.fetch.cache import file_digest
from gosat_pipeline.outputs import HDF5_IO_LOCK

__all__ = ["check_file", "open_check"]

logger = logging.getLogger(__name__)


def _check_l2(path: Path) -> None:
    from gosat_pipeline.errors import GosatPipelineError
    from gosat_pipeline.io import open_granule

    try:
        ds = open_granule(path, screen=False)
        ds.close()
    except GosatPipelineError as exc:
        raise CorruptFileError(str(path), f"does not open as an L2 granule: {exc}") from None


def _check_netcdf(path: Path, variables: tuple[str, ...] = ()) -> None:
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            names = set(nc.variables)
            for g in nc.groups.values():
                names |= set(g.variables)
    except OSError as exc:
        raise CorruptFileError(str(path), f"does not open as netCDF: {exc}") from None
    missing = [v for v in variables if v not in names]
    if missing:
        raise CorruptFileError(str(path), f"netCDF file lacks variable(s) {missing}")


def _check_hdf5(path: Path) -> None:
    import h5py

    def read_all(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and obj.shape:
            step = max(1, (64 << 20) // max(1, obj.nbytes // max(1, obj.shape[0])))
            for i in range(0, obj.shape[0], step):  # in blocks of about 64 MB
                obj[i : i + step]
        elif isinstance(obj, h5py.Dataset):
            obj[()]

    try:
        with h5py.File(path, "r") as f:
            f.visititems(read_all)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CorruptFileError(str(path), f"does not open as a complete HDF5 file: {exc}") from None


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptFileError(str(path), f"is not a complete zip archive: {exc}") from None
    if bad is not None:
        raise CorruptFileError(str(path), f"zip member {bad!r} fails its CRC check")


def _check_tar(path: Path) -> None:
    try:
        with tarfile.open(path) as tf:
            for member in tf:
                if member.isfile():
                    f = tf.extractfile(member)
                    if f is not None:
                        while f.read(1 << 20):
                            pass
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptFileError(str(path), f"is not a complete tar archive: {exc}") from None


def _check_csv(path: Path) -> None:
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        try:
            text = path.read_bytes().decode("latin-1")
        except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes any byte
            raise CorruptFileError(str(path), f"is not text: {exc}") from None
    if not text.strip() or "," not in text:
        raise CorruptFileError(str(path), "is empty or not comma-separated")


def open_check(path: Path, check: str, variables: tuple[str, ...] = ()) -> None:
    """Open ``path`` the way its kind requires; raise :class:`CorruptFileError` if it fails."""
    if check in ("l2", "netcdf", "hdf5"):
        with HDF5_IO_LOCK:  # checks run from the download pool's threads
            _open_check(path, check, variables)
        return
    _open_check(path, check, variables)


def _open_check(path: Path, check: str, variables: tuple[str, ...] = ()) -> None:
    if check == "l2":
        _check_l2(path)
    elif check == "netcdf":
        _check_netcdf(path, variables)
    elif check == "hdf5":
        _check_hdf5(path)
    elif check in ("zip", "xlsx"):
        _check_zip(path)
    elif check == "tar":
        _check_tar(path)
    elif check == "csv":
        _check_csv(path)
    else:  # pragma: no cover - FileSpec validates check
        raise ValueError(check)


def check_file(path: Path, spec: FileSpec, *, variables: tuple[str, ...] = ()) -> str:
    """Size, published checksum and open-and-check of ``path`` against ``spec``.

    Returns
    -------
    str
        The file's SHA-256 (hex).

    Raises
    ------
    CorruptFileError
        Wrong size, wrong checksum, or the file does not open.
    """
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        kind = "truncated" if size < spec.size else "too long"
        raise CorruptFileError(str(path), f"{kind}: {size} bytes, the archive lists {spec.size}")
    sha256 = file_digest(path, "sha256")
    if spec.checksum:
        algo, _, want = spec.checksum.partition(":")
        got = sha256 if algo == "sha256" else file_digest(path, algo)
        if got.lower() != want.lower():
            raise CorruptFileError(str(path), f"{algo} {got} does not match the published {want}")
    open_check(path, spec.check, variables)
    return sha256
