"""``gosat-pipeline fetch``: get what a run needs from the public archives into a local cache.

Plan, then fetch::

    from gosat_pipeline import load_config
    from gosat_pipeline.fetch import plan_for_config, fetch

    cfg = load_config("configs/real_month.yaml")
    plan = plan_for_config(cfg)           # lists the archives; downloads nothing
    report = fetch(plan, cfg.fetch.cache_dir, workers=cfg.fetch.workers)

A plan is a list of :class:`FileSpec` (URL, cache path, published size and checksum, how
to check the file); :func:`fetch` makes the cache hold each of them -- skipping what is
already there and checked, resuming interrupted downloads, replacing corrupt files -- and
records every file in ``<cache>/fetch-index.json``; ``pipeline.run`` copies that
provenance into the run's ``manifest.json``. Sources: :data:`SOURCES`.

Needs the ``fetch`` extra (requests, tqdm, earthaccess, cdsapi, asyncssh); importing this package
and :mod:`gosat_pipeline.fetch.cache` does not.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from gosat_pipeline.fetch._core import CHECKS, FileSpec, Plan, Request
from gosat_pipeline.fetch._errors import (
    CorruptFileError,
    CredentialError,
    FetchError,
    MissingClientError,
)
from gosat_pipeline.fetch.cache import INDEX_NAME, Cache, provenance_for
from gosat_pipeline.fetch.fetcher import FetchReport, Progress

__all__ = [
    "CHECKS",
    "INDEX_NAME",
    "Cache",
    "CorruptFileError",
    "CredentialError",
    "FetchError",
    "FetchReport",
    "FileSpec",
    "MissingClientError",
    "Plan",
    "Progress",
    "Request",
    "config_requests",
    "fetch",
    "link_problems",
    "plan",
    "plan_for_config",
    "plan_source",
    "provenance_for",
    "source_names",
]

logger = logging.getLogger(__name__)

_OPTION_KEYS = ("product", "version", "year", "url", "base_url", "record", "file_pattern", "stream", "overpass_filter")


def source_names() -> list[str]:
    """Names of the known sources."""
    from gosat_pipeline.fetch.sources import SOURCES

    return list(SOURCES)


def _client(retries: int = 4, backoff: float = 1.0, **kw: Any) -> Any:
    from gosat_pipeline.fetch.http import HttpClient

    return HttpClient(retries=retries, backoff=backoff, **kw)


def plan(requests: Sequence[Request], *, retries: int = 4, backoff: float = 1.0) -> Plan:
    """The plan of several requests (listings and searches only; nothing is downloaded)."""
    from gosat_pipeline.fetch.sources import plan_request

    http = _client(retries, backoff)
    out = Plan()
    for req in requests:
        out.extend(plan_request(req, http))
    return out


def plan_source(
    source: str,
    start: date,
    end: date,
    bbox: tuple[float, float, float, float] = (-180, -90, 180, 90),
    *,
    gas: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    **options: Any,
) -> Plan:
    """The plan of one source for a period (UTC, ``end`` exclusive) and box.

    Parameters
    ----------
    source : str
        One of :func:`source_names`.
    start, end : datetime.date
    bbox : tuple of float
        (west, south, east, north), degrees.
    gas : str, optional
    **options
        Source options (product, version, year, url, base_url, record, file_pattern, stream,
        overpass_filter).
    """
    return plan([Request(source, start, end, tuple(bbox), gas, options)], retries=retries, backoff=backoff)


def config_requests(cfg: Any) -> list[Request]:
    """The requests of a run configuration's ``fetch.sources``, with its period and box."""
    reqs = []
    for s in cfg.fetch.sources:
        options = {k: getattr(s, k) for k in _OPTION_KEYS if getattr(s, k) is not None}
        reqs.append(Request(s.source, cfg.period.start, cfg.period.end, tuple(cfg.domain.bbox), s.gas, options))
    return reqs


