"""Delivered files, read back from the real S3, load in the tools clients use.

No Prefect here: the package functions the flow calls (:func:`prepare_package`, :func:`commit_package`)
write a delivery from inputs staged in a unique test prefix; each file is then fetched from S3 and opened
with its consumer: pycocotools for COCO, pandas and pyarrow for Parquet and JSON Lines, the ``csv`` module
for CSV (formula cells must come back escaped).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from PIL import Image, UnidentifiedImageError
from pycocotools.coco import COCO

from flows.core.models import IngestResult, QAResult, WorkOrder
from flows.core.s3 import ObjectStore, parse_uri
from flows.core.schemas import ANNOTATIONS, CONSOLIDATED, ITEMS
from flows.core.settings import Settings
from flows.core.workspace import workspace, write_table
from flows.deliver.manifest import verify
from flows.deliver.package import (
    IMAGE_HEAD_BYTES,
    Commit,
    PreparedPackage,
    commit_package,
    package_reader,
    prepare_package,
    read_annotation_log,
)

pytestmark = pytest.mark.s3

CLASSES = ["cat", "dog"]
ALL_FORMATS = ["jsonl", "parquet", "csv", "coco", "label_studio", "ground_truth"]
T0 = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


@dataclass
class Staged:
    settings: Settings
    store: ObjectStore
    work_order: WorkOrder
    qa: QAResult
    ingest: IngestResult
    annotations: pd.DataFrame
    sizes: dict[str, tuple[int, int]]  # media uri -> true pixel size

    def prepare(self) -> PreparedPackage:
        return prepare_package(
            self.store,
            self.work_order,
            self.qa,
            self.ingest,
            self.annotations,
            countries={"site-a": "KE"},
            image_sizes_uri=workspace(self.settings, self.work_order).uri("deliver", "image-sizes.parquet"),
        )

    def deliver(self) -> tuple[Commit, dict[str, bytes]]:
        commit = commit_package(self.store, self.prepare())
        bucket, key = parse_uri(commit.prefix_uri)
        files = {o.key[len(key) :]: self.store.get_bytes(bucket, o.key) for o in self.store.list_objects(bucket, key)}
        return commit, files


def image(fmt: str, width: int, height: int, **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 256, 90, 30)).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def stage(
    settings: Settings,
    store: ObjectStore,
    s3_prefix: str,
    unique: str,
    task_type: str,
    rows: list[dict[str, Any]],
    formats: list[str],
) -> Staged:
    """Stage one work order's inputs; each row gives ``item_id``, ``record``, ``answer``, and ``image`` bytes."""
    bucket = settings.workspace_bucket
    base = f"s3://{bucket}/{s3_prefix}"
    work_order = WorkOrder.model_validate(
        {
            "id": f"shop-{unique}",
            "client_id": "shop",
            "source": {"uri": f"{base}in.parquet", "format": "parquet"},
            "task_type": task_type,
            "columns": {"media_uri": "url"},
            "label_schema": {"classes": CLASSES},
            "deadline": "2026-12-01T00:00:00Z",
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": f"{base}out", "formats": formats},
        }
    )
    ws = workspace(settings, work_order)
    sizes: dict[str, tuple[int, int]] = {}
    media: list[str] = []
    for r in rows:
        key = f"{s3_prefix}media/{r['item_id']}.{r.get('ext', 'png')}"
        if r.get("image") is not None:
            store.put_bytes(bucket, key, r["image"])
            with contextlib.suppress(UnidentifiedImageError), Image.open(io.BytesIO(r["image"])) as img:
                sizes[f"s3://{bucket}/{key}"] = img.size
        media.append(f"s3://{bucket}/{key}")
    ids = [r["item_id"] for r in rows]
    records = [json.dumps({**r["record"], "url": m}, ensure_ascii=False) for r, m in zip(rows, media, strict=True)]
    items = pa.Table.from_pydict(
        {
            "item_id": ids,
            "client_item_id": ids,
            "text": [None] * len(rows),
            "media_uri": media,
            "fields": [None] * len(rows),
            "record": records,
            "source_object": [f"{base}in.parquet"] * len(rows),
            "source_row": list(range(len(rows))),
            "shard": [0] * len(rows),
        },
        schema=ITEMS,
    )
    write_table(store, ws.uri("ingest", "v1", "items", "shard=00", "part-0.parquet"), items)
    answers = [json.dumps(r["answer"]) for r in rows]
    write_table(
        store,
        ws.uri("qa", "round=0", "consolidated.parquet"),
        pa.Table.from_pydict(
            {
                "item_id": ids,
                "answer": answers,
                "label": [r["answer"].get("label") for r in rows],
                "confidence": [0.9] * len(rows),
                "n_annotators": [3] * len(rows),
                "method": ["majority_vote"] * len(rows),
                "sites": ["site-a"] * len(rows),
                "needs_rework": [False] * len(rows),
            },
            schema=CONSOLIDATED,
        ),
    )
    report_key = ws.key("qa", "round=0", "report", "index.html")
    store.put_bytes(bucket, report_key, b"<!doctype html><title>QA</title>")
    store.put_bytes(bucket, ws.key("qa", "round=0", "validation.json"), b'{"success": true}')
    log = pa.Table.from_pylist(
        [
            {
                "item_id": item,
                "batch_id": "b1",
                "site_id": "site-a",
                "project_id": 1,
                "task_id": n,
                "annotation_id": 10 * n + k,
                "annotator": f"w-{k}",
                "answer": answer,
                "label": None,
                "lead_time_s": 20.0,
                "created_at": T0 + timedelta(minutes=n),
                "updated_at": T0 + timedelta(minutes=n, seconds=k),
                "skipped": False,
                "round": 0,
            }
            for n, (item, answer) in enumerate(zip(ids, answers, strict=True))
            for k in range(3)
        ],
        schema=ANNOTATIONS,
    )
    ingest = IngestResult(
        work_order_id=work_order.id,
        ingest_version="v1",
        items_uri=ws.uri("ingest", "v1", "items") + "/",
        quarantine_uri=ws.uri("ingest", "v1", "quarantine.parquet"),
        duplicates_uri=ws.uri("ingest", "v1", "duplicates.parquet"),
        manifest_uri=ws.uri("ingest", "v1", "manifest.json"),
        rows_read=len(rows),
        accepted=len(rows),
        quarantined=0,
        duplicates=0,
        files_quarantined=0,
    )
    qa = QAResult(
        work_order_id=work_order.id,
        results_uri=ws.uri("qa", "round=0", "consolidated.parquet"),
        report_uri="https://example.invalid/report",
        report_key=report_key,
        validation_uri=ws.uri("qa", "round=0", "validation.json"),
        data_docs_uri=None,
        passed=True,
        items=len(rows),
        rework_items=0,
    )
    return Staged(settings, store, work_order, qa, ingest, log.to_pandas(), sizes)


