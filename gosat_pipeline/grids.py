"""Regular latitude/longitude grids: edges, centres, CF bounds, cell areas, cell lookup.

A :class:`GridSpec` is shared by gridding, inventories, region masks and the
transport operator, so every stage agrees on which cell a point belongs to.

Cell lookup handles the traps listed in DESIGN.md section 5.0: longitude is
wrapped explicitly, points on the outer edges (lat = +-90, lon = +180 on a global
grid) stay in the edge cells, and NaN coordinates never index a cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from gosat_pipeline.errors import SchemaError

__all__ = [
    "EARTH_RADIUS_M",
    "GridSpec",
    "overlap_fractions",
    "regrid_extensive",
    "require_same_grid",
    "same_axes",
    "same_grid",
    "wrap_longitude",
]

#: Radius of the authalic (equal-area) sphere of WGS84, in metres (Moritz 1980).
EARTH_RADIUS_M = 6_371_007.181


def wrap_longitude(lon: np.ndarray | float) -> np.ndarray:
    """Wrap longitudes in degrees into [-180, 180).

    Parameters
    ----------
    lon : array_like, degrees east

    Returns
    -------
    numpy.ndarray
        Same shape, in [-180, 180); NaN stays NaN.
    """
    lon = np.asarray(lon, dtype="float64")
    out = np.mod(lon + 180.0, 360.0) - 180.0
    # np.mod can return 360 - tiny for tiny negative inputs; fold that back.
    return np.where(out >= 180.0, out - 360.0, out)


@dataclass(frozen=True)
class GridSpec:
    """A regular latitude/longitude grid given by its cell edges.

    Parameters
    ----------
    lat_edges : numpy.ndarray, shape (ny + 1,), degrees north, ascending
    lon_edges : numpy.ndarray, shape (nx + 1,), degrees east, ascending, within [-180, 180]

    Notes
    -----
    Cell areas are exact on a sphere of radius :data:`EARTH_RADIUS_M`:

    .. math:: A_{ij} = R^2 \\, \\Delta\\lambda_j \\, (\\sin\\varphi_{i+1} - \\sin\\varphi_i)

    so a global grid sums to :math:`4 \\pi R^2` to rounding.
    """

    lat_edges: np.ndarray
    lon_edges: np.ndarray

    def __post_init__(self) -> None:
        lat = np.asarray(self.lat_edges, dtype="float64")
        lon = np.asarray(self.lon_edges, dtype="float64")
        if lat.ndim != 1 or lat.size < 2 or np.any(np.diff(lat) <= 0):
            raise SchemaError("lat_edges must be 1-D, ascending, with at least 2 values")
        if lon.ndim != 1 or lon.size < 2 or np.any(np.diff(lon) <= 0):
            raise SchemaError("lon_edges must be 1-D, ascending, with at least 2 values")
        if lat[0] < -90 or lat[-1] > 90:
            raise SchemaError(f"latitude edges {lat[0]}..{lat[-1]} leave [-90, 90]")
        if lon[0] < -180 or lon[-1] > 180:
            raise SchemaError(f"longitude edges {lon[0]}..{lon[-1]} leave [-180, 180]")
        object.__setattr__(self, "lat_edges", lat)
        object.__setattr__(self, "lon_edges", lon)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_resolution(
        cls,
        resolution: float | tuple[float, float],
        bbox: tuple[float, float, float, float] | None = None,
    ) -> GridSpec:
        """Build a regular grid.

        Parameters
        ----------
        resolution : float or (dlat, dlon), degrees
        bbox : (west, south, east, north), degrees, optional
            Defaults to the globe. Edges are snapped outward to multiples of the
            resolution so that grids of the same resolution nest.
        """
        if isinstance(resolution, (tuple, list, np.ndarray)):
            dlat, dlon = (float(r) for r in resolution)
        else:
            dlat = dlon = float(resolution)
        if dlat <= 0 or dlon <= 0:
            raise SchemaError(f"resolution must be positive; got {resolution!r}")
        west, south, east, north = bbox if bbox is not None else (-180.0, -90.0, 180.0, 90.0)
        if not (west < east and south < north):
            raise SchemaError(f"bbox must be (west, south, east, north) with west<east, south<north; got {bbox}")
        lat0 = max(-90.0, np.floor(south / dlat + 1e-9) * dlat)
        lat1 = min(90.0, np.ceil(north / dlat - 1e-9) * dlat)
        lon0 = max(-180.0, np.floor(west / dlon + 1e-9) * dlon)
        lon1 = min(180.0, np.ceil(east / dlon - 1e-9) * dlon)
        ny = max(1, int(round((lat1 - lat0) / dlat)))
        nx = max(1, int(round((lon1 - lon0) / dlon)))
        lat_edges = np.minimum(lat0 + dlat * np.arange(ny + 1), 90.0)
        lon_edges = np.minimum(lon0 + dlon * np.arange(nx + 1), 180.0)
        lat_edges[-1] = min(lat0 + dlat * ny, 90.0)
        return cls(lat_edges, lon_edges)

    @classmethod
    def from_coords(cls, lat: Any, lon: Any) -> GridSpec:
        """Rebuild a grid from equally spaced cell-centre coordinates (degrees)."""
        lat = np.asarray(lat, dtype="float64")
        lon = np.asarray(lon, dtype="float64")

        def edges(c: np.ndarray, name: str) -> np.ndarray:
            if c.size == 1:
                raise SchemaError(f"cannot infer {name} edges from a single centre; pass edges")
            d = np.diff(c)
            if not np.allclose(d, d[0], rtol=1e-6):
                raise SchemaError(f"{name} centres are not equally spaced")
            return np.concatenate([c - d[0] / 2, c[-1:] + d[0] / 2])

        return cls(np.clip(edges(lat, "latitude"), -90, 90), np.clip(edges(lon, "longitude"), -180, 180))

    # ------------------------------------------------------------------ properties
    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes, degrees north, shape (ny,)."""
        return 0.5 * (self.lat_edges[:-1] + self.lat_edges[1:])

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes, degrees east, shape (nx,)."""
        return 0.5 * (self.lon_edges[:-1] + self.lon_edges[1:])

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx)."""
        return (self.lat_edges.size - 1, self.lon_edges.size - 1)

    @property
    def size(self) -> int:
        """Number of cells."""
        return self.shape[0] * self.shape[1]

    @property
    def is_global_lon(self) -> bool:
        """True when the grid spans all longitudes (so longitude wraps)."""
        return bool(np.isclose(self.lon_edges[-1] - self.lon_edges[0], 360.0))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the outer edges, degrees."""
        return (
            float(self.lon_edges[0]),
            float(self.lat_edges[0]),
            float(self.lon_edges[-1]),
            float(self.lat_edges[-1]),
        )

    def cell_area(self, radius: float = EARTH_RADIUS_M) -> np.ndarray:
        """Cell areas in m2, shape (ny, nx), exact on a sphere (see class Notes)."""
        dlon = np.deg2rad(np.diff(self.lon_edges))
        dsin = np.diff(np.sin(np.deg2rad(self.lat_edges)))
        return radius**2 * np.outer(dsin, dlon)

    def cell_size_m(self, radius: float = EARTH_RADIUS_M) -> tuple[np.ndarray, np.ndarray]:
        """Cell widths (dx at the cell-centre latitude) and heights dy, metres, shape (ny, nx)."""
        dlon = np.deg2rad(np.diff(self.lon_edges))
        dlat = np.deg2rad(np.diff(self.lat_edges))
        coslat = np.cos(np.deg2rad(self.lat))
        dx = radius * np.outer(coslat, dlon)
        dy = radius * np.outer(dlat, np.ones_like(dlon))
        return dx, dy

    # ------------------------------------------------------------------ lookup
    def locate(self, lat: Any, lon: Any) -> tuple[np.ndarray, np.ndarray]:
        """Row and column index of the cell holding each point.

        Cells are closed below and open above, except the outermost edges, which
        are closed (lat = +90 lands in the top row, lon = +180 in the last column
        of a regional grid or, after wrapping, the first column of a global one).

        Parameters
        ----------
        lat, lon : array_like, degrees

        Returns
        -------
        (i, j) : numpy.ndarray of int64
            -1 where the point is NaN or outside the grid.
        """
        lat = np.asarray(lat, dtype="float64")
        lon = np.asarray(lon, dtype="float64")
        if self.is_global_lon:
            lon = wrap_longitude(lon)
            lon = np.where(lon < self.lon_edges[0], lon + 360.0, lon)
        i = _edge_index(self.lat_edges, lat)
        j = _edge_index(self.lon_edges, lon)
        bad = (i < 0) | (j < 0)
        return np.where(bad, -1, i), np.where(bad, -1, j)

    def flat_index(self, lat: Any, lon: Any) -> np.ndarray:
        """Flattened (row-major) cell index of each point; -1 outside or NaN."""
        i, j = self.locate(lat, lon)
        return np.where(i < 0, -1, i * self.shape[1] + j)

    # ------------------------------------------------------------------ xarray
    def coords(self) -> dict[str, xr.DataArray]:
        """CF coordinates ``latitude``, ``longitude`` and their bounds variables."""
        lat = xr.DataArray(
            self.lat,
            dims="latitude",
            attrs={
                "units": "degrees_north",
                "standard_name": "latitude",
                "long_name": "latitude of cell centre",
                "bounds": "latitude_bounds",
                "axis": "Y",
            },
        )
        lon = xr.DataArray(
            self.lon,
            dims="longitude",
            attrs={
                "units": "degrees_east",
                "standard_name": "longitude",
                "long_name": "longitude of cell centre",
                "bounds": "longitude_bounds",
                "axis": "X",
            },
        )
        return {"latitude": lat, "longitude": lon}

    def bounds_dataset(self) -> xr.Dataset:
        """A dataset with the CF bounds variables and ``cell_area`` (m2)."""
        lat_b = np.column_stack([self.lat_edges[:-1], self.lat_edges[1:]])
        lon_b = np.column_stack([self.lon_edges[:-1], self.lon_edges[1:]])
        area_attrs = {
            "units": "m2",
            "standard_name": "cell_area",
            "long_name": "cell area on the authalic sphere (R = 6371007.181 m)",
        }
        return xr.Dataset(
            {
                "latitude_bounds": (("latitude", "nv"), lat_b, {"units": "degrees_north"}),
                "longitude_bounds": (("longitude", "nv"), lon_b, {"units": "degrees_east"}),
                "cell_area": (("latitude", "longitude"), self.cell_area(), area_attrs),
            },
            coords=self.coords(),
        )

    def to_attrs(self) -> dict[str, Any]:
        """A compact description for output attributes and the manifest."""
        return {
            "grid_lat_edges_first_last_n": [float(self.lat_edges[0]), float(self.lat_edges[-1]), self.shape[0]],
            "grid_lon_edges_first_last_n": [float(self.lon_edges[0]), float(self.lon_edges[-1]), self.shape[1]],
        }


def same_axes(lat_a: Any, lon_a: Any, lat_b: Any, lon_b: Any) -> bool:
    """Whether two pairs of 1-D axes (centres or edges, degrees) have equal lengths and values (``np.allclose``)."""
    la, oa, lb, ob = (np.asarray(x) for x in (lat_a, lon_a, lat_b, lon_b))
    return la.shape == lb.shape and oa.shape == ob.shape and bool(np.allclose(la, lb) and np.allclose(oa, ob))


def _centres(x: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, GridSpec):
        return x.lat, x.lon
    return np.asarray(x["latitude"].values), np.asarray(x["longitude"].values)


def same_grid(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` have the same cell centres.

    Parameters
    ----------
    a, b : GridSpec or xarray object with 1-D ``latitude`` and ``longitude`` coordinates
        Degrees north / east; compared with :func:`same_axes`.
    """
    return same_axes(*_centres(a), *_centres(b))


