"""The annotate stage: one sync pass of a work order's annotations, progress and stalled-work moves.

The parent flow calls it on a schedule until ``done`` (it can also run alone from its deployment). One pass:

1. **Load** (one task): split's result, manifests of every round and ``split/projects.json``, annotate's own
   moves log and moved projects, the partner registry, and the log's key columns.
2. **Pull** (one task per site, the sites in parallel, retried with backoff when Label Studio fails): every
   project of the site through the export API, normalised to log rows (:mod:`flows.annotate.pull`).
3. **Append**: the versions the log lacks, as one part named by content; nothing new, nothing written.
4. **Move stalled work** (``reassign=True``): batches past their due time with answers open are planned away
   (:func:`flows.annotate.sla.plan_move`), the moves part is written *first*, then Label Studio is made to
   match it (:mod:`flows.annotate.reassign`); a move left half done by a crash is finished on the next pass.
5. **Report**: progress artifact, a table per site, a markdown summary, ``annotate/status.parquet``.
6. ``annotate/result.json`` (:class:`~flows.core.models.AnnotateResult`), last.

A site whose Label Studio does not answer. Its task is retried (2 and 5 s later); if it still fails, the other
sites' annotations are logged, progress is reported with what the log holds, no move touches that site, and
then the flow run **fails** with :class:`SiteSyncError` naming each failed site and its URL. ``result.json`` is
not rewritten by a failed pass (it always describes a complete sync). A rerun, once the site answers, logs
everything exactly once.

Eligibility for moves. Split owns eligibility, so the candidates are the sites that got work in split's plan
(``SplitResult.sites_used``) that are still in the registry and answered this pass; capacity is estimated
from the registry (:func:`flows.annotate.reassign.spare_capacity`).

One pass at a time: a global concurrency limit per work order (``kazi-annotate-<id>``, one slot, a lease
that expires if the process dies) keeps a scheduled sync from running beside the parent flow's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.futures import as_completed

from flows.annotate.progress import COUNT_COLUMNS, PROGRESS_COLUMNS, Progress, progress, progress_markdown
from flows.annotate.pull import (
    Appended,
    ProjectRef,
    SitePull,
    append_new,
    item_ref_map,
    log_uri,
    moves_uri,
    normalise_tasks,
    project_refs,
    project_rounds,
    pull_site,
    read_json_or_empty,
    read_log,
    read_manifests,
    read_moves,
    write_part,
)
from flows.annotate.reassign import PendingMove, move_tasks, moved_due_at, pending_moves, spare_capacity
from flows.annotate.sla import MoveError, MovePlan, apply_moves, current_batches, overdue_batches, plan_move
from flows.annotate.sync import latest_versions
from flows.core import prefect_fixes  # noqa: F401  (applied on import: see the module)
from flows.core.labelstudio import LabelStudioClient, LabelStudioError, SecretNotFound
from flows.core.models import AnnotateResult, PartnerRegistry, PartnerSite, SplitResult, WorkOrder
from flows.core.s3 import ObjectNotFound, ObjectStore
from flows.core.schemas import ANNOTATIONS, MOVES
from flows.core.settings import load_settings
from flows.core.startup import tune_gc_after_imports
from flows.core.workspace import (
    default_registry_uri,
    load_registry,
    read_model_or_none,
    workspace,
    write_json,
    write_model,
    write_table,
)

#: Seconds between the attempts of a site's pull.
PULL_RETRY_DELAYS: list[float] = [2, 5]
#: How long a pass waits for another pass of the same work order to finish.
LOCK_TIMEOUT_SECONDS = 900
#: A pass holds its slot on a lease it renews; a killed process frees it after this long.
LOCK_LEASE_SECONDS = 60

_TS = pa.timestamp("us", tz="UTC")

#: ``annotate/status.parquet``: one row per batch, as of the pass that wrote it.
STATUS = pa.schema(
    [
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("site_id", pa.string(), nullable=False),
        pa.field("project_key", pa.string(), nullable=False),
        pa.field("sites", pa.string()),
        pa.field("due_at", _TS),
        pa.field("overdue", pa.bool_(), nullable=False),
        *[pa.field(c, pa.int64()) for c in COUNT_COLUMNS],
        pa.field("percent_done", pa.float64()),
        pa.field("per_hour_last_hour", pa.int64()),
        pa.field("per_hour_avg", pa.float64()),
        pa.field("first_answer_at", _TS),
        pa.field("last_answer_at", _TS),
        pa.field("eta", _TS),
        pa.field("as_of", _TS, nullable=False),
    ]
)


class SiteSyncError(RuntimeError):
    """Some sites could not be synced (or their moves not done); the others were, and are logged."""


@dataclass(frozen=True, eq=False)
class SyncState:
    """What one pass starts from. Tables are read once and handed on in memory."""

    split: SplitResult
    registry_uri: str
    registry: PartnerRegistry
    assignments: pa.Table
    batches: pd.DataFrame
    moves: pa.Table
    moved_projects: dict[str, dict[str, Any]]
    projects: dict[str, list[ProjectRef]]
    #: ``ref``, ``item_id`` of every planned item.
    refs: pa.Table
    #: The log's sync columns as read.
    log: pa.Table

    def project(self, key: str) -> ProjectRef | None:
        for refs in self.projects.values():
            for ref in refs:
                if ref.project_key == key:
                    return ref
        return None


@dataclass(frozen=True, eq=False)
class Moves:
    """What the SLA step did this pass."""

    history: pa.Table
    planned: list[MovePlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    final_rows: pa.Table = field(default_factory=ANNOTATIONS.empty_table)


# --- Tasks -----------------------------------------------------------------------------------------


@task(name="load sync state", task_run_name="load state of {work_order.id}", cache_policy=NO_CACHE)
def load_state(work_order: WorkOrder, split: SplitResult | None, registry_uri: str | None) -> SyncState:
    """Everything a pass needs from the workspace, read once."""
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    if split is None:
        uri = ws.uri("split", "result.json")
        split = read_model_or_none(store, uri, SplitResult)
        if split is None:
            raise ObjectNotFound(f"No split result at {uri}: run the split stage first, or pass `split`.")
    registry_uri = registry_uri or default_registry_uri(settings)
    registry = load_registry(store, registry_uri)
    assignments, batches = read_manifests(store, ws)
    moves = read_moves(store, ws)
    split_projects = read_json_or_empty(store, ws.uri("split", "projects.json"))
    if not split_projects:
        raise ObjectNotFound(f"No projects recorded at {ws.uri('split', 'projects.json')}: run the split stage first.")
    moved_projects = read_json_or_empty(store, ws.uri("annotate", "projects.json"))
    refs = item_ref_map(pc.unique(assignments["item_id"]).to_pylist(), settings.pseudonym_key)
    return SyncState(
        split=split,
        registry_uri=registry_uri,
        registry=registry,
        assignments=assignments,
        batches=batches.to_pandas(),
        moves=moves,
        moved_projects=moved_projects,
        projects=project_refs(split_projects, moved_projects, project_rounds(assignments, moves)),
        refs=pa.table({"ref": pa.array(list(refs), pa.string()), "item_id": pa.array(refs.values(), pa.string())}),
        log=read_log(store, ws),
    )


def _retryable(_task: Any, _run: Any, state: Any) -> bool:
    """Retry a pull when Label Studio failed (down, overloaded); a missing secret or a malformed export stays."""
    exc = state.data
    return isinstance(exc, LabelStudioError) and not isinstance(exc, SecretNotFound)


@task(
    name="pull site",
    task_run_name="pull {site.id}",
    cache_policy=NO_CACHE,
    retries=len(PULL_RETRY_DELAYS),
    retry_delay_seconds=PULL_RETRY_DELAYS,
    retry_condition_fn=_retryable,
)
def pull_site_annotations(
    work_order: WorkOrder, site: PartnerSite, projects: list[ProjectRef], refs: pa.Table
) -> SitePull:
    """Export every project of one site and normalise its annotations to log rows."""
    logger = get_run_logger()
    settings = load_settings()
    client = LabelStudioClient.for_site(site, settings)
    pulled = pull_site(
        client,
        projects,
        dict(zip(refs["ref"].to_pylist(), refs["item_id"].to_pylist(), strict=True)),
        task_type=work_order.task_type,
        key=settings.pseudonym_key,
        classes=work_order.label_schema.classes or None,
    )
    summary = pulled.summary()
    logger.info(
        "%s: %d annotations in %d annotated tasks of %d projects",
        site.id,
        summary["annotations"],
        summary["annotated_tasks"],
        summary["projects"],
    )
    if summary["unmapped_tasks"]:
        logger.warning(
            "%s: %d annotated tasks carry an item ref the assignment manifest does not know (not Kazi's tasks?); "
            "their annotations are not logged",
            site.id,
            summary["unmapped_tasks"],
        )
    return pulled


@task(name="append to log", task_run_name="append to the log of {work_order.id}", cache_policy=NO_CACHE)
def append_log(work_order: WorkOrder, known: pa.Table, exported: pa.Table) -> Appended:
    """Write the new versions as one part (nothing when nothing is new)."""
    settings = load_settings()
    appended = append_new(ObjectStore(settings), workspace(settings, work_order), known, exported)
    if appended.part_uri:
        get_run_logger().info("%d new annotation versions -> %s", appended.rows.num_rows, appended.part_uri)
    else:
        get_run_logger().info("No new annotation versions: nothing written")
    return appended


@task(name="measure progress", task_run_name="measure progress of {work_order.id}", cache_policy=NO_CACHE)
def measure_progress(
    work_order: WorkOrder, assignments: pa.Table, moves: pa.Table, log: pa.Table, now: datetime
) -> Progress:
    return progress(apply_moves(assignments, moves), latest_versions(log), now, work_order_id=work_order.id)


@task(name="plan moves", task_run_name="plan moves of {work_order.id}", cache_policy=NO_CACHE)
def plan_moves(
    work_order: WorkOrder, state: SyncState, log: pa.Table, measured: Progress, now: datetime, skip: list[str]
) -> Moves:
    """Plan the stalled batches away and write the moves part, before any Label Studio call."""
    logger = get_run_logger()
    settings = load_settings()
    registry_ids = {s.id for s in state.registry.sites}
    candidates = [state.registry.site(s) for s in state.split.sites_used if s in registry_ids and s not in skip]
    capacity = spare_capacity(candidates, work_order.task_type, now, work_order.deadline)
    late = overdue_batches(current_batches(state.batches, state.moves), measured.batches, now)
    latest = latest_versions(log)
    history = state.moves
    planned: list[MovePlan] = []
    notes: list[str] = []
    for _, batch in late.iterrows():
        if batch["site_id"] in skip:
            notes.append(f"{batch['reason']}; not moved: the Label Studio of {batch['site_id']} did not answer")
            continue
        common: dict[str, Any] = {
            "work_order_id": work_order.id,
            "moves": history,
            "overlap_across_sites": work_order.overlap_across_sites,
            "now": now,
        }
        try:
            # Where it goes decides when it is due there: plan once to learn the site, then with its due time.
            first = plan_move(batch, state.assignments, latest, capacity, due_at=work_order.deadline, **common)
            if first.empty or first.to_site is None:
                continue
            due = moved_due_at(
                state.registry.site(first.to_site), work_order.task_type, first.n_answers, now, work_order.deadline
            )
            plan = plan_move(batch, state.assignments, latest, capacity, due_at=due, **common)
        except MoveError as exc:
            notes.append(str(exc))
            logger.warning("%s", exc)
            continue
        logger.info("%s", plan.reason)
        history = pa.concat_tables([history, plan.moves])
        planned.append(plan)
    if planned:
        fresh = pa.concat_tables([p.moves for p in planned])
        part = write_part(ObjectStore(settings), moves_uri(workspace(settings, work_order)), fresh)
        logger.info("%d moved answer slots recorded in %s", fresh.num_rows, part)
    return Moves(history=history, planned=planned, notes=notes)


@task(
    name="move batch",
    task_run_name="move {pending.batch_id} from {pending.from_site} to {pending.to_site}",
    cache_policy=NO_CACHE,
)
def move_batch(
    work_order: WorkOrder, pending: PendingMove, source_site: PartnerSite, target_site: PartnerSite, source: ProjectRef
) -> pa.Table:
    """Make Label Studio match one move; record it in ``annotate/projects.json``; return late answers as rows."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    refs = item_ref_map(pending.item_ids, settings.pseudonym_key)
    by_item = {item: ref for ref, item in refs.items()}
    outcome = move_tasks(
        LabelStudioClient.for_site(source_site, settings),
        LabelStudioClient.for_site(target_site, settings),
        batch_id=pending.batch_id,
        move=pending.move,
        from_project_id=source.project_id,
        from_project_key=pending.from_project_key,
        to_project_key=pending.to_project_key,
        title=f"{work_order.id} {pending.batch_id} m{pending.move} due {pending.due_at:%d %b %H:%M} UTC"[:50],
        item_refs=[by_item[i] for i in pending.item_ids],
        maximum_annotations=pending.max_annotations,
    )
    uri = workspace(settings, work_order).uri("annotate", "projects.json")
    recorded = read_json_or_empty(store, uri)
    recorded[pending.to_project_key] = outcome.record()
    write_json(store, uri, recorded)
    logger.info(
        "%s: project %d %s at %s, %d tasks imported, %d deleted in %s. %s",
        pending.to_project_key,
        outcome.project_id,
        "created" if outcome.created else "found",
        pending.to_site,
        outcome.imported,
        outcome.deleted,
        pending.from_project_key,
        pending.reason,
    )
    if outcome.missing:
        logger.warning(
            "%s: %d moved items had no task in either project (deleted by hand?) and were not recreated",
            pending.to_project_key,
            len(outcome.missing),
        )
    pulled = normalise_tasks(
        outcome.final_tasks,
        source,
        refs,
        task_type=work_order.task_type,
        key=settings.pseudonym_key,
        classes=work_order.label_schema.classes or None,
    )
    return pulled.rows


