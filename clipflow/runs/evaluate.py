"""The evaluation glue: run_eval (settings, run_dir) and its stages.

checkpoint + test folders → backbone → features → flow → scores → metrics → report.
The stages (prepare_eval, test_features, evaluate_sets, eval_metadata) are public so that
robustness.py and paper/experiments.py compose the same steps.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..backbones.backbone import (
    Backbone,
    check_weights_available,
    compile_status,
    speed_line,
)
from ..backbones.preprocess import build_transform
from ..backbones.protocol import BackboneProtocol, ExtractorBackbone
from ..checkpoints.backbone_match import checkpoint_backbone, eval_backbone_config
from ..checkpoints.checkpoint import Checkpoint, load_checkpoint
from ..core.fileio import atomic_write_text, display_path
from ..core.machine import resolve_device
from ..core.versions import package_versions
from ..data.benchmarks import find_benchmark
from ..data.layouts import TestSet, listing_skips
from ..data.testsets import univfd_sample
from ..errors import DataError
from ..eval.conformal import threshold_share
from ..eval.html_report import eval_report, write_report
from ..eval.means import check_set_names, summarize
from ..eval.metrics import dataset_metrics, ours_metrics
from ..eval.report import skipped_text, write_results
from ..eval.transfer import transfer_metrics
from ..features.cache import FeatureCache, feature_cache
from ..features.cached_extract import cached_extract
from ..features.extract import FeatureSet
from ..features.loader import Loader
from ..flow.model import score_features
from ..settings.config import DataConfig, EvalSettings
from ..transforms.reencode import describe_reencode, reencode_variant
from ..transforms.variant import IDENTITY

log = logging.getLogger(__name__)


class EvalInputs(NamedTuple):
    """What an evaluation needs, every input checked."""

    device: str
    ckpt: Checkpoint
    sets: list[TestSet]
    backbone: Backbone | ExtractorBackbone
    # parts of a benchmark tree that are not scored, with the reason (for skipped.txt)
    left_out: list[tuple[str, str]]


def prepare_eval(s: EvalSettings, backbone=None) -> EvalInputs:
    """Device, checkpoint, test sets and backbone for an evaluation, every input checked first.
    ``backbone``: a ready one (your own extractor), checked against the checkpoint's record."""
    device = resolve_device(s.device)
    ckpt = load_checkpoint(s.ckpt)
    if not s.data.test_root:
        raise DataError("no test images given — pass data.test_root=DIR")
    if backbone is not None:
        backbone = checkpoint_backbone(ckpt, s.backbone, device, ready=backbone)
    else:  # before the (long) scan of the test folders
        check_weights_available(eval_backbone_config(ckpt, s.backbone))
    found = find_benchmark(Path(s.data.test_root), s.data.benchmark)
    sets = select_test_sets(found.sets, s)
    backbone = backbone or checkpoint_backbone(ckpt, s.backbone, device)
    ckpt.model.to(device)
    return EvalInputs(device, ckpt, sets, backbone, [(str(p), r) for p, r in found.skipped])


def run_eval(s: EvalSettings, run_dir: Path, backbone=None) -> dict[str, Path]:
    """Score every dataset under ``data.test_root`` with a checkpoint; write the result files.
    ``backbone``: a ready one (your own extractor) instead of the checkpoint's."""
    ev = prepare_eval(s, backbone)
    log.info(
        "%s (what ran is recorded as speed in the results)", speed_line(compile_status(ev.backbone))
    )
    fs = test_features(ev.backbone, ev.sets, s.data, feature_cache(s.data), ev.device, s.seed)
    scores = score_features(ev.ckpt.model, fs.features[0], device=ev.device).tolist()
    score_of, not_finite = split_not_finite(dict(zip(fs.paths, scores)))
    cal = ev.ckpt.val_real_scores.numpy()
    rows, score_rows = evaluate_sets(ev.sets, score_of, ev.ckpt.threshold, cal)
    skipped = ev.left_out + listing_skips(ev.sets) + fs.skipped + not_finite
    if not rows:
        raise no_scorable_set(Path(run_dir), skipped)
    meta = {
        **eval_metadata(ev.ckpt, ev.backbone, s),
        "n_not_finite": len(not_finite),
        "n_left_out": len(ev.left_out),  # parts of a benchmark tree missing (skipped.txt)
    }
    means = summarize(rows)
    files = write_results(Path(run_dir), rows, means, meta, score_rows, skipped)
    page = eval_report(rows, means, meta, score_rows, cal)
    files["report.html"] = write_report(Path(run_dir) / "report.html", page)
    return files


def no_scorable_set(run_dir: Path, skipped: list[tuple[str, str]]) -> DataError:
    """The error when no set kept readable images of both classes. skipped.txt is written
    first, so that the message names only a file that exists (the results never are)."""
    text = "no dataset had readable real and fake images"
    if not skipped:
        return DataError(f"{text}; see the warnings above")
    path, reason = skipped[0]
    reason = " ".join(str(reason).split())  # as skipped.txt writes it: one line
    example = f"{len(skipped)} file(s) skipped, e.g. {display_path(path)}: {reason}"
    try:
        atomic_write_text(run_dir / "skipped.txt", skipped_text(skipped))
    except OSError:  # the reason above still says what went wrong
        return DataError(f"{text}: {example}")
    return DataError(f"{text}: {example}; every one in {run_dir / 'skipped.txt'}")