def plan_for_config(cfg: Any) -> Plan:
    """The plan of a run configuration (``fetch:`` section), with notes on how the run finds the files."""
    from gosat_pipeline.errors import ConfigError
    from gosat_pipeline.fetch.sources import SOURCES

    if not cfg.fetch.sources:
        raise ConfigError("fetch.sources: empty; list what to download (see configs/template.yaml)")
    bad = [
        f"fetch.sources[{i}].source: unknown {s.source!r} (known: {', '.join(SOURCES)})"
        for i, s in enumerate(cfg.fetch.sources)
        if s.source not in SOURCES
    ]
    if bad:
        raise ConfigError(bad)
    out = plan(config_requests(cfg), retries=cfg.fetch.retries)
    out.notes += link_problems(cfg, out)
    return out


def _matches(patterns: Sequence[str], path: Path) -> bool:
    return any(fnmatch.fnmatch(str(path), os.path.abspath(os.path.expanduser(p))) for p in patterns)


def link_problems(cfg: Any, the_plan: Plan) -> list[str]:
    """Notes where the run's input paths do not point at the files the plan puts in the cache."""
    root = Path(cfg.fetch.cache_dir).expanduser().resolve()
    notes = []
    for gs in cfg.gases:
        files = [root / f.relpath for f in the_plan.files if f.role == f"granule:{gs.gas}" and not f.extract]
        files += [root / f.relpath for f in the_plan.files if f.role == f"granule:{gs.gas}" and f.extract]
        l2 = [p for p in files if p.suffix != ".tar"] or [p.with_name("x.h5") for p in files]
        if l2 and not any(_matches(gs.granules, p) for p in l2):
            folder = l2[0].parent
            notes.append(
                f"gases[{gs.gas}].granules {gs.granules} matches none of the fetched files; "
                f"set it to '{folder}/*{l2[0].suffix}'"
            )
        priors = [root / f.relpath for f in the_plan.files if f.role == f"prior:{gs.gas}"]
        if priors and Path(gs.prior.path).resolve().parent != priors[0].parent:
            notes.append(
                f"gases[{gs.gas}].prior.path is {gs.prior.path}; the fetched prior is extracted from "
                f"{priors[0]} into {priors[0].parent}"
            )
    winds = [root / f.relpath for f in the_plan.files if f.role == "winds"]
    if winds and (cfg.winds.path is None or winds[0].parent != Path(cfg.winds.path).resolve()):
        notes.append(f"winds.path is {cfg.winds.path}; the fetched ERA5 files are in {winds[0].parent}")
    return notes


class _Transports(dict):  # type: ignore[type-arg]
    """Downloaders per credential, made (and logged in) only when a file really has to be downloaded.

    A fetch whose files are all cached, or copied in by hand and good, needs no login at all.
    """

    def __init__(self, the_plan: Plan, retries: int, backoff: float) -> None:
        super().__init__()
        self.plan, self.retries, self.backoff = the_plan, retries, backoff
        self._lock = threading.Lock()
        self._failed: dict[str | None, FetchError] = {}  # a login that failed is not tried again per file

    def __missing__(self, cred: str | None) -> Any:
        with self._lock:
            if cred in self._failed:
                raise self._failed[cred]
            if cred not in self:
                try:
                    transport = _make_transport(cred, self.plan, self.retries, self.backoff)
                except FetchError as exc:
                    self._failed[cred] = exc
                    raise
                dict.__setitem__(self, cred, transport)
            return dict.__getitem__(self, cred)


def _make_transport(cred: str | None, the_plan: Plan, retries: int, backoff: float) -> Any:
    from gosat_pipeline.fetch.http import HttpClient

    if cred is None:
        return _HttpTransport(HttpClient(retries=retries, backoff=backoff))
    if cred == "earthdata":
        from gosat_pipeline.fetch.earthdata import earthdata_session_factory

        return _HttpTransport(
            HttpClient(
                earthdata_session_factory(), retries=retries, backoff=backoff, on_unauthorised=_refused("earthdata")
            )
        )
    if cred == "nies":
        return _HttpTransport(_nies_client(the_plan, retries, backoff))
    if cred == "gosat2":
        from gosat_pipeline.fetch.sftp import login_client

        url = next(f.url for f in the_plan.files if f.credential == "gosat2")
        return _SftpTransport(login_client(url, "gosat2", retries=retries, backoff=backoff))
    from gosat_pipeline.fetch.cds import CdsTransport

    url = next((f.request.get("url") for f in the_plan.files if f.request and f.request.get("url")), None)
    return CdsTransport(url, retries=retries)


