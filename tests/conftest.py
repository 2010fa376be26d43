"""Shared fixtures: a generated miniature of the benchmark, trained once per session."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from fixtures_images import make_cnnspot_tree, make_train_tree, make_univfd_tree

BIN = Path(sys.executable).parent
# Tests must never reach a hub, and stay within the 2 CI cores.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Feature caches of the tests go to a throw-away folder, never to the user's ~/.cache.
os.environ["CLIPFLOW_CACHE"] = tempfile.mkdtemp(prefix="clipflow-test-cache-")
# One thread: the flows and the tiny tower are small, and on a busy 2-core machine a second
# OpenMP thread that gets descheduled makes every op wait at the barrier (25× slower seen).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_root_logger():
    """A CLI main called in-process configures the root logger as a process would
    (``basicConfig``, a console handler on this test's captured stderr); undo it after each
    test, as the process exit would, so no later test logs into a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def run_cli(
    name: str, *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a console script of this environment; never raises on a non-zero exit."""
    return subprocess.run(
        [str(BIN / name), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture
def call_main(monkeypatch, capsys):
    """A console script's Hydra ``main`` in-process: ``call(main, prog, *args) -> (code, out, err)``
    (the exit code, stdout and stderr).

    Starting a Python process costs tens of seconds on a busy CI machine; the only thing it
    adds over this is the console-script shim, which one real run per script covers
    (``trained_run`` for clipflow-train, ``eval_dir`` in test_end_to_end for clipflow-eval).
    """

    def call(main, prog: str, *args: str) -> tuple[int, str, str]:
        # Hydra's job logging would otherwise reconfigure the root logger for the whole session.
        quiet = ("hydra/job_logging=none", "hydra/hydra_logging=none")
        monkeypatch.setattr(sys, "argv", [prog, *args, *quiet])
        with pytest.raises(SystemExit) as info:
            main()
            sys.exit(0)
        out = capsys.readouterr()
        return info.value.code, out.out, out.err

    return call


@pytest.fixture(scope="session")
def mini_bench(tmp_path_factory) -> Path:
    """train/ (2 classes, reals + fakes that must never be used) and test/ in all layouts."""
    root = tmp_path_factory.mktemp("bench")
    make_train_tree(root / "train", classes=("airplane", "cat"), n_real=10, n_fake=3)
    make_cnnspot_tree(
        root / "test",
        sets={"biggan": (4, 4), "mygen": (3, 3)},
        class_level={"progan": ["airplane", "cat"]},
    )
    make_univfd_tree(
        root / "test", pools={"imagenet": 3, "laion": 4}, gens={"guided": 3, "ldm_200": 2}
    )
    (root / "test" / "biggan" / "1_fake" / "broken.jpg").write_bytes(
        b""
    )  # must be skipped, not fatal
    return root


@pytest.fixture(scope="session")
def trained_run(mini_bench: Path) -> Path:
    """One clipflow-train run through the console script (tiny backbone, CPU).

    The suite's one real process of clipflow-train: it proves the installed entry point runs.
    """
    run_dir = mini_bench / "run"
    proc = run_cli(
        "clipflow-train",
        "mode=N+P",
        f"data.train_root={mini_bench / 'train'}",
        "backbone=tiny",
        "device=cpu",
        "data.num_workers=0",
        "train.epochs=2",
        f"hydra.run.dir={run_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"checkpoint: {run_dir / 'model.safetensors'}" in proc.stdout
    return run_dir
