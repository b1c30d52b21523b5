"""128-bit digest -> int64 location, in memory up to a budget and then in sorted runs on local disk.

Dedupe asks, batch after batch, "was this key accepted before, and where?" over every key of a run, so an
index held wholly in memory grows with the input. This one keeps at most :data:`MEMORY_KEYS` keys in
memory, in an open-addressing hash table (whole 128-bit keys and their locations in three numpy arrays,
linear probing, at most 60 % full) probed by compiled kernels (numba): one probe a key, in row order, so
repeats inside a batch need no second pass. (pandas' khash table gave each key's first 64 bits a label,
and arrays indexed by label held the rest: three passes of random access a batch, and a vectorised
resolution of in-batch repeats; dedupe cost 0.8 s of CPU per million rows for the two indexes, now about
0.2.) When the table is full, its keys are sorted and written as a *run* (three ``.npy`` files in a
private temporary folder) and the table starts again empty.

A key missing from the table is looked up in the runs, newest first. The runs' keys are also in blocked
Bloom filters in memory (one 64-bit word per key, six bits set, 16 bits a key; a filter takes the runs of
twice as many keys as the one before, so a batch checks log2 of them), so only a few keys of a batch (the
true repeats and the false positives: measured 0.07 % in a half-full filter, 0.7 % in a full one) reach the
disk, by binary search in a memory map that is dropped again after the batch. Memory is then the table
(a power of two of slots of 24 bytes, room for its budget and a batch at under 60 % load: 2^21 slots,
48 MB, for the default budget, reserved once and filled in as keys arrive) plus 2 to 4 bytes per key
written out (the filters, allocated as they open): 10 to 20 MB more per 5 million keys.

Keys are compared on all 128 bits in the table and on 96 (64 + 32) in the runs: see
:mod:`flows.ingest.dedupe` for what that means for false duplicates.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

#: Keys held in memory before the accepted ones are written out as a run. With a batch on top, 512k keys
#: still take a table of 2^21 slots, but fill at most 31 % of it (1M keys: 56 %), so probes end sooner,
#: and each run written out is half as big. Canonicalise on S3, alternating runs: 2.5M rows a run, CSV
#: 3.19-3.35 s against 3.29-3.57 s with 1M keys; 10M CSV rows, 12.8 s against 13.5 s; peak RSS no higher.
MEMORY_KEYS = 1 << 19
_BLOOM_BITS_PER_KEY = 16
_BLOOM_SETS = 6  # bits set per key, 6 bits of a mixed word each
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = -1  # location of a key not found
#: The table stores location + 1, so that an empty slot is 0: a new table is all zeros, which the system
#: hands out as untouched pages (calloc), instead of 16 MB written with -1 before the first key (0.035 s
#: an index, on every ingest however small).
_FREE = 0
_BATCH_HINT = 1 << 17  # rows of a batch (flows.ingest.read.DEFAULT_BATCH_ROWS), for the table's first size


def check_bits(second_halves: np.ndarray) -> np.ndarray:
    """32 more bits of each key (from its second 64), checked in a run on a hit of the first 64: 96 bits
    compared in all."""
    return (second_halves & np.uint64(0xFFFFFFFF)).astype(np.uint32)


@njit(nogil=True, cache=True)
def _key_bits(hi, check):
    """The bits a key sets in its Bloom word: six of 64, from a mix of its 96 compared bits."""
    mixed = (hi ^ (np.uint64(check) << np.uint64(32))) * _GOLDEN
    bits = np.uint64(0)
    for i in range(_BLOOM_SETS):
        bits |= np.uint64(1) << ((mixed >> np.uint64(6 * i + 16)) & np.uint64(63))
    return bits


@njit(nogil=True, cache=True)
def _word(hi, n_words):
    """Lemire's range reduction: the top 32 bits of ``hi`` scaled to [0, n_words)."""
    return np.int64(((hi >> np.uint64(32)) * n_words) >> np.uint64(32))


@njit(nogil=True, cache=True)
def _bloom_bits(hi, check, out):
    for i in range(hi.shape[0]):
        out[i] = _key_bits(hi[i], check[i])


@njit(nogil=True, cache=True)
def _bloom_add(words, hi, check):
    n_words = np.uint64(words.shape[0])
    for i in range(hi.shape[0]):
        words[_word(hi[i], n_words)] |= _key_bits(hi[i], check[i])


@njit(nogil=True, cache=True)
def _bloom_test(words, hi, check, out):
    n_words = np.uint64(words.shape[0])
    for i in range(hi.shape[0]):
        bits = _key_bits(hi[i], check[i])
        out[i] = (words[_word(hi[i], n_words)] & bits) == bits


