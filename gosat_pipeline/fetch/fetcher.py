"""Execute a :class:`~gosat_pipeline.fetch._core.Plan` into a :class:`~gosat_pipeline.fetch.cache.Cache`.

For every file, in a bounded thread pool:

1. a file the index knows, unchanged since it was checked (size and mtime), is kept as is;
2. a file present but unknown or changed is checked (size, checksum, open-and-check) and
   recorded if good, or removed if not;
3. otherwise it is downloaded into ``<cache>/.partial/<path>`` (resuming what an
   interrupted fetch left there), checked, and moved into place; a file that fails its
   checks is removed and downloaded once more before the fetch reports it;
4. the members a ``tar`` must provide are extracted next to it and checked as granules.

Every file kept or fetched is recorded in ``fetch-index.json`` with its source URL,
retrieval time and checksums. Nothing is printed: progress goes to a callback object
(the CLI's progress bar) and the log.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gosat_pipeline.fetch._core import FileSpec, Plan
from gosat_pipeline.fetch._errors import CorruptFileError, CredentialError, FetchError
from gosat_pipeline.fetch.cache import Cache
from gosat_pipeline.fetch.http import public_url
from gosat_pipeline.fetch.verify import check_file

__all__ = ["FetchReport", "Progress", "execute_plan"]

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"


class Progress(Protocol):
    """What :func:`execute_plan` reports to; the CLI draws a progress bar from it."""

    def start(self, n_files: int, total_bytes: int) -> None:
        """Called once: files to examine and the bytes the archives listed."""

    def update(self, nbytes: int) -> None:
        """Bytes received."""

    def file_done(self, spec: FileSpec, status: str) -> None:
        """One file finished: ``cached``, ``verified``, ``downloaded``, ``replaced`` or ``failed``."""

    def close(self) -> None:
        """All done."""


class _LogProgress:
    def start(self, n_files: int, total_bytes: int) -> None:
        logger.info("fetch: %d file(s), %.1f MB listed by the archives", n_files, total_bytes / 1e6)

    def update(self, nbytes: int) -> None:
        pass

    def file_done(self, spec: FileSpec, status: str) -> None:
        logger.info("%s: %s", spec.relpath, status)

    def close(self) -> None:
        pass


@dataclass
class FetchReport:
    """What a fetch did: cache paths per outcome, bytes received and failures."""

    cache: Path
    cached: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes_received: int = 0

    def summary(self) -> str:
        """One line."""
        return (
            f"{len(self.downloaded)} downloaded ({self.bytes_received / 1e6:.1f} MB), "
            f"{len(self.cached) + len(self.verified)} already in the cache, {len(self.replaced)} corrupt "
            f"file(s) replaced, {len(self.failed)} failed"
        )


class _Executor:
    def __init__(self, cache: Cache, transports: dict[str, Any], progress: Progress, *, verify: bool) -> None:
        self.cache = cache
        self.transports = transports
        self.progress = progress
        self.verify = verify
        self.report = FetchReport(cache.root)
        self._lock = threading.Lock()

    def _note(self, bucket: str, relpath: str) -> None:
        with self._lock:
            getattr(self.report, bucket).append(relpath)

    def _received(self, n: int) -> None:
        with self._lock:
            self.report.bytes_received += n
        self.progress.update(n)

    def run_one(self, spec: FileSpec) -> None:
        try:
            status = self._ensure(spec)
            if spec.extract:
                self._extract(spec)
        except CredentialError:
            self.progress.file_done(spec, "failed")
            raise
        except FetchError as exc:
            with self._lock:
                self.report.failed[spec.relpath] = str(exc)
            logger.error("%s", exc)
            self.progress.file_done(spec, "failed")
            return
        self.progress.file_done(spec, status)

    def _ensure(self, spec: FileSpec) -> str:
        dest = self.cache.path(spec.relpath)
        if not self.verify and self.cache.is_current(spec.relpath):
            self._note("cached", spec.relpath)
            return "cached"
        replaced = False
        prev = self.cache.entry(spec.relpath) or {}
        self.cache.forget(spec.relpath)
        if dest.is_file():
            try:
                sha = check_file(dest, spec, variables=spec.variables)
            except CorruptFileError as exc:
                logger.warning("removing a corrupt cached file and fetching it again: %s", exc)
                dest.unlink()
                self.cache.forget(spec.relpath)
                replaced = True
            else:
                self.cache.record(
                    spec.relpath,
                    source=spec.source,
                    url=public_url(spec.url),
                    sha256=sha,
                    published_checksum=spec.checksum,
                    retrieved=prev.get("retrieved"),
                    how=prev.get("how", "found in the cache and checked"),
                )
                self._note("verified", spec.relpath)
                return "verified"
        self._download_checked(spec)
        self._note("replaced" if replaced else "downloaded", spec.relpath)
        return "replaced" if replaced else "downloaded"

    def _download_checked(self, spec: FileSpec) -> None:
        dest = self.cache.path(spec.relpath)
        part = self.cache.root / PARTIAL_DIR / spec.relpath
        part.parent.mkdir(parents=True, exist_ok=True)
        transport = self.transports[spec.credential]
        for attempt in (1, 2):
            transport.download(spec, part, self._received)
            try:
                sha = check_file(part, spec, variables=spec.variables)
                break
            except CorruptFileError as exc:
                part.unlink(missing_ok=True)
                if attempt == 2:
                    raise CorruptFileError(
                        spec.relpath, f"downloaded twice and failed both times: {exc.reason}"
                    ) from None
                logger.warning("%s; downloading it again", exc)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
        self.cache.record(
            spec.relpath, source=spec.source, url=public_url(spec.url), sha256=sha, published_checksum=spec.checksum
        )

    def _extract(self, spec: FileSpec) -> None:
        """Extract the archive members ``spec.extract`` selects (by name, and date if given), each checked."""
        assert spec.extract is not None
        rx = re.compile(spec.extract["pattern"])
        lo, hi = spec.extract.get("start"), spec.extract.get("end")
        path = self.cache.path(spec.relpath)

        def wanted(name: str) -> bool:
            m = rx.search(Path(name).name)
            if not m:
                return False
            return lo is None or hi is None or lo <= m.group(1) < hi

        try:
            if spec.check == "tar":
                with tarfile.open(path) as tf:
                    for member in tf.getmembers():
                        if member.isfile() and wanted(member.name):
                            self._extract_one(spec, member.name, lambda m=member: tf.extractfile(m))
            else:
                with zipfile.ZipFile(path) as zf:
                    for name in zf.namelist():
                        if not name.endswith("/") and wanted(name):
                            self._extract_one(spec, name, lambda n=name: zf.open(n))
        except (tarfile.TarError, zipfile.BadZipFile) as exc:
            raise FetchError(f"{spec.relpath}: cannot be extracted ({exc})") from None

    def _extract_one(self, spec: FileSpec, member: str, opener: Callable[[], Any]) -> None:
        rel = str(Path(spec.relpath).parent / Path(member).name)
        if not self.verify and self.cache.is_current(rel):
            return
        part = self.cache.root / PARTIAL_DIR / rel
        part.parent.mkdir(parents=True, exist_ok=True)
        src = opener()
        if src is None:  # pragma: no cover - regular members always extract
            raise FetchError(f"{spec.relpath}: member {member!r} cannot be read")
        with src, open(part, "wb") as out:
            shutil.copyfileobj(src, out)
        assert spec.extract is not None
        mspec = FileSpec(
            source=spec.source,
            url=f"{spec.url}#{member}",
            relpath=rel,
            check=spec.extract.get("check", "l2"),
            role=spec.role,
        )
        sha = check_file(part, mspec)
        os.replace(part, self.cache.path(rel))
        self.cache.record(
            rel,
            source=spec.source,
            url=public_url(spec.url) + f"#{member}",
            sha256=sha,
            published_checksum=None,
            how="extracted",
            container=spec.relpath,
        )


def execute_plan(
    plan: Plan,
    cache: Cache,
    transports: dict[str, Any],
    *,
    workers: int = 4,
    progress: Progress | None = None,
    verify: bool = False,
) -> FetchReport:
    """Make the cache hold every file of ``plan``; see the module docstring.

    Parameters
    ----------
    plan : Plan
    cache : Cache
    transports : dict
        URL scheme (``https``, ``http``, ``cds``) to an object with
        ``download(spec, part_path, on_bytes)``.
    workers : int
        Parallel downloads (bounded pool).
    progress : Progress, optional
        Receives progress events (default: the log).
    verify : bool
        Re-check every cached file even when the index says it is unchanged.

    Returns
    -------
    FetchReport

    Raises
    ------
    CredentialError
        A login is missing or refused (the remaining downloads are cancelled).
    """
    progress = progress or _LogProgress()
    ex = _Executor(cache, transports, progress, verify=verify)
    progress.start(len(plan.files), plan.known_bytes)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fetch") as pool:
            futures = [pool.submit(ex.run_one, f) for f in plan.files]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for fut in pending:
                fut.cancel()
            for fut in done:
                exc = fut.exception()
                if exc is not None:
                    raise exc
    finally:
        progress.close()
    return ex.report


def noop_bytes(_: int) -> None:
    """A byte counter that ignores its input."""


OnBytes = Callable[[int], None]
