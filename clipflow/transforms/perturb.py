"""Test-time post-processing for the robustness evaluation: JPEG, WebP, blur, resize, noise, crop.

Every operation is a function uint8 (3, H, W) -> uint8 (3, H', W'), applied at native
resolution *before* the backbone transform, the way an image is re-saved or resized online.
JPEG, WebP, blur and resize are deterministic. Noise and crop draw from the ``torch.Generator``
they are given, which the extraction seeds per file (eval seed, variant, path): results then
depend neither on batch order nor on the number of workers, and never on global RNG.

Names: ``jpeg<quality>``, ``webp<quality>``, ``blur<sigma>``, ``down<factor>`` (< 1),
``resize<factor>`` (any scale in (0, 4]), ``noise<sigma>`` (Gaussian, σ on the 0–255 scale),
``crop<keep>`` (a random crop keeping that fraction of each side), chained with ``+`` and
applied left to right (``jpeg50+blur2``: JPEG-compress at quality 50, then blur with σ = 2).
Random per-image chains of these ops (``perturb=chain``) live in :mod:`clipflow.transforms.chains`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from ..errors import ClipflowError
from .variant import Variant

# The settings (SPEC-free choices): the strengths social platforms and re-saves reach.
DEFAULT_NAMES = (
    "jpeg95",
    "jpeg90",
    "jpeg75",
    "jpeg50",
    "jpeg30",
    "blur1",
    "blur2",
    "blur4",
    "down0.75",
    "down0.5",
    "jpeg50+blur2",
)
GROUPS = {
    "none": (),
    "all": DEFAULT_NAMES,
    "jpeg": ("jpeg95", "jpeg90", "jpeg75", "jpeg50", "jpeg30"),
    "blur": ("blur1", "blur2", "blur4"),
    "resize": ("down0.75", "down0.5"),
    "combined": ("jpeg50+blur2",),
}
# What "no perturbation" means on each family's strength axis (for the summary plot).
CLEAN_STRENGTH = {
    "jpeg": 100.0,
    "webp": 100.0,
    "blur": 0.0,
    "resize": 1.0,
    "noise": 0.0,
    "crop": 1.0,
}


def jpeg(image: torch.Tensor, quality: float) -> torch.Tensor:
    """Encode as JPEG in memory with PIL (libjpeg, 4:2:0 chroma subsampling) and decode.

    Runs on the CPU whatever ``image.device`` is (libjpeg is the codec images meet online)."""
    return _codec_round_trip(
        image, format="JPEG", quality=int(quality), subsampling="4:2:0", optimize=False
    )


WEBP_MAX_SIDE = 16383


def webp(image: torch.Tensor, quality: float) -> torch.Tensor:
    """Encode as lossy WebP in memory with PIL (libwebp, default method 4) and decode, on CPU."""
    if max(image.shape[-2:]) > WEBP_MAX_SIDE:  # libwebp's limit: say so, not "encoder error"
        raise ValueError(
            f"WebP cannot encode a {image.shape[-1]}x{image.shape[-2]} image "
            f"(at most {WEBP_MAX_SIDE} px a side)"
        )
    return _codec_round_trip(image, format="WEBP", quality=int(quality), method=4, lossless=False)


def _codec_round_trip(image: torch.Tensor, **save) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(buf, **save)
    buf.seek(0)
    with Image.open(buf) as im:
        arr = np.array(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(image.device)  # (3, H, W)


def gaussian_noise(image: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Add i.i.d. N(0, σ²) per pixel and channel (σ on the 0–255 scale), round, clip to uint8.

    The noise is drawn on the CPU from ``generator`` (identical on every device)."""
    noise = torch.randn(image.shape, generator=generator) * float(sigma)
    out = (image.cpu().float() + noise).round().clamp(0, 255).to(torch.uint8)
    return out.to(image.device)


def random_crop(image: torch.Tensor, keep: float, generator: torch.Generator) -> torch.Tensor:
    """Crop a window of ``keep`` × each side (rounded, at least 1 pixel) at a position drawn
    uniformly from ``generator``: the re-framing a repost or screenshot applies."""
    h, w = image.shape[-2:]
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return image[:, top : top + ch, left : left + cw].contiguous()


def blur_kernel_size(sigma: float) -> int:
    """2·ceil(3σ) + 1: covers ±3σ, odd, as torchvision requires."""
    return 2 * math.ceil(3 * sigma) + 1


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (torchvision, reflect padding); images smaller than the kernel's
    half-width are edge-padded first because reflect padding needs a larger image."""
    k = blur_kernel_size(sigma)
    h, w = image.shape[-2:]
    extra = max(0, k // 2 + 1 - min(h, w))
    if extra:
        padded = (
            F.pad(image[None].float(), [extra] * 4, mode="replicate")[0].round().to(torch.uint8)
        )
        out = TF.gaussian_blur(padded, [k, k], [sigma, sigma])
        return out[:, extra : extra + h, extra : extra + w].contiguous()
    return TF.gaussian_blur(image, [k, k], [sigma, sigma])


def downscale(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Antialiased bilinear resize by ``factor`` (each side rounded, at least 1 pixel);
    factors above 1 upscale (``resize<factor>``)."""
    h, w = image.shape[-2:]
    size = [max(1, round(h * factor)), max(1, round(w * factor))]
    return TF.resize(image, size, antialias=True)


