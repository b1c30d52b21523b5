"""The parent flow: one work order, end to end.

ingest -> split -> annotate (re-syncing until the sites are done) -> QA (with rework rounds) -> deliver.
Stages hand each other typed results; each stage is also its own deployment for reruns.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import cast
from uuid import UUID

from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import Field

from flows.annotate.flow import annotate_flow
from flows.core import prefect_fixes  # noqa: F401  (applied on import: see the module)
from flows.core.models import AnnotateResult, DeliveryResult, QAResult, WorkOrder
from flows.core.s3 import ObjectStore, parse_uri
from flows.core.settings import load_settings
from flows.core.startup import tune_gc_after_imports
from flows.core.workspace import workspace, write_json, write_model
from flows.deliver.flow import deliver_flow
from flows.ingest.flow import ingest_flow
from flows.qa.flow import qa_flow
from flows.split.flow import rework_flow, split_flow


class QAApproval(RunInput):
    """A QA lead's decision on a delivery whose validation failed."""

    approve: bool = Field(description="Deliver despite the failed checks?")
    reviewer: str = Field(min_length=1, description="Your name, recorded with the delivery.")
    comment: str = Field(min_length=1, description="Why: recorded with the delivery and shown to the client.")


@task(
    name="record qa decision",
    task_run_name="record the QA lead's decision on {qa.work_order_id}",
    cache_policy=NO_CACHE,
)
def record_decision(qa: QAResult, decision: QAApproval) -> QAResult:
    """Keep the QA lead's decision with the QA result, so the delivery (and any rerun of it) carries it.

    The decision is also kept on its own, ``qa/round=<r>/decision.json``, with when it was taken.
    """
    decided = qa.model_copy(
        update={"approved": decision.approve, "approved_by": decision.reviewer, "approval_comment": decision.comment}
    )
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, qa.work_order_id)
    record = {**decision.model_dump(mode="json"), "decided_at": datetime.now(UTC).isoformat()}
    write_json(store, ws.uri("qa", f"round={qa.round_number}", "decision.json"), record)
    write_model(store, ws.uri("qa", f"round={qa.round_number}", "result.json"), decided)
    write_model(store, ws.uri("qa", "result.json"), decided)
    return decided


STAGES = ("ingest", "split", "annotate", "qa", "deliver")


class StageProgress:
    """The run's progress bar in the Prefect UI: the share of the five stages done."""

    def __init__(self, work_order: WorkOrder) -> None:
        self.artifact_id = cast(
            UUID,
            create_progress_artifact(
                progress=0.0,
                key=f"{work_order.id}-stages",
                description=f"Stages of {work_order.id} done: {', '.join(STAGES)}",
            ),
        )

    def done(self, stage: str) -> None:
        update_progress_artifact(self.artifact_id, progress=100.0 * (STAGES.index(stage) + 1) / len(STAGES))


def summary_markdown(work_order: WorkOrder, qa: QAResult, delivery: DeliveryResult, impact_url: str) -> str:
    """The run's last word: what was delivered and where every report is."""
    verdict = "passed" if qa.passed else f"failed, delivered with the approval of {qa.approved_by}"
    rows = [
        ("QA report", f"[open]({qa.report_uri})", "one page for the QA lead"),
        ("Data Docs", f"[open]({qa.data_docs_uri})" if qa.data_docs_uri else "-", "every output check"),
        ("Delivery manifest", f"`{delivery.manifest_uri}`", f"{delivery.files} files, SHA-256 of each"),
        ("Impact report", f"[open]({impact_url})", "pay per hour against the living wage, per site"),
    ]
    lines = [
        f"## {work_order.id}: delivered {delivery.delivered_items:,} items",
        "",
        f"QA {verdict} (round {qa.round_number}, {qa.items:,} items, {qa.rework_items:,} sent to rework).",
        "",
        "| report | link | what |",
        "| --- | --- | --- |",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
    ]
    return "\n".join(lines)


def wait_for_annotations(
    work_order: WorkOrder, registry_uri: str | None, sync_interval_seconds: float, max_wait_seconds: float
) -> AnnotateResult:
    """Sync annotations on a schedule until every task is answered, or the wait runs out."""
    logger = get_run_logger()
    started = time.monotonic()
    while True:
        result = annotate_flow(work_order, registry_uri=registry_uri)
        if result.done:
            return result
        if time.monotonic() - started > max_wait_seconds:
            logger.warning(
                "%s: annotations still incomplete after %.0f s; QA runs on what has arrived and sends the rest "
                "to rework.",
                work_order.id,
                max_wait_seconds,
            )
            return result
        time.sleep(sync_interval_seconds)


@flow(name="work-order", flow_run_name="{work_order.id} / work order", log_prints=True)
def work_order_flow(
    work_order: WorkOrder,
    registry_uri: str | None = None,
    sync_interval_seconds: float = Field(default=15, ge=1, le=3600),
    max_wait_seconds: float = Field(default=3600, ge=10),
    approval_timeout_seconds: int = Field(default=3600, ge=60),
) -> DeliveryResult:
    """Run a work order end to end on Kazi's partner sites."""
    logger = get_run_logger()
    progress = StageProgress(work_order)
    ingest = ingest_flow(work_order)
    progress.done("ingest")
    split_flow(work_order, ingest, registry_uri=registry_uri)
    progress.done("split")
    qa: QAResult | None = None
    for round_number in range(work_order.qa.max_rework_rounds + 1):
        annotate = wait_for_annotations(work_order, registry_uri, sync_interval_seconds, max_wait_seconds)
        progress.done("annotate")
        qa = qa_flow(work_order, annotate, round_number=round_number, registry_uri=registry_uri)
        if qa.rework_items == 0 or round_number == work_order.qa.max_rework_rounds:
            break
        logger.info("%s: %d items go to rework round %d", work_order.id, qa.rework_items, round_number + 1)
        rework_flow(work_order, qa, round_number=round_number + 1, registry_uri=registry_uri)
    assert qa is not None
    progress.done("qa")
    if not qa.passed:
        create_markdown_artifact(
            key=f"{work_order.id}-qa-gate",
            markdown=f"## QA gate: validation failed for {work_order.id}\n\nRead the [QA report]({qa.report_uri}) "
            "and resume this run with your decision (approve or reject, with a comment).",
        )
        decision = pause_flow_run(wait_for_input=QAApproval, timeout=approval_timeout_seconds)
        qa = record_decision(qa, decision)
        if not decision.approve:
            raise RuntimeError(
                f"{work_order.id}: delivery rejected by {decision.reviewer}: {decision.comment.rstrip('.')}. Fix "
                "what the QA report shows, then rerun the work order: it repeats nothing that is done and stops "
                "at the QA gate again."
            )
    delivery = deliver_flow(work_order, qa)
    progress.done("deliver")
    settings = load_settings()
    impact_url = ObjectStore(settings).presign_get(*parse_uri(delivery.impact_report_uri))
    create_markdown_artifact(
        key=f"{work_order.id}-summary",
        markdown=summary_markdown(work_order, qa, delivery, impact_url),
        description=f"What {work_order.id} delivered, and its reports",
    )
    return delivery


tune_gc_after_imports()  # this module's imports are done: see flows.core.startup