def require_same_grid(da: Any, grid: GridSpec, name: str) -> None:
    """Raise :class:`SchemaError` unless ``da``'s latitude/longitude are the centres of ``grid``.

    Parameters
    ----------
    da : xarray object with ``latitude`` and ``longitude`` coordinates
    grid : GridSpec
    name : str
        What ``da`` is, for the message (e.g. "prior flux").
    """
    lat, lon = _centres(da)
    if not same_grid(da, grid):
        raise SchemaError(
            f"{name} is on a grid ({lat.size} x {lon.size}) that differs from the inversion grid "
            f"{grid.shape} ({grid.bbox}); regrid it to the inversion grid first"
        )


def _edge_index(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the interval of ``edges`` holding ``x``; -1 outside or NaN."""
    n = edges.size - 1
    idx = np.searchsorted(edges, x, side="right") - 1
    idx = np.where(x == edges[-1], n - 1, idx)  # close the outer upper edge
    ok = np.isfinite(x) & (idx >= 0) & (idx < n)
    return np.where(ok, idx, -1).astype("int64")


def overlap_fractions(src_edges: np.ndarray, tgt_edges: np.ndarray, *, periodic: bool = False) -> np.ndarray:
    """Fraction of each source interval that lies inside each target interval.

    Parameters
    ----------
    src_edges, tgt_edges : numpy.ndarray, shape (n + 1,), (m + 1,), ascending
        Interval edges (degrees of longitude, or sin(latitude) for area shares on the sphere).
    periodic : bool
        Longitude: the source intervals are also tried shifted by -360 and +360 degrees, so a
        source on 0..360 meets a target on -180..180.

    Returns
    -------
    numpy.ndarray, shape (m, n)
        :math:`w_{ts} = |s \\cap t| / |s|`; a column sums to the share of the source interval
        inside the target range (1 when it is covered).
    """
    src = np.asarray(src_edges, dtype="float64")
    tgt = np.asarray(tgt_edges, dtype="float64")
    lo_t, hi_t = tgt[:-1][:, None], tgt[1:][:, None]
    out = np.zeros((tgt.size - 1, src.size - 1))
    for shift in (-360.0, 0.0, 360.0) if periodic else (0.0,):
        lo_s, hi_s = src[:-1][None] + shift, src[1:][None] + shift
        out += np.clip(np.minimum(hi_s, hi_t) - np.maximum(lo_s, lo_t), 0.0, None) / (hi_s - lo_s)
    return out


def regrid_extensive(values: np.ndarray, lat_edges: np.ndarray, lon_edges: np.ndarray, grid: GridSpec) -> np.ndarray:
    """Sum an extensive per-cell quantity onto ``grid`` by exact overlap fractions.

    Parameters
    ----------
    values : numpy.ndarray, shape (..., ny, nx)
        A quantity that adds up over cells (a mass, or a footprint: the sensitivity to a
        flux density that is uniform over the target cell), on the source cells.
    lat_edges : numpy.ndarray, shape (ny + 1,), degrees north, ascending
    lon_edges : numpy.ndarray, shape (nx + 1,), degrees east, ascending (any 360-degree
        window: longitude is periodic)
    grid : GridSpec
        Target grid.

    Returns
    -------
    numpy.ndarray, shape (..., grid.ny, grid.nx)

    Notes
    -----
    With :math:`f^{\\varphi}_{ts}` the share of source row *s* (in :math:`\\sin\\varphi`, i.e. in
    area on the sphere) inside target row *t* and :math:`f^{\\lambda}` the same for columns,

    .. math:: V_t = \\sum_s f^{\\varphi}_{ts} f^{\\lambda}_{ts} V_s

    exact for regular latitude/longitude grids of any resolutions because the area of a
    cell is separable, :math:`A = R^2 \\Delta\\lambda\\, \\Delta\\sin\\varphi`. The part of the
    source outside the target grid is dropped (compare the sums to measure it).
    """
    wlat = overlap_fractions(np.sin(np.deg2rad(lat_edges)), np.sin(np.deg2rad(grid.lat_edges)))
    wlon = overlap_fractions(lon_edges, grid.lon_edges, periodic=True)
    vals = np.asarray(values, dtype="float64")
    return np.einsum("ti,...ij,uj->...tu", wlat, vals, wlon, optimize=True)
