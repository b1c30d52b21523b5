"""Incremental sync of the append-only annotation log: which exported rows are new, and the latest versions.

The log (:data:`flows.core.schemas.ANNOTATIONS`) is a set of Parquet part files in the workspace bucket.
A part is only ever added, never rewritten: an edited annotation is a new *version* row (same
``annotation_id``, later ``updated_at``) and :func:`latest_versions` picks the current one.

Identity. An annotation is ``(site_id, annotation_id)``, not ``annotation_id`` alone: every partner site runs
its own Label Studio (the Community edition cannot isolate sites otherwise), and each instance numbers its
annotations from 1. A version is ``(site_id, annotation_id, updated_at)``; Label Studio moves ``updated_at``
on every save.

Exactly once, by design. One sync is: export every project, normalise, :func:`new_rows` against the keys
already in the log, and, if any row is new, write one part named :func:`part_name` of those rows. The name
is a hash of the rows' content, and :func:`new_rows` returns them in a canonical order, so:

- a crash before the write leaves the log as it was; the rerun computes the new rows again;
- a crash after the write (before the flow recorded success) leaves a complete part, because an S3 PUT is
  atomic; the rerun finds those rows in the log already and writes nothing for them;
- a rerun that recomputes exactly the same rows writes the same name with the same bytes (Parquet written
  with fixed options), which changes nothing.

No sequence of crashes and reruns puts a version in the log twice. Two syncs of one work order running at
the same time could each write the versions they both saw; the flow prevents that with a concurrency limit
per work order, and :func:`latest_versions` drops exact duplicates anyway, so readers never double count.

An annotation deleted in Label Studio disappears from the export but stays in the log: the log records what
was answered, and QA decides what to use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.schemas import ANNOTATIONS

#: An annotation's identity in the log.
ANNOTATION_KEY = ("site_id", "annotation_id")
#: A version's identity: the annotation and when it was last saved.
VERSION_KEY = (*ANNOTATION_KEY, "updated_at")
#: Canonical row order of a part: by annotation, then version.
CANONICAL_ORDER = [(c, "ascending") for c in VERSION_KEY]

_KEYS_SCHEMA = pa.schema([ANNOTATIONS.field(c) for c in VERSION_KEY])

Keys: TypeAlias = pa.Table | Iterable[tuple[str, int, datetime]]


def _check_columns(table: pa.Table, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}")


def _keys_table(known: Keys) -> pa.Table:
    if isinstance(known, pa.Table):
        _check_columns(known, VERSION_KEY, "the log's keys")
        return known.select(list(VERSION_KEY)).cast(_KEYS_SCHEMA)
    rows: list[tuple[str, int, datetime]] = list(known)
    return pa.table(
        {
            "site_id": pa.array([r[0] for r in rows], pa.string()),
            "annotation_id": pa.array([r[1] for r in rows], pa.int64()),
            "updated_at": pa.array([r[2] for r in rows], _KEYS_SCHEMA.field("updated_at").type),
        },
        schema=_KEYS_SCHEMA,
    )


def _first_of_runs(keys: list[np.ndarray]) -> np.ndarray:
    """True at each row whose key differs from the previous row's (rows sorted by the key)."""
    n = len(keys[0]) if keys else 0
    first = np.ones(n, dtype=bool)
    if n > 1:
        same = np.ones(n - 1, dtype=bool)
        for k in keys:
            same &= k[1:] == k[:-1]
        first[1:] = ~same
    return first


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes of a column, equal exactly where the values are equal (nulls get their own code)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        encoded = pc.dictionary_encode(column)
        chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        # One dictionary for all chunks: unify, then read the indices.
        unified = pa.chunked_array(chunks).unify_dictionaries()
        return np.concatenate([c.indices.fill_null(-1).to_numpy() for c in unified.chunks]).astype(np.int64)
    as_int = pc.cast(column, pa.int64()) if pa.types.is_timestamp(column.type) else column
    return np.asarray(pc.fill_null(as_int, np.iinfo(np.int64).min).to_numpy(), dtype=np.int64)


