"""The split stage: plan which partner site answers what, record the plan, then build its Label Studio projects.

Order of work, each step safe to repeat:

1. **Plan** (one task). Load the canonical items (ingest's ``items_uri``), the gold set (``work_order.gold.uri``)
   and the partner registry; :func:`flows.split.allocate.plan_split` decides everything. The gold answers go to
   ``split/gold.parquet``, then the assignment manifest and the batches to ``split/round=0/``, all *before* any
   Label Studio call, so the record of what was asked never lags what Label Studio holds.
2. **Materialise** (one task per site, the sites in parallel). In the site's own Label Studio instance, each
   batch becomes a project found or created by its Kazi key, holding the batch's tasks imported by
   ``kazi_task_key`` (:mod:`flows.split.materialise`). ``split/projects.json`` is rewritten after each site.
3. ``split/result.json`` (:class:`~flows.core.models.SplitResult`), last.

Reruns. The plan is seeded, but it also depends on *when* it is made (capacity runs until the deadline), so the
first run records its planning time in ``split/round=0/plan.json`` and a rerun plans again at that same time
(unless ``now`` is given). If the new plan differs from the stored manifest (the registry, the items or the gold
set changed), the flow stops with :class:`SplitPlanChanged` naming what differs, before touching Label Studio:
projects may already hold the stored plan's tasks and annotators may be working on them. ``replan=True``
accepts the change: the plan is made again at the current time (or ``now``), the manifest is overwritten and
the new plan's projects are completed. Nothing is deleted: projects or tasks of the old plan that the new one
does not have are reported as stale (allocation report and log) for an operator to remove.

Gold. The gold file (CSV, JSONL or Parquet, optionally gzipped) has an ``answer`` column and either

- the work order's content columns (``columns.text`` / ``media_uri`` / ``fields``): standalone known-answer
  items, mapped like the client's rows; their ids get the prefix :data:`GOLD_PREFIX` so they never clash
  with a client id (a gold file without an id column numbers its rows); or
- no content columns: its ids (``columns.item_id``, else ``item_id``) name items of the work order's own
  input, which are then allocated as gold only. Ids not among the accepted items are dropped (reported).

Only ids reach the plan; the answers stay in ``split/gold.parquet``, on Kazi's side. In Label Studio a task
carries an opaque ``item`` ref instead of any id (:func:`flows.split.tasks.item_refs`), so gold cannot be told
apart; annotate maps refs back through the assignment manifest.
"""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.dataset as ds
import pyarrow.json as pj
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from pydantic import BaseModel

from flows.core import prefect_fixes  # noqa: F401  (applied on import: see the module)
from flows.core.labelstudio import LabelStudioClient
from flows.core.models import IngestResult, PartnerSite, QAResult, SplitResult, TaskType, WorkOrder, Workspace
from flows.core.s3 import ObjectNotFound, ObjectStore, parse_uri, sha256_hex
from flows.core.schemas import ASSIGNMENTS, ITEMS
from flows.core.settings import load_settings
from flows.core.startup import tune_gc_after_imports
from flows.core.workspace import (
    default_registry_uri,
    load_registry,
    load_stage_result,
    read_json,
    read_table,
    workspace,
    write_json,
    write_model,
    write_table,
)
from flows.split.allocate import BATCH_COLUMNS, Plan, plan_split
from flows.split.label_configs import render_label_config
from flows.split.materialise import (
    ProjectOutcome,
    known_projects,
    materialise_batches,
    materialise_project,
    project_spec,
)
from flows.split.media import Presigner
from flows.split.rework import rework_plan
from flows.split.tasks import item_refs, iter_project_tasks

#: Prefix of standalone gold items' ids (never shown to anyone: Label Studio sees refs).
GOLD_PREFIX = "gold:"
ROUND = 0

