"""Charts of the QA report, as PNG bytes (or data URIs to inline in HTML).

Drawn on matplotlib ``Figure`` objects with the Agg canvas, never through ``pyplot``: no global state, no
GUI backend, safe in worker threads. Every chart has a title, axis labels, value labels and a dashed
threshold line where a threshold applies. Colours come from the Okabe-Ito palette, which stays distinct
for the common forms of colour blindness, and pass/fail is also said in words, never by colour alone.
An empty input draws a chart that says there is no data, so a report never lacks an image.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Okabe & Ito (2008), "Color Universal Design".
PALETTE = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "black": "#000000",
    "grey": "#BBBBBB",
}
SERIES = ("blue", "orange", "green", "purple", "sky", "vermillion", "yellow", "black")
THRESHOLD_COLOUR = PALETTE["black"]
DPI = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No metadata: the same chart gives the same bytes (matplotlib otherwise stamps its version).
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not PNG bytes")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="#555555", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _percent(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.0%}"


def _threshold(ax: Axes, y: float, label: str) -> None:
    """A dashed horizontal threshold line, named in the legend (a label on the line collides with bars)."""
    ax.axhline(y, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.2, label=label)


def site_scorecard_chart(sites: pd.DataFrame, *, min_gold_accuracy: float, min_agreement: float | None = None) -> bytes:
    """Per site: gold accuracy and agreement with consensus (bars) against the gold accuracy threshold.

    Args:
        sites: Indexed by site id, with ``gold_accuracy`` and ``consensus_agreement`` (shares 0..1) and,
            optionally, ``alpha`` (Krippendorff's alpha within the site), drawn in a second panel against
            ``min_agreement``.
        min_gold_accuracy: The dashed line of the first panel.
        min_agreement: The dashed line of the alpha panel.
    """
    with_alpha = "alpha" in sites.columns and sites["alpha"].notna().any()
    n = len(sites)
    fig = _figure(max(6.0, 1.2 * n + 3) + (3.5 if with_alpha else 0), 3.6)
    axes = fig.subplots(1, 2, width_ratios=[2, 1]) if with_alpha else [fig.subplots()]
    ax = axes[0]
    ax.set_title("Quality per partner site")
    if n == 0:
        _no_data(ax, "No sites have answered yet")
        return _png(fig)
    x = np.arange(n)
    width = 0.38
    series = [
        ("gold_accuracy", "Gold accuracy", PALETTE["blue"]),
        ("consensus_agreement", "Agrees with consensus", PALETTE["orange"]),
    ]
    for k, (column, label, colour) in enumerate(series):
        values = sites[column].to_numpy(dtype=np.float64) if column in sites.columns else np.full(n, np.nan)
        pos = x + (k - 0.5) * width
        ax.bar(pos, np.nan_to_num(values), width, label=label, color=colour)
        for p, v in zip(pos, values, strict=True):
            ax.text(p, (0 if np.isnan(v) else v) + 0.02, _percent(v), ha="center", va="bottom", fontsize=8)
    _threshold(ax, min_gold_accuracy, f"gold accuracy threshold {min_gold_accuracy:.0%}")
    ax.set_xticks(x, [str(s) for s in sites.index], rotation=20 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6), [f"{t:.0%}" for t in np.linspace(0, 1, 6)])
    ax.set_xlabel("Partner site")
    ax.set_ylabel("Share of answers")
    ax.legend(loc="upper left", fontsize=8, ncols=3, frameon=False)
    if with_alpha:
        ax2 = axes[1]
        alpha = sites["alpha"].to_numpy(dtype=np.float64)
        ax2.bar(x, np.nan_to_num(alpha), 0.6, color=PALETTE["green"])
        for p, v in zip(x.tolist(), alpha.tolist(), strict=True):
            ax2.text(
                p,
                max(0.0, 0 if np.isnan(v) else v) + 0.02,
                "n/a" if np.isnan(v) else f"{v:.2f}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        if min_agreement is not None:
            _threshold(ax2, min_agreement, f"work-order threshold {min_agreement:.2f}")
            ax2.legend(loc="upper left", fontsize=8, frameon=False)
        ax2.set_title("Agreement within each site")
        ax2.set_xticks(x, [str(s) for s in sites.index], rotation=20 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax2.set_ylim(min(0.0, float(np.nanmin(alpha)) - 0.1 if np.isfinite(alpha).any() else 0.0), 1.3)
        ax2.set_xlabel("Partner site")
        ax2.set_ylabel("Krippendorff's alpha")
    return _png(fig)


def confusion_matrix_chart(
    matrix: pd.DataFrame,
    *,
    title: str = "Consensus answer against the known (gold) answer",
    row_label: str = "Known answer (gold)",
    col_label: str = "Consensus answer",
) -> bytes:
    """A heatmap of counts: rows are the reference answer, columns the answer given; counts in every cell.

    Colour is the share of the row (how often a true class gets each answer), so a rare class's mistakes
    show as clearly as a common one's.
    """
    k_rows, k_cols = matrix.shape
    fig = _figure(max(5.0, 0.6 * k_cols + 3), max(3.5, 0.45 * k_rows + 2))
    ax = fig.subplots()
    ax.set_title(title)
    if matrix.size == 0 or matrix.to_numpy().sum() == 0:
        _no_data(ax, "No answers to compare")
        return _png(fig)
    counts = matrix.to_numpy(dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)
    image = ax.imshow(share, cmap="cividis", vmin=0, vmax=1, aspect="auto")
    size = 9 if max(k_rows, k_cols) <= 8 else 7 if max(k_rows, k_cols) <= 15 else 5
    for i in range(k_rows):
        for j in range(k_cols):
            ax.text(
                j,
                i,
                f"{counts[i, j]:,}",
                ha="center",
                va="center",
                fontsize=size,
                color="black" if share[i, j] > 0.6 else "white",
                fontweight="bold" if i == j else "normal",
            )
    ax.set_xticks(
        range(k_cols),
        [str(c) for c in matrix.columns],
        rotation=30 if k_cols > 4 else 0,
        ha="right" if k_cols > 4 else "center",
    )
    ax.set_yticks(range(k_rows), [str(r) for r in matrix.index])
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("Share of the row")
    return _png(fig)


def gold_trend_chart(trend: pd.DataFrame, *, min_gold_accuracy: float) -> bytes:
    """Gold accuracy over time, one line per site, with the threshold.

    Args:
        trend: ``bucket`` (timestamp), ``site_id``, ``gold_accuracy`` and ``n_gold`` per bucket
            (``flows.qa.report.gold_accuracy_trend``).
        min_gold_accuracy: The dashed line.
    """
    fig = _figure(8.0, 3.6)
    ax = fig.subplots()
    ax.set_title("Gold accuracy over time")
    if trend.empty:
        _no_data(ax, "No gold answers yet")
        return _png(fig)
    for k, (site, rows) in enumerate(trend.sort_values("bucket").groupby("site_id", sort=True)):
        colour = PALETTE[SERIES[k % len(SERIES)]]
        marker = "osD^v<>p"[k % 8]
        ax.plot(rows["bucket"], rows["gold_accuracy"], marker=marker, color=colour, label=str(site), linewidth=1.5)
        last = rows.iloc[-1]
        ax.annotate(
            _percent(float(last["gold_accuracy"])),
            xy=(last["bucket"], last["gold_accuracy"]),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=8,
            color=colour,
            va="center",
        )
    _threshold(ax, min_gold_accuracy, f"threshold {min_gold_accuracy:.0%}")
    ax.set_ylim(0, 1.1)
    ax.set_yticks(np.linspace(0, 1, 6), [f"{t:.0%}" for t in np.linspace(0, 1, 6)])
    ax.set_xlabel("Time the answers were given (UTC)")
    ax.set_ylabel("Gold accuracy")
    ax.legend(title="Site", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.autofmt_xdate()
    return _png(fig)


def confidence_histogram(
    confidence: Sequence[float] | np.ndarray | pd.Series, *, min_confidence: float, bins: int = 20
) -> bytes:
    """How sure the consensus is, item by item; bars left of the threshold are the items sent to rework."""
    values = np.asarray(confidence, dtype=np.float64)
    values = values[np.isfinite(values)]
    fig = _figure(8.0, 3.4)
    ax = fig.subplots()
    ax.set_title("Confidence of the consensus answers")
    if values.size == 0:
        _no_data(ax, "No consolidated items yet")
        return _png(fig)
    counts, edges = np.histogram(np.clip(values, 0, 1), bins=bins, range=(0.0, 1.0))
    below = edges[:-1] < min_confidence
    n_below = int((values < min_confidence).sum())
    widths = np.diff(edges)
    ax.bar(
        edges[:-1][below],
        counts[below],
        width=widths[below],
        align="edge",
        edgecolor="white",
        color=PALETTE["vermillion"],
        label=f"below the threshold: {n_below:,} items ({n_below / values.size:.1%})",
    )
    ax.bar(
        edges[:-1][~below],
        counts[~below],
        width=widths[~below],
        align="edge",
        edgecolor="white",
        color=PALETTE["blue"],
        label=f"at or above: {values.size - n_below:,} items",
    )
    top = counts.max() if counts.size else 0
    for left, width, c in zip(edges[:-1].tolist(), widths.tolist(), counts.tolist(), strict=True):
        if c:
            ax.text(left + width / 2, c + top * 0.01, f"{c:,}", ha="center", va="bottom", fontsize=7)
    ax.axvline(
        min_confidence,
        color=THRESHOLD_COLOUR,
        linestyle="--",
        linewidth=1.2,
        label=f"rework threshold {min_confidence:.2f}",
    )
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, top * 1.25 + 1)
    ax.set_xlabel("Confidence (0 = a guess, 1 = certain)")
    ax.set_ylabel("Items")
    return _png(fig)


def site_progress_chart(progress: pd.DataFrame) -> bytes:
    """Per site: tasks answered out of tasks assigned, as horizontal bars with counts and percentages.

    Args:
        progress: ``site_id``, ``done`` and ``total`` per site.
    """
    n = len(progress)
    fig = _figure(8.0, max(2.0, 0.5 * n + 1.2))
    ax = fig.subplots()
    ax.set_title("Progress per partner site")
    if n == 0:
        _no_data(ax, "No tasks assigned yet")
        return _png(fig)
    rows = progress.sort_values("site_id", ascending=False)
    total = rows["total"].to_numpy(dtype=np.float64)
    done = rows["done"].to_numpy(dtype=np.float64)
    share = np.divide(done, total, out=np.zeros_like(done), where=total > 0)
    y = np.arange(n)
    ax.barh(y, np.ones(n), color=PALETTE["grey"], label="to do")
    ax.barh(y, np.clip(share, 0, 1), color=PALETTE["blue"], label="done")
    for yi, d, t, s in zip(y.tolist(), done, total, share, strict=True):
        ax.text(1.01, yi, f"{int(d):,} of {int(t):,} ({s:.0%})", va="center", fontsize=8)
    ax.set_yticks(y, [str(s) for s in rows["site_id"]])
    ax.set_xlim(0, 1.35)
    ax.set_xticks(np.linspace(0, 1, 5), [f"{t:.0%}" for t in np.linspace(0, 1, 5)])
    ax.set_xlabel("Share of assigned tasks answered")
    ax.set_ylabel("Partner site")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, fontsize=8, frameon=False)
    return _png(fig)
