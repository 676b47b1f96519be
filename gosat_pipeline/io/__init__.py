"""INGEST: L2 granules of any supported product -> one canonical soundings Dataset.

One reader per product (``list_formats()``), chosen by file name, then by content, or
forced with ``format=``. Third-party readers plug in through the entry-point group
``gosat_pipeline.readers`` or :func:`register_reader` (see :mod:`._registry` for the
contract). Every reader returns the canonical schema of DESIGN.md section 4: dims
``sounding`` and ``level``; level arrays **surface first** whatever the file order;
every fill convention as NaN; ``xgas`` in ppm (CO2) or ppb (CH4); ``time`` UTC
datetime64[ns]; longitude in [-180, 180); ``quality_flag`` int8 with 0 = good;
attrs ``gas``, ``product``, ``product_version``, ``reader``. :func:`open_granules` adds
the file of each sounding as ``file_index`` (int32) into the file table ``granule_path``
(dims ``granule``), and ``source_file`` decoded from them (lazily, per chunk).

:func:`open_granules` is lazy: each file is checked and planned at open time (1-D
variables only) and read inside one dask task when the data are computed. Bad files
are skipped and recorded (``errors="skip"``) or raise (``errors="raise"``).

Units: each reader applies the units of its product's documentation (L2_FORMATS.md),
not the file's ``units`` attributes, which are wrong in released CCI files; a missing
or odd attribute therefore changes nothing. NIES HDF5 products read their ``unit``
attribute (table default when absent) and an unknown unit is an error. Whatever the
product, a file whose median gas value is not plausible in canonical units (ppm read
as ppb, a mole fraction) is an error, and so are missing or wrong time units.
Longitudes outside [-180, 360] are not wrapped but set to NaN, for the quality filter
to drop and count.

Modules: :mod:`._registry` (the reader contract and registry), :mod:`._layout` (typed
layouts), :mod:`._common` (file handles, fill masking, :class:`NcTableReader`),
:mod:`._scan` (detect, scan, duplicate check), :mod:`._assemble` (read tasks and the lazy
Dataset), :mod:`._open` (the public ``open_*``/``inspect_granule`` entry points).
"""

from __future__ import annotations

from gosat_pipeline.io._assemble import (
    DEFAULT_CHUNK_SOUNDINGS,
    FILE_INDEX,
    GRANULE_DIM,
    GRANULE_PATH,
    decode_source_file,
)
from gosat_pipeline.io._common import NcTableReader, close_cached
from gosat_pipeline.io._layout import TRANSFORMS, ReaderLayout, VarSpec
from gosat_pipeline.io._open import (
    GroupRead,
    inspect_granule,
    open_granule,
    open_granules,
    read_granule_group,
)
from gosat_pipeline.io._registry import (
    ENTRY_POINT_GROUP,
    FileSummary,
    GranulePlan,
    GranuleReader,
    available_readers,
    get_reader,
    register_reader,
    unregister_reader,
)
from gosat_pipeline.io._scan import (
    detect_format,
    first_occurrences,
    key_hashes,
    list_formats,
    sounding_keys,
)

__all__ = [
    "DEFAULT_CHUNK_SOUNDINGS",
    "ENTRY_POINT_GROUP",
    "FILE_INDEX",
    "GRANULE_DIM",
    "GRANULE_PATH",
    "FileSummary",
    "GroupRead",
    "decode_source_file",
    "first_occurrences",
    "key_hashes",
    "read_granule_group",
    "sounding_keys",
    "close_cached",
    "GranulePlan",
    "GranuleReader",
    "NcTableReader",
    "ReaderLayout",
    "TRANSFORMS",
    "VarSpec",
    "available_readers",
    "get_reader",
    "detect_format",
    "inspect_granule",
    "list_formats",
    "open_granule",
    "open_granules",
    "register_reader",
    "unregister_reader",
]