@pytest.fixture
def cleanup(store, stack_settings) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    roots: list[str] = []
    yield roots
    for root in roots:
        store.delete_prefix(stack_settings.workspace_bucket, root)


def classification_rows() -> list[dict[str, Any]]:
    return [
        {"item_id": "c-1", "record": {"sku": "A1", "note": "=1+2"}, "answer": {"label": "cat"}},
        {"item_id": "c-2", "record": {"sku": "A2", "note": "@SUM(A1:A3)"}, "answer": {"label": "dog"}},
        {"item_id": "c-3", "record": {"sku": "A3", "note": "-cmd|' /C calc'!A0"}, "answer": {"label": "cat"}},
        {"item_id": "c-4", "record": {"sku": "+254700000001", "note": "-5"}, "answer": {"label": "dog"}},
        {
            "item_id": "c-5",
            "record": {"sku": "A5", "note": 'Nairobi — café, "quoted"\nsecond line'},
            "answer": {"label": "cat"},
        },
    ]


@pytest.fixture
def classification(stack_settings, store, s3_prefix, unique, cleanup) -> Staged:  # type: ignore[no-untyped-def]
    rows = classification_rows()
    for n, r in enumerate(rows):
        r["image"] = image("PNG", 30 + 7 * n, 20 + 3 * n)
    # A JPEG whose ICC profile pushes the frame header past the first 64 KiB: read again, further.
    rows[4]["image"] = image("JPEG", 61, 43, icc_profile=b"\x01" * 200_000)
    rows[4]["ext"] = "jpg"
    staged = stage(stack_settings, store, s3_prefix, unique, "image_classification", rows, ALL_FORMATS)
    cleanup.append(workspace(stack_settings, staged.work_order).root + "/")
    return staged


