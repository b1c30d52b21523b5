"""COCO JSON for image classification and object detection.

Images are numbered 1..N in ``item_id`` order; ``file_name`` is the object key of ``media_uri`` and
``coco_url`` the URI itself; ``kazi_item_id`` joins back to the other formats. Categories are the work
order's classes, ids 1..K in schema order. Detection annotations carry ``bbox`` ``[x, y, w, h]`` in pixels
(converted from Label Studio's percentages, rounded to 0.01 px), ``area`` = w*h, ``iscrowd`` 0 and the
item's consolidated confidence as ``score``. A classification has one annotation per image with
``category_id`` and no ``bbox``: pycocotools' ``COCO`` indexes it (``getAnnIds``, ``getImgIds(catIds=...)``);
``loadRes`` and box evaluation need boxes and do not apply. Image ``width``/``height`` are written when
known and required for detection.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.arrays import combine
from flows.core.models import TaskType
from flows.deliver.formats.deliverable import DeliveryContext, FormatNotApplicable, answers, deliverable_table
from flows.deliver.formats.images import class_ids, explode_boxes, file_names, require_sizes, resolve_sizes
from flows.deliver.formats.json_arrow import dumps, join_bytes, join_skip, json_number, json_quote

COCO_TASK_TYPES = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.OBJECT_DETECTION})


def write_coco(frame: pd.DataFrame, ctx: DeliveryContext) -> tuple[bytes, int]:
    """One COCO document; the row count is the number of images."""
    if ctx.task_type not in COCO_TASK_TYPES:
        raise FormatNotApplicable(f"COCO has no form for {ctx.task_type}")
    if not ctx.classes:
        raise ValueError("COCO needs the work order's classes")
    t = deliverable_table(frame)
    if t["media_uri"].null_count:
        raise ValueError(f"COCO needs media_uri for every item; {t['media_uri'].null_count} have none")
    n = t.num_rows
    width, height = resolve_sizes(t, ctx)
    known = (width > 0) & (height > 0)
    image_ids = np.arange(1, n + 1, dtype=np.int64)
    size = pc.if_else(
        pa.array(known),
        join_skip([',"width":', json_number(width), ',"height":', json_number(height)]),
        pa.scalar(None, pa.large_string()),
    )
    images = join_skip(
        [
            '{"id":',
            json_number(image_ids),
            ',"file_name":',
            json_quote(file_names(t["media_uri"])),
            size,
            ',"coco_url":',
            json_quote(t["media_uri"]),
            ',"kazi_item_id":',
            json_quote(t["item_id"]),
            "}",
        ]
    )
    conf = combine(t["confidence"])
    score = pc.if_else(
        pc.fill_null(pc.is_finite(conf), False),
        join_skip([',"score":', json_number(conf)]),
        pa.scalar(None, pa.large_string()),
    )
    if ctx.task_type == TaskType.OBJECT_DETECTION:
        require_sizes(t["item_id"], width, height, "COCO")
        annotations = _box_annotations(t, ctx, width, height, score)
    else:
        labels = answers(t, ctx.task_type).field("label")
        category = class_ids(labels, ctx.classes, t["item_id"]) + 1
        annotations = join_skip(
            [
                '{"id":',
                json_number(image_ids),
                ',"image_id":',
                json_number(image_ids),
                ',"category_id":',
                json_number(category),
                ',"iscrowd":0',
                score,
                "}",
            ]
        )

    info: dict[str, str] = {"description": f"Kazi delivery {ctx.job_name}", "version": "1.0"}
    if ctx.creation_date is not None:
        info["date_created"] = ctx.creation_date
    categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(ctx.classes)]
    body = b"".join(
        [
            f'{{"info":{dumps(info)},"licenses":[],"images":['.encode(),
            join_bytes(images, ","),
            b'],"annotations":[',
            join_bytes(annotations, ","),
            f'],"categories":{dumps(categories)}}}'.encode(),
        ]
    )
    return body, n


def _box_annotations(
    t: pa.Table, ctx: DeliveryContext, width: np.ndarray, height: np.ndarray, score: pa.Array
) -> pa.Array:
    boxes = explode_boxes(t)
    w_px, h_px = width[boxes.parent], height[boxes.parent]
    x = np.round(boxes.x * w_px / 100.0, 2)
    y = np.round(boxes.y * h_px / 100.0, 2)
    w = np.round(boxes.width * w_px / 100.0, 2)
    h = np.round(boxes.height * h_px / 100.0, 2)
    category = class_ids(boxes.label, ctx.classes, t["item_id"], boxes.parent) + 1
    parent = pa.array(boxes.parent)
    return join_skip(
        [
            '{"id":',
            json_number(np.arange(1, len(boxes.parent) + 1, dtype=np.int64)),
            ',"image_id":',
            json_number(boxes.parent + 1),
            ',"category_id":',
            json_number(category),
            ',"bbox":[',
            json_number(x),
            ",",
            json_number(y),
            ",",
            json_number(w),
            ",",
            json_number(h),
            '],"area":',
            json_number(np.round(w * h, 2)),
            ',"iscrowd":0',
            score.take(parent),
            "}",
        ]
    )
