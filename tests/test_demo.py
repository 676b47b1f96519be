"""The end-to-end demonstration (issues 8, 15), the run directory contract (issue 2), and
interrupted runs and determinism of the whole chain (issue 9).

One module-scoped run of ``configs/demo.yaml`` on the demonstration inputs (a
non-identical twin: the soundings were made by an atmosphere that is not the run's
transport model), on the config's own two-process LocalCluster, then checks of its
outcome and its outputs (CF, schemas, manifest). The mechanics (resuming, a run killed
with SIGKILL mid-stage and resumed, the same answer from the single-threaded scheduler, a
period change) run on a light variant: three months and no ensemble.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gosat_pipeline import load_config, run
from gosat_pipeline.errors import SchemaError
from gosat_pipeline.pipeline import STAGES
from gosat_pipeline.testing.demo import ASEAN, PLANTED

# whole-pipeline runs (make test-fast skips them; make test runs them)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def work(demo_work: Path) -> Path:
    """The session's demo folder (tests/conftest.py) with the light variant beside demo.yaml."""
    if not (demo_work / "light.yaml").is_file():
        (demo_work / "light.yaml").write_text(_light((demo_work / "demo.yaml").read_text()))
    return demo_work


def _light(text: str) -> str:
    """The demo on its first three months, without an ensemble: for the mechanics tests."""
    text = text.replace("  end: 2021-01-01\n", "  end: 2020-04-01\n").replace("name: demo", "name: light")
    return text.replace("  members: 8 ", "  members: 0 ")


def _variant(work: Path, name: str, cluster: str, base: str = "light") -> Path:
    """A config with another run name and cluster type."""
    text = (work / f"{base}.yaml").read_text().replace(f"name: {base}", f"name: {name}")
    text = text.replace("  type: local\n", f"  type: {cluster}\n")
    path = work / f"{name}.yaml"
    path.write_text(text)
    return path


