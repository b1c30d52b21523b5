"""Delivery format writers: each format loads with its usual reader and carries the same values."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools.coco import COCO

from flows.core.models import DeliveryFormat, TaskType, WorkOrder
from flows.deliver.formats import (
    FORMAT_WRITERS,
    DeliveryContext,
    FormatNotApplicable,
    build_deliverable,
    check_formats,
    escape_formulas,
    read_image_size,
    write_coco,
    write_csv,
    write_formats,
    write_ground_truth,
    write_jsonl,
    write_label_studio,
    write_parquet,
)

pytestmark = pytest.mark.unit

CREATED = "2026-11-01T12:00:00"


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A deliverable frame; each row gives item_id, record (dict) and answer (dict), the rest defaults."""
    out = []
    for r in rows:
        out.append(
            {
                "item_id": r["item_id"],
                "media_uri": r.get("media_uri"),
                "text": r.get("text"),
                "fields": json.dumps(r["fields"]) if "fields" in r else None,
                "record": json.dumps(r["record"]),
                "answer": json.dumps(r["answer"]),
                "label": r["answer"].get("label"),
                "confidence": r.get("confidence", 0.9),
                "sites": r.get("sites", "site-a,site-b"),
                "n_annotators": r.get("n_annotators", 3),
                "method": "dawid_skene",
                "qa_version": "qa-1",
            }
        )
    df = pd.DataFrame(out)
    return df.astype({"n_annotators": "int32", "media_uri": "str", "text": "str", "label": "str", "fields": "str"})


def classification() -> tuple[pd.DataFrame, DeliveryContext]:
    rows = [
        {
            "item_id": "i-2",
            "media_uri": "s3://acme/img/2.jpg",
            "record": {"sku": "B-2", "url": "s3://acme/img/2.jpg", "note": '=HYPERLINK("x")', "price": -3.5},
            "answer": {"label": "dog"},
            "confidence": 0.75,
        },
        {
            "item_id": "i-1",
            "media_uri": "s3://acme/img/1.jpg",
            "record": {"sku": "A-1", "url": "s3://acme/img/1.jpg", "note": 'plain, "quoted"\nline', "price": 10},
            "answer": {"label": "cat"},
            "confidence": None,
            "sites": "site-a",
            "n_annotators": 1,
        },
        {
            "item_id": "i-3",
            "media_uri": "s3://acme/img/3.jpg",
            "record": {"sku": "C-3", "url": "s3://acme/img/3.jpg", "note": "2024-01-05", "price": 0.1},
            "answer": {"label": "cat"},
            "confidence": 1.0,
        },
    ]
    ctx = DeliveryContext(
        TaskType.IMAGE_CLASSIFICATION, classes=("cat", "dog"), job_name="acme-7", creation_date=CREATED
    )
    return frame(rows), ctx


def detection() -> tuple[pd.DataFrame, DeliveryContext]:
    rows = [
        {
            "item_id": "d-1",
            "media_uri": "s3://acme/img/a.jpg",
            "record": {"width": 200, "height": 100},
            "answer": {
                "boxes": [
                    {"label": "car", "x": 10, "y": 20, "width": 50, "height": 50},
                    {"label": "person", "x": 0, "y": 0, "width": 100, "height": 100},
                ]
            },
            "confidence": 0.8,
        },
        {
            "item_id": "d-2",
            "media_uri": "https://cdn.example/b.png?sig=abc",
            "record": {"camera": "north"},
            "answer": {"boxes": [{"label": "person", "x": 12.5, "y": 25, "width": 25, "height": 50}]},
            "confidence": 0.6,
        },
        {
            "item_id": "d-3",
            "media_uri": "s3://acme/img/c.jpg",
            "record": {"width": 640, "height": 480},
            "answer": {"boxes": []},
        },
    ]
    ctx = DeliveryContext(
        TaskType.OBJECT_DETECTION,
        classes=("car", "person"),
        job_name="acme-8",
        creation_date=CREATED,
        image_sizes={"https://cdn.example/b.png?sig=abc": (400, 300)},
    )
    return frame(rows), ctx


