"""The sources ``gosat-pipeline fetch`` knows, each a planner from a :class:`Request` to a :class:`Plan`.

Planning lists the archive (directory listing, S3 bucket listing, Zenodo record, NASA CMR
search through ``earthaccess``, or -- for GOSAT-2, whose archive can only be listed after
login -- an SFTP listing) and selects by the file-name rules of
``shared/reference/L2_FORMATS.md`` (the date in the name; for TROPOMI also the orbit's
daytime overpass longitude, so a box selects its orbits); nothing is downloaded. Every
source takes ``base_url`` (or ``url``) so that a mirror, or a test server, can stand in
for the archive.
"""

from __future__ import annotations

import fnmatch
import html
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import unquote, urljoin, urlsplit

from gosat_pipeline.fetch._core import FileSpec, Plan, Request
from gosat_pipeline.fetch._errors import FetchError
from gosat_pipeline.fetch.http import HttpClient

__all__ = ["SOURCES", "Source", "plan_request", "overpass_longitude", "gosat2_version"]

logger = logging.getLogger(__name__)

Planner = Callable[[Request, HttpClient], Plan]


@dataclass(frozen=True)
class Source:
    """One archive product family."""

    name: str
    title: str
    planner: Planner
    credential: str | None
    options: str


def _days(start: date, end: date) -> Iterator[date]:
    d = start
    while d < end:
        yield d
        d += timedelta(days=1)


def _months(start: date, end: date) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for d in _days(start, end):
        if (d.year, d.month) not in out:
            out.append((d.year, d.month))
    return out


def _listing_names(page: str, base: str) -> list[tuple[str, str]]:
    """(file name, absolute URL) of every link in an HTML directory listing."""
    out = []
    for href in re.findall(r'href\s*=\s*["\']([^"\'#]+)["\']', page, flags=re.I):
        url = urljoin(base, html.unescape(href))
        name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
        if name and not href.endswith("/"):
            out.append((name, url))
    return out


def _s3_list(http: HttpClient, base: str, prefix: str) -> list[tuple[str, int, str]]:
    """(key, size, etag) of every object under ``prefix`` in a public S3 bucket (ListObjectsV2)."""
    out: list[tuple[str, int, str]] = []
    token: str | None = None
    while True:
        params = {"list-type": "2", "prefix": prefix}
        if token:
            params["continuation-token"] = token
        text = http.get_text(base.rstrip("/") + "/", params=params)
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise FetchError(f"{base}: the bucket listing is not S3 XML ({exc})") from None
        ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
        for c in root.iter(f"{ns}Contents"):
            out.append(
                (c.findtext(f"{ns}Key", ""), int(c.findtext(f"{ns}Size", "0")), c.findtext(f"{ns}ETag", "").strip('"'))
            )
        if root.findtext(f"{ns}IsTruncated", "false") != "true":
            return out
        token = root.findtext(f"{ns}NextContinuationToken")
        if not token:
            return out


def _ymd(s: str) -> date:
    return datetime.strptime(s[:8], "%Y%m%d").date()


# --------------------------------------------------------------------------- ESA CCI / C3S (CEDA)

