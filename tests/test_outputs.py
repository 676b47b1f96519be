"""Atomic writes: a failed write leaves neither a target nor a temporary behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from gosat_pipeline.outputs import atomic_path, atomic_write_json, atomic_write_netcdf, sha256_file


def test_atomic_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_replaces_and_checksums(tmp_path: Path) -> None:
    p = atomic_write_json({"a": 1}, tmp_path / "m.json")
    atomic_write_json({"a": 2}, p)
    assert p.read_text().strip().endswith("}")
    assert '"a": 2' in p.read_text()
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
    ds = xr.Dataset({"v": ("x", np.arange(3.0), {"units": "1"})})
    nc = atomic_write_netcdf(ds, tmp_path / "d.nc")
    with xr.open_dataset(nc) as back:
        assert back.v.values.tolist() == [0.0, 1.0, 2.0]
    assert [q.name for q in tmp_path.iterdir() if q.name.endswith(".partial")] == []


def test_atomic_files_get_the_usual_permissions(tmp_path: Path) -> None:
    import stat

    from gosat_pipeline.outputs import _UMASK, atomic_write_text

    path = atomic_write_text("x", tmp_path / "shared.txt")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~_UMASK
