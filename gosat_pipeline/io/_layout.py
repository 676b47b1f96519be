"""Typed layouts of the table-driven readers: where each canonical variable sits in a file.

A :class:`NcTableReader <gosat_pipeline.io.NcTableReader>` describes its product as data:
one :class:`ReaderLayout` per gas, mapping each canonical variable (DESIGN.md section 4)
to a :class:`VarSpec` (file path, transform, unit factor, required or not). Both are
checked when they are built, so a typo in a layout (an unknown transform, a misspelt
key, a level variable given a scalar transform, a layout without ``xgas``) fails when
the reader class is defined or registered, with an error naming the reader, the gas
and the variable, never later as a silent float read of the wrong thing.

Transforms (:data:`TRANSFORMS`)
-------------------------------
``"float"``
    The stored values, fills masked to NaN, times ``factor`` (the default).
``"time"``
    CF offsets (``"<unit> since <epoch>"``) -> UTC datetime64[ns]; only for ``time``.
``"chars"``
    A char array (or strings) -> text; only for ``sounding_id``.
``"int"``
    -> int64; only for ``sounding_id``.
``"glint_eq1"``
    An integer flag -> int8, 1 where the file value is 1; per-sounding variables only.
``"layer_mid"``
    Level edges (n, m + 1) -> layer mid-pressures (n, m); level variables only.
``"first"``
    The first level of a surface-first profile (n, m) -> (n,); per-sounding variables only.

Examples
--------
>>> from gosat_pipeline.io import ReaderLayout, VarSpec
>>> base = ReaderLayout({"time": VarSpec("time", transform="time"), "latitude": VarSpec("lat"),
...                      "longitude": VarSpec("lon"), "xgas": VarSpec("xch4")}, reader="demo")
>>> co2 = base.derive(reader="demo_co2", xgas=VarSpec("xco2"))
>>> co2["xgas"].path, co2["time"].transform
('xco2', 'time')
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from gosat_pipeline.errors import ReaderContractError
from gosat_pipeline.schema import LEVEL_VARIABLES, SOUNDING_VARIABLES

__all__ = ["TRANSFORMS", "CANONICAL_VARIABLES", "REQUIRED_CANONICAL", "VarSpec", "ReaderLayout", "as_layout"]

#: Every transform a :class:`VarSpec` may name (see the module docstring).
TRANSFORMS: tuple[str, ...] = ("float", "time", "chars", "int", "glint_eq1", "layer_mid", "first")

#: Canonical variables a layout may map: coordinates, per-sounding and level variables.
#: ``quality_flag`` comes from the reader's ``flag_variable``; ``file_index`` and
#: ``source_file`` are added by :func:`gosat_pipeline.io.open_granules`.
CANONICAL_VARIABLES: frozenset[str] = frozenset(
    {"time", "latitude", "longitude"}
    | (set(SOUNDING_VARIABLES) - {"quality_flag", "file_index", "source_file"})
    | set(LEVEL_VARIABLES)
)

#: Canonical variables every layout must map, with ``required=True``.
REQUIRED_CANONICAL: tuple[str, ...] = ("time", "latitude", "longitude", "xgas")

#: Which canonical variables each transform may produce (None: any float variable).
_ONLY_FOR = {"time": {"time"}, "chars": {"sounding_id"}, "int": {"sounding_id"}}
_SCALAR_ONLY = ("glint_eq1", "first")
_LEVEL_ONLY = ("layer_mid",)
_FLOAT_READS = ("float", "layer_mid", "first")


@dataclass(frozen=True)
class VarSpec:
    """Where one canonical variable sits in a file and how it is decoded.

    Parameters
    ----------
    path : str
        The variable's path in the file (``"Group/name"`` for netCDF-4 groups).
    transform : str
        One of :data:`TRANSFORMS` (default ``"float"``).
    factor : float
        Multiplier to canonical units (ppm CO2, ppb CH4, hPa), float reads only.
    required : bool
        A file without the variable is refused (``scan`` raises
        :class:`~gosat_pipeline.errors.GranuleError`); optional ones are left out.

    Raises
    ------
    ReaderContractError
        Empty path, unknown transform, a factor that is not a finite non-zero number,
        or a factor on a transform that does not read floats.
    """

    path: str
    transform: str = "float"
    factor: float = 1.0
    required: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ReaderContractError(f"path must be a non-empty string, found {self.path!r}")
        if self.transform not in TRANSFORMS:
            raise ReaderContractError(
                f"unknown transform {self.transform!r} (path {self.path!r}); expected one of {list(TRANSFORMS)}"
            )
        if (
            isinstance(self.factor, bool)
            or not isinstance(self.factor, (int, float))
            or not (math.isfinite(self.factor) and self.factor != 0)
        ):
            raise ReaderContractError(f"factor must be a finite non-zero number, found {self.factor!r}")
        if self.factor != 1.0 and self.transform not in _FLOAT_READS:
            raise ReaderContractError(
                f"factor {self.factor!r} given with transform {self.transform!r}, "
                f"which does not read floats (allowed with {list(_FLOAT_READS)})"
            )
        if not isinstance(self.required, bool):
            raise ReaderContractError(f"required must be True or False, found {self.required!r}")

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any]) -> VarSpec:
        """Build from ``{"path": ..., "transform": ..., "factor": ..., "required": ...}``.

        Raises
        ------
        ReaderContractError
            A key that is not a field (a typo would otherwise be ignored), or no ``path``.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ReaderContractError(f"unknown key(s) {unknown}; a variable spec has {sorted(known)}")
        if "path" not in entry:
            raise ReaderContractError("no 'path' (the variable's path in the file)")
        return cls(**dict(entry))


