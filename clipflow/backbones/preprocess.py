"""Image tensor -> backbone input, for the two protocols of SPEC §3.

``paper``: resize to 256×256 (bilinear), crop 224 (random when training, center when testing).
``univfd``: no resize, center crop 224; smaller images are zero-padded (UnivFD's protocol).
Mean/std and the crop size come from the backbone, never from a copied table.
Proxies run *before* this, at native resolution (SPEC §4.1.7).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

import torch
import torchvision.transforms.v2.functional as TF

RESIZE_TO = 256
# Images resized per call on the batched path: bounds the float copy of 1024-px images
# (64 × 3 × 1024² × 4 B ≈ 0.8 GB) while still replacing 64 kernel sequences by one.
RESIZE_CHUNK = 64


@dataclass(frozen=True)
class ImageTransform:
    """uint8 (3, H, W) -> normalised float (3, S, S). ``train`` switches to a random crop."""

    protocol: str
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: bool = False
    resize: int = RESIZE_TO  # paper protocol: the backbone's resize (256 for 224-px towers)

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.normalize(self.geometry(image, generator))

    def geometry(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """uint8 (3, H, W) -> uint8 (3, S, S): resize / pad / crop, still 8-bit.

        Extraction ships these uint8 crops from the loader workers (4× less than float32)
        and normalises on the device.
        """
        return self.geometry_batch([image], [generator])[0]

    def geometry_batch(
        self, images: list[torch.Tensor], generators: list[torch.Generator | None]
    ) -> torch.Tensor:
        """:meth:`geometry` of each image -> (B, 3, S, S), resizing equal-size images in one call.

        On the GPU (nvJPEG path) one resize per image is a kernel sequence per image; grouping
        by size makes it one per group. Each image's crop still uses its own generator.
        """
        if self.protocol == "paper":
            images = resize_grouped(images, self.resize)
        return torch.stack(
            [self._crop(pad_to_min_size(im, self.size), g) for im, g in zip(images, generators)]
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, S, S) -> float32 in [0, 1], standardised with the backbone's mean/std."""
        mean, std = norm_constants(self.mean, self.std, images.device)  # (3, 1, 1) each
        # One float copy of the batch, then in place (copy=True: never touch the caller's tensor).
        return images.to(torch.float32, copy=True).div_(255.0).sub_(mean).div_(std)

    def _crop(self, image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        h, w = image.shape[-2:]
        if not self.train:
            return TF.center_crop(image, [self.size, self.size])
        top = int(torch.randint(0, h - self.size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - self.size + 1, (1,), generator=generator))
        return image[..., top : top + self.size, left : left + self.size]

    def describe(self) -> dict:
        return {
            "protocol": self.protocol,
            "size": self.size,
            "train": self.train,
            "resize": self.resize if self.protocol == "paper" else None,
        }


@lru_cache(maxsize=32)
def norm_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (3, 1, 1) mean and std tensors on ``device``, built once per (mean, std, device).

    Building them per batch was a pageable host-to-device copy, which waits for the GPU every
    batch and undid extraction's one-batch-behind overlap. Never modified in place. Built
    outside inference mode, so a first call inside ``torch.inference_mode`` does not hand
    inference tensors to later callers.
    """
    with torch.inference_mode(False):
        shape = (3, 1, 1)
        return (
            torch.tensor(mean, dtype=torch.float32, device=device).view(shape),
            torch.tensor(std, dtype=torch.float32, device=device).view(shape),
        )


def resize_grouped(images: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """Each (3, H, W) image resized to size×size (bilinear, antialiased), per equal-size chunk.

    Batched resizing treats every image independently, so the result equals resizing one by one.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        groups[(tuple(image.shape), image.device, image.dtype)].append(i)
    out = list(images)
    for members in groups.values():
        for start in range(0, len(members), RESIZE_CHUNK):
            chunk = members[start : start + RESIZE_CHUNK]
            resized = TF.resize(
                torch.stack([images[i] for i in chunk]), [size, size], antialias=True
            )
            for i, image in zip(chunk, resized):
                out[i] = image
    return out


def pad_to_min_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (centered) so both sides are at least ``size``; images under 224 occur."""
    h, w = image.shape[-2:]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return image
    return TF.pad(image, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)


def build_transform(backbone, protocol: str | None = None, train: bool = False) -> ImageTransform:
    """The transform matching ``backbone`` (its size, mean, std and configured protocol)."""
    return ImageTransform(
        protocol=protocol or backbone.cfg.preprocess,
        size=backbone.image_size,
        mean=backbone.mean,
        std=backbone.std,
        train=train,
        resize=getattr(backbone, "resize_to", RESIZE_TO),
    )
