"""The agency report: ``report.html`` built from the stored outputs of a run directory.

Rendering only, no numerics: the verdicts come from ``discrepancies.json`` (the compare
stage), the maps from ``emissions.nc`` and ``gridded.nc``, the outlines from
``boundaries.geojson``, the provenance from ``manifest.json``. This package imports only
layer-0 modules and third-party libraries.
"""

from __future__ import annotations

from gosat_pipeline.report.html import render_report, write_report

__all__ = ["write_report", "render_report"]
