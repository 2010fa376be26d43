"""Streaming training features from the cache's packs within a RAM budget; CPU thread policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipflow.features.cache import FeatureCache, file_key
from clipflow.features.stream import (
    BUFFER_COPIES,
    KeyIndex,
    TensorRows,
    buffer_rows,
    epoch_buffers,
    locate,
)
from clipflow.flow.config import FlowConfig, TrainConfig
from clipflow.flow.fit import fit, train_threads
from clipflow.flow.model import CLIPFlow

DIM = 16


def _model() -> CLIPFlow:
    torch.manual_seed(0)
    return CLIPFlow(DIM, FlowConfig(dr_dim=8, n_blocks=2))


def _features(n: int, views: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(views, n, DIM, generator=torch.Generator().manual_seed(seed))


class CountingRows(TensorRows):
    """A TensorRows that records the most rows handed out at once and every position read."""

    def __init__(self, features):
        super().__init__(features)
        self.most, self.seen = 0, []

    def read(self, view, positions):
        self.most = max(self.most, len(positions))
        self.seen.append(positions)
        return super().read(view, positions)


def test_streaming_in_one_buffer_is_the_in_ram_training():
    nat, prox = _features(300), _features(300, seed=1)
    cfg = TrainConfig(mode="N+P", epochs=3, batch_size=32)
    ram, streamed = _model(), _model()
    h_ram = fit(ram, nat, prox, cfg)
    h_stream = fit(streamed, TensorRows(nat), TensorRows(prox), cfg)  # default budget: 1 buffer
    assert _untimed(h_ram) == _untimed(h_stream)
    for a, b in zip(ram.state_dict().values(), streamed.state_dict().values()):
        assert torch.equal(a, b)


def test_a_small_budget_streams_every_row_once_per_epoch_within_the_budget():
    n, batch = 1000, 32
    nat, prox = CountingRows(_features(n)), CountingRows(_features(n, seed=1))
    budget_gb = 200 * 2 * DIM * 4 * BUFFER_COPIES / 2**30  # room for ~200 rows per variant
    cfg = TrainConfig(mode="N+P", epochs=2, batch_size=batch, ram_budget_gb=budget_gb)
    history = fit(_model(), nat, prox, cfg)
    rows = buffer_rows(int(budget_gb * 2**30), 2, DIM, batch)
    assert rows == 192 and nat.most <= rows and prox.most <= rows  # rows held, per variant
    assert rows * 2 * DIM * 4 * BUFFER_COPIES <= budget_gb * 2**30
    per_epoch = len(nat.seen) // 2
    assert per_epoch > 1  # streamed through several buffers
    for e in range(2):
        got = torch.cat(nat.seen[e * per_epoch : (e + 1) * per_epoch]).sort().values
        assert torch.equal(got, torch.arange(n))  # each row exactly once per epoch
    assert [p.tolist() for p in nat.seen] == [p.tolist() for p in prox.seen]  # pairs stay paired
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]


def test_epoch_buffers_mix_segments_and_keep_the_generator_when_one_buffer():
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert [b.tolist() for b in epoch_buffers(10, 10, gen)] == [list(range(10))]
    assert torch.equal(gen.get_state(), state)  # the in-RAM path's randperm comes next
    bufs = list(epoch_buffers(1000, 300, gen, segment=100))
    assert [len(b) for b in bufs] == [300, 300, 300, 100]
    assert torch.equal(torch.cat(bufs).sort().values, torch.arange(1000))
    assert bufs[0].tolist() != list(range(300))  # segments shuffled


def test_streaming_from_packs_reads_the_cached_rows(tmp_path):
    """locate() maps files to pack rows (skips and missing files reported); a streamed fit on
    them equals the in-RAM fit on the same features."""
    cache = FeatureCache(tmp_path / "cache", shard_size=40)
    files = [tmp_path / f"{i}.jpg" for i in range(100)]
    for f in files:
        f.write_bytes(b"x")
    fkeys = [file_key(str(f)) for f in files]
    feats = _features(100, views=1)[0]
    # Two packs out of file order, one skip record; file 99 is in no pack.
    cache.write_pack("k", fkeys[50:99], feats[50:99], {fkeys[0]: "unreadable"})
    cache.write_pack("k", fkeys[1:50], feats[1:50], {})
    found = locate(cache, [["k"]], fkeys, DIM)
    assert list(found.kept) == list(range(1, 99))
    assert found.skipped == {0: "unreadable"} and list(found.missing) == [99]
    src = found.features[0]
    assert src.shape == (1, 98, DIM)
    assert torch.equal(src.read(0, torch.arange(98)), feats[1:99])
    cfg = TrainConfig(mode="N", epochs=2, batch_size=16)
    a, b = _model(), _model()
    assert _untimed(fit(a, feats[None, 1:99], None, cfg)) == _untimed(fit(b, src, None, cfg))


def _reference_locate(cache, keys, fkeys):
    """The dict-per-file locate() this index replaced: kept, skipped, missing and, per
    variant and view, the (pack path, row) of each kept file."""
    position = {}
    for i, fk in enumerate(fkeys):
        position.setdefault(fk, i)
    where, skipped = {}, {}
    for v, view_keys in enumerate(keys):
        for k, key in enumerate(view_keys):
            for pack in cache.iter_packs(key):
                for fk, reason in pack.skipped.items():
                    if fk in position:
                        skipped.setdefault(position[fk], reason)
                for r, fk in enumerate(pack.rows):
                    if fk in position:
                        where.setdefault((k, v, position[fk]), (pack.path, r))
    held = [
        i
        for i in sorted(set(position.values()))
        if all((k, v, i) in where for v in range(len(keys)) for k in range(len(keys[0])))
    ]
    kept = [i for i in held if i not in skipped]
    missing = [i for i in sorted(set(position.values())) if i not in held and i not in skipped]
    return kept, skipped, missing, where


def test_locate_matches_a_per_file_dict_on_shuffled_packs_repeats_and_skips(tmp_path):
    """Files in packs out of list order, in two packs at once, listed twice, skipped, missing,
    under 2 views × 2 variants: the same kept/skipped/missing and rows as a dict per file."""
    rng = np.random.default_rng(0)
    n = 300
    fkeys = [f"{i:032x}" for i in range(n)] + [f"{i:032x}" for i in (5, 77, 299)]  # repeats
    cache = FeatureCache(tmp_path / "cache")
    for key in ("a0", "a1", "b0", "b1"):
        have = rng.permutation(n)[: n - 7]  # 7 files this key lacks
        for chunk in np.array_split(have, 5):
            names = [fkeys[i] for i in chunk]
            skips = {fkeys[int(rng.integers(n))]: "bad"} if key == "b1" else {}
            skips = {k: r for k, r in skips.items() if k not in names}
            feats = torch.randn(
                len(names), DIM, generator=torch.Generator().manual_seed(int(chunk[0]))
            )
            cache.write_pack(key, names, feats, skips)
        again = [fkeys[i] for i in have[:20]]  # also in a later pack: must not win
        cache.write_pack(key, again, torch.full((20, DIM), 9.0), {})
    keys = [["a0", "b0"], ["a1", "b1"]]  # [view][variant]
    found = locate(cache, keys, fkeys, DIM)
    kept, skipped, missing, where = _reference_locate(cache, keys, fkeys)
    assert list(found.kept) == kept and found.skipped == skipped and list(found.missing) == missing
    assert all(type(i) is int for i in [*found.kept, *found.skipped, *found.missing])
    assert found.features[0].read(0, torch.zeros(0, dtype=torch.long)).shape == (0, DIM)
    with pytest.raises(IndexError, match="positions outside"):
        found.features[0].read(0, torch.tensor([len(kept)]))
    assert 250 < len(kept) < n and missing and skipped
    from safetensors.torch import load_file

    packs = {path: load_file(str(path))["features"] for path, _ in where.values()}
    overlap = 0
    for k in range(2):
        for v in range(2):
            want = torch.stack([packs[where[(k, v, i)][0]][where[(k, v, i)][1]] for i in kept])
            overlap += int((want == 9.0).all(1).sum())  # rows from the packs written last
            assert torch.equal(found.features[k].read(v, torch.arange(len(kept))), want)
            shuffled = torch.randperm(len(kept), generator=torch.Generator().manual_seed(v))
            assert torch.equal(found.features[k].read(v, shuffled), want[shuffled])
    assert overlap > 0  # some file in two packs was served from the one that sorts first


class _Colliding(str):
    """A file key whose hash collides with every other's."""

    def __hash__(self):
        return 7