@task(name="report progress", task_run_name="report progress of {work_order.id}", cache_policy=NO_CACHE)
def report_progress(
    work_order: WorkOrder,
    measured: Progress,
    batches: pd.DataFrame,
    pulls: list[dict[str, Any]],
    new_versions: int,
    failures: dict[str, str],
    moves: Moves,
) -> str:
    """Progress, per-site tables and a summary as Prefect artifacts; ``annotate/status.parquet``."""
    settings = load_settings()
    ws = workspace(settings, work_order)
    wo = measured.work_order.iloc[0]
    create_progress_artifact(
        float(wo["percent_done"]),
        key=f"{work_order.id}-annotate-progress",
        description=f"Answers done in {work_order.id}: {wo['answers_done']:,} of {wo['answers_total']:,}",
    )
    for site_id in measured.sites["site_id"]:
        rows = measured.batches[measured.batches["sites"].str.split(", ").map(lambda s, x=site_id: x in s)]
        create_table_artifact(
            key=f"{work_order.id}-annotate-site-{site_id}",
            table=_records(rows[["batch_id", "sites", *PROGRESS_COLUMNS]]),
            description=f"Batches of {work_order.id} at {site_id}",
        )
    create_table_artifact(
        key=f"{work_order.id}-annotate-sites",
        table=_records(measured.sites),
        description=f"Progress of {work_order.id} per partner site",
    )
    create_markdown_artifact(
        key=f"{work_order.id}-annotate-summary",
        markdown=_summary(measured, pulls, new_versions, failures, moves),
        description=f"Annotation sync of {work_order.id}",
    )
    uri = ws.uri("annotate", "status.parquet")
    write_table(ObjectStore(settings), uri, status_table(measured, batches, moves.history))
    return uri


