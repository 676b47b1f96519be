"""The agency report: ``report.html`` built from the stored outputs of a run directory.

Rendering only, no numerics: the verdicts of every gas come from ``discrepancies.json``
(the compare stage); each gas's maps and inversion diagnostics from its
``posterior_<GAS>.nc``, ``emissions_<GAS>.nc`` and ``gridded_<GAS>.nc`` (or the legacy
single-gas ``posterior.nc``, ``emissions.nc``, ``gridded.nc``); the outlines from
``boundaries.geojson``, the provenance from ``manifest.json``. This package imports only
layer-0 modules and third-party libraries.
"""

from __future__ import annotations

from gosat_pipeline.report.html import render_report, write_report

__all__ = ["write_report", "render_report"]
