"""The backbone zoo: open_clip (incl. timm-based towers), timm, block tokens, custom extractors.

Every tower here is random and tiny (CPU, offline): ``test_vit`` is timm's own 160-px test ViT,
``clipflow-tiny-timm`` an open_clip tower built on it (no ``output_dim``: the case that used to
raise a raw AttributeError).
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from fixtures_images import make_cnnspot_tree, make_train_tree

from clipflow import Detector
from clipflow.backbones.backbone import (
    Backbone,
    BackboneProtocol,
    check_weights_available,
    load_backbone,
)
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform
from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.cli.reproduce import parse_request
from clipflow.errors import BackboneError, CheckpointError, ClipflowError
from clipflow.features.cache import CACHE_VERSION, FeatureCache, setting_hash
from clipflow.paper.experiment_configs import compose_settings, named_experiments
from clipflow.paper.reproduce import run_reproduce
from clipflow.runs.evaluate import run_eval
from clipflow.runs.train import run_train
from clipflow.settings.config import EvalSettings, SettingsError, eval_settings, train_settings
from clipflow.transforms.variant import IDENTITY

TIMM_TINY = ("backbone.family=timm", "backbone.name=test_vit", "backbone.pretrained=null")
OPEN_CLIP_TIMM_TINY = ("backbone.name=clipflow-tiny-timm",)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    make_train_tree(root / "train", classes=("airplane", "cat"), n_real=6, n_fake=1)
    make_cnnspot_tree(root / "test", sets={"biggan": (3, 3)}, class_level={})
    return root


@pytest.fixture(scope="module")
def tiny_run(bench) -> Path:
    """One plain tiny training run; tests that edit it work on a copy."""
    ckpt = run_train(_settings(bench), bench / "tiny_run")
    return ckpt.parent


def _settings(bench: Path, *overrides: str):
    return compose_settings(
        [
            "backbone=tiny",
            "mode=N+P",
            "device=cpu",
            "data.num_workers=0",
            "data.per_class=null",
            f"data.train_root={bench / 'train'}",
            f"data.cache_dir={bench / 'cache'}",
            "train.epochs=1",
            "flow.n_blocks=2",
            *overrides,
        ]
    )


def _eval_scores(bench: Path, ckpt: Path, out: Path, backbone=None) -> dict[str, float]:
    s = EvalSettings(ckpt=str(ckpt), device="cpu")
    s.data = replace(
        s.data, test_root=str(bench / "test"), num_workers=0, cache_dir=str(bench / "cache")
    )
    paths = run_eval(s, out, backbone)
    with open(paths["scores.csv"]) as f:
        return {r["path"]: float(r["score"]) for r in csv.DictReader(f)}


@pytest.mark.parametrize(
    "overrides,family", [(TIMM_TINY, "timm"), (OPEN_CLIP_TIMM_TINY, "open_clip")]
)
def test_train_checkpoint_eval_and_detector_agree(bench, tmp_path, overrides, family):
    ckpt = run_train(_settings(bench, *overrides), tmp_path / "run")
    record = load_checkpoint(ckpt).backbone
    assert record["family"] == family and record["feature_dim"] == 32 + 32 * (family == "timm")
    scores = _eval_scores(bench, ckpt, tmp_path / "eval")
    det = Detector.from_checkpoint(ckpt, device="cpu")
    assert det.backbone.describe()["weights_id"] == record["weights_id"]
    paths = sorted(scores)
    np.testing.assert_allclose(det.score(paths), [scores[p] for p in paths], rtol=1e-5, atol=1e-5)


def test_open_clip_timm_tower_has_no_output_dim_and_uses_open_clips_preprocessing():
    bb = load_backbone(BackboneConfig(name="clipflow-tiny-timm", pretrained=None))
    assert not hasattr(bb.model.visual, "output_dim")  # the tower the old code died on
    pp = open_clip.get_model_preprocess_cfg(bb.model)
    assert (bb.image_size, bb.mean, bb.std) == (160, tuple(pp["mean"]), tuple(pp["std"]))
    assert tuple(pp["size"]) == (160, 160)
    assert bb.feature_dim == 32 and bb.resize_to == round(160 * 256 / 224)
    assert bb(torch.zeros(2, 3, 160, 160)).shape == (2, 32)


def test_timm_tower_takes_timms_data_config():
    import timm.data

    bb = load_backbone(BackboneConfig(family="timm", name="test_vit", pretrained=None))
    dc = timm.data.resolve_model_data_config(bb.model)
    assert bb.image_size == dc["input_size"][-1] and bb.mean == tuple(dc["mean"])
    assert bb.resize_to == int(160 / dc["crop_pct"])  # timm's crop ratio, not 256/224
    assert build_transform(bb).describe()["resize"] == bb.resize_to
    assert bb.describe()["weights_id"] == "timm:test_vit:random-seed0"


@pytest.mark.parametrize("family", ["open_clip", "timm"])
def test_layers_concat_and_mean_dims(family):
    base = (
        BackboneConfig(name="tiny", pretrained=None)
        if family == "open_clip"
        else BackboneConfig(family="timm", name="test_vit", pretrained=None)
    )
    width, last = {"open_clip": (64, 1), "timm": (64, 5)}[family]
    concat = load_backbone(replace(base, layers=[0, -1]))
    mean = load_backbone(replace(base, layers=[0, -1], layer_pool="mean"))
    x = torch.randn(3, 3, concat.image_size, concat.image_size)
    a, m = concat(x), mean(x)
    assert concat.feature_dim == 2 * width and a.shape == (3, 2 * width)
    assert mean.feature_dim == width and m.shape == (3, width)
    torch.testing.assert_close(m, (a[:, :width] + a[:, width:]) / 2)
    assert concat.describe()["layers"] == [0, last]  # -1 recorded as the block it is
    assert concat(x).shape == a.shape  # hooks keep working call after call


def test_layers_refused_in_one_line():
    with pytest.raises(BackboneError, match=r"has 2 blocks \(indices 0\.\.1"):
        load_backbone(BackboneConfig(name="tiny", pretrained=None, layers=[5]))
    with pytest.raises(BackboneError, match="no transformer blocks"):
        load_backbone(
            BackboneConfig(family="timm", name="test_convnext", pretrained=None, layers=[0])
        )


def test_cache_keys_differ_across_backbones_and_layers(tmp_path):
    cache = FeatureCache(tmp_path)
    cfgs = [
        BackboneConfig(name="tiny", pretrained=None),
        BackboneConfig(name="tiny", pretrained=None, layers=[0]),
        BackboneConfig(name="tiny", pretrained=None, layers=[1]),
        BackboneConfig(name="tiny", pretrained=None, layers=[0, 1]),
        BackboneConfig(name="tiny", pretrained=None, layers=[0, 1], layer_pool="mean"),
        BackboneConfig(family="timm", name="test_vit", pretrained=None),
        BackboneConfig(name="clipflow-tiny-timm", pretrained=None),
    ]
    keys = []
    for cfg in cfgs:
        bb = load_backbone(cfg)
        keys.append(cache.setting_key(bb, build_transform(bb), IDENTITY, 0, 0))
    assert len(set(keys)) == len(keys)
    # plain open_clip towers keep the key they always had: existing caches stay valid
    bb = load_backbone(cfgs[0])
    d = bb.describe()
    old = setting_hash(
        {
            "v": CACHE_VERSION,
            "backbone": [d["name"], d["weights_id"], d["precision"]],
            "transform": build_transform(bb).describe(),
            "variant": IDENTITY.key,
            "seed": 0,
            "view": 0,
            "max_pixels": None,
        }
    )
    assert keys[0] == f"v{CACHE_VERSION}-{old}"


class MeanColour:
    """A complete custom extractor (the docs example's shape): per-channel statistics."""

    feature_dim, image_size = 6, 32
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self, version: str = "v1"):
        self.version = version

    def describe(self) -> dict:
        return {"name": "mean-colour", "weights_id": f"mean-colour:{self.version}"}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


