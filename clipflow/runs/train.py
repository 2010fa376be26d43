"""The training job: run_train (settings, run_dir) and its stages.

folder → images → (proxy) → backbone → features → flow → threshold → checkpoint.
Each step is a function of its own module; this file only wires them and writes files.
The stages (train_features, validation_features, calibrate) are public so that
paper/experiments.py, calibrate.py and extract.py compose the same steps; evaluation is
:mod:`clipflow.runs.evaluate`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..backbones.autoencoder import check_autoencoder_available, load_autoencoder
from ..backbones.backbone import (
    as_backbone,
    check_weights_available,
    compile_status,
    load_backbone,
    speed_line,
)
from ..backbones.preprocess import build_transform
from ..backbones.protocol import BackboneProtocol, ExtractorBackbone
from ..checkpoints.save import save_checkpoint
from ..core.fileio import atomic_write_text, to_jsonable
from ..core.machine import resolve_device
from ..core.versions import package_versions
from ..data.train_images import TrainSplit, discover_train_images
from ..errors import ClipflowError, DataError, TrainingDivergedError
from ..eval.checks import training_warnings
from ..eval.metrics import calibrate_threshold
from ..eval.report import plot_loss, skipped_text, tensorboard_writer, write_history
from ..features.cache import FeatureCache, feature_cache, file_key
from ..features.cached_extract import cached_extract
from ..features.extract import FeatureSet
from ..features.loader import Loader
from ..features.recon import recon_cache, recon_variant, reconstruct_files
from ..features.stream import PackFeatures, PackRows, in_ram_bytes, locate, ram_budget_bytes
from ..flow.fit import fit
from ..flow.model import CLIPFlow, score_features
from ..settings.config import TrainSettings
from ..transforms.config import ProxyConfig
from ..transforms.proxy import bandstop, bandstop_key, build_proxy
from ..transforms.variant import IDENTITY, Variant

log = logging.getLogger(__name__)

Device = str | torch.device
OnEpoch = Callable[[int, CLIPFlow, list[dict]], None]  # (epoch, model, history) after each

# SPEC §4.1.8: the paper masks the whole low band for P, a tenth of it for N+P.


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
) -> TrainedHead:
    """Features (cached) -> fit -> threshold on the validation images: the core of a training
    run. A run that made no optimiser step, or whose scores are unusable, is refused here.
    ``on_epoch(epoch, model, history)`` is called after every epoch (see :func:`fit`)."""
    tf = train_features(s, backbone, split.train, cache, device)
    model = build_model(backbone.feature_dim, s)
    fit_status: dict = {}
    history = fit(model, tf.natural, tf.proxy, s.train, device, on_epoch, status=fit_status)
    if not history:  # fit refuses epochs < 1 itself; an untrained flow must never be saved
        raise ClipflowError("training ran no epoch (train.epochs must be >= 1); nothing to save")
    val = validation_features(s, backbone, validation_paths(s, split.val), cache, device)
    threshold, val_real, val_info = calibrate(model, val, device, s.data.val_band)
    notes = training_warnings(s.train, len(tf.paths), history, threshold, val_real.numpy())
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


def validation_paths(s: TrainSettings, held_out: list[Path]) -> list[Path]:
    """The threshold's natural images: ``data.val_root`` when given, else train's held-out part."""
    if s.data.val_root:
        return discover_train_images(
            Path(s.data.val_root), per_class=None, val_fraction=0.0, seed=s.seed
        ).train
    if not held_out:
        raise DataError("no validation images: pass data.val_root=DIR or set data.val_fraction > 0")
    return held_out


def n_views(s: TrainSettings) -> int:
    """Views to extract per training image; epoch e trains on view e mod n_views.

    ``data.views=0`` means one fresh view (crop + proxy draw) per epoch, as the paper's
    on-the-fly training: as many views as epochs, epoch e on view e.
    """
    views = s.data.views
    if not isinstance(views, int) or isinstance(views, bool) or views < 0:
        raise ClipflowError(
            f"data.views={views!r}: use 0 (a fresh crop and proxy draw every epoch, as the "
            "paper) or K >= 1 (K cached draws, epoch e on draw e mod K)"
        )
    return views if views > 0 else s.train.resolved_epochs()


def augmentation(s: TrainSettings) -> str:
    """How training draws were reused, for the run's metadata: the paper draws fresh each epoch."""
    views, epochs = n_views(s), s.train.resolved_epochs()
    if views >= epochs:
        return "fresh per epoch"
    return f"{views} cached view{'s' if views > 1 else ''} (epoch e on view e mod {views})"


