"""Allocation: capacity, overlap, gold, determinism, due times and the explanations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from flows.core.models import PartnerRegistry, PartnerSite, TaskType, WorkOrder
from flows.core.schemas import ASSIGNMENTS
from flows.split.allocate import (
    DEFAULT_ITEMS_PER_HOUR,
    MAX_BATCH_TASKS,
    AllocationError,
    Plan,
    apportion,
    batch_size,
    gold_task_count,
    plan_split,
    site_capacity,
)
from flows.split.eligibility import eligible_sites

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)


def make_work_order(**over: Any) -> WorkOrder:
    spec: dict[str, Any] = {
        "id": "acme-0042",
        "client_id": "acme",
        "source": {"uri": "s3://client-in/batch-1", "format": "csv"},
        "task_type": "image_classification",
        "columns": {"media_uri": "image_uri"},
        "label_schema": {"classes": ["cat", "dog"]},
        "overlap": 3,
        "gold": {"rate": 0.0},
        "deadline": NOW + timedelta(days=5),
        "price_per_item": 0.1,
        "pay_per_task": 0.02,
        "delivery": {"uri": "s3://client-out/acme-0042"},
        "seed": 7,
    }
    spec.update(over)
    return WorkOrder.model_validate(spec)


def make_site(
    site_id: str,
    *,
    annotators: int = 10,
    hours: float = 8.0,
    iph: float | None = 100.0,
    tz: str = "UTC",
    shift: int = 8,
    gold_accuracy: float | None = None,
    eligible: bool = True,
) -> PartnerSite:
    return PartnerSite.model_validate(
        {
            "id": site_id,
            "name": site_id.title(),
            "country": "KE",
            "timezone": tz,
            "shift_start_hour": shift,
            "label_studio": {"url": "http://127.0.0.1:18301", "token_secret": "ls_token_x"},
            "capacity": {
                "annotators": annotators,
                "hours_per_day": hours,
                "items_per_hour": {} if iph is None else {"image_classification": iph},
            },
            "task_types": ["image_classification"],
            "impact": {
                "hourly_wage": 5.0 if eligible else 1.0,
                "living_wage": 4.0,
                "last_audit": "2026-06-01",
                "audit_status": "passed",
            },
            "gold_accuracy": gold_accuracy,
        }
    )


def make_items(n: int, prefix: str = "it") -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"{prefix}{i:05d}" for i in range(n)]})


def make_gold(n: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"gold{i:04d}" for i in range(n)], "answer": ["cat"] * n})


def rows_of(plan: Plan) -> pd.DataFrame:
    return plan.assignments.to_pandas()


# --- Building blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weights", "caps", "expected"),
    [
        (10, [1, 1, 1], [10, 10, 10], [4, 3, 3]),
        (10, [3, 1], [5, 10], [5, 5]),
        (9, [1, 2], [9, 9], [3, 6]),
        (7, [0, 0], [3, 4], [3, 4]),
        (0, [1, 1], [0, 5], [0, 0]),
        (5, [1, 1, 1], [0, 10, 10], [0, 3, 2]),
        (6, [1, 100], [6, 3], [3, 3]),
    ],
)
def test_apportion_hand_computed(total: int, weights: list[float], caps: list[int], expected: list[int]) -> None:
    result = apportion(total, np.array(weights, dtype=float), np.array(caps))
    assert result.tolist() == expected


def test_apportion_refuses_when_caps_are_too_small() -> None:
    with pytest.raises(ValueError, match="caps add up to 4, less than 5"):
        apportion(5, np.array([1.0, 1.0]), np.array([2, 2]))


@pytest.mark.parametrize(
    ("n_real", "rate", "expected"),
    [(1000, 0.05, 53), (100, 0.05, 5), (19, 0.05, 1), (10, 0.5, 10), (1000, 0.0, 0), (0, 0.1, 0), (9, 0.1, 1)],
)
def test_gold_task_count_makes_gold_the_rate_of_all_tasks(n_real: int, rate: float, expected: int) -> None:
    assert gold_task_count(n_real, rate) == expected


@pytest.mark.parametrize(
    ("iph", "hours", "expected"),
    [(10.0, 6.0, 60), (150.0, 7.5, MAX_BATCH_TASKS), (0.1, 1.0, 1), (None, 8.0, 8 * 120)],
)
def test_batch_size_is_one_annotator_shift_capped(iph: float | None, hours: float, expected: int) -> None:
    assert DEFAULT_ITEMS_PER_HOUR[TaskType.IMAGE_CLASSIFICATION] == 120
    assert batch_size(make_site("site", iph=iph, hours=hours), TaskType.IMAGE_CLASSIFICATION) == expected


@pytest.mark.parametrize(
    ("site", "now", "deadline", "hours", "answers"),
    [
        (make_site("site", annotators=10, iph=10), NOW, NOW + timedelta(days=2), 16.0, 1600),
        (
            make_site("site", annotators=10, iph=10),
            NOW + timedelta(hours=12),
            NOW + timedelta(days=2, hours=10),
            14.0,
            1400,
        ),
        # A night shift from 22:00: yesterday's is still running at midnight (6 h left), today's is
        # cut by the deadline after 2 h.
        (make_site("site", annotators=10, iph=10, shift=22), NOW, NOW + timedelta(days=1), 8.0, 800),
        # 08:00 in Nairobi is 05:00 UTC: from 06:00 UTC to 12:30 UTC is 6.5 h of shift.
        (
            make_site("site", annotators=10, iph=10, tz="Africa/Nairobi"),
            NOW + timedelta(hours=6),
            NOW + timedelta(hours=12, minutes=30),
            6.5,
            650,
        ),
        (make_site("site", annotators=3, iph=10), NOW, NOW - timedelta(days=1), 0.0, 0),
    ],
)
def test_site_capacity_hand_computed(
    site: PartnerSite, now: datetime, deadline: datetime, hours: float, answers: int
) -> None:
    capacity = site_capacity(site, TaskType.IMAGE_CLASSIFICATION, now, deadline)
    assert capacity.shift_hours == pytest.approx(hours)
    assert capacity.answers == answers


def test_site_capacity_counts_shift_ends() -> None:
    capacity = site_capacity(make_site("site"), TaskType.IMAGE_CLASSIFICATION, NOW, NOW + timedelta(days=2))
    assert capacity.shift_ends == (datetime(2026, 11, 23, 16, tzinfo=UTC), datetime(2026, 11, 24, 16, tzinfo=UTC))
    assert "10 annotators x 100 answers/h (measured) x 16.0 shift hours" in capacity.formula


# --- Overlap -------------------------------------------------------------------------------------


def test_overlap_within_a_site_is_one_task_with_k_slots() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi"), make_site("dadaab")])
    plan = plan_split(make_work_order(overlap=3), registry, make_items(500), None, NOW)
    rows = rows_of(plan)
    per_item = rows.groupby("item_id").agg(
        n=("slot", "size"), slots=("slot", lambda s: tuple(sorted(s))), projects=("project_key", "nunique")
    )
    assert len(per_item) == 500
    assert (per_item["n"] == 3).all()
    assert (per_item["slots"] == (0, 1, 2)).all()
    assert (per_item["projects"] == 1).all()
    assert plan.max_annotations == 3
    assert (plan.batches["max_annotations"] == 3).all()
    assert (plan.batches["n_answers"] == plan.batches["n_tasks"] * 3).all()


def test_overlap_across_sites_puts_each_answer_at_a_different_site() -> None:
    registry = PartnerRegistry(sites=[make_site(f"site-{i}", annotators=3 + i) for i in range(4)])
    plan = plan_split(make_work_order(overlap=3, overlap_across_sites=True), registry, make_items(700), None, NOW)
    rows = rows_of(plan)
    per_item = rows.groupby("item_id").agg(
        n=("slot", "size"), sites=("site_id", "nunique"), slots=("slot", lambda s: tuple(sorted(s)))
    )
    assert len(per_item) == 700
    assert (per_item["n"] == 3).all()
    assert (per_item["sites"] == 3).all()
    assert (per_item["slots"] == (0, 1, 2)).all()
    assert plan.max_annotations == 1
    assert (plan.batches["n_answers"] == plan.batches["n_tasks"]).all()


def test_overlap_across_sites_caps_a_site_at_one_answer_per_item() -> None:
    registry = PartnerRegistry(
        sites=[
            make_site("big", annotators=50, gold_accuracy=0.95),
            make_site("site-a", annotators=2),
            make_site("site-b"),
        ]
    )
    plan = plan_split(make_work_order(overlap=2, overlap_across_sites=True), registry, make_items(100), None, NOW)
    rows = rows_of(plan)
    assert (rows["site_id"] == "big").sum() == 100
    assert rows.groupby("item_id")["site_id"].nunique().eq(2).all()
    why = plan.sites.set_index("site_id").loc["big", "why"]
    assert "capped at one answer per item (100 items)" in why


def test_overlap_across_sites_needs_k_eligible_sites() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi"), make_site("dadaab"), make_site("haiti", eligible=False)])
    with pytest.raises(AllocationError) as err:
        plan_split(make_work_order(overlap=3, overlap_across_sites=True), registry, make_items(10), None, NOW)
    assert str(err.value) == (
        "Work order acme-0042 wants its 3 answers per item from 3 different sites (overlap_across_sites), "
        "but only 2 sites are eligible: nairobi, dadaab. Lower the overlap, allow answers from one site, "
        "or add sites."
    )


# --- Eligibility and capacity --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"impact": {"hourly_wage": 1.0}}, "below the local living wage"),
        ({"impact": {"last_audit": "2024-01-01"}}, "audit lapsed"),
        ({"impact": {"audit_status": "failed"}}, "audit status is failed"),
        ({"impact": {"suspended": True}}, "site is suspended"),
        ({"task_types": ["text_classification"]}, "lacks the image_classification skill"),
        ({"capacity": {"annotators": 0}}, "zero capacity"),
        ({"capacity": {"annotators": 2}}, "fewer than the overlap of 3"),
    ],
)
def test_ineligible_sites_are_never_chosen(bad: dict[str, Any], reason: str) -> None:
    spec = make_site("bad", annotators=100, gold_accuracy=1.0).model_dump(mode="json")
    for key, value in bad.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    registry = PartnerRegistry(sites=[PartnerSite.model_validate(spec), make_site("good")])
    plan = plan_split(make_work_order(), registry, make_items(300), None, NOW)
    assert set(rows_of(plan)["site_id"]) == {"good"}
    assert reason in plan.passed_over["bad"]
    assert plan.sites["site_id"].tolist() == ["good"]


def test_no_eligible_site_is_an_error_listing_the_reasons() -> None:
    registry = PartnerRegistry(sites=[make_site("haiti", eligible=False)])
    with pytest.raises(AllocationError, match=r"No partner site is eligible .* haiti: pays 1.00 USD/h"):
        plan_split(make_work_order(), registry, make_items(10), None, NOW)


def test_impossible_deadline_names_the_shortfall() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi", annotators=10, iph=10)])
    work_order = make_work_order(deadline=NOW + timedelta(days=1))
    with pytest.raises(AllocationError) as err:
        plan_split(work_order, registry, make_items(300), None, NOW)
    assert str(err.value) == (
        "Work order acme-0042 cannot be done by 2026-11-24 00:00 UTC: it needs 900 answers "
        "(300 items x overlap 3 = 900, plus 0 gold), but the eligible sites can give 800 before the deadline: "
        "nairobi 800 (10 annotators x 10 answers/h (measured) x 8.0 shift hours before the deadline "
        "(1.0 shifts of 8 h)). Short by 100 answers. Extend the deadline, lower the overlap, or add sites."
    )


def test_shortfall_counts_gold_too() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi", annotators=10, iph=10)])
    work_order = make_work_order(deadline=NOW + timedelta(days=1), gold={"rate": 0.05})
    # 300 tasks need round(0.05 x 300 / 0.95) = 16 gold tasks: 316 x 3 = 948 answers against 800.
    with pytest.raises(AllocationError, match=r"needs 948 answers .* plus 48 gold\).* Short by 148 answers"):
        plan_split(work_order, registry, make_items(300), make_gold(50), NOW)


def test_deadline_already_passed_is_a_shortfall() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi")])
    with pytest.raises(AllocationError, match="can give 0 before the deadline"):
        plan_split(make_work_order(deadline=NOW - timedelta(hours=1)), registry, make_items(5), None, NOW)


def test_full_site_is_filled_and_the_rest_goes_elsewhere() -> None:
    # One shift: small can give 300 answers, big 3,000. Quality makes their weights equal (300 x 1.0 vs
    # 3,000 x 0.1), so small would get 500 of 1,000: it is held at 300 and big takes the other 700.
    registry = PartnerRegistry(
        sites=[
            make_site("small", annotators=1, iph=30, hours=10, gold_accuracy=1.0),
            make_site("big", annotators=10, iph=30, hours=10, gold_accuracy=0.1),
        ]
    )
    work_order = make_work_order(overlap=1, deadline=NOW + timedelta(days=1))
    plan = plan_split(work_order, registry, make_items(1000), None, NOW)
    sites = plan.sites.set_index("site_id")
    assert sites.loc["small", "allocated_answers"] == 300
    assert sites.loc["big", "allocated_answers"] == 700
    assert sites.loc["small", "utilisation"] == pytest.approx(1.0)
    assert sites.loc["small", "why"] == "30% of the work: filled to its capacity before the deadline"
    assert sites.loc["big", "why"].endswith("more because other sites were full")


@pytest.mark.parametrize(
    ("accuracies", "shares", "source"),
    [
        ((0.9, 0.6), (600, 400), "measured gold accuracy"),
        ((0.9, None), (500, 500), "prior: mean of measured sites"),
        ((None, None), (500, 500), "prior: no site measured yet"),
    ],
)
def test_shares_follow_capacity_times_quality(
    accuracies: tuple[float | None, float | None], shares: tuple[int, int], source: str
) -> None:
    registry = PartnerRegistry(
        sites=[make_site("site-a", gold_accuracy=accuracies[0]), make_site("site-b", gold_accuracy=accuracies[1])]
    )
    plan = plan_split(make_work_order(overlap=1), registry, make_items(1000), None, NOW)
    sites = plan.sites.set_index("site_id")
    assert (sites.loc["site-a", "allocated_answers"], sites.loc["site-b", "allocated_answers"]) == shares
    assert sites.loc["site-b", "quality_source"] == source
    assert sites.loc["site-a", "why"].startswith(
        f"{shares[0] / 1000:.0%} of the work, in proportion to capacity x quality"
    )


def test_site_without_shift_before_the_deadline_is_passed_over() -> None:
    # The deadline falls at 05:00 UTC: the UTC site's 08:00 shift never starts, Nairobi's (05:00 UTC) neither,
    # but Auckland's shift (08:00 NZDT = 19:00 UTC the day before) is running.
    registry = PartnerRegistry(sites=[make_site("utc"), make_site("auckland", tz="Pacific/Auckland")])
    work_order = make_work_order(overlap=1, deadline=NOW + timedelta(hours=5))
    plan = plan_split(work_order, registry, make_items(100), None, NOW)
    assert set(rows_of(plan)["site_id"]) == {"auckland"}
    assert plan.passed_over == {"utc": "no shift hours between now and the deadline"}


def test_capacity_is_never_exceeded_over_random_registries() -> None:
    zones = ["UTC", "Africa/Nairobi", "America/Port-au-Prince", "Asia/Karachi", "Pacific/Auckland"]
    feasible = infeasible = 0
    for trial in range(60):
        rng = np.random.default_rng(trial)
        sites = [
            make_site(
                f"site-{i}",
                annotators=int(rng.integers(0, 30)),
                hours=float(rng.choice([2.0, 6.0, 7.5, 10.0])),
                iph=float(rng.uniform(5, 200)),
                tz=str(rng.choice(zones)),
                shift=int(rng.integers(0, 24)),
                gold_accuracy=None if rng.random() < 0.4 else float(rng.uniform(0.5, 1.0)),
                eligible=bool(rng.random() > 0.2),
            )
            for i in range(int(rng.integers(1, 7)))
        ]
        k = int(rng.integers(1, 5))
        work_order = make_work_order(
            overlap=k,
            overlap_across_sites=bool(rng.random() < 0.5),
            gold={"rate": float(rng.choice([0.0, 0.05, 0.2, 0.5]))},
            deadline=NOW + timedelta(hours=float(rng.uniform(6, 240))),
            seed=trial,
        )
        n_items = int(rng.integers(1, 3000))
        registry = PartnerRegistry(sites=sites)
        try:
            plan = plan_split(work_order, registry, make_items(n_items), make_gold(600), NOW + timedelta(hours=3))
        except AllocationError as err:
            assert str(err).startswith("Work order acme-0042") or str(err).startswith("No partner site")
            infeasible += 1
            continue
        feasible += 1
        rows = rows_of(plan)
        eligible, _ = eligible_sites(registry, work_order, NOW.date())
        used = rows.groupby("site_id").size()
        assert set(used.index) <= {s.id for s in eligible}
        for site_id, n in used.items():
            site = registry.site(str(site_id))
            assert n <= site_capacity(site, work_order.task_type, NOW + timedelta(hours=3), work_order.deadline).answers
        real = rows[~rows["is_gold"]]
        assert real["item_id"].nunique() == n_items
        assert (real.groupby("item_id").size() == k).all()
        if work_order.overlap_across_sites:
            assert (real.groupby("item_id")["site_id"].nunique() == k).all()
        assert not rows.duplicated(["project_key", "item_id", "slot"]).any()
        assert (plan.batches["n_tasks"] <= MAX_BATCH_TASKS).all()
        assert (plan.batches["due_at"] <= work_order.deadline).all()
        gold_tasks = gold_task_count(n_items * (k if work_order.overlap_across_sites else 1), work_order.gold.rate)
        assert plan.n_gold_tasks == gold_tasks
        assert int(rows["is_gold"].sum()) == gold_tasks * plan.max_annotations
    assert feasible >= 30 and infeasible >= 3, (feasible, infeasible)


# --- Gold ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "across", "gold_rows", "real_rows"),
    [
        # 1,000 items x 3 in one task each: 1,000 tasks, round(0.1 x 1000 / 0.9) = 111 gold tasks x 3 slots.
        (0.1, False, 333, 3000),
        # 3,000 single-answer tasks: round(0.1 x 3000 / 0.9) = 333 gold tasks.
        (0.1, True, 333, 3000),
        (0.05, False, 53 * 3, 3000),
        (0.0, False, 0, 3000),
    ],
)
def test_gold_is_mixed_in_at_exactly_the_rate(rate: float, across: bool, gold_rows: int, real_rows: int) -> None:
    registry = PartnerRegistry(sites=[make_site(f"site{i}", annotators=20) for i in range(3)])
    work_order = make_work_order(overlap=3, overlap_across_sites=across, gold={"rate": rate})
    plan = plan_split(work_order, registry, make_items(1000), make_gold(200), NOW)
    rows = rows_of(plan)
    assert int(rows["is_gold"].sum()) == gold_rows
    assert int((~rows["is_gold"]).sum()) == real_rows
    assert set(rows.loc[rows["is_gold"], "item_id"]) <= set(make_gold(200)["item_id"])
    assert int(plan.batches["n_gold"].sum()) * plan.max_annotations == gold_rows


def test_gold_is_spread_and_shuffled_within_batches() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi", iph=20), make_site("dadaab", iph=20)])
    work_order = make_work_order(overlap=1, gold={"rate": 0.1})
    plan = plan_split(work_order, registry, make_items(2000), make_gold(50), NOW)
    tasks = rows_of(plan)
    # Every batch holds gold, at most once per gold item, and the counts at a site differ by at most one.
    per_batch = tasks.groupby("batch_id")["is_gold"].sum()
    assert (per_batch > 0).all()
    for _, batches in plan.batches.groupby("site_id"):
        assert batches["n_gold"].max() - batches["n_gold"].min() <= 1
    gold = tasks[tasks["is_gold"]]
    assert not gold.duplicated(["project_key", "item_id"]).any()
    # Gold sits at random positions, not in a block at the start or end of the batch.
    first = tasks[tasks["batch_id"] == plan.batches["batch_id"].iloc[0]]["is_gold"].to_numpy()
    positions = np.flatnonzero(first)
    assert positions.min() < len(first) // 4 and positions.max() > 3 * len(first) // 4
    assert len(np.unique(np.diff(positions))) > 1


def test_gold_set_too_small_for_a_batch_is_an_error() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi", iph=10)])
    work_order = make_work_order(overlap=1, gold={"rate": 0.2})
    with pytest.raises(AllocationError, match="The gold set has 3 items, but a batch at nairobi needs 16 distinct"):
        plan_split(work_order, registry, make_items(1000), make_gold(3), NOW)


def test_no_gold_set_means_no_gold_and_a_note() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi")])
    plan = plan_split(make_work_order(gold={"rate": 0.05}), registry, make_items(100), None, NOW)
    assert plan.n_gold_tasks == 0
    assert plan.notes == (
        "No gold set: the gold rate of 5% is not applied, and annotator quality cannot be measured on gold.",
    )


def test_items_that_are_gold_are_allocated_as_gold_only() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi")])
    items = pd.concat([make_items(100), make_gold(2)], ignore_index=True)
    plan = plan_split(make_work_order(overlap=1, gold={"rate": 0.1}), registry, items, make_gold(20), NOW)
    rows = rows_of(plan)
    assert int((~rows["is_gold"]).sum()) == 100
    assert not rows.loc[~rows["is_gold"], "item_id"].str.startswith("gold").any()
    assert plan.notes == ("2 items are also gold items and are allocated as gold only.",)


# --- Inputs, determinism, shape ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "gold", "message"),
    [
        (pd.DataFrame({"item_id": ["a", "b", "a"]}), None, "items repeats item ids, e.g. a"),
        (pd.DataFrame({"id": ["a"]}), None, "items has no item_id column"),
        (pd.DataFrame({"item_id": ["a", None]}), None, "items has 1 rows without an item_id"),
        (pd.DataFrame({"item_id": ["g1"]}), pd.DataFrame({"item_id": ["g1"], "answer": ["x"]}), "no items"),
        (pd.DataFrame({"item_id": ["a"]}), pd.DataFrame({"item_id": ["g", "g"], "answer": ["x", "y"]}), "gold repeats"),
    ],
)
def test_bad_inputs_are_refused(items: pd.DataFrame, gold: pd.DataFrame | None, message: str) -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi")])
    with pytest.raises(AllocationError, match=message):
        plan_split(make_work_order(), registry, items, gold, NOW)


def test_same_inputs_and_seed_give_the_same_plan() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi", gold_accuracy=0.9), make_site("dadaab", annotators=7)])
    work_order = make_work_order(gold={"rate": 0.05})
    first = plan_split(work_order, registry, make_items(1500), make_gold(100), NOW)
    again = plan_split(work_order, registry, make_items(1500), make_gold(100), NOW)
    from_arrow = plan_split(
        work_order, registry, pa.Table.from_pandas(make_items(1500)), pa.Table.from_pandas(make_gold(100)), NOW
    )
    for other in (again, from_arrow):
        assert first.assignments.equals(other.assignments)
        pd.testing.assert_frame_equal(first.batches, other.batches)
        pd.testing.assert_frame_equal(first.sites, other.sites)
        assert first.passed_over == other.passed_over
    reseeded = plan_split(work_order.model_copy(update={"seed": 8}), registry, make_items(1500), make_gold(100), NOW)
    assert not first.assignments.equals(reseeded.assignments)
    assert reseeded.assignments.num_rows == first.assignments.num_rows


def test_inputs_are_not_mutated() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi")])
    items, gold = make_items(50), make_gold(10)
    before_items, before_gold = items.copy(), gold.copy()
    plan_split(make_work_order(gold={"rate": 0.1}), registry, items, gold, NOW)
    pd.testing.assert_frame_equal(items, before_items)
    pd.testing.assert_frame_equal(gold, before_gold)


def test_plan_shape_keys_and_schema() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi", iph=10), make_site("haiti", eligible=False)])
    plan = plan_split(make_work_order(overlap=2), registry, make_items(200), None, NOW, round_number=1)
    assert plan.assignments.schema == ASSIGNMENTS
    assert plan.batches["batch_id"].tolist() == ["r1-b0000", "r1-b0001", "r1-b0002"]
    assert plan.batches["project_key"].tolist() == [f"acme-0042--nairobi--r1-b000{i}" for i in range(3)]
    assert plan.batches["n_tasks"].tolist() == [67, 67, 66]
    assert rows_of(plan)["round"].eq(1).all()
    assert plan.sites_used == ["nairobi"]
    assert plan.project_rows("acme-0042--nairobi--r1-b0002").num_rows == 66 * 2
    summary = plan.summary_markdown()
    assert "| nairobi | 4,000 | 400 | 10% |" in summary
    assert "- haiti: pays 1.00 USD/h, below the local living wage of 4.00 USD/h" in summary


def test_batches_are_due_at_the_end_of_the_shift_that_finishes_them() -> None:
    # 2 annotators x 10 answers/h: 160 answers a shift, 80-task batches, so two batches a day.
    registry = PartnerRegistry(sites=[make_site("nairobi", annotators=2, iph=10)])
    now = NOW + timedelta(hours=8)
    plan = plan_split(make_work_order(overlap=1), registry, make_items(400), None, now)
    assert plan.batches["n_tasks"].tolist() == [80] * 5
    due = [ts.to_pydatetime() for ts in plan.batches["due_at"]]
    day = datetime(2026, 11, 23, 16, tzinfo=UTC)
    assert due == [day, day, day + timedelta(days=1), day + timedelta(days=1), day + timedelta(days=2)]


def test_due_time_never_passes_the_deadline() -> None:
    registry = PartnerRegistry(sites=[make_site("nairobi", annotators=10, iph=10)])
    deadline = NOW + timedelta(hours=12)
    plan = plan_split(make_work_order(overlap=1, deadline=deadline), registry, make_items(400), None, NOW)
    assert plan.batches["due_at"].max().to_pydatetime() == deadline
