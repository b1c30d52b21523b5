"""The split flow against the real local S3 and two real Label Studio instances.

Each test has its own work order id (so its own workspace folder and Label Studio project keys), writes
canonical items, media and a gold file straight to S3 (no ingest run), and deletes what it made afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from label_studio_sdk import LabelStudio
from PIL import Image

from flows.core.labelstudio import LabelStudioClient
from flows.core.models import IngestResult, PartnerRegistry, WorkOrder
from flows.core.s3 import ObjectStore, parse_uri
from flows.core.schemas import ASSIGNMENTS, ITEMS, TASK_KEY
from flows.core.settings import Settings, local_label_studio_token
from flows.core.workspace import read_json, read_model, read_table, workspace, write_model, write_table
from flows.split.flow import BATCHES, GOLD, SplitPlanChanged, gold_table, plan_differences, split_flow
from flows.split.materialise import delete_projects, projects_with_prefix
from flows.split.media import Presigner
from flows.split.tasks import item_refs

pytestmark = pytest.mark.labelstudio

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@dataclass
class World:
    """One test's work order, its data in S3 and the two sites' Label Studio clients."""

    settings: Settings
    store: ObjectStore
    work_order: WorkOrder
    registry_uri: str
    ingest: IngestResult
    media: dict[str, bytes]  # item id -> image bytes
    gold_answers: dict[str, str]  # gold item id (prefixed) -> answer
    clients: dict[str, LabelStudioClient]  # site id -> client

    @property
    def prefix(self) -> str:
        return f"{self.work_order.id}--"

    def uri(self, *parts: str) -> str:
        return workspace(self.settings, self.work_order).uri(*parts)


def site(site_id: str, index: int, **impact: Any) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": f"Site {site_id}",
        "country": "KE",
        "timezone": "UTC",
        "shift_start_hour": 8,
        "label_studio": {"url": f"http://127.0.0.1:{28301 + index}", "token_secret": f"ls_token_{'ab'[index]}"},
        # A batch is one shift of one annotator: 10 tasks/h x 2 h = 20 tasks.
        "capacity": {"annotators": 3, "hours_per_day": 2, "items_per_hour": {"image_classification": 10}},
        "task_types": ["image_classification"],
        "impact": {
            "hourly_wage": 5,
            "living_wage": 4,
            "last_audit": "2026-06-01",
            "audit_status": "passed",
            **impact,
        },
    }


def png(n: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (n % 256, (n * 7) % 256, 99)).save(buffer, format="PNG")
    return buffer.getvalue()


def build_world(settings: Settings, store: ObjectStore, s3_prefix: str, wo_id: str, n_items: int) -> World:
    bucket = settings.workspace_bucket
    base = f"s3://{bucket}/{s3_prefix}"
    # Media keys say nothing about the item (a presigned URL shows its key to the annotator's browser).
    media: dict[str, bytes] = {}
    uris: dict[str, str] = {}
    for n in range(n_items + 8):
        item_id = f"img-{n:04d}" if n < n_items else f"g{n - n_items}"
        data = png(n)
        key = f"{s3_prefix}media/{hashlib.sha256(data).hexdigest()[:20]}.png"
        store.put_bytes(bucket, key, data)
        media[item_id if n < n_items else f"gold:{item_id}"] = data
        uris[item_id] = f"s3://{bucket}/{key}"

    real = [f"img-{n:04d}" for n in range(n_items)]
    items = pa.Table.from_pydict(
        {
            "item_id": real,
            "client_item_id": real,
            "text": [None] * n_items,
            "media_uri": [uris[i] for i in real],
            "fields": [None] * n_items,
            "record": [json.dumps({"id": i, "uri": uris[i]}) for i in real],
            "source_object": [f"{base}input.csv"] * n_items,
            "source_row": list(range(n_items)),
            "shard": [n % 2 for n in range(n_items)],
        },
        schema=ITEMS,
    )
    ws = workspace(settings, wo_id)
    for shard in (0, 1):
        part = items.filter(pc.equal(items["shard"], shard))
        write_table(store, ws.uri("ingest", "v1", "items", f"shard={shard:02d}", "part-0.parquet"), part)
    ingest = IngestResult(
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
    )
    write_model(store, ws.uri("ingest", "result.json"), ingest)

    # Standalone gold: the client's columns plus an answer, ids that would clash with nothing.
    gold_ids = [f"g{n}" for n in range(8)]
    answers = {f"gold:{g}": f"SECRET-ANSWER-{g}" for g in gold_ids}
    gold_csv = "id,uri,answer\n" + "".join(f"{g},{uris[g]},SECRET-ANSWER-{g}\n" for g in gold_ids)
    store.put_bytes(bucket, f"{s3_prefix}gold.csv", gold_csv.encode())

    registry = PartnerRegistry.model_validate(
        {"sites": [site("site-a", 0), site("site-b", 1), site("site-c", 0, hourly_wage=3)]}
    )
    registry_uri = f"{base}registry.yaml"
    store.put_bytes(bucket, f"{s3_prefix}registry.yaml", registry.to_yaml().encode())

    work_order = WorkOrder.model_validate(
        {
            "id": wo_id,
            "client_id": "acme",
            "source": {"uri": f"{base}input.csv", "format": "csv"},
            "task_type": "image_classification",
            "columns": {"item_id": "id", "media_uri": "uri"},
            "label_schema": {"classes": ["cat", "dog"]},
            "instructions": "Pick the animal in the photo.",
            "overlap": 2,
            "gold": {"uri": f"{base}gold.csv", "rate": 0.1},
            "deadline": NOW + timedelta(days=5),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": f"s3://client-out/{wo_id}"},
            "seed": 7,
        }
    )
    clients = {
        "site-a": LabelStudioClient("http://127.0.0.1:28301", local_label_studio_token(settings, 0), site_id="site-a"),
        "site-b": LabelStudioClient("http://127.0.0.1:28302", local_label_studio_token(settings, 1), site_id="site-b"),
    }
    return World(settings, store, work_order, registry_uri, ingest, media, answers, clients)


@pytest.fixture
def site_tokens(stack_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KAZI_SECRETS__LS_TOKEN_A", local_label_studio_token(stack_settings, 0).get_secret_value())
    monkeypatch.setenv("KAZI_SECRETS__LS_TOKEN_B", local_label_studio_token(stack_settings, 1).get_secret_value())


@pytest.fixture
def world_factory(stack_settings, store, s3_prefix, site_tokens, unique) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    made: list[World] = []

    def make(n_items: int = 50) -> World:
        world = build_world(stack_settings, store, s3_prefix, f"split-{unique}-{len(made)}", n_items)
        made.append(world)
        return world

    yield make
    for world in made:
        for client in world.clients.values():
            delete_projects(client, world.prefix)
        store.delete_prefix(stack_settings.workspace_bucket, workspace(stack_settings, world.work_order).root + "/")


def exported(world: World) -> dict[str, list[dict[str, Any]]]:
    """Project key -> its tasks, from every instance."""
    out: dict[str, list[dict[str, Any]]] = {}
    for client in world.clients.values():
        for project in projects_with_prefix(client, world.prefix):
            assert project.key is not None
            out[project.key] = client.export(project.id, all_tasks=True)
    return out


def planned_keys(world: World, key: str) -> set[str]:
    """Every task key the manifest plans, computed from the manifest alone."""
    assignments = read_table(world.store, world.uri("split", "round=0", "assignments.parquet"), ASSIGNMENTS)
    rows = assignments.group_by(["project_key", "item_id"]).aggregate([]).to_pylist()
    refs = item_refs([r["item_id"] for r in rows], key).to_pylist()
    return {f"{r['project_key']}/{ref}" for r, ref in zip(rows, refs, strict=True)}


def test_split_flow_creates_each_sites_projects_with_their_tasks(world_factory) -> None:  # type: ignore[no-untyped-def]
    world = world_factory()
    result = split_flow(world.work_order, registry_uri=world.registry_uri, now=NOW)

    # 50 items x overlap 2 kept at one site (2 answers per task), plus round(0.1 x 50 / 0.9) = 6 gold tasks.
    assignments = read_table(world.store, result.plan_uri, ASSIGNMENTS)
    batches = read_table(world.store, world.uri("split", "round=0", "batches.parquet"), BATCHES)
    assert (result.tasks, result.gold_tasks, assignments.num_rows) == (56, 6, 112)
    assert result.sites_used == ["site-a", "site-b"]
    assert list(result.sites_passed_over) == ["site-c"]
    assert "below the local living wage" in result.sites_passed_over["site-c"]
    assert read_model(world.store, world.uri("split", "result.json"), type(result)) == result

    projects = exported(world)
    assert set(projects) == set(batches["project_key"].to_pylist()) == set(result.projects)
    assert not any("--site-c--" in k for k in projects), "an ineligible site gets nothing"
    key = world.settings.pseudonym_key.get_secret_value()
    refs = dict(
        zip(item_refs(assignments["item_id"], key).to_pylist(), assignments["item_id"].to_pylist(), strict=True)
    )
    gold_seen = 0
    for batch in batches.to_pylist():
        tasks = projects[batch["project_key"]]
        # Tasks per project = the project's manifest rows / its answers per task.
        rows = assignments.filter(pc.equal(assignments["project_key"], batch["project_key"]))
        assert len(tasks) == batch["n_tasks"] == rows.num_rows // batch["max_annotations"]
        for task in tasks:
            data = task["data"]
            assert set(data) == {"item", "batch_id", TASK_KEY, "image"}
            assert data[TASK_KEY] == f"{batch['project_key']}/{data['item']}"
            gold_seen += refs[data["item"]].startswith("gold:")
    assert gold_seen == result.gold_tasks == int(pc.sum(batches["n_gold"]).as_py())
    assert {t["data"][TASK_KEY] for ts in projects.values() for t in ts} == planned_keys(world, key)

    dumped = json.dumps(projects)
    assert "SECRET-ANSWER" not in dumped and "gold" not in dumped and "img-" not in dumped

    sdk = LabelStudio(base_url="http://127.0.0.1:28301", api_key=world.clients["site-a"]._token.get_secret_value())
    a_project = next(p for p in projects_with_prefix(world.clients["site-a"], world.prefix))
    remote = sdk.projects.get(id=a_project.id)
    assert remote.maximum_annotations == 2 and "Pick the animal" in (remote.expert_instruction or "")

    recorded = read_json(world.store, world.uri("split", "projects.json"))
    assert {k: v["project_id"] for k, v in recorded.items()} == result.projects
    assert all(v["url"].endswith(f"/projects/{v['project_id']}") for v in recorded.values())

    gold = read_table(world.store, world.uri("split", "gold.parquet"), GOLD)
    assert dict(zip(gold["item_id"].to_pylist(), gold["answer"].to_pylist(), strict=True)) == world.gold_answers


def test_presigned_media_urls_load_the_image_and_expire(world_factory) -> None:  # type: ignore[no-untyped-def]
    world = world_factory(n_items=20)
    result = split_flow(world.work_order, registry_uri=world.registry_uri, now=NOW)
    assignments = read_table(world.store, result.plan_uri, ASSIGNMENTS)
    key = world.settings.pseudonym_key.get_secret_value()
    refs = dict(
        zip(item_refs(assignments["item_id"], key).to_pylist(), assignments["item_id"].to_pylist(), strict=True)
    )
    tasks = [t for ts in exported(world).values() for t in ts]
    assert tasks
    for task in tasks:
        url = task["data"]["image"]
        assert f"X-Amz-Expires={world.settings.presign_expiry_seconds}" in url
        # What the annotator's browser does: a plain GET, no credentials.
        response = httpx.get(url)
        assert response.status_code == 200
        assert response.content == world.media[refs[task["data"]["item"]]]
    # The expiry is signed: changing it breaks the signature.
    url = tasks[0]["data"]["image"]
    changed = url.replace(f"X-Amz-Expires={world.settings.presign_expiry_seconds}", "X-Amz-Expires=3600")
    assert changed != url and httpx.get(changed).status_code == 403
    # And it is enforced: a URL signed two minutes ago for one minute is refused.
    media_uri = assignments_media(world, refs[tasks[0]["data"]["item"]])
    stale = Presigner(world.store, 60, clock=lambda: time.time() - 120)(media_uri)
    assert httpx.get(stale).status_code == 403
    assert httpx.get(Presigner(world.store, 60)(media_uri)).status_code == 200


def assignments_media(world: World, item_id: str) -> str:
    """The s3:// URI of an item's media, from the canonical items or the gold file."""
    if item_id.startswith("gold:"):
        gold = read_table(world.store, world.uri("split", "gold.parquet"), GOLD)
        return str(gold.filter(pc.equal(gold["item_id"], item_id))["media_uri"][0])
    items = read_table(world.store, world.ingest.items_uri, ITEMS)
    return str(items.filter(pc.equal(items["item_id"], item_id))["media_uri"][0])


