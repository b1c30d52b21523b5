"""Label Studio JSON: tasks that import into a project made with Kazi's label config for the task type.

Each task is ``{"data": {...}, "annotations": [{"result": [...], ...}], "meta": {"kazi": {...}}}``.

The names follow ``flows/split/label_configs.py`` (control ``from_name`` -> object ``to_name``), so that
Label Studio shows the delivered answer on the same form the annotators used, and annotate's parser would
read it back to the same answer:

* ``data``: the client's fields, then ``item_id``, then the main object's key (``image``, ``text``,
  ``audio``) with the media URI or text; for listing verification one ``fields_<name>`` key per field with
  its current value. A client field with one of our names is replaced by ours.
* ``result``: ``label`` (choices), ``box`` (rectanglelabels, percent of the image, with the image's pixel
  size when known), ``transcription`` (textarea), ``field_<name>`` (textarea, or ``yes``/``no`` choices for
  booleans) and ``listing_valid`` (``yes``/``no`` choices). Region ids are unique within a task and derived
  from the control, so the same delivery gives the same file.
* ``meta.kazi``: confidence and lineage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.models import TaskType
from flows.deliver.formats.deliverable import DeliveryContext, answers, deliverable_table, sites_json
from flows.deliver.formats.images import explode_boxes, resolve_sizes
from flows.deliver.formats.json_arrow import (
    as_text,
    combine,
    dumps,
    join_bytes,
    join_skip,
    json_number,
    json_quote,
    json_values,
    lit,
    object_inner,
    objects_to_struct,
    per_unique,
    without_keys,
)

#: The object tag (and data key) each task type shows; listing verification has one per field.
MAIN_OBJECT: dict[TaskType, str] = {
    TaskType.IMAGE_CLASSIFICATION: "image",
    TaskType.OBJECT_DETECTION: "image",
    TaskType.TEXT_CLASSIFICATION: "text",
    TaskType.AUDIO_TRANSCRIPTION: "audio",
}
BOOLEAN_CHOICES = ("yes", "no")
_MEDIA_TASKS = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.OBJECT_DETECTION, TaskType.AUDIO_TRANSCRIPTION})
_NULL = pa.scalar(None, pa.large_string())


def write_label_studio(frame: pd.DataFrame, ctx: DeliveryContext) -> tuple[bytes, int]:
    """One JSON array of tasks; the row count is the number of tasks."""
    t = deliverable_table(frame)
    struct = answers(t, ctx.task_type)
    meta = join_skip(
        [
            '{"kazi":{"confidence":',
            json_number(t["confidence"]),
            ',"sites":',
            sites_json(t["sites"]),
            ',"n_annotators":',
            json_number(t["n_annotators"]),
            ',"method":',
            per_unique(json_quote, t["method"]),
            ',"qa_version":',
            per_unique(json_quote, t["qa_version"]),
            "}}",
        ]
    )
    tasks = join_skip(
        [
            '{"data":',
            _data(t, ctx, struct),
            ',"annotations":[{"result":[',
            join_skip(_regions(t, ctx, struct), ","),
            '],"ground_truth":false,"was_cancelled":false}],"meta":',
            meta,
            "}",
        ]
    )
    return b"[" + join_bytes(tasks, ",") + b"]", t.num_rows


def _data(t: pa.Table, ctx: DeliveryContext, struct: pa.StructArray) -> pa.Array:
    members: list[pa.Array | str] = [join_skip(['"item_id":', json_quote(t["item_id"])])]
    ours = ["item_id"]
    if ctx.task_type == TaskType.LISTING_VERIFICATION:
        current = objects_to_struct(t["fields"])
        for f, child in zip(current.type, current.flatten(), strict=True):
            key = f"fields_{f.name}"
            ours.append(key)
            members.append(join_skip([f"{dumps(key)}:", json_values(child)]))
    else:
        key = MAIN_OBJECT[ctx.task_type]
        ours.append(key)
        source = t["media_uri"] if ctx.task_type in _MEDIA_TASKS else t["text"]
        members.append(pc.if_else(pc.is_valid(source), join_skip([f"{dumps(key)}:", json_quote(source)]), _NULL))
    client = object_inner(without_keys(t["record"], ours))
    return join_skip(["{", join_skip([client, *members], ","), "}"])


def _regions(t: pa.Table, ctx: DeliveryContext, struct: pa.StructArray) -> list[pa.Array]:
    """Per row, comma-joined JSON regions of each answer part (null where the answer lacks the part)."""
    names = {f.name for f in struct.type}
    main = MAIN_OBJECT.get(ctx.task_type)
    out: list[pa.Array] = []
    if "label" in names and main is not None:
        out.append(_choice_region("label", "label", main, struct.field("label")))
    if "boxes" in names and ctx.task_type == TaskType.OBJECT_DETECTION:
        out.append(_box_regions(t, ctx))
    if "text" in names and ctx.task_type == TaskType.AUDIO_TRANSCRIPTION:
        text = struct.field("text")
        out.append(
            _region("transcription", "transcription", "audio", "textarea", '{"text":[', json_quote(text), "]}", text)
        )
    if "fields" in names and pa.types.is_struct(struct.type.field("fields").type):
        fields = combine(struct.field("fields"))
        for f, child in zip(fields.type, fields.flatten(), strict=True):
            to = f"fields_{f.name}" if main is None else main
            if pa.types.is_boolean(f.type):
                out.append(_choice_region(f"field_{f.name}", f"field_{f.name}", to, _yes_no(child)))
            else:
                value = json_quote(as_text(child))
                out.append(
                    _region(f"field_{f.name}", f"field_{f.name}", to, "textarea", '{"text":[', value, "]}", child)
                )
    if "listing_valid" in names and ctx.task_type == TaskType.LISTING_VERIFICATION:
        first = ctx.fields[0] if ctx.fields else _first_field(struct)
        if first is not None:
            out.append(
                _choice_region(
                    "listing_valid", "listing_valid", f"fields_{first}", _yes_no(struct.field("listing_valid"))
                )
            )
    return out


def _region(
    region_id: str, from_name: str, to_name: str, kind: str, open_: str, value: pa.Array, close: str, present: pa.Array
) -> pa.Array:
    head = (
        f'{{"id":{dumps(region_id)},"from_name":{dumps(from_name)},"to_name":{dumps(to_name)},"type":"{kind}","value":'
    )
    return pc.if_else(pc.is_valid(present), join_skip([head + open_, value, close + "}"]), _NULL)


def _choice_region(region_id: str, from_name: str, to_name: str, choice: pa.Array) -> pa.Array:
    return _region(region_id, from_name, to_name, "choices", '{"choices":[', json_quote(choice), "]}", choice)


def _yes_no(values: pa.Array) -> pa.Array:
    yes, no = BOOLEAN_CHOICES
    return pc.if_else(pc.cast(values, pa.bool_()), yes, no)


def _box_regions(t: pa.Table, ctx: DeliveryContext) -> pa.Array:
    boxes = explode_boxes(t)
    width, height = resolve_sizes(t, ctx)
    w, h = width[boxes.parent], height[boxes.parent]
    original = pc.if_else(
        pa.array((w > 0) & (h > 0)),
        join_skip([',"original_width":', json_number(w), ',"original_height":', json_number(h), ',"image_rotation":0']),
        _NULL,
    )
    regions = join_skip(
        [
            '{"id":"box',
            json_number(boxes.index_in_item),
            '","from_name":"box","to_name":"image","type":"rectanglelabels","value":{"x":',
            json_number(boxes.x),
            ',"y":',
            json_number(boxes.y),
            ',"width":',
            json_number(boxes.width),
            ',"height":',
            json_number(boxes.height),
            ',"rotation":',
            json_number(boxes.rotation),
            ',"rectanglelabels":[',
            json_quote(boxes.label),
            "]}",
            original,
            "}",
        ]
    )
    return _per_item(boxes.offsets, regions)


def _per_item(offsets: np.ndarray, regions: pa.Array) -> pa.Array:
    """Regions of each item joined by commas; null for an item without any."""
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), regions)
    joined = pc.binary_join(lists, lit(","))
    return pc.if_else(pa.array(np.diff(offsets) > 0), joined, _NULL)


def _first_field(struct: pa.StructArray) -> str | None:
    """The first answered field, when the context does not give the schema's field order."""
    fields = struct.type.field("fields").type if "fields" in {f.name for f in struct.type} else None
    return fields[0].name if fields is not None and pa.types.is_struct(fields) and fields.num_fields else None
