"""The QA gate as people meet it: ``kazi run`` starts a work order on the work pool, QA fails, the run
waits for a QA lead, who approves in the paused run; ``kazi status`` tells the story. A rejection, in-process
with the stages stubbed, fails the run and delivers nothing.

The work order asks for an agreement no crowd with spammers reaches, with no rework rounds, so its QA
validation fails on purpose. The ``gate_run`` fixture (tests/conftest.py) starts it with ``kazi run``, as
early as the browser test, so that both end-to-end runs share the worker's time. Runs go through the
``work-order`` deployment and the stack's worker process; the simulated workforce answers in this process
meanwhile.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

REVIEWER = "Amina Njeri"


def wait_for_state(run_id: Any, states: set[str], timeout: float = 420) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state and run.state.type.value in states:
                return run
            if run.state and run.state.is_final():
                raise AssertionError(f"run ended as {run.state.type.value}: {run.state.message}")
            time.sleep(2)
    raise AssertionError(f"run {run_id} did not reach {states} in {timeout} s")


def resume_with_decision(run_id: Any, decision: dict[str, Any], timeout: float = 60) -> None:
    """Resume a run paused at the QA gate with a QA lead's decision, once it can take one.

    Prefect sets the run PAUSED first and saves the decision's form (the input schema) just after; a
    decision sent in between is refused ("Run input schema not found"). A QA lead, in the UI, gets the form
    only once it is saved: wait for it as well.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        assert state is not None and state.is_paused(), state
        keyset = state.state_details.run_input_keyset
        assert keyset, "the run paused without asking for a decision"
        while True:
            try:
                client.read_flow_run_input(run_id, keyset["schema"])
                break
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
    resume_flow_run(run_id, run_input=decision)


def only_active_run(work_order_id: str) -> Any:
    from flows.run import active_runs

    runs = active_runs(work_order_id)
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.e2e
def test_qa_lead_approves_a_failed_work_order_in_the_paused_run(gate_run, stack_settings, store, capsys) -> None:
    from flows.cli import main
    from flows.core.models import DeliveryResult, QAResult
    from flows.core.workspace import read_json, read_model, read_model_or_none, workspace

    # `kazi run` started the work order (the gate_run fixture, so that it runs beside the browser test's).
    work_order, workforce = gate_run.work_order, gate_run.workforce
    wo_id = work_order.id
    ws = workspace(stack_settings, work_order)
    assert gate_run.started_exit == 0
    first = only_active_run(wo_id)
    # Starting it again by mistake while it runs is refused, naming the run.
    capsys.readouterr()
    assert main(["run", str(gate_run.path), "--no-stack", "--no-wait", "--sync-every", "2"]) == 1
    assert str(first.id) in capsys.readouterr().err
    # QA fails and the run waits for a QA lead.
    wait_for_state(first.id, {"PAUSED"})
    failed = read_model(store, ws.uri("qa", "result.json"), QAResult)
    assert failed.passed is False and failed.approved is None
    assert read_model_or_none(store, ws.uri("deliver", "result.json"), DeliveryResult) is None
    # The QA lead reads the report and approves, with a comment: the run delivers.
    resume_with_decision(first.id, {"approve": True, "reviewer": REVIEWER, "comment": "Client accepts 0.9 agreement."})
    wait_for_state(first.id, {"COMPLETED"})
    workforce.stop.set()
    workforce.join(timeout=30)
    assert workforce.error is None
    delivery = read_model(store, ws.uri("deliver", "result.json"), DeliveryResult)
    manifest = read_json(store, delivery.manifest_uri)
    assert manifest["qa"]["approved"] is True
    assert manifest["qa"]["approved_by"] == REVIEWER
    assert manifest["qa"]["approval_comment"] == "Client accepts 0.9 agreement."
    recorded = read_model(store, ws.uri("qa", "result.json"), QAResult)
    assert recorded.approved is True and recorded.approved_by == REVIEWER

    # `kazi status` tells the whole story in a terminal.
    capsys.readouterr()
    assert main(["status", wo_id]) == 0
    out = capsys.readouterr().out
    assert f"approved by {REVIEWER}: Client accepts 0.9 agreement." in out
    assert f"{delivery.delivered_items:,} items in {delivery.files} files" in out
    assert f"{wo_id} / work order" in out and "Completed" in out
    assert "Next: delivered: nothing left to do" in out


@pytest.mark.prefect
def test_a_rejection_fails_the_run_records_the_decision_and_delivers_nothing(
    stack_settings, store, monkeypatch
) -> None:
    import threading

    import flows.work_order as work_order_module
    from flows.core.models import AnnotateResult, QAResult, TaskType
    from flows.core.workspace import read_json, read_model, workspace
    from simulation.datasets import sample_dataset
    from simulation.demo import make_work_order

    wo_id = f"reject-{uuid.uuid4().hex[:8]}"
    work_order = make_work_order(
        wo_id, sample_dataset(TaskType.IMAGE_CLASSIFICATION, 5, seed=1), "s3://acme-data/x/", "s3://acme-data/g.jsonl"
    )
    ws = workspace(stack_settings, work_order)
    failed = QAResult(
        work_order_id=wo_id,
        results_uri=ws.uri("qa", "results.parquet"),
        report_uri="https://report",
        report_key=ws.key("qa", "report.html"),
        validation_uri=ws.uri("qa", "validation.json"),
        data_docs_uri=None,
        passed=False,
        items=5,
        rework_items=0,
    )
    annotated = AnnotateResult(
        work_order_id=wo_id, log_uri="s3://w/l", status_uri="s3://w/s", annotations=15, new_annotations=0, done=True
    )
    # The stages are stubbed: this test is about the gate, which the real-stages test above also passes through.
    monkeypatch.setattr(work_order_module, "ingest_flow", lambda wo: None)
    monkeypatch.setattr(work_order_module, "split_flow", lambda wo, ingest, registry_uri=None: None)
    monkeypatch.setattr(work_order_module, "annotate_flow", lambda wo, registry_uri=None: annotated)
    monkeypatch.setattr(work_order_module, "qa_flow", lambda wo, a, round_number, registry_uri=None: failed)

    def deliver(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a rejected work order must not be delivered")

    monkeypatch.setattr(work_order_module, "deliver_flow", deliver)

    def qa_lead() -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"{wo_id} / work order"]))
                )
                if runs and runs[0].state and runs[0].state.is_paused():
                    resume_with_decision(runs[0].id, {"approve": False, "reviewer": REVIEWER, "comment": "No."})
                    return
                time.sleep(0.5)

    lead = threading.Thread(target=qa_lead, daemon=True)
    lead.start()
    with pytest.raises(RuntimeError, match=r"delivery rejected by Amina Njeri: No\. Fix what the QA report shows"):
        # A pause that no decision reaches (the QA lead's thread failed) ends in 5 minutes, not the default hour.
        work_order_module.work_order_flow(work_order, sync_interval_seconds=1, approval_timeout_seconds=300)
    lead.join(timeout=5)
    decision = read_json(store, ws.uri("qa", "round=0", "decision.json"))
    assert decision["approve"] is False and decision["reviewer"] == REVIEWER and decision["comment"] == "No."
    recorded = read_model(store, ws.uri("qa", "result.json"), QAResult)
    assert recorded.approved is False and recorded.approved_by == REVIEWER
