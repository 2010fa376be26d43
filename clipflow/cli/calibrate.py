"""clipflow-calibrate ckpt=PATH data.real_root=MY_PHOTOS [out=NEW_CKPT_DIR] [refit=true] [fpr=0.01]

Writes a new checkpoint whose p-values are calibrated on your photos (docs/calibration.md);
the input checkpoint is never modified. Exit codes: 0 written; 2 usage error or too few photos.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from .common import hydra_app, run_dir, to_dict

if TYPE_CHECKING:
    from omegaconf import DictConfig


def calibrate(cfg: DictConfig) -> None:
    from ..settings.config import calibrate_settings

    settings = calibrate_settings(to_dict(cfg))  # every value checked before torch is imported
    from ..checkpoints.checkpoint import load_checkpoint
    from ..runs.calibrate import calibration_summary, run_calibrate

    out = run_dir("out")  # = out=, created by Hydra and checked writable
    try:
        ckpt = run_calibrate(settings, out)
    except BaseException:
        _remove_if_empty(out)  # a refused run leaves no empty folder behind
        raise
    print(calibration_summary(load_checkpoint(ckpt)), end="")
    print(f"checkpoint: {ckpt}")


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (or already gone): leave it
        folder.rmdir()


def main() -> None:
    hydra_app("calibrate", calibrate, run_dir_key="out")


if __name__ == "__main__":
    main()
