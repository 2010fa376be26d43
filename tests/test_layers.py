"""The package's floors as a user meets them: a bad setting is refused before any model code is
imported, and ``import clipflow`` stays light. (The import contracts themselves are checked by
import-linter in ``make test``: pyproject.toml [tool.importlinter].)"""

from __future__ import annotations

import subprocess
import sys

import pytest

MODEL_CODE = ("torch", "torchvision", "open_clip", "timm", "FrEIA")


def _fresh(code: str) -> str:
    """stdout of ``code`` in a new interpreter: this test process imported torch long ago."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize(
    ("command", "args", "named"),
    [
        ("train", ["proxy.ratio=2"], "proxy.ratio=2: must be in (0, 1]"),
        ("train", ["flow.block=nope"], "flow.block"),
        ("evaluate", ["ckpt=x", "data.benchmark=nope"], "data.benchmark"),
        ("detect", ["ckpt=x", "inputs=[x.png]", "fpr=3"], "fpr"),
        ("serve", ["ckpt=x", "port=-1"], "port=-1"),
    ],
)
def test_a_bad_setting_is_refused_before_model_code_is_imported(command, args, named):
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    code = (
        "import sys\n"
        f"from clipflow.cli import {command} as cli\n"
        f"sys.argv = {['clipflow-' + command, *args, *quiet]!r}\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code)\n"
        f"print('loaded', [m for m in {MODEL_CODE!r} if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert "exit 2" in done.stdout, (done.stdout, done.stderr[-2000:])
    assert "loaded []" in done.stdout, done.stdout
    assert named in done.stderr, done.stderr[-2000:]


def test_the_settings_builders_import_no_model_code():
    code = (
        "import sys\n"
        "from clipflow.settings.config import train_settings\n"
        "from clipflow.settings.coerce import SettingsError\n"
        "try:\n"
        "    train_settings({'proxy': {'ratio': 2}})\n"
        "except SettingsError as err:\n"
        "    print('refused', err)\n"
        f"print('loaded', [m for m in {MODEL_CODE!r} if m in sys.modules])\n"
    )
    out = _fresh(code)
    assert "refused proxy.ratio=2: must be in (0, 1]" in out and "loaded []" in out, out


def test_import_clipflow_is_light_and_detector_is_where_the_docs_say():
    out = _fresh(
        "import sys, clipflow\n"
        f"print('loaded', [m for m in {MODEL_CODE!r} if m in sys.modules])\n"
        "print(clipflow.__version__)\n"
        "from clipflow import Detector\n"
        "from clipflow.backbones.protocol import BackboneProtocol\n"
        "from clipflow.runs.train import run_train\n"
        "from clipflow.runs.evaluate import run_eval\n"
        "names = (BackboneProtocol.__name__, run_train.__name__, run_eval.__name__)\n"
        "print(Detector.__module__, *names)\n"
    )
    assert "loaded []" in out
    assert "clipflow.detect BackboneProtocol run_train run_eval" in out
