"""TROPOMI CH4 sounding times: units, the time_utc fallback and the granule's own coverage."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest

from gosat_pipeline.errors import GranuleError
from gosat_pipeline.io import close_cached, open_granule
from gosat_pipeline.io.tropomi_ch4 import parse_iso_times
from gosat_pipeline.testing.granules import granule_filename, granule_soundings, write_granule


@pytest.fixture()
def granule(tmp_path: Path) -> tuple[Path, object]:
    src = granule_soundings("tropomi_ch4", 40, seed=12, start="2021-07-03T10:00", end="2021-07-03T11:40")
    path = write_granule(src, tmp_path / granule_filename("tropomi_ch4", "2021-07-03"), "tropomi_ch4")
    return path, src


def _edit(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    close_cached(path)
    with netCDF4.Dataset(path, "a") as nc:
        fn(nc)


def _max_error(ds, src) -> int:  # type: ignore[no-untyped-def]
    return int(np.abs((ds.time.values - src.time.values).astype("timedelta64[ns]").astype(np.int64)).max())


def test_times_from_time_and_delta_time(granule: tuple[Path, object]) -> None:
    path, src = granule
    ds = open_granule(path, screen=False).compute()
    assert _max_error(ds, src) <= 1_000_000  # delta_time is whole milliseconds
    assert ds.attrs["time_source"] == "PRODUCT/delta_time"


def test_delta_time_without_units_falls_back_to_time_utc(granule: tuple[Path, object]) -> None:
    path, src = granule

    def fn(nc: netCDF4.Dataset) -> None:
        v = nc["PRODUCT/delta_time"]
        v.delncattr("units")
        v.set_auto_maskandscale(False)
        v[...] = (v[...] * 7).astype(np.int32)  # not milliseconds any more

    _edit(path, fn)
    ds = open_granule(path, screen=False).compute()
    assert _max_error(ds, src) <= 1_000  # time_utc has microseconds
    assert ds.attrs["time_source"] == "PRODUCT/time_utc"


def test_cf_units_on_delta_time(granule: tuple[Path, object]) -> None:
    """Newer processors write ``milliseconds since <day>``: used as is, without adding ``time``."""
    path, src = granule

    def fn(nc: netCDF4.Dataset) -> None:
        nc["PRODUCT/delta_time"].units = "milliseconds since 2021-07-03 00:00:00"
        nc["PRODUCT/time"].set_auto_maskandscale(False)
        nc["PRODUCT/time"][...] = np.array([0], dtype=np.int32)  # would be wrong if it were added

    _edit(path, fn)
    assert _max_error(open_granule(path, screen=False).compute(), src) <= 1_000_000


def test_times_outside_coverage_name_the_variable(granule: tuple[Path, object]) -> None:
    path, _ = granule
    _edit(path, lambda nc: setattr(nc, "time_coverage_end", "2021-07-03T10:05:00Z"))
    with pytest.raises(GranuleError, match=r"variable 'PRODUCT/delta_time': \d+ of 40 sounding times fall outside"):
        open_granule(path, screen=False)


def test_coverage_from_the_file_name_when_no_attributes(granule: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = granule

    def fn(nc: netCDF4.Dataset) -> None:
        nc.delncattr("time_coverage_start")
        nc.delncattr("time_coverage_end")
        v = nc["PRODUCT/delta_time"]
        v.set_auto_maskandscale(False)
        v[...] = v[...] + 3 * 86_400_000  # three days later: outside the orbit in the name

    _edit(path, fn)
    with pytest.raises(GranuleError, match="outside the orbit start/end in the file name"):
        open_granule(path, screen=False)


def test_parse_iso_times() -> None:
    got = parse_iso_times(np.array([b"2019-03-11T11:12:39.322999Z", b"", "2019-03-11T11:12:40Z", "junk"], dtype=object))
    assert got[0] == np.datetime64("2019-03-11T11:12:39.322999") and got[2] == np.datetime64("2019-03-11T11:12:40")
    assert np.isnat(got[1]) and np.isnat(got[3])
    assert pd.Timestamp(got[0]).year == 2019
