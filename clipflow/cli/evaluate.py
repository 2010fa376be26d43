"""clipflow-eval ckpt=PATH data.test_root=DIR [data.protocol=all|univfd] [perturb=all|jpeg|...]

[device=...]; all values are checked (clipflow.settings.config) before the checkpoint or data
are read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ClipflowError
from .common import hydra_app, run_dir, to_dict

if TYPE_CHECKING:
    from omegaconf import DictConfig


def evaluate(cfg: DictConfig) -> None:
    from ..settings.config import eval_settings

    settings = eval_settings(to_dict(cfg))  # every value checked before torch is imported
    from ..eval.report import console_text
    from ..runs.evaluate import run_eval

    if not settings.ckpt:
        raise ClipflowError(
            "no checkpoint given — pass ckpt=PATH (model.safetensors or its run folder)"
        )
    out = run_dir()
    if settings.perturb:
        from ..runs.robustness import run_robustness  # only robustness runs need it

        files = run_robustness(settings, settings.perturb, out)
        print(console_text(files["robustness.md"].read_text()))
    else:
        files = run_eval(settings, out)
        print(console_text(files["results.md"].read_text()))
    print(f"results: {files['results.csv'].parent}")
    print(f"report: {files['report.html']}")  # open it in a browser: tables, figures, mistakes


def main() -> None:
    hydra_app("eval", evaluate)


if __name__ == "__main__":
    main()
