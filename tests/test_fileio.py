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


def test_folder_write_problem_tries_instead_of_reading_permissions(tmp_path):
    """A file in the way, and (where /proc exists) a folder root's permissions call writable
    but the kernel refuses: both found by trying; a usable folder is made and left empty."""
    from clipflow.core.fileio import folder_write_problem, unwritable_reason

    (tmp_path / "a_file").write_text("x")
    assert folder_write_problem(tmp_path / "a_file" / "sub") is not None
    assert folder_write_problem(tmp_path / "new" / "deep") is None
    assert list((tmp_path / "new" / "deep").iterdir()) == []  # the probe file is gone
    if os.path.isdir("/proc/self") and os.geteuid() == 0:
        # root may write everywhere by permissions, /proc still refuses a new folder
        assert unwritable_reason(Path("/proc/clipflow-probe/x")) is None
        assert folder_write_problem(Path("/proc/clipflow-probe")) is not None
