"""What a checkpoint's weights file must hold, checked by save and by load.

``model.safetensors`` holds ``model.*`` (the state dict), ``val_real_scores`` (N,) and
``spec``: the model-defining model.json fields (:func:`model_spec`) as UTF-8 bytes, hashed
with the weights, so a hand-edited threshold, clamp or calibration record is refused
(:func:`check_spec`). The tensors' names, shapes and dtypes are checked against the model the
config describes from the header alone (:func:`check_header`), then every float must be
finite and every stored permutation a permutation (:func:`check_tensors`);
``calibration.n`` must be the number of stored calibration scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..core.fileio import display_path
from ..errors import CheckpointError, first_line
from ..flow.config import FlowConfig
from ..flow.model import CLIPFlow
from .schema import META_NAME, display_text, short

SPEC_TENSOR = "spec"
SCORES_TENSOR = "val_real_scores"
SPEC_FIELDS = ("feature_dim", "flow", "threshold", "calibration")  # calibration: when recorded
MAX_SPEC_BYTES = 2**20  # a spec is a few hundred bytes (a calibration root at most ~25 KB)


def model_spec(
    feature_dim: int, flow: dict, threshold: float, calibration: dict | None = None
) -> dict:
    """The fields that decide the scores, labels and p-values; stored in the hashed weights
    too. ``calibration`` (clipflow-calibrate's record of whose photos the calibration scores
    are) only when the checkpoint has one."""
    flow = {k: v for k, v in flow.items() if k != "feature_dim"}
    spec = {"feature_dim": feature_dim, "flow": flow, "threshold": threshold}
    if calibration is not None:
        spec["calibration"] = calibration
    return spec


def no_json_constant(name: str) -> None:
    # json accepts NaN/Infinity by default; a checkpoint written by clipflow never holds them.
    raise ValueError(f"{name} is not valid JSON")


def expected_tensors(feature_dim: int, cfg: FlowConfig, shown: str) -> dict[str, tuple]:
    """name -> (shape, dtype) of the model the config describes, built without memory."""
    try:
        with torch.device("meta"):
            model = CLIPFlow(feature_dim, cfg)
    except Exception as err:  # FrEIA's own refusals (e.g. a dimension it cannot split)
        raise CheckpointError(
            f"the flow config of {shown} cannot be built ({display_text(first_line(err))})"
        ) from None
    return {f"model.{k}": (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


_DTYPES = {"F32": torch.float32, "I64": torch.int64, "U8": torch.uint8}


def check_header(weights: Path, expected: dict[str, tuple], shown: str) -> int:
    """Names, shapes and dtypes of the stored tensors vs the config's model, from the header;
    returns the number of calibration scores stored."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {
                k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()
            }
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {shown}: {display_text(first_line(err))}") from None
    extra = {SCORES_TENSOR: "F32", SPEC_TENSOR: "U8"}
    missing = sorted(set(expected) - set(stored))
    unknown = sorted(set(stored) - set(expected) - set(extra))
    if missing or unknown:
        what = (
            f"missing {missing[0]}" if missing else f"unexpected tensor {display_text(unknown[0])}"
        )
        raise CheckpointError(
            f"{shown} does not fit the feature_dim/flow of its {META_NAME} ({what})"
        )
    for name, (shape, dtype) in stored.items():
        if name in extra:
            ok = dtype == extra[name] and len(shape) == 1
            want = f"1-d {extra[name]}"
        else:
            ok = shape == expected[name][0] and _DTYPES.get(dtype) == expected[name][1]
            want = f"{list(expected[name][0])} {expected[name][1]}"
        if not ok:
            raise CheckpointError(
                f"{shown} does not fit the feature_dim/flow of its {META_NAME} ({name} is "
                f"{list(shape)} {dtype}, the config needs {want})"
            )
    return stored[SCORES_TENSOR][0][0] if SCORES_TENSOR in stored else 0


def check_calibration_count(meta: dict, n_scores: int, where: Any) -> None:
    """``calibration.n`` is the number of calibration scores the weights hold: the p-values
    and ``n_cal`` of every decision are computed from those scores, not from the record."""
    calibration = meta.get("calibration")
    if calibration is not None and calibration["n"] != n_scores:
        raise CheckpointError(
            f"{where}: {META_NAME} field calibration.n ({calibration['n']}) is not the number "
            f"of calibration scores stored ({n_scores}); restore it or re-run clipflow-calibrate"
        )


def check_tensors(tensors: dict[str, torch.Tensor], where: Any) -> None:
    """Every float finite (NaN weights would score NaN and label it real), every stored
    permutation a permutation (a bad index would fail only when scoring)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{where}: tensor {name} holds NaN or infinite values")
        if name.endswith(".perm") and not _is_permutation(t, tensors.get(name + "_inv")):
            raise CheckpointError(f"{where}: tensor {name} is not a permutation")


def _is_permutation(perm: torch.Tensor, inverse: torch.Tensor | None) -> bool:
    n = perm.numel()
    if perm.dtype != torch.int64 or not torch.equal(perm.sort().values, torch.arange(n)):
        return False
    return (
        inverse is not None
        and inverse.shape == perm.shape
        and torch.equal(inverse[perm], torch.arange(n))
    )


def read_spec(weights: Path, shown: str) -> bytes:
    """The ``spec`` tensor's bytes alone (a few hundred); every checkpoint must have one."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            if SPEC_TENSOR not in f.keys():
                # Checkpoints of clipflow's first development days had none; without it any
                # hand edit of threshold or clamp would be used, so none is loaded.
                raise CheckpointError(
                    f"{shown} has no {SPEC_TENSOR} tensor (the hashed copy of the model.json "
                    "fields that decide scores and labels): it was stripped, or written by a "
                    "clipflow from before checkpoints had one; retrain it with clipflow-train"
                )
            spec = f.get_slice(SPEC_TENSOR)
            shape = spec.get_shape()
            if spec.get_dtype() != "U8" or len(shape) != 1 or shape[0] > MAX_SPEC_BYTES:
                raise CheckpointError(
                    f"{shown}: its {SPEC_TENSOR} tensor is not 1-d bytes of at most "
                    f"{MAX_SPEC_BYTES >> 10} KiB"
                )
            return f.get_tensor(SPEC_TENSOR).numpy().tobytes()
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {shown}: {display_text(first_line(err))}") from None


def check_spec(spec: bytes, meta: dict, weights: Path) -> None:
    """The JSON's feature dim, flow, threshold and calibration record (present or absent)
    must be those hashed into the weights."""
    shown = display_path(weights)
    try:
        stored = json.loads(spec.decode("utf-8"), parse_constant=no_json_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        stored = None
    if not isinstance(stored, dict) or not set(stored) <= set(SPEC_FIELDS):
        raise CheckpointError(f"{shown}: its {SPEC_TENSOR} tensor is unreadable")
    current = model_spec(
        meta["feature_dim"], meta["flow"], meta["threshold"], meta.get("calibration")
    )
    for key in SPEC_FIELDS:
        if stored.get(key) != current.get(key):
            hint = (
                "restore it or re-run clipflow-calibrate on the source checkpoint"
                if key == "calibration"
                else "restore it or retrain"
            )
            raise CheckpointError(
                f"{META_NAME} field {key} ({short(current.get(key))}) differs from the value "
                f"hashed into {display_path(weights.name)} ({short(stored.get(key))}): the "
                f"JSON was edited; {hint}"
            )
