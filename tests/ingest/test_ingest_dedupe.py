"""Duplicates: by id key and by content, across batches and files, in order; and the reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flows.core.schemas import DUPLICATES, QUARANTINE
from flows.ingest.dedupe import (
    ACCEPTED,
    CONTENT_DUPLICATE,
    ID_DUPLICATE,
    DigestIndex,
    IngestedBatch,
    Reconciliation,
    ReconciliationError,
    SeenState,
    find_duplicates,
)
from flows.ingest.digest_index import bloom_bits
from flows.ingest.normalise import digest, id_key

pytestmark = pytest.mark.unit


def keys(values: Sequence[str | None]) -> np.ndarray:
    return digest(pa.array(values, pa.string()))


def classify(
    state: SeenState, source: str, ids: list[str], contents: list[str | None], start_row: int = 1
) -> list[tuple[str, int | None]]:
    """(kind, duplicate_of row) per row; kind A / I / C."""
    rows = np.arange(start_row, start_row + len(ids), dtype=np.int64)
    has = np.array([c is not None for c in contents])
    kind, dup_of = find_duplicates(
        keys(id_key(pa.array(ids)).to_pylist()), keys(contents), has, state.locations(source, rows), state
    )
    names = {ACCEPTED: "A", ID_DUPLICATE: "I", CONTENT_DUPLICATE: "C"}
    _, of_rows = state.where(np.maximum(dup_of, 0))
    return [(names[int(k)], None if d < 0 else int(r)) for k, d, r in zip(kind, dup_of, of_rows, strict=True)]


def test_first_occurrence_wins_and_later_ones_name_it() -> None:
    got = classify(SeenState(), "f", ["a", "b", "A", " a ", "c"], ["x1", "x2", "x3", "x4", "x5"])
    assert got == [("A", None), ("A", None), ("I", 1), ("I", 1), ("A", None)]


def test_same_content_with_another_id_is_a_content_duplicate() -> None:
    got = classify(SeenState(), "f", ["a", "b", "c"], ["same", "same", "other"])
    assert got == [("A", None), ("C", 1), ("A", None)]


def test_a_duplicate_does_not_claim_its_id() -> None:
    # B repeats A's content, so B is not accepted and id "b" stays free for C.
    got = classify(SeenState(), "f", ["a", "b", "b"], ["x", "x", "y"])
    assert got == [("A", None), ("C", 1), ("A", None)]


def test_id_duplicate_takes_precedence_over_content() -> None:
    got = classify(SeenState(), "f", ["a", "a"], ["x", "x"])
    assert got == [("A", None), ("I", 1)]


def test_rows_without_content_are_never_content_duplicates() -> None:
    got = classify(SeenState(), "f", ["a", "b", "c"], [None, None, None])
    assert got == [("A", None), ("A", None), ("A", None)]


def test_duplicates_across_batches_and_files_point_at_the_accepted_row() -> None:
    state = SeenState()
    assert classify(state, "f1", ["a", "b"], ["x", "y"]) == [("A", None), ("A", None)]
    assert classify(state, "f1", ["c", "B"], ["z", "w"], start_row=3) == [("A", None), ("I", 2)]
    got = classify(state, "f2", ["d", "a", "e"], ["x", "v", "z"])
    assert got == [("C", 1), ("I", 1), ("C", 3)]
    kind, dup_of = find_duplicates(
        keys(["q"]), keys(["x"]), np.array([True]), state.locations("f2", np.array([9])), state
    )
    objects, rows = state.where(dup_of)
    assert (objects, rows.tolist(), kind.tolist()) == (["f1"], [1], [CONTENT_DUPLICATE])


def test_empty_batch() -> None:
    kind, dup_of = find_duplicates(
        np.zeros((0, 2), np.uint64), np.zeros((0, 2), np.uint64), np.zeros(0, bool), np.zeros(0, np.int64), SeenState()
    )
    assert kind.tolist() == [] and dup_of.tolist() == []


def reference(batches: list[tuple[list[str], list[str | None]]]) -> list[tuple[str, int | None]]:
    """The rule, one row at a time, with plain dicts."""
    ids: dict[str, int] = {}
    contents: dict[str, int] = {}
    out: list[tuple[str, int | None]] = []
    n = 0
    for id_batch, content_batch in batches:
        for i, c in zip(id_batch, content_batch, strict=True):
            n += 1
            k = i.strip().lower()
            if k in ids:
                out.append(("I", ids[k]))
            elif c is not None and c in contents:
                out.append(("C", contents[c]))
            else:
                ids[k] = n
                if c is not None:
                    contents[c] = n
                out.append(("A", None))
    return out


def spilling_state(memory_keys: int) -> SeenState:
    return SeenState(ids=DigestIndex(memory_keys=memory_keys), contents=DigestIndex(memory_keys=memory_keys))


@pytest.mark.parametrize(("seed", "memory_keys"), [(s, m) for s in range(5) for m in (1 << 20, 64, 1)])
def test_vectorised_dedupe_matches_the_row_by_row_rule(seed: int, memory_keys: int) -> None:
    # memory_keys 64 and 1: the indexes write runs to disk after almost every batch, and must agree.
    rng = np.random.default_rng(seed)
    batches = []
    for size in rng.integers(1, 400, 12):
        ids = [f"{'ID' if rng.random() < 0.5 else 'id'}-{v}" for v in rng.integers(0, 600, size)]
        contents = [None if rng.random() < 0.1 else f"c{v}" for v in rng.integers(0, 500, size)]
        batches.append((ids, contents))
    state = spilling_state(memory_keys)
    got: list[tuple[str, int | None]] = []
    row = 1
    for ids, contents in batches:
        got += classify(state, "f", ids, contents, start_row=row)
        row += len(ids)
    assert got == reference(batches)
    assert (state.ids.runs > 0) == (memory_keys < 1 << 20)
    state.close()


def test_digest_index_lookup_and_insert() -> None:
    index = DigestIndex(size_hint=4)  # grows as keys go in
    k = keys([f"k{i}" for i in range(10)])
    assert (index.lookup(k) == -1).all()
    index.insert(k[:5], np.arange(5, dtype=np.int64))
    assert index.lookup(k).tolist() == [0, 1, 2, 3, 4, -1, -1, -1, -1, -1]
    index.insert(k, np.arange(100, 110, dtype=np.int64))  # the first five keep their rows
    assert index.lookup(k).tolist() == [0, 1, 2, 3, 4, 105, 106, 107, 108, 109]
    repeated = np.concatenate([k[:1], keys(["new"]), keys(["new"])])
    index.insert(repeated, np.array([7, 8, 9]))  # of repeats in one call, the first wins
    assert index.lookup(repeated).tolist() == [0, 8, 8]
    assert index.size == 11 and index.nbytes > 0


def test_a_64_bit_prefix_collision_is_never_a_false_duplicate() -> None:
    index = DigestIndex()
    a = np.array([[7, 1]], dtype=np.uint64)
    b = np.array([[7, 2]], dtype=np.uint64)  # same first half, another key
    index.insert(a, np.array([0]))
    assert index.lookup(b).tolist() == [-1]
    assert index.lookup(a).tolist() == [0]
    index.insert(b, np.array([1]))  # both are kept in memory
    assert index.lookup(np.concatenate([a, b])).tolist() == [0, 1]


def test_a_spilled_index_finds_every_key_in_its_runs_and_deletes_them_on_close(tmp_path: Path) -> None:
    index = DigestIndex(size_hint=4, memory_keys=100, spill_dir=tmp_path)
    k = keys([f"k{i}" for i in range(1000)])
    for start in range(0, 1000, 150):  # every batch: half new keys accepted, a quarter of them repeated later
        part = k[start : start + 150]
        assert (index.lookup(part) == -1).all()
        index.insert(part[:75], np.arange(start, start + 75, dtype=np.int64))
    assert index.runs == 3  # a full table (100 keys) is written out before the next insert
    assert len(list(tmp_path.glob("kazi-dedupe-*/run-*"))) == index.runs
    expected = [i if i % 150 < 75 else -1 for i in range(1000)]
    assert index.lookup(k).tolist() == expected
    other = keys([f"other{i}" for i in range(1000)])  # never inserted: Bloom filters and runs say no
    assert (index.lookup(other) == -1).all()
    index.insert(k, np.arange(5000, 6000, dtype=np.int64))  # keys in runs keep their rows
    assert index.lookup(k).tolist() == [i if i % 150 < 75 else 5000 + i for i in range(1000)]
    index.close()
    assert list(tmp_path.iterdir()) == []


def test_a_64_bit_prefix_collision_in_a_run_is_never_a_false_duplicate() -> None:
    index = DigestIndex(memory_keys=1)
    a = np.array([[7, 1]], dtype=np.uint64)
    b = np.array([[7, 2]], dtype=np.uint64)
    index.insert(a, np.array([5]))
    index.insert(np.array([[8, 8]], dtype=np.uint64), np.array([6]))  # the table is full: a goes to a run
    assert index.runs == 1
    assert index.lookup(b).tolist() == [-1]
    assert index.lookup(a).tolist() == [5]
    index.close()


def test_index_memory_stays_flat_once_it_spills() -> None:
    index = DigestIndex(memory_keys=20_000)
    sizes = []
    for start in range(0, 200_000, 20_000):
        part = keys([f"item-{i}" for i in range(start, start + 20_000)])
        index.insert(part, np.arange(start, start + 20_000, dtype=np.int64))
        sizes.append(index.nbytes)
    # The table never holds more than its budget; what grows is the Bloom filters, 2 bytes a key (in
    # filters of doubling size: at most 8 bytes a key while the last one fills).
    assert sizes[-1] - sizes[1] <= 8 * 200_000
    # The table: room for its budget and a batch at 60 % load, 24 bytes a slot.
    assert index.nbytes < 24 * 2**18 + 8 * 200_000
    assert index.runs == 9
    index.close()


def test_memory_is_the_table_s_budget_whatever_the_rows() -> None:
    state = SeenState()
    n = 200_000
    sizes = []
    for start in range(0, n, 50_000):
        ids = [f"item-{i}" for i in range(start, start + 50_000)]
        find_duplicates(
            keys(ids), keys(ids), np.ones(50_000, bool), state.locations("f", np.arange(start, start + 50_000)), state
        )
        sizes.append(state.nbytes)
    # Two tables of 2^21 slots of 24 bytes (room for MEMORY_KEYS and a batch under 60 % load), sized once.
    assert sizes == [2 * 24 * 2**21] * 4


# --- reconciliation -------------------------------------------------------------------------------


def batch(
    source: str,
    read: int,
    accepted: int,
    quarantined_rows: list[int],
    duplicates: int,
    *,
    last: bool,
    error: str | None = None,
) -> IngestedBatch:
    q = pa.table(
        {
            "source_object": [source] * len(quarantined_rows),
            "source_row": pa.array(quarantined_rows, pa.int64()),
            "field": pa.nulls(len(quarantined_rows), pa.string()),
            "reason": ["r"] * len(quarantined_rows),
            "record": pa.nulls(len(quarantined_rows), pa.string()),
        },
        schema=QUARANTINE,
    )
    d = (
        DUPLICATES.empty_table()
        if not duplicates
        else pa.Table.from_pylist(
            [
                {
                    "source_object": source,
                    "source_row": 1,
                    "item_id": "x",
                    "duplicate_of_object": source,
                    "duplicate_of_row": 1,
                    "kind": "id",
                }
            ]
            * duplicates,
            schema=DUPLICATES,
        )
    )
    return IngestedBatch(
        accepted=pa.table({"item_id": ["a"] * accepted}),
        quarantined=q,
        duplicates=d,
        source_object=source,
        rows_read=read,
        last=last,
        encoding="utf-8",
        decode_fallbacks=0,
        file_error=error,
    )


def test_reconciliation_counts_records_and_files() -> None:
    tally = Reconciliation()
    tally = tally.add(batch("a", 5, 3, [4], 1, last=False))
    tally = tally.add(batch("a", 2, 1, [7], 0, last=True))
    tally = tally.add(batch("b", 0, 0, [], 0, last=True))
    tally = tally.add(batch("c", 3, 2, [3, -1], 0, last=True, error="truncated"))
    assert tally.check() is tally
    assert (tally.rows_read, tally.accepted, tally.quarantined, tally.duplicates) == (10, 6, 3, 1)
    assert (tally.files_read, tally.files_quarantined) == (3, 1)
    assert tally.empty_files == ("b",)
    assert tally.file_errors == (("c", "truncated"),)


def test_reconciliation_raises_when_a_row_is_unaccounted_for() -> None:
    tally = Reconciliation().add(batch("a", 5, 3, [4], 0, last=True))
    assert not tally.balanced
    with pytest.raises(ReconciliationError, match="rows_read 5 != accepted 3 \\+ quarantined 1 \\+ duplicates 0"):
        tally.check()


@pytest.mark.unit
def test_bloom_bits_are_six_bits_of_the_mixed_key() -> None:
    rng = np.random.default_rng(7)
    hi = rng.integers(0, 2**64, 1000, dtype=np.uint64)
    lo = rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
    got = bloom_bits(hi, lo)
    for h, low, bits in zip(hi.tolist(), lo.tolist(), got.tolist(), strict=True):
        mixed = ((h ^ (low << 32)) * 0x9E3779B97F4A7C15) & (2**64 - 1)
        want = 0
        for i in range(6):
            want |= 1 << ((mixed >> (6 * i + 16)) & 63)
        assert bits == want
        assert 1 <= bin(bits).count("1") <= 6
