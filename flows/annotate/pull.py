"""The Label Studio and S3 side of one annotation sync: plain functions the flow's tasks call.

One sync pass reads each project through Label Studio's export API (one call per project, the annotated tasks
with their annotations; never task listing, which is 50x slower), maps each task's opaque ``item`` ref back to
its item id, normalises the annotations (:func:`flows.annotate.normalise.export_to_rows`) and appends the
versions the log does not hold yet as one content-named part (:mod:`flows.annotate.sync`).

Workspace layout under ``work-orders/<id>/``:

- ``split/round=<r>/assignments.parquet`` and ``batches.parquet`` (every round), ``split/projects.json``: read;
- ``annotate/log/part-<hash>.parquet``: the append-only annotation log (:data:`flows.core.schemas.ANNOTATIONS`);
- ``annotate/moves/part-<hash>.parquet``: the append-only moves log (:data:`flows.core.schemas.MOVES`);
- ``annotate/projects.json``: projects annotate created for moved work, ``project_key -> {site_id,
  project_id, url, batch_id, move, from_project_key}``, written once a move is complete in Label Studio;
- ``annotate/status.parquet`` (one row per batch) and ``annotate/result.json``: written by the flow.

Item refs. Split puts ``HMAC-SHA256(pseudonym_key, item_id)`` (first :data:`REF_HEX` hex digits) in each task
instead of the item id, so gold cannot be told apart; :func:`item_ref_map` computes the same refs from the
assignment manifest. It repeats ``flows.split.tasks.item_refs`` because stages do not import each other
(``tests/annotate/test_annotate_flow.py`` checks the two agree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from pydantic import SecretStr

from flows.core.labelstudio import LabelStudioClient
from flows.core.models import TaskType, Workspace
from flows.core.refs import ref_map
from flows.core.s3 import ObjectNotFound, ObjectStore, parse_uri
from flows.core.schemas import ANNOTATIONS, ASSIGNMENTS, MOVES
from flows.core.workspace import read_json, write_table

from .normalise import export_to_rows
from .sync import new_rows, part_name

#: Log columns one sync pass reads: the version key, and what progress counts.
SYNC_COLUMNS = ["site_id", "batch_id", "item_id", "annotation_id", "skipped", "created_at", "updated_at"]


# --- Item refs -----------------------------------------------------------------------------------


def item_ref_map(item_ids: Iterable[str], key: SecretStr) -> dict[str, str]:
    """Item ref -> item id for ``item_ids``: the refs split put in the tasks (see the module docstring)."""
    return ref_map(item_ids, key)


# --- Projects --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectRef:
    """One Label Studio project of the work order: where it is and which QA round it serves."""

    project_key: str
    project_id: int
    site_id: str
    url: str
    round: int = 0


def project_refs(
    split_projects: Mapping[str, Mapping[str, Any]],
    moved_projects: Mapping[str, Mapping[str, Any]],
    rounds: Mapping[str, int],
) -> dict[str, list[ProjectRef]]:
    """Every project to pull, by site: split's (``split/projects.json``) and annotate's moved ones.

    Args:
        split_projects: ``project_key -> {site_id, project_id, url}`` as split recorded them.
        moved_projects: The same for projects annotate created (``annotate/projects.json``).
        rounds: ``project_key -> round`` (from the manifests and the moves log); 0 when missing.

    Returns:
        ``site_id -> projects``, sites and projects sorted by key.
    """
    by_site: dict[str, list[ProjectRef]] = {}
    for key, record in {**split_projects, **moved_projects}.items():
        ref = ProjectRef(
            project_key=key,
            project_id=int(record["project_id"]),
            site_id=str(record["site_id"]),
            url=str(record.get("url", "")),
            round=int(rounds.get(key, 0)),
        )
        by_site.setdefault(ref.site_id, []).append(ref)
    return {site: sorted(refs, key=lambda r: r.project_key) for site, refs in sorted(by_site.items())}


# --- Pulling ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ProjectPull:
    """What one project's export gave."""

    project: ProjectRef
    tasks: int
    annotations: int
    #: Annotated tasks whose item ref the manifest does not know (not Kazi's tasks); left out of the log.
    unmapped: int
    rows: pa.Table


