"""Task creation: Kazi's materialisation path against raw label-studio-sdk imports of the same payloads.

Both sides put the same tasks (image classification, one presigned image URL each) into fresh projects spread
over the local stack's Label Studio instances, one project after another:

- **raw baseline**: ``projects.create`` then ``projects.import_tasks`` of the project's ready-made payloads in one
  call; no key lookup, no orchestration, payloads built beforehand and not timed.
- **Kazi**: :func:`flows.split.materialise.materialise_batches` per instance, exactly what the split flow's site
  task runs: project listing, find-or-create by Kazi key, payload building from the manifest
  (item refs, presigned URLs) and the import of the missing tasks in chunks of
  :data:`flows.split.materialise.IMPORT_CHUNK`, each body serialised by the adapter
  (:meth:`~flows.core.labelstudio.LabelStudioClient.import_tasks_json`); the key lookup is skipped for a project
  the run has just created.

Within a round, each instance runs both sides back to back, in an order alternating by instance and round
(ABBA), so both sides meet the same background load and database size; the ratio is taken over the totals of all
rounds. Bench projects are deleted after each round (by Kazi key prefix).

Run: ``KAZI_STACK_PORT_BASE=28300 KAZI_STACK_DIR=.state/test .venv/bin/python -m bench.task_creation
[--tasks 50000] [--projects 10] [--instances 2] [--repeat 1]``
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from label_studio_sdk import LabelStudio

from flows.core.labelstudio import LabelStudioClient
from flows.core.models import WorkOrder
from flows.core.s3 import ObjectStore
from flows.core.schemas import ASSIGNMENTS, ITEMS
from flows.core.settings import Settings, load_settings, local_label_studio_token
from flows.split.label_configs import render_label_config
from flows.split.materialise import delete_projects, materialise_batches, project_spec
from flows.split.media import Presigner
from flows.split.tasks import iter_project_tasks


@dataclass(frozen=True)
class Instance:
    url: str
    client: LabelStudioClient
    sdk: LabelStudio


def work_order(run: str, bucket: str) -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "id": f"bench-{run}",
            "client_id": "bench",
            "source": {"uri": f"s3://{bucket}/bench/{run}/input.csv", "format": "csv"},
            "task_type": "image_classification",
            "columns": {"item_id": "id", "media_uri": "uri"},
            "label_schema": {"classes": ["cat", "dog", "bird"]},
            "instructions": "Pick the animal in the photo.",
            "overlap": 1,
            "deadline": datetime.now(UTC) + timedelta(days=7),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": f"s3://bench-out/{run}"},
        }
    )


def plan(wo: WorkOrder, side: str, n_tasks: int, n_projects: int, n_instances: int, bucket: str) -> dict[str, Any]:
    """A manifest of ``n_projects`` projects spread over the instances, and the items it names."""
    per = n_tasks // n_projects
    ids = [f"{side}-item-{i:07d}" for i in range(per * n_projects)]
    batch_of = [i // per for i in range(len(ids))]
    site_of = [f"site-{b % n_instances}" for b in batch_of]
    key_of = [f"{wo.id}-{side}--site-{b % n_instances}--r0-b{b:04d}" for b in batch_of]
    assignments = pa.Table.from_pydict(
        {
            "item_id": ids,
            "batch_id": [f"r0-b{b:04d}" for b in batch_of],
            "site_id": site_of,
            "project_key": key_of,
            "slot": pa.array([0] * len(ids), pa.int16()),
            "is_gold": [False] * len(ids),
            "round": pa.array([0] * len(ids), pa.int16()),
        },
        schema=ASSIGNMENTS,
    )
    content = pa.Table.from_pydict(
        {
            "item_id": ids,
            "text": [None] * len(ids),
            "media_uri": [f"s3://{bucket}/bench/media/{i % 997:04d}/{i:07d}.jpg" for i in range(len(ids))],
            "fields": [None] * len(ids),
        },
        schema=pa.schema([ITEMS.field(c) for c in ("item_id", "text", "media_uri", "fields")]),
    )
    batches = [
        {
            "project_key": f"{wo.id}-{side}--site-{b % n_instances}--r0-b{b:04d}",
            "batch_id": f"r0-b{b:04d}",
            "site_id": f"site-{b % n_instances}",
            "max_annotations": 1,
            "due_at": wo.deadline,
        }
        for b in range(n_projects)
    ]
    return {"assignments": assignments, "content": content, "batches": batches}


def run_baseline(
    wo: WorkOrder, inst: Instance, site_id: str, planned: dict[str, Any], presign: Presigner, key: Any
) -> float:
    """Raw SDK: create each project and import its payloads in one call. Payload building is not timed."""
    payloads = dict(iter_project_tasks(planned["assignments"], planned["content"], wo, presign, ref_key=key))
    config = render_label_config(wo)
    specs = [project_spec(wo, b, config) for b in planned["batches"] if b["site_id"] == site_id]
    started = time.perf_counter()
    for spec in specs:
        project = inst.sdk.projects.create(
            title=spec.title,
            description=spec.description,
            label_config=spec.label_config,
            expert_instruction=spec.instructions,
            maximum_annotations=spec.maximum_annotations,
        )
        assert project.id is not None
        inst.sdk.projects.import_tasks(id=project.id, request=payloads[spec.key])  # type: ignore[arg-type]
    return time.perf_counter() - started


def run_kazi(
    wo: WorkOrder, inst: Instance, site_id: str, planned: dict[str, Any], store: ObjectStore, key: Any
) -> float:
    """The split flow's site task for one site, minus its S3 reads of the manifest."""
    started = time.perf_counter()
    outcomes = materialise_batches(
        inst.client,
        wo,
        [b for b in planned["batches"] if b["site_id"] == site_id],
        planned["assignments"],
        planned["content"],
        ref_key=key,
        media_url=Presigner(store),
    )
    assert all(o.created and o.imported == o.planned for o in outcomes), outcomes
    return time.perf_counter() - started


