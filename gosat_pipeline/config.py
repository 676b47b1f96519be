"""Run configuration: YAML files loaded into validated, frozen pydantic models.

``load_config(path)`` parses the YAML once, at the edge; ``pipeline.py`` then passes
the settings objects of :mod:`gosat_pipeline.params` (built here: ``cfg.compare.thresholds()``,
``cfg.transport.settings(...)``, ``cfg.inversion.settings(...)``, ``gas.screen.screens(...)``)
and plain values to the stage functions, so no stage ever sees this module. The defaults
of those sections are the defaults of the settings classes, written once there.

Every problem in a file is reported at once, each with its key path, the value found
and what is allowed; unknown keys are rejected with a did-you-mean suggestion where a
known key is close. ``configs/template.yaml`` documents every key with its units and
default; a test checks that the template and these models agree.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gosat_pipeline.errors import ConfigError
from gosat_pipeline.params import (
    DEFAULT_PBL_PRESSURE_DEPTH,
    ENSEMBLE_RANGES,
    InversionSettings,
    QualityScreens,
    TransportSettings,
    VerdictThresholds,
)

__all__ = [
    "RunConfig",
    "load_config",
    "config_from_dict",
    "config_to_yaml",
    "section_hash",
]


def _accepts_bool(annotation: Any) -> bool:
    import typing

    return annotation is bool or any(_accepts_bool(a) for a in typing.get_args(annotation))


def _is_numeric(annotation: Any) -> bool:
    import typing

    return annotation in (int, float) or any(_is_numeric(a) for a in typing.get_args(annotation))


class _Model(BaseModel):
    # allow_inf_nan=False: "inf" or ".nan" is never a valid setting (sigma, thresholds, winds)
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: Any) -> Any:
        """``resolution: true`` is a mistake, not 1.0 (pydantic would silently coerce it)."""
        items = v if isinstance(v, (list, tuple)) else [v]
        if any(isinstance(x, bool) for x in items) and info.field_name in cls.model_fields:
            ann = cls.model_fields[info.field_name].annotation
            if _is_numeric(ann) and not _accepts_bool(ann):
                raise ValueError("expected a number, found a boolean")
        return v


class RunSection(_Model):
    """Where outputs go and how faults are handled."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9._-]+$")
    output_dir: Path = Path("outputs")
    strict: bool = False
    synthetic: bool = False


