"""Typed, range-checked run settings built from the Hydra config (YAML keys = dataclass fields).

This is the one place where values enter: every CLI turns its config into these dataclasses
with :func:`train_settings`, :func:`extract_settings`, :func:`eval_settings` or
:func:`detect_settings` before any data is scanned or any model is loaded. Each value is
coerced to its field's type (an int given ``abc`` or a bool given ``maybe`` is an error) and
checked against :data:`RULES`; the first bad value raises :class:`SettingsError` with one
line such as ``proxy.ratio=2: must be in (0, 1]``. Library code and tests take the dataclasses
and never see Hydra.

Speed settings may be ``auto`` (the shipped configs' default): ``backbone.precision``,
``backbone.compile``, ``data.batch_size``, ``data.num_workers``, ``data.decode``. They are
resolved once, for the run's device, when the settings are built (:mod:`clipflow.settings.auto`),
logged in one line and kept in ``settings.auto``; library code never sees ``auto``.

What each value may be (:data:`RULES`, the caps among them) and the checks that apply them
live in :mod:`clipflow.settings.rules`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..backbones.config import BackboneConfig
from ..errors import ClipflowError
from ..flow.config import FlowConfig, TrainConfig
from ..transforms.config import ChainConfig, ProxyConfig, check_chain_config
from .auto import resolve_auto, resolve_detect_auto
from .coerce import SettingsError, bad_value
from .rules import check, check_backbone, field_hints, top_level, typed_fields

if TYPE_CHECKING:
    from ..transforms.perturb import Perturbation

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where the images are and how they are sampled. YAML keys under ``data:``.

    Attributes:
        train_root: natural training images (``<class>/0_real``, ``0_real`` or a plain folder).
        val_root: natural images for the threshold; null = hold out ``val_fraction`` of train.
        test_root: benchmark root (CNNSpot / UnivFD / ``<name>/0_real,1_fake`` layouts).
        per_class: natural training images sampled per class (the paper: 360 × 20 classes).
        val_fraction: share of ``per_class`` held out per class when no ``val_root`` is given.
        val_band: which reading of the paper's validation band "(30, 100)" the threshold's
            band-stop proxies use: ``open`` (SPEC §4.3), ``closed``, ``pixels`` or ``square``
            (transforms/config.py VAL_BANDS).
        views: augmented views (crop + proxy draw) extracted per training image; epoch e
            trains on view e mod views.
        protocol: ``all`` images, or ``univfd`` (≤ max_per_class real + fake per set, seed 0,
            with UnivFD's fall-back to 100 when a set is smaller).
        benchmark: which layouts under test_root to score: ``auto`` (GenImage, Chameleon,
            Synthbuster, WildRF and CNNSpot/UnivFD, as found), ``univfd`` or one benchmark
            (docs/datasets.md).
        reencode: ``none``, or ``jpeg<Q>`` / ``short<S>+jpeg<Q>``: every test image, real and
            fake alike, re-encoded so before scoring (the format confound control).
        batch_size, num_workers, prefetch_factor: extraction loader settings; ``auto`` (the
            shipped YAML default) is resolved by :func:`resolve_auto` for the device.
        decode: ``pil`` (workers decode + transform) or ``nvjpeg`` (JPEGs decoded on the GPU,
            proxies and transforms on the GPU; other files through PIL); ``auto``: on a CUDA
            GPU one of the two per extraction by the files' size and the workers (measured
            rule: features/loader.py choose_decoder), pil otherwise.
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
    val_band: str = "open"
    views: int = 1
    protocol: str = "all"
    max_per_class: int = 1000
    benchmark: str = "auto"
    reencode: str = "none"
    batch_size: int = 64
    num_workers: int = 4
    prefetch_factor: int = 4
    decode: str = "pil"
    cache: bool = True
    cache_dir: str | None = None
    cache_shard_size: int = 4096
    max_megapixels: float | None = 100.0
    real_root: str | None = None  # clipflow-calibrate: the user's own real photos


@dataclass
class TrainSettings:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "auto"
    seed: int = 0
    # What each ``auto`` setting became on this machine (empty when none was auto).
    auto: dict = field(default_factory=dict)
    logger: str = "none"  # none | tensorboard (metrics.csv and loss.png are always written)


@dataclass
class EvalSettings:
    ckpt: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "auto"
    seed: int = 0
    # Backbone fields left null are taken from the checkpoint (name, preprocess, ...).
    backbone: dict = field(default_factory=dict)
    # Test-time post-processing (configs/eval.yaml ``perturb``), parsed; empty = none.
    # (Perturbation objects of clipflow.transforms.perturb: the hint stays a plain list so that
    # the settings, whose field types are read at run time, never import torch to read it)
    perturb: list = field(default_factory=list)
    # perturb=chain: random degradation chains per image (clipflow.transforms.chains).
    chain: ChainConfig = field(default_factory=ChainConfig)
    # What each ``auto`` setting became on this machine (empty when none was auto).
    auto: dict = field(default_factory=dict)


@dataclass
class DetectSettings:
    """Typed values of configs/detect.yaml."""

    ckpt: str = ""
    inputs: list[str] = field(default_factory=list)
    out: str | None = None
    format: str | None = None
    table: bool = True
    device: str = "auto"
    batch_size: int = 32
    num_workers: int = 4
    backbone: dict = field(default_factory=dict)
    fpr: float | None = None  # decide by conformal p-value <= fpr; None = the threshold
    unsure: bool = False  # also score unsure_k re-encoded copies; disagreement -> "unsure"
    unsure_k: int = 4


@dataclass
class CalibrateSettings:
    """Typed values of configs/calibrate.yaml (clipflow-calibrate)."""

    ckpt: str = ""
    out: str = ""
    refit: bool = False
    holdout: float = 0.5  # refit=true: share of the photos kept out of the fit, for p-values
    min_reals: int = 20
    fpr: float | None = None  # a level the new calibration must be able to reach
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "auto"
    seed: int = 0
    backbone: dict = field(default_factory=dict)
    auto: dict = field(default_factory=dict)


def _build(cls, values: Any, where: str):
    return cls(**typed_fields(cls, values, where))


# ---------------------------------------------------------------- builders
_TRAIN_KEYS = {"backbone", "proxy", "flow", "train", "data", "device", "seed", "mode", "loss"}
_TRAIN_KEYS |= {"logger"}


def train_settings(cfg: dict) -> TrainSettings:
    """Typed, checked settings from a plain dict (``OmegaConf.to_container(cfg, resolve=True)``).

    ``mode`` and ``loss`` are top-level keys (Hydra overrides ``mode=P``) stored in
    :class:`TrainConfig`; ``seed`` also seeds the flow's permutations.
    """
    cfg = top_level(cfg, _TRAIN_KEYS)
    seed = check("seed", cfg.get("seed", 0), int, "train.seed")  # also the permutations' seed
    train_values = dict(_section(cfg, "train"))
    for key in ("mode", "loss"):  # top-level keys win over train.mode / train.loss
        if key in cfg:
            train_values[key] = cfg[key]
    train_values = typed_fields(TrainConfig, train_values, "train")
    for key in ("mode", "loss"):
        if key in train_values:
            train_values[key] = check(key, train_values[key], str)
    train_values["seed"] = seed
    flow_values = {**typed_fields(FlowConfig, _section(cfg, "flow"), "flow"), "perm_seed": seed}
    settings = TrainSettings(
        backbone=_build(BackboneConfig, cfg.get("backbone"), "backbone"),
        proxy=_build(ProxyConfig, cfg.get("proxy"), "proxy"),
        flow=FlowConfig(**flow_values),
        train=TrainConfig(**train_values),
        data=_build(DataConfig, cfg.get("data"), "data"),
        device=check("device", cfg.get("device", "auto"), str),
        seed=seed,
        logger=check("logger", cfg.get("logger", "none"), str),
    )
    check_backbone(settings.backbone)
    return resolve_auto(settings)


def _section(cfg: dict, name: str) -> dict:
    value = cfg.get(name)
    if value is not None and not isinstance(value, dict):
        raise bad_value(name, value, "must be a mapping of keys to values")
    return value or {}


def extract_settings(cfg: dict) -> tuple[TrainSettings, list[str]]:
    """clipflow-extract: the training settings plus ``stages`` (a subset of train, val, test)."""
    values = dict(top_level(cfg, _TRAIN_KEYS | {"stages"}))
    stages = values.pop("stages", [])
    return train_settings(values), check("stages", stages or [], list[str])


def eval_settings(cfg: dict) -> EvalSettings:
    """clipflow-eval: checkpoint, data, device, seed, backbone overrides, perturbations."""
    cfg = top_level(cfg, {"ckpt", "data", "device", "seed", "backbone", "perturb", "chain"})
    seed = check("seed", cfg.get("seed", 0), int)
    chain = _chain(cfg.get("chain"))
    spec = _perturbation_spec(cfg.get("perturb"))
    settings = EvalSettings(
        ckpt=check("ckpt", cfg.get("ckpt") or "", str),
        data=_build(DataConfig, cfg.get("data"), "data"),
        device=check("device", cfg.get("device", "auto"), str),
        seed=seed,
        backbone=backbone_overrides(cfg.get("backbone")),
        chain=chain,
    )
    check_backbone(settings.backbone)
    settings.perturb = _perturbations(spec, chain, seed)
    return resolve_auto(settings)


def _perturbation_spec(spec: Any) -> Any:
    if spec is not None and not isinstance(spec, (str, list, tuple)):
        raise bad_value("perturb", spec, "must be a name or a list of names")
    return spec


def _perturbations(spec: Any, chain: ChainConfig, seed: int) -> list[Perturbation]:
    """The parsed operations (after every other check: they are built from torch code)."""
    from ..transforms.chains import resolve_with_chains

    try:
        return resolve_with_chains(spec, chain, seed)
    except ClipflowError as err:
        raise bad_value("perturb", spec, str(err)) from None


def _chain(values: Any) -> ChainConfig:
    """``chain.*``, each value checked, then together (max_len ≤ number of distinct ops)."""
    chain = _build(ChainConfig, values, "chain")
    problem = check_chain_config(chain)
    if problem:
        raise SettingsError(problem)
    return chain


def backbone_overrides(values: Any) -> dict:
    """Backbone fields overriding the checkpoint's: checked like ``backbone.*``, nulls dropped."""
    return typed_fields(BackboneConfig, values, "backbone", partial=True)


