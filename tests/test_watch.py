"""Training you can watch: metrics.csv per epoch, loss.png, TensorBoard events, log lines."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import pytest
from tqdm.auto import tqdm

from clipflow.cli import train as train_cli
from clipflow.cli.common import console_for_this_rank
from clipflow.eval.report import HISTORY_COLUMNS, history_to_csv
from clipflow.flow.fit import epoch_line

HAS_TB = importlib.util.find_spec("tensorboard") is not None


def _train(call_main, root: Path, run_dir: Path, *extra: str):
    return call_main(
        train_cli.main,
        "clipflow-train",
        "mode=N+P",
        f"data.train_root={root / 'train'}",
        "backbone=tiny",
        "device=cpu",
        "data.num_workers=0",
        "data.cache=false",
        "train.epochs=3",
        f"hydra.run.dir={run_dir}",
        *extra,
    )


def test_a_run_writes_metrics_csv_loss_png_and_readable_log_lines(
    call_main, mini_bench: Path, tmp_path: Path, caplog
):
    logger = "tensorboard" if HAS_TB else "none"
    with caplog.at_level(logging.INFO, logger="clipflow"):
        code, out, err = _train(call_main, mini_bench, tmp_path, f"logger={logger}")
    assert code == 0, err
    history = json.loads((tmp_path / "model.json").read_text())["history"]
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(HISTORY_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row, hist in zip(rows, history):  # the file is the checkpoint's history, to the bit
        assert float(row["loss"]) == hist["loss"] and float(row["q_proxy"]) == hist["q_proxy"]
        assert float(row["lr"]) == 1e-4 and float(row["seconds"]) > 0
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3: loss ")
    assert "{" not in lines[0] and " s" in lines[0]  # text, not a Python dict
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    if not HAS_TB:
        assert events == []
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert losses == pytest.approx([h["loss"] for h in history])


def test_tensorboard_missing_is_one_line_before_any_work(
    call_main, mini_bench: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    import clipflow.runs.train as train_run

    def never(*args, **kwargs):
        raise AssertionError("the data was scanned before the logger was checked")

    monkeypatch.setattr(train_run, "discover_train_images", never)
    code, out, err = _train(call_main, mini_bench, tmp_path, "logger=tensorboard")
    assert code == 2
    assert err.strip().count("\n") == 0 and "pip install 'clipflow[tb]'" in err


def test_unknown_logger_is_a_usage_error(call_main, mini_bench: Path, tmp_path: Path):
    code, _, err = _train(call_main, mini_bench, tmp_path, "logger=wandb")
    assert code == 2 and "logger=wandb" in err and "tensorboard" in err


def test_history_csv_leaves_missing_parts_empty_and_keeps_extra_keys():
    text = history_to_csv([{"epoch": 1, "loss": 0.5, "natural": 0.5, "lr": 1e-4, "extra": 2.0}])
    header, row = text.splitlines()
    assert header.split(",") == [*HISTORY_COLUMNS, "extra"]
    cells = dict(zip(header.split(","), row.split(",")))
    assert cells["proxy"] == "" and cells["loss"] == "0.5" and cells["extra"] == "2.0"


def test_epoch_line_is_plain_text():
    line = epoch_line({"epoch": 2, "loss": 0.123456789, "lr": 1e-4, "seconds": 1.5})
    assert line == "loss 0.12346  lr 0.0001  1.50 s"


def test_only_rank_0_shows_bars_and_info_lines(monkeypatch):
    log = logging.getLogger("clipflow")
    level = log.level
    monkeypatch.setenv("RANK", "1")
    with console_for_this_rank():
        assert tqdm(range(3)).disable
        assert not log.isEnabledFor(logging.INFO) and log.isEnabledFor(logging.WARNING)
    assert not tqdm(range(3), disable=False).disable and log.level == level  # restored
    monkeypatch.setenv("RANK", "0")
    with console_for_this_rank():
        assert not tqdm(range(3), disable=False).disable
    assert os.environ["RANK"] == "0"