class PeriodSection(_Model):
    """Time window of the run (UTC, end exclusive) and how it is split."""

    start: date
    end: date
    time_bin: str | None = "MS"
    split: str | None = None

    @model_validator(mode="after")
    def _order(self) -> PeriodSection:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    @field_validator("time_bin", "split")
    @classmethod
    def _freq(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import pandas as pd

        try:
            pd.tseries.frequencies.to_offset(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a pandas frequency (e.g. '1D', 'MS', 'YS')") from None
        return v


class DomainSection(_Model):
    """The inversion grid: a regular lat/lon box."""

    bbox: tuple[float, float, float, float] = (-180.0, -90.0, 180.0, 90.0)
    resolution: float = Field(1.0, gt=0.0, le=10.0)

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        w, s, e, n = v
        if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise ValueError(
                f"{list(v)} is not [west, south, east, north] with -180<=west<east<=180 and -90<=south<north<=90"
            )
        return v


_SCREENS = QualityScreens()
_TRANSPORT = TransportSettings()
_INVERSION = InversionSettings()
_THRESHOLDS = VerdictThresholds()


class ScreenSection(_Model):
    """Screens applied after the product's own recommended screen."""

    product_screen: bool = True
    max_solar_zenith: float | None = Field(_SCREENS.max_solar_zenith, gt=0, le=90)
    max_uncertainty: float | None = Field(_SCREENS.max_uncertainty, gt=0)
    surface: Literal["all", "land", "glint"] = _SCREENS.surface  # type: ignore[assignment]

    def screens(self, bbox: tuple[float, float, float, float], time_range: tuple[str, str]) -> QualityScreens:
        """These screens within the run's domain ``bbox`` and period ``time_range``."""
        return QualityScreens(
            bbox=bbox,
            time_range=time_range,
            max_solar_zenith=self.max_solar_zenith,
            max_uncertainty=self.max_uncertainty,
            surface=self.surface,
        )


class PriorSection(_Model):
    """Gridded prior inventory for one gas."""

    path: Path
    variable: str | None = None
    year: int | None = None
    sectors: Literal["sum", "keep"] = "sum"


class GasSection(_Model):
    """Observations, prior and error settings for one gas."""

    gas: Literal["CO2", "CH4"]
    granules: list[str] = Field(min_length=1)
    format: str | None = None
    bias_corrected: bool = True
    screen: ScreenSection = ScreenSection()
    prior: PriorSection
    sigma_model: float = Field(gt=0)
    background_prior_sigma: float = Field(gt=0)
    background_gradient_sigma: float | None = Field(None, gt=0)
    inflow_prior_sigma: float | None = Field(None, gt=0)


class ReportedSection(_Model):
    """One reported-inventory (or external top-down) table compared against.

    ``format`` names the reader of :func:`gosat_pipeline.inventory.read_reported_totals`;
    ``categories``, ``scenario``, ``source`` and ``experiment`` are its selections.
    """

    path: Path
    name: str = "reported"
    format: Literal["auto", "long", "primap", "crf", "crt", "oco2mip"] = "auto"
    categories: list[str] | None = None
    scenario: str | None = None
    source: str | None = None
    experiment: Literal["IS", "LNLG", "LNLGIS", "LNLGOGIS"] | None = None

    def read_options(self, gases: list[str]) -> dict[str, Any]:
        """Keyword arguments of :func:`gosat_pipeline.inventory.read_reported_totals` for this table."""
        return {
            "format": self.format,
            "categories": self.categories,
            "scenario": self.scenario,
            "source": self.source,
            "experiment": self.experiment,
            "gases": gases,
        }


class RegionsSection(_Model):
    """Region boundaries, the regions to solve for, and aggregates."""

    boundaries: Path | None = None
    iso3: list[str] | None = None
    groups: dict[str, list[str]] = {}
    attribution: Literal["land", "area"] = "land"

    @field_validator("iso3")
    @classmethod
    def _codes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        bad = [c for c in v if not (len(c) == 3 and c.isalpha() and c.isupper())]
        if bad:
            raise ValueError(f"{bad} are not ISO 3166-1 alpha-3 codes (three capital letters)")
        return v


class WindsSection(_Model):
    """Winds for the transport operator: a file, or uniform values."""

    path: Path | None = None
    u: float = 0.0
    v: float = 0.0
    level: str = "pbl"


class TransportSection(_Model):
    """Forward-operator parameters, written into every output."""

    type: Literal["simple", "footprints"] = "simple"
    mode: Literal["auto", "time_resolved", "steady"] = _TRANSPORT.mode  # type: ignore[assignment]
    eddy_diffusivity: float = Field(_TRANSPORT.eddy_diffusivity, gt=0)
    ventilation_time: float = Field(_TRANSPORT.ventilation_time, gt=0)
    time_step: float = Field(_TRANSPORT.time_step, gt=0, le=86400.0)
    spinup: float | None = Field(_TRANSPORT.spinup, ge=0)
    background: Literal["plane", "offset", "none"] = _TRANSPORT.background  # type: ignore[assignment]
    background_period: str | None = _TRANSPORT.background_period
    inflow: bool = _TRANSPORT.inflow
    pbl_pressure_depth: float = Field(DEFAULT_PBL_PRESSURE_DEPTH, gt=0, le=1000)
    surface_pressure: float = Field(_TRANSPORT.surface_pressure, gt=0)
    footprints: Path | None = None
    footprints_format: Literal["auto", "generic", "stilt", "flexpart", "name", "imi"] = "auto"

    @field_validator("background_period")
    @classmethod
    def _bfreq(cls, v: str | None) -> str | None:
        return PeriodSection._freq(v)

    @model_validator(mode="after")
    def _fp(self) -> TransportSection:
        if self.type == "footprints" and self.footprints is None:
            raise ValueError(
                "type 'footprints' needs footprints: a footprint file, a folder or a glob pattern (STILT, "
                "FLEXPART, NAME, an IMI run or the generic (obs, lat, lon) netCDF; docs/footprints.md)"
            )
        return self

    def settings(self, *, mode: str | None = None, spinup: float | None = None) -> TransportSettings:
        """The operator's :class:`~gosat_pipeline.params.TransportSettings`.

        ``mode`` replaces ``auto`` once the winds are known; ``spinup`` (s) the configured
        one (the pipeline resolves a missing spin-up from the period).
        """
        return TransportSettings(
            mode=mode or self.mode,
            eddy_diffusivity=self.eddy_diffusivity,
            ventilation_time=self.ventilation_time,
            surface_pressure=self.surface_pressure,
            time_step=self.time_step,
            spinup=self.spinup if spinup is None else spinup,
            background=self.background,
            background_period=self.background_period,
            inflow=self.inflow,
        )


class InversionSection(_Model):
    """Analytic Bayesian inversion settings (DESIGN.md 5.3-5.4)."""

    prior_error: float = Field(_INVERSION.prior_error, gt=0)
    correlation_length_km: float | None = Field(_INVERSION.correlation_length_km, gt=0)
    lognormal: bool = _INVERSION.lognormal
    gradient_tolerance: float = Field(_INVERSION.gradient_tolerance, gt=0)
    use_weighted_mean: bool = True

    def settings(self, gas: GasSection) -> InversionSettings:
        """The :class:`~gosat_pipeline.params.InversionSettings` of one gas (its background and inflow priors)."""
        return InversionSettings(
            prior_error=self.prior_error,
            correlation_length_km=self.correlation_length_km,
            background_prior_sigma=gas.background_prior_sigma,
            background_gradient_sigma=gas.background_gradient_sigma,
            inflow_prior_sigma=gas.inflow_prior_sigma,
            lognormal=self.lognormal,
            gradient_tolerance=self.gradient_tolerance,
        )


class ChangeSection(_Model):
    """Two period labels whose difference is tested."""

    period_a: str
    period_b: str


class CompareSection(_Model):
    """Verdict thresholds (DESIGN.md 5.5)."""

    z_critical: float = Field(_THRESHOLDS.z_critical, gt=0)
    min_error_reduction: float = Field(_THRESHOLDS.min_error_reduction, ge=0, lt=1)
    min_sensitivity: float = Field(_THRESHOLDS.min_sensitivity, ge=0, le=1)
    min_observations: int = Field(_THRESHOLDS.min_observations, ge=0)
    min_domain_share: float = Field(_THRESHOLDS.min_domain_share, gt=0, le=1)
    max_detectable_difference: float = Field(_THRESHOLDS.max_detectable_difference, gt=0)
    max_chi2_obs: float = Field(_THRESHOLDS.max_chi2_obs, gt=0)
    transport_error: float = Field(_THRESHOLDS.transport_error, ge=0, lt=2)
    prior_is_reported: bool = False
    change: ChangeSection | None = None

    def thresholds(self) -> VerdictThresholds:
        """The :class:`~gosat_pipeline.params.VerdictThresholds` of this section."""
        return VerdictThresholds(**{f: getattr(self, f) for f in _THRESHOLDS.as_dict()})


class EnsembleSection(_Model):
    """Inversions over the uncertain transport and error choices (DESIGN.md 5.3)."""

    members: int = Field(8, ge=0, le=200)
    seed: int = 0
    eddy_diffusivity: tuple[float, float] | None = ENSEMBLE_RANGES["eddy_diffusivity"]
    ventilation_time: tuple[float, float] | None = ENSEMBLE_RANGES["ventilation_time"]
    wind_speed: tuple[float, float] | None = ENSEMBLE_RANGES["wind_speed"]
    wind_direction: tuple[float, float] | None = ENSEMBLE_RANGES["wind_direction"]
    sigma_model: tuple[float, float] | None = ENSEMBLE_RANGES["sigma_model"]
    prior_error: tuple[float, float] | None = ENSEMBLE_RANGES["prior_error"]
    inflow: list[bool] | None = list(ENSEMBLE_RANGES["inflow"])
    background: list[Literal["plane", "offset", "none"]] | None = None

    @model_validator(mode="after")
    def _ranges(self) -> EnsembleSection:
        for name in ("eddy_diffusivity", "ventilation_time", "wind_speed", "sigma_model", "prior_error"):
            r = getattr(self, name)
            if r is not None and not (0 < r[0] <= r[1]):
                raise ValueError(f"{name}: give [min, max] factors with 0 < min <= max; found {list(r)}")
        if self.wind_direction is not None and not self.wind_direction[0] <= self.wind_direction[1]:
            raise ValueError(f"wind_direction: give [min, max] degrees; found {list(self.wind_direction)}")
        return self

    def ranges(self) -> dict[str, object]:
        """The choices varied and their ranges (those set to null are not varied)."""
        keys = (
            "eddy_diffusivity",
            "ventilation_time",
            "wind_speed",
            "wind_direction",
            "sigma_model",
            "prior_error",
            "inflow",
            "background",
        )
        return {k: tuple(getattr(self, k)) for k in keys if getattr(self, k)}


class ReportSection(_Model):
    """The agency report.

    ``region_names`` maps region codes to the names the report shows, on top of the
    official short names it uses by default (ASEAN: Brunei Darussalam, Lao PDR,
    Viet Nam, ...; see :data:`gosat_pipeline.report.names.OFFICIAL_SHORT_NAMES`); an
    empty name falls back to the boundary file's name.
    """

    enabled: bool = True
    title: str | None = None
    region_names: dict[str, str] = {}

    @field_validator("region_names")
    @classmethod
    def _codes(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not str(k).strip()]
        if bad:
            raise ValueError("region codes must not be empty (e.g. VNM: Viet Nam)")
        return {str(k).strip().upper(): str(name) for k, name in v.items()}


class JobqueueSection(_Model):
    """An HPC queue through dask-jobqueue (optional extra ``[jobqueue]``)."""

    system: Literal["slurm", "pbs", "sge", "lsf"] = "slurm"
    queue: str | None = None
    account: str | None = None
    cores: int = Field(8, ge=1)
    memory: str = "16GB"
    walltime: str = "01:00:00"
    jobs: int = Field(2, ge=1)


class ClusterSection(_Model):
    """Where Dask runs: local cluster, threads, an existing scheduler, or an HPC queue."""

    type: Literal["local", "threads", "synchronous", "address", "jobqueue"] = "local"
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)
    memory_limit: str | None = None
    address: str | None = None
    jobqueue: JobqueueSection | None = None
    chunk_size: int = Field(200_000, ge=1000)
    tiny_job_bytes: int = Field(32 * 1024 * 1024, ge=0)

    @model_validator(mode="after")
    def _needs(self) -> ClusterSection:
        if self.type == "address" and not self.address:
            raise ValueError("type 'address' needs address: tcp://HOST:PORT")
        if self.type == "jobqueue" and self.jobqueue is None:
            raise ValueError("type 'jobqueue' needs a jobqueue: section")
        return self


class FetchSourceSection(_Model):
    """One archive to download from (``gosat-pipeline fetch --list`` names them)."""

    source: str
    gas: Literal["CO2", "CH4"] | None = None
    product: str | None = None
    version: str | None = None
    year: int | None = Field(None, ge=1970, le=2100)
    url: str | None = None
    base_url: str | None = None
    record: str | None = None
    file_pattern: str | None = None
    stream: str | None = None
    overpass_filter: bool = True


class FetchSection(_Model):
    """``gosat-pipeline fetch CONFIG``: what to download, into which cache (credentials never go here)."""

    cache_dir: Path = Path("data_cache")
    workers: int = Field(4, ge=1, le=32)
    retries: int = Field(4, ge=0, le=20)
    sources: list[FetchSourceSection] = []


class RunConfig(_Model):
    """The whole run: every section of ``configs/template.yaml``."""

    run: RunSection = RunSection()
    period: PeriodSection
    domain: DomainSection = DomainSection()
    gases: list[GasSection] = Field(min_length=1)
    reported: list[ReportedSection] = []
    regions: RegionsSection = RegionsSection()
    winds: WindsSection = WindsSection()
    transport: TransportSection = TransportSection()
    inversion: InversionSection = InversionSection()
    compare: CompareSection = CompareSection()
    ensemble: EnsembleSection = EnsembleSection()
    report: ReportSection = ReportSection()
    cluster: ClusterSection = ClusterSection()
    fetch: FetchSection = FetchSection()

    @field_validator("gases")
    @classmethod
    def _unique_gases(cls, v: list[GasSection]) -> list[GasSection]:
        names = [g.gas for g in v]
        if len(set(names)) != len(names):
            raise ValueError(f"each gas may appear once; found {names}")
        return v

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<name>``."""
        return self.run.output_dir / self.run.name


# --------------------------------------------------------------------------- loading


def _known_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """Field names allowed at ``path`` (a pydantic error location) in ``model``."""
    import typing

    current: Any = model
    for part in path:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        current = None
        for cand in (ann, *typing.get_args(ann)):
            for inner in (cand, *typing.get_args(cand)):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    current = inner
                    break
            if current is not None:
                break
    if current is None or not hasattr(current, "model_fields"):
        return []
    return list(current.model_fields)


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
    key = key or "<top level>"
    typ = err.get("type", "")
    found = err.get("input")
    if typ == "extra_forbidden":
        allowed = _known_keys(RunConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{key}: unknown key{hint} (allowed here: {', '.join(allowed)})"
    if typ == "missing":
        return f"{key}: required key is missing"
    msg = err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ")
    shown = json.dumps(found, default=str) if not isinstance(found, dict) else "{...}"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{key}: {msg} (found {shown})"


def config_from_dict(data: Any, source: str | None = None) -> RunConfig:
    """Validate a mapping into a :class:`RunConfig`; raise :class:`ConfigError` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"the file must hold a mapping of sections (run:, period:, gases: ...); found {type(data).__name__}",
            source,
        )
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_format_error(e) for e in exc.errors(include_url=False)]
        raise ConfigError(problems, source) from None


