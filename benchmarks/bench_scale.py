"""Real-volume runs of the whole pipeline (``make bench-scale``; issues 19 and 21), not part of ``make test``.

Generates (once, cached in ``--data``, default ``benchmarks/.scale-data``) and runs with
``gosat_pipeline.run`` on a two-process local Dask cluster, each run in a child process
watched for time and memory:

(a) ``gosat``: a year (2020) of GOSAT-like soundings over the ASEAN member states (UoL/CCI
    proxy XCH4 layout, one granule a day) at 1, 0.5 and 0.25 degree, with the national
    state (10 countries) and, at 1 and 0.5 degree, a per-cell state (one region per land
    grid cell, through a boundaries file with one box per cell: the pipeline has no other
    per-cell state);
(b) ``tropomi-year``: a TROPOMI-like year (Sentinel-5P CH4 layout, one granule a day;
    1e7 soundings by default) over ASEAN at 0.25 degree, national state;
(c) ``tropomi-month``: a TROPOMI-like month (January 2020, 2.5e7 soundings by default)
    over ASEAN at 0.1 degree, national state (one emission period: a monthly per-country
    state).

For every run it prints each stage's wall time and peak memory of the process tree (the
Dask worker processes included) and of the main process, from ``manifest.json``
(``peak_memory_bytes``, ``peak_memory_main_bytes``). A run that exceeds ``--timeout``
seconds or ``--max-memory`` GiB (process tree) is stopped, and the stage it was in is
reported with the time and memory reached.

With ``--by-address`` every case runs a second time on a two-worker ``dask.distributed``
cluster started by this script and reached by address (``cluster: {type: address}``), its
workers' memory counted, and the two runs' posteriors and discrepancy tables are compared
(identical to the bit, or their largest difference).

Usage: ``.venv/bin/python benchmarks/bench_scale.py [--cases gosat,tropomi-year,tropomi-month]
[--only RUN,RUN] [--by-address] [--members N] [--tropomi-year N] [--tropomi-month N] [--timeout S]
[--max-memory GIB] [--quick]`` (``--quick``: a hundredth of the soundings, for a check of the
script itself; ``--only``: run names such as ``gosat-0.5deg-per-cell``, ``tropomi-year-0.25deg``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import yaml

from gosat_pipeline.testing.demo import ASEAN, DEMO_BBOX, build_demo_samples
from gosat_pipeline.testing.granules import granule_filename, granule_soundings, write_granule

HERE = Path(__file__).resolve().parent
GIB = 2**30
STAGE_ORDER = ("ingest", "grid", "inventory", "invert", "compare", "report")


# ---------------------------------------------------------------------------- inputs
def _write_day(args: tuple[str, str, int, int, int, str]) -> str:
    fmt, out, day_index, n, seed, start = args
    day = pd.Timestamp(start) + pd.Timedelta(days=day_index)
    path = Path(out) / granule_filename(fmt, day, gas="CH4")
    if not path.is_file():
        ds = granule_soundings(fmt, n, "CH4", seed=seed + day_index, bbox=DEMO_BBOX, start=str(day))
        tmp = path.with_suffix(".tmp")
        write_granule(ds, tmp, fmt)
        os.replace(tmp, path)
    return str(path)


def make_granules(
    root: Path, fmt: str, n_days: int, total: int, *, start: str = "2020-01-01", seed: int = 11, procs: int = 2
) -> tuple[Path, float]:
    """``total`` soundings in ``n_days`` daily granules of ``fmt`` over ASEAN (kept between runs)."""
    out = root / f"{fmt}-{n_days}d-{total}"
    out.mkdir(parents=True, exist_ok=True)
    per_day = -(-total // n_days)
    t = time.perf_counter()
    jobs = [(fmt, str(out), k, per_day, seed, start) for k in range(n_days)]
    with mp.get_context("spawn").Pool(procs) as pool:
        for _ in pool.imap_unordered(_write_day, jobs):
            pass
    return out, time.perf_counter() - t


def _cell_codes(n: int, avoid: set[str]) -> list[str]:
    """``n`` three-letter region codes (the config takes ISO-3 style codes), none of ``avoid``."""
    from itertools import product
    from string import ascii_uppercase

    codes = ("".join(c) for c in product(ascii_uppercase, repeat=3))
    return [c for c in codes if c not in avoid][:n]


def per_cell_boundaries(path: Path, resolution: float, avoid: set[str]) -> list[str]:
    """A boundaries file with one box per grid cell mostly on ASEAN land; returns the cells' codes.

    Codes are three letters (as the configuration requires), none of ``avoid`` (the areas
    of the reported table), so that no cell is compared with a country's total.
    """
    import geopandas as gpd
    import shapely

    from gosat_pipeline.grids import GridSpec
    from gosat_pipeline.regions import load_boundaries, region_masks

    grid = GridSpec.from_resolution(resolution, DEMO_BBOX)
    land = region_masks(load_boundaries(None, iso3=list(ASEAN)), grid).sum("region").values > 0.5
    iy, ix = np.nonzero(land)
    lat_e, lon_e = grid.lat_edges, grid.lon_edges
    codes = _cell_codes(iy.size, avoid)
    boxes = [shapely.box(lon_e[j], lat_e[i], lon_e[j + 1], lat_e[i + 1]) for i, j in zip(iy, ix, strict=True)]
    names = [f"cell {lat_e[i]:.2f}N {lon_e[j]:.2f}E" for i, j in zip(iy, ix, strict=True)]
    gpd.GeoDataFrame({"region": codes, "name": names, "geometry": boxes}, crs=4326).to_file(path, driver="GeoJSON")
    return codes


# ---------------------------------------------------------------------------- runs
def make_config(
    root: Path,
    name: str,
    granules: Path,
    fmt: str,
    resolution: float,
    *,
    start: str,
    end: str,
    boundaries: Path | None = None,
    iso3: list[str] | None = None,
    split: str | None = None,
    transport_mode: str = "auto",
    members: int | None = None,
    cluster: dict[str, Any] | None = None,
) -> Path:
    s = root / "samples"
    regions: dict[str, Any] = {"iso3": iso3 or list(ASEAN)}
    if boundaries is None:
        regions["groups"] = {"ASEAN": list(ASEAN)}
    else:
        regions["boundaries"] = str(boundaries)
    cfg = {
        "run": {"name": name, "output_dir": str(root / "runs"), "synthetic": True},
        "period": {"start": start, "end": end, "time_bin": "MS", **({"split": split} if split else {})},
        "domain": {"bbox": list(DEMO_BBOX), "resolution": resolution},
        "gases": [
            {
                "gas": "CH4",
                "granules": [str(granules / "*.nc")],
                "format": fmt,
                "prior": {"path": str(s / "prior_CH4.nc")},
                "sigma_model": 8.0,
                "background_prior_sigma": 30.0,
            }
        ],
        "reported": [{"path": str(s / "reported_totals.csv"), "name": "national submission"}],
        "regions": regions,
        "winds": {"path": str(s / "winds_era5.nc")},
        "transport": {"eddy_diffusivity": 50000.0, "ventilation_time": 172800.0, "mode": transport_mode},
        "report": {"enabled": False},
        **({"ensemble": {"members": members}} if members is not None else {}),
        "cluster": cluster or {"type": "local", "n_workers": 2, "threads_per_worker": 1, "tiny_job_bytes": 0},
    }
    path = root / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _child(config: str) -> None:
    from gosat_pipeline import load_config, run

    run(load_config(config), force=True, config_path=config)


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_case(
    config: Path, run_dir: Path, timeout: float, max_memory: float, extra: list[int] | None = None
) -> dict[str, Any]:
    """Run one configuration in a child process; stop it beyond ``timeout`` s or ``max_memory`` bytes.

    ``extra``: processes outside the child's tree counted in its memory (the workers of a
    cluster it reaches by address).
    """
    others = [psutil.Process(p) for p in extra or []]
    shutil.rmtree(run_dir, ignore_errors=True)
    child = mp.get_context("spawn").Process(target=_child, args=(str(config),))
    t0 = time.perf_counter()
    child.start()
    proc = psutil.Process(child.pid)
    peak, stopped = 0, None
    while child.is_alive():
        try:
            rss = _tree_rss(proc) + sum(_tree_rss(o) for o in others)
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        elapsed = time.perf_counter() - t0
        if elapsed > timeout or rss > max_memory:
            stopped = f"stopped after {elapsed:.0f} s" if elapsed > timeout else f"stopped at {rss / GIB:.1f} GiB"
            for p in [*proc.children(recursive=True), proc]:
                try:
                    p.kill()
                except psutil.Error:
                    continue
            break
        time.sleep(0.2)
    child.join()
    wall = time.perf_counter() - t0
    man_path = run_dir / "manifest.json"
    man = json.loads(man_path.read_text()) if man_path.is_file() else {}
    status = stopped or ("complete" if child.exitcode == 0 else f"failed (exit {child.exitcode})")
    return {"wall": wall, "peak": peak, "status": status, "manifest": man}


def report(title: str, res: dict[str, Any]) -> None:
    man = res["manifest"]
    print(
        f"\n--- {title}: {res['status']}; {res['wall']:.0f} s in all, peak {res['peak'] / GIB:.2f} GiB "
        f"(process tree, sampled every 0.2 s)"
    )
    print(f"    {'stage':16s} {'wall s':>8s} {'peak GiB (tree)':>16s} {'peak GiB (main)':>16s}")
    stages = man.get("stages", {})
    order = {name: k for k, name in enumerate(STAGE_ORDER)}
    for key in sorted(stages, key=lambda k: (order.get(k.split(":")[0], len(order)), k)):
        rec = stages[key]
        print(
            f"    {key:16s} {rec['wall_time_s']:8.1f} {rec.get('peak_memory_bytes', 0) / GIB:16.2f} "
            f"{rec.get('peak_memory_main_bytes', 0) / GIB:16.2f}"
        )
    current = man.get("current_stage")
    if current and res["status"] != "complete":
        print(f"    {current:16s} {'(' + res['status'] + ' in this stage)':>42s}")
    scr = man.get("screening", {}).get("CH4")
    if scr:
        ingest = stages.get("ingest:CH4")
        n_in = sum(1 for i in man.get("inputs", []) if i["kind"] == "granule:CH4")
        rate = f", {res['n_soundings'] / ingest['wall_time_s']:,.0f} soundings/s read" if ingest else ""
        print(f"    {scr['soundings_kept']:,} soundings kept from {n_in} granules{rate}")


# ---------------------------------------------------------------------------- by address
def start_cluster() -> Any:
    """A two-worker ``dask.distributed`` cluster in this process, for runs that reach it by address.

    Starting it sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` to 1
    in this process's environment (for its workers); the environment is put back, so the
    run's own process keeps the BLAS threads a run started from a shell has (one BLAS thread
    instead of two rounds the inversion's sums differently, in the last bits).
    """
    from distributed import LocalCluster

    saved = dict(os.environ)
    try:
        return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def compare_runs(a: Path, b: Path) -> str:
    """How two runs' posteriors and discrepancy tables compare: identical, or the largest relative difference."""
    import xarray as xr

    worst, files = 0.0, 0
    for f in sorted(a.glob("posterior_*.nc")):
        with xr.open_dataset(f) as x, xr.open_dataset(b / f.name) as y:
            for v in x.data_vars:
                p, q = x[v].values, y[v].values
                if p.shape != q.shape:
                    return f"{f.name} {v}: shapes {p.shape} and {q.shape}"
                if p.dtype.kind != "f":
                    if not np.array_equal(p, q):
                        return f"{f.name} {v} differs"
                    continue
                if not np.array_equal(np.isnan(p), np.isnan(q)):
                    return f"{f.name} {v}: NaN in different places"
                d = np.abs(p - q)[~np.isnan(p)]
                if d.size:
                    worst = max(worst, float(np.max(d / np.maximum(np.abs(p[~np.isnan(p)]), 1e-300))))
        files += 1
    da, db = pd.read_csv(a / "discrepancies.csv"), pd.read_csv(b / "discrepancies.csv")
    num = da.select_dtypes("number").columns
    text_same = da.drop(columns=num).equals(db.drop(columns=num))
    if da.shape != db.shape or not da[num].isna().equals(db[num].isna()):
        return "discrepancies.csv: different rows or missing values in different places"
    dnum = float((da[num] - db[num]).abs().max().max()) if len(num) else 0.0
    if worst == 0.0 and dnum == 0.0 and text_same:
        return f"identical ({files} posterior file(s) and discrepancies.csv, to the bit)"
    return (
        f"posteriors differ by up to {worst:.1e} (relative), discrepancies numbers by up to {dnum:.1e}, "
        f"verdict text {'identical' if text_same else 'DIFFERENT'}"
    )


def run_and_report(a: argparse.Namespace, root: Path, name: str, title: str, n_soundings: int, **config: Any) -> None:
    """Run one case (and, with ``--by-address``, again on a cluster reached by address), print both."""
    if a.only and name not in a.only:
        return
    limit = a.max_memory * GIB
    cfg = make_config(root, name, members=a.members, **config)
    out = run_case(cfg, root / "runs" / name, a.timeout, limit)
    out["n_soundings"] = n_soundings
    report(title, out)
    if not a.by_address:
        return
    with start_cluster() as cluster:
        cfg2 = make_config(
            root,
            f"{name}-address",
            members=a.members,
            cluster={"type": "address", "address": cluster.scheduler_address},
            **config,
        )
        out2 = run_case(cfg2, root / "runs" / f"{name}-address", a.timeout, limit, extra=_worker_pids(cluster))
    out2["n_soundings"] = n_soundings
    report(f"{title}, on a two-worker cluster by address", out2)
    if out["status"] == out2["status"] == "complete":
        print(
            f"    by address vs local cluster: {compare_runs(root / 'runs' / name, root / 'runs' / f'{name}-address')}"
        )


def _worker_pids(cluster: Any) -> list[int]:
    """The worker processes' ids (each worker is a Nanny: ``pid`` of the process it watches)."""
    return [int(w.pid) for w in cluster.workers.values() if getattr(w, "pid", None)]


# ---------------------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="gosat,tropomi-year,tropomi-year-monthly,tropomi-month")
    ap.add_argument("--only", default="", help="comma-separated run names of those cases (e.g. gosat-0.5deg-per-cell)")
    ap.add_argument("--data", type=Path, default=HERE / ".scale-data")
    ap.add_argument("--gosat", type=int, default=366 * 600, help="GOSAT-like soundings in the year")
    ap.add_argument("--tropomi-year", type=int, default=10_000_000, help="TROPOMI-like soundings in the year")
    ap.add_argument("--tropomi-month", type=int, default=25_000_000, help="TROPOMI-like soundings in January")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds a run may take")
    ap.add_argument("--max-memory", type=float, default=18.0, help="GiB the process tree of a run may use")
    ap.add_argument("--quick", action="store_true", help="a hundredth of the soundings")
    ap.add_argument(
        "--members", type=int, default=None, help="transport ensemble members of every run (default: the config's, 8)"
    )
    ap.add_argument(
        "--by-address",
        action="store_true",
        help="run every case again on a two-worker dask.distributed cluster reached by address, and compare",
    )
    a = ap.parse_args(argv)
    a.only = {x for x in a.only.split(",") if x}
    if a.quick:
        a.gosat, a.tropomi_year, a.tropomi_month = a.gosat // 100, a.tropomi_year // 100, a.tropomi_month // 100
    root = a.data.resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "samples" / "prior_CH4.nc").is_file():
        build_demo_samples(root / "samples")
    cases = a.cases.split(",")
    print(
        f"bench-scale: {os.cpu_count()} cores, {psutil.virtual_memory().total / GIB:.0f} GiB; runs on a "
        f"2-process local cluster{' and again by address' if a.by_address else ''}; data in {root}"
    )
    year = {"start": "2020-01-01", "end": "2021-01-01"}
    if "gosat" in cases:
        gdir, gen = make_granules(root, "cci_ocpr", 366, a.gosat)
        print(f"(a) GOSAT-like year: {a.gosat:,} soundings in 366 CCI granules (generated in {gen:.0f} s)")
        for res in (1.0, 0.5, 0.25):
            run_and_report(
                a,
                root,
                f"gosat-{res:g}deg-national",
                f"GOSAT year, {res:g} degree, national state (10 countries)",
                a.gosat,
                granules=gdir,
                fmt="cci_ocpr",
                resolution=res,
                **year,
            )
        for res in (1.0, 0.5):
            name = f"gosat-{res:g}deg-per-cell"
            if a.only and name not in a.only:
                continue
            bnd = root / "configs" / f"cells-{res:g}.geojson"
            avoid = set(pd.read_csv(root / "samples" / "reported_totals.csv")["area"].astype(str)) | set(ASEAN)
            codes = per_cell_boundaries(bnd, res, avoid)
            run_and_report(
                a,
                root,
                name,
                f"GOSAT year, {res:g} degree, per-cell state ({len(codes)} land cells)",
                a.gosat,
                granules=gdir,
                fmt="cci_ocpr",
                resolution=res,
                boundaries=bnd,
                iso3=codes,
                **year,
            )
    if "tropomi-year" in cases:
        tdir, gen = make_granules(root, "tropomi_ch4", 366, a.tropomi_year)
        print(f"\n(b) TROPOMI-like year: {a.tropomi_year:,} soundings in 366 granules (generated in {gen:.0f} s)")
        run_and_report(
            a,
            root,
            "tropomi-year-0.25deg",
            "TROPOMI-like year, 0.25 degree, national state",
            a.tropomi_year,
            granules=tdir,
            fmt="tropomi_ch4",
            resolution=0.25,
            **year,
        )
    if "tropomi-year-monthly" in cases:  # issue 21: a monthly per-country state (n ~ 130) at 0.1 degree
        tdir, gen = make_granules(root, "tropomi_ch4", 366, a.tropomi_year)
        # the steady operator: the time-resolved one at 0.1 degree over a year integrates ~6 000 explicit
        # sub-steps of 218 400 cells x ~60 forcings, hours on two cores (README, Performance)
        run_and_report(
            a,
            root,
            "tropomi-year-0.1deg-monthly",
            "TROPOMI-like year, 0.1 degree, monthly per-country state (steady transport)",
            a.tropomi_year,
            granules=tdir,
            fmt="tropomi_ch4",
            resolution=0.1,
            split="MS",
            transport_mode="steady",
            **year,
        )
    if "tropomi-month" in cases:
        mdir, gen = make_granules(root, "tropomi_ch4", 31, a.tropomi_month)
        print(f"\n(c) TROPOMI-like month: {a.tropomi_month:,} soundings in 31 granules (generated in {gen:.0f} s)")
        run_and_report(
            a,
            root,
            "tropomi-month-0.1deg",
            "TROPOMI-like month, 0.1 degree, national state (one period: monthly per-country)",
            a.tropomi_month,
            granules=mdir,
            fmt="tropomi_ch4",
            resolution=0.1,
            start="2020-01-01",
            end="2020-02-01",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