def transcription() -> tuple[pd.DataFrame, DeliveryContext]:
    rows = [
        {
            "item_id": "a-1",
            "media_uri": "s3://acme/audio/1.wav",
            "record": {"speaker": "s1"},
            "answer": {"text": "hello\tworld"},
        },
        {
            "item_id": "a-2",
            "media_uri": "s3://acme/audio/2.wav",
            "record": {"speaker": "s2"},
            "answer": {"text": "+254 700"},
        },
    ]
    return frame(rows), DeliveryContext(TaskType.AUDIO_TRANSCRIPTION, job_name="acme-9", creation_date=CREATED)


def listing() -> tuple[pd.DataFrame, DeliveryContext]:
    rows = [
        {
            "item_id": "l-1",
            "text": "Cafe Uhuru, Moi Ave",
            "fields": {"name": "Cafe Uhuru", "phone": "0700", "open": "yes"},
            "record": {"name": "Cafe Uhuru", "phone": "0700"},
            "answer": {"fields": {"name": "Café Uhuru", "phone": "+254700000000", "open": True}, "listing_valid": True},
        },
        {
            "item_id": "l-2",
            "text": "Duka",
            "fields": {"name": "Duka", "phone": None, "open": "no"},
            "record": {"name": "Duka", "phone": None},
            "answer": {"fields": {"name": "Duka", "phone": None, "open": False}, "listing_valid": False},
        },
    ]
    ctx = DeliveryContext(
        TaskType.LISTING_VERIFICATION, job_name="acme-10", creation_date=CREATED, fields=("name", "phone", "open")
    )
    return frame(rows), ctx


def text_classification() -> tuple[pd.DataFrame, DeliveryContext]:
    rows = [
        {
            "item_id": "t-1",
            "text": "The food was delicious",
            "record": {"review": "The food was delicious"},
            "answer": {"label": "positive"},
        },
        {
            "item_id": "t-2",
            "text": "Cold and late",
            "record": {"review": "Cold and late"},
            "answer": {"label": "negative"},
        },
    ]
    ctx = DeliveryContext(
        TaskType.TEXT_CLASSIFICATION, classes=("negative", "positive"), job_name="mood", creation_date=CREATED
    )
    return frame(rows), ctx


ALL_CASES = [classification, detection, transcription, listing, text_classification]


# --- JSON Lines ------------------------------------------------------------------------------------


def test_jsonl_rows_sorted_with_nested_record_answer_and_lineage() -> None:
    df, ctx = classification()
    body, rows = write_jsonl(df, ctx)
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert rows == 3
    assert body.endswith(b"\n")
    assert [r["item_id"] for r in lines] == ["i-1", "i-2", "i-3"]
    assert list(lines[0]) == ["item_id", "record", "answer", "confidence", "lineage"]
    first = lines[0]
    assert first["record"] == {"sku": "A-1", "url": "s3://acme/img/1.jpg", "note": 'plain, "quoted"\nline', "price": 10}
    assert first["answer"] == {"label": "cat"}
    assert first["confidence"] is None
    assert first["lineage"] == {"sites": ["site-a"], "n_annotators": 1, "method": "dawid_skene", "qa_version": "qa-1"}
    assert lines[1]["lineage"]["sites"] == ["site-a", "site-b"]
    assert lines[2]["confidence"] == 1.0


def test_jsonl_loads_with_pandas_and_pyarrow() -> None:
    df, ctx = classification()
    body, _ = write_jsonl(df, ctx)
    via_pandas = pd.read_json(io.BytesIO(body), lines=True, dtype=False)
    assert via_pandas["item_id"].tolist() == ["i-1", "i-2", "i-3"]
    assert via_pandas["record"].tolist()[1]["note"] == '=HYPERLINK("x")'
    via_arrow = pa_json.read_json(io.BytesIO(body))
    assert via_arrow.num_rows == 3
    assert via_arrow.column("answer").to_pylist() == [{"label": "cat"}, {"label": "dog"}, {"label": "cat"}]


def test_jsonl_escapes_control_characters_in_ids() -> None:
    df, ctx = classification()
    df.loc[0, "item_id"] = 'odd\tid "quoted" \\ \x01'
    body, _ = write_jsonl(df, ctx)
    ids = [json.loads(line)["item_id"] for line in body.decode().splitlines()]
    assert 'odd\tid "quoted" \\ \x01' in ids


