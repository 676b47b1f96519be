"""CF compliance of the netCDF outputs, checked with the IOOS compliance-checker (CF 1.8).

``check_cf(path)`` is reusable: any test that writes a netCDF output can call
``assert_cf_compliant(path)``. A high-priority failure (weight 3) or a checker
exception counts as an error; medium and low priority findings are only reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("compliance_checker")

from compliance_checker.runner import CheckSuite  # noqa: E402

from gosat_pipeline.testing.posteriors import (  # noqa: E402
    make_flux_maps,
    make_gridded_l3,
    make_posterior,
    write_netcdf,
)

_SUITE: CheckSuite | None = None


def _suite() -> CheckSuite:
    global _SUITE
    if _SUITE is None:
        _SUITE = CheckSuite()
        _SUITE.load_all_available_checkers()
    return _SUITE


def check_cf(path: str | Path, checker: str = "cf:1.8") -> list[str]:
    """High-priority CF failures of a netCDF file (empty list = compliant).

    Parameters
    ----------
    path : path-like
        A netCDF file.
    checker : str
        Compliance-checker name, e.g. ``"cf"`` or ``"cf:1.8"``.

    Returns
    -------
    list of str
        One line per failed high-priority check (with the checker's messages) and one
        per checker exception.
    """
    cs = _suite()
    ds = cs.load_dataset(str(path))
    try:
        groups = cs.run_all(ds, [checker], [], [])
    finally:
        if hasattr(ds, "close"):
            ds.close()
    if not groups:
        raise RuntimeError(f"compliance checker {checker!r} not found; installed: {sorted(cs.checkers)}")
    failures = []
    for name, (results, errors) in groups.items():
        for check, err in (errors or {}).items():
            failures.append(f"{name}: checker error in {check}: {err}")
        struct = cs.build_structure(name, results, str(path), 3)
        for res in struct["high_priorities"]:
            if res.value[0] < res.value[1]:
                failures.append(f"{name}: {res.name}: {'; '.join(map(str, res.msgs))}")
    return failures


def assert_cf_compliant(path: str | Path, checker: str = "cf:1.8") -> None:
    """Fail the calling test with every high-priority CF failure of ``path``."""
    failures = check_cf(path, checker)
    assert not failures, f"{path} fails {checker}:\n" + "\n".join(failures)


@pytest.fixture(scope="module")
def posterior() -> xr.Dataset:
    return make_posterior(periods=("2019", "2020"), constraint={"VNM": 0.0})


def test_posterior_nc_is_cf_compliant(tmp_path, posterior):
    path = write_netcdf(posterior, tmp_path / "posterior.nc")
    assert_cf_compliant(path)


def test_emissions_nc_is_cf_compliant(tmp_path, posterior):
    path = write_netcdf(make_flux_maps(posterior), tmp_path / "emissions.nc")
    assert_cf_compliant(path)


def test_gridded_nc_is_cf_compliant(tmp_path):
    path = write_netcdf(make_gridded_l3("CO2"), tmp_path / "gridded.nc")
    assert_cf_compliant(path)


def test_check_cf_finds_real_errors(tmp_path):
    """The helper must be able to fail: int64 data and a fill value on a coordinate."""
    ds = xr.Dataset(
        {"count": (("latitude",), np.arange(3, dtype="int64"), {"units": "1", "long_name": "c"})},
        coords={"latitude": ("latitude", [0.0, 1.0, 2.0], {"units": "degrees_north",
                                                           "standard_name": "latitude"})},
        attrs={"Conventions": "CF-1.8"},
    )  # fmt: skip
    ds.to_netcdf(tmp_path / "bad.nc")
    failures = check_cf(tmp_path / "bad.nc")
    assert any("int64" in f for f in failures)
    assert any("_FillValue" in f for f in failures)
