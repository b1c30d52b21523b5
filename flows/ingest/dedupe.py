"""Duplicates across batches and files in bounded memory, and the batch pipeline that ends in them.

A row is a duplicate when an earlier *accepted* row has the same id key (trimmed, NFC, lower-case: kind
"id") or, failing that, the same content (text, media_uri, fields: kind "content"). The first occurrence
is accepted; each later one goes to :data:`flows.core.schemas.DUPLICATES`, naming the accepted row it
repeats (object and row), so nothing is dropped silently. Only accepted rows claim an id or a content: a
row that is itself a duplicate does not block a later row (``A(id 1, x)``, ``B(id 2, x)``, ``C(id 2, y)``:
B is a content duplicate of A, and C is accepted, since id 2 was never taken). Rows without content
(every payload column blank) are never content duplicates. Rows the contract rejects are quarantined
before dedupe, so they are never duplicates either.

Memory. Keys are 128-bit digests (:mod:`flows.ingest.normalise`), held by two
:class:`~flows.ingest.digest_index.DigestIndex` es (id, content): up to a fixed number of keys in memory
(48 MB each at most), the accepted ones written out to sorted runs on local disk when that is full, with
2 to 4 bytes a key of Bloom filter kept in memory. In memory, keys are compared on all 128 bits; in the
runs, on 96 (64 sorted on, 32 checked): two different keys agreeing on those 96 would be a false
duplicate, p ~ n^2 / 2^97 (3e-16 at 5M rows). Two different keys in one run sharing only the first 64
bits (p ~ 7e-7 at 5M rows) are both accepted, but a repeat of the later one may go unreported.

The pipeline (:func:`ingest_batches`) holds a few batches in flight, so with the sink's row groups and
the imports, peak memory is under 1 GB whatever the input size (plus those 2 to 4 bytes a row: 40 MB at
10M rows).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from flows.core.arrays import combine
from flows.core.contracts import Contract
from flows.core.models import WorkOrder
from flows.core.schemas import DUPLICATES, ITEMS, QUARANTINE
from flows.ingest.contract import MediaCheck, check_rows, first_failures, media_problems
from flows.ingest.digest_index import DigestIndex, classify
from flows.ingest.normalise import N_SHARDS, CanonicalBatch, normalise, repeat_string, take_rows
from flows.ingest.read import RawBatch

_ROW_BITS = 40
_ROW_MASK = (1 << _ROW_BITS) - 1
ACCEPTED, ID_DUPLICATE, CONTENT_DUPLICATE = 0, 1, 2


@dataclass
class SeenState:
    """What dedupe remembers across batches and files of one run (and can be reused to resume one)."""

    ids: DigestIndex = field(default_factory=DigestIndex)
    contents: DigestIndex = field(default_factory=DigestIndex)
    objects: list[str] = field(default_factory=list)
    _object_index: dict[str, int] = field(default_factory=dict)

    def locations(self, source_object: str, rows: np.ndarray) -> np.ndarray:
        index = self._object_index.get(source_object)
        if index is None:
            index = self._object_index[source_object] = len(self.objects)
            self.objects.append(source_object)
        return (np.int64(index) << np.int64(_ROW_BITS)) | rows.astype(np.int64)

    def where(self, locs: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(object, row) of each location."""
        return [self.objects[i] for i in (locs >> _ROW_BITS).tolist()], locs & _ROW_MASK

    def close(self) -> None:
        """Delete what the indexes wrote to disk."""
        self.ids.close()
        self.contents.close()

    @property
    def nbytes(self) -> int:
        """Approximate memory held by the two indexes."""
        return self.ids.nbytes + self.contents.nbytes


def find_duplicates(
    id_keys: np.ndarray, content_keys: np.ndarray, has_content: np.ndarray, locs: np.ndarray, state: SeenState
) -> tuple[np.ndarray, np.ndarray]:
    """Classify rows (in order) as accepted, id duplicate or content duplicate, and record the accepted.

    One compiled pass over the rows, in order, probing both indexes (:func:`flows.ingest.digest_index.classify`).

    Returns:
        (kind per row: ACCEPTED / ID_DUPLICATE / CONTENT_DUPLICATE, location of the accepted row repeated
        or -1).
    """
    return classify(state.ids, state.contents, id_keys, content_keys, has_content, locs)


# --- The batch pipeline -----------------------------------------------------------------------------