def test_jsonl_keeps_one_line_per_row_for_pretty_printed_records() -> None:
    df, ctx = classification()
    df.loc[0, "record"] = json.dumps({"a": 1, "b": "x"}, indent=2)
    body, rows = write_jsonl(df, ctx)
    lines = body.decode().splitlines()
    assert rows == len(lines) == 3
    assert {"a": 1, "b": "x"} in [json.loads(line)["record"] for line in lines]


def test_jsonl_rejects_a_record_that_is_not_an_object() -> None:
    df, ctx = classification()
    df.loc[0, "record"] = "[1, 2]"
    with pytest.raises(ValueError, match="not JSON objects"):
        write_jsonl(df, ctx)


# --- Parquet ---------------------------------------------------------------------------------------


def test_parquet_round_trips_values_with_pyarrow_and_pandas() -> None:
    df, ctx = classification()
    body, rows = write_parquet(df, ctx)
    table = pq.read_table(io.BytesIO(body))
    assert rows == table.num_rows == 3
    assert table.column_names == ["item_id", "record", "answer", "confidence", "lineage"]
    got = table.to_pylist()
    assert [r["item_id"] for r in got] == ["i-1", "i-2", "i-3"]
    assert got[1]["record"] == {"sku": "B-2", "url": "s3://acme/img/2.jpg", "note": '=HYPERLINK("x")', "price": -3.5}
    # A date-looking string stays the client's string, not a timestamp.
    assert got[2]["record"]["note"] == "2024-01-05"
    assert got[0]["answer"] == {"label": "cat"}
    assert got[0]["confidence"] is None
    assert got[1]["lineage"] == {
        "sites": ["site-a", "site-b"],
        "n_annotators": 3,
        "method": "dawid_skene",
        "qa_version": "qa-1",
    }
    via_pandas = pd.read_parquet(io.BytesIO(body))
    assert list(via_pandas.index) == [0, 1, 2]
    assert via_pandas["item_id"].tolist() == ["i-1", "i-2", "i-3"]
    assert via_pandas["answer"].iloc[1] == {"label": "dog"}


def test_parquet_declares_types_and_writes_no_pandas_metadata() -> None:
    df, ctx = detection()
    body, _ = write_parquet(df, ctx)
    meta = pq.ParquetFile(io.BytesIO(body)).metadata
    schema = pq.read_schema(io.BytesIO(body))
    assert b"pandas" not in (schema.metadata or {})
    assert schema.metadata[b"kazi.task_type"] == b"object_detection"
    boxes = schema.field("answer").type.field("boxes").type
    assert boxes.value_type.field("x").type == pa.float64()
    assert schema.field("lineage").type.field("n_annotators").type == pa.int32()
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.created_by.startswith("parquet-cpp-arrow version")
    assert meta.metadata is not None


def test_parquet_detection_boxes_are_typed_lists() -> None:
    df, ctx = detection()
    body, _ = write_parquet(df, ctx)
    got = pq.read_table(io.BytesIO(body)).column("answer").to_pylist()
    assert got[0]["boxes"][0] == {"label": "car", "x": 10.0, "y": 20.0, "width": 50.0, "height": 50.0}
    assert got[2]["boxes"] == []


def test_parquet_falls_back_to_text_for_a_field_with_mixed_types() -> None:
    df, ctx = classification()
    records = [{"code": 7}, {"code": "n/a"}, {"code": None}]
    df["record"] = [json.dumps(r) for r in records]
    body, _ = write_parquet(df, ctx)
    got = pq.read_table(io.BytesIO(body)).column("record").to_pylist()
    assert got == [{"code": "n/a"}, {"code": "7"}, {"code": None}]  # rows sorted: i-1, i-2, i-3


# --- CSV -------------------------------------------------------------------------------------------