@task(name="write annotate result", task_run_name="write annotate result of {work_order.id}", cache_policy=NO_CACHE)
def write_result(
    work_order: WorkOrder, measured: Progress, log: pa.Table, new_versions: int, status_uri: str, moved: list[str]
) -> AnnotateResult:
    """``annotate/result.json``, written last."""
    settings = load_settings()
    ws = workspace(settings, work_order)
    wo = measured.work_order.iloc[0]
    result = AnnotateResult(
        work_order_id=work_order.id,
        log_uri=log_uri(ws),
        status_uri=status_uri,
        annotations=latest_versions(log).num_rows,
        new_annotations=new_versions,
        done=bool(wo["answers_total"] > 0 and wo["answers_open"] == 0),
        moved_batches=moved,
    )
    write_model(ObjectStore(settings), ws.uri("annotate", "result.json"), result)
    return result


# --- The flow --------------------------------------------------------------------------------------


@flow(name="annotate", flow_run_name="{work_order.id} / annotate")
def annotate_flow(
    work_order: WorkOrder,
    split: SplitResult | None = None,
    registry_uri: str | None = None,
    now: datetime | None = None,
    reassign: bool = True,
) -> AnnotateResult:
    """Sync the work order's annotations from every partner site once; report progress; move stalled work.

    Args:
        work_order: The work order.
        split: Split's result; read from the workspace when missing.
        registry_uri: The partner registry; the workspace's ``registry/partner_sites.yaml`` when missing.
        now: The time progress and due dates are judged at (now when missing).
        reassign: Move batches past their due time to another site.

    Raises:
        SiteSyncError: some sites could not be synced (after retries) or their moves not done; everything
            else was logged and reported.
    """
    now = now or datetime.now(UTC)
    with _one_pass_at_a_time(work_order.id):
        state = load_state(work_order, split, registry_uri)
        pulls, failures = _pull_sites(work_order, state)
        exported = pa.concat_tables([p.rows for p in pulls.values()]) if pulls else ANNOTATIONS.empty_table()
        appended = append_log(work_order, state.log, exported)
        log, new_versions = appended.log, appended.rows.num_rows
        measured = measure_progress(work_order, state.assignments, state.moves, log, now)

        moves = Moves(history=state.moves)
        if reassign:
            moves = plan_moves(work_order, state, log, measured, now, sorted(failures))
            final, move_failures = _apply_moves(work_order, state, moves.history, set(failures))
            failures.update(move_failures)
            if final.num_rows:
                late = append_log(work_order, log, final)
                log, new_versions = late.log, new_versions + late.rows.num_rows
            moves = Moves(moves.history, moves.planned, moves.notes, move_failures, final)
            if moves.planned or final.num_rows:
                measured = measure_progress(work_order, state.assignments, moves.history, log, now)

        status_uri = report_progress(
            work_order,
            measured,
            state.batches,
            [p.summary() for p in pulls.values()],
            new_versions,
            failures,
            moves,
        )
        if failures:
            raise SiteSyncError(_failure_message(work_order, state.registry, failures))
        return write_result(work_order, measured, log, new_versions, status_uri, [p.batch_id for p in moves.planned])


