"""Quality screens on canonical soundings."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.quality import apply_quality_filter, quality_mask
from gosat_pipeline.testing import make_soundings


@pytest.fixture()
def snd():
    ds = make_soundings(400, "CH4", seed=9, start="2020-01-01", end="2020-01-31")
    rng = np.random.default_rng(1)
    ds["surface_type"] = ("sounding", (rng.uniform(size=400) < 0.4).astype("int8"))
    return ds


def test_drop_flagged_and_counts(snd, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="gosat_pipeline.quality"):
        out = apply_quality_filter(snd)
    n_good = int((snd.quality_flag == 0).sum())
    assert out.sizes["sounding"] == n_good
    assert out.attrs["n_soundings_before_filter"] == 400
    assert f"quality filter kept {n_good}/400 soundings" in caplog.text
    assert apply_quality_filter(snd, drop_flagged=False).sizes["sounding"] == 400


def test_nan_xgas_never_passes(snd) -> None:
    snd["xgas"][:5] = np.nan
    snd["quality_flag"][:] = 0
    assert apply_quality_filter(snd).sizes["sounding"] == 395


def test_bbox_and_antimeridian(snd) -> None:
    out = apply_quality_filter(snd, bbox=(0, -30, 90, 30), drop_flagged=False)
    assert ((out.longitude >= 0) & (out.longitude <= 90) & (abs(out.latitude) <= 30)).all()
    expected = int(((snd.longitude >= 0) & (snd.longitude <= 90) & (abs(snd.latitude) <= 30)).sum())
    assert out.sizes["sounding"] == expected
    wrap = apply_quality_filter(snd, bbox=(170, -90, -170, 90), drop_flagged=False)
    lon = wrap.longitude.values
    assert wrap.sizes["sounding"] > 0 and np.all((lon >= 170) | (lon <= -170))
    assert wrap.sizes["sounding"] == int(((snd.longitude >= 170) | (snd.longitude <= -170)).sum())
    with pytest.raises(SchemaError, match="south"):
        apply_quality_filter(snd, bbox=(0, 40, 10, 20))


def test_time_window_inclusive_and_utc(snd) -> None:
    out = apply_quality_filter(snd, time_range=("2020-01-10", "2020-01-20T00:00"), drop_flagged=False)
    t = out.time.values
    assert t.min() >= np.datetime64("2020-01-10") and t.max() <= np.datetime64("2020-01-20")
    whole_day = apply_quality_filter(snd, time_range=("2020-01-10", "2020-01-20"), drop_flagged=False)
    expected = int(((snd.time >= np.datetime64("2020-01-10")) & (snd.time < np.datetime64("2020-01-21"))).sum())
    assert whole_day.sizes["sounding"] == expected > out.sizes["sounding"]
    shifted = apply_quality_filter(
        snd, time_range=("2020-01-10T02:00+02:00", "2020-01-20T02:00+02:00"), drop_flagged=False
    )
    assert shifted.sizes["sounding"] == out.sizes["sounding"]
    open_end = apply_quality_filter(snd, time_range=("2020-01-10", None), drop_flagged=False)
    assert open_end.sizes["sounding"] == int((snd.time >= np.datetime64("2020-01-10")).sum())


def test_sza_uncertainty_surface(snd) -> None:
    out = apply_quality_filter(snd, max_solar_zenith=40, max_uncertainty=10.0, surface="glint", drop_flagged=False)
    assert (out.solar_zenith_angle <= 40).all() and (out.xgas_uncertainty <= 10).all()
    assert (out.surface_type == 1).all()
    expected = (snd.solar_zenith_angle <= 40) & (snd.xgas_uncertainty <= 10) & (snd.surface_type == 1)
    assert out.sizes["sounding"] == int(expected.sum())
    land = apply_quality_filter(snd, surface="land", drop_flagged=False)
    assert land.sizes["sounding"] + int((snd.surface_type == 1).sum()) == 400
    with pytest.raises(SchemaError, match="surface="):
        apply_quality_filter(snd, surface="ocean")
    with pytest.raises(SchemaError, match="surface_type"):
        apply_quality_filter(snd.drop_vars("surface_type"), surface="land")


def test_stays_lazy_and_matches_eager(snd) -> None:
    lazy = snd.chunk({"sounding": 100})
    out = apply_quality_filter(lazy, bbox=(-90, -60, 90, 60), max_solar_zenith=60)
    assert isinstance(out.xgas.data, da.Array) and isinstance(out.averaging_kernel.data, da.Array)
    eager = apply_quality_filter(snd, bbox=(-90, -60, 90, 60), max_solar_zenith=60)
    np.testing.assert_array_equal(out.xgas.values, eager.xgas.values)


def test_empty_input_and_mask(snd) -> None:
    empty = snd.isel(sounding=slice(0, 0))
    out = apply_quality_filter(empty, bbox=(0, 0, 10, 10))
    assert out.sizes["sounding"] == 0 and out.attrs["n_soundings_before_filter"] == 0
    m = quality_mask(snd, max_uncertainty=12.0)
    assert m.dtype == bool and m.sizes["sounding"] == 400
