"""Honest verdicts under transport error: a non-identical-twin OSSE over many noise seeds.

The truth is made by an atmosphere that is not the inversion's forward model
(``gosat_pipeline.testing.atmosphere.TruthAtmosphere``: semi-Lagrangian, finer, other
ventilation over land and sea, another boundary-layer wind, unresolved eddies; a curved,
synoptically varying background; prior pattern errors). Two discrepancies are planted
(one 0.5x, one >= 1.5x the reported total), everything else equals its reported total.
The whole pipeline (``gosat_pipeline.run`` on configs/demo.yaml's settings) inverts each
noise seed; the identical twin (truth from the inversion's own steady operator, inverted
with that operator and no ensemble) runs beside it.

Printed per experiment: wrong-sign verdicts, false flags (verdicts on countries whose truth
is their reported total), coverage (truth inside +-2 sigma of the combined uncertainty,
over the totals given a verdict and over every total), detections of the planted
discrepancies where the comparison tested them (consistent/higher/lower), and how often the
report says instead why it cannot tell (not constrained, transport-sensitive).

    python benchmarks/bench_osse.py             # 10 seeds (about 10 minutes on 2 cores)
    python benchmarks/bench_osse.py --quick     # 3 seeds
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PLANTED = ({"gas": "CH4", "region": "THA", "factor": 1.8}, {"gas": "CH4", "region": "MMR", "factor": 0.5})
FLAG = {"higher than reported": 1, "lower than reported": -1}
VERDICT_GIVEN = {"consistent", "higher than reported", "lower than reported", "not constrained (transport-sensitive)"}
#: verdicts that test the total against the reported one (a planted discrepancy is then found or missed)
TESTED = {"consistent", "higher than reported", "lower than reported"}


def _config(data: Path, out: Path, name: str, identical: bool) -> Path:
    """configs/demo.yaml on ``data``, CH4 only; the identical twin inverts with the steady operator."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg["run"].update(name=name, output_dir=str(out))
    cfg["gases"] = [g for g in cfg["gases"] if g["gas"] == "CH4"]
    for g in cfg["gases"]:
        g["granules"] = [str(data / "granules" / "CH4" / "*.nc")]
        g["prior"]["path"] = str(data / "prior_CH4.nc")
    cfg["reported"][0]["path"] = str(data / "reported_totals.csv")
    cfg["winds"]["path"] = str(data / "winds_era5.nc")
    cfg["report"] = {"enabled": False}
    cfg["cluster"] = {"type": "threads"}
    if identical:  # the inversion's own operator made the truth: no transport error to allow for
        cfg.setdefault("transport", {})["mode"] = "steady"
        cfg["ensemble"] = {"members": 0}
        cfg.setdefault("compare", {})["transport_error"] = 0.0
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _score(run_dir: Path, truth: dict[str, Any]) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "discrepancies.csv")
    df = df[(df["gas"] == "CH4") & (df["members"].fillna("") == "")].copy()
    true = truth["true_in_domain_tg_per_yr"]["CH4"]
    national = truth["true_tg_per_yr"]["CH4"]
    rep = truth["reported_tg_per_yr"]["CH4"]
    df["truth"] = [true.get(r, math.nan) for r in df["region"]]
    df["discrepancy"] = [
        0
        if abs(national.get(r, 0) - rep.get(r, 0)) < 1e-6 * max(rep.get(r, 1), 1e-9)
        else (1 if national.get(r, 0) > rep.get(r, 0) else -1)
        for r in df["region"]
    ]
    df["flag"] = df["verdict"].map(FLAG).fillna(0).astype(int)
    df["covered"] = (df["posterior_total"] - df["truth"]).abs() <= 2.0 * df["posterior_sigma"]
    return df[
        [
            "region",
            "verdict",
            "posterior_total",
            "posterior_sigma",
            "truth",
            "reported_total",
            "z_score",
            "discrepancy",
            "flag",
            "covered",
        ]
    ]


def _experiment(name: str, identical: bool, seeds: list[int], work: Path) -> dict[str, Any]:
    from gosat_pipeline import load_config, run
    from gosat_pipeline.testing.demo import build_demo_samples

    data = work / f"data_{name}"
    out = work / "runs"
    out.mkdir(parents=True, exist_ok=True)
    rows, times = [], []
    for seed in seeds:
        t0 = time.perf_counter()
        build_demo_samples(
            data,
            seed=2024,
            truth="identical" if identical else "independent",
            planted=PLANTED,
            noise_seed=seed,
            background={"curvature": 0.0, "synoptic": 0.0} if identical else None,
        )
        cfg = load_config(_config(data, out, name, identical))
        run(cfg)
        truth = json.loads((data / "truth.json").read_text())
        sc = _score(out / name, truth).assign(seed=seed)
        rows.append(sc)
        times.append(time.perf_counter() - t0)
        flagged = ", ".join(f"{r.region} {r.verdict}" for r in sc.itertuples() if r.flag) or "none"
        print(f"  {name} seed {seed}: {times[-1]:.0f} s; flagged: {flagged}", flush=True)
    allrows = pd.concat(rows, ignore_index=True)
    return {"name": name, "rows": allrows, "seconds": times}


def _summary(exp: dict[str, Any]) -> dict[str, str]:
    d = exp["rows"]
    null = d[d["discrepancy"] == 0]
    planted = d[d["discrepancy"] != 0]
    wrong = int(((d["flag"] != 0) & (d["flag"] == -d["discrepancy"])).sum())
    false = int((null["flag"] != 0).sum())
    given = d[d["verdict"].isin(VERDICT_GIVEN)]
    cov = int(given["covered"].sum())
    constrained = planted[planted["verdict"].isin(TESTED)]
    det = int((constrained["flag"] == constrained["discrepancy"]).sum())
    explained = int((~planted["verdict"].isin(TESTED)).sum())

    def pct(a: int, b: int) -> str:
        return f"{a}/{b} ({100 * a / b:.0f} %)" if b else "0/0"

    return {
        "experiment": exp["name"],
        "runs": str(d["seed"].nunique()),
        "wrong-sign verdicts": str(wrong),
        "false flags": pct(false, len(null)),
        "coverage (2 sigma), totals given a verdict": pct(cov, len(given)),
        "coverage (2 sigma), every total": pct(int(d["covered"].sum()), len(d)),
        "planted detected, where tested": pct(det, len(constrained)),
        "planted missed (consistent)": str(len(constrained) - det),
        "planted explained (not constrained)": pct(explained, len(planted)),
        "seconds per run": f"{pd.Series(exp['seconds']).median():.0f}",
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 seeds instead of 10")
    ap.add_argument("--seeds", type=int, default=None, help="number of noise seeds")
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = ap.parse_args(argv)
    n = args.seeds or (3 if args.quick else 10)
    seeds = list(range(1, n + 1))
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_osse_"))
    try:
        exps = [_experiment("non_identical_twin", False, seeds, work), _experiment("identical_twin", True, seeds, work)]
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    table = pd.DataFrame([_summary(e) for e in exps]).set_index("experiment").T
    print("\nPlanted: " + ", ".join(f"{p['region']} {p['gas']} x{p['factor']}" for p in PLANTED))
    print(table.to_string())
    for e in exps:
        d = e["rows"]
        print(f"\n{e['name']}: verdicts per country over {d['seed'].nunique()} seeds")
        print(d.groupby(["region", "verdict"]).size().unstack(fill_value=0).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