def read_csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def test_csv_flattens_and_escapes_formula_cells() -> None:
    df, ctx = classification()
    body, rows = write_csv(df, ctx)
    got = read_csv(body)
    assert rows == len(got) == 3
    assert list(got[0]) == [
        "item_id",
        "record.sku",
        "record.url",
        "record.note",
        "record.price",
        "answer.label",
        "confidence",
        "lineage.sites",
        "lineage.n_annotators",
        "lineage.method",
        "lineage.qa_version",
    ]
    by_id = {r["item_id"]: r for r in got}
    assert by_id["i-2"]["record.note"] == '\'=HYPERLINK("x")'
    assert by_id["i-2"]["record.price"] == "-3.5"  # a plain number is not a formula
    assert by_id["i-1"]["record.note"] == 'plain, "quoted"\nline'
    assert by_id["i-1"]["answer.label"] == "cat"
    assert by_id["i-1"]["confidence"] == ""
    assert json.loads(by_id["i-2"]["lineage.sites"]) == ["site-a", "site-b"]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tSUM(A1)", "'\tSUM(A1)"),
        ("\rSUM(A1)", "'\rSUM(A1)"),
        ("-12.5", "-12.5"),
        ("+254", "+254"),
        ("1e-3", "1e-3"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_escape_formulas(cell: str, expected: str) -> None:
    assert escape_formulas(pa.array([cell])).to_pylist() == [expected]


def test_csv_escapes_tab_and_carriage_return_cells_and_reads_back() -> None:
    df, ctx = transcription()
    df.loc[0, "answer"] = json.dumps({"text": "\tstarts with tab"})
    df.loc[1, "answer"] = json.dumps({"text": "\rstarts with CR"})
    body, _ = write_csv(df, ctx)
    got = read_csv(body)
    assert [r["answer.text"] for r in got] == ["'\tstarts with tab", "'\rstarts with CR"]


def test_csv_detection_boxes_are_json_in_one_cell() -> None:
    df, ctx = detection()
    body, _ = write_csv(df, ctx)
    got = {r["item_id"]: r for r in read_csv(body)}
    boxes = json.loads(got["d-1"]["answer.boxes"])
    assert boxes[0] == {"label": "car", "x": 10.0, "y": 20.0, "width": 50.0, "height": 50.0}
    assert json.loads(got["d-3"]["answer.boxes"]) == []


def test_csv_listing_fields_become_columns() -> None:
    df, ctx = listing()
    body, _ = write_csv(df, ctx)
    got = {r["item_id"]: r for r in read_csv(body)}
    assert got["l-1"]["answer.fields.name"] == "Café Uhuru"
    assert got["l-1"]["answer.fields.phone"] == "+254700000000"
    assert got["l-2"]["answer.fields.open"] == "false"
    assert got["l-2"]["answer.fields.phone"] == ""


# --- COCO ------------------------------------------------------------------------------------------


def load_coco(body: bytes, tmp_path: Path) -> COCO:
    path = tmp_path / "coco.json"
    path.write_bytes(body)
    return COCO(str(path))


def test_coco_detection_loads_with_pycocotools_and_converts_percent_to_pixels(tmp_path: Path) -> None:
    df, ctx = detection()
    body, rows = write_coco(df, ctx)
    coco = load_coco(body, tmp_path)
    assert rows == 3
    assert sorted(coco.getImgIds()) == [1, 2, 3]
    assert coco.imgs[1]["file_name"] == "img/a.jpg"
    assert coco.imgs[2]["file_name"] == "b.png"
    assert (coco.imgs[2]["width"], coco.imgs[2]["height"]) == (400, 300)  # from image_sizes
    assert (coco.imgs[3]["width"], coco.imgs[3]["height"]) == (640, 480)  # from the record
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["car", "person"]
    car = coco.loadAnns(coco.getAnnIds(imgIds=[1], catIds=[1]))
    assert car == [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 20, 100, 50], "area": 5000, "iscrowd": 0, "score": 0.8}
    ]
    # 12.5% of 400 px = 50, 25% of 300 = 75, 25% of 400 = 100, 50% of 300 = 150.
    (second,) = coco.loadAnns(coco.getAnnIds(imgIds=[2]))
    assert second["bbox"] == [50, 75, 100, 150]
    assert second["area"] == 15000
    assert coco.getAnnIds(imgIds=[3]) == []
    assert sorted(coco.getImgIds(catIds=[2])) == [1, 2]


