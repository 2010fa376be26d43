"""Detector API and clipflow-detect: inputs of every kind, records, outputs, exit codes."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import write_image
from PIL import Image

import clipflow
from clipflow.cli import detect as detect_cli
from clipflow.cli.common import guarded
from clipflow.data.expand import expand_inputs
from clipflow.data.imageio import list_images
from clipflow.detect import Detector
from clipflow.errors import (
    ClipflowError,
    SomeFilesUnreadableError,
    TrainingDivergedError,
    UnreadableImageError,
)
from clipflow.eval.conformal import CalibrationError
from clipflow.eval.metrics import false_positive_rate
from clipflow.eval.predictions import Prediction, output_format, records_table
from clipflow.runs.evaluate import run_eval
from clipflow.settings.config import EvalSettings, detect_settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "detect.md"


@pytest.fixture(scope="module")
def det(trained_run: Path) -> Detector:
    return Detector.from_checkpoint(trained_run, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def images(mini_bench: Path) -> list[Path]:
    return list_images(mini_bench / "test" / "biggan")  # 8 PNGs + a zero-byte broken.jpg


def test_import_clipflow_stays_light_and_exports_detector():
    # A fresh interpreter is the point: this process imported torch long ago. It is cheap, as
    # long as the assertion holds (no torch import).
    code = "import sys, clipflow; print('torch' in sys.modules, 'Detector' in clipflow.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True"], out.stderr[-1000:]
    assert clipflow.Detector is Detector  # resolved lazily on first access
    with pytest.raises(AttributeError):
        clipflow.Detectr  # noqa: B018


def test_every_input_kind_gives_the_same_score(det: Detector, images):
    path = images[0]
    pil = Image.open(path)
    arr = np.array(pil.convert("RGB"))  # (H, W, 3) uint8
    chw = torch.from_numpy(arr).permute(2, 0, 1)
    kinds = [str(path), path, pil, arr, arr / 255.0, chw, chw.float() / 255]
    scores = det.score(kinds)
    assert scores.shape == (len(kinds),) and np.isfinite(scores).all()
    assert np.allclose(scores, scores[0], atol=1e-5), scores


def test_single_items_batches_and_grayscale(det: Detector, images):
    one = det.score(images[0])
    assert one.shape == (1,)
    arrs = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images[:3]])  # (3, H, W, 3)
    assert np.allclose(det.score(arrs), det.score(images[:3]), atol=1e-5)
    assert np.allclose(
        det.score(torch.from_numpy(arrs).permute(0, 3, 1, 2)), det.score(arrs), atol=1e-5
    )
    gray = np.asarray(Image.open(images[1]).convert("L"))  # (H, W)
    assert np.allclose(det.score(gray), det.score(np.repeat(gray[..., None], 3, axis=2)), atol=1e-5)


def test_predict_applies_threshold_and_fpr(det: Detector, images):
    preds = det.predict(images[:6])
    assert [p.path for p in preds] == [str(p) for p in images[:6]]
    val = det.ckpt.val_real_scores.numpy()
    assert len(val) > 0
    for p in preds:
        assert (
            p.decision == ("ai-generated" if p.score > det.threshold else "real")
            and p.error is None
        )
        assert p.fpr_val == pytest.approx(false_positive_rate(val, p.score))
        assert (p.label, p.fpr) == (p.decision, p.fpr_val)  # the former names still read
    assert det.fpr(float(val.min()) - 1) == 1.0 and det.fpr(float(val.max()) + 1) == 0.0


def test_unreadable_images_raise_or_are_reported(det: Detector, images):
    broken = next(p for p in images if p.name == "broken.jpg")
    with pytest.raises(UnreadableImageError, match="zero-byte"):
        det.score([images[0], broken])
    scores = det.score([images[0], broken], skip_errors=True)
    assert np.isfinite(scores[0]) and np.isnan(scores[1])
    pred = det.predict([broken], skip_errors=True)[0]
    assert pred == Prediction(None, None, None, str(broken), "zero-byte file")


@pytest.mark.parametrize(
    ("bad", "err"),
    [
        (np.full((8, 8, 3), 2.0), ValueError),
        (np.zeros((8, 8, 5), np.uint8), ValueError),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), ValueError),
        (torch.zeros(3, 4, 4, dtype=torch.int64), TypeError),
        ({"not": "an image"}, TypeError),
        # what numpy/torch would refuse with their own exceptions: clipflow's one line first
        (np.zeros((8, 8, 3), dtype=object), ValueError),
        (np.zeros((8, 8, 3), dtype=np.longdouble), ValueError),
        (torch.empty(3, 8, 8, device="meta"), ValueError),
        (torch.zeros(3, 8, 8).to_sparse(), ValueError),
        (np.zeros((0, 0, 3), np.uint8), ValueError),
        (torch.zeros(3, 0, 5), ValueError),
    ],
)
def test_wrong_arrays_are_clear_errors(det: Detector, bad, err):
    with pytest.raises(err) as info:
        det.score(bad)
    assert type(info.value) is err and "\n" not in str(info.value)
    assert "clipflow" in info.traceback[-1].path.parts  # raised by clipflow's own check


def test_a_path_with_a_nul_byte_is_an_unreadable_file(det: Detector, images):
    nul = str(images[0]) + "\0.png"
    with pytest.raises(UnreadableImageError, match="NUL byte"):
        det.score(nul)
    pred, good = det.predict([nul, images[0]], skip_errors=True)
    assert pred.decision is None and "NUL byte" in pred.error and good.error is None
    recorded, fine = det.score_files([nul, images[0]])  # the file path: a recorded skip
    assert recorded.decision is None and "NUL byte" in recorded.error and fine.error is None


def test_numpy_scalars_are_levels_and_copy_counts(det: Detector, images):
    plain = det.predict(images[:3], fpr=0.5, unsure_k=1)
    numpy = det.predict(images[:3], fpr=np.float32(0.5), unsure_k=np.int64(1))
    assert [p.decision for p in numpy] == [p.decision for p in plain]
    assert all(type(p.level) is float and p.level == 0.5 for p in numpy)  # JSON-writable
    json.dumps([p.to_dict() for p in numpy])
    assert det.score_files(images[:1], fpr=np.float64(0.5))[0].level == 0.5


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"unsure_k": 2.5}, "unsure_k=2.5: use a whole number"),
        ({"unsure_k": "2"}, "unsure_k='2'"),
        ({"unsure_k": True}, "unsure_k=True"),
        ({"unsure_k": 9}, "0..8"),
        ({"fpr": "0.5"}, "a number in (0, 1)"),
        ({"fpr": np.float32(1.5)}, "a number in (0, 1)"),
        ({"fpr": np.float64("nan")}, "a number in (0, 1)"),
    ],
)
def test_bad_levels_and_copy_counts_are_one_line_errors(det: Detector, images, kwargs, needle):
    with pytest.raises(CalibrationError) as info:
        det.predict(images[0], **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_batch_route_matches_api_and_eval(
    det: Detector, images, trained_run: Path, mini_bench: Path, tmp_path
):
    good = [p for p in images if p.name != "broken.jpg"]
    files = det.score_files(good + [images[0]])  # a duplicate keeps its place
    assert [r.path for r in files] == [str(p) for p in good + [images[0]]]
    assert np.allclose([r.score for r in files[:-1]], det.score(good), atol=1e-5)
    settings = EvalSettings(ckpt=str(trained_run), device="cpu")
    settings.data.test_root, settings.data.num_workers = str(mini_bench / "test"), 0
    out = run_eval(settings, tmp_path / "eval")
    with open(out["scores.csv"], newline="") as fh:
        eval_scores = {r["path"]: float(r["score"]) for r in csv.DictReader(fh)}
    assert np.allclose(det.score(good), [eval_scores[str(p)] for p in good], atol=1e-4)


def test_expand_inputs_files_folders_globs_and_missing(tmp_path: Path):
    a = write_image(tmp_path / "d" / "a.png")
    b = write_image(tmp_path / "d" / "sub" / "B.JPG")
    gif = write_image(tmp_path / "x.gif")
    (tmp_path / "d" / "notes.txt").write_text("no")
    (tmp_path / "empty").mkdir()
    entries = expand_inputs(
        [
            tmp_path / "d",
            str(gif),
            str(tmp_path / "d" / "*.png"),
            tmp_path / "nope.jpg",
            str(tmp_path / "zz*.png"),
            tmp_path / "empty",
        ]
    )
    assert entries == [
        (str(a), None),
        (str(b), None),
        (str(gif), None),  # the glob's duplicate of a.png is dropped
        (str(tmp_path / "nope.jpg"), "not found"),
        (str(tmp_path / "zz*.png"), "no file matches this pattern"),
        (str(tmp_path / "empty"), "no image files in this folder"),
    ]


def test_output_formats_and_table(tmp_path: Path):
    assert output_format("r.JSONL") == "jsonl" and output_format("r.csv") == "csv"
    assert output_format("r.txt", "csv") == "csv"
    with pytest.raises(ClipflowError, match="format=jsonl"):
        output_format("r.txt")
    table = records_table(
        [
            Prediction(0.5, "ai-generated", 0.125, "a.png"),
            Prediction(None, None, None, "b.jpg", "zero-byte file"),
        ]
    )
    assert re.search(r"a\.png\s+0\.5000\s+ai-generated\s+12\.5%", table)
    assert re.search(r"b\.jpg\s+-\s+unreadable\s+zero-byte file", table)


@pytest.fixture
def detect(call_main):
    """clipflow-detect in-process (Hydra main + guarded): ``detect(*args) -> (code, out, err)``."""
    return lambda *args: call_main(detect_cli.main, "clipflow-detect", *args)


def test_cli_usage_errors_exit_2_with_one_line(detect, trained_run: Path, tmp_path: Path):
    for args, needle in [
        ((), "no checkpoint"),
        ((f"ckpt={trained_run}",), "no images"),
        ((f"ckpt={trained_run}", f"inputs={tmp_path / 'gone.jpg'}"), "not found"),
        ((f"ckpt={trained_run}", f"inputs={tmp_path}"), "nothing to score"),
        ((f"ckpt={tmp_path}", f"inputs={tmp_path}"), "no clipflow checkpoint"),
        ((f"ckpt={trained_run}", f"inputs={trained_run}", "out=r.txt"), "format"),
    ]:
        code, out, err = detect(*args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
        assert err.startswith("error: ") and out == ""


def test_cli_scores_folder_to_csv_exit_0(detect, mini_bench: Path, trained_run: Path, tmp_path):
    folder = mini_bench / "test" / "mygen"
    out_csv = tmp_path / "scores.csv"
    code, out, _ = detect(
        f"ckpt={trained_run}",
        f"inputs=[{folder}]",
        f"out={out_csv}",
        "device=cpu",
        "num_workers=0",
    )
    assert code == 0
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == [str(p) for p in list_images(folder)]
    assert all(
        r["decision"] in ("real", "ai-generated")
        and r["error"] == ""
        and 0 <= float(r["fpr_val"]) <= 1
        for r in rows
    )
    assert f"results: {out_csv}" in out
    # the table's header names the same fields as the records
    header = next(line for line in out.splitlines() if line.startswith("path"))
    assert header.split() == ["path", "score", "decision", "fpr_val", "p_value"]


def test_num_workers_is_auto_like_every_other_command(monkeypatch):
    """The shipped default resolves for this machine: 1 loader process on 2 CPUs (torch warns
    about the former fixed 4 there), as data.num_workers=auto does for eval and train."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="clipflow.configs", version_base="1.3"):
        cfg = compose(config_name="detect", overrides=["inputs=a.png", "device=cpu"])
    values = OmegaConf.to_container(cfg, resolve=True)
    assert values["num_workers"] == "auto"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert detect_settings(values).num_workers == 1
    assert detect_settings({**values, "num_workers": 3}).num_workers == 3  # explicit wins


