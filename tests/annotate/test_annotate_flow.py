"""The annotate flow against the real local S3, two real Label Studio instances and the Prefect server.

Each test has its own work order: canonical items written straight to S3, then the real split flow makes
one batch (one project) per site; simulated annotators (Label Studio users ``anntest-*``, made once and reused)
answer through the API with their own tokens. Projects, workspace objects and the work order's concurrency
limit are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from prefect import get_client
from prefect.exceptions import ObjectNotFound as PrefectObjectNotFound

import flows.annotate.flow as annotate_module
import flows.annotate.pull as pull_module
from flows.annotate.flow import STATUS, SiteSyncError, annotate_flow
from flows.annotate.pull import item_ref_map
from flows.annotate.sla import apply_moves
from flows.annotate.sync import VERSION_KEY, latest_versions
from flows.core.labelstudio import LabelStudioClient
from flows.core.models import AnnotateResult, IngestResult, PartnerRegistry, SplitResult, WorkOrder
from flows.core.s3 import ObjectStore, parse_uri
from flows.core.schemas import ANNOTATIONS, ASSIGNMENTS, ITEMS, MOVES, TASK_KEY
from flows.core.settings import Settings, load_settings, local_label_studio_token
from flows.core.workspace import read_json, read_model, read_table, workspace, write_model, write_table
from flows.split.flow import split_flow
from flows.split.materialise import delete_projects, projects_with_prefix
from flows.split.tasks import item_refs
from simulation.datasets import SampleDataset, text_classification_dataset
from simulation.labelstudio_users import Account, AnnotatorSession
from simulation.registry import onboard, registry_profiles, site_sessions
from simulation.workforce import SimulatedWorkforce

pytestmark = pytest.mark.labelstudio

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
SITES = ("anntest-a", "anntest-b")


def site(site_id: str, index: int, url: str | None = None) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": f"Site {site_id}",
        "country": "KE",
        "timezone": "UTC",
        "shift_start_hour": 8,
        "label_studio": {"url": url or f"http://127.0.0.1:{28301 + index}", "token_secret": f"ls_token_{'ab'[index]}"},
        # A batch is one annotator's shift, 4 tasks/h x 2 h = 8 tasks: 16 items make one batch per site.
        "capacity": {"annotators": 3, "hours_per_day": 2, "items_per_hour": {"text_classification": 4}},
        "task_types": ["text_classification"],
        "impact": {"hourly_wage": 5, "living_wage": 4, "last_audit": "2026-06-01", "audit_status": "passed"},
        "gold_accuracy": 0.9,
    }


def registry(down: str | None = None) -> PartnerRegistry:
    """The two test sites; ``down`` points that site's Label Studio at a port nothing listens on."""
    return PartnerRegistry.model_validate(
        {"sites": [site(s, i, "http://127.0.0.1:9" if s == down else None) for i, s in enumerate(SITES)]}
    )


@dataclass
class World:
    """One test's work order after split, its annotators and the sites' Label Studio clients."""

    settings: Settings
    store: ObjectStore
    work_order: WorkOrder
    registry_uri: str
    split: SplitResult
    data: SampleDataset
    workforce: SimulatedWorkforce
    sessions: dict[str, dict[str, AnnotatorSession]]
    clients: dict[str, LabelStudioClient]

    def uri(self, *parts: str) -> str:
        return workspace(self.settings, self.work_order).uri(*parts)

    def project_of(self, site_id: str) -> int:
        (project_id,) = [v for k, v in self.split.projects.items() if f"--{site_id}--" in k]
        return project_id

    def work(self, site_id: str, project_id: int | None = None, **kwargs: Any) -> Any:
        """Annotators of ``site_id`` answer a project (the site's split project by default) through the API."""
        return self.workforce.work(project_id or self.project_of(site_id), self.sessions[site_id], **kwargs)

    def sync(self, **kwargs: Any) -> AnnotateResult:
        kwargs.setdefault("registry_uri", self.registry_uri)
        kwargs.setdefault("now", NOW)
        return annotate_flow(self.work_order, **kwargs)

    def log(self) -> pa.Table:
        return read_table(self.store, self.uri("annotate", "log") + "/", ANNOTATIONS)

    def parts(self) -> set[str]:
        bucket, key = parse_uri(self.uri("annotate", "log") + "/")
        return {o.key for o in self.store.list_objects(bucket, key)}

    def exists(self, uri: str) -> bool:
        return self.store.head(*parse_uri(uri)) is not None


