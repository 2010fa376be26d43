"""Dataset discovery and sampling (clipflow.data.layouts, .testsets, .train_images): layouts,
order, errors, seeds."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from fixtures_images import (
    make_cnnspot_tree,
    make_train_tree,
    make_univfd_tree,
    write_image,
)

from clipflow.data.layouts import (
    CLASS_LEVEL_SETS,
    DISPLAY_NAMES,
    PAPER_ORDER,
    SHARED_REAL_POOLS,
    TestSet,
)
from clipflow.data.testsets import discover_test_sets, univfd_sample
from clipflow.data.train_images import discover_train_images
from clipflow.errors import DataError


def by_name(sets: list[TestSet]) -> dict[str, TestSet]:
    return {s.name: s for s in sets}


# -------------------------------------------------------------------------- constants


def test_constants():
    assert len(PAPER_ORDER) == 19 and len(set(PAPER_ORDER)) == 19
    assert PAPER_ORDER[0] == "progan" and PAPER_ORDER[-1] == "dalle"
    assert all(name in DISPLAY_NAMES for name in PAPER_ORDER)
    assert DISPLAY_NAMES["seeingdark"] == "SITD" and DISPLAY_NAMES["dalle"] == "DALL-E"
    assert DISPLAY_NAMES["stylegan2"] == "StyleGAN2" and DISPLAY_NAMES["whichfaceisreal"] == "WFIR"
    assert set(CLASS_LEVEL_SETS) == {"progan", "stylegan", "stylegan2", "cyclegan"}
    assert SHARED_REAL_POOLS["imagenet"] == ["guided"]
    assert len(SHARED_REAL_POOLS["laion"]) == 7


# ------------------------------------------------------------------ discover_test_sets


def test_cnnspot_layout_with_class_level(tmp_path):
    make_cnnspot_tree(
        tmp_path,
        sets={"biggan": (3, 4), "mygen": (2, 2)},
        class_level={"progan": ["airplane", "cat", "dog"], "cyclegan": ["apple"]},
        n=2,
    )
    sets = discover_test_sets(tmp_path)
    assert [s.name for s in sets] == ["progan", "cyclegan", "biggan", "mygen"]  # paper order
    got = by_name(sets)
    assert (got["progan"].n_real, got["progan"].n_fake) == (6, 6)  # 3 classes pooled
    assert (got["biggan"].n_real, got["biggan"].n_fake) == (3, 4)
    assert got["progan"].display_name == "ProGAN" and got["mygen"].display_name == "mygen"
    assert all("0_real" in p.parts for p in got["progan"].real)
    assert all("1_fake" in p.parts for p in got["progan"].fake)
    assert {p.parts[-3] for p in got["progan"].real} == {"airplane", "cat", "dog"}


def test_univfd_shared_reals(tmp_path):
    make_univfd_tree(
        tmp_path, pools={"imagenet": 3, "laion": 5}, gens={"guided": 2, "ldm_200": 4, "dalle": 1}
    )
    sets = discover_test_sets(tmp_path)
    assert [s.name for s in sets] == ["guided", "ldm_200", "dalle"]  # pools are not sets
    got = by_name(sets)
    assert got["guided"].n_real == 3 and got["guided"].n_fake == 2
    assert {p.parts[-3] for p in got["guided"].real} == {"imagenet"}
    assert got["ldm_200"].n_real == 5 and got["ldm_200"].n_fake == 4
    assert {p.parts[-3] for p in got["ldm_200"].real} == {"laion"}
    assert got["dalle"].display_name == "DALL-E"
    assert "laion" in got["ldm_200"].note
    assert got["ldm_200"].real is not got["dalle"].real  # no shared mutable list


def test_mirror_layout_own_reals_beat_the_pool(tmp_path):
    make_univfd_tree(tmp_path, pools={"laion": 3}, gens={})
    make_cnnspot_tree(tmp_path, sets={"ldm_100": (2, 2)}, class_level={})
    (got,) = discover_test_sets(tmp_path)
    assert got.name == "ldm_100" and got.n_real == 2 and got.note == ""


def test_unknown_fake_only_set_takes_the_single_pool(tmp_path, caplog):
    make_univfd_tree(tmp_path, pools={"laion": 3}, gens={"mydiffusion": 2})
    (got,) = discover_test_sets(tmp_path)
    assert got.name == "mydiffusion" and got.n_real == 3
    assert "only pool" in got.note and "laion" in got.note


def test_unknown_fake_only_set_skipped_with_two_pools(tmp_path, caplog):
    make_univfd_tree(tmp_path, gens={"mydiffusion": 2, "guided": 2})
    with caplog.at_level(logging.WARNING):
        sets = discover_test_sets(tmp_path)
    assert [s.name for s in sets] == ["guided"]
    assert "mydiffusion" in caplog.text and "mydiffusion/0_real" in caplog.text


def test_fake_only_set_without_its_pool_skipped(tmp_path, caplog):
    make_univfd_tree(tmp_path, pools={"imagenet": 2}, gens={"guided": 2, "ldm_200": 2})
    with caplog.at_level(logging.WARNING):
        sets = discover_test_sets(tmp_path)
    assert [s.name for s in sets] == ["guided"]
    assert "ldm_200" in caplog.text and "laion" in caplog.text


def test_containers_combined_in_one_root(tmp_path):
    make_cnnspot_tree(tmp_path / "CNN_synth_testset", sets={"biggan": (2, 2), "crn": (1, 1)})
    make_univfd_tree(tmp_path / "diffusion_datasets")
    make_cnnspot_tree(tmp_path, sets={"zeta": (1, 1), "alpha": (1, 1)}, class_level={})
    names = [s.name for s in discover_test_sets(tmp_path)]
    assert names == ["progan", "biggan", "crn", "guided", "ldm_200", "alpha", "zeta"]


def test_container_with_only_class_level_sets(tmp_path):
    make_cnnspot_tree(tmp_path / "bench" / "CNN_synth_testset", sets={},
                      class_level={"stylegan2": ["car", "cat"]})  # fmt: skip
    (got,) = discover_test_sets(tmp_path)
    assert got.name == "stylegan2" and got.n_real == 4 and got.display_name == "StyleGAN2"


def test_unknown_names_with_classes_form_a_class_level_set(tmp_path):
    make_cnnspot_tree(tmp_path, sets={}, class_level={"mygan": ["x", "y"]}, n=1)
    (got,) = discover_test_sets(tmp_path)
    assert got.name == "mygan" and (got.n_real, got.n_fake) == (2, 2)


def test_known_order_then_extra_known_then_alphabetical(tmp_path):
    names = ["whichfaceisreal", "dalle", "aaa", "stylegan2", "progan", "zzz", "seeingdark"]
    make_cnnspot_tree(tmp_path, sets={n: (1, 1) for n in names}, class_level={})
    got = [s.name for s in discover_test_sets(tmp_path)]
    assert got == ["progan", "seeingdark", "dalle", "stylegan2", "whichfaceisreal", "aaa", "zzz"]


def test_root_that_is_itself_a_set(tmp_path):
    root = tmp_path / "biggan"
    write_image(root / "0_real" / "r.png", (4, 4))
    write_image(root / "1_fake" / "f.png", (4, 4))
    (got,) = discover_test_sets(root)
    assert got.name == "biggan" and got.display_name == "BigGAN"


def test_root_that_is_a_class_level_set(tmp_path):
    make_cnnspot_tree(tmp_path, sets={}, class_level={"progan": ["airplane", "cat"]}, n=1)
    (got,) = discover_test_sets(tmp_path / "progan")
    assert got.name == "progan" and (got.n_real, got.n_fake) == (2, 2)
    # a root with an unknown name holds one set per generator (plain layout)
    make_cnnspot_tree(tmp_path / "bench", sets={"g1": (1, 1), "g2": (1, 1)}, class_level={})
    assert [s.name for s in discover_test_sets(tmp_path / "bench")] == ["g1", "g2"]


def test_hidden_and_unlisted_files_ignored(tmp_path):
    make_cnnspot_tree(tmp_path, sets={"biggan": (2, 2)}, class_level={})
    write_image(tmp_path / "biggan" / "1_fake" / ".hidden.png", (4, 4))
    (tmp_path / "biggan" / "1_fake" / "readme.txt").write_text("x")
    write_image(tmp_path / ".trash" / "x" / "0_real" / "a.png", (4, 4))
    (got,) = discover_test_sets(tmp_path)
    assert got.n_fake == 2


def test_sets_missing_one_side_are_skipped(tmp_path, caplog):
    make_cnnspot_tree(tmp_path, sets={"biggan": (2, 2), "crn": (2, 0), "imle": (0, 0)},
                      class_level={})  # fmt: skip
    with caplog.at_level(logging.WARNING):
        sets = discover_test_sets(tmp_path)
    assert [s.name for s in sets] == ["biggan"]
    assert "'crn'" in caplog.text and "'imle'" in caplog.text


def assert_one_line_data_error(root: Path, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        discover_test_sets(root)
    assert "\n" not in str(info.value)


def test_error_missing_root(tmp_path):
    assert_one_line_data_error(tmp_path / "nope", "data folder not found.*data.test_root")


def test_error_root_is_a_file(tmp_path):
    assert_one_line_data_error(write_image(tmp_path / "x.png", (4, 4)), "not a folder")


def test_error_no_datasets(tmp_path):
    write_image(tmp_path / "some" / "image.png", (4, 4))
    assert_one_line_data_error(tmp_path, "no 0_real/1_fake folders under .*Data layout")


def test_error_all_sets_empty(tmp_path):
    make_cnnspot_tree(tmp_path, sets={"biggan": (0, 0), "crn": (3, 0)}, class_level={})
    assert_one_line_data_error(tmp_path, "no usable test set")


def test_error_only_pools(tmp_path):
    make_univfd_tree(tmp_path, gens={})
    assert_one_line_data_error(tmp_path, "no usable test set")


def test_error_duplicate_names_across_containers(tmp_path):
    make_cnnspot_tree(tmp_path / "a", sets={"biggan": (1, 1)}, class_level={})
    make_cnnspot_tree(tmp_path / "b", sets={"biggan": (1, 1)}, class_level={})
    with pytest.raises(DataError) as info:
        discover_test_sets(tmp_path)
    msg = str(info.value)
    assert "biggan" in msg and str(tmp_path / "a") in msg and str(tmp_path / "b") in msg
    assert "\n" not in msg


# ----------------------------------------------------------------------- univfd_sample


def fake_set(n_real: int, n_fake: int) -> TestSet:
    real = [Path(f"r/{i}.png") for i in range(n_real)]
    fake = [Path(f"f/{i}.png") for i in range(n_fake)]
    return TestSet("x", "X", real, fake)


def test_univfd_sample_caps_at_max():
    ts = fake_set(1500, 1200)
    out = univfd_sample(ts, 1000, seed=0)
    assert (out.n_real, out.n_fake) == (1000, 1000)
    assert set(out.real) <= set(ts.real) and len(set(out.real)) == 1000
    assert out.note == "" and ts.n_real == 1500  # input untouched


def test_univfd_sample_falls_back_to_100(caplog):
    with caplog.at_level(logging.WARNING):
        out = univfd_sample(fake_set(2000, 999), 1000)
    assert (out.n_real, out.n_fake) == (100, 100)  # the quirk: not 999
    assert "100" in out.note and "fell back" in caplog.text
    small = univfd_sample(fake_set(180, 40), 1000)
    assert (small.n_real, small.n_fake) == (100, 40)


def test_univfd_sample_deterministic_by_seed():
    ts = fake_set(300, 300)
    a, b, c = univfd_sample(ts, 50, 0), univfd_sample(ts, 50, 0), univfd_sample(ts, 50, 1)
    assert a.real == b.real and a.fake == b.fake
    assert a.real != c.real
    assert a.real != ts.real[:50]  # actually shuffled


def test_univfd_sample_keeps_existing_note():
    ts = fake_set(10, 10)
    ts.note = "pool"
    assert univfd_sample(ts, 1000).note.startswith("pool; ")


# ---------------------------------------------------------------- discover_train_images


def test_train_never_returns_fakes_class_layout(tmp_path):
    make_train_tree(tmp_path, classes=["airplane", "cat"], n_real=6, n_fake=6)
    split = discover_train_images(tmp_path, per_class=4, val_fraction=0.25)
    for p in split.train + split.val:
        assert "1_fake" not in p.parts and "0_real" in p.parts
    assert split.classes == {"airplane": 4, "cat": 4}
    assert len(split.val) == 2  # round(0.25 * 4) per class
    assert not set(split.train) & set(split.val)


def test_train_folder_of_images_skips_fake_subtree(tmp_path):
    for i in range(3):
        write_image(tmp_path / "photos" / f"{i}.jpg", (4, 4), seed=i)
        write_image(tmp_path / "photos" / "x" / "1_fake" / f"{i}.png", (4, 4), seed=i)
    split = discover_train_images(tmp_path / "photos", per_class=None, val_fraction=0)
    assert len(split.train) == 3 and split.val == []
    assert split.classes == {"photos": 3}
    assert all("1_fake" not in p.parts for p in split.train)


def test_train_symlink_into_fake_folder_excluded(tmp_path):
    make_train_tree(tmp_path / "data", classes=["cat"], n_real=3, n_fake=2)
    os.symlink(tmp_path / "data" / "cat" / "1_fake", tmp_path / "data" / "cat" / "0_real" / "sneak")
    split = discover_train_images(tmp_path / "data", per_class=None, val_fraction=0)
    assert len(split.train) == 3
    assert all("1_fake" not in Path(os.path.realpath(p)).parts for p in split.train)


def test_train_direct_0_real_layout(tmp_path):
    make_cnnspot_tree(tmp_path, sets={"lsun": (7, 3)}, class_level={})
    split = discover_train_images(tmp_path / "lsun", per_class=5, val_fraction=0.2)
    assert split.classes == {"lsun": 5} and len(split.val) == 1
    assert all(p.parent.name == "0_real" for p in split.train + split.val)


def test_train_nested_layout_uses_only_0_real(tmp_path):
    make_train_tree(tmp_path / "progan_train", classes=["a", "b"], n_real=2, n_fake=2)
    write_image(tmp_path / "README.png", (4, 4))
    split = discover_train_images(tmp_path, per_class=None, val_fraction=0)
    assert len(split.train) == 4 and all("0_real" in p.parts for p in split.train)


def test_train_per_class_and_small_class(tmp_path, caplog):
    make_train_tree(tmp_path, classes=["big"], n_real=30, n_fake=0)
    make_train_tree(tmp_path, classes=["small"], n_real=3, n_fake=0)
    with caplog.at_level(logging.WARNING):
        split = discover_train_images(tmp_path, per_class=10, val_fraction=0.1)
    assert split.classes == {"big": 10, "small": 2}
    assert len(split.val) == 2  # one per class
    assert "small" in caplog.text


def test_train_deterministic_and_independent_of_other_classes(tmp_path):
    make_train_tree(tmp_path / "one", classes=["cat"], n_real=20, n_fake=1)
    make_train_tree(tmp_path / "two", classes=["airplane", "cat"], n_real=20, n_fake=1)
    a = discover_train_images(tmp_path / "one", per_class=5, seed=3)
    b = discover_train_images(tmp_path / "one", per_class=5, seed=3)
    c = discover_train_images(tmp_path / "one", per_class=5, seed=4)
    d = discover_train_images(tmp_path / "two", per_class=5, seed=3)
    assert a == b
    assert a.train != c.train

    def cats(paths: list[Path]) -> list[str]:
        return [p.name for p in paths if p.parts[-3] == "cat"]

    assert cats(a.train) == cats(d.train) and cats(a.val) == cats(d.val)


def test_train_errors_are_one_line(tmp_path):
    cases = [
        (tmp_path / "missing", "not found"),
        (tmp_path / "empty", "no natural images"),
        (tmp_path / "single", "only 1 natural image"),
        (tmp_path / "fakes_only", "no natural images"),
        (tmp_path / "t" / "1_fake", "inside a 1_fake folder"),
    ]
    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "single" / "0_real" / "a.png", (4, 4))
    make_train_tree(tmp_path / "fakes_only", classes=["cat"], n_real=0, n_fake=3)
    write_image(tmp_path / "t" / "1_fake" / "a.png", (4, 4))
    write_image(tmp_path / "t" / "1_fake" / "b.png", (4, 4))
    for root, match in cases:
        with pytest.raises(DataError, match=match) as info:
            discover_train_images(root)
        assert "\n" not in str(info.value)


def test_discovery_lists_files_without_opening_them(tmp_path, monkeypatch):
    make_cnnspot_tree(tmp_path / "test")
    make_train_tree(tmp_path / "train")
    (tmp_path / "test" / "biggan" / "1_fake" / "broken.png").write_bytes(b"not a png")

    def refuse(*args, **kwargs):
        raise AssertionError("discovery must not decode images")

    monkeypatch.setattr("PIL.Image.open", refuse)
    assert by_name(discover_test_sets(tmp_path / "test"))["biggan"].n_fake == 4
    split = discover_train_images(tmp_path / "train", per_class=2)
    assert split.classes == {"airplane": 2, "cat": 2}