def proxy_variant(cfg: ProxyConfig, mode: str) -> Variant:
    """The training proxy, keyed by its resolved parameters (the cache key depends on them).

    ``cfg.pair_crop``: the proxy takes the natural image's crop (same file and view) and
    keeps its own mask draw; ``describe`` then adds ``pair_crop`` to the key.
    """
    try:
        params = cfg.describe(mode)
        fn = build_proxy(cfg, mode)
    except ValueError as err:
        raise ClipflowError(f"proxy: {err}") from None
    crop_key = IDENTITY.key if cfg.pair_crop else None
    return Variant("proxy:" + json.dumps(params, sort_keys=True), fn, crop_key)


def training_proxy(s: TrainSettings, paths: Sequence[str | Path], device: Device) -> Variant:
    """The proxy variant of ``s``; ``proxy=recon`` first reconstructs ``paths`` (cached, on
    ``device``): clipflow.features.recon."""
    if s.proxy.name != "recon":
        return proxy_variant(s.proxy, s.train.mode)
    if s.train.mode == "N":  # natural images only: nothing to reconstruct
        return Variant("proxy:unused")
    ae = load_autoencoder(s.proxy.autoencoder, s.proxy.autoencoder_subfolder, device)
    max_pixels = Loader.from_data(s.data).max_pixels
    recons = reconstruct_files(
        ae,
        paths,
        recon_cache(s.data),
        device,
        s.proxy.recon_batch_size,
        None,
        max_pixels,
        "reconstruct train",
    )
    return recon_variant(s.proxy, s.train.mode, recons, ae.describe())


def validation_proxy(reading: str = "open") -> Variant:
    """The band-stop proxy of the threshold's validation set (SPEC §4.3), under one reading of
    the paper's "(30, 100)" (``data.val_band``)."""
    return Variant(bandstop_key(reading), lambda img, gen: bandstop(img, reading=reading))


class TrainFeatures(NamedTuple):
    """Training features of one mode: (K, V, N, D) for K variants × V views of N images."""

    features: torch.Tensor | PackFeatures  # PackFeatures: streamed from the cache's packs
    paths: list[str]  # the N images read
    skipped: list[tuple[str, str]]
    mode: str  # N: K = [natural]; P: [proxy]; N+P: [natural, proxy]

    @property
    def natural(self) -> torch.Tensor | PackRows | None:
        """(V, N, D) features of the images as they are; None in mode P."""
        return self.features[0] if self.mode in ("N", "N+P") else None

    @property
    def proxy(self) -> torch.Tensor | PackRows | None:
        """(V, N, D) features of the proxies; None in mode N."""
        return self.features[-1] if self.mode in ("P", "N+P") else None


def train_features(
    s: TrainSettings,
    backbone: BackboneProtocol,
    paths: Sequence[str | Path],
    cache: FeatureCache | None,
    device: Device,
) -> TrainFeatures:
    """(K, V, N, D) features for K variants (natural and/or proxy) × V views of N images."""
    mode = s.train.mode
    proxy = training_proxy(s, paths, device)
    variants = {"N": [IDENTITY], "P": [proxy], "N+P": [IDENTITY, proxy]}[mode]
    transform = build_transform(backbone, train=True)
    views, kept, skipped = [], None, []
    total = n_views(s)
    need = in_ram_bytes(len(variants), total, len(paths), backbone.feature_dim)
    if cache is not None and need > ram_budget_bytes(s.train.ram_budget_gb):
        streamed = streamed_train_features(s, backbone, paths, cache, device, variants, transform)
        if streamed is not None:
            return streamed
    for view in range(total):
        fs = cached_extract(
            backbone,
            paths,
            transform,
            variants,
            cache,
            device,
            Loader.from_data(s.data),
            seed=s.seed,
            view=view,
            desc=f"train features view {view + 1}/{total}",
        )
        views.append(fs.features)
        kept, skipped = fs.paths, fs.skipped
    if not kept:
        raise DataError(
            f"none of the {len(paths)} training images could be read; see the warnings above"
        )
    return TrainFeatures(torch.stack(views, dim=1), kept, skipped, mode)


