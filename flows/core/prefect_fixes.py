"""Runtime fixes to the pinned Prefect (3.8.8), each measured, each checked by a test so an upgrade that
changes what it touches fails loudly instead of silently.

**Flow-run heartbeats no longer hold every flow run's end for up to a second.** Prefect 3.8 sends a
heartbeat for every flow run from a thread that sleeps in one-second steps (heartbeats are on by default,
every 180 s) and, in the synchronous engine, *joins* that thread when the run ends: the run's final state
waited for the thread's current sleep to end. Measured on an ingest of 50,000 rows: 0.62-0.75 s from the
flow function's return to ``Finished``, 0.04 s without the join. Every flow and subflow of a work order
paid it, and every flow run of the tests. Prefect's asynchronous engine already leaves the thread
unjoined (``join_on_exit=False``); this makes the synchronous engine do the same. Heartbeats are still
sent while the run lives, and the thread sees the stop event within a second and ends on its own (it is a
daemon thread, and emits nothing once the run's state is final).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import prefect.flow_engine as _engine

_original = _engine._send_heartbeats


@contextlib.contextmanager
def _send_heartbeats_unjoined(engine: Any, join_on_exit: bool = True) -> Generator[None, None, None]:
    with _original(engine, join_on_exit=False):
        yield


def apply() -> None:
    """Install the fixes (idempotent). Every module that defines a flow imports this module, which
    applies them."""
    if getattr(_engine._send_heartbeats, "__wrapped_by_kazi__", False):
        return
    _send_heartbeats_unjoined.__wrapped_by_kazi__ = True  # type: ignore[attr-defined]
    _engine._send_heartbeats = _send_heartbeats_unjoined


apply()
