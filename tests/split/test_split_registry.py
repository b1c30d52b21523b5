"""The demo partner registry loads and says what the demo expects of each site."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from flows.core.models import PartnerRegistry, WorkOrder
from flows.split.eligibility import eligible_sites

pytestmark = pytest.mark.unit

REGISTRY = Path(__file__).resolve().parents[2] / "data_contracts" / "sample_registry.yaml"


def test_sample_registry_loads_and_round_trips() -> None:
    registry = PartnerRegistry.from_yaml(REGISTRY.read_text())
    assert [s.id for s in registry.sites] == ["nairobi", "dadaab", "port-au-prince", "lahore"]
    assert [s.country for s in registry.sites] == ["KE", "KE", "HT", "PK"]
    assert registry.site("nairobi").label_studio.url == "http://127.0.0.1:18301"
    assert registry.site("dadaab").label_studio.url == "http://127.0.0.1:18302"
    assert registry.site("nairobi").label_studio.token_secret == "ls_token_nairobi"
    assert PartnerRegistry.from_yaml(registry.to_yaml()) == registry


@pytest.mark.parametrize("task_type", ["image_classification", "text_classification", "listing_verification"])
def test_sample_registry_eligibility(task_type: str) -> None:
    registry = PartnerRegistry.from_yaml(REGISTRY.read_text())
    work_order = WorkOrder.model_validate(
        {
            "id": "demo-0001",
            "client_id": "demo",
            "source": {"uri": "s3://client-in/demo", "format": "csv"},
            "task_type": task_type,
            "columns": {"media_uri": "uri", "text": "body"},
            "label_schema": {"classes": ["a", "b"], "fields": [{"name": "phone"}]},
            "deadline": datetime(2026, 12, 15, tzinfo=UTC),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": "s3://client-out/demo"},
        }
    )
    eligible, passed_over = eligible_sites(registry, work_order, date(2026, 11, 23))
    assert [s.id for s in eligible] == ["nairobi", "dadaab"]
    assert passed_over["port-au-prince"].startswith("pays 95.00 HTG/h, below the local living wage of 140.00 HTG/h")
    assert passed_over["lahore"].startswith("audit lapsed: last audit 2024-09-20, 794 days ago")
