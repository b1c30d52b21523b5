"""Where the wall time of an in-process Prefect run goes: Kazi's own code, Prefect, or waiting.

Used by :mod:`bench.work_order_e2e`. The run is timed by wrapping, for its duration only:

- **Kazi bodies**: ``fn`` of every Prefect ``Task`` and ``Flow`` object found in the given modules (what
  Prefect's engine calls to run a task or flow);
- **Prefect, from Kazi's side**: every way Kazi's code hands control to Prefect: calling a task or flow
  (``Task.__call__``, ``Task.submit``, ``Task.map``, ``Flow.__call__``), waiting on a future
  (``PrefectConcurrentFuture.result`` / ``wait``, ``as_completed``), and the Prefect API calls Kazi makes
  from its bodies (artifacts, the annotate lock's ``concurrency`` and ``get_client``, Secret blocks through
  ``resolve_secret``). A module that imports a Prefect function this file does not know makes
  :func:`instrument` fail, so a new kind of call cannot silently count as Kazi's work;
- **waiting**: ``time.sleep`` of the parent flow between annotate passes (waiting for the annotators; the
  caller may make it return early when they are done), and ``pause_flow_run`` (waiting for a person).

Each thread keeps a stack of these frames. Kazi's code is *running* in a thread while the top of its stack
is a body, so a body's own time excludes everything it called in Prefect, and the child bodies those calls
ran are counted as their own. Then, over the run's wall interval ``[t0, t1]``:

- ``work`` = the length of the union over all threads of the intervals where Kazi's code runs (two sites
  pulled in parallel count once: this is wall time, not CPU time);
- ``waiting`` = the union of the waiting intervals, less any overlap with work;
- ``orchestration`` = ``wall - work - waiting``: every moment no Kazi code runs and nobody is waited for.
  That is the engine creating, proposing states for and finishing runs, validating parameters, the API
  calls above, and a body blocked on a future while the child's run is being set up or torn down.
  Orchestration that overlaps Kazi's work in another thread costs no wall time and is not counted;
- ``share`` = ``orchestration / (wall - waiting)``: the share of the time Kazi was not idle that went to
  Prefect. (Counting the waiting in the denominator would make the share smaller by idling more.)

The same measures are taken per stage: the stage's wall interval is the parent flow's call of it.
Time the engine spends in a worker thread of a stage (a submitted task's set-up) belongs to the stage it
falls in. CPU contention is not separated out: on a shared machine every share of the wall time, Kazi's
included, stretches with the load.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import types
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

Interval = tuple[float, float]
#: What a non-body frame is: a task or flow call, a wait on a future, a Prefect API call, or waiting.
Kind = Literal["run", "future", "api", "wait"]

#: Prefect functions Kazi's modules may import without handing control to Prefect at call time.
LOCAL_PREFECT = frozenset({"flow", "task", "get_run_logger"})
#: Prefect API calls made from Kazi's bodies (timed as Prefect).
API_PREFECT = frozenset(
    {
        "create_markdown_artifact",
        "create_table_artifact",
        "create_link_artifact",
        "create_progress_artifact",
        "update_progress_artifact",
    }
)


# --- Interval arithmetic (pure) --------------------------------------------------------------------


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same points; empty ones are dropped."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def measure(intervals: Iterable[Interval]) -> float:
    """Total length of the points covered (overlaps count once)."""
    return sum(end - start for start, end in union(intervals))


def intersect(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The points in both ``a`` and ``b``."""
    ua, ub = union(a), union(b)
    out: list[Interval] = []
    i = j = 0
    while i < len(ua) and j < len(ub):
        start, end = max(ua[i][0], ub[j][0]), min(ua[i][1], ub[j][1])
        if end > start:
            out.append((start, end))
        if ua[i][1] < ub[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The points of ``a`` not in ``b``."""
    out: list[Interval] = []
    ub = union(b)
    for start, end in union(a):
        cursor = start
        for b_start, b_end in ub:
            if b_end <= cursor or b_start >= end:
                continue
            if b_start > cursor:
                out.append((cursor, b_start))
            cursor = max(cursor, b_end)
            if cursor >= end:
                break
        if cursor < end:
            out.append((cursor, end))
    return out


# --- Recording -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One task or flow run started by a call (``kind``: task or flow)."""

    kind: Literal["task", "flow"]
    name: str
    start: float
    end: float


@dataclass(frozen=True)
class Stage:
    """One call of a stage by the parent flow."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class StageTimes:
    """Where one stage's wall time went (seconds)."""

    name: str
    wall: float
    work: float
    waiting: float
    #: Prefect API calls from Kazi's bodies (artifacts, lock, secrets): part of ``orchestration``.
    api: float
    task_runs: int
    flow_runs: int

    @property
    def orchestration(self) -> float:
        return max(0.0, self.wall - self.work - self.waiting)

    @property
    def share(self) -> float:
        """Orchestration over the time that was not waiting."""
        busy = self.wall - self.waiting
        return self.orchestration / busy if busy > 0 else 0.0


@dataclass
class Timeline:
    """Frames pushed and popped by the instrumented code, turned into intervals."""

    clock: Callable[[], float] = time.perf_counter
    work: list[Interval] = field(default_factory=list)
    frames: dict[Kind, list[Interval]] = field(default_factory=lambda: {"run": [], "future": [], "api": [], "wait": []})
    runs: list[Run] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local)

    def _stack(self) -> list[bool]:
        stack: list[bool] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _push(self, is_body: bool) -> float:
        now = self.clock()
        stack = self._stack()
        if stack and stack[-1]:
            self.work.append((self._local.since, now))
        stack.append(is_body)
        if is_body:
            self._local.since = now
        return now

    def _pop(self) -> float:
        now = self.clock()
        stack = self._stack()
        if stack.pop():
            self.work.append((self._local.since, now))
        if stack and stack[-1]:
            self._local.since = now
        return now

    @contextmanager
    def body(self) -> Iterator[None]:
        """Kazi's code runs inside."""
        self._push(True)
        try:
            yield
        finally:
            self._pop()

    @contextmanager
    def outside(self, kind: Kind) -> Iterator[None]:
        """Control is with Prefect (or waiting) inside."""
        start = self._push(False)
        try:
            yield
        finally:
            self.frames[kind].append((start, self._pop()))

    @contextmanager
    def run(self, kind: Literal["task", "flow"], name: str) -> Iterator[None]:
        """A task or flow call: Prefect's, and one run of ``name``."""
        start = self.clock()
        try:
            with self.outside("run"):
                yield
        finally:
            self.runs.append(Run(kind, name, start, self.clock()))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.stages.append(Stage(name, start, self.clock()))

    # -- results ---------------------------------------------------------------------------------
    def times(self, name: str, windows: Sequence[Interval]) -> StageTimes:
        """The measures of the module docstring over ``windows`` (one stage, or the whole run)."""
        work = intersect(self.work, windows)
        waiting = subtract(intersect(self.frames["wait"], windows), work)
        api = subtract(intersect(self.frames["api"], windows), work)
        inside = union(windows)

        def within(run: Run) -> bool:
            return any(start <= run.start < end for start, end in inside)

        return StageTimes(
            name=name,
            wall=measure(inside),
            work=measure(work),
            waiting=measure(waiting),
            api=measure(api),
            task_runs=sum(1 for r in self.runs if r.kind == "task" and within(r)),
            flow_runs=sum(1 for r in self.runs if r.kind == "flow" and within(r)),
        )

    def breakdown(self, start: float, end: float) -> list[StageTimes]:
        """One row per stage call in order, then ``parent`` (the rest of ``[start, end]``), then ``total``."""
        rows = [self.times(s.name, [(s.start, s.end)]) for s in sorted(self.stages, key=lambda s: s.start)]
        rest = subtract([(start, end)], [(s.start, s.end) for s in self.stages])
        rows.append(self.times("parent flow (between stages)", rest))
        rows.append(self.times("total", [(start, end)]))
        return rows


