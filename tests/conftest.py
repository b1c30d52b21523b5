"""Test harness: one marker per test, and the real local stack for tests that need services.

Tests run against their own stack (``.state/test``, ports from 28300) so they never touch a
developer's stack. The session starts it if it is not running (and stops it afterwards if it started
it); a missing service is a failure, never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    prefect_home = Path(os.environ["KAZI_STACK_DIR"]) / "prefect-client"
    prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect warns at import when it cannot create it
    mp.setenv("PREFECT_HOME", str(prefect_home))
    mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mp.setenv("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A stack started for tests that then never asked for it (interrupted early) is stopped again."""
    proc = _STACK.pop("proc", None)
    if proc is not None:
        proc.wait()
        if os.environ.get("KAZI_TEST_KEEP_STACK") != "1":
            from flows.core.settings import load_settings
            from flows.stack.services import LocalStack

            LocalStack(load_settings()).down()


def pytest_unconfigure(config: pytest.Config) -> None:
    mp = getattr(config, "_kazi_env", None)
    if mp is not None:
        mp.undo()


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected: only the tests that will run count
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
    # Unit tests first (in their order), while the stack starts in the background for the rest.
    items[:] = sorted(items, key=lambda item: 0 if item.get_closest_marker("unit") else 1)
    if not config.option.collectonly and any(not item.get_closest_marker("unit") for item in items):
        _start_stack()


_STACK: dict[str, Any] = {}


def _start_stack() -> None:
    """Start the test stack unless it runs: ``kazi stack up`` in a subprocess, which the ``stack_settings``
    fixture waits for. Started at collection, it comes up (about a minute and a half on a fresh clone,
    most of it Label Studio's first set-up) while the unit tests run. A subprocess, not a thread: its
    environment is fixed now, whatever the unit tests set in this process meanwhile."""
    from flows.core.settings import load_settings
    from flows.stack.services import LocalStack

    settings = load_settings()
    _STACK["was_running"] = all(s.running for s in LocalStack(settings).status())
    if _STACK["was_running"]:
        return
    log = settings.stack_dir / "test-stack-up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    _STACK["log"] = log
    with log.open("wb") as out:
        _STACK["proc"] = subprocess.Popen(
            [str(Path(sys.executable).with_name("kazi")), "stack", "up"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="session")
def stack_settings():  # type: ignore[no-untyped-def]
    """Settings of the running test stack; starts it for this session when it is not up."""
    from flows.core.s3 import ObjectStore
    from flows.core.settings import load_settings
    from flows.stack.services import LocalStack

    settings = load_settings()
    stack = LocalStack(settings)
    if "was_running" not in _STACK:
        _start_stack()
    proc = _STACK.pop("proc", None)
    if proc is not None and proc.wait() != 0:
        from flows.stack.process import tail

        pytest.fail(f"the test stack did not start (kazi stack up exited {proc.returncode}):\n{tail(_STACK['log'])}")
    was_running = _STACK["was_running"]
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
