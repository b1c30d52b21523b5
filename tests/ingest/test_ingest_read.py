"""Reading client files: encodings, CSV edge cases, JSONL recovery, Parquet, compression, broken files."""

from __future__ import annotations

import codecs
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from flows.core.models import SourceFormat
from flows.ingest.read import RawBatch, detect_encoding, iter_batches, iter_files

pytestmark = pytest.mark.unit

FS = pafs.LocalFileSystem()


def read(path: Path, fmt: str = "csv", batch_rows: int = 65_536) -> list[RawBatch]:
    return list(iter_batches(FS, str(path), SourceFormat(fmt), batch_rows))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def rows_of(batches: list[RawBatch]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b.table.to_pylist()]


def indices(batches: list[RawBatch]) -> list[int]:
    return [int(i) for b in batches for i in b.rows]


def rejected(batches: list[RawBatch]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b.rejected.to_pylist()]


def records(batches: list[RawBatch]) -> int:
    return sum(b.records for b in batches)


def only_last(batches: list[RawBatch]) -> RawBatch:
    assert [b.last for b in batches].count(True) == 1
    assert batches[-1].last
    return batches[-1]


# --- encodings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (codecs.BOM_UTF8 + b"id\n", ("utf-8", 3)),
        (codecs.BOM_UTF16_LE + "id\n".encode("utf-16-le"), ("utf-16-le", 2)),
        (codecs.BOM_UTF16_BE + "id\n".encode("utf-16-be"), ("utf-16-be", 2)),
        (codecs.BOM_UTF32_LE + "id\n".encode("utf-32-le"), ("utf-32-le", 4)),
        ("id,text\n1,hello\n".encode("utf-16-le"), ("utf-16-le", 0)),
        ("id,text\n1,hello\n".encode("utf-16-be"), ("utf-16-be", 0)),
        ("id,t\n1,ünï\n".encode(), ("utf-8", 0)),
        ("id,t\n1,café\n".encode("cp1252"), ("cp1252", 0)),
        ("id,t\n1,ünï\n".encode() + b"2,caf\xe9\n", ("utf-8", 0)),  # mixed: UTF-8 with a fallback
        ("ü".encode()[:1], ("utf-8", 0)),  # a multi-byte character cut by the sample end
        (b"", ("utf-8", 0)),
    ],
)
def test_detect_encoding(head: bytes, expected: tuple[str, int]) -> None:
    assert detect_encoding(head) == expected


def test_utf8_bom_is_stripped_from_the_first_column_name(tmp_path: Path) -> None:
    batches = read(write(tmp_path, "bom.csv", codecs.BOM_UTF8 + "id,text\n1,ünï\n".encode()))
    assert batches[0].table.column_names == ["id", "text"]
    assert rows_of(batches) == [{"id": "1", "text": "ünï"}]
    assert only_last(batches).encoding == "utf-8"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_are_transcoded(tmp_path: Path, codec: str) -> None:
    text = 'id,text\r\n1,ünï 😀\r\n2,"two\nlines"\r\n'
    data = text.encode(codec)  # "utf-16"/"utf-32" write a BOM; -le/-be do not
    batches = read(write(tmp_path, "u.csv", data))
    assert rows_of(batches) == [{"id": "1", "text": "ünï 😀"}, {"id": "2", "text": "two\nlines"}]
    assert (only_last(batches).encoding or "").startswith(codec[:6])


def test_utf16_transcoding_streams_across_chunks(tmp_path: Path) -> None:
    # Several MiB of UTF-16, so decoding runs over many 1 MiB chunks and surrogate pairs may split.
    lines = [f"{i},ünï 😀 {i}" for i in range(120_000)]
    data = ("id,text\n" + "\n".join(lines) + "\n").encode("utf-16")
    batches = read(write(tmp_path, "big16.csv", data), batch_rows=30_000)
    got = rows_of(batches)
    assert len(got) == 120_000
    assert got[0] == {"id": "0", "text": "ünï 😀 0"}
    assert got[-1] == {"id": "119999", "text": "ünï 😀 119999"}
    assert indices(batches) == list(range(1, 120_001))


def test_latin1_file_is_read_as_windows_1252(tmp_path: Path) -> None:
    data = "id,text\n1,café\n2,€uro – “quoted”\n".encode("cp1252")
    batches = read(write(tmp_path, "latin.csv", data))
    assert rows_of(batches) == [{"id": "1", "text": "café"}, {"id": "2", "text": "€uro – “quoted”"}]
    assert only_last(batches).encoding == "cp1252"


