"""Test-time post-processing for the robustness evaluation: JPEG, Gaussian blur, downscaling.

Every operation is a pure function uint8 (3, H, W) -> uint8 (3, H', W'), applied at native
resolution *before* the backbone transform, the way an image is re-saved or resized online.
All three are deterministic (no random draws), so results depend only on the pixels.

Names: ``jpeg<quality>``, ``blur<sigma>``, ``down<factor>``, chained with ``+`` and applied
left to right (``jpeg50+blur2``: JPEG-compress at quality 50, then blur with σ = 2).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from .errors import ClipflowError

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
CLEAN_STRENGTH = {"jpeg": 100.0, "blur": 0.0, "resize": 1.0}


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode as JPEG in memory with PIL (libjpeg, 4:2:0 chroma subsampling) and decode.

    Runs on the CPU whatever ``image.device`` is (libjpeg is the codec images meet online)."""
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(
        buf, format="JPEG", quality=int(quality), subsampling="4:2:0", optimize=False
    )
    buf.seek(0)
    with Image.open(buf) as im:
        arr = np.array(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous().to(image.device)  # (3, H, W)


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
    """Antialiased bilinear resize by ``factor`` (each side rounded, at least 1 pixel)."""
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
        for op, value in self.steps:
            image = OPS[op](image, value)
        return image

    def describe(self) -> dict:
        """Parameters recorded in metrics.json (enough to redo the perturbation elsewhere)."""
        return {
            "name": self.name,
            "family": self.family,
            "strength": self.strength,
            "steps": [{"op": op, PARAM_NAMES[op]: value} for op, value in self.steps],
        }


OPS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "jpeg": jpeg,
    "blur": gaussian_blur,
    "resize": downscale,
}
PARAM_NAMES = {"jpeg": "quality", "blur": "sigma", "resize": "factor"}
_ATOM = re.compile(r"^(jpeg|blur|down)(\d+(?:\.\d+)?)$")


def _parse_step(atom: str) -> tuple[str, float]:
    m = _ATOM.match(atom)
    if not m:
        raise ClipflowError(
            f"unknown perturbation {atom!r}: use jpeg<quality>, blur<sigma>, down<factor> "
            f"(e.g. {', '.join(DEFAULT_NAMES)}) or a group ({', '.join(GROUPS)})"
        )
    kind, value = m.group(1), float(m.group(2))
    if kind == "jpeg" and not (value.is_integer() and 1 <= value <= 100):
        raise ClipflowError(f"{atom}: JPEG quality must be an integer in 1..100")
    if kind == "blur" and value <= 0:
        raise ClipflowError(f"{atom}: blur sigma must be > 0")
    if kind == "down" and not 0 < value < 1:
        raise ClipflowError(f"{atom}: downscale factor must be in (0, 1)")
    return ("resize" if kind == "down" else kind), (int(value) if kind == "jpeg" else value)


def parse_perturbation(name: str) -> Perturbation:
    """``jpeg75`` / ``blur2`` / ``down0.5`` / chains like ``jpeg50+blur2`` -> Perturbation."""
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
