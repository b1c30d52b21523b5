"""A whole work order end to end at scale: time per stage, and Prefect's share of it (issue #8).

What runs. The bench brings its stack up (use its own: see the command below), uploads a text-classification
dataset of ``--items`` items with its gold file and the sample partner registry (two local Label Studio
instances, nairobi and dadaab), and calls Kazi's parent flow ``work_order_flow`` in this process, as
the tests do: ingest -> split -> annotate (until done) -> QA -> a rework round ->
annotate -> QA -> deliver. Meanwhile a simulated workforce, in a process of its own (so its Python work
does not contend for this process's interpreter lock), answers every project of the work order in bulk
(:meth:`simulation.workforce.SimulatedWorkforce.work_bulk`: the answers the realistic path would give,
imported as predictions and converted by each annotator's own token; no lead times, no skips). Review
rounds show Kazi's earlier answers as predictions too; the workforce converts only its own.

A site takes up its projects once Kazi has recorded them as materialised (``split/projects.json``, written
when a site's projects are all created; ``annotate/projects.json`` for moved batches), the moment a site
would be told its batches are ready. Answering while split is still importing the same site's tasks made
Label Studio (one process, SQLite) keep Kazi's imports waiting past their 60 s timeout at 100,000 items,
and split's retries then re-export every project already created.

What is measured (definitions in :mod:`bench.orchestration`): per stage, the wall time of the parent flow's
call of it; Kazi's **work** (the union over threads of the time Kazi's task and flow bodies run, less what
they hand to Prefect); **waiting** for the simulated annotators (the parent flow's sleeps between annotate
passes); **orchestration** = wall - work - waiting (Prefect's engine, the API calls Kazi makes to Prefect,
futures being set up); the number of task and flow runs; and the share orchestration / (wall - waiting),
against the goal of under 10%. The annotate stage's passes that found work still open are Kazi work (a real
sync pass), so its wall also depends on how fast the workforce is; the workforce's own figures are printed
beside. Task runs are also counted through the Prefect API as a cross-check (it adds one task run per
subflow call, Prefect's record of the subflow in its parent).

Annotate passes. The parent flow syncs, and while answers are open sleeps ``sync_interval_seconds`` before
the next pass. Every pass exports every project of the work order (Label Studio's export, 1-5 ms per
annotation here), so a pass at 100,000 items costs 5-10 minutes, and passes that find the annotators still at
work would dominate the run. By default the bench makes that sleep end as soon as the workforce has nothing
left to answer, and at the latest after ``--sync-interval`` (600 s): a sync at least every ten minutes, and
one as soon as the annotators are done; ``--periodic`` sleeps the whole interval instead. Either way the sleep
is the waiting time. At 100,000 items the workforce needs longer than ten minutes after the first pass, so
the second pass starts while the last batches are being answered, and usually finds them done by the time
it reaches them (passes export projects in batch order, the workforce answers them in the same order).

Checks after the run: QA passed, a delivery was written, and the annotation log holds exactly the answers
the workforce made, each under the pseudonym of the annotator who made it (``completed_by`` is the user
who converted the predictions) with a null lead time.

Run (measured: 38 minutes for 100,000 items on 2 shared cores, of which 9 minutes in deliver's reconciliation,
quadratic in the number of items; 8 minutes for 10,000; smaller with ``--items``)::

    KAZI_STACK_DIR=.state/bench KAZI_STACK_PORT_BASE=38300 .venv/bin/python -m bench.work_order_e2e --items 100000

The work order's Label Studio projects are kept (``--cleanup`` deletes them afterwards, untimed); stop the
stack with ``KAZI_STACK_DIR=.state/bench KAZI_STACK_PORT_BASE=38300 .venv/bin/kazi stack down``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.core.models import PartnerRegistry, WorkOrder
from flows.core.settings import Settings
from simulation.answers import AnnotatorProfile
from simulation.datasets import SampleDataset, Truth

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

    import pandas as pd

    from bench.orchestration import StageTimes

#: Stages of the parent flow: attribute of ``flows.work_order`` -> name (``{n}``: the call's number).
STAGES: Mapping[str, str] = {
    "ingest_flow": "ingest",
    "split_flow": "split",
    "wait_for_annotations": "annotate r{n}",
    "qa_flow": "qa r{n}",
    "rework_flow": "split-rework r{next}",
    "deliver_flow": "deliver",
}
#: Modules whose Prefect tasks and flows are timed.
FLOW_MODULES = (
    "flows.ingest.flow",
    "flows.split.flow",
    "flows.annotate.flow",
    "flows.qa.flow",
    "flows.deliver.flow",
    "flows.work_order",
)
GOAL_SHARE = 0.10


# --- The work order ---------------------------------------------------------------------------------


def bench_work_order(
    base: WorkOrder, *, overlap: int, gold_rate: float, rework_rounds: int, deadline_days: float
) -> WorkOrder:
    """The demo's work order (:func:`simulation.demo.make_work_order`) sized for the bench."""
    raw = base.model_dump(mode="json")
    raw["overlap"] = overlap
    raw["gold"]["rate"] = gold_rate
    raw["qa"]["max_rework_rounds"] = rework_rounds
    raw["deadline"] = (datetime.now(UTC) + timedelta(days=deadline_days)).isoformat()
    raw["instructions"] = "Read the message and choose the sentiment it expresses."
    return WorkOrder.model_validate(raw)


