"""Comparison with reported inventories: formulas on hand-built posteriors (DESIGN.md 5.5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from gosat_pipeline.compare import (
    CHANGE_COLUMNS,
    discrepancy_json_schema,
    write_discrepancies,
)
from gosat_pipeline.compare import compare_to_inventory as _compare
from gosat_pipeline.compare import period_change as _change
from gosat_pipeline.errors import GosatPipelineError, SchemaError
from gosat_pipeline.schema import DISCREPANCY_COLUMNS, DISCREPANCY_SCHEMA_VERSION, VERDICTS
from gosat_pipeline.testing.posteriors import make_posterior, make_reported


def compare_to_inventory(*args, **kwargs):
    """The comparison with the analytic uncertainty only: these tests check its algebra.

    The structural transport error and the power gate for "consistent" have tests of their own.
    """
    kwargs.setdefault("transport_error", 0.0)
    kwargs.setdefault("max_detectable_difference", 1e9)
    return _compare(*args, **kwargs)


def period_change(*args, **kwargs):
    kwargs.setdefault("transport_error", 0.0)
    return _change(*args, **kwargs)


def hand_posterior(
    regions=("AAA", "BBB"),
    periods=("2019",),
    prior_tg=(10.0, 5.0),
    xh=None,
    Sa=None,
    Sh=None,
    A=None,
    n_obs=50,
    status=0,
) -> xr.Dataset:
    """A posterior with the schema's names and explicit matrices; one element per region x period."""
    meta = [(r, p, prior_tg[i % len(prior_tg)]) for p in periods for i, r in enumerate(regions)]
    n = len(meta)
    xa = np.ones(n)
    xh = np.ones(n) if xh is None else np.asarray(xh, float)
    Sa = 0.25 * np.eye(n) if Sa is None else np.asarray(Sa, float)
    Sh = 0.01 * np.eye(n) if Sh is None else np.asarray(Sh, float)
    A = np.eye(n) - Sh @ np.linalg.inv(Sa) if A is None else np.asarray(A, float)
    keys = list(dict.fromkeys((r, p) for r, p, _ in meta))
    return xr.Dataset(
        {
            "x_prior": ("state", xa),
            "x_posterior": ("state", xh),
            "S_prior": (("state", "state2"), Sa),
            "S_posterior": (("state", "state2"), Sh),
            "averaging_kernel": (("state", "state2"), A),
            "n_observations": ((), n_obs * len(regions)),
            "status": ((), np.int8(status)),
            "total_n_observations": ("total", np.full(len(keys), n_obs)),
        },
        coords={
            "state_kind": ("state", ["emission"] * n),
            "state_region": ("state", [m[0] for m in meta]),
            "state_sector": ("state", ["total"] * n),
            "state_period": ("state", [m[1] for m in meta]),
            "state_prior_emission": ("state", [m[2] * 1e9 for m in meta]),
            "total_region": ("total", [k[0] for k in keys]),
            "total_region_name": ("total", [f"Name of {k[0]}" for k in keys]),
            "total_period": ("total", [k[1] for k in keys]),
        },
        attrs={"gas": "CH4"},
    )


def reported_table(values, *, source="national submission", year=2019, sigma=None, gas="CH4"):
    rows = []
    for area, v in values.items():
        s = 0.1 * v if sigma is None else sigma.get(area, math.nan)
        rows.append(
            {
                "area": area,
                "year": year,
                "gas": gas,
                "category": "total",
                "source": source,
                "value_tg_per_yr": v,
                "sigma_tg_per_yr": s,
                "uncertainty_source": "reported",
            }
        )
    return pd.DataFrame(rows)


def row(df, region, reference=None, period=None):
    sel = df["region"] == region
    if reference is not None:
        sel &= df["reference"] == reference
    if period is not None:
        sel &= df["period"] == period
    out = df[sel]
    assert len(out) == 1, out
    return out.iloc[0]


