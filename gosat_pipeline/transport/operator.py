"""Transport operators: the steady and the time-resolved column-enhancement models.

Both discretise the boundary-layer column-enhancement equation (DESIGN.md 5.2)

.. math:: \\partial_t c + \\mathbf u \\cdot \\nabla c - K_h \\nabla^2 c + c/\\tau = F / N_{air}

with the same finite volumes (:func:`_faces`, :func:`_assemble`): first-order upwind
advection in advective form (an M-matrix: non-negative responses to non-negative
sources), central diffusion and linear ventilation.

- :class:`SimpleTransport` solves the steady state for one (time-mean) wind field:
  one sparse LU, then any number of right-hand sides (build once, apply many).
- :func:`integrate_responses` steps the equation in time under the winds of each
  interval (6-hourly reanalysis fields; explicit, positivity-preserving sub-steps), so
  that transport follows the weather: a season-mean wind over a monsoon region is close to zero and a steady
  operator built from it is mostly diffusion (DESIGN.md 5.2, "learned since").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
import xarray as xr
from scipy.sparse.linalg import splu

from gosat_pipeline.errors import SchemaError, WindError
from gosat_pipeline.grids import EARTH_RADIUS_M, GridSpec, same_grid
from gosat_pipeline.params import (
    DEFAULT_EDDY_DIFFUSIVITY,
    DEFAULT_TIME_STEP,
    DEFAULT_VENTILATION_TIME,
    STANDARD_SURFACE_PRESSURE,
)
from gosat_pipeline.runtime import hugepage_zeros
from gosat_pipeline.schema import G0, MOLAR_MASS

__all__ = [
    "DEFAULT_EDDY_DIFFUSIVITY",
    "DEFAULT_VENTILATION_TIME",
    "EDGES",
    "Forcing",
    "SimpleTransport",
    "dry_air_column",
    "integrate_responses",
    "response_blocks",
    "rotate_winds",
]

logger = logging.getLogger(__name__)

#: Column ordering of the steady operator's sparse LU (SuperLU ``permc_spec``). The 5-point
#: stencil is structurally symmetric, so a minimum-degree ordering on the pattern of
#: :math:`A^T + A` suits it better than SuperLU's default COLAMD.
LU_ORDERING = "MMD_AT_PLUS_A"

#: Domain edges, in the order of the faces of :func:`_faces` (east, west, north, south).
EDGES: tuple[str, ...] = ("east", "west", "north", "south")


def dry_air_column(surface_pressure: float = STANDARD_SURFACE_PRESSURE) -> float:
    """Dry-air column in mol m-2.

    Parameters
    ----------
    surface_pressure : float, hPa

    Notes
    -----
    .. math:: N_{air} = \\frac{p_s}{g \\, M_{air}}

    about 3.57e5 mol m-2 at 1013.25 hPa (DESIGN.md 5.2).
    """
    if not surface_pressure > 0:
        raise SchemaError(f"surface_pressure must be > 0 hPa; got {surface_pressure}")
    return float(surface_pressure) * 100.0 / (G0 * MOLAR_MASS["air"])


# ---------------------------------------------------------------------------- winds
def _wind_field(value: Any, grid: GridSpec, name: str) -> np.ndarray:
    """A wind component as an array (ny, nx) in m s-1 on ``grid``."""
    if isinstance(value, xr.DataArray):
        da = value
        extra = [d for d in da.dims if d not in ("latitude", "longitude")]
        if extra:
            da = da.mean(extra)
        if set(da.dims) == {"latitude", "longitude"}:
            lat, lon = grid.lat, grid.lon
            if not same_grid(da, grid):
                da = da.interp(latitude=lat, longitude=lon, kwargs={"fill_value": None})
            arr = da.transpose("latitude", "longitude").values.astype("float64")
        elif da.ndim == 0:
            arr = np.full(grid.shape, float(da))
        else:
            raise WindError(f"wind {name!r} has dims {da.dims}; expected (latitude, longitude) or a scalar")
    else:
        arr = np.asarray(value, dtype="float64")
        if arr.ndim == 0:
            arr = np.full(grid.shape, float(arr))
    if arr.shape != grid.shape:
        raise WindError(f"wind {name!r} has shape {arr.shape}; the grid is {grid.shape}")
    if not np.all(np.isfinite(arr)):
        raise WindError(f"wind {name!r} has {int((~np.isfinite(arr)).sum())} non-finite values on the grid")
    return arr


def _resolve_winds(u: Any, v: Any, winds: Any) -> tuple[Any, Any]:
    if winds is not None:
        if isinstance(winds, xr.Dataset):
            missing = [k for k in ("u", "v") if k not in winds]
            if missing:
                raise WindError(f"winds dataset lacks {missing}; has {list(winds.data_vars)}")
            return winds["u"], winds["v"]
        if isinstance(winds, Mapping):
            return winds["u"], winds["v"]
        raise WindError(f"winds must be an xarray.Dataset or a mapping with u, v; got {type(winds).__name__}")
    if u is None or v is None:
        raise WindError("pass u= and v= (m s-1, scalars or (latitude, longitude) fields) or winds=")
    return u, v


# ---------------------------------------------------------------------------- operator
class SimpleTransport:
    """Steady-state advection-diffusion-ventilation operator on a lat/lon grid.

    Parameters
    ----------
    grid : GridSpec
        The inversion grid; metrics in metres come from the sphere of radius
        :data:`~gosat_pipeline.grids.EARTH_RADIUS_M`.
    u, v : float, array (ny, nx) or DataArray (latitude, longitude), m s-1
        Eastward and northward (time-mean, boundary-layer) wind. DataArrays on another
        grid are interpolated; extra dims (e.g. time) are averaged.
    eddy_diffusivity : float, m2 s-1
        Horizontal eddy diffusivity :math:`K_h` (default :data:`DEFAULT_EDDY_DIFFUSIVITY`).
    ventilation_time : float, s
        :math:`\\tau` (default :data:`DEFAULT_VENTILATION_TIME`).
    surface_pressure : float, hPa
        Sets :math:`N_{air}` (:func:`dry_air_column`).

    Notes
    -----
    Finite-volume discretisation of

    .. math:: \\mathbf u \\cdot \\nabla c - K_h \\nabla^2 c + c/\\tau = F / N_{air}

    on cells of area :math:`A_P` (exact spherical area). For every face :math:`f` of
    cell :math:`P` with length :math:`L_f` and outward normal wind :math:`u_f` (mean of
    the two cell winds), the volume flux is :math:`Q_f = u_f L_f`. Advection is first-order
    upwind in advective form, :math:`\\frac{1}{A_P}\\sum_{Q_f<0} |Q_f| (c_P - c_{nb})`,
    which keeps the matrix an M-matrix (non-negative response to non-negative sources)
    for any wind field. Diffusion is central, :math:`\\frac{1}{A_P}\\sum_f K_h L_f
    (c_P - c_{nb}) / d_f` with :math:`d_f` the centre distance. Outside the domain the
    enhancement is zero (ghost cells with :math:`c = 0`): nothing flows in, and mass leaves
    through the boundary by advection and diffusion (zero-inflow boundaries). A grid
    spanning 360 degrees of longitude is periodic in longitude.

    With a discretely non-divergent wind (e.g. uniform ``u`` and ``v = 0``) the operator
    conserves mass exactly: emission = ventilation + outflow (:meth:`budget`).

    Attributes
    ----------
    matrix : scipy.sparse.csc_matrix, (ncell, ncell), s-1
    attrs : dict
        Parameters of the operator, written into every output.
    """

    def __init__(
        self,
        grid: GridSpec,
        u: Any,
        v: Any,
        *,
        eddy_diffusivity: float = DEFAULT_EDDY_DIFFUSIVITY,
        ventilation_time: float = DEFAULT_VENTILATION_TIME,
        surface_pressure: float = STANDARD_SURFACE_PRESSURE,
    ) -> None:
        if not eddy_diffusivity >= 0:
            raise SchemaError(f"eddy_diffusivity must be >= 0 m2 s-1; got {eddy_diffusivity}")
        if not ventilation_time > 0:
            raise SchemaError(f"ventilation_time must be > 0 s; got {ventilation_time}")
        self.grid = grid
        self.u = _wind_field(u, grid, "u")
        self.v = _wind_field(v, grid, "v")
        self.eddy_diffusivity = float(eddy_diffusivity)
        self.ventilation_time = float(ventilation_time)
        self.surface_pressure = float(surface_pressure)
        self.n_air = dry_air_column(surface_pressure)
        self._faces = _faces(grid, self.u, self.v, self.eddy_diffusivity)
        self.area = grid.cell_area()
        self.matrix = _assemble(self._faces, self.area, self.ventilation_time)
        # LU_ORDERING keeps the fill 40-45 % below COLAMD's (0.05 deg over ASEAN, 873 600
        # cells: 70 M instead of 122 M non-zeros, factorised 2.4x faster; README "Performance")
        self._lu = splu(self.matrix, permc_spec=LU_ORDERING)
        self.attrs: dict[str, Any] = {
            "transport_operator": "simple steady-state advection-diffusion-ventilation (DESIGN.md 5.2)",
            "transport_eddy_diffusivity_m2_per_s": self.eddy_diffusivity,
            "transport_ventilation_time_s": self.ventilation_time,
            "transport_surface_pressure_hPa": self.surface_pressure,
            "transport_dry_air_column_mol_per_m2": self.n_air,
            "transport_wind_u_mean_m_per_s": float(self.u.mean()),
            "transport_wind_v_mean_m_per_s": float(self.v.mean()),
            "transport_wind_uniform": int(np.ptp(self.u) == 0 and np.ptp(self.v) == 0),
            "transport_boundaries": "zero inflow (c = 0 outside the domain)",
            **grid.to_attrs(),
        }
        logger.info(
            "simple transport operator: %d cells, %d non-zeros, K_h=%.3g m2/s, tau=%.3g s",
            grid.size,
            self.matrix.nnz,
            self.eddy_diffusivity,
            self.ventilation_time,
        )

    def _rhs(self, flux: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        f = np.asarray(flux, dtype="float64")
        ny, nx = self.grid.shape
        if f.shape[-2:] == (ny, nx):
            lead = f.shape[:-2]
            return f.reshape(-1, ny * nx).T, (*lead, ny, nx)
        if f.shape[0] == ny * nx:
            return f.reshape(ny * nx, -1), f.shape
        raise SchemaError(f"flux has shape {f.shape}; expected (..., {ny}, {nx}) or ({ny * nx}, ...)")

    def solve(self, flux: Any) -> np.ndarray:
        """Column enhancement (mol mol-1) of an emission flux field.

        Parameters
        ----------
        flux : array (ny, nx), (k, ny, nx) or (ncell, k), mol m-2 s-1

        Returns
        -------
        numpy.ndarray
            Same shape as ``flux``, mol mol-1.
        """
        rhs, shape = self._rhs(flux)
        c = self._lu.solve(np.ascontiguousarray(rhs) / self.n_air)
        if len(shape) >= 2 and shape[-2:] == self.grid.shape:
            return c.T.reshape(shape)
        return c.reshape(shape)

    def response(self, patterns: Any) -> np.ndarray:
        """Responses to many emission patterns at once (one factorisation, many solves).

        Parameters
        ----------
        patterns : array (k, ny, nx), mol m-2 s-1

        Returns
        -------
        numpy.ndarray (k, ny, nx), mol mol-1
        """
        p = np.asarray(patterns, dtype="float64")
        if p.ndim == 2:
            p = p[None]
        return self.solve(p)

    def footprints(self, cells: Any) -> np.ndarray:
        """Sensitivity of the enhancement in ``cells`` to the flux in every cell.

        Parameters
        ----------
        cells : array of int, (k,)
            Flat (row-major) cell indices of the receptors.

        Returns
        -------
        numpy.ndarray (k, ny, nx), m2 s mol-1
            :math:`\\partial c_{cell} / \\partial F` (rows of :math:`M^{-1} / N_{air}`),
            computed with the transposed factorisation.
        """
        cells = np.atleast_1d(np.asarray(cells, dtype="int64"))
        e = np.zeros((self.grid.size, cells.size))
        e[cells, np.arange(cells.size)] = 1.0
        rows = self._lu.solve(e, trans="T") / self.n_air
        return rows.T.reshape(cells.size, *self.grid.shape)

    def budget(self, c: Any) -> dict[str, float]:
        """Mass budget of an enhancement field, mol s-1.

        Parameters
        ----------
        c : array (ny, nx), mol mol-1

        Returns
        -------
        dict
            ``ventilation`` (sum of N c / tau A), ``advective_outflow`` and
            ``diffusive_outflow`` through the domain boundary, and ``convergence``
            (sum of N c_P times the net volume inflow of cell P, zero for a discretely
            non-divergent wind). Emission = ventilation + outflows + convergence: the
            advective form :math:`u \\cdot \\nabla c = \\nabla \\cdot (u c) - c \\nabla \\cdot u`
            treats air converging into a cell as carrying its own enhancement away.
        """
        c = np.asarray(c, dtype="float64").reshape(self.grid.shape)
        fc = self._faces
        cflat = c.ravel()
        adv = diff = conv = 0.0
        for f in fc:
            p = f["cell"]
            out_bnd = (f["nb"] < 0) & (f["q"] > 0)
            adv += float(np.sum(f["q"][out_bnd] * cflat[p[out_bnd]]))
            bnd = f["nb"] < 0
            diff += float(np.sum(f["d"][bnd] * cflat[p[bnd]]))
            conv -= float(np.sum(f["q"] * cflat[p]))
        n = self.n_air
        return {
            "ventilation": float(np.sum(c * self.area)) * n / self.ventilation_time,
            "advective_outflow": adv * n,
            "diffusive_outflow": diff * n,
            "convergence": conv * n,
        }


def _faces(grid: GridSpec, u: np.ndarray, v: np.ndarray, kh: float) -> list[dict[str, np.ndarray]]:
    """Per cell and face direction: neighbour index, outward volume flux Q, diffusive conductance."""
    ny, nx = grid.shape
    idx = np.arange(ny * nx).reshape(ny, nx)
    r = EARTH_RADIUS_M
    dlat = np.deg2rad(np.diff(grid.lat_edges))  # (ny,)
    dlon = np.deg2rad(np.diff(grid.lon_edges))  # (nx,)
    latc = np.deg2rad(grid.lat)
    lonc = np.deg2rad(grid.lon)
    cos_edge = np.cos(np.deg2rad(grid.lat_edges))  # (ny+1,)
    periodic = grid.is_global_lon
    out = []
    # east (+x) and west (-x) faces: length R dlat, centre distance R cos(lat) dlon_c
    for step in (1, -1):
        j = np.arange(nx)
        jn = j + step
        if periodic:
            jn = jn % nx
        has = (jn >= 0) & (jn < nx)
        jn_c = np.clip(jn, 0, nx - 1)
        length = np.broadcast_to((r * dlat)[:, None], (ny, nx))
        un = np.where(has[None, :], 0.5 * (u + u[:, jn_c]), u) * step
        dl = np.where(has, np.abs(lonc[jn_c] - lonc), dlon)
        if periodic:
            dl = np.where(dl > np.pi, 2 * np.pi - dl, dl)
            dl = np.where(has, dl, dlon)
        dist = r * np.cos(latc)[:, None] * dl[None, :]
        nb = np.where(has[None, :], idx[:, jn_c], -1)
        out.append(
            {"cell": idx.ravel(), "nb": nb.ravel(), "q": (un * length).ravel(), "d": (kh * length / dist).ravel()}
        )
    # north (+y) and south (-y) faces: length R cos(lat_edge) dlon, distance R dlat_c
    for step in (1, -1):
        i = np.arange(ny)
        inb = i + step
        has = (inb >= 0) & (inb < ny)
        in_c = np.clip(inb, 0, ny - 1)
        edge = i + 1 if step == 1 else i
        length = r * cos_edge[edge][:, None] * dlon[None, :]
        length = np.maximum(length, 0.0)
        vn = np.where(has[:, None], 0.5 * (v + v[in_c, :]), v) * step
        dist = np.where(has, r * np.abs(latc[in_c] - latc), r * dlat)
        nb = np.where(has[:, None], idx[in_c, :], -1)
        out.append(
            {
                "cell": idx.ravel(),
                "nb": nb.ravel(),
                "q": (vn * length).ravel(),
                "d": (kh * length / dist[:, None]).ravel(),
            }
        )
    return out


def _assemble(faces: list[dict[str, np.ndarray]], area: np.ndarray, tau: float) -> sp.csc_matrix:
    """The operator matrix (s-1): rows = cells, upwind advective form + diffusion + decay."""
    a = area.ravel()
    n = a.size
    diag = np.full(n, 1.0 / tau)
    rows, cols, vals = [], [], []
    for f in faces:
        p, nb, q, d = f["cell"], f["nb"], f["q"], f["d"]
        inflow = np.where(q < 0, -q, 0.0)
        diag += (inflow + d) / a[p]
        has = nb >= 0
        off = -(inflow + d)[has] / a[p[has]]
        rows.append(p[has])
        cols.append(nb[has])
        vals.append(off)
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    m = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return m.tocsc()


def _edge_inflow(faces: list[dict[str, np.ndarray]], area: np.ndarray, edge: str) -> np.ndarray:
    """Source (s-1) into each cell from a unit enhancement outside one edge of the domain.

    The ghost cells beyond ``edge`` hold c = 1 instead of 0: every boundary face of that
    edge adds :math:`(|Q_f|_{in} + D_f) / A_P` (advective inflow and diffusive exchange)
    to the right-hand side, the terms :func:`_assemble` puts on the diagonal.
    """
    f = faces[EDGES.index(edge)]
    a = area.ravel()
    bnd = f["nb"] < 0
    inflow = np.where(f["q"] < 0, -f["q"], 0.0)
    out = np.zeros(a.size)
    p = f["cell"][bnd]
    np.add.at(out, p, (inflow[bnd] + f["d"][bnd]) / a[p])
    return out


@dataclass(frozen=True)
class Forcing:
    """The source behind one Jacobian column, switched on during ``[start, end)``.

    Attributes
    ----------
    start, end : numpy.datetime64
        Window in which the source acts; the response is followed until ``end + tail``.
    pattern : ndarray (ncell,), mol m-2 s-1, optional
        An emission pattern (``kind`` "flux").
    edge : str, optional
        For ``kind`` "inflow": the edge (:data:`EDGES`) whose outside holds ``scale``.
    scale : float
        Enhancement outside the edge (mol mol-1) per unit of the state element.
    """

    kind: str
    start: np.datetime64
    end: np.datetime64
    pattern: np.ndarray | None = None
    edge: str | None = None
    scale: float = 1.0


def rotate_winds(u: Any, v: Any, scale: float = 1.0, rotation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Winds scaled by ``scale`` and turned anticlockwise by ``rotation`` degrees, float64.

    :math:`u' = s (u \\cos\\theta - v \\sin\\theta)`, :math:`v' = s (u \\sin\\theta + v \\cos\\theta)`
    (the transport ensemble's wind perturbations, :class:`TransportSettings`).
    """
    u = np.asarray(u, dtype="float64")
    v = np.asarray(v, dtype="float64")
    ang = math.radians(rotation)
    c, s = math.cos(ang), math.sin(ang)
    return scale * (u * c - v * s), scale * (u * s + v * c)


