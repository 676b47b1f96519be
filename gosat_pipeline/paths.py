"""Path helpers shared by every stage (layer 0): what a user's path, folder or glob names.

One function, :func:`expand_paths`, turns what a user wrote in a config or passed to a
stage (a file, a folder, a glob pattern, or a list of them) into the files it names.
It never raises: each stage says in its own error (``WindError``, ``InventoryError``,
``FootprintError`` ...) what it needed and how to fix it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["expand_paths", "has_glob"]

PathLike = str | os.PathLike[str]


def has_glob(pattern: PathLike) -> bool:
    """Whether ``pattern`` holds a glob character (``*``, ``?`` or ``[``)."""
    return glob.has_magic(os.fspath(pattern))


def expand_paths(
    source: PathLike | Iterable[PathLike],
    *,
    suffixes: Iterable[str] | None = None,
    recursive: bool = True,
) -> list[Path]:
    """The files a path, folder, glob pattern or list of them names, in order, each once.

    Parameters
    ----------
    source : path-like or iterable of path-like
        Each item is a glob pattern (expanded, sorted; ``**`` descends when
        ``recursive``), a folder (its files with one of ``suffixes``, sorted, when
        ``suffixes`` is given) or a path (kept as it is, whether or not it exists).
    suffixes : iterable of str, optional
        File suffixes (``".nc"``) that a folder is expanded to; without them a folder is
        kept as a path.
    recursive : bool
        Let ``**`` match any number of folders.

    Returns
    -------
    list of pathlib.Path
        De-duplicated, first occurrence kept. A pattern that matches nothing adds
        nothing: the caller decides whether that is an error.
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    keep = tuple(suffixes) if suffixes is not None else None
    found: dict[str, None] = {}
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if keep is not None and path.is_dir():
            hits = sorted(str(q) for q in path.iterdir() if q.suffix in keep)
        elif has_glob(text):
            hits = sorted(glob.glob(text, recursive=recursive))
        else:
            hits = [text]
        for hit in hits:
            found[str(Path(hit))] = None
    return [Path(f) for f in found]
