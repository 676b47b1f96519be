"""Report figures: outlines of every country in view, shared and robust colour scales, bar panels."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from PIL import Image

from gosat_pipeline.regions import default_boundaries_path
from gosat_pipeline.report.maps import (
    FLUX_TO_T_KM2_YR,
    _constraint_panels,
    _emission_panels,
    bar_figures,
    map_figures,
    read_outlines,
)
from gosat_pipeline.testing.posteriors import make_flux_maps, make_gridded_l3, make_posterior

ASEAN_VIEW = (90.0, 142.0, -12.0, 30.0)  # west, east, south, north of the demo


def pixels(fig) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(fig.png_base64))).convert("L"), dtype=float)


def test_bundled_natural_earth_outlines_cover_the_neighbours():
    codes = {o.code for o in read_outlines(default_boundaries_path(), ASEAN_VIEW)}
    # the ASEAN members and the countries around them that nobody solves for
    assert {"THA", "VNM", "IDN", "PHL", "CHN", "IND", "BGD", "PNG", "AUS", "TLS", "TWN"} <= codes
    assert read_outlines(None, ASEAN_VIEW) == []


def test_maps_draw_the_borders_of_countries_that_are_not_solved(tmp_path: Path):
    # one outline, far from the solved regions: the Philippines-like triangle at 120-124E, 8-16N
    tri = {"type": "Polygon", "coordinates": [[[120, 8], [124, 8], [122, 16], [120, 8]]]}
    path = tmp_path / "outline.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {"ISO_A3": "PHL"}, "geometry": tri}],
            }
        )
    )
    l3 = make_gridded_l3("CH4")
    l3["xgas_mean"][:] = np.nan  # an empty map: only lines are drawn
    extent = (95.0, 125.0, -10.0, 20.0)
    with_bg = map_figures(None, l3, [], "CH4", background=read_outlines(str(path), extent))[0]
    without = map_figures(None, l3, [], "CH4", background=[])[0]
    assert with_bg.outlines == ("PHL",) and without.outlines == ()
    changed = np.argwhere(np.abs(pixels(with_bg) - pixels(without)) > 60)
    assert len(changed) > 100  # the outline is drawn ...
    # ... in the right part of each panel (the triangle lies at 83-97 % of the longitude range)
    cols = changed[:, 1] / pixels(with_bg).shape[1]
    assert ((cols > 0.35) & (cols < 0.47)).any() and ((cols > 0.8) & (cols < 0.95)).any()


def test_prior_and_posterior_share_one_scale_and_limits_are_robust():
    post = make_posterior(truth={"IDN": 1.6})
    em = make_flux_maps(post)
    em["posterior_flux"][0, 0] = float(em["posterior_flux"].max()) * 1000  # one extreme cell
    figs = map_figures(em, None, [], "CH4")
    assert [f.title for f in figs] == ["Emissions (CH4)", "What the satellite data constrain (CH4)"]
    prior, posterior, diff = _emission_panels(em, "CH4", 0)[0]
    assert prior.norm is posterior.norm  # one scale for both
    top = float(em["posterior_flux"].max()) * FLUX_TO_T_KM2_YR
    assert prior.norm.vmax < top / 100 and prior.extend == "max"  # the extreme cell does not set the scale
    assert diff.norm.vmin == -diff.norm.vmax and diff.extend in ("max", "both")
    assert "1 = unchanged" in _constraint_panels(em, "CH4", 0)[1].label


def test_periods_get_one_emission_figure_each():
    em = make_flux_maps(make_posterior())
    em2 = xr.concat([em, em * 1.1], dim=xr.DataArray(["2019", "2020"], dims="period", name="period"))
    titles = [f.title for f in map_figures(em2, None, [], "CO2")]
    assert titles == [
        "Emissions, period 2019 (CO2)",
        "Emissions, period 2020 (CO2)",
        "What the satellite data constrain, period 2019 (CO2)",
        "What the satellite data constrain, period 2020 (CO2)",
    ]


@pytest.mark.parametrize("with_group", [False, True])
def test_bar_panels_aggregates_on_their_own_axis(with_group):
    rows = [
        {
            "region": c,
            "region_name": c,
            "period": "2020",
            "reference": "national submission",
            "prior_total": v,
            "prior_sigma": v / 2,
            "posterior_total": v,
            "posterior_sigma": v / 4,
            "reported_total": v * 1.1,
            "reported_sigma": v / 10,
            "verdict": "consistent",
            "members": "",
        }
        for c, v in (("IDN", 12.0), ("SGP", 0.004), ("THA", 7.0))
    ]
    if with_group:
        rows.append({**rows[0], "region": "ASEAN", "posterior_total": 30.0, "members": "IDN SGP THA"})
    figs = bar_figures(rows, "CH4", names={"SGP": "Singapore"})
    assert [f.title for f in figs] == ["CH4 totals of the countries, 2020"] + (
        ["CH4 totals of the groups of countries, 2020"] if with_group else []
    )
    assert "own scale" in figs[0].caption
