"""``auto`` defaults: resolved once for the run's device, logged in one line, recorded in the
run's settings, the checkpoint's backbone record and the feature cache key."""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torchvision
from fixtures_images import make_train_tree
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from clipflow.backbones.backbone import load_backbone
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform
from clipflow.checkpoints.backbone_match import eval_backbone_config
from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.checkpoints.schema import validate_meta
from clipflow.core.machine import auto_compile
from clipflow.features.cache import FeatureCache
from clipflow.runs.evaluate import eval_metadata
from clipflow.runs.train import run_train
from clipflow.settings.config import detect_settings, eval_settings, train_settings
from clipflow.transforms.variant import IDENTITY

REPO = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=16)
def _composed_cached(config: str, overrides: tuple[str, ...]) -> str:
    with initialize_config_module(config_module="clipflow.configs", version_base="1.3"):
        cfg = compose(config_name=config, overrides=list(overrides))
    return OmegaConf.to_yaml(cfg, resolve=True)


def composed(config: str, *overrides: str) -> dict:
    """The shipped YAML (plus overrides) as the CLI hands it to the settings layer."""
    return OmegaConf.to_container(OmegaConf.create(_composed_cached(config, overrides)))


def _cpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


@pytest.fixture
def fake_h200(monkeypatch):
    """A CUDA machine as torch reports it (no GPU is touched: only the queries are faked)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torchvision.version, "cuda", "12.8", raising=False)
    _cpus(monkeypatch, 32)


def test_the_shipped_defaults_are_auto():
    data, bb = composed("train")["data"], composed("train")["backbone"]
    assert (data["batch_size"], data["num_workers"], data["decode"]) == ("auto",) * 3
    assert (bb["precision"], bb["compile"]) == ("auto", "auto")
    assert composed("train", "backbone=tiny")["backbone"]["precision"] == "auto"
    assert composed("eval")["data"]["decode"] == "auto"


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (3, 2), (64, 4)])
def test_cpu_run_resolves_to_the_strict_cpu_path(monkeypatch, caplog, cpus: int, workers: int):
    _cpus(monkeypatch, cpus)
    with caplog.at_level(logging.INFO, logger="clipflow.settings.config"):
        s = train_settings(composed("train", "backbone=tiny", "device=cpu"))
    assert (s.backbone.precision, s.backbone.compile) == ("fp32", False)
    assert (s.data.decode, s.data.batch_size, s.data.num_workers) == ("pil", 64, workers)
    assert s.auto == {
        "backbone.precision": "fp32",
        "backbone.compile": False,
        "data.batch_size": 64,
        "data.num_workers": workers,
        "data.decode": "pil",
        "device": f"cpu, {cpus} CPUs",
    }
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto:")]
    assert lines == [
        f"auto: precision=fp32 decode=pil num_workers={workers} batch_size=64 compile=off "
        f"(cpu, {cpus} CPUs)"
    ]


def test_torchrun_ranks_share_the_cpus(monkeypatch):
    _cpus(monkeypatch, 32)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    s = train_settings(composed("train", "backbone=tiny", "device=cpu"))
    assert s.data.num_workers == 3  # 32 CPUs / 8 ranks = 4 each, one left to the rank itself


def test_cuda_run_resolves_to_the_fast_path(fake_h200, caplog):
    with caplog.at_level(logging.INFO, logger="clipflow.settings.config"):
        s = train_settings(composed("train"))  # device=auto: the (faked) GPU
    assert (s.backbone.precision, s.backbone.compile) == ("bf16", True)
    assert (s.data.decode, s.data.batch_size, s.data.num_workers) == ("by_size", 256, 16)
    assert s.device == "auto" and s.auto["device"] == "cuda:0 NVIDIA H200"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto:")]
    assert lines == [
        "auto: precision=bf16 decode=by_size num_workers=16 batch_size=256 compile=on "
        "(cuda:0 NVIDIA H200)"
    ]


def test_gpus_without_native_bf16_stay_fp32(fake_h200, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))  # T4
    s = train_settings(composed("train", "device=cuda"))
    assert s.backbone.precision == "fp32" and s.backbone.compile is True


def test_explicit_values_win_and_are_not_reported_as_auto(fake_h200, caplog):
    overrides = ("backbone.precision=fp32", "data.num_workers=2", "data.decode=pil")
    with caplog.at_level(logging.INFO, logger="clipflow.settings.config"):
        s = train_settings(composed("train", *overrides))
    assert (s.backbone.precision, s.data.num_workers, s.data.decode) == ("fp32", 2, "pil")
    assert "backbone.precision" not in s.auto and s.auto["data.batch_size"] == 256
    explicit = composed(
        "train", *overrides, "backbone.compile=false", "data.batch_size=32", "device=cpu"
    )
    with caplog.at_level(logging.INFO, logger="clipflow.settings.config"):
        caplog.clear()
        s = train_settings(explicit)
    assert s.auto == {} and not [r for r in caplog.records if "auto:" in r.getMessage()]


def test_eval_and_detect_resolve_their_autos(monkeypatch):
    _cpus(monkeypatch, 4)
    e = eval_settings(composed("eval", "device=cpu", "backbone.precision=auto"))
    assert (e.data.batch_size, e.data.num_workers, e.data.decode) == (64, 3, "pil")
    assert e.backbone == {"precision": "fp32"}  # an override of the checkpoint's, resolved
    assert "precision" not in eval_settings(composed("eval", "device=cpu")).backbone
    d = detect_settings(composed("detect", "inputs=a.png", "device=cpu", "backbone.precision=auto"))
    assert d.backbone == {"precision": "fp32"}


def test_bad_auto_spellings_are_refused():
    from clipflow.errors import ClipflowError

    for override in ("data.batch_size=autoo", "backbone.precision=Auto", "data.decode=fast"):
        with pytest.raises(ClipflowError):
            train_settings(composed("train", "backbone=tiny", override))


def test_precision_switch_changes_cache_key_and_checkpoint_record(fake_h200, monkeypatch):
    auto = train_settings(composed("train", "backbone=tiny")).backbone
    strict = train_settings(composed("train", "backbone=tiny", "backbone.precision=fp32")).backbone
    assert (auto.precision, strict.precision) == ("bf16", "fp32")
    monkeypatch.undo()  # back to the real (CPU) machine to build the towers
    towers = [
        load_backbone(BackboneConfig(**{**vars(c), "compile": False})) for c in (auto, strict)
    ]
    cache = FeatureCache.__new__(FeatureCache)  # setting_key reads nothing from disk
    keys = {cache.setting_key(bb, build_transform(bb), IDENTITY, 0, 0) for bb in towers}
    assert len(keys) == 2  # fp32 and bf16 features never share a cache folder
    records = [bb.describe() for bb in towers]
    assert [r["precision"] for r in records] == ["bf16", "fp32"]
    for record in records:  # the checkpoint schema takes either record
        validate_meta(_meta_with(record), "model.json")


def _meta_with(backbone: dict) -> dict:
    return {
        "format": "clipflow-checkpoint",
        "format_version": _format_version(),
        "clipflow_version": "0.0.0",
        "weights": "model.safetensors",
        "sha256": "0" * 64,
        "feature_dim": backbone["feature_dim"],
        "flow": {
            "dr_dim": 0,
            "normalize": True,
            "n_blocks": 1,
            "hidden_mult": 1,
            "clamp": 2.0,
            "perm_seed": 0,
        },
        "backbone": backbone,
        "threshold": 0.0,
        "config": {},
    }


def _format_version():
    from clipflow.checkpoints import schema as checkpoint_schema

    return checkpoint_schema.FORMAT_VERSION


def test_cpu_training_run_records_what_auto_chose(monkeypatch, tmp_path: Path):
    _cpus(monkeypatch, 2)
    make_train_tree(tmp_path / "train", classes=("cat",), n_real=6, n_fake=0)
    s = train_settings(
        composed(
            "train",
            "backbone=tiny",
            "device=cpu",
            f"data.train_root={tmp_path / 'train'}",
            "data.cache=false",
            "data.val_fraction=0.34",
            "flow.n_blocks=1",
            "train.epochs=1",
            "train.batch_size=4",
        )
    )
    ckpt = load_checkpoint(run_train(s, tmp_path / "run"))
    assert ckpt.backbone["precision"] == "fp32"
    config = ckpt.meta["config"]
    assert (
        config["auto"]["backbone.precision"] == "fp32" and config["auto"]["data.num_workers"] == 1
    )
    assert config["backbone"]["compile"] is False and config["data"]["decode"] == "pil"
    assert config["data"]["batch_size"] == 64
    # an evaluation's results record its own autos (its loader; precision is the checkpoint's)
    e = eval_settings(composed("eval", "device=cpu", f"ckpt={tmp_path / 'run'}"))
    meta = eval_metadata(ckpt, load_backbone(eval_backbone_config(ckpt, e.backbone)), e)
    assert meta["auto"]["data.num_workers"] == 1 and meta["backbone"]["precision"] == "fp32"
    assert meta["speed"] == {"compile": "off"}  # what ran, beside what auto chose (#25)


def test_failed_compile_falls_back_to_eager_with_the_reason(monkeypatch, caplog):
    def broken(fn, **kw):
        def call(x):
            raise RuntimeError("no C compiler found\nsecond line")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    bb = load_backbone(BackboneConfig(name="tiny", pretrained=None, compile=True))
    eager = load_backbone(BackboneConfig(name="tiny", pretrained=None))
    x = torch.randn(3, 3, bb.image_size, bb.image_size)
    with caplog.at_level(logging.WARNING, logger="clipflow.backbones.backbone"):
        out = bb(x)
        bb(x)  # the fallback is kept: one warning, not one per batch
    assert torch.allclose(out, eager(x), atol=1e-5) and bb.compiled is False
    warnings = [r.getMessage() for r in caplog.records if "backbone.compile" in r.getMessage()]
    assert len(warnings) == 1 and "FAILED (no C compiler found)" in warnings[0]
    assert "EAGERLY" in warnings[0] and "metadata" in warnings[0]
    assert bb.compile_status == "failed: no C compiler found"
    assert eager.compile_status == "off"


def test_auto_in_a_config_built_in_code_resolves_at_load():
    bb = load_backbone(BackboneConfig(name="tiny", pretrained=None, precision="auto"), "cpu")
    assert bb.describe()["precision"] == "fp32" and bb.cfg.precision == "fp32"
    assert auto_compile("cpu") is False


def _check_precision_module():
    spec = importlib.util.spec_from_file_location(
        "check_precision", REPO / "scripts" / "check_precision.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bf16_default_condition_holds_on_the_tiny_backbone():
    """scripts/check_precision.py's condition for bf16 as the GPU default, run in-process on
    CPU: cosine to fp32 >= 0.999 for every image and the read-out AP within 0.1 point."""
    cp = _check_precision_module()
    report = cp.check("tiny", "cpu", n=16, precisions=["bf16"], num_workers=0)
    bf16 = report["precisions"]["bf16"]
    assert bf16["cos_min"] >= cp.MIN_COSINE, bf16
    assert abs(bf16["ap_diff"]) < cp.MAX_AP_DIFF, bf16
    assert cp.passes(report)
    assert not cp.passes({"precisions": {"x": {**bf16, "cos_min": 0.99}}})
