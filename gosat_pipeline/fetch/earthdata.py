"""NASA Earthdata through ``earthaccess``: CMR search for the Lite products and logged-in downloads.

Search needs no login (CMR is public); downloads log in with ``earthaccess`` from
``EARTHDATA_TOKEN``, or ``EARTHDATA_USERNAME``/``EARTHDATA_PASSWORD``, or the
``urs.earthdata.nasa.gov`` entry of ``~/.netrc`` -- never from the configuration -- and
use the session ``earthaccess`` authorises (bearer token) for our resumable, checked
downloads. ``base_url`` (the CMR search URL, e.g. ``https://cmr.earthdata.nasa.gov/search/``)
and the ``GOSAT_PIPELINE_EDL_HOST`` variable point both at another system (UAT, or a test server).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gosat_pipeline.fetch._core import Request
from gosat_pipeline.fetch._errors import CredentialError, FetchError, MissingClientError
from gosat_pipeline.fetch.credentials import (
    CREDENTIALS,
    earthdata_token,
    how_to_set,
    login_for,
    register_secret,
)

__all__ = ["earthdata_system", "search_lite", "earthdata_session_factory"]

logger = logging.getLogger(__name__)

CMR_URL = "https://cmr.earthdata.nasa.gov/search/"


def _earthaccess() -> Any:
    try:
        import earthaccess
    except ImportError:
        raise MissingClientError(
            "NASA Earthdata sources need earthaccess: pip install 'gosat_pipeline[fetch]'"
        ) from None
    return earthaccess


def earthdata_system(cmr_url: str | None = None) -> Any:
    """An ``earthaccess.System`` for the production archive, or the one ``cmr_url`` names."""
    _earthaccess()
    from earthaccess.system import PROD, System

    edl = os.environ.get("GOSAT_PIPELINE_EDL_HOST")
    if not cmr_url and not edl:
        return PROD
    return System(cmr_url or PROD.cmr_base_url, PROD.status_url, PROD.status_api_url, edl or PROD.edl_hostname)


def _checksum(info: dict[str, Any]) -> str | None:
    ck = info.get("Checksum") or {}
    algo = str(ck.get("Algorithm", "")).upper().replace("-", "")
    value = ck.get("Value")
    if not value:
        return None
    return {"MD5": f"md5:{value}", "SHA256": f"sha256:{value}"}.get(algo)


def _size(info: dict[str, Any]) -> int | None:
    if info.get("SizeInBytes") is not None:
        return int(info["SizeInBytes"])
    return None


def search_lite(req: Request, short_name: str) -> list[tuple[str, str, int | None, str | None]]:
    """(file name, HTTPS URL, size, checksum) of the granules CMR finds for the period and box."""
    ea = _earthaccess()
    system = earthdata_system(req.opt("base_url"))
    query = ea.DataGranules().mode(system.cmr_base_url)
    query = query.short_name(short_name)
    if req.opt("version"):
        query = query.version(str(req.opt("version")))
    w, s, e, n = req.bbox
    query = query.temporal(f"{req.start.isoformat()}T00:00:00Z", f"{req.end.isoformat()}T00:00:00Z")
    query = query.bounding_box(w, s, e, n)
    try:
        granules = query.get(100_000)
    except RuntimeError as exc:
        raise FetchError(f"{short_name}: the CMR search failed: {exc}") from None
    out = []
    for g in granules:
        infos = {i.get("Name"): i for i in g["umm"].get("DataGranule", {}).get("ArchiveAndDistributionInformation", [])}
        for url in g.data_links(access="external"):
            name = url.rsplit("/", 1)[-1]
            if not name.endswith(".nc4"):
                continue
            info = infos.get(name, {})
            out.append((name, url, _size(info), _checksum(info)))
    return out


def earthdata_session_factory() -> Any:
    """A function making logged-in ``requests`` sessions (called once per download thread).

    A username and password (environment or ``~/.netrc``) are exchanged by ``earthaccess`` for
    a bearer token at ``https://<EDL host>/api/users/find_or_create_token`` (HTTP Basic after
    the server's 401 challenge); a token from ``EARTHDATA_TOKEN`` is used as it is.

    Raises
    ------
    CredentialError
        No token, username/password pair or ``~/.netrc`` entry; or Earthdata Login refused them.
    FetchError
        Earthdata Login could not be reached (connection, TLS certificate, timeout).
    """
    ea = _earthaccess()
    from earthaccess.exceptions import LoginAttemptFailure

    from gosat_pipeline.fetch.http import requests_module

    requests = requests_module()
    system = earthdata_system()
    auth = ea.Auth()
    auth._set_earthdata_system(system)  # earthaccess.login() does the same on its module-level Auth
    token = earthdata_token()
    host = system.edl_hostname.split(":")[0]
    try:
        if token:
            auth.login(strategy="environment", system=system)
        else:
            user, password = login_for("earthdata", host=host)
            register_secret(password)
            if os.environ.get("EARTHDATA_USERNAME"):
                auth.login(strategy="environment", system=system)
            else:
                auth.login(strategy="netrc", system=system)
    except LoginAttemptFailure:
        raise CredentialError(
            f"NASA Earthdata Login refused the credentials; check them: {how_to_set(CREDENTIALS['earthdata'], host)}"
        ) from None
    except requests.RequestException as exc:  # connection, TLS or timeout failure of the login request
        detail = " ".join(str(exc).split())[:300]
        raise FetchError(
            f"NASA Earthdata Login (https://{system.edl_hostname}) could not be reached to log in: "
            f"{type(exc).__name__}: {detail}"
        ) from None
    if not auth.authenticated:
        raise CredentialError(f"missing NASA Earthdata Login credentials: {how_to_set(CREDENTIALS['earthdata'], host)}")
    if auth.token:
        register_secret(auth.token.get("access_token"))
    return auth.get_session