#: CEDA folders (under ``https://data.ceda.ac.uk/neodc``) of the GOSAT L2 products, with
#: their default version folder; files sit in one folder per year. OCPR v9.0 is the
#: Leicester/NCEO continuation (``UoL-GHG-L2-CH4-GOSAT-OCPR-YYYYMMDD-fv9.0.nc``).
CCI_PRODUCTS: dict[str, tuple[str, str, str]] = {
    "CH4_GOS_OCPR": ("esacci/ghg/data/crdp_4/GOSAT/CH4_GOS_OCPR/{version}", "v7.0", "CH4"),
    "CH4_GOS_OCPR_UOL": ("gosat/data/ch4/nceov1.0/CH4_GOS_OCPR", "v9.0", "CH4"),
    "CH4_GOS_SRPR": ("esacci/ghg/data/crdp_4/GOSAT/CH4_GOS_SRPR/{version}", "", "CH4"),
    "CH4_GOS_OCFP": ("esacci/ghg/data/crdp_4/GOSAT/CH4_GOS_OCFP/{version}", "v2.1", "CH4"),
    "CH4_GOS_SRFP": ("esacci/ghg/data/crdp_4/GOSAT/CH4_GOS_SRFP/{version}", "", "CH4"),
    "CO2_GOS_OCFP": ("esacci/ghg/data/crdp_4/GOSAT/CO2_GOS_OCFP/{version}", "", "CO2"),
    "CO2_GOS_SRFP": ("esacci/ghg/data/crdp_4/GOSAT/CO2_GOS_SRFP/{version}", "", "CO2"),
    "CO2_EMMA": ("esacci/ghg/data/crdp_4/EMMA/CO2_EMMA/{version}", "", "CO2"),
}
_CCI_NAME = re.compile(r"^(?:ESACCI|UoL|EOCIS|C3S)-GHG-L2-(CH4|CO2)-([A-Z0-9-]+?)-(\d{8})-fv[\w.]+\.nc$")


def _plan_cci(req: Request, http: HttpClient) -> Plan:
    product = req.opt("product", "CH4_GOS_OCPR" if req.gas != "CO2" else "CO2_GOS_OCFP")
    if product not in CCI_PRODUCTS and not req.opt("url"):
        raise FetchError(
            f"cci_ghg: unknown product {product!r}; choose one of {sorted(CCI_PRODUCTS)} "
            "or give url: (the product folder on the archive)"
        )
    folder, default_version, gas = CCI_PRODUCTS.get(product, ("", "", req.gas or "CH4"))
    version = req.opt("version", default_version)
    url = req.opt("url")
    if url is None:
        if "{version}" in folder and not version:
            raise FetchError(
                f"cci_ghg: product {product} needs version: (the folder name on the archive, "
                "e.g. v2.3.8); see https://catalogue.ceda.ac.uk (GHG_cci)"
            )
        url = req.opt("base_url", "https://data.ceda.ac.uk/neodc").rstrip("/") + "/" + folder.format(version=version)
    algo = product.split("_")[-1] if product != "CH4_GOS_OCPR_UOL" else "OCPR"
    plan = Plan()
    lo, hi = req.start.strftime("%Y%m%d"), req.end.strftime("%Y%m%d")
    for year in range(req.start.year, (req.end - timedelta(days=1)).year + 1):
        listing = f"{url.rstrip('/')}/{year}/"
        for name, furl in _listing_names(http.get_text(listing), listing):
            m = _CCI_NAME.match(name)
            if not m or m.group(1) != gas or not m.group(2).endswith(algo) or not lo <= m.group(3) < hi:
                continue
            plan.files.append(
                FileSpec(
                    source="cci_ghg",
                    url=furl,
                    relpath=f"cci_ghg/{product}/{version or 'any'}/{name}",
                    size=http.head_size(furl),
                    check="l2",
                    role=f"granule:{gas}",
                )
            )
    plan.notes.append(
        f"cci_ghg {product}: one global file per day, so the box selects nothing; "
        f"{len(plan.files)} day file(s) in {req.start}..{req.end - timedelta(days=1)}"
    )
    return plan


# --------------------------------------------------------------------------- NASA Earthdata (earthaccess)

#: CMR short names of the Lite products (GES DISC) and their file-name rule (L2_FORMATS.md a.).
LITE_PRODUCTS: dict[str, tuple[str, str]] = {
    "acos_lite": ("ACOS_L2_Lite_FP", r"^acos_LtCO2_(\d{6})_.*\.nc4$"),
    "oco2_lite": ("OCO2_L2_Lite_FP", r"^oco2_LtCO2_(\d{6})_B(\d+)\w*_(\d{12})s\.nc4$"),
    "oco3_lite": ("OCO3_L2_Lite_FP", r"^oco3_LtCO2_(\d{6})_B(\d+)\w*_(\d{12})s\.nc4$"),
}


