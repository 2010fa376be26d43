"""Proxy operations (SPEC §4): mask statistics, the §4.1.5 closed form, casts, spatial ops."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clipflow.transforms.config import BANDS, PROXY_NAMES, VAL_BANDS, ProxyConfig
from clipflow.transforms.proxy import (
    bandstop,
    bandstop_key,
    bandstop_mask,
    build_proxy,
    color_jitter,
    frequency_band_mask,
    frequency_mask,
    gaussian_noise,
    gaussian_smooth,
    phase_only_mask,
    sharpen,
)

SIZES = [(8, 8), (7, 9), (16, 12), (5, 5), (33, 31)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rect(h: int, w: int, band: str) -> np.ndarray:
    """Band rectangle of SPEC §4.1.2 as a boolean (H, W) array, written out independently."""
    y0, y1, x0, x1 = {
        "low": (0, h // 4, 0, w // 4),
        "mid": (h // 4, 3 * h // 4, w // 4, 3 * w // 4),
        "high": (3 * h // 4, h, 3 * w // 4, w),
        "all": (0, h, 0, w),
    }[band]
    r = np.zeros((h, w), bool)
    r[y0:y1, x0:x1] = True
    return r


def mirror(a: np.ndarray) -> np.ndarray:
    """a(-k mod N) over the last two axes."""
    h, w = a.shape[-2:]
    return a[..., (-np.arange(h)) % h, :][..., (-np.arange(w)) % w]


def random_images(n: int, c: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=gen(seed), dtype=torch.uint8)


# ---------------------------------------------------------------- the mask itself
@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("band", BANDS)
@pytest.mark.parametrize("ratio", [0.1, 0.37, 1.0])
def test_mask_count_and_location(h, w, band, ratio):
    m = frequency_band_mask(h, w, band, ratio, n_images=4, generator=gen()).numpy()
    r = rect(h, w, band)
    assert m.shape == (4, h, w) and m.dtype == bool
    assert (m.reshape(4, -1).sum(1) == math.ceil(ratio * r.sum())).all()
    assert not (m & ~r).any()


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("bands", [("low", "high"), ("low", "mid"), ("low", "all")])
def test_union_of_bands(h, w, bands):
    m = frequency_band_mask(h, w, "+".join(bands), 0.5, n_images=6, generator=gen()).numpy()
    counts = [math.ceil(0.5 * rect(h, w, b).sum()) for b in bands]
    got = m.reshape(6, -1).sum(1)
    assert (got <= sum(counts)).all() and (got >= max(counts)).all()
    assert not (m & ~(rect(h, w, bands[0]) | rect(h, w, bands[1]))).any()
    if bands == ("low", "high"):  # disjoint rectangles: the counts add up exactly
        assert (got == sum(counts)).all()


def test_fresh_draw_per_image_and_per_call():
    g = gen()
    a = frequency_band_mask(64, 64, "low", 0.1, n_images=8, generator=g)
    b = frequency_band_mask(64, 64, "low", 0.1, n_images=8, generator=g)
    assert len({tuple(x.flatten().tolist()) for x in a}) == 8
    assert not torch.equal(a, b)


def test_seeded_determinism():
    x = random_images(3, 3, 32, 32)
    assert torch.equal(frequency_mask(x, generator=gen(5)), frequency_mask(x, generator=gen(5)))
    m5 = frequency_band_mask(32, 32, "low", 0.1, 3, gen(5))
    assert not torch.equal(m5, frequency_band_mask(32, 32, "low", 0.1, 3, gen(6)))


@pytest.mark.parametrize(
    "bad",
    [
        {"band": "lows"},
        {"band": "low+"},
        {"ratio": 1.5},
        {"ratio": -0.1},
        {"ratio": 0.0},  # masks no bin: refused here as by the settings (one range, (0, 1])
        {"mode": "wrap"},
    ],
)
def test_bad_arguments_name_allowed_values(bad):
    with pytest.raises(ValueError, match=r"low|\(0, 1\]|compat"):
        frequency_mask(random_images(1, 3, 8, 8), **bad)


# ---------------------------------------------------------------- §4.1.5 closed form
@pytest.mark.parametrize("h,w", [(16, 16), (15, 18), (33, 31)])
@pytest.mark.parametrize(
    "band,ratio", [("low", 0.3), ("mid", 0.5), ("all", 0.2), ("low+high", 1.0)]
)
def test_float_path_matches_closed_form(h, w, band, ratio):
    x = random_images(2, 3, h, w)
    out = frequency_mask(x, band, ratio, generator=gen(3), out_dtype=torch.float64).numpy()
    keep = (~frequency_band_mask(h, w, band, ratio, 2, gen(3)).numpy()[:, None]).astype(float)
    f = np.fft.fft2(x.numpy().astype(np.float64))
    expected = np.fft.ifft2(f * (keep + mirror(keep)) / 2)
    assert np.abs(expected.imag).max() < 1e-9  # the symmetrised mask gives a real image
    np.testing.assert_allclose(out, expected.real, atol=1e-6)


def test_unpaired_bin_is_halved_and_self_paired_dc_removed():
    x = random_images(1, 3, 16, 16)
    out = frequency_mask(x, "low", 1.0, generator=gen(), out_dtype=torch.float64)
    f_in, f_out = torch.fft.fft2(x.double()), torch.fft.fft2(out)
    # (1, 1) is in "low", its partner (15, 15) in "high": halved, not removed
    torch.testing.assert_close(f_out[..., 1, 1], f_in[..., 1, 1] / 2)
    assert f_out[..., 0, 0].abs().max() < 1e-8  # DC is its own partner: gone
    torch.testing.assert_close(f_out[..., 8, 8], f_in[..., 8, 8])  # untouched bin


def test_same_positions_on_all_channels():
    x = random_images(4, 3, 24, 20)  # each channel is a different random image
    out = frequency_mask(x, "all", 0.1, generator=gen(9), out_dtype=torch.float64)
    changed = (torch.fft.fft2(out) - torch.fft.fft2(x.double())).abs() > 1e-6  # (N, C, H, W)
    assert torch.equal(changed[:, 0], changed[:, 1]) and torch.equal(changed[:, 0], changed[:, 2])
    masked = frequency_band_mask(24, 20, "all", 0.1, 4, gen(9)).numpy()
    assert np.array_equal(changed[:, 0].numpy(), masked | mirror(masked))
    assert not torch.equal(changed[0, 0], changed[1, 0])  # but a fresh draw per image


# ---------------------------------------------------------------- compat vs clean casts
def test_compat_wraps_and_clean_clips():
    # 100 + 7.2 cos(2πy/8): with the whole low band masked, DC is removed and the (1, 0) bin
    # halved (its partner (7, 0) is outside "low"), so the float output is 3.6 cos(2πy/8).
    y = torch.arange(8, dtype=torch.float64)
    x = (100 + 7.2 * torch.cos(2 * math.pi * y / 8))[:, None].expand(8, 8).expand(3, 8, 8)
    f = frequency_mask(x, "low", 1.0, out_dtype=torch.float64)[0, :, 0]
    torch.testing.assert_close(f, 3.6 * torch.cos(2 * math.pi * y / 8))
    compat = frequency_mask(x, "low", 1.0, mode="compat")[0, :, 0].tolist()
    clean = frequency_mask(x, "low", 1.0, mode="clean")[0, :, 0].tolist()
    assert compat == [3, 2, 0, 254, 253, 254, 0, 2]  # trunc(-3.6) = -3 -> 253
    assert clean == [4, 3, 0, 0, 0, 0, 0, 3]


def test_compat_and_clean_agree_in_range():
    x = random_images(2, 3, 32, 32)
    f = frequency_mask(x, "low", 0.1, generator=gen(), out_dtype=torch.float64)
    compat = frequency_mask(x, "low", 0.1, "compat", gen()).double()
    clean = frequency_mask(x, "low", 0.1, "clean", gen()).double()
    inside = (f >= 0) & (f <= 254.5)
    assert inside.float().mean() > 0.9
    assert torch.equal(compat[inside], torch.floor(f[inside]))
    assert torch.equal(clean[inside], torch.round(f[inside]))


def test_shapes_and_dtypes():
    x = random_images(2, 3, 16, 16)
    assert frequency_mask(x[0], generator=gen()).shape == (3, 16, 16)
    assert frequency_mask(x, generator=gen()).dtype == torch.uint8
    assert frequency_mask(x, generator=gen(), out_dtype=torch.float32).dtype == torch.float32


# ---------------------------------------------------------------- phase-only
def test_phase_only_everywhere_gives_magnitude_spectrum():
    x = random_images(2, 3, 16, 14)
    out = phase_only_mask(x, "all", 1.0, generator=gen(), out_dtype=torch.float64)
    f_out, f_in = torch.fft.fft2(out), torch.fft.fft2(x.double())
    torch.testing.assert_close(f_out.abs(), f_in.abs())  # |F| preserved
    assert f_out.imag.abs().max() < 1e-8 and f_out.real.min() > -1e-8  # phase zero


def test_phase_only_partial_matches_closed_form():
    x = random_images(2, 3, 16, 16)
    out = phase_only_mask(x, "low", 0.5, generator=gen(2), out_dtype=torch.float64).numpy()
    sel = frequency_band_mask(16, 16, "low", 0.5, 2, gen(2)).numpy()[:, None]
    f = np.fft.fft2(x.numpy().astype(np.float64))
    g = np.where(sel, np.abs(f), f)
    # real part of IDFT(G) has DFT (G(k) + conj(G(-k))) / 2
    np.testing.assert_allclose(np.fft.fft2(out), (g + np.conj(mirror(g))) / 2, atol=1e-6)
    unpaired = sel & ~mirror(sel)
    assert unpaired.any()
    assert not np.allclose(out, x.numpy())


# ---------------------------------------------------------------- band-stop validation proxy
@pytest.mark.parametrize("h,w", [(64, 64), (63, 65), (256, 256)])
def test_bandstop_zeroes_exactly_the_annulus(h, w):
    x = random_images(2, 3, h, w)
    out = bandstop(x, out_dtype=torch.float64)
    stop = bandstop_mask(h, w).numpy()
    d = np.hypot(*np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij"))
    s = min(h, w) / 256
    assert np.array_equal(stop, (d > 30 * s) & (d < 100 * s))
    assert np.array_equal(stop, mirror(stop))  # conjugate-symmetric: output is real
    f_out, f_in = np.fft.fft2(out.numpy()), np.fft.fft2(x.numpy().astype(np.float64))
    assert np.abs(f_out[..., stop]).max() < 1e-6
    np.testing.assert_allclose(f_out[..., ~stop], f_in[..., ~stop], atol=1e-6)
    assert torch.equal(bandstop(x), bandstop(x)) and bandstop(x).dtype == torch.uint8


@pytest.mark.parametrize("h,w", [(512, 512), (256, 256), (63, 65)])
def test_each_reading_of_the_validation_band_zeroes_its_own_set(h, w):
    # exact integer distances from DC (fftfreq(n) * n rounds 60 to 59.999...: 60-80-100 ties)
    ky, kx = np.meshgrid(
        *(np.minimum(np.arange(n), n - np.arange(n)) for n in (h, w)), indexing="ij"
    )
    d, box, s = np.hypot(ky, kx), np.maximum(ky, kx), min(h, w) / 256
    expected = {
        "open": (d > 30 * s) & (d < 100 * s),
        "closed": (d >= 30 * s) & (d <= 100 * s),
        "pixels": (d > 30) & (d < 100),
        "square": (box > 30 * s) & (box < 100 * s),
    }
    for reading, want in expected.items():
        stop = bandstop_mask(h, w, reading=reading).numpy()
        assert np.array_equal(stop, want), reading
        assert np.array_equal(stop, mirror(stop)), reading  # the output stays real
    if (h, w) == (512, 512):  # radii 60 and 200 are bin distances: four different sets
        assert len({expected[r].tobytes() for r in VAL_BANDS}) == len(VAL_BANDS)
    assert len({bandstop_key(r) for r in VAL_BANDS}) == len(VAL_BANDS)
    assert bandstop_key() == "bandstop(30,100)@256"  # the default's recorded key is unchanged
    with pytest.raises(ValueError, match="unknown band reading"):
        bandstop_mask(h, w, reading="annulus")
    with pytest.raises(ValueError, match="unknown band reading"):
        bandstop_key("annulus")


# ---------------------------------------------------------------- spatial proxies
def hf_energy(x: torch.Tensor) -> float:
    f = torch.fft.fft2(x.double())
    h, w = x.shape[-2:]
    ky, kx = torch.meshgrid(torch.fft.fftfreq(h), torch.fft.fftfreq(w), indexing="ij")
    return float((f.abs() ** 2)[..., torch.hypot(ky, kx) > 0.25].sum())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_spatial_shape_dtype(dtype):
    x = random_images(2, 3, 32, 32).to(dtype)
    for op in (gaussian_smooth, sharpen, gaussian_noise, color_jitter):
        for inp in (x, x[0]):
            y = op(inp)
            assert y.shape == inp.shape and y.dtype == dtype
            assert y.min() >= 0 and y.max() <= 255


def test_noise_std_on_flat_grey():
    x = torch.full((3, 128, 128), 128, dtype=torch.uint8)
    d = gaussian_noise(x, 5.0, gen()).double() - 128
    assert abs(d.std().item() - 5.0) < 0.1 and abs(d.mean().item()) < 0.1
    assert torch.equal(gaussian_noise(x, 5.0, gen(1)), gaussian_noise(x, 5.0, gen(1)))


def test_smoothing_and_sharpening_move_high_frequencies():
    x = torch.randint(60, 196, (1, 3, 64, 64), generator=gen()).to(torch.uint8)
    assert hf_energy(gaussian_smooth(x, 1.0)) < 0.2 * hf_energy(x)
    assert hf_energy(sharpen(x, 1.0, 1.0)) > 1.5 * hf_energy(x)


def test_color_jitter_seeded_and_per_image():
    x = random_images(1, 3, 16, 16).expand(4, 3, 16, 16)
    a, b = color_jitter(x, generator=gen(3)), color_jitter(x, generator=gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, color_jitter(x, generator=gen(4)))
    assert len({tuple(i.flatten().tolist()) for i in a}) == 4  # factors drawn per image
    assert torch.equal(color_jitter(x, 0, 0, 0, 0, gen()), x)  # all-zero = identity


# ---------------------------------------------------------------- config + builder
def test_build_proxy_uses_the_modes_default_ratio_when_none():
    x = random_images(2, 3, 32, 32)
    fn = build_proxy(ProxyConfig(), mode="P")  # P: ratio 1.0
    assert torch.equal(fn(x, gen()), frequency_mask(x, "low", 1.0, generator=gen()))
    assert not torch.equal(fn(x, gen()), frequency_mask(x, "low", 0.1, generator=gen()))
    assert ProxyConfig().describe("P")["ratio"] == 1.0
    assert ProxyConfig().describe("N+P")["ratio"] == 0.1
    fixed = build_proxy(ProxyConfig(ratio=0.1), mode="P")
    assert torch.equal(fixed(x, gen()), frequency_mask(x, "low", 0.1, generator=gen()))


# proxy=recon is built from each file's cached reconstruction (tests/test_recon.py)
@pytest.mark.parametrize("name", [n for n in PROXY_NAMES if n != "recon"])
def test_every_named_proxy_keeps_shape_and_dtype(name):
    fn = build_proxy(ProxyConfig(name=name), mode="N+P")
    x = random_images(2, 3, 16, 16)
    for inp in (x, x[0]):
        y = fn(inp, gen())
        assert y.shape == inp.shape and y.dtype == torch.uint8
    assert ProxyConfig(name=name).describe("N+P")["name"] == name


def test_recon_is_no_per_image_function():
    with pytest.raises(ValueError, match="clipflow.features.recon"):
        build_proxy(ProxyConfig(name="recon"), mode="N+P")
    assert ProxyConfig(name="recon").describe("N+P")["autoencoder_subfolder"] == "vae"


def test_describe_resolves_defaults():
    assert ProxyConfig(name="gaussian_noise").describe()["sigma"] == 5.0
    assert ProxyConfig(name="smoothing", sigma=2.0).describe()["sigma"] == 2.0


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="freq_mask"):
        build_proxy(ProxyConfig(name="blur"), "N+P")
    with pytest.raises(ValueError, match="low"):
        build_proxy(ProxyConfig(band="middle"), "N+P")
    with pytest.raises(ValueError, match="compat"):
        build_proxy(ProxyConfig(mask_mode="wrap"), "N+P")
    with pytest.raises(ValueError, match="sigma"):
        build_proxy(ProxyConfig(name="smoothing", sigma=0.0), "N+P")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_images_matches_cpu():
    x = random_images(2, 3, 32, 32)
    cpu = frequency_mask(x, generator=gen(), out_dtype=torch.float64)
    cuda = frequency_mask(x.cuda(), generator=gen(), out_dtype=torch.float64)
    torch.testing.assert_close(cuda.cpu(), cpu)
    noisy = gaussian_noise(x.cuda(), 5.0, gen())
    assert torch.equal(noisy.cpu(), gaussian_noise(x, 5.0, gen()))


# ---------------------------------------------------------------- per-run choices
PROXY_YAMLS = sorted((Path(__file__).parents[1] / "configs" / "proxy").glob("*.yaml"))


@pytest.mark.parametrize("path", PROXY_YAMLS, ids=lambda p: p.stem)
def test_proxy_yamls_build_and_leave_crops_unpaired(path):
    values = yaml.safe_load(path.read_text())
    cfg = ProxyConfig(**values)  # every key is a field
    assert values["pair_crop"] is False and "pair_crop" not in cfg.describe("N+P")
    assert ProxyConfig(**{**values, "pair_crop": True}).describe("N+P")["pair_crop"] is True
    if cfg.name != "recon":  # built from reconstructions of the files (tests/test_recon.py)
        build_proxy(cfg, "N+P")


def test_mask_mode_and_pair_crop_are_per_run_settings():
    from clipflow.runs.train_data import proxy_variant
    from clipflow.settings.config import train_settings

    base = yaml.safe_load((PROXY_YAMLS[0].parent / "freq_mask.yaml").read_text())
    runs = {
        mode: train_settings({"proxy": {**base, "mask_mode": mode}}) for mode in ("compat", "clean")
    }
    assert {m: s.proxy.mask_mode for m, s in runs.items()} == {"compat": "compat", "clean": "clean"}
    keys = {m: proxy_variant(s.proxy, "N+P").key for m, s in runs.items()}
    assert keys["compat"] != keys["clean"]  # distinct cache entries
    # Out-of-range inverse DFT values: compat wraps, clean clips, so the proxies differ.
    x = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    x[..., ::2, :] = 255
    fns = {m: proxy_variant(s.proxy, "P").fn for m, s in runs.items()}
    assert not torch.equal(fns["compat"](x, gen()), fns["clean"](x, gen()))
    assert train_settings({"proxy": {"pair_crop": True}}).proxy.pair_crop is True
    assert train_settings({}).proxy.pair_crop is False  # a YAML without the key: the default
    assert train_settings({}).flow.block == "glow"
    assert train_settings({"flow": {"block": "allinone"}}).flow.block == "allinone"
