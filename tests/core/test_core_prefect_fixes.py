"""The runtime fixes to Prefect (:mod:`flows.core.prefect_fixes`) act through the real engine and server."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import prefect.flow_engine as engine
import pytest
from prefect import flow

from flows.core import prefect_fixes

pytestmark = pytest.mark.prefect


def test_a_flow_run_sends_heartbeats_without_joining_their_thread_at_its_end(
    stack_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    joins: list[bool] = []
    real = prefect_fixes._original

    @contextlib.contextmanager
    def spy(run_engine: Any, join_on_exit: bool = True) -> Generator[None, None, None]:
        joins.append(join_on_exit)
        with real(run_engine, join_on_exit=join_on_exit):
            yield

    monkeypatch.setattr(prefect_fixes, "_original", spy)

    @flow(name="heartbeat-check")
    def outer() -> int:
        return inner() + 1

    @flow(name="heartbeat-check-inner")
    def inner() -> int:
        return 1

    assert outer() == 2
    # Both runs (the flow and its subflow) had their heartbeats, and neither waited for the thread.
    assert joins == [False, False]
    assert engine._send_heartbeats is prefect_fixes._send_heartbeats_unjoined


def test_applying_twice_wraps_once() -> None:
    prefect_fixes.apply()
    prefect_fixes.apply()
    assert engine._send_heartbeats is prefect_fixes._send_heartbeats_unjoined
    assert prefect_fixes._original is not prefect_fixes._send_heartbeats_unjoined
