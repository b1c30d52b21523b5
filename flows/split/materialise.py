"""The Label Studio side of split: make each planned batch a project holding exactly its tasks.

Plain functions over a :class:`~flows.core.labelstudio.LabelStudioClient` (one site's instance); the flow
builds the client and the payloads and calls these. A project is found by its Kazi key (the ``[kazi:<key>]``
marker in its description), so a rerun never creates a second one; its tasks are imported only when their
``kazi_task_key`` is not there yet, in chunks that Label Studio commits one transaction each, so a run
killed part-way leaves whole chunks and the rerun imports exactly the rest.

A project this run has just created cannot hold tasks yet, so its key lookup (a full export) is skipped.
Tasks a project holds that the plan no longer has (after a ``replan``) are counted as *stale* and left in
place: they may already carry annotations, and deleting work is an operator's decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from flows.core.labelstudio import IMPORT_CHUNK as ADAPTER_IMPORT_CHUNK
from flows.core.labelstudio import LabelStudioClient, Project, ProjectSpec
from flows.core.models import WorkOrder
from flows.core.schemas import TASK_KEY
from flows.split.label_configs import render_label_config
from flows.split.tasks import RefKey, iter_project_tasks

#: Tasks per import call: one Label Studio transaction each. Large calls are fastest (10,000 tasks in one
#: call take 2.9 s, ten calls of 1,000 take 4.1 s); a split project holds at most 1,000 tasks anyway.
IMPORT_CHUNK = ADAPTER_IMPORT_CHUNK
#: Projects whose payloads are built at once (bounds memory: about 1 KB per task).
PROJECTS_PER_PASS = 20

Payload = dict[str, Any]


@dataclass(frozen=True)
class ProjectOutcome:
    """What materialising one project did."""

    project_key: str
    site_id: str | None
    project_id: int
    url: str
    created: bool
    planned: int
    imported: int
    stale: int = 0

    def record(self) -> dict[str, Any]:
        """The ``split/projects.json`` entry of this project."""
        return {"site_id": self.site_id, "project_id": self.project_id, "url": self.url}


def project_url(client: LabelStudioClient, project_id: int) -> str:
    return f"{client.url}/projects/{project_id}"


def project_title(work_order_id: str, batch_id: str, due_at: datetime | None = None) -> str:
    """What annotators see in the project list: the work order, the batch and when it is due (UTC)."""
    due = f" due {due_at:%d %b %H:%M} UTC" if due_at is not None else ""
    return f"{work_order_id} {batch_id}{due}"[:50]


def project_spec(work_order: WorkOrder, batch: Mapping[str, Any], label_config: str) -> ProjectSpec:
    """The project of one row of the plan's batches (``project_key``, ``batch_id``, ``max_annotations``, ...)."""
    return ProjectSpec(
        key=str(batch["project_key"]),
        title=project_title(work_order.id, str(batch["batch_id"]), batch.get("due_at")),
        label_config=label_config,
        instructions=work_order.instructions,
        maximum_annotations=int(batch["max_annotations"]),
    )


def known_projects(client: LabelStudioClient) -> dict[str, Project]:
    """The instance's Kazi projects by key, listed once for a whole site."""
    return {p.key: p for p in client.projects() if p.key is not None}


def materialise_project(
    client: LabelStudioClient,
    spec: ProjectSpec,
    tasks: list[Payload],
    *,
    known: Mapping[str, Project] | None = None,
    chunk: int | None = None,
) -> ProjectOutcome:
    """Find or create the project of ``spec`` and import those of ``tasks`` it does not hold yet.

    Args:
        client: The site's Label Studio.
        spec: The project (its ``key`` is how it is found again).
        tasks: Every planned task payload of the project (each with ``kazi_task_key``).
        known: The instance's projects by key (:func:`known_projects`); None lists them.
        chunk: Tasks per import call; defaults to :data:`IMPORT_CHUNK`.

    Returns:
        The project's id and URL, whether it was created, and how many tasks were imported or are stale.
    """
    project_id, created = client.ensure_project(spec, dict(known) if known is not None else None)
    planned = {t["data"][TASK_KEY] for t in tasks}
    if len(planned) != len(tasks):
        raise ValueError(f"project {spec.key}: {len(tasks) - len(planned)} tasks repeat a {TASK_KEY}")
    # What LabelStudioClient.import_missing does, with the key lookup kept here (it also counts stale tasks)
    # and the body serialised by the adapter rather than walked through the SDK's converter.
    present = set() if created else client.task_keys(project_id)
    todo = [t for t in tasks if t["data"][TASK_KEY] not in present]
    size = chunk or IMPORT_CHUNK
    imported = 0
    for start in range(0, len(todo), size):
        imported += client.import_tasks_json(project_id, todo[start : start + size])
    return ProjectOutcome(
        project_key=spec.key,
        site_id=client.site_id,
        project_id=project_id,
        url=project_url(client, project_id),
        created=created,
        planned=len(tasks),
        imported=imported,
        stale=len(present - planned),
    )


def materialise_batches(
    client: LabelStudioClient,
    work_order: WorkOrder,
    batches: Sequence[Mapping[str, Any]],
    assignments: pa.Table,
    content: pa.Table,
    *,
    ref_key: RefKey,
    media_url: Callable[[str], str] | None = None,
    on_project: Callable[[ProjectOutcome], None] | None = None,
) -> list[ProjectOutcome]:
    """Every batch of one site as a project in the site's Label Studio, holding exactly its planned tasks.

    Args:
        client: The site's Label Studio.
        work_order: Gives the label config, instructions and task type.
        batches: The site's rows of the plan's batches, in order (``project_key``, ``batch_id``,
            ``max_annotations``, ``due_at``).
        assignments: The manifest rows of these batches (more rows are ignored).
        content: Canonical item columns (``item_id``, ``text``, ``media_uri``, ``fields``) of every planned item.
        ref_key: Key of the items' opaque refs (``Settings.pseudonym_key``).
        media_url: Presigner for media task types.
        on_project: Called after each project (progress, logging).

    Returns:
        One outcome per batch, in order.
    """
    label_config = render_label_config(work_order)
    known = known_projects(client)
    outcomes: list[ProjectOutcome] = []
    for start in range(0, len(batches), PROJECTS_PER_PASS):
        rows = batches[start : start + PROJECTS_PER_PASS]
        keys = pa.array([str(r["project_key"]) for r in rows], pa.string())
        part = assignments.filter(pc.is_in(assignments["project_key"], value_set=keys))
        payloads = dict(iter_project_tasks(part, content, work_order, media_url, ref_key=ref_key))
        for batch in rows:
            spec = project_spec(work_order, batch, label_config)
            outcome = materialise_project(client, spec, payloads.get(spec.key, []), known=known)
            outcomes.append(outcome)
            if on_project is not None:
                on_project(outcome)
    return outcomes


def projects_with_prefix(client: LabelStudioClient, key_prefix: str) -> list[Project]:
    """The instance's Kazi projects whose key starts with ``key_prefix`` (e.g. a work order id + ``--``)."""
    return [p for p in client.projects() if p.key is not None and p.key.startswith(key_prefix)]


def delete_projects(client: LabelStudioClient, key_prefix: str) -> list[int]:
    """Delete the instance's Kazi projects whose key starts with ``key_prefix``; returns their ids."""
    if not key_prefix:
        raise ValueError("refusing to delete every Kazi project: give a key prefix")
    deleted = []
    for project in projects_with_prefix(client, key_prefix):
        client.delete_project(project.id)
        deleted.append(project.id)
    return deleted
