"""Annotation parsing: Kazi's ``export_to_rows`` against a raw "one export call parsed to a table" baseline.

Both sides start from the same export bytes (Label Studio's JSON export, written by hand in its format):

- baseline: ``json.loads`` + ``pyarrow.Table.from_pylist`` of the annotations flattened naively (each
  annotation dict with its task id and data keys beside it, nested result and all);
- kazi: ``json.loads`` + :func:`flows.annotate.normalise.export_to_rows` (validated, normalised answers,
  pseudonymised annotators, parsed timestamps, the ``ANNOTATIONS`` schema).

Ratio = baseline time / kazi time (1.0 = parsing costs nothing beyond reading the JSON; the goal is >= 0.9).
Run: ``.venv/bin/python -m bench.annotation_parse [--size 20000] [--annotations 3] [--task-type ...]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import SecretStr

from flows.annotate.normalise import export_to_rows
from flows.core.models import TaskType

KEY = SecretStr("bench-pseudonym-key")
CLASSES = ["cat", "dog", "bird", "horse", "other"]


def _result(task_type: TaskType, rng: np.random.Generator) -> list[dict[str, Any]]:
    def region(name: str, to: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "value": value,
            "id": f"r{rng.integers(1 << 40):x}",
            "from_name": name,
            "to_name": to,
            "type": kind,
            "origin": "manual",
        }

    if task_type in (TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION):
        to = "image" if task_type == TaskType.IMAGE_CLASSIFICATION else "text"
        return [region("label", to, "choices", {"choices": [CLASSES[int(rng.integers(len(CLASSES)))]]})]
    if task_type == TaskType.OBJECT_DETECTION:
        boxes = []
        for _ in range(int(rng.integers(0, 5))):
            x, y, w, h = (float(v) for v in rng.uniform(0, 50, 4))
            r = region(
                "box",
                "image",
                "rectanglelabels",
                {
                    "x": x,
                    "y": y,
                    "width": w,
                    "height": h,
                    "rotation": 0,
                    "rectanglelabels": [CLASSES[int(rng.integers(5))]],
                },
            )
            boxes.append({"original_width": 1280, "original_height": 853, "image_rotation": 0, **r})
        return boxes
    if task_type == TaskType.AUDIO_TRANSCRIPTION:
        return [
            region("transcription", "audio", "textarea", {"text": ["habari ya asubuhi " * int(rng.integers(1, 6))]})
        ]
    return [
        region("field_phone", "fields_phone", "textarea", {"text": ["+254 712 345 678"]}),
        region("field_website", "fields_website", "textarea", {"text": ["https://example.co.ke"]}),
        region("listing_valid", "fields_phone", "choices", {"choices": ["yes"]}),
    ]


def make_export(n_tasks: int, per_task: int, task_type: TaskType, seed: int = 0) -> bytes:
    """A Label Studio JSON export of ``n_tasks`` tasks with ``per_task`` annotations each, as bytes."""
    rng = np.random.default_rng(seed)
    tasks = []
    ann_id = 0
    for t in range(1, n_tasks + 1):
        annotations = []
        for _ in range(per_task):
            ann_id += 1
            user = int(rng.integers(1, 200))
            skipped = bool(rng.random() < 0.03)
            annotations.append(
                {
                    "id": ann_id,
                    "completed_by": user,
                    "result": [] if skipped else _result(task_type, rng),
                    "was_cancelled": skipped,
                    "ground_truth": False,
                    "created_at": f"2026-11-23T{8 + t % 10:02d}:{t % 60:02d}:{ann_id % 60:02d}.{ann_id % 999999:06d}Z",
                    "updated_at": f"2026-11-23T{8 + t % 10:02d}:{t % 60:02d}:{ann_id % 60:02d}.{ann_id % 999999:06d}Z",
                    "draft_created_at": None,
                    "lead_time": float(rng.uniform(2, 60)),
                    "prediction": {},
                    "result_count": 0,
                    "unique_id": f"{ann_id:032x}",
                    "import_id": None,
                    "last_action": None,
                    "bulk_created": False,
                    "task": t,
                    "project": 3,
                    "updated_by": user,
                    "parent_prediction": None,
                    "parent_annotation": None,
                    "last_created_by": None,
                }
            )
        tasks.append(
            {
                "id": t,
                "annotations": annotations,
                "file_upload": None,
                "drafts": [],
                "predictions": [],
                "data": {
                    "image": f"https://s3.local/kazi/items/{t:08d}.jpg?X-Amz-Signature={t:064x}",
                    "item_id": f"it-{t:012x}",
                    "batch_id": f"r0-b{t // 1000:04d}",
                    "kazi_task_key": f"acme-0042--nairobi--r0-b{t // 1000:04d}/it-{t:012x}",
                },
                "meta": {},
                "created_at": "2026-11-23T07:00:00.000000Z",
                "updated_at": "2026-11-23T18:00:00.000000Z",
                "inner_id": t,
                "total_annotations": per_task,
                "cancelled_annotations": 0,
                "total_predictions": 0,
                "comment_count": 0,
                "unresolved_comment_count": 0,
                "last_comment_updated_at": None,
                "project": 3,
                "updated_by": None,
                "comment_authors": [],
            }
        )
    return json.dumps(tasks).encode()


def baseline(raw: bytes) -> pa.Table:
    """One export call parsed to a table, naively: every annotation flattened beside its task's keys."""
    tasks = json.loads(raw)
    rows = [
        {**a, "task_id": t["id"], "item_id": t["data"]["item_id"], "batch_id": t["data"]["batch_id"]}
        for t in tasks
        for a in t["annotations"]
    ]
    return pa.Table.from_pylist(rows)


