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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipflow.errors import DataError, UnreadableImageError, first_line

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# Larger images are refused from their header, before any pixel is decoded (setting
# ``data.max_megapixels``): decoding 100 MP to RGB plus the tensor copies takes ~1 GB per
# loader worker, and more than any camera photo needs (a 13000x13000 PNG of 500 KB costs
# 2.5 GB). PIL's own hard limit is 2 x Image.MAX_IMAGE_PIXELS (~179 MP): it raises
# DecompressionBombError above that whatever we pass, so a cap above 179 MP also needs
# Image.MAX_IMAGE_PIXELS raised by the caller; we never change that global ourselves.
DEFAULT_MAX_PIXELS = 100_000_000

_HIGH_DEPTH_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S")


def max_pixels_of(megapixels: float | None) -> int | None:
    """The pixel cap of ``data.max_megapixels`` (None = no cap of ours)."""
    if megapixels is None:
        return None
    try:
        value = float(megapixels)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise DataError(f"data.max_megapixels={megapixels!r}: use a positive number, or null")
    return int(value * 1_000_000)


def is_image_file(path: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> bool:
    """True if the LAST suffix of ``path`` is one of ``extensions`` (case-insensitive)."""
    return Path(path).suffix.lower() in {e.lower() for e in extensions}


@dataclass
class Listing:
    """A folder walk: the image files to read, and what was left out, with the reason."""

    images: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def list_images(
    folder: str | os.PathLike,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    include_special: bool = False,
) -> list[Path]:
    """The image files of :func:`scan_images`; what it leaves out is logged as a warning.

    Raises:
        DataError: ``folder`` is not an existing directory.
    """
    listing = scan_images(folder, extensions, include_special)
    for path, reason in listing.skipped:
        log.warning("skipping %s: %s", path, reason)
    return listing.images


def scan_images(
    folder: str | os.PathLike,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    include_special: bool = False,
    foreign: Iterable[str | os.PathLike] = (),
) -> Listing:
    """All image files under ``folder``, recursively, in a deterministic order.

    Matches the last suffix case-insensitively (``X.PNG``, ``a.b.jpg``); hidden entries
    (``.git``, macOS ``._*`` forks) and files with other suffixes are ignored silently.
    Files are listed, never opened. Symbolic links (the rule, README "Data layout"):

    * a file link is followed; one whose target lies in a ``foreign`` folder (the other
      label's) is left out, and several names of one real file are listed once (the real
      name if it is among them, else the first in order);
    * a folder link is followed after every real sub-folder has been walked, unless its
      target contains ``folder`` (a loop, e.g. ``0_real/up -> ..``), was already walked,
      or lies in or contains a ``foreign`` folder.

    Every entry left out is in ``skipped`` with its reason, as are folders that cannot be
    read and what has an image name but is no regular file (a dangling or looping link, a
    FIFO) -- unless ``include_special``, which lists those instead so that the caller
    reports them (:func:`load_image` rejects them without opening them).

    Raises:
        DataError: ``folder`` is not an existing directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    walk = _Walk(root, {e.lower() for e in extensions}, include_special, foreign)
    walk.run()
    return Listing(walk.unique_images(), walk.skipped)


class _Walk:
    """State of one :func:`scan_images` walk; folders are identified by their real path."""

    def __init__(self, root: Path, exts: set[str], include_special: bool, foreign) -> None:
        self.root, self.exts, self.include_special = root, exts, include_special
        self.root_real = os.path.realpath(root)
        self.foreign = [os.path.realpath(f) for f in foreign]
        self.seen: set[str] = set()
        self.files: list[tuple[Path, str, bool]] = []  # (path, real path, is a link)
        self.skipped: list[tuple[Path, str]] = []

    def run(self) -> None:
        folders: list[tuple[Path, str]] = []
        links: list[tuple[Path, str]] = [(self.root, self.root_real)]
        while folders or links:
            if folders:
                directory, real = folders.pop()
            else:  # real folders first, so a link never hides the real path of a folder
                directory, real = links.pop(0)
                reason = self._refuse_folder(real, linked=directory != self.root)
                if reason:
                    self.skipped.append((directory, reason))
                    continue
                self.seen.add(real)
            self._visit(directory, real, folders, links)

    def _visit(self, directory: Path, real: str, folders: list, links: list) -> None:
        entries, error = _read_dir(directory)
        if error:
            self.skipped.append((directory, f"cannot read folder: {error}"))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_link, is_dir = entry.is_symlink(), entry.is_dir()  # is_dir follows links
            except OSError:  # e.g. a symlink loop on the entry itself
                is_link, is_dir = True, False
            if is_dir and is_link:
                links.append((Path(entry.path), os.path.realpath(entry.path)))
            elif is_dir:
                sub = os.path.join(real, entry.name)
                reason = self._refuse_folder(sub, linked=False)
                if reason:
                    self.skipped.append((Path(entry.path), reason))
                else:
                    self.seen.add(sub)
                    folders.append((Path(entry.path), sub))
            elif os.path.splitext(entry.name)[1].lower() in self.exts:  # no Path per entry
                self._add_file(entry, Path(entry.path), real, is_link)
        links.sort(key=lambda item: item[0].parts)

    def _add_file(self, entry: os.DirEntry, path: Path, real_dir: str, is_link: bool) -> None:
        try:
            regular = entry.is_file()
        except OSError:
            regular = False
        if not regular:
            if self.include_special:
                self.files.append((path, f"special:{path}", False))
            else:
                self.skipped.append((path, _special_reason(path)))
            return
        if not is_link:  # its folder was checked: a plain file cannot lead elsewhere
            self.files.append((path, os.path.join(real_dir, entry.name), False))
            return
        real = os.path.realpath(path)
        into = next((f for f in self.foreign if _within(real, f)), None)
        if into is not None:
            reason = f"symbolic link to {real}, in {into}: the other label's folder"
            self.skipped.append((path, reason))
            return
        self.files.append((path, real, is_link))

    def _refuse_folder(self, real: str, linked: bool) -> str | None:
        """Why the folder at ``real`` must not be walked, or None."""
        what = f"symbolic link to {real}" if linked else f"folder {real}"
        if linked and _within(self.root_real, real):
            return f"{what}, which contains {self.root}: a loop; not followed"
        if real in self.seen:
            return f"{what} was already listed under another name; not listed twice"
        for f in self.foreign:
            if _within(real, f) or _within(f, real):
                return f"{what} is in or holds {f}: the other label's folder; not followed"
        return None

    def unique_images(self) -> list[Path]:
        """The files in path order; a real file reached under several names is kept once."""
        # Sorting on path parts (not on str) gives the same order on every Python version.
        self.files.sort(key=lambda f: f[0].relative_to(self.root).parts)
        keep: dict[str, int] = {}  # real path -> index of the name kept
        for i, (_, real, is_link) in enumerate(self.files):
            if real not in keep or (self.files[keep[real]][2] and not is_link):
                keep[real] = i
        kept = set(keep.values())
        for i, (path, real, _) in enumerate(self.files):
            if i not in kept:
                first = self.files[keep[real]][0]
                self.skipped.append((path, f"same file as {first}; counted once"))
        return [f[0] for i, f in enumerate(self.files) if i in kept]


def _within(path: str, folder: str) -> bool:
    """True if real path ``path`` is ``folder`` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _special_reason(path: Path) -> str:
    """Why an image-named entry that is no regular file cannot be read."""
    try:
        _check_file(path)
    except UnreadableImageError as err:
        return err.reason
    return "not a regular file"


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
    entries, error = _read_dir(directory)
    if error:
        log.warning("skipping unreadable folder %s: %s", directory, error)
    return entries


def _read_dir(directory: Path) -> tuple[list[os.DirEntry], str | None]:
    """Entries of one folder sorted by name, or ([], why it cannot be read)."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name), None
    except OSError as exc:
        return [], str(exc.strerror or exc)


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
        # PIL raises this only while MAX_IMAGE_PIXELS is set, but the global is typed Optional
        # and may be changed by another thread: never fail on the message itself.
        limit = Image.MAX_IMAGE_PIXELS
        cap = f" of {2 * limit}" if limit is not None else ""
        reason = f"too large: {size} exceeds PIL's limit{cap}"
        raise UnreadableImageError(path, reason) from None
    except MemoryError:
        raise UnreadableImageError(path, "too large: out of memory while decoding") from None
    except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
        raise UnreadableImageError(path, f"cannot read file: {exc.strerror or exc}") from None
    except Exception as exc:  # PIL signals corrupt data with OSError, SyntaxError, ValueError...
        raise UnreadableImageError(path, f"truncated or corrupt: {_short(exc)}") from exc


def _check_file(path: Path) -> None:
    """Reject what is not a non-empty regular file, before PIL sees it."""
    if "\x00" in str(path):  # no file system accepts it; os.stat would raise ValueError
        raise UnreadableImageError(path, "the file name contains a NUL byte")
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
        reason = (
            f"too large: {width}×{height} pixels exceeds the limit of {max_pixels} "
            "(data.max_megapixels)"
        )
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
    return first_line(exc, limit=160)
