"""Perturbations: pure, deterministic uint8 ops, a registry of names, and strict parsing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from clipflow.data.synthetic import natural_image
from clipflow.errors import ClipflowError
from clipflow.transforms.perturb import (
    DEFAULT_NAMES,
    GROUPS,
    blur_kernel_size,
    downscale,
    gaussian_blur,
    jpeg,
    parse_perturbation,
    resolve_perturbations,
)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A photo-like (1/f spectrum) uint8 (3, 64, 48) image."""
    arr = natural_image(np.random.default_rng(0), size=64)[:, :48]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def test_all_group_is_the_issues_eleven_settings():
    names = [p.name for p in resolve_perturbations("all")]
    assert names == [
        "jpeg95",
        "jpeg90",
        "jpeg75",
        "jpeg50",
        "jpeg30",
        "blur1",
        "blur2",
        "blur4",
        "down0.75",
        "down0.5",
        "jpeg50+blur2",
    ]
    assert list(DEFAULT_NAMES) == names
    assert [p.name for p in resolve_perturbations("resize")] == ["down0.75", "down0.5"]
    assert resolve_perturbations("none") == [] and resolve_perturbations(None) == []


def test_lists_commas_groups_and_duplicates_resolve_in_order():
    a = resolve_perturbations(["blur", "jpeg95", "blur2"])
    assert [p.name for p in a] == ["blur1", "blur2", "blur4", "jpeg95"]
    assert [p.name for p in resolve_perturbations("jpeg60, down0.3")] == ["jpeg60", "down0.3"]
    assert set(GROUPS["all"]) >= set(GROUPS["jpeg"]) | set(GROUPS["combined"])


@pytest.mark.parametrize(
    "bad",
    ["jpeg0", "jpeg101", "jpeg7.5", "blur0", "down1.5", "down1", "sharpen2", "jpeg50+"]
    + ["webp0", "webp7.5", "noise0", "noise300", "crop0", "crop1.2", "resize5"],  # chain ops
)
def test_bad_names_are_one_line_errors(bad):
    with pytest.raises(ClipflowError) as err:
        resolve_perturbations(bad)
    assert "\n" not in str(err.value) and bad in str(err.value)


def test_jpeg_matches_a_pil_round_trip_and_degrades_with_quality(photo):
    buf = io.BytesIO()
    Image.fromarray(photo.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=75)
    expected = torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1)
    out = jpeg(photo, 75)
    assert out.dtype == torch.uint8 and out.shape == photo.shape
    assert torch.equal(out, expected)
    errors = [_err(jpeg(photo, q), photo) for q in (95, 75, 30)]
    assert 0 < errors[0] < errors[1] < errors[2]


def test_blur_kernel_and_strength(photo):
    assert [blur_kernel_size(s) for s in (1, 2, 4)] == [7, 13, 25]
    assert torch.equal(gaussian_blur(photo, 2.0), TF.gaussian_blur(photo, [13, 13], [2.0, 2.0]))
    detail = [_err(gaussian_blur(photo, s), photo) for s in (1.0, 2.0, 4.0)]
    assert 0 < detail[0] < detail[1] < detail[2]
    flat = torch.full((3, 30, 30), 77, dtype=torch.uint8)
    assert torch.equal(gaussian_blur(flat, 4.0), flat)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (20, 9)])
def test_ops_keep_tiny_images_valid(size):
    img = torch.randint(
        0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    for p in resolve_perturbations("all"):
        out = p(img)
        assert out.dtype == torch.uint8 and out.shape[0] == 3 and min(out.shape[1:]) >= 1
        if p.family in ("jpeg", "blur", "combined"):
            assert out.shape == img.shape


def test_downscale_sizes_and_antialiasing(photo):
    assert downscale(photo, 0.5).shape == (3, 32, 24)
    assert downscale(photo, 0.75).shape == (3, 48, 36)
    stripes = (torch.arange(32) // 2 % 2 * 255).to(torch.uint8)  # period-4 vertical stripes
    img = stripes[None, :].expand(3, 32, -1).contiguous()
    # antialiasing damps the stripes (std ~68); plain bilinear sampling keeps them (std ~128)
    assert float(downscale(img, 0.5).float().std()) < 100


def test_chains_apply_left_to_right_and_are_deterministic(photo):
    chain = parse_perturbation("jpeg50+blur2")
    assert chain.family == "combined" and chain.strength is None
    assert torch.equal(chain(photo), gaussian_blur(jpeg(photo, 50), 2.0))
    assert not torch.equal(chain(photo), jpeg(gaussian_blur(photo, 2.0), 50))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    assert torch.equal(chain(photo, g1), chain(photo, g2))  # no random draws


def test_describe_records_every_parameter():
    d = parse_perturbation("jpeg50+blur2").describe()
    assert d == {
        "name": "jpeg50+blur2",
        "family": "combined",
        "strength": None,
        "steps": [{"op": "jpeg", "quality": 50}, {"op": "blur", "sigma": 2.0}],
    }
    assert parse_perturbation("down0.5").describe()["steps"] == [{"op": "resize", "factor": 0.5}]
