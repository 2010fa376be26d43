"""Missing CLIP weights: one line, before any data is scanned, naming what to fetch."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clipflow.backbones.backbone import check_weights_available
from clipflow.backbones.config import BackboneConfig
from clipflow.cli import train as train_cli
from clipflow.errors import BackboneError

REPO = "timm/vit_large_patch14_clip_224.openai"  # open_clip's hf_hub id for ViT-L-14-quickgelu
READY = "backbone.pretrained=/path/to/open_clip_model.safetensors"


def _no_network(*args, **kwargs):
    raise OSError(101, "Network is unreachable")


def test_offline_train_fails_before_the_data_scan_with_the_repo_id(
    call_main, monkeypatch, tmp_path: Path
):
    import clipflow.runs.train as train_run

    def never(*args, **kwargs):
        raise AssertionError("the training data was scanned before the weights were checked")

    monkeypatch.setattr(train_run, "discover_train_images", never)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", _no_network)  # never reaches the probe
    code, out, err = call_main(
        train_cli.main,
        "clipflow-train",
        f"data.train_root={tmp_path}",
        f"backbone.cache_dir={tmp_path / 'hf'}",  # an empty Hugging Face cache
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")  # one line, nothing from libraries
    assert REPO in err and "open_clip_model.safetensors" in err and READY in err
    assert "HF_HUB_OFFLINE" in err


def test_no_network_is_detected_at_once(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    with pytest.raises(BackboneError, match="no network") as info:
        check_weights_available(BackboneConfig(cache_dir=str(tmp_path)))
    assert REPO in str(info.value) and READY in str(info.value)


def test_online_or_cached_weights_pass(monkeypatch, tmp_path: Path):
    class Connection:
        def close(self) -> None:
            pass

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Connection())
    check_weights_available(BackboneConfig(cache_dir=str(tmp_path)))  # open_clip downloads

    # In the Hugging Face cache (its on-disk layout): fine offline too.
    repo = tmp_path / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", _no_network)
    check_weights_available(BackboneConfig(cache_dir=str(tmp_path)))


def test_a_missing_local_file_and_random_towers(tmp_path: Path):
    with pytest.raises(BackboneError, match="weights file not found"):
        check_weights_available(BackboneConfig(pretrained=str(tmp_path / "nope.safetensors")))
    check_weights_available(BackboneConfig(name="tiny", pretrained=None))  # nothing to fetch
    check_weights_available(BackboneConfig(pretrained=None))


SHADOW = "root:$6$salt$hash:19000:0:99999:7:::\n"  # what /etc/shadow holds: text, no tensors


def test_a_file_that_is_no_weights_says_what_it_is(tmp_path: Path):
    """backbone.pretrained=/etc/shadow was refused with torch's "list index out of range"."""
    text = tmp_path / "shadow"
    text.write_text(SHADOW)
    (tmp_path / "empty.pt").write_bytes(b"")
    cases = [
        (BackboneConfig(pretrained=str(text)), f"CLIP weights file not recognised: {text}"),
        (BackboneConfig(pretrained=str(tmp_path / "empty.pt")), "file is empty"),
        (BackboneConfig(pretrained=str(tmp_path) + "/"), "path is a folder, not a file"),
        (
            BackboneConfig(family="timm", name="vit_small_patch14_dinov2", pretrained=str(text)),
            "timm weights file not recognised",
        ),
    ]
    for cfg, needle in cases:
        with pytest.raises(BackboneError) as info:
            check_weights_available(cfg)
        message = str(info.value)
        assert needle in message and "backbone.pretrained" in message, message
        assert "\n" not in message and "list index" not in message


def test_weights_files_of_every_format_pass(tmp_path: Path):
    tensors = {"w": torch.zeros(2, 3)}
    save_file(tensors, tmp_path / "open_clip_model.safetensors")
    torch.save(tensors, tmp_path / "zip.pt")
    torch.save(tensors, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    np.savez(tmp_path / "big_vision.npz", w=np.zeros(3))
    for name in ("open_clip_model.safetensors", "zip.pt", "legacy.bin", "big_vision.npz"):
        check_weights_available(BackboneConfig(pretrained=str(tmp_path / name)))


def test_train_with_a_text_file_as_weights_is_one_line(call_main, monkeypatch, tmp_path: Path):
    import clipflow.runs.train as train_run

    def never(*args, **kwargs):
        raise AssertionError("the training data was scanned before the weights were checked")

    monkeypatch.setattr(train_run, "discover_train_images", never)
    (tmp_path / "shadow").write_text(SHADOW)
    code, _, err = call_main(
        train_cli.main,
        "clipflow-train",
        f"data.train_root={tmp_path}",
        f"backbone.pretrained={tmp_path / 'shadow'}",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert f"file not recognised: {tmp_path / 'shadow'}" in err
