"""Ingest throughput over many granules vs the bare cost of reading them with netCDF4.

Writes N synthetic CCI OCPR-layout granules (the real v7.2 structure, compressed as the
released files are: deflate 4 + shuffle), then times, in the same run and on the same files:

- ``bare``: a loop opening each file with netCDF4 and reading the variables the reader
  uses (netCDF4's defaults; no flipping, unit handling or Dataset building);
- ``ingest``: ``open_granules(files)`` read into memory with the synchronous scheduler,
  in the default chunks of 200 000 soundings (consecutive files grouped; the pipeline's
  default too) and one chunk per file, screen=True and screen=False. "Into memory" is
  ``persist()``: the chunks stay separate arrays, as the pipeline's next stage (gridding) consumes them, and as
  the distributed mode below leaves them in worker memory. ``compute()`` (one array per
  variable: a copy of everything) is shown as well;
- ``ingest parallel``: the same persisted on a running ``dask.distributed`` LocalCluster
  of worker processes started with the pipeline's worker settings
  (``pipeline.WORKER_CONFIG``; files scanned and read on the workers), and with
  threads (which the HDF5 lock serialises). The cluster start-up is not timed: a
  pipeline starts it once per run.

Every ingest run first closes the reader's cached file handles, so each run pays every
file open, like the bare loop; repeats on the cluster wait until it holds no task.

Prints soundings/s, MB/s and ratios to the bare read. Targets (issue 3): ingest within
1.5x of the bare read; parallel faster than it.

By default two batches: 40 granules of 3000 soundings, and a year of daily granules
(365 of 2500, about the size of a real OCPR day).

``--tropomi N`` (default 2e6 in the full run, 0 with ``--quick``): the pipeline's ingest
stage (``gosat_pipeline.run(..., until="ingest")``: each group of granules read once and
screened on a worker, duplicates checked across groups, the soundings file written) on
N TROPOMI-like soundings in 20 granules over ASEAN, on a two-process local cluster: rate
(soundings in the files per second of the stage) and peak memory of the main process and
of the process tree, from the manifest. Targets (issue 21): >= 200 000 soundings/s, main
process < 1.5 GiB at any number of soundings.

Usage: ``.venv/bin/python benchmarks/bench_ingest.py [--quick] [--files N] [--per-file N]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import dask
import netCDF4
import numpy as np
from distributed import Client, LocalCluster, wait

from gosat_pipeline.io import close_cached, open_granules
from gosat_pipeline.pipeline import WORKER_CONFIG
from gosat_pipeline.testing.granules import make_granule_files

VARIABLES = [
    "time",
    "latitude",
    "longitude",
    "xch4",
    "xch4_uncertainty",
    "xch4_quality_flag",
    "xch4_averaging_kernel",
    "ch4_profile_apriori",
    "pressure_levels",
    "pressure_weight",
    "surface_air_pressure_apriori",
    "solar_zenith_angle",
    "retr_flag",
    "exposure_id",
]


def bare_read(files: list[Path]) -> int:
    n = 0
    for f in files:
        with netCDF4.Dataset(f) as nc:
            for v in VARIABLES:
                a = nc[v][:]
            n += a.shape[0]
    return n


def ingest(
    files: list[Path],
    scheduler: Any,
    screen: bool = True,
    workers: int | None = None,
    chunk: int | None = None,
    client: Any = None,
    concat: bool = False,
) -> int:
    close_cached()  # no handle reuse across repeats: every run pays every open
    if client is not None:
        client.run(close_cached)
    kw: dict = {"num_workers": workers} if workers else {}
    with dask.config.set(scheduler=scheduler, **kw):
        ds = open_granules(files, screen=screen, chunks=None if chunk is None else {"sounding": chunk})
        if client is not None:  # read into the workers' memory, where the pipeline's next stage runs
            out = client.persist(ds)
            wait(out)
        else:
            out = ds.compute() if concat else ds.persist()
    return int(out.sizes["sounding"])


def forget_all(client: Any) -> None:
    """Wait until the cluster holds no task: a repeat must not find the last run's results in memory."""
    deadline = time.monotonic() + 30
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        if time.monotonic() > deadline:  # a timing now could measure results still in memory
            raise RuntimeError("the cluster still holds tasks 30 s after the last run released them")
        time.sleep(0.01)


