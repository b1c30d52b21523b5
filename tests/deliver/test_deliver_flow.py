"""The deliver flow against the real local S3 and Prefect server.

Each test has its own work order id (so its own workspace folder), its own delivery location
(``s3://<workspace bucket>/<test prefix>deliveries``) and registry, and writes what the earlier stages
would have left (canonical items, QA's answers and documents, the annotation log, gold) by hand.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
import yaml
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.core.models import DeliveryResult, IngestResult, PartnerRegistry, QAResult, WorkOrder, Workspace
from flows.core.s3 import ObjectStore, parse_uri
from flows.core.schemas import ANNOTATIONS, CONSOLIDATED, ITEMS
from flows.core.settings import Settings
from flows.core.workspace import read_json, read_model, workspace, write_model, write_table
from flows.deliver.flow import deliver_flow, signing_key
from flows.deliver.manifest import verify
from flows.deliver.package import DeliveryBlocked, delivery_root, package_reader
from flows.deliver.worker_record import verify_record

pytestmark = pytest.mark.prefect

FX = {"KES": 0.0077}
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
LABELS = ["cat", "dog", "bird"]
N_ITEMS = 12


@dataclass
class World:
    """One test's work order and what the earlier stages left for it in S3."""

    settings: Settings
    store: ObjectStore
    work_order: WorkOrder
    qa: QAResult
    registry_uri: str
    image_sizes: dict[str, tuple[int, int]]

    @property
    def ws(self) -> Workspace:
        return workspace(self.settings, self.work_order)

    @property
    def bucket(self) -> str:
        return self.settings.workspace_bucket

    def run(self, **kwargs: Any) -> DeliveryResult:
        return deliver_flow(self.work_order, registry_uri=self.registry_uri, fx_to_usd=FX, **kwargs)

    def delivery(self) -> dict[str, bytes]:
        """Every object under the work order's delivery location, by key relative to it."""
        bucket, root = delivery_root(self.work_order)
        return {
            o.key[len(root) + 1 :]: self.store.get_bytes(bucket, o.key)
            for o in self.store.list_objects(bucket, f"{root}/")
        }

    def deliver_outputs(self) -> dict[str, bytes]:
        """Every object the deliver stage wrote in the workspace."""
        prefix = self.ws.key("deliver") + "/"
        return {
            o.key[len(prefix) :]: self.store.get_bytes(self.bucket, o.key)
            for o in self.store.list_objects(self.bucket, prefix)
        }

    def manifest(self, version: str) -> dict[str, Any]:
        bucket, root = delivery_root(self.work_order)
        return json.loads(self.store.get_bytes(bucket, f"{root}/{version}/manifest.json"))

    def registry(self) -> PartnerRegistry:
        return PartnerRegistry.from_yaml(self.store.get_bytes(*parse_uri(self.registry_uri)).decode())

    def write_consolidated(self, answers: dict[str, str]) -> None:
        write_table(self.store, self.qa.results_uri, consolidated(answers))


def site(site_id: str, currency: str, hourly: float, living: float) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": f"Site {site_id}",
        "country": "KE" if currency == "KES" else "US",
        "timezone": "UTC",
        "label_studio": {"url": "http://127.0.0.1:28301", "token_secret": f"ls_token_{site_id.replace('-', '_')}"},
        "capacity": {"annotators": 3, "hours_per_day": 6, "items_per_hour": {"image_classification": 100}},
        "task_types": ["image_classification"],
        "impact": {
            "hourly_wage": hourly,
            "living_wage": living,
            "currency": currency,
            "last_audit": "2026-06-01",
            "audit_status": "passed",
        },
    }


