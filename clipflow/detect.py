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

from .backbones.backbone import Backbone, BackboneProtocol
from .backbones.preprocess import build_transform
from .backbones.protocol import ExtractorBackbone
from .checkpoints.backbone_match import checkpoint_backbone, require_feature_dim
from .checkpoints.checkpoint import Checkpoint, load_checkpoint
from .core.fileio import atomic_write_text, display_path, unwritable_reason
from .core.machine import resolve_device
from .data.imageio import DEFAULT_MAX_PIXELS, load_image, scan_images
from .errors import ClipflowError, UnreadableImageError
from .eval.checks import detect_notes
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
# In the reason of an image whose score (or a copy's) is NaN or inf: no decision is made from it.
NOT_FINITE = "not a finite number"


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
        return FAKE if _finite(score) > self.threshold else REAL

    def fpr(self, score: float) -> float | None:
        """Share of natural validation images scoring >= ``score`` (None without them);
        a NaN/inf score is refused (ValueError)."""
        value = false_positive_rate(self.calibration.scores, _finite(score))
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
        tensors; see :func:`to_uint8_chw`). An unreadable file, or one the flow gives a NaN or
        infinite score, raises UnreadableImageError, or scores NaN with ``skip_errors=True``."""
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


# ----------------------------------------------------------------------------- scores


def not_finite_reason(scores: np.ndarray, copies: Sequence = ()) -> str | None:
    """Why no decision can come from an image's ``scores`` (its own, then each copy's), or
    None when they are all finite numbers. ``score > threshold`` is False for NaN: deciding
    anyway would call the image real with fpr_val 0."""
    for k, value in enumerate(np.atleast_1d(np.asarray(scores, float))):
        if not np.isfinite(value):
            whose = "score" if k == 0 else f"score of its {_copy_name(copies[k - 1])} copy"
            return f"{whose} is {value} ({NOT_FINITE}): no decision"
    return None


def _copy_name(copy: Any) -> str:
    return str(getattr(copy, "name", None) or "re-encoded")


def _finite(score: Any) -> float:
    """``score`` as a float, or a one-line ValueError when it is not a finite number."""
    value = float(score)
    if not np.isfinite(value):
        raise ValueError(f"score={value} is {NOT_FINITE}: no decision can be made from it")
    return value


def _name(item: Any, index: int) -> str:
    """How an error names an input: its path, or its place in the list given."""
    return str(item) if isinstance(item, (str, os.PathLike)) else f"image {index}"


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
    Arrays are taken as RGB (convert OpenCV's BGR first). A path no file can have (a NUL byte)
    is an UnreadableImageError; an array or tensor that holds no usable pixels a ValueError.
    """
    if isinstance(item, (str, os.PathLike)):
        return pil_to_uint8_tensor(load_image(_checked_path(item), max_pixels))
    if isinstance(item, Image.Image):
        return pil_to_uint8_tensor(ImageOps.exif_transpose(item))
    if isinstance(item, np.ndarray):
        item = _array_to_tensor(item)
    if isinstance(item, torch.Tensor):
        return _tensor_to_uint8_chw(_dense_cpu(item))
    raise TypeError(
        f"cannot score a {type(item).__name__}: pass a path, PIL image, numpy array or tensor"
    )


def _checked_path(item: str | os.PathLike) -> Path:
    """``item`` as a Path; a NUL byte (which no file name holds: the OS refuses the name) is
    the file's reason, as for any other file that cannot be read."""
    path = Path(item)
    if "\0" in str(path):
        raise UnreadableImageError(
            display_path(str(path)), "the path holds a NUL byte: no file has that name"
        )
    return path


def _array_to_tensor(item: np.ndarray) -> torch.Tensor:
    """An HWC/HW numpy image as a CHW/HW tensor (uint16 scaled to uint8); a dtype torch cannot
    hold (object, string, longdouble...) is a one-line ValueError."""
    if item.ndim == 3 and item.shape[-1] not in (1, 3, 4):
        raise ValueError(f"numpy images are HWC with 1, 3 or 4 channels; got shape {item.shape}")
    if item.dtype == np.uint16:  # 16-bit data scaled like 16-bit files (65535 -> 255)
        item = np.rint(item / 257.0).astype(np.uint8)
    item = np.ascontiguousarray(item)
    try:
        t = torch.from_numpy(
            item if item.flags.writeable else item.copy()
        )  # torch warns on read-only
    except TypeError:
        raise ValueError(
            f"numpy images hold numbers; got dtype {item.dtype}: "
            "use uint8, uint16 or float in [0, 1]"
        ) from None
    return t.permute(2, 0, 1) if t.ndim == 3 else t


def _dense_cpu(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached on the CPU; a meta tensor (no data) or a sparse one is a ValueError."""
    if t.is_meta:
        raise ValueError("a meta tensor holds no pixels: pass a tensor with data (on cpu or cuda)")
    if t.layout != torch.strided:
        raise ValueError(f"image tensors are dense; got layout {t.layout}: use t.to_dense()")
    return t.detach().cpu()


def _tensor_to_uint8_chw(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"tensors are CHW (or HW) with 1, 3 or 4 channels; got shape {tuple(t.shape)}"
        )
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise ValueError(f"an image needs pixels; got shape {tuple(t.shape)}")
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
            rows.append((display_path(str(r.path)), "-", _error_word(r.error), r.error))
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
        if row[1] == "-":  # an error row: the reason is the last cell, however long
            cells[-1] = row[-1]
        lines.append("  ".join(cells))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _error_word(reason: str) -> str:
    """The decision cell of an error row: no score at all, or a score that decides nothing."""
    return "no decision" if NOT_FINITE in reason else "unreadable"


def table_footer(
    det: Detector, records: Sequence[Prediction], fpr: float | None = None, unsure_k: int = 0
) -> str:
    """What the numbers mean, in a few lines under the table. (The random-weight warning is
    the backbone's own log line on stderr, once per command, not repeated here.)"""
    errors = [_error_word(r.error) for r in records if r.error is not None]
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
