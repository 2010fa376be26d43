"""Feature cache: hits, key changes, resume after interruption, torchrun sharding."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN
from fixtures_images import write_image

import clipflow.cache as cache_mod
from clipflow.backbone import BackboneConfig, load_backbone
from clipflow.cache import FeatureCache, cached_extract
from clipflow.features import IDENTITY, Variant
from clipflow.preprocess import build_transform
from clipflow.proxy import ProxyConfig, build_proxy


class CountingBackbone(torch.nn.Module):
    """Wraps the tiny backbone and counts the images it sees."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, 0
        self.feature_dim, self.cfg = inner.feature_dim, inner.cfg
        self.image_size, self.mean, self.std = inner.image_size, inner.mean, inner.std

    def forward(self, x):
        self.seen += len(x)
        return self.inner(x)

    def describe(self):
        return self.inner.describe()


@pytest.fixture()
def setup(tmp_path: Path):
    bb = CountingBackbone(load_backbone(BackboneConfig(name="tiny", pretrained=None)))
    paths = [write_image(tmp_path / "img" / f"{i}.png", size=(48, 64), seed=i) for i in range(5)]
    proxy = Variant("proxy:low0.1", build_proxy(ProxyConfig(), 0.1))
    return bb, paths, proxy, FeatureCache(tmp_path / "cache", shard_size=2)


def test_second_run_reads_the_cache(setup):
    bb, paths, proxy, cache = setup
    tf = build_transform(bb, train=True)
    first = cached_extract(bb, paths, tf, [IDENTITY, proxy], cache, seed=1)
    assert bb.seen == 10
    again = cached_extract(bb, paths, tf, [IDENTITY, proxy], cache, seed=1)
    assert bb.seen == 10  # no backbone call
    assert torch.equal(first.features, again.features) and first.paths == again.paths
    only_proxy = cached_extract(bb, paths, tf, [proxy], cache, seed=1)
    assert bb.seen == 10 and torch.equal(only_proxy.features[0], first.features[1])


@pytest.mark.parametrize("change", ["seed", "view", "variant", "transform", "mtime", "files"])
def test_any_change_of_the_key_recomputes(setup, change):
    bb, paths, proxy, cache = setup
    tf = build_transform(bb, train=True)
    cached_extract(bb, paths, tf, [proxy], cache, seed=1)
    seen = bb.seen
    kwargs = dict(seed=1, view=0)
    variants, files = [proxy], list(paths)
    if change == "seed":
        kwargs["seed"] = 2
    elif change == "view":
        kwargs["view"] = 1
    elif change == "variant":
        variants = [Variant("proxy:low1.0", build_proxy(ProxyConfig(ratio=1.0), 0.1))]
    elif change == "transform":
        tf = build_transform(bb, train=False)
    elif change == "mtime":
        os.utime(paths[0], (time.time() + 100, time.time() + 100))
    elif change == "files":
        files = files[:-1]
    cached_extract(bb, files, tf, variants, cache, **kwargs)
    assert bb.seen == seen + len(files)


def test_interrupted_extraction_resumes_from_complete_shards(setup, monkeypatch):
    bb, paths, proxy, cache = setup
    tf = build_transform(bb)
    reference = cached_extract(bb, paths, tf, [IDENTITY], None)
    real_stream = cache_mod.iter_feature_batches

    def interrupted_stream(*args, **kwargs):
        for n, batch in enumerate(real_stream(*args, **kwargs)):
            if n == 3:  # shard 1 (images 0-1) is on disk, shard 2 half done
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(cache_mod, "iter_feature_batches", interrupted_stream)
    with pytest.raises(KeyboardInterrupt):
        cached_extract(bb, paths, tf, [IDENTITY], cache, batch_size=1)
    monkeypatch.setattr(cache_mod, "iter_feature_batches", real_stream)
    bb.seen = 0
    resumed = cached_extract(bb, paths, tf, [IDENTITY], cache, batch_size=1)
    assert bb.seen == 3  # shards 2 and 3 only (2 + 1 images); shard 1 came from disk
    assert torch.allclose(resumed.features, reference.features, atol=1e-6)
    assert not list(Path(cache.root).rglob("*.tmp"))


def test_bad_files_are_cached_as_skipped(setup):
    bb, paths, _, cache = setup
    bad = paths[0].parent / "bad.png"
    bad.write_bytes(b"not an image")
    fs = cached_extract(bb, [*paths, bad], build_transform(bb), [IDENTITY], cache)
    again = cached_extract(bb, [*paths, bad], build_transform(bb), [IDENTITY], cache)
    assert [p for p, _ in again.skipped] == [str(bad)] and again.paths == fs.paths == [
        str(p) for p in paths
    ]


def test_torchrun_two_ranks_give_the_same_features_as_one(tmp_path: Path, mini_bench: Path):
    def extract(cache_dir: Path, launcher: list[str]):
        cmd = [
            *launcher,
            str(BIN / "clipflow-extract"),
            f"data.train_root={mini_bench / 'train'}",
            "backbone=tiny",
            "device=cpu",
            "data.num_workers=0",
            "data.cache_shard_size=3",
            "stages=[train]",
            f"data.cache_dir={cache_dir}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    extract(tmp_path / "one", [])
    extract(tmp_path / "two", [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2"])
    one, two = FeatureCache(tmp_path / "one"), FeatureCache(tmp_path / "two")
    keys = sorted(p.name for p in one.root.iterdir())
    assert keys == sorted(p.name for p in two.root.iterdir()) and keys
    for key in keys:
        assert one.complete(key) and two.complete(key)
        f1, k1, _ = one.read(key, [])
        f2, k2, _ = two.read(key, [])
        assert k1 == k2 and torch.allclose(f1, f2, atol=1e-5)
