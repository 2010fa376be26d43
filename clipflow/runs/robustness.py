"""Robustness evaluation: AP and accuracy under test-time post-processing (JPEG, blur, resize).

Each image is decoded once; the clean image and every perturbation of it go through the
backbone in the same pass (as feature *variants*), so all rows score the same files. Writes
the usual result files for the clean images into the run dir, one block per perturbation
under ``perturb/<name>/``, and a summary: ``robustness.csv/.md/.json`` + ``robustness_ap.png``.
With ``perturb=chain`` each chain length is one more variant (``perturb/chain_L<n>/``), and
:mod:`clipflow.eval.chain_report` adds the per-length summary and every image's drawn chain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backbones.preprocess import build_transform
from ..core.fileio import atomic_write_text
from ..data.layouts import TestSet
from ..eval.chain_report import chain_records, chain_section, length_rows, write_chain_summary
from ..eval.html_report import (
    Section,
    eval_report,
    figure_section,
    paragraphs,
    table_html,
    write_report,
)
from ..eval.means import in_paper, paper_first, summarize
from ..eval.report import (
    WARNING_MARK,
    calibration_notes,
    describe_run,
    new_figure,
    save_png,
    to_csv,
    to_markdown,
    write_results,
)
from ..features.extract import extract_features
from ..features.loader import Loader
from ..flow.model import score_features
from ..settings.config import EvalSettings, SettingsError
from ..transforms.chains import ChainLength
from ..transforms.perturb import CLEAN_STRENGTH, Perturbation
from ..transforms.variant import IDENTITY
from .evaluate import (
    eval_metadata,
    evaluate_sets,
    no_scorable_set,
    prepare_eval,
    split_not_finite,
)

log = logging.getLogger(__name__)

CLEAN = "none"
PERTURBATION_SUMMARY_COLUMNS = (
    "perturbation",
    "family",
    "strength",
    "dataset",
    "display_name",
    "in_paper",
    "ap",
    "acc@val",
    "real_acc@val",
    "fake_acc@val",
)
# Families whose strength falls as the parameter rises (quality, scale, share of side kept).
_DESCENDING = ("jpeg", "webp", "resize", "crop")
CHUNK = 4096  # images per extraction pass: bounds memory to CHUNK × variants × D floats


def run_robustness(
    s: EvalSettings,
    perturbations: Sequence[Perturbation],
    run_dir: Path,
    chunk: int = CHUNK,
    backbone=None,
) -> dict[str, Path]:
    """Evaluate ``s.ckpt`` on ``s.data.test_root`` clean and under each perturbation.
    ``backbone``: a ready one (your own extractor), checked against the checkpoint's record."""
    if s.data.reencode not in (None, "none"):
        # the pass below builds its own variants: the re-encoding would be recorded, not applied
        raise SettingsError("data.reencode cannot be combined with perturb= yet; run them apart")
    run_dir = Path(run_dir)
    device, ckpt, sets, backbone, left_out = prepare_eval(s, backbone)
    model = ckpt.model
    cal = ckpt.val_real_scores.numpy()  # conformal columns (ours): the clean calibration reals
    score_maps, skipped = score_variants(model, backbone, sets, perturbations, s, device, chunk)
    meta = {
        **eval_metadata(ckpt, backbone, s),
        "seed": s.seed,
        "perturbations": [p.describe() for p in perturbations],
    }
    files, summary, note, chain_table = {}, [], "", []
    warnings: dict[str, str] = {}  # the clean block's calibration warnings, for the summary
    clean: dict[str, Any] = {}  # the clean block, for report.html
    for pert, all_scores in zip([None, *perturbations], score_maps):
        # as clipflow-eval: a non-finite score is no decision, listed and counted per block
        score_of, not_finite = split_not_finite(all_scores)
        rows, score_rows = evaluate_sets(sets, score_of, ckpt.threshold, cal)
        block_skipped = left_out + skipped + not_finite
        if not rows:
            raise no_scorable_set(run_dir, block_skipped)
        folder = run_dir if pert is None else run_dir / "perturb" / pert.name
        block_meta = {
            **meta,
            "perturbation": pert.describe() if pert else None,
            "n_not_finite": len(not_finite),
            "n_left_out": len(left_out),
        }
        means = summarize(rows)
        written = write_results(
            folder, rows, means, block_meta, score_rows, block_skipped, log_warnings=pert is None
        )
        if pert is None:  # report.html shows the clean images' scores and mistakes
            warnings = calibration_notes(rows, block_meta)
            clean = {"rows": rows, "means": means, "meta": block_meta, "score_rows": score_rows}
        if pert is not None:  # the table header names the perturbation, not only the folder
            _title(written["results.md"], f"# Results under `{pert.name}`")
        files.update(
            written if pert is None else {f"perturb/{pert.name}/{k}": v for k, v in written.items()}
        )
        summary += perturbation_summary_rows(pert, rows)
        if pert is None or isinstance(pert, ChainLength):
            chain_table += length_rows(pert.length if pert else 0, rows)
        # Every variant scores the same files, so its sets and mean rule are those of clean.
        note = note or means.note()
    files.update(write_summary(run_dir, summary, {**meta, "mean_note": note, "warnings": warnings}))
    chains = [(p, m) for p, m in zip(perturbations, score_maps[1:]) if isinstance(p, ChainLength)]
    if chains:
        chain_meta = {**meta, "mean_note": note, "chain": _chain_meta(chains[0][0], len(chains))}
        records = chain_records([p for p, _ in chains], [m for _, m in chains])
        files.update(write_chain_summary(run_dir, chain_table, records, chain_meta))
    sections = [robustness_section(summary, note)]
    sections += [chain_section(chain_table)] if chains else []
    page = eval_report(**clean, cal_scores=cal, sections=sections, title="Results and robustness")
    files["report.html"] = write_report(run_dir / "report.html", page)
    return files


