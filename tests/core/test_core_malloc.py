"""flows.core.malloc: glibc's thresholds are set where there is a glibc, and nothing breaks elsewhere."""

from __future__ import annotations

import ctypes
import sys

import pytest

from flows.core import malloc

pytestmark = pytest.mark.unit


def test_the_thresholds_are_set_on_linux_and_setting_them_again_is_harmless() -> None:
    assert malloc.bound_heap_growth() is True
    assert malloc.bound_heap_growth() is True


def test_without_a_c_library_with_mallopt_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")

    def no_libc(name: str) -> ctypes.CDLL:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert malloc.bound_heap_growth() is False
    monkeypatch.setattr(sys, "platform", "darwin")
    assert malloc.bound_heap_growth() is False
