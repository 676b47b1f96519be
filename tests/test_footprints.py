"""External footprints in the real layouts of STILT, FLEXPART, NAME and IMI (issue 15).

The reference is the package's steady operator: its footprints, written in each peer model's
own layout by :mod:`gosat_pipeline.testing.footprints` (spread over back-trajectory hours,
age classes, release layers, finer or wider grids, IMI's element scale factors), must give
the same Jacobian as the generic netCDF and as the operator itself. Every layout fault is a
:class:`FootprintError` naming the file and what to do (bad-input corpus, kind
``footprints``).
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.errors import FootprintError, SchemaError
from gosat_pipeline.grids import GridSpec, regrid_extensive
from gosat_pipeline.schema import MOLAR_MASS
from gosat_pipeline.testing.footprints import (
    flexpart_column_weights,
    write_flexpart_footprints,
    write_generic_footprints,
    write_imi_jacobian,
    write_name_footprints,
    write_stilt_footprints,
)
from gosat_pipeline.testing.osse import make_osse_case
from gosat_pipeline.transport import (
    SimpleTransport,
    TransportSettings,
    build_jacobian,
    detect_footprint_format,
    open_footprints,
    read_footprints,
)
from gosat_pipeline.transport.footprint_formats import standard_atmosphere_pressure

FLOAT32 = 3e-6  # the peer models store footprints in single precision


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The OSSE case, the steady operator's Jacobian and its footprints in every layout."""
    case = make_osse_case(seed=3, regions=4, n_months=2)
    obs, prior, masks, winds = case["obs"], case["prior_flux"], case["masks"], case["winds"]
    jac = build_jacobian(obs, prior, masks, winds=winds, settings=TransportSettings(inflow=False))
    grid = GridSpec.from_coords(obs.latitude, obs.longitude)
    tp = case["transport"]
    op = SimpleTransport(
        grid, winds["u"], winds["v"], eddy_diffusivity=tp["eddy_diffusivity"], ventilation_time=tp["ventilation_time"]
    )
    fp = op.footprints(jac["obs_cell"].values)  # m2 s mol-1
    lat, lon = jac["obs_latitude"].values, jac["obs_longitude"].values
    time = jac["obs_time"].values + np.timedelta64(3, "h")
    ak = jac["obs_column_sensitivity"].values
    d = tmp_path_factory.mktemp("footprints")
    rng = np.random.default_rng(7)
    imi_prior = prior.values * rng.uniform(0.5, 2.0, grid.shape) + 1e-12  # IMI's own prior, not ours
    src = {
        "generic": write_generic_footprints(d / "generic.nc", fp, grid, lat, lon, time),
        "stilt": (write_stilt_footprints(d / "stilt" / "footprints", fp, grid, lat, lon, time, seed=1)[0].parent),
        "flexpart": write_flexpart_footprints(
            d / "flexpart", fp, grid, lat, lon, time, heights=(100.0, 1000.0), n_times=2, n_ageclass=2, seed=2
        ),
        "name": write_name_footprints(
            d / "name" / "SAT_GOSAT_column_202001.nc", fp, grid, lat, lon, time, averaging_kernel=ak
        ),
        "imi": write_imi_jacobian(d / "imi_run", fp, grid, lat, lon, time, imi_prior, averaging_kernel=ak),
    }
    return {
        "case": case,
        "jac": jac,
        "grid": grid,
        "fp": fp,
        "lat": lat,
        "lon": lon,
        "time": time,
        "ak": ak,
        "src": src,
        "dir": d,
        "imi_prior": imi_prior,
    }


def _jacobian(ref: dict[str, Any], footprints: Any) -> xr.DataArray:
    c = ref["case"]
    return build_jacobian(c["obs"], c["prior_flux"], c["masks"], footprints=footprints)


def _assert_same(a: xr.DataArray, b: xr.DataArray, rtol: float) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.values, b.values, rtol=rtol, atol=rtol * np.abs(b.values).max())
    np.testing.assert_array_equal(a["state_region"].values, b["state_region"].values)
    np.testing.assert_array_equal(a["obs_cell"].values, b["obs_cell"].values)


# ------------------------------------------------------------------------------ round trips
def test_generic_footprints_equal_the_steady_operator(ref: dict[str, Any]) -> None:
    jg = _jacobian(ref, ref["src"]["generic"])
    _assert_same(jg, ref["jac"], 1e-9)
    assert jg.attrs["footprints_format"] == "generic" and jg.attrs["footprints_averaging_kernel_applied"] == 0