def test_rerun_creates_nothing_new_and_reuses_the_stored_plan(world_factory) -> None:  # type: ignore[no-untyped-def]
    world = world_factory(n_items=30)
    first = split_flow(world.work_order, registry_uri=world.registry_uri, now=NOW)
    manifest = world.store.head(*parse_uri(world.uri("split", "round=0", "assignments.parquet")))
    before = {k: sorted(t["id"] for t in ts) for k, ts in exported(world).items()}

    # No `now` and no ingest given: the ingest result is read from the workspace and the plan is made again at
    # the first run's planning time, so it matches the stored manifest.
    again = split_flow(world.work_order, registry_uri=world.registry_uri)
    assert again == first
    after = {k: sorted(t["id"] for t in ts) for k, ts in exported(world).items()}
    assert after == before
    for client in world.clients.values():
        keys = [p.key for p in projects_with_prefix(client, world.prefix)]
        assert len(keys) == len(set(keys))
    unchanged = world.store.head(*parse_uri(world.uri("split", "round=0", "assignments.parquet")))
    assert unchanged is not None and manifest is not None and unchanged.etag == manifest.etag


def test_a_changed_registry_is_refused_unless_replan(world_factory) -> None:  # type: ignore[no-untyped-def]
    world = world_factory(n_items=30)
    split_flow(world.work_order, registry_uri=world.registry_uri, now=NOW)
    before = exported(world)
    registry = PartnerRegistry.model_validate(
        {"sites": [site("site-a", 0), site("site-b", 1, suspended=True), site("site-c", 0, hourly_wage=3)]}
    )
    bucket, key = parse_uri(world.registry_uri)
    world.store.put_bytes(bucket, key, registry.to_yaml().encode())

    with pytest.raises(SplitPlanChanged, match=r"site site-b: .* stored, 0 now.*registry .* changed.*replan=True"):
        split_flow(world.work_order, registry_uri=world.registry_uri)
    assert {k: len(v) for k, v in exported(world).items()} == {k: len(v) for k, v in before.items()}

    replanned = split_flow(world.work_order, registry_uri=world.registry_uri, now=NOW, replan=True)
    assert replanned.sites_used == ["site-a"]
    assert "suspended" in replanned.sites_passed_over["site-b"]
    assignments = read_table(world.store, replanned.plan_uri, ASSIGNMENTS)
    assert set(assignments["site_id"].to_pylist()) == {"site-a"}
    projects = exported(world)
    for project_key, project_id in replanned.projects.items():
        assert "--site-a--" in project_key and project_id > 0
        planned = {
            k
            for k in planned_keys(world, world.settings.pseudonym_key.get_secret_value())
            if k.startswith(project_key + "/")
        }
        assert planned <= {t["data"][TASK_KEY] for t in projects[project_key]}


