"""CF compliance of the netCDF outputs, checked with the IOOS compliance-checker (CF 1.8).

``check_cf(path)`` is reusable: any test that writes a netCDF output can call
``assert_cf_compliant(path)``. Every finding counts: a high-priority failure (weight 3,
an error), a medium or low priority one (a warning) and a checker exception. The checker
runs offline: it uses the CF standard-name table bundled with compliance-checker (the
outputs carry no ``standard_name_vocabulary`` that would make it download another), and
``check_cf`` refuses any network connection while it runs.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("compliance_checker")

from compliance_checker.runner import CheckSuite  # noqa: E402

from gosat_pipeline.inversion import invert, mass_balance, posterior_flux_maps  # noqa: E402
from gosat_pipeline.schema import cf_encoding  # noqa: E402
from gosat_pipeline.testing.osse import make_osse_case  # noqa: E402
from gosat_pipeline.testing.posteriors import (  # noqa: E402
    make_flux_maps,
    make_gridded_l3,
    make_posterior,
    write_netcdf,
)
from gosat_pipeline.transport import build_jacobian  # noqa: E402

_SUITE: CheckSuite | None = None


def _suite() -> CheckSuite:
    global _SUITE
    if _SUITE is None:
        _SUITE = CheckSuite()
        _SUITE.load_all_available_checkers()
    return _SUITE


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Refuse every connection that leaves the machine (the checker must not need the internet)."""
    real = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"network access during the CF check: {address!r}")
        real(sock, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = real  # type: ignore[method-assign]


_PRIORITIES = {
    3: ("high_priorities",),
    2: ("high_priorities", "medium_priorities"),
    1: ("high_priorities", "medium_priorities", "low_priorities"),
}


def check_cf(path: str | Path, checker: str = "cf:1.8", priority: int = 1) -> list[str]:
    """CF failures of a netCDF file (empty list = compliant), offline.

    Parameters
    ----------
    path : path-like
        A netCDF file.
    checker : str
        Compliance-checker name, e.g. ``"cf"`` or ``"cf:1.8"``.
    priority : {1, 2, 3}
        Lowest priority reported: 3 errors only, 2 also medium-priority warnings, 1 (the
        default) every finding.

    Returns
    -------
    list of str
        One line per failed check (priority, name and the checker's messages) and one
        per checker exception.
    """
    cs = _suite()
    with _offline():
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
        struct = cs.build_structure(name, results, str(path), priority)
        for level in _PRIORITIES[priority]:
            for res in struct[level]:
                if res.value[0] < res.value[1]:
                    failures.append(f"{name}: {level.split('_')[0]}: {res.name}: {'; '.join(map(str, res.msgs))}")
    return failures


def assert_cf_compliant(path: str | Path, checker: str = "cf:1.8") -> None:
    """Fail the calling test with every CF error and warning of ``path``."""
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
        coords={"latitude": ("latitude", [0.0, 1.0, 2.0], {"units": "degrees_north", "standard_name": "latitude"})},
        attrs={"Conventions": "CF-1.8"},
    )
    ds.to_netcdf(tmp_path / "bad.nc")
    failures = check_cf(tmp_path / "bad.nc")
    assert any("int64" in f for f in failures)
    assert any("_FillValue" in f for f in failures)


# ---------------------------------------------------------------------------- real inversion outputs
@pytest.fixture(scope="module")
def osse() -> dict:
    """A small real inversion: 2 regions, 2 monthly periods (so the maps have a period dim)."""
    case = make_osse_case(seed=1, regions=2, n_months=2)
    jac = build_jacobian(
        case["obs"],
        case["prior_flux"],
        case["masks"],
        winds=case["winds"],
        sigma_model=case["sigma_model"],
        period_split="MS",
    )
    return {**case, "posterior": invert(jac, prior_error=0.5, correlation_length_km=500.0)}


def _write(ds: xr.Dataset, path: Path) -> Path:
    ds.to_netcdf(path, encoding=cf_encoding(ds))
    return path