# --- Helpers of the flow -----------------------------------------------------------------------------


@contextmanager
def _one_pass_at_a_time(work_order_id: str) -> Iterator[None]:
    """Hold the work order's one annotate slot (created on first use) for the whole pass."""
    name = f"kazi-annotate-{work_order_id}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    with concurrency(name, occupy=1, timeout_seconds=LOCK_TIMEOUT_SECONDS, lease_duration=LOCK_LEASE_SECONDS):
        yield


def _pull_sites(work_order: WorkOrder, state: SyncState) -> tuple[dict[str, SitePull], dict[str, str]]:
    """Every site's pull in parallel; a site that fails after its retries is reported, not fatal."""
    failures: dict[str, str] = {}
    futures = {}
    known = {s.id for s in state.registry.sites}
    for site_id, projects in state.projects.items():
        if site_id not in known:
            failures[site_id] = (
                f"holds {len(projects)} projects of {work_order.id} but is not in the partner registry "
                f"{state.registry_uri}"
            )
            continue
        site = state.registry.site(site_id)
        futures[pull_site_annotations.submit(work_order, site, projects, state.refs)] = site_id
    pulls: dict[str, SitePull] = {}
    for future in as_completed(list(futures)):
        site_id = futures[future]
        try:
            pulls[site_id] = future.result()
        except Exception as exc:
            failures[site_id] = str(exc)
    return dict(sorted(pulls.items())), failures


