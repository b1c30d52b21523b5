"""Where ingested batches go: one Parquet file per shard, plus the quarantine and duplicates tables.

Writers stream row groups to S3 (``pyarrow.fs`` output streams), so memory stays at a few batches
whatever the input size. Keys are deterministic for an ingest version, so a rerun after a crash
rewrites the same objects with the same rows instead of adding new ones.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flows.core.schemas import DUPLICATES, ITEMS, QUARANTINE

# Dictionary encoding only where values repeat: ids, texts and records are unique, and encoding them
# costs time for nothing.
PARQUET_OPTIONS = {
    "compression": "zstd",
    "write_statistics": True,
    "use_dictionary": ["source_object", "shard", "field", "reason", "kind", "duplicate_of_object"],
}


class IngestSink:
    """Parquet writers for one ingest version under ``root`` (``bucket/prefix`` in ``fs``)."""

    def __init__(self, fs: pafs.FileSystem, root: str, n_shards: int) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.n_shards = n_shards
        self._items: dict[int, pq.ParquetWriter] = {}
        self._quarantine: pq.ParquetWriter | None = None
        self._duplicates: pq.ParquetWriter | None = None

    def shard_path(self, shard: int) -> str:
        return f"{self.root}/items/shard={shard:02d}/part-0.parquet"

    @property
    def quarantine_path(self) -> str:
        return f"{self.root}/quarantine.parquet"

    @property
    def duplicates_path(self) -> str:
        return f"{self.root}/duplicates.parquet"

    def _writer(self, path: str, schema: pa.Schema) -> pq.ParquetWriter:
        return pq.ParquetWriter(path, schema, filesystem=self.fs, **PARQUET_OPTIONS)

    def write_items(self, items: pa.Table) -> None:
        if items.num_rows == 0:
            return
        items = items.cast(ITEMS)
        shards = items.column("shard").to_numpy()
        order = np.argsort(shards, kind="stable")
        sorted_items = items.take(pa.array(order))
        bounds = np.flatnonzero(np.diff(shards[order])) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(order)]])
        for start, end in zip(starts, ends, strict=True):
            shard = int(shards[order[start]])
            if shard not in self._items:
                self._items[shard] = self._writer(self.shard_path(shard), ITEMS)
            self._items[shard].write_table(sorted_items.slice(int(start), int(end - start)))

    def write_quarantine(self, rows: pa.Table) -> None:
        if rows.num_rows:
            if self._quarantine is None:
                self._quarantine = self._writer(self.quarantine_path, QUARANTINE)
            self._quarantine.write_table(rows.select(QUARANTINE.names).cast(QUARANTINE))

    def write_duplicates(self, rows: pa.Table) -> None:
        if rows.num_rows:
            if self._duplicates is None:
                self._duplicates = self._writer(self.duplicates_path, DUPLICATES)
            self._duplicates.write_table(rows.select(DUPLICATES.names).cast(DUPLICATES))

    def close(self) -> None:
        """Close every writer; tables that got no rows are written empty, so readers find them."""
        writers = list(self._items.values())
        for attr, schema, path in (
            ("_quarantine", QUARANTINE, self.quarantine_path),
            ("_duplicates", DUPLICATES, self.duplicates_path),
        ):
            writer = getattr(self, attr)
            writers.append(writer if writer is not None else self._writer(path, schema))
        # Closing a writer completes its object's upload: in parallel, about one round trip for all.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda w: w.close(), writers))

    def __enter__(self) -> IngestSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()


def quarantine_summary(quarantine: pa.Table, limit: int = 20) -> list[dict[str, object]]:
    """The first quarantined rows, for the report: file, row, field and reason."""
    head = quarantine.slice(0, limit)
    return [
        {
            "file": r["source_object"],
            "row": r["source_row"],
            "field": r["field"] or "",
            "reason": r["reason"],
        }
        for r in head.select(["source_object", "source_row", "field", "reason"]).to_pylist()
    ]


def reasons_count(quarantine: pa.Table) -> list[tuple[str, int]]:
    """Quarantined rows per field, most frequent first."""
    if quarantine.num_rows == 0:
        return []
    fields = pc.fill_null(quarantine.column("field"), "(whole file)")
    counts = pc.value_counts(fields).to_pylist()
    return sorted(((c["values"], c["counts"]) for c in counts), key=lambda x: -x[1])
