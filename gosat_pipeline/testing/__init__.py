"""Seeded synthetic data factories, public so that tests and notebooks share them.

Everything here is deterministic for a given ``seed``. Submodules:

- :mod:`~gosat_pipeline.testing.soundings`: canonical soundings datasets.
- :mod:`~gosat_pipeline.testing.granules`: writers of each L2 product's real file layout.
- :mod:`~gosat_pipeline.testing.inventories`: prior inventories, reported totals,
  boundaries and winds.
- :mod:`~gosat_pipeline.testing.footprints`: STILT, FLEXPART, NAME and IMI footprint files.
- :mod:`~gosat_pipeline.testing.osse`: observing-system simulation cases.
- :mod:`~gosat_pipeline.testing.posteriors`: exact small posteriors and whole run directories.
- :mod:`~gosat_pipeline.testing.demo`: the bundled demonstration inputs (``make data-samples``).
- :mod:`~gosat_pipeline.testing.readers`: the reader contract as pytest tests, for built-in
  readers and plug-ins (needs pytest; import it explicitly, it is not re-exported here).
"""

from __future__ import annotations

from gosat_pipeline.testing.demo import *  # noqa: F403
from gosat_pipeline.testing.demo import __all__ as _demo_all
from gosat_pipeline.testing.footprints import *  # noqa: F403
from gosat_pipeline.testing.footprints import __all__ as _footprints_all
from gosat_pipeline.testing.granules import *  # noqa: F403
from gosat_pipeline.testing.granules import __all__ as _granules_all
from gosat_pipeline.testing.inventories import *  # noqa: F403
from gosat_pipeline.testing.inventories import __all__ as _inventories_all
from gosat_pipeline.testing.osse import *  # noqa: F403
from gosat_pipeline.testing.osse import __all__ as _osse_all
from gosat_pipeline.testing.posteriors import *  # noqa: F403
from gosat_pipeline.testing.posteriors import __all__ as _posteriors_all
from gosat_pipeline.testing.soundings import *  # noqa: F403
from gosat_pipeline.testing.soundings import __all__ as _soundings_all

__all__ = [
    *_soundings_all,
    *_granules_all,
    *_inventories_all,
    *_footprints_all,
    *_osse_all,
    *_posteriors_all,
    *_demo_all,
]