def kazi(raw: bytes, task_type: TaskType) -> pa.Table:
    return export_to_rows(json.loads(raw), task_type=task_type, site_id="nairobi", project_id=3, key=KEY)


def run(fn: Callable[[], Any], gc_off: bool) -> tuple[Any, float]:
    gc.collect()
    if gc_off:
        gc.disable()
    try:
        start = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - start
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=20_000, help="tasks in the export")
    parser.add_argument("--annotations", type=int, default=3, help="annotations per task")
    parser.add_argument("--task-type", type=TaskType, default=TaskType.IMAGE_CLASSIFICATION, choices=list(TaskType))
    parser.add_argument("--repeat", type=int, default=7, help="rounds; each round runs every step once, in turn")
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="disable Python's garbage collector while each step runs (json.loads of a large export is about "
        "2-3x faster so; it shows the parsing overhead against a fast JSON decode)",
    )
    args = parser.parse_args()

    raw = make_export(args.size, args.annotations, args.task_type)
    parsed = json.loads(raw)
    steps: dict[str, Callable[[], Any]] = {
        "json.loads alone": lambda: json.loads(raw),
        "baseline: json.loads + Table.from_pylist (naive)": lambda: baseline(raw),
        "kazi: json.loads + export_to_rows": lambda: kazi(raw, args.task_type),
        "kazi: export_to_rows alone (already parsed)": lambda: export_to_rows(
            parsed, task_type=args.task_type, site_id="nairobi", project_id=3, key=KEY
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    results: dict[str, Any] = {}
    # Steps take turns within each round, so a busy machine slows them alike instead of one of them.
    for _ in range(args.repeat):
        for name, fn in steps.items():
            results[name], seconds = run(fn, args.gc_off)
            times[name].append(seconds)
    base_name, kazi_name = list(steps)[1:3]
    assert results[base_name].num_rows == results[kazi_name].num_rows == args.size * args.annotations

    print(
        f"{args.size:,} tasks x {args.annotations} annotations ({results[kazi_name].num_rows:,} rows), "
        f"{args.task_type.value}, export {len(raw) / 1e6:.1f} MB, gc {'off' if args.gc_off else 'on'}; "
        f"median and best of {args.repeat} rounds"
    )
    print(f"{'step':<52}{'median s':>10}{'best s':>9}{'vs baseline':>13}")
    med_base = statistics.median(times[base_name])
    for name, runs in times.items():
        med = statistics.median(runs)
        print(f"{name:<52}{med:>10.3f}{min(runs):>9.3f}{med_base / med:>12.2f}x")
    per_round = [b / k for b, k in zip(times[base_name], times[kazi_name], strict=True)]
    print(
        f"ratio baseline/kazi: median of rounds {statistics.median(per_round):.2f}, of medians "
        f"{med_base / statistics.median(times[kazi_name]):.2f}, of bests "
        f"{min(times[base_name]) / min(times[kazi_name]):.2f} (goal >= 0.9)"
    )


if __name__ == "__main__":
    main()