_KILLED_RUN = """
import sys
import time
from datetime import datetime

import flows.split.materialise as materialise
from flows.core.labelstudio import LabelStudioClient
from flows.core.models import WorkOrder
from flows.split.flow import split_flow

# Many small import calls, each followed by a pause, so the kill surely lands between two of them.
materialise.IMPORT_CHUNK = 3
_import = LabelStudioClient.import_tasks_json


def slow_import(self, project_id, tasks):
    imported = _import(self, project_id, tasks)
    time.sleep(0.2)
    return imported


LabelStudioClient.import_tasks_json = slow_import
work_order = WorkOrder.model_validate_json(sys.argv[1])
split_flow(work_order, registry_uri=sys.argv[2], now=datetime.fromisoformat(sys.argv[3]))
"""


def test_a_run_killed_mid_import_is_completed_by_a_rerun_with_every_task_once(world_factory) -> None:  # type: ignore[no-untyped-def]
    world = world_factory(n_items=150)
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, world.work_order.model_dump_json(), world.registry_uri, NOW.isoformat()],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 180
        started = 0
        while time.monotonic() < deadline and process.poll() is None:
            counts = [p.task_count for c in world.clients.values() for p in projects_with_prefix(c, world.prefix)]
            if any(counts):
                started = sum(counts)
                process.kill()
                break
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=30)
    assert started, f"the flow ended before any task was imported: {stderr.decode()[-2000:]}"
    total = 167  # 150 items + round(0.1 x 150 / 0.9) = 17 gold tasks
    at_kill = {k: len(v) for k, v in exported(world).items()}
    assert sum(at_kill.values()) < total, "the kill came too late to interrupt the import"
    assert not world.store.head(*parse_uri(world.uri("split", "result.json")))

    result = split_flow(world.work_order, registry_uri=world.registry_uri)
    assert result.tasks == total
    projects = exported(world)
    keys = [t["data"][TASK_KEY] for ts in projects.values() for t in ts]
    assert len(keys) == len(set(keys)) == total, "every task exactly once"
    assert set(keys) == planned_keys(world, world.settings.pseudonym_key.get_secret_value())
    assert set(projects) == set(result.projects)


