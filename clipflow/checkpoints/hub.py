"""Checkpoints on the Hugging Face Hub as a source: ``ckpt=hf://OWNER/NAME[@REVISION]``.

Reading goes through ``huggingface_hub.snapshot_download`` and its cache, so a checkpoint
fetched once is found again offline (``HF_HUB_OFFLINE=1``), and a revision (branch, tag or
commit) pins exactly which files are scored. Only the two checkpoint files are fetched.
Publishing a checkpoint (clipflow-push) is :mod:`clipflow.checkpoints.push`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.versions import __version__
from ..errors import CheckpointError
from .schema import META_NAME, WEIGHTS_NAME

log = logging.getLogger(__name__)

SCHEME = "hf://"
CHECKPOINT_FILES = (WEIGHTS_NAME, META_NAME)
# Hub repo ids: OWNER/NAME, letters, digits, '-', '_', '.'; no '--' or '..' (the Hub's rules).
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
MAX_REVISION = 256
# Characters no git branch or tag name may hold (git check-ref-format), besides spaces and
# control characters; a revision is also a path in the Hub cache (refs/<revision>), so these
# rules keep it from reaching outside it.
_NOT_IN_REVISION = "\\~^:?*[@"
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubRef:
    """A checkpoint on the Hub: ``repo_id`` (OWNER/NAME) at ``revision`` (None = main)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{SCHEME}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub_ref(path: object) -> bool:
    """Whether a ``ckpt`` value names a Hub checkpoint (``hf://...``) rather than a file."""
    return isinstance(path, str) and path.startswith(SCHEME)


def parse_hub_ref(text: str) -> HubRef:
    """``hf://OWNER/NAME[@REVISION]`` (the ``hf://`` is optional) -> HubRef; else one line."""
    body = text[len(SCHEME) :] if text.startswith(SCHEME) else text
    repo_id, at, revision = body.partition("@")
    ok = _REPO_ID.fullmatch(repo_id) and "--" not in repo_id and ".." not in repo_id
    if not ok or (at and not revision):
        raise CheckpointError(
            f"{text!r} is not a Hub checkpoint name; use hf://OWNER/NAME or "
            "hf://OWNER/NAME@REVISION (a branch, tag or commit)"
        )
    problem = revision_problem(revision) if at else None
    if problem:
        raise CheckpointError(
            f"{text!r}: the revision {problem}; use a branch, tag or commit "
            "(hf://OWNER/NAME@v1, @main, @<commit>)"
        )
    return HubRef(repo_id, revision or None)


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` is no branch, tag or commit name (a phrase), or None. Git's ref-name
    rules: a path-like revision (``../../x``, ``/etc``) would name a file outside the cache."""
    if len(revision) > MAX_REVISION:
        return f"is longer than {MAX_REVISION} characters"
    if any(not c.isprintable() or c.isspace() for c in revision):
        return "holds a space or a control character"
    bad = next((c for c in revision if c in _NOT_IN_REVISION), None)
    if bad is not None:
        return f"holds {bad!r}, which no branch or tag name may"
    if ".." in revision:
        return "holds '..' (a step up a path)"
    if revision.startswith("/") or revision.endswith("/") or "//" in revision:
        return "is path-like (a leading, trailing or double '/')"
    if any(part.startswith(".") for part in revision.split("/")) or revision.endswith(".lock"):
        return "has a part starting with '.' or ends in '.lock'"
    return None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def hub_cache_dir() -> str:
    """The Hub cache folder in use (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/...)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def fetch_checkpoint(ref: str | HubRef) -> Path:
    """The local snapshot folder holding ``ref``'s model.safetensors + model.json.

    Downloads into (or reads from) the Hugging Face cache; offline, only the cache is read.
    Every failure is one CheckpointError naming the repo and what to do.
    """
    ref = parse_hub_ref(str(ref))  # a HubRef built by hand is checked like a typed one
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        folder = Path(
            snapshot_download(
                ref.repo_id,
                revision=ref.revision,
                allow_patterns=list(CHECKPOINT_FILES),
                local_files_only=offline,
                library_name="clipflow",
                library_version=__version__,
            )
        )
    except Exception as err:  # huggingface_hub's and the HTTP client's own error types
        raise CheckpointError(_fetch_error(ref, err, offline)) from None
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{ref} has no {' or '.join(missing)}: it is not a clipflow checkpoint repo "
            "(upload one with clipflow-push)"
            + ("" if not offline else "; or its download was incomplete: rerun online")
        )
    log.info("checkpoint %s -> %s", ref, folder)
    return folder


def _fetch_error(ref: HubRef, err: Exception, offline: bool) -> str:
    """One line for a failed snapshot_download, by the kind of failure."""
    from huggingface_hub import errors

    kind = type(err).__name__
    # IncompleteSnapshotError (huggingface_hub >= 1.x): cached, but without our two files
    incomplete = getattr(errors, "IncompleteSnapshotError", errors.LocalEntryNotFoundError)
    if offline and isinstance(err, (errors.LocalEntryNotFoundError, incomplete)):
        return (
            f"{ref} is not in the Hugging Face cache ({hub_cache_dir()}) and HF_HUB_OFFLINE=1: "
            f"download it once online (unset HF_HUB_OFFLINE, or `hf download {ref.repo_id}"
            + (f" --revision {ref.revision}" if ref.revision else "")
            + "`), or pass ckpt=<local run dir>"
        )
    if isinstance(err, errors.RevisionNotFoundError):
        return f"{ref}: revision {ref.revision!r} not found in {ref.repo_id}; check the tag/commit"
    if isinstance(err, (errors.RepositoryNotFoundError, errors.GatedRepoError)):
        return (
            f"{ref}: no such model repo on the Hub, or it is private/gated "
            "(log in with `hf auth login` or set HF_TOKEN)"
        )
    if isinstance(err, errors.LocalEntryNotFoundError):
        return (
            f"{ref}: the Hub cannot be reached and no copy is cached in {hub_cache_dir()}; "
            "check the connection or pass ckpt=<local run dir>"
        )
    reason = (str(err).strip().splitlines() or [kind])[0]
    return f"cannot fetch {ref} ({kind}: {reason})"
