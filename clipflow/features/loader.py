"""How images reach the backbone: batch size, loader workers, decoder, prefetch, size cap.

One small value object travels from the settings (``data.*``) through every extraction call
instead of five loose keyword arguments.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from PIL import Image

from ..data.imageio import DEFAULT_MAX_PIXELS, max_pixels_of

log = logging.getLogger(__name__)

# ``by_size``: nvJPEG or PIL, chosen per extraction from the files (see choose_decoder).
BY_SIZE = "by_size"
DECODERS = ("pil", "nvjpeg", BY_SIZE)

# The decode rule's figures: the H200 run of 2026-11-27 (docs/benchmarks.md, commit 2bedbae,
# 16 CPU cores). PIL in 16 loader workers: 1,493 img/s at 256 px, 450 at 1024 px, i.e. one
# worker spends ~9.1 ms + ~25.3 ns per pixel on an image (decode, resize, crop). nvJPEG on the
# GPU: 1,132 img/s at 256 px, 880 at 1024 px, i.e. ~0.87 ms + ~0.26 ns per pixel. Both lines
# pass through their two measured points; the crossover at 16 workers is ~480 × 480 px.
PIL_WORKER_S = (9.06e-3, 25.27e-9)  # (seconds per image, seconds per pixel), one worker
NVJPEG_S = (0.8665e-3, 0.2574e-9)  # (seconds per image, seconds per pixel), the whole GPU
SIZE_SAMPLE = 32  # files whose headers the rule reads


class LoaderSettings(Protocol):
    """The ``data.*`` fields a :class:`Loader` is built from (settings.config.DataConfig)."""

    batch_size: int
    num_workers: int
    decode: str
    prefetch_factor: int
    max_megapixels: float | None


@dataclass(frozen=True)
class Loader:
    """Extraction loader options.

    Attributes:
        batch_size: images per backbone batch.
        num_workers: loader processes decoding in parallel (0 = in the main process).
        decode: ``pil`` (workers decode and crop), ``nvjpeg`` (JPEGs decoded on the device) or
            ``by_size`` (one of the two per extraction, by :func:`choose_decoder`).
        prefetch_factor: batches each worker prepares ahead (only with workers).
        max_pixels: larger images (by their header) are skipped undecoded; None = no cap.
    """

    batch_size: int = 64
    num_workers: int = 0
    decode: str = "pil"
    prefetch_factor: int = 4
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.decode not in DECODERS:
            raise ValueError(f"decode={self.decode!r}: use {' or '.join(DECODERS)}")

    @classmethod
    def from_data(cls, data: LoaderSettings) -> Loader:
        """The loader a run's ``data.*`` settings describe (``auto`` already resolved)."""
        return cls(
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            decode=data.decode,
            prefetch_factor=data.prefetch_factor,
            max_pixels=max_pixels_of(data.max_megapixels),
        )

    def for_files(self, paths: Sequence[str], device) -> Loader:
        """This loader with ``by_size`` resolved for ``paths`` on ``device`` (logged); any
        other decoder as is."""
        if self.decode != BY_SIZE:
            return self
        cuda = str(device).startswith("cuda")
        pixels, jpeg_share = sample_sizes(paths) if cuda else (None, 0.0)
        decode = choose_decoder(pixels, jpeg_share, self.num_workers, cuda)
        log.info(
            "data.decode=by_size: %s (median %s px over the first %d files, %.0f%% JPEG, "
            "%d workers, %s)",
            decode,
            f"{pixels:,}" if pixels is not None else "?",
            min(len(paths), SIZE_SAMPLE),
            100 * jpeg_share,
            self.num_workers,
            device,
        )
        return replace(self, decode=decode)


def pil_rate(pixels: int, workers: int) -> float:
    """Images/s of PIL decoding in ``workers`` loader processes (0: the main process alone)."""
    per_image, per_pixel = PIL_WORKER_S
    return max(1, workers) / (per_image + per_pixel * pixels)


def nvjpeg_rate(pixels: int) -> float:
    """Images/s of nvJPEG decoding on the GPU."""
    per_image, per_pixel = NVJPEG_S
    return 1.0 / (per_image + per_pixel * pixels)


def choose_decoder(pixels: int | None, jpeg_share: float, workers: int, cuda: bool) -> str:
    """``nvjpeg`` where it decodes faster than ``workers`` PIL processes by the measured
    figures (PIL_WORKER_S, NVJPEG_S), on CUDA and for mostly-JPEG files; else ``pil``.

    E.g. 16 workers: PIL for 256-px images (1,493 vs 1,132 img/s), nvJPEG for 1024-px ones
    (880 vs 450); with 4 workers nvJPEG at 256 px already (1,132 vs ~370).
    """
    if not cuda or pixels is None or jpeg_share < 0.5:
        return "pil"
    return "nvjpeg" if nvjpeg_rate(pixels) > pil_rate(pixels, workers) else "pil"


def sample_sizes(paths: Sequence[str], n: int = SIZE_SAMPLE) -> tuple[int | None, float]:
    """(median pixel count, share of JPEGs) of the first ``n`` readable headers of ``paths``
    (headers only: no pixel is decoded); (None, 0.0) when none is readable."""
    pixels, jpegs = [], 0
    for path in list(paths)[:n]:
        try:
            with Image.open(path) as im:
                pixels.append(im.width * im.height)
                jpegs += im.format == "JPEG"
        except Exception:  # unreadable files are reported by the extraction itself
            continue
    if not pixels:
        return None, 0.0
    return int(statistics.median(pixels)), jpegs / len(pixels)


DEFAULT_LOADER = Loader()
