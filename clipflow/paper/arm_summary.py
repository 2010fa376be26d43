"""The summary table of every experiment: one row per arm, over the paper's sets.

Trainable parameters, mAP and mean accuracy (± std over seeds) next to the paper's and Δ,
accuracy at the oracle threshold, mAP per generator family, training time, diverged seeds;
the Markdown says which arms gave bit-identical results and why.
"""

from __future__ import annotations

import json

import numpy as np

from ..data.layouts import PAPER_FAMILIES
from .comparison import (
    PAPER_METRIC,
    difference,
    mean_over,
    optional_paper_row,
    paper_mean,
    table_sets,
)
from .formatting import fmt_number, fmt_signed
from .provenance import provenance
from .spec import ArmResult, ExperimentResult, ExperimentSpec

ARM_SUMMARY_COLUMNS = (
    "arm",
    "kind",
    "n_params",
    "mAP",
    "mAP_std",
    "paper_mAP",
    "diff_mAP",
    "mean_acc",
    "mean_acc_std",
    "paper_acc",
    "diff_acc",
    "mean_acc@oracle",
    "mean_acc@oracle_std",
    "mAP_gan",
    "mAP_diffusion",
    "mAP_other",
    "train_seconds",
    "n_diverged",
    "failed_seeds",
)


def arm_summary_rows(result: ExperimentResult) -> list[dict]:
    """One row per arm: parameters, mAP and mean accuracy (± std), the paper's and Δ."""
    ap_table, acc_table = summary_tables(result.spec)
    rows = []
    for arm in result.arms:
        _, averaged = table_sets(result, ap_table)
        ap, ap_std = mean_over(arm, "ap", averaged)
        acc, acc_std = mean_over(arm, "acc@val", averaged)
        p_ap = (
            paper_mean(optional_paper_row(ap_table, arm.paper), averaged)[0] if ap_table else None
        )
        p_acc = (
            paper_mean(optional_paper_row(acc_table, arm.paper), averaged)[0] if acc_table else None
        )
        runs = list(arm.runs.values())
        rows.append(
            {
                "arm": arm.name,
                "kind": arm.kind,
                "n_params": runs[0].n_params if runs else None,
                "mAP": ap,
                "mAP_std": ap_std,
                "paper_mAP": p_ap,
                "diff_mAP": difference(ap, p_ap),
                "mean_acc": acc,
                "mean_acc_std": acc_std,
                "paper_acc": p_acc,
                "diff_acc": difference(acc, p_acc),
                **dict(
                    zip(
                        ("mean_acc@oracle", "mean_acc@oracle_std"),
                        mean_over(arm, "acc@oracle", averaged),
                    )
                ),
                **_family_means(arm, averaged),
                "train_seconds": float(np.mean([r.seconds for r in runs])) if runs else None,
                "n_diverged": len(arm.failed),
                "failed_seeds": " ".join(str(s) for s in sorted(arm.failed)),
            }
        )
    return rows


def _family_means(arm: ArmResult, averaged: list[str]) -> dict[str, float | None]:
    """mAP per generator family (the paper's grouping): an arm can lead on GANs and trail on
    diffusion models. Mean over the family's sets evaluated here, then over seeds."""
    return {
        f"mAP_{family}": mean_over(arm, "ap", [s for s in averaged if s in sets])[0]
        for family, sets in PAPER_FAMILIES.items()
    }


def identical_arms(result: ExperimentResult) -> list[tuple[str, str]]:
    """Pairs of arms whose every seed gave bit-identical per-set results (same seeds trained)."""

    def fingerprint(arm: ArmResult) -> tuple | None:
        if not arm.runs:
            return None
        return tuple(
            (seed, json.dumps(run.rows, sort_keys=True, default=str))
            for seed, run in sorted(arm.runs.items())
        )

    seen: dict[tuple, str] = {}
    pairs = []
    for arm in result.arms:
        key = fingerprint(arm)
        if key is None:
            continue
        if key in seen:
            pairs.append((seen[key], arm.name))
        else:
            seen[key] = arm.name
    return pairs


