"""Extraction skips and lists bad files, and its randomness does not depend on batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures_images import make_hostile_files, make_train_tree, write_image

from clipflow.backbones.backbone import load_backbone
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.preprocess import build_transform
from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.data.imageio import list_images, load_image
from clipflow.errors import ClipflowError
from clipflow.features.decode import pil_to_uint8_tensor
from clipflow.features.extract import ImageFileDataset, extract_features
from clipflow.features.loader import Loader
from clipflow.flow.config import TrainConfig
from clipflow.flow.fit import _view
from clipflow.runs.train import run_train
from clipflow.runs.train_data import augmentation, n_views, proxy_variant, train_features
from clipflow.settings.config import DataConfig, TrainSettings, train_settings
from clipflow.transforms.config import ProxyConfig
from clipflow.transforms.proxy import build_proxy
from clipflow.transforms.variant import IDENTITY, Variant


@pytest.fixture(scope="module")
def tiny():
    return load_backbone(BackboneConfig(name="tiny", pretrained=None))


def test_hostile_corpus_is_scored_or_skipped_with_reasons(tiny, tmp_path: Path):
    make_hostile_files(tmp_path)
    paths = list_images(tmp_path)
    fs = extract_features(tiny, paths, build_transform(tiny), loader=Loader(batch_size=4))
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
    proxy = build_proxy(ProxyConfig(), mode="N+P")
    tf = build_transform(tiny, train=True)
    a = extract_features(tiny, paths, tf, [None, proxy], loader=Loader(batch_size=1), seed=3)
    b = extract_features(tiny, paths, tf, [None, proxy], loader=Loader(batch_size=5), seed=3)
    c = extract_features(tiny, paths, tf, [None, proxy], loader=Loader(batch_size=5), seed=4)
    assert a.features.shape == (2, 5, tiny.feature_dim)
    assert torch.allclose(a.features, b.features, atol=1e-5)
    assert not torch.allclose(a.features[1], c.features[1], atol=1e-5)  # fresh masks per seed
    assert not torch.allclose(
        a.features[0], a.features[1], atol=1e-5
    )  # proxies differ from naturals


def _draws_then_keeps(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A variant that consumes random draws (as a mask would) but returns the image unchanged."""
    torch.rand(5, generator=gen)
    return image


def test_crop_key_reuses_the_natural_crop_and_only_it(tiny, tmp_path: Path):
    path = str(write_image(tmp_path / "a.png", size=(300, 280), seed=1))
    image = pil_to_uint8_tensor(load_image(path))
    variants = [
        IDENTITY,
        Variant("draws", _draws_then_keeps),
        Variant("draws-paired", _draws_then_keeps, crop_key=IDENTITY.key),
    ]
    ds = ImageFileDataset([path], build_transform(tiny, train=True), variants, seed=0, view=0)
    natural, unpaired, paired = ds.apply_all(image, path)
    assert torch.equal(paired, natural)  # same crop box of the same pixels
    assert not torch.equal(unpaired, natural)  # the independent crop lands elsewhere
    other_view = ImageFileDataset([path], ds.transform, variants, seed=0, view=1)
    assert not torch.equal(other_view.apply_all(image, path)[2], paired)  # fresh per view


@pytest.mark.parametrize("pair_crop", [True, False])
def test_pair_crop_is_mask_then_the_natural_crop(tiny, tmp_path: Path, pair_crop: bool):
    path = str(write_image(tmp_path / "a.png", size=(300, 280), seed=2))
    image = pil_to_uint8_tensor(load_image(path))
    proxy = proxy_variant(ProxyConfig(pair_crop=pair_crop), "N+P")
    tf = build_transform(tiny, train=True)
    ds = ImageFileDataset([path], tf, [IDENTITY, proxy], seed=5, view=2)
    natural, got = ds.apply_all(image, path)
    mask_gen = ds._generator(proxy, path)
    masked = proxy.fn(image, mask_gen)  # the mask draw: the proxy's own generator
    crop_gen = ds._generator(IDENTITY, path) if pair_crop else mask_gen
    assert torch.equal(got, tf.geometry(masked, crop_gen))
    assert torch.equal(natural, tf.geometry(image, ds._generator(IDENTITY, path)))
    # The masked bins differ from the natural image, so the pair is never identical.
    assert not torch.equal(got, natural)


def test_pair_crop_changes_the_cache_key_and_nothing_else():
    plain = proxy_variant(ProxyConfig(), "N+P")
    paired = proxy_variant(ProxyConfig(pair_crop=True), "N+P")
    assert plain.crop_key is None and paired.crop_key == IDENTITY.key
    # The default's key is the one caches were written under before pair_crop existed.
    assert plain.key == (
        'proxy:{"band": "low", "mask_mode": "compat", "name": "freq_mask", "ratio": 0.1}'
    )
    assert paired.key != plain.key and '"pair_crop": true' in paired.key
    with pytest.raises(ClipflowError, match="pair_crop"):
        proxy_variant(ProxyConfig(pair_crop="yes"), "N+P")
    with pytest.raises(ClipflowError, match="proxy:"):
        proxy_variant(ProxyConfig(band="lowest"), "N+P")