def _refused(key: str) -> Any:
    from gosat_pipeline.fetch.credentials import CREDENTIALS, how_to_set
    from gosat_pipeline.fetch.http import public_url

    def make(url: str, status: int) -> Exception:
        host = public_url(url).split("/")[2].split(":")[0]
        return CredentialError(
            f"{CREDENTIALS[key].title} refused access to {public_url(url)} (HTTP {status}): "
            f"check the credentials; {how_to_set(CREDENTIALS[key], host)}"
        )

    return make


def _nies_client(the_plan: Plan, retries: int, backoff: float) -> Any:
    from urllib.parse import urlsplit

    from gosat_pipeline.fetch.credentials import login_for
    from gosat_pipeline.fetch.http import HttpClient, requests_module

    host = urlsplit(next(f.url for f in the_plan.files if f.credential == "nies")).hostname or ""
    user, password = login_for("nies", host=None if host.endswith("nies.go.jp") else host)
    requests = requests_module()

    def factory() -> Any:
        s = requests.Session()
        s.auth = (user, password)
        return s

    return HttpClient(factory, retries=retries, backoff=backoff, on_unauthorised=_refused("nies"))


class _HttpTransport:
    def __init__(self, client: Any) -> None:
        self.client = client

    def download(self, spec: FileSpec, part: Path, on_bytes: Any) -> None:
        self.client.download(spec.url, part, expected=spec.size, progress=on_bytes)


class _SftpTransport:
    def __init__(self, client: Any) -> None:
        self.client = client

    def download(self, spec: FileSpec, part: Path, on_bytes: Any) -> None:
        from gosat_pipeline.fetch.sftp import sftp_address

        host, port, path = sftp_address(spec.url)
        if (host, port) != (self.client.host, self.client.port):
            raise FetchError(
                f"{spec.relpath}: {host}:{port} is not the archive this fetch logged in to "
                f"({self.client.address}); fetch the sources of each archive separately"
            )
        self.client.download(path, part, expected=spec.size, progress=on_bytes)

    def close(self) -> None:
        self.client.close()


def fetch(
    the_plan: Plan,
    cache_dir: str | os.PathLike[str],
    *,
    workers: int = 4,
    retries: int = 4,
    backoff: float = 1.0,
    progress: Progress | None = None,
    verify: bool = False,
) -> FetchReport:
    """Make ``cache_dir`` hold every file of ``the_plan`` (see :mod:`gosat_pipeline.fetch.fetcher`).

    Parameters
    ----------
    the_plan : Plan
    cache_dir : path-like
    workers : int
        Parallel downloads (bounded pool).
    retries : int
        Retries of a transient failure (connection error, timeout, 429, 5xx, short read).
    backoff : float
        First back-off in seconds, doubled per retry.
    progress : Progress, optional
        Progress events (the CLI's bar); default: the log.
    verify : bool
        Re-check every cached file, even those the index says are unchanged.

    Returns
    -------
    FetchReport

    Raises
    ------
    CredentialError
        A needed login is missing or refused (one line saying how to set it).
    FetchError
        When any file could not be fetched (after the others were).
    """
    from gosat_pipeline.fetch.credentials import install_redaction
    from gosat_pipeline.fetch.fetcher import execute_plan

    install_redaction()
    cache = Cache(cache_dir)
    cache.root.mkdir(parents=True, exist_ok=True)
    transports = _Transports(the_plan, retries, backoff)  # logs in only where a download is needed
    try:
        report = execute_plan(the_plan, cache, transports, workers=workers, progress=progress, verify=verify)
    finally:
        for transport in list(transports.values()):
            close = getattr(transport, "close", None)
            if close is not None:
                close()
    if report.failed:
        first = next(iter(report.failed.values()))
        raise FetchError(
            f"{len(report.failed)} of {len(the_plan.files)} file(s) could not be fetched "
            f"(the others are in {cache.root}); first: {first}"
        )
    return report
