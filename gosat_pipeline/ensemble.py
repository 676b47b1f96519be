"""Ensembles of inversions over the uncertain choices: transport error in the uncertainty.

Transport-model error is systematic and correlated: booked as independent noise per
super-observation it averages away over thousands of them, and the observation
chi-square does not reveal it (DESIGN.md 5.3). The field's practice for national totals
is to repeat the inversion over the uncertain choices - transport parameters, wind
perturbations, error settings, background treatment - and to report an uncertainty that
covers both the analytic posterior error and the ensemble's spread (Maasakkers et al.
2019; Worden et al. 2022; Shen et al. 2023; the sensitivity inversions of the
Integrated Methane Inversion, Varon et al. 2022).

:func:`design_members` draws the members (member 0 is the configured inversion; the
others perturb it by a Latin hypercube over the ranges given), :func:`invert_ensemble`
builds each member's Jacobian and posterior on Dask, and :func:`ensemble_dataset` keeps
what the comparison needs: each member's emission block of the posterior mean,
covariance and averaging kernel, with the member's settings.
:func:`gosat_pipeline.compare.compare_to_inventory` combines them (law of total
variance) and gives "not constrained (transport-sensitive)" where the members disagree.

References
----------
McKay, M. D., Beckman, R. J. and Conover, W. J. (1979): A comparison of three methods for
selecting values of input variables in the analysis of output from a computer code,
Technometrics 21, 239-245 (Latin hypercube sampling).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import xarray as xr

from gosat_pipeline.inversion import invert
from gosat_pipeline.params import ENSEMBLE_RANGES
from gosat_pipeline.schema import gas_units, output_attrs
from gosat_pipeline.statevector import StateVector
from gosat_pipeline.transport import BACKGROUND_MODES, TransportSettings, build_jacobian

__all__ = [
    "DEFAULT_RANGES",
    "OPERATOR_CHOICES",
    "Member",
    "design_members",
    "ensemble_dataset",
    "invert_ensemble",
    "run_member",
]

logger = logging.getLogger(__name__)

#: Default perturbation ranges (:data:`gosat_pipeline.params.ENSEMBLE_RANGES`, which says why).
DEFAULT_RANGES: dict[str, Any] = dict(ENSEMBLE_RANGES)

#: Choices that act on the built-in operator only: with external footprints the Jacobian does
#: not depend on them, so they are not varied (transport error then comes from the structural
#: term of :func:`gosat_pipeline.compare.compare` alone).
OPERATOR_CHOICES: tuple[str, ...] = ("eddy_diffusivity", "ventilation_time", "wind_speed", "wind_direction", "inflow")


@dataclass(frozen=True)
class Member:
    """One inversion of the ensemble.

    Attributes
    ----------
    index : int
        0 for the configured inversion.
    transport : TransportSettings
    sigma_model : float or None
        Model error, gas units (None: the gas's default).
    prior_error : float
        Relative prior error of the emission scale factors.
    factors : dict
        The perturbation drawn (factor per continuous choice, degrees for the direction).
    """

    index: int
    transport: TransportSettings
    sigma_model: float | None
    prior_error: float
    factors: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        """Short description for logs and reports."""
        if not self.factors:
            return "configured inversion"
        return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.factors.items())


def _lhs(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Latin hypercube sample: n points in [0, 1)^d, one per stratum in every dimension."""
    u = (np.arange(n)[:, None] + rng.uniform(size=(n, d))) / n
    for j in range(d):
        u[:, j] = u[rng.permutation(n), j]
    return u


def _choice_value(choice: str, bounds: Any, u: float) -> float:
    """A member's value of continuous ``choice`` at Latin-hypercube coordinate ``u`` in [0, 1).

    ``wind_direction`` is an offset in degrees, uniform in ``bounds``; every other choice
    is a factor, log-uniform in ``bounds`` (both > 0).
    """
    lo, hi = (float(x) for x in bounds)
    if choice == "wind_direction":
        return lo + (hi - lo) * u
    if not (lo > 0 and hi > 0):
        raise ValueError(f"ensemble {choice}: factors must be > 0; got {bounds}")
    return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)


