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
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .backbones.backbone import Backbone, BackboneProtocol, as_backbone, load_backbone
from .backbones.preprocess import build_transform
from .backbones.protocol import ExtractorBackbone
from .checkpoints.checkpoint import (
    Checkpoint,
    eval_backbone_config,
    load_checkpoint,
    require_backbone_identity,
    require_feature_dim,
)
from .core.fileio import atomic_write_text, display_path, unwritable_reason
from .core.machine import resolve_device
from .data.imageio import DEFAULT_MAX_PIXELS, load_image, scan_images
from .errors import ClipflowError, UnreadableImageError
from .eval.conformal import ConformalCalibration, check_level, unsure_perturbations
from .eval.metrics import false_positive_rate
from .features.decode import pil_to_uint8_tensor
from .features.extract import extract_features
from .features.loader import Loader
from .flow.model import score_features

log = logging.getLogger(__name__)

REAL, FAKE, UNSURE = "real", "ai-generated", "unsure"
# One output record per input file; the terminal table uses the same names (decision, fpr_val,
# p_value). ``level`` is the fpr= the decision used (null: the checkpoint threshold decided),
# ``n_cal`` the calibration reals behind p_value; score_min/max: spread over the unsure copies.
RECORD_COLUMNS = (
    "path",
    "score",
    "decision",
    "fpr_val",
    "p_value",
    "level",
    "n_cal",
    "score_min",
    "score_max",
    "error",
)


