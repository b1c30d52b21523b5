"""Eligibility: every rule that passes a site over, with its figures in words."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from flows.core.models import PartnerRegistry, PartnerSite, WorkOrder
from flows.split.eligibility import check_site, eligible_sites

pytestmark = pytest.mark.unit

TODAY = date(2026, 11, 23)


def make_work_order(**over: Any) -> WorkOrder:
    spec: dict[str, Any] = {
        "id": "acme-0042",
        "client_id": "acme",
        "source": {"uri": "s3://client-in/batch-1", "format": "csv"},
        "task_type": "image_classification",
        "columns": {"media_uri": "image_uri"},
        "label_schema": {"classes": ["cat", "dog"]},
        "overlap": 3,
        "deadline": datetime(2026, 12, 1, 17, tzinfo=UTC),
        "price_per_item": 0.1,
        "pay_per_task": 0.02,
        "delivery": {"uri": "s3://client-out/acme-0042"},
    }
    spec.update(over)
    return WorkOrder.model_validate(spec)


def make_site(site_id: str = "nairobi", **over: Any) -> PartnerSite:
    capacity = {"annotators": 10, "hours_per_day": 8.0, "items_per_hour": {"image_classification": 100}}
    capacity.update(over.pop("capacity", {}))
    impact = {
        "hourly_wage": 265.0,
        "living_wage": 215.0,
        "currency": "KES",
        "last_audit": "2026-06-15",
        "audit_status": "passed",
    }
    impact.update(over.pop("impact", {}))
    spec: dict[str, Any] = {
        "id": site_id,
        "name": site_id.title(),
        "country": "KE",
        "timezone": "Africa/Nairobi",
        "label_studio": {"url": "http://127.0.0.1:18301", "token_secret": "ls_token_x"},
        "capacity": capacity,
        "task_types": ["image_classification", "text_classification"],
        "impact": impact,
    }
    spec.update(over)
    return PartnerSite.model_validate(spec)


def test_a_sound_site_is_eligible() -> None:
    assert check_site(make_site(), make_work_order(), TODAY) == []


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        (
            make_site(impact={"hourly_wage": 95.0, "living_wage": 140.0, "currency": "HTG"}),
            "pays 95.00 HTG/h, below the local living wage of 140.00 HTG/h",
        ),
        (
            make_site(impact={"last_audit": "2024-09-20", "audit_valid_days": 365}),
            "audit lapsed: last audit 2024-09-20, 794 days ago (valid for 365 days, until 2025-09-20)",
        ),
        (make_site(impact={"audit_status": "failed"}), "audit status is failed, not passed"),
        (make_site(impact={"audit_status": "pending"}), "audit status is pending, not passed"),
        (make_site(impact={"suspended": True}), "site is suspended"),
        (
            make_site(task_types=["text_classification"]),
            "lacks the image_classification skill (has: text_classification)",
        ),
        (make_site(capacity={"annotators": 0}), "zero capacity: 0 annotators"),
        (make_site(capacity={"hours_per_day": 0}), "zero capacity: 0 hours per day"),
        (
            make_site(capacity={"items_per_hour": {"image_classification": 0}}),
            "zero capacity: 0 image_classification tasks per hour",
        ),
        (
            make_site(capacity={"annotators": 2}),
            "has 2 annotators, fewer than the overlap of 3 distinct annotators each item needs at one site",
        ),
        (make_site(timezone="Mars/Olympus"), "unknown time zone 'Mars/Olympus': its shifts cannot be placed"),
    ],
)
def test_each_reason_is_spelled_out(site: PartnerSite, expected: str) -> None:
    assert check_site(site, make_work_order(), TODAY) == [expected]


def test_audit_valid_through_its_last_day() -> None:
    site = make_site(impact={"last_audit": "2025-11-23", "audit_valid_days": 365})
    assert check_site(site, make_work_order(), TODAY) == []
    assert check_site(site, make_work_order(), date(2026, 11, 24))[0].startswith("audit lapsed")


def test_few_annotators_are_enough_when_answers_come_from_different_sites() -> None:
    site = make_site(capacity={"annotators": 2})
    assert check_site(site, make_work_order(overlap_across_sites=True), TODAY) == []


def test_missing_throughput_measure_is_not_zero_capacity() -> None:
    site = make_site(capacity={"items_per_hour": {}})
    assert check_site(site, make_work_order(), TODAY) == []


def test_all_reasons_together_in_a_fixed_order() -> None:
    site = make_site(
        impact={"hourly_wage": 1.0, "living_wage": 2.0, "last_audit": "2020-01-01", "audit_status": "failed"},
        task_types=["text_classification"],
    )
    reasons = check_site(site, make_work_order(), TODAY)
    assert [r.split(" ")[0] for r in reasons] == ["pays", "audit", "audit", "lacks"]


def test_eligible_sites_splits_the_registry() -> None:
    registry = PartnerRegistry(
        sites=[
            make_site("nairobi"),
            make_site("lahore", impact={"last_audit": "2024-09-20"}),
            make_site("dadaab"),
            make_site("haiti", impact={"hourly_wage": 95.0, "living_wage": 140.0, "suspended": True}),
        ]
    )
    eligible, passed_over = eligible_sites(registry, make_work_order(), TODAY)
    assert [s.id for s in eligible] == ["nairobi", "dadaab"]
    assert set(passed_over) == {"lahore", "haiti"}
    assert passed_over["haiti"] == ("pays 95.00 KES/h, below the local living wage of 140.00 KES/h; site is suspended")
    assert passed_over["lahore"].startswith("audit lapsed: last audit 2024-09-20")
