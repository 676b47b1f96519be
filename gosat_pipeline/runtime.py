"""Process settings of a run: numpy's transparent-hugepage advice.

NumPy asks the Linux kernel for transparent hugepages (``madvise(MADV_HUGEPAGE)``) on
every array of 4 MiB or more (`NumPy: madvise hugepage on Linux
<https://numpy.org/devdocs/reference/global_state.html>`_). When the kernel's
``transparent_hugepage/defrag`` policy is ``always``, ``madvise`` or ``defer+madvise``,
a page fault in such an array *compacts memory synchronously* until a 2 MiB page is free.
On a machine whose memory has been in use for a while (fragmented), the first write of a
large array then costs several times the write itself: on this project's 2-core
reference machine (``enabled`` and ``defrag`` both ``madvise``), the first write of a fresh
3.77 GiB array took 8.2 s with the advice and 2.3 s without it (``bench_gridding.py
--fine``); the regional totals of a 5000-element state (two fresh 200 MB covariances)
0.95-0.98 s against 0.45-0.50 s (``bench_inversion.py`` case 3; README, Performance).

:func:`hugepage_advice` turns the advice off for the duration of a run, where the
kernel's policy would make it stall, and sets ``NUMPY_MADVISE_HUGEPAGE=0`` so that the
Dask workers a run starts inherit the same setting. A user's own
``NUMPY_MADVISE_HUGEPAGE`` (0 or 1) always wins.

The few arrays that are long-lived and swept thousands of times (the time-resolved
transport's state and work buffers) ask for hugepages themselves
(:func:`hugepage_zeros`): their one-off fault cost buys fewer TLB misses on every sweep
(one transport step at 0.5 degree with 1430 forcings: 0.135 s with hugepages, 0.158 s
without, ``bench_transport.py``).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: arrays below this many bytes are allocated by numpy as usual (hugepages are 2 MiB)
HUGEPAGE_MIN_BYTES = 1 << 22
#: where Linux exposes its transparent-hugepage policy
THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
#: ``defrag`` policies under which a fault in a madvised region compacts memory synchronously
STALLING_DEFRAG = ("always", "madvise", "defer+madvise")
ENV = "NUMPY_MADVISE_HUGEPAGE"


def _selected(path: Path) -> str | None:
    """The bracketed choice of a sysfs policy file (``always [madvise] never`` -> ``madvise``)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def hugepage_policy(thp_dir: Path = THP_DIR) -> dict[str, str | None]:
    """The kernel's transparent-hugepage ``enabled`` and ``defrag`` policies (None where unknown)."""
    return {"enabled": _selected(thp_dir / "enabled"), "defrag": _selected(thp_dir / "defrag")}


def advice_stalls(policy: dict[str, str | None]) -> bool:
    """Whether numpy's hugepage advice makes page faults compact memory under ``policy``."""
    return policy.get("enabled") in ("always", "madvise") and policy.get("defrag") in STALLING_DEFRAG


def _numpy_setter() -> Any:
    """numpy's switch of the advice (``_set_madvise_hugepage``; numpy 1.x and 2.x), or None."""
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        with contextlib.suppress(ImportError, AttributeError):
            module = __import__(mod, fromlist=["_set_madvise_hugepage"])
            return module._set_madvise_hugepage
    return None


@contextlib.contextmanager
def hugepage_advice(thp_dir: Path = THP_DIR) -> Iterator[dict[str, Any]]:
    """Within the block, numpy gives no hugepage advice where the kernel would stall on it.

    Yields a record for the run manifest: ``numpy_madvise_hugepage`` (the setting used),
    ``thp_enabled``, ``thp_defrag`` and ``reason``. The previous numpy setting and
    environment are restored on exit. Nothing changes when ``NUMPY_MADVISE_HUGEPAGE`` is
    set (the user's choice) or the policy does not stall (``defrag`` ``defer`` or
    ``never``, hugepages ``never``, not Linux).
    """
    policy = hugepage_policy(thp_dir)
    record: dict[str, Any] = {"thp_enabled": policy["enabled"], "thp_defrag": policy["defrag"]}
    setter = _numpy_setter()
    user = os.environ.get(ENV)
    if user is not None or setter is None or not advice_stalls(policy):
        record["reason"] = (
            f"{ENV}={user} set by the user"
            if user is not None
            else "numpy cannot switch the advice"
            if setter is None
            else "the kernel's hugepage policy does not compact memory at a fault"
        )
        record["numpy_madvise_hugepage"] = None if setter is None else _current(setter)
        yield record
        return
    previous = bool(setter(False))
    os.environ[ENV] = "0"
    record["numpy_madvise_hugepage"] = False
    record["reason"] = (
        f"transparent hugepages {policy['enabled']!r} with defrag {policy['defrag']!r}: a page fault in an "
        "advised array compacts memory synchronously"
    )
    try:
        yield record
    finally:
        setter(previous)
        os.environ.pop(ENV, None)


def hugepage_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A float64 array of zeros in memory advised for transparent hugepages, whatever numpy's setting.

    For an array kept for a long time and read over and over: an anonymous mapping (zero
    filled by the kernel) with ``madvise(MADV_HUGEPAGE)``, viewed by numpy (the array keeps
    the mapping alive). Small arrays, and systems without the advice, get ``numpy.zeros``.
    """
    nbytes = int(np.prod(shape, dtype="int64")) * 8
    if nbytes < HUGEPAGE_MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.zeros(shape)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # a kernel without transparent hugepages: plain pages
        buf.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buf, dtype="float64").reshape(shape)


def _current(setter: Any) -> bool:
    """numpy's current advice setting (the switch returns the previous value; set it back)."""
    previous = bool(setter(False))
    setter(previous)
    return previous


__all__ = ["THP_DIR", "advice_stalls", "hugepage_advice", "hugepage_policy", "hugepage_zeros"]
