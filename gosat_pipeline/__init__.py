"""gosat_pipeline: from public GOSAT-style L2 columns to checked emission estimates.

The public API is imported lazily so that ``import gosat_pipeline`` stays fast and
the CLI can start before heavy dependencies load. Every stage is a function on
xarray objects; :func:`run` chains them from a configuration file.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it
_API: dict[str, str] = {
    # configuration and orchestration
    "load_config": "gosat_pipeline.config",
    "run": "gosat_pipeline.pipeline",
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
    "TransportSettings": "gosat_pipeline.transport",
    "build_jacobian": "gosat_pipeline.transport",
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


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'gosat_pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