def test_custom_extractor_end_to_end_through_the_python_api(bench, tmp_path):
    ext = MeanColour()
    assert isinstance(ext, BackboneProtocol)
    ckpt = run_train(_settings(bench), tmp_path / "run", backbone=ext)
    record = load_checkpoint(ckpt).backbone
    assert (record["family"], record["name"], record["feature_dim"]) == ("custom", "mean-colour", 6)
    config = json.loads((tmp_path / "run" / "model.json").read_text())["config"]["backbone"]
    assert config["family"] == "custom"  # the checkpoint's settings name what ran
    scores = _eval_scores(bench, ckpt, tmp_path / "eval", backbone=ext)
    det = Detector.from_checkpoint(ckpt, device="cpu", backbone=ext)
    paths = sorted(scores)
    np.testing.assert_allclose(det.score(paths), [scores[p] for p in paths], rtol=1e-5, atol=1e-5)
    with pytest.raises(ClipflowError, match="custom extractor"):
        Detector.from_checkpoint(ckpt, device="cpu")  # nothing to rebuild it from
    with pytest.raises(CheckpointError, match="weights_id 'mean-colour:v2'"):
        Detector.from_checkpoint(ckpt, device="cpu", backbone=MeanColour("v2"))


def test_ready_backbone_must_match_the_checkpoint(bench, tiny_run, tmp_path):
    ckpt = tiny_run / "model.safetensors"
    other = load_backbone(BackboneConfig(name="tiny", pretrained=None, layers=[1]))
    with pytest.raises(CheckpointError, match="layers"):
        Detector.from_checkpoint(ckpt, device="cpu", backbone=other)
    same = load_backbone(BackboneConfig(name="tiny", pretrained=None))
    assert isinstance(
        Detector.from_checkpoint(ckpt, device="cpu", backbone=same).backbone, Backbone
    )

    class Broken(MeanColour):
        def __call__(self, images):
            return torch.zeros(len(images), 5)

    with pytest.raises(BackboneError, match=r"expected \(\d+, 6\)"):
        Detector.from_checkpoint(
            run_train(_settings(bench), tmp_path / "c", backbone=MeanColour()),
            device="cpu",
            backbone=Broken(),
        ).score(sorted(str(p) for p in (bench / "test").rglob("*.png"))[:2])
    with pytest.raises(BackboneError, match="lacks feature_dim"):
        Detector.from_checkpoint(ckpt, device="cpu", backbone=object())


