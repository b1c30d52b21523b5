"""Declared Arrow schemas of Kazi's tables. Written once, imported everywhere."""

from __future__ import annotations

import pyarrow as pa

#: Data key of every Label Studio task Kazi imports: ``f"{project_key}/{item ref}"``, how Kazi imports
#: each task exactly once.
TASK_KEY = "kazi_task_key"

#: Canonical items, written by ingest. ``record`` is the client's original row as JSON, unchanged.
ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("client_item_id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("media_uri", pa.string()),
        pa.field("fields", pa.string(), metadata={"json": "object"}),
        pa.field("record", pa.string(), nullable=False, metadata={"json": "object"}),
        pa.field("source_object", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("shard", pa.int32(), nullable=False),
    ]
)

#: Rejected rows (or whole files, with ``source_row`` -1), unchanged, with the reason.
QUARANTINE = pa.schema(
    [
        pa.field("source_object", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("record", pa.string()),
    ]
)

#: Rows not taken because an earlier row has the same id or the same content.
DUPLICATES = pa.schema(
    [
        pa.field("source_object", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("duplicate_of_object", pa.string(), nullable=False),
        pa.field("duplicate_of_row", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # "id" | "content"
    ]
)

#: The assignment manifest written by split before any Label Studio call. One row per task:
#: ``slot`` numbers the k overlapping answers of an item (0..k-1).
ASSIGNMENTS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("site_id", pa.string(), nullable=False),
        pa.field("project_key", pa.string(), nullable=False),
        pa.field("slot", pa.int16(), nullable=False),
        pa.field("is_gold", pa.bool_(), nullable=False),
        pa.field("round", pa.int16(), nullable=False),
    ]
)

#: Append-only annotation log, written by annotate. ``answer`` is the normalised JSON answer;
#: ``label`` repeats it for classification so consolidation needs no JSON parsing.
ANNOTATIONS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("site_id", pa.string(), nullable=False),
        pa.field("project_id", pa.int64(), nullable=False),
        pa.field("task_id", pa.int64(), nullable=False),
        pa.field("annotation_id", pa.int64(), nullable=False),
        pa.field("annotator", pa.string(), nullable=False),
        pa.field("answer", pa.string()),
        pa.field("label", pa.string()),
        pa.field("lead_time_s", pa.float64()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("skipped", pa.bool_(), nullable=False),
        pa.field("round", pa.int16(), nullable=False),
    ]
)

#: The moves log of annotate's stalled-work reassignment (``annotate/moves/part-<hash>.parquet``): one row per
#: answer slot moved from one site's project to another's (see :mod:`flows.annotate.sla`).
MOVES = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("slot", pa.int16(), nullable=False),
        pa.field("is_gold", pa.bool_(), nullable=False),
        pa.field("round", pa.int16(), nullable=False),
        pa.field("from_site", pa.string(), nullable=False),
        pa.field("from_project_key", pa.string(), nullable=False),
        pa.field("to_site", pa.string(), nullable=False),
        pa.field("to_project_key", pa.string(), nullable=False),
        pa.field("move", pa.int16(), nullable=False),
        pa.field("moved_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("due_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

#: One consolidated answer per item, written by QA.
CONSOLIDATED = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("answer", pa.string()),
        pa.field("label", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("n_annotators", pa.int32(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("sites", pa.string()),
        pa.field("needs_rework", pa.bool_(), nullable=False),
    ]
)
