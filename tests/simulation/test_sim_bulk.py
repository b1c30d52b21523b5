"""The workforce's bulk answering path: predictions each annotator converts into their own annotations.

The pure parts run on an in-memory project that behaves like Label Studio's prediction import and its
``predictions_to_annotations`` action; one test runs the whole path against the test stack's Label Studio
and reads the result back with Kazi's own annotation pull.
"""

from __future__ import annotations

import copy
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from flows.core.labelstudio import LabelStudioError
from simulation.answers import AnnotatorProfile, SimulatedAnswer, make_profiles
from simulation.datasets import SampleDataset, text_classification_dataset
from simulation.workforce import (
    SIM_MODEL_VERSION,
    SimulatedWorkforce,
    Step,
    bulk_predictions,
    model_version,
)

REVIEW_VERSION = "kazi-qa-round-0"


class FakeBulkProject:
    """An in-memory Label Studio project with predictions and the conversion action."""

    def __init__(self, payloads: list[dict[str, Any]], overlap: int) -> None:
        self.overlap = overlap
        self.tasks = [
            {"id": 100 + i, **copy.deepcopy(p), "annotations": [], "predictions": []} for i, p in enumerate(payloads)
        ]
        self.next_id = 1
        self.imports = 0

    def task(self, task_id: int) -> dict[str, Any]:
        return next(t for t in self.tasks if t["id"] == task_id)


class FakeBulkClient:
    def __init__(self, project: FakeBulkProject, user_id: int) -> None:
        self.project = project
        self.user_id = user_id
        self.conversions: list[str] = []

    def maximum_annotations(self, project_id: int) -> int:
        return self.project.overlap

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        return copy.deepcopy(self.project.tasks)

    def submit(self, task_id: int, answer: SimulatedAnswer) -> int:
        raise AssertionError("the bulk path never submits one by one")

    def edit(self, annotation_id: int, result: list[dict[str, Any]], lead_time: float) -> None:
        raise AssertionError("the bulk path never edits")

    def import_predictions(self, project_id: int, predictions: Any) -> int:
        self.project.imports += 1
        for p in predictions:
            self.project.task(p["task"])["predictions"].append({**copy.deepcopy(p), "converted": False})
        return len(predictions)

    def convert_predictions(self, project_id: int, version: str) -> int:
        self.conversions.append(version)
        made = 0
        for task in self.project.tasks:
            for p in task["predictions"]:
                if p["model_version"] == version and not p["converted"]:
                    p["converted"] = True
                    task["annotations"].append(
                        {
                            "id": self.project.next_id,
                            "completed_by": self.user_id,
                            "result": p["result"],
                            "lead_time": None,
                            "was_cancelled": False,
                        }
                    )
                    self.project.next_id += 1
                    made += 1
        return made


def _payloads(data: SampleDataset) -> list[dict[str, Any]]:
    return [{"data": {"item_id": r["message_id"], "text": r["text"], "batch_id": "b0"}} for r in data.rows]


def _crowd(n_items: int = 30, n_annotators: int = 6) -> tuple[SimulatedWorkforce, list[dict[str, Any]]]:
    data = text_classification_dataset(n_items, seed=1)
    profiles = make_profiles(["nairobi"], n_annotators, spammer_share=0.2, seed=2)
    # A heavy skipper: the plan gives their skipped tasks to someone else, and bulk leaves the skips out.
    profiles[0] = AnnotatorProfile(id=profiles[0].id, site_id="nairobi", accuracy=0.9, skip_rate=0.5)
    return SimulatedWorkforce(profiles, data.truth, seed=3), _payloads(data)


def _clients(workforce: SimulatedWorkforce, project: FakeBulkProject) -> dict[str, FakeBulkClient]:
    return {p: FakeBulkClient(project, user_id=10 + i) for i, p in enumerate(sorted(workforce.profiles))}


def _answer(label: str) -> SimulatedAnswer:
    return SimulatedAnswer(result=[{"from_name": "label", "value": {"choices": [label]}}], lead_time=4.0)


