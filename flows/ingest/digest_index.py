"""128-bit digest -> int64 location, in memory up to a budget and then in sorted runs on local disk.

Dedupe asks, batch after batch, "was this key accepted before, and where?" over every key of a run, so an
index held wholly in memory grows with the input (about 90 bytes a row for the two indexes). This one
keeps at most :data:`MEMORY_KEYS` keys in memory: a hash table (pandas' khash, in C) gives the first 64
bits of each key a dense label, in order of first appearance, and arrays indexed by label hold the next 32
bits, checked on a hit, and the location. (The table was numpy linear probing before: 3 s of CPU per
million rows for the two indexes, against 0.5 s for khash.) When the table is full, its
accepted keys are sorted and written as a *run* (three ``.npy`` files in a private temporary folder) and
the table starts again empty.

A key missing from the table is looked up in the runs, newest first. The runs' keys are also in blocked
Bloom filters in memory (one 64-bit word per key, six bits set, 16 bits a key; a filter takes the runs of
twice as many keys as the one before, so a batch checks log2 of them), so only a few keys of a batch (the
true repeats and the false positives: measured 0.07 % in a half-full filter, 0.7 % in a full one) reach the
disk, by binary search in a memory map that is dropped again after the batch. Memory is then the table's
budget (about 35 bytes a key in the hash table and 24 in the arrays: about 60 MB) plus 2 to 4 bytes per
accepted key (the filters, allocated as they open): 10 to 20 MB more per 5 million keys.

Keys are compared on 96 of their 128 bits (64 + 32), in memory and in runs alike: see
:mod:`flows.ingest.dedupe` for what that means for false duplicates.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pandas._libs.hashtable import UInt64HashTable, UInt64Vector

#: Keys held in memory before the accepted ones are written out as a run.
MEMORY_KEYS = 1 << 20
_BLOOM_BITS_PER_KEY = 16
_BLOOM_SETS = 6  # bits set per key, 6 bits of a mixed word each
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SIX = np.uint64(63)
_ONE = np.uint64(1)


def check_bits(keys: np.ndarray) -> np.ndarray:
    """32 more bits of each (n, 2) uint64 key, checked on a hit of the first 64: 96 bits compared in all."""
    return (keys[:, 1] & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def bloom_bits(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The bits a key sets in its Bloom word: six of 64, from a mix of its 96 compared bits."""
    # In place, into two buffers: a temporary per operation cost six times as much (0.10 vs 0.016 s a
    # million keys, paid at every spill).
    mixed = lo.astype(np.uint64)
    mixed <<= np.uint64(32)
    mixed ^= hi
    mixed *= _GOLDEN
    bits = np.zeros(len(hi), dtype=np.uint64)
    part = np.empty(len(hi), dtype=np.uint64)
    for i in range(_BLOOM_SETS):
        np.right_shift(mixed, np.uint64(6 * i + 16), out=part)
        part &= _SIX
        np.left_shift(_ONE, part, out=part)
        bits |= part
    return bits