def _apply_moves(
    work_order: WorkOrder, state: SyncState, history: pa.Table, skip: set[str]
) -> tuple[pa.Table, dict[str, str]]:
    """Do in Label Studio every move of the log not recorded as done (this pass's and any a crash left)."""
    logger = get_run_logger()
    finals: list[pa.Table] = []
    failures: dict[str, str] = {}
    for pending in pending_moves(history, state.moved_projects):
        label = f"move of {pending.batch_id} from {pending.from_site} to {pending.to_site}"
        if pending.from_site in skip or pending.to_site in skip:
            logger.warning("%s waits: a site's Label Studio did not answer this pass", label)
            continue
        source = state.project(pending.from_project_key)
        if source is None:
            failures[label] = f"no Label Studio project is recorded for {pending.from_project_key}"
            continue
        try:
            finals.append(
                move_batch(
                    work_order,
                    pending,
                    state.registry.site(pending.from_site),
                    state.registry.site(pending.to_site),
                    source,
                )
            )
        except Exception as exc:
            failures[label] = str(exc)
    return (pa.concat_tables(finals) if finals else ANNOTATIONS.empty_table()), failures


def _failure_message(work_order: WorkOrder, registry: PartnerRegistry, failures: Mapping[str, str]) -> str:
    ids = {s.id for s in registry.sites}
    parts = []
    for what, why in sorted(failures.items()):
        where = f"site {what} (Label Studio at {registry.site(what).label_studio.url})" if what in ids else what
        parts.append(f"{where}: {why.rstrip('.')}")
    return (
        f"Annotation sync of {work_order.id}: {len(failures)} site(s) or move(s) failed after "
        f"{len(PULL_RETRY_DELAYS) + 1} attempts; the other sites' annotations are logged and progress is "
        "reported. " + " | ".join(parts) + ". Rerun the annotate flow once the site answers again: nothing is "
        "logged twice."
    )


