"""The QA report says what the QA gate decided, in words a QA lead reads right.

Issue #6 ("Reports a QA lead reads"): the checks come from the gate's outcome and the site scores it judged
(a site with too few gold answers is "not judged yet", never a failure); leftover rework items are described
per round (sent to the next review round, or not delivered after the last); the gold accuracy trend adapts
its periods to the time span or says why there is none; a value below a threshold never reads as the
threshold; pseudonyms do not wrap.
"""

import json
import random
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from flows.core.models import PartnerRegistry, WorkOrder
from flows.core.schemas import ANNOTATIONS
from flows.deliver.formats.deliverable import build_deliverable
from flows.qa import charts
from flows.qa.flow import MIN_GOLD_ANSWERS, QAInputs, Validated, assess_round, build_report, judgeable
from flows.qa.inputs import answer_log, comparable_values, latest_versions, unanswered_rework
from flows.qa.report import (
    MIN_TREND_GOLD,
    QAReport,
    exclusion_reasons,
    gold_accuracy_trend,
    render_qa_markdown,
    render_qa_report,
    report_checks,
    rework_words,
    site_checks,
    trend_bucket,
    trend_gap,
    verdict_line,
)
from flows.qa.rework import REWORK_COLUMNS
from flows.qa.validate import ExpectationOutcome, ValidationOutcome, validate_with_pandas

pytestmark = pytest.mark.unit

CLASSES = ["cat", "dog", "bird"]
T0 = pd.Timestamp("2026-11-20 08:00", tz="UTC")


def make_work_order(**qa: Any) -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "id": "acme-0042",
            "client_id": "acme",
            "source": {"uri": "s3://client-in/batch-1", "format": "csv"},
            "task_type": "image_classification",
            "columns": {"media_uri": "uri"},
            "label_schema": {"classes": CLASSES},
            "deadline": datetime(2026, 12, 1, tzinfo=UTC),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "overlap": 3,
            "delivery": {"uri": "s3://client-out/acme-0042"},
            "qa": {"min_confidence": 0.7, "min_gold_accuracy": 0.8, "min_agreement": 0.5, **qa},
        }
    )


def consolidated(ids: list[str], needs_rework: Sequence[str] = ()) -> pd.DataFrame:
    labels = [CLASSES[k % 3] for k in range(len(ids))]
    return pd.DataFrame(
        {
            "item_id": pd.array(ids, dtype="str"),
            "answer": [json.dumps({"label": v}) for v in labels],
            "label": pd.array(labels, dtype="str"),
            "confidence": np.full(len(ids), 0.95),
            "n_annotators": np.full(len(ids), 3, dtype=np.int32),
            "method": ["dawid_skene"] * len(ids),
            "sites": ["site-a"] * len(ids),
            "needs_rework": [i in needs_rework for i in ids],
        }
    )


ITEMS = ["i1", "i2", "i3"]
CONSOLIDATED = consolidated(ITEMS)
NO_REWORK = pd.DataFrame({c: [] for c in REWORK_COLUMNS})
PEOPLE = pd.DataFrame({"site_id": pd.Series(dtype="str"), "gold_accuracy": pd.Series(dtype=float)})


def sites(scores: dict[str, tuple[int, float]]) -> pd.DataFrame:
    """site -> (n_gold, gold_accuracy) as ``flows.qa.scores.site_scores`` has them (answers that count)."""
    return pd.DataFrame(
        {
            "n_answers": [30] * len(scores),
            "n_gold": [n for n, _ in scores.values()],
            "gold_accuracy": [a for _, a in scores.values()],
            "consensus_agreement": [0.9] * len(scores),
        },
        index=pd.Index(list(scores), name="site_id"),
    )


def gate(wo: WorkOrder, scores: pd.DataFrame, alpha: float) -> ValidationOutcome:
    """The QA gate's checks, as the flow's validate task runs them: on the judgeable site scores."""
    return validate_with_pandas(
        CONSOLIDATED, wo, site_scores=judgeable(scores), alpha=alpha, accepted_items=ITEMS, rework_items=[]
    )