def _plan_lite(req: Request, http: HttpClient) -> Plan:
    from gosat_pipeline.fetch.earthdata import search_lite

    short_name, pattern = LITE_PRODUCTS[req.source]
    rx = re.compile(pattern)
    granules = search_lite(req, short_name)
    best: dict[str, tuple[tuple[str, str], FileSpec]] = {}
    for name, url, size, checksum in granules:
        m = rx.match(name)
        if not m:
            logger.warning("%s: %s does not follow the Lite naming rule; skipped", req.source, name)
            continue
        day = _ymd("20" + m.group(1))
        if not req.start <= day < req.end:
            continue
        build = re.search(r"_B(\d+)", name)
        stamp = re.search(r"_(\d{12})s", name)
        rank = (build.group(1).zfill(6) if build else "", stamp.group(1) if stamp else "")
        spec = FileSpec(
            source=req.source,
            url=url,
            relpath=f"{req.source}/{name}",
            size=size,
            checksum=checksum,
            check="l2",
            role="granule:CO2",
            credential="earthdata",
        )
        if m.group(1) not in best or rank > best[m.group(1)][0]:
            best[m.group(1)] = (rank, spec)
    plan = Plan(files=[best[k][1] for k in sorted(best)])
    plan.notes.append(
        f"{req.source} ({short_name}): CMR search by period and box; {len(plan.files)} day file(s), "
        "the newest build kept where a day has several"
    )
    return plan


# --------------------------------------------------------------------------- NIES GOSAT

#: GU monthly tarballs of the NIES GOSAT Data Archive Service and their default versions
#: (those used by briardew/xtralite ``acquire/nies.py``; the version changed in June 2020).
NIES_PRODUCTS = {"CO2": ("SWIRL2CO2", "V02.97", "V02.98"), "CH4": ("SWIRL2CH4", "V02.95", "V02.96")}


