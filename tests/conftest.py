"""Shared pytest fixtures and markers."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_SAMPLES = ROOT.parent / "shared" / "real_samples"

VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def _project_environment_missing() -> bool:
    """True when this Python lacks the package or its core dependencies (e.g. a bare ``pytest``
    from the system or pyenv instead of ``.venv/bin/pytest``)."""
    import importlib.util

    return any(importlib.util.find_spec(m) is None for m in ("gosat_pipeline", "xarray", "netCDF4", "dask"))


def pytest_configure(config: pytest.Config) -> None:
    """Run the suite in the project's environment whatever ``pytest`` was called.

    ``make install`` (run by ``make test`` and ``make demo``) puts everything in ``.venv``; a
    ``pytest`` found first on PATH would fail to import every test module. When that happens and
    ``.venv`` exists, the same command line is run again with ``.venv/bin/python -m pytest``
    (once: ``GOSAT_PIPELINE_TEST_REEXEC`` guards against a loop); without ``.venv`` the run stops
    with one line saying how to install it.
    """
    if not _project_environment_missing() or os.environ.get("GOSAT_PIPELINE_TEST_REEXEC"):
        return
    if not VENV_PYTHON.is_file():
        pytest.exit(
            f"{sys.executable} lacks gosat_pipeline's dependencies and {VENV_PYTHON} does not exist: "
            "run `make install` (or `make test`), then `.venv/bin/pytest ...`",
            returncode=4,
        )
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:  # give the terminal back before this process is replaced
        capman.suspend_global_capture(in_=True)
    sys.stderr.write(
        f"gosat_pipeline tests: {sys.executable} lacks the project's dependencies; "
        f"running them with {VENV_PYTHON} instead\n"
    )
    sys.stderr.flush()
    os.environ["GOSAT_PIPELINE_TEST_REEXEC"] = "1"
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), "-m", "pytest", *config.invocation_params.args])


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


@pytest.fixture(scope="session")
def demo_samples() -> Path:
    """``data_samples/`` (what ``make data-samples`` builds), built once per session when missing
    or made by an older builder; shared by the demo, notebook and ingest tests (read only)."""
    from gosat_pipeline.testing.demo import DEMO_VERSION, build_demo_samples

    out = ROOT / "data_samples"
    truth = out / "truth.json"
    if not truth.is_file() or json.loads(truth.read_text()).get("builder") != DEMO_VERSION:
        build_demo_samples(out)
    return out


@pytest.fixture(scope="session")
def demo_work(demo_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``demo.yaml``: configs/demo.yaml with its inputs at ``demo_samples``."""
    work = tmp_path_factory.mktemp("demo")
    text = (ROOT / "configs" / "demo.yaml").read_text().replace("data_samples/", f"{demo_samples}/")
    (work / "demo.yaml").write_text(text)
    return work


@pytest.fixture(scope="session")
def demo_run(demo_work: Path) -> tuple[Path, Any]:
    """The whole demo, run once per session in ``demo_work`` (tests/test_demo.py checks it; the
    notebook test resumes a copy of it instead of running the year again)."""
    from gosat_pipeline import load_config, run

    mp = pytest.MonkeyPatch()
    mp.chdir(demo_work)
    try:
        return demo_work, run(load_config(demo_work / "demo.yaml"), config_path=demo_work / "demo.yaml", force=True)
    finally:
        mp.undo()


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
    terminalreporter.write_sep("-", f"bad-input corpus: {len(store)} cases ({by_kind}); {n_checks} checks passed")