def test_undefined_windows_1252_bytes_decode_to_latin1_controls(tmp_path: Path) -> None:
    batches = read(write(tmp_path, "x.csv", b"id,text\n1,a\x81b\xe9\n"))
    assert rows_of(batches) == [{"id": "1", "text": "a\x81bé"}]


def test_stray_latin1_byte_in_a_utf8_file_is_decoded_and_counted(tmp_path: Path) -> None:
    head = "".join(f"{i},ünï\n" for i in range(20_000)).encode()  # > 64 KiB of clean UTF-8 first
    data = b"id,text\n" + head + b"20000,caf\xe9 \xe9t\xe9\n20001,d\xc3\xa9j\xc3\xa0\n"
    batches = read(write(tmp_path, "mixed.csv", data))
    got = rows_of(batches)
    assert got[-2:] == [{"id": "20000", "text": "café été"}, {"id": "20001", "text": "déjà"}]
    last = only_last(batches)
    assert last.encoding == "utf-8"
    assert last.decode_fallbacks == 3


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_values_are_text_exactly_as_written(tmp_path: Path) -> None:
    data = b'id,n,flag,empty\n007,1,true,\n x ,2.50,FALSE,""\n3,abc,,\n'
    batches = read(write(tmp_path, "types.csv", data))
    assert all(pa.types.is_string(t) for t in batches[0].table.schema.types)
    assert rows_of(batches) == [
        {"id": "007", "n": "1", "flag": "true", "empty": ""},
        {"id": " x ", "n": "2.50", "flag": "FALSE", "empty": ""},
        {"id": "3", "n": "abc", "flag": "", "empty": ""},
    ]


def test_crlf_line_ends_leave_no_carriage_returns(tmp_path: Path) -> None:
    batches = read(write(tmp_path, "crlf.csv", b"id,text\r\n1,a\r\n2,b\r\n"))
    assert rows_of(batches) == [{"id": "1", "text": "a"}, {"id": "2", "text": "b"}]


def test_quoted_newlines_are_one_record_and_lines_are_counted(tmp_path: Path) -> None:
    data = b'id,text\r\n1,"first\r\nsecond\nthird"\r\n2,"x ""q"" y"\r\nbad\r\n3,z\r\n'
    batches = read(write(tmp_path, "nl.csv", data))
    assert rows_of(batches) == [
        {"id": "1", "text": "first\r\nsecond\nthird"},
        {"id": "2", "text": 'x "q" y'},
        {"id": "3", "text": "z"},
    ]
    assert indices(batches) == [1, 2, 4]
    assert rejected(batches) == [
        {
            "source_object": str(tmp_path / "nl.csv"),
            "source_row": 3,
            "field": None,
            "reason": "line 6: expected 2 fields, found 1",
            "record": "bad",
        }
    ]
    assert records(batches) == 4


def test_rows_with_the_wrong_number_of_fields_are_rejected_in_place(tmp_path: Path) -> None:
    data = b"a,b\n1,2\n3\n4,5,6\n\n7,8\n\n"
    batches = read(write(tmp_path, "ragged.csv", data))
    assert rows_of(batches) == [{"a": "1", "b": "2"}, {"a": "7", "b": "8"}]
    assert indices(batches) == [1, 4]
    assert [(r["source_row"], r["reason"], r["record"]) for r in rejected(batches)] == [
        (2, "line 3: expected 2 fields, found 1", "3"),
        (3, "line 4: expected 2 fields, found 3", "4,5,6"),
    ]
    assert records(batches) == 4  # blank lines are not records


def test_rejected_rows_are_placed_exactly_across_many_blocks(tmp_path: Path) -> None:
    lines = [b"id,text"]
    for i in range(1, 30_001):
        lines.append(b"bad%d" % i if i % 2_999 == 0 else b'%d,"v\n%d %s"' % (i, i, b"x" * 150))
    batches = read(write(tmp_path, "many.csv", b"\n".join(lines) + b"\n"), batch_rows=1_000)
    assert len(batches) >= 4  # 1 MiB blocks over ~5 MB
    bad = [i for i in range(1, 30_001) if i % 2_999 == 0]
    assert [r["source_row"] for r in rejected(batches)] == bad
    # The header is line 1, each good record spans two lines, each bad one one line.
    expected = [f"line {2 + 2 * (i - 1) - k}: expected 2 fields, found 1" for k, i in enumerate(bad)]
    assert [r["reason"] for r in rejected(batches)] == expected
    assert indices(batches) == [i for i in range(1, 30_001) if i % 2_999]
    assert records(batches) == 30_000


