"""Client files -> streams of record batches, with every row accounted for.

Works on any ``pyarrow.fs.FileSystem`` (``LocalFileSystem`` in tests, ``S3FileSystem`` in production) and
never holds a whole file: text is decoded and parsed in blocks, Parquet read by ``iter_batches``.

What a *row* is. ``RawBatch.rows`` holds each record's 1-based index in its file: for CSV the data
records after the header (a quoted field may span several physical lines and still be one record; blank
lines are not records), for JSONL the non-blank lines, for Parquet the rows. Rows the reader cannot parse
(a CSV line with the wrong number of fields, a broken JSONL line) keep their index and go to
``RawBatch.rejected``, whose reason names the physical line (1-based, counting the header and every line
break, also those inside quoted fields).

Encodings. A UTF-8 BOM is stripped; a UTF-16/UTF-32 BOM (or BOM-less UTF-16 text, recognised by its NUL
bytes) means the file is transcoded to UTF-8 in streaming chunks. Other files are read as UTF-8, strictly:
a byte sequence that is not UTF-8 is decoded as Windows-1252 (a superset of the printable Latin-1), and
counted in ``RawBatch.decode_fallbacks``. When the first 64 KiB are not UTF-8 and hold no multi-byte UTF-8
sequence at all, the whole file is read as Windows-1252. ``RawBatch.encoding`` says which.

Types. CSV and JSONL columns are all strings, so nothing is coerced: a CSV value is exactly its text; a JSON
string is itself, a number is its value rendered by Arrow (``1.50`` -> ``"1.5"``), a boolean ``"true"`` /
``"false"``, an object or array its compact JSON, null stays null. For JSONL, ``RawBatch.raw_records``
also keeps each line verbatim (trimmed), the client's original record. Parquet keeps its types.

Files that break. A file that cannot be opened (a corrupt Parquet footer, a duplicate column name) is
quarantined as a file: one ``rejected`` row with ``source_row`` -1. A file that breaks part-way (a
truncated gzip, a corrupt Parquet page, a CSV record over 256 MiB) keeps the records read before the
break, and gets the same file-level row, whose reason names the error and the last record read. After a
broken compressed stream the last record before the break is also quarantined, as it may be cut short.
Either way ``rows_read = accepted + quarantined + duplicates`` holds: only records actually read count.
An empty file (0 bytes, or a header only) is one empty batch, not an error.
"""

from __future__ import annotations

import atexit
import codecs
import csv
import io
import json
import re
import weakref
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.fs as pafs
import pyarrow.json as pj
import pyarrow.parquet as pq

from flows.core.arrays import string_buffers
from flows.core.models import SourceFormat
from flows.core.schemas import QUARANTINE

#: Rows of a batch. Canonicalise of 2.5M Parquet rows on S3, 3 A/B pairs: 3.73-4.25 s with 65,536, 3.35-3.52 s
#: with 131,072 (CSV the same either way); 262,144 was slower for both (4.0-4.7 s).
DEFAULT_BATCH_ROWS = 131_072
#: Largest CSV record or JSONL line; a bigger one is a file error (a runaway quoted field, most likely).
MAX_RECORD_BYTES = 256 << 20
_READ_BYTES = 1 << 20
_CSV_BLOCK = 1 << 20  # pyarrow holds many times a block while parsing it: keep blocks small
_MAX_JSONL_CHUNK = 32 << 20
_SNIFF_BYTES = 64 << 10
_FILE_ROW = -1

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
# Windows-1252 leaves five bytes undefined; they decode to the Latin-1 control character of the same
# number (as browsers do), so decoding never fails.
_CP1252 = {b: bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(0x80, 0xA0)}


@dataclass(frozen=True)
class RawBatch:
    """Rows of one source file as read, before any mapping.

    Attributes:
        source_object: The file, as named to :func:`iter_batches`.
        table: Source columns in file order: strings for CSV/JSONL, Parquet's own types.
        rows: 1-based record index in the file of each row of ``table`` (int64).
        rejected: Rows the reader could not parse, and the file-level row of a broken file
            (:data:`flows.core.schemas.QUARANTINE`).
        encoding: Text encoding used (None for Parquet).
        raw_records: JSONL only: each row's line, verbatim but trimmed.
        decode_fallbacks: Byte sequences of a UTF-8 file that were not UTF-8 and were read as Windows-1252.
        last: The last batch of its file: the per-file fields below are final.
        file_error: Why the file was quarantined or broke off, if it did.
    """

    source_object: str
    table: pa.Table
    rows: np.ndarray
    rejected: pa.Table
    encoding: str | None = None
    raw_records: pa.Array | None = None
    decode_fallbacks: int = 0
    last: bool = False
    file_error: str | None = None

    @property
    def records(self) -> int:
        """Records read in this batch: parsed rows plus record-level rejects."""
        return self.table.num_rows + int(np.count_nonzero(self.rejected["source_row"].to_numpy() != _FILE_ROW))

    @property
    def first_row(self) -> int | None:
        return int(self.rows[0]) if len(self.rows) else None


