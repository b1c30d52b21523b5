"""Consolidation rules, one module per kind of answer, chosen by task type.

Every rule returns the same frame: item_id, answer (the normalised consensus as JSON: ``{"label": ...}``,
``{"boxes": [...]}``, ``{"text": ...}`` or ``{"fields": {...}}``), label (classification only, else null),
confidence in [0, 1], n_annotators, method. That is ``flows.core.schemas.CONSOLIDATED`` without sites and
needs_rework, which the flow adds. A new task type is one module and one line in ``CONSOLIDATORS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from flows.core.models import FieldSpec, TaskType, WorkOrder
from flows.qa.consolidate.boxes import consolidate_boxes
from flows.qa.consolidate.dawid_skene import DawidSkeneResult, dawid_skene
from flows.qa.consolidate.fields import consolidate_fields
from flows.qa.consolidate.majority_vote import majority_vote
from flows.qa.consolidate.transcription import consolidate_transcriptions

__all__ = [
    "CONSOLIDATED_COLUMNS",
    "CONSOLIDATORS",
    "ConsolidationParams",
    "DawidSkeneResult",
    "consolidate",
    "consolidate_boxes",
    "consolidate_fields",
    "consolidate_transcriptions",
    "dawid_skene",
    "majority_vote",
]

Method = Literal["dawid_skene", "one_coin", "majority_vote"]

CONSOLIDATED_COLUMNS = ("item_id", "answer", "label", "confidence", "n_annotators", "method")


@dataclass(frozen=True)
class ConsolidationParams:
    """What the rules need to know beyond the answers."""

    classes: tuple[str, ...] = ()
    fields: tuple[FieldSpec, ...] = ()
    method: Method = "dawid_skene"
    gold: pd.Series | None = None
    weights: pd.Series | None = None
    box_iou: float = 0.5
    box_quorum: int | None = None
    max_iter: int = 100
    tol: float = 1e-5

    @classmethod
    def from_work_order(
        cls, order: WorkOrder, gold: pd.Series | None = None, weights: pd.Series | None = None
    ) -> ConsolidationParams:
        return cls(
            classes=tuple(order.label_schema.classes),
            fields=tuple(order.label_schema.fields),
            method=order.qa.method,
            gold=gold,
            weights=weights,
            box_iou=order.qa.box_iou,
        )


Rule = Callable[[pd.DataFrame, ConsolidationParams], pd.DataFrame]


def _answers_with(answers: pd.DataFrame, key: str) -> pd.DataFrame:
    """``answers`` with a ``key`` column, taken from the JSON ``answer`` column when it is not there."""
    if key in answers.columns:
        return answers
    if "answer" not in answers.columns:
        raise ValueError(f"answers need a {key!r} column or an 'answer' column of JSON objects")

    def pick(text: Any) -> Any:
        if text is None or (isinstance(text, float) and np.isnan(text)):
            return None
        return json.loads(text).get(key)

    return answers.assign(**{key: [pick(t) for t in answers["answer"].to_numpy(dtype=object)]})


def _frame(items: pd.DataFrame, answer: Sequence[str], label: Any, method: str) -> pd.DataFrame:
    n = len(items)
    return pd.DataFrame(
        {
            "item_id": pd.array(items.index.to_numpy(dtype=object), dtype="str"),
            "answer": pd.array(list(answer), dtype="str"),
            "label": pd.array([None] * n if label is None else list(label), dtype="str"),
            "confidence": items["confidence"].to_numpy(dtype=np.float64).clip(0.0, 1.0),
            "n_annotators": items["n_annotators"].to_numpy().astype(np.int32),
            "method": pd.array([method] * n, dtype="str"),
        }
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _classification(answers: pd.DataFrame, p: ConsolidationParams) -> pd.DataFrame:
    answers = _answers_with(answers, "label")
    if p.method == "majority_vote":
        items = majority_vote(answers, p.classes, gold=p.gold)
    else:
        model: Literal["full", "one_coin"] = "full" if p.method == "dawid_skene" else "one_coin"
        items = dawid_skene(answers, p.classes, gold=p.gold, model=model, max_iter=p.max_iter, tol=p.tol).items
    as_json = np.asarray([_dumps({"label": c}) for c in p.classes], dtype=object)
    codes = pd.Categorical(items["label"], categories=list(p.classes)).codes
    return _frame(items, as_json[codes], items["label"].to_numpy(dtype=object), p.method)


def _boxes(answers: pd.DataFrame, p: ConsolidationParams) -> pd.DataFrame:
    items = consolidate_boxes(
        _answers_with(answers, "boxes"),
        iou_threshold=p.box_iou,
        weights=p.weights,
        quorum=p.box_quorum,
        classes=p.classes or None,
    )
    return _frame(items, [_dumps({"boxes": b}) for b in items["boxes"]], None, "box_clusters")


def _transcription(answers: pd.DataFrame, p: ConsolidationParams) -> pd.DataFrame:
    items = consolidate_transcriptions(_answers_with(answers, "text"))
    return _frame(items, [_dumps({"text": t}) for t in items["text"]], None, "text_medoid")


def _fields(answers: pd.DataFrame, p: ConsolidationParams) -> pd.DataFrame:
    items = consolidate_fields(_answers_with(answers, "fields"), p.fields)
    return _frame(items, [_dumps({"fields": f}) for f in items["fields"]], None, "field_majority")


CONSOLIDATORS: dict[TaskType, Rule] = {
    TaskType.IMAGE_CLASSIFICATION: _classification,
    TaskType.TEXT_CLASSIFICATION: _classification,
    TaskType.OBJECT_DETECTION: _boxes,
    TaskType.AUDIO_TRANSCRIPTION: _transcription,
    TaskType.LISTING_VERIFICATION: _fields,
}


def consolidate(
    task_type: TaskType | str, answers: pd.DataFrame, params: ConsolidationParams | None = None
) -> pd.DataFrame:
    """One consensus answer per item with the rule registered for ``task_type``.

    Args:
        task_type: The work order's task type.
        answers: Non-skipped answers: item_id, annotator and the rule's answer column (label, boxes, text
            or fields), or the annotation log's JSON ``answer`` column to take it from.
        params: Classes, fields, method, gold, weights and thresholds; defaults when omitted.

    Returns:
        Columns ``CONSOLIDATED_COLUMNS``, one row per item, in order of first appearance.
    """
    rule = CONSOLIDATORS.get(TaskType(task_type))
    if rule is None:
        raise ValueError(f"no consolidation rule for task type {task_type!r}")
    return rule(answers, params or ConsolidationParams())
