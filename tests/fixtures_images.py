"""Image-writing helpers shared by the tests: single files of every awkward kind, and the
data-folder trees of :mod:`clipflow.data.synthetic` with tiny images and the tests' default counts.

Import as ``from fixtures_images import write_image, make_cnnspot_tree, ...`` (pytest puts
``tests/`` on ``sys.path`` through ``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from clipflow.data.synthetic import make_cnnspot_folder, make_train_folder, make_univfd_folder

EXIF_ORIENTATION = 0x0112
TEST_SIZE = 8  # pixels a side of the tree images: the tiny backbone resizes anyway


def _random_image(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    """Random content of ``size`` (W, H) in ``mode``, deterministic by ``seed``."""
    width, height = size
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if mode == "F":
        return Image.fromarray(rng.random((height, width), dtype=np.float32))
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "RGB":
        return rgb
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        rgba = rgb.convert("RGBA")
        rgba.putalpha(alpha)
        return rgba
    if mode == "P":
        return rgb.quantize(16)
    return rgb.convert(mode)  # L, LA, 1, CMYK, I, ...


def write_image(
    path: str | Path,
    size: tuple[int, int] = (32, 32),
    mode: str = "RGB",
    fmt: str | None = None,
    seed: int = 0,
    **save_kw,
) -> Path:
    """Write a random image (deterministic by ``seed``); the format follows the suffix
    unless ``fmt`` is given. Parent folders are created. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _random_image(size, mode, seed).save(path, format=fmt, **save_kw)
    return path


def make_cnnspot_tree(
    root: str | Path,
    sets: Mapping[str, tuple[int, int]] | None = None,
    class_level: Mapping[str, Sequence[str]] | None = None,
    n: int = 2,
) -> Path:
    """:func:`clipflow.data.synthetic.make_cnnspot_folder` with tiny images. Defaults: biggan
    (3 real, 3 fake); progan with airplane, cat (``n`` + ``n`` each)."""
    sets = {"biggan": (3, 3)} if sets is None else sets
    class_level = {"progan": ["airplane", "cat"]} if class_level is None else class_level
    return make_cnnspot_folder(Path(root), sets, class_level, n, seed=1000, size=TEST_SIZE)


def make_univfd_tree(
    root: str | Path,
    pools: Mapping[str, int] | None = None,
    gens: Mapping[str, int] | None = None,
) -> Path:
    """:func:`clipflow.data.synthetic.make_univfd_folder` with tiny images. Defaults: imagenet 3,
    laion 3; guided 2, ldm_200 2."""
    pools = {"imagenet": 3, "laion": 3} if pools is None else pools
    gens = {"guided": 2, "ldm_200": 2} if gens is None else gens
    return make_univfd_folder(Path(root), pools, gens, seed=2000, size=TEST_SIZE)


def make_train_tree(
    root: str | Path,
    classes: Sequence[str] = ("airplane", "cat"),
    n_real: int = 5,
    n_fake: int = 3,
) -> Path:
    """:func:`clipflow.data.synthetic.make_train_folder` with tiny images: ``<root>/<class>/0_real``
    (n_real) and ``1_fake`` (n_fake)."""
    return make_train_folder(Path(root), n_real, 3000, TEST_SIZE, n_fake=n_fake, classes=classes)


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR (valid CRC) declares ``width`` x ``height`` RGB, with no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _solid_frames(colors: Sequence[tuple[int, int, int]], size=(16, 16)) -> list[Image.Image]:
    return [Image.new("RGB", size, c) for c in colors]