#: ``split/round=<r>/batches.parquet``: one row per batch (= Label Studio project).
BATCHES = pa.schema(
    [
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("site_id", pa.string(), nullable=False),
        pa.field("project_key", pa.string(), nullable=False),
        pa.field("n_tasks", pa.int64(), nullable=False),
        pa.field("n_gold", pa.int64(), nullable=False),
        pa.field("max_annotations", pa.int64(), nullable=False),
        pa.field("n_answers", pa.int64(), nullable=False),
        pa.field("due_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

#: ``split/gold.parquet``: the gold items' content (standalone gold only) and their answers. Kazi side only.
GOLD = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("client_item_id", pa.string()),
        pa.field("text", pa.string()),
        pa.field("media_uri", pa.string()),
        pa.field("fields", pa.string(), metadata={"json": "object"}),
        pa.field("answer", pa.string()),
    ]
)

_CONTENT = ["item_id", "text", "media_uri", "fields"]
#: Task types whose payload shows an S3 object, presigned for the annotator's browser.
MEDIA_TASKS = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.OBJECT_DETECTION, TaskType.AUDIO_TRANSCRIPTION})


class SplitPlanChanged(RuntimeError):
    """The plan made now differs from the one stored (and maybe already in Label Studio)."""


class MaterialiseError(RuntimeError):
    """Some sites' projects could not be completed; the rest are done and recorded."""


class PlannedSplit(BaseModel):
    """What the plan task hands on: where the plan is and who works on it. Small, and free of secrets."""

    work_order_id: str
    planned_at: datetime
    reused: bool
    registry_uri: str
    items_uri: str
    assignments_uri: str
    batches_uri: str
    gold_uri: str | None
    sites: list[PartnerSite]
    passed_over: dict[str, str]
    batches: int
    tasks: int
    gold_tasks: int


# --- Workspace keys ------------------------------------------------------------------------------


def _round_uri(ws: Workspace, name: str, round_number: int = ROUND) -> str:
    return ws.uri("split", f"round={round_number}", name)


# --- Pure helpers: gold mapping, plan tables, plan comparison ------------------------------------


def _text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A column as one string array; nested values (JSON objects, lists) as their JSON."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_nested(column.type):
        return pa.array(
            [None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in column.to_pylist()],
            pa.string(),
        )
    return pc.cast(column, pa.string())


def _content_columns(work_order: WorkOrder) -> dict[str, str]:
    """Client columns a gold row needs for the task's payload: canonical name -> client column."""
    cols = work_order.columns
    if work_order.task_type == TaskType.TEXT_CLASSIFICATION:
        return {"text": cols.text or ""}
    if work_order.task_type == TaskType.LISTING_VERIFICATION:
        return {f"fields.{name}": column for name, column in cols.fields.items()}
    return {"media_uri": cols.media_uri or ""}


def gold_table(raw: pa.Table, work_order: WorkOrder, uri: str) -> tuple[pa.Table, bool]:
    """The client's gold file as :data:`GOLD` rows, and whether they are standalone items (see module doc).

    Raises:
        ValueError: no ``answer`` column, some but not all content columns, ids missing, blank or repeated.
    """
    names = raw.column_names
    if "answer" not in names:
        raise ValueError(f"gold file {uri} has no 'answer' column (columns: {', '.join(names)})")
    needed = _content_columns(work_order)
    present = [c for c in needed.values() if c in names]
    standalone = bool(needed) and len(present) == len(needed)
    if present and not standalone:
        missing = sorted(set(needed.values()) - set(present))
        raise ValueError(
            f"gold file {uri} has content column(s) {present} but lacks {missing}: give every content column "
            "of the work order (standalone gold items) or none (gold rows naming items of the input by id)"
        )
    id_column = next((c for c in (work_order.columns.item_id, "item_id") if c and c in names), None)
    n = raw.num_rows
    if id_column is None:
        if not standalone:
            raise ValueError(
                f"gold file {uri} has neither content columns nor an id column "
                f"({work_order.columns.item_id or 'item_id'}): its rows name no item"
            )
        client_ids = pa.array([f"r{i:06d}" for i in range(n)], pa.string())
    else:
        client_ids = pc.utf8_trim_whitespace(_text(raw.column(id_column)))
    blank = pc.or_kleene(pc.is_null(client_ids), pc.equal(client_ids, "")).fill_null(True)
    if pc.any(blank).as_py():
        rows = [i + 1 for i in pc.indices_nonzero(blank).to_pylist()[:5]]
        raise ValueError(f"gold file {uri}: rows {rows} have no id in column {id_column!r}")
    if pc.count_distinct(client_ids).as_py() != n:
        counts = pc.value_counts(client_ids).to_pylist()
        repeated = [str(c["values"]) for c in counts if c["counts"] > 1][:5]
        raise ValueError(f"gold file {uri} repeats ids: {', '.join(repeated)}")
    null = pa.nulls(n, pa.string())
    cols = work_order.columns
    if standalone:
        item_ids = pc.binary_join_element_wise(GOLD_PREFIX, client_ids, "")
        text = _text(raw.column(cols.text)) if cols.text and cols.text in names else null
        media = (
            pc.utf8_trim_whitespace(_text(raw.column(cols.media_uri)))
            if cols.media_uri and cols.media_uri in names
            else null
        )
        if cols.fields:
            # Gold sets are small (hundreds of rows): building the JSON objects row by row is cheap.
            values = {name: _text(raw.column(column)).to_pylist() for name, column in cols.fields.items()}
            fields = pa.array(
                [json.dumps({k: v[i] for k, v in values.items()}, ensure_ascii=False) for i in range(n)], pa.string()
            )
        else:
            fields = null
    else:
        item_ids, text, media, fields = client_ids, null, null, null
    table = pa.Table.from_arrays([item_ids, client_ids, text, media, fields, _text(raw.column("answer"))], schema=GOLD)
    return table, standalone


