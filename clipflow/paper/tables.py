"""Experiment results -> comparison tables (ours, paper, Δ) and plots, as CSV / Markdown / PNG.

Every table names what produced it (backbone, weights, preprocessing, protocol, seeds,
training) in its header; tables made with a random-weight backbone carry report's warning.
Conventions: numbers are percentages; ``ours`` is the mean over seeds (± the sample standard
deviation when there are several); ``Δ = ours − paper``; an empty paper cell means the paper
gives no number there. The mean row averages the paper's sets only (sets outside them, e.g.
stylegan2, are listed but not averaged), per seed, then over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fileio import atomic_write_text, to_jsonable
from ..data.layouts import PAPER_FAMILIES, PAPER_ORDER, display_name
from ..eval.report import RANDOM_WARNING, new_figure, save_png, to_csv
from ..eval.transfer import SIGNIFICANCE
from .results import PaperRow, find_row, load_table, paper_sets
from .spec import ArmResult, ExperimentResult, ExperimentSpec

METRIC_NAMES = {"ap": "AP", "acc@val": "accuracy at the validation threshold", "auc": "ROC-AUC"}
PAPER_METRIC = {
    "table1_ap": "ap",
    "table2_acc": "acc@val",
    "table3_ap": "ap",
    "table4_ap": "ap",
    "table5_ap": "ap",
    "normalization_ap": "ap",
    "fig4_ap": "ap",
}


# ------------------------------------------------------------------ statistics over seeds
def _stat(values: list[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample std) over seeds, None (a seed without the number) left out; std is None
    for a single seed."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def per_set(arm: ArmResult, metric: str, dataset: str) -> tuple[float | None, float | None]:
    """An arm's metric on one set, over seeds."""
    return _stat(
        [
            next((r[metric] for r in run.rows if r["dataset"] == dataset), None)
            for run in arm.runs.values()
        ]
    )


def mean_over(
    arm: ArmResult, metric: str, datasets: list[str]
) -> tuple[float | None, float | None]:
    """The mean over ``datasets`` for each seed, then (mean, std) over seeds."""
    means: list[float | None] = []
    for run in arm.runs.values():
        vals = [r[metric] for r in run.rows if r["dataset"] in datasets]
        means.append(float(np.mean(vals)) if vals else None)
    return _stat(means)


def _diff(ours: float | None, paper: float | None) -> float | None:
    return None if ours is None or paper is None else ours - paper


# ------------------------------------------------------------------ comparison tables
def table_sets(
    result: ExperimentResult, table: str | None
) -> tuple[list[tuple[str, str]], list[str]]:
    """(rows to show, sets averaged in the mean row) for a comparison with ``table``.

    ``table`` None (the spec compares with no such table) is only valid for ``sets: extra``.
    """
    evaluated = dict(result.sets)
    if result.spec.sets == "extra":
        return list(result.sets), list(evaluated)
    if table is None:  # the paper's sets come from the table: there is none to take them from
        raise KeyError(f"experiment {result.spec.name!r} compares with no paper table of its sets")
    paper = [s for s in PAPER_ORDER if s in paper_sets(table)] or list(PAPER_ORDER)
    rows = [(s, display_name(s)) for s in paper] + [
        (s, d) for s, d in result.sets if s not in paper
    ]
    averaged = [s for s in paper if s in evaluated] or list(evaluated)
    return rows, averaged


def _paper_mean(row: PaperRow | None, averaged: list[str]) -> tuple[float | None, str]:
    """The paper's mean comparable to ours: its printed mean when we evaluated all of its sets."""
    if row is None:
        return None, ""
    sets = [s for s in row.values if row.values[s] is not None]
    if not sets or set(sets) <= set(averaged):
        return row.mean, ""
    vals = [v for v in (row.value(s) for s in averaged) if v is not None]
    if vals:
        return float(
            np.mean(vals)
        ), f"paper mean recomputed over the {len(vals)} sets evaluated here"
    return row.mean, "paper mean is over its own sets; ours over the sets evaluated here"


