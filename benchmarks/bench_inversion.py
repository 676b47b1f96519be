"""Benchmark of the analytic inversion core (issue 6 performance targets).

(1) m = 100 000 observations, n = 1 000 state elements, dense K: time of
    ``analytic_inversion`` (state-space form, diagonal S_a and S_o) against one dense
    general matrix product K^T K (BLAS ``dgemm``; target <= 1.0x, issue 19) and against
    numpy's ``K.T @ K`` (which numpy itself routes to the symmetric ``dsyrk``), all three
    timed round by round in the same run, and the extra peak memory of the inversion
    beyond K itself against four n x n float64 matrices (tracemalloc, which sees every
    numpy allocation).
(2) m = 1 000 000, n = 500 streamed in chunks generated on the fly (never materialised):
    a Python generator and a dask array, peak resident memory (psutil, sampled) against
    2 GB.

Usage: ``.venv/bin/python benchmarks/bench_inversion.py [--quick]`` (quick: m / 5).
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
import tracemalloc

import numpy as np
import psutil
from scipy.linalg import blas

from gosat_pipeline.inversion import analytic_inversion, analytic_inversion_chunked


class PeakRSS:
    """Sample the process resident set size in a background thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def dense_case(m: int, n: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    K = rng.standard_normal((m, n))
    y = K @ np.full(n, 1.2) + rng.standard_normal(m)
    xa, sa, so = np.ones(n), np.full(n, 0.25), rng.uniform(0.5, 2.0, m)
    t_ktk, t_gemm, t_inv = [], [], []
    for _ in range(repeats):  # round by round: each method sees the same moments of a noisy machine
        t0 = time.perf_counter()
        G = K.T @ K
        t_ktk.append(time.perf_counter() - t0)
        del G
        t0 = time.perf_counter()
        G = blas.dgemm(1.0, K.T, K.T, trans_b=1)  # K.T is Fortran-ordered: no copy; a general product
        t_gemm.append(time.perf_counter() - t0)
        del G
        t0 = time.perf_counter()
        analytic_inversion(K, y, xa, sa, so, form="state")
        t_inv.append(time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    res = analytic_inversion(K, y, xa, sa, so, form="state")
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    kept = res.S_hat.nbytes + res.A.nbytes
    return {
        "m": m,
        "n": n,
        "t_ktk": min(t_ktk),
        "t_gemm": min(t_gemm),
        "t_inv": min(t_inv),
        "extra_peak": peak,
        "budget": 4 * n * n * 8,
        "K_bytes": K.nbytes,
        "kept": kept,
        "dofs": res.dofs,
    }


def _chunks(m: int, n: int, rows: int, seed: int):
    truth = np.full(n, 1.2)
    for i, start in enumerate(range(0, m, rows)):
        rng = np.random.default_rng([seed, i])
        k = min(rows, m - start)
        Kc = rng.standard_normal((k, n))
        yield Kc, Kc @ truth + rng.standard_normal(k), np.ones(k)


def streamed_case(m: int, n: int, rows: int) -> dict[str, float]:
    import dask
    import dask.array as da

    xa, sa = np.ones(n), np.full(n, 0.25)
    gc.collect()
    base = psutil.Process().memory_info().rss
    with PeakRSS() as pk:
        t0 = time.perf_counter()
        r1 = analytic_inversion_chunked(_chunks(m, n, rows, 1), xa, sa)
        t_gen = time.perf_counter() - t0
    peak_gen = pk.peak
    K = da.random.default_rng(2).standard_normal((m, n), chunks=(rows, n))
    y = K @ np.full(n, 1.2) + da.random.default_rng(3).standard_normal(m, chunks=rows)
    with dask.config.set(scheduler="threads", num_workers=2), PeakRSS() as pk:
        t0 = time.perf_counter()
        r2 = analytic_inversion_chunked(K, xa, sa, y=y, So=np.ones(m))
        t_dask = time.perf_counter() - t0
    return {
        "m": m,
        "n": n,
        "rows": rows,
        "t_gen": t_gen,
        "peak_gen": peak_gen,
        "t_dask": t_dask,
        "peak_dask": pk.peak,
        "base": base,
        "dofs_gen": r1.dofs,
        "dofs_dask": r2.dofs,
        "logical_K_bytes": m * n * 8,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="m / 5 for a fast check")
    args = ap.parse_args()
    f = 5 if args.quick else 1
    d = dense_case(100_000 // f, 1_000, repeats=3)
    mb = 1024**2
    print(f"(1) dense K: m={d['m']}, n={d['n']} (K = {d['K_bytes'] / mb:.0f} MiB)")
    print(f"    K^T K by dgemm          {d['t_gemm']:.3f} s")
    print(f"    K.T @ K (numpy: dsyrk)  {d['t_ktk']:.3f} s")
    print(
        f"    analytic_inversion      {d['t_inv']:.3f} s   ratio {d['t_inv'] / d['t_gemm']:.2f}x one dgemm "
        f"(target <= 1.0x), {d['t_inv'] / d['t_ktk']:.2f}x numpy's K.T @ K"
    )
    print(
        f"    extra peak memory       {d['extra_peak'] / mb:.1f} MiB beyond K; four n x n = {d['budget'] / mb:.1f} MiB"
        f"   ratio {d['extra_peak'] / d['budget']:.2f} (target <= 1)"
    )
    print(f"    DOFS {d['dofs']:.1f}")
    s = streamed_case(1_000_000 // f, 500, rows=20_000)
    print(
        f"(2) streamed: m={s['m']}, n={s['n']}, chunks of {s['rows']} rows "
        f"(K would be {s['logical_K_bytes'] / mb:.0f} MiB)"
    )
    print(
        f"    generator: {s['t_gen']:.2f} s, {s['m'] / s['t_gen']:.0f} obs/s, peak RSS {s['peak_gen'] / mb:.0f} MiB "
        f"(process baseline {s['base'] / mb:.0f} MiB; target < 2048 MiB)"
    )
    print(
        f"    dask:      {s['t_dask']:.2f} s, {s['m'] / s['t_dask']:.0f} obs/s, peak RSS {s['peak_dask'] / mb:.0f} MiB"
    )
    print(f"    DOFS generator {s['dofs_gen']:.2f}, dask {s['dofs_dask']:.2f}")


if __name__ == "__main__":
    main()