# --- bulk_predictions ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_bulk_predictions_groups_answers_by_annotator_and_leaves_skips_out() -> None:
    skip = SimulatedAnswer(result=[], lead_time=1.0, was_cancelled=True)
    steps = [
        Step(0, "i0", "a", _answer("cat")),
        Step(0, "i0", "b", skip),
        Step(1, "i1", "a", _answer("dog")),
        Step(1, "i1", "c", _answer("cat")),
    ]
    out = bulk_predictions(steps, [501, 502], "r1")
    assert list(out) == ["a", "c"]
    assert out["a"] == [
        {"task": 501, "result": _answer("cat").result, "model_version": "sim-a-r1"},
        {"task": 502, "result": _answer("dog").result, "model_version": "sim-a-r1"},
    ]
    assert out["c"] == [{"task": 502, "result": _answer("cat").result, "model_version": "sim-c-r1"}]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("profile_id", "run", "expected"), [("nairobi-a00", "x1", "sim-nairobi-a00-x1"), ("b", "", "sim-b-")]
)
def test_model_version_names_annotator_and_pass(profile_id: str, run: str, expected: str) -> None:
    assert model_version(profile_id, run) == expected
    assert expected.startswith(SIM_MODEL_VERSION) and not REVIEW_VERSION.startswith(SIM_MODEL_VERSION)


@pytest.mark.unit
def test_bulk_predictions_of_no_steps_is_empty() -> None:
    assert bulk_predictions([], [], "r") == {}


# --- work_bulk ------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_work_bulk_gives_every_task_its_answers_from_distinct_annotators() -> None:
    workforce, payloads = _crowd()
    project = FakeBulkProject(payloads, overlap=3)
    clients = _clients(workforce, project)
    run = workforce.work_bulk(7, clients)

    assert (run.tasks, run.open_tasks) == (30, 0)
    assert run.created == len(run.log) == 90
    assert project.imports == 1
    for task in project.tasks:
        users = [a["completed_by"] for a in task["annotations"]]
        assert len(users) == 3 and len(set(users)) == 3
        assert not any(a["was_cancelled"] for a in task["annotations"])
    # Each annotator converted their own version once; the log says who answered what, with no lead time.
    for profile_id, client in clients.items():
        answered = int((run.log["profile_id"] == profile_id).sum())
        assert len(client.conversions) == (1 if answered else 0)
    assert run.log["lead_time"].isna().all() and not run.log["skipped"].any()
    assert set(run.log["project_id"]) == {7}
    by_task = Counter(zip(run.log["task_id"], run.log["user_id"], strict=True))
    held = Counter((t["id"], a["completed_by"]) for t in project.tasks for a in t["annotations"])
    assert by_task == held


@pytest.mark.unit
def test_work_bulk_gives_the_answers_the_realistic_path_plans() -> None:
    workforce, payloads = _crowd()
    project = FakeBulkProject(payloads, overlap=3)
    clients = _clients(workforce, project)
    user_ids = {p: c.user_id for p, c in clients.items()}
    planned = workforce.plan(project.tasks, user_ids, 3)
    run = workforce.work_bulk(7, clients)

    expected = sorted(
        (project.tasks[s.task_index]["id"], user_ids[s.profile_id], repr(s.answer.result))
        for s in planned
        if not s.answer.was_cancelled
    )
    made = sorted((t["id"], a["completed_by"], repr(a["result"])) for t in project.tasks for a in t["annotations"])
    assert made == expected
    skipped = sum(s.answer.was_cancelled for s in planned)
    assert skipped > 0 and run.skips_left_out == skipped


@pytest.mark.unit
def test_work_bulk_leaves_kazis_review_predictions_alone() -> None:
    workforce, payloads = _crowd(10)
    project = FakeBulkProject(payloads, overlap=2)
    for task in project.tasks:
        task["predictions"].append(
            {"task": task["id"], "result": _answer("neutral").result, "model_version": REVIEW_VERSION}
        )
    run = workforce.work_bulk(8, _clients(workforce, project))
    assert run.created == 20
    for task in project.tasks:
        review = [p for p in task["predictions"] if p["model_version"] == REVIEW_VERSION]
        assert len(review) == 1 and "converted" not in review[0]


@pytest.mark.unit
def test_a_second_pass_finds_nothing_to_do() -> None:
    workforce, payloads = _crowd(12)
    project = FakeBulkProject(payloads, overlap=3)
    clients = _clients(workforce, project)
    workforce.work_bulk(7, clients)
    again = workforce.work_bulk(7, clients)
    assert (len(again.log), again.created, again.open_tasks, again.skips_left_out) == (0, 0, 0, 0)
    assert project.imports == 2
    assert all(len(t["annotations"]) == 3 for t in project.tasks)


