"""A baseline fitted for one seed and scored on every test image of the run.

Baselines of reals only (Mahalanobis, kNN, reconstruction distance) take the flow's threshold
rule (natural validation images vs their band-stop proxies) and its calibration reals for the
conformal columns; the linear probe (UnivFD) fits naturals against the training folder's
fakes and keeps its own threshold. The models are in baselines.py and baselines_realonly.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..errors import ClipflowError
from ..eval.metrics import calibrate_threshold
from ..runs.train_data import train_features, validation_features, validation_paths
from ..settings.config import TrainSettings
from .arm_data import TestData, train_root
from .baselines import KNN, LinearProbe, Mahalanobis, probe_fake_paths
from .baselines_realonly import recon_distance_scores


def fit_baseline(
    name: str, options: dict, s: TrainSettings, backbone, split, cache, test: TestData, device
) -> tuple[dict[str, float], float, np.ndarray | None, int]:
    """(score of every test path, threshold, calibration reals or None, fitted numbers) of
    baseline ``name`` with its resolved ``options``, fitted on this seed's ``split``."""
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
            val = validation_features(s, backbone, validation_paths(s, split.val), cache, device)
            cal, fake = model.score(val.features[0]), model.score(val.features[1])
            threshold = calibrate_threshold(
                np.r_[cal, fake], np.r_[np.zeros(len(cal)), np.ones(len(fake))]
            )
        else:
            fake_paths = probe_fake_paths(train_root(s), split.classes, s.seed)
            fakes = _natural_view(s, backbone, fake_paths, cache, device)
            model = LinearProbe(seed=s.seed).fit(natural, fakes)
            threshold = model.threshold
        score_of = dict(zip(test.paths, model.score(test.features).tolist()))
        n_params = model.n_params
    return score_of, threshold, cal, n_params


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
