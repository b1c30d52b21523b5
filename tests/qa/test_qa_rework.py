import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.core.models import QAThresholds, TaskType, WorkOrder
from flows.qa.rework import (
    REASONS,
    REWORK_COLUMNS,
    answer_to_ls_result,
    best_site,
    reason_counts,
    rework_round_items,
    select_rework,
)
from flows.split.label_configs import render_label_config

pytestmark = pytest.mark.unit

THRESHOLDS = QAThresholds(min_confidence=0.7)


def make_work_order(task_type: str = "image_classification", **over: Any) -> WorkOrder:
    schema: dict[str, Any] = {"classes": ["cat", "dog", "bird"], "fields": [{"name": "visible", "kind": "boolean"}]}
    if task_type == "audio_transcription":
        schema = {"classes": ["calm", "angry"]}
    if task_type == "listing_verification":
        schema = {"fields": [{"name": "phone", "kind": "phone"}, {"name": "open_now", "kind": "boolean"}]}
    spec: dict[str, Any] = {
        "id": "acme-0042",
        "client_id": "acme",
        "source": {"uri": "s3://client-in/batch-1", "format": "csv"},
        "task_type": task_type,
        "columns": {"media_uri": "uri", "text": "body"},
        "label_schema": schema,
        "deadline": datetime(2026, 12, 1, tzinfo=UTC),
        "price_per_item": 0.1,
        "pay_per_task": 0.02,
        "delivery": {"uri": "s3://client-out/acme-0042"},
    }
    spec.update(over)
    return WorkOrder.model_validate(spec)


def make_log(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    """(item, annotator, label); a None label is a skip."""
    return pd.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "annotator": [r[1] for r in rows],
            "label": [r[2] for r in rows],
            "answer": [None if r[2] is None else json.dumps({"label": r[2]}) for r in rows],
            "skipped": [r[2] is None for r in rows],
            "site_id": ["s1"] * len(rows),
        }
    )


LOG = make_log(
    [
        ("ok", "a", "cat"), ("ok", "b", "cat"), ("ok", "c", "cat"),
        ("unsure", "a", "cat"), ("unsure", "b", "cat"), ("unsure", "c", "dog"),
        ("split", "a", "cat"), ("split", "b", "dog"), ("split", "c", "bird"),
        ("spam", "a", "cat"), ("spam", "b", "cat"), ("spam", "x", "dog"),
        ("skips", "a", "cat"), ("skips", "b", "cat"), ("skips", "c", None),
        ("gone", "x", "dog"), ("gone", "y", "dog"), ("gone", "a", None),
        ("gold", "a", "cat"), ("gold", "b", "dog"), ("gold", "c", "bird"),
        ("skipped", "a", None), ("skipped", "b", None),
    ]
)  # fmt: skip
CONSOLIDATED = pd.DataFrame(
    {
        "item_id": ["ok", "unsure", "split", "spam", "skips", "gold"],
        "answer": [json.dumps({"label": v}) for v in ["cat", "cat", "cat", "cat", "cat", "cat"]],
        "label": ["cat", "cat", "cat", "cat", "cat", "cat"],
        "confidence": [0.99, 0.6, 0.75, 0.95, 0.9, 0.2],
    }
)


def test_select_rework_by_hand() -> None:
    out = select_rework(
        CONSOLIDATED, LOG, THRESHOLDS, min_answers=3, excluded_annotators=["x", "y"], gold_items=["gold"]
    )
    assert list(out.columns) == list(REWORK_COLUMNS)
    by_item = out.set_index("item_id")
    assert list(out["item_id"]) == ["gone", "skipped", "unsure", "split", "skips", "spam"]  # missing first
    assert by_item["reason"].to_dict() == {
        "gone": "excluded_annotator",
        "skipped": "too_few_answers",
        "unsure": "low_confidence",
        "split": "no_majority",
        "skips": "too_few_answers",
        "spam": "excluded_annotator",
    }
    assert by_item.loc["gone", "n_answers"] == 0 and by_item.loc["gone", "n_excluded"] == 2
    assert np.isnan(by_item.loc["gone", "confidence"]) and np.isnan(by_item.loc["gone", "top_share"])
    assert by_item.loc["spam", "n_answers"] == 2 and by_item.loc["spam", "n_excluded"] == 1
    assert by_item.loc["split", "top_share"] == pytest.approx(1 / 3)
    assert by_item.loc["unsure", "top_share"] == pytest.approx(2 / 3)
    assert out["item_id"].dtype == "str" and out["reason"].dtype == "str"


def test_several_reasons_are_joined_in_order() -> None:
    cons = CONSOLIDATED.assign(confidence=0.5)
    out = select_rework(cons, LOG, THRESHOLDS, min_answers=3).set_index("item_id")
    assert out.loc["split", "reason"] == "low_confidence, no_majority"
    assert out.loc["gone", "reason"] == "too_few_answers"  # nobody is excluded: only skips
    counts = reason_counts(out.reset_index())
    assert list(counts.index) == list(REASONS)
    assert counts["low_confidence"] == 6 and counts["no_majority"] == 2 and counts["too_few_answers"] == 3


