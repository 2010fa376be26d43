"""Checkpoints: trained parts only, exact round trip, refusal of anything wrong."""

import json

import pytest
import torch

from clipflow.checkpoint import load_checkpoint, save_checkpoint
from clipflow.errors import CheckpointError
from clipflow.flow import CLIPFlow, FlowConfig


def _save(tmp_path, feature_dim=16):
    torch.manual_seed(0)
    model = CLIPFlow(feature_dim, FlowConfig(dr_dim=8, n_blocks=2, perm_seed=3))
    path = save_checkpoint(
        tmp_path, model, 0.25, {"name": "tiny"}, {"mode": "N+P"}, torch.arange(4.0)
    )
    return model, path


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model, path = _save(tmp_path)
    for target in (path, tmp_path, path.with_suffix(".json")):
        ckpt = load_checkpoint(target)
        x = torch.randn(5, 16)
        assert torch.allclose(ckpt.model.score(x), model.eval().score(x))
        assert ckpt.threshold == 0.25 and ckpt.backbone == {"name": "tiny"}
        assert torch.equal(ckpt.val_real_scores, torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    # only the trained parts: a few hundred KB, not a backbone
    assert path.stat().st_size < 2_000_000


def test_truncated_weights_are_refused(tmp_path):
    _, path = _save(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_other_version_and_feature_size_are_refused(tmp_path):
    _, path = _save(tmp_path)
    with pytest.raises(CheckpointError, match="768-d"):
        load_checkpoint(path, expected_feature_dim=768)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)


def test_missing_and_foreign_files_give_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04pickle?")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert "\n" not in str(err.value)
