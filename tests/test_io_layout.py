"""Typed reader layouts: checked when built, when a reader class is defined and when it registers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest

from gosat_pipeline.errors import GosatPipelineError, GranuleError, ReaderContractError
from gosat_pipeline.io import (
    NcTableReader,
    ReaderLayout,
    VarSpec,
    close_cached,
    open_granule,
    register_reader,
    unregister_reader,
)
from gosat_pipeline.io.cci_co2 import OCFP_VARIABLES
from gosat_pipeline.io.cci_ocpr import OCPR_VARIABLES, CciOcprReader
from gosat_pipeline.testing.granules import granule_filename, granule_soundings, write_granule

MINIMAL: dict[str, Any] = {
    "time": {"path": "t", "transform": "time"},
    "latitude": {"path": "lat"},
    "longitude": {"path": "lon"},
    "xgas": {"path": "xco2"},
}


def _with(**changes: Any) -> dict[str, Any]:
    out = dict(MINIMAL)
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    return out


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (_with(xgas={"path": "xco2", "transform": "flaot"}), r"variable 'xgas': unknown transform 'flaot'"),
        (_with(xgas={"path": "xco2", "requird": False}), r"variable 'xgas': unknown key\(s\) \['requird'\]"),
        (_with(xgas={"transform": "float"}), r"variable 'xgas': no 'path'"),
        (_with(xgas={"path": ""}), r"variable 'xgas': path must be a non-empty string"),
        (_with(xgas=None), r"lacks required canonical variable\(s\) \['xgas'\]"),
        (_with(latitude={"path": "lat", "required": False}), r"\['latitude'\] must be required"),
        (_with(xgass={"path": "x"}), r"variable 'xgass': not a canonical variable"),
        (_with(time={"path": "t"}), r"variable 'time': 'time' must use transform 'time'"),
        (_with(averaging_kernel={"path": "ak", "transform": "first"}), r"'averaging_kernel' is a level variable"),
        (_with(surface_pressure={"path": "p", "transform": "layer_mid"}), r"'surface_pressure' is a per-sounding"),
        (_with(sounding_id={"path": "id"}), r"'sounding_id' must use transform 'chars' or 'int'"),
        (_with(surface_type={"path": "m", "transform": "chars"}), r"transform 'chars' is only for \['sounding_id'\]"),
        (_with(pressure={"path": "p", "factor": 0.0}), r"factor must be a finite non-zero number"),
        (_with(surface_type={"path": "m", "transform": "glint_eq1", "factor": 2.0}), r"does not read floats"),
        (_with(xgas=["xco2"]), r"variable 'xgas': expected a VarSpec or a dict, found list"),
    ],
)
def test_bad_layout_names_reader_variable_and_fault(layout: dict[str, Any], message: str) -> None:
    with pytest.raises(ReaderContractError, match=message) as info:
        ReaderLayout(layout, reader="my_product (CO2)")
    assert str(info.value).startswith("reader my_product (CO2): ")
    assert isinstance(info.value, GosatPipelineError)


def test_a_good_dict_becomes_typed_specs() -> None:
    lay = ReaderLayout(_with(pressure={"path": "p", "factor": 0.01}), reader="x")
    assert lay["pressure"] == VarSpec("p", factor=0.01)
    assert lay["xgas"].transform == "float" and lay["xgas"].required
    assert set(lay) == set(MINIMAL) | {"pressure"}
    with pytest.raises(TypeError):
        lay["xgas"] = VarSpec("y")  # type: ignore[index]


def test_ocfp_is_ocpr_with_only_the_gas_names_changed() -> None:
    differ = {k for k in OCPR_VARIABLES if OCPR_VARIABLES[k] != OCFP_VARIABLES[k]}
    assert differ == {"xgas", "xgas_uncertainty", "averaging_kernel", "profile_apriori"}
    assert list(OCFP_VARIABLES) == list(OCPR_VARIABLES)
    assert [OCFP_VARIABLES[k].path for k in sorted(differ)] == [
        "xco2_averaging_kernel",
        "co2_profile_apriori",
        "xco2",
        "xco2_uncertainty",
    ]
    assert "glint" not in repr(OCFP_VARIABLES.derive(surface_type=None))


def _reader_class(**attrs: Any) -> type[NcTableReader]:
    base = {
        "name": "bad_table",
        "description": "a broken table reader (tests)",
        "gases": ("CO2",),
        "flag_variable": {"CO2": "qf"},
        "variable_map": {"CO2": MINIMAL},
    }
    return type("BadTable", (NcTableReader,), {**base, **attrs})


def test_an_unknown_transform_fails_when_the_class_is_defined() -> None:
    with pytest.raises(ReaderContractError, match=r"reader bad_table \(CO2\): variable 'xgas': unknown transform"):
        _reader_class(variable_map={"CO2": _with(xgas={"path": "xco2", "transform": "scaled"})})


def test_plain_dict_layout_is_converted_on_definition() -> None:
    cls = _reader_class()
    assert isinstance(cls.variable_map["CO2"], ReaderLayout)
    assert cls.variable_map["CO2"]["time"].transform == "time"


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"flag_variable": {}}, r"flag_variable has no path for gas 'CO2'"),
        ({"gases": ("CH4",)}, r"variable_map has gas 'CO2' not in gases"),
        ({"level_order": "bottom_up"}, r"level_order 'bottom_up'"),
        ({"variable_map": {}}, r"variable_map is empty"),
    ],
)
def test_reader_tables_are_checked_at_registration(attrs: dict[str, Any], message: str) -> None:
    cls = _reader_class(**attrs)
    with pytest.raises(ReaderContractError, match=rf"reader bad_table: {message}"):
        register_reader(cls)
    unregister_reader("bad_table")  # never registered: nothing to remove


def test_a_layout_edited_after_definition_is_checked_at_registration() -> None:
    class Edited(CciOcprReader):
        name = "edited_ocpr"

    reader = Edited()
    reader.variable_map = {"CH4": {**MINIMAL, "xgas": {"path": "xch4", "transform": "log"}}}  # type: ignore[misc]
    with pytest.raises(ReaderContractError, match=r"reader edited_ocpr \(CH4\): variable 'xgas': unknown transform"):
        register_reader(reader)


# -- dimensions checked against the layout when a file is scanned --------------------------------
def _ocpr_with(tmp_path: Path, n: int, name: str, dims: tuple[str, ...], extra: tuple[str, int] | None) -> Path:
    """An OCPR granule of ``n`` soundings (20 levels) whose variable ``name`` is replaced by one on ``dims``."""
    src = granule_soundings("cci_ocpr", n, seed=8)
    path = write_granule(src, tmp_path / granule_filename("cci_ocpr", "2020-02-01"), "cci_ocpr")
    close_cached(path)
    with netCDF4.Dataset(path, "a") as nc:
        if extra is not None:
            nc.createDimension(*extra)
        nc.renameVariable(name, name + "_as_written")
        var = nc.createVariable(name, "f4", dims)
        var[...] = np.ones(tuple(len(nc.dimensions[d]) for d in dims), dtype="f4")
    return path


@pytest.mark.parametrize(
    ("n", "name", "dims", "extra", "message"),
    [
        (
            20,
            "solar_zenith_angle",
            ("n", "m"),
            None,
            r"'solar_zenith_angle' \(solar_zenith_angle\) has shape \(20, 20\); the cci_ocpr layout expects 1-D "
            r"with 20 soundings first",
        ),
        (
            20,
            "pressure_weight",
            ("n", "m19"),
            ("m19", 19),
            r"'pressure_weight' \(pressure_weight\) has shape \(20, 19\); the cci_ocpr layout expects "
            r"\(soundings, 20 levels\)",
        ),
        (
            30,
            "xch4_uncertainty",
            ("m",),
            None,
            r"'xch4_uncertainty' \(xgas_uncertainty\) has shape \(20,\); the cci_ocpr layout expects 1-D with 30",
        ),
        (20, "ch4_profile_apriori", ("n",), None, r"\(profile_apriori\) has shape \(20,\); .* expects 2-D"),
    ],
)
def test_a_variable_on_the_wrong_dimensions_is_refused_at_scan(
    tmp_path: Path, n: int, name: str, dims: tuple[str, ...], extra: tuple[str, int] | None, message: str
) -> None:
    path = _ocpr_with(tmp_path, n, name, dims, extra)
    with pytest.raises(GranuleError, match=message) as info:
        open_granule(path)
    assert info.value.path == str(path)
