"""The h5py read path for netCDF-4 granules gives exactly what netCDF4-python gives."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest

from gosat_pipeline.io import close_cached, open_granules
from gosat_pipeline.io._common import H5NcFile, open_granule_file
from gosat_pipeline.testing.granules import make_granule_files
from gosat_pipeline.testing.readers import BUILTIN_READER_FACTS

#: every built-in product stored as netCDF (NIES files are plain HDF5)
NETCDF_FORMATS = [f for f, facts in BUILTIN_READER_FACTS.items() if facts.netcdf]


def _walk(grp: netCDF4.Dataset, prefix: str = "") -> list[tuple[str, netCDF4.Variable]]:
    out = [(prefix + name, var) for name, var in grp.variables.items()]
    for name, sub in grp.groups.items():
        out += _walk(sub, f"{prefix}{name}/")
    return out


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return a.shape == b.shape and bool(np.all(a == b))


def assert_same_as_netcdf4(path: Path) -> int:
    """Every variable and attribute of ``path`` equal through :class:`H5NcFile` and netCDF4 (raw values)."""
    n = 0
    with netCDF4.Dataset(path) as nc, H5NcFile(str(path)) as h5:
        assert sorted(h5.ncattrs()) == sorted(nc.ncattrs())
        for k in nc.ncattrs():
            assert _same(h5.getncattr(k), nc.getncattr(k)), k
        for vpath, var in _walk(nc):
            var.set_auto_maskandscale(False)
            var.set_auto_chartostring(False)
            hv = h5[vpath]
            assert hv.shape == var.shape and hv.name == var.name, vpath
            assert sorted(hv.ncattrs()) == sorted(var.ncattrs()), vpath
            for k in var.ncattrs():
                got, want = hv.getncattr(k), var.getncattr(k)
                assert type(got) is type(want) or (np.isscalar(got) and np.isscalar(want)), (vpath, k, got, want)
                assert _same(got, want), (vpath, k, got, want)
            got, want = hv[...], np.asarray(var[...])
            assert got.dtype == want.dtype, vpath
            assert _same(got, want), vpath
            n += 1
    return n


@pytest.mark.parametrize("fmt", NETCDF_FORMATS)
def test_every_variable_and_attribute_equals_netcdf4(tmp_path: Path, fmt: str) -> None:
    (path,) = make_granule_files(tmp_path, fmt, n_files=1, n_per_file=57, seed=3)
    assert assert_same_as_netcdf4(path) >= 10


@pytest.mark.real_samples
def test_real_files_read_the_same_through_h5py(real_samples: Path) -> None:
    files = sorted(real_samples.glob("*.nc*"))
    assert files
    for f in files:
        assert assert_same_as_netcdf4(f) > 20, f


def test_strings_groups_and_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "odd.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("n", 3)
        nc.createDimension("len", 4)
        nc.title = "ascii"
        nc.setncattr_string("vlen_title", "variable-length text é")
        nc.setncattr("numbers", np.array([1.5, 2.5]))
        g = nc.createGroup("G")
        v = g.createVariable("names", str, ("n",))
        v[:] = np.array(["a", "bb", "ccc"], dtype=object)
        v.setncattr_string("note", "vlen")
        c = nc.createVariable("chars", "S1", ("n", "len"))
        c[:] = netCDF4.stringtochar(np.array(["abcd", "ef", ""], dtype="S4"))
        s = nc.createVariable("scalar", "f8", ())
        s[...] = 7.25
        s.scale_factor = np.float32(2.0)
    with H5NcFile(str(path)) as h5:
        assert h5.getncattr("title") == "ascii"
        assert h5.getncattr("vlen_title") == "variable-length text é"
        np.testing.assert_array_equal(h5.getncattr("numbers"), [1.5, 2.5])
        names = h5["G/names"][...]
        assert names.dtype == object and names.tolist() == ["a", "bb", "ccc"]
        assert h5["G/names"].getncattr("note") == "vlen"
        assert h5["chars"][...].shape == (3, 4) and h5["chars"][...].dtype == "S1"
        assert float(h5["scalar"][...]) == 7.25
        sf = h5["scalar"].getncattr("scale_factor")
        assert np.isscalar(sf) and sf == 2.0
        for missing in ("n", "len", "G", "nothing", "G/nothing"):  # dimension, group, absent: not variables
            with pytest.raises(KeyError):
                h5[missing]
        with pytest.raises(AttributeError):
            h5["chars"].getncattr("units")
        with pytest.raises(AttributeError):
            h5.getncattr("DIMENSION_LIST")
    assert assert_same_as_netcdf4(path) == 3


def test_netcdf3_files_are_read_with_netcdf4(tmp_path: Path) -> None:
    """h5py cannot open netCDF-3; the reader falls back to netCDF4 and gives the same soundings."""
    (src,) = make_granule_files(tmp_path / "nc4", "cci_ocpr", n_files=1, n_per_file=40, seed=5)
    nc3 = tmp_path / "nc3" / src.name
    nc3.parent.mkdir()
    with netCDF4.Dataset(src) as a, netCDF4.Dataset(nc3, "w", format="NETCDF3_CLASSIC") as b:
        for name, dim in a.dimensions.items():
            b.createDimension(name, len(dim))
        b.setncatts({k: a.getncattr(k) for k in a.ncattrs()})
        for name, var in a.variables.items():
            var.set_auto_maskandscale(False)
            out = b.createVariable(name, var.dtype, var.dimensions)
            out.setncatts({k: var.getncattr(k) for k in var.ncattrs()})
            out.set_auto_maskandscale(False)
            out[:] = var[:]
        b["exposure_id"]._Encoding = "ascii"  # netCDF4 then returns the char ids as strings
    with netCDF4.Dataset(nc3) as c:
        assert c["exposure_id"][:].dtype.kind == "U"
    handle = open_granule_file(str(nc3))
    try:
        assert isinstance(handle, netCDF4.Dataset)
    finally:
        handle.close()
    assert isinstance(h := open_granule_file(str(src)), H5NcFile)
    h.close()
    a, b = open_granules([src]).compute(), open_granules([nc3]).compute()
    for name in a.variables:
        if name not in ("source_file", "granule_path"):  # the two files' paths differ
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    # the string ids netCDF4 returns work for the duplicate check too: the same soundings once
    with pytest.warns(UserWarning, match="sounding_id was already read"):
        both = open_granules([nc3, src])
    assert both.sizes["sounding"] == b.sizes["sounding"] and both.attrs["n_duplicate_soundings"] == b.sizes["sounding"]


def test_cached_handles_close_and_see_a_rewritten_file(tmp_path: Path) -> None:
    (path,) = make_granule_files(tmp_path / "a", "cci_ocpr", n_files=1, n_per_file=30, seed=1)
    first = open_granules([path])  # scanned, not read: its handle stays in the cache
    (other,) = make_granule_files(tmp_path / "b", "cci_ocpr", n_files=1, n_per_file=45, seed=2)
    shutil.copyfile(other, path)  # same name and inode, new content (new size and mtime)
    second = open_granules([path]).compute()
    assert first.attrs["n_soundings_in_files"] == 30 and second.attrs["n_soundings_in_files"] == 45
    np.testing.assert_array_equal(second.xgas.values, open_granules([other]).xgas.values)
    close_cached()
    path.unlink()  # no handle left open on it


def test_a_file_opens_twice_in_one_process_by_every_path(tmp_path: Path) -> None:
    """A scanned file's handle stays cached: detection, a second open and h5py itself must still work.

    The cache once opened files with HDF5's CLOSE_STRONG degree while detection (and h5py.File)
    used CLOSE_WEAK; HDF5 refuses a second open with another degree, which surfaced as a false
    "truncated or corrupt HDF5 file" for files recognised by content (a renamed or subset file).
    """
    import h5py

    from gosat_pipeline.io import detect_format, open_granule

    (src,) = make_granule_files(tmp_path / "a", "tropomi_ch4", n_files=1, n_per_file=20, seed=4)
    renamed = tmp_path / "subset_of_an_orbit.nc4"  # no reader knows the name: detection by content
    shutil.copy(src, renamed)
    first = open_granule(renamed, screen=False)  # scanned only: the handle is cached, still open
    assert detect_format(renamed) == "tropomi_ch4"  # content detection while it is open
    second = open_granule(renamed, screen=False)
    with h5py.File(renamed, "r") as f:  # a user's (or h5netcdf's) own open while ours is cached
        assert "PRODUCT" in f
    with netCDF4.Dataset(renamed) as nc:
        assert "PRODUCT" in nc.groups
    np.testing.assert_array_equal(first.xgas.values, second.xgas.values)
    with h5py.File(renamed, "r"):  # and ours while a user's is open
        third = open_granule(renamed, screen=False, format="tropomi_ch4").compute()
    np.testing.assert_array_equal(third.xgas.values, first.xgas.values)
    close_cached()
