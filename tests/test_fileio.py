"""atomic_write: the one temp-file-and-replace writer (JSON, reports and checkpoint weights)."""

import os
from pathlib import Path

import pytest

from clipflow.core.fileio import atomic_write


def test_atomic_write_returns_the_writers_value_with_the_umask_mode(tmp_path: Path):
    old = os.umask(0o022)
    try:
        got = atomic_write(tmp_path / "w.bin", lambda tmp: tmp.write_bytes(b"abc"))
    finally:
        os.umask(old)
    assert got == 3 and (tmp_path / "w.bin").read_bytes() == b"abc"
    assert (tmp_path / "w.bin").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"old")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["w.bin"]
