"""Baselines on the same cached CLIP features as CLIP-Flow, for apples-to-apples tables.

* :class:`Mahalanobis` — a Gaussian (mean + Ledoit–Wolf shrinkage covariance) fitted on
  *natural* training features only; score = Mahalanobis distance. The image-level analogue
  of the Gaussian anomaly detectors of Table I (DFM; PaDiM does the same per patch).
* :class:`KNN` — distance to the *natural* training features' k nearest neighbours (cosine),
  exact search by chunked matrix products in torch: the feature-space kNN detector trained
  on reals only, beside the Gaussian.
* :class:`LinearProbe` — UnivFD's linear probe: logistic regression on the features of the
  CNNSpot ProGAN training set's real **and fake** images (``<class>/0_real`` and
  ``<class>/1_fake``). This is the only place in clipflow where AI-generated images are
  ever used for training, and only for this baseline; CLIP-Flow itself never sees them.

Both score "higher = more likely fake", like CLIP-Flow's q.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data.imageio import list_images, list_subdirs
from ..data.layouts import FAKE_DIR, REAL_DIR
from ..errors import ClipflowError, DataError

log = logging.getLogger(__name__)

BASELINES = ("univfd_linear", "mahalanobis", "knn", "recon_distance")
# The paper rows each baseline is compared with (Table I / II): UnivFD's linear probe is
# UnivFD "LC"; the Gaussian density on deep features is DFM (PaDiM is its per-patch cousin).
BASELINE_PAPER = {
    "univfd_linear": {"method": "UnivFD", "variant": "LC"},
    "mahalanobis": {"method": "DFM", "variant": "-"},
    "knn": None,  # not in the paper
    "recon_distance": None,  # AEROBLADE's idea; not in the paper
}
BASELINE_LABELS = {
    "univfd_linear": "UnivFD linear probe",
    "mahalanobis": "Mahalanobis (natural only)",
    "knn": "kNN cosine (natural only)",
    "recon_distance": "Reconstruction distance (training-free)",
}
# What each baseline's ``options`` may set (an experiment's ``baseline_settings``), defaults.
BASELINE_OPTIONS: dict[str, dict] = {
    "knn": {"k": 5},
    "recon_distance": {  # paper/baselines_realonly.py
        "autoencoder": "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "autoencoder_subfolder": "vae",
        "distance": "pixel",
        "batch_size": 8,
    },
}


def baseline_options(name: str, given: dict | None) -> dict:
    """A baseline's settings: its defaults (:data:`BASELINE_OPTIONS`) updated by ``given``;
    an unknown key is a one-line error naming the known ones."""
    known = BASELINE_OPTIONS.get(name, {})
    unknown = sorted(set(given or {}) - set(known))
    if unknown:
        raise ClipflowError(
            f"baseline_settings.{name}: unknown key(s) {unknown}; known: {sorted(known) or 'none'}"
        )
    return {**known, **(given or {})}


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return (
        x.detach().cpu().double().numpy()
        if isinstance(x, torch.Tensor)
        else np.asarray(x, np.float64)
    )


@dataclass
class Mahalanobis:
    """Gaussian density of natural features; score = distance to its mean (higher = more fake)."""

    mean: np.ndarray | None = None  # (D,)
    precision: np.ndarray | None = None  # (D, D)
    shrinkage: float | None = None

    def fit(self, natural: torch.Tensor | np.ndarray) -> Mahalanobis:
        """Fit on natural features (N, D) only; Ledoit–Wolf keeps the covariance invertible
        for N < D."""
        x = _numpy(natural)
        if len(x) < 2:
            raise ValueError("the Mahalanobis baseline needs at least 2 natural features")
        lw = LedoitWolf().fit(x)
        self.mean, self.precision, self.shrinkage = (
            lw.location_,
            lw.precision_,
            float(lw.shrinkage_),
        )
        return self

    def score(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """sqrt((x − μ)ᵀ Σ⁻¹ (x − μ)) for features (N, D) -> (N,)."""
        if self.mean is None or self.precision is None:  # fit() sets both at once
            raise RuntimeError("fit the Mahalanobis baseline first")
        d = _numpy(features) - self.mean
        return np.sqrt(np.maximum(np.einsum("nd,de,ne->n", d, self.precision, d), 0.0))

    @property
    def n_params(self) -> int:
        dim = 0 if self.mean is None else len(self.mean)
        return dim + dim * (dim + 1) // 2


@dataclass
class KNN:
    """Mean cosine distance to the k nearest natural training features (higher = more fake).

    Exact search: features are L2-normalised and compared by chunked matrix products, so
    memory stays at ``chunk × N`` similarities whatever the number of queries.
    """

    k: int = 5
    chunk: int = 1024
    bank: torch.Tensor | None = None  # (N, D) unit rows

    def fit(self, natural: torch.Tensor | np.ndarray) -> KNN:
        """Keep the natural features (N, D), L2-normalised; needs N >= k."""
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"the kNN baseline's k must be an integer >= 1, got {self.k!r}")
        x = torch.as_tensor(_numpy(natural), dtype=torch.float32)
        if len(x) < self.k:
            raise ValueError(
                f"the kNN baseline needs at least k={self.k} natural features, got {len(x)}"
            )
        self.bank = torch.nn.functional.normalize(x, dim=1)
        return self

    def score(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """1 − mean cosine similarity to the k nearest natural features: (N, D) -> (N,)."""
        if self.bank is None:
            raise RuntimeError("fit the kNN baseline first")
        q = torch.nn.functional.normalize(
            torch.as_tensor(_numpy(features), dtype=torch.float32), dim=1
        )
        out = [
            1.0 - (q[i : i + self.chunk] @ self.bank.T).topk(self.k, dim=1).values.mean(dim=1)
            for i in range(0, len(q), self.chunk)
        ]
        return torch.cat(out).double().numpy() if out else np.zeros(0)

    @property
    def n_params(self) -> int:
        """Stored numbers: the natural features themselves (a kNN has no trained weights)."""
        return 0 if self.bank is None else self.bank.numel()


@dataclass
class LinearProbe:
    """UnivFD's linear head: standardised features -> logistic regression; score = logit.

    UnivFD predicts fake at sigmoid(logit) > 0.5, i.e. logit > 0: ``threshold`` is 0.
    """

    c: float = 1.0
    max_iter: int = 2000
    seed: int = 0
    threshold: float = 0.0
    model: Pipeline | None = None  # StandardScaler -> LogisticRegression, once fitted

    def fit(self, real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray) -> LinearProbe:
        """Fit on real (N0, D) and fake (N1, D) training features (labels 0 / 1)."""
        x = np.concatenate([_numpy(real), _numpy(fake)])
        y = np.r_[np.zeros(len(real), int), np.ones(len(fake), int)]
        if len(real) == 0 or len(fake) == 0:
            raise ValueError("the linear probe needs both real and fake training features")
        clf = LogisticRegression(C=self.c, max_iter=self.max_iter, random_state=self.seed)
        self.model = make_pipeline(StandardScaler(), clf).fit(x, y)
        return self

    def score(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Logit of "fake" for features (N, D) -> (N,)."""
        if self.model is None:
            raise RuntimeError("fit the linear probe first")
        return self.model.decision_function(_numpy(features))

    @property
    def n_params(self) -> int:
        dim = 0 if self.model is None else self.model[-1].coef_.shape[1]
        return dim + 1


