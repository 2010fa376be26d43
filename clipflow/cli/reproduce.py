"""clipflow-reproduce experiment=NAME|all data.train_root=DIR data.val_root=DIR data.test_root=DIR [key=value ...]

Runs the paper's experiments (configs/experiment/*.yaml) in-process on one feature cache and
writes, under ``out/<experiment>/``, the comparison tables (ours, paper, Δ) as CSV and
Markdown, ``summary.{csv,md}``, ``results.json``, plots and every arm's per-set metrics and
scores. Keys of this command (Hydra override syntax):

  experiment=table1|table3|table4|fig4|normalization|fig3|table5|choices|backbones|all   (a list too)
  seeds=[0,1,2]            every arm at every seed; tables show mean ± std
                           (default: the experiment's own, [0,1,2] for choices, else [0])
  fast=true                one cached crop + proxy draw per image for every epoch
                           (data.views=1); default: fresh per epoch, as the paper
  out=DIR                  default outputs/reproduce
  extra_roots=[DIR,...]    folders of new generators (<name>/0_real,1_fake) for table5
  ckpt=PATH                table5: score this checkpoint instead of training the P model
  baselines=[...]          keep only these baselines (univfd_linear, mahalanobis); [] = none
  histogram_sets=[...]     fig3's sets (default progan, stargan, guided, ldm_200)
  save_checkpoints=false   do not write each arm's model.safetensors
  dry_run=true             print the arms' resolved overrides and exit

Every other key is a clipflow-train override applied to every arm (backbone=tiny,
device=cuda, data.*, train.epochs=..., flow.n_blocks=...). ``--list`` lists the experiments.

Exit codes: 0 ok; 2 usage error or bad input (one ``error: ...`` line); 3 training diverged;
130 interrupted (the README has the table of every command's codes).
"""  # noqa: E501  (the usage line is printed as is by --help)

from __future__ import annotations

import logging
import sys

from .common import console_for_this_rank, guarded


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    # Imported only now: ``--help`` must answer without torch/open_clip.
    from ..paper.experiments import load_experiment, named_experiments
    from ..paper.reproduce import run_reproduce

    if argv and argv[0] == "--list":
        for name in named_experiments():
            print(f"{name:14s} {load_experiment(name).title}")
        return
    _warnings_to_stderr()
    with console_for_this_rank():  # log lines printed above the progress bars
        guarded(lambda: run_reproduce(argv))


def _warnings_to_stderr() -> None:
    """Warnings on the console; the INFO chatter goes only to <out>/reproduce.log (no Hydra)."""
    root = logging.getLogger()
    if not root.handlers:
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)


if __name__ == "__main__":
    main()
