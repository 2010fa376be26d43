"""Extraction: image files -> backbone features, skipping (and listing) unreadable files.

One decode per image feeds every *variant* of it (e.g. the natural image and its proxy),
so N+P pairs come from the same pixels. Randomness (crops, masks) is seeded per file from
(seed, view, variant, path), so results do not depend on batch size, worker count or file order.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .errors import UnreadableImageError
from .imageio import load_image, pil_to_uint8_tensor

log = logging.getLogger(__name__)

# A variant function maps a uint8 (3, H, W) image + generator to another uint8 image.
VariantFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Variant:
    """One way of seeing an image before the backbone: the image itself, a proxy, a perturbation.

    ``key`` names it stably (it seeds the variant's random draws and keys the feature cache),
    so a variant's features do not depend on which other variants share the pass.
    """

    key: str
    fn: VariantFn | None = None


IDENTITY = Variant("identity")


def as_variant(v: Variant | VariantFn | None, index: int) -> Variant:
    """Accept a Variant, a bare function (keyed by position) or None (the image itself)."""
    if isinstance(v, Variant):
        return v
    return IDENTITY if v is None else Variant(f"fn{index}", v)


@dataclass
class FeatureSet:
    """Features of the readable files, aligned with ``paths``.

    Attributes:
        features: (K, N, D) float32 on CPU, one slice per variant.
        paths: the N files that were read, in input order.
        skipped: (path, reason) of every file that could not be used.
    """

    features: torch.Tensor
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def item_seed(seed: int, view: int, path: str) -> int:
    """A 63-bit seed for one file's random draws (crop position, proxy mask)."""
    digest = hashlib.blake2b(f"{seed}/{view}/{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ImageFileDataset(Dataset):
    """Loads one file, applies each variant then the transform; never raises on bad files."""

    def __init__(self, paths: Sequence, transform, variants: Sequence[Variant], seed: int, view: int):
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.variants = list(variants)
        self.seed, self.view = seed, view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            image = pil_to_uint8_tensor(load_image(path))  # (3, H, W) uint8, native size
            return torch.stack([self._apply(v, image, path) for v in self.variants]), i, ""  # (K, 3, S, S)
        except UnreadableImageError as err:
            return None, i, err.reason
        except Exception as err:  # a file must never take the batch down with it
            return None, i, f"{type(err).__name__}: {err}"


    def _apply(self, variant: Variant, image: torch.Tensor, path: str) -> torch.Tensor:
        gen = torch.Generator().manual_seed(item_seed(self.seed, self.view, f"{variant.key}|{path}"))
        return self.transform(variant.fn(image, gen) if variant.fn else image, gen)


def _collate(batch):
    good = [(x, i) for x, i, _ in batch if x is not None]
    bad = [(i, reason) for x, i, reason in batch if x is None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


def extract_features(
    backbone,
    paths: Sequence,
    transform,
    variants: Sequence[Variant | VariantFn | None] = (None,),
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int = 0,
    view: int = 0,
    desc: str = "extract",
) -> FeatureSet:
    """Run ``backbone`` over ``paths``; ``None`` in ``variants`` means the image itself."""
    variants = [as_variant(v, i) for i, v in enumerate(variants)]
    dataset = ImageFileDataset(paths, transform, variants, seed, view)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False,
    )
    chunks, kept, skipped = [], [], []
    with tqdm(total=len(dataset), desc=desc, unit="img") as bar:
        for images, idx, bad in loader:
            skipped += [(dataset.paths[i], reason) for i, reason in bad]
            if images is not None:
                k = images.shape[1]
                flat = images.flatten(0, 1).to(device, non_blocking=True)  # (B·K, 3, S, S)
                feats = backbone(flat).float().cpu()
                chunks.append(feats.view(len(idx), k, -1).transpose(0, 1))  # (K, B, D)
                kept += idx
            bar.update(len(idx) + len(bad))
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)
    dim = backbone.feature_dim
    features = torch.cat(chunks, dim=1) if chunks else torch.empty(len(variants), 0, dim)
    return FeatureSet(features, [dataset.paths[i] for i in kept], skipped)
