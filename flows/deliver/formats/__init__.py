"""Client delivery formats: pure writers from the deliverable frame to bytes.

Every writer has the signature ``write(frame, ctx) -> (bytes, row_count)`` and is deterministic: rows are
sorted by ``item_id``, keys come in a fixed order, and nothing time-dependent goes in unless passed in
through :class:`DeliveryContext` (``creation_date``). :data:`FORMAT_WRITERS` maps each
:class:`~flows.core.models.DeliveryFormat` to its writer, file name and content type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import pandas as pd

from flows.core.models import DeliveryFormat, TaskType
from flows.deliver.formats.coco import COCO_TASK_TYPES, write_coco
from flows.deliver.formats.deliverable import (
    DELIVERABLE,
    Deliverable,
    DeliveryContext,
    FormatNotApplicable,
    build_deliverable,
)
from flows.deliver.formats.ground_truth import write_ground_truth
from flows.deliver.formats.images import read_image_size
from flows.deliver.formats.label_studio import write_label_studio
from flows.deliver.formats.tabular import escape_formulas, write_csv, write_jsonl, write_parquet

Writer = Callable[[pd.DataFrame, DeliveryContext], tuple[bytes, int]]
_ALL = frozenset(TaskType)


class FormatWriter(NamedTuple):
    file_name: str
    content_type: str
    write: Writer
    task_types: frozenset[TaskType]


FORMAT_WRITERS: dict[DeliveryFormat, FormatWriter] = {
    DeliveryFormat.JSONL: FormatWriter("labels.jsonl", "application/x-ndjson", write_jsonl, _ALL),
    DeliveryFormat.PARQUET: FormatWriter("labels.parquet", "application/vnd.apache.parquet", write_parquet, _ALL),
    DeliveryFormat.CSV: FormatWriter("labels.csv", "text/csv; charset=utf-8", write_csv, _ALL),
    DeliveryFormat.COCO: FormatWriter("coco.json", "application/json", write_coco, COCO_TASK_TYPES),
    DeliveryFormat.LABEL_STUDIO: FormatWriter("label_studio.json", "application/json", write_label_studio, _ALL),
    DeliveryFormat.GROUND_TRUTH: FormatWriter("output.manifest", "application/x-ndjson", write_ground_truth, _ALL),
}


def check_formats(task_type: TaskType, formats: Iterable[DeliveryFormat]) -> None:
    """Raise :class:`FormatNotApplicable` naming every requested format the task type cannot use."""
    bad = sorted(f.value for f in formats if task_type not in FORMAT_WRITERS[f].task_types)
    if bad:
        raise FormatNotApplicable(f"formats {bad} cannot express {task_type} deliveries")


def write_formats(
    frame: pd.DataFrame, ctx: DeliveryContext, formats: Iterable[DeliveryFormat]
) -> list[tuple[str, bytes, int]]:
    """Write each requested format once: ``(file_name, bytes, row_count)`` in request order."""
    chosen = list(dict.fromkeys(formats))
    check_formats(ctx.task_type, chosen)
    out = []
    for fmt in chosen:
        spec = FORMAT_WRITERS[fmt]
        body, rows = spec.write(frame, ctx)
        out.append((spec.file_name, body, rows))
    return out


__all__ = [
    "DELIVERABLE",
    "FORMAT_WRITERS",
    "Deliverable",
    "DeliveryContext",
    "FormatNotApplicable",
    "FormatWriter",
    "Writer",
    "build_deliverable",
    "check_formats",
    "escape_formulas",
    "read_image_size",
    "write_coco",
    "write_csv",
    "write_formats",
    "write_ground_truth",
    "write_jsonl",
    "write_label_studio",
    "write_parquet",
]
