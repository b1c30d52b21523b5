"""Raw client rows -> canonical items (:data:`flows.core.schemas.ITEMS`), vectorised.

Decisions, in the order a row meets them:

* ``record`` is the client's row as a JSON object: CSV and Parquet values as text, in the file's column
  order, exactly as read (a Parquet value rendered by Arrow, e.g. ``1.5``, ``2024-01-01``); a JSONL row is
  its line, verbatim. Every character survives: quotes, backslashes and control characters are escaped
  as ``json.dumps`` escapes them (a NUL byte becomes ``\\u0000``), everything else (RTL marks, zero-width
  joiners, emoji, SQL) is kept as is, so ``json.loads(record)`` gives the row back unchanged.
* ``item_id`` is the client's id, trimmed of surrounding whitespace (``client_item_id`` keeps it exactly
  as sent). With no id column mapped it is ``h-`` + 24 hex digits of the digest of ``record``: a row's
  id is then a function of its content.
* Duplicates are found on the id *key*: the id trimmed, NFC-normalised and lower-cased, so ``A1``,
  ``a1`` and ``" A1 "`` are one item (the first is accepted, the others are reported as duplicates).
* The *content key* is the digest of what annotators see: ``text``, ``media_uri`` and ``fields``. Two rows
  with different ids and the same content are duplicates of kind "content". It is not stored with the
  items: it is recomputed from those three columns whenever it is needed, and 16 random bytes a row are
  the largest column of the table otherwise (39 -> 22 compressed bytes a row for short texts).
* ``text`` is kept exactly (not trimmed); ``media_uri`` is trimmed; ``fields`` is a JSON object of the
  mapped listing fields, task field name -> client value, in mapping order.
* ``shard`` = id-key digest mod ``N_SHARDS``: stable across runs and machines, for a stage that
  partitions by id (the files themselves are parts in ingest order, see :mod:`flows.ingest.sink`).

Digests are 128-bit, computed over the Arrow buffers by a compiled kernel (no Python per row): each 8-byte
word of a value is mixed with its position (the SplitMix64 finaliser) and the words are folded by XOR and
by sum into two 64-bit halves, then finalised with the length. It is not cryptographic; it is stable (little-endian
machines, which is all numpy targets here) and collisions between different values are as rare as for a
random 128-bit function on non-adversarial data.

Raw ids never go into a path: :func:`safe_key_part` makes any id safe as one S3 key segment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from flows.core.arrays import combine, string_buffers
from flows.core.models import ColumnMapping
from flows.ingest.read import DEFAULT_BATCH_ROWS, RawBatch

N_SHARDS = 16

_U = np.uint64
_K1, _K2, _K3 = _U(0x9E3779B97F4A7C15), _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)
_S30, _S27, _S31 = _U(30), _U(27), _U(31)
_SEED = (_U(0x243F6A8885A308D3), _U(0x13198A2E03707344))
_NULL_DIGEST = (_U(0x6E756C6C6E756C6C), _U(0x4E554C4C4E554C4C))
_MASK64 = (1 << 64) - 1
#: Byte -> its two hex digits, as one uint16 (little-endian: the high digit first in memory).
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), dtype="<u2")
_CONTROL_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
_MAX_KEY_PART = 150


@dataclass(frozen=True)
class CanonicalBatch:
    """One batch mapped to canonical columns, with what dedupe and the contract check need.

    Attributes:
        items: The :data:`~flows.core.schemas.ITEMS` columns; ``item_id`` may be null here (a missing or
            blank id), such rows never pass the contract.
        check: The columns the contract checks: ``item_id``, ``text``, ``media_uri`` and ``fields.<name>``.
        id_keys: (n, 2) uint64 digest of each id key (trimmed, NFC, lower-case).
        content_keys: (n, 2) uint64 digest of each row's content (text, media_uri, fields).
        has_content: Rows with any content; rows without it are never content duplicates.
        missing: Canonical column -> the mapped client column this file lacks.
    """

    items: pa.Table
    check: pa.Table
    id_keys: np.ndarray
    content_keys: np.ndarray
    has_content: np.ndarray
    missing: dict[str, str]


def normalise(raw: RawBatch, mapping: ColumnMapping, n_shards: int = N_SHARDS) -> CanonicalBatch:
    """Map a raw batch through the work order's column mapping; see the module docstring for the rules."""
    table = raw.table
    n = table.num_rows
    names = table.column_names
    texts = {name: as_text(table.column(i)) for i, name in enumerate(names)}
    missing: dict[str, str] = {}

    def mapped(canonical: str, column: str | None) -> pa.Array:
        if column is None:
            return pa.nulls(n, pa.string())
        if column not in texts:
            missing[canonical] = column
            return pa.nulls(n, pa.string())
        return texts[column]

    record = raw.raw_records if raw.raw_records is not None else json_objects(names, list(texts.values()))
    if mapping.item_id:
        client_id = mapped("item_id", mapping.item_id)
        item_id = pc.utf8_trim_whitespace(client_id)
        item_id = pc.if_else(pc.equal(pc.utf8_length(item_id), 0), pa.scalar(None, pa.string()), item_id)
    else:
        client_id = pa.nulls(n, pa.string())
        item_id = hex_digest(digest(record), 24, prefix="h-")
    text = mapped("text", mapping.text)
    media = pc.utf8_trim_whitespace(mapped("media_uri", mapping.media_uri))
    media = pc.if_else(pc.equal(pc.utf8_length(media), 0), pa.scalar(None, pa.string()), media)
    field_names = list(mapping.fields)
    field_cols = [mapped(f"fields.{f}", mapping.fields[f]) for f in field_names]
    fields = json_objects(field_names, field_cols) if field_names else pa.nulls(n, pa.string())

    id_keys = digest(id_key(item_id))
    content_keys = content_digest(text, media, fields)
    has_content = _non_blank(text) | media.is_valid().to_numpy(zero_copy_only=False)  # media: trimmed, blank = null
    for col in field_cols:
        has_content |= _non_blank(col)
    source = repeat_string(raw.source_object, n)
    items = pa.table(
        {
            "item_id": item_id,
            "client_item_id": client_id,
            "text": text,
            "media_uri": media,
            "fields": fields,
            "record": record,
            "source_object": source,
            "source_row": pa.array(raw.rows, pa.int64()),
            "shard": pa.array((id_keys[:, 0] % _U(n_shards)).astype(np.int32)),
        }
    )
    check = pa.table(
        {"item_id": item_id, "text": text, "media_uri": media}
        | {f"fields.{f}": col for f, col in zip(field_names, field_cols, strict=True)}
    )
    return CanonicalBatch(items, check, id_keys, content_keys, has_content, missing)