@dataclass(frozen=True)
class Prediction:
    """One image's verdict. ``score``/``decision``/``fpr_val`` are None when ``error`` says why.

    ``fpr_val``: the share of the checkpoint's natural validation images scoring at least as
    high. ``label`` and ``fpr`` are the former names, kept as read-only aliases.
    """

    score: float | None
    decision: str | None  # "real" | "ai-generated" | "unsure" | None (unreadable)
    fpr_val: float | None
    path: str | None = None
    error: str | None = None
    p_value: float | None = None  # conformal: (1 + #{cal >= score}) / (n_cal + 1)
    level: float | None = None  # fpr= the decision was made at; None = the threshold decided
    n_cal: int | None = None
    score_min: float | None = None  # over the image and its unsure copies (unsure_k > 0)
    score_max: float | None = None

    @property
    def label(self) -> str | None:
        return self.decision

    @property
    def fpr(self) -> float | None:
        return self.fpr_val

    def to_dict(self) -> dict:
        """The record as written to JSON lines / CSV, path first (as
        :func:`~clipflow.core.fileio.display_path` writes it: any file name stays one line of
        text)."""
        record = {k: getattr(self, k) for k in RECORD_COLUMNS}
        if self.path is not None:
            record["path"] = display_path(self.path)
        return record


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
        e.g. ``{"pretrained": "/local/weights.safetensors"}``, or is a ready backbone (your own
        :class:`~clipflow.backbones.backbone.BackboneProtocol` extractor, docs/backbones.md);
        it must match the checkpoint's recorded backbone (name, layers, feature size).
        """
        # a str as is (it may be hf://...); other path-likes the Path load_checkpoint makes
        ckpt = load_checkpoint(path if isinstance(path, str) else Path(path))
        return cls.from_loaded(ckpt, device, backbone, batch_size)

    @classmethod
    def from_pretrained(
        cls,
        repo_id: str,
        revision: str | None = None,
        device: str = "auto",
        backbone: dict | BackboneProtocol | None = None,
        batch_size: int = 32,
    ) -> Detector:
        """A checkpoint from the Hugging Face Hub: ``"OWNER/NAME"`` (or ``hf://OWNER/NAME``,
        optionally ``@REVISION``), fetched through the Hub cache; ``HF_HUB_OFFLINE=1`` reads
        only the cache. ``revision`` (a branch, tag or commit) pins the files."""
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
            ready = as_backbone(backbone)
            require_backbone_identity(ckpt, ready)
            return cls(ckpt, ready, device, batch_size)
        overrides = {k: v for k, v in (backbone or {}).items() if v is not None}
        return cls(
            ckpt, load_backbone(eval_backbone_config(ckpt, overrides), device), device, batch_size
        )

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
        return FAKE if score > self.threshold else REAL

    def fpr(self, score: float) -> float | None:
        """Share of natural validation images scoring >= ``score`` (None without them)."""
        value = false_positive_rate(self.calibration.scores, score)
        return None if np.isnan(value) else value

    def p_values(self, images: Any, skip_errors: bool = False) -> np.ndarray:
        """Conformal p-values (N,) against the checkpoint's calibration reals: small = unlike
        them. ``p <= alpha`` flags a real photo with probability <= alpha (docs/calibration.md)."""
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
        when the image and its copies are not all decided alike."""
        self.check_fpr(fpr)
        items = as_items(images)
        copies = unsure_perturbations(unsure_k) if unsure_k else []
        scores, errors = self._score(items, skip_errors, copies)
        paths = [str(x) if isinstance(x, (str, os.PathLike)) else None for x in items]
        return [self._prediction(scores[:, i], p, errors.get(i), fpr) for i, p in enumerate(paths)]

    def check_fpr(self, fpr: float | None) -> None:
        """Refuse a level this checkpoint's calibration reals cannot reach (one line)."""
        if fpr is not None:
            check_level(fpr, self.calibration.n)

    def _score(
        self, items: list, skip_errors: bool, copies: Sequence = ()
    ) -> tuple[np.ndarray, dict[int, str]]:
        """(1 + len(copies), N) scores: the images, then each re-encoded copy."""
        variants = [None, *copies]
        scores, errors = np.full((len(variants), len(items)), np.nan), {}
        for start in range(0, len(items), self.batch_size):
            batch, keep = [], []
            for i, item in enumerate(items[start : start + self.batch_size], start):
                try:
                    image = to_uint8_chw(item, self.max_pixels)
                    batch += [self.transform(v(image) if v else image) for v in variants]
                    keep.append(i)
                except UnreadableImageError as err:
                    if not skip_errors:
                        raise
                    errors[i] = err.reason
                    log.warning("skipped %s", err)
            if keep:
                feats = self.backbone(torch.stack(batch).to(self.device))  # (B·V, D)
                got = score_features(self.model, feats, device=self.device).numpy()
                scores[:, keep] = got.reshape(len(keep), len(variants)).T
        return scores, errors

    def score(self, images: Any, skip_errors: bool = False) -> np.ndarray:
        """Anomaly scores (N,) for one image or a list of them (paths, PIL images, arrays,
        tensors; see :func:`to_uint8_chw`). An unreadable file raises UnreadableImageError,
        or scores NaN with ``skip_errors=True``."""
        return self._score(as_items(images), skip_errors)[0][0]

    def _decide(self, scores: np.ndarray, fpr: float | None) -> np.ndarray:
        if fpr is None:
            return scores > self.threshold
        return self.calibration.decide(scores, fpr)

    def _prediction(
        self, scores: Any, path: str | None, error: str | None, fpr: float | None = None
    ) -> Prediction:
        """``scores``: the image's score, then its copies' (one number without copies)."""
        if error is not None:
            return Prediction(None, None, None, path, error)
        scores = np.atleast_1d(np.asarray(scores, float))
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
        their reason instead of raising. Results follow the order of ``paths``. ``fpr`` and
        ``unsure_k`` as in :meth:`predict`."""
        self.check_fpr(fpr)
        copies = unsure_perturbations(unsure_k) if unsure_k else []
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
        done = {p: self._prediction(scores[:, i], p, None, fpr) for i, p in enumerate(fs.paths)}
        done.update({p: Prediction(None, None, None, p, reason) for p, reason in fs.skipped})
        return [done[p] for p in files]


# ----------------------------------------------------------------------------- inputs


def as_items(images: Any) -> list:
    """One image or a sequence of them -> a list; a 4-D array/tensor is a batch."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def to_uint8_chw(item: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A path, PIL image, HWC/HW numpy array or CHW/HW tensor -> uint8 (3, H, W).

    Files and PIL images get the same EXIF rotation and mode conversion as ``clipflow-eval``.
    Float arrays/tensors must hold values in [0, 1]; uint16 arrays are scaled by 255/65535.
    Arrays are taken as RGB (convert OpenCV's BGR first).
    """
    if isinstance(item, (str, os.PathLike)):
        return pil_to_uint8_tensor(load_image(Path(item), max_pixels))
    if isinstance(item, Image.Image):
        return pil_to_uint8_tensor(ImageOps.exif_transpose(item))
    if isinstance(item, np.ndarray):
        if item.ndim == 3 and item.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"numpy images are HWC with 1, 3 or 4 channels; got shape {item.shape}"
            )
        if item.dtype == np.uint16:  # 16-bit data scaled like 16-bit files (65535 -> 255)
            item = np.rint(item / 257.0).astype(np.uint8)
        item = np.ascontiguousarray(item)
        item = torch.from_numpy(
            item if item.flags.writeable else item.copy()
        )  # torch warns on read-only
        item = item.permute(2, 0, 1) if item.ndim == 3 else item
    if isinstance(item, torch.Tensor):
        return _tensor_to_uint8_chw(item.detach().cpu())
    raise TypeError(
        f"cannot score a {type(item).__name__}: pass a path, PIL image, numpy array or tensor"
    )


def _tensor_to_uint8_chw(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"tensors are CHW (or HW) with 1, 3 or 4 channels; got shape {tuple(t.shape)}"
        )
    t = t[:3] if t.shape[0] >= 3 else t.expand(3, -1, -1)  # alpha dropped, as for files
    if t.dtype == torch.uint8:
        return t.contiguous()
    if not t.is_floating_point():
        raise TypeError(f"unsupported image dtype {t.dtype}: use uint8 or float in [0, 1]")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1e-3 or hi > 1 + 1e-3 or not np.isfinite([lo, hi]).all():
        raise ValueError(f"float images must hold values in [0, 1]; got [{lo:.3g}, {hi:.3g}]")
    return (t.double() * 255.0).round().clamp(0, 255).to(torch.uint8).contiguous()


# ----------------------------------------------------------------------------- many files


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """Files, folders (recursive, image extensions only) and glob patterns -> ordered,
    de-duplicated ``(path, problem)`` pairs; ``problem`` says why an input named nothing.

    A file named explicitly is always tried, whatever its extension; so is a dangling
    symlink or a FIFO, which then fails with its reason instead of vanishing. In a folder,
    what the walk leaves out (a symlink loop, a second name of one file) comes back with
    its reason (see :func:`~clipflow.data.imageio.scan_images`).
    """
    out: dict[str, str | None] = {}
    for raw in inputs:
        text = os.path.expanduser(str(raw))
        for path, problem in _expand_one(text):
            out.setdefault(os.path.normpath(path), problem)
    return list(out.items())


def _expand_one(text: str) -> list[tuple[str, str | None]]:
    path = Path(text)
    if path.is_dir():
        listing = scan_images(path, include_special=True)
        found: list[tuple[str, str | None]] = [(str(p), None) for p in listing.images]
        left_out: list[tuple[str, str | None]] = [(str(p), r) for p, r in listing.skipped]
        return found + left_out if found else [(text, "no image files in this folder")]
    if os.path.lexists(text):
        return [(text, None)]
    if any(c in text for c in "*?["):
        matches = sorted(glob.glob(text, recursive=True))
        expanded = [pair for m in matches for pair in _expand_one(m)]
        return expanded or [(text, "no file matches this pattern")]
    return [(text, "not found")]


# ----------------------------------------------------------------------------- output


def records_to_jsonl(records: Sequence[Prediction]) -> str:
    """One JSON object per line; missing numbers are null (never NaN, which is not JSON)."""
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)


def records_to_csv(records: Sequence[Prediction]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RECORD_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: "" if v is None else v for k, v in r.to_dict().items()})
    return buf.getvalue()


def output_format(path: str, fmt: str | None = None) -> str:
    """``jsonl`` or ``csv``: as given, else from the suffix (.jsonl/.json/.ndjson, .csv).

    Also checks that ``path`` can be written (not a folder, not under a file, a writable
    folder), so that a CLI hears about it before loading a model and scoring anything.
    """
    fmt = (
        fmt
        or {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(
            Path(path).suffix.lower(), ""
        )
    ).lower()
    if fmt not in ("jsonl", "csv"):
        raise ClipflowError(
            f"cannot tell the output format of {path!r}: name it .jsonl or .csv, "
            "or pass format=jsonl|csv"
        )
    why = unwritable_reason(Path(path))
    if why:
        raise ClipflowError(f"cannot write out={display_path(path)}: {why}; choose another out=")
    return fmt


def write_records(
    records: Sequence[Prediction], path: str | os.PathLike, fmt: str | None = None
) -> Path:
    """Write the records as JSON lines or CSV, atomically; returns the path."""
    text = (records_to_csv if output_format(str(path), fmt) == "csv" else records_to_jsonl)(records)
    atomic_write_text(Path(path), text)
    return Path(path)


def records_table(records: Sequence[Prediction]) -> str:
    """A plain-text table for the terminal: path, score, decision, fpr_val, p_value (or the
    error), and the score spread over the re-encoded copies when they were scored."""
    spread = any(r.score_min is not None for r in records)
    rows = [("path", "score", "decision", "fpr_val", "p_value", *(("spread",) if spread else ()))]
    for r in records:
        if r.error is not None:
            rows.append((display_path(str(r.path)), "-", "unreadable", r.error))
            continue
        fpr = "n/a" if r.fpr_val is None else f"{100 * r.fpr_val:.1f}%"
        p = "n/a" if r.p_value is None else f"{r.p_value:.4f}"
        row = (display_path(str(r.path)), f"{r.score:.4f}", str(r.decision), fpr, p)
        rows.append(row + ((f"{r.score_min:.4f}..{r.score_max:.4f}",) if spread else ()))
    width = max(len(row) for row in rows)
    widths = [max(len(row[i]) for row in rows if len(row) > i) for i in range(width)]
    lines = []
    for row in rows:
        cells = [c.rjust(widths[i]) if i == 1 else c.ljust(widths[i]) for i, c in enumerate(row)]
        if row[2] == "unreadable":  # the reason is the last cell, however long
            cells[-1] = row[-1]
        lines.append("  ".join(cells))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def table_footer(
    det: Detector, records: Sequence[Prediction], fpr: float | None = None, unsure_k: int = 0
) -> str:
    """What the numbers mean, in a few lines under the table."""
    n_bad = sum(r.error is not None for r in records)
    n_fake = sum(r.decision == FAKE for r in records)
    n_unsure = sum(r.decision == UNSURE for r in records)
    n_real = len(records) - n_bad - n_fake - n_unsure
    lines = [
        f"{len(records) - n_bad} scored: {n_fake} {FAKE}, {n_real} {REAL}"
        + (f", {n_unsure} {UNSURE}" if unsure_k else "")
        + (f"; {n_bad} unreadable" if n_bad else ""),
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
    if det.random_backbone:
        lines.append(
            "warning: random-weight backbone: these scores show the pipeline runs, "
            "they detect nothing"
        )
    return "\n".join(lines) + "\n"
