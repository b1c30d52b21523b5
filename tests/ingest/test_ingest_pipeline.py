"""Every bad input of the ingest issue, end to end: ingested correctly or quarantined with file, row and
field named; never a crash; and rows_read = accepted + quarantined + duplicates in every case."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from flows.core.contracts import load_contract
from flows.core.models import SourceFormat, TaskType, WorkOrder
from flows.core.schemas import DUPLICATES, ITEMS, QUARANTINE
from flows.ingest.contract import MediaCheck, check_from_exists
from flows.ingest.dedupe import Reconciliation, SeenState, ingest_batches
from flows.ingest.normalise import content_digest, safe_key_part
from flows.ingest.read import RawBatch, iter_batches, iter_files

pytestmark = pytest.mark.unit

IMAGE_COLUMNS = {"item_id": "id", "media_uri": "image", "text": "caption"}


@dataclass
class Run:
    items: list[dict[str, Any]]
    quarantine: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    tally: Reconciliation

    def ids(self) -> list[str]:
        return [r["item_id"] for r in self.items]

    def why(self) -> list[tuple[str, int, str | None]]:
        return [(Path(q["source_object"]).name, q["source_row"], q["field"]) for q in self.quarantine]


def order(
    task_type: str = "image_classification", columns: dict[str, Any] | None = None, fmt: str = "csv"
) -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "id": "acme-0001",
            "client_id": "acme",
            "source": {"uri": "s3://acme-in/batch", "format": fmt},
            "task_type": task_type,
            "columns": IMAGE_COLUMNS if columns is None else columns,
            "label_schema": {"classes": ["cat", "dog"], "fields": [{"name": "phone", "kind": "phone"}]},
            "deadline": "2030-01-01T00:00:00Z",
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": "s3://acme-out/batch"},
        }
    )


def ingest(
    tmp_path: Path,
    files: dict[str, bytes],
    fmt: str = "csv",
    *,
    task_type: str = "image_classification",
    columns: dict[str, Any] | None = None,
    media_check: MediaCheck | None = None,
    threads: int = 2,
    batch_rows: int = 65_536,
) -> Run:
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    wo = order(task_type, columns, fmt)
    batches = iter_files(pafs.LocalFileSystem(), paths, SourceFormat(fmt), batch_rows)
    tally = Reconciliation()
    run = Run([], [], [], tally)
    for out in ingest_batches(
        batches, wo, load_contract(wo.task_type), SeenState(), media_check=media_check, threads=threads
    ):
        assert out.accepted.schema == ITEMS
        assert out.quarantined.schema == QUARANTINE
        assert out.duplicates.schema == DUPLICATES
        # A batch's accepted rows come in file order (what the sink writes).
        accepted = out.accepted.to_pylist()
        rows = [r["source_row"] for r in accepted]
        assert rows == sorted(rows)
        # The sample's key of each accepted row is its content digest, recomputed from the stored columns.
        content = [out.accepted.column(c).combine_chunks() for c in ("text", "media_uri", "fields")]
        assert out.content_keys.tolist() == content_digest(*content)[:, 0].tolist()
        run.items += accepted
        run.quarantine += out.quarantined.to_pylist()
        run.duplicates += out.duplicates.to_pylist()
        tally = tally.add(out)
    run.tally = tally.check()  # the reconciliation holds in every test
    for q in run.quarantine:
        assert q["reason"] and q["source_object"] in paths
        assert q["source_row"] >= 1 or q["source_row"] == -1
    return run


def csv(*lines: str, encoding: str = "utf-8", newline: str = "\n") -> bytes:
    return (newline.join(lines) + newline).encode(encoding)


HEADER = "id,image,caption"


def test_bom(tmp_path: Path) -> None:
    run = ingest(tmp_path, {"bom.csv": b"\xef\xbb\xbf" + csv(HEADER, "a1,s3://bkt/a.jpg,hi")})
    assert run.ids() == ["a1"]
    assert json.loads(run.items[0]["record"]) == {"id": "a1", "image": "s3://bkt/a.jpg", "caption": "hi"}


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16(tmp_path: Path, codec: str) -> None:
    run = ingest(tmp_path, {"u16.csv": csv(HEADER, "ü1,s3://bkt/ü.jpg,naïve 😀", encoding=codec)})
    assert [(r["item_id"], r["media_uri"], r["text"]) for r in run.items] == [("ü1", "s3://bkt/ü.jpg", "naïve 😀")]
    assert run.tally.encodings[0][1].startswith("utf-16")


def test_latin1(tmp_path: Path) -> None:
    run = ingest(tmp_path, {"latin.csv": csv(HEADER, "a1,s3://bkt/a.jpg,café crème", encoding="latin-1")})
    assert run.items[0]["text"] == "café crème"
    assert run.tally.encodings == ((str(tmp_path / "latin.csv"), "cp1252", 0),)


def test_crlf(tmp_path: Path) -> None:
    run = ingest(tmp_path, {"crlf.csv": csv(HEADER, "a1,s3://bkt/a.jpg,x", "a2,s3://bkt/b.jpg,y", newline="\r\n")})
    assert [(r["item_id"], r["media_uri"], r["text"]) for r in run.items] == [
        ("a1", "s3://bkt/a.jpg", "x"),
        ("a2", "s3://bkt/b.jpg", "y"),
    ]


def test_quoted_fields_with_embedded_newlines(tmp_path: Path) -> None:
    data = csv(HEADER, 'a1,s3://bkt/a.jpg,"line one\nline two, with comma"', 'a2,s3://bkt/b.jpg,"say ""hi"""', "broken")
    run = ingest(tmp_path, {"nl.csv": data})
    assert [r["text"] for r in run.items] == ["line one\nline two, with comma", 'say "hi"']
    assert [r["source_row"] for r in run.items] == [1, 2]
    assert run.why() == [("nl.csv", 3, None)]
    assert run.quarantine[0]["reason"] == "line 5: expected 3 fields, found 1"