# --- The consumers ------------------------------------------------------------------------------------


def test_delivered_files_verify_and_load_in_their_consumers(classification: Staged, tmp_path: Path) -> None:
    commit, files = classification.deliver()

    assert commit.outcome == "created" and commit.version == "v1"
    assert verify(commit.manifest, package_reader(classification.store, commit.manifest_uri)) == []
    expected = {"labels.jsonl", "labels.parquet", "labels.csv", "coco.json", "label_studio.json", "output.manifest"}
    assert expected <= set(files)

    # Parquet: pandas and pyarrow; client fields and the answer are typed columns.
    frame = pd.read_parquet(io.BytesIO(files["labels.parquet"]))
    assert frame["item_id"].tolist() == ["c-1", "c-2", "c-3", "c-4", "c-5"]
    assert [a["label"] for a in frame["answer"]] == ["cat", "dog", "cat", "dog", "cat"]
    assert frame["record"].iloc[0]["note"] == "=1+2"  # only the CSV escapes formulas
    table = pq.read_table(io.BytesIO(files["labels.parquet"]))
    assert table.schema.metadata[b"kazi.deliverable"] == b"1"
    assert table["lineage"].combine_chunks().field("sites").to_pylist()[0] == ["site-a"]

    # JSON Lines: pandas and pyarrow.
    lines = pd.read_json(io.BytesIO(files["labels.jsonl"]), lines=True)
    assert lines["item_id"].tolist() == frame["item_id"].tolist()
    assert lines["record"].iloc[4]["note"] == 'Nairobi — café, "quoted"\nsecond line'
    arrow_lines = pa_json.read_json(io.BytesIO(files["labels.jsonl"]))
    assert arrow_lines.num_rows == 5
    assert arrow_lines["answer"].combine_chunks().field("label").to_pylist() == ["cat", "dog", "cat", "dog", "cat"]

    # Label Studio tasks and Ground Truth lines are JSON a tool can import.
    tasks = json.loads(files["label_studio.json"])
    assert [t["data"]["item_id"] for t in tasks] == frame["item_id"].tolist()
    gt = [json.loads(line) for line in files["output.manifest"].splitlines()]
    assert [g["source-ref"] for g in gt] == [t["data"]["image"] for t in tasks]


