"""Output validation: Great Expectations (with Data Docs) against the same checks in plain pandas.

Builds a consolidated classification output of ``--items`` rows (the output contract's checks, the answer
shape, coverage and the quality thresholds: ``flows.qa.validate``), then validates it both ways, once
clean and once with a few defects (labels outside the set, confidences above 1, a missing item), and
checks that both engines report the same failures.

Run: ``.venv/bin/python -m bench.validation [--items 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.core.models import WorkOrder
from flows.qa.validate import ValidationInput, ValidationOutcome, build_validation, run_gx, run_pandas

CLASSES = ["cat", "dog", "bird", "fish", "horse"]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def work_order() -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "id": "bench-0001",
            "client_id": "bench",
            "source": {"uri": "s3://bench-in/items", "format": "parquet"},
            "task_type": "image_classification",
            "columns": {"media_uri": "uri"},
            "label_schema": {"classes": CLASSES},
            "deadline": datetime(2026, 12, 1, tzinfo=UTC),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": "s3://bench-out/bench-0001"},
        }
    )


def consolidated(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, len(CLASSES), n)
    labels = np.asarray(CLASSES, dtype=object)[codes]
    answers = np.asarray([json.dumps({"label": c}, separators=(",", ":")) for c in CLASSES], dtype=object)[codes]
    confidence = rng.beta(8, 1, n)
    sites = np.asarray(["nairobi-kibera", "gulu-north", "lagos-yaba"], dtype=object)[rng.integers(0, 3, n)]
    return pd.DataFrame(
        {
            "item_id": pd.array(np.char.add("i", np.char.zfill(np.arange(n).astype(str), 7)), dtype="str"),
            "answer": pd.array(answers, dtype="str"),
            "label": pd.array(labels, dtype="str"),
            "confidence": confidence,
            "n_annotators": np.full(n, 3, dtype=np.int32),
            "method": pd.array(["dawid_skene"] * n, dtype="str"),
            "sites": pd.array(sites, dtype="str"),
            "needs_rework": confidence < 0.7,
        }
    )


def with_defects(frame: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    out = frame.copy()
    rows = rng.choice(len(out), size=2 * k, replace=False)
    out.loc[out.index[rows[:k]], ["answer", "label"]] = ['{"label":"zebra"}', "zebra"]
    out.loc[out.index[rows[k:]], "confidence"] = 1.2
    return out.drop(index=out.index[-1])  # an accepted item without a row


def summary(outcome: ValidationOutcome) -> list[tuple[str, bool, int | None]]:
    return [(r.name, r.success, r.unexpected_count) for r in outcome.results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--defects", type=int, default=100, help="labels outside the set (and as many bad confidences)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    _, t_import = timed(lambda: __import__("great_expectations"))
    order = work_order()
    clean = consolidated(args.items, args.seed)
    accepted = clean["item_id"]
    sites = pd.DataFrame(
        {"n_gold": [4000, 3500, 3800], "gold_accuracy": [0.91, 0.88, 0.86]},
        index=pd.Index(["nairobi-kibera", "gulu-north", "lagos-yaba"], name="site_id"),
    )
    scenarios = {
        "clean": clean,
        f"{args.defects} + {args.defects} defects": with_defects(clean, args.defects, args.seed),
    }

    print(
        f"{args.items:,} consolidated items (image classification, {len(CLASSES)} classes); "
        f"great_expectations import {t_import:.1f} s (not counted below)"
    )
    print(f"{'scenario':<24}{'checks':>7}{'prepare s':>11}{'GX s':>8}{'pandas s':>10}{'GX / pandas':>13}  same result")
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, frame) in enumerate(scenarios.items()):
            validation: ValidationInput
            validation, t_prep = timed(
                lambda f=frame: build_validation(f, order, site_scores=sites, alpha=0.71, accepted_items=accepted)
            )
            gx_outcome, t_gx = timed(lambda v=validation, k=k: run_gx(v, Path(tmp) / f"docs-{k}"))
            pd_outcome, t_pd = timed(lambda v=validation: run_pandas(v))
            same = summary(gx_outcome) == summary(pd_outcome)
            print(
                f"{name:<24}{len(validation.checks):>7}{t_prep:>11.2f}{t_gx:>8.2f}{t_pd:>10.2f}"
                f"{t_gx / t_pd:>12.1f}x  {'yes' if same else 'NO'}"
            )
            if not gx_outcome.success:
                failures = ", ".join(f"{r.name}={r.unexpected_count}" for r in gx_outcome.failed)
                print(f"{'':<24}GX failures: {failures}")
            if not same:
                for a, b in zip(summary(gx_outcome), summary(pd_outcome), strict=True):
                    if a != b:
                        print(f"{'':<24}differs: GX {a} / pandas {b}")
    print(
        "prepare = helper columns from the answer JSON (shared); GX s includes its context, Data Docs build and files."
    )


if __name__ == "__main__":
    main()