def _paper_row(table: str, ref: dict | None) -> PaperRow | None:
    try:
        return find_row(table, ref)
    except KeyError:
        return None  # e.g. the Mahalanobis baseline has no row in Table II


def comparison(
    result: ExperimentResult, table: str, metric: str
) -> tuple[list[dict], list[str], list[str]]:
    """Rows (one per set + mean), column names and notes of ``ours vs paper`` for ``table``."""
    rows_shown, averaged = table_sets(result, table)
    columns, notes = ["dataset", "display_name"], []
    # str cells (names) and float | None cells (numbers) side by side
    rows: list[dict[str, Any]] = [{"dataset": s, "display_name": d} for s, d in rows_shown]
    mean: dict[str, Any] = {"dataset": "mean", "display_name": f"Mean ({len(averaged)} sets)"}
    for arm in result.arms:
        prow = _paper_row(table, arm.paper)
        columns += [f"{arm.name}:ours", f"{arm.name}:std", f"{arm.name}:paper", f"{arm.name}:diff"]
        for row in rows:
            ours, std = per_set(arm, metric, row["dataset"])
            paper = prow.value(row["dataset"]) if prow else None
            row.update(
                {
                    f"{arm.name}:ours": ours,
                    f"{arm.name}:std": std,
                    f"{arm.name}:paper": paper,
                    f"{arm.name}:diff": _diff(ours, paper),
                }
            )
        ours, std = mean_over(arm, metric, averaged)
        paper, note = _paper_mean(prow, averaged)
        mean.update(
            {
                f"{arm.name}:ours": ours,
                f"{arm.name}:std": std,
                f"{arm.name}:paper": paper,
                f"{arm.name}:diff": _diff(ours, paper),
            }
        )
        notes += [f"{arm.name}: {note}"] if note else []
        notes += [f"{arm.name}: paper row {prow.label}: {prow.note}"] if prow and prow.note else []
        notes += [] if prow else [f"{arm.name}: the paper has no number for this in {table}"]
        notes += transfer_notes(arm)
    return rows + [mean], columns, notes


def transfer_notes(arm: ArmResult) -> list[str]:
    """A note naming the sets whose reals the arm's calibration does not fit (``cal_transfer``
    "no" at some seed, clipflow.eval.transfer): its fpr= guarantee does not hold there."""
    bad: dict[str, list[int]] = {}
    for seed, run in sorted(arm.runs.items()):
        for row in run.rows:
            if row.get("cal_transfer") == "no":
                bad.setdefault(row["dataset"], []).append(seed)
    if not bad:
        return []
    named = ", ".join(f"{name} (seed {', '.join(map(str, seeds))})" for name, seeds in bad.items())
    return [
        f"{arm.name}: the calibration does not transfer to {named}: their reals are flagged "
        "by p <= 1%/5% far more often than the level (exact test, significance "
        f"{SIGNIFICANCE:g}), so they are not like the arm's calibration reals and fpr= "
        "decisions do not hold there (docs/calibration.md)"
    ]


def _cell(row: dict, arm: str) -> list[str]:
    ours, std, paper, diff = (row.get(f"{arm}:{k}") for k in ("ours", "std", "paper", "diff"))
    return [
        "missing" if ours is None else fmt_number(ours, std),
        fmt_number(paper),
        fmt_signed(diff),
    ]


def comparison_markdown(result: ExperimentResult, table: str, metric: str) -> str:
    rows, _, notes = comparison(result, table, metric)
    arms = [a.name for a in result.arms]
    head = ["set"] + [f"{a} {k}" for a in arms for k in ("ours", "paper", "Δ")]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in rows:
        name = f"**{row['display_name']}**" if row["dataset"] == "mean" else row["display_name"]
        lines.append("| " + " | ".join([name] + [c for a in arms for c in _cell(row, a)]) + " |")
    caption = load_table(table)[0].caption if load_table(table) else table
    text = [
        f"# {result.spec.title}: {METRIC_NAMES.get(metric, metric)} (%), "
        f"ours vs the paper ({table})",
        "",
        result.spec.description.strip(),
        "",
        provenance(result.meta),
        "",
        "\n".join(lines),
        "",
        f"Source: {caption} Δ = ours − paper; — = the paper gives no number; "
        "'missing' = set not found here.",
        "The mean row averages the paper's sets only, per seed, then over seeds (± sample std).",
    ]
    text += [f"- {n}" for n in notes]
    return "\n".join(text) + "\n" + _reference_rows(table, result)


