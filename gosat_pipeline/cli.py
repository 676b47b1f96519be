"""The ``gosat-pipeline`` command line: a thin shell over :mod:`gosat_pipeline.pipeline`.

Only this module configures logging handlers and prints. A user error (any
:class:`~gosat_pipeline.errors.GosatPipelineError`) exits non-zero with one clear
line per problem; a traceback appears only with ``-v``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gosat_pipeline import __version__
from gosat_pipeline.errors import ConfigError, GosatPipelineError

__all__ = ["main", "build_parser", "Heartbeat", "osse_ensemble", "osse_tables"]

logger = logging.getLogger("gosat_pipeline.cli")

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3


def _verbosity(defaults: bool) -> argparse.ArgumentParser:
    """``-v``/``-q``, accepted before and after the subcommand.

    On the subcommands the defaults are suppressed, so that an option given only before
    the subcommand is not reset by the subcommand's own parser.
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if defaults else argparse.SUPPRESS,
        help="more output: progress details, then debug logs with -vv; tracebacks on errors",
    )
    g.add_argument(
        "-q", "--quiet", action="store_true", default=False if defaults else argparse.SUPPRESS, help="print errors only"
    )
    return p


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="YAML run configuration (see configs/template.yaml)")
    p.add_argument("--force", action="store_true", help="recompute every stage, even if up to date")
    p.add_argument("--name", help="override run.name (the folder under run.output_dir)")
    p.add_argument("--output-dir", type=Path, help="override run.output_dir")
    p.add_argument(
        "--cluster",
        choices=["local", "threads", "synchronous"],
        help="override cluster.type (use --scheduler for an existing dask.distributed scheduler)",
    )
    p.add_argument("--scheduler", metavar="ADDRESS", help="connect to an existing scheduler, e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, metavar="N", help="override cluster.n_workers of a local cluster")
    p.add_argument("--strict", action="store_true", help="fail on the first bad granule instead of skipping it")
    p.add_argument(
        "--progress-every",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="while a stage runs, print a progress line this often (default 15; 0: never)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="gosat-pipeline",
        description="GOSAT-style XCO2/XCH4 granules -> emission estimates checked against reported inventories.",
        parents=[_verbosity(True)],
    )
    parser.add_argument(
        "--version", action="version", version=f"gosat-pipeline {__version__}", help="print the version and exit"
    )
    common = [_verbosity(False)]
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run every stage (resuming completed ones)",
        parents=common,
        description="Run every stage of a configuration, resuming the stages already done.",
    )
    _add_run_options(p)
    for stage, text in (
        ("ingest", "read and screen the granules"),
        ("grid", "ingest, then grid to L3"),
        ("invert", "... up to the inversion (includes inventories, regions and winds)"),
        ("compare", "... up to the comparison with reported totals"),
    ):
        p = sub.add_parser(stage, help=f"run stages up to '{stage}': {text}", parents=common)
        _add_run_options(p)

    p = sub.add_parser(
        "report", help="rebuild report.html (and optionally report.pdf) from a run directory", parents=common
    )
    p.add_argument("run_dir", type=Path, help="the run directory (outputs/<run.name>)")
    p.add_argument("--title", help="page title (default: the run's report.title, else one naming the gases)")
    p.add_argument(
        "--pdf",
        action="store_true",
        help="also print the report to report.pdf with a headless Chromium (needs the [pdf] extra)",
    )
    p.add_argument("--browser", metavar="EXE", help="Chromium or Chrome executable used by --pdf (default: found)")

    p = sub.add_parser("inspect", help="describe an L2 granule: format, version, gas, counts, ranges", parents=common)
    p.add_argument("file", type=Path, help="the granule file (netCDF or HDF5)")
    p.add_argument("--format", help="reader name (default: auto-detect; see gosat-pipeline formats)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("validate", help="check a configuration and its inputs without running anything", parents=common)
    p.add_argument("config", type=Path, help="the YAML run configuration")
    p.add_argument(
        "--config-only",
        action="store_true",
        help="check the file's keys and values only, not the files, regions and periods it names",
    )

    sub.add_parser("formats", help="list the installed granule readers", parents=common)

    _add_fetch_parser(sub, common)

    p = sub.add_parser("synth", help="make synthetic data: granules, an OSSE, or the bundled samples", parents=common)
    ss = p.add_subparsers(dest="synth_command", required=True, metavar="KIND")
    q = ss.add_parser("granules", help="write synthetic granules in a real product layout", parents=common)
    q.add_argument("--format", required=True, help="reader name, e.g. cci_ocpr, acos_lite (gosat-pipeline formats)")
    q.add_argument("--out", type=Path, required=True, help="folder to write the granules to (created)")
    q.add_argument("--gas", default=None, help="CH4 or CO2 (default: the product's own gas)")
    q.add_argument("--n-files", type=int, default=3, help="number of granules, one per day (default 3)")
    q.add_argument("--n-per-file", type=int, default=500, help="soundings per granule (default 500)")
    q.add_argument("--seed", type=int, default=0, help="random seed; file i uses seed + i (default 0)")
    q = ss.add_parser(
        "osse", help="run an observing-system simulation experiment and report what is resolved", parents=common
    )
    q.add_argument("--seed", type=int, default=0, help="random seed of the truth, sampling and noise (default 0)")
    q.add_argument("--gas", default="CH4", choices=["CH4", "CO2"], help="gas of the experiment (default CH4)")
    q.add_argument(
        "--region",
        action="append",
        default=None,
        metavar="CODE=W,S,E,N",
        help="a box region to resolve, in degrees (repeat for several; default: 16 boxes)",
    )
    q.add_argument(
        "--truth",
        choices=["independent", "identical"],
        default="independent",
        help="independent: the truth from an atmosphere that is not the inversion's transport model "
        "(monsoon winds read from an ERA5-like file, daily super-observations, an ensemble of "
        "inversions; default); identical: from the inversion's own steady operator (a teaching twin)",
    )
    q.add_argument(
        "--members",
        type=int,
        default=None,
        metavar="N",
        help="perturbed inversions of the ensemble with --truth independent (default: the config's "
        "ensemble.members, 8; 0 for none)",
    )
    q.add_argument("--months", type=int, default=3, metavar="N", help="length of the experiment (default 3)")
    q.add_argument(
        "--start",
        default="2020-01-01",
        metavar="DATE",
        help="first day of the experiment (default 2020-01-01, the north-east monsoon)",
    )
    q.add_argument("--out", type=Path, default=None, help="folder for the per-element table (osse_elements.csv)")
    q.add_argument("--json", action="store_true", help="print the full summary as JSON instead of tables")
    q = ss.add_parser("samples", help="(re)build the bundled demonstration inputs (make data-samples)", parents=common)
    q.add_argument("--out", type=Path, default=Path("data_samples"), help="folder (default data_samples)")
    q.add_argument("--seed", type=int, default=2024, help="random seed (default 2024, the documented samples)")
    q.add_argument(
        "--truth",
        choices=["independent", "identical"],
        default="independent",
        help="independent: soundings from an atmosphere that is not the inversion's transport model "
        "(default); identical: from the inversion's own steady operator (a teaching twin)",
    )
    return parser


def _add_fetch_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch",
        help="download what a run needs (or one source) into a local cache",
        parents=parents,
        description="gosat-pipeline fetch CONFIG | fetch SOURCE --period START/END [--bbox W,S,E,N] "
        "--out DIR.  Credentials come from ~/.netrc or environment variables only.",
    )
    p.add_argument("target", nargs="?", help="a run configuration (its fetch: section) or a source name (--list)")
    p.add_argument("--list", action="store_true", help="list the sources and their options")
    p.add_argument("--plan", action="store_true", help="print and write the file list; download nothing")
    p.add_argument(
        "--plan-file",
        type=Path,
        help="where --plan writes the list (default <cache>/fetch-plan.tsv, plus the same name with .json)",
    )
    p.add_argument(
        "--from-plan",
        type=Path,
        metavar="PLAN_JSON",
        help="fetch (or check files copied in for) a plan written by --plan, without listing the archives",
    )
    p.add_argument("--period", help="START/END dates, UTC, END exclusive (source mode), e.g. 2020-01-01/2020-02-01")
    p.add_argument("--bbox", help="W,S,E,N degrees (source mode; default global)")
    p.add_argument("--out", type=Path, help="cache folder (default: fetch.cache_dir of the config, or data_cache)")
    p.add_argument("--verify", action="store_true", help="re-check every cached file, not only changed ones")
    p.add_argument("--workers", type=int, help="parallel downloads (default: fetch.workers or 4)")
    p.add_argument("--retries", type=int, help="retries of a failed transfer (default: fetch.retries or 4)")
    for key in ("gas", "product", "version", "year", "url", "base_url", "record", "file_pattern", "stream"):
        p.add_argument(
            f"--{key.replace('_', '-')}",
            dest=key,
            type=int if key == "year" else str,
            help=f"source option {key} (source mode)",
        )
    p.add_argument(
        "--no-overpass-filter",
        dest="overpass_filter",
        action="store_false",
        default=True,
        help="tropomi_*: keep every orbit of the period, not only those that can see the box",
    )


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    from gosat_pipeline.fetch.credentials import RedactingFilter

    handler.addFilter(RedactingFilter())  # no credential ever reaches the log
    root = logging.getLogger("gosat_pipeline")
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not verbose:
        import warnings

        logging.captureWarnings(True)
        warnings.simplefilter("default")