def _run(work: Path, config: Path) -> object:
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    try:
        return run(load_config(config), config_path=config)
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def light_run(work: Path) -> object:
    """The light variant on an existing two-worker ``dask.distributed`` scheduler, reached by
    address (``cluster.type: address``), as on a shared cluster; the whole demo covers the
    config's own two-process LocalCluster."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        text = (
            (work / "light.yaml")
            .read_text()
            .replace("  type: local\n", f"  type: address\n  address: {cluster.scheduler_address}\n")
        )
        assert "type: address" in text
        (work / "light-address.yaml").write_text(text.replace("name: light", "name: light-address"))
        return _run(work, work / "light-address.yaml")


@pytest.fixture(scope="module")
def serial_run(work: Path) -> object:
    """The same inputs and light config on the synchronous (single-threaded) scheduler."""
    return _run(work, _variant(work, "serial", "synchronous"))


def assert_same_outputs(a: Path, b: Path, rtol: float = 1e-12) -> int:
    """Every netCDF and CSV output of run directory ``a`` equals ``b``'s (to ``rtol``).

    Returns the number of files compared.
    """
    n = 0
    for fa in sorted(a.glob("*.nc")):
        with (
            xr.open_dataset(fa, decode_times=False) as da,
            xr.open_dataset(b / fa.name, decode_times=False) as db,
        ):
            assert set(da.variables) == set(db.variables), fa.name
            for name, va in da.variables.items():
                vb = db[name]
                if va.dtype.kind in "fc":
                    np.testing.assert_allclose(
                        vb.values, va.values, rtol=rtol, atol=0, equal_nan=True, err_msg=f"{fa.name}:{name}"
                    )
                else:
                    np.testing.assert_array_equal(vb.values, va.values, err_msg=f"{fa.name}:{name}")
        n += 1
    for fa in sorted(a.glob("*.csv")):
        ta, tb = pd.read_csv(fa), pd.read_csv(b / fa.name)
        pd.testing.assert_frame_equal(ta, tb, check_exact=False, rtol=rtol, atol=0)
        n += 1
    return n


@pytest.mark.timeout(600)
def test_demo_verdicts_are_honest_about_the_planted_country(demo_run: tuple[Path, object]) -> None:
    """The non-identical twin: no false flag, no wrong sign, the truth covered, and the planted
    doubling either flagged or explained (with transport error, a year of GOSAT-like data can
    only detect much larger differences for Thailand, and the row says so)."""
    _, result = demo_run
    truth = json.loads((REPO / "data_samples" / "truth.json").read_text())
    df = pd.read_csv(result.run_dir / "discrepancies.csv")
    assert set(df["gas"]) == {"CH4", "CO2"}
    assert set(ASEAN) <= set(df["region"]) and "ASEAN" in set(df["region"])
    assert (df["ensemble_members"] == 9).all()
    for p in PLANTED:
        row = df[(df["gas"] == p["gas"]) & (df["region"] == p["region"])].iloc[0]
        if row["verdict"] not in ("higher" if p["factor"] > 1 else "lower") + " than reported":
            assert row["verdict"].startswith("not constrained"), row["verdict"]
            assert "cannot tell" in row["reason"] or "depends on the transport model" in row["reason"]
        assert row["posterior_total"] > row["prior_total"]  # moved towards the truth
    planted = {(p["gas"], p["region"]) for p in PLANTED}
    others = df[[(g, r) not in planted for g, r in zip(df["gas"], df["region"], strict=True)]]
    assert not others["verdict"].isin(["higher than reported", "lower than reported"]).any(), others
    # every total given a verdict covers the truth (inside the domain) within two combined sigmas
    verdicted = df[
        df["verdict"].isin(
            ["consistent", "higher than reported", "lower than reported", "not constrained (transport-sensitive)"]
        )
        & (df["members"].fillna("") == "")
    ]
    for r in verdicted.itertuples():
        true = truth["true_in_domain_tg_per_yr"][r.gas][r.region]
        assert abs(r.posterior_total - true) <= 2 * r.posterior_sigma, (r.region, r.gas)
    # every z is reproducible from the two numbers printed beside it
    z = df.dropna(subset=["z_score"])
    np.testing.assert_allclose(
        z["z_score"], (z["posterior_total"] - z["compared_value"]) / z["compared_sigma"], rtol=1e-9
    )


def test_demo_run_directory_contract(demo_run: tuple[Path, object]) -> None:
    _, result = demo_run
    rd = result.run_dir
    assert result.ran and not result.skipped
    man = json.loads((rd / "manifest.json").read_text())
    assert man["status"] == "complete" and man["synthetic"] is True
    assert man["cluster"]["type"] == "local" and man["cluster"]["workers"] == 2
    # the process's hugepage setting during the run (gosat_pipeline.runtime), with its reason
    assert {"numpy_madvise_hugepage", "thp_enabled", "thp_defrag", "reason"} <= set(man["memory"])
    assert {s.split(":")[0] for s in man["stages"]} == set(STAGES)
    for rec in man["stages"].values():
        assert rec["status"] == "done" and rec["wall_time_s"] >= 0
        assert all((rd / o).is_file() for o in rec["outputs"])
        # peak memory of the process tree: the two worker processes of the local cluster included
        assert rec["peak_memory_bytes"] > rec["peak_memory_main_bytes"] > 0
    granules = [i for i in man["inputs"] if i["kind"].startswith("granule")]
    assert len(granules) > 600 and all(len(i["sha256"]) == 64 for i in granules)  # a year of daily files
    assert man["skipped_inputs"] == []
    for gas in ("CH4", "CO2"):
        scr = man["screening"][gas]
        with xr.open_dataset(rd / f"soundings_{gas}.nc") as snd:
            assert scr["soundings_kept"] == snd.sizes["sounding"] > 1000
            # the granule of each sounding as an index into the file table, not a string per sounding
            assert "source_file" not in snd and snd.file_index.dtype == np.int32
            assert set(snd.granule_path.values[np.unique(snd.file_index.values)]) <= {
                i["path"] for i in man["inputs"] if i["kind"] == f"granule:{gas}"
            }
        assert scr["duplicate_soundings"] == [] and set(scr["quality_filter_dropped"]) >= {"outside_bbox"}
    assert "numpy" in man["versions"] and (rd / "config.resolved.yaml").is_file()
    assert not list(rd.glob("*.tmp")) and not list(rd.glob("*.partial")) and not list(rd.glob(".*"))
    html = (rd / "report.html").read_text()
    assert "SYNTHETIC" in html and "THA" in html
    # the report is written after the run's status and wall time are final, and shows them
    assert 'id="run-status">complete<' in html and "running" not in html.split('id="run-status">')[1][:40]
    assert 'id="wall-time">' in html and "not recorded" not in html.split('id="wall-time">')[1][:40]
    assert str(rd.parent) not in html  # paths relative to the run directory


def test_demo_netcdf_outputs_are_cf_and_carry_units(demo_run: tuple[Path, object]) -> None:
    pytest.importorskip("compliance_checker")
    from test_cf_compliance import check_cf

    _, result = demo_run
    files = sorted(result.run_dir.glob("*.nc"))
    # soundings, gridded, prior, jacobian, posterior, emissions, ensemble per gas; regions, winds
    assert len(files) == 2 * 7 + 2
    # every finding of the CF 1.8 checker, offline: 0 errors and 0 warnings on every output
    problems = {f.name: check_cf(f, priority=1) for f in files}
    assert not any(problems.values()), problems
    for f in files:
        with xr.open_dataset(f, decode_times=False) as ds:
            assert ds.attrs["Conventions"].startswith("CF-") and ds.attrs["synthetic"] == "true"
            for name, var in ds.data_vars.items():
                skip = (
                    "_flag",
                    "_index",
                    "status",
                    "_bounds",
                    "_id",
                )  # bounds: their coordinate's units; ids: none
                if var.dtype.kind in "fiu" and not name.endswith(skip):
                    assert "units" in var.attrs, f"{f.name}:{name} has no units"


def test_rerun_skips_unchanged_stages_and_reruns_downstream_of_a_change(
    demo_run: tuple[Path, object],
) -> None:
    work, first = demo_run
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    try:
        cfg = load_config(work / "demo.yaml")
        again = run(cfg)
        assert again.ran == [] and len(again.skipped) == len(first.ran)
        text = (work / "demo.yaml").read_text().replace("z_critical: 2.0", "z_critical: 3.0")
        assert "z_critical: 3.0" in text
        (work / "changed.yaml").write_text(text)
        changed = run(load_config(work / "changed.yaml"))
        assert changed.ran == ["compare", "report"]
        df = pd.read_csv(changed.run_dir / "discrepancies.csv")
        assert (df["z_critical"] == 3.0).all()
        back = run(load_config(work / "demo.yaml"))  # and back: the original outputs again
        assert back.ran == ["compare", "report"]
    finally:
        mp.undo()


@pytest.mark.timeout(300)
def test_same_answer_on_two_workers_by_address_and_on_one_thread(light_run: object, serial_run: object) -> None:
    assert light_run.manifest["cluster"]["type"] == "address"
    assert serial_run.manifest["cluster"]["type"] == "synchronous"
    n = assert_same_outputs(light_run.run_dir, serial_run.run_dir)
    assert n == 14 + 5  # netCDF outputs; discrepancies, domain budget, mass balance x 2, reported totals


@pytest.mark.timeout(300)
def test_a_run_killed_mid_stage_resumes_to_the_same_outputs(work: Path, serial_run: object) -> None:
    config = _variant(work, "killed", "synchronous")
    run_dir = work / "outputs" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gosat_pipeline.cli", "-q", "run", str(config)],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    victim = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                man = json.loads((run_dir / "manifest.json").read_text())
            except (OSError, ValueError):
                man = {}
            current = man.get("current_stage")
            # Kill inside a stage after the ingest: some outputs exist, others are being written.
            if current and not current.startswith("ingest"):
                os.killpg(proc.pid, signal.SIGKILL)
                victim = current
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and victim is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert victim is not None, "the run finished before it could be killed"
    man = json.loads((run_dir / "manifest.json").read_text())
    assert man["status"] == "running" and victim not in man["stages"]
    done = set(man["stages"])
    # Nothing a later run could take for complete: only recorded stages have their outputs.
    recorded = {o for rec in man["stages"].values() for o in rec["outputs"]}
    visible = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    assert visible - recorded <= {"manifest.json", "config.resolved.yaml"} | _victim_outputs(victim)

    resumed = _run(work, config)
    assert set(resumed.skipped) == done and victim in resumed.ran
    assert not list(run_dir.glob(".*.partial"))
    assert_same_outputs(serial_run.run_dir, run_dir)


def _victim_outputs(stage: str) -> set[str]:
    """Outputs a killed stage may already have renamed into place (not yet recorded)."""
    kind, _, gas = stage.partition(":")
    names = {
        "grid": {f"gridded_{gas}.nc"},
        "inventory": {
            "regions.nc",
            "boundaries.geojson",
            "prior_CH4.nc",
            "prior_CO2.nc",
            "winds.nc",
            "reported_totals.csv",
        },
        "invert": {f"jacobian_{gas}.nc", f"posterior_{gas}.nc", f"emissions_{gas}.nc", f"mass_balance_{gas}.csv"},
        "compare": {"discrepancies.csv", "discrepancies.json", "discrepancies.schema.json", "period_changes.csv"},
        "report": {"report.html"},
    }
    return names.get(kind, set())


@pytest.mark.timeout(300)
def test_period_change_runs_through_the_pipeline_with_the_config_thresholds(work: Path) -> None:
    """compare.change: two months of the demo; the truth does not change between them."""
    text = _variant(work, "halves", "synchronous").read_text()
    text = text.replace("  time_bin: 1D ", "  split: MS\n  time_bin: 1D ")
    text = text.replace(
        "  min_observations: 5\n",
        "  min_observations: 5\n  min_error_reduction: 0.3\n  change: {period_a: 2020-01, period_b: 2020-03}\n",
    )
    assert "split: MS" in text and "change:" in text
    (work / "halves.yaml").write_text(text)
    res = _run(work, work / "halves.yaml")
    ch = pd.read_csv(res.run_dir / "period_changes.csv")
    assert set(ch["gas"]) == {"CH4", "CO2"} and "ASEAN" in set(ch["region"])
    assert (ch["min_error_reduction"] == 0.3).all() and (ch["z_critical"] == 2.0).all()
    doc = json.loads((res.run_dir / "discrepancies.json").read_text())
    assert len(doc["period_changes"]["rows"]) == len(ch)
    # The true emissions are the same in both halves: no significant change anywhere.
    assert set(ch["change_verdict"]) <= {"no significant change", "not constrained"}, ch
    assert "report.html" in res.manifest["stages"]["report"]["outputs"]


@pytest.mark.timeout(600)
def test_a_run_on_external_footprints_from_a_folder(work: Path, light_run: object) -> None:
    """transport.type footprints with a folder of STILT files: every file in the manifest, the
    Jacobian from the footprints, and an ensemble over the error choices only."""
    import yaml

    from gosat_pipeline.grids import GridSpec
    from gosat_pipeline.testing.footprints import write_stilt_footprints
    from gosat_pipeline.transport import SimpleTransport

    with xr.open_dataset(light_run.run_dir / "jacobian_CH4.nc") as jac:
        jan = (jac["obs_time"] < np.datetime64("2020-02-01")).values
        cells = jac["obs_cell"].values[jan]
        lat, lon = jac["obs_latitude"].values[jan], jac["obs_longitude"].values[jan]
        times = jac["obs_time"].values[jan] + np.timedelta64(12, "h")
    with xr.open_dataset(light_run.run_dir / "winds.nc") as w:
        grid = GridSpec.from_coords(w.latitude, w.longitude)
        op = SimpleTransport(grid, w["u"].mean("time").values, w["v"].mean("time").values)
    folder = work / "stilt_run" / "out" / "footprints"
    files = write_stilt_footprints(folder, op.footprints(cells), grid, lat, lon, times, hours=2, refine=1)
    cfg = yaml.safe_load((work / "light.yaml").read_text())
    cfg["run"]["name"] = "footprints"
    cfg["period"] = {**cfg["period"], "end": "2020-02-01"}
    cfg["gases"] = [g for g in cfg["gases"] if g["gas"] == "CH4"]
    # the R-STILT project folder: its out/footprints are read
    cfg["transport"] = {**cfg["transport"], "type": "footprints", "footprints": str(work / "stilt_run")}
    cfg["ensemble"] = {"members": 1}
    cfg["cluster"] = {"type": "synchronous"}
    path = work / "footprints.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = _run(work, path)
    recorded = {r["path"] for r in res.manifest["inputs"] if r["kind"] == "footprints"}
    assert recorded == {str(f) for f in files}
    with xr.open_dataset(res.run_dir / "jacobian_CH4.nc") as jf:
        attrs = jf["jacobian"].attrs
        assert attrs["transport_operator"] == "external footprints" and attrs["footprints_format"] == "stilt"
        assert not any(str(k).startswith("inflow") for k in jf["state_kind"].values)
    with xr.open_dataset(res.run_dir / "ensemble_CH4.nc") as ens:
        assert ens.sizes["member"] == 2
        for k in ("eddy_diffusivity", "ventilation_time", "wind_scale", "wind_rotation", "inflow"):
            assert np.unique(ens[f"member_{k}"].values).size == 1, k  # the operator's choices: not varied
        assert np.unique(ens["member_sigma_model"].values).size == 2
        assert np.unique(ens["member_prior_error"].values).size == 2
    rows = pd.read_csv(res.run_dir / "discrepancies.csv")
    assert set(rows["gas"]) == {"CH4"} and len(rows) > 0


def test_a_stage_refuses_an_input_that_breaks_its_contract(work: Path, light_run: object) -> None:
    """The comparison stage validates the posterior it reads (schema.validate_posterior): a
    run file whose state vector lost its units stops the run with an error naming the stage,
    the file and the variable, instead of a comparison in the wrong units."""
    run_dir = light_run.run_dir.parent / "contract"
    shutil.copytree(light_run.run_dir, run_dir)
    path = run_dir / "posterior_CH4.nc"
    with xr.open_dataset(path) as ds:
        post = ds.load()
    post["x_posterior"].attrs["units"] = "kg s-1"
    post.to_netcdf(path)
    config = _variant(work, "contract", "synchronous")
    # only the comparison is out of date (a new threshold): the earlier stages are reused
    config.write_text(config.read_text().replace("  z_critical: 2.0\n", "  z_critical: 2.5\n"))
    with pytest.raises(SchemaError, match=r"compare input posterior_CH4\.nc: .*'x_posterior': 'kg s-1'"):
        _run(work, config)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