def design_members(
    transport: TransportSettings,
    *,
    sigma_model: float | None,
    prior_error: float,
    members: int,
    ranges: Mapping[str, Any] | None = None,
    seed: int = 0,
    default_sigma_model: float | None = None,
    external_footprints: bool = False,
) -> list[Member]:
    """The configured inversion plus ``members`` perturbed ones.

    Parameters
    ----------
    transport : TransportSettings
        The configured operator (member 0).
    sigma_model, prior_error : float
        The configured model error (gas units; None: ``default_sigma_model``) and prior error.
    members : int
        Perturbed members to add (0: no ensemble).
    ranges : mapping, optional
        Choice -> (min, max) factor, or (min, max) degrees for ``wind_direction``, or the
        values to cycle through for ``inflow`` (estimate boundary inflow or not) and
        ``background`` (background modes); a choice left out is not varied.
        Default :data:`DEFAULT_RANGES`.
    seed : int
        Seed of the Latin hypercube.
    external_footprints : bool
        The Jacobian comes from external footprints: the built-in operator's choices
        (:data:`OPERATOR_CHOICES`) have no effect and are left out.

    Returns
    -------
    list of Member
    """
    ranges = dict(DEFAULT_RANGES if ranges is None else ranges)
    unknown = set(ranges) - set(DEFAULT_RANGES)
    if unknown:
        raise ValueError(f"unknown ensemble choices {sorted(unknown)}; known: {sorted(DEFAULT_RANGES)}")
    if external_footprints:
        dropped = sorted(set(ranges) & set(OPERATOR_CHOICES))
        if dropped:
            logger.info("ensemble: %s not varied (external footprints do not depend on them)", dropped)
        ranges = {k: v for k, v in ranges.items() if k not in OPERATOR_CHOICES}
    base = Member(0, transport, sigma_model, prior_error)
    if members <= 0 or not ranges:
        return [base]
    cont = [
        k
        for k in ("eddy_diffusivity", "ventilation_time", "wind_speed", "wind_direction", "sigma_model", "prior_error")
        if k in ranges
    ]
    rng = np.random.default_rng(seed)
    u = _lhs(members, max(len(cont), 1), rng)
    backgrounds = [b for b in ranges.get("background", ()) if b in BACKGROUND_MODES]
    inflows = [bool(x) for x in ranges.get("inflow", ())]
    out = [base]
    sm0 = sigma_model if sigma_model is not None else default_sigma_model
    for i in range(members):
        f: dict[str, Any] = {}
        for j, k in enumerate(cont):
            f[k] = _choice_value(k, ranges[k], u[i, j])
        if backgrounds:
            f["background"] = backgrounds[(i + 1) % len(backgrounds)]
        if inflows:
            f["inflow"] = inflows[i % len(inflows)]
        tp = replace(
            transport,
            eddy_diffusivity=transport.eddy_diffusivity * f.get("eddy_diffusivity", 1.0),
            ventilation_time=transport.ventilation_time * f.get("ventilation_time", 1.0),
            wind_scale=transport.wind_scale * f.get("wind_speed", 1.0),
            wind_rotation=transport.wind_rotation + f.get("wind_direction", 0.0),
            background=f.get("background", transport.background),
            inflow=f.get("inflow", transport.inflow),
        )
        sm = None if sm0 is None else sm0 * f.get("sigma_model", 1.0)
        out.append(Member(i + 1, tp, sm, prior_error * f.get("prior_error", 1.0), f))
    return out


