"""The state vector's metadata: one named view used by every stage (DESIGN.md 4, 5.3).

The Jacobian (``state`` coordinates of :func:`gosat_pipeline.transport.build_jacobian`)
and the posterior carry one coordinate per field of :class:`StateVector`. Stages read it
with :meth:`StateVector.from_coords` and never decode tuples or columns by position.

Element kinds
-------------
``emission``
    A scale factor (units 1) of the prior emissions of one region (and sector) in one
    period. ``role`` says what the region is: ``requested`` (a region the run reports
    on), ``other`` (a country inside the domain that was not asked for: estimated so that
    its emissions cannot alias into the requested ones, reported on but not given a
    verdict) or ``rest`` (everything no country claims: ocean, unlisted land).
``background``
    The free-tropospheric background column per background window: an offset
    (``sector = "offset"``, gas units) and its north-south and east-west gradients across
    the domain (``gradient_north``, ``gradient_east``, gas units per 1000 km).
``inflow``
    Boundary-layer air entering the domain across one edge (``sector`` = ``north``,
    ``south``, ``east``, ``west``) in one window: the enhancement (gas units) on the
    edge's inflow faces, carried into the domain by the transport operator (the regional
    inversion's boundary-condition elements).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

__all__ = [
    "ELEMENT_KINDS",
    "REGION_ROLES",
    "REST_REGION",
    "StateVector",
    "total_moments",
    "total_sensitivity",
    "total_variances",
]

#: Kinds of state elements.
ELEMENT_KINDS: tuple[str, ...] = ("emission", "background", "inflow")
#: Roles of emission regions.
REGION_ROLES: tuple[str, ...] = ("requested", "other", "rest")
#: Region code of the rest-of-domain emission elements.
REST_REGION = "REST"

#: field name -> (coordinate name, dtype, CF attributes)
_COORDS: dict[str, tuple[str, str, dict[str, str]]] = {
    "kind": ("state_kind", "str", {"long_name": "kind of state element (emission, background, inflow)"}),
    "region": ("state_region", "str", {"long_name": "region code (ISO 3166-1 alpha-3, REST, or empty)"}),
    "region_name": ("state_region_name", "str", {"long_name": "region name"}),
    "role": ("state_role", "str", {"long_name": "role of an emission region (requested, other, rest)"}),
    "sector": ("state_sector", "str", {"long_name": "emission sector, background component or inflow edge"}),
    "period": ("state_period", "str", {"long_name": "ISO 8601 period label"}),
    "prior_emission": (
        "state_prior_emission",
        "float64",
        {"units": "kg yr-1", "long_name": "prior emission of the element"},
    ),
    "units": ("state_units", "str", {"long_name": "units of the state element"}),
    "latitude": (
        "state_latitude",
        "float64",
        {"units": "degrees_north", "standard_name": "latitude", "long_name": "emission-weighted centroid latitude"},
    ),
    "longitude": (
        "state_longitude",
        "float64",
        {"units": "degrees_east", "standard_name": "longitude", "long_name": "emission-weighted centroid longitude"},
    ),
    "background_reference": (
        "state_background_reference",
        "float64",
        {"long_name": "reference a background offset is relative to (0 otherwise)"},
    ),
    "domain_share_area": (
        "state_domain_share_area",
        "float64",
        {"units": "1", "long_name": "share of the region's area inside the domain"},
    ),
    "domain_share_emission": (
        "state_domain_share_emission",
        "float64",
        {
            "units": "1",
            "long_name": "share of the region's prior emission inside the domain "
            "(NaN: the inventory does not cover the whole region)",
        },
    ),
    "area_km2": ("state_area_km2", "float64", {"units": "km2", "long_name": "area of the whole region"}),
}


@dataclass(frozen=True)
class StateVector:
    """Metadata of every state element, as named numpy arrays of equal length.

    Attributes
    ----------
    kind, region, region_name, role, sector, period, units : ndarray of str
    prior_emission : ndarray, kg yr-1 (0 for non-emission elements)
    latitude, longitude : ndarray, degrees (NaN where not meaningful)
    background_reference : ndarray, gas units (0 except background offsets)
    domain_share_area, domain_share_emission : ndarray, 1
        Share of the region's area and of its prior emission inside the domain (1 for
        regions wholly inside; NaN where the inventory does not cover the whole region).
    area_km2 : ndarray, km2
        Area of the whole region (NaN where unknown).
    """

    kind: np.ndarray
    region: np.ndarray
    region_name: np.ndarray
    role: np.ndarray
    sector: np.ndarray
    period: np.ndarray
    prior_emission: np.ndarray
    units: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    background_reference: np.ndarray
    domain_share_area: np.ndarray
    domain_share_emission: np.ndarray
    area_km2: np.ndarray

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> StateVector:
        """Build from one mapping per element (missing fields take their defaults)."""
        defaults: dict[str, Any] = {
            "region": "",
            "region_name": "",
            "role": "",
            "sector": "total",
            "period": "",
            "prior_emission": 0.0,
            "units": "1",
            "latitude": np.nan,
            "longitude": np.nan,
            "background_reference": 0.0,
            "domain_share_area": 1.0,
            "domain_share_emission": 1.0,
            "area_km2": np.nan,
        }
        cols: dict[str, list[Any]] = {f.name: [] for f in fields(cls)}
        for rec in records:
            unknown = set(rec) - set(cols)
            if unknown:
                raise KeyError(f"unknown state fields {sorted(unknown)}; known: {sorted(cols)}")
            for name in cols:
                if name == "kind":
                    cols[name].append(rec["kind"])
                else:
                    cols[name].append(rec.get(name, defaults[name]))
        return cls(
            **{
                name: np.asarray(vals, dtype=_COORDS[name][1]) if vals else np.zeros(0, dtype=_COORDS[name][1])
                for name, vals in cols.items()
            }
        )

    @classmethod
    def from_coords(cls, obj: Any) -> StateVector:
        """Read the ``state_*`` coordinates of a Jacobian or posterior (older files lack some)."""
        if "state_kind" not in obj.coords and "state_kind" not in getattr(obj, "variables", {}):
            raise KeyError("no state_kind coordinate: not a Jacobian or posterior of this package")
        n = obj["state_kind"].size
        kind = obj["state_kind"].values.astype(str)
        vals: dict[str, np.ndarray] = {}
        for name, (coord, dtype, _attrs) in _COORDS.items():
            if coord in obj.coords or coord in getattr(obj, "variables", {}):
                vals[name] = np.asarray(obj[coord].values).astype(dtype)
            elif name == "role":
                vals[name] = np.where(kind == "emission", "requested", "").astype(str)
            elif name == "region_name":
                vals[name] = vals.get("region", np.full(n, "", dtype=str))
            elif dtype == "str":
                vals[name] = np.full(n, "1" if name == "units" else "", dtype=str)
            else:
                fill = {
                    "latitude": np.nan,
                    "longitude": np.nan,
                    "area_km2": np.nan,
                    "domain_share_area": 1.0,
                    "domain_share_emission": 1.0,
                }.get(name, 0.0)
                vals[name] = np.full(n, fill)
        return cls(**vals)

    def to_coords(self) -> dict[str, tuple[str, np.ndarray, dict[str, str]]]:
        """The ``state_*`` coordinates, ready for an xarray constructor."""
        return {
            coord: ("state", getattr(self, name).astype(dtype), dict(attrs))
            for name, (coord, dtype, attrs) in _COORDS.items()
        }

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.kind.size)

    def subset(self, index: Any) -> StateVector:
        """The elements selected by ``index`` (integer positions or a boolean mask), in that order."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def labels(self) -> list[str]:
        """One readable label per element: ``"IDN 2020-01"`` for emissions, ``"<kind> <sector> <period>"`` else."""
        return [
            f"{r} {p}" if k == "emission" else f"{k} {s} {p}"
            for k, r, s, p in zip(self.kind, self.region, self.sector, self.period, strict=True)
        ]

    @property
    def emission(self) -> np.ndarray:
        """Boolean mask of the emission elements."""
        return self.kind == "emission"

    def periods(self) -> list[str]:
        """Emission periods in order of appearance."""
        return list(dict.fromkeys(self.period[self.emission]))

    def regions(self, role: str | None = None) -> list[str]:
        """Emission regions (optionally of one role) in order of appearance."""
        sel = self.emission if role is None else self.emission & (self.role == role)
        return list(dict.fromkeys(self.region[sel]))

    def names(self) -> dict[str, str]:
        """Region code -> name."""
        out: dict[str, str] = {}
        for r, n in zip(self.region[self.emission], self.region_name[self.emission], strict=True):
            out.setdefault(str(r), str(n) or str(r))
        return out

    def region_weights(self, members: Sequence[str], period: str | Sequence[str] | None = None) -> np.ndarray:
        """w (n,) in Tg yr-1: prior emissions of the members' emission elements in ``period``.

        A sequence of periods gives the mean rate over them; None means every period
        summed (for a single-period state, the period itself).
        """
        sel = self.emission & np.isin(self.region, list(members))
        pe = self.prior_emission / 1e9
        if period is None:
            return np.where(sel, pe, 0.0)
        plist = [period] if isinstance(period, str) else list(period)
        w = np.zeros(len(self))
        for p in plist:
            w += np.where(sel & (self.period == p), pe, 0.0)
        return w / len(plist)

    @functools.cached_property
    def element_index(self) -> dict[tuple[str, str], np.ndarray]:
        """(region, period) -> its emission elements (all sectors, ascending), built once per state."""
        by_key: dict[tuple[str, str], list[int]] = {}
        for i in np.flatnonzero(self.emission):
            by_key.setdefault((str(self.region[i]), str(self.period[i])), []).append(int(i))
        return {k: np.asarray(v, dtype="int64") for k, v in by_key.items()}

    def elements(self, members: Sequence[str], period: str) -> np.ndarray:
        """The emission elements of ``members`` in ``period``, ascending: a lookup, not a scan of the state."""
        found = [a for r in dict.fromkeys(members) if (a := self.element_index.get((str(r), str(period)))) is not None]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype="int64")

    def weight_matrix(self, targets: Sequence[tuple[Sequence[str], str]]) -> sp.csr_matrix:
        """Sparse W (n_targets, n) whose rows are :meth:`region_weights` of (members, period)."""
        if not targets:
            return sp.csr_matrix((0, len(self)))
        pe = self.prior_emission / 1e9
        cols = [self.elements(members, period) for members, period in targets]
        rows = np.repeat(np.arange(len(targets)), [c.size for c in cols])
        c = np.concatenate(cols)
        return sp.csr_matrix((pe[c], (rows, c)), shape=(len(targets), len(self)))


