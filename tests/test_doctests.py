"""The examples in the package's docstrings run and give what they show.

Every module of ``gosat_pipeline`` is imported and its ``>>>`` examples are run with
:mod:`doctest` (the same as ``pytest --doctest-modules gosat_pipeline``, which also works).
A module that gains an example is picked up without editing this file.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import gosat_pipeline


def _modules_with_examples() -> list[str]:
    names = []
    finder = doctest.DocTestFinder()
    for info in pkgutil.walk_packages(gosat_pipeline.__path__, prefix="gosat_pipeline."):
        module = importlib.import_module(info.name)
        if any(t.examples for t in finder.find(module)):
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_package_has_docstring_examples() -> None:
    # the doctests of gridding, schema and testing.soundings at least (a scan that finds none is broken)
    assert {"gosat_pipeline.gridding", "gosat_pipeline.schema", "gosat_pipeline.testing.soundings"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} fail (see stdout)"
    assert result.attempted > 0
