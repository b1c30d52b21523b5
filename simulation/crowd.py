"""Simulated classification crowds with known truth, for tests and the consolidation bench.

Everything is drawn with one ``numpy.random.Generator`` in a fixed order, so a seed fixes the whole crowd.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _ids(prefix: str, n: int) -> np.ndarray:
    width = max(len(str(max(n - 1, 0))), 1)
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), width)).astype(object)


def _distinct_annotators(rng: np.random.Generator, n_items: int, n_annotators: int, overlap: int) -> np.ndarray:
    """``overlap`` distinct annotators per item, uniformly, without a per-item loop.

    Draws the j-th annotator among the ``n_annotators - j`` not yet chosen and shifts it past the
    already-chosen ones (visited in ascending order), the textbook sampling without replacement.
    """
    chosen = np.empty((n_items, 0), dtype=np.int64)
    for j in range(overlap):
        draw = rng.integers(0, n_annotators - j, size=n_items)
        for col in range(j):
            draw += draw >= chosen[:, col]
        chosen = np.sort(np.column_stack([chosen, draw]), axis=1)
    # Shuffle the slots so slot 0 is not always the lowest annotator id.
    order = np.argsort(rng.random((n_items, overlap)), axis=1)
    return np.take_along_axis(chosen, order, axis=1)


def simulate_classification(
    n_items: int,
    classes: Sequence[str],
    n_annotators: int,
    *,
    overlap: int = 3,
    accuracy: tuple[float, float] = (8.0, 2.0),
    spammer_share: float = 0.1,
    confusion_pairs: Sequence[tuple[str, str]] = (),
    confusion_strength: float = 0.8,
    class_weights: Sequence[float] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """Simulate a crowd labelling items with known true classes.

    Honest annotators answer correctly with their own accuracy, drawn from ``Beta(*accuracy)``; when wrong
    they pick another class uniformly, except that a true class in ``confusion_pairs`` is mistaken for its
    partner with probability ``confusion_strength``. Spammers answer uniformly at random.

    Args:
        n_items: Items to label.
        classes: The label set (at least two).
        n_annotators: Size of the crowd (at least ``overlap``).
        overlap: Distinct annotators per item.
        accuracy: Beta(a, b) parameters of honest annotators' accuracy.
        spammer_share: Share of the crowd that answers at random (rounded to whole annotators).
        confusion_pairs: Pairs of classes honest annotators mix up, in both directions.
        confusion_strength: Probability that an error on a paired class goes to its partner.
        class_weights: Prior of the true classes; uniform when omitted.
        seed: Seed of the random generator; the same seed gives the same crowd.

    Returns:
        ``(answers, truth, profiles)``: answers with columns item_id, annotator, label (one row per item and
        annotator, grouped by item); truth, a Series item_id -> true label; profiles indexed by annotator with
        accuracy (the drawn accuracy; 1/K for spammers), is_spammer, n_answers.
    """
    k = len(classes)
    if k < 2:
        raise ValueError("simulate_classification needs at least two classes")
    if not 1 <= overlap <= n_annotators:
        raise ValueError(f"overlap must be between 1 and n_annotators ({n_annotators}), got {overlap}")
    if not 0 <= spammer_share <= 1:
        raise ValueError(f"spammer_share must be in [0, 1], got {spammer_share}")
    index = {c: i for i, c in enumerate(classes)}
    partner = np.full(k, -1, dtype=np.int64)
    for a, b in confusion_pairs:
        if a not in index or b not in index:
            raise ValueError(f"confusion pair ({a!r}, {b!r}) names a class not in classes")
        partner[index[a]], partner[index[b]] = index[b], index[a]

    rng = np.random.default_rng(seed)
    weights = np.full(k, 1.0 / k) if class_weights is None else np.asarray(class_weights, dtype=float)
    truth = rng.choice(k, size=n_items, p=weights / weights.sum())

    skill = rng.beta(accuracy[0], accuracy[1], size=n_annotators)
    spammer = np.zeros(n_annotators, dtype=bool)
    spammer[rng.permutation(n_annotators)[: round(spammer_share * n_annotators)]] = True
    skill[spammer] = 1.0 / k

    workers = _distinct_annotators(rng, n_items, n_annotators, overlap).ravel()
    true = np.repeat(truth, overlap)
    n = true.size

    u_correct, u_partner, u_other, u_spam = rng.random(n), rng.random(n), rng.integers(1, k, n), rng.integers(0, k, n)
    # A wrong answer is one of the K-1 other classes: an offset in 1..K-1 from the true class.
    label = (true + u_other) % k
    paired = partner[true]
    to_partner = (paired >= 0) & (u_partner < confusion_strength)
    label = np.where(to_partner, paired, label)
    label = np.where(u_correct < skill[workers], true, label)
    label = np.where(spammer[workers], u_spam, label)

    class_names = np.asarray(list(classes), dtype=object)
    item_ids = _ids("i", n_items)
    annotator_ids = _ids("a", n_annotators)
    answers = pd.DataFrame(
        {
            "item_id": pd.array(np.repeat(item_ids, overlap), dtype="str"),
            "annotator": pd.array(annotator_ids[workers], dtype="str"),
            "label": pd.array(class_names[label], dtype="str"),
        }
    )
    truth_series = pd.Series(
        pd.array(class_names[truth], dtype="str"), index=pd.Index(item_ids, dtype="str", name="item_id"), name="label"
    )
    profiles = pd.DataFrame(
        {
            "accuracy": skill,
            "is_spammer": spammer,
            "n_answers": np.bincount(workers, minlength=n_annotators),
        },
        index=pd.Index(annotator_ids, dtype="str", name="annotator"),
    )
    return answers, truth_series, profiles
