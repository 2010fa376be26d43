"""The figures of report.html: inline SVG (drawn here per set; matplotlib's for the summary
curves) and small JPEG thumbnails.

Every figure's size is independent of the number of images: score histograms have fixed bins
(:data:`BINS`), ROC and PR curves are thinned to at most :data:`CURVE_POINTS` points, and a
set shows at most a fixed number of thumbnails, each at most :data:`THUMB_PX` pixels a side.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from ..data.imageio import load_image
from ..errors import UnreadableImageError

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


PANEL_W, PANEL_H = 320, 230  # one panel of a set's figure, in CSS pixels
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 10, 22, 38  # room for tick labels and titles


class _Panel:
    """One plot area of a hand-written SVG: data coordinates -> pixels, axes, ticks."""

    def __init__(self, x0: float, xlim: tuple[float, float], ylim: tuple[float, float]):
        self.x0, self.xlim, self.ylim = x0, xlim, ylim
        self.w, self.h = PANEL_W - _LEFT - _RIGHT, PANEL_H - _TOP - _BOTTOM
        self.parts: list[str] = []

    def px(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        (a, b), (c, d) = self.xlim, self.ylim
        u = self.x0 + _LEFT + (np.asarray(x, float) - a) / (b - a) * self.w
        v = _TOP + self.h - (np.asarray(y, float) - c) / (d - c) * self.h
        return u, v

    def line(self, x, y, style: str, closed: bool = False) -> None:
        u, v = self.px(x, y)
        d = "M" + "L".join(f"{a:.1f},{b:.1f}" for a, b in zip(u, v)) + ("Z" if closed else "")
        self.parts.append(f'<path d="{d}" {style}/>')

    def vline(self, x: float, style: str, label: str = "", color: str = "black") -> None:
        self.line([x, x], list(self.ylim), style)
        if label:  # read downwards from the top, left of the line
            u, v = self.px(x, self.ylim[1])
            self.parts.append(
                f'<text x="{u - 3:.1f}" y="{v + 3:.1f}" transform="rotate(-90 {u - 3:.1f} '
                f'{v + 3:.1f})" text-anchor="end" font-size="9" fill="{color}">'
                f"{html.escape(label)}</text>"
            )

    def frame(self, title: str, xlabel: str, ylabel: str) -> str:
        """The panel's SVG: frame, ticks, labels and everything drawn into it."""
        left, top = self.x0 + _LEFT, _TOP
        out = [
            f'<rect x="{left}" y="{top}" width="{self.w}" height="{self.h}" fill="none" '
            'stroke="#444" stroke-width="0.8"/>',
            f'<text x="{left + self.w / 2}" y="{top - 7}" text-anchor="middle" '
            f'font-size="12">{html.escape(title)}</text>',
            f'<text x="{left + self.w / 2}" y="{PANEL_H - 4}" text-anchor="middle" '
            f'font-size="10">{html.escape(xlabel)}</text>',
            f'<text x="{self.x0 + 11}" y="{top + self.h / 2}" text-anchor="middle" '
            f'font-size="10" transform="rotate(-90 {self.x0 + 11} {top + self.h / 2})">'
            f"{html.escape(ylabel)}</text>",
        ]
        for t, label in ticks(*self.xlim):
            u, _ = self.px(t, 0)
            out.append(
                f'<text x="{u:.1f}" y="{top + self.h + 13}" text-anchor="middle" '
                f'font-size="9">{label}</text>'
            )
        for t, label in ticks(*self.ylim):
            _, v = self.px(0, t)
            out.append(
                f'<text x="{left - 3}" y="{v + 3:.1f}" text-anchor="end" font-size="9">'
                f"{label}</text>"
            )
        return "".join(self.parts + out)


