"""open_clip towers (CLIP, SigLIP/SigLIP2, EVA, timm-based towers such as ConvNeXt or MobileCLIP):
the facts clipflow needs, read from the built model, never from a copied table."""

from __future__ import annotations

import open_clip
from torch import nn

from ..errors import BackboneError
from .tower import PAPER_RESIZE_RATIO, Tower, square_size


def open_clip_tower(model: nn.Module, name: str) -> Tower:
    """The image tower of an open_clip model and its preprocessing (open_clip's own config).

    ``output_dim`` is read when the tower has one; timm-based towers (SigLIP, MobileCLIP,
    ConvNeXt) have none, so the dimension is left to a probe forward pass (``feature_dim=None``).
    """
    visual = model.visual
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
    if isinstance(getattr(transformer, "resblocks", None), nn.ModuleList):
        tower.blocks = transformer.resblocks
        tower.batch_first = bool(getattr(transformer, "batch_first", True))
        return
    trunk = getattr(visual, "trunk", None)
    if isinstance(getattr(trunk, "blocks", None), nn.Sequential | nn.ModuleList):
        tower.blocks = trunk.blocks
        tower.class_token = getattr(trunk, "cls_token", None) is not None
        tower.prefix_tokens = int(getattr(trunk, "num_prefix_tokens", int(tower.class_token)))
