"""What an arm × seed runs on and what it yields, shared by the experiment runner and baselines.

The arm's training split (``data.train_root``), the run's test images as features (every set
of the test root and the extra roots, extracted once), and :class:`Trained`: a head's (or a
baseline's) score for every test image, its threshold and calibration reals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.testsets import discover_test_sets
from ..data.train_images import discover_train_images
from ..errors import DataError
from ..features.cache import feature_cache
from ..runs.evaluate import select_test_sets, test_features
from ..settings.config import EvalSettings, TrainSettings


@dataclass
class TestData:
    """Every test image of a run: its sets, their paths and features, the backbone's record."""

    sets: list
    extra: list
    paths: list[str]
    features: torch.Tensor  # (N, D)
    backbone: dict


@dataclass
class Trained:
    """A trained head (or baseline) with its scores on every test image of the run."""

    test: TestData
    score_of: dict[str, float]
    threshold: float
    n_params: int
    checkpoint: str | None
    seconds: float
    # the head's calibration reals (conformal columns, cal_transfer); None for baselines
    cal_scores: np.ndarray | None = None


def extract_test_data(s: TrainSettings, backbone, device: str, extra_roots: list[str]) -> TestData:
    """Features of every test image (test root + ``extra_roots``); set names must not repeat."""
    es = EvalSettings(data=s.data)
    sets = (
        select_test_sets(discover_test_sets(Path(s.data.test_root)), es) if s.data.test_root else []
    )
    extra = [
        ts for root in extra_roots for ts in select_test_sets(discover_test_sets(Path(root)), es)
    ]
    names = [t.name for t in sets + extra]
    if len(set(names)) < len(names):
        raise DataError(
            f"test set names occur twice across data.test_root and extra_roots: {sorted(names)}"
        )
    # seed 0 always: test crops are deterministic, so every seed shares one extraction.
    fs = test_features(backbone, sets + extra, s.data, feature_cache(s.data), device, 0)
    return TestData(sets, extra, fs.paths, fs.features[0], backbone.describe())


def train_split(s: TrainSettings):
    """The arm's natural training images, split into train and validation (seeded)."""
    return discover_train_images(Path(train_root(s)), s.data.per_class, s.data.val_fraction, s.seed)


def train_root(s: TrainSettings) -> str:
    """data.train_root of an arm that trains or fits (experiments._require_data asked for it)."""
    if s.data.train_root is None:
        raise DataError("this arm trains on natural images: pass data.train_root=DIR")
    return s.data.train_root
