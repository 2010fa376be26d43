"""The paper's tables as experiments: arms × seeds on one shared feature cache.

An experiment (``configs/experiment/<name>.yaml``, read by experiment_configs.py) lists
*arms*: train-config overrides such as ``mode=P``, ``proxy=smoothing`` or ``flow.dr_dim=64``,
each with the paper row it is compared with. :class:`Runner` composes an arm's settings from
``configs/train.yaml`` (``data.views`` from ``fast`` < experiment overrides < command-line
overrides < arm overrides, then ``seed``) and runs the pipeline stages in-process::

    discover → train_features (cache) → fit → validation_features (cache) → calibrate
             → test_features (cache, once per run) → score → per-set metrics

The backbone runs once per image, variant and view (the cache); every further arm costs a
flow training. Arms that resolve to identical settings (Table I's N+P is Table III's FM and
Table IV's low band) are trained once per process and shared. Baselines are fitted on the
same features (baseline_fitting.py); the tables are written by tables.py.

Training draws are the paper's by default: a fresh random crop and proxy mask for every image
in every epoch (``data.views=0``); ``fast=true`` reuses one cached draw (``data.views=1``).
Seeds: the command line's, else the experiment's ``seeds``, else ``[0]``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..backbones.backbone import load_backbone
from ..backbones.config import BackboneConfig
from ..checkpoints.backbone_match import eval_backbone_config, require_feature_dim
from ..checkpoints.checkpoint import load_checkpoint
from ..checkpoints.save import save_checkpoint
from ..core.fileio import atomic_write_text, to_jsonable
from ..core.machine import resolve_device
from ..errors import ClipflowError, DataError, TrainingDivergedError
from ..eval.html_report import confident_mistakes
from ..eval.report import TABLE_COLUMNS, scores_to_csv, to_csv
from ..features.cache import feature_cache
from ..flow.model import score_features
from ..runs.evaluate import evaluate_sets
from ..runs.train import train_head
from ..settings.config import TrainSettings
from .arm_data import TestData, Trained, extract_test_data, train_split
from .baseline_fitting import fit_baseline
from .baselines import BASELINE_LABELS, BASELINE_PAPER, BASELINES, baseline_options
from .experiment_configs import compose_settings, merge_overrides
from .provenance import run_metadata
from .spec import ArmResult, ArmSpec, ExperimentResult, ExperimentSpec, RunOptions, SeedRun

log = logging.getLogger(__name__)


class Runner:
    """Runs experiments; backbones, test features and trained arms are shared across them."""

    def __init__(self, opts: RunOptions):
        self.opts = opts
        self._backbones: dict[str, object] = {}
        self._tests: dict[str, TestData] = {}
        self._trained: dict[str, Trained] = {}
        # Hydra composition costs ~0.1 s; each arm × seed asks for its settings several times.
        self._composed: dict[tuple[str, ...], TrainSettings] = {}

    # -------------------------------------------------------------- shared resources
    def seeds(self, spec: ExperimentSpec) -> list[int]:
        """The command line's seeds, else the experiment's own, else [0]."""
        if self.opts.seeds is not None:
            return list(self.opts.seeds)
        return list(spec.seeds) or [0]

    def settings(self, spec: ExperimentSpec, arm: ArmSpec | None, seed: int) -> TrainSettings:
        arm_overrides = arm.overrides if arm else []
        if arm and arm.name in spec.tiny_arms and _asks_tiny(self.opts.overrides):
            arm_overrides = list(spec.tiny_arms[arm.name])
        key = tuple(
            merge_overrides(
                [self.opts.views_override],
                spec.overrides,
                self.opts.overrides,
                arm_overrides,
                [f"seed={seed}"],
            )
        )
        if key not in self._composed:
            self._composed[key] = compose_settings(list(key))
        return copy.deepcopy(self._composed[key])  # callers may replace() fields freely

    def backbone(self, cfg: BackboneConfig, device: str):
        key = json.dumps(asdict(cfg), sort_keys=True) + device
        if key not in self._backbones:
            self._backbones[key] = load_backbone(cfg, device)
        return self._backbones[key]

    def test_data(self, s: TrainSettings, backbone, device: str) -> TestData:
        """Features of every test image (test root + extra roots), extracted once per run."""
        key = json.dumps(
            [
                backbone.describe(),
                s.data.test_root,
                self.opts.extra_roots,
                s.data.protocol,
                s.data.max_per_class,
            ],
            sort_keys=True,
            default=str,
        )
        if key not in self._tests:
            self._tests[key] = extract_test_data(s, backbone, device, self.opts.extra_roots)
        return self._tests[key]

    # -------------------------------------------------------------- one arm, one seed
    def train_arm(self, s: TrainSettings, ckpt_dir: Path | None) -> Trained:
        """Train (or reuse) the head of ``s`` and score every test image with it."""
        key = _arm_key(s)
        if key in self._trained:
            return self._trained[key]
        start = time.perf_counter()
        device = resolve_device(s.device)
        backbone = self.backbone(s.backbone, device)
        head = train_head(s, backbone, train_split(s), feature_cache(s.data), device)
        model, threshold = head.model, head.threshold
        test = self.test_data(s, backbone, device)
        scores = score_features(model, test.features, device=device).tolist()
        path = None
        if ckpt_dir is not None and self.opts.save_checkpoints:
            config = to_jsonable(s)
            path = str(
                save_checkpoint(
                    ckpt_dir,
                    model,
                    threshold,
                    backbone.describe(),
                    config,
                    head.val_real_scores,
                    {
                        "history": head.history,
                        "validation": head.validation,
                        "train": {"mode": s.train.mode},
                    },
                )
            )
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        done = Trained(
            test,
            dict(zip(test.paths, scores)),
            threshold,
            n_params,
            path,
            time.perf_counter() - start,
            head.val_real_scores.numpy(),
        )
        self._trained[key] = done
        return done

    def load_arm(self, s: TrainSettings, ckpt_path: str) -> Trained:
        """An existing checkpoint, scored on this run's test images (Table V: the same model)."""
        ckpt = load_checkpoint(ckpt_path)
        device = resolve_device(s.device)
        local = (
            {"pretrained": s.backbone.pretrained}
            if s.backbone.pretrained and not s.backbone.is_tiny
            else {}
        )
        backbone = self.backbone(eval_backbone_config(ckpt, local), device)
        require_feature_dim(ckpt, backbone)
        test = self.test_data(replace(s, backbone=backbone.cfg), backbone, device)
        scores = score_features(ckpt.model, test.features, device=device).tolist()
        n_params = sum(p.numel() for p in ckpt.model.parameters())
        score_of = dict(zip(test.paths, scores))
        cal = ckpt.val_real_scores.numpy()
        return Trained(test, score_of, ckpt.threshold, n_params, str(ckpt.path), 0.0, cal)

    def baseline(self, name: str, s: TrainSettings, options: dict | None = None) -> Trained:
        """Fit a baseline on this seed's training features; score every test image.

        The fitting and its threshold rule: baseline_fitting.py; ``options``: the baseline's
        settings."""
        options = baseline_options(name, options)
        key = json.dumps(
            [name, options, asdict(s.backbone), asdict(s.data), s.seed],
            sort_keys=True,
            default=str,
        )
        if key in self._trained:
            return self._trained[key]
        start = time.perf_counter()
        device = resolve_device(s.device)
        backbone = self.backbone(s.backbone, device)
        split, cache = train_split(s), feature_cache(s.data)
        test = self.test_data(s, backbone, device)
        score_of, threshold, cal, n_params = fit_baseline(
            name, options, s, backbone, split, cache, test, device
        )
        done = Trained(
            test,
            score_of,
            float(threshold),
            n_params,
            None,
            time.perf_counter() - start,
            cal,
        )
        self._trained[key] = done
        return done

    # -------------------------------------------------------------- experiments
    def run(self, spec: ExperimentSpec) -> ExperimentResult:
        out = Path(self.opts.out) / spec.name
        if self.opts.histogram_sets:
            spec = replace(spec, histogram_sets=list(self.opts.histogram_sets))
        seeds = self.seeds(spec)
        first = self.settings(spec, None, seeds[0])
        _require_data(spec, first, self.opts)
        arms = [self._run_arm(spec, arm, out) for arm in self._arms(spec)]
        wanted = self.opts.baselines
        names = [b for b in spec.baselines if wanted is None or b in wanted]
        if (
            names and not first.data.train_root
        ):  # e.g. table5 from a checkpoint: nothing to fit them on
            log.warning(
                "%s: baselines %s skipped: they are fitted on data.train_root", spec.name, names
            )
            names = []
        arms += [self._run_baseline(spec, name, out) for name in names]
        run0 = _first_run(spec, arms)
        meta = run_metadata(first, run0.backbone, self.opts, spec.name, spec.accepts_ckpt, seeds)
        return ExperimentResult(spec, meta, arms, run0.sets)

    def _arms(self, spec: ExperimentSpec) -> list[ArmSpec]:
        if spec.accepts_ckpt and self.opts.ckpt:
            paper = spec.arms[0].paper if spec.arms else None
            return [ArmSpec("checkpoint", [], paper)]
        return spec.arms

    def _run_arm(self, spec: ExperimentSpec, arm: ArmSpec, out: Path) -> ArmResult:
        runs: dict[int, SeedRun] = {}
        settings: dict = {}  # the first seed's, as JSON
        failed: dict[int, str] = {}
        for seed in self.seeds(spec):
            s = self.settings(spec, arm, seed)
            settings = settings or to_jsonable(s)
            folder = out / "arms" / _slug(arm.name) / f"seed{seed}"
            if arm.name == "checkpoint":
                if self.opts.ckpt is None:  # a spec's own arm of that name: no file to load
                    raise ClipflowError(f"{spec.name}: arm 'checkpoint' needs ckpt=PATH")
                trained = self.load_arm(s, self.opts.ckpt)
            else:
                try:
                    trained = self.train_arm(s, folder)
                except TrainingDivergedError as err:
                    # A recorded gap (loss=paper is unbounded): the other arms and seeds stand,
                    # and the tables say which seeds their means leave out.
                    log.warning("%s / %s / seed %d: %s", spec.name, arm.name, seed, err)
                    failed[seed] = str(err)
                    atomic_write_text(folder / "diverged.txt", f"{err}\n")
                    continue
            runs[seed] = self._evaluate(spec, trained, folder)
            log.info("%s / %s / seed %d: %.1f s", spec.name, arm.name, seed, trained.seconds)
        kind = "checkpoint" if arm.name == "checkpoint" else "clipflow"
        return ArmResult(arm.name, kind, arm.paper, runs, settings, failed)

    def _run_baseline(self, spec: ExperimentSpec, name: str, out: Path) -> ArmResult:
        if name not in BASELINES:
            raise ClipflowError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        runs = {}
        for seed in self.seeds(spec):
            s = self.settings(spec, None, seed)
            options = spec.baseline_settings.get(name)
            if name in spec.tiny_baseline_settings and _asks_tiny(self.opts.overrides):
                options = {**(options or {}), **spec.tiny_baseline_settings[name]}
            fitted = self.baseline(name, s, options)
            runs[seed] = self._evaluate(spec, fitted, out / "arms" / name / f"seed{seed}")
        return ArmResult(BASELINE_LABELS[name], "baseline", BASELINE_PAPER[name], runs)

    def _evaluate(self, spec: ExperimentSpec, trained: Trained, folder: Path) -> SeedRun:
        """Per-set metrics of one trained arm on the experiment's sets; writes its files."""
        sets = trained.test.extra if spec.sets == "extra" else trained.test.sets
        rows, score_rows = evaluate_sets(
            sets, trained.score_of, trained.threshold, trained.cal_scores
        )
        grouped: dict[str, tuple[list, list]] = {r["dataset"]: ([], []) for r in rows}
        for r in score_rows:
            grouped[r["dataset"]][r["label"]].append(r["score"])
        scores = {
            k: (np.asarray(real, np.float32), np.asarray(fake, np.float32))
            for k, (real, fake) in grouped.items()
        }
        _write_arm_files(folder, rows, score_rows)
        evaluated = [(r["dataset"], r["display_name"]) for r in rows]
        return SeedRun(
            rows,
            trained.threshold,
            trained.n_params,
            scores,
            trained.checkpoint,
            trained.seconds,
            evaluated,
            trained.test.backbone,
            confident_mistakes(score_rows, trained.threshold),
        )