# ---------------------------------------------------------------------------- z forms
def test_direct_z_without_smoothing_when_A_is_identity():
    post = hand_posterior(xh=[1.3, 0.9], Sh=np.diag([0.01, 0.04]), A=np.eye(2))
    df = compare_to_inventory(post, reported_table({"AAA": 9.0, "BBB": 5.0}, sigma={"AAA": 1.0, "BBB": 0.5}))
    r = row(df, "AAA")
    e, s = 13.0, 10.0 * 0.1
    assert r["posterior_total"] == pytest.approx(e)
    assert r["posterior_sigma"] == pytest.approx(s)
    assert r["reported_total_smoothed"] == pytest.approx(9.0)
    assert r["z_direct"] == pytest.approx((e - 9.0) / math.sqrt(s**2 + 1.0))
    assert r["z_form"] == "direct" and r["z_score"] == r["z_direct"]
    assert r["difference"] == pytest.approx(4.0)
    assert r["relative_difference"] == pytest.approx(4.0 / 9.0)
    assert r["verdict"] == "higher than reported"
    b = row(df, "BBB")
    assert b["posterior_total"] == pytest.approx(4.5)
    assert b["z_direct"] == pytest.approx((4.5 - 5.0) / math.sqrt(1.0**2 + 0.25))
    assert b["verdict"] == "consistent"


def test_direct_z_compares_with_the_reported_inventory_smoothed_by_A():
    A = np.array([[0.5, 0.2], [0.1, 0.6]])
    post = hand_posterior(xh=[1.2, 1.0], A=A)
    rep = reported_table({"AAA": 14.0, "BBB": 4.0}, sigma={"AAA": 0.5, "BBB": 0.5})
    df = compare_to_inventory(post, rep)
    # x_rep = (1.4, 0.8); smoothed = 1 + A (x_rep - 1) = (1 + 0.5*0.4 + 0.2*(-0.2), 1 + 0.1*0.4 + 0.6*(-0.2))
    xs = np.array([1.0, 1.0]) + A @ np.array([0.4, -0.2])
    assert row(df, "AAA")["reported_total_smoothed"] == pytest.approx(10.0 * xs[0])
    assert row(df, "BBB")["reported_total_smoothed"] == pytest.approx(5.0 * xs[1])
    s = row(df, "AAA")["posterior_sigma"]
    assert row(df, "AAA")["z_direct"] == pytest.approx((12.0 - 10.0 * xs[0]) / math.sqrt(s**2 + 0.25))
    # the raw reported value is kept next to the smoothed one; difference uses the raw value
    assert row(df, "AAA")["reported_total"] == pytest.approx(14.0)
    assert row(df, "AAA")["difference"] == pytest.approx(12.0 - 14.0)
    # the neighbour's reported value enters through the off-diagonal A
    df2 = compare_to_inventory(post, reported_table({"AAA": 14.0, "BBB": 6.0}))
    shift = row(df2, "AAA")["reported_total_smoothed"] - row(df, "AAA")["reported_total_smoothed"]
    assert shift == pytest.approx(10.0 * 0.2 * (0.2 - (-0.2)))


def test_unconstrained_smoothing_falls_back_to_prior():
    post = hand_posterior(xh=[1.0, 1.0], Sh=0.25 * np.eye(2), A=np.zeros((2, 2)))
    df = compare_to_inventory(post, reported_table({"AAA": 20.0, "BBB": 5.0}))
    r = row(df, "AAA")
    assert r["reported_total_smoothed"] == pytest.approx(10.0)  # A = 0: the inversion sees nothing
    assert r["error_reduction"] == pytest.approx(0.0)
    assert r["verdict"] == "not constrained"