def load_config(path: str | os.PathLike[str], *, base_dir: str | os.PathLike[str] | None = None) -> RunConfig:
    """Load and validate a YAML run configuration.

    Relative paths in the file (granules, prior, reported tables, boundaries,
    winds, output_dir) are taken relative to ``base_dir``, by default the current
    working directory, which is how the CLI is used from the project root.

    Parameters
    ----------
    path : path-like
        The YAML file.
    base_dir : path-like, optional
        Folder that relative paths are resolved against.

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML, or holds invalid values (all listed).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"not valid YAML{where}: {what}", str(path)) from None
    cfg = config_from_dict(data, str(path))
    return _resolve_paths(cfg, Path(base_dir) if base_dir is not None else Path.cwd())


def _resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    def p(x: Path | None) -> Path | None:
        if x is None:
            return None
        x = Path(os.path.expanduser(x))
        return x if x.is_absolute() else (base / x)

    def g(pattern: str) -> str:
        pattern = os.path.expanduser(pattern)
        return pattern if os.path.isabs(pattern) else str(base / pattern)

    gases = [
        gs.model_copy(
            update={
                "granules": [g(x) for x in gs.granules],
                "prior": gs.prior.model_copy(update={"path": p(gs.prior.path)}),
            }
        )
        for gs in cfg.gases
    ]
    return cfg.model_copy(
        update={
            "run": cfg.run.model_copy(update={"output_dir": p(cfg.run.output_dir)}),
            "gases": gases,
            "reported": [r.model_copy(update={"path": p(r.path)}) for r in cfg.reported],
            "regions": cfg.regions.model_copy(update={"boundaries": p(cfg.regions.boundaries)}),
            "winds": cfg.winds.model_copy(update={"path": p(cfg.winds.path)}),
            "transport": cfg.transport.model_copy(update={"footprints": p(cfg.transport.footprints)}),
            "fetch": cfg.fetch.model_copy(update={"cache_dir": p(cfg.fetch.cache_dir)}),
        }
    )


def config_to_yaml(cfg: RunConfig) -> str:
    """The resolved configuration as YAML (every key, defaults filled in)."""
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)


def section_hash(*parts: Any) -> str:
    """A stable SHA-256 of JSON-serialisable parts (config sections, input hashes)."""

    def norm(x: Any) -> Any:
        if isinstance(x, BaseModel):
            return json.loads(x.model_dump_json())
        return x

    blob = json.dumps([norm(x) for x in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