def bloom_bits(hi: np.ndarray, check: np.ndarray) -> np.ndarray:
    """The bits each key sets in its Bloom word (``hi`` spread first halves, ``check`` their check bits)."""
    out = np.empty(len(hi), dtype=np.uint64)
    _bloom_bits(np.ascontiguousarray(hi, dtype=np.uint64), np.ascontiguousarray(check, dtype=np.uint32), out)
    return out


class _Bloom:
    """A blocked Bloom filter over (first 64 bits, check bits): one 64-bit word per key, for up to
    ``capacity`` keys, and the runs whose keys it holds."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = 0
        self.runs: list[_Run] = []
        self.words = np.zeros(max(1, -(-capacity * _BLOOM_BITS_PER_KEY // 64)), dtype=np.uint64)

    def add(self, run: _Run, hi: np.ndarray, check: np.ndarray) -> None:
        """Add a run's keys (spread first halves and check bits)."""
        self.runs.append(run)
        self.keys += len(hi)
        _bloom_add(self.words, hi, check)

    def might_contain(self, hi: np.ndarray, check: np.ndarray) -> np.ndarray:
        out = np.empty(len(hi), dtype=np.bool_)
        _bloom_test(self.words, hi, check, out)
        return out


@dataclass(frozen=True)
class _Run:
    """Accepted keys written out: their first halves spread (sorted), check bits and locations, on disk."""

    folder: Path
    keys: int

    def lookup(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Location of each key in this run, or -1 (``hi`` sorted, for a binary search that moves forward)."""
        out = np.full(len(hi), -1, dtype=np.int64)
        # Memory maps, dropped on return: only the pages the binary search touches are read, and they
        # leave this process's resident set with the map.
        run_hi = np.load(self.folder / "hi.npy", mmap_mode="r")
        pos = np.minimum(np.searchsorted(run_hi, hi), len(run_hi) - 1)
        hit = np.flatnonzero(np.asarray(run_hi[pos]) == hi)
        del run_hi
        if len(hit) == 0:
            return out
        pos = pos[hit]
        run_lo = np.load(self.folder / "lo.npy", mmap_mode="r")
        same = np.asarray(run_lo[pos]) == lo[hit]
        del run_lo
        hit, pos = hit[same], pos[same]
        run_loc = np.load(self.folder / "loc.npy", mmap_mode="r")
        out[hit] = np.asarray(run_loc[pos])
        del run_loc
        return out


# --- The kernels: numba, compiled once per machine (cache=True), run without the GIL ------------------


@njit(nogil=True, cache=True)
def _slot(t_hi, t_lo, t_loc, shift, hi, lo):
    """The slot holding (hi, lo), or the empty slot where it would go (linear probing). Slots are unsigned:
    numba checks a signed index for wraparound on every access."""
    mask = np.uint64(t_loc.shape[0] - 1)
    s = (hi * _GOLDEN) >> shift
    while t_loc[s] != _FREE:
        if t_hi[s] == hi and t_lo[s] == lo:
            return s
        s = (s + np.uint64(1)) & mask
    return s


@njit(nogil=True, cache=True)
def _lookup(t_hi, t_lo, t_loc, shift, keys, out):
    for i in range(keys.shape[0]):
        out[i] = t_loc[_slot(t_hi, t_lo, t_loc, shift, keys[i, 0], keys[i, 1])] - 1


@njit(nogil=True, cache=True)
def _insert(t_hi, t_lo, t_loc, shift, keys, locs):
    """Record each key not yet there (the first of repeats wins); returns how many were new."""
    added = 0
    for i in range(keys.shape[0]):
        s = _slot(t_hi, t_lo, t_loc, shift, keys[i, 0], keys[i, 1])
        if t_loc[s] == _FREE:
            t_hi[s], t_lo[s], t_loc[s] = keys[i, 0], keys[i, 1], locs[i] + 1
            added += 1
    return added


@njit(nogil=True, cache=True)
def _classify(
    i_hi, i_lo, i_loc, i_shift, c_hi, c_lo, c_loc, c_shift,
    id_keys, content_keys, has_content, locs, id_runs, content_runs, kind, dup_of,
):  # fmt: skip
    """Dedupe's rule, row by row in order, over both tables (see :func:`flows.ingest.dedupe.find_duplicates`);
    ``id_runs`` / ``content_runs``: each row's location in the runs, or -1. Returns the keys added to each."""
    added_ids = 0
    added_contents = 0
    for r in range(locs.shape[0]):
        s = _slot(i_hi, i_lo, i_loc, i_shift, id_keys[r, 0], id_keys[r, 1])
        if i_loc[s] != _FREE or id_runs[r] != _EMPTY:
            kind[r] = 1
            dup_of[r] = i_loc[s] - 1 if i_loc[s] != _FREE else id_runs[r]
            continue
        if has_content[r]:
            cs = _slot(c_hi, c_lo, c_loc, c_shift, content_keys[r, 0], content_keys[r, 1])
            if c_loc[cs] != _FREE or content_runs[r] != _EMPTY:
                kind[r] = 2
                dup_of[r] = c_loc[cs] - 1 if c_loc[cs] != _FREE else content_runs[r]
                continue
            c_hi[cs], c_lo[cs], c_loc[cs] = content_keys[r, 0], content_keys[r, 1], locs[r] + 1
            added_contents += 1
        i_hi[s], i_lo[s], i_loc[s] = id_keys[r, 0], id_keys[r, 1], locs[r] + 1
        added_ids += 1
    return added_ids, added_contents


class DigestIndex:
    """128-bit key -> int64 location of the first accepted row with that key (see the module docstring).

    Args:
        size_hint: Keys the table is first sized for (default: ``memory_keys`` and a batch, the most it
            holds). It grows when needed, but growing rehashes every key: filling the default budget
            from 65,536 keys that way cost 0.1 s of CPU per index and million rows.
        memory_keys: Keys held in memory before they are written out as a run.
        spill_dir: Parent of the private folder the runs go to (default: the system's temporary folder).
    """

    def __init__(
        self, size_hint: int | None = None, *, memory_keys: int = MEMORY_KEYS, spill_dir: Path | None = None
    ) -> None:
        self._memory_keys = memory_keys
        self._spill_dir = spill_dir
        self._folder: Path | None = None
        self._filters: list[_Bloom] = []
        self._count = 0  # keys in the table
        self.size = 0  # keys recorded, in the table and in runs
        keys = memory_keys + _BATCH_HINT if size_hint is None else max(1, size_hint)
        self._allocate(_table_capacity(keys))

    def _allocate(self, capacity: int) -> None:
        self._hi = np.zeros(capacity, dtype=np.uint64)
        self._lo = np.zeros(capacity, dtype=np.uint64)
        self._loc = np.zeros(capacity, dtype=np.int64)  # location + 1; 0: free
        self._shift = np.uint64(64 - (capacity.bit_length() - 1))

    @property
    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.uint64]:
        """The table's arrays (first halves, second halves, locations + 1) and hash shift, for the kernels."""
        return self._hi, self._lo, self._loc, self._shift

    def make_room(self, n: int) -> None:
        """Before ``n`` more keys may go in: write a full table out as a run, and keep it at most 60 % full."""
        if self._count >= self._memory_keys:
            self._spill()
        need = _table_capacity(self._count + n)
        if need > len(self._loc):
            taken = self._loc != _FREE
            hi, lo, loc = self._hi[taken], self._lo[taken], self._loc[taken] - 1
            self._allocate(need)
            _insert(*self.table, np.stack([hi, lo], axis=1), loc)

    def added(self, n: int) -> None:
        """``n`` keys went into the table (by a kernel)."""
        self._count += n
        self.size += n

    @property
    def runs(self) -> int:
        """Runs written to disk so far."""
        return sum(len(f.runs) for f in self._filters)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Location of each key's accepted row, or -1."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        found = np.empty(len(keys), dtype=np.int64)
        _lookup(*self.table, keys, found)
        todo = np.flatnonzero(found < 0)
        if len(todo) and self._filters:
            found[todo] = self.in_runs(keys[todo])
        return found

    def insert(self, keys: np.ndarray, locs: np.ndarray) -> None:
        """Record accepted rows; a key already recorded keeps its location."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        in_runs = self.in_runs(keys) if self._filters else np.full(len(keys), _EMPTY, dtype=np.int64)
        fresh = in_runs < 0
        self.make_room(int(np.count_nonzero(fresh)))
        self.added(_insert(*self.table, np.ascontiguousarray(keys[fresh]), np.ascontiguousarray(locs[fresh])))

    def in_runs(self, keys: np.ndarray) -> np.ndarray:
        """Location of each key in the runs written out, or -1 (the table is not searched)."""
        found = np.full(len(keys), _EMPTY, dtype=np.int64)
        if not self._filters or len(keys) == 0:
            return found
        hi = _spread(keys[:, 0])
        check = check_bits(keys[:, 1])
        todo = np.arange(len(keys))
        for bloom in reversed(self._filters):
            maybe = np.flatnonzero(bloom.might_contain(hi[todo], check[todo]))
            # Only the few keys the filter lets through are searched, in order (sorting them all cost
            # more than the search).
            maybe = todo[maybe[np.argsort(hi[todo][maybe])]]
            for run in reversed(bloom.runs):
                if len(maybe) == 0:
                    break
                got = run.lookup(hi[maybe], check[maybe])
                hit = got >= 0
                found[maybe[hit]] = got[hit]
                maybe = maybe[~hit]
            todo = todo[found[todo] < 0]
        return found

    def _spill(self) -> None:
        """Write the table's keys as a sorted run and empty the table."""
        taken = np.flatnonzero(self._loc != _FREE)
        if len(taken):
            spread = _spread(self._hi[taken])
            # A key's home slot is the top bits of its spread, and linear probing moves keys only a few
            # slots on: in slot order the keys are nearly sorted already, which timsort (stable) finishes
            # in a tenth of the time of a full sort (6 vs 60 ms a million keys).
            order = np.argsort(spread, kind="stable")
            hi = spread[order]
            lo = check_bits(self._lo[taken][order])
            loc = self._loc[taken][order] - 1
            folder = self._spill_folder() / f"run-{self.runs:05d}"
            folder.mkdir()
            np.save(folder / "hi.npy", hi)
            np.save(folder / "lo.npy", lo)
            np.save(folder / "loc.npy", loc)
            if not self._filters or self._filters[-1].keys + len(hi) > self._filters[-1].capacity:
                # Each filter holds twice as many keys as the one before: a lookup checks log2(n) of them.
                last = self._filters[-1].capacity if self._filters else 2 * self._memory_keys
                self._filters.append(_Bloom(max(2 * last, len(hi))))
            self._filters[-1].add(_Run(folder, len(hi)), hi, lo)
        self._empty()  # it keeps its size, as it fills up to it again

    def _empty(self) -> None:
        self._loc.fill(_FREE)
        self._count = 0

    def _spill_folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="kazi-dedupe-", dir=self._spill_dir))
            # Removed with the index, or at exit, even when the caller never closes it.
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._folder, True)
        return self._folder

    def close(self) -> None:
        """Delete the runs on disk (the index is empty afterwards)."""
        if self._folder is not None:
            self._finalizer()
            self._folder = None
        self._filters = []
        self.size = 0
        self._empty()

    @property
    def nbytes(self) -> int:
        """Approximate memory held: the table's arrays and the runs' Bloom filters."""
        return self._hi.nbytes + self._lo.nbytes + self._loc.nbytes + sum(f.words.nbytes for f in self._filters)