class _Bloom:
    """A blocked Bloom filter over (first 64 bits, check bits): one 64-bit word per key, for up to
    ``capacity`` keys, and the runs whose keys it holds."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = 0
        self.runs: list[_Run] = []
        self._words = np.uint64(max(1, -(-capacity * _BLOOM_BITS_PER_KEY // 64)))
        self.words = np.zeros(int(self._words), dtype=np.uint64)

    def word(self, hi: np.ndarray) -> np.ndarray:
        # Lemire's range reduction: the top 32 bits scaled to [0, words), monotonic in hi.
        return (((hi >> np.uint64(32)) * self._words) >> np.uint64(32)).astype(np.intp)

    def add(self, run: _Run, hi: np.ndarray, bits: np.ndarray) -> None:
        """Add a run's keys, sorted by ``hi``: each word's bits are one ``reduceat`` over neighbours."""
        self.runs.append(run)
        self.keys += len(hi)
        if len(hi):
            word = self.word(hi)
            starts = np.concatenate([[0], np.flatnonzero(np.diff(word)) + 1])
            self.words[word[starts]] |= np.bitwise_or.reduceat(bits, starts)

    def might_contain(self, hi: np.ndarray, bits: np.ndarray) -> np.ndarray:
        return (self.words[self.word(hi)] & bits) == bits


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


class DigestIndex:
    """128-bit key -> int64 location of the first accepted row with that key (see the module docstring).

    Args:
        size_hint: Initial capacity of the in-memory table.
        memory_keys: Keys held in memory before the accepted ones are written out as a run.
        spill_dir: Parent of the private folder the runs go to (default: the system's temporary folder).
    """

    def __init__(
        self, size_hint: int = 1 << 16, *, memory_keys: int = MEMORY_KEYS, spill_dir: Path | None = None
    ) -> None:
        self._size_hint = max(1, size_hint)
        self._memory_keys = memory_keys
        self._spill_dir = spill_dir
        self._folder: Path | None = None
        self._filters: list[_Bloom] = []
        self.size = 0
        self._allocate(_capacity_for(self._size_hint))
        self._reset()

    def _reset(self) -> None:
        # pandas' khash table (C): first 64 bits -> dense label, in order of first appearance.
        # Sized for the whole budget once the first table filled up: growing by rehashing costs more.
        self._table = UInt64HashTable(self._memory_keys if self._filters else min(self._size_hint, self._memory_keys))
        self._count = 0
        self._loc[:] = -1

    def _allocate(self, capacity: int) -> None:
        """Per-label arrays (first halves, check bits, locations), indexed by label."""
        self._hi = np.zeros(capacity, dtype=np.uint64)
        self._lo = np.zeros(capacity, dtype=np.uint32)
        self._loc = np.full(capacity, -1, dtype=np.int64)
        self._scratch = np.zeros(capacity, dtype=np.int32)

    def _ensure(self, labels: int) -> None:
        """Room for ``labels`` labels in the per-label arrays (doubling, keeping what they hold)."""
        capacity = len(self._hi)
        if labels <= capacity:
            return
        hi, lo, loc = self._hi, self._lo, self._loc
        self._allocate(_capacity_for(labels))
        self._hi[:capacity], self._lo[:capacity], self._loc[:capacity] = hi, lo, loc

    @property
    def runs(self) -> int:
        """Runs written to disk so far."""
        return sum(len(f.runs) for f in self._filters)

    def labels(self, keys: np.ndarray) -> np.ndarray:
        """Stable label of each key's first 64 bits, registering new ones.

        Labels are valid until the next call: a full table is written out at the start of a call.
        """
        if self._count >= self._memory_keys:
            self._spill()
        uniques = UInt64Vector()
        out = np.asarray(self._table.get_labels(_first_half(keys), uniques, self._count, -1), dtype=np.int64)
        new = uniques.to_array()
        if len(new):
            self._ensure(self._count + len(new))
            self._hi[self._count : self._count + len(new)] = new
            self._count += len(new)
        return out

    def lookup(self, labels: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Location of each key's accepted row, or -1."""
        check = check_bits(keys)
        loc = self._loc[labels]
        found = np.where((loc >= 0) & (self._lo[labels] == check), loc, -1)
        todo = np.flatnonzero(found < 0)
        if len(todo) == 0 or not self._filters:
            return found
        hi = _spread(_first_half(keys)[todo])
        check = check[todo]
        bits = bloom_bits(hi, check)
        for bloom in reversed(self._filters):
            maybe = np.flatnonzero(bloom.might_contain(hi, bits))
            # Only the few keys the filter lets through are searched, in order (sorting them all cost
            # more than the search).
            maybe = maybe[np.argsort(hi[maybe])]
            for run in reversed(bloom.runs):
                if len(maybe) == 0:
                    break
                got = run.lookup(hi[maybe], check[maybe])
                hit = got >= 0
                found[todo[maybe[hit]]] = got[hit]
                maybe = maybe[~hit]
        return found

    def insert(self, labels: np.ndarray, keys: np.ndarray, locs: np.ndarray) -> None:
        """Record accepted rows; a label already taken (by another key) is left as it is."""
        free = self._loc[labels] < 0
        labels, keys, locs = labels[free], keys[free], locs[free]
        # The first of several rows on one label (another key sharing the first 64 bits): writing the
        # positions in reverse leaves the first one's (a fancy assignment keeps the last value written).
        order = np.arange(len(labels), dtype=np.int32)
        self._scratch[labels[::-1]] = order[::-1]
        first = np.flatnonzero(self._scratch[labels] == order)
        self._lo[labels[first]] = check_bits(keys[first])
        self._loc[labels[first]] = locs[first]
        self.size += len(first)

    def _spill(self) -> None:
        """Write the table's accepted keys as a sorted run and empty the table."""
        taken = np.flatnonzero(self._loc[: self._count] >= 0)
        if len(taken):
            spread = _spread(self._hi[taken])
            order = np.argsort(spread)
            hi, lo, loc = spread[order], self._lo[taken][order], self._loc[taken][order]
            folder = self._spill_folder() / f"run-{self.runs:05d}"
            folder.mkdir()
            np.save(folder / "hi.npy", hi)
            np.save(folder / "lo.npy", lo)
            np.save(folder / "loc.npy", loc)
            if not self._filters or self._filters[-1].keys + len(hi) > self._filters[-1].capacity:
                # Each filter holds twice as many keys as the one before: a lookup checks log2(n) of them.
                last = self._filters[-1].capacity if self._filters else 2 * self._memory_keys
                self._filters.append(_Bloom(max(2 * last, len(hi))))
            self._filters[-1].add(_Run(folder, len(hi)), hi, bloom_bits(hi, lo))
        # Empty the table; the per-label arrays keep their size, as the table fills up to it again.
        self._reset()

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
        self._reset()

    @property
    def nbytes(self) -> int:
        """Approximate memory held: the table's arrays and the runs' Bloom filters."""
        arrays = self._hi.nbytes + self._lo.nbytes + self._loc.nbytes + self._scratch.nbytes
        return arrays + self._table.sizeof() + sum(f.words.nbytes for f in self._filters)


def _spread(hi: np.ndarray) -> np.ndarray:
    """First halves times an odd constant (a bijection): runs are sorted on it, slots are its top bits."""
    return hi * _GOLDEN


def _first_half(keys: np.ndarray) -> np.ndarray:
    """The first 64 bits of each key, 0 read as 1 (0 marks an empty slot)."""
    hi = np.ascontiguousarray(keys[:, 0])
    return np.where(hi == 0, np.uint64(1), hi)


def _capacity_for(keys: int) -> int:
    """A power of two of at least ``keys`` (and 16)."""
    return 1 << max(4, int(keys - 1).bit_length())