@pytest.mark.parametrize("fmt", ["stilt", "flexpart", "name", "imi"])
def test_each_format_gives_the_generic_jacobian(ref: dict[str, Any], fmt: str) -> None:
    """Same Jacobian as the generic netCDF (and so as the operator) to single precision."""
    jf = _jacobian(ref, ref["src"][fmt])
    _assert_same(jf, _jacobian(ref, ref["src"]["generic"]), FLOAT32)
    _assert_same(jf, ref["jac"], FLOAT32)
    assert jf.attrs["footprints_format"] == fmt
    # NAME column footprints and IMI's Jacobian carry the averaging kernel already
    assert jf.attrs["footprints_averaging_kernel_applied"] == int(fmt in ("name", "imi"))


def test_stilt_glob_list_and_folder_combine_the_same(ref: dict[str, Any]) -> None:
    folder = ref["src"]["stilt"]
    files = sorted(folder.glob("*_foot.nc"))
    assert len(files) == ref["fp"].shape[0]
    a = open_footprints(folder, "CH4", grid=ref["grid"])
    b = open_footprints(str(folder / "*_X_foot.nc"), "CH4", grid=ref["grid"])
    c = open_footprints(files[::-1], "CH4", grid=ref["grid"], format="stilt")
    np.testing.assert_array_equal(a["footprint"].values, b["footprint"].values)
    order = np.argsort(c["obs_id"].values)
    np.testing.assert_array_equal(a["footprint"].values, c["footprint"].values[order])
    # the receptor comes from the simulation id in the file name
    name = files[0].name
    assert name.endswith("_X_foot.nc") and name[:12].isdigit()
    np.testing.assert_allclose(np.sort(a["obs_latitude"].values), np.sort(ref["lat"]))


def test_conservative_sum_onto_the_inversion_grid(ref: dict[str, Any]) -> None:
    """STILT's finer cells sum back exactly; FLEXPART's wider grid keeps the share outside."""
    grid = ref["grid"]
    native = open_footprints(ref["src"]["stilt"], "CH4")  # 0.5-degree cells
    assert native.sizes["latitude"] == 2 * grid.shape[0]
    on = open_footprints(ref["src"]["stilt"], "CH4", grid=grid)
    np.testing.assert_allclose(
        on["footprint"].sum(("latitude", "longitude")), native["footprint"].sum(("latitude", "longitude")), rtol=1e-12
    )
    np.testing.assert_allclose(on["obs_outside_fraction"], 0.0, atol=1e-12)
    fx = open_footprints(ref["src"]["flexpart"], "CH4", grid=grid)
    wide = open_footprints(ref["src"]["flexpart"], "CH4")
    assert wide.sizes["latitude"] == grid.shape[0] + 4
    out = fx["obs_outside_fraction"].values
    assert np.all(out > 0) and np.all(out < 0.5)
    inside = fx["footprint"].sum(("latitude", "longitude")).values
    np.testing.assert_allclose(inside / (1 - out), wide["footprint"].sum(("latitude", "longitude")).values, rtol=1e-10)
    # regridding is a sum of exact overlap shares: a 1-degree field onto 1.5 degrees keeps its total
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 1, (3, *grid.shape))
    coarse = GridSpec.from_resolution(1.5, grid.bbox)
    np.testing.assert_allclose(regrid_extensive(v, grid.lat_edges, grid.lon_edges, coarse).sum((1, 2)), v.sum((1, 2)))


def test_flexpart_column_integration(ref: dict[str, Any]) -> None:
    """Age classes and output times are summed, only the lowest output layer is used, releases
    of a column are pressure-weighted (US Standard Atmosphere 1976)."""
    assert standard_atmosphere_pressure(0.0) == pytest.approx(1.0)
    # COESA (1976) table at geopotential altitudes: 54019.9 Pa at 5 km, 22632.1 Pa at 11 km, 5474.9 Pa at 20 km
    for z, p in ((5000.0, 54019.9), (11000.0, 22632.1), (20000.0, 5474.89)):
        assert standard_atmosphere_pressure(z) == pytest.approx(p / 101325.0, rel=1e-4), z
    w = flexpart_column_weights()
    assert w.sum() == pytest.approx(1.0 - standard_atmosphere_pressure(10000.0))
    ds = xr.open_dataset(ref["src"]["flexpart"], decode_times=False)
    assert ds["spec001_mr"].dims == ("nageclass", "pointspec", "time", "height", "latitude", "longitude")
    assert ds["spec001_mr"].attrs["units"] == "s m3 kg-1" and ds.sizes["pointspec"] == ds.sizes["numpoint"]
    # one receptor by hand: sum over ages and times, lowest layer, M_air / h0, pressure weights
    spec = ds["spec001_mr"].isel(height=0).astype("float64").sum(("nageclass", "time")).values
    nl = w.size
    col = np.tensordot(w, spec[:nl], axes=1) * MOLAR_MASS["air"] / float(ds["height"][0])
    got = open_footprints(ref["src"]["flexpart"], "CH4")
    np.testing.assert_allclose(got["footprint"].values[0], col, rtol=1e-12)
    ds.close()


