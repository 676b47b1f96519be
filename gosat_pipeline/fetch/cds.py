"""ERA5 winds through the Copernicus Climate Data Store client ``cdsapi``.

The transport operator needs the boundary-layer wind (``gosat_pipeline.winds``: u and v
averaged over 1000-850 hPa, and the boundary-layer height), so one request per month asks
for exactly that, 6-hourly, over the run's box (widened by one 0.25 degree cell so the
grid's edge centres are inside the source grid):

* ``reanalysis-era5-pressure-levels``: ``u_component_of_wind``, ``v_component_of_wind`` at
  1000, 975, 950, 925, 900, 875, 850 hPa;
* ``reanalysis-era5-single-levels``: ``boundary_layer_height``.

Credentials come from ``CDSAPI_URL``/``CDSAPI_KEY`` or ``~/.cdsapirc`` (read by cdsapi
itself); the key is registered for redaction and never recorded.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from gosat_pipeline.fetch._core import FileSpec, Plan, Request
from gosat_pipeline.fetch._errors import CredentialError, FetchError, MissingClientError
from gosat_pipeline.fetch.credentials import register_secret

__all__ = ["PRESSURE_LEVELS_HPA", "era5_plan", "CdsTransport"]

logger = logging.getLogger(__name__)

#: ERA5 pressure levels inside winds.PBL_PRESSURE_RANGE_HPA (1000 to 850 hPa).
PRESSURE_LEVELS_HPA = ("850", "875", "900", "925", "950", "975", "1000")
TIMES = ("00:00", "06:00", "12:00", "18:00")
HOW_TO = (
    "set CDSAPI_URL=https://cds.climate.copernicus.eu/api and CDSAPI_KEY=<your API key>, or write them as "
    "'url:' and 'key:' lines in ~/.cdsapirc; account: https://cds.climate.copernicus.eu (accept the ERA5 "
    "licences on the dataset pages)"
)


def _area(bbox: tuple[float, float, float, float]) -> list[float]:
    w, s, e, n = bbox
    pad = 0.25
    return [min(90.0, n + pad), max(-180.0, w - pad), max(-90.0, s - pad), min(180.0, e + pad)]


def _tag(bbox: tuple[float, float, float, float]) -> str:
    return "_".join(f"{v:g}" for v in bbox).replace("-", "m")


def era5_plan(req: Request) -> Plan:
    """Two Climate Data Store requests per month of the period (no network needed)."""
    plan = Plan()
    base = req.opt("base_url")
    area = _area(req.bbox)
    months: dict[tuple[int, int], list[str]] = {}
    d = req.start
    while d < req.end:
        months.setdefault((d.year, d.month), []).append(f"{d.day:02d}")
        d += timedelta(days=1)
    for (year, month), days in months.items():
        common = {
            "product_type": ["reanalysis"],
            "year": [str(year)],
            "month": [f"{month:02d}"],
            "day": days,
            "time": list(TIMES),
            "area": area,
            "data_format": "netcdf",
            "download_format": "unarchived",
        }
        full = len(days) == calendar.monthrange(year, month)[1]
        span = f"{year}{month:02d}" if full else f"{year}{month:02d}{days[0]}-{days[-1]}"
        for dataset, extra, kind, variables in (
            (
                "reanalysis-era5-pressure-levels",
                {
                    "variable": ["u_component_of_wind", "v_component_of_wind"],
                    "pressure_level": list(PRESSURE_LEVELS_HPA),
                },
                "uv_1000-850hPa",
                ("u", "v"),
            ),
            ("reanalysis-era5-single-levels", {"variable": ["boundary_layer_height"]}, "blh", ("blh",)),
        ):
            name = f"era5_{kind}_{span}_{_tag(req.bbox)}.nc"
            plan.files.append(
                FileSpec(
                    source="era5",
                    url=f"cds://{dataset}/{span}",
                    relpath=f"era5/{name}",
                    check="netcdf",
                    role="winds",
                    credential="cds",
                    variables=variables,
                    request={"dataset": dataset, "request": {**common, **extra}, "url": base},
                )
            )
    plan.notes.append(
        f"era5: u, v on {len(PRESSURE_LEVELS_HPA)} levels 1000-850 hPa and boundary-layer height, "
        f"6-hourly, area N/W/S/E {area}; point winds.path at the era5/ folder"
    )
    return plan


class CdsTransport:
    """Runs the ``cds://`` requests of a plan with ``cdsapi.Client.retrieve``.

    Parameters
    ----------
    url : str, optional
        CDS API URL (default: ``CDSAPI_URL`` or ``~/.cdsapirc``).
    retries : int
        Passed to cdsapi as its retry budget.
    """

    def __init__(self, url: str | None = None, *, retries: int = 4) -> None:
        try:
            import cdsapi
            from cdsapi.api import get_url_key_verify
        except ImportError:
            raise MissingClientError("era5 needs cdsapi: pip install 'gosat_pipeline[fetch]'") from None
        try:
            self.url, self._key, _ = get_url_key_verify(url, None, None)
        except Exception:  # noqa: BLE001 - cdsapi raises a bare Exception for a missing configuration
            raise CredentialError(f"missing Copernicus Climate Data Store credentials: {HOW_TO}") from None
        register_secret(self._key)
        self._cdsapi = cdsapi
        self.retries = retries

    def download(self, spec: FileSpec, part: Path, on_bytes: Callable[[int], None]) -> None:
        """Submit the request, wait for it, download the result into ``part``."""
        assert spec.request is not None
        client = self._cdsapi.Client(
            url=spec.request.get("url") or self.url,
            key=self._key,
            quiet=True,
            progress=False,
            retry_max=max(1, self.retries),
            sleep_max=10,
        )
        part.unlink(missing_ok=True)
        try:
            client.retrieve(spec.request["dataset"], spec.request["request"], str(part))
        except Exception as exc:  # noqa: BLE001 - cdsapi/ecmwf-datastores raise many types
            raise self._error(spec, exc) from None
        on_bytes(part.stat().st_size)

    def _error(self, spec: FileSpec, exc: Exception) -> Exception:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        text = str(exc).replace(self._key, "***")
        if status in (401, 403) or "401" in text.split(":")[0]:
            return CredentialError(f"the Climate Data Store refused the API key (HTTP {status}): {HOW_TO}")
        return FetchError(f"{spec.url}: the Climate Data Store request failed: {type(exc).__name__}: {text[:300]}")
