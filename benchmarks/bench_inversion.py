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

(3) state size (issue 19): n = 5 000 emission elements (one per cell of a 100 x 100 grid with
    land on half of it: a per-cell state), m = 25 000 observations of a sparse Jacobian. The
    solve (``analytic_inversion``: normal equations, factorisation, posterior covariance and
    averaging kernel) against the regional totals (``region_totals``: sums, covariances,
    sensitivities, observation counts) and the posterior flux maps (``posterior_flux_maps``);
    target: totals and maps <= 10 % of the solve. Run under the process settings of a
    pipeline run (``gosat_pipeline.runtime.hugepage_advice``: numpy's hugepage advice off
    where the kernel would compact memory at each fault), then again with numpy's default.

Usage: ``.venv/bin/python benchmarks/bench_inversion.py [--quick]`` (quick: m / 5, n / 2).
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

from gosat_pipeline.inversion import (
    analytic_inversion,
    analytic_inversion_chunked,
    invert,
    posterior_flux_maps,
    region_totals,
)


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


def state_size_case(n: int, m: int) -> dict[str, float]:
    """A per-cell state: n single-cell regions, a sparse K, one period; times of solve, totals, maps."""
    import scipy.sparse as sp
    import xarray as xr

    from gosat_pipeline.grids import GridSpec
    from gosat_pipeline.statevector import StateVector

    rng = np.random.default_rng(3)
    side = int(np.ceil(np.sqrt(2 * n)))
    grid = GridSpec.from_resolution(0.25, (100.0, 0.0, 100.0 + side * 0.25, side * 0.25))
    cells = np.sort(rng.choice(grid.size, size=n, replace=False))  # the "land" cells, one region each
    codes = np.array([f"C{i:05d}" for i in range(n)])
    flux = rng.uniform(1e-10, 1e-9, n)  # kg m-2 s-1
    em = np.zeros((n, grid.size))
    em[np.arange(n), cells] = flux
    emissions = xr.DataArray(
        em.reshape(n, 1, *grid.shape),
        dims=("region", "sector", "latitude", "longitude"),
        coords={
            "region": codes,
            "sector": ["total"],
            "region_name": ("region", codes),
            "region_role": ("region", np.full(n, "requested")),
            **grid.coords(),
        },
    )
    area = grid.cell_area().ravel()[cells]
    recs = [
        {"kind": "emission", "region": c, "region_name": c, "role": "requested", "period": "2020", "prior_emission": e}
        for c, e in zip(codes, flux * area * 365.25 * 86400, strict=True)
    ]
    sv = StateVector.from_records(recs)
    # each observation sees its cell's ~12 nearest elements
    obs_el = rng.integers(0, n, m)
    cols = np.clip(obs_el[:, None] + np.arange(-6, 6)[None, :], 0, n - 1)
    vals = rng.uniform(0.1, 1.0, cols.shape) * 5.0
    K = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, cols.size + 1, cols.shape[1])), shape=(m, n))
    K.sum_duplicates()
    y = K @ np.full(n, 1.2) + rng.standard_normal(m) * 8.0
    jac = xr.DataArray(
        K.toarray(),
        dims=("obs", "state"),
        coords={**sv.to_coords(), "obs_value": ("obs", y), "obs_sigma": ("obs", np.full(m, 8.0))},
        attrs={"gas": "CH4"},
    )
    xa, sa, so = np.ones(n), np.full(n, 0.25), np.full(m, 64.0)
    t0 = time.perf_counter()
    analytic_inversion(K, y, xa, sa, so, form="state")
    t_solve = time.perf_counter() - t0
    post = invert(jac)
    t0 = time.perf_counter()
    region_totals(post, K=K, whitened_residual=rng.standard_normal(m))
    t_tot = time.perf_counter() - t0
    t0 = time.perf_counter()
    posterior_flux_maps(post, emissions)
    t_maps = time.perf_counter() - t0
    return {"n": n, "m": m, "t_solve": t_solve, "t_totals": t_tot, "t_maps": t_maps}


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
    from gosat_pipeline.runtime import hugepage_advice

    with hugepage_advice() as memory:
        z = state_size_case(5_000 // (2 if args.quick else 1), 25_000 // f)
    print(f"(3) state size: n={z['n']} per-cell elements, m={z['m']}, sparse K")
    _print_state_size(z, f"a run's settings: numpy hugepage advice {memory['numpy_madvise_hugepage']}")
    z = state_size_case(5_000 // (2 if args.quick else 1), 25_000 // f)
    _print_state_size(z, f"numpy's default advice (kernel THP {memory['thp_enabled']}, defrag {memory['thp_defrag']})")


def _print_state_size(z: dict[str, float], title: str) -> None:
    print(f"    [{title}]")
    print(f"    solve (analytic_inversion)   {z['t_solve']:.2f} s")
    print(
        f"    regional totals              {z['t_totals']:.2f} s   ratio {z['t_totals'] / z['t_solve']:.3f} of the solve"
    )
    print(
        f"    posterior flux maps          {z['t_maps']:.2f} s   ratio {z['t_maps'] / z['t_solve']:.3f} of the solve"
        f"   (target: totals + maps <= 0.10; {(z['t_totals'] + z['t_maps']) / z['t_solve']:.3f})"
    )


if __name__ == "__main__":
    main()
