"""Self-describing checkpoints: the trained parts only (DR + flow), safetensors + JSON.

A checkpoint is a pair in one folder::

    model.safetensors   tensors: ``model.*`` (state dict), ``val_real_scores`` (N,), and
                        ``spec`` (the model-defining JSON fields, as UTF-8 bytes)
    model.json          format version, feature dim, flow config, backbone, threshold,
                        resolved run config, sha256 of the safetensors file

Both are written to temporary files and moved into place with ``os.replace``
(:mod:`clipflow.checkpoints.save`); the JSON goes last and carries the hash, so a
half-written or truncated pair is refused by :func:`load_checkpoint` (here).
The JSON is read only up to :data:`~clipflow.checkpoints.schema.MAX_META_BYTES` and checked
field by field (types, ranges, caps, displayable strings: :mod:`clipflow.checkpoints.schema`)
before anything is allocated. Its model-defining fields (feature dim, flow, threshold, and the
``calibration`` record when there is one) must equal the hashed ``spec`` tensor, which every
checkpoint must hold, so a hand-edited threshold, clamp or calibration record is refused
rather than silently used; ``calibration.n`` must be the number of stored calibration scores
(the weights file's checks: :mod:`clipflow.checkpoints.tensors`).
No pickle is involved anywhere (safetensors cannot execute code).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..core.fileio import display_path, file_sha256
from ..core.versions import __version__
from ..errors import CheckpointError, first_line
from ..flow.config import FlowConfig
from ..flow.model import CLIPFlow
from .hub import fetch_checkpoint, is_hub_ref
from .schema import (
    FORMAT,
    FORMAT_VERSION,
    MAX_META_BYTES,
    META_NAME,
    WEIGHTS_NAME,
    display_text,
    short,
    validate_meta,
)
from .tensors import (
    SCORES_TENSOR,
    check_calibration_count,
    check_header,
    check_spec,
    check_tensors,
    expected_tensors,
    no_json_constant,
    read_spec,
)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model plus everything needed to use it."""

    model: CLIPFlow
    threshold: float
    backbone: dict
    meta: dict
    val_real_scores: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    path: Path | None = None

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]


def _flow_config(meta: dict) -> FlowConfig:
    """The validated flow fields; an optional one that is absent keeps its default."""
    flow = meta["flow"]
    return FlowConfig(**{f.name: flow[f.name] for f in fields(FlowConfig) if f.name in flow})


def resolve_checkpoint_path(path: str | Path) -> tuple[Path, Path]:
    """(weights, json) for a checkpoint file, its JSON, the folder holding them, or a Hub
    checkpoint ``hf://OWNER/NAME[@REVISION]`` (fetched into the Hugging Face cache)."""
    if is_hub_ref(path):
        path = fetch_checkpoint(str(path))
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(
            f"checkpoint not found: {display_path(p)} — pass ckpt=<run dir, model.safetensors "
            "or hf://OWNER/NAME>"
        )
    folder = p if p.is_dir() else p.parent
    weights = p if p.suffix == ".safetensors" and p.is_file() else folder / WEIGHTS_NAME
    if p.suffix == ".json" and p.is_file():
        weights = p.with_suffix(".safetensors")
    meta = weights.with_suffix(".json")
    if not weights.is_file() or not meta.is_file():
        raise CheckpointError(
            f"no clipflow checkpoint at {display_path(p)}: expected {display_path(weights.name)} "
            f"and {display_path(meta.name)} (written by clipflow-train)"
        )
    return weights, meta


def read_meta(meta_path: Path) -> dict:
    """The JSON of a checkpoint, every field validated (see :func:`validate_meta`); a file
    over :data:`MAX_META_BYTES` is refused before it is parsed (only that much is read)."""
    shown = display_path(meta_path)
    try:
        with open(meta_path, "rb") as fh:
            raw = fh.read(MAX_META_BYTES + 1)
    except OSError as err:
        raise CheckpointError(
            f"checkpoint metadata {shown} is unreadable ({display_text(first_line(err))})"
        ) from None
    if len(raw) > MAX_META_BYTES:
        raise CheckpointError(
            f"checkpoint metadata {shown} is over {MAX_META_BYTES >> 20} MiB (a clipflow "
            f"{META_NAME} is a few KB to a few MB): refused unread; re-run clipflow-train"
        )
    with _gc_paused():
        try:
            meta = json.loads(raw.decode("utf-8"), parse_constant=no_json_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise CheckpointError(
                f"checkpoint metadata {shown} is unreadable ({display_text(first_line(err))}); "
                "re-run clipflow-train"
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"{shown} is not a clipflow checkpoint")
        version = meta.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise CheckpointError(
                f"checkpoint format version {short(version)} is not supported by clipflow "
                f"{__version__} (expects {FORMAT_VERSION}); retrain or use the clipflow version "
                "that wrote it"
            )
        validate_meta(meta, shown)
    return meta


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection while a model.json is parsed and checked: JSON makes no reference
    cycles, and a file of a million small lists (within the size cap) otherwise spends most of
    its seconds in repeated full collections."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model from a checkpoint alone; refuse corrupt, edited or mismatched files.

    Order matters: the JSON's size, fields and caps first, then the hash, then the JSON
    against the hashed spec and the tensor shapes against a model built on the meta device
    (no memory), and only then the tensors.
    """
    weights, meta_path = resolve_checkpoint_path(path)
    meta = read_meta(meta_path)
    shown = display_path(weights)
    if file_sha256(weights) != meta["sha256"]:
        raise CheckpointError(
            f"{shown} does not match the hash in {display_path(meta_path.name)} (truncated or "
            "replaced); retrain or restore it"
        )
    flow_cfg = _flow_config(meta)
    expected = expected_tensors(meta["feature_dim"], flow_cfg, shown)
    check_spec(read_spec(weights, shown), meta, weights)  # names the edited JSON field
    n_scores = check_header(weights, expected, shown)
    check_calibration_count(meta, n_scores, shown)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {shown}: {display_text(first_line(err))}") from None
    check_tensors(tensors, shown)
    model = CLIPFlow(meta["feature_dim"], flow_cfg)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{shown} does not fit its own config ({display_text(first_line(err))})"
        ) from None
    model.eval()
    return Checkpoint(
        model=model,
        threshold=float(meta["threshold"]),
        backbone=meta["backbone"],
        meta=meta,
        val_real_scores=tensors.get(SCORES_TENSOR, torch.empty(0)),
        path=weights,
    )
