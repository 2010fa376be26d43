"""The plug-in point: any feature extractor that satisfies :class:`BackboneProtocol`.

    class MyExtractor:                       # see docs/backbones.md for a complete one
        feature_dim = 128; image_size = 64
        mean = (0.5, 0.5, 0.5); std = (0.5, 0.5, 0.5)
        def describe(self): return {"name": "my-net", "weights_id": "my-net:v1"}
        def __call__(self, images): ...      # (N, 3, S, S) normalised -> float32 (N, D)

Every job of the Python API takes it as ``backbone=`` (``run_train``, ``run_calibrate``,
``run_eval``, ``run_robustness``, ``run_extract``, ``Detector.from_checkpoint``); the CLIs build
it from an import path (``backbone.family=custom backbone.factory=pkg.mod:make``,
:mod:`.custom`). ``describe()`` must give a
``name`` and a ``weights_id`` (they key the feature cache and are recorded in the checkpoint);
optional: ``precision`` (default fp32), ``preprocess`` (paper | univfd, default paper),
``random_init``, ``resize_to`` (an attribute: the paper protocol's resize, default S·256/224).
"""

from __future__ import annotations

import math
import re
from typing import Protocol, runtime_checkable

import torch

from ..errors import BackboneError
from .config import CUSTOM
from .tower import PAPER_RESIZE_RATIO

_ID = re.compile(r"[^\x00-\x1f]{1,4096}")


@runtime_checkable
class BackboneProtocol(Protocol):
    """What clipflow needs from a backbone: facts to preprocess, a record, and features."""

    feature_dim: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> dict: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class ExtractorBackbone:
    """A user's extractor behind the interface the pipeline uses (``cfg``, checked outputs).

    The pipeline reads ``backbone.cfg.preprocess`` and ``.cfg.name``; this adapter supplies a
    ``cfg`` from ``describe()`` and runs the extractor under ``torch.inference_mode``, refusing
    an output of the wrong shape instead of training on it.
    """

    def __init__(self, extractor, cfg_factory, factory: str | None = None):
        info = _checked_info(extractor)
        self.extractor = extractor
        self.feature_dim = _positive_int(extractor, "feature_dim")
        self.image_size = _positive_int(extractor, "image_size")
        self.mean = _triple(extractor, "mean")
        self.std = _triple(extractor, "std")
        self.resize_to = _resize_to(extractor, self.image_size)
        self.info = info
        self.cfg = cfg_factory(
            family=CUSTOM,
            name=info["name"],
            pretrained=None,
            precision=info.get("precision", "fp32"),
            preprocess=info.get("preprocess", "paper"),
            factory=factory,
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            feats = self.extractor(images)
        if not isinstance(feats, torch.Tensor) or tuple(feats.shape) != (
            len(images),
            self.feature_dim,
        ):
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats)
            raise BackboneError(
                f"backbone {self.info['name']!r} returned {shape} for {len(images)} images; "
                f"expected ({len(images)}, {self.feature_dim}) (its feature_dim)"
            )
        return feats.float()

    def to(self, device) -> ExtractorBackbone:
        return self  # the user's extractor lives where the user put it

    def describe(self) -> dict:
        return {
            "family": CUSTOM,
            "name": self.info["name"],
            "pretrained": None,
            "weights_id": self.info["weights_id"],
            "random_init": bool(self.info.get("random_init", False)),
            **input_record(self),
            "layers": None,
            "layer_pool": None,
            # how the CLIs rebuild it (backbone.factory); absent for one given to the API
            **({"factory": self.cfg.factory} if self.cfg.factory else {}),
        }


def input_record(backbone) -> dict:
    """The record fields every backbone shares: how it runs and what images it takes."""
    return {
        "precision": backbone.cfg.precision,
        "preprocess": backbone.cfg.preprocess,
        "feature_dim": backbone.feature_dim,
        "image_size": backbone.image_size,
        "mean": list(backbone.mean),
        "std": list(backbone.std),
    }


def _checked_info(extractor) -> dict:
    if not isinstance(extractor, BackboneProtocol):
        missing = [
            k
            for k in ("feature_dim", "image_size", "mean", "std", "describe", "__call__")
            if not hasattr(extractor, k)
        ]
        raise BackboneError(
            f"{type(extractor).__name__} is not a backbone: it lacks {', '.join(missing)} "
            "(see clipflow.backbones.backbone.BackboneProtocol, docs/backbones.md)"
        )
    info = extractor.describe()
    if not isinstance(info, dict):
        raise BackboneError(f"{type(extractor).__name__}.describe() must return a dict")
    for key in ("name", "weights_id"):
        if not isinstance(info.get(key), str) or not _ID.fullmatch(info[key]):
            raise BackboneError(
                f"{type(extractor).__name__}.describe() needs a non-empty one-line string "
                f"{key!r} (it keys the feature cache and is recorded in checkpoints)"
            )
    if info.get("preprocess", "paper") not in ("paper", "univfd"):
        raise BackboneError(f"describe()['preprocess']={info['preprocess']!r}: paper or univfd")
    return info


def _positive_int(extractor, attr: str) -> int:
    value = getattr(extractor, attr)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BackboneError(f"{type(extractor).__name__}.{attr}={value!r}: a positive integer")
    return value


def _resize_to(extractor, size: int) -> int:
    """The paper protocol's square resize before the S-crop: ``resize_to`` or S·256/224."""
    value = getattr(extractor, "resize_to", None)
    if value is None:
        return round(size * PAPER_RESIZE_RATIO)
    if isinstance(value, bool) or not isinstance(value, int) or value < size:
        raise BackboneError(
            f"{type(extractor).__name__}.resize_to={value!r}: an integer >= image_size ({size}), "
            "or leave it out (S·256/224)"
        )
    return value


def _triple(extractor, attr: str) -> tuple[float, ...]:
    value = tuple(getattr(extractor, attr))
    ok = len(value) == 3 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
    if not ok or (attr == "std" and min(value) <= 0):
        raise BackboneError(
            f"{type(extractor).__name__}.{attr}={value!r}: three finite numbers"
            + (" > 0" if attr == "std" else "")
        )
    return tuple(float(v) for v in value)