def _plan_nies(req: Request, http: HttpClient) -> Plan:
    gas = req.gas or "CO2"
    tag, v_old, v_new = NIES_PRODUCTS[gas]
    base = req.opt("base_url", "https://data2.gosat.nies.go.jp").rstrip("/")
    code = "C01S" if gas == "CO2" else "C02S"
    plan = Plan()
    for year, month in _months(req.start, req.end):
        version = req.opt("version", v_old if (year, month) < (2020, 6) else v_new)
        name = f"{tag}_{year}{month:02d}_{version}.tar"
        first = max(req.start, date(year, month, 1))
        nxt = date(year + month // 12, month % 12 + 1, 1)
        last = min(req.end, nxt)
        plan.files.append(
            FileSpec(
                source="nies_gosat",
                url=f"{base}/wgetdata/GU/{tag}/{year}/{name}",
                relpath=f"nies_gosat/{tag}/{version}/{name}",
                check="tar",
                role=f"granule:{gas}",
                credential="nies",
                extract={
                    "pattern": rf"^GOSATTFTS(\d{{8}})_02{code}V\d{{4}}R\d{{6}}GU000\.h5$",
                    "start": first.strftime("%Y%m%d"),
                    "end": last.strftime("%Y%m%d"),
                },
            )
        )
    plan.notes.append(
        f"nies_gosat {tag}: monthly tarballs (global daily files inside); the days of the period "
        "are extracted next to them"
    )
    return plan


# --------------------------------------------------------------------------- NIES GOSAT-2 (SFTP)

#: The GOSAT-2 Product Archive's SFTP root of the standard products; the TANSO-FTS-2 SWIR L2
#: files are in ``FTS-2_L2/<product>/<version>/<yyyy>/`` (the archive's "Direct SFTP access"
#: page), one global file a day named ``GOSAT2TFTS2<yyyymmdd>_02<product>V<10 digits>.h5``
#: (L2_FORMATS.md c.2; pynadc ``gosat2/db_l2.py``; xtralite ``acquire/nies.py``).
GOSAT2_BASE = "sftp://prdct.gosat-2.nies.go.jp/pub/releaseData/standardProduct"
#: SWFP: column-averaged dry-air mole fractions (full physics: XCO2, XCH4, XCO); SWPR:
#: chlorophyll fluorescence and proxy-method XCH4.
GOSAT2_PRODUCTS = {"SWFP": "full-physics XCO2, XCH4 and XCO", "SWPR": "proxy XCH4 and SIF"}
_GOSAT2_NAME = re.compile(r"^GOSAT2TFTS2(\d{8})_02(SWFP|SWPR)V(\d{10})\.h5$")


def gosat2_version(version: str) -> str:
    """The archive's four-digit version folder: ``0220`` from ``0220``, ``02.20``, ``v2.20`` or ``V02.20r``."""
    s = str(version).strip().lstrip("vV").rstrip("r")
    if re.fullmatch(r"\d{4}", s):
        return s
    m = re.fullmatch(r"(\d{1,2})\.(\d{1,2})", s)
    if not m:
        raise FetchError(f"nies_gosat2: version {version!r} is not a product version such as 0220 or 02.20")
    return f"{int(m.group(1)):02d}{int(m.group(2)):02d}"


def _plan_gosat2(req: Request, http: HttpClient) -> Plan:
    from gosat_pipeline.fetch.sftp import RemoteNotFound, login_client, sftp_address

    gas = req.gas or "CO2"
    product = str(req.opt("product", "SWFP")).upper()
    if product not in GOSAT2_PRODUCTS:
        raise FetchError(f"nies_gosat2: unknown product {product!r}; choose one of {sorted(GOSAT2_PRODUCTS)}")
    base = req.opt("base_url", GOSAT2_BASE).rstrip("/")
    _, _, root = sftp_address(base)
    folder = f"{root.rstrip('/')}/FTS-2_L2/{product}"
    plan = Plan()
    with login_client(base, "gosat2", retries=http.retries, backoff=http.backoff) as sftp:
        version = req.opt("version")
        if version is None:
            found = [e.name for e in sftp.listdir(folder) if e.is_dir and re.fullmatch(r"\d{4}", e.name)]
            if not found:
                raise FetchError(f"nies_gosat2: no version folder under {base}/FTS-2_L2/{product}/")
            version = max(found)
            plan.notes.append(
                f"nies_gosat2 {product}: newest version on the archive, {version} (of {', '.join(found)}); "
                "version: picks another"
            )
        else:
            version = gosat2_version(version)
        lo, hi = req.start.strftime("%Y%m%d"), req.end.strftime("%Y%m%d")
        best: dict[str, tuple[str, FileSpec]] = {}
        for year in range(req.start.year, (req.end - timedelta(days=1)).year + 1):
            ydir = f"{folder}/{version}/{year}"
            try:
                entries = sftp.listdir(ydir)
            except RemoteNotFound:
                years = [e.name for e in sftp.listdir(f"{folder}/{version}") if e.is_dir]
                raise FetchError(
                    f"nies_gosat2: {product} version {version} has no {year} folder on the archive "
                    f"(it has {', '.join(years) or 'none'}); GOSAT-2 data begin in 2019"
                ) from None
            for e in entries:
                m = _GOSAT2_NAME.match(e.name)
                if e.is_dir or not m or m.group(2) != product or not lo <= m.group(1) < hi:
                    continue
                spec = FileSpec(
                    source="nies_gosat2",
                    url=f"{base}/FTS-2_L2/{product}/{version}/{year}/{e.name}",
                    relpath=f"nies_gosat2/{product}/{version}/{e.name}",
                    size=e.size,
                    check="hdf5",
                    role=f"granule:{gas}",
                    credential="gosat2",
                )
                if m.group(1) not in best or m.group(3) > best[m.group(1)][0]:
                    best[m.group(1)] = (m.group(3), spec)
    plan.files = [best[k][1] for k in sorted(best)]
    plan.notes.append(
        f"nies_gosat2 {product} ({GOSAT2_PRODUCTS[product]}): SFTP listing; one global file per day, "
        f"so the box selects nothing; {len(plan.files)} day file(s) in "
        f"{req.start}..{req.end - timedelta(days=1)}, the highest file version kept where a day has "
        "several; checked as complete HDF5 (the reader's layout is unconfirmed on a real file)"
    )
    return plan


# --------------------------------------------------------------------------- TROPOMI

_S5P_NAME = re.compile(
    r"^S5P_(OFFL|RPRO|NRTI|BLND)_L2__CH4____(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{5})_(\d{2})_(\d{6})_"
    r"(\d{8}T\d{6})\.nc$"
)


def overpass_longitude(start: datetime, end: datetime) -> float:
    """Longitude (degrees east) where an S5P orbit file's daytime track crosses the equator.

    S5P is sun-synchronous with its ascending node at 13:30 local solar time, and an orbit
    file runs from one spacecraft midnight to the next, so the daytime equator crossing
    falls about 52 % into the file (measured on the real orbit 07293 in
    ``shared/real_samples``: start 10:16:55, 12 N at 11:12:39). Local solar time 13:30
    at UTC ``t`` is longitude 15 (13.5 - t) degrees.
    """
    t_eq = start + (end - start) * 0.52
    hours = t_eq.hour + t_eq.minute / 60 + t_eq.second / 3600
    return (15.0 * (13.5 - hours) + 180.0) % 360.0 - 180.0


def _overpass_hits(name_start: str, name_end: str, bbox: tuple[float, float, float, float]) -> bool:
    """Conservative: the track's equator longitude within the box widened by the track drift
    (12 degrees), the half swath (1300 km, 11.7/cos(lat) degrees) and a 10 degree margin."""
    w, s, e, n = bbox
    if e - w >= 300:
        return True
    lat = min(75.0, max(abs(s), abs(n)))
    margin = 12.0 + 11.7 / math.cos(math.radians(lat)) + 10.0
    lon = overpass_longitude(
        datetime.strptime(name_start, "%Y%m%dT%H%M%S"), datetime.strptime(name_end, "%Y%m%dT%H%M%S")
    )
    centre, half = (w + e) / 2, (e - w) / 2 + margin
    return abs((lon - centre + 180.0) % 360.0 - 180.0) <= half


def _s5p_select(
    req: Request,
    objects: list[tuple[str, int, str]],
    base: str,
    source: str,
    check: str = "l2",
    variables: tuple[str, ...] = (),
) -> Plan:
    plan = Plan()
    use_box = bool(req.opt("overpass_filter", True))
    lo = datetime.combine(req.start, datetime.min.time())
    hi = datetime.combine(req.end, datetime.min.time())
    dropped = 0
    for key, size, _etag in objects:
        name = key.rsplit("/", 1)[-1]
        m = _S5P_NAME.match(name)
        if not m:
            continue
        t0, t1 = (datetime.strptime(x, "%Y%m%dT%H%M%S") for x in (m.group(2), m.group(3)))
        if t1 < lo or t0 >= hi:
            continue
        if use_box and not _overpass_hits(m.group(2), m.group(3), req.bbox):
            dropped += 1
            continue
        plan.files.append(
            FileSpec(
                source=source,
                url=f"{base.rstrip('/')}/{key}",
                relpath=f"{source}/{name}",
                size=size,
                check=check,
                role="granule:CH4",
                variables=variables,
            )
        )
    plan.notes.append(
        f"{source}: {len(plan.files)} orbit file(s); {dropped} more in the period whose daytime "
        "overpass misses the box (overpass_filter: false keeps them)"
    )
    return plan


def _plan_tropomi(req: Request, http: HttpClient) -> Plan:
    base = req.opt("base_url", "https://meeo-s5p.s3.amazonaws.com")
    stream = req.opt("stream", "OFFL")
    if stream not in ("OFFL", "RPRO", "NRTI"):
        raise FetchError(f"tropomi_ch4: stream {stream!r} is not OFFL, RPRO or NRTI")
    objects: list[tuple[str, int, str]] = []
    for d in _days(req.start - timedelta(days=1), req.end):
        objects += _s3_list(http, base, f"{stream}/L2__CH4___/{d:%Y/%m/%d}/")
    plan = _s5p_select(req, objects, base, "tropomi_ch4")
    plan.files.sort(key=lambda f: f.relpath)
    return plan


def _plan_blended(req: Request, http: HttpClient) -> Plan:
    base = req.opt("base_url", "https://blended-tropomi-gosat-methane.s3.us-west-2.amazonaws.com")
    objects: list[tuple[str, int, str]] = []
    for year, month in _months(req.start - timedelta(days=1), req.end):
        objects += _s3_list(http, base, f"data/{year}-{month:02d}/")
    # checked with the package's own reader of the flat blended layout (io.tropomi_blended)
    plan = _s5p_select(req, objects, base, "tropomi_blended", "l2", ())
    plan.files.sort(key=lambda f: f.relpath)
    return plan


# --------------------------------------------------------------------------- inventories and totals

EDGAR_LAST_YEAR = {"v8.0": 2022}


def _plan_edgar(req: Request, http: HttpClient) -> Plan:
    gas = req.gas or "CH4"
    version = req.opt("version", "v8.0")
    sector = req.opt("product", "TOTALS")
    year = int(req.opt("year", (req.end - timedelta(days=1)).year))
    plan = Plan()
    url = req.opt("url")
    if url is None:
        if version != "v8.0":
            raise FetchError(f"edgar: version {version!r} has no built-in layout; give url: (the zip as published)")
        if year > EDGAR_LAST_YEAR[version]:
            plan.notes.append(f"edgar {version} ends in {EDGAR_LAST_YEAR[version]}; using that year for {year}")
            year = EDGAR_LAST_YEAR[version]
        base = req.opt("base_url", "https://jeodpp.jrc.ec.europa.eu/ftp/jrc-opendata").rstrip("/")
        name = f"v8.0_FT2022_GHG_{gas}_{year}_{sector}_flx_nc.zip"
        url = f"{base}/EDGAR/datasets/v80_FT2022_GHG/{gas}/{sector}/flx_nc/{name}"
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    plan.files.append(
        FileSpec(
            source="edgar",
            url=url,
            relpath=f"edgar/{name}",
            size=http.head_size(url),
            check="zip",
            role=f"prior:{gas}",
            extract={"pattern": r"\.nc$", "check": "netcdf"},
        )
    )
    plan.notes.append(
        f"edgar: {name} kept as published; its netCDF is extracted next to it for gases[{gas}].prior.path"
    )
    return plan


def _plan_primap(req: Request, http: HttpClient) -> Plan:
    import json

    record = str(req.opt("record", "15016289"))
    base = req.opt("base_url", "https://zenodo.org").rstrip("/")
    pattern = req.opt("file_pattern", "*_final_no_rounding_*.csv")
    text = http.get_text(f"{base}/api/records/{record}")
    try:
        files = json.loads(text)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"primap_hist: Zenodo record {record} has no file list ({exc})") from None
    plan = Plan()
    names = []
    for f in files:
        name = f.get("key") or f.get("filename", "")
        names.append(name)
        if not fnmatch.fnmatch(name, pattern):
            continue
        url = (f.get("links") or {}).get("self") or f"{base}/records/{record}/files/{name}"
        checksum = f.get("checksum")
        plan.files.append(
            FileSpec(
                source="primap_hist",
                url=url,
                relpath=f"primap_hist/{record}/{name}",
                size=f.get("size"),
                checksum=checksum if checksum and ":" in checksum else None,
                check="csv" if name.endswith(".csv") else "netcdf",
                role="reported",
            )
        )
    if not plan.files:
        raise FetchError(f"primap_hist: no file of Zenodo record {record} matches {pattern!r}; it has {names}")
    plan.notes.append(f"primap_hist: Zenodo record {record} (versioned; md5 and size as published)")
    return plan


