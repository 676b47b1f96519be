"""Benchmark of the time-resolved transport's explicit sub-steps (issue 19: fine transport grids).

One 6-hour step of positivity-preserving forward-Euler sub-steps
:math:`c \\leftarrow c + h (s - M c)` over ASEAN ([90, -12, 142, 30]) for 33 forcings (a
national state with inflow), under seeded random winds of 5 ± 3 m/s: the fused numba
kernel the operator uses (``transport.operator._advance``) against the
same sub-steps as a scipy sparse product and array operations (the baseline, timed in the
same run, best of three), with the largest relative difference of the states; then
``integrate_responses`` over whole days end to end. The emission sources are national-like:
the cells shared among the forcings, each cell under one (a sparse source, as in the
pipeline). Last, one step at 0.5 degree with 1430 per-cell forcings (the per-cell GOSAT state)
under a run's process settings (numpy's hugepage advice off where the kernel would stall on it):
state and work buffer as the integration allocates them (``runtime.hugepage_zeros``, advised
for hugepages) against plain numpy arrays, best of three.

Usage: ``.venv/bin/python benchmarks/bench_transport.py [--quick]`` (quick: 0.5 and 0.25 degree
instead of 0.25 and 0.1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp

from gosat_pipeline.grids import GridSpec
from gosat_pipeline.runtime import hugepage_advice, hugepage_zeros
from gosat_pipeline.transport.operator import Forcing, _advance, _Stencil, integrate_responses

BBOX = (90.0, -12.0, 142.0, 30.0)
NCOL = 33
STEP = 21600.0


def _scipy_substeps(state: np.ndarray, src: np.ndarray, op: _Stencil, time_step: float) -> None:
    """The baseline: the same sub-steps with the operator's CSR matrix."""
    nsub = max(1, int(np.ceil(time_step * op.diag_max / 0.95)))
    h = time_step / nsub
    for _ in range(nsub):
        state += h * (src - op.matrix @ state)


def step_case(res: float) -> dict[str, float]:
    grid = GridSpec.from_resolution(res, BBOX)
    op = _Stencil(grid, 5.0e4, 172800.0)
    rng = np.random.default_rng(0)
    op.update(5.0 + 3.0 * rng.standard_normal(grid.shape), 2.0 * rng.standard_normal(grid.shape))
    state0 = rng.random((grid.size, NCOL))
    owner = rng.integers(0, NCOL, grid.size)  # each cell under one national-like forcing
    src = sp.csr_matrix((rng.random(grid.size) * 1e-6, (np.arange(grid.size), owner)), shape=(grid.size, NCOL))
    dense = src.toarray()
    _advance(state0.copy(), [src], op, 1.0)  # one sub-step: compiles (or loads) the kernel
    t_fused, t_scipy = [], []
    for _ in range(3):
        a, b = state0.copy(), state0.copy()
        t0 = time.perf_counter()
        _advance(a, [src], op, STEP)
        t_fused.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _scipy_substeps(b, dense, op, STEP)
        t_scipy.append(time.perf_counter() - t0)
    nsub = max(1, int(np.ceil(STEP * op.diag_max / 0.95)))
    return {
        "res": res,
        "cells": grid.size,
        "nsub": nsub,
        "fused": min(t_fused),
        "scipy": min(t_scipy),
        "maxrel": float(np.max(np.abs(a - b) / np.abs(b))),
    }


def days_case(res: float, days: int) -> float:
    grid = GridSpec.from_resolution(res, BBOX)
    rng = np.random.default_rng(1)
    t0 = np.datetime64("2020-01-01T00:00", "ns")
    times = t0 + np.arange(days * 4 + 1) * np.timedelta64(6, "h")
    u = (5.0 + 3.0 * rng.standard_normal((times.size, *grid.shape))).astype("float32")
    v = (2.0 * rng.standard_normal((times.size, *grid.shape))).astype("float32")
    end = t0 + np.timedelta64(days * 24, "h")
    owner = rng.integers(0, NCOL, grid.size)
    flux = rng.random(grid.size) * 1e-9
    forcings = [Forcing("flux", t0, end, pattern=np.where(owner == k, flux, 0.0)) for k in range(NCOL)]
    cells = np.arange(0, grid.size, 7)
    start = np.full(cells.size, t0)
    tic = time.perf_counter()
    integrate_responses(grid, times, u, v, forcings, start, np.full(cells.size, end), cells, eddy_diffusivity=5.0e4)
    return time.perf_counter() - tic


def hugepage_case(res: float = 0.5, ncol: int = 1430) -> dict[str, float]:
    """One step of ``ncol`` one-cell forcings: buffers from hugepage_zeros against numpy's, same states."""
    grid = GridSpec.from_resolution(res, BBOX)
    op = _Stencil(grid, 5.0e4, 172800.0)
    rng = np.random.default_rng(2)
    op.update(5.0 + 3.0 * rng.standard_normal(grid.shape), 2.0 * rng.standard_normal(grid.shape))
    state0 = rng.random((grid.size, ncol))
    cells = rng.choice(grid.size, ncol, replace=False)
    src = sp.csr_matrix((np.full(ncol, 1e-6), (cells, np.arange(ncol))), shape=(grid.size, ncol))
    with hugepage_advice() as memory:
        plain, plain_work = np.zeros(state0.shape), np.zeros(state0.shape)
        advised, advised_work = hugepage_zeros(state0.shape), hugepage_zeros(state0.shape)
        for a, w in ((plain, plain_work), (advised, advised_work)):  # first touch outside the timing
            a[:] = state0
            w[:] = 0.0
        t_plain, t_advised = [], []
        for _ in range(3):
            plain[:] = state0
            t0 = time.perf_counter()
            _advance(plain, [src], op, STEP, plain_work)
            t_plain.append(time.perf_counter() - t0)
            advised[:] = state0
            t0 = time.perf_counter()
            _advance(advised, [src], op, STEP, advised_work)
            t_advised.append(time.perf_counter() - t0)
    return {
        "plain": min(t_plain),
        "advised": min(t_advised),
        "same": float(np.array_equal(plain, advised)),
        "numpy_advice": memory["numpy_madvise_hugepage"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="coarser grids")
    args = ap.parse_args()
    grids = (0.5, 0.25) if args.quick else (0.25, 0.1)
    print(f"one 6-hour step of explicit sub-steps, {NCOL} forcings, ASEAN {BBOX}")
    for res in grids:
        r = step_case(res)
        print(
            f"  {res:g} degree ({r['cells']} cells, {r['nsub']} sub-steps): fused kernel {r['fused']:.3f} s, "
            f"scipy baseline {r['scipy']:.3f} s, ratio {r['fused'] / r['scipy']:.2f}x "
            f"(max relative difference {r['maxrel']:.1e})"
        )
    days = 2 if args.quick else 4
    for res in grids:
        print(f"  integrate_responses, {days} days at {res:g} degree: {days_case(res, days):.2f} s")
    h = hugepage_case()
    print(
        f"  one step, 0.5 degree, 1430 one-cell forcings, numpy hugepage advice {h['numpy_advice']}: buffers from "
        f"hugepage_zeros {h['advised']:.3f} s, numpy's {h['plain']:.3f} s, ratio {h['advised'] / h['plain']:.2f}x "
        f"(states {'identical' if h['same'] else 'DIFFERENT'})"
    )


if __name__ == "__main__":
    main()
