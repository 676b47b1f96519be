"""The command line: exit codes, one-line errors, tracebacks only with -v."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gosat_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_validate_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config-only", str(ROOT / "configs" / "template.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_errors_exit_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((ROOT / "configs" / "template.yaml").read_text())
    data["run"]["nmae"] = "x"
    data["period"]["end"] = "2019-01-01"
    data["gases"][0]["screen"]["surface"] = "sea"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "3 problems" in err
    assert "run.nmae: unknown key; did you mean 'name'?" in err
    assert "gases[0].screen.surface" in err and "'land'" in err
    assert "Traceback" not in err


def test_verbose_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "validate", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "config file not found" in err


def test_console_script_installed() -> None:
    exe = Path(sys.executable).with_name("gosat-pipeline")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("gosat-pipeline ")


def test_run_with_missing_granules_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((ROOT / "configs" / "template.yaml").read_text())
    data["gases"][0]["granules"] = [str(tmp_path / "none" / "*.nc")]
    data["run"]["output_dir"] = str(tmp_path / "out")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err
    assert "matches no file" in err and "Traceback" not in err


@pytest.mark.slow
def test_synth_samples_writes_the_demo_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gosat_pipeline.cli import main
    from gosat_pipeline.io import open_granules

    # the identical twin is quick to build (no true atmosphere to integrate); the layout is the same
    assert main(["synth", "samples", "--truth", "identical", "--out", str(tmp_path / "ds")]) == 0
    err = capsys.readouterr().err
    n = sum(1 for p in (tmp_path / "ds").rglob("*") if p.is_file() and not p.name.startswith("."))
    assert err.strip().splitlines()[-1:] == [
        f"wrote {n} demonstration files to {tmp_path / 'ds'} (described in data_samples/README.md)"
    ]
    granules = list((tmp_path / "ds" / "granules").rglob("*.nc*"))
    assert n == len(granules) + 5 and len(granules) > 600  # daily granules of a year, 2 priors, 3 more
    truth = json.loads((tmp_path / "ds" / "truth.json").read_text())
    assert truth["planted"] == [{"gas": "CH4", "region": "THA", "factor": 2.0}]
    assert truth["truth_model"] == "identical" and truth["true_tg_per_yr"]["CH4"]["THA"] == pytest.approx(8.0)
    ch4 = open_granules(str(tmp_path / "ds" / "granules" / "CH4" / "*.nc"), gas="CH4")
    co2 = open_granules(str(tmp_path / "ds" / "granules" / "CO2" / "*.nc4"), gas="CO2")
    assert ch4.attrs["skipped_inputs"] == co2.attrs["skipped_inputs"] == "[]"
    assert ch4.sizes["sounding"] > 4000 and co2.sizes["sounding"] > 3000


# ---------------------------------------------------------------------------- first hour
def _actions(parser, path=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield (*path, choice.dest), choice
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield (*path, action.dest), action


def test_every_subcommand_and_option_has_a_help_line() -> None:
    import argparse

    from gosat_pipeline.cli import build_parser

    found = list(_actions(build_parser()))
    assert len(found) > 60
    missing = [path for path, a in found if not a.help or a.help == argparse.SUPPRESS]
    assert missing == []


def test_verbosity_is_accepted_after_the_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "missing.yaml"), "-v"]) == 2
    assert "Traceback" in capsys.readouterr().err
    out = tmp_path / "g"
    assert main(["synth", "granules", "--format", "cci_ocpr", "--out", str(out), "--n-files", "1", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.strip().endswith(".nc")
    # before the subcommand still works (--config-only: a clean clone has no data_samples/ yet)
    assert main(["-q", "validate", "--config-only", str(ROOT / "configs" / "template.yaml")]) == 0
    with pytest.raises(SystemExit):
        main(["-q", "validate", "--config-only", str(ROOT / "configs" / "template.yaml"), "-v"])


def test_synth_granules_says_what_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g"
    assert (
        main(
            [
                "synth",
                "granules",
                "--format",
                "acos_lite",
                "--out",
                str(out),
                "--n-files",
                "2",
                "--n-per-file",
                "50",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"wrote 2 synthetic CO2 granule(s) in the acos_lite layout to {out} (50 soundings each, about 20 % of "
        "them flagged bad to exercise the quality screen; one file per day from 2020-01-01; seeds 7..8):"
    )
    paths = captured.out.split()
    assert len(paths) == 2 and all(Path(p).is_file() and Path(p).parent == out for p in paths)


def test_synth_osse_prints_a_table_with_units_and_json_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    boxes = ["--region", "THA=98,6,104,19", "--region", "VNM=105,9,109,22", "--truth", "identical"]
    assert main(["synth", "osse", *boxes, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("OSSE (synthetic truth, seed 0): CH4, ")
    assert "degrees of freedom for signal" in out and "chi-square per observation" in out
    header = next(line for line in lines if line.startswith("region "))
    for col in (
        "truth (Tg CH4/yr)",
        "prior (Tg CH4/yr)",
        "estimate \u00b1 1 sigma (Tg CH4/yr)",
        "error reduction",
        "truth within 2 sigma",
        "mass balance (Tg CH4/yr)",
    ):
        assert col in header
    body = lines[lines.index(header) + 2 :]
    assert [r.split()[0] for r in body[:2]] == ["THA", "VNM"] and "\u00b1" in body[0] and "%" in body[0]
    assert (tmp_path / "osse_elements.csv").is_file()
    assert main(["synth", "osse", *boxes, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["region"] for t in doc["regions_total"]] == ["THA", "VNM"] and "table" not in doc
    assert main(["synth", "osse", "--region", "THA=98,6,104,19", "--region", "LAO=100,14,107,22"]) == 2
    assert "overlaps" in capsys.readouterr().err
    assert main(["synth", "osse", "--region", "THA=98,6"]) == 2
    assert "CODE=WEST,SOUTH,EAST,NORTH" in capsys.readouterr().err


@pytest.mark.slow
def test_synth_osse_independent_prints_combined_sigma_coverage_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    boxes = ["--region", "THA=98,6,104,19", "--region", "VNM=105,9,109,22"]
    assert main(["synth", "osse", *boxes, "--members", "2", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "perturbed member(s)" in captured.err
    out = captured.out
    lines = out.splitlines()
    assert lines[0].startswith("OSSE (independent truth, seed 0): CH4, ") and "daily super-observations" in lines[0]
    assert "time-resolved" in out and "3 inversion(s) (the configured one and 2 perturbed)" in out
    assert "structural transport error 25 %" in out
    header = next(line for line in lines if line.startswith("region "))
    for col in (
        "truth (Tg CH4/yr)",
        "prior (Tg CH4/yr)",
        "estimate \u00b1 combined sigma (Tg CH4/yr)",
        "analytic sigma",
        "ensemble spread",
        "error reduction (analytic)",
        "constrained",
        "truth within 2 sigma",
    ):
        assert col in header
    body = lines[lines.index(header) + 2 : lines.index(header) + 4]
    assert [r.split()[0] for r in body] == ["THA", "VNM"] and all("\u00b1" in r for r in body)
    cover = next(line for line in lines if line.startswith("coverage: "))
    assert "constrained" in cover and "analytic error reduction >= 50 %" in cover
    assert (tmp_path / "osse_elements.csv").is_file()
    assert main(["synth", "osse", *boxes, "--members", "2", "--months", "2", "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["truth_model"] == "independent" and doc["members"] == 3 and doc["transport_error"] == 0.25
    assert doc["regions_total"][0]["period"] == "2020-01-01/2020-03-01"
    assert [t["region"] for t in doc["regions_total"]] == ["THA", "VNM"] and "table" not in doc
    for t in doc["regions_total"]:
        assert t["posterior_sigma"] >= t["analytic_sigma"] and {"within_2sigma", "constrained", "truth"} <= set(t)
    assert main(["synth", "osse", *boxes, "--members", "-1"]) == 2
    assert "--members must be >= 0" in capsys.readouterr().err
    assert main(["synth", "osse", *boxes, "--months", "0"]) == 2
    assert "--months must be >= 1" in capsys.readouterr().err


def test_heartbeat_prints_progress_during_a_long_stage() -> None:
    from gosat_pipeline.cli import Heartbeat

    now = [0.0]
    lines: list[str] = []
    beat = Heartbeat(lines.append, 10.0, clock=lambda: now[0], tasks=lambda: " (dask: 2 tasks running)")
    beat("ingest:CH4: running")
    now[0] = 5.0
    assert beat.tick() is None
    now[0] = 10.5
    assert beat.tick() == "[gosat-pipeline] ingest:CH4: still running after 10 s (dask: 2 tasks running)"
    assert beat.tick() is None  # one line per period
    now[0] = 41.0  # a stalled thread does not flood: one line, then the next period
    assert beat.tick() is not None and beat.tick() is None
    beat("ingest:CH4: done in 41.0 s")
    now[0] = 100.0
    assert beat.tick() is None
    assert lines[0] == "[gosat-pipeline] ingest:CH4: running" and lines[-1].endswith("done in 41.0 s")
    assert Heartbeat(lines.append, 0.0).tick() is None  # 0: never


def test_report_pdf_without_a_browser_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gosat_pipeline.report import pdf
    from gosat_pipeline.testing.posteriors import write_run_dir

    d = write_run_dir(tmp_path / "run")
    monkeypatch.setattr(pdf, "find_browser", lambda browser=None: None)
    assert main(["report", str(d), "--pdf"]) == 2
    err = capsys.readouterr().err
    assert (d / "report.html").is_file() and not (d / "report.pdf").exists()
    assert "needs a Chromium-family browser" in err and "apt-get install chromium" in err
    assert "pip install 'gosat_pipeline[pdf]'" in err and "python -m playwright install chromium" in err
    monkeypatch.undo()
    assert main(["report", str(d), "--pdf", "--browser", str(tmp_path / "no-such-browser")]) == 2
    assert "no-such-browser' not found" in capsys.readouterr().err
