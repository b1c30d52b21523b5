"""``kazi run`` and ``kazi status`` without services: bad work orders and how a status reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from flows.core.models import AnnotateResult, DeliveryResult, IngestResult, QAResult, SplitResult
from flows.status import RunLine, WorkOrderStatus, render

pytestmark = pytest.mark.unit


def test_an_invalid_work_order_is_one_line_naming_the_file_and_fields(tmp_path: Path, capsys) -> None:
    path = tmp_path / "wo.yaml"
    path.write_text("id: acme-0042\nclient_id: acme\noverlapp: 3\n")
    assert main(["run", str(path), "--no-stack"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"kazi: error: {path} is not a valid work order:")
    assert "overlapp: Extra inputs are not permitted" in err
    assert "source: Field required" in err


def test_a_missing_work_order_file_says_so(tmp_path: Path, capsys) -> None:
    assert main(["run", str(tmp_path / "nope.yaml"), "--no-stack"]) == 2
    assert capsys.readouterr().err.strip() == f"kazi: error: {tmp_path / 'nope.yaml'}: no such file"


def _status(**over: object) -> WorkOrderStatus:
    s = WorkOrderStatus(work_order_id="acme-0042")
    for name, value in over.items():
        setattr(s, name, value)
    return s


INGEST = IngestResult(
    work_order_id="acme-0042",
    ingest_version="abcdef0123456789",
    items_uri="s3://ws/i/",
    quarantine_uri="s3://ws/q",
    duplicates_uri="s3://ws/d",
    manifest_uri="s3://ws/m",
    rows_read=1000,
    accepted=980,
    quarantined=12,
    duplicates=8,
    files_quarantined=1,
)
SPLIT = SplitResult(
    work_order_id="acme-0042",
    plan_uri="s3://ws/p",
    batches=3,
    tasks=3300,
    gold_tasks=300,
    projects={"a": 1, "b": 2, "c": 3},
    sites_used=["nairobi", "dadaab"],
    sites_passed_over={"haiti": "pays below the living wage"},
)
ANNOTATE = AnnotateResult(
    work_order_id="acme-0042",
    log_uri="s3://ws/l",
    status_uri="s3://ws/s",
    annotations=2000,
    new_annotations=5,
    done=False,
)
QA = QAResult(
    work_order_id="acme-0042",
    results_uri="s3://ws/r",
    report_uri="https://x",
    report_key="k",
    validation_uri="s3://ws/v",
    data_docs_uri="https://docs",
    passed=False,
    items=980,
    rework_items=40,
    excluded_annotators=["a1"],
    agreement=0.61,
    gold_accuracy=0.9,
)


def test_status_of_a_work_order_in_annotation() -> None:
    progress = pd.DataFrame({"site_id": ["dadaab", "nairobi"], "tasks_done": [500, 1500], "tasks_total": [1000, 2300]})
    text = render(_status(ingest=INGEST, split=SPLIT, annotate=ANNOTATE, site_progress=progress))
    assert "1,000 rows read = 980 accepted + 12 quarantined + 8 duplicates (1 files quarantined" in text
    assert "3 batches, 3,300 tasks (300 gold) in 3 Label Studio projects at nairobi, dadaab" in text
    assert "passed over: haiti (pays below the living wage)" in text
    assert "in progress: 2,000 answers; tasks ████████████░░░░░░░░ 2,000/3,300 (61%)" in text
    assert "dadaab       ██████████░░░░░░░░░░ 500/1,000 (50%)" in text
    assert "qa        not run" in text and "deliver   not run" in text
    assert text.endswith("Next: partner sites are annotating; the work-order run re-syncs on its schedule")


def test_status_at_the_qa_gate_and_after_delivery() -> None:
    waiting = render(_status(ingest=INGEST, split=SPLIT, annotate=ANNOTATE, qa=QA, qa_report_url="https://report"))
    assert "round 0: FAILED, waiting for a QA lead; 980 items, 40 sent to rework, gold accuracy 90%" in waiting
    assert "agreement (alpha) 0.61, 1 annotator excluded" in waiting
    assert "QA report   https://report" in waiting and "Data Docs   https://docs" in waiting
    assert "approves or rejects in the paused run" in waiting
    rejected = render(_status(ingest=INGEST, qa=QA.model_copy(update={"approved": False, "approved_by": "Amina"})))
    assert "failed, rejected by Amina" in rejected and "rerun the work order" in rejected
    delivered = DeliveryResult(
        work_order_id="acme-0042",
        version="v1",
        manifest_uri="s3://out/v1/manifest.json",
        files=5,
        delivered_items=940,
        impact_report_uri="s3://ws/impact.html",
    )
    run = RunLine("acme-0042 / work order", "Completed", datetime(2026, 11, 23, 4, 5, tzinfo=UTC), "http://ui/r/1")
    text = render(
        _status(ingest=INGEST, qa=QA.model_copy(update={"passed": True}), deliver=delivered, runs=[run], stages=[run])
    )
    assert "940 items in 5 files (version v1): s3://out/v1/manifest.json" in text
    assert "acme-0042 / work order     Completed  2026-11-23 04:05 UTC  http://ui/r/1" in text
    assert text.endswith("Next: delivered: nothing left to do")


def test_status_of_an_unknown_work_order_says_how_to_start_it() -> None:
    assert render(_status()) == (
        "No work order 'acme-0042' in the workspace and no flow runs for it. "
        "Next: run the work order: kazi run WORK_ORDER.yaml."
    )
