"""A simulated workforce that annotates Label Studio projects and knows the right answers.

Two ways to work a project:

- :meth:`SimulatedWorkforce.work`, the realistic path: each annotator submits their answers through the API
  with their own token (``annotations.create``, about 150 ms each), the way the Label Studio editor does:
  ``k = maximum_annotations`` answers per task from distinct annotators, skips (``was_cancelled``), a lead
  time per answer, optionally only part of the work (a stalled batch) and edits of earlier answers.
- :meth:`SimulatedWorkforce.work_bulk`, for big benchmarks on projects that already exist (Kazi's): the
  same planned answers, each annotator's imported as predictions with a model version of their own and
  turned into annotations by that annotator's own token (:mod:`simulation.labelstudio_users`, "Answering in
  bulk"): one listing, one import and one conversion call per annotator per project, 2-6 ms per answer
  here instead of 150 (Label Studio's time, mostly). What differs from :meth:`~SimulatedWorkforce.work`:
  the answers carry no lead time (Label Studio stores null) and planned skips are left out (the plan
  already gave each skipped task to someone else, so every task still gets its answers from distinct
  annotators); no edits.
- :meth:`SimulatedWorkforce.bulk_tasks`, for benchmarks that create their own tasks: the same answers
  embedded in the task payloads, so one import creates tasks and annotations (500 annotated tasks in about
  1.4 s).

Answers are a function of (seed, annotator, item) only, so every path, any order of work and a rerun give
the same answer for the same annotator and item.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Container, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from flows.core.labelstudio import LabelStudioError
from simulation.answers import (
    AnnotatorProfile,
    SimulatedAnswer,
    answer_result,
    answer_rng,
    keyed_rng,
    simulate_answer,
)
from simulation.datasets import Truth

LOG_COLUMNS = (
    "profile_id",
    "site_id",
    "user_id",
    "project_id",
    "task_id",
    "item_id",
    "annotation_id",
    "lead_time",
    "skipped",
    "edited",
)

#: Model versions of the simulation's predictions start with this; Kazi's own (review rounds) never do.
SIM_MODEL_VERSION = "sim-"


class AnnotatorClient(Protocol):
    """What an annotator does in Label Studio (see :class:`simulation.labelstudio_users.AnnotatorSession`)."""

    user_id: int

    def maximum_annotations(self, project_id: int) -> int: ...

    def tasks(self, project_id: int) -> list[dict[str, Any]]: ...

    def submit(self, task_id: int, answer: SimulatedAnswer) -> int: ...

    def edit(self, annotation_id: int, result: list[dict[str, Any]], lead_time: float) -> None: ...


class BulkAnnotatorClient(AnnotatorClient, Protocol):
    """An annotator who can also answer in bulk (see :class:`simulation.labelstudio_users.AnnotatorSession`)."""

    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]]) -> int: ...

    def convert_predictions(self, project_id: int, model_version: str) -> int: ...


@dataclass(frozen=True)
class Step:
    """One planned submission: an annotator's answer (or skip) to one task."""

    task_index: int
    item_id: str
    profile_id: str
    answer: SimulatedAnswer


def _item_id(task: Mapping[str, Any], refs: Mapping[str, str] | None = None) -> str:
    """The item a task shows: Kazi tasks carry an opaque ``item`` ref, which ``refs`` maps back."""
    data = task.get("data", {})
    if refs is not None and "item" in data:
        ref = str(data["item"])
        if ref not in refs:
            raise ValueError(f"task {task.get('id')} shows item ref {ref!r}, which this workforce has no truth for")
        return refs[ref]
    if "item_id" not in data:
        raise ValueError(f"task {task.get('id')} has no data.item_id: not a Kazi task")
    return str(data["item_id"])


def _completed_by(annotation: Mapping[str, Any]) -> int | None:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("id")
    return None if who is None else int(who)


@dataclass(frozen=True, eq=False)
class BulkRun:
    """What one :meth:`SimulatedWorkforce.work_bulk` pass over a project did."""

    #: This pass's answers (:data:`LOG_COLUMNS`; ``lead_time`` null, no skips).
    log: pd.DataFrame
    #: Tasks the project held when listed.
    tasks: int
    #: Tasks still short of answers afterwards (too few annotators who have not seen the item, or ``fraction``).
    open_tasks: int
    #: Annotations Label Studio reported created (the log's length unless tasks vanished meanwhile).
    created: int
    #: Planned skips left out (each skipped task went on to another annotator in the plan).
    skips_left_out: int
    #: Seconds per step: ``list`` (the export), ``plan``, ``import`` (predictions), ``convert`` (all annotators).
    seconds: Mapping[str, float] = field(default_factory=dict)