def test_a_field_over_131072_characters(tmp_path: Path) -> None:
    long_text = "ж" * 131_073
    data = csv("id,image,caption,notes", f"a1,s3://bkt/a.jpg,short,{long_text}", f"a2,s3://bkt/b.jpg,{long_text},x")
    run = ingest(tmp_path, {"long.csv": data})
    # In an unmapped column it is kept whole in the record; as the caption it is over the contract's limit.
    assert run.ids() == ["a1"]
    assert json.loads(run.items[0]["record"])["notes"] == long_text
    assert run.why() == [("long.csv", 2, "text")]
    assert run.quarantine[0]["reason"] == "text is longer than 10,000 characters (131,073)"
    (tmp_path / "text").mkdir()
    text_run = ingest(
        tmp_path / "text",
        {"t.csv": csv("id,body", f"t1,{'é' * 99_999}", f"t2,{long_text}")},
        task_type="text_classification",
        columns={"item_id": "id", "text": "body"},
    )
    assert text_run.ids() == ["t1"] and text_run.why() == [("t.csv", 2, "text")]


def test_mixed_types_in_a_column(tmp_path: Path) -> None:
    data = csv(HEADER + ",score", "1,s3://bkt/a.jpg,x,1", "2.50,s3://bkt/b.jpg,y,abc", "true,s3://bkt/c.jpg,z,")
    run = ingest(tmp_path, {"mixed.csv": data})
    assert run.ids() == ["1", "2.50", "true"]
    assert [json.loads(r["record"])["score"] for r in run.items] == ["1", "abc", ""]
    jsonl = b'{"id": 1, "image": "s3://bkt/a.jpg"}\n{"id": "x", "image": "s3://bkt/b.jpg"}\n{"id": 2.5, "image": "s3://bkt/c.jpg"}\n'
    run = ingest(tmp_path, {"mixed.jsonl": jsonl}, "jsonl", columns={"item_id": "id", "media_uri": "image"})
    assert run.ids() == ["1", "x", "2.5"]
    assert run.items[0]["record"] == '{"id": 1, "image": "s3://bkt/a.jpg"}'


def test_missing_required_column_quarantines_every_row_naming_it(tmp_path: Path) -> None:
    run = ingest(tmp_path, {"noimg.csv": csv("id,caption", "a1,x", "a2,y")})
    assert run.items == []
    assert run.why() == [("noimg.csv", 1, "media_uri"), ("noimg.csv", 2, "media_uri")]
    assert run.quarantine[0]["reason"] == "column 'image' (mapped to media_uri) is missing from the file"


