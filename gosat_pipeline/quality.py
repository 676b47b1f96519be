"""QUALITY: configurable screens on canonical soundings, after the product's own screen.

The product's recommended screen is applied by the readers (``screen=True`` in
:func:`gosat_pipeline.io.open_granules`, documented per reader). This module adds the
user's screens (:class:`gosat_pipeline.params.QualityScreens`, built from the config or
in a notebook): quality flag, bounding box, time window, solar zenith angle, retrieval
uncertainty and observation mode (land / glint). Every function takes the screens object;
keyword arguments override single fields (``apply_quality_filter(ds, surface="land")``). The choice between
bias-corrected and raw values is made at read time (``bias_corrected=``).

The mask is computed (1-D, cheap), then the dataset is indexed with it, so the
result stays dask-backed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from gosat_pipeline.errors import SchemaError
from gosat_pipeline.params import SURFACES, QualityScreens, with_overrides
from gosat_pipeline.schema import SOUNDING_DIM

__all__ = ["quality_mask", "apply_quality_filter", "describe_screens", "screen_codes", "DROP_REASONS", "QualityScreens"]

logger = logging.getLogger(__name__)


def _bbox_mask(ds: xr.Dataset, bbox: Sequence[float]) -> xr.DataArray:
    if len(bbox) != 4:
        raise SchemaError(f"bbox must be (west, south, east, north); got {bbox!r}")
    west, south, east, north = (float(b) for b in bbox)
    if not (-90.0 <= south < north <= 90.0):
        raise SchemaError(f"bbox south/north must satisfy -90 <= south < north <= 90; got {bbox!r}")
    lat, lon = ds["latitude"], ds["longitude"]
    in_lat = (lat >= south) & (lat <= north)
    if east - west >= 360.0:
        return in_lat & lon.notnull()
    w = ((west + 180.0) % 360.0) - 180.0
    e = ((east + 180.0) % 360.0) - 180.0
    if east == 180.0:
        e = 180.0
    if w <= e:
        in_lon = (lon >= w) & (lon <= e)
    else:  # box crosses the antimeridian
        in_lon = (lon >= w) | (lon <= e)
    return in_lat & in_lon


def _utc(t: Any) -> pd.Timestamp | None:
    if t is None:
        return None
    ts = pd.Timestamp(t)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _is_date_only(t: Any) -> bool:
    if isinstance(t, str):
        return len(t.strip()) == 10
    return isinstance(t, date) and not isinstance(t, datetime)


def _time_mask(ds: xr.Dataset, time_range: Sequence[Any]) -> xr.DataArray:
    if len(time_range) != 2:
        raise SchemaError(f"time_range must be (start, end); got {time_range!r}")
    start, end = (_utc(t) for t in time_range)
    t = ds["time"]
    mask = t.notnull()
    if start is not None:
        mask &= t >= np.datetime64(start, "ns")
    if end is not None:
        if _is_date_only(time_range[1]):  # a bare date as the end means "through that day"
            mask &= t < np.datetime64(end + pd.Timedelta(days=1), "ns")
        else:
            mask &= t <= np.datetime64(end, "ns")
    return mask


#: Reasons a sounding is dropped, in the order they are attributed (the first that applies).
DROP_REASONS: tuple[str, ...] = (
    "missing_value",
    "invalid_time",
    "invalid_position",
    "flagged",
    "outside_time_window",
    "outside_bbox",
    "solar_zenith",
    "uncertainty",
    "surface",
)


def _validity_screens(ds: xr.Dataset) -> list[tuple[str, xr.DataArray]]:
    """Screens every sounding must pass: a value, a time, a position on the globe."""
    lat, lon = ds["latitude"], ds["longitude"]
    return [
        ("missing_value", ds["xgas"].notnull()),
        ("invalid_time", ds["time"].notnull()),
        (
            "invalid_position",
            (lat >= -90.0) & (lat <= 90.0) & (lon >= -180.0) & (lon <= 360.0),
        ),
    ]


def _resolve(screens: QualityScreens | None, overrides: dict[str, Any]) -> QualityScreens:
    return with_overrides(screens or QualityScreens(), overrides, "quality screen")


def _screens(ds: xr.Dataset, q: QualityScreens) -> list[tuple[str, xr.DataArray]]:
    """(reason, pass mask) of every requested screen, in :data:`DROP_REASONS` order."""
    screens = _validity_screens(ds)
    if q.drop_flagged:
        screens.append(("flagged", ds["quality_flag"] == 0))
    if q.time_range is not None:
        screens.append(("outside_time_window", _time_mask(ds, q.time_range)))
    if q.bbox is not None:
        screens.append(("outside_bbox", _bbox_mask(ds, q.bbox)))
    if q.max_solar_zenith is not None:
        if "solar_zenith_angle" not in ds:
            raise SchemaError(
                f"max_solar_zenith={q.max_solar_zenith} needs 'solar_zenith_angle'; "
                f"product {ds.attrs.get('product')!r} has none: drop that screen"
            )
        screens.append(("solar_zenith", ds["solar_zenith_angle"] <= q.max_solar_zenith))
    if q.max_uncertainty is not None:
        screens.append(("uncertainty", ds["xgas_uncertainty"] <= q.max_uncertainty))
    code = SURFACES[q.surface]
    if code is not None:
        if "surface_type" not in ds:
            raise SchemaError(
                f"surface={q.surface!r} needs 'surface_type'; product "
                f"{ds.attrs.get('product')!r} has none: use surface='all'"
            )
        screens.append(("surface", ds["surface_type"] == code))
    return screens


def quality_mask(ds: xr.Dataset, screens: QualityScreens | None = None, **overrides: Any) -> xr.DataArray:
    """Boolean mask (dims ``sounding``) of the soundings that pass every requested screen.

    Parameters are those of :func:`apply_quality_filter`. Soundings with a NaN
    ``xgas``, a NaT ``time``, a latitude outside [-90, 90] or a longitude outside
    [-180, 360] (or NaN) never pass.
    """
    found = _screens(ds, _resolve(screens, overrides))
    mask = found[0][1]
    for _, ok in found[1:]:
        mask = mask & ok
    return mask


def describe_screens(screens: QualityScreens | None = None, **overrides: Any) -> str:
    """The screens applied, as recorded in the ``quality_filter`` attribute (:meth:`QualityScreens.describe`)."""
    return _resolve(screens, overrides).describe()


def screen_codes(
    ds: xr.Dataset, screens: QualityScreens | None = None, **overrides: Any
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The first screen each sounding fails, as a code: 0 kept, k drops it for ``DROP_REASONS[k - 1]``.

    Parameters are those of :func:`apply_quality_filter`, which keeps exactly the
    soundings with code 0 and counts the others per code. Lets a caller screen part of
    a batch at a time (e.g. one group of granules on a worker) and add up the counts.

    Returns
    -------
    codes : numpy.ndarray, int8, dims (sounding,)
    reasons : tuple of str
        The screens applied (the keys of ``quality_filter_dropped``), in order.
    """
    found = _screens(ds, _resolve(screens, overrides))
    n = int(ds.sizes.get(SOUNDING_DIM, 0))
    values = dask.compute(*[ok.data for _, ok in found]) if n else [np.zeros(0, bool)] * len(found)
    codes = np.zeros(n, dtype=np.int8)
    for (reason, _), ok in zip(found, values, strict=True):
        codes[(codes == 0) & ~np.asarray(ok, dtype=bool)] = DROP_REASONS.index(reason) + 1
    return codes, tuple(reason for reason, _ in found)


