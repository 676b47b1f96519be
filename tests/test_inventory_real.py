"""Inventories and reported totals read from the real public files in ../shared/real_samples.

Expected values are read here independently (netCDF4, openpyxl, csv), never through the
package, and the figures named in ../shared/real_samples/README.md are asserted.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from gosat_pipeline.inventory import open_prior_inventory

pytestmark = pytest.mark.real_samples

EDGAR_NC = "v6.0_CH4_2015_TOTALS.5.3x5.1.nc"


def _netcdf4_emi(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    with netCDF4.Dataset(path) as nc:
        v = nc["emi_ch4"]
        return (np.asarray(v[:], dtype="float64"), np.asarray(nc["lat"][:], dtype="float64"),
                np.asarray(nc["lon"][:], dtype="float64"), v.units)  # fmt: skip


def test_edgar_v6_file_and_its_download_zip_read_the_file_values(real_samples: Path, tmp_path: Path) -> None:
    nc_path = real_samples / "edgar" / EDGAR_NC
    vals, lat, lon, units = _netcdf4_emi(nc_path)
    assert units == "kg m-2 s-1" and vals.shape == (35, 71)
    for src in (nc_path, real_samples / "edgar" / "TOTALS_nc.zip"):
        out = open_prior_inventory(src, gas="CH4")
        assert out.attrs["units"] == "kg m-2 s-1" and out.attrs["gas"] == "CH4"
        assert out.attrs["layout"] == "edgar_v7_emi"
        assert out.shape == (35, 71) and out.dtype == np.float64
        # the file's longitudes 0.05..359.95 wrap into [-180, 180); values stay in place
        assert float(out.longitude.min()) >= -180.0 and float(out.longitude.max()) < 180.0
        for i in (0, 17, 34):
            for j in (0, 35, 70):
                lo = (lon[j] + 180.0) % 360.0 - 180.0
                got = out.sel(latitude=lat[i], longitude=lo, method="nearest")
                assert float(got.latitude) == pytest.approx(lat[i]) and float(got.longitude) == pytest.approx(lo)
                assert float(got) == vals[i, j]  # kg m-2 s-1 both sides: no conversion
        assert float(out.sum()) == pytest.approx(float(vals.sum()), rel=1e-12)
    # the zip is read in place: nothing unpacked beside it
    with zipfile.ZipFile(real_samples / "edgar" / "TOTALS_nc.zip") as zf:
        assert sorted(zf.namelist()) == ["_readme.html", EDGAR_NC]
    assert not (real_samples / "edgar" / "_readme.html").exists()
