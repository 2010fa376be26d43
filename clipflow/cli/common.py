"""What every Hydra entry point shares: config -> plain dict, run dir, one-line errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..errors import ClipflowError

CONFIG_PATH = "pkg://clipflow.configs"
log = logging.getLogger("clipflow")


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def guarded(job: Callable[[], None]) -> None:
    """Run ``job``; a ClipflowError becomes one line on stderr and a non-zero exit."""
    try:
        job()
    except ClipflowError as err:
        print(f"error: {err}", file=sys.stderr)
        log.debug("error details", exc_info=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted; files written so far are complete (atomic writes)", file=sys.stderr)
        sys.exit(130)