def with_unique_texts(dataset: SampleDataset) -> SampleDataset:
    """The dataset with a ticket number in every text.

    The sample texts come from a few dozen templates, so most of a large set repeats an earlier text and
    ingest's content dedupe would drop it (about three in four at 2,000 items); a client's messages carry
    such a reference anyway. Truth and gold are by item id and stay as they are.
    """
    id_column = dataset.columns.item_id
    text_column = dataset.columns.text
    if id_column is None or text_column is None:
        raise ValueError(f"{dataset.name} is not a text dataset")
    rows = [{**r, text_column: f"{r[text_column]} (ticket {r[id_column]})"} for r in dataset.rows]
    return replace(dataset, rows=rows)


# --- The simulated workforce, in its own process ------------------------------------------------------


@dataclass(frozen=True)
class WorkforceConfig:
    """What the workforce process needs (pickled to it)."""

    settings: Settings
    registry: PartnerRegistry
    #: Site id -> index of its local Label Studio instance.
    sites: Mapping[str, int]
    profiles: Sequence[AnnotatorProfile]
    truth: Truth
    work_order_id: str
    seed: int
    poll_seconds: float = 2.0


@dataclass
class SiteStats:
    """One site's bulk work, as the workforce process saw it."""

    projects: int = 0
    answers: int = 0
    skips_left_out: int = 0
    open_tasks: int = 0
    busy_seconds: float = 0.0
    #: Seconds per bulk step (list, plan, import, convert), summed over projects.
    steps: dict[str, float] = field(default_factory=dict)
    last_answer_epoch: float = 0.0
    #: Project key -> epoch seconds its answers were in.
    finished: dict[str, float] = field(default_factory=dict)


