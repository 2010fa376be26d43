"""The images a caller hands to :class:`~clipflow.detect.Detector` as uint8 ``(3, H, W)`` tensors.

A path, a PIL image, an HWC/HW numpy array or a CHW/HW tensor, one at a time or as a list (a
4-D array or tensor is a batch). Files and PIL images are decoded as ``clipflow-eval`` decodes
them (EXIF rotation, mode conversion: :mod:`clipflow.features.decode`), so the Detector's scores
match the evaluation's for the same files; an input that holds no usable pixels is refused in
one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..core.fileio import display_path
from ..data.imageio import DEFAULT_MAX_PIXELS, load_image
from ..errors import UnreadableImageError
from .decode import pil_to_uint8_tensor


def as_items(images: Any) -> list:
    """One image or a sequence of them -> a list; a 4-D array/tensor is a batch."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def to_uint8_chw(item: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A path, PIL image, HWC/HW numpy array or CHW/HW tensor -> uint8 (3, H, W).

    Files and PIL images get the same EXIF rotation and mode conversion as ``clipflow-eval``.
    Float arrays/tensors must hold values in [0, 1]; uint16 arrays are scaled by 255/65535.
    Arrays are taken as RGB (convert OpenCV's BGR first). A path no file can have (a NUL byte)
    is an UnreadableImageError; an array or tensor that holds no usable pixels a ValueError.
    """
    if isinstance(item, (str, os.PathLike)):
        return pil_to_uint8_tensor(load_image(_checked_path(item), max_pixels))
    if isinstance(item, Image.Image):
        return pil_to_uint8_tensor(ImageOps.exif_transpose(item))
    if isinstance(item, np.ndarray):
        item = _array_to_tensor(item)
    if isinstance(item, torch.Tensor):
        return _tensor_to_uint8_chw(_dense_cpu(item))
    raise TypeError(
        f"cannot score a {type(item).__name__}: pass a path, PIL image, numpy array or tensor"
    )


def _checked_path(item: str | os.PathLike) -> Path:
    """``item`` as a Path; a NUL byte (which no file name holds: the OS refuses the name) is
    the file's reason, as for any other file that cannot be read."""
    path = Path(item)
    if "\0" in str(path):
        raise UnreadableImageError(
            display_path(str(path)), "the path holds a NUL byte: no file has that name"
        )
    return path


def _array_to_tensor(item: np.ndarray) -> torch.Tensor:
    """An HWC/HW numpy image as a CHW/HW tensor (uint16 scaled to uint8); a dtype torch cannot
    hold (object, string, longdouble...) is a one-line ValueError."""
    if item.ndim == 3 and item.shape[-1] not in (1, 3, 4):
        raise ValueError(f"numpy images are HWC with 1, 3 or 4 channels; got shape {item.shape}")
    if item.dtype == np.uint16:  # 16-bit data scaled like 16-bit files (65535 -> 255)
        item = np.rint(item / 257.0).astype(np.uint8)
    item = np.ascontiguousarray(item)
    try:
        t = torch.from_numpy(
            item if item.flags.writeable else item.copy()
        )  # torch warns on read-only
    except TypeError:
        raise ValueError(
            f"numpy images hold numbers; got dtype {item.dtype}: "
            "use uint8, uint16 or float in [0, 1]"
        ) from None
    return t.permute(2, 0, 1) if t.ndim == 3 else t


def _dense_cpu(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached on the CPU; a meta tensor (no data) or a sparse one is a ValueError."""
    if t.is_meta:
        raise ValueError("a meta tensor holds no pixels: pass a tensor with data (on cpu or cuda)")
    if t.layout != torch.strided:
        raise ValueError(f"image tensors are dense; got layout {t.layout}: use t.to_dense()")
    return t.detach().cpu()


def _tensor_to_uint8_chw(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"tensors are CHW (or HW) with 1, 3 or 4 channels; got shape {tuple(t.shape)}"
        )
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise ValueError(f"an image needs pixels; got shape {tuple(t.shape)}")
    t = t[:3] if t.shape[0] >= 3 else t.expand(3, -1, -1)  # alpha dropped, as for files
    if t.dtype == torch.uint8:
        return t.contiguous()
    if not t.is_floating_point():
        raise TypeError(f"unsupported image dtype {t.dtype}: use uint8 or float in [0, 1]")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1e-3 or hi > 1 + 1e-3 or not np.isfinite([lo, hi]).all():
        raise ValueError(f"float images must hold values in [0, 1]; got [{lo:.3g}, {hi:.3g}]")
    return (t.double() * 255.0).round().clamp(0, 255).to(torch.uint8).contiguous()
