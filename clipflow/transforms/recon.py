"""Reconstruction proxies as tensor operations: an autoencoder's round trip and a frequency blend.

:func:`reconstruct` passes uint8 images through any object with ``scale`` and
``reconstruct(float images in [-1, 1])`` (clipflow.backbones.autoencoder.AutoencoderProtocol),
padding each side to a multiple of ``scale`` by reflection and cropping back, so an image of any
size comes back at its own size. :func:`frequency_blend` mixes an image's spectrum into its
reconstruction's inside a radial band, our reading of Dual Data Alignment's frequency-level
alignment: ``mix=0`` is the reconstruction itself, ``mix=1`` with ``band=high`` keeps the
reconstruction's low frequencies and the original's high ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import RECON_BANDS


def reconstruct(autoencoder, images: Tensor, device: str | torch.device = "cpu") -> Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, H, W) reconstructions, computed on ``device``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    scale = int(autoencoder.scale)
    pad_h, pad_w = (-h) % scale, (-w) % scale
    x = images.to(device, torch.float32) / 127.5 - 1.0  # (N, 3, H, W) in [-1, 1]
    if pad_h or pad_w:
        # reflect needs a pad smaller than the side; a tiny image falls back to replicate
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    with torch.inference_mode():
        y = autoencoder.reconstruct(x)[..., :h, :w].float()
    return ((y.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).cpu()


def radial_band(h: int, w: int, band: str, cutoff: float) -> Tensor:
    """Bool (H, W) mask over the unshifted DFT: ``low`` = bins whose normalised radius
    (1 = Nyquist on each axis) is at most ``cutoff``, ``high`` the rest, ``all`` every bin."""
    if band not in RECON_BANDS:
        raise ValueError(f"unknown band {band!r}: use one of {RECON_BANDS}")
    if band == "all":
        return torch.ones(h, w, dtype=torch.bool)
    fy = torch.fft.fftfreq(h).abs() * 2  # (H,) in [0, 1]
    fx = torch.fft.fftfreq(w).abs() * 2  # (W,)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)  # (H, W)
    low = radius <= cutoff
    return low if band == "low" else ~low


def frequency_blend(
    image: Tensor, recon: Tensor, band: str = "high", mix: float = 0.0, cutoff: float = 0.5
) -> Tensor:
    """uint8 (3, H, W) image and reconstruction -> uint8 (3, H, W).

    Spectrum of the result = R + mix · 1[band] · (X − R): inside ``band`` a share ``mix`` of
    the original's spectrum replaces the reconstruction's; outside it the reconstruction stays.
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    if image.shape != recon.shape:
        raise ValueError(f"image {tuple(image.shape)} and reconstruction {tuple(recon.shape)}")
    if mix == 0.0:
        return recon.clone()
    x, r = image.double(), recon.double()
    h, w = image.shape[-2:]
    mask = radial_band(h, w, band, cutoff).to(image.device)
    spec = torch.fft.fft2(r) + mix * mask * (torch.fft.fft2(x) - torch.fft.fft2(r))
    return torch.fft.ifft2(spec).real.clamp(0, 255).round().to(torch.uint8)
