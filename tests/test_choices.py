"""experiment=choices and the paper-faithful defaults of clipflow-reproduce (no training here).

The end-to-end run of choices on the miniature lives in tests/test_reproduce_mini.py (it
shares that module's feature cache).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from clipflow.cli.reproduce import parse_request
from clipflow.core.fileio import to_jsonable
from clipflow.errors import ClipflowError
from clipflow.paper.experiment_configs import compose_settings, load_experiment
from clipflow.paper.experiments import Runner
from clipflow.paper.provenance import provenance, run_metadata
from clipflow.paper.results import find_row
from clipflow.paper.spec import RunOptions
from clipflow.settings.config import SettingsError

# arm -> the one setting it changes, and its value there
# arm -> the settings it changes from the default (the capacity-matched block arm changes the
# block and, to keep GLOW's parameter count, its depth; every other arm one key)
ARMS = {
    "default": {},
    "loss_paper": {"train.loss": "paper"},
    "loss_hinge": {"train.loss": "hinge"},
    "mask_clean": {"proxy.mask_mode": "clean"},
    "cached_view": {"data.views": 1},
    "pair_crop": {"proxy.pair_crop": True},
    "allinone": {"flow.block": "allinone"},
    "allinone_capacity": {"flow.block": "allinone", "flow.n_blocks": 10},
    "depth_4": {"flow.n_blocks": 4},
    "depth_16": {"flow.n_blocks": 16},
    "width_1": {"flow.hidden_mult": 1},
    "width_4": {"flow.hidden_mult": 4},
    "clamp_1": {"flow.clamp": 1.0},
    "clamp_4": {"flow.clamp": 4.0},
    "val_closed": {"data.val_band": "closed"},
    "val_pixels": {"data.val_band": "pixels"},
    "val_square": {"data.val_band": "square"},
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _settings(spec, opts: RunOptions) -> dict:
    runner = Runner(opts)
    return {a.name: _flat(to_jsonable(runner.settings(spec, a, 0))) for a in spec.arms}


def test_choices_spec_has_the_arms_seeds_and_paper_rows():
    spec = load_experiment("choices")
    assert [a.name for a in spec.arms] == list(ARMS)
    assert spec.seeds == [0, 1, 2] and "bars" in spec.plots
    assert "one-at-a-time from the default" in spec.description.lower()
    assert {c["table"] for c in spec.compare} == {"table1_ap", "table2_acc"}
    for arm in spec.arms:  # every arm sits next to the paper's N+P row
        assert find_row("table1_ap", arm.paper).mean == 95.56
        assert find_row("table2_acc", arm.paper).mean == 87.30


def test_each_arm_differs_from_the_default_in_exactly_its_keys():
    spec = load_experiment("choices")
    s = _settings(spec, RunOptions(overrides=["backbone=tiny"]))
    default = s["default"]
    assert (default["train.mode"], default["train.loss"], default["proxy.name"]) == (
        "N+P",
        "logsigmoid",
        "freq_mask",
    )
    assert default["proxy.mask_mode"] == "compat" and default["proxy.pair_crop"] is False
    assert default["flow.block"] == "glow"
    assert default["data.views"] == 0
    fast = Runner(RunOptions(fast=True)).settings(spec, spec.arms[0], 0)
    assert fast.data.views == 0  # choices draws fresh even with fast=true
    for name, change in ARMS.items():
        diff = {k: v for k, v in s[name].items() if v != default[k]}
        assert diff == change, name


def test_reproduce_draws_fresh_per_epoch_by_default_and_fast_caches_one_view():
    table1 = load_experiment("table1")
    req = parse_request(["experiment=table1"])
    assert req.opts.fast is False
    fresh = Runner(req.opts).settings(table1, table1.arms[2], 0)
    assert fresh.data.views == 0
    req_fast = parse_request(["experiment=table1", "fast=true"])
    cached = Runner(req_fast.opts).settings(table1, table1.arms[2], 0)
    assert req_fast.opts.fast is True and cached.data.views == 1
    # an explicit data.views on the command line wins over either
    assert (
        Runner(parse_request(["experiment=table1", "data.views=3"]).opts)
        .settings(table1, None, 0)
        .data.views
        == 3
    )
    with pytest.raises(SettingsError, match="fast=maybe"):
        parse_request(["experiment=table1", "fast=maybe"])
    # ...and the metadata and every table header say which was used
    bb = {"name": "clipflow-tiny", "preprocess": "paper"}
    meta = run_metadata(fresh, bb, req.opts, "table1")
    assert (meta["fast"], meta["train"]["views"], meta["train"]["augmentation"]) == (
        False,
        0,
        "fresh per epoch",
    )
    assert "fresh per epoch" in provenance(meta) and "fast=true" not in provenance(meta)
    meta = run_metadata(cached, bb, req_fast.opts, "table1")
    assert meta["fast"] is True and meta["train"]["views"] == 1
    assert meta["train"]["augmentation"].startswith("1 cached view")
    assert "fast=true" in provenance(meta) and "the paper draws a fresh" in provenance(meta)


def test_seeds_come_from_the_command_line_else_the_experiment():
    choices, table1 = load_experiment("choices"), load_experiment("table1")
    default = Runner(parse_request(["experiment=all"]).opts)
    assert default.seeds(choices) == [0, 1, 2] and default.seeds(table1) == [0]
    given = Runner(parse_request(["experiment=all", "seeds=[4,5]"]).opts)
    assert given.seeds(choices) == [4, 5] == given.seeds(table1)
    assert Runner(parse_request(["experiment=choices", "seed=7"]).opts).seeds(choices) == [7]
    with pytest.raises(ClipflowError, match="seeds=\\[\\]"):
        parse_request(["experiment=choices", "seeds=[]"])


def test_flow_block_is_a_plain_override_with_its_choices_checked():
    assert compose_settings(["flow.block=allinone"]).flow.block == "allinone"
    assert compose_settings([]).flow.block == "glow"
    with pytest.raises(SettingsError, match="flow.block=resnet: choose one of glow, allinone"):
        compose_settings(["flow.block=resnet"])


def test_a_diverged_seed_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    """loss=paper may diverge: that arm × seed becomes a recorded gap, not a lost run."""
    from clipflow.errors import TrainingDivergedError
    from clipflow.paper.spec import SeedRun

    def train_arm(self, s, folder):
        if s.train.loss == "paper" and s.seed == 1:
            raise TrainingDivergedError("training diverged: loss=-inf in epoch 2")
        return SimpleNamespace(seconds=0.0)

    def evaluate(self, spec, trained, folder):
        return SeedRun([], 0.0, 1, {}, sets=[("progan", "ProGAN")], backbone={"name": "x"})

    monkeypatch.setattr(Runner, "train_arm", train_arm)
    monkeypatch.setattr(Runner, "_evaluate", evaluate)
    opts = RunOptions(
        overrides=["data.train_root=/x", "data.test_root=/y"], seeds=[0, 1], out=tmp_path
    )
    runner = Runner(opts)  # one runner: the settings are composed once for both runs
    result = runner.run(load_experiment("choices"))
    arms = {a.name: a for a in result.arms}
    assert sorted(arms["loss_paper"].runs) == [0] and list(arms["loss_paper"].failed) == [1]
    assert sorted(arms["default"].runs) == [0, 1] and not arms["default"].failed
    diverged = tmp_path / "choices" / "arms" / "loss_paper" / "seed1" / "diverged.txt"
    assert "loss=-inf" in diverged.read_text()
    monkeypatch.setattr(
        Runner, "train_arm", lambda *a: (_ for _ in ()).throw(TrainingDivergedError("nan"))
    )
    with pytest.raises(TrainingDivergedError, match="experiment choices: no arm trained"):
        runner.run(load_experiment("choices"))
