"""The Label Studio side of an SLA move: recreate a stalled batch's unfinished tasks at another site.

:func:`flows.annotate.sla.plan_move` decides what moves where, and the flow writes the moves log *before*
anything here runs. :func:`move_tasks` then makes Label Studio match the log, every step safe to repeat:

1. export the old project (every task, one call): the task data to copy, and the ids to delete;
2. find or create the new project at the target site by its Kazi key, with the old project's label config
   and instructions (read from the old project, so both sites label alike);
3. import the moved tasks that are not there yet (``import_missing`` by ``kazi_task_key``, the new
   project's key over the same item ref);
4. delete the moved tasks in the old project, so nobody there answers what is now elsewhere. Annotations
   those tasks already carry were logged by this pass's pull; the export of step 1 is handed back
   (:attr:`MoveOutcome.final_tasks`) so that an answer given since the pull is logged too.

A crash anywhere leaves the log ahead of Label Studio, never behind: the rerun finds the new project by key,
imports nothing twice (and nothing from a task already deleted, since the import precedes the delete), and
deletes what is left. The flow records a finished move in ``annotate/projects.json``.

Where and by when (:func:`spare_capacity`, :func:`moved_due_at`) are the flow's estimates, kept simple on
purpose: split owns eligibility and allocation, so the sites that got work in split's plan are the candidates,
and capacity is the registry's measured rate (``annotators x hours_per_day x items_per_hour`` per day) until
the deadline. A site without a measured rate for the task type counts as no capacity: it still takes work
when no measured site has room (plan_move picks the most spare capacity, even if negative).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from flows.core.labelstudio import LabelStudioClient, LabelStudioError, ProjectSpec
from flows.core.models import PartnerSite, TaskType
from flows.core.schemas import TASK_KEY

#: Tasks per delete call.
DELETE_CHUNK = 1_000
#: Moved work is never due sooner than this after the move (a batch must not bounce on the next pass).
MIN_MOVE_HOURS = 1.0


# --- Where and by when -----------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def answers_per_day(site: PartnerSite, task_type: TaskType) -> float:
    """The site's measured answers per day for ``task_type`` (0 when it has no measured rate)."""
    rate = site.capacity.items_per_hour.get(task_type, 0.0)
    return site.capacity.annotators * site.capacity.hours_per_day * float(rate)


def spare_capacity(
    sites: Sequence[PartnerSite], task_type: TaskType, now: datetime, deadline: datetime
) -> dict[str, float]:
    """Site id -> answers each site can still give between ``now`` and ``deadline`` (plan_move's input)."""
    days = max((_utc(deadline) - _utc(now)).total_seconds() / 86_400, 0.0)
    return {s.id: answers_per_day(s, task_type) * days for s in sites}


def moved_due_at(
    site: PartnerSite | None, task_type: TaskType, answers: int, now: datetime, deadline: datetime
) -> datetime:
    """When ``answers`` moved to ``site`` are due: its team's pace, by the deadline, at least an hour away."""
    now, deadline = _utc(now), _utc(deadline)
    per_day = answers_per_day(site, task_type) if site is not None else 0.0
    earliest = now + timedelta(hours=MIN_MOVE_HOURS)
    if per_day <= 0:
        return max(deadline, earliest)
    return max(min(now + timedelta(days=answers / per_day), deadline), earliest)


# --- What is left to do in Label Studio -------------------------------------------------------------


@dataclass(frozen=True)
class PendingMove:
    """One move of the moves log (a batch's slots from one project to another) not yet done in Label Studio."""

    batch_id: str
    move: int
    from_site: str
    from_project_key: str
    to_site: str
    to_project_key: str
    #: The moved items (one task each), in the moves log's order.
    item_ids: tuple[str, ...]
    #: The most slots any moved item needs: the new project's ``maximum_annotations``.
    max_annotations: int
    round: int
    due_at: datetime
    reason: str


def pending_moves(moves: pa.Table, recorded: Mapping[str, Any]) -> list[PendingMove]:
    """The moves whose new project ``annotate/projects.json`` does not record as done, in move order.

    Args:
        moves: The moves log (:data:`flows.core.schemas.MOVES`).
        recorded: ``annotate/projects.json``: project key -> record, written once a move is done.
    """
    if moves.num_rows == 0:
        return []
    frame = moves.to_pandas()
    out: list[PendingMove] = []
    for (batch_id, move, to_key), rows in frame.groupby(["batch_id", "move", "to_project_key"], sort=True):
        if to_key in recorded:
            continue
        first = rows.iloc[0]
        slots = rows.groupby("item_id", sort=False).size()
        out.append(
            PendingMove(
                batch_id=str(batch_id),
                move=int(move),
                from_site=str(first["from_site"]),
                from_project_key=str(first["from_project_key"]),
                to_site=str(first["to_site"]),
                to_project_key=str(to_key),
                item_ids=tuple(str(i) for i in slots.index),
                max_annotations=int(slots.max()),
                round=int(first["round"]),
                due_at=first["due_at"].to_pydatetime(),
                reason=str(first["reason"]),
            )
        )
    return sorted(out, key=lambda m: (m.move, m.batch_id))