def _say(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def _load(args: argparse.Namespace) -> Any:
    from gosat_pipeline.config import load_config

    cfg = load_config(args.config)
    updates: dict[str, Any] = {}
    run_upd: dict[str, Any] = {}
    if getattr(args, "name", None):
        run_upd["name"] = args.name
    if getattr(args, "output_dir", None):
        run_upd["output_dir"] = args.output_dir.resolve()
    if getattr(args, "strict", False):
        run_upd["strict"] = True
    if run_upd:
        updates["run"] = cfg.run.model_copy(update=run_upd)
    cl: dict[str, Any] = {}
    if getattr(args, "scheduler", None):
        cl.update(type="address", address=args.scheduler)
    elif getattr(args, "cluster", None):
        cl["type"] = args.cluster
    if getattr(args, "workers", None):
        cl["n_workers"] = args.workers
    if cl:
        updates["cluster"] = cfg.cluster.model_copy(update=cl)
    return cfg.model_copy(update=updates) if updates else cfg


class Heartbeat:
    """Progress lines for the CLI: every stage event, and "still running" lines during long stages.

    Used as the ``progress`` callback of :func:`gosat_pipeline.pipeline.run`: it prints
    each stage event and remembers which stage runs; :meth:`tick` (called every second
    by a background thread) prints "<stage>: still running after N s" every ``every``
    seconds, with the task counts of the dask.distributed scheduler when one runs.
    The pipeline and its stages are not touched: this only watches.

    Parameters
    ----------
    say : callable
        Prints one line.
    every : float
        Seconds between two "still running" lines of one stage (<= 0: never).
    clock : callable
        Monotonic seconds (tests pass a fake one).
    tasks : callable
        Returns a short description of the scheduler's tasks, or "".
    """

    def __init__(self, say: Any, every: float, clock: Any = time.monotonic, tasks: Any = None) -> None:
        self.say, self.every, self.clock = say, float(every), clock
        self.tasks = tasks if tasks is not None else _dask_tasks
        self.stage: str | None = None
        self.t0 = self.next = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, msg: str) -> None:
        self.say(f"[gosat-pipeline] {msg}")
        with self._lock:
            if msg.endswith(": running"):
                self.stage = msg[: -len(": running")]
                self.t0 = self.clock()
                self.next = self.t0 + self.every
            else:
                self.stage = None

    def tick(self) -> str | None:
        """Print (and return) a "still running" line when one is due, else None."""
        with self._lock:
            if self.stage is None or self.every <= 0 or self.clock() < self.next:
                return None
            stage, elapsed = self.stage, self.clock() - self.t0
            self.next += self.every * max(1, math.floor((self.clock() - self.next) / self.every) + 1)
        line = f"[gosat-pipeline] {stage}: still running after {elapsed:.0f} s{self.tasks()}"
        self.say(line)
        return line

    def __enter__(self) -> Heartbeat:
        if self.every > 0:
            self._thread = threading.Thread(target=self._loop, name="gosat-pipeline-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(min(1.0, self.every)):
            self.tick()


def _dask_tasks() -> str:
    """ " (dask: 2 tasks running, 40 waiting)" from the default distributed client; "" when idle or absent."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return ""

    def count(dask_scheduler: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for ts in dask_scheduler.tasks.values():
            out[ts.state] = out.get(ts.state, 0) + 1
        return out

    try:
        states = client.run_on_scheduler(count)
    except Exception:  # noqa: BLE001 - progress is best effort; never disturb the run
        return ""
    running = states.get("processing", 0)
    waiting = sum(states.get(k, 0) for k in ("waiting", "queued", "no-worker"))
    if not running and not waiting:
        return ""
    return f" (dask: {running} task{'s' if running != 1 else ''} running, {waiting} waiting)"


def _cmd_run(args: argparse.Namespace) -> int:
    from gosat_pipeline.pipeline import run

    cfg = _load(args)
    until = None if args.command == "run" else args.command
    bar = None
    if not args.quiet:
        from dask.diagnostics import ProgressBar

        bar = ProgressBar(minimum=2.0, out=sys.stderr)
        bar.register()
    beat = Heartbeat(lambda m: _say(args, m), 0.0 if args.quiet else args.progress_every)
    try:
        with beat:
            res = run(cfg, force=args.force, until=until, progress=beat, config_path=args.config)
    finally:
        if bar is not None:
            bar.unregister()
    skipped = res.manifest.get("skipped_inputs", [])
    if skipped:
        _say(args, f"{len(skipped)} input(s) skipped; reasons in {res.run_dir / 'manifest.json'}")
    _say(args, f"run directory: {res.run_dir}")
    if (res.run_dir / "report.html").is_file() and until is None:
        _say(args, f"report: {res.report}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from gosat_pipeline.regions import default_boundaries_path
    from gosat_pipeline.report import write_report

    if not args.run_dir.is_dir():
        raise ConfigError(f"run directory not found: {args.run_dir}")
    path = write_report(args.run_dir, title=args.title, outlines=default_boundaries_path())
    _say(args, f"report: {path}")
    if args.pdf:
        from gosat_pipeline.report.pdf import write_pdf

        _say(args, "printing the report to PDF with a headless browser ...")
        _say(args, f"pdf: {write_pdf(args.run_dir, browser=args.browser)}")
    return 0


def _inspect_error(args: argparse.Namespace, exc: GosatPipelineError) -> GosatPipelineError:
    """The library's error, worded for the command line (``--format NAME``, the installed formats)."""
    from gosat_pipeline.errors import GranuleError, UnknownFormatError
    from gosat_pipeline.io import detect_format, list_formats
    from gosat_pipeline.io._registry import get_reader

    installed = ", ".join(list_formats())
    if isinstance(exc, UnknownFormatError):
        return UnknownFormatError(
            exc.path,
            f"no reader recognised {args.file.name!r} by name or content; use "
            f"--format NAME with one of the installed formats: {installed} "
            "(gosat-pipeline formats describes them)",
        )
    if not isinstance(exc, GranuleError):
        return exc
    try:
        detected = detect_format(args.file)
    except GosatPipelineError:  # the file cannot even be opened: the library's reason says why
        return exc
    if args.format is None:
        how = "its name" if get_reader(detected).guess_can_open(args.file) else "its content"
        return GranuleError(exc.path, f"{exc.reason} (read as {detected}, recognised by {how})")
    if detected != args.format:
        return GranuleError(
            exc.path,
            f"{exc.reason} (read as --format {args.format}; the file looks like {detected}: use --format {detected})",
        )
    return GranuleError(exc.path, f"{exc.reason} (read as --format {args.format})")


def _inspect_text(info: dict[str, Any]) -> str:
    """Human-readable ``inspect`` output: one fact a line."""
    u = info["units"]

    def stats(d: dict[str, float] | None) -> str:
        return "none" if not d else f"min {d['min']:g}, median {d['median']:g}, max {d['max']:g} {u}"

    def span(r: list[Any] | None, unit: str = "") -> str:
        return "none" if not r else f"{r[0]} to {r[1]}{unit}"

    t = span(info["time_range"]) + (f" (from {info['time_source']})" if info.get("time_source") else "")
    rows = [
        ("file", f"{info['path']} ({info['size_bytes']} bytes)"),
        ("reader", f"{info['format']}: {info['description']}"),
        ("product", f"{info['product']}, version {info['product_version']}"),
        ("gas", f"{info['gas']} ({u})"),
        ("soundings", f"{info['n_soundings']} in the file, {info['n_good']} pass the product screen"),
        ("product screen", info["screen"]),
        ("levels", f"{info['n_levels']}" + (f", {info['level_order']}" if info.get("level_order") else "")),
        ("time (UTC)", t),
        ("latitude", span(info["latitude_range"], " deg")),
        ("longitude", span(info["longitude_range"], " deg")),
        ("xgas (passing)", stats(info["xgas_good"])),
        ("uncertainty", stats(info["xgas_uncertainty_good"])),
        ("a priori xgas", stats(info["xgas_apriori_good"])),
    ]
    if info.get("xgas_uncertainty_components"):
        rows.append(("uncertainty from", info["xgas_uncertainty_components"]))
    if info.get("vertical_grid"):
        rows.append(("vertical grid", info["vertical_grid"]))
    left = info.get("components_left_out") or []
    rows.append(("left out", "nothing" if not left else left[0]))
    rows += [("", item) for item in left[1:]]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from gosat_pipeline.io import inspect_granule, list_formats

    installed = list_formats()
    if args.format is not None and args.format not in installed:
        raise GosatPipelineError(
            f"--format {args.format!r} is not an installed format; use --format NAME with one "
            f"of: {', '.join(installed)} (gosat-pipeline formats describes them)"
        )
    try:
        info = inspect_granule(args.file, format=args.format)
    except GosatPipelineError as exc:
        raise _inspect_error(args, exc) from None
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(_inspect_text(info))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from gosat_pipeline.preflight import preflight

    cfg = _load(args)
    if args.config_only:
        print(
            f"{args.config}: valid ({len(cfg.gases)} gas(es): {', '.join(g.gas for g in cfg.gases)}; "
            f"run directory {cfg.run_dir}); inputs not checked (--config-only)"
        )
        return 0
    rep = preflight(cfg)
    for line in rep.problems:
        print(f"{args.config}: problem: {line}", file=sys.stderr)
    if rep.problems:
        print(f"{args.config}: {len(rep.problems)} problem(s); nothing was run", file=sys.stderr)
        return 2
    print(
        f"{args.config}: valid ({len(cfg.gases)} gas(es): {', '.join(g.gas for g in cfg.gases)}; "
        f"run directory {cfg.run_dir})"
    )
    for line in rep.notices:
        print(f"  note: {line}")
    return 0


def _cmd_formats(args: argparse.Namespace) -> int:
    from gosat_pipeline.io import list_formats

    for name, desc in list_formats().items():
        print(f"{name:<20} {desc}")
    return 0


def _regions_option(values: list[str] | None) -> dict[str, tuple[float, float, float, float]] | None:
    """``--region CODE=W,S,E,N`` options as {code: box}; None when none was given."""
    if not values:
        return None
    out: dict[str, tuple[float, float, float, float]] = {}
    for text in values:
        code, _, box = text.partition("=")
        try:
            w, s, e, n = (float(x) for x in box.split(","))
        except ValueError:
            raise ConfigError(
                f"--region {text!r}: expected CODE=WEST,SOUTH,EAST,NORTH in degrees, "
                "e.g. --region THA=97.5,5.5,105.5,20.5"
            ) from None
        if not code.strip() or not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise ConfigError(
                f"--region {text!r}: needs a code and west < east, south < north within [-180, 180] x [-90, 90]"
            )
        for other, (w2, s2, e2, n2) in out.items():
            if w < e2 and w2 < e and s < n2 and s2 < n:
                raise ConfigError(
                    f"--region {code.strip()} overlaps --region {other}: each cell belongs to one "
                    "region, so the boxes must not overlap"
                )
        out[code.strip()] = (w, s, e, n)
    return out


def _decimals(sigma: float) -> int:
    """Decimals that show sigma to its second significant digit."""
    return max(0, 1 - math.floor(math.log10(sigma))) if math.isfinite(sigma) and sigma > 0 else 3


def _pm(value: float, sigma: float) -> str:
    """value ± sigma, both to the decimals of sigma's second significant digit."""
    if not (math.isfinite(value) and math.isfinite(sigma) and sigma > 0):
        return f"{value:.3g}"
    d = _decimals(sigma)
    return f"{value:.{d}f} \u00b1 {sigma:.{d}f}"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def osse_tables(summary: dict[str, Any]) -> str:
    """A readable summary of :func:`gosat_pipeline.testing.run_osse`: what the observing system resolves.

    Parameters
    ----------
    summary : dict
        The return value of ``run_osse`` (``table`` may be absent).

    Returns
    -------
    str
        Header lines (gas, observations, DOFS, chi-square, constrained elements), then one
        table row per regional total in Tg <gas>/yr. The identical twin: truth, prior,
        estimate ± 1 sigma, error reduction, whether the truth is within 2 sigma, and the
        mass-balance cross-check. The independent truth: truth, prior, estimate ± 1
        combined sigma (analytic, ensemble spread and structural transport error), the
        analytic sigma and the ensemble spread, error reduction, whether the region is
        constrained and whether its truth is within 2 combined sigma, then the coverage
        over the constrained regions.
    """
    if summary.get("truth_model") == "independent":
        return _osse_independent_tables(summary)
    gas = str(summary.get("gas", ""))
    unit = f"Tg {gas}/yr" if gas else "Tg/yr"
    n_el, n_c = summary.get("n_elements"), summary.get("n_constrained")
    frac = summary.get("fraction_within_2sigma")
    lines = [
        f"OSSE (synthetic truth, seed {summary.get('seed')}): {gas}, {summary.get('n_observations')} observations, "
        f"{n_el} state elements, inversion mode {summary.get('mode')}, status {summary.get('status')} (0 = ok)",
        f"degrees of freedom for signal: {summary.get('dofs', float('nan')):.1f} of {n_el} elements",
        f"constrained elements (error reduction or averaging-kernel diagonal >= 0.5): {n_c}; truth within 2 sigma: "
        f"{summary.get('n_constrained_within_2sigma')} of {n_c}"
        + (f" ({100 * frac:.0f} %)" if isinstance(frac, float) and math.isfinite(frac) else ""),
        f"chi-square per observation {summary.get('chi2_obs', float('nan')):.2f} (about 1 when the assumed errors "
        f"are right); per state element {summary.get('chi2_state', float('nan')):.2f}",
    ]
    totals = summary.get("regions_total") or []
    periods = list(dict.fromkeys(str(t.get("period")) for t in totals))
    header = (
        ["region"]
        + (["period"] if len(periods) > 1 else [])
        + [
            f"truth ({unit})",
            f"prior ({unit})",
            f"estimate \u00b1 1 sigma ({unit})",
            "error reduction",
            "truth within 2 sigma",
            f"mass balance ({unit})",
        ]
    )
    rows = []
    for t in totals:
        post, sig, truth = (float(t.get(k, math.nan)) for k in ("posterior", "posterior_sigma", "truth"))
        within = "yes" if abs(post - truth) <= 2 * sig else "no"
        mb = float(t.get("mass_balance", math.nan))
        rows.append(
            [str(t.get("region"))]
            + ([str(t.get("period"))] if len(periods) > 1 else [])
            + [
                f"{truth:.3g}",
                f"{float(t.get('prior', math.nan)):.3g}",
                _pm(post, sig),
                f"{100 * float(t.get('error_reduction', math.nan)):.0f} %",
                within,
                f"{mb:.3g}" if math.isfinite(mb) else "n/a",
            ]
        )
    right = set(range(1 + (len(periods) > 1), len(header) - 2)) | {len(header) - 1}
    when = f", period {periods[0]}" if len(periods) == 1 else ""
    lines += ["", f"regional totals{when}:", *_table(header, rows, right)]
    if summary.get("table_csv"):
        lines += ["", f"per-element table: {summary['table_csv']}"]
    return "\n".join(lines)


def _pct(a: int, b: int) -> str:
    return f"{a} of {b} ({100 * a / b:.0f} %)"


def _osse_independent_tables(summary: dict[str, Any]) -> str:
    """:func:`osse_tables` for a non-identical twin: combined uncertainty and coverage."""
    gas = str(summary.get("gas", ""))
    unit = f"Tg {gas}/yr" if gas else "Tg/yr"
    totals = summary.get("regions_total") or []
    m = int(summary.get("members", 1))
    f_t = float(summary.get("transport_error", 0.0))
    rc = [t for t in totals if t.get("constrained")]
    n_in = sum(bool(t.get("within_2sigma")) for t in rc)
    n_an = sum(bool(t.get("within_2sigma_analytic")) for t in rc)
    lines = [
        f"OSSE (independent truth, seed {summary.get('seed')}): {gas}, {summary.get('n_observations')} daily "
        f"super-observations, {summary.get('n_elements')} state elements, status {summary.get('status')} (0 = ok)",
        "truth: a semi-Lagrangian atmosphere on its own grid with 6-hourly monsoon winds, unresolved eddies, other "
        "ventilation over land and sea, a curved and synoptically varying background, prior pattern errors",
        f"inversion: {summary.get('transport_operator')}; {m} inversion(s) "
        f"({'the configured one and ' + str(m - 1) + ' perturbed' if m > 1 else 'no ensemble'}), structural "
        f"transport error {100 * f_t:.0f} %",
        f"degrees of freedom for signal: {summary.get('dofs', float('nan')):.1f}; chi-square per observation "
        f"{summary.get('chi2_obs', float('nan')):.2f}, per state element {summary.get('chi2_state', float('nan')):.2f}",
    ]
    periods = list(dict.fromkeys(str(t.get("period")) for t in totals))
    multi = len(periods) > 1
    header = (
        ["region"]
        + (["period"] if multi else [])
        + [
            f"truth ({unit})",
            f"prior ({unit})",
            f"estimate \u00b1 combined sigma ({unit})",
            "analytic sigma",
            "ensemble spread",
            "error reduction (analytic)",
            "constrained",
            "truth within 2 sigma",
        ]
    )
    rows = []
    for t in totals:
        post, sig = float(t.get("posterior", math.nan)), float(t.get("posterior_sigma", math.nan))
        d = _decimals(sig)
        rows.append(
            [str(t.get("region"))]
            + ([str(t.get("period"))] if multi else [])
            + [
                f"{float(t.get('truth', math.nan)):.3g}",
                f"{float(t.get('prior', math.nan)):.3g}",
                _pm(post, sig),
                f"{float(t.get('analytic_sigma', math.nan)):.{d}f}",
                f"{float(t.get('ensemble_spread', math.nan)):.{d}f}",
                f"{100 * float(t.get('error_reduction', math.nan)):.0f} %",
                "yes" if t.get("constrained") else "no",
                "yes" if t.get("within_2sigma") else "no",
            ]
        )
    right = set(range(1 + multi, len(header) - 2))
    gate = f"analytic error reduction >= {100 * float(summary.get('constrained_threshold', 0.5)):.0f} %"
    if rc:
        cover = (
            f"coverage: the truth is within 2 combined sigma for {_pct(n_in, len(rc))} of the constrained "
            f"regions ({gate}); within 2 analytic sigma alone for {_pct(n_an, len(rc))}"
        )
    else:
        cover = f"coverage: no region is constrained ({gate}), so the uncertainty is not tested; try more --months"
    lines += [
        "",
        "regional totals" + (f", period {periods[0]}" if not multi else "") + ":",
        *_table(header, rows, right),
        "",
        cover,
    ]
    if summary.get("table_csv"):
        lines += ["", f"per-element table: {summary['table_csv']}"]
    return "\n".join(lines)


def osse_ensemble(case: dict[str, Any], members: int | None = None, *, seed: int | None = None) -> list[Any]:
    """The perturbed inversions of an OSSE case, as a run's ensemble would make them.

    Parameters
    ----------
    case : dict
        From :func:`gosat_pipeline.testing.make_osse_case`.
    members : int, optional
        Perturbed members (default: the configuration's ``ensemble.members``).
    seed : int, optional
        Seed of the Latin hypercube (default: the configuration's ``ensemble.seed``).

    Returns
    -------
    list of xarray.Dataset
        The members' posteriors (member 0, the configured inversion, is not among them:
        :func:`gosat_pipeline.testing.run_osse` runs it), from
        :func:`gosat_pipeline.ensemble.design_members` over the configuration's default
        ranges and :func:`gosat_pipeline.ensemble.invert_ensemble`.
    """
    from gosat_pipeline.config import EnsembleSection
    from gosat_pipeline.ensemble import design_members, invert_ensemble
    from gosat_pipeline.testing import osse_inversion_inputs
    from gosat_pipeline.transport import DEFAULT_SIGMA_MODEL

    ens = EnsembleSection()
    n = ens.members if members is None else int(members)
    if n <= 0:
        return []
    inp = osse_inversion_inputs(case)
    design = design_members(
        inp["settings"],
        sigma_model=inp["sigma_model"],
        prior_error=inp["prior_error"],
        members=n,
        ranges=ens.ranges(),
        seed=ens.seed if seed is None else seed,
        default_sigma_model=DEFAULT_SIGMA_MODEL[case["gas"]],
    )
    return invert_ensemble(
        inp["obs"], inp["emissions"], design[1:], winds=inp["winds"], jacobian_kwargs=inp["jacobian_kwargs"]
    )


def _synth_osse(args: argparse.Namespace) -> int:
    import pandas as pd

    from gosat_pipeline.config import CompareSection, EnsembleSection
    from gosat_pipeline.grids import GridSpec
    from gosat_pipeline.testing import make_osse_case, run_osse

    boxes = _regions_option(args.region)
    if args.members is not None and args.members < 0:
        raise ConfigError(f"--members must be >= 0; got {args.members}")
    if args.months < 1:
        raise ConfigError(f"--months must be >= 1; got {args.months}")
    try:
        start = pd.Timestamp(args.start)
    except ValueError as exc:
        raise ConfigError(f"--start {args.start!r} is not a date (e.g. 2020-04-01): {exc}") from exc
    kw: dict[str, Any] = {
        "seed": args.seed,
        "gas": args.gas,
        "truth": args.truth,
        "n_months": args.months,
        "start": start.strftime("%Y-%m-%d"),
    }
    if boxes:
        w = min(b[0] for b in boxes.values()) - 3
        s_ = min(b[1] for b in boxes.values()) - 3
        e = max(b[2] for b in boxes.values()) + 3
        n = max(b[3] for b in boxes.values()) + 3
        kw.update(
            regions=boxes, grid=GridSpec.from_resolution(1.0, (max(w, -180), max(s_, -90), min(e, 180), min(n, 90)))
        )
    if args.truth == "independent":
        _say(args, "building the independent truth (monsoon winds, semi-Lagrangian atmosphere) ...")
    case = make_osse_case(**kw)
    if args.truth == "independent":
        members = EnsembleSection().members if args.members is None else args.members
        _say(
            args,
            f"inverting with the time-resolved operator: the configured inversion and {members} perturbed "
            "member(s) ...",
        )
        summary = run_osse(
            case, ensemble=osse_ensemble(case, members), transport_error=CompareSection().transport_error
        )
    else:
        summary = run_osse(case)
    table = summary.pop("table", None)
    if args.out is not None and table is not None:
        from gosat_pipeline.outputs import atomic_write_text

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(table.to_csv(index=False), args.out / "osse_elements.csv")
        summary["table_csv"] = str(args.out / "osse_elements.csv")
    print(json.dumps(summary, indent=2, default=str) if args.json else osse_tables(summary))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    if args.synth_command == "granules":
        from gosat_pipeline.testing import make_granule_files

        paths = make_granule_files(
            args.out, args.format, n_files=args.n_files, n_per_file=args.n_per_file, gas=args.gas, seed=args.seed
        )
        gas = (args.gas or "").upper()
        if not gas and paths:
            from gosat_pipeline.io import open_granule

            with open_granule(paths[0], format=args.format) as first:
                gas = str(first.attrs.get("gas", ""))
        _say(
            args,
            f"wrote {len(paths)} synthetic {gas} granule(s) in the {args.format} layout to {args.out} "
            f"({args.n_per_file} soundings each, about 20 % of them flagged bad to exercise the quality "
            f"screen; one file per day from 2020-01-01; seeds {args.seed}..{args.seed + len(paths) - 1}):",
        )
        for p in paths:
            print(p)
        return 0
    if args.synth_command == "osse":
        return _synth_osse(args)
    from gosat_pipeline.testing.demo import build_demo_samples

    written = build_demo_samples(args.out, seed=args.seed, truth=args.truth)
    logging.getLogger(__name__).info("wrote %s", ", ".join(str(p) for p in written))
    _say(args, f"wrote {len(written)} demonstration files to {args.out} (described in data_samples/README.md)")
    return 0


class _FetchBar:
    """The fetch progress bar on stderr: files done, bytes, rate and time left (tqdm)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.n_files = 0
        self.done = 0

    def start(self, n_files: int, total_bytes: int) -> None:
        self.n_files = n_files
        if self.quiet:
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=total_bytes or None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            desc=f"0/{n_files} files",
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def update(self, nbytes: int) -> None:
        if self.bar is not None:
            if self.bar.total is not None and self.bar.n + nbytes > self.bar.total:
                self.bar.total = self.bar.n + nbytes
            self.bar.update(nbytes)

    def file_done(self, spec: Any, status: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description(f"{self.done}/{self.n_files} files", refresh=False)
            if spec.size and status in ("cached", "verified"):
                self.bar.update(spec.size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _period(text: str | None) -> tuple[Any, Any]:
    from datetime import date

    try:
        a, b = (text or "").replace("..", "/").split("/")
        start, end = date.fromisoformat(a.strip()), date.fromisoformat(b.strip())
    except ValueError:
        raise ConfigError(f"--period: expected START/END dates such as 2020-01-01/2020-02-01, found {text!r}") from None
    if end <= start:
        raise ConfigError(f"--period: END ({end}) must be after START ({start}); END is exclusive")
    return start, end


def _bbox(text: str | None) -> tuple[float, float, float, float]:
    if not text:
        return (-180.0, -90.0, 180.0, 90.0)
    try:
        w, s, e, n = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--bbox: expected W,S,E,N degrees such as 90,-12,142,30, found {text!r}") from None
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise ConfigError(f"--bbox: {text} is not W,S,E,N with -180<=W<E<=180 and -90<=S<N<=90")
    return (w, s, e, n)


def _fetch_plan(args: argparse.Namespace) -> tuple[Any, Path, int, int]:
    """(plan, cache folder, workers, retries) from the command line."""
    from gosat_pipeline import fetch as gf

    if args.from_plan is not None:
        if not args.from_plan.is_file():
            raise ConfigError(f"--from-plan: {args.from_plan} not found")
        plan = gf.Plan.from_json(args.from_plan.read_text())
        return plan, args.out or Path("data_cache"), args.workers or 4, 4 if args.retries is None else args.retries
    target = args.target or ""
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        cfg = _load(argparse.Namespace(config=Path(target)))
        plan = gf.plan_for_config(cfg)
        return (
            plan,
            args.out or cfg.fetch.cache_dir,
            args.workers or cfg.fetch.workers,
            cfg.fetch.retries if args.retries is None else args.retries,
        )
    if target not in gf.source_names():
        raise ConfigError(
            f"fetch: {target!r} is neither a configuration file nor a source; sources: "
            f"{', '.join(gf.source_names())} (gosat-pipeline fetch --list)"
        )
    if args.out is None:
        raise ConfigError("fetch SOURCE needs --out DIR (the cache folder)")
    start, end = _period(args.period)
    options = {
        k: getattr(args, k)
        for k in ("product", "version", "year", "url", "base_url", "record", "file_pattern", "stream")
        if getattr(args, k) is not None
    }
    options["overpass_filter"] = args.overpass_filter
    retries = 4 if args.retries is None else args.retries
    plan = gf.plan_source(target, start, end, _bbox(args.bbox), gas=args.gas, retries=retries, **options)
    return plan, args.out, args.workers or 4, retries


def _print_plan(plan: Any, cache: Path, plan_file: Path | None) -> None:
    from gosat_pipeline.outputs import atomic_write_text

    for f in plan.files:
        size = f"{f.size / 1e6:9.2f} MB" if f.size else "     size ?"
        print(f"{size}  {f.relpath}  <- {f.url}")
    for note in plan.notes:
        print(f"# {note}")
    print(
        f"# {len(plan.files)} file(s), {plan.known_bytes / 1e6:.1f} MB listed"
        + (f" ({plan.unknown_sizes} without a published size)" if plan.unknown_sizes else "")
    )
    tsv = plan_file or (Path(cache) / "fetch-plan.tsv")
    tsv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.url_list(), tsv)
    atomic_write_text(plan.to_json(), tsv.with_suffix(".json"))
    print(f"# file list: {tsv} (URL<TAB>cache path); plan: {tsv.with_suffix('.json')} (for --from-plan)")


def _cmd_fetch(args: argparse.Namespace) -> int:
    if args.list:
        from gosat_pipeline.fetch.sources import describe_sources

        for name, title, opts in describe_sources():
            print(f"{name:<16} {title}\n{'':<16} options: {opts}")
        return 0
    if not args.target and args.from_plan is None:
        raise ConfigError("fetch: give a configuration file or a source name (gosat-pipeline fetch --list)")
    plan, cache, workers, retries = _fetch_plan(args)
    if args.plan:
        _print_plan(plan, cache, args.plan_file)
        return 0
    from gosat_pipeline.fetch import fetch

    report = fetch(plan, cache, workers=workers, retries=retries, progress=_FetchBar(args.quiet), verify=args.verify)
    for note in plan.notes:
        _say(args, f"note: {note}")
    _say(args, f"fetch: {report.summary()}; cache {report.cache} (index {report.cache / 'fetch-index.json'})")
    return 0


_COMMANDS = {
    "run": _cmd_run,
    "ingest": _cmd_run,
    "grid": _cmd_run,
    "invert": _cmd_run,
    "compare": _cmd_run,
    "report": _cmd_report,
    "inspect": _cmd_inspect,
    "validate": _cmd_validate,
    "formats": _cmd_formats,
    "synth": _cmd_synth,
    "fetch": _cmd_fetch,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gosat-pipeline`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet cannot be combined")
    _configure_logging(args.verbose, args.quiet)
    try:
        return _COMMANDS[args.command](args)
    except GosatPipelineError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"gosat-pipeline: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("gosat-pipeline: interrupted; completed stages are kept and a re-run resumes", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last-resort guard: one line, traceback with -v
        if args.verbose:
            traceback.print_exc()
        print(
            f"gosat-pipeline: internal error: {type(exc).__name__}: {exc} (re-run with -v for the traceback "
            "and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
