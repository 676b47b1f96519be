"""The provenance section of the report, from ``manifest.json`` and ``config.resolved.yaml``.

Every path is shown relative to the run directory (a report handed to someone else
must not expose the folder layout of the machine that made it, and stays true when
the run directory is moved together with its inputs). The manifest is read
tolerantly: any key may be missing or of an unexpected type.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml

__all__ = ["relative_path", "relativise_text", "provenance", "config_for_display"]

_ABS_POSIX = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\",;()\[\]{}<>|]+)")
_ABS_WINDOWS = re.compile(r"\b[A-Za-z]:\\[^\s'\",;()\[\]{}<>|]*")


def _is_abs(text: str) -> bool:
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()


def relative_path(path: Any, base: Path) -> str:
    """``path`` relative to ``base`` (a run directory); relative paths are returned unchanged.

    Parameters
    ----------
    path : str or path-like
        May carry a scheme prefix such as ``zip://`` or a glob pattern.
    base : pathlib.Path
        Resolved run directory.

    Returns
    -------
    str
        e.g. ``../../data_samples/granules/CH4/*.nc``; a path on another drive becomes
        its file name.
    """
    text = str(path)
    prefix = ""
    m = re.match(r"^([a-z][a-z0-9+.-]*://)(.*)$", text)
    if m:
        prefix, text = m.group(1), m.group(2)
    if not _is_abs(text):
        return prefix + text
    try:
        return prefix + os.path.relpath(text, base)
    except ValueError:  # another drive (Windows)
        return prefix + PureWindowsPath(text).name


def relativise_text(text: str, base: Path) -> str:
    """Replace every absolute path in free text by the path relative to ``base``."""
    out = _ABS_POSIX.sub(lambda m: relative_path(m.group(0), base), text)
    return _ABS_WINDOWS.sub(lambda m: relative_path(m.group(0), base), out)


def _walk(obj: Any, base: Path) -> Any:
    if isinstance(obj, Mapping):
        return {k: _walk(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, base) for v in obj]
    if isinstance(obj, str) and _is_abs(obj.split("://")[-1]):
        return relative_path(obj, base)
    return obj


def config_for_display(text: str | None, base: Path) -> str | None:
    """The resolved configuration with every path relative to the run directory."""
    if text is None:
        return None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return relativise_text(text, base)
    if not isinstance(doc, dict):
        return relativise_text(text, base)
    dumped = yaml.safe_dump(_walk(doc, base), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return relativise_text(dumped, base)


def _str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}" if math.isfinite(v) else ""
    return str(v)


def _seconds(v: Any) -> str:
    try:
        s = float(v)
    except (TypeError, ValueError):
        return ""
    if not math.isfinite(s):
        return ""
    if s >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


#: more files of one kind than this are shown as one summary row (each is in manifest.json)
_MAX_LISTED = 10


def _grouped(items: Sequence[Any], base: Path) -> tuple[list[Any], list[dict[str, str]]]:
    """Items to list one by one, and one summary row per kind with many files (a year of granules)."""
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for it in items:
        if isinstance(it, Mapping) and str(it.get("kind") or "").startswith("granule"):
            by_kind.setdefault(str(it.get("kind")), []).append(it)
    many = {k for k, v in by_kind.items() if len(v) > _MAX_LISTED}
    keep = [it for it in items if not (isinstance(it, Mapping) and str(it.get("kind") or "") in many)]
    rows = []
    for kind in sorted(many):
        group = by_kind[kind]
        paths = [str(it.get("path") or "") for it in group]
        folder = relative_path(str(Path(os.path.commonpath(paths))), base) if all(paths) else ""
        size = sum(float(it.get("bytes") or 0) for it in group)
        rows.append(
            {
                "path": f"{len(group)} files in {folder}",
                "detail": kind,
                "size": f"{size / 1024:,.0f} KiB",
                "sha256": "each file's in manifest.json",
            }
        )
    return keep, rows


def _inputs(items: Any, base: Path) -> list[dict[str, str]]:
    out = []
    if isinstance(items, Mapping):
        items = [{"path": k, **(v if isinstance(v, Mapping) else {"sha256": v})} for k, v in items.items()]
    if not isinstance(items, Sequence) or isinstance(items, str):
        items = [items] if items else []
    items, summary = _grouped(items, base)
    out.extend(summary)
    for it in items:
        if isinstance(it, Mapping):
            path = it.get("path") or it.get("file") or it.get("name") or ""
            detail = it.get("reason") or it.get("kind") or it.get("reader") or it.get("format") or ""
            size = it.get("bytes")
            out.append(
                {
                    "path": relative_path(path, base) if path else "",
                    "sha256": _str(it.get("sha256")),
                    "detail": relativise_text(_str(detail), base),
                    "size": f"{float(size) / 1024:,.0f} KiB" if isinstance(size, int | float) else "",
                }
            )
        else:
            out.append({"path": relative_path(it, base), "sha256": "", "detail": "", "size": ""})
    return out


def _stages(stages: Any, base: Path) -> list[dict[str, str]]:
    if not isinstance(stages, Mapping):
        return []
    rows = []
    for name, rec in stages.items():
        rec = rec if isinstance(rec, Mapping) else {"status": rec}
        outputs = rec.get("outputs")
        outputs = outputs if isinstance(outputs, list) else ([] if outputs is None else [outputs])
        rows.append(
            {
                "stage": str(name),
                "status": _str(rec.get("status")) or "recorded",
                "seconds": _seconds(rec.get("wall_time_s", rec.get("seconds"))),
                "finished": _str(rec.get("finished")),
                "outputs": ", ".join(relative_path(o, base) for o in outputs),
            }
        )
    return rows


def _status(manifest: Mapping[str, Any]) -> tuple[str, str]:
    """(status, wall time) as the reader should see them."""
    status = _str(manifest.get("status")) or "not recorded"
    current = manifest.get("current_stage")
    wall = _seconds(manifest.get("wall_time_s"))
    if current == "report":
        # The pipeline finalises the run before its last step, the report, so this page can show it.
        if status == "running":
            status = "complete up to the comparison (the report was being written)"
        wall = f"{wall} (to the start of this report)" if wall else ""
    elif status == "running":
        status = f"running or interrupted (last stage started: {current or 'unknown'})"
    return status, wall or "not recorded"


def _screening(screening: Any) -> list[dict[str, str]]:
    if not isinstance(screening, Mapping):
        return []
    out = []
    for gas, rec in screening.items():
        if not isinstance(rec, Mapping):
            continue
        dropped = rec.get("quality_filter_dropped")
        drops = (
            ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dropped.items() if v)
            if isinstance(dropped, Mapping)
            else _str(dropped)
        )
        dups = rec.get("duplicate_soundings")
        out.append(
            {
                "gas": str(gas),
                "kept": _str(rec.get("soundings_kept")),
                "dropped": drops or "none",
                "duplicates": str(len(dups)) if isinstance(dups, list) else _str(dups) or "0",
            }
        )
    return out


_SHOWN = {
    "inputs",
    "skipped_inputs",
    "versions",
    "config_sha256",
    "stages",
    "synthetic",
    "status",
    "wall_time_s",
    "current_stage",
    "screening",
    "platform",
    "cluster",
}


def _flat(prefix: str, v: Any, base: Path) -> list[tuple[str, str]]:
    if isinstance(v, Mapping):
        return [item for k, x in v.items() for item in _flat(f"{prefix}.{k}", x, base)]
    if isinstance(v, list):
        return [(prefix, " ".join(relative_path(x, base) if isinstance(x, str) else _str(x) for x in v))]
    if isinstance(v, str):
        return [(prefix, relative_path(v, base) if _is_abs(v) else relativise_text(v, base))]
    return [(prefix, _str(v))]


def provenance(manifest: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """Provenance of a run for the report, every path relative to ``run_dir``.

    Parameters
    ----------
    manifest : mapping
        ``manifest.json`` (any key may be missing).
    run_dir : pathlib.Path

    Returns
    -------
    dict
        ``status``, ``wall_time``, ``stages`` (rows: stage, status, seconds, finished,
        outputs), ``inputs`` and ``skipped`` (rows: path, sha256, detail, size),
        ``versions`` and ``other`` ([(key, value)]), ``screening`` (rows per gas),
        ``config_sha256``.
    """
    base = Path(run_dir).resolve()
    status, wall = _status(manifest)
    versions = manifest.get("versions")
    other: list[tuple[str, str]] = []
    for k, v in manifest.items():
        if k in _SHOWN:
            continue
        other.extend(_flat(str(k), v, base))
    for k in ("platform", "cluster"):
        if k in manifest:
            other.extend(_flat(k, manifest[k], base))
    return {
        "status": status,
        "wall_time": wall,
        "stages": _stages(manifest.get("stages"), base),
        "inputs": _inputs(manifest.get("inputs"), base),
        "skipped": _inputs(manifest.get("skipped_inputs"), base),
        "versions": [(str(k), _str(v)) for k, v in versions.items()] if isinstance(versions, Mapping) else [],
        "other": other,
        "screening": _screening(manifest.get("screening")),
        "config_sha256": _str(manifest.get("config_sha256")) or "not recorded",
    }