def batches_table(plan: Plan) -> pa.Table:
    """The plan's batches with the fixed :data:`BATCHES` schema (the same plan gives the same table)."""
    frame = plan.batches[BATCH_COLUMNS].copy()
    frame["due_at"] = pd.to_datetime(frame["due_at"], utc=True).dt.as_unit("us")
    return pa.Table.from_pandas(frame, schema=BATCHES, preserve_index=False)


def _site_counts(assignments: pa.Table) -> dict[str, int]:
    counts = assignments.group_by("site_id").aggregate([("site_id", "count")]).to_pylist()
    return {str(c["site_id"]): int(c["site_id_count"]) for c in counts}


def plan_differences(
    stored: pa.Table, new: pa.Table, stored_batches: pa.Table | None = None, new_batches: pa.Table | None = None
) -> list[str]:
    """How a new plan differs from the stored one, in words; empty when they are the same."""
    out: list[str] = []
    if not stored.equals(new):
        old_sites, new_sites = _site_counts(stored), _site_counts(new)
        for site in sorted(set(old_sites) | set(new_sites)):
            before, after = old_sites.get(site, 0), new_sites.get(site, 0)
            if before != after:
                out.append(f"site {site}: {before:,} answer slots stored, {after:,} now")
        old_items = set(pc.unique(stored["item_id"]).to_pylist())
        new_items = set(pc.unique(new["item_id"]).to_pylist())
        if old_items != new_items:
            out.append(f"items: {len(new_items - old_items):,} new, {len(old_items - new_items):,} no longer planned")
        if not out:
            out.append("same sites, counts and items, but items are assigned to other batches or slots")
    if stored_batches is not None and new_batches is not None and not stored_batches.equals(new_batches):
        old_due = dict(zip(*stored_batches.select(["project_key", "due_at"]).to_pydict().values(), strict=True))
        new_due = dict(zip(*new_batches.select(["project_key", "due_at"]).to_pydict().values(), strict=True))
        moved = [k for k in new_due if k in old_due and old_due[k] != new_due[k]]
        if moved:
            out.append(f"{len(moved):,} batches are due at other times (e.g. {moved[0]})")
        elif not out:
            out.append("the batches differ (sizes or projects)")
    return out


# --- S3 reads ------------------------------------------------------------------------------------


def _parquet_paths(store: ObjectStore, uri: str) -> list[str]:
    bucket, key = parse_uri(uri)
    if key.endswith(".parquet"):
        return [f"{bucket}/{key}"]
    prefix = key.rstrip("/") + "/"
    return sorted(f"{bucket}/{o.key}" for o in store.list_objects(bucket, prefix) if o.key.endswith(".parquet"))


