"""Allocation: which partner site answers which item, in which batch, by when. Pure and deterministic.

Words used here:

- **answer**: one annotator's answer to one item, a row of the assignment manifest
  (:data:`flows.core.schemas.ASSIGNMENTS`, one row per ``(item, site, slot)``). Capacity is counted in
  answers, because a site's ``items_per_hour`` is what one annotator answers in an hour.
- **task**: one Label Studio task, an item in one project. Its project's ``maximum_annotations`` is the
  number of answers the task collects at that site (``max_annotations`` below).
- **batch**: one Label Studio project at one site, ``project_key = f"{work_order.id}--{site_id}--{batch_id}"``.

Overlap. Label Studio lets distinct annotators answer the same task up to the project's
``maximum_annotations``, which is one number per project. So the plan keeps it uniform:

- ``overlap_across_sites=False``: all k answers of an item go to one site, as one task in one project
  with ``maximum_annotations = k`` (the site must have at least k annotators, see eligibility).
- ``overlap_across_sites=True``: the k answers go to k different sites, one task each, with
  ``maximum_annotations = 1``; a site therefore takes at most one answer per item.

Capacity of a site until the deadline, in answers::

    annotators x items_per_hour[task_type] x shift hours between now and the deadline

Shift hours: every calendar day the site works one shift of ``hours_per_day`` hours starting at
``shift_start_hour`` in its own time zone (the registry has no weekly rota, so every day counts; a
shift cut by ``now`` or by the deadline counts pro rata). For whole days this is the familiar
``annotators x hours_per_day x items_per_hour x working days``. A site with no measured
``items_per_hour`` for the task type uses :data:`DEFAULT_ITEMS_PER_HOUR`.

Gold. ``n_gold = round_half_up(rate x n_real / (1 - rate))`` gold tasks, so gold is ``rate`` of all tasks
(``WorkOrder.gold.rate`` is "the share of tasks that are gold items"). Gold is spread over sites in
proportion to their real tasks and over each site's batches evenly, and shuffled into each batch with
the seed. A gold item appears at most once per batch; a site walks its own shuffled copy of the gold
set, so it sees a gold item again only after it has seen all of them.

Sharing the work. Each eligible site's weight is its capacity (in tasks) times its quality: the measured
``gold_accuracy``, or, for a site not yet measured, the mean of the measured sites (neutral: neither
favoured nor penalised; 1.0 when no site is measured, so only capacity counts). Tasks are shared in
proportion to weight, no site above its capacity (water-filling), whole tasks by largest remainder.

Batches. A batch is what one annotator answers in one shift, ``floor(items_per_hour x hours_per_day)``
tasks, at most :data:`MAX_BATCH_TASKS` to keep a Label Studio project workable; a site's tasks are cut
into equal batches (sizes differ by at most one). The k annotators of a task work side by side, so a
batch of ``n`` tasks takes ``n x max_annotations`` answers of the site's team. A batch is due at the end of
the shift in which the site's team, working at full capacity through its batches in order, finishes it,
and never after the deadline.

Randomness comes from one ``numpy.random.Generator(seed)`` drawn in a fixed order, so the same inputs
and seed give the same plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.arrays import combine
from flows.core.models import PartnerRegistry, PartnerSite, TaskType, WorkOrder
from flows.core.schemas import ASSIGNMENTS
from flows.split.eligibility import eligible_sites

#: Largest Label Studio project Kazi creates, in tasks.
MAX_BATCH_TASKS = 1_000

#: Answers per annotator-hour when a site has not measured the task type yet (conservative figures).
DEFAULT_ITEMS_PER_HOUR: dict[TaskType, float] = {
    TaskType.IMAGE_CLASSIFICATION: 120.0,
    TaskType.TEXT_CLASSIFICATION: 90.0,
    TaskType.OBJECT_DETECTION: 25.0,
    TaskType.AUDIO_TRANSCRIPTION: 8.0,
    TaskType.LISTING_VERIFICATION: 20.0,
}

BATCH_COLUMNS = [
    "batch_id",
    "site_id",
    "project_key",
    "n_tasks",
    "n_gold",
    "max_annotations",
    "n_answers",
    "due_at",
]


class AllocationError(ValueError):
    """The work order cannot be allocated; the message says why and what to change."""


@dataclass(frozen=True)
class SiteCapacity:
    """What a site can answer between now and the deadline, and the figures behind it."""

    site_id: str
    annotators: int
    items_per_hour: float
    items_per_hour_source: str
    hours_per_day: float
    shift_hours: float
    shift_ends: tuple[datetime, ...]
    cumulative_hours: tuple[float, ...]

    @property
    def answers(self) -> int:
        # The epsilon keeps 10 x 8 x 0.1 from flooring to 7.
        return math.floor(self.annotators * self.items_per_hour * self.shift_hours + 1e-9)

    @property
    def formula(self) -> str:
        return (
            f"{self.annotators} annotators x {self.items_per_hour:g} answers/h ({self.items_per_hour_source}) x "
            f"{self.shift_hours:.1f} shift hours before the deadline "
            f"({self.shift_hours / self.hours_per_day if self.hours_per_day else 0:.1f} shifts of "
            f"{self.hours_per_day:g} h)"
        )

    def due_after(self, cumulative_answers: np.ndarray, deadline: datetime) -> list[datetime]:
        """End of the shift in which the site has given ``cumulative_answers`` answers, capped at the deadline."""
        rate = self.annotators * self.items_per_hour
        needed = cumulative_answers / rate if rate > 0 else np.full(len(cumulative_answers), np.inf)
        idx = np.searchsorted(np.asarray(self.cumulative_hours), needed - 1e-9, side="left")
        return [self.shift_ends[i] if i < len(self.shift_ends) else deadline for i in idx]


@dataclass(frozen=True, eq=False)
class Plan:
    """The split of a work order: every answer slot, every batch, and why each site got its share."""

    work_order_id: str
    round_number: int
    max_annotations: int
    #: One row per answer slot, :data:`flows.core.schemas.ASSIGNMENTS`, in Label Studio import order.
    assignments: pa.Table
    #: One row per batch (= Label Studio project): :data:`BATCH_COLUMNS`.
    batches: pd.DataFrame
    #: One row per eligible site: capacity, allocation, utilisation, quality used and why.
    sites: pd.DataFrame
    #: Site id -> why it got no work (ineligible, or eligible but not needed / no shift left).
    passed_over: dict[str, str]
    notes: tuple[str, ...] = field(default=())

    @property
    def n_tasks(self) -> int:
        return int(self.batches["n_tasks"].sum())

    @property
    def n_gold_tasks(self) -> int:
        return int(self.batches["n_gold"].sum())

    @property
    def sites_used(self) -> list[str]:
        return list(dict.fromkeys(self.batches["site_id"]))

    def project_rows(self, project_key: str) -> pa.Table:
        """The assignment rows of one Label Studio project, in import order."""
        return self.assignments.filter(pc.equal(self.assignments["project_key"], project_key))

    def summary_markdown(self) -> str:
        """A human-readable account of the plan, for a Prefect artifact or the CLI."""
        lines = [
            f"### Split of {self.work_order_id} (round {self.round_number})",
            "",
            f"{self.n_tasks:,} tasks ({self.n_gold_tasks:,} gold) in {len(self.batches):,} batches, "
            f"{self.max_annotations} answer(s) per task per site, {self.assignments.num_rows:,} answers.",
            "",
            "| site | capacity | allocated | utilisation | quality | batches | why |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for row in self.sites.itertuples(index=False):
            lines.append(
                f"| {row.site_id} | {row.capacity_answers:,} | {row.allocated_answers:,} | "
                f"{row.utilisation:.0%} | {row.quality:.2f} ({row.quality_source}) | {row.batches} | {row.why} |"
            )
        if self.passed_over:
            lines += ["", "Passed over:"]
            lines += [f"- {site}: {why}" for site, why in self.passed_over.items()]
        if self.notes:
            lines += ["", "Notes:"]
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


# --- Capacity and batch size -------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    """Aware UTC datetime; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def items_per_hour(site: PartnerSite, task_type: TaskType) -> tuple[float, str]:
    """The site's answers per annotator-hour for ``task_type`` and where the figure comes from."""
    measured = site.capacity.items_per_hour.get(task_type)
    if measured is not None:
        return float(measured), "measured"
    return DEFAULT_ITEMS_PER_HOUR[task_type], "task-type default"


