"""Image files to uint8 ``(3, H, W)`` tensors: PIL on the host (:func:`pil_to_uint8_tensor`),
or, on the GPU side of extraction, nvJPEG decoding, then proxies and transforms on the device.

With ``decode="nvjpeg"`` the loader workers only read files: plain JPEGs travel as raw
bytes and are decoded in one batched nvJPEG call; everything nvJPEG does not cover
(other formats, CMYK, EXIF-rotated or broken JPEGs) is decoded by PIL on the host, so no
file is treated differently from the CPU path except for the decoder's rounding.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from ..data.imageio import DEFAULT_MAX_PIXELS, load_image, to_rgb
from ..errors import UnreadableImageError

log = logging.getLogger(__name__)

JPEG_SUFFIXES = (".jpg", ".jpeg")
_EXIF_ORIENTATION = 0x0112
_EOI = b"\xff\xd9"


def read_payload(
    path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[str, torch.Tensor]:
    """("jpeg", raw bytes (n,) uint8) when nvJPEG can take the file as is,
    else ("pixels", (3, H, W)). A JPEG is read once: its header is checked in the bytes read."""
    if path.lower().endswith(JPEG_SUFFIXES):
        data = _file_bytes(path)
        # A JPEG without its end marker is truncated: libjpeg would fill it with grey where
        # the PIL path refuses it, so let PIL decide and report.
        if data is not None and _EOI in data[-64:] and _plain_jpeg(data, max_pixels):
            return "jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return "pixels", pil_to_uint8_tensor(load_image(path, max_pixels))


def _file_bytes(path: str) -> bytes | None:
    """A regular file's bytes, or None (then load_image gives the reason: special file, ...)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # never open a FIFO or a device: open() could block
        with open(path, "rb") as fh:
            return fh.read()
    except (OSError, ValueError):
        return None


def _plain_jpeg(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bool:
    """A baseline RGB/gray JPEG without EXIF rotation, within the pixel cap (header only;
    a larger one goes to load_image, which refuses it with the reason)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            rotated = im.getexif().get(_EXIF_ORIENTATION, 1) != 1
            small = max_pixels is None or im.width * im.height <= max_pixels
            return im.format == "JPEG" and im.mode in ("RGB", "L") and not rotated and small
    except Exception:
        return False  # let the PIL path produce the proper error message


@dataclass
class PackedPayloads:
    """A batch of :func:`read_payload` results as one byte buffer for all its JPEGs.

    Built in the loader worker: the batch then crosses to the main process as one shared
    tensor (plus the rare decoded images), not one tensor per file.
    """

    kinds: list[str]
    blob: torch.Tensor  # (total bytes,) uint8: every JPEG of the batch, back to back
    spans: list[tuple[int, int]]  # (start, end) in blob of each "jpeg" entry, else (0, 0)
    pixels: list[torch.Tensor | None]  # the (3, H, W) image of each "pixels" entry

    @classmethod
    def pack(cls, payloads: list[tuple[str, torch.Tensor]]) -> PackedPayloads:
        kinds = [kind for kind, _ in payloads]
        jpegs = [data for kind, data in payloads if kind == "jpeg"]
        spans, start = [], 0
        for kind, data in payloads:
            end = start + len(data) if kind == "jpeg" else start
            spans.append((start, end) if kind == "jpeg" else (0, 0))
            start = end
        blob = torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8)
        pixels = [data if kind == "pixels" else None for kind, data in payloads]
        return cls(kinds, blob, spans, pixels)

    def unpack(self) -> list[tuple[str, torch.Tensor]]:
        """The payloads again; each JPEG a view into ``blob`` (no copy)."""
        out = []
        for kind, (start, end), image in zip(self.kinds, self.spans, self.pixels):
            out.append((kind, self.blob[start:end] if kind == "jpeg" else image))
        return out  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.kinds)


@dataclass
class PayloadGroup:
    """Several :class:`PackedPayloads` as one batch, in order, without copying their bytes
    (a 1024-px batch holds ~80 MB of JPEG data: one more host copy per batch would show)."""

    parts: list[PackedPayloads]

    def unpack(self) -> list[tuple[str, torch.Tensor]]:
        return [payload for part in self.parts for payload in part.unpack()]

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)


def decode_on_device(
    payloads: list[tuple[str, torch.Tensor]], paths: list[str], device
) -> list[torch.Tensor | Exception]:
    """uint8 (3, H, W) images on ``device``, or the error that made a file unreadable."""
    out: list[torch.Tensor | Exception] = [None] * len(payloads)  # type: ignore[list-item]
    jpeg_idx = [i for i, (kind, _) in enumerate(payloads) if kind == "jpeg"]
    for i, (kind, data) in enumerate(payloads):
        if kind == "pixels":
            out[i] = data.to(device, non_blocking=True)
    if jpeg_idx:
        for i, img in zip(jpeg_idx, _decode_jpegs([payloads[i][1] for i in jpeg_idx], device)):
            out[i] = img if img is not None else _pil_fallback(paths[i], device)
    return out


def _decode_jpegs(data: list[torch.Tensor], device) -> list[torch.Tensor | None]:
    """One batched nvJPEG call; if it fails, each file alone on the device (None: failed).

    nvJPEG gives no partial results, so one bad file fails the whole batch: decoding the
    others one by one keeps them on the GPU and leaves only the bad ones to PIL.
    """
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    out: list[torch.Tensor | None] = []
    for payload in data:
        try:
            out.append(decode_jpeg(payload, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out.append(None)
    log.debug(
        "batched JPEG decode failed; %d of %d files left to PIL",
        sum(x is None for x in out),
        len(out),
    )
    return out


def _pil_fallback(path: str, device) -> torch.Tensor | Exception:
    try:
        return pil_to_uint8_tensor(load_image(path)).to(device, non_blocking=True)
    except UnreadableImageError as err:
        return err


def pil_to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """An image as a contiguous ``(3, H, W)`` uint8 tensor (non-RGB modes converted first)."""
    rgb = to_rgb(img)
    arr = np.array(rgb, dtype=np.uint8)  # a writable copy: torch warns on read-only buffers
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
