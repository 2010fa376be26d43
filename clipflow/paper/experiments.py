"""The paper's tables as experiments: arms × seeds on one shared feature cache.

An experiment (``configs/experiment/<name>.yaml``) lists *arms*: train-config overrides such
as ``mode=P``, ``proxy=smoothing`` or ``flow.dr_dim=64``, each with the paper row it is
compared with. :class:`Runner` composes an arm's settings from ``configs/train.yaml``
(``data.views`` from ``fast`` < experiment overrides < command-line overrides < arm overrides,
then ``seed``) and runs the pipeline stages in-process::

    discover → train_features (cache) → fit → validation_features (cache) → calibrate
             → test_features (cache, once per run) → score → per-set metrics

The backbone runs once per image, variant and view (the cache); every further arm costs a
flow training. Arms that resolve to identical settings (Table I's N+P is Table III's FM and
Table IV's low band) are trained once per process and shared.

Training draws are the paper's by default: a fresh random crop and proxy mask for every image
in every epoch (``data.views=0``); ``fast=true`` reuses one cached draw (``data.views=1``).
Seeds: the command line's, else the experiment's ``seeds``, else ``[0]``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..backbones.backbone import load_backbone
from ..backbones.config import BackboneConfig
from ..checkpoints.checkpoint import (
    eval_backbone_config,
    load_checkpoint,
    require_feature_dim,
    save_checkpoint,
)
from ..core.fileio import atomic_write_text, to_jsonable
from ..core.machine import resolve_device
from ..core.versions import package_versions
from ..data.layouts import discover_test_sets, discover_train_images
from ..errors import ClipflowError, DataError, TrainingDivergedError
from ..eval.html_report import confident_mistakes
from ..eval.metrics import calibrate_threshold
from ..eval.report import TABLE_COLUMNS, scores_to_csv, to_csv
from ..features.cache import feature_cache
from ..flow.model import score_features
from ..runs.evaluate import describe_protocol, evaluate_sets, select_test_sets, test_features
from ..runs.train import train_head
from ..runs.train_data import augmentation, train_features, validation_features, validation_paths
from ..settings.config import EvalSettings, TrainSettings, train_settings
from .baselines import (
    BASELINE_LABELS,
    BASELINE_PAPER,
    BASELINES,
    KNN,
    LinearProbe,
    Mahalanobis,
    baseline_options,
    probe_fake_paths,
)
from .baselines_realonly import recon_distance_scores
from .spec import ArmResult, ArmSpec, ExperimentResult, ExperimentSpec, RunOptions, SeedRun

log = logging.getLogger(__name__)


def _experiment_dir() -> Path:
    """configs/experiment inside the installed package (editable or wheel)."""
    return Path(str(files("clipflow.configs"))) / "experiment"


def list_experiments() -> list[str]:
    """Names of the experiment configs, in the order ``experiment=all`` runs them."""
    return list(OmegaConf.load(_experiment_dir() / "all.yaml").experiments)


def named_experiments() -> list[str]:
    """Every experiment: those of ``all`` plus those run only by name (``by_name`` in
    all.yaml, e.g. backbones, which needs several backbones' weights)."""
    path = _experiment_dir() / "all.yaml"
    extra = _yaml_mapping(OmegaConf.load(path), path).get("by_name") or []
    return list_experiments() + [n for n in extra if n not in list_experiments()]


def load_experiment(name: str) -> ExperimentSpec:
    path = _experiment_dir() / f"{name}.yaml"
    if name == "all" or not path.is_file():
        raise ClipflowError(
            f"unknown experiment {name!r}; choose one of: all, {', '.join(named_experiments())}"
        )
    raw = _yaml_mapping(OmegaConf.load(path), path)
    arms = [
        ArmSpec(a["name"], list(a.get("overrides") or []), a.get("paper")) for a in raw.pop("arms")
    ]
    unknown = sorted(set(raw) - {f for f in ExperimentSpec.__dataclass_fields__})
    if unknown:
        raise ClipflowError(f"unknown key(s) {unknown} in {path}")
    return ExperimentSpec(name=name, arms=arms, **{k: v for k, v in raw.items() if k != "name"})


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*groups: list[str]) -> list[str]:
    """Concatenate override lists; a later value of the same key replaces an earlier one."""
    merged: dict[str, str] = {}
    for group in groups:
        for o in group:
            merged.pop(override_key(o), None)
            merged[override_key(o)] = o
    return list(merged.values())


