"""SFTP listings and downloads with resume, through ``asyncssh`` (the GOSAT-2 Product Archive).

The GOSAT-2 Product Archive (NIES) serves its files over SFTP only, behind a password
login. :class:`SftpClient` keeps one SSH connection (one SFTP session) per archive and
runs it on an event loop of its own, so the thread pool of
:func:`gosat_pipeline.fetch.fetch` calls it like the HTTP client:

* listings (:meth:`SftpClient.listdir`) give names, sizes and modification times, which
  is what planning selects on;
* a download streams into ``<file>.part`` in pieces (each piece read with parallel SFTP
  requests), and an interrupted one -- dropped connection, timeout, killed process --
  resumes from the bytes already there, provided the remote file still has the size and
  modification time recorded when the transfer began (``<file>.part.json``); otherwise it
  starts again. Connection losses and timeouts are retried with exponential back-off;
  a refused login raises :class:`CredentialError` at once.

Host keys: a host listed in the known-hosts file (``GOSAT_PIPELINE_KNOWN_HOSTS``, default
``~/.ssh/known_hosts``) must present a listed key (a mismatch stops the fetch); a host not
listed is accepted and its key fingerprint logged, so that it can be pinned with
``ssh-keyscan HOST >> ~/.ssh/known_hosts``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gosat_pipeline.fetch._errors import CredentialError, FetchError, MissingClientError

__all__ = [
    "RemoteEntry",
    "RemoteNotFound",
    "SftpClient",
    "asyncssh_module",
    "known_hosts_path",
    "login_client",
    "sftp_address",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes read (with parallel SFTP requests) before they are written to the ``.part`` file:
#: at most this much is read again after an interruption.
PIECE = 1 << 20


def asyncssh_module() -> Any:
    """The ``asyncssh`` module, or a clear error naming the extra to install."""
    try:
        import asyncssh
    except ImportError:
        raise MissingClientError(
            "the GOSAT-2 Product Archive (SFTP) needs asyncssh: pip install 'gosat_pipeline[fetch]'"
        ) from None
    return asyncssh


def known_hosts_path() -> Path:
    """The known-hosts file: ``GOSAT_PIPELINE_KNOWN_HOSTS``, else ``~/.ssh/known_hosts``."""
    return Path(os.environ.get("GOSAT_PIPELINE_KNOWN_HOSTS") or Path.home() / ".ssh" / "known_hosts").expanduser()


def sftp_address(url: str) -> tuple[str, int, str]:
    """(host, port, path) of an ``sftp://host[:port]/path`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sftp" or not parts.hostname:
        raise FetchError(f"{url}: not an sftp://HOST[:PORT]/PATH address")
    return parts.hostname, parts.port or 22, parts.path or "/"


@dataclass(frozen=True)
class RemoteEntry:
    """One name in a remote folder."""

    name: str
    size: int | None
    mtime: int | None
    is_dir: bool


class RemoteNotFound(FetchError):
    """The remote file or folder does not exist."""


class _Transient(Exception):
    """A failure worth retrying (the connection is dropped and made again)."""