def test_csv_opens_with_the_csv_module_and_formula_cells_are_escaped(classification: Staged) -> None:
    _, files = classification.deliver()

    rows = list(csv.DictReader(io.StringIO(files["labels.csv"].decode("utf-8"), newline="")))
    by_id = {r["item_id"]: r for r in rows}
    assert by_id["c-1"]["record.note"] == "'=1+2"
    assert by_id["c-2"]["record.note"] == "'@SUM(A1:A3)"
    assert by_id["c-3"]["record.note"] == "'-cmd|' /C calc'!A0"
    # Plain numbers are not formulas and stay as they are.
    assert by_id["c-4"]["record.note"] == "-5"
    assert by_id["c-4"]["record.sku"] == "+254700000001"
    # Commas, quotes, a line break and non-ASCII text survive the round trip.
    assert by_id["c-5"]["record.note"] == 'Nairobi — café, "quoted"\nsecond line'
    assert by_id["c-2"]["answer.label"] == "dog"
    # No cell of any row starts a formula.
    assert not [v for r in rows for v in r.values() if v[:1] in {"=", "@"} or (v[:1] in {"+", "-"} and not _number(v))]


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_coco_loads_in_pycocotools_with_sizes_read_from_image_headers(
    classification: Staged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[tuple[str, int, int]] = []
    original = ObjectStore.get_range

    def spy(self: ObjectStore, bucket: str, key: str, start: int, end: int) -> bytes:
        reads.append((key, start, end))
        return original(self, bucket, key, start, end)

    monkeypatch.setattr(ObjectStore, "get_range", spy)
    _, files = classification.deliver()

    path = tmp_path / "coco.json"
    path.write_bytes(files["coco.json"])
    coco = COCO(str(path))
    images = coco.loadImgs(coco.getImgIds())
    assert {i["coco_url"]: (i["width"], i["height"]) for i in images} == classification.sizes
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES
    dog = coco.getCatIds(catNms=["dog"])
    assert sorted(i["kazi_item_id"] for i in coco.loadImgs(coco.getImgIds(catIds=dog))) == ["c-2", "c-4"]
    assert coco.dataset["info"]["date_created"] == "2026-11-21T09:34:02"  # the last answer, not the clock

    # Ranged GETs of the headers only: 64 KiB of each image, then 1 MiB of the JPEG whose header is longer.
    assert all(start == 0 for _, start, _ in reads)
    assert sorted((key.rsplit(".", 1)[1], end) for key, _, end in reads) == [
        ("jpg", IMAGE_HEAD_BYTES),
        ("jpg", 1024 * 1024),
        *[("png", IMAGE_HEAD_BYTES)] * 4,
    ]
    # A rerun finds the sizes in the workspace cache and reads no image again.
    reads.clear()
    classification.deliver()
    assert reads == []


def test_an_unreadable_image_leaves_its_size_out_of_a_classification_coco(
    stack_settings, store, s3_prefix, unique, cleanup, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rows = classification_rows()[:3]
    rows[0]["image"] = image("PNG", 12, 9)
    rows[1]["image"] = None  # the object is missing
    rows[2]["image"] = b"not an image at all"
    staged = stage(stack_settings, store, s3_prefix, unique, "image_classification", rows, ["coco"])
    cleanup.append(workspace(stack_settings, staged.work_order).root + "/")

    prepared = staged.prepare()
    assert sorted(prepared.image_size_failures.values()) == [
        "not a readable image (UnidentifiedImageError)",
        "object not found",
    ]
    commit, files = staged.deliver()
    path = tmp_path / "coco.json"
    path.write_bytes(files["coco.json"])
    images = {i["kazi_item_id"]: i for i in COCO(str(path)).dataset["images"]}
    assert (images["c-1"]["width"], images["c-1"]["height"]) == (12, 9)
    assert "width" not in images["c-2"] and "width" not in images["c-3"]
    assert verify(commit.manifest, package_reader(store, commit.manifest_uri)) == []


def test_coco_detection_boxes_are_converted_with_the_real_image_sizes(
    stack_settings, store, s3_prefix, unique, cleanup, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {
            "item_id": "d-1",
            "record": {"camera": "gate"},
            "answer": {"boxes": [{"label": "cat", "x": 10, "y": 20, "width": 50, "height": 25}]},
            "image": image("PNG", 200, 100),
        },
        {
            "item_id": "d-2",
            "record": {"camera": "yard"},
            "answer": {
                "boxes": [
                    {"label": "dog", "x": 0, "y": 0, "width": 100, "height": 100},
                    {"label": "cat", "x": 50, "y": 50, "width": 10, "height": 10},
                ]
            },
            "image": image("JPEG", 640, 480),
            "ext": "jpg",
        },
    ]
    staged = stage(stack_settings, store, s3_prefix, unique, "object_detection", rows, ["coco", "ground_truth"])
    cleanup.append(workspace(stack_settings, staged.work_order).root + "/")

    commit, files = staged.deliver()

    path = tmp_path / "coco.json"
    path.write_bytes(files["coco.json"])
    coco = COCO(str(path))
    by_item = {i["kazi_item_id"]: i["id"] for i in coco.dataset["images"]}
    boxes = {a["bbox"][0]: a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[by_item["d-1"]]))}
    assert list(boxes.values()) == [[20.0, 20.0, 100.0, 25.0]]  # 10 % of 200 px, 20 % of 100 px ...
    d2 = sorted(a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[by_item["d-2"]])))
    assert d2 == [[0.0, 0.0, 640.0, 480.0], [320.0, 240.0, 64.0, 48.0]]
    # loadRes takes the boxes back as detections (what a client's evaluation does).
    results = coco.loadRes([{**a, "score": 0.9} for a in coco.dataset["annotations"]])
    assert len(results.getAnnIds()) == 3
    gt = [json.loads(line) for line in files["output.manifest"].splitlines()]
    assert gt[1][staged.work_order.id]["image_size"] == [{"width": 640, "height": 480, "depth": 3}]
    assert verify(commit.manifest, package_reader(store, commit.manifest_uri)) == []