# ---------------------------------------------------------------------------- region totals
#: Targets (rows of W) per block of the region-total products.
_TARGET_BLOCK = 256


def _c_ordered(S: np.ndarray, symmetric: bool) -> np.ndarray:
    """S as a C-contiguous float64 array, copied at most once (a sparse product copies it on every call
    otherwise); a Fortran-ordered symmetric matrix is its own transpose, a view."""
    S = np.asarray(S, dtype="float64")
    if S.flags.c_contiguous:
        return S
    if symmetric and S.flags.f_contiguous:
        return S.T
    return np.ascontiguousarray(S)


def _compact(W: sp.csr_matrix, S: np.ndarray, symmetric: bool) -> tuple[sp.csr_matrix, np.ndarray]:
    """W and S restricted to the columns W uses: :math:`W S W^T = W_c S_{cc} W_c^T`.

    A few targets (a comparison row, a block of them) touch a few elements: their block of S
    is gathered instead of a product with all of S (which a strided view, such as the emission
    block of a posterior, would also have to copy whole). When W uses every column, S itself
    is used, C-ordered (a Fortran-ordered symmetric S as its transpose, a view).
    """
    W = sp.csr_matrix(W)
    cols = np.unique(W.indices)
    if cols.size == S.shape[0]:
        return W, _c_ordered(S, symmetric)
    Wc = sp.csr_matrix((W.data, np.searchsorted(cols, W.indices), W.indptr), shape=(W.shape[0], cols.size))
    return Wc, np.ascontiguousarray(S[np.ix_(cols, cols)], dtype="float64")


