"""Writing a checkpoint: ``model.safetensors`` + ``model.json``, atomically, readable back.

Both are written to temporary files and moved into place with ``os.replace``; the JSON goes
last and carries the weights' sha256, so a half-written or truncated pair is refused on load.
The record is checked against the schema load applies before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..core.fileio import atomic_write, atomic_write_text, display_path, file_sha256
from ..core.versions import __version__
from ..errors import CheckpointError
from ..flow.model import CLIPFlow
from .schema import (
    FORMAT,
    FORMAT_VERSION,
    MAX_HISTORY,
    MAX_META_BYTES,
    META_NAME,
    WEIGHTS_NAME,
    display_text,
    validate_meta,
)
from .tensors import (
    MAX_SPEC_BYTES,
    SCORES_TENSOR,
    SPEC_TENSOR,
    check_calibration_count,
    check_tensors,
    model_spec,
)


def save_checkpoint(
    folder: Path,
    model: CLIPFlow,
    threshold: float,
    backbone: dict,
    config: dict,
    val_real_scores: torch.Tensor | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``folder``; return the weights path.

    The record is checked against the same schema as on load before anything is written:
    a checkpoint this function writes can always be read back (e.g. no empty history, no
    non-finite threshold or weights). Two things are recorded as load accepts them rather
    than refused: a string holding a control character or an undecodable byte (a path, say)
    is written with those as ``\\xNN`` (:func:`~clipflow.checkpoints.schema.display_text`),
    and a ``history`` longer than :data:`~clipflow.checkpoints.schema.MAX_HISTORY` rows keeps
    that many, evenly spaced, the first and last included (each row names its epoch; the run
    folder's metrics.csv has them all).
    """
    folder = Path(folder)
    where = f"the checkpoint for {display_path(folder)}"
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    scores = val_real_scores if val_real_scores is not None else torch.empty(0)
    tensors[SCORES_TENSOR] = scores.detach().float().cpu().reshape(-1).contiguous()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "clipflow_version": __version__,
        "weights": WEIGHTS_NAME,
        "sha256": "0" * 64,  # the real digest once the file exists
        "feature_dim": model.feature_dim,
        "flow": model.config_dict(),
        "backbone": backbone,
        "threshold": _plain_float(threshold),
        "config": config,
        **(extra or {}),
    }
    meta = _recorded(meta)
    validate_meta(meta, where)
    # The spec is made of the recorded values themselves: load compares exactly these.
    spec = model_spec(meta["feature_dim"], meta["flow"], meta["threshold"], meta.get("calibration"))
    spec_bytes = json.dumps(spec, sort_keys=True).encode("utf-8")
    tensors[SPEC_TENSOR] = torch.frombuffer(bytearray(spec_bytes), dtype=torch.uint8)
    check_tensors(tensors, where)
    check_calibration_count(meta, tensors[SCORES_TENSOR].numel(), where)
    try:  # load refuses NaN/Infinity anywhere in the JSON, so they are never written
        text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        raise CheckpointError(f"{where} would record a NaN or infinite setting") from None
    if len(text.encode("utf-8")) > MAX_META_BYTES or len(spec_bytes) > MAX_SPEC_BYTES:
        raise CheckpointError(
            f"{where} would record a {META_NAME} over load's {MAX_META_BYTES >> 20} MiB cap; "
            "record less (the config, proxy or calibration record is too large)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    meta["sha256"] = _write_weights(folder / WEIGHTS_NAME, tensors)
    atomic_write_text(folder / META_NAME, json.dumps(meta, indent=2, sort_keys=True))
    return folder / WEIGHTS_NAME


def _recorded(meta: dict) -> dict:
    """``meta`` as it is written: plain JSON values, every string (keys included) made
    displayable, the history thinned to :data:`MAX_HISTORY` rows."""
    meta = json.loads(json.dumps(meta))  # plain JSON types; a NaN stays for the checks
    stack: list[dict | list] = [meta]
    while stack:  # no recursion: the schema refuses deep nesting, with a named field
        node = stack.pop()
        children: list
        if isinstance(node, dict):
            items = [(display_text(k), v) for k, v in node.items()]
            node.clear()
            node.update((k, display_text(v) if isinstance(v, str) else v) for k, v in items)
            children = list(node.values())
        else:
            node[:] = [display_text(v) if isinstance(v, str) else v for v in node]
            children = node
        stack.extend(v for v in children if isinstance(v, (dict, list)))
    history = meta.get("history")
    if isinstance(history, list) and len(history) > MAX_HISTORY:
        last = len(history) - 1
        meta["history"] = [history[round(i * last / (MAX_HISTORY - 1))] for i in range(MAX_HISTORY)]
    return meta


def _plain_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"threshold {value!r} is not a number") from None


def _write_weights(weights: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write atomically; return the file's sha256."""

    def write(tmp: Path) -> str:
        # One metadata key only: safetensors writes its metadata map in hash order, and two
        # keys would make identical checkpoints differ byte-wise from run to run.
        save_file(tensors, str(tmp), metadata={"format": f"{FORMAT}/{FORMAT_VERSION}"})
        return file_sha256(tmp)

    return atomic_write(weights, write)
