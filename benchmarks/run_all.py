"""Run every benchmark in this folder (``make bench``); pass ``--quick`` for a short run.

Each benchmark prints its own rates and ratios against baselines measured in the
same run; this script only runs them one after the other and reports failures.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Not part of ``make bench``: real-volume runs of the whole pipeline (``make bench-scale``).
SEPARATE = {"bench_scale.py"}


def main(argv: list[str]) -> int:
    """Run ``bench_*.py`` with the given arguments; return non-zero if any failed."""
    failed = []
    for script in sorted(p for p in HERE.glob("bench_*.py") if p.name not in SEPARATE):
        print(f"\n=== {script.name} {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script), *argv])
        print(f"=== {script.name}: exit {rc} after {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
