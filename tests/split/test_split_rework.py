from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from flows.core.models import DeliverySpec, SourceFormat, SourceSpec, TaskType, WorkOrder
from flows.core.schemas import ASSIGNMENTS
from flows.split.rework import review_answers, rework_plan

pytestmark = pytest.mark.unit
DUE = datetime(2026, 12, 1, tzinfo=UTC)


def order(overlap: int) -> WorkOrder:
    return WorkOrder(
        id="acme-0042",
        client_id="acme",
        source=SourceSpec(uri="s3://acme/in/", format=SourceFormat.CSV),
        task_type=TaskType.TEXT_CLASSIFICATION,
        columns={"item_id": "id", "text": "text"},
        label_schema={"classes": ["pos", "neg"]},
        overlap=overlap,
        deadline=DUE + timedelta(days=2),
        price_per_item=0.1,
        pay_per_task=0.02,
        delivery=DeliverySpec(uri="s3://acme/out/"),
    )


def test_one_project_per_site_with_k_minus_one_review_answers() -> None:
    rework = pa.table({"item_id": ["a", "b", "c"], "site_id": ["nairobi", "nairobi", "dadaab"]})
    rows, batches = rework_plan(order(3), rework, 1, DUE)
    assert rows.schema == ASSIGNMENTS
    assert rows.num_rows == 3 * 2
    assert {b["project_key"] for b in batches} == {"acme-0042--nairobi--r1", "acme-0042--dadaab--r1"}
    nairobi = next(b for b in batches if b["site_id"] == "nairobi")
    assert nairobi["n_tasks"] == 2 and nairobi["max_annotations"] == 2 and nairobi["n_answers"] == 4
    assert set(rows.column("round").to_pylist()) == {1}
    assert not any(rows.column("is_gold").to_pylist())


@pytest.mark.parametrize(("overlap", "answers"), [(1, 1), (2, 1), (3, 2), (5, 4)])
def test_review_answers(overlap: int, answers: int) -> None:
    assert review_answers(order(overlap)) == answers


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        rework_plan(order(3), pa.table({"item_id": ["a"]}), 1, DUE)
    with pytest.raises(ValueError, match="count from 1"):
        rework_plan(order(3), pa.table({"item_id": ["a"], "site_id": ["x"]}), 0, DUE)