def iter_batches(
    fs: pafs.FileSystem,
    path: str,
    fmt: SourceFormat,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    *,
    name: str | None = None,
) -> Generator[RawBatch, None, None]:
    """Stream one file as :class:`RawBatch` es of about ``batch_rows`` rows; never raises for bad data.

    Args:
        fs: Where the file lives.
        path: Path in ``fs`` (``bucket/key`` for S3). A ``.gz`` (or ``.bz2``, ``.zst``) suffix means the
            file is compressed.
        fmt: csv, jsonl or parquet.
        batch_rows: Most rows per batch (a batch may hold fewer: CSV is parsed in 1 MiB blocks,
            gathered up to this size).
        name: How to name the file in the output (default ``path``), e.g. its ``s3://`` URI.

    Returns:
        Batches in file order; exactly one has ``last=True``, the final one, even for an empty file.
    """
    source = name or path
    pieces = _pieces(fs, path, SourceFormat(fmt), batch_rows)
    held: _Piece | None = None
    try:
        for piece in pieces:
            for part in piece.split(batch_rows):
                if held is not None:
                    yield held.batch(source, last=False)
                held = part
    finally:
        pieces.close()
    yield (held or _Piece(pa.table({}), np.zeros(0, np.int64))).batch(source, last=True)


def iter_files(
    fs: pafs.FileSystem,
    paths: Iterable[str],
    fmt: SourceFormat,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    *,
    prefix: str = "",
) -> Generator[RawBatch, None, None]:
    """:func:`iter_batches` over several files, one after the other, each named ``prefix + path``
    (``prefix="s3://"`` turns an S3FileSystem path ``bucket/key`` into its URI)."""
    for path in paths:
        yield from iter_batches(fs, path, fmt, batch_rows, name=prefix + path)


