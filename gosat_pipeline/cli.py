"""The ``gosat-pipeline`` command line: a thin shell over :mod:`gosat_pipeline.pipeline`.

Only this module configures logging handlers and prints. A user error (any
:class:`~gosat_pipeline.errors.GosatPipelineError`) exits non-zero with one clear
line per problem; a traceback appears only with ``-v``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gosat_pipeline import __version__
from gosat_pipeline.errors import ConfigError, GosatPipelineError

__all__ = ["main", "build_parser"]

logger = logging.getLogger("gosat_pipeline.cli")

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="gosat-pipeline",
        description="GOSAT-style XCO2/XCH4 granules -> emission estimates checked against reported inventories.",
    )
    parser.add_argument("--version", action="version", version=f"gosat-pipeline {__version__}")
    verb = parser.add_mutually_exclusive_group()
    verb.add_argument("-v", "--verbose", action="count", default=0, help="more output; tracebacks on errors")
    verb.add_argument("-q", "--quiet", action="store_true", help="only errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run every stage (resuming completed ones)")
    _add_run_options(p)
    for stage, text in (
        ("ingest", "read and screen the granules"),
        ("grid", "ingest, then grid to L3"),
        ("invert", "... up to the inversion (includes inventories, regions and winds)"),
        ("compare", "... up to the comparison with reported totals"),
    ):
        p = sub.add_parser(stage, help=f"run stages up to '{stage}': {text}")
        _add_run_options(p)

    p = sub.add_parser("report", help="regenerate report.html from a run directory's stored outputs")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--title")

    p = sub.add_parser("inspect", help="describe an L2 granule: format, version, gas, counts, ranges")
    p.add_argument("file", type=Path)
    p.add_argument("--format", help="reader name (default: auto-detect)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("validate", help="check a configuration file without running anything")
    p.add_argument("config", type=Path)

    sub.add_parser("formats", help="list the installed granule readers")

    _add_fetch_parser(sub)

    p = sub.add_parser("synth", help="make synthetic data: granules, an OSSE, or the bundled samples")
    ss = p.add_subparsers(dest="synth_command", required=True, metavar="KIND")
    q = ss.add_parser("granules", help="write synthetic granules in a real product layout")
    q.add_argument("--format", required=True, help="reader name, e.g. cci_ocpr, acos_lite")
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--gas", default=None)
    q.add_argument("--n-files", type=int, default=3)
    q.add_argument("--n-per-file", type=int, default=500)
    q.add_argument("--seed", type=int, default=0)
    q = ss.add_parser("osse", help="run an observing-system simulation experiment and report what is resolved")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", type=Path, default=None, help="folder for the OSSE table (CSV)")
    q = ss.add_parser("samples", help="(re)build the bundled demonstration inputs (make data-samples)")
    q.add_argument("--out", type=Path, default=Path("data_samples"))
    q.add_argument("--seed", type=int, default=2024)
    return parser


def _add_fetch_parser(sub: Any) -> None:
    p = sub.add_parser("fetch", help="download what a run needs (or one source) into a local cache",
                       description="gosat-pipeline fetch CONFIG | fetch SOURCE --period START/END [--bbox W,S,E,N] "
                                   "--out DIR.  Credentials come from ~/.netrc or environment variables only.")  # fmt: skip
    p.add_argument("target", nargs="?", help="a run configuration (its fetch: section) or a source name (--list)")
    p.add_argument("--list", action="store_true", help="list the sources and their options")
    p.add_argument("--plan", action="store_true", help="print and write the file list; download nothing")
    p.add_argument("--plan-file", type=Path, help="where --plan writes the list (default <cache>/fetch-plan.tsv, "
                                                  "plus the same name with .json)")  # fmt: skip
    p.add_argument("--from-plan", type=Path, metavar="PLAN_JSON",
                   help="fetch (or check files copied in for) a plan written by --plan, without listing the archives")
    p.add_argument("--period", help="START/END dates, UTC, END exclusive (source mode), e.g. 2020-01-01/2020-02-01")
    p.add_argument("--bbox", help="W,S,E,N degrees (source mode; default global)")
    p.add_argument("--out", type=Path, help="cache folder (default: fetch.cache_dir of the config, or data_cache)")
    p.add_argument("--verify", action="store_true", help="re-check every cached file, not only changed ones")
    p.add_argument("--workers", type=int, help="parallel downloads (default: fetch.workers or 4)")
    p.add_argument("--retries", type=int, help="retries of a failed transfer (default: fetch.retries or 4)")
    for key in ("gas", "product", "version", "year", "url", "base_url", "record", "file_pattern", "stream"):
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int if key == "year" else str,
                       help=f"source option {key} (source mode)")  # fmt: skip
    p.add_argument("--no-overpass-filter", dest="overpass_filter", action="store_false", default=True,
                   help="tropomi_*: keep every orbit of the period, not only those that can see the box")


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


def _cmd_run(args: argparse.Namespace) -> int:
    from gosat_pipeline.pipeline import run

    cfg = _load(args)
    until = None if args.command == "run" else args.command
    bar = None
    if not args.quiet:
        from dask.diagnostics import ProgressBar

        bar = ProgressBar(minimum=2.0, out=sys.stderr)
        bar.register()
    try:
        res = run(cfg, force=args.force, until=until, progress=lambda m: _say(args, f"[gosat-pipeline] {m}"),
                  config_path=args.config)  # fmt: skip
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
    from gosat_pipeline.report import write_report

    if not args.run_dir.is_dir():
        raise ConfigError(f"run directory not found: {args.run_dir}")
    path = write_report(args.run_dir, title=args.title)
    _say(args, f"report: {path}")
    return 0


def _inspect_error(args: argparse.Namespace, exc: GosatPipelineError) -> GosatPipelineError:
    """The library's error, worded for the command line (``--format NAME``, the installed formats)."""
    from gosat_pipeline.errors import GranuleError, UnknownFormatError
    from gosat_pipeline.io import detect_format, list_formats
    from gosat_pipeline.io._registry import get_reader

    installed = ", ".join(list_formats())
    if isinstance(exc, UnknownFormatError):
        return UnknownFormatError(exc.path, f"no reader recognised {args.file.name!r} by name or content; use "
                                            f"--format NAME with one of the installed formats: {installed} "
                                            "(gosat-pipeline formats describes them)")  # fmt: skip
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
        return GranuleError(exc.path, f"{exc.reason} (read as --format {args.format}; the file looks like "
                                      f"{detected}: use --format {detected})")  # fmt: skip
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
        raise GosatPipelineError(f"--format {args.format!r} is not an installed format; use --format NAME with one "
                                 f"of: {', '.join(installed)} (gosat-pipeline formats describes them)")  # fmt: skip
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
    cfg = _load(args)
    print(f"{args.config}: valid ({len(cfg.gases)} gas(es): {', '.join(g.gas for g in cfg.gases)}; "
          f"run directory {cfg.run_dir})")  # fmt: skip
    return 0


