"""A small archive on 127.0.0.1 for the fetch tests: no test ever touches the network.

:class:`Archive` serves, from memory:

* files with HEAD, ``Range`` (206), ETag, and per-file faults: ``500`` (once), ``truncate``
  (first response stops half-way), ``slow`` (paced, so a test can kill the client);
* Apache-style HTML directory listings for paths ending in ``/`` (CEDA);
* S3 ``ListObjectsV2`` XML for ``/s3/<bucket>/?list-type=2&prefix=...``, paginated;
* a Zenodo record API ``/zenodo/api/records/<id>``;
* a NASA CMR granule search ``/cmr/search/granules.umm_json`` (what earthaccess calls);
* the Copernicus CDS retrieve API ``/cds/retrieve/v1/...`` (what cdsapi calls);
* authentication per path prefix: HTTP Basic, a bearer token, or the CDS ``PRIVATE-TOKEN``.

Every request is logged (method, path, headers) for assertions.

:class:`SftpArchive` is an SFTP server (``asyncssh``, in-process, throwaway host key) serving
a folder behind a password login, like the GOSAT-2 Product Archive, with a fault that drops
the connection half-way through a file. :class:`EarthdataLogin` is a TLS server (``trustme``
throwaway CA) playing the Earthdata Login endpoint ``earthaccess`` calls for a username and
password login (``POST /api/users/find_or_create_token``, HTTP Basic after a 401 challenge).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import secrets
import ssl
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape


class Archive:
    """The archive's content, faults, credentials and request log."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.auth: dict[str, tuple[str, ...]] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.cmr: list[dict[str, Any]] = []
        self.cds_key: str | None = None
        self.cds_jobs: dict[str, dict[str, Any]] = {}
        self.cds_payload: Any = None  # callable(dataset, request) -> bytes
        self.s3_page = 1000
        self.slow_delay = 0.05
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    # -------------------------------------------------------------- set-up
    def add(self, path: str, data: bytes, *faults: str) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        self.files[path] = data
        if faults:
            self.faults[path] = list(faults)
        return self.url + path

    def requests_for(self, path: str, method: str = "GET") -> list[dict[str, str]]:
        """Headers of every ``method`` request for ``path``."""
        return [h for m, p, h in self.log if m == method and urlsplit(p).path == path]

    def start(self) -> str:
        archive = self

        class Handler(_Handler):
            pass

        Handler.archive = archive
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    archive: Archive
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # -------------------------------------------------------------- helpers
    def _send(
        self,
        status: int,
        body: bytes = b"",
        ctype: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _authorised(self, path: str) -> bool:
        for prefix, rule in self.archive.auth.items():
            if not path.startswith(prefix):
                continue
            got = self.headers.get("Authorization", "")
            if rule[0] == "basic":
                want = "Basic " + base64.b64encode(f"{rule[1]}:{rule[2]}".encode()).decode()
                return got == want
            if rule[0] == "bearer":
                return got == f"Bearer {rule[1]}"
        return True

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n else b""

    # -------------------------------------------------------------- verbs
    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._route("HEAD")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._route("POST")

    def _route(self, method: str) -> None:
        a = self.archive
        with a._lock:
            a.log.append((method, self.path, dict(self.headers.items())))
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if not self._authorised(path):
            self._send(
                401, b"unauthorised", "text/plain", {"WWW-Authenticate": 'Basic realm="archive"'}, head=method == "HEAD"
            )
            return
        if path.startswith("/cds/"):
            self._cds(method, path)
        elif path.startswith("/cmr/search/granules"):
            self._cmr(query)
        elif path.startswith("/zenodo/api/records/"):
            self._zenodo(path.rsplit("/", 1)[-1])
        elif path.startswith("/s3/") and "list-type" in query:
            self._s3(path, query)
        elif path in a.files:
            self._file(method, path)
        elif path.endswith("/"):
            self._listing(path, method == "HEAD")
        else:
            self._send(404, b"not found", "text/plain", head=method == "HEAD")

    def _file(self, method: str, path: str) -> None:
        a = self.archive
        data = a.files[path]
        with a._lock:
            faults = a.faults.get(path, [])
            fault = faults.pop(0) if faults and faults[0] in ("500", "truncate") and method == "GET" else None
            slow = "slow" in faults
        if fault == "500":
            self._send(500, b"try again", "text/plain")
            return
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and self.headers.get("If-Range", etag) == etag:
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if method == "HEAD":
            return
        if fault == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        step = 4096 if slow else len(body) or 1
        for i in range(0, len(body), step):
            self.wfile.write(body[i : i + step])
            if slow:
                self.wfile.flush()
                time.sleep(a.slow_delay)

    def _listing(self, path: str, head: bool) -> None:
        names = sorted(
            {
                p[len(path) :].split("/")[0] + ("/" if "/" in p[len(path) :] else "")
                for p in self.archive.files
                if p.startswith(path)
            }
        )
        if not names:
            self._send(404, b"not found", "text/plain", head=head)
            return
        rows = "".join(f'<tr><td><a href="{escape(n)}">{escape(n)}</a></td></tr>\n' for n in names)
        page = f'<html><body><h1>Index of {escape(path)}</h1><table><tr><td><a href="../">Parent</a></td></tr>\n{rows}</table></body></html>'
        self._send(200, page.encode(), "text/html", head=head)

    def _s3(self, path: str, query: dict[str, list[str]]) -> None:
        a = self.archive
        bucket = path.rstrip("/") + "/"
        prefix = query.get("prefix", [""])[0]
        keys = sorted(p[len(bucket) :] for p in a.files if p.startswith(bucket + prefix))
        start = int(query.get("continuation-token", ["0"])[0])
        page = keys[start : start + a.s3_page]
        more = start + a.s3_page < len(keys)
        body = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>{len(a.files[bucket + k])}</Size>"
            f"<ETag>&quot;{'ab' * 16}-3&quot;</ETag></Contents>"
            for k in page
        )
        token = f"<NextContinuationToken>{start + a.s3_page}</NextContinuationToken>" if more else ""
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>b</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(page)}</KeyCount>"
            f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>{token}{body}</ListBucketResult>"
        )
        self._send(200, xml.encode(), "application/xml")

    def _zenodo(self, record: str) -> None:
        a = self.archive
        folder = f"/zenodo/records/{record}/files/"
        files = [
            {
                "key": p[len(folder) :],
                "size": len(d),
                "checksum": "md5:" + hashlib.md5(d).hexdigest(),
                "links": {"self": a.url + p},
            }
            for p in sorted(a.files)
            if p.startswith(folder)
            for d in [a.files[p]]
        ]
        if not files:
            self._json({"status": 404, "message": "not found"}, 404)
            return
        self._json({"id": int(record), "files": files, "metadata": {"version": "test"}})

    def _cmr(self, query: dict[str, list[str]]) -> None:
        short = query.get("short_name", [None])[0]
        temporal = query.get("temporal[]", query.get("temporal", [""]))[0]
        lo, _, hi = temporal.partition(",")
        items = []
        for g in self.archive.cmr:
            if short and g["umm"]["CollectionReference"]["ShortName"] != short:
                continue
            t = g["umm"]["TemporalExtent"]["RangeDateTime"]
            if lo and hi and not (t["BeginningDateTime"] < hi and t["EndingDateTime"] > lo):
                continue
            items.append(g)
        self._json({"hits": len(items), "took": 1, "items": items}, headers={"CMR-Hits": str(len(items))})

    # -------------------------------------------------------------- CDS retrieve API (ecmwf-datastores)
    def _cds(self, method: str, path: str) -> None:
        a = self.archive
        if path.startswith("/cds/download/"):  # result URLs are pre-signed: no key needed
            body = self._payload(path.rsplit("/", 1)[-1].removesuffix(".nc"))
            self._send(200, body, "application/netcdf", head=method == "HEAD")
            return
        if path.startswith("/cds/catalogue/"):  # service messages shown by the client
            self._json({"messages": []})
            return
        if self.headers.get("PRIVATE-TOKEN") != a.cds_key:
            self._json({"title": "Authentication failed", "status": 401}, 401)
            return
        base = a.url + "/cds/retrieve/v1"
        rest = path[len("/cds/retrieve/v1/") :]
        if method == "POST" and rest.startswith("processes/") and rest.endswith("/execution"):
            dataset = rest.split("/")[1]
            request = json.loads(self._read_body() or b"{}").get("inputs", {})
            job = f"job{len(a.cds_jobs) + 1}"
            a.cds_jobs[job] = {"dataset": dataset, "request": request, "polls": 0}
            self._json(self._job(job, base, "accepted"), 201)
        elif rest.startswith("processes/"):
            self._json({"id": rest.split("/")[1], "links": []})
        elif rest.startswith("jobs/") and rest.endswith("/results"):
            job = rest.split("/")[1]
            size = len(self._payload(job))
            self._json(
                {
                    "asset": {
                        "value": {
                            "href": f"{a.url}/cds/download/{job}.nc",
                            "file:size": size,
                            "type": "application/netcdf",
                        }
                    }
                }
            )
        elif rest.startswith("jobs/"):
            job = rest.split("/")[1]
            a.cds_jobs[job]["polls"] += 1
            self._json(self._job(job, base, "successful"))
        else:
            self._json({"title": "not found"}, 404)

    def _job(self, job: str, base: str, status: str) -> dict[str, Any]:
        now = datetime.utcnow().isoformat()
        return {
            "jobID": job,
            "status": status,
            "type": "process",
            "processID": self.archive.cds_jobs[job]["dataset"],
            "created": now,
            "updated": now,
            "metadata": {},
            "links": [
                {"rel": "monitor", "href": f"{base}/jobs/{job}"},
                {"rel": "results", "href": f"{base}/jobs/{job}/results"},
            ],
        }

    def _payload(self, job: str) -> bytes:
        a = self.archive
        rec = a.cds_jobs[job]
        if "bytes" not in rec:
            rec["bytes"] = a.cds_payload(rec["dataset"], rec["request"])
        return rec["bytes"]


