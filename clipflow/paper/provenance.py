"""What produced a table: the experiment's metadata and the paragraph heading every table.

:func:`run_metadata` collects backbone, weights, preprocessing, test protocol, seeds, training
draws and threshold rule (results.json's ``meta``); :func:`provenance` words them. Tables made
with a random-weight backbone carry clipflow.eval.report's warning.
"""

from __future__ import annotations

from ..core.versions import package_versions
from ..eval.report import RANDOM_WARNING
from ..runs.evaluate import describe_protocol
from ..runs.train_data import augmentation
from ..settings.config import TrainSettings
from .spec import RunOptions


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


def provenance(meta: dict) -> str:
    """One paragraph: backbone, weights, preprocessing, protocol, seeds, training, data."""
    bb, tr = meta.get("backbone", {}), meta.get("train", {})
    pre = meta.get("preprocess")
    how = (
        "train: resize 256² + random crop 224, test: resize 256² + center crop 224"
        if pre == "paper"
        else "no resize, center crop 224 (zero-padded when smaller)"
    )
    epochs = (
        tr.get("epochs") if tr.get("epochs") is not None else "paper default (P 30, N+P 10, N 10)"
    )
    block = f" (`{tr['block']}`)" if tr.get("block") else ""
    text = (
        f"**Produced by** backbone `{bb.get('name')}` (weights `{bb.get('weights_id')}`, "
        f"precision {bb.get('precision')}); preprocessing `{pre}` ({how}); "
        f"test protocol `{meta.get('protocol')}`; seeds {meta.get('seeds')}; "
        f"training: {tr.get('per_class') or 'all'} natural images per class, "
        f"{describe_draws(meta)}, loss `{tr.get('loss')}`, lr {tr.get('lr')}, "
        f"batch {tr.get('batch_size')}, epochs {epochs}, "
        f"{tr.get('n_blocks')} coupling blocks{block}; threshold: {meta.get('validation')}."
    )
    if meta.get("overrides"):
        text += f" Command-line overrides: `{' '.join(meta['overrides'])}`."
    if bb.get("random_init"):
        text += "\n\n" + RANDOM_WARNING
    return text


def describe_draws(meta: dict) -> str:
    """Which training draws were used: fresh per epoch (the paper) or cached (``fast=true``)."""
    tr = meta.get("train", {})
    how = tr.get("augmentation") or f"{tr.get('views')} view(s)"
    if how == "fresh per epoch":
        return (
            "training draws **fresh per epoch** (a new random crop and proxy mask for every "
            f"image in every epoch, as the paper; data.views={tr.get('views')})"
        )
    shortcut = "fast=true: " if meta.get("fast") else ""
    return (
        f"training draws **{how}** ({shortcut}data.views={tr.get('views')}; the paper draws "
        "a fresh crop and mask every epoch)"
    )
