"""run_train / run_eval in-process: reproducibility and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clipflow.checkpoint import save_checkpoint
from clipflow.config import EvalSettings, eval_settings, train_settings
from clipflow.errors import CheckpointError, ClipflowError
from clipflow.fileio import file_sha256
from clipflow.flow import CLIPFlow, FlowConfig
from clipflow.pipeline import run_eval, run_train


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
