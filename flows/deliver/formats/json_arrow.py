"""JSON text from Arrow columns and back, without a Python loop per row on the common path.

Writers splice JSON documents together from per-row Arrow string columns: :func:`json_quote` and
:func:`json_number` turn values into JSON literals, :func:`join_skip` glues fragments (skipping absent
ones), :func:`json_lists` groups per-element JSON into per-row arrays, and :func:`concat_lines` /
:func:`join_bytes` produce the final bytes. :func:`objects_to_struct` goes the other way, from JSON-object
texts to a typed Arrow struct column.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from flows.core.arrays import combine

Part: TypeAlias = "pa.Array | pa.ChunkedArray | str"

_CONTROL = r"[\x00-\x1f]"
_OBJECT = r"^\s*\{"
_LINE_BREAK = r"[\r\n]"
_MIN_BLOCK = 1 << 20


def lit(text: str) -> pa.Scalar:
    """A literal string usable next to :func:`large` arrays in compute kernels."""
    return pa.scalar(text, pa.large_string())


def large(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous ``large_string`` array (64-bit offsets: a delivery can exceed 2 GiB of text)."""
    arr = combine(values)
    return arr if arr.type == pa.large_string() else pc.cast(arr, pa.large_string())


def json_quote(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each string as a JSON string literal (``null`` for nulls), exactly as ``json.dumps(ensure_ascii=False)``."""
    s = large(values)
    esc = pc.replace_substring(s, "\\", "\\\\")
    esc = pc.replace_substring(esc, '"', '\\"')
    has_control = pc.fill_null(pc.match_substring_regex(s, _CONTROL), False)
    if pc.any(has_control).as_py():
        # Rare (a newline or tab in an id or a text): let the json module write \n, \u0001 and friends.
        rows = s.filter(has_control).to_pylist()
        fixed = pa.array([json.dumps(v, ensure_ascii=False)[1:-1] for v in rows], pa.large_string())
        esc = pc.replace_with_mask(esc, has_control, fixed)
    quoted = pc.binary_join_element_wise(lit('"'), esc, lit('"'), lit(""))
    return pc.fill_null(quoted, lit("null"))


def json_number(values: pa.Array | pa.ChunkedArray | np.ndarray) -> pa.Array:
    """Numbers as JSON number literals; null, NaN and infinities become ``null`` (JSON has no NaN)."""
    arr = pa.array(values) if isinstance(values, np.ndarray) else combine(values)
    if pa.types.is_floating(arr.type):
        finite = pc.fill_null(pc.is_finite(arr), False)
        arr = pc.if_else(finite, arr, pa.scalar(None, arr.type))
    return pc.fill_null(pc.cast(arr, pa.large_string()), lit("null"))


def json_raw(values: pa.Array | pa.ChunkedArray, what: str) -> pa.Array:
    """JSON object texts ready to splice into one line: nulls become ``null``; rejects non-objects.

    A raw line break can only be whitespace between JSON tokens (inside a JSON string it must be
    escaped), so replacing it with a space keeps the value and keeps one record per line.
    """
    s = large(values)
    bad = pc.invert(pc.fill_null(pc.match_substring_regex(s, _OBJECT), True))
    if pc.any(bad).as_py():
        raise ValueError(f"{what}: {pc.sum(bad).as_py()} value(s) are not JSON objects")
    if pc.any(pc.match_substring_regex(s, _LINE_BREAK)).as_py():
        s = pc.replace_substring_regex(s, _LINE_BREAK, " ")
    return pc.fill_null(s, lit("null"))


def object_inner(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The members of each JSON object text, without the braces; null for ``{}`` (for :func:`join_skip`)."""
    s = json_raw(values, "object")
    tight = pc.all(pc.starts_with(s, "{")).as_py() and pc.all(pc.ends_with(s, "}")).as_py()
    if not tight:
        s = pc.utf8_trim_whitespace(s)
    # Byte slicing is safe: the first and last bytes are the ASCII braces.
    inner = pc.cast(pc.binary_slice(pc.cast(s, pa.large_binary()), 1, -1), pa.large_string())
    blank = pc.match_substring_regex(inner, r"^\s*$")
    return pc.if_else(blank, pa.scalar(None, pa.large_string()), inner)


def without_keys(values: pa.Array | pa.ChunkedArray, keys: Iterable[str]) -> pa.Array:
    """JSON object texts with the given top-level keys removed.

    Only rows whose text mentions one of the keys are parsed and re-encoded (compactly); the rest are
    returned untouched.
    """
    s = large(values)
    pattern = "|".join(f'"{_re_escape(k)}"' for k in keys)
    hit = pc.fill_null(pc.match_substring_regex(s, pattern), False)
    if not pc.any(hit).as_py():
        return s
    dropped = set(keys)
    fixed = [
        dumps({k: v for k, v in json.loads(text).items() if k not in dropped}) for text in s.filter(hit).to_pylist()
    ]
    return pc.replace_with_mask(s, hit, pa.array(fixed, pa.large_string()))


def join_skip(parts: Sequence[Part], sep: str = "") -> pa.Array:
    """Concatenate per-row parts with ``sep``; a null part is left out (with its separator).

    Built from plain concatenations: pyarrow 22's ``binary_join_element_wise(null_handling="skip")``
    drops rows whose parts are all null, misaligning every row after them.
    """
    empty = lit("")
    lead_always = bool(parts) and (isinstance(parts[0], str) or parts[0].null_count == 0)
    pieces = []
    for i, p in enumerate(parts):
        prefix = "" if (i == 0 and lead_always) else sep
        if isinstance(p, str):
            pieces.append(lit(prefix + p))
        elif prefix:
            pieces.append(pc.fill_null(pc.binary_join_element_wise(lit(prefix), large(p), empty), empty))
        else:
            pieces.append(pc.fill_null(large(p), empty))
    joined = combine(pc.binary_join_element_wise(*pieces, empty))
    # Without an always-present first part every row starts with one separator too many.
    return joined if lead_always or not sep else pc.utf8_slice_codeunits(joined, len(sep))


def json_lists(offsets: np.ndarray, elements: pa.Array) -> pa.Array:
    """Per-row JSON arrays: row ``i`` holds ``elements[offsets[i]:offsets[i+1]]`` (already JSON)."""
    items = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), large(elements))
    return pc.binary_join_element_wise(lit("["), pc.binary_join(items, lit(",")), lit("]"), lit(""))


