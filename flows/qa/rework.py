"""Which items go back for another round, and the Label Studio input of that review round.

An item is sent to rework for any of these reasons (codes in :data:`REASONS`):

* ``low_confidence``: its consensus confidence is below ``min_confidence``.
* ``no_majority``: the annotators disagree: no answer has more than half of the votes (classification,
  where answers are labels; the other task types express disagreement through their confidence).
* ``excluded_annotator``: answers by excluded annotators (flagged as unreliable) were removed, leaving
  fewer than k (the work order's overlap).
* ``too_few_answers``: fewer than k answers, with no excluded annotator involved (tasks were skipped).

A review round goes to the best-scoring eligible site, with the previous answers loaded as Label Studio
predictions, so the reviewer corrects an answer instead of starting from nothing. The result format per
task type uses the control names of ``flows/split/label_configs.py``:

======================  =====================================================================================
image/text              ``label`` (choices) on ``image`` / ``text``
classification
object_detection        ``box`` (rectanglelabels) on ``image``
audio_transcription     ``transcription`` (textarea) and ``label`` (choices) on ``audio``
listing_verification    ``field_<name>`` (textarea, or choices yes/no for booleans) on ``fields_<name>``,
                        ``listing_valid`` (choices yes/no) on ``fields_<first field>``
======================  =====================================================================================

Fields of other task types are ``field_<name>`` controls on the main object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.arrays import combine
from flows.core.models import QAThresholds, TaskType, WorkOrder

#: Reason codes, in the order they are listed, with what they mean in plain words.
REASONS: Mapping[str, str] = {
    "low_confidence": "the consensus answer is uncertain (confidence below the threshold)",
    "no_majority": "the annotators disagree: no answer has a majority",
    "excluded_annotator": "answers by excluded annotators were removed, leaving too few",
    "too_few_answers": "too few answers (tasks skipped)",
}

REWORK_COLUMNS = (
    "item_id",
    "reason",
    *REASONS,
    "confidence",
    "n_answers",
    "n_excluded",
    "top_share",
)

# Control and object names of flows/split/label_configs.py (a stage never imports another stage;
# tests/qa/test_qa_rework.py checks these against the rendered configs).
MAIN_OBJECT: Mapping[TaskType, str] = {
    TaskType.IMAGE_CLASSIFICATION: "image",
    TaskType.OBJECT_DETECTION: "image",
    TaskType.TEXT_CLASSIFICATION: "text",
    TaskType.AUDIO_TRANSCRIPTION: "audio",
}
BOOLEAN_CHOICES: Mapping[bool, str] = {True: "yes", False: "no"}
MODEL_VERSION = "kazi-qa-round-{round}"

_CLASSIFICATION = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION})


def _answered(log: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("item_id", "annotator", "skipped") if c not in log.columns]
    if missing:
        raise ValueError(f"log lacks the column(s) {missing}")
    return log.loc[~log["skipped"].fillna(False).to_numpy(dtype=bool)]


def _arrow(values: Any) -> pa.Array:
    """A column as an Arrow array (zero-copy from pandas' Arrow-backed strings)."""
    array = pa.array(values, from_pandas=True) if not isinstance(values, pa.Array | pa.ChunkedArray) else values
    return combine(array)


def _codes(values: Any) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes (-1 for null) and the distinct values, in order of first appearance.

    Arrow's dictionary encoding: pandas' string indexes hash through Python objects, which made
    reindexing a few million item ids take seconds.
    """
    encoded = pc.dictionary_encode(_arrow(values))
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary


def _member(values: pa.Array, members: Iterable[str]) -> np.ndarray:
    wanted = pa.array(list(members), pa.string())
    if len(wanted) == 0:
        return np.zeros(len(values), dtype=bool)
    return pc.fill_null(pc.is_in(values.cast(pa.string()), value_set=wanted), False).to_numpy(zero_copy_only=False)


def _first_per_code(codes: np.ndarray, values: np.ndarray, n: int, fill: Any) -> np.ndarray:
    """``values`` of the first row of each code, ``fill`` where a code has no row."""
    out = np.full(n, fill, dtype=values.dtype if fill is not None else object)
    out[codes[::-1]] = values[::-1]  # written last to first, so the first row of a code stays
    return out


def select_rework(
    consolidated: pd.DataFrame,
    log: pd.DataFrame,
    thresholds: QAThresholds,
    *,
    min_answers: int,
    excluded_annotators: Iterable[str] = (),
    gold_items: Iterable[str] = (),
    value_col: str = "label",
) -> pd.DataFrame:
    """The items to rework, each with the reasons why.

    Args:
        consolidated: Consensus per item: item_id and confidence (``flows.core.schemas.CONSOLIDATED``).
        log: The annotation log: item_id, annotator, skipped and, for the majority test, ``value_col``.
        thresholds: The work order's QA thresholds (``min_confidence``).
        min_answers: Answers an item needs (the work order's overlap, k).
        excluded_annotators: Annotators whose answers no longer count.
        gold_items: Gold items are never reworked: their answer is known.
        value_col: The log's label column; the majority test runs where it has values (classification).

    Returns:
        Columns :data:`REWORK_COLUMNS`, one row per item to rework: ``reason`` (the codes joined by ", "),
        a boolean column per reason, confidence (NaN without a consensus), n_answers (answers that still
        count), n_excluded (answers removed), top_share (the most frequent label's share of the answers,
        NaN without labels). Sorted by confidence (missing first), then item_id.
    """
    if min_answers < 1:
        raise ValueError(f"min_answers must be at least 1, got {min_answers}")
    if "item_id" not in consolidated.columns or "confidence" not in consolidated.columns:
        raise ValueError("consolidated needs the columns item_id and confidence")
    answered = _answered(log)
    is_answer = ~log["skipped"].fillna(False).to_numpy(dtype=bool)
    # One code per item over both frames, consolidated first; items only ever skipped count too.
    n_cons = len(consolidated)
    codes, item_ids = _codes(
        pa.chunked_array(
            [_arrow(consolidated["item_id"]).cast(pa.string()), _arrow(log["item_id"]).cast(pa.string())],
            type=pa.string(),
        )
    )
    n = len(item_ids)
    cons_code, log_code = codes[:n_cons], codes[n_cons:][is_answer]
    confidence = _first_per_code(cons_code, consolidated["confidence"].to_numpy(dtype=np.float64), n, np.nan)
    excluded = _member(_arrow(answered["annotator"]), excluded_annotators)
    n_answers = np.bincount(log_code[~excluded], minlength=n)
    n_excluded = np.bincount(log_code[excluded], minlength=n)

    top_share = np.full(n, np.nan)
    no_majority = np.zeros(n, dtype=bool)
    if value_col in answered.columns and answered[value_col].notna().any():
        label_code, labels = _codes(answered[value_col])
        keep = ~excluded & (label_code >= 0)
        pairs, votes = np.unique(log_code[keep] * len(labels) + label_code[keep], return_counts=True)
        item = pairs // len(labels)
        top = np.zeros(n, dtype=np.int64)
        np.maximum.at(top, item, votes)
        total = np.bincount(item, weights=votes, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            top_share = np.where(total > 0, top / total, np.nan)
        # Strictly more than half; a single answer is no evidence of agreement either way.
        no_majority = (top * 2 <= total) & (total >= 2)

    too_few = n_answers < min_answers
    removed = n_excluded > 0
    flags = {
        "low_confidence": confidence < thresholds.min_confidence,
        "no_majority": no_majority,
        "excluded_annotator": too_few & removed,
        "too_few_answers": too_few & ~removed,
    }
    chosen_mask = np.logical_or.reduce(list(flags.values())) & ~_member(item_ids, gold_items)
    chosen = np.flatnonzero(chosen_mask)
    reason = np.full(len(chosen), "", dtype=object)
    for code in REASONS:
        flag = flags[code][chosen]
        reason = np.where(flag, np.where(reason == "", code, reason + ", " + code), reason)
    conf = confidence[chosen]
    table = pa.table(
        {
            "item_id": item_ids.take(pa.array(chosen, pa.int64())),
            "confidence": pa.array(conf, pa.float64(), mask=np.isnan(conf)),
        }
    )
    order = pc.sort_indices(
        table, sort_keys=[("confidence", "ascending"), ("item_id", "ascending")], null_placement="at_start"
    ).to_numpy()
    rows = chosen[order]
    out = pd.DataFrame(
        {
            "item_id": pd.array(table.column("item_id").take(pa.array(order)), dtype="str"),
            "reason": pd.array(reason[order], dtype="str"),
            **{code: flags[code][rows] for code in REASONS},
            "confidence": confidence[rows],
            "n_answers": n_answers[rows].astype(np.int64),
            "n_excluded": n_excluded[rows].astype(np.int64),
            "top_share": top_share[rows],
        }
    )
    return out.loc[:, list(REWORK_COLUMNS)]


def reason_counts(rework: pd.DataFrame) -> pd.Series:
    """Items per reason (an item with two reasons counts under both), in :data:`REASONS` order."""
    return pd.Series({code: int(rework[code].sum()) for code in REASONS}, name="items", dtype=np.int64)


# --- The review round --------------------------------------------------------------------------------


def best_site(site_scores: pd.DataFrame, eligible_sites: Sequence[str]) -> str:
    """The eligible site with the highest gold accuracy, then agreement with consensus, then id.

    Eligible sites without scores rank below every scored one.

    Raises:
        ValueError: No site is eligible.
    """
    if not eligible_sites:
        raise ValueError("no eligible site for the rework round: check the partner registry and the sites' audits")
    ranked = pd.DataFrame(index=pd.Index(sorted(set(eligible_sites)), name="site_id"))
    for column in ("gold_accuracy", "consensus_agreement"):
        values = site_scores[column] if column in site_scores.columns else pd.Series(dtype=np.float64)
        ranked[column] = values.reindex(ranked.index).to_numpy(dtype=np.float64)
    ranked = ranked.reset_index().sort_values(
        ["gold_accuracy", "consensus_agreement", "site_id"], ascending=[False, False, True], na_position="last"
    )
    return str(ranked["site_id"].iloc[0])


def _choice(from_name: str, to_name: str, value: str) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [value]}}


def _textarea(from_name: str, to_name: str, text: str) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": to_name, "type": "textarea", "value": {"text": [text]}}


def _field_results(fields: Mapping[str, Any], to_name: Any) -> list[dict[str, Any]]:
    out = []
    for name, value in fields.items():
        if value is None:
            continue
        target = to_name(name) if callable(to_name) else to_name
        if isinstance(value, bool):
            out.append(_choice(f"field_{name}", target, BOOLEAN_CHOICES[value]))
        else:
            out.append(_textarea(f"field_{name}", target, str(value)))
    return out


def answer_to_ls_result(work_order: WorkOrder, answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A normalised Kazi answer (``flows/annotate/normalise.py``) as a Label Studio result list.

    Raises:
        ValueError: the answer lacks what the task type needs (a label, boxes, a text or fields).
    """
    task = work_order.task_type
    fields = answer.get("fields") or {}
    if not isinstance(fields, Mapping):
        raise ValueError(f"answer fields should be an object, got {fields!r}")
    if task in _CLASSIFICATION:
        label = answer.get("label")
        if not isinstance(label, str):
            raise ValueError(f"a classification answer needs a label, got {dict(answer)!r}")
        main = MAIN_OBJECT[task]
        return [_choice("label", main, label), *_field_results(fields, main)]
    if task == TaskType.OBJECT_DETECTION:
        boxes = answer.get("boxes")
        if not isinstance(boxes, list):
            raise ValueError(f"a detection answer needs boxes, got {dict(answer)!r}")
        results: list[dict[str, Any]] = [
            {
                "id": f"kazi{i}",
                "from_name": "box",
                "to_name": "image",
                "type": "rectanglelabels",
                "value": {
                    "x": b["x"],
                    "y": b["y"],
                    "width": b["width"],
                    "height": b["height"],
                    "rotation": b.get("rotation", 0),
                    "rectanglelabels": [b["label"]],
                },
            }
            for i, b in enumerate(boxes)
        ]
        return results + _field_results(fields, "image")
    if task == TaskType.AUDIO_TRANSCRIPTION:
        text = answer.get("text")
        if not isinstance(text, str):
            raise ValueError(f"a transcription answer needs a text, got {dict(answer)!r}")
        results = [_textarea("transcription", "audio", text)]
        if isinstance(answer.get("label"), str):
            results.append(_choice("label", "audio", answer["label"]))
        return results + _field_results(fields, "audio")
    if task == TaskType.LISTING_VERIFICATION:
        schema_fields = [f.name for f in work_order.label_schema.fields]
        if not schema_fields:
            raise ValueError("listing verification needs label_schema.fields")
        unknown = sorted(set(fields) - set(schema_fields))
        if unknown:
            raise ValueError(f"answer has fields {unknown} that are not in the label schema")
        results = _field_results(fields, lambda name: f"fields_{name}")
        if isinstance(answer.get("listing_valid"), bool):
            results.append(
                _choice("listing_valid", f"fields_{schema_fields[0]}", BOOLEAN_CHOICES[answer["listing_valid"]])
            )
        return results
    raise ValueError(f"no Label Studio result format for task type {task!r}")


def rework_round_items(
    work_order: WorkOrder,
    rework: pd.DataFrame,
    consolidated: pd.DataFrame,
    site_scores: pd.DataFrame,
    eligible_sites: Sequence[str],
    round: int,
    *,
    log: pd.DataFrame | None = None,
    excluded_annotators: Iterable[str] = (),
) -> pd.DataFrame:
    """The input of a review round: which items, at which site, with which predictions.

    Args:
        work_order: Task type and label schema (for the result format).
        rework: :func:`select_rework`'s frame.
        consolidated: The previous round's consensus (item_id, answer JSON, confidence).
        site_scores: ``flows.qa.scores.site_scores`` (indexed by site_id).
        eligible_sites: Sites that may take the work (audited, not suspended, with capacity).
        round: The review round being built (1 for the first rework); predictions name the round their
            answers come from, ``kazi-qa-round-{round - 1}``.
        log: When given, the other answers given before (by annotators not excluded) follow the consensus
            as further predictions, scored by their share of the votes, so the reviewer sees the options.
        excluded_annotators: Annotators whose answers are not shown.

    Returns:
        item_id, site_id, round, predictions (JSON text of Label Studio's ``predictions`` list: the
        consensus first, scored by its confidence; empty when there is no previous answer), in the order of
        ``rework``.
    """
    if round < 1:
        raise ValueError(f"a review round is numbered from 1, got {round}")
    if log is not None and "answer" not in log.columns:
        raise ValueError("log lacks the column 'answer' (the normalised JSON answers)")
    site = best_site(site_scores, eligible_sites)
    prefix = '{"model_version":' + json.dumps(MODEL_VERSION.format(round=round - 1))
    items = _arrow(rework["item_id"]).cast(pa.string())
    n = len(items)

    # The consensus of each rework item (first row per item), and every earlier answer that still counts.
    cons_pos = _positions(consolidated["item_id"], items)
    cons_answer = consolidated["answer"] if "answer" in consolidated.columns else pd.Series([None] * len(consolidated))
    has = (cons_pos >= 0) & cons_answer.notna().to_numpy()
    confidence = (
        consolidated["confidence"].to_numpy(dtype=np.float64)
        if "confidence" in consolidated.columns
        else np.full(len(consolidated), np.nan)
    )
    pieces = [_arrow(cons_answer[has]).cast(pa.string())]
    alt_pos = np.zeros(0, dtype=np.int64)
    if log is not None:
        answered = _answered(log)
        keep = ~_member(_arrow(answered["annotator"]), excluded_annotators) & answered["answer"].notna().to_numpy()
        alt_pos = _positions(answered["item_id"], items)
        keep &= alt_pos >= 0
        alt_pos = alt_pos[keep]
        pieces.append(_arrow(answered["answer"][keep]).cast(pa.string()))
    # One code per distinct answer JSON: each is converted to a Label Studio result once.
    codes, answers = _codes(pa.chunked_array(pieces, type=pa.string()))
    results = np.asarray(
        [
            json.dumps(answer_to_ls_result(work_order, json.loads(a)), ensure_ascii=False, separators=(",", ":"))
            for a in answers.to_pylist()
        ],
        dtype=object,
    )
    n_cons = int(has.sum())
    cons_code = np.full(n, -1, dtype=np.int64)
    cons_score = np.full(n, np.nan)
    # The first consolidated row of an item wins: written last to first.
    cons_code[cons_pos[has][::-1]] = codes[:n_cons][::-1]
    cons_score[cons_pos[has][::-1]] = confidence[has][::-1]
    consensus = np.full(n, "", dtype=object)
    with_consensus = cons_code >= 0
    score = np.where(np.isnan(cons_score), "", ',"score":' + _score_text(cons_score))
    consensus[with_consensus] = prefix + score[with_consensus] + ',"result":' + results[cons_code[with_consensus]] + "}"

    others = pa.array([""] * n, pa.string())
    if alt_pos.size:
        alt_code = codes[n_cons:]
        pairs, votes = np.unique(alt_pos * len(answers) + alt_code, return_counts=True)
        pos, code = pairs // len(answers), pairs % len(answers)
        share = votes / np.bincount(pos, weights=votes, minlength=n)[pos]
        new = code != cons_code[pos]
        pos, code, votes, share = pos[new], code[new], votes[new], share[new]
        # Most votes first, then the answer text, so the order does not depend on the log's order.
        text_rank = np.empty(len(answers), dtype=np.int64)
        text_rank[pc.sort_indices(answers).to_numpy()] = np.arange(len(answers))
        order = np.lexsort((text_rank[code], -votes, pos))
        pos, code, share = pos[order], code[order], share[order]
        entries = prefix + ',"score":' + _score_text(share) + ',"result":' + results[code] + "}"
        offsets = np.concatenate([[0], np.cumsum(np.bincount(pos, minlength=n))]).astype(np.int32)
        lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(entries, pa.string()))
        others = pc.binary_join(lists, ",")
    joined = pc.binary_join_element_wise(
        pa.array(consensus, pa.string()), others, ",", null_handling="replace", null_replacement=""
    )
    # "a," or ",b" or "," when one side is empty: trim the stray commas.
    body = pc.utf8_trim(joined, ",")
    predictions = pc.binary_join_element_wise("[", body, "]", "")
    return pd.DataFrame(
        {
            "item_id": pd.array(items, dtype="str"),
            "site_id": pd.array([site] * n, dtype="str"),
            "round": np.full(n, round, dtype=np.int16),
            "predictions": pd.array(predictions, dtype="str"),
        }
    )


def _positions(values: Any, items: pa.Array) -> np.ndarray:
    """Where each value is in ``items`` (-1 when it is not there)."""
    found = pc.index_in(_arrow(values).cast(pa.string()), value_set=items)
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _score_text(values: np.ndarray) -> np.ndarray:
    """Scores as JSON numbers: clipped to [0, 1], 4 decimals (``repr`` of the rounded float)."""
    return np.round(np.clip(values, 0.0, 1.0), 4).astype(str).astype(object)
