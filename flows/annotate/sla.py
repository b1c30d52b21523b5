"""Stalled work: which batches missed their due time, and where their unfinished answers move. Pure.

Moves are recorded, never rewritten into the split's manifest. The assignment manifest written by split
stays as it was; annotate keeps an append-only *moves* log (:data:`MOVES`, Parquet parts named by content
like the annotation log), one row per answer slot moved::

    (item_id, batch_id, slot) moved from (from_site, from_project_key) to (to_site, to_project_key), move n

The current assignment of a slot follows its chain of moves (:func:`apply_moves`): a row whose
``(project_key, item_id, slot)`` appears as a move's *from* is superseded by the move's *to* row. Every move
creates a new project key, ``f"{work_order_id}--{to_site}--{batch_id}-m{n}"`` with ``n`` the batch's move
count, so chains never loop. Moving twice therefore never duplicates an item: a slot already moved away from
a site is no longer that site's, so a second :func:`plan_move` of the same batch from the same site finds
nothing there to move and returns an empty plan. A crash between writing the moves part and the Label
Studio calls is recovered the same way: the rerun plans nothing new, and the flow makes sure the projects
named in the moves log exist and hold their tasks (find-or-create by key, import by ``kazi_task_key``).

Which slots move. Slots of a task are interchangeable; a task with ``m`` current slots at the site and
``c`` completed annotations keeps its first ``min(c, m)`` slots (by slot number) as done and moves the rest.
The old tasks should be deleted in the old project, so nobody there answers what is now elsewhere; an
answer that arrives anyway stays in the log and counts at most once (see :mod:`flows.annotate.progress`).

Where to. Among the eligible sites given, never the site the work moves away from nor any site that held
the batch before (so a task stays identified by (site, batch, item)), and, when the work order wants its
answers from different sites, never a site that holds, held or answered any of the moved real items (gold
items are exempt: every site sees gold). Of the rest, the site with the most spare capacity: its capacity
minus the answers still open in its current assignments; ties go to the site id that sorts first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.schemas import ASSIGNMENTS, MOVES

from .progress import task_status

_SLOT_KEY = ["project_key", "item_id", "slot"]

OVERDUE_COLUMNS = [
    "batch_id",
    "site_id",
    "due_at",
    "n_tasks",
    "answers_total",
    "answers_done",
    "answers_open",
    "percent_done",
    "overdue_by",
    "reason",
]


class MoveError(ValueError):
    """No eligible site can take the batch; the message says why each candidate was passed over."""


@dataclass(frozen=True, eq=False)
class MovePlan:
    """What to recreate where. Empty (no rows, no target) when nothing of the batch is left to move."""

    batch_id: str
    from_site: str
    to_site: str | None
    project_key: str | None
    move: int
    due_at: datetime | None
    reason: str
    #: The slots to recreate, :data:`flows.core.schemas.ASSIGNMENTS` rows at the new site and project.
    rows: pa.Table
    #: The same slots as :data:`MOVES` rows, to append to the moves log before any Label Studio call.
    moves: pa.Table

    @property
    def empty(self) -> bool:
        return self.rows.num_rows == 0

    @property
    def n_answers(self) -> int:
        return self.rows.num_rows

    @property
    def tasks(self) -> pd.DataFrame:
        """One row per task to create: item_id, is_gold, answers (its slots moved), in manifest order."""
        frame = self.rows.select(["item_id", "is_gold", "slot"]).to_pandas()
        return (
            frame.groupby("item_id", sort=False)
            .agg(is_gold=("is_gold", "first"), answers=("slot", "size"))
            .reset_index()
        )

    @property
    def max_annotations(self) -> int:
        """The new project's ``maximum_annotations``: the most answers any moved task still needs.

        Label Studio has one overlap per project, so a task that needs fewer may collect extra answers;
        progress caps them and QA may use them.
        """
        return int(self.tasks["answers"].max()) if not self.empty else 0


def _table(data: pa.Table | pd.DataFrame, schema: pa.Schema, what: str) -> pa.Table:
    names = data.column_names if isinstance(data, pa.Table) else list(data.columns)
    missing = [f.name for f in schema if f.name not in names]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}")
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data[schema.names], schema=schema, preserve_index=False)
    return data.select(schema.names).cast(schema)


def _utc(moment: Any) -> pd.Timestamp:
    ts = pd.Timestamp(moment)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


def empty_moves() -> pa.Table:
    return MOVES.empty_table()


def apply_moves(assignments: pa.Table | pd.DataFrame, moves: pa.Table | pd.DataFrame | None) -> pa.Table:
    """The current assignment of every slot: the manifest with every moved slot at its latest site.

    Rows of the manifest that a move superseded are dropped; the moved rows are added (once, even when the
    manifest already holds them). Order: surviving manifest rows in their order, then moved rows in move order.
    """
    plan = _table(assignments, ASSIGNMENTS, "assignments")
    if moves is None:
        return plan
    log = _table(moves, MOVES, "moves")
    if log.num_rows == 0:
        return plan
    moved = pa.Table.from_arrays(
        [
            log["item_id"],
            log["batch_id"],
            log["to_site"],
            log["to_project_key"],
            log["slot"],
            log["is_gold"],
            log["round"],
        ],
        schema=ASSIGNMENTS,
    )
    rows = pa.concat_tables([plan, moved])
    frame = rows.select(_SLOT_KEY).to_pandas()
    superseded = pd.MultiIndex.from_arrays(
        [log["from_project_key"].to_pandas(), log["item_id"].to_pandas(), log["slot"].to_pandas()]
    )
    keys = pd.MultiIndex.from_frame(frame)
    keep = ~keys.isin(superseded) & ~keys.duplicated()
    return rows.filter(pa.array(np.asarray(keep)))


def current_batches(batches: pd.DataFrame, moves: pa.Table | pd.DataFrame | None) -> pd.DataFrame:
    """Split's batch frame with each moved batch at its latest site, project key and due time."""
    missing = [c for c in ("batch_id", "site_id", "due_at") if c not in batches.columns]
    if missing:
        raise ValueError(f"batches lacks column(s) {missing}")
    out = batches.copy()
    out["due_at"] = pd.to_datetime(out["due_at"], utc=True)
    if moves is None or len(moves) == 0:
        return out
    log = _table(moves, MOVES, "moves").select(["batch_id", "to_site", "to_project_key", "move", "due_at"])
    latest = (
        log.to_pandas()
        .sort_values(["batch_id", "move"], kind="stable")
        .drop_duplicates("batch_id", keep="last")
        .set_index("batch_id")
    )
    hit = out["batch_id"].isin(latest.index)
    picked = latest.loc[out.loc[hit, "batch_id"]]
    out.loc[hit, "site_id"] = picked["to_site"].to_numpy()
    out.loc[hit, "due_at"] = pd.to_datetime(picked["due_at"], utc=True).to_numpy()
    if "project_key" in out.columns:
        out.loc[hit, "project_key"] = picked["to_project_key"].to_numpy()
    return out