def test_key_index_confirms_hash_matches_by_the_key_itself():
    keys = [_Colliding(k) for k in ("b", "a", "c", "a", "b")]
    index = KeyIndex(keys)
    assert index.find([_Colliding(k) for k in ("a", "b", "c", "z")]).tolist() == [1, 0, 2, -1]
    assert sorted(index.repeats().tolist()) == [3, 4]  # second "a", second "b"
    assert KeyIndex([]).find(["a"]).tolist() == [-1]


def _index_footprint(obj, seen=None) -> tuple[int, int]:
    """(Python objects, bytes of numpy arrays and tensors) reachable from ``obj``."""
    import gc

    seen = set() if seen is None else seen
    objects, nbytes = 0, 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type):  # not into classes and their modules
            continue
        seen.add(id(o))
        objects += 1
        if isinstance(o, (np.ndarray, torch.Tensor)):
            nbytes += o.nbytes
            continue
        stack.extend(gc.get_referents(o))
    return objects, nbytes


def test_the_streaming_index_does_not_grow_with_the_rows(tmp_path):
    """One pack of 100 rows vs one of 2,000: the located index (what training holds besides
    the buffer) has the same Python objects and numpy bytes: O(packs), not O(files)."""
    footprints = []
    for n in (100, 2000):
        cache = FeatureCache(tmp_path / f"c{n}", shard_size=n)
        fkeys = [f"{i:032x}" for i in range(n)]
        cache.write_pack("k", fkeys, torch.randn(n, DIM), {})
        found = locate(cache, [["k"], ["k"]], fkeys, DIM)
        assert len(found.kept) == n and found.features.shape == (1, 2, n, DIM)
        footprints.append(_index_footprint((found.features, found.kept, found.missing)))
    assert footprints[0] == footprints[1]
    assert footprints[0][1] < 200  # a handful of runs, not 8 bytes per row