@dataclass(frozen=True)
class Perturbation:
    """One named post-processing chain; callable as a feature-extraction variant."""

    name: str
    family: str  # jpeg | blur | resize | combined
    strength: float | None  # the family's parameter (quality, sigma, factor); None for chains
    steps: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    def __call__(
        self, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Apply the steps left to right; the random ones (noise, crop) draw in turn from
        ``generator`` (None: a fixed seed 0, so a direct call is deterministic too)."""
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        return apply_steps(image, self.steps, [generator] * len(self.steps))

    def variant(self) -> Variant:
        """The extraction variant: keyed by the name, so its per-file random draws (and any
        cache entry) do not depend on which other perturbations share the pass."""
        return Variant(f"perturb:{self.name}", self)

    def describe(self) -> dict:
        """Parameters recorded in metrics.json (enough to redo the perturbation elsewhere)."""
        return {
            "name": self.name,
            "family": self.family,
            "strength": self.strength,
            "steps": [{"op": op, PARAM_NAMES[op]: value} for op, value in self.steps],
        }


def apply_steps(
    image: torch.Tensor, steps: Sequence[tuple[str, float]], generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """``steps`` left to right, step i drawing (if it draws at all) from ``generators[i]``."""
    for (op, value), gen in zip(steps, generators, strict=True):
        image = OPS[op](image, value, gen)
    return image


# op -> fn(image, value, generator); the deterministic ops ignore the generator.
OpFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def _pure(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> OpFn:
    return lambda image, value, generator: fn(image, value)


OPS: dict[str, OpFn] = {
    "jpeg": _pure(jpeg),
    "webp": _pure(webp),
    "blur": _pure(gaussian_blur),
    "resize": _pure(downscale),
    "noise": gaussian_noise,
    "crop": random_crop,
}
PARAM_NAMES = {
    "jpeg": "quality",
    "webp": "quality",
    "blur": "sigma",
    "resize": "factor",
    "noise": "sigma",
    "crop": "keep",
}
_ATOM = re.compile(r"^(jpeg|webp|blur|down|resize|noise|crop)(\d+(?:\.\d+)?)$")
_NAMES_HELP = (
    "jpeg<quality>, webp<quality>, blur<sigma>, down<factor>, resize<factor>, noise<sigma>, "
    "crop<keep>"
)


def _parse_step(atom: str) -> tuple[str, float]:
    m = _ATOM.match(atom)
    if not m:
        raise ClipflowError(
            f"unknown perturbation {atom!r}: use {_NAMES_HELP} "
            f"(e.g. {', '.join(DEFAULT_NAMES)}), a group ({', '.join(GROUPS)}) or chain"
        )
    kind, value = m.group(1), float(m.group(2))
    problem = _STEP_RANGES[kind](value)
    if problem:
        raise ClipflowError(f"{atom}: {problem}")
    return ("resize" if kind == "down" else kind), (
        int(value) if kind in ("jpeg", "webp") else value
    )


def _quality(codec: str) -> Callable[[float], str | None]:
    return lambda v: (
        None
        if v.is_integer() and 1 <= v <= 100
        else (f"{codec} quality must be an integer in 1..100")
    )


# atom -> the problem with its value (None: fine). The caps catch typos, not taste.
_STEP_RANGES: dict[str, Callable[[float], str | None]] = {
    "jpeg": _quality("JPEG"),
    "webp": _quality("WebP"),
    "blur": lambda v: None if v > 0 else "blur sigma must be > 0",
    "down": lambda v: None if 0 < v < 1 else "downscale factor must be in (0, 1)",
    "resize": lambda v: None if 0 < v <= 4 else "resize factor must be in (0, 4]",
    "noise": lambda v: None if 0 < v <= 255 else "noise sigma must be in (0, 255]",
    "crop": lambda v: None if 0 < v <= 1 else "crop keep fraction must be in (0, 1]",
}


def parse_perturbation(name: str) -> Perturbation:
    """``jpeg75`` / ``webp80`` / ``noise5`` / chains like ``jpeg50+blur2`` -> Perturbation."""
    atoms = [atom.strip() for atom in name.strip().split("+")]
    if not all(atoms):
        raise ClipflowError(
            f"perturbation {name!r} has an empty step: chain names with +, e.g. jpeg50+blur2"
        )
    steps = tuple(_parse_step(atom) for atom in atoms)
    family = steps[0][0] if len(steps) == 1 else "combined"
    return Perturbation(
        name.strip(), family, float(steps[0][1]) if len(steps) == 1 else None, steps
    )


def resolve_perturbations(spec: str | Iterable[str] | None) -> list[Perturbation]:
    """Group names (all, jpeg, blur, resize, combined, none) and/or perturbation names,
    as a list or a comma-separated string, -> unique perturbations in the given order."""
    if spec is None:
        return []
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        names += GROUPS.get(item.lower(), (item,))
    return [parse_perturbation(n) for n in dict.fromkeys(names)]