def _first_run(spec: ExperimentSpec, arms: list[ArmResult]) -> SeedRun:
    """The first arm × seed that trained: its sets and backbone describe the experiment."""
    for arm in arms:
        for run in arm.runs.values():
            return run
    reasons = "; ".join(f"{a.name}: {r}" for a in arms for r in a.failed.values())
    raise TrainingDivergedError(f"experiment {spec.name}: no arm trained ({reasons})")


def _arm_key(s: TrainSettings) -> str:
    """Settings with defaults resolved: ``proxy.ratio=null`` under N+P is the same arm as 0.1."""
    values = asdict(s)
    values["proxy"] = s.proxy.describe(s.train.mode)
    values["train"]["epochs"] = s.train.resolved_epochs()
    return json.dumps(values, sort_keys=True, default=str)


def _require_data(spec: ExperimentSpec, s: TrainSettings, opts: RunOptions) -> None:
    if not s.data.train_root and not (spec.accepts_ckpt and opts.ckpt):
        raise DataError(
            f"experiment {spec.name} trains CLIP-Flow: pass data.train_root=DIR (natural images)"
        )
    if spec.sets == "extra" and not opts.extra_roots:
        raise DataError(
            f"experiment {spec.name} evaluates new generators: pass extra_roots=[DIR,...] "
            "(folders <name>/0_real, <name>/1_fake)"
        )
    if spec.sets == "test" and not s.data.test_root:
        raise DataError(f"experiment {spec.name} needs the benchmark: pass data.test_root=DIR")


def _asks_tiny(overrides: list[str]) -> bool:
    """The command line chose the random ``tiny`` backbone (the miniature, tests)."""
    return any(o.lstrip("+") in ("backbone=tiny", "backbone.name=tiny") for o in overrides)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace("+", "plus"))


def _write_arm_files(folder: Path, rows: list[dict], score_rows: list[dict]) -> None:
    atomic_write_text(folder / "results.csv", to_csv(rows, TABLE_COLUMNS))
    atomic_write_text(folder / "scores.csv", scores_to_csv(score_rows))
