"""Self-describing checkpoints: the trained parts only (DR + flow), safetensors + JSON.

A checkpoint is a pair in one folder::

    model.safetensors   tensors: ``model.*`` (state dict), ``val_real_scores`` (N,), and
                        ``spec`` (the model-defining JSON fields, as UTF-8 bytes)
    model.json          format version, feature dim, flow config, backbone, threshold,
                        resolved run config, sha256 of the safetensors file

Both are written to temporary files and moved into place with ``os.replace``; the JSON
goes last and carries the hash, so a half-written or truncated pair is refused on load.
The JSON is read only up to :data:`~clipflow.checkpoints.schema.MAX_META_BYTES` and checked
field by field (types, ranges, caps, displayable strings: :mod:`clipflow.checkpoints.schema`)
before anything is allocated. Its model-defining fields (feature dim, flow, threshold, and the
``calibration`` record when there is one) must equal the hashed ``spec`` tensor, which every
checkpoint must hold, so a hand-edited threshold, clamp or calibration record is refused
rather than silently used; ``calibration.n`` must be the number of stored calibration scores.
No pickle is involved anywhere (safetensors cannot execute code).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..backbones.backbone import Backbone, as_backbone, identity_mismatch, load_backbone
from ..backbones.config import CUSTOM, BackboneConfig
from ..backbones.protocol import ExtractorBackbone
from ..core.fileio import atomic_write, atomic_write_text, display_path, file_sha256
from ..core.versions import __version__
from ..errors import CheckpointError, first_line
from ..flow.config import FlowConfig
from ..flow.model import CLIPFlow
from .hub import fetch_checkpoint, is_hub_ref
from .schema import (
    FORMAT,
    FORMAT_VERSION,
    MAX_HISTORY,
    MAX_META_BYTES,
    META_NAME,
    WEIGHTS_NAME,
    display_text,
    short,
    validate_meta,
)

SPEC_TENSOR = "spec"
SCORES_TENSOR = "val_real_scores"
SPEC_FIELDS = ("feature_dim", "flow", "threshold", "calibration")  # calibration: when recorded
MAX_SPEC_BYTES = 2**20  # a spec is a few hundred bytes (a calibration root at most ~25 KB)


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
    _check_tensors(tensors, where)
    _check_calibration_count(meta, tensors[SCORES_TENSOR].numel(), where)
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


# ----------------------------------------------------------------------------- load


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
            meta = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
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


def _no_constant(name: str) -> None:
    # json accepts NaN/Infinity by default; a checkpoint written by clipflow never holds them.
    raise ValueError(f"{name} is not valid JSON")


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
    expected = _expected_tensors(meta["feature_dim"], flow_cfg, shown)
    _check_spec(_read_spec(weights, shown), meta, weights)  # names the edited JSON field
    n_scores = _check_header(weights, expected, shown)
    _check_calibration_count(meta, n_scores, shown)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {shown}: {display_text(first_line(err))}") from None
    _check_tensors(tensors, shown)
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


def _expected_tensors(feature_dim: int, cfg: FlowConfig, shown: str) -> dict[str, tuple]:
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


def _check_header(weights: Path, expected: dict[str, tuple], shown: str) -> int:
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


def _check_calibration_count(meta: dict, n_scores: int, where: Any) -> None:
    """``calibration.n`` is the number of calibration scores the weights hold: the p-values
    and ``n_cal`` of every decision are computed from those scores, not from the record."""
    calibration = meta.get("calibration")
    if calibration is not None and calibration["n"] != n_scores:
        raise CheckpointError(
            f"{where}: {META_NAME} field calibration.n ({calibration['n']}) is not the number "
            f"of calibration scores stored ({n_scores}); restore it or re-run clipflow-calibrate"
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


def _read_spec(weights: Path, shown: str) -> bytes:
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


def _check_spec(spec: bytes, meta: dict, weights: Path) -> None:
    """The JSON's feature dim, flow, threshold and calibration record (present or absent)
    must be those hashed into the weights."""
    shown = display_path(weights)
    try:
        stored = json.loads(spec.decode("utf-8"), parse_constant=_no_constant)
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
            f"backbone {actual.get('name')!r} does not match checkpoint "
            f"{display_path(ckpt.path or '?')}: {problem}"
        )
    require_feature_dim(ckpt, backbone)


def eval_backbone_config(ckpt: Checkpoint, overrides: dict) -> BackboneConfig:
    """The checkpoint's backbone, with the user's overrides (e.g. a local weights file).

    A custom extractor's recorded ``factory`` is never used: loading a checkpoint runs no code
    it names (docs/detect.md), so the user passes ``backbone.factory`` (or the extractor)."""
    keys = ("name", "pretrained", "precision", "preprocess", "family", "layers", "layer_pool")
    recorded = {k: ckpt.backbone.get(k) for k in keys}
    recorded = {k: v for k, v in recorded.items() if v is not None or k in ("pretrained", "layers")}
    cfg = BackboneConfig(**{**recorded, **overrides})
    if cfg.family == CUSTOM:
        _check_custom_overrides(ckpt, overrides)
    return cfg


def _check_custom_overrides(ckpt: Checkpoint, overrides: dict) -> None:
    """A custom extractor is rebuilt by the factory the user names, and nothing else applies."""
    shown = display_path(ckpt.path or "the checkpoint")
    if not overrides.get("factory"):
        recorded = ckpt.backbone.get("factory")
        example = recorded or "package.module:make_extractor"
        trained = f" (it recorded factory {recorded})" if recorded else ""
        raise CheckpointError(
            f"{shown} was trained with the custom extractor {ckpt.backbone['name']!r}{trained}: "
            f"pass backbone.factory={example} (clipflow runs no code a checkpoint names), or the "
            "extractor itself to the Python API (backbone=extractor); docs/backbones.md"
        )
    other = sorted(set(overrides) - {"factory", "family"})
    if other:
        raise CheckpointError(
            f"backbone.{other[0]} does not apply to the custom extractor of {shown}: its own "
            "describe() and attributes set how it runs; pass only backbone.factory"
        )


def checkpoint_backbone(
    ckpt: Checkpoint, overrides: dict, device, ready=None
) -> Backbone | ExtractorBackbone:
    """The backbone that scores for ``ckpt``, checked against its record: ``ready`` (an object
    given to the Python API), else the recorded one with the user's ``backbone.*`` overrides.
    A custom extractor (given, or built by ``backbone.factory``) must match the recorded
    family, name, ``weights_id`` and feature size; a built-in tower its feature size."""
    if ready is not None:
        backbone = as_backbone(ready)
        require_backbone_identity(ckpt, backbone)
        return backbone
    cfg = eval_backbone_config(ckpt, overrides)
    backbone = load_backbone(cfg, device)
    if cfg.family == CUSTOM:
        require_backbone_identity(ckpt, backbone)
    require_feature_dim(ckpt, backbone)
    return backbone
