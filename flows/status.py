"""A work order's status as a data engineer reads it in a terminal (``kazi status WO``).

Everything comes from where Kazi keeps its state: each stage's ``result.json`` and the annotate stage's
``status.parquet`` in the workspace, and the work order's flow runs in Prefect. Nothing here changes state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from flows.annotate.progress import progress_bar
from flows.core.models import AnnotateResult, DeliveryResult, IngestResult, QAResult, SplitResult
from flows.core.s3 import ObjectNotFound, ObjectStore
from flows.core.settings import Settings
from flows.core.workspace import read_model_or_none, read_table, workspace

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

STAGES = ("ingest", "split", "annotate", "qa", "deliver")


@dataclass(frozen=True)
class RunLine:
    name: str
    state: str
    started: datetime | None
    url: str
    #: Why it failed, for a failed run.
    message: str = ""


@dataclass
class WorkOrderStatus:
    """What each stage left in the workspace, plus the work order's flow runs."""

    work_order_id: str
    ingest: IngestResult | None = None
    split: SplitResult | None = None
    annotate: AnnotateResult | None = None
    qa: QAResult | None = None
    deliver: DeliveryResult | None = None
    #: Per site: tasks done and total, from ``annotate/status.parquet``.
    site_progress: pd.DataFrame | None = None
    qa_report_url: str | None = None
    #: The work order's runs, newest first, and the stage runs of the newest.
    runs: list[RunLine] = field(default_factory=list)
    stages: list[RunLine] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return any(getattr(self, s) is not None for s in STAGES)

    @property
    def next_step(self) -> str:
        """What happens next, judged from the furthest stage that has run."""
        if self.deliver is not None:
            return "delivered: nothing left to do"
        if self.qa is not None:
            if not self.qa.passed and self.qa.approved is False:
                return "the QA lead rejected the delivery: fix what the QA report shows, then rerun the work order"
            if not self.qa.passed and self.qa.approved is not True:
                return "a QA lead reads the QA report and approves or rejects in the paused run (Prefect UI: Resume)"
            return "run the deliver deployment"
        if self.annotate is not None:
            if not self.annotate.done:
                return "partner sites are annotating; the work-order run re-syncs on its schedule"
            return "run the qa deployment"
        if self.split is not None:
            return "partner sites start annotating; the work-order run syncs their answers"
        if self.ingest is not None:
            return "rerun the split deployment for this work order"
        return "run the work order: kazi run WORK_ORDER.yaml"


def collect(settings: Settings, work_order_id: str, *, with_runs: bool = True) -> WorkOrderStatus:
    """Read the work order's stage results (and, with ``with_runs``, its Prefect flow runs)."""
    store = ObjectStore(settings)
    ws = workspace(settings, work_order_id)
    status = WorkOrderStatus(work_order_id=work_order_id)
    kinds: dict[str, type[Any]] = {
        "ingest": IngestResult,
        "split": SplitResult,
        "annotate": AnnotateResult,
        "qa": QAResult,
        "deliver": DeliveryResult,
    }
    for stage, cls in kinds.items():
        setattr(status, stage, read_model_or_none(store, ws.uri(stage, "result.json"), cls))
    if status.annotate is not None:
        try:
            table = read_table(store, status.annotate.status_uri).to_pandas()
            status.site_progress = (
                table.groupby("site_id")[["tasks_done", "tasks_total"]].sum().sort_index().reset_index()
            )
        except ObjectNotFound:
            status.site_progress = None
    if status.qa is not None:
        # The link in the result may have expired: sign a fresh one.
        status.qa_report_url = store.presign_get(settings.workspace_bucket, status.qa.report_key)
    if with_runs and settings.prefect_api_url:
        status.runs, status.stages = flow_runs(settings, work_order_id)
    return status