def test_shift_z_when_the_prior_is_the_reported_inventory():
    Sa = np.array([[0.25, 0.05], [0.05, 0.25]])
    Sh = np.array([[0.04, -0.01], [-0.01, 0.09]])
    post = hand_posterior(xh=[1.25, 0.95], Sa=Sa, Sh=Sh)
    rep = reported_table({"AAA": 10.0, "BBB": 5.0})
    df = compare_to_inventory(post, rep, prior_is_reported=True)
    w = np.array([10.0, 0.0])
    expected = (w @ [1.25, 0.95] - w @ [1, 1]) / math.sqrt(w @ (Sa - Sh) @ w)
    r = row(df, "AAA")
    assert r["z_form"] == "shift"
    assert r["z_shift"] == pytest.approx(expected)
    assert r["z_score"] == pytest.approx(expected)
    assert r["verdict"] == ("higher than reported" if expected >= 2 else "consistent")
    assert expected == pytest.approx(2.5 / math.sqrt(100 * 0.21))
    # the direct form is still computed next to it
    assert math.isfinite(r["z_direct"])


def test_prior_is_reported_may_name_one_reference():
    post = hand_posterior(xh=[1.25, 0.95])
    rep = pd.concat(
        [reported_table({"AAA": 10.0, "BBB": 5.0}), reported_table({"AAA": 11.0, "BBB": 4.0}, source="EDGAR")]
    )
    df = compare_to_inventory(post, rep, prior_is_reported="national submission")
    assert row(df, "AAA", "national submission")["z_form"] == "shift"
    assert row(df, "AAA", "EDGAR")["z_form"] == "direct"


# ---------------------------------------------------------------------------- verdict gates
@pytest.mark.parametrize(
    ("posterior_scale", "verdict"),
    [
        (1.0 + 1.99 * math.sqrt(2) / 10, "consistent"),
        (1.0 + 2.01 * math.sqrt(2) / 10, "higher than reported"),
        (1.0 - 2.01 * math.sqrt(2) / 10, "lower than reported"),
    ],
)
def test_z_critical_boundary(posterior_scale, verdict):
    # sigma_post = 10*0.1 = 1 Tg, sigma_rep = 1 Tg -> z = 10 (x - 1) / sqrt(2)
    post = hand_posterior(xh=[posterior_scale, 1.0], A=np.eye(2))
    df = compare_to_inventory(post, reported_table({"AAA": 10.0, "BBB": 5.0}, sigma={"AAA": 1.0, "BBB": 0.5}))
    r = row(df, "AAA")
    assert r["z_score"] == pytest.approx(10 * (posterior_scale - 1) / math.sqrt(2))
    assert r["verdict"] == verdict


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_error_reduction": 0.95}, "reduce its uncertainty by only 80 % (at least 95 % needed)"),
        ({"min_sensitivity": 0.999}, "averaging-kernel sensitivity"),
        ({"min_observations": 51}, "only 50 observations see it (at least 51 needed)"),
    ],
)
def test_not_constrained_gates(kwargs, field):
    post = hand_posterior(xh=[2.0, 1.0])  # a huge discrepancy, but the gates win
    df = compare_to_inventory(post, reported_table({"AAA": 10.0, "BBB": 5.0}), **kwargs)
    r = row(df, "AAA")
    assert r["verdict"] == "not constrained"
    assert field in r["reason"]
    for key, value in kwargs.items():
        assert (df[key] == value).all()  # thresholds printed on every row
        assert df.attrs["thresholds"][key] == value


def test_failed_inversion_is_not_constrained():
    post = hand_posterior(xh=[2.0, 1.0], status=1)
    df = compare_to_inventory(post, reported_table({"AAA": 10.0, "BBB": 5.0}))
    assert set(df["verdict"]) == {"not constrained"}
    assert "the inversion failed (no observations)" in row(df, "AAA")["reason"]


def test_no_reported_value():
    post = hand_posterior(xh=[1.0, 1.0])
    df = compare_to_inventory(post, reported_table({"AAA": 10.0}))
    b = row(df, "BBB")
    assert b["verdict"] == "no reported value"
    assert math.isnan(b["reported_total"]) and math.isnan(b["z_score"])
    assert math.isfinite(b["posterior_total"])
    # nothing reported at all: every row says so, under the default reference name
    df0 = compare_to_inventory(post, None, reference="my inventory")
    assert set(df0["verdict"]) == {"no reported value"}
    assert set(df0["reference"]) == {"my inventory"}


