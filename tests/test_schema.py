"""The stage contracts of gosat_pipeline.schema: each validator accepts a canonical dataset
and refuses a broken one with a SchemaError that names the variable (DESIGN.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.errors import GosatPipelineError, SchemaError
from gosat_pipeline.schema import (
    OUTPUT_TITLES,
    cf_encoding,
    output_title,
    validate_gridded,
    validate_posterior,
    validate_soundings,
)
from gosat_pipeline.testing.posteriors import make_posterior


@pytest.fixture(scope="module")
def posterior() -> xr.Dataset:
    return make_posterior()


def _soundings(gas: str = "CH4", n: int = 3, levels: int = 2) -> xr.Dataset:
    one = ("sounding",)
    ds = xr.Dataset(
        {
            "xgas": (one, np.full(n, 1900.0), {"units": "ppb"}),
            "xgas_uncertainty": (one, np.full(n, 10.0), {"units": "ppb"}),
            "quality_flag": (one, np.zeros(n, dtype="int8"), {"units": "1"}),
            "averaging_kernel": (("sounding", "level"), np.ones((n, levels)), {"units": "1"}),
        },
        coords={
            "time": (one, np.array(["2020-01-01"] * n, dtype="datetime64[ns]")),
            "latitude": (one, np.zeros(n), {"units": "degrees_north"}),
            "longitude": (one, np.zeros(n), {"units": "degrees_east"}),
        },
        attrs={"gas": gas},
    )
    return ds


def _gridded(gas: str = "CO2") -> xr.Dataset:
    dims = ("time", "latitude", "longitude")
    zeros = np.zeros((1, 2, 3))
    units = {"CO2": "ppm", "CH4": "ppb"}[gas]
    return xr.Dataset(
        {
            "n_soundings": (dims, zeros.astype("int32"), {"units": "1"}),
            **{n: (dims, zeros, {"units": units}) for n in ("xgas_mean", "xgas_weighted_mean", "xgas_std")},
        },
        coords={
            "time": ("time", np.array(["2020-01-01"], dtype="datetime64[ns]")),
            "latitude": ("latitude", [0.5, 1.5]),
            "longitude": ("longitude", [0.5, 1.5, 2.5]),
        },
        attrs={"gas": gas},
    )


def test_schema_error_is_a_package_error() -> None:
    assert issubclass(SchemaError, GosatPipelineError) and issubclass(SchemaError, ValueError)


def test_validate_posterior_accepts_a_canonical_posterior(posterior: xr.Dataset) -> None:
    assert validate_posterior(posterior) is posterior


@pytest.mark.parametrize("name", ["x_prior", "x_posterior", "S_prior", "S_posterior", "averaging_kernel"])
def test_validate_posterior_names_a_missing_variable(posterior: xr.Dataset, name: str) -> None:
    with pytest.raises(SchemaError, match=f"posterior dataset is missing variable\\(s\\) \\['{name}'\\]"):
        validate_posterior(posterior.drop_vars(name))


def test_validate_posterior_names_wrong_dims_units_and_gas(posterior: xr.Dataset) -> None:
    bad = posterior.copy()
    bad["S_posterior"] = bad["S_posterior"].rename(state2="other")
    with pytest.raises(SchemaError, match="'S_posterior' has dims \\('state', 'other'\\)"):
        validate_posterior(bad)
    bad = posterior.copy()
    bad["x_posterior"] = bad["x_posterior"].assign_attrs(units="kg s-1")
    with pytest.raises(SchemaError, match="wrong units \\{'x_posterior': 'kg s-1'\\}"):
        validate_posterior(bad)
    with pytest.raises(SchemaError, match="posterior attribute 'gas' is 'N2O'"):
        validate_posterior(posterior.assign_attrs(gas="N2O"))


def test_validate_soundings_accepts_canonical_and_names_what_is_wrong() -> None:
    ds = _soundings()
    assert validate_soundings(ds) is ds
    with pytest.raises(SchemaError, match="missing variable\\(s\\) \\['xgas_uncertainty'\\]"):
        validate_soundings(ds.drop_vars("xgas_uncertainty"))
    with pytest.raises(SchemaError, match="wrong units \\{'xgas': 'ppm'\\}"):
        validate_soundings(ds.assign(xgas=ds["xgas"].assign_attrs(units="ppm")))
    with pytest.raises(SchemaError, match="'averaging_kernel' has dims \\('level', 'sounding'\\)"):
        validate_soundings(ds.assign(averaging_kernel=ds["averaging_kernel"].T))
    with pytest.raises(SchemaError, match="soundings attribute 'gas' is None"):
        validate_soundings(ds.assign_attrs(gas=None))
    # a soundings variable on another dimension is refused (it would not line up with the rest)
    with pytest.raises(SchemaError, match="'quality_flag' has dims \\('row',\\)"):
        validate_soundings(ds.assign(quality_flag=("row", np.zeros(3, dtype="int8"), {"units": "1"})))


def test_validate_soundings_does_not_read_lazy_data() -> None:
    ds = _soundings().chunk({"sounding": 1})
    validate_soundings(ds)
    assert ds["xgas"].chunks is not None  # still lazy: the check looked at metadata only


def test_validate_gridded_accepts_canonical_and_names_what_is_wrong() -> None:
    l3 = _gridded("CO2")
    assert validate_gridded(l3) is l3
    with pytest.raises(SchemaError, match="missing variable\\(s\\) \\['xgas_std'\\]"):
        validate_gridded(l3.drop_vars("xgas_std"))
    with pytest.raises(SchemaError, match="'xgas_mean' has dims"):
        validate_gridded(l3.assign(xgas_mean=l3["xgas_mean"].isel(time=0, drop=True)))
    with pytest.raises(SchemaError, match="wrong units \\{'xgas_mean': 'ppb'\\}"):
        validate_gridded(l3.assign(xgas_mean=l3["xgas_mean"].assign_attrs(units="ppb")))
    with pytest.raises(SchemaError, match="wrong units \\{'n_soundings': 'count'\\}"):
        validate_gridded(l3.assign(n_soundings=l3["n_soundings"].assign_attrs(units="count")))


def test_every_output_has_a_title() -> None:
    for stem in OUTPUT_TITLES:
        assert output_title(f"{stem}_CH4.nc")
    assert output_title("gridded_CO2.nc").startswith("Gridded CO2")
    with pytest.raises(SchemaError, match="no title for output 'unknown.nc'"):
        output_title("unknown.nc")


def test_cf_encoding_drops_the_fill_value_of_bounds() -> None:
    ds = xr.Dataset(
        {"lat_bnds": (("lat", "nv"), np.zeros((2, 2)))},
        coords={"lat": ("lat", [0.0, 1.0], {"bounds": "lat_bnds"})},
    )
    enc = cf_encoding(ds)
    assert enc["lat_bnds"]["_FillValue"] is None and enc["lat"]["_FillValue"] is None
