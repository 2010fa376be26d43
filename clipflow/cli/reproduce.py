"""clipflow-reproduce experiment=NAME|all data.train_root=DIR data.val_root=DIR data.test_root=DIR [key=value ...]

Runs the paper's experiments (configs/experiment/*.yaml) in-process on one feature cache and
writes, under ``out/<experiment>/``, the comparison tables (ours, paper, Δ) as CSV and
Markdown, ``summary.{csv,md}``, ``results.json``, plots and every arm's per-set metrics and
scores. Keys of this command (Hydra override syntax):

  experiment=table1|table3|table4|fig4|normalization|fig3|table5|all   (a list works too)
  seeds=[0,1,2]            every arm at every seed; tables show mean ± std
  out=DIR                  default outputs/reproduce
  extra_roots=[DIR,...]    folders of new generators (<name>/0_real,1_fake) for table5
  ckpt=PATH                table5: score this checkpoint instead of training the P model
  baselines=[...]          keep only these baselines (univfd_linear, mahalanobis); [] = none
  histogram_sets=[...]     fig3's sets (default progan, stargan, guided, ldm_200)
  save_checkpoints=false   do not write each arm's model.safetensors
  dry_run=true             print the arms' resolved overrides and exit

Every other key is a clipflow-train override applied to every arm (backbone=tiny,
device=cuda, data.*, train.epochs=..., flow.n_blocks=...). ``--list`` lists the experiments.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from ..config import check
from ..errors import ClipflowError
from ..experiments import (
    ExperimentSpec,
    Runner,
    RunOptions,
    list_experiments,
    load_experiment,
    merge_overrides,
)
from ..fileio import atomic_write_text
from ..tables import summary_rows, write_tables
from .common import guarded

log = logging.getLogger("clipflow")
OWN_KEYS = {
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
}


def parse_args(argv: list[str]) -> tuple[list[str], RunOptions, bool]:
    """(experiment names, options, dry_run) from ``key=value`` arguments."""
    parser = OverridesParser.create()
    own: dict[str, object] = {}
    rest: list[str] = []
    for arg in argv:
        try:
            parsed = parser.parse_override(arg)
        except Exception as err:
            raise ClipflowError(
                f"cannot parse argument {arg!r}: {str(err).splitlines()[0]}"
            ) from None
        if parsed.key_or_group in OWN_KEYS:
            own[parsed.key_or_group] = parsed.value()
        else:
            rest.append(arg)
    seeds = own.get("seeds", [own["seed"]] if "seed" in own else [0])
    opts = RunOptions(
        overrides=merge_overrides(rest),
        seeds=check("seeds", seeds, list[int], "seed"),
        out=Path(str(own.get("out", "outputs/reproduce"))),
        extra_roots=[str(r) for r in _as_list(own.get("extra_roots", own.get("data.extra_roots")))],
        ckpt=str(own["ckpt"]) if own.get("ckpt") else None,
        baselines=None if "baselines" not in own else [str(b) for b in _as_list(own["baselines"])],
        histogram_sets=[str(s) for s in _as_list(own.get("histogram_sets"))] or None,
        save_checkpoints=check("save_checkpoints", own.get("save_checkpoints", True), bool),
    )
    names = [str(n) for n in _as_list(own.get("experiment"))]
    if not names:
        raise ClipflowError(
            f"no experiment given — pass experiment=NAME (one of: all, {', '.join(list_experiments())})"
        )
    if not opts.seeds:
        raise ClipflowError("seeds=[] runs nothing; pass e.g. seeds=[0,1,2]")
    return _expand(names), opts, check("dry_run", own.get("dry_run", False), bool)


def _as_list(value) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _expand(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        out += list_experiments() if name == "all" else [name]
    return list(dict.fromkeys(out))


def runnable(spec: ExperimentSpec, opts: RunOptions, explicit: bool) -> bool:
    """``experiment=all`` skips table5 when no extra_roots are given; asking for it is an error."""
    if spec.sets == "extra" and not opts.extra_roots and not explicit:
        print(
            f"skipping {spec.name}: pass extra_roots=[DIR,...] (folders <name>/0_real,1_fake) to run it"
        )
        return False
    return True


def dry_run(specs: list[ExperimentSpec], runner: Runner) -> None:
    for spec in specs:
        print(f"{spec.name}: {spec.title}")
        for arm in spec.arms:
            s = runner.settings(spec, arm, runner.opts.seeds[0])
            print(
                f"  {arm.name:16s} mode={s.train.mode} proxy={s.proxy.name}/{s.proxy.band} ratio={s.proxy.ratio} "
                f"dr_dim={s.flow.dr_dim} normalize={s.flow.normalize} epochs={s.train.resolved_epochs()}"
            )
        if spec.baselines:
            print(f"  baselines: {', '.join(spec.baselines)}")


def run_reproduce(argv: list[str]) -> dict[str, dict[str, Path]]:
    """Run the experiments named in ``argv``; returns experiment -> written files."""
    names, opts, only_print = parse_args(argv)
    specs = [load_experiment(n) for n in names]
    runner = Runner(opts)
    if only_print:
        dry_run(specs, runner)
        return {}
    opts.out.mkdir(parents=True, exist_ok=True)
    handler = _log_to(opts.out / "reproduce.log")
    written: dict[str, dict[str, Path]] = {}
    summaries = []
    try:
        for spec in specs:
            if not runnable(spec, opts, explicit=len(names) == 1):
                continue
            start = time.perf_counter()
            result = runner.run(spec)
            written[spec.name] = write_tables(result, opts.out / spec.name)
            summaries.append((spec, summary_rows(result)))
            print(written[spec.name]["summary.md"].read_text())
            print(
                f"{spec.name}: {time.perf_counter() - start:.1f} s -> {opts.out / spec.name}\n",
                flush=True,
            )
    finally:
        logging.getLogger("clipflow").removeHandler(handler)
        handler.close()
    atomic_write_text(opts.out / "index.md", index_markdown(summaries, written))
    return written


def index_markdown(summaries, written: dict[str, dict[str, Path]]) -> str:
    """One page: every experiment run, its arms' mAP next to the paper's, links to the files."""
    lines = [
        "# Reproduction index",
        "",
        "| experiment | arm | mAP | paper mAP | Δ | mean acc | paper acc | files |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for spec, rows in summaries:
        files = ", ".join(
            f"[{name}]({spec.name}/{name})"
            for name in written[spec.name]
            if name.endswith((".md", ".png"))
        )
        for i, r in enumerate(rows):
            f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
            d = lambda v: "" if v is None else f"{v:+.2f}"  # noqa: E731
            lines.append(
                f"| {spec.name if i == 0 else ''} | {r['arm']} | {f(r['mAP'])} | {f(r['paper_mAP'])} | "
                f"{d(r['diff_mAP'])} | {f(r['mean_acc'])} | {f(r['paper_acc'])} | {files if i == 0 else ''} |"
            )
    lines += [
        "",
        "Each experiment's tables state the backbone, weights, preprocessing, protocol and seeds.",
    ]
    return "\n".join(lines) + "\n"


def _log_to(path: Path) -> logging.Handler:
    """The library's INFO log goes to ``path``; warnings also reach stderr (no Hydra here)."""
    clip = logging.getLogger("clipflow")
    clip.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    clip.addHandler(handler)
    root = logging.getLogger()
    if not root.handlers:  # warnings to stderr, the INFO chatter only to the file
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
    return handler


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv and argv[0] == "--list":
        for name in list_experiments():
            print(f"{name:14s} {load_experiment(name).title}")
        return
    guarded(lambda: run_reproduce(argv))


if __name__ == "__main__":
    main()
