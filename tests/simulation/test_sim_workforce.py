from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

import pytest
from pydantic import SecretStr

from flows.annotate.normalise import export_to_rows
from flows.core.models import TaskType
from simulation.answers import AnnotatorProfile, SimulatedAnswer, make_profiles
from simulation.datasets import listing_verification_dataset, sample_dataset, text_classification_dataset
from simulation.workforce import LOG_COLUMNS, SimulatedWorkforce

pytestmark = pytest.mark.unit


class FakeProject:
    """An in-memory Label Studio project: tasks with annotations."""

    def __init__(self, payloads: list[dict[str, Any]], overlap: int) -> None:
        self.overlap = overlap
        self.tasks = [{"id": 100 + i, **copy.deepcopy(p), "annotations": []} for i, p in enumerate(payloads)]
        self.next_id = 1
        self.edits: list[tuple[int, list[dict[str, Any]], float]] = []


class FakeClient:
    def __init__(self, project: FakeProject, user_id: int) -> None:
        self.project = project
        self.user_id = user_id
        self.listings = 0

    def maximum_annotations(self, project_id: int) -> int:
        return self.project.overlap

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        self.listings += 1
        return copy.deepcopy(self.project.tasks)

    def submit(self, task_id: int, answer: SimulatedAnswer) -> int:
        task = next(t for t in self.project.tasks if t["id"] == task_id)
        annotation_id = self.project.next_id
        self.project.next_id += 1
        task["annotations"].append(
            {
                "id": annotation_id,
                "completed_by": self.user_id,
                "result": answer.result,
                "lead_time": answer.lead_time,
                "was_cancelled": answer.was_cancelled,
                "created_at": "2026-11-02T08:00:00Z",
                "updated_at": "2026-11-02T08:00:00Z",
            }
        )
        return annotation_id

    def edit(self, annotation_id: int, result: list[dict[str, Any]], lead_time: float) -> None:
        self.project.edits.append((annotation_id, result, lead_time))
        for task in self.project.tasks:
            for a in task["annotations"]:
                if a["id"] == annotation_id:
                    a["result"], a["lead_time"] = result, lead_time


def _payloads(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"data": {"item_id": r["message_id"], "text": r["text"], "batch_id": "b0"}} for r in rows]


@pytest.fixture
def crowd() -> tuple[SimulatedWorkforce, list[dict[str, Any]]]:
    data = text_classification_dataset(40, seed=1)
    profiles = make_profiles(["nairobi"], 6, spammer_share=0.2, seed=2)
    # A heavy skipper makes sure skipped tasks go on to someone else.
    profiles[0] = AnnotatorProfile(id=profiles[0].id, site_id="nairobi", accuracy=0.9, skip_rate=0.5)
    return SimulatedWorkforce(profiles, data.truth, seed=3), _payloads(data.rows)


def _clients(workforce: SimulatedWorkforce, project: FakeProject) -> dict[str, FakeClient]:
    return {p: FakeClient(project, user_id=10 + i) for i, p in enumerate(sorted(workforce.profiles))}


def test_work_gives_each_task_k_answers_from_distinct_annotators(crowd: Any) -> None:
    workforce, payloads = crowd
    project = FakeProject(payloads, overlap=3)
    log = workforce.work(7, _clients(workforce, project))
    assert list(log.columns) == list(LOG_COLUMNS)
    for task in project.tasks:
        users = [a["completed_by"] for a in task["annotations"]]
        assert len(users) == len(set(users)), "an annotator answered a task twice"
        assert sum(not a["was_cancelled"] for a in task["annotations"]) == 3
    assert log["skipped"].sum() > 0
    assert len(log) == sum(len(t["annotations"]) for t in project.tasks)
    assert (log["project_id"] == 7).all() and (log["lead_time"] > 0).all()
    # Work is spread: every annotator answered something.
    assert set(log["profile_id"]) == set(workforce.profiles)


def test_rerun_on_finished_project_does_nothing(crowd: Any) -> None:
    workforce, payloads = crowd
    project = FakeProject(payloads, overlap=2)
    clients = _clients(workforce, project)
    first = workforce.work(1, clients)
    again = workforce.work(1, clients)
    assert len(first) > 0 and len(again) == 0
    assert len(workforce.log_frame()) == len(first)


