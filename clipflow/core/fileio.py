"""Small file helpers shared by checkpoints and reports: atomic writes and hashing."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import DiskFullError

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


def atomic_write(path: Path, write: Callable[[Path], T], size: int | None = None) -> T:
    """``write(tmp)`` into a temporary file in ``path``'s folder, then os.replace it to ``path``;
    returns what ``write`` returns.

    A crash mid-write leaves the previous file (or none), never a truncated one. The file gets
    the mode a plain ``open(path, "w")`` would give (0o666 minus the umask), not mkstemp's 0o600,
    whatever ``write`` did: the mode is set after it, since a writer may replace ``tmp`` with a
    file of its own (safetensors' ``save_file`` writes a 0o600 temporary file and renames it).
    A write that runs out of room raises :class:`DiskFullError` naming ``path`` and what to
    free (``size``: the bytes it needed, when known).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        result = write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if no_room_errno(err) is not None and not isinstance(err, DiskFullError):
            raise no_room_error(err, path, size) from err
        raise
    return result


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`), synced to disk."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write, len(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, encode_text(text))


def atomic_write_set(files: dict[Path, bytes]) -> None:
    """Write several files as one set: all of them, or none when one of them cannot be written
    (the files of an earlier set stay as they were).

    Each file is first written in full under a hidden name beside it; only when all are on disk
    are they renamed into place, in the order given (put last the file a reader looks at first).
    A rename needs no room, so a full disk stops the set before any file of it is replaced; an
    error during the renames themselves (a folder put in the way meanwhile) can still leave
    part of the set.
    """
    token = secrets.token_hex(4)  # two runs writing into one folder do not share hidden names
    staged: list[tuple[Path, Path]] = []
    path = None
    try:
        for path, data in files.items():
            stage = Path(path).with_name(f".{Path(path).name}.{token}.staged")
            atomic_write_bytes(stage, data)
            staged.append((stage, Path(path)))
        for stage, path in staged:
            os.replace(stage, path)
    except BaseException as err:
        for stage, _ in staged:
            stage.unlink(missing_ok=True)
        if no_room_errno(err) is not None:
            names = ", ".join(Path(p).name for p in files)
            kept = f"none of {names} was written (earlier ones are as they were)"
            needed = sum(len(d) for d in files.values())
            raise no_room_error(err, path, needed, kept) from err
        raise


# -------------------------------------------------------------------------- out of room
#
# A write runs out of room three ways: the disk is full, the quota is, or the file would pass
# the process's file-size limit (ulimit -f: Python ignores SIGXFSZ, so the write fails with
# EFBIG instead of killing the process). Each is one line naming the file and what to free.

NO_ROOM = frozenset(
    code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code
)
# Rust libraries raise their own exception type, not an OSError: safetensors' save_file gives
# SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, ...})").
# The OS's errno is read from that text.
_RUST_OS_ERROR = re.compile(r"\bOs \{ code: (\d+),")


def no_room_errno(err: BaseException) -> int | None:
    """The errno of ``err`` when it means "no room to write" (ENOSPC, EDQUOT, EFBIG), else None."""
    code = err.errno if isinstance(err, OSError) else None
    if code is None and not isinstance(err, OSError):
        found = _RUST_OS_ERROR.search(str(err))
        code = int(found.group(1)) if found else None
    return code if code in NO_ROOM else None


def no_room_error(
    err: BaseException,
    path: str | os.PathLike | None,
    size: int | None = None,
    kept: str | None = None,
) -> DiskFullError:
    """The one-line error for a write of ``path`` that ran out of room (``err`` as
    :func:`no_room_errno` reads it): the file, the reason, what to free or raise, and
    ``kept``, what was left as it was (default: the file itself)."""
    code = no_room_errno(err) or errno.ENOSPC
    reason = os.strerror(code)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    elif not isinstance(path, (str, os.PathLike)):
        path = None  # an OSError's filename can be a file descriptor, or absent
    name = display_path(path) if path is not None else "an output file"
    kept = kept or (f"{Path(path).name} was left as it was" if path is not None else "")
    if code == errno.EFBIG:
        limit = _file_size_limit()
        todo = (
            f"this process may write files of at most {_size(limit)} (ulimit -f): raise the "
            "limit (ulimit -f unlimited)"
            if limit is not None
            else "the file is larger than its file system takes: write it to another disk"
        )
    else:
        folder = Path(os.path.abspath(path)).parent if path is not None else None
        numbers = [f"{_size(size)} needed"] if size else []
        free = _free_bytes(folder)
        numbers += [f"{_size(free)} free"] if free is not None else []
        where = f"the disk that holds {display_path(folder)}" if folder else "the output's disk"
        todo = (f"{', '.join(numbers)}: " if numbers else "") + (
            f"free space on {where} (or under your quota), or write to another disk"
        )
    message = f"cannot write {name}: {reason}; {todo}" + (f"; {kept}" if kept else "")
    filename = os.fspath(path) if path is not None else None
    return DiskFullError(message, code, filename, reason)


def _file_size_limit() -> int | None:
    """The process's file-size limit in bytes (``ulimit -f``), None when unlimited or unknown."""
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _free_bytes(folder: Path | None) -> int | None:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent), if readable."""
    while folder is not None and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free if folder is not None else None
    except OSError:
        return None


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


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

_DISPLAY_ESCAPE = re.compile(rb"\\(\\|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")
# Characters that are valid text but change how the rest of a line reads: the C1 controls
# (U+0085 is a line break to some readers) and the bidirectional overrides and isolates (a
# name with U+202E shows its extension reversed: "photo\u202egpj.exe"). Written ``\uNNNN``.
_DISPLAY_INVISIBLE = re.compile("[\u0080-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


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
    character (tab, newline: they would break a line-based file), is written ``\\xNN``; a C1
    control or a bidirectional override (it would make the name read differently) is written
    ``\\uNNNN``; a backslash is written ``\\\\``. Names without those characters are written
    unchanged.
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
        elif _DISPLAY_INVISIBLE.match(ch):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def parse_display_path(text: str) -> str:
    """The inverse of :func:`display_path`: the name as ``os.fsdecode`` gives it."""

    def unescape(m: re.Match) -> bytes:
        token = m.group(1)
        if token == b"\\":
            return b"\\"
        if token.startswith(b"u"):
            return chr(int(token[1:], 16)).encode("utf-8")
        return bytes([int(token[1:], 16)])

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


def folder_write_problem(folder: Path) -> str | None:
    """Why nothing can be written into ``folder`` (None if it can), found by trying: the
    folder is made if missing and a temporary file is created in it and removed. Unlike
    :func:`unwritable_reason` it also catches what permissions do not show (root in /proc,
    a read-only mount)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        return err.strerror or str(err)
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
