"""GenImage, Chameleon, Synthbuster and WildRF: discovery on mock layouts, check-data, the
per-benchmark means of clipflow-eval, and the data.reencode switch (CPU, tiny images)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import make_cnnspot_tree, write_image
from PIL import Image

from clipflow.backbones.backbone import load_backbone
from clipflow.backbones.config import BackboneConfig
from clipflow.cli import evaluate as eval_cli
from clipflow.cli.check_data import main as check_data_main
from clipflow.cli.check_data import parse_request
from clipflow.data import synthetic
from clipflow.data.benchmarks import (
    KNOWN_COUNTS,
    LAYOUTS,
    discover_benchmark_sets,
)
from clipflow.data.layouts import TestSet
from clipflow.errors import ClipflowError, DataError
from clipflow.eval.means import summarize
from clipflow.runs.check_data import run_check
from clipflow.runs.evaluate import test_features as extract_test_features
from clipflow.settings.config import DataConfig
from clipflow.settings.rules import check
from clipflow.transforms.reencode import Reencode, parse_reencode, reencode_variant

QUIET = ("hydra/job_logging=none", "hydra/hydra_logging=none")


def _imgs(folder: Path, n: int, seed: int, suffix: str = ".png") -> None:
    for i in range(n):
        write_image(folder / f"{seed}_{i}{suffix}", size=(12, 10), seed=seed * 100 + i)


def make_genimage(root: Path, n: int = 2) -> Path:
    """Two generators as the archives unpack (<Gen>/imagenet_..._<gen>/{train,val}/{ai,nature})
    and one flat (ADM/val/...)."""
    for i, (outer, inner) in enumerate(
        [("stable_diffusion_v_1_4", "imagenet_ai_0419_sdv4"), ("Midjourney", "imagenet_midjourney")]
    ):
        for split in ("train", "val"):
            _imgs(root / outer / inner / split / "nature", n, 10 * i + 1)
            _imgs(root / outer / inner / split / "ai", n + 1, 10 * i + 2)
    _imgs(root / "ADM" / "val" / "nature", n, 50)
    _imgs(root / "ADM" / "val" / "ai", n, 51)
    return root


def make_chameleon(root: Path, n_real: int = 3, n_fake: int = 2) -> Path:
    _imgs(root / "Chameleon" / "test" / "0_real", n_real, 60, ".jpg")
    _imgs(root / "Chameleon" / "test" / "1_fake", n_fake, 61)
    return root


def make_synthbuster(root: Path, gens=("dalle2", "glide"), n: int = 2) -> Path:
    """n + 1 RAISE reals, n fakes per generator (clipflow.data.synthetic's miniature)."""
    synthetic.make_synthbuster(root / "synthbuster", gens, n=n)
    return root


def make_wildrf(root: Path, n: int = 2) -> Path:
    w = root / "WildRF"
    for split in ("train", "val"):
        _imgs(w / split / "0_real", n, 80)
        _imgs(w / split / "1_fake", n, 81)
    for i, p in enumerate(("reddit", "twitter", "facebook")):
        _imgs(w / "test" / p / "0_real", n + i, 82 + 2 * i, ".jpg")
        _imgs(w / "test" / p / "1_fake", n, 83 + 2 * i)
    return root


def make_all(root: Path) -> Path:
    for make in (make_genimage, make_chameleon, make_synthbuster, make_wildrf):
        make(root)
    return root


def _by_name(sets):
    return {s.name: s for s in sets}


# ----------------------------------------------------------------------------- discovery


def test_genimage_val_split_per_generator(tmp_path: Path):
    sets = _by_name(discover_benchmark_sets(make_genimage(tmp_path), "genimage"))
    assert list(sets) == ["genimage/midjourney", "genimage/sdv14", "genimage/adm"]
    sd = sets["genimage/sdv14"]
    assert (sd.n_real, sd.n_fake) == (2, 3)  # the val split only, not train's 2 + 3 more
    assert all("/val/nature/" in str(p) for p in sd.real)
    assert all("/val/ai/" in str(p) for p in sd.fake)
    assert {s.benchmark for s in sets.values()} == {"genimage"}
    assert sd.protocol == LAYOUTS["genimage"].protocol and sd.protocol.startswith("genimage-val")
    assert sd.display_name == "GenImage SD V1.4"


def test_chameleon_synthbuster_wildrf_layouts(tmp_path: Path):
    sets = _by_name(discover_benchmark_sets(make_all(tmp_path), "auto"))
    assert (sets["chameleon"].n_real, sets["chameleon"].n_fake) == (3, 2)
    assert sets["chameleon"].benchmark == "chameleon"
    dalle2, glide = sets["synthbuster/dalle2"], sets["synthbuster/glide"]
    assert dalle2.real == glide.real and len(dalle2.real) == 3  # RAISE reals shared
    assert all("real_RAISE_1k" in str(p) for p in dalle2.real)
    assert all("/glide/" in str(p) for p in glide.fake) and glide.n_fake == 2
    wild = [n for n in sets if n.startswith("wildrf/")]
    assert sorted(wild) == ["wildrf/facebook", "wildrf/reddit", "wildrf/twitter"]
    assert (sets["wildrf/facebook"].n_real, sets["wildrf/facebook"].n_fake) == (4, 2)
    assert all("/test/" in str(p) for p in sets["wildrf/reddit"].real)  # never train/val
    assert sets["wildrf/reddit"].protocol == LAYOUTS["wildrf"].protocol
    assert len(sets) == 3 + 1 + 2 + 3
    # pointing at a benchmark's own folder finds the same sets
    inner = _by_name(discover_benchmark_sets(tmp_path / "WildRF" / "test", "auto"))
    assert set(inner) == {"wildrf/facebook", "wildrf/reddit", "wildrf/twitter"}
    cham = discover_benchmark_sets(tmp_path / "Chameleon", "auto")
    assert [s.name for s in cham] == ["chameleon"]


def test_auto_keeps_cnnspot_sets_beside_modern_ones_apart(tmp_path: Path):
    make_synthbuster(tmp_path)
    make_cnnspot_tree(tmp_path / "cnn", sets={"biggan": (2, 2)}, class_level={})
    sets = _by_name(discover_benchmark_sets(tmp_path, "auto"))
    assert sets["biggan"].benchmark == "univfd" and "synthbuster/glide" in sets
    # GenImage's BigGAN or Synthbuster's GLIDE never take a paper set's name
    assert "glide" not in sets
    only = discover_benchmark_sets(tmp_path, "synthbuster")
    assert {s.benchmark for s in only} == {"synthbuster"}


def test_plain_cnnspot_root_is_unchanged_under_auto(tmp_path: Path):
    make_cnnspot_tree(tmp_path, sets={"biggan": (2, 2), "mygen": (1, 1)}, class_level={})
    sets = discover_benchmark_sets(tmp_path, "auto")
    assert [s.name for s in sets] == ["biggan", "mygen"]
    assert {s.benchmark for s in sets} == {"univfd"}


def test_asked_for_benchmark_missing_is_one_clear_error(tmp_path: Path):
    make_chameleon(tmp_path)
    with pytest.raises(DataError, match="no GenImage set"):
        discover_benchmark_sets(tmp_path, "genimage")
    with pytest.raises(DataError, match="data.benchmark='imagenet'"):
        discover_benchmark_sets(tmp_path, "imagenet")


def test_synthbuster_without_raise_reals_is_skipped_with_a_warning(tmp_path: Path, caplog):
    _imgs(tmp_path / "synthbuster" / "dalle2", 2, 1)
    _imgs(tmp_path / "synthbuster" / "dalle3", 2, 2)
    with pytest.raises(DataError):
        discover_benchmark_sets(tmp_path, "auto")
    assert "RAISE-1k reals" in caplog.text


# ----------------------------------------------------------------------------- check-data


def _check(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return run_check(parse_request(args), out=out), out.getvalue()


def test_check_data_counts_and_unknown_counts(tmp_path: Path):
    code, out = _check(f"data.test_root={make_all(tmp_path)}")
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    # Synthbuster dalle2's 1000/1000 is verified (GRIP's file list): a mock of 3/2 differs
    assert (
        "counts differ" in lines["synthbuster/dalle2"] and "(1000)" in lines["synthbuster/dalle2"]
    )
    assert "synthbuster/dalle2: 3 real / 2 fake, the release has 1000 / 1000" in out
    # GLIDE's count is not verified: no number is invented
    assert (
        "count not known" in lines["synthbuster/glide"]
        and "(1000)" not in lines["synthbuster/glide"]
    )
    for name in ("genimage/sdv14", "chameleon", "wildrf/reddit"):
        assert "count not known" in lines[name]
    assert "genimage-val" in lines["genimage/sdv14"]
    # no paper set is "missing" from a root of today's benchmarks, nothing "mis-laid"
    assert "MISSING" not in out and "mis-laid" not in out
    assert code == 0  # count differences are warnings
    code, _ = _check(f"data.test_root={tmp_path}", "strict=true")
    assert code == 1


def test_every_modern_count_names_its_source():
    for name, kc in KNOWN_COUNTS.items():
        assert "http" in kc.source or "Synthbuster" in kc.source, name
        if kc.verified:
            assert kc.real is not None and kc.fake is not None, name
        else:
            assert kc.expected() is None, name


def test_check_data_command_in_process(tmp_path: Path, capsys):
    make_genimage(tmp_path)
    with pytest.raises(SystemExit) as info:  # not a Hydra command: plain argv
        check_data_main([f"data.test_root={tmp_path}", "data.benchmark=genimage"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "genimage/adm" in out and "count not known" in out
    with pytest.raises(SystemExit) as info:
        check_data_main([f"data.test_root={tmp_path}", "data.benchmark=wildrf"])
    out = capsys.readouterr().out
    assert info.value.code == 1 and "no WildRF set" in out
    with pytest.raises(SystemExit) as info:
        check_data_main([f"data.test_root={tmp_path}", "data.benchmark=imagenet"])
    assert info.value.code == 2 and "data.benchmark" in capsys.readouterr().err


# ----------------------------------------------------------------------------- summary


def _row(name: str, bench: str, ap: float) -> dict:
    return {
        "dataset": name, "display_name": name, "benchmark": bench,
        "protocol": LAYOUTS[bench].protocol,
        "ap": ap, "acc@val": ap, "acc@oracle": ap, "auc": ap, "real_acc": ap, "fake_acc": ap,
        "n_real": 2, "n_fake": 2,
    }  # fmt: skip


def test_summary_has_one_mean_per_benchmark_and_keeps_the_papers_mean():
    from clipflow.eval.metrics import METRIC_COLUMNS

    rows = [
        _row("biggan", "univfd", 90.0),
        _row("genimage/adm", "genimage", 60.0),
        _row("genimage/sdv14", "genimage", 80.0),
        _row("synthbuster/glide", "synthbuster", 50.0),
    ]
    for r in rows:  # whatever metric columns this version has
        for k in METRIC_COLUMNS:
            r.setdefault(k, 2 if k.startswith("n_") else r["ap"])
    means = summarize(rows)
    assert means.mean.sets == ("biggan",) and means.mean.values["ap"] == 90.0
    bench = {m.key: m for m in means.per_benchmark}
    assert set(bench) == {"mean_genimage", "mean_synthbuster"}
    assert bench["mean_genimage"].values["ap"] == pytest.approx(70.0)
    assert "ours" in bench["mean_genimage"].label and "genimage-val" in bench["mean_genimage"].label
    table = [r["dataset"] for r in means.table_rows()]
    assert table == ["mean", "mean_all", "mean_genimage", "mean_synthbuster"]
    js = means.to_json()
    assert js["benchmark_means"]["mean_genimage"]["sets"] == ["genimage/adm", "genimage/sdv14"]
    assert not js["benchmark_means"]["mean_genimage"]["is_paper_mean"]


def test_a_set_named_like_a_benchmark_mean_is_refused():
    with pytest.raises(DataError, match="mean_genimage"):
        summarize([_row("mean_genimage", "univfd", 1.0)])


# ----------------------------------------------------------------------------- reencode


def test_reencode_setting_is_checked():
    assert parse_reencode("none") is None
    r = parse_reencode("short16+jpeg96")
    assert (r.short_side, r.quality) == (16, 96)
    assert check("data.reencode", "jpeg96", str) == "jpeg96"
    for bad in ("jpeg0", "jpeg101", "png", "short0+jpeg90", "jpeg96+short16"):
        with pytest.raises(ClipflowError):
            check("data.reencode", bad, str)
    assert DataConfig().reencode == "none" and DataConfig().benchmark == "auto"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("short1+jpeg90", "short side 1 px is outside 16-4096 px"),  # a torch internal assert
        ("short15+jpeg90", "short side 15 px"),
        ("short4097+jpeg90", "short side 4097 px"),
        ("short99999999+jpeg90", "short side 99999999 px"),  # a 4e16-byte allocation per image
        ("short512+jpeg0", "JPEG quality 0 is outside 1-100"),
    ],
)
def test_reencode_short_side_has_a_range(spec: str, reason: str):
    """The short side is 16-4096 px (clipflow/transforms/reencode.py says why), refused when
    the settings are built: out of it every image failed, each with a library's error."""
    with pytest.raises(ClipflowError) as info:
        check("data.reencode", spec, str)
    assert reason in str(info.value) and "short<pixels 16-4096>" in str(info.value)
    with pytest.raises(DataError, match=reason):
        parse_reencode(spec)


def test_reencode_range_ends_pass_and_bind_library_callers_too():
    assert parse_reencode("short16+jpeg1").short_side == 16
    assert parse_reencode("short4096+jpeg100").short_side == 4096
    with pytest.raises(DataError, match="short side 1 px"):
        Reencode("short1+jpeg90", 90, 1)  # built directly, not through the settings


@pytest.mark.parametrize("extra", [[], ["perturb=jpeg50"]], ids=["eval", "robustness"])
def test_eval_with_no_scorable_set_names_a_skipped_txt_that_exists(
    trained_run: Path, tmp_path: Path, monkeypatch, capsys, extra: list[str]
):
    """Every fake unreadable: no set has both classes. The message pointed to a skipped.txt
    that was never written; now it is written first, and one reason is given inline."""
    root = make_cnnspot_tree(tmp_path / "test", sets={"biggan": (2, 2)}, class_level={})
    for fake in (root / "biggan" / "1_fake").iterdir():
        fake.write_bytes(b"not an image")
    out = tmp_path / "eval"
    argv = [
        "clipflow-eval", f"ckpt={trained_run}", f"data.test_root={root}", "device=cpu",
        "data.num_workers=0", f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}",
        *extra, *QUIET,
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as info:
        eval_cli.main()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and err.startswith("error: no dataset had readable"), err
    assert "2 file(s) skipped, e.g. " in err and "1_fake" in err
    listed = out / "skipped.txt"
    assert f"every one in {listed}" in err and listed.is_file()
    assert len(listed.read_text().splitlines()) == 2 and not (out / "results.csv").exists()


def test_reencode_changes_both_classes_identically(tmp_path: Path):
    """An image stored as PNG and the same pixels stored as lossless-equal PNG under the other
    label get the same re-encoded features; and re-encoding changes what the backbone sees."""
    real = write_image(tmp_path / "real.png", size=(24, 20), seed=3)
    fake = tmp_path / "fake.png"
    fake.write_bytes(real.read_bytes())
    backbone = load_backbone(BackboneConfig(name="tiny", pretrained=None))
    sets = [TestSet("s", "s", [real], [fake])]
    plain = DataConfig(num_workers=0, batch_size=4)
    enc = DataConfig(num_workers=0, batch_size=4, reencode="jpeg96")
    f0 = extract_test_features(backbone, sets, plain, None, "cpu").features[0]
    f1 = extract_test_features(backbone, sets, enc, None, "cpu").features[0]
    assert torch.equal(f1[0], f1[1])  # same pixels, same treatment whatever the label
    assert not torch.allclose(f0, f1)  # the switch did something
    v = reencode_variant("jpeg96")
    with Image.open(real) as im:
        img = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    assert torch.equal(v.fn(img), v.fn(img))  # deterministic
    assert v.key == "reencode:jpeg96"  # the cache key names it


def test_eval_records_benchmarks_means_and_reencode(
    trained_run: Path, tmp_path: Path, monkeypatch, capsys
):
    root = make_synthbuster(make_genimage(tmp_path / "test"))
    out = tmp_path / "eval"
    argv = [
        "clipflow-eval", f"ckpt={trained_run}", f"data.test_root={root}", "device=cpu",
        "data.num_workers=0", "data.reencode=jpeg96", f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={out}", *QUIET,
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    eval_cli.main()
    with open(out / "results.csv", newline="") as fh:
        rows = {r["dataset"]: r for r in csv.DictReader(fh)}
    assert {"mean_genimage", "mean_synthbuster", "genimage/adm", "synthbuster/glide"} <= set(rows)
    gen = [k for k in rows if k.startswith("genimage/")]
    want = np.mean([float(rows[k]["ap"]) for k in gen])
    assert float(rows["mean_genimage"]["ap"]) == pytest.approx(want, abs=1e-5)
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["reencode"] == {"name": "jpeg96", "short_side": None, "jpeg_quality": 96}
    assert meta["benchmark"] == "auto"
    assert {d["benchmark"] for d in meta["datasets"]} == {"genimage", "synthbuster"}
    assert "mean_synthbuster" in meta["benchmark_means"]
    md = (out / "results.md").read_text()
    assert "re-encoded `jpeg96`" in md and "genimage-val" in md
    assert "none in the paper" in md or "not comparable" in md  # the mean is never the paper's


# ----------------------------------------------------------------------------- download


def _download(capsys, *args: str) -> tuple[int, str]:
    from clipflow.cli import download_data

    with pytest.raises(SystemExit) as info:
        download_data.main(list(args))
        raise SystemExit(0)
    return info.value.code, capsys.readouterr().out


def test_download_prints_each_benchmarks_source_license_and_layout(tmp_path: Path, capsys):
    from clipflow.data.download import load_benchmark_guides

    guides = load_benchmark_guides()
    assert set(guides) == {"genimage", "chameleon", "synthbuster", "wildrf"}
    assert all(not g["verified"] for g in guides.values())  # nothing computed here
    code, out = _download(capsys, f"root={tmp_path}", "benchmarks=all")
    assert code == 0 and not (tmp_path / "downloads").exists()
    for needle in (
        "github.com/GenImage-Dataset/GenImage",
        "CC BY-NC-SA 4.0",
        "tattoo.ysl@gmail.com",
        "zenodo.org/records/10066460",
        "0695bd328e16ea21c5c9cc2ae1d994ff",
        "not verified by clipflow",
        "1A0xoL44Yg68ixd-FuIJn2VC4vdZ6M2gn",
        f"data.test_root={tmp_path / 'benchmarks'}",
    ):
        assert needle in out, needle
    code, out = _download(capsys, "benchmarks=[wildrf]")
    assert code == 0 and "WildRF" in out and "Synthbuster" not in out
    code, out = _download(capsys, f"root={tmp_path}")  # the plain dry run points at them
    assert "benchmarks=all" in out


def test_download_unknown_benchmark_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        from clipflow.cli import download_data

        download_data.main(["benchmarks=[imagenet]"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "choose among all, genimage" in err
    assert len(err.strip().splitlines()) == 1