def test_existing_annotations_count_and_their_authors_are_not_asked_again(crowd: Any) -> None:
    workforce, payloads = crowd
    project = FakeProject(payloads[:5], overlap=2)
    clients = _clients(workforce, project)
    first_user = clients[min(clients)].user_id
    project.tasks[0]["annotations"] = [{"id": 99, "completed_by": first_user, "was_cancelled": False, "result": []}]
    project.tasks[1]["annotations"] = [{"id": 98, "completed_by": 999, "was_cancelled": True, "result": []}]
    log = workforce.work(1, clients)
    assert first_user not in [a["completed_by"] for a in project.tasks[0]["annotations"][1:]]
    assert sum(not a["was_cancelled"] for a in project.tasks[0]["annotations"]) == 2
    assert (log["task_id"] == 100).sum() == 1 + log[log["task_id"] == 100]["skipped"].sum()
    assert sum(not a["was_cancelled"] for a in project.tasks[1]["annotations"]) == 2


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5])
def test_fraction_leaves_tasks_untouched(crowd: Any, fraction: float) -> None:
    workforce, payloads = crowd
    project = FakeProject(payloads, overlap=2)
    workforce.work(1, _clients(workforce, project), fraction=fraction)
    touched = [t for t in project.tasks if t["annotations"]]
    assert len(touched) == int(fraction * len(payloads))


def test_limit_caps_submissions(crowd: Any) -> None:
    workforce, payloads = crowd
    project = FakeProject(payloads, overlap=3)
    log = workforce.work(1, _clients(workforce, project), limit=7)
    assert len(log) == 7


def test_edit_changes_an_answer(crowd: Any) -> None:
    workforce, payloads = crowd
    project = FakeProject(payloads[:6], overlap=2)
    log = workforce.work(1, _clients(workforce, project), edits=2)
    assert log["edited"].sum() == 2 and not log.loc[log["edited"], "skipped"].any()
    assert len(project.edits) == 2
    for annotation_id, result, seconds in project.edits:
        row = log[log["annotation_id"] == annotation_id].iloc[0]
        original = workforce.answer(row["profile_id"], row["item_id"])
        assert row["lead_time"] == seconds > original.lead_time
        assert [r["value"] for r in result] != [r["value"] for r in original.result]
        assert result[0]["value"]["choices"][0] in workforce.truth.classes


def test_answers_do_not_depend_on_the_order_of_work(crowd: Any) -> None:
    workforce, payloads = crowd
    user_ids = {p: 10 + i for i, p in enumerate(sorted(workforce.profiles))}
    forward = workforce.plan(payloads, user_ids, 2)
    backward = workforce.plan(payloads[::-1], user_ids, 2)
    key = lambda steps: sorted((s.item_id, s.profile_id, json.dumps(s.answer.result)) for s in steps)  # noqa: E731
    assert key(forward) == key(backward)


def test_bulk_tasks_embed_the_same_answers_without_touching_the_input(crowd: Any) -> None:
    workforce, payloads = crowd
    before = copy.deepcopy(payloads)
    user_ids = {p: 10 + i for i, p in enumerate(sorted(workforce.profiles))}
    bulk = workforce.bulk_tasks(payloads, user_ids, 3)
    assert payloads == before
    assert len(bulk) == len(payloads)
    project = FakeProject(payloads, overlap=3)
    workforce.work(1, _clients(workforce, project))
    for embedded, worked in zip(bulk, project.tasks, strict=True):
        assert embedded["data"] == worked["data"]
        assert all(a["ground_truth"] is False for a in embedded["annotations"])
        pairs = [(a["completed_by"], a["lead_time"], a["was_cancelled"]) for a in embedded["annotations"]]
        assert pairs == [(a["completed_by"], a["lead_time"], a["was_cancelled"]) for a in worked["annotations"]]
        assert sum(not a["was_cancelled"] for a in embedded["annotations"]) == 3


def test_spammers_score_worse_than_honest_annotators() -> None:
    data = text_classification_dataset(1500, seed=4)
    profiles = make_profiles(["s"], 10, spammer_share=0.3, seed=5)
    workforce = SimulatedWorkforce(profiles, data.truth, seed=6)
    user_ids = {p.id: i for i, p in enumerate(profiles)}
    steps = workforce.plan(_payloads(data.rows), user_ids, 3)
    right: Counter[bool] = Counter()
    total: Counter[bool] = Counter()
    for step in steps:
        if step.answer.was_cancelled:
            continue
        spam = workforce.profiles[step.profile_id].is_spammer
        total[spam] += 1
        right[spam] += step.answer.result[0]["value"]["choices"][0] == data.truth.answers[step.item_id]["label"]
    assert right[True] / total[True] == pytest.approx(1 / 3, abs=0.05)
    assert right[False] / total[False] > 0.8