def test_other_gases_and_missing_sigma():
    post = hand_posterior(xh=[1.0, 1.0], A=np.eye(2))
    rep = pd.concat([reported_table({"AAA": 10.0}, sigma={"AAA": math.nan}), reported_table({"BBB": 100.0}, gas="CO2")])
    df = compare_to_inventory(post, rep)
    assert row(df, "BBB")["verdict"] == "no reported value"
    a = row(df, "AAA")
    assert a["reported_sigma"] == 0.0 and "none given" in a["uncertainty_source"]


def test_period_matching_by_year_and_interval_label():
    post = hand_posterior(
        periods=("2019-10-01/2020-10-01", "2021-03"),
        xh=[1, 1, 1, 1],
        A=np.eye(4),
        Sa=0.25 * np.eye(4),
        Sh=0.01 * np.eye(4),
    )
    rep = pd.concat([reported_table({"AAA": 10.0}, year=2020), reported_table({"AAA": 12.0}, year=2021)])
    df = compare_to_inventory(post, rep)
    assert row(df, "AAA", period="2019-10-01/2020-10-01")["reported_year"] == 2020
    assert row(df, "AAA", period="2021-03")["reported_total"] == 12.0


# ---------------------------------------------------------------------------- references and aggregates
def test_several_references_side_by_side():
    post = hand_posterior(xh=[1.3, 1.0])
    rep = pd.concat(
        [reported_table({"AAA": 10.0, "BBB": 5.0}), reported_table({"AAA": 13.0, "BBB": 5.0}, source="EDGAR")]
    )
    df = compare_to_inventory(post, rep)
    assert len(df) == 4
    assert list(dict.fromkeys(df["reference"])) == ["national submission", "EDGAR"]
    assert row(df, "AAA", "national submission")["verdict"] == "higher than reported"
    assert row(df, "AAA", "EDGAR")["verdict"] == "consistent"
    assert df.attrs["references"] == ["national submission", "EDGAR"]


def test_aggregate_uses_the_full_covariance_not_the_sum_of_variances():
    Sh = np.array([[0.04, -0.03], [-0.03, 0.09]])  # strongly anti-correlated neighbours
    post = hand_posterior(xh=[1.1, 0.9], Sh=Sh)
    df = compare_to_inventory(post, reported_table({"AAA": 10.0, "BBB": 5.0}), aggregates={"AB": ["AAA", "BBB"]})
    ab = row(df, "AB")
    C = np.diag([10.0, 5.0]) @ Sh @ np.diag([10.0, 5.0])
    assert ab["posterior_sigma"] == pytest.approx(math.sqrt(np.ones(2) @ C @ np.ones(2)))
    naive = math.hypot(row(df, "AAA")["posterior_sigma"], row(df, "BBB")["posterior_sigma"])
    assert ab["posterior_sigma"] < 0.8 * naive
    assert ab["posterior_total"] == pytest.approx(11.0 + 4.5)
    assert ab["members"] == "AAA BBB"
    # reported aggregate: sum of members, sigma in quadrature
    assert ab["reported_total"] == pytest.approx(15.0)
    assert ab["reported_sigma"] == pytest.approx(math.hypot(1.0, 0.5))
    assert ab["uncertainty_source"].startswith("sum of members")


def test_aggregate_agrees_with_the_inversion_total_covariance():
    post = make_posterior(("IDN", "MYS", "THA"), region_correlation=0.3, seed=3)
    df = compare_to_inventory(post, make_reported(post), aggregates={"X": ["IDN", "MYS", "THA"]})
    C = post["total_posterior_covariance"].values
    assert row(df, "X")["posterior_sigma"] == pytest.approx(math.sqrt(C.sum()), rel=1e-12)
    for code in ("IDN", "MYS", "THA"):
        t = int(np.flatnonzero(post["total_region"].values == code)[0])
        assert row(df, code)["posterior_sigma"] == pytest.approx(float(post["total_posterior_sigma"][t]))
        assert row(df, code)["error_reduction"] == pytest.approx(float(post["total_error_reduction"][t]))
        assert row(df, code)["sensitivity"] == pytest.approx(float(post["total_sensitivity"][t]))


