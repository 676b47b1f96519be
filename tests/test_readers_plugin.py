"""The plug-in path end to end: a table-driven reader written as data, run through the contract tests.

``ExampleXco2Reader`` is what docs/readers.md shows a plug-in author: a layout, a flag,
a file-name pattern and a content sniff; no reading code. ``TestExampleXco2`` gets the
whole reader contract by subclassing :class:`ReaderContractTests` and writing a sample.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.io import FileSummary, NcTableReader, ReaderLayout, VarSpec, list_formats
from gosat_pipeline.testing.readers import ReaderContractTests
from gosat_pipeline.testing.soundings import make_soundings

FILL = -999.0


class ExampleXco2Reader(NcTableReader):
    """A flat XCO2 product: dims (n, m), pressures in Pa, surface first, ``_FillValue`` fills."""

    name = "example_xco2"
    description = "Example L2 XCO2 (tests of the plug-in path), netCDF"
    gases = ("CO2",)
    filename_patterns = (r"EXAMPLE-L2-XCO2-\d{8}-v[\d.]+\.nc",)
    screen = "qflag == 0"
    product = "Example L2 XCO2"
    version_pattern = r"-v([\d.]+)\.nc"
    variable_map = {
        "CO2": ReaderLayout(
            {
                "time": VarSpec("time", transform="time"),
                "latitude": VarSpec("lat"),
                "longitude": VarSpec("lon"),
                "xgas": VarSpec("xco2"),
                "xgas_uncertainty": VarSpec("xco2_err"),
                "averaging_kernel": VarSpec("ak"),
                "pressure_weight": VarSpec("pwf"),
                "profile_apriori": VarSpec("co2_apriori"),
                "pressure": VarSpec("p_levels", factor=0.01),  # Pa -> hPa
                "surface_pressure": VarSpec("psurf", factor=0.01, required=False),
                "solar_zenith_angle": VarSpec("sza", required=False),
                "surface_type": VarSpec("mode", transform="glint_eq1", required=False),
                "sounding_id": VarSpec("sid", transform="int", required=False),
            },
            reader="example_xco2",
        )
    }
    flag_variable = {"CO2": "qflag"}

    def sniff(self, summary: FileSummary) -> bool:
        """The product's own variable names."""
        return {"xco2", "qflag", "p_levels"} <= summary.variables


def write_example(src: xr.Dataset, path: Path) -> Path:
    """Write canonical soundings in the example layout (CF time, Pa, fills as -999)."""
    n, m = src.sizes["sounding"], src.sizes["level"]
    seconds = (src.time.values - np.datetime64("1970-01-01")) / np.timedelta64(1, "s")

    def put(
        nc: netCDF4.Dataset, name: str, values: np.ndarray, dims: tuple[str, ...], dtype: str = "f4", **attrs: str
    ) -> None:
        fill = {"_FillValue": np.array(FILL, dtype=dtype)} if dtype[0] == "f" else {}
        var = nc.createVariable(name, dtype, dims, **({"fill_value": fill["_FillValue"]} if fill else {}))
        var.setncatts(attrs)
        var[...] = np.where(np.isnan(values), FILL, values) if fill else values

    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("n", n)
        nc.createDimension("m", m)
        put(nc, "time", seconds, ("n",), "f8", units="seconds since 1970-01-01 00:00:00")
        put(nc, "lat", src.latitude.values, ("n",), "f8")
        put(nc, "lon", src.longitude.values, ("n",), "f8")
        put(nc, "xco2", src.xgas.values, ("n",), units="ppm")
        put(nc, "xco2_err", src.xgas_uncertainty.values, ("n",), units="ppm")
        put(nc, "ak", src.averaging_kernel.values, ("n", "m"))
        put(nc, "pwf", src.pressure_weight.values, ("n", "m"))
        put(nc, "co2_apriori", src.profile_apriori.values, ("n", "m"))
        put(nc, "p_levels", src.pressure.values * 100.0, ("n", "m"), "f8", units="Pa")
        put(nc, "psurf", src.surface_pressure.values * 100.0, ("n",), "f8", units="Pa")
        put(nc, "sza", src.solar_zenith_angle.values, ("n",))
        put(nc, "mode", src.surface_type.values.astype("i1"), ("n",), "i1")
        put(nc, "sid", src.sounding_id.values, ("n",), "i8")
        put(nc, "qflag", src.quality_flag.values.astype("i1"), ("n",), "i1")
    return path


class TestExampleXco2(ReaderContractTests):
    reader, gas, reader_class = "example_xco2", "CO2", ExampleXco2Reader
    required_variable = "xco2_err"

    def sample_soundings(self) -> xr.Dataset:
        src = make_soundings(50, "CO2", seed=5)
        src["surface_type"] = ("sounding", (np.arange(50) % 3 == 0).astype("int8"))
        return src

    def write_sample(self, source: xr.Dataset, directory: Path) -> Path:
        day = pd.Timestamp(source.time.values[0]).strftime("%Y%m%d")
        return write_example(source, directory / f"EXAMPLE-L2-XCO2-{day}-v1.2.nc")


def test_the_example_reader_is_only_registered_while_its_contract_runs() -> None:
    assert "example_xco2" not in list_formats()
