"""Image geometry for the image formats: file names, pixel sizes, and boxes exploded to one row each."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from flows.core.arrays import combine
from flows.core.models import TaskType
from flows.deliver.formats.deliverable import DeliveryContext, answers
from flows.deliver.formats.json_arrow import large, objects_to_struct

_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


@dataclass(frozen=True)
class Boxes:
    """Every box of every item, one row per box: box ``j`` belongs to item ``parent[j]``.

    Coordinates are Label Studio's: percent of the image width/height, origin top-left.
    """

    offsets: np.ndarray  # item i owns boxes offsets[i]:offsets[i+1]
    parent: np.ndarray
    label: pa.Array
    x: np.ndarray
    y: np.ndarray
    width: np.ndarray
    height: np.ndarray
    rotation: np.ndarray  # degrees clockwise, 0 when the answer has none

    @property
    def index_in_item(self) -> np.ndarray:
        return np.arange(len(self.parent), dtype=np.int64) - self.offsets[self.parent]


def explode_boxes(table: pa.Table) -> Boxes:
    """The ``boxes`` of every detection answer in the deliverable table, flattened."""
    struct = answers(table, TaskType.OBJECT_DETECTION)
    if "boxes" not in [f.name for f in struct.type]:
        lists = pa.array([[]] * len(struct), pa.list_(pa.struct([])))
    else:
        lists = combine(struct.field("boxes"))
        if not pa.types.is_list(lists.type) or not pa.types.is_struct(lists.type.value_type):
            raise ValueError(f"detection answers hold boxes of type {lists.type}, not a list of boxes")
        lists = pc.if_else(pc.is_null(lists), pa.scalar([], lists.type), lists)
    raw = np.asarray(lists.offsets, dtype=np.int64)
    offsets = raw - raw[0]
    values = lists.flatten()
    parent = np.repeat(np.arange(len(lists), dtype=np.int64), np.diff(offsets))
    names = {f.name for f in values.type}
    missing = {"label", "x", "y", "width", "height"} - names
    if len(values) and missing:
        raise ValueError(f"detection boxes lack {sorted(missing)}")
    if len(values) and values.null_count:
        raise ValueError(f"{values.null_count} detection box(es) are null")

    def coord(name: str, default: float | None = None) -> np.ndarray:
        if name not in names:
            return np.full(len(values), default if default is not None else np.nan)
        col = pc.cast(values.field(name), pa.float64())
        if default is not None:
            col = pc.fill_null(col, default)
        if col.null_count:
            raise ValueError(f"{col.null_count} detection box(es) have no {name}")
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)

    label = large(values.field("label")) if "label" in names else pa.array([], pa.large_string())
    return Boxes(
        offsets=offsets,
        parent=parent,
        label=label,
        x=coord("x"),
        y=coord("y"),
        width=coord("width"),
        height=coord("height"),
        rotation=coord("rotation", 0.0),
    )


def file_names(media_uris: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Object keys without scheme and bucket: ``s3://b/img/1.jpg`` -> ``img/1.jpg``.

    For http(s) URLs the query and fragment (a presigned signature, say) are dropped too.
    """
    s = large(media_uris)
    http = pc.match_substring_regex(s, r"^https?://")
    s = pc.if_else(http, pc.replace_substring_regex(s, r"[?#].*$", ""), s)
    key = pc.replace_substring_regex(s, r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/]*/?", "")
    return pc.if_else(pc.equal(key, ""), s, key)


def read_image_size(head: bytes) -> tuple[int, int]:
    """Width and height from the first bytes of an image file (64 KiB is enough for JPEG, PNG, WebP)."""
    with Image.open(io.BytesIO(head)) as img:
        width, height = img.size
    return int(width), int(height)


def resolve_sizes(table: pa.Table, ctx: DeliveryContext) -> tuple[np.ndarray, np.ndarray]:
    """Pixel width and height per item (0 where unknown).

    ``ctx.image_sizes`` (by ``media_uri``) comes first; items it does not cover take the client's own
    width/height fields (``ctx.size_fields``), which are only parsed for those items.
    """
    n = table.num_rows
    width = np.zeros(n, dtype=np.int64)
    height = np.zeros(n, dtype=np.int64)
    if ctx.image_sizes:
        keys = pa.array(list(ctx.image_sizes), pa.large_string())
        known = np.array(list(ctx.image_sizes.values()), dtype=np.int64).reshape(-1, 2)
        pos = pc.index_in(large(table["media_uri"]), value_set=keys)
        found = np.asarray(pc.is_valid(pos).to_numpy(zero_copy_only=False), dtype=bool)
        idx = np.asarray(pos.filter(pc.is_valid(pos)).to_numpy(zero_copy_only=False), dtype=np.int64)
        width[found], height[found] = known[idx, 0], known[idx, 1]
    missing = (width <= 0) | (height <= 0)
    if missing.any():
        records = objects_to_struct(combine(table["record"]).filter(pa.array(missing)))
        fields = {f.name for f in records.type}
        w_key, h_key = ctx.size_fields
        if w_key in fields and h_key in fields:
            w = _whole_pixels(records.field(w_key))
            h = _whole_pixels(records.field(h_key))
            ok = (w > 0) & (h > 0)
            rows = np.flatnonzero(missing)[ok]
            width[rows], height[rows] = w[ok], h[ok]
    return width, height


def require_sizes(item_ids: pa.Array | pa.ChunkedArray, width: np.ndarray, height: np.ndarray, fmt: str) -> None:
    """Raise naming the items whose pixel size is unknown (boxes cannot be converted without it)."""
    unknown = (width <= 0) | (height <= 0)
    if unknown.any():
        example = combine(item_ids).filter(pa.array(unknown)).slice(0, 5).to_pylist()
        raise ValueError(
            f"{fmt}: image size unknown for {int(unknown.sum())} item(s), e.g. {example}; pass image_sizes "
            "(media_uri -> (width, height)) or deliver width/height fields in the records"
        )


def class_ids(
    labels: pa.Array, classes: Sequence[str], item_ids: pa.Array, parent: np.ndarray | None = None
) -> np.ndarray:
    """0-based position of each label in ``classes``; raises naming items with a label outside them."""
    pos = pc.index_in(large(labels), value_set=pa.array(list(classes), pa.large_string()))
    if pos.null_count:
        bad = np.flatnonzero(np.asarray(pc.is_null(pos).to_numpy(zero_copy_only=False), dtype=bool))
        rows = bad if parent is None else parent[bad]
        example = combine(item_ids).take(pa.array(rows[:5])).to_pylist()
        wrong = sorted({str(v) for v in labels.take(pa.array(bad[:20])).to_pylist()})
        raise ValueError(f"{len(bad)} label(s) {wrong} are not among the work order's classes, e.g. items {example}")
    return np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64)


def _whole_pixels(values: pa.Array) -> np.ndarray:
    """Numbers (or numeric strings, as CSV sources give them) truncated to ints; 0 where not a number."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        ok = pc.fill_null(pc.match_substring_regex(values, _NUMBER), False)
        trimmed = pc.utf8_trim_whitespace(pc.if_else(ok, values, pa.scalar(None, values.type)))
        values = pc.cast(trimmed, pa.float64())
    elif pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        values = pc.cast(values, pa.float64())
    else:
        return np.zeros(len(values), dtype=np.int64)
    floats = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    floats = np.where(np.isfinite(floats), floats, 0.0)
    return np.trunc(floats).astype(np.int64)
