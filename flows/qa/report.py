"""The QA report: one self-contained HTML page for the QA lead, and a short Markdown version for Prefect.

The page is written for a reader who is not an engineer: a verdict first, then the few figures that
decide it, each with a line saying what it means, then the detail (sites, annotators, agreement, trend,
the confusions, the rework queue) and the links. It is self-contained (inline CSS, charts as PNG data
URIs, no scripts, no fonts or images from elsewhere): the machine that renders it has no internet, and the
page is opened from a private bucket through one presigned URL, which cannot follow relative links.
The only links are those passed in (Data Docs, Label Studio projects), and only ``http(s)`` ones.

Tables are capped (``MAX_ROWS``) so the page stays one page at a million items; caps are stated on the
page. The helpers that prepare the report's figures from the annotation log are here too: they are only
for the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import Environment, StrictUndefined

from flows.core.arrays import combine
from flows.core.models import TaskType, WorkOrder
from flows.qa import charts
from flows.qa.charts import format_threshold, format_value
from flows.qa.rework import REASONS
from flows.qa.scores import effective_accuracy
from flows.qa.validate import WORK_ORDER_SCOPE, Check, ExpectationOutcome, ValidationOutcome, quality_frame

MAX_ROWS = 25
TOP_CONFUSIONS = 5
#: Periods of the gold accuracy trend, finest first, and how many periods a line may have.
TREND_BUCKETS = ("1min", "5min", "15min", "30min", "1h", "2h", "6h", "12h", "1D", "7D")
MAX_BUCKETS = 48
#: Gold answers a point of the trend should carry on average (fewer: each point is mostly noise).
MIN_POINT_GOLD = 5
#: Below these, the report says why instead of drawing the trend: gold answers, the time from the first to
#: the last, periods with answers.
MIN_TREND_GOLD = 20
MIN_TREND_SPAN = pd.Timedelta("30min")
MIN_TREND_POINTS = 3

#: The gate's quality checks (:func:`flows.qa.validate.build_validation`), by name.
GOLD_CHECK = Check("quality", "between", "gold_accuracy").name
ALPHA_CHECK = Check("quality", "between", "agreement_alpha").name

GLOSSARY: Mapping[str, str] = {
    "Consensus answer": "the answer Kazi keeps for an item, combined from the annotators' answers; "
    "annotators who are right more often count for more.",
    "Confidence": "how sure the consensus is, from 0 (a guess) to 1 (certain). Items below the threshold "
    "need another look (see Rework queue).",
    "Gold items": "items whose right answer is known in advance, mixed in unseen. Gold accuracy is the share "
    "of gold items answered correctly.",
    "Krippendorff's alpha": "agreement between annotators: 1 = perfect agreement, 0 = no better than chance, "
    "below 0 = systematic disagreement.",
    "Agrees with consensus": "the share of a person's (or site's) answers equal to the final consensus answer.",
    "Rework queue": "items sent back to a partner site for another look in the next review round. The work "
    "order sets how many review rounds there can be; items still unresolved after the last one are not delivered.",
    "Not judged yet": "a site's gold accuracy on too few gold answers says little (one miss in three reads as "
    "67%), so the QA gate does not judge it until the site has enough gold answers.",
    "Excluded annotator": "someone whose answers no longer count because their accuracy is below the "
    "threshold; their items are re-checked. Annotators are shown by pseudonym only.",
}


# --- Figures for the report ------------------------------------------------------------------------


def trend_bucket(when: pd.Series, sites: pd.Series | np.ndarray) -> str:
    """The period of the gold accuracy trend for gold answers given at ``when`` by ``sites``.

    The finest of :data:`TREND_BUCKETS` that gives at most :data:`MAX_BUCKETS` periods over the answers'
    span and, on average, at least :data:`MIN_POINT_GOLD` gold answers per point (a period at a site); when
    none does, the finest with the most answers per point. Minutes for a short run, days for a long one.
    """
    when = pd.to_datetime(pd.Series(when), utc=True)
    if when.empty:
        return TREND_BUCKETS[-1]
    span = when.max() - when.min()
    fitting = [f for f in TREND_BUCKETS if span / pd.Timedelta(f) <= MAX_BUCKETS] or [TREND_BUCKETS[-1]]
    site_codes, site_names = pd.factorize(np.asarray(sites, dtype=object))
    best, best_mean = fitting[0], -1.0
    for freq in fitting:
        period, _ = pd.factorize(when.dt.floor(freq).to_numpy())
        points = len(np.unique(period.astype(np.int64) * max(len(site_names), 1) + site_codes))
        mean = len(when) / points
        if mean >= MIN_POINT_GOLD:
            return freq
        if mean > best_mean:
            best, best_mean = freq, mean
    return best


def gold_accuracy_trend(
    log: pd.DataFrame, gold: pd.Series, *, value_col: str = "label", freq: str | None = None
) -> pd.DataFrame:
    """Gold accuracy per site and period (when the answers were given).

    Args:
        log: The annotation log: item_id, site_id, ``value_col``, skipped, created_at (updated_at where
            created_at is missing).
        gold: Known answers, item_id -> value.
        value_col: The answer column compared with gold.
        freq: Period, a pandas frequency; default :func:`trend_bucket`'s choice.

    Returns:
        bucket (start of the period, UTC), bucket_end (its end), site_id, n_gold, gold_accuracy, first_at and
        last_at (the first and last of those answers); sorted by bucket then site.
    """
    columns = ["bucket", "bucket_end", "site_id", "n_gold", "gold_accuracy", "first_at", "last_at"]
    missing = [c for c in ("item_id", "site_id", value_col) if c not in log.columns]
    if missing:
        raise ValueError(f"log lacks the column(s) {missing}")
    if "created_at" not in log.columns and "updated_at" not in log.columns:
        raise ValueError("log needs created_at or updated_at")
    skipped = log["skipped"].fillna(False).to_numpy(dtype=bool) if "skipped" in log.columns else False
    on_gold = log.loc[~skipped & log["item_id"].isin(gold.index).to_numpy()]
    on_gold = on_gold.loc[on_gold[value_col].notna()]
    if on_gold.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    created = on_gold["created_at"] if "created_at" in on_gold.columns else on_gold["updated_at"]
    if "updated_at" in on_gold.columns:
        created = created.fillna(on_gold["updated_at"])
    when = pd.to_datetime(created, utc=True)
    if freq is None:
        freq = trend_bucket(when, on_gold["site_id"].to_numpy(dtype=object))
    hit = on_gold[value_col].to_numpy(dtype=object) == gold.reindex(on_gold["item_id"]).to_numpy(dtype=object)
    frame = pd.DataFrame(
        {
            "bucket": when.dt.floor(freq).to_numpy(),
            "site_id": on_gold["site_id"].to_numpy(),
            "hit": hit,
            "at": when.to_numpy(),
        }
    )
    grouped = frame.groupby(["bucket", "site_id"], sort=True)
    out = pd.DataFrame(
        {
            "n_gold": grouped["hit"].size().astype(np.int64),
            "gold_accuracy": grouped["hit"].mean().astype(np.float64),
            "first_at": grouped["at"].min(),
            "last_at": grouped["at"].max(),
        }
    ).reset_index()
    for column in ("bucket", "first_at", "last_at"):
        out[column] = pd.to_datetime(out[column], utc=True)
    out["bucket_end"] = out["bucket"] + pd.Timedelta(freq)
    return out.loc[:, columns]


def _when(start: pd.Timestamp, end: pd.Timestamp) -> str:
    if start.floor("min") == end.floor("min"):
        return f"at {start:%d %b %Y %H:%M} UTC"
    if start.normalize() == end.normalize():
        return f"between {start:%H:%M} and {end:%H:%M} UTC on {start:%d %b %Y}"
    return f"between {start:%d %b %Y %H:%M} and {end:%d %b %Y %H:%M} UTC"


def trend_gap(trend: pd.DataFrame) -> str | None:
    """Why the gold accuracy trend is not worth a chart, in a sentence; None when it is.

    A trend needs :data:`MIN_TREND_GOLD` gold answers given over :data:`MIN_TREND_SPAN` or more, and
    spread over :data:`MIN_TREND_POINTS` periods or more (:func:`trend_bucket`'s, which carry a few answers
    per site each): fewer answers make every point noise, and a few minutes have no "over time".
    """
    see = "Each site's gold accuracy is in the Partner sites table above."
    if trend.empty:
        return "No gold answers have been given yet, so there is no trend to show."
    n = int(trend["n_gold"].sum())
    first = pd.Timestamp((trend["first_at"] if "first_at" in trend.columns else trend["bucket"]).min())
    last = pd.Timestamp((trend["last_at"] if "last_at" in trend.columns else trend["bucket"]).max())
    when = _when(first, last)
    if n < MIN_TREND_GOLD:
        return (
            f"Only {_plural(n, 'gold answer')} so far, given {when}: too few to show a trend over time "
            f"(at least {MIN_TREND_GOLD} are needed). {see}"
        )
    if last - first < MIN_TREND_SPAN:
        return f"All {n:,} gold answers were given {when}: too short a time to show a trend. {see}"
    if trend["bucket"].nunique() < MIN_TREND_POINTS:
        return (
            f"The {n:,} gold answers were given {when}: too few for that much time to show a trend (a point "
            f"needs about {MIN_POINT_GOLD} gold answers from a site). {see}"
        )
    return None


def confusion_matrix(
    reference: Sequence[Any] | pd.Series | np.ndarray,
    given: Sequence[Any] | pd.Series | np.ndarray,
    classes: Sequence[str] = (),
) -> pd.DataFrame:
    """Counts of (reference, given) pairs, aligned by position; pairs with a missing value are left out.

    Returns:
        Rows are reference values, columns given values, both ``classes`` first, then any other value seen
        (sorted), so a label outside the schema shows up instead of vanishing.
    """
    ref = pd.Series(np.asarray(reference, dtype=object))
    got = pd.Series(np.asarray(given, dtype=object))
    if len(ref) != len(got):
        raise ValueError(f"reference and given differ in length ({len(ref)} vs {len(got)})")
    both = ref.notna().to_numpy() & got.notna().to_numpy()
    ref, got = ref[both].astype(str), got[both].astype(str)
    seen = set(pd.unique(ref)) | set(pd.unique(got))
    categories = list(classes) + sorted(seen - set(classes))
    k = len(categories)
    r = pd.Categorical(ref, categories=categories).codes.astype(np.int64)
    g = pd.Categorical(got, categories=categories).codes.astype(np.int64)
    counts = np.bincount(r * k + g, minlength=k * k).reshape(k, k) if k else np.zeros((0, 0), dtype=np.int64)
    return pd.DataFrame(
        counts, index=pd.Index(categories, name="reference"), columns=pd.Index(categories, name="given")
    )


def answers_vs_reference(
    log: pd.DataFrame, reference: pd.Series, classes: Sequence[str] = (), *, value_col: str = "label"
) -> pd.DataFrame:
    """:func:`confusion_matrix` of every answer against its item's reference value (gold, or the consensus).

    Answers are compared, not consensus labels: consolidation takes gold answers as given, so the
    consensus on a gold item is right by construction and would hide every mix-up.
    """
    skipped = log["skipped"].fillna(False).to_numpy(dtype=bool) if "skipped" in log.columns else False
    answered = log.loc[~skipped & log["item_id"].isin(reference.index).to_numpy()]
    expected = reference[~reference.index.duplicated()].reindex(answered["item_id"]).to_numpy(dtype=object)
    return confusion_matrix(expected, answered[value_col], classes)


def top_confusions(matrix: pd.DataFrame, n: int = TOP_CONFUSIONS) -> pd.DataFrame:
    """The ``n`` most frequent mistakes: reference, given, count, share (of the reference's answers)."""
    counts = matrix.to_numpy(dtype=np.int64)
    if counts.size == 0:
        return pd.DataFrame({"reference": [], "given": [], "count": [], "share": []})
    totals = counts.sum(axis=1)
    rows, cols = np.nonzero(counts * (1 - np.eye(*counts.shape, dtype=np.int64)))
    frame = pd.DataFrame(
        {
            "reference": matrix.index.to_numpy(dtype=object)[rows],
            "given": matrix.columns.to_numpy(dtype=object)[cols],
            "count": counts[rows, cols],
            "share": counts[rows, cols] / totals[rows],
        }
    )
    return (
        frame.sort_values(["count", "reference", "given"], ascending=[False, True, True]).head(n).reset_index(drop=True)
    )


def _encode(values: Any) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes and distinct values (Arrow: pandas hashes its Arrow strings through Python objects)."""
    array = pa.array(values, from_pandas=True)
    encoded = pc.dictionary_encode(combine(array))
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def agreement_by(log: pd.DataFrame, by: str, *, value_col: str = "label") -> pd.DataFrame:
    """Krippendorff's alpha (nominal) within each group (e.g. batch_id or site_id), with its items and answers.

    The same alpha as ``flows.qa.agreement.krippendorff_alpha`` on each group's answers, computed for all
    groups at once from counts (a unit is an item within a group): a million items in two thousand
    batches take well under a second instead of a call per batch.

    Returns:
        ``by``, alpha, items, answers (answered, non-skipped rows); lowest alpha first (unmeasurable last).
    """
    skipped = log["skipped"].fillna(False).to_numpy(dtype=bool) if "skipped" in log.columns else False
    answered = log.loc[~skipped & log[value_col].notna().to_numpy() & log[by].notna().to_numpy()]
    if answered.empty:
        return pd.DataFrame({by: [], "alpha": [], "items": [], "answers": []})
    group, groups = _encode(answered[by])
    item, _ = _encode(answered["item_id"].astype("str"))
    value, values = _encode(answered[value_col].astype("str"))
    n_groups, n_values = len(groups), len(values)
    unit, unit_key = pd.factorize(group * (int(item.max()) + 1) + item)
    unit_group = (np.asarray(unit_key) // (int(item.max()) + 1)).astype(np.int64)
    answers = np.bincount(group, minlength=n_groups)
    items = np.bincount(unit_group, minlength=n_groups)
    # Units with fewer than two values carry no information on agreement (Krippendorff).
    m = np.bincount(unit)
    pairable = m[unit] >= 2
    unit, value = unit[pairable], value[pairable]
    pairs, counts = np.unique(unit * n_values + value, return_counts=True)
    squares = np.bincount(pairs // n_values, weights=counts.astype(np.float64) ** 2, minlength=len(m))
    mf = m.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_unit = np.where(m >= 2, (mf**2 - squares) / (mf - 1), 0.0)
    n = np.bincount(unit_group, weights=np.where(m >= 2, mf, 0.0), minlength=n_groups)
    disagreeing = np.bincount(unit_group, weights=per_unit, minlength=n_groups)
    group_of_row = unit_group[unit]
    g_pairs, g_counts = np.unique(group_of_row * n_values + value, return_counts=True)
    total_squares = np.bincount(g_pairs // n_values, weights=g_counts.astype(np.float64) ** 2, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = disagreeing / n
        expected = (n**2 - total_squares) / (n * (n - 1))
        alpha = np.where((n > 1) & (expected > 0), 1.0 - observed / expected, np.nan)
    out = pd.DataFrame(
        {by: pd.array(groups, dtype="str"), "alpha": alpha, "items": items.astype(np.int64), "answers": answers}
    )
    out = out.sort_values(["alpha", by], na_position="last")
    return out.reset_index(drop=True)


def exclusion_reasons(
    annotator_scores: pd.DataFrame,
    excluded: Iterable[str],
    min_gold_accuracy: float,
    *,
    min_gold_answers: int = 10,
    estimated_accuracy: pd.Series | None = None,
) -> dict[str, str]:
    """Why each excluded annotator was excluded, in plain words (``flows.qa.scores.flag_annotators``' rule)."""
    accuracy = effective_accuracy(annotator_scores, min_gold_answers, estimated_accuracy)
    reasons: dict[str, str] = {}
    for annotator in excluded:
        if annotator not in annotator_scores.index:
            reasons[annotator] = "excluded (no scores in this round)"
            continue
        row = annotator_scores.loc[annotator]
        n_gold = int(row["n_gold"])
        acc = float(accuracy.loc[annotator])
        shown, threshold = format_value(acc, min_gold_accuracy), format_threshold(min_gold_accuracy)
        if n_gold >= min_gold_answers:
            correct = round(float(row["gold_accuracy"]) * n_gold)
            reasons[annotator] = f"gold accuracy {shown} ({correct} of {n_gold} gold items right), below {threshold}"
        else:
            reasons[annotator] = (
                f"estimated accuracy {shown} (only {_plural(n_gold, 'gold item')}, topped up with agreement with "
                f"the consensus), below {threshold}"
            )
    return reasons


# --- The report's content ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QAReport:
    """Everything the QA report shows. Frames are read, never modified.

    Attributes:
        work_order: Id, task type, thresholds.
        round: The QA round (0 for the first pass, then one per rework round).
        passed: Whether every check passed.
        items: Accepted items of the work order.
        consolidated: ``flows.core.schemas.CONSOLIDATED``.
        rework: ``flows.qa.rework.select_rework``'s frame.
        site_scores: ``flows.qa.scores.site_scores``, optionally with ``alpha`` per site: what was measured.
        annotator_scores: ``flows.qa.scores.annotator_scores``.
        excluded: Excluded annotator -> why (see :func:`exclusion_reasons`).
        alpha: Krippendorff's alpha of the work order.
        agreement_by_batch: :func:`agreement_by` over batch_id (optional).
        gold_trend: :func:`gold_accuracy_trend` (optional).
        confusion: :func:`answers_vs_reference` or another :func:`confusion_matrix` (optional).
        confusion_reference: What the confusion matrix's rows are: ``gold`` or ``consensus``.
        progress: site_id, done, total per site (optional).
        validation: The output validation (optional).
        approved_by, approval_comment: A QA lead's approval, when given.
        data_docs_url: The Great Expectations Data Docs of this round.
        label_studio_projects: Name -> URL of the Label Studio projects.
        generated_at: When the report was made (default: now).
        judged_sites: The site scores the QA gate judged (``flows.qa.flow.judgeable``): a site whose
            ``gold_accuracy`` is missing here is not judged yet (too few gold answers). Default: every
            site as measured.
        min_gold_answers: The gold answers a site needs to be judged (for the words "3 of 10").
        rework_site: The site the next review round goes to.
    """

    work_order: WorkOrder
    round: int
    passed: bool
    items: int
    consolidated: pd.DataFrame
    rework: pd.DataFrame
    site_scores: pd.DataFrame
    annotator_scores: pd.DataFrame
    excluded: Mapping[str, str] = field(default_factory=dict)
    alpha: float = float("nan")
    agreement_by_batch: pd.DataFrame | None = None
    gold_trend: pd.DataFrame | None = None
    confusion: pd.DataFrame | None = None
    confusion_reference: Literal["gold", "consensus"] = "gold"
    progress: pd.DataFrame | None = None
    validation: ValidationOutcome | None = None
    approved_by: str | None = None
    approval_comment: str | None = None
    data_docs_url: str | None = None
    label_studio_projects: Mapping[str, str] = field(default_factory=dict)
    generated_at: datetime | None = None
    judged_sites: pd.DataFrame | None = None
    min_gold_answers: int | None = None
    rework_site: str | None = None

    @property
    def verdict(self) -> str:
        if self.approved_by:
            return f"APPROVED BY {self.approved_by}"
        return "PASSED" if self.passed else "FAILED"

    @property
    def ready(self) -> int:
        """Consolidated items not waiting for rework."""
        ids = pa.array(self.consolidated["item_id"].astype("str"), pa.string())
        waiting = pa.array(self.rework["item_id"].astype("str"), pa.string()) if len(self.rework) else None
        if waiting is None or len(ids) == 0:
            return len(ids)
        return len(ids) - int(pc.sum(pc.is_in(ids, value_set=waiting)).as_py() or 0)

    @property
    def last_round(self) -> bool:
        """No review round follows this one (``qa.max_rework_rounds`` reached): what needs rework stays out."""
        return self.round >= self.work_order.qa.max_rework_rounds

    @property
    def gate_sites(self) -> pd.DataFrame:
        """The site scores the gate judged."""
        return self.site_scores if self.judged_sites is None else self.judged_sites

    @property
    def gold_accuracy(self) -> float:
        """Pooled over the judged sites' gold answers, as the gate pools it (``flows.qa.validate.quality_frame``)."""
        quality = quality_frame(self.gate_sites, None)
        return float(quality.loc[quality["scope"] == WORK_ORDER_SCOPE, "gold_accuracy"].iloc[0])


def collect_report(
    work_order: WorkOrder,
    *,
    round: int,
    passed: bool,
    items: int,
    consolidated: pd.DataFrame,
    rework: pd.DataFrame,
    log: pd.DataFrame,
    site_scores: pd.DataFrame,
    annotator_scores: pd.DataFrame,
    excluded: Mapping[str, str],
    alpha: float,
    gold: pd.Series | None = None,
    **extra: Any,
) -> QAReport:
    """A :class:`QAReport` with the figures computed from the log, over the answers that count (excluded
    annotators left out, as in the checks): alpha per site and per batch, the gold accuracy trend and the
    confusion matrix (answers against gold, or against the consensus without gold). Classification only:
    the other task types have no labels to compare. ``extra`` passes the other :class:`QAReport` fields
    (validation, approval, links, progress, generated_at)."""
    classification = work_order.task_type in (TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION)
    sites = site_scores
    batches = None
    trend = None
    confusion = None
    reference: Literal["gold", "consensus"] = "consensus"
    if classification and "label" in log.columns:
        kept = log.loc[~log["annotator"].isin(list(excluded)).to_numpy()] if "annotator" in log.columns else log
        by_site = agreement_by(kept, "site_id").set_index("site_id")["alpha"]
        sites = site_scores.assign(alpha=by_site.reindex(site_scores.index).to_numpy(dtype=np.float64))
        if "batch_id" in kept.columns:
            batch_sites = kept.drop_duplicates("batch_id").set_index("batch_id")["site_id"]
            batches = agreement_by(kept, "batch_id")
            batches.insert(1, "site_id", batch_sites.reindex(batches["batch_id"]).to_numpy(dtype=object))
        classes = work_order.label_schema.classes
        if gold is not None and len(gold):
            trend = gold_accuracy_trend(kept, gold)
            confusion = answers_vs_reference(kept, gold, classes)
            reference = "gold"
        if confusion is None or confusion.to_numpy().sum() == 0:
            consensus = consolidated.drop_duplicates("item_id").set_index("item_id")["label"].dropna()
            confusion = answers_vs_reference(kept, consensus, classes)
            reference = "consensus"
    return QAReport(
        work_order=work_order,
        round=round,
        passed=passed,
        items=items,
        consolidated=consolidated,
        rework=rework,
        site_scores=sites,
        annotator_scores=annotator_scores,
        excluded=dict(excluded),
        alpha=alpha,
        agreement_by_batch=batches,
        gold_trend=trend,
        confusion=confusion,
        confusion_reference=reference,
        **extra,
    )


# --- Formatting ----------------------------------------------------------------------------------------


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _pct(v: Any, digits: int = 0) -> str:
    return "n/a" if _missing(v) else f"{float(v):.{digits}%}"


def _num(v: Any, digits: int = 2) -> str:
    return "n/a" if _missing(v) else f"{float(v):.{digits}f}"


def _count(v: Any) -> str:
    return "n/a" if _missing(v) else f"{int(v):,}"


def _seconds(v: Any) -> str:
    return "n/a" if _missing(v) else f"{float(v):.0f} s"


def _safe_url(url: str) -> str:
    if not url.lower().startswith(("https://", "http://")):
        raise ValueError(f"only http(s) links can go in the QA report, got {url[:40]!r}")
    return url


def _short(v: Any, width: int = 60) -> str:
    text = str(v)
    return text if len(text) <= width else text[: width - 1] + "…"


CheckState = Literal["pass", "fail", "not_judged"]
_TAGS: Mapping[CheckState, str] = {"pass": "PASS", "fail": "FAIL", "not_judged": "NOT JUDGED"}


@dataclass(frozen=True)
class ReportCheck:
    """One row of the report's Checks table: a check of the QA gate in words, or one site's part of one."""

    name: str
    state: CheckState
    detail: str

    @property
    def passed(self) -> bool:
        """Not a failure (a check not judged yet is not one)."""
        return self.state != "fail"

    @property
    def tag(self) -> str:
        return _TAGS[self.state]


def _gate_result(report: QAReport, name: str) -> ExpectationOutcome | None:
    if report.validation is None:
        return None
    return next((r for r in report.validation.results if r.frame == "quality" and r.name == name), None)


def site_checks(report: QAReport) -> dict[str, ReportCheck]:
    """Each site's gold accuracy as the QA gate judged it, site id -> check.

    The gate checks the gold accuracy of :attr:`QAReport.judged_sites` (missing where a site has too few
    gold answers: not judged yet, never a failure) against ``min_gold_accuracy`` in one check over all
    sites. A site fails here only when that check failed and its judged accuracy is below the threshold, so
    the rows never contradict the gate.
    """
    qa = report.work_order.qa
    judged = report.gate_sites
    gate = _gate_result(report, GOLD_CHECK)
    out: dict[str, ReportCheck] = {}
    for site, row in report.site_scores.iterrows():
        name = f"Gold accuracy at {site}"
        measured, n_gold = row.get("gold_accuracy"), row.get("n_gold")
        acc: Any = (
            judged.at[site, "gold_accuracy"] if site in judged.index and "gold_accuracy" in judged.columns else None
        )
        if _missing(acc):
            if _missing(measured) or _missing(n_gold) or int(n_gold) == 0:
                out[str(site)] = ReportCheck(name, "not_judged", "not judged yet (no gold answers yet)")
                continue
            n = int(n_gold)
            needed = f"{n:,} of {report.min_gold_answers:,}" if report.min_gold_answers else f"only {n:,}"
            right = round(float(measured) * n)
            out[str(site)] = ReportCheck(
                name, "not_judged", f"not judged yet ({needed} gold answers); {right:,} of {n:,} right so far"
            )
            continue
        below = float(acc) < qa.min_gold_accuracy
        failed = below and (gate is None or not gate.success)
        out[str(site)] = ReportCheck(
            name,
            "fail" if failed else "pass",
            f"{format_value(acc, qa.min_gold_accuracy)} on {_count(n_gold)} gold answers, "
            f"threshold {format_threshold(qa.min_gold_accuracy)}",
        )
    return out


def report_checks(report: QAReport) -> list[ReportCheck]:
    """The Checks table: the QA gate's outcome (:attr:`QAReport.validation`), check by check, in words.

    Agreement (the alpha check, or the gate's word on an alpha that cannot be measured), gold accuracy per
    site (:func:`site_checks`) and over the judged sites together, and the output checks in one row. A row
    fails exactly when the gate's check behind it failed, so the table fails somewhere exactly when the
    gate does. Without a validation outcome (a report made outside the flow) the thresholds decide.
    """
    qa = report.work_order.qa
    out: list[ReportCheck] = []
    results = report.validation.results if report.validation is not None else ()
    alpha_gate = _gate_result(report, ALPHA_CHECK)
    others = [r for r in results if r.frame == "quality" and r.name not in (GOLD_CHECK, ALPHA_CHECK)]
    if not _missing(report.alpha):
        failed = not alpha_gate.success if alpha_gate is not None else report.alpha < qa.min_agreement
        out.append(
            ReportCheck(
                "Agreement between annotators (Krippendorff's alpha)",
                "fail" if failed else "pass",
                f"{format_value(report.alpha, qa.min_agreement, percent=False, digits=2)}, "
                f"threshold {format_threshold(qa.min_agreement, percent=False, digits=2)}",
            )
        )
    elif not others:
        out.append(ReportCheck("Agreement between annotators", "pass", "not measurable (too few overlapping answers)"))
    out += [
        ReportCheck("Agreement between annotators", "pass" if r.success else "fail", r.description or r.name)
        for r in others
    ]
    if alpha_gate is not None and not alpha_gate.success and _missing(report.alpha):
        out.append(ReportCheck("Agreement between annotators", "fail", alpha_gate.description or alpha_gate.name))

    gold = list(site_checks(report).values())
    gate = _gate_result(report, GOLD_CHECK)
    pooled = report.gold_accuracy
    pooled_below = not _missing(pooled) and pooled < qa.min_gold_accuracy
    if sum(c.state != "not_judged" for c in gold) > 1:
        n = int(quality_frame(report.gate_sites, None)["n_gold"].iloc[-1])
        gold.append(
            ReportCheck(
                "Gold accuracy of the judged sites together",
                "fail" if pooled_below and (gate is None or not gate.success) else "pass",
                f"{format_value(pooled, qa.min_gold_accuracy, digits=1)} on {n:,} gold answers, "
                f"threshold {format_threshold(qa.min_gold_accuracy)}",
            )
        )
    if gate is not None and not gate.success and all(c.passed for c in gold):
        # The gate failed on gold accuracy for a reason no row shows (an error in the check): say so.
        gold.append(ReportCheck("Gold accuracy", "fail", gate.error or gate.description or gate.name))
    out += gold

    output = [r for r in results if r.frame == "output"]
    if output:
        n_ok = sum(r.success for r in output)
        ok = n_ok == len(output)
        out.append(
            ReportCheck(
                "Output checks (Great Expectations)",
                "pass" if ok else "fail",
                f"{n_ok} of {len(output)} passed" + ("" if ok else "; the failures are listed below"),
            )
        )
    return out


def _site_rows(report: QAReport) -> list[dict[str, str]]:
    qa = report.work_order.qa
    annotators = report.annotator_scores
    people = annotators.groupby("site_id").size() if "site_id" in annotators.columns else pd.Series(dtype=np.int64)
    excluded = (
        annotators.loc[annotators.index.isin(list(report.excluded))].groupby("site_id").size()
        if "site_id" in annotators.columns
        else pd.Series(dtype=np.int64)
    )
    progress = report.progress.set_index("site_id") if report.progress is not None else None
    judgement = site_checks(report)
    rows = []
    for site, row in report.site_scores.iterrows():
        check = judgement[str(site)]
        done = ""
        if progress is not None and site in progress.index:
            d, t = progress.at[site, "done"], progress.at[site, "total"]
            done = f"{int(d):,} of {int(t):,}" + (f" ({d / t:.0%})" if t else "")
        if check.state == "fail":
            status = "BELOW THRESHOLD"
        elif check.state == "not_judged":
            status = check.detail.split(";")[0]
        else:
            status = "OK"
        rows.append(
            {
                "site": str(site),
                "annotators": _count(people.get(site, 0)),
                "excluded": _count(excluded.get(site, 0)),
                "answers": _count(row.get("n_answers")),
                "n_gold": _count(row.get("n_gold")),
                "gold_accuracy": format_value(row.get("gold_accuracy"), qa.min_gold_accuracy),
                "agreement": _pct(row.get("consensus_agreement")),
                "alpha": format_value(row.get("alpha"), qa.min_agreement, percent=False, digits=2)
                if "alpha" in report.site_scores.columns
                else "",
                "lead": _seconds(row.get("median_lead_time_s")),
                "skip_rate": _pct(row.get("skip_rate"), 1),
                "rework_rate": _pct(row.get("rework_rate"), 1),
                "progress": done,
                "status": status,
                "state": check.state,
                "bad": "1" if check.state == "fail" else "",
            }
        )
    return rows


def _annotator_rows(report: QAReport) -> tuple[list[dict[str, str]], int]:
    scores = report.annotator_scores
    if scores.empty:
        return [], 0
    flagged = scores.index.isin(list(report.excluded))
    order = pd.DataFrame(
        {"flag": ~flagged, "acc": scores["gold_accuracy"].to_numpy(dtype=np.float64), "id": scores.index.astype(str)},
        index=scores.index,
    ).sort_values(["flag", "acc", "id"], na_position="last")
    shown = order.index[: max(MAX_ROWS, int(flagged.sum()))]
    rows = []
    for annotator in shown:
        row = scores.loc[annotator]
        reason = report.excluded.get(str(annotator))
        rows.append(
            {
                "annotator": str(annotator),
                "site": str(row.get("site_id", "")),
                "answers": _count(row.get("n_answers")),
                "n_gold": _count(row.get("n_gold")),
                "gold_accuracy": format_value(row.get("gold_accuracy"), report.work_order.qa.min_gold_accuracy),
                "agreement": _pct(row.get("consensus_agreement")),
                "lead": _seconds(row.get("median_lead_time_s")),
                "skip_rate": _pct(row.get("skip_rate"), 1),
                "status": "EXCLUDED" if reason is not None else "OK",
                "reason": reason or "",
            }
        )
    return rows, len(scores) - len(shown)


def _batch_rows(report: QAReport) -> tuple[list[dict[str, str]], int]:
    batches = report.agreement_by_batch
    if batches is None or batches.empty:
        return [], 0
    min_agreement = report.work_order.qa.min_agreement
    rows = [
        {
            "batch": str(r["batch_id"]),
            "site": "" if _missing(r.get("site_id")) else str(r.get("site_id")),
            "alpha": format_value(r["alpha"], min_agreement, percent=False, digits=2),
            "n_items": _count(r["items"]),
            "answers": _count(r["answers"]),
            "bad": "1" if not _missing(r["alpha"]) and float(r["alpha"]) < min_agreement else "",
        }
        for _, r in batches.head(MAX_ROWS // 2).iterrows()
    ]
    return rows, len(batches) - len(rows)


@dataclass(frozen=True)
class ReworkWords:
    """What happens to the items that need another look, in this round's words.

    Attributes:
        title: The section's heading.
        intro: The sentence under it.
        figure_label, figure_help: The key figure's label and the line under it.
        reason_header: The header of the table of reasons.
        site_header: The header of the site table's column of the share of each site's items.
    """

    title: str
    intro: str
    figure_label: str
    figure_help: str
    reason_header: str
    site_header: str


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def rework_words(report: QAReport) -> ReworkWords:
    """:class:`ReworkWords` for the report: sent to the next review round while one is left; in the last
    round (``round == qa.max_rework_rounds``) not reworked and not delivered.

    In the last round, deliver leaves such items out and counts them as excluded in the delivery's
    manifest and data card: ``failed_qa`` when QA has an answer that still needs rework, ``no_answer`` when
    nobody answered the item (see ``flows.deliver.formats.deliverable.build_deliverable``).
    """
    qa = report.work_order.qa
    k = len(report.rework)
    items = _plural(k, "item")
    next_round = report.round + 1
    if k == 0:
        return ReworkWords(
            title="Rework queue",
            intro="No items need rework.",
            figure_label="Rework queue",
            figure_help="no item needs another look",
            reason_header="Why sent back",
            site_header="Sent to rework",
        )
    if not report.last_round:
        at = f" at {report.rework_site}" if report.rework_site else ""
        return ReworkWords(
            title=f"Rework queue: review round {next_round}",
            intro=(
                f"{items} are sent to review round {next_round}{at} (round {next_round} of at most "
                f"{qa.max_rework_rounds}). A reviewer sees the answers given so far and corrects them; QA then runs "
                "again on every item, and these items are delivered once it resolves them."
            ),
            figure_label="Rework queue",
            figure_help=f"sent to review round {next_round}",
            reason_header="Why sent back",
            site_header="Sent to rework",
        )
    ids = pa.array(report.rework["item_id"].astype("str"), pa.string())
    answered = pa.array(report.consolidated["item_id"].astype("str"), pa.string())
    failed = int(pc.sum(pc.is_in(ids, value_set=answered)).as_py() or 0) if len(answered) else 0
    counted = [
        f"{failed:,} as failed_qa (QA has an answer, but it still needs rework)" if failed else "",
        f"{k - failed:,} as no_answer (no answer that counts: never answered, or every answer removed)"
        if k - failed
        else "",
    ]
    return ReworkWords(
        title="Not delivered: no rework rounds left",
        intro=(
            f"{items} still need another look, but this was the last review round the work order allows "
            f"(max_rework_rounds = {qa.max_rework_rounds}). They are not reworked again and not delivered. The "
            "delivery leaves them out and counts them as excluded in its manifest and data card: "
            f"{' and '.join(c for c in counted if c)}."
        ),
        figure_label="Not delivered",
        figure_help=f"unresolved after the last review round (max_rework_rounds = {qa.max_rework_rounds})",
        reason_header="Why unresolved",
        site_header="Left unresolved",
    )


def _rework_summary(report: QAReport) -> list[dict[str, str]]:
    if report.rework.empty:
        return []
    return [
        {"reason": REASONS[code], "n_items": f"{int(report.rework[code].sum()):,}"}
        for code in REASONS
        if code in report.rework.columns and report.rework[code].any()
    ]


def _rework_rows(report: QAReport) -> tuple[list[dict[str, str]], int]:
    rework = report.rework
    rows = [
        {
            "item": str(r["item_id"]),
            "why": "; ".join(REASONS[c].split(" (")[0] for c in str(r["reason"]).split(", ") if c in REASONS),
            "confidence": format_value(
                r.get("confidence"), report.work_order.qa.min_confidence, percent=False, digits=2
            ),
            "answers": f"{_count(r.get('n_answers'))}"
            + (f" (+{int(r['n_excluded'])} removed)" if r.get("n_excluded") else ""),
        }
        for _, r in rework.head(MAX_ROWS).iterrows()
    ]
    return rows, len(rework) - len(rows)


def _failed_checks(report: QAReport) -> list[dict[str, str]]:
    if report.validation is None:
        return []
    return [
        {
            "name": r.name,
            "what": r.description,
            "frame": r.frame,
            "count": "" if r.unexpected_count is None else f"{r.unexpected_count:,}",
            "observed": "" if r.observed_value is None else _short(r.observed_value),
            "examples": ", ".join(_short(e, 30) for e in r.examples),
            "error": r.error or "",
        }
        # Quality checks have their own rows in the Checks table (per site); these are the output's.
        for r in report.validation.failed
        if r.frame == "output"
    ]


def _images(report: QAReport) -> list[dict[str, str]]:
    qa = report.work_order.qa
    images = []
    if len(report.site_scores):
        images.append(
            {
                "section": "sites",
                "alt": "Bar chart of gold accuracy and agreement with consensus per partner site",
                "src": charts.data_uri(
                    charts.site_scorecard_chart(
                        report.site_scores,
                        min_gold_accuracy=qa.min_gold_accuracy,
                        min_agreement=qa.min_agreement,
                        not_judged=[s for s, c in site_checks(report).items() if c.state == "not_judged"],
                    )
                ),
            }
        )
    if report.progress is not None and len(report.progress):
        images.append(
            {
                "section": "sites",
                "alt": "Progress bars: tasks answered out of tasks assigned per partner site",
                "src": charts.data_uri(charts.site_progress_chart(report.progress)),
            }
        )
    if report.gold_trend is not None and trend_gap(report.gold_trend) is None:
        images.append(
            {
                "section": "trend",
                "alt": "Line chart of gold accuracy over time per partner site",
                "src": charts.data_uri(
                    charts.gold_trend_chart(
                        report.gold_trend, min_gold_accuracy=qa.min_gold_accuracy, min_point_gold=MIN_POINT_GOLD
                    )
                ),
            }
        )
    if report.confusion is not None:
        gold = report.confusion_reference == "gold"
        reference = "known (gold)" if gold else "consensus"
        images.append(
            {
                "section": "confusion",
                "alt": f"Heatmap of answers against the {reference} answer, with counts",
                "src": charts.data_uri(
                    charts.confusion_matrix_chart(
                        report.confusion,
                        title=f"Answers given against the {reference} answer",
                        row_label="Known answer (gold)" if gold else "Consensus answer",
                        col_label="Answer given",
                    )
                ),
            }
        )
    if "confidence" in report.consolidated.columns and len(report.consolidated):
        images.append(
            {
                "section": "confidence",
                "alt": "Histogram of consensus confidence with the rework threshold",
                "src": charts.data_uri(
                    charts.confidence_histogram(report.consolidated["confidence"], min_confidence=qa.min_confidence)
                ),
            }
        )
    return images


def _without_consensus(report: QAReport) -> int:
    """Items waiting for rework that the confidence chart cannot show: no consolidated row or no confidence."""
    if report.rework.empty:
        return 0
    shown = report.consolidated
    if "confidence" in shown.columns:
        shown = shown.loc[shown["confidence"].notna().to_numpy()]
    ids = pa.array(report.rework["item_id"].astype("str"), pa.string())
    if len(shown) == 0:
        return len(ids)
    known = pa.array(shown["item_id"].astype("str"), pa.string())
    return len(ids) - int(pc.sum(pc.is_in(ids, value_set=known)).as_py() or 0)


def _gold_figure_help(report: QAReport) -> str:
    threshold = f"threshold {format_threshold(report.work_order.qa.min_gold_accuracy)}"
    waiting = [s for s, c in site_checks(report).items() if c.state == "not_judged"]
    if not waiting:
        return f"share of known-answer items answered right; {threshold}"
    if len(waiting) == len(report.site_scores):
        return f"not judged yet: every site has too few gold answers; {threshold}"
    return f"share of known-answer items answered right, at the sites judged so far; {threshold}"


def verdict_line(report: QAReport) -> str:
    """The sentence under the verdict: what the checks say and what happens to the results, rework included."""
    k = len(report.rework)
    items = _plural(k, "item")
    next_round = report.round + 1
    if k == 0:
        after = ""
    elif report.last_round:
        after = f" {items} still needing rework are left out of the delivery: no rework rounds are left."
    else:
        after = f" {items} go to review round {next_round} first, and QA runs again after it."
    if report.approved_by:
        return (
            f"{report.approved_by} approved these results"
            + (" although some checks failed." if not report.passed else " after every check passed.")
            + after
        )
    if report.passed:
        if k == 0:
            return "Every check passed: the results can be delivered."
        if report.last_round:
            return (
                f"Every check passed: the results can be delivered without these {items}, which still need "
                "rework and are left out (no rework rounds are left)."
            )
        return (
            f"Every check passed so far. {items} go to review round {next_round} first; the results are "
            "delivered after QA of that round."
        )
    return (
        "Some checks failed (marked FAIL below). The results are held until they pass or a QA lead approves them."
        + after
    )


def _context(report: QAReport, *, images: bool = True) -> dict[str, Any]:
    qa = report.work_order.qa
    generated = report.generated_at or datetime.now(UTC)
    annotators, annotators_hidden = _annotator_rows(report)
    batches, batches_hidden = _batch_rows(report)
    rework_rows, rework_hidden = _rework_rows(report)
    confusions = top_confusions(report.confusion) if report.confusion is not None else pd.DataFrame()
    links = []
    if report.data_docs_url:
        links.append(
            {"label": "Output checks in detail (Great Expectations Data Docs)", "url": _safe_url(report.data_docs_url)}
        )
    for name, url in report.label_studio_projects.items():
        links.append({"label": f"Label Studio project: {name}", "url": _safe_url(url)})
    rework = rework_words(report)
    return {
        "wo": report.work_order,
        "task_type": report.work_order.task_type.value.replace("_", " "),
        "round": report.round,
        "generated": generated.strftime("%Y-%m-%d %H:%M UTC"),
        "verdict": report.verdict,
        "verdict_ok": report.passed or bool(report.approved_by),
        "verdict_line": verdict_line(report),
        "approval_comment": report.approval_comment or "",
        "figures": [
            {"value": f"{report.items:,}", "label": "Items", "help": "items accepted into this work order"},
            {
                "value": f"{report.ready:,}",
                "label": "Consolidated",
                "help": "items with a final answer, ready to deliver",
            },
            {"value": f"{len(report.rework):,}", "label": rework.figure_label, "help": rework.figure_help},
            {
                "value": format_value(report.alpha, qa.min_agreement, percent=False, digits=2),
                "label": "Agreement (alpha)",
                "help": "1 = perfect agreement, 0 = chance; threshold "
                + format_threshold(qa.min_agreement, percent=False, digits=2),
            },
            {
                "value": format_value(report.gold_accuracy, qa.min_gold_accuracy, digits=1),
                "label": "Gold accuracy",
                "help": _gold_figure_help(report),
            },
        ],
        "checks": report_checks(report),
        "failed": _failed_checks(report),
        "sites": _site_rows(report),
        "has_alpha": "alpha" in report.site_scores.columns,
        "has_progress": report.progress is not None,
        "annotators": annotators,
        "annotators_hidden": annotators_hidden,
        "n_excluded": len(report.excluded),
        "batches": batches,
        "batches_hidden": batches_hidden,
        "confusions": [
            {
                "reference": str(r["reference"]),
                "given": str(r["given"]),
                "count": f"{int(r['count']):,}",
                "share": _pct(r["share"], 1),
            }
            for _, r in confusions.iterrows()
        ],
        "rework_summary": _rework_summary(report),
        "confusion_reference": "known (gold)" if report.confusion_reference == "gold" else "consensus",
        "rework_rows": rework_rows,
        "rework_hidden": rework_hidden,
        "rework": rework,
        "with_consensus": int(report.consolidated["confidence"].notna().sum())
        if "confidence" in report.consolidated.columns
        else 0,
        "without_consensus": _without_consensus(report),
        "trend_gap": trend_gap(report.gold_trend) if report.gold_trend is not None else None,
        "images": _images(report) if images else [],
        "links": links,
        "glossary": GLOSSARY,
        "qa": qa,
        "threshold": format_threshold,
        "min_gold_answers": report.min_gold_answers,
        "min_point_gold": MIN_POINT_GOLD,
    }


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, "Liberation Sans", "DejaVu Sans",
       sans-serif; color: #1a1a1a;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: 0.1em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 2px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #555; margin-top: 0; }
.verdict { padding: 0.8em 1.2em; border-radius: 6px; color: #fff; margin: 1em 0; }
.verdict.ok { background: #0072B2; } .verdict.bad { background: #D55E00; }
.verdict .big { font-size: 2em; font-weight: 700; letter-spacing: 0.03em; }
.figures { display: flex; flex-wrap: wrap; gap: 0.8em; }
.figure { flex: 1 1 170px; border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 0.8em; }
.figure .value { font-size: 1.6em; font-weight: 700; } .figure .label { font-weight: 600; }
.figure .help, .note { color: #555; font-size: 0.85em; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; margin: 0.6em 0; }
th, td { text-align: left; padding: 0.3em 0.5em; border-bottom: 1px solid #e5e5e5; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fbe3d6; }
.tag { font-weight: 700; padding: 0 0.35em; border-radius: 3px; font-size: 0.85em; }
.tag.pass { color: #fff; background: #0072B2; } .tag.fail { color: #fff; background: #D55E00; }
.tag.not_judged { color: #fff; background: #666; white-space: nowrap; }
td.id { white-space: nowrap; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
dt { font-weight: 600; } dd { margin: 0 0 0.5em 1em; color: #333; }
@media print { .verdict { -webkit-print-color-adjust: exact; print-color-adjust: exact; } }
"""

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>QA report: {{ wo.id }} (round {{ round }}): {{ verdict }}</title>
<style>{{ css|safe }}</style>
</head>
<body>
<h1>Quality report: work order {{ wo.id }}</h1>
<p class="sub">{{ task_type|capitalize }} for client {{ wo.client_id }} · QA round {{ round }} · made {{ generated }}
</p>

<div class="verdict {{ 'ok' if verdict_ok else 'bad' }}" id="verdict">
  <div class="big">{{ verdict }}</div>
  <div>{{ verdict_line }}</div>
  {% if approval_comment %}<div>Comment: “{{ approval_comment }}”</div>{% endif %}
</div>

<section id="figures">
<h2>Key figures</h2>
<div class="figures">
{% for f in figures %}
  <div class="figure"><div class="value">{{ f.value }}</div><div class="label">{{ f.label }}</div>
  <div class="help">{{ f.help }}</div></div>
{% endfor %}
</div>
</section>

<section id="checks">
<h2>Checks</h2>
<table>
<tr><th>Result</th><th>Check</th><th>Measured</th></tr>
{% for c in checks %}
<tr{% if not c.passed %} class="bad"{% endif %}><td>
<span class="tag {{ c.state }}">{{ c.tag }}</span></td>
<td>{{ c.name }}</td><td>{{ c.detail }}</td></tr>
{% endfor %}
</table>
{% if failed %}
<p>Output checks that failed. Each one checks every consolidated item against the output contract
(an allowed answer, a confidence between 0 and 1, boxes inside the image, every item covered):</p>
<table>
<tr><th>Check</th><th>What it checks</th><th>Items failing</th><th>Examples</th></tr>
{% for f in failed %}
<tr class="bad"><td><code>{{ f.name }}</code></td><td>{{ f.what }}</td>
<td class="n">{{ f.count or f.observed }}</td><td>{{ f.examples }}{% if f.error %} (error: {{ f.error }}){% endif %}
</td></tr>
{% endfor %}
</table>
{% endif %}
</section>

<section id="sites">
<h2>Partner sites</h2>
<p class="note">Gold accuracy must be at least {{ threshold(qa.min_gold_accuracy) }} at every site
{%- if min_gold_answers %} that has at least {{ min_gold_answers }} gold answers;
a site with fewer is not judged yet (hatched bar){% endif %}.
Figures count the answers that count (excluded annotators left out).
“Agrees with consensus” is the share of a site's answers equal to the final answer.</p>
{% for img in images if img.section == 'sites' %}<img src="{{ img.src }}" alt="{{ img.alt }}">{% endfor %}
<table>
<tr><th>Site</th><th>Status</th><th>Annotators</th><th>Excluded</th><th>Answers</th><th>Gold answers</th>
<th>Gold accuracy</th><th>Agrees with consensus</th>{% if has_alpha %}<th>Alpha within site</th>{% endif %}
<th>Median time per task</th><th>Skipped</th><th>{{ rework.site_header }}</th>
{% if has_progress %}<th>Progress</th>{% endif %}
</tr>
{% for s in sites %}
<tr{% if s.bad %} class="bad"{% endif %}><td class="id">{{ s.site }}</td><td>{{ s.status }}</td>
<td class="n">{{ s.annotators }}</td>
<td class="n">{{ s.excluded }}</td><td class="n">{{ s.answers }}</td><td class="n">{{ s.n_gold }}</td>
<td class="n">{{ s.gold_accuracy }}</td><td class="n">{{ s.agreement }}</td>{% if has_alpha %}
<td class="n">{{ s.alpha }}</td>{% endif %}
<td class="n">{{ s.lead }}</td><td class="n">{{ s.skip_rate }}</td><td class="n">{{ s.rework_rate }}</td>
{% if has_progress %}<td class="n">{{ s.progress }}</td>{% endif %}</tr>
{% endfor %}
</table>
</section>

<section id="annotators">
<h2>Annotators</h2>
<p class="note">Shown by pseudonym only. {{ n_excluded }} excluded: their answers no longer count and their
items are checked again. Excluded annotators come first, then the lowest gold accuracy.</p>
<table>
<tr><th>Annotator</th><th>Site</th><th>Status</th><th>Answers</th><th>Gold answers</th><th>Gold accuracy</th>
<th>Agrees with consensus</th><th>Median time per task</th><th>Skipped</th><th>Why excluded</th></tr>
{% for a in annotators %}
<tr{% if a.status == 'EXCLUDED' %} class="bad"{% endif %}><td class="id"><code>{{ a.annotator }}</code></td>
<td class="id">{{ a.site }}</td>
<td>{{ a.status }}</td><td class="n">{{ a.answers }}</td><td class="n">{{ a.n_gold }}</td>
<td class="n">{{ a.gold_accuracy }}</td>
<td class="n">{{ a.agreement }}</td><td class="n">{{ a.lead }}</td><td class="n">{{ a.skip_rate }}</td>
<td>{{ a.reason }}</td></tr>
{% endfor %}
</table>
{% if annotators_hidden %}
<p class="note">{{ annotators_hidden }} more annotators are not shown; none of them is excluded.</p>{% endif %}
</section>

{% if batches %}
<section id="agreement">
<h2>Agreement per batch</h2>
<p class="note">Krippendorff's alpha within each batch: 1 = perfect agreement, 0 = no better than chance.
Lowest first; batches below {{ '%.2f'|format(qa.min_agreement) }} are marked.</p>
<table>
<tr><th>Batch</th><th>Site</th><th>Alpha</th><th>Items</th><th>Answers</th></tr>
{% for b in batches %}
<tr{% if b.bad %} class="bad"{% endif %}><td class="id">{{ b.batch }}</td><td class="id">{{ b.site }}</td>
<td class="n">{{ b.alpha }}</td>
<td class="n">{{ b.n_items }}</td><td class="n">{{ b.answers }}</td></tr>
{% endfor %}
</table>
{% if batches_hidden %}
<p class="note">{{ batches_hidden }} more batches with higher agreement are not shown.</p>{% endif %}
</section>
{% endif %}

{% if trend_gap %}
<section id="trend">
<h2>Gold accuracy over time</h2>
<p>{{ trend_gap }}</p>
</section>
{% endif %}
{% for img in images if img.section == 'trend' %}
<section id="trend">
<h2>Gold accuracy over time</h2>
<p class="note">Each point is the share of gold items answered right in that period, per site (answers that
count). A hollow point rests on fewer than {{ min_point_gold }} gold answers: one miss moves it a lot. A line that
keeps falling is a site to call before the threshold is crossed.</p>
<img src="{{ img.src }}" alt="{{ img.alt }}">
</section>
{% endfor %}

{% for img in images if img.section == 'confusion' %}
<section id="confusion">
<h2>Where answers go wrong</h2>
<p class="note">{{ confusion_reference|capitalize }} answers down the side, the annotators' answers across
(answers that count); the diagonal is agreement. The most frequent mix-ups point at instructions or classes
to clarify.</p>
<img src="{{ img.src }}" alt="{{ img.alt }}">
{% if confusions %}
<table>
<tr><th>{{ confusion_reference|capitalize }} answer</th><th>Answered as</th><th>Times</th>
<th>Share of the answers on such items</th></tr>
{% for c in confusions %}<tr><td>{{ c.reference }}</td><td>{{ c.given }}</td><td class="n">{{ c.count }}</td>
<td class="n">{{ c.share }}</td></tr>{% endfor %}
</table>
{% else %}<p>No mix-ups.</p>{% endif %}
</section>
{% endfor %}

<section id="rework">
<h2>{{ rework.title }}</h2>
<p>{{ rework.intro }}</p>
{% for img in images if img.section == 'confidence' %}<img src="{{ img.src }}" alt="{{ img.alt }}">
{% if without_consensus %}<p class="note">The chart shows the {{ '{:,}'.format(with_consensus) }} items with a
consensus answer. {{ '{:,}'.format(without_consensus) }} more items have none (nobody answered them yet, or every
answer was removed); they are in the list below.</p>{% endif %}
{% endfor %}
{% if rework_summary %}
<table>
<tr><th>{{ rework.reason_header }}</th><th>Items</th></tr>
{% for r in rework_summary %}<tr><td>{{ r.reason }}</td><td class="n">{{ r.n_items }}</td></tr>{% endfor %}
</table>
<p class="note">An item can have several reasons. The items, least confident first:</p>
<table>
<tr><th>Item</th><th>Why</th><th>Confidence</th><th>Answers that count</th></tr>
{% for r in rework_rows %}<tr><td class="id"><code>{{ r.item }}</code></td><td>{{ r.why }}</td>
<td class="n">{{ r.confidence }}</td><td class="n">{{ r.answers }}</td></tr>{% endfor %}
</table>
{% if rework_hidden %}<p class="note">{{ '{:,}'.format(rework_hidden) }} more items are not shown.</p>{% endif %}
{% endif %}
</section>

{% if links %}
<section id="links">
<h2>Links</h2>
<ul>{% for l in links %}<li><a href="{{ l.url }}" rel="noopener noreferrer">{{ l.label }}</a></li>{% endfor %}</ul>
<p class="note">Links are signed and expire; ask the data engineer for a fresh report link if one has.</p>
</section>
{% endif %}

<section id="glossary">
<h2>What the words mean</h2>
<dl>{% for term, meaning in glossary.items() %}<dt>{{ term }}</dt><dd>{{ meaning }}</dd>{% endfor %}</dl>
</section>
</body>
</html>
"""

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_TEMPLATE = _ENV.from_string(_HTML)


def render_qa_report(report: QAReport) -> str:
    """The one-page, self-contained HTML report.

    Raises:
        ValueError: a link is not http(s).
    """
    return _TEMPLATE.render(css=_CSS, **_context(report))


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_qa_markdown(report: QAReport) -> str:
    """A short Markdown version for a Prefect artifact: verdict, figures, checks, sites, exclusions, rework."""
    c = _context(report, images=False)
    lines = [f"# QA {c['verdict']}: {report.work_order.id}, round {report.round}", "", c["verdict_line"]]
    if c["approval_comment"]:
        lines += ["", f"> {c['approval_comment']}"]
    lines += [
        "",
        *_md_table(["Figure", "Value", "Meaning"], [(f["label"], f["value"], f["help"]) for f in c["figures"]]),
    ]
    lines += ["", "## Checks", ""]
    lines += _md_table(
        ["Result", "Check", "Measured"],
        [("**FAIL**" if k.state == "fail" else k.tag, k.name, k.detail) for k in c["checks"]],
    )
    if c["failed"]:
        lines += [
            "",
            *_md_table(
                ["Failed output check", "What", "Failing", "Examples"],
                [(f"`{f['name']}`", f["what"], f["count"] or f["observed"], f["examples"]) for f in c["failed"]],
            ),
        ]
    lines += ["", "## Partner sites", ""]
    lines += _md_table(
        ["Site", "Status", "Gold accuracy", "Agrees with consensus", "Answers", "Excluded annotators"],
        [(s["site"], s["status"], s["gold_accuracy"], s["agreement"], s["answers"], s["excluded"]) for s in c["sites"]],
    )
    if report.excluded:
        lines += ["", "## Excluded annotators", ""]
        lines += _md_table(["Annotator", "Why"], [(f"`{a}`", why) for a, why in sorted(report.excluded.items())])
    rework: ReworkWords = c["rework"]
    lines += ["", f"## {rework.title}", "", rework.intro]
    if c["rework_summary"]:
        lines += [
            "",
            *_md_table([rework.reason_header, "Items"], [(r["reason"], r["n_items"]) for r in c["rework_summary"]]),
        ]
    if c["trend_gap"]:
        lines += ["", "## Gold accuracy over time", "", c["trend_gap"]]
    if c["links"]:
        lines += ["", "## Links", "", *[f"- [{link['label']}]({link['url']})" for link in c["links"]]]
    lines += [
        "",
        "Krippendorff's alpha: 1 = perfect agreement, 0 = chance. "
        "Gold accuracy: share of known-answer items answered right.",
    ]
    return "\n".join(lines) + "\n"