def png(width: int, height: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 80, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def item_ids() -> list[str]:
    return [f"i-{n:02d}" for n in range(N_ITEMS)]


def base_answers() -> dict[str, str]:
    """The consolidated label of each item that has one: i-11 has none (no answer)."""
    return {i: LABELS[n % 3] for n, i in enumerate(item_ids()) if i != "i-11"}


def consolidated(answers: dict[str, str]) -> pa.Table:
    """QA's output: i-10 still needs rework (failed QA), a gold item is answered too (never delivered)."""
    ids = [*sorted(answers), "gold:g1"]
    labels = [answers.get(i, "bird") for i in ids]
    return pa.Table.from_pydict(
        {
            "item_id": ids,
            "answer": [json.dumps({"label": lab}) for lab in labels],
            "label": labels,
            "confidence": [0.55 if i == "i-10" else 0.9 + (n % 3) / 40 for n, i in enumerate(ids)],
            "n_annotators": [3] * len(ids),
            "method": ["dawid_skene"] * len(ids),
            "sites": ["site-a,site-b"] * len(ids),
            "needs_rework": [i == "i-10" for i in ids],
        },
        schema=CONSOLIDATED,
    )


def annotation_log(answers: dict[str, str]) -> tuple[pa.Table, pa.Table]:
    """Two parts of the log: site-a answers in 30 s, site-b in 120 s (below its living wage at $0.05 a task).

    i-05 had a rework round; annotation 1 was edited (its first version says dog, the latest the label).
    """
    rows: list[dict[str, Any]] = []
    ann = 0
    for n, item in enumerate([*item_ids(), "gold:g1"]):
        label = answers.get(item, "bird")
        for slot, annotator in enumerate([f"w-a{n % 3}", f"w-b{n % 3}", f"w-a{(n + 1) % 3}"]):
            ann += 1
            site_id = "site-b" if annotator.startswith("w-b") else "site-a"
            at = T0 + timedelta(minutes=10 * n + slot)
            rows.append(
                {
                    "item_id": item,
                    "batch_id": f"b-{site_id}",
                    "site_id": site_id,
                    "project_id": 1 if site_id == "site-a" else 2,
                    "task_id": n,
                    "annotation_id": ann,
                    "annotator": annotator,
                    "answer": json.dumps({"label": label}),
                    "label": label,
                    "lead_time_s": 120.0 if site_id == "site-b" else 30.0,
                    "created_at": at,
                    "updated_at": at,
                    "skipped": False,
                    "round": 1 if (item == "i-05" and slot == 2) else 0,
                }
            )
    first = dict(rows[0], answer=json.dumps({"label": "dog"}), label="dog", updated_at=T0 - timedelta(minutes=5))
    part_a = pa.Table.from_pylist([r for r in rows if r["site_id"] == "site-a"] + [first], schema=ANNOTATIONS)
    part_b = pa.Table.from_pylist([r for r in rows if r["site_id"] == "site-b"], schema=ANNOTATIONS)
    return part_a, part_b


def build_world(settings: Settings, store: ObjectStore, s3_prefix: str, unique: str, **wo: Any) -> World:
    bucket = settings.workspace_bucket
    base = f"s3://{bucket}/{s3_prefix}"
    work_order = WorkOrder.model_validate(
        {
            "id": f"acme-{unique}",
            "client_id": "acme",
            "source": {"uri": f"{base}input/items.csv", "format": "csv"},
            "task_type": "image_classification",
            "columns": {"item_id": "sku", "media_uri": "url"},
            "label_schema": {"classes": LABELS},
            "instructions": "Pick the animal in the photo.",
            "deadline": "2026-12-01T00:00:00Z",
            "price_per_item": 0.2,
            "pay_per_task": 0.05,
            "delivery": {"uri": f"{base}deliveries", "formats": ["jsonl", "parquet", "csv", "coco"]},
            **wo,
        }
    )
    ws = workspace(settings, work_order)
    registry_uri = f"{base}registry/partner_sites.yaml"
    registry = {"sites": [site("site-a", "USD", 6.0, 4.0), site("site-b", "KES", 200.0, 300.0)]}
    store.put_bytes(*parse_uri(registry_uri), yaml.safe_dump(registry).encode())

    uris: dict[str, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for n, item in enumerate(item_ids()):
        key = f"{s3_prefix}media/{hashlib.sha256(item.encode()).hexdigest()[:16]}.png"
        store.put_bytes(bucket, key, png(40 + n, 20 + 2 * n, 10 * n))
        uris[item] = f"s3://{bucket}/{key}"
        sizes[uris[item]] = (40 + n, 20 + 2 * n)
    notes = {"i-03": '=HYPERLINK("http://evil.example","x")', "i-04": "@SUM(A1:A9)", "i-06": "plain, with a comma"}
    records = [
        json.dumps({"sku": f"SKU-{i[2:]}", "url": uris[i], "note": notes.get(i, "")}, ensure_ascii=False)
        for i in item_ids()
    ]
    items = pa.Table.from_pydict(
        {
            "item_id": item_ids(),
            "client_item_id": [f"SKU-{i[2:]}" for i in item_ids()],
            "text": [None] * N_ITEMS,
            "media_uri": [uris[i] for i in item_ids()],
            "fields": [None] * N_ITEMS,
            "record": records,
            "source_object": [f"{base}input/items.csv"] * N_ITEMS,
            "source_row": list(range(N_ITEMS)),
            "shard": [n % 2 for n in range(N_ITEMS)],
        },
        schema=ITEMS,
    )
    items_uri = ws.uri("ingest", "v1", "items") + "/"
    for shard in (0, 1):
        part = items.filter(pa.compute.equal(items["shard"], shard))
        write_table(store, f"{items_uri}shard={shard:02d}/part-0.parquet", part)
    ingest = IngestResult(
        work_order_id=work_order.id,
        ingest_version="v1",
        items_uri=items_uri,
        quarantine_uri=ws.uri("ingest", "v1", "quarantine.parquet"),
        duplicates_uri=ws.uri("ingest", "v1", "duplicates.parquet"),
        manifest_uri=ws.uri("ingest", "v1", "manifest.json"),
        rows_read=N_ITEMS + 2,
        accepted=N_ITEMS,
        quarantined=1,
        duplicates=1,
        files_quarantined=0,
    )
    write_model(store, ws.uri("ingest", "result.json"), ingest)

    answers = base_answers()
    part_a, part_b = annotation_log(answers)
    write_table(store, ws.uri("annotate", "log", "part-a.parquet"), part_a)
    write_table(store, ws.uri("annotate", "log", "part-b.parquet"), part_b)
    gold = pa.table({"item_id": ["gold:g1"], "client_item_id": ["g1"], "answer": [json.dumps({"label": "bird"})]})
    write_table(store, ws.uri("split", "gold.parquet"), gold)

    report_key = ws.key("qa", "round=0", "report", "index.html")
    store.put_bytes(bucket, report_key, b"<!doctype html><title>QA report</title><p>All checks passed.</p>")
    validation_uri = ws.uri("qa", "round=0", "validation.json")
    store.put_bytes(*parse_uri(validation_uri), json.dumps({"success": True, "results": []}).encode())
    qa = QAResult(
        work_order_id=work_order.id,
        results_uri=ws.uri("qa", "round=0", "consolidated.parquet"),
        report_uri="https://example.invalid/presigned-report",
        report_key=report_key,
        validation_uri=validation_uri,
        data_docs_uri=None,
        passed=True,
        items=N_ITEMS,
        rework_items=1,
        agreement=0.81,
        gold_accuracy=0.92,
    )
    write_model(store, ws.uri("qa", "result.json"), qa)
    world = World(settings, store, work_order, qa, registry_uri, sizes)
    world.write_consolidated(answers)
    return world


@pytest.fixture
def world(stack_settings, store, s3_prefix, unique) -> Iterator[World]:  # type: ignore[no-untyped-def]
    built = build_world(stack_settings, store, s3_prefix, unique)
    yield built
    store.delete_prefix(stack_settings.workspace_bucket, built.ws.root + "/")


def snapshot(objects: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in objects.items()}


def fail_on(key_suffix: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A put_bytes that dies (like a killed worker) when it is about to write ``key_suffix``."""

    def put_bytes(self: ObjectStore, bucket: str, key: str, data: bytes, **kwargs: Any) -> Any:
        if key.endswith(key_suffix):
            raise RuntimeError(f"simulated crash before writing {key}")
        return original(self, bucket, key, data, **kwargs)

    return put_bytes


# --- (a) a complete, verifiable delivery -----------------------------------------------------------


def test_delivery_is_complete_and_every_checksum_verifies(world: World) -> None:
    result = world.run()

    assert result.version == "v1"
    assert result.delivered_items == 10
    manifest = world.manifest("v1")
    assert verify(manifest, package_reader(world.store, result.manifest_uri)) == []
    names = {f["name"] for f in manifest["files"]}
    assert names == {
        "labels.jsonl",
        "labels.parquet",
        "labels.csv",
        "coco.json",
        "qa-report.html",
        "validation.json",
        "README.md",
    }
    # The folder holds exactly the manifest's files, and nothing else was delivered.
    assert set(world.delivery()) == {f"v1/{n}" for n in names | {"manifest.json"}}
    assert result.files == len(names)
    rows = {f["name"]: f["rows"] for f in manifest["files"]}
    assert rows["labels.jsonl"] == rows["labels.parquet"] == rows["labels.csv"] == rows["coco.json"] == 10
    assert rows["README.md"] is None

    # accepted = delivered + excluded, with reasons; reworked-and-delivered is a subset of delivered.
    assert manifest["counts"] == {
        "accepted": 12,
        "delivered": 10,
        "reworked_and_delivered": 1,
        "excluded": 2,
        "excluded_by_reason": {"failed_qa": 1, "no_answer": 1},
    }
    assert manifest["ingest"] == {"version": "v1", "rows_read": 14, "accepted": 12, "quarantined": 1, "duplicates": 1}
    assert manifest["content_fingerprint"] and manifest["qa"]["passed"] is True
    # The QA documents are copied byte for byte.
    delivered = world.delivery()
    assert delivered["v1/qa-report.html"] == world.store.get_bytes(world.bucket, world.qa.report_key)
    assert delivered["v1/validation.json"] == world.store.get_bytes(*parse_uri(world.qa.validation_uri))
    readme = delivered["v1/README.md"].decode()
    assert "version v1" in readme and "| Delivered | 10 |" in readme and "Items delivered: **10**" in readme
    # Labels carry the date of the last answer, not the clock.
    coco = json.loads(delivered["v1/coco.json"])
    last_answer = T0 + timedelta(minutes=10 * N_ITEMS + 2)  # the gold item, answered last
    assert coco["info"]["date_created"] == last_answer.strftime("%Y-%m-%dT%H:%M:%S")
    # Pixel sizes come from the images' headers (ranged GETs), one per image.
    assert {i["coco_url"]: (i["width"], i["height"]) for i in coco["images"]} == {
        u: s for u, s in world.image_sizes.items() if u in {i["coco_url"] for i in coco["images"]}
    }
    assert len(coco["images"]) == 10

    assert read_model(world.store, world.ws.uri("deliver", "result.json"), DeliveryResult) == result


def test_impact_report_stays_internal_and_suspends_sites_below_the_living_wage(world: World) -> None:
    result = world.run()

    assert result.impact_report_uri == world.ws.uri("deliver", "impact", "index.html")
    html = world.store.get_bytes(*parse_uri(result.impact_report_uri)).decode()
    assert "Impact report" in html and "site-b" in html and "paused for review" in html
    assert not any("impact" in key for key in world.delivery())
    # site-b: 12 answers an hour x $0.05 = $1.50 < 300 KES x 0.0077 = $2.31 an hour: suspended until reviewed.
    registry = world.registry()
    assert registry.site("site-b").impact.suspended is True
    assert registry.site("site-a").impact.suspended is False
    assert read_json(world.store, world.ws.uri("deliver", "impact", "suspensions.json")).keys() == {"site-b"}


def test_a_site_paid_in_a_currency_without_exchange_rate_is_reported_not_assessed(world: World) -> None:
    deliver_flow(world.work_order, registry_uri=world.registry_uri)

    html = world.store.get_bytes(world.bucket, world.ws.key("deliver", "impact", "index.html")).decode()
    assert "Not assessed: site-b (no exchange rate for KES: add it to fx_to_usd in the registry)" in html
    # Without a rate its pay cannot be compared, so it is not suspended either.
    assert world.registry().site("site-b").impact.suspended is False


def test_a_site_reinstated_by_a_reviewer_is_not_suspended_again_by_a_rerun(world: World) -> None:
    world.run()
    registry = world.registry()
    lifted = [s.model_copy(update={"impact": s.impact.model_copy(update={"suspended": False})}) for s in registry.sites]
    world.store.put_bytes(*parse_uri(world.registry_uri), PartnerRegistry(sites=lifted).to_yaml().encode())

    world.run()

    assert world.registry().site("site-b").impact.suspended is False


def test_worker_records_are_signed_and_verify_with_the_published_key(world: World) -> None:
    world.run()

    outputs = world.deliver_outputs()
    public_pem = outputs["worker-records/public_key.pem"]
    assert public_pem == signing_key(world.settings.worker_record_signing_seed)[1]
    records = {k: json.loads(v) for k, v in outputs.items() if k.startswith("worker-records/w-")}
    assert sorted(records) == [f"worker-records/w-{s}{n}.json" for s in "ab" for n in range(3)]
    assert all(verify_record(r, public_pem) for r in records.values())
    a0 = records["worker-records/w-a0.json"]["record"]
    # w-a0 answers items 0, 3, 6, 9, 12 (gold) in slot 0 and items 2, 5, 8, 11 in slot 2.
    assert a0["tasks"] == 9 and a0["sites"] == ["site-a"] and a0["work_orders"] == [world.work_order.id]
    assert a0["gold"] == {"answered": 1, "correct": 1, "accuracy": 1.0}
    tampered = json.loads(json.dumps(records["worker-records/w-b1.json"]))
    tampered["record"]["tasks"] += 1
    assert not verify_record(tampered, public_pem)


# --- (b) a crash between the files and the manifest --------------------------------------------------


def test_crash_before_manifest_leaves_no_manifest_and_the_rerun_completes_the_same_version(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ObjectStore, "put_bytes", fail_on("/manifest.json", ObjectStore.put_bytes))
    with pytest.raises(RuntimeError, match="simulated crash"):
        world.run()
    partial = world.delivery()
    assert partial and not any(k.endswith("manifest.json") for k in partial)
    assert {k.split("/")[0] for k in partial} == {"v1"}
    assert world.store.head(world.bucket, world.ws.key("deliver", "result.json")) is None

    monkeypatch.undo()
    result = world.run()

    assert result.version == "v1"
    complete = world.delivery()
    assert {k.split("/")[0] for k in complete} == {"v1"}
    # The files the crashed run wrote are the ones the manifest vouches for.
    assert {k: v for k, v in snapshot(complete).items() if k in partial} == snapshot(partial)
    assert verify(world.manifest("v1"), package_reader(world.store, result.manifest_uri)) == []


def test_a_folder_left_without_manifest_holding_other_content_is_not_touched(world: World) -> None:
    bucket, root = delivery_root(world.work_order)
    world.store.put_bytes(bucket, f"{root}/v1/coco.json", b'{"left": "by another run"}')

    result = world.run()

    assert result.version == "v2"
    assert world.store.get_bytes(bucket, f"{root}/v1/coco.json") == b'{"left": "by another run"}'
    assert [k for k in world.delivery() if k.startswith("v1/")] == ["v1/coco.json"]
    assert verify(world.manifest("v2"), package_reader(world.store, result.manifest_uri)) == []


def test_a_concurrent_run_committing_the_same_content_first_is_accepted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ObjectStore.put_bytes

    def racing(self: ObjectStore, bucket: str, key: str, data: bytes, **kwargs: Any) -> Any:
        if key.endswith("/manifest.json") and kwargs.get("if_none_match"):
            original(self, bucket, key, data, if_none_match=True)  # the other run wins the race
        return original(self, bucket, key, data, **kwargs)

    monkeypatch.setattr(ObjectStore, "put_bytes", racing)
    result = world.run()

    assert result.version == "v1"
    assert [k for k in world.delivery() if k.endswith("manifest.json")] == ["v1/manifest.json"]


# --- (c) a rerun is byte-identical ---------------------------------------------------------------


def test_rerun_writes_nothing_new_and_every_byte_is_the_same(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    first = world.run()
    delivered, internal = snapshot(world.delivery()), snapshot(world.deliver_outputs())

    writes: list[str] = []
    original = ObjectStore.put_bytes

    def spy(self: ObjectStore, bucket: str, key: str, data: bytes, **kwargs: Any) -> Any:
        writes.append(key)
        return original(self, bucket, key, data, **kwargs)

    monkeypatch.setattr(ObjectStore, "put_bytes", spy)
    second = world.run()

    assert second == first
    assert snapshot(world.delivery()) == delivered
    assert {k for k in world.delivery() if k.endswith("manifest.json")} == {"v1/manifest.json"}
    _, root = delivery_root(world.work_order)
    assert not [k for k in writes if k.startswith(root)], "a rerun with the same content wrote to the delivery"
    # The workspace side (impact report, worker records, image-size cache, result) is rewritten identically.
    assert snapshot(world.deliver_outputs()) == internal


# --- (d) changed content is a new version ------------------------------------------------------------


def test_a_changed_answer_makes_a_new_version_and_leaves_the_old_one_untouched(world: World) -> None:
    first = world.run()
    v1 = snapshot(world.delivery())

    answers = base_answers() | {"i-00": "dog"}
    world.write_consolidated(answers)
    second = world.run()

    assert (first.version, second.version) == ("v1", "v2")
    after = snapshot(world.delivery())
    assert {k: v for k, v in after.items() if k.startswith("v1/")} == v1
    m1, m2 = world.manifest("v1"), world.manifest("v2")
    assert m1["content_fingerprint"] != m2["content_fingerprint"]
    assert verify(m2, package_reader(world.store, second.manifest_uri)) == []
    bucket, root = delivery_root(world.work_order)
    rows = [json.loads(line) for line in world.store.get_bytes(bucket, f"{root}/v2/labels.jsonl").splitlines()]
    assert next(r for r in rows if r["item_id"] == "i-00")["answer"] == {"label": "dog"}
    assert "version v2" in world.store.get_bytes(bucket, f"{root}/v2/README.md").decode()
    # Back to the first answers: the newest delivery (v2) differs, so that content is delivered again as v3.
    world.write_consolidated(base_answers())
    assert world.run().version == "v3"
    assert snapshot(world.delivery())["v3/labels.parquet"] == v1["v1/labels.parquet"]


# --- QA gate --------------------------------------------------------------------------------------------


def test_failed_qa_without_approval_delivers_nothing(world: World) -> None:
    failed = world.qa.model_copy(update={"passed": False})
    with pytest.raises(DeliveryBlocked, match="has not approved"):
        world.run(qa=failed)
    assert world.delivery() == {}


def test_a_qa_leads_approval_is_recorded_in_the_manifest_and_the_data_card(world: World) -> None:
    approved = world.qa.model_copy(
        update={
            "passed": False,
            "approved": True,
            "approved_by": "Amina Odhiambo",
            "approval_comment": "Gold accuracy of one site is 0.78; the client accepts it for this batch.",
        }
    )
    result = world.run(qa=approved)

    manifest = world.manifest(result.version)
    assert manifest["qa"]["passed"] is False
    assert manifest["qa"]["approved_by"] == "Amina Odhiambo"
    assert manifest["qa"]["approval_comment"].startswith("Gold accuracy of one site")
    readme = world.delivery()[f"{result.version}/README.md"].decode()
    assert "Amina Odhiambo approved this delivery" in readme and "client accepts it" in readme


# --- (f) no secret leaves ----------------------------------------------------------------------------


def test_no_secret_appears_in_any_delivered_file_record_or_artifact(world: World) -> None:
    world.run()

    s = world.settings
    seed = s.worker_record_signing_seed.get_secret_value()
    private_pem = signing_key(s.worker_record_signing_seed)[0]
    secrets = [
        s.s3_secret_access_key.get_secret_value().encode(),
        seed.encode(),
        hashlib.sha256(seed.encode()).digest(),  # the private key itself
        hashlib.sha256(seed.encode()).hexdigest().encode(),
        private_pem.split(b"\n")[1],
        s.pseudonym_key.get_secret_value().encode(),
    ]
    written = {**world.delivery(), **world.deliver_outputs()}
    assert len(written) > 10
    leaks = [(name, i) for name, body in written.items() for i, secret in enumerate(secrets) if secret in body]
    assert leaks == []

    with get_client(sync_client=True) as client:
        texts = []
        for what in ("note", "files", "impact", "impact-summary"):
            key = _key(f"{world.work_order.id}-deliver-{what}")
            artifact = client.read_artifacts(limit=1, sort=ArtifactSort.CREATED_DESC, artifact_filter=key)
            assert artifact, f"no {what} artifact"
            texts.append(json.dumps(artifact[0].data))
    for secret in secrets[:2] + secrets[-1:]:
        assert not any(secret.decode() in t for t in texts)
    note = texts[0]
    assert "X-Amz-Expires=" in note and "manifest.json" in note and "README.md" in note


def _key(key: str) -> ArtifactFilter:
    return ArtifactFilter(key=ArtifactFilterKey(any_=[key]))


def test_a_concurrent_manifest_with_other_content_moves_on_to_the_next_version(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ObjectStore.put_bytes

    def racing(self: ObjectStore, bucket: str, key: str, data: bytes, **kwargs: Any) -> Any:
        if key.endswith("v1/manifest.json") and kwargs.get("if_none_match"):
            other = json.loads(data) | {"content_fingerprint": "0" * 64}
            original(self, bucket, key, json.dumps(other).encode(), if_none_match=True)
        return original(self, bucket, key, data, **kwargs)

    monkeypatch.setattr(ObjectStore, "put_bytes", racing)
    result = world.run()

    assert result.version == "v2"
    assert world.manifest("v1")["content_fingerprint"] == "0" * 64
    assert verify(world.manifest("v2"), package_reader(world.store, result.manifest_uri)) == []
