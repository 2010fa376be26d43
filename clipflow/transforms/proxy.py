"""Proxy images (SPEC §4): pure tensor operations on 0–255 images, plus a small builder.

Every function takes images as ``(N, C, H, W)`` or ``(C, H, W)`` tensors on the 0–255 scale
(uint8 or float) and returns the same shape. Randomness only comes from the explicit
``generator`` argument; with a CPU generator and CUDA images the draws happen on the CPU and
are moved, so a seed gives the same proxies on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from .config import BANDS, MASK_MODES, VAL_BANDS, ProxyConfig, ratio_problem
from .perturb import blur_kernel_size


# ---------------------------------------------------------------- helpers
def _as_batch(images: Tensor) -> tuple[Tensor, bool]:
    if images.dim() == 3:
        return images.unsqueeze(0), True
    if images.dim() == 4:
        return images, False
    raise ValueError(f"images must be (C, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    # Draw where the generator lives so a seed means the same thing on every device.
    return generator.device if generator is not None else device


def _moved(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``; CPU draws reach a GPU without waiting for it.

    A plain ``.to("cuda")`` of pageable memory synchronises the stream: once per image on the
    device-decode path. From pinned memory the copy is queued like a kernel (the caching host
    allocator keeps the pinned block until the copy has run). The values are the same bytes.
    """
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _parse_band(band: str) -> list[str]:
    names = band.split("+")
    bad = [b for b in names if b not in BANDS]
    if bad:
        raise ValueError(
            f"unknown band {band!r}: use one of {BANDS} or a '+' union like 'low+high'"
        )
    return names


def _check_ratio(ratio: float) -> None:
    problem = ratio_problem(ratio)
    if problem:
        raise ValueError(f"ratio {problem}, got {ratio}")


def _check_mode(mode: str) -> None:
    if mode not in MASK_MODES:
        raise ValueError(f"unknown mask mode {mode!r}: use one of {MASK_MODES}")


