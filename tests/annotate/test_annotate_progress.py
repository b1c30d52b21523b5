"""Progress counts on hand-built assignments and annotation logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from flows.annotate.progress import PROGRESS_COLUMNS, progress, progress_bar, progress_markdown, task_status
from flows.core.schemas import ANNOTATIONS, ASSIGNMENTS

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def at(hh: int, mm: int) -> datetime:
    return datetime(2026, 11, 23, hh, mm, tzinfo=UTC)


def plan(rows: list[tuple[str, str, str, int]]) -> pa.Table:
    """(site, batch, item, slot) rows of the assignment manifest."""
    return pa.Table.from_pylist(
        [
            {
                "item_id": i,
                "batch_id": b,
                "site_id": s,
                "project_key": f"wo--{s}--{b}",
                "slot": k,
                "is_gold": False,
                "round": 0,
            }
            for s, b, i, k in rows
        ],
        schema=ASSIGNMENTS,
    )


def log(rows: list[tuple[str, str, str, bool, datetime]]) -> pa.Table:
    """(site, batch, item, skipped, created_at) rows of the latest annotation versions."""
    return pa.Table.from_pylist(
        [
            {
                "item_id": i,
                "batch_id": b,
                "site_id": s,
                "project_id": 1,
                "task_id": n,
                "annotation_id": n,
                "annotator": f"w-{n:012x}",
                "answer": None if skip else '{"label":"cat"}',
                "label": None if skip else "cat",
                "lead_time_s": 5.0,
                "created_at": t,
                "updated_at": t,
                "skipped": skip,
                "round": 0,
            }
            for n, (s, b, i, skip, t) in enumerate(rows)
        ],
        schema=ANNOTATIONS,
    )


# Two sites, two answers per task within a site.
PLAN = plan(
    [
        (s, b, i, k)
        for s, b, items in [("A", "b0", ["i1", "i2", "i3"]), ("B", "b1", ["i4", "i5"])]
        for i in items
        for k in (0, 1)
    ]
)
LOG = log(
    [
        ("A", "b0", "i1", False, at(10, 30)),
        ("A", "b0", "i1", False, at(11, 30)),
        ("A", "b0", "i2", False, at(11, 45)),
        ("A", "b0", "i2", True, at(11, 50)),
        ("B", "b1", "i4", True, at(11, 0)),
        ("B", "b1", "i5", False, at(9, 0)),
        ("B", "b1", "i5", False, at(11, 10)),
        ("B", "b1", "i5", False, at(11, 59)),  # a third answer to a two-slot task: counts once
    ]
)


def as_dict(frame: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in frame.to_dict("records")}


def test_task_states() -> None:
    status = task_status(PLAN, LOG).set_index("item_id")
    assert status["state"].to_dict() == {
        "i1": "done",
        "i2": "in_progress",
        "i3": "not_started",
        "i4": "skipped",
        "i5": "done",
    }
    assert status["done"].to_dict() == {"i1": 2, "i2": 1, "i3": 0, "i4": 0, "i5": 2}
    assert status["skipped_open"].to_dict() == {"i1": 0, "i2": 1, "i3": 0, "i4": 1, "i5": 0}


def test_work_order_counts() -> None:
    p = progress(PLAN, LOG, NOW, work_order_id="wo")
    assert list(p.work_order.columns) == ["work_order_id", *PROGRESS_COLUMNS]
    wo = p.work_order.iloc[0].to_dict()
    expected = {
        "work_order_id": "wo",
        "tasks_total": 5,
        "tasks_done": 2,
        "tasks_in_progress": 1,
        "tasks_skipped": 1,
        "tasks_not_started": 1,
        "items_total": 5,
        "items_done": 2,
        "answers_total": 10,
        "answers_done": 5,
        "answers_open": 5,
        "answers_skipped": 2,
        "percent_done": 50.0,
        "per_hour_last_hour": 4,
    }
    assert {k: wo[k] for k in expected} == expected
    assert wo["per_hour_avg"] == pytest.approx(6 / 3)  # 6 answers since 09:00
    assert wo["first_answer_at"] == pd.Timestamp(at(9, 0))
    assert wo["last_answer_at"] == pd.Timestamp(at(11, 59))
    assert wo["eta"] == pd.Timestamp(NOW + timedelta(hours=2.5))  # 5 open at 2/h


def test_site_and_batch_counts() -> None:
    p = progress(PLAN, LOG, NOW)
    sites = as_dict(p.sites, "site_id")
    assert {
        k: sites["A"][k]
        for k in (
            "tasks_total",
            "tasks_done",
            "tasks_in_progress",
            "tasks_not_started",
            "answers_done",
            "answers_open",
            "answers_skipped",
            "per_hour_last_hour",
        )
    } == {
        "tasks_total": 3,
        "tasks_done": 1,
        "tasks_in_progress": 1,
        "tasks_not_started": 1,
        "answers_done": 3,
        "answers_open": 3,
        "answers_skipped": 1,
        "per_hour_last_hour": 2,
    }
    assert sites["A"]["per_hour_avg"] == pytest.approx(3 / 1.5)
    assert sites["A"]["eta"] == pd.Timestamp(at(13, 30))
    assert sites["B"]["tasks_skipped"] == 1 and sites["B"]["answers_done"] == 2
    assert sites["B"]["per_hour_avg"] == pytest.approx(1.0)
    batches = as_dict(p.batches, "batch_id")
    assert batches["b0"]["sites"] == "A" and batches["b1"]["sites"] == "B"
    assert batches["b0"]["answers_done"] == 3 and batches["b1"]["percent_done"] == 50.0
    assert list(p.batches.columns) == ["batch_id", "sites", *PROGRESS_COLUMNS]


def test_average_rate_is_over_at_least_one_hour() -> None:
    p = progress(PLAN, log([("A", "b0", "i1", False, NOW - timedelta(minutes=10))]), NOW)
    assert p.work_order.iloc[0]["per_hour_avg"] == pytest.approx(1.0)
    assert p.work_order.iloc[0]["per_hour_last_hour"] == 1


def test_answers_after_now_are_not_in_the_last_hour() -> None:
    p = progress(PLAN, log([("A", "b0", "i1", False, NOW + timedelta(minutes=1))]), NOW)
    assert p.work_order.iloc[0]["per_hour_last_hour"] == 0


def test_items_across_sites_done_only_when_every_site_is_done() -> None:
    across = plan([("A", "b0", "x", 0), ("B", "b1", "x", 1), ("A", "b0", "y", 0), ("B", "b1", "y", 1)])
    answers = log(
        [("A", "b0", "x", False, at(11, 0)), ("A", "b0", "y", False, at(11, 0)), ("B", "b1", "y", False, at(11, 0))]
    )
    p = progress(across, answers, NOW)
    wo = p.work_order.iloc[0]
    assert (wo["tasks_total"], wo["tasks_done"], wo["items_total"], wo["items_done"]) == (4, 3, 2, 1)
    sites = as_dict(p.sites, "site_id")
    assert (sites["A"]["items_done"], sites["B"]["items_done"]) == (2, 1)


def test_nothing_answered_yet() -> None:
    p = progress(PLAN, LOG.slice(0, 0), NOW, work_order_id="wo")
    wo = p.work_order.iloc[0]
    assert (wo["tasks_not_started"], wo["answers_done"], wo["percent_done"], wo["per_hour_avg"]) == (5, 0, 0.0, 0.0)
    assert pd.isna(wo["first_answer_at"]) and pd.isna(wo["eta"])


def test_no_assignments_at_all() -> None:
    p = progress(PLAN.slice(0, 0), LOG.slice(0, 0), NOW, work_order_id="wo")
    assert p.work_order.iloc[0]["tasks_total"] == 0
    assert p.sites.empty and p.batches.empty
    assert "0 of 0 answers" in progress_markdown(p)


def test_finished_work_has_eta_now() -> None:
    done = log([("A", "b0", i, False, at(11, 0)) for i in ("i1", "i2", "i3") for _ in (0, 1)])
    p = progress(PLAN.filter(pa.compute.equal(PLAN["site_id"], "A")), done, NOW)
    assert p.work_order.iloc[0]["percent_done"] == 100.0
    assert p.work_order.iloc[0]["eta"] == pd.Timestamp(NOW)


def test_accepts_pandas_frames_and_rejects_missing_columns() -> None:
    p = progress(PLAN.to_pandas(), LOG.to_pandas(), NOW)
    assert int(p.work_order.iloc[0]["answers_done"]) == 5
    with pytest.raises(ValueError, match="assignments lacks column"):
        progress(PLAN.drop_columns(["slot"]), LOG, NOW)


@pytest.mark.parametrize(
    ("percent", "bar"),
    [(0, "░" * 10), (50, "█" * 5 + "░" * 5), (99.9, "█" * 9 + "░"), (100, "█" * 10), (140, "█" * 10), (-5, "░" * 10)],
)
def test_progress_bar(percent: float, bar: str) -> None:
    assert progress_bar(percent, 10) == bar


def test_markdown() -> None:
    text = progress_markdown(progress(PLAN, LOG, NOW, work_order_id="wo"), max_batches=1)
    assert text.startswith("### Annotation progress of wo")
    assert f"`{'█' * 10}{'░' * 10}` **50.0%**" in text
    assert "5 of 10 answers, 2 of 5 items complete" in text
    assert "| A | `█████░░░░░` 50.0% | 3 / 6 | 1 | 1 | 1 | 0 | 2 | 2.0 | 2026-11-23 13:30 |" in text
    assert "… and 1 more batches" in text
