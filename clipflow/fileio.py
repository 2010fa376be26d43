"""Small file helpers shared by checkpoints and reports: atomic writes and hashing."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder + os.replace.

    A crash mid-write leaves the previous file (or none), never a truncated one. The file gets
    the mode a plain ``open(path, "w")`` would give (0o666 minus the umask), not mkstemp's 0o600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, 0o666 & ~current_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
