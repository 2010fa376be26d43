"""The types passed between the paper's stages: experiment specs, run options, results.

Kept apart from experiments.py (which produces results) and the table modules (comparison.py,
arm_summary.py, tables.py, ...: which render them), so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ArmSpec:
    """One trained variant: its overrides and the paper row it is compared with."""

    name: str
    overrides: list[str] = field(default_factory=list)
    paper: dict | None = None  # {method, variant} in the experiment's paper tables


@dataclass
class ExperimentSpec:
    """An experiment config (YAML keys = fields)."""

    name: str
    title: str
    arms: list[ArmSpec]
    overrides: list[str] = field(default_factory=list)
    compare: list[dict] = field(default_factory=list)  # [{table, metric}]
    baselines: list[str] = field(default_factory=list)
    # baseline name -> its settings (paper/baselines.py BASELINE_OPTIONS), e.g. {knn: {k: 5}}
    baseline_settings: dict = field(default_factory=dict)
    # baseline name -> settings replacing those with the random ``backbone=tiny`` (miniature)
    tiny_baseline_settings: dict = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)  # bars | histograms | dr_curve
    sets: str = "test"  # test: data.test_root; extra: extra_roots (Table V)
    histogram_sets: list[str] = field(default_factory=list)
    accepts_ckpt: bool = False  # ckpt=PATH replaces the arms by that checkpoint (Table V)
    description: str = ""
    seeds: list[int] = field(default_factory=list)  # when the command line gives none; [] = [0]
    summary_note: str = ""  # a paragraph under the summary table (e.g. what choices' arms change)
    # arm name -> overrides used instead when the run asks for the random ``backbone=tiny``
    # (miniature, tests): arms that each name a real backbone get a tiny one of that family
    tiny_arms: dict = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)  # extra tables: backbones | realonly


@dataclass
class RunOptions:
    """What the command line adds to every experiment."""

    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None  # None = each experiment's own seeds (ExperimentSpec.seeds)
    out: Path = Path("outputs/reproduce")
    extra_roots: list[str] = field(default_factory=list)
    ckpt: str | None = None
    baselines: list[str] | None = None  # None = each experiment's own list
    histogram_sets: list[str] | None = None
    save_checkpoints: bool = True
    # False (the default): a fresh random crop and proxy draw per image and epoch, as the paper
    # (data.views=0). True: one cached draw reused every epoch (data.views=1), the shortcut.
    fast: bool = False

    @property
    def views_override(self) -> str:
        """The data.views setting ``fast`` stands for; experiment and command line override it."""
        return "data.views=1" if self.fast else "data.views=0"


@dataclass
class SeedRun:
    """One arm at one seed: per-set metric rows and the per-set score arrays."""

    rows: list[dict]
    threshold: float
    n_params: int
    scores: dict[str, tuple[np.ndarray, np.ndarray]]  # dataset -> (real scores, fake scores)
    checkpoint: str | None = None
    seconds: float = 0.0
    sets: list[tuple[str, str]] = field(default_factory=list)  # (name, display name) evaluated
    backbone: dict = field(default_factory=dict)
    # dataset -> {"real": reals called fake, "fake": fakes called real}, the few most confident
    # (clipflow.eval.html_report.confident_mistakes): report.html's thumbnails
    mistakes: dict[str, dict[str, list[dict]]] = field(default_factory=dict)


@dataclass
class ArmResult:
    name: str
    kind: str  # clipflow | baseline | checkpoint
    paper: dict | None
    runs: dict[int, SeedRun]
    settings: dict = field(default_factory=dict)
    # seed -> why it has no run (training diverged, e.g. loss=paper); tables say so
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    spec: ExperimentSpec
    meta: dict
    arms: list[ArmResult]
    sets: list[tuple[str, str]]  # (name, display name) of the evaluated sets, in order