@pytest.mark.parametrize(
    ("labels", "no_majority"),
    [
        (["a", "a", "b"], False),
        (["a", "b"], True),
        (["a", "a", "b", "b"], True),
        (["a"], False),
        (["a", "b", "c"], True),
    ],
)
def test_majority_needs_more_than_half(labels: list[str], no_majority: bool) -> None:
    log = make_log([("i", f"p{k}", v) for k, v in enumerate(labels)])
    cons = pd.DataFrame({"item_id": ["i"], "confidence": [0.99]})
    out = select_rework(cons, log, THRESHOLDS, min_answers=1)
    assert (len(out) == 1 and bool(out["no_majority"].iloc[0])) is no_majority


def test_other_task_types_skip_the_majority_test() -> None:
    log = make_log([("i", "a", "x"), ("i", "b", "y")]).assign(label=None)
    out = select_rework(pd.DataFrame({"item_id": ["i"], "confidence": [0.9]}), log, THRESHOLDS, min_answers=2)
    assert out.empty


def test_select_rework_does_not_modify_inputs() -> None:
    log, cons = LOG.copy(), CONSOLIDATED.copy()
    select_rework(cons, log, THRESHOLDS, min_answers=3, excluded_annotators=["x"])
    pd.testing.assert_frame_equal(log, LOG)
    pd.testing.assert_frame_equal(cons, CONSOLIDATED)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_answers": 0}, "min_answers must be at least 1"),
        ({"min_answers": 3, "consolidated": pd.DataFrame({"item_id": ["a"]})}, "item_id and confidence"),
        ({"min_answers": 3, "log": LOG.drop(columns="skipped")}, r"log lacks the column\(s\) \['skipped'\]"),
    ],
)
def test_select_rework_errors(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"consolidated": CONSOLIDATED, "log": LOG, "thresholds": THRESHOLDS, **kwargs}
    with pytest.raises(ValueError, match=message):
        select_rework(**args)


# --- Review round -------------------------------------------------------------------------------------

SITES = pd.DataFrame(
    {"gold_accuracy": [0.9, 0.95, 0.95, np.nan], "consensus_agreement": [0.9, 0.8, 0.85, 0.99]},
    index=pd.Index(["s1", "s2", "s3", "s4"], name="site_id"),
)


@pytest.mark.parametrize(
    ("eligible", "best"),
    [
        (["s1", "s2", "s3", "s4"], "s3"),  # tie on gold accuracy, then agreement
        (["s1", "s2"], "s2"),
        (["s4", "s1"], "s1"),  # an unscored site ranks last
        (["new", "s4"], "s4"),  # no gold accuracy either: agreement decides
        (["zed", "new"], "new"),  # nothing scored: by id
    ],
)
def test_best_site(eligible: list[str], best: str) -> None:
    assert best_site(SITES, eligible) == best


def test_best_site_needs_an_eligible_site() -> None:
    with pytest.raises(ValueError, match="no eligible site"):
        best_site(SITES, [])


def _config_controls(work_order: WorkOrder) -> set[tuple[str, str]]:
    root = ET.fromstring(render_label_config(work_order))
    return {(e.get("name", ""), e.get("toName", "")) for e in root.iter() if e.get("toName")}


@pytest.mark.parametrize(
    ("task_type", "answer", "expected"),
    [
        (
            "image_classification",
            {"label": "cat", "fields": {"visible": False}},
            [
                {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}},
                {"from_name": "field_visible", "to_name": "image", "type": "choices", "value": {"choices": ["no"]}},
            ],
        ),
        (
            "text_classification",
            {"label": "dog"},
            [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["dog"]}}],
        ),
        (
            "object_detection",
            {"boxes": [{"label": "cat", "x": 1.5, "y": 2.0, "width": 30.0, "height": 40.0}]},
            [
                {
                    "id": "kazi0",
                    "from_name": "box",
                    "to_name": "image",
                    "type": "rectanglelabels",
                    "value": {
                        "x": 1.5,
                        "y": 2.0,
                        "width": 30.0,
                        "height": 40.0,
                        "rotation": 0,
                        "rectanglelabels": ["cat"],
                    },
                }
            ],
        ),
        (
            "audio_transcription",
            {"text": "habari yako", "label": "calm"},
            [
                {
                    "from_name": "transcription",
                    "to_name": "audio",
                    "type": "textarea",
                    "value": {"text": ["habari yako"]},
                },
                {"from_name": "label", "to_name": "audio", "type": "choices", "value": {"choices": ["calm"]}},
            ],
        ),
        (
            "listing_verification",
            {"fields": {"phone": "+254700000000", "open_now": True}, "listing_valid": False},
            [
                {
                    "from_name": "field_phone",
                    "to_name": "fields_phone",
                    "type": "textarea",
                    "value": {"text": ["+254700000000"]},
                },
                {
                    "from_name": "field_open_now",
                    "to_name": "fields_open_now",
                    "type": "choices",
                    "value": {"choices": ["yes"]},
                },
                {
                    "from_name": "listing_valid",
                    "to_name": "fields_phone",
                    "type": "choices",
                    "value": {"choices": ["no"]},
                },
            ],
        ),
    ],
)
def test_answer_to_ls_result_uses_the_label_config_names(
    task_type: str, answer: dict[str, Any], expected: list[dict[str, Any]]
) -> None:
    work_order = make_work_order(task_type)
    result = answer_to_ls_result(work_order, answer)
    assert result == expected
    controls = _config_controls(work_order)
    assert {(r["from_name"], r["to_name"]) for r in result} <= controls


