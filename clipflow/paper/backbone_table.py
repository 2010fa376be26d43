"""``tables: [backbones]``: one row per arm naming the backbone behind its features.

Family, backbone, weights, layers and feature width, with mean AP and ROC-AUC (± std over
seeds): the table of ``experiment=backbones``.
"""

from __future__ import annotations

from .arm_summary import failures_note, summary_tables
from .comparison import mean_over, table_sets
from .formatting import fmt_number
from .provenance import provenance
from .spec import ExperimentResult

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
    ap_table = summary_tables(result.spec)[0]
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
        + failures_note(result)
    )
