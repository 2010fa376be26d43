"""Hostile inputs: awkward image files and hostile checkpoints are scored or refused clearly.

Root can read a chmod-000 file, so "unreadable" is exercised with a dangling symlink, a
self-looping symlink, a FIFO named ``.jpg`` (all real on any machine), a monkeypatched
PermissionError (as root), and a real chmod 000 where the tests do not run as root.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from fixtures_images import make_hostile_files, write_image
from PIL import Image

import clipflow.data.imageio
import clipflow.features.image_input
from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.checkpoints.save import save_checkpoint
from clipflow.cli import detect as detect_cli
from clipflow.core.fileio import file_sha256
from clipflow.detect import Detector
from clipflow.errors import CheckpointError
from clipflow.flow.config import FlowConfig
from clipflow.flow.model import CLIPFlow

SCORED = [
    "really_png.jpg",
    "cmyk.jpg",
    "gray16.png",
    "palette.png",
    "gray.png",
    "gray_alpha.png",
    "rgba.png",
    "bilevel.png",
    "float.tif",
    "anim.webp",
    "rotated.jpg",
    "one.png",
    "X.PNG",
    "a.b.jpg",
    "inner.png",
    "anim.gif",
]
REFUSED = {
    "zero.jpg": "zero-byte",
    "truncated.jpg": "truncated",
    "notes.jpg": "not an image",
    "bomb.png": "too large",
    "bomb.jpg": "too large",
    "bomb.gif": "too large",
    "gone.jpg": "broken symbolic link",
    "selfloop.jpg": "symbolic links",
    "pipe.jpg": "not a regular file",
    "missing.jpg": "not found",
    "loop": "a loop",  # the folder symlink back to itself: reported, not walked twice
}


def _bomb_headers(folder: Path) -> None:
    """A JPEG and a GIF whose headers declare ~4e9 pixels in a few hundred bytes."""
    jpg = bytearray((write_image(folder / "small.jpg", (8, 8))).read_bytes())
    sof = jpg.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    jpg[sof + 5 : sof + 9] = (65000).to_bytes(2, "big") * 2
    (folder / "bomb.jpg").write_bytes(bytes(jpg))
    (folder / "small.jpg").unlink()
    gif = bytearray(write_image(folder / "small.gif", (8, 8), mode="P").read_bytes())
    gif[6:10] = (65535).to_bytes(2, "little") * 2  # logical screen width, height
    (folder / "bomb.gif").write_bytes(bytes(gif))
    (folder / "small.gif").unlink()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "photos"
    make_hostile_files(folder)
    _bomb_headers(folder)
    os.symlink(folder, folder / "loop")  # a folder symlink back to itself
    os.symlink(folder / "nowhere.jpg", folder / "gone.jpg")  # dangling
    os.symlink("selfloop.jpg", folder / "selfloop.jpg")  # ELOOP on open
    os.mkfifo(folder / "pipe.jpg")  # opening it would block forever
    write_image(folder / "dir.jpg" / "inner.png", (12, 12), seed=3)  # a folder named like an image
    return folder


@pytest.fixture(scope="module")
def det(trained_run: Path) -> Detector:
    return Detector.from_checkpoint(trained_run, device="cpu", batch_size=8)


def test_cli_scores_or_explains_every_file(corpus: Path, trained_run: Path, tmp_path: Path):
    start = time.perf_counter()
    proc = run_cli(
        "clipflow-detect",
        f"ckpt={trained_run}",
        "device=cpu",
        "num_workers=0",
        "out=report.jsonl",
        f"inputs=[{corpus},{corpus / 'anim.gif'},{corpus / 'bomb.gif'},{corpus / 'missing.jpg'}]",
        cwd=tmp_path,
    )
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert time.perf_counter() - start < 120  # the bombs were not decoded
    records = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert (
        len(by_name) == len(records) == len(SCORED) + len(REFUSED)
    )  # no duplicate through the loop
    for name in SCORED:
        r = by_name[name]
        assert (
            r["error"] is None
            and np.isfinite(r["score"])
            and r["decision"] in ("real", "ai-generated")
        ), r
    for name, reason in REFUSED.items():
        assert by_name[name]["score"] is None and reason in by_name[name]["error"], by_name[name]
    assert sorted(os.listdir(tmp_path)) == ["report.jsonl"]  # no run folder, no log, no .hydra
    assert "unreadable" in proc.stdout and f"{len(REFUSED)} of {len(records)} inputs" in proc.stderr


def test_animation_scores_its_first_frame(det: Detector, corpus: Path, monkeypatch):
    # Decided by the pixels the detector decoded, not by the score gap between the red and the
    # blue frame: a random-weight backbone may score them closer than any tolerance.
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    decoded: list[np.ndarray] = []
    to_tensor = clipflow.features.image_input.pil_to_uint8_tensor

    def spy(img):
        decoded.append(np.asarray(img.convert("RGB")))
        return to_tensor(img)

    monkeypatch.setattr(clipflow.features.image_input, "pil_to_uint8_tensor", spy)
    ref = det.score([red])[0]
    for name in ("anim.gif", "anim.webp"):
        decoded.clear()
        got = det.score(corpus / name)[0]
        assert len(decoded) == 1 and np.array_equal(decoded[0], red), name  # the red frame
        assert got == pytest.approx(ref, abs=1e-5)


def test_exif_rotation_is_applied_before_scoring(det: Detector, corpus: Path, monkeypatch):
    # Decided by the pixels the detector decoded (as the animation test): a random-weight
    # flow may score the stored and the shown orientation closer than any tolerance.
    decoded: list[np.ndarray] = []
    to_tensor = clipflow.features.image_input.pil_to_uint8_tensor

    def spy(img):
        out = to_tensor(img)
        decoded.append(out.permute(1, 2, 0).numpy())
        return out

    monkeypatch.setattr(clipflow.features.image_input, "pil_to_uint8_tensor", spy)
    with Image.open(corpus / "rotated.jpg") as raw:
        stored = np.array(raw.convert("RGB"))  # (20, 40, 3): as stored, not as displayed
        shown = np.array(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270))
        scores = det.score([corpus / "rotated.jpg", raw, shown])
    assert stored.shape == (20, 40, 3) and shown.shape == (40, 20, 3)
    assert len(decoded) == 2  # the file and the PIL image; the array needs no decoding
    assert all(np.array_equal(d, shown) for d in decoded)  # both rotated as displayed
    assert scores == pytest.approx([scores[2]] * 3, abs=1e-5)


def test_bombs_are_rejected_fast_without_memory_growth(det: Detector, corpus: Path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    out = det.score_files(
        [corpus / "bomb.png", corpus / "bomb.jpg", corpus / "bomb.gif", corpus / "one.png"]
    )
    assert time.perf_counter() - start < 10
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 200 * 1024
    assert [r.error is not None and "too large" in r.error for r in out] == [
        True,
        True,
        True,
        False,
    ]


def test_permission_denied_is_reported_and_the_rest_scored(
    det: Detector, corpus: Path, monkeypatch
):
    # As root chmod 000 does not stop reads, so PIL's open raises the error the OS would give.
    locked = corpus / "gray.png"
    real_open = clipflow.data.imageio.Image.open

    def guarded_open(fp, *args, **kwargs):
        if str(fp) == str(locked):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(clipflow.data.imageio.Image, "open", guarded_open)
    out = det.score_files([corpus / "rgba.png", locked, corpus / "one.png"])
    assert out[1].error == "cannot read file: Permission denied"
    assert out[0].score is not None and out[2].score is not None


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads chmod-000 files; covered by the monkeypatched test"
)
def test_chmod_000_file_is_reported(det: Detector, tmp_path: Path):
    locked = write_image(tmp_path / "locked.png")
    locked.chmod(0)
    assert "Permission denied" in det.score_files([locked])[0].error


# ----------------------------------------------------------------------------- checkpoints


class _SideEffect:
    """Unpickling this creates ``marker``: the proof that a loader ran pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _copy_ckpt(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "model.json"):
        shutil.copy(src / name, dst / name)
    return dst