def test_cpu_thread_policy_is_scoped():
    before = torch.get_num_threads()
    seen = []
    with train_threads("cpu", 1):
        seen.append(torch.get_num_threads())
    assert seen == [1] and torch.get_num_threads() == before
    try:
        torch.set_num_threads(2)
        cfg = TrainConfig(mode="N", epochs=1, batch_size=16)
        fit(
            _model(),
            _features(32),
            None,
            cfg,
            on_epoch=lambda *_: seen.append(torch.get_num_threads()),
        )
        assert seen[-1] == 1 and torch.get_num_threads() == 2  # 1 inside, restored after
    finally:
        torch.set_num_threads(before)


def test_train_features_past_the_budget_stay_in_the_packs(tmp_path):
    """Same files, same rows as the in-RAM path; then fit trains on them through buffers."""
    from fixtures_images import write_image

    from clipflow.backbones.backbone import load_backbone
    from clipflow.backbones.config import BackboneConfig
    from clipflow.features.stream import PackFeatures
    from clipflow.runs.train_data import train_features
    from clipflow.settings.config import DataConfig, TrainSettings

    tiny = load_backbone(BackboneConfig(name="tiny", pretrained=None))
    paths = [write_image(tmp_path / "img" / f"{i}.png", size=(40, 40), seed=i) for i in range(6)]
    (tmp_path / "img" / "bad.png").write_bytes(b"not an image")
    paths.append(tmp_path / "img" / "bad.png")
    data = DataConfig(views=2, num_workers=0, cache_dir=str(tmp_path / "cache"))
    cache = FeatureCache(data.cache_dir, shard_size=4)

    def settings(budget):
        train = TrainConfig(mode="N+P", epochs=2, batch_size=2, ram_budget_gb=budget)
        s = TrainSettings(data=data, train=train)
        s.backbone = BackboneConfig(name="tiny", pretrained=None)
        return s

    streamed = train_features(settings(1e-7), tiny, paths, cache, "cpu")  # extracts, streams
    in_ram = train_features(settings(None), tiny, paths, cache, "cpu")  # from the cache
    assert isinstance(streamed.features, PackFeatures)
    assert isinstance(in_ram.features, torch.Tensor)
    assert streamed.paths == in_ram.paths and len(streamed.paths) == 6
    assert [p for p, _ in streamed.skipped] == [p for p, _ in in_ram.skipped] == [str(paths[-1])]
    assert streamed.features.shape == in_ram.features.shape  # (K=2, V=2, N=6, D)
    for k in range(2):
        for v in range(2):
            got = streamed.features[k].read(v, torch.arange(6))
            assert torch.equal(got, in_ram.features[k, v])
    history = fit(
        _model_for(tiny.feature_dim), streamed.natural, streamed.proxy, settings(1e-7).train
    )
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)


def _model_for(dim: int) -> CLIPFlow:
    torch.manual_seed(0)
    return CLIPFlow(dim, FlowConfig(dr_dim=8, n_blocks=2))


def test_ram_budget_setting_is_typed_and_range_checked():
    from clipflow.settings.config import SettingsError, train_settings

    assert train_settings({"train": {"ram_budget_gb": "2"}}).train.ram_budget_gb == 2.0
    assert train_settings({}).train.ram_budget_gb is None  # half the machine's memory
    for bad in (0, -1, "lots"):
        with pytest.raises(SettingsError, match="ram_budget_gb"):
            train_settings({"train": {"ram_budget_gb": bad}})


def _untimed(history: list[dict]) -> list[dict]:
    """History rows without their wall-clock ``seconds`` (the only field that may differ)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]