@dataclass(frozen=True, eq=False)
class SitePull:
    """Every project of one site, pulled; ``rows`` are their annotations as log rows."""

    site_id: str
    projects: list[ProjectPull] = field(default_factory=list)

    @property
    def rows(self) -> pa.Table:
        tables = [p.rows for p in self.projects]
        return pa.concat_tables(tables) if tables else ANNOTATIONS.empty_table()

    def summary(self) -> dict[str, Any]:
        """Counts for the flow's table artifact."""
        return {
            "site_id": self.site_id,
            "projects": len(self.projects),
            "annotated_tasks": sum(p.tasks for p in self.projects),
            "annotations": sum(p.annotations for p in self.projects),
            "unmapped_tasks": sum(p.unmapped for p in self.projects),
        }


def attach_item_ids(tasks: list[dict[str, Any]], refs: Mapping[str, str]) -> tuple[list[dict[str, Any]], int]:
    """Put each task's item id in its ``data`` (in place: the export is this pull's own) from its ``item`` ref.

    Returns:
        The tasks whose item is known, and how many annotated tasks had a ref the manifest does not know.
    """
    kept: list[dict[str, Any]] = []
    unknown = 0
    for task in tasks:
        data = task.get("data")
        ref = data.get("item") if isinstance(data, dict) else None
        item_id = refs.get(ref) if isinstance(ref, str) else None
        if item_id is None:
            unknown += bool(task.get("annotations"))
            continue
        data["item_id"] = item_id  # type: ignore[index]
        kept.append(task)
    return kept, unknown


def normalise_tasks(
    tasks: list[dict[str, Any]],
    project: ProjectRef,
    refs: Mapping[str, str],
    *,
    task_type: TaskType,
    key: SecretStr,
    classes: Sequence[str] | None,
) -> ProjectPull:
    """Exported tasks of ``project`` as log rows (item ids from ``refs``)."""
    known, unmapped = attach_item_ids(tasks, refs)
    rows = export_to_rows(
        known,
        task_type=task_type,
        site_id=project.site_id,
        project_id=project.project_id,
        key=key,
        round=project.round,
        classes=classes,
    )
    return ProjectPull(project=project, tasks=len(tasks), annotations=rows.num_rows, unmapped=unmapped, rows=rows)


def pull_project(
    client: LabelStudioClient,
    project: ProjectRef,
    refs: Mapping[str, str],
    *,
    task_type: TaskType,
    key: SecretStr,
    classes: Sequence[str] | None = None,
) -> ProjectPull:
    """One project's annotated tasks through the export API (one call), as log rows.

    Raises:
        LabelStudioError: the instance is down or refuses the token (the message names it and the site).
        MalformedExport: results Kazi's label configs cannot have produced (every one listed).
    """
    tasks = client.export(project.project_id)
    return normalise_tasks(tasks, project, refs, task_type=task_type, key=key, classes=classes)


def pull_site(
    client: LabelStudioClient,
    projects: Sequence[ProjectRef],
    refs: Mapping[str, str],
    *,
    task_type: TaskType,
    key: SecretStr,
    classes: Sequence[str] | None = None,
) -> SitePull:
    """Every project of one site, one export call each."""
    site_ids = {p.site_id for p in projects}
    if len(site_ids) > 1:
        raise ValueError(f"pull_site takes the projects of one site, got {sorted(site_ids)}")
    site_id = next(iter(site_ids)) if site_ids else (client.site_id or "")
    pulls = [pull_project(client, p, refs, task_type=task_type, key=key, classes=classes) for p in projects]
    return SitePull(site_id=site_id, projects=pulls)


# --- The workspace: manifests, log, moves ----------------------------------------------------------


def _parquet_objects(store: ObjectStore, uri: str) -> list[str]:
    """``bucket/key`` of every Parquet object under the prefix ``uri``, sorted."""
    bucket, prefix = parse_uri(uri)
    return sorted(f"{bucket}/{o.key}" for o in store.list_objects(bucket, prefix) if o.key.endswith(".parquet"))


def _read_parts(store: ObjectStore, uri: str, schema: pa.Schema, columns: Sequence[str] | None) -> pa.Table:
    paths = _parquet_objects(store, uri)
    wanted = list(columns) if columns is not None else schema.names
    if not paths:
        return schema.empty_table().select(wanted)
    dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=store.filesystem)
    return dataset.to_table(columns=wanted)


def log_uri(ws: Workspace) -> str:
    """The annotation log: a prefix, ending in ``/``, of Parquet parts."""
    return ws.uri("annotate", "log") + "/"


def moves_uri(ws: Workspace) -> str:
    return ws.uri("annotate", "moves") + "/"


