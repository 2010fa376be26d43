"""clipflow-extract data.train_root=DIR [data.test_root=DIR] [stages=[train,val,test]]: cache.

Under ``torchrun --nproc_per_node=N`` each rank extracts its own shards; rank 0 writes the index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import hydra_app, run_dir, to_dict

if TYPE_CHECKING:
    from omegaconf import DictConfig


def extract(cfg: DictConfig) -> None:
    from ..settings.config import extract_settings

    settings, stages = extract_settings(to_dict(cfg))  # checked before torch is imported
    from ..core import distributed
    from ..runs.extract import run_extract

    try:
        summary = run_extract(settings, stages, run_dir())
    finally:
        distributed.shutdown()
    print(
        f"features cached in {summary['cache_dir']}: "
        + ", ".join(
            f"{k} {v['n_images']} images"
            for k, v in summary.items()
            if isinstance(v, dict) and "n_images" in v
        )
    )


def main() -> None:
    hydra_app("extract", extract)


if __name__ == "__main__":
    main()