def detect_encoding(head: bytes) -> tuple[str, int]:
    """(codec, BOM length) of a text file from its first bytes; see the module docstring."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return ("utf-8" if codec == "utf-8-sig" else codec), len(bom)
    sample = head[: 4096 - 4096 % 2]
    half = len(sample) // 2
    if half >= 4:
        even_nul, odd_nul = sample[0::2].count(0), sample[1::2].count(0)
        if odd_nul > 0.4 * half and even_nul < 0.05 * half:
            return "utf-16-le", 0
        if even_nul > 0.4 * half and odd_nul < 0.05 * half:
            return "utf-16-be", 0
    sniff = head[:_SNIFF_BYTES]
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sniff, final=False)
    except UnicodeDecodeError:
        return ("utf-8" if _UTF8_MULTIBYTE.search(sniff) else "cp1252"), 0
    return "utf-8", 0


# --- Decoding: any supported file -> UTF-8 chunks that end at a line end ------------------------------


def _cp1252_to_utf8(data: bytes | memoryview) -> bytes:
    return bytes(data).decode("latin-1").translate(_CP1252).encode("utf-8")


def _is_utf8(data: bytes) -> bool:
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    arr = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _utf8_with_fallback(data: bytes) -> tuple[bytes, int]:
    """``data`` as valid UTF-8: sequences that are not UTF-8 are read as Windows-1252."""
    if _is_utf8(data):
        return data, 0
    view = memoryview(data)
    out: list[str] = []
    pos, bad = 0, 0
    while pos < len(data):
        try:
            text, used = codecs.utf_8_decode(view[pos:], "strict", True)
        except UnicodeDecodeError as e:
            out.append(codecs.utf_8_decode(view[pos : pos + e.start], "strict", True)[0])
            out.append(_cp1252_to_utf8(view[pos + e.start : pos + e.end]).decode("utf-8"))
            pos += e.end
            bad += 1
        else:
            out.append(text)
            pos += used
    return "".join(out).encode("utf-8"), bad


class _Decoded:
    """A file's bytes as UTF-8 chunks ending at a line end. A read error ends the stream: see ``error``."""

    def __init__(self, stream: _Stream, *, cr_ends_lines: bool = False) -> None:
        self._stream = stream
        self._cr = cr_ends_lines
        self.encoding = "utf-8"
        self.fallbacks = 0
        self.error: str | None = None
        self.bytes_in = 0

    def _cut(self, data: bytes) -> int:
        """Where the last complete line of ``data`` ends (0: no line end yet)."""
        end = data.rfind(b"\n")
        if self._cr:  # CSV also ends lines with a lone CR (old Mac files)
            end = max(end, data.rfind(b"\r"))
        return end + 1

    def _read(self) -> bytes | None:
        try:
            raw = self._stream.read(_READ_BYTES)
        except (OSError, pa.ArrowException, EOFError) as e:
            self.error = f"the file breaks off after {self.bytes_in:,} bytes: {e}"
            return None
        self.bytes_in += len(raw)
        return raw

    def chunks(self) -> Iterator[bytes]:
        raw = self._read()
        if not raw:
            return
        codec, bom = detect_encoding(raw)
        self.encoding = codec
        raw = raw[bom:]
        yield from (self._by_bytes(raw) if codec in ("utf-8", "cp1252") else self._by_text(raw, codec))

    def _by_bytes(self, raw: bytes) -> Iterator[bytes]:
        # Single-byte-safe codecs: a b"\n" byte is always a line end, so raw bytes are cut there.
        convert: Callable[[bytes], bytes]
        if self.encoding == "cp1252":
            convert = _cp1252_to_utf8
        else:

            def convert(data: bytes) -> bytes:
                text, bad = _utf8_with_fallback(data)
                self.fallbacks += bad
                return text

        pending: list[bytes] = []
        held = 0
        chunk: bytes | None = raw
        while chunk:
            cut = self._cut(chunk)
            if cut:
                yield convert(b"".join([*pending, chunk[:cut]]))
                pending, held = [chunk[cut:]], len(chunk) - cut
            else:
                pending.append(chunk)
                held += len(chunk)
            if held > MAX_RECORD_BYTES:
                self.error = f"a line is longer than {MAX_RECORD_BYTES >> 20} MiB"
                return
            chunk = self._read()
        if self.error is None:
            tail = b"".join(pending)
            if tail:
                yield convert(tail + b"\n")

    def _by_text(self, raw: bytes, codec: str) -> Iterator[bytes]:
        # Multi-byte codecs: decode first (the decoder carries split characters over), then cut lines.
        decoder = codecs.getincrementaldecoder(codec)("strict")
        pending: list[bytes] = []
        held = 0
        chunk: bytes | None = raw
        while chunk is not None:
            try:
                text = decoder.decode(chunk, final=not chunk).encode("utf-8")
            except UnicodeDecodeError as e:
                self.error = f"not valid {codec} near byte {self.bytes_in:,}: {e.reason}"
                return
            cut = self._cut(text)
            if cut:
                yield b"".join([*pending, text[:cut]])
                pending, held = [text[cut:]], len(text) - cut
            else:
                pending.append(text)
                held += len(text)
            if held > MAX_RECORD_BYTES:
                self.error = f"a line is longer than {MAX_RECORD_BYTES >> 20} MiB"
                return
            if not chunk:
                break
            chunk = self._read()
        tail = b"".join(pending)
        if self.error is None and tail:
            yield tail + b"\n"