def read_log(store: ObjectStore, ws: Workspace, columns: Sequence[str] | None = SYNC_COLUMNS) -> pa.Table:
    """The annotation log's ``columns`` (all when None), every part; empty when nothing was logged yet."""
    return _read_parts(store, log_uri(ws), ANNOTATIONS, columns)


def read_moves(store: ObjectStore, ws: Workspace) -> pa.Table:
    """The moves log, every part, in move order (batch, move number)."""
    moves = _read_parts(store, moves_uri(ws), MOVES, None)
    return moves.sort_by([("batch_id", "ascending"), ("move", "ascending")]) if moves.num_rows else moves


def write_part(store: ObjectStore, prefix_uri: str, rows: pa.Table) -> str | None:
    """Write ``rows`` as one part named by their content under ``prefix_uri``; nothing when empty.

    A rerun that computes the same rows writes the same name with the same bytes, so a part is never doubled.
    """
    if rows.num_rows == 0:
        return None
    uri = prefix_uri + part_name(rows)
    write_table(store, uri, rows)
    return uri


@dataclass(frozen=True, eq=False)
class Appended:
    """What one append to the log did."""

    #: The versions written (canonical order); empty when nothing was new.
    rows: pa.Table
    #: The part written, or None.
    part_uri: str | None
    #: The log's :data:`SYNC_COLUMNS` after the append (what was read plus what was written).
    log: pa.Table


def append_new(store: ObjectStore, ws: Workspace, known: pa.Table, exported: pa.Table) -> Appended:
    """Write the versions of ``exported`` that ``known`` (the log as read) lacks, as one part.

    Args:
        store: The workspace's object store.
        ws: The work order's workspace.
        known: The log as read this pass (at least ``site_id``, ``annotation_id``, ``updated_at``).
        exported: Normalised rows of every project pulled (``ANNOTATIONS`` schema).

    Returns:
        The new rows, the part's URI (None when nothing was new) and the log's sync columns afterwards.
    """
    fresh = new_rows(known, exported.cast(ANNOTATIONS))
    part = write_part(store, log_uri(ws), fresh)
    columns = [c for c in SYNC_COLUMNS if c in known.column_names]
    after = pa.concat_tables([known.select(columns), fresh.select(columns).cast(known.select(columns).schema)])
    return Appended(rows=fresh, part_uri=part, log=after)


def read_manifests(store: ObjectStore, ws: Workspace) -> tuple[pa.Table, pa.Table]:
    """Split's assignment manifests and batches of every round (``split/round=<r>/``), concatenated.

    Returns:
        ``(assignments, batches)``; batches keep split's columns (batch_id, site_id, project_key, n_tasks,
        max_annotations, due_at, ...).

    Raises:
        ObjectNotFound: split has written no manifest yet.
    """
    bucket, prefix = parse_uri(ws.uri("split") + "/")
    keys = [o.key for o in store.list_objects(bucket, prefix) if "/round=" in o.key]
    plans = sorted(f"{bucket}/{k}" for k in keys if k.endswith("/assignments.parquet"))
    batch_files = sorted(f"{bucket}/{k}" for k in keys if k.endswith("/batches.parquet"))
    if not plans:
        raise ObjectNotFound(f"No assignment manifest under {ws.uri('split')}/round=*/: run the split stage first.")
    fs = store.filesystem
    assignments = ds.dataset(plans, schema=ASSIGNMENTS, format="parquet", filesystem=fs).to_table()
    batches = ds.dataset(batch_files, format="parquet", filesystem=fs).to_table() if batch_files else None
    if batches is None or batches.num_rows == 0:
        raise ObjectNotFound(f"No batches under {ws.uri('split')}/round=*/: run the split stage first.")
    return assignments, batches


def read_json_or_empty(store: ObjectStore, uri: str) -> dict[str, Any]:
    """A JSON object from the workspace, or ``{}`` when there is none yet."""
    if store.head(*parse_uri(uri)) is None:
        return {}
    found = read_json(store, uri)
    if not isinstance(found, dict):
        raise ValueError(f"{uri} should hold a JSON object")
    return found


def project_rounds(assignments: pa.Table, moves: pa.Table) -> dict[str, int]:
    """``project_key -> round`` of every project in the manifests and the moves log."""
    pairs = pa.concat_tables(
        [
            assignments.select(["project_key", "round"]),
            moves.select(["to_project_key", "round"]).rename_columns(["project_key", "round"]),
        ]
    )
    distinct = pairs.group_by(["project_key"]).aggregate([("round", "max")])
    return dict(zip(distinct["project_key"].to_pylist(), distinct["round_max"].to_pylist(), strict=True))
