"""A SageMaker Ground Truth style output manifest: JSON Lines, one input line plus its label per item.

Each line is the input line (``source-ref`` with the media URI, or ``source`` with the text, then the
client's fields) plus ``"<job-name>"`` (the label) and ``"<job-name>-metadata"``, as Ground Truth's built-in
task types write them:

* classification: the label is the class index into the work order's classes; metadata has
  ``class-name``, ``confidence`` and ``type`` ``groundtruth/image-classification`` or ``.../text-classification``;
* detection: ``{"image_size": [{width, height, depth: 3}], "annotations": [{class_id, left, top, width,
  height}]}`` in whole pixels; metadata has one ``objects`` confidence per box and the ``class-map``;
* transcription and listing verification (no built-in type): the answer object, ``type``
  ``groundtruth/custom``.

Every metadata object has ``job-name``, ``human-annotated`` "yes" and ``creation-date`` (passed in). A
client field named like one of ours is replaced. Ground Truth writes confidence 0.0 when a label has no
consolidation confidence; so do we.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.models import TaskType
from flows.deliver.formats.deliverable import DeliveryContext, answers, deliverable_table
from flows.deliver.formats.images import class_ids, explode_boxes, require_sizes, resolve_sizes
from flows.deliver.formats.json_arrow import (
    concat_lines,
    dumps,
    join_skip,
    json_lists,
    json_number,
    json_quote,
    json_raw,
    object_inner,
    without_keys,
)

_TEXT_TASKS = frozenset({TaskType.TEXT_CLASSIFICATION, TaskType.LISTING_VERIFICATION})
_CLASSIFICATION = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION})
_TYPES = {
    TaskType.IMAGE_CLASSIFICATION: "groundtruth/image-classification",
    TaskType.TEXT_CLASSIFICATION: "groundtruth/text-classification",
    TaskType.OBJECT_DETECTION: "groundtruth/object-detection",
    TaskType.AUDIO_TRANSCRIPTION: "groundtruth/custom",
    TaskType.LISTING_VERIFICATION: "groundtruth/custom",
}


def write_ground_truth(frame: pd.DataFrame, ctx: DeliveryContext) -> tuple[bytes, int]:
    """The output manifest as JSON Lines; the row count is the number of lines."""
    job = ctx.job_name
    if ctx.creation_date is None:
        raise ValueError("Ground Truth manifest needs creation_date")
    if job.endswith("-ref") or "-metadata" in job:
        raise ValueError(f"Ground Truth label attribute {job!r} may not end in -ref or contain -metadata")
    detection = ctx.task_type == TaskType.OBJECT_DETECTION
    if (ctx.task_type in _CLASSIFICATION or detection) and not ctx.classes:
        raise ValueError(f"Ground Truth {ctx.task_type} needs the work order's classes")

    t = deliverable_table(frame)
    if ctx.task_type in _TEXT_TASKS:
        text = t["text"]
        source = pc.if_else(pc.is_valid(text), join_skip(['"source":', json_quote(text)]), _null())
    else:
        source = join_skip(['"source-ref":', json_quote(t["media_uri"])])
    fields = object_inner(without_keys(t["record"], ["source-ref", "source", job, f"{job}-metadata"]))
    conf = json_number(pc.fill_null(t["confidence"], 0.0))
    common = dumps(
        {"type": _TYPES[ctx.task_type], "job-name": job, "human-annotated": "yes", "creation-date": ctx.creation_date}
    )[1:-1]

    if ctx.task_type in _CLASSIFICATION:
        labels = answers(t, ctx.task_type).field("label")
        label = json_number(class_ids(labels, ctx.classes, t["item_id"]))
        meta = join_skip(['{"class-name":', json_quote(labels), ',"confidence":', conf, f",{common}}}"])
    elif detection:
        label, objects = _detection(t, ctx, conf)
        class_map = dumps({str(i): name for i, name in enumerate(ctx.classes)})
        meta = join_skip(['{"objects":', objects, f',"class-map":{class_map},{common}}}'])
    else:
        label = json_raw(t["answer"], "answer")
        meta = join_skip(['{"confidence":', conf, f",{common}}}"])

    members = join_skip(
        [source, fields, join_skip([f"{_q(job)}:", label]), join_skip([f"{_q(job + '-metadata')}:", meta])], ","
    )
    return concat_lines(["{", members, "}\n"]), t.num_rows


def _detection(t: pa.Table, ctx: DeliveryContext, conf: pa.Array) -> tuple[pa.Array, pa.Array]:
    width, height = resolve_sizes(t, ctx)
    require_sizes(t["item_id"], width, height, "Ground Truth")
    boxes = explode_boxes(t)
    w_px, h_px = width[boxes.parent], height[boxes.parent]

    def pixels(v: np.ndarray, scale: np.ndarray) -> pa.Array:
        return json_number(np.rint(v * scale / 100.0).astype(np.int64))

    class_id = class_ids(boxes.label, ctx.classes, t["item_id"], boxes.parent)
    annotations = join_skip(
        [
            '{"class_id":',
            json_number(class_id),
            ',"left":',
            pixels(boxes.x, w_px),
            ',"top":',
            pixels(boxes.y, h_px),
            ',"width":',
            pixels(boxes.width, w_px),
            ',"height":',
            pixels(boxes.height, h_px),
            "}",
        ]
    )
    label = join_skip(
        [
            '{"image_size":[{"width":',
            json_number(width),
            ',"height":',
            json_number(height),
            ',"depth":3}],"annotations":',
            json_lists(boxes.offsets, annotations),
            "}",
        ]
    )
    objects = json_lists(boxes.offsets, join_skip(['{"confidence":', conf.take(pa.array(boxes.parent)), "}"]))
    return label, objects


def _null() -> pa.Scalar:
    return pa.scalar(None, pa.large_string())


def _q(text: str) -> str:
    return dumps(text)
