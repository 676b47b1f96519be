"""Run the whole chain from a :class:`~gosat_pipeline.config.RunConfig`.

This is the only module that knows every stage. It turns the configuration into
plain keyword arguments, runs each stage, writes its outputs atomically into the
run directory, and keeps ``manifest.json`` up to date after every stage, so that
a run killed at any point resumes from the last completed stage.

Stages and their outputs (``<GAS>`` is CO2 or CH4)::

    ingest     soundings_<GAS>.nc        canonical soundings after screening
    grid       gridded_<GAS>.nc          L3 super-observations
    inventory  prior_<GAS>.nc, regions.nc, boundaries.geojson, winds.nc,
               reported_totals.csv
    invert     jacobian_<GAS>.nc, posterior_<GAS>.nc, emissions_<GAS>.nc,
               mass_balance_<GAS>.csv
    compare    discrepancies.csv, discrepancies.json, discrepancies.schema.json
               [, period_changes.csv]
    report     report.html

A stage is skipped when its fingerprint (the SHA-256 of its configuration, its
inputs' checksums and its upstream stages' fingerprints) matches the manifest
and its outputs exist; ``force=True`` recomputes everything.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline import __version__
from gosat_pipeline.config import RunConfig, config_to_yaml, section_hash
from gosat_pipeline.errors import ConfigError, GosatPipelineError, GranuleError, SchemaError
from gosat_pipeline.grids import GridSpec
from gosat_pipeline.outputs import (
    atomic_write_json,
    atomic_write_netcdf,
    atomic_write_text,
    sha256_file,
)
from gosat_pipeline.params import QualityScreens, TransportSettings
from gosat_pipeline.paths import expand_paths
from gosat_pipeline.runtime import hugepage_advice
from gosat_pipeline.schema import (
    cf_attrs,
    cf_encoding,
    output_title,
    validate_gridded,
    validate_posterior,
    validate_soundings,
)

__all__ = ["STAGES", "PipelineResult", "PeakMemory", "run", "dask_cluster", "Manifest"]

logger = logging.getLogger(__name__)

#: Stage names in execution order.
STAGES: tuple[str, ...] = ("ingest", "grid", "inventory", "invert", "compare", "report")

_VERSIONED = (
    "numpy",
    "scipy",
    "pandas",
    "xarray",
    "dask",
    "distributed",
    "netCDF4",
    "h5py",
    "cartopy",
    "pyproj",
    "pydantic",
    "pint",
    "regionmask",
    "geopandas",
    "shapely",
    "numba",
    "flox",
    "jinja2",
    "matplotlib",
)


# --------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    """The run's ``manifest.json``: provenance, skipped inputs, stage fingerprints and timings."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read an existing manifest, or start an empty one."""
        data: dict[str, Any] = {}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                logger.warning("%s is not valid JSON; starting a new manifest", path)
        data.setdefault("stages", {})
        return cls(path, data)

    def save(self) -> None:
        """Write atomically."""
        atomic_write_json(self.data, self.path)

    def stage_is_current(self, key: str, fingerprint: str, run_dir: Path) -> bool:
        """True when ``key`` completed with ``fingerprint`` and all its outputs exist."""
        rec = self.data["stages"].get(key)
        if not rec or rec.get("status") != "done" or rec.get("fingerprint") != fingerprint:
            return False
        return all((run_dir / o).is_file() for o in rec.get("outputs", []))

    def record_stage(self, key: str, fingerprint: str, outputs: list[str], seconds: float, **extra: Any) -> None:
        """Store a completed stage and save."""
        self.data["stages"][key] = {
            "status": "done",
            "fingerprint": fingerprint,
            "outputs": outputs,
            "wall_time_s": round(seconds, 3),
            "finished": _now(),
            **extra,
        }
        self.save()


def _last_year(end: Any) -> int:
    """Last calendar year inside a window whose ``end`` is exclusive."""
    return (pd.Timestamp(end) - pd.Timedelta(1, "ns")).year


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "gosat_pipeline": __version__}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# --------------------------------------------------------------------------- dask


