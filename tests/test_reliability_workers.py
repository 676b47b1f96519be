"""A worker process killed while gridding does not change the result (issue 9).

On a real two-process ``distributed.LocalCluster`` (nannies, one thread per worker),
300 000 synthetic soundings in 60 chunks are gridded with :func:`grid_soundings`. A
watcher in the test process waits until a worker holds partial results of the
gridding, then kills that worker's process with SIGKILL. Its nanny restarts it, the
scheduler recomputes the lost partials, and the result must equal the single-threaded
one exactly (the combine tree is fixed, so floating-point order does not change).

The test asserts that the kill happened while the computation was running, that the
killed worker held gridding results no other worker had, and that they were computed
again.

Also here: every task of the graph runs once. Gridding used to split its inputs with
an optimised ``to_delayed()`` per variable, which fused a task shared by several
variables (ingest's read of a granule group, the block generator below) into each of
them: every granule was read nine times.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import cloudpickle
import dask
import dask.array as da
import distributed
import numpy as np
import pytest
import xarray as xr
from distributed.diagnostics.plugin import SchedulerPlugin

from gosat_pipeline.gridding import grid_soundings
from gosat_pipeline.schema import GRIDDED_VARIABLES
from gosat_pipeline.testing import make_soundings

N_BLOCKS = 60
BLOCK = 5000  # 300 000 soundings
N_LEVELS = 4
PERIOD = ("2020-01-01", "2020-02-01")
_VARIABLES = (
    "latitude",
    "longitude",
    "time",
    "xgas",
    "xgas_uncertainty",
    "surface_pressure",
    "averaging_kernel",
    "pressure_weight",
    "pressure",
)

# the block generator below runs on the workers: ship it by value (workers need not import tests/)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _block(b: int, delay: float) -> dict[str, np.ndarray]:
    """Soundings of one chunk (seeded: the same block on any worker); ``delay`` s of extra work."""
    time.sleep(delay)
    ds = make_soundings(BLOCK, "CH4", seed=b, start=PERIOD[0], end=PERIOD[1], n_levels=N_LEVELS)
    return {k: ds[k].values for k in _VARIABLES}


def _pick(block: dict[str, np.ndarray], name: str) -> np.ndarray:
    return block[name]


def lazy_soundings(delay: float = 0.0) -> xr.Dataset:
    """A dask-backed canonical soundings dataset generated chunk by chunk inside the graph."""
    blocks = [
        dask.delayed(_block, pure=True)(b, delay, dask_key_name=f"synth-soundings-{delay}-{b}") for b in range(N_BLOCKS)
    ]
    meta = _block(0, 0.0)
    arrays = {}
    for name in _VARIABLES:
        shape, dtype = meta[name].shape, meta[name].dtype
        parts = [da.from_delayed(dask.delayed(_pick, pure=True)(blk, name), shape=shape, dtype=dtype) for blk in blocks]
        arrays[name] = da.concatenate(parts, axis=0)
    level = ("sounding", "level")
    return xr.Dataset(
        {
            name: (level if arrays[name].ndim == 2 else ("sounding",), arrays[name])
            for name in _VARIABLES
            if name not in ("latitude", "longitude", "time")
        },
        coords={name: ("sounding", arrays[name]) for name in ("latitude", "longitude", "time")},
        attrs={"gas": "CH4", "product": "synthetic"},
    )


def _grid(ds: xr.Dataset) -> xr.Dataset:
    # split_every > N_BLOCKS: one combine of all partials at the end, so until then each chunk
    # partial lives only on the worker that computed it, and killing that worker loses it
    return grid_soundings(ds, 2.0, time_bin="7D", time_range=PERIOD, split_every=64)


def _held_partials(dask_scheduler: Any) -> dict[str, list[str]]:
    """Per worker, the chunk partials of the gridding that only this worker holds."""
    out: dict[str, list[str]] = {}
    for addr, ws in dask_scheduler.workers.items():
        out[addr] = [str(ts.key) for ts in ws.has_what if "gosat-grid-chunk" in str(ts.key) and len(ts.who_has) == 1]
    return out


class CountResults(SchedulerPlugin):
    """Counts, per key, how many times a result reached a worker's memory (runs in the scheduler)."""

    name = "count-results"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory":
            self.counts[str(key)] = self.counts.get(str(key), 0) + 1


