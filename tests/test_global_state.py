"""Importing and using clipflow leaves the process as it found it.

open_clip's model registry, the TF32 flags, the root logger and matplotlib's backend belong to
the application that imports clipflow; the library may change them only inside a call.
"""

from __future__ import annotations

import importlib.util
import logging
import pkgutil
import sys
from contextlib import contextmanager
from pathlib import Path

import open_clip
import pytest
import torch

import clipflow
from clipflow.backbones.backbone import load_backbone
from clipflow.backbones.config import TINY_NAME, BackboneConfig, model_config_dir, packaged_names
from clipflow.eval.means import summarize
from clipflow.eval.metrics import METRIC_COLUMNS
from clipflow.eval.report import plot_ap
from clipflow.runs.robustness import plot_robustness


def _process_state() -> dict:
    import matplotlib

    return {
        "models": open_clip.list_models(),
        "config_paths": list(open_clip.factory._MODEL_CONFIG_PATHS),
        "tf32": _tf32(),
        "root": (logging.getLogger().level, list(logging.getLogger().filters)),
        "backend": matplotlib.rcParams._get_backend_or_none(),
    }


def _execute_afresh(name: str) -> None:
    """Run module ``name``'s top-level code once more, as a first import would.

    This pytest process imported clipflow long ago; re-executing each module (under a probe
    name, in sys.modules only while it runs, as dataclasses need) shows what importing it
    does, without the cost of a new interpreter.
    """
    spec = importlib.util.find_spec(name)
    probe = importlib.util.spec_from_file_location(f"{name}__probe", spec.origin)
    module = importlib.util.module_from_spec(probe)
    module.__package__ = name if spec.submodule_search_locations else name.rpartition(".")[0]
    sys.modules[probe.name] = module
    try:
        probe.loader.exec_module(module)
    finally:
        del sys.modules[probe.name]


def test_importing_every_clipflow_module_changes_nothing():
    names = [m.name for m in pkgutil.walk_packages(clipflow.__path__, "clipflow.")]
    assert {"clipflow.backbones.backbone", "clipflow.eval.report", "clipflow.cli.train"} <= set(
        names
    )
    with _tiny_unregistered():
        before = _process_state()
        for name in ["clipflow", *names]:
            _execute_afresh(name)
        after = _process_state()
    assert TINY_NAME not in after["models"]
    assert after == before


@contextmanager
def _tiny_unregistered():
    """open_clip's registry as a fresh process has it (earlier tests may have built tiny)."""
    factory = open_clip.factory
    paths, configs = list(factory._MODEL_CONFIG_PATHS), dict(factory._MODEL_CONFIGS)
    factory._MODEL_CONFIG_PATHS[:] = [p for p in paths if Path(p) != model_config_dir()]
    # a rescan only adds configs: drop the packaged test architectures' entries by hand
    factory._MODEL_CONFIGS = {k: v for k, v in configs.items() if k not in packaged_names()}
    try:
        yield
    finally:
        factory._MODEL_CONFIG_PATHS[:] = paths
        factory._MODEL_CONFIGS = configs


@pytest.fixture
def odd_tf32():
    """TF32 flags set to a pair no default has, restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, False
    yield True, False
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_building_tiny_registers_only_tiny_and_only_once():
    with _tiny_unregistered():
        before = _process_state()
        load_backbone(BackboneConfig(name="tiny", pretrained=None))
        once = _process_state()
        load_backbone(BackboneConfig(name="tiny", pretrained=None))
        assert _process_state() == once  # a second build registers nothing more
    # clipflow's own test architectures (clipflow-tiny and its kin), nothing of open_clip's
    assert set(once["models"]) - set(before["models"]) == set(packaged_names()) > {TINY_NAME}
    assert set(before["models"]) <= set(once["models"])
    assert once["config_paths"] == [*before["config_paths"], model_config_dir()]


@pytest.mark.parametrize("precision", ["fp32", "tf32", "amp_bf16"])
def test_forward_restores_the_callers_tf32_flags(odd_tf32, precision):
    bb = load_backbone(BackboneConfig(name="tiny", pretrained=None, precision=precision))
    x = torch.randn(2, 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(0))
    assert bb(x).shape == (2, bb.feature_dim)
    assert _tf32() == odd_tf32


def test_building_leaves_the_root_logger_alone_and_quiets_only_open_clip():
    root = logging.getLogger()
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    level, filters = root.level, list(root.filters)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        load_backbone(BackboneConfig(name="tiny", pretrained=None))
        logging.info("the application's own INFO")  # on the root logger, like open_clip's
        assert root.level == logging.INFO and root.filters == filters
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    # open_clip's INFO progress is dropped, and so is its "initialized randomly" notice on a
    # tower we build random on purpose: our own warning says it, once
    assert [r for r in records if "open_clip" in r.pathname] == []
    assert "the application's own INFO" in [r.getMessage() for r in records]
    ours = [r for r in records if r.name == "clipflow.backbones.backbone"]
    assert len(ours) == 1 and "random weights" in ours[0].getMessage()


def test_plots_do_not_switch_the_matplotlib_backend(tmp_path: Path):
    import matplotlib

    backend = matplotlib.rcParams._get_backend_or_none()
    metrics = dict.fromkeys(METRIC_COLUMNS, 1.0)
    rows = [
        {**metrics, "dataset": "biggan", "display_name": "BigGAN", "ap": 80.0},
        {**metrics, "dataset": "dalle", "display_name": "DALLE", "ap": 60.0},
    ]
    plot_ap(rows, summarize(rows), tmp_path / "ap.png")
    summary = [
        {"perturbation": p, "family": f, "dataset": k, "display_name": d, "ap": 70.0, "strength": s}
        for p, f, s in (("none", "none", None), ("blur_1", "blur", 1.0))
        for k, d in (("biggan", "BigGAN"), ("mean", "Mean"))
    ]
    plot_robustness(summary, tmp_path / "rob.png")
    assert matplotlib.rcParams._get_backend_or_none() == backend
    for name in ("ap.png", "rob.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
