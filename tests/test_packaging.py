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