def workforce_main(config: WorkforceConfig, stop: Event, idle_at: Any, results: mp.Queue[Any]) -> None:
    """Answer every project of the work order at each site until ``stop``; then report on ``results``.

    ``idle_at[i]`` (a shared array, one slot per site in ``config.sites`` order) is the epoch time the site's
    last look at its projects found nothing to do, 0 while it works.
    """
    from flows.annotate.pull import read_json_or_empty
    from flows.core.labelstudio import LabelStudioClient
    from flows.core.refs import item_refs
    from flows.core.s3 import ObjectStore
    from flows.core.settings import local_label_studio_token
    from flows.core.workspace import workspace
    from simulation.labelstudio_users import ensure_annotators, sessions
    from simulation.workforce import SimulatedWorkforce

    stats = {site: SiteStats() for site in config.sites}
    errors: list[str] = []
    try:
        item_ids = list(config.truth.answers)
        refs = item_refs(item_ids, config.settings.pseudonym_key).to_pylist()
        workforce = SimulatedWorkforce(
            config.profiles, config.truth, seed=config.seed, refs=dict(zip(refs, item_ids, strict=True))
        )
        prefix = f"{config.work_order_id}--"
        store = ObjectStore(config.settings)
        ws = workspace(config.settings, config.work_order_id)

        def ready() -> set[str]:
            """Projects Kazi has recorded as materialised: the site's go for those batches."""
            recorded = read_json_or_empty(store, ws.uri("split", "projects.json"))
            return set(recorded) | set(read_json_or_empty(store, ws.uri("annotate", "projects.json")))

        def work_site(site_id: str) -> None:
            index = config.sites[site_id]
            slot = list(config.sites).index(site_id)
            url = config.registry.site(site_id).label_studio.url
            token = local_label_studio_token(config.settings, index)
            members = [p for p in config.profiles if p.site_id == site_id]
            clients = sessions(url, ensure_annotators(url, token, members))
            admin = LabelStudioClient(url, token, site_id=site_id, timeout=900)
            mine = stats[site_id]
            done: set[int] = set()
            while not stop.is_set():
                worked = 0
                go = ready()
                # Oldest batch first, as a site works its batches in the order they are due.
                for project in sorted(admin.projects(), key=lambda p: p.id):
                    if project.key not in go or project.id in done:
                        continue
                    started = time.perf_counter()
                    run = workforce.work_bulk(project.id, clients)
                    mine.busy_seconds += time.perf_counter() - started
                    for step, seconds in run.seconds.items():
                        mine.steps[step] = mine.steps.get(step, 0.0) + seconds
                    if run.tasks and not run.open_tasks:
                        done.add(project.id)
                        mine.finished[project.key] = time.time()
                    if len(run.log):
                        worked += len(run.log)
                        mine.projects += 1
                        mine.answers += len(run.log)
                        mine.skips_left_out += run.skips_left_out
                        mine.open_tasks += run.open_tasks
                        mine.last_answer_epoch = time.time()
                        steps = ", ".join(f"{k} {v:.1f}" for k, v in run.seconds.items())
                        print(
                            f"  [workforce] {site_id}: {len(run.log):,} answers in {project.key.removeprefix(prefix)} "
                            f"in {time.perf_counter() - started:.1f} s ({steps}); {mine.answers:,} at {site_id} so far",
                            flush=True,
                        )
                if worked:
                    idle_at[slot] = 0.0
                else:
                    idle_at[slot] = time.time()
                    stop.wait(config.poll_seconds)

        def guarded(site_id: str) -> None:
            try:
                work_site(site_id)
            except Exception:
                errors.append(f"{site_id}: {traceback.format_exc()}")
                stop.set()

        threads = [threading.Thread(target=guarded, args=(s,), name=f"workforce-{s}") for s in config.sites]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log = workforce.log_frame()[["site_id", "user_id", "project_id", "task_id", "item_id", "profile_id"]]
    except Exception:
        errors.append(traceback.format_exc())
        log = None
    results.put({"stats": {s: asdict(v) for s, v in stats.items()}, "errors": errors, "log": log})


def wake_when_idle(idle_at: Any, alive: Callable[[], bool], *, at_least: float = 2.0, poll: float = 1.0) -> Any:
    """A ``time.sleep`` for the parent flow that returns early once every site's workforce is idle.

    Idle means a look at the projects that ended after the sleep began found nothing left to answer; the
    sleep lasts ``at_least`` seconds in any case, and never longer than asked. A workforce that is no longer
    ``alive`` fails the sleep (and so the run) instead of leaving it to wait out the interval.
    """

    def sleep(seconds: float) -> None:
        start = time.time()
        deadline = start + seconds
        time.sleep(min(at_least, seconds))
        while (left := deadline - time.time()) > 0:
            if not alive():
                raise RuntimeError("the simulated workforce process has ended: nobody is left to answer")
            if all(t > start for t in idle_at[:]):
                return
            time.sleep(min(poll, left))

    return sleep


# --- Checks ---------------------------------------------------------------------------------------------


