"""The reader contract, the built-in reader table and entry-point discovery.

Modelled on xarray's ``backends/plugins.py``: built-in readers live in
:data:`BUILTIN_READERS` (name -> ``"module:Class"``), third-party readers come in
through the entry-point group ``gosat_pipeline.readers`` (each entry point names a
:class:`GranuleReader` subclass), and :func:`register_reader` adds one at run time.
The contract is checked when a reader registers, not when it first fails.

A reader works in two steps so that a batch can be opened lazily:

1. :meth:`GranuleReader.scan` opens the file, checks that it is what the reader
   expects (required variables, gas, not all fill, units and time units that
   ``read`` can decode) and returns a :class:`GranulePlan`: the soundings to return
   (after the product screen when ``screen=True``), their count, their identifiers
   and the product attributes. Cheap: only 1-D variables are read. Every fault of a
   file must surface here, where a batch can skip the file and record why; ``read``
   runs later inside a dask task, where a failure stops the whole computation.
2. :meth:`GranuleReader.read` returns the canonical arrays of the planned
   soundings as a ``dict`` of numpy arrays (surface-first, NaN for fills, canonical
   units). :func:`gosat_pipeline.io.open_granules` calls it inside a dask task.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gosat_pipeline.errors import GosatPipelineError, GranuleError, ReaderContractError

__all__ = [
    "ENTRY_POINT_GROUP",
    "BUILTIN_READERS",
    "GranulePlan",
    "GranuleReader",
    "FileSummary",
    "register_reader",
    "get_reader",
    "available_readers",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gosat_pipeline.readers"

#: Built-in readers: name -> "module:Class" (imported on first use).
BUILTIN_READERS: dict[str, str] = {
    "cci_ocpr": "gosat_pipeline.io.cci_ocpr:CciOcprReader",
    "cci_ocfp": "gosat_pipeline.io.cci_co2:CciOcfpReader",
    "cci_srfp": "gosat_pipeline.io.cci_co2:CciSrfpReader",
    "acos_lite": "gosat_pipeline.io.acos_lite:AcosLiteReader",
    "oco2_lite": "gosat_pipeline.io.acos_lite:Oco2LiteReader",
    "oco3_lite": "gosat_pipeline.io.acos_lite:Oco3LiteReader",
    "nies_gosat_l2": "gosat_pipeline.io.nies_gosat:NiesGosatReader",
    "nies_gosat2_l2": "gosat_pipeline.io.nies_gosat:NiesGosat2Reader",
    "tropomi_ch4": "gosat_pipeline.io.tropomi_ch4:TropomiCh4Reader",
    "tropomi_blended_ch4": "gosat_pipeline.io.tropomi_blended:TropomiBlendedCh4Reader",
}

_REGISTERED: dict[str, GranuleReader] = {}
_LOADED = False


@dataclass
class FileSummary:
    """What content detection sees of a file: variable paths and global attributes.

    Attributes
    ----------
    path : str
    variables : set of str
        Every dataset path, without a leading slash (``"PRODUCT/qa_value"``).
    attrs : dict
        Root attributes, strings decoded.
    """

    path: str
    variables: set[str]
    attrs: dict[str, Any]


@dataclass
class GranulePlan:
    """What :meth:`GranuleReader.scan` found in one file.

    Attributes
    ----------
    path : str
        The granule.
    gas : {"CO2", "CH4"}
    index : numpy.ndarray of int
        Positions (in the reader's flattened sounding order) of the soundings to return.
    n_total, n_good : int
        Soundings in the file, and those passing the product's recommended screen.
    n_levels : int
        Size of the ``level`` dimension (0 when the product has no profiles).
    attrs : dict
        ``product``, ``product_version``, ``reader`` and any product metadata.
    extra : dict
        Reader-private state handed from ``scan`` to ``read`` (e.g. decoded flags).
    variables : dict
        Canonical variable name -> numpy dtype string of what ``read`` will return
        (level variables are those of ``schema.LEVEL_VARIABLES``). Lets a batch be built
        lazily; a reader that leaves it empty is read eagerly at open time.
    ids : numpy.ndarray or None
        A key identifying each planned sounding across files (aligned with ``index``):
        the product's sounding identifier (integers or strings, shape (n,)), or integer
        rows (n, k) such as (time, latitude bits, longitude bits) when the product has
        no global identifier; None to opt out. :func:`open_granules` keeps the first of
        soundings whose key repeats (within or across files) and narrows ``index`` and
        ``ids`` of the later files; ``read`` must honour ``index``. The plan reaches
        ``read`` without its ids (they would only weigh down the task graph), so
        ``read`` returns ``sounding_id`` from the file itself. Text ids are best
        fixed-width bytes (``S``): cheap to send back from workers.
    """

    path: str
    gas: str
    index: np.ndarray
    n_total: int
    n_good: int
    n_levels: int
    attrs: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    ids: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of soundings the plan returns."""
        return int(self.index.size)


class GranuleReader:
    """Base class of every granule reader (the contract).

    Subclasses set the class attributes and implement :meth:`scan` and :meth:`read`.

    Attributes
    ----------
    name : str
        Registry key, ``<mission>_<product>`` (e.g. ``"cci_ocpr"``).
    description : str
        One line shown by ``gosat-pipeline formats``.
    gases : tuple of str
        Gases the product can hold.
    filename_patterns : tuple of str
        Regular expressions matched (``re.fullmatch``) against the file name.
    screen : str
        The product's recommended screen applied when ``screen=True``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    gases: ClassVar[tuple[str, ...]] = ()
    filename_patterns: ClassVar[tuple[str, ...]] = ()
    screen: ClassVar[str] = ""

    def guess_can_open(self, path: str | Path) -> bool:
        """True when the file name matches one of :attr:`filename_patterns`."""
        base = Path(path).name
        return any(re.fullmatch(p, base) for p in self.filename_patterns)

    def sniff(self, summary: FileSummary) -> bool:
        """True when the file's content (variables, attributes) is this product."""
        return False

    def scan(self, path: str, *, gas: str | None, screen: bool) -> GranulePlan:  # pragma: no cover
        """Check the file and plan which soundings to read; see the module docstring."""
        raise NotImplementedError

    def read(self, plan: GranulePlan, *, bias_corrected: bool) -> dict[str, np.ndarray]:  # pragma: no cover
        """Canonical arrays of the planned soundings (surface-first, NaN fills, canonical units)."""
        raise NotImplementedError

    def check_definition(self) -> None:
        """Check the reader's own declarations (layouts, tables); called by :func:`register_reader`.

        The base class has nothing to check; table-driven readers
        (:class:`~gosat_pipeline.io.NcTableReader`) check their layouts here.

        Raises
        ------
        ReaderContractError
            A declaration breaks the contract; the message names the reader and the field.
        """


_REQUIRED_METHODS = {"guess_can_open": ["path"], "scan": ["path", "gas", "screen"], "read": ["plan", "bias_corrected"]}


def _check_contract(reader: GranuleReader) -> None:
    cls = type(reader)
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(reader, GranuleReader):
        raise ReaderContractError(f"reader {where} must subclass gosat_pipeline.io.GranuleReader")
    if not reader.name or not re.fullmatch(r"[a-z][a-z0-9_]*", reader.name):
        raise ReaderContractError(f"reader {where} has name {reader.name!r}; expected lower_snake_case")
    if not reader.description:
        raise ReaderContractError(f"reader {where} ({reader.name}) needs a one-line description")
    for meth, params in _REQUIRED_METHODS.items():
        fn = getattr(reader, meth, None)
        if meth in ("scan", "read") and getattr(cls, meth) is getattr(GranuleReader, meth):
            raise ReaderContractError(f"reader {where} ({reader.name}) does not implement {meth}()")
        sig = inspect.signature(fn)
        kinds = {p.kind for p in sig.parameters.values()}
        if inspect.Parameter.VAR_POSITIONAL in kinds or inspect.Parameter.VAR_KEYWORD in kinds:
            raise ReaderContractError(f"reader {where}.{meth} may not take *args/**kwargs; declare {params}")
        missing = [p for p in params if p not in sig.parameters]
        if missing:
            raise ReaderContractError(f"reader {where}.{meth} lacks parameter(s) {missing}")
    reader.check_definition()


def register_reader(reader: type[GranuleReader] | GranuleReader, *, overwrite: bool = False) -> GranuleReader:
    """Add a reader to the registry (checked against the contract).

    Parameters
    ----------
    reader : GranuleReader subclass or instance
    overwrite : bool
        Replace an existing reader of the same name (otherwise that is an error).

    Returns
    -------
    GranuleReader
        The registered instance.
    """
    inst = reader() if isinstance(reader, type) else reader
    _check_contract(inst)
    _load_all()
    if inst.name in _REGISTERED and not overwrite:
        raise GosatPipelineError(
            f"a reader named {inst.name!r} is already registered "
            f"({type(_REGISTERED[inst.name]).__qualname__}); pass overwrite=True"
        )
    _REGISTERED[inst.name] = inst
    return inst


def unregister_reader(name: str) -> None:
    """Remove a reader (mainly for tests of the plug-in seam)."""
    _load_all()
    _REGISTERED.pop(name, None)


def _load_builtin(name: str, target: str) -> GranuleReader:
    mod, _, cls = target.partition(":")
    return getattr(importlib.import_module(mod), cls)()


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for name, target in BUILTIN_READERS.items():
        inst = _load_builtin(name, target)
        _check_contract(inst)
        _REGISTERED[name] = inst
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            inst = obj() if isinstance(obj, type) else obj
            _check_contract(inst)
        except Exception as exc:  # a broken plug-in must not break the built-in readers
            logger.warning("entry point %s = %s in group %s not loaded: %s", ep.name, ep.value, ENTRY_POINT_GROUP, exc)
            continue
        if inst.name in _REGISTERED:
            logger.warning("entry point %s: reader name %r already taken; ignored", ep.value, inst.name)
            continue
        _REGISTERED[inst.name] = inst


def available_readers() -> dict[str, GranuleReader]:
    """Every registered reader, built-in first, then entry points and run-time registrations."""
    _load_all()
    return dict(_REGISTERED)


def get_reader(name: str, path: str | None = None) -> GranuleReader:
    """The reader called ``name``; :class:`GranuleError` naming the installed ones if none."""
    readers = available_readers()
    if name not in readers:
        raise GranuleError(path or "<format>", f"unknown format {name!r}; installed readers: {sorted(readers)}")
    return readers[name]