# --- The S3 pieces the package relies on ---------------------------------------------------------------


def test_ranged_get_returns_the_slice_and_nothing_past_the_end(store, stack_settings, s3_prefix) -> None:  # type: ignore[no-untyped-def]
    bucket = stack_settings.workspace_bucket
    store.put_bytes(bucket, f"{s3_prefix}r.bin", bytes(range(100)))
    assert store.get_range(bucket, f"{s3_prefix}r.bin", 0, 4) == bytes([0, 1, 2, 3])
    assert store.get_range(bucket, f"{s3_prefix}r.bin", 98, 4096) == bytes([98, 99])
    assert store.get_range(bucket, f"{s3_prefix}r.bin", 100, 200) == b""
    with pytest.raises(ValueError, match="bad byte range"):
        store.get_range(bucket, f"{s3_prefix}r.bin", 5, 5)


def test_the_annotation_log_is_read_from_its_parts_keeping_the_latest_version_of_each_annotation(
    store, stack_settings, s3_prefix
) -> None:  # type: ignore[no-untyped-def]
    at = [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=1)]
    first = [_annotation("s1", 7, "dog", at[0]), _annotation("s1", 3, "cat", at[0])]
    later = [
        _annotation("s1", 7, "cat", at[1]),  # the edit, in a later part
        _annotation("s2", 7, "bird", at[2]),  # same id at another site: another annotation
        _annotation("s1", 3, "cat", at[0]),  # the same version read twice
    ]
    uri = f"s3://{stack_settings.workspace_bucket}/{s3_prefix}annotate/log/"
    write_table(store, f"{uri}part-1.parquet", pa.Table.from_pylist(first, schema=ANNOTATIONS))
    write_table(store, f"{uri}part-2.parquet", pa.Table.from_pylist(later, schema=ANNOTATIONS))

    log = read_annotation_log(store, uri)

    assert log[["site_id", "annotation_id", "label"]].to_dict("records") == [
        {"site_id": "s1", "annotation_id": 3, "label": "cat"},
        {"site_id": "s1", "annotation_id": 7, "label": "cat"},
        {"site_id": "s2", "annotation_id": 7, "label": "bird"},
    ]
    assert read_annotation_log(store, f"s3://{stack_settings.workspace_bucket}/{s3_prefix}nothing/").empty


def _annotation(site: str, ann: int, label: str, at: datetime) -> dict[str, Any]:
    return {
        "item_id": f"i{ann}",
        "batch_id": "b",
        "site_id": site,
        "project_id": 1,
        "task_id": ann,
        "annotation_id": ann,
        "annotator": "w-1",
        "answer": json.dumps({"label": label}),
        "label": label,
        "lead_time_s": 1.0,
        "created_at": at,
        "updated_at": at,
        "skipped": False,
        "round": 0,
    }
