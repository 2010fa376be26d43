"""clipflow-extract data.train_root=DIR [data.test_root=DIR] [stages=[train,val,test]] — fill the cache.

Under ``torchrun --nproc_per_node=N`` each rank extracts its own shards; rank 0 writes the index.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .. import distributed
from ..config import train_settings
from ..pipeline import run_extract
from .common import CONFIG_PATH, guarded, run_dir, to_dict


@hydra.main(config_path=CONFIG_PATH, config_name="extract", version_base="1.3")
def main(cfg: DictConfig) -> None:
    def job() -> None:
        values = to_dict(cfg)
        stages = list(values.pop("stages", []) or [])
        try:
            summary = run_extract(train_settings(values), stages, run_dir())
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

    guarded(job)


if __name__ == "__main__":
    main()
