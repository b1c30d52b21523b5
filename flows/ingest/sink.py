"""Where ingested batches go: the items as Parquet parts in ingest order, the quarantine and duplicates tables.

Items are written in the order they were read, to ``items/part-NNNNN.parquet``: a part is closed after
:data:`ROWS_PER_PART` rows and uploaded by a background thread while the next one fills, so uploading
overlaps the work and only the last part is left to send at the end. (Items used to go to 16 files by
id hash, ``items/shard=NN/``, which no stage reads by: every shard file got rows from every batch, so the
rows had to be reordered (a copy of every string), and no file filled up before the end, so all of them
went up after the last batch: 0.5 s of 3.9 at 2.5M rows, 1.0 s of 8 at 5M. The ``shard`` column is still
written, for a stage that wants to partition by id.)

Files are written to a local staging folder and uploaded whole, not streamed to S3: an S3 output stream
holds its multipart buffers in memory (about 15 MB each), a local file holds nothing, and the upload
(boto3's managed transfer on S3, see ``upload``) holds two 8 MB parts per file in flight. Row groups are
encoded and compressed on writer threads (each file's writes on one of them, in order; parts take turns).
Keys are deterministic for an ingest version (parts roll over at fixed row counts), so a rerun after a
crash rewrites the same objects with the same rows instead of adding new ones.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flows.core.schemas import DUPLICATES, ITEMS, QUARANTINE

# Dictionary encoding only where values repeat: ids, texts and records are unique, and encoding them
# costs time for nothing.
# Min/max statistics only on the columns a reader filters on: for texts, records and hashes they cost a
# quarter of the write (measured 0.87 vs 0.66 s per million items) and prune nothing.
PARQUET_OPTIONS = {
    "compression": "zstd",
    "write_statistics": ["item_id", "source_object", "source_row", "shard", "field", "kind", "duplicate_of_object"],
    "use_dictionary": ["source_object", "shard", "field", "reason", "kind", "duplicate_of_object"],
}
#: Items rows in one part file before it is closed, uploaded, and the next part started (about 11 MB).
ROWS_PER_PART = 250_000
#: Items rows gathered before they are written as one row group: each of the reader's batches (up to
#: 131,072 rows) makes one, and smaller ones are put together.
ROW_GROUP_ROWS = 65_536
_UPLOADS_IN_FLIGHT = 2
#: Row groups queued for the writer threads: Parquet encoding and zstd (which release the GIL) run beside
#: the caller's next batch instead of in its way.
_WRITES_IN_FLIGHT = 4
#: Threads encoding row groups: a part's writes on one, while the part before it is finished on the other
#: (and the quarantine and duplicates tables are written beside the items).
_WRITER_THREADS = 2
_UPLOAD_CHUNK = 8 << 20


@dataclass
class _Part:
    writer: pq.ParquetWriter
    local: Path
    key: str
    rows: int = 0
    held: list[pa.Table] = field(default_factory=list)
    held_rows: int = 0
    lane: int = 0  # the writer thread of this file (IngestSink._writers)

    def add(self, rows: pa.Table, group_rows: int) -> pa.Table | None:
        """Hold rows; once ``group_rows`` are held, returns them as one row group to write."""
        self.held.append(rows)
        self.held_rows += rows.num_rows
        self.rows += rows.num_rows
        return self.take() if self.held_rows >= group_rows else None

    def take(self) -> pa.Table | None:
        """The rows held, as one table (None when there are none), and hold nothing."""
        if not self.held:
            return None
        table = pa.concat_tables(self.held)
        self.held, self.held_rows = [], 0
        return table

    def close(self) -> None:
        """Write what is held and close the file (on the file's writer thread, after its writes)."""
        table = self.take()
        if table is not None:
            self.writer.write_table(table)
        self.writer.close()


class IngestSink:
    """Parquet writers for one ingest version under ``root`` (``bucket/prefix`` in ``fs``).

    Args:
        fs: Where the tables go (S3 in production).
        root: Folder of the ingest version in ``fs``.
        rows_per_part: Items rows per part file.
        staging_dir: Parent of the private local folder files are written to first (default: the
            system's temporary folder).
        upload: How a finished local file goes to its path in ``fs`` (default: copied through ``fs`` in
            8 MB chunks); on S3, :meth:`flows.core.s3.ObjectStore.upload_file`, whose memory does not
            grow with the file.
    """

    def __init__(
        self,
        fs: pafs.FileSystem,
        root: str,
        *,
        rows_per_part: int = ROWS_PER_PART,
        staging_dir: Path | None = None,
        upload: Callable[[Path, str], None] | None = None,
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.rows_per_part = rows_per_part
        self._copy = upload or self._copy_through_fs
        self._stage = Path(tempfile.mkdtemp(prefix="kazi-ingest-", dir=staging_dir))
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._stage, True)
        self._current: _Part | None = None
        self._next_part = 0
        self._quarantine: _Part | None = None
        self._duplicates: _Part | None = None
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="kazi-upload")
        # Writer threads, each a queue of its own: a file's writes (and its close) all go to one of them
        # (its lane), in the order they were asked for, while two files can be encoded at once.
        self._writers = [ThreadPoolExecutor(1, thread_name_prefix="kazi-write") for _ in range(_WRITER_THREADS)]
        self._writes: deque[Future[None]] = deque()
        self._failed = threading.Event()
        self._uploads: list[Future[None]] = []
        self._opened = 0

    def part_path(self, number: int) -> str:
        return f"{self.root}/items/part-{number:05d}.parquet"

    @property
    def quarantine_path(self) -> str:
        return f"{self.root}/quarantine.parquet"

    @property
    def duplicates_path(self) -> str:
        return f"{self.root}/duplicates.parquet"

    def _open(self, key: str, schema: pa.Schema, lane: int) -> _Part:
        self._opened += 1
        local = self._stage / f"{self._opened:05d}.parquet"
        return _Part(pq.ParquetWriter(str(local), schema, **PARQUET_OPTIONS), local, key, lane=lane)

    def _open_quarantine(self) -> _Part:
        return self._open(self.quarantine_path, QUARANTINE, lane=0)

    def _open_duplicates(self) -> _Part:
        return self._open(self.duplicates_path, DUPLICATES, lane=1)

    def _write_later(self, part: _Part, write: Callable[..., None], *args: object) -> Future[None]:
        """Run ``write(*args)`` on ``part``'s writer thread, after the part's earlier writes."""
        while len(self._writes) >= _WRITES_IN_FLIGHT:
            self._writes.popleft().result()
        future = self._writers[part.lane % _WRITER_THREADS].submit(write, *args)
        future.add_done_callback(self._note_failure)
        self._writes.append(future)
        return future

    def _note_failure(self, write: Future[None]) -> None:
        if not write.cancelled() and write.exception() is not None:
            self._failed.set()

    def _upload(self, part: _Part, closed: Future[None]) -> None:
        closed.result()
        if self._failed.is_set():  # a write failed: the ingest fails (the caller raises it), nothing more goes up
            return
        self._copy(part.local, part.key)
        part.local.unlink()

    def _copy_through_fs(self, local: Path, key: str) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):
            self.fs.create_dir(key.rsplit("/", 1)[0], recursive=True)
        # Chunk by chunk, each flushed: pyarrow's S3 stream uploads in the background without back-pressure,
        # so a plain copy holds the whole file in memory (measured: +210 MB for a 150 MB file). Flushing
        # bounds it less than it seemed (peak +200 MB at 10M rows): on S3, pass ``upload``.
        with local.open("rb") as src, self.fs.open_output_stream(key) as out:
            while chunk := src.read(_UPLOAD_CHUNK):
                out.write(chunk)
                out.flush()

    def _upload_later(self, part: _Part) -> None:
        # At most a few uploads queued: a slow S3 slows the ingest instead of filling the local disk.
        while len(self._uploads) >= _UPLOADS_IN_FLIGHT:
            self._uploads.pop(0).result()
        self._uploads.append(self._pool.submit(self._upload, part, self._write_later(part, part.close)))

    def write_items(self, items: pa.Table) -> None:
        """Append items (in ingest order) to the current part; a full part is closed and sent up."""
        if items.num_rows == 0:
            return
        part = self._current
        if part is None:
            number = self._next_part
            self._next_part += 1
            part = self._current = self._open(self.part_path(number), ITEMS, lane=number)
        group = part.add(items.cast(ITEMS), ROW_GROUP_ROWS)
        if group is not None:
            self._write_later(part, part.writer.write_table, group)
        if part.rows >= self.rows_per_part:
            self._current = None
            self._upload_later(part)

    def write_quarantine(self, rows: pa.Table) -> None:
        if rows.num_rows:
            if self._quarantine is None:
                self._quarantine = self._open_quarantine()
            part = self._quarantine
            self._write_later(part, part.writer.write_table, rows.select(QUARANTINE.names).cast(QUARANTINE))

    def write_duplicates(self, rows: pa.Table) -> None:
        if rows.num_rows:
            if self._duplicates is None:
                self._duplicates = self._open_duplicates()
            part = self._duplicates
            self._write_later(part, part.writer.write_table, rows.select(DUPLICATES.names).cast(DUPLICATES))

    def close(self) -> None:
        """Close every writer and upload what is left; tables that got no rows are written empty."""
        parts = [self._current] if self._current is not None else []
        self._current = None
        parts.append(self._quarantine or self._open_quarantine())
        parts.append(self._duplicates or self._open_duplicates())
        try:
            closed = [(p, self._write_later(p, p.close)) for p in parts]
            while self._writes:  # a failed write fails the ingest before the last files go up
                self._writes.popleft().result()
            self._uploads += [self._pool.submit(self._upload, p, done) for p, done in closed]
            for upload in self._uploads:
                upload.result()
        finally:
            self._abort()

    def _abort(self) -> None:
        """Stop uploading and drop the staging folder (nothing more is written)."""
        for future in [*self._uploads, *self._writes]:
            future.cancel()
        for w in self._writers:
            w.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        self._writes.clear()
        self._uploads = []
        for part in [self._current, self._quarantine, self._duplicates]:
            if part is not None and part.writer.is_open:
                part.writer.close()
        self._current, self._quarantine, self._duplicates = None, None, None
        self._cleanup()

    def __enter__(self) -> IngestSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


class QuarantineTally:
    """What the report shows of the quarantine, kept while it streams by: its first rows, and rows per field."""

    def __init__(self, limit: int = 20) -> None:
        self.limit = limit
        self._head: list[pa.Table] = []
        self._held = 0
        self._fields: dict[str, int] = {}

    def add(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        if self._held < self.limit:
            part = rows.slice(0, self.limit - self._held).select(QUARANTINE.names).cast(QUARANTINE)
            self._head.append(part)
            self._held += part.num_rows
        for name, n in reasons_count(rows):
            self._fields[name] = self._fields.get(name, 0) + n

    @property
    def head(self) -> pa.Table:
        """The first quarantined rows (at most ``limit``)."""
        return pa.concat_tables(self._head) if self._head else QUARANTINE.empty_table()

    @property
    def fields(self) -> list[tuple[str, int]]:
        """Quarantined rows per field, most frequent first (ties by name)."""
        return sorted(self._fields.items(), key=lambda x: (-x[1], x[0]))


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
