"""Shared pytest fixtures and markers."""

from __future__ import annotations

import os
from pathlib import Path

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