def flow_runs(settings: Settings, work_order_id: str, limit: int = 5) -> tuple[list[RunLine], list[RunLine]]:
    """The work order's latest runs, and the stage runs of the newest one (all named ``<id> / <stage>``)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, FlowRunFilterStartTime
    from prefect.client.schemas.sorting import FlowRunSort

    base = (settings.prefect_api_url or "").removesuffix("/api")

    def line(r: FlowRun) -> RunLine:
        state = (r.state.name if r.state else None) or "Pending"
        message = (r.state.message or "") if r.state and r.state.is_failed() else ""
        return RunLine(r.name, state, r.start_time, f"{base}/runs/flow-run/{r.id}", message)

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"{work_order_id} / work order"])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=limit,
        )
        stages: list[FlowRun] = []
        if runs and runs[0].start_time:
            stages = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(like_=f"{work_order_id} /"),
                    start_time=FlowRunFilterStartTime(after_=runs[0].start_time),
                ),
                sort=FlowRunSort.START_TIME_ASC,
            )
    return [line(r) for r in runs], [line(r) for r in stages if r.id != runs[0].id]


def render(status: WorkOrderStatus) -> str:
    """Plain text, one line per stage, for a terminal."""
    s = status
    if not s.found and not s.runs:
        return f"No work order {s.work_order_id!r} in the workspace and no flow runs for it. Next: {s.next_step}."
    lines = [f"Work order {s.work_order_id}", ""]
    lines.append("  ingest    " + (_ingest(s.ingest) if s.ingest else "not run"))
    lines.append("  split     " + (_split(s.split) if s.split else "not run"))
    lines.append("  annotate  " + (_annotate(s) if s.annotate else "not run"))
    lines.append("  qa        " + (_qa(s.qa, s.qa_report_url) if s.qa else "not run"))
    lines.append("  deliver   " + (_deliver(s.deliver) if s.deliver else "not run"))
    if s.runs:
        lines += ["", "  Runs of this work order (newest first):"]
        lines += [_run_line(r, r.name) for r in s.runs]
    if s.stages:
        lines += ["", "  Stages of the newest run:"]
        lines += [_run_line(r, r.name.split(" / ", 1)[-1]) for r in s.stages]
    lines += ["", f"  Next: {s.next_step}"]
    return "\n".join(lines)


def _run_line(r: RunLine, label: str) -> str:
    when = f"{r.started:%Y-%m-%d %H:%M} UTC" if r.started else "not started"
    text = f"    {label:26} {r.state:10} {when:20}  {r.url}"
    if r.message:
        text += f"\n      {r.message}"
    return text


def _ingest(r: IngestResult) -> str:
    return (
        f"{r.rows_read:,} rows read = {r.accepted:,} accepted + {r.quarantined:,} quarantined + "
        f"{r.duplicates:,} duplicates ({r.files_quarantined} files quarantined; version {r.ingest_version[:12]})"
    )


def _split(r: SplitResult) -> str:
    text = (
        f"{r.batches:,} batches, {r.tasks:,} tasks ({r.gold_tasks:,} gold) in {len(r.projects)} Label Studio "
        f"projects at {', '.join(r.sites_used) or 'no site'}"
    )
    if r.sites_passed_over:
        text += "; passed over: " + "; ".join(f"{site} ({why})" for site, why in sorted(r.sites_passed_over.items()))
    return text


def _annotate(s: WorkOrderStatus) -> str:
    r = s.annotate
    assert r is not None
    text = f"{'done' if r.done else 'in progress'}: {r.annotations:,} answers"
    if s.site_progress is not None and len(s.site_progress):
        done, total = int(s.site_progress["tasks_done"].sum()), int(s.site_progress["tasks_total"].sum())
        text += f"; tasks {_bar(done, total)}"
        for row in s.site_progress.itertuples():
            text += f"\n            {row.site_id:12} {_bar(int(row.tasks_done), int(row.tasks_total))}"
    if r.moved_batches:
        text += f"\n            moved to another site: {', '.join(r.moved_batches)}"
    return text


def _bar(done: int, total: int) -> str:
    percent = 100.0 * done / total if total else 0.0
    return f"{progress_bar(percent)} {done:,}/{total:,} ({percent:.0f}%)"


def _qa(r: QAResult, report_url: str | None) -> str:
    if r.passed:
        verdict = "passed"
    elif r.approved is True:
        verdict = f"failed, approved by {r.approved_by}: {r.approval_comment}"
    elif r.approved is False:
        verdict = f"failed, rejected by {r.approved_by}: {r.approval_comment}"
    else:
        verdict = "FAILED, waiting for a QA lead"
    text = f"round {r.round_number}: {verdict}; {r.items:,} items, {r.rework_items:,} sent to rework"
    if r.gold_accuracy is not None:
        text += f", gold accuracy {r.gold_accuracy:.0%}"
    if r.agreement is not None:
        text += f", agreement (alpha) {r.agreement:.2f}"
    if r.excluded_annotators:
        n = len(r.excluded_annotators)
        text += f", {n} annotator{'s' if n != 1 else ''} excluded"
    if report_url:
        text += f"\n            QA report   {report_url}"
    if r.data_docs_uri:
        text += f"\n            Data Docs   {r.data_docs_uri}"
    return text


def _deliver(r: DeliveryResult) -> str:
    return f"{r.delivered_items:,} items in {r.files} files (version {r.version}): {r.manifest_uri}"