def check_log(kazi_log: pd.DataFrame, workforce_log: pd.DataFrame, settings: Settings) -> list[str]:
    """Problems with what Kazi logged against what the workforce made; empty when they match exactly.

    Kazi's rows are keyed by (project, task, annotator pseudonym); the workforce's by (project, task, Label
    Studio user), which the pseudonymiser turns into the same key when ``completed_by`` is that user.
    """
    from flows.annotate.pseudonym import pseudonymise

    problems = []
    users = workforce_log[["site_id", "user_id"]].drop_duplicates()
    names = {
        (str(site), int(user)): pseudonymise(str(site), int(user), settings.pseudonym_key)
        for site, user in users.itertuples(index=False)
    }
    made = set(
        zip(
            workforce_log["project_id"].astype(int),
            workforce_log["task_id"].astype(int),
            [names[(str(s), int(u))] for s, u in zip(workforce_log["site_id"], workforce_log["user_id"], strict=True)],
            strict=True,
        )
    )
    logged = set(zip(kazi_log["project_id"], kazi_log["task_id"], kazi_log["annotator"], strict=True))
    if len(kazi_log) != len(logged):
        problems.append(f"the log holds {len(kazi_log) - len(logged):,} repeated (project, task, annotator) rows")
    if made - logged:
        problems.append(f"{len(made - logged):,} answers the workforce made are not in Kazi's log")
    if logged - made:
        problems.append(f"{len(logged - made):,} logged answers were not made by the workforce")
    if kazi_log["lead_time_s"].notna().any():
        problems.append("bulk answers have no lead time, but some logged rows carry one")
    if kazi_log["skipped"].any():
        problems.append("bulk answers are never skips, but some logged rows are")
    return problems


# --- Report ---------------------------------------------------------------------------------------------


