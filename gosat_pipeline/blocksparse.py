"""The Jacobian's block-sparse structure: assembled once, held once, used as it is.

An observation only responds to the forcings that were on (or whose response was still
followed) while its time bin was sampled: with a state split in time (``period.split``)
most of each row is exactly zero. :func:`build_jacobian` therefore builds the Jacobian
as dense blocks, one per observation time bin over the columns that bin sees, and
assembles them into one CSR matrix (:func:`csr_from_blocks`). The matrix is then wrapped
as the usual ``(obs, state)`` :class:`xarray.DataArray`:

- small Jacobians (at most :data:`DENSE_MAX_BYTES` when dense) hold the dense array, as
  any analyst expects;
- larger ones hold a lazy dask array whose row chunks are densified from the CSR matrix
  on demand (``jac.values`` still works, ``to_netcdf`` writes chunk by chunk), and
  :func:`jacobian_matrix` hands the inversion the CSR matrix itself, so the dense
  Jacobian is never formed.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr

__all__ = ["DENSE_MAX_BYTES", "csr_from_blocks", "jacobian_matrix", "wrap_jacobian"]

#: Jacobians up to this size when dense (bytes) are held dense; larger ones stay sparse.
DENSE_MAX_BYTES = 512 * 2**20

#: Values per densified row chunk of a lazy Jacobian (64 MiB of float64).
_CHUNK_VALUES = 8 * 2**20

# dask array name -> the CSR rows behind it (weak: the dask graph holds the strong reference)
_SPARSE: weakref.WeakValueDictionary[str, _CSRRows] = weakref.WeakValueDictionary()


def csr_from_blocks(
    shape: tuple[int, int], blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]
) -> sp.csr_matrix:
    """One CSR matrix from dense blocks on disjoint row sets, releasing each block when copied.

    Parameters
    ----------
    shape : (m, n)
    blocks : list of (rows, cols, values) or None
        ``rows`` (r,) distinct row indices, ``cols`` (c,) distinct column indices,
        ``values`` (r, c). No row may appear in two blocks. The list is emptied while
        copying, so the blocks and the matrix are never both held whole.

    Returns
    -------
    scipy.sparse.csr_matrix (m, n), float64, sorted indices
        Columns whose values are all zero within a block are not stored.
    """
    m, n = shape
    per_row = np.zeros(m, dtype="int64")
    seen = np.zeros(m, dtype=bool)
    for i, blk in enumerate(blocks):
        if blk is None:
            continue
        rows, cols, values = blk
        keep = np.flatnonzero(np.any(values != 0.0, axis=0)) if values.size else np.zeros(0, "int64")
        order = keep[np.argsort(cols[keep], kind="stable")]
        blocks[i] = (np.asarray(rows, "int64"), np.asarray(cols, "int64")[order], values[:, order])
        if np.any(seen[rows]) or np.unique(rows).size != rows.size:
            raise ValueError("csr_from_blocks: a row appears in two blocks")
        seen[rows] = True
        per_row[rows] = order.size
    indptr = np.zeros(m + 1, dtype="int64")
    np.cumsum(per_row, out=indptr[1:])
    nnz = int(indptr[-1])
    index_dtype = "int32" if max(nnz, n) < np.iinfo("int32").max else "int64"
    indptr = indptr.astype(index_dtype)
    data = np.empty(nnz, dtype="float64")
    indices = np.empty(nnz, dtype=index_dtype)
    for i in range(len(blocks)):
        blk = blocks[i]
        blocks[i] = None
        if blk is None or blk[1].size == 0:
            continue
        rows, cols, values = blk
        pos = indptr[rows].astype("int64")[:, None] + np.arange(cols.size)
        data[pos] = values
        indices[pos] = cols
    K = sp.csr_matrix((data, indices, indptr), shape=(m, n))
    K.has_sorted_indices = True
    return K


class _CSRRows:
    """Array-like view of a CSR matrix for :func:`dask.array.from_array`: slices come back dense."""

    def __init__(self, K: sp.csr_matrix) -> None:
        self.K = K
        self.shape = K.shape
        self.dtype = K.dtype
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        return np.asarray(self.K[rows][:, cols].toarray())


def wrap_jacobian(K: sp.csr_matrix, dense_max_bytes: int | None = None) -> Any:
    """The data of the Jacobian DataArray: dense when small, a lazy dask array over ``K`` otherwise.

    Parameters
    ----------
    K : scipy.sparse.csr_matrix (m, n)
    dense_max_bytes : int, optional
        Default :data:`DENSE_MAX_BYTES`.

    Returns
    -------
    numpy.ndarray or dask.array.Array (m, n), float64
    """
    import dask.array as da

    limit = DENSE_MAX_BYTES if dense_max_bytes is None else int(dense_max_bytes)
    m, n = K.shape
    if m * n * 8 <= limit:
        return K.toarray()
    rows = max(1, min(m, _CHUNK_VALUES // max(n, 1)))
    view = _CSRRows(K)
    arr = da.from_array(view, chunks=(rows, n), asarray=True, fancy=False, meta=np.empty((0, 0)))
    _SPARSE[arr.name] = view
    return arr


def jacobian_matrix(jac: xr.DataArray) -> Any:
    """The Jacobian's matrix as the inversion uses it: the CSR matrix when it was kept sparse.

    Parameters
    ----------
    jac : xarray.DataArray (obs, state)
        From :func:`gosat_pipeline.transport.build_jacobian`.

    Returns
    -------
    scipy.sparse.csr_matrix or numpy.ndarray (obs, state), float64
        The CSR matrix behind a lazy Jacobian that has not been sliced or transformed
        since it was built; otherwise its values as a float64 array (no copy of a
        float64 numpy Jacobian).
    """
    data = jac.data
    name = getattr(data, "name", None)
    view = _SPARSE.get(name) if isinstance(name, str) else None
    if view is not None and jac.dims == ("obs", "state") and view.shape == data.shape:
        return view.K
    return np.asarray(jac.values, dtype="float64")


def rows_with_nonfinite(K: Any) -> np.ndarray:
    """Boolean (m,): rows of a dense or CSR matrix that hold a non-finite value."""
    if sp.issparse(K):
        K = sp.csr_matrix(K)
        bad = ~np.isfinite(K.data)
        out = np.zeros(K.shape[0], dtype=bool)
        if bad.any():
            row_of = np.repeat(np.arange(K.shape[0]), np.diff(K.indptr))
            out[row_of[bad]] = True
        return out
    return ~np.all(np.isfinite(K), axis=1)