def _reference_rows(table: str, result: ExperimentResult) -> str:
    """The paper's other rows of this table (means only), for context."""
    used = {
        (a.paper or {}).get("method", "") + "/" + (a.paper or {}).get("variant", "-")
        for a in result.arms
    }
    others = [
        r for r in load_table(table) if f"{r.method}/{r.variant}" not in used and r.mean is not None
    ]
    if not others:
        return ""
    lines = [
        "",
        "Other rows of the paper's table (mean only, for context):",
        "",
        "| method | mean |",
        "|---|---:|",
    ]
    lines += [f"| {r.label} | {r.mean:.2f} |" for r in others]
    return "\n".join(lines) + "\n"


def provenance(meta: dict) -> str:
    """One paragraph: backbone, weights, preprocessing, protocol, seeds, training, data."""
    bb, tr = meta.get("backbone", {}), meta.get("train", {})
    pre = meta.get("preprocess")
    how = (
        "train: resize 256² + random crop 224, test: resize 256² + center crop 224"
        if pre == "paper"
        else "no resize, center crop 224 (zero-padded when smaller)"
    )
    epochs = (
        tr.get("epochs") if tr.get("epochs") is not None else "paper default (P 30, N+P 10, N 10)"
    )
    block = f" (`{tr['block']}`)" if tr.get("block") else ""
    text = (
        f"**Produced by** backbone `{bb.get('name')}` (weights `{bb.get('weights_id')}`, "
        f"precision {bb.get('precision')}); preprocessing `{pre}` ({how}); "
        f"test protocol `{meta.get('protocol')}`; seeds {meta.get('seeds')}; "
        f"training: {tr.get('per_class') or 'all'} natural images per class, "
        f"{describe_draws(meta)}, loss `{tr.get('loss')}`, lr {tr.get('lr')}, "
        f"batch {tr.get('batch_size')}, epochs {epochs}, "
        f"{tr.get('n_blocks')} coupling blocks{block}; threshold: {meta.get('validation')}."
    )
    if meta.get("overrides"):
        text += f" Command-line overrides: `{' '.join(meta['overrides'])}`."
    if bb.get("random_init"):
        text += "\n\n" + RANDOM_WARNING
    return text


def describe_draws(meta: dict) -> str:
    """Which training draws were used: fresh per epoch (the paper) or cached (``fast=true``)."""
    tr = meta.get("train", {})
    how = tr.get("augmentation") or f"{tr.get('views')} view(s)"
    if how == "fresh per epoch":
        return (
            "training draws **fresh per epoch** (a new random crop and proxy mask for every "
            f"image in every epoch, as the paper; data.views={tr.get('views')})"
        )
    shortcut = "fast=true: " if meta.get("fast") else ""
    return (
        f"training draws **{how}** ({shortcut}data.views={tr.get('views')}; the paper draws "
        "a fresh crop and mask every epoch)"
    )