class SftpClient:
    """A logged-in SFTP session to one archive, usable from many threads.

    Parameters
    ----------
    host : str
    port : int
    username, password : str
        The login (never logged; the password is registered for redaction by the caller).
    retries : int
        Retries after the first attempt for connection losses and timeouts.
    backoff : float
        First back-off in seconds; doubled per retry, capped at 60 s.
    timeout : float
        Seconds allowed to connect and log in, and for each piece of a download.
    refused : callable, optional
        Returns the :class:`CredentialError` to raise when the server refuses the login.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 60.0,
        refused: Callable[[str], Exception] | None = None,
    ) -> None:
        self._ssh = asyncssh_module()
        self.host, self.port = host, port
        self._username, self._password = username, password
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self._refused = refused
        self._refusal_seen: Exception | None = None  # one refused login: never try that password again
        self._accepted_key: str | None = None  # fingerprint of an unlisted host key accepted (and logged) once
        self._conn: Any = None
        self._sftp: Any = None
        self._connect_lock: asyncio.Lock | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"sftp-{host}", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def address(self) -> str:
        """``sftp://host:port`` (no user name)."""
        return f"sftp://{self.host}:{self.port}"

    # ------------------------------------------------------------------ plumbing
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise FetchError(f"{self.address}: the SFTP client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the connection and stop the event loop (idempotent)."""
        if self._closed:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(timeout=10)
        except (TimeoutError, OSError, RuntimeError):  # pragma: no cover - best effort at shutdown
            pass
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> SftpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(self.backoff * (2**attempt), 60.0))

    async def _disconnect(self, conn: Any = None) -> None:
        """Drop the connection (only ``conn`` if given and still current)."""
        if conn is not None and conn is not self._conn:
            return
        old, self._conn, self._sftp = self._conn, None, None
        if old is not None:
            old.abort()

    def _client_factory(self) -> Any:
        ssh = self._ssh
        owner = self

        class _Client(ssh.SSHClient):  # type: ignore[misc,name-defined]
            def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
                """Called for a key the known-hosts file does not list for this host."""
                if _listed_keys(ssh, host, addr, port):  # pinned: only its listed keys will do
                    return False
                fingerprint = key.get_fingerprint()
                if owner._accepted_key is not None:  # a reconnection must meet the same key
                    return fingerprint == owner._accepted_key
                owner._accepted_key = fingerprint
                logger.warning(
                    "%s: host key %s is not in %s; accepting it for this session (pin it with "
                    "'ssh-keyscan -p %d %s >> %s')",
                    host,
                    fingerprint,
                    known_hosts_path(),
                    port,
                    host,
                    known_hosts_path(),
                )
                return True

        return _Client

    async def _session(self) -> Any:
        """The SFTP session, connecting and logging in when there is none."""
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self._sftp is not None:
                return self._sftp
            if self._refusal_seen is not None:
                raise self._refusal_seen
            ssh = self._ssh
            kh = known_hosts_path()
            try:
                conn = await asyncio.wait_for(
                    ssh.connect(
                        self.host,
                        self.port,
                        username=self._username,
                        password=self._password,
                        known_hosts=str(kh) if kh.is_file() else b"",
                        client_factory=self._client_factory(),
                        client_keys=None,
                        agent_path=None,
                        preferred_auth="password,keyboard-interactive",
                        config=None,
                        connect_timeout=self.timeout,
                        login_timeout=self.timeout,
                        keepalive_interval=30,
                    ),
                    self.timeout * 2,
                )
            except ssh.PermissionDenied:
                self._refusal_seen = self._refusal()
                raise self._refusal_seen from None
            except ssh.HostKeyNotVerifiable:
                raise FetchError(
                    f"{self.address}: the server's host key does not match the one listed for "
                    f"{self.host} in {kh} (or the one it showed earlier in this fetch); if the archive "
                    f"really changed its key, remove the old line (ssh-keygen -R '[{self.host}]:"
                    f"{self.port}' -f {kh})"
                ) from None
            except (OSError, TimeoutError, ssh.Error) as exc:
                raise _Transient(f"cannot connect ({type(exc).__name__}: {exc})") from None
            try:
                sftp = await asyncio.wait_for(conn.start_sftp_client(), self.timeout)
            except (OSError, TimeoutError, ssh.Error) as exc:
                conn.abort()
                raise _Transient(f"cannot start SFTP ({type(exc).__name__})") from None
            self._conn, self._sftp = conn, sftp
            logger.info("%s: logged in (SFTP)", self.address)
            return sftp

    def _refusal(self) -> Exception:
        if self._refused is not None:
            return self._refused(self.address)
        return CredentialError(f"{self.address}: the server refused the login")

    def _with_retries(self, what: str, op: Callable[[], Coroutine[Any, Any, T]]) -> T:
        reason = ""
        for attempt in range(self.retries + 1):
            try:
                return self._run(op())
            except _Transient as exc:
                reason = str(exc)
            logger.info("%s%s: %s (attempt %d of %d)", self.address, what, reason, attempt + 1, self.retries + 1)
            if attempt < self.retries:
                self._sleep(attempt)
        raise FetchError(f"{self.address}{what}: failed after {self.retries + 1} attempts ({reason})")

    def _map_error(self, exc: BaseException, path: str) -> Exception:
        ssh = self._ssh
        if isinstance(exc, ssh.SFTPNoSuchFile | ssh.SFTPNoSuchPath):
            return RemoteNotFound(
                f"{self.address}{path}: not found on the archive; it may have moved the file "
                "(plan again, or give version:/base_url:)"
            )
        if isinstance(exc, ssh.SFTPPermissionDenied):
            return CredentialError(
                f"{self.address}{path}: the archive refused to serve it (SFTP permission "
                "denied); the account may lack access to this product"
            )
        return FetchError(f"{self.address}{path}: {type(exc).__name__}: {exc}")

    def _transient(self, exc: BaseException) -> bool:
        ssh = self._ssh
        return isinstance(
            exc,
            OSError
            | TimeoutError
            | ssh.ConnectionLost
            | ssh.SFTPConnectionLost
            | ssh.SFTPNoConnection
            | ssh.DisconnectError
            | ssh.ChannelOpenError,
        )

    # ------------------------------------------------------------------ listing
    def listdir(self, path: str) -> list[RemoteEntry]:
        """The names in a remote folder with their sizes, times and kinds (``.``/``..`` left out).

        Raises
        ------
        FetchError
            The folder does not exist, or the archive cannot be reached.
        CredentialError
            The login was refused.
        """

        async def op() -> list[RemoteEntry]:
            sftp = await self._session()
            conn = self._conn
            try:
                names = await asyncio.wait_for(sftp.readdir(path), self.timeout)
            except Exception as exc:  # noqa: BLE001 - sorted into transient/permanent below
                if self._transient(exc):
                    await self._disconnect(conn)
                    raise _Transient(f"listing interrupted ({type(exc).__name__})") from None
                raise self._map_error(exc, path) from None
            out = []
            for n in names:
                name = n.filename if isinstance(n.filename, str) else n.filename.decode("utf-8", "replace")
                if name in (".", ".."):
                    continue
                a = n.attrs
                is_dir = a.type == self._ssh.FILEXFER_TYPE_DIRECTORY or (
                    a.permissions is not None and stat.S_ISDIR(a.permissions)
                )
                out.append(RemoteEntry(name, a.size, a.mtime, bool(is_dir)))
            return sorted(out, key=lambda e: e.name)

        return self._with_retries(f" listing {path}", op)

    # ------------------------------------------------------------------ downloads
    def download(
        self, path: str, part: Path, *, expected: int | None = None, progress: Callable[[int], None] | None = None
    ) -> None:
        """Download remote ``path`` into ``part``, resuming what is already there.

        Ends when ``part`` holds as many bytes as the remote file; raises
        :class:`FetchError` when every attempt failed.
        """
        self._with_retries(f"{path}", lambda: self._download(path, part, expected, progress))

    async def _download(
        self, path: str, part: Path, expected: int | None, progress: Callable[[int], None] | None
    ) -> None:
        sftp = await self._session()
        conn = self._conn
        meta = part.with_name(part.name + ".json")
        try:
            attrs = await asyncio.wait_for(sftp.stat(path), self.timeout)
            size, mtime = int(attrs.size), attrs.mtime
            stamp = {"size": size, "mtime": mtime}
            offset = self._resume_offset(path, part, meta, stamp)
            if expected is not None and size != expected:
                logger.warning("%s%s: the archive now lists %d bytes, the plan %d", self.address, path, size, expected)
            meta.write_text(json.dumps(stamp))
            if offset:
                logger.info("%s%s: resuming at byte %d of %d", self.address, path, offset, size)
            await self._copy(sftp, path, part, offset, size, progress)
        except _Transient:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted into transient/permanent below
            if self._transient(exc):
                await self._disconnect(conn)
                have = part.stat().st_size if part.exists() else 0
                raise _Transient(f"transfer interrupted at byte {have} ({type(exc).__name__})") from None
            raise self._map_error(exc, path) from None
        meta.unlink(missing_ok=True)

    def _resume_offset(self, path: str, part: Path, meta: Path, stamp: dict[str, Any]) -> int:
        """Bytes of ``part`` to keep: 0 (and ``part`` removed) when the remote file changed since."""
        offset = part.stat().st_size if part.exists() else 0
        if not offset:
            return 0
        try:
            seen = json.loads(meta.read_text()) if meta.is_file() else None
        except (OSError, ValueError):
            seen = None  # no record of what was being fetched: start again
        if seen != stamp or offset > stamp["size"]:
            logger.info(
                "%s%s: changed on the archive since the interrupted transfer; starting again", self.address, path
            )
            part.unlink()
            return 0
        return offset

    async def _copy(
        self, sftp: Any, path: str, part: Path, offset: int, size: int, progress: Callable[[int], None] | None
    ) -> None:
        """Append bytes ``offset:size`` of remote ``path`` to ``part``, piece by piece."""
        async with sftp.open(path, "rb") as f:
            with open(part, "ab") as out:
                while offset < size:
                    data = await asyncio.wait_for(f.read(min(PIECE, size - offset), offset), self.timeout)
                    if not data:
                        raise _Transient(f"the server ended the file at byte {offset} of {size}")
                    out.write(data)
                    out.flush()
                    offset += len(data)
                    if progress is not None:
                        progress(len(data))


