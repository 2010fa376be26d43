"""Typed run settings built from the Hydra config (YAML keys = dataclass fields).

The CLIs turn their DictConfig into these with :func:`train_settings` / :func:`eval_settings`;
library code and tests take the dataclasses and never see Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from .backbone import BackboneConfig
from .errors import ClipflowError
from .flow import FlowConfig
from .proxy import ProxyConfig
from .train import TrainConfig


@dataclass
class DataConfig:
    """Where the images are and how they are sampled. YAML keys under ``data:``.

    Attributes:
        train_root: natural training images (``<class>/0_real``, ``0_real`` or a plain folder).
        val_root: natural images for the threshold; null = hold out ``val_fraction`` of train.
        test_root: benchmark root (CNNSpot / UnivFD / ``<name>/0_real,1_fake`` layouts).
        per_class: natural training images sampled per class (the paper: 360 × 20 classes).
        val_fraction: share of ``per_class`` held out per class when no ``val_root`` is given.
        views: augmented views (crop + proxy draw) extracted per training image; epoch e
            trains on view e mod views.
        protocol: ``all`` images, or ``univfd`` (≤ max_per_class real + fake per set, seed 0,
            with UnivFD's fall-back to 100 when a set is smaller).
        batch_size, num_workers, prefetch_factor: extraction loader settings.
        decode: ``pil`` (workers decode + transform) or ``nvjpeg`` (JPEGs decoded on the GPU,
            proxies and transforms on the GPU; other files through PIL).
        cache, cache_dir: keep backbone features on disk (default ``$CLIPFLOW_CACHE`` or
            ``~/.cache/clipflow/features``), so the backbone runs once per image and view.
        max_megapixels: larger images are skipped (with the reason) from their header,
            before decoding; null = no cap of ours (PIL's own stops at ~179 MP).
    """

    train_root: str | None = None
    val_root: str | None = None
    test_root: str | None = None
    per_class: int | None = 360
    val_fraction: float = 0.1
    views: int = 1
    protocol: str = "all"
    max_per_class: int = 1000
    batch_size: int = 64
    num_workers: int = 4
    prefetch_factor: int = 4
    decode: str = "pil"
    cache: bool = True
    cache_dir: str | None = None
    cache_shard_size: int = 4096
    max_megapixels: float | None = 100.0


@dataclass
class TrainSettings:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "auto"
    seed: int = 0


@dataclass
class EvalSettings:
    ckpt: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "auto"
    seed: int = 0
    # Backbone fields left null are taken from the checkpoint (name, preprocess, ...).
    backbone: dict = field(default_factory=dict)


def _build(cls, values: dict | None, where: str):
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ClipflowError(
            f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(known))}"
        )
    return cls(**values)


def train_settings(cfg: dict) -> TrainSettings:
    """Typed settings from a plain dict (``OmegaConf.to_container(cfg, resolve=True)``)."""
    seed = int(cfg.get("seed", 0))
    train = dict(cfg.get("train") or {})
    train.update(
        mode=cfg.get("mode", train.get("mode", "N+P")),
        loss=cfg.get("loss", train.get("loss", "logsigmoid")),
        seed=seed,
    )
    flow = {**(cfg.get("flow") or {}), "perm_seed": seed}
    settings = TrainSettings(
        backbone=_build(BackboneConfig, cfg.get("backbone"), "backbone"),
        proxy=_build(ProxyConfig, cfg.get("proxy"), "proxy"),
        flow=_build(FlowConfig, flow, "flow"),
        train=_build(TrainConfig, train, "train"),
        data=_build(DataConfig, cfg.get("data"), "data"),
        device=str(cfg.get("device", "auto")),
        seed=seed,
    )
    try:
        settings.train.validate()
    except ValueError as err:
        raise ClipflowError(str(err)) from None
    return settings


def eval_settings(cfg: dict) -> EvalSettings:
    return EvalSettings(
        ckpt=str(cfg.get("ckpt") or ""),
        data=_build(DataConfig, cfg.get("data"), "data"),
        device=str(cfg.get("device", "auto")),
        seed=int(cfg.get("seed", 0)),
        backbone={k: v for k, v in (cfg.get("backbone") or {}).items() if v is not None},
    )


def resolve_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu; asking for a missing GPU is a clear error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ClipflowError(
            f"device={name} but no CUDA GPU is visible; use device=cpu or device=auto"
        )
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ClipflowError(f"device={name!r}: use auto, cpu or cuda[:N]")
    return name
