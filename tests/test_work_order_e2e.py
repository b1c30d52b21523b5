"""A whole work order on the real stack with a simulated workforce that includes spammers."""

import uuid

import pytest

pytestmark = pytest.mark.e2e


def test_work_order_end_to_end_flags_spammers_reworks_and_delivers(stack_settings, store) -> None:
    from flows.core.models import DeliveryResult, QAResult, TaskType
    from flows.core.s3 import parse_uri
    from flows.core.workspace import read_json, read_model, read_table, workspace
    from flows.deliver.manifest import verify
    from flows.work_order import work_order_flow
    from simulation.demo import Workforce, prepare_work_order

    wo_id = f"e2e-{uuid.uuid4().hex[:8]}"
    registry, dataset, work_order = prepare_work_order(
        stack_settings, store, TaskType.IMAGE_CLASSIFICATION, 60, wo_id, seed=11
    )
    workforce = Workforce(stack_settings, registry, dataset, work_order)
    assert any(p.is_spammer for p in workforce.profiles)
    workforce.start()
    try:
        delivery = work_order_flow(work_order, sync_interval_seconds=2, max_wait_seconds=300)
    finally:
        workforce.stop.set()
        workforce.join(timeout=30)
    assert workforce.error is None

    ws = workspace(stack_settings, work_order)
    assert isinstance(delivery, DeliveryResult) and delivery.delivered_items > 0
    qa = read_model(store, ws.uri("qa", "result.json"), QAResult)
    assert qa.passed
    # The spammers were flagged and their answers excluded; the items they touched went to a review round.
    first = read_table(store, ws.uri("qa", "round=0", "rework.parquet")).to_pandas()
    round0 = read_model(store, ws.uri("qa", "round=0", "result.json"), QAResult)
    assert round0.excluded_annotators
    assert first["reason"].str.contains("excluded_annotator").any()
    review = read_table(store, ws.uri("split", "round=1", "assignments.parquet"))
    assert set(review.column("item_id").to_pylist()) == set(first["item_id"])
    # Every delivered file is complete and its checksum verifies.
    bucket, key = parse_uri(delivery.manifest_uri)
    manifest = read_json(store, delivery.manifest_uri)
    prefix = key.rsplit("/", 1)[0]
    assert verify(manifest, lambda name: store.get_bytes(bucket, f"{prefix}/{name}")) == []
    # The run ends with its progress at 100% and a summary linking every report.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{wo_id}-stages", f"{wo_id}-summary"]))
        )
    by_key = {a.key: a for a in found}
    assert by_key[f"{wo_id}-stages"].data == 100.0
    summary = str(by_key[f"{wo_id}-summary"].data)
    assert f"## {wo_id}: delivered {delivery.delivered_items:,} items" in summary
    assert f"| QA report | [open]({qa.report_uri})" in summary and "| Impact report | [open](http" in summary
    assert delivery.manifest_uri in summary