@pytest.mark.parametrize(
    ("task_type", "answer", "message"),
    [
        ("image_classification", {"boxes": []}, "needs a label"),
        ("object_detection", {"label": "cat"}, "needs boxes"),
        ("audio_transcription", {"label": "calm"}, "needs a text"),
        ("listing_verification", {"fields": {"fax": "1"}}, r"fields \['fax'\]"),
        ("image_classification", {"label": "cat", "fields": ["x"]}, "should be an object"),
    ],
)
def test_answer_to_ls_result_errors(task_type: str, answer: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        answer_to_ls_result(make_work_order(task_type), answer)


def test_rework_round_items_with_previous_answers() -> None:
    rework = select_rework(CONSOLIDATED, LOG, THRESHOLDS, min_answers=3, excluded_annotators=["x", "y"])
    out = rework_round_items(
        make_work_order(), rework, CONSOLIDATED, SITES, ["s1", "s2"], 1, log=LOG, excluded_annotators=["x", "y"]
    )
    assert list(out.columns) == ["item_id", "site_id", "round", "predictions"]
    assert out["item_id"].tolist() == rework["item_id"].tolist()
    assert set(out["site_id"]) == {"s2"} and set(out["round"]) == {1}
    by_item = dict(zip(out["item_id"], (json.loads(p) for p in out["predictions"]), strict=True))
    split = by_item["split"]
    assert [p["model_version"] for p in split] == ["kazi-qa-round-0"] * 3
    # The consensus first, scored by its confidence; then the other answers by their share of the votes.
    assert split[0] == {
        "model_version": "kazi-qa-round-0",
        "score": 0.75,
        "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}],
    }
    assert [(p["result"][0]["value"]["choices"][0], p["score"]) for p in split[1:]] == [
        ("bird", 0.3333),
        ("dog", 0.3333),
    ]
    assert by_item["gone"] == []  # no consensus, and both answers were by excluded annotators
    assert [p["score"] for p in by_item["unsure"]] == [0.6, 0.3333]


def test_rework_round_items_without_log_shows_only_the_consensus() -> None:
    rework = pd.DataFrame({"item_id": ["unsure", "unknown"]})
    out = rework_round_items(make_work_order(), rework, CONSOLIDATED, SITES, ["s4"], 2)
    predictions = [json.loads(p) for p in out["predictions"]]
    assert predictions[0][0]["model_version"] == "kazi-qa-round-1" and predictions[0][0]["score"] == 0.6
    assert predictions[1] == []
    assert out["site_id"].tolist() == ["s4", "s4"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"round": 0}, "numbered from 1"),
        ({"eligible_sites": []}, "no eligible site"),
        ({"log": LOG.drop(columns="answer")}, "lacks the column 'answer'"),
    ],
)
def test_rework_round_items_errors(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "work_order": make_work_order(),
        "rework": pd.DataFrame({"item_id": ["unsure"]}),
        "consolidated": CONSOLIDATED,
        "site_scores": SITES,
        "eligible_sites": ["s1"],
        "round": 1,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        rework_round_items(**args)


def test_task_types_all_have_a_result_format() -> None:
    samples = {
        TaskType.IMAGE_CLASSIFICATION: {"label": "cat"},
        TaskType.TEXT_CLASSIFICATION: {"label": "cat"},
        TaskType.OBJECT_DETECTION: {"boxes": []},
        TaskType.AUDIO_TRANSCRIPTION: {"text": ""},
        TaskType.LISTING_VERIFICATION: {"fields": {}, "listing_valid": True},
    }
    assert set(samples) == set(TaskType)
    for task_type, answer in samples.items():
        assert isinstance(answer_to_ls_result(make_work_order(task_type.value), answer), list)


def test_rework_round_items_first_consensus_row_wins_and_missing_confidence_has_no_score() -> None:
    cons = pd.DataFrame(
        {
            "item_id": ["a", "a", "b"],
            "answer": [json.dumps({"label": "dog"}), json.dumps({"label": "cat"}), json.dumps({"label": "bird"})],
            "confidence": [0.5, 0.9, np.nan],
        }
    )
    out = rework_round_items(make_work_order(), pd.DataFrame({"item_id": ["b", "a"]}), cons, SITES, ["s1"], 1)
    b, a = (json.loads(p) for p in out["predictions"])
    assert a == [
        {
            "model_version": "kazi-qa-round-0",
            "score": 0.5,
            "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}],
        }
    ]
    assert len(b) == 1 and "score" not in b[0] and b[0]["result"][0]["value"]["choices"] == ["bird"]