def build_world(
    settings: Settings,
    store: ObjectStore,
    s3_prefix: str,
    wo_id: str,
    n_items: int,
    accounts: dict[str, dict[str, Account]],
) -> World:
    bucket = settings.workspace_bucket
    base = f"s3://{bucket}/{s3_prefix}"
    data = text_classification_dataset(n_items, seed=31)
    ids = [r["message_id"] for r in data.rows]
    items = pa.Table.from_pydict(
        {
            "item_id": ids,
            "client_item_id": ids,
            "text": [r["text"] for r in data.rows],
            "media_uri": [None] * n_items,
            "fields": [None] * n_items,
            "record": [json.dumps(r) for r in data.rows],
            "source_object": [f"{base}input.jsonl"] * n_items,
            "source_row": list(range(n_items)),
            "shard": [0] * n_items,
        },
        schema=ITEMS,
    )
    ws = workspace(settings, wo_id)
    write_table(store, ws.uri("ingest", "v1", "items", "shard=00", "part-0.parquet"), items)
    write_model(
        store,
        ws.uri("ingest", "result.json"),
        IngestResult(
            work_order_id=wo_id,
            ingest_version="v1",
            items_uri=ws.uri("ingest", "v1", "items") + "/",
            quarantine_uri=ws.uri("ingest", "v1", "quarantine.parquet"),
            duplicates_uri=ws.uri("ingest", "v1", "duplicates.parquet"),
            manifest_uri=ws.uri("ingest", "v1", "manifest.json"),
            rows_read=n_items,
            accepted=n_items,
            quarantined=0,
            duplicates=0,
            files_quarantined=0,
        ),
    )
    registry_uri = f"{base}registry.yaml"
    store.put_bytes(bucket, f"{s3_prefix}registry.yaml", registry().to_yaml().encode())
    work_order = WorkOrder.model_validate(
        {
            "id": wo_id,
            "client_id": "acme",
            "source": {"uri": f"{base}input.jsonl", "format": "jsonl"},
            "task_type": "text_classification",
            "columns": {"item_id": "message_id", "text": "text"},
            "label_schema": {"classes": list(data.truth.classes)},
            "overlap": 2,
            "deadline": NOW + timedelta(days=5),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": f"s3://client-out/{wo_id}"},
            "seed": 5,
        }
    )
    split = split_flow(work_order, registry_uri=registry_uri, now=NOW)
    assert len(split.projects) == 2, split.projects

    reg = registry()
    refs = item_refs(ids, settings.pseudonym_key).to_pylist()
    workforce = SimulatedWorkforce(PROFILES, data.truth, seed=9, refs=dict(zip(refs, ids, strict=True)))
    clients = {s.id: LabelStudioClient.for_site(s, settings) for s in reg.sites}
    return World(
        settings, store, work_order, registry_uri, split, data, workforce, site_sessions(reg, accounts), clients
    )


PROFILES = registry_profiles(registry(), max_per_site=3, spammer_share=0.0, seed=2)


@pytest.fixture(scope="module")
def accounts(stack_settings: Settings) -> dict[str, dict[str, Account]]:
    """The simulated annotators' Label Studio users (made on the first run, then logged in once per module)."""
    tokens = {f"ls_token_{'ab'[i]}": local_label_studio_token(stack_settings, i) for i in (0, 1)}
    return onboard(registry(), stack_settings.model_copy(update={"secrets": tokens}), PROFILES)