def _winds_at(
    times: np.ndarray, u: Any, v: Any, t: np.datetime64, perturbation: tuple[float, float] = (1.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Winds (ny, nx) at time t, linear in time between the given steps, constant outside them.

    ``u``, ``v`` (T, ny, nx) of any float type are read one step at a time, and each step
    is scaled and turned by ``perturbation`` (scale, degrees) before the interpolation, so
    no perturbed float64 copy of all the steps is made.
    """

    def step(k: int) -> tuple[np.ndarray, np.ndarray]:
        return rotate_winds(u[k], v[k], *perturbation)

    if times.size == 1 or t <= times[0]:
        return step(0)
    if t >= times[-1]:
        return step(-1)
    k = int(np.searchsorted(times, t, side="right") - 1)
    f = float((t - times[k]) / (times[k + 1] - times[k]))
    (u0, v0), (u1, v1) = step(k), step(k + 1)
    return (1.0 - f) * u0 + f * u1, (1.0 - f) * v0 + f * v1


def _sparse_by_cell(cells: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Source terms as a (ncell, n_active) CSR matrix: each cell's non-zero columns (no duplicates)."""
    return sp.csr_matrix((vals, (cells, cols)), shape=shape)


def _flux_sources(forcings: Sequence[Forcing], n_air: float) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each emission forcing's source, s-1, on its non-zero cells only: {forcing: (cells, values)}."""
    out = {}
    for k, f in enumerate(forcings):
        if f.kind == "flux" and f.pattern is not None:
            pattern = np.ravel(f.pattern)
            cells = np.flatnonzero(pattern)
            out[k] = (cells, pattern[cells] / n_air)
    return out


def _step_sources(
    forcings: Sequence[Forcing],
    active: list[int],
    starts: np.ndarray,
    ends: np.ndarray,
    t: np.datetime64,
    flux_src: dict[int, tuple[np.ndarray, np.ndarray]],
    op: _Stencil,
    cache: dict[str, Any] | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Source terms (s-1) of the active forcings that are on at time t: (emission, inflow).

    Two sparse (ncell, n_active) matrices by cell: an emission pattern covers its region's
    cells, an inflow only the cells along its edge, so the dense (ncell, n_active) array,
    mostly zeros, is never made nor read at every sub-step. With ``cache``, the emission
    matrix is kept from the previous step while the same forcings are active and on (it does
    not change); only the inflow, which follows the winds, is built again.
    """
    act = np.asarray(active, dtype="int64")
    shape = (op.grid.size, len(active))
    on = (starts[act] <= t) & (t < ends[act]) if act.size else np.zeros(0, dtype=bool)
    key = (tuple(active), on.tobytes())
    if cache is not None and cache.get("key") == key:
        emission = cache["emission"]
    else:
        parts = [(flux_src[int(act[c])], c) for c in np.flatnonzero(on) if int(act[c]) in flux_src]
        emission = _sparse_by_cell(
            np.concatenate([cells for (cells, _), _ in parts]) if parts else np.zeros(0, "int64"),
            np.concatenate([np.full(cells.size, c) for (cells, _), c in parts]) if parts else np.zeros(0, "int64"),
            np.concatenate([vals for (_, vals), _ in parts]) if parts else np.zeros(0),
            shape,
        )
        if cache is not None:
            cache.update(key=key, emission=emission)
    cells, cols, vals = [], [], []
    for col in np.flatnonzero(on):
        f = forcings[int(act[col])]
        if f.kind == "flux":
            continue
        edge_cells, coef = op.edge_inflow_cells(str(f.edge))
        cells.append(edge_cells)
        cols.append(np.full(edge_cells.size, col))
        vals.append(coef * f.scale)
    inflow = _sparse_by_cell(
        np.concatenate(cells) if cells else np.zeros(0, "int64"),
        np.concatenate(cols) if cols else np.zeros(0, "int64"),
        np.concatenate(vals) if vals else np.zeros(0),
        shape,
    )
    return emission, inflow


@dataclass
class _Sampler:
    """Which observations a model state at time t contributes to (their bin holds t)."""

    bin_start: np.ndarray  # (B,) datetime64
    bin_end: np.ndarray
    members: list[np.ndarray]  # observation indices per bin
    cells: list[np.ndarray]

    @classmethod
    def build(cls, obs_start: np.ndarray, obs_end: np.ndarray, obs_cell: np.ndarray) -> _Sampler:
        keys = np.stack(
            [obs_start.astype("datetime64[ns]").astype("int64"), obs_end.astype("datetime64[ns]").astype("int64")],
            axis=1,
        )
        uniq, inv = np.unique(keys, axis=0, return_inverse=True) if len(keys) else (np.zeros((0, 2), "int64"), [])
        members = [np.flatnonzero(np.asarray(inv).ravel() == b) for b in range(len(uniq))]
        return cls(
            uniq[:, 0].astype("datetime64[ns]"),
            uniq[:, 1].astype("datetime64[ns]"),
            members,
            [obs_cell[m] for m in members],
        )

    def bins_at(self, t: np.datetime64) -> np.ndarray:
        return np.flatnonzero((self.bin_start <= t) & (t < self.bin_end))


class _Stencil:
    """The operator of :func:`_assemble` as a CSR matrix of fixed sparsity whose values follow the winds.

    Only the coefficients change from one wind field to the next: the matrix structure,
    the face lengths, the centre distances and the diffusive conductances are computed once,
    and each update is a handful of vector operations.
    """

    def __init__(self, grid: GridSpec, eddy_diffusivity: float, ventilation_time: float) -> None:
        self.grid = grid
        self.kh = float(eddy_diffusivity)
        self.tau = float(ventilation_time)
        self.area = grid.cell_area()
        a = self.area.ravel()
        ones = np.ones(grid.shape)
        # faces of a unit wind: q = (face-normal wind) x length, so length = |q| of u = v = 1
        f1 = _faces(grid, ones, ones, self.kh)
        n = grid.size
        self.valid = [f["nb"] >= 0 for f in f1]
        self.nb = [np.where(ok, f["nb"], f["cell"]) for f, ok in zip(f1, self.valid, strict=True)]
        self.len_over_area = [np.abs(f["q"]) / a for f in f1]
        self.sign = [1.0, -1.0, 1.0, -1.0]  # east, west, north, south: outward normal of u or v
        self.diff = [f["d"] / a for f in f1]
        rows = np.concatenate([np.arange(n)] + [f["cell"][ok] for f, ok in zip(f1, self.valid, strict=True)])
        cols = np.concatenate([np.arange(n)] + [f["nb"][ok] for f, ok in zip(f1, self.valid, strict=True)])
        order = sp.coo_matrix((np.arange(rows.size, dtype="float64") + 1.0, (rows, cols)), shape=(n, n)).tocsr()
        self.matrix = order
        self.perm = order.data.astype("int64") - 1  # csr.data[k] holds the coo entry perm[k]
        self.coef = [np.zeros(n) for _ in range(4)]
        self.diag_max = 1.0 / self.tau
        # the same operator as arrays for the fused explicit kernel (faces x cells)
        self.nb_arr = np.ascontiguousarray(np.array(self.nb, dtype="int64"))
        self.valid_arr = np.ascontiguousarray(np.array(self.valid, dtype=bool))
        self.coef_arr = np.zeros((4, n))
        self.diag = np.full(n, 1.0 / self.tau)
        self.edge_cells = [np.flatnonzero(~ok) for ok in self.valid]

    def update(self, u: np.ndarray, v: np.ndarray) -> None:
        """Set the coefficients for winds ``u``, ``v`` (ny, nx), m s-1."""
        uf, vf = np.ravel(u), np.ravel(v)
        diag = np.full(uf.size, 1.0 / self.tau)
        offs = []
        for k in range(4):
            w = uf if k < 2 else vf
            normal = np.where(self.valid[k], 0.5 * (w + w[self.nb[k]]), w) * self.sign[k]
            # inflow through the face (normal wind pointing in) plus diffusive exchange, per cell area
            coef = np.maximum(-normal, 0.0) * self.len_over_area[k] + self.diff[k]
            self.coef[k] = coef
            diag += coef
            offs.append(-coef[self.valid[k]])
        self.matrix.data = np.concatenate([diag, *offs])[self.perm]
        self.diag_max = float(diag.max())
        self.diag = diag
        self.coef_arr = np.ascontiguousarray(np.array(self.coef))

    def edge_inflow(self, edge: str) -> np.ndarray:
        """Source (s-1) from a unit enhancement outside ``edge`` (the boundary faces' coefficients)."""
        k = EDGES.index(edge)
        return np.where(self.valid[k], 0.0, self.coef[k])

    def edge_inflow_cells(self, edge: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`edge_inflow` on the cells along ``edge`` only: (cells, s-1)."""
        k = EDGES.index(edge)
        cells = self.edge_cells[k]
        return cells, self.coef[k][cells]


def _active_forcings(
    active: list[int], state: np.ndarray, starts: np.ndarray, until: np.ndarray, t: np.datetime64, dt: np.timedelta64
) -> tuple[list[int], np.ndarray]:
    """The forcings followed in the step starting at ``t`` and their states (ncell, active).

    Forcings starting in the step join with a zero state; those past ``until`` (their end
    plus the tail) are dropped.
    """
    followed = set(active)
    new = [k for k in np.flatnonzero((starts <= t) & (t < starts + dt)) if k not in followed]
    keep = np.flatnonzero(t < until[np.asarray(active, dtype="int64")]) if active else np.zeros(0, "int64")
    if len(keep) < len(active) or new:
        grown = hugepage_zeros((state.shape[0], len(keep) + len(new)))  # swept at every sub-step
        grown[:, : len(keep)] = state[:, keep]
        state = grown
        active = [active[int(i)] for i in keep] + [int(k) for k in new]
    return active, state


@numba.njit(cache=True, nogil=True)
def _explicit_substeps(
    state: np.ndarray,
    work: np.ndarray,
    src_ptr: np.ndarray,
    src_col: np.ndarray,
    src_val: np.ndarray,
    diag: np.ndarray,
    coef: np.ndarray,
    nb: np.ndarray,
    valid: np.ndarray,
    h: float,
    nsub: int,
) -> None:  # pragma: no cover - compiled
    """``nsub`` sub-steps :math:`c \\leftarrow c + h (s - M c)` of the 5-point operator, fused.

    :math:`(M c)_P = d_P c_P - \\sum_f a_{f,P} c_{nb(f,P)}` over the valid faces; the two
    buffers alternate and the result ends in ``state``. One pass over the state per
    sub-step instead of a sparse product and three array operations (numba, no GIL held,
    so dask threads can run several integrations at once). The sources are a CSR matrix
    by cell (``src_ptr``, ``src_col``, ``src_val``), so the mostly-zero dense source
    array is neither held nor read at each sub-step: an entry without a source takes
    :math:`c - h (Mc)`, one with a source :math:`c + h (s - (Mc))`, the arithmetic of a
    dense source array to the bit.
    """
    n, ncol = state.shape
    a, b = state, work
    for _ in range(nsub):
        for p in range(n):
            d = diag[p]
            # a face without a neighbour (the domain edge) adds nothing off the diagonal
            c0 = coef[0, p] if valid[0, p] else 0.0
            c1 = coef[1, p] if valid[1, p] else 0.0
            c2 = coef[2, p] if valid[2, p] else 0.0
            c3 = coef[3, p] if valid[3, p] else 0.0
            n0, n1, n2, n3 = nb[0, p], nb[1, p], nb[2, p], nb[3, p]
            for k in range(ncol):
                acc = d * a[p, k] - c0 * a[n0, k] - c1 * a[n1, k] - c2 * a[n2, k] - c3 * a[n3, k]
                b[p, k] = a[p, k] - h * acc
            for j in range(src_ptr[p], src_ptr[p + 1]):
                k = src_col[j]
                acc = d * a[p, k] - c0 * a[n0, k] - c1 * a[n1, k] - c2 * a[n2, k] - c3 * a[n3, k]
                b[p, k] = a[p, k] + h * (src_val[j] - acc)
        a, b = b, a
    if nsub % 2:
        state[:, :] = work


def _advance(
    state: np.ndarray,
    sources: Sequence[sp.csr_matrix],
    op: Any,
    time_step: float,
    work: np.ndarray | None = None,
) -> None:
    """Advance ``state`` in place over ``time_step`` s: forward-Euler sub-steps with h max M_PP <= 0.95.

    ``sources``: sparse (ncell, ncol) matrices of source terms, s-1 (:func:`_step_sources`),
    summed (they hold different columns). ``work``: a buffer of the state's shape, kept by
    the caller from one step to the next (a fresh one every step costs its page faults).
    """
    nsub = max(1, int(np.ceil(time_step * op.diag_max / 0.95)))
    h = time_step / nsub
    if not state.size:
        return
    total = sp.csr_matrix(state.shape)
    for m in sources:
        total = total + sp.csr_matrix(m)
    src = (total.indptr.astype("int64"), total.indices.astype("int64"), np.asarray(total.data, dtype="float64"))
    if work is None or work.shape != state.shape:
        work = np.empty_like(state)
    _explicit_substeps(state, work, *src, op.diag, op.coef_arr, op.nb_arr, op.valid_arr, h, nsub)


def integrate_responses(
    grid: GridSpec,
    wind_times: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    forcings: Sequence[Forcing],
    obs_start: np.ndarray,
    obs_end: np.ndarray,
    obs_cell: np.ndarray,
    *,
    eddy_diffusivity: float = DEFAULT_EDDY_DIFFUSIVITY,
    ventilation_time: float = DEFAULT_VENTILATION_TIME,
    surface_pressure: float = STANDARD_SURFACE_PRESSURE,
    time_step: float = DEFAULT_TIME_STEP,
    tail: float | None = None,
    progress: Any = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Time-resolved responses of the observations to each forcing (the Jacobian's columns).

    Parameters
    ----------
    grid : GridSpec
    wind_times : array (T,) datetime64
    u, v : array (T, ny, nx), m s-1
        Boundary-layer winds on ``grid`` at ``wind_times`` (linear in time between them).
    forcings : sequence of Forcing
        One per column.
    obs_start, obs_end : array (m,) datetime64
        The time bin of each observation; the model is averaged over the step ends inside it.
    obs_cell : array (m,) int
        Flat cell index of each observation.
    eddy_diffusivity, ventilation_time, surface_pressure
        m2 s-1, s, hPa.
    time_step : float, s
        Interval at which the winds are updated and the observations sampled (6 hours by
        default, the reanalysis interval); no longer than the shortest observation bin.
        Each interval is integrated in as many explicit sub-steps as positivity needs.
    tail : float, s, optional
        How long a response is followed after its forcing ends (default 6 ventilation
        times, when :math:`e^{-6}` of it is left).
    progress : callable, optional
        Called with (steps done, steps total) now and then.
    out : array (m, n_forcing), optional
        Filled in place (e.g. a slice of the Jacobian, so that it is held once).

    Returns
    -------
    numpy.ndarray (m, n_forcing)
        Column enhancement (mol mol-1) per unit of each forcing, averaged over each
        observation's bin (``out`` when given).

    Notes
    -----
    The operator :math:`M` of :func:`_assemble` (upwind advection, diffusion, ventilation)
    is rebuilt under the winds at the middle of each interval and the state advanced by
    forward-Euler sub-steps :math:`c \\leftarrow c + h (s - M c)` with
    :math:`h \\max_P M_{PP} \\le 0.95`: every update is then a non-negative combination
    of the old values and the sources, so responses stay non-negative and the scheme is
    stable for any wind (the explicit counterpart of the M-matrix property; its steady
    state is that of :class:`SimpleTransport`). Sources are :math:`F / N_{air}` for
    emission patterns and the inflow of :func:`_edge_inflow` for boundary elements. The
    responses of forcings that ended more than ``tail`` ago are dropped (below
    :math:`e^{-6}`). Integration starts at the earliest forcing and ends at the last
    observation bin.
    """
    m = obs_cell.size
    n = len(forcings)
    if out is not None and out.shape != (m, n):
        raise SchemaError(f"out has shape {out.shape}; expected {(m, n)}")
    K = np.zeros((m, n)) if out is None else out
    K[...] = 0.0
    blocks = response_blocks(
        grid,
        wind_times,
        u,
        v,
        forcings,
        obs_start,
        obs_end,
        obs_cell,
        eddy_diffusivity=eddy_diffusivity,
        ventilation_time=ventilation_time,
        surface_pressure=surface_pressure,
        time_step=time_step,
        tail=tail,
        progress=progress,
    )
    for rows, cols, values in blocks:
        K[np.ix_(rows, cols)] = values
    return K


@numba.njit(cache=True, nogil=True)
def _add_rows(
    sums: np.ndarray, state: np.ndarray, cells: np.ndarray, cols: np.ndarray, ordered: bool
) -> None:  # pragma: no cover - compiled
    """``sums[i, cols] += state[cells[i]]`` in place, row by row: no (rows x columns) gathered copy.

    The bin's observations sample the state at every step end; gathering their rows into a
    temporary first cost as much as the transport's sub-steps for a per-cell state.
    """
    for i in range(cells.size):
        src = state[cells[i]]
        dst = sums[i]
        if ordered:
            for k in range(src.size):
                dst[k] += src[k]
        else:
            for k in range(src.size):
                dst[cols[k]] += src[k]


@dataclass
class _OpenBin:
    """The responses sampled so far for one observation time bin: columns, their sums, samples."""

    rows: np.ndarray
    cells: np.ndarray
    position: dict[int, int]
    sums: np.ndarray
    count: int = 0

    def add(self, active: list[int], state: np.ndarray) -> None:
        new = [k for k in active if k not in self.position]
        if new:
            for k in new:
                self.position[k] = len(self.position)
            grown = np.zeros((self.sums.shape[0], len(self.position)))
            grown[:, : self.sums.shape[1]] = self.sums
            self.sums = grown
        if active:
            cols = [self.position[k] for k in active]
            ordered = cols == list(range(self.sums.shape[1]))  # the usual case: the same columns in order
            _add_rows(self.sums, state, self.cells, np.asarray(cols, dtype="int64"), ordered)
        self.count += 1

    def block(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cols = np.fromiter(self.position, dtype="int64", count=len(self.position))
        self.sums /= self.count
        return self.rows, cols, self.sums


def _close_bins(
    open_bins: dict[int, _OpenBin], done: np.ndarray, bin_end: np.ndarray, next_sample: np.datetime64 | None
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (and forget) the open bins that the next sample no longer reaches (all when None)."""
    for b in [b for b in open_bins if next_sample is None or bin_end[b] <= next_sample]:
        done[b] = True
        yield open_bins.pop(b).block()


def response_blocks(
    grid: GridSpec,
    wind_times: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    forcings: Sequence[Forcing],
    obs_start: np.ndarray,
    obs_end: np.ndarray,
    obs_cell: np.ndarray,
    *,
    eddy_diffusivity: float = DEFAULT_EDDY_DIFFUSIVITY,
    ventilation_time: float = DEFAULT_VENTILATION_TIME,
    surface_pressure: float = STANDARD_SURFACE_PRESSURE,
    time_step: float = DEFAULT_TIME_STEP,
    tail: float | None = None,
    progress: Any = None,
    wind_scale: float = 1.0,
    wind_rotation: float = 0.0,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The responses of :func:`integrate_responses`, one dense block per observation time bin.

    Parameters are those of :func:`integrate_responses`, and ``wind_scale``,
    ``wind_rotation`` (degrees anticlockwise) applied to each wind step as it is read
    (:func:`rotate_winds`); ``u``, ``v`` may be float32 and are never copied whole.

    Yields
    ------
    (rows, cols, values)
        ``rows`` (r,) the observations of one time bin, ``cols`` (c,) the forcings that were
        followed while the bin was sampled, ``values`` (r, c) their responses averaged over
        the bin. Every other element of the Jacobian is exactly zero: a forcing is followed
        from its start until ``tail`` after its end, so an observation only sees the
        forcings of its own and the preceding periods. A bin is yielded as soon as its last
        step end is past, so only the bins open at one time are held (the Jacobian's
        block-sparse structure, issue 21).
    """
    if not eddy_diffusivity >= 0 or not ventilation_time > 0 or not time_step > 0:
        raise SchemaError("eddy_diffusivity >= 0, ventilation_time > 0 and time_step > 0 are required")
    if obs_cell.size == 0 or len(forcings) == 0:
        return
    tail = 6.0 * ventilation_time if tail is None else float(tail)
    n_air = dry_air_column(surface_pressure)
    op = _Stencil(grid, eddy_diffusivity, ventilation_time)
    ncell = grid.size
    dt = np.timedelta64(int(round(time_step * 1e9)), "ns")
    starts = np.array([f.start for f in forcings], dtype="datetime64[ns]")
    ends = np.array([f.end for f in forcings], dtype="datetime64[ns]")
    tail_ns = np.timedelta64(int(round(tail * 1e9)), "ns")
    sampler = _Sampler.build(
        np.asarray(obs_start, "datetime64[ns]"), np.asarray(obs_end, "datetime64[ns]"), np.asarray(obs_cell, "int64")
    )
    t = starts.min()
    nsteps = int(np.ceil((sampler.bin_end.max() - t) / dt))
    wind_times = np.asarray(wind_times, "datetime64[ns]")
    active: list[int] = []
    state = np.zeros((ncell, 0))
    work = np.zeros((ncell, 0))  # the kernel's second buffer, kept while the active forcings stay the same
    flux_src = _flux_sources(forcings, n_air)
    src_cache: dict[str, Any] = {}
    open_bins: dict[int, _OpenBin] = {}
    done = np.zeros(len(sampler.members), dtype=bool)
    for step in range(nsteps):
        active, state = _active_forcings(active, state, starts, ends + tail_ns, t, dt)
        if active:
            op.update(*_winds_at(wind_times, u, v, t + dt // 2, (wind_scale, wind_rotation)))
            src = _step_sources(forcings, active, starts, ends, t, flux_src, op, src_cache)
            if work.shape != state.shape:
                work = hugepage_zeros(state.shape)
            _advance(state, src, op, time_step, work)
        t = t + dt
        for b in sampler.bins_at(t):
            if b not in open_bins:
                open_bins[b] = _OpenBin(
                    sampler.members[b], sampler.cells[b], {}, np.zeros((sampler.members[b].size, 0))
                )
            open_bins[b].add(active, state)
        yield from _close_bins(open_bins, done, sampler.bin_end, t + dt)
        if progress is not None and (step % 200 == 0 or step == nsteps - 1):
            progress(step + 1, nsteps)
    yield from _close_bins(open_bins, done, sampler.bin_end, None)
    if not done.all():
        missing = sum(sampler.members[b].size for b in np.flatnonzero(~done))
        raise SchemaError(
            f"{missing} observations lie in time bins without a model step end; use a time_step "
            f"no longer than the shortest time bin (time_step = {time_step:g} s)"
        )