@pytest.mark.unit
def test_a_review_project_goes_to_annotators_who_have_not_seen_the_item() -> None:
    data = text_classification_dataset(12, seed=1)
    # Nobody skips: three of six have seen each item before the review, so a skip could leave one short.
    profiles = [AnnotatorProfile(id=f"p{i}", site_id="s", accuracy=0.9, skip_rate=0.0) for i in range(6)]
    workforce, payloads = SimulatedWorkforce(profiles, data.truth, seed=3), _payloads(data)
    first = FakeBulkProject(payloads, overlap=3)
    workforce.work_bulk(1, _clients(workforce, first))
    review = FakeBulkProject(payloads, overlap=2)
    run = workforce.work_bulk(2, _clients(workforce, review))
    assert run.open_tasks == 0
    earlier = workforce.log_frame().query("project_id == 1")
    seen = set(zip(earlier["item_id"], earlier["profile_id"], strict=True))
    assert not seen & set(zip(run.log["item_id"], run.log["profile_id"], strict=True))


class _SubmitClient(FakeBulkClient):
    """The realistic path's client: one answer at a time."""

    def submit(self, task_id: int, answer: SimulatedAnswer) -> int:
        self.project.task(task_id)["annotations"].append(
            {"id": self.project.next_id, "completed_by": self.user_id, "was_cancelled": answer.was_cancelled}
        )
        self.project.next_id += 1
        return self.project.next_id - 1


@pytest.mark.unit
def test_both_paths_share_what_each_annotator_has_seen() -> None:
    data = text_classification_dataset(12, seed=1)
    profiles = [AnnotatorProfile(id=f"p{i}", site_id="s", accuracy=0.9, skip_rate=0.0) for i in range(6)]
    workforce, payloads = SimulatedWorkforce(profiles, data.truth, seed=3), _payloads(data)
    # Answers embedded at import belong to no project of the API: they do not count as seen.
    workforce.bulk_tasks(payloads, {p.id: i for i, p in enumerate(profiles)}, 3)
    first = FakeBulkProject(payloads, overlap=3)
    workforce.work(1, {p: _SubmitClient(first, user_id=10 + i) for i, p in enumerate(sorted(workforce.profiles))})
    review = FakeBulkProject(payloads, overlap=3)
    run = workforce.work_bulk(2, _clients(workforce, review))
    assert run.open_tasks == 0
    log = workforce.log_frame()
    earlier = set(zip(log.query("project_id == 1")["item_id"], log.query("project_id == 1")["profile_id"], strict=True))
    assert len(earlier) == 36
    assert not earlier & set(zip(run.log["item_id"], run.log["profile_id"], strict=True))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("n_annotators", "fraction", "expected_open"),
    [(2, 1.0, 10), (6, 0.5, 5), (6, 0.0, 10)],
)
def test_open_tasks_counts_what_is_still_short(n_annotators: int, fraction: float, expected_open: int) -> None:
    data = text_classification_dataset(10, seed=4)
    profiles = [AnnotatorProfile(id=f"p{i}", site_id="s", accuracy=0.9, skip_rate=0.0) for i in range(n_annotators)]
    workforce = SimulatedWorkforce(profiles, data.truth, seed=5)
    project = FakeBulkProject(_payloads(data), overlap=3)
    run = workforce.work_bulk(3, _clients(workforce, project), fraction=fraction)
    assert run.open_tasks == expected_open


@pytest.mark.unit
def test_work_bulk_needs_clients() -> None:
    workforce, _ = _crowd(4)
    with pytest.raises(ValueError, match="at least one annotator"):
        workforce.work_bulk(1, {})


class _ShortImport(FakeBulkClient):
    def import_predictions(self, project_id: int, predictions: Any) -> int:
        return super().import_predictions(project_id, predictions) - 1


class _DoubleConvert(FakeBulkClient):
    def convert_predictions(self, project_id: int, version: str) -> int:
        return 2 * super().convert_predictions(project_id, version) + 1


@pytest.mark.unit
@pytest.mark.parametrize(
    ("client_type", "message"),
    [(_ShortImport, "created .* of .* predictions"), (_DoubleConvert, "annotations made from")],
)
def test_work_bulk_refuses_counts_label_studio_did_not_match(client_type: type[FakeBulkClient], message: str) -> None:
    workforce, payloads = _crowd(6)
    project = FakeBulkProject(payloads, overlap=2)
    clients = {p: client_type(project, user_id=10 + i) for i, p in enumerate(sorted(workforce.profiles))}
    with pytest.raises(LabelStudioError, match=message):
        workforce.work_bulk(1, clients)


# --- Against the real Label Studio, read back by Kazi's pull ---------------------------------------------


BULK_PROFILES = [
    AnnotatorProfile(id=f"simbulk-a{i:02d}", site_id="simbulk", accuracy=acc, skip_rate=skip)
    for i, (acc, skip) in enumerate([(0.95, 0.0), (0.8, 0.3), (0.9, 0.0), (0.7, 0.0)])
]