def _listed_keys(ssh: Any, host: str, addr: str, port: int) -> bool:
    """Whether the known-hosts file lists any key for ``host`` or ``addr`` (``[host]:port`` when not 22)."""
    kh = known_hosts_path()
    if not kh.is_file():
        return False
    try:
        found = ssh.read_known_hosts(str(kh)).match(host, addr, port if port != 22 else None)
    except (OSError, ValueError, ssh.KeyImportError) as exc:
        raise FetchError(
            f"{kh}: cannot be read as an OpenSSH known_hosts file ({exc}); fix it or set "
            "GOSAT_PIPELINE_KNOWN_HOSTS to another file"
        ) from None
    return bool(found[0] or found[1])


def login_client(
    url: str, credential: str, *, retries: int = 4, backoff: float = 1.0, timeout: float = 60.0
) -> SftpClient:
    """An :class:`SftpClient` for the archive of ``url``, with the login of ``credential``.

    The login comes from the credential's environment variables or ``~/.netrc`` (machine:
    the archive's host; a mirror's or test server's own host name otherwise); it is not
    used before the first listing or download.

    Raises
    ------
    CredentialError
        The login is missing (one line saying how to set it).
    """
    from gosat_pipeline.fetch.credentials import CREDENTIALS, how_to_set, login_for

    host, port, _ = sftp_address(url)
    cred = CREDENTIALS[credential]
    machine = None if host.endswith("nies.go.jp") else host
    user, password = login_for(credential, host=machine)

    def refused(address: str) -> Exception:
        return CredentialError(
            f"{cred.title} refused the login at {address}: check the credentials; {how_to_set(cred, machine)}"
        )

    return SftpClient(host, port, user, password, retries=retries, backoff=backoff, timeout=timeout, refused=refused)
