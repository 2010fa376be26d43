"""clipflow-train mode=N|P|N+P data.train_root=DIR [data.val_root=DIR] [backbone=tiny] ..."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import hydra_app, run_dir, to_dict

if TYPE_CHECKING:
    from omegaconf import DictConfig


def train(cfg: DictConfig) -> None:
    from ..settings.config import train_settings

    settings = train_settings(to_dict(cfg))  # every value checked before torch is imported
    from ..runs.train import run_train

    ckpt = run_train(settings, run_dir())
    print(f"checkpoint: {ckpt}")


def main() -> None:
    hydra_app("train", train)


if __name__ == "__main__":
    main()
