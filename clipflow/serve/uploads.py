"""What the page does with uploaded files: detect's records, nothing kept unless asked.

:func:`score_uploads` is the one function the page calls per batch: each upload goes through
:meth:`Detector.score_files` (the call clipflow-detect makes), so a record on the page equals
clipflow-detect's for the same file; only its ``path`` becomes the name the file was uploaded
under (the server's temporary path means nothing to the person who dropped it). A file over
the upload cap is refused unread, with a reason in the record's ``error`` like any other
unreadable file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..core.fileio import display_path
from ..detect import Detector
from ..eval.predictions import Prediction

log = logging.getLogger(__name__)

MB = 1_000_000


@dataclasses.dataclass(frozen=True)
class Upload:
    """One uploaded file: where the server holds it, and the name it was uploaded under."""

    path: str
    name: str

    @classmethod
    def of(cls, path: str | os.PathLike) -> Upload:
        """Gradio keeps an upload as ``<cache>/<hash>/<its own name>``."""
        return cls(str(path), Path(path).name)


def upload_problem(path: str, max_bytes: int | None) -> str | None:
    """Why an upload is refused before it is read (over ``max_bytes``), or None."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return None  # the reader names the problem, as for any file
    if max_bytes is not None and size > max_bytes:
        return f"too large: {size} bytes exceeds the upload limit of {max_bytes} (max_upload_mb)"
    return None


def score_uploads(
    det: Detector,
    uploads: Sequence[Upload],
    fpr: float | None = None,
    unsure_k: int = 0,
    max_bytes: int | None = None,
) -> list[Prediction]:
    """One record per upload, in order: :meth:`Detector.score_files`'s, named by the upload's
    name; an upload over ``max_bytes`` is an error record without being read."""
    fpr = det.check_fpr(fpr)
    refused = {i: upload_problem(u.path, max_bytes) for i, u in enumerate(uploads)}
    todo = [u.path for i, u in enumerate(uploads) if not refused[i]]
    scored = iter(det.score_files(todo, num_workers=0, desc="serve", fpr=fpr, unsure_k=unsure_k))
    records = []
    for i, upload in enumerate(uploads):
        reason = refused[i]
        record = Prediction(None, None, None, upload.path, reason) if reason else next(scored)
        records.append(dataclasses.replace(record, path=upload.name))
    return records


def keep_upload(upload: Upload, folder: str | os.PathLike) -> Path:
    """Copy an upload into ``folder`` under its own name (``name-1.png``... when taken)."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(upload.name).stem, Path(upload.name).suffix
    target, n = folder / upload.name, 0
    while target.exists():
        n += 1
        target = folder / f"{stem}-{n}{suffix}"
    shutil.copyfile(upload.path, target)
    return target


def forget_upload(upload: Upload) -> None:
    """Delete the server's copy of an upload (and its per-upload folder when empty)."""
    path = Path(upload.path)
    try:
        path.unlink(missing_ok=True)
        path.parent.rmdir()  # Gradio's <hash>/ folder; kept if anything else is in it
    except OSError as err:
        log.debug("left %s: %s", display_path(path), err)


def card_facts(det: Detector) -> list[tuple[str, str]]:
    """The checkpoint facts shown above the verdicts: backbone, calibration, threshold."""
    meta, ckpt = det.ckpt.meta, det.ckpt
    bb = det.backbone.describe()
    weights = bb.get("weights_id") or bb.get("pretrained") or "none (random init)"
    calib = meta.get("calibration")
    if calib:
        source = f"{det.n_validation} photos of clipflow-calibrate ({calib.get('date', '?')})"
    else:
        source = f"{det.n_validation} natural validation images of training"
    mode = (meta.get("train") or {}).get("mode") or "?"
    return [
        ("backbone", f"{bb.get('name')} ({bb.get('family') or 'open_clip'}), weights {weights}"),
        ("calibration reals", source),
        ("threshold", f"score > {det.threshold:.4f} -> ai-generated"),
        ("trained", f"mode {mode}, clipflow {meta.get('clipflow_version', '?')}"),
        ("checkpoint", f"sha256 {(ckpt.sha256 or '?')[:12]}"),
    ]