@pytest.fixture
def site_tokens(stack_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("KAZI_SECRETS__LS_TOKEN_A", local_label_studio_token(stack_settings, 0).get_secret_value())
    monkeypatch.setenv("KAZI_SECRETS__LS_TOKEN_B", local_label_studio_token(stack_settings, 1).get_secret_value())
    return load_settings()


@pytest.fixture
def world_factory(  # type: ignore[no-untyped-def]
    site_tokens: Settings, accounts: dict[str, dict[str, Account]], store, s3_prefix, unique
) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(n_items: int = 16) -> World:
        world = build_world(site_tokens, store, s3_prefix, f"ann-{unique}-{len(made)}", n_items, accounts)
        made.append(world)
        return world

    yield make
    for world in made:
        for client in world.clients.values():
            delete_projects(client, f"{world.work_order.id}--")
        store.delete_prefix(site_tokens.workspace_bucket, workspace(site_tokens, world.work_order).root + "/")
        with get_client(sync_client=True) as prefect, contextlib.suppress(PrefectObjectNotFound):
            prefect.delete_global_concurrency_limit_by_name(f"kazi-annotate-{world.work_order.id}")


def submitted(world: World) -> pa.Table:
    """Every answer the workforce submitted (skips included), keyed like the log."""
    frame = world.workforce.log_frame()
    return pa.table(
        {
            "site_id": pa.array(frame["site_id"].tolist(), pa.string()),
            "annotation_id": pa.array(frame["annotation_id"].astype("int64").tolist(), pa.int64()),
            "item_id": pa.array(frame["item_id"].tolist(), pa.string()),
            "profile_id": pa.array(frame["profile_id"].tolist(), pa.string()),
            "skipped": pa.array(frame["skipped"].tolist(), pa.bool_()),
        }
    )


def keys(table: pa.Table, columns: tuple[str, ...] = ("site_id", "annotation_id")) -> list[tuple[Any, ...]]:
    return sorted(zip(*(table[c].to_pylist() for c in columns), strict=True))


# --- (a) + (b) ---------------------------------------------------------------------------------------


def test_annotations_from_two_sites_arrive_once_pseudonymised_and_a_second_sync_writes_nothing(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory()
    for site_id in SITES:
        world.work(site_id, limit=7)
    answers = submitted(world)
    assert set(answers["site_id"].to_pylist()) == set(SITES)
    assert len(set(answers["profile_id"].to_pylist())) >= 4, "several annotators at each site"

    result = world.sync()
    log = world.log()
    assert log.num_rows == answers.num_rows == 14 == result.annotations == result.new_annotations
    assert keys(log) == keys(answers), "every annotation exactly once, under its site"
    assert keys(log, ("site_id", "annotation_id", "item_id")) == keys(answers, ("site_id", "annotation_id", "item_id"))
    assert keys(log, ("annotation_id", "skipped")) == keys(answers, ("annotation_id", "skipped"))
    # The ref -> item mapping annotate computes is split's.
    ids = list(world.data.truth.answers)
    assert item_ref_map(ids, world.settings.pseudonym_key) == dict(
        zip(item_refs(ids, world.settings.pseudonym_key).to_pylist(), ids, strict=True)
    )
    # Answers as submitted.
    by_annotation = {(r["site_id"], r["annotation_id"]): r for r in log.to_pylist()}
    for row in world.workforce.log_frame().itertuples():
        logged = by_annotation[(row.site_id, row.annotation_id)]
        if not row.skipped:
            choice = world.workforce.answer(row.profile_id, row.item_id).result[0]["value"]["choices"][0]
            assert logged["label"] == choice and json.loads(logged["answer"]) == {"label": choice}

    # Pseudonymous: one stable w-<hex> id per person, no e-mail, no Label Studio user id anywhere.
    annotators = set(log["annotator"].to_pylist())
    assert all(a.startswith("w-") and len(a) == 14 for a in annotators)
    assert len(annotators) == len(set(answers["profile_id"].to_pylist()))
    users = {s.user_id for members in world.sessions.values() for s in members.values()}
    text = json.dumps(log.to_pylist(), default=str)
    assert "@" not in text and "sim.kazi.local" not in text and "anntest-a-a0" not in text
    assert not annotators & {str(u) for u in users}

    assert read_model(world.store, world.uri("annotate", "result.json"), AnnotateResult) == result
    assert result.done is False and result.moved_batches == []
    status = read_table(world.store, result.status_uri)
    assert status.schema.equals(STATUS)
    assert sorted(status["site_id"].to_pylist()) == sorted(SITES)
    assert sum(status["answers_done"].to_pylist()) == int(pc.sum(pc.invert(log["skipped"])).as_py())
    assert not any(status["overdue"].to_pylist())

    # (b) Nothing new: no part is written, the counts stay.
    parts = world.parts()
    assert len(parts) == 1
    again = world.sync()
    assert world.parts() == parts
    assert (again.new_annotations, again.annotations) == (0, 14)


# --- (c) -------------------------------------------------------------------------------------------------


def test_an_edited_annotation_is_logged_as_one_new_version(world_factory: Callable[..., World]) -> None:
    world = world_factory()
    world.work("anntest-a", limit=4)
    first = world.sync()
    assert first.new_annotations == 4

    row = next(r for r in world.workforce.log_frame().itertuples() if not r.skipped)
    previous = world.workforce.answer(row.profile_id, row.item_id).result
    edited = world.workforce.edited_result(row.profile_id, row.item_id, previous)
    world.sessions["anntest-a"][row.profile_id].edit(int(row.annotation_id), edited, 9.5)

    second = world.sync()
    assert (second.new_annotations, second.annotations) == (1, 4)
    log = world.log()
    assert log.num_rows == 5
    versions = log.filter(pc.equal(log["annotation_id"], int(row.annotation_id)))
    assert versions.num_rows == 2
    assert len(set(versions["updated_at"].to_pylist())) == 2
    latest = latest_versions(log)
    assert latest.num_rows == 4
    current = latest.filter(pc.equal(latest["annotation_id"], int(row.annotation_id))).to_pylist()[0]
    assert current["label"] == edited[0]["value"]["choices"][0] != previous[0]["value"]["choices"][0]
    assert current["lead_time_s"] == pytest.approx(9.5)
    # A third sync finds that version logged already.
    assert world.sync().new_annotations == 0


# --- (d) -------------------------------------------------------------------------------------------------


def test_a_sync_killed_before_or_after_its_part_write_leaves_every_annotation_once(
    world_factory: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = world_factory()

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("killed")

    # Killed after the part was written, before result.json.
    world.work("anntest-a", limit=3)
    with monkeypatch.context() as patch:
        patch.setattr(annotate_module, "write_model", boom)
        with pytest.raises(RuntimeError, match="killed"):
            world.sync()
    assert len(world.parts()) == 1
    assert not world.exists(world.uri("annotate", "result.json"))

    # Killed before the part write: nothing of that pass is in the log.
    world.work("anntest-b", limit=3)
    with monkeypatch.context() as patch:
        patch.setattr(pull_module, "write_table", boom)
        with pytest.raises(RuntimeError, match="killed"):
            world.sync()
    assert len(world.parts()) == 1

    result = world.sync()
    log = world.log()
    answers = submitted(world)
    assert log.num_rows == answers.num_rows == 6
    assert keys(log) == keys(answers)
    assert len(set(keys(log, VERSION_KEY))) == log.num_rows, "no version twice"
    assert (result.new_annotations, result.annotations) == (3, 6)
    assert len(world.parts()) == 2
    assert read_model(world.store, world.uri("annotate", "result.json"), AnnotateResult) == result


# --- (e) -------------------------------------------------------------------------------------------------


def project_tasks(client: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    return client.export(project_id, all_tasks=True)


def test_a_stalled_batch_moves_to_the_other_site_without_doubling_an_item(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory()
    a, b = SITES
    old_project = world.project_of(a)
    world.work(a, limit=5)  # about two tasks done (2 answers each), one half done, the rest untouched
    world.work(b)  # the other site finishes its batch in time
    key = world.settings.pseudonym_key
    before = project_tasks(world.clients[a], old_project)
    done_refs = {t["data"]["item"] for t in before if sum(not x["was_cancelled"] for x in t["annotations"]) >= 2}
    open_refs = {t["data"]["item"] for t in before} - done_refs
    assert done_refs and open_refs

    late = NOW + timedelta(days=1)  # the batches were due at the end of the first shift
    result = world.sync(now=late)
    (batch_id,) = result.moved_batches
    assert f"--{a}--{batch_id}" in next(k for k in world.split.projects if f"--{a}--" in k)

    # The moves log, written first, says what moved where and why.
    moves = read_table(world.store, world.uri("annotate", "moves") + "/", MOVES)
    assert set(moves["from_site"].to_pylist()) == {a} and set(moves["to_site"].to_pylist()) == {b}
    new_key = f"{world.work_order.id}--{b}--{batch_id}-m1"
    assert set(moves["to_project_key"].to_pylist()) == {new_key}
    assert all(f"moved to {b}" in r and "open answers" in r for r in moves["reason"].to_pylist())

    # Unfinished tasks are created at the other site and removed at the original one; finished work stays.
    recorded = read_json(world.store, world.uri("annotate", "projects.json"))
    assert recorded[new_key]["site_id"] == b
    new_project = int(recorded[new_key]["project_id"])
    moved = project_tasks(world.clients[b], new_project)
    refs_moved = item_ref_map(moves["item_id"].to_pylist(), key)
    assert {t["data"]["item"] for t in moved} == open_refs == set(refs_moved)
    assert all(t["data"][TASK_KEY] == f"{new_key}/{t['data']['item']}" for t in moved)
    kept = project_tasks(world.clients[a], old_project)
    assert {t["data"]["item"] for t in kept} == done_refs
    log = world.log()
    assert keys(log) == keys(submitted(world)), "answers of deleted tasks stay in the log"

    # No item doubled: every item keeps its two slots, and each is in exactly one live task.
    assignments = read_table(world.store, world.split.plan_uri, ASSIGNMENTS)
    current = apply_moves(assignments, moves)
    slots = current.group_by("item_id").aggregate([("slot", "count")])
    assert set(slots["slot_count"].to_pylist()) == {2}
    live = [t["data"]["item"] for t in kept + moved]
    assert len(live) == len(set(live)) == len(before)

    # Moving again creates nothing new: the batch is now due at its new site.
    n_projects = {s: len(projects_with_prefix(c, f"{world.work_order.id}--")) for s, c in world.clients.items()}
    again = world.sync(now=late)
    assert again.moved_batches == []
    assert read_table(world.store, world.uri("annotate", "moves") + "/", MOVES).num_rows == moves.num_rows
    # A crash after the moves part but before the record: the rerun finishes the move, duplicating nothing.
    ws = workspace(world.settings, world.work_order)
    world.store.delete_prefix(world.settings.workspace_bucket, ws.key("annotate", "projects.json"))
    world.sync(now=late)
    assert {s: len(projects_with_prefix(c, f"{world.work_order.id}--")) for s, c in world.clients.items()} == n_projects
    assert sorted(t["id"] for t in project_tasks(world.clients[b], new_project)) == sorted(t["id"] for t in moved)
    assert len(project_tasks(world.clients[a], old_project)) == len(kept)
    assert read_json(world.store, world.uri("annotate", "projects.json"))[new_key]["project_id"] == new_project

    # The other site's annotators answer the moved tasks; they are logged under that site and batch.
    world.work(b, new_project, limit=3)
    final = world.sync(now=late)
    assert final.new_annotations == 3
    at_b = world.log().filter(pc.equal(world.log()["batch_id"], batch_id))
    at_b = at_b.filter(pc.equal(at_b["site_id"], b))
    assert at_b.num_rows == 3
    assert set(item_ref_map(at_b["item_id"].to_pylist(), key)) <= open_refs


# --- (f) -------------------------------------------------------------------------------------------------


def test_a_site_that_is_down_fails_the_sync_by_name_and_the_other_site_still_syncs(
    world_factory: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = world_factory()
    world.work("anntest-a", limit=3)
    world.work("anntest-b", limit=3)
    bucket, key = parse_uri(world.registry_uri)
    world.store.put_bytes(bucket, key + ".down", registry(down="anntest-b").to_yaml().encode())
    # Retry at once: the backoff is Prefect's, the test only needs the attempts.
    fast = annotate_module.pull_site_annotations.with_options(retry_delay_seconds=0)
    monkeypatch.setattr(annotate_module, "pull_site_annotations", fast)

    with pytest.raises(SiteSyncError, match=r"site anntest-b \(Label Studio at http://127\.0\.0\.1:9\).*not reachable"):
        world.sync(registry_uri=world.registry_uri + ".down")
    log = world.log()
    assert log.num_rows == 3 and set(log["site_id"].to_pylist()) == {"anntest-a"}
    assert not world.exists(world.uri("annotate", "result.json"))
    assert world.exists(world.uri("annotate", "status.parquet"))

    result = world.sync()
    assert (result.new_annotations, result.annotations) == (3, 6)
    assert keys(world.log()) == keys(submitted(world))
