"""gosat-pipeline fetch against an archive served on 127.0.0.1 (tests/fetch_archive.py): never the network.

The official clients run for real: earthaccess searches the loopback CMR endpoint and logs
in from EARTHDATA_TOKEN; cdsapi (ecmwf-datastores) submits, polls and downloads from the
loopback CDS retrieve API; NIES credentials come from a ~/.netrc file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import yaml
from fetch_archive import Archive, netcdf_bytes, tar_bytes, zip_bytes

from gosat_pipeline import fetch as gf
from gosat_pipeline.fetch import FileSpec, Plan
from gosat_pipeline.testing import granule_filename, granule_soundings, write_granule

ROOT = Path(__file__).resolve().parents[1]
JAN = (date(2020, 1, 1), date(2020, 2, 1))
ASEAN = (90.0, -12.0, 142.0, 30.0)


@pytest.fixture
def archive() -> Archive:
    a = Archive()
    a.start()
    yield a
    a.stop()


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the user's real credentials."""
    for var in ("EARTHDATA_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD", "GOSAT_DAS_USERNAME",
                "GOSAT_DAS_PASSWORD", "CDSAPI_URL", "CDSAPI_KEY", "GOSAT_PIPELINE_EDL_HOST"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("CDSAPI_RC", str(tmp_path / "no-cdsapirc"))


_GRANULES: dict[tuple[str, str, str], bytes] = {}


def granule(fmt: str, day: str, tmp_path: Path, gas: str | None = None, name: str | None = None) -> bytes:
    """Bytes of a synthetic granule in ``fmt``'s real layout (cached per format and day)."""
    key = (fmt, day, gas or "")
    if key not in _GRANULES:
        ds = granule_soundings(fmt, 40, gas, seed=int(day.replace("-", "")) % 1000, start=day)
        p = write_granule(ds, tmp_path / "src" / (name or granule_filename(fmt, day, gas=gas)), fmt)
        _GRANULES[key] = p.read_bytes()
    return _GRANULES[key]


def gets(a: Archive, prefix: str) -> int:
    return sum(1 for m, p, _ in a.log if m == "GET" and p.startswith(prefix))


# --------------------------------------------------------------------------- HTTP engine on a CEDA-like archive

CCI_DIR = "/ceda/neodc/esacci/ghg/data/crdp_4/GOSAT/CH4_GOS_OCPR/v7.0/2020/"


def _serve_cci(a: Archive, tmp_path: Path, days: int = 4) -> list[str]:
    names = []
    for d in range(1, days + 2):
        day = f"2020-01-{d:02d}"
        name = granule_filename("cci_ocpr", day)
        a.add(CCI_DIR + name, granule("cci_ocpr", day, tmp_path))
        names.append(name)
    a.add(CCI_DIR + "ESACCI-GHG-L2-CO2-GOSAT-OCFP-20200101-fv7.3.nc", b"another product")
    a.add(CCI_DIR + "README.txt", b"not a granule")
    return names


def test_plan_selects_days_by_file_name_and_lists_sizes(archive: Archive, tmp_path: Path) -> None:
    names = _serve_cci(archive, tmp_path)
    plan = gf.plan_source("cci_ghg", date(2020, 1, 2), date(2020, 1, 5), ASEAN, base_url=archive.url + "/ceda/neodc")
    assert [f.name for f in plan.files] == names[1:4]  # 2, 3, 4 January; not the 1st, the 5th, CO2 or README
    assert all(f.size == len(archive.files[CCI_DIR + f.name]) for f in plan.files)
    assert all(f.relpath.startswith("cci_ghg/CH4_GOS_OCPR/v7.0/") and f.check == "l2" for f in plan.files)


def test_fetch_retries_resumes_records_then_does_nothing_and_replaces_corrupt(archive: Archive, tmp_path: Path) -> None:
    names = _serve_cci(archive, tmp_path)
    plan = gf.plan_source("cci_ghg", date(2020, 1, 1), date(2020, 1, 4), ASEAN, base_url=archive.url + "/ceda/neodc")
    archive.faults[CCI_DIR + names[0]] = ["500"]  # a 500 that succeeds on retry
    archive.faults[CCI_DIR + names[1]] = ["truncate"]  # the first response stops half-way
    cache = tmp_path / "cache"
    report = gf.fetch(plan, cache, workers=3, backoff=0.01)
    assert sorted(report.downloaded) == sorted(f.relpath for f in plan.files) and not report.failed
    for f in plan.files:
        assert (cache / f.relpath).read_bytes() == archive.files[CCI_DIR + f.name]
    assert len(archive.requests_for(CCI_DIR + names[0])) == 2
    assert len(archive.requests_for(CCI_DIR + names[1])) == 2  # the cut transfer was taken up again
    index = json.loads((cache / "fetch-index.json").read_text())["files"]
    rec = index[plan.files[1].relpath]
    assert rec["url"] == archive.url + CCI_DIR + names[1]
    assert rec["sha256"] == hashlib.sha256(archive.files[CCI_DIR + names[1]]).hexdigest()
    assert rec["retrieved"].endswith("+00:00") and rec["how"] == "downloaded"
    assert not any((cache / ".partial").rglob("*.nc"))

    # a second fetch downloads nothing
    before = gets(archive, CCI_DIR)
    again = gf.fetch(plan, cache, backoff=0.01)
    assert gets(archive, CCI_DIR) == before
    assert sorted(again.cached) == sorted(f.relpath for f in plan.files) and not again.downloaded

    # a corrupt cached file (same size, garbage inside) is detected, removed and fetched again
    bad = cache / plan.files[2].relpath
    n = bad.stat().st_size
    bad.write_bytes(b"\0" * n)
    third = gf.fetch(plan, cache, backoff=0.01)
    assert third.replaced == [plan.files[2].relpath]
    assert bad.read_bytes() == archive.files[CCI_DIR + names[2]]


def test_a_transfer_cut_half_way_resumes_with_a_range_request(archive: Archive, tmp_path: Path) -> None:
    data = b"area,year,value\n" + b"".join(f"THA,{y},{y * 0.25:.4f}\n".encode() for y in range(60000))
    url = archive.add("/files/long.csv", data, "truncate")
    spec = FileSpec(source="unfccc", url=url, relpath="unfccc/long.csv", size=len(data), check="csv")
    report = gf.fetch(Plan(files=[spec]), tmp_path / "c", backoff=0.01)
    assert report.downloaded == ["unfccc/long.csv"]
    assert (tmp_path / "c" / "unfccc" / "long.csv").read_bytes() == data
    first, second = archive.requests_for("/files/long.csv")
    assert "Range" not in first
    start = int(second["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= len(data) // 2  # only the rest was asked for
    assert second["If-Range"].startswith('"')  # and only if the file is still the same


def test_wrong_published_size_and_checksum_are_reported(archive: Archive, tmp_path: Path) -> None:
    data = b"area,year,value\nTHA,2020,1.0\n"
    url = archive.add("/files/totals.csv", data)
    wrong_size = FileSpec(source="unfccc", url=url, relpath="unfccc/totals.csv", size=len(data) + 10, check="csv")
    with pytest.raises(gf.FetchError, match=r"truncated: 29 bytes, the archive lists 39"):
        gf.fetch(Plan(files=[wrong_size]), tmp_path / "c1", backoff=0.01)
    assert not (tmp_path / "c1" / "unfccc" / "totals.csv").exists()
    wrong_md5 = FileSpec(source="unfccc", url=url, relpath="unfccc/totals.csv", checksum="md5:" + "0" * 32, check="csv")
    with pytest.raises(gf.FetchError, match="does not match the published"):
        gf.fetch(Plan(files=[wrong_md5]), tmp_path / "c2", backoff=0.01)
    assert len(archive.requests_for("/files/totals.csv")) == 4  # each fetched twice, then reported


def test_truncated_granule_fails_the_open_check(archive: Archive, tmp_path: Path) -> None:
    data = granule("cci_ocpr", "2020-01-01", tmp_path)
    url = archive.add("/files/g.nc", data[: len(data) // 3])  # the archive itself holds a cut file
    spec = FileSpec(source="cci_ghg", url=url, relpath=f"cci_ghg/{granule_filename('cci_ocpr', '2020-01-01')}",
                    check="l2", role="granule:CH4")  # fmt: skip
    with pytest.raises(gf.FetchError, match="does not open as an L2 granule"):
        gf.fetch(Plan(files=[spec]), tmp_path / "c", backoff=0.01)


def test_resume_after_a_killed_download(archive: Archive, tmp_path: Path) -> None:
    data = b"".join(f"THA,{y},{v:.6f}\n".encode() for y in range(4000) for v in (y * 0.5,))
    archive.slow_delay = 0.02
    url = archive.add("/files/big.csv", b"area,year,value\n" + data, "slow")
    full = archive.files["/files/big.csv"]
    plan = Plan(files=[FileSpec(source="unfccc", url=url, relpath="unfccc/big.csv", size=len(full), check="csv")])
    (tmp_path / "plan.json").write_text(plan.to_json())
    cache = tmp_path / "cache"
    part = cache / ".partial" / "unfccc" / "big.csv"
    proc = subprocess.Popen([sys.executable, "-m", "gosat_pipeline.cli", "-q", "fetch", "--from-plan",
                             str(tmp_path / "plan.json"), "--out", str(cache)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 16384) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    have = part.stat().st_size
    assert 16384 < have < len(full)
    archive.faults["/files/big.csv"] = []  # full speed now
    report = gf.fetch(plan, cache, backoff=0.01)
    assert report.downloaded == ["unfccc/big.csv"]
    assert (cache / "unfccc" / "big.csv").read_bytes() == full
    ranges = [h.get("Range") for h in archive.requests_for("/files/big.csv")]
    assert ranges[-1] == f"bytes={have}-"


# --------------------------------------------------------------------------- TROPOMI and blended: S3 listings


def _s5p(stream: str, start: str, end: str, orbit: int) -> str:
    return f"S5P_{stream}_L2__CH4____{start}_{end}_{orbit:05d}_03_020400_20200110T000000.nc"


def test_tropomi_lists_the_bucket_and_keeps_orbits_that_see_the_box(archive: Archive, tmp_path: Path) -> None:
    archive.s3_page = 2  # exercise the continuation tokens
    day = "2020/01/01"
    seen = _s5p("OFFL", "20200101T044000", "20200101T062130", 11560)  # crosses the equator near 05:33 UTC, 121 E
    unseen = _s5p("OFFL", "20200101T164000", "20200101T182130", 11567)  # near 17:33 UTC, 61 W
    late = _s5p("OFFL", "20191231T231000", "20200101T005130", 11557)  # ends on the 1st: in the period, 36 W
    outside = _s5p("OFFL", "20200102T044000", "20200102T062130", 11574)
    payload = granule("tropomi_ch4", "2020-01-01", tmp_path, name=seen)
    for name, prefix in ((seen, day), (unseen, day), (late, "2019/12/31"), (outside, "2020/01/02")):
        archive.add(f"/s3/meeo/OFFL/L2__CH4___/{prefix}/{name}", payload)
    archive.add(f"/s3/meeo/RPRO/L2__CH4___/{day}/{_s5p('RPRO', '20200101T044000', '20200101T062130', 11560)}", payload)
    base = archive.url + "/s3/meeo"
    plan = gf.plan_source("tropomi_ch4", date(2020, 1, 1), date(2020, 1, 2), ASEAN, base_url=base)
    assert [f.name for f in plan.files] == [seen]
    assert plan.files[0].size == len(payload)
    everything = gf.plan_source("tropomi_ch4", date(2020, 1, 1), date(2020, 1, 2), ASEAN, base_url=base,
                                overpass_filter=False)  # fmt: skip
    assert sorted(f.name for f in everything.files) == sorted([seen, unseen, late])
    report = gf.fetch(plan, tmp_path / "cache", backoff=0.01)
    assert report.downloaded == [f"tropomi_ch4/{seen}"]


def test_overpass_rule_on_the_real_orbit_07293() -> None:
    """The real subset in shared/real_samples covers 10 W-20 E, 0-30 N: the rule must keep its orbit."""
    from gosat_pipeline.fetch.sources import _overpass_hits

    assert _overpass_hits("20190311T101655", "20190311T115825", (-10.0, 0.0, 20.0, 30.0))
    assert not _overpass_hits("20190311T101655", "20190311T115825", (-130.0, 0.0, -100.0, 30.0))


def test_blended_month_folders(archive: Archive) -> None:
    name = "S5P_BLND_L2__CH4____20200115T044000_20200115T062130_11760_03_020400_20230614T000922.nc"
    data = netcdf_bytes({"methane_mixing_ratio_blended": (("nobs",), np.ones(3, "f4"))}, {})
    archive.add(f"/s3/blnd/data/2020-01/{name}", data)
    archive.add("/s3/blnd/data/2020-02/" + name.replace("20200115", "20200215"), data)
    plan = gf.plan_source("tropomi_blended", *JAN, ASEAN, base_url=archive.url + "/s3/blnd")
    assert [f.name for f in plan.files] == [name]
    assert plan.files[0].variables == ("methane_mixing_ratio_blended",)


# --------------------------------------------------------------------------- NASA Earthdata through earthaccess


def _cmr_item(short: str, name: str, day: str, url: str, data: bytes) -> dict:
    return {
        "meta": {"concept-id": f"G-{name}", "provider-id": "GES_DISC", "native-id": name},
        "umm": {
            "GranuleUR": name,
            "CollectionReference": {"ShortName": short, "Version": "11r"},
            "TemporalExtent": {"RangeDateTime": {"BeginningDateTime": f"{day}T00:00:00Z",
                                                 "EndingDateTime": f"{day}T23:59:59Z"}},  # fmt: skip
            "DataGranule": {"ArchiveAndDistributionInformation": [
                {"Name": name, "SizeInBytes": len(data), "Checksum": {"Value": hashlib.md5(data).hexdigest(),
                                                                      "Algorithm": "MD5"}}]},  # fmt: skip
            "RelatedUrls": [{"URL": url, "Type": "GET DATA"}],
        },
    }


def _serve_lite(a: Archive, tmp_path: Path) -> dict[str, bytes]:
    served = {}
    for day, build in (("2020-01-01", "B11100Ar_230603215457s"), ("2020-01-02", "B11100Ar_230603215457s"),
                       ("2020-01-02", "B10206Ar_200729175909s"), ("2020-01-03", "B11100Ar_230603215457s")):  # fmt: skip
        name = f"oco2_LtCO2_{day[2:].replace('-', '')}_{build}.nc4"
        data = granule("oco2_lite", day, tmp_path, name=granule_filename("oco2_lite", day))
        url = a.add(f"/gesdisc/data/OCO2_DATA/OCO2_L2_Lite_FP.11r/2020/{name}", data)
        a.cmr.append(_cmr_item("OCO2_L2_Lite_FP", name, day, url, data))
        served[name] = data
    a.auth["/gesdisc/"] = ("bearer", "edl-token-0123456789")
    return served


def test_lite_search_through_earthaccess_and_token_login(archive: Archive, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    served = _serve_lite(archive, tmp_path)
    cmr = archive.url + "/cmr/search/"
    plan = gf.plan_source("oco2_lite", date(2020, 1, 1), date(2020, 1, 3), ASEAN, base_url=cmr)
    names = [f.name for f in plan.files]
    assert names == ["oco2_LtCO2_200101_B11100Ar_230603215457s.nc4", "oco2_LtCO2_200102_B11100Ar_230603215457s.nc4"]
    assert all(f.checksum and f.checksum.startswith("md5:") and f.credential == "earthdata" for f in plan.files)
    searches = [p for m, p, _ in archive.log if p.startswith("/cmr/search/granules.umm_json")]
    assert searches and "short_name=OCO2_L2_Lite_FP" in searches[0] and "bounding_box" in searches[0]

    with pytest.raises(gf.CredentialError) as info:
        gf.fetch(plan, tmp_path / "cache", backoff=0.01)
    msg = str(info.value)
    assert "\n" not in msg and "EARTHDATA_TOKEN" in msg and "machine urs.earthdata.nasa.gov" in msg

    monkeypatch.setenv("EARTHDATA_TOKEN", "wrong-token-xyz")
    with pytest.raises(gf.CredentialError, match="refused access"):
        gf.fetch(plan, tmp_path / "cache", backoff=0.01)

    monkeypatch.setenv("EARTHDATA_TOKEN", "edl-token-0123456789")
    report = gf.fetch(plan, tmp_path / "cache", backoff=0.01)
    assert len(report.downloaded) == 2
    for f in plan.files:
        assert (tmp_path / "cache" / f.relpath).read_bytes() == served[f.name]
        idx = gf.Cache(tmp_path / "cache").entry(f.relpath)
        assert idx["published_checksum"] == f.checksum
    text = (tmp_path / "cache" / "fetch-index.json").read_text()
    assert "edl-token-0123456789" not in text


# --------------------------------------------------------------------------- NIES GOSAT: login from ~/.netrc


def test_nies_monthly_tar_with_netrc_login(archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = {}
    for d in (1, 2, 3):
        day = f"2020-01-{d:02d}"
        name = granule_filename("nies_gosat_l2", day, gas="CO2")
        members[f"SWIRL2CO2/{name}"] = granule("nies_gosat_l2", day, tmp_path, gas="CO2")
    archive.add("/gdas/wgetdata/GU/SWIRL2CO2/2020/SWIRL2CO2_202001_V02.97.tar", tar_bytes(members))
    archive.auth["/gdas/"] = ("basic", "user@example.org", "nies-pass-4567")
    plan = gf.plan_source("nies_gosat", date(2020, 1, 2), date(2020, 1, 4), ASEAN, gas="CO2",
                          base_url=archive.url + "/gdas")  # fmt: skip
    assert [f.name for f in plan.files] == ["SWIRL2CO2_202001_V02.97.tar"]
    with pytest.raises(gf.CredentialError, match="GOSAT_DAS_USERNAME and GOSAT_DAS_PASSWORD"):
        gf.fetch(plan, tmp_path / "cache", backoff=0.01)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user@example.org password nies-pass-4567\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    gf.fetch(plan, tmp_path / "cache", backoff=0.01)
    folder = tmp_path / "cache" / "nies_gosat" / "SWIRL2CO2" / "V02.97"
    got = sorted(p.name for p in folder.glob("*.h5"))
    assert got == [granule_filename("nies_gosat_l2", f"2020-01-0{d}", gas="CO2") for d in (2, 3)]
    rec = gf.Cache(tmp_path / "cache").entry(f"nies_gosat/SWIRL2CO2/V02.97/{got[0]}")
    assert rec["how"] == "extracted" and rec["url"].endswith(f".tar#SWIRL2CO2/{got[0]}")
    assert "nies-pass-4567" not in (tmp_path / "cache" / "fetch-index.json").read_text()


# --------------------------------------------------------------------------- inventories and totals


def test_edgar_zip_primap_zenodo_oco2mip_unfccc(archive: Archive, tmp_path: Path) -> None:
    nc = netcdf_bytes({"fluxes": (("lat", "lon"), np.ones((2, 3), "f4"), {"units": "kg m-2 s-1"})},
                      {"lat": [0.05, 0.15], "lon": [0.05, 0.15, 0.25]})  # fmt: skip
    edgar = "/jrc/EDGAR/datasets/v80_FT2022_GHG/CH4/TOTALS/flx_nc/v8.0_FT2022_GHG_CH4_2020_TOTALS_flx_nc.zip"
    archive.add(edgar, zip_bytes({"v8.0_FT2022_GHG_CH4_2020_TOTALS_flx.nc": nc, "_readme.html": b"<html/>"}))
    primap = "Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_no_rounding_13-Mar-2025.csv"
    archive.add(f"/zenodo/records/15016289/files/{primap}", b"source,scenario (PRIMAP-hist),area (ISO3)\nx,HISTCR,THA\n")
    archive.add("/zenodo/records/15016289/files/Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_13-Mar-2025.csv", b"a,b\n")
    mip = archive.add("/ceos/pilot_topdown_CO2_Budget_countries_v1.csv", b"# header\nAlpha 3 Code,Year\nTHA,2020\n")
    crt = archive.add("/unfccc/THA-CRT-2024-V1.0-2022.xlsx", zip_bytes({"[Content_Types].xml": b"<Types/>"}))
    reqs = [gf.Request("edgar", *JAN, ASEAN, "CH4", {"base_url": archive.url + "/jrc"}),
            gf.Request("primap_hist", *JAN, ASEAN, None, {"base_url": archive.url + "/zenodo"}),
            gf.Request("oco2_mip", *JAN, ASEAN, None, {"url": mip}),
            gf.Request("unfccc", *JAN, ASEAN, None, {"url": crt})]  # fmt: skip
    plan = gf.plan(reqs)
    assert [f.relpath for f in plan.files] == [
        "edgar/v8.0_FT2022_GHG_CH4_2020_TOTALS_flx_nc.zip", f"primap_hist/15016289/{primap}",
        "oco2_mip/pilot_topdown_CO2_Budget_countries_v1.csv", "unfccc/THA-CRT-2024-V1.0-2022.xlsx"]  # fmt: skip
    assert plan.files[1].checksum == "md5:" + hashlib.md5(archive.files[f"/zenodo/records/15016289/files/{primap}"]).hexdigest()
    assert [f.check for f in plan.files] == ["zip", "csv", "csv", "xlsx"]
    report = gf.fetch(plan, tmp_path / "cache", backoff=0.01)
    assert len(report.downloaded) == 4
    extracted = tmp_path / "cache" / "edgar" / "v8.0_FT2022_GHG_CH4_2020_TOTALS_flx.nc"
    assert extracted.read_bytes() == nc  # the zip is kept as published, its netCDF beside it
    assert (tmp_path / "cache" / "edgar" / "v8.0_FT2022_GHG_CH4_2020_TOTALS_flx_nc.zip").is_file()


def test_missing_zenodo_file_names_what_the_record_has(archive: Archive) -> None:
    archive.add("/zenodo/records/7/files/only.nc", b"x")
    with pytest.raises(gf.FetchError, match=r"no file of Zenodo record 7 matches .*only\.nc"):
        gf.plan_source("primap_hist", *JAN, record="7", base_url=archive.url + "/zenodo")


# --------------------------------------------------------------------------- ERA5 through cdsapi


def _era5_payload(dataset: str, request: dict) -> bytes:
    lat = np.array([30.25, 10.0, -12.25])
    lon = np.array([89.75, 110.0, 142.25])
    t = np.array(["2020-01-01T00", "2020-01-01T06"], dtype="datetime64[ns]")
    if dataset.endswith("pressure-levels"):
        lev = np.array([float(x) for x in request["pressure_level"]])
        shape = (len(t), len(lev), len(lat), len(lon))
        return netcdf_bytes({"u": (("valid_time", "pressure_level", "latitude", "longitude"), np.full(shape, 3.0, "f4")),
                             "v": (("valid_time", "pressure_level", "latitude", "longitude"), np.full(shape, -1.0, "f4"))},
                            {"valid_time": t, "pressure_level": lev, "latitude": lat, "longitude": lon})  # fmt: skip
    return netcdf_bytes({"blh": (("valid_time", "latitude", "longitude"), np.full((2, 3, 3), 800.0, "f4"))},
                        {"valid_time": t, "latitude": lat, "longitude": lon})  # fmt: skip


def test_era5_through_cdsapi_asks_only_for_what_the_transport_needs(archive: Archive, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    archive.cds_key = "cds-key-abcdef-123456"
    archive.cds_payload = _era5_payload
    plan = gf.plan_source("era5", date(2020, 1, 1), date(2020, 1, 3), ASEAN)
    assert len(plan.files) == 2
    with pytest.raises(gf.CredentialError, match="CDSAPI_KEY"):
        gf.fetch(plan, tmp_path / "cache", backoff=0.01)
    monkeypatch.setenv("CDSAPI_URL", archive.url + "/cds")
    monkeypatch.setenv("CDSAPI_KEY", "not-the-key-000")
    with pytest.raises(gf.CredentialError, match="refused the API key"):
        gf.fetch(plan, tmp_path / "cache", backoff=0.01, retries=0)
    monkeypatch.setenv("CDSAPI_KEY", archive.cds_key)
    caplog.set_level(logging.DEBUG)
    report = gf.fetch(plan, tmp_path / "cache", backoff=0.01)
    assert sorted(report.downloaded) == sorted(f.relpath for f in plan.files)
    requests = {j["dataset"]: j["request"] for j in archive.cds_jobs.values() if "bytes" in j}
    pl = requests["reanalysis-era5-pressure-levels"]
    assert pl["variable"] == ["u_component_of_wind", "v_component_of_wind"]
    assert pl["pressure_level"] == ["850", "875", "900", "925", "950", "975", "1000"]
    assert pl["day"] == ["01", "02"] and pl["time"] == ["00:00", "06:00", "12:00", "18:00"]
    assert pl["area"] == [30.25, 89.75, -12.25, 142.25]
    assert requests["reanalysis-era5-single-levels"]["variable"] == ["boundary_layer_height"]
    # the files are what gosat_pipeline.winds reads
    from gosat_pipeline.grids import GridSpec
    from gosat_pipeline.winds import open_winds

    w = open_winds(tmp_path / "cache" / "era5", grid=GridSpec.from_resolution(5.0, ASEAN))
    assert float(w["u"].mean()) == pytest.approx(3.0)
    assert archive.cds_key not in caplog.text
    assert archive.cds_key not in (tmp_path / "cache" / "fetch-index.json").read_text()


# --------------------------------------------------------------------------- the CLI: plan of a real one-month run


def _serve_month(a: Archive, tmp_path: Path) -> None:
    uol = "/ceda/neodc/gosat/data/ch4/nceov1.0/CH4_GOS_OCPR/2020/"
    for d in range(1, 32):
        a.add(uol + f"UoL-GHG-L2-CH4-GOSAT-OCPR-202001{d:02d}-fv9.0.nc", b"x" * 10)
    a.add(uol + "UoL-GHG-L2-CH4-GOSAT-OCPR-20200201-fv9.0.nc", b"x")
    for short, sensor in (("ACOS_L2_Lite_FP", "acos"), ("OCO2_L2_Lite_FP", "oco2"), ("OCO3_L2_Lite_FP", "oco3")):
        for d in range(1, 32):
            day = f"2020-01-{d:02d}"
            name = (f"acos_LtCO2_2001{d:02d}_v210210_B9213A_201026001634s.nc4" if sensor == "acos"
                    else f"{sensor}_LtCO2_2001{d:02d}_B11100Ar_230603215457s.nc4")  # fmt: skip
            url = a.add(f"/gesdisc/{short}/{name}", b"y" * 20)
            a.cmr.append(_cmr_item(short, name, day, url, b"y" * 20))
    for d in range(1, 32):
        for h, orbit in ((5, 11560), (17, 11567)):
            name = _s5p("OFFL", f"202001{d:02d}T{h - 1:02d}4000", f"202001{d:02d}T{h + 1:02d}2130", orbit + 14 * d)
            a.add(f"/s3/meeo/OFFL/L2__CH4___/2020/01/{d:02d}/{name}", b"z")
            a.add(f"/s3/blnd/data/2020-01/{name.replace('_OFFL_', '_BLND_')}", b"z")
    for gas in ("CH4", "CO2"):
        a.add(f"/jrc/EDGAR/datasets/v80_FT2022_GHG/{gas}/TOTALS/flx_nc/v8.0_FT2022_GHG_{gas}_2020_TOTALS_flx_nc.zip", b"q")
    a.add("/zenodo/records/15016289/files/Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_no_extrap_no_rounding_13-Mar-2025.csv", b"c")
    a.add("/zenodo/records/15016289/files/Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_no_rounding_13-Mar-2025.csv", b"c")
    a.add("/ceos/pilot_topdown_CO2_Budget_countries_v1.csv", b"c")


def test_plan_of_the_real_month_config_lists_the_right_files(archive: Archive, tmp_path: Path) -> None:
    """configs/real_month.yaml with every archive replaced by the loopback one (same layouts)."""
    _serve_month(archive, tmp_path)
    cfg = yaml.safe_load((ROOT / "configs" / "real_month.yaml").read_text())
    bases = {"cci_ghg": "/ceda/neodc", "acos_lite": "/cmr/search/", "oco2_lite": "/cmr/search/",
             "oco3_lite": "/cmr/search/", "nies_gosat": "/gdas", "tropomi_ch4": "/s3/meeo", "tropomi_blended": "/s3/blnd",
             "edgar": "/jrc", "primap_hist": "/zenodo"}  # fmt: skip
    for s in cfg["fetch"]["sources"]:
        if s["source"] in bases:
            s["base_url"] = archive.url + bases[s["source"]]
        if s["source"] == "oco2_mip":
            s["url"] = archive.url + "/ceos/pilot_topdown_CO2_Budget_countries_v1.csv"
    path = tmp_path / "month.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "gosat_pipeline.cli", "fetch", "--plan", str(path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    tsv = (tmp_path / "data_cache" / "fetch-plan.tsv").read_text().splitlines()
    by_source: dict[str, list[str]] = {}
    for line in tsv:
        url, rel = line.split("\t")
        by_source.setdefault(rel.split("/")[0], []).append(rel.rsplit("/", 1)[-1])
    assert by_source["cci_ghg"] == [f"UoL-GHG-L2-CH4-GOSAT-OCPR-202001{d:02d}-fv9.0.nc" for d in range(1, 32)]
    for src in ("acos_lite", "oco2_lite", "oco3_lite"):
        assert len(by_source[src]) == 31 and all(n.endswith(".nc4") for n in by_source[src])
    assert by_source["nies_gosat"] == ["SWIRL2CO2_202001_V02.97.tar"]
    # the 05 UTC orbits pass over South-East Asia, the 17 UTC ones over the Americas
    assert len(by_source["tropomi_ch4"]) == 31 and all("T044000" in n for n in by_source["tropomi_ch4"])
    assert len(by_source["tropomi_blended"]) == 31
    assert by_source["edgar"] == ["v8.0_FT2022_GHG_CH4_2020_TOTALS_flx_nc.zip", "v8.0_FT2022_GHG_CO2_2020_TOTALS_flx_nc.zip"]
    assert by_source["primap_hist"] == ["Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_no_extrap_no_rounding_13-Mar-2025.csv"]
    assert by_source["oco2_mip"] == ["pilot_topdown_CO2_Budget_countries_v1.csv"]
    assert by_source["era5"] == ["era5_uv_1000-850hPa_202001_90_m12_142_30.nc", "era5_blh_202001_90_m12_142_30.nc"]
    saved = gf.Plan.from_json((tmp_path / "data_cache" / "fetch-plan.json").read_text())
    assert len(saved.files) == len(tsv)
    assert "matches none of the fetched files" not in out.stdout  # the run's paths point into the cache


# --------------------------------------------------------------------------- credentials never written; manifest provenance


def test_cli_fetch_never_writes_credentials(archive: Archive, tmp_path: Path) -> None:
    members = {granule_filename("nies_gosat_l2", "2020-01-01", gas="CO2"): granule("nies_gosat_l2", "2020-01-01",
                                                                                   tmp_path, gas="CO2")}  # fmt: skip
    archive.add("/gdas/wgetdata/GU/SWIRL2CO2/2020/SWIRL2CO2_202001_V02.97.tar", tar_bytes(members))
    secret = "Sup3r-Secret-Pa55"
    archive.auth["/gdas/"] = ("basic", "me", secret)
    env = {**os.environ, "GOSAT_DAS_USERNAME": "me", "GOSAT_DAS_PASSWORD": secret}
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "gosat_pipeline.cli", "-vv", "fetch", "nies_gosat", "--gas", "CO2", "--period",
           "2020-01-01/2020-01-02", "--out", str(cache), "--base-url", archive.url + "/gdas"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "1 downloaded" in out.stderr
    out2 = subprocess.run([*cmd, "--plan"], capture_output=True, text=True, env=env, timeout=300)
    written = "".join(p.read_text(errors="replace") for p in cache.rglob("*") if p.suffix in (".json", ".tsv"))
    assert secret not in out.stdout + out.stderr + out2.stdout + out2.stderr + written
    bad = subprocess.run(cmd, capture_output=True, text=True, env={**env, "GOSAT_DAS_PASSWORD": "wrong"}, timeout=300)
    assert bad.returncode == 0  # everything cached: no login needed, nothing sent
    (cache / "nies_gosat" / "SWIRL2CO2" / "V02.97" / "SWIRL2CO2_202001_V02.97.tar").unlink()
    bad = subprocess.run(cmd, capture_output=True, text=True, env={**env, "GOSAT_DAS_PASSWORD": "wrong"}, timeout=300)
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 2 and last.startswith("gosat-pipeline: error:") and "refused access" in last
    assert "GOSAT_DAS_PASSWORD" in last and secret not in bad.stderr


def test_manifest_records_where_fetched_inputs_came_from(archive: Archive, tmp_path: Path) -> None:
    from gosat_pipeline.config import load_config
    from gosat_pipeline.pipeline import run

    _serve_cci(archive, tmp_path, days=2)
    cache = tmp_path / "data_cache"
    prior = tmp_path / "prior.nc"
    prior.write_bytes(b"not read before the inventory stage")
    cfg_text = f"""
run: {{name: fetched, output_dir: {tmp_path / 'out'}}}
period: {{start: 2020-01-01, end: 2020-01-03}}
domain: {{bbox: [-180, -90, 180, 90], resolution: 10.0}}
gases:
  - gas: CH4
    granules: [{cache}/cci_ghg/CH4_GOS_OCPR/v7.0/*.nc]
    prior: {{path: {prior}}}
    sigma_model: 8.0
    background_prior_sigma: 30.0
cluster: {{type: synchronous}}
fetch:
  cache_dir: {cache}
  sources: [{{source: cci_ghg, gas: CH4, base_url: "{archive.url}/ceda/neodc"}}]
"""
    (tmp_path / "c.yaml").write_text(cfg_text)
    cfg = load_config(tmp_path / "c.yaml")
    plan = gf.plan_for_config(cfg)
    assert not [n for n in plan.notes if "matches none" in n]
    gf.fetch(plan, cfg.fetch.cache_dir, backoff=0.01)
    res = run(cfg, until="ingest")
    inputs = {r["path"]: r for r in res.manifest["inputs"]}
    for f in plan.files:
        rec = inputs[str(cache / f.relpath)]
        assert rec["fetched"]["url"] == f.url
        assert rec["fetched"]["sha256_matches"] is True and rec["fetched"]["retrieved"]
    assert "fetched" not in inputs[str(prior)]


def test_files_copied_in_for_an_air_gapped_machine_are_checked_without_a_login(archive: Archive,
                                                                                tmp_path: Path) -> None:  # fmt: skip
    served = _serve_lite(archive, tmp_path)
    plan = gf.plan_source("oco2_lite", date(2020, 1, 1), date(2020, 1, 3), ASEAN, base_url=archive.url + "/cmr/search/")
    saved = gf.Plan.from_json(plan.to_json())  # what `fetch --plan` writes and `--from-plan` reads
    cache = tmp_path / "cache"
    for f in saved.files:  # "downloaded elsewhere and copied in"
        (cache / f.relpath).parent.mkdir(parents=True, exist_ok=True)
        (cache / f.relpath).write_bytes(served[f.name])
    before = gets(archive, "/gesdisc/")
    report = gf.fetch(saved, cache, backoff=0.01)  # no EARTHDATA_* set: no login is attempted
    assert sorted(report.verified) == sorted(f.relpath for f in saved.files)
    assert gets(archive, "/gesdisc/") == before
    rec = gf.Cache(cache).entry(saved.files[0].relpath)
    assert rec["how"] == "found in the cache and checked" and rec["url"] == saved.files[0].url
    (cache / saved.files[0].relpath).write_bytes(b"broken")  # a bad copy still needs the archive, and a login
    with pytest.raises(gf.CredentialError, match="EARTHDATA_TOKEN"):
        gf.fetch(saved, cache, backoff=0.01)