def read_items(store: ObjectStore, uri: str, columns: list[str], ids: pa.Array | None = None) -> pa.Table:
    """Canonical items under ``uri`` (a Parquet object or a prefix), only ``columns``, only ``ids`` if given."""
    paths = _parquet_paths(store, uri)
    if not paths:
        raise ObjectNotFound(f"No canonical items under {uri}: run the ingest stage for this work order first.")
    dataset = ds.dataset(paths, schema=ITEMS, format="parquet", filesystem=store.filesystem)
    where = pc.field("item_id").isin(ids) if ids is not None else None
    return dataset.to_table(columns=columns, filter=where)


def _read_client_file(store: ObjectStore, uri: str) -> pa.Table:
    """A small client file (the gold set): CSV (all text), JSONL or Parquet, by name, optionally .gz."""
    bucket, key = parse_uri(uri)
    data = store.get_bytes(bucket, key)
    name = key.lower()
    if name.endswith(".gz"):
        data, name = gzip.decompress(data), name.removesuffix(".gz")
    if name.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data))
    if name.endswith(".csv"):
        header = pv.read_csv(io.BytesIO(data)).column_names
        convert = pv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()))
        return pv.read_csv(io.BytesIO(data), convert_options=convert)
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return pj.read_json(io.BytesIO(data))
    raise ValueError(f"gold file {uri}: unknown format; name it *.csv, *.jsonl or *.parquet (optionally .gz)")


# --- Tasks ---------------------------------------------------------------------------------------


@task(name="load ingest result", task_run_name="load ingest result of {work_order.id}", cache_policy=NO_CACHE)
def load_ingest_result(work_order: WorkOrder) -> IngestResult:
    return load_stage_result(load_settings(), work_order, "ingest", IngestResult)