def json_string_lists(lists: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each list of strings as a JSON array literal (``null`` for a null list)."""
    arr = combine(lists)
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    out = json_lists(offsets, json_quote(arr.values))
    return pc.if_else(pc.is_null(arr), lit("null"), out)


def per_unique(fn: Callable[[pa.Array], pa.Array], values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``fn`` applied once per distinct value: cheap for low-cardinality columns (method, version)."""
    encoded = combine(pc.dictionary_encode(combine(values)))
    dictionary = pa.concat_arrays([encoded.dictionary, pa.nulls(1, encoded.dictionary.type)])
    indices = pc.fill_null(encoded.indices, len(encoded.dictionary))  # nulls map to the appended null
    return combine(fn(dictionary)).take(indices)


def concat_lines(parts: Sequence[Part]) -> bytes:
    """Concatenate per-row parts (arrays or literal strings) and return all rows back to back."""
    args = [lit(p) if isinstance(p, str) else large(p) for p in parts]
    return _values_bytes(combine(pc.binary_join_element_wise(*args, lit(""))))


def join_bytes(values: pa.Array, sep: str) -> bytes:
    """All rows joined by ``sep`` as UTF-8 bytes."""
    body = concat_lines([values, sep])
    return body[: len(body) - len(sep.encode())] if body else body


def dumps(value: Any) -> str:
    """Compact JSON as written into deliveries (UTF-8 kept, no NaN)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def objects_to_struct(values: pa.Array | pa.ChunkedArray, explicit: pa.Schema | None = None) -> pa.Array:
    """Parse a column of JSON-object texts into one Arrow struct column.

    Uses Arrow's JSON reader, single-threaded so that field order is first appearance in row order and
    the result is deterministic. Two corrections to its inference: strings that look like dates stay
    strings (the reader would turn ``"2024-01-05"`` into a timestamp, changing the client's value), and
    when a field holds different JSON types in different rows (``1`` here, ``"n/a"`` there) the objects are
    parsed row by row and that field becomes text: strings unchanged, other values as their JSON.

    Args:
        values: JSON object texts; nulls give null structs.
        explicit: Declared types for known fields; other fields are inferred.

    Returns:
        A struct array of the same length (possibly with no fields, which Parquet cannot store).
    """
    texts = large(values)
    n = len(texts)
    if n == 0:
        return pa.array([], pa.struct(list(explicit) if explicit is not None else []))
    mask = pc.is_null(texts)
    filled = json_raw(pc.fill_null(texts, lit("{}")), "JSON objects")
    longest = pc.max(pc.binary_length(filled)).as_py() or 0
    body = concat_lines([filled, "\n"])
    try:
        table = _read_json(body, longest, explicit)
    except pa.ArrowInvalid:
        table = _objects_by_row(texts)
    for f in explicit or []:
        if f.name not in table.column_names:  # declared fields are always there, null when absent
            table = table.append_column(f, pa.nulls(n, f.type))
    if table.num_columns == 0:
        return pa.array([None if m else {} for m in mask.to_pylist()], pa.struct([]))
    if table.num_rows != n:
        raise ValueError(f"parsed {table.num_rows} JSON objects from {n} rows")
    columns = [combine(c) for c in table.columns]
    return pa.StructArray.from_arrays(columns, fields=list(table.schema), mask=mask)


def flatten_struct(column: pa.Array, prefix: str) -> list[tuple[str, pa.Array]]:
    """Dotted leaf columns of a struct (``prefix.a.b``); lists and maps become JSON text."""
    if pa.types.is_struct(column.type):
        out: list[tuple[str, pa.Array]] = []
        for f, child in zip(column.type, column.flatten(), strict=True):
            out.extend(flatten_struct(child, f"{prefix}.{f.name}"))
        return out
    if pa.types.is_nested(column.type):
        return [(prefix, pc.if_else(pc.is_valid(column), json_values(column), pa.scalar(None, pa.large_string())))]
    return [(prefix, column)]


def to_json_text(column: pa.Array) -> pa.Array:
    """Each value as compact JSON text (a Python pass: only for nested values in flat formats)."""
    return pa.array([None if v is None else dumps(v) for v in column.to_pylist()], pa.large_string())


def json_values(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each value as a JSON literal of its type; structs and lists are encoded column-wise, recursively."""
    arr = combine(column)
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return json_quote(arr)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return json_number(arr)
    if pa.types.is_boolean(t):
        return pc.fill_null(pc.cast(arr, pa.large_string()), lit("null"))
    if pa.types.is_null(t):
        return pa.array(["null"] * len(arr), pa.large_string())
    if pa.types.is_struct(t):
        members = [
            join_skip([f"{dumps(f.name)}:", json_values(child)]) for f, child in zip(t, arr.flatten(), strict=True)
        ]
        body = (
            join_skip(["{", join_skip(members, ","), "}"])
            if members
            else pa.array(["{}"] * len(arr), pa.large_string())
        )
        return pc.if_else(pc.is_valid(arr), body, lit("null"))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = np.asarray(arr.offsets, dtype=np.int64)
        listed = json_lists(offsets, json_values(arr.values))
        return pc.if_else(pc.is_valid(arr), listed, lit("null"))
    return pc.fill_null(to_json_text(arr), lit("null"))


def as_text(column: pa.Array) -> pa.Array:
    """Scalars as display text (strings unchanged, ``true``, ``12.5``); nested values as JSON."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return large(column)
    if pa.types.is_nested(column.type):
        return pc.if_else(pc.is_valid(column), json_values(column), pa.scalar(None, pa.large_string()))
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.large_string())
    return pc.cast(column, pa.large_string())


def _read_json(body: bytes, longest: int, explicit: pa.Schema | None) -> pa.Table:
    read = pa_json.ReadOptions(use_threads=False, block_size=max(_MIN_BLOCK, 1 << (longest + 1).bit_length()))

    def parse(schema: pa.Schema | None) -> pa.Table:
        opts = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
        return pa_json.read_json(io.BytesIO(body), read_options=read, parse_options=opts)

    table = parse(explicit)
    untimed = pa.schema([f.with_type(_strings_for_times(f.type)) for f in table.schema])
    return parse(untimed) if untimed != table.schema else table


def _strings_for_times(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_strings_for_times(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        item = t.value_field.with_type(_strings_for_times(t.value_type))
        return pa.list_(item) if pa.types.is_list(t) else pa.large_list(item)
    return t


def _objects_by_row(texts: pa.Array) -> pa.Table:
    """Slow path for messy objects: parse each row, then type each field on its own."""
    rows: list[dict[str, Any]] = []
    for i, text in enumerate(texts.to_pylist()):
        value = {} if text is None else json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"row {i} is not a JSON object: {text[:80]!r}")
        rows.append(value)
    columns = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        vals = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(vals)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[key] = pa.array([v if v is None or isinstance(v, str) else dumps(v) for v in vals])
    if not columns:  # keep the row count of objects without fields
        return pa.table({"_": pa.nulls(len(rows))}).drop_columns(["_"])
    return pa.table(columns)


def _re_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in r"\.^$|?*+()[]{}" else c for c in text)


def _values_bytes(arr: pa.Array) -> bytes:
    if len(arr) == 0:
        return b""
    if arr.null_count:
        raise ValueError("cannot concatenate null rows")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)
    start, end = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
    data = arr.buffers()[2]
    return b"" if data is None else data.slice(start, end - start).to_pybytes()