def _attribute_drops(screens: list[tuple[str, xr.DataArray]], n: int) -> tuple[np.ndarray, dict[str, int]]:
    """Keep mask and, per reason, the soundings it drops (each charged to its first failed screen)."""
    values = dask.compute(*[ok.data for _, ok in screens]) if n else [np.zeros(0, bool)] * len(screens)
    keep = np.ones(n, dtype=bool)
    dropped: dict[str, int] = {}
    for (reason, _), ok in zip(screens, values, strict=True):
        ok = np.asarray(ok, dtype=bool)
        dropped[reason] = int(np.count_nonzero(keep & ~ok))
        keep &= ok
    return keep, dropped


def apply_quality_filter(ds: xr.Dataset, screens: QualityScreens | None = None, **overrides: Any) -> xr.Dataset:
    """Keep the soundings that pass every requested screen, and count why the others went.

    Parameters
    ----------
    ds : xarray.Dataset
        Canonical soundings (dims ``sounding``, ``level``).
    screens : QualityScreens, optional
        The screens (default :class:`gosat_pipeline.params.QualityScreens`: only the
        quality flag and the validity checks); its docstring documents each one.
    **overrides
        Fields of :class:`~gosat_pipeline.params.QualityScreens` that replace those of
        ``screens`` (``bbox=``, ``time_range=``, ``max_solar_zenith=``,
        ``max_uncertainty=``, ``surface=``, ``drop_flagged=``).

    Returns
    -------
    xarray.Dataset
        The kept soundings (still dask-backed when the input is), with attributes
        ``n_soundings_before_filter``, ``quality_filter`` (the screens applied) and
        ``quality_filter_dropped`` (JSON: soundings dropped per reason of
        :data:`DROP_REASONS`, summing to the number dropped).

    Raises
    ------
    SchemaError
        A screen needs a variable the product does not have, or an argument is invalid.
    TypeError
        An override names no field of :class:`~gosat_pipeline.params.QualityScreens`.

    Notes
    -----
    Whatever the screens requested, a sounding without a value (NaN ``xgas``), a time
    (NaT) or a valid position (latitude outside [-90, 90], longitude outside
    [-180, 360], NaN) is dropped: such a sounding cannot be gridded. Each dropped
    sounding is charged to the first screen it fails, in :data:`DROP_REASONS` order.
    """
    n_before = int(ds.sizes.get(SOUNDING_DIM, 0))
    q = _resolve(screens, overrides)
    keep, dropped = _attribute_drops(_screens(ds, q), n_before)
    out = ds.isel({SOUNDING_DIM: np.flatnonzero(keep)})
    out.attrs = {
        **ds.attrs,
        "n_soundings_before_filter": n_before,
        "quality_filter": q.describe(),
        "quality_filter_dropped": json.dumps(dropped),
    }
    why = ", ".join(f"{k} {v}" for k, v in dropped.items() if v)
    logger.info(
        "quality filter kept %d/%d soundings%s",
        int(keep.sum()),
        n_before,
        f" (dropped: {why})" if why else "",
    )
    return out
