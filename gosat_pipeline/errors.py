"""Exception types of gosat_pipeline.

Every error a user can cause with bad input is one of these. They subclass
:class:`ValueError` (or :class:`OSError` for unreadable files) so that generic
handlers keep working, and the CLI turns any :class:`GosatPipelineError` into one
clear line and a non-zero exit, with a traceback only under ``-v``.

Messages follow one rule: say what was found, what is allowed, and how to fix it,
naming the file, variable or config key concerned.
"""

from __future__ import annotations

__all__ = [
    "GosatPipelineError",
    "ConfigError",
    "SchemaError",
    "FootprintError",
    "UnknownFormatError",
    "ReaderContractError",
    "GranuleError",
    "InventoryError",
    "ReportedTotalsError",
    "BoundaryError",
    "WindError",
    "InversionError",
    "ReportError",
]


class GosatPipelineError(Exception):
    """Base class of every expected, user-facing error of the package."""


class ConfigError(GosatPipelineError, ValueError):
    """A configuration file or value is invalid.

    Parameters
    ----------
    problems : list of str
        One message per problem, each starting with its key path
        (``grid.resolution: ...``).
    source : str, optional
        The file the configuration came from.
    """

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = f"{where}{self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{where}{len(self.problems)} problems:\n{lines}"
        super().__init__(msg)

    def __reduce__(self) -> tuple[type, tuple[list[str], str | None]]:
        # pickled by dask.distributed when raised on a worker: rebuild from the parts
        return (type(self), (self.problems, self.source))


class SchemaError(GosatPipelineError, ValueError):
    """A dataset does not follow the canonical schema of DESIGN.md section 4."""


class FootprintError(SchemaError):
    """External footprints or a model Jacobian (STILT, FLEXPART, NAME, IMI) cannot be read or used.

    Parameters
    ----------
    source : str
        The file or folder concerned.
    reason : str
        What was found, what is expected and how to fix it, in one line.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{source}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # pickled by dask.distributed when raised on a worker: rebuild from the parts
        return (type(self), (self.source, self.reason))


class GranuleError(GosatPipelineError, ValueError):
    """An L2 granule cannot be read: corrupt, truncated, empty, or missing variables.

    Parameters
    ----------
    path : str
        The granule.
    reason : str
        What is wrong, in one line.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # pickled by dask.distributed when raised on a worker: rebuild from the parts
        return (type(self), (self.path, self.reason))


class UnknownFormatError(GranuleError):
    """No registered reader recognises a file."""


class ReaderContractError(GosatPipelineError, ValueError):
    """A granule reader breaks the reader contract (checked when it is defined or registered).

    Raised for a reader without a name or description, a ``scan``/``read`` with the wrong
    signature, or a layout (:class:`gosat_pipeline.io.ReaderLayout`) with an unknown
    transform, a misspelt key or a transform that does not fit its variable. The
    message names the reader and the field.
    """


class InventoryError(GosatPipelineError, ValueError):
    """A gridded prior inventory cannot be read or has unknown units."""


class ReportedTotalsError(GosatPipelineError, ValueError):
    """A reported national totals table has invalid rows.

    Parameters
    ----------
    path : str
        The table.
    problems : list of str
        One message per bad row, each with its line number and column.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{path}: {len(self.problems)} bad row(s):\n{lines}")

    def __reduce__(self) -> tuple[type, tuple[str, list[str]]]:
        # pickled by dask.distributed when raised on a worker: rebuild from the parts
        return (type(self), (self.path, self.problems))


class BoundaryError(GosatPipelineError, ValueError):
    """Region boundaries cannot be read or are invalid."""


class WindError(GosatPipelineError, ValueError):
    """A wind file cannot be read or lacks the expected variables."""


class InversionError(GosatPipelineError, ValueError):
    """The inversion inputs are inconsistent (shapes, covariances not positive definite)."""


class ReportError(GosatPipelineError, RuntimeError):
    """The report cannot be made as asked (e.g. a PDF without a browser to print it)."""
