"""Overdue batches and move plans: excluded sites, done work kept, moving twice never duplicating."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flows.annotate.progress import progress
from flows.annotate.sla import (
    MOVES,
    OVERDUE_COLUMNS,
    MoveError,
    apply_moves,
    current_batches,
    overdue_batches,
    plan_move,
)
from flows.core.schemas import ANNOTATIONS, ASSIGNMENTS

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DUE_NEW = NOW + timedelta(hours=8)


def plan(rows: list[tuple[str, str, str, int, bool]]) -> pa.Table:
    """(site, batch, item, slot, is_gold) rows of the split manifest."""
    return pa.Table.from_pylist(
        [
            {
                "item_id": i,
                "batch_id": b,
                "site_id": s,
                "project_key": f"wo--{s}--{b}",
                "slot": k,
                "is_gold": g,
                "round": 0,
            }
            for s, b, i, k, g in rows
        ],
        schema=ASSIGNMENTS,
    )


def log(rows: list[tuple[str, str, str, bool]], start: int = 0) -> pa.Table:
    """(site, batch, item, skipped) rows of the latest annotation versions."""
    t = NOW - timedelta(hours=1)
    return pa.Table.from_pylist(
        [
            {
                "item_id": i,
                "batch_id": b,
                "site_id": s,
                "project_id": 1,
                "task_id": n,
                "annotation_id": n,
                "annotator": "w-000000000001",
                "answer": None if skip else '{"label":"cat"}',
                "label": None if skip else "cat",
                "lead_time_s": 5.0,
                "created_at": t,
                "updated_at": t,
                "skipped": skip,
                "round": 0,
            }
            for n, (s, b, i, skip) in enumerate(rows, start=start)
        ],
        schema=ANNOTATIONS,
    )


# Two answers per task within a site. Batch b0 at A is late; b1 at B is on time.
PLAN = plan(
    [("A", "b0", i, k, i == "g1") for i in ("i1", "i2", "g1") for k in (0, 1)]
    + [("B", "b1", "i4", k, False) for k in (0, 1)]
)
LOG = log([("A", "b0", "i1", False), ("A", "b0", "i1", False), ("A", "b0", "i2", False), ("A", "b0", "g1", True)])
BATCHES = pd.DataFrame(
    {
        "batch_id": ["b0", "b1"],
        "site_id": ["A", "B"],
        "project_key": ["wo--A--b0", "wo--B--b1"],
        "n_tasks": [3, 1],
        "due_at": pd.to_datetime([NOW - timedelta(hours=2), NOW + timedelta(hours=6)], utc=True),
    }
)


def slots(table: pa.Table) -> list[tuple[str, int]]:
    return sorted(zip(table["item_id"].to_pylist(), table["slot"].to_pylist(), strict=True))


def overdue(assignments: pa.Table, answers: pa.Table, batches: pd.DataFrame, now: datetime = NOW) -> pd.DataFrame:
    return overdue_batches(batches, progress(assignments, answers, now).batches, now)


def test_overdue_batch_detected() -> None:
    late = overdue(PLAN, LOG, BATCHES)
    assert list(late.columns) == OVERDUE_COLUMNS
    assert late["batch_id"].tolist() == ["b0"]
    row = late.iloc[0]
    assert (row["answers_total"], row["answers_done"], row["answers_open"]) == (6, 3, 3)
    assert row["overdue_by"] == timedelta(hours=2)
    assert row["reason"] == (
        "batch b0 at A was due 2026-11-23 10:00 UTC and is 2.0 h late: 50% done, 3 of 6 answers open"
    )


def test_finished_or_not_yet_due_batches_are_not_overdue() -> None:
    finished = pa.concat_tables(
        [LOG, log([("A", "b0", "i2", False), ("A", "b0", "g1", False), ("A", "b0", "g1", False)], start=10)]
    )
    assert overdue(PLAN, finished, BATCHES).empty
    assert overdue(PLAN, LOG, BATCHES, now=NOW - timedelta(hours=3)).empty


def test_batch_without_progress_counts_as_not_started() -> None:
    batches = pd.concat(
        [
            BATCHES,
            pd.DataFrame(
                {
                    "batch_id": ["b9"],
                    "site_id": ["C"],
                    "project_key": ["k"],
                    "n_tasks": [4],
                    "due_at": pd.to_datetime([NOW], utc=True),
                }
            ),
        ]
    )
    late = overdue(PLAN, LOG, batches)
    assert late["batch_id"].tolist() == ["b0", "b9"]
    assert late.iloc[1]["reason"].endswith("no progress recorded")


def move(
    batch_id: str = "b0",
    site: str | None = None,
    *,
    moves: pa.Table | None = None,
    answers: pa.Table = LOG,
    eligible: dict[str, float] | None = None,
    assignments: pa.Table = PLAN,
    across: bool = False,
):  # type: ignore[no-untyped-def]
    row = overdue(apply_moves(assignments, moves), answers, current_batches(BATCHES, moves)).set_index("batch_id")
    batch = row.loc[batch_id] if batch_id in row.index else pd.Series({"batch_id": batch_id, "site_id": site or "A"})
    batch["batch_id"] = batch_id
    return plan_move(
        batch,
        assignments,
        answers,
        eligible if eligible is not None else {"A": 100, "B": 10, "C": 40},
        site,
        work_order_id="wo",
        moves=moves,
        overlap_across_sites=across,
        now=NOW,
        due_at=DUE_NEW,
    )


def test_move_plan_excludes_original_site_and_done_work() -> None:
    p = move()
    assert (p.from_site, p.to_site, p.move, p.project_key) == ("A", "C", 1, "wo--C--b0-m1")
    # i1 is done at A; i2 has one of two answers; g1 (gold) only a skip: its two slots move.
    assert slots(p.rows) == [("g1", 0), ("g1", 1), ("i2", 1)]
    assert p.rows.schema.equals(ASSIGNMENTS)
    assert set(p.rows["site_id"].to_pylist()) == {"C"}
    assert set(p.rows["project_key"].to_pylist()) == {"wo--C--b0-m1"}
    assert p.rows.filter(pc.equal(p.rows["item_id"], "g1"))["is_gold"].to_pylist() == [True, True]
    assert p.moves.schema.equals(MOVES) and p.moves.num_rows == 3
    assert set(p.moves["from_project_key"].to_pylist()) == {"wo--A--b0"}
    assert p.tasks.to_dict("records") == [
        {"item_id": "i2", "is_gold": False, "answers": 1},
        {"item_id": "g1", "is_gold": True, "answers": 2},
    ]
    assert p.max_annotations == 2 and p.n_answers == 3
    assert p.due_at == DUE_NEW
    assert "moved to C, the eligible site with the most spare capacity (40 answers)" in p.reason
    assert "was due 2026-11-23 10:00 UTC" in p.reason


def test_spare_capacity_counts_open_work_already_there() -> None:
    # B has 50 capacity but 2 answers open (b1): 48 spare beats C's 45.
    assert move(eligible={"A": 1000, "B": 50, "C": 45}).to_site == "B"
    assert move(eligible={"A": 1000, "B": 46, "C": 45}).to_site == "C"
    assert move(eligible={"B": 42, "C": 40}).to_site == "B"  # 40 spare each: a tie goes to the id sorting first
    assert "less than the moved work" in move(eligible={"C": 1}).reason


def test_moving_the_same_batch_again_moves_nothing() -> None:
    first = move()
    again = move(moves=first.moves)
    assert again.empty and again.to_site is None and again.project_key is None
    assert again.moves.num_rows == 0 and again.max_annotations == 0
    assert "nothing of batch b0 is left open at A" in again.reason


def test_moving_twice_never_duplicates_a_slot() -> None:
    first = move()
    # C answers g1 once, then stalls too; the rest moves on, never back to A, which held the batch.
    at_c = pa.concat_tables([LOG, log([("C", "b0", "g1", False)], start=50)])
    second = move(site="C", moves=first.moves, answers=at_c)
    assert (second.from_site, second.to_site, second.move, second.project_key) == ("C", "B", 2, "wo--B--b0-m2")
    assert slots(second.rows) == [("g1", 1), ("i2", 1)]
    history = pa.concat_tables([first.moves, second.moves])
    current = apply_moves(PLAN, history)
    b0 = current.filter(pc.equal(current["batch_id"], "b0"))
    assert slots(b0) == [("g1", 0), ("g1", 1), ("i1", 0), ("i1", 1), ("i2", 0), ("i2", 1)]  # each slot once
    where = {
        (i, s): site
        for i, s, site in zip(b0["item_id"].to_pylist(), b0["slot"].to_pylist(), b0["site_id"].to_pylist(), strict=True)
    }
    assert where == {("i1", 0): "A", ("i1", 1): "A", ("i2", 0): "A", ("i2", 1): "B", ("g1", 0): "C", ("g1", 1): "B"}
    # And a third attempt from C finds nothing left there.
    assert move(site="C", moves=history, answers=at_c).empty


def test_current_batches_follow_the_latest_move() -> None:
    first = move()
    now_batches = current_batches(BATCHES, first.moves)
    row = now_batches.set_index("batch_id").loc["b0"]
    assert (row["site_id"], row["project_key"], row["due_at"]) == ("C", "wo--C--b0-m1", pd.Timestamp(DUE_NEW))
    # Judged by its new due time, the moved batch is not overdue any more.
    assert overdue(apply_moves(PLAN, first.moves), LOG, now_batches).empty
    assert BATCHES.loc[0, "site_id"] == "A"  # the input frame is untouched


def test_apply_moves_is_idempotent_when_the_manifest_already_has_the_moved_rows() -> None:
    first = move()
    manifest_with_moved = pa.concat_tables([PLAN, first.rows])
    assert slots(apply_moves(manifest_with_moved, first.moves)) == slots(apply_moves(PLAN, first.moves))
    assert apply_moves(PLAN, None).equals(PLAN)
    assert apply_moves(PLAN, MOVES.empty_table()).equals(PLAN)


ACROSS = plan(
    [
        ("A", "b0", "x", 0, False),
        ("A", "b0", "y", 0, False),
        ("A", "b0", "g", 0, True),
        ("B", "b1", "x", 1, False),
        ("B", "b1", "g", 0, True),
        ("C", "b2", "y", 1, False),
    ]
)


def test_across_sites_never_a_site_that_holds_or_answered_the_items() -> None:
    nothing = ACROSS.slice(0, 0)
    answers = log([])
    assert (
        move(assignments=ACROSS, answers=answers, eligible={"B": 100, "C": 100, "D": 1}, across=True, site="A").to_site
        == "D"
    )
    # D answered y once in an earlier, since moved, round of work: it is passed over too.
    answered = log([("D", "bx", "y", False)])
    with pytest.raises(MoveError, match=r"B: holds or answered some of these items.*D: holds or answered"):
        move(assignments=ACROSS, answers=answered, eligible={"B": 100, "C": 100, "D": 1}, across=True, site="A")
    assert nothing.num_rows == 0


def test_across_sites_gold_does_not_block_a_site() -> None:
    only_gold_shared = plan(
        [("A", "b0", "x", 0, False), ("A", "b0", "g", 0, True), ("B", "b1", "g", 0, True), ("C", "b2", "x", 1, False)]
    )
    p = move(assignments=only_gold_shared, answers=log([]), eligible={"B": 10, "C": 100}, across=True, site="A")
    assert p.to_site == "B" and slots(p.rows) == [("g", 0), ("x", 0)]
    assert p.max_annotations == 1


def test_no_site_can_take_it() -> None:
    with pytest.raises(MoveError, match="A: the site the work moves away from"):
        move(eligible={"A": 100})
    with pytest.raises(MoveError, match="no eligible sites were given"):
        move(eligible={})


def test_inputs_are_not_mutated() -> None:
    before = (PLAN.to_pylist(), LOG.to_pylist(), BATCHES.copy())
    first = move()
    current_batches(BATCHES, first.moves)
    apply_moves(PLAN, first.moves)
    assert PLAN.to_pylist() == before[0] and LOG.to_pylist() == before[1]
    pd.testing.assert_frame_equal(BATCHES, before[2])