def _why_identical(result: ExperimentResult, first: str, second: str) -> str:
    """The reason two arms can tie exactly, from the settings they differ in."""
    arms = {a.name: a for a in result.arms}
    a, b = arms[first].settings, arms[second].settings
    differ = {
        f"{section}.{key}"
        for section in set(a) | set(b)
        if isinstance(a.get(section), dict) and isinstance(b.get(section), dict)
        for key in set(a[section]) | set(b[section])
        if a[section].get(key) != b[section].get(key)
    }
    if (
        differ
        and differ <= {"train.loss"}
        and {a["train"]["loss"], b["train"]["loss"]}
        == {
            "paper",
            "hinge",
        }
    ):
        return (
            "hinge equals the paper's loss until a proxy's score passes train.hinge_margin: "
            "none did on these data"
        )
    if differ == {"data.val_band"}:
        return (
            "the two readings of the band zero the same frequency bins at these image sizes "
            "(the scaled radii fall on no exact bin distance), so the thresholds coincide"
        )
    changed = ", ".join(sorted(differ)) or "no setting"
    return f"they differ in {changed}, which changed nothing these data exercise"


def _identical_note(result: ExperimentResult) -> str:
    pairs = identical_arms(result)
    if not pairs:
        return ""
    lines = [
        f"- **{a}** and **{b}** gave bit-identical results at every seed: "
        f"{_why_identical(result, a, b)}."
        for a, b in pairs
    ]
    return "\nIdentical rows (not a coincidence of rounding):\n\n" + "\n".join(lines) + "\n"


def summary_tables(spec: ExperimentSpec) -> tuple[str | None, str | None]:
    """The first AP table and the first accuracy table the experiment compares with."""
    tables = [c["table"] for c in spec.compare]
    ap = next((t for t in tables if PAPER_METRIC.get(t) == "ap"), None)
    acc = next((t for t in tables if PAPER_METRIC.get(t) == "acc@val"), None)
    return ap, acc


def summary_markdown(result: ExperimentResult) -> str:
    lines = [
        "| arm | kind | trainable params | mAP | paper mAP | Δ mAP "
        "| mean acc@val | paper acc | Δ acc | acc@oracle (tuned on test labels) "
        "| mAP GANs | mAP diffusion | mAP others |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in arm_summary_rows(result):
        cells = [
            r["arm"],
            r["kind"],
            "—" if r["n_params"] is None else f"{r['n_params']:,}",
            fmt_number(r["mAP"], r["mAP_std"]) + _diverged(r, result),
            fmt_number(r["paper_mAP"]),
            fmt_signed(r["diff_mAP"]),
            fmt_number(r["mean_acc"], r["mean_acc_std"]),
            fmt_number(r["paper_acc"]),
            fmt_signed(r["diff_acc"]),
            fmt_number(r["mean_acc@oracle"], r["mean_acc@oracle_std"]),
            fmt_number(r["mAP_gan"]),
            fmt_number(r["mAP_diffusion"]),
            fmt_number(r["mAP_other"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    head = f"# {result.spec.title}: summary per arm\n\n"
    if result.spec.summary_note:
        head += result.spec.summary_note.strip() + "\n\n"
    seeds = result.meta.get("seeds") or []
    spread = (
        f"± = sample standard deviation over the {len(seeds)} seeds {seeds}. "
        if len(seeds) > 1
        else "One seed: no ± (pass seeds=[0,1,2] for a spread). "
    )
    return (
        head
        + f"{provenance(result.meta)}\n\n"
        + "\n".join(lines)
        + "\n\nmAP / mean acc over the paper's sets, mean over seeds; "
        + spread
        + "acc@val: accuracy at the threshold calibrated on validation images (natural vs "
        "their band-stop proxies, no fakes), what the paper reports; acc@oracle: the best "
        "threshold picked on the test labels (an upper bound, not a result). "
        "Trainable parameters: DR + flow (baselines: their fitted numbers). mAP GANs / "
        "diffusion / others: the same mean over the paper's groups of sets (GAN: ProGAN, "
        "CycleGAN, BigGAN, StyleGAN, GauGAN, StarGAN; diffusion: Guided, LDM ×3, Glide ×3; "
        "others: DeepFakes, SITD, SAN, CRN, IMLE, DALL-E), those found here.\n"
        + failures_note(result)
        + _identical_note(result)
    )


def _diverged(row: dict, result: ExperimentResult) -> str:
    """Beside the mean: how many seeds it leaves out (a diverged seed biases it upward)."""
    n = row["n_diverged"]
    total = len(result.meta.get("seeds") or []) or n
    return f" ({n} of {total} seeds diverged)" if n else ""


def failures_note(result: ExperimentResult) -> str:
    """Arms with seeds that did not train: their means are over the other seeds only."""
    lines = [
        f"- **{arm.name}**: seed {seed} left out ({why.splitlines()[0]}); its numbers are over "
        f"seeds {sorted(arm.runs) or 'none'}"
        for arm in result.arms
        for seed, why in sorted(arm.failed.items())
    ]
    return ("\nSeeds that did not train:\n\n" + "\n".join(lines) + "\n") if lines else ""