def detect_settings(cfg: dict) -> DetectSettings:
    """clipflow-detect: checkpoint, inputs, output, loader and backbone overrides."""
    cfg = top_level(cfg, {f.name for f in fields(DetectSettings)})
    hints = field_hints(DetectSettings)
    values = {
        name: check(name, value, hints[name], name if name == "device" else f"detect.{name}")
        for name, value in cfg.items()
        if name != "backbone" and not (name == "ckpt" and value is None)
    }
    settings = DetectSettings(**values, backbone=backbone_overrides(cfg.get("backbone")))
    check_backbone(settings.backbone)
    # num_workers (the shipped default) and precision/compile overrides may say auto
    return resolve_detect_auto(settings)


def calibrate_settings(cfg: dict) -> CalibrateSettings:
    """clipflow-calibrate: checkpoint, the user's reals (data.real_root), output, refit."""
    cfg = top_level(cfg, {f.name for f in fields(CalibrateSettings)} - {"auto"})
    hints = field_hints(CalibrateSettings)
    plain = ("ckpt", "out", "refit", "holdout", "min_reals", "fpr")
    values = {
        name: check(name, cfg[name], hints[name], f"calibrate.{name}")
        for name in plain
        if name in cfg and not (name in ("ckpt", "out") and cfg[name] is None)
    }
    settings = CalibrateSettings(
        **values,
        data=_build(DataConfig, cfg.get("data"), "data"),
        device=check("device", cfg.get("device", "auto"), str),
        seed=check("seed", cfg.get("seed", 0), int),
        backbone=backbone_overrides(cfg.get("backbone")),
    )
    check_backbone(settings.backbone)
    return resolve_auto(settings)
