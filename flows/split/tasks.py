"""Label Studio task payloads for the projects of a plan.

A payload carries what the project's label config reads (:func:`flows.split.label_configs.data_keys`;
Label Studio refuses a task that lacks one), the batch id, the item's opaque ``item`` ref and
``kazi_task_key`` = ``f"{project_key}/{ref}"``, which the importer uses to import each task exactly once.

The ref is ``HMAC-SHA256(key, item_id)`` cut to :data:`REF_HEX` hex digits (:func:`item_refs`), never the
item id itself: gold items carry ids of their own (or are ids a client handed over as known answers), and
an id in the task data would tell an annotator which tasks are checks. Gold items are built exactly like
the others: the plan's ``is_gold`` flag and the gold answers never reach a payload, so nothing in Label
Studio tells them apart. Annotate maps a task back to its item through the assignment manifest:
``item_refs(assignments["item_id"], key)`` gives each manifest row's ref, to join with the exported
tasks' ``item`` (with ``batch_id``, which names the project). The key is ``Settings.pseudonym_key``.

Only the items a call needs are looked up (a hash filter first), so handing the whole items table to
:func:`build_tasks` project after project stays cheap; :func:`iter_project_tasks` does a whole plan in
one pass.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.models import TaskType, WorkOrder
from flows.core.refs import RefKey, item_refs
from flows.core.schemas import TASK_KEY

_MEDIA_KEY = {
    TaskType.IMAGE_CLASSIFICATION: "image",
    TaskType.OBJECT_DETECTION: "image",
    TaskType.AUDIO_TRANSCRIPTION: "audio",
}
_PLAN_COLUMNS = ["item_id", "batch_id", "project_key"]


def task_key(project_key: str, item_ref: str) -> str:
    return f"{project_key}/{item_ref}"


def _columns(table: pd.DataFrame | pa.Table) -> list[str]:
    return table.column_names if isinstance(table, pa.Table) else list(table.columns)


def _frame(table: pd.DataFrame | pa.Table, columns: list[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in _columns(table)]
    if missing:
        raise ValueError(f"table lacks columns {missing}")
    if isinstance(table, pa.Table):
        return table.select(columns).to_pandas()
    return table[columns]


def _content(items: pd.DataFrame | pa.Table, item_ids: pd.Series, work_order: WorkOrder) -> pd.DataFrame:
    """The columns the payload needs, indexed by item id, for ``item_ids`` only; every one must be there."""
    wanted = {
        TaskType.TEXT_CLASSIFICATION: ["text"],
        TaskType.LISTING_VERIFICATION: ["fields"],
    }.get(work_order.task_type, ["media_uri"])
    missing_columns = [c for c in ["item_id", *wanted] if c not in _columns(items)]
    if missing_columns:
        raise ValueError(f"table lacks columns {missing_columns}")
    # Membership in pyarrow: pandas' isin on its arrow-backed strings boxes every value.
    needed = pa.array(item_ids.drop_duplicates().to_numpy(dtype=object), pa.string())
    table = (
        items.select(["item_id", *wanted])
        if isinstance(items, pa.Table)
        else pa.Table.from_pandas(items[["item_id", *wanted]], preserve_index=False)
    )
    table = table.filter(pc.is_in(table.column("item_id"), value_set=needed))
    missing = needed.filter(pc.invert(pc.is_in(needed, value_set=table.column("item_id"))))
    if len(missing):
        raise ValueError(
            f"{len(missing)} planned items are not in the items table, e.g. {', '.join(missing.to_pylist()[:3])}"
        )
    return table.to_pandas().drop_duplicates("item_id").set_index("item_id")


def _field_values(raw: object) -> dict[str, Any]:
    if raw is None or (isinstance(raw, float) and pd.isna(raw)) or raw == "":
        return {}
    value = json.loads(str(raw))
    if not isinstance(value, dict):
        raise ValueError(f"fields must be a JSON object, got {raw!r}")
    return value


def _as_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector, then put it back as it was.

    Building 50,000 payloads allocates 100,000 dicts, none cyclic; the collections those allocations trigger
    rescan every live object and cost as much as the building itself.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _task_list(
    plan: pd.DataFrame,
    content: pd.DataFrame,
    work_order: WorkOrder,
    media_url: Callable[[str], str] | None,
    ref_key: RefKey,
) -> list[dict[str, Any]]:
    """One payload per row of ``plan``, in its order.

    Columns become Python lists once for the whole plan, so the per-task work is building one dict.
    """
    task_type = work_order.task_type
    ids: list[str] = plan["item_id"].tolist()
    batch_ids: list[str] = plan["batch_id"].tolist()
    projects: list[str] = plan["project_key"].tolist()
    picked = content.loc[plan["item_id"]]
    shown: list[dict[str, str]]
    if task_type == TaskType.TEXT_CLASSIFICATION:
        shown = [{"text": _as_text(v)} for v in picked["text"].tolist()]
    elif task_type == TaskType.LISTING_VERIFICATION:
        names = [f.name for f in work_order.label_schema.fields]
        shown = []
        for raw in picked["fields"].tolist():
            current = _field_values(raw)
            shown.append({f"fields_{n}": _as_text(current.get(n)) for n in names})
    else:
        assert media_url is not None
        media_key = _MEDIA_KEY[task_type]
        uris = [_as_text(v) for v in picked["media_uri"].tolist()]
        if not all(uris):
            item_id = ids[uris.index("")]
            raise ValueError(f"item {item_id} has no media_uri for a {task_type.value} task")
        shown = [{media_key: media_url(u)} for u in uris]
    refs: list[str] = item_refs(ids, ref_key).to_pylist()
    return [
        {"data": {"item": r, "batch_id": b, TASK_KEY: task_key(k, r), **extra}}
        for r, b, k, extra in zip(refs, batch_ids, projects, shown, strict=True)
    ]


def _payloads(
    plan: pd.DataFrame,
    content: pd.DataFrame,
    work_order: WorkOrder,
    media_url: Callable[[str], str] | None,
    ref_key: RefKey,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """``(project_key, payloads)`` per project of ``plan`` (distinct item_id, batch_id, project_key rows)."""
    with _gc_paused():
        tasks = _task_list(plan, content, work_order, media_url, ref_key)
    codes, keys = pd.factorize(plan["project_key"], sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(keys) + 1))
    for n, key in enumerate(keys):
        yield str(key), [tasks[j] for j in order[bounds[n] : bounds[n + 1]]]


def _check_media(work_order: WorkOrder, media_url: Callable[[str], str] | None) -> None:
    if work_order.task_type in _MEDIA_KEY and media_url is None:
        raise ValueError(f"{work_order.task_type.value} tasks need a media_url function")


def build_tasks(
    rows: pd.DataFrame | pa.Table,
    items: pd.DataFrame | pa.Table,
    work_order: WorkOrder,
    media_url: Callable[[str], str] | None = None,
    *,
    ref_key: RefKey,
) -> list[dict[str, Any]]:
    """Label Studio task payloads for the plan rows of one project, one per item, in plan order.

    Args:
        rows: Assignment rows (``ASSIGNMENTS`` columns) of exactly one project; the several slots of an
            item make one task.
        items: Canonical items (``ITEMS`` columns) holding at least every item in ``rows``, gold included.
        work_order: Gives the task type and the listing fields.
        media_url: Turns an item's ``media_uri`` into a URL Label Studio can load (a presigner, say);
            required for image and audio tasks.
        ref_key: The key of the items' opaque refs (:func:`item_refs`).

    Returns:
        ``[{"data": {...}}, ...]`` ready for Label Studio's import.

    Raises:
        ValueError: rows of several projects, items missing from ``items``, a media task without
            ``media_url`` or without a media URI.
    """
    _check_media(work_order, media_url)
    plan = _frame(rows, _PLAN_COLUMNS).drop_duplicates("item_id")
    if plan.empty:
        return []
    projects = plan["project_key"].unique()
    if len(projects) != 1:
        raise ValueError(f"build_tasks takes the rows of one project, got {len(projects)}: {list(projects)[:3]}")
    content = _content(items, plan["item_id"], work_order)
    return next(_payloads(plan, content, work_order, media_url, ref_key))[1]


def iter_project_tasks(
    assignments: pd.DataFrame | pa.Table,
    items: pd.DataFrame | pa.Table,
    work_order: WorkOrder,
    media_url: Callable[[str], str] | None = None,
    *,
    ref_key: RefKey,
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """``(project_key, payloads)`` for every project of a plan, in plan order, looking items up once.

    Same payloads as :func:`build_tasks` per project; the items table is filtered and indexed once
    for the whole plan instead of once per project. All payloads are built before the first is yielded
    (about 1 KB each), so a caller short of memory feeds it a site or a slice of batches at a time.
    """
    _check_media(work_order, media_url)
    plan = _frame(assignments, _PLAN_COLUMNS).drop_duplicates(["project_key", "item_id"])
    if plan.empty:
        return
    content = _content(items, plan["item_id"], work_order)
    yield from _payloads(plan, content, work_order, media_url, ref_key)
