"""Annotation pull: Kazi's sync of one project against a raw "one export call parsed to a table" baseline.

Setup (not timed): a project in the local stack's first Label Studio instance with ``--size`` text-classification
tasks shaped like split's (opaque ``item`` ref, ``batch_id``, ``kazi_task_key``), imported *with* their answers
embedded (:meth:`simulation.workforce.SimulatedWorkforce.bulk_tasks`; ``--overlap`` answers per task from
simulated users of that instance, ``completed_by`` their user ids).

Timed, side by side in the same rounds (the order alternates by round, so both see the same background load):

- **raw baseline**: one export API call (``GET /api/projects/<id>/export?exportType=JSON``, through the SDK),
  ``json.loads``, and ``pyarrow.Table.from_pylist`` of the annotations flattened naively (each annotation dict
  with its task id, item ref and batch id beside it, nested result and all);
- **Kazi first sync**: what one site task and the append step of the annotate flow do for the project:
  :func:`flows.annotate.pull.pull_project` (the same export call, refs mapped back to item ids, validated and
  normalised rows with pseudonymous annotators), :func:`flows.annotate.pull.read_log` of an empty log,
  :func:`flows.annotate.pull.append_new` (``new_rows`` + one Parquet part written to S3);
- **Kazi resync**: the same against the log that first sync wrote (nothing new, nothing written).

Ratio = baseline time / Kazi time (1.0 = Kazi's sync costs nothing beyond the raw export; the goal is >= 0.9).
The project and the bench's workspace objects are deleted afterwards; the simulated users stay for reuse.

Run: ``KAZI_STACK_PORT_BASE=28300 KAZI_STACK_DIR=.state/test .venv/bin/python -m bench.annotation_pull
[--size 20000] [--overlap 3] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from label_studio_sdk import LabelStudio

from flows.annotate.pull import ProjectRef, append_new, item_ref_map, normalise_tasks, pull_project, read_log
from flows.core.labelstudio import LabelStudioClient, ProjectSpec
from flows.core.models import WorkOrder, Workspace
from flows.core.s3 import ObjectStore
from flows.core.schemas import TASK_KEY
from flows.core.settings import load_settings, local_label_studio_token
from flows.split.label_configs import render_label_config
from simulation.answers import AnnotatorProfile
from simulation.datasets import text_classification_dataset
from simulation.labelstudio_users import ensure_annotators
from simulation.workforce import SimulatedWorkforce

IMPORT_CHUNK = 2_000
PROFILES = [AnnotatorProfile(id=f"bench-pull-a{i:02d}", site_id="bench", accuracy=0.9) for i in range(5)]


def work_order(run: str, classes: list[str]) -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "id": f"bench-pull-{run}",
            "client_id": "bench",
            "source": {"uri": f"s3://bench/{run}/input.jsonl", "format": "jsonl"},
            "task_type": "text_classification",
            "columns": {"item_id": "id", "text": "text"},
            "label_schema": {"classes": classes},
            "deadline": datetime.now(UTC) + timedelta(days=7),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": f"s3://bench-out/{run}"},
        }
    )


def baseline(sdk: LabelStudio, project_id: int) -> pa.Table:
    """One export call parsed to a table, naively: every annotation flattened beside its task's keys."""
    raw = b"".join(sdk.projects.exports.download_sync(id=project_id, export_type="JSON", download_all_tasks=False))
    tasks = json.loads(raw)
    rows = [
        {**a, "task_id": t["id"], "item": t["data"]["item"], "batch_id": t["data"]["batch_id"]}
        for t in tasks
        for a in t["annotations"]
    ]
    return pa.Table.from_pylist(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=20_000, help="annotated tasks in the project")
    parser.add_argument("--overlap", type=int, default=3, help="answers per task")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each round runs every side once")
    args = parser.parse_args(argv)

    settings = load_settings()
    store = ObjectStore(settings)
    url = f"http://127.0.0.1:{settings.ports.label_studio(0)}"
    token = local_label_studio_token(settings, 0)
    # A 20,000-task export takes Label Studio most of a minute (split's projects hold at most 1,000 tasks).
    client = LabelStudioClient(url, token, site_id="bench", timeout=900)
    sdk = LabelStudio(base_url=url, api_key=token.get_secret_value(), timeout=900)
    run = uuid.uuid4().hex[:8]
    key = settings.pseudonym_key

    data = text_classification_dataset(args.size, seed=1)
    wo = work_order(run, list(data.truth.classes))
    ids = [r["message_id"] for r in data.rows]
    refs = item_ref_map(ids, key)
    by_item = {item: ref for ref, item in refs.items()}
    project_key = f"{wo.id}--bench--r0-b0000"
    payloads = [
        {
            "data": {
                "text": r["text"],
                "item": by_item[r["message_id"]],
                "batch_id": "r0-b0000",
                TASK_KEY: f"{project_key}/{by_item[r['message_id']]}",
            }
        }
        for r in data.rows
    ]
    accounts = ensure_annotators(url, token, PROFILES)
    workforce = SimulatedWorkforce(PROFILES, data.truth, seed=3, refs=refs)
    annotated = workforce.bulk_tasks(payloads, {p: a.user_id for p, a in accounts.items()}, args.overlap)

    project_id, _ = client.ensure_project(
        ProjectSpec(
            key=project_key,
            title=f"bench pull {run}",
            label_config=render_label_config(wo),
            maximum_annotations=args.overlap,
        )
    )
    project = ProjectRef(project_key, project_id, "bench", f"{url}/projects/{project_id}")
    workspaces: list[Workspace] = []
    try:
        started = time.perf_counter()
        for i in range(0, len(annotated), IMPORT_CHUNK):
            client.import_tasks(project_id, annotated[i : i + IMPORT_CHUNK])
        n_answers = len(workforce.log_frame())
        print(
            f"setup: {args.size:,} tasks with {n_answers:,} answers imported in {time.perf_counter() - started:.1f} s "
            f"(project {project_id} at {url})"
        )

        steps: dict[str, list[float]] = {"export call + parse": [], "refs + normalise": [], "log read + append": []}

        def kazi_first() -> pa.Table:
            ws = Workspace(bucket=settings.workspace_bucket, work_order_id=f"{wo.id}-{len(workspaces)}")
            workspaces.append(ws)
            # pull_project, step by step for the breakdown: the export call, then normalise_tasks.
            t0 = time.perf_counter()
            tasks = client.export(project.project_id)
            t1 = time.perf_counter()
            pulled = normalise_tasks(
                tasks, project, refs, task_type=wo.task_type, key=key, classes=wo.label_schema.classes
            )
            t2 = time.perf_counter()
            rows = append_new(store, ws, read_log(store, ws), pulled.rows).rows
            t3 = time.perf_counter()
            for name, seconds in zip(steps, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                steps[name].append(seconds)
            return rows

        def kazi_resync() -> pa.Table:
            ws = workspaces[-1]
            pulled = pull_project(
                client, project, refs, task_type=wo.task_type, key=key, classes=wo.label_schema.classes
            )
            appended = append_new(store, ws, read_log(store, ws), pulled.rows)
            assert appended.part_uri is None
            return pulled.rows

        sides: dict[str, Callable[[], pa.Table]] = {
            "raw baseline: export + json.loads + Table.from_pylist": lambda: baseline(sdk, project_id),
            "kazi first sync: export + normalise + new_rows + part": kazi_first,
            "kazi resync: the same, nothing new, nothing written": kazi_resync,
        }
        names = list(sides)
        times: dict[str, list[float]] = {name: [] for name in names}
        rows: dict[str, int] = {}
        for r in range(args.repeat):
            # Resync needs this round's first sync before it; the baseline goes first or last in turn.
            order = [names[0], names[1], names[2]] if r % 2 == 0 else [names[1], names[2], names[0]]
            for name in order:
                start = time.perf_counter()
                table = sides[name]()
                times[name].append(time.perf_counter() - start)
                rows[name] = table.num_rows
        if len(set(rows.values())) != 1 or rows[names[0]] != n_answers:
            held = client.export(project_id, all_tasks=True)
            raise AssertionError(
                f"rows per side {rows}, {n_answers:,} answers imported; the project holds {len(held):,} tasks with "
                f"{sum(len(t['annotations']) for t in held):,} annotations"
            )

        print(
            f"{args.size:,} annotated tasks x {args.overlap} answers ({n_answers:,} annotations), one export call "
            f"per side; median and best of {args.repeat} rounds"
        )
        print(f"{'side':<58}{'median s':>10}{'best s':>9}{'vs baseline':>13}")
        base = statistics.median(times[names[0]])
        for name in names:
            med = statistics.median(times[name])
            print(f"{name:<58}{med:>10.3f}{min(times[name]):>9.3f}{base / med:>12.2f}x")
        print(
            "  kazi first sync, by step (median s): "
            + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in steps.items())
        )
        per_round = [b / k for b, k in zip(times[names[0]], times[names[1]], strict=True)]
        print(
            f"ratio baseline/kazi (first sync): median of rounds {statistics.median(per_round):.2f}, of medians "
            f"{base / statistics.median(times[names[1]]):.2f}, of bests "
            f"{min(times[names[0]]) / min(times[names[1]]):.2f} (goal >= 0.9)"
        )
    finally:
        client.delete_project(project_id)
        for ws in workspaces:
            store.delete_prefix(settings.workspace_bucket, ws.root + "/")


if __name__ == "__main__":
    main()
