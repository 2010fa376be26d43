"""The figures of report.html: inline SVG from matplotlib and small JPEG thumbnails.

Every figure's size is independent of the number of images: score histograms have fixed bins
(:data:`BINS`), ROC and PR curves are thinned to at most :data:`CURVE_POINTS` points, and a
set shows at most a fixed number of thumbnails, each at most :data:`THUMB_PX` pixels a side.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from ..data.imageio import load_image
from ..errors import UnreadableImageError
from .report import new_figure

BINS = 40  # histogram bins per set, whatever its size
CURVE_POINTS = 300  # ROC / PR points drawn per set at most
THUMB_PX = 96  # longest side of a thumbnail
THUMB_MAX_PIXELS = 50_000_000  # larger files get a placeholder instead of a thumbnail
REAL_COLOR, FAKE_COLOR = "#4C72B0", "#C44E52"


def svg_of(fig, salt: str) -> str:
    """A matplotlib figure as an ``<svg>`` element to inline in HTML.

    Text stays text (smaller, searchable); ``salt`` makes the figure's internal ids (clip
    paths) unique within the page and the output the same on every run; the date and the
    XML prolog are left out.
    """
    import matplotlib as mpl

    buf = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def thin(x: np.ndarray, y: np.ndarray, n: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points of a curve, evenly spaced along it, both ends kept."""
    if len(x) <= n:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))
    return x[keep], y[keep]


def set_figure(
    real: np.ndarray,
    fake: np.ndarray,
    threshold: float | None,
    levels: dict[str, float],
    title: str = "",
):
    """Three panels for one set: the score histograms of reals and fakes (the threshold
    dashed, each conformal level in ``levels`` dotted), the ROC curve and the PR curve."""
    fig, (ax_h, ax_roc, ax_pr) = new_figure(1, 3, figsize=(10.5, 2.9))
    _histograms(ax_h, real, fake, threshold, levels)
    scores = np.concatenate([real, fake])
    labels = np.concatenate([np.zeros(len(real), int), np.ones(len(fake), int)])
    fpr, tpr, _ = roc_curve(labels, scores)
    ax_roc.plot(*thin(fpr, tpr), color="#333333", lw=1.3)
    ax_roc.plot([0, 1], [0, 1], color="#BBBBBB", lw=0.8, ls=":")
    ax_roc.set(xlabel="false-positive rate (reals)", ylabel="true-positive rate", title="ROC")
    precision, recall, _ = precision_recall_curve(labels, scores)
    ax_pr.plot(*thin(recall, precision), color="#333333", lw=1.3)
    ax_pr.axhline(len(fake) / len(scores), color="#BBBBBB", lw=0.8, ls=":")
    ax_pr.set(xlabel="recall (fakes found)", ylabel="precision", title="precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _histograms(ax, real, fake, threshold, levels: dict[str, float]) -> None:
    both = np.concatenate([real, fake])
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo:  # one score for all: a bin around it
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    for values, color, name in ((real, REAL_COLOR, "real"), (fake, FAKE_COLOR, "fake")):
        counts, _ = np.histogram(values, edges, density=True)
        ax.stairs(
            counts, edges, fill=True, alpha=0.45, color=color, label=f"{name} ({len(values)})"
        )
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="black", ls="--", lw=1.0, label="threshold")
    for name, t in levels.items():
        if math.isfinite(t) and lo <= t <= hi:
            ax.axvline(t, color="#55A868", ls=":", lw=1.2)
            ax.annotate(
                name,
                (t, 0.02),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=6,
                ha="right",
                va="bottom",
                color="#2F6B3C",
            )
    ax.set(xlabel="score q (higher = more likely fake)", ylabel="density", title="scores")
    ax.locator_params(axis="x", nbins=4)
    ax.legend(fontsize=6, loc="best", frameon=False)


def thumbnail(path: str) -> tuple[str | None, str]:
    """``(data URI of a JPEG thumbnail, "")`` of an image file, or ``(None, why not)`` when
    the file cannot be read (moved, deleted, corrupt since the evaluation): never an error."""
    try:
        im = load_image(path, max_pixels=THUMB_MAX_PIXELS)
    except UnreadableImageError as err:
        return None, err.reason
    except OSError as err:
        return None, f"cannot read file: {err.strerror or err}"
    im.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), ""
