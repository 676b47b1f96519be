"""Credentials for the archives that need a login: from ``~/.netrc`` or environment variables.

Never from the configuration file, and never written anywhere: every secret read here is
registered with :class:`RedactingFilter`, which the CLI attaches to its log handler and
which :func:`install_redaction` attaches to the loggers of the third-party clients.
A missing credential raises :class:`CredentialError` with one line that names it and says
how to set it.
"""

from __future__ import annotations

import logging
import netrc
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from gosat_pipeline.fetch._errors import CredentialError

__all__ = [
    "CREDENTIALS",
    "Credential",
    "RedactingFilter",
    "install_redaction",
    "login_for",
    "register_secret",
    "redact",
]


@dataclass(frozen=True)
class Credential:
    """How one archive's login is found and explained."""

    key: str
    title: str
    netrc_host: str
    env_user: str
    env_password: str
    signup: str
    env_token: str | None = None


CREDENTIALS: dict[str, Credential] = {
    "earthdata": Credential(
        "earthdata",
        "NASA Earthdata Login",
        "urs.earthdata.nasa.gov",
        "EARTHDATA_USERNAME",
        "EARTHDATA_PASSWORD",
        "https://urs.earthdata.nasa.gov/users/new",
        env_token="EARTHDATA_TOKEN",
    ),
    "nies": Credential(
        "nies",
        "NIES GOSAT Data Archive Service",
        "data2.gosat.nies.go.jp",
        "GOSAT_DAS_USERNAME",
        "GOSAT_DAS_PASSWORD",
        "https://data2.gosat.nies.go.jp/ (user registration)",
    ),
    "gosat2": Credential(
        "gosat2",
        "NIES GOSAT-2 Product Archive",
        "prdct.gosat-2.nies.go.jp",
        "GOSAT2_USERNAME",
        "GOSAT2_PASSWORD",
        "https://prdct.gosat-2.nies.go.jp/ (User Registration; the login is your e-mail address)",
    ),
}

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it from any text."""
    if value and len(value) >= 4:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, "***")
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that removes registered secrets from every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging API name
        """Rewrite the record's message with secrets removed; never drops a record."""
        try:
            msg = record.getMessage()
        except (TypeError, ValueError):
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


_THIRD_PARTY = (
    "earthaccess",
    "cdsapi",
    "asyncssh",
    "ecmwf",
    "ecmwf.datastores",
    "ecmwf.datastores.legacy_client",
    "ecmwf.datastores.processing",
    "multiurl",
    "urllib3",
    "requests",
)


def install_redaction() -> None:
    """Attach :class:`RedactingFilter` to the clients' loggers and to the root logger's handlers."""
    for name in _THIRD_PARTY:
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in lg.filters):
            lg.addFilter(RedactingFilter())
    for h in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())


def _netrc_login(host: str) -> tuple[str, str] | None:
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not path.is_file():
        return None
    try:
        auth = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        raise CredentialError(f"{path} cannot be read ({type(exc).__name__}); fix or remove it") from None
    if not auth or not auth[0] or not auth[2]:
        return None
    return auth[0], auth[2]


def how_to_set(cred: Credential, host: str | None = None) -> str:
    """One line saying how to provide ``cred``."""
    host = host or cred.netrc_host
    token = f"set {cred.env_token}, or " if cred.env_token else ""
    return (
        f"{token}set {cred.env_user} and {cred.env_password}, or add 'machine {host} login USER "
        f"password PASSWORD' to ~/.netrc (chmod 600); account: {cred.signup}"
    )


def login_for(key: str, host: str | None = None) -> tuple[str, str]:
    """Username and password for credential ``key``: environment first, then ``~/.netrc``.

    Parameters
    ----------
    key : str
        ``earthdata``, ``nies`` or ``gosat2``.
    host : str, optional
        The ``.netrc`` machine name (default: the archive's real host).

    Raises
    ------
    CredentialError
        Neither source has it; the message says how to set it.
    """
    cred = CREDENTIALS[key]
    user, password = os.environ.get(cred.env_user), os.environ.get(cred.env_password)
    if bool(user) != bool(password):
        missing = cred.env_password if user else cred.env_user
        raise CredentialError(
            f"{cred.title}: {missing} is not set (set both {cred.env_user} and "
            f"{cred.env_password}, or neither to use ~/.netrc)"
        )
    if not user:
        found = _netrc_login(host or cred.netrc_host)
        if found is None:
            raise CredentialError(f"missing {cred.title} credentials: {how_to_set(cred, host)}")
        user, password = found
    assert password is not None
    register_secret(password)
    return user, password


def earthdata_token() -> str | None:
    """``EARTHDATA_TOKEN`` if set (registered as a secret)."""
    token = os.environ.get("EARTHDATA_TOKEN") or None
    register_secret(token)
    return token