class ReaderLayout(Mapping[str, VarSpec]):
    """A product's layout for one gas: canonical variable name -> :class:`VarSpec`.

    An immutable mapping, checked when built: every name is a canonical variable
    (:data:`CANONICAL_VARIABLES`), the :data:`REQUIRED_CANONICAL` ones are present and
    required, and each transform fits the variable (``time`` for ``time``, ``chars`` or
    ``int`` for ``sounding_id``, ``layer_mid`` for level variables, ``first`` and
    ``glint_eq1`` for per-sounding ones).

    Parameters
    ----------
    variables : mapping
        Canonical name -> :class:`VarSpec`, or a plain dict of its fields.
    reader : str
        Who owns the layout (reader name, optionally with the gas), for error messages.

    Raises
    ------
    ReaderContractError
        Naming the reader, the variable and the fault.
    """

    __slots__ = ("_vars", "reader")

    def __init__(self, variables: Mapping[str, VarSpec | Mapping[str, Any]], *, reader: str = "") -> None:
        self.reader = reader
        where = f"reader {reader}" if reader else "reader layout"
        if isinstance(variables, ReaderLayout):
            variables = variables._vars
        if not isinstance(variables, Mapping):
            raise ReaderContractError(
                f"{where}: a layout maps canonical names to VarSpec; found {type(variables).__name__}"
            )
        out: dict[str, VarSpec] = {}
        for name, spec in variables.items():
            try:
                if name not in CANONICAL_VARIABLES:
                    raise ReaderContractError(
                        f"not a canonical variable; expected one of {sorted(CANONICAL_VARIABLES)}"
                    )
                if isinstance(spec, Mapping):
                    spec = VarSpec.from_mapping(spec)
                elif not isinstance(spec, VarSpec):
                    raise ReaderContractError(f"expected a VarSpec or a dict, found {type(spec).__name__}")
                _check_fit(name, spec)
            except ReaderContractError as exc:
                raise ReaderContractError(f"{where}: variable {name!r}: {exc}") from None
            out[name] = spec
        missing = [n for n in REQUIRED_CANONICAL if n not in out]
        if missing:
            raise ReaderContractError(f"{where}: layout lacks required canonical variable(s) {missing}")
        optional = [n for n in REQUIRED_CANONICAL if not out[n].required]
        if optional:
            raise ReaderContractError(f"{where}: variable(s) {optional} must be required (required=True)")
        self._vars = out

    def __getitem__(self, name: str) -> VarSpec:
        return self._vars[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReaderLayout):
            return self._vars == other._vars
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = ", ".join(f"{k!r}: {v!r}" for k, v in self._vars.items())
        return f"ReaderLayout({{{body}}}, reader={self.reader!r})"

    def derive(self, *, reader: str = "", **changes: VarSpec | Mapping[str, Any] | None) -> ReaderLayout:
        """A new layout equal to this one except for ``changes`` (name -> spec; None removes).

        Use it when a product copies another's layout: state only the differences.
        """
        merged: dict[str, VarSpec | Mapping[str, Any]] = dict(self._vars)
        for name, spec in changes.items():
            if spec is None:
                merged.pop(name, None)
            else:
                merged[name] = spec
        return ReaderLayout(merged, reader=reader or self.reader)


def _check_fit(name: str, spec: VarSpec) -> None:
    """ReaderContractError when ``spec.transform`` cannot produce canonical variable ``name``."""
    t = spec.transform
    only = _ONLY_FOR.get(t)
    if only is not None and name not in only:
        raise ReaderContractError(f"transform {t!r} is only for {sorted(only)}")
    if name == "time" and t != "time":
        raise ReaderContractError(f"'time' must use transform 'time' (CF offsets -> datetime64), found {t!r}")
    if name == "sounding_id" and t not in ("chars", "int"):
        raise ReaderContractError(f"'sounding_id' must use transform 'chars' or 'int', found {t!r}")
    level = name in LEVEL_VARIABLES
    if level and t in _SCALAR_ONLY:
        raise ReaderContractError(
            f"transform {t!r} gives one value per sounding; {name!r} is a level variable (dims sounding, level)"
        )
    if not level and t in _LEVEL_ONLY:
        raise ReaderContractError(
            f"transform {t!r} gives a profile (dims sounding, level); {name!r} is a per-sounding variable"
        )


def as_layout(value: Any, reader: str) -> ReaderLayout:
    """``value`` as a checked :class:`ReaderLayout` (a plain dict is converted), named ``reader``."""
    if isinstance(value, ReaderLayout) and value.reader == reader:
        return value
    return ReaderLayout(value, reader=reader)