def count_tasks(instances: list[Instance], prefix: str) -> int:
    return sum(p.task_count for inst in instances for p in inst.client.projects() if (p.key or "").startswith(prefix))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; sides alternate ABBA from the second")
    args = parser.parse_args(argv)

    settings: Settings = load_settings()
    store = ObjectStore(settings)
    instances = []
    for i in range(args.instances):
        url = f"http://127.0.0.1:{settings.ports.label_studio(i)}"
        token = local_label_studio_token(settings, i)
        instances.append(
            Instance(
                url,
                LabelStudioClient(url, token, site_id=f"site-{i}"),
                LabelStudio(base_url=url, api_key=token.get_secret_value(), timeout=300),
            )
        )
    run = uuid.uuid4().hex[:8]
    wo = work_order(run, settings.workspace_bucket)
    key = settings.pseudonym_key
    presign = Presigner(store)

    # Payload building alone, for the breakdown (refs, presigned URLs, dicts).
    sample = plan(wo, "x", args.tasks, args.projects, args.instances, settings.workspace_bucket)
    started = time.perf_counter()
    built = sum(
        len(t) for _, t in iter_project_tasks(sample["assignments"], sample["content"], wo, presign, ref_key=key)
    )
    build_s = time.perf_counter() - started

    sides = ["raw SDK import", "Kazi materialise"]
    # times[side][round] = seconds over all instances. Within a round each instance runs both sides back to back,
    # in an order that alternates by instance and round, so both see the same background load.
    times: dict[str, list[float]] = {side: [0.0] * args.repeat for side in sides}
    try:
        for r in range(args.repeat):
            planned = {
                side: plan(wo, f"{'rk'[j]}{r}", args.tasks, args.projects, args.instances, settings.workspace_bucket)
                for j, side in enumerate(sides)
            }
            for i, inst in enumerate(instances):
                site_id = f"site-{i}"
                for side in sides if (r + i) % 2 == 0 else sides[::-1]:
                    tag = f"{'rk'[sides.index(side)]}{r}"
                    if side == sides[0]:
                        seconds = run_baseline(wo, inst, site_id, planned[side], presign, key)
                    else:
                        seconds = run_kazi(wo, inst, site_id, planned[side], store, key)
                    times[side][r] += seconds
                    print(f"  round {r + 1}, {inst.url}: {side:<17} {seconds:7.2f} s", flush=True)
            for j, side in enumerate(sides):
                tag = f"{'rk'[j]}{r}"
                created = count_tasks(instances, f"{wo.id}-{tag}--")
                assert created == args.tasks // args.projects * args.projects, (side, created)
                for inst in instances:
                    delete_projects(inst.client, f"{wo.id}-{tag}--")
    finally:
        for inst in instances:
            delete_projects(inst.client, f"{wo.id}-")

    n = args.tasks // args.projects * args.projects
    print()
    print(
        f"{n:,} image tasks in {args.projects} projects over {args.instances} Label Studio instance(s), "
        f"{args.repeat} round(s)"
    )
    print(f"{'side':<20}{'total s':>10}{'best s':>10}{'tasks/s':>12}")
    for side in sides:
        total, best = sum(times[side]), min(times[side])
        print(f"{side:<20}{total:>10.2f}{best:>10.2f}{n * args.repeat / total:>12,.0f}")
    ratio = sum(times[sides[0]]) / sum(times[sides[1]])
    per_round = ", ".join(f"{a / b:.2f}x" for a, b in zip(times[sides[0]], times[sides[1]], strict=True))
    print(f"Kazi / raw throughput: {ratio:.2f}x over all rounds (per round: {per_round}; goal >= 0.90x)")
    print(f"of which Kazi's payload building (refs, presigned URLs, dicts) for {built:,} tasks: {build_s:.2f} s")


if __name__ == "__main__":
    main()
