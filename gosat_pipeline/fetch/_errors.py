"""Exceptions of :mod:`gosat_pipeline.fetch`.

They subclass :class:`~gosat_pipeline.errors.GosatPipelineError`, so the CLI turns each
into one line and a non-zero exit. Messages name the source, the file or URL and the fix.
"""

from __future__ import annotations

from gosat_pipeline.errors import GosatPipelineError

__all__ = ["FetchError", "CredentialError", "CorruptFileError", "MissingClientError"]


class FetchError(GosatPipelineError, OSError):
    """A download or an archive listing failed after every retry."""


class CredentialError(FetchError):
    """A credential is missing or was refused; the message says which one and how to set it."""


class CorruptFileError(FetchError):
    """A downloaded or cached file failed its size, checksum or open-and-check test.

    Parameters
    ----------
    path : str
        The file.
    reason : str
        What is wrong, in one line.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (type(self), (self.path, self.reason))


class MissingClientError(FetchError):
    """An optional client library (requests, earthaccess, cdsapi) is not installed."""
