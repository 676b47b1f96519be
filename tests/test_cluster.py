"""Dask resources: a real two-process LocalCluster, threads, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.config import ClusterSection
from gosat_pipeline.errors import ConfigError
from gosat_pipeline.io import open_granules
from gosat_pipeline.pipeline import WORKER_CONFIG, dask_cluster
from gosat_pipeline.testing.granules import make_granule_files


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_two_process_local_cluster(tmp_path: Path) -> None:
    cfg = ClusterSection(type="local", n_workers=2, threads_per_worker=1, tiny_job_bytes=0)
    with dask_cluster(cfg, input_bytes=10**9) as info:
        from distributed import get_client

        client = get_client()
        assert info["type"] == "local" and info["workers"] == 2
        assert len(client.scheduler_info()["workers"]) == 2
        x = da.arange(1_000_000, chunks=100_000, dtype="float64")
        assert float(x.sum().compute()) == pytest.approx(np.arange(1_000_000.0).sum())
        pids = client.run(lambda: __import__("os").getpid())
        assert len(set(pids.values())) == 2
        # the workers run with a fixed mmap threshold (see pipeline.WORKER_CONFIG)
        env = client.run(lambda: __import__("os").environ.get("MALLOC_MMAP_THRESHOLD_"))
        assert set(env.values()) == {str(WORKER_CONFIG["distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_"])}
        # granules scanned in batches on the workers: the same dataset, the bad file skipped and recorded
        files = make_granule_files(tmp_path, "cci_ocpr", n_files=7, n_per_file=40, seed=2)
        files[3].write_bytes(b"")
        ids = make_granule_files(tmp_path / "again", "cci_ocpr", n_files=1, n_per_file=40, seed=2)  # duplicates
        with pytest.warns(UserWarning):
            on_cluster = open_granules([*files, *ids], chunks={"sounding": 100}).compute()
        with dask.config.set(scheduler="synchronous"), pytest.warns(UserWarning):
            local = open_granules([*files, *ids], chunks={"sounding": 100}).compute()
        xr.testing.assert_identical(on_cluster, local)
        assert [s["path"] for s in json.loads(on_cluster.attrs["skipped_inputs"])] == [str(files[3]), str(ids[0])]
        assert on_cluster.attrs["n_duplicate_soundings"] > 0


def test_tiny_jobs_use_threads() -> None:
    cfg = ClusterSection(type="local")
    with dask_cluster(cfg, input_bytes=1000) as info:
        assert info["type"] == "threads"
        assert dask.config.get("scheduler") == "threads"


def test_jobqueue_needs_its_section() -> None:
    with pytest.raises(ValueError, match="jobqueue"):
        ClusterSection(type="jobqueue")


def test_jobqueue_builds_a_slurm_job_script(monkeypatch: pytest.MonkeyPatch) -> None:
    dj = pytest.importorskip("dask_jobqueue")
    from gosat_pipeline.config import JobqueueSection

    jq = JobqueueSection(system="slurm", queue="short", account="ghg", cores=4, memory="8GB", jobs=1)
    cluster = dj.SLURMCluster(
        queue=jq.queue, account=jq.account, cores=jq.cores, memory=jq.memory, walltime=jq.walltime
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p short" in script and "#SBATCH -A ghg" in script


def test_unknown_address_fails_cleanly() -> None:
    cfg = ClusterSection(type="address", address="tcp://127.0.0.1:1")
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises((OSError, TimeoutError, ConfigError)):
            with dask_cluster(cfg):
                pass