def test_a_field_over_131072_characters_is_read_whole(tmp_path: Path) -> None:
    big = "ü" * 131_073
    data = f"id,text\n1,{big}\n2,small\n".encode()
    batches = read(write(tmp_path, "big.csv", data))
    assert rows_of(batches) == [{"id": "1", "text": big}, {"id": "2", "text": "small"}]


def test_a_record_larger_than_the_block_is_read_again_with_bigger_blocks(tmp_path: Path) -> None:
    huge = "x" * (3 << 20)  # 3 MiB: more than the first block size
    lines = "".join(f"{i},row {i}\n" for i in range(1, 20_001))
    data = f"id,text\n{lines}20001,{huge}\n20002,after\n".encode()
    batches = read(write(tmp_path, "huge.csv", data), batch_rows=5_000)
    got = rows_of(batches)
    assert len(got) == 20_002
    assert got[20_000] == {"id": "20001", "text": huge}
    assert got[-1] == {"id": "20002", "text": "after"}
    assert indices(batches) == list(range(1, 20_003))  # nothing given twice after the re-read


def test_empty_file_is_one_empty_last_batch(tmp_path: Path) -> None:
    batches = read(write(tmp_path, "empty.csv", b""))
    assert len(batches) == 1
    assert batches[0].last and batches[0].table.num_rows == 0 and batches[0].file_error is None
    assert records(batches) == 0


@pytest.mark.parametrize("data", [b"id,text", b"id,text\n", b"id,text\r\n\r\n"])
def test_header_only_file_has_columns_and_no_rows(tmp_path: Path, data: bytes) -> None:
    batches = read(write(tmp_path, "header.csv", data))
    assert batches[-1].table.column_names == ["id", "text"]
    assert records(batches) == 0 and only_last(batches).file_error is None


def test_duplicate_column_names_quarantine_the_file(tmp_path: Path) -> None:
    batches = read(write(tmp_path, "dup.csv", b"id,text,id\n1,a,2\n"))
    last = only_last(batches)
    assert "duplicate column name(s) ['id']" in (last.file_error or "")
    assert [(r["source_row"], r["reason"].startswith(f"file {tmp_path / 'dup.csv'}: ")) for r in rejected(batches)] == [
        (-1, True)
    ]
    assert records(batches) == 0


def test_batches_stay_near_batch_rows_and_only_the_last_is_last(tmp_path: Path) -> None:
    data = b"id\n" + b"".join(b"%d\n" % i for i in range(50_000))
    batches = read(write(tmp_path, "n.csv", data), batch_rows=10_000)
    only_last(batches)
    assert len(batches) >= 3
    assert indices(batches) == list(range(1, 50_001))


# --- compression ----------------------------------------------------------------------------------


def test_gzip_csv(tmp_path: Path) -> None:
    data = gzip.compress(b"id,text\n1,a\n2,b\n")
    assert rows_of(read(write(tmp_path, "a.csv.gz", data))) == [{"id": "1", "text": "a"}, {"id": "2", "text": "b"}]


def test_concatenated_gzip_members_are_all_read(tmp_path: Path) -> None:
    data = gzip.compress(b"id,text\n1,a\n") + gzip.compress(b"2,b\n")
    assert indices(read(write(tmp_path, "multi.csv.gz", data))) == [1, 2]


