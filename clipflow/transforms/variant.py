"""A *variant*: one way of seeing an image before the backbone (the image itself, a proxy, a
perturbation), named by a stable key. Transforms produce variants; feature extraction runs
every variant of an image from one decode and caches features under the variant's key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# A variant function maps a uint8 (3, H, W) image + generator to another uint8 image.
VariantFn = Callable[["torch.Tensor", "torch.Generator"], "torch.Tensor"]


@dataclass(frozen=True)
class Variant:
    """One way of seeing an image before the backbone: the image itself, a proxy, a perturbation.

    ``key`` names it stably (it seeds the variant's random draws and keys the feature cache),
    so a variant's features do not depend on which other variants share the pass.
    ``crop_key`` set: the random crop is drawn as variant ``crop_key``'s is (e.g. a proxy paired
    with the natural image's crop), while ``fn`` keeps its own draws. The key must then say
    so too, since it keys the cache.
    ``per_file`` set: the function depends on the file (e.g. a random degradation chain drawn
    per image): ``per_file(path)`` gives that file's function and ``fn`` is not used. The key
    must then name everything the draw depends on (seed, chain spec), as it keys the cache.
    """

    key: str
    fn: VariantFn | None = None
    crop_key: str | None = None
    per_file: Callable[[str], VariantFn | None] | None = None

    def fn_for(self, path: str) -> VariantFn | None:
        """The function applied to ``path``'s image (None: the image itself)."""
        return self.per_file(path) if self.per_file is not None else self.fn


IDENTITY = Variant("identity")


def as_variant(v: Variant | VariantFn | None, index: int) -> Variant:
    """Accept a Variant, a bare function (keyed by position) or None (the image itself)."""
    if isinstance(v, Variant):
        return v
    return IDENTITY if v is None else Variant(f"fn{index}", v)
