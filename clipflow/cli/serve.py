"""clipflow-serve ckpt=PATH [port=7860] [host=127.0.0.1] [fpr=0.01] [unsure=true] [keep=DIR]

A local page (Gradio, ``pip install 'clipflow[serve]'``): drop or choose images, read each
one's score, decision, fpr_val and p_value, as clipflow-detect gives them. Ctrl+C (or
SIGTERM) stops it and deletes every upload it still holds. Exit codes: 0 stopped; 2 usage
error (one line: no ckpt, a refused checkpoint, Gradio missing, a port in use).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from .common import hydra_app, to_dict

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = ["main"]


def serve(cfg: DictConfig) -> None:
    from ..settings.serve import serve_settings

    settings = serve_settings(to_dict(cfg))  # every value checked before the checkpoint
    from ..serve.page import run_page

    previous = signal.signal(signal.SIGTERM, _interrupt)  # a polite stop cleans up too
    try:
        run_page(settings)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    hydra_app("serve", serve)


if __name__ == "__main__":
    main()
