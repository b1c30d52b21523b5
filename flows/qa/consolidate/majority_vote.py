"""Majority vote for classification, and the integer encoding every classification rule shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

ANSWER_COLUMNS = ("item_id", "annotator", "label")


@dataclass(frozen=True)
class EncodedAnswers:
    """Classification answers as integer codes: one row per (item, annotator) answer."""

    items: pd.Index
    annotators: pd.Index
    classes: tuple[str, ...]
    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    gold_item: np.ndarray
    gold_label: np.ndarray
    indicator: sp.csr_matrix  # items x (annotator * K + label), one 1 per answer

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_annotators(self) -> int:
        return len(self.annotators)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def vote_counts(self) -> np.ndarray:
        """Votes per item and class, shape (items, classes)."""
        k = self.n_classes
        return np.bincount(self.item * k + self.label, minlength=self.n_items * k).reshape(self.n_items, k)


def _codes(values: pd.Series, classes: Sequence[str], items: pd.Series, what: str) -> np.ndarray:
    # Factorising, then mapping the few distinct values, is several times faster than a Categorical with
    # fixed categories on a million strings.
    codes, uniques = pd.factorize(values)
    lookup = pd.Index(list(classes)).get_indexer(pd.Index(uniques, dtype=object))
    mapped = np.where(codes >= 0, lookup[np.maximum(codes, 0)] if lookup.size else -1, -1).astype(np.int64)
    bad = np.flatnonzero(mapped < 0)
    if bad.size:
        first = bad[0]
        raise ValueError(
            f"{what} {values.iloc[first]!r} of item {items.iloc[first]!r} is not one of the classes "
            f"{list(classes)} ({bad.size} such answers)"
        )
    return mapped


def _first_repeat(indicator: sp.csr_matrix, k: int) -> int | None:
    """Row of the first item some annotator answered twice, or None.

    Columns are (annotator, label) pairs, so a repeated answer is a summed entry above 1 (same label) or
    two entries of one annotator side by side in a row (indices are sorted after summing).
    """
    row = np.repeat(np.arange(indicator.shape[0]), np.diff(indicator.indptr))
    worker = indicator.indices // k
    same = (row[1:] == row[:-1]) & (worker[1:] == worker[:-1])
    repeated = np.concatenate([row[indicator.data > 1], row[1:][same]])
    return int(repeated.min()) if repeated.size else None


def encode_answers(answers: pd.DataFrame, classes: Sequence[str], gold: pd.Series | None = None) -> EncodedAnswers:
    """Check and encode classification answers; items keep their order of first appearance.

    Raises:
        ValueError: a column is missing, a label or gold label is not in ``classes``, or an annotator
            answered the same item twice (the caller keeps one answer per item and annotator).
    """
    missing = [c for c in ANSWER_COLUMNS if c not in answers.columns]
    if missing:
        raise ValueError(f"answers lack the column(s) {missing}")
    if len(classes) == 0 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be non-empty and unique, got {list(classes)}")
    item_codes, items = pd.factorize(answers["item_id"])
    annotator_codes, annotators = pd.factorize(answers["annotator"])
    if (item_codes < 0).any() or (annotator_codes < 0).any():
        raise ValueError("answers have a missing item_id or annotator")
    label_codes = _codes(answers["label"], classes, answers["item_id"], "label")
    item = item_codes.astype(np.int64)
    annotator = annotator_codes.astype(np.int64)
    k = len(classes)

    indicator = sp.csr_matrix(
        (np.ones(item.size), (item, annotator * k + label_codes)), shape=(len(items), len(annotators) * k)
    )
    indicator.sum_duplicates()
    repeat = _first_repeat(indicator, k)
    if repeat is not None:
        who = answers["annotator"].to_numpy()[item == repeat]
        twice = pd.Series(who)[pd.Series(who).duplicated()].iloc[0]
        raise ValueError(
            f"annotator {twice!r} answered item {items[repeat]!r} more than once; "
            "keep one answer per item and annotator"
        )

    gold_item = np.empty(0, dtype=np.int64)
    gold_label = np.empty(0, dtype=np.int64)
    if gold is not None and len(gold):
        gold_codes = _codes(gold.reset_index(drop=True), classes, gold.index.to_series(), "gold label")
        where = items.get_indexer(gold.index)
        seen = where >= 0
        gold_item, gold_label = where[seen].astype(np.int64), gold_codes[seen]

    return EncodedAnswers(
        items=pd.Index(items, name="item_id"),
        annotators=pd.Index(annotators, name="annotator"),
        classes=tuple(classes),
        item=item,
        annotator=annotator,
        label=label_codes,
        gold_item=gold_item,
        gold_label=gold_label,
        indicator=indicator,
    )


def item_frame(
    enc: EncodedAnswers, label: np.ndarray, confidence: np.ndarray, n_annotators: np.ndarray
) -> pd.DataFrame:
    """The per-item result frame shared by the classification rules."""
    names = pa.array(list(enc.classes), type=pa.string())
    return pd.DataFrame(
        {
            "label": pd.array(names.take(pa.array(label)), dtype="str"),
            "confidence": confidence.astype(np.float64),
            "n_annotators": n_annotators.astype(np.int64),
        },
        index=enc.items,
    )


def majority_vote(answers: pd.DataFrame, classes: Sequence[str], gold: pd.Series | None = None) -> pd.DataFrame:
    """Most frequent label per item.

    Ties go to the class listed first in ``classes``, so the client's order of classes decides, and the
    result does not depend on the order of the rows.

    Args:
        answers: Columns item_id, annotator, label; one answer per item and annotator, skips removed.
        classes: The allowed labels, in tie-breaking order.
        gold: Known answers, item_id -> label; these items get their known label with confidence 1.

    Returns:
        Indexed by item_id (order of first appearance): label, confidence (the winning share of the
        votes), n_annotators.
    """
    enc = encode_answers(answers, classes, gold)
    counts = enc.vote_counts()
    n = counts.sum(axis=1)
    label = counts.argmax(axis=1)
    confidence = counts[np.arange(enc.n_items), label] / np.maximum(n, 1)
    label[enc.gold_item] = enc.gold_label
    confidence[enc.gold_item] = 1.0
    return item_frame(enc, label, confidence, n)
