"""Partner sites are isolated: each site's projects live in its own Label Studio, and one site's token
opens nothing at another. Text tasks, with a gold file naming items of the input (the simulation's kind).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flows.core.labelstudio import LabelStudioClient, LabelStudioError
from flows.core.models import IngestResult, PartnerRegistry, WorkOrder
from flows.core.schemas import ASSIGNMENTS, ITEMS, TASK_KEY
from flows.core.settings import local_label_studio_token
from flows.core.workspace import read_table, workspace, write_model, write_table
from flows.split.flow import GOLD, split_flow
from flows.split.materialise import delete_projects, projects_with_prefix
from flows.split.tasks import item_refs

pytestmark = pytest.mark.labelstudio

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
URL_A, URL_B = "http://127.0.0.1:28301", "http://127.0.0.1:28302"


def site(site_id: str, url: str, secret: str, **impact: Any) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": site_id,
        "country": "KE",
        "timezone": "Africa/Nairobi",
        "label_studio": {"url": url, "token_secret": secret},
        "capacity": {"annotators": 2, "hours_per_day": 3, "items_per_hour": {"text_classification": 10}},
        "task_types": ["text_classification"],
        "impact": {"hourly_wage": 5, "living_wage": 4, "last_audit": "2026-06-01", "audit_status": "passed", **impact},
    }


@pytest.fixture
def isolated(stack_settings, store, s3_prefix, unique, monkeypatch) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    token_a, token_b = local_label_studio_token(stack_settings, 0), local_label_studio_token(stack_settings, 1)
    monkeypatch.setenv("KAZI_SECRETS__LS_TOKEN_A", token_a.get_secret_value())
    monkeypatch.setenv("KAZI_SECRETS__LS_TOKEN_B", token_b.get_secret_value())
    bucket = stack_settings.workspace_bucket
    wo_id = f"iso-{unique}"
    ws = workspace(stack_settings, wo_id)
    ids = [f"msg-{n:03d}" for n in range(40)]
    items = pa.Table.from_pydict(
        {
            "item_id": ids,
            "client_item_id": ids,
            "text": [f"Message number {n}: is this spam?" for n in range(40)],
            "media_uri": [None] * 40,
            "fields": [None] * 40,
            "record": [json.dumps({"message_id": i}) for i in ids],
            "source_object": [f"s3://{bucket}/{s3_prefix}in.jsonl"] * 40,
            "source_row": list(range(40)),
            "shard": [0] * 40,
        },
        schema=ITEMS,
    )
    write_table(store, ws.uri("ingest", "v1", "items", "shard=00", "part-0.parquet"), items)
    write_model(
        store,
        ws.uri("ingest", "result.json"),
        IngestResult(
            work_order_id=wo_id,
            ingest_version="v1",
            items_uri=ws.uri("ingest", "v1", "items") + "/",
            quarantine_uri=ws.uri("ingest", "v1", "quarantine.parquet"),
            duplicates_uri=ws.uri("ingest", "v1", "duplicates.parquet"),
            manifest_uri=ws.uri("ingest", "v1", "manifest.json"),
            rows_read=40,
            accepted=40,
            quarantined=0,
            duplicates=0,
            files_quarantined=0,
        ),
    )
    # Gold rows name items of the input by id; one names an item ingest did not accept.
    gold = [{"item_id": f"msg-{n:03d}", "answer": json.dumps({"label": "spam"})} for n in (1, 2, 3, 4)]
    gold.append({"item_id": "msg-999", "answer": json.dumps({"label": "ham"})})
    store.put_bytes(bucket, f"{s3_prefix}gold.jsonl", "".join(json.dumps(g) + "\n" for g in gold).encode())
    registry = PartnerRegistry.model_validate(
        {
            "sites": [
                site("site-a", URL_A, "ls_token_a"),
                site("site-b", URL_B, "ls_token_b"),
                # Ineligible, though its Label Studio (site B's) is up and its token works.
                site("site-c", URL_B, "ls_token_b", suspended=True),
            ]
        }
    )
    store.put_bytes(bucket, f"{s3_prefix}registry.yaml", registry.to_yaml().encode())
    work_order = WorkOrder.model_validate(
        {
            "id": wo_id,
            "client_id": "acme",
            "source": {"uri": f"s3://{bucket}/{s3_prefix}in.jsonl", "format": "jsonl"},
            "task_type": "text_classification",
            "columns": {"item_id": "message_id", "text": "text"},
            "label_schema": {"classes": ["spam", "ham"]},
            "overlap": 1,
            "gold": {"uri": f"s3://{bucket}/{s3_prefix}gold.jsonl", "rate": 0.1},
            "deadline": NOW + timedelta(days=3),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": f"s3://client-out/{wo_id}"},
        }
    )
    clients = {
        "site-a": LabelStudioClient(URL_A, token_a, site_id="site-a"),
        "site-b": LabelStudioClient(URL_B, token_b, site_id="site-b"),
    }
    yield {
        "work_order": work_order,
        "registry_uri": f"s3://{bucket}/{s3_prefix}registry.yaml",
        "clients": clients,
        "tokens": (token_a, token_b),
        "texts": dict(zip(ids, items["text"].to_pylist(), strict=True)),
    }
    for client in clients.values():
        delete_projects(client, f"{wo_id}--")
    store.delete_prefix(bucket, ws.root + "/")


def test_each_instance_holds_only_its_sites_projects_and_tokens_do_not_cross(isolated, store, stack_settings) -> None:  # type: ignore[no-untyped-def]
    work_order: WorkOrder = isolated["work_order"]
    result = split_flow(work_order, registry_uri=isolated["registry_uri"], now=NOW)
    assert result.sites_used == ["site-a", "site-b"]
    assert list(result.sites_passed_over) == ["site-c"] and "suspended" in result.sites_passed_over["site-c"]

    prefix = f"{work_order.id}--"
    clients: dict[str, LabelStudioClient] = isolated["clients"]
    at_a = projects_with_prefix(clients["site-a"], prefix)
    at_b = projects_with_prefix(clients["site-b"], prefix)
    assert at_a and at_b
    assert all(p.key is not None and p.key.startswith(f"{prefix}site-a--") for p in at_a)
    assert all(p.key is not None and p.key.startswith(f"{prefix}site-b--") for p in at_b)
    assert {p.key for p in at_a + at_b} == set(result.projects)

    token_a, token_b = isolated["tokens"]
    a_at_b = LabelStudioClient(URL_B, token_a, site_id="site-a")
    b_at_a = LabelStudioClient(URL_A, token_b, site_id="site-b")
    with pytest.raises(LabelStudioError, match="refused the API token"):
        a_at_b.projects()
    with pytest.raises(LabelStudioError, match="refused the API token"):
        a_at_b.export(at_b[0].id, all_tasks=True)
    with pytest.raises(LabelStudioError, match="refused the API token"):
        b_at_a.task_keys(at_a[0].id)

    # Text shown is the item's text; the task names its item only by ref, gold included.
    assignments = read_table(store, result.plan_uri, ASSIGNMENTS)
    refs = item_refs(assignments["item_id"], stack_settings.pseudonym_key).to_pylist()
    by_ref = dict(zip(refs, assignments["item_id"].to_pylist(), strict=True))
    gold_flags = dict(zip(assignments["item_id"].to_pylist(), assignments["is_gold"].to_pylist(), strict=True))
    seen_gold = 0
    for client, projects in ((clients["site-a"], at_a), (clients["site-b"], at_b)):
        for project in projects:
            for task in client.export(project.id, all_tasks=True):
                data = task["data"]
                assert set(data) == {"item", "batch_id", TASK_KEY, "text"}
                item_id = by_ref[data["item"]]
                assert data["text"] == isolated["texts"][item_id]
                seen_gold += gold_flags[item_id]
    assert seen_gold == result.gold_tasks > 0

    # Gold named items of the input: they are allocated as gold only, and the unknown one is dropped.
    gold = read_table(store, result.plan_uri.replace("round=0/assignments.parquet", "gold.parquet"), GOLD)
    assert sorted(gold["item_id"].to_pylist()) == ["msg-001", "msg-002", "msg-003", "msg-004"]
    assert set(assignments.filter(assignments["is_gold"])["item_id"].to_pylist()) <= set(gold["item_id"].to_pylist())
    real = set(assignments.filter(pc.invert(assignments["is_gold"]))["item_id"].to_pylist())
    assert real == {f"msg-{n:03d}" for n in range(40)} - {"msg-001", "msg-002", "msg-003", "msg-004"}