# --- Label Studio ----------------------------------------------------------------------------------
# Two calls the adapter (flows.core.labelstudio) does not offer yet; they go through its SDK client and
# its error translation so messages name the instance and site like every other Label Studio error.


@dataclass(frozen=True)
class ProjectSettings:
    """What a moved batch's new project copies from the old one."""

    title: str
    label_config: str
    instructions: str
    maximum_annotations: int


def project_settings(client: LabelStudioClient, project_id: int) -> ProjectSettings:
    """The label config, instructions and overlap of one project."""
    try:
        project = client._sdk.projects.get(id=project_id)
    except Exception as exc:
        raise client._fail(f"read project {project_id}", exc) from None
    if not project.label_config:
        raise LabelStudioError(f"Label Studio project {project_id} at {client.url} has no label config")
    return ProjectSettings(
        title=project.title or "",
        label_config=project.label_config,
        instructions=project.expert_instruction or "",
        maximum_annotations=int(project.maximum_annotations or 1),
    )


def delete_tasks(client: LabelStudioClient, project_id: int, task_ids: Sequence[int]) -> int:
    """Delete tasks (with their annotations) from a project, a chunk per call; returns how many were asked."""
    ids = sorted({int(t) for t in task_ids})
    for start in range(0, len(ids), DELETE_CHUNK):
        chunk = ids[start : start + DELETE_CHUNK]
        try:
            client._sdk.actions.create(
                id="delete_tasks",
                project=project_id,
                selected_items={"all": False, "included": chunk},
            )
        except Exception as exc:
            raise client._fail(f"delete {len(chunk)} tasks of project {project_id}", exc) from None
    return len(ids)


@dataclass(frozen=True, eq=False)
class MoveOutcome:
    """What making Label Studio match one move did."""

    batch_id: str
    move: int
    from_project_key: str
    project_key: str
    site_id: str | None
    project_id: int
    url: str
    created: bool
    imported: int
    deleted: int
    #: Moved items found in neither project (their tasks were deleted by hand): not recreated.
    missing: list[str] = field(default_factory=list)
    #: The deleted tasks that carried annotations, as exported just before the delete (to log late answers).
    final_tasks: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The ``annotate/projects.json`` entry of the new project."""
        return {
            "site_id": self.site_id,
            "project_id": self.project_id,
            "url": self.url,
            "batch_id": self.batch_id,
            "move": self.move,
            "from_project_key": self.from_project_key,
        }


def move_tasks(
    source: LabelStudioClient,
    target: LabelStudioClient,
    *,
    batch_id: str,
    move: int,
    from_project_id: int,
    from_project_key: str,
    to_project_key: str,
    title: str,
    item_refs: Sequence[str],
    maximum_annotations: int,
) -> MoveOutcome:
    """Recreate the tasks of ``item_refs`` from the old project in the new one, then delete them in the old.

    Args:
        source: The site the work moves away from.
        target: The site it moves to.
        batch_id: The batch (for the record).
        move: The batch's move number (for the record).
        from_project_id: The old project's id at ``source``.
        from_project_key: Its Kazi key.
        to_project_key: The new project's Kazi key (``plan_move``'s ``project_key``).
        title: The new project's title.
        item_refs: Refs of the moved items (one task each), in order.
        maximum_annotations: The new project's overlap (``MovePlan.max_annotations``).

    Returns:
        The new project, what was imported and deleted, and the deleted tasks that carried annotations.
    """
    old = source.export(from_project_id, all_tasks=True)
    wanted = dict.fromkeys(item_refs)
    by_ref: dict[str, dict[str, Any]] = {}
    for task in old:
        ref = task.get("data", {}).get("item")
        if ref in wanted:
            by_ref[ref] = task
    settings = project_settings(source, from_project_id)
    spec = ProjectSpec(
        key=to_project_key,
        title=title,
        label_config=settings.label_config,
        instructions=settings.instructions,
        maximum_annotations=max(1, maximum_annotations),
    )
    project_id, created = target.ensure_project(spec)
    payloads = [
        {"data": {**by_ref[ref]["data"], TASK_KEY: f"{to_project_key}/{ref}"}} for ref in wanted if ref in by_ref
    ]
    imported = target.import_missing(project_id, payloads, fresh=created)
    missing: list[str] = []
    if len(payloads) < len(wanted):
        # Tasks gone from the old project: a rerun after the delete (then they are in the new one already).
        present = target.task_keys(project_id)
        missing = [r for r in wanted if r not in by_ref and f"{to_project_key}/{r}" not in present]
    moved = [by_ref[r] for r in wanted if r in by_ref]
    deleted = delete_tasks(source, from_project_id, [int(t["id"]) for t in moved])
    return MoveOutcome(
        batch_id=batch_id,
        move=move,
        from_project_key=from_project_key,
        project_key=to_project_key,
        site_id=target.site_id,
        project_id=project_id,
        url=f"{target.url}/projects/{project_id}",
        created=created,
        imported=imported,
        deleted=deleted,
        missing=missing,
        final_tasks=[t for t in moved if t.get("annotations")],
    )
