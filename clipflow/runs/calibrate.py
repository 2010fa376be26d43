"""clipflow-calibrate's job: a checkpoint + the user's real photos -> a NEW checkpoint whose
calibration scores (``val_real_scores``, the p-values' reference) are those photos' scores.

``refit=false``: the flow and threshold stay; only the calibration scores change.
``refit=true``: the flow is retrained with the checkpoint's own training settings on a part of
the photos (proxies generated from them, as clipflow-train does), and the held-out rest
(``holdout``) gives the threshold and the calibration scores, so no p-value is computed
against an image the flow was fit on.

The record ``calibration: {n, fingerprint, root, date, refit, ...}`` in model.json names the
photos: ``fingerprint`` is a sha256 over each calibration file's path (relative to ``root``,
as bytes, :func:`~clipflow.core.fileio.path_key_bytes`) and size, in sorted order.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..backbones.backbone import load_backbone
from ..backbones.preprocess import build_transform
from ..checkpoints.checkpoint import (
    META_NAME,
    WEIGHTS_NAME,
    Checkpoint,
    eval_backbone_config,
    load_checkpoint,
    require_feature_dim,
    save_checkpoint,
)
from ..core.fileio import path_key_bytes, to_jsonable
from ..core.machine import resolve_device
from ..core.versions import package_versions
from ..data.layouts import discover_train_images
from ..errors import ClipflowError, DataError
from ..eval.conformal import CalibrationError, reals_needed
from ..features.cache import cached_extract, feature_cache
from ..features.loader import Loader
from ..flow.model import score_features
from ..settings.config import CalibrateSettings, TrainSettings, train_settings
from ..transforms.variant import IDENTITY
from .train import train_head

log = logging.getLogger(__name__)

# Loader/cache fields of the calibrate command that replace the checkpoint's when refitting.
_LOADER_FIELDS = (
    "batch_size",
    "num_workers",
    "prefetch_factor",
    "decode",
    "cache",
    "cache_dir",
    "cache_shard_size",
    "max_megapixels",
)
# Fields of the input checkpoint's model.json carried into the new one unchanged (no refit).
_KEPT = ("history", "proxy", "train", "validation")


def run_calibrate(s: CalibrateSettings, out: Path) -> Path:
    """Score ``s.data.real_root`` (refitting first if asked), write the new checkpoint to
    ``out``; returns its weights path. Every input is checked before the backbone loads."""
    if not s.ckpt:
        raise ClipflowError(
            "no checkpoint given — pass ckpt=PATH (model.safetensors or its run folder)"
        )
    if not s.data.real_root:
        raise DataError("no photos given — pass data.real_root=DIR (your own real photos)")
    ckpt = load_checkpoint(s.ckpt)
    out = check_output(Path(out), ckpt)
    root = Path(s.data.real_root).expanduser()
    holdout = s.holdout if s.refit else 0.0
    split = discover_train_images(root, None, holdout, s.seed, setting="data.real_root")
    cal_paths = split.val if s.refit else split.train
    require_enough(len(cal_paths), s, "usable")
    device = resolve_device(s.device)
    backbone = load_backbone(eval_backbone_config(ckpt, s.backbone), device)
    require_feature_dim(ckpt, backbone)
    if s.refit:
        model, threshold, scores, used, extra, config = _refit(s, ckpt, backbone, split, device)
        backbone_record = backbone.describe()
    else:
        used, scores = _score(s, ckpt.model, backbone, cal_paths, device)
        model, threshold, config = ckpt.model, ckpt.threshold, ckpt.meta["config"]
        extra = {k: ckpt.meta[k] for k in _KEPT if k in ckpt.meta}
        backbone_record = ckpt.backbone
    require_enough(len(used), s, "readable and finitely scored")
    extra["versions"] = package_versions()
    extra["calibration"] = {
        "n": len(used),
        "fingerprint": fingerprint(used, root),
        "root": str(root),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "refit": s.refit,
        "n_skipped": len(cal_paths) - len(used) + len(split.skipped),
        "source_sha256": ckpt.sha256,
        **({"holdout": s.holdout, "n_fit": len(split.train)} if s.refit else {}),
    }
    return save_checkpoint(out, model, threshold, backbone_record, config, scores, extra)


def check_output(out: Path, ckpt: Checkpoint) -> Path:
    """The new checkpoint's folder: never the input's, never one holding a checkpoint."""
    source = ckpt.path.parent if ckpt.path is not None else None
    if source is not None and out.exists() and os.path.samefile(out, source):
        raise ClipflowError(
            f"out={out} is the input checkpoint's folder: clipflow-calibrate never overwrites "
            "a checkpoint; choose a new out=DIR"
        )
    if (out / META_NAME).exists() or (out / WEIGHTS_NAME).exists():
        raise ClipflowError(f"out={out} already holds a checkpoint; choose a new out=DIR")
    return out


def require_enough(n: int, s: CalibrateSettings, what: str) -> None:
    """At least ``min_reals`` calibration photos, and enough for ``fpr`` when given."""
    need = max(s.min_reals, reals_needed(s.fpr) if s.fpr is not None else 0)
    if n < need:
        part = f" (the held-out holdout={s.holdout:g} share; refit=true)" if s.refit else ""
        why = f"fpr={s.fpr:g} needs {reals_needed(s.fpr)}" if s.fpr is not None else ""
        raise CalibrationError(
            f"{s.data.real_root}: {n} {what} real photos for calibration{part}, at least "
            f"{need} needed (min_reals={s.min_reals}{'; ' + why if why else ''}): add photos"
            + (" or raise holdout" if s.refit else "")
        )


def _score(s: CalibrateSettings, model, backbone, paths, device):
    """(paths read and scored, their scores) through the feature cache. A photo the flow
    scores NaN or inf is skipped like an unreadable one (a warning, counted in the record's
    n_skipped): clipflow-detect decides nothing from such a score, so it is no reference."""
    fs = cached_extract(
        backbone,
        paths,
        build_transform(backbone),
        [IDENTITY],
        feature_cache(s.data),
        device,
        Loader.from_data(s.data),
        seed=s.seed,
        desc="calibration features",
    )
    for path, reason in fs.skipped:
        log.warning("skipped %s: %s", path, reason)
    scores = score_features(model.to(device), fs.features[0], device=device)
    finite = torch.isfinite(scores)
    for path, value in zip(fs.paths, scores.tolist()):
        if not math.isfinite(value):
            log.warning("skipped %s: score is %s (not a finite number)", path, value)
    return [p for p, ok in zip(fs.paths, finite.tolist()) if ok], scores[finite]


def refit_settings(s: CalibrateSettings, ckpt: Checkpoint) -> TrainSettings:
    """The checkpoint's training settings, on the user's photos and this command's loader."""
    config = {k: v for k, v in ckpt.meta["config"].items() if k != "auto"}
    try:
        ts = train_settings(config)
    except ClipflowError as err:
        raise CalibrationError(
            f"cannot refit: the checkpoint's training settings are not usable here ({err}); "
            "use refit=false"
        ) from None
    loader = {k: getattr(s.data, k) for k in _LOADER_FIELDS}
    data = replace(ts.data, train_root=s.data.real_root, val_root=None, per_class=None, **loader)
    return replace(ts, data=replace(data, val_fraction=s.holdout), device=s.device)