def _cmd_formats(args: argparse.Namespace) -> int:
    from gosat_pipeline.io import list_formats

    for name, desc in list_formats().items():
        print(f"{name:<20} {desc}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    if args.synth_command == "granules":
        from gosat_pipeline.testing import make_granule_files

        paths = make_granule_files(args.out, args.format, n_files=args.n_files, n_per_file=args.n_per_file,
                                   gas=args.gas, seed=args.seed)  # fmt: skip
        for p in paths:
            print(p)
        return 0
    if args.synth_command == "osse":
        from gosat_pipeline.testing import make_osse_case, run_osse

        summary = run_osse(make_osse_case(seed=args.seed))
        table = summary.pop("table", None)
        if args.out is not None and table is not None:
            from gosat_pipeline.outputs import atomic_write_text

            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(table.to_csv(index=False), args.out / "osse_elements.csv")
            summary["table_csv"] = str(args.out / "osse_elements.csv")
        print(json.dumps(summary, indent=2, default=str))
        return 0
    from gosat_pipeline.testing.demo import build_demo_samples

    written = build_demo_samples(args.out, seed=args.seed)
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

        self.bar = tqdm(total=total_bytes or None, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                        desc=f"0/{n_files} files", dynamic_ncols=True, mininterval=0.5)  # fmt: skip

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
        return (plan, args.out or cfg.fetch.cache_dir, args.workers or cfg.fetch.workers,
                cfg.fetch.retries if args.retries is None else args.retries)  # fmt: skip
    if target not in gf.source_names():
        raise ConfigError(f"fetch: {target!r} is neither a configuration file nor a source; sources: "
                          f"{', '.join(gf.source_names())} (gosat-pipeline fetch --list)")  # fmt: skip
    if args.out is None:
        raise ConfigError("fetch SOURCE needs --out DIR (the cache folder)")
    start, end = _period(args.period)
    options = {k: getattr(args, k) for k in ("product", "version", "year", "url", "base_url", "record",
                                             "file_pattern", "stream") if getattr(args, k) is not None}  # fmt: skip
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
    print(f"# {len(plan.files)} file(s), {plan.known_bytes / 1e6:.1f} MB listed"
          + (f" ({plan.unknown_sizes} without a published size)" if plan.unknown_sizes else ""))  # fmt: skip
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
