"""The QA gate as people meet it: ``kazi run`` starts a work order on the work pool, QA fails, the run
waits for a QA lead, who first rejects and then, on a second run, approves; ``kazi status`` tells the story.

The work order asks for an agreement no crowd with spammers reaches, with no rework rounds, so its QA
validation fails on purpose. Runs go through the ``work-order`` deployment and the stack's worker process;
the simulated workforce answers in this process meanwhile.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

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


def only_active_run(work_order_id: str) -> Any:
    from flows.run import active_runs

    runs = active_runs(work_order_id)
    assert len(runs) == 1, runs
    return runs[0]


def test_qa_lead_rejects_then_approves_a_failed_work_order(stack_settings, store, tmp_path: Path, capsys) -> None:
    from prefect.flow_runs import resume_flow_run

    from flows.cli import main
    from flows.core.labelstudio import LabelStudioClient
    from flows.core.models import DeliveryResult, QAResult, QAThresholds, TaskType
    from flows.core.workspace import read_json, read_model, read_model_or_none, workspace
    from simulation.demo import LOCAL_SITES, Workforce, prepare_work_order

    wo_id = f"gate-{uuid.uuid4().hex[:8]}"
    registry, dataset, base = prepare_work_order(
        stack_settings, store, TaskType.IMAGE_CLASSIFICATION, 30, wo_id, seed=5
    )
    work_order = base.model_copy(
        update={"qa": QAThresholds(min_confidence=0.7, min_gold_accuracy=0.7, min_agreement=0.99, max_rework_rounds=0)}
    )
    path = tmp_path / f"{wo_id}.yaml"
    path.write_text(work_order.to_yaml())
    ws = workspace(stack_settings, work_order)

    def projects() -> list[int]:
        ids = []
        for site in registry.sites:
            if site.id in LOCAL_SITES:
                client = LabelStudioClient.for_site(site, stack_settings)
                ids += [p.id for p in client.projects() if p.key and p.key.startswith(f"{wo_id}--")]
        return sorted(ids)

    workforce = Workforce(stack_settings, registry, dataset, work_order)
    workforce.start()
    try:
        # A data engineer starts the work order from a terminal; QA fails and the run waits for a QA lead.
        assert main(["run", str(path), "--no-stack", "--no-wait", "--sync-every", "2"]) == 0
        first = only_active_run(wo_id)
        # Starting it again by mistake while it runs is refused, naming the run.
        assert main(["run", str(path), "--no-stack", "--no-wait", "--sync-every", "2"]) == 1
        assert str(first.id) in capsys.readouterr().err
        wait_for_state(first.id, {"PAUSED"})
        failed = read_model(store, ws.uri("qa", "result.json"), QAResult)
        assert failed.passed is False and failed.approved is None
        # The QA lead rejects: the run fails with the reason and nothing is delivered.
        resume_flow_run(first.id, run_input={"approve": False, "reviewer": REVIEWER, "comment": "Agreement too low."})
        with pytest.raises(AssertionError, match=r"ended as FAILED.*rejected by Amina Njeri: Agreement too low"):
            wait_for_state(first.id, {"COMPLETED"})
        rejected = read_json(store, ws.uri("qa", "round=0", "decision.json"))
        assert rejected["approve"] is False and rejected["reviewer"] == REVIEWER
        assert read_model_or_none(store, ws.uri("deliver", "result.json"), DeliveryResult) is None
        made = projects()

        # After talking to the client, a second run reaches the gate again and the QA lead approves.
        assert main(["run", str(path), "--no-stack", "--no-wait", "--sync-every", "2"]) == 0
        second = only_active_run(wo_id)
        assert second.id != first.id
        wait_for_state(second.id, {"PAUSED"})
        resume_flow_run(
            second.id, run_input={"approve": True, "reviewer": REVIEWER, "comment": "Client accepts 0.9 agreement."}
        )
        wait_for_state(second.id, {"COMPLETED"})
    finally:
        workforce.stop.set()
        workforce.join(timeout=30)
    assert workforce.error is None
    # The rerun created no project twice.
    assert projects() == made
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
    assert "Failed" in out and "Completed" in out  # both runs are listed
    assert "Next: delivered: nothing left to do" in out
