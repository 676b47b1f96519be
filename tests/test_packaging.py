"""Packaging: the package is marked typed (PEP 561) and ships its data files."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

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