# --------------------------------------------------------------------------- SFTP (GOSAT-2 Product Archive)


class SftpArchive:
    """An SFTP server on 127.0.0.1 serving ``root`` (chroot) to one user with a password.

    ``faults[path] = ["cut"]`` drops the connection the first time a read of that file
    reaches its second half. ``reads`` logs (session, path, offset, bytes served) of every read,
    ``logins`` (user name, accepted) of every password attempt, ``sessions`` counts the
    SFTP sessions opened.
    """

    def __init__(self, root: Path, username: str, password: str) -> None:
        import asyncssh

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.username, self.password = username, password
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.faults: dict[str, list[str]] = {}
        self.reads: list[tuple[int, str, int, int]] = []
        self.logins: list[tuple[str, bool]] = []
        self.sessions = 0
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"sftp://127.0.0.1:{self.port}"

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path`` (absolute inside the server); returns its URL."""
        p = self.root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return self.url + path

    def known_hosts_line(self) -> str:
        """The server's key as a line of an OpenSSH known_hosts file."""
        return f"[127.0.0.1]:{self.port} {self.host_key.export_public_key().decode().strip()}\n"

    def start(self) -> str:
        import asyncssh

        archive = self

        class Server(asyncssh.SSHServer):
            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, username: str, password: str) -> bool:
                ok = (username, password) == (archive.username, archive.password)
                with archive._lock:
                    archive.logins.append((username, ok))
                return ok

        class Sftp(asyncssh.SFTPServer):
            def __init__(self, chan: Any) -> None:
                super().__init__(chan, chroot=str(archive.root).encode())
                with archive._lock:
                    archive.sessions += 1
                    self.session = archive.sessions

            def read(self, file_obj: Any, offset: int, size: int) -> bytes:
                name = os.fsdecode(file_obj.name)
                path = "/" + os.path.relpath(name, archive.root).replace(os.sep, "/")
                with archive._lock:
                    faults = archive.faults.get(path, [])
                    cut = bool(faults) and faults[0] == "cut" and offset >= os.path.getsize(name) // 2
                    if cut:
                        faults.pop(0)
                data = b"" if cut else super().read(file_obj, offset, size)
                with archive._lock:
                    archive.reads.append((self.session, path, offset, len(data)))
                if cut:
                    self.channel.get_connection().abort()
                return data

        async def listen() -> Any:
            return await asyncssh.listen(
                "127.0.0.1",
                0,
                server_host_keys=[self.host_key],
                server_factory=Server,
                sftp_factory=Sftp,
                allow_scp=False,
                login_timeout=30,
            )

        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(30)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# --------------------------------------------------------------------------- Earthdata Login over TLS


