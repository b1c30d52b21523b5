"""The ingest flow against the real local S3 and Prefect server.

Each test uploads its client data under its own prefix of the workspace bucket (``tests/<hex>/``, the
``s3_prefix`` fixture, deleted afterwards) and ingests it under its own work-order ids, whose workspace
folders are deleted afterwards too. Datasets are small (a handful of rows), so a test takes a few seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from pydantic import ValidationError

from flows.core.models import ColumnMapping, IngestResult, LabelSchema, SourceFormat, TaskType, WorkOrder
from flows.core.s3 import ObjectStore, PreconditionFailed, S3Error, parse_uri
from flows.core.schemas import DUPLICATES, ITEMS, QUARANTINE
from flows.core.settings import Settings, load_settings
from flows.core.workspace import read_json, read_model, read_table, workspace, write_table
from flows.ingest import flow as ingest_module
from flows.ingest import media as media_module
from flows.ingest.flow import ingest_flow
from flows.ingest.source_files import SourceFiles
from simulation.datasets import SampleDataset, sample_dataset

#: File kinds a client may send: the work order's format, and whether the file is gzip-compressed.
KINDS = {
    "csv": (SourceFormat.CSV, False),
    "csv.gz": (SourceFormat.CSV, True),
    "jsonl": (SourceFormat.JSONL, False),
    "jsonl.gz": (SourceFormat.JSONL, True),
    "parquet": (SourceFormat.PARQUET, False),
}
N_ROWS = 6
TIMESTAMP = re.compile(r"/\d{8}T\d{6}\.\d+Z/")
MEDIA_TASKS = {TaskType.IMAGE_CLASSIFICATION, TaskType.OBJECT_DETECTION, TaskType.AUDIO_TRANSCRIPTION}
TEXT_COLUMNS = ColumnMapping(item_id="message_id", text="text")
TEXT_LABELS = LabelSchema(classes=["positive", "negative", "neutral"])


# --- encoding a client's rows -----------------------------------------------------------------------


def encode(rows: list[dict[str, Any]], kind: str) -> bytes:
    """The rows as a client would upload them in ``kind`` (a key of :data:`KINDS`)."""
    fmt, gz = KINDS[kind]
    if fmt == SourceFormat.PARQUET:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        data = sink.getvalue()
    elif fmt == SourceFormat.JSONL:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    else:
        names = list(rows[0])
        out = io.StringIO()
        out.write(",".join(names) + "\n")
        for r in rows:
            out.write(",".join(_csv_cell(r[n]) for n in names) + "\n")
        data = out.getvalue().encode()
    return gzip.compress(data, mtime=0) if gz else data


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text


def text_rows(start: int, n: int, *, tag: str = "") -> list[dict[str, Any]]:
    return [
        {"message_id": f"msg-{i:04d}", "text": f"Message {i}{tag}: the solar lamp, «ok» 🙂", "channel": "sms"}
        for i in range(start, start + n)
    ]


def blank_is_none(values: dict[str, Any]) -> dict[str, Any]:
    """CSV has no null: an empty cell reads as "" where JSONL and Parquet have null."""
    return {k: (v if v not in ("", None) else None) for k, v in values.items()}


# --- one test's client and work orders ---------------------------------------------------------------


@dataclass
class Client:
    """A client's upload area (a unique prefix) and the work orders a test runs on it."""

    settings: Settings
    store: ObjectStore
    prefix: str
    unique: str
    orders: list[str] = field(default_factory=list)

    @property
    def bucket(self) -> str:
        return self.settings.workspace_bucket

    def uri(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{rel}"

    def put(self, rel: str, data: bytes) -> str:
        self.store.put_bytes(self.bucket, f"{self.prefix}{rel}", data)
        return self.uri(rel)

    def upload_media(self, dataset: SampleDataset) -> None:
        for key, data in dataset.media.items():
            self.store.put_bytes(self.bucket, key, data)

    def order(
        self,
        source: str,
        fmt: SourceFormat,
        task_type: TaskType = TaskType.TEXT_CLASSIFICATION,
        columns: ColumnMapping = TEXT_COLUMNS,
        label_schema: LabelSchema = TEXT_LABELS,
    ) -> WorkOrder:
        """A work order on ``source`` (a URI) with a fresh id; its workspace folder is cleaned up."""
        wo_id = f"ingest-{self.unique}-{len(self.orders)}"
        self.orders.append(wo_id)
        return WorkOrder.model_validate(
            {
                "id": wo_id,
                "client_id": "acme",
                "source": {"uri": source, "format": fmt.value},
                "task_type": task_type.value,
                "columns": columns.model_dump(),
                "label_schema": label_schema.model_dump(),
                "deadline": "2030-01-01T00:00:00Z",
                "price_per_item": 0.1,
                "pay_per_task": 0.02,
                "delivery": {"uri": self.uri("delivery")},
            }
        )

    def dataset_order(self, dataset: SampleDataset, source: str, fmt: SourceFormat) -> WorkOrder:
        return self.order(source, fmt, dataset.task_type, dataset.columns, dataset.label_schema)

    def items(self, result: IngestResult) -> pa.Table:
        return read_table(self.store, result.items_uri)

    def by_id(self, result: IngestResult) -> dict[str, dict[str, Any]]:
        return {r["item_id"]: r for r in self.items(result).to_pylist()}

    def quarantine(self, result: IngestResult) -> list[dict[str, Any]]:
        table = read_table(self.store, result.quarantine_uri)
        assert table.schema.equals(QUARANTINE)
        return table.to_pylist()

    def duplicates(self, result: IngestResult) -> list[dict[str, Any]]:
        table = read_table(self.store, result.duplicates_uri)
        assert table.schema.equals(DUPLICATES)
        return table.to_pylist()

    def manifest(self, result: IngestResult) -> dict[str, Any]:
        payload: dict[str, Any] = read_json(self.store, result.manifest_uri)
        return payload

    def state(self, key_prefix: str) -> dict[str, tuple[str, str]]:
        """Key -> (LastModified, ETag) of every object under ``key_prefix`` of the workspace bucket."""
        out: dict[str, tuple[str, str]] = {}
        pages = self.store.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key_prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (obj["LastModified"].isoformat(), obj["ETag"])
        return out

    def version_prefix(self, result: IngestResult) -> str:
        return workspace(self.settings, result.work_order_id).key("ingest", result.ingest_version) + "/"


@pytest.fixture
def client(stack_settings: Settings, store: ObjectStore, s3_prefix: str, unique: str) -> Iterator[Client]:
    made = Client(stack_settings, store, s3_prefix, unique)
    yield made
    for wo_id in made.orders:
        store.delete_prefix(stack_settings.workspace_bucket, workspace(stack_settings, wo_id).root + "/")


def assert_reconciled(result: IngestResult) -> None:
    assert result.rows_read == result.accepted + result.quarantined + result.duplicates


# --- every format and every task type ----------------------------------------------------------------


# Every format and every task type, each twice, in ten pairs rather than the 25-case cross product: what a
# format does to rows is independent of the task type's columns, and the suite's first run must stay short.
FORMAT_CASES = [
    (task_type, kind)
    for i, task_type in enumerate(TaskType)
    for kind in (list(KINDS)[i % len(KINDS)], list(KINDS)[(i + 2) % len(KINDS)])
]


@pytest.mark.prefect
@pytest.mark.parametrize(("task_type", "kind"), FORMAT_CASES, ids=lambda v: getattr(v, "value", v))
def test_every_good_row_of_every_format_and_task_type_is_accepted(
    client: Client, store: ObjectStore, task_type: TaskType, kind: str
) -> None:
    media_prefix = f"{client.prefix}media/{task_type.value}"
    extra = {"bucket": client.bucket, "prefix": media_prefix} if task_type in MEDIA_TASKS else {}
    dataset = sample_dataset(task_type, N_ROWS, seed=7, **extra)
    client.upload_media(dataset)
    data = encode(dataset.rows, kind)
    source = client.put(f"in/{task_type.value}.{kind}", data)
    work_order = client.dataset_order(dataset, client.uri("in/"), KINDS[kind][0])

    result = ingest_flow(work_order)

    assert (result.rows_read, result.accepted, result.quarantined, result.duplicates) == (N_ROWS, N_ROWS, 0, 0)
    assert result.files_quarantined == 0
    assert result.validation_success
    assert_reconciled(result)

    # Canonical items: the declared schema, one row per client row, mapped as the work order says.
    items = client.items(result)
    assert items.schema.equals(ITEMS, check_metadata=True)
    assert (
        pads.dataset(result.items_uri.removeprefix("s3://"), filesystem=store.filesystem).to_table().num_rows == N_ROWS
    )
    mapping = dataset.columns
    assert mapping.item_id is not None
    rows = {r[mapping.item_id]: (n, r) for n, r in enumerate(dataset.rows, start=1)}
    got = {r["item_id"]: r for r in items.to_pylist()}
    assert set(got) == set(rows)
    for item_id, item in got.items():
        n, row = rows[item_id]
        assert item["client_item_id"] == item_id
        assert (item["source_object"], item["source_row"]) == (source, n)
        assert item["text"] == (row[mapping.text] if mapping.text else None)
        assert item["media_uri"] == (row[mapping.media_uri] if mapping.media_uri else None)
        if mapping.fields:
            expected = {name: row[col] for name, col in mapping.fields.items()}
            assert blank_is_none(json.loads(item["fields"])) == blank_is_none(expected)
        else:
            assert item["fields"] is None
        record = json.loads(item["record"])
        assert list(record) == list(row)
        assert record[mapping.item_id] == item_id
        assert set(item) == set(ITEMS.names)
        assert 0 <= item["shard"] < 16
    assert client.quarantine(result) == []
    assert client.duplicates(result) == []

    # The manifest names the source object with its real size, ETag and SHA-256.
    manifest = client.manifest(result)
    head = store.head(*parse_uri(source))
    assert head is not None
    assert manifest["sources"] == [
        {"uri": source, "size": len(data), "etag": head.etag, "sha256": hashlib.sha256(data).hexdigest()}
    ]
    assert head.etag == hashlib.md5(data).hexdigest()
    assert manifest["counts"]["rows_read"] == N_ROWS

    # The work order as run is stored, and reads back as the same work order.
    stored = store.get_bytes(client.bucket, workspace(client.settings, work_order).key("work_order.yaml"))
    assert WorkOrder.from_yaml(stored.decode()) == work_order
    assert (
        read_model(store, workspace(client.settings, work_order).uri("ingest", "result.json"), IngestResult) == result
    )

    # Data Docs open from the one presigned link.
    assert result.data_docs_uri is not None
    page = httpx.get(result.data_docs_uri, timeout=30)
    assert page.status_code == 200
    assert "<html" in page.text.lower()


@pytest.mark.prefect
@pytest.mark.parametrize("kind", list(KINDS))
def test_digest_ids_are_the_same_for_a_fresh_copy_of_the_input(client: Client, kind: str) -> None:
    fmt = KINDS[kind][0]
    data = encode(text_rows(0, N_ROWS), kind)
    no_ids = ColumnMapping(text="text")
    first = ingest_flow(client.order(client.put(f"a/in.{kind}", data), fmt, columns=no_ids))
    again = ingest_flow(client.order(client.put(f"b/copy/in.{kind}", data), fmt, columns=no_ids))

    def ids(result: IngestResult) -> dict[int, str]:
        return {r["source_row"]: r["item_id"] for r in client.by_id(result).values()}

    assert first.ingest_version != again.ingest_version  # other objects, so another version
    assert ids(first) == ids(again)
    assert len(ids(first)) == N_ROWS
    assert all(item_id.startswith("h-") for item_id in ids(first).values())


def validation_rows(work_order_id: str) -> list[dict[str, Any]]:
    """The rows of the latest validation table artifact of a work order."""
    with get_client(sync_client=True) as prefect:
        key = ArtifactFilter(key=ArtifactFilterKey(any_=[f"{work_order_id}-ingest-validation"]))
        table = prefect.read_artifacts(limit=1, sort=ArtifactSort.CREATED_DESC, artifact_filter=key)
    assert table
    rows: list[dict[str, Any]] = json.loads(str(table[0].data))
    return rows


@pytest.mark.prefect
def test_gx_validates_a_bounded_sample_of_the_items_and_the_counts_of_every_file(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "SAMPLE_ROWS", 7)  # 50 accepted items, 7 validated by GX
    a = client.put("in/a.csv", encode(text_rows(0, 40), "csv"))
    b = client.put("in/b.csv", encode(text_rows(30, 20), "csv"))  # ids 30-39 repeat a's
    result = ingest_flow(client.order(client.uri("in/"), SourceFormat.CSV))

    assert (result.rows_read, result.accepted, result.duplicates, result.validation_success) == (60, 50, 10, True)
    assert result.data_docs_uri is not None
    index = httpx.get(result.data_docs_uri, timeout=30)
    assert index.status_code == 200
    assert f"{result.work_order_id}-items-sample" in index.text
    assert f"{result.work_order_id}-reconciliation" in index.text
    rows = validation_rows(result.work_order_id)
    checks = [(r["validation"], r["expectation"], r["column"]) for r in rows]
    sample = f"{result.work_order_id}-items-sample"
    recon = f"{result.work_order_id}-reconciliation"
    assert (sample, "expect_column_values_to_be_unique", "item_id") in checks
    assert (recon, "expect_column_pair_values_to_be_equal", "") in checks
    assert {r["rows"] for r in rows if r["validation"] == sample} == {7}
    assert {r["rows"] for r in rows if r["validation"] == recon} == {2}
    assert all(r["success"] and r["unexpected"] == 0 for r in rows)
    assert client.manifest(result)["files"] == [
        {"uri": a, "rows_read": 40, "accepted": 40, "quarantined": 0, "duplicates": 0},
        {"uri": b, "rows_read": 20, "accepted": 10, "quarantined": 0, "duplicates": 10},
    ]


# --- bad input ----------------------------------------------------------------------------------------


def _corrupt_footer(data: bytes) -> bytes:
    return data[: len(data) // 2]  # a Parquet file cut in half has no footer


def _truncated(data: bytes) -> bytes:
    return data[: int(len(data) * 0.6)]


BROKEN = {
    # case: (format, good file suffix, broken file suffix, how to break the encoded rows, rows kept)
    "corrupt parquet": ("parquet", "parquet", _corrupt_footer, False),
    "gzipped parquet": ("parquet", "parquet.gz", lambda d: gzip.compress(d, mtime=0), False),
    "truncated csv gzip": ("csv", "csv.gz", _truncated, True),
    "truncated jsonl gzip": ("jsonl", "jsonl.gz", _truncated, True),
}


@pytest.mark.prefect
@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_file_is_quarantined_whole_and_the_other_files_go_through(client: Client, case: str) -> None:
    kind, broken_suffix, damage, partly_read = BROKEN[case]
    fmt = KINDS[kind][0]
    first = client.put(f"in/part-1.{kind}", encode(text_rows(0, 5), kind))
    broken_kind = broken_suffix if broken_suffix in KINDS else kind
    # Enough rows that a cut gzip stream still holds some complete records.
    broken = client.put(f"in/part-2.{broken_suffix}", damage(encode(text_rows(100, 400), broken_kind)))
    last = client.put(f"in/part-3.{kind}", encode(text_rows(1000, 5), kind))

    result = ingest_flow(client.order(client.uri("in/"), fmt))

    assert_reconciled(result)
    assert result.files_quarantined == 1
    quarantine = client.quarantine(result)
    whole = [q for q in quarantine if q["source_row"] == -1]
    assert len(whole) == 1
    assert whole[0]["source_object"] == broken
    assert "part-2" in whole[0]["reason"]
    items = client.items(result).to_pylist()
    by_file: dict[str, list[int]] = {}
    for item in items:
        by_file.setdefault(item["source_object"], []).append(item["source_row"])
    assert sorted(by_file[first]) == [1, 2, 3, 4, 5]
    assert sorted(by_file[last]) == [1, 2, 3, 4, 5]
    # Each object's SHA-256 is of the whole object, also where the reader stopped at the break.
    assert [s["sha256"] for s in client.manifest(result)["sources"]] == [
        hashlib.sha256(client.store.get_bytes(*parse_uri(uri))).hexdigest() for uri in (first, broken, last)
    ]
    kept = sorted(by_file.get(broken, []))
    records = [q for q in quarantine if q["source_row"] != -1]
    if partly_read:
        # Rows before the break are kept; the last one read may be cut short, so it is quarantined.
        assert kept == list(range(1, len(kept) + 1))
        assert 0 < len(kept) < 400
        assert [(q["source_object"], q["source_row"]) for q in records] == [(broken, len(kept) + 1)]
        assert "may be cut short" in records[0]["reason"]
        assert result.rows_read == 10 + len(kept) + 1
    else:
        assert kept == []
        assert records == []
        assert result.rows_read == 10
    manifest = client.manifest(result)
    assert [s["uri"] for s in manifest["sources"]] == [first, broken, last]
    assert [e[0] for e in manifest["file_errors"]] == [broken]

    with get_client(sync_client=True) as prefect:
        key = ArtifactFilter(key=ArtifactFilterKey(any_=[f"{result.work_order_id}-ingest"]))
        report = prefect.read_artifacts(limit=1, sort=ArtifactSort.CREATED_DESC, artifact_filter=key)
    assert report
    assert broken in str(report[0].data)


@pytest.mark.prefect
def test_duplicate_ids_across_files_are_reported_with_the_row_they_repeat(client: Client) -> None:
    a = client.put(
        "in/a.csv",
        encode(
            [
                {"message_id": "msg-1", "text": "first"},
                {"message_id": "msg-2", "text": "second"},
                {"message_id": "msg-3", "text": "third"},
            ],
            "csv",
        ),
    )
    b = client.put(
        "in/b.csv",
        encode(
            [
                {"message_id": " MSG-1 ", "text": "first, edited"},  # the same id once trimmed and lower-cased
                {"message_id": "msg-3", "text": "third again"},
                {"message_id": "msg-9", "text": "second"},  # a new id, but msg-2's content
                {"message_id": "msg-10", "text": "tenth"},
                {"message_id": "msg-10", "text": "tenth, twice"},
            ],
            "csv",
        ),
    )

    result = ingest_flow(client.order(client.uri("in/"), SourceFormat.CSV))

    assert (result.rows_read, result.accepted, result.quarantined, result.duplicates) == (8, 4, 0, 4)
    assert sorted(client.by_id(result)) == ["msg-1", "msg-10", "msg-2", "msg-3"]
    got = sorted(
        (d["source_object"], d["source_row"], d["item_id"], d["duplicate_of_object"], d["duplicate_of_row"], d["kind"])
        for d in client.duplicates(result)
    )
    assert got == [
        (b, 1, "MSG-1", a, 1, "id"),
        (b, 2, "msg-3", a, 3, "id"),
        (b, 3, "msg-9", a, 2, "content"),
        (b, 5, "msg-10", b, 4, "id"),
    ]


@pytest.mark.prefect
def test_a_row_whose_media_object_is_missing_is_quarantined_naming_the_uri(client: Client) -> None:
    dataset = sample_dataset(TaskType.IMAGE_CLASSIFICATION, 4, bucket=client.bucket, prefix=f"{client.prefix}media")
    client.upload_media(dataset)
    rows = [dict(r) for r in dataset.rows]
    gone_key = f"{client.prefix}media/never-uploaded.png"
    rows[1]["image_uri"] = f"s3://{client.bucket}/{gone_key}"
    rows[2]["image_uri"] = "s3://kazi-no-such-bucket-for-tests/x.png"
    source = client.put("in/images.jsonl", encode(rows, "jsonl"))

    result = ingest_flow(client.dataset_order(dataset, source, SourceFormat.JSONL))

    assert (result.rows_read, result.accepted, result.quarantined, result.duplicates) == (4, 2, 2, 0)
    quarantine = client.quarantine(result)
    assert [(q["source_object"], q["source_row"], q["field"]) for q in quarantine] == [
        (source, 2, "media_uri"),
        (source, 3, "media_uri"),
    ]
    assert f"s3://{client.bucket}/{gone_key}" in quarantine[0]["reason"]
    assert "s3://kazi-no-such-bucket-for-tests/x.png" in quarantine[1]["reason"]
    assert json.loads(quarantine[0]["record"]) == rows[1]  # the client's row, unchanged
    assert sorted(client.by_id(result)) == [rows[0]["image_id"], rows[3]["image_id"]]


@pytest.mark.prefect
def test_media_in_a_bucket_kazi_may_not_read_is_quarantined_naming_the_bucket(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test stack's one S3 user may read every bucket, so S3's answer for a locked bucket is injected
    # (a 403 on HEAD, as S3 gives it) for that bucket only; every other HEAD goes to the real S3.
    locked = "kazi-locked-media-for-tests"
    real_head = media_module._head_media

    def head(store: ObjectStore, bucket: str, key: str) -> None:
        if bucket == locked:
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")
        real_head(store, bucket, key)

    monkeypatch.setattr(media_module, "_head_media", head)
    dataset = sample_dataset(TaskType.IMAGE_CLASSIFICATION, 4, bucket=client.bucket, prefix=f"{client.prefix}media")
    client.upload_media(dataset)
    rows = [dict(r) for r in dataset.rows]
    rows[2]["image_uri"] = f"s3://{locked}/cats/1.png"
    source = client.put("in/images.jsonl", encode(rows, "jsonl"))

    result = ingest_flow(client.dataset_order(dataset, source, SourceFormat.JSONL))

    assert (result.rows_read, result.accepted, result.quarantined, result.duplicates) == (4, 3, 1, 0)
    [row] = client.quarantine(result)
    assert (row["source_row"], row["field"]) == (3, "media_uri")
    assert f"bucket '{locked}'" in row["reason"] and "403" in row["reason"]
    assert "read access" in row["reason"] and f"s3://{locked}/cats/1.png" in row["reason"]
    assert json.loads(row["record"]) == rows[2]


@pytest.mark.unit
def test_media_check_tells_missing_from_refused_and_fails_on_other_s3_errors() -> None:
    store = ObjectStore(load_settings())  # a stubbed client: no request leaves the process
    stubber = Stubber(store.client)
    for code, status in (("404", 404), ("403", 403)):
        stubber.add_client_error("head_object", service_error_code=code, http_status_code=status)
    stubber.add_response("head_object", {"ContentLength": 1, "ETag": '"x"'})
    with stubber:
        check = media_module.media_check(store, workers=1)
        got = check(["s3://b/gone.png", "s3://locked/a.png", "s3://b/here.png", "not-a-uri"])
    assert got["s3://b/gone.png"] == "points at a missing object"
    assert got["s3://locked/a.png"].startswith("cannot be read: S3 refused Kazi access to bucket 'locked' (403)")
    assert set(got) == {"s3://b/gone.png", "s3://locked/a.png"}
    stubber.add_client_error("head_object", service_error_code="InternalError", http_status_code=500)
    with stubber, pytest.raises(S3Error, match="InternalError"):
        media_module.media_check(store, workers=1)(["s3://b/x.png"])


@pytest.mark.prefect
def test_keys_with_spaces_unicode_and_dots_are_read(client: Client, store: ObjectStore) -> None:
    # SeaweedFS refuses "." and ".." as whole key segments (InvalidRequest), so dots go inside segments.
    folder = "client data/Zürich ü/..b/.../x../..%2F/"
    names = ["part 1 (copy) ü+%.csv", "日本 語 ..csv"]
    uris = [client.put(folder + name, encode(text_rows(10 * i, 3), "csv")) for i, name in enumerate(names)]

    result = ingest_flow(client.order(client.uri(folder), SourceFormat.CSV))

    assert (result.rows_read, result.accepted, result.files_quarantined) == (6, 6, 0)
    assert {r["source_object"] for r in client.by_id(result).values()} == set(uris)
    assert sorted(s["uri"] for s in client.manifest(result)["sources"]) == sorted(uris)


@pytest.mark.prefect
def test_a_source_prefix_means_that_folder_not_its_siblings_nor_a_dotted_path(client: Client) -> None:
    inside = client.put("in/a.csv", encode(text_rows(0, 2), "csv"))
    client.put("inbox/b.csv", encode(text_rows(50, 2), "csv"))

    result = ingest_flow(client.order(client.uri("in"), SourceFormat.CSV))

    assert [s["uri"] for s in client.manifest(result)["sources"]] == [inside]
    assert result.rows_read == 2
    # "../" is part of the key, never resolved: it cannot reach another folder.
    with pytest.raises(S3Error, match="No objects under"):
        ingest_flow(client.order(client.uri("elsewhere/../in/"), SourceFormat.CSV))


# --- idempotency ----------------------------------------------------------------------------------------


@pytest.mark.prefect
def test_a_rerun_on_the_same_input_rewrites_nothing(client: Client) -> None:
    client.put("in/a.jsonl", encode(text_rows(0, N_ROWS), "jsonl"))
    work_order = client.order(client.uri("in/"), SourceFormat.JSONL)
    first = ingest_flow(work_order)
    prefix = client.version_prefix(first)
    before = client.state(prefix)
    assert f"{prefix}result.json" in before
    assert f"{prefix}manifest.json" in before
    time.sleep(1.1)  # LastModified has one-second resolution: a rewrite now would show

    again = ingest_flow(work_order)

    assert again == first
    assert client.state(prefix) == before


@pytest.mark.s3
def test_an_object_replaced_after_it_was_listed_is_not_read_and_says_what_to_do(client: Client) -> None:
    """The version is named by size and ETag when the ingest starts; each object is read only as listed
    (IfMatch), so rows of a replaced object never enter that version, and its manifest is not signed by them."""
    rows = text_rows(0, 5)
    client.put("in/a.csv", encode(rows, "csv"))
    work_order = client.order(client.uri("in/"), SourceFormat.CSV)
    [listed] = ingest_module.list_sources.fn(work_order)
    assert listed.sha256 == ""
    rows[0] = {**rows[0], "text": "replaced by the client"}
    data = encode(rows, "csv")
    client.put("in/a.csv", data)
    with (
        pytest.raises(PreconditionFailed, match=r"changed while it was being ingested .* run the ingest again"),
        SourceFiles(client.store, listed.uri, listed.etag),
    ):
        pass
    [fresh] = ingest_module.list_sources.fn(work_order)
    with SourceFiles(client.store, fresh.uri, fresh.etag) as files:
        stream = files.fs.open_input_stream(files.path)
        got = b"".join(iter(lambda: stream.read(7), b""))
    assert got == data
    assert files.sha256() == hashlib.sha256(data).hexdigest()


@pytest.mark.s3
@pytest.mark.parametrize("suffix", ["csv", "csv.gz", "parquet"])
def test_a_source_is_hashed_whole_however_much_the_reader_took(client: Client, suffix: str) -> None:
    kind = suffix.removesuffix(".gz")
    data = encode(text_rows(0, 300), kind)
    if suffix.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    uri = client.put(f"in/a.{suffix}", data)
    head = client.store.head(*parse_uri(uri))
    assert head is not None
    with SourceFiles(client.store, uri, head.etag) as files:
        if kind == "parquet":
            table = pq.read_table(files.fs.open_input_file(files.path))
            assert table.num_rows == 300
        else:
            # A reader that stops early, then starts over (as the CSV reader does for a record longer
            # than its block) and stops early again: the hash is still of the whole object, once.
            assert files.fs.open_input_stream(files.path, compression=None).read(100) == data[:100]
            assert files.fs.open_input_stream(files.path, compression=None).read(10) == data[:10]
        assert files.sha256() == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError, match="only"):
        files.fs.open_input_stream(f"{client.bucket}/elsewhere.csv")


@pytest.mark.prefect
def test_a_changed_row_makes_a_new_version_beside_the_untouched_old_one(client: Client) -> None:
    rows = text_rows(0, N_ROWS)
    client.put("in/a.parquet", encode(rows, "parquet"))
    work_order = client.order(client.uri("in/"), SourceFormat.PARQUET)
    old = ingest_flow(work_order)
    old_state = client.state(client.version_prefix(old))
    time.sleep(1.1)

    rows[2] = {**rows[2], "text": "edited by the client"}
    client.put("in/a.parquet", encode(rows, "parquet"))
    new = ingest_flow(work_order)

    assert new.ingest_version != old.ingest_version
    assert client.state(client.version_prefix(old)) == old_state
    assert client.by_id(new)["msg-0002"]["text"] == "edited by the client"
    assert client.by_id(old)["msg-0002"]["text"] == text_rows(2, 1)[0]["text"]
    current = read_model(
        client.store, workspace(client.settings, work_order).uri("ingest", "result.json"), IngestResult
    )
    assert current == new


@pytest.mark.prefect
def test_a_run_that_died_before_its_result_is_finished_by_a_rerun_with_the_same_keys(client: Client) -> None:
    client.put("in/a.csv", encode(text_rows(0, N_ROWS), "csv"))
    work_order = client.order(client.uri("in/"), SourceFormat.CSV)
    first = ingest_flow(work_order)
    prefix = client.version_prefix(first)
    before = set(client.state(prefix))
    client.store.client.delete_object(Bucket=client.bucket, Key=f"{prefix}result.json")
    # What a dead run of an earlier layout left: items no rerun writes again, which readers would also take.
    stale = read_table(client.store, f"s3://{client.bucket}/{prefix}items/part-00000.parquet")
    write_table(client.store, f"s3://{client.bucket}/{prefix}items/shard=00/part-0.parquet", stale)
    assert client.items(first).num_rows == 2 * first.accepted  # what a reader would take

    again = ingest_flow(work_order)

    assert again.model_dump(exclude={"data_docs_uri"}) == first.model_dump(exclude={"data_docs_uri"})
    assert sorted(client.by_id(again)) == sorted(client.by_id(first))
    assert client.items(again).num_rows == again.accepted  # the stale file is gone, not read twice
    # The same keys, Data Docs included; only the validation page's run timestamp differs (nothing left over).
    assert sorted(TIMESTAMP.sub("<time>", k) for k in client.state(prefix)) == sorted(
        TIMESTAMP.sub("<time>", k) for k in before
    )
    assert again.data_docs_uri is not None
    assert httpx.get(again.data_docs_uri, timeout=30).status_code == 200


# --- work orders ------------------------------------------------------------------------------------------


@pytest.mark.s3
def test_a_work_order_round_trips_through_yaml_in_s3(client: Client) -> None:
    dataset = sample_dataset(TaskType.LISTING_VERIFICATION, 2)
    work_order = client.dataset_order(dataset, client.uri("in/"), SourceFormat.CSV)
    uri = client.put("orders/listing.yaml", work_order.to_yaml().encode())

    loaded = WorkOrder.from_yaml(client.store.get_bytes(*parse_uri(uri)).decode())

    assert loaded == work_order
    assert loaded.to_yaml() == work_order.to_yaml()


@pytest.mark.s3
@pytest.mark.parametrize(
    ("path", "typo"),
    [
        ((), "colums"),
        (("columns",), "media_ur"),
        (("label_schema",), "clases"),
        (("source",), "formt"),
    ],
)
def test_a_typo_in_a_work_order_is_rejected_naming_the_field(client: Client, path: tuple[str, ...], typo: str) -> None:
    dataset = sample_dataset(TaskType.TEXT_CLASSIFICATION, 2)
    doc = client.dataset_order(dataset, client.uri("in/"), SourceFormat.CSV).model_dump(mode="json")
    target = doc
    for part in path:
        target = target[part]
    target[typo] = "x"
    uri = client.put("orders/typo.yaml", yaml.safe_dump(doc).encode())

    with pytest.raises(ValidationError) as caught:
        WorkOrder.from_yaml(client.store.get_bytes(*parse_uri(uri)).decode())

    message = str(caught.value)
    assert ".".join([*path, typo]) in message
    assert "Extra inputs are not permitted" in message
