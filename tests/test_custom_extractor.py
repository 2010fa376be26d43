"""A custom extractor goes everywhere a built-in backbone does: train -> calibrate -> eval ->
detect fpr=, from the CLIs (``backbone.family=custom backbone.factory=module:callable``) and
from the Python API (``backbone=extractor`` on every job), with no patching.

The extractor is tests/fixtures_extractor.py: importable because the tests folder is on
``sys.path``, as a user's package on ``PYTHONPATH`` is.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import fixtures_extractor
import numpy as np
import pytest
import torch

from clipflow import Detector
from clipflow.backbones.config import BackboneConfig
from clipflow.backbones.custom import load_custom
from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.cli import calibrate as calibrate_cli
from clipflow.cli import detect as detect_cli
from clipflow.cli import evaluate as eval_cli
from clipflow.cli import extract as extract_cli
from clipflow.cli import train as train_cli
from clipflow.data.synthetic import make_cnnspot_folder, make_train_folder
from clipflow.errors import BackboneError, CheckpointError
from clipflow.runs.calibrate import run_calibrate
from clipflow.runs.evaluate import run_eval
from clipflow.runs.robustness import run_robustness
from clipflow.runs.train import run_train
from clipflow.settings.coerce import SettingsError
from clipflow.settings.config import (
    calibrate_settings,
    eval_settings,
    train_settings,
)
from clipflow.transforms.perturb import parse_perturbation

FACTORY = "fixtures_extractor:make_extractor"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("custom")
    make_train_folder(root / "train", n_per_class=6, size=48, classes=("cat", "dog"))
    make_cnnspot_folder(root / "test", {"biggan": (4, 4)}, {}, 0, seed=1, size=48)
    make_train_folder(root / "photos", n_per_class=6, seed=7, size=48, classes=("mine",))
    return root


def _data(root: Path) -> dict:
    return {"num_workers": 0, "cache_dir": str(root / "cache")}


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    "factory,needle",
    [
        ("nowhere_pkg.nets:make", "no module named 'nowhere_pkg' on the Python path; put the "),
        ("fixtures_extractor:missing", "has no attribute 'missing'"),
        ("fixtures_extractor:NOT_CALLABLE", "is a int, not a callable"),
        ("fixtures_extractor:make_failing", "calling it raised RuntimeError: weights file"),
        ("fixtures_extractor:make_nothing", "its result is refused: object is not a backbone"),
        (None, "needs backbone.factory=package.module:callable"),
    ],
)
def test_a_bad_factory_is_one_line_saying_what_to_do(factory, needle):
    with pytest.raises(BackboneError) as info:
        load_custom(BackboneConfig(family="custom", factory=factory))
    message = str(info.value)
    assert needle in message and "\n" not in message, message
    if factory and "nowhere" in factory:
        assert "PYTHONPATH" in message


def test_the_factory_gets_the_device_only_when_it_takes_one():
    fixtures_extractor.CALLS.clear()
    for factory in (FACTORY, "fixtures_extractor:make_plain", "fixtures_extractor:Holder.create"):
        bb = load_custom(BackboneConfig(family="custom", factory=factory), "cpu")
        assert bb.describe()["factory"] == factory and bb.feature_dim == 16
    assert fixtures_extractor.CALLS == [{"device": "cpu"}, {}]


def test_settings_check_the_shape_and_import_nothing():
    for bad in ("fixtures_extractor.make_extractor", "a:b:c", "1pkg:make", "pkg:"):
        with pytest.raises(SettingsError, match="package.module:callable"):
            train_settings({"backbone": {"family": "custom", "factory": bad}})
    with pytest.raises(SettingsError, match="add backbone.family=custom"):
        train_settings({"backbone": {"name": "tiny", "factory": FACTORY}})
    s = train_settings({"backbone": {"family": "custom", "factory": "not_imported_yet:make"}})
    assert s.backbone.factory == "not_imported_yet:make" and "not_imported_yet" not in sys.modules
    assert calibrate_settings({"backbone": {"factory": FACTORY}}).backbone == {"factory": FACTORY}
    with pytest.raises(SettingsError, match="backbone.factory"):
        eval_settings({"backbone": {"family": "timm", "factory": FACTORY}})


# ----------------------------------------------------------------------------- the CLIs


def test_cli_train_calibrate_eval_detect_with_an_import_path(folders, call_main, tmp_path):
    run, cal = tmp_path / "run", tmp_path / "cal"
    bb = ("backbone.family=custom", f"backbone.factory={FACTORY}")
    common = ("device=cpu", "data.num_workers=0", f"data.cache_dir={folders / 'cache'}")
    code, out, err = call_main(
        train_cli.main,
        "clipflow-train",
        "mode=N+P",
        f"data.train_root={folders / 'train'}",
        *bb,
        *common,
        "train.epochs=1",
        "flow.n_blocks=2",
        f"hydra.run.dir={run}",
    )
    assert code == 0, err
    meta = json.loads((run / "model.json").read_text())
    record = meta["backbone"]
    assert (record["family"], record["factory"], record["weights_id"]) == (
        "custom",
        FACTORY,
        "small-convnet:seed0",
    )
    assert meta["config"]["backbone"]["factory"] == FACTORY  # what ran, not vit_l14's fields
    assert meta["config"]["backbone"]["name"] == "small-convnet"

    # the recorded factory is never imported from a checkpoint: the user names it
    code, _, err = call_main(
        eval_cli.main, "clipflow-eval", f"ckpt={run}", f"data.test_root={folders / 'test'}"
    )
    assert code == 2 and f"pass backbone.factory={FACTORY}" in err, err
    assert len(err.strip().splitlines()) == 1

    code, out, err = call_main(
        calibrate_cli.main,
        "clipflow-calibrate",
        f"ckpt={run}",
        f"data.real_root={folders / 'photos'}",
        f"out={cal}",
        "min_reals=5",
        f"backbone.factory={FACTORY}",
        *common,
    )
    assert code == 0, err
    assert load_checkpoint(cal).meta["calibration"]["n"] == 6
    # refit=true retrains from the recorded config, which names the custom extractor
    code, _, err = call_main(
        calibrate_cli.main,
        "clipflow-calibrate",
        f"ckpt={run}",
        f"data.real_root={folders / 'photos'}",
        f"out={tmp_path / 'refit'}",
        "refit=true",
        "min_reals=3",
        f"backbone.factory={FACTORY}",
        *common,
    )
    assert code == 0, err
    assert load_checkpoint(tmp_path / "refit").backbone["factory"] == FACTORY

    code, out, err = call_main(
        eval_cli.main,
        "clipflow-eval",
        f"ckpt={cal}",
        f"data.test_root={folders / 'test'}",
        f"backbone.factory={FACTORY}",
        *common,
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert code == 0, err
    assert "biggan" in (tmp_path / "eval" / "results.csv").read_text()
    code, _, err = call_main(
        extract_cli.main,
        "clipflow-extract",
        f"data.test_root={folders / 'test'}",
        "stages=[test]",
        *bb,
        *common,
        f"hydra.run.dir={tmp_path / 'extract'}",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "extract" / "extract.json").read_text())
    assert summary["backbone"]["factory"] == FACTORY and summary["test"]["n_images"] == 8

    images = folders / "test" / "biggan"
    detect = ("clipflow-detect", f"ckpt={cal}", f"inputs=[{images}]", "out=-", "num_workers=0")
    code, out, err = call_main(detect_cli.main, *detect, f"backbone.factory={FACTORY}", "fpr=0.2")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 8 and all(r["n_cal"] == 6 and r["level"] == 0.2 for r in records)

    # another extractor (same name, other weights) is refused as a given one is
    code, _, err = call_main(
        detect_cli.main, *detect, "backbone.factory=fixtures_extractor:make_other"
    )
    assert code == 2 and "weights_id 'small-convnet:seed1'" in err, err
    code, _, err = call_main(detect_cli.main, *detect, "backbone.factory=nowhere_pkg.nets:make")
    assert code == 2 and "PYTHONPATH" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = call_main(
        detect_cli.main, *detect, f"backbone.factory={FACTORY}", "backbone.preprocess=univfd"
    )
    assert code == 2 and "backbone.preprocess does not apply" in err, err


# ----------------------------------------------------------------------------- Python API


def _api_train_settings(folders, cache_home):
    """One short N+P training on the folders' train/ (cache and outputs under cache_home)."""
    return train_settings(
        {
            "mode": "N+P",
            "device": "cpu",
            "data": {"train_root": str(folders / "train"), **_data(cache_home)},
            "train": {"epochs": 1},
            "flow": {"n_blocks": 2},
        }
    )


