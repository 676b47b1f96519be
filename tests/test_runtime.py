"""The run's process settings: numpy's transparent-hugepage advice (gosat_pipeline.runtime)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gosat_pipeline import runtime


def _policy(tmp_path: Path, enabled: str, defrag: str) -> Path:
    d = tmp_path / "thp"
    d.mkdir()
    (d / "enabled").write_text(enabled + "\n")
    (d / "defrag").write_text(defrag + "\n")
    return d


@pytest.mark.parametrize(
    ("enabled", "defrag", "stalls"),
    [
        ("always [madvise] never", "always defer defer+madvise [madvise] never", True),
        ("[always] madvise never", "always defer [defer+madvise] madvise never", True),
        ("always [madvise] never", "always [defer] defer+madvise madvise never", False),
        ("always madvise [never]", "[always] defer defer+madvise madvise never", False),
    ],
)
def test_policy_read_from_sysfs_files(tmp_path: Path, enabled: str, defrag: str, stalls: bool) -> None:
    d = _policy(tmp_path, enabled, defrag)
    policy = runtime.hugepage_policy(d)
    assert policy["enabled"] == enabled.split("[")[1].split("]")[0]
    assert runtime.advice_stalls(policy) is stalls
    assert runtime.hugepage_policy(tmp_path / "absent") == {"enabled": None, "defrag": None}


def test_advice_off_inside_and_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setter = runtime._numpy_setter()
    assert setter is not None  # numpy 1.26-2.x have the switch
    monkeypatch.delenv(runtime.ENV, raising=False)
    before = runtime._current(setter)
    d = _policy(tmp_path, "always [madvise] never", "always defer defer+madvise [madvise] never")
    with runtime.hugepage_advice(d) as rec:
        assert rec["numpy_madvise_hugepage"] is False and runtime._current(setter) is False
        assert os.environ[runtime.ENV] == "0"  # inherited by the Dask workers a run spawns
        assert rec["thp_defrag"] == "madvise" and "compacts memory" in rec["reason"]
    assert runtime._current(setter) is before and runtime.ENV not in os.environ


def test_advice_untouched_when_the_user_chose_or_the_kernel_does_not_stall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setter = runtime._numpy_setter()
    before = runtime._current(setter)
    stalling = _policy(tmp_path, "always [madvise] never", "always defer defer+madvise [madvise] never")
    monkeypatch.setenv(runtime.ENV, "1")
    with runtime.hugepage_advice(stalling) as rec:
        assert runtime._current(setter) is before and "set by the user" in rec["reason"]
    monkeypatch.delenv(runtime.ENV)
    calm = tmp_path / "calm"
    calm.mkdir()
    (calm / "enabled").write_text("always [madvise] never\n")
    (calm / "defrag").write_text("always [defer] defer+madvise madvise never\n")
    with runtime.hugepage_advice(calm) as rec:
        assert runtime._current(setter) is before and runtime.ENV not in os.environ
        assert rec["numpy_madvise_hugepage"] is before and "does not compact" in rec["reason"]


def test_hugepage_zeros_are_writable_zeros_of_any_size() -> None:
    import numpy as np

    big = runtime.hugepage_zeros((1024, 1030))  # 8.4 MB: an advised anonymous mapping
    small = runtime.hugepage_zeros((3, 4))  # numpy's own allocation
    for a in (big, small):
        assert a.dtype == np.float64 and a.flags.writeable and a.flags.c_contiguous
        assert not a.any()
    big[5, 7] = 2.5
    assert big.sum() == 2.5 and big.shape == (1024, 1030) and small.shape == (3, 4)


_PROBE = """
import sys
from pathlib import Path
import numpy as np
from gosat_pipeline import runtime


def flags(address):
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("VmFlags:"):
            return "hg" in head[1:]
    raise SystemExit("no mapping")


probe = 2**20  # a byte well inside each array (numpy advises from the first page boundary)
runtime._numpy_setter()(True)
advised = np.zeros(2**23)  # 64 MiB: above numpy's 4 MiB threshold and glibc's largest mmap threshold
with runtime.hugepage_advice(Path(sys.argv[1])):
    plain = np.zeros(2**23)
    ours = runtime.hugepage_zeros((2**13, 2**10))
    print(flags(advised.ctypes.data + probe), flags(plain.ctypes.data + probe), flags(ours.ctypes.data + probe))
"""


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file(), reason="needs Linux /proc/self/smaps")
def test_the_kernel_sees_the_advice_numpy_gives_and_hugepage_zeros_asks(tmp_path: Path) -> None:
    """Inside hugepage_advice numpy's large arrays carry no MADV_HUGEPAGE; hugepage_zeros' do, always.

    Checked in a fresh process (VmFlags ``hg`` in /proc/self/smaps): memory a long-lived process
    got back from an earlier advised array keeps its flag, whatever is allocated in it next.
    """
    import subprocess
    import sys

    stalling = _policy(tmp_path, "always [madvise] never", "always defer defer+madvise [madvise] never")
    env = {k: v for k, v in os.environ.items() if k != runtime.ENV}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(stalling)], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["True", "False", "True"], out.stdout + out.stderr
