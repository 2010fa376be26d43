"""Experiment configs: every arm composes into the settings the paper's table varies."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from clipflow.cli.reproduce import parse_request
from clipflow.core.fileio import to_jsonable
from clipflow.errors import ClipflowError, DataError
from clipflow.paper.experiment_configs import list_experiments, load_experiment, merge_overrides
from clipflow.paper.experiments import Runner
from clipflow.paper.reproduce import run_reproduce
from clipflow.paper.results import find_row
from clipflow.paper.spec import ArmSpec, RunOptions

ALL = ["table1", "table3", "table4", "fig4", "normalization", "fig3", "table5", "choices"]


def _arm_settings(name: str, *cli: str) -> dict:
    spec = load_experiment(name)
    runner = Runner(RunOptions(overrides=list(cli)))
    return {arm.name: runner.settings(spec, arm, 0) for arm in spec.arms}


def test_all_lists_every_experiment_and_each_loads():
    assert list_experiments() == ALL
    for name in ALL:
        spec = load_experiment(name)
        assert spec.arms and spec.title and spec.compare
        for comp in spec.compare:  # every paper reference exists in the stored tables
            for arm in spec.arms:
                assert find_row(comp["table"], arm.paper) is not None


def test_table1_modes_and_mask_ratios():
    s = _arm_settings("table1", "backbone=tiny")
    assert {k: v.train.mode for k, v in s.items()} == {"N": "N", "P": "P", "N+P": "N+P"}
    assert s["P"].train.resolved_epochs() == 30 and s["N+P"].train.resolved_epochs() == 10
    assert s["N+P"].backbone.name == "tiny" and s["N+P"].proxy.name == "freq_mask"
    assert load_experiment("table1").baselines == ["univfd_linear", "mahalanobis"]


def test_table3_proxies_are_n_plus_p_with_the_paper_parameters():
    s = _arm_settings("table3")
    assert {k: v.proxy.name for k, v in s.items()} == {
        "smoothing": "smoothing",
        "sharpening": "sharpening",
        "gaussian_noise": "gaussian_noise",
        "color_jitter": "color_jitter",
        "fm_phase_only": "freq_phase",
        "fm": "freq_mask",
    }
    assert all(v.train.mode == "N+P" for v in s.values())
    assert s["gaussian_noise"].proxy.sigma == 5.0


def test_table4_bands_fig4_widths_and_normalisation():
    t4 = _arm_settings("table4")
    assert {k: (v.proxy.band, v.proxy.ratio) for k, v in t4.items()} == {
        "low": ("low", 0.1),
        "mid": ("mid", 0.1),
        "high": ("high", 0.1),
    }
    f4 = _arm_settings("fig4", "train.epochs=3")
    assert [v.flow.dr_dim for v in f4.values()] == [0, 16, 32, 64, 128, 256, 512]
    assert all(v.train.epochs == 3 and v.train.mode == "N+P" for v in f4.values())
    norm = _arm_settings("normalization")
    assert {k: v.flow.normalize for k, v in norm.items()} == {"l2_on": True, "l2_off": False}


def test_arm_overrides_win_over_the_command_line_and_seed_goes_everywhere():
    s = _arm_settings("table1", "mode=P", "seed=7")
    assert s["N"].train.mode == "N"  # the arm defines the mode
    assert merge_overrides(["a=1", "b=2"], ["a=3"]) == ["b=2", "a=3"]
    spec = load_experiment("fig4")
    runner = Runner(RunOptions())
    assert runner.settings(spec, spec.arms[1], 5).flow.perm_seed == 5


def test_command_line_parsing():
    names, opts, dry = parse_request(
        [
            "experiment=all",
            "seeds=[0,1,2]",
            "extra_roots=[/a,/b]",
            "baselines=[]",
            "backbone=tiny",
            "out=/tmp/x",
            "dry_run=true",
        ]
    )
    assert names == ALL and opts.seeds == [0, 1, 2] and opts.extra_roots == ["/a", "/b"]
    assert (
        opts.baselines == []
        and opts.overrides == ["backbone=tiny"]
        and opts.out == Path("/tmp/x")
        and dry
    )
    names, opts, _ = parse_request(["experiment=[table3,table1]", "seed=4", "data.extra_roots=/c"])
    assert names == ["table3", "table1"] and opts.seeds == [4] and opts.extra_roots == ["/c"]


def test_usage_errors(tmp_path: Path, capsys):
    with pytest.raises(ClipflowError, match="no experiment given"):
        parse_request(["backbone=tiny"])
    with pytest.raises(ClipflowError, match="unknown experiment 'table9'"):
        run_reproduce(parse_request(["experiment=table9"]))
    with pytest.raises(ClipflowError, match="bad override"):
        run_reproduce(
            parse_request(["experiment=table1", "flow.nope=1", f"out={tmp_path}", "dry_run=true"])
        )
    with pytest.raises(DataError, match="data.train_root"):
        run_reproduce(parse_request(["experiment=table1", "backbone=tiny", f"out={tmp_path}"]))
    with pytest.raises(DataError, match="extra_roots"):
        run_reproduce(
            parse_request(
                ["experiment=table5", "data.train_root=/x", "backbone=tiny", f"out={tmp_path}"]
            )
        )


def test_dry_run_prints_each_arm(capsys):
    assert run_reproduce(parse_request(["experiment=table4", "dry_run=true"])) == {}
    out = capsys.readouterr().out
    assert "mid" in out and "proxy=freq_mask/mid ratio=0.1" in out and "mode=N+P" in out


def test_settings_are_composed_once_per_runner_and_handed_out_as_copies():
    spec = load_experiment("table4")
    runner = Runner(RunOptions(overrides=["backbone=tiny"]))
    first = runner.settings(spec, spec.arms[0], 0)
    first.train.lr = -1.0  # a caller's edit must not leak into the next arm × seed
    again = runner.settings(spec, spec.arms[0], 0)
    assert again.train.lr != -1.0 and again == runner.settings(spec, spec.arms[0], 0)
    assert len(runner._composed) == 1
    other = runner.settings(spec, ArmSpec("x", ["flow.dr_dim=64"]), 3)
    assert other.flow.dr_dim == 64 and other.seed == 3 and len(runner._composed) == 2


def test_settings_as_json_match_the_recorded_form():
    """to_jsonable is what json.dumps(asdict(s), default=str) recorded before: same values."""
    s = Runner(RunOptions(overrides=["data.train_root=/x"])).settings(
        load_experiment("table1"), None, 0
    )
    plain = to_jsonable(s)
    assert json.loads(json.dumps(asdict(s), default=str)) == plain
    assert plain["data"]["train_root"] == "/x" and plain["seed"] == 0
