"""OSSE: a known truth, GOSAT-like sampling, forward model + noise, recovered within 2 sigma."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gosat_pipeline.testing import make_osse_case, run_osse


def test_osse_recovers_truth_within_two_sigma() -> None:
    case = make_osse_case(seed=0)
    assert case["obs"].attrs["gas"] == "CH4" and case["obs"].sizes["latitude"] == 30
    frac_observed = float((case["obs"].n_soundings > 0).mean())
    assert 0.05 < frac_observed < 0.5  # sparse, GOSAT-like sampling
    assert np.all(np.abs(case["truth_scale"].values - 1.0) >= 0.2)  # scaled away from the prior
    summary = run_osse(case)
    table = summary["table"]
    assert isinstance(table, pd.DataFrame) and len(table) == summary["n_elements"]
    assert summary["dofs"] > 5 and summary["status"] == 0
    assert summary["n_constrained"] >= 8
    assert summary["fraction_within_2sigma"] >= 0.9
    assert 0.7 < summary["chi2_obs"] < 1.3  # errors consistent with the simulated noise


def test_osse_coverage_pooled_over_seeds() -> None:
    """Pooled over seeds the constrained elements' 2-sigma coverage is near its nominal 95 %."""
    within = constrained = 0
    for seed in range(1, 9):
        s = run_osse(make_osse_case(seed=seed))
        constrained += s["n_constrained"]
        within += s["n_constrained_within_2sigma"]
    assert constrained > 60
    assert within / constrained >= 0.9


def test_osse_is_seeded_and_cli_summary_is_json_friendly() -> None:
    import json

    a = make_osse_case(seed=5, regions=4, n_months=1)
    b = make_osse_case(seed=5, regions=4, n_months=1)
    np.testing.assert_array_equal(a["obs"].xgas_mean.values, b["obs"].xgas_mean.values)
    s = run_osse(a)
    table = s.pop("table")
    json.dumps(s, default=str)
    assert {"truth", "posterior", "posterior_sigma"} <= set(table.columns)
    assert len(s["regions_total"]) == 4 and "mass_balance" in s["regions_total"][0]