def test_aggregate_reported_partial_and_own_row():
    post = hand_posterior(xh=[1.0, 1.0])
    df = compare_to_inventory(post, reported_table({"AAA": 10.0}), aggregates={"AB": ["AAA", "BBB"]})
    assert row(df, "AB")["verdict"] == "no reported value"  # a partial sum would mislead
    df = compare_to_inventory(post, reported_table({"AB": 15.5}), aggregates={"AB": ["AAA", "BBB"]})
    assert row(df, "AB")["reported_total"] == 15.5
    with pytest.raises(GosatPipelineError, match="ZZZ"):
        compare_to_inventory(post, None, aggregates={"AZ": ["AAA", "ZZZ"]})


# ---------------------------------------------------------------------------- planted discrepancies (OSSE-like)
def test_planted_discrepancy_flagged_only_where_constrained():
    post = make_posterior(truth={"IDN": 1.6, "VNM": 1.6}, constraint={"VNM": 0.0}, seed=1)
    df = compare_to_inventory(post, make_reported(post))
    assert row(df, "IDN")["verdict"] == "higher than reported"
    assert row(df, "VNM")["verdict"] == "not constrained"
    assert row(df, "MYS")["verdict"] == "consistent"
    assert set(df["verdict"]) <= set(VERDICTS)


# ---------------------------------------------------------------------------- period change
def test_period_change_includes_cross_period_covariance():
    Sh = np.diag([0.04, 0.04, 0.04, 0.04])
    Sh[0, 2] = Sh[2, 0] = 0.03  # AAA 2019 and AAA 2020 strongly correlated
    post = hand_posterior(
        periods=("2019", "2020"), xh=[1.0, 1.0, 0.7, 1.0], Sa=0.25 * np.eye(4), Sh=Sh, prior_tg=(10.0, 5.0)
    )
    rep = pd.concat(
        [reported_table({"AAA": 10.0, "BBB": 5.0}, year=2019), reported_table({"AAA": 9.0, "BBB": 5.0}, year=2020)]
    )
    ch = period_change(post, rep, period_a="2019", period_b="2020")
    a = row(ch, "AAA")
    assert list(ch.columns) == list(CHANGE_COLUMNS)
    assert a["posterior_change"] == pytest.approx(-3.0)
    var = 100 * (0.04 + 0.04 - 2 * 0.03)
    assert a["posterior_change_sigma"] == pytest.approx(math.sqrt(var))
    assert a["posterior_cross_covariance"] == pytest.approx(3.0)
    assert a["change_z"] == pytest.approx(-3.0 / math.sqrt(var))
    assert a["significant"] and a["change_verdict"] == "decrease"
    # without the cross-covariance the same decrease would not be significant
    assert abs(-3.0 / math.sqrt(100 * 0.08)) < 2
    assert a["reported_change"] == pytest.approx(-1.0)
    assert a["reported_change_sigma"] == pytest.approx(math.hypot(1.0, 0.9))
    assert a["change_difference"] == pytest.approx(-2.0)
    assert a["verdict"] in VERDICTS
    b = row(ch, "BBB")
    assert not b["significant"] and b["change_verdict"] == "no significant change"


def test_period_change_over_sets_of_periods_and_aggregates():
    post = make_posterior(("IDN", "MYS"), periods=("2018", "2019", "2020", "2021"), period_correlation=0.6, seed=2)
    rep = make_reported(post)
    ch = period_change(
        post, rep, period_a=["2018", "2019"], period_b=["2020", "2021"], aggregates={"IM": ["IDN", "MYS"]}
    )
    st = post
    kind = st["state_kind"].values.astype(str)
    per = st["state_period"].values.astype(str)
    pe = st["state_prior_emission"].values / 1e9
    emis = kind == "emission"
    wa = np.where(emis & np.isin(per, ["2018", "2019"]), pe, 0.0) / 2
    wb = np.where(emis & np.isin(per, ["2020", "2021"]), pe, 0.0) / 2
    d = wb - wa
    r = row(ch, "IM")
    assert r["posterior_change"] == pytest.approx(d @ st["x_posterior"].values)
    assert r["posterior_change_sigma"] == pytest.approx(math.sqrt(d @ st["S_posterior"].values @ d))
    assert r["period_a"] == "2018 2019"
    with pytest.raises(GosatPipelineError, match="1999"):
        period_change(post, rep, period_a="1999", period_b="2020")


