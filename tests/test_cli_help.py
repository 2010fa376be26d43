"""``--help`` of every command: instant (no torch/open_clip/Hydra import), self-describing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clipflow.cli import (
    calibrate,
    check_data,
    detect,
    evaluate,
    extract,
    reproduce,
    serve,
    train,
)
from clipflow.cli.help import help_text, parse_config

HYDRA_COMMANDS = [
    (train.main, "clipflow-train"),
    (evaluate.main, "clipflow-eval"),
    (detect.main, "clipflow-detect"),
    (extract.main, "clipflow-extract"),
    (calibrate.main, "clipflow-calibrate"),
    (serve.main, "clipflow-serve"),
]


def test_importing_the_cli_modules_loads_nothing_heavy():
    # A fresh interpreter: this test process has imported torch long ago.
    code = (
        "import sys\n"
        "import clipflow.cli.train, clipflow.cli.evaluate, clipflow.cli.detect\n"
        "import clipflow.cli.extract, clipflow.cli.reproduce, clipflow.cli.check_data\n"
        "import clipflow.cli.calibrate, clipflow.cli.serve\n"
        "heavy = ('torch', 'open_clip', 'hydra', 'omegaconf', 'numpy', 'clipflow.runs.train',"
        " 'gradio')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("main,prog", HYDRA_COMMANDS)
def test_help_lists_every_key_with_default_and_meaning(call_main, main, prog):
    code, out, err = call_main(main, prog, "--help")
    assert code == 0 and err == ""
    assert out.startswith(prog)
    keys = [line.split() for line in out.splitlines() if line.startswith("  ") and "." in line]
    assert keys, out
    for parts in keys:  # name, default, meaning (at least one word)
        if not parts[0].startswith("#"):
            assert len(parts) >= 3, f"{prog}: key without default or meaning: {parts}"
    assert "exit codes: 0 ok; 2 usage" in out


def test_train_help_offers_only_its_groups_with_defaults(call_main):
    code, out, _ = call_main(train.main, "clipflow-train", "--help")
    assert code == 0
    assert "backbone  vit_l14 (default) |" in out and "| tiny" in out  # + configs/backbone/*
    assert "proxy     freq_mask (default) |" in out and "smoothing" in out
    assert "experiment" not in out  # clipflow-reproduce's group: it does not work in train
    row = next(line for line in out.splitlines() if line.split()[:1] == ["train.lr"])
    assert row.split()[1] == "1.0e-4" and "(0, 1]" in row
    row = next(line for line in out.splitlines() if line.split()[:1] == ["backbone.precision"])
    assert row.split()[1] == "auto"  # a group's keys come with its default option's values


def test_extract_help_includes_train_keys_and_its_own():
    text = help_text("extract", "clipflow-extract")
    assert "stages" in text and "data.train_root" in text and "train.epochs" in text
    assert "hydra.run" not in text  # Hydra's own keys stay under --hydra-help


def test_parser_reads_nesting_comments_and_sections():
    cfg = parse_config(
        "# header\n"
        "a: 1   # one\n"
        "# about b\n"
        "b:\n"
        "  c: x  # see\n"
        "  d: '#not a comment'\n"
        "hydra:\n"
        "  run: {dir: .}\n"
    )
    assert cfg.header == ["header"]
    got = {k.name: (k.default, k.meaning) for k in cfg.keys}
    assert got == {
        "a": ("1", "one"),
        "b.*": ("", "about b"),
        "b.c": ("x", "see"),
        "b.d": ("'#not a comment'", ""),
    }


@pytest.mark.parametrize("main", [reproduce.main, check_data.main])
def test_plain_commands_print_their_usage(main, capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert "Exit codes" in out or "exit codes" in out.lower()


def test_experiment_on_train_points_to_reproduce(call_main, tmp_path):
    code, _, err = call_main(
        train.main, "clipflow-train", "experiment=table1", f"hydra.run.dir={tmp_path}"
    )
    assert code == 2 and "clipflow-reproduce experiment=NAME" in err
