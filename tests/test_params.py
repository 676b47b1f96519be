"""Settings objects (gosat_pipeline.params), the layer-0 helpers and the one region-total core."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import xarray as xr

from gosat_pipeline import config
from gosat_pipeline.errors import SchemaError
from gosat_pipeline.grids import GridSpec, require_same_grid, same_axes, same_grid
from gosat_pipeline.params import (
    InversionSettings,
    QualityScreens,
    TransportSettings,
    VerdictThresholds,
    with_overrides,
)
from gosat_pipeline.paths import expand_paths, has_glob
from gosat_pipeline.schema import INVERSION_STATUS, TOTAL_STATUS, status_attrs, status_text
from gosat_pipeline.statevector import total_moments, total_sensitivity


def _defaults(model: type) -> dict:
    return {k: f.default for k, f in model.model_fields.items()}


def test_config_sections_take_their_defaults_from_the_settings_classes() -> None:
    thr = VerdictThresholds()
    assert config.CompareSection().thresholds() == thr
    cmp = _defaults(config.CompareSection)
    assert {k: cmp[k] for k in thr.as_dict()} == thr.as_dict()
    tp = config.TransportSection()
    settings = tp.settings()
    assert settings == TransportSettings()
    assert tp.settings(mode="steady", spinup=3600.0) == dataclasses.replace(settings, mode="steady", spinup=3600.0)
    screen = config.ScreenSection()
    q = screen.screens((90.0, -12.0, 142.0, 30.0), ("2020-01-01", "2020-02-01"))
    assert dataclasses.replace(q, bbox=None, time_range=None) == QualityScreens()
    inv = config.InversionSection()
    assert (inv.prior_error, inv.correlation_length_km, inv.lognormal, inv.gradient_tolerance) == (
        InversionSettings().prior_error,
        InversionSettings().correlation_length_km,
        InversionSettings().lognormal,
        InversionSettings().gradient_tolerance,
    )


def test_overrides_replace_fields_and_unknown_names_are_refused() -> None:
    base = VerdictThresholds()
    assert with_overrides(base, {"z_critical": 3.0}).z_critical == 3.0
    assert with_overrides(base, {}) is base
    with pytest.raises(TypeError, match=r"unknown verdict setting\(s\) \['z_crit'\]; allowed: \['z_critical'"):
        with_overrides(base, {"z_crit": 3.0}, "verdict")


def test_quality_screens_validate_and_describe() -> None:
    with pytest.raises(SchemaError, match="surface='ocean'"):
        QualityScreens(surface="ocean")
    text = QualityScreens(bbox=(0, 1, 2, 3), time_range=("2020-01-01", None)).describe()
    assert text == (
        "{'bbox': [0, 1, 2, 3], 'time_range': ['2020-01-01', 'None'], 'max_solar_zenith': None, "
        "'max_uncertainty': None, 'surface': 'all', 'drop_flagged': True}"
    )


def test_transport_settings_refuse_bad_values() -> None:
    with pytest.raises(SchemaError, match="transport mode 'fast'"):
        TransportSettings(mode="fast")
    with pytest.raises(SchemaError, match="ventilation_time must be > 0"):
        TransportSettings(ventilation_time=0.0)


def test_verdict_thresholds_as_dict_types_and_order() -> None:
    d = VerdictThresholds().as_dict()
    assert list(d) == [f.name for f in dataclasses.fields(VerdictThresholds)]
    assert isinstance(d["min_observations"], int) and isinstance(d["z_critical"], float)


def test_expand_paths(tmp_path: Path) -> None:
    for name in ("b.nc", "a.nc", "c.txt"):
        (tmp_path / name).write_text("x")
    assert expand_paths(str(tmp_path / "*.nc")) == [tmp_path / "a.nc", tmp_path / "b.nc"]
    assert expand_paths(tmp_path, suffixes=(".nc",)) == [tmp_path / "a.nc", tmp_path / "b.nc"]
    assert expand_paths(tmp_path) == [tmp_path]  # a folder without suffixes stays a path
    both = expand_paths([str(tmp_path / "a.nc"), str(tmp_path / "*.nc")])
    assert both == [tmp_path / "a.nc", tmp_path / "b.nc"]  # de-duplicated, first occurrence kept
    assert expand_paths(str(tmp_path / "missing.nc")) == [tmp_path / "missing.nc"]
    assert expand_paths(str(tmp_path / "*.zip")) == []
    assert has_glob("a/*.nc") and not has_glob("a/b.nc")


def test_same_grid() -> None:
    g = GridSpec.from_coords(np.arange(-9.5, 10), np.arange(90.5, 100))
    da = xr.DataArray(np.zeros(g.shape), coords={"latitude": g.lat, "longitude": g.lon}, dims=("latitude", "longitude"))
    assert same_grid(da, g) and same_grid(g, da)
    other = da.isel(longitude=slice(1, None))
    assert not same_grid(other, g)
    assert not same_axes(g.lat, g.lon, g.lat, g.lon + 0.5)
    with pytest.raises(SchemaError, match="prior flux is on a grid"):
        require_same_grid(other, g, "prior flux")


def test_total_moments_is_w_x_and_w_s_wt() -> None:
    rng = np.random.default_rng(0)
    n = 7
    x = rng.normal(size=n)
    L = rng.normal(size=(n, n))
    S = L @ L.T
    W = np.zeros((2, n))
    W[0, :3] = [1.0, 2.0, 0.5]
    W[1, 5] = 4.0
    tot, cov = total_moments(sp.csr_matrix(W), x, S)
    np.testing.assert_allclose(tot, W @ x, rtol=1e-13)
    np.testing.assert_allclose(cov, W @ S @ W.T, rtol=1e-13)
    one, var = total_moments(W[0], x, S)  # a single row
    np.testing.assert_allclose(one, [W[0] @ x], rtol=1e-13)
    np.testing.assert_allclose(var, [[W[0] @ S @ W[0]]], rtol=1e-13)
    A = np.eye(n) * 0.5
    np.testing.assert_allclose(total_sensitivity(W, A), [0.5, 0.5])
    assert total_sensitivity(np.zeros((1, n)), A)[0] == 0.0


def test_one_status_vocabulary() -> None:
    assert status_attrs(INVERSION_STATUS)["flag_meanings"] == "ok no_observations degenerate"
    assert list(status_attrs(TOTAL_STATUS)["flag_values"]) == [0, 1, 2]
    assert INVERSION_STATUS[0] == TOTAL_STATUS[0] and INVERSION_STATUS[1] == TOTAL_STATUS[1]
    assert status_text(1) == "no observations" and status_text(9) == "status 9"