def table(rows: Sequence[StageTimes]) -> str:
    """Per stage: wall, Kazi's work, orchestration (and the API part of it), waiting, runs and the share."""
    head = (
        f"{'stage':<28}{'wall s':>9}{'work s':>9}{'orch s':>9}{'of it API':>10}{'wait s':>9}"
        f"{'task runs':>10}{'flow runs':>10}{'orch share':>11}{'ms/run':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        runs = r.task_runs + r.flow_runs
        per_run = f"{1000 * r.orchestration / runs:8.0f}" if runs else f"{'-':>8}"
        if r.name == "total":
            lines.append("-" * len(head))
        lines.append(
            f"{r.name:<28}{r.wall:9.1f}{r.work:9.1f}{r.orchestration:9.1f}{r.api:10.1f}{r.waiting:9.1f}"
            f"{r.task_runs:10d}{r.flow_runs:10d}{r.share:11.1%}{per_run}"
        )
    return "\n".join(lines)


def _api_run_counts(work_order_id: str) -> tuple[int, int]:
    """Flow runs of the work order (by run name) and their task runs, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName

    page = 200
    with get_client(sync_client=True) as client:
        ids: list[Any] = []
        while batch := client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=work_order_id)), limit=page, offset=len(ids)
        ):
            ids += [r.id for r in batch]
        tasks = 0
        while ids and (
            task_batch := client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=page, offset=tasks
            )
        ):
            tasks += len(task_batch)
    return len(ids), tasks


def _delete_projects(registry: PartnerRegistry, settings: Settings, sites: Mapping[str, int], prefix: str) -> int:
    from flows.core.labelstudio import LabelStudioClient
    from flows.core.settings import local_label_studio_token

    deleted = 0
    for site_id, index in sites.items():
        client = LabelStudioClient(
            registry.site(site_id).label_studio.url, local_label_studio_token(settings, index), timeout=900
        )
        for project in client.projects():
            if project.key and project.key.startswith(prefix):
                client.delete_project(project.id)
                deleted += 1
    return deleted


# --- Main -----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import importlib

    import pyarrow.compute as pc

    import flows.work_order
    from bench import work_order_e2e as this
    from bench.orchestration import Timeline, instrument
    from flows.annotate.pull import read_log
    from flows.cli import stack_up
    from flows.core import labelstudio
    from flows.core.models import DeliveryResult, QAResult
    from flows.core.s3 import ObjectStore, parse_uri
    from flows.core.settings import load_settings
    from flows.core.workspace import default_registry_uri, read_model, workspace
    from simulation.datasets import text_classification_dataset
    from simulation.demo import LOCAL_SITES, demo_registry, make_work_order, save_site_tokens, upload_dataset
    from simulation.registry import registry_profiles

    setup = time.perf_counter()
    settings = load_settings()
    print(f"Stack: {settings.stack_dir} (ports from {settings.stack_port_base})")
    stack_up(settings)
    store = ObjectStore(settings)
    registry = demo_registry(settings)
    save_site_tokens(settings, registry)
    store.put_bytes(*parse_uri(default_registry_uri(settings)), registry.to_yaml().encode())

    started = time.perf_counter()
    dataset = this.with_unique_texts(text_classification_dataset(args.items, seed=args.seed, gold_share=0.1))
    generated = time.perf_counter() - started
    work_order_id = f"bench-{datetime.now(UTC):%m%d%H%M%S}"
    source_uri, gold_uri = upload_dataset(store, dataset, work_order_id)
    work_order = this.bench_work_order(
        make_work_order(work_order_id, dataset, source_uri, gold_uri),
        overlap=args.overlap,
        gold_rate=args.gold_rate,
        rework_rounds=args.rework_rounds,
        deadline_days=args.deadline_days,
    )
    profiles = registry_profiles(
        registry,
        sites=list(LOCAL_SITES),
        max_per_site=args.annotators,
        spammer_share=args.spammer_share,
        seed=work_order.seed,
    )
    print(
        f"Work order {work_order_id}: {args.items:,} text items, overlap {work_order.overlap}, gold rate "
        f"{work_order.gold.rate:.0%}, {work_order.qa.max_rework_rounds} rework round(s); {len(profiles)} simulated "
        f"annotators ({sum(p.is_spammer for p in profiles)} spammers) at {', '.join(LOCAL_SITES)}. "
        f"Dataset made in {generated:.1f} s, set-up {time.perf_counter() - setup:.0f} s."
    )

    context = mp.get_context("spawn")
    stop = context.Event()
    idle_at = context.Array("d", len(LOCAL_SITES))
    results: mp.Queue[Any] = context.Queue()
    config = this.WorkforceConfig(
        settings=settings,
        registry=registry,
        sites=dict(LOCAL_SITES),
        profiles=profiles,
        truth=dataset.truth,
        work_order_id=work_order_id,
        seed=work_order.seed,
    )
    worker = context.Process(
        target=this.workforce_main, args=(config, stop, idle_at, results), name="simulated-workforce"
    )
    worker.start()

    # Imported here, not timed: the stages import Great Expectations on first use (several seconds), which
    # would count as Kazi's work and flatter the share.
    started = time.perf_counter()
    importlib.import_module("great_expectations")
    importlib.import_module("great_expectations.expectations")
    print(f"Great Expectations imported in {time.perf_counter() - started:.1f} s (not timed).")

    timeline = Timeline()
    modules = [importlib.import_module(name) for name in FLOW_MODULES]
    error: BaseException | None = None
    delivery: Any = None
    flow_started_epoch = time.time()
    t0 = timeline.clock()
    with instrument(
        timeline,
        modules,
        stages=STAGES,
        stage_module=flows.work_order,
        sleeping_modules=[flows.work_order],
        sleep=time.sleep if args.periodic else this.wake_when_idle(idle_at, worker.is_alive),
        api_functions=[(labelstudio, "resolve_secret")],
    ):
        try:
            delivery = flows.work_order.work_order_flow(
                work_order,
                sync_interval_seconds=args.sync_interval,
                max_wait_seconds=args.max_wait,
                approval_timeout_seconds=60,
            )
        except BaseException as exc:  # reported below, after the workforce is stopped
            error = exc
    t1 = timeline.clock()
    stop.set()
    try:
        report = results.get(timeout=300)
    except queue.Empty:
        report = {"stats": {}, "errors": ["the workforce process sent no report"], "log": None}
    worker.join(timeout=60)

    rows = timeline.breakdown(t0, t1)
    print(f"\nWork order {work_order_id}, {args.items:,} items: work_order_flow ran {t1 - t0:.1f} s in this process")
    print(table(rows))
    total = rows[-1]
    print(
        f"\nOrchestration share: {total.share:.1%} of the {total.wall - total.waiting:.0f} s not spent waiting "
        f"({total.orchestration / total.wall:.1%} of all {total.wall:.0f} s); goal < {GOAL_SHARE:.0%}: "
        f"{'met' if total.share < GOAL_SHARE else 'NOT met'}."
    )
    flow_runs, task_runs = _api_run_counts(work_order_id)
    print(
        f"Prefect API: {flow_runs} flow runs, {task_runs} task runs for this work order (task runs include one per "
        f"subflow call); counted here: {total.flow_runs} flow runs, {total.task_runs} task runs."
    )

    stats = report["stats"]
    answers = sum(s["answers"] for s in stats.values())
    busy = sum(s["busy_seconds"] for s in stats.values())
    last = max((s["last_answer_epoch"] for s in stats.values()), default=0.0)
    print(
        f"Simulated workforce: {answers:,} answers in {sum(s['projects'] for s in stats.values())} project passes, "
        f"{busy:.0f} s busy over {len(stats)} sites ({1000 * busy / max(answers, 1):.1f} ms per answer, listing "
        f"included); last answer {last - flow_started_epoch:.0f} s after the flow started; "
        f"{sum(s['skips_left_out'] for s in stats.values()):,} planned skips left out."
    )
    for site_id, s in stats.items():
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in s["steps"].items())
        print(f"  {site_id}: {s['answers']:,} answers, {s['busy_seconds']:.0f} s busy ({steps})")
    for problem in report["errors"]:
        print(f"workforce error: {problem}", file=sys.stderr)

    failures: list[str] = []
    if error is not None:
        failures.append(f"work_order_flow failed: {type(error).__name__}: {error}")
    else:
        ws = workspace(settings, work_order)
        qa = read_model(store, ws.uri("qa", "result.json"), QAResult)
        if not qa.passed:
            failures.append("QA did not pass")
        if not isinstance(delivery, DeliveryResult) or delivery.delivered_items == 0:
            failures.append(f"no delivery: {delivery!r}")
        else:
            print(f"Delivered {delivery.delivered_items:,} items; manifest {delivery.manifest_uri}")
        kazi_log = read_log(store, ws, columns=None)
        if report["log"] is not None:
            problems = this.check_log(kazi_log.to_pandas(), report["log"], settings)
            failures += problems
            if not problems:
                annotators = pc.count_distinct(kazi_log["annotator"]).as_py()
                print(
                    f"Annotation log: {kazi_log.num_rows:,} rows, exactly the workforce's answers, from "
                    f"{annotators} annotators (completed_by = the converting user), lead times null."
                )
    if report["errors"]:
        failures.append("the simulated workforce failed")

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "work_order_id": work_order_id,
                    "items": args.items,
                    "overlap": work_order.overlap,
                    "gold_rate": work_order.gold.rate,
                    "stages": [{**asdict(r), "orchestration": r.orchestration, "share": r.share} for r in rows],
                    "api_runs": {"flow_runs": flow_runs, "task_runs": task_runs},
                    "workforce": stats,
                    "failures": failures,
                },
                indent=2,
            )
        )
    if args.cleanup:
        started = time.perf_counter()
        deleted = _delete_projects(registry, settings, LOCAL_SITES, f"{work_order_id}--")
        print(f"Deleted {deleted} Label Studio projects in {time.perf_counter() - started:.0f} s (not timed above).")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.work_order_e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000, help="text items in the work order")
    parser.add_argument("--overlap", type=int, default=3, help="answers per item")
    parser.add_argument("--gold-rate", type=float, default=0.05, help="share of tasks that are gold")
    parser.add_argument("--rework-rounds", type=int, default=1, help="QA rework rounds at most")
    parser.add_argument("--annotators", type=int, default=6, help="simulated annotators per site")
    parser.add_argument("--spammer-share", type=float, default=0.0, help="share of spammers per site")
    parser.add_argument("--deadline-days", type=float, default=14.0, help="deadline, days from now")
    parser.add_argument(
        "--sync-interval",
        type=float,
        default=600.0,
        help="seconds between annotate passes (at most, unless --periodic)",
    )
    parser.add_argument(
        "--periodic",
        action="store_true",
        help="sleep the whole interval between passes instead of waking when the workforce is idle",
    )
    parser.add_argument("--max-wait", type=float, default=3600.0, help="seconds annotate waits at most per round")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--cleanup", action="store_true", help="delete the work order's projects afterwards")
    args = parser.parse_args(argv)
    from flows.core.settings import export_prefect_env, load_settings

    # Process-wide and before Prefect is imported (it reads its settings then); the workforce process
    # inherits it.
    export_prefect_env(load_settings())
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