class IngestedBatch(NamedTuple):
    """One raw batch, split: accepted items, quarantined rows, duplicates; plus its file's bookkeeping."""

    accepted: pa.Table
    quarantined: pa.Table
    duplicates: pa.Table
    source_object: str
    rows_read: int
    last: bool
    encoding: str | None
    decode_fallbacks: int
    file_error: str | None
    missing_columns: tuple[str, ...] = ()  # optional mapped columns this file lacks (values null)
    #: First 64 bits of each accepted row's content digest, in ``accepted``'s order (for the sample).
    content_keys: np.ndarray = np.zeros(0, np.uint64)


class ReconciliationError(AssertionError):
    """rows_read != accepted + quarantined + duplicates."""


@dataclass(frozen=True)
class Reconciliation:
    """Counts of a run; every record read is accepted, quarantined or a duplicate, exactly once.

    ``quarantined`` counts records; a quarantined *file* (quarantine row with ``source_row`` -1) counts in
    ``files_quarantined`` instead, and its unread rows are in no count (they were never read).
    ``empty_files`` had no record; ``encodings`` is (file, encoding, bytes decoded as Windows-1252);
    ``notes`` says what was accepted with a caveat (an optional mapped column missing from a file);
    ``files`` holds the counts of each file read, (file, rows_read, accepted, quarantined, duplicates).
    """

    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    files_read: int = 0
    files_quarantined: int = 0
    empty_files: tuple[str, ...] = ()
    file_errors: tuple[tuple[str, str], ...] = ()
    encodings: tuple[tuple[str, str, int], ...] = ()
    notes: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, int, int, int, int], ...] = ()
    _file_rows: int = 0
    _file_counts: tuple[int, int, int] = (0, 0, 0)
    _file_missing: tuple[str, ...] = ()

    def add(self, batch: IngestedBatch) -> Reconciliation:
        rows = batch.quarantined["source_row"].to_numpy()
        file_rows = int(np.count_nonzero(rows < 0))
        counts = (batch.accepted.num_rows, len(rows) - file_rows, batch.duplicates.num_rows)
        out = replace(
            self,
            rows_read=self.rows_read + batch.rows_read,
            accepted=self.accepted + counts[0],
            quarantined=self.quarantined + counts[1],
            duplicates=self.duplicates + counts[2],
            _file_rows=self._file_rows + batch.rows_read,
            _file_counts=(
                self._file_counts[0] + counts[0],
                self._file_counts[1] + counts[1],
                self._file_counts[2] + counts[2],
            ),
            _file_missing=self._file_missing + tuple(c for c in batch.missing_columns if c not in self._file_missing),
        )
        if not batch.last:
            return out
        files_quarantined = out.files_quarantined + (1 if batch.file_error is not None else 0)
        errors = out.file_errors + (((batch.source_object, batch.file_error),) if batch.file_error else ())
        empty = out.empty_files + ((batch.source_object,) if out._file_rows == 0 and not batch.file_error else ())
        encodings = out.encodings + (
            ((batch.source_object, batch.encoding, batch.decode_fallbacks),) if batch.encoding else ()
        )
        notes = out.notes + tuple(
            (batch.source_object, f"mapped column {c!r} is missing: its values are null") for c in out._file_missing
        )
        return replace(
            out,
            files_read=out.files_read + 1,
            files_quarantined=files_quarantined,
            file_errors=errors,
            empty_files=empty,
            encodings=encodings,
            notes=notes,
            files=(*out.files, (batch.source_object, out._file_rows, *out._file_counts)),
            _file_rows=0,
            _file_counts=(0, 0, 0),
            _file_missing=(),
        )

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.accepted + self.quarantined + self.duplicates

    def check(self) -> Reconciliation:
        """Raises:
        ReconciliationError: when a record is unaccounted for (or counted twice).
        """
        if not self.balanced:
            raise ReconciliationError(
                f"rows_read {self.rows_read:,} != accepted {self.accepted:,} + quarantined {self.quarantined:,}"
                f" + duplicates {self.duplicates:,}"
            )
        return self


_NO_COLUMNS = pa.table({})


@dataclass(frozen=True)
class PreparedBatch:
    raw: RawBatch
    canon: CanonicalBatch
    failures: pa.Table  # FAILURES, one row per failing row
    optional_missing: tuple[str, ...]  # mapped client columns the file lacks, whose rows were kept
    rows_read: int
    quarantined: pa.Table
    items: pa.Table  # canon.items