def _rows(W: Any) -> sp.csr_matrix:
    return W.tocsr() if sp.issparse(W) else sp.csr_matrix(np.atleast_2d(np.asarray(W, dtype="float64")))


def total_moments(W: Any, x: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Totals :math:`W x` and their covariance :math:`W S W^T`: the one region-total calculation.

    Parameters
    ----------
    W : scipy.sparse matrix or array, (n_targets, n) or (n,)
        Weight rows, Tg yr-1 per unit of the state (:meth:`StateVector.weight_matrix`,
        or one :meth:`StateVector.region_weights` row, or a difference of rows).
    x : ndarray (n,)
        State (prior, posterior or a member's posterior).
    S : ndarray (n, n)
        Its error covariance (prior, posterior).

    Returns
    -------
    totals : ndarray (n_targets,), Tg yr-1
    covariance : ndarray (n_targets, n_targets), Tg2 yr-2
        The full covariance (DESIGN.md 5.5): off-diagonal terms are the covariances
        between totals (e.g. two periods of one region).

    Notes
    -----
    :math:`E = W x`, :math:`C = W S W^T` (e.g. Rodgers 2000, eq. 2.38, for a linear
    function of the state). W is sparse, so no n x n temporary is made per target.
    """
    W = _rows(W)
    totals = np.asarray(W @ x).ravel()
    W, S = _compact(W, S, symmetric=True)
    nt = W.shape[0]
    C = np.empty((nt, nt))
    ptr, idx, val = W.indptr.astype("int64"), W.indices.astype("int64"), W.data.astype("float64")
    for a in range(0, nt, _TARGET_BLOCK):  # W S W^T by blocks of targets: no (targets x n) temporary
        WS = np.ascontiguousarray(W[a : a + _TARGET_BLOCK] @ S)  # sparse x dense: C-ordered rows
        _times_rows_transposed(WS, ptr, idx, val, C[a : a + _TARGET_BLOCK])
    return totals, C


@numba.njit(cache=True, nogil=True)
def _times_rows_transposed(
    T: np.ndarray, ptr: np.ndarray, idx: np.ndarray, val: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``out = T @ W^T`` for a CSR matrix W (``ptr``, ``idx``, ``val``): each output row in place.

    :math:`out_{tu} = \\sum_{j \\in row\\,u} T_{t,idx_j} val_j`, written row by row into a
    C-ordered block of the covariance (a dense-by-sparse product through scipy gives the
    transposed layout, and its copy into the block cost more than the product).
    """
    nb, nu = out.shape
    for t in range(nb):
        row = T[t]
        for u in range(nu):
            acc = 0.0
            for j in range(ptr[u], ptr[u + 1]):
                acc += row[idx[j]] * val[j]
            out[t, u] = acc


def total_variances(W: Any, S: np.ndarray) -> np.ndarray:
    """The variances of the totals alone, :math:`\\mathrm{diag}(W S W^T)`, Tg2 yr-2 (as :func:`total_moments`).

    By blocks of targets, :math:`\\sum_j (W S)_{tj} W_{tj}` over each row's non-zeros: no
    (targets x targets) matrix when only each target's own variance is needed (a comparison
    row per day of a daily state).
    """
    return _diagonal(_rows(W), S, symmetric=True)


def _diagonal(W: sp.csr_matrix, S: np.ndarray, symmetric: bool) -> np.ndarray:
    """diag(W S W^T) by blocks of targets, each on the columns its rows use."""
    out = np.zeros(W.shape[0])
    for a in range(0, W.shape[0], _TARGET_BLOCK):
        Wb, Sb = _compact(W[a : a + _TARGET_BLOCK], S, symmetric)
        out[a : a + _TARGET_BLOCK] = np.asarray(Wb.multiply(np.asarray(Wb @ Sb)).sum(axis=1)).ravel()
    return out


def total_sensitivity(W: Any, A: np.ndarray) -> np.ndarray:
    """Averaging-kernel sensitivity of each total, :math:`w^T A w / w^T w` (0 for an empty row), 1."""
    W = _rows(W)
    wAw = _diagonal(W, A, symmetric=False)  # only the diagonal of W A W^T
    with np.errstate(invalid="ignore", divide="ignore"):
        ww = np.asarray(W.multiply(W).sum(axis=1)).ravel()
        return np.where(ww > 0, wAw / np.where(ww > 0, ww, 1.0), 0.0)