def test_coco_classification_has_one_annotation_per_image_without_bbox(tmp_path: Path) -> None:
    df, ctx = classification()
    body, _ = write_coco(df, ctx)
    coco = load_coco(body, tmp_path)
    anns = coco.loadAnns(coco.getAnnIds())
    assert [(a["image_id"], a["category_id"]) for a in anns] == [(1, 1), (2, 2), (3, 1)]
    assert all("bbox" not in a for a in anns)
    assert "score" not in anns[0]  # i-1 has no confidence
    assert sorted(coco.getImgIds(catIds=[1])) == [1, 3]
    assert coco.imgs[1]["kazi_item_id"] == "i-1"
    assert json.loads(body)["info"]["date_created"] == CREATED


def test_coco_needs_image_sizes_for_detection() -> None:
    df, ctx = detection()
    df.loc[df["item_id"] == "d-3", "record"] = "{}"
    with pytest.raises(ValueError, match=r"image size unknown for 1 item\(s\), e.g. \['d-3'\]"):
        write_coco(df, ctx)


def test_coco_rejects_labels_outside_the_classes() -> None:
    df, ctx = classification()
    df.loc[0, "answer"] = json.dumps({"label": "horse"})
    with pytest.raises(ValueError, match="horse"):
        write_coco(df, ctx)


@pytest.mark.parametrize("case", [transcription, listing, text_classification])
def test_coco_does_not_apply_to_non_image_tasks(case: Any) -> None:
    df, ctx = case()
    with pytest.raises(FormatNotApplicable):
        write_coco(df, ctx)


# --- Label Studio ----------------------------------------------------------------------------------


def test_label_studio_classification_tasks() -> None:
    df, ctx = classification()
    body, rows = write_label_studio(df, ctx)
    tasks = json.loads(body)
    assert rows == len(tasks) == 3
    first = tasks[0]
    assert first["data"] == {
        "sku": "A-1",
        "url": "s3://acme/img/1.jpg",
        "note": 'plain, "quoted"\nline',
        "price": 10,
        "item_id": "i-1",
        "image": "s3://acme/img/1.jpg",
    }
    assert first["annotations"] == [
        {
            "result": [
                {
                    "id": "label",
                    "from_name": "label",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": ["cat"]},
                }
            ],
            "ground_truth": False,
            "was_cancelled": False,
        }
    ]
    assert first["meta"]["kazi"] == {
        "confidence": None,
        "sites": ["site-a"],
        "n_annotators": 1,
        "method": "dawid_skene",
        "qa_version": "qa-1",
    }
    assert tasks[1]["meta"]["kazi"]["confidence"] == 0.75


def test_label_studio_detection_keeps_percent_boxes() -> None:
    df, ctx = detection()
    df.loc[df["item_id"] == "d-2", "answer"] = json.dumps(
        {"boxes": [{"label": "person", "x": 12.5, "y": 25, "width": 25, "height": 50, "rotation": 15}]}
    )
    tasks = json.loads(write_label_studio(df, ctx)[0])
    result = tasks[0]["annotations"][0]["result"]
    assert [(r["id"], r["from_name"], r["to_name"], r["type"]) for r in result] == [
        ("box0", "box", "image", "rectanglelabels"),
        ("box1", "box", "image", "rectanglelabels"),
    ]
    assert result[0]["value"] == {
        "x": 10,
        "y": 20,
        "width": 50,
        "height": 50,
        "rotation": 0,
        "rectanglelabels": ["car"],
    }
    assert (result[0]["original_width"], result[0]["original_height"]) == (200, 100)
    assert tasks[1]["annotations"][0]["result"][0]["value"]["rotation"] == 15
    assert tasks[2]["annotations"][0]["result"] == []


def test_label_studio_listing_fields_follow_the_label_config() -> None:
    df, ctx = listing()
    tasks = json.loads(write_label_studio(df, ctx)[0])
    assert tasks[0]["data"] == {
        "name": "Cafe Uhuru",
        "phone": "0700",
        "item_id": "l-1",
        "fields_name": "Cafe Uhuru",
        "fields_phone": "0700",
        "fields_open": "yes",
    }
    result = tasks[0]["annotations"][0]["result"]
    assert [(r["from_name"], r["to_name"], r["type"], r["value"]) for r in result] == [
        ("field_name", "fields_name", "textarea", {"text": ["Café Uhuru"]}),
        ("field_phone", "fields_phone", "textarea", {"text": ["+254700000000"]}),
        ("field_open", "fields_open", "choices", {"choices": ["yes"]}),
        ("listing_valid", "fields_name", "choices", {"choices": ["yes"]}),
    ]
    # A field without a value gives no region.
    second = tasks[1]["annotations"][0]["result"]
    assert [(r["from_name"], r["value"]) for r in second] == [
        ("field_name", {"text": ["Duka"]}),
        ("field_open", {"choices": ["no"]}),
        ("listing_valid", {"choices": ["no"]}),
    ]


