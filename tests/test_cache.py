"""Feature cache: hits, key changes, incremental fills, damage, resume, umask, torchrun."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import BIN
from fixtures_images import write_image
from safetensors import safe_open
from safetensors.torch import save_file

import clipflow.features.cache as cache_mod
import clipflow.features.cached_extract as cached_mod
import clipflow.runs.extract as extract_job
from clipflow.backbones.backbone import load_backbone
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform
from clipflow.cli import extract as extract_cli
from clipflow.core.fileio import atomic_write_text
from clipflow.errors import DataError
from clipflow.features.cache import FeatureCache, feature_cache
from clipflow.features.cached_extract import cached_extract
from clipflow.features.loader import Loader
from clipflow.features.packs import PACK_FORMAT
from clipflow.settings.config import train_settings
from clipflow.transforms.config import ProxyConfig
from clipflow.transforms.proxy import build_proxy
from clipflow.transforms.variant import IDENTITY, Variant


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
    proxy = Variant("proxy:low0.1", build_proxy(ProxyConfig(), "N+P"))
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
        variants = [Variant("proxy:low1.0", build_proxy(ProxyConfig(ratio=1.0), "N+P"))]
    elif change == "transform":
        tf = build_transform(bb, train=False)
    elif change == "mtime":
        os.utime(paths[0], (time.time() + 100, time.time() + 100))
    elif change == "files":
        files = files[:-1]
    cached_extract(bb, files, tf, variants, cache, **kwargs)
    # Entries are per file: a touched file or a subset of cached files costs only what changed.
    expected = {"mtime": 1, "files": 0}.get(change, len(files))
    assert bb.seen == seen + expected


def test_interrupted_extraction_resumes_from_complete_shards(setup, monkeypatch):
    bb, paths, proxy, cache = setup
    tf = build_transform(bb)
    reference = cached_extract(bb, paths, tf, [IDENTITY], None)
    real_stream = cached_mod.iter_feature_batches

    def interrupted_stream(*args, **kwargs):
        for n, batch in enumerate(real_stream(*args, **kwargs)):
            if n == 3:  # shard 1 (images 0-1) is on disk, shard 2 half done
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(cached_mod, "iter_feature_batches", interrupted_stream)
    with pytest.raises(KeyboardInterrupt):
        cached_extract(bb, paths, tf, [IDENTITY], cache, loader=Loader(batch_size=1))
    monkeypatch.setattr(cached_mod, "iter_feature_batches", real_stream)
    bb.seen = 0
    resumed = cached_extract(bb, paths, tf, [IDENTITY], cache, loader=Loader(batch_size=1))
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


@pytest.mark.slow  # two real torchrun processes: ~25 s of interpreter and torch starts
def test_torchrun_two_ranks_give_the_same_features_as_one(
    tmp_path: Path, mini_bench: Path, call_main
):
    def args(cache_dir: Path) -> list[str]:
        return [
            f"data.train_root={mini_bench / 'train'}",
            "backbone=tiny",
            "device=cpu",
            "data.num_workers=0",
            "data.cache_shard_size=3",
            "stages=[train]",
            f"data.cache_dir={cache_dir}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]

    # One rank in-process (the reference); the two ranks need real processes.
    code, _, err = call_main(extract_cli.main, "clipflow-extract", *args(tmp_path / "one"))
    assert code == 0, err[-3000:]
    # torch.distributed.run is what the torchrun console script calls.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*torchrun, str(BIN / "clipflow-extract"), *args(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = FeatureCache(tmp_path / "one"), FeatureCache(tmp_path / "two")
    keys = sorted(p.name for p in one.root.iterdir())
    assert keys == sorted(p.name for p in two.root.iterdir()) and keys
    for key in keys:
        a, b = one.read(key), two.read(key)
        fks = sorted(a.where)
        assert fks and fks == sorted(b.where) and a.skipped == b.skipped
        dim = a.blocks[0].shape[1]
        fa, fb = (kn.gather(fks, torch.empty(len(fks), dim)) for kn in (a, b))
        assert torch.allclose(fa, fb, atol=1e-5)


def _packs(cache: FeatureCache) -> list[Path]:
    return sorted(Path(cache.root).rglob("pack-*.safetensors"))


def _pack_rows(path: Path) -> int:
    with safe_open(str(path), framework="pt") as fh:
        return fh.get_slice("features").get_shape()[0]


def test_adding_a_file_extracts_only_that_file(setup):
    bb, paths, _, cache = setup
    tf = build_transform(bb)
    cached_extract(bb, paths, tf, [IDENTITY], cache)
    assert bb.seen == 5
    new = write_image(paths[0].parent / "new.png", size=(48, 64), seed=99)
    grown = sorted([*paths, new])  # discovery order: the new file lands mid-list
    fs = cached_extract(bb, grown, tf, [IDENTITY], cache)
    assert bb.seen == 6  # one image, not the folder
    fresh = cached_extract(bb, grown, tf, [IDENTITY], None)
    assert fs.paths == fresh.paths and torch.allclose(fs.features, fresh.features, atol=1e-6)


def _damage(pack: Path, how: str) -> None:
    """Break one pack the way disks, copies and people do."""
    if how == "truncated":
        pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    elif how == "deleted":
        pack.unlink()
    elif how == "garbage":
        pack.write_bytes(os.urandom(pack.stat().st_size))
    elif how == "flipped":  # same size, header intact, one feature value changed
        data = bytearray(pack.read_bytes())
        data[-3] ^= 0xFF
        pack.write_bytes(bytes(data))
    else:  # a well-formed file with the wrong payload
        with safe_open(str(pack), framework="pt") as fh:
            meta, feats = fh.metadata(), fh.get_tensor("features")
        bad = {"nan": feats.clone().fill_(float("nan")), "float64": feats.double()}
        feats = bad.get(how, feats[:, :-1])  # "shape": one feature column short
        save_file({"features": feats.contiguous()}, str(pack), metadata=meta)


@pytest.mark.parametrize(
    "how", ["truncated", "deleted", "garbage", "flipped", "nan", "float64", "shape"]
)
def test_a_damaged_pack_is_extracted_again_alone(setup, how, caplog):
    bb, paths, _, cache = setup
    tf = build_transform(bb)
    reference = cached_extract(bb, paths, tf, [IDENTITY], cache)
    packs = _packs(cache)
    assert [_pack_rows(p) for p in packs].count(2) == 2  # 5 files, shard_size=2: 2 + 2 + 1
    victim = next(p for p in packs if _pack_rows(p) == 2)
    _damage(victim, how)
    bb.seen = 0
    with caplog.at_level(logging.WARNING, logger="clipflow.features.cache"):
        again = cached_extract(bb, paths, tf, [IDENTITY], cache)
    assert bb.seen == 2  # the damaged pack's two files, nothing else
    assert again.paths == reference.paths
    assert torch.allclose(again.features, reference.features, atol=1e-6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if how != "deleted":  # a deleted pack is simply a miss
        assert len(warnings) == 1 and "damaged" in warnings[0] and "\n" not in warnings[0]
    bb.seen = 0
    cached_extract(bb, paths, tf, [IDENTITY], cache)
    assert bb.seen == 0  # the re-extracted pack replaced the damaged one


def test_a_file_typed_cache_dir_runs_uncached(setup, tmp_path, caplog):
    bb, paths, _, _ = setup
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    cache = FeatureCache(blocker / "features")
    tf = build_transform(bb)
    with caplog.at_level(logging.WARNING, logger="clipflow.features.cache"):
        fs = cached_extract(bb, paths, tf, [IDENTITY], cache)
    assert cache.read_only and "not writable" in caplog.text
    fresh = cached_extract(bb, paths, tf, [IDENTITY], None)
    assert fs.paths == fresh.paths and torch.allclose(fs.features, fresh.features, atol=1e-6)
    assert blocker.read_text().startswith("a file")


def test_pipeline_checks_the_cache_dir_before_extracting(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    data = SimpleNamespace(cache=True, cache_dir=tmp_path / "file", cache_shard_size=8)
    cache = feature_cache(data)
    assert cache is not None and cache.read_only  # probed up front, not at the first write
    # clipflow-extract's whole job is filling the cache: it stops before loading the backbone.
    monkeypatch.setattr(extract_job, "load_backbone", lambda *a: pytest.fail("backbone loaded"))
    s = train_settings(
        {
            "device": "cpu",
            "backbone": {"name": "tiny", "pretrained": None},
            "data": {"train_root": str(tmp_path), "cache_dir": str(tmp_path / "file")},
        }
    )
    with pytest.raises(DataError, match="cannot write the feature cache"):
        extract_job.run_extract(s, ["train"], tmp_path / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_a_read_only_cache_serves_hits_and_extracts_misses(setup, caplog):
    bb, paths, _, cache = setup
    tf = build_transform(bb)
    cached_extract(bb, paths[:4], tf, [IDENTITY], cache)
    for folder in [cache.root, *cache.root.iterdir()]:
        folder.chmod(0o555)
    try:
        bb.seen = 0
        readonly = FeatureCache(cache.root, shard_size=2)
        with caplog.at_level(logging.WARNING, logger="clipflow.features.cache"):
            fs = cached_extract(bb, paths, tf, [IDENTITY], readonly)
        assert bb.seen == 1 and readonly.read_only and "not writable" in caplog.text
        assert fs.paths == [str(p) for p in paths]
    finally:
        for folder in [cache.root, *cache.root.iterdir()]:
            folder.chmod(0o755)


def test_a_replaced_file_with_restored_mtime_is_extracted_again(setup):
    bb, paths, _, cache = setup
    # BMP: the same size for the same dimensions, so only the content differs.
    target = write_image(paths[0].parent / "swap.bmp", size=(48, 64), seed=1)
    tf = build_transform(bb)
    first = cached_extract(bb, [target], tf, [IDENTITY], cache)
    st = target.stat()
    time.sleep(0.05)  # ctime has a coarse clock
    write_image(target, size=(48, 64), seed=2)  # rewritten in place: same inode
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    bb.seen = 0
    again = cached_extract(bb, [target], tf, [IDENTITY], cache)
    fresh = cached_extract(bb, [target], tf, [IDENTITY], None)
    assert bb.seen == 2  # re-extracted (then the uncached reference)
    assert torch.allclose(again.features, fresh.features, atol=1e-6)
    assert not torch.allclose(again.features, first.features, atol=1e-3)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "out.json", "{}")
        FeatureCache(tmp_path / "cache").write_pack("k", ["a"], torch.zeros(1, 4), {})
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == mode
    (pack,) = (tmp_path / "cache" / "k").iterdir()
    assert pack.stat().st_mode & 0o777 == mode


def test_a_failing_write_mid_run_warns_once_and_keeps_the_features(setup, monkeypatch, caplog):
    bb, paths, _, cache = setup
    tf = build_transform(bb)

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod, "atomic_write_bytes", disk_full)
    with caplog.at_level(logging.WARNING, logger="clipflow.features.cache"):
        fs = cached_extract(bb, paths, tf, [IDENTITY], cache)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    fresh = cached_extract(bb, paths, tf, [IDENTITY], None)
    assert fs.paths == fresh.paths and torch.allclose(fs.features, fresh.features, atol=1e-6)
    assert not _packs(cache)


def test_file_keys_take_any_name_and_follow_the_file(tmp_path):
    odd = tmp_path / os.fsdecode(b"caf\xe9-latin1.png")  # not valid UTF-8
    odd.write_bytes(b"x")
    key = cache_mod.file_key(str(odd))
    assert key != cache_mod.file_key(str(tmp_path / "other.png"))
    assert cache_mod.file_key(str(tmp_path / "gone.png")) != cache_mod.file_key(str(odd))
    st = odd.stat()
    odd.unlink()
    time.sleep(0.05)  # the inode number may be reused; ctime (coarse clock) then differs
    odd.write_bytes(b"y")  # same size
    os.utime(odd, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache_mod.file_key(str(odd)) != key


def test_an_unwritable_cache_serves_hits_extracts_misses_and_writes_nothing(setup):
    """The read-only case as root sees it: check() found the folder unwritable."""
    bb, paths, _, cache = setup
    tf = build_transform(bb)
    cached_extract(bb, paths[:4], tf, [IDENTITY], cache)
    before = _packs(cache)
    bb.seen = 0
    cache.read_only = True
    fs = cached_extract(bb, paths, tf, [IDENTITY], cache)
    assert bb.seen == 1 and _packs(cache) == before
    fresh = cached_extract(bb, paths, tf, [IDENTITY], None)
    assert fs.paths == fresh.paths and torch.allclose(fs.features, fresh.features, atol=1e-6)


def test_a_pack_copied_from_another_settings_folder_is_extracted_again(setup, caplog):
    """A pack copied from the ``preprocess=paper`` folder into the ``univfd`` one: its
    features are the paper crop's, so it is refused like a damaged pack, not served."""
    bb, paths, _, cache = setup
    paper, univfd = build_transform(bb, "paper"), build_transform(bb, "univfd")
    cached_extract(bb, paths, paper, [IDENTITY], cache)
    max_pixels = Loader().max_pixels
    paper_key, univfd_key = (
        cache.setting_key(bb, tf, IDENTITY, 0, 0, max_pixels) for tf in (paper, univfd)
    )
    assert paper_key != univfd_key
    (cache.root / univfd_key).mkdir()
    for pack in (cache.root / paper_key).iterdir():
        (cache.root / univfd_key / pack.name).write_bytes(pack.read_bytes())
    bb.seen = 0
    with caplog.at_level(logging.WARNING, logger="clipflow.features.cache"):
        got = cached_extract(bb, paths, univfd, [IDENTITY], cache)
    assert bb.seen == 5  # every file extracted under its own setting
    fresh = cached_extract(bb, paths, univfd, [IDENTITY], None)
    assert torch.allclose(got.features, fresh.features, atol=1e-6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # one per copied pack (5 files, shard_size=2)
    assert all("another folder" in w and paper_key in w and "\n" not in w for w in warnings)
    bb.seen = 0
    cached_extract(bb, paths, univfd, [IDENTITY], cache)
    assert bb.seen == 0  # the copies were replaced by packs of the right setting


def test_packs_of_the_old_format_are_extracted_again_with_one_warning(setup, caplog):
    """Format-2 packs do not record their setting, so a copied one cannot be told from a
    genuine one: they are all removed and extracted again, reported in one line per folder."""
    bb, paths, _, cache = setup
    tf = build_transform(bb)
    reference = cached_extract(bb, paths, tf, [IDENTITY], cache)
    for pack in _packs(cache):  # rewritten as the previous version wrote them
        with safe_open(str(pack), framework="pt") as fh:
            meta, feats = fh.metadata(), fh.get_tensor("features")
        del meta["setting"]
        meta["format"] = "clipflow-feature-pack-2"
        save_file({"features": feats}, str(pack), metadata=meta)
    bb.seen = 0
    with caplog.at_level(logging.WARNING, logger="clipflow.features.cache"):
        again = cached_extract(bb, paths, tf, [IDENTITY], cache)
    assert bb.seen == 5 and torch.allclose(again.features, reference.features, atol=1e-6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 pack(s) of an older format" in warnings[0]
    formats = set()
    for pack in _packs(cache):
        with safe_open(str(pack), framework="pt") as fh:
            formats.add(fh.metadata()["format"])
    assert formats == {PACK_FORMAT}  # the old packs are gone


def test_extract_stops_with_an_error_when_the_cache_fills_mid_run(
    tmp_path: Path, mini_bench: Path, call_main, monkeypatch
):
    """clipflow-extract printed "features cached ... N images" and exited 0 when the disk
    filled after a few packs; now it stops, says what it stored, and exits 2."""
    real_write = cache_mod.atomic_write_bytes
    calls = []

    def fills_after_two(path, data):
        calls.append(path)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(cache_mod, "atomic_write_bytes", fills_after_two)
    code, out, err = call_main(
        extract_cli.main,
        "clipflow-extract",
        f"data.train_root={mini_bench / 'train'}",
        "backbone=tiny",
        "device=cpu",
        "data.num_workers=0",
        "data.cache_shard_size=3",
        "stages=[train,val]",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert code == 2 and "features cached" not in out
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: cannot write ") and "Traceback" not in err
    assert "No space left on device" in line and "free space on the disk" in line
    # what was stored: the two packs that were written, and no stage complete
    stored = sum(_pack_rows(p) for p in sorted((tmp_path / "cache").rglob("pack-*")))
    assert f"stored {stored} feature entries in 2 pack(s)" in line and stored > 0
    assert "stages complete: none" in line and "resumes" in line
    assert len(calls) == 3  # it stopped at the first failed pack, not extracting on
    assert not (tmp_path / "run" / "extract.json").exists()
