"""Self-describing checkpoints: the trained parts only (DR + flow), safetensors + JSON.

A checkpoint is a pair in one folder::

    model.safetensors   tensors: ``model.*`` (state dict), ``val_real_scores`` (N,), and
                        ``spec`` (the model-defining JSON fields, as UTF-8 bytes)
    model.json          format version, feature dim, flow config, backbone, threshold,
                        resolved run config, sha256 of the safetensors file

Both are written to temporary files and moved into place with ``os.replace``; the JSON
goes last and carries the hash, so a half-written or truncated pair is refused on load.
The JSON is checked field by field (types, ranges, caps: :mod:`clipflow.checkpoints.schema`)
before anything is allocated, and its model-defining fields (feature dim, flow, threshold) must
equal the hashed ``spec`` tensor, so a hand-edited threshold or clamp is refused rather than
silently used. No pickle is involved anywhere (safetensors cannot execute code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..backbones.backbone import identity_mismatch
from ..backbones.config import BackboneConfig
from ..backbones.protocol import CUSTOM
from ..core.fileio import atomic_write, atomic_write_text, file_sha256
from ..core.versions import __version__
from ..errors import CheckpointError, first_line
from ..flow.config import FlowConfig
from ..flow.model import CLIPFlow
from .hub import fetch_checkpoint, is_hub_ref
from .schema import FORMAT, FORMAT_VERSION, META_NAME, WEIGHTS_NAME, short, validate_meta

SPEC_TENSOR = "spec"
SCORES_TENSOR = "val_real_scores"


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


def model_spec(feature_dim: int, flow: dict, threshold: float) -> dict:
    """The fields that decide the scores and labels; stored in the hashed weights too."""
    flow = {k: v for k, v in flow.items() if k != "feature_dim"}
    return {"feature_dim": feature_dim, "flow": flow, "threshold": threshold}


def _flow_config(meta: dict) -> FlowConfig:
    """The validated flow fields; an optional one that is absent keeps its default."""
    flow = meta["flow"]
    return FlowConfig(**{f.name: flow[f.name] for f in fields(FlowConfig) if f.name in flow})


# ----------------------------------------------------------------------------- save


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
    non-finite threshold or weights).
    """
    folder = Path(folder)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    scores = val_real_scores if val_real_scores is not None else torch.empty(0)
    tensors[SCORES_TENSOR] = scores.detach().float().cpu().reshape(-1).contiguous()
    spec = model_spec(model.feature_dim, model.config_dict(), _plain_float(threshold))
    tensors[SPEC_TENSOR] = torch.tensor(
        list(json.dumps(spec, sort_keys=True).encode("utf-8")), dtype=torch.uint8
    )
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "clipflow_version": __version__,
        "weights": WEIGHTS_NAME,
        "sha256": "0" * 64,  # the real digest once the file exists
        "feature_dim": model.feature_dim,
        "flow": model.config_dict(),
        "backbone": backbone,
        "threshold": spec["threshold"],
        "config": config,
        **(extra or {}),
    }
    where = f"the checkpoint for {folder}"
    validate_meta(json.loads(json.dumps(meta)), where)
    _check_tensors(tensors, where)
    try:  # load refuses NaN/Infinity anywhere in the JSON, so they are never written
        json.dumps(meta, allow_nan=False)
    except ValueError:
        raise CheckpointError(f"{where} would record a NaN or infinite setting") from None
    folder.mkdir(parents=True, exist_ok=True)
    meta["sha256"] = _write_weights(folder / WEIGHTS_NAME, tensors)
    atomic_write_text(folder / META_NAME, json.dumps(meta, indent=2, sort_keys=True))
    return folder / WEIGHTS_NAME


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


# ----------------------------------------------------------------------------- load


