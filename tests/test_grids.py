"""GridSpec: edges, areas and the cell-lookup traps of DESIGN.md 5.0."""

from __future__ import annotations

import numpy as np
import pytest

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import EARTH_RADIUS_M, GridSpec, wrap_longitude


def test_global_area_is_sphere() -> None:
    g = GridSpec.from_resolution(2.5)
    assert g.shape == (72, 144)
    assert g.cell_area().sum() == pytest.approx(4 * np.pi * EARTH_RADIUS_M**2, rel=1e-12)


def test_edges_and_poles() -> None:
    g = GridSpec.from_resolution(1.0)
    i, j = g.locate([90.0, -90.0, 0.0, 0.0, 89.9999], [180.0, -180.0, 179.9999, 0.0, 0.0])
    assert i.tolist() == [179, 0, 90, 90, 179]
    assert j.tolist() == [0, 0, 359, 180, 180]


def test_nan_and_outside() -> None:
    g = GridSpec.from_resolution(1.0, bbox=(100, 0, 110, 10))
    i, j = g.locate([np.nan, 5.0, 5.0, 10.0, 11.0], [105.0, np.nan, 110.0, 110.0, 105.0])
    assert i.tolist() == [-1, -1, 5, 9, -1]
    assert j.tolist() == [-1, -1, 9, 9, -1]
    assert g.flat_index([5.5], [100.5]).tolist() == [5 * 10 + 0]


def test_regional_snapping_and_coords_round_trip() -> None:
    g = GridSpec.from_resolution(0.5, bbox=(90.2, -11.9, 141.7, 29.6))
    assert g.bbox == (90.0, -12.0, 142.0, 30.0)
    g2 = GridSpec.from_coords(g.lat, g.lon)
    np.testing.assert_allclose(g2.lat_edges, g.lat_edges)
    np.testing.assert_allclose(g2.lon_edges, g.lon_edges)
    ds = g.bounds_dataset()
    assert ds.cell_area.attrs["units"] == "m2"
    assert ds.latitude.attrs["bounds"] == "latitude_bounds"


def test_wrap_longitude() -> None:
    out = wrap_longitude([180.0, -180.0, 360.0, 539.0, -1e-17, np.nan])
    assert out[:4].tolist() == [-180.0, -180.0, 0.0, 179.0]
    assert abs(out[4]) < 1e-12
    assert np.isnan(out[5])
    assert np.all(out[:5] < 180)


def test_bad_grids() -> None:
    with pytest.raises(SchemaError):
        GridSpec(np.array([0.0, 0.0]), np.array([0.0, 1.0]))
    with pytest.raises(SchemaError):
        GridSpec.from_resolution(-1)
    with pytest.raises(SchemaError):
        GridSpec.from_resolution(1, bbox=(10, 0, 5, 5))