# ---------------------------------------------------------------------------- errors
def test_bad_reported_tables_raise_clear_errors():
    post = hand_posterior()
    with pytest.raises(SchemaError, match="value_tg_per_yr"):
        compare_to_inventory(post, pd.DataFrame({"area": ["AAA"], "year": [2019]}))
    dup = pd.concat([reported_table({"AAA": 10.0}), reported_table({"AAA": 11.0})])
    with pytest.raises(SchemaError, match="several rows"):
        compare_to_inventory(post, dup)
    with pytest.raises(SchemaError, match="averaging_kernel"):
        compare_to_inventory(post.drop_vars("averaging_kernel"), None)


# ---------------------------------------------------------------------------- outputs
def test_csv_and_json_round_trip(tmp_path):
    import jsonschema

    post = make_posterior(truth={"IDN": 1.6}, constraint={"VNM": 0.0}, periods=("2019", "2020"))
    rep = pd.concat([make_reported(post), make_reported(post, source="EDGAR", relative_sigma=0.3)])
    df = compare_to_inventory(post, rep, aggregates={"ASEAN": ["IDN", "MYS", "THA", "VNM"]}, z_critical=2.5)
    ch = period_change(post, rep, period_a="2019", period_b="2020")
    paths = write_discrepancies(df, tmp_path, changes=ch)
    assert {p.name for p in paths.values()} == {
        "discrepancies.csv",
        "discrepancies.json",
        "discrepancies.schema.json",
        "period_changes.csv",
    }
    text = paths["csv"].read_text()
    assert not text.startswith("#") and "\n#" not in text
    back = pd.read_csv(paths["csv"], keep_default_na=True)
    assert list(back.columns) == list(DISCREPANCY_COLUMNS)
    assert len(back) == len(df) == 2 * 5 * 2
    assert (back["z_critical"] == 2.5).all()
    np.testing.assert_allclose(back["posterior_total"], df["posterior_total"], rtol=1e-12)
    doc = json.loads(paths["json"].read_text())
    schema = json.loads(paths["schema"].read_text())
    assert schema == discrepancy_json_schema()
    jsonschema.validate(doc, schema)
    assert doc["schema_version"] == DISCREPANCY_SCHEMA_VERSION
    assert doc["thresholds"]["z_critical"] == 2.5
    assert list(doc["columns"]) == list(DISCREPANCY_COLUMNS)
    assert len(doc["rows"]) == len(df)
    vnm = next(r for r in doc["rows"] if r["region"] == "VNM")
    assert vnm["z_shift"] is None and vnm["verdict"] == "not constrained"  # NaN -> null
    assert isinstance(vnm["n_observations"], int)
    assert len(doc["period_changes"]["rows"]) == len(ch)
    back_json = pd.DataFrame(doc["rows"])
    np.testing.assert_allclose(back_json["posterior_sigma"], df["posterior_sigma"], rtol=1e-12)
    assert "NaN" not in paths["json"].read_text()
    # a broken document fails the schema
    doc["rows"][0]["verdict"] = "definitely lying"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_write_refuses_a_foreign_table(tmp_path):
    with pytest.raises(SchemaError, match="missing columns"):
        write_discrepancies(pd.DataFrame({"region": ["X"]}), tmp_path)