def _settings(views: int, epochs: int | None = 3, mode: str = "N+P") -> TrainSettings:
    data = DataConfig(views=views, num_workers=0, cache=False)
    s = TrainSettings(data=data, train=TrainConfig(mode=mode, epochs=epochs))
    s.backbone = BackboneConfig(name="tiny", pretrained=None)
    return s


def test_views_zero_is_one_fresh_draw_per_epoch_and_recorded():
    assert n_views(_settings(0, epochs=3)) == 3
    assert n_views(_settings(0, epochs=None, mode="P")) == 30  # the paper's P epochs
    assert augmentation(_settings(0)) == "fresh per epoch"
    assert augmentation(_settings(3, epochs=3)) == "fresh per epoch"  # K >= epochs: all fresh
    assert augmentation(_settings(1)) == "1 cached view (epoch e on view e mod 1)"
    assert augmentation(_settings(2)) == "2 cached views (epoch e on view e mod 2)"
    for bad in (-1, 1.5, "fresh"):
        with pytest.raises(ClipflowError, match="data.views"):
            n_views(_settings(bad))


def test_fresh_per_epoch_features_reach_the_training_loop(tiny, tmp_path: Path):
    paths = [write_image(tmp_path / f"{i}.png", size=(260, 270), seed=i) for i in range(3)]
    tf = train_features(_settings(0, epochs=3), tiny, paths, None, "cpu")
    feats, kept = tf.features, tf.paths
    assert feats.shape == (2, 3, 3, tiny.feature_dim) and len(kept) == 3  # (K, V=epochs, N, D)
    for k in range(2):  # every epoch sees other crops (and, for the proxy, other masks)
        assert all(not torch.allclose(feats[k, a], feats[k, b]) for a, b in [(0, 1), (1, 2)])
    idx = torch.tensor([2, 0])
    for epoch in range(3):  # fit's row lookup: epoch e trains on view e
        rows = _view(feats[0], torch.tensor(epoch), idx)
        assert torch.equal(rows, feats[0, epoch][idx])


def test_run_train_records_the_paper_choices(tmp_path: Path):
    make_train_tree(tmp_path / "train", classes=("cat",), n_real=6, n_fake=0)
    s = train_settings(
        {
            "device": "cpu",
            "backbone": {"name": "tiny", "pretrained": None},
            "proxy": {"pair_crop": True},
            "flow": {"block": "allinone", "n_blocks": 2},
            "data": {
                "train_root": str(tmp_path / "train"),
                "views": 0,
                "num_workers": 0,
                "cache": False,
                "val_fraction": 0.34,
            },
            "train": {"epochs": 2, "batch_size": 4},
        }
    )
    ckpt = load_checkpoint(run_train(s, tmp_path / "run"))
    train = ckpt.meta["train"]
    assert train["views"] == 2 and train["augmentation"] == "fresh per epoch"
    assert train["pair_crop"] is True and ckpt.meta["proxy"]["pair_crop"] is True
    assert ckpt.meta["flow"]["block"] == "allinone" and ckpt.model.cfg.block == "allinone"
    assert len(ckpt.meta["history"]) == 2


def test_one_bad_jpeg_in_a_device_batch_sends_only_that_file_to_pil(tmp_path: Path, monkeypatch):
    """nvJPEG fails a whole batch for one bad file: the others must be decoded on the device,
    one by one, and only the failing file go through PIL (here: decode_jpeg on the CPU)."""
    from clipflow.features import decode as device_decode

    paths = [str(write_image(tmp_path / f"{i}.jpg", (16, 12), "RGB", seed=i)) for i in range(4)]
    payloads = [device_decode.read_payload(p) for p in paths]
    assert [kind for kind, _ in payloads] == ["jpeg"] * 4
    bad = payloads[2][1]
    real = device_decode.decode_jpeg
    calls = {"batched": 0, "single": 0, "pil": 0}

    def flaky(data, **kw):  # fails for the one bad payload, batched or alone
        items = data if isinstance(data, list) else [data]
        calls["batched" if isinstance(data, list) else "single"] += 1
        if any(x is bad for x in items):
            raise RuntimeError("nvjpeg: corrupt stream")
        return real(data, **kw)

    real_pil = device_decode._pil_fallback

    def counted_pil(path, device):
        calls["pil"] += 1
        return real_pil(path, device)

    monkeypatch.setattr(device_decode, "decode_jpeg", flaky)
    monkeypatch.setattr(device_decode, "_pil_fallback", counted_pil)
    out = device_decode.decode_on_device(payloads, paths, "cpu")
    assert calls == {"batched": 1, "single": 4, "pil": 1}
    assert all(img.shape == (3, 12, 16) for img in out)  # every file decoded
    assert torch.equal(out[2], pil_to_uint8_tensor(load_image(paths[2])))  # the bad one by PIL
