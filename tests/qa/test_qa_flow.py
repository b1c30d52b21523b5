"""The QA flow against the real local S3 and Prefect server.

Each test has its own work order id (so its own workspace folder) and its own partner registry, and writes
what the earlier stages would have left by hand: the accepted items and ingest's result, split's gold,
assignments and projects, and annotate's log (from a simulated crowd with known truth) and result.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.core.models import AnnotateResult, IngestResult, PartnerRegistry, QAResult, WorkOrder, Workspace
from flows.core.s3 import ObjectStore, parse_uri
from flows.core.schemas import ANNOTATIONS, ASSIGNMENTS, CONSOLIDATED, ITEMS
from flows.core.settings import Settings
from flows.core.workspace import read_json, read_model, workspace, write_json, write_model, write_table
from flows.qa.consolidate import ConsolidationParams, consolidate
from flows.qa.flow import REWORK, qa_flow
from simulation.crowd import simulate_classification

pytestmark = pytest.mark.prefect

CLASSES = ["cat", "dog", "bird"]
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SITE_OF = {"a0": "site-a", "a1": "site-a", "a2": "site-a", "a3": "site-b", "a4": "site-b"}
N_ITEMS, N_GOLD = 60, 10


@dataclass
class World:
    """One test's work order and what the earlier stages left for it in S3."""

    settings: Settings
    store: ObjectStore
    work_order: WorkOrder
    registry_uri: str
    answers: pd.DataFrame  # item_id, annotator, label: the answers that count after the log's dedupe
    truth: pd.Series
    gold: pd.Series
    spammer: str | None

    @property
    def ws(self) -> Workspace:
        return workspace(self.settings, self.work_order)

    @property
    def bucket(self) -> str:
        return self.settings.workspace_bucket

    def run(self, round_number: int = 0, **kwargs: Any) -> QAResult:
        return qa_flow(self.work_order, round_number=round_number, registry_uri=self.registry_uri, **kwargs)

    def qa_bytes(self, round_number: int, name: str) -> bytes:
        return self.store.get_bytes(self.bucket, self.ws.key("qa", f"round={round_number}", name))

    def qa_frame(self, round_number: int, name: str) -> pd.DataFrame:
        return pq.read_table(io.BytesIO(self.qa_bytes(round_number, name))).to_pandas()

    def registry(self) -> PartnerRegistry:
        return PartnerRegistry.from_yaml(self.store.get_bytes(*parse_uri(self.registry_uri)).decode())


def site(site_id: str) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": f"Site {site_id}",
        "country": "KE",
        "timezone": "Africa/Nairobi",
        "label_studio": {"url": "http://127.0.0.1:28301", "token_secret": f"ls_token_{site_id.replace('-', '_')}"},
        "capacity": {"annotators": 3, "hours_per_day": 6, "items_per_hour": {"image_classification": 100}},
        "task_types": ["image_classification"],
        "impact": {
            "hourly_wage": 300.0,
            "living_wage": 250.0,
            "currency": "KES",
            "last_audit": "2026-06-01",
            "audit_status": "passed",
        },
    }


def crowd(*, spammer: bool, accuracy: tuple[float, float], seed: int) -> tuple[pd.DataFrame, pd.Series, str | None]:
    """70 simulated items (overlap 3, 5 annotators); 10 become gold items, answered by the spammer if any."""
    answers, truth, profiles = simulate_classification(
        N_ITEMS + N_GOLD, CLASSES, 5, overlap=3, accuracy=accuracy, spammer_share=0.2 if spammer else 0.0, seed=seed
    )
    who = str(profiles.index[profiles["is_spammer"]][0]) if spammer else None
    pool = answers.loc[answers["annotator"] == who, "item_id"] if who else answers["item_id"]
    gold_items = sorted(set(pool.astype(str)))[:N_GOLD]
    rename = {i: f"gold:{i}" for i in gold_items}
    answers = answers.assign(item_id=answers["item_id"].astype(str).replace(rename))
    truth = truth.rename(index=lambda i: rename.get(i, i))
    return answers, truth, who


