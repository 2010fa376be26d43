"""clipflow-eval ckpt=PATH data.test_root=DIR [data.protocol=all|univfd] [perturb=all|jpeg|...] [device=...]"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ..config import eval_settings
from ..errors import ClipflowError
from ..perturb import resolve_perturbations
from ..pipeline import run_eval
from .common import CONFIG_PATH, guarded, run_dir, to_dict


@hydra.main(config_path=CONFIG_PATH, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    def job() -> None:
        if not cfg.get("ckpt"):
            raise ClipflowError(
                "no checkpoint given — pass ckpt=PATH (model.safetensors or its run folder)"
            )
        values = to_dict(cfg)
        perturbations = resolve_perturbations(values.pop("perturb", None))
        settings = eval_settings(values)
        if perturbations:
            from ..robustness import run_robustness  # only robustness runs need it

            files = run_robustness(settings, perturbations, run_dir())
            print(files["robustness.md"].read_text())
        else:
            files = run_eval(settings, run_dir())
            print(files["results.md"].read_text())
        print(f"results: {files['results.csv'].parent}")

    guarded(job)


if __name__ == "__main__":
    main()