@task(name="plan split", task_run_name="plan {work_order.id}", cache_policy=NO_CACHE)
def plan_work_order(
    work_order: WorkOrder,
    ingest: IngestResult,
    registry_uri: str | None,
    now: datetime | None,
    replan: bool,
) -> PlannedSplit:
    """Make the plan (or check it against the stored one) and write it before any Label Studio call."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    registry_uri = registry_uri or default_registry_uri(settings)
    registry = load_registry(store, registry_uri)
    # Fingerprint of the registry's content (not its comments or layout), to explain a changed plan.
    registry_sha = sha256_hex(registry.to_yaml().encode())
    meta_uri = _round_uri(ws, "plan.json")
    stored_meta: dict[str, Any] | None = read_json(store, meta_uri) if _exists(store, meta_uri) else None
    if now is not None:
        planned_at = now
    elif stored_meta is not None and not replan:
        planned_at = datetime.fromisoformat(stored_meta["planned_at"])
    else:
        planned_at = datetime.now(UTC)

    item_ids = read_items(store, ingest.items_uri, ["item_id"])
    gold, gold_note = _load_gold(store, work_order, item_ids["item_id"])
    gold_ids = gold.select(["item_id"]) if gold is not None else None
    plan = plan_split(work_order, registry, item_ids, gold_ids, planned_at)
    _check_refs(plan, settings.pseudonym_key)
    assignments, batches = plan.assignments, batches_table(plan)

    assignments_uri, batches_uri = _round_uri(ws, "assignments.parquet"), _round_uri(ws, "batches.parquet")
    gold_uri = ws.uri("split", "gold.parquet") if gold is not None else None
    reused = False
    stale_note = ""
    if _exists(store, assignments_uri):
        stored = read_table(store, assignments_uri, ASSIGNMENTS)
        stored_batches = read_table(store, batches_uri, BATCHES) if _exists(store, batches_uri) else None
        differences = plan_differences(stored, assignments, stored_batches, batches)
        if not differences and stored_batches is not None:
            reused = True
        elif differences and not replan:
            raise SplitPlanChanged(
                _changed_message(work_order, assignments_uri, stored_meta, differences, registry_sha, ingest)
            )
        elif differences:
            gone = sorted(set(pc.unique(stored["project_key"]).to_pylist()) - set(batches["project_key"].to_pylist()))
            dropped = f"{len(gone)} projects of the old plan are not in the new one: {', '.join(gone[:10])}. "
            stale_note = (
                f"Replanned: {'; '.join(differences)}. "
                + (dropped if gone else "")
                + "Nothing was deleted in Label Studio; stale projects and tasks are for an operator to remove."
            )
            logger.warning(stale_note)

    if not reused:
        meta = {
            "planned_at": planned_at.isoformat(),
            "round": ROUND,
            "seed": work_order.seed,
            "ingest_version": ingest.ingest_version,
            "registry_uri": registry_uri,
            "registry_sha256": registry_sha,
            "gold_uri": work_order.gold.uri,
            "gold_rows": gold.num_rows if gold is not None else 0,
        }
        # The planning time goes first: a run killed before the manifest is written replans at the same time.
        write_json(store, meta_uri, meta)
        if gold is not None and gold_uri is not None:
            write_table(store, gold_uri, gold)
        write_table(store, assignments_uri, assignments)
        write_table(store, batches_uri, batches)

    _report_plan(work_order, plan, reused, planned_at, [gold_note, stale_note])
    logger.info(
        "Plan of %s %s: %d tasks (%d gold) in %d batches at %s",
        work_order.id,
        "unchanged, reused" if reused else "written",
        plan.n_tasks,
        plan.n_gold_tasks,
        len(plan.batches),
        ", ".join(plan.sites_used),
    )
    return PlannedSplit(
        work_order_id=work_order.id,
        planned_at=planned_at,
        reused=reused,
        registry_uri=registry_uri,
        items_uri=ingest.items_uri,
        assignments_uri=assignments_uri,
        batches_uri=batches_uri,
        gold_uri=gold_uri,
        sites=[registry.site(s) for s in plan.sites_used],
        passed_over=plan.passed_over,
        batches=len(plan.batches),
        tasks=plan.n_tasks,
        gold_tasks=plan.n_gold_tasks,
    )


@task(
    name="materialise site",
    task_run_name="materialise {site.id}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=lambda _task, _run, state: _unreachable(state),
)
def materialise_site(work_order: WorkOrder, site: PartnerSite, planned: PlannedSplit) -> list[ProjectOutcome]:
    """Every project of one site, in its own Label Studio: find or create, then import the missing tasks."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    # No separate connection check: listing the projects (first call) fails with the same clear error.
    client = LabelStudioClient.for_site(site, settings)

    assignments = read_table(store, planned.assignments_uri, ASSIGNMENTS)
    assignments = assignments.filter(pc.equal(assignments["site_id"], site.id))
    batches = read_table(store, planned.batches_uri, BATCHES)
    batch_rows = batches.filter(pc.equal(batches["site_id"], site.id)).to_pylist()
    content = _task_content(store, planned, pc.unique(assignments["item_id"]))
    media = Presigner(store) if work_order.task_type in MEDIA_TASKS else None
    total = sum(int(b["n_tasks"]) for b in batch_rows)
    # Called from a sync task, Prefect's dual sync/async helper returns the id itself.
    progress = cast(
        UUID,
        create_progress_artifact(
            0.0, key=f"{work_order.id}-split-progress-{site.id}", description=f"Tasks in Label Studio at {site.id}"
        ),
    )
    done = 0

    def report(outcome: ProjectOutcome) -> None:
        nonlocal done
        done += outcome.planned
        update_progress_artifact(progress, 100.0 * done / max(total, 1))
        logger.info(
            "%s: project %d %s, %d of %d tasks imported%s",
            outcome.project_key,
            outcome.project_id,
            "created" if outcome.created else "found",
            outcome.imported,
            outcome.planned,
            f", {outcome.stale} stale tasks left in place" if outcome.stale else "",
        )

    return materialise_batches(
        client,
        work_order,
        batch_rows,
        assignments,
        content,
        ref_key=settings.pseudonym_key,
        media_url=media,
        on_project=report,
    )