def _counts(dask_scheduler: Any, keys: list[str]) -> dict[str, int]:
    plugin = dask_scheduler.plugins[CountResults.name]
    return {k: plugin.counts.get(k, 0) for k in keys}


@pytest.fixture(scope="module")
def reference() -> xr.Dataset:
    """The single-threaded answer."""
    return _grid(lazy_soundings()).compute(scheduler="synchronous")


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_worker_killed_while_gridding_does_not_change_the_result(reference: xr.Dataset) -> None:
    kill: dict[str, Any] = {}
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        assert len(set(pids.values())) == 2
        client.register_plugin(CountResults())
        future = client.compute(_grid(lazy_soundings(delay=0.08)))

        def watcher() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not future.done():
                held = client.run_on_scheduler(_held_partials)
                addr, keys = max(held.items(), key=lambda kv: len(kv[1]))
                if len(keys) >= 3 and not future.done():
                    kill.update(addr=addr, pid=pids[addr], keys=keys, running=not future.done())
                    os.kill(pids[addr], signal.SIGKILL)
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=watcher, daemon=True)
        thread.start()
        result = future.result(timeout=150)
        thread.join(timeout=10)
        assert kill.get("running"), f"the worker was not killed during the computation: {kill}"
        # the nanny restarted the worker: two workers again, one of them a new process
        client.wait_for_workers(2, timeout=60)
        new_pids = set(client.run(os.getpid).values())
        assert kill["pid"] not in new_pids and len(new_pids) == 2
        # what the killed worker held was lost and computed again
        counts = client.run_on_scheduler(_counts, keys=kill["keys"])
        assert max(counts.values()) >= 2, counts
    assert int(result.n_soundings.sum()) == N_BLOCKS * BLOCK
    for name in GRIDDED_VARIABLES:
        np.testing.assert_array_equal(result[name].values, reference[name].values, err_msg=name)


def test_each_granule_is_read_once_when_gridding_lazily(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from gosat_pipeline.io import open_granules
    from gosat_pipeline.io.cci_ocpr import CciOcprReader
    from gosat_pipeline.quality import apply_quality_filter
    from gosat_pipeline.testing import make_granule_files

    files = make_granule_files(tmp_path, "cci_ocpr", n_files=4, n_per_file=200, seed=3)
    reads: list[str] = []
    original = CciOcprReader.read

    def counting(self: CciOcprReader, plan: Any, *, bias_corrected: bool) -> dict[str, np.ndarray]:
        reads.append(plan.path)
        return original(self, plan, bias_corrected=bias_corrected)

    monkeypatch.setattr(CciOcprReader, "read", counting)
    ds = open_granules(files)
    for scheduler in ("synchronous", "threads"):
        reads.clear()
        l3 = grid_soundings(ds, 5.0, time_bin=None, time_range=("2020-01-01", "2020-01-10"))
        l3.compute(scheduler=scheduler)
        assert sorted(reads) == sorted(map(str, files)), scheduler
    reads.clear()
    screened = apply_quality_filter(ds)  # computes the mask: one read of each file
    l3 = grid_soundings(screened, 5.0, time_bin=None, time_range=("2020-01-01", "2020-01-10")).compute()
    assert sorted(reads) == sorted([str(f) for f in files] * 2)
    assert int(l3.n_soundings.sum()) == screened.sizes["sounding"]
    calls: list[int] = []
    factory = make_soundings

    def counting_factory(*args: Any, **kwargs: Any) -> xr.Dataset:
        calls.append(1)
        return factory(*args, **kwargs)

    monkeypatch.setattr(sys.modules[__name__], "make_soundings", counting_factory)
    _grid(lazy_soundings()).compute(scheduler="synchronous")
    assert len(calls) == N_BLOCKS + 1  # one per block, plus the block lazy_soundings() reads for shapes