# ------------------------------------------------------------------ per-arm summary
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
    ap_table, acc_table = _summary_tables(result.spec)
    rows = []
    for arm in result.arms:
        _, averaged = table_sets(result, ap_table)
        ap, ap_std = mean_over(arm, "ap", averaged)
        acc, acc_std = mean_over(arm, "acc@val", averaged)
        p_ap = _paper_mean(_paper_row(ap_table, arm.paper), averaged)[0] if ap_table else None
        p_acc = _paper_mean(_paper_row(acc_table, arm.paper), averaged)[0] if acc_table else None
        runs = list(arm.runs.values())
        rows.append(
            {
                "arm": arm.name,
                "kind": arm.kind,
                "n_params": runs[0].n_params if runs else None,
                "mAP": ap,
                "mAP_std": ap_std,
                "paper_mAP": p_ap,
                "diff_mAP": _diff(ap, p_ap),
                "mean_acc": acc,
                "mean_acc_std": acc_std,
                "paper_acc": p_acc,
                "diff_acc": _diff(acc, p_acc),
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


def _summary_tables(spec: ExperimentSpec) -> tuple[str | None, str | None]:
    tables = [c["table"] for c in spec.compare]
    ap = next((t for t in tables if PAPER_METRIC.get(t) == "ap"), None)
    acc = next((t for t in tables if PAPER_METRIC.get(t) == "acc@val"), None)
    return ap, acc


def fmt_number(v: float | None, std: float | None = None) -> str:
    if v is None:
        return "—"
    return f"{v:.2f} ± {std:.2f}" if std is not None else f"{v:.2f}"


def fmt_signed(v: float | None) -> str:
    return "" if v is None else f"{v:+.2f}"


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
        + _failures(result)
        + _identical_note(result)
    )


def _diverged(row: dict, result: ExperimentResult) -> str:
    """Beside the mean: how many seeds it leaves out (a diverged seed biases it upward)."""
    n = row["n_diverged"]
    total = len(result.meta.get("seeds") or []) or n
    return f" ({n} of {total} seeds diverged)" if n else ""


def _failures(result: ExperimentResult) -> str:
    """Arms with seeds that did not train: their means are over the other seeds only."""
    lines = [
        f"- **{arm.name}**: seed {seed} left out ({why.splitlines()[0]}); its numbers are over "
        f"seeds {sorted(arm.runs) or 'none'}"
        for arm in result.arms
        for seed, why in sorted(arm.failed.items())
    ]
    return ("\nSeeds that did not train:\n\n" + "\n".join(lines) + "\n") if lines else ""


# ------------------------------------------------------------------ backbone zoo
BACKBONE_COLUMNS = (
    "arm",
    "family",
    "backbone",
    "weights",
    "layers",
    "feature_dim",
    "mAP",
    "mAP_std",
    "mAUC",
    "mAUC_std",
    "n_sets",
    "failed_seeds",
)


def backbone_rows(result: ExperimentResult) -> list[dict]:
    """One row per arm: which backbone produced its features, mean AP and ROC-AUC (± std)."""
    ap_table = _summary_tables(result.spec)[0]
    averaged = table_sets(result, ap_table)[1] if ap_table else [s for s, _ in result.sets]
    rows = []
    for arm in result.arms:
        runs = list(arm.runs.values())
        bb = runs[0].backbone if runs else {}
        ap, ap_std = mean_over(arm, "ap", averaged)
        auc, auc_std = mean_over(arm, "auc", averaged)
        layers = bb.get("layers")
        rows.append(
            {
                "arm": arm.name,
                "family": bb.get("family") or "open_clip",
                "backbone": bb.get("name"),
                "weights": bb.get("weights_id"),
                "layers": f"{layers} ({bb.get('layer_pool')})" if layers else "",
                "feature_dim": bb.get("feature_dim"),
                "mAP": ap,
                "mAP_std": ap_std,
                "mAUC": auc,
                "mAUC_std": auc_std,
                "n_sets": len(averaged),
                "failed_seeds": " ".join(str(s) for s in sorted(arm.failed)),
            }
        )
    return rows


def backbones_markdown(result: ExperimentResult, rows: list[dict]) -> str:
    lines = [
        "| arm | family | backbone | weights | blocks | dim | mAP | mean ROC-AUC |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        cells = [r["arm"], r["family"], f"`{r['backbone']}`", f"`{r['weights']}`"]
        cells += [r["layers"] or "output", str(r["feature_dim"] or "—")]
        cells += [fmt_number(r["mAP"], r["mAP_std"]), fmt_number(r["mAUC"], r["mAUC_std"])]
        lines.append("| " + " | ".join(cells) + " |")
    n = rows[0]["n_sets"] if rows else 0
    return (
        f"# {result.spec.title}: mean AP and ROC-AUC (%) per backbone\n\n"
        f"{result.spec.description.strip()}\n\n{provenance(result.meta)}\n\n"
        + "\n".join(lines)
        + f"\n\nMeans over {n} sets, per seed, then over seeds (± sample std). "
        "The provenance line names the first arm's backbone; each row names its own.\n"
        + _failures(result)
    )


# ------------------------------------------------------------------ files
def write_tables(result: ExperimentResult, folder: Path) -> dict[str, Path]:
    """All tables, results.json and plots of one experiment into ``folder``."""
    folder = Path(folder)
    paths: dict[str, Path] = {}
    for comp in result.spec.compare:
        table, metric = comp["table"], comp.get("metric", PAPER_METRIC.get(comp["table"], "ap"))
        rows, columns, _ = comparison(result, table, metric)
        paths[f"{table}.csv"] = _write(folder / f"{table}.csv", to_csv(rows, tuple(columns)))
        paths[f"{table}.md"] = _write(
            folder / f"{table}.md", comparison_markdown(result, table, metric)
        )
    if "backbones" in result.spec.tables:
        rows = backbone_rows(result)
        paths["backbones.csv"] = _write(folder / "backbones.csv", to_csv(rows, BACKBONE_COLUMNS))
        paths["backbones.md"] = _write(folder / "backbones.md", backbones_markdown(result, rows))
    paths["summary.csv"] = _write(
        folder / "summary.csv", to_csv(arm_summary_rows(result), ARM_SUMMARY_COLUMNS)
    )
    paths["summary.md"] = _write(folder / "summary.md", summary_markdown(result))
    paths["results.json"] = _write(
        folder / "results.json", json.dumps(to_jsonable(results_json(result)), indent=1)
    )
    paths.update(write_plots(result, folder))
    return paths


def _write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


def results_json(result: ExperimentResult) -> dict:
    """Everything behind the tables: per arm, per seed, per set metrics; settings; metadata."""
    return {
        "experiment": result.spec.name,
        "title": result.spec.title,
        "meta": result.meta,
        "compare": result.spec.compare,
        "sets": [s for s, _ in result.sets],
        "arms": [
            {
                "name": a.name,
                "kind": a.kind,
                "paper": a.paper,
                "settings": a.settings,
                "seeds": {
                    str(seed): {
                        "rows": run.rows,
                        "threshold": run.threshold,
                        "n_params": run.n_params,
                        "checkpoint": run.checkpoint,
                        "seconds": run.seconds,
                    }
                    for seed, run in a.runs.items()
                },
                "failed": {str(seed): why for seed, why in a.failed.items()},
            }
            for a in result.arms
        ],
        "summary": arm_summary_rows(result),
        **({"backbones": backbone_rows(result)} if "backbones" in result.spec.tables else {}),
    }


# ------------------------------------------------------------------ plots (no pyplot)


def write_plots(result: ExperimentResult, folder: Path) -> dict[str, Path]:
    """The PNGs the experiment asks for: bars, histograms (Fig. 3), dr_curve (Fig. 4)."""
    out: dict[str, Path] = {}
    if "bars" in result.spec.plots:
        out["ap_per_set.png"] = plot_bars(result, folder / "ap_per_set.png")
    if "histograms" in result.spec.plots:
        out["histograms.png"] = plot_histograms(result, folder / "histograms.png")
    if "dr_curve" in result.spec.plots:
        out["dr_width.png"] = plot_dr_curve(result, folder / "dr_width.png")
    return out


def plot_bars(result: ExperimentResult, path: Path) -> Path:
    """AP per set for every arm (bars, ± std) with the paper's number as a black tick."""
    table = next(
        (c["table"] for c in result.spec.compare if PAPER_METRIC.get(c["table"]) == "ap"),
        "table1_ap",
    )
    rows, _, _ = comparison(result, table, "ap")
    x, arms = np.arange(len(rows)), result.arms
    width = 0.8 / max(1, len(arms))
    fig, ax = new_figure(figsize=(min(16.0, max(6.0, 0.6 * len(rows) + 3)), 4.2))
    for i, arm in enumerate(arms):
        pos = x - 0.4 + width * (i + 0.5)
        ours = np.array(
            [np.nan if r[f"{arm.name}:ours"] is None else r[f"{arm.name}:ours"] for r in rows]
        )
        std = np.array(
            [0.0 if r[f"{arm.name}:std"] is None else r[f"{arm.name}:std"] for r in rows]
        )
        ax.bar(pos, np.nan_to_num(ours), width, yerr=std, label=arm.name, capsize=1.5)
        paper = np.array(
            [np.nan if r[f"{arm.name}:paper"] is None else r[f"{arm.name}:paper"] for r in rows]
        )
        ax.hlines(paper, pos - width / 2, pos + width / 2, colors="black", linewidth=1.5)
    ax.plot([], [], color="black", label="paper")
    ax.set_xticks(
        x, [r["display_name"].split(" (")[0] for r in rows], rotation=60, ha="right", fontsize=8
    )
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 105)
    ax.set_title(
        f"{result.spec.title}: AP per set (bars: ours; black ticks: the paper)", fontsize=9
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_png(fig, path)


def plot_histograms(result: ExperimentResult, path: Path) -> Path:
    """Fig. 3: real vs fake score histograms, one row per arm, one column per chosen set."""
    arms = [a for a in result.arms if a.kind != "baseline"]
    sets = result.spec.histogram_sets or [s for s, _ in result.sets[:4]]
    names = dict(result.sets)
    fig, axes = new_figure(
        len(arms), len(sets), figsize=(2.8 * len(sets), 2.3 * len(arms)), squeeze=False
    )
    for i, arm in enumerate(arms):
        if not arm.runs:
            continue  # every seed diverged (summary.md says so)
        run = arm.runs[min(arm.runs)]  # the first seed
        for j, ds in enumerate(sets):
            ax = axes[i][j]
            if ds not in run.scores:
                ax.text(
                    0.5,
                    0.5,
                    f"{ds}\nnot evaluated",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                continue
            real, fake = run.scores[ds]
            bins = np.histogram_bin_edges(np.concatenate([real, fake]), bins=30)
            ax.hist(real, bins=bins, alpha=0.6, color="#4C72B0", label="real")
            ax.hist(fake, bins=bins, alpha=0.6, color="#C44E52", label="fake")
            ax.axvline(run.threshold, color="black", ls="--", lw=0.8)
            ax.set_title(f"{names.get(ds, ds)} — {arm.name}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.locator_params(axis="x", nbins=4)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        "Anomaly scores q (higher = more likely fake); dashed: validation threshold", fontsize=9
    )
    fig.tight_layout()
    return save_png(fig, path)


def plot_dr_curve(result: ExperimentResult, path: Path) -> Path:
    """Fig. 4: mAP and trainable parameters against the DR output width; no DR as lines."""
    _, averaged = table_sets(result, "table1_ap")
    points = []
    for arm in result.arms:
        if arm.kind == "baseline" or "flow" not in arm.settings or not arm.runs:
            continue
        ap, std = mean_over(arm, "ap", averaged)
        points.append(
            (
                int(arm.settings["flow"]["dr_dim"]),
                ap,
                std or 0.0,
                next(iter(arm.runs.values())).n_params,
            )
        )
    widths = sorted(p for p in points if p[0] > 0)
    fig, ax = new_figure(figsize=(5.5, 3.6))
    twin = ax.twinx()
    if widths:
        ax.errorbar(
            [p[0] for p in widths],
            [p[1] for p in widths],
            yerr=[p[2] for p in widths],
            marker="o",
            color="#4C72B0",
            label="mAP",
        )
        twin.plot(
            [p[0] for p in widths],
            [p[3] for p in widths],
            marker="s",
            color="#C44E52",
            label="parameters",
        )
        ax.set_xscale("log", base=2)
        ax.set_xticks([p[0] for p in widths], [str(p[0]) for p in widths])
    for _dim, ap, _, n in (p for p in points if p[0] == 0):
        ax.axhline(ap, color="#4C72B0", ls="--", lw=1, label="mAP, no DR")
        twin.axhline(n, color="#C44E52", ls="--", lw=1, label="parameters, no DR")
    ax.set_xlabel("DR output width C")
    ax.set_ylabel("mAP (%)")
    twin.set_ylabel("trainable parameters")
    twin.set_yscale("log")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="best")
    ax.set_title("DR width ablation (Fig. 4)", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)