def latest_versions(log: pa.Table) -> pa.Table:
    """The current version of every annotation: the row with the latest ``updated_at`` per annotation.

    Superseded versions and exact duplicates (the same version read twice) are dropped. Rows come out in
    canonical order (site, annotation id). The schema is the input's.
    """
    _check_columns(log, VERSION_KEY, "the annotation log")
    if log.num_rows == 0:
        return log
    ordered = log.take(
        pc.sort_indices(
            log,
            sort_keys=[("site_id", "ascending"), ("annotation_id", "ascending"), ("updated_at", "descending")],
        )
    )
    first = _first_of_runs([_codes(ordered[c]) for c in ANNOTATION_KEY])
    return ordered.filter(pa.array(first))


def log_keys(log: pa.Table) -> pa.Table:
    """The compact key table of the log: one (site_id, annotation_id, updated_at) row per annotation, latest."""
    _check_columns(log, VERSION_KEY, "the annotation log")
    return latest_versions(log.select(list(VERSION_KEY)))


def new_rows(known: Keys, export: pa.Table) -> pa.Table:
    """The rows of ``export`` the log does not hold yet, in canonical order.

    New means: an annotation the log has never seen, or a later version (``updated_at`` after the latest
    logged one) of one it has. An unchanged annotation is never returned again, nor an older version. An
    export that holds one version twice (tasks read twice) gives it once.

    Args:
        known: The versions already in the log: any table with ``site_id``, ``annotation_id`` and
            ``updated_at`` (the log itself, its key columns, or :func:`log_keys`), or an iterable of
            ``(site_id, annotation_id, updated_at)`` tuples (timezone-aware datetimes).
        export: Normalised rows (:func:`flows.annotate.normalise.export_to_rows`), any number of projects.

    Returns:
        The new rows, schema of ``export``, sorted by site, annotation id and ``updated_at``.
    """
    _check_columns(export, VERSION_KEY, "the export")
    if export.num_rows == 0:
        return export
    latest = log_keys(_keys_table(known)).rename_columns(["site_id", "annotation_id", "logged_at"])
    ordered = export.take(pc.sort_indices(export, sort_keys=CANONICAL_ORDER))
    distinct = ordered.filter(pa.array(_first_of_runs([_codes(ordered[c]) for c in VERSION_KEY])))
    if latest.num_rows == 0:
        return distinct
    # Arrow's join does not keep row order: carry the position through it, then put rows back in order.
    keyed = distinct.select(list(VERSION_KEY)).append_column(
        "_row", pa.array(np.arange(distinct.num_rows, dtype=np.int64))
    )
    joined = keyed.join(latest, keys=list(ANNOTATION_KEY), join_type="left outer")
    logged_at = pc.cast(joined["logged_at"], keyed.schema.field("updated_at").type)
    is_new = pc.or_kleene(pc.is_null(logged_at), pc.greater(joined["updated_at"], logged_at))
    rows = np.sort(joined["_row"].filter(is_new).to_numpy())
    return distinct.take(pa.array(rows, pa.int64()))


def _little_endian(values: np.ndarray) -> bytes:
    """The bytes of ``values`` in little-endian order, so names agree across machines."""
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()


def _column_digest(h: hashlib._Hash, column: pa.ChunkedArray) -> None:
    """Feed a column's values to ``h`` in a form that depends on the values only, not on Arrow's buffers."""
    h.update(np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes())
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_timestamp(kind):
        # Fixed width: the values themselves, nulls as zero (the validity above tells them apart).
        values = pc.cast(column, pa.int64()) if pa.types.is_timestamp(kind) else column
        filled = pc.fill_null(values, 0).combine_chunks()
        h.update(_little_endian(filled.to_numpy(zero_copy_only=False)))
        return
    if pa.types.is_boolean(kind):
        h.update(np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes())
        return
    # Text (and anything else, as text): lengths, then the bytes.
    text = pc.fill_null(pc.cast(column, pa.large_string()), "").combine_chunks()
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    h.update(_little_endian(offsets - offsets[0]))
    data = text.buffers()[2]
    if data is not None and len(text):
        h.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])


def part_name(rows: pa.Table) -> str:
    """``part-<32 hex>.parquet``, a SHA-256 of the rows' column names, types and values, in row order.

    The same rows in the same order give the same name in any process and with any chunking; any change of a
    value, a row or the order gives another. Write nothing when ``rows`` is empty.
    """
    h = hashlib.sha256()
    h.update(str(rows.num_rows).encode())
    for field in rows.schema:
        h.update(f"\x1e{field.name}\x1f{field.type}\x1f".encode())
        _column_digest(h, rows[field.name])
    return f"part-{h.hexdigest()[:32]}.parquet"