def best_of(fn, repeat: int, reset=None) -> tuple[float, int]:
    best, res = np.inf, 0
    for _ in range(repeat):
        if reset is not None:  # not timed
            reset()
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def run(n_files: int, per_file: int, repeat: int, workers: int) -> None:
    """Write ``n_files`` granules, time every mode on them and print the table."""
    with tempfile.TemporaryDirectory() as tmp:
        files = make_granule_files(tmp, "cci_ocpr", n_files=n_files, n_per_file=per_file, seed=1)
        mb = sum(f.stat().st_size for f in files) / 1e6
        total = n_files * per_file
        print(f"{n_files} OCPR-layout granules, {total} soundings, {mb:.1f} MB, {workers} workers")
        bare_read(files)  # warm the page cache
        t_bare, _ = best_of(lambda: bare_read(files), repeat)
        rows = [("bare netCDF4 loop", t_bare, total)]
        t, n = best_of(lambda: ingest(files, "synchronous", chunk=0), repeat)
        rows.append(("ingest, one chunk per file", t, n))
        t, n = best_of(lambda: ingest(files, "synchronous"), repeat)
        rows.append(("ingest, default chunks 200k", t, n))
        t, n = best_of(lambda: ingest(files, "synchronous", screen=False, chunk=200_000), repeat)
        rows.append(("ingest, screen=False", t, n))
        t, n = best_of(lambda: ingest(files, "synchronous", chunk=200_000, concat=True), repeat)
        rows.append(("ingest, compute() 200k", t, n))
        t, n = best_of(lambda: ingest(files, "threads", workers=workers, chunk=200_000), repeat)
        rows.append((f"ingest threads x{workers}", t, n))
        # a running dask.distributed cluster of worker processes, as the pipeline uses (startup not timed);
        # two read tasks per worker
        with (
            dask.config.set(WORKER_CONFIG),
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cl,
            Client(cl) as client,
        ):
            client.run(lambda: None)
            per_task = -(-total // (2 * workers))
            t, n = best_of(
                lambda: ingest(files, client.get, chunk=per_task, client=client),
                repeat,
                reset=lambda: forget_all(client),
            )
        rows.append((f"ingest distributed x{workers} proc", t, n))
        print(f"{'mode':<28}{'time s':>9}{'kept':>9}{'soundings/s':>14}{'MB/s':>9}{'x bare':>9}")
        for name, t, n in rows:
            print(f"{name:<28}{t:>9.3f}{n:>9d}{total / t:>14.0f}{mb / t:>9.1f}{t / t_bare:>9.2f}")
        print("target: ingest <= 1.5x bare; parallel < 1.0x bare (throughput counted over all soundings in files)\n")


def run_tropomi(n: int, n_files: int = 20) -> None:
    """The pipeline's ingest stage on ``n`` TROPOMI-like soundings; rate and peak memory from the manifest."""
    import yaml

    from gosat_pipeline import load_config, run
    from gosat_pipeline.testing.demo import DEMO_BBOX, build_demo_samples

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        files = make_granule_files(
            root / "granules", "tropomi_ch4", n_files=n_files, n_per_file=-(-n // n_files), seed=3, bbox=DEMO_BBOX
        )
        build_demo_samples(root / "samples")
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(
            f"{n_files} TROPOMI-like granules, {n:,} soundings, {mb:.0f} MB (written in {time.perf_counter() - t0:.0f} s)"
        )
        cfg = {
            "run": {"name": "ingest", "output_dir": str(root / "out"), "synthetic": True},
            "period": {"start": "2020-01-01", "end": "2021-01-01"},
            "domain": {"bbox": list(DEMO_BBOX), "resolution": 0.25},
            "gases": [
                {
                    "gas": "CH4",
                    "granules": [str(root / "granules" / "*.nc")],
                    "format": "tropomi_ch4",
                    "prior": {"path": str(root / "samples" / "prior_CH4.nc")},
                    "sigma_model": 8.0,
                    "background_prior_sigma": 30.0,
                }
            ],
            "winds": {"path": str(root / "samples" / "winds_era5.nc")},
            "cluster": {"type": "local", "n_workers": 2, "threads_per_worker": 1, "tiny_job_bytes": 0},
        }
        (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        res = run(load_config(root / "cfg.yaml"), until="ingest")
        rec = res.manifest["stages"]["ingest:CH4"]
        kept = res.manifest["screening"]["CH4"]["soundings_kept"]
        gib = 2**30
        print(
            f"pipeline ingest stage, 2 worker processes: {rec['wall_time_s']:.1f} s = "
            f"{n / rec['wall_time_s']:,.0f} soundings/s ({kept:,} kept); peak memory main process "
            f"{rec['peak_memory_main_bytes'] / gib:.2f} GiB, process tree {rec['peak_memory_bytes'] / gib:.2f} GiB"
        )
        print("target: >= 200 000 soundings/s; main process < 1.5 GiB\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 files x 1000 soundings, 2 repeats")
    ap.add_argument("--files", type=int, help="one batch of this many files (default: 40 x 3000, then 365 x 2500)")
    ap.add_argument("--per-file", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--tropomi", type=int, default=None, help="soundings of the TROPOMI-like ingest-stage run")
    args = ap.parse_args()
    if args.quick:
        batches, args.repeat = [(10, 1000)], 2
    elif args.files:
        batches = [(args.files, args.per_file)]
    else:  # a small batch, and a year of daily OCPR-sized granules
        batches = [(40, 3000), (365, 2500)]
    for n_files, per_file in batches:
        run(n_files, per_file, args.repeat, args.workers)
    n_tropomi = args.tropomi if args.tropomi is not None else (0 if args.quick else 2_000_000)
    if n_tropomi:
        run_tropomi(n_tropomi)


if __name__ == "__main__":
    main()
