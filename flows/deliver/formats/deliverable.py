"""The deliverable frame: one accepted item with its consolidated answer and lineage, per row.

Every writer in :mod:`flows.deliver.formats` takes this frame (pandas, columns of :data:`DELIVERABLE`) and a
:class:`DeliveryContext`, and returns ``(bytes, row_count)``. Writers sort by ``item_id`` first, so the bytes
depend only on the set of rows, never on the order the frame arrived in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.arrays import combine
from flows.core.models import TaskType, WorkOrder
from flows.deliver.formats.json_arrow import json_string_lists, objects_to_struct, per_unique

#: One row per delivered item. ``record`` and ``answer`` are JSON objects as text, as is ``fields`` (a
#: listing's current field values, from ingest); ``sites`` is the comma-separated list of partner sites
#: whose annotators answered (a JSON array of ids is accepted too).
DELIVERABLE = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("media_uri", pa.string()),
        pa.field("text", pa.string()),
        pa.field("fields", pa.string(), metadata={"json": "object"}),
        pa.field("record", pa.string(), nullable=False, metadata={"json": "object"}),
        pa.field("answer", pa.string(), nullable=False, metadata={"json": "object"}),
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("sites", pa.string()),
        pa.field("n_annotators", pa.int32(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("qa_version", pa.string(), nullable=False),
    ]
)

_BOX = pa.struct(
    [
        pa.field("label", pa.string()),
        pa.field("x", pa.float64()),
        pa.field("y", pa.float64()),
        pa.field("width", pa.float64()),
        pa.field("height", pa.float64()),
    ]
)

#: Declared answer types per task type (fields QA adds beyond these are kept, with inferred types).
#: Listing-verification fields are inferred: their names and kinds come from each work order.
ANSWER_TYPES: dict[TaskType, pa.Schema | None] = {
    TaskType.IMAGE_CLASSIFICATION: pa.schema([pa.field("label", pa.string())]),
    TaskType.TEXT_CLASSIFICATION: pa.schema([pa.field("label", pa.string())]),
    TaskType.OBJECT_DETECTION: pa.schema([pa.field("boxes", pa.list_(_BOX))]),
    TaskType.AUDIO_TRANSCRIPTION: pa.schema([pa.field("text", pa.string())]),
    TaskType.LISTING_VERIFICATION: None,
}

#: Why an accepted item is not in the delivery.
EXCLUDED_FAILED_QA = "failed_qa"
EXCLUDED_NO_ANSWER = "no_answer"


class FormatNotApplicable(ValueError):
    """A delivery format was asked for a task type it cannot express (COCO for audio, say)."""


@dataclass(frozen=True)
class DeliveryContext:
    """What a writer needs beyond the rows: the work order's schema and anything only the flow can know.

    Attributes:
        task_type: The work order's task type.
        classes: Label classes in the work order's order; COCO category ids and Ground Truth class ids
            are 1-based and 0-based positions in this list.
        job_name: Ground Truth label attribute name (and COCO description); defaults to the work-order id.
        creation_date: ISO 8601 timestamp written into Ground Truth metadata and COCO ``info``. Passed in,
            never read from the clock, so a re-run with the same value gives the same bytes.
        image_sizes: ``media_uri -> (width, height)`` in pixels, e.g. read by the flow from image headers.
            Takes precedence over the record's own size fields.
        size_fields: Names of the client's width and height columns, used when ``image_sizes`` has no entry.
        fields: Label-schema field names in schema order (listing verification's Label Studio layout).
    """

    task_type: TaskType
    classes: tuple[str, ...] = ()
    job_name: str = "kazi"
    creation_date: str | None = None
    image_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    size_fields: tuple[str, str] = ("width", "height")
    fields: tuple[str, ...] = ()

    @classmethod
    def from_work_order(
        cls,
        work_order: WorkOrder,
        *,
        creation_date: str | None = None,
        image_sizes: Mapping[str, tuple[int, int]] | None = None,
    ) -> DeliveryContext:
        return cls(
            task_type=work_order.task_type,
            classes=tuple(work_order.label_schema.classes),
            job_name=work_order.id,
            creation_date=creation_date,
            image_sizes=dict(image_sizes or {}),
            fields=tuple(f.name for f in work_order.label_schema.fields),
        )


@dataclass(frozen=True)
class Deliverable:
    """The rows to deliver and the accepted items left out, with the reason."""

    frame: pd.DataFrame
    excluded: pd.DataFrame


def build_deliverable(items: pd.DataFrame, consolidated: pd.DataFrame, qa_version: str) -> Deliverable:
    """Join canonical items with QA's consolidated answers.

    An accepted item is delivered when it has a consolidated answer that no longer needs rework. Otherwise
    it is excluded as ``failed_qa`` (still flagged for rework when the rounds ran out) or ``no_answer`` (no
    consolidated row, or a null answer, e.g. every annotator skipped it). Consolidated rows for ids that are
    not canonical items (gold items) are ignored.

    Args:
        items: Canonical items (:data:`flows.core.schemas.ITEMS` columns).
        consolidated: QA's output (:data:`flows.core.schemas.CONSOLIDATED` columns).
        qa_version: Version of the QA run the answers come from, written into every row's lineage.

    Returns:
        The :data:`DELIVERABLE` frame sorted by ``item_id`` and the excluded ``item_id``/``reason`` frame.
    """
    _require_unique(items["item_id"], "items")
    _require_unique(consolidated["item_id"], "consolidated")
    cons = consolidated[["item_id", "answer", "label", "confidence", "n_annotators", "method", "sites", "needs_rework"]]
    base = items.reindex(columns=["item_id", "media_uri", "text", "fields", "record"])
    merged = base.merge(cons, on="item_id", how="left", validate="one_to_one", indicator=True)
    has_row = merged["_merge"].eq("both")
    failed = has_row & merged["needs_rework"].eq(True)
    ok = has_row & ~failed & merged["answer"].notna()

    reason = pd.Series(EXCLUDED_NO_ANSWER, index=merged.index, dtype="str")
    reason[failed] = EXCLUDED_FAILED_QA
    excluded = (
        pd.DataFrame({"item_id": merged.loc[~ok, "item_id"], "reason": reason[~ok]})
        .sort_values("item_id", kind="stable")
        .reset_index(drop=True)
    )
    frame = merged.loc[ok, [f.name for f in DELIVERABLE if f.name != "qa_version"]].assign(qa_version=qa_version)
    frame = frame.astype({"n_annotators": "int32"}).sort_values("item_id", kind="stable").reset_index(drop=True)
    return Deliverable(frame=frame, excluded=excluded)


def deliverable_table(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table of :data:`DELIVERABLE`, sorted by ``item_id``; rejects duplicate ids."""
    optional = {"fields"}
    missing = [f.name for f in DELIVERABLE if f.name not in frame.columns and f.name not in optional]
    if missing:
        raise ValueError(f"deliverable frame lacks columns {missing}")
    frame = frame.reindex(columns=DELIVERABLE.names)
    for name in ("item_id", "record", "answer", "n_annotators", "method", "qa_version"):
        if frame[name].isna().any():
            raise ValueError(f"deliverable column {name!r} has nulls; excluded items do not belong in it")
    table = pa.Table.from_pandas(frame, schema=DELIVERABLE, preserve_index=False)
    table = table.replace_schema_metadata(None)
    table = table.take(pc.sort_indices(table["item_id"]))
    ids = table["item_id"]
    if len(ids) > 1:
        same = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))
        if pc.any(same).as_py():
            dup = sorted(set(ids.slice(1).filter(same).to_pylist()))
            raise ValueError(f"deliverable has {len(dup)} duplicate item_id(s), e.g. {dup[:5]}")
    return table


