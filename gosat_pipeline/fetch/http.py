"""HTTP downloads with resume, retries and checks, and archive listings.

One file: stream into ``<file>.part``; when a ``.part`` exists, ask for the rest with an
HTTP ``Range`` request (``If-Range`` with the ETag or Last-Modified seen before, so a
changed file restarts); retry connection errors, timeouts, 429 and 5xx with exponential
back-off; fail at once, with the credential to set, on 401/403; then check size,
checksum and open-and-check before renaming into place.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gosat_pipeline.fetch._errors import CredentialError, FetchError, MissingClientError

__all__ = ["HttpClient", "requests_module", "public_url"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def requests_module() -> Any:
    """The ``requests`` module, or a clear error naming the extra to install."""
    try:
        import requests
    except ImportError:
        raise MissingClientError("gosat-pipeline fetch needs requests: pip install 'gosat_pipeline[fetch]'") from None
    return requests


def public_url(url: str) -> str:
    """``url`` without user info or query string (what is safe to show and record)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpClient:
    """Thread-safe HTTP getter: one ``requests.Session`` per thread from ``session_factory``.

    Parameters
    ----------
    session_factory : callable, optional
        Returns a configured ``requests.Session`` (authentication, headers).
    retries : int
        Retries after the first attempt for transient failures (default 4).
    backoff : float
        First back-off in seconds; doubled per retry, capped at 60 s.
    timeout : float
        Connect and read timeout in seconds.
    on_unauthorised : callable, optional
        Returns the :class:`CredentialError` to raise on 401/403 for a URL.
    """

    def __init__(
        self,
        session_factory: Callable[[], Any] | None = None,
        *,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 60.0,
        on_unauthorised: Callable[[str, int], Exception] | None = None,
    ) -> None:
        self._requests = requests_module()
        self._factory = session_factory or self._requests.Session
        self._local = threading.local()
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.on_unauthorised = on_unauthorised

    @property
    def session(self) -> Any:
        """This thread's session."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = self._factory()
        return s

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(self.backoff * (2**attempt), 60.0))

    def _refused(self, url: str, status: int) -> Exception:
        if self.on_unauthorised is not None:
            return self.on_unauthorised(url, status)
        return CredentialError(
            f"{public_url(url)}: the archive refused access (HTTP {status}); "
            "it needs a login that this source does not have"
        )

    def get(
        self,
        url: str,
        *,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """GET with retries; returns the response of the first non-transient status."""
        err: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                r = self.session.get(url, stream=stream, headers=headers, params=params, timeout=self.timeout)
            except (self._requests.ConnectionError, self._requests.Timeout) as exc:
                err = exc
                logger.info(
                    "GET %s: %s (attempt %d of %d)", public_url(url), type(exc).__name__, attempt + 1, self.retries + 1
                )
            else:
                if r.status_code in (401, 403):
                    r.close()
                    raise self._refused(url, r.status_code)
                if r.status_code not in _RETRY_STATUS:
                    return r
                err = FetchError(f"HTTP {r.status_code}")
                logger.info(
                    "GET %s: HTTP %d (attempt %d of %d)", public_url(url), r.status_code, attempt + 1, self.retries + 1
                )
                r.close()
            if attempt < self.retries:
                self._sleep(attempt)
        raise FetchError(f"{public_url(url)}: failed after {self.retries + 1} attempts ({err})")

    def get_text(self, url: str, params: dict[str, Any] | None = None) -> str:
        """The body of a listing or search page; 404 and other errors raise :class:`FetchError`."""
        r = self.get(url, params=params)
        if r.status_code != 200:
            raise FetchError(f"{public_url(url)}: HTTP {r.status_code} while listing the archive")
        return r.text

    def head_size(self, url: str) -> int | None:
        """``Content-Length`` of ``url`` from a HEAD request, or None."""
        try:
            r = self.session.head(url, allow_redirects=True, timeout=self.timeout)
        except (self._requests.ConnectionError, self._requests.Timeout):
            return None
        if r.status_code in (401, 403):
            raise self._refused(url, r.status_code)
        n = r.headers.get("Content-Length")
        return int(n) if r.status_code == 200 and n and n.isdigit() else None

    # ------------------------------------------------------------------ downloads
    def download(
        self, url: str, part: Path, *, expected: int | None, progress: Callable[[int], None] | None = None
    ) -> None:
        """Download ``url`` into ``part``, resuming what is already there.

        Ends when the transfer is complete (the server's length, or ``expected``);
        raises :class:`FetchError` when every attempt failed.
        """
        meta = part.with_name(part.name + ".json")
        for attempt in range(self.retries + 1):
            try:
                if self._attempt(url, part, meta, expected, progress):
                    meta.unlink(missing_ok=True)
                    return
                reason = "connection closed before the end of the file"
            except (
                self._requests.ConnectionError,
                self._requests.Timeout,
                self._requests.exceptions.ChunkedEncodingError,
            ) as exc:
                reason = type(exc).__name__
            except _Transient as exc:
                reason = str(exc)
            have = part.stat().st_size if part.exists() else 0
            logger.info(
                "%s: %s at %d bytes (attempt %d of %d)", public_url(url), reason, have, attempt + 1, self.retries + 1
            )
            if attempt < self.retries:
                self._sleep(attempt)
        raise FetchError(f"{public_url(url)}: download incomplete after {self.retries + 1} attempts ({reason})")

    def _attempt(
        self, url: str, part: Path, meta: Path, expected: int | None, progress: Callable[[int], None] | None
    ) -> bool:
        offset = part.stat().st_size if part.exists() else 0
        validator = json.loads(meta.read_text()).get("validator") if offset and meta.is_file() else None
        if offset and expected is not None and offset > expected:
            part.unlink()
            offset = 0
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        r = self.session.get(url, stream=True, headers=headers, timeout=self.timeout)
        with r:
            total = self._start(r, url, part, meta, offset, expected)
            if total is None:  # 416: nothing more to send
                return True
            offset = part.stat().st_size if part.exists() else 0
            with open(part, "ab") as f:
                for chunk in r.iter_content(_CHUNK):
                    f.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            have = part.stat().st_size
        return total < 0 or have >= total

    def _start(self, r: Any, url: str, part: Path, meta: Path, offset: int, expected: int | None) -> int | None:
        """Check the response status; returns the full length (-1 unknown), None when complete."""
        if self._check_status(r, url, part, offset, expected):
            return None
        if r.status_code == 200 and offset:
            part.unlink()  # the server sent the whole file: start over
        validator = r.headers.get("ETag") or r.headers.get("Last-Modified")
        if validator and not meta.is_file():
            meta.write_text(json.dumps({"validator": validator}))
        if r.status_code == 206:
            return _resumed_length(r, part, offset, expected)
        n = r.headers.get("Content-Length")
        if n and n.isdigit() and "Content-Encoding" not in r.headers:
            return int(n)
        return expected if expected is not None else -1

    def _check_status(self, r: Any, url: str, part: Path, offset: int, expected: int | None) -> bool:
        """Raise for a refused, failed or retryable response; True when the file is already complete."""
        if r.status_code in (401, 403):
            raise self._refused(url, r.status_code)
        if r.status_code == 416 and offset:
            if expected is None or offset == expected:
                return True
            part.unlink()
            raise _Transient("server refused the resume range; starting again")
        if r.status_code in _RETRY_STATUS:
            raise _Transient(f"HTTP {r.status_code}")
        if r.status_code == 404:
            raise FetchError(f"{public_url(url)}: not found (HTTP 404); the archive may have moved the file")
        if r.status_code not in (200, 206):
            raise FetchError(f"{public_url(url)}: HTTP {r.status_code}")
        return False


def _resumed_length(r: Any, part: Path, offset: int, expected: int | None) -> int:
    """Full length of the file from a 206 response that must resume at ``offset`` (-1 unknown)."""
    crange = r.headers.get("Content-Range", "")
    start, _, total = crange.removeprefix("bytes ").partition("-")
    if not start.isdigit() or int(start) != offset:
        part.unlink(missing_ok=True)
        raise _Transient(f"unexpected Content-Range {crange!r}")
    tot = total.partition("/")[2]
    return int(tot) if tot.isdigit() else (expected if expected is not None else -1)


class _Transient(Exception):
    """A failure worth retrying (the ``.part`` file is kept unless it was removed)."""
