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
# The short side S of short<S>+jpeg<Q>, in pixels. At least one 4:2:0 JPEG macroblock (16 x 16):
# below it the codec no longer sees a picture, and a 1-pixel side breaks the antialiased
# resize (a torch internal assert). At most 4096: that is already a 16 MP square (a 3:2 photo
# decodes to 25 MP, 75 MB a copy, in every loader worker), and a typo such as short99999999
# would otherwise ask for a 10^16-byte image and fail on every file.
SHORT_MIN, SHORT_MAX = 16, 4096
QUALITY_MIN, QUALITY_MAX = 1, 100
USAGE = (
    f"use none, jpeg<quality {QUALITY_MIN}-{QUALITY_MAX}> (e.g. jpeg96) or "
    f"short<pixels {SHORT_MIN}-{SHORT_MAX}>+jpeg<quality> (e.g. short512+jpeg96)"
)


@dataclass(frozen=True)
class Reencode:
    """``short<S>+jpeg<Q>`` / ``jpeg<Q>``: resize the short side to S (optional), JPEG at Q."""

    name: str
    quality: int
    short_side: int | None = None

    def __post_init__(self):
        # built by parse_reencode, or directly by library code: the same ranges either way
        problem = _range_problem(self.quality, self.short_side)
        if problem:
            raise DataError(f"data.reencode={self.name!r}: {problem}")

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
    problem = reencode_problem(spec)
    if problem:
        raise DataError(f"data.reencode={spec!r}: {problem}")
    text = _normalized(spec)
    m = _REENCODE.match(text)
    if m is None:
        return None
    return Reencode(text, int(m.group(2)), int(m.group(1)) if m.group(1) else None)


def reencode_problem(spec: str | None) -> str | None:
    """What is wrong with a ``data.reencode`` value (one line), or None when it is usable."""
    text = _normalized(spec)
    if text in _OFF:
        return None
    m = _REENCODE.match(text)
    if m is None:
        return USAGE
    return _range_problem(int(m.group(2)), int(m.group(1)) if m.group(1) else None)


_OFF = ("none", "false", "off", "")


def _normalized(spec: str | None) -> str:
    return str(spec or "none").strip().lower()


def _range_problem(quality: int, short_side: int | None) -> str | None:
    if not QUALITY_MIN <= quality <= QUALITY_MAX:
        return f"JPEG quality {quality} is outside {QUALITY_MIN}-{QUALITY_MAX}; {USAGE}"
    if short_side is not None and not SHORT_MIN <= short_side <= SHORT_MAX:
        return f"short side {short_side} px is outside {SHORT_MIN}-{SHORT_MAX} px; {USAGE}"
    return None


def reencode_variant(spec: str | None):
    """The feature-extraction Variant of ``data.reencode`` (None when off). Its key names the
    re-encoding, so cached features of the original images are never reused for it."""
    from .variant import Variant

    r = parse_reencode(spec)
    return None if r is None else Variant(f"reencode:{r.name}", r)


def describe_reencode(spec: str | None) -> dict | None:
    r = parse_reencode(spec)
    return None if r is None else r.describe()