def test_label_studio_replaces_a_client_field_named_like_ours() -> None:
    df, ctx = classification()
    df.loc[0, "record"] = json.dumps({"image": "old.jpg", "item_id": "theirs", "keep": 1})
    tasks = json.loads(write_label_studio(df, ctx)[0])
    data = next(t["data"] for t in tasks if t["data"]["item_id"] == "i-2")
    assert data == {"keep": 1, "item_id": "i-2", "image": "s3://acme/img/2.jpg"}


def test_label_studio_transcription_textarea_and_optional_label() -> None:
    df, ctx = transcription()
    df.loc[1, "answer"] = json.dumps({"text": "+254 700", "label": "noisy"})
    tasks = json.loads(write_label_studio(df, ctx)[0])
    assert tasks[0]["data"]["audio"] == "s3://acme/audio/1.wav"
    assert tasks[0]["annotations"][0]["result"] == [
        {
            "id": "transcription",
            "from_name": "transcription",
            "to_name": "audio",
            "type": "textarea",
            "value": {"text": ["hello\tworld"]},
        }
    ]
    assert [r["from_name"] for r in tasks[1]["annotations"][0]["result"]] == ["label", "transcription"]


def test_label_studio_classification_with_schema_fields() -> None:
    df, ctx = text_classification()
    df.loc[0, "answer"] = json.dumps({"label": "positive", "fields": {"note": "great", "spam": False}})
    tasks = json.loads(write_label_studio(df, ctx)[0])
    result = tasks[0]["annotations"][0]["result"]
    assert [(r["from_name"], r["to_name"], r["value"]) for r in result] == [
        ("label", "text", {"choices": ["positive"]}),
        ("field_note", "text", {"text": ["great"]}),
        ("field_spam", "text", {"choices": ["no"]}),
    ]


# --- Ground Truth ----------------------------------------------------------------------------------


def gt_lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.decode().splitlines()]


def test_ground_truth_image_classification_lines() -> None:
    df, ctx = classification()
    body, rows = write_ground_truth(df, ctx)
    lines = gt_lines(body)
    assert rows == len(lines) == 3
    assert lines[1] == {
        "source-ref": "s3://acme/img/2.jpg",
        "sku": "B-2",
        "url": "s3://acme/img/2.jpg",
        "note": '=HYPERLINK("x")',
        "price": -3.5,
        "acme-7": 1,
        "acme-7-metadata": {
            "class-name": "dog",
            "confidence": 0.75,
            "type": "groundtruth/image-classification",
            "job-name": "acme-7",
            "human-annotated": "yes",
            "creation-date": CREATED,
        },
    }
    assert lines[0]["acme-7-metadata"]["confidence"] == 0.0  # no confidence: Ground Truth's 0.0


def test_ground_truth_text_classification_uses_source() -> None:
    df, ctx = text_classification()
    lines = gt_lines(write_ground_truth(df, ctx)[0])
    assert lines[0]["source"] == "The food was delicious"
    assert "source-ref" not in lines[0]
    assert lines[0]["mood"] == 1
    assert lines[0]["mood-metadata"]["type"] == "groundtruth/text-classification"


def test_ground_truth_detection_in_whole_pixels() -> None:
    df, ctx = detection()
    lines = gt_lines(write_ground_truth(df, ctx)[0])
    assert lines[0]["acme-8"] == {
        "image_size": [{"width": 200, "height": 100, "depth": 3}],
        "annotations": [
            {"class_id": 0, "left": 20, "top": 20, "width": 100, "height": 50},
            {"class_id": 1, "left": 0, "top": 0, "width": 200, "height": 100},
        ],
    }
    meta = lines[0]["acme-8-metadata"]
    assert meta["objects"] == [{"confidence": 0.8}, {"confidence": 0.8}]
    assert meta["class-map"] == {"0": "car", "1": "person"}
    assert meta["type"] == "groundtruth/object-detection"
    assert lines[2]["acme-8"]["annotations"] == []


