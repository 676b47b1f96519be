"""Writers of external footprints in the real layouts of STILT, FLEXPART, NAME and IMI.

Each writer takes canonical column footprints ``(n, ny, nx)`` in m2 s mol-1 on a
:class:`~gosat_pipeline.grids.GridSpec` with the receptors' positions and times, and writes
what that model writes for them (``docs/footprints.md`` lists the sources of each layout):
the file names, variables, dimension order, units and metadata, with the quantity spread
the way the model spreads it (over hourly back-trajectory layers, age classes and output
times, several release layers of a column, finer cells, element scale factors), so that a
reader that undoes it exactly gives the footprints back and one that does not fails a test.
Deterministic for a given ``seed``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.grids import GridSpec
from gosat_pipeline.schema import MOLAR_MASS
from gosat_pipeline.transport.footprint_formats import standard_atmosphere_pressure

__all__ = [
    "FLEXPART_COLUMN_LAYERS",
    "write_flexpart_footprints",
    "write_generic_footprints",
    "write_imi_jacobian",
    "write_name_footprints",
    "write_stilt_footprints",
]

#: Release layers (m above ground) of a FLEXPART column receptor, surface to 10 km.
FLEXPART_COLUMN_LAYERS: tuple[tuple[float, float], ...] = (
    (0.0, 500.0),
    (500.0, 1500.0),
    (1500.0, 3000.0),
    (3000.0, 6000.0),
    (6000.0, 10000.0),
)


def _check(fp: np.ndarray, grid: GridSpec, lat: np.ndarray, lon: np.ndarray, time: np.ndarray) -> np.ndarray:
    fp = np.asarray(fp, dtype="float64")
    if fp.ndim != 3 or fp.shape[1:] != grid.shape or not (fp.shape[0] == len(lat) == len(lon) == len(time)):
        raise ValueError(f"footprints {fp.shape} do not match the grid {grid.shape} and {len(lat)} receptors")
    return fp


def _shares(rng: np.random.Generator, n: int, size: tuple[int, ...]) -> np.ndarray:
    """Random positive shares along a new first axis of length n that sum to 1."""
    w = rng.uniform(0.2, 1.0, (n, *size))
    return w / w.sum(axis=0)


# ------------------------------------------------------------------------------ generic
def write_generic_footprints(
    path: str | Path,
    fp: np.ndarray,
    grid: GridSpec,
    obs_latitude: np.ndarray,
    obs_longitude: np.ndarray,
    obs_time: np.ndarray,
) -> Path:
    """The package's own layout: ``footprint`` (obs, latitude, longitude) in m2 s mol-1."""
    fp = _check(fp, grid, obs_latitude, obs_longitude, obs_time)
    ds = xr.Dataset(
        {"footprint": (("obs", "latitude", "longitude"), fp, {"units": "m2 s mol-1"})},
        coords={
            "obs_latitude": ("obs", np.asarray(obs_latitude, "float64"), {"units": "degrees_north"}),
            "obs_longitude": ("obs", np.asarray(obs_longitude, "float64"), {"units": "degrees_east"}),
            "obs_time": ("obs", np.asarray(obs_time, "datetime64[ns]")),
            **grid.coords(),
        },
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return path


# ------------------------------------------------------------------------------ STILT
def stilt_simulation_id(time: pd.Timestamp, lat: float, lon: float, zagl: str | float = "X") -> str:
    """R-STILT's simulation id ``yyyymmddHHMM_<long>_<lati>_<zagl>`` (``X`` for a column receptor)."""
    return f"{pd.Timestamp(time):%Y%m%d%H%M}_{lon:g}_{lat:g}_{zagl}"


def write_stilt_footprints(
    folder: str | Path,
    fp: np.ndarray,
    grid: GridSpec,
    obs_latitude: np.ndarray,
    obs_longitude: np.ndarray,
    obs_time: np.ndarray,
    *,
    hours: int = 24,
    refine: int = 2,
    zagl: str | float = "X",
    seed: int = 0,
) -> list[Path]:
    """One R-STILT ``out/footprints/<simulation_id>_foot.nc`` per receptor.

    Layout of ``write_footprint.r`` (STILT-R v2): ``foot`` (time, lat, lon) float with
    units ``ppm (umol-1 m2 s)``, ``_FillValue`` -1, hourly back-trajectory layers stamped at
    their hour (``seconds since 1970-01-01 00:00:00Z``), cell-centre ``lat``/``lon`` on a grid
    ``refine`` times finer than ``grid``, global attributes ``crs``, ``crs_format``,
    ``documentation``, ``title``, ``time_created``. Each footprint is spread over the hours
    and the finer cells with random shares (zero cells stay zero).
    """
    fp = _check(fp, grid, obs_latitude, obs_longitude, obs_time)
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fine = GridSpec.from_resolution(float(np.diff(grid.lat_edges)[0]) / refine, grid.bbox)
    out = []
    for k in range(fp.shape[0]):
        sub = np.repeat(np.repeat(fp[k], refine, 0), refine, 1)
        split = _shares(rng, refine * refine, grid.shape)  # shares of the refine x refine sub-cells
        shares = np.zeros(fine.shape)
        for a in range(refine):
            for b in range(refine):
                shares[a::refine, b::refine] = split[a * refine + b]
        layers = _shares(rng, hours, fine.shape) * (sub * shares)[None]
        t0 = pd.Timestamp(obs_time[k])
        stamps = np.array([(t0 - pd.Timedelta(hours=h + 1)).value // 10**9 for h in range(hours)][::-1], "float64")
        ds = xr.Dataset(
            {
                "foot": (
                    ("time", "lat", "lon"),
                    layers[::-1].astype("float32"),
                    {
                        "units": "ppm (umol-1 m2 s)",
                        "standard_name": "footprint",
                        "long_name": "stilt surface influence footprint",
                    },
                )
            },
            coords={
                "time": (
                    "time",
                    stamps,
                    {
                        "units": "seconds since 1970-01-01 00:00:00Z",
                        "standard_name": "time",
                        "long_name": "utc time",
                        "calendar": "standard",
                    },
                ),
                "lat": (
                    "lat",
                    fine.lat,
                    {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude at cell center"},
                ),
                "lon": (
                    "lon",
                    fine.lon,
                    {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude at cell center"},
                ),
            },
            attrs={
                "crs": "+proj=longlat",
                "crs_format": "PROJ.4",
                "documentation": "github.com/uataq/stilt",
                "title": "STILT Footprint",
                "time_created": "2020-01-01 00:00:00",
            },
        )
        sid = stilt_simulation_id(t0, float(obs_latitude[k]), float(obs_longitude[k]), zagl)
        path = folder / f"{sid}_foot.nc"
        ds.to_netcdf(path, encoding={"foot": {"_FillValue": -1.0}})
        out.append(path)
    return out


# ------------------------------------------------------------------------------ FLEXPART
def flexpart_column_weights(layers: tuple[tuple[float, float], ...] = FLEXPART_COLUMN_LAYERS) -> np.ndarray:
    """Pressure weights of the release layers (US Standard Atmosphere), as the reader takes them."""
    z = np.array(layers)
    return standard_atmosphere_pressure(z[:, 0]) - standard_atmosphere_pressure(z[:, 1])


def write_flexpart_footprints(
    path: str | Path,
    fp: np.ndarray,
    grid: GridSpec,
    obs_latitude: np.ndarray,
    obs_longitude: np.ndarray,
    obs_time: np.ndarray,
    *,
    layers: tuple[tuple[float, float], ...] = FLEXPART_COLUMN_LAYERS,
    heights: tuple[float, ...] = (100.0, 500.0, 2000.0),
    pad: int = 2,
    n_times: int = 4,
    n_ageclass: int = 2,
    seed: int = 0,
) -> Path:
    """A FLEXPART backward run's ``grid_time_<iedate><ietime>.nc`` with column receptors.

    Layout of ``netcdf_output_mod.f90`` (FLEXPART 10.4 / 11): ``spec001_mr`` (nageclass,
    pointspec, time, height, latitude, longitude) float in ``s m3 kg-1`` (IND_SOURCE 1,
    IND_RECEPTOR 2), ``time`` int seconds since iedate/ietime (negative: backward),
    ``height`` the tops of the output layers (m), cell-centre ``longitude``/``latitude``
    float on an output grid ``pad`` cells wider than ``grid`` on each side (the margin holds
    footprint too: it falls outside the inversion grid), the release variables ``RELCOM``,
    ``RELLNG1/2``, ``RELLAT1/2``, ``RELZZ1/2``, ``RELKINDZ``, ``RELSTART``, ``RELEND``,
    ``RELPART``, ``RELXMASS``, ``LAGE``, ``ORO`` and the global COMMAND attributes. Each
    receptor is a column of ``layers`` releases (RELKINDZ 1) whose sensitivities decrease
    with height and, pressure-weighted, add up to the column footprint; each release's
    sensitivity is spread over age classes and output times, and the output layers above
    the lowest one hold other values that a reader must not use.
    """
    fp = _check(fp, grid, obs_latitude, obs_longitude, obs_time)
    rng = np.random.default_rng(seed)
    dlat, dlon = float(np.diff(grid.lat_edges)[0]), float(np.diff(grid.lon_edges)[0])
    out_g = GridSpec(
        grid.lat_edges[0] - pad * dlat + dlat * np.arange(grid.shape[0] + 2 * pad + 1),
        grid.lon_edges[0] - pad * dlon + dlon * np.arange(grid.shape[1] + 2 * pad + 1),
    )
    n, nl = fp.shape[0], len(layers)
    big = np.zeros((n, *out_g.shape))
    big[:, pad:-pad, pad:-pad] = fp
    big[:, :pad, :] = rng.uniform(0, 1, (n, pad, out_g.shape[1])) * fp.mean(axis=(1, 2))[:, None, None]
    w = flexpart_column_weights(layers)
    prof = np.exp(-np.array([0.5 * (a + b) for a, b in layers]) / 2500.0)
    r = prof / (w @ prof)  # sum_k w_k r_k = 1
    h0 = heights[0]
    srr = big[:, None] * r[None, :, None, None] * h0 / MOLAR_MASS["air"]  # (n, nl, lat, lon) s m3 kg-1
    srr = srr.reshape(n * nl, *out_g.shape)
    spread = _shares(rng, n_ageclass * n_times, (n * nl,))[..., None, None] * srr[None]  # (a*t, p, lat, lon)
    spec = spread.reshape(n_ageclass, n_times, n * nl, *out_g.shape).transpose(0, 2, 1, 3, 4)
    upper = rng.uniform(0.5, 2.0, (len(heights) - 1,))
    spec = np.concatenate([spec[:, :, :, None], spec[:, :, :, None] * upper[None, None, None, :, None, None]], axis=3)
    times = pd.DatetimeIndex(np.asarray(obs_time, "datetime64[ns]"))
    ref = (times.max() + pd.Timedelta(hours=1)).floor("h")
    start_rel = ((times - pd.Timedelta(minutes=30)) - ref).total_seconds().astype("int64")
    end_rel = ((times + pd.Timedelta(minutes=30)) - ref).total_seconds().astype("int64")
    rel_start, rel_end = np.repeat(start_rel, nl), np.repeat(end_rel, nl)
    z1 = np.tile([a for a, _ in layers], n).astype("float32")
    z2 = np.tile([b for _, b in layers], n).astype("float32")
    lat_r, lon_r = (
        np.repeat(np.asarray(obs_latitude, "float64"), nl),
        np.repeat(np.asarray(obs_longitude, "float64"), nl),
    )
    names = [f"OBS{k:05d}_L{j:02d}" for k in range(n) for j in range(nl)]
    relcom = np.array([list(s.ljust(45).encode()) for s in names], dtype="uint8").view("S1")
    step = 3 * 3600
    ds = xr.Dataset(
        {
            "spec001_mr": (
                ("nageclass", "pointspec", "time", "height", "latitude", "longitude"),
                spec.astype("float32"),
                {"units": "s m3 kg-1", "long_name": "CH4", "decay": -0.0, "weightmolar": 16.0},
            ),
            "RELCOM": (("numpoint", "nchar"), relcom, {"long_name": "release point name"}),
            "RELLNG1": (
                "numpoint",
                (lon_r - 0.01).astype("float32"),
                {"units": "degrees_east", "long_name": "release longitude lower left corner"},
            ),
            "RELLNG2": (
                "numpoint",
                (lon_r + 0.01).astype("float32"),
                {"units": "degrees_east", "long_name": "release longitude upper right corner"},
            ),
            "RELLAT1": (
                "numpoint",
                (lat_r - 0.01).astype("float32"),
                {"units": "degrees_north", "long_name": "release latitude lower left corner"},
            ),
            "RELLAT2": (
                "numpoint",
                (lat_r + 0.01).astype("float32"),
                {"units": "degrees_north", "long_name": "release latitude upper right corner"},
            ),
            "RELZZ1": ("numpoint", z1, {"units": "meters", "long_name": "release height bottom"}),
            "RELZZ2": ("numpoint", z2, {"units": "meters", "long_name": "release height top"}),
            "RELKINDZ": ("numpoint", np.ones(n * nl, "int32"), {"long_name": "release kind"}),
            "RELSTART": (
                "numpoint",
                rel_start.astype("int32"),
                {"units": "seconds", "long_name": "release start relative to simulation start"},
            ),
            "RELEND": (
                "numpoint",
                rel_end.astype("int32"),
                {"units": "seconds", "long_name": "release end relative to simulation start"},
            ),
            "RELPART": ("numpoint", np.full(n * nl, 10000, "int32"), {"long_name": "number of release particles"}),
            "RELXMASS": (
                ("numspec", "numpoint"),
                np.ones((1, n * nl), "float32"),
                {"long_name": "total release particle mass"},
            ),
            "LAGE": (
                "nageclass",
                (np.arange(1, n_ageclass + 1) * 5 * 86400).astype("int32"),
                {"units": "seconds", "long_name": "age class"},
            ),
            "ORO": (
                ("latitude", "longitude"),
                np.zeros(out_g.shape, "int32"),
                {"standard_name": "surface altitude", "long_name": "outgrid surface altitude", "units": "m"},
            ),
        },
        coords={
            "time": (
                "time",
                (-step * np.arange(1, n_times + 1)).astype("int32"),
                {"units": f"seconds since {ref:%Y-%m-%d %H:%M}", "calendar": "proleptic_gregorian"},
            ),
            "longitude": (
                "longitude",
                out_g.lon.astype("float32"),
                {
                    "long_name": "longitude in degree east",
                    "axis": "Lon",
                    "units": "degrees_east",
                    "standard_name": "grid_longitude",
                    "description": "grid cell centers",
                },
            ),
            "latitude": (
                "latitude",
                out_g.lat.astype("float32"),
                {
                    "long_name": "latitude in degree north",
                    "axis": "Lat",
                    "units": "degrees_north",
                    "standard_name": "grid_latitude",
                    "description": "grid cell centers",
                },
            ),
            "height": (
                "height",
                np.asarray(heights, "float32"),
                {"units": "meters", "positive": "up", "standard_name": "height", "long_name": "height above ground"},
            ),
        },
        attrs={
            "Conventions": "CF-1.6",
            "title": "FLEXPART model output",
            "source": "FLEXPART v10.4 model output",
            "references": "Stohl et al., Atmos. Chem. Phys., 2005, doi:10.5194/acp-5-2461-200",
            "outlon0": float(out_g.lon_edges[0]),
            "outlat0": float(out_g.lat_edges[0]),
            "dxout": dlon,
            "dyout": dlat,
            "ldirect": np.int32(-1),
            "ibdate": f"{ref - pd.Timedelta(seconds=step * n_times):%Y%m%d}",
            "ibtime": f"{ref - pd.Timedelta(seconds=step * n_times):%H%M%S}",
            "iedate": f"{ref:%Y%m%d}",
            "ietime": f"{ref:%H%M%S}",
            "loutstep": np.int32(-step),
            "loutaver": np.int32(-step),
            "loutsample": np.int32(-900),
            "ind_source": np.int32(1),
            "ind_receptor": np.int32(2),
            "ioutputforeachrelease": np.int32(1),
            "iout": np.int32(1),
            "lagespectra": np.int32(1),
            "nested_output": np.int32(0),
            "sfc_only": np.int32(0),
        },
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() or path.suffix != ".nc":
        path = path / f"grid_time_{ref:%Y%m%d%H%M%S}.nc"
        path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, encoding={"time": {"dtype": "int32"}})
    return path


# ------------------------------------------------------------------------------ NAME
def write_name_footprints(
    path: str | Path,
    fp: np.ndarray,
    grid: GridSpec,
    obs_latitude: np.ndarray,
    obs_longitude: np.ndarray,
    obs_time: np.ndarray,
    *,
    averaging_kernel: np.ndarray | None = None,
) -> Path:
    """NAME satellite column footprints processed to netCDF (ACRG ``process.py`` / OpenGHG).

    ``fp`` (lat, lon, time) float in ``(mol/mol)/(mol/m2/s)``, ``lev`` = "column", ``time``
    in seconds since the first time (``label`` left, ``period`` "0.0 hours": each time is one
    sounding), ``release_lat``/``release_lon``/``pressure``/``temperature``/``PBLH`` on time.
    The processing multiplies the levels by the retrieval's pressure weights and averaging
    kernel; ``averaging_kernel`` (per receptor) stands for that weighting here.
    """
    fp = _check(fp, grid, obs_latitude, obs_longitude, obs_time)
    ak = np.ones(fp.shape[0]) if averaging_kernel is None else np.asarray(averaging_kernel, "float64")
    vals = (fp * ak[:, None, None]).transpose(1, 2, 0)
    times = pd.DatetimeIndex(np.asarray(obs_time, "datetime64[ns]"))
    ref = times.min().floor("D")
    n = fp.shape[0]
    ds = xr.Dataset(
        {
            "fp": (
                ("lat", "lon", "time"),
                vals.astype("float32"),
                {"units": "(mol/mol)/(mol/m2/s)", "loss_lifetime_hrs": "None"},
            ),
            "release_lat": ("time", np.asarray(obs_latitude, "float32"), {"units": "Degrees_north"}),
            "release_lon": ("time", np.asarray(obs_longitude, "float32"), {"units": "Degrees_east"}),
            "pressure": ("time", np.full(n, 1000.0, "float32"), {"units": "hPa"}),
            "temperature": ("time", np.full(n, 25.0, "float32"), {"units": "C"}),
            "PBLH": ("time", np.full(n, 800.0, "float32"), {"units": "m"}),
        },
        coords={
            "time": (
                "time",
                (times - ref).total_seconds().values.astype("float64"),
                {
                    "long_name": "time",
                    "standard_name": "time",
                    "units": f"seconds since {ref:%Y-%m-%d %H:%M:%S}",
                    "label": "left",
                    "period": "0.0 hours",
                    "calendar": "gregorian",
                    "comment": "time stamp corresponds to the beginning of each averaging period",
                },
            ),
            "lon": ("lon", grid.lon.astype("float32"), {"units": "Degrees_east"}),
            "lat": ("lat", grid.lat.astype("float32"), {"units": "Degrees_north"}),
            "lev": ("lev", np.array(["column"], dtype=object)),
        },
        attrs={"author": "synthetic", "created": "2020-01-01 00:00:00", "max_level": 17},
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return path


# ------------------------------------------------------------------------------ IMI
def imi_satellite_name(start: pd.Timestamp, end: pd.Timestamp, orbit: int) -> str:
    """A blended TROPOMI file stem as IMI names its Jacobian files after it."""
    return f"S5P_BLND_L2__CH4____{start:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}_{orbit:05d}_03_020400_20230614T000922"


def write_imi_jacobian(
    run: str | Path,
    fp: np.ndarray,
    grid: GridSpec,
    obs_latitude: np.ndarray,
    obs_longitude: np.ndarray,
    obs_time: np.ndarray,
    prior_flux: np.ndarray,
    *,
    averaging_kernel: np.ndarray | None = None,
    cluster: tuple[int, int] = (1, 1),
    water: np.ndarray | None = None,
    n_extra: int = 4,
    gas: str = "CH4",
    seed: int = 0,
) -> Path:
    """An IMI run folder holding the Jacobian of the given footprints.

    Writes ``StateVector.nc`` (``StateVector`` (lat, lon), elements 1..n numbered from the
    last cell as ``make_state_vector_file.py`` does, -9999 on ``water`` cells; elements are
    blocks of ``cluster`` cells), ``hemco_prior_emis/OutputDir/HEMCO_sa_diagnostics.<date>0000.nc``
    (``EmisCH4_Total`` (time, lat, lon) kg/m2/s and ``AREA``) and one
    ``inversion/data_converted/<satellite file>_GCtoSatellite.pkl`` per observation time:
    a dict with ``obs_GC`` (n, 5: satellite and GEOS-Chem column in ppb, longitude,
    latitude, count) and ``K`` (n, elements + ``n_extra`` boundary-condition columns) in
    mol mol-1 per unit scale factor, :math:`K_e = \\sum_{c \\in e} a f_c E_c`, with the
    averaging kernel *a* applied as IMI's operator applies it.
    """
    fp = _check(fp, grid, obs_latitude, obs_longitude, obs_time)
    rng = np.random.default_rng(seed)
    run = Path(run)
    ny, nx = grid.shape
    cy, cx = cluster
    block = (np.arange(ny)[:, None] // cy) * ((nx + cx - 1) // cx) + (np.arange(nx)[None] // cx)
    water = np.zeros(grid.shape, bool) if water is None else np.asarray(water, bool)
    uniq, inv = np.unique(block[~water], return_inverse=True)
    n_el = uniq.size
    idx = np.full(grid.shape, -1)
    idx[~water] = inv.ravel()
    labels = np.where(water, -9999.0, (n_el - idx).astype("float64"))  # 1..n, numbered from the last cell
    lab = np.where(water, -1, n_el - idx - 1)  # the element's column in K
    sv = xr.Dataset(
        {"StateVector": (("lat", "lon"), labels, {"units": "none", "missing_value": -9999})},
        coords={
            "lat": ("lat", grid.lat, {"units": "degrees_north", "long_name": "Latitude"}),
            "lon": ("lon", grid.lon, {"units": "degrees_east", "long_name": "Longitude"}),
        },
    )
    run.mkdir(parents=True, exist_ok=True)
    sv.to_netcdf(run / "StateVector.nc", encoding={"StateVector": {"_FillValue": -9999.0}})
    emis = np.asarray(prior_flux, "float64")
    times = pd.DatetimeIndex(np.asarray(obs_time, "datetime64[ns]"))
    prior_dir = run / "hemco_prior_emis" / "OutputDir"
    prior_dir.mkdir(parents=True, exist_ok=True)
    pr = xr.Dataset(
        {
            "EmisCH4_Total": (("time", "lat", "lon"), emis[None], {"units": "kg/m2/s"}),
            "AREA": (("lat", "lon"), grid.cell_area(), {"units": "m2"}),
        },
        coords={"time": [times.min().floor("D").to_datetime64()], "lat": grid.lat, "lon": grid.lon},
    )
    pr.to_netcdf(prior_dir / f"HEMCO_sa_diagnostics.{times.min():%Y%m%d}0000.nc")
    e_mol = emis / MOLAR_MASS[gas.upper()]
    ak = np.ones(fp.shape[0]) if averaging_kernel is None else np.asarray(averaging_kernel, "float64")
    conv = run / "inversion" / "data_converted"
    conv.mkdir(parents=True, exist_ok=True)
    for j, t in enumerate(sorted(set(times))):
        rows = np.flatnonzero(times == t)
        k = np.zeros((rows.size, n_el + n_extra), "float32")
        contrib = fp[rows] * e_mol[None] * ak[rows, None, None]
        for r in range(rows.size):
            k[r, :n_el] = np.bincount(lab[~water], weights=contrib[r][~water], minlength=n_el)
        k[:, n_el:] = rng.uniform(0.1, 1.0, (rows.size, n_extra))
        y = 1850.0 + rng.normal(0, 10, rows.size)
        obs_gc = np.column_stack(
            [y, y - 5.0, np.asarray(obs_longitude)[rows], np.asarray(obs_latitude)[rows], np.full(rows.size, 3.0)]
        ).astype("float32")
        name = imi_satellite_name(t - pd.Timedelta(minutes=50), t + pd.Timedelta(minutes=50), 2900 + j)
        with open(conv / f"{name}_GCtoSatellite.pkl", "wb") as fh:
            pickle.dump({"obs_GC": obs_gc, "K": k}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return run
