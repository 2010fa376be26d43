"""A full disk (ENOSPC, a quota's EDQUOT, EFBIG under ``ulimit -f``) loses nothing and says so;
Ctrl-C during ``clipflow-detect out=...`` leaves no torn file.

The errors are injected where a full disk raises them: the ``write`` of a file that was
already created (a small tmpfs is not available on every test machine).
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest
from safetensors import SafetensorError

import clipflow.core.fileio as fileio
import clipflow.features.extract
from clipflow.cli import detect as detect_cli
from clipflow.cli import evaluate as eval_cli
from clipflow.cli import train as train_cli
from clipflow.cli.common import guarded
from clipflow.errors import DiskFullError

RESULT_SET = ("results.csv", "results.md", "metrics.json", "scores.csv", "skipped.txt")


class _FullFile:
    """A file whose ``write`` fails as on a full disk, after ``keep`` bytes went through."""

    def __init__(self, fh, code: int, keep: int = 0, then=None):
        self._fh, self._code, self._keep, self._then = fh, code, keep, then

    def write(self, data) -> int:
        if self._keep:
            self._fh.write(data[: self._keep])
            self._fh.flush()
        if self._then is not None:
            self._then()
        raise OSError(self._code, os.strerror(self._code))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


def fail_writes(monkeypatch, name: str, code: int = errno.ENOSPC, **kwargs) -> None:
    """Every write by core.fileio into a file whose name contains ``name`` fails with
    ``code`` (``keep``: bytes written first; ``then``: called just before it fails)."""
    real_open = open

    def open_(file, mode="r", *args, **kw):
        fh = real_open(file, mode, *args, **kw)
        if "w" in mode and name in os.fspath(file):
            return _FullFile(fh, code, **kwargs)
        return fh

    monkeypatch.setattr(fileio, "open", open_, raising=False)


def _one_line(code: int, err: str) -> str:
    """The error line a command ended with (warnings may come before it)."""
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, (code, err[-3000:])
    assert err.strip().endswith(errors[0])
    return errors[0]


def _leftovers(folder: Path) -> list[str]:
    """Temporary or staged files a write left behind."""
    return sorted(p.name for p in folder.rglob(".*") if p.suffix in (".tmp", ".staged"))


# --------------------------------------------------------------------------- core.fileio


def test_a_set_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch):
    old = {tmp_path / n: f"old {n}\n".encode() for n in ("a.csv", "b.json", "c.md")}
    fileio.atomic_write_set(old)
    inodes = {p: p.stat().st_ino for p in old}
    fail_writes(monkeypatch, "b.json", keep=3)
    new = {p: b"new " * 1000 for p in old}
    with pytest.raises(DiskFullError) as info:
        fileio.atomic_write_set(new)
    assert {p: p.read_bytes() for p in old} == old  # the earlier set, untouched
    assert {p: p.stat().st_ino for p in old} == inodes and _leftovers(tmp_path) == []
    text = str(info.value)
    assert str(tmp_path / "b.json") in text and "No space left on device" in text
    assert "11.7 KiB needed" in text and "free space on the disk" in text  # 3 × 4000 bytes
    assert "none of a.csv, b.json, c.md was written" in text and "\n" not in text
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC


def test_a_file_size_limit_says_to_raise_ulimit(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(fileio, "_file_size_limit", lambda: 1 << 20)
    fail_writes(monkeypatch, "big.bin", code=errno.EFBIG)
    with pytest.raises(DiskFullError, match=r"at most 1\.0 MiB \(ulimit -f\): raise the limit"):
        fileio.atomic_write_bytes(tmp_path / "big.bin", b"x" * 10)
    assert not (tmp_path / "big.bin").exists() and _leftovers(tmp_path) == []


def test_a_rust_writers_disk_full_is_recognised(tmp_path: Path):
    """safetensors' save_file raises SafetensorError, not OSError, with the errno in its text."""

    def save_file(tmp: Path) -> None:
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
            'message: "No space left on device" })'
        )

    with pytest.raises(DiskFullError, match="model.safetensors: No space left on device"):
        fileio.atomic_write(tmp_path / "model.safetensors", save_file)
    assert os.listdir(tmp_path) == []


def test_any_write_that_finds_no_room_is_one_line(capsys):
    """A write outside core.fileio (stdout sent to a full disk, a library's own file)."""

    def job():
        raise OSError(errno.EDQUOT, "Disk quota exceeded", "/data/run/train.log")

    with pytest.raises(SystemExit) as info:
        guarded(job)
    line = _one_line(info.value.code, capsys.readouterr().err)
    assert "/data/run/train.log: Disk quota exceeded" in line and "free space" in line

    def bug():
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):  # not a full disk: a traceback, as before
        guarded(bug)


# --------------------------------------------------------------------------- commands