#: Dask settings for the worker processes of a LocalCluster. distributed sets
#: ``MALLOC_TRIM_THRESHOLD_`` for its workers, which also switches off glibc's adaptive
#: mmap threshold: every allocation of 128 KiB or more (a granule's level array, an HDF5
#: chunk, a decompression buffer) is then a fresh mmap, paid in page faults. Measured on
#: a 2-core VM: zlib.decompress of one 8 MB buffer ten times took 0.33 s of CPU in a worker
#: (or a plain process with that variable set) vs 0.27 s without it; reading 40 OCPR
#: granules on 2 workers, the slower worker's read tasks took 0.195 s vs 0.125 s with the
#: fixed threshold. A 1 MiB threshold keeps the pool for those and still maps (and
#: returns to the system) the large arrays. Set
#: ``distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_`` to override.
WORKER_CONFIG: dict[str, Any] = {"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 1 << 20}


@contextlib.contextmanager
def dask_cluster(cluster: Any, *, input_bytes: int = 0) -> Iterator[dict[str, Any]]:
    """Start (or connect to) the Dask compute resource described by ``cluster``.

    Parameters
    ----------
    cluster : ClusterSection
        ``type`` is ``local`` (a :class:`distributed.LocalCluster` sized to the
        machine, or the threaded scheduler when the input is smaller than
        ``tiny_job_bytes``), ``threads``, ``synchronous``, ``address`` (an
        existing ``dask.distributed`` scheduler) or ``jobqueue`` (SLURM, PBS, SGE
        or LSF through dask-jobqueue).
    input_bytes : int
        Total size of the granules, used by ``local`` to pick threads for tiny jobs.

    Yields
    ------
    dict
        A description of the cluster for the manifest.
    """
    import dask

    kind = cluster.type
    if kind == "local" and input_bytes < cluster.tiny_job_bytes:
        logger.info("input is %.1f MB (< tiny_job_bytes): using the threaded scheduler", input_bytes / 1e6)
        kind = "threads"
    if kind in ("threads", "synchronous"):
        with dask.config.set(scheduler=kind):
            yield {
                "type": kind,
                "workers": 1,
                "threads": os.cpu_count() if kind == "threads" else 1,
            }
        return

    from distributed import Client, LocalCluster

    if kind == "local":
        n_cpu = os.cpu_count() or 1
        n_workers = cluster.n_workers or max(1, min(n_cpu, 8))
        threads = cluster.threads_per_worker or max(1, n_cpu // n_workers)
        kwargs: dict[str, Any] = {
            "n_workers": n_workers,
            "threads_per_worker": threads,
            "processes": True,
            "dashboard_address": None,
        }
        if cluster.memory_limit:
            kwargs["memory_limit"] = cluster.memory_limit
        worker_config = {k: v for k, v in WORKER_CONFIG.items() if dask.config.get(k, None) is None}
        with dask.config.set(worker_config), LocalCluster(**kwargs) as lc, Client(lc) as client:
            logger.info("started LocalCluster: %d workers x %d threads", n_workers, threads)
            yield {
                "type": "local",
                "workers": n_workers,
                "threads_per_worker": threads,
                "scheduler": client.scheduler.address,
            }
        return
    if kind == "address":
        with Client(cluster.address, timeout=dask.config.get("distributed.comm.timeouts.connect")) as client:
            info = client.scheduler_info()
            yield {
                "type": "address",
                "scheduler": cluster.address,
                "workers": len(info.get("workers", {})),
            }
        return
    if kind == "jobqueue":
        jq = cluster.jobqueue
        try:
            import dask_jobqueue
        except ImportError:
            raise ConfigError(
                "cluster.type: 'jobqueue' needs dask-jobqueue; install with pip install 'gosat_pipeline[jobqueue]'"
            ) from None
        cls = {
            "slurm": dask_jobqueue.SLURMCluster,
            "pbs": dask_jobqueue.PBSCluster,
            "sge": dask_jobqueue.SGECluster,
            "lsf": dask_jobqueue.LSFCluster,
        }[jq.system]
        jkw: dict[str, Any] = {"cores": jq.cores, "memory": jq.memory, "walltime": jq.walltime}
        if jq.queue:
            jkw["queue"] = jq.queue
        if jq.account:
            jkw["account"] = jq.account
        with cls(**jkw) as hpc:
            hpc.scale(jobs=jq.jobs)
            with Client(hpc) as client:
                yield {
                    "type": "jobqueue",
                    "system": jq.system,
                    "jobs": jq.jobs,
                    "scheduler": client.scheduler.address,
                    "job_script": hpc.job_script(),
                }
        return
    raise ConfigError(f"cluster.type: unknown {kind!r}")


class PeakMemory:
    """Peak resident memory of this process and of the whole process tree while the block runs.

    The tree is this process and every descendant (the worker processes of a
    ``LocalCluster`` and their nannies included), sampled with psutil every
    ``interval`` seconds in a background thread. Workers of a cluster reached by
    address or through a job queue run elsewhere and are not counted.

    Attributes
    ----------
    peak_tree, peak_main : int
        Bytes (largest sampled sum of RSS over the tree; largest RSS of this process).
    """

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self.interval = interval
        self._proc = psutil.Process()
        self.peak_tree = self.peak_main = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gosat-peak-memory", daemon=True)

    def sample(self) -> None:
        """Take one sample now."""
        import psutil

        try:
            main = self._proc.memory_info().rss
            tree = main
            for child in self._proc.children(recursive=True):
                try:
                    tree += child.memory_info().rss
                except psutil.Error:  # exited between the listing and the reading
                    continue
        except psutil.Error:
            return
        self.peak_main = max(self.peak_main, main)
        self.peak_tree = max(self.peak_tree, tree)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# --------------------------------------------------------------------------- helpers


def _contract(validate: Callable[[xr.Dataset], xr.Dataset], ds: xr.Dataset, where: str) -> xr.Dataset:
    """Check a stage's input or output against its schema contract; the error names ``where``.

    ``where`` is the run file and the side of the stage boundary, e.g.
    ``"grid:CH4 input soundings_CH4.nc"``.
    """
    try:
        return validate(ds)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None


def _masks_to_dataset(masks: xr.DataArray) -> xr.Dataset:
    """Region masks as a CF dataset: CF coordinate variables must be numeric, so the
    region codes become the auxiliary coordinate ``region_code`` on dimension ``region``."""
    ds = masks.to_dataset(name="region_fraction")
    codes = ds["region"].values.astype(str)
    attrs = dict(ds["region"].attrs)
    return ds.drop_vars("region").assign_coords(region_code=("region", codes, attrs))


def _masks_from_dataset(ds: xr.Dataset) -> xr.DataArray:
    """Inverse of :func:`_masks_to_dataset`: masks indexed by region code."""
    masks = ds["region_fraction"]
    if "region_code" in masks.coords:
        masks = masks.assign_coords(region=masks["region_code"].values.astype(str)).drop_vars("region_code")
    return masks


def _emissions_to_dataset(em: xr.DataArray) -> xr.Dataset:
    """Region-attributed prior emissions as a CF dataset: ``flux`` (the total) and
    ``emission_by_region`` with the region codes as the auxiliary coordinate ``region_code``."""
    ds = em.to_dataset(name="emission_by_region")
    total = em.sum("region")
    total.attrs = {
        "units": "kg m-2 s-1",
        "long_name": "prior emission flux (all regions)",
        **{k: v for k, v in em.attrs.items() if k in ("standard_name", "gas", "source_file", "layout")},
    }
    ds["flux"] = total
    codes = ds["region"].values.astype(str)
    ds = ds.drop_vars("region").assign_coords(region_code=("region", codes, {"long_name": "region code"}))
    return ds


def _emissions_from_dataset(ds: xr.Dataset) -> xr.DataArray:
    """Inverse of :func:`_emissions_to_dataset`: the region-attributed emissions indexed by region code."""
    em = ds["emission_by_region"]
    if "region_code" in em.coords:
        em = em.assign_coords(region=em["region_code"].values.astype(str)).drop_vars("region_code")
    return em


def expand_granules(patterns: list[str]) -> list[Path]:
    """Expand glob patterns into a sorted, de-duplicated list of files (:func:`gosat_pipeline.paths.expand_paths`)."""
    return expand_paths(patterns)


def _file_record(path: Path, kind: str) -> dict[str, Any]:
    if not path.is_file():
        return {"path": str(path), "kind": kind, "sha256": None, "bytes": None}
    return {
        "path": str(path),
        "kind": kind,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }


# --------------------------------------------------------------------------- streaming ingest
#: Work files of the ingest stage (one per group of granules), removed when the stage ends.
_PARTS_DIR = ".ingest-{gas}-parts"
#: Soundings whose duplicate-check hashes one task of the cross-group check holds at most.
_DUP_PARTITION = 20_000_000
_PART_ONLY = ("screen_code", "key_hash", "key")


def _file_groups(files: list[str], chunk: int, gas: str, fmt: str | None, screen: bool) -> list[list[str]]:
    """Consecutive granules in groups of about ``chunk`` soundings, from their sizes on disk.

    The soundings per byte come from the first file that opens (one scan); the files
    are not read here. ``chunk`` 0: one file per group.
    """
    from gosat_pipeline.io import open_granules

    sizes = [max(1, Path(f).stat().st_size) if Path(f).is_file() else 1 for f in files]
    per_byte = 0.0
    for f, size in zip(files[:5], sizes, strict=False):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                n = open_granules([f], gas=gas, format=fmt, screen=screen).attrs["n_soundings_in_files"]
        except GosatPipelineError:
            continue
        per_byte = n / size
        break
    budget = chunk / per_byte if chunk > 0 and per_byte > 0 else 0
    groups: list[list[str]] = []
    total = 0.0
    for f, size in zip(files, sizes, strict=True):
        if not groups or total + size > budget:
            groups.append([])
            total = 0.0
        groups[-1].append(f)
        total += size
    return groups


def _error_record(exc: GosatPipelineError) -> list[str]:
    """An error as data: exceptions with a custom ``__init__`` do not pickle back from a worker."""
    if isinstance(exc, GranuleError):
        return [type(exc).__name__, exc.path, exc.reason]
    return [type(exc).__name__, str(exc)]


def _raise_record(rec: list[str]) -> None:
    from gosat_pipeline import errors

    cls = getattr(errors, rec[0], GosatPipelineError)
    if len(rec) == 3:
        raise cls(rec[1], rec[2])
    raise cls(rec[1])


def _ingest_part(paths: list[str], part: str, read: dict[str, Any], screens: QualityScreens) -> dict[str, Any]:
    """Phase 1 of the ingest, on a worker: read a group of granules once, screen it, write a work file.

    The work file holds every sounding the reader planned (after the duplicate check
    within the group), its screen code (:func:`gosat_pipeline.quality.screen_codes`)
    and its duplicate-check key and hash. Returns only counts and records.
    """
    from gosat_pipeline.io import key_hashes, read_granule_group
    from gosat_pipeline.outputs import HDF5_IO_LOCK
    from gosat_pipeline.quality import screen_codes

    try:
        with HDF5_IO_LOCK:  # two groups read (or one read, one written) at once on threads crash HDF5
            got = read_granule_group(paths, **read)
        ds, keys, skipped = got.ds, got.keys, got.skipped
        if ds is None:
            return {"part": None, "skipped": skipped}
        codes, reasons = screen_codes(ds, screens)
    except GosatPipelineError as exc:
        return {"error": _error_record(exc)}
    n = int(ds.sizes["sounding"])
    hashes = key_hashes(keys)
    hashes[hashes == 0] = 1
    hashes[keys == b""] = 0  # no identifier: never compared
    ds = ds.assign(screen_code=("sounding", codes), key_hash=("sounding", hashes), key=("sounding", keys))
    with HDF5_IO_LOCK:
        ds.to_netcdf(part, engine="netcdf4")
    files = json.loads(ds.attrs["input_files"])
    return {
        "part": part,
        "n": n,
        "files": files,
        "skipped": skipped,
        "attrs": dict(ds.attrs),
        "n_levels": int(ds.sizes.get("level", 0)),
        "codes": np.bincount(codes, minlength=len(_drop_reasons()) + 1).tolist(),
        "reasons": list(reasons),
        "per_file": np.bincount(ds["file_index"].values, minlength=len(files)).tolist(),
        "in_files": [[n_total, n_good] for _, n_total, n_good in got.files],
        "variables": {
            str(k): (str(v.dtype), v.dims)
            for k, v in ds.variables.items()
            if "sounding" in v.dims and k not in _PART_ONLY
        },
    }


def _drop_reasons() -> tuple[str, ...]:
    from gosat_pipeline.quality import DROP_REASONS

    return DROP_REASONS


def _part_values(part: str, name: str, positions: list[int]) -> list[Any]:
    with xr.open_dataset(part, engine="netcdf4") as ds:
        return ds[name].values[np.asarray(positions, dtype=np.int64)].tolist()


def _gather(parts: list[str], name: str, where: list[tuple[int, int]]) -> list[Any]:
    """``name`` at each (group, position), reading each work file once."""
    out: list[Any] = [None] * len(where)
    by_part: dict[int, list[int]] = {}
    for k, (g, _) in enumerate(where):
        by_part.setdefault(g, []).append(k)
    for g, ks in by_part.items():
        for k, v in zip(ks, _part_values(parts[g], name, [where[k][1] for k in ks]), strict=True):
            out[k] = v
    return out


def _cross_duplicates(parts: list[str], p: int, n_partitions: int) -> list[list[int]]:
    """Phase 2, on a worker: soundings of later groups repeating a key of an earlier one (hash partition ``p``).

    Returns rows ``[group, position, screen code, file index, first group, first file index]``;
    keys are compared exactly, hashes only propose.
    """
    import netCDF4

    from gosat_pipeline.io import first_occurrences

    hashes, where = [], []
    for g, part in enumerate(parts):
        with netCDF4.Dataset(part) as nc:  # one raw variable: no decoding of the whole file
            var = nc["key_hash"]
            var.set_auto_maskandscale(False)
            h = np.asarray(var[:], dtype=np.uint64)
        mine = np.flatnonzero((h != 0) & (h % np.uint64(n_partitions) == p))
        hashes.append(h[mine])
        where.append(np.column_stack([np.full(mine.size, g), mine]))
    if not hashes:
        return []
    h, loc = np.concatenate(hashes), np.concatenate(where)

    def key_of(pos: np.ndarray) -> np.ndarray:
        return np.array(_gather(parts, "key", [tuple(r) for r in loc[pos].tolist()]))

    first = first_occurrences(h, key_of)
    dup = np.flatnonzero(first != np.arange(first.size))
    if dup.size == 0:
        return []
    at = [tuple(r) for r in loc[dup].tolist()]
    firsts = [tuple(r) for r in loc[first[dup]].tolist()]
    codes, fidx = _gather(parts, "screen_code", at), _gather(parts, "file_index", at)
    ffidx = _gather(parts, "file_index", firsts)
    return [
        [g, i, int(c), int(f), fg, int(ff)]
        for (g, i), c, f, (fg, _), ff in zip(at, codes, fidx, firsts, ffidx, strict=True)
    ]


def _load_part(
    part: str, drop: np.ndarray, remap: np.ndarray, variables: dict[str, tuple[str, tuple]], n_levels: int
) -> dict[str, np.ndarray]:
    """Phase 3, on a worker: the kept soundings of one work file (screen code 0, not a duplicate)."""
    with xr.open_dataset(part, engine="netcdf4") as ds:
        keep = ds["screen_code"].values == 0
        keep[drop] = False
        out: dict[str, np.ndarray] = {}
        for name, (dtype, dims) in variables.items():
            n = int(keep.sum())
            if name in ds.variables:
                out[name] = np.asarray(ds[name].values[keep]).astype(dtype, copy=False)
            else:  # a variable of another group's product
                shape = (n, n_levels) if len(dims) == 2 else (n,)
                kind = np.dtype(dtype).kind
                fill = np.datetime64("NaT") if kind == "M" else (np.nan if kind == "f" else -1)
                out[name] = np.full(shape, fill, dtype=dtype)
        out["file_index"] = remap[out["file_index"]].astype(np.int32)
    return out


def _same_levels(live: list[dict[str, Any]], skipped: list[dict[str, Any]], strict: bool) -> list[dict[str, Any]]:
    """Drop (or, strict, refuse) groups whose level count differs from the first group's."""
    levels = next((r["n_levels"] for r in live if r["n_levels"]), 0)
    out = []
    for r in live:
        if r["n_levels"] and r["n_levels"] != levels:
            reason = f"has {r['n_levels']} levels; earlier files have {levels}"
            if strict:
                raise GranuleError(r["files"][0], reason)
            skipped += [{"path": f, "reason": reason} for f in r["files"]]
            continue
        out.append(r)
    return out


def _assembly_plan(live: list[dict[str, Any]], rows: list[list[int]]) -> dict[str, Any]:
    """What phase 3 keeps: per work file the duplicates to drop and the file table; counts and records."""
    reasons = _drop_reasons()
    drop: list[list[int]] = [[] for _ in live]
    lost: dict[tuple[int, int], int] = {}
    sources: dict[tuple[int, int], set[str]] = {}
    codes = [np.array(r["codes"], dtype=np.int64) for r in live]
    for g, i, code, f, fg, ff in rows:
        drop[g].append(i)
        lost[(g, f)] = lost.get((g, f), 0) + 1
        sources.setdefault((g, f), set()).add(live[fg]["files"][ff])
        codes[g][code] -= 1
    records = {rec["path"]: rec for r in live for rec in json.loads(r["attrs"]["duplicate_soundings"])}
    table: list[str] = []
    remaps, skipped = [], []
    in_files = np.sum([np.array(r["in_files"], dtype=np.int64).reshape(-1, 2).sum(axis=0) for r in live], axis=0)
    for g, r in enumerate(live):
        remap = np.full(len(r["files"]) + 1, -1, dtype=np.int64)
        for f, path in enumerate(r["files"]):
            n_lost, n_file = lost.get((g, f), 0), r["per_file"][f]
            if n_lost:
                rec = records.setdefault(path, {"path": path, "n_duplicates": 0, "n_kept": n_file, "duplicates_of": []})
                rec["n_duplicates"] += n_lost
                rec["n_kept"] = n_file - n_lost
                rec["duplicates_of"] = sorted(set(rec["duplicates_of"]) | sources[(g, f)])
            if n_file and n_lost == n_file:
                skipped.append(
                    {
                        "path": path,
                        "reason": f"all {n_file} soundings duplicate sounding_id values "
                        f"already read from {rec['duplicates_of']}",
                    }
                )
                in_files -= np.array(r["in_files"][f])  # no longer a file read, as open_granules counts
                continue
            remap[f] = len(table)
            table.append(path)
        remaps.append(remap)
    total: Any = sum(codes)  # (n_reasons + 1,) counts, summed over the parts
    order = {rec_path: k for k, rec_path in enumerate(p for r in live for p in r["files"])}
    return {
        "drop": [np.array(d, dtype=np.int64) for d in drop],
        "remap": remaps,
        "table": table,
        "skipped": skipped,
        "kept": [int(c[0]) for c in codes],
        "before": int(total.sum()),
        "in_files": int(in_files[0]),
        "good": int(in_files[1]),
        "dropped": {reason: int(total[k + 1]) for k, reason in enumerate(reasons) if reason in live[0]["reasons"]},
        "records": sorted(records.values(), key=lambda rec: order.get(rec["path"], len(order))),
    }


def _assemble_parts(live: list[dict[str, Any]], plan: dict[str, Any]) -> xr.Dataset:
    """The kept soundings of every work file as one lazy dataset (one chunk per work file)."""
    import operator

    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    variables: dict[str, tuple[str, tuple]] = {}
    for r in live:
        for k, v in r["variables"].items():
            variables.setdefault(k, (v[0], tuple(v[1])))
    n_levels = next((r["n_levels"] for r in live if r["n_levels"]), 0)
    token = tokenize([r["part"] for r in live], [d.tolist() for d in plan["drop"]], plan["table"])
    load = f"ingest-load-{token}"
    layer = {
        (load, g): (_load_part, r["part"], plan["drop"][g], plan["remap"][g], variables, n_levels)
        for g, r in enumerate(live)
    }
    sizes = tuple(plan["kept"])
    with xr.open_dataset(live[0]["part"], engine="netcdf4") as first:
        attrs = {k: dict(first[k].attrs) if k in first.variables else {} for k in variables}
    data_vars: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for name, (dtype, dims) in variables.items():
        vname = f"ingest-{name}-{token}"
        level = len(dims) == 2
        vlayer = {
            ((vname, g, 0) if level else (vname, g)): (operator.getitem, (load, g), name) for g in range(len(live))
        }
        layers: dict[str, Any] = {load: layer, vname: vlayer}
        graph = HighLevelGraph(layers, {load: set(), vname: {load}})
        arr = da.Array(graph, vname, (sizes, (n_levels,)) if level else (sizes,), dtype=np.dtype(dtype))
        (coords if name in ("time", "latitude", "longitude") else data_vars)[name] = (dims, arr, attrs[name])
    data_vars["granule_path"] = (
        "granule",
        np.array(plan["table"], dtype=object),
        cf_attrs("granule_path", live[0]["attrs"]["gas"]),
    )
    return xr.Dataset(data_vars, coords=coords)


def _joined(values: list[str]) -> str:
    seen: list[str] = []
    for v in values:
        for item in str(v).split("; "):
            if item not in seen:
                seen.append(item)
    return "; ".join(seen)


def _ingest_attrs(
    gas: str, live: list[dict[str, Any]], plan: dict[str, Any], skipped: list[dict[str, Any]], screens: str
) -> dict[str, Any]:
    """Global attributes of the soundings file: those of :func:`open_granules` and the quality filter's."""
    a = [r["attrs"] for r in live]
    records = plan["records"]
    return {
        "gas": gas,
        **{
            k: _joined([x[k] for x in a])
            for k in ("product", "product_version", "reader", "xgas_units", "product_screen", "bias_corrected")
        },
        "n_soundings_in_files": plan["in_files"],
        "n_soundings_good": plan["good"],
        "input_files": json.dumps(plan["table"]),
        "skipped_inputs": json.dumps(skipped),
        "duplicate_soundings": json.dumps(records),
        "n_duplicate_soundings": int(sum(rec["n_duplicates"] for rec in records)),
        "n_soundings_before_filter": plan["before"],
        "quality_filter": screens,
        "quality_filter_dropped": json.dumps(plan["dropped"]),
    }


@dataclass
class PipelineResult:
    """What :func:`run` returns: the run directory, its manifest and the stages run or skipped."""

    run_dir: Path
    manifest: dict[str, Any]
    ran: list[str]
    skipped: list[str]

    @property
    def report(self) -> Path:
        """Path of ``report.html``."""
        return self.run_dir / "report.html"


# --------------------------------------------------------------------------- the runner


class _Runner:
    """Holds the state of one run; one method per stage."""

    def __init__(self, cfg: RunConfig, *, force: bool, progress: Callable[[str], None] | None) -> None:
        self.cfg = cfg
        self.force = force
        self.progress = progress or (lambda msg: None)
        self.run_dir = cfg.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Temporary files of an interrupted write are never outputs: clear them.
        for stale in self.run_dir.glob(".*.partial"):
            logger.info("removing %s left by an interrupted run", stale.name)
            stale.unlink(missing_ok=True)
        self.manifest = Manifest.load(self.run_dir / "manifest.json")
        self.grid = GridSpec.from_resolution(cfg.domain.resolution, cfg.domain.bbox)
        self.fingerprints: dict[str, str] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.synthetic = bool(cfg.run.synthetic)
        self.inputs: dict[str, dict[str, Any]] = {}

    # -- bookkeeping --------------------------------------------------------------
    def register_inputs(self) -> int:
        """Checksum every input file; return the total bytes of granules."""
        cfg = self.cfg
        total = 0
        for gs in cfg.gases:
            files = expand_granules(gs.granules)
            if not files:
                msg = f"gases[{gs.gas}].granules: no file matches {gs.granules}"
                raise ConfigError(msg + "; check the paths (relative to the working directory)")
            for f in files:
                rec = _file_record(f, f"granule:{gs.gas}")
                self.inputs[str(f)] = rec
                total += rec["bytes"] or 0
            self.inputs[str(gs.prior.path)] = _file_record(gs.prior.path, f"prior:{gs.gas}")
        for r in cfg.reported:
            self.inputs[str(r.path)] = _file_record(r.path, f"reported:{r.name}")
        for p, kind in ((cfg.regions.boundaries, "boundaries"), (cfg.winds.path, "winds")):
            if p is not None:
                self.inputs[str(p)] = _file_record(p, kind)
        for f in self._footprint_files():
            self.inputs[str(f)] = _file_record(f, "footprints")
        # Inputs that `gosat-pipeline fetch` put in a cache: where and when they came from.
        from gosat_pipeline.fetch.cache import provenance_for

        for path, prov in provenance_for(self.inputs).items():
            self.inputs[path]["fetched"] = prov
        missing = [
            r["path"] for r in self.inputs.values() if r["sha256"] is None and not r["kind"].startswith("granule")
        ]
        if missing:
            raise ConfigError(f"input file(s) not found: {missing}")
        return total

    def _footprint_files(self) -> list[Path]:
        """The external footprint files of the run (none unless ``transport.type: footprints``)."""
        tp = self.cfg.transport
        if tp.type != "footprints" or tp.footprints is None:
            return []
        from gosat_pipeline.transport import footprint_files

        try:  # a file, every file under a folder (a STILT or IMI run) or a glob's matches
            return list(footprint_files(tp.footprints, tp.footprints_format))
        except SchemaError as exc:
            raise ConfigError(f"transport.footprints: {exc}") from None

    def _hash_inputs(self, kind_prefix: str) -> list[tuple[str, str | None]]:
        return sorted((p, r["sha256"]) for p, r in self.inputs.items() if r["kind"].startswith(kind_prefix))

    def stage(self, key: str, fingerprint: str, func: Callable[[], list[str]], **extra: Any) -> bool:
        """Run ``func`` unless stage ``key`` is current; record its outputs and timing."""
        fingerprint = section_hash(fingerprint, __version__)  # a new release recomputes
        self.fingerprints[key] = fingerprint
        if not self.force and self.manifest.stage_is_current(key, fingerprint, self.run_dir):
            logger.info("stage %s: up to date, skipped", key)
            self.progress(f"{key}: up to date")
            self.skipped.append(key)
            return False
        self.progress(f"{key}: running")
        t0 = time.perf_counter()
        self.manifest.data["stages"].pop(key, None)
        self.manifest.data["current_stage"] = key
        self.manifest.save()
        with PeakMemory() as mem:
            outputs = func()
        dt = time.perf_counter() - t0
        self.manifest.data["current_stage"] = None
        self.manifest.record_stage(
            key,
            fingerprint,
            outputs,
            dt,
            peak_memory_bytes=mem.peak_tree,
            peak_memory_main_bytes=mem.peak_main,
            **extra,
        )
        logger.info("stage %s: done in %.1f s", key, dt)
        self.progress(f"{key}: done in {dt:.1f} s")
        self.ran.append(key)
        return True

    def write_nc(self, ds: xr.Dataset, name: str, encoding: dict[str, dict[str, Any]] | None = None) -> str:
        ds = ds.copy()
        for vname, var in ds.variables.items():
            if var.dtype.kind == "O" and var.chunks is not None:
                # strings (sounding ids, file names) are computed once here: netCDF needs their width
                ds[vname] = ds[vname].load()
        ds.attrs.setdefault("Conventions", "CF-1.8")
        if not ds.attrs.get("title"):
            ds.attrs["title"] = output_title(name)
        ds.attrs["history"] = f"{_now()} gosat_pipeline {__version__} run {self.cfg.run.name}"
        if self.synthetic:
            ds.attrs["synthetic"] = "true"
        enc = cf_encoding(ds)
        for vname, extra in (encoding or {}).items():
            enc[vname] = {**enc.get(vname, {}), **extra}
        atomic_write_netcdf(ds, self.run_dir / name, encoding=enc)
        return name

    def open_nc(self, name: str) -> xr.Dataset:
        path = self.run_dir / name
        with xr.open_dataset(path) as ds:
            return ds.load()

    # -- stages -------------------------------------------------------------------
    def ingest(self, gs: Any) -> None:
        import dask

        cfg = self.cfg
        key = f"ingest:{gs.gas}"
        # the grid resolution does not change the soundings: a new grid does not re-ingest
        fp = section_hash(key, gs, cfg.period, {"bbox": cfg.domain.bbox}, self._hash_inputs(f"granule:{gs.gas}"))
        name = f"soundings_{gs.gas}.nc"

        def work() -> list[str]:
            parts_dir = self.run_dir / _PARTS_DIR.format(gas=gs.gas)
            try:
                ds, screening, skipped = self._streamed_ingest(gs, parts_dir)
                self._record_skipped(key, skipped)
                # Nothing is dropped silently: duplicates and screened soundings are counted.
                self.manifest.data.setdefault("screening", {})[gs.gas] = screening
                # Written by this process, one work file at a time: on 2 worker processes the
                # same write took twice as long (every chunk of every variable reopens the file
                # under a cluster-wide lock). Memory: one work file's soundings.
                _contract(validate_soundings, ds, f"{key} output {name}")
                with dask.config.set(scheduler="synchronous"):
                    return [self.write_nc(ds, name)]
            finally:
                shutil.rmtree(parts_dir, ignore_errors=True)

        self.stage(key, fp, work)

    def _streamed_ingest(self, gs: Any, parts_dir: Path) -> tuple[xr.Dataset, dict[str, Any], list[dict[str, Any]]]:
        """Read each group of granules once on a worker, check duplicates across groups, assemble lazily.

        Phase 1 (one task per group of about ``cluster.chunk_size`` soundings): read,
        screen and write a work file; phase 2: the duplicate check across groups on
        hashed keys; phase 3: the kept soundings of every work file as one lazy dataset,
        written by the caller. The main process only handles counts and records: its
        memory does not grow with the number of soundings.
        """
        import dask

        cfg = self.cfg
        shutil.rmtree(parts_dir, ignore_errors=True)  # left by a killed run
        parts_dir.mkdir()
        files = [str(p) for p in expand_granules(gs.granules)]
        read = {
            "gas": gs.gas,
            "format": gs.format,
            "screen": gs.screen.product_screen,
            "bias_corrected": gs.bias_corrected,
            "errors": "raise" if cfg.run.strict else "skip",
        }
        screens = gs.screen.screens(cfg.domain.bbox, (str(cfg.period.start), str(cfg.period.end)))
        t0 = time.perf_counter()
        groups = _file_groups(files, cfg.cluster.chunk_size, gs.gas, gs.format, gs.screen.product_screen)
        tasks = [
            dask.delayed(_ingest_part, pure=False)(g, str(parts_dir / f"part-{k:06d}.nc"), read, screens)
            for k, g in enumerate(groups)
        ]
        results = list(dask.compute(*tasks))
        t1 = time.perf_counter()
        for r in results:
            if "error" in r:
                _raise_record(r["error"])
        skipped = [s for r in results for s in r["skipped"]]
        live = _same_levels([r for r in results if r.get("part")], skipped, cfg.run.strict)
        if not live:
            lines = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped)
            raise GranuleError(str(gs.granules), f"no readable granule among {len(files)} file(s): {lines}")
        parts = [r["part"] for r in live]
        n_part = max(1, -(-sum(r["n"] for r in live) // _DUP_PARTITION))
        rows = [
            row
            for found in dask.compute(
                *[dask.delayed(_cross_duplicates, pure=False)(parts, p, n_part) for p in range(n_part)]
            )
            for row in found
        ]
        plan = _assembly_plan(live, rows)
        logger.info(
            "ingest %s: %d group(s) read and screened in %.1f s; %d duplicate(s) across groups found in %.1f s",
            gs.gas,
            len(groups),
            t1 - t0,
            len(rows),
            time.perf_counter() - t1,
        )
        skipped += plan["skipped"]
        ds = _assemble_parts(live, plan)
        ds.attrs.update(_ingest_attrs(gs.gas, live, plan, skipped, screens.describe()))
        screening = {
            "duplicate_soundings": plan["records"],
            "quality_filter_dropped": plan["dropped"],
            "soundings_kept": int(ds.sizes["sounding"]),
        }
        logger.info(
            "ingest %s: %d soundings kept from %d file(s) in %d group(s), %d skipped",
            gs.gas,
            ds.sizes["sounding"],
            len(plan["table"]),
            len(groups),
            len(skipped),
        )
        return ds, screening, skipped

    def _record_skipped(self, stage: str, skipped: list[dict[str, Any]]) -> None:
        allrec = [s for s in self.manifest.data.get("skipped_inputs", []) if s.get("stage") != stage]
        allrec += [{**s, "stage": stage} for s in skipped]
        self.manifest.data["skipped_inputs"] = allrec
        for s in skipped:
            logger.warning("skipped %s: %s", s.get("path"), s.get("reason"))

    def grid_stage(self, gs: Any) -> None:
        from gosat_pipeline.gridding import grid_soundings

        key = f"grid:{gs.gas}"
        fp = section_hash(
            key,
            self.fingerprints[f"ingest:{gs.gas}"],
            self.cfg.domain,
            self.cfg.period,
            self.cfg.transport.pbl_pressure_depth,
        )
        name = f"gridded_{gs.gas}.nc"

        def work() -> list[str]:
            with xr.open_dataset(
                self.run_dir / f"soundings_{gs.gas}.nc", chunks={"sounding": self.cfg.cluster.chunk_size}
            ) as snd:
                _contract(validate_soundings, snd, f"{key} input soundings_{gs.gas}.nc")
                l3 = grid_soundings(
                    snd,
                    grid=self.grid,
                    time_bin=self.cfg.period.time_bin,
                    time_range=(str(self.cfg.period.start), str(self.cfg.period.end)),
                    pbl_pressure_depth=self.cfg.transport.pbl_pressure_depth,
                )
                _contract(validate_gridded, l3, f"{key} output {name}")
                return [self.write_nc(l3, name)]

        self.stage(key, fp, work)

    def spinup_seconds(self) -> float:
        """How long before the period the time-resolved transport starts (its winds too)."""
        tp = self.cfg.transport
        return float(tp.spinup if tp.spinup is not None else 5.0 * tp.ventilation_time)

    def inventory(self) -> None:
        from gosat_pipeline.domain import prior_emissions
        from gosat_pipeline.inventory import open_prior_inventory, read_reported_totals
        from gosat_pipeline.regions import domain_regions, load_boundaries, region_masks
        from gosat_pipeline.winds import open_winds

        cfg = self.cfg
        key = "inventory"
        fp = section_hash(
            key,
            cfg.domain,
            cfg.regions,
            cfg.winds,
            cfg.period,
            cfg.reported,
            [(g.gas, g.prior) for g in cfg.gases],
            cfg.transport.mode,
            self.spinup_seconds(),
            self._hash_inputs("prior"),
            self._hash_inputs("reported"),
            self._hash_inputs("boundaries"),
            self._hash_inputs("winds"),
        )

        def work() -> list[str]:
            outs: list[str] = []
            bnd_all = load_boundaries(cfg.regions.boundaries)
            dom = domain_regions(bnd_all, self.grid.bbox)
            bnd = bnd_all[bnd_all["region"].isin(list(dom["region"]))]
            masks = region_masks(bnd, self.grid)
            outs.append(self.write_nc(_masks_to_dataset(masks), "regions.nc"))
            # Aggregates are kept for the comparison; outlines of every region in the domain for the maps.
            shown = load_boundaries(cfg.regions.boundaries, iso3=list(dom["region"]), groups=cfg.regions.groups or None)
            atomic_write_text(shown.to_json(drop_id=True), self.run_dir / "boundaries.geojson")
            outs.append("boundaries.geojson")
            for gs in cfg.gases:
                flux = open_prior_inventory(
                    gs.prior.path, gas=gs.gas, variable=gs.prior.variable, sectors=gs.prior.sectors, year=gs.prior.year
                )
                em = prior_emissions(flux, bnd_all, self.grid, iso3=cfg.regions.iso3, rule=cfg.regions.attribution)
                outs.append(self.write_nc(_emissions_to_dataset(em), f"prior_{gs.gas}.nc"))
            t0 = pd.Timestamp(cfg.period.start) - pd.Timedelta(seconds=self.spinup_seconds())
            winds = open_winds(
                cfg.winds.path,
                grid=self.grid,
                u=cfg.winds.u,
                v=cfg.winds.v,
                time_range=(str(t0), str(cfg.period.end)),
                level=cfg.winds.level,
                time_resolved=cfg.transport.mode != "steady",
            )
            outs.append(self.write_nc(winds, "winds.nc"))
            tables = []
            for r in cfg.reported:
                df = read_reported_totals(r.path, **r.read_options([g.gas for g in cfg.gases]))
                df["reference"] = r.name
                tables.append(df)
            rep = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
            atomic_write_text(rep.to_csv(index=False), self.run_dir / "reported_totals.csv")
            outs.append("reported_totals.csv")
            return outs

        self.stage(key, fp, work)

    def _winds_for_transport(self) -> tuple[xr.Dataset, TransportSettings]:
        """The run's winds as the configured operator uses them, and its settings.

        The steady operator only needs the time mean, which is read a block of time steps
        at a time (a year of 6-hourly winds at 0.1 degree is 2.6 GB); the time-resolved
        one needs every step.
        """
        from gosat_pipeline.transport import steady_winds

        with xr.open_dataset(self.run_dir / "winds.nc") as lazy:
            settings = self._transport_settings(lazy)
            if settings.mode == "steady" and "time" in lazy["u"].dims:
                return steady_winds(lazy), settings
            return lazy.load(), settings

    def _transport_settings(self, winds: xr.Dataset) -> TransportSettings:
        """The configured operator; ``auto`` is time-resolved only when the winds cover the period."""
        tp = self.cfg.transport
        mode = tp.mode
        if mode == "auto":
            mode = "steady"
            if "time" in winds["u"].dims and winds.sizes["time"] > 1:
                t = pd.DatetimeIndex(winds["time"].values)
                need0, need1 = pd.Timestamp(self.cfg.period.start), pd.Timestamp(self.cfg.period.end)
                covered = min(t.max(), need1) - max(t.min(), need0)
                if covered >= 0.9 * (need1 - need0):
                    mode = "time_resolved"
                else:
                    logger.warning(
                        "winds cover %s .. %s, not the period %s .. %s: using the steady operator from "
                        "their time mean (transport.mode: auto)",
                        t.min(),
                        t.max(),
                        need0,
                        need1,
                    )
            self.manifest.data.setdefault("transport", {})["mode"] = mode
        return tp.settings(mode=mode, spinup=self.spinup_seconds())

    def invert(self, gs: Any) -> None:
        from gosat_pipeline.ensemble import design_members, ensemble_dataset, invert_ensemble
        from gosat_pipeline.inversion import mass_balance, posterior_flux_maps
        from gosat_pipeline.transport import DEFAULT_SIGMA_MODEL, build_jacobian

        cfg = self.cfg
        key = f"invert:{gs.gas}"
        fp = section_hash(
            key,
            self.fingerprints[f"grid:{gs.gas}"],
            self.fingerprints["inventory"],
            cfg.transport,
            cfg.inversion,
            cfg.ensemble,
            cfg.period.split,
            gs.sigma_model,
            gs.background_prior_sigma,
            gs.background_gradient_sigma,
            gs.inflow_prior_sigma,
            self._hash_inputs("footprints"),
        )

        def work() -> list[str]:
            l3 = _contract(validate_gridded, self.open_nc(f"gridded_{gs.gas}.nc"), f"{key} input gridded_{gs.gas}.nc")
            emissions = _emissions_from_dataset(self.open_nc(f"prior_{gs.gas}.nc"))
            masks = _masks_from_dataset(self.open_nc("regions.nc"))
            winds, settings = self._winds_for_transport()
            tp = cfg.transport
            jkw = {
                "use_weighted_mean": cfg.inversion.use_weighted_mean,
                "period_split": cfg.period.split,
                "footprints": tp.footprints if tp.type == "footprints" else None,
                "footprints_format": tp.footprints_format,
            }
            ikw = {"settings": cfg.inversion.settings(gs)}
            ens = cfg.ensemble
            members = design_members(
                settings,
                sigma_model=gs.sigma_model,
                prior_error=cfg.inversion.prior_error,
                members=ens.members,
                ranges=ens.ranges(),
                seed=ens.seed,
                default_sigma_model=DEFAULT_SIGMA_MODEL[gs.gas],
                external_footprints=tp.type == "footprints",
            )
            self.progress(f"invert:{gs.gas}: {len(members)} inversion(s) ({settings.mode} transport)")
            jac = build_jacobian(l3, emissions, winds=winds, settings=settings, sigma_model=gs.sigma_model, **jkw)
            from gosat_pipeline.inversion import invert

            post = _contract(validate_posterior, invert(jac, **ikw), f"{key} output posterior_{gs.gas}.nc")
            outs = [self._write_jacobian(jac, f"jacobian_{gs.gas}.nc")]
            if len(members) > 1:
                others = invert_ensemble(
                    l3, emissions, members[1:], winds=winds, jacobian_kwargs=jkw, invert_kwargs=ikw
                )
                outs.append(self.write_nc(ensemble_dataset([post, *others], members), f"ensemble_{gs.gas}.nc"))
            maps = posterior_flux_maps(post, emissions)
            mb = mass_balance(
                l3,
                masks,
                u=winds["u"].mean("time") if "time" in winds["u"].dims else winds["u"],
                v=winds["v"].mean("time") if "time" in winds["v"].dims else winds["v"],
                surface_pressure=tp.surface_pressure,
                gas=gs.gas,
            )
            atomic_write_text(
                mb.to_dataframe().reset_index().to_csv(index=False), self.run_dir / f"mass_balance_{gs.gas}.csv"
            )
            return [
                *outs,
                self.write_nc(post, f"posterior_{gs.gas}.nc"),
                self.write_nc(maps, f"emissions_{gs.gas}.nc"),
                f"mass_balance_{gs.gas}.csv",
            ]

        self.stage(key, fp, work)

    def _write_jacobian(self, jac: xr.DataArray, name: str) -> str:
        """The Jacobian file; a block-sparse (lazy) one is densified row chunk by row chunk.

        Its chunks are computed in this process (threads), never shipped to a cluster's
        workers, and compressed (mostly exact zeros: the time blocks it does not see).
        """
        import dask

        if jac.chunks is None:
            return self.write_nc(jac.to_dataset(name="jacobian"), name)
        enc = {"jacobian": {"zlib": True, "complevel": 1, "shuffle": True, "chunksizes": jac.data.chunksize}}
        with dask.config.set(scheduler="threads"):
            return self.write_nc(jac.to_dataset(name="jacobian"), name, encoding=enc)

    def compare(self) -> None:
        from gosat_pipeline.compare import (
            compare_to_inventory,
            domain_budget,
            period_change,
            write_discrepancies,
        )

        cfg = self.cfg
        key = "compare"
        fp = section_hash(
            key, cfg.compare, cfg.regions.groups, [self.fingerprints[f"invert:{g.gas}"] for g in cfg.gases]
        )

        def work() -> list[str]:
            rep = pd.read_csv(self.run_dir / "reported_totals.csv") if cfg.reported else pd.DataFrame()
            frames, changes, budgets = [], [], []
            c = cfg.compare
            thr = c.thresholds()
            for gs in cfg.gases:
                post = _contract(
                    validate_posterior, self.open_nc(f"posterior_{gs.gas}.nc"), f"{key} input posterior_{gs.gas}.nc"
                )
                ens_path = self.run_dir / f"ensemble_{gs.gas}.nc"
                ens = self.open_nc(ens_path.name) if ens_path.is_file() and cfg.ensemble.members > 0 else None
                sub = self._reported_by_year(rep, gs.gas)
                kw = {"thresholds": thr, "ensemble": ens, "aggregates": cfg.regions.groups or None}
                frames.append(compare_to_inventory(post, sub, prior_is_reported=c.prior_is_reported, **kw))
                budgets.append(domain_budget(post, ensemble=ens, transport_error=c.transport_error))
                if c.change is not None:
                    changes.append(
                        period_change(post, sub, period_a=c.change.period_a, period_b=c.change.period_b, **kw)
                    )
            df = pd.concat(frames, ignore_index=True)
            df.attrs = frames[0].attrs
            written = write_discrepancies(df, self.run_dir, changes=pd.concat(changes) if changes else None)
            atomic_write_text(
                pd.concat(budgets, ignore_index=True).to_csv(index=False), self.run_dir / "domain_budget.csv"
            )
            return [Path(p).name for p in written.values()] + ["domain_budget.csv"]

        self.stage(key, fp, work)

    def _reported_by_year(self, rep: pd.DataFrame, gas: str) -> pd.DataFrame:
        """One reported total per (reference, area, year) of the run's period for ``gas``.

        Each configured reference file keeps its own name as the comparison's
        ``source``; within a file, per area, the total category is chosen by
        :func:`gosat_pipeline.inventory.reported_for`.
        """
        from gosat_pipeline.inventory import reported_for

        if rep.empty:
            return rep
        years = range(self.cfg.period.start.year, _last_year(self.cfg.period.end) + 1)
        frames = []
        for ref, table in rep.groupby("reference", sort=False):
            for y in years:
                one = reported_for(table, gas=gas, year=y)
                if one.empty:
                    continue
                one = one.drop(columns="period").assign(year=y, source=str(ref))
                frames.append(one)
        return pd.concat(frames, ignore_index=True) if frames else rep.iloc[0:0]

    def report(self) -> None:
        from gosat_pipeline.regions import default_boundaries_path
        from gosat_pipeline.report import write_report

        key = "report"
        fp = section_hash(key, self.cfg.report, self.fingerprints["compare"])

        def work() -> list[str]:
            # outlines: every country in view on the maps, not only the solved regions
            path = write_report(
                self.run_dir,
                title=self.cfg.report.title,
                region_names=self.cfg.report.region_names,
                outlines=default_boundaries_path(),
            )
            return [Path(path).name]

        self.stage(key, fp, work)


def _start(
    cfg: RunConfig, *, force: bool, progress: Callable[[str], None] | None, config_path: str | os.PathLike[str] | None
) -> tuple[_Runner, dict[str, Any], int]:
    """Checks before the run (:mod:`gosat_pipeline.preflight`), the runner and the manifest's header."""
    from gosat_pipeline.preflight import preflight

    checks = preflight(cfg)
    if checks.problems:
        raise ConfigError(checks.problems, str(config_path) if config_path else None)
    for note in checks.notices:
        (progress or (lambda msg: None))(f"note: {note}")
    r = _Runner(cfg, force=force, progress=progress)
    # any input marked synthetic makes the run synthetic, whatever run.synthetic says
    r.synthetic = bool(cfg.run.synthetic or checks.synthetic_inputs)
    atomic_write_text(config_to_yaml(cfg), r.run_dir / "config.resolved.yaml")
    input_bytes = r.register_inputs()
    m = r.manifest.data
    m.update(
        {
            "gosat_pipeline_version": __version__,
            "run_name": cfg.run.name,
            "config_path": str(config_path) if config_path else None,
            "config_sha256": section_hash(cfg),
            "started": _now(),
            "finished": None,
            "status": "running",
            "synthetic": r.synthetic,
            "synthetic_inputs": checks.synthetic_inputs,
            "preflight": {"notices": checks.notices, "partly_outside_domain": checks.partial_regions},
            "versions": _versions(),
            "platform": {"system": platform.platform(), "cpus": os.cpu_count(), "argv": sys.argv},
            "inputs": sorted(r.inputs.values(), key=lambda x: x["path"]),
        }
    )
    return r, m, input_bytes


def run(
    cfg: RunConfig,
    *,
    force: bool = False,
    until: str | None = None,
    progress: Callable[[str], None] | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> PipelineResult:
    """Run the pipeline described by ``cfg``, resuming completed stages.

    Parameters
    ----------
    cfg : RunConfig
        From :func:`gosat_pipeline.load_config`.
    force : bool
        Recompute every stage even when its fingerprint is unchanged.
    until : str, optional
        Last stage to run (one of :data:`STAGES`); earlier stages run or resume.
    progress : callable, optional
        Receives one short line per stage event (the CLI prints them).
    config_path : path-like, optional
        Recorded in the manifest.

    Returns
    -------
    PipelineResult

    Notes
    -----
    While it runs, numpy gives the kernel no transparent-hugepage advice where the
    kernel's policy would compact memory at every fault of a large array
    (:func:`gosat_pipeline.runtime.hugepage_advice`; its Dask workers inherit the
    setting; ``NUMPY_MADVISE_HUGEPAGE`` set by the user wins). Recorded in the
    manifest under ``memory``.
    """
    if until is not None and until not in STAGES:
        raise ConfigError(f"unknown stage {until!r}; choose one of {list(STAGES)}")
    last = STAGES.index(until) if until else len(STAGES) - 1
    r, m, input_bytes = _start(cfg, force=force, progress=progress, config_path=config_path)
    t_start = time.perf_counter()
    m.setdefault("skipped_inputs", [])
    r.manifest.save()
    try:
        with hugepage_advice() as memory, dask_cluster(cfg.cluster, input_bytes=input_bytes) as cluster_info:
            m["memory"] = memory
            m["cluster"] = cluster_info
            r.manifest.save()
            try:
                _run_stages(r, last, t_start)
            except BaseException as exc:
                # Free the failed stage's lazy datasets (file handles holding distributed
                # locks) while the cluster is still up, not at interpreter exit.
                traceback.clear_frames(exc.__traceback__)
                gc.collect()
                raise
    except GosatPipelineError:
        m["status"] = "failed"
        r.manifest.save()
        raise
    _finalise(m, "complete" if last == len(STAGES) - 1 else f"complete up to {STAGES[last]}", t_start)
    r.manifest.save()
    return PipelineResult(r.run_dir, m, r.ran, r.skipped)


def _run_stages(r: _Runner, last: int, t_start: float) -> None:
    """Run (or resume) the stages ``STAGES[: last + 1]`` in order (per gas where they are)."""
    cfg = r.cfg

    def each_gas(stage: Callable[[Any], None]) -> Callable[[], None]:
        def step() -> None:
            for gs in cfg.gases:
                stage(gs)

        return step

    def report() -> None:
        if cfg.report.enabled:
            _report_last(r, t_start)

    steps: dict[str, Callable[[], None]] = {
        "ingest": each_gas(r.ingest),
        "grid": each_gas(r.grid_stage),
        "inventory": r.inventory,
        "invert": each_gas(r.invert),
        "compare": r.compare,
        "report": report,
    }
    for name in STAGES[: last + 1]:
        steps[name]()


def _report_last(r: _Runner, t_start: float) -> None:
    """The report stage, after the run's status and wall time are final (the report shows them)."""
    m = r.manifest.data
    _finalise(m, "complete", t_start)
    r.manifest.save()
    try:
        r.report()
    except BaseException:
        m["status"] = "failed"
        r.manifest.save()
        raise


def _finalise(m: dict[str, Any], status: str, t_start: float) -> None:
    """Record the run's final status, end time and wall time in the manifest dict."""
    m["status"] = status
    m["finished"] = _now()
    m["wall_time_s"] = round(time.perf_counter() - t_start, 3)