@task(name="record projects", task_run_name="record projects of {work_order.id}", cache_policy=NO_CACHE)
def record_projects(work_order: WorkOrder, outcomes: list[ProjectOutcome]) -> dict[str, dict[str, Any]]:
    """Merge ``outcomes`` into ``split/projects.json`` (what earlier runs recorded stays) and link them."""
    settings = load_settings()
    store = ObjectStore(settings)
    uri = workspace(settings, work_order).uri("split", "projects.json")
    recorded: dict[str, dict[str, Any]] = read_json(store, uri) if _exists(store, uri) else {}
    recorded.update({o.project_key: o.record() for o in outcomes})
    write_json(store, uri, recorded)
    lines = ["| project | site | Label Studio |", "|---|---|---|"]
    lines += [f"| {k} | {v['site_id']} | [{v['project_id']}]({v['url']}) |" for k, v in sorted(recorded.items())]
    create_markdown_artifact(
        key=f"{work_order.id}-split-projects",
        markdown=f"### Label Studio projects of {work_order.id}\n\n" + "\n".join(lines),
        description="One project per batch, in each partner site's own Label Studio",
    )
    return recorded


@task(name="write split result", task_run_name="write split result of {work_order.id}", cache_policy=NO_CACHE)
def write_result(work_order: WorkOrder, planned: PlannedSplit, recorded: dict[str, dict[str, Any]]) -> SplitResult:
    settings = load_settings()
    store = ObjectStore(settings)
    keys = read_table(store, planned.batches_uri, BATCHES)["project_key"].to_pylist()
    missing = [k for k in keys if k not in recorded]
    if missing:
        raise MaterialiseError(f"{len(missing)} planned projects have no Label Studio project, e.g. {missing[0]}")
    result = SplitResult(
        work_order_id=work_order.id,
        plan_uri=planned.assignments_uri,
        batches=planned.batches,
        tasks=planned.tasks,
        gold_tasks=planned.gold_tasks,
        projects={k: int(recorded[k]["project_id"]) for k in keys},
        sites_used=[s.id for s in planned.sites],
        sites_passed_over=planned.passed_over,
    )
    write_model(store, workspace(settings, work_order).uri("split", "result.json"), result)
    return result


# --- The flow ------------------------------------------------------------------------------------


@flow(name="split", flow_run_name="{work_order.id} / split")
def split_flow(
    work_order: WorkOrder,
    ingest: IngestResult | None = None,
    registry_uri: str | None = None,
    now: datetime | None = None,
    replan: bool = False,
) -> SplitResult:
    """Allocate the work order to partner sites and create each site's Label Studio projects.

    Args:
        work_order: The work order.
        ingest: Ingest's result; read from the workspace when missing.
        registry_uri: The partner registry; the workspace's ``registry/partner_sites.yaml`` when missing.
        now: When the work starts (capacity counts from here); a rerun reuses the first run's time.
        replan: Accept a plan that differs from the stored one (registry, items or gold changed).
    """
    ingest = ingest or load_ingest_result(work_order)
    planned = plan_work_order(work_order, ingest, registry_uri, now, replan)
    futures = {materialise_site.submit(work_order, site, planned): site.id for site in planned.sites}
    recorded: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for future in as_completed(list(futures)):
        site_id = futures[future]
        try:
            outcomes = future.result()
        except Exception as exc:
            failures.append(f"{site_id}: {exc}")
            continue
        # Rewritten after each site, so projects.json never lags a finished site.
        recorded = record_projects(work_order, outcomes)
    if failures:
        raise MaterialiseError(
            f"Split of {work_order.id}: the projects of {len(failures)} site(s) are incomplete: "
            + " | ".join(failures)
            + ". Fix the cause and rerun: finished projects are found again and only missing tasks are imported."
        )
    return write_result(work_order, planned, recorded)


