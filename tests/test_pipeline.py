"""run_train / run_eval in-process: reproducibility and refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import make_cnnspot_tree, make_full_benchmark

from clipflow.checkpoints.save import save_checkpoint
from clipflow.core.fileio import file_sha256
from clipflow.errors import CheckpointError, ClipflowError, DataError
from clipflow.eval.means import PAPER_SETS
from clipflow.flow.config import FlowConfig
from clipflow.flow.model import CLIPFlow
from clipflow.runs.evaluate import run_eval
from clipflow.runs.train import run_train
from clipflow.settings.config import EvalSettings, eval_settings, train_settings


def _settings(train_root: Path, seed: int = 0):
    return train_settings(
        {
            "mode": "N+P",
            "seed": seed,
            "device": "cpu",
            "backbone": {"name": "tiny", "pretrained": None},
            "data": {"train_root": str(train_root), "num_workers": 0, "per_class": 6},
            "train": {"epochs": 2, "batch_size": 8},
        }
    )


def test_same_seed_same_device_gives_identical_checkpoint(mini_bench: Path, tmp_path: Path):
    a = run_train(_settings(mini_bench / "train"), tmp_path / "a")
    b = run_train(_settings(mini_bench / "train"), tmp_path / "b")
    c = run_train(_settings(mini_bench / "train", seed=1), tmp_path / "c")
    from safetensors.torch import load_file

    A, B = load_file(a), load_file(b)
    assert not [k for k in A if not torch.equal(A[k], B[k])], [
        (k, (A[k] - B[k]).abs().max()) for k in A if not torch.equal(A[k], B[k])
    ][:4]
    assert file_sha256(a) == file_sha256(b)
    assert file_sha256(a) != file_sha256(c)


def test_checkpoint_of_another_feature_size_is_refused(mini_bench: Path, tmp_path: Path):
    model = CLIPFlow(16, FlowConfig(dr_dim=4, n_blocks=1))
    save_checkpoint(
        tmp_path, model, 0.0, {"name": "tiny", "pretrained": None, "preprocess": "paper"}, {}
    )
    settings = EvalSettings(ckpt=str(tmp_path), device="cpu")
    settings.data.test_root = str(mini_bench / "test")
    with pytest.raises(CheckpointError, match="16-d"):
        run_eval(settings, tmp_path / "eval")


def test_unknown_config_keys_and_modes_are_one_line_errors():
    with pytest.raises(ClipflowError, match="unknown key"):
        train_settings({"flow": {"dr_dimm": 3}})
    with pytest.raises(ClipflowError, match="N\\+P"):
        train_settings({"mode": "NP"})
    assert eval_settings(
        {"ckpt": "x", "backbone": {"name": None, "pretrained": "/w.pt"}}
    ).backbone == {"pretrained": "/w.pt"}


def test_device_cuda_without_gpu_is_refused(mini_bench: Path, tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    s = _settings(mini_bench / "train")
    s.device = "cuda"
    with pytest.raises(ClipflowError, match="device=cpu"):
        run_train(s, tmp_path)


def _eval_settings(trained_run: Path, test_root: Path) -> EvalSettings:
    s = EvalSettings(ckpt=str(trained_run), device="cpu")
    s.data.test_root, s.data.num_workers, s.data.batch_size = str(test_root), 0, 32
    return s


def test_mean_is_the_papers_19_and_mean_all_the_21_found(trained_run: Path, tmp_path: Path):
    files = run_eval(
        _eval_settings(trained_run, make_full_benchmark(tmp_path / "test")), tmp_path / "eval"
    )
    with open(files["results.csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    extras = ["stylegan2", "whichfaceisreal"]
    assert [r["dataset"] for r in rows] == [*PAPER_SETS, *extras, "mean", "mean_all"]
    by = {r["dataset"]: r for r in rows}
    assert {by[s]["in_paper"] for s in PAPER_SETS} == {"yes"}
    assert [by[s]["in_paper"] for s in extras] == ["no", "no"]
    assert (
        by["mean"]["in_paper"] == "19 of 19" and by["mean_all"]["in_paper"] == "19 of 19 + 2 others"
    )
    for key, sets in (("mean", PAPER_SETS), ("mean_all", [*PAPER_SETS, *extras])):
        for col in ("ap", "acc@val", "auc"):
            want = np.mean([float(by[s][col]) for s in sets])
            assert float(by[key][col]) == pytest.approx(want, abs=1e-5), (key, col)
        assert int(by[key]["n_real"]) == sum(int(by[s]["n_real"]) for s in sets)
    assert int(by["mean"]["n_real"]) < int(by["mean_all"]["n_real"])  # the extras are left out
    meta = json.loads(files["metrics.json"].read_text())
    assert meta["mean_info"]["is_paper_mean"] and meta["mean_info"]["sets"] == list(PAPER_SETS)
    assert meta["mean_all_info"]["n_sets"] == 21 and not meta["mean_all_info"]["is_paper_mean"]
    assert meta["mean"]["ap"] == pytest.approx(float(by["mean"]["ap"]), abs=1e-5)
    assert meta["mean_all"]["ap"] == pytest.approx(float(by["mean_all"]["ap"]), abs=1e-5)
    assert [d["in_paper"] for d in meta["datasets"]] == [True] * 19 + [False] * 2
    md = files["results.md"].read_text()
    assert "`mean` averages the paper's 19 sets" in md and "stylegan2, whichfaceisreal" in md


def test_a_set_named_like_a_mean_row_is_refused_before_extraction(
    trained_run: Path, tmp_path: Path
):

    root = make_cnnspot_tree(tmp_path / "test", sets={"mean_all": (1, 1)}, class_level={})
    with pytest.raises(DataError, match="'mean_all'"):
        run_eval(_eval_settings(trained_run, root), tmp_path / "eval")
