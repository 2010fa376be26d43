"""Listing and decoding images found in the wild (clipflow.data.imageio)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import make_hostile_files, write_image
from PIL import Image

from clipflow.data.imageio import (
    IMAGE_EXTENSIONS,
    is_image_file,
    list_images,
    load_image,
)
from clipflow.errors import DataError, UnreadableImageError
from clipflow.features.decode import pil_to_uint8_tensor


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    return make_hostile_files(tmp_path_factory.mktemp("hostile"))


# ------------------------------------------------------------------------ list_images


def test_extensions_match_last_suffix_case_insensitively():
    assert is_image_file("X.PNG") and is_image_file("a.b.jpg") and is_image_file("c.TiFf")
    assert not is_image_file("anim.gif")  # not in the default list
    assert not is_image_file("photo.jpg.txt")
    assert ".gif" not in IMAGE_EXTENSIONS


def test_list_images_nested_sorted_and_filtered(tmp_path):
    for rel in ["b/2.png", "a/z/1.JPG", "a/0.jpeg", "top.webp", "X.PNG", "a.b.jpg"]:
        write_image(tmp_path / rel, (4, 4))
    (tmp_path / "notes.txt").write_text("x")
    write_image(tmp_path / "anim.gif", (4, 4))
    write_image(tmp_path / ".hidden.png", (4, 4))
    write_image(tmp_path / ".cache" / "in_hidden_dir.png", (4, 4))
    write_image(tmp_path / "a" / "._resource_fork.jpg", (4, 4))

    found = list_images(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["X.PNG", "a/0.jpeg", "a/z/1.JPG", "a.b.jpg", "b/2.png", "top.webp"]
    assert found == list_images(tmp_path)  # deterministic
    assert list_images(tmp_path, extensions=(".GIF",)) == [tmp_path / "anim.gif"]


def test_list_images_survives_symlink_loop_and_dedups(tmp_path):
    write_image(tmp_path / "d" / "one.png", (4, 4))
    write_image(tmp_path / "d" / "sub" / "two.png", (4, 4))
    os.symlink(tmp_path, tmp_path / "d" / "sub" / "loop")  # back to an ancestor
    os.symlink(tmp_path / "d" / "sub", tmp_path / "alias")  # second route to a folder
    found = list_images(tmp_path)
    names = sorted(p.name for p in found)
    assert names == ["one.png", "two.png"]  # terminated, and every file once


def test_list_images_follows_directory_symlinks(tmp_path):
    outside = tmp_path / "outside"
    write_image(outside / "far.png", (4, 4))
    (tmp_path / "root").mkdir()
    os.symlink(outside, tmp_path / "root" / "linked")
    assert list_images(tmp_path / "root") == [tmp_path / "root" / "linked" / "far.png"]


def test_list_images_skips_unreadable_subfolder(tmp_path, monkeypatch, caplog):
    write_image(tmp_path / "ok" / "a.png", (4, 4))
    write_image(tmp_path / "locked" / "b.png", (4, 4))
    real_scandir = os.scandir

    def scandir(path):  # chmod 000 does not stop root, so fail the way the OS would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert list_images(tmp_path) == [tmp_path / "ok" / "a.png"]
    assert "locked" in caplog.text


def test_list_images_missing_folder_is_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_images(tmp_path / "nope")


# ------------------------------------------------------------------------- load_image

READABLE_SIZES = {
    "png_as_jpg": (12, 10),
    "cmyk_jpeg": (16, 8),
    "png16": (2, 2),
    "palette_transparent": (8, 6),
    "grayscale": (10, 12),
    "la": (10, 12),
    "rgba": (14, 9),
    "bilevel": (9, 7),
    "float_tiff": (2, 2),
    "animated_gif": (16, 16),
    "animated_webp": (16, 16),
    "exif_rotated": (20, 40),  # stored 40x20 with orientation 6: W and H swap
    "one_pixel": (1, 1),
    "upper_ext": (8, 8),
    "double_dot": (8, 8),
}


@pytest.mark.parametrize("name", sorted(READABLE_SIZES))
def test_readable_files_load_as_rgb(hostile, name):
    img = load_image(hostile[name])
    assert img.mode == "RGB"
    assert img.size == READABLE_SIZES[name]


def test_exif_orientation_is_applied(hostile):
    with Image.open(hostile["exif_rotated"]) as raw:
        assert raw.size == (40, 20)  # the fixture really stores it landscape
    assert load_image(hostile["exif_rotated"]).size == (20, 40)


def test_16bit_png_scaled_not_clipped(hostile):
    with Image.open(hostile["png16"]) as raw:
        assert raw.mode.startswith("I")  # the fixture really is 16-bit
    arr = np.asarray(load_image(hostile["png16"]))
    assert arr[0, 0].tolist() == [255, 255, 255]  # 65535 -> 255
    assert arr[0, 1].tolist() == [0, 0, 0]
    assert arr[1, 0].tolist() == [128, 128, 128]  # 32896 = 128 * 257 (clipping gives 255)
    assert arr[1, 1].tolist() == [100, 100, 100]  # 25700 = 100 * 257


def test_float_tiff_scaled(hostile):
    arr = np.asarray(load_image(hostile["float_tiff"]))[..., 0]
    assert arr.tolist() == [[0, 255], [128, 64]]


def test_cmyk_becomes_rgb_red(hostile):
    with Image.open(hostile["cmyk_jpeg"]) as raw:
        assert raw.mode == "CMYK"
    r, g, b = load_image(hostile["cmyk_jpeg"]).getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15


def test_palette_with_transparency_keeps_palette_colours(hostile):
    img = load_image(hostile["palette_transparent"])
    assert img.getpixel((0, 0)) == (0, 0, 255)
    assert img.getpixel((1, 0)) == (255, 0, 0)  # transparent index: alpha dropped, colour kept


def test_rgba_drops_alpha_without_compositing(hostile):
    with Image.open(hostile["rgba"]) as raw:
        expected = np.asarray(raw)[..., :3]
    assert np.array_equal(np.asarray(load_image(hostile["rgba"])), expected)


@pytest.mark.parametrize("name", ["animated_gif", "animated_webp"])
def test_animation_gives_first_frame(hostile, name):
    with Image.open(hostile[name]) as raw:
        assert raw.n_frames == 2
    assert load_image(hostile[name]).getpixel((8, 8)) == (255, 0, 0)  # red, not blue


def test_grayscale_channels_equal(hostile):
    arr = np.asarray(load_image(hostile["grayscale"]))
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])


@pytest.mark.parametrize(
    ("name", "keyword"),
    [
        ("zero_byte", "zero-byte file"),
        ("truncated_jpeg", "truncated or corrupt"),
        ("text_as_jpg", "not an image"),
        ("bomb_png", "too large"),
    ],
)
def test_unreadable_files_raise_with_reason(hostile, name, keyword):
    with pytest.raises(UnreadableImageError) as info:
        load_image(hostile[name])
    assert keyword in info.value.reason
    assert info.value.path == str(hostile[name])
    assert "\n" not in str(info.value)


def test_bomb_rejected_fast_from_header(hostile):
    assert hostile["bomb_png"].stat().st_size < 200
    start = time.perf_counter()
    with pytest.raises(UnreadableImageError, match="too large"):
        load_image(hostile["bomb_png"])
    assert time.perf_counter() - start < 1.0


def test_pixel_cap_is_configurable(tmp_path):
    path = write_image(tmp_path / "big.png", (20, 10))
    with pytest.raises(UnreadableImageError, match="too large: 20×10 pixels"):
        load_image(path, max_pixels=199)
    assert load_image(path, max_pixels=200).size == (20, 10)
    assert load_image(path, max_pixels=None).size == (20, 10)


def test_missing_file_raises_unreadable(tmp_path):
    with pytest.raises(UnreadableImageError, match="not found"):
        load_image(tmp_path / "gone.jpg")


def test_truncated_images_not_allowed_globally():
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_loaded_image_outlives_the_file(tmp_path):
    path = write_image(tmp_path / "x.png", (6, 5), seed=11)
    img = load_image(path)
    path.unlink()
    assert np.asarray(img).shape == (5, 6, 3)


# ----------------------------------------------------------------- pil_to_uint8_tensor


def test_pil_to_uint8_tensor_layout(tmp_path):
    img = load_image(write_image(tmp_path / "t.png", (7, 5), seed=12))
    t = pil_to_uint8_tensor(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.uint8 and t.is_contiguous()
    assert t[:, 2, 3].tolist() == list(img.getpixel((3, 2)))


def test_pil_to_uint8_tensor_converts_other_modes():
    t = pil_to_uint8_tensor(Image.new("L", (3, 2), 9))
    assert t.shape == (3, 2, 3) and int(t.min()) == int(t.max()) == 9


def test_scan_keeps_the_real_name_of_a_file_reached_twice(tmp_path: Path):
    from clipflow.data.imageio import scan_images

    write_image(tmp_path / "b" / "z.png")
    os.symlink("b/z.png", tmp_path / "a.png")  # sorts first, but is the link
    os.symlink("b", tmp_path / "c")  # the same folder again
    listing = scan_images(tmp_path)
    assert listing.images == [tmp_path / "b" / "z.png"]
    reasons = {p.name: r for p, r in listing.skipped}
    assert set(reasons) == {"a.png", "c"} and "already listed" in reasons["c"]
