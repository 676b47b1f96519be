"""Packaging: the package is marked typed (PEP 561) and ships its data files."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_package_is_marked_typed_and_ships_the_marker() -> None:
    assert resources.files("gosat_pipeline").joinpath("py.typed").is_file()
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["gosat_pipeline"]


def test_type_checkers_see_the_same_public_api_as_the_lazy_loader() -> None:
    """``gosat_pipeline/__init__.py`` imports every lazy public name under TYPE_CHECKING, from
    the module the loader takes it from (so mypy and IDEs type ``gosat_pipeline.run`` etc.)."""
    import ast

    import gosat_pipeline

    tree = ast.parse((REPO / "gosat_pipeline" / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    typed = {a.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for a in node.names}
    assert typed == gosat_pipeline._API


def test_a_bare_pytest_without_the_dependencies_runs_the_suite_in_dot_venv() -> None:
    """``pytest`` found first on PATH (a system or pyenv Python without xarray) re-runs itself with
    ``.venv/bin/python`` instead of failing to import every test module (tests/conftest.py)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    base = Path(sys.base_prefix) / "bin" / "python3"
    if Path(sys.prefix) == Path(sys.base_prefix) or not base.is_file():
        pytest.skip("the suite does not run from a virtual environment")
    probe = subprocess.run(
        [str(base), "-c", "import pytest, importlib.util as u; raise SystemExit(u.find_spec('xarray') is not None)"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"{base} has no pytest, or has xarray (it is not a Python without the dependencies)")
    env = {k: v for k, v in os.environ.items() if k != "GOSAT_PIPELINE_TEST_REEXEC"}
    out = subprocess.run(
        [str(base), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_grids.py::test_global_area_is_sphere"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "running them with" in out.stderr and str(root / ".venv" / "bin" / "python") in out.stderr
    assert "1 passed" in out.stdout
