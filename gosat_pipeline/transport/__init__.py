"""Forward operators -> Jacobian (DESIGN.md 5.2).

Three operator types produce the same Jacobian object:

- the **time-resolved** column-enhancement model (default when the winds have a time
  axis): implicit steps of the advection-diffusion-ventilation equation under the winds
  of every step (:func:`integrate_responses`), so that transport follows the weather;
- the **steady** model (:class:`SimpleTransport`) from the time-mean wind: one sparse LU
  and every state element's response from it (the identical-twin teaching operator);
- **external footprints** (STILT, FLEXPART, NAME or IMI's GEOS-Chem Jacobian, read in their own
  layouts by :func:`open_footprints`; ``docs/footprints.md``).

:func:`build_jacobian` turns any of them into an :class:`xarray.DataArray` ``(obs, state)``
whose coordinates carry the observation vector and the state vector
(:class:`gosat_pipeline.statevector.StateVector`), so that
:func:`gosat_pipeline.inversion.invert` needs nothing else. The column sensitivity of
DESIGN.md 5.1 multiplies every row: the retrieved enhancement is
:math:`\\Delta X_{ret} = \\bar a_{PBL} \\, c`.
"""

from __future__ import annotations

from gosat_pipeline.blocksparse import jacobian_matrix
from gosat_pipeline.schema import G0, SECONDS_PER_YEAR
from gosat_pipeline.transport.footprints import (
    AVERAGING_KERNEL_APPLIED,
    FOOTPRINT_FORMATS,
    FOOTPRINT_UNITS,
    detect_footprint_format,
    footprint_files,
    open_footprints,
    read_footprints,
)
from gosat_pipeline.transport.jacobian import (
    BACKGROUND_MODES,
    TRANSPORT_MODES,
    TransportSettings,
    build_jacobian,
    describe_state,
    steady_winds,
)
from gosat_pipeline.transport.observations import (
    DEFAULT_SIGMA_MODEL,
    column_sensitivity,
    observation_vector,
    period_label,
    time_bins,
)
from gosat_pipeline.transport.operator import (
    DEFAULT_EDDY_DIFFUSIVITY,
    DEFAULT_VENTILATION_TIME,
    EDGES,
    Forcing,
    SimpleTransport,
    dry_air_column,
    integrate_responses,
    response_blocks,
)
from gosat_pipeline.transport.state import period_edges, periods, windows

__all__ = [
    "AVERAGING_KERNEL_APPLIED",
    "BACKGROUND_MODES",
    "DEFAULT_EDDY_DIFFUSIVITY",
    "DEFAULT_SIGMA_MODEL",
    "DEFAULT_VENTILATION_TIME",
    "EDGES",
    "FOOTPRINT_FORMATS",
    "FOOTPRINT_UNITS",
    "G0",
    "SECONDS_PER_YEAR",
    "TRANSPORT_MODES",
    "Forcing",
    "SimpleTransport",
    "TransportSettings",
    "build_jacobian",
    "column_sensitivity",
    "detect_footprint_format",
    "footprint_files",
    "describe_state",
    "dry_air_column",
    "integrate_responses",
    "jacobian_matrix",
    "observation_vector",
    "open_footprints",
    "period_edges",
    "period_label",
    "periods",
    "read_footprints",
    "response_blocks",
    "steady_winds",
    "time_bins",
    "windows",
]