def annotation_rows(answers: pd.DataFrame, gold_ids: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The log's rows (one version per answer) and the assignment manifest's, from the crowd's answers."""
    log: list[dict[str, Any]] = []
    plan: list[dict[str, Any]] = []
    slots: dict[str, int] = {}
    for n, row in enumerate(answers.itertuples(index=False)):
        site_id = SITE_OF[str(row.annotator)]
        at = T0 + timedelta(minutes=n)
        log.append(
            {
                "item_id": row.item_id,
                "batch_id": f"b-{site_id}",
                "site_id": site_id,
                "project_id": 1 if site_id == "site-a" else 2,
                "task_id": n + 1,
                "annotation_id": n + 1,
                "annotator": row.annotator,
                "answer": json.dumps({"label": row.label}),
                "label": row.label,
                "lead_time_s": 20.0 + n % 7,
                "created_at": at,
                "updated_at": at,
                "skipped": False,
                "round": 0,
            }
        )
        slot = slots.get(str(row.item_id), 0)
        slots[str(row.item_id)] = slot + 1
        plan.append(
            {
                "item_id": row.item_id,
                "batch_id": f"b-{site_id}",
                "site_id": site_id,
                "project_key": f"b-{site_id}",
                "slot": slot,
                "is_gold": row.item_id in gold_ids,
                "round": 0,
            }
        )
    return log, plan


def build_world(
    settings: Settings,
    store: ObjectStore,
    s3_prefix: str,
    unique: str,
    *,
    spammer: bool,
    accuracy: tuple[float, float] = (40.0, 2.0),
    seed: int = 0,
    edits: bool = False,
    unanswered: int = 0,
    **qa: Any,
) -> World:
    bucket = settings.workspace_bucket
    base = f"s3://{bucket}/{s3_prefix}"
    work_order = WorkOrder.model_validate(
        {
            "id": f"qa-{unique}",
            "client_id": "acme",
            "source": {"uri": f"{base}input/items.csv", "format": "csv"},
            "task_type": "image_classification",
            "columns": {"media_uri": "url"},
            "label_schema": {"classes": CLASSES},
            "deadline": "2026-12-01T00:00:00Z",
            "price_per_item": 0.2,
            "pay_per_task": 0.05,
            "overlap": 3,
            "qa": qa,
            "delivery": {"uri": f"{base}deliveries"},
        }
    )
    ws = workspace(settings, work_order)
    registry_uri = f"{base}registry/partner_sites.yaml"
    store.put_bytes(
        *parse_uri(registry_uri),
        yaml.safe_dump({"sites": [site("site-a"), site("site-b")], "fx_to_usd": {"KES": 0.0077}}).encode(),
    )

    answers, truth, who = crowd(spammer=spammer, accuracy=accuracy, seed=seed)
    gold = truth[truth.index.str.startswith("gold:")]
    items = sorted(i for i in truth.index if i not in gold.index)
    assert len(items) == N_ITEMS and len(gold) == N_GOLD
    records = [json.dumps({"url": f"{base}media/{i}.jpg"}) for i in items]
    table = pa.Table.from_pydict(
        {
            "item_id": items,
            "client_item_id": items,
            "text": [None] * N_ITEMS,
            "media_uri": [f"{base}media/{i}.jpg" for i in items],
            "fields": [None] * N_ITEMS,
            "record": records,
            "source_object": [f"{base}input/items.csv"] * N_ITEMS,
            "source_row": list(range(N_ITEMS)),
            "shard": [0] * N_ITEMS,
        },
        schema=ITEMS,
    )
    items_uri = ws.uri("ingest", "v1", "items") + "/"
    write_table(store, f"{items_uri}shard=00/part-0.parquet", table)
    write_model(
        store,
        ws.uri("ingest", "result.json"),
        IngestResult(
            work_order_id=work_order.id,
            ingest_version="v1",
            items_uri=items_uri,
            quarantine_uri=ws.uri("ingest", "v1", "quarantine.parquet"),
            duplicates_uri=ws.uri("ingest", "v1", "duplicates.parquet"),
            manifest_uri=ws.uri("ingest", "v1", "manifest.json"),
            rows_read=N_ITEMS,
            accepted=N_ITEMS,
            quarantined=0,
            duplicates=0,
            files_quarantined=0,
        ),
    )
    write_table(
        store,
        ws.uri("split", "gold.parquet"),
        pa.table(
            {
                "item_id": list(gold.index),
                "client_item_id": [i.removeprefix("gold:") for i in gold.index],
                "answer": [json.dumps({"label": v}) for v in gold],
            }
        ),
    )
    write_json(
        store,
        ws.uri("split", "projects.json"),
        {
            "b-site-a": {"site_id": "site-a", "project_id": 1, "url": "http://127.0.0.1:28301/projects/1"},
            "b-site-b": {"site_id": "site-b", "project_id": 2, "url": "http://127.0.0.1:28302/projects/2"},
        },
    )
    log, plan = annotation_rows(answers, set(gold.index))
    if unanswered:
        # Planned, but no answer has arrived yet.
        waiting = set(items[:unanswered])
        log = [r for r in log if r["item_id"] not in waiting]
        answers = answers[~answers["item_id"].isin(waiting)]
    write_table(
        store, ws.uri("split", "round=0", "assignments.parquet"), pa.Table.from_pylist(plan, schema=ASSIGNMENTS)
    )
    if edits:
        # An edited annotation: its first version said something else, earlier; only the latest counts.
        first = log[0]
        wrong = next(c for c in CLASSES if c != first["label"])
        log.append(dict(first, answer=json.dumps({"label": wrong}), label=wrong, updated_at=T0 - timedelta(minutes=5)))
        # An annotator who answered an item again in a later round (a review): their latest answer counts,
        # once. Their round-0 answer was wrong.
        second = log[1]
        right = str(truth[second["item_id"]])
        second_wrong = next(c for c in CLASSES if c != right)
        log[1] = dict(second, answer=json.dumps({"label": second_wrong}), label=second_wrong)
        log.append(
            dict(
                second,
                task_id=10_001,
                annotation_id=10_001,
                answer=json.dumps({"label": right}),
                label=right,
                round=1,
                created_at=T0 + timedelta(days=1),
                updated_at=T0 + timedelta(days=1),
            )
        )
        answers = answers.copy()
        answers.loc[
            (answers["item_id"] == second["item_id"]) & (answers["annotator"] == second["annotator"]), "label"
        ] = right
    by_site = {s: [r for r in log if r["site_id"] == s] for s in ("site-a", "site-b")}
    for s, rows in by_site.items():
        write_table(
            store, ws.uri("annotate", "log", f"part-{s}.parquet"), pa.Table.from_pylist(rows, schema=ANNOTATIONS)
        )
    write_model(
        store,
        ws.uri("annotate", "result.json"),
        AnnotateResult(
            work_order_id=work_order.id,
            log_uri=ws.uri("annotate", "log") + "/",
            status_uri=ws.uri("annotate", "status.parquet"),
            annotations=len(answers),
            new_annotations=0,
            done=True,
        ),
    )
    return World(settings, store, work_order, registry_uri, answers, truth, gold, who)


@pytest.fixture
def make_world(stack_settings, store, s3_prefix, unique) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    built: list[World] = []

    def make(**kwargs: Any) -> World:
        world = build_world(stack_settings, store, s3_prefix, f"{unique}-{len(built)}", **kwargs)
        built.append(world)
        return world

    yield make
    for world in built:
        store.delete_prefix(stack_settings.workspace_bucket, world.ws.root + "/")


def latest_artifact(key: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            limit=1, sort=ArtifactSort.CREATED_DESC, artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return found[0]


def failed_checks(validation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["check"]: r for r in validation["results"] if not r["success"]}


# --- (a) a spammer is flagged, excluded, and their items go to rework --------------------------------------


def test_spammer_is_excluded_and_their_items_go_to_rework(make_world: Any) -> None:
    world: World = make_world(spammer=True, accuracy=(12.0, 2.0), seed=3)
    spammer = world.spammer
    assert spammer is not None

    result = world.run(
        annotate=read_model(world.store, world.ws.uri("annotate", "result.json"), AnnotateResult),
    )

    assert result.excluded_annotators == [spammer]
    assert result.items == N_ITEMS
    consolidated = world.qa_frame(0, "consolidated.parquet")
    assert consolidated.columns.tolist() == CONSOLIDATED.names
    assert not consolidated["item_id"].str.startswith("gold:").any()
    assert consolidated["item_id"].is_monotonic_increasing

    # The consolidated labels are those of the crowd without the spammer: their answers do not count.
    kept = world.answers[world.answers["annotator"] != spammer]
    expected = consolidate(
        world.work_order.task_type, kept, ConsolidationParams.from_work_order(world.work_order, gold=world.gold)
    ).set_index("item_id")
    got = consolidated.set_index("item_id")
    assert got["label"].tolist() == expected.loc[got.index, "label"].tolist()
    np.testing.assert_allclose(got["confidence"], expected.loc[got.index, "confidence"])
    spammed = set(world.answers.loc[world.answers["annotator"] == spammer, "item_id"]) - set(world.gold.index)
    assert (got.loc[sorted(spammed), "n_annotators"] == 2).all()
    kept_sites = kept.assign(site=kept["annotator"].map(SITE_OF)).groupby("item_id")["site"]
    assert got["sites"].to_dict() == kept_sites.agg(lambda s: ",".join(sorted(set(s)))).reindex(got.index).to_dict()

    # Every item that lost an answer is in rework, with predictions for the reviewer; those whose consensus
    # fell below the confidence threshold say so.
    rework = world.qa_frame(0, "rework.parquet")
    assert rework.columns.tolist() == REWORK.names
    assert result.rework_items == len(rework) and result.rework_uri == world.ws.uri("qa", "round=0", "rework.parquet")
    by_item = rework.set_index("item_id")
    assert spammed <= set(by_item.index)
    assert by_item.loc[sorted(spammed), "reason"].str.contains("excluded_annotator").all()
    low = got.index[got["confidence"] < world.work_order.qa.min_confidence]
    assert len(low) > 0
    assert by_item.loc[low, "reason"].str.contains("low_confidence").all()
    assert set(by_item.index) == set(got.index[got["needs_rework"]])
    assert (rework["round"] == 1).all()
    # With the spammer's answers excluded (their items reworked), both sites meet the gold threshold: the
    # suite passes, and the review goes to one site.
    assert rework["site_id"].nunique() == 1
    assert SITE_OF[spammer] == "site-b" and result.passed
    assert not failed_checks(read_json(world.store, result.validation_uri))
    first = sorted(spammed)[0]
    predictions = json.loads(by_item.loc[first, "predictions"])
    assert predictions[0]["model_version"] == "kazi-qa-round-0"
    assert predictions[0]["result"][0]["value"]["choices"] == [got.loc[first, "label"]]
    assert predictions[0]["score"] == pytest.approx(got.loc[first, "confidence"], abs=1e-4)

    # The scores name the spammer; the QA report names them as excluded.
    people = world.qa_frame(0, "annotator_scores.parquet").set_index("annotator")
    assert people.loc[spammer, "excluded"] and people["excluded"].sum() == 1
    assert people.loc[spammer, "n_gold"] == N_GOLD
    html = world.store.get_bytes(world.bucket, result.report_key).decode()
    assert spammer in html and "EXCLUDED" in html
    assert latest_artifact(f"{world.work_order.id}-qa").data.count(spammer) >= 1

    # The sites' measured gold accuracy went to the registry (the fx rates stay).
    registry = world.registry()
    sites = world.qa_frame(0, "site_scores.parquet").set_index("site_id")
    for s in registry.sites:
        if sites.loc[s.id, "n_gold"] >= 10:
            assert s.gold_accuracy == pytest.approx(sites.loc[s.id, "gold_accuracy"], abs=1e-4)
    assert any(s.gold_accuracy is not None for s in registry.sites)
    assert registry.fx_to_usd == {"KES": 0.0077}
    assert read_model(world.store, world.ws.uri("qa", "result.json"), QAResult) == result


# --- (b) a clean crowd passes ---------------------------------------------------------------------------------


def test_clean_crowd_passes_with_reachable_report_and_data_docs(make_world: Any) -> None:
    world: World = make_world(spammer=False, seed=1, edits=True)

    result = world.run()

    assert result.passed and result.approved is None
    assert result.rework_items == 0 and result.excluded_annotators == []
    assert result.agreement is not None and result.agreement > world.work_order.qa.min_agreement
    assert result.gold_accuracy is not None and result.gold_accuracy >= 0.9
    consolidated = world.qa_frame(0, "consolidated.parquet")
    assert len(consolidated) == N_ITEMS and not consolidated["needs_rework"].any()
    accuracy = (consolidated["label"].to_numpy() == world.truth.reindex(consolidated["item_id"]).to_numpy()).mean()
    assert accuracy >= 0.95
    # The log's edits: one answer per item and annotator, the latest version and the latest round.
    assert (consolidated["n_annotators"] == 3).all()
    assert set(consolidated["sites"]) <= {"site-a", "site-b", "site-a,site-b"}
    assert len(world.qa_frame(0, "rework.parquet")) == 0

    validation = read_json(world.store, result.validation_uri)
    assert validation["success"] is True and failed_checks(validation) == {}
    checks = {r["check"] for r in validation["results"]}
    assert {"expect_table_row_count_to_equal", "expect_column_values_to_be_between(gold_accuracy)"} <= checks
    for url in (result.data_docs_uri, result.report_uri):
        assert url is not None and "X-Amz-Signature=" in url
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200, url
        assert "<html" in response.text.lower()
    report = httpx.get(result.report_uri, timeout=10).text
    assert "PASSED" in report and "127.0.0.1:28301/projects/1" in report

    key = world.work_order.id
    assert f"({result.report_uri})" in latest_artifact(f"{key}-qa-report").data
    assert f"({result.data_docs_uri})" in latest_artifact(f"{key}-qa-data-docs").data
    sites_table = json.loads(latest_artifact(f"{key}-qa-sites").data)
    assert {r["site_id"] for r in sites_table} == {"site-a", "site-b"}
    assert len(json.loads(latest_artifact(f"{key}-qa-validation").data)) == len(validation["results"])


# --- (c) a bad output fails, naming the check --------------------------------------------------------------


def test_sites_below_the_gold_threshold_fail_validation(make_world: Any) -> None:
    world: World = make_world(spammer=False, accuracy=(8.0, 2.0), seed=2, min_gold_accuracy=1.0)

    result = world.run()

    assert not result.passed
    validation = read_json(world.store, result.validation_uri)
    assert validation["success"] is False
    failed = failed_checks(validation)
    assert "expect_column_values_to_be_between(gold_accuracy)" in failed
    assert failed["expect_column_values_to_be_between(gold_accuracy)"]["unexpected"] >= 1
    # Nobody is perfect, so everyone is excluded and every item waits for rework, proposed anyway.
    assert sorted(result.excluded_annotators) == sorted(SITE_OF)
    assert result.rework_items == N_ITEMS
    assert "FAILED" in world.store.get_bytes(world.bucket, result.report_key).decode()


# --- (d) idempotent ----------------------------------------------------------------------------------------------


def test_rerun_of_a_round_writes_the_same_tables(make_world: Any) -> None:
    world: World = make_world(spammer=True, accuracy=(12.0, 2.0), seed=3)
    names = ("consolidated.parquet", "rework.parquet", "annotator_scores.parquet", "site_scores.parquet")

    first = world.run()
    before = {n: world.qa_bytes(0, n) for n in names}
    registry = world.store.get_bytes(*parse_uri(world.registry_uri))
    second = world.run()  # annotate's result read from the workspace this time

    assert {n: world.qa_bytes(0, n) for n in names} == before
    assert world.store.get_bytes(*parse_uri(world.registry_uri)) == registry
    assert second.model_dump(exclude={"report_uri", "data_docs_uri"}) == first.model_dump(
        exclude={"report_uri", "data_docs_uri"}
    )


# --- The last round: what still needs rework is not delivered, and coverage says so -------------------------


def test_last_round_excludes_unresolved_items_explicitly_and_coverage_holds(make_world: Any) -> None:
    world: World = make_world(spammer=True, accuracy=(12.0, 2.0), seed=3, max_rework_rounds=0)

    result = world.run()

    consolidated = world.qa_frame(0, "consolidated.parquet")
    waiting = int(consolidated["needs_rework"].sum())
    assert waiting > 0 and result.rework_items >= waiting
    # Every unresolved item is listed with its reason; the rest of the accepted items are covered.
    rework = world.qa_frame(0, "rework.parquet")
    assert set(consolidated.loc[consolidated["needs_rework"], "item_id"]) <= set(rework["item_id"])
    assert rework["reason"].str.len().gt(0).all()
    assert "expect_table_row_count_to_equal" not in failed_checks(read_json(world.store, result.validation_uri))


# --- Items nobody has answered yet -------------------------------------------------------------------------


def test_items_without_answers_go_to_rework_without_failing_coverage(make_world: Any) -> None:
    world: World = make_world(spammer=False, seed=1, unanswered=5)

    result = world.run()

    assert result.passed
    assert result.rework_items == 5
    rework = world.qa_frame(0, "rework.parquet")
    planned_only = sorted(world.truth.index.difference(world.gold.index))[:5]
    assert sorted(rework["item_id"]) == planned_only
    assert (rework["site_id"] == rework["site_id"].iloc[0]).all()
    assert (rework["reason"] == "too_few_answers").all()
    assert (rework["predictions"] == "[]").all()
    assert len(world.qa_frame(0, "consolidated.parquet")) == N_ITEMS - 5
    coverage = next(
        r
        for r in read_json(world.store, result.validation_uri)["results"]
        if r["check"] == "expect_table_row_count_to_equal"
    )
    assert coverage["success"] and coverage["observed"] == N_ITEMS - 5
    assert "5 of them waiting for rework" in coverage["what"]