# --- The flow's pure helpers (gold mapping, plan comparison); no service needed, kept beside their flow. ---


def gold_work_order(task_type: str = "image_classification", **columns: Any) -> WorkOrder:
    schema = {"fields": [{"name": "phone"}, {"name": "open_now", "kind": "boolean"}]}
    return WorkOrder.model_validate(
        {
            "id": "acme-0042",
            "client_id": "acme",
            "source": {"uri": "s3://client-in/x.csv", "format": "csv"},
            "task_type": task_type,
            "columns": columns or {"item_id": "id", "media_uri": "uri", "text": "body"},
            "label_schema": schema if task_type == "listing_verification" else {"classes": ["a", "b"]},
            "deadline": NOW + timedelta(days=3),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": "s3://client-out/x"},
        }
    )


def test_standalone_gold_is_mapped_like_client_rows_with_prefixed_ids() -> None:
    raw = pa.table({"id": [" 7", "8"], "uri": [" s3://b/k1.png ", "s3://b/k2.png"], "answer": ["a", "b"]})
    gold, standalone = gold_table(raw, gold_work_order(), "s3://b/gold.csv")
    assert standalone
    assert gold.to_pylist() == [
        {
            "item_id": "gold:7",
            "client_item_id": "7",
            "text": None,
            "media_uri": "s3://b/k1.png",
            "fields": None,
            "answer": "a",
        },
        {
            "item_id": "gold:8",
            "client_item_id": "8",
            "text": None,
            "media_uri": "s3://b/k2.png",
            "fields": None,
            "answer": "b",
        },
    ]