def overdue_batches(batches: pd.DataFrame, progress_per_batch: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Batches not finished by their due time, most overdue first.

    Args:
        batches: batch_id, site_id, due_at, n_tasks (split's batch frame; pass :func:`current_batches` once
            anything has moved, so a moved batch is judged by its new due time).
        progress_per_batch: :attr:`flows.annotate.progress.Progress.batches` (batch_id, answers_total,
            answers_done, answers_open, percent_done). A batch missing from it counts as not started.
        now: The time to judge by.

    Returns:
        :data:`OVERDUE_COLUMNS`; ``reason`` says it in words.
    """
    missing = [c for c in ("batch_id", "site_id", "due_at", "n_tasks") if c not in batches.columns]
    if missing:
        raise ValueError(f"batches lacks column(s) {missing}")
    now_ts = _utc(now)
    stats = progress_per_batch.set_index("batch_id")[["answers_total", "answers_done", "answers_open", "percent_done"]]
    frame = batches[["batch_id", "site_id", "due_at", "n_tasks"]].join(stats, on="batch_id")
    frame["due_at"] = pd.to_datetime(frame["due_at"], utc=True)
    unknown = frame["answers_total"].isna()
    frame["answers_total"] = frame["answers_total"].fillna(0).astype(np.int64)
    frame["answers_done"] = frame["answers_done"].fillna(0).astype(np.int64)
    frame["answers_open"] = frame["answers_open"].fillna(0).astype(np.int64)
    frame["percent_done"] = frame["percent_done"].fillna(0.0).astype(np.float64)
    unfinished = unknown | (frame["answers_open"] > 0)
    due = frame["due_at"] <= now_ts
    late = frame.loc[unfinished & due].copy()
    late["overdue_by"] = now_ts - late["due_at"]
    late["reason"] = [
        f"batch {r.batch_id} at {r.site_id} was due {r.due_at:%Y-%m-%d %H:%M} UTC and is "
        f"{r.overdue_by.total_seconds() / 3600:.1f} h late: "
        + (
            "no progress recorded"
            if unk
            else f"{r.percent_done:.0f}% done, {r.answers_open:,} of {r.answers_total:,} answers open"
        )
        for r, unk in zip(late.itertuples(index=False), unknown.to_numpy()[(unfinished & due).to_numpy()], strict=True)
    ]
    return late.sort_values(["due_at", "batch_id"], kind="stable").reset_index(drop=True)[OVERDUE_COLUMNS]


def _sites_holding(items: pa.Array, plan: pa.Table, moves: pa.Table, log: pa.Table) -> set[str]:
    """Sites that hold, held or answered any of ``items``."""
    held = set(plan.filter(pc.is_in(plan["item_id"], value_set=items))["site_id"].unique().to_pylist())
    held |= set(moves.filter(pc.is_in(moves["item_id"], value_set=items))["to_site"].unique().to_pylist())
    held |= set(log.filter(pc.is_in(log["item_id"], value_set=items))["site_id"].unique().to_pylist())
    return held


def _open_slots(here: pa.Table, log: pa.Table) -> np.ndarray:
    """Which slots of ``here`` (one batch at one site) are open: in each task, all but the first ``done``."""
    if here.num_rows == 0:
        return np.zeros(0, dtype=bool)
    status = task_status(here, log).set_index("item_id")["done"]
    slots = here.select(["item_id", "slot"]).to_pandas()
    done = status.reindex(slots["item_id"]).to_numpy(dtype=np.int64)
    rank = slots.groupby("item_id", sort=False)["slot"].rank(method="first").to_numpy(dtype=np.int64) - 1
    return rank >= done


def plan_move(
    batch: Mapping[str, Any] | pd.Series,
    assignments: pa.Table | pd.DataFrame,
    log_latest: pa.Table | pd.DataFrame,
    eligible_sites: Mapping[str, float],
    exclude_site: str | None = None,
    *,
    work_order_id: str,
    moves: pa.Table | pd.DataFrame | None = None,
    overlap_across_sites: bool = False,
    now: datetime,
    due_at: datetime,
) -> MovePlan:
    """Plan moving the unfinished answers of ``batch`` away from ``exclude_site`` to another site.

    Args:
        batch: A row of :func:`overdue_batches` (at least ``batch_id``; ``site_id``, ``due_at`` and
            ``percent_done`` feed the reason).
        assignments: Split's assignment manifest (all rounds), as written; moves are applied here.
        log_latest: The latest version of every annotation (``ANNOTATIONS`` columns).
        eligible_sites: Site id -> answers the site can still give by the deadline, for the sites that may
            take this work order's task type (the flow decides eligibility and capacity).
        exclude_site: The site the work moves away from; ``batch["site_id"]`` when None.
        work_order_id: For the new project key.
        moves: The moves log so far (:data:`MOVES`), or None.
        overlap_across_sites: The work order's rule: the answers of an item come from different sites.
        now: Recorded as ``moved_at``.
        due_at: When the moved work is due at the new site (the flow's estimate, the deadline at the latest).

    Returns:
        A :class:`MovePlan`; empty when nothing of the batch is left open at ``exclude_site``.

    Raises:
        MoveError: Work is left to move but no eligible site may take it.
    """
    batch_id = str(batch["batch_id"])
    from_site = exclude_site if exclude_site is not None else batch.get("site_id")
    if not isinstance(from_site, str) or not from_site:
        raise ValueError(f"plan_move needs the site batch {batch_id} moves away from (exclude_site or batch.site_id)")
    plan = _table(assignments, ASSIGNMENTS, "assignments")
    history = _table(moves, MOVES, "moves") if moves is not None else empty_moves()
    log_columns = ["site_id", "batch_id", "item_id", "skipped"]
    if isinstance(log_latest, pd.DataFrame):
        log = pa.Table.from_pandas(log_latest[log_columns], preserve_index=False)
    else:
        log = log_latest.select(log_columns)
    current = apply_moves(plan, history)
    move_number = int(pc.max(history.filter(pc.equal(history["batch_id"], batch_id))["move"]).as_py() or 0) + 1

    # The batch's slots at the site, in manifest order; done ones stay, open ones move.
    here = current.filter(pc.and_(pc.equal(current["batch_id"], batch_id), pc.equal(current["site_id"], from_site)))
    to_move = here.filter(pa.array(_open_slots(here, log)))
    due_ts = _utc(due_at)
    if to_move.num_rows == 0:
        return MovePlan(
            batch_id=batch_id,
            from_site=from_site,
            to_site=None,
            project_key=None,
            move=move_number - 1,
            due_at=None,
            reason=f"nothing of batch {batch_id} is left open at {from_site}: no move needed",
            rows=ASSIGNMENTS.empty_table(),
            moves=empty_moves(),
        )

    # Who may take it, and why the others may not.
    passed_over: dict[str, str] = {}
    held_batch = set(plan.filter(pc.equal(plan["batch_id"], batch_id))["site_id"].to_pylist())
    held_batch |= set(history.filter(pc.equal(history["batch_id"], batch_id))["to_site"].to_pylist())
    conflicts: set[str] = set()
    if overlap_across_sites:
        real = to_move.filter(pc.invert(to_move["is_gold"]))["item_id"].unique()
        conflicts = _sites_holding(real, plan, history, log)
    open_status = task_status(current, log)
    open_by_site = open_status.groupby("site_id")["open"].sum()
    spare: dict[str, float] = {}
    for site in sorted(eligible_sites):
        if site == from_site:
            passed_over[site] = "the site the work moves away from"
        elif site in held_batch:
            passed_over[site] = f"held batch {batch_id} before"
        elif site in conflicts:
            passed_over[site] = "holds or answered some of these items; their answers must come from different sites"
        else:
            spare[site] = float(eligible_sites[site]) - float(open_by_site.get(site, 0))
    if not spare:
        why = "; ".join(f"{s}: {w}" for s, w in passed_over.items()) or "no eligible sites were given"
        raise MoveError(
            f"Batch {batch_id} has {to_move.num_rows:,} open answers at {from_site} but no site may take them ({why})."
        )
    to_site = max(sorted(spare), key=lambda s: spare[s])
    project_key = f"{work_order_id}--{to_site}--{batch_id}-m{move_number}"
    n_tasks = len(set(to_move["item_id"].to_pylist()))
    late = ""
    if "due_at" in batch and batch["due_at"] is not None and not pd.isna(batch["due_at"]):
        late = f" was due {_utc(batch['due_at']):%Y-%m-%d %H:%M} UTC and"
    fits = "" if spare[to_site] >= to_move.num_rows else " (less than the moved work: it may run late again)"
    reason = (
        f"Batch {batch_id} at {from_site}{late} has {to_move.num_rows:,} open answers in {n_tasks:,} tasks; "
        f"moved to {to_site}, the eligible site with the most spare capacity ({spare[to_site]:,.0f} answers"
        f"{fits}), as {project_key}, due {due_ts:%Y-%m-%d %H:%M} UTC."
    )
    n = to_move.num_rows
    rows = pa.Table.from_arrays(
        [
            to_move["item_id"],
            to_move["batch_id"],
            pa.repeat(pa.scalar(to_site, pa.string()), n),
            pa.repeat(pa.scalar(project_key, pa.string()), n),
            to_move["slot"],
            to_move["is_gold"],
            to_move["round"],
        ],
        schema=ASSIGNMENTS,
    )
    ts = pa.timestamp("us", tz="UTC")
    move_rows = pa.Table.from_arrays(
        [
            to_move["item_id"],
            to_move["batch_id"],
            to_move["slot"],
            to_move["is_gold"],
            to_move["round"],
            pa.repeat(pa.scalar(from_site, pa.string()), n),
            to_move["project_key"],
            pa.repeat(pa.scalar(to_site, pa.string()), n),
            pa.repeat(pa.scalar(project_key, pa.string()), n),
            pa.repeat(pa.scalar(move_number, pa.int16()), n),
            pa.repeat(pa.scalar(_utc(now).to_pydatetime(), ts), n),
            pa.repeat(pa.scalar(due_ts.to_pydatetime(), ts), n),
            pa.repeat(pa.scalar(reason, pa.string()), n),
        ],
        schema=MOVES,
    )
    return MovePlan(
        batch_id=batch_id,
        from_site=from_site,
        to_site=to_site,
        project_key=project_key,
        move=move_number,
        due_at=due_ts.to_pydatetime(),
        reason=reason,
        rows=rows,
        moves=move_rows,
    )
