"""Canonical names, units and CF attributes: the contracts between stages.

This module is data (tables of names, units and attributes, in the manner of
cf-xarray's ``criteria.py``) plus small validators. Stages exchange only
datasets that pass these validators; see ``DESIGN.md`` section 4.

The tables are the single source of truth for variable names. A stage that
writes a variable takes its attributes from here with :func:`cf_attrs`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.params import VerdictThresholds  # re-exported: defined with the other settings

__all__ = [
    "VerdictThresholds",
    "G0",
    "SECONDS_PER_YEAR",
    "GASES",
    "GAS_UNITS",
    "GAS_STANDARD_NAMES",
    "SOUNDING_DIM",
    "LEVEL_DIM",
    "SOUNDING_VARIABLES",
    "LEVEL_VARIABLES",
    "GRIDDED_VARIABLES",
    "FILE_TABLE_VARIABLES",
    "POSTERIOR_VARIABLES",
    "DISCREPANCY_COLUMNS",
    "DISCREPANCY_SCHEMA_VERSION",
    "VERDICTS",
    "INVERSION_STATUS",
    "TOTAL_STATUS",
    "status_attrs",
    "status_text",
    "cf_attrs",
    "gas_units",
    "validate_soundings",
    "validate_gridded",
    "validate_posterior",
    "global_attrs",
    "OUTPUT_TITLES",
    "OUTPUT_VARIABLES",
    "output_attrs",
    "output_title",
]

SOUNDING_DIM = "sounding"
LEVEL_DIM = "level"

GASES: tuple[str, ...] = ("CO2", "CH4")

#: Canonical units of the column-averaged dry-air mole fraction per gas.
GAS_UNITS: dict[str, str] = {"CO2": "ppm", "CH4": "ppb"}

#: CF standard names of the column-averaged dry-air mole fraction (CF table v84+).
GAS_STANDARD_NAMES: dict[str, str] = {
    "CO2": "dry_atmosphere_mole_fraction_of_carbon_dioxide",
    "CH4": "dry_atmosphere_mole_fraction_of_methane",
}

#: Molar masses in kg mol-1, used to turn column enhancements into fluxes.
MOLAR_MASS: dict[str, float] = {"CO2": 44.0095e-3, "CH4": 16.0425e-3, "air": 28.9644e-3}

#: Multiplier from canonical units to mol mol-1.
GAS_UNIT_TO_MOLMOL: dict[str, float] = {"CO2": 1e-6, "CH4": 1e-9}
#: Julian year in seconds: every kg s-1 <-> kg yr-1 conversion of the package uses it.
SECONDS_PER_YEAR = 365.25 * 86400.0
#: Standard gravity, m s-2.
G0 = 9.80665

# Soundings: variables on (sounding,). "gas" in units means the gas's canonical unit.
SOUNDING_VARIABLES: dict[str, dict[str, Any]] = {
    "xgas": {
        "required": True,
        "units": "gas",
        "long_name": "column-averaged dry-air mole fraction",
    },
    "xgas_uncertainty": {
        "required": True,
        "units": "gas",
        "long_name": "1-sigma retrieval uncertainty of the column-averaged mole fraction",
    },
    "xgas_apriori": {
        "required": False,
        "units": "gas",
        "long_name": "a priori column-averaged dry-air mole fraction",
    },
    "quality_flag": {
        "required": True,
        "units": "1",
        "long_name": "quality flag (0 = good after translating the product's convention)",
        "flag_values": np.array([0, 1], dtype="int8"),
        "flag_meanings": "good bad",
    },
    "surface_pressure": {
        "required": False,
        "units": "hPa",
        "long_name": "surface pressure",
        "standard_name": "surface_air_pressure",
    },
    "solar_zenith_angle": {
        "required": False,
        "units": "degree",
        "long_name": "solar zenith angle",
        "standard_name": "solar_zenith_angle",
    },
    "surface_type": {
        "required": False,
        "units": "1",
        "long_name": "observation mode / surface type",
        "flag_values": np.array([0, 1], dtype="int8"),
        "flag_meanings": "land glint",
    },
    "sounding_id": {"required": False, "long_name": "product sounding identifier"},
    "file_index": {
        "required": False,
        "units": "1",
        "long_name": "granule the sounding was read from: index into granule_path (0-based)",
    },
    "source_file": {"required": False, "long_name": "granule the sounding was read from"},
}

#: The file table of a soundings dataset (dims ``granule``): ``file_index`` points into it.
FILE_TABLE_VARIABLES: dict[str, dict[str, Any]] = {
    "granule_path": {"long_name": "path of each granule read, in input order"},
}

# Level variables on (sounding, level), surface first.
LEVEL_VARIABLES: dict[str, dict[str, Any]] = {
    "averaging_kernel": {
        "units": "1",
        "long_name": "column averaging kernel (normalised), surface first",
    },
    "pressure_weight": {
        "units": "1",
        "long_name": "pressure weighting function h (sums to 1), surface first",
    },
    "profile_apriori": {
        "units": "gas",
        "long_name": "a priori mole fraction profile, surface first",
    },
    "pressure": {
        "units": "hPa",
        "long_name": "pressure of the retrieval levels, surface first",
        "standard_name": "air_pressure",
    },
}

GRIDDED_VARIABLES: dict[str, dict[str, Any]] = {
    "n_soundings": {
        "units": "1",
        "long_name": "number of soundings in the cell",
        "cell_methods": "time: latitude: longitude: sum",
    },
    "xgas_mean": {
        "units": "gas",
        "long_name": "mean column-averaged dry-air mole fraction",
        "cell_methods": "time: latitude: longitude: mean",
        "ancillary_variables": "n_soundings xgas_std xgas_standard_error",
    },
    "xgas_weighted_mean": {
        "units": "gas",
        "long_name": "inverse-variance weighted mean column-averaged dry-air mole fraction",
        "cell_methods": "time: latitude: longitude: mean (weighted by xgas_uncertainty**-2)",
        "ancillary_variables": "n_soundings xgas_uncertainty_mean",
    },
    "xgas_std": {
        "units": "gas",
        "long_name": "standard deviation of soundings in the cell",
        "cell_methods": "time: latitude: longitude: standard_deviation",
    },
    "xgas_standard_error": {
        "units": "gas",
        "long_name": "standard error of the cell mean",
        "cell_methods": "time: latitude: longitude: standard_deviation",
    },
    "xgas_uncertainty_mean": {
        "units": "gas",
        "long_name": "mean retrieval uncertainty of soundings in the cell",
        "cell_methods": "time: latitude: longitude: mean",
    },
    "averaging_kernel_pbl": {
        "units": "1",
        "long_name": "mean pressure-weighted boundary-layer column averaging kernel",
        "cell_methods": "time: latitude: longitude: mean",
    },
}

POSTERIOR_VARIABLES: tuple[str, ...] = (
    "x_prior",
    "x_posterior",
    "S_prior",
    "S_posterior",
    "averaging_kernel",
)

DISCREPANCY_SCHEMA_VERSION = "2.0.0"

#: Verdict vocabulary of the comparison (DESIGN.md 5.5).
VERDICTS: tuple[str, ...] = (
    "consistent",
    "higher than reported",
    "lower than reported",
    "not constrained",
    "not constrained (transport-sensitive)",
    "partly outside the domain",
    "no reported value",
)

#: Status vocabulary of an inversion (the posterior's ``status``, ``InversionResult.status``):
#: code -> flag meaning. A status other than 0 means the posterior is the prior.
INVERSION_STATUS: dict[int, str] = {0: "ok", 1: "no_observations", 2: "degenerate"}
#: Status vocabulary of a regional total (the posterior's ``total_status``): codes 0 and 1 mean
#: what they mean for the inversion, 2 that the region has no prior emission in that period.
TOTAL_STATUS: dict[int, str] = {0: "ok", 1: "no_observations", 2: "no_prior_emission"}


def status_attrs(vocabulary: Mapping[int, str]) -> dict[str, Any]:
    """CF ``flag_values`` (int8) and ``flag_meanings`` of a status vocabulary."""
    return {"flag_values": np.array(list(vocabulary), dtype="int8"), "flag_meanings": " ".join(vocabulary.values())}


def status_text(code: int, vocabulary: Mapping[int, str] = INVERSION_STATUS) -> str:
    """A status code in plain words (``"no observations"``); unknown codes as ``"status N"``."""
    return vocabulary[code].replace("_", " ") if code in vocabulary else f"status {code}"


#: Columns of discrepancies.csv, in order, with units (the JSON schema mirrors them).
DISCREPANCY_COLUMNS: dict[str, str] = {
    "region": "ISO 3166-1 alpha-3 code or aggregate name",
    "region_name": "human-readable name",
    "gas": "CO2 or CH4",
    "period": "ISO 8601 period label",
    "reference": "name of the reported inventory compared against",
    "prior_total": "Tg yr-1",
    "prior_sigma": "Tg yr-1",
    "posterior_total": "Tg yr-1 (mean over the ensemble's inversions)",
    "posterior_sigma": "Tg yr-1 (combined 1-sigma: sqrt(posterior_sigma_analytic^2 + ensemble_spread^2 + "
    "transport_error_sigma^2); the analytic part inflated by sqrt(chi2_state_inversion) when that exceeds 1)",
    "reported_total": "Tg yr-1",
    "reported_sigma": "Tg yr-1",
    "difference": "Tg yr-1 (posterior - reported)",
    "relative_difference": "1 (difference / reported)",
    "z_score": "1",
    "z_form": "'shift' (prior is the reported inventory) or 'direct'",
    "error_reduction": "1 (1 - sigma_post / sigma_prior)",
    "sensitivity": "1 (region averaging-kernel sensitivity)",
    "n_observations": "count",
    "verdict": "one of VERDICTS",
    # appended by the comparison stage (issue 7); order is the CSV column order
    "reason": "plain-language reason for the verdict (which gate failed, or the z test)",
    "members": "space-separated member codes of an aggregate; empty for a single region",
    "reported_year": "year of the reported value matched to the period",
    "reported_total_smoothed": "Tg yr-1 (reported inventory seen through the averaging kernel, "
    "w^T (x_a + A (x_rep - x_a)))",
    "uncertainty_source": "where reported_sigma comes from (reported, default model, none)",
    "z_shift": "1 ((w^T x_hat - w^T x_a) / sqrt(w^T (S_a - S_hat) w)); valid when the prior is the reported inventory",
    "z_direct": "1 ((posterior_total - reported_total_smoothed) / sqrt(posterior_sigma^2 + reported_sigma^2))",
    "compared_value": "Tg yr-1 (what posterior_total is tested against: reported_total_smoothed for the direct "
    "form, prior_total for the shift form)",
    "compared_sigma": "Tg yr-1 (the z denominator: z_score = (posterior_total - compared_value) / compared_sigma)",
    "posterior_sigma_analytic": "Tg yr-1 (analytic posterior 1-sigma, sqrt(w^T S_hat w), mean over members)",
    "ensemble_spread": "Tg yr-1 (standard deviation of the members' totals; 0 without an ensemble)",
    "transport_error_sigma": "Tg yr-1 (structural transport error: transport_error x |posterior_total|)",
    "detectable_difference": "Tg yr-1 (smallest difference the test could detect: z_critical x compared_sigma)",
    "ensemble_members": "count (inversions combined: 1 without an ensemble)",
    "ensemble_min": "Tg yr-1 (smallest member total)",
    "ensemble_max": "Tg yr-1 (largest member total)",
    "z_min": "1 (smallest member z)",
    "z_max": "1 (largest member z)",
    "chi2_state": "1 (state chi-square of the region's elements over its expected value, base inversion)",
    "chi2_obs": "1 (mean squared whitened residual of the observations that see the region, base inversion)",
    "domain_share": "1 (smaller of the area and prior-emission shares of the region inside the domain)",
    "domain_share_area": "1 (share of the region's area inside the domain)",
    "domain_share_emission": "1 (share of the region's prior emission inside the domain; empty if unknown)",
    "z_critical": "1 (threshold: |z| >= z_critical is a discrepancy)",
    "min_error_reduction": "1 (threshold: below it the verdict is 'not constrained')",
    "min_sensitivity": "1 (threshold: below it the verdict is 'not constrained')",
    "min_observations": "count (threshold: below it the verdict is 'not constrained')",
    "min_domain_share": "1 (threshold: below it the verdict is 'partly outside the domain')",
    "max_detectable_difference": "1 (threshold: 'consistent' needs detectable_difference <= this x reported_total)",
    "max_chi2_obs": "1 (threshold: a region whose observations the model fits worse is 'not constrained')",
    "transport_error": "1 (relative 1-sigma structural transport error added to posterior_sigma)",
    "gosat_pipeline_version": "version of the package that made the comparison",
}


def gas_units(gas: str) -> str:
    """Return the canonical units of the column mole fraction of ``gas``.

    Parameters
    ----------
    gas : {"CO2", "CH4"}

    Returns
    -------
    str
        ``"ppm"`` for CO2, ``"ppb"`` for CH4.
    """
    try:
        return GAS_UNITS[gas.upper()]
    except KeyError:
        raise SchemaError(f"unknown gas {gas!r}; allowed: {list(GAS_UNITS)}") from None


def cf_attrs(name: str, gas: str | None = None) -> dict[str, Any]:
    """CF attributes of canonical variable ``name`` (units resolved for ``gas``).

    Parameters
    ----------
    name : str
        A key of :data:`SOUNDING_VARIABLES`, :data:`LEVEL_VARIABLES`,
        :data:`GRIDDED_VARIABLES` or :data:`FILE_TABLE_VARIABLES`.
    gas : str, optional
        Needed for variables whose units are those of the gas.

    Returns
    -------
    dict
        ``units``, ``long_name`` and, where they exist, ``standard_name``,
        ``cell_methods``, ``ancillary_variables``, ``flag_values``, ``flag_meanings``.
    """
    for table in (SOUNDING_VARIABLES, LEVEL_VARIABLES, GRIDDED_VARIABLES, FILE_TABLE_VARIABLES):
        if name in table:
            spec = dict(table[name])
            break
    else:
        raise SchemaError(f"{name!r} is not a canonical variable")
    spec.pop("required", None)
    if spec.get("units") == "gas":
        if gas is None:
            raise SchemaError(f"units of {name!r} depend on the gas; pass gas=")
        spec["units"] = gas_units(gas)
        if name in ("xgas", "xgas_mean", "xgas_weighted_mean", "xgas_apriori"):
            spec["standard_name"] = GAS_STANDARD_NAMES[gas.upper()]
    if gas is not None and "long_name" in spec:
        spec["long_name"] = f"{gas.upper()} {spec['long_name']}"
    return spec


def global_attrs(title: str, source: str, history: str = "", **extra: Any) -> dict[str, Any]:
    """Global attributes shared by every netCDF output of the package.

    Parameters
    ----------
    title, source, history : str
        CF global attributes; an empty ``history`` becomes
        ``"created by gosat_pipeline <version>"`` (CF 2.6.2 asks for a non-empty one; the
        pipeline replaces it with the run's timestamped line when it writes the file).
    **extra
        Further attributes (values must be netCDF-serialisable).
    """
    from gosat_pipeline import __version__

    attrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "title": title,
        "institution": "gosat_pipeline user",
        "source": source,
        "history": history or f"created by gosat_pipeline {__version__}",
        "references": "https://github.com/gosat-pipeline/gosat_pipeline",
        "gosat_pipeline_version": __version__,
    }
    attrs.update(extra)
    return attrs


#: CF attributes of the variables the inversion stages write, by output then variable: the
#: single table the stages take them from with :func:`output_attrs`. String values may hold
#: placeholders filled from its keyword arguments: ``{units}`` (the observations' units, the
#: gas's column units), ``{gas}``, ``{g}`` (the gas and a space, or nothing), ``{first}``
#: (the L3 variable a super-observation was taken from), ``{state_note}``, ``{cov_note}``.
OUTPUT_VARIABLES: dict[str, dict[str, dict[str, Any]]] = {
    # transport.super_observations: one value per (time bin, cell) with soundings
    "observations": {
        "y": {"units": "{units}", "long_name": "{gas} super-observation ({first})"},
        "sigma": {"units": "{units}", "long_name": "total 1-sigma observation error"},
        "sigma_retrieval": {"units": "{units}", "long_name": "single-sounding retrieval error"},
        "sigma_model": {"units": "{units}", "long_name": "model error"},
        "n": {"units": "1", "long_name": "soundings in the super-observation"},
        "column_sensitivity": {"units": "1", "long_name": "boundary-layer AK sensitivity"},
        "latitude": {"units": "degrees_north", "standard_name": "latitude"},
        "longitude": {"units": "degrees_east", "standard_name": "longitude"},
        "time": {"long_name": "start of the time bin"},
        "time_index": {"units": "1", "long_name": "index of the L3 time bin"},
        "cell": {"units": "1", "long_name": "flat cell index"},
        # transport.column_sensitivity, on the L3 grid
        "column_sensitivity_l3": {
            "units": "1",
            "long_name": "boundary-layer column averaging-kernel sensitivity (1 where missing)",
        },
    },
    # transport.build_jacobian
    "jacobian": {
        "jacobian": {
            "units": "{units}",
            "comment": "d(observation)/d(state element) in {units} per state unit (see state_units): "
            "scale factors for emissions, gas units for background offsets and inflow",
            "long_name": "Jacobian of {gas} super-observations with respect to the state vector",
        },
        "obs_background_reference": {
            "units": "{units}",
            "long_name": "reference background subtracted before the inversion (median of the window)",
        },
    },
    # transport.footprints.open_footprints: external footprints (STILT, FLEXPART, NAME, IMI)
    "footprints": {
        "footprint": {
            "units": "m2 s mol-1",
            "long_name": "sensitivity of the column-average dry-air mole fraction to a surface flux density",
        },
        "obs_latitude": {"units": "degrees_north", "long_name": "receptor latitude"},
        "obs_longitude": {"units": "degrees_east", "long_name": "receptor longitude"},
        "obs_time": {"long_name": "receptor time (UTC)"},
        "obs_id": {"long_name": "file and receptor the footprint came from"},
        "obs_outside_fraction": {
            "units": "1",
            "long_name": "share of the footprint outside the inversion grid (not seen by the state)",
        },
        "latitude": {"units": "degrees_north", "standard_name": "latitude"},
        "longitude": {"units": "degrees_east", "standard_name": "longitude"},
    },
    # inversion.invert: the posterior (state, state2) and its scalar diagnostics
    "posterior": {
        "x_prior": {
            "units": "1",
            "long_name": "prior state vector",
            "comment": "{state_note}",
            "ancillary_variables": "x_prior_sigma",
        },
        "x_posterior": {
            "units": "1",
            "long_name": "posterior state vector (mean)",
            "comment": "{state_note}",
            "ancillary_variables": "x_posterior_sigma",
        },
        "x_posterior_sigma": {
            "units": "1",
            "long_name": "posterior 1-sigma uncertainty of the state vector",
            "comment": "{state_note}",
        },
        "x_prior_sigma": {
            "units": "1",
            "long_name": "prior 1-sigma uncertainty of the state vector",
            "comment": "{state_note}",
        },
        "x_posterior_median": {
            "units": "1",
            "long_name": "posterior state vector (median, lognormal)",
            "comment": "{state_note}",
        },
        "S_prior": {"units": "1", "long_name": "prior error covariance of the state vector", "comment": "{cov_note}"},
        "S_posterior": {
            "units": "1",
            "comment": "{cov_note}",
            "long_name": "posterior error covariance of the state vector",
        },
        "averaging_kernel": {
            "units": "1",
            "long_name": "averaging kernel d x_hat / d x_true",
            "comment": "element (i, j) = d x_hat_i / d x_true_j (Rodgers 2000), in the units of "
            "element i divided by those of element j (see state_units): 1 within "
            "elements of the same kind",
        },
        "dofs": {"units": "1", "long_name": "degrees of freedom for signal, tr(A)"},
        "chi2_obs": {"units": "1", "long_name": "observation chi-square per observation, J_o / m"},
        "chi2_state": {"units": "1", "long_name": "state chi-square per element, J_a / n"},
        "n_observations": {"units": "1", "long_name": "number of super-observations"},
        "status": {"units": "1", "long_name": "inversion status", **status_attrs(INVERSION_STATUS)},
        "state_units": {"long_name": "units of each state element"},
        # inversion.consistency_diagnostics
        "chi2_obs_normalized": {
            "units": "1",
            "long_name": "observation chi-square over its expected value, J_o / (m - DOFS)",
        },
        "chi2_state_normalized": {"units": "1", "long_name": "state chi-square over its expected value, J_a / DOFS"},
        "chi2_obs_by_time": {
            "units": "1",
            "long_name": "mean squared whitened residual of the time bin's observations",
        },
        "time_bin_start": {"long_name": "start of the L3 time bin"},
    },
    # inversion.region_totals: totals of the emission elements per region and period
    "region_totals": {
        "total_prior": {
            "units": "Tg yr-1",
            "long_name": "prior regional total",
            "ancillary_variables": "total_prior_sigma",
        },
        "total_prior_sigma": {"units": "Tg yr-1", "long_name": "prior 1-sigma, sqrt(w^T S_a w)"},
        "total_posterior": {
            "units": "Tg yr-1",
            "long_name": "posterior regional total",
            "ancillary_variables": "total_posterior_sigma total_error_reduction total_sensitivity "
            "total_n_observations total_status",
        },
        "total_posterior_sigma": {"units": "Tg yr-1", "long_name": "posterior 1-sigma, sqrt(w^T S w)"},
        "total_prior_covariance": {
            "units": "Tg2 yr-2",
            "long_name": "prior error covariance of the regional totals, W S_a W^T",
        },
        "total_posterior_covariance": {
            "units": "Tg2 yr-2",
            "long_name": "posterior error covariance of the regional totals, W S W^T",
        },
        "total_error_reduction": {
            "units": "1",
            "long_name": "error reduction of the regional total, 1 - sigma_post / sigma_prior",
        },
        "total_sensitivity": {
            "units": "1",
            "long_name": "averaging-kernel sensitivity of the regional total, w^T A w / w^T w",
        },
        "total_n_observations": {
            "units": "1",
            "long_name": "observations whose region column exceeds sensitivity_fraction of its max",
        },
        "total_chi2_state": {
            "units": "1",
            "long_name": "state chi-square of the region's elements over its expected value",
        },
        "total_chi2_obs": {
            "units": "1",
            "long_name": "mean squared whitened residual of the observations that see the region",
        },
        "total_status": {"units": "1", "long_name": "status of the regional total", **status_attrs(TOTAL_STATUS)},
        "total_region": {"long_name": "region code"},
        "total_region_name": {"long_name": "region name"},
        "total_role": {"long_name": "role of the region (requested, other, rest)"},
        "total_period": {"long_name": "ISO 8601 period"},
    },
    # inversion.posterior_flux_maps (standard names added by :func:`output_attrs` for a known gas)
    "flux_maps": {
        "prior_flux": {"units": "kg m-2 s-1", "long_name": "prior {g}emission flux"},
        "posterior_flux": {
            "units": "kg m-2 s-1",
            "long_name": "posterior {g}emission flux",
            "ancillary_variables": "posterior_flux_sigma averaging_kernel_sensitivity",
        },
        "posterior_flux_sigma": {
            "units": "kg m-2 s-1",
            "long_name": "posterior 1-sigma uncertainty of the {g}emission flux",
        },
        "scale_factor": {"units": "1", "long_name": "posterior / prior emission flux"},
        "averaging_kernel_sensitivity": {"units": "1", "long_name": "diagonal of the averaging kernel mapped to cells"},
        "period": {"long_name": "ISO 8601 period"},
    },
    # inversion.mass_balance
    "mass_balance": {
        "mass_balance_emission": {
            "units": "Tg yr-1",
            "long_name": "{gas} mass-balance emission estimate",
            "method": "Q = dX N_air M U sqrt(A) (Varon et al. 2018; Buchwitz et al. 2017)",
        },
        "region": {"long_name": "region code"},
        "region_name": {"long_name": "region name"},
    },
    # ensemble.ensemble_dataset: dims member, emission, emission2
    "ensemble": {
        "member_x_posterior": {"units": "1", "long_name": "posterior emission scale factors of each member"},
        "member_S_posterior": {"units": "1", "long_name": "posterior covariance of the emission scale factors"},
        "member_averaging_kernel": {"units": "1", "long_name": "averaging kernel of the emission scale factors"},
        "member_S_prior": {"units": "1", "long_name": "prior covariance of the emission scale factors"},
        "member": {"long_name": "ensemble member (0: configured)"},
        "emission_region": {"long_name": "region code"},
        "emission_sector": {"long_name": "sector"},
        "emission_period": {"long_name": "ISO 8601 period"},
        "member_chi2_obs_normalized": {"units": "1", "long_name": "chi2 obs normalized of each member"},
        "member_chi2_state_normalized": {"units": "1", "long_name": "chi2 state normalized of each member"},
        "member_dofs": {"units": "1", "long_name": "dofs of each member"},
        "member_eddy_diffusivity": {"units": "m2 s-1", "long_name": "transport eddy diffusivity of each member"},
        "member_ventilation_time": {"units": "s", "long_name": "transport ventilation time of each member"},
        "member_wind_scale": {"units": "1", "long_name": "transport wind scale of each member"},
        "member_wind_rotation": {"units": "degree", "long_name": "transport wind rotation of each member"},
        "member_background": {"long_name": "background treatment of each member"},
        "member_inflow": {
            "units": "1",
            "long_name": "boundary inflow estimated (1) or not (0)",
            "flag_values": np.array([0, 1], dtype="int8"),
            "flag_meanings": "no_inflow inflow",
        },
        "member_prior_error": {"units": "1", "long_name": "relative prior error of each member"},
        "member_sigma_model": {"units": "{units}", "long_name": "model error of each member"},
    },
}

#: CF names of the emission flux density, by gas (the inventory stage gives the prior this name).
_FLUX_GAS_NAMES: dict[str, str] = {"CH4": "methane", "CO2": "carbon_dioxide"}


def output_attrs(output: str, name: str, **values: Any) -> dict[str, Any]:
    """CF attributes of variable ``name`` of ``output`` (a key of :data:`OUTPUT_VARIABLES`).

    Parameters
    ----------
    output, name : str
        The output kind and the variable.
    **values
        Fill the placeholders of the table's strings (``units``, ``gas``, ...).

    Returns
    -------
    dict
        A new dict (arrays copied): the caller may change it.

    Examples
    --------
    >>> output_attrs("observations", "sigma", units="ppb")
    {'units': 'ppb', 'long_name': 'total 1-sigma observation error'}
    >>> output_attrs("flux_maps", "prior_flux", gas="CH4")["standard_name"]
    'tendency_of_atmosphere_mass_content_of_methane_due_to_emission'
    """
    try:
        spec = OUTPUT_VARIABLES[output][name]
    except KeyError:
        raise SchemaError(
            f"no CF attributes for variable {name!r} of output {output!r} in schema.OUTPUT_VARIABLES"
        ) from None
    gas = str(values.get("gas", ""))
    values.setdefault("g", f"{gas} " if gas else "")
    attrs: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, str):
            try:
                attrs[key] = value.format_map(values)
            except KeyError as exc:
                raise SchemaError(f"CF attribute {key!r} of {output}/{name} needs {exc.args[0]}=") from None
        else:
            attrs[key] = value.copy() if isinstance(value, np.ndarray) else value
    std = _FLUX_GAS_NAMES.get(gas.upper())
    if output == "flux_maps" and name.endswith("_flux") and std:
        attrs["standard_name"] = f"tendency_of_atmosphere_mass_content_of_{std}_due_to_emission"
    elif output == "flux_maps" and name == "posterior_flux_sigma" and std:
        attrs["standard_name"] = f"tendency_of_atmosphere_mass_content_of_{std}_due_to_emission standard_error"
    return attrs


#: ``title`` global attribute of each netCDF output of a run, by file stem (``posterior`` for
#: ``posterior_CH4.nc``); ``{gas}`` is replaced by the gas of the file name.
OUTPUT_TITLES: dict[str, str] = {
    "soundings": "{gas} soundings after quality screening (L2, canonical schema)",
    "gridded": "Gridded {gas} column-averaged dry-air mole fraction (L3)",
    "prior": "{gas} prior emission maps by sector",
    "regions": "region masks on the analysis grid",
    "winds": "winds on the analysis grid",
    "jacobian": "{gas} Jacobian of the observations with respect to the state vector",
    "posterior": "{gas} analytical inversion: prior and posterior state vector",
    "emissions": "{gas} prior and posterior emission maps",
    "ensemble": "{gas} ensemble of inversions over transport and error choices",
}


def output_title(filename: str) -> str:
    """The ``title`` global attribute of run output ``filename`` (see :data:`OUTPUT_TITLES`).

    Examples
    --------
    >>> output_title("posterior_CH4.nc")
    'CH4 analytical inversion: prior and posterior state vector'
    >>> output_title("regions.nc")
    'region masks on the analysis grid'
    """
    stem = filename.rsplit("/", 1)[-1].removesuffix(".nc")
    kind, _, gas = stem.partition("_")
    try:
        return OUTPUT_TITLES[kind].format(gas=gas.upper()).strip()
    except KeyError:
        raise SchemaError(f"no title for output {filename!r}; known outputs: {sorted(OUTPUT_TITLES)}") from None


def _require(ds: xr.Dataset, names: Iterable[str], what: str) -> None:
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise SchemaError(
            f"{what} dataset is missing variable(s) {missing}; it has {sorted(map(str, ds.variables))}. "
            f"Write it with the stage that makes {what} datasets, or add the variable(s)"
        )


def _check_units(ds: xr.Dataset, expected: Mapping[str, str], what: str) -> None:
    wrong = {
        n: ds[n].attrs.get("units") for n, u in expected.items() if n in ds.variables and ds[n].attrs.get("units") != u
    }
    if wrong:
        raise SchemaError(
            f"{what} dataset has wrong units {wrong}; expected {dict(expected)}: convert the "
            "variable(s) and set their 'units' attribute"
        )


def _check_dims(ds: xr.Dataset, expected: Mapping[str, tuple[str, ...]], what: str, *, ordered: bool = True) -> None:
    for name, dims in expected.items():
        if name not in ds.variables:
            continue
        found = ds[name].dims
        if (found != dims) if ordered else (set(found) != set(dims)):
            raise SchemaError(f"{what} variable {name!r} has dims {found}; expected {dims}")


def _gas_of(ds: xr.Dataset, what: str) -> str:
    gas = ds.attrs.get("gas")
    if gas not in GASES:
        raise SchemaError(f"{what} attribute 'gas' is {gas!r}; expected one of {GASES}")
    return str(gas)


def validate_soundings(ds: xr.Dataset) -> xr.Dataset:
    """Check that ``ds`` is a canonical soundings dataset; return it unchanged.

    Cheap: names, dimensions, units and the ``gas`` attribute; the values are not read
    (a lazy dataset stays lazy).

    Raises
    ------
    SchemaError
        Naming the missing variable, wrong dimension or wrong unit.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"xgas": ("sounding", np.zeros(2), {"units": "ppm"})}, attrs={"gas": "CO2"})
    >>> validate_soundings(ds)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gosat_pipeline.errors.SchemaError: soundings dataset is missing variable(s) ['time', ...
    """
    gas = _gas_of(ds, "soundings")
    required = [k for k, v in SOUNDING_VARIABLES.items() if v.get("required")]
    _require(ds, ["time", "latitude", "longitude", *required], "soundings")
    one_d = ["time", "latitude", "longitude", *SOUNDING_VARIABLES]
    _check_dims(ds, {n: (SOUNDING_DIM,) for n in one_d}, "soundings")
    _check_dims(ds, {n: (SOUNDING_DIM, LEVEL_DIM) for n in LEVEL_VARIABLES}, "soundings")
    units = gas_units(gas)
    _check_units(ds, {"xgas": units, "xgas_uncertainty": units, "xgas_apriori": units}, "soundings")
    return ds


def validate_gridded(ds: xr.Dataset) -> xr.Dataset:
    """Check that ``ds`` is a canonical L3 dataset (dims time, latitude, longitude).

    Cheap: names, dimensions and (when the dataset names its ``gas``) units.

    Raises
    ------
    SchemaError
        Naming the missing variable, wrong dimension or wrong unit.
    """
    names = ["n_soundings", "xgas_mean", "xgas_weighted_mean", "xgas_std"]
    _require(ds, names, "gridded")
    _check_dims(ds, {n: ("time", "latitude", "longitude") for n in GRIDDED_VARIABLES}, "gridded", ordered=False)
    if "gas" in ds.attrs:
        units = gas_units(_gas_of(ds, "gridded"))
        _check_units(ds, {n: units for n, v in GRIDDED_VARIABLES.items() if v.get("units") == "gas"}, "gridded")
    _check_units(ds, {"n_soundings": "1"}, "gridded")
    return ds


def validate_posterior(ds: xr.Dataset) -> xr.Dataset:
    """Check that ``ds`` is a canonical posterior dataset (dims state, state2).

    Cheap: names, dimensions, units (the state vector is in units "1"; ``state_units``
    gives each element's units) and the ``gas`` attribute.

    Raises
    ------
    SchemaError
        Naming the missing variable, wrong dimension or wrong unit.
    """
    _gas_of(ds, "posterior")
    _require(ds, POSTERIOR_VARIABLES, "posterior")
    _check_dims(
        ds,
        {
            "x_prior": ("state",),
            "x_posterior": ("state",),
            "S_prior": ("state", "state2"),
            "S_posterior": ("state", "state2"),
            "averaging_kernel": ("state", "state2"),
        },
        "posterior",
    )
    _check_units(ds, dict.fromkeys(POSTERIOR_VARIABLES, "1"), "posterior")
    return ds


def cf_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """netCDF encoding that keeps ``ds`` within the CF data types (appended for issue 7).

    The IOOS compliance checker (CF 1.8, section 2.2) rejects 64-bit integers and
    (2.5.1) a ``_FillValue`` on coordinate variables; xarray writes both by default
    (int64 counts and indices, NaN fill on float coordinates, int64 time offsets).
    Pass the result as ``encoding=`` to :func:`xarray.Dataset.to_netcdf` (or
    ``outputs.atomic_write_netcdf``); existing ``encoding`` entries of a variable win.

    Returns
    -------
    dict
        variable name -> encoding: int64/uint64 -> int32 (float64 when out of range),
        bool -> int8, datetime64 -> float64 offsets, no ``_FillValue`` on coordinates nor on
        boundary variables (CF 7.1).
    """
    enc: dict[str, dict[str, Any]] = {}
    # CF 7.1: boundary variables inherit their coordinate's missing-data treatment, no _FillValue
    bounds = {var.attrs[key] for var in ds.variables.values() for key in ("bounds", "climatology") if key in var.attrs}
    for name, var in ds.variables.items():
        e: dict[str, Any] = {}
        kind = var.dtype.kind
        if kind in "iu" and var.dtype.itemsize == 8:
            # lazy (dask) integers are not computed here: float64 holds them exactly up to 2**53
            fits = var.chunks is None and (
                var.size == 0
                or (int(var.values.min()) >= np.iinfo("int32").min and int(var.values.max()) <= np.iinfo("int32").max)
            )
            e["dtype"] = "int32" if fits else "float64"
        elif kind == "b":
            e["dtype"] = "int8"
        elif kind == "M":
            # xarray needs units with a prescribed dtype (lazy arrays cannot be scanned)
            e["dtype"] = "float64"
            e["units"] = "seconds since 1970-01-01 00:00:00"
            e["calendar"] = "standard"
        if (name in ds.coords or name in bounds) and kind in "fcMiu":
            e["_FillValue"] = None
        e.update({k: v for k, v in var.encoding.items() if k in ("dtype", "_FillValue", "units", "calendar")})
        if e:
            enc[str(name)] = e
    return enc
