"""Label Studio task payloads: content keys, idempotency key, and gold that looks like everything else."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from pydantic import SecretStr

from flows.core.models import PartnerRegistry, PartnerSite, WorkOrder
from flows.split.allocate import plan_split
from flows.split.label_configs import render_label_config
from flows.split.tasks import TASK_KEY, build_tasks, item_refs, iter_project_tasks

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, tzinfo=UTC)
PROJECT = "acme-0042--nairobi--r0-b0000"
KEY = "test-ref-key"


def ref(item_id: str, key: str = KEY) -> str:
    """The item ref computed independently of the code under test."""
    return hmac.new(key.encode(), item_id.encode(), hashlib.sha256).hexdigest()[:16]


def make_work_order(task_type: str = "image_classification", **over: Any) -> WorkOrder:
    schema: dict[str, Any] = {
        "image_classification": {"classes": ["cat", "dog"]},
        "object_detection": {"classes": ["car"]},
        "text_classification": {"classes": ["pos", "neg"]},
        "audio_transcription": {},
        "listing_verification": {
            "fields": [{"name": "phone", "kind": "phone"}, {"name": "open_now", "kind": "boolean"}]
        },
    }[task_type]
    spec: dict[str, Any] = {
        "id": "acme-0042",
        "client_id": "acme",
        "source": {"uri": "s3://client-in/batch-1", "format": "csv"},
        "task_type": task_type,
        "columns": {"media_uri": "uri", "text": "body"},
        "label_schema": schema,
        "overlap": 3,
        "deadline": NOW + timedelta(days=5),
        "price_per_item": 0.1,
        "pay_per_task": 0.02,
        "delivery": {"uri": "s3://client-out/acme-0042"},
    }
    spec.update(over)
    return WorkOrder.model_validate(spec)


def make_items(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ids,
            "text": [f"text of {i}" for i in ids],
            "media_uri": [f"s3://client-in/media/{i}.bin" for i in ids],
            "fields": [json.dumps({"phone": f"+254 700 {n:03d}", "open_now": n % 2 == 0}) for n in range(len(ids))],
        }
    )


def make_rows(ids: list[str], slots: int = 1, project: str = PROJECT) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [i for i in ids for _ in range(slots)],
            "batch_id": project.rsplit("--", 1)[1],
            "site_id": "nairobi",
            "project_key": project,
            "slot": [s for _ in ids for s in range(slots)],
            "is_gold": False,
            "round": 0,
        }
    )


def presign(uri: str) -> str:
    return "https://s3.local/" + uri.removeprefix("s3://") + "?X-Amz-Signature=abc"


@pytest.mark.parametrize(
    ("task_type", "content"),
    [
        ("image_classification", {"image": "https://s3.local/client-in/media/b.bin?X-Amz-Signature=abc"}),
        ("object_detection", {"image": "https://s3.local/client-in/media/b.bin?X-Amz-Signature=abc"}),
        ("audio_transcription", {"audio": "https://s3.local/client-in/media/b.bin?X-Amz-Signature=abc"}),
        ("text_classification", {"text": "text of b"}),
        ("listing_verification", {"fields_phone": "+254 700 001", "fields_open_now": "no"}),
    ],
)
def test_payload_per_task_type(task_type: str, content: dict[str, str]) -> None:
    tasks = build_tasks(
        make_rows(["a", "b"]), make_items(["a", "b", "c"]), make_work_order(task_type), presign, ref_key=KEY
    )
    assert tasks[1] == {
        "data": {"item": ref("b"), "batch_id": "r0-b0000", TASK_KEY: f"{PROJECT}/{ref('b')}", **content},
    }


@pytest.mark.parametrize(
    "task_type",
    ["image_classification", "object_detection", "audio_transcription", "text_classification", "listing_verification"],
)
def test_payload_holds_every_key_the_label_config_reads(task_type: str) -> None:
    work_order = make_work_order(task_type)
    tasks = build_tasks(make_rows(["a"]), make_items(["a"]), work_order, presign, ref_key=KEY)
    wanted = set(re.findall(r'value="\$([a-z0-9_]+)"', render_label_config(work_order)))
    assert wanted
    assert wanted <= set(tasks[0]["data"])


def test_slots_of_an_item_make_one_task_in_plan_order() -> None:
    tasks = build_tasks(
        make_rows(["c", "a", "b"], slots=3), make_items(["a", "b", "c"]), make_work_order(), presign, ref_key=KEY
    )
    assert [t["data"]["item"] for t in tasks] == [ref("c"), ref("a"), ref("b")]
    assert len({t["data"][TASK_KEY] for t in tasks}) == 3


def test_arrow_inputs_give_the_same_payloads() -> None:
    rows, items = make_rows(["a", "b"], slots=2), make_items(["a", "b"])
    from_pandas = build_tasks(rows, items, make_work_order(), presign, ref_key=KEY)
    from_arrow = build_tasks(
        pa.Table.from_pandas(rows), pa.Table.from_pandas(items), make_work_order(), presign, ref_key=KEY
    )
    assert from_pandas == from_arrow


def test_listing_fields_missing_or_empty_become_empty_strings() -> None:
    items = pd.DataFrame({"item_id": ["a", "b"], "fields": ['{"phone": null}', None]})
    tasks = build_tasks(make_rows(["a", "b"]), items, make_work_order("listing_verification"), ref_key=KEY)
    assert [t["data"]["fields_phone"] for t in tasks] == ["", ""]
    assert [t["data"]["fields_open_now"] for t in tasks] == ["", ""]


@pytest.mark.parametrize(
    ("rows", "items", "task_type", "media", "message"),
    [
        (
            pd.concat([make_rows(["a"]), make_rows(["b"], project="acme-0042--nairobi--r0-b0001")]),
            make_items(["a", "b"]),
            "image_classification",
            presign,
            "takes the rows of one project, got 2",
        ),
        (
            make_rows(["a", "zz"]),
            make_items(["a"]),
            "image_classification",
            presign,
            "1 planned items are not in the items table, e.g. zz",
        ),
        (make_rows(["a"]), make_items(["a"]), "image_classification", None, "need a media_url function"),
        (
            make_rows(["a"]),
            make_items(["a"]).assign(media_uri=[None]),
            "audio_transcription",
            presign,
            "item a has no media_uri",
        ),
        (
            make_rows(["a"]),
            make_items(["a"]).assign(fields=["[1, 2]"]),
            "listing_verification",
            None,
            "fields must be a JSON object",
        ),
    ],
)
def test_bad_inputs_are_refused(
    rows: pd.DataFrame, items: pd.DataFrame, task_type: str, media: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_tasks(rows, items, make_work_order(task_type), media, ref_key=KEY)


def test_no_rows_no_tasks() -> None:
    assert build_tasks(make_rows([]), make_items(["a"]), make_work_order(), presign, ref_key=KEY) == []


def test_gold_answers_never_reach_a_payload_and_gold_looks_like_the_rest() -> None:
    site = PartnerSite.model_validate(
        {
            "id": "nairobi",
            "name": "Nairobi",
            "country": "KE",
            "timezone": "Africa/Nairobi",
            "label_studio": {"url": "http://127.0.0.1:18301", "token_secret": "ls_token_nairobi"},
            "capacity": {"annotators": 10, "hours_per_day": 8, "items_per_hour": {"text_classification": 20}},
            "task_types": ["text_classification"],
            "impact": {"hourly_wage": 5, "living_wage": 4, "last_audit": "2026-06-01", "audit_status": "passed"},
        }
    )
    work_order = make_work_order("text_classification", gold={"rate": 0.2}, overlap=1)
    item_ids = [f"item-{i:04d}" for i in range(300)]
    gold_ids = [f"item-g{i:03d}" for i in range(40)]
    gold = pd.DataFrame({"item_id": gold_ids, "answer": [f"SECRET-ANSWER-{i}" for i in range(40)]})
    plan = plan_split(work_order, PartnerRegistry(sites=[site]), pd.DataFrame({"item_id": item_ids}), gold, NOW)
    # Texts that do not quote their ids, so any id in a payload would be a leak.
    items = make_items(item_ids + gold_ids).assign(text=[f"message {n}" for n in range(340)])
    payloads = []
    for key in plan.batches["project_key"]:
        rows = plan.project_rows(key)
        tasks = build_tasks(rows, items, work_order, ref_key=KEY)
        # Map refs back to items the way annotate does: through the manifest.
        by_ref = dict(
            zip(item_refs(rows.column("item_id"), KEY).to_pylist(), rows.column("is_gold").to_pylist(), strict=True)
        )
        payloads += [(t, by_ref[t["data"]["item"]]) for t in tasks]
    assert any(is_gold for _, is_gold in payloads) and not all(is_gold for _, is_gold in payloads)
    dumped = json.dumps([t for t, _ in payloads])
    assert "SECRET-ANSWER" not in dumped
    assert "gold" not in dumped and "item-" not in dumped, "no item id, gold or not, reaches Label Studio"
    assert {frozenset(t["data"]) for t, _ in payloads} == {frozenset({"item", "batch_id", TASK_KEY, "text"})}


def test_iter_project_tasks_matches_build_tasks_per_project() -> None:
    site = PartnerSite.model_validate(
        {
            "id": "nairobi",
            "name": "Nairobi",
            "country": "KE",
            "timezone": "Africa/Nairobi",
            "label_studio": {"url": "http://127.0.0.1:18301", "token_secret": "ls_token_nairobi"},
            "capacity": {"annotators": 10, "hours_per_day": 8, "items_per_hour": {"image_classification": 20}},
            "task_types": ["image_classification"],
            "impact": {"hourly_wage": 5, "living_wage": 4, "last_audit": "2026-06-01", "audit_status": "passed"},
        }
    )
    work_order = make_work_order(overlap=3)
    ids = [f"item-{i:04d}" for i in range(500)]
    plan = plan_split(work_order, PartnerRegistry(sites=[site]), pd.DataFrame({"item_id": ids}), None, NOW)
    items = pa.Table.from_pandas(make_items(ids))
    together = dict(iter_project_tasks(plan.assignments, items, work_order, presign, ref_key=KEY))
    assert list(together) == plan.batches["project_key"].tolist()
    for key in together:
        assert together[key] == build_tasks(plan.project_rows(key), items, work_order, presign, ref_key=KEY)
    assert sum(len(t) for t in together.values()) == 500


@pytest.mark.parametrize(
    ("ids", "key"),
    [
        (["a", "b", "a"], KEY),
        (["item-0001", "ünïcode id", ""], "another key"),
        (["a", "b"], "k" * 64),  # a key of exactly one SHA-256 block
        (["a", "b"], "long key " * 20),  # longer than a block: hashed first (RFC 2104)
    ],
)
def test_item_refs_are_keyed_hmacs(ids: list[str], key: str) -> None:
    expected = [ref(i, key) for i in ids]
    assert item_refs(ids, key).to_pylist() == expected
    assert item_refs(pa.chunked_array([ids[:1], ids[1:]]), key.encode()).to_pylist() == expected
    assert item_refs(pa.array(ids), SecretStr(key)).to_pylist() == expected


def test_item_refs_hide_the_id_and_depend_on_the_key() -> None:
    refs = item_refs(["a", "b"], KEY).to_pylist()
    assert len(set(refs)) == 2 and all(re.fullmatch(r"[0-9a-f]{16}", r) for r in refs)
    assert item_refs(["a"], "other").to_pylist() != refs[:1]


@pytest.mark.parametrize(
    ("ids", "key", "message"),
    [(pa.array(["a", None]), KEY, "1 item ids are null"), (["a"], "", "item ref key is empty")],
)
def test_item_refs_refuse(ids: Any, key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        item_refs(ids, key)