def test_old_checkpoint_without_new_fields_loads(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")
    ckpt = tmp_path / "run" / "model.safetensors"
    meta_path = tmp_path / "run" / "model.json"
    meta = json.loads(meta_path.read_text())
    for key in ("family", "layers", "layer_pool"):
        meta["backbone"].pop(key)
    meta_path.write_text(json.dumps(meta))
    det = Detector.from_checkpoint(ckpt, device="cpu")
    assert det.backbone.cfg.family == "open_clip" and det.backbone.tap is None


@pytest.mark.parametrize(
    "backbone,ok",
    [
        ({"family": "timm", "name": "vit_small_patch14_dinov2.lvd142m"}, True),
        ({"family": "custom", "name": "anything-goes"}, True),
        ({"name": "vit_small_patch14_dinov2.lvd142m"}, False),  # a timm name, family open_clip
        ({"family": "timm", "name": "ViT-Nope"}, False),
        ({"name": "tiny", "layers": [-1]}, False),
        ({"name": "tiny", "layer_pool": "max"}, False),
    ],
)
def test_checkpoint_backbone_record_is_checked_per_family(tiny_run, tmp_path, backbone, ok):
    shutil.copytree(tiny_run, tmp_path / "run")
    ckpt = tmp_path / "run" / "model.safetensors"
    meta_path = tmp_path / "run" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["backbone"].update(backbone)
    meta_path.write_text(json.dumps(meta))
    if ok:
        assert load_checkpoint(ckpt).backbone["name"] == backbone["name"]
    else:
        with pytest.raises(CheckpointError, match="field backbone"):
            load_checkpoint(ckpt)


def test_settings_keys_are_checked():
    base = {"backbone": {"name": "tiny", "pretrained": None}}
    s = train_settings(
        {"backbone": {"family": "timm", "name": "test_vit", "layers": [0, "1"]}}
    ).backbone
    assert (s.family, s.layers, s.layer_pool) == ("timm", [0, 1], "concat")
    for key, value, named in [
        ("family", "keras", "backbone.family"),
        ("layer_pool", "max", "backbone.layer_pool"),
        ("layers", [0, "x"], "backbone.layers"),
        ("name", "not-a-model", "backbone.name"),
    ]:
        with pytest.raises(SettingsError, match=named):
            train_settings({"backbone": {**base["backbone"], key: value}})
    e = eval_settings({"backbone": {"family": "timm", "layers": [3], "layer_pool": None}})
    assert e.backbone == {"family": "timm", "layers": [3]}


def test_family_and_name_must_agree_in_one_line():
    with pytest.raises(BackboneError, match="add backbone.family=timm"):
        load_backbone(BackboneConfig(name="test_vit", pretrained=None))
    with pytest.raises(BackboneError, match="unknown timm model 'ViT-B-16'"):
        load_backbone(BackboneConfig(family="timm", name="ViT-B-16", pretrained=None))


def test_timm_weights_offline_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    cfg = BackboneConfig(family="timm", name="vit_small_patch14_dinov2.lvd142m", pretrained="timm")
    with pytest.raises(BackboneError) as err:
        check_weights_available(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "huggingface-cli download timm/vit_small_patch14_dinov2" in msg
    with pytest.raises(BackboneError, match="timm weights file not found"):
        check_weights_available(replace(cfg, pretrained=str(tmp_path / "nope.safetensors")))


def test_backbones_experiment_runs_tiny_towers_of_each_family(bench, tmp_path):
    assert "backbones" in named_experiments()
    out = tmp_path / "out"
    run_reproduce(
        parse_request(
            [
                "experiment=backbones",
                f"out={out}",
                f"data.train_root={bench / 'train'}",
                f"data.test_root={bench / 'test'}",
                "backbone=tiny",
                "device=cpu",
                "data.num_workers=0",
                "data.per_class=null",
                f"data.cache_dir={bench / 'cache'}",
                "train.epochs=1",
                "flow.n_blocks=2",
                "save_checkpoints=false",
            ]
        )
    )
    with open(out / "backbones" / "backbones.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["arm"], r["family"], r["backbone"]) for r in rows] == [
        ("clip_vit_l14", "open_clip", "clipflow-tiny"),
        ("siglip_b16", "open_clip", "clipflow-tiny-timm"),
        ("dinov2_vits14", "timm", "test_vit"),
    ]
    assert all(0 <= float(r["mAP"]) <= 100 and 0 <= float(r["mAUC"]) <= 100 for r in rows)
    result = json.loads((out / "backbones" / "results.json").read_text())
    assert [r["feature_dim"] for r in result["backbones"]] == [768, 32, 64]
    assert "mean ROC-AUC" in (out / "backbones" / "backbones.md").read_text()


def test_docs_example_runs(tmp_path, monkeypatch):
    """docs/backbones.md's custom extractor example, as printed there."""
    text = (Path(__file__).parents[1] / "docs" / "backbones.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setattr("tempfile.mkdtemp", lambda: str(tmp_path))
    scope: dict = {"__name__": "docs_example"}
    exec(compile(code, "docs/backbones.md", "exec"), scope)
    assert load_checkpoint(scope["ckpt"]).backbone["family"] == "custom"
    assert len(scope["det"].predict(sorted(map(str, (tmp_path / "test").rglob("*.png"))))) == 12


def test_model_card_names_family_and_blocks(tiny_run):
    from clipflow.checkpoints.push import _card_model

    meta = json.loads((tiny_run / "model.json").read_text())
    assert "`open_clip`, tower output" in _card_model(meta)
    meta["backbone"].update(family="timm", layers=[3, 5], layer_pool="mean")
    assert "`timm`, class token of blocks [3, 5] (mean)" in _card_model(meta)
