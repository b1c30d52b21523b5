"""Delivery manifest, verification and count reconciliation."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from flows.core.models import WorkOrder
from flows.deliver.manifest import (
    ReconciliationError,
    build_manifest,
    manifest_bytes,
    reconcile,
    reworked_item_ids,
    verify,
)

pytestmark = pytest.mark.unit

WORK_ORDER = WorkOrder.model_validate(
    {
        "id": "acme-0042",
        "client_id": "acme",
        "source": {"uri": "s3://acme-in/batch", "format": "csv"},
        "task_type": "image_classification",
        "columns": {"media_uri": "url"},
        "label_schema": {"classes": ["cat", "dog"]},
        "deadline": "2026-12-01T00:00:00Z",
        "price_per_item": 0.1,
        "pay_per_task": 0.03,
        "delivery": {"uri": "s3://acme-out/labels"},
    }
)

FILES = [("labels.parquet", b"PAR1...PAR1", 3), ("labels.jsonl", b'{"a":1}\n{"a":2}\n{"a":3}\n', 3)]


def manifest() -> dict:
    return build_manifest(FILES, WORK_ORDER, "v1", "deliverable-1", "contract-3", {"accepted": 3, "delivered": 3})


def test_manifest_lists_every_file_with_size_rows_and_sha256() -> None:
    m = manifest()
    assert [f["name"] for f in m["files"]] == ["labels.jsonl", "labels.parquet"]
    jsonl = m["files"][0]
    assert jsonl == {
        "name": "labels.jsonl",
        "size": 24,
        "rows": 3,
        "sha256": hashlib.sha256(b'{"a":1}\n{"a":2}\n{"a":3}\n').hexdigest(),
    }
    assert m["total_size"] == 24 + 11
    assert (m["work_order_id"], m["client_id"], m["task_type"]) == ("acme-0042", "acme", "image_classification")
    assert (m["version"], m["schema_version"], m["contract_version"]) == ("v1", "deliverable-1", "contract-3")
    assert m["counts"] == {"accepted": 3, "delivered": 3}
    assert "created_at" not in m


def test_manifest_bytes_are_canonical_and_reproducible() -> None:
    first = manifest_bytes(manifest())
    assert first == manifest_bytes(
        build_manifest(
            list(reversed(FILES)), WORK_ORDER, "v1", "deliverable-1", "contract-3", {"delivered": 3, "accepted": 3}
        )
    )
    assert json.loads(first)["files"][1]["name"] == "labels.parquet"
    assert first.endswith(b"\n")


def test_manifest_records_created_at_only_when_given() -> None:
    m = build_manifest(FILES, WORK_ORDER, "v1", "s", "c", {}, created_at="2026-11-01T00:00:00Z")
    assert m["created_at"] == "2026-11-01T00:00:00Z"


def test_manifest_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match=r"labels\.jsonl"):
        build_manifest([*FILES, ("labels.jsonl", b"", 0)], WORK_ORDER, "v1", "s", "c", {})


def test_verify_passes_on_intact_files() -> None:
    store = {name: body for name, body, _ in FILES}
    assert verify(manifest(), store.__getitem__) == []


def test_verify_catches_corruption_truncation_and_missing_files() -> None:
    store = {name: body for name, body, _ in FILES}
    store["labels.jsonl"] = store["labels.jsonl"].replace(b"2", b"9")  # same size, other bytes
    problems = verify(manifest(), store.__getitem__)
    assert len(problems) == 1
    assert problems[0].startswith("labels.jsonl: sha256")

    del store["labels.parquet"]
    store["labels.jsonl"] = b"short"
    problems = verify(json.loads(manifest_bytes(manifest())), store.__getitem__)
    assert problems[0].startswith("labels.jsonl: size 5 bytes, manifest says 24")
    assert problems[1].startswith("labels.jsonl: sha256")
    assert problems[2].startswith("labels.parquet: cannot be read (KeyError")


def excluded(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "reason"])


def test_reconcile_counts_when_everything_adds_up() -> None:
    counts = reconcile(
        accepted=pd.Series(["a", "b", "c", "d", "e"]),
        delivered=["a", "b", "c"],
        reworked_and_delivered={"b"},
        excluded=excluded([("d", "failed_qa"), ("e", "no_answer")]),
    )
    assert counts == {
        "accepted": 5,
        "delivered": 3,
        "reworked_and_delivered": 1,
        "excluded": 2,
        "excluded_by_reason": {"failed_qa": 1, "no_answer": 1},
    }


@pytest.mark.parametrize(
    ("delivered", "reworked", "excl", "message"),
    [
        (
            ["a", "b"],
            [],
            [("c", "no_answer")],
            r"1 item\(s\) accepted but neither delivered nor excluded, e.g. \['d'\]",
        ),
        (["a", "b", "c"], [], [("c", "failed_qa"), ("d", "no_answer")], r"delivered and excluded, e.g. \['c'\]"),
        (["a", "b", "c", "z"], [], [("d", "no_answer")], r"delivered but not accepted, e.g. \['z'\]"),
        (["a", "b", "c"], [], [("d", "x"), ("q", "x")], r"excluded but not accepted, e.g. \['q'\]"),
        (["a", "b", "c"], ["d"], [("d", "failed_qa")], r"reworked but not delivered, e.g. \['d'\]"),
        (["a", "a", "b", "c"], [], [("d", "x")], r"delivered lists 1 item id\(s\) more than once"),
    ],
)
def test_reconcile_raises_naming_what_does_not_add_up(
    delivered: list[str], reworked: list[str], excl: list[tuple[str, str]], message: str
) -> None:
    with pytest.raises(ReconciliationError, match=message):
        reconcile(["a", "b", "c", "d"], delivered, reworked, excluded(excl))


def test_reconcile_error_states_the_totals() -> None:
    with pytest.raises(ReconciliationError, match=r"accepted 4 != delivered 2 \+ excluded 1"):
        reconcile(["a", "b", "c", "d"], ["a", "b"], [], excluded([("c", "x")]))


def test_reworked_item_ids_from_rounds() -> None:
    log = pd.DataFrame({"item_id": ["a", "b", "b", "c", "a"], "round": [0, 1, 2, 0, 1]})
    assert reworked_item_ids(log).tolist() == ["a", "b"]
