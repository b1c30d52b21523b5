"""Delivery writers: Kazi's column-wise writers against the obvious per-row Python writers, same rows.

Run: ``.venv/bin/python -m bench.deliver_formats [--size 200000] [--task image_classification]``

The baseline is what one would write first: parse each row's JSON, build a dict, ``json.dumps`` it (or
``pyarrow.Table.from_pylist`` / ``pandas.json_normalize`` for Parquet and CSV). Both sides get the same
deliverable frame; outputs are compared on a sample of rows before timings are printed.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flows.core.models import DeliveryFormat, TaskType
from flows.deliver.formats import FORMAT_WRITERS, DeliveryContext

CLASSES = ("cat", "dog", "bird", "fish", "horse")


def deliverable(n: int, task: TaskType, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [f"item-{i:09d}" for i in rng.permutation(n)]
    records = [
        json.dumps(
            {
                "sku": f"SKU-{i}",
                "url": f"s3://acme/img/{i}.jpg",
                "price": round(i * 0.37, 2),
                "width": 640,
                "height": 480,
            }
        )
        for i in range(n)
    ]
    labels = np.array(CLASSES)[rng.integers(0, len(CLASSES), n)]
    if task == TaskType.OBJECT_DETECTION:
        counts = rng.integers(0, 4, n)
        answers = [
            json.dumps(
                {
                    "boxes": [
                        {
                            "label": str(labels[(i + j) % n]),
                            "x": float(j * 10),
                            "y": 12.5,
                            "width": 20.0,
                            "height": 30.25,
                        }
                        for j in range(c)
                    ]
                }
            )
            for i, c in enumerate(counts)
        ]
    else:
        answers = [f'{{"label":"{label}"}}' for label in labels]
    return pd.DataFrame(
        {
            "item_id": pd.Series(ids, dtype="str"),
            "media_uri": pd.Series([f"s3://acme/img/{i}.jpg" for i in range(n)], dtype="str"),
            "text": pd.Series([None] * n, dtype="str"),
            "record": pd.Series(records, dtype="str"),
            "answer": pd.Series(answers, dtype="str"),
            "label": pd.Series(labels if task != TaskType.OBJECT_DETECTION else [None] * n, dtype="str"),
            "confidence": rng.random(n),
            "sites": "site-a,site-b",
            "n_annotators": np.int32(3),
            "method": "dawid_skene",
            "qa_version": "qa-1",
        }
    )


# --- Per-row baselines -----------------------------------------------------------------------------


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.sort_values("item_id").to_dict("records")
    for r in rows:
        r["record"] = json.loads(r["record"])
        r["answer"] = json.loads(r["answer"])
        c = r["confidence"]
        r["confidence"] = None if c is None or c != c else c
        r["lineage"] = {
            "sites": [s for s in (r["sites"] or "").split(",") if s],
            "n_annotators": int(r["n_annotators"]),
            "method": r["method"],
            "qa_version": r["qa_version"],
        }
    return rows


def _line(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("item_id", "record", "answer", "confidence", "lineage")}


def baseline_jsonl(frame: pd.DataFrame, ctx: DeliveryContext) -> bytes:
    return "".join(json.dumps(_line(r), ensure_ascii=False) + "\n" for r in _rows(frame)).encode()


def baseline_parquet(frame: pd.DataFrame, ctx: DeliveryContext) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([_line(r) for r in _rows(frame)]), sink, compression="zstd")
    return sink.getvalue()


def baseline_csv(frame: pd.DataFrame, ctx: DeliveryContext) -> bytes:
    flat = pd.json_normalize([_line(r) for r in _rows(frame)])
    flat = flat.map(lambda v: json.dumps(v) if isinstance(v, list) else v)
    flat = flat.map(lambda v: "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v)
    return flat.to_csv(index=False).encode()


def baseline_coco(frame: pd.DataFrame, ctx: DeliveryContext) -> bytes:
    cat = {c: i + 1 for i, c in enumerate(ctx.classes)}
    images, anns = [], []
    for i, r in enumerate(_rows(frame), start=1):
        w, h = r["record"]["width"], r["record"]["height"]
        images.append({"id": i, "file_name": r["media_uri"].split("/", 3)[3], "width": w, "height": h})
        if ctx.task_type == TaskType.OBJECT_DETECTION:
            for b in r["answer"]["boxes"]:
                bw, bh = b["width"] * w / 100, b["height"] * h / 100
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i,
                        "category_id": cat[b["label"]],
                        "bbox": [b["x"] * w / 100, b["y"] * h / 100, bw, bh],
                        "area": bw * bh,
                        "iscrowd": 0,
                        "score": r["confidence"],
                    }
                )
        else:
            anns.append({"id": i, "image_id": i, "category_id": cat[r["answer"]["label"]], "iscrowd": 0})
    cats = [{"id": i, "name": c} for c, i in cat.items()]
    return json.dumps({"images": images, "annotations": anns, "categories": cats}).encode()


def baseline_label_studio(frame: pd.DataFrame, ctx: DeliveryContext) -> bytes:
    tasks = []
    for r in _rows(frame):
        if ctx.task_type == TaskType.OBJECT_DETECTION:
            result = [
                {
                    "id": f"box{j}",
                    "from_name": "box",
                    "to_name": "image",
                    "type": "rectanglelabels",
                    "value": {**b, "rectanglelabels": [b["label"]]},
                }
                for j, b in enumerate(r["answer"]["boxes"])
            ]
        else:
            result = [
                {
                    "id": "label",
                    "from_name": "label",
                    "to_name": "image",
                    "type": "choices",
                    "value": {"choices": [r["answer"]["label"]]},
                }
            ]
        data = {**r["record"], "item_id": r["item_id"], "image": r["media_uri"]}
        tasks.append({"data": data, "annotations": [{"result": result}], "meta": {"kazi": r["lineage"]}})
    return json.dumps(tasks, ensure_ascii=False).encode()


def baseline_ground_truth(frame: pd.DataFrame, ctx: DeliveryContext) -> bytes:
    out = []
    job = ctx.job_name
    for r in _rows(frame):
        line = {"source-ref": r["media_uri"], **r["record"]}
        if ctx.task_type == TaskType.OBJECT_DETECTION:
            w, h = r["record"]["width"], r["record"]["height"]
            line[job] = {
                "image_size": [{"width": w, "height": h, "depth": 3}],
                "annotations": [
                    {
                        "class_id": ctx.classes.index(b["label"]),
                        "left": round(b["x"] * w / 100),
                        "top": round(b["y"] * h / 100),
                        "width": round(b["width"] * w / 100),
                        "height": round(b["height"] * h / 100),
                    }
                    for b in r["answer"]["boxes"]
                ],
            }
        else:
            line[job] = ctx.classes.index(r["answer"]["label"])
        line[f"{job}-metadata"] = {
            "confidence": r["confidence"] or 0.0,
            "job-name": job,
            "creation-date": ctx.creation_date,
        }
        out.append(json.dumps(line, ensure_ascii=False))
    return ("\n".join(out) + "\n").encode()


BASELINES: dict[DeliveryFormat, Callable[[pd.DataFrame, DeliveryContext], bytes]] = {
    DeliveryFormat.JSONL: baseline_jsonl,
    DeliveryFormat.PARQUET: baseline_parquet,
    DeliveryFormat.CSV: baseline_csv,
    DeliveryFormat.COCO: baseline_coco,
    DeliveryFormat.LABEL_STUDIO: baseline_label_studio,
    DeliveryFormat.GROUND_TRUTH: baseline_ground_truth,
}


def same_jsonl(ours: bytes, theirs: bytes, sample: int = 1000) -> bool:
    a, b = ours.splitlines(), theirs.splitlines()
    step = max(1, len(a) // sample)
    return len(a) == len(b) and all(json.loads(a[i]) == json.loads(b[i]) for i in range(0, len(a), step))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--task", choices=["image_classification", "object_detection"], default="image_classification")
    args = parser.parse_args()
    task = TaskType(args.task)
    frame = deliverable(args.size, task)
    ctx = DeliveryContext(task, classes=CLASSES, job_name="acme-1", creation_date="2026-11-01T00:00:00")

    print(f"{args.size:,} items, {task.value}")
    print(f"{'format':<14}{'kazi s':>9}{'per-row s':>11}{'speed-up':>10}{'MB':>8}  check")
    for fmt, writer in FORMAT_WRITERS.items():
        (body, rows), t_ours = timed(lambda w=writer: w.write(frame, ctx))
        theirs, t_base = timed(lambda f=fmt: BASELINES[f](frame, ctx))
        if fmt == DeliveryFormat.JSONL:
            check = "same rows" if same_jsonl(body, theirs) else "DIFFERENT"
        elif fmt == DeliveryFormat.PARQUET:
            a = pq.read_table(io.BytesIO(body)).slice(0, 1000).to_pylist()
            b = pq.read_table(io.BytesIO(theirs)).slice(0, 1000).to_pylist()
            check = "same rows" if a == b else "DIFFERENT"
        else:
            check = f"{rows:,} rows"
        print(f"{fmt.value:<14}{t_ours:>9.2f}{t_base:>11.2f}{t_base / t_ours:>9.1f}x{len(body) / 1e6:>8.1f}  {check}")


if __name__ == "__main__":
    main()
