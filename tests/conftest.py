"""Shared pytest fixtures and markers."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = ROOT.parent / "shared" / "real_samples"

# No test may reach the network: make cartopy and pooch fail fast if anything tries.
os.environ.setdefault("CARTOPY_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """The folder of real L2 files, or skip when it is absent (a user's fresh clone)."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {REAL_SAMPLES}")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root."""
    return ROOT


# -- bad-input corpus bookkeeping (tests/test_reliability_inputs.py) ---------------------------
_CORPUS = pytest.StashKey[dict[str, set[str]]]()


@pytest.fixture(scope="session")
def bad_input_corpus(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``record(case_id, check)``: a corpus case passed one check (counted in the summary)."""
    store = request.config.stash.setdefault(_CORPUS, {})

    def record(case_id: str, check: str) -> None:
        store.setdefault(case_id, set()).add(check)

    return record


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """State how many bad-input corpus cases were tried, by kind, and how many checks passed."""
    store = config.stash.get(_CORPUS, {})
    if not store:
        return
    kinds = Counter(case.split(":", 1)[0] for case in store)
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    n_checks = sum(len(v) for v in store.values())
    terminalreporter.write_sep(
        "-", f"bad-input corpus: {len(store)} cases ({by_kind}); {n_checks} checks passed"
    )