def id_key(item_ids: pa.Array) -> pa.Array:
    """The id as compared for duplicates: trimmed, NFC-normalised, lower-cased."""
    trimmed = pc.utf8_trim_whitespace(item_ids)
    if pc.all(pc.string_is_ascii(trimmed)).as_py():  # ASCII text is NFC already, and lowers byte by byte
        return pc.ascii_lower(trimmed)
    return pc.utf8_lower(pc.utf8_normalize(trimmed, "NFC"))


def safe_key_part(item_id: str) -> str:
    """``item_id`` as one safe S3 key segment: percent-encoded, never ``.``/``..``, at most ~170 characters.

    Only ``A-Z a-z 0-9 - . _ ~`` pass unencoded, so the result never holds ``/`` or whitespace, and
    distinct ids give distinct parts. A long id is cut and suffixed with ``=`` and 16 hex digits of its
    SHA-256 (``=`` is always encoded in the percent-encoded part, so the two forms never meet).
    """
    part = urllib.parse.quote(item_id, safe="", encoding="utf-8", errors="surrogatepass")
    if part in ("", ".", ".."):
        # quote() never emits "=", so "=empty" and the all-encoded dots cannot be another id's part.
        part = "".join(f"%{b:02X}" for b in item_id.encode("utf-8")) or "=empty"
    if len(part) > _MAX_KEY_PART:
        digest_hex = hashlib.sha256(item_id.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]
        part = f"{part[:_MAX_KEY_PART]}={digest_hex}"
    return part


