"""Progress of a work order's annotation: per work order, per site and per batch.

Units. The assignment manifest has one row per *answer slot* (:data:`flows.core.schemas.ASSIGNMENTS`). The
slots of one item in one batch at one site form one Label Studio *task* (``maximum_annotations`` = its
number of slots), identified by ``(site_id, batch_id, item_id)``; the annotation log carries the same three
columns. Slots of a task are interchangeable, so a task with ``m`` slots and ``c`` completed (not skipped)
annotations has ``min(c, m)`` slots done; answers beyond ``m`` (a task answered again after it was moved
away) are kept in the log but never count twice.

A skip does not fill a slot (Label Studio gives the task to someone else), so it is reported beside the
done count: ``answers_skipped`` counts open slots of tasks with a skip on record. Task states, which
partition ``tasks_total``:

- done: every slot done;
- in progress: some slots done, not all;
- skipped: nothing done, at least one skip;
- not started: no annotation at all.

Throughput counts completed annotations by the time they were submitted (``created_at``; ``updated_at``
when missing): ``per_hour_last_hour`` in ``(now - 1 h, now]``, and ``per_hour_avg`` since the group's first
annotation, over at least one hour (so a team that started ten minutes ago is not extrapolated sixfold).
``eta`` is when the open slots would be done at ``per_hour_avg``.

Pass the *current* assignments: the split manifest with moves applied (:func:`flows.annotate.sla.apply_moves`),
and the *latest* version of each annotation (:func:`flows.annotate.sync.latest_versions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TASK_KEY = ["site_id", "batch_id", "item_id"]
BAR_WIDTH = 20

#: The count columns of every progress frame (integers).
COUNT_COLUMNS = [
    "tasks_total",
    "tasks_done",
    "tasks_in_progress",
    "tasks_skipped",
    "tasks_not_started",
    "items_total",
    "items_done",
    "answers_total",
    "answers_done",
    "answers_open",
    "answers_skipped",
]
#: Columns of every progress frame, after the group's key column(s).
PROGRESS_COLUMNS = [
    *COUNT_COLUMNS,
    "percent_done",
    "per_hour_last_hour",
    "per_hour_avg",
    "first_answer_at",
    "last_answer_at",
    "eta",
]


@dataclass(frozen=True, eq=False)
class Progress:
    """Progress frames: one row for the work order, one per site, one per batch (``sites`` lists its sites)."""

    now: datetime
    work_order: pd.DataFrame
    sites: pd.DataFrame
    batches: pd.DataFrame


def _table(table: pa.Table | pd.DataFrame, columns: list[str], what: str) -> pa.Table:
    names = table.column_names if isinstance(table, pa.Table) else list(table.columns)
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}")
    if isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table[columns], preserve_index=False)
    return table.select(columns)


def _utc(moment: datetime) -> pd.Timestamp:
    ts = pd.Timestamp(moment)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


@dataclass(frozen=True)
class _Coded:
    """Integer codes of one key column in the assignments and in the log, over one shared dictionary."""

    plan: np.ndarray
    log: np.ndarray
    values: pa.Array

    @property
    def n(self) -> int:
        return max(len(self.values), 1)


def _code(plan_col: pa.ChunkedArray, log_col: pa.ChunkedArray, name: str) -> _Coded:
    both = pa.concat_arrays(
        [c.cast(pa.string()) for c in (*plan_col.chunks, *log_col.chunks)] or [pa.array([], pa.string())]
    )
    if both.null_count:
        raise ValueError(f"{name} must not be null")
    encoded = both.dictionary_encode()
    codes = np.asarray(encoded.indices.to_numpy(), dtype=np.int64)
    return _Coded(plan=codes[: len(plan_col)], log=codes[len(plan_col) :], values=encoded.dictionary)


@dataclass(frozen=True)
class _Tasks:
    """Tasks in order of first appearance in the manifest: key codes and counts; and each log row's task."""

    site: _Coded
    batch: _Coded
    item: _Coded
    task_site: np.ndarray
    task_batch: np.ndarray
    task_item: np.ndarray
    slots: np.ndarray
    completed: np.ndarray
    skips: np.ndarray

    @property
    def done(self) -> np.ndarray:
        return np.minimum(self.completed, self.slots)

    @property
    def open(self) -> np.ndarray:
        return self.slots - self.done

    @property
    def state(self) -> np.ndarray:
        done = self.done
        return np.select(
            [done == self.slots, done > 0, self.skips > 0], ["done", "in_progress", "skipped"], default="not_started"
        )


