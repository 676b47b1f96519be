"""The one-way import rule of STYLE.md section c, checked by scanning imports with ast.

Layer 0 ``errors, schema, grids, outputs, statevector, attribution, paths, params, blocksparse, runtime`` <- layer 1 stages (``io, quality, gridding,
inventory, regions, winds, transport, inversion, compare, report``), which import only
layer 0 <- layer 2 ``config``, ``ensemble`` (inversions over transport choices: it runs the
transport and inversion stages), ``domain`` (domain accounting: regions and inventories) and
``fetch`` (plans from a config, checks files with the readers) and ``preflight`` (checks a
config against its inputs before a run) <- layer 3 ``pipeline``
(records fetched provenance) <- layer 4 ``cli``.
``testing`` may import layers 0 and 1. Nothing but ``cli`` imports ``pipeline``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gosat_pipeline"

LAYER0 = {
    "errors",
    "schema",
    "grids",
    "outputs",
    "statevector",
    "attribution",
    "paths",
    "params",
    "blocksparse",
    "runtime",
}
STAGES = {"io", "quality", "gridding", "inventory", "regions", "winds", "transport", "inversion", "compare", "report"}
ALLOWED: dict[str, set[str]] = {
    **{m: LAYER0 for m in LAYER0},
    **{s: LAYER0 for s in STAGES},
    "config": LAYER0,
    "testing": LAYER0 | STAGES,
    "fetch": LAYER0 | STAGES | {"config"},
    "ensemble": LAYER0 | STAGES,
    "domain": LAYER0 | STAGES,
    "preflight": LAYER0 | STAGES | {"config", "domain"},
    "pipeline": LAYER0 | STAGES | {"config", "fetch", "ensemble", "domain", "preflight"},
    "cli": LAYER0 | STAGES | {"config", "fetch", "pipeline", "testing", "ensemble", "domain", "preflight"},
}


def _top_module(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    return rel.parts[0]


def _lazy_module(name: str, path: Path) -> str:
    """The module behind ``from gosat_pipeline import name``: a lazily exported name's module
    (``gosat_pipeline._API``) or a subpackage/submodule of that name."""
    import gosat_pipeline

    if name in gosat_pipeline._API:
        return gosat_pipeline._API[name]
    if (PKG / f"{name}.py").is_file() or (PKG / name / "__init__.py").is_file():
        return f"gosat_pipeline.{name}"
    if name == "__version__":
        return "gosat_pipeline"
    raise AssertionError(f"{path}: 'from gosat_pipeline import {name}' names nothing the package exports")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names = [node.module or ""]
            if node.module == "gosat_pipeline":  # the lazy API: resolve each name to its module
                names = [_lazy_module(a.name, path) for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "gosat_pipeline" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_module_has_a_layer() -> None:
    for path in PKG.rglob("*.py"):
        top = _top_module(path)
        if top == "__init__" or top == "__main__":
            continue
        assert top in ALLOWED, f"{path} belongs to no layer; add it to tests/test_architecture.py"


def test_one_way_imports() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        top = _top_module(path)
        if top in ("__init__", "__main__"):
            continue
        for imp in _imports(path):
            if imp == top:
                continue
            if imp not in ALLOWED[top]:
                bad.append(f"{path.relative_to(PKG)} imports gosat_pipeline.{imp}")
    assert not bad, "\n".join(bad)


def test_the_lazy_api_is_no_loophole(tmp_path: Path) -> None:
    """``from gosat_pipeline import run`` inside a stage is an import of ``pipeline``."""
    stage = tmp_path / "stage.py"
    stage.write_text("from gosat_pipeline import run, load_config, errors, __version__\n")
    assert _imports(stage) == {"pipeline", "config", "errors"}


def test_library_never_prints() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        if _top_module(path) == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(str(path.relative_to(PKG)))
    assert not offenders, offenders