def make_report(
    scores: dict[str, tuple[int, float]], *, alpha: float = 0.8, wo: WorkOrder | None = None, **over: Any
) -> QAReport:
    wo = wo or make_work_order()
    frame = sites(scores)
    validation = over.pop("validation", None) or gate(wo, frame, alpha)
    args: dict[str, Any] = {
        "work_order": wo,
        "round": 0,
        "passed": validation.success,
        "items": len(ITEMS),
        "consolidated": CONSOLIDATED,
        "rework": NO_REWORK,
        "site_scores": frame,
        "annotator_scores": PEOPLE,
        "alpha": alpha,
        "validation": validation,
        "judged_sites": judgeable(frame),
        "min_gold_answers": MIN_GOLD_ANSWERS,
        "generated_at": datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
    }
    args.update(over)
    return QAReport(**args)


def rows_of(html: str, first_cell: str) -> list[str]:
    """The text of the table rows whose first cell is ``first_cell`` (tags stripped)."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, flags=re.S)
    texts = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip() for r in rows]
    return [t for t in texts if t.startswith(first_cell)]


# --- 1. The checks are the gate's verdict --------------------------------------------------------------


def test_a_site_with_too_few_gold_answers_is_not_judged_and_the_verdict_agrees() -> None:
    # The reviewer's case: 2 of 3 gold answers right at nairobi (67%), 11 of 12 at kisumu.
    report = make_report({"nairobi": (3, 2 / 3), "kisumu": (12, 11 / 12)})
    assert report.passed and report.verdict == "PASSED"
    checks = {c.name: c for c in report_checks(report)}
    assert checks["Gold accuracy at nairobi"].state == "not_judged"
    assert checks["Gold accuracy at nairobi"].detail == "not judged yet (3 of 10 gold answers); 2 of 3 right so far"
    assert checks["Gold accuracy at kisumu"].state == "pass"
    assert checks["Gold accuracy at kisumu"].detail == "92% on 12 gold answers, threshold 80%"
    assert not any(c.state == "fail" for c in checks.values())
    assert report.gold_accuracy == pytest.approx(11 / 12)  # pooled over the judged site, as the gate pools it

    html = render_qa_report(report)
    assert "FAIL</span>" not in html and "BELOW THRESHOLD" not in html
    assert '<span class="tag not_judged">NOT JUDGED</span>' in html
    assert rows_of(html, "nairobi not judged yet (3 of 10 gold answers)")  # the site table's status
    assert "Every check passed: the results can be delivered." in html
    md = render_qa_markdown(report)
    assert (
        "| NOT JUDGED | Gold accuracy at nairobi | not judged yet (3 of 10 gold answers); 2 of 3 right so far |" in md
    )


def test_a_judged_site_below_the_threshold_fails_alone() -> None:
    report = make_report({"nairobi": (3, 2 / 3), "kisumu": (12, 9 / 12)})
    assert not report.passed and report.verdict == "FAILED"
    states = {c.name: c.state for c in report_checks(report)}
    assert states["Gold accuracy at kisumu"] == "fail"
    assert states["Gold accuracy at nairobi"] == "not_judged"
    html = render_qa_report(report)
    assert rows_of(html, "kisumu BELOW THRESHOLD")
    assert re.search(r'<tr class="bad"><td class="id">kisumu</td>', html)
    assert not re.search(r'<tr class="bad"><td class="id">nairobi</td>', html)


def test_a_site_without_gold_answers_is_not_judged() -> None:
    report = make_report({"kisumu": (12, 1.0), "new-site": (0, float("nan"))})
    check = site_checks(report)["new-site"]
    assert (check.state, check.detail) == ("not_judged", "not judged yet (no gold answers yet)")
    assert report.passed


@pytest.mark.parametrize(
    ("scores", "alpha"),
    [
        ({"a": (3, 0.0), "b": (12, 1.0)}, 0.8),
        ({"a": (3, 0.0), "b": (12, 0.5)}, 0.8),
        ({"a": (10, 0.7), "b": (10, 0.9)}, 0.8),
        ({"a": (10, 0.8), "b": (40, 0.8)}, 0.8),
        ({"a": (9, 0.1), "b": (9, 0.2)}, 0.8),
        ({"a": (12, 0.95)}, 0.45),
        ({"a": (12, 0.95)}, 0.5),
        ({"a": (2, 0.5), "b": (50, 0.79), "c": (0, float("nan"))}, 0.9),
    ],
)
def test_the_checks_fail_exactly_when_the_gate_does(scores: dict[str, tuple[int, float]], alpha: float) -> None:
    report = make_report(scores, alpha=alpha)
    assert report.validation is not None
    fails = [c for c in report_checks(report) if c.state == "fail"]
    assert bool(fails) == (not report.validation.success)
    assert (report.verdict == "PASSED") == (not fails)


def test_agreement_that_cannot_be_measured_reads_as_the_gate_said() -> None:
    base = gate(make_work_order(), sites({"a": (12, 1.0)}), float("nan"))
    why = "not measurable although items have two or more answers: every answer has the same label"
    failing = replace(
        base,
        success=False,
        results=(*base.results, ExpectationOutcome("agreement_measurable", "quality", False, description=why)),
    )
    report = make_report({"a": (12, 1.0)}, alpha=float("nan"), validation=failing, passed=False)
    agreement = [c for c in report_checks(report) if c.name == "Agreement between annotators"]
    assert [(c.state, c.detail) for c in agreement] == [("fail", why)]
    fine = replace(
        base,
        results=(
            *base.results,
            ExpectationOutcome("agreement_measurable", "quality", True, description="not measurable: no item has two"),
        ),
    )
    report = make_report({"a": (12, 1.0)}, alpha=float("nan"), validation=fine)
    agreement = [c for c in report_checks(report) if c.name == "Agreement between annotators"]
    assert [(c.state, c.detail) for c in agreement] == [("pass", "not measurable: no item has two")]


def test_rows_follow_the_gate_outcome_not_a_second_judgement() -> None:
    wo = make_work_order()
    frame = sites({"a": (12, 0.5)})
    passing = gate(wo, sites({"a": (12, 1.0)}), 0.8)
    # The gate passed (on its own frame): the report does not fail a site the gate did not fail.
    report = make_report({"a": (12, 0.5)}, validation=passing)
    assert [c.state for c in report_checks(report)] == ["pass", "pass", "pass"]
    # The gate failed on gold accuracy with no site below the threshold (an error in the check): a row says so.
    failing = gate(wo, frame, 0.8)
    gold = next(r for r in failing.results if r.name.endswith("(gold_accuracy)"))
    broken = replace(
        failing,
        results=tuple(
            replace(r, success=False, error="no column 'gold_accuracy'") if r is gold else r for r in failing.results
        ),
    )
    report = make_report({"a": (12, 1.0)}, validation=broken, passed=False)
    assert ("Gold accuracy", "fail", "no column 'gold_accuracy'") in [
        (c.name, c.state, c.detail) for c in report_checks(report)
    ]


def crowd_inputs(wo: WorkOrder) -> QAInputs:
    """Two sites of three annotators who agree on every item; site-a has one gold item (one miss in three),
    site-b four (all right). Answers within ten minutes."""
    rows: list[dict[str, Any]] = []
    plan: list[dict[str, Any]] = []
    gold = pd.Series({"g0": "cat", "g1": "dog", "g2": "bird", "g3": "cat", "g4": "dog"})
    layout = {"site-a": [f"i{k:02d}" for k in range(6)] + ["g0"], "site-b": [f"i{k:02d}" for k in range(6, 12)]}
    layout["site-b"] += ["g1", "g2", "g3", "g4"]
    for site, items in layout.items():
        for item in items:
            right = gold[item] if item in gold.index else CLASSES[int(item[1:]) % 3]
            for slot in range(3):
                label = "dog" if item == "g0" and slot == 2 else right
                at = T0 + timedelta(seconds=20 * len(rows))
                rows.append(
                    {
                        "item_id": item,
                        "batch_id": f"b-{site}",
                        "site_id": site,
                        "project_id": 1,
                        "task_id": len(rows) + 1,
                        "annotation_id": len(rows) + 1,
                        "annotator": f"w-{site[-1]}0000000000{slot}",
                        "answer": json.dumps({"label": label}),
                        "label": label,
                        "lead_time_s": 20.0,
                        "created_at": at,
                        "updated_at": at,
                        "skipped": False,
                        "round": 0,
                    }
                )
                plan.append({"item_id": item, "site_id": site, "slot": slot, "is_gold": item in gold.index})
    log = answer_log(latest_versions(pa.Table.from_pylist(rows, schema=ANNOTATIONS)))
    log["value"] = comparable_values(log["answer"], wo.task_type, log["label"])
    record: dict[str, Any] = {
        "name": "Site",
        "country": "KE",
        "timezone": "Africa/Nairobi",
        "label_studio": {"url": "http://127.0.0.1:28301", "token_secret": "ls_token"},
        "capacity": {"annotators": 3, "hours_per_day": 6, "items_per_hour": {"image_classification": 60}},
        "task_types": ["image_classification"],
        "impact": {
            "hourly_wage": 300.0,
            "living_wage": 250.0,
            "currency": "KES",
            "last_audit": "2026-06-01",
            "audit_status": "passed",
        },
    }
    registry = PartnerRegistry.model_validate({"sites": [{"id": s, **record} for s in layout]})
    accepted = sorted(i for items in layout.values() for i in items if i not in gold.index)
    return QAInputs(
        log=log,
        gold=gold,
        gold_ids=list(gold.index),
        accepted=pa.array(accepted, pa.string()),
        assignments=pd.DataFrame(plan),
        projects={},
        registry=registry,
        registry_uri="s3://ws/registry/partner_sites.yaml",
    )


def test_build_report_passes_what_the_gate_judged() -> None:
    wo = make_work_order()
    inputs = crowd_inputs(wo)
    assessment, _ = assess_round(wo, inputs, 0)
    assert assessment.site_scores.loc["site-a", "n_gold"] == 3  # too few to judge
    judged = judgeable(assessment.site_scores)
    outcome = validate_with_pandas(
        assessment.consolidated,
        wo,
        site_scores=judged,
        alpha=assessment.alpha,
        accepted_items=inputs.accepted.to_pylist(),
        rework_items=assessment.rework["item_id"].astype(str).tolist(),
    )
    validated = Validated(outcome=outcome, passed=outcome.success, validation_uri="s3://x", data_docs_url="")
    report = build_report(wo, 0, inputs, assessment, validated)
    assert report.judged_sites is not None
    pd.testing.assert_frame_equal(report.judged_sites.loc[:, judged.columns], judged)
    assert report.min_gold_answers == MIN_GOLD_ANSWERS and report.rework_site == assessment.rework_site
    checks = {c.name: c for c in report_checks(report)}
    assert checks["Gold accuracy at site-a"].state == "not_judged"
    assert checks["Gold accuracy at site-a"].detail.startswith("not judged yet (3 of 10 gold answers)")
    assert checks["Gold accuracy at site-b"].state == "pass"
    assert bool([c for c in checks.values() if c.state == "fail"]) == (not validated.passed)


# --- 2. Leftover rework, per round -------------------------------------------------------------------------


def rework_frame() -> pd.DataFrame:
    """a1 (uncertain) and a2 (no majority) have a consensus that needs rework; x9 nobody answered."""
    answered = pd.DataFrame(
        {
            "item_id": pd.array(["a1", "a2"], dtype="str"),
            "reason": pd.array(["low_confidence", "no_majority"], dtype="str"),
            "low_confidence": [True, False],
            "no_majority": [False, True],
            "excluded_annotator": [False, False],
            "too_few_answers": [False, False],
            "confidence": [0.41, 0.65],
            "n_answers": [3, 3],
            "n_excluded": [0, 0],
            "top_share": [0.66, 0.33],
        }
    )
    return pd.concat([answered, unanswered_rework(["x9"])], ignore_index=True).loc[:, list(REWORK_COLUMNS)]


def rework_report(round_number: int, *, passed: bool = True, **qa: Any) -> QAReport:
    wo = make_work_order(**qa)
    report = make_report({"a": (12, 1.0)}, wo=wo)
    return replace(
        report,
        round=round_number,
        passed=passed,
        consolidated=consolidated(["a1", "a2", "a3"], needs_rework=["a1", "a2"]),
        rework=rework_frame(),
        rework_site="kisumu",
    )


def test_rework_with_rounds_left_goes_to_the_next_review_round() -> None:
    report = rework_report(0, max_rework_rounds=2)
    words = rework_words(report)
    assert words.title == "Rework queue: review round 1"
    assert words.intro.startswith("3 items are sent to review round 1 at kisumu (round 1 of at most 2).")
    assert (words.figure_label, words.figure_help) == ("Rework queue", "sent to review round 1")
    assert verdict_line(report) == (
        "Every check passed so far. 3 items go to review round 1 first; the results are delivered after QA of that "
        "round."
    )
    assert verdict_line(replace(report, passed=False)) == (
        "Some checks failed (marked FAIL below). The results are held until they pass or a QA lead approves them. "
        "3 items go to review round 1 first, and QA runs again after it."
    )


@pytest.mark.parametrize(("round_number", "max_rounds"), [(2, 2), (0, 0), (1, 1)])
def test_rework_in_the_last_round_is_not_delivered(round_number: int, max_rounds: int) -> None:
    report = rework_report(round_number, max_rework_rounds=max_rounds)
    assert report.last_round
    words = rework_words(report)
    assert words.title == "Not delivered: no rework rounds left"
    assert words.intro == (
        "3 items still need another look, but this was the last review round the work order allows "
        f"(max_rework_rounds = {max_rounds}). They are not reworked again and not delivered. The delivery leaves "
        "them out and counts them as excluded in its manifest and data card: 2 as failed_qa (QA has an answer, but "
        "it still needs rework) and 1 as no_answer (no answer that counts: never answered, or every answer "
        "removed)."
    )
    assert words.figure_label == "Not delivered"
    assert verdict_line(report) == (
        "Every check passed: the results can be delivered without these 3 items, which still need rework and are "
        "left out (no rework rounds are left)."
    )
    assert verdict_line(replace(report, passed=False)).endswith(
        "3 items still needing rework are left out of the delivery: no rework rounds are left."
    )
    html = render_qa_report(report)
    assert "<h2>Not delivered: no rework rounds left</h2>" in html and "<th>Why unresolved</th>" in html
    assert "<th>Left unresolved</th>" in html and "sent to review round" not in html
    assert "## Not delivered: no rework rounds left" in render_qa_markdown(report)


def test_the_last_round_counts_match_what_deliver_excludes() -> None:
    report = rework_report(2, max_rework_rounds=2)
    items = pd.DataFrame(
        {
            "item_id": ["a1", "a2", "a3", "x9"],
            "media_uri": [f"s3://m/{i}.jpg" for i in ["a1", "a2", "a3", "x9"]],
            "text": [None] * 4,
            "fields": [None] * 4,
            "record": ["{}"] * 4,
        }
    )
    excluded = build_deliverable(items, report.consolidated, "round-2").excluded
    counts = excluded["reason"].value_counts().to_dict()
    assert counts == {"failed_qa": 2, "no_answer": 1}
    assert f"{counts['failed_qa']} as failed_qa" in rework_words(report).intro
    assert f"{counts['no_answer']} as no_answer" in rework_words(report).intro


def test_no_rework() -> None:
    report = make_report({"a": (12, 1.0)})
    assert rework_words(report).intro == "No items need rework."
    assert verdict_line(report) == "Every check passed: the results can be delivered."
    assert "<p>No items need rework.</p>" in render_qa_report(report)


# --- 3. Gold accuracy over time ------------------------------------------------------------------------------


def answers(n: int, every: timedelta, sites_: list[str], *, start: pd.Timestamp = T0) -> pd.DataFrame:
    """``n`` gold answers, one every ``every``, sites taking turns; every third one wrong."""
    return pd.DataFrame(
        {
            "item_id": [f"g{k}" for k in range(n)],
            "site_id": [sites_[k % len(sites_)] for k in range(n)],
            "label": ["dog" if k % 3 == 2 else "cat" for k in range(n)],
            "skipped": [False] * n,
            "created_at": [start + every * k for k in range(n)],
        }
    )


def gold_of(log: pd.DataFrame) -> pd.Series:
    return pd.Series("cat", index=log["item_id"].to_numpy())


@pytest.mark.parametrize(
    ("n", "every", "n_sites", "freq"),
    [
        (60, timedelta(seconds=10), 1, "1min"),  # ten minutes, 6 answers a minute
        (60, timedelta(seconds=10), 3, "5min"),  # per minute only 2 per site: 5 minutes gives 10
        (300, timedelta(minutes=14), 1, "2h"),  # 70 hours: 35 periods of about 8 (hours: 70, too many)
        (4, timedelta(hours=20), 1, "7D"),  # 60 hours, 4 answers: nothing reaches 5 a point; the most per point
    ],
)
def test_trend_periods_follow_the_span_and_the_answers(n: int, every: timedelta, n_sites: int, freq: str) -> None:
    log = answers(n, every, [f"s{k}" for k in range(n_sites)])
    assert trend_bucket(log["created_at"], log["site_id"]) == freq
    trend = gold_accuracy_trend(log, gold_of(log))
    assert (trend["bucket_end"] - trend["bucket"] == pd.Timedelta(freq)).all()
    assert int(trend["n_gold"].sum()) == n


def test_the_time_axis_spans_the_periods_not_years() -> None:
    log = answers(30, timedelta(seconds=20), ["s0"])  # ten minutes
    trend = gold_accuracy_trend(log, gold_of(log))
    start, end = charts.trend_periods(trend)
    assert end.max() - start.min() == pd.Timedelta("10min")
    one = gold_accuracy_trend(log, gold_of(log), freq="1h")
    start, end = charts.trend_periods(one.drop(columns="bucket_end"))
    assert len(one) == 1 and end.max() - start.min() == pd.Timedelta("1h")
    for frame in (trend, one):
        assert charts.gold_trend_chart(frame, min_gold_accuracy=0.8).startswith(charts.PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("n", "every", "expected"),
    [
        (0, timedelta(seconds=30), "No gold answers have been given yet, so there is no trend to show."),
        (
            5,
            timedelta(minutes=3),
            "Only 5 gold answers so far, given between 08:00 and 08:12 UTC on 20 Nov 2026: too few to show a trend "
            f"over time (at least {MIN_TREND_GOLD} are needed). Each site's gold accuracy is in the Partner sites "
            "table above.",
        ),
        (
            30,
            timedelta(seconds=30),
            "All 30 gold answers were given between 08:00 and 08:14 UTC on 20 Nov 2026: too short a time to show a "
            "trend. Each site's gold accuracy is in the Partner sites table above.",
        ),
        (
            24,
            timedelta(hours=3),
            "The 24 gold answers were given between 20 Nov 2026 08:00 and 23 Nov 2026 05:00 UTC: too few for that "
            "much time to show a trend (a point needs about 5 gold answers from a site). Each site's gold accuracy "
            "is in the Partner sites table above.",
        ),
        (60, timedelta(minutes=5), None),  # five hours: 2-hour periods of about 7 answers a site
    ],
)
def test_trend_gap_in_words(n: int, every: timedelta, expected: str | None) -> None:
    log = answers(n, every, ["s0", "s1", "s2"])
    assert trend_gap(gold_accuracy_trend(log, gold_of(log) if n else pd.Series({"x": "cat"}))) == expected


def test_a_short_run_shows_a_sentence_and_a_long_one_a_chart() -> None:
    short = answers(30, timedelta(seconds=30), ["s0", "s1"])
    report = make_report({"s0": (15, 0.6), "s1": (15, 0.6)}, gold_trend=gold_accuracy_trend(short, gold_of(short)))
    html = render_qa_report(report)
    assert "too short a time to show a trend" in html
    assert "Line chart of gold accuracy over time" not in html
    long = answers(120, timedelta(minutes=20), ["s0", "s1"])
    report = replace(report, gold_trend=gold_accuracy_trend(long, gold_of(long)))
    html = render_qa_report(report)
    assert "Line chart of gold accuracy over time" in html and "A hollow point rests on fewer than 5" in html


# --- 4. A value below a threshold never reads as the threshold -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "threshold", "kw", "shown"),
    [
        (0.696, 0.7, {}, "69.6%"),
        (0.69999, 0.7, {}, "69.99%"),
        (0.699999, 0.7, {}, "69.99%"),  # cut, never rounded up to the threshold
        (0.7, 0.7, {}, "70%"),
        (14 / 20, 0.7, {}, "70%"),
        (0.704, 0.7, {}, "70%"),
        (0.7996, 0.8, {}, "79.96%"),
        (0.91667, 0.8, {}, "92%"),
        (0.91667, 0.8, {"digits": 1}, "91.7%"),
        (0.42, None, {}, "42%"),
        (float("nan"), 0.7, {}, "n/a"),
        (None, 0.7, {}, "n/a"),
        (0.499, 0.5, {"percent": False, "digits": 2}, "0.499"),
        (0.5, 0.5, {"percent": False, "digits": 2}, "0.50"),
        (0.78, 0.5, {"percent": False, "digits": 2}, "0.78"),
    ],
)
def test_format_value(value: float | None, threshold: float | None, kw: dict[str, Any], shown: str) -> None:
    assert charts.format_value(value, threshold, **kw) == shown


@pytest.mark.parametrize(
    ("threshold", "kw", "shown"),
    [(0.8, {}, "80%"), (0.725, {}, "72.5%"), (0.6, {"percent": False, "digits": 2}, "0.60")],
)
def test_format_threshold(threshold: float, kw: dict[str, Any], shown: str) -> None:
    assert charts.format_threshold(threshold, **kw) == shown


def test_a_shown_value_is_on_the_side_of_the_threshold_the_value_is() -> None:
    rng = random.Random(6)
    for _ in range(5000):
        threshold = rng.choice([0.5, 0.6, 0.7, 0.725, 0.8, 0.9])
        value = threshold + rng.choice([-1, 1]) * 10 ** rng.uniform(-7, -1)
        shown = float(charts.format_value(value, threshold).rstrip("%"))
        assert (shown < round(threshold * 100, 9)) == (value < threshold), (value, threshold, shown)


def test_exclusion_reason_near_the_threshold() -> None:
    scores = pd.DataFrame(
        {"n_gold": [250], "gold_accuracy": [0.696], "consensus_agreement": [0.7], "n_answers": [600]},
        index=pd.Index(["w-0123456789ab"], name="annotator"),
    )
    assert exclusion_reasons(scores, ["w-0123456789ab"], 0.7) == {
        "w-0123456789ab": "gold accuracy 69.6% (174 of 250 gold items right), below 70%"
    }
    scores = scores.assign(n_gold=[1], gold_accuracy=[1.0])
    reason = exclusion_reasons(scores, ["w-0123456789ab"], 0.7, estimated_accuracy=pd.Series({"w-0123456789ab": 0.3}))
    assert "(only 1 gold item, topped up" in reason["w-0123456789ab"]


def test_site_check_near_the_threshold() -> None:
    report = make_report({"a": (250, 0.696), "b": (250, 0.7)}, wo=make_work_order(min_gold_accuracy=0.7))
    checks = site_checks(report)
    assert (checks["a"].state, checks["a"].detail) == ("fail", "69.6% on 250 gold answers, threshold 70%")
    assert (checks["b"].state, checks["b"].detail) == ("pass", "70% on 250 gold answers, threshold 70%")


# --- 5. Layout ---------------------------------------------------------------------------------------------------


def test_pseudonyms_and_site_names_do_not_wrap() -> None:
    people = pd.DataFrame(
        {"site_id": ["nairobi-kibera"], "n_answers": [30], "n_gold": [12], "gold_accuracy": [0.9]},
        index=pd.Index(["w-19a8ee39a347"], name="annotator"),
    )
    report = make_report({"nairobi-kibera": (12, 0.9)}, annotator_scores=people)
    html = render_qa_report(report)
    assert "td.id { white-space: nowrap; }" in html
    assert '<td class="id"><code>w-19a8ee39a347</code></td>' in html
    assert '<td class="id">nairobi-kibera</td>' in html
    assert not re.search(r"<td>\s*<code>w-", html)