def model_version(profile_id: str, run: str) -> str:
    """The model version that tags ``profile_id``'s predictions of one bulk pass ``run``."""
    return f"{SIM_MODEL_VERSION}{profile_id}-{run}"


def bulk_predictions(steps: Sequence[Step], task_ids: Sequence[int], run: str) -> dict[str, list[dict[str, Any]]]:
    """Each annotator's planned answers as Label Studio predictions, grouped by profile id.

    Args:
        steps: The plan (:meth:`SimulatedWorkforce.plan`); skips are left out.
        task_ids: Label Studio task id of each listed task (``Step.task_index`` indexes it).
        run: Tag of this pass, part of every model version, so predictions a crashed pass left behind are
            never converted by a later one.

    Returns:
        ``{profile_id: [{"task", "result", "model_version"}, ...]}``, profiles in first-answer order.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for step in steps:
        if step.answer.was_cancelled:
            continue
        out.setdefault(step.profile_id, []).append(
            {
                "task": int(task_ids[step.task_index]),
                "result": step.answer.result,
                "model_version": model_version(step.profile_id, run),
            }
        )
    return out


class _SeenElsewhere(Container[tuple[str, str]]):
    """(item, profile) pairs answered in a project other than ``project_id``, looked up in the index."""

    def __init__(self, index: Mapping[tuple[str, str], set[int]], project_id: int) -> None:
        self._index = index
        self._project_id = project_id

    def __contains__(self, pair: object) -> bool:
        projects = self._index.get(pair)  # type: ignore[call-overload]
        # len() and `in` only: another thread may add to the set meanwhile.
        return projects is not None and (len(projects) > 1 or self._project_id not in projects)


class SimulatedWorkforce:
    """Annotator profiles plus the truth of the items they work on.

    Args:
        profiles: The annotators (ids unique).
        truth: Right answers (and label set / fields) of every item that may show up in a task.
        seed: Fixes every answer, skip and lead time.
        refs: Item ref -> item id, for tasks that show opaque refs (as Kazi's do) instead of item ids.
    """

    def __init__(
        self,
        profiles: Sequence[AnnotatorProfile],
        truth: Truth,
        seed: int = 0,
        refs: Mapping[str, str] | None = None,
    ) -> None:
        ids = [p.id for p in profiles]
        if len(set(ids)) != len(ids):
            raise ValueError("profile ids must be unique")
        if not profiles:
            raise ValueError("a workforce needs at least one profile")
        self.profiles: dict[str, AnnotatorProfile] = {p.id: p for p in profiles}
        self.truth = truth
        self.seed = seed
        self.refs = dict(refs) if refs is not None else None
        self._log: list[dict[str, Any]] = []
        #: (item id, profile id) -> projects it was answered in through the API (review rounds avoid them).
        self._answered: dict[tuple[str, str], set[int]] = {}

    # -- answers (pure) ---------------------------------------------------------------------
    def answer(self, profile_id: str, item_id: str, shown: Mapping[str, Any] | None = None) -> SimulatedAnswer:
        """What ``profile_id`` submits for ``item_id``; ``shown`` is the task data (listing fields)."""
        if item_id not in self.truth.answers:
            raise KeyError(f"item {item_id!r} is not in the workforce's truth")
        profile = self.profiles[profile_id]
        rng = answer_rng(self.seed, profile_id, item_id)
        return simulate_answer(self.truth.answers[item_id], profile, self.truth.context(item_id, shown), rng)

    def edited_result(
        self, profile_id: str, item_id: str, previous: list[dict[str, Any]], shown: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """A second thought that differs from ``previous``: the right answer, or a careless one if it was right."""
        context = self.truth.context(item_id, shown)
        truth = self.truth.answers[item_id]
        rng = answer_rng(self.seed + 1, profile_id, item_id)
        profile = self.profiles[profile_id]
        fixed = answer_result(truth, profile.perfect(), context, rng)
        if _values(fixed) != _values(previous):
            return fixed
        careless = profile.careless()
        for _ in range(20):
            other = answer_result(truth, careless, context, rng)
            if _values(other) != _values(previous):
                return other
        return fixed

    def plan(
        self,
        tasks: Sequence[Mapping[str, Any]],
        user_ids: Mapping[str, int],
        overlap: int,
        *,
        fraction: float = 1.0,
        limit: int | None = None,
        seen: Container[tuple[str, str]] = frozenset(),
    ) -> list[Step]:
        """Who answers which task, given what the tasks already hold.

        A task needs ``overlap`` answers that are not skips, each from a different annotator; an annotator
        who already answered or skipped a task never sees it again (Label Studio's default: a skipped task
        goes to someone else). Annotators take a task in a random order per task, so work spreads evenly.

        Args:
            tasks: Label Studio tasks (``data.item_id``; ``annotations`` with ``completed_by`` if any).
            user_ids: Working annotators: profile id -> Label Studio user id.
            overlap: Answers per task (the project's ``maximum_annotations``).
            fraction: Share of the unfinished tasks to work on (the rest stays untouched: a stalled batch).
            limit: At most this many submissions.
            seen: (item id, profile id) pairs answered before, in other projects: a person does not answer
                an item twice, so a review round of the same item goes to someone who has not seen it.
        """
        if overlap < 1:
            raise ValueError(f"overlap must be at least 1, got {overlap}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        unknown = [p for p in user_ids if p not in self.profiles]
        if unknown:
            raise ValueError(f"no profiles for annotators {unknown[:3]}")
        pending: list[tuple[int, str, set[int], int]] = []
        for index, task in enumerate(tasks):
            annotations = task.get("annotations") or []
            touched = {u for u in (_completed_by(a) for a in annotations) if u is not None}
            answered = sum(1 for a in annotations if not a.get("was_cancelled"))
            if answered < overlap:
                pending.append((index, _item_id(task, self.refs), touched, overlap - answered))
        rng = np.random.default_rng([self.seed, 0x5EED])
        chosen = [pending[i] for i in sorted(rng.permutation(len(pending))[: math.floor(fraction * len(pending))])]
        workers = sorted(user_ids)
        steps: list[Step] = []
        for index, item_id, touched, need in chosen:
            order = keyed_rng(self.seed, "order", item_id).permutation(len(workers))
            shown = tasks[index].get("data", {})
            for w in order:
                if need == 0 or (limit is not None and len(steps) >= limit):
                    break
                profile_id = workers[int(w)]
                if user_ids[profile_id] in touched or (item_id, profile_id) in seen:
                    continue
                answer = self.answer(profile_id, item_id, shown)
                steps.append(Step(index, item_id, profile_id, answer))
                need -= 0 if answer.was_cancelled else 1
        return steps

    # -- the realistic path -------------------------------------------------------------------
    def work(
        self,
        project_id: int,
        clients: Mapping[str, AnnotatorClient],
        *,
        fraction: float = 1.0,
        limit: int | None = None,
        edits: int = 0,
    ) -> pd.DataFrame:
        """Annotate a project through the API, each annotator with their own client (token).

        One annotator lists the project (the export of all tasks, about a second; every annotator sees the
        same list, so one listing serves all) and reads ``maximum_annotations``; then every planned answer
        is submitted by its annotator, and ``edits`` of this run's answers are changed afterwards.

        Args:
            project_id: The Label Studio project.
            clients: Profile id -> that annotator's client; only these annotators work.
            fraction: Share of the unfinished tasks to work on.
            limit: At most this many submissions.
            edits: How many of this run's answers their annotators edit afterwards.

        Returns:
            This run's submissions (:data:`LOG_COLUMNS`), also added to :meth:`log_frame`.
        """
        if not clients:
            raise ValueError("work needs at least one annotator client")
        first = clients[min(clients)]
        overlap = first.maximum_annotations(project_id)
        tasks = first.tasks(project_id)
        user_ids = {p: c.user_id for p, c in clients.items()}
        # Items answered through the API in another project (a review round) go to someone who has not seen them.
        seen = _SeenElsewhere(self._answered, project_id)
        steps = self.plan(tasks, user_ids, overlap, fraction=fraction, limit=limit, seen=seen)
        rows: list[dict[str, Any]] = []
        for step in steps:
            task_id = int(tasks[step.task_index]["id"])
            annotation_id = clients[step.profile_id].submit(task_id, step.answer)
            rows.append(self._row(step, user_ids[step.profile_id], project_id, task_id, annotation_id))
        answered = [i for i, step in enumerate(steps) if not step.answer.was_cancelled]
        rng = np.random.default_rng([self.seed, project_id, 0xED17])
        for pick in rng.permutation(len(answered))[: max(0, edits)]:
            i = answered[int(pick)]
            step, row = steps[i], rows[i]
            shown = tasks[step.task_index].get("data", {})
            result = self.edited_result(step.profile_id, step.item_id, step.answer.result, shown)
            # Going back to an answer takes another look: the editor adds that time to the lead time.
            seconds = round(step.answer.lead_time * 1.3, 3)
            clients[step.profile_id].edit(row["annotation_id"], result, seconds)
            rows[i] = {**row, "lead_time": seconds, "edited": True}
        self._record(rows)
        return _frame(rows)

    def work_bulk(
        self,
        project_id: int,
        clients: Mapping[str, BulkAnnotatorClient],
        *,
        fraction: float = 1.0,
        limit: int | None = None,
    ) -> BulkRun:
        """Annotate a project in bulk: the answers :meth:`work` would submit, as predictions each annotator converts.

        One annotator lists the project (as in :meth:`work`) and imports every planned answer as a prediction
        tagged with its annotator's model version (:func:`model_version`, with a tag new for this pass); then
        each annotator, with their own client, converts the predictions of their version, so Label Studio
        records them as that annotator's annotations. Predictions of any other version (a review round shows
        the earlier answers as Kazi's predictions) are left alone. See the module docstring for what differs
        from :meth:`work`.

        Args:
            project_id: The Label Studio project.
            clients: Profile id -> that annotator's client; only these annotators work.
            fraction: Share of the unfinished tasks to work on.
            limit: At most this many planned submissions (skips included, as in :meth:`work`).

        Raises:
            LabelStudioError: Label Studio imported or converted more or fewer predictions than sent.
        """
        if not clients:
            raise ValueError("work_bulk needs at least one annotator client")
        first = clients[min(clients)]
        clock = [time.perf_counter()]
        seconds: dict[str, float] = {}

        def lap(name: str) -> None:
            clock.append(time.perf_counter())
            seconds[name] = clock[-1] - clock[-2]

        overlap = first.maximum_annotations(project_id)
        tasks = first.tasks(project_id)
        lap("list")
        user_ids = {p: c.user_id for p, c in clients.items()}
        seen = _SeenElsewhere(self._answered, project_id)
        steps = self.plan(tasks, user_ids, overlap, fraction=fraction, limit=limit, seen=seen)
        answers = [s for s in steps if not s.answer.was_cancelled]
        task_ids = [int(t["id"]) for t in tasks]
        run = uuid.uuid4().hex[:8]
        by_profile = bulk_predictions(answers, task_ids, run)
        lap("plan")
        imported = first.import_predictions(project_id, [p for preds in by_profile.values() for p in preds])
        lap("import")
        if imported != len(answers):
            raise LabelStudioError(
                f"project {project_id}: Label Studio created {imported} of {len(answers)} predictions sent"
            )
        created = 0
        for profile_id, predictions in by_profile.items():
            made = clients[profile_id].convert_predictions(project_id, model_version(profile_id, run))
            # Fewer is possible when tasks were deleted meanwhile (a batch moved to another site); more is not.
            if made > len(predictions):
                raise LabelStudioError(
                    f"project {project_id}: {made} annotations made from {len(predictions)} predictions of "
                    f"{model_version(profile_id, run)}"
                )
            created += made
        lap("convert")
        rows = [
            {**self._row(s, user_ids[s.profile_id], project_id, task_ids[s.task_index], None), "lead_time": None}
            for s in answers
        ]
        self._record(rows)
        return BulkRun(
            log=_frame(rows),
            tasks=len(tasks),
            open_tasks=_open_tasks(tasks, answers, overlap),
            created=created,
            skips_left_out=len(steps) - len(answers),
            seconds=seconds,
        )

    def _record(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._log.extend(dict(r) for r in rows)
        for r in rows:
            if r["project_id"] is not None:
                self._answered.setdefault((str(r["item_id"]), str(r["profile_id"])), set()).add(int(r["project_id"]))

    def _row(
        self, step: Step, user_id: int, project_id: int | None, task_id: int | None, annotation_id: int | None
    ) -> dict[str, Any]:
        return {
            "profile_id": step.profile_id,
            "site_id": self.profiles[step.profile_id].site_id,
            "user_id": user_id,
            "project_id": project_id,
            "task_id": task_id,
            "item_id": step.item_id,
            "annotation_id": annotation_id,
            "lead_time": step.answer.lead_time,
            "skipped": step.answer.was_cancelled,
            "edited": False,
        }

    # -- the bulk path --------------------------------------------------------------------------
    def bulk_tasks(
        self,
        tasks: Sequence[Mapping[str, Any]],
        user_ids: Mapping[str, int],
        overlap: int,
        *,
        fraction: float = 1.0,
    ) -> list[dict[str, Any]]:
        """Task payloads with their annotations embedded, for one import call.

        ``completed_by`` is the Label Studio user id (an organisation member; Label Studio also takes
        ``{"email": ...}``) and ``ground_truth`` is set false, since Label Studio marks imported annotations
        as ground truth otherwise. The inputs are not changed.

        Args:
            tasks: Payloads ``{"data": {...}}`` as built for import.
            user_ids: Profile id -> Label Studio user id of the annotators who work.
            overlap: Answers per task.
            fraction: Share of the tasks that get answers.
        """
        steps = self.plan(tasks, user_ids, overlap, fraction=fraction)
        embedded: dict[int, list[dict[str, Any]]] = {}
        for step in steps:
            embedded.setdefault(step.task_index, []).append(
                {
                    "result": step.answer.result,
                    "completed_by": user_ids[step.profile_id],
                    "lead_time": step.answer.lead_time,
                    "was_cancelled": step.answer.was_cancelled,
                    "ground_truth": False,
                }
            )
        self._record([self._row(s, user_ids[s.profile_id], None, None, None) for s in steps])
        out = []
        for index, task in enumerate(tasks):
            payload = {k: v for k, v in task.items() if k != "annotations"}
            payload["annotations"] = [*(task.get("annotations") or []), *embedded.get(index, [])]
            out.append(payload)
        return out

    # -- what the simulation knows --------------------------------------------------------------
    def truth_frame(self) -> pd.DataFrame:
        """The right answer per item: item_id, answer (canonical JSON), label (classification)."""
        return self.truth.frame()

    def profiles_frame(self) -> pd.DataFrame:
        """One row per annotator with their profile (confusions as a dict)."""
        frame = pd.DataFrame([asdict(p) for p in self.profiles.values()])
        return frame.rename(columns={"id": "profile_id"})

    def log_frame(self) -> pd.DataFrame:
        """Every submission this workforce made, in order (:data:`LOG_COLUMNS`)."""
        return _frame(self._log)


def _open_tasks(tasks: Sequence[Mapping[str, Any]], answers: Sequence[Step], overlap: int) -> int:
    """Tasks with fewer than ``overlap`` answers (not skips) once ``answers`` are added."""
    planned: dict[int, int] = {}
    for step in answers:
        planned[step.task_index] = planned.get(step.task_index, 0) + 1
    short = 0
    for index, task in enumerate(tasks):
        held = sum(1 for a in task.get("annotations") or [] if not a.get("was_cancelled"))
        short += held + planned.get(index, 0) < overlap
    return short


def _values(result: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """A result without its random region ids, comparable between two answers."""
    return sorted((str(r.get("from_name")), repr(sorted(r.get("value", {}).items()))) for r in result)


def _frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(LOG_COLUMNS))
    for name in ("user_id", "project_id", "task_id", "annotation_id"):
        frame[name] = frame[name].astype("Int64")
    for name in ("profile_id", "site_id", "item_id"):
        frame[name] = frame[name].astype("str")
    frame["lead_time"] = frame["lead_time"].astype("float64")
    frame["skipped"] = frame["skipped"].astype("bool")
    frame["edited"] = frame["edited"].astype("bool")
    return frame