# ---------------------------------------------------------------------------- honest uncertainty (issue 15/16)
def test_structural_transport_error_joins_the_uncertainty_in_quadrature():
    post = hand_posterior(xh=[1.3, 1.0], A=np.eye(2))
    rep = reported_table({"AAA": 10.0, "BBB": 5.0}, sigma={"AAA": 1.0, "BBB": 0.5})
    plain = row(compare_to_inventory(post, rep), "AAA")
    df = _compare(post, rep, transport_error=0.25, max_detectable_difference=1e9)
    r = row(df, "AAA")
    assert r["transport_error_sigma"] == pytest.approx(0.25 * 13.0)
    assert r["posterior_sigma"] == pytest.approx(math.hypot(plain["posterior_sigma"], 0.25 * 13.0))
    assert r["posterior_sigma_analytic"] == pytest.approx(plain["posterior_sigma"])
    assert r["compared_sigma"] == pytest.approx(math.hypot(r["posterior_sigma"], 1.0))
    assert r["z_score"] == pytest.approx((r["posterior_total"] - r["compared_value"]) / r["compared_sigma"])
    assert plain["verdict"] == "higher than reported" and r["verdict"] != "higher than reported"


def test_consistent_needs_the_power_to_see_a_difference():
    post = hand_posterior(xh=[1.05, 1.0], Sh=np.diag([0.04, 0.04]), A=np.eye(2))
    rep = reported_table({"AAA": 10.0, "BBB": 5.0}, sigma={"AAA": 1.0, "BBB": 0.5})
    # sigma_z = sqrt(2^2 + 1^2) = 2.24 -> detectable 4.47 Tg = 45 % of 10: consistent at 50 %, not at 40 %
    assert row(_compare(post, rep, transport_error=0.0), "AAA")["verdict"] == "consistent"
    r = row(_compare(post, rep, transport_error=0.0, max_detectable_difference=0.4), "AAA")
    assert r["verdict"] == "not constrained"
    assert r["detectable_difference"] == pytest.approx(2 * math.hypot(2.0, 1.0))
    assert "only a difference larger than 4.47 Tg/yr (45 % of the reported total" in r["reason"]


def _member(post: xr.Dataset, xh) -> xr.Dataset:
    return post.assign(x_posterior=("state", np.asarray(xh, float)))


def test_ensemble_totals_combine_members_by_the_law_of_total_variance():
    base = hand_posterior(xh=[1.2, 1.0], A=np.eye(2))
    members = [base, _member(base, [1.4, 1.0]), _member(base, [1.0, 1.0])]
    rep = reported_table({"AAA": 10.0, "BBB": 5.0}, sigma={"AAA": 1.0, "BBB": 0.5})
    r = row(compare_to_inventory(base, rep, ensemble=members), "AAA")
    est = np.array([12.0, 14.0, 10.0])
    assert r["posterior_total"] == pytest.approx(est.mean())
    assert r["ensemble_spread"] == pytest.approx(est.std(ddof=1)) and r["ensemble_members"] == 3
    assert r["ensemble_min"] == pytest.approx(10.0) and r["ensemble_max"] == pytest.approx(14.0)
    assert r["posterior_sigma"] == pytest.approx(math.sqrt(1.0 + est.var(ddof=1)))  # analytic 10 x 0.1
    # the ensemble file of the pipeline gives the same rows as the posteriors themselves
    from gosat_pipeline.ensemble import Member, ensemble_dataset
    from gosat_pipeline.transport import TransportSettings

    ds = ensemble_dataset(members, [Member(i, TransportSettings(), 8.0, 0.5) for i in range(3)])
    again = row(compare_to_inventory(base, rep, ensemble=ds), "AAA")
    assert again["posterior_total"] == pytest.approx(r["posterior_total"])
    assert again["posterior_sigma"] == pytest.approx(r["posterior_sigma"])