def test_missing_optional_column_is_null_and_reported(tmp_path: Path) -> None:
    run = ingest(tmp_path, {"nocap.csv": csv("id,image", "a1,s3://bkt/a.jpg")})
    assert run.ids() == ["a1"] and run.items[0]["text"] is None
    assert run.tally.notes == (
        (str(tmp_path / "nocap.csv"), "mapped column 'caption' is missing: its values are null"),
    )


def test_missing_id_column_quarantines_rows(tmp_path: Path) -> None:
    run = ingest(tmp_path, {"noid.csv": csv("image,caption", "s3://bkt/a.jpg,x")})
    assert run.why() == [("noid.csv", 1, "item_id")]


def test_extra_columns_are_kept_in_the_record(tmp_path: Path) -> None:
    run = ingest(tmp_path, {"extra.csv": csv("zz,id,image,caption,aa", "1,a1,s3://bkt/a.jpg,x,2")})
    assert run.items[0]["record"] == '{"zz":"1","id":"a1","image":"s3://bkt/a.jpg","caption":"x","aa":"2"}'


def test_empty_files_are_reported_not_errors(tmp_path: Path) -> None:
    files = {"empty.csv": b"", "header.csv": csv(HEADER), "rows.csv": csv(HEADER, "a1,s3://bkt/a.jpg,x")}
    run = ingest(tmp_path, files)
    assert run.ids() == ["a1"]
    assert run.tally.empty_files == (str(tmp_path / "empty.csv"), str(tmp_path / "header.csv"))
    assert run.tally.files_read == 3 and run.tally.files_quarantined == 0


def test_duplicate_ids_within_and_across_files(tmp_path: Path) -> None:
    files = {
        "a.csv": csv(HEADER, "a1,s3://bkt/1.jpg,x", "a2,s3://bkt/2.jpg,x", "a1,s3://bkt/3.jpg,x"),
        "b.csv": csv(HEADER, "a2,s3://bkt/4.jpg,y", "a3,s3://bkt/5.jpg,y"),
    }
    run = ingest(tmp_path, files)
    assert run.ids() == ["a1", "a2", "a3"]
    assert [
        (
            Path(d["source_object"]).name,
            d["source_row"],
            d["item_id"],
            Path(d["duplicate_of_object"]).name,
            d["duplicate_of_row"],
            d["kind"],
        )
        for d in run.duplicates
    ] == [
        ("a.csv", 3, "a1", "a.csv", 1, "id"),
        ("b.csv", 1, "a2", "a.csv", 2, "id"),
    ]


def test_ids_differing_only_in_case_or_whitespace(tmp_path: Path) -> None:
    data = csv(
        HEADER,
        "Item-1,s3://bkt/1.jpg,x",
        "item-1 ,s3://bkt/2.jpg,y",
        '"  ITEM-1",s3://bkt/3.jpg,z',
        "Item-2,s3://bkt/4.jpg,w",
    )
    run = ingest(tmp_path, {"case.csv": data})
    assert [(r["item_id"], r["client_item_id"]) for r in run.items] == [("Item-1", "Item-1"), ("Item-2", "Item-2")]
    assert [(d["source_row"], d["item_id"], d["duplicate_of_row"], d["kind"]) for d in run.duplicates] == [
        (2, "item-1", 1, "id"),
        (3, "ITEM-1", 1, "id"),
    ]


def test_same_content_under_another_id(tmp_path: Path) -> None:
    run = ingest(
        tmp_path, {"c.csv": csv(HEADER, "a1,s3://bkt/1.jpg,x", "a2,s3://bkt/1.jpg,x", "a3,s3://bkt/1.jpg,other")}
    )
    assert run.ids() == ["a1", "a3"]
    assert [(d["source_row"], d["duplicate_of_row"], d["kind"]) for d in run.duplicates] == [(2, 1, "content")]


