"""The report's words and numbers: headline, verdict order, z arithmetic, names, provenance, robustness."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import assert_self_contained, parse

from gosat_pipeline.report import write_report
from gosat_pipeline.report.names import OFFICIAL_SHORT_NAMES, region_names
from gosat_pipeline.report.provenance import config_for_display, provenance, relative_path
from gosat_pipeline.report.tables import (
    Thresholds,
    findings_rows,
    fmt,
    headline_sentences,
    row_text,
    technical_table,
)
from gosat_pipeline.report.verdicts import (
    NO_VERDICT,
    UNKNOWN_EXPLANATION,
    VERDICT_EXPLANATIONS,
    explain,
    verdict_class,
)
from gosat_pipeline.schema import VERDICTS
from gosat_pipeline.testing.posteriors import make_posterior, make_reported, write_run_dir

NAMES = region_names()
THR = Thresholds({"z_critical": 2.0, "min_error_reduction": 0.2, "min_sensitivity": 0.1, "min_observations": 5})
ABSOLUTE = re.compile(r"(?<![\w.~:/-])/(?:[\w.-]+/)+[\w.*-]*")


def row(region: str, verdict: str | None, z: float = 0.0, **kw) -> dict:
    base = {
        "region": region,
        "region_name": region.title(),
        "gas": "CH4",
        "period": "2020",
        "reference": "national submission",
        "prior_total": 3.0,
        "prior_sigma": 1.5,
        "posterior_total": 4.0,
        "posterior_sigma": 0.5,
        "reported_total": 3.0,
        "reported_sigma": 0.6,
        "reported_total_smoothed": 3.1,
        "relative_difference": 1 / 3,
        "z_score": z,
        "z_form": "direct",
        "error_reduction": 0.6,
        "sensitivity": 0.7,
        "n_observations": 50,
        "verdict": verdict,
    }
    base.update(kw)
    return base


# ---------------------------------------------------------------------------- verdict words
@pytest.mark.parametrize("verdict", [*VERDICTS, "partly outside the domain", "not constrained (transport-sensitive)"])
def test_every_verdict_is_explained_in_plain_words(verdict):
    text = explain(verdict)
    assert text != UNKNOWN_EXPLANATION and len(text) > 60
    assert verdict_class(verdict) != "other"
    for internal in ("averaging kernel", "z_", "sigma", "error_reduction"):
        assert internal not in text


def test_unknown_verdict_has_a_fallback_and_no_verdict_is_explained():
    assert explain("under review") == UNKNOWN_EXPLANATION and verdict_class("under review") == "other"
    assert NO_VERDICT in VERDICT_EXPLANATIONS


# ---------------------------------------------------------------------------- headline and order
def test_headline_names_every_flagged_region_first_largest_z_first():
    rows = [
        row("IDN", "consistent"),
        row("LAO", "not constrained", error_reduction=0.1),
        row("THA", "higher than reported", 2.9, relative_difference=0.79, reported_total=4.0),
        row("VNM", "lower than reported", -3.5, relative_difference=-0.3, reported_total=4.5),
        row("XXX", "no reported value"),
        row("REST", None, region_name="rest of domain"),
        row("BRN", "consistent", gas="CO2"),
        row("SGP", "not constrained", gas="CO2"),
    ]
    first, second = headline_sentences(rows, NAMES)
    assert first == (
        "2 of 4 CH4 totals differ from the national submission: Viet Nam\u2019s CH4 emissions appear "
        "about 30 % below the reported 4.5 million tonnes a year and Thailand\u2019s CH4 emissions "
        "appear about 80 % above the reported 4.0 million tonnes a year."
    )
    assert second == (
        "Of the other 2 CH4 totals, 1 agrees with the reported value within the uncertainties and 1 "
        "cannot be checked with these satellite data; 1 CH4 total has no reported value and 1 CH4 "
        "total is estimated but not compared (not a reporting country); none of the 2 CO2 totals "
        "differs from the reported value: 1 agrees with the reported value within the uncertainties "
        "and 1 cannot be checked with these satellite data."
    )
    order = [r["code"] for r in findings_rows(rows, NAMES, THR)]
    assert order == ["VNM", "THA", "IDN", "BRN", "LAO", "SGP", "XXX", "REST"]


def test_headline_without_differences_and_without_rows():
    rows = [row("IDN", "not constrained", error_reduction=0.0), row("THA", "consistent")]
    first, second = headline_sentences(rows, NAMES)
    assert first == "No total differs significantly from the national submission."
    assert second.startswith("None of the 2 CH4 totals differs from the reported value: 1 agrees")
    assert headline_sentences([], NAMES) == ["The comparison has no rows: there is nothing to report."]
    many = [row("THA", "higher than reported", 3.0, relative_difference=1.5)]
    assert "about 2.5 times the reported 3.0 million tonnes a year" in headline_sentences(many, NAMES)[0]


# ---------------------------------------------------------------------------- numbers that add up
_ARITH = re.compile(
    r"z = \(([-\u2212\d.,]+) \u2212 ([-\u2212\d.,]+)\) / \u221a\(([\d.,]+)\u00b2 ([+\u2212]) ([\d.,]+)\u00b2\) "
    r"= ([+\u2212]?[\d.]+)"
)


_SHIFT = re.compile(r"z = \(([-\u2212\d.,]+) \u2212 ([-\u2212\d.,]+)\) / ([\d.,]+) = ([+\u2212]?[\d.]+)")


def _f(text: str) -> float:
    return float(text.replace(",", "").replace("\u2212", "-"))


@pytest.mark.parametrize("prior_is_reported", [False, True])
def test_each_sentence_shows_the_numbers_its_z_was_computed_from(tmp_path, prior_is_reported):
    post = make_posterior(truth={"IDN": 1.6, "THA": 0.7})
    rep = make_reported(post)
    d = write_run_dir(
        tmp_path / "z",
        posterior=post,
        reported=rep,
        compare_kwargs={"prior_is_reported": prior_is_reported, "max_detectable_difference": 5.0},
    )  # (every row gets a z verdict)
    rows = json.loads((d / "discrepancies.json").read_text())["rows"]
    checked = 0
    for r in rows:
        if r["verdict"] not in ("consistent", "higher than reported", "lower than reported"):
            continue
        main, test = row_text(r, NAMES, THR)
        if r["z_form"] == "shift":  # z = (estimate - prior) / compared_sigma, the column of the file
            m = _SHIFT.search(test)
            assert m, test
            a, b, c, z = m.groups()
            assert "started from" in test
            for shown, value in zip(
                (a, b, c), (r["posterior_total"], r["prior_total"], r["compared_sigma"]), strict=True
            ):
                assert math.isclose(_f(shown), value, rel_tol=6e-3, abs_tol=1e-9), (shown, value)
            assert math.isclose((_f(a) - _f(b)) / _f(c), _f(z), rel_tol=0.02, abs_tol=0.02)
            assert math.isclose(_f(z), r["z_score"], abs_tol=0.006)
            checked += 1
            continue
        m = _ARITH.search(test)
        assert m, test
        a, b, c, sign, d_, z = m.groups()
        # the numbers are the row's own columns (3 significant digits) ...
        if r["z_form"] == "shift":
            assert sign == "\u2212" and "started from" in test
            expect = (r["posterior_total"], r["prior_total"], r["prior_sigma"], r["posterior_sigma"])
        else:
            assert sign == "+" and "as these satellite data see it" in test
            expect = (r["posterior_total"], r["reported_total_smoothed"], r["posterior_sigma"], r["reported_sigma"])
        for shown, value in zip((a, b, c, d_), expect, strict=True):
            assert math.isclose(_f(shown), value, rel_tol=6e-3, abs_tol=1e-9), (shown, value)
        # ... and redoing the arithmetic gives the z printed and the z of the file
        s = 1.0 if sign == "+" else -1.0
        redo = (_f(a) - _f(b)) / math.sqrt(_f(c) ** 2 + s * _f(d_) ** 2)
        assert math.isclose(redo, _f(z), rel_tol=0.02, abs_tol=0.02), (redo, z)
        assert math.isclose(_f(z), r["z_score"], abs_tol=0.006)
        # both the reported total and the value the verdict uses are shown
        assert f"the reported {fmt(r['reported_total'])} \u00b1 {fmt(r['reported_sigma'])} Tg CH4/yr" in main
        checked += 1
    assert checked >= 3


def test_not_constrained_sentence_says_why_in_plain_words():
    r = row("LAO", "not constrained", error_reduction=0.13, sensitivity=0.05, n_observations=3)
    main, test = row_text(r, NAMES, THR)
    assert main == (
        "No verdict: the satellite data shrink the uncertainty of this total by only 13 % (20 % needed), "
        "5 % of the estimate comes from the satellite data rather than the starting inventory (10 % "
        "needed) and only 3 satellite observations see this region (5 needed)."
    )
    assert (
        test
        == "The satellite estimate is 4.00 \u00b1 0.500 Tg CH4/yr; reported 3.00 \u00b1 0.600 Tg CH4/yr (national submission)."
    )
    ts = row("LAO", "not constrained (transport-sensitive)", ensemble_spread=1.25)
    assert (
        "across an ensemble of plausible transport settings the verdict changes (ensemble spread 1.25)"
        in row_text(ts, NAMES, THR)[0]
    )
    out = row("MYS", "partly outside the domain", domain_share=0.4)
    assert "Only part of Malaysia lies inside the area analysed (about 40 % of it)" in row_text(out, NAMES, THR)[0]


# ---------------------------------------------------------------------------- robustness
def test_unknown_columns_verdicts_and_non_verdict_rows_are_shown_plainly(tmp_path):
    d = write_run_dir(tmp_path / "new")
    doc = json.loads((d / "discrepancies.json").read_text())
    rows = doc["rows"]
    rows[0].update(verdict="partly outside the domain", domain_share=0.42)
    rows[1].update(verdict="not constrained (transport-sensitive)", ensemble_spread=0.8, ensemble_members=12)
    rows[2].update(verdict="under review", future_column={"a": 1})
    rows.append(
        {
            **rows[3],
            "region": "REST",
            "region_name": "rest of domain",
            "verdict": None,
            "reported_total": None,
            "z_score": None,
            "reason": "",
        }
    )
    rows.append({"region": "ODD"})  # a row with almost nothing in it
    (d / "discrepancies.json").write_text(json.dumps(doc))
    html = write_report(d).read_text()
    assert_self_contained(html)
    text = " ".join(parse(html).text)
    for words in (
        "partly outside the domain",
        "not constrained (transport-sensitive)",
        "under review",
        "rest of domain",
        "estimate only",
        "Share in domain",
        "Ensemble spread",
        "Inversions",
        "future_column",
        "ODD",
    ):
        assert words in text, words
    assert "Technical columns (including future_column)" in text
    tech = technical_table(rows)
    assert tech["unknown"] == ["future_column"]  # domain_share and the ensemble columns are schema columns now
    assert tech["header"][-1] == "Reason recorded by the comparison"


# ---------------------------------------------------------------------------- names
def test_official_short_names_and_the_configured_override(tmp_path):
    assert OFFICIAL_SHORT_NAMES["VNM"] == "Viet Nam" and OFFICIAL_SHORT_NAMES["LAO"] == "Lao PDR"
    assert OFFICIAL_SHORT_NAMES["BRN"] == "Brunei Darussalam"
    assert region_names({"vnm": "Vietnam", "THA": ""})["VNM"] == "Vietnam"
    assert "THA" not in region_names({"THA": ""})
    d = write_run_dir(tmp_path / "names")
    findings = write_report(d).read_text().split('id="findings-table"')[1].split("</table>")[0]
    assert "Viet Nam" in findings
    (d / "config.resolved.yaml").write_text("report:\n  title: Our title\n  region_names:\n    VNM: Vietnam\n")
    html = write_report(d).read_text()
    findings = html.split('id="findings-table"')[1].split("</table>")[0]
    assert "Vietnam" in findings and "Viet Nam" not in findings and "<title>Our title</title>" in html
    findings = write_report(d, region_names={"VNM": "V. N."}).read_text().split('id="findings-table"')[1]
    assert "V. N." in findings.split("</table>")[0]


# ---------------------------------------------------------------------------- provenance
def test_provenance_paths_are_relative_and_status_is_shown(tmp_path):
    run = tmp_path / "outputs" / "demo"
    src = tmp_path / "data_samples" / "granules" / "CH4" / "a.nc"
    manifest = {
        "status": "complete",
        "wall_time_s": 14.2,
        "config_path": str(tmp_path / "configs" / "demo.yaml"),
        "inputs": [{"path": str(src), "sha256": "ab" * 32, "kind": "granule:CH4", "bytes": 2048}],
        "skipped_inputs": [{"path": str(src), "reason": f"unreadable: {src} is empty"}],
        "platform": {"argv": [str(tmp_path / ".venv" / "bin" / "gosat-pipeline"), "run", "configs/demo.yaml"]},
        "stages": {
            "ingest:CH4": {
                "status": "done",
                "wall_time_s": 2.3,
                "finished": "2026-01-01T00:00:00+00:00",
                "outputs": ["soundings_CH4.nc"],
            }
        },
        "screening": {
            "CH4": {"soundings_kept": 10, "quality_filter_dropped": {"flagged": 2}, "duplicate_soundings": []}
        },
    }
    d = write_run_dir(run, manifest=manifest)
    (d / "config.resolved.yaml").write_text(
        f"run:\n  output_dir: {tmp_path / 'outputs'}\ngases:\n- granules:\n"
        f"  - {tmp_path / 'data_samples'}/granules/CH4/*.nc\n"
    )
    html = write_report(d).read_text()
    assert str(tmp_path) not in html
    text = " ".join(parse(html).text)
    assert not ABSOLUTE.findall(text), ABSOLUTE.findall(text)
    assert "../../data_samples/granules/CH4/a.nc" in text and "../../configs/demo.yaml" in text
    assert "../../.venv/bin/gosat-pipeline run configs/demo.yaml" in text
    assert "- ../../data_samples/granules/CH4/*.nc" in text and "output_dir: .." in text
    assert 'id="run-status">complete<' in html and 'id="wall-time">14.2 s<' in html
    stages = html.split('id="stage-table"')[1].split("</table>")[0]
    assert "<th>Stage</th>" in stages and "ingest:CH4" in stages and "soundings_CH4.nc" in stages
    assert "2.3 s" in stages


def test_status_while_the_report_is_being_written():
    base = Path("/r/outputs/demo")
    p = provenance({"status": "complete", "current_stage": "report", "wall_time_s": 9.0}, base)
    assert p["status"] == "complete" and p["wall_time"] == "9.0 s (to the start of this report)"
    p = provenance({"status": "running", "current_stage": "invert:CH4"}, base)
    assert p["status"].startswith("running or interrupted") and p["wall_time"] == "not recorded"
    assert relative_path("zip:///r/site/ne.zip", base) == "zip://../../site/ne.zip"
    assert relative_path("data/x.nc", base) == "data/x.nc"
    assert config_for_display("a: /r/outputs/x\nb: [1, 2]\n", base) == "a: ../x\nb:\n- 1\n- 2\n"


# ---------------------------------------------------------------------------- cross-check
def test_mass_balance_cross_check_has_units_and_a_reading(tmp_path):
    d = write_run_dir(tmp_path / "mb")
    pd.DataFrame(
        {"region": ["IDN", "VNM"], "region_name": ["Indonesia", "Vietnam"], "mass_balance_emission": [20.0, np.nan]}
    ).to_csv(d / "mass_balance.csv", index=False)
    html = write_report(d).read_text()
    section = html.split('id="mass-balance-CH4"')[1].split("</details>")[0]
    assert "Mass balance (Tg CH4/yr)" in section and "Ratio (mass balance &divide; inversion)" in section
    assert "order-of-magnitude check" in section and "not used for any verdict" in section
    assert "no estimate (no observations over the region)" in section and "1.48" in section  # 20 / 13.5
    (d / "mass_balance.csv").write_text("what,ever\n1,2\n")
    html = write_report(d).read_text()
    assert "mass-balance cross-check not shown" in html and 'id="mass-balance-CH4"' not in html