def test_ground_truth_custom_types_carry_the_answer() -> None:
    df, ctx = transcription()
    lines = gt_lines(write_ground_truth(df, ctx)[0])
    assert lines[0]["acme-9"] == {"text": "hello\tworld"}
    assert lines[0]["acme-9-metadata"]["type"] == "groundtruth/custom"
    assert lines[0]["speaker"] == "s1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"creation_date": None}, "creation_date"),
        ({"job_name": "x-ref"}, "-ref"),
        ({"job_name": "a-metadata-b"}, "-metadata"),
    ],
)
def test_ground_truth_rejects_bad_settings(change: dict[str, Any], message: str) -> None:
    df, ctx = classification()
    bad = DeliveryContext(**{**ctx.__dict__, **change})
    with pytest.raises(ValueError, match=message):
        write_ground_truth(df, bad)


# --- Registry, determinism, joins ------------------------------------------------------------------


def test_registry_covers_every_delivery_format_with_distinct_names() -> None:
    assert set(FORMAT_WRITERS) == set(DeliveryFormat)
    names = [w.file_name for w in FORMAT_WRITERS.values()]
    assert len(set(names)) == len(names)


def test_check_formats_names_every_inapplicable_format() -> None:
    check_formats(TaskType.OBJECT_DETECTION, list(DeliveryFormat))
    with pytest.raises(FormatNotApplicable, match=r"\['coco'\]"):
        check_formats(TaskType.AUDIO_TRANSCRIPTION, [DeliveryFormat.JSONL, DeliveryFormat.COCO])


def test_write_formats_writes_each_requested_format_once() -> None:
    df, ctx = classification()
    out = write_formats(df, ctx, [DeliveryFormat.CSV, DeliveryFormat.JSONL, DeliveryFormat.CSV])
    assert [(name, rows) for name, _, rows in out] == [("labels.csv", 3), ("labels.jsonl", 3)]


@pytest.mark.parametrize("case", ALL_CASES)
@pytest.mark.parametrize("fmt", list(DeliveryFormat))
def test_every_writer_is_deterministic_and_ignores_row_order(case: Any, fmt: DeliveryFormat) -> None:
    df, ctx = case()
    writer = FORMAT_WRITERS[fmt]
    if ctx.task_type not in writer.task_types:
        with pytest.raises(FormatNotApplicable):
            writer.write(df, ctx)
        return
    first, rows = writer.write(df, ctx)
    second, _ = writer.write(df, ctx)
    shuffled, _ = writer.write(df.iloc[::-1].reset_index(drop=True), ctx)
    assert first == second == shuffled
    assert rows == len(df)


def test_writers_give_the_same_bytes_in_a_fresh_process() -> None:
    script = """
import hashlib, json, sys
sys.path.insert(0, ".")
from tests.deliver.test_deliver_formats import ALL_CASES
from flows.deliver.formats import FORMAT_WRITERS
out = {}
for case in ALL_CASES:
    df, ctx = case()
    for fmt, w in FORMAT_WRITERS.items():
        if ctx.task_type in w.task_types:
            out[f"{case.__name__}/{fmt}"] = hashlib.sha256(w.write(df, ctx)[0]).hexdigest()
print(json.dumps(out, sort_keys=True))
"""
    root = Path(__file__).resolve().parents[2]
    runs = [
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout
        for seed in ("1", "2")  # str hashing differs between these two processes
    ]
    here = {}
    for case in ALL_CASES:
        df, ctx = case()
        for fmt, w in FORMAT_WRITERS.items():
            if ctx.task_type in w.task_types:
                here[f"{case.__name__}/{fmt}"] = hashlib.sha256(w.write(df, ctx)[0]).hexdigest()
    assert json.loads(runs[0]) == json.loads(runs[1]) == here


def test_writers_reject_duplicate_item_ids() -> None:
    df, ctx = classification()
    df.loc[1, "item_id"] = "i-2"
    with pytest.raises(ValueError, match="duplicate item_id"):
        write_jsonl(df, ctx)