def compose_settings(overrides: list[str]) -> TrainSettings:
    """configs/train.yaml with ``overrides`` (Hydra syntax), as typed settings."""
    try:
        with initialize_config_module(config_module="clipflow.configs", version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides))
    except Exception as err:  # Hydra's override errors say which key is wrong
        raise ClipflowError(f"bad override in {overrides}: {str(err).splitlines()[0]}") from None
    return train_settings(_yaml_mapping(cfg, "configs/train.yaml"))


def _yaml_mapping(cfg: DictConfig | ListConfig, where: object) -> dict[str, Any]:
    """A loaded config as a plain dict (interpolations resolved); ours are all mappings."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(raw, dict):  # a YAML list at the top: no setting has a name
        raise ClipflowError(f"{where} is a list, not a mapping of settings")
    return cast(dict[str, Any], raw)  # the top-level keys of a config are setting names


@dataclass
class _TestData:
    sets: list
    extra: list
    paths: list[str]
    features: torch.Tensor  # (N, D)
    backbone: dict


@dataclass
class _Trained:
    """A trained head (or baseline) with its scores on every test image of the run."""

    test: _TestData
    score_of: dict[str, float]
    threshold: float
    n_params: int
    checkpoint: str | None
    seconds: float
    # the head's calibration reals (conformal columns, cal_transfer); None for baselines
    cal_scores: np.ndarray | None = None


class Runner:
    """Runs experiments; backbones, test features and trained arms are shared across them."""

    def __init__(self, opts: RunOptions):
        self.opts = opts
        self._backbones: dict[str, object] = {}
        self._tests: dict[str, _TestData] = {}
        self._trained: dict[str, _Trained] = {}
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

    def test_data(self, s: TrainSettings, backbone, device: str) -> _TestData:
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
            es = EvalSettings(data=s.data)
            sets = (
                select_test_sets(discover_test_sets(Path(s.data.test_root)), es)
                if s.data.test_root
                else []
            )
            extra = [
                ts
                for root in self.opts.extra_roots
                for ts in select_test_sets(discover_test_sets(Path(root)), es)
            ]
            names = [t.name for t in sets + extra]
            if len(set(names)) < len(names):
                raise DataError(
                    "test set names occur twice across data.test_root and extra_roots: "
                    f"{sorted(names)}"
                )
            # seed 0 always: test crops are deterministic, so every seed shares one extraction.
            fs = test_features(backbone, sets + extra, s.data, feature_cache(s.data), device, 0)
            self._tests[key] = _TestData(sets, extra, fs.paths, fs.features[0], backbone.describe())
        return self._tests[key]

    # -------------------------------------------------------------- one arm, one seed
    def train_arm(self, s: TrainSettings, ckpt_dir: Path | None) -> _Trained:
        """Train (or reuse) the head of ``s`` and score every test image with it."""
        key = _arm_key(s)
        if key in self._trained:
            return self._trained[key]
        start = time.perf_counter()
        device = resolve_device(s.device)
        backbone = self.backbone(s.backbone, device)
        head = train_head(s, backbone, _train_split(s), feature_cache(s.data), device)
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
        done = _Trained(
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

    def load_arm(self, s: TrainSettings, ckpt_path: str) -> _Trained:
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
        return _Trained(test, score_of, ckpt.threshold, n_params, str(ckpt.path), 0.0, cal)

    def baseline(self, name: str, s: TrainSettings, options: dict | None = None) -> _Trained:
        """Fit a baseline on this seed's training features; score every test image.

        Baselines of reals only (Mahalanobis, kNN, reconstruction distance) take the flow's
        threshold rule (natural validation images vs their band-stop proxies) and its
        calibration reals for the conformal columns; ``options``: the baseline's settings."""
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
        split, cache = _train_split(s), feature_cache(s.data)
        test = self.test_data(s, backbone, device)
        cal: np.ndarray | None = None
        if name == "recon_distance":
            val_paths = validation_paths(s, split.val)
            fitted = recon_distance_scores(s, options, test.paths, val_paths, device)
            score_of, threshold, cal, n_params = fitted
        else:
            natural = _natural_view(s, backbone, split.train, cache, device)
            model: Mahalanobis | KNN | LinearProbe
            if name in ("mahalanobis", "knn"):
                model = Mahalanobis() if name == "mahalanobis" else KNN(k=options["k"])
                model = _fit(model, natural)
                val = validation_features(
                    s, backbone, validation_paths(s, split.val), cache, device
                )
                cal, fake = model.score(val.features[0]), model.score(val.features[1])
                threshold = calibrate_threshold(
                    np.r_[cal, fake], np.r_[np.zeros(len(cal)), np.ones(len(fake))]
                )
            else:
                fake_paths = probe_fake_paths(_train_root(s), split.classes, s.seed)
                fakes = _natural_view(s, backbone, fake_paths, cache, device)
                model = LinearProbe(seed=s.seed).fit(natural, fakes)
                threshold = model.threshold
            score_of = dict(zip(test.paths, model.score(test.features).tolist()))
            n_params = model.n_params
        done = _Trained(
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

    def _evaluate(self, spec: ExperimentSpec, trained: _Trained, folder: Path) -> SeedRun:
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


def run_metadata(
    s: TrainSettings,
    backbone: dict,
    opts: RunOptions,
    experiment: str,
    uses_ckpt: bool = False,
    seeds: list[int] | None = None,
) -> dict:
    """What produced a table: backbone, weights, preprocessing, protocol, seeds, training.

    ``fast`` and ``augmentation`` say whether training drew a fresh crop and proxy per epoch
    (the paper) or reused cached draws; ``s`` is the experiment's settings without an arm.
    """
    return {
        "experiment": experiment,
        "backbone": backbone,
        "preprocess": backbone.get("preprocess", s.backbone.preprocess),
        "protocol": describe_protocol(s.data),
        "seeds": list(seeds if seeds is not None else opts.seeds or [0]),
        "fast": opts.fast,
        "train": {
            "per_class": s.data.per_class,
            "views": s.data.views,
            "augmentation": augmentation(s),
            "block": s.flow.block,
            "loss": s.train.loss,
            "lr": s.train.lr,
            "batch_size": s.train.batch_size,
            "epochs": s.train.epochs,
            "n_blocks": s.flow.n_blocks,
        },
        "validation": s.data.val_root
        or f"held out: val_fraction={s.data.val_fraction} of train_root",
        "train_root": s.data.train_root,
        "test_root": s.data.test_root,
        "extra_roots": list(opts.extra_roots),
        "ckpt": opts.ckpt if uses_ckpt else None,
        "overrides": list(opts.overrides),
        "versions": package_versions(),
    }


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


def _fit(model, natural: torch.Tensor):
    """``model.fit(natural)``; a baseline that cannot fit these features says so in one line."""
    try:
        return model.fit(natural)
    except ValueError as err:
        raise ClipflowError(f"baseline: {err}") from None


def _natural_view(s: TrainSettings, backbone, paths, cache, device) -> torch.Tensor:
    """(N, D) features of ``paths`` as they are (no proxy), one view: what baselines fit on."""
    plain = replace(s, train=replace(s.train, mode="N"), data=replace(s.data, views=1))
    natural = train_features(plain, backbone, paths, cache, device).natural
    assert natural is not None  # mode N: the natural features are all there is
    return natural[0]  # view 0


def _train_split(s: TrainSettings):
    return discover_train_images(
        Path(_train_root(s)), s.data.per_class, s.data.val_fraction, s.seed
    )


def _train_root(s: TrainSettings) -> str:
    """data.train_root of an arm that trains or fits (_require_data asked for it already)."""
    if s.data.train_root is None:
        raise DataError("this arm trains on natural images: pass data.train_root=DIR")
    return s.data.train_root


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