def test_python_api_takes_the_extractor_on_every_job(folders, tmp_path):
    ext = fixtures_extractor.SmallConvNet()
    # a cache of its own: the extractor must run here (the CLI test's cache would serve)
    s = _api_train_settings(folders, cache_home=tmp_path)
    ckpt = run_train(s, tmp_path / "run", backbone=ext)
    assert "factory" not in load_checkpoint(ckpt).backbone  # given, not built from a path

    # what the extractor receives: float32 (N, 3, S, S), pixels / 255 then its mean/std
    first = ext.inputs[0]
    assert first.dtype == torch.float32 and tuple(first.shape[1:]) == (3, 32, 32)
    view = (3, 1, 1)
    pixels = first[0] * torch.tensor(ext.std).view(view) + torch.tensor(ext.mean).view(view)
    levels = pixels * 255  # undoing its mean/std gives 8-bit levels / 255, in [0, 1]
    assert 0 <= float(pixels.min()) and float(pixels.max()) <= 1 and float(pixels.std()) > 0.01
    assert torch.allclose(levels, levels.round(), atol=1e-3)

    cs = calibrate_settings({"device": "cpu", "min_reals": 5, "data": _data(folders)})
    cs = replace(cs, ckpt=str(ckpt), data=replace(cs.data, real_root=str(folders / "photos")))
    cal = run_calibrate(cs, tmp_path / "cal", backbone=ext)
    assert load_checkpoint(cal).meta["calibration"]["n"] == 6
    refit = run_calibrate(replace(cs, refit=True, min_reals=3), tmp_path / "refit", backbone=ext)
    assert load_checkpoint(refit).backbone["weights_id"] == "small-convnet:seed0"
    with pytest.raises(CheckpointError, match="custom extractor"):
        run_calibrate(cs, tmp_path / "cal2")  # nothing to rebuild it from
    with pytest.raises(CheckpointError, match="weights_id"):
        run_calibrate(cs, tmp_path / "cal3", backbone=fixtures_extractor.SmallConvNet(seed=1))

    es = eval_settings({"ckpt": str(cal), "device": "cpu", "data": _data(folders)})
    es = replace(es, data=replace(es.data, test_root=str(folders / "test")))
    files = run_eval(es, tmp_path / "eval", backbone=ext)
    assert "biggan" in files["results.csv"].read_text()
    robust = run_robustness(es, [parse_perturbation("jpeg50")], tmp_path / "rob", backbone=ext)
    assert "jpeg" in robust["robustness.md"].read_text()

    det = Detector.from_checkpoint(cal, device="cpu", backbone=ext)
    paths = sorted(str(p) for p in (folders / "test" / "biggan").rglob("*.png"))
    preds = det.predict(paths, fpr=0.2)
    assert len(preds) == 8 and all(p.n_cal == 6 and p.level == 0.2 for p in preds)
    # the factory's extractor is the same one: the same scores
    built = Detector.from_checkpoint(cal, device="cpu", backbone={"factory": FACTORY})
    np.testing.assert_allclose(built.score(paths), det.score(paths), rtol=1e-5, atol=1e-5)


def test_a_recorded_factory_is_data_never_imported(folders, tmp_path):
    """A checkpoint is data: its backbone.factory is shown, checked for form, never imported."""
    ext = fixtures_extractor.SmallConvNet()
    s = _api_train_settings(folders, cache_home=folders)
    run_train(s, tmp_path / "run", backbone=ext)
    meta_path = tmp_path / "run" / "model.json"
    meta = json.loads(meta_path.read_text())

    def with_record(**fields) -> None:
        meta_path.write_text(json.dumps({**meta, "backbone": {**meta["backbone"], **fields}}))

    with_record(factory="planted_module:run_me")
    with pytest.raises(CheckpointError, match="pass backbone.factory=planted_module:run_me"):
        Detector.from_checkpoint(tmp_path / "run", device="cpu")
    assert "planted_module" not in sys.modules
    with_record(factory="planted_module")
    with pytest.raises(CheckpointError, match="field backbone.factory"):
        load_checkpoint(tmp_path / "run")
    with_record(family="open_clip", name="tiny", factory=FACTORY)
    with pytest.raises(CheckpointError, match="recorded only for family custom"):
        load_checkpoint(tmp_path / "run")