def classify(
    ids: DigestIndex,
    contents: DigestIndex,
    id_keys: np.ndarray,
    content_keys: np.ndarray,
    has_content: np.ndarray,
    locs: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Dedupe's rule over one batch, in row order, recording the accepted rows in both indexes.

    Returns:
        (kind per row: 0 accepted, 1 id duplicate, 2 content duplicate; location of the accepted row it
        repeats, or -1).
    """
    n = len(locs)
    id_keys = np.ascontiguousarray(id_keys, dtype=np.uint64)
    content_keys = np.ascontiguousarray(content_keys, dtype=np.uint64)
    has_content = np.ascontiguousarray(has_content, dtype=np.bool_)
    locs = np.ascontiguousarray(locs, dtype=np.int64)
    ids.make_room(n)
    contents.make_room(n)
    # Runs hold keys of earlier batches only, so they are searched for the whole batch up front.
    id_runs = ids.in_runs(id_keys)
    content_runs = contents.in_runs(content_keys)
    kind = np.zeros(n, dtype=np.int8)
    dup_of = np.full(n, _EMPTY, dtype=np.int64)
    added_ids, added_contents = _classify(
        *ids.table, *contents.table, id_keys, content_keys, has_content, locs, id_runs, content_runs, kind, dup_of
    )
    ids.added(added_ids)
    contents.added(added_contents)
    return kind, dup_of


def _spread(hi: np.ndarray) -> np.ndarray:
    """First halves times an odd constant (a bijection): runs are sorted on it."""
    return hi * _GOLDEN


def _table_capacity(keys: int) -> int:
    """Slots for ``keys`` keys with the table at most 60 % full: a power of two, at least 16."""
    return 1 << max(4, int(-(-keys * 5 // 3) - 1).bit_length())
