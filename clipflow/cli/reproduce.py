"""clipflow-reproduce experiment=NAME|all data.train_root=DIR data.val_root=DIR data.test_root=DIR [key=value ...]

Runs the paper's experiments (configs/experiment/*.yaml) in-process on one feature cache and
writes, under ``out/<experiment>/``, the comparison tables (ours, paper, Δ) as CSV and
Markdown, ``summary.{csv,md}``, ``results.json``, plots and every arm's per-set metrics and
scores. Keys of this command (Hydra override syntax):

  experiment=table1|table3|table4|fig4|normalization|fig3|table5|choices|backbones|realonly|all   (a list too)
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
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ClipflowError
from .common import console_for_this_rank, guarded

if TYPE_CHECKING:
    from ..paper.reproduce import Request

OWN_KEYS = {  # this command's keys; every other one is a clipflow-train override for every arm
    "experiment",
    "seeds",
    "seed",
    "out",
    "extra_roots",
    "data.extra_roots",
    "ckpt",
    "baselines",
    "histogram_sets",
    "save_checkpoints",
    "dry_run",
    "fast",
}


def parse_request(argv: Iterable[str]) -> Request:
    """Experiment names, options and dry_run from ``key=value`` arguments."""
    from ..paper.experiment_configs import list_experiments, merge_overrides
    from ..paper.reproduce import Request
    from ..paper.spec import RunOptions
    from ..settings.overrides import as_list, parse_overrides
    from ..settings.rules import check

    own: dict[str, object] = {}
    rest: list[str] = []
    for o in parse_overrides(argv):
        if o.key in OWN_KEYS:
            own[o.key] = o.value
        else:
            rest.append(o.text)
    # No seeds on the command line: each experiment's own (choices: 3), else [0].
    seeds = own.get("seeds", [own["seed"]] if "seed" in own else None)
    opts = RunOptions(
        overrides=merge_overrides(rest),
        seeds=None if seeds is None else check("seeds", seeds, list[int], "seed"),
        out=Path(str(own.get("out", "outputs/reproduce"))),
        extra_roots=[str(r) for r in as_list(own.get("extra_roots", own.get("data.extra_roots")))],
        ckpt=str(own["ckpt"]) if own.get("ckpt") else None,
        baselines=None if "baselines" not in own else [str(b) for b in as_list(own["baselines"])],
        histogram_sets=[str(s) for s in as_list(own.get("histogram_sets"))] or None,
        save_checkpoints=check("save_checkpoints", own.get("save_checkpoints", True), bool),
        fast=check("fast", own.get("fast", False), bool),
    )
    names = [str(n) for n in as_list(own.get("experiment"))]
    if not names:
        raise ClipflowError(
            "no experiment given — pass experiment=NAME "
            f"(one of: all, {', '.join(list_experiments())})"
        )
    if opts.seeds is not None and not opts.seeds:
        raise ClipflowError("seeds=[] runs nothing; pass e.g. seeds=[0,1,2]")
    expanded: list[str] = []  # experiment=all: every experiment, in their order
    for name in names:
        expanded += list_experiments() if name == "all" else [name]
    dry_run = check("dry_run", own.get("dry_run", False), bool)
    return Request(list(dict.fromkeys(expanded)), opts, dry_run)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    from ..paper.experiment_configs import load_experiment, named_experiments
    from ..paper.reproduce import run_reproduce

    if argv and argv[0] == "--list":
        for name in named_experiments():
            print(f"{name:14s} {load_experiment(name).title}")
        return
    _warnings_to_stderr()
    with console_for_this_rank():  # log lines printed above the progress bars
        guarded(lambda: run_reproduce(parse_request(argv)))


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