@task(
    name="materialise review",
    task_run_name="review round {round_number} at {site.id}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=lambda _task, _run, state: _unreachable(state),
)
def materialise_review(
    work_order: WorkOrder, site: PartnerSite, round_number: int, rework_uri: str, items_uri: str
) -> list[ProjectOutcome]:
    """The review project of one site: the items QA sent back, with the earlier answers as predictions."""
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    client = LabelStudioClient.for_site(site, settings)
    assignments = read_table(store, _round_uri(ws, "assignments.parquet", round_number), ASSIGNMENTS)
    assignments = assignments.filter(pc.equal(assignments["site_id"], site.id))
    batch = read_table(store, _round_uri(ws, "batches.parquet", round_number), BATCHES)
    batch_rows = batch.filter(pc.equal(batch["site_id"], site.id)).to_pylist()
    rework = read_table(store, rework_uri)
    rework = rework.filter(pc.equal(rework["site_id"], site.id))
    ids = pc.unique(assignments["item_id"])
    content = read_items(store, items_uri, _CONTENT, ids)
    media = Presigner(store) if work_order.task_type in MEDIA_TASKS else None
    refs = dict(
        zip(
            item_refs(rework["item_id"], settings.pseudonym_key).to_pylist(),
            rework["predictions"].to_pylist(),
            strict=True,
        )
    )
    label_config = render_label_config(work_order)
    known = known_projects(client)
    outcomes = []
    for key, payloads in iter_project_tasks(assignments, content, work_order, media, ref_key=settings.pseudonym_key):
        for payload in payloads:
            predictions = refs.get(payload["data"]["item"])
            if predictions:
                payload["predictions"] = json.loads(predictions)
        spec = project_spec(work_order, next(b for b in batch_rows if b["project_key"] == key), label_config)
        outcomes.append(materialise_project(client, spec, payloads, known=known))
    return outcomes