def test_imi_jacobian_to_footprints_reproduces_k(ref: dict[str, Any], tmp_path: Path) -> None:
    """Clustered elements: the footprint is uniform over an element and gives back every K_e;
    water cells (StateVector -9999) have none; boundary columns are not used."""
    grid, fp = ref["grid"], ref["fp"]
    water = np.zeros(grid.shape, bool)
    water[:3, :] = True
    run = write_imi_jacobian(
        tmp_path / "run", fp, grid, ref["lat"], ref["lon"], ref["time"], ref["imi_prior"], cluster=(2, 3), water=water
    )
    ds = open_footprints(run / "inversion" / "data_converted", "CH4")
    assert ds.attrs["footprint_format"] == "imi" and ds.attrs["imi_extra_columns"] == 4
    assert ds.attrs["averaging_kernel_applied"] == 1
    f = ds["footprint"].values
    assert np.all(f[:, water] == 0)
    sv = xr.open_dataset(run / "StateVector.nc")["StateVector"].values
    e = ref["imi_prior"] / MOLAR_MASS["CH4"]
    k_true = {}
    for t, pkl in enumerate(sorted((run / "inversion" / "data_converted").glob("*.pkl"))):
        k_true[t] = pickle.loads(pkl.read_bytes())["K"].astype("float64")
    k_all = np.concatenate(list(k_true.values()))
    labels = np.unique(sv[sv > 0]).astype(int)
    for lab in labels[:: max(1, labels.size // 20)]:
        cells = sv == lab
        np.testing.assert_allclose(
            (f[:, cells] * e[cells]).sum(1), k_all[:, lab - 1], rtol=1e-10, atol=1e-12 * np.abs(k_all).max()
        )
        # uniform over the element
        np.testing.assert_allclose(f[:, cells], f[:, cells][:, :1] * np.ones((1, cells.sum())), rtol=1e-12)


def test_auto_detection(ref: dict[str, Any]) -> None:
    for fmt, src in ref["src"].items():
        assert detect_footprint_format(src) == fmt, fmt
    assert detect_footprint_format(sorted(ref["src"]["stilt"].glob("*.nc"))[:3]) == "stilt"
    assert detect_footprint_format(ref["src"]["flexpart"].parent) == "flexpart"
    assert detect_footprint_format(ref["src"]["imi"] / "inversion" / "data_converted") == "imi"
    with xr.open_dataset(ref["src"]["generic"]) as ds:
        assert detect_footprint_format(ds.load()) == "generic"
    with pytest.raises(FootprintError, match="mixes footprint layouts"):
        detect_footprint_format([ref["src"]["generic"], ref["src"]["name"]])
    fp, coords = read_footprints(ref["src"]["name"], "CH4", "name", grid=ref["grid"])
    assert fp.attrs["averaging_kernel_applied"] == 1 and fp.attrs["units"] == "m2 s mol-1"
    assert set(coords.data_vars) >= {"obs_latitude", "obs_longitude", "obs_time"}


def test_canonical_dataset_is_a_generic_footprint_file(ref: dict[str, Any], tmp_path: Path) -> None:
    """A folder of per-receptor files, written once, is what transport.footprints of a run reads."""
    ds = open_footprints(ref["src"]["stilt"], "CH4", grid=ref["grid"])
    assert ds["footprint"].attrs["units"] == "m2 s mol-1"
    for v in ("obs_latitude", "obs_longitude", "obs_outside_fraction", "latitude", "longitude"):
        assert "units" in ds[v].attrs, v
    path = tmp_path / "combined.nc"
    ds.to_netcdf(path)
    assert detect_footprint_format(path) == "generic"
    _assert_same(_jacobian(ref, path), _jacobian(ref, ref["src"]["stilt"]), 1e-12)


def test_explicit_averaging_kernel_flag_overrides_the_format_default(ref: dict[str, Any]) -> None:
    a = open_footprints(ref["src"]["name"], "CH4", averaging_kernel_applied=False)
    assert a.attrs["averaging_kernel_applied"] == 0 and a["footprint"].attrs["averaging_kernel_applied"] == 0


# ------------------------------------------------------------------------------ bad inputs
def _nc_edit(path: Path, fn: Callable[[netCDF4.Dataset], None]) -> Path:
    with netCDF4.Dataset(path, "a") as nc:
        fn(nc)
    return path


def _copy(ref: dict[str, Any], fmt: str, d: Path) -> Path:
    src = ref["src"][fmt]
    dst = d / src.name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


def _stilt_one(ref: dict[str, Any], d: Path, new_name: str | None = None) -> Path:
    f = sorted(ref["src"]["stilt"].glob("*_foot.nc"))[0]
    dst = d / (new_name or f.name)
    shutil.copy(f, dst)
    return dst


def _set_attr(var: str | None, name: str, value: Any) -> Callable[[netCDF4.Dataset], None]:
    def fn(nc: netCDF4.Dataset) -> None:
        (nc[var] if var else nc).setncattr(name, value)

    return fn


def _rename(var: str) -> Callable[[netCDF4.Dataset], None]:
    return lambda nc: nc.renameVariable(var, var + "_x")


def _bad_pickle(obj: Any, name: str = "S5P_BLND_L2__CH4____20200101T030000_20200101T040000_GCtoSatellite.pkl"):
    def build(ref: dict[str, Any], d: Path) -> Path:
        run = _copy(ref, "imi", d)
        conv = run / "inversion" / "data_converted"
        for p in conv.glob("*.pkl"):
            p.unlink()
        (conv / name).write_bytes(pickle.dumps(obj))
        return run

    return build


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("pickle code ran",))


def _flexpart_point(ref: dict[str, Any], d: Path) -> Path:
    p = _copy(ref, "flexpart", d)

    def fn(nc: netCDF4.Dataset) -> None:
        nc["RELZZ2"][:] = nc["RELZZ1"][:]

    return _nc_edit(p, fn)


def _imi_k_short(ref: dict[str, Any], d: Path) -> Path:
    run = _copy(ref, "imi", d)
    for p in (run / "inversion" / "data_converted").glob("*.pkl"):
        obj = pickle.loads(p.read_bytes())
        obj["K"] = obj["K"][:, :10]
        p.write_bytes(pickle.dumps(obj))
    return run


def _imi_without(rel: str) -> Callable[[dict[str, Any], Path], Path]:
    def build(ref: dict[str, Any], d: Path) -> Path:
        run = _copy(ref, "imi", d)
        target = run / rel
        (shutil.rmtree if target.is_dir() else Path.unlink)(target)
        return run

    return build


def _text_file(ref: dict[str, Any], d: Path) -> Path:
    p = d / "footprints.nc"
    p.write_text("not a netCDF file\n")
    return p


def _unknown_nc(ref: dict[str, Any], d: Path) -> Path:
    p = d / "winds.nc"
    xr.Dataset({"u": (("y", "x"), np.zeros((2, 2)))}).to_netcdf(p)
    return p


def _generic_no_obs_coords(ref: dict[str, Any], d: Path) -> Path:
    p = _copy(ref, "generic", d)
    ds = xr.open_dataset(p).load().drop_vars("obs_time")
    p.unlink()
    ds.to_netcdf(p)
    return p


def _name_site(ref: dict[str, Any], d: Path) -> Path:
    p = _copy(ref, "name", d)
    ds = xr.open_dataset(p).load()
    ds = ds.assign_coords(lev=("lev", np.array(["From     0 -    40m agl"], dtype=object)))
    p.unlink()
    ds.to_netcdf(p)
    return p


def _empty_dir(ref: dict[str, Any], d: Path) -> Path:
    (d / "empty").mkdir()
    (d / "empty" / "README.txt").write_text("nothing here")
    return d / "empty"


B = Callable[[dict[str, Any], Path], Any]
#: (case id, builder (ref, folder) -> footprints source, fragments the message must contain)
BAD: list[tuple[str, B, tuple[str, ...]]] = [
    ("missing-path", lambda r, d: d / "nowhere.nc", ("nowhere.nc", "does not exist")),
    ("glob-matches-nothing", lambda r, d: str(d / "*_foot.nc"), ("matches no file",)),
    ("not-netcdf", _text_file, ("footprints.nc", "cannot be read as netCDF")),
    ("unknown-layout", _unknown_nc, ("winds.nc", "not a footprint file", "'u'")),
    ("empty-folder", _empty_dir, ("empty", "holds no footprint files", "README.txt")),
    (
        "generic-units",
        lambda r, d: _nc_edit(_copy(r, "generic", d), _set_attr("footprint", "units", "furlongs")),
        ("generic.nc", "units 'furlongs'", "allowed"),
    ),
    ("generic-no-obs-time", _generic_no_obs_coords, ("generic.nc", "obs_time")),
    (
        "stilt-bad-file-name",
        lambda r, d: _stilt_one(r, d, "receptor_17_foot.nc"),
        ("receptor_17_foot.nc", "simulation id", "yyyymmddHHMM"),
    ),
    (
        "stilt-point-receptor",
        lambda r, d: _stilt_one(r, d, "202001010300_100.5_5.5_5_foot.nc"),
        ("202001010300_100.5_5.5_5_foot.nc", "point receptor", "X-STILT"),
    ),
    (
        "stilt-units",
        lambda r, d: _nc_edit(_stilt_one(r, d), _set_attr("foot", "units", "ppb")),
        ("_X_foot.nc", "'foot' units 'ppb'", "ppm (umol-1 m2 s)"),
    ),
    ("stilt-no-foot", lambda r, d: _nc_edit(_stilt_one(r, d), _rename("foot")), ("no variable 'foot'",)),
    (
        "stilt-projected",
        lambda r, d: _nc_edit(_stilt_one(r, d), _set_attr(None, "crs", "+proj=lcc +lat_1=33")),
        ("projected grid", "+proj=longlat"),
    ),
    (
        "flexpart-forward-run",
        lambda r, d: _nc_edit(_copy(r, "flexpart", d), _set_attr(None, "ldirect", np.int32(1))),
        ("grid_time_", "forward run", "LDIRECT = -1"),
    ),
    (
        "flexpart-concentration-receptor",
        lambda r, d: _nc_edit(_copy(r, "flexpart", d), _set_attr("spec001_mr", "units", "s")),
        ("spec001_mr units 's'", "IND_RECEPTOR = 2"),
    ),
    (
        "flexpart-no-releases",
        lambda r, d: _nc_edit(_copy(r, "flexpart", d), _rename("RELLAT1")),
        ("no release metadata", "RELLAT1"),
    ),
    ("flexpart-point-release", _flexpart_point, ("no vertical extent", "RELZZ1 == RELZZ2", "OBS00000_L00")),
    (
        "flexpart-no-spec",
        lambda r, d: _nc_edit(_copy(r, "flexpart", d), _rename("spec001_mr")),
        ("no 'specNNN_mr' variable",),
    ),
    ("name-site-footprint", _name_site, ("not a satellite column footprint", "From     0 -    40m agl")),
    (
        "name-units",
        lambda r, d: _nc_edit(_copy(r, "name", d), _set_attr("fp", "units", "ppm s")),
        ("'fp' units 'ppm s'", "(mol/mol)/(mol/m2/s)"),
    ),
    (
        "name-no-release-position",
        lambda r, d: _nc_edit(_copy(r, "name", d), _rename("release_lat")),
        ("no receptor position", "release_lat"),
    ),
    ("imi-no-state-vector", _imi_without("StateVector.nc"), ("imi_run", "no StateVector.nc")),
    ("imi-no-prior", _imi_without("hemco_prior_emis"), ("HEMCO_sa_diagnostics", "prior")),
    ("imi-no-jacobian", _imi_without("inversion"), ("no Jacobian files",)),
    ("imi-k-too-short", _imi_k_short, ("K has 10 columns", "different runs")),
    ("imi-not-a-jacobian", _bad_pickle({"obs_GC": np.zeros((2, 5))}), ("'obs_GC'", "'K'")),
    (
        "imi-code-in-pickle",
        _bad_pickle({"obs_GC": np.zeros((1, 5)), "K": _Evil()}),
        ("refusing to load", "only numpy arrays"),
    ),
    (
        "imi-no-time-in-name",
        _bad_pickle({"obs_GC": np.zeros((1, 5)), "K": np.zeros((1, 2000))}, "day1.pkl"),
        ("day1.pkl", "no observation time"),
    ),
]


@pytest.mark.parametrize(("name", "build", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_bad_footprints_are_named_errors(
    ref: dict[str, Any],
    tmp_path: Path,
    name: str,
    build: B,
    fragments: tuple[str, ...],
    bad_input_corpus: Callable[[str, str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = build(ref, tmp_path)
    with pytest.raises(FootprintError) as err:
        open_footprints(source, "CH4", grid=ref["grid"])
    msg = str(err.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert isinstance(err.value, SchemaError)  # existing handlers of schema faults keep working
    assert "pickle code ran" not in capsys.readouterr().out
    bad_input_corpus(f"footprints:{name}", "api-raise")
    # the Jacobian builder raises the same error
    with pytest.raises(FootprintError, match=fragments[0].replace("(", r"\(").replace(")", r"\)")):
        _jacobian(ref, source)
    bad_input_corpus(f"footprints:{name}", "api-jacobian")


def test_files_on_different_grids_need_a_target_grid(ref: dict[str, Any], tmp_path: Path) -> None:
    other = GridSpec.from_resolution(2.0, ref["grid"].bbox)
    n = 3
    fp = np.ones((n, *other.shape)) * 1e-3
    p = write_generic_footprints(tmp_path / "coarse.nc", fp, other, ref["lat"][:n], ref["lon"][:n], ref["time"][:n])
    with pytest.raises(FootprintError, match="another grid"):
        open_footprints([ref["src"]["generic"], p], "CH4")
    both = open_footprints([ref["src"]["generic"], p], "CH4", grid=ref["grid"])
    assert both.sizes["obs"] == ref["fp"].shape[0] + n
    kept = 1.0 - both["obs_outside_fraction"].values[-n:]
    np.testing.assert_allclose(both["footprint"].values[-n:].sum((1, 2)), fp.sum((1, 2)) * kept, rtol=1e-12)
    # the 2-degree rows 4-6 N and 34-36 N are half inside 5-35 N: their area share (in sin latitude) is kept
    sn = np.sin(np.deg2rad([4.0, 5.0, 6.0, 34.0, 35.0, 36.0]))
    rows = 14 + (sn[2] - sn[1]) / (sn[2] - sn[0]) + (sn[4] - sn[3]) / (sn[5] - sn[3])
    assert other.shape == (16, 15)
    np.testing.assert_allclose(kept, rows / 16, rtol=1e-12)


def test_bad_format_name() -> None:
    with pytest.raises(FootprintError, match="allowed"):
        open_footprints("x.nc", "CH4", format="hysplit")


def test_footprint_files_are_the_files_each_layout_reads(ref: dict[str, Any], tmp_path: Path) -> None:
    """What a run checksums: the layout's own files, not everything under a folder."""
    from gosat_pipeline.transport import footprint_files

    src = ref["src"]
    assert footprint_files(src["generic"]) == [src["generic"]]
    stilt = sorted(src["stilt"].glob("*_foot.nc"))
    (src["stilt"] / "notes.txt").write_text("not a footprint")
    try:
        assert footprint_files(src["stilt"]) == stilt
    finally:
        (src["stilt"] / "notes.txt").unlink()
    assert footprint_files(str(src["stilt"] / "*_foot.nc"), "stilt") == stilt
    # an R-STILT project folder: its out/footprints holds the simulations' footprints
    project = tmp_path / "stilt_project"
    shutil.copytree(src["stilt"], project / "out" / "footprints")
    (project / "out" / "by-id").mkdir()
    got = footprint_files(project)
    assert [p.name for p in got] == [p.name for p in stilt]
    assert detect_footprint_format(project) == "stilt"
    imi = footprint_files(src["imi"])
    assert imi[0].name == "StateVector.nc" and any("HEMCO_sa_diagnostics" in p.name for p in imi)
    assert {p.suffix for p in imi[2:]} >= {".pkl"}
    flex = src["flexpart"].parent
    assert footprint_files(flex) == sorted(flex.glob("grid_time_*.nc")) == [src["flexpart"]]
    with pytest.raises(FootprintError, match="format 'hysplit'"):
        footprint_files(src["generic"], "hysplit")
    with pytest.raises(FootprintError, match="does not exist"):
        footprint_files(tmp_path / "nowhere")