def test_build_deliverable_joins_and_excludes_with_reasons() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "media_uri": ["s3://x/a", "s3://x/b", "s3://x/c", "s3://x/d"],
            "text": [None] * 4,
            "record": ['{"k":1}', '{"k":2}', '{"k":3}', '{"k":4}'],
        }
    )
    consolidated = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "gold-1"],
            "answer": ['{"label":"cat"}', '{"label":"dog"}', None, '{"label":"cat"}'],
            "label": ["cat", "dog", None, "cat"],
            "confidence": [0.9, 0.4, None, 1.0],
            "n_annotators": [3, 3, 3, 3],
            "method": ["dawid_skene"] * 4,
            "sites": ["s1", "s1,s2", "s2", "s1"],
            "needs_rework": [False, True, False, False],
        }
    )
    result = build_deliverable(items, consolidated, qa_version="qa-9")
    assert result.frame["item_id"].tolist() == ["a"]
    assert result.frame["qa_version"].tolist() == ["qa-9"]
    assert result.excluded.to_dict("records") == [
        {"item_id": "b", "reason": "failed_qa"},
        {"item_id": "c", "reason": "no_answer"},
        {"item_id": "d", "reason": "no_answer"},
    ]
    body, rows = write_jsonl(result.frame, DeliveryContext(TaskType.IMAGE_CLASSIFICATION, classes=("cat", "dog")))
    assert rows == 1
    assert json.loads(body)["record"] == {"k": 1}


def test_build_deliverable_rejects_duplicate_items() -> None:
    items = pd.DataFrame(
        {"item_id": ["a", "a"], "media_uri": [None, None], "text": [None, None], "record": ["{}", "{}"]}
    )
    consolidated = pd.DataFrame(
        columns=["item_id", "answer", "label", "confidence", "n_annotators", "method", "sites", "needs_rework"]
    )
    with pytest.raises(ValueError, match="items has 1 duplicate"):
        build_deliverable(items, consolidated, qa_version="q")


def test_read_image_size_from_header_bytes() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (37, 21)).save(buf, format="PNG")
    assert read_image_size(buf.getvalue()[:64]) == (37, 21)


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_writer_handles_an_empty_delivery(case: Any, tmp_path: Path) -> None:
    df, ctx = case()
    empty = df.iloc[0:0]
    for fmt, writer in FORMAT_WRITERS.items():
        if ctx.task_type not in writer.task_types:
            continue
        body, rows = writer.write(empty, ctx)
        assert rows == 0, fmt
        if fmt == DeliveryFormat.PARQUET:
            assert pq.read_table(io.BytesIO(body)).num_rows == 0
        elif fmt == DeliveryFormat.CSV:
            assert read_csv(body) == [] and body.startswith(b'"item_id"')
        elif fmt == DeliveryFormat.COCO:
            coco = load_coco(body, tmp_path)
            assert coco.getImgIds() == [] and len(coco.getCatIds()) == len(ctx.classes)
        elif fmt == DeliveryFormat.LABEL_STUDIO:
            assert json.loads(body) == []
        else:
            assert body == b""


def test_context_from_work_order() -> None:
    wo = WorkOrder.model_validate(
        {
            "id": "acme-0042",
            "client_id": "acme",
            "source": {"uri": "s3://acme-in/batch", "format": "csv"},
            "task_type": "listing_verification",
            "label_schema": {"fields": [{"name": "phone", "kind": "phone"}, {"name": "open", "kind": "boolean"}]},
            "deadline": "2026-12-01T00:00:00Z",
            "price_per_item": 0.1,
            "pay_per_task": 0.03,
            "delivery": {"uri": "s3://acme-out/labels"},
        }
    )
    ctx = DeliveryContext.from_work_order(wo, creation_date=CREATED, image_sizes={"s3://x/a.jpg": (10, 20)})
    assert (ctx.task_type, ctx.job_name, ctx.fields, ctx.classes) == (
        TaskType.LISTING_VERIFICATION,
        "acme-0042",
        ("phone", "open"),
        (),
    )
    assert ctx.image_sizes == {"s3://x/a.jpg": (10, 20)}