def probe_fake_paths(
    train_root: str | Path, per_class: dict[str, int], seed: int = 0
) -> list[Path]:
    """AI-generated training images for the linear probe: ``<class>/1_fake`` of the train root.

    ``per_class`` maps class -> how many to sample (the natural split's counts, so the probe
    sees as many fakes as reals), seeded per class. A root that is itself one class
    (``<root>/1_fake``) is read as such.
    """
    root = Path(train_root)
    folders = (
        {root.name: root / FAKE_DIR}
        if (root / FAKE_DIR).is_dir()
        else {c.name: c / FAKE_DIR for c in list_subdirs(root) if (c / FAKE_DIR).is_dir()}
    )
    picked: list[Path] = []
    for cls, folder in sorted(folders.items()):
        if cls not in per_class:
            continue
        images = sorted(list_images(folder), key=lambda p: p.parts)
        random.Random(f"{seed}-{cls}-fake").shuffle(images)
        picked += sorted(images[: per_class[cls]], key=lambda p: p.parts)
    if not picked:
        raise DataError(
            f"the UnivFD linear-probe baseline needs ProGAN fakes under {root}/<class>/{FAKE_DIR} "
            f"(next to {REAL_DIR}); none found — leave it out with baselines=[mahalanobis]"
        )
    log.warning(
        "UnivFD linear-probe baseline: training on %d AI-GENERATED images from %s/<class>/%s. "
        "This baseline is the only user of fake images; CLIP-Flow never sees them.",
        len(picked),
        root,
        FAKE_DIR,
    )
    return picked
