"""Reproduce the paper: experiments by name -> tables, plots and an index under one folder.

:func:`reproduce` runs experiments (configs/experiment/*.yaml) in-process on one feature cache
and writes, under ``out/<experiment>/``, the comparison tables (ours, paper, Δ) as CSV and
Markdown, ``summary.{csv,md}``, ``results.json``, plots and every arm's per-set metrics and
scores, then ``out/index.md``. :func:`run_reproduce` takes a :class:`Request`: the
experiments and the :class:`RunOptions` (``opts.overrides`` are clipflow-train overrides
applied to every arm); clipflow-reproduce builds it from its ``key=value`` arguments
(clipflow.cli.reproduce). Training draws are fresh per epoch (the paper's) unless
``opts.fast``; seeds are ``opts.seeds``, else each experiment's own.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

from ..core.fileio import atomic_write_text
from ..eval.html_report import write_report
from ..runs.train_data import augmentation
from .arm_summary import arm_summary_rows
from .experiment_configs import load_experiment
from .experiments import Runner
from .formatting import fmt_number, fmt_signed
from .realonly import write_realonly
from .report_page import experiment_report, index_report
from .spec import ExperimentSpec, RunOptions
from .tables import write_tables

log = logging.getLogger("clipflow")


class Request(NamedTuple):
    """Which experiments (by name, in order), with what options; dry_run only prints.
    clipflow-reproduce builds one from its command line (clipflow.cli.reproduce)."""

    names: list[str]
    opts: RunOptions
    dry_run: bool = False


def runnable(spec: ExperimentSpec, opts: RunOptions, explicit: bool) -> bool:
    """``experiment=all`` skips table5 when no extra_roots are given; asking for it is an error."""
    if spec.sets == "extra" and not opts.extra_roots and not explicit:
        print(
            f"skipping {spec.name}: pass extra_roots=[DIR,...] "
            "(folders <name>/0_real,1_fake) to run it"
        )
        return False
    return True


def dry_run(specs: list[ExperimentSpec], runner: Runner) -> None:
    for spec in specs:
        seeds = runner.seeds(spec)
        print(f"{spec.name}: {spec.title} (seeds {seeds})")
        for arm in spec.arms:
            s = runner.settings(spec, arm, seeds[0])
            print(
                f"  {arm.name:16s} mode={s.train.mode} proxy={s.proxy.name}/{s.proxy.band} "
                f"ratio={s.proxy.ratio} dr_dim={s.flow.dr_dim} normalize={s.flow.normalize} "
                f"epochs={s.train.resolved_epochs()} loss={s.train.loss} "
                f"mask_mode={s.proxy.mask_mode} pair_crop={s.proxy.pair_crop} "
                f"block={s.flow.block} draws={augmentation(s)}"
            )
        if spec.baselines:
            print(f"  baselines: {', '.join(spec.baselines)}")


def run_reproduce(req: Request) -> dict[str, dict[str, Path]]:
    """Run (or with ``dry_run`` only print) the experiments of ``req``; returns experiment ->
    written files."""
    return reproduce(req.names, req.opts, req.dry_run)


def reproduce(
    names: list[str], opts: RunOptions, only_print: bool = False
) -> dict[str, dict[str, Path]]:
    """Run experiments ``names`` with ``opts``; returns experiment -> written files."""
    specs = [load_experiment(n) for n in names]
    runner = Runner(opts)
    if only_print:
        dry_run(specs, runner)
        return {}
    opts.out.mkdir(parents=True, exist_ok=True)
    clip = logging.getLogger("clipflow")
    level = clip.level
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
            if "realonly" in spec.tables:  # its own table and plot (paper/realonly.py)
                written[spec.name].update(write_realonly(result, opts.out / spec.name))
            page = experiment_report(result, written[spec.name])
            written[spec.name]["report.html"] = write_report(
                opts.out / spec.name / "report.html", page
            )
            summaries.append((spec, arm_summary_rows(result)))
            print(written[spec.name]["summary.md"].read_text())
            print(
                f"{spec.name}: {time.perf_counter() - start:.1f} s -> {opts.out / spec.name}\n",
                flush=True,
            )
    finally:  # leave the caller's logging as it was
        clip.removeHandler(handler)
        clip.setLevel(level)
        handler.close()
    atomic_write_text(opts.out / "index.md", index_markdown(summaries, written))
    write_report(opts.out / "report.html", index_report(summaries))
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
            if name.endswith((".md", ".png", ".html"))
        )
        for i, r in enumerate(rows):
            cells = [
                spec.name if i == 0 else "",
                r["arm"],
                fmt_number(r["mAP"]),
                fmt_number(r["paper_mAP"]),
                fmt_signed(r["diff_mAP"]),
                fmt_number(r["mean_acc"]),
                fmt_number(r["paper_acc"]),
                files if i == 0 else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each experiment's tables state the backbone, weights, preprocessing, protocol and seeds.",
    ]
    return "\n".join(lines) + "\n"


def _log_to(path: Path) -> logging.Handler:
    """The library's INFO log goes to ``path`` (the console is the caller's business)."""
    clip = logging.getLogger("clipflow")
    clip.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    clip.addHandler(handler)
    return handler