def _edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta.update(changes)
    (folder / "model.json").write_text(json.dumps(meta))


def _refused(target: Path, needle: str) -> str:
    with pytest.raises(CheckpointError) as err:
        Detector.from_checkpoint(target, device="cpu")
    msg = str(err.value)
    assert needle in msg and "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickled_payload_is_refused_and_never_executed(trained_run: Path, tmp_path: Path, writer):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_SideEffect(proof)))
    assert proof.exists()  # the payload really runs code when unpickled
    marker = tmp_path / "pwned"
    folder = _copy_ckpt(trained_run, tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    if writer == "pickle":
        weights.write_bytes(pickle.dumps({"model.dr.weight": _SideEffect(marker)}))
    else:
        torch.save({"model.dr.weight": _SideEffect(marker)}, weights)
    _refused(folder, "does not match the hash")  # the JSON's hash catches the swap first
    _edit_meta(folder, sha256=file_sha256(weights))  # an attacker who also forges the JSON
    _refused(folder, "cannot read")
    assert not marker.exists()


def test_truncated_other_version_and_edited_json_are_refused(trained_run: Path, tmp_path: Path):
    a = _copy_ckpt(trained_run, tmp_path / "a")
    (a / "model.safetensors").write_bytes((a / "model.safetensors").read_bytes()[:-64])
    _refused(a, "truncated")
    b = _copy_ckpt(trained_run, tmp_path / "b")
    _edit_meta(b, format_version=2)
    _refused(b, "version 2")
    c = _copy_ckpt(trained_run, tmp_path / "c")
    _edit_meta(c, flow={"dr_dim": 8, "wings": 2})
    _refused(c, "not a usable clipflow checkpoint")
    d = _copy_ckpt(trained_run, tmp_path / "d")
    (d / "model.json").write_text((d / "model.json").read_text()[:100])
    _refused(d, "unreadable")


def test_other_feature_size_is_refused(trained_run: Path, tmp_path: Path):
    backbone = load_checkpoint(trained_run).backbone  # the tiny backbone gives 768-d features
    save_checkpoint(tmp_path, CLIPFlow(32, FlowConfig(dr_dim=8, n_blocks=1)), 0.0, backbone, {})
    _refused(tmp_path, "expects 32-d features")


def test_cli_refuses_a_bad_checkpoint_in_one_line(
    trained_run: Path, tmp_path: Path, monkeypatch, capsys
):
    folder = _copy_ckpt(trained_run, tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(sys, "argv", ["clipflow-detect", f"ckpt={folder}", f"inputs={trained_run}"])
    with pytest.raises(SystemExit) as info:
        detect_cli.main()
    err = capsys.readouterr().err.strip()
    assert (
        info.value.code == 2
        and err.startswith("error: ")
        and "\n" not in err
        and "truncated" in err
    )


def test_no_pickle_loader_in_the_package():
    src = Path(clipflow.data.imageio.__file__).parent
    offenders = [
        p.name
        for p in src.rglob("*.py")
        if any(s in p.read_text() for s in ("torch.load(", "pickle.load", "import pickle"))
    ]
    assert offenders == []


def test_listing_reports_special_files_only_on_request(corpus: Path):
    special = {"gone.jpg", "selfloop.jpg", "pipe.jpg"}
    plain = {p.name for p in clipflow.data.imageio.list_images(corpus)}
    listed = [p.name for p in clipflow.data.imageio.list_images(corpus, include_special=True)]
    assert not plain & special and set(listed) - plain == special
    assert len(listed) == len(set(listed))  # the folder loop is walked once


# ------------------------------------------------------------------ hard edges of the file system

ODD = os.fsdecode(b"x\xffy.jpg")  # a name that is not UTF-8: str with a surrogate escape


def _eval(ckpt: Path, test_root: Path, out: Path, **data) -> dict:
    from clipflow.runs.evaluate import run_eval
    from clipflow.settings.config import DataConfig, EvalSettings

    cfg = DataConfig(test_root=str(test_root), num_workers=0, batch_size=4, **data)
    return run_eval(EvalSettings(ckpt=str(ckpt), data=cfg, device="cpu"), out)


def test_display_path_is_reversible_and_leaves_plain_names_alone():
    from clipflow.core.fileio import display_path, parse_display_path, path_key_bytes

    names = [b"x\xffy.jpg", "café/ü.png".encode(), b"a\\xffb\tc\nd.jpg", b"plain/a b.JPG"]
    names += ["photo\u202egpj.exe".encode(), "a\u0085b\u2066.jpg".encode(), b"a\\u202eb.jpg"]
    for raw in names:
        name = os.fsdecode(raw)
        shown = display_path(name)
        assert path_key_bytes(name) == raw == os.fsencode(name)
        assert parse_display_path(shown) == name and "\n" not in shown and "\t" not in shown
        shown.encode("utf-8")  # always writable as UTF-8
    assert display_path("café/a b.JPG") == "café/a b.JPG"
    assert display_path(ODD) == "x\\xffy.jpg"
    # a bidi override or a C1 control would make the name read differently: shown escaped
    assert display_path("photo\u202egpj.exe") == "photo\\u202egpj.exe"
    assert display_path("a\u0085b.jpg") == "a\\u0085b.jpg"


def test_item_seed_of_ordinary_names_is_unchanged():
    import hashlib

    from clipflow.features.extract import item_seed

    for name in ("a/b.jpg", "identity|photos/café.png"):
        old = hashlib.blake2b(f"3/1/{name}".encode(), digest_size=8).digest()
        assert item_seed(3, 1, name) == int.from_bytes(old, "little") & ((1 << 63) - 1)
    assert item_seed(0, 0, ODD) != item_seed(0, 0, "x?y.jpg")


def test_non_utf8_name_is_scored_by_train_eval_and_detect(
    trained_run: Path, tmp_path: Path, monkeypatch, capsys
):
    from clipflow.core.fileio import parse_display_path
    from clipflow.runs.train import run_train
    from clipflow.settings.config import train_settings

    train = tmp_path / "train" / "0_real"
    for i in range(5):
        write_image(train / f"n{i}.png", (24, 24), seed=50 + i)
    write_image(train / ODD, (24, 24), seed=60)
    settings = train_settings(
        {
            "mode": "N",
            "device": "cpu",
            "backbone": {"name": "tiny", "pretrained": None},
            "data": {"train_root": str(tmp_path / "train"), "num_workers": 0, "cache": False},
            "train": {"epochs": 1, "batch_size": 4},
        }
    )
    run_train(settings, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["train"]["n_skipped"] == 0
    assert (tmp_path / "run" / "skipped_train.txt").read_text() == ""

    test = tmp_path / "test" / "gen"
    for i in range(2):
        write_image(test / "0_real" / f"r{i}.png", (24, 24), seed=70 + i)
        write_image(test / "1_fake" / f"f{i}.png", (24, 24), seed=80 + i)
    odd = write_image(test / "0_real" / ODD, (24, 24), seed=90)
    _eval(trained_run, tmp_path / "test", tmp_path / "eval", cache=False)
    with open(tmp_path / "eval" / "scores.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and str(odd) in {parse_display_path(r["path"]) for r in rows}
    assert (tmp_path / "eval" / "skipped.txt").read_text() == ""

    out = tmp_path / "det.jsonl"
    monkeypatch.setattr(
        sys, "argv", ["clipflow-detect", f"ckpt={trained_run}", f"inputs={test}", f"out={out}"]
    )
    monkeypatch.setattr(sys, "argv", [*sys.argv, "device=cpu", "num_workers=0"])
    with pytest.raises(SystemExit) as info:
        detect_cli.main()
        sys.exit(0)
    capsys.readouterr()
    assert info.value.code == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    by_path = {parse_display_path(r["path"]): r for r in records}
    assert len(records) == 5 and by_path[str(odd)]["error"] is None
    assert np.isfinite(by_path[str(odd)]["score"])


def test_non_utf8_name_is_extracted_into_the_cache(tmp_path: Path, trained_run: Path):
    from clipflow.runs.extract import run_extract
    from clipflow.settings.config import train_settings

    write_image(tmp_path / "test" / "gen" / "0_real" / ODD, (24, 24), seed=1)
    write_image(tmp_path / "test" / "gen" / "1_fake" / "b.png", (24, 24), seed=2)
    settings = train_settings(
        {
            "device": "cpu",
            "backbone": {"name": "tiny", "pretrained": None},
            "data": {"test_root": str(tmp_path / "test"), "num_workers": 0},
        }
    )
    summary = run_extract(settings, ["test"], tmp_path / "x")
    assert summary["test"]["n_images"] == 2 and summary["test"]["n_skipped"] == 0
    assert summary["speed"] == {"compile": "off"}  # what the fast path ran as (#25)


def _hostile_tree(root: Path) -> Path:
    """gen/{0_real,1_fake} with 2 + 2 images and every kind of link a real folder may hold."""
    gen = root / "test" / "gen"
    for i in range(2):
        write_image(gen / "0_real" / f"r{i}.png", (24, 24), seed=10 + i)
        write_image(gen / "1_fake" / f"f{i}.png", (24, 24), seed=20 + i)
    real = gen / "0_real"
    os.symlink("..", real / "up")  # every fake would also count as a real
    os.symlink("../1_fake", real / "sibling")  # the fakes again, under the real label
    os.symlink(".", real / "loop")
    os.symlink("nowhere.jpg", real / "gone.jpg")
    os.symlink("r0.png", real / "again.png")  # the same file twice
    os.symlink("../1_fake/f0.png", real / "stolen.png")  # a fake file under the real label
    os.mkfifo(real / "pipe.jpg")
    return root / "test"


EXPECTED_SKIPS = {
    "up": "a loop",
    "sibling": "the other label's folder",
    "loop": "a loop",
    "gone.jpg": "broken symbolic link",
    "again.png": "same file as",
    "stolen.png": "the other label's folder",
    "pipe.jpg": "not a regular file",
}


def test_symlinks_never_count_an_image_twice_or_under_the_other_label(tmp_path: Path):
    from clipflow.data.testsets import discover_test_sets

    [ts] = discover_test_sets(_hostile_tree(tmp_path))
    assert sorted(p.name for p in ts.real) == ["r0.png", "r1.png"]
    assert sorted(p.name for p in ts.fake) == ["f0.png", "f1.png"]
    reasons = {p.name: r for p, r in ts.skipped}
    assert set(reasons) == set(EXPECTED_SKIPS), reasons
    for name, needle in EXPECTED_SKIPS.items():
        assert needle in reasons[name], (name, reasons[name])


def test_eval_records_every_left_out_entry_in_skipped_txt(trained_run: Path, tmp_path: Path):
    test = _hostile_tree(tmp_path)
    out = tmp_path / "eval"
    _eval(trained_run, test, out, cache=False)
    metrics = json.loads((out / "metrics.json").read_text())
    [row] = metrics["datasets"]
    assert (row["n_real"], row["n_fake"]) == (2, 2), row
    lines = (out / "skipped.txt").read_text().splitlines()
    reasons = {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in lines}
    assert set(reasons) == set(EXPECTED_SKIPS) and metrics["n_skipped"] == len(EXPECTED_SKIPS)
    with open(out / "scores.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 4


def test_training_walk_refuses_loops_and_links_into_fakes(tmp_path: Path):
    from clipflow.data.train_images import discover_train_images

    real = tmp_path / "train" / "cls" / "0_real"
    for i in range(4):
        write_image(real / f"r{i}.png", (24, 24), seed=30 + i)
    write_image(tmp_path / "train" / "cls" / "1_fake" / "f.png", (24, 24), seed=40)
    os.symlink("..", real / "up")
    os.symlink("../1_fake/f.png", real / "fake.png")
    split = discover_train_images(tmp_path / "train", per_class=None, val_fraction=0.25)
    used = sorted(p.name for p in split.train + split.val)
    assert used == ["r0.png", "r1.png", "r2.png", "r3.png"]
    reasons = {p.name: r for p, r in split.skipped}
    assert "a loop" in reasons["up"] and "1_fake" in reasons["fake.png"]


def test_unreadable_subfolder_is_recorded(tmp_path: Path, monkeypatch):
    from clipflow.data import imageio

    write_image(tmp_path / "a" / "ok.png")
    write_image(tmp_path / "a" / "locked" / "x.png")
    real_read = imageio._read_dir

    def read(directory):
        if directory.name == "locked":
            return [], "Permission denied"
        return real_read(directory)

    monkeypatch.setattr(imageio, "_read_dir", read)
    listing = imageio.scan_images(tmp_path / "a")
    assert [p.name for p in listing.images] == ["ok.png"]
    assert listing.skipped == [(tmp_path / "a" / "locked", "cannot read folder: Permission denied")]


def _huge_png(path: Path, side: int = 13000) -> Path:
    """A valid one-colour PNG of side x side pixels: ~20 KB on disk (bilevel, all zero)."""
    Image.new("1", (side, side)).save(path)
    return path


def test_huge_png_is_skipped_from_its_header_without_decoding(
    det: Detector, trained_run: Path, tmp_path: Path
):
    gen = tmp_path / "test" / "gen"
    write_image(gen / "0_real" / "r.png", (24, 24), seed=1)
    write_image(gen / "1_fake" / "f.png", (24, 24), seed=2)
    huge = _huge_png(gen / "0_real" / "huge.png")
    write_image(gen / "0_real" / "r2.png", (24, 24), seed=3)
    assert huge.stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(clipflow.data.imageio.UnreadableImageError, match="too large: 13000×13000"):
        clipflow.data.imageio.load_image(huge)
    [rec] = det.score_files([huge])
    assert rec.score is None and "too large" in rec.error and "max_megapixels" in rec.error
    _eval(trained_run, tmp_path / "test", tmp_path / "eval", cache=False)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) < 150 * 1024
    skipped = (tmp_path / "eval" / "skipped.txt").read_text()
    assert skipped.startswith(f"{huge}\ttoo large: 13000×13000 pixels exceeds the limit")


def test_max_megapixels_is_a_setting(trained_run: Path, tmp_path: Path):
    from clipflow.errors import DataError

    gen = tmp_path / "test" / "gen"
    for i in range(2):
        write_image(gen / "0_real" / f"r{i}.png", (24, 24), seed=i)
        write_image(gen / "1_fake" / f"f{i}.png", (24, 24), seed=5 + i)
    write_image(gen / "1_fake" / "big.png", (60, 60), seed=9)  # 3600 px
    _eval(trained_run, tmp_path / "test", tmp_path / "eval", cache=False, max_megapixels=0.003)
    lines = (tmp_path / "eval" / "skipped.txt").read_text().splitlines()
    assert len(lines) == 1 and "big.png\ttoo large: 60×60" in lines[0]
    with pytest.raises(DataError, match="max_megapixels"):
        _eval(trained_run, tmp_path / "test", tmp_path / "e2", cache=False, max_megapixels=0)


def _detect_refuses(monkeypatch, capsys, trained_run: Path, out: Path, needle: str) -> None:
    import clipflow.cli.detect as cli

    def never(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before out= was checked")

    # clipflow-detect imports load_checkpoint when it runs: patched where it is defined
    monkeypatch.setattr("clipflow.checkpoints.checkpoint.load_checkpoint", never)
    monkeypatch.setattr(
        sys,
        "argv",
        ["clipflow-detect", f"ckpt={trained_run}", f"inputs={trained_run}", f"out={out}"],
    )
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: cannot write out=") and needle in err
    assert "\n" not in err


def test_detect_checks_out_before_scoring(monkeypatch, capsys, trained_run: Path, tmp_path: Path):
    (tmp_path / "taken.jsonl").mkdir()
    _detect_refuses(monkeypatch, capsys, trained_run, tmp_path / "taken.jsonl", "is a folder")
    (tmp_path / "file").write_text("x")
    _detect_refuses(monkeypatch, capsys, trained_run, tmp_path / "file" / "r.csv", "not a folder")
    deep = tmp_path / "file" / "a" / "b" / "r.jsonl"
    _detect_refuses(monkeypatch, capsys, trained_run, deep, "not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_detect_refuses_a_read_only_out_folder(
    monkeypatch, capsys, trained_run: Path, tmp_path: Path
):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _detect_refuses(monkeypatch, capsys, trained_run, locked / "r.jsonl", "not writable")
    finally:
        locked.chmod(0o700)
