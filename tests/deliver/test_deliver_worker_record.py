"""Worker records: per-annotation outcomes, aggregation, and Ed25519 signing."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flows.core.models import TaskType
from flows.deliver.worker_record import (
    annotation_outcomes,
    build_worker_records,
    canonical_json,
    generate_signing_key,
    sign_record,
    verify_record,
)

pytestmark = pytest.mark.unit


def log(rows: list[tuple[str, str, str | None, float, bool]], site: str = "site-a") -> pd.DataFrame:
    """(item_id, annotator, answer JSON, lead_time_s, skipped)."""
    return pd.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "annotator": [r[1] for r in rows],
            "site_id": site,
            "answer": pd.Series([r[2] for r in rows], dtype="str"),
            "label": pd.Series([json.loads(r[2]).get("label") if r[2] else None for r in rows], dtype="str"),
            "lead_time_s": [r[3] for r in rows],
            "skipped": [r[4] for r in rows],
        }
    )


def answers(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [r[0] for r in rows], "answer": [r[1] for r in rows]})


CAT, DOG = '{"label":"cat"}', '{"label":"dog"}'


def classification_outcomes() -> pd.DataFrame:
    annotations = log(
        [
            ("i1", "p-1", CAT, 30.0, False),  # agrees
            ("i1", "p-2", DOG, 60.0, False),  # disagrees
            ("g1", "p-1", DOG, 20.0, False),  # gold correct
            ("g1", "p-2", CAT, 10.0, False),  # gold wrong
            ("i2", "p-2", None, 40.0, True),  # skipped
            ("i3", "p-1", CAT, 10.0, False),  # no consensus yet
        ]
    )
    consensus = answers([("i1", CAT), ("i2", DOG)]).assign(label=["cat", "dog"])
    gold = answers([("g1", DOG)])
    return annotation_outcomes(annotations, consensus, gold, TaskType.IMAGE_CLASSIFICATION)


def test_classification_outcomes() -> None:
    out = classification_outcomes()
    assert out["is_gold"].tolist() == [False, False, True, True, False, False]
    assert out["agrees"].tolist() == [True, False, pd.NA, pd.NA, pd.NA, pd.NA]
    assert out["gold_correct"].tolist() == [pd.NA, pd.NA, True, False, pd.NA, pd.NA]
    assert out["task_type"].unique().tolist() == ["image_classification"]


def test_transcription_compares_normalised_text() -> None:
    annotations = log(
        [("a1", "p-1", '{"text":"Hello  World "}', 5.0, False), ("a1", "p-2", '{"text":"hello world!"}', 5.0, False)]
    )
    out = annotation_outcomes(
        annotations, answers([("a1", '{"text":"hello world"}')]), answers([]), TaskType.AUDIO_TRANSCRIPTION
    )
    assert out["agrees"].tolist() == [True, False]


def test_listing_compares_every_field() -> None:
    ref = '{"fields":{"name":"Cafe Uhuru","phone":"0700"}}'
    annotations = log(
        [
            ("l1", "p-1", '{"fields":{"name":"cafe  uhuru","phone":"0700"}}', 5.0, False),
            ("l1", "p-2", '{"fields":{"name":"Cafe Uhuru","phone":"0711"}}', 5.0, False),
        ]
    )
    out = annotation_outcomes(annotations, answers([("l1", ref)]), answers([]), TaskType.LISTING_VERIFICATION)
    assert out["agrees"].tolist() == [True, False]


def boxes(*bs: tuple[str, float, float, float, float]) -> str:
    return json.dumps({"boxes": [{"label": b[0], "x": b[1], "y": b[2], "width": b[3], "height": b[4]} for b in bs]})


@pytest.mark.parametrize(
    ("mine", "agrees"),
    [
        (boxes(("car", 10, 10, 20, 20), ("person", 50, 50, 10, 10)), True),
        (boxes(("person", 51, 50, 10, 10), ("car", 11, 10, 20, 20)), True),  # order and small shifts do not matter
        (boxes(("car", 10, 10, 20, 20), ("car", 50, 50, 10, 10)), False),  # wrong label
        (boxes(("car", 10, 10, 20, 20)), False),  # a box missing
        (boxes(("car", 20, 20, 20, 20), ("person", 50, 50, 10, 10)), False),  # IoU 1/7 < 0.5
    ],
)
def test_detection_pairs_boxes_by_label_and_iou(mine: str, agrees: bool) -> None:
    reference = boxes(("car", 10, 10, 20, 20), ("person", 50, 50, 10, 10))
    out = annotation_outcomes(
        log([("d1", "p-1", mine, 5.0, False)]), answers([("d1", reference)]), answers([]), TaskType.OBJECT_DETECTION
    )
    assert out["agrees"].tolist() == [agrees]


def test_detection_with_no_boxes_on_either_side_agrees() -> None:
    empty = boxes()
    out = annotation_outcomes(
        log([("d1", "p-1", empty, 5.0, False)]), answers([("d1", empty)]), answers([]), TaskType.OBJECT_DETECTION
    )
    assert out["agrees"].tolist() == [True]


def test_worker_records_aggregate_per_worker() -> None:
    records = build_worker_records(
        classification_outcomes(), issued_at="2026-11-01T00:00:00Z", work_order_ids=["acme-2", "acme-1"]
    )
    assert [r["worker"] for r in records] == ["p-1", "p-2"]
    p1, p2 = records
    assert p1["tasks"] == 3
    assert p1["tasks_by_type"] == {"image_classification": 3}
    assert p1["hours"] == round(60 / 3600, 2)
    assert p1["gold"] == {"answered": 1, "correct": 1, "accuracy": 1.0}
    assert p1["agreement"] == {"compared": 1, "agreed": 1, "rate": 1.0}
    assert p1["work_orders"] == ["acme-1", "acme-2"]
    assert p1["sites"] == ["site-a"]
    assert p2["tasks"] == 2  # the skipped task is not counted
    assert p2["hours"] == round(110 / 3600, 2)  # but its time is
    assert p2["gold"] == {"answered": 1, "correct": 0, "accuracy": 0.0}
    assert p2["agreement"] == {"compared": 1, "agreed": 0, "rate": 0.0}


def test_worker_record_without_measurements_has_null_rates() -> None:
    out = annotation_outcomes(
        log([("i9", "p-3", CAT, 5.0, False)]), answers([]), answers([]), TaskType.IMAGE_CLASSIFICATION
    )
    (rec,) = build_worker_records(out, issued_at="t")
    assert rec["gold"] == {"answered": 0, "correct": 0, "accuracy": None}
    assert rec["agreement"]["rate"] is None


# --- Signing ---------------------------------------------------------------------------------------

KEYS = generate_signing_key()
RECORD = build_worker_records(classification_outcomes(), issued_at="2026-11-01T00:00:00Z")[0]


def test_signed_record_verifies() -> None:
    signed = sign_record(RECORD, KEYS[0])
    assert set(signed) == {"record", "signature", "algorithm", "key_id"}
    assert signed["algorithm"] == "Ed25519"
    assert len(base64.b64decode(signed["signature"])) == 64
    assert verify_record(signed, KEYS[1])
    # It survives a JSON round trip, as it would in a file or an HTTP response.
    assert verify_record(json.loads(json.dumps(signed)), KEYS[1])


def tamper(path: list[Any], value: Any) -> dict[str, Any]:
    signed = copy.deepcopy(sign_record(RECORD, KEYS[0]))
    target = signed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return signed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["record", "tasks"], 999),
        (["record", "worker"], "p-9"),
        (["record", "gold", "accuracy"], 0.99),
        (["record", "tasks_by_type", "image_classification"], 4),
        (["record", "sites"], ["site-b"]),
        (["record", "extra"], "x"),
        (["algorithm"], "Ed448"),
        (["key_id"], "0" * 16),
        (["signature"], base64.b64encode(b"\0" * 64).decode()),
        (["signature"], "not base64!"),
        (["note"], "unsigned extra"),
    ],
)
def test_tampering_any_field_fails(path: list[Any], value: Any) -> None:
    assert not verify_record(tamper(path, value), KEYS[1])


def test_another_key_does_not_verify() -> None:
    other_private, other_public = generate_signing_key()
    assert not verify_record(sign_record(RECORD, KEYS[0]), other_public)
    assert verify_record(sign_record(RECORD, other_private), other_public)


def test_non_ed25519_keys_are_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="Ed25519 private key"):
        sign_record(RECORD, pem)
    with pytest.raises(ValueError, match="Ed25519 public key"):
        verify_record(sign_record(RECORD, KEYS[0]), public)


def test_canonical_json_sorts_keys_without_spaces() -> None:
    assert canonical_json({"b": 1, "a": {"d": "é", "c": [1, 2]}}) == '{"a":{"c":[1,2],"d":"é"},"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
