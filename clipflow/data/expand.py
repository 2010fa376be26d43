"""What ``inputs=`` names (files, folders, glob patterns) as the ordered list of files to score.

clipflow-detect's inputs: every input either names files or comes back with the reason it
named nothing, so that no input vanishes silently (see :func:`expand_inputs`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from .imageio import scan_images


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Files, folders (recursive, image extensions only) and glob patterns -> ordered,
    de-duplicated ``(path, problem)`` pairs; ``problem`` says why an input named nothing.

    A file named explicitly is always tried, whatever its extension; so is a dangling
    symlink or a FIFO, which then fails with its reason instead of vanishing. In a folder,
    what the walk leaves out (a symlink loop, a second name of one file) comes back with
    its reason (see :func:`~clipflow.data.imageio.scan_images`).
    """
    out: dict[str, str | None] = {}
    for raw in inputs:
        text = os.path.expanduser(str(raw))
        for path, problem in _expand_one(text):
            out.setdefault(os.path.normpath(path), problem)
    return list(out.items())


def _expand_one(text: str) -> list[tuple[str, str | None]]:
    path = Path(text)
    if path.is_dir():
        listing = scan_images(path, include_special=True)
        found: list[tuple[str, str | None]] = [(str(p), None) for p in listing.images]
        left_out: list[tuple[str, str | None]] = [(str(p), r) for p, r in listing.skipped]
        return found + left_out if found else [(text, "no image files in this folder")]
    if os.path.lexists(text):
        return [(text, None)]
    if any(c in text for c in "*?["):
        matches = sorted(glob.glob(text, recursive=True))
        expanded = [pair for m in matches for pair in _expand_one(m)]
        return expanded or [(text, "no file matches this pattern")]
    return [(text, "not found")]
