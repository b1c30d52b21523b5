"""Test harness: one marker per test, and the real local stack for tests that need services.

Tests run against their own stack (``.state/test``, ports from 28300) so they never touch a
developer's stack. The session starts it if it is not running (and stops it afterwards if it started
it); a missing service is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SERVICE_MARKERS = {"s3", "labelstudio", "prefect", "e2e"}
ALL_MARKERS = {"unit"} | SERVICE_MARKERS
REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # Point every Kazi and Prefect client in this process at the test stack, before anything
    # imports Prefect (which reads its settings at import).
    mp = pytest.MonkeyPatch()
    config._kazi_env = mp  # type: ignore[attr-defined]
    defaults = {
        "KAZI_STACK_DIR": str(REPO / ".state" / "test"),
        "KAZI_STACK_PORT_BASE": "28300",
        "KAZI_LOCAL_STACK": "true",
    }
    for name, value in defaults.items():
        if name not in os.environ:
            mp.setenv(name, value)
    base = int(os.environ["KAZI_STACK_PORT_BASE"])
    mp.setenv("PREFECT_API_URL", f"http://127.0.0.1:{base}/api")
    mp.setenv("PREFECT_HOME", str(Path(os.environ["KAZI_STACK_DIR"]) / "prefect-client"))
    mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mp.setenv("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")


def pytest_unconfigure(config: pytest.Config) -> None:
    mp = getattr(config, "_kazi_env", None)
    if mp is not None:
        mp.undo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test carries exactly one marker saying what it needs."""
    bad = []
    for item in items:
        marks = {m.name for m in item.iter_markers()} & ALL_MARKERS
        if len(marks) != 1:
            bad.append(f"{item.nodeid}: {sorted(marks) or 'no marker'}")
    if bad:
        raise pytest.UsageError(
            "each test needs exactly one of the markers " + ", ".join(sorted(ALL_MARKERS)) + ":\n  " + "\n  ".join(bad)
        )


@pytest.fixture(scope="session")
def stack_settings():  # type: ignore[no-untyped-def]
    """Settings of the running test stack; starts it for this session when it is not up."""
    from flows.core.s3 import ObjectStore
    from flows.core.settings import load_settings
    from flows.stack.services import LocalStack

    settings = load_settings()
    stack = LocalStack(settings)
    was_running = all(s.running for s in stack.status())
    if not was_running:
        stack.up(progress=False)
    ObjectStore(settings).ensure_bucket(settings.workspace_bucket)
    yield settings
    if not was_running and os.environ.get("KAZI_TEST_KEEP_STACK") != "1":
        # Send Prefect's buffered run logs while the server still listens.
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        stack.down()


@pytest.fixture(scope="session")
def store(stack_settings):  # type: ignore[no-untyped-def]
    from flows.core.s3 import ObjectStore

    return ObjectStore(stack_settings)


@pytest.fixture
def s3_prefix(store, stack_settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A unique prefix in the workspace bucket for one test, deleted afterwards."""
    prefix = f"tests/{uuid.uuid4().hex[:12]}/"
    yield prefix
    store.delete_prefix(stack_settings.workspace_bucket, prefix)


@pytest.fixture
def ls_client(stack_settings):  # type: ignore[no-untyped-def]
    from flows.core.labelstudio import LabelStudioClient

    return LabelStudioClient.from_settings(stack_settings)


@pytest.fixture
def ls_cleanup(ls_client) -> Iterator[list[int]]:  # type: ignore[no-untyped-def]
    """Append project ids a test creates; they are deleted afterwards."""
    created: list[int] = []
    yield created
    for pid in created:
        ls_client.delete_project(pid)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class GateRun:
    """A work order started with ``kazi run`` whose QA cannot pass: it waits at the QA gate for a QA lead."""

    work_order: Any
    path: Path
    workforce: Any
    started_exit: int


@pytest.fixture(scope="session")
def gate_run(stack_settings, store, tmp_path_factory) -> Iterator[GateRun]:  # type: ignore[no-untyped-def]
    """Start the QA-gate work order of ``test_work_order_approval`` through the work pool, with its
    simulated workforce, and hand it over.

    The browser test asks for it too, before it starts its own run: the two end-to-end runs then go
    through the worker side by side instead of one after the other (each spends most of its time waiting
    for annotators and polls), which takes about half a minute off the suite. The approval test picks
    the run up wherever it is (usually already paused at the gate).
    """
    from flows.cli import main
    from flows.core.models import QAThresholds, TaskType
    from simulation.demo import Workforce, prepare_work_order

    wo_id = f"gate-{uuid.uuid4().hex[:8]}"
    registry, dataset, base = prepare_work_order(
        stack_settings, store, TaskType.IMAGE_CLASSIFICATION, 16, wo_id, seed=5
    )
    # An agreement no crowd with spammers reaches, and no rework rounds: QA validation fails on purpose.
    work_order = base.model_copy(
        update={"qa": QAThresholds(min_confidence=0.7, min_gold_accuracy=0.7, min_agreement=0.99, max_rework_rounds=0)}
    )
    path = tmp_path_factory.mktemp("gate") / f"{wo_id}.yaml"
    path.write_text(work_order.to_yaml())
    workforce = Workforce(stack_settings, registry, dataset, work_order)
    workforce.start()
    try:
        # A data engineer starts the work order from a terminal.
        started = main(["run", str(path), "--no-stack", "--no-wait", "--sync-every", "2"])
        yield GateRun(work_order, path, workforce, started)
    finally:
        workforce.stop.set()
        workforce.join(timeout=30)
