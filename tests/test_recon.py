"""Reconstructions: the tiny random AutoencoderKL, the frequency blend, the on-disk cache (reused
on a second run), the reconstruction-distance score and the autoencoder's one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fixtures_images import write_image

from clipflow.backbones.autoencoder import AutoencoderProtocol, load_autoencoder
from clipflow.data.imageio import load_image
from clipflow.errors import BackboneError, UnreadableImageError
from clipflow.features.decode import pil_to_uint8_tensor
from clipflow.features.recon import ReconCache, recon_variant, reconstruct_files
from clipflow.paper.baselines_realonly import pixel_distance, recon_scores
from clipflow.transforms.config import ProxyConfig
from clipflow.transforms.recon import frequency_blend, radial_band, reconstruct


@pytest.fixture(scope="module")
def tiny_ae():
    return load_autoencoder("tiny")


def test_tiny_autoencoder_is_identical_in_every_process_and_keeps_odd_sizes(tiny_ae):
    images = torch.randint(0, 256, (2, 3, 13, 10), dtype=torch.uint8)  # not multiples of scale
    once = reconstruct(tiny_ae, images)
    again = reconstruct(load_autoencoder("tiny"), images)  # rebuilt: same seed, same weights
    assert once.shape == images.shape and once.dtype == torch.uint8
    assert torch.equal(once, again) and not torch.equal(once, images)
    assert isinstance(tiny_ae, AutoencoderProtocol) and tiny_ae.scale == 2
    assert tiny_ae.describe()["name"] == "tiny"


def test_frequency_blend_goes_from_the_reconstruction_to_the_image():
    gen = torch.Generator().manual_seed(0)
    # mid-grey ± 25: the blend stays inside [0, 255], so only rounding moves it
    image = torch.randint(103, 153, (3, 16, 12), dtype=torch.uint8, generator=gen)
    recon = torch.randint(103, 153, (3, 16, 12), dtype=torch.uint8, generator=gen)
    assert torch.equal(frequency_blend(image, recon, "high", 0.0), recon)
    assert torch.equal(frequency_blend(image, recon, "all", 1.0), image)
    low, high = radial_band(16, 12, "low", 0.5), radial_band(16, 12, "high", 0.5)
    assert torch.equal(low, ~high) and low[0, 0] and not low[8, 6]  # DC low, Nyquist high
    # band=high, mix=1: the reconstruction's low frequencies and the image's high ones
    mixed = frequency_blend(image, recon, "high", 1.0, 0.5).double()
    spec = torch.fft.fft2(mixed)
    want = torch.where(low, torch.fft.fft2(recon.double()), torch.fft.fft2(image.double()))
    assert (spec - want).abs().mean() / want.abs().mean() < 0.03  # uint8 rounding only
    with pytest.raises(ValueError, match="mix must be in"):
        frequency_blend(image, recon, "high", 1.5)


def _files(folder: Path, n: int = 5) -> list[Path]:
    sizes = [(12, 12), (12, 12), (9, 14), (12, 12), (9, 14)]  # two shapes: batched by size
    return [write_image(folder / f"{i}.png", sizes[i % 5], seed=i) for i in range(n)]


def test_reconstructions_are_cached_and_reused_on_a_second_run(tmp_path: Path, tiny_ae):
    paths = _files(tmp_path / "img")
    (tmp_path / "img" / "bad.png").write_bytes(b"not an image")
    cache = ReconCache(tmp_path / "cache")
    first = reconstruct_files(tiny_ae, [*paths, tmp_path / "img" / "bad.png"], cache, batch_size=2)
    assert (first.computed, first.reused) == (5, 0)
    assert [p for p, _ in first.skipped] == [str(tmp_path / "img" / "bad.png")]
    assert len(list(first.folder.glob("*.png"))) == 5 and not first.held
    second = reconstruct_files(tiny_ae, paths, cache, batch_size=3)
    assert (second.computed, second.reused) == (0, 5) and second.folder == first.folder
    image = pil_to_uint8_tensor(load_image(paths[2]))  # the 9 x 14 one, reconstructed alone
    assert torch.equal(second.get(str(paths[2])), reconstruct(tiny_ae, image[None])[0])


def test_a_changed_file_is_reconstructed_again_and_no_cache_holds_them_in_ram(
    tmp_path: Path, tiny_ae
):
    paths = _files(tmp_path / "img", 2)
    cache = ReconCache(tmp_path / "cache")
    reconstruct_files(tiny_ae, paths, cache)
    write_image(paths[0], (12, 12), seed=99)  # new content: a new file key
    os.utime(paths[0], ns=(1, 1))
    again = reconstruct_files(tiny_ae, paths, cache)
    assert (again.computed, again.reused) == (1, 1)
    in_ram = reconstruct_files(tiny_ae, paths, None)
    assert in_ram.folder is None and set(in_ram.held) == {str(p) for p in paths}


def test_recon_variant_serves_each_files_reconstruction_and_mixes_in_freq_masks(
    tmp_path: Path, tiny_ae
):
    paths = _files(tmp_path / "img", 2)
    recons = reconstruct_files(tiny_ae, paths, None)
    cfg = ProxyConfig(name="recon", autoencoder="tiny")
    variant = recon_variant(cfg, "N+P", recons, tiny_ae.describe())
    image = torch.zeros(3, 12, 12, dtype=torch.uint8)
    got = variant.fn_for(str(paths[0]))(image, torch.Generator().manual_seed(0))
    assert torch.equal(got, recons.get(str(paths[0])))
    assert '"autoencoder": {"config"' in variant.key  # the loaded identity keys the features
    both = recon_variant(ProxyConfig(name="recon", freq_share=0.5), "N+P", recons, {})
    kinds = {
        torch.equal(
            both.fn_for(str(paths[0]))(image, torch.Generator().manual_seed(s)),
            recons.get(str(paths[0])),
        )
        for s in range(12)
    }
    assert kinds == {True, False}  # some draws reconstruct, some mask frequencies
    with pytest.raises(UnreadableImageError, match="no reconstruction"):
        variant.fn_for(str(tmp_path / "missing.png"))(image, torch.Generator())


def test_recon_distance_is_minus_the_rms_pixel_difference(tmp_path: Path, tiny_ae):
    paths = _files(tmp_path / "img", 2)
    recons = reconstruct_files(tiny_ae, paths, None)
    scores = recon_scores(recons, [str(p) for p in paths])
    a = torch.zeros(3, 4, 4, dtype=torch.uint8)
    assert pixel_distance(a, a + 255) == pytest.approx(1.0)
    assert set(scores) == {str(p) for p in paths} and all(-1 <= v < 0 for v in scores.values())


def test_autoencoder_errors_are_one_line(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BackboneError) as info:
        load_autoencoder("nobody/no-such-vae", "vae")
    msg = str(info.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg and "proxy.autoencoder=" in msg
    with pytest.raises(BackboneError, match="has no config.json"):
        load_autoencoder(str(tmp_path))
    with pytest.raises(BackboneError, match="lacks scale"):
        load_autoencoder("collections:OrderedDict")
    with pytest.raises(BackboneError, match="cannot import"):
        load_autoencoder("no_such_module_xyz:make")


def test_proxy_recon_trains_end_to_end_and_reuses_its_reconstructions(
    tmp_path: Path, mini_bench: Path, caplog
):
    """clipflow-train proxy=recon with the tiny autoencoder: a checkpoint whose proxy names the
    autoencoder; a second run with another blend reconstructs nothing (the blend is applied to
    the cached reconstructions; its features are extracted again)."""
    from clipflow.checkpoints.checkpoint import load_checkpoint
    from clipflow.paper.experiment_configs import compose_settings
    from clipflow.runs.train import run_train

    def train(mix: float) -> Path:
        s = compose_settings(
            [
                "mode=N+P",
                "proxy=recon",
                "proxy.autoencoder=tiny",
                f"proxy.recon_mix={mix}",
                "backbone=tiny",
                "device=cpu",
                f"data.train_root={mini_bench / 'train'}",
                f"data.cache_dir={tmp_path / 'cache'}",
                "data.num_workers=0",
                "train.epochs=1",
                "flow.n_blocks=2",
            ]
        )
        return run_train(s, tmp_path / f"run{mix}")

    with caplog.at_level("INFO", logger="clipflow.features.recon"):
        ckpt = load_checkpoint(train(0.5))
        assert ckpt.meta["proxy"]["name"] == "recon"
        assert ckpt.meta["proxy"]["autoencoder"] == "tiny"
        assert ckpt.meta["proxy"]["recon_mix"] == 0.5
        pngs = sorted((tmp_path / "cache").glob("recon1-*/*.png"))
        assert len(pngs) > 10  # the non-held-out training reals
        first = [m for m in caplog.messages if m.startswith("reconstruct train")]
        assert first == [f"reconstruct train: {len(pngs)} reconstructed, 0 from the cache"]
        caplog.clear()
        train(0.0)
        again = [m for m in caplog.messages if m.startswith("reconstruct train")]
    assert again == [f"reconstruct train: 0 reconstructed, {len(pngs)} from the cache"]


def test_a_missing_autoencoder_stops_training_before_the_folder_scan(tmp_path: Path, monkeypatch):
    """proxy=recon with an autoencoder folder that is not there: the one-line error comes first,
    not after the scan and the backbone (the training folder here does not even exist)."""
    from clipflow.paper.experiment_configs import compose_settings
    from clipflow.runs import train as train_run

    def no_scan(*args, **kwargs):
        raise AssertionError("the training folders were scanned before the autoencoder check")

    monkeypatch.setattr(train_run, "discover_train_images", no_scan)
    s = compose_settings(
        [
            "mode=N+P",
            "proxy=recon",
            f"proxy.autoencoder={tmp_path / 'no-vae'}",
            "backbone=tiny",
            "device=cpu",
            f"data.train_root={tmp_path / 'train'}",
        ]
    )
    with pytest.raises(BackboneError, match="has no config.json"):
        train_run.run_train(s, tmp_path / "run")
