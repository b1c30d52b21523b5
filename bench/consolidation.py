"""Dawid-Skene consolidation: Kazi's vectorised EM against crowd-kit's DawidSkene, on one simulated crowd.

Run: ``.venv/bin/python -m bench.consolidation [--items 1000000]`` (crowd-kit is in the ``bench`` group).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from crowdkit.aggregation import DawidSkene, OneCoinDawidSkene

from flows.qa.consolidate import dawid_skene, majority_vote
from simulation.crowd import simulate_classification


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--annotators", type=int, default=500)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--spammers", type=float, default=0.1, help="share of annotators answering at random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one-coin", action="store_true", help="also run crowd-kit's OneCoinDawidSkene (slow)")
    args = parser.parse_args()

    classes = [f"c{i}" for i in range(args.classes)]
    # Accuracy Beta(6, 2): mean 0.75, most annotators between 0.5 and 0.95; one pair of look-alike classes.
    answers, truth, _ = simulate_classification(
        args.items,
        classes,
        args.annotators,
        overlap=args.overlap,
        accuracy=(6.0, 2.0),
        spammer_share=args.spammers,
        confusion_pairs=[(classes[0], classes[1])],
        seed=args.seed,
    )
    crowd = answers.rename(columns={"item_id": "task", "annotator": "worker"})

    def accuracy(labels: pd.Series) -> float:
        return float((labels.to_numpy() == truth.reindex(labels.index).to_numpy()).mean())

    rows: list[tuple[str, float, float, int | None]] = []
    mv, t = timed(lambda: majority_vote(answers, classes))
    rows.append(("kazi majority_vote", t, accuracy(mv["label"]), None))
    ours, t_ours = timed(lambda: dawid_skene(answers, classes, max_iter=100))
    rows.append(("kazi dawid_skene (full)", t_ours, accuracy(ours.items["label"]), ours.iterations))
    ours_oc, t = timed(lambda: dawid_skene(answers, classes, model="one_coin", max_iter=100))
    rows.append(("kazi dawid_skene (one_coin)", t, accuracy(ours_oc.items["label"]), ours_oc.iterations))
    ck = DawidSkene(n_iter=100)
    ck_labels, t_ck = timed(lambda: ck.fit_predict(crowd))
    rows.append(("crowd-kit DawidSkene", t_ck, accuracy(ck_labels), len(ck.loss_history_)))
    if args.one_coin:
        ck_oc = OneCoinDawidSkene(n_iter=100)
        labels, t = timed(lambda: ck_oc.fit_predict(crowd))
        rows.append(("crowd-kit OneCoinDawidSkene", t, accuracy(labels), len(ck_oc.loss_history_)))

    same = float((ck_labels.reindex(ours.items.index) == ours.items["label"]).mean())
    print(
        f"{args.items:,} items x {args.overlap} answers, {args.annotators} annotators "
        f"({args.spammers:.0%} spammers), {args.classes} classes, seed {args.seed}"
    )
    print(f"{'method':<30}{'time s':>9}{'accuracy':>10}{'iters':>7}{'vs crowd-kit DS':>17}")
    for name, seconds, acc, iters in rows:
        print(f"{name:<30}{seconds:>9.2f}{acc:>10.4f}{iters if iters is not None else '-':>7}{t_ck / seconds:>16.1f}x")
    print(f"kazi DS speed-up over crowd-kit DS: {t_ck / t_ours:.1f}x; same label on {same:.4%} of items")


if __name__ == "__main__":
    main()
