"""Reading images found in the wild: listing image files and decoding them to 8-bit RGB.

Benchmark folders hold grayscale, palette, RGBA, CMYK, 16-bit, float and EXIF-rotated
files, plus the odd truncated, empty or mislabelled one. :func:`load_image` turns every
readable file into an RGB image and every unreadable one into
:class:`~clipflow.errors.UnreadableImageError` with a short reason, never a PIL traceback.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from clipflow.errors import DataError, UnreadableImageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# PIL's own hard limit (2 x Image.MAX_IMAGE_PIXELS). PIL raises DecompressionBombError
# above it whatever we pass, so a larger ``max_pixels`` also needs Image.MAX_IMAGE_PIXELS
# raised by the caller; we never change that global ourselves.
DEFAULT_MAX_PIXELS = 178_956_970

_HIGH_DEPTH_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S")


def is_image_file(path: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> bool:
    """True if the LAST suffix of ``path`` is one of ``extensions`` (case-insensitive)."""
    return Path(path).suffix.lower() in {e.lower() for e in extensions}


def list_images(
    folder: str | os.PathLike,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    include_special: bool = False,
) -> list[Path]:
    """All image files under ``folder``, recursively, in a deterministic order.

    Matches the last suffix case-insensitively (``X.PNG``, ``a.b.jpg``), skips hidden
    files and folders (``.git``, macOS ``._*`` forks), follows directory symlinks but
    visits each real folder once (no loops, no duplicates), and logs a warning instead of
    raising when a sub-folder cannot be read. Files are listed, never opened.
    ``include_special`` also lists what has an image name but is no regular file (a
    dangling or looping symlink, a FIFO), so that a caller can report it as unreadable
    instead of losing it silently; :func:`load_image` rejects those without opening them.

    Raises:
        DataError: ``folder`` is not an existing directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    exts = {e.lower() for e in extensions}
    found: list[Path] = []
    seen: set[str] = set()
    stack = [folder]
    while stack:
        directory = stack.pop()
        # The real path identifies a folder however it was reached: a symlink back to an
        # ancestor is seen again here and dropped, so the walk always ends.
        real = os.path.realpath(directory)
        if real in seen:
            log.debug("already visited %s (symlink to %s); skipping", directory, real)
            continue
        seen.add(real)
        for entry in _scan_dir(directory):
            if entry.name.startswith("."):
                continue
            named_image = Path(entry.name).suffix.lower() in exts
            try:
                if entry.is_dir():  # follows symlinks
                    stack.append(Path(entry.path))
                elif named_image and (include_special or entry.is_file()):
                    found.append(Path(entry.path))
            except OSError as exc:  # e.g. a symlink loop on the entry itself
                if include_special and named_image:
                    found.append(Path(entry.path))
                else:
                    log.warning("skipping %s: %s", entry.path, exc)
    # Sorting on path parts (not on str) gives the same order on every Python version.
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def list_subdirs(folder: str | os.PathLike) -> list[Path]:
    """Visible sub-folders of ``folder`` (symlinks followed), sorted by name.

    Returns [] with a warning if ``folder`` cannot be read, like :func:`list_images`.
    """
    subdirs = []
    for entry in _scan_dir(Path(folder)):
        try:
            if not entry.name.startswith(".") and entry.is_dir():
                subdirs.append(Path(entry.path))
        except OSError:  # a dangling or looping symlink is no folder
            continue
    return sorted(subdirs, key=lambda p: p.name)