def test_inversion_posterior_is_cf_compliant(tmp_path, osse):
    post = osse["posterior"]
    assert_cf_compliant(_write(post, tmp_path / "posterior_CH4.nc"))
    for name, var in post.variables.items():
        assert "long_name" in var.attrs, name
    # mixed-unit state: the variable says "1", state_units gives each element's units
    attrs = post["x_posterior"].attrs
    assert attrs["units"] == "1" and "state_units" in attrs["comment"]
    # scale factors, background offsets and inflow (ppb), background gradients (ppb per 1000 km)
    assert set(post["state_units"].values) == {"1", "ppb", "ppb (1000 km)-1"}
    assert post["S_posterior"].attrs["units"] == "1"


def test_inversion_flux_maps_are_cf_compliant(tmp_path, osse):
    maps = posterior_flux_maps(osse["posterior"], osse["prior_flux"], osse["masks"])
    assert maps.sizes["period"] == 2
    path = _write(maps, tmp_path / "emissions_CH4.nc")
    assert_cf_compliant(path)
    std = "tendency_of_atmosphere_mass_content_of_methane_due_to_emission"
    assert maps["posterior_flux"].attrs["standard_name"] == std
    with xr.open_dataset(path) as back:  # the string period labels survive the char-array encoding
        assert list(back["period"].values) == list(maps["period"].values)


def test_mass_balance_is_cf_compliant(tmp_path, osse):
    winds = osse["winds"]
    mb = mass_balance(osse["obs"], osse["masks"], u=winds["u"], v=winds["v"], gas="CH4")
    ds = mb.to_dataset()
    ds.attrs.update(Conventions="CF-1.8", title="mass-balance cross-check", history="test")
    assert_cf_compliant(_write(ds, tmp_path / "mass_balance_CH4.nc"))


def test_ensemble_nc_is_cf_compliant(tmp_path, osse):
    from gosat_pipeline.ensemble import Member, ensemble_dataset
    from gosat_pipeline.transport import TransportSettings

    post = osse["posterior"]
    ds = ensemble_dataset([post, post], [Member(i, TransportSettings(), 8.0, 0.5) for i in range(2)])
    ds.attrs["history"] = "test"  # the pipeline writes its timestamped line here
    assert_cf_compliant(_write(ds, tmp_path / "ensemble_CH4.nc"))


def test_check_cf_reports_warnings_and_stays_offline(tmp_path, monkeypatch):
    """Warnings count: a missing title and a bounds variable with a _FillValue; and the
    checker never leaves the machine (a connection attempt would fail the check)."""
    ds = xr.Dataset(
        {
            "x": (("latitude",), np.zeros(2, dtype="float32"), {"units": "1", "long_name": "x"}),
            "latitude_bounds": (("latitude", "nv"), np.array([[0.0, 1.0], [1.0, 2.0]])),
        },
        coords={
            "latitude": (
                "latitude",
                [0.5, 1.5],
                {"units": "degrees_north", "standard_name": "latitude", "bounds": "latitude_bounds"},
            )
        },
        attrs={"Conventions": "CF-1.8", "history": "test"},
    )
    ds.to_netcdf(tmp_path / "warn.nc", encoding={"latitude": {"_FillValue": None}})
    failures = check_cf(tmp_path / "warn.nc")
    assert any("medium" in f and "title" in f for f in failures), failures
    assert any("_FillValue" in f and "latitude_bounds" in f for f in failures), failures
    assert check_cf(tmp_path / "warn.nc", priority=3) == []  # warnings only, no errors
    # the same file written with cf_encoding and a title: nothing left
    ds.attrs["title"] = "t"
    assert check_cf(_write(ds, tmp_path / "ok.nc")) == []
    # offline: the guard refuses a connection to the internet while the checker runs
    with pytest.raises(OSError, match="network access"), _offline():
        socket.create_connection(("192.0.2.1", 80), timeout=1)
