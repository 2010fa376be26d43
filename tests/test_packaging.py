"""The Hydra configs are found from any working directory, editable and wheel installs alike."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from clipflow.cli import evaluate as eval_cli
from clipflow.cli import train as train_cli

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_finds_configs_from_elsewhere(tmp_path: Path, monkeypatch, call_main):
    # The mains in-process, from another working directory: their config_path (a package, not
    # a folder next to the cwd) is what is under test; the console-script shim runs elsewhere.
    monkeypatch.chdir(tmp_path)
    code, out, err = call_main(
        train_cli.main, "clipflow-train", "--cfg", "job", "backbone=tiny", "proxy=gaussian_noise"
    )
    assert code == 0, err
    assert "name: tiny" in out and "name: gaussian_noise" in out
    code, out, err = call_main(eval_cli.main, "clipflow-eval", "--cfg", "job")
    assert code == 0 and "protocol: all" in out, err
    assert not list(tmp_path.iterdir())  # --cfg job prints; it writes no run folder


@pytest.mark.slow
def test_wheel_install_finds_configs(tmp_path: Path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("clipflow-*.whl")
    # A wheel is a zip that installs by unpacking: what is under test is what it holds, so
    # unpack it rather than start pip a second time.
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = (
        "import clipflow, sys; "
        "assert clipflow.__file__.startswith(sys.argv[1]), clipflow.__file__; "
        "from clipflow.cli.train import main; "
        "sys.argv = ['clipflow-train', '--cfg', 'job', 'backbone=tiny']; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: tiny" in proc.stdout and "mode: N+P" in proc.stdout
    assert (site / "clipflow" / "configs" / "proxy" / "freq_mask.yaml").is_file()
    numbers = site / "clipflow" / "paper" / "numbers"  # the paper's numbers ship as data
    assert {p.name for p in numbers.glob("*.csv")} >= {"table1_ap.csv", "table5_ap.csv"}