def _plan_url(source: str, default: str | None, role: str) -> Planner:
    def planner(req: Request, http: HttpClient) -> Plan:
        url = req.opt("url", default)
        if url is None:
            raise FetchError(f"{source}: give url: (the workbook's address on the UNFCCC submission page)")
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "download"
        check = "xlsx" if name.lower().endswith((".xlsx", ".xlsm")) else "zip" if name.endswith(".zip") else "csv"
        size = http.head_size(url)
        return Plan(
            files=[FileSpec(source=source, url=url, relpath=f"{source}/{name}", size=size, check=check, role=role)]
        )

    return planner


def _plan_era5(req: Request, http: HttpClient) -> Plan:
    from gosat_pipeline.fetch.cds import era5_plan

    return era5_plan(req)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "cci_ghg",
            "ESA CCI / C3S GOSAT L2 (CEDA archive, public HTTPS)",
            _plan_cci,
            None,
            "product, version, url, base_url",
        ),
        Source(
            "acos_lite",
            "NASA ACOS GOSAT Lite XCO2 (GES DISC via earthaccess)",
            _plan_lite,
            "earthdata",
            "version, base_url (CMR search URL)",
        ),
        Source(
            "oco2_lite",
            "NASA OCO-2 Lite XCO2 (GES DISC via earthaccess)",
            _plan_lite,
            "earthdata",
            "version, base_url (CMR search URL)",
        ),
        Source(
            "oco3_lite",
            "NASA OCO-3 Lite XCO2 (GES DISC via earthaccess)",
            _plan_lite,
            "earthdata",
            "version, base_url (CMR search URL)",
        ),
        Source(
            "nies_gosat",
            "NIES GOSAT TANSO-FTS SWIR L2 (GOSAT Data Archive Service, login)",
            _plan_nies,
            "nies",
            "gas, version, base_url",
        ),
        Source(
            "nies_gosat2",
            "NIES GOSAT-2 TANSO-FTS-2 SWIR L2 (GOSAT-2 Product Archive, SFTP, login)",
            _plan_gosat2,
            "gosat2",
            "gas, product (SWFP or SWPR), version, base_url (sftp://...)",
        ),
        Source(
            "tropomi_ch4",
            "Sentinel-5P TROPOMI CH4 L2 (public S3 bucket meeo-s5p)",
            _plan_tropomi,
            None,
            "stream (OFFL/RPRO), overpass_filter, base_url",
        ),
        Source(
            "tropomi_blended",
            "Blended TROPOMI+GOSAT CH4 (public S3 bucket)",
            _plan_blended,
            None,
            "overpass_filter, base_url",
        ),
        Source(
            "edgar",
            "EDGAR gridded emissions v8.0, zip as published (JRC)",
            _plan_edgar,
            None,
            "gas, year, product (sector, TOTALS), version, url, base_url",
        ),
        Source(
            "primap_hist",
            "PRIMAP-hist national totals (versioned Zenodo record)",
            _plan_primap,
            None,
            "record, file_pattern, base_url",
        ),
        Source(
            "oco2_mip",
            "OCO-2 v10 MIP pilot national CO2 budgets (CEOS)",
            _plan_url("oco2_mip", "https://ceos.org/gst/files/pilot_topdown_CO2_Budget_countries_v1.csv", "reference"),
            None,
            "url",
        ),
        Source(
            "unfccc", "UNFCCC CRF/CRT workbook (the URL you give)", _plan_url("unfccc", None, "reported"), None, "url"
        ),
        Source(
            "era5",
            "ERA5 winds u, v 1000-850 hPa and boundary-layer height (Copernicus CDS via cdsapi)",
            _plan_era5,
            "cds",
            "base_url (CDS API URL, default from CDSAPI_URL or ~/.cdsapirc)",
        ),
    )
}


def plan_request(req: Request, http: HttpClient) -> Plan:
    """The plan of one source for one request.

    Raises
    ------
    FetchError
        Unknown source, bad options, or the archive listing failed.
    """
    src = SOURCES.get(req.source)
    if src is None:
        raise FetchError(f"unknown source {req.source!r}; known: {', '.join(SOURCES)}")
    plan = src.planner(req, http)
    logger.info("plan %s: %d file(s)", req.source, len(plan.files))
    return plan


def describe_sources() -> list[tuple[str, str, str]]:
    """(name, title, options) of every source."""
    return [(s.name, s.title, s.options) for s in SOURCES.values()]