def site_capacity(site: PartnerSite, task_type: TaskType, now: datetime, deadline: datetime) -> SiteCapacity:
    """The site's shift hours and answers between ``now`` and ``deadline`` (see the module docstring)."""
    now, deadline = _utc(now), _utc(deadline)
    tz = ZoneInfo(site.timezone)
    shift = timedelta(hours=site.capacity.hours_per_day)
    ends: list[datetime] = []
    cumulative: list[float] = []
    total = 0.0
    # Start a day early: yesterday's shift may still be running (a night shift, or a time zone behind UTC).
    day = now.astimezone(tz).date() - timedelta(days=1)
    last = deadline.astimezone(tz).date()
    while day <= last and shift > timedelta(0):
        start = datetime.combine(day, time(site.shift_start_hour), tzinfo=tz).astimezone(UTC)
        usable_from, usable_to = max(start, now), min(start + shift, deadline)
        if usable_to > usable_from:
            total += (usable_to - usable_from).total_seconds() / 3600
            ends.append(usable_to)
            cumulative.append(total)
        day += timedelta(days=1)
    rate, source = items_per_hour(site, task_type)
    return SiteCapacity(
        site_id=site.id,
        annotators=site.capacity.annotators,
        items_per_hour=rate,
        items_per_hour_source=source,
        hours_per_day=site.capacity.hours_per_day,
        shift_hours=total,
        shift_ends=tuple(ends),
        cumulative_hours=tuple(cumulative),
    )


