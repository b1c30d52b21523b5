"""Starting a work order on the work pool and following it, as ``kazi run`` and the demo do.

A work order runs as the ``work-order`` deployment, so it runs on a worker of the work pool exactly as a
run started from the Prefect UI does; this module only submits it and watches its state.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flows.core.models import WorkOrder
from flows.core.s3 import ObjectStore
from flows.core.settings import Settings
from flows.core.workspace import workspace

WORK_ORDER_DEPLOYMENT = "work-order/work-order"
ACTIVE = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED"}


class RunError(Exception):
    """The run could not be started or followed; the message says what to do."""


@dataclass(frozen=True)
class StartedRun:
    id: uuid.UUID
    url: str


def ui_base(settings: Settings) -> str:
    return (settings.prefect_api_url or "").removesuffix("/api")


def ensure_deployments(settings: Settings) -> None:
    """Register the deployments when the work-order deployment is missing (a fresh Prefect server)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.deployments import register

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(WORK_ORDER_DEPLOYMENT)
            return
        except ObjectNotFound:
            pass
    register(settings)


def work_order_tag(work_order_id: str) -> str:
    return f"work-order:{work_order_id}"


def active_runs(work_order_id: str) -> list[Any]:
    """Work-order runs of this work order that have not finished.

    A run is found by its tag (runs started here carry one) or by its name (a run started from the UI is
    named after its work order once it starts).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in ACTIVE]))
    found: dict[uuid.UUID, Any] = {}
    with get_client(sync_client=True) as client:
        for flow_run_filter in (
            FlowRunFilter(name=FlowRunFilterName(any_=[f"{work_order_id} / work order"]), state=state),
            FlowRunFilter(tags=FlowRunFilterTags(all_=[work_order_tag(work_order_id)]), state=state),
        ):
            found.update((r.id, r) for r in client.read_flow_runs(flow_run_filter=flow_run_filter))
    return list(found.values())


def start_work_order(
    settings: Settings,
    work_order: WorkOrder,
    *,
    registry_uri: str | None = None,
    again: bool = False,
    **parameters: Any,
) -> StartedRun:
    """Save the work order in its workspace and start the ``work-order`` deployment for it.

    Args:
        settings: Where S3 and Prefect are.
        work_order: The work order; also saved as ``work_order.yaml`` in the workspace.
        registry_uri: The partner registry (default: the workspace's).
        again: Start even when a run of this work order is under way (every stage is idempotent, so a
            second run repeats nothing that is done, but it is rarely what was meant).
        parameters: Other parameters of the work-order flow (``sync_interval_seconds`` ...).

    Raises:
        RunError: A run of this work order is already under way.
    """
    from prefect.deployments import run_deployment

    running = [] if again else active_runs(work_order.id)
    if running:
        urls = ", ".join(f"{ui_base(settings)}/runs/flow-run/{r.id}" for r in running)
        raise RunError(
            f"work order {work_order.id} is already running ({urls}); follow it with `kazi status {work_order.id}`, "
            "or pass --again to start another run."
        )
    ensure_deployments(settings)
    ws = workspace(settings, work_order)
    ObjectStore(settings).put_bytes(ws.bucket, ws.key("work_order.yaml"), work_order.to_yaml().encode())
    params: dict[str, Any] = {"work_order": work_order.model_dump(mode="json"), **parameters}
    if registry_uri:
        params["registry_uri"] = registry_uri
    flow_run = run_deployment(
        WORK_ORDER_DEPLOYMENT,
        parameters=params,
        timeout=0,
        flow_run_name=f"{work_order.id} / work order",
        tags=[work_order_tag(work_order.id)],
    )
    return StartedRun(id=flow_run.id, url=f"{ui_base(settings)}/runs/flow-run/{flow_run.id}")  # type: ignore[union-attr]


def follow(
    settings: Settings,
    work_order_id: str,
    flow_run_id: uuid.UUID,
    *,
    timeout_seconds: float,
    poll_seconds: float = 3.0,
    say: Callable[[str], None] = print,
    extra: Callable[[], str] = lambda: "",
) -> str:
    """Print the run's state and its stages as they change until it ends; returns the final state type.

    ``extra`` adds a note to each line (the demo shows its simulated workforce's answers there). A paused
    run (the QA gate) is announced once with what the QA lead has to do; following goes on until the
    run ends or ``timeout_seconds`` pass (then ``"TIMED_OUT"``; the run itself goes on).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    deadline = time.monotonic() + timeout_seconds
    last: dict[str, str] = {}
    announced_pause = False
    url = f"{ui_base(settings)}/runs/flow-run/{flow_run_id}"
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(flow_run_id)
            state = run.state.type.value if run.state else "PENDING"
            stages = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"{work_order_id} /")),
            )
            for stage in sorted(stages, key=lambda r: str(r.created)):
                if stage.id == run.id or (stage.created and run.created and stage.created < run.created):
                    continue  # the run itself, or a stage of an earlier run
                name = stage.name.split(" / ", 1)[-1]
                stage_state = (stage.state.name if stage.state else None) or "Pending"
                if last.get(str(stage.id)) != stage_state:
                    last[str(stage.id)] = stage_state
                    say(f"  {time.strftime('%H:%M:%S')}  {name:24} {stage_state.lower()}")
            note = extra()
            line = f"work order {state.lower()}" + (f" ({note})" if note else "")
            if last.get("run") != line:
                last["run"] = line
                say(f"  {time.strftime('%H:%M:%S')}  {line}")
            if state == "PAUSED" and not announced_pause:
                announced_pause = True
                say(
                    f"  QA validation failed: a QA lead reads the QA report (kazi status {work_order_id}) and "
                    f"approves or rejects with a comment in the Prefect UI: {url} -> Resume."
                )
            if run.state and run.state.is_final():
                return state
            time.sleep(poll_seconds)
    return "TIMED_OUT"
