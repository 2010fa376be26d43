"""Score your own images with a trained checkpoint: the :class:`Detector` API.

    from clipflow import Detector
    det = Detector.from_checkpoint("outputs/train/<date>", device="auto")
    det.score(["a.jpg", pil_image, hwc_uint8_array])   # -> np.ndarray (N,), higher = faker
    det.predict("a.jpg")               # -> [Prediction(score, decision, fpr_val, path)]

The backbone and its preprocessing are rebuilt from the checkpoint, so scores match those
``clipflow-eval`` writes for the same files. ``fpr_val`` is the share of the checkpoint's natural
validation images that score at least as high: how often a real photo looks this unusual.

``det.predict(x, fpr=0.01)`` decides by the conformal p-value instead (ai-generated iff
``p_value <= 0.01``: at most 1 % of real photos like the calibration ones are flagged, see
docs/calibration.md); ``unsure_k=K`` also scores K re-encoded copies and says ``unsure`` when
their decisions disagree.

A score that is not a finite number (NaN, inf: a broken or overflowing flow) decides nothing:
the image is an error record like an unreadable file (``predict``, ``score_files``), or raises
:class:`~clipflow.errors.UnreadableImageError` without ``skip_errors``.

Here: the Detector and :func:`table_footer` (what its numbers mean). Around it, by job: the
records and their JSON lines / CSV / table in :mod:`clipflow.eval.predictions`, images handed
over in memory in :mod:`clipflow.features.image_input`, ``inputs=`` folders and globs in
:mod:`clipflow.data.expand`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backbones.backbone import Backbone, BackboneProtocol
from .backbones.preprocess import build_transform
from .backbones.protocol import ExtractorBackbone
from .checkpoints.backbone_match import checkpoint_backbone, require_feature_dim
from .checkpoints.checkpoint import Checkpoint, load_checkpoint
from .core.fileio import display_path
from .core.machine import resolve_device
from .data.imageio import DEFAULT_MAX_PIXELS
from .errors import ClipflowError, UnreadableImageError
from .eval.checks import detect_notes
from .eval.conformal import ConformalCalibration, check_level, unsure_perturbations
from .eval.metrics import false_positive_rate
from .eval.predictions import (
    FAKE,
    REAL,
    UNSURE,
    Prediction,
    error_word,
    finite_score,
    not_finite_reason,
)
from .features.extract import extract_features
from .features.image_input import as_items, to_uint8_chw
from .features.loader import Loader
from .flow.model import score_features

log = logging.getLogger(__name__)


class Detector:
    """A checkpoint + the frozen backbone it was trained on, ready to score images."""

    def __init__(
        self,
        ckpt: Checkpoint,
        backbone: Backbone | ExtractorBackbone,
        device: str = "cpu",
        batch_size: int = 32,
    ):
        require_feature_dim(ckpt, backbone)
        self.ckpt, self.backbone, self.device = ckpt, backbone, device
        self.model = ckpt.model.to(device).eval()
        self.transform = build_transform(backbone)
        self.batch_size = batch_size
        self.max_pixels: int | None = DEFAULT_MAX_PIXELS  # larger files: refused undecoded
        # the natural validation (or calibrate's) scores, sorted: fpr_val and p-values
        self.calibration = ConformalCalibration(ckpt.val_real_scores.numpy())

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        backbone: dict | BackboneProtocol | None = None,
        batch_size: int = 32,
    ) -> Detector:
        """Load ``path`` (run folder, ``model.safetensors`` or its JSON) and its backbone.

        ``backbone`` overrides recorded fields,
        e.g. ``{"pretrained": "/local/weights.safetensors"}`` or, for a checkpoint of a custom
        extractor, ``{"factory": "pkg.mod:make_extractor"}``; or is a ready backbone (your own
        :class:`~clipflow.backbones.backbone.BackboneProtocol` extractor, docs/backbones.md).
        It must match the checkpoint's recorded backbone (name, layers, feature size; a custom
        extractor also its ``weights_id``).
        """
        # a str as is (it may be hf://...); other path-likes the Path load_checkpoint makes
        ckpt = load_checkpoint(path if isinstance(path, str) else Path(path))
        return cls.from_loaded(ckpt, device, backbone, batch_size)

    @classmethod
    def from_pretrained(
        cls,
        repo_id: str | os.PathLike,
        revision: str | None = None,
        device: str = "auto",
        backbone: dict | BackboneProtocol | None = None,
        batch_size: int = 32,
    ) -> Detector:
        """A checkpoint from the Hugging Face Hub: ``"OWNER/NAME"`` (or ``hf://OWNER/NAME``,
        optionally ``@REVISION``), fetched through the Hub cache; ``HF_HUB_OFFLINE=1`` reads
        only the cache. ``revision`` (a branch, tag or commit) pins the files. An existing
        local folder (what :meth:`save_pretrained` wrote) is read as it is, as the Hub's
        own ``from_pretrained`` does."""
        if os.path.isdir(repo_id):
            if revision:
                raise ClipflowError(f"{repo_id!r} is a local folder: it has no revision=")
            return cls.from_checkpoint(repo_id, device, backbone, batch_size)
        repo_id = str(repo_id)
        ref = repo_id if repo_id.startswith("hf://") else f"hf://{repo_id}"
        if revision:
            if "@" in ref:
                raise ClipflowError(f"{repo_id!r} already names a revision; drop revision=")
            ref = f"{ref}@{revision}"
        return cls.from_checkpoint(ref, device, backbone, batch_size)

    @classmethod
    def from_loaded(
        cls,
        ckpt: Checkpoint,
        device: str = "auto",
        backbone: dict | BackboneProtocol | None = None,
        batch_size: int = 32,
    ) -> Detector:
        """Like :meth:`from_checkpoint`, for a checkpoint loaded with ``load_checkpoint``."""
        device = resolve_device(device)
        if backbone is not None and not isinstance(backbone, dict):
            ready = checkpoint_backbone(ckpt, {}, device, ready=backbone)
            return cls(ckpt, ready, device, batch_size)
        overrides = {k: v for k, v in (backbone or {}).items() if v is not None}
        return cls(ckpt, checkpoint_backbone(ckpt, overrides, device), device, batch_size)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        repo_id: str | None = None,
        results: str | os.PathLike | None = None,
    ) -> Path:
        """Write this detector's checkpoint as a Hub model folder (model.safetensors,
        model.json with local paths redacted, model card README.md), no network;
        :meth:`from_pretrained` reads it back with identical scores. ``repo_id`` names the
        card; ``results``: a clipflow-eval run dir of this checkpoint (its model-index)."""
        from .checkpoints.push import save_pretrained

        return save_pretrained(self.ckpt, save_directory, repo_id, results)

    def push_to_hub(
        self, repo_id: str, private: bool = False, results: str | os.PathLike | None = None
    ) -> str:
        """Upload the folder :meth:`save_pretrained` writes to ``repo_id`` (created if
        needed) in one commit; returns the commit URL. Log in first (``hf auth login``)."""
        from .checkpoints.push import push_to_hub

        return push_to_hub(self.ckpt, repo_id, private, results)

    @property
    def threshold(self) -> float:
        """Decision threshold from the checkpoint: ``score > threshold`` means ai-generated."""
        return self.ckpt.threshold

    @property
    def random_backbone(self) -> bool:
        return bool(self.backbone.describe().get("random_init"))

    @property
    def n_validation(self) -> int:
        """How many natural validation scores the FPR is computed from."""
        return self.calibration.n

    def label(self, score: float) -> str:
        """The decision at the checkpoint threshold; a NaN/inf score is refused, not decided."""
        return FAKE if finite_score(score) > self.threshold else REAL

    def fpr(self, score: float) -> float | None:
        """Share of natural validation images scoring >= ``score`` (None without them);
        a NaN/inf score is refused (ValueError)."""
        value = false_positive_rate(self.calibration.scores, finite_score(score))
        return None if np.isnan(value) else value

    def p_values(self, images: Any, skip_errors: bool = False) -> np.ndarray:
        """Conformal p-values (N,) against the checkpoint's calibration reals: small = unlike
        them. ``p <= alpha`` flags a real photo with probability <= alpha (docs/calibration.md).
        NaN for an image :meth:`score` could not score (``skip_errors=True``)."""
        return self.calibration.p_values(self.score(images, skip_errors))

    def predict(
        self,
        images: Any,
        skip_errors: bool = False,
        fpr: float | None = None,
        unsure_k: int = 0,
    ) -> list[Prediction]:
        """:meth:`score` plus the decision at the checkpoint threshold and the empirical FPR.

        ``fpr=alpha`` decides by ``p_value <= alpha`` instead; ``unsure_k=K`` also scores K
        re-encoded copies (:data:`clipflow.eval.conformal.UNSURE_COPIES`) and decides ``unsure``
        when the image and its copies are not all decided alike. An image whose score (or a
        copy's) is not a finite number gets no decision: an error record with
        ``skip_errors=True``, else UnreadableImageError."""
        fpr = self.check_fpr(fpr)
        items = as_items(images)
        copies = unsure_perturbations(unsure_k)
        scores, errors = self._score(items, skip_errors, copies)
        paths = [str(x) if isinstance(x, (str, os.PathLike)) else None for x in items]
        return [self._prediction(scores[:, i], p, errors.get(i), fpr) for i, p in enumerate(paths)]

    def check_fpr(self, fpr: Any) -> float | None:
        """``fpr`` as a float level (a numpy scalar too), or None; a level outside (0, 1), or
        one this checkpoint's calibration reals cannot reach, is refused in one line."""
        return None if fpr is None else check_level(fpr, self.calibration.n)

    def _score(
        self, items: list, skip_errors: bool, copies: Sequence = ()
    ) -> tuple[np.ndarray, dict[int, str]]:
        """(1 + len(copies), N) scores: the images, then each re-encoded copy; and the reason
        of each image not scored (unreadable, or a score that is not a finite number: its
        column is NaN). Without ``skip_errors`` the first such image raises."""
        variants = [None, *copies]
        scores = np.full((len(variants), len(items)), np.nan)
        errors: dict[int, str] = {}
        for start in range(0, len(items), self.batch_size):
            batch, keep = [], []
            for i, item in enumerate(items[start : start + self.batch_size], start):
                try:
                    image = to_uint8_chw(item, self.max_pixels)
                    batch += [self.transform(v(image) if v else image) for v in variants]
                    keep.append(i)
                except UnreadableImageError as err:
                    self._skip(err, i, errors, skip_errors)
            if keep:
                feats = self.backbone(torch.stack(batch).to(self.device))  # (B·V, D)
                got = score_features(self.model, feats, device=self.device).numpy()
                scores[:, keep] = got.reshape(len(keep), len(variants)).T
            for i in keep:
                reason = not_finite_reason(scores[:, i], copies)
                if reason is not None:
                    scores[:, i] = np.nan  # NaN alone means "not scored": never a stray inf
                    self._skip(
                        UnreadableImageError(_name(items[i], i), reason), i, errors, skip_errors
                    )
        return scores, errors

    @staticmethod
    def _skip(err: UnreadableImageError, i: int, errors: dict, skip_errors: bool) -> None:
        """Record image ``i``'s reason (``skip_errors``), or raise it."""
        if not skip_errors:
            raise err
        errors[i] = err.reason
        log.warning("skipped %s", err)

    def score(self, images: Any, skip_errors: bool = False) -> np.ndarray:
        """Anomaly scores (N,) for one image or a list of them (paths, PIL images, arrays,
        tensors; see :func:`~clipflow.features.image_input.to_uint8_chw`). An unreadable file,
        or one the flow gives a NaN or infinite score, raises UnreadableImageError, or scores
        NaN with ``skip_errors=True``."""
        return self._score(as_items(images), skip_errors)[0][0]

    def _decide(self, scores: np.ndarray, fpr: float | None) -> np.ndarray:
        if fpr is None:
            return scores > self.threshold
        return self.calibration.decide(scores, fpr)

    def _prediction(
        self, scores: Any, path: str | None, error: str | None, fpr: float | None = None
    ) -> Prediction:
        """``scores``: the image's score, then its copies' (one number without copies).
        Every score must be finite here: callers turn the others into ``error``."""
        if error is not None:
            return Prediction(None, None, None, path, error)
        scores = np.atleast_1d(np.asarray(scores, float))
        if not np.isfinite(scores).all():  # a caller forgot: still never a decision from NaN
            return Prediction(None, None, None, path, not_finite_reason(scores, ()))
        score, fake = float(scores[0]), self._decide(scores, fpr)
        decision = (FAKE if fake[0] else REAL) if fake.all() == fake.any() else UNSURE
        spread = (float(scores.min()), float(scores.max())) if len(scores) > 1 else (None, None)
        p_value = self.calibration.p_values(np.array([score]))[0]
        return Prediction(
            score,
            decision,
            self.fpr(score),
            path,
            p_value=None if np.isnan(p_value) else float(p_value),
            level=fpr,
            n_cal=self.calibration.n,
            score_min=spread[0],
            score_max=spread[1],
        )

    def score_files(
        self,
        paths: Sequence[str | os.PathLike],
        num_workers: int = 0,
        desc: str = "detect",
        fpr: float | None = None,
        unsure_k: int = 0,
    ) -> list[Prediction]:
        """Score many files in batches with a progress bar; unreadable files come back with
        their reason instead of raising, and so do files whose score (or a copy's) is not a
        finite number. Results follow the order of ``paths``. ``fpr`` and ``unsure_k`` as in
        :meth:`predict`."""
        fpr = self.check_fpr(fpr)
        copies = unsure_perturbations(unsure_k)
        files = [str(p) for p in paths]
        workers = (
            num_workers if len(files) > self.batch_size else 0
        )  # spawning costs more than it saves
        fs = extract_features(
            self.backbone,
            files,
            self.transform,
            [None, *copies],
            self.device,
            Loader(self.batch_size, workers, max_pixels=self.max_pixels),
            desc=desc,
        )
        scores = np.stack(
            [score_features(self.model, f, device=self.device).numpy() for f in fs.features]
        )  # (1 + K, N)
        done = {}
        for i, p in enumerate(fs.paths):
            reason = not_finite_reason(scores[:, i], copies)
            if reason is not None:
                log.warning("skipped %s: %s", display_path(p), reason)
            done[p] = self._prediction(scores[:, i], p, reason, fpr)
        done.update({p: Prediction(None, None, None, p, reason) for p, reason in fs.skipped})
        return [done[p] for p in files]


# ----------------------------------------------------------------------------- helpers


def _name(item: Any, index: int) -> str:
    """How an error names an input: its path, or its place in the list given."""
    return str(item) if isinstance(item, (str, os.PathLike)) else f"image {index}"


# ----------------------------------------------------------------------------- output


def table_footer(
    det: Detector, records: Sequence[Prediction], fpr: float | None = None, unsure_k: int = 0
) -> str:
    """What the numbers mean, in a few lines under the table. (The random-weight warning is
    the backbone's own log line on stderr, once per command, not repeated here.)"""
    errors = [error_word(r.error) for r in records if r.error is not None]
    n_fake = sum(r.decision == FAKE for r in records)
    n_unsure = sum(r.decision == UNSURE for r in records)
    n_real = len(records) - len(errors) - n_fake - n_unsure
    problems = [f"{errors.count(w)} {w}" for w in ("unreadable", "no decision") if w in errors]
    lines = [
        f"{len(records) - len(errors)} scored: {n_fake} {FAKE}, {n_real} {REAL}"
        + (f", {n_unsure} {UNSURE}" if unsure_k else "")
        + (f"; {', '.join(problems)}" if problems else ""),
        (
            f"decision: score > {det.threshold:.4f} (the checkpoint's threshold) -> {FAKE}"
            if fpr is None
            else f"decision: p_value <= fpr={fpr:g} -> {FAKE} (at most {100 * fpr:g}% of real "
            "photos like the calibration ones are flagged; docs/calibration.md)"
        )
        + "; fpr_val: share of the "
        f"checkpoint's {det.n_validation} calibration reals (natural validation images, or "
        "the photos of clipflow-calibrate) scoring at least as high; "
        f"p_value: (1 + that count) / ({det.n_validation} + 1)",
    ]
    if unsure_k:
        lines.append(
            f"{UNSURE}: the image and its {unsure_k} re-encoded copies are not all decided "
            "alike; spread: their lowest..highest score"
        )
    lines += detect_notes(det.calibration.scores, det.threshold, det.ckpt.meta.get("warnings"))
    return "\n".join(lines) + "\n"