def robustness_section(summary: list[dict], mean_note: str) -> Section:
    """report.html's part for ``perturb=``: AP per perturbation and set, and its curves."""
    rows, columns = wide_table(summary, "ap")
    note = (
        f"<p>AP (%) of the clean images ({CLEAN}) and under each perturbation; the per-set "
        "figures above are those of the clean images. Each perturbation's full results are "
        "under perturb/&lt;name&gt;/.</p>"
        + table_html(rows, columns, css="robustness")
        + paragraphs(mean_note)
    )
    return figure_section(
        "Robustness: AP under each perturbation", robustness_figure(summary), note, salt="robust"
    )


def _chain_meta(first: ChainLength, max_len: int) -> dict:
    """The chain settings shared by every length (robustness_chain.json, .md)."""
    d = first.describe()
    return {"max_len": max_len, **{k: d[k] for k in ("seed", "ops", "ranges", "sampler_version")}}


def _title(md: Path, title: str) -> None:
    text = md.read_text(encoding="utf-8")
    atomic_write_text(md, text.replace("# Results", title, 1))


def score_variants(
    model,
    backbone,
    sets: list[TestSet],
    perturbations: Sequence[Perturbation],
    s: EvalSettings,
    device: str,
    chunk: int = CHUNK,
):
    """[clean, *perturbations] -> one {path: score} per variant, plus the skipped files.

    A file that fails to decode (or to perturb) is skipped for every variant alike.
    """
    paths = list(
        dict.fromkeys(str(p) for ts in sets for p in (*ts.real, *ts.fake))
    )  # shared reals once
    transform = build_transform(backbone)
    # Stable keys (not positions) name each variant: its random draws and any cache entry
    # then do not depend on which other perturbations share the pass.
    variants = [IDENTITY, *(p.variant() for p in perturbations)]
    score_maps: list[dict[str, float]] = [{} for _ in variants]
    skipped: list[tuple[str, str]] = []
    n_chunks = max(1, -(-len(paths) // chunk))
    for i in range(n_chunks):
        fs = extract_features(
            backbone,
            paths[i * chunk : (i + 1) * chunk],
            transform,
            variants,
            device,
            Loader(batch_size=s.data.batch_size, num_workers=s.data.num_workers),
            seed=s.seed,
            desc=f"robustness features {i + 1}/{n_chunks}",
        )
        skipped += fs.skipped
        for k, score_of in enumerate(score_maps):
            score_of.update(
                zip(fs.paths, score_features(model, fs.features[k], device=device).tolist())
            )
    return score_maps, skipped


def perturbation_summary_rows(pert: Perturbation | None, rows: list[dict]) -> list[dict]:
    """Rows of the summary for one variant: one per dataset, then the mean row(s)."""
    name, family = (pert.name, pert.family) if pert else (CLEAN, CLEAN)
    strength = pert.strength if pert else None
    marked = [{**r, "in_paper": "yes" if in_paper(r["dataset"]) else "no"} for r in rows]
    return [
        {
            "perturbation": name,
            "family": family,
            "strength": strength,
            **{k: r[k] for k in PERTURBATION_SUMMARY_COLUMNS[3:]},
        }
        for r in [*paper_first(marked), *summarize(rows).table_rows()]
    ]


def write_summary(run_dir: Path, summary: list[dict], meta: dict) -> dict[str, Path]:
    """robustness.csv (long), robustness.md (wide tables), robustness.json, robustness_ap.png."""
    paths = {
        name: run_dir / name for name in ("robustness.csv", "robustness.md", "robustness.json")
    }
    atomic_write_text(paths["robustness.csv"], to_csv(summary, PERTURBATION_SUMMARY_COLUMNS))
    atomic_write_text(paths["robustness.md"], summary_markdown(summary, meta))
    atomic_write_text(
        paths["robustness.json"], json.dumps({**meta, "rows": summary}, indent=2, sort_keys=True)
    )
    paths["robustness_ap.png"] = plot_robustness(summary, run_dir / "robustness_ap.png")
    return paths


def wide_table(summary: list[dict], metric: str) -> tuple[list[dict], tuple[str, ...]]:
    """Rows = perturbations, columns = datasets (+ the mean rows and mean's change from clean)."""
    names = list(dict.fromkeys(r["perturbation"] for r in summary))
    # Columns by dataset key (a mean row's label may be long); headed by the display name,
    # except the mean rows, headed by their key (the note under the tables says what they are).
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    header = {r["dataset"]: r["display_name"] for r in summary}
    header.update({k: k for k in ("mean", "mean_all")})
    value = {(r["perturbation"], r["dataset"]): r[metric] for r in summary}
    clean = value.get((CLEAN, "mean"))
    rows = []
    for name in names:
        row = {"perturbation": name, **{header[d]: value.get((name, d)) for d in datasets}}
        mean = value.get((name, "mean"))
        row["Δ mean"] = None if clean is None or mean is None else mean - clean
        rows.append(row)
    return rows, ("perturbation", *(header[d] for d in datasets), "Δ mean")


def summary_markdown(summary: list[dict], meta: dict) -> str:
    text = f"# Robustness\n\n{describe_run(meta)}\n\n"
    text += (
        f"Perturbations are applied at native resolution before the backbone preprocessing "
        f"(seed {meta.get('seed')}); `{CLEAN}` = the clean images. Files that could not be read "
        "are left out of every row alike.\n"
    )
    text += f"\n{meta['mean_note']}\n" if meta.get("mean_note") else ""
    # the clean images' calibration warnings (each perturbation's are in its results.md)
    text += "".join(f"\n{WARNING_MARK}{w}\n" for w in (meta.get("warnings") or {}).values())
    for metric, title in (
        ("ap", "AP (%)"),
        ("acc@val", "Accuracy at the checkpoint threshold, acc@val (%)"),
    ):
        rows, columns = wide_table(summary, metric)
        text += f"\n## {title}\n\n{to_markdown(rows, columns)}"
    return text


def _panels(summary: list[dict]) -> list[tuple[str, list[str]]]:
    """(family, perturbation names in order of strength) for each family present."""
    fams: dict[str, dict[str, float | None]] = {}
    for r in summary:
        if r["family"] != CLEAN:
            fams.setdefault(r["family"], {})[r["perturbation"]] = r["strength"]
    out = []
    for family, names in fams.items():
        reverse = family in _DESCENDING  # lower quality / smaller scale = stronger
        order = (
            sorted(names, key=lambda n: names[n] or 0.0, reverse=reverse)
            if family in CLEAN_STRENGTH
            else list(names)
        )
        out.append((family, order))
    return out


def plot_robustness(summary: list[dict], path: Path) -> Path:
    """AP vs strength: one panel per family, one line per dataset (the mean in black)."""
    return save_png(robustness_figure(summary), path)


def robustness_figure(summary: list[dict]):
    """The figure of :func:`plot_robustness` (a matplotlib Figure, not yet rendered)."""
    from matplotlib import colormaps

    panels = _panels(summary) or [(CLEAN, [])]
    ap = {(r["perturbation"], r["dataset"]): r["ap"] for r in summary}
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    label = {r["dataset"]: r["display_name"] for r in summary}
    label.update({k: k for k in ("mean", "mean_all")})  # the long labels are in the .md note
    colors = colormaps["tab20"]
    fig, axes = new_figure(
        1, len(panels), figsize=(3.6 * len(panels) + 1.8, 3.4), squeeze=False, sharey=True
    )
    for ax, (family, names) in zip(axes[0], panels):
        numeric = family in CLEAN_STRENGTH
        xs = (
            [CLEAN_STRENGTH[family]] + [_strength(summary, n) for n in names]
            if numeric
            else list(range(len(names) + 1))
        )
        for j, d in enumerate(datasets):
            ys = [ap.get((CLEAN, d))] + [ap.get((n, d)) for n in names]
            mean = d == "mean"
            ax.plot(
                xs,
                ys,
                marker="o",
                ms=3,
                lw=2.2 if mean else 1.0,
                color="black" if mean else colors(j % 20),
                label=label[d],
                zorder=3 if mean else 2,
            )
        _axis(ax, family, names, xs, numeric)
    axes[0][0].set_ylabel("AP (%)")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def _strength(summary: list[dict], name: str) -> float:
    return next(r["strength"] for r in summary if r["perturbation"] == name)


def _axis(ax, family: str, names: list[str], xs: list, numeric: bool) -> None:
    labels = {
        "jpeg": "JPEG quality",
        "webp": "WebP quality",
        "blur": "Gaussian blur σ",
        "resize": "resize factor",
        "noise": "Gaussian noise σ (0–255)",
        "crop": "crop: side kept",
    }
    ax.set_title(family)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    if numeric:
        ax.set_xlabel(labels[family] + " (clean at left)")
        if family in _DESCENDING:
            ax.invert_xaxis()
    else:
        ax.set_xticks(xs, ["clean", *names], rotation=30, fontsize=7)
