"""Self-describing checkpoints: the trained parts only (DR + flow), safetensors + JSON.

A checkpoint is a pair in one folder::

    model.safetensors   tensors: ``model.*`` (state dict), ``val_real_scores`` (N,)
    model.json          format version, feature dim, flow config, backbone, threshold,
                        resolved run config, sha256 of the safetensors file

Both are written to temporary files and moved into place with ``os.replace``; the JSON
goes last and carries the hash, so a half-written or truncated pair is refused on load.
No pickle is involved anywhere (safetensors cannot execute code).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CheckpointError
from .fileio import atomic_write_text, file_sha256
from .flow import CLIPFlow, FlowConfig

FORMAT = "clipflow-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"


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


def save_checkpoint(
    folder: Path,
    model: CLIPFlow,
    threshold: float,
    backbone: dict,
    config: dict,
    val_real_scores: torch.Tensor | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``folder``; return the weights path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    scores = val_real_scores if val_real_scores is not None else torch.empty(0)
    tensors["val_real_scores"] = scores.detach().float().cpu().contiguous()
    weights = folder / WEIGHTS_NAME
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS_NAME}.", suffix=".tmp")
    os.close(fd)
    try:
        # One metadata key only: safetensors writes its metadata map in hash order, and two
        # keys would make identical checkpoints differ byte-wise from run to run.
        save_file(tensors, tmp, metadata={"format": f"{FORMAT}/{FORMAT_VERSION}"})
        digest = file_sha256(Path(tmp))
        os.replace(tmp, weights)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "clipflow_version": __version__,
        "weights": WEIGHTS_NAME,
        "sha256": digest,
        "feature_dim": model.feature_dim,
        "flow": model.config_dict(),
        "backbone": backbone,
        "threshold": float(threshold),
        "config": config,
        **(extra or {}),
    }
    atomic_write_text(folder / META_NAME, json.dumps(meta, indent=2, sort_keys=True))
    return weights


def resolve_checkpoint_path(path: str | Path) -> tuple[Path, Path]:
    """(weights, json) for a checkpoint file, its JSON, or the folder holding them."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(
            f"checkpoint not found: {p} — pass ckpt=<run dir or model.safetensors>"
        )
    folder = p if p.is_dir() else p.parent
    weights = p if p.suffix == ".safetensors" and p.is_file() else folder / WEIGHTS_NAME
    if p.suffix == ".json" and p.is_file():
        weights = p.with_suffix(".safetensors")
    meta = weights.with_suffix(".json")
    if not weights.is_file() or not meta.is_file():
        raise CheckpointError(
            f"no clipflow checkpoint at {p}: expected {weights.name} and {meta.name} "
            "(written by clipflow-train)"
        )
    return weights, meta


def read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"checkpoint metadata {meta_path} is unreadable ({err}); re-run clipflow-train"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a clipflow checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {meta.get('format_version')} is not supported by clipflow "
            f"{__version__} (expects {FORMAT_VERSION}); retrain or use the clipflow version that wrote it"
        )
    return meta


def load_checkpoint(path: str | Path, expected_feature_dim: int | None = None) -> Checkpoint:
    """Rebuild the model from a checkpoint alone; refuse corrupt or mismatched files."""
    weights, meta_path = resolve_checkpoint_path(path)
    meta = read_meta(meta_path)
    if file_sha256(weights) != meta.get("sha256"):
        raise CheckpointError(
            f"{weights} does not match the hash in {meta_path.name} (truncated or replaced); retrain or restore it"
        )
    feature_dim, flow_cfg, threshold = _model_fields(meta, meta_path)
    if expected_feature_dim is not None and feature_dim != expected_feature_dim:
        raise CheckpointError(
            f"checkpoint expects {feature_dim}-d features but the backbone gives {expected_feature_dim}-d; "
            f"use the backbone it was trained with ({meta.get('backbone', {}).get('name')})"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {weights}: {err}") from None
    model = CLIPFlow(feature_dim, flow_cfg)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{weights} does not fit its own config ({first})") from None
    model.eval()
    return Checkpoint(
        model=model,
        threshold=threshold,
        backbone=meta.get("backbone", {}),
        meta=meta,
        val_real_scores=tensors.get("val_real_scores", torch.empty(0)),
        path=weights,
    )


def _model_fields(meta: dict, meta_path: Path) -> tuple[int, FlowConfig, float]:
    """(feature dim, flow config, threshold) from the JSON; a missing or foreign field is
    one clear error, not a KeyError/TypeError traceback (e.g. a hand-edited file)."""
    try:
        flow = {k: v for k, v in meta["flow"].items() if k != "feature_dim"}
        return int(meta["feature_dim"]), FlowConfig(**flow), float(meta["threshold"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        reason = f"missing field {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise CheckpointError(
            f"{meta_path} is not a usable clipflow checkpoint ({reason}); re-run clipflow-train"
        ) from None