def _band_rect(h: int, w: int, band: str) -> tuple[int, int, int, int]:
    """Band rectangle (y0, y1, x0, x1) in raw, unshifted DFT index space (reference mask.py)."""
    return {
        "low": (0, h // 4, 0, w // 4),
        "mid": (h // 4, 3 * h // 4, w // 4, 3 * w // 4),
        "high": (3 * h // 4, h, 3 * w // 4, w),
        "all": (0, h, 0, w),
    }[band]


def _spectral_output(x: Tensor, mode: str, out_dtype: torch.dtype, squeeze: bool) -> Tensor:
    """Cast the real IDFT (float64, 0–255 scale) to ``out_dtype`` the way ``mode`` says."""
    if out_dtype.is_floating_point:
        out = x.to(out_dtype)
    elif out_dtype == torch.uint8 and mode == "compat":
        # The reference does ndarray.astype(np.uint8): truncation toward zero, and on the
        # usual platforms out-of-range values wrap modulo 256 (e.g. -3.2 -> 253), not clip.
        out = torch.remainder(torch.trunc(x), 256).to(torch.uint8)
    elif out_dtype == torch.uint8:
        out = x.round().clamp(0, 255).to(torch.uint8)
    else:
        raise ValueError(f"out_dtype must be torch.uint8 or a float dtype, got {out_dtype}")
    return out.squeeze(0) if squeeze else out


def _to_float(images: Tensor) -> Tensor:
    return images.to(torch.float64 if images.dtype == torch.float64 else torch.float32)


def _restore(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Clip to [0, 255] and return to ``dtype`` (integer dtypes are rounded first)."""
    x = x.clamp(0, 255)
    return x.to(dtype) if dtype.is_floating_point else x.round().to(dtype)


# ---------------------------------------------------------------- frequency masking (§4.1)
def frequency_band_mask(
    h: int,
    w: int,
    band: str = "low",
    ratio: float = 0.1,
    n_images: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random DFT-bin mask of SPEC §4.1.2–3; True = masked.

    Per band, ``ceil(ratio * A)`` of its ``A`` bins are drawn uniformly without replacement,
    independently for every image. A ``'+'`` union draws each band independently and ORs them.

    Returns:
        Bool tensor (N, H, W) on ``device``.
    """
    names = _parse_band(band)
    _check_ratio(ratio)
    device = torch.device(device if device is not None else "cpu")
    draw = _draw_device(generator, device)
    mask = torch.zeros(n_images, h, w, dtype=torch.bool, device=draw)  # (N, H, W)
    for name in names:
        y0, y1, x0, x1 = _band_rect(h, w, name)
        area = (y1 - y0) * (x1 - x0)
        n = math.ceil(ratio * area)  # same float expression as the reference's np.ceil
        if n == 0:
            continue
        # The first n of a random ordering = uniform sampling without replacement; float64
        # keys make ties (which would only bias, never duplicate) practically impossible.
        keys = torch.rand(n_images, area, generator=generator, device=draw, dtype=torch.float64)
        chosen = torch.zeros(n_images, area, dtype=torch.bool, device=draw)  # (N, A)
        chosen.scatter_(1, keys.argsort(dim=1)[:, :n], True)
        mask[:, y0:y1, x0:x1] |= chosen.view(n_images, y1 - y0, x1 - x0)
    return _moved(mask, device)


def frequency_mask(
    images: Tensor,
    band: str = "low",
    ratio: float = 0.1,
    mode: str = "compat",
    generator: torch.Generator | None = None,
    out_dtype: torch.dtype = torch.uint8,
) -> Tensor:
    """Frequency masking of Doloriel & Cheung (SPEC §4.1): zero random DFT bins of a band.

    No fftshift, as in the reference: "low" is the corner at DC, "high" its conjugate mirror
    and "mid" the centre, which holds the highest frequencies (SPEC §4.1.6). The output is
    the real part of the IDFT, so a masked bin whose conjugate partner survives is halved.

    Precision: the DFT runs in complex128 on every device, so the truncating cast of
    ``mode="compat"`` sees the same values as the reference (numpy FFTs in double).

    Args:
        images: (N, C, H, W) or (C, H, W), 0–255, uint8 or float.
        band: "low", "mid", "high", "all" or a union such as "low+high".
        ratio: fraction of the band's bins to mask, in [0, 1].
        mode: "compat" truncates and wraps like the reference's uint8 cast; "clean" rounds
            and clips. Ignored on the float path.
        generator: source of the mask positions (fresh draw per image and per call).
        out_dtype: torch.uint8, or a float dtype for the float path (no cast, may leave
            [0, 255]).

    Returns:
        Tensor of the input's shape and ``out_dtype``.
    """
    _check_mode(mode)
    x, squeeze = _as_batch(images)  # (N, C, H, W)
    n, _, h, w = x.shape
    masked = frequency_band_mask(h, w, band, ratio, n, generator, x.device)  # (N, H, W)
    spec = torch.fft.fft2(x.to(torch.complex128))  # (N, C, H, W), over the last two axes
    spec = spec * (~masked).unsqueeze(1)  # same positions on every channel
    return _spectral_output(torch.fft.ifft2(spec).real, mode, out_dtype, squeeze)


def phase_only_mask(
    images: Tensor,
    band: str = "low",
    ratio: float = 0.1,
    mode: str = "compat",
    generator: torch.Generator | None = None,
    out_dtype: torch.dtype = torch.uint8,
) -> Tensor:
    """FM phase-only (SPEC §4.2): at the selected bins keep |F| and zero the phase (F -> |F|).

    Bins are selected exactly as in :func:`frequency_mask`; other bins are untouched. As
    there, only the real part of the IDFT is kept, so a selected bin whose conjugate partner
    is not selected ends at (|F| + F) / 2; |F| survives exactly where the selection is
    conjugate-symmetric (e.g. band "all", ratio 1).
    """
    _check_mode(mode)
    x, squeeze = _as_batch(images)  # (N, C, H, W)
    n, _, h, w = x.shape
    selected = frequency_band_mask(h, w, band, ratio, n, generator, x.device).unsqueeze(1)
    spec = torch.fft.fft2(x.to(torch.complex128))  # (N, C, H, W)
    spec = torch.where(selected, spec.abs().to(spec.dtype), spec)
    return _spectral_output(torch.fft.ifft2(spec).real, mode, out_dtype, squeeze)


# ---------------------------------------------------------------- validation proxy (§4.3)
def bandstop(
    images: Tensor,
    low: float = 30.0,
    high: float = 100.0,
    ref_size: int = 256,
    mode: str = "clean",
    out_dtype: torch.dtype = torch.uint8,
    reading: str = "open",
) -> Tensor:
    """Zero every DFT bin whose distance from DC lies strictly in (low, high) (SPEC §4.3).

    Distances are those of the centred spectrum; the radii are given for a ``ref_size``
    image and scaled by ``min(H, W) / ref_size``. The zeroed set is conjugate-symmetric, so
    the output is real. Deterministic. ``reading``: which reading of the band (VAL_BANDS in
    transforms/config.py; ``open`` is the one described here).
    """
    _check_mode(mode)
    if not 0.0 <= low < high:
        raise ValueError(f"bandstop needs 0 <= low < high, got low={low}, high={high}")
    x, squeeze = _as_batch(images)  # (N, C, H, W)
    h, w = x.shape[-2:]
    stop = bandstop_mask(h, w, low, high, ref_size, x.device, reading)  # (H, W)
    spec = torch.fft.fft2(x.to(torch.complex128)) * (~stop)
    return _spectral_output(torch.fft.ifft2(spec).real, mode, out_dtype, squeeze)


def bandstop_mask(
    h: int,
    w: int,
    low: float = 30.0,
    high: float = 100.0,
    ref_size: int = 256,
    device: torch.device | str | None = None,
    reading: str = "open",
) -> Tensor:
    """Bool (H, W) mask, True where :func:`bandstop` zeroes the bin (unshifted layout)."""
    if reading not in VAL_BANDS:
        raise ValueError(f"unknown band reading {reading!r}: use one of {VAL_BANDS}")

    def signed_abs(n: int) -> Tensor:  # |fftfreq(n) * n|: distance of index k from DC
        k = torch.arange(n, device=device, dtype=torch.float64)
        return torch.minimum(k, n - k)

    ky, kx = signed_abs(h)[:, None], signed_abs(w)[None, :]
    dist = torch.maximum(ky, kx) if reading == "square" else torch.hypot(ky, kx)  # (H, W)
    scale = 1.0 if reading == "pixels" else min(h, w) / ref_size
    if reading == "closed":
        return (dist >= low * scale) & (dist <= high * scale)
    return (dist > low * scale) & (dist < high * scale)


def bandstop_key(reading: str = "open") -> str:
    """The validation proxy's name (its feature-cache variant key) under ``reading``; the
    default's key is the one every earlier cache and checkpoint recorded."""
    if reading not in VAL_BANDS:  # settings built in code skip the settings' rule
        raise ValueError(f"unknown band reading {reading!r}: use one of {VAL_BANDS}")
    return {
        "open": "bandstop(30,100)@256",
        "closed": "bandstop[30,100]@256",
        "pixels": "bandstop(30,100)px",
        "square": "bandstop-square(30,100)@256",
    }[reading]


# ---------------------------------------------------------------- spatial proxies (Table III)
def _blur(x: Tensor, sigma: float) -> Tensor:
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    k = blur_kernel_size(sigma)
    return TF.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])


def gaussian_smooth(images: Tensor, sigma: float = 1.0) -> Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (reflect padding)."""
    return _restore(_blur(_to_float(images), sigma), images.dtype)


def sharpen(images: Tensor, amount: float = 1.0, sigma: float = 1.0) -> Tensor:
    """Unsharp mask: ``x + amount * (x - blur(x))``, clipped to [0, 255]."""
    x = _to_float(images)
    return _restore(x + amount * (x - _blur(x, sigma)), images.dtype)


def gaussian_noise(
    images: Tensor, sigma: float = 5.0, generator: torch.Generator | None = None
) -> Tensor:
    """Additive N(0, sigma²) noise on the 0–255 scale, clipped."""
    x = _to_float(images)
    draw = _draw_device(generator, x.device)
    noise = _moved(torch.randn(x.shape, generator=generator, device=draw, dtype=x.dtype), x.device)
    return _restore(x + sigma * noise, images.dtype)


def color_jitter(
    images: Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """torchvision-style ColorJitter with factors (and op order) drawn per image.

    Brightness/contrast/saturation factors are uniform in [max(0, 1 - v), 1 + v], the hue
    shift uniform in [-hue, hue]; a parameter of 0 disables its op.
    """
    if min(brightness, contrast, saturation) < 0 or not 0 <= hue <= 0.5:
        raise ValueError(
            "color_jitter needs brightness, contrast, saturation >= 0 and hue in [0, 0.5]"
        )
    x, squeeze = _as_batch(_to_float(images) / 255.0)  # adjust_* expect floats in [0, 1]
    draw = _draw_device(generator, x.device)
    # (op, lowest, highest) as torchvision's ColorJitter; a range of width 0 skips the op
    ops = [
        (TF.adjust_brightness, max(0.0, 1 - brightness), 1 + brightness),
        (TF.adjust_contrast, max(0.0, 1 - contrast), 1 + contrast),
        (TF.adjust_saturation, max(0.0, 1 - saturation), 1 + saturation),
        (TF.adjust_hue, -hue, hue),
    ]
    out = []
    for img in x:  # (C, H, W): adjust_* take one factor per call
        u = torch.rand(4, generator=generator, device=draw, dtype=torch.float64).tolist()
        for i in torch.randperm(4, generator=generator, device=draw).tolist():
            fn, lo, hi = ops[i]
            if hi > lo:
                img = fn(img, lo + u[i] * (hi - lo))
        out.append(img)
    y = torch.stack(out) * 255.0  # (N, C, H, W)
    return _restore(y.squeeze(0) if squeeze else y, images.dtype)


# ---------------------------------------------------------------- config + builder
ProxyFn = Callable[[Tensor, torch.Generator | None], Tensor]


def build_proxy(cfg: ProxyConfig, mode: str) -> ProxyFn:
    """Turn a config into ``fn(images, generator) -> proxies`` (same shape and dtype); ``mode``
    (the training mode) gives a null ``ratio`` its default.

    Config errors (unknown name, band, mode, ratio) raise ValueError here, not mid-run.
    Frequency proxies of float inputs take the float path (no uint8 cast).
    """
    p = cfg.describe(mode)
    if cfg.name == "recon":  # needs an autoencoder and the files: clipflow.features.recon
        raise ValueError("proxy=recon is built from reconstructions (clipflow.features.recon)")
    if p.get("sigma") is not None and p["sigma"] <= 0:
        raise ValueError(f"sigma must be > 0, got {p['sigma']}")
    if cfg.name in ("freq_mask", "freq_phase"):
        _parse_band(cfg.band)
        _check_ratio(p["ratio"])
        _check_mode(cfg.mask_mode)
        op = frequency_mask if cfg.name == "freq_mask" else phase_only_mask

        def spectral(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
            return op(images, cfg.band, p["ratio"], cfg.mask_mode, generator, images.dtype)

        return spectral
    return _spatial_proxy(cfg.name, p)


def _spatial_proxy(name: str, p: dict) -> ProxyFn:
    """The non-spectral proxies, their parameters resolved in ``p`` (ProxyConfig.describe)."""

    def proxy(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if name == "smoothing":
            return gaussian_smooth(images, p["sigma"])
        if name == "sharpening":
            return sharpen(images, p["amount"], p["sigma"])
        if name == "gaussian_noise":
            return gaussian_noise(images, p["sigma"], generator)
        if name == "color_jitter":
            jitter = {k: p[k] for k in ("brightness", "contrast", "saturation", "hue")}
            return color_jitter(images, **jitter, generator=generator)
        return images  # "none": natural images only

    return proxy
