"""Where ingested batches go: item parts staged locally, rolled over and uploaded; the quarantine tally."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from flows.core.schemas import DUPLICATES, ITEMS, QUARANTINE
from flows.ingest import sink as sink_module
from flows.ingest.sink import IngestSink, QuarantineTally

pytestmark = pytest.mark.unit


def items(start: int, n: int) -> pa.Table:
    rows = range(start, start + n)
    return pa.table(
        {
            "item_id": [f"i{r}" for r in rows],
            "client_item_id": [f"i{r}" for r in rows],
            "text": [f"text {r}" for r in rows],
            "media_uri": pa.nulls(n, pa.string()),
            "fields": pa.nulls(n, pa.string()),
            "record": [f'{{"id":"i{r}"}}' for r in rows],
            "source_object": ["s3://b/in.csv"] * n,
            "source_row": pa.array(list(rows), pa.int64()),
            "shard": pa.array([r % 16 for r in rows], pa.int32()),
        },
        schema=ITEMS,
    )


def quarantined(rows: list[int], field: str | None = "text") -> pa.Table:
    return pa.table(
        {
            "source_object": ["s3://b/in.csv"] * len(rows),
            "source_row": pa.array(rows, pa.int64()),
            "field": pa.array([field] * len(rows), pa.string()),
            "reason": [f"bad {r}" for r in rows],
            "record": [f"r{r}" for r in rows],
        },
        schema=QUARANTINE,
    )


def test_items_roll_over_into_parts_in_ingest_order_and_every_row_lands_once(tmp_path: Path) -> None:
    out, stage = tmp_path / "out", tmp_path / "stage"
    stage.mkdir()
    with IngestSink(pafs.LocalFileSystem(), str(out), rows_per_part=10, staging_dir=stage) as sink:
        for start in range(0, 50, 7):
            sink.write_items(items(start, min(7, 50 - start)))
        sink.write_quarantine(quarantined([3, 4]))
    parts = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert parts == [
        "duplicates.parquet",
        "items/part-00000.parquet",
        "items/part-00001.parquet",
        "items/part-00002.parquet",
        "items/part-00003.parquet",
        "quarantine.parquet",
    ]
    # A part closes at the first batch that takes it to 10 rows or more: 7 + 7, three times, then the rest.
    rows = [pq.read_table(out / p, schema=ITEMS)["source_row"].to_pylist() for p in parts[1:5]]
    assert rows == [list(range(14)), list(range(14, 28)), list(range(28, 42)), list(range(42, 50))]
    assert pq.read_table(out / "quarantine.parquet").num_rows == 2
    assert pq.read_table(out / "duplicates.parquet").schema.equals(DUPLICATES)
    assert list(stage.iterdir()) == []  # the staging folder is gone


def test_items_are_written_in_row_groups_of_about_a_reader_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "ROW_GROUP_ROWS", 10_000)
    out = tmp_path / "out"
    with IngestSink(pafs.LocalFileSystem(), str(out)) as sink:
        for start in range(0, 36_000, 4_000):
            sink.write_items(items(start, 4_000))
    meta = pq.ParquetFile(out / "items/part-00000.parquet").metadata
    # Rows are held until 10,000 or more are, then written as one group; the rest at the close.
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [12_000, 12_000, 12_000]
    rows = pq.read_table(out / "items/part-00000.parquet")["source_row"].to_pylist()
    assert rows == list(range(36_000))  # every row once, in ingest order


def test_a_failed_run_uploads_nothing_and_leaves_no_staging_files(tmp_path: Path) -> None:
    out, stage = tmp_path / "out", tmp_path / "stage"
    stage.mkdir()
    sink = IngestSink(pafs.LocalFileSystem(), str(out), staging_dir=stage)
    with pytest.raises(RuntimeError, match="boom"), sink:
        sink.write_items(items(0, 5))
        raise RuntimeError("boom")
    assert not out.exists()
    assert list(stage.iterdir()) == []


def disk_full_when(monkeypatch: pytest.MonkeyPatch, fails: Callable[[pa.Table, int], bool]) -> list[pa.Table]:
    """Parquet writes fail with "No space left on device" where ``fails(table, call number)``; returns
    every table asked to be written."""
    real = pq.ParquetWriter.write_table
    asked: list[pa.Table] = []

    def write(self: pq.ParquetWriter, table: pa.Table, *args: object, **kwargs: object) -> None:
        asked.append(table)
        if fails(table, len(asked)):
            raise OSError("No space left on device")
        real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write)
    return asked


def test_a_write_that_fails_on_the_writer_thread_fails_the_close_and_uploads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "ROW_GROUP_ROWS", 1_000)
    out, stage = tmp_path / "out", tmp_path / "stage"
    stage.mkdir()
    disk_full_when(monkeypatch, lambda _, call: call == 2)  # one row group written, the next one fails
    sink = IngestSink(pafs.LocalFileSystem(), str(out), staging_dir=stage)
    with pytest.raises(OSError, match="No space left"), sink:
        for start in range(0, 4_000, 1_000):
            sink.write_items(items(start, 1_000))
    assert not out.exists() or list(out.rglob("*.parquet")) == []
    assert list(stage.iterdir()) == []


def test_after_a_failed_write_a_part_that_fills_up_later_is_not_uploaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One writer thread, so the later parts are surely written after the failure (with two, the next part
    # can be finished on the other thread before the failing write has failed).
    monkeypatch.setattr(sink_module, "_WRITER_THREADS", 1)
    out, stage = tmp_path / "out", tmp_path / "stage"
    stage.mkdir()
    asked = disk_full_when(monkeypatch, lambda table, _: table.column("source_row")[0].as_py() == 0)
    # The test waits for the second part to be closed on the writer thread before the failure can surface
    # in the caller (which cancels whatever is still queued), so that part is surely finished, and its
    # upload surely asks whether a write failed.
    closes, second_closed = [], threading.Event()
    real_close = sink_module._Part.close

    def close(part: sink_module._Part) -> None:
        try:
            real_close(part)  # the first part's rows are written here, and fail
        finally:
            closes.append(part.key)
            if len(closes) == 2:
                second_closed.set()

    monkeypatch.setattr(sink_module._Part, "close", close)
    uploaded: list[str] = []
    # Parts of 1,000 rows: each batch fills one part, which is closed and sent up at once.
    sink = IngestSink(
        pafs.LocalFileSystem(),
        str(out),
        rows_per_part=1_000,
        staging_dir=stage,
        upload=lambda _local, key: uploaded.append(key),
    )
    with pytest.raises(OSError, match="No space left"), sink:
        sink.write_items(items(0, 1_000))
        sink.write_items(items(1_000, 1_000))
        assert second_closed.wait(timeout=60)
        for start in range(2_000, 4_000, 1_000):
            sink.write_items(items(start, 1_000))
    # The next part was written whole after the first part's write had failed, and still not sent up (then
    # the failure surfaced in the caller, and nothing more was written).
    assert [t.column("source_row")[0].as_py() for t in asked][:2] == [0, 1_000]
    assert closes[:2] == [sink.part_path(0), sink.part_path(1)]
    assert uploaded == []
    assert not out.exists() or list(out.rglob("*.parquet")) == []
    assert list(stage.iterdir()) == []


def test_the_quarantine_tally_keeps_the_first_rows_and_counts_every_field() -> None:
    tally = QuarantineTally(limit=3)
    tally.add(quarantined([1, 2], "text"))
    tally.add(quarantined([5, 6, 7], "item_id"))
    tally.add(quarantined([-1], None))
    tally.add(QUARANTINE.empty_table())
    assert tally.head["source_row"].to_pylist() == [1, 2, 5]
    assert tally.fields == [("item_id", 3), ("text", 2), ("(whole file)", 1)]