@pytest.mark.labelstudio
def test_bulk_answers_are_read_by_kazis_pull_as_each_annotators_own(
    stack_settings: Any, ls_client: Any, ls_cleanup: list[int], unique: str
) -> None:
    import httpx

    from flows.annotate.pseudonym import pseudonymise
    from flows.annotate.pull import ProjectRef, item_ref_map, pull_project
    from flows.core.labelstudio import ProjectSpec
    from flows.core.models import WorkOrder
    from flows.core.schemas import TASK_KEY
    from flows.core.settings import local_label_studio_token
    from flows.split.label_configs import render_label_config
    from simulation.labelstudio_users import ensure_annotators, sessions

    data = text_classification_dataset(24, seed=21)
    work_order = WorkOrder(
        id=f"simbulk-{unique}",
        client_id="simtest",
        source={"uri": "s3://kazi-demo-client/simbulk/in.jsonl", "format": "jsonl"},
        task_type=data.task_type,
        columns=data.columns,
        label_schema=data.label_schema,
        deadline=datetime(2027, 1, 1),
        price_per_item=0.1,
        pay_per_task=0.02,
        delivery={"uri": "s3://kazi-demo-client/simbulk/out"},
        overlap=3,
    )
    key = stack_settings.pseudonym_key
    refs = item_ref_map([r["message_id"] for r in data.rows], key)
    ref_of = {item: ref for ref, item in refs.items()}
    project_key = f"{work_order.id}--simbulk--r0-b0000"
    project_id, _ = ls_client.ensure_project(
        ProjectSpec(
            key=project_key,
            title=f"simbulk {unique}",
            label_config=render_label_config(work_order),
            maximum_annotations=3,
        )
    )
    ls_cleanup.append(project_id)
    # Shaped like split's tasks: an opaque item ref, never the item id.
    ls_client.import_tasks(
        project_id,
        [
            {
                "data": {
                    "text": r["text"],
                    "item": ref_of[r["message_id"]],
                    "batch_id": "r0-b0000",
                    TASK_KEY: f"{project_key}/{ref_of[r['message_id']]}",
                }
            }
            for r in data.rows
        ],
    )
    url = f"http://127.0.0.1:{stack_settings.ports.label_studio(0)}"
    admin_token = local_label_studio_token(stack_settings, 0)
    # Kazi's own predictions, as a review round shows them: never to be turned into anyone's answers.
    listed = ls_client.export(project_id, all_tasks=True)
    response = httpx.post(
        f"{url}/api/projects/{project_id}/import/predictions",
        json=[{"task": t["id"], "result": _review_result(data), "model_version": REVIEW_VERSION} for t in listed[:5]],
        headers={"Authorization": f"Token {admin_token.get_secret_value()}"},
        timeout=60,
    )
    assert response.status_code == 201, response.text

    accounts = ensure_annotators(url, admin_token, BULK_PROFILES)
    workforce = SimulatedWorkforce(BULK_PROFILES, data.truth, seed=22, refs=refs)
    run = workforce.work_bulk(project_id, sessions(url, accounts))
    assert (run.tasks, run.open_tasks, run.created, len(run.log)) == (24, 0, 72, 72)
    assert run.skips_left_out > 0

    pulled = pull_project(
        ls_client,
        ProjectRef(project_key, project_id, "simbulk", url),
        refs,
        task_type=work_order.task_type,
        key=key,
        classes=work_order.label_schema.classes,
    )
    rows = pulled.rows.to_pandas()
    assert len(rows) == 72 and pulled.unmapped == 0
    assert rows["lead_time_s"].isna().all() and not rows["skipped"].any()
    # Each answer is logged under the pseudonym of the annotator who converted it, with the answer planned.
    name = {a.user_id: pseudonymise("simbulk", a.user_id, key) for a in accounts.values()}
    expected = sorted(
        (
            int(r.task_id),
            name[int(r.user_id)],
            workforce.answer(r.profile_id, r.item_id).result[0]["value"]["choices"][0],
        )
        for r in run.log.itertuples()
    )
    logged = sorted(zip(rows["task_id"], rows["annotator"], rows["label"], strict=True))
    assert logged == expected
    assert set(rows["item_id"]) == {r["message_id"] for r in data.rows}
    # A second pass adds nothing, and Kazi's predictions stayed predictions.
    assert len(workforce.work_bulk(project_id, sessions(url, accounts)).log) == 0
    held = ls_client.export(project_id, all_tasks=True)
    assert sum(len(t["annotations"]) for t in held) == 72


def _review_result(data: SampleDataset) -> list[dict[str, Any]]:
    label = data.truth.classes[0]
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
