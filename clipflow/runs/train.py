"""The training job: run_train (settings, run_dir) and the head it trains (train_head).

folder → images → (proxy) → backbone → features → flow → threshold → checkpoint.
Each step is a function of its own module; this file only wires them and writes files
(with :class:`TrainingWatch`: metrics.csv, TensorBoard, loss.png as the run trains).
The stages are public so that paper/experiments.py, calibrate.py and extract.py compose the
same steps: what training reads (train_features, validation_features, the proxies, views)
is :mod:`clipflow.runs.train_data`, the threshold (calibrate) :mod:`clipflow.runs.threshold`;
evaluation is :mod:`clipflow.runs.evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..backbones.autoencoder import check_autoencoder_available
from ..backbones.backbone import (
    as_backbone,
    check_weights_available,
    compile_status,
    load_backbone,
    speed_line,
)
from ..backbones.protocol import BackboneProtocol, ExtractorBackbone
from ..checkpoints.save import save_checkpoint
from ..core.fileio import atomic_write_text, to_jsonable
from ..core.machine import resolve_device
from ..core.versions import package_versions
from ..data.train_images import TrainSplit, discover_train_images
from ..errors import ClipflowError, DataError
from ..eval.checks import TRAIN_REMEDY, training_warnings
from ..eval.report import plot_loss, skipped_text, tensorboard_writer, write_history
from ..features.cache import FeatureCache, feature_cache
from ..flow.fit import fit
from ..flow.model import CLIPFlow
from ..settings.config import TrainSettings
from .threshold import calibrate
from .train_data import (
    Device,
    augmentation,
    n_views,
    train_features,
    validation_features,
    validation_paths,
)

log = logging.getLogger(__name__)

OnEpoch = Callable[[int, CLIPFlow, list[dict]], None]  # (epoch, model, history) after each


def build_model(feature_dim: int, settings: TrainSettings) -> CLIPFlow:
    """A freshly initialised head, identical for identical seeds, without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return CLIPFlow(feature_dim, settings.flow)


@dataclass
class TrainedHead:
    """A trained and calibrated flow with what its checkpoint records."""

    model: CLIPFlow
    threshold: float
    val_real_scores: torch.Tensor
    history: list[dict]
    validation: dict
    train_paths: list[str]
    skipped: list[tuple[str, str]]
    speed: dict  # what the fast path ran as: compile, cuda_graph (see run_train)
    warnings: dict[str, str] = field(default_factory=dict)  # kind -> message (eval/checks.py)


def train_head(
    s: TrainSettings,
    backbone: BackboneProtocol,
    split: TrainSplit,
    cache: FeatureCache | None,
    device: Device,
    on_epoch: OnEpoch | None = None,
    remedy: str = TRAIN_REMEDY,
) -> TrainedHead:
    """Features (cached) -> fit -> threshold on the validation images: the core of a training
    run. A run that made no optimiser step, or whose scores are unusable, is refused here.
    ``on_epoch(epoch, model, history)`` is called after every epoch (see :func:`fit`);
    ``remedy``: how its small-calibration warning says to get more reals."""
    tf = train_features(s, backbone, split.train, cache, device)
    model = build_model(backbone.feature_dim, s)
    fit_status: dict = {}
    history = fit(model, tf.natural, tf.proxy, s.train, device, on_epoch, status=fit_status)
    if not history:  # fit refuses epochs < 1 itself; an untrained flow must never be saved
        raise ClipflowError("training ran no epoch (train.epochs must be >= 1); nothing to save")
    val = validation_features(s, backbone, validation_paths(s, split.val), cache, device)
    threshold, val_real, val_info = calibrate(model, val, device, s.data.val_band)
    notes = training_warnings(s.train, len(tf.paths), history, threshold, val_real.numpy(), remedy)
    compiled, graph = compile_status(backbone), fit_status.get("cuda_graph")
    log.info(speed_line(compiled, graph))
    speed = {"compile": compiled, "cuda_graph": graph}
    return TrainedHead(
        model, threshold, val_real, history, val_info, tf.paths, tf.skipped, speed, notes
    )


