"""Baselines on features: the Mahalanobis distance and UnivFD's linear probe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import make_train_tree
from sklearn.covariance import LedoitWolf
from sklearn.metrics import average_precision_score

from clipflow.errors import DataError
from clipflow.paper.baselines import LinearProbe, Mahalanobis, probe_fake_paths


def test_mahalanobis_equals_hand_computation():
    rng = np.random.default_rng(0)
    natural = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    queries = rng.normal(size=(5, 6)) * 3
    model = Mahalanobis().fit(torch.from_numpy(natural).float())
    lw = LedoitWolf().fit(torch.from_numpy(natural).float().double().numpy())
    inv = np.linalg.inv(lw.covariance_)  # invert the shrunk covariance by hand
    expected = [np.sqrt((q - lw.location_) @ inv @ (q - lw.location_)) for q in queries]
    assert model.score(queries) == pytest.approx(expected, rel=1e-6)
    assert model.score(lw.location_[None])[0] == pytest.approx(0.0, abs=1e-9)  # the mean itself
    assert model.n_params == 6 + 21


def test_mahalanobis_flags_off_distribution_features():
    rng = np.random.default_rng(1)
    natural = rng.normal(size=(200, 16))
    shifted = rng.normal(size=(50, 16)) + 2.0
    model = Mahalanobis().fit(natural)
    scores = model.score(np.concatenate([rng.normal(size=(50, 16)), shifted]))
    assert average_precision_score(np.r_[np.zeros(50), np.ones(50)], scores) > 0.95


def test_linear_probe_beats_chance_on_separable_features():
    rng = np.random.default_rng(2)
    direction = rng.normal(size=32)
    real, fake = rng.normal(size=(100, 32)), rng.normal(size=(100, 32)) + 0.8 * direction
    probe = LinearProbe(seed=0).fit(torch.from_numpy(real), torch.from_numpy(fake))
    test_real, test_fake = rng.normal(size=(100, 32)), rng.normal(size=(100, 32)) + 0.8 * direction
    scores = probe.score(np.concatenate([test_real, test_fake]))
    labels = np.r_[np.zeros(100), np.ones(100)]
    assert average_precision_score(labels, scores) > 0.9
    assert np.mean((scores > probe.threshold) == labels) > 0.8  # UnivFD's 0.5 probability = logit 0
    assert probe.n_params == 33


def test_unfitted_baselines_refuse_to_score():
    with pytest.raises(RuntimeError):
        Mahalanobis().score(np.zeros((1, 3)))
    with pytest.raises(RuntimeError):
        LinearProbe().score(np.zeros((1, 3)))


def test_probe_reads_only_fakes_balanced_per_class(tmp_path: Path):
    root = make_train_tree(tmp_path / "train", classes=("airplane", "cat"), n_real=5, n_fake=4)
    picked = probe_fake_paths(root, {"airplane": 2, "cat": 3}, seed=0)
    assert all(p.parent.name == "1_fake" for p in picked)
    assert sum(p.parent.parent.name == "airplane" for p in picked) == 2
    assert sum(p.parent.parent.name == "cat" for p in picked) == 3
    assert picked == probe_fake_paths(root, {"airplane": 2, "cat": 3}, seed=0)  # seeded
    assert probe_fake_paths(root, {"airplane": 2}, seed=0)[0].parent.parent.name == "airplane"


def test_probe_without_fakes_says_how_to_leave_it_out(tmp_path: Path):
    root = make_train_tree(tmp_path / "train", classes=("cat",), n_real=3, n_fake=0)
    with pytest.raises(DataError, match="baselines=\\[mahalanobis\\]"):
        probe_fake_paths(root, {"cat": 3})