def resolve_checkpoint_path(path: str | Path) -> tuple[Path, Path]:
    """(weights, json) for a checkpoint file, its JSON, the folder holding them, or a Hub
    checkpoint ``hf://OWNER/NAME[@REVISION]`` (fetched into the Hugging Face cache)."""
    if is_hub_ref(path):
        path = fetch_checkpoint(str(path))
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(
            f"checkpoint not found: {p} — pass ckpt=<run dir, model.safetensors or hf://OWNER/NAME>"
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
    """The JSON of a checkpoint, every field validated (see :func:`validate_meta`)."""
    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(
            f"checkpoint metadata {meta_path} is unreadable ({first_line(err)}); "
            "re-run clipflow-train"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a clipflow checkpoint")
    if meta.get("format_version") != FORMAT_VERSION or isinstance(meta.get("format_version"), bool):
        raise CheckpointError(
            f"checkpoint format version {meta.get('format_version')} is not supported by "
            f"clipflow {__version__} (expects {FORMAT_VERSION}); retrain or use the clipflow "
            "version that wrote it"
        )
    validate_meta(meta, meta_path)
    return meta


def _no_constant(name: str) -> None:
    # json accepts NaN/Infinity by default; a checkpoint written by clipflow never holds them.
    raise ValueError(f"{name} is not valid JSON")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model from a checkpoint alone; refuse corrupt, edited or mismatched files.

    Order matters: the JSON's fields and caps first, then the hash, then the tensor shapes
    against a model built on the meta device (no memory), and only then the tensors.
    """
    weights, meta_path = resolve_checkpoint_path(path)
    meta = read_meta(meta_path)
    if file_sha256(weights) != meta["sha256"]:
        raise CheckpointError(
            f"{weights} does not match the hash in {meta_path.name} (truncated or replaced); "
            "retrain or restore it"
        )
    flow_cfg = _flow_config(meta)
    expected = _expected_tensors(meta["feature_dim"], flow_cfg, weights)
    _check_spec(_read_spec(weights), meta, weights)  # names the edited JSON field, if any
    _check_header(weights, expected)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {weights}: {first_line(err)}") from None
    _check_tensors(tensors, weights)
    model = CLIPFlow(meta["feature_dim"], flow_cfg)
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{weights} does not fit its own config ({first_line(err)})"
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


def _expected_tensors(feature_dim: int, cfg: FlowConfig, weights: Path) -> dict[str, tuple]:
    """name -> (shape, dtype) of the model the config describes, built without memory."""
    try:
        with torch.device("meta"):
            model = CLIPFlow(feature_dim, cfg)
    except Exception as err:  # FrEIA's own refusals (e.g. a dimension it cannot split)
        raise CheckpointError(
            f"the flow config of {weights} cannot be built ({first_line(err)})"
        ) from None
    return {f"model.{k}": (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


_DTYPES = {"F32": torch.float32, "I64": torch.int64, "U8": torch.uint8}


def _check_header(weights: Path, expected: dict[str, tuple]) -> None:
    """Names, shapes and dtypes of the stored tensors vs the config's model, from the header."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {
                k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()
            }
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {weights}: {first_line(err)}") from None
    extra = {SCORES_TENSOR: "F32", SPEC_TENSOR: "U8"}
    missing = sorted(set(expected) - set(stored))
    unknown = sorted(set(stored) - set(expected) - set(extra))
    if missing or unknown:
        what = f"missing {missing[0]}" if missing else f"unexpected tensor {unknown[0]}"
        raise CheckpointError(
            f"{weights} does not fit the feature_dim/flow of its {META_NAME} ({what})"
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
                f"{weights} does not fit the feature_dim/flow of its {META_NAME} ({name} is "
                f"{list(shape)} {dtype}, the config needs {want})"
            )


def _check_tensors(tensors: dict[str, torch.Tensor], where: Any) -> None:
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


def _read_spec(weights: Path) -> torch.Tensor | None:
    """The ``spec`` tensor alone (a few hundred bytes), or None in an older checkpoint."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            if SPEC_TENSOR not in f.keys():
                return None
            if f.get_slice(SPEC_TENSOR).get_dtype() != "U8":
                raise CheckpointError(f"{weights}: its {SPEC_TENSOR} tensor is not bytes")
            return f.get_tensor(SPEC_TENSOR)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {weights}: {first_line(err)}") from None


def _check_spec(spec: torch.Tensor | None, meta: dict, weights: Path) -> None:
    """The JSON's feature dim, flow and threshold must be those hashed into the weights."""
    if spec is None:  # written before the spec tensor existed: the schema checks still held
        return
    try:
        stored = json.loads(bytes(spec.reshape(-1).tolist()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{weights}: its {SPEC_TENSOR} tensor is unreadable") from None
    current = model_spec(meta["feature_dim"], meta["flow"], meta["threshold"])
    if not isinstance(stored, dict):
        raise CheckpointError(f"{weights}: its spec tensor is unreadable")
    for key in ("feature_dim", "flow", "threshold"):
        if stored.get(key) != current[key]:
            raise CheckpointError(
                f"{META_NAME} field {key} ({short(current[key])}) differs from the value "
                f"hashed into {weights.name} ({short(stored.get(key))}): the JSON was edited; "
                "restore it or retrain"
            )


# ----------------------------------------------------------------------------- use


def require_feature_dim(ckpt: Checkpoint, backbone) -> None:
    """The one check that a backbone's features fit a checkpoint's flow."""
    if backbone.feature_dim != ckpt.model.feature_dim:
        raise CheckpointError(
            f"checkpoint expects {ckpt.model.feature_dim}-d features, backbone {backbone.cfg.name} "
            f"gives {backbone.feature_dim}-d; use the backbone it was trained with "
            f"({ckpt.backbone.get('name')})"
        )


def require_backbone_identity(ckpt: Checkpoint, backbone) -> None:
    """A backbone given ready-made (the Python API) must be the one the checkpoint recorded:
    family, name, layers and feature size; a custom extractor also its ``weights_id``."""
    actual = backbone.describe()
    recorded = dict(ckpt.backbone)
    if recorded.get("family", "open_clip") != CUSTOM:
        recorded.pop("weights_id", None)  # a local copy of the same weights is fine
    problem = identity_mismatch(recorded, actual)
    if problem:
        raise CheckpointError(
            f"backbone {actual.get('name')!r} does not match checkpoint {ckpt.path}: {problem}"
        )
    require_feature_dim(ckpt, backbone)


def eval_backbone_config(ckpt: Checkpoint, overrides: dict) -> BackboneConfig:
    """The checkpoint's backbone, with the user's overrides (e.g. a local weights file)."""
    keys = ("name", "pretrained", "precision", "preprocess", "family", "layers", "layer_pool")
    recorded = {k: ckpt.backbone.get(k) for k in keys}
    recorded = {k: v for k, v in recorded.items() if v is not None or k in ("pretrained", "layers")}
    return BackboneConfig(**{**recorded, **overrides})
