"""Hub-style model folders, offline: Detector.save_pretrained -> from_pretrained gives identical
scores, clipflow-push out=DIR writes the same folder without a network, push_to_hub uploads
exactly that folder, published model.json carries no local path, the card's Hub metadata."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from clipflow.checkpoints.card_data import base_model_id, training_datasets
from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.checkpoints.pretrained import published_meta, save_published
from clipflow.checkpoints.push import model_card
from clipflow.checkpoints.save import save_checkpoint
from clipflow.cli import push as push_cli
from clipflow.data.synthetic import write_images
from clipflow.detect import Detector
from clipflow.errors import ClipflowError
from clipflow.flow.config import FlowConfig
from clipflow.flow.model import CLIPFlow

FILES = ["README.md", "model.json", "model.safetensors"]


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or Hub call fails the test."""

    def refuse(*a, **k):
        raise AssertionError("the network was reached")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)


def _folder(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_save_pretrained_round_trip_scores_identical(trained_run: Path, tmp_path: Path, no_network):
    write_images(tmp_path / "img", 3, np.random.default_rng(3), size=48)
    write_images(tmp_path / "img" / "fake", 3, np.random.default_rng(4), fake=True, size=48)
    images = sorted(str(p) for p in (tmp_path / "img").rglob("*.png"))
    det = Detector.from_checkpoint(trained_run, device="cpu")
    folder = det.save_pretrained(tmp_path / "pub", repo_id="me/detector")
    assert sorted(_folder(folder)) == FILES
    again = Detector.from_pretrained(folder, device="cpu")
    assert again.ckpt.path.parent == folder  # read from the folder, not the source
    np.testing.assert_array_equal(again.score(images), det.score(images))
    assert again.threshold == det.threshold
    assert torch.equal(again.ckpt.val_real_scores, det.ckpt.val_real_scores)
    # the weights are the source's bytes: the sha256 an eval recorded still names them
    source = _folder(trained_run)
    assert _folder(folder)["model.safetensors"] == source["model.safetensors"]
    with pytest.raises(ClipflowError, match="local folder"):
        Detector.from_pretrained(folder, revision="v1", device="cpu")


def test_published_model_json_has_no_local_path(trained_run: Path, tmp_path: Path):
    train_root = json.loads((trained_run / "model.json").read_text())["config"]["data"]
    train_root = train_root["train_root"]
    assert Path(train_root).is_absolute()
    folder = Detector.from_checkpoint(trained_run, device="cpu").save_pretrained(tmp_path / "p")
    text = (folder / "model.json").read_text()
    assert train_root not in text and str(Path.home()) not in text
    published = json.loads(text)
    assert published["config"]["data"]["train_root"] == f"<local>/{Path(train_root).name}"
    card = (folder / "README.md").read_text()
    assert "`config.data.train_root`" in card and "OWNER/NAME" in card  # saved without repo


def test_push_out_writes_the_same_folder_offline(
    trained_run: Path, tmp_path: Path, no_network, capsys
):
    det = Detector.from_checkpoint(trained_run, device="cpu")
    api_folder = det.save_pretrained(tmp_path / "api", repo_id="me/detector")
    push_cli.main([f"ckpt={trained_run}", f"out={tmp_path / 'cli'}", "repo=me/detector"])
    out = capsys.readouterr()
    assert _folder(tmp_path / "cli") == _folder(api_folder)
    assert "saved:" in out.out and "clipflow-push ckpt=" in out.out
    with pytest.raises(SystemExit) as info:
        push_cli.main([f"ckpt={trained_run}", f"out={tmp_path / 'x'}", "dry_run=true"])
    assert info.value.code == 2 and "out=DIR only writes" in capsys.readouterr().err
    # an out= that cannot be a folder (a file in the way): one line naming out=, not a traceback
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as info:
        push_cli.main([f"ckpt={trained_run}", f"out={tmp_path / 'a_file' / 'sub'}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "set out=DIR" in err and len(err.strip().splitlines()) == 1


def test_push_to_hub_uploads_what_save_pretrained_writes(
    trained_run: Path, tmp_path: Path, monkeypatch
):
    uploaded: dict[str, dict[str, bytes]] = {}

    def create_repo(self, repo_id, **kw):
        assert kw["private"] is True

    def upload_folder(self, *, repo_id, folder_path, **kw):
        uploaded[repo_id] = _folder(Path(folder_path))
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{'c' * 40}",
            commit_message="m",
            commit_description="",
            oid="c" * 40,
        )

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    det = Detector.from_checkpoint(trained_run, device="cpu")
    url = det.push_to_hub("me/detector", private=True)
    assert url.endswith("commit/" + "c" * 40)
    local = det.save_pretrained(tmp_path / "local", repo_id="me/detector")
    assert uploaded == {"me/detector": _folder(local)}


def test_saving_over_the_source_is_refused(trained_run: Path, tmp_path: Path):
    before = _folder(trained_run)
    with pytest.raises(ClipflowError, match="checkpoint's own folder"):
        save_published(load_checkpoint(trained_run), trained_run)
    assert _folder(trained_run) == before


@pytest.mark.parametrize(
    ("recorded", "published"),
    [
        ("/home/alice/data/progan_train", "<local>/progan_train"),
        ("/home/alice/data/progan_train/", "<local>/progan_train"),
        ("~/photos", "<local>/photos"),
        ("C:\\Users\\alice\\train", "<local>/train"),
        ("D:/data/val", "<local>/val"),
        ("\\\\server\\share\\w.pt", "<local>/w.pt"),
        ("local-dir:/home/alice/model", "local-dir:<local>/model"),
        ("data/train", "data/train"),  # relative: says nothing of the machine
        ("https://example.org/w.pt", "https://example.org/w.pt"),
        ("openai", "openai"),
    ],
)
def test_local_paths_are_redacted_to_their_last_part(recorded: str, published: str):
    meta = {"config": {"data": {"train_root": recorded}}, "history": [{"epoch": 1}]}
    out, redacted = published_meta(meta)
    assert out["config"]["data"]["train_root"] == published
    assert redacted == (["config.data.train_root"] if published != recorded else [])
    assert meta["config"]["data"]["train_root"] == recorded  # the source record is untouched


def test_calibration_root_in_the_hashed_spec_is_redacted_too(tmp_path: Path):
    """calibration.root is in the spec tensor: the weights are re-written with the redacted
    record (new sha256, same tensors) and the card names the source's sha256."""
    torch.manual_seed(0)
    calibration = {
        "n": 4,
        "fingerprint": "a" * 64,
        "root": "/home/alice/photos",
        "date": "2026-11-29T14:00:00+00:00",
        "refit": False,
    }
    model = CLIPFlow(16, FlowConfig(dr_dim=8, n_blocks=2))
    save_checkpoint(
        tmp_path / "src",
        model,
        0.25,
        {"name": "tiny"},
        {"seed": 0},
        torch.arange(4.0),
        {"calibration": calibration},
    )
    source = load_checkpoint(tmp_path / "src")
    published = save_published(source, tmp_path / "pub")
    assert published.meta["calibration"]["root"] == "<local>/photos"
    assert published.sha256 != source.sha256
    feats = torch.randn(5, 16)
    assert torch.equal(published.model.score(feats), source.model.score(feats))
    card = model_card(published, "me/cal", None, source.sha256)
    assert source.sha256 in card and "`calibration.root`" in card


@pytest.mark.parametrize(
    ("backbone", "repo"),
    [
        ({"name": "ViT-L-14-quickgelu", "pretrained": "openai"}, "openai/clip-vit-large-patch14"),
        ({"name": "ViT-B-16", "pretrained": "openai"}, "openai/clip-vit-base-patch16"),
        ({"name": "ViT-B-16-SigLIP", "pretrained": "webli"}, "timm/ViT-B-16-SigLIP"),
        (
            {"family": "timm", "name": "vit_small_patch14_dinov2.lvd142m", "pretrained": "timm"},
            "timm/vit_small_patch14_dinov2.lvd142m",
        ),
        ({"name": "hf-hub:org/model", "pretrained": "x"}, "org/model"),
        ({"name": "clipflow-tiny", "pretrained": None, "random_init": True}, None),
        ({"name": "ViT-L-14", "pretrained": "/home/alice/ViT-L-14.pt"}, None),
        ({"name": "ViT-L-14", "pretrained": None}, None),
        ({"family": "custom", "name": "my-net", "pretrained": "v1"}, None),
    ],
)
def test_base_model_is_the_backbones_hub_repo(backbone: dict, repo: str | None):
    assert base_model_id(backbone) == repo


def test_known_training_data_is_named_others_omitted(trained_run: Path):
    meta = json.loads((trained_run / "model.json").read_text())
    assert training_datasets(meta) == []
    meta["config"]["data"].update(train_root="/data/progan_train", val_root="/d/progan_val")
    assert training_datasets(meta) == ["sywang/CNNDetection"]
    ckpt = load_checkpoint(trained_run)
    ckpt.meta["config"]["data"]["train_root"] = "/data/progan_train"
    card = ModelCard(model_card(ckpt, "me/detector"))
    assert card.data.datasets == ["sywang/CNNDetection"]