def make_hostile_files(folder: str | Path) -> dict[str, Path]:
    """Write the awkward files real datasets contain; returns name -> path.

    Unreadable: ``zero_byte``, ``truncated_jpeg``, ``text_as_jpg``, ``bomb_png`` (IHDR
    declares 100000x100000). Readable: ``png_as_jpg``, ``cmyk_jpeg`` (solid red),
    ``png16`` (2x2 16-bit gray: 65535, 0 / 32896, 25700), ``palette_transparent``,
    ``grayscale``, ``la``, ``rgba``, ``bilevel`` (1-bit), ``float_tiff`` (2x2: 0, 1 /
    0.5, 0.25), ``animated_gif`` and ``animated_webp`` (red frame then blue frame),
    ``exif_rotated`` (40x20 JPEG, orientation 6), ``one_pixel``, ``upper_ext`` (X.PNG),
    ``double_dot`` (a.b.jpg). All are a few KB at most.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    files["zero_byte"] = folder / "zero.jpg"
    files["zero_byte"].write_bytes(b"")
    buf = io.BytesIO()
    _random_image((64, 64), "RGB", 1).save(buf, format="JPEG", quality=95)
    files["truncated_jpeg"] = folder / "truncated.jpg"
    files["truncated_jpeg"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    files["text_as_jpg"] = folder / "notes.jpg"
    files["text_as_jpg"].write_text("this is not an image\n")
    files["bomb_png"] = folder / "bomb.png"
    files["bomb_png"].write_bytes(png_with_declared_size(100_000, 100_000))

    files["png_as_jpg"] = write_image(folder / "really_png.jpg", (12, 10), fmt="PNG", seed=2)
    files["cmyk_jpeg"] = folder / "cmyk.jpg"
    Image.new("CMYK", (16, 8), (0, 255, 255, 0)).save(files["cmyk_jpeg"], quality=95)
    png16 = np.array([[65535, 0], [32896, 25700]], dtype=np.uint16)
    files["png16"] = folder / "gray16.png"
    Image.fromarray(png16).save(files["png16"])
    files["palette_transparent"] = folder / "palette.png"
    pal = Image.new("P", (8, 6), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.save(files["palette_transparent"], transparency=0)
    files["grayscale"] = write_image(folder / "gray.png", (10, 12), mode="L", seed=3)
    files["la"] = write_image(folder / "gray_alpha.png", (10, 12), mode="LA", seed=4)
    files["rgba"] = write_image(folder / "rgba.png", (14, 9), mode="RGBA", seed=5)
    files["bilevel"] = write_image(folder / "bilevel.png", (9, 7), mode="1", seed=6)
    files["float_tiff"] = folder / "float.tif"
    floats = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    Image.fromarray(floats).save(files["float_tiff"])

    red_blue = _solid_frames([(255, 0, 0), (0, 0, 255)])
    files["animated_gif"] = folder / "anim.gif"
    red_blue[0].save(files["animated_gif"], save_all=True, append_images=red_blue[1:],
                     duration=50, loop=0)  # fmt: skip
    files["animated_webp"] = folder / "anim.webp"
    red_blue[0].save(files["animated_webp"], save_all=True, append_images=red_blue[1:],
                     duration=50, loop=0, lossless=True)  # fmt: skip

    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 CW to display": stored 40x20, shown 20x40
    files["exif_rotated"] = write_image(folder / "rotated.jpg", (40, 20), seed=7, exif=exif)
    files["one_pixel"] = write_image(folder / "one.png", (1, 1), seed=8)
    files["upper_ext"] = write_image(folder / "X.PNG", (8, 8), seed=9)
    files["double_dot"] = write_image(folder / "a.b.jpg", (8, 8), seed=10)
    return files


def make_full_benchmark(root: str | Path, n: int = 2) -> Path:
    """All 21 sets of the real archives, ``n`` images per folder: the paper's 19 (CNNSpot
    layout for the GANs, UnivFD shared pools for the diffusion sets) + stylegan2 and
    whichfaceisreal, which the CNNSpot archive also holds but the paper does not average."""
    from clipflow.data.layouts import KNOWN_SETS, SHARED_REAL_POOLS

    pooled = {g for gens in SHARED_REAL_POOLS.values() for g in gens}
    make_cnnspot_tree(root, sets={s: (n, n) for s in KNOWN_SETS if s not in pooled}, class_level={})
    return make_univfd_tree(
        root, pools=dict.fromkeys(SHARED_REAL_POOLS, n), gens=dict.fromkeys(pooled, n)
    )
