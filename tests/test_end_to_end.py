"""clipflow-train -> clipflow-eval on generated folders.

One real process per console script (``trained_run`` in conftest, ``eval_dir`` here); every
other run calls the same Hydra ``main`` in-process (``call_main``).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from sklearn.metrics import average_precision_score, roc_auc_score

from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.cli import evaluate as eval_cli
from clipflow.cli import train as train_cli


@pytest.fixture(scope="module")
def eval_dir(trained_run: Path, mini_bench: Path) -> Path:
    out = mini_bench / "eval"
    proc = run_cli(
        "clipflow-eval",
        f"ckpt={trained_run}",
        f"data.test_root={mini_bench / 'test'}",
        "device=cpu",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| biggan | BigGAN |" in proc.stdout
    return out


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _set_rows(path: Path) -> list[dict]:
    """The per-set rows of results.csv (without the mean rows)."""
    return [r for r in _read_csv(path) if r["dataset"] not in ("mean", "mean_all")]


def test_checkpoint_is_self_describing(trained_run: Path):
    ckpt = load_checkpoint(trained_run)
    assert ckpt.meta["backbone"]["name"] == "clipflow-tiny" and ckpt.meta["backbone"]["random_init"]
    assert ckpt.meta["train"]["mode"] == "N+P" and ckpt.meta["train"]["n_images"] > 0
    assert ckpt.meta["proxy"] == {
        "name": "freq_mask",
        "band": "low",
        "ratio": 0.1,
        "mask_mode": "compat",
    }
    assert (
        np.isfinite(ckpt.threshold)
        and len(ckpt.val_real_scores) == ckpt.meta["validation"]["n_images"]
    )
    assert (trained_run / "train.log").stat().st_size > 0


def test_results_cover_all_layouts_in_paper_order(eval_dir: Path):
    rows = _read_csv(eval_dir / "results.csv")
    assert [r["dataset"] for r in rows] == [
        "progan",
        "biggan",
        "guided",
        "ldm_200",
        "mygen",
        "mean",
        "mean_all",
    ]
    counts = {r["dataset"]: (int(r["n_real"]), int(r["n_fake"])) for r in rows}
    assert counts["progan"] == (4, 4)  # class level pooled
    assert counts["biggan"] == (4, 4)  # broken.jpg skipped
    assert counts["guided"] == (3, 3) and counts["ldm_200"] == (4, 2)  # shared real pools
    assert "broken.jpg" in (eval_dir / "skipped.txt").read_text()
    meta = json.loads((eval_dir / "metrics.json").read_text())
    assert meta["n_skipped"] == 1 and meta["protocol"] == "all" and meta["preprocess"] == "paper"
    assert meta["backbone"]["random_init"] is True and "torch" in meta["versions"]
    assert "Random-weight backbone" in (eval_dir / "results.md").read_text()


def test_partial_tree_mean_is_over_the_papers_sets_found_and_says_so(eval_dir: Path):
    by = {r["dataset"]: r for r in _read_csv(eval_dir / "results.csv")}
    paper = ["progan", "biggan", "guided", "ldm_200"]  # 4 of the paper's 19; mygen is not one
    assert [by[s]["in_paper"] for s in [*paper, "mygen"]] == ["yes"] * 4 + ["no"]
    assert float(by["mean"]["ap"]) == pytest.approx(
        np.mean([float(by[s]["ap"]) for s in paper]), abs=1e-5
    )
    assert float(by["mean_all"]["ap"]) == pytest.approx(
        np.mean([float(by[s]["ap"]) for s in [*paper, "mygen"]]), abs=1e-5
    )
    assert "not the paper's mean" in by["mean"]["display_name"]
    assert by["mean"]["in_paper"] == "4 of 19"
    meta = json.loads((eval_dir / "metrics.json").read_text())
    assert meta["mean_info"]["n_paper_sets"] == 4 and not meta["mean_info"]["is_paper_mean"]
    assert "4 of the paper's 19 sets" in (eval_dir / "results.md").read_text()


def test_every_number_recomputes_from_scores_csv(eval_dir: Path):
    threshold = json.loads((eval_dir / "metrics.json").read_text())["threshold"]
    scores = _read_csv(eval_dir / "scores.csv")
    for row in _set_rows(eval_dir / "results.csv"):
        mine = [s for s in scores if s["dataset"] == row["dataset"]]
        y = np.array([int(s["label"]) for s in mine])
        s = np.array([float(s["score"]) for s in mine])
        assert float(row["ap"]) == pytest.approx(100 * average_precision_score(y, s), abs=1e-4)
        assert float(row["auc"]) == pytest.approx(100 * roc_auc_score(y, s), abs=1e-4)
        assert float(row["acc@val"]) == pytest.approx(100 * np.mean((s > threshold) == y), abs=1e-4)


def test_univfd_protocol_is_recorded(trained_run: Path, mini_bench: Path, call_main):
    out = mini_bench / "eval_univfd"
    code, _, err = call_main(
        eval_cli.main,
        "clipflow-eval",
        f"ckpt={trained_run / 'model.safetensors'}",
        f"data.test_root={mini_bench / 'test'}",
        "data.protocol=univfd",
        "data.max_per_class=2",
        "device=cpu",
        "data.num_workers=0",
        f"hydra.run.dir={out}",
    )
    assert code == 0, err[-2000:]
    rows = _read_csv(out / "results.csv")
    assert all(
        int(r["n_real"]) <= 2 and int(r["n_fake"]) <= 2 for r in _set_rows(out / "results.csv")
    )
    assert [r["dataset"] for r in rows[-2:]] == ["mean", "mean_all"]
    assert json.loads((out / "metrics.json").read_text())["protocol"].startswith("univfd")


def test_random_weight_warning_is_said_once_on_the_console(
    trained_run: Path, mini_bench: Path, tmp_path: Path, call_main
):
    """The backbone's warning, not open_clip's notice too, nor the banner of the printed
    results.md again; the file keeps its banner for readers who were not at the console."""
    code, out, err = call_main(
        eval_cli.main,
        "clipflow-eval",
        f"ckpt={trained_run}",
        f"data.test_root={mini_bench / 'test'}",
        "device=cpu",
        "data.num_workers=0",
        f"hydra.run.dir={tmp_path / 'ev'}",
    )
    assert code == 0, err[-2000:]
    said = re.compile(r"random[ -]weight|initiali[sz]ed randomly", re.I)
    assert len([line for line in (out + err).splitlines() if said.search(line)]) == 1
    assert "| biggan | BigGAN |" in out  # the table is still printed
    assert "Random-weight backbone" in (tmp_path / "ev" / "results.md").read_text()


def _one_line_error(result: tuple[int, str, str]) -> str:
    code, _, err = result
    assert code != 0
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


def test_missing_train_folder_is_one_line(tmp_path: Path, call_main):
    result = call_main(
        train_cli.main,
        "clipflow-train",
        f"data.train_root={tmp_path / 'nope'}",
        "backbone=tiny",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert "nope" in _one_line_error(result)


def test_test_root_without_splits_is_one_line(trained_run: Path, tmp_path: Path, call_main):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    result = call_main(
        eval_cli.main,
        "clipflow-eval",
        f"ckpt={trained_run}",
        f"data.test_root={tmp_path / 'flat'}",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'ev'}",
    )
    assert "0_real" in _one_line_error(result)


def test_missing_weights_offline_is_one_line(
    mini_bench: Path, tmp_path: Path, call_main, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = call_main(
        train_cli.main,
        "clipflow-train",
        f"data.train_root={mini_bench / 'train'}",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert "backbone.pretrained=" in _one_line_error(result)