@flow(name="split-rework", flow_run_name="{work_order.id} / rework round {round_number}")
def rework_flow(work_order: WorkOrder, qa: QAResult, round_number: int, registry_uri: str | None = None) -> SplitResult:
    """Send QA's rework list to the chosen sites as review projects (round ``round_number``)."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    if not qa.rework_uri:
        raise ValueError(f"{work_order.id}: QA round {qa.round_number} wrote no rework list")
    registry = load_registry(store, registry_uri or default_registry_uri(settings))
    ingest = load_ingest_result(work_order)
    rework = read_table(store, qa.rework_uri)
    due = min(work_order.deadline, datetime.now(UTC) + timedelta(days=1))
    assignments, batches = rework_plan(work_order, rework, round_number, due)
    # The manifest first, before any Label Studio call, as for the first round.
    write_table(store, _round_uri(ws, "assignments.parquet", round_number), assignments)
    write_table(store, _round_uri(ws, "batches.parquet", round_number), pa.Table.from_pylist(batches, BATCHES))
    sites = [registry.site(str(b["site_id"])) for b in batches]
    recorded: dict[str, dict[str, Any]] = {}
    for site in sites:
        outcomes = materialise_review(work_order, site, round_number, qa.rework_uri, ingest.items_uri)
        recorded = record_projects(work_order, outcomes)
    logger.info(
        "%s: review round %d: %d items to %s",
        work_order.id,
        round_number,
        rework.num_rows,
        ", ".join(s.id for s in sites),
    )
    return SplitResult(
        work_order_id=work_order.id,
        plan_uri=_round_uri(ws, "assignments.parquet", round_number),
        batches=len(batches),
        tasks=sum(int(str(b["n_tasks"])) for b in batches),
        gold_tasks=0,
        projects={str(b["project_key"]): int(recorded[str(b["project_key"])]["project_id"]) for b in batches},
        sites_used=[s.id for s in sites],
        sites_passed_over={},
    )


# --- Helpers of the tasks ------------------------------------------------------------------------


def _unreachable(state: Any) -> bool:
    """Retry a site only when a service was unreachable; a refused token or a bad config stays failed."""
    text = f"{getattr(state, 'message', '')} {getattr(state, 'data', '')}"
    return "is not reachable" in text or "Cannot reach S3" in text


def _exists(store: ObjectStore, uri: str) -> bool:
    return store.head(*parse_uri(uri)) is not None


def _load_gold(store: ObjectStore, work_order: WorkOrder, item_ids: pa.ChunkedArray) -> tuple[pa.Table | None, str]:
    """The gold rows to plan with, and a note when some had to be dropped."""
    if work_order.gold.uri is None:
        return None, ""
    gold, standalone = gold_table(_read_client_file(store, work_order.gold.uri), work_order, work_order.gold.uri)
    if standalone:
        return gold, ""
    known = pc.is_in(gold["item_id"], value_set=item_ids.combine_chunks())
    dropped = gold.filter(pc.invert(known))["item_id"].to_pylist()
    if not dropped:
        return gold, ""
    note = (
        f"{len(dropped)} of {gold.num_rows} gold rows name items that are not among the accepted items "
        f"(quarantined, duplicates or absent) and are not used, e.g. {', '.join(dropped[:3])}."
    )
    get_run_logger().warning(note)
    kept = gold.filter(known)
    return (kept if kept.num_rows else None), note


def _check_refs(plan: Plan, key: Any) -> None:
    ids = pc.unique(plan.assignments["item_id"])
    refs = item_refs(ids, key)
    if pc.count_distinct(refs).as_py() != len(refs):
        raise ValueError(
            f"Two of the {len(ids):,} items of {plan.work_order_id} share an item ref (a 64-bit HMAC): "
            "rename one item or change KAZI_PSEUDONYM_KEY before any project is created."
        )


def _changed_message(
    work_order: WorkOrder,
    assignments_uri: str,
    stored_meta: dict[str, Any] | None,
    differences: list[str],
    registry_sha: str,
    ingest: IngestResult,
) -> str:
    causes = []
    if stored_meta is not None:
        if stored_meta.get("registry_sha256") != registry_sha:
            causes.append(f"the partner registry {stored_meta.get('registry_uri')} changed")
        if stored_meta.get("ingest_version") != ingest.ingest_version:
            before = stored_meta.get("ingest_version")
            causes.append(f"the input changed (ingest version {before} -> {ingest.ingest_version})")
        if stored_meta.get("gold_uri") != work_order.gold.uri:
            causes.append("the gold set changed")
    when = f" made at {stored_meta['planned_at']}" if stored_meta else ""
    return (
        f"The split of {work_order.id} differs from the plan{when} stored at {assignments_uri}: "
        + "; ".join(differences)
        + (f" (likely because {', '.join(causes)})" if causes else "")
        + ". Its Label Studio projects may already hold that plan's tasks. If the change is intended, rerun "
        "with replan=True (the stored manifest is replaced; old projects and tasks are reported, not deleted)."
    )


def _report_plan(work_order: WorkOrder, plan: Plan, reused: bool, planned_at: datetime, notes: list[str]) -> None:
    head = f"Planned at {planned_at.isoformat()}" + (" (stored plan, unchanged)" if reused else "") + "."
    extra = "\n".join(f"- {n}" for n in notes if n)
    create_markdown_artifact(
        key=f"{work_order.id}-split-allocation",
        markdown=f"{plan.summary_markdown()}\n\n{head}\n" + (f"\n{extra}\n" if extra else ""),
        description="Which partner site answers what, and why the others got no work",
    )
    sites = plan.sites[["site_id", "capacity_answers", "allocated_answers", "utilisation", "quality", "batches", "why"]]
    create_table_artifact(
        key=f"{work_order.id}-split-sites",
        table=json.loads(sites.to_json(orient="records")),
        description="Capacity and allocation per eligible site",
    )


def _task_content(store: ObjectStore, planned: PlannedSplit, ids: pa.Array) -> pa.Table:
    """What the payloads of ``ids`` show: canonical items, then standalone gold items for the ids not found."""
    items = read_items(store, planned.items_uri, _CONTENT, ids)
    if planned.gold_uri is None:
        return items
    rest = ids.filter(pc.invert(pc.is_in(ids, value_set=items["item_id"].combine_chunks())))
    if not len(rest):
        return items
    # The answer column is not read: what is not loaded cannot reach a payload.
    gold = read_table(store, planned.gold_uri, GOLD).select(_CONTENT)
    gold = gold.filter(pc.is_in(gold["item_id"], value_set=rest))
    return pa.concat_tables([items, gold.cast(items.schema)])


tune_gc_after_imports()  # this module's imports are done: see flows.core.startup