def ingest_batches(
    batches: Iterable[RawBatch],
    work_order: WorkOrder,
    contract: Contract,
    seen_state: SeenState,
    *,
    media_check: MediaCheck | None = None,
    n_shards: int = N_SHARDS,
    threads: int = 2,
) -> Generator[IngestedBatch, None, None]:
    """Read -> normalise -> check -> dedupe, batch by batch: the pure core of the ingest flow.

    Args:
        batches: From :func:`flows.ingest.read.iter_batches` (one file or several in a row).
        work_order: Column mapping and label classes.
        contract: The task type's input contract.
        seen_state: Dedupe memory; updated in place (pass the same one for every file of a run).
        media_check: Optional checker (URIs -> why those that cannot be used cannot, see
            :data:`flows.ingest.contract.MediaCheck`): rows whose media object is missing or unreadable
            are quarantined with that reason. Called from the helper threads, so it must be thread-safe
            (a boto3 client is).
        n_shards: The items' ``shard`` column is the id digest modulo this.
        threads: 0 runs everything in the caller's thread; 1 adds a thread that reads the next batches
            ahead (waiting on S3 and parsing, mostly outside the GIL) while the caller maps, checks,
            deduplicates and writes; 2 (the default) also maps and checks the next batch on a thread of
            its own, so the caller only deduplicates (the one step that must go in order) and hands the
            rows on. The kernels release the GIL: on S3, 2.5M rows, canonicalise took 9.2 s with 2
            against 10.4 s with 1 before dedupe was made cheaper, and more threads buy nothing on two
            cores. The output is the same either way.

    Yields:
        One :class:`IngestedBatch` per raw batch. The first three fields are the tables; the accepted
        rows come in file order.
    """

    def prepare(raw: RawBatch) -> PreparedBatch:
        return prepare_batch(raw, work_order, contract, media_check=media_check, n_shards=n_shards)

    def finish(p: PreparedBatch) -> IngestedBatch:
        return _split(p, seen_state)

    if threads < 1:
        yield from (finish(prepare(raw)) for raw in batches)
    else:
        yield from _pipelined(batches, prepare, finish, workers=threads - 1)


def prepare_batch(
    raw: RawBatch,
    work_order: WorkOrder,
    contract: Contract,
    *,
    media_check: MediaCheck | None = None,
    n_shards: int = N_SHARDS,
) -> PreparedBatch:
    """Normalise and check one raw batch: everything before dedupe, which needs no state of the run (so it
    can run ahead, in another thread)."""
    canon = normalise(raw, work_order.columns, n_shards)
    failures = check_rows(
        canon.check,
        contract,
        missing=canon.missing,
        classes=work_order.label_schema.classes,
        check_unique=False,
    )
    failures = first_failures(failures)
    if media_check is not None and work_order.columns.media_uri:
        failures = _with_media_problems(canon, failures, media_check)
    rules = dict(contract.columns)
    optional_missing = tuple(
        column
        for canonical, column in canon.missing.items()
        if raw.table.num_columns and not (canonical in rules and rules[canonical].required)
    )
    quarantined = _quarantined(raw, canon, failures)
    # The raw columns are in canon.items["record"] now, and the checked ones in canon.items: drop both,
    # memory is bounded by batches in flight.
    return PreparedBatch(
        replace(raw, table=_NO_COLUMNS),
        replace(canon, items=_NO_COLUMNS, check=_NO_COLUMNS),
        failures,
        optional_missing,
        raw.records,
        quarantined,
        canon.items,
    )


def _with_media_problems(canon: CanonicalBatch, failures: pa.Table, check: MediaCheck) -> pa.Table:
    ok = np.ones(canon.items.num_rows, dtype=bool)
    ok[failures["row"].to_numpy()] = False
    rows = np.flatnonzero(ok)
    media = combine(canon.items.column("media_uri")).take(pa.array(rows))
    bad, reasons = media_problems(media, check)
    if len(bad) == 0:
        return failures
    extra = pa.table(
        {
            "row": pa.array(rows[bad], pa.int64()),
            "field": pa.array(["media_uri"] * len(bad), pa.string()),
            "reason": pa.array(reasons, pa.string()),
        },
        schema=failures.schema,
    )
    return pa.concat_tables([failures, extra]).sort_by("row")


def _quarantined(raw: RawBatch, canon: CanonicalBatch, failures: pa.Table) -> pa.Table:
    """The reader's rejects and the contract's, as :data:`~flows.core.schemas.QUARANTINE` rows."""
    bad_rows = failures["row"].to_numpy()
    record = combine(canon.items.column("record"))
    contract_q = pa.table(
        {
            "source_object": pa.array([raw.source_object] * len(bad_rows), pa.string()),
            "source_row": pa.array(raw.rows[bad_rows], pa.int64()),
            "field": failures["field"],
            "reason": failures["reason"],
            "record": record.take(pa.array(bad_rows, pa.int64())),
        },
        schema=QUARANTINE,
    )
    return pa.concat_tables([raw.rejected, contract_q]) if raw.rejected.num_rows else contract_q


