"""A checkpoint as a Hub model folder: the files a published checkpoint holds, and the upload.

What a published ``model.json`` carries: the whole record, with every **local absolute
path** in it (a training folder, a weights file, the photos of clipflow-calibrate, a
cache folder: any string that starts with ``/``, ``~``, ``C:\\`` or ``\\\\``) written as
``<local>/LAST_PART``. The field keeps its meaning (which folder or file, by name) without
publishing the trainer's home folder or user name; relative paths and everything else are
kept as recorded. The files are written by :func:`~clipflow.checkpoints.save.save_checkpoint`
itself (the one writer of checkpoints), so the weights are byte-identical to the source's
and keep its sha256, unless a redacted path is in the hashed spec (clipflow-calibrate's
``calibration.root``): then only the spec tensor differs, every score stays the same, and
the model card names the source's sha256. The folder is loaded back before anything else
is done with it.

The card itself is :mod:`clipflow.checkpoints.push`; reading ``hf://`` is :mod:`.hub`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.fileio import display_path
from ..core.versions import __version__
from ..errors import ClipflowError, first_line
from .card_data import folder_name
from .checkpoint import Checkpoint, load_checkpoint
from .save import save_checkpoint
from .schema import WEIGHTS_NAME

LOCAL = "<local>"
# POSIX absolute, home-relative, Windows drive or UNC; open_clip's local-dir: names too.
_ABSOLUTE = re.compile(r"(?P<prefix>local-dir:|file:)?(?:[/~]|[A-Za-z]:[\\/]|\\\\)")
# model.json fields save_checkpoint writes itself (the rest is passed through as ``extra``).
_WRITER_FIELDS = ("format", "format_version", "weights", "sha256", "feature_dim", "flow")


def is_local_path(text: str) -> bool:
    """Whether a recorded string is an absolute local path (see the module docstring)."""
    return bool(_ABSOLUTE.match(text))


def redact_path(text: str) -> str:
    """``/home/me/data/progan_train`` -> ``<local>/progan_train`` (a prefix such as
    ``local-dir:`` kept); other strings unchanged."""
    match = _ABSOLUTE.match(text)
    if not match:
        return text
    prefix = match.group("prefix") or ""
    return f"{prefix}{LOCAL}/{folder_name(text[len(prefix) :]) or '?'}"


def published_meta(meta: dict) -> tuple[dict, list[str]]:
    """A copy of ``meta`` with its local paths redacted, and the dotted names of the
    fields that were (``config.data.train_root``, ...)."""
    redacted: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}.{i}") for i, v in enumerate(node)]
        if isinstance(node, str) and is_local_path(node):
            redacted.append(where)
            return redact_path(node)
        return node

    return walk(meta, ""), redacted


def redacted_fields(meta: dict) -> list[str]:
    """The fields of a published model.json that hold a redacted path."""
    return sorted(name for name, text in _strings(meta, "") if f"{LOCAL}/" in text)


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """(dotted name, value) of every string in a JSON tree."""
    if isinstance(node, str):
        yield where, node
        return
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for k, v in items:
        yield from _strings(v, f"{where}.{k}" if where else str(k))


def save_published(ckpt: Checkpoint, folder: str | os.PathLike) -> Checkpoint:
    """Write ``ckpt``'s model.safetensors + model.json into ``folder`` as published (paths
    redacted) and return the checkpoint loaded back from there. ``folder`` may hold an
    earlier export (its files are replaced, atomically), but never the source itself."""
    folder = Path(folder).expanduser()
    if ckpt.path is not None and folder.is_dir() and _same(folder, ckpt.path.parent):
        raise ClipflowError(
            f"{display_path(folder)} is the checkpoint's own folder: its model.json would be "
            "rewritten; save to another folder"
        )
    if folder.exists() and not folder.is_dir():
        raise ClipflowError(f"{display_path(folder)} is a file, not a folder; choose a folder")
    meta, _ = published_meta(ckpt.meta)
    extra = {k: v for k, v in meta.items() if k not in (*_WRITER_FIELDS, "backbone", "config")}
    save_checkpoint(
        folder,
        ckpt.model,
        ckpt.threshold,
        meta["backbone"],
        meta["config"],
        ckpt.val_real_scores,
        extra,  # clipflow_version included: the record says who trained it, not who copied
    )
    return load_checkpoint(folder)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def upload_folder(folder: Path, repo_id: str, private: bool = False, api=None) -> str:
    """Create the Hub repo if needed and upload ``folder`` in one commit; the commit URL.
    Every failure is one line (log in, permissions)."""
    from huggingface_hub import HfApi

    from ..core.fileio import file_sha256

    api = api or HfApi(library_name="clipflow", library_version=__version__)
    digest = file_sha256(folder / WEIGHTS_NAME)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=f"clipflow-push: checkpoint {digest[:12]}",
        )
    except Exception as err:  # auth, network, permissions: huggingface_hub's error types
        raise upload_error(f"upload to {repo_id}", err) from None
    return str(getattr(info, "commit_url", info))


def upload_error(what: str, err: Exception) -> ClipflowError:
    """One line for a failed Hub upload (``what``: e.g. "upload to OWNER/NAME")."""
    return ClipflowError(
        f"{what} failed ({type(err).__name__}: {first_line(err)}); "
        "log in with `hf auth login` (or set HF_TOKEN) and check you may write there"
    )