def streamed_train_features(
    s: TrainSettings, backbone, paths, cache, device, variants, transform
) -> TrainFeatures | None:
    """TrainFeatures whose ``features`` stay in the cache's packs (read per buffer by fit).

    Files the cache lacks are extracted first, a few packs per call so that extraction too
    stays within memory. None (with a warning) when the cache cannot hold them all.
    """
    paths = [str(p) for p in paths]
    fkeys = [file_key(p) for p in paths]
    loader = Loader.from_data(s.data)
    keys = [
        [
            cache.setting_key(backbone, transform, v, s.seed, view, loader.max_pixels)
            for v in variants
        ]
        for view in range(n_views(s))
    ]
    found = locate(cache, keys, fkeys, backbone.feature_dim)
    if found.missing:
        step = 4 * cache.shard_size
        for view in range(len(keys)):
            for c in range(0, len(found.missing), step):
                chunk = [paths[i] for i in found.missing[c : c + step]]
                desc = f"train features view {view + 1}/{len(keys)}"
                args = (backbone, chunk, transform, variants, cache, device, loader)
                cached_extract(*args, seed=s.seed, view=view, desc=desc)
        found = locate(cache, keys, fkeys, backbone.feature_dim)
    if found.missing:
        log.warning("%d training files not cached: features held in RAM", len(found.missing))
        return None
    if not found.kept:
        raise DataError(
            f"none of the {len(paths)} training images could be read; see the warnings above"
        )
    log.info("training features exceed train.ram_budget_gb: streamed from the cache's packs")
    skipped = [(paths[i], reason) for i, reason in sorted(found.skipped.items())]
    return TrainFeatures(found.features, [paths[i] for i in found.kept], skipped, s.train.mode)


def validation_features(
    s: TrainSettings,
    backbone: BackboneProtocol,
    paths: Sequence[str | Path],
    cache: FeatureCache | None,
    device: Device,
) -> FeatureSet:
    """(2, N, D): natural validation images and their band-stop proxies (SPEC §4.3)."""
    fs = cached_extract(
        backbone,
        paths,
        build_transform(backbone, train=False),
        [IDENTITY, validation_proxy(s.data.val_band)],
        cache,
        device,
        Loader.from_data(s.data),
        seed=s.seed,
        desc="validation features",
    )
    if not fs.paths:
        raise DataError("none of the validation images could be read")
    return fs


def calibrate(model: CLIPFlow, val: FeatureSet, device: Device, reading: str = "open"):
    """SPEC §7: threshold maximising accuracy on natural val images vs their band-stop proxies.

    Refuses (TrainingDivergedError) non-finite scores, a flow that gives every validation
    image the same score (any threshold would then be arbitrary), and a non-finite threshold.
    """
    real = score_features(model, val.features[0], device=device)
    proxy = score_features(model, val.features[1], device=device)
    _require_finite(torch.cat([real, proxy]))
    scores = torch.cat([real, proxy]).numpy()
    labels = np.r_[np.zeros(len(real), int), np.ones(len(proxy), int)]
    threshold = calibrate_threshold(scores, labels)
    _require_usable_threshold(scores, threshold)
    info = {
        "n_images": len(val.paths),
        "n_skipped": len(val.skipped),
        "proxy": bandstop_key(reading),
        "acc": float(np.mean((scores > threshold) == labels)),
    }
    return threshold, real, info


def _require_finite(scores: torch.Tensor) -> None:
    if len(scores) == 0:
        raise TrainingDivergedError("no validation scores to calibrate the threshold on")
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise TrainingDivergedError(
            f"the trained flow gives non-finite scores to {bad} of {len(scores)} validation "
            "images; retrain with loss=logsigmoid"
        )


def _require_usable_threshold(scores: np.ndarray, threshold: float) -> None:
    if np.ptp(scores) == 0:
        raise TrainingDivergedError(
            f"the trained flow gives all {len(scores)} validation images (natural and proxy) "
            f"the same score {scores[0]:.6g}: the flow has collapsed and a threshold would be "
            "meaningless; retrain (e.g. loss=logsigmoid, a lower train.lr, more images)"
        )
    if not np.isfinite(threshold):
        raise TrainingDivergedError(f"the calibrated threshold is {threshold}; retrain")


# ----------------------------------------------------------------------------- evaluation