def _split(p: PreparedBatch, state: SeenState) -> IngestedBatch:
    """Dedupe (in order: the only sequential step) and the tables of one batch."""
    raw, canon, failures = p.raw, p.canon, p.failures
    n = p.items.num_rows
    if failures.num_rows:
        ok = np.ones(n, dtype=bool)
        ok[failures["row"].to_numpy()] = False
        valid = np.flatnonzero(ok)
        checked = (canon.id_keys[valid], canon.content_keys[valid], canon.has_content[valid])
    else:  # every row passed the contract: no copies
        valid = np.arange(n)
        checked = (canon.id_keys, canon.content_keys, canon.has_content)
    locs = state.locations(raw.source_object, raw.rows[valid])
    kind, dup_of = find_duplicates(*checked, locs, state)
    acc = valid[kind == ACCEPTED]
    dup = kind != ACCEPTED
    # The accepted rows in file order: one copy of the rows that drops the others (runs of rows copied;
    # nothing at all when every row was accepted), column by column (see take_rows). The source object is
    # the same in every row: its column is cut from the kept copy instead (repeat_string).
    if len(acc) == n:
        accepted = p.items
    else:
        keep = np.zeros(n, dtype=bool)
        keep[acc] = True
        accepted = pa.Table.from_arrays(
            [
                repeat_string(raw.source_object, len(acc)) if name == "source_object" else take_rows(combine(c), keep)
                for name, c in zip(p.items.column_names, p.items.columns, strict=True)
            ],
            schema=p.items.schema,
        )
    content_keys = canon.content_keys[acc, 0]
    accepted = accepted.cast(ITEMS)  # only now: rejected rows may have null ids
    dup_rows = valid[dup]
    objects, rows = state.where(dup_of[dup])
    duplicates = pa.table(
        {
            "source_object": pa.array([raw.source_object] * len(dup_rows), pa.string()),
            "source_row": pa.array(raw.rows[dup_rows], pa.int64()),
            "item_id": p.items.column("item_id").take(pa.array(dup_rows, pa.int64())),
            "duplicate_of_object": pa.array(objects, pa.string()),
            "duplicate_of_row": pa.array(rows, pa.int64()),
            "kind": pa.array(np.where(kind[dup] == ID_DUPLICATE, "id", "content"), pa.string()),
        },
        schema=DUPLICATES,
    )
    return IngestedBatch(
        accepted=accepted,
        quarantined=p.quarantined,
        duplicates=duplicates,
        source_object=raw.source_object,
        rows_read=p.rows_read,
        last=raw.last,
        encoding=raw.encoding,
        decode_fallbacks=raw.decode_fallbacks,
        file_error=raw.file_error,
        missing_columns=p.optional_missing,
        content_keys=content_keys,
    )


_DONE = object()


def _pipelined(
    items: Iterable[RawBatch],
    prepare: Callable[[RawBatch], PreparedBatch],
    finish: Callable[[PreparedBatch], IngestedBatch],
    workers: int,
    depth: int = 2,
) -> Iterator[IngestedBatch]:
    """``map(finish, map(prepare, items))``, in order, with ``prepare`` on ``workers`` threads (0: in the
    caller's thread, the reader thread only reading ahead).

    One reader thread pulls ``items`` (the file readers are not thread-safe, so only it touches them)
    and hands each to the pool; ``finish`` (dedupe: order matters) runs in the caller's thread. pyarrow
    and numpy release the GIL in their kernels, so reading, preparing the next batches and the caller's
    own work (writing Parquet) overlap. At most ``depth`` batches are in flight, which bounds memory.
    Errors are re-raised in the caller; closing the generator stops the threads and closes ``items``.
    """
    pending: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kazi-ingest") if workers > 0 else None

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        source = iter(items)
        try:
            for raw in source:
                if not put(pool.submit(prepare, raw) if pool is not None else raw):
                    break
            put(_DONE)
        except BaseException as e:  # handed to the caller, who re-raises it
            put(e)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="kazi-ingest-read", daemon=True)
    reader.start()
    try:
        while True:
            got = pending.get()
            if got is _DONE:
                return
            if isinstance(got, BaseException):
                raise got
            yield finish(got.result() if isinstance(got, Future) else prepare(got))  # type: ignore[arg-type]
    finally:
        stop.set()
        while True:  # unblock the reader, drop work not yet started
            try:
                left = pending.get_nowait()
            except queue.Empty:
                break
            if isinstance(left, Future):
                left.cancel()
        reader.join()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
