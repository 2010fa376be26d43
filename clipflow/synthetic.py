"""Generated image folders in the real benchmark layouts, for the demo and the mini reproduction.

"Natural" images are random fields with a 1/f amplitude spectrum (like photos); "fake" ones
add the periodic up-sampling traces that GAN/diffusion decoders leave (a checkerboard in the
spectrum). They exercise every code path; with a random backbone they prove nothing about
detection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

DEMO_CLASSES = ("airplane", "cat")


def natural_image(rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """An RGB uint8 (size, size, 3) image with a 1/f spectrum."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size)
    channels = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, (size, size))
        field = np.fft.ifft2(amplitude * np.exp(1j * phase)).real
        channels.append((field - field.mean()) / (field.std() + 1e-8))
    img = 128 + 40 * np.stack(channels, axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def fake_image(rng: np.random.Generator, size: int = 96, strength: float = 12.0) -> np.ndarray:
    """A natural-looking image plus a period-2 checkerboard (transposed-convolution trace)."""
    img = natural_image(rng, size).astype(np.float64)
    yy, xx = np.mgrid[:size, :size]
    img += strength * ((yy + xx) % 2 * 2 - 1)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(folder: Path, n: int, fake: bool, rng: np.random.Generator, ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = fake_image(rng) if fake else natural_image(rng)
        Image.fromarray(arr).save(folder / f"{i:04d}{ext}")


def make_train_folder(root: Path, n_per_class: int = 40, seed: int = 0) -> Path:
    """``<root>/<class>/0_real`` (and a ``1_fake`` that training must ignore)."""
    rng = np.random.default_rng(seed)
    for cls in DEMO_CLASSES:
        _write(root / cls / "0_real", n_per_class, False, rng)
        _write(root / cls / "1_fake", max(1, n_per_class // 10), True, rng)
    return root


def make_test_folder(root: Path, sets: dict[str, str], n: int = 12, seed: int = 1) -> Path:
    """Test sets in the layout each name has in the real benchmark.

    ``sets`` maps a set name to its layout: ``plain`` (``<name>/0_real,1_fake``), ``classes``
    (CNNSpot class level), or ``imagenet``/``laion`` (UnivFD: only ``1_fake``, reals shared).
    """
    rng = np.random.default_rng(seed)
    for name, layout in sets.items():
        if layout == "plain":
            _write(root / name / "0_real", n, False, rng, ".png")
            _write(root / name / "1_fake", n, True, rng, ".PNG")  # upper-case suffix on purpose
        elif layout == "classes":
            for cls in DEMO_CLASSES:
                _write(root / name / cls / "0_real", n // 2, False, rng)
                _write(root / name / cls / "1_fake", n // 2, True, rng)
        elif layout in ("imagenet", "laion"):
            pool = root / layout / "0_real"
            if not pool.exists():
                _write(pool, n, False, rng, ".jpg")
            _write(root / name / "1_fake", n, True, rng)
        else:
            raise ValueError(f"unknown layout {layout!r} for {name}")
    return root


DEMO_TEST_SETS = {"progan": "classes", "biggan": "plain", "guided": "imagenet", "ldm_200": "laion"}