def answers(table: pa.Table, task_type: TaskType) -> pa.StructArray:
    """The ``answer`` column parsed into a struct with the task type's declared fields.

    Classification answers repeat a handful of values, so each distinct text is parsed once.
    """
    encoded = combine(pc.dictionary_encode(table["answer"]))
    if len(encoded.dictionary) * 2 > len(encoded):
        return objects_to_struct(table["answer"], ANSWER_TYPES[task_type])
    parsed = objects_to_struct(encoded.dictionary, ANSWER_TYPES[task_type])
    return parsed.take(encoded.indices)


def sites_json(sites: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Each row's sites as a JSON array of ids."""
    return per_unique(lambda unique: json_string_lists(site_ids(unique)), sites)


def site_ids(sites: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Parse ``sites`` ("a,b" or '["a", "b"]') into a list of site ids per row; null means no sites."""
    cleaned = pc.replace_substring_regex(pc.cast(combine(sites), pa.string()), r'[\[\]"\s]', "")
    empty = pc.fill_null(pc.equal(cleaned, ""), True)
    lists = pc.split_pattern(pc.if_else(empty, pa.scalar(None, pa.string()), cleaned), ",")
    lists = pc.if_else(empty, pa.scalar([], pa.list_(pa.string())), lists)
    return combine(lists)


def _require_unique(ids: pd.Series, what: str) -> None:
    dup = ids[ids.duplicated()]
    if not dup.empty:
        raise ValueError(f"{what} has {len(dup)} duplicate item_id(s), e.g. {sorted(dup.unique())[:5]}")