def _eval(call_main, trained_run: Path, mini_bench: Path, out: Path):
    return call_main(
        eval_cli.main,
        "clipflow-eval",
        f"ckpt={trained_run}",
        f"data.test_root={mini_bench / 'test'}",
        "device=cpu",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
    )


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_eval_on_a_full_disk_keeps_the_results_a_set(
    trained_run: Path, mini_bench: Path, tmp_path: Path, call_main, monkeypatch, code
):
    """results.md used to be written, then metrics.json failed: a folder with a table and no
    numbers behind it, and a traceback."""
    out = tmp_path / "eval"
    assert _eval(call_main, trained_run, mini_bench, out)[0] == 0
    before = {n: ((out / n).read_bytes(), (out / n).stat().st_ino) for n in RESULT_SET}
    fail_writes(monkeypatch, "metrics.json", code, keep=10)
    line = _one_line(*_eval(call_main, trained_run, mini_bench, out)[::2])
    assert str(out / "metrics.json") in line and os.strerror(code) in line
    assert "none of results.csv, metrics.json" in line
    assert ("ulimit" in line or "file system" in line) if code == errno.EFBIG else "free" in line
    after = {n: ((out / n).read_bytes(), (out / n).stat().st_ino) for n in RESULT_SET}
    assert after == before and _leftovers(out) == []


def test_eval_on_a_full_disk_writes_nothing_into_a_new_folder(
    trained_run: Path, mini_bench: Path, tmp_path: Path, call_main, monkeypatch
):
    out = tmp_path / "eval"
    fail_writes(monkeypatch, "scores.csv")
    line = _one_line(*_eval(call_main, trained_run, mini_bench, out)[::2])
    assert str(out / "scores.csv") in line
    assert not [n for n in (*RESULT_SET, "ap_per_dataset.png") if (out / n).exists()]
    assert _leftovers(out) == []


def _train(call_main, mini_bench: Path, out: Path):
    return call_main(
        train_cli.main,
        "clipflow-train",
        "mode=N+P",
        f"data.train_root={mini_bench / 'train'}",
        "backbone=tiny",
        "device=cpu",
        "data.num_workers=0",
        "train.epochs=1",
        f"hydra.run.dir={out}",
    )


def test_train_on_a_full_disk_is_one_line(mini_bench: Path, tmp_path: Path, call_main, monkeypatch):
    fail_writes(monkeypatch, "metrics.csv")  # the first write of a run: after epoch 1
    line = _one_line(*_train(call_main, mini_bench, tmp_path / "run")[::2])
    assert str(tmp_path / "run" / "metrics.csv") in line and "No space left" in line


def test_train_whose_checkpoint_finds_no_room_is_one_line(
    mini_bench: Path, tmp_path: Path, call_main, monkeypatch
):
    def full(tensors, filename, metadata=None):
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
            'message: "No space left on device" })'
        )

    monkeypatch.setattr("clipflow.checkpoints.save.save_file", full)
    run = tmp_path / "run"
    line = _one_line(*_train(call_main, mini_bench, run)[::2])
    assert str(run / "model.safetensors") in line and "free space on the disk" in line
    assert not (run / "model.safetensors").exists() and _leftovers(run) == []


def _detect(call_main, trained_run: Path, inputs: Path, out: Path):
    return call_main(
        detect_cli.main,
        "clipflow-detect",
        f"ckpt={trained_run}",
        f"inputs=[{inputs}]",
        f"out={out}",
        "device=cpu",
        "num_workers=0",
        "batch_size=4",
        "table=false",
    )


def test_detect_out_on_a_full_disk_keeps_the_old_file(
    trained_run: Path, mini_bench: Path, tmp_path: Path, call_main, monkeypatch
):
    out = tmp_path / "scores.jsonl"
    out.write_text('{"path": "earlier run"}\n')
    fail_writes(monkeypatch, "scores.jsonl", keep=100)
    line = _one_line(*_detect(call_main, trained_run, mini_bench / "test", out)[::2])
    assert str(out) in line and "No space left on device" in line and "needed" in line
    assert out.read_text() == '{"path": "earlier run"}\n' and _leftovers(tmp_path) == []


def _interrupt() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # a real signal, as Ctrl-C sends it


@pytest.mark.parametrize("moment", ["scoring", "writing out"])
def test_ctrl_c_in_detect_exits_130_and_leaves_no_torn_line(
    trained_run: Path, mini_bench: Path, tmp_path: Path, call_main, monkeypatch, moment
):
    """Pins the behaviour as it was: exit 130, "interrupted", out= as it was before the run
    (the signal lands while images are scored, or with half the output file written)."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    out = tmp_path / "scores.jsonl"
    out.write_text('{"path": "earlier run"}\n')
    if moment == "scoring":
        dataset = clipflow.features.extract.ImageFileDataset
        real_item, seen = dataset.__getitem__, []

        def item(self, i):
            seen.append(i)
            if len(seen) == 6:  # in the second batch of 4
                _interrupt()
            return real_item(self, i)

        monkeypatch.setattr(dataset, "__getitem__", item)
    else:
        fail_writes(monkeypatch, "scores.jsonl", keep=50, then=_interrupt)
    code, _, err = _detect(call_main, trained_run, mini_bench / "test", out)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err[-3000:]
    assert out.read_text() == '{"path": "earlier run"}\n' and _leftovers(tmp_path) == []
