"""The analysts' notebooks execute without error, offline, on the demonstration inputs.

The inputs are built into ``data_samples/`` when missing (the same deterministic factory as
``make data-samples``); the notebooks run in ``notebooks/`` as a user would open them, and
``03_discrepancies`` writes its run under ``outputs/notebook-demo``. Executed copies are not
saved: the notebooks stay free of outputs in git, which is checked too.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

# executes the notebooks on the demo run
pytestmark = pytest.mark.slow

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def samples(demo_samples: Path) -> Path:
    return demo_samples


def _seed_the_notebook_run(request: pytest.FixtureRequest) -> None:
    """03_discrepancies runs the demo under ``outputs/notebook-demo``: start it from a copy of the
    session's demo run (tests/conftest.py), so that the notebook resumes the year's stages by
    their fingerprints (run name and scheduler are not part of them) instead of recomputing
    them; the report is removed so that the notebook's run still writes one of its own."""
    _, result = request.getfixturevalue("demo_run")
    dest = REPO / "outputs" / "notebook-demo"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(result.run_dir, dest)
    (dest / "report.html").unlink()


def test_the_three_notebooks_are_there_and_clean() -> None:
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_quickstart", "02_inversion_diagnostics", "03_discrepancies"]
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, path.name
                # paths are resolved with load_config(base_dir=...), never by changing directory
                assert "os.chdir" not in "".join(cell["source"]), path.name


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(
    path: Path, samples: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # No network: a kernel that tried to download (cartopy features, pooch) would fail here.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # conftest sets Agg; the kernel must draw inline
    if path.stem == "03_discrepancies":
        _seed_the_notebook_run(request)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert images, f"{path.name} drew no figure"
    if path.stem == "03_discrepancies":
        # the covariance remark is decided by the numbers printed, not written in advance
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        m = re.search(
            r"with covariances: ([\d.]+) Tg/yr; if errors were independent: ([\d.]+) Tg/yr -> .* (add up|partly cancel)",
            text,
        )
        assert m, text[-2000:]
        assert (float(m.group(1)) > float(m.group(2))) == (m.group(3) == "add up")
        # the notebook resumed the seeded run: only the report was written again
        assert re.search(r"stages run: \['report'\]", text), text[:3000]
