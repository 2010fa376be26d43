"""What a family module hands back: the frozen network and the facts needed to feed it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# The paper protocol resizes 256 -> crops 224 (SPEC §3): other tower sizes keep that ratio.
PAPER_RESIZE_RATIO = 256 / 224


@dataclass
class Tower:
    """A built tower.

    Attributes:
        model: the module kept frozen (the whole open_clip model, or the timm network).
        visual: the module run on normalised images (N, 3, S, S) -> (N, D).
        image_size, mean, std: from the family's own preprocessing config.
        resize_to: the square size the ``paper`` protocol resizes to before the crop.
        feature_dim: known without running the tower, else None (probed by a forward pass).
        blocks: the transformer blocks ``backbone.layers`` indexes, or None (no blocks).
        batch_first: block outputs are (N, L, D) (else (L, N, D), older open_clip towers).
        class_token: block outputs start with a class token (else: mean of the patch tokens).
        prefix_tokens: leading non-patch tokens (class + register tokens).
    """

    model: nn.Module
    visual: nn.Module
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_to: int
    feature_dim: int | None = None
    blocks: nn.ModuleList | nn.Sequential | None = None  # timm ViTs: Sequential
    batch_first: bool = True
    class_token: bool = True
    prefix_tokens: int = 1


def square_size(size) -> int:
    """An int from open_clip's / timm's size (an int, (H, W), or (C, H, W)); square only."""
    if isinstance(size, (tuple, list)):
        size = size[-1]
    return int(size)