def test_listing_answers_use_the_task_data_as_shown_values() -> None:
    data = listing_verification_dataset(10, seed=1, stale_share=1.0, closed_share=0.0)
    spammer = AnnotatorProfile(id="s-a00", site_id="s", accuracy=0.0, is_spammer=True, skip_rate=0.0)
    workforce = SimulatedWorkforce([spammer], data.truth, seed=0)
    row = data.rows[0]
    shown = {f"fields_{name}": row[name] or "" for name in ("business_name", "phone", "email", "website")}
    answer = workforce.answer("s-a00", row["listing_id"], shown)
    typed = {r["from_name"]: r["value"] for r in answer.result}
    assert typed["field_phone"] == {"text": [row["phone"]]}


def test_truth_and_profiles_frames(crowd: Any) -> None:
    workforce, payloads = crowd
    truth = workforce.truth_frame()
    assert len(truth) == len(payloads) and set(truth["label"]) <= set(workforce.truth.classes)
    profiles = workforce.profiles_frame()
    assert set(profiles["profile_id"]) == set(workforce.profiles)
    assert {"accuracy", "is_spammer", "site_id", "pace"} <= set(profiles.columns)


def test_workforce_errors(crowd: Any) -> None:
    workforce, payloads = crowd
    with pytest.raises(ValueError, match="unique"):
        SimulatedWorkforce([AnnotatorProfile(id="a", site_id="s")] * 2, workforce.truth)
    with pytest.raises(ValueError, match="at least one profile"):
        SimulatedWorkforce([], workforce.truth)
    with pytest.raises(ValueError, match="no profiles"):
        workforce.plan(payloads, {"nobody": 1}, 2)
    with pytest.raises(ValueError, match="item_id"):
        workforce.plan([{"id": 5, "data": {"text": "x"}}], {min(workforce.profiles): 1}, 2)
    with pytest.raises(ValueError, match="overlap"):
        workforce.plan(payloads, {min(workforce.profiles): 1}, 0)
    with pytest.raises(ValueError, match="fraction"):
        workforce.plan(payloads, {min(workforce.profiles): 1}, 1, fraction=1.5)
    with pytest.raises(KeyError, match="not in the workforce"):
        workforce.answer(min(workforce.profiles), "msg-99999")
    with pytest.raises(ValueError, match="at least one annotator"):
        workforce.work(1, {})


@pytest.mark.parametrize("task_type", list(TaskType))
def test_kazi_reads_a_perfect_annotator_s_answers_as_the_truth(task_type: TaskType) -> None:
    """The simulation's results parse with annotate's normaliser into the truth they were made from."""
    data = sample_dataset(task_type, 6, seed=3)
    perfect = AnnotatorProfile(id="s-a00", site_id="s", skip_rate=0.0).perfect()
    workforce = SimulatedWorkforce([perfect], data.truth, seed=1)
    item_col = data.columns.item_id
    assert item_col is not None
    payloads = []
    for row in data.rows:
        payload = {"item_id": row[item_col], "batch_id": "b0"}
        payload.update({f"fields_{f.name}": row[f.name] or "" for f in data.truth.fields})
        payloads.append({"data": payload})
    project = FakeProject(payloads, overlap=1)
    workforce.work(1, {"s-a00": FakeClient(project, user_id=5)})
    rows = export_to_rows(
        project.tasks, task_type=task_type, site_id="s", project_id=1, key=SecretStr("k"), classes=data.truth.classes
    ).to_pylist()
    assert len(rows) == 6 and not any(r["skipped"] for r in rows)
    for r in rows:
        answer, truth = json.loads(r["answer"]), data.truth.answers[r["item_id"]]
        if task_type != TaskType.LISTING_VERIFICATION:
            assert answer == truth
            continue
        assert answer["listing_valid"] == truth["listing_valid"]
        assert set(answer["fields"]) == {k for k, v in truth["fields"].items() if v is not None}
        assert answer["fields"]["business_name"] == truth["fields"]["business_name"]
        assert answer["fields"]["phone"].replace(" ", "") == truth["fields"]["phone"]