NAUGHTY = [
    "' OR 1=1; DROP TABLE items; --",
    "\u202eRTL override\u202c",
    "zero\u200bwidth\u200djoin\ufeff",
    "😀👩🏽‍💻🏳️‍🌈",
    "Ṱ̺̺̕o͞ ̷i̲̬͇̪͙n̝̗͕v̟̜̘̦͟o̶̙̰̠kè",
    "null",
    "<script>alert(1)</script>",
    'back\\slash "quote" \t tab',
    "nul\x00byte",
    "\x01\x02\x7f",
    "مرحبا",
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_naughty_strings_as_values_round_trip(tmp_path: Path, fmt: str) -> None:
    rows = [{"id": f"n{i}", "image": f"s3://bkt/{i}.jpg", "caption": s} for i, s in enumerate(NAUGHTY)]
    table = pa.Table.from_pylist(rows)
    if fmt == "csv":
        sink = pa.BufferOutputStream()
        pv.write_csv(table, sink)
        data = sink.getvalue().to_pybytes()
    elif fmt == "jsonl":
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    else:
        pq.write_table(table, tmp_path / "n.parquet")
        data = (tmp_path / "n.parquet").read_bytes()
    run = ingest(tmp_path, {f"n.{fmt}": data}, fmt)
    assert [r["text"] for r in run.items] == NAUGHTY
    assert [json.loads(r["record"]) for r in run.items] == rows


def test_object_keys_with_spaces_unicode_and_dot_dot(tmp_path: Path) -> None:
    ids = ["my item 1", "ünï/😀", "../../etc/passwd", "..", "a\\b"]
    data = csv(HEADER, *[f"{i},s3://bkt/k.jpg{n},x" for n, i in enumerate(ids)])
    run = ingest(tmp_path, {"keys.csv": data})
    assert run.ids() == ids
    parts = [safe_key_part(i) for i in run.ids()]
    assert all("/" not in p and p not in (".", "..") and " " not in p for p in parts)
    assert len(set(parts)) == len(parts)
    # Media keys with spaces and unicode are valid S3 keys: accepted as given.
    run = ingest(tmp_path, {"media.csv": csv(HEADER, "m1,s3://bkt/my photos/ünï 1.jpg,x", "m2,s3://bkt/a/../b.jpg,y")})
    assert [r["media_uri"] for r in run.items] == ["s3://bkt/my photos/ünï 1.jpg", "s3://bkt/a/../b.jpg"]


def test_truncated_gzip(tmp_path: Path) -> None:
    body = csv(HEADER, *[f"a{i},s3://bkt/{i}.jpg,caption {i}" for i in range(30_000)])
    packed = gzip.compress(body)
    run = ingest(tmp_path, {"cut.csv.gz": packed[: len(packed) // 2]})
    assert 0 < len(run.items) < 30_000
    file_rows = [q for q in run.quarantine if q["source_row"] == -1]
    assert len(file_rows) == 1 and file_rows[0]["reason"].startswith(f"file {tmp_path / 'cut.csv.gz'}: ")
    assert "truncated" in file_rows[0]["reason"]
    assert run.tally.files_quarantined == 1
    assert run.tally.rows_read == len(run.items) + 1  # the last record before the break is quarantined


def test_corrupt_parquet(tmp_path: Path) -> None:
    good = pa.table({"id": ["a1"], "image": ["s3://bkt/a.jpg"], "caption": ["x"]})
    pq.write_table(good, tmp_path / "good.parquet")
    files = {"bad.parquet": b"PAR1\x00\x01garbage", "good.parquet": (tmp_path / "good.parquet").read_bytes()}
    run = ingest(tmp_path, files, "parquet")
    assert run.ids() == ["a1"]
    assert run.why() == [("bad.parquet", -1, None)]
    assert "Parquet" in run.quarantine[0]["reason"]
    assert run.tally.files_quarantined == 1 and run.tally.rows_read == 1


def test_jsonl_broken_line(tmp_path: Path) -> None:
    lines = [
        '{"id": "a1", "image": "s3://bkt/a.jpg"}',
        '{"id": "a2", "image": ',
        '{"id": "a3", "image": "s3://bkt/c.jpg"}',
    ]
    run = ingest(
        tmp_path,
        {"b.jsonl": ("\n".join(lines) + "\n").encode()},
        "jsonl",
        columns={"item_id": "id", "media_uri": "image"},
    )
    assert run.ids() == ["a1", "a3"]
    assert run.why() == [("b.jsonl", 2, None)]
    assert run.quarantine[0]["reason"].startswith("line 2: invalid JSON")
    assert run.quarantine[0]["record"] == lines[1].strip()


@pytest.mark.parametrize(
    "uri",
    [
        "https://bkt/a.jpg",
        "s3:/bkt/a.jpg",
        "s3://bkt",
        "s3://bkt/",
        "s3://BKT/a.jpg",
        "s3://bkt/dir/",
        "s3://b/a.jpg",
        "bkt/a.jpg",
        "s3://bkt/a\x01.jpg",
    ],
)
def test_malformed_media_uri_is_quarantined_naming_the_field(tmp_path: Path, uri: str) -> None:
    data = json.dumps({"id": "a1", "image": uri}) + "\n" + json.dumps({"id": "a2", "image": "s3://bkt/ok.jpg"}) + "\n"
    run = ingest(tmp_path, {"m.jsonl": data.encode()}, "jsonl", columns={"item_id": "id", "media_uri": "image"})
    assert run.ids() == ["a2"]
    assert run.why() == [("m.jsonl", 1, "media_uri")]
    assert run.quarantine[0]["reason"].startswith("media_uri is not an s3://bucket/key URI of one object")


def test_media_pointing_at_a_missing_object(tmp_path: Path) -> None:
    asked: list[str] = []

    def exists(uris: list[str]) -> set[str]:
        asked.extend(uris)
        return {u for u in uris if "missing" not in u}

    data = csv(HEADER, "a1,s3://bkt/ok.jpg,x", "a2,s3://bkt/missing.jpg,y", "a3,http://bad,z", "a4,s3://bkt/ok.jpg,w")
    run = ingest(tmp_path, {"m.csv": data}, media_check=check_from_exists(exists))
    assert run.ids() == ["a1", "a4"]
    assert run.why() == [("m.csv", 2, "media_uri"), ("m.csv", 3, "media_uri")]
    assert run.quarantine[0]["reason"] == "media_uri points at a missing object: s3://bkt/missing.jpg"
    assert sorted(asked) == ["s3://bkt/missing.jpg", "s3://bkt/ok.jpg"]  # malformed URIs are not looked up


def test_media_in_a_bucket_kazi_may_not_read_is_quarantined_with_the_check_s_reason(tmp_path: Path) -> None:
    def check(uris: list[str]) -> dict[str, str]:
        return {u: "cannot be read: S3 refused access to bucket 'locked'" for u in uris if "//locked/" in u}

    data = csv(HEADER, "a1,s3://bkt/ok.jpg,x", "a2,s3://locked/1.jpg,y", "a3,s3://locked/1.jpg,z")
    run = ingest(tmp_path, {"m.csv": data}, media_check=check)
    assert run.ids() == ["a1"]
    assert run.why() == [("m.csv", 2, "media_uri"), ("m.csv", 3, "media_uri")]
    assert (
        run.quarantine[1]["reason"]
        == "media_uri cannot be read: S3 refused access to bucket 'locked': s3://locked/1.jpg"
    )
    assert json.loads(run.quarantine[1]["record"]) == {"id": "a3", "image": "s3://locked/1.jpg", "caption": "z"}


# --- formats give the same items -------------------------------------------------------------------

ROWS = [
    {"id": "a1", "image": "s3://bkt/1.jpg", "caption": "one"},
    {"id": "A1", "image": "s3://bkt/2.jpg", "caption": "dup id"},
    {"id": "a2", "image": "s3://bkt/1.jpg", "caption": "one"},
    {"id": "a3", "image": "ftp://x", "caption": "bad uri"},
    {"id": "a4", "image": "s3://bkt/4.jpg", "caption": 'four, "quoted"\nand multi-line'},
]


def encode(fmt: str, tmp_path: Path) -> bytes:
    table = pa.Table.from_pylist(ROWS)
    if fmt.startswith("csv"):
        sink = pa.BufferOutputStream()
        pv.write_csv(table, sink)
        data = sink.getvalue().to_pybytes()
    elif fmt.startswith("jsonl"):
        data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    else:
        pq.write_table(table, tmp_path / "x.parquet")
        data = (tmp_path / "x.parquet").read_bytes()
    return gzip.compress(data) if fmt.endswith(".gz") else data


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"])
@pytest.mark.parametrize("threads", [0, 1, 2])
def test_every_format_gives_the_same_items(tmp_path: Path, fmt: str, threads: int) -> None:
    run = ingest(tmp_path, {f"data.{fmt}": encode(fmt, tmp_path)}, fmt.split(".")[0], threads=threads)
    assert [(r["item_id"], r["media_uri"], r["text"], r["source_row"]) for r in run.items] == [
        ("a1", "s3://bkt/1.jpg", "one", 1),
        ("a4", "s3://bkt/4.jpg", 'four, "quoted"\nand multi-line', 5),
    ]
    assert [(d["source_row"], d["duplicate_of_row"], d["kind"]) for d in run.duplicates] == [
        (2, 1, "id"),
        (3, 1, "content"),
    ]
    assert [(q["source_row"], q["field"]) for q in run.quarantine] == [(4, "media_uri")]


@pytest.mark.parametrize("task_type", list(TaskType))
def test_each_task_type_end_to_end(tmp_path: Path, task_type: TaskType) -> None:
    columns: dict[str, Any] = {"item_id": "id", "text": "caption"}
    if task_type in (TaskType.IMAGE_CLASSIFICATION, TaskType.OBJECT_DETECTION, TaskType.AUDIO_TRANSCRIPTION):
        columns["media_uri"] = "image"
    if task_type == TaskType.LISTING_VERIFICATION:
        columns["fields"] = {"phone": "phone"}
    data = csv(
        "id,image,caption,phone",
        "ok,s3://bkt/a.jpg,some text,+254 700 000",
        ",s3://bkt/b.jpg,no id,+1",
        f"long,s3://bkt/c.jpg,{'x' * 100_001},{'9' * 2_001}",
    )
    run = ingest(tmp_path, {"t.csv": data}, task_type=task_type.value, columns=columns)
    assert run.ids() == ["ok"]
    fields = {q["source_row"]: q["field"] for q in run.quarantine}
    assert fields[2] == "item_id"
    assert fields[3] in {"text", "fields.phone"}


def test_ids_from_the_record_digest_without_an_id_column(tmp_path: Path) -> None:
    data = csv("image,caption", "s3://bkt/a.jpg,x", "s3://bkt/a.jpg,x", "s3://bkt/b.jpg,y")
    run = ingest(tmp_path, {"h.csv": data}, columns={"media_uri": "image", "text": "caption"})
    assert len(run.items) == 2 and all(i.startswith("h-") for i in run.ids())
    assert [(d["source_row"], d["kind"]) for d in run.duplicates] == [(2, "id")]


def test_many_rows_over_many_batches_reconcile(tmp_path: Path) -> None:
    lines = [HEADER] + [f"id-{i % 9_000},s3://bkt/{i % 9_500}.jpg,c{i % 9_700}" for i in range(20_000)] + ["bad"]
    run = ingest(tmp_path, {"big.csv": csv(*lines)}, batch_rows=3_000)
    assert run.tally.rows_read == 20_001
    assert len(set(run.ids())) == len(run.ids())
    assert run.tally.duplicates == 20_000 - len(run.items)


@pytest.mark.parametrize("threads", [1, 2])
def test_closing_early_stops_the_helper_threads_and_the_reader(tmp_path: Path, threads: int) -> None:
    lines = [HEADER] + [f"id-{i},s3://bkt/{i}.jpg,c{i}" for i in range(30_000)]
    (tmp_path / "x.csv").write_bytes(csv(*lines))
    # The threads themselves, not a count: another thread ending meanwhile must neither fail this nor hide one.
    before = set(threading.enumerate())
    batches = iter_files(pafs.LocalFileSystem(), [str(tmp_path / "x.csv")], SourceFormat.CSV, 1_000)
    state = SeenState()
    out = ingest_batches(batches, order(), load_contract("image_classification"), state, threads=threads)
    first = next(out)
    assert first.accepted.num_rows == 1_000
    out.close()
    assert [t.name for t in threading.enumerate() if t not in before] == []
    state.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_an_error_while_reading_reaches_the_caller(tmp_path: Path, threads: int) -> None:
    (tmp_path / "x.csv").write_bytes(csv(HEADER, "a1,s3://bkt/a.jpg,x"))

    def batches() -> Iterator[RawBatch]:
        yield from iter_batches(pafs.LocalFileSystem(), str(tmp_path / "x.csv"), SourceFormat.CSV)
        raise RuntimeError("the store went away")

    out = ingest_batches(batches(), order(), load_contract("image_classification"), SeenState(), threads=threads)
    assert next(out).accepted.num_rows == 1
    with pytest.raises(RuntimeError, match="the store went away"):
        next(out)
