"""Where ingested batches go: shard files staged locally, rolled over and uploaded; the quarantine tally."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from flows.core.schemas import DUPLICATES, ITEMS, QUARANTINE
from flows.ingest.sink import IngestSink, QuarantineTally

pytestmark = pytest.mark.unit


def items(start: int, n: int, shards: int = 2) -> pa.Table:
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
            "shard": pa.array([r % shards for r in rows], pa.int32()),
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


def test_shards_roll_over_into_parts_and_every_row_lands_once(tmp_path: Path) -> None:
    out, stage = tmp_path / "out", tmp_path / "stage"
    stage.mkdir()
    with IngestSink(pafs.LocalFileSystem(), str(out), 2, rows_per_part=10, staging_dir=stage) as sink:
        for start in range(0, 50, 7):
            sink.write_items(items(start, min(7, 50 - start)))
        sink.write_quarantine(quarantined([3, 4]))
    parts = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert parts == [
        "duplicates.parquet",
        "items/shard=00/part-0.parquet",
        "items/shard=00/part-1.parquet",
        "items/shard=00/part-2.parquet",
        "items/shard=01/part-0.parquet",
        "items/shard=01/part-1.parquet",
        "items/shard=01/part-2.parquet",
        "quarantine.parquet",
    ]
    got = pa.concat_tables(pq.read_table(p, schema=ITEMS) for p in sorted(out.glob("items/*/*.parquet")))
    assert sorted(got["source_row"].to_pylist()) == list(range(50))
    assert pq.read_table(out / "quarantine.parquet").num_rows == 2
    assert pq.read_table(out / "duplicates.parquet").schema.equals(DUPLICATES)
    assert list(stage.iterdir()) == []  # the staging folder is gone


def test_shards_write_row_groups_of_staggered_sizes_in_file_order(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with IngestSink(pafs.LocalFileSystem(), str(out), 4) as sink:
        for start in range(0, 120_000, 4_000):  # 1,000 rows a shard each time
            sink.write_items(items(start, 4_000, shards=4))
    groups = {}
    for shard in range(4):
        meta = pq.ParquetFile(out / f"items/shard={shard:02d}/part-0.parquet").metadata
        groups[shard] = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        rows = pq.ParquetFile(out / f"items/shard={shard:02d}/part-0.parquet").read()["source_row"].to_pylist()
        assert rows == list(range(shard, 120_000, 4))  # every row once, in file order
    # Each shard its own size (from 8,192 rows, by 2,048): the shards' writes do not all come in one batch.
    assert [g[0] for g in groups.values()] == [9_000, 11_000, 13_000, 15_000]
    assert all(sum(g) == 30_000 for g in groups.values())


def test_a_failed_run_uploads_nothing_and_leaves_no_staging_files(tmp_path: Path) -> None:
    out, stage = tmp_path / "out", tmp_path / "stage"
    stage.mkdir()
    sink = IngestSink(pafs.LocalFileSystem(), str(out), 2, staging_dir=stage)
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
    out, stage = tmp_path / "out", tmp_path / "stage"
    stage.mkdir()
    disk_full_when(monkeypatch, lambda _, call: call == 2)  # one row group written, the next one fails
    sink = IngestSink(pafs.LocalFileSystem(), str(out), 1, staging_dir=stage)
    with pytest.raises(OSError, match="No space left"), sink:
        for start in range(0, 4 * 16_384, 16_384):
            sink.write_items(items(start, 16_384, shards=1))
    assert not out.exists() or list(out.rglob("*.parquet")) == []
    assert list(stage.iterdir()) == []


def test_after_a_failed_write_a_part_that_fills_up_later_is_not_uploaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, stage = tmp_path / "out", tmp_path / "stage"
    stage.mkdir()
    asked = disk_full_when(monkeypatch, lambda table, _: table.column("shard")[0].as_py() == 0)
    # Parts of 16,384 rows: each batch fills one part of each shard, which is closed and sent up at once.
    sink = IngestSink(pafs.LocalFileSystem(), str(out), 2, rows_per_part=16_384, staging_dir=stage)
    with pytest.raises(OSError, match="No space left"), sink:
        for start in range(0, 4 * 32_768, 32_768):
            sink.write_items(items(start, 32_768, shards=2))
    # Shard 1's parts were written whole after shard 0's write had failed, and still not sent up.
    assert any(t.column("shard")[0].as_py() == 1 for t in asked)
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