def status_table(measured: Progress, batches: pd.DataFrame, moves: pa.Table) -> pa.Table:
    """One :data:`STATUS` row per batch: its current site, project and due time, progress and whether it is late."""
    current = current_batches(batches, moves if moves.num_rows else MOVES.empty_table())
    frame = measured.batches.merge(current[["batch_id", "site_id", "project_key", "due_at"]], on="batch_id", how="left")
    as_of = pd.Timestamp(measured.now)
    frame["due_at"] = pd.to_datetime(frame["due_at"], utc=True)
    frame["overdue"] = (frame["due_at"] <= as_of).fillna(False).astype(bool) & (frame["answers_open"] > 0)
    frame["as_of"] = as_of
    frame["site_id"] = frame["site_id"].fillna("")
    frame["project_key"] = frame["project_key"].fillna("")
    for column in ("due_at", "first_answer_at", "last_answer_at", "eta", "as_of"):
        frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
    return pa.Table.from_pandas(frame[STATUS.names], schema=STATUS, preserve_index=False)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-safe rows for a table artifact (times as ISO text, missing values as null)."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    return records


def _summary(
    measured: Progress, pulls: list[dict[str, Any]], new_versions: int, failures: Mapping[str, str], moves: Moves
) -> str:
    lines = [progress_markdown(measured), "", "### This sync", ""]
    lines.append(f"{new_versions:,} new annotation versions logged.")
    if pulls:
        lines += ["", "| site | projects | annotated tasks | annotations | unmapped tasks |"]
        lines += ["|---|---:|---:|---:|---:|"]
        lines += [
            f"| {p['site_id']} | {p['projects']:,} | {p['annotated_tasks']:,} | {p['annotations']:,} | "
            f"{p['unmapped_tasks']:,} |"
            for p in pulls
        ]
    if failures:
        lines += ["", "**Failed:**", *[f"- {k}: {v}" for k, v in sorted(failures.items())]]
    if moves.planned:
        lines += ["", "**Moved:**", *[f"- {p.reason}" for p in moves.planned]]
    if moves.notes:
        lines += ["", "**Late, not moved:**", *[f"- {n}" for n in moves.notes]]
    return "\n".join(lines)


tune_gc_after_imports()  # this module's imports are done: see flows.core.startup