def _refit(s: CalibrateSettings, ckpt: Checkpoint, backbone, split, device):
    ts = refit_settings(s, ckpt)
    log.info(
        "refitting on %d photos; %d held out for calibration", len(split.train), len(split.val)
    )
    head = train_head(ts, backbone, split, feature_cache(s.data), device)
    train = {
        **ckpt.meta.get("train", {"mode": ts.train.mode}),
        "n_images": len(head.train_paths),
        "classes": split.classes,
        "n_skipped": len(split.skipped) + len(head.skipped),
        "epochs": ts.train.resolved_epochs(),
    }
    extra = {
        "history": head.history,
        "proxy": ckpt.meta.get("proxy", {}),
        "train": train,
        "validation": head.validation,
        "speed": head.speed,  # compile / CUDA graph in effect (#25)
    }
    # The held-out photos again (from the cache): which of them were read, and their scores
    # under the new flow, exactly as calibrate() computed them for the threshold.
    used, scores = _score(s, head.model, backbone, split.val, device)
    return head.model, head.threshold, scores, used, extra, to_jsonable(ts)


def fingerprint(paths, root: Path) -> str:
    """sha256 over (relative path bytes, size) of each file, sorted: which photos calibrated."""
    h = hashlib.sha256()
    for rel, size in sorted(_entry(Path(p), root) for p in paths):
        h.update(rel + b"\0" + str(size).encode() + b"\n")
    return h.hexdigest()


def _entry(path: Path, root: Path) -> tuple[bytes, int]:
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        rel = str(path)
    return path_key_bytes(rel), path.stat().st_size
