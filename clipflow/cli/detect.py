"""clipflow-detect ckpt=PATH inputs=[FILE|DIR|GLOB,...] [out=FILE.jsonl|FILE.csv|-] [device=...]
[fpr=0.01] [unsure=true]

Exit codes: 0 every file scored; 2 usage error (one line on stderr); 4 some files unreadable,
or scored NaN/inf, which decides nothing (they are listed with their reason, everything else
is scored and written).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from ..errors import ClipflowError, SomeFilesUnreadableError
from .common import hydra_app, to_dict

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from ..detect import Detector
    from ..eval.predictions import Prediction
    from ..settings.config import DetectSettings

__all__ = ["main", "run_detect"]


def run_detect(s: DetectSettings, stdout: TextIO | None = None) -> list[Prediction]:
    """Expand the inputs, score them, print/write the records; raise on usage errors and,
    after everything is written, SomeFilesUnreadableError when some inputs failed."""
    from ..checkpoints.checkpoint import load_checkpoint
    from ..data.expand import expand_inputs
    from ..detect import Detector
    from ..eval.conformal import check_level
    from ..eval.predictions import Prediction, output_format

    if not s.ckpt:
        raise ClipflowError(
            "no checkpoint given — pass ckpt=PATH (model.safetensors or its run folder)"
        )
    if not s.inputs:
        raise ClipflowError(
            "no images given — pass inputs=[photo.jpg,folder,'*.png'] (files, folders, globs)"
        )
    if s.out and s.out != "-":
        output_format(s.out, s.format)  # a bad name fails now, not after scoring
    ckpt = load_checkpoint(s.ckpt)  # a refused checkpoint is the first thing to hear about
    entries = expand_inputs(s.inputs)
    if all(problem for _, problem in entries):
        raise ClipflowError("nothing to score: " + "; ".join(f"{p}: {why}" for p, why in entries))
    if s.fpr is not None:  # a level the calibration cannot reach: refused before any work
        check_level(s.fpr, len(ckpt.val_real_scores))
    det = Detector.from_loaded(ckpt, s.device, s.backbone, s.batch_size)
    todo = [p for p, problem in entries if not problem]
    unsure_k = s.unsure_k if s.unsure else 0
    scored = iter(det.score_files(todo, s.num_workers, fpr=s.fpr, unsure_k=unsure_k))
    records = [
        Prediction(None, None, None, p, problem) if problem else next(scored)
        for p, problem in entries
    ]
    _emit(s, det, records, stdout or sys.stdout)
    bad = [r for r in records if r.error is not None]
    if bad:
        raise SomeFilesUnreadableError(
            f"{len(bad)} of {len(records)} inputs could not be scored; "
            "they are listed with the reason"
        )
    return records


def _emit(s: DetectSettings, det: Detector, records: list[Prediction], stdout: TextIO) -> None:
    from ..detect import table_footer
    from ..eval.predictions import records_table, records_to_jsonl, write_records

    if s.out == "-":
        stdout.write(records_to_jsonl(records))
        return
    if s.table:
        footer = table_footer(det, records, s.fpr, s.unsure_k if s.unsure else 0)
        stdout.write(records_table(records) + "\n" + footer)
    if s.out:
        print(f"results: {write_records(records, s.out, s.format)}", file=stdout)
    stdout.flush()


def detect(cfg: DictConfig) -> None:
    from ..settings.config import detect_settings

    run_detect(detect_settings(to_dict(cfg)))  # every value checked before the checkpoint


def main() -> None:
    hydra_app("detect", detect)


if __name__ == "__main__":
    main()