def _scan_dir(directory: Path) -> list[os.DirEntry]:
    """Entries of one folder, or [] with a warning if it cannot be read."""
    try:
        with os.scandir(directory) as it:
            return list(it)
    except OSError as exc:
        log.warning("skipping unreadable folder %s: %s", directory, exc.strerror or exc)
        return []


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one image file to an 8-bit RGB PIL image.

    Applies the EXIF orientation; converts grayscale, palette, alpha, CMYK, 16-bit, 1-bit
    and float images to RGB (see :func:`to_rgb`); takes the first frame of animations.
    The size declared in the header is checked against ``max_pixels`` before any pixel
    is decoded, so a decompression bomb is rejected at once (``None`` = no cap of ours).

    Raises:
        UnreadableImageError: with a short reason (zero-byte file, not an image,
            truncated or corrupt, too large, unsupported mode, cannot read file).
    """
    path = Path(path)
    _check_file(path)
    try:
        # No warnings.catch_warnings() around this: it swaps global state and is not
        # thread-safe; PIL's DecompressionBombWarning (89M-179M px) is rare and harmless.
        with Image.open(path) as im:
            _check_size(path, im.size, max_pixels)
            im.load()  # frame 0 of an animation: Image.open leaves us there
            oriented = _apply_exif_orientation(im, path)
            return to_rgb(oriented, path)
    except UnreadableImageError:
        raise
    except UnidentifiedImageError:
        raise UnreadableImageError(path, "not an image (cannot identify format)") from None
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{m.group(1)} pixels" if m else "image"
        reason = f"too large: {size} exceeds PIL's limit of {2 * Image.MAX_IMAGE_PIXELS}"
        raise UnreadableImageError(path, reason) from None
    except MemoryError:
        raise UnreadableImageError(path, "too large: out of memory while decoding") from None
    except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
        raise UnreadableImageError(path, f"cannot read file: {exc.strerror or exc}") from None
    except Exception as exc:  # PIL signals corrupt data with OSError, SyntaxError, ValueError...
        raise UnreadableImageError(path, f"truncated or corrupt: {_short(exc)}") from exc


def _check_file(path: Path) -> None:
    """Reject what is not a non-empty regular file, before PIL sees it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        reason = (
            "broken symbolic link (its target is missing)"
            if path.is_symlink()
            else "file not found"
        )
        raise UnreadableImageError(path, reason) from None
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableImageError(path, "not a regular file")
    if st.st_size == 0:
        raise UnreadableImageError(path, "zero-byte file")


def _check_size(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        reason = f"too large: {width}×{height} pixels exceeds the limit of {max_pixels}"
        raise UnreadableImageError(path, reason)


def _apply_exif_orientation(im: Image.Image, path: Path) -> Image.Image:
    """Rotate/flip as the EXIF orientation says; a broken EXIF block is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # noqa: BLE001 -- bad EXIF must not make a good image unreadable
        log.warning("ignoring unreadable EXIF data in %s: %s", path, _short(exc))
        return im.copy()  # detached from the file, like exif_transpose's own result


def to_rgb(im: Image.Image, path: str | os.PathLike = "<image>") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Alpha is dropped, not composited: ``convert("RGB")`` is what CNNSpot and UnivFD do,
    so our features of RGBA files match the ones peers computed. Palette images go
    through RGBA first so PIL honours their transparency entry instead of warning.
    16-bit and float images are rescaled (see :func:`_high_depth_to_l`), never clipped.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    try:
        if mode in ("P", "PA"):
            im = im.convert("RGBA")
        if mode in _HIGH_DEPTH_16 or mode in ("I", "F"):
            return _high_depth_to_l(im).convert("RGB")
        return im.convert("RGB")  # also RGBA/LA (alpha dropped), L, 1, CMYK, YCbCr, HSV
    except ValueError as exc:  # e.g. LAB: PIL has no direct conversion
        raise UnreadableImageError(path, f"unsupported color mode {mode}: {_short(exc)}") from None


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """Map a single-channel 16-bit, 32-bit int or float image to 8-bit L.

    PIL's own ``convert("L")`` clips 16-bit values at 255 (a white image becomes a
    saturated mess), so we scale: 16-bit data by 255/65535 (65535 -> 255). Mode ``I``
    (how PNG/TIFF 16-bit data may also arrive) is taken as 16-bit when its values fit
    0..65535, else min-max stretched. Float data in [0, 1] is scaled by 255, data in
    [0, 255] kept, anything else min-max stretched; NaN/inf become 0.
    """
    mode = im.mode
    arr = np.asarray(im if mode in ("I", "F") else im.convert("I"), dtype=np.float64)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        arr = arr * 255.0
    elif mode == "F" and lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0 and mode != "F":
        arr = arr / 257.0  # 65535 / 257 == 255 exactly
    elif hi > lo:
        arr = (arr - lo) * (255.0 / (hi - lo))
    else:
        arr = np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def _short(exc: BaseException) -> str:
    """First line of an exception message, capped, for a one-line reason."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def pil_to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """An image as a contiguous ``(3, H, W)`` uint8 tensor (non-RGB modes converted first)."""
    rgb = to_rgb(img)
    arr = np.array(rgb, dtype=np.uint8)  # a writable copy: torch warns on read-only buffers
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