def test_listing_gold_builds_fields_and_json_answers() -> None:
    work_order = gold_work_order("listing_verification", fields={"phone": "tel", "open_now": "open"})
    raw = pa.table({"tel": ["+254 1", None], "open": ["yes", "no"], "answer": [{"ok": True}, {"ok": False}]})
    gold, standalone = gold_table(raw, work_order, "s3://b/gold.jsonl")
    assert standalone
    assert gold["item_id"].to_pylist() == ["gold:r000000", "gold:r000001"]  # no id column: rows are numbered
    assert [json.loads(f) for f in gold["fields"].to_pylist()] == [
        {"phone": "+254 1", "open_now": "yes"},
        {"phone": None, "open_now": "no"},
    ]
    assert [json.loads(a) for a in gold["answer"].to_pylist()] == [{"ok": True}, {"ok": False}]


def test_gold_without_content_names_items_of_the_input() -> None:
    raw = pa.table({"item_id": ["img-1", "img-2"], "answer": ['{"label": "a"}', '{"label": "b"}']})
    gold, standalone = gold_table(raw, gold_work_order(), "s3://b/gold.jsonl")
    assert not standalone
    assert gold["item_id"].to_pylist() == ["img-1", "img-2"]
    assert gold["media_uri"].null_count == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (pa.table({"id": ["1"], "uri": ["s3://b/k"]}), "has no 'answer' column"),
        (pa.table({"answer": ["a"]}), "neither content columns nor an id column"),
        (pa.table({"id": ["1", " "], "answer": ["a", "b"]}), r"rows \[2\] have no id"),
        (pa.table({"id": ["1", "1 "], "answer": ["a", "b"]}), "repeats ids: 1"),
    ],
)
def test_gold_files_that_cannot_be_used_are_refused(raw: pa.Table, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gold_table(raw, gold_work_order(), "s3://b/gold.csv")


@pytest.mark.parametrize(
    ("raw", "ids", "standalone"),
    [
        (pa.table({"id": ["1"], "answer": ["a"], "caption": ["x"]}), ["1"], False),
        (pa.table({"uri": ["s3://b/k"], "answer": ["a"], "note": ["t"]}), ["gold:r000000"], True),
    ],
)
def test_gold_columns_beyond_the_mapping_are_ignored(raw: pa.Table, ids: list[str], standalone: bool) -> None:
    gold, is_standalone = gold_table(raw, gold_work_order(), "s3://b/gold.csv")
    assert gold["item_id"].to_pylist() == ids and is_standalone == standalone


def test_gold_with_some_but_not_all_content_columns_is_refused() -> None:
    work_order = gold_work_order("listing_verification", fields={"phone": "tel", "open_now": "open"})
    with pytest.raises(ValueError, match=r"has content column\(s\) \['tel'\] but lacks \['open'\]"):
        gold_table(pa.table({"tel": ["1"], "answer": ["a"]}), work_order, "s3://b/gold.csv")


def manifest(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "item_id": [r[0] for r in rows],
            "batch_id": ["r0-b0000"] * len(rows),
            "site_id": [r[1] for r in rows],
            "project_key": [r[2] for r in rows],
            "slot": pa.array([0] * len(rows), pa.int16()),
            "is_gold": [False] * len(rows),
            "round": pa.array([0] * len(rows), pa.int16()),
        },
        schema=ASSIGNMENTS,
    )