def run_train(s: TrainSettings, run_dir: Path, backbone=None) -> Path:
    """Train on natural images (and their proxies), calibrate, save; returns the checkpoint.
    ``backbone``: a ready one (your own extractor, docs/backbones.md) instead of s.backbone."""
    run_dir = Path(run_dir)
    device = resolve_device(s.device)
    train_root = s.data.train_root
    if not train_root:
        raise DataError("no training images given — pass data.train_root=DIR (natural images only)")
    if backbone is not None:
        backbone = as_backbone(backbone)
    else:  # before the scan: a missing file (or a custom factory's module) is the first news
        check_weights_available(s.backbone)
    if s.proxy.name == "recon" and s.train.mode != "N":  # its autoencoder, before the scan too
        check_autoencoder_available(s.proxy.autoencoder, s.proxy.autoencoder_subfolder)
    watch = TrainingWatch(run_dir, s.logger)  # logger=tensorboard without the package: now
    split = discover_train_images(Path(train_root), s.data.per_class, s.data.val_fraction, s.seed)
    val_paths = validation_paths(s, split.val)  # fail on a missing val set before the backbone runs
    log.info(
        "training on %d natural images (%d classes), validating on %d",
        len(split.train),
        len(split.classes),
        len(val_paths),
    )

    backbone = backbone or load_backbone(s.backbone, device)
    if isinstance(backbone, ExtractorBackbone):
        s = replace(s, backbone=backbone.cfg)  # the checkpoint's config names what ran
    asked = "on" if s.train.cuda_graph and device.startswith("cuda") else "off"
    log.info(
        "%s (asked; what ran is logged after training and recorded as speed in the checkpoint)",
        speed_line(compile_status(backbone), asked),
    )
    with watch:
        head = train_head(s, backbone, split, feature_cache(s.data), device, watch.on_epoch)
    mode = s.train.mode
    extra = {
        "history": head.history,
        "proxy": s.proxy.describe(mode),
        "train": {
            "mode": mode,
            "n_images": len(head.train_paths),
            "classes": split.classes,
            "views": n_views(s),
            "augmentation": augmentation(s),
            "pair_crop": s.proxy.pair_crop,
            "n_skipped": len(split.skipped) + len(head.skipped),
            "epochs": s.train.resolved_epochs(),
        },
        "validation": head.validation,
        "speed": head.speed,  # whether compile and the CUDA graph were in effect
        "versions": package_versions(),
        "warnings": head.warnings,  # also logged as the run trained
    }
    ckpt = save_checkpoint(
        run_dir,
        head.model,
        head.threshold,
        backbone.describe(),
        to_jsonable(s),
        head.val_real_scores,
        extra,
    )
    skipped: list[tuple[str | Path, str]] = [*split.skipped, *head.skipped]
    atomic_write_text(run_dir / "skipped_train.txt", skipped_text(skipped))
    return ckpt


class TrainingWatch:
    """What a training run shows while it trains: ``metrics.csv`` rewritten after every epoch,
    TensorBoard scalars with ``logger=tensorboard``, and ``loss.png`` when training ends."""

    def __init__(self, run_dir: Path, logger: str = "none"):
        self.run_dir = Path(run_dir)
        self.history: list[dict] = []
        self.tb = (
            tensorboard_writer(self.run_dir / "tensorboard") if logger == "tensorboard" else None
        )

    def on_epoch(self, epoch: int, model, history: list[dict]) -> None:
        self.history = history
        write_history(self.run_dir, history)
        if self.tb is not None:
            for key, value in history[-1].items():
                if key != "epoch":
                    self.tb.add_scalar(f"train/{key}", value, epoch)
            self.tb.flush()

    def __enter__(self) -> TrainingWatch:
        return self

    def __exit__(self, *exc) -> None:
        # Also after a diverged or interrupted run: the epochs that finished are worth a look.
        if self.tb is not None:
            self.tb.close()
        if self.history:
            plot_loss(self.history, self.run_dir / "loss.png")