def ticks(lo: float, hi: float, most: int = 5) -> list[tuple[float, str]]:
    """At most ``most`` round values in [lo, hi] and their labels, decimals as the step needs."""
    span = hi - lo
    if not span > 0:
        return [(lo, f"{lo:.4g}")]
    exp = math.floor(math.log10(span / most))
    step = next(m * 10.0**exp for m in (1, 2, 5, 10) if span / (m * 10.0**exp) <= most)
    digits = max(0, -math.floor(math.log10(step)))
    first = math.ceil(lo / step - 1e-9)
    values = [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    return [(v, f"{v:.{digits}f}") for v in values]


def set_svg(
    real: np.ndarray,
    fake: np.ndarray,
    threshold: float | None,
    levels: dict[str, float],
    label: str = "",
) -> str:
    """One set's figure as inline SVG, three panels: the score histograms of reals and fakes
    (normalised per class; the threshold dashed, each conformal level in ``levels`` dotted),
    the ROC curve and the PR curve (each thinned to :data:`CURVE_POINTS` points). ``label``:
    the figure's accessible name (escaped here)."""
    hist = _histograms(real, fake, threshold, levels)
    scores = np.concatenate([real, fake])
    labels = np.concatenate([np.zeros(len(real), int), np.ones(len(fake), int)])
    roc = _Panel(PANEL_W, (0, 1), (0, 1))
    roc.line([0, 1], [0, 1], 'fill="none" stroke="#BBB" stroke-dasharray="2,3"')
    fpr, tpr, _ = roc_curve(labels, scores)
    roc.line(*thin(fpr, tpr), 'fill="none" stroke="#333" stroke-width="1.5"')
    pr = _Panel(2 * PANEL_W, (0, 1), (0, 1.02))
    base = len(fake) / len(scores)
    pr.line([0, 1], [base, base], 'fill="none" stroke="#BBB" stroke-dasharray="2,3"')
    precision, recall, _ = precision_recall_curve(labels, scores)
    pr.line(*thin(recall, precision), 'fill="none" stroke="#333" stroke-width="1.5"')
    body = (
        hist
        + roc.frame("ROC", "false-positive rate (reals)", "true-positive rate")
        + pr.frame("precision-recall", "recall (fakes found)", "precision")
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {3 * PANEL_W} {PANEL_H}" '
        f'width="{3 * PANEL_W}" height="{PANEL_H}" font-family="sans-serif" role="img">'
        f"<title>{html.escape(label)}</title>{body}</svg>"
    )


def _histograms(real, fake, threshold, levels: dict[str, float]) -> str:
    both = np.concatenate([real, fake])
    lo, hi = float(both.min()), float(both.max())
    # A threshold outside the scores is what a reader most needs to see (every real flagged,
    # or none): the axis reaches it, with a little room so the line is not on the frame.
    marks = [t for t in (threshold, *levels.values()) if t is not None and math.isfinite(t)]
    if marks and (min(marks) < lo or max(marks) > hi):
        lo, hi = min(lo, *marks), max(hi, *marks)
        pad = 0.03 * (hi - lo)
        lo, hi = lo - pad, hi + pad
    if hi <= lo:  # one score for all: a bin around it
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, BINS + 1)
    density = [np.histogram(v, edges, density=True)[0] for v in (real, fake)]
    panel = _Panel(0, (lo, hi), (0, 1.1 * max(float(d.max()) for d in density)))
    for d, color in zip(density, (REAL_COLOR, FAKE_COLOR)):
        xs = np.repeat(edges, 2)
        ys = np.concatenate([[0], np.repeat(d, 2), [0]])
        panel.line(xs, ys, f'fill="{color}" fill-opacity="0.45" stroke="{color}"', closed=True)
    if threshold is not None and math.isfinite(threshold) and lo <= threshold <= hi:
        panel.vline(threshold, 'stroke="black" stroke-dasharray="5,3"', "threshold")
    for name, t in levels.items():
        if math.isfinite(t) and lo <= t <= hi:
            style = 'stroke="#55A868" stroke-width="1.3" stroke-dasharray="1,2"'
            panel.vline(t, style, name, color="#2F6B3C")
    x = _LEFT + panel.w - 4
    for i, (name, n, color) in enumerate(
        (("real", len(real), REAL_COLOR), ("fake", len(fake), FAKE_COLOR))
    ):
        panel.parts.append(
            f'<text x="{x}" y="{_TOP + 12 + 11 * i}" text-anchor="end" font-size="9" '
            f'fill="{color}">{name} ({n})</text>'
        )
    return panel.frame("scores", "score q (higher = more likely fake)", "density")


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