def batch_size(site: PartnerSite, task_type: TaskType) -> int:
    """Tasks per batch: one annotator's shift, ``floor(items_per_hour x hours_per_day)``, in [1, MAX_BATCH_TASKS]."""
    rate, _ = items_per_hour(site, task_type)
    return int(min(max(math.floor(rate * site.capacity.hours_per_day), 1), MAX_BATCH_TASKS))


def gold_task_count(n_real_tasks: int, rate: float) -> int:
    """Gold tasks so that gold is ``rate`` of all tasks: ``round_half_up(rate x n_real / (1 - rate))``."""
    if rate <= 0 or n_real_tasks <= 0:
        return 0
    if rate >= 1:
        raise ValueError(f"gold rate must be below 1, got {rate}")
    return math.floor(rate * n_real_tasks / (1 - rate) + 0.5)


# --- Sharing -----------------------------------------------------------------------------------


def apportion(total: int, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Whole numbers summing to ``total``, proportional to ``weights``, none above its cap.

    Water-filling: shares in proportion to weight; a share above its cap is held at the cap and the
    rest is shared again among the others. Fractions go by largest remainder, ties to the lower index.
    When the sites that still have room all weigh zero, they share by room instead.

    Raises:
        ValueError: if the caps add up to less than ``total``.
    """
    caps = np.asarray(caps, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if total < 0 or (caps < 0).any() or (weights < 0).any():
        raise ValueError("apportion needs a non-negative total, caps and weights")
    if int(caps.sum()) < total:
        raise ValueError(f"caps add up to {int(caps.sum())}, less than {total}")
    share = np.zeros(len(caps), dtype=np.float64)
    free = caps > 0
    remaining = float(total)
    while remaining > 0 and free.any():
        w = np.where(free, weights, 0.0)
        if w.sum() <= 0:
            w = np.where(free, caps.astype(np.float64), 0.0)
        proposal = remaining * w / w.sum()
        over = free & (proposal >= caps)
        if not over.any():
            share[free] = proposal[free]
            break
        share[over] = caps[over]
        remaining -= float(caps[over].sum())
        free &= ~over
    whole = np.minimum(np.floor(share + 1e-9).astype(np.int64), caps)
    left = total - int(whole.sum())
    while left > 0:
        room = whole < caps
        order = np.lexsort((np.arange(len(caps)), -(share - whole)))
        order = order[room[order]][:left]
        whole[order] += 1
        left -= len(order)
    return whole


def _quality(sites: list[PartnerSite]) -> tuple[np.ndarray, list[str]]:
    measured = [s.gold_accuracy for s in sites if s.gold_accuracy is not None]
    if measured:
        prior, prior_source = float(np.mean(measured)), "prior: mean of measured sites"
    else:
        prior, prior_source = 1.0, "prior: no site measured yet"
    quality = np.array([prior if s.gold_accuracy is None else s.gold_accuracy for s in sites], dtype=np.float64)
    sources = [prior_source if s.gold_accuracy is None else "measured gold accuracy" for s in sites]
    return quality, sources


def _even_split(total: int, parts: int, *, extras_first: bool) -> np.ndarray:
    """``total`` in ``parts`` whole numbers differing by at most one, the larger ones first or last."""
    base, extra = divmod(total, parts)
    sizes = np.full(parts, base, dtype=np.int64)
    if extra:
        if extras_first:
            sizes[:extra] += 1
        else:
            sizes[parts - extra :] += 1
    return sizes


# --- Inputs ------------------------------------------------------------------------------------


def _id_array(table: pd.DataFrame | pa.Table, what: str) -> pa.StringArray:
    names = table.column_names if isinstance(table, pa.Table) else list(table.columns)
    if "item_id" not in names:
        raise AllocationError(f"{what} has no item_id column")
    raw = table.column("item_id") if isinstance(table, pa.Table) else pa.array(table["item_id"], from_pandas=True)
    column = combine(raw).cast(pa.string())
    if column.null_count:
        raise AllocationError(f"{what} has {column.null_count} rows without an item_id")
    if pc.count_distinct(column).as_py() != len(column):
        counts = pc.value_counts(column)
        dupes = [str(v["values"]) for v in counts.to_pylist() if v["counts"] > 1][:5]
        raise AllocationError(f"{what} repeats item ids, e.g. {', '.join(dupes)}")
    return column


# --- The plan ----------------------------------------------------------------------------------


def plan_split(
    work_order: WorkOrder,
    registry: PartnerRegistry,
    items: pd.DataFrame | pa.Table,
    gold: pd.DataFrame | pa.Table | None,
    now: datetime,
    *,
    round_number: int = 0,
) -> Plan:
    """Allocate a work order's items, k answers each, plus gold, to eligible partner sites.

    Args:
        work_order: The work order (task type, overlap, gold rate, deadline, seed).
        registry: All partner sites; eligibility is judged on ``now``'s UTC date.
        items: Canonical items (only ``item_id`` is read). Items that are also gold items are treated
            as gold only, so an item is never both.
        gold: Known-answer items (only ``item_id`` is read; the answers never enter the plan), or None
            when the work order has no gold set.
        now: When the work starts; naive means UTC.
        round_number: 0 for the first pass, 1, 2, ... for rework rounds (goes into batch ids).

    Returns:
        The plan. Nothing is touched outside it.

    Raises:
        AllocationError: no eligible site, too few sites for overlap across sites, not enough capacity
            before the deadline, or a gold set too small for a batch; the message says what to change.
    """
    now, deadline = _utc(now), _utc(work_order.deadline)
    k = work_order.overlap
    across = work_order.overlap_across_sites
    per_task = 1 if across else k
    groups = k // per_task
    rng = np.random.default_rng(work_order.seed)
    notes: list[str] = []

    eligible, passed_over = eligible_sites(registry, work_order, now.date())
    item_ids = _id_array(items, "items")
    gold_ids = _id_array(gold, "gold") if gold is not None else pa.array([], type=pa.string())
    is_gold_item = pc.is_in(item_ids, value_set=gold_ids)
    n_overlapping = int(pc.sum(is_gold_item).as_py() or 0)
    real_ids = item_ids.filter(pc.invert(is_gold_item))
    if n_overlapping:
        notes.append(f"{n_overlapping:,} items are also gold items and are allocated as gold only.")
    n_items, n_gold_set = len(real_ids), len(gold_ids)
    if n_items == 0:
        raise AllocationError(f"Work order {work_order.id} has no items to allocate (apart from gold items).")
    if not eligible:
        why = "; ".join(f"{site}: {reason}" for site, reason in passed_over.items()) or "the registry is empty"
        raise AllocationError(f"No partner site is eligible for work order {work_order.id}. Passed over: {why}.")
    if across and len(eligible) < k:
        raise AllocationError(
            f"Work order {work_order.id} wants its {k} answers per item from {k} different sites "
            f"(overlap_across_sites), but only {len(eligible)} sites are eligible: "
            f"{', '.join(s.id for s in eligible)}. Lower the overlap, allow answers from one site, or add sites."
        )

    n_real_tasks = n_items * groups
    n_gold_tasks = gold_task_count(n_real_tasks, work_order.gold.rate)
    if n_gold_tasks and n_gold_set == 0:
        notes.append(
            f"No gold set: the gold rate of {work_order.gold.rate:.0%} is not applied, "
            "and annotator quality cannot be measured on gold."
        )
        n_gold_tasks = 0
    n_tasks = n_real_tasks + n_gold_tasks

    capacities = [site_capacity(s, work_order.task_type, now, deadline) for s in eligible]
    cap_answers = np.array([c.answers for c in capacities], dtype=np.int64)
    cap_tasks = cap_answers // per_task
    # Each site keeps room for its gold share: real tasks fill at most n_real/n_tasks of its capacity.
    real_limit = np.floor(cap_tasks * n_real_tasks / n_tasks + 1e-9).astype(np.int64)
    if across:
        real_limit = np.minimum(real_limit, n_items)
    if int(real_limit.sum()) < n_real_tasks:
        raise AllocationError(
            _shortfall_message(work_order, capacities, real_limit, n_items, n_real_tasks, n_gold_tasks, deadline)
        )

    quality, quality_sources = _quality(eligible)
    weights = cap_tasks * quality
    real = apportion(n_real_tasks, weights, real_limit)
    gold_per_site = apportion(n_gold_tasks, real.astype(np.float64), cap_tasks - real)

    # Items in a random order, then handed out in contiguous runs per site. With overlap across sites a
    # run never exceeds n_items, so unit u = item perm[u % n] answers slot u // n: distinct sites per item.
    cut = _Cutter(work_order, per_task, round_number, deadline, rng.permutation(n_items), n_gold_set, rng)
    starts = np.concatenate([[0], np.cumsum(real)[:-1]])
    parts: list[dict[str, np.ndarray]] = []
    batch_rows: list[dict[str, object]] = []
    reasons: list[str] = []
    n_batches_at: list[int] = []
    for i, site in enumerate(eligible):
        reasons.append(_why(i, real, real_limit, weights, capacities[i], across, n_items))
        if real[i] + gold_per_site[i] == 0:
            passed_over[site.id] = reasons[-1]
            n_batches_at.append(0)
            continue
        part, rows = cut.site(site, capacities[i], int(starts[i]), int(real[i]), int(gold_per_site[i]), len(batch_rows))
        parts.append(part)
        batch_rows += rows
        n_batches_at.append(len(rows))

    assignments = _assignments(parts, batch_rows, pa.concat_arrays([real_ids, gold_ids]), per_task, round_number)
    batches = pd.DataFrame(batch_rows, columns=BATCH_COLUMNS)
    batches["due_at"] = pd.to_datetime(batches["due_at"], utc=True)
    allocated = (real + gold_per_site) * per_task
    weight_share = weights / weights.sum() if weights.sum() > 0 else np.zeros(len(weights))
    sites = pd.DataFrame(
        {
            "site_id": [s.id for s in eligible],
            "capacity_answers": cap_answers,
            "capacity_formula": [c.formula for c in capacities],
            "allocated_answers": allocated,
            "gold_answers": gold_per_site * per_task,
            "utilisation": np.divide(allocated, cap_answers, out=np.zeros(len(eligible)), where=cap_answers > 0),
            "quality": quality,
            "quality_source": quality_sources,
            "weight_share": weight_share,
            "work_share": real / n_real_tasks,
            "batch_size": [batch_size(s, work_order.task_type) for s in eligible],
            "batches": n_batches_at,
            "why": reasons,
        }
    )
    return Plan(
        work_order_id=work_order.id,
        round_number=round_number,
        max_annotations=per_task,
        assignments=assignments,
        batches=batches,
        sites=sites,
        passed_over=passed_over,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class _Cutter:
    """Cuts one site's share into shuffled batches; what every site shares, in one place."""

    work_order: WorkOrder
    per_task: int
    round_number: int
    deadline: datetime
    perm: np.ndarray
    n_gold_set: int
    rng: np.random.Generator

    def site(
        self, site: PartnerSite, capacity: SiteCapacity, first_unit: int, n_real: int, n_gold: int, first_batch: int
    ) -> tuple[dict[str, np.ndarray], list[dict[str, object]]]:
        """The site's tasks (item, slot group, gold flag, batch), in import order, and its batch rows."""
        n_items = len(self.perm)
        total = n_real + n_gold
        n_batches = math.ceil(total / batch_size(site, self.work_order.task_type))
        real_in = _even_split(n_real, n_batches, extras_first=True)
        gold_in = _even_split(n_gold, n_batches, extras_first=False)
        if n_gold and int(gold_in.max()) > self.n_gold_set:
            raise AllocationError(
                f"The gold set has {self.n_gold_set:,} items, but a batch at {site.id} needs {int(gold_in.max()):,} "
                f"distinct gold items to reach the gold rate of {self.work_order.gold.rate:.0%}. "
                "Add gold items or lower gold.rate."
            )
        unit = first_unit + np.arange(n_real, dtype=np.int64)
        item_index = np.concatenate(
            [self.perm[unit % n_items], n_items + _gold_walk(self.rng, self.n_gold_set, n_gold)]
        )
        group = np.concatenate([unit // n_items, np.zeros(n_gold, dtype=np.int64)])
        is_gold = np.concatenate([np.zeros(n_real, dtype=bool), np.ones(n_gold, dtype=bool)])
        local_batch = np.concatenate(
            [np.repeat(np.arange(n_batches), real_in), np.repeat(np.arange(n_batches), gold_in)]
        )
        # Shuffle within each batch, so gold sits at random places in Label Studio's task order.
        order = np.lexsort((self.rng.random(total), local_batch))
        part = {
            "item_index": item_index[order],
            "group": group[order],
            "is_gold": is_gold[order],
            "batch": first_batch + local_batch[order],
        }
        sizes = real_in + gold_in
        due = capacity.due_after(np.cumsum(sizes) * self.per_task, self.deadline)
        rows: list[dict[str, object]] = []
        for b in range(n_batches):
            batch_id = f"r{self.round_number}-b{first_batch + b:04d}"
            rows.append(
                {
                    "batch_id": batch_id,
                    "site_id": site.id,
                    "project_key": f"{self.work_order.id}--{site.id}--{batch_id}",
                    "n_tasks": int(sizes[b]),
                    "n_gold": int(gold_in[b]),
                    "max_annotations": self.per_task,
                    "n_answers": int(sizes[b]) * self.per_task,
                    "due_at": min(due[b], self.deadline),
                }
            )
        return part, rows


def _gold_walk(rng: np.random.Generator, n_gold_set: int, n_gold: int) -> np.ndarray:
    """``n_gold`` picks walking cyclically through one shuffled copy of the gold set.

    Any run of at most ``n_gold_set`` consecutive picks is distinct, which is what keeps a gold item
    from appearing twice in one batch.
    """
    if n_gold == 0:
        return np.zeros(0, dtype=np.int64)
    return rng.permutation(n_gold_set)[np.arange(n_gold) % n_gold_set]


def _assignments(
    parts: list[dict[str, np.ndarray]],
    batch_rows: list[dict[str, object]],
    ids: pa.Array,
    per_task: int,
    round_number: int,
) -> pa.Table:
    """Expand tasks into answer slots: a task of group g has slots g*per_task .. g*per_task + per_task - 1."""
    item_index = np.concatenate([p["item_index"] for p in parts])
    group = np.concatenate([p["group"] for p in parts])
    is_gold = np.concatenate([p["is_gold"] for p in parts])
    batch = np.concatenate([p["batch"] for p in parts])
    n = len(item_index)
    slot = np.repeat(group * per_task, per_task) + np.tile(np.arange(per_task), n)
    batch_of_row = pa.array(np.repeat(batch, per_task))
    columns = {
        "item_id": ids.take(pa.array(np.repeat(item_index, per_task))),
        "batch_id": pa.array([r["batch_id"] for r in batch_rows], pa.string()).take(batch_of_row),
        "site_id": pa.array([r["site_id"] for r in batch_rows], pa.string()).take(batch_of_row),
        "project_key": pa.array([r["project_key"] for r in batch_rows], pa.string()).take(batch_of_row),
        "slot": pa.array(slot.astype(np.int16)),
        "is_gold": pa.array(np.repeat(is_gold, per_task)),
        "round": pa.array(np.full(n * per_task, round_number, dtype=np.int16)),
    }
    return pa.Table.from_pydict(columns, schema=ASSIGNMENTS)


def _why(
    i: int,
    real: np.ndarray,
    real_limit: np.ndarray,
    weights: np.ndarray,
    capacity: SiteCapacity,
    across: bool,
    n_items: int,
) -> str:
    """Why site ``i`` got the share it got, in one sentence."""
    if capacity.answers == 0:
        return "no shift hours between now and the deadline" if capacity.shift_hours == 0 else "no capacity left"
    if real[i] == 0:
        return "not needed: its share of the work rounded to zero"
    weight_share = weights[i] / weights.sum() if weights.sum() > 0 else 0.0
    work_share = real[i] / real.sum()
    if real[i] == real_limit[i]:
        if across and real_limit[i] == n_items:
            return (
                f"{work_share:.0%} of the work: capped at one answer per item ({n_items:,} items), "
                "as the answers of an item come from different sites"
            )
        return f"{work_share:.0%} of the work: filled to its capacity before the deadline"
    text = f"{work_share:.0%} of the work, in proportion to capacity x quality ({weight_share:.0%} of the weight)"
    if work_share > weight_share + 0.005:
        text += ", more because other sites were full"
    return text


def _shortfall_message(
    work_order: WorkOrder,
    capacities: list[SiteCapacity],
    real_limit: np.ndarray,
    n_items: int,
    n_real_tasks: int,
    n_gold_tasks: int,
    deadline: datetime,
) -> str:
    per_task = 1 if work_order.overlap_across_sites else work_order.overlap
    needed = (n_real_tasks + n_gold_tasks) * per_task
    capacity = sum(c.answers for c in capacities)
    missing_real = n_real_tasks - int(real_limit.sum())
    # Capacity can exceed the need yet not fit it (answers come in whole tasks, each site keeps room for its
    # gold, and across sites a site takes one answer per item): then the shortfall is what does not fit.
    short = needed - capacity
    if short <= 0:
        short = math.ceil(missing_real * (n_real_tasks + n_gold_tasks) / n_real_tasks) * per_task
    per_site = ", ".join(f"{c.site_id} {c.answers:,} ({c.formula})" for c in capacities)
    text = (
        f"Work order {work_order.id} cannot be done by {deadline:%Y-%m-%d %H:%M} UTC: it needs {needed:,} answers "
        f"({n_items:,} items x overlap {work_order.overlap} = {n_items * work_order.overlap:,}, plus "
        f"{n_gold_tasks * per_task:,} gold), but the eligible sites can give {capacity:,} before the deadline: "
        f"{per_site}. Short by {short:,} answers."
    )
    if work_order.overlap_across_sites:
        text += f" With overlap across sites a site gives at most one answer per item ({n_items:,})."
    return text + " Extend the deadline, lower the overlap, or add sites."
