"""``data.reencode``, the bias-controlled switch: every test image, real or fake, re-encoded
the same way before the backbone (``jpeg96``, ``short512+jpeg96``), so that a format
difference between the classes (PNG reals vs JPEG fakes, a known confound of today's
benchmarks) cannot be what a detector scores. Applied as a feature-extraction variant whose
cache key names the re-encoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import DataError

if TYPE_CHECKING:  # parsing is torch-free: the settings layer checks data.reencode with it
    import torch

_REENCODE = re.compile(r"^(?:short(\d+)\+)?jpeg(\d+)$")


@dataclass(frozen=True)
class Reencode:
    """``short<S>+jpeg<Q>`` / ``jpeg<Q>``: resize the short side to S (optional), JPEG at Q."""

    name: str
    quality: int
    short_side: int | None = None

    def __call__(self, image: torch.Tensor, generator=None) -> torch.Tensor:
        from .perturb import jpeg  # the robustness code's libjpeg round trip, one home

        if self.short_side is not None:
            image = resize_short_side(image, self.short_side)
        return jpeg(image, self.quality)

    def describe(self) -> dict:
        return {"name": self.name, "short_side": self.short_side, "jpeg_quality": self.quality}


def resize_short_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize so that the shorter side is ``size`` (aspect kept)."""
    from .perturb import downscale  # the robustness code's resize, one home

    short = min(image.shape[-2:])
    return image if short == size else downscale(image, size / short)


def parse_reencode(spec: str | None) -> Reencode | None:
    """``none`` -> None; ``jpeg96`` / ``short512+jpeg96`` -> Reencode; else a DataError."""
    text = str(spec or "none").strip().lower()
    if text in ("none", "false", "off", ""):
        return None
    m = _REENCODE.match(text)
    if not m or not 1 <= int(m.group(2)) <= 100 or (m.group(1) and int(m.group(1)) < 1):
        raise DataError(
            f"data.reencode={spec!r}: use none, jpeg<quality 1-100> (e.g. jpeg96) or "
            "short<pixels>+jpeg<quality> (e.g. short512+jpeg96)"
        )
    return Reencode(text, int(m.group(2)), int(m.group(1)) if m.group(1) else None)


def reencode_variant(spec: str | None):
    """The feature-extraction Variant of ``data.reencode`` (None when off). Its key names the
    re-encoding, so cached features of the original images are never reused for it."""
    from .variant import Variant

    r = parse_reencode(spec)
    return None if r is None else Variant(f"reencode:{r.name}", r)


def describe_reencode(spec: str | None) -> dict | None:
    r = parse_reencode(spec)
    return None if r is None else r.describe()