def run_member(
    member: Member,
    obs: xr.Dataset,
    emissions: xr.DataArray,
    winds: Any,
    *,
    jacobian_kwargs: Mapping[str, Any] | None = None,
    invert_kwargs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Jacobian and posterior of one member (the unit of work sent to a Dask worker)."""
    jac = build_jacobian(
        obs,
        emissions,
        winds=winds,
        settings=member.transport,
        sigma_model=member.sigma_model,
        **dict(jacobian_kwargs or {}),
    )
    post = invert(jac, prior_error=member.prior_error, **dict(invert_kwargs or {}))
    post.attrs["ensemble_member"] = member.index
    post.attrs["ensemble_member_label"] = member.label()
    return post


def invert_ensemble(
    obs: xr.Dataset,
    emissions: xr.DataArray,
    members: Sequence[Member],
    *,
    winds: Any = None,
    jacobian_kwargs: Mapping[str, Any] | None = None,
    invert_kwargs: Mapping[str, Any] | None = None,
) -> list[xr.Dataset]:
    """Run every member's inversion on the active Dask scheduler; return the posteriors.

    The inputs are put into the graph once (one key each) so that a distributed
    scheduler ships them to each worker once; members run in parallel.
    """
    import dask

    if len(members) == 1:
        return [
            run_member(members[0], obs, emissions, winds, jacobian_kwargs=jacobian_kwargs, invert_kwargs=invert_kwargs)
        ]
    d_obs, d_em, d_w = dask.delayed(obs), dask.delayed(emissions), dask.delayed(winds)
    tasks = [
        dask.delayed(run_member)(
            m,
            d_obs,
            d_em,
            d_w,
            jacobian_kwargs=jacobian_kwargs,
            invert_kwargs=invert_kwargs,
            dask_key_name=f"ensemble-member-{m.index}",
        )
        for m in members
    ]
    return list(dask.compute(*tasks))


def ensemble_dataset(posteriors: Sequence[xr.Dataset], members: Sequence[Member]) -> xr.Dataset:
    """What the comparison needs of each member: the emission block of x_hat, S_hat and A.

    Returns
    -------
    xarray.Dataset
        Dims ``member``, ``emission``, ``emission2``: ``member_x_posterior``,
        ``member_S_posterior``, ``member_averaging_kernel`` (units 1, scale factors),
        ``member_chi2_obs_normalized``, ``member_chi2_state_normalized``, ``member_dofs``
        and every member setting; coords ``emission_region``, ``emission_sector``,
        ``emission_period`` (aligned with the base posterior's emission elements).
    """
    base = StateVector.from_coords(posteriors[0])
    e0 = np.flatnonzero(base.emission)
    keys = list(zip(base.region[e0], base.sector[e0], base.period[e0], strict=True))
    xs, Ss, As, Ps = [], [], [], []
    for post in posteriors:
        sv = StateVector.from_coords(post)
        e = np.flatnonzero(sv.emission)
        pos = {k: i for i, k in enumerate(zip(sv.region[e], sv.sector[e], sv.period[e], strict=True))}
        order = e[[pos[k] for k in keys]]
        ix = np.ix_(order, order)
        xs.append(post["x_posterior"].values[order])
        Ss.append(post["S_posterior"].values[ix])
        As.append(post["averaging_kernel"].values[ix])
        Ps.append(post["S_prior"].values[ix])
    gas = str(posteriors[0].attrs.get("gas", "")).upper()
    units = gas_units(gas) if gas in ("CO2", "CH4") else "1"

    def var(name: str, dims: str | tuple[str, ...], values: Any) -> tuple[Any, Any, dict[str, Any]]:
        return dims, values, output_attrs("ensemble", name, units=units)

    square = ("member", "emission", "emission2")
    ds = xr.Dataset(
        {
            "member_x_posterior": var("member_x_posterior", ("member", "emission"), np.array(xs)),
            "member_S_posterior": var("member_S_posterior", square, np.array(Ss)),
            "member_averaging_kernel": var("member_averaging_kernel", square, np.array(As)),
            "member_S_prior": var("member_S_prior", square, np.array(Ps)),
        },
        coords={
            "member": var("member", "member", np.arange(len(posteriors))),
            "emission_region": var("emission_region", "emission", np.array([k[0] for k in keys], dtype=str)),
            "emission_sector": var("emission_sector", "emission", np.array([k[1] for k in keys], dtype=str)),
            "emission_period": var("emission_period", "emission", np.array([k[2] for k in keys], dtype=str)),
        },
    )
    for name in ("chi2_obs_normalized", "chi2_state_normalized", "dofs"):
        ds[f"member_{name}"] = var(
            f"member_{name}", "member", np.array([float(p[name]) if name in p else np.nan for p in posteriors])
        )
    for k in ("eddy_diffusivity", "ventilation_time", "wind_scale", "wind_rotation"):
        ds[f"member_{k}"] = var(
            f"member_{k}", "member", np.array([asdict(m.transport)[k] for m in members], dtype="float64")
        )
    ds["member_background"] = var(
        "member_background", "member", np.array([m.transport.background for m in members], dtype=str)
    )
    ds["member_inflow"] = var(
        "member_inflow", "member", np.array([int(m.transport.inflow) for m in members], dtype="int8")
    )
    ds["member_prior_error"] = var("member_prior_error", "member", np.array([m.prior_error for m in members]))
    ds["member_sigma_model"] = var(
        "member_sigma_model", "member", np.array([np.nan if m.sigma_model is None else m.sigma_model for m in members])
    )
    ds.attrs.update(
        title="ensemble of inversions over transport and error choices",
        Conventions="CF-1.8",
        gas=str(posteriors[0].attrs.get("gas", "")),
        members=len(posteriors),
    )
    return ds