def _tasks(plan: pa.Table, log: pa.Table) -> _Tasks:
    site = _code(plan["site_id"], log["site_id"], "site_id")
    batch = _code(plan["batch_id"], log["batch_id"], "batch_id")
    item = _code(plan["item_id"], log["item_id"], "item_id")
    # One int64 per (site, batch, item): even 10^3 sites x 10^5 batches x 10^8 items stay below 2^63.
    key_plan = (site.plan * batch.n + batch.plan) * item.n + item.plan
    key_log = (site.log * batch.n + batch.log) * item.n + item.log
    # Tasks numbered by first appearance in the manifest (its Label Studio import order).
    task_of_slot, keys = pd.factorize(key_plan)
    task_of_row = pd.Index(keys).get_indexer(key_log)
    hit = task_of_row >= 0
    skipped = np.asarray(log["skipped"].to_numpy(zero_copy_only=False), dtype=bool)
    n = len(keys)
    return _Tasks(
        site=site,
        batch=batch,
        item=item,
        task_site=keys // (batch.n * item.n),
        task_batch=(keys // item.n) % batch.n,
        task_item=keys % item.n,
        slots=np.bincount(task_of_slot, minlength=n).astype(np.int64),
        completed=np.bincount(task_of_row[hit & ~skipped], minlength=n).astype(np.int64),
        skips=np.bincount(task_of_row[hit & skipped], minlength=n).astype(np.int64),
    )


def _inputs(assignments: pa.Table | pd.DataFrame, log_latest: pa.Table | pd.DataFrame) -> tuple[pa.Table, pa.Table]:
    plan = _table(assignments, [*TASK_KEY, "slot"], "assignments")
    log = _table(log_latest, [*TASK_KEY, "skipped", "created_at", "updated_at"], "log_latest")
    return plan, log


def task_status(assignments: pa.Table | pd.DataFrame, log_latest: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """One row per task (site, batch, item): slots, completed and skipped annotations, done and open slots.

    Returns:
        Columns site_id, batch_id, item_id, slots, completed, skips, done, open, skipped_open, state
        (``done`` | ``in_progress`` | ``skipped`` | ``not_started``), in the order of first appearance in
        the assignments.
    """
    plan = _table(assignments, [*TASK_KEY, "slot"], "assignments")
    log = _table(log_latest, [*TASK_KEY, "skipped"], "log_latest")
    t = _tasks(plan, log)
    open_ = t.open
    return pd.DataFrame(
        {
            "site_id": pd.array(t.site.values.take(t.task_site).to_numpy(zero_copy_only=False), dtype="str"),
            "batch_id": pd.array(t.batch.values.take(t.task_batch).to_numpy(zero_copy_only=False), dtype="str"),
            "item_id": pd.array(t.item.values.take(t.task_item).to_numpy(zero_copy_only=False), dtype="str"),
            "slots": t.slots,
            "completed": t.completed,
            "skips": t.skips,
            "done": t.done,
            "open": open_,
            "skipped_open": np.minimum(t.skips, open_),
            "state": pd.array(t.state, dtype="str"),
        }
    )


def _group_frame(
    t: _Tasks, task_group: np.ndarray, row_group: np.ndarray, labels: np.ndarray, log: _LogTimes, now: pd.Timestamp
) -> pd.DataFrame:
    """Counts and rates per group; groups are those holding at least one task, in label order."""
    g = len(labels)
    done, open_ = t.done, t.open
    state = t.state

    def count(mask: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
        idx = task_group if mask is None else task_group[mask]
        w = None if weights is None else (weights if mask is None else weights[mask])
        return np.bincount(idx, weights=w, minlength=g).astype(np.int64)

    # An item is done in a group when every slot it has there is done, whichever sites and batches hold them.
    pair = task_group * t.item.n + t.task_item
    pair_of_task, pairs = pd.factorize(pair)
    pair_open = np.bincount(pair_of_task, weights=open_, minlength=len(pairs))
    pair_group = pairs // t.item.n
    out = pd.DataFrame(
        {
            "tasks_total": count(),
            "tasks_done": count(state == "done"),
            "tasks_in_progress": count(state == "in_progress"),
            "tasks_skipped": count(state == "skipped"),
            "tasks_not_started": count(state == "not_started"),
            "items_total": np.bincount(pair_group, minlength=g).astype(np.int64),
            "items_done": np.bincount(pair_group[pair_open == 0], minlength=g).astype(np.int64),
            "answers_total": count(weights=t.slots),
            "answers_done": count(weights=done),
            "answers_open": count(weights=open_),
            "answers_skipped": count(weights=np.minimum(t.skips, open_)),
        }
    )
    total = out["answers_total"].to_numpy(dtype=np.float64)
    out["percent_done"] = np.divide(
        100.0 * out["answers_done"].to_numpy(dtype=np.float64), total, out=np.zeros(g), where=total > 0
    )

    # Throughput from every completed answer in the log, whether or not its task is still assigned there.
    rg = row_group[log.completed]
    at = log.at[log.completed]
    now_us = now.value // 1_000
    recent = (at > now_us - 3_600_000_000) & (at <= now_us)
    answered = np.bincount(rg, minlength=g)
    first = np.full(g, np.iinfo(np.int64).max)
    last = np.full(g, np.iinfo(np.int64).min)
    np.minimum.at(first, rg, at)
    np.maximum.at(last, rg, at)
    some = answered > 0
    hours = np.where(some, np.maximum((now_us - first) / 3_600_000_000, 1.0), 1.0)
    out["per_hour_last_hour"] = np.bincount(rg[recent], minlength=g).astype(np.int64)
    out["per_hour_avg"] = np.where(some, answered / hours, 0.0)
    out["first_answer_at"] = _timestamps(np.where(some, first, 0), some)
    out["last_answer_at"] = _timestamps(np.where(some, last, 0), some)
    rate = out["per_hour_avg"].to_numpy(dtype=np.float64)
    left = out["answers_open"].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        hours_left = np.where(left == 0, 0.0, np.where(rate > 0, left / rate, np.nan))
    eta_us = now_us + np.nan_to_num(hours_left * 3_600_000_000).astype(np.int64)
    out["eta"] = _timestamps(eta_us, ~np.isnan(hours_left))
    return out.loc[out["tasks_total"].to_numpy() > 0]


def _timestamps(us: np.ndarray, valid: np.ndarray) -> pd.Series:
    values = pd.to_datetime(us, unit="us", utc=True).astype("datetime64[us, UTC]")
    return pd.Series(values).where(valid)


@dataclass(frozen=True)
class _LogTimes:
    at: np.ndarray
    completed: np.ndarray


def _log_times(log: pa.Table) -> _LogTimes:
    ts = pa.timestamp("us", tz="UTC")
    created = pc.cast(log["created_at"], ts)
    at = pc.coalesce(created, pc.cast(log["updated_at"], ts))
    if at.null_count:
        raise ValueError("log_latest has rows with neither created_at nor updated_at")
    skipped = np.asarray(log["skipped"].to_numpy(zero_copy_only=False), dtype=bool)
    return _LogTimes(at=np.asarray(pc.cast(at, pa.int64()).to_numpy(), dtype=np.int64), completed=~skipped)


def progress(
    assignments: pa.Table | pd.DataFrame,
    log_latest: pa.Table | pd.DataFrame,
    now: datetime,
    *,
    work_order_id: str = "",
) -> Progress:
    """Progress frames of one work order.

    Args:
        assignments: Current assignment rows (``ASSIGNMENTS`` columns; moves applied).
        log_latest: The latest version of every annotation (``ANNOTATIONS`` columns).
        now: The time the rates are measured at.
        work_order_id: Names the work-order row.

    Returns:
        :class:`Progress`; each frame has its key column(s) then :data:`PROGRESS_COLUMNS`, sorted by key. The
        batch frame also has ``sites``, the batch's current sites joined by ", ".
    """
    now_ts = _utc(now)
    plan, log = _inputs(assignments, log_latest)
    t = _tasks(plan, log)
    times = _log_times(log)

    whole = _group_frame(
        t, np.zeros(len(t.slots), np.int64), np.zeros(log.num_rows, np.int64), np.array([work_order_id]), times, now_ts
    )
    if whole.empty:
        whole = _empty_work_order(now_ts)
    whole.insert(0, "work_order_id", pd.array([work_order_id], dtype="str"))

    frames = {}
    for name, coded, task_group in (("site_id", t.site, t.task_site), ("batch_id", t.batch, t.task_batch)):
        labels = np.asarray(coded.values.to_numpy(zero_copy_only=False), dtype=object)
        frame = _group_frame(t, task_group, coded.log, labels, times, now_ts)
        frame.insert(0, name, pd.array(labels[frame.index.to_numpy()], dtype="str"))
        frames[name] = frame.sort_values(name, kind="stable").reset_index(drop=True)

    # The current sites of each batch, from its tasks (a moved batch has several).
    pairs = np.unique(np.stack([t.task_batch, t.task_site], axis=1), axis=0) if len(t.slots) else np.zeros((0, 2), int)
    site_names = np.asarray(t.site.values.to_numpy(zero_copy_only=False), dtype=object)
    batch_names = np.asarray(t.batch.values.to_numpy(zero_copy_only=False), dtype=object)
    sites_of = (
        pd.DataFrame({"batch_id": batch_names[pairs[:, 0]], "site": site_names[pairs[:, 1]]})
        .sort_values(["batch_id", "site"])
        .groupby("batch_id", sort=False)["site"]
        .agg(", ".join)
    )
    batches = frames["batch_id"]
    batches.insert(1, "sites", pd.array(batches["batch_id"].map(sites_of).to_numpy(dtype=object), dtype="str"))
    return Progress(
        now=now_ts.to_pydatetime(),
        work_order=whole[["work_order_id", *PROGRESS_COLUMNS]].reset_index(drop=True),
        sites=frames["site_id"][["site_id", *PROGRESS_COLUMNS]],
        batches=batches[["batch_id", "sites", *PROGRESS_COLUMNS]],
    )


def _empty_work_order(now: pd.Timestamp) -> pd.DataFrame:
    row: dict[str, object] = dict.fromkeys(PROGRESS_COLUMNS, 0)
    row.update(per_hour_avg=0.0, percent_done=0.0, first_answer_at=pd.NaT, last_answer_at=pd.NaT, eta=now)
    frame = pd.DataFrame([row])
    for col in ("first_answer_at", "last_answer_at", "eta"):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[us, UTC]")
    return frame


def progress_bar(percent: float, width: int = BAR_WIDTH) -> str:
    """``█████░░░░░`` filled to ``percent`` (0..100), rounded down so 99.9% never looks finished."""
    filled = int(np.clip(np.floor(percent / 100.0 * width + 1e-9), 0, width))
    return "█" * filled + "░" * (width - filled)


def _when(value: object) -> str:
    return "—" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


def _row(key: str, r: pd.Series) -> str:
    return (
        f"| {key} | `{progress_bar(float(r['percent_done']), 10)}` {r['percent_done']:.1f}% | "
        f"{r['answers_done']:,} / {r['answers_total']:,} | {r['tasks_done']:,} | {r['tasks_in_progress']:,} | "
        f"{r['tasks_not_started']:,} | {r['tasks_skipped']:,} | {r['per_hour_last_hour']:,} | "
        f"{r['per_hour_avg']:.1f} | {_when(r['eta'])} |"
    )


_HEADER = (
    "| {key} | progress | answers done | tasks done | in progress | not started | skipped | last hour | "
    "avg/h | ETA (UTC) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


def progress_markdown(p: Progress, *, max_batches: int = 30) -> str:
    """A Markdown summary for a Prefect artifact: a bar for the work order, a table per site and per batch.

    Batches are listed least-done first, at most ``max_batches`` of them (the rest are summarised).
    """
    wo = p.work_order.iloc[0]
    title = f"### Annotation progress{' of ' + str(wo['work_order_id']) if wo['work_order_id'] else ''}"
    lines = [
        title,
        "",
        f"`{progress_bar(float(wo['percent_done']))}` **{wo['percent_done']:.1f}%** — "
        f"{wo['answers_done']:,} of {wo['answers_total']:,} answers, {wo['items_done']:,} of "
        f"{wo['items_total']:,} items complete; {wo['per_hour_last_hour']:,} answers in the last hour, "
        f"{wo['per_hour_avg']:.1f}/h on average; ETA {_when(wo['eta'])} UTC (as of {_when(p.now)} UTC).",
        "",
        _HEADER.format(key="site"),
    ]
    lines += [_row(str(r["site_id"]), r) for _, r in p.sites.iterrows()]
    batches = p.batches.sort_values(["percent_done", "batch_id"], kind="stable")
    lines += ["", _HEADER.format(key="batch (sites)")]
    lines += [_row(f"{r['batch_id']} ({r['sites']})", r) for _, r in batches.head(max_batches).iterrows()]
    rest = batches.iloc[max_batches:]
    if len(rest):
        lines.append(
            f"\n… and {len(rest):,} more batches ({int(rest['answers_done'].sum()):,} of "
            f"{int(rest['answers_total'].sum()):,} answers done)."
        )
    return "\n".join(lines)