def test_members_that_disagree_make_the_verdict_transport_sensitive():
    base = hand_posterior(xh=[1.5, 1.0], Sh=np.diag([0.0025, 0.01]), A=np.eye(2))
    rep = reported_table({"AAA": 10.0, "BBB": 5.0}, sigma={"AAA": 0.5, "BBB": 0.5})
    # 15 and 16 against 10, each tested with the combined sigma: both flag AAA
    agree = [base, _member(base, [1.6, 1.0])]
    assert row(compare_to_inventory(base, rep, ensemble=agree), "AAA")["verdict"] == "higher than reported"
    # a third member at 12.5 would not: the answer depends on the transport model
    split = [base, _member(base, [1.6, 1.0]), _member(base, [1.25, 1.0])]
    r = row(compare_to_inventory(base, rep, ensemble=split), "AAA")
    assert r["verdict"] == "not constrained (transport-sensitive)"
    assert "depends on the transport model" in r["reason"] and r["z_min"] < 2 <= r["z_max"]


def test_a_region_partly_outside_the_domain_is_never_compared_whole():
    post = hand_posterior(regions=("AAA", "BBB", "CCC"), prior_tg=(10.0, 5.0, 2.0), xh=[2.0, 1.0, 1.0])
    post = post.assign_coords(
        state_domain_share_area=("state", [0.4, 1.0, 1.0]),
        state_domain_share_emission=("state", [0.3, 1.0, np.nan]),
        state_area_km2=("state", [1e5, 1e5, 1e4]),
        state_role=("state", ["requested", "requested", "other"]),
    )
    rep = reported_table({"AAA": 33.0, "BBB": 5.0, "CCC": 2.0})
    df = compare_to_inventory(post, rep, aggregates={"AB": ["AAA", "BBB"]})
    assert set(df["region"]) == {"AAA", "BBB", "AB"}  # CCC was not requested: no verdict
    r = row(df, "AAA")
    assert r["verdict"] == "partly outside the domain" and math.isnan(r["z_score"])
    assert r["domain_share"] == pytest.approx(0.3) and r["domain_share_area"] == pytest.approx(0.4)
    assert "40 % of its area and 30 % of its prior emissions" in r["reason"]
    assert r["reported_total"] == 33.0 and r["posterior_total"] == pytest.approx(20.0)  # in-domain estimate
    agg = row(df, "AB")  # an aggregate follows its members: area (0.4e5 + 1e5) / 2e5, emission 15 / 38.3
    assert agg["verdict"] == "partly outside the domain"
    assert agg["domain_share_area"] == pytest.approx(0.7)
    assert agg["domain_share_emission"] == pytest.approx(15.0 / (10.0 / 0.3 + 5.0))
    from gosat_pipeline.compare import domain_budget

    budget = domain_budget(post)
    assert list(budget["region"]) == ["AAA", "BBB", "CCC"] and list(budget["role"]) == [
        "requested",
        "requested",
        "other",
    ]


def test_chi_square_gates_and_inflation():
    post = hand_posterior(xh=[1.5, 1.0], A=np.eye(2))
    rep = reported_table({"AAA": 10.0, "BBB": 5.0}, sigma={"AAA": 0.5, "BBB": 0.5})
    plain = row(compare_to_inventory(post, rep), "AAA")
    assert plain["verdict"] == "higher than reported"
    # the observations that see AAA are fitted badly: the transport model cannot reproduce them
    bad = post.assign(total_chi2_obs=("total", [3.5, 0.9]))
    r = row(compare_to_inventory(bad, rep), "AAA")
    assert r["verdict"] == "not constrained" and "fits the observations that see it poorly" in r["reason"]
    assert r["chi2_obs"] == pytest.approx(3.5) and row(compare_to_inventory(bad, rep), "BBB")["chi2_obs"] == 0.9
    # the state moved 4 times further than its prior errors allow: analytic variances scaled by 4
    moved = post.assign(chi2_state_normalized=((), 4.0))
    r = row(compare_to_inventory(moved, rep), "AAA")
    assert r["posterior_sigma_analytic"] == pytest.approx(2.0 * plain["posterior_sigma_analytic"])
    calm = post.assign(chi2_state_normalized=((), 0.5))  # below 1: never deflated
    assert row(compare_to_inventory(calm, rep), "AAA")["posterior_sigma"] == pytest.approx(plain["posterior_sigma"])
