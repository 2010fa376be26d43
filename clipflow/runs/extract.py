"""clipflow-extract: fill the feature cache for the train / val / test stages ahead of runs.

Kept apart from training and evaluation because it uses both: the training stages'
feature helpers (:mod:`.train`) and the test sets' (:mod:`.evaluate`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..backbones.backbone import as_backbone, compile_status, load_backbone
from ..core import distributed
from ..core.fileio import atomic_write_text, display_path, no_room_errno, no_room_error
from ..core.machine import resolve_device
from ..data.benchmarks import find_benchmark
from ..data.layouts import listing_skips
from ..data.train_images import discover_train_images
from ..errors import ClipflowError, DataError
from ..features.cache import FeatureCache, feature_cache
from ..settings.config import TrainSettings
from .evaluate import test_features
from .train_data import n_views, train_features, validation_features, validation_paths


def run_extract(s: TrainSettings, stages: list[str], run_dir: Path, backbone=None) -> dict:
    """Fill the feature cache for the train / val / test stages (torchrun shards the files).
    ``backbone``: a ready one (your own extractor, docs/backbones.md) instead of s.backbone.

    A pack that cannot be stored (the disk fills up) ends the run with an error that says what
    was stored: extracting on without storing would be wasted work, and a later run resumes
    from the stored packs."""
    unknown = sorted(set(stages) - {"train", "val", "test"})
    if unknown:
        raise DataError(f"unknown stage(s) {unknown}: use stages=[train,val,test]")
    cache = feature_cache(s.data)  # checked before the backbone loads: no work to lose
    if cache is None:
        raise DataError("clipflow-extract fills the feature cache: leave data.cache=true")
    device = distributed.init_from_env(resolve_device(s.device))
    if cache.read_only:
        raise DataError(f"clipflow-extract cannot write the feature cache {cache.root}")
    cache.stop_on_write_error = True
    backbone = as_backbone(backbone) if backbone is not None else load_backbone(s.backbone, device)
    summary: dict = {"cache_dir": str(cache.root), "backbone": backbone.describe()}
    try:
        _extract_stages(s, stages, backbone, cache, device, summary)
    except OSError as err:
        if err is not cache.write_error:  # not the cache's write: not ours to explain
            raise
        raise _cache_write_failed(cache, err, summary) from err
    if len(summary) == 2:
        raise DataError(
            "nothing to extract: pass data.train_root, data.val_root and/or data.test_root"
        )
    summary["speed"] = {"compile": compile_status(backbone)}  # a compile fallback shows here
    if distributed.Distributed.current().main:
        atomic_write_text(
            Path(run_dir) / "extract.json", json.dumps(summary, indent=2, default=str)
        )
    return summary


def _extract_stages(
    s: TrainSettings, stages: list[str], backbone, cache: FeatureCache, device, summary: dict
) -> None:
    """Extract the asked stages into the cache; each stage's counts go into ``summary`` when
    it is complete."""
    split = None
    if s.data.train_root and {"train", "val"} & set(stages):
        split = discover_train_images(
            Path(s.data.train_root), s.data.per_class, s.data.val_fraction, s.seed
        )
    if "train" in stages and split:
        tf = train_features(s, backbone, split.train, cache, device)
        summary["train"] = {
            "n_images": len(tf.paths),
            "n_skipped": len(split.skipped) + len(tf.skipped),
            "views": n_views(s),
            "mode": s.train.mode,
        }
    if "val" in stages and (split or s.data.val_root):
        val = validation_features(
            s, backbone, validation_paths(s, split.val if split else []), cache, device
        )
        summary["val"] = {"n_images": len(val.paths), "n_skipped": len(val.skipped)}
    if "test" in stages and s.data.test_root:
        found = find_benchmark(Path(s.data.test_root), s.data.benchmark)
        sets = found.sets
        fs = test_features(backbone, sets, s.data, cache, device, s.seed)
        summary["test"] = {
            "n_images": len(fs.paths),
            "n_skipped": len(listing_skips(sets)) + len(fs.skipped),
            "sets": [t.name for t in sets],
            # parts of a benchmark tree missing (as eval's n_left_out), each with its reason
            "left_out": [[display_path(p), why] for p, why in found.skipped],
        }


def _cache_write_failed(cache: FeatureCache, err: OSError, summary: dict) -> ClipflowError:
    """The one-line error of a run whose cache stopped taking packs: what was stored, what to
    do."""
    done = [
        f"{stage} ({v['n_images']} images)"
        for stage, v in summary.items()
        if isinstance(v, dict) and "n_images" in v
    ]
    stored = (
        f"this run stored {cache.stored_entries} feature entries in {cache.stored_packs} "
        f"pack(s) (stages complete: {', '.join(done) or 'none'}) and not the rest; run "
        "clipflow-extract again when there is room: it resumes from the stored packs "
        "(data.cache_dir=DIR: a cache on another disk)"
    )
    if no_room_errno(err) is not None:
        return no_room_error(err, err.filename, kept=stored)
    reason = err.strerror or str(err)
    return DataError(f"cannot write the feature cache {cache.root} ({reason}); {stored}")
