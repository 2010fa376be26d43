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

Photos with the same content (sha256 of the file's bytes) are counted once: 25 copies of one
photo are one photo, not 25 exchangeable draws (``n_duplicates`` in the record). What the run
finds too small is logged and recorded as ``warnings`` (clipflow/eval/checks.py), and
:func:`calibration_summary` is what clipflow-calibrate prints.
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

from ..backbones.preprocess import build_transform
from ..checkpoints.backbone_match import checkpoint_backbone
from ..checkpoints.checkpoint import META_NAME, WEIGHTS_NAME, Checkpoint, load_checkpoint
from ..checkpoints.save import save_checkpoint
from ..core.fileio import path_key_bytes, to_jsonable
from ..core.machine import resolve_device
from ..core.versions import package_versions
from ..data.train_images import MIN_IMAGES, TrainSplit, discover_train_images
from ..errors import ClipflowError, DataError
from ..eval.checks import CALIBRATE_REMEDY, calibration_warnings, report
from ..eval.conformal import (
    COMMON_LEVELS,
    CalibrationError,
    ConformalCalibration,
    levels_text,
    reals_needed,
)
from ..features.cache import feature_cache
from ..features.cached_extract import cached_extract
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


def run_calibrate(s: CalibrateSettings, out: Path, backbone=None) -> Path:
    """Score ``s.data.real_root`` (refitting first if asked), write the new checkpoint to
    ``out``; returns its weights path. Every input is checked before the backbone loads.
    ``backbone``: a ready one (your own extractor, docs/backbones.md) instead of the
    checkpoint's, checked against its record."""
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
    split, copies = drop_copies(split)
    cal_paths = split.val if s.refit else split.train
    require_enough(len(cal_paths), s, "distinct usable", len(copies))
    device = resolve_device(s.device)
    backbone = checkpoint_backbone(ckpt, s.backbone, device, ready=backbone)
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
    extra["warnings"] = calibrate_warnings(ckpt, extra, scores, threshold, copies)
    extra["calibration"] = {
        "n": len(used),
        "fingerprint": fingerprint(used, root),
        "root": str(root),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "refit": s.refit,
        "n_skipped": len(cal_paths) - len(used) + len(split.skipped),
        "n_duplicates": len(copies),
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


def require_enough(n: int, s: CalibrateSettings, what: str, copies: int = 0) -> None:
    """At least ``min_reals`` calibration photos (never under :data:`MIN_IMAGES`, the least
    any calibration can use), and enough for ``fpr`` when given. ``copies``: photos dropped
    as content duplicates of others, said in the refusal."""
    need = max(s.min_reals, MIN_IMAGES, reals_needed(s.fpr) if s.fpr is not None else 0)
    if n < need:
        part = f" (the held-out holdout={s.holdout:g} share; refit=true)" if s.refit else ""
        why = f"fpr={s.fpr:g} needs {reals_needed(s.fpr)}" if s.fpr is not None else ""
        dup = f" after dropping {copies} duplicate(s) (same file content)" if copies else ""
        raise CalibrationError(
            f"{s.data.real_root}: {n} {what} real photos for calibration{part}{dup}, at least "
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
    head = train_head(ts, backbone, split, feature_cache(s.data), device, remedy=CALIBRATE_REMEDY)
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
        "warnings": head.warnings,
        "speed": head.speed,  # compile / CUDA graph in effect (#25)
    }
    # The held-out photos again (from the cache): which of them were read, and their scores
    # under the new flow, exactly as calibrate() computed them for the threshold.
    used, scores = _score(s, head.model, backbone, split.val, device)
    return head.model, head.threshold, scores, used, extra, to_jsonable(ts)


def drop_copies(split: TrainSplit) -> tuple[TrainSplit, list[Path]]:
    """``split`` with each photo's content once (its first path: train before val, so a
    held-out copy of a fitted photo is dropped too), and the paths dropped. Content is the
    sha256 of the file's bytes: byte-identical copies (what a folder of copies holds) are
    found without decoding; a re-encoded or resized copy is another file and is not."""
    seen: set[str] = set()
    kept: dict[str, list[Path]] = {"train": [], "val": []}
    copies: list[Path] = []
    for part in ("train", "val"):
        for path in getattr(split, part):
            digest = _content_hash(Path(path))
            if digest is not None and digest in seen:
                copies.append(path)
                continue
            seen.add(digest or f"unread:{path}")  # unreadable: extraction says why later
            kept[part].append(path)
    if copies:
        log.warning(
            "%d photo(s) have the same content as another (sha256 of the file): each content "
            "counted once",
            len(copies),
        )
    return replace(split, train=kept["train"], val=kept["val"]), copies


def _content_hash(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def calibrate_warnings(ckpt: Checkpoint, extra: dict, scores, threshold: float, copies) -> dict:
    """The new checkpoint's warnings, logged: duplicates dropped, calibration size and
    threshold share on the new calibration. A refit's come from its training (which logged
    them, on these same held-out photos); without refit the input's flow is kept, and so is
    its short-training warning."""
    dup = (
        f"{len(copies)} photo(s) dropped as copies of others (same file content): identical "
        "photos are not exchangeable draws, so each content counts once"
        if copies
        else None
    )
    if "warnings" in extra:  # refit: train_head's, on the held-out photos
        return {**extra["warnings"], **report({"duplicates": dup})}
    carried = ckpt.meta.get("warnings", {}).get("short_training")
    found = report(
        {"duplicates": dup, **calibration_warnings(scores.numpy(), threshold, CALIBRATE_REMEDY)}
    )
    return {**({"short_training": carried} if carried else {}), **found}


def calibration_summary(ckpt: Checkpoint) -> str:
    """What clipflow-calibrate prints: photos used / skipped / duplicates, the score
    threshold of the p-value decision at the common levels, the smallest level reachable."""
    record = ckpt.meta.get("calibration", {})
    cal = ConformalCalibration(ckpt.val_real_scores.numpy())
    cuts = []
    for a in COMMON_LEVELS:
        try:
            cuts.append(f"fpr={a:g}: score > {cal.threshold(a):.4f}")
        except CalibrationError:
            cuts.append(f"fpr={a:g}: n/a (needs {reals_needed(a)} reals)")
    return (
        f"photos: {cal.n} used, {record.get('n_skipped', 0)} skipped, "
        f"{record.get('n_duplicates', 0)} duplicate(s) dropped\n"
        f"decision thresholds (p_value <= fpr): {'; '.join(cuts)}\n"
        f"supported levels: {levels_text(cal.n)}; smallest 1/(n+1) with n = {cal.n}\n"
    )


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