def split_not_finite(score_of: dict[str, float]) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """The finite scores, and ``(path, reason)`` for each image the flow scored NaN or inf.

    ``score > threshold`` is False for NaN and sklearn refuses it: such an image is left out
    of every metric and listed in skipped.txt (counted in metrics.json), never silently lost.
    """
    bad = [(p, v) for p, v in score_of.items() if not math.isfinite(v)]
    if bad:
        log.warning(
            "%d image(s) scored NaN or inf by the flow: left out of every metric, listed in "
            "skipped.txt",
            len(bad),
        )
    finite = {p: v for p, v in score_of.items() if math.isfinite(v)}
    return finite, [
        (p, f"score is {v} (not a finite number): left out of the metrics") for p, v in bad
    ]


def test_features(
    backbone: BackboneProtocol,
    sets: list[TestSet],
    data: DataConfig,
    cache: FeatureCache | None,
    device: str | torch.device,
    seed: int = 0,
) -> FeatureSet:
    """(1, N, D) features of every test image, each file once (shared real pools).

    ``data.reencode`` (e.g. jpeg96): every image, real or fake, is re-encoded the same way
    first; the variant's key keeps those features apart in the cache."""
    paths = list(dict.fromkeys(str(p) for ts in sets for p in (*ts.real, *ts.fake)))
    variant = reencode_variant(getattr(data, "reencode", None)) or IDENTITY
    return cached_extract(
        backbone,
        paths,
        build_transform(backbone),
        [variant],
        cache,
        device,
        Loader.from_data(data),
        seed=seed,
        desc="test features",
    )


def select_test_sets(sets: list[TestSet], s: EvalSettings) -> list[TestSet]:
    check_set_names([ts.name for ts in sets])  # before any feature is extracted
    if s.data.protocol == "univfd":
        return [univfd_sample(ts, s.data.max_per_class, seed=0) for ts in sets]
    if s.data.protocol != "all":
        raise DataError(f"data.protocol={s.data.protocol!r}: use all or univfd")
    return sets


def evaluate_sets(
    sets: list[TestSet],
    score_of: dict[str, float],
    threshold: float,
    cal_scores: np.ndarray | None = None,
):
    """Per-set metric rows and per-image score rows; sets left one-sided by skips are dropped.
    ``cal_scores``: the checkpoint's calibration reals, for the conformal columns (ours).
    A NaN/inf score is left out with a warning (run_eval lists them first: split_not_finite)."""
    rows, score_rows = [], []
    for ts in sets:
        items = [(str(p), 0) for p in ts.real] + [(str(p), 1) for p in ts.fake]
        items = [(p, y) for p, y in items if p in score_of]
        n_scored = len(items)
        items = [(p, y) for p, y in items if math.isfinite(score_of[p])]
        if len(items) < n_scored:
            log.warning(
                "dataset %s: %d image(s) with a NaN/inf score left out of its metrics",
                ts.name,
                n_scored - len(items),
            )
        labels = np.array([y for _, y in items], int)
        if labels.sum() == 0 or labels.sum() == len(labels):
            log.warning(
                "dataset %s skipped: no readable %s images",
                ts.name,
                "fake" if labels.sum() == 0 else "real",
            )
            continue
        scores = np.array([score_of[p] for p, _ in items])
        rows.append(
            {
                "dataset": ts.name,
                "display_name": ts.display_name,
                "benchmark": ts.benchmark or "univfd",
                "protocol": ts.protocol,
                **dataset_metrics(scores, labels, threshold),
                **ours_metrics(scores, labels, cal_scores),
                **transfer_metrics(scores, labels, cal_scores),  # do its reals fit the cal?
            }
        )
        score_rows += [
            {"path": p, "dataset": ts.name, "label": y, "score": score_of[p]} for p, y in items
        ]
    return rows, score_rows


def describe_protocol(data) -> str:
    """The test protocol as recorded next to every number: ``all`` or the UnivFD sampling."""
    if data.protocol == "all":
        return "all"
    return f"univfd(max_per_class={data.max_per_class}, seed=0)"


def eval_metadata(ckpt: Checkpoint, backbone, s: EvalSettings) -> dict:
    return {
        "backbone": backbone.describe(),
        "preprocess": backbone.cfg.preprocess,
        "protocol": describe_protocol(s.data),
        "benchmark": s.data.benchmark,
        "reencode": describe_reencode(s.data.reencode),  # None: images scored as stored
        "threshold": ckpt.threshold,
        "n_calibration": len(ckpt.val_real_scores),  # the reals behind the fpr@p columns
        # share of those reals the threshold calls ai-generated: acc@val's warning (report.py)
        "threshold_share": threshold_share(ckpt.val_real_scores.numpy(), ckpt.threshold),
        "checkpoint": str(ckpt.path),
        "checkpoint_sha256": ckpt.sha256,
        "train_mode": ckpt.meta.get("train", {}).get("mode"),
        "test_root": s.data.test_root,
        "auto": s.auto,  # what each auto setting became on this machine
        "speed": {"compile": compile_status(backbone)},  # a compile fallback shows here
        "versions": package_versions(),
    }