class EarthdataLogin:
    """The Earthdata Login token endpoint on 127.0.0.1 over TLS, with a certificate for ``hostname``.

    ``POST /api/users/find_or_create_token`` without credentials answers 401 with a Basic
    challenge (as the real server does, which is what makes earthaccess send them); with the
    right user and password, 200 and ``{"access_token", "token_type", "expiration_date"}``;
    with wrong ones, 401 ``invalid_credentials``. ``log`` holds (method, path, Authorization
    header) of every request; ``ca_file`` is the throwaway CA to trust.
    """

    def __init__(self, tmp: Path, username: str, password: str, hostname: str = "urs.earthdata.nasa.gov") -> None:
        import trustme

        self.hostname, self.username, self.password = hostname, username, password
        self.token = "EDL-" + secrets.token_hex(12)
        self.log: list[tuple[str, str, str]] = []
        self._ca = trustme.CA()
        self.ca_file = Path(tmp) / "edl-test-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        self._cert = self._ca.issue_cert(hostname)
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    def start(self) -> int:
        edl = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass

            def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                n = int(self.headers.get("Content-Length", "0") or 0)
                if n:
                    self.rfile.read(n)
                got = self.headers.get("Authorization", "")
                edl.log.append(("POST", self.path, got))
                if self.path != "/api/users/find_or_create_token":
                    self._json(404, {"error": "not_found"})
                    return
                if not got.startswith("Basic "):
                    self._json(
                        401,
                        {"error": "unauthorized"},
                        {"WWW-Authenticate": 'Basic realm="Please enter your Earthdata Login credentials"'},
                    )
                    return
                want = base64.b64encode(f"{edl.username}:{edl.password}".encode()).decode()
                if got != f"Basic {want}":
                    self._json(401, {"error": "invalid_credentials", "error_description": "Invalid user credentials"})
                    return
                self._json(200, {"access_token": edl.token, "token_type": "Bearer", "expiration_date": "12/31/2099"})

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(ctx)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


#: netCDF-C/HDF5 are not thread-safe: the server's request threads write payloads one at a time
#: (two concurrent writes crashed the interpreter with a segmentation fault in the full suite).
_NETCDF_WRITE = threading.Lock()


def netcdf_bytes(variables: dict[str, Any], coords: dict[str, Any]) -> bytes:
    """A small netCDF-4 file in memory (via a temporary file)."""
    import tempfile
    from pathlib import Path

    import xarray as xr

    ds = xr.Dataset(variables, coords=coords)
    with tempfile.TemporaryDirectory() as d, _NETCDF_WRITE:
        p = Path(d) / "x.nc"
        ds.to_netcdf(p)
        return p.read_bytes()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive in memory."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """A tar archive in memory."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()
