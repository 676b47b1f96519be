"""gosat-pipeline fetch against an archive served on 127.0.0.1 (tests/fetch_archive.py): never the network.

The official clients run for real: earthaccess searches the loopback CMR endpoint and logs
in from EARTHDATA_TOKEN, or with a username and password against a loopback Earthdata Login
over TLS (the name urs.earthdata.nasa.gov resolved to 127.0.0.1, a throwaway CA trusted);
cdsapi (ecmwf-datastores) submits, polls and downloads from the loopback CDS retrieve API;
NIES credentials come from a ~/.netrc file; the GOSAT-2 Product Archive is an asyncssh SFTP
server with a throwaway host key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import yaml
from fetch_archive import Archive, EarthdataLogin, SftpArchive, netcdf_bytes, tar_bytes, zip_bytes

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
    for var in (
        "EARTHDATA_TOKEN",
        "EARTHDATA_USERNAME",
        "EARTHDATA_PASSWORD",
        "GOSAT_DAS_USERNAME",
        "GOSAT_DAS_PASSWORD",
        "GOSAT2_USERNAME",
        "GOSAT2_PASSWORD",
        "CDSAPI_URL",
        "CDSAPI_KEY",
        "GOSAT_PIPELINE_EDL_HOST",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("CDSAPI_RC", str(tmp_path / "no-cdsapirc"))
    monkeypatch.setenv("GOSAT_PIPELINE_KNOWN_HOSTS", str(tmp_path / "no-known-hosts"))


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
    spec = FileSpec(
        source="cci_ghg",
        url=url,
        relpath=f"cci_ghg/{granule_filename('cci_ocpr', '2020-01-01')}",
        check="l2",
        role="granule:CH4",
    )
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
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gosat_pipeline.cli",
            "-q",
            "fetch",
            "--from-plan",
            str(tmp_path / "plan.json"),
            "--out",
            str(cache),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
    everything = gf.plan_source(
        "tropomi_ch4", date(2020, 1, 1), date(2020, 1, 2), ASEAN, base_url=base, overpass_filter=False
    )
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
    assert plan.files[0].check == "l2"  # opened with the package's blended reader


# --------------------------------------------------------------------------- NASA Earthdata through earthaccess


def _cmr_item(short: str, name: str, day: str, url: str, data: bytes) -> dict:
    return {
        "meta": {"concept-id": f"G-{name}", "provider-id": "GES_DISC", "native-id": name},
        "umm": {
            "GranuleUR": name,
            "CollectionReference": {"ShortName": short, "Version": "11r"},
            "TemporalExtent": {
                "RangeDateTime": {"BeginningDateTime": f"{day}T00:00:00Z", "EndingDateTime": f"{day}T23:59:59Z"}
            },
            "DataGranule": {
                "ArchiveAndDistributionInformation": [
                    {
                        "Name": name,
                        "SizeInBytes": len(data),
                        "Checksum": {"Value": hashlib.md5(data).hexdigest(), "Algorithm": "MD5"},
                    }
                ]
            },
            "RelatedUrls": [{"URL": url, "Type": "GET DATA"}],
        },
    }


def _serve_lite(a: Archive, tmp_path: Path) -> dict[str, bytes]:
    served = {}
    for day, build in (
        ("2020-01-01", "B11100Ar_230603215457s"),
        ("2020-01-02", "B11100Ar_230603215457s"),
        ("2020-01-02", "B10206Ar_200729175909s"),
        ("2020-01-03", "B11100Ar_230603215457s"),
    ):
        name = f"oco2_LtCO2_{day[2:].replace('-', '')}_{build}.nc4"
        data = granule("oco2_lite", day, tmp_path, name=granule_filename("oco2_lite", day))
        url = a.add(f"/gesdisc/data/OCO2_DATA/OCO2_L2_Lite_FP.11r/2020/{name}", data)
        a.cmr.append(_cmr_item("OCO2_L2_Lite_FP", name, day, url, data))
        served[name] = data
    a.auth["/gesdisc/"] = ("bearer", "edl-token-0123456789")
    return served


def test_lite_search_through_earthaccess_and_token_login(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


@pytest.fixture
def edl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EarthdataLogin:
    """Earthdata Login over TLS on 127.0.0.1, reached under its real name: urs.earthdata.nasa.gov
    resolves to the loopback server (any other name that is not loopback fails to resolve), and
    requests trusts the throwaway CA that signed its certificate."""
    server = EarthdataLogin(tmp_path, "edl-user", "edl-Pa55word-1357")
    port = server.start()
    real = socket.getaddrinfo

    def resolve(host: str, port_: object, *args: object, **kwargs: object) -> list:
        if host == server.hostname:
            if str(port_) not in ("443", "https"):
                raise socket.gaierror(socket.EAI_SERVICE, f"test: {host} is only served on 443")
            return real("127.0.0.1", port, *args, **kwargs)
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(socket.EAI_NONAME, f"test: no network ({host})")
        return real(host, port_, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    yield server
    server.stop()


def test_lite_download_after_earthdata_password_login_over_tls(
    archive: Archive,
    edl: EarthdataLogin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = _serve_lite(archive, tmp_path)
    archive.auth["/gesdisc/"] = ("bearer", edl.token)  # the archive takes the token Earthdata Login issues
    plan = gf.plan_source("oco2_lite", date(2020, 1, 1), date(2020, 1, 3), ASEAN, base_url=archive.url + "/cmr/search/")
    caplog.set_level(logging.DEBUG)
    token_path = "/api/users/find_or_create_token"

    monkeypatch.setenv("EARTHDATA_USERNAME", edl.username)
    with pytest.raises(gf.CredentialError, match="EARTHDATA_PASSWORD is not set"):
        gf.fetch(plan, tmp_path / "c0", backoff=0.01)
    assert edl.log == []

    monkeypatch.setenv("EARTHDATA_PASSWORD", "not-the-password")
    with pytest.raises(gf.CredentialError) as info:
        gf.fetch(plan, tmp_path / "c0", backoff=0.01)
    msg = str(info.value)
    assert "\n" not in msg and "NASA Earthdata Login refused the credentials" in msg and "not-the-password" not in msg
    assert [(p, h.split(" ")[0]) for _, p, h in edl.log] == [(token_path, ""), (token_path, "Basic")]

    # environment variables: earthaccess posts, meets the 401 challenge, sends Basic, gets the token
    monkeypatch.setenv("EARTHDATA_PASSWORD", edl.password)
    edl.log.clear()
    report = gf.fetch(plan, tmp_path / "c1", backoff=0.01)
    assert len(report.downloaded) == 2
    want = "Basic " + base64.b64encode(f"{edl.username}:{edl.password}".encode()).decode()
    assert edl.log == [("POST", token_path, ""), ("POST", token_path, want)]
    got = [h.get("Authorization") for m, p, h in archive.log if m == "GET" and p.startswith("/gesdisc/")]
    assert got and set(got) == {f"Bearer {edl.token}"}
    for f in plan.files:
        assert (tmp_path / "c1" / f.relpath).read_bytes() == served[f.name]

    # ~/.netrc, machine urs.earthdata.nasa.gov, as the README tells users to write it
    monkeypatch.delenv("EARTHDATA_USERNAME")
    monkeypatch.delenv("EARTHDATA_PASSWORD")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine urs.earthdata.nasa.gov login {edl.username} password {edl.password}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    edl.log.clear()
    assert len(gf.fetch(plan, tmp_path / "c2", backoff=0.01).downloaded) == 2
    assert edl.log and {h for _, _, h in edl.log} == {want}  # requests reads the same ~/.netrc: Basic at once

    index = (tmp_path / "c1" / "fetch-index.json").read_text() + (tmp_path / "c2" / "fetch-index.json").read_text()
    for secret in (edl.password, edl.token):
        assert secret not in caplog.text and secret not in index

    # the TLS certificate is really checked: without the test CA the login cannot happen
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(
        gf.FetchError,
        match=r"NASA Earthdata Login \(https://urs.earthdata.nasa.gov\) could not be "
        r"reached to log in: SSLError",
    ):
        gf.fetch(plan, tmp_path / "c3", backoff=0.01)


# --------------------------------------------------------------------------- NIES GOSAT: login from ~/.netrc


def test_nies_monthly_tar_with_netrc_login(archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = {}
    for d in (1, 2, 3):
        day = f"2020-01-{d:02d}"
        name = granule_filename("nies_gosat_l2", day, gas="CO2")
        members[f"SWIRL2CO2/{name}"] = granule("nies_gosat_l2", day, tmp_path, gas="CO2")
    archive.add("/gdas/wgetdata/GU/SWIRL2CO2/2020/SWIRL2CO2_202001_V02.97.tar", tar_bytes(members))
    archive.auth["/gdas/"] = ("basic", "user@example.org", "nies-pass-4567")
    plan = gf.plan_source(
        "nies_gosat", date(2020, 1, 2), date(2020, 1, 4), ASEAN, gas="CO2", base_url=archive.url + "/gdas"
    )
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


# --------------------------------------------------------------------------- NIES GOSAT-2: SFTP, login, resume

G2 = "/pub/releaseData/standardProduct"
G2_USER, G2_PASS = "user@example.org", "g2-Pa55word-2468"


@pytest.fixture
def sftp_archive(tmp_path: Path) -> SftpArchive:
    a = SftpArchive(tmp_path / "sftp_root", G2_USER, G2_PASS)
    a.start()
    yield a
    a.stop()


def _g2(day: str, product: str = "SWFP", version: str = "0220000018") -> str:
    return f"GOSAT2TFTS2{day.replace('-', '')}_02{product}V{version}.h5"


def _h5_bytes(tmp_path: Path, nbytes: int, seed: int) -> bytes:
    """An HDF5 file of about ``nbytes`` (random payload, so nothing compresses or repeats)."""
    import h5py

    p = tmp_path / f"payload-{seed}.h5"
    with h5py.File(p, "w") as f:
        f["payload"] = np.random.default_rng(seed).integers(0, 255, nbytes, dtype="u1")
        f["payload"].attrs["unit"] = np.array([b"1"])
    return p.read_bytes()


def _g2_env(monkeypatch: pytest.MonkeyPatch, password: str = G2_PASS) -> None:
    monkeypatch.setenv("GOSAT2_USERNAME", G2_USER)
    monkeypatch.setenv("GOSAT2_PASSWORD", password)


def _pin(a: SftpArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str | None = None) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(line or a.known_hosts_line())
    monkeypatch.setenv("GOSAT_PIPELINE_KNOWN_HOSTS", str(kh))


def test_gosat2_plan_lists_the_newest_version_over_sftp_after_login(
    sftp_archive: SftpArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a = sftp_archive
    swfp = f"{G2}/FTS-2_L2/SWFP"
    for d in range(1, 4):
        a.add(f"{swfp}/0200/2020/{_g2(f'2020-01-{d:02d}', version='0200020011')}", b"old version")
    a.add(f"{swfp}/0220/2019/{_g2('2019-12-31')}", b"x" * 7)
    for d in range(1, 7):
        a.add(f"{swfp}/0220/2020/{_g2(f'2020-01-{d:02d}')}", b"x" * (100 + d))
    a.add(f"{swfp}/0220/2020/{_g2('2020-01-02', version='0220000017')}", b"an older build of the same day")
    a.add(f"{swfp}/0220/2020/README.txt", b"not a granule")
    a.add(f"{G2}/FTS-2_L2/SWPR/0210/2020/{_g2('2020-01-02', 'SWPR', '0210010017')}", b"proxy")
    base = a.url + G2
    jan = (date(2020, 1, 1), date(2020, 1, 6))

    with pytest.raises(gf.CredentialError) as info:  # the archive can only be listed after login
        gf.plan_source("nies_gosat2", *jan, ASEAN, gas="CO2", base_url=base)
    msg = str(info.value)
    assert "\n" not in msg and "GOSAT2_USERNAME and GOSAT2_PASSWORD" in msg and "machine 127.0.0.1" in msg
    assert a.logins == []

    _g2_env(monkeypatch)
    caplog.set_level(logging.WARNING, logger="gosat_pipeline.fetch.sftp")
    plan = gf.plan_source("nies_gosat2", *jan, ASEAN, gas="CO2", base_url=base)
    assert [f.name for f in plan.files] == [_g2(f"2020-01-{d:02d}") for d in range(1, 6)]
    assert [f.size for f in plan.files] == [100 + d for d in range(1, 6)]
    f0 = plan.files[0]
    assert f0.url == f"{base}/FTS-2_L2/SWFP/0220/2020/{f0.name}" and f0.relpath == f"nies_gosat2/SWFP/0220/{f0.name}"
    assert {(f.check, f.credential, f.role) for f in plan.files} == {("hdf5", "gosat2", "granule:CO2")}
    assert any("newest version on the archive, 0220 (of 0200, 0220)" in n for n in plan.notes)
    # an unknown host key is accepted for the session, with its fingerprint to pin it
    assert a.host_key.get_fingerprint() in caplog.text and "ssh-keyscan" in caplog.text

    old = gf.plan_source("nies_gosat2", *jan, ASEAN, gas="CO2", base_url=base, version="v2.0")
    assert [f.name for f in old.files] == [_g2(f"2020-01-{d:02d}", version="0200020011") for d in range(1, 4)]
    proxy = gf.plan_source("nies_gosat2", *jan, ASEAN, gas="CH4", base_url=base, product="SWPR")
    assert [(f.name, f.role) for f in proxy.files] == [(_g2("2020-01-02", "SWPR", "0210010017"), "granule:CH4")]
    with pytest.raises(gf.FetchError, match=r"version 0220 has no 2021 folder on the archive \(it has 2019, 2020\)"):
        gf.plan_source("nies_gosat2", date(2021, 3, 1), date(2021, 3, 2), gas="CO2", base_url=base)

    # a pinned host key that does not match stops everything
    other = SftpArchive(tmp_path / "other", G2_USER, G2_PASS)
    _pin(a, tmp_path, monkeypatch, a.known_hosts_line().split()[0] + " " + other.host_key.export_public_key().decode())
    with pytest.raises(gf.FetchError, match="host key does not match the one listed for 127.0.0.1"):
        gf.plan_source("nies_gosat2", *jan, ASEAN, gas="CO2", base_url=base)
    _pin(a, tmp_path, monkeypatch)
    assert len(gf.plan_source("nies_gosat2", *jan, ASEAN, gas="CO2", base_url=base).files) == 5


def test_gosat2_download_resumes_after_a_cut_and_a_second_fetch_transfers_nothing(
    sftp_archive: SftpArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gosat_pipeline.fetch.sftp import PIECE

    a = sftp_archive
    folder = f"{G2}/FTS-2_L2/SWFP/0220/2020"
    small = granule("nies_gosat2_l2", "2020-01-01", tmp_path)
    big = _h5_bytes(tmp_path, 3 * PIECE, seed=1)
    a.add(f"{folder}/{_g2('2020-01-01')}", small)
    a.add(f"{folder}/{_g2('2020-01-02')}", big)
    netrc = tmp_path / "netrc"  # the login from ~/.netrc this time (machine: the server's host)
    netrc.write_text(f"machine 127.0.0.1 login {G2_USER} password {G2_PASS}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    _pin(a, tmp_path, monkeypatch)
    plan = gf.plan_source("nies_gosat2", date(2020, 1, 1), date(2020, 1, 3), ASEAN, gas="CO2", base_url=a.url + G2)
    assert [f.size for f in plan.files] == [len(small), len(big)]

    a.faults[f"{folder}/{_g2('2020-01-02')}"] = ["cut"]  # the connection drops half-way through the big file
    cache = tmp_path / "cache"
    report = gf.fetch(plan, cache, workers=2, backoff=0.01)
    assert sorted(report.downloaded) == sorted(f.relpath for f in plan.files) and not report.failed
    for f, data in zip(plan.files, (small, big)):
        assert (cache / f.relpath).read_bytes() == data
    reads = [(s, off, n) for s, p, off, n in a.reads if p.endswith(_g2("2020-01-02"))]
    first, later = min(s for s, _, _ in reads), max(s for s, _, _ in reads)
    assert later > first  # a new session after the cut ...
    resumed_at = min(off for s, off, _ in reads if s == later)
    assert 0 < resumed_at < len(big) and resumed_at % PIECE == 0  # ... asked only for the pieces not yet kept
    assert len(big) <= sum(n for _, _, n in reads) < len(big) + PIECE  # at most one piece was served twice
    rec = gf.Cache(cache).entry(plan.files[1].relpath)
    assert rec["url"] == plan.files[1].url and rec["sha256"] == hashlib.sha256(big).hexdigest()
    assert G2_PASS not in (cache / "fetch-index.json").read_text()
    assert not [p for p in (cache / ".partial").rglob("*") if p.is_file()]

    logins, n_reads = len(a.logins), len(a.reads)
    again = gf.fetch(plan, cache, backoff=0.01)  # nothing to transfer: no login, no read
    assert sorted(again.cached) == sorted(f.relpath for f in plan.files) and not again.downloaded
    assert (len(a.logins), len(a.reads)) == (logins, n_reads)

    bad = cache / plan.files[0].relpath  # a corrupt cached file is replaced over SFTP
    bad.write_bytes(b"\0" * bad.stat().st_size)
    assert gf.fetch(plan, cache, backoff=0.01).replaced == [plan.files[0].relpath]
    assert bad.read_bytes() == small and len(a.logins) == logins + 1


def test_gosat2_resume_across_fetches_and_restart_when_the_archive_file_changed(
    sftp_archive: SftpArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gosat_pipeline.fetch.sftp import PIECE

    a = sftp_archive
    folder = f"{G2}/FTS-2_L2/SWFP/0220/2020"
    names = [_g2("2020-01-01"), _g2("2020-01-02")]
    data = [_h5_bytes(tmp_path, 3 * PIECE, seed=s) for s in (2, 3)]
    for name, d in zip(names, data):
        a.add(f"{folder}/{name}", d)
        a.faults[f"{folder}/{name}"] = ["cut"]
    _g2_env(monkeypatch)
    plan = gf.plan_source("nies_gosat2", date(2020, 1, 1), date(2020, 1, 3), gas="CH4", base_url=a.url + G2)
    cache = tmp_path / "cache"
    with pytest.raises(gf.FetchError, match="2 of 2 file"):  # no retries: the fetch stops, as a killed one would
        gf.fetch(plan, cache, retries=0, backoff=0.01)
    parts = [cache / ".partial" / f.relpath for f in plan.files]
    kept = parts[0].stat().st_size
    assert 0 < kept < len(data[0]) and kept % PIECE == 0 and parts[1].stat().st_size == kept

    # meanwhile the archive replaced the second file (same size, new content and time)
    new = _h5_bytes(tmp_path, 3 * PIECE, seed=4)
    assert len(new) == len(data[1])
    path = a.root / folder.lstrip("/") / names[1]
    path.write_bytes(new)
    os.utime(path, (time.time() + 100, time.time() + 100))
    session = a.sessions
    report = gf.fetch(plan, cache, backoff=0.01)
    assert sorted(report.downloaded) == sorted(f.relpath for f in plan.files)
    assert (cache / plan.files[0].relpath).read_bytes() == data[0]
    assert (cache / plan.files[1].relpath).read_bytes() == new
    starts = {
        p.rsplit("/", 1)[-1]: min(off for s, q, off, _ in a.reads if q == p and s > session)
        for p in {q for s, q, _, _ in a.reads if s > session}
    }
    assert starts == {names[0]: kept, names[1]: 0}  # resumed where it stopped; the changed file from the start


def test_gosat2_wrong_password_is_one_clear_line_and_never_retried(
    sftp_archive: SftpArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = sftp_archive
    folder = f"{G2}/FTS-2_L2/SWFP/0220/2020"
    for d in (1, 2, 3):
        a.add(f"{folder}/{_g2(f'2020-01-0{d}')}", granule("nies_gosat2_l2", f"2020-01-0{d}", tmp_path))
    env = {**os.environ, "GOSAT2_USERNAME": G2_USER, "GOSAT2_PASSWORD": G2_PASS}
    cache = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "gosat_pipeline.cli",
        "-vv",
        "fetch",
        "nies_gosat2",
        "--gas",
        "CO2",
        "--period",
        "2020-01-01/2020-01-04",
        "--out",
        str(cache),
        "--base-url",
        a.url + G2,
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "3 downloaded" in ok.stderr
    written = "".join(p.read_text(errors="replace") for p in cache.rglob("*") if p.suffix in (".json", ".tsv"))
    assert G2_PASS not in ok.stdout + ok.stderr + written

    n = len(a.logins)
    bad = subprocess.run(
        [*cmd, "--plan"], capture_output=True, text=True, timeout=300, env={**env, "GOSAT2_PASSWORD": "wrong-password"}
    )
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode == 2 and last.startswith(
        f"gosat-pipeline: error: NIES GOSAT-2 Product Archive refused the login at {a.url}: check the credentials;"
    )
    assert "GOSAT2_PASSWORD" in last and "wrong-password" not in bad.stderr
    assert a.logins[n:] == [(G2_USER, False)]  # one attempt: a refused password is not sent again

    # at download time too, with several files and workers
    _g2_env(monkeypatch)
    plan = gf.plan_source("nies_gosat2", date(2020, 1, 1), date(2020, 1, 4), gas="CO2", base_url=a.url + G2)
    _g2_env(monkeypatch, "wrong-password")
    n = len(a.logins)
    with pytest.raises(gf.CredentialError, match="refused the login") as info:
        gf.fetch(plan, tmp_path / "cache2", workers=3, backoff=0.01)
    assert "\n" not in str(info.value) and "wrong-password" not in str(info.value)
    assert a.logins[n:] == [(G2_USER, False)]


# --------------------------------------------------------------------------- inventories and totals


def test_edgar_zip_primap_zenodo_oco2mip_unfccc(archive: Archive, tmp_path: Path) -> None:
    nc = netcdf_bytes(
        {"fluxes": (("lat", "lon"), np.ones((2, 3), "f4"), {"units": "kg m-2 s-1"})},
        {"lat": [0.05, 0.15], "lon": [0.05, 0.15, 0.25]},
    )
    edgar = "/jrc/EDGAR/datasets/v80_FT2022_GHG/CH4/TOTALS/flx_nc/v8.0_FT2022_GHG_CH4_2020_TOTALS_flx_nc.zip"
    archive.add(edgar, zip_bytes({"v8.0_FT2022_GHG_CH4_2020_TOTALS_flx.nc": nc, "_readme.html": b"<html/>"}))
    primap = "Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_no_rounding_13-Mar-2025.csv"
    archive.add(
        f"/zenodo/records/15016289/files/{primap}", b"source,scenario (PRIMAP-hist),area (ISO3)\nx,HISTCR,THA\n"
    )
    archive.add(
        "/zenodo/records/15016289/files/Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_13-Mar-2025.csv", b"a,b\n"
    )
    mip = archive.add("/ceos/pilot_topdown_CO2_Budget_countries_v1.csv", b"# header\nAlpha 3 Code,Year\nTHA,2020\n")
    crt = archive.add("/unfccc/THA-CRT-2024-V1.0-2022.xlsx", zip_bytes({"[Content_Types].xml": b"<Types/>"}))
    reqs = [
        gf.Request("edgar", *JAN, ASEAN, "CH4", {"base_url": archive.url + "/jrc"}),
        gf.Request("primap_hist", *JAN, ASEAN, None, {"base_url": archive.url + "/zenodo"}),
        gf.Request("oco2_mip", *JAN, ASEAN, None, {"url": mip}),
        gf.Request("unfccc", *JAN, ASEAN, None, {"url": crt}),
    ]
    plan = gf.plan(reqs)
    assert [f.relpath for f in plan.files] == [
        "edgar/v8.0_FT2022_GHG_CH4_2020_TOTALS_flx_nc.zip",
        f"primap_hist/15016289/{primap}",
        "oco2_mip/pilot_topdown_CO2_Budget_countries_v1.csv",
        "unfccc/THA-CRT-2024-V1.0-2022.xlsx",
    ]
    assert (
        plan.files[1].checksum
        == "md5:" + hashlib.md5(archive.files[f"/zenodo/records/15016289/files/{primap}"]).hexdigest()
    )
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
        return netcdf_bytes(
            {
                "u": (("valid_time", "pressure_level", "latitude", "longitude"), np.full(shape, 3.0, "f4")),
                "v": (("valid_time", "pressure_level", "latitude", "longitude"), np.full(shape, -1.0, "f4")),
            },
            {"valid_time": t, "pressure_level": lev, "latitude": lat, "longitude": lon},
        )
    return netcdf_bytes(
        {"blh": (("valid_time", "latitude", "longitude"), np.full((2, 3, 3), 800.0, "f4"))},
        {"valid_time": t, "latitude": lat, "longitude": lon},
    )


def test_era5_through_cdsapi_asks_only_for_what_the_transport_needs(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
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
            name = (
                f"acos_LtCO2_2001{d:02d}_v210210_B9213A_201026001634s.nc4"
                if sensor == "acos"
                else f"{sensor}_LtCO2_2001{d:02d}_B11100Ar_230603215457s.nc4"
            )
            url = a.add(f"/gesdisc/{short}/{name}", b"y" * 20)
            a.cmr.append(_cmr_item(short, name, day, url, b"y" * 20))
    for d in range(1, 32):
        for h, orbit in ((5, 11560), (17, 11567)):
            name = _s5p("OFFL", f"202001{d:02d}T{h - 1:02d}4000", f"202001{d:02d}T{h + 1:02d}2130", orbit + 14 * d)
            a.add(f"/s3/meeo/OFFL/L2__CH4___/2020/01/{d:02d}/{name}", b"z")
            a.add(f"/s3/blnd/data/2020-01/{name.replace('_OFFL_', '_BLND_')}", b"z")
    for gas in ("CH4", "CO2"):
        a.add(
            f"/jrc/EDGAR/datasets/v80_FT2022_GHG/{gas}/TOTALS/flx_nc/v8.0_FT2022_GHG_{gas}_2020_TOTALS_flx_nc.zip", b"q"
        )
    a.add(
        "/zenodo/records/15016289/files/Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_no_extrap_no_rounding_13-Mar-2025.csv",
        b"c",
    )
    a.add(
        "/zenodo/records/15016289/files/Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_no_rounding_13-Mar-2025.csv", b"c"
    )
    a.add("/ceos/pilot_topdown_CO2_Budget_countries_v1.csv", b"c")


def _serve_gosat2_month(a: SftpArchive) -> None:
    swfp = f"{G2}/FTS-2_L2/SWFP"
    for d in range(1, 32):
        a.add(f"{swfp}/0220/2020/{_g2(f'2020-01-{d:02d}')}", b"h")
        a.add(f"{swfp}/0200/2020/{_g2(f'2020-01-{d:02d}', version='0200020011')}", b"h")
    a.add(f"{swfp}/0220/2020/{_g2('2020-02-01')}", b"h")
    a.add(f"{swfp}/0220/2019/{_g2('2019-12-31')}", b"h")
    a.add(f"{G2}/FTS-2_L2/SWPR/0210/2020/{_g2('2020-01-15', 'SWPR', '0210010017')}", b"h")


def test_plan_of_the_real_month_config_lists_the_right_files(
    archive: Archive, sftp_archive: SftpArchive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configs/real_month.yaml with every archive replaced by the loopback one (same layouts)."""
    _serve_month(archive, tmp_path)
    _serve_gosat2_month(sftp_archive)
    _g2_env(monkeypatch)  # the GOSAT-2 archive is listed over SFTP, after login
    cfg = yaml.safe_load((ROOT / "configs" / "real_month.yaml").read_text())
    bases = {
        "cci_ghg": "/ceda/neodc",
        "acos_lite": "/cmr/search/",
        "oco2_lite": "/cmr/search/",
        "oco3_lite": "/cmr/search/",
        "nies_gosat": "/gdas",
        "tropomi_ch4": "/s3/meeo",
        "tropomi_blended": "/s3/blnd",
        "edgar": "/jrc",
        "primap_hist": "/zenodo",
    }
    for s in cfg["fetch"]["sources"]:
        if s["source"] in bases:
            s["base_url"] = archive.url + bases[s["source"]]
        if s["source"] == "nies_gosat2":
            s["base_url"] = sftp_archive.url + G2
        if s["source"] == "oco2_mip":
            s["url"] = archive.url + "/ceos/pilot_topdown_CO2_Budget_countries_v1.csv"
    path = tmp_path / "month.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "gosat_pipeline.cli", "fetch", "--plan", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    assert by_source["nies_gosat2"] == [_g2(f"2020-01-{d:02d}") for d in range(1, 32)]  # the newest version, January
    assert all(
        u.startswith(f"{sftp_archive.url}{G2}/FTS-2_L2/SWFP/0220/2020/")
        for u, r in (line.split("\t") for line in tsv)
        if r.startswith("nies_gosat2/")
    )
    # the 05 UTC orbits pass over South-East Asia, the 17 UTC ones over the Americas
    assert len(by_source["tropomi_ch4"]) == 31 and all("T044000" in n for n in by_source["tropomi_ch4"])
    assert len(by_source["tropomi_blended"]) == 31
    assert by_source["edgar"] == [
        "v8.0_FT2022_GHG_CH4_2020_TOTALS_flx_nc.zip",
        "v8.0_FT2022_GHG_CO2_2020_TOTALS_flx_nc.zip",
    ]
    assert by_source["primap_hist"] == [
        "Guetschow_et_al_2025-PRIMAP-hist_v2.6.1_final_no_extrap_no_rounding_13-Mar-2025.csv"
    ]
    assert by_source["oco2_mip"] == ["pilot_topdown_CO2_Budget_countries_v1.csv"]
    assert by_source["era5"] == ["era5_uv_1000-850hPa_202001_90_m12_142_30.nc", "era5_blh_202001_90_m12_142_30.nc"]
    saved = gf.Plan.from_json((tmp_path / "data_cache" / "fetch-plan.json").read_text())
    assert len(saved.files) == len(tsv)
    assert "matches none of the fetched files" not in out.stdout  # the run's paths point into the cache


