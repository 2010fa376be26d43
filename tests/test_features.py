"""Extraction skips and lists bad files, and its randomness does not depend on batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures_images import make_hostile_files, write_image

from clipflow.backbone import BackboneConfig, load_backbone
from clipflow.features import extract_features
from clipflow.imageio import list_images
from clipflow.preprocess import build_transform
from clipflow.proxy import ProxyConfig, build_proxy


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(BackboneConfig(name="tiny", pretrained=None))


def test_hostile_corpus_is_scored_or_skipped_with_reasons(tiny, tmp_path: Path):
    make_hostile_files(tmp_path)
    paths = list_images(tmp_path)
    fs = extract_features(tiny, paths, build_transform(tiny), batch_size=4)
    assert len(fs.paths) + len(fs.skipped) == len(paths)
    skipped = {Path(p).name: reason for p, reason in fs.skipped}
    assert skipped and all(reason for reason in skipped.values())
    assert fs.features.shape == (1, len(fs.paths), tiny.feature_dim)
    assert torch.isfinite(fs.features).all()
    assert not any(
        "1x1" in n or n.upper().endswith("X.PNG") for n in skipped
    )  # odd but valid files are scored


def test_train_augmentation_is_independent_of_batch_size(tiny, tmp_path: Path):
    paths = [write_image(tmp_path / f"{i}.png", size=(40 + i, 300), seed=i) for i in range(5)]
    proxy = build_proxy(ProxyConfig(), default_ratio=0.1)
    tf = build_transform(tiny, train=True)
    a = extract_features(tiny, paths, tf, [None, proxy], batch_size=1, seed=3)
    b = extract_features(tiny, paths, tf, [None, proxy], batch_size=5, seed=3)
    c = extract_features(tiny, paths, tf, [None, proxy], batch_size=5, seed=4)
    assert a.features.shape == (2, 5, tiny.feature_dim)
    assert torch.allclose(a.features, b.features, atol=1e-5)
    assert not torch.allclose(a.features[1], c.features[1], atol=1e-5)  # fresh masks per seed
    assert not torch.allclose(
        a.features[0], a.features[1], atol=1e-5
    )  # proxies differ from naturals