def batch_rows(due: datetime) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "batch_id": "r0-b0000",
                "site_id": "a",
                "project_key": "p0",
                "n_tasks": 2,
                "n_gold": 0,
                "max_annotations": 1,
                "n_answers": 2,
                "due_at": due,
            }
        ],
        schema=BATCHES,
    )


@pytest.mark.parametrize(
    ("new", "new_due", "expected"),
    [
        ([("i1", "a", "p0"), ("i2", "a", "p0")], NOW, []),
        (
            [("i1", "a", "p0"), ("i2", "b", "p1")],
            NOW,
            ["site a: 2 answer slots stored, 1 now", "site b: 0 answer slots stored, 1 now"],
        ),
        ([("i1", "a", "p0"), ("i3", "a", "p0")], NOW, ["items: 1 new, 1 no longer planned"]),
        (
            [("i2", "a", "p0"), ("i1", "a", "p0")],
            NOW,
            ["same sites, counts and items, but items are assigned to other batches or slots"],
        ),
        (
            [("i1", "a", "p0"), ("i2", "a", "p0")],
            NOW + timedelta(hours=1),
            ["1 batches are due at other times (e.g. p0)"],
        ),
    ],
)
def test_plan_differences_say_what_changed(
    new: list[tuple[str, str, str]], new_due: datetime, expected: list[str]
) -> None:
    stored = manifest([("i1", "a", "p0"), ("i2", "a", "p0")])
    assert plan_differences(stored, manifest(new), batch_rows(NOW), batch_rows(new_due)) == expected
