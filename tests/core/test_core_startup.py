"""The collector after a flow's imports: young collections less often, imported objects frozen once per batch
of imports, later garbage still collected."""

from __future__ import annotations

import gc
import sys
import types
import weakref
from collections.abc import Iterator

import pytest

from flows.core import startup

pytestmark = pytest.mark.unit


@pytest.fixture
def clean_freeze(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(startup, "_modules_when_frozen", 0)
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()  # give the test process's objects back to the collector
    gc.set_threshold(*threshold)


def test_freezes_what_is_alive_and_only_again_after_new_imports(
    clean_freeze: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    assert startup.tune_gc_after_imports() is True
    assert gc.get_threshold() == (startup.YOUNG_COLLECTION, 10, 10)
    frozen = gc.get_freeze_count()
    assert frozen > 1_000  # every object of the modules imported so far
    assert startup.tune_gc_after_imports() is False  # nothing imported since: nothing more frozen
    assert gc.get_freeze_count() == frozen

    monkeypatch.setitem(sys.modules, "kazi_test_new_module", types.ModuleType("kazi_test_new_module"))
    kept = [[] for _ in range(10)]  # lists are tracked by the collector
    assert startup.tune_gc_after_imports() is True
    assert gc.get_freeze_count() >= frozen + len(kept)


def test_objects_made_after_the_freeze_are_still_collected(clean_freeze: None) -> None:
    startup.tune_gc_after_imports()

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the cyclic collector frees it

    ref = weakref.ref(Node())
    gc.collect()
    assert ref() is None
