"""The simulated workforce against the real Label Studio of the test stack.

The simulated users (``simtest-*``) are made on the first run and reused by every later run, as a partner
site's annotators would be; the projects are unique per test and deleted afterwards.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from flows.core.labelstudio import LabelStudioClient, ProjectSpec
from flows.core.models import PartnerRegistry, TaskType, WorkOrder
from flows.core.settings import Settings, local_label_studio_token
from flows.split.label_configs import data_keys, render_label_config
from simulation.answers import AnnotatorProfile
from simulation.datasets import SampleDataset, sample_dataset, text_classification_dataset
from simulation.labelstudio_users import Account, AnnotatorSession, annotator_email, ensure_annotators, sessions
from simulation.registry import onboard, registry_profiles, site_sessions
from simulation.workforce import SimulatedWorkforce

pytestmark = pytest.mark.labelstudio

PROFILES = [
    AnnotatorProfile(id="simtest-a00", site_id="simtest", accuracy=0.95, skip_rate=0.0),
    AnnotatorProfile(id="simtest-a01", site_id="simtest", accuracy=0.0, is_spammer=True, skip_rate=0.0),
    AnnotatorProfile(id="simtest-a02", site_id="simtest", accuracy=0.85, skip_rate=0.5),
]


def _instance(settings: Settings, index: int) -> tuple[str, SecretStr]:
    return f"http://127.0.0.1:{settings.ports.label_studio(index)}", local_label_studio_token(settings, index)


@pytest.fixture(scope="module")
def accounts(stack_settings: Settings) -> dict[str, Account]:
    url, token = _instance(stack_settings, 0)
    return ensure_annotators(url, token, PROFILES)


def test_two_workforces_onboarding_the_same_new_annotators_at_once_get_the_same_users(
    stack_settings: Settings, unique: str
) -> None:
    # Two work orders on one site start their workforces together: both find the users missing, both sign
    # them up; the one that loses the race logs in instead of failing.
    from concurrent.futures import ThreadPoolExecutor

    url, token = _instance(stack_settings, 1)
    profiles = [
        AnnotatorProfile(id=f"race-{unique}-a{i}", site_id="race", accuracy=0.9, skip_rate=0.0) for i in range(4)
    ]
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: ensure_annotators(url, token, profiles), range(2))
    assert {p: a.user_id for p, a in first.items()} == {p: a.user_id for p, a in second.items()}
    assert len({a.user_id for a in first.values()}) == len(profiles)


def _work_order(data: SampleDataset, overlap: int) -> WorkOrder:
    return WorkOrder(
        id="simtest-0001",
        client_id="simtest",
        source={"uri": "s3://kazi-demo-client/simtest/in.jsonl", "format": "jsonl"},
        task_type=data.task_type,
        columns=data.columns,
        label_schema=data.label_schema,
        deadline=datetime(2027, 1, 1),
        price_per_item=0.1,
        pay_per_task=0.02,
        delivery={"uri": "s3://kazi-demo-client/simtest/out"},
        overlap=overlap,
    )


def _payloads(data: SampleDataset, work_order: WorkOrder) -> list[dict[str, Any]]:
    """Task payloads shaped like split's: the config's data keys, item and batch ids (media URLs are dummies)."""
    item_col = data.columns.item_id
    assert item_col is not None
    out = []
    for row in data.rows:
        item_id = row[item_col]
        payload: dict[str, Any] = {"item_id": item_id, "batch_id": "b0", "kazi_task_key": f"simtest/{item_id}"}
        for key in data_keys(work_order):
            if key.startswith("fields_"):
                payload[key] = row[key.removeprefix("fields_")] or ""
            elif key == "text":
                payload[key] = row["text"]
            else:
                payload[key] = f"https://media.invalid/{item_id}"
        out.append({"data": payload})
    return out


def _project(
    ls_client: LabelStudioClient, ls_cleanup: list[int], unique: str, data: SampleDataset, overlap: int
) -> tuple[int, list[dict[str, Any]]]:
    work_order = _work_order(data, overlap)
    spec = ProjectSpec(
        key=f"simtest-{unique}",
        title=f"simtest {unique}",
        label_config=render_label_config(work_order),
        maximum_annotations=overlap,
    )
    project_id, _ = ls_client.ensure_project(spec)
    ls_cleanup.append(project_id)
    return project_id, _payloads(data, work_order)


@pytest.mark.parametrize("index", [0, 1])
def test_users_are_created_once_and_reused(stack_settings: Settings, index: int) -> None:
    url, admin_token = _instance(stack_settings, index)
    first = ensure_annotators(url, admin_token, PROFILES)
    again = ensure_annotators(url, admin_token, PROFILES)
    assert set(first) == {p.id for p in PROFILES}
    for profile_id, account in first.items():
        assert again[profile_id].user_id == account.user_id
        assert again[profile_id].token.get_secret_value() == account.token.get_secret_value()
    tokens = {a.token.get_secret_value() for a in first.values()}
    assert len(tokens) == len(PROFILES) and admin_token.get_secret_value() not in tokens
    for account in first.values():
        assert AnnotatorSession(url, account).whoami() == account.user_id
    users = httpx.get(f"{url}/api/users/", headers={"Authorization": f"Token {admin_token.get_secret_value()}"}).json()
    emails = [u["email"] for u in users]
    for profile in PROFILES:
        assert emails.count(annotator_email(profile.id)) == 1, "a rerun made a duplicate user"


def test_a_user_token_is_refused_by_the_other_instance(stack_settings: Settings, accounts: dict[str, Account]) -> None:
    other_url, _ = _instance(stack_settings, 1)
    response = httpx.get(
        f"{other_url}/api/current-user/whoami",
        headers={"Authorization": f"Token {accounts['simtest-a00'].token.get_secret_value()}"},
    )
    assert response.status_code == 401


def test_simulated_annotations_appear_in_the_export(
    stack_settings: Settings,
    ls_client: LabelStudioClient,
    ls_cleanup: list[int],
    unique: str,
    accounts: dict[str, Account],
) -> None:
    data = text_classification_dataset(8, seed=11)
    project_id, payloads = _project(ls_client, ls_cleanup, unique, data, overlap=2)
    ls_client.import_tasks(project_id, payloads)
    url, _ = _instance(stack_settings, 0)
    workforce = SimulatedWorkforce(PROFILES, data.truth, seed=12)
    log = workforce.work(project_id, sessions(url, accounts), edits=1)
    assert log["skipped"].any() and log["edited"].sum() == 1

    exported = ls_client.export(project_id, all_tasks=True)
    assert len(exported) == 8
    by_id = {a["id"]: (t, a) for t in exported for a in t["annotations"]}
    assert set(by_id) == set(log["annotation_id"])
    user_of = {p: a.user_id for p, a in accounts.items()}
    for row in log.itertuples():
        task, annotation = by_id[row.annotation_id]
        assert annotation["completed_by"] == user_of[row.profile_id]
        assert task["data"]["item_id"] == row.item_id
        assert annotation["was_cancelled"] == row.skipped
        assert annotation["lead_time"] == pytest.approx(row.lead_time)
        if not row.edited:
            assert annotation["result"] == workforce.answer(row.profile_id, row.item_id).result
        else:
            original = workforce.answer(row.profile_id, row.item_id).result
            assert annotation["result"][0]["value"] != original[0]["value"]
    # maximum_annotations: exactly k answers per task, from distinct users.
    for task in exported:
        users = [a["completed_by"] for a in task["annotations"]]
        assert len(users) == len(set(users))
        assert sum(not a["was_cancelled"] for a in task["annotations"]) == 2
    spam = log[log["profile_id"] == "simtest-a01"]
    assert len(spam) > 0
    for annotation_id in spam["annotation_id"]:
        _, annotation = by_id[annotation_id]
        assert annotation["result"][0]["value"]["choices"][0] in data.truth.classes
    # A rerun finds nothing left to do.
    assert len(workforce.work(project_id, sessions(url, accounts))) == 0


def test_stalled_work_leaves_tasks_unanswered(
    stack_settings: Settings,
    ls_client: LabelStudioClient,
    ls_cleanup: list[int],
    unique: str,
    accounts: dict[str, Account],
) -> None:
    data = text_classification_dataset(6, seed=13)
    project_id, payloads = _project(ls_client, ls_cleanup, unique, data, overlap=1)
    ls_client.import_tasks(project_id, payloads)
    url, _ = _instance(stack_settings, 0)
    workforce = SimulatedWorkforce(PROFILES[:2], data.truth, seed=14)
    workforce.work(project_id, sessions(url, {p: accounts[p] for p in ("simtest-a00", "simtest-a01")}), fraction=0.5)
    exported = ls_client.export(project_id, all_tasks=True)
    assert sum(bool(t["annotations"]) for t in exported) == 3


def test_bulk_import_shows_the_right_users_and_lead_times(
    ls_client: LabelStudioClient, ls_cleanup: list[int], unique: str, accounts: dict[str, Account]
) -> None:
    data = text_classification_dataset(10, seed=15)
    project_id, payloads = _project(ls_client, ls_cleanup, unique, data, overlap=2)
    workforce = SimulatedWorkforce(PROFILES, data.truth, seed=16)
    user_ids = {p: a.user_id for p, a in accounts.items()}
    ls_client.import_tasks(project_id, workforce.bulk_tasks(payloads, user_ids, 2))
    log = workforce.log_frame()
    exported = ls_client.export(project_id, all_tasks=True)
    seen = sorted(
        (t["data"]["item_id"], a["completed_by"], a["lead_time"], a["was_cancelled"], a["ground_truth"])
        for t in exported
        for a in t["annotations"]
    )
    expected = sorted(
        (r.item_id, user_ids[r.profile_id], pytest.approx(r.lead_time), r.skipped, False) for r in log.itertuples()
    )
    assert seen == expected
    for task in exported:
        assert sum(not a["was_cancelled"] for a in task["annotations"]) == 2


@pytest.mark.parametrize("task_type", list(TaskType))
def test_every_task_type_answer_is_kept_by_label_studio(
    stack_settings: Settings,
    ls_client: LabelStudioClient,
    ls_cleanup: list[int],
    unique: str,
    accounts: dict[str, Account],
    task_type: TaskType,
) -> None:
    data = sample_dataset(task_type, 3, seed=17)
    project_id, payloads = _project(ls_client, ls_cleanup, f"{unique}-{task_type.value[:8]}", data, overlap=1)
    ls_client.import_tasks(project_id, payloads)
    url, _ = _instance(stack_settings, 0)
    honest = PROFILES[0]
    workforce = SimulatedWorkforce([honest], data.truth, seed=18)
    log = workforce.work(project_id, sessions(url, {honest.id: accounts[honest.id]}))
    assert len(log) == 3
    exported = {t["data"]["item_id"]: t for t in ls_client.export(project_id, all_tasks=True)}
    for item_id, task in exported.items():
        (annotation,) = task["annotations"]
        assert annotation["completed_by"] == accounts[honest.id].user_id
        assert annotation["result"] == workforce.answer(honest.id, item_id, task["data"]).result


def test_a_registry_s_workforce_joins_each_site_s_label_studio(stack_settings: Settings) -> None:
    sites = []
    for index, name in enumerate(("simtest-east", "simtest-west")):
        sites.append(
            {
                "id": name,
                "name": name,
                "country": "KE",
                "timezone": "Africa/Nairobi",
                "label_studio": {"url": _instance(stack_settings, index)[0], "token_secret": f"ls_token_{index}"},
                "capacity": {"annotators": 2, "hours_per_day": 8},
                "task_types": ["text_classification"],
                "impact": {"hourly_wage": 3, "living_wage": 2, "last_audit": "2026-06-01", "audit_status": "passed"},
                "gold_accuracy": 0.9,
            }
        )
    registry = PartnerRegistry.model_validate({"sites": sites})
    settings = stack_settings.model_copy(
        update={"secrets": {f"ls_token_{i}": local_label_studio_token(stack_settings, i) for i in (0, 1)}}
    )
    profiles = registry_profiles(registry, seed=3)
    accounts = onboard(registry, settings, profiles)
    assert {site: sorted(members) for site, members in accounts.items()} == {
        "simtest-east": ["simtest-east-a00", "simtest-east-a01"],
        "simtest-west": ["simtest-west-a00", "simtest-west-a01"],
    }
    for site_id, members in site_sessions(registry, accounts).items():
        for profile_id, session in members.items():
            assert session.url == registry.site(site_id).label_studio.url
            assert session.whoami() == accounts[site_id][profile_id].user_id