def as_text(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any Arrow column as strings: Arrow's rendering for scalars, compact JSON for nested values.

    Binary values that are not UTF-8 become ``base64:<...>``.
    """
    arr = combine(col)
    t = arr.type
    if t == pa.string():
        return arr
    if pa.types.is_dictionary(t):
        return as_text(arr.dictionary_decode())
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            return pc.cast(pc.cast(arr, pa.large_binary()), pa.large_string()).cast(pa.string())
        except pa.ArrowInvalid:
            return pa.array([_bytes_text(v) for v in arr.to_pylist()], pa.string())
    if pa.types.is_nested(t):
        return pa.array([_nested_text(v) for v in arr.to_pylist()], pa.string())
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())


def _bytes_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode("ascii")


def _nested_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _non_blank(col: pa.Array) -> np.ndarray:
    # Empty or all whitespace is blank; utf8_is_space answers without trimming a copy of every value.
    blank = pc.or_(pc.equal(pc.binary_length(col), 0), pc.utf8_is_space(col))
    return np.asarray(pc.fill_null(pc.invert(blank), False).to_numpy(zero_copy_only=False), dtype=bool)


# --- JSON objects, built column-wise ---------------------------------------------------------------


def json_objects(names: Sequence[str], cols: Sequence[pa.Array]) -> pa.Array:
    """One JSON object per row, ``{name: value}`` in the given order, identical to
    ``json.dumps(row, ensure_ascii=False, separators=(",", ":"))`` with null values as ``null``."""
    n = len(cols[0]) if cols else 0
    if not cols:
        return pa.array(["{}"] * n, pa.string())
    pieces: list[Any] = []
    pending = "{"
    for i, (name, col) in enumerate(zip(names, cols, strict=True)):
        key = json.dumps(name, ensure_ascii=False) + ":"
        pending += ("," if i else "") + key
        escaped = json_escape(col)
        if escaped.null_count == 0:
            pieces += [pending + '"', escaped]
            pending = '"'
        else:
            quoted = pc.binary_join_element_wise('"', escaped, '"', "")
            pieces += [pending, pc.fill_null(quoted, "null")]
            pending = ""
    pieces.append(pending + "}")
    return _join_pieces(pieces, n)


def _join_pieces(pieces: list[Any], n: int) -> pa.Array:
    """Row by row, ``pieces[0] + pieces[1][row] + pieces[2] + ...``: texts at even places, string arrays
    without nulls at odd ones (at least one), concatenated by one compiled pass into buffers sized first.

    Arrow's ``binary_join_element_wise`` did the same at 2/3 of the speed (14.5 against 10.3 ms for a
    batch of 131,072 records of 130 bytes), into memory from Arrow's allocator, whose pages it gives
    back and faults in again batch after batch (a fifth of an ingest's page faults).
    """
    texts = [p.encode("utf-8") for p in pieces[0::2]]
    columns = [string_buffers(a) for a in pieces[1::2]]
    text_offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=text_offsets[1:])
    lengths = np.full(n, text_offsets[-1], dtype=np.int64)
    for offs, _ in columns:
        lengths += np.diff(offs)
    out_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    if out_offsets[-1] >= 1 << 31:  # beyond a string array's 32-bit offsets: Arrow says so
        return pc.binary_join_element_wise(*[repeat_string(p, n) if isinstance(p, str) else p for p in pieces], "")
    out = np.empty(int(out_offsets[-1]), dtype=np.uint8)
    data = np.concatenate([d for _, d in columns])
    bases = np.cumsum([0] + [len(d) for _, d in columns[:-1]], dtype=np.int64)
    # Where each value starts in ``data``, for a block of rows at a time: a file of many columns would
    # otherwise need columns x rows of them at once (300 columns of a batch: 300 MB).
    step = max(1024, (1 << 20) // max(1, len(columns)))
    joined = np.frombuffer(b"".join(texts), dtype=np.uint8)
    for first in range(0, n, step):
        last = min(n, first + step)
        starts = np.stack([offs[first : last + 1] + base for (offs, _), base in zip(columns, bases, strict=True)])
        _join(starts, data, joined, text_offsets, out_offsets[first:], out)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(out_offsets.astype(np.int32)), pa.py_buffer(out)])


@njit(nogil=True, cache=True, inline="always")
def _copy_bytes(src, a, e, out, p):
    """``src[a:e]`` into ``out`` from ``p``; returns where it ends. A byte loop on unsigned indices, which LLVM
    turns into ``memcpy``: numba checks a signed index for wraparound on every access."""
    a = np.uint64(a)
    e = np.uint64(e)
    while a < e:
        out[p] = src[a]
        p += np.uint64(1)
        a += np.uint64(1)
    return p


@njit(nogil=True, cache=True)
def _join(starts, data, texts, text_offsets, out_offsets, out):
    """See :func:`_join_pieces`: column ``j`` of row ``r`` is ``data[starts[j, r]:starts[j, r + 1]]``, and
    the row goes to ``out[out_offsets[r]:]``, for the rows of ``starts``."""
    for r in range(starts.shape[1] - 1):
        p = np.uint64(out_offsets[r])
        for j in range(starts.shape[0] + 1):
            p = _copy_bytes(texts, text_offsets[j], text_offsets[j + 1], out, p)
            if j < starts.shape[0]:
                p = _copy_bytes(data, starts[j, r], starts[j, r + 1], out, p)


#: Repeated strings kept for later batches (see :func:`repeat_string`), up to this many bytes in all.
_REPEATS_BYTES = 32 << 20
_repeats: dict[str, pa.Array] = {}
_repeats_lock = threading.Lock()


def repeat_string(text: str, n: int) -> pa.Array:
    """A string array of ``n`` copies of ``text``.

    The JSON pieces between a file's columns and the file's name (the ``source_object`` column) are the same
    in every batch, so the array is built once, for a whole batch, and sliced after: building it anew each
    time (7.8 MB a batch for an S3 URI of 60 bytes) was 5 % of the page faults of an ingest of 2.5M CSV rows.
    """
    with _repeats_lock:
        have = _repeats.get(text)
    if have is None or len(have) < n:
        rows = max(n, DEFAULT_BATCH_ROWS)
        if len(text.encode("utf-8")) * rows > _REPEATS_BYTES // 4:  # a long text: built each time, not kept
            return _repeated(text, n)
        have = _repeated(text, rows)
        with _repeats_lock:
            if sum(a.nbytes for a in _repeats.values()) + have.nbytes > _REPEATS_BYTES:
                _repeats.clear()
            _repeats[text] = have
    return have if len(have) == n else have.slice(0, n)


def _repeated(text: str, n: int) -> pa.Array:
    raw = text.encode("utf-8")
    offsets = np.arange(0, (n + 1) * len(raw), len(raw), dtype=np.int32) if raw else np.zeros(n + 1, np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw * n)])


@njit(nogil=True, cache=True)
def _needs_escape(data):
    """Whether any byte is a quote, a backslash or a control character: one pass that LLVM vectorises (an
    OR of comparisons, on unsigned indices), instead of three numpy comparisons and their temporaries."""
    found = False
    i = np.uint64(0)
    n = np.uint64(data.shape[0])
    while i < n:
        b = data[i]
        found |= (b < 0x20) | (b == 0x22) | (b == 0x5C)
        i += np.uint64(1)
    return found


def json_escape(col: pa.Array) -> pa.Array:
    """String values with JSON escapes applied (quotes, backslashes, control characters); nulls stay null."""
    _, data = string_buffers(col)
    if not _needs_escape(data):  # nearly always: most text has nothing to escape
        return col
    present: set[int] = set()
    if np.count_nonzero(data == 0x22):
        present.add(0x22)
    if np.count_nonzero(data == 0x5C):
        present.add(0x5C)
    control = data < 0x20
    if np.count_nonzero(control):
        present |= set(np.unique(data[control]).tolist())
    out = col
    if 0x5C in present:  # first, so the backslashes added below are not doubled
        out = pc.replace_substring(out, "\\", "\\\\")
    if 0x22 in present:
        out = pc.replace_substring(out, '"', '\\"')
    for b in sorted(present - {0x22, 0x5C}):
        out = pc.replace_substring(out, chr(b), _CONTROL_ESCAPES.get(b, f"\\u{b:04x}"))
    return out


# --- Digests ----------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _fmix1(x):
    """SplitMix64's finaliser, of one value."""
    x ^= x >> _S30
    x *= _K2
    x ^= x >> _S27
    x *= _K3
    x ^= x >> _S31
    return x


@njit(nogil=True, cache=True)
def _fold(out, d, salt_hi, salt_lo):
    """One digest folded into ``out`` (both (n, 2) uint64), in place: see :func:`_combine`."""
    for i in range(out.shape[0]):
        out[i, 0] = _fmix1(out[i, 0] ^ (d[i, 0] + salt_hi))
        out[i, 1] = _fmix1(out[i, 1] + (d[i, 1] ^ salt_lo))


@njit(nogil=True, cache=True)
def _digest(offsets, data, valid, out):
    """See :func:`digest`: one pass over each value's bytes, read as little-endian words zero-padded to 8.

    Indices are unsigned: numba checks a signed index for wraparound on every load, which kept the eight
    byte loads of a word from merging into one (6.9 against 3.3 ms for 131,072 texts of 80 bytes).
    """
    one, eight = np.uint64(1), np.uint64(8)
    for i in range(offsets.shape[0] - 1):
        if not valid[i]:
            out[i, 0], out[i, 1] = _NULL_DIGEST
            continue
        start = np.uint64(offsets[i])
        length = np.uint64(offsets[i + 1]) - start
        hx = np.uint64(0)
        ha = np.uint64(0)
        pos = one
        j = np.uint64(0)
        while j < length:
            at = start + j
            if j + eight <= length:  # a whole word: eight loads the compiler merges into one
                word = (
                    np.uint64(data[at])
                    | np.uint64(data[at + one]) << np.uint64(8)
                    | np.uint64(data[at + np.uint64(2)]) << np.uint64(16)
                    | np.uint64(data[at + np.uint64(3)]) << np.uint64(24)
                    | np.uint64(data[at + np.uint64(4)]) << np.uint64(32)
                    | np.uint64(data[at + np.uint64(5)]) << np.uint64(40)
                    | np.uint64(data[at + np.uint64(6)]) << np.uint64(48)
                    | np.uint64(data[at + np.uint64(7)]) << np.uint64(56)
                )
            else:
                word = np.uint64(0)
                b = np.uint64(0)
                while j + b < length:
                    word |= np.uint64(data[at + b]) << (eight * b)
                    b += one
            mixed = _fmix1((pos * _K1) ^ word)
            hx ^= mixed
            ha += mixed
            pos += one
            j += eight
        out[i, 0] = _fmix1(hx ^ (length * _K3) ^ _SEED[0])
        out[i, 1] = _fmix1(ha + length * _K1 + _SEED[1])


@njit(nogil=True, cache=True)
def _copy_runs(offsets, data, starts, ends, out_offsets, out):
    """The rows ``[starts[k], ends[k])`` of a string array, run after run: their bytes into ``out`` and
    their offsets into ``out_offsets``.

    The bytes go through :func:`_copy_bytes`: a slice assignment compiled to an element loop (3.1 against
    18 GB/s).
    """
    p = np.uint64(0)
    q = 0
    out_offsets[0] = 0
    for k in range(starts.shape[0]):
        a = np.uint64(offsets[starts[k]])
        for r in range(starts[k], ends[k]):
            q += 1
            out_offsets[q] = p + (np.uint64(offsets[r + 1]) - a)
        p = _copy_bytes(data, offsets[starts[k]], offsets[ends[k]], out, p)


def take_rows(col: pa.Array, keep: np.ndarray) -> pa.Array:
    """The values of ``col`` where ``keep`` (a boolean array, one a row) is true.

    A string column without nulls is copied run by run of consecutive rows (the rows dedupe keeps are
    nearly all of them) into buffers sized once, without the GIL; any other column by Arrow's filter, whose
    string buffers grow as they fill instead (a new block, copied, each time they double: on 2.5M CSV rows
    a third of the ingest's page faults).
    """
    kept = int(np.count_nonzero(keep))
    if col.type != pa.string() or col.null_count or kept == 0:
        return pc.filter(col, pa.array(keep))
    offs, data = string_buffers(col)
    edges = np.diff(keep.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    total = int((offs[ends] - offs[starts]).sum())
    if total >= 1 << 31:  # beyond a string array's 32-bit offsets
        return pc.filter(col, pa.array(keep))
    out_offsets = np.empty(kept + 1, dtype=np.int32)
    out = np.empty(total, dtype=np.uint8)
    _copy_runs(offs, data, starts, ends, out_offsets, out)
    return pa.Array.from_buffers(pa.string(), kept, [None, pa.py_buffer(out_offsets), pa.py_buffer(out)])


def digest(col: pa.Array) -> np.ndarray:
    """(n, 2) uint64: a 128-bit digest of each string's UTF-8 bytes; null has its own fixed digest.

    Each 8-byte word of a value (the last one zero-padded) is mixed with its 1-based position (the
    SplitMix64 finaliser of ``position * K1 ^ word``); the mixed words are folded by XOR into the first
    half and by sum into the second, each then finalised with the value's length and a seed. Computed by a
    compiled kernel in one pass (it was twelve numpy passes over a padded copy: 0.28 s of CPU per million
    rows); the digests are the same, and the tests hold the numpy definition as their reference.
    """
    n = len(col)
    out = np.empty((n, 2), dtype=_U)
    if n == 0:
        return out
    if col.null_count == n:
        out[:] = _NULL_DIGEST
        return out
    offs, data = string_buffers(col)
    valid = np.ones(n, dtype=np.bool_) if col.null_count == 0 else col.is_valid().to_numpy(zero_copy_only=False)
    _digest(offs, data, valid, out)
    return out


def content_digest(text: pa.Array, media_uri: pa.Array, fields: pa.Array) -> np.ndarray:
    """(n, 2) uint64: the content key of each item, from its canonical ``text``, ``media_uri`` and ``fields``."""
    return _combine([digest(text), digest(media_uri), digest(fields)])


def _combine(digests: list[np.ndarray]) -> np.ndarray:
    """One digest of several, order-sensitive: starting from ``(0, K3)``, the i-th digest (from 1) is folded
    in as ``hi = fmix(hi ^ (d_hi + i*K1))``, ``lo = fmix(lo + (d_lo ^ i*K2))``, in one compiled pass a
    digest (it was six numpy passes and their temporaries: 7 of the 14 ms of a batch's content keys)."""
    out = np.empty((digests[0].shape[0], 2), dtype=_U)
    out[:, 0] = 0
    out[:, 1] = _K3
    for i, d in enumerate(digests, start=1):
        _fold(out, np.ascontiguousarray(d, dtype=_U), _U((i * int(_K1)) & _MASK64), _U((i * int(_K2)) & _MASK64))
    return out


def hex_digest(d: np.ndarray, nhex: int = 32, prefix: str = "") -> pa.Array:
    """Digests as lower-case hex strings (the first ``nhex`` digits), with an optional prefix."""
    n = d.shape[0]
    be = np.ascontiguousarray(d.astype(">u8")).view(np.uint8).reshape(n, 16)
    head = prefix.encode("ascii")
    width = len(head) + nhex
    out = np.empty((n, width), dtype=np.uint8)
    out[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    out[:, len(head) :] = _HEX_PAIRS[be].view(np.uint8).reshape(n, 32)[:, :nhex]
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out.tobytes())])
