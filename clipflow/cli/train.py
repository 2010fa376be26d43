"""clipflow-train mode=N|P|N+P data.train_root=DIR [data.val_root=DIR] [backbone=tiny] ..."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ..config import train_settings
from ..pipeline import run_train
from .common import CONFIG_PATH, guarded, run_dir, to_dict


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    def job() -> None:
        ckpt = run_train(train_settings(to_dict(cfg)), run_dir())
        print(f"checkpoint: {ckpt}")

    guarded(job)


if __name__ == "__main__":
    main()
