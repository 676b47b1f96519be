"""Settings of the stages as frozen dataclasses (layer 0): each default is written here once.

The stage functions take these objects (``apply_quality_filter(ds, screens)``,
``build_jacobian(..., settings=)``, ``invert(jac, settings=)``,
``compare_to_inventory(..., thresholds=)``); their keyword arguments are thin
conveniences that override single fields (``apply_quality_filter(ds, surface="land")``).
The YAML configuration (:mod:`gosat_pipeline.config`) takes its defaults from these
classes and builds them at the edge (``cfg.compare.thresholds()``,
``cfg.transport.settings(...)``, ``cfg.inversion.settings(...)``), so a notebook that
never touches a config gets exactly the defaults of a configured run.

Physical constants of the forward operator that several modules need (the default eddy
diffusivity, ventilation time, time step, standard surface pressure and boundary-layer
depth) are defined here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

from gosat_pipeline.errors import SchemaError

__all__ = [
    "BACKGROUND_MODES",
    "DEFAULT_EDDY_DIFFUSIVITY",
    "DEFAULT_PBL_PRESSURE_DEPTH",
    "DEFAULT_TIME_STEP",
    "DEFAULT_VENTILATION_TIME",
    "ENSEMBLE_RANGES",
    "STANDARD_SURFACE_PRESSURE",
    "SURFACES",
    "TRANSPORT_MODES",
    "InversionSettings",
    "QualityScreens",
    "TransportSettings",
    "VerdictThresholds",
    "with_overrides",
]

#: Default horizontal eddy diffusivity, m2 s-1. Boundary-layer horizontal mixing by
#: unresolved mesoscale eddies on 50-200 km grids is of order 1e4-1e5 m2 s-1; 5e4 gives a
#: diffusion length sqrt(K tau) of ~90 km over one ventilation time, about one 1-degree
#: cell, so a source spreads over its neighbours without dominating advection.
DEFAULT_EDDY_DIFFUSIVITY = 5.0e4
#: Default ventilation time, s (2 days). A boundary-layer enhancement is vented to the free
#: troposphere on a time scale of 1-3 days; at 5 m s-1 it travels ~860 km in 2 days, the
#: size of a country-scale (~1000 km) domain, so upwind sources still matter downwind.
DEFAULT_VENTILATION_TIME = 2.0 * 86400.0
#: Implicit step of the time-resolved operator, s: the 6-hourly interval of reanalysis winds.
DEFAULT_TIME_STEP = 6 * 3600.0
#: Standard surface pressure, hPa (the dry-air column when no surface pressure is known).
STANDARD_SURFACE_PRESSURE = 1013.25
#: Pressure depth of the boundary layer above the surface, hPa (column sensitivity weight).
DEFAULT_PBL_PRESSURE_DEPTH = 150.0

#: How the background column is represented per window.
BACKGROUND_MODES: tuple[str, ...] = ("plane", "offset", "none")
#: Forward-operator modes.
TRANSPORT_MODES: tuple[str, ...] = ("auto", "time_resolved", "steady")
#: Observation modes of the ``surface`` screen and their ``surface_type`` code (None: all).
SURFACES: dict[str, int | None] = {"all": None, "land": 0, "glint": 1}

#: Default perturbation ranges of the transport ensemble: multiplicative factors (min, max)
#: for the continuous choices (drawn uniformly in log space), degrees for the wind direction,
#: and the boundary treatments cycled through (with and without inflow elements).
#: Boundary-layer ventilation takes 1-3 days (DEFAULT_VENTILATION_TIME's range); horizontal
#: eddy diffusivity on 50-200 km grids is 1e4-1e5 m2 s-1; reanalysis boundary-layer winds are
#: uncertain by about 20 % in speed and 15 degrees in direction; model and prior errors by
#: about a factor 1.5.
ENSEMBLE_RANGES: Mapping[str, tuple[Any, Any]] = MappingProxyType(
    {
        "eddy_diffusivity": (0.5, 2.0),
        "ventilation_time": (0.5, 1.5),
        "wind_speed": (0.8, 1.25),
        "wind_direction": (-15.0, 15.0),
        "sigma_model": (0.75, 1.5),
        "prior_error": (0.75, 1.5),
        "inflow": (True, False),
    }
)

_T = TypeVar("_T")


def with_overrides(base: _T, overrides: Mapping[str, Any], what: str = "") -> _T:
    """``base`` with the fields named in ``overrides`` replaced (the keyword conveniences).

    A ``None`` value sets the field to ``None`` (for the screens, "no such screen"); an
    unknown name raises a ``TypeError`` that lists the allowed ones.
    """
    names = [f.name for f in fields(base)]  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"unknown {what or type(base).__name__} setting(s) {unknown}; allowed: {names}")
    return replace(base, **overrides) if overrides else base  # type: ignore[type-var]


@dataclass(frozen=True)
class QualityScreens:
    """The user's quality screens, applied after the product's own recommended screen.

    Attributes
    ----------
    bbox : (west, south, east, north), degrees, optional
        Inclusive box; ``west > east`` (after wrapping to [-180, 180)) crosses the
        antimeridian.
    time_range : (start, end), optional
        Inclusive UTC window; strings or datetimes; either end may be ``None``. An
        end given as a bare date (``"2020-12-31"``) includes that whole day.
    max_solar_zenith : float, optional
        Degrees; needs ``solar_zenith_angle``.
    max_uncertainty : float, optional
        In the gas's canonical units (ppm CO2, ppb CH4), on ``xgas_uncertainty``.
    surface : {"all", "land", "glint"}
        Observation mode, on ``surface_type`` (0 land, 1 glint/water).
    drop_flagged : bool
        Drop soundings with ``quality_flag != 0``.
    """

    bbox: Sequence[float] | None = None
    time_range: Sequence[str | datetime | None] | None = None
    max_solar_zenith: float | None = None
    max_uncertainty: float | None = None
    surface: str = "all"
    drop_flagged: bool = True

    def __post_init__(self) -> None:
        if self.surface not in SURFACES:
            raise SchemaError(f"surface={self.surface!r}; allowed: {sorted(SURFACES)}")

    def describe(self) -> str:
        """The screens, as recorded in the ``quality_filter`` attribute of the filtered soundings."""
        return repr(
            {
                "bbox": list(self.bbox) if self.bbox is not None else None,
                "time_range": [str(t) for t in self.time_range] if self.time_range is not None else None,
                "max_solar_zenith": self.max_solar_zenith,
                "max_uncertainty": self.max_uncertainty,
                "surface": self.surface,
                "drop_flagged": self.drop_flagged,
            }
        )


@dataclass(frozen=True)
class TransportSettings:
    """Every setting of the forward operator, written into every output.

    Attributes
    ----------
    mode : {"auto", "time_resolved", "steady"}
        ``time_resolved`` steps the transport with the winds of every time step;
        ``steady`` solves one steady state from the time-mean wind (the identical-twin
        teaching operator); ``auto`` is time-resolved when the winds have a time axis
        with more than one step.
    eddy_diffusivity : float, m2 s-1
    ventilation_time : float, s
    surface_pressure : float, hPa
    time_step : float, s
        Implicit step of the time-resolved operator (the wind file's interval, 6 h).
    spinup : float, s, optional
        The first period's emissions (and inflow) start this long before the first
        observation bin (default: 5 ventilation times).
    background : {"plane", "offset", "none"}
        Background column per window: offset plus gradients, offset only, or none.
    background_period : str or None
        Pandas frequency of the background and inflow windows (None: one per time bin).
    inflow : bool
        Estimate boundary inflow per edge and window (not with footprints).
    wind_scale, wind_rotation : float
        Multiply the winds by ``wind_scale`` and turn them by ``wind_rotation`` degrees
        (counter-clockwise): the transport ensemble's wind perturbations.
    """

    mode: str = "auto"
    eddy_diffusivity: float = DEFAULT_EDDY_DIFFUSIVITY
    ventilation_time: float = DEFAULT_VENTILATION_TIME
    surface_pressure: float = STANDARD_SURFACE_PRESSURE
    time_step: float = DEFAULT_TIME_STEP
    spinup: float | None = None
    background: str = "plane"
    background_period: str | None = "MS"
    inflow: bool = True
    wind_scale: float = 1.0
    wind_rotation: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in TRANSPORT_MODES:
            raise SchemaError(f"transport mode {self.mode!r}; allowed: {list(TRANSPORT_MODES)}")
        if self.background not in BACKGROUND_MODES:
            raise SchemaError(f"background={self.background!r}; allowed: {list(BACKGROUND_MODES)}")
        for name in ("ventilation_time", "time_step", "surface_pressure", "wind_scale"):
            if not getattr(self, name) > 0:
                raise SchemaError(f"{name} must be > 0; got {getattr(self, name)}")
        if not self.eddy_diffusivity >= 0:
            raise SchemaError(f"eddy_diffusivity must be >= 0 m2 s-1; got {self.eddy_diffusivity}")

    def attrs(self) -> dict[str, Any]:
        """The settings as netCDF attributes (``transport_*``)."""
        out = {}
        for k, v in asdict(self).items():
            out[f"transport_{k}"] = "none" if v is None else (int(v) if isinstance(v, bool) else v)
        return out


@dataclass(frozen=True)
class InversionSettings:
    """Settings of the analytic Bayesian inversion (DESIGN.md 5.3-5.4).

    Attributes
    ----------
    prior_error : float
        Relative 1-sigma prior error of every emission scale factor (0.5 = 50 %).
    correlation_length_km : float, optional
        Prior error correlation :math:`\\exp(-d/L)` between emission elements of the same
        period and sector (d between emission-weighted centroids).
    background_prior_sigma : float, optional
        1-sigma prior of background offsets (gas units); default
        :data:`gosat_pipeline.inversion.DEFAULT_BACKGROUND_PRIOR_SIGMA` of the gas.
    background_gradient_sigma : float, optional
        1-sigma prior of the background's north-south and east-west gradients, gas units
        per 1000 km (default a third of ``background_prior_sigma``).
    inflow_prior_sigma : float, optional
        1-sigma prior of the boundary inflow elements, gas units (default a third of
        ``background_prior_sigma``).
    lognormal : bool
        Solve for ln(scale factor) (non-negative emissions); the prior is lognormal with
        mean 1 and relative sd ``prior_error``.
    gradient_tolerance : float
        Whitened gradient-norm tolerance of the lognormal MAP.
    obs_correlation_length_km : float, optional
        Exponential correlation of the model-error part of S_o within a time bin
        (default: the Jacobian attribute of the same name; 0 = none).
    sensitivity_fraction : float
        An observation counts for a region (``total_n_observations``) when its Jacobian
        column for the region's elements exceeds this fraction of the column's maximum.
    """

    prior_error: float = 0.5
    correlation_length_km: float | None = None
    background_prior_sigma: float | None = None
    background_gradient_sigma: float | None = None
    inflow_prior_sigma: float | None = None
    lognormal: bool = False
    gradient_tolerance: float = 1e-6
    obs_correlation_length_km: float | None = None
    sensitivity_fraction: float = 0.1


@dataclass(frozen=True)
class VerdictThresholds:
    """Verdict thresholds (DESIGN.md 5.5): each default is written here once.

    Attributes
    ----------
    z_critical : float
        |z| at or above which a difference is a discrepancy.
    min_error_reduction : float
        Below it (1 - sigma / sigma_prior, with the combined sigma) "not constrained".
    min_sensitivity : float
        Below it (the region's averaging-kernel sensitivity) "not constrained".
    min_observations : int
        Fewer observations seeing the region: "not constrained".
    min_domain_share : float
        A region with a smaller share of its area or of its prior emission inside the
        domain is "partly outside the domain": never compared with its national total.
    max_detectable_difference : float
        "consistent" needs the comparison to have been able to see a difference of this
        fraction of the reported total (the smallest detectable difference
        :math:`z_{crit} \\sigma_z`); otherwise the data cannot tell and the verdict is
        "not constrained". 0.5: a difference of half the reported total (a halving, or
        1.5 times) must have been detectable.
    max_chi2_obs : float
        A region whose observations the model fits worse than this (mean squared whitened
        residual of the observations that see it) is "not constrained": the transport model
        cannot reproduce what the satellite saw there.
    transport_error : float
        Relative 1-sigma structural error of the transport model on a region's total,
        added in quadrature to the analytic and ensemble uncertainty (the part of
        transport-model error that a parametric ensemble does not sample).
    """

    z_critical: float = 2.0
    min_error_reduction: float = 0.2
    min_sensitivity: float = 0.1
    min_observations: int = 5
    min_domain_share: float = 0.95
    max_detectable_difference: float = 0.5
    max_chi2_obs: float = 2.0
    transport_error: float = 0.25

    def as_dict(self) -> dict[str, float | int]:
        """Plain values for outputs (``min_observations`` an int, the others floats), in field order."""
        return {f.name: (int if f.name == "min_observations" else float)(getattr(self, f.name)) for f in fields(self)}