class _ChunkFile(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, for pyarrow's CSV reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self.aborted = False

    def readable(self) -> bool:
        return True

    def abort(self) -> None:
        """End the file here: later reads return nothing."""
        self.aborted = True

    def readinto(self, b: Any) -> int:
        # Fill the whole request: pyarrow takes each read as a block, so short reads mean tiny batches.
        filled = 0
        while filled < len(b) and not self.aborted:
            if not self._buf:
                nxt = next(self._chunks, None)
                if nxt is None:
                    break
                self._buf = memoryview(nxt)
            n = min(len(b) - filled, len(self._buf))
            b[filled : filled + n] = self._buf[:n]
            self._buf = self._buf[n:]
            filled += n
        return filled


# --- Pieces: what a format reader yields before it is stamped with the file's name ---------------------


@dataclass
class _Piece:
    table: pa.Table
    rows: np.ndarray
    rejects: list[tuple[int, str, str | None]] = field(default_factory=list)  # (row, reason, record)
    raw_records: pa.Array | None = None
    encoding: str | None = None
    fallbacks: int = 0
    file_error: str | None = None

    def split(self, rows: int) -> Iterator[_Piece]:
        """Slices of at most ``rows`` rows (zero-copy); the rejects and file facts ride on the last one."""
        n = self.table.num_rows
        for start in range(0, n - rows, rows):
            yield _Piece(
                self.table.slice(start, rows),
                self.rows[start : start + rows],
                raw_records=None if self.raw_records is None else self.raw_records.slice(start, rows),
                encoding=self.encoding,
                fallbacks=self.fallbacks,
            )
        tail = (n - 1) // rows * rows if n else 0
        yield _Piece(
            self.table.slice(tail),
            self.rows[tail:],
            self.rejects,
            None if self.raw_records is None else self.raw_records.slice(tail),
            self.encoding,
            self.fallbacks,
            self.file_error,
        )

    def batch(self, source: str, *, last: bool) -> RawBatch:
        return RawBatch(
            source_object=source,
            table=self.table,
            rows=self.rows,
            rejected=_quarantine(source, self.rejects, self.file_error),
            encoding=self.encoding,
            raw_records=self.raw_records,
            decode_fallbacks=self.fallbacks,
            last=last,
            file_error=self.file_error,
        )


def _quarantine(source: str, rejects: list[tuple[int, str, str | None]], file_error: str | None) -> pa.Table:
    rows = [r for r, _, _ in rejects]
    reasons = [why for _, why, _ in rejects]
    records = [rec for _, _, rec in rejects]
    if file_error is not None:
        rows.append(_FILE_ROW)
        reasons.append(f"file {source}: {file_error}")
        records.append(None)
    return pa.table(
        {
            "source_object": pa.array([source] * len(rows), pa.string()),
            "source_row": pa.array(rows, pa.int64()),
            "field": pa.nulls(len(rows), pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "record": pa.array(records, pa.string()),
        },
        schema=QUARANTINE,
    )


def _pieces(fs: pafs.FileSystem, path: str, fmt: SourceFormat, batch_rows: int) -> Generator[_Piece, None, None]:
    if fmt == SourceFormat.PARQUET:
        return _parquet_pieces(fs, path, batch_rows)
    if fmt == SourceFormat.CSV:
        return _csv_pieces(fs, path, batch_rows)
    return _jsonl_pieces(fs, path, batch_rows)


def _file_failure(error: str, *, encoding: str | None = None) -> _Piece:
    return _Piece(pa.table({}), np.zeros(0, np.int64), encoding=encoding, file_error=error)


class _Stream(Protocol):
    def read(self, nbytes: int) -> bytes: ...

    def close(self) -> None: ...


class _Gunzip:
    """gzip decompression that keeps every byte before a break (pyarrow drops the last read's worth).

    Concatenated gzip members are read one after the other, as ``gzip`` does.
    """

    def __init__(self, raw: pa.NativeFile) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(wbits=31)
        self._buf = b""
        self._raw_eof = False
        self.compressed_in = 0

    def _fill(self) -> None:
        if not self._buf and not self._raw_eof:
            self._buf = self._raw.read(_READ_BYTES)
            self.compressed_in += len(self._buf)
            self._raw_eof = not self._buf

    def read(self, nbytes: int) -> bytes:
        while True:
            if self._z.eof:
                self._buf = self._z.unused_data + self._buf
                self._fill()
                if not self._buf.strip(b"\0") and self._raw_eof:
                    return b""  # clean end (zero padding after the last member is allowed)
                self._z = zlib.decompressobj(wbits=31)
            if self._z.unconsumed_tail:
                data = self._z.unconsumed_tail
            else:
                self._fill()
                if not self._buf:
                    if self.compressed_in == 0:
                        return b""  # an empty file
                    raise EOFError(f"the gzip stream is truncated after {self.compressed_in:,} compressed bytes")
                data, self._buf = self._buf, b""
            try:
                out = self._z.decompress(data, nbytes)
            except zlib.error as e:
                raise OSError(f"corrupt gzip data near compressed byte {self.compressed_in:,}: {e}") from None
            if out:
                return out

    def close(self) -> None:
        self._raw.close()


def _open_text(fs: pafs.FileSystem, path: str) -> _Stream:
    if path.endswith(".gz"):
        return _Gunzip(fs.open_input_stream(path, compression=None))
    return fs.open_input_stream(path, compression="detect")


def _duplicate_names(names: list[str]) -> list[str]:
    seen: set[str] = set()
    dup = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    return sorted(set(dup))


def _broken_tail(piece: _Piece, error: str) -> None:
    """After a broken stream, the last record read may be cut short: move it to the rejects."""
    last_reject = max((r for r, _, _ in piece.rejects), default=0)
    if piece.table.num_rows and int(piece.rows[-1]) > last_reject:
        record = json.dumps(
            {n: piece.table.column(i)[-1].as_py() for i, n in enumerate(piece.table.column_names)},
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )
        if piece.raw_records is not None:
            record = piece.raw_records[-1].as_py()
            piece.raw_records = piece.raw_records.slice(0, len(piece.raw_records) - 1)
        piece.rejects.append((int(piece.rows[-1]), f"last record before the break ({error}); may be cut short", record))
        piece.table = piece.table.slice(0, piece.table.num_rows - 1)
        piece.rows = piece.rows[:-1]


# --- Parquet ----------------------------------------------------------------------------------------


def _parquet_pieces(fs: pafs.FileSystem, path: str, batch_rows: int) -> Generator[_Piece, None, None]:
    if path.endswith((".gz", ".bz2", ".zst")):
        yield _file_failure("a compressed Parquet file is not supported (Parquet compresses its own pages)")
        return
    try:
        handle = fs.open_input_file(path)
    except (OSError, pa.ArrowException) as e:
        yield _file_failure(f"cannot open: {e}")
        return
    try:
        if handle.size() == 0:
            return
        try:
            pfile = pq.ParquetFile(handle)
        except (OSError, pa.ArrowException) as e:
            yield _file_failure(f"not a readable Parquet file: {e}")
            return
        dup = _duplicate_names(pfile.schema_arrow.names)
        if dup:
            yield _file_failure(f"duplicate column name(s) {dup}")
            return
        done = 0
        batches = pfile.iter_batches(batch_size=batch_rows)
        while True:
            try:
                rb = next(batches, None)
            except (OSError, pa.ArrowException) as e:
                yield _file_failure(f"unreadable after row {done:,}: {e}")
                return
            if rb is None:
                return
            rows = np.arange(done + 1, done + rb.num_rows + 1, dtype=np.int64)
            done += rb.num_rows
            yield _Piece(pa.Table.from_batches([rb]), rows)
    finally:
        handle.close()


# --- CSV --------------------------------------------------------------------------------------------


def _merge(pieces: list[_Piece]) -> _Piece:
    if len(pieces) == 1:
        return pieces[0]
    return _Piece(
        pa.concat_tables([p.table for p in pieces]),
        np.concatenate([p.rows for p in pieces]),
        [r for p in pieces for r in p.rejects],
        encoding=pieces[-1].encoding,
    )


def _csv_pieces(fs: pafs.FileSystem, path: str, batch_rows: int) -> Generator[_Piece, None, None]:
    delivered = 0
    floor = _CSV_BLOCK
    while True:
        reader = _CsvReader(fs, path, batch_rows, floor, skip=delivered)
        try:
            for piece in reader.pieces():
                delivered = max(delivered, int(piece.rows[-1]) if len(piece.rows) else 0)
                delivered = max([delivered, *(r for r, _, _ in piece.rejects)])
                yield piece
            return
        except pa.ArrowInvalid as e:
            if "straddl" in str(e) and reader.block_size < MAX_RECORD_BYTES:
                # One record is larger than a block: read again with bigger blocks, skipping what was given.
                floor = min(reader.block_size * 8, MAX_RECORD_BYTES)
                continue
            yield _file_failure(f"CSV unreadable after record {delivered:,}: {e}", encoding=reader.encoding)
            return
        finally:
            reader.close()


class _CsvReader:
    """One pass over a CSV file; records with index <= ``skip`` were already delivered and are dropped.

    pyarrow parses; this class keeps the books. Every column is read as text with generated names and the
    header taken from the first row, so names are exactly as pyarrow parsed them. With
    ``ignore_empty_lines=False`` and one thread, pyarrow numbers every row (header, blank lines and
    rejected rows included), which places rejected rows exactly among the parsed ones.
    """

    def __init__(self, fs: pafs.FileSystem, path: str, batch_rows: int, floor: int, *, skip: int) -> None:
        self._fs, self._path, self._batch_rows, self._floor, self._skip = fs, path, batch_rows, floor, skip
        self._stream: _Stream | None = None
        self._file: _ChunkFile | None = None
        self._reader: pv.CSVStreamingReader | None = None
        self._decoded: _Decoded | None = None
        self.block_size = floor
        self.encoding: str | None = None
        # Rejects reported by pyarrow and not yet placed: (pyarrow row number, expected, actual, text).
        self._rejects: list[tuple[int, int, int, str]] = []

    def close(self) -> None:
        """Stop reading and free the pyarrow reader now, never at interpreter exit.

        pyarrow reads ahead from the Python file on its IO thread, which needs the GIL: closing a
        reader in mid-file from Python would deadlock, so the file is ended first and the reader run
        to its (now near) end. A reader left to the garbage collector at exit aborts the process.
        """
        reader, self._reader = self._reader, None
        if reader is not None:
            if self._file is not None:
                self._file.abort()
            try:
                for _ in reader:
                    pass
            except (pa.ArrowException, OSError):
                pass
            reader.close()
            del reader
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        _LIVE_READERS.discard(self)

    def _on_invalid(self, row: Any) -> str:
        self._rejects.append((int(row.number), int(row.expected_columns), int(row.actual_columns), str(row.text)))
        return "skip"

    def pieces(self) -> Iterator[_Piece]:
        try:
            self._stream = _open_text(self._fs, self._path)
        except (OSError, pa.ArrowException) as e:
            yield _file_failure(f"cannot open: {e}")
            return
        self._decoded = decoded = _Decoded(self._stream, cr_ends_lines=True)
        chunks = decoded.chunks()
        first = next(chunks, b"")
        self.encoding = decoded.encoding
        if not first:
            if decoded.error:
                yield _file_failure(decoded.error, encoding=decoded.encoding)
            return
        self.block_size = self._floor
        self._file = _ChunkFile(_chain(first, chunks))
        _track(self)
        self._reader = pv.open_csv(
            self._file,
            read_options=pv.ReadOptions(use_threads=False, block_size=self.block_size, autogenerate_column_names=True),
            parse_options=pv.ParseOptions(
                newlines_in_values=True, ignore_empty_lines=False, invalid_row_handler=self._on_invalid
            ),
            convert_options=pv.ConvertOptions(
                column_types={f"f{i}": pa.string() for i in range(max(2 * _header_width(first), 1024))},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=False,  # _Decoded already made the text valid UTF-8
            ),
        )
        yield from self._parse(self._reader, decoded)

    def _parse(self, reader: pv.CSVStreamingReader, decoded: _Decoded) -> Iterator[_Piece]:
        names: list[str] | None = None
        seen_rows = 0  # pyarrow rows (header, blanks, parsed) delivered so far, rejects not included
        placed = 0  # rejects placed so far (and dropped from self._rejects)
        records = 0  # records so far (parsed non-blank rows + rejects)
        breaks = 0  # line breaks inside the values of every row placed so far
        piece: _Piece | None = None
        group: list[_Piece] = []
        group_rows = 0
        for rb in reader:
            cols = [rb.column(i) for i in range(rb.num_columns)]
            n = rb.num_rows
            numbers = _row_numbers(seen_rows, n, self._rejects, placed)
            seen_rows += n
            start = 0
            if names is None:
                names = [str(c[0].as_py()) for c in cols]
                dup = _duplicate_names(names)
                if dup:
                    yield _file_failure(f"duplicate column name(s) {dup}", encoding=decoded.encoding)
                    return
                start = 1
            # Rejects numbered before this block's last row belong here (they are in order); later ones wait.
            upto = int(numbers[-1]) if n else 0
            k = 0
            while k < len(self._rejects) and self._rejects[k][0] < upto:
                k += 1
            mine, self._rejects = self._rejects[:k], self._rejects[k:]
            placed += k
            keep = ~_blank_rows(cols)
            keep[:start] = False
            # Record index of every parsed row and reject, merged by pyarrow row number.
            rec_numbers = numbers[keep]
            rej_numbers = np.array([r[0] for r in mine], dtype=np.int64)
            order = np.argsort(np.concatenate([rec_numbers, rej_numbers]), kind="stable")
            index = np.empty(len(order), dtype=np.int64)
            index[order] = np.arange(records + 1, records + len(order) + 1)
            records += len(order)
            row_index, rej_index = index[: len(rec_numbers)], index[len(rec_numbers) :]
            rejects: list[tuple[int, str, str | None]] = []
            if mine:
                # A reject's line: its row number plus every line break inside the rows before it.
                row_cum = np.concatenate([[0], np.cumsum(_line_breaks_per_row(cols))])
                rej_breaks = np.array([_count_breaks(t) for _, _, _, t in mine], dtype=np.int64)
                rej_cum = np.concatenate([[0], np.cumsum(rej_breaks)])
                rows_before = np.searchsorted(numbers, rej_numbers)
                lines = rej_numbers + breaks + row_cum[rows_before] + rej_cum[:-1]
                for (_, expected, actual, text), idx, line in zip(mine, rej_index, lines, strict=True):
                    if idx > self._skip:
                        rejects.append((int(idx), f"line {line}: expected {expected} fields, found {actual}", text))
                breaks += int(row_cum[-1] + rej_cum[-1])
            else:
                breaks += _total_breaks(cols)
            fresh = row_index > self._skip
            take = np.flatnonzero(keep)[fresh]
            table = pa.Table.from_arrays(cols, names=names)
            if len(take) and int(take[-1]) - int(take[0]) + 1 == len(take):
                table = table.slice(int(take[0]), len(take))  # the usual case: all but the header
            else:
                table = table.take(pa.array(take, pa.int64()))
            if not rejects and table.num_rows == 0:
                continue
            # pyarrow's blocks are kept small (its parser holds many times a block in memory); they are
            # gathered into batches of about batch_rows, one held back for the file's last facts.
            if group and group_rows + table.num_rows > self._batch_rows:
                if piece is not None:
                    yield piece
                piece, group, group_rows = _merge(group), [], 0
            group.append(_Piece(table, row_index[fresh], rejects, encoding=decoded.encoding))
            group_rows += table.num_rows
        if group:
            if piece is not None:
                yield piece
            piece = _merge(group)
        # Rejects after the last parsed row.
        tail: list[tuple[int, str, str | None]] = []
        for num, expected, actual, text in self._rejects:
            records += 1
            if records > self._skip:
                tail.append((records, f"line {num + breaks}: expected {expected} fields, found {actual}", text))
            breaks += _count_breaks(text)
        self._rejects = []
        empty = pa.table({n: pa.array([], pa.string()) for n in names or []})
        if piece is None:
            piece = _Piece(empty, np.zeros(0, np.int64))
        piece.rejects.extend(tail)
        piece.encoding = decoded.encoding
        piece.fallbacks = decoded.fallbacks
        if decoded.error is not None:
            _broken_tail(piece, decoded.error)
            piece.file_error = f"{decoded.error} (after record {records:,})"
        yield piece


_LIVE_READERS: weakref.WeakSet[_CsvReader] = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []


def _track(reader: _CsvReader) -> None:
    """Close readers still open at exit (an abandoned generator) while the interpreter is whole."""
    _LIVE_READERS.add(reader)
    if not _EXIT_HOOK:
        atexit.register(_close_live_readers)
        _EXIT_HOOK.append(True)


def _close_live_readers() -> None:
    for reader in list(_LIVE_READERS):
        reader.close()


def _header_width(first: bytes) -> int:
    """Fields in the header (the first record), to type every generated column name as text."""
    try:
        return len(next(csv.reader(io.StringIO(first.decode("utf-8"), newline="")), []))
    except csv.Error:  # e.g. a header field over the csv module's 131,072-character limit
        return first.split(b"\n", 1)[0].count(b",") + 1


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _row_numbers(seen: int, n: int, pending: list[tuple[int, int, int, str]], placed: int) -> np.ndarray:
    """pyarrow row numbers of the next ``n`` parsed rows: the numbers rejected rows did not take.

    ``placed`` rejects all come before these rows; ``pending`` ones (in order) may come among them.
    """
    k = np.arange(seen + 1, seen + n + 1, dtype=np.int64)
    if not pending:
        return k + placed
    taken = np.array([r[0] for r in pending], dtype=np.int64)
    # The k-th free number is k + #{j : taken[j] - j <= k}, over all rejects (0-based j, in order);
    # every placed reject counts.
    shifted = taken - np.arange(placed, placed + len(taken), dtype=np.int64)
    return k + placed + np.searchsorted(shifted, k, side="right")


def _break_positions(data: np.ndarray) -> np.ndarray:
    """Byte positions that end a line: LF, and CR not followed by LF."""
    lf = data == 10
    cr = data == 13
    cr[:-1] &= ~lf[1:]
    return np.flatnonzero(lf | cr)


def _line_breaks_per_row(cols: list[pa.Array]) -> np.ndarray:
    n = len(cols[0]) if cols else 0
    out = np.zeros(n, dtype=np.int64)
    for col in cols:
        offs, data = string_buffers(col)
        pos = _break_positions(data)
        if len(pos):
            out += np.bincount(np.searchsorted(offs, pos, side="right") - 1, minlength=n)[:n]
    return out


def _total_breaks(cols: list[pa.Array]) -> int:
    total = 0
    for col in cols:
        data = string_buffers(col)[1]
        if np.count_nonzero(data == 13):
            total += len(_break_positions(data))
        else:
            total += int(np.count_nonzero(data == 10))
    return total


def _count_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _blank_rows(cols: list[pa.Array]) -> np.ndarray:
    """Rows whose every field is empty: a blank line (or a line of bare delimiters) is not a record."""
    n = len(cols[0]) if cols else 0
    blank = np.ones(n, dtype=bool)
    for col in cols:
        offs, _ = string_buffers(col)
        blank &= np.diff(offs) == 0
    return blank


# --- JSONL ------------------------------------------------------------------------------------------


def _jsonl_pieces(fs: pafs.FileSystem, path: str, batch_rows: int) -> Generator[_Piece, None, None]:
    try:
        stream = _open_text(fs, path)
    except (OSError, pa.ArrowException) as e:
        yield _file_failure(f"cannot open: {e}")
        return
    try:
        decoded = _Decoded(stream)
        lines_before = 0
        records = 0
        buf: list[bytes] = []
        buf_lines = 0
        buf_bytes = 0
        piece: _Piece | None = None
        for chunk in decoded.chunks():
            buf.append(chunk)
            buf_lines += chunk.count(b"\n")
            buf_bytes += len(chunk)
            if buf_lines < batch_rows and buf_bytes < _MAX_JSONL_CHUNK:
                continue
            made = _jsonl_piece(b"".join(buf), lines_before, records)
            lines_before += buf_lines
            records += len(made.rows) + len(made.rejects)
            buf, buf_lines, buf_bytes = [], 0, 0
            if piece is not None:
                yield piece
            piece = made
        if buf:
            made = _jsonl_piece(b"".join(buf), lines_before, records)
            records += len(made.rows) + len(made.rejects)
            if piece is not None:
                yield piece
            piece = made
        if piece is None:
            piece = _Piece(pa.table({}), np.zeros(0, np.int64))
        piece.encoding = decoded.encoding
        piece.fallbacks = decoded.fallbacks
        if decoded.error is not None:
            _broken_tail(piece, decoded.error)
            piece.file_error = f"{decoded.error} (after record {records:,})"
        yield piece
    finally:
        stream.close()


def _jsonl_piece(chunk: bytes, lines_before: int, records_before: int) -> _Piece:
    """Parse complete lines: all at once with pyarrow, or line by line when that fails."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    offsets = np.concatenate([[0], ends + 1]).astype(np.int64)
    lines = pa.Array.from_buffers(
        pa.large_string(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(chunk)]
    ).cast(pa.string())
    lines = pc.utf8_trim(lines, " \t\r\n")
    nonblank = np.flatnonzero(pc.utf8_length(lines).to_numpy() > 0)
    line_no = lines_before + 1 + nonblank
    rows = np.arange(records_before + 1, records_before + len(nonblank) + 1, dtype=np.int64)
    kept = lines.take(pa.array(nonblank))
    table = _jsonl_fast(chunk, len(nonblank))
    if table is not None:
        return _Piece(table, rows, raw_records=kept)
    return _jsonl_slow(kept, rows, line_no)


def _jsonl_fast(chunk: bytes, expected_rows: int) -> pa.Table | None:
    try:
        table = pj.read_json(
            io.BytesIO(chunk),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(chunk) + 1),
            parse_options=pj.ParseOptions(newlines_in_values=False),
        )
    except (pa.ArrowException, UnicodeDecodeError, ValueError):
        return None
    if table.num_rows != expected_rows:
        return None  # a line held more (or less) than one object
    names = table.column_names
    temporal = [f.name for f in table.schema if pa.types.is_temporal(f.type)]
    if temporal:
        # pyarrow infers timestamps from ISO-looking strings; read those columns again as the strings they are.
        schema = pa.schema([pa.field(n, pa.string()) for n in temporal])
        try:
            table = pj.read_json(
                io.BytesIO(chunk),
                read_options=pj.ReadOptions(use_threads=False, block_size=len(chunk) + 1),
                parse_options=pj.ParseOptions(
                    newlines_in_values=False, explicit_schema=schema, unexpected_field_behavior="infer"
                ),
            )
        except (pa.ArrowException, UnicodeDecodeError, ValueError):
            return None
        table = table.select(names)
    cols = []
    for col in table.columns:
        t = col.type
        if pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
            return None  # nested values are rendered from the line itself, exactly
        cols.append(pc.cast(col, pa.string()))
    return pa.Table.from_arrays(cols, names=table.column_names)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        dup = sorted({k for k, _ in pairs if sum(1 for kk, _ in pairs if kk == k) > 1})
        raise ValueError(f"duplicate key(s) {dup}")
    return out


def render_json_value(value: Any) -> str | None:
    """A parsed JSON value as the text Kazi keeps for it (see the module docstring)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(pa.scalar(value, pa.float64()).cast(pa.string()).as_py())
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _jsonl_slow(lines: pa.Array, rows: np.ndarray, line_no: np.ndarray) -> _Piece:
    columns: dict[str, list[str | None]] = {}
    good: list[int] = []
    rejects: list[tuple[int, str, str | None]] = []
    for i, text in enumerate(lines.to_pylist()):
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, RecursionError) as e:
            rejects.append((int(rows[i]), f"line {int(line_no[i])}: invalid JSON: {e}", text))
            continue
        if not isinstance(obj, dict):
            what = type(obj).__name__.replace("NoneType", "null")
            rejects.append(
                (int(rows[i]), f"line {int(line_no[i])}: one JSON object per line expected, found {what}", text)
            )
            continue
        k = len(good)
        for key, value in obj.items():
            columns.setdefault(key, [None] * k).append(render_json_value(value))
        good.append(i)
        for values in columns.values():
            if len(values) <= k:
                values.append(None)
    keep = pa.array(good, pa.int64())
    table = pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})
    return _Piece(table, rows[good], rejects, raw_records=lines.take(keep))
