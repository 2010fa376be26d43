"""Small file helpers shared by checkpoints and reports: atomic writes and hashing."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _umask_at_import() -> int:
    # os.umask can only be read by setting it; done once here, while importing (normally
    # single-threaded), so no other thread can create a file under the temporary 0 umask.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status ``Umask:``).

    Read at every write so that a umask set after import is honoured; where /proc does not
    report it (non-Linux, kernels < 4.7) the value read at import is used.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


def atomic_write(path: Path, write: Callable[[Path], T]) -> T:
    """``write(tmp)`` into a temporary file in ``path``'s folder, then os.replace it to ``path``;
    returns what ``write`` returns.

    A crash mid-write leaves the previous file (or none), never a truncated one. The file gets
    the mode a plain ``open(path, "w")`` would give (0o666 minus the umask), not mkstemp's 0o600,
    whatever ``write`` did: the mode is set after it, since a writer may replace ``tmp`` with a
    file of its own (safetensors' ``save_file`` writes a 0o600 temporary file and renames it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        result = write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return result


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`), synced to disk."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, encode_text(text))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ path names
#
# POSIX file names are bytes; Python hands names that are not valid UTF-8 to us as str with
# "surrogate escapes" (b"x\xff.jpg" -> "x\udcff.jpg"), which str.encode("utf-8") refuses.
# Every hash, seed and text output goes through the two helpers below, so such a name is
# scored like any other and written in one reversible way.

_DISPLAY_ESCAPE = re.compile(rb"\\(\\|x[0-9a-fA-F]{2})")


def path_key_bytes(path: str | os.PathLike | bytes) -> bytes:
    """The bytes of a file name, for hashing and seeding: ``os.fsencode`` on POSIX.

    A UTF-8 name gives its UTF-8 bytes (what ``str.encode()`` gave before, so seeds and
    cache keys of ordinary names are unchanged); an undecodable byte comes back as itself.
    """
    raw = os.fspath(path)
    if isinstance(raw, bytes):
        return raw
    try:
        return raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (Windows names)
        return raw.encode("utf-8", "surrogatepass")


def display_path(path: str | os.PathLike | bytes) -> str:
    """A file name as text for CSV / JSONL / TXT outputs, reversibly (:func:`parse_display_path`).

    The name's bytes are decoded as UTF-8; a byte that is not valid UTF-8, or is a control
    character (tab, newline: they would break a line-based file), is written ``\\xNN`` and a
    backslash is written ``\\\\``. Names without those characters are written unchanged.
    """
    out = []
    for ch in path_key_bytes(path).decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, surrogate-escaped
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def parse_display_path(text: str) -> str:
    """The inverse of :func:`display_path`: the name as ``os.fsdecode`` gives it."""

    def unescape(m: re.Match) -> bytes:
        token = m.group(1)
        return b"\\" if token == b"\\" else bytes([int(token[1:], 16)])

    raw = _DISPLAY_ESCAPE.sub(unescape, text.encode("utf-8", "surrogatepass"))
    return raw.decode("utf-8", "surrogateescape")


def encode_text(text: str) -> bytes:
    """UTF-8 bytes of an output text; a surrogate-escaped byte that no writer escaped is
    written ``\\xNN`` as :func:`display_path` would, instead of failing the whole write."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        fixed = re.sub(
            "[\udc80-\udcff]",
            lambda m: display_path(m.group().encode("utf-8", "surrogateescape")),
            text,
        )
        return fixed.encode("utf-8", "backslashreplace")


def unwritable_reason(path: Path) -> str | None:
    """Why a file could not be written at ``path`` (None if it can), checked without
    writing anything: a folder in the way, a file where a folder should be, no permission."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return "it is a folder"
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent  # the missing folders would be created
    if not folder.is_dir():
        return f"{display_path(folder)} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {display_path(folder)} is not writable"
    return None


def to_jsonable(value):
    """Dataclass / dict / list -> JSON-safe values: tuples become lists, anything else str.

    One conversion for everything recorded as settings (checkpoint meta, results.json).
    """
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # Path, enums, ...: as json.dumps(default=str) would