def test_random_weight_warning_is_said_once(detect, mini_bench: Path, trained_run: Path, caplog):
    """Once per command: our warning, not open_clip's own notice, nor a repeat in the table."""
    folder = mini_bench / "test" / "mygen"
    with caplog.at_level(logging.INFO):
        code, out, err = detect(f"ckpt={trained_run}", f"inputs=[{folder}]", "num_workers=0")
    said = re.compile(r"random[ -]weight|initiali[sz]ed randomly", re.I)
    assert code == 0
    assert len([line for line in (out + err).splitlines() if said.search(line)]) == 1
    assert len([r for r in caplog.records if said.search(r.getMessage())]) == 1


def test_cli_json_lines_on_stdout_and_exit_4(detect, mini_bench: Path, trained_run: Path):
    folder = mini_bench / "test" / "biggan"
    code, out, err = detect(
        f"ckpt={trained_run}",
        f"inputs=[{folder},{folder}/nope.png]",
        "out=-",
        "device=cpu",
        "num_workers=0",
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert code == SomeFilesUnreadableError.exit_code == 4
    assert len(records) == 10 and sum(r["score"] is not None for r in records) == 8
    assert list(records[0]) == [
        "path",
        "score",
        "decision",
        "fpr_val",
        "p_value",
        "level",
        "n_cal",
        "score_min",
        "score_max",
        "error",
    ]
    assert {Path(r["path"]).name: r["error"] for r in records if r["error"]} == {
        "broken.jpg": "zero-byte file",
        "nope.png": "not found",
    }
    assert "2 of 10 inputs could not be scored" in err.strip().splitlines()[-1]


def test_docs_python_example_runs_as_written(
    trained_run: Path, images, tmp_path: Path, monkeypatch, capsys
):
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    (tmp_path / "outputs" / "demo" / "train").symlink_to(trained_run)
    Image.open(images[0]).convert("RGB").save(tmp_path / "photo.jpg")
    write_image(tmp_path / "screenshot.png", (40, 30), seed=5)
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 -- our own documentation
    printed = capsys.readouterr().out
    assert "photo.jpg" in printed and "file not found" in printed
    assert namespace["scores"].shape == (2,)


def _guarded_exit(exc: BaseException | None) -> int:
    """The exit code clipflow-detect ends with when its job raises ``exc`` (None: success)."""

    def job() -> None:
        if exc is not None:
            raise exc

    with pytest.raises(SystemExit) as info:
        guarded(job)
        sys.exit(0)
    return info.value.code


def test_docs_exit_codes_are_the_codes_the_cli_exits_with(capsys):
    """Each row of the README's one exit-code table is produced by the outcome it describes;
    docs/detect.md links that table instead of keeping its own."""
    readme = DOCS.parents[1] / "README.md"
    section = readme.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M))
    outcomes = {
        "success": None,
        "usage error": ClipflowError("no checkpoint given"),
        "training diverged": TrainingDivergedError("loss=nan"),
        "some inputs unreadable": SomeFilesUnreadableError("2 of 10 inputs"),
        "interrupted": KeyboardInterrupt(),
        "reader of stdout went away": BrokenPipeError(),
    }
    actual = {_guarded_exit(exc): words for words, exc in outcomes.items()}
    capsys.readouterr()
    assert set(table) == {str(code) for code in actual} | {"1"}  # 1: clipflow-check-data
    for code, words in actual.items():
        assert words in table[str(code)], (code, table[str(code)])
    assert "README.md#exit-codes" in DOCS.read_text()
