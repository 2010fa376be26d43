"""How images reach the backbone: batch size, loader workers, decoder, prefetch, size cap.

One small value object travels from the settings (``data.*``) through every extraction call
instead of five loose keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..data.imageio import DEFAULT_MAX_PIXELS, max_pixels_of

DECODERS = ("pil", "nvjpeg")


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
        decode: ``pil`` (workers decode and crop) or ``nvjpeg`` (JPEGs decoded on the device).
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


DEFAULT_LOADER = Loader()
