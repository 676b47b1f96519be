"""gosat_pipeline: from public GOSAT-style L2 columns to checked emission estimates.

The public API is imported lazily so that ``import gosat_pipeline`` stays fast and
the CLI can start before heavy dependencies load. Every stage is a function on
xarray objects; :func:`run` chains them from a configuration file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_API: dict[str, str] = {
    # configuration and orchestration
    "load_config": "gosat_pipeline.config",
    "run": "gosat_pipeline.pipeline",
    # settings objects (each default written once, in gosat_pipeline.params)
    "QualityScreens": "gosat_pipeline.params",
    "TransportSettings": "gosat_pipeline.params",
    "InversionSettings": "gosat_pipeline.params",
    "VerdictThresholds": "gosat_pipeline.params",
    # ingest and quality
    "open_granule": "gosat_pipeline.io",
    "open_granules": "gosat_pipeline.io",
    "list_formats": "gosat_pipeline.io",
    "apply_quality_filter": "gosat_pipeline.quality",
    # gridding
    "grid_soundings": "gosat_pipeline.gridding",
    "GridSpec": "gosat_pipeline.grids",
    # inventories, regions, winds
    "open_prior_inventory": "gosat_pipeline.inventory",
    "regrid_conservative": "gosat_pipeline.inventory",
    "reported_for": "gosat_pipeline.inventory",
    "read_reported_totals": "gosat_pipeline.inventory",
    "load_boundaries": "gosat_pipeline.regions",
    "region_masks": "gosat_pipeline.regions",
    "domain_regions": "gosat_pipeline.regions",
    "attribute_emissions": "gosat_pipeline.attribution",
    "attribute_to_regions": "gosat_pipeline.inventory",
    "prior_emissions": "gosat_pipeline.domain",
    "open_winds": "gosat_pipeline.winds",
    # transport and inversion
    "build_jacobian": "gosat_pipeline.transport",
    "jacobian_matrix": "gosat_pipeline.blocksparse",
    "invert": "gosat_pipeline.inversion",
    "StateVector": "gosat_pipeline.statevector",
    "design_members": "gosat_pipeline.ensemble",
    "invert_ensemble": "gosat_pipeline.ensemble",
    "ensemble_dataset": "gosat_pipeline.ensemble",
    "posterior_flux_maps": "gosat_pipeline.inversion",
    "mass_balance": "gosat_pipeline.inversion",
    # comparison and reports
    "compare_to_inventory": "gosat_pipeline.compare",
    "domain_budget": "gosat_pipeline.compare",
    "preflight": "gosat_pipeline.preflight",
    "period_change": "gosat_pipeline.compare",
    "write_report": "gosat_pipeline.report",
}

__all__ = ["__version__", *_API]

if TYPE_CHECKING:  # what type checkers and IDEs see of the lazy API below (tests keep the two equal)
    from gosat_pipeline.attribution import attribute_emissions
    from gosat_pipeline.blocksparse import jacobian_matrix
    from gosat_pipeline.compare import compare_to_inventory, domain_budget, period_change
    from gosat_pipeline.config import load_config
    from gosat_pipeline.domain import prior_emissions
    from gosat_pipeline.ensemble import design_members, ensemble_dataset, invert_ensemble
    from gosat_pipeline.gridding import grid_soundings
    from gosat_pipeline.grids import GridSpec
    from gosat_pipeline.inventory import (
        attribute_to_regions,
        open_prior_inventory,
        read_reported_totals,
        regrid_conservative,
        reported_for,
    )
    from gosat_pipeline.inversion import invert, mass_balance, posterior_flux_maps
    from gosat_pipeline.io import list_formats, open_granule, open_granules
    from gosat_pipeline.params import (
        InversionSettings,
        QualityScreens,
        TransportSettings,
        VerdictThresholds,
    )
    from gosat_pipeline.pipeline import run
    from gosat_pipeline.preflight import preflight
    from gosat_pipeline.quality import apply_quality_filter
    from gosat_pipeline.regions import domain_regions, load_boundaries, region_masks
    from gosat_pipeline.report import write_report
    from gosat_pipeline.statevector import StateVector
    from gosat_pipeline.transport import build_jacobian
    from gosat_pipeline.winds import open_winds


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'gosat_pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
