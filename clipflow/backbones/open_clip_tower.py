"""open_clip towers (CLIP, SigLIP/SigLIP2, EVA, timm-based towers such as ConvNeXt or MobileCLIP):
the model built (random or with its weights) and the facts clipflow needs, read from the built
model, never from a copied table."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import open_clip
from torch import nn

from ..errors import BackboneError, first_line
from .config import TINY_NAME, BackboneConfig, model_config_dir
from .tower import PAPER_RESIZE_RATIO, Tower, square_size
from .weights import check_weights_available, looks_like_path


def create_open_clip(cfg: BackboneConfig) -> nn.Module:
    """The open_clip model of ``cfg``: a random architecture (``pretrained`` null, or one of
    clipflow's packaged test towers) or the named weights; one clear error when they are not
    available. The caller seeds random ones."""
    if cfg.is_packaged:
        register_packaged_configs()
    if cfg.is_tiny or not cfg.pretrained:
        with _quiet_open_clip(random=True):
            return open_clip.create_model(TINY_NAME if cfg.is_tiny else cfg.name, pretrained=None)
    check_weights_available(cfg)  # fast and one line, before open_clip's hub client retries
    with _quiet_open_clip():
        return _create_pretrained(cfg)


def is_open_clip_name(name: str) -> bool:
    return name in open_clip.list_models() or name.startswith(("hf-hub:", "local-dir:"))


def open_clip_tower(model: nn.Module, name: str) -> Tower:
    """The image tower of an open_clip model and its preprocessing (open_clip's own config).

    ``output_dim`` is read when the tower has one; timm-based towers (SigLIP, MobileCLIP,
    ConvNeXt) have none, so the dimension is left to a probe forward pass (``feature_dim=None``).
    """
    visual = model.visual
    if not isinstance(visual, nn.Module):
        raise BackboneError(f"open_clip model {name!r} has no image tower (model.visual)")
    pp = open_clip.get_model_preprocess_cfg(model)
    missing = [k for k in ("size", "mean", "std") if pp.get(k) is None]
    if missing:
        raise BackboneError(
            f"open_clip model {name!r} has no preprocessing {'/'.join(missing)} in its config"
        )
    size = square_size(pp["size"])
    dim = getattr(visual, "output_dim", None)
    tower = Tower(
        model=model,
        visual=visual,
        image_size=size,
        mean=tuple(float(x) for x in pp["mean"]),
        std=tuple(float(x) for x in pp["std"]),
        resize_to=round(size * PAPER_RESIZE_RATIO),
        feature_dim=int(dim) if isinstance(dim, int) else None,
    )
    _find_blocks(tower)
    return tower


def _find_blocks(tower: Tower) -> None:
    """Blocks of an open_clip ViT (``transformer.resblocks``, class token first) or of a
    timm ViT trunk (``trunk.blocks``); other towers (ResNet, ConvNeXt) have none."""
    visual = tower.visual
    transformer = getattr(visual, "transformer", None)
    resblocks = getattr(transformer, "resblocks", None)
    if isinstance(resblocks, nn.ModuleList):
        tower.blocks = resblocks
        tower.batch_first = bool(getattr(transformer, "batch_first", True))
        return
    trunk = getattr(visual, "trunk", None)
    blocks = getattr(trunk, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList):
        tower.blocks = blocks
        tower.class_token = getattr(trunk, "cls_token", None) is not None
        tower.prefix_tokens = int(getattr(trunk, "num_prefix_tokens", int(tower.class_token)))


def register_packaged_configs() -> None:
    """Make ``clipflow-tiny`` and the other packaged test towers known to open_clip (idempotent;
    only when one of them is built).

    open_clip finds architectures in a process-wide registry; adding our folder there at
    import would change ``open_clip.list_models()`` for every program that imports clipflow.
    """
    if TINY_NAME not in open_clip.list_models():
        open_clip.add_model_config(model_config_dir())


# open_clip's warning when it builds a tower without weights; a random tower is built on
# purpose, and load_backbone has already said so with what it means (once per command).
_OPEN_CLIP_RANDOM_NOTICE = "No pretrained weights loaded"


class _BelowWarningFrom(logging.Filter):
    """Drops records under WARNING whose source file lies in ``folder``, and with ``random``
    open_clip's own random-weights notice."""

    def __init__(self, folder: str, random: bool = False):
        super().__init__()
        self.folder, self.random = folder, random

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(self.folder):
            return True
        if self.random and record.getMessage().startswith(_OPEN_CLIP_RANDOM_NOTICE):
            return False
        return record.levelno >= logging.WARNING


@contextmanager
def _quiet_open_clip(random: bool = False):
    """Keep only open_clip's warnings while it builds a model; nothing else changes.

    open_clip logs its progress with ``logging.info`` on the *root* logger (it has no logger
    of its own), so a filter on the root logger drops just its INFO records; the root level,
    and every other record, stay as the application set them. The filter is removed on exit.
    ``random``: a random tower on purpose; its random-weights notice is dropped too.
    """
    root = logging.getLogger()
    quiet = _BelowWarningFrom(str(Path(open_clip.__file__).parent), random)
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _create_pretrained(cfg: BackboneConfig) -> nn.Module:
    pretrained = cfg.pretrained
    try:
        return open_clip.create_model(
            cfg.name,
            pretrained=str(Path(pretrained).expanduser())
            if pretrained and looks_like_path(pretrained)
            else pretrained,
            cache_dir=cfg.cache_dir,
        )
    except Exception as err:  # hub, network and file errors all end here
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        reason = first_line(err, limit=120)
        hint = " (HF_HUB_OFFLINE=1)" if offline else ""
        raise BackboneError(
            f"cannot load CLIP weights {cfg.name}/{pretrained}{hint}: "
            f"{reason} — download them once with network access, or pass "
            "backbone.pretrained=/path/to/open_clip_model.safetensors"
        ) from None
