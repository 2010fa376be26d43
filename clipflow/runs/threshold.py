"""The decision threshold of a trained flow (SPEC §7), refusing a flow that has diverged.

:func:`calibrate` scores the natural validation images and their band-stop proxies
(:func:`clipflow.runs.train_data.validation_features`) and picks the threshold that
separates them best (:func:`clipflow.eval.metrics.calibrate_threshold`). Non-finite scores,
a collapsed flow (one score for every image) and a non-finite threshold are refused with
TrainingDivergedError instead of being saved in a checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TrainingDivergedError
from ..eval.metrics import calibrate_threshold
from ..features.extract import FeatureSet
from ..flow.model import CLIPFlow, score_features
from ..transforms.proxy import bandstop_key


def calibrate(model: CLIPFlow, val: FeatureSet, device: str | torch.device, reading: str = "open"):
    """SPEC §7: threshold maximising accuracy on natural val images vs their band-stop proxies.

    Refuses (TrainingDivergedError) non-finite scores, a flow that gives every validation
    image the same score (any threshold would then be arbitrary), and a non-finite threshold.
    """
    real = score_features(model, val.features[0], device=device)
    proxy = score_features(model, val.features[1], device=device)
    _require_finite(torch.cat([real, proxy]))
    scores = torch.cat([real, proxy]).numpy()
    labels = np.r_[np.zeros(len(real), int), np.ones(len(proxy), int)]
    threshold = calibrate_threshold(scores, labels)
    _require_usable_threshold(scores, threshold)
    info = {
        "n_images": len(val.paths),
        "n_skipped": len(val.skipped),
        "proxy": bandstop_key(reading),
        "acc": float(np.mean((scores > threshold) == labels)),
    }
    return threshold, real, info


def _require_finite(scores: torch.Tensor) -> None:
    if len(scores) == 0:
        raise TrainingDivergedError("no validation scores to calibrate the threshold on")
    if not torch.isfinite(scores).all():
        bad = int((~torch.isfinite(scores)).sum())
        raise TrainingDivergedError(
            f"the trained flow gives non-finite scores to {bad} of {len(scores)} validation "
            "images; retrain with loss=logsigmoid"
        )


def _require_usable_threshold(scores: np.ndarray, threshold: float) -> None:
    if np.ptp(scores) == 0:
        raise TrainingDivergedError(
            f"the trained flow gives all {len(scores)} validation images (natural and proxy) "
            f"the same score {scores[0]:.6g}: the flow has collapsed and a threshold would be "
            "meaningless; retrain (e.g. loss=logsigmoid, a lower train.lr, more images)"
        )
    if not np.isfinite(threshold):
        raise TrainingDivergedError(f"the calibrated threshold is {threshold}; retrain")
