"""Checks before a run: every mistake a configuration can hold, found before any heavy stage.

``gosat-pipeline validate CONFIG`` and the start of ``gosat-pipeline run`` call
:func:`preflight`. It reports every problem at once, one precise line each (the config
key, what was found, how to fix it), and what the run should know before it starts: the
countries that lie only partly inside the domain, the regions and years without a
reported value, and the inputs that are synthetic (DESIGN.md 5.5; issue "verdicts that stay
true when the question changes").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gosat_pipeline.config import RunConfig
from gosat_pipeline.errors import GosatPipelineError
from gosat_pipeline.paths import expand_paths, has_glob

__all__ = ["PreflightReport", "preflight", "synthetic_mark"]

logger = logging.getLogger(__name__)


@dataclass
class PreflightReport:
    """What :func:`preflight` found.

    Attributes
    ----------
    problems : list of str
        Faults that stop the run (one line each, naming the config key).
    notices : list of str
        What the run will do that the user should know (partial countries, missing
        reported values, synthetic inputs).
    synthetic_inputs : list of dict
        ``{"path", "mark"}`` of every input that says it is synthetic.
    partial_regions : dict
        Requested region -> share of its area inside the domain, for the partial ones.
    """

    problems: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    synthetic_inputs: list[dict[str, str]] = field(default_factory=list)
    partial_regions: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def _glob(pattern: str) -> list[str]:
    return [str(p) for p in expand_paths(pattern) if has_glob(pattern) or p.exists()]


def _readable(path: Path, key: str, rep: PreflightReport) -> bool:
    if not path.exists():
        rep.problems.append(f"{key}: {path} does not exist; check the path (relative to the working directory)")
        return False
    if path.is_dir():
        return True
    if not os.access(path, os.R_OK):
        rep.problems.append(f"{key}: {path} is not readable (permissions)")
        return False
    if path.stat().st_size == 0:
        rep.problems.append(f"{key}: {path} is empty")
        return False
    return True


def synthetic_mark(path: str | os.PathLike[str]) -> str | None:
    """The global attribute that marks a file as synthetic, or None.

    netCDF/HDF5 files whose global ``synthetic`` attribute is true, or whose ``comment``,
    ``source``, ``title`` or ``Contact`` mention "synthetic"; CSV files with a ``notes``
    column that does.
    """
    p = Path(path)
    if p.suffix.lower() == ".csv":
        try:
            notes = pd.read_csv(p, usecols=lambda c: c == "notes", nrows=200)
        except (ValueError, OSError, pd.errors.ParserError):
            return None
        if "notes" in notes and notes["notes"].astype(str).str.contains("synthetic", case=False).any():
            return "notes: synthetic"
        return None
    try:
        import h5py

        with h5py.File(p, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
    except (OSError, ValueError):
        return None
    for k, v in attrs.items():
        text = v.decode(errors="replace") if isinstance(v, bytes) else str(v)
        if k == "synthetic" and text.strip().lower() in ("true", "1", "yes"):
            return "synthetic = true"
        if k in ("comment", "source", "title", "Contact") and "synthetic" in text.lower():
            return f"{k}: {text[:60]}"
    return None


def _check_inputs(cfg: RunConfig, rep: PreflightReport) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for i, gs in enumerate(cfg.gases):
        found: list[str] = []
        for k, pat in enumerate(gs.granules):
            hits = _glob(pat)
            if not hits:
                rep.problems.append(f"gases[{i}].granules[{k}]: {pat!r} matches no file")
            found += hits
        files[gs.gas] = sorted(dict.fromkeys(found))
        unreadable = [f for f in files[gs.gas][:2000] if not os.access(f, os.R_OK)]
        if unreadable:
            rep.problems.append(f"gases[{i}].granules: {len(unreadable)} file(s) not readable, e.g. {unreadable[0]}")
        _readable(Path(gs.prior.path), f"gases[{i}].prior.path", rep)
    for i, r in enumerate(cfg.reported):
        _readable(Path(r.path), f"reported[{i}].path", rep)
    for key, p in (("regions.boundaries", cfg.regions.boundaries), ("winds.path", cfg.winds.path)):
        if p is not None:
            _readable(Path(p), key, rep)
    _check_footprints(cfg, rep)
    return files


def _check_footprints(cfg: RunConfig, rep: PreflightReport) -> None:
    """External footprints (``transport.type: footprints``) exist and are readable."""
    if cfg.transport.type != "footprints" or cfg.transport.footprints is None:
        return
    from gosat_pipeline.errors import SchemaError
    from gosat_pipeline.transport import footprint_files

    try:  # a file, a folder (a STILT or IMI run) or a glob
        fp_files = footprint_files(cfg.transport.footprints, cfg.transport.footprints_format)
        unreadable = [f for f in fp_files if not os.access(f, os.R_OK)]
        if unreadable:
            rep.problems.append(
                f"transport.footprints: {len(unreadable)} of {len(fp_files)} file(s) not readable, e.g. {unreadable[0]}"
            )
    except SchemaError as exc:
        rep.problems.append(f"transport.footprints: {exc}")


def _check_formats(cfg: RunConfig, files: dict[str, list[str]], rep: PreflightReport) -> None:
    """The first granule of each gas must be recognised by a reader (the rest are checked by ingest)."""
    from gosat_pipeline.io import detect_format, list_formats

    for i, gs in enumerate(cfg.gases):
        if not files.get(gs.gas):
            continue
        first = files[gs.gas][0]
        if gs.format is not None:
            if gs.format not in list_formats():
                rep.problems.append(
                    f"gases[{i}].format: {gs.format!r} is not an installed reader; installed: {sorted(list_formats())}"
                )
            continue
        try:
            detect_format(first)
        except GosatPipelineError as exc:
            rep.problems.append(f"gases[{i}].granules: {first}: {exc}")


def _check_periods(cfg: RunConfig, rep: PreflightReport) -> list[str]:
    """The split fits the time bins; compare.change labels are periods of the run."""
    from gosat_pipeline.transport import periods

    start, end = pd.Timestamp(cfg.period.start), pd.Timestamp(cfg.period.end)
    if cfg.period.time_bin:
        bins = pd.date_range(start, end, freq=cfg.period.time_bin, inclusive="left")
        edges = [start, *[b for b in bins if b > start], end]
    else:
        edges = [start, end]
    s = pd.DatetimeIndex(edges[:-1]).values
    e = pd.DatetimeIndex(edges[1:]).values
    try:
        _, labels, _ = periods(s, e, cfg.period.split)
    except GosatPipelineError as exc:
        rep.problems.append(f"period.split: {exc}")
        return []
    ch = cfg.compare.change
    if ch is not None:
        for key in ("period_a", "period_b"):
            for label in str(getattr(ch, key)).split():
                if label not in labels:
                    rep.problems.append(
                        f"compare.change.{key}: {label!r} is not a period of this run; with "
                        f"period.split {cfg.period.split!r} the periods are {labels[:8]}"
                    )
    return labels


def _check_regions(cfg: RunConfig, rep: PreflightReport) -> list[str]:
    from gosat_pipeline.domain import requested_regions
    from gosat_pipeline.regions import domain_regions, load_boundaries

    try:
        bnd = load_boundaries(cfg.regions.boundaries)
    except GosatPipelineError as exc:
        rep.problems.append(f"regions.boundaries: {exc}")
        return []
    dom = domain_regions(bnd, cfg.domain.bbox)
    try:
        wanted = requested_regions(dom, cfg.regions.iso3, bnd)
    except GosatPipelineError as exc:
        rep.problems.append(str(exc))
        return []
    known = set(dom["region"])
    for name, members in (cfg.regions.groups or {}).items():
        bad = [m for m in members if m not in known]
        if bad:
            rep.problems.append(
                f"regions.groups.{name}: members {bad} have no area inside domain.bbox (or are unknown region codes)"
            )
    share = dom.set_index("region")["share_area"]
    partial = {c: float(share[c]) for c in wanted if float(share[c]) < cfg.compare.min_domain_share}
    rep.partial_regions = partial
    if partial:
        txt = ", ".join(f"{c} ({100 * v:.0f} % of its area)" for c, v in sorted(partial.items()))
        rep.notices.append(f"partly outside the domain (estimated, but not compared with national totals): {txt}")
    others = sorted(known - set(wanted))
    if others:
        rep.notices.append(
            f"{len(others)} other region(s) inside the domain are estimated too, so that their "
            f"emissions cannot alias into the requested ones: {', '.join(others)}"
        )
    return wanted


def _check_reported(cfg: RunConfig, wanted: list[str], rep: PreflightReport) -> None:
    from gosat_pipeline.inventory import read_reported_totals, reported_for

    years = range(cfg.period.start.year, (pd.Timestamp(cfg.period.end) - pd.Timedelta(1, "ns")).year + 1)
    for i, r in enumerate(cfg.reported):
        if not Path(r.path).is_file():
            continue
        try:
            table = read_reported_totals(r.path, **r.read_options([g.gas for g in cfg.gases]))
        except GosatPipelineError as exc:
            rep.problems.append(f"reported[{i}].path: {exc}")
            continue
        for gs in cfg.gases:
            for y in years:
                have = set(reported_for(table, gas=gs.gas, year=y)["area"].astype(str)) if len(table) else set()
                missing = [c for c in wanted if c not in have]
                if missing:
                    rep.notices.append(
                        f"reported[{i}] ({r.name}) has no {gs.gas} value for {y} for "
                        f"{', '.join(missing)}: they will get 'no reported value'"
                    )


def _check_synthetic(cfg: RunConfig, files: dict[str, list[str]], rep: PreflightReport) -> None:
    paths = [f for g in files.values() for f in g[:3]]
    paths += [str(g.prior.path) for g in cfg.gases] + [str(r.path) for r in cfg.reported]
    paths += [str(p) for p in (cfg.winds.path, cfg.regions.boundaries) if p is not None]
    for p in paths:
        if Path(p).is_file():
            mark = synthetic_mark(p)
            if mark:
                rep.synthetic_inputs.append({"path": str(p), "mark": mark})
    if rep.synthetic_inputs and not cfg.run.synthetic:
        rep.notices.append(
            f"{len(rep.synthetic_inputs)} input(s) are marked synthetic (e.g. "
            f"{rep.synthetic_inputs[0]['path']}): the run is treated as synthetic and its outputs "
            "carry the banner"
        )


def preflight(cfg: RunConfig, *, deep: bool = True) -> PreflightReport:
    """Check a configuration against its inputs before anything heavy runs.

    Parameters
    ----------
    cfg : RunConfig
        From :func:`gosat_pipeline.load_config` (paths resolved).
    deep : bool
        Also read the boundaries, the reported totals and the first granule's format
        (seconds); False checks only files and periods.

    Returns
    -------
    PreflightReport
    """
    rep = PreflightReport()
    files = _check_inputs(cfg, rep)
    _check_periods(cfg, rep)
    if deep:
        _check_formats(cfg, files, rep)
        wanted = _check_regions(cfg, rep)
        if wanted:
            _check_reported(cfg, wanted, rep)
        _check_synthetic(cfg, files, rep)
    for line in rep.problems:
        logger.error("preflight: %s", line)
    for line in rep.notices:
        logger.info("preflight: %s", line)
    return rep


def describe(rep: PreflightReport) -> list[str]:
    """Lines for the command line: problems first, then notices."""
    return [f"problem: {p}" for p in rep.problems] + [f"note: {n}" for n in rep.notices]


__all__ += ["describe"]