# --- Instrumenting ---------------------------------------------------------------------------------


def _timed_body(timeline: Timeline, fn: Callable[..., Any]) -> Callable[..., Any]:
    def body(*args: Any, **kwargs: Any) -> Any:
        with timeline.body():
            return fn(*args, **kwargs)

    # Rebuilt with the original's globals: Prefect's parameter models resolve the postponed annotations
    # (``from __future__ import annotations``) in the function's own globals.
    rebuilt = types.FunctionType(body.__code__, fn.__globals__, fn.__name__, None, body.__closure__)
    return functools.update_wrapper(rebuilt, fn)


def _timed_call(timeline: Timeline, kind: Kind, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with timeline.outside(kind):
            return fn(*args, **kwargs)

    return call


def _timed_generator(timeline: Timeline, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """``as_completed``: each step waits on futures."""

    @functools.wraps(fn)
    def steps(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        inner = fn(*args, **kwargs)
        while True:
            with timeline.outside("future"):
                try:
                    item = next(inner)
                except StopIteration:
                    return
            yield item

    return steps


class _TimedContext(AbstractContextManager[Any]):
    """A context manager whose entering and leaving are Prefect's; what it yields is proxied if asked."""

    def __init__(self, timeline: Timeline, inner: AbstractContextManager[Any], proxy: bool) -> None:
        self._timeline, self._inner, self._proxy = timeline, inner, proxy

    def __enter__(self) -> Any:
        with self._timeline.outside("api"):
            value = self._inner.__enter__()
        return _TimedObject(self._timeline, value) if self._proxy else value

    def __exit__(self, *exc: Any) -> bool | None:
        with self._timeline.outside("api"):
            return self._inner.__exit__(*exc)


class _TimedObject:
    """A Prefect client: every method call is Prefect's."""

    def __init__(self, timeline: Timeline, inner: Any) -> None:
        self._timeline, self._inner = timeline, inner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        return _timed_call(self._timeline, "api", value) if callable(value) else value


def _context_factory(timeline: Timeline, fn: Callable[..., Any], proxy: bool) -> Callable[..., Any]:
    @functools.wraps(fn)
    def make(*args: Any, **kwargs: Any) -> _TimedContext:
        with timeline.outside("api"):
            inner = fn(*args, **kwargs)
        return _TimedContext(timeline, inner, proxy)

    return make


class _TimeWithTimedSleep(types.SimpleNamespace):
    """The ``time`` module as a flow module sees it, with ``sleep`` counted as waiting."""

    def __init__(self, timeline: Timeline, sleep: Callable[[float], None]) -> None:
        super().__init__(sleep=_timed_call(timeline, "wait", sleep))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextmanager
def _patched(target: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


def _prefect_function(value: Any) -> bool:
    return inspect.isfunction(value) and str(getattr(value, "__module__", "")).startswith("prefect")


@contextmanager
def instrument(
    timeline: Timeline,
    modules: Sequence[types.ModuleType],
    *,
    stages: Mapping[str, str] | None = None,
    stage_module: types.ModuleType | None = None,
    sleeping_modules: Sequence[types.ModuleType] = (),
    sleep: Callable[[float], None] = time.sleep,
    api_functions: Sequence[tuple[types.ModuleType, str]] = (),
) -> Iterator[None]:
    """Time the Kazi code of ``modules`` on ``timeline`` while inside; everything is put back afterwards.

    Args:
        timeline: Where the frames go.
        modules: Modules holding Prefect ``Task`` / ``Flow`` objects (their ``fn`` are timed as Kazi bodies)
            and the Prefect functions they imported (timed as Prefect; an unknown one raises ``ValueError``).
        stages: Attribute of ``stage_module`` -> stage name: each call of it is one stage; ``{n}`` in the
            name is replaced by the call's number (0 for the first) and ``{next}`` by that plus one, for stages
            called once per round.
        stage_module: The parent flow's module.
        sleeping_modules: Modules whose ``time.sleep`` is waiting (the parent flow's, between passes).
        sleep: What their ``time.sleep`` does (it may return early, when what is waited for is there).
        api_functions: Other ``(module, attribute)`` functions that call Prefect's API (Secret blocks).
    """
    from prefect import Flow, Task
    from prefect.futures import PrefectConcurrentFuture

    with ExitStack() as patches:
        seen: set[int] = set()
        for module in modules:
            for name, value in list(vars(module).items()):
                if isinstance(value, Task | Flow) and id(value) not in seen:
                    seen.add(id(value))
                    patches.enter_context(_patched(value, "fn", _timed_body(timeline, value.fn)))
                elif name == "as_completed" and _prefect_function(value):
                    patches.enter_context(_patched(module, name, _timed_generator(timeline, value)))
                elif name in API_PREFECT and _prefect_function(value):
                    patches.enter_context(_patched(module, name, _timed_call(timeline, "api", value)))
                elif name == "pause_flow_run" and _prefect_function(value):
                    patches.enter_context(_patched(module, name, _timed_call(timeline, "wait", value)))
                elif name in ("concurrency", "get_client") and _prefect_function(value):
                    factory = _context_factory(timeline, value, proxy=name == "get_client")
                    patches.enter_context(_patched(module, name, factory))
                elif _prefect_function(value) and name not in LOCAL_PREFECT:
                    raise ValueError(
                        f"{module.__name__} imports {value.__module__}.{name}, which bench.orchestration does not "
                        "know how to time: add it to the right kind in instrument()"
                    )
        for module, name in api_functions:
            patches.enter_context(_patched(module, name, _timed_call(timeline, "api", getattr(module, name))))
        for module in sleeping_modules:
            patches.enter_context(_patched(module, "time", _TimeWithTimedSleep(timeline, sleep)))

        def task_call(kind: str) -> Callable[..., Any]:
            original = getattr(Task, kind)

            def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                with timeline.run("task", self.name):
                    return original(self, *args, **kwargs)

            return call

        def flow_call(self: Any, *args: Any, **kwargs: Any) -> Any:
            with timeline.run("flow", self.name):
                return original_flow_call(self, *args, **kwargs)

        original_flow_call = Flow.__call__
        for kind in ("__call__", "submit", "map"):
            patches.enter_context(_patched(Task, kind, task_call(kind)))
        patches.enter_context(_patched(Flow, "__call__", flow_call))
        for kind in ("result", "wait"):
            original = getattr(PrefectConcurrentFuture, kind)
            patches.enter_context(_patched(PrefectConcurrentFuture, kind, _timed_call(timeline, "future", original)))

        if stages and stage_module is not None:
            calls: dict[str, int] = {}

            def staged(attr: str, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
                @functools.wraps(fn)
                def call(*args: Any, **kwargs: Any) -> Any:
                    n = calls.get(attr, 0)
                    calls[attr] = n + 1
                    with timeline.stage(label.format(n=n, next=n + 1)):
                        return fn(*args, **kwargs)

                return call

            for attr, label in stages.items():
                patches.enter_context(_patched(stage_module, attr, staged(attr, label, getattr(stage_module, attr))))
        yield