def test_truncated_gzip_keeps_rows_before_the_break_and_quarantines_the_file(tmp_path: Path) -> None:
    body = b"id,text\n" + b"".join(b"%d,hello %d\n" % (i, i) for i in range(1, 40_001))
    packed = gzip.compress(body)
    path = write(tmp_path, "cut.csv.gz", packed[: len(packed) // 2])
    batches = read(path, batch_rows=5_000)
    last = only_last(batches)
    got = indices(batches)
    assert 0 < len(got) < 40_000
    assert got == list(range(1, len(got) + 1))  # complete records, in order, none skipped
    assert rows_of(batches)[-1] == {"id": str(got[-1]), "text": f"hello {got[-1]}"}
    rej = rejected(batches)
    # The last record before the break may be cut short: quarantined, not accepted.
    assert rej[0]["source_row"] == got[-1] + 1 and "may be cut short" in rej[0]["reason"]
    assert rej[-1]["source_row"] == -1 and rej[-1]["reason"].startswith(f"file {path}: ")
    assert "truncated" in (last.file_error or "")
    assert records(batches) == got[-1] + 1
    assert read(path, batch_rows=5_000)[-1].file_error == last.file_error  # deterministic


def test_corrupt_gzip_data_is_a_file_error(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(b"id,text\n" + b"1,a\n" * 1000))
    packed[20:40] = b"\xff" * 20
    last = only_last(read(write(tmp_path, "bad.csv.gz", bytes(packed))))
    assert last.file_error is not None and "gzip" in last.file_error


# --- Parquet --------------------------------------------------------------------------------------


def test_parquet_keeps_its_types_and_counts_rows(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b", "c"], "n": [1, None, 3], "x": [0.5, 1.0, None]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    batches = read(tmp_path / "t.parquet", "parquet", batch_rows=2)
    assert pa.types.is_integer(batches[0].table.schema.field("n").type)
    assert rows_of(batches) == table.to_pylist()
    assert indices(batches) == [1, 2, 3]
    assert only_last(batches).encoding is None


def test_corrupt_parquet_is_quarantined_as_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.parquet", b"PAR1 this is not parquet at all PAR1")
    batches = read(path, "parquet")
    last = only_last(batches)
    assert last.file_error is not None and "Parquet" in last.file_error
    assert rejected(batches) == [
        {
            "source_object": str(path),
            "source_row": -1,
            "field": None,
            "reason": f"file {path}: {last.file_error}",
            "record": None,
        }
    ]
    assert records(batches) == 0


def test_parquet_with_a_corrupt_page_keeps_the_rows_before_it(tmp_path: Path) -> None:
    table = pa.table({"id": [f"id-{i:06d}" for i in range(30_000)]})
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=10_000, compression="none")
    data = bytearray((tmp_path / "p.parquet").read_bytes())
    mid = len(data) * 2 // 3
    data[mid : mid + 2000] = b"\x07" * 2000  # inside the last row group's pages
    path = write(tmp_path, "p.parquet", bytes(data))
    batches = read(path, "parquet", batch_rows=10_000)
    got = indices(batches)
    assert got == list(range(1, len(got) + 1))
    assert len(got) < 30_000
    assert only_last(batches).file_error is not None
    assert rejected(batches)[-1]["source_row"] == -1


def test_empty_parquet_object_is_an_empty_file(tmp_path: Path) -> None:
    batches = read(write(tmp_path, "zero.parquet", b""), "parquet")
    assert len(batches) == 1 and batches[0].file_error is None and records(batches) == 0


def test_gzip_parquet_is_refused(tmp_path: Path) -> None:
    last = only_last(read(write(tmp_path, "x.parquet.gz", gzip.compress(b"PAR1")), "parquet"))
    assert "compressed Parquet" in (last.file_error or "")


# --- JSONL ----------------------------------------------------------------------------------------


def test_jsonl_values_become_text_and_lines_stay_verbatim(tmp_path: Path) -> None:
    lines = [
        '{"id": 1, "text": "a", "price": 1.50, "ok": true, "none": null}',
        "",
        '  {"id": "x", "text": "b\\u0000c", "price": 2}  ',
    ]
    batches = read(write(tmp_path, "a.jsonl", ("\r\n".join(lines) + "\r\n").encode()), "jsonl")
    assert rows_of(batches) == [
        {"id": "1", "text": "a", "price": "1.5", "ok": "true", "none": None},
        {"id": "x", "text": "b\x00c", "price": "2", "ok": None, "none": None},
    ]
    assert indices(batches) == [1, 2]
    raw = batches[0].raw_records
    assert raw is not None
    assert raw.to_pylist() == [lines[0], lines[2].strip()]


def test_jsonl_broken_lines_are_rejected_with_their_line_and_the_rest_kept(tmp_path: Path) -> None:
    lines = ['{"id": 1}', "{broken", "", "[1, 2]", '{"id": 2, "id": 3}', "null", '{"id": 4}']
    path = write(tmp_path, "b.jsonl", ("\n".join(lines) + "\n").encode())
    batches = read(path, "jsonl")
    assert rows_of(batches) == [{"id": "1"}, {"id": "4"}]
    assert indices(batches) == [1, 6]
    rej = [(r["source_row"], r["reason"].split(":")[0], r["record"]) for r in rejected(batches)]
    assert rej == [
        (2, "line 2", "{broken"),
        (3, "line 4", "[1, 2]"),
        (4, "line 5", '{"id": 2, "id": 3}'),
        (5, "line 6", "null"),
    ]
    assert "duplicate key" in rejected(batches)[2]["reason"]
    assert "one JSON object per line expected, found list" in rejected(batches)[1]["reason"]
    assert records(batches) == 6


def test_jsonl_mixed_types_and_nested_values(tmp_path: Path) -> None:
    lines = ['{"id": 1, "tags": ["a", "b"]}', '{"id": "A-2", "tags": {"k": 1.0}}', '{"id": 3.5}']
    batches = read(write(tmp_path, "m.jsonl", ("\n".join(lines) + "\n").encode()), "jsonl")
    assert rows_of(batches) == [
        {"id": "1", "tags": '["a","b"]'},
        {"id": "A-2", "tags": '{"k":1.0}'},
        {"id": "3.5", "tags": None},
    ]


def test_jsonl_iso_strings_stay_strings(tmp_path: Path) -> None:
    lines = ['{"when": "2024-01-02T03:04:05Z", "id": "a"}', '{"when": "2024-01-02", "id": "b"}']
    batches = read(write(tmp_path, "t.jsonl", ("\n".join(lines) + "\n").encode()), "jsonl")
    assert rows_of(batches) == [
        {"when": "2024-01-02T03:04:05Z", "id": "a"},
        {"when": "2024-01-02", "id": "b"},
    ]


@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16"])
def test_jsonl_with_bom(tmp_path: Path, codec: str) -> None:
    data = '{"id": "ü"}\n{"id": "2"}\n'.encode(codec)
    assert rows_of(read(write(tmp_path, "bom.jsonl", data), "jsonl")) == [{"id": "ü"}, {"id": "2"}]


def test_jsonl_gzip_and_no_final_newline(tmp_path: Path) -> None:
    data = gzip.compress(b'{"id": 1}\n{"id": 2}')
    assert rows_of(read(write(tmp_path, "z.jsonl.gz", data), "jsonl")) == [{"id": "1"}, {"id": "2"}]


def test_jsonl_in_several_batches(tmp_path: Path) -> None:
    data = "".join(json.dumps({"id": i, "v": "x" * (i % 7)}) + "\n" for i in range(25_000)).encode()
    batches = read(write(tmp_path, "many.jsonl", data), "jsonl", batch_rows=4_000)
    assert len(batches) >= 3
    assert indices(batches) == list(range(1, 25_001))


def test_empty_jsonl(tmp_path: Path) -> None:
    batches = read(write(tmp_path, "e.jsonl", b"\n\n"), "jsonl")
    assert len(batches) == 1 and records(batches) == 0 and batches[0].file_error is None


# --- several files --------------------------------------------------------------------------------


def test_iter_files_reads_each_file_in_turn(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", b"id\n1\n2\n")
    b = write(tmp_path, "b.csv", b"id\n3\n")
    batches = list(iter_files(FS, [str(a), str(b)], SourceFormat.CSV))
    assert [(x.source_object, x.last) for x in batches] == [(str(a), True), (str(b), True)]
    assert [np.asarray(x.rows).tolist() for x in batches] == [[1, 2], [1]]


def test_iter_files_names_files_with_a_prefix(tmp_path: Path) -> None:
    a = write(tmp_path, "a.csv", b"id\n1\n")
    batches = list(iter_files(FS, [str(a)], SourceFormat.CSV, prefix="s3://"))
    assert [b.source_object for b in batches] == [f"s3://{a}"]


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    last = only_last(read(tmp_path / "nope.csv"))
    assert last.file_error is not None and "cannot open" in last.file_error


def test_name_overrides_the_path_in_the_output(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", b"id\n1\n\x00bad,row\n")
    batches = list(iter_batches(FS, str(path), SourceFormat.CSV, name="s3://in/x.csv"))
    assert {b.source_object for b in batches} == {"s3://in/x.csv"}
    assert {r["source_object"] for r in rejected(batches)} == {"s3://in/x.csv"}


def test_old_mac_line_ends(tmp_path: Path) -> None:
    batches = read(write(tmp_path, "mac.csv", b'id,text\r1,a\r2,"b\rc"\r'))
    assert rows_of(batches) == [{"id": "1", "text": "a"}, {"id": "2", "text": "b\rc"}]
