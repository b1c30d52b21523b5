"""Charts of the QA report, as PNG bytes (or data URIs to inline in HTML).

Drawn on matplotlib ``Figure`` objects with the Agg canvas, never through ``pyplot``: no global state, no
GUI backend, safe in worker threads. Every chart has a title, axis labels, value labels and a dashed
threshold line where a threshold applies. Colours come from the Okabe-Ito palette, which stays distinct
for the common forms of colour blindness, and pass/fail is also said in words, never by colour alone.
An empty input draws a chart that says there is no data, so a report never lacks an image.

Values are written next to their threshold with :func:`format_value`: a value below a threshold never reads
as the threshold (69.6%, not 70%, below 70%). The report uses the same function for its words.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
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
#: Decimals a value near its threshold may gain so that it reads on the right side of it.
EXTRA_DIGITS = 2


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float | np.floating) and not math.isfinite(value))


def format_threshold(threshold: float, *, percent: bool = True, digits: int = 0) -> str:
    """A threshold as written: ``digits`` decimals, more (up to :data:`EXTRA_DIGITS`) when it has them (72.5%)."""
    scale, suffix = (100.0, "%") if percent else (1.0, "")
    t = float(threshold) * scale
    for d in range(digits, digits + EXTRA_DIGITS + 1):
        text = f"{t:.{d}f}"
        if math.isclose(float(text), t, abs_tol=1e-9):
            return text + suffix
    return f"{t:.{digits + EXTRA_DIGITS}f}{suffix}"


def format_value(value: Any, threshold: float | None = None, *, percent: bool = True, digits: int = 0) -> str:
    """A share as a percentage (or a plain number), on the same side of ``threshold`` as the value itself.

    With ``digits`` decimals, unless that rounds a value onto the other side of its threshold (or onto it):
    then with as many more decimals as it takes, up to :data:`EXTRA_DIGITS`, and cut towards the value's
    side beyond that. 0.696 against 0.70 reads "69.6%", 0.69999 "69.99%"; 0.7 reads "70%". Missing: "n/a".
    """
    if _is_missing(value):
        return "n/a"
    scale, suffix = (100.0, "%") if percent else (1.0, "")
    v = float(value) * scale
    if threshold is None:
        return f"{v:.{digits}f}{suffix}"
    # The gate compares the raw values; the shown value must say what the gate decided.
    below = float(value) < float(threshold)
    t = round(float(threshold) * scale, 9)
    for d in range(digits, digits + EXTRA_DIGITS + 1):
        text = f"{v:.{d}f}"
        if (float(text) < t) == below:
            return text + suffix
    d = digits + EXTRA_DIGITS
    q = 10.0**d
    cut = math.floor(round(v * q, 6)) if below else math.ceil(round(v * q, 6))
    return f"{cut / q:.{d}f}{suffix}"


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


#: Behind a value label, so a threshold line running through it does not strike it out.
_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.0}


def _threshold(ax: Axes, y: float, label: str) -> None:
    """A dashed horizontal threshold line, named in the legend (a label on the line collides with bars)."""
    ax.axhline(y, color=THRESHOLD_COLOUR, linestyle="--", linewidth=1.2, label=label)


def site_scorecard_chart(
    sites: pd.DataFrame,
    *,
    min_gold_accuracy: float,
    min_agreement: float | None = None,
    not_judged: Collection[str] = (),
) -> bytes:
    """Per site: gold accuracy and agreement with consensus (bars) against the gold accuracy threshold.

    Args:
        sites: Indexed by site id, with ``gold_accuracy`` and ``consensus_agreement`` (shares 0..1) and,
            optionally, ``alpha`` (Krippendorff's alpha within the site), drawn in a second panel against
            ``min_agreement``.
        min_gold_accuracy: The dashed line of the first panel.
        min_agreement: The dashed line of the alpha panel.
        not_judged: Sites whose gold accuracy the QA gate does not judge yet (too few gold answers): their
            bar is hatched and labelled "not judged", so it does not read as a failure.
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
    thin = np.asarray([str(s) in set(map(str, not_judged)) for s in sites.index], dtype=bool)
    series = [
        ("gold_accuracy", "Gold accuracy", PALETTE["blue"], min_gold_accuracy),
        ("consensus_agreement", "Agrees with consensus", PALETTE["orange"], None),
    ]
    for k, (column, label, colour, threshold) in enumerate(series):
        values = sites[column].to_numpy(dtype=np.float64) if column in sites.columns else np.full(n, np.nan)
        pos = x + (k - 0.5) * width
        hatched = thin if column == "gold_accuracy" else np.zeros(n, dtype=bool)
        heights = np.nan_to_num(values)
        ax.bar(pos[~hatched], heights[~hatched], width, label=label, color=colour)
        if hatched.any():
            ax.bar(
                pos[hatched],
                heights[hatched],
                width,
                color="white",
                edgecolor=colour,
                hatch="//",
                label="Gold accuracy, not judged yet",
            )
        for p, v, h in zip(pos, values, hatched, strict=True):
            text = format_value(v, threshold) + ("\nnot judged" if h else "")
            ax.text(p, (0 if np.isnan(v) else v) + 0.02, text, ha="center", va="bottom", fontsize=8, bbox=_LABEL_BOX)
    _threshold(ax, min_gold_accuracy, f"gold accuracy threshold {format_threshold(min_gold_accuracy)}")
    ax.set_xticks(x, [str(s) for s in sites.index], rotation=20 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_ylim(0, 1.3 if not thin.any() else 1.4)
    ax.set_yticks(np.linspace(0, 1, 6), [f"{t:.0%}" for t in np.linspace(0, 1, 6)])
    ax.set_xlabel("Partner site")
    ax.set_ylabel("Share of answers")
    ax.legend(loc="upper left", fontsize=8, ncols=2, frameon=False)
    if with_alpha:
        ax2 = axes[1]
        alpha = sites["alpha"].to_numpy(dtype=np.float64)
        ax2.bar(x, np.nan_to_num(alpha), 0.6, color=PALETTE["green"])
        for p, v in zip(x.tolist(), alpha.tolist(), strict=True):
            ax2.text(
                p,
                max(0.0, 0 if np.isnan(v) else v) + 0.02,
                format_value(v, min_agreement, percent=False, digits=2),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        if min_agreement is not None:
            shown = format_threshold(min_agreement, percent=False, digits=2)
            _threshold(ax2, min_agreement, f"work-order threshold {shown}")
            ax2.legend(loc="upper left", fontsize=8, frameon=False)
        ax2.set_title("Agreement within each site")
        # The alpha panel is a third as wide: its names collide sooner.
        ax2.set_xticks(x, [str(s) for s in sites.index], rotation=25 if n > 2 else 0, ha="right" if n > 2 else "center")
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


def _naive_utc(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC (matplotlib's date axis takes either; naive avoids a tz round trip)."""
    when = pd.to_datetime(values, utc=True)
    return when.dt.tz_convert("UTC").dt.tz_localize(None)


def trend_periods(trend: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Start and end of each row's period, as naive UTC; the time axis spans the first start to the last end.

    ``bucket_end`` where given; otherwise each period is as long as the smallest step between periods (an
    hour when there is one period).
    """
    start = _naive_utc(trend["bucket"])
    if "bucket_end" in trend.columns:
        return start, _naive_utc(trend["bucket_end"])
    steps = np.diff(np.unique(start.to_numpy()))
    return start, start + (pd.Timedelta(steps.min()) if steps.size else pd.Timedelta("1h"))


def gold_trend_chart(trend: pd.DataFrame, *, min_gold_accuracy: float, min_point_gold: int = 5) -> bytes:
    """Gold accuracy over time, one line per site, with the threshold.

    Each point sits in the middle of its period. The time axis spans exactly the periods that hold answers
    (a single period would otherwise be padded to years by matplotlib), with ticks and labels chosen for
    that span: minutes, hours or days, the date said once.

    Args:
        trend: ``bucket`` (start of the period), optionally ``bucket_end``, ``site_id``, ``gold_accuracy``
            and ``n_gold`` per period (``flows.qa.report.gold_accuracy_trend``).
        min_gold_accuracy: The dashed line.
        min_point_gold: Points on fewer gold answers are drawn hollow: one miss moves them a lot.
    """
    fig = _figure(8.0, 3.6)
    ax = fig.subplots()
    ax.set_title("Gold accuracy over time")
    if trend.empty:
        _no_data(ax, "No gold answers yet")
        return _png(fig)
    start, end = trend_periods(trend)
    frame = trend.assign(_mid=(start + (end - start) / 2).to_numpy(), _start=start.to_numpy(), _end=end.to_numpy())
    for k, (site, rows) in enumerate(frame.sort_values("_mid").groupby("site_id", sort=True)):
        colour = PALETTE[SERIES[k % len(SERIES)]]
        marker = "osD^v<>p"[k % 8]
        ax.plot(rows["_mid"], rows["gold_accuracy"], marker=marker, color=colour, label=str(site), linewidth=1.5)
        few = rows["n_gold"].to_numpy(dtype=np.float64) < min_point_gold
        if few.any():
            ax.plot(
                rows["_mid"].to_numpy()[few],
                rows["gold_accuracy"].to_numpy()[few],
                linestyle="none",
                marker=marker,
                markerfacecolor="white",
                markeredgecolor=colour,
            )
        last = rows.iloc[-1]
        ax.annotate(
            format_value(float(last["gold_accuracy"]), min_gold_accuracy),
            xy=(last["_mid"], last["gold_accuracy"]),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=8,
            color=colour,
            va="center",
        )
    _threshold(ax, min_gold_accuracy, f"threshold {format_threshold(min_gold_accuracy)}")
    if (trend["n_gold"].to_numpy(dtype=np.float64) < min_point_gold).any():
        ax.plot(
            [],
            [],
            linestyle="none",
            marker="o",
            markerfacecolor="white",
            markeredgecolor=PALETTE["black"],
            label=f"hollow: fewer than {min_point_gold}\ngold answers in the period",
        )
    ax.set_xlim(frame["_start"].min(), frame["_end"].max())
    locator = AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(
        ConciseDateFormatter(
            locator,
            formats=["%Y", "%b", "%d %b", "%H:%M", "%H:%M", "%S.%f"],
            offset_formats=["", "%Y", "%Y", "%d %b %Y", "%d %b %Y", "%d %b %Y %H:%M"],
        )
    )
    ax.set_ylim(0, 1.1)
    ax.set_yticks(np.linspace(0, 1, 6), [f"{t:.0%}" for t in np.linspace(0, 1, 6)])
    ax.set_xlabel("Time the answers were given (UTC)")
    ax.set_ylabel("Gold accuracy")
    ax.legend(title="Site", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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
        label=f"rework threshold {format_threshold(min_confidence, percent=False, digits=2)}",
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