# --------------------------------------------------------------------------- credentials never written; manifest provenance


def test_cli_fetch_never_writes_credentials(archive: Archive, tmp_path: Path) -> None:
    members = {
        granule_filename("nies_gosat_l2", "2020-01-01", gas="CO2"): granule(
            "nies_gosat_l2", "2020-01-01", tmp_path, gas="CO2"
        )
    }
    archive.add("/gdas/wgetdata/GU/SWIRL2CO2/2020/SWIRL2CO2_202001_V02.97.tar", tar_bytes(members))
    secret = "Sup3r-Secret-Pa55"
    archive.auth["/gdas/"] = ("basic", "me", secret)
    env = {**os.environ, "GOSAT_DAS_USERNAME": "me", "GOSAT_DAS_PASSWORD": secret}
    cache = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "gosat_pipeline.cli",
        "-vv",
        "fetch",
        "nies_gosat",
        "--gas",
        "CO2",
        "--period",
        "2020-01-01/2020-01-02",
        "--out",
        str(cache),
        "--base-url",
        archive.url + "/gdas",
    ]
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
run: {{name: fetched, output_dir: {tmp_path / "out"}}}
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


def test_files_copied_in_for_an_air_gapped_machine_are_checked_without_a_login(
    archive: Archive, tmp_path: Path
) -> None:
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
