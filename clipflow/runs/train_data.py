"""What a training run reads: its validation images, views, proxies and their features.

The stages between the image folders and the flow's fit (SPEC §4): :func:`train_features`
((K, V, N, D) for the natural images and/or their proxies, per view; streamed from the
cache's packs past ``train.ram_budget_gb``) and :func:`validation_features` (the natural
validation images and their band-stop proxies, for the threshold). The proxies are keyed by
their resolved parameters, so the feature cache tells draws of different settings apart.
:mod:`clipflow.runs.train` wires them into a run; paper/experiments.py and
:mod:`clipflow.runs.extract` compose the same stages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from ..backbones.autoencoder import load_autoencoder
from ..backbones.preprocess import build_transform
from ..backbones.protocol import BackboneProtocol
from ..data.train_images import discover_train_images
from ..errors import ClipflowError, DataError
from ..features.cache import FeatureCache, file_key
from ..features.cached_extract import cached_extract
from ..features.extract import FeatureSet
from ..features.loader import Loader
from ..features.recon import recon_cache, recon_variant, reconstruct_files
from ..features.stream import PackFeatures, PackRows, in_ram_bytes, locate, ram_budget_bytes
from ..settings.config import TrainSettings
from ..transforms.config import ProxyConfig
from ..transforms.proxy import bandstop, bandstop_key, build_proxy
from ..transforms.variant import IDENTITY, Variant

log = logging.getLogger(__name__)

Device = str | torch.device


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
