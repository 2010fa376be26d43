"""``backbone.layers``: the class token of chosen transformer blocks instead of the tower output.

Forward hooks on the blocks record their outputs while the whole tower runs; the token of each
chosen block (the raw residual stream, before any final norm or projection) is then pooled:
``concat`` (dimension = blocks × width) or ``mean`` (dimension = width). Towers whose blocks
carry no class token (e.g. SigLIP's timm ViT, pooled by attention) give the mean of their
patch tokens instead.
"""

from __future__ import annotations

import torch

from ..errors import BackboneError
from .config import LAYER_POOLS
from .tower import Tower


class LayerTap:
    """Hooks on ``tower.blocks[i]`` for each chosen ``i``; :meth:`features` pools their tokens."""

    def __init__(self, tower: Tower, layers: list[int], pool: str, name: str):
        if pool not in LAYER_POOLS:
            raise BackboneError(f"backbone.layer_pool={pool!r}: choose concat or mean")
        if tower.blocks is None:
            raise BackboneError(
                f"backbone.layers: the {name} tower has no transformer blocks to read "
                "(ViT towers only); drop backbone.layers"
            )
        n = len(tower.blocks)
        bad = [i for i in layers if not -n <= i < n]
        if bad or not layers:
            raise BackboneError(
                f"backbone.layers={list(layers)}: the {name} tower has {n} blocks "
                f"(indices 0..{n - 1}, or -1 for the last)"
            )
        self.tower, self.pool = tower, pool
        self.layers = [i % n for i in layers]
        self._out: dict[int, torch.Tensor] = {}
        self._handles = [
            tower.blocks[i].register_forward_hook(self._keeper(i)) for i in set(self.layers)
        ]

    def _keeper(self, index: int):
        def keep(module, args, output):
            self._out[index] = output[0] if isinstance(output, tuple) else output

        return keep

    def features(self) -> torch.Tensor:
        """(N, D) pooled tokens of the last forward pass; the recorded outputs are released."""
        try:
            tokens = [self._token(self._out[i]) for i in self.layers]
        finally:
            self._out.clear()
        if self.pool == "concat":
            return torch.cat(tokens, dim=-1)
        return torch.stack(tokens).mean(dim=0)

    def _token(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tower.batch_first:
            x = x.transpose(0, 1)  # (L, N, D) -> (N, L, D)
        if self.tower.class_token:
            return x[:, 0]
        return x[:, self.tower.prefix_tokens :].mean(dim=1)
