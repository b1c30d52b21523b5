import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.core.contracts import load_contract
from flows.core.models import TaskType, WorkOrder
from flows.qa.validate import (
    ValidationInput,
    answer_problem,
    build_validation,
    check_schema_keywords,
    output_frame,
    quality_frame,
    run_gx,
    run_pandas,
    validate_output,
    validate_with_pandas,
)

pytestmark = pytest.mark.unit

CLASSES = ["cat", "dog", "bird"]


def make_work_order(task_type: str = "image_classification", **over: Any) -> WorkOrder:
    schema: dict[str, Any] = {"classes": CLASSES}
    if task_type == "audio_transcription":
        schema = {}
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
        "qa": {"min_gold_accuracy": 0.8, "min_agreement": 0.5},
    }
    spec.update(over)
    return WorkOrder.model_validate(spec)


def consolidated(answers: list[Any], labels: list[str | None] | None = None, **over: Any) -> pd.DataFrame:
    n = len(answers)
    frame = pd.DataFrame(
        {
            "item_id": pd.array([f"i{k}" for k in range(n)], dtype="str"),
            "answer": pd.array([a if a is None or isinstance(a, str) else json.dumps(a) for a in answers], dtype="str"),
            "label": pd.array(labels if labels is not None else [None] * n, dtype="str"),
            "confidence": np.full(n, 0.9),
            "n_annotators": np.full(n, 3, dtype=np.int32),
            "method": pd.array(["dawid_skene"] * n, dtype="str"),
            "sites": pd.array(["s1"] * n, dtype="str"),
            "needs_rework": np.zeros(n, dtype=bool),
        }
    )
    for column, value in over.items():
        frame[column] = value
    return frame


def good_classification() -> pd.DataFrame:
    labels = ["cat", "dog", "bird", "cat"]
    return consolidated([{"label": c} for c in labels], labels)


SITES = pd.DataFrame(
    {"n_gold": [10, 30], "gold_accuracy": [0.9, 0.85]}, index=pd.Index(["site-a", "site-b"], name="site_id")
)


def failed(outcome: Any) -> dict[str, int | None]:
    return {r.name: r.unexpected_count for r in outcome.failed}


# --- The answer's JSON Schema subset ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"label": "cat"}, None),
        ({"label": ""}, "answer.label is shorter than 1"),
        ({"label": 3}, "answer.label is not string"),
        ({}, "answer lacks 'label'"),
        ({"label": "cat", "fields": []}, "answer.fields is not object"),
        (["cat"], "answer is not object"),
    ],
)
def test_answer_problem_classification(value: Any, problem: str | None) -> None:
    schema = load_contract(TaskType.IMAGE_CLASSIFICATION, "output").answer
    assert schema is not None
    assert answer_problem(value, schema.json_schema) == problem


@pytest.mark.parametrize(
    ("box", "problem"),
    [
        ({"label": "cat", "x": 0, "y": 0, "width": 100, "height": 100}, None),
        ({"label": "cat", "x": -1, "y": 0, "width": 1, "height": 1}, "answer.boxes[0].x is below 0"),
        ({"label": "cat", "x": 1, "y": 0, "width": 0, "height": 1}, "answer.boxes[0].width is not above 0"),
        ({"label": "cat", "x": 1, "y": 0, "width": True, "height": 1}, "answer.boxes[0].width is not number"),
        ({"label": "cat", "x": float("nan"), "y": 0, "width": 1, "height": 1}, "answer.boxes[0].x is not number"),
        ({"x": 1, "y": 0, "width": 1, "height": 1}, "answer.boxes[0] lacks 'label'"),
    ],
)
def test_answer_problem_boxes(box: dict[str, Any], problem: str | None) -> None:
    schema = load_contract(TaskType.OBJECT_DETECTION, "output").answer
    assert schema is not None
    assert answer_problem({"boxes": [box]}, schema.json_schema) == problem


def test_listing_fields_take_the_declared_value_types() -> None:
    schema = load_contract(TaskType.LISTING_VERIFICATION, "output").answer
    assert schema is not None
    assert answer_problem({"fields": {"phone": "+254", "open_now": True, "x": None}}, schema.json_schema) is None
    assert answer_problem({"fields": {"phone": ["+254"]}}, schema.json_schema) == (
        "answer.fields.phone is not string or boolean or number or null"
    )


def test_unsupported_schema_keywords_are_refused() -> None:
    check_schema_keywords({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}})
    with pytest.raises(ValueError, match=r"\['pattern'\] at answer.a"):
        check_schema_keywords({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}})


# --- Frames ------------------------------------------------------------------------------------------


def test_output_frame_flattens_boxes_to_extremes() -> None:
    box = {"label": "cat", "x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0}
    answers = [
        {"boxes": [box, {**box, "label": "fox", "x": 30.1234, "width": 69.8766, "height": 5.0}]},
        {"boxes": []},
        None,
    ]
    frame = output_frame(consolidated(answers), TaskType.OBJECT_DETECTION, classes=CLASSES)
    first = frame.iloc[0]
    assert first["box_count"] == 2
    assert (first["box_min_x"], first["box_min_y"]) == (10.0, 20.0)
    assert first["box_max_right"] == 100.0  # 30.1234 + 69.8766 rounded, not 100.00000000000001
    assert first["box_max_bottom"] == 60.0
    assert (first["box_min_width"], first["box_min_height"]) == (30.0, 5.0)
    assert first["box_labels_outside"] == 1
    assert frame.iloc[1]["box_count"] == 0 and np.isnan(frame.iloc[1]["box_min_x"])
    assert frame["answer_valid"].tolist() == [True, True, pd.NA]
    assert "answer_label" not in frame.columns


def test_output_frame_does_not_modify_its_input() -> None:
    frame = good_classification()
    before = frame.copy()
    output_frame(frame, TaskType.IMAGE_CLASSIFICATION, classes=CLASSES, accepted_items=["i0"])
    pd.testing.assert_frame_equal(frame, before)


def test_quality_frame_pools_gold_accuracy() -> None:
    frame = quality_frame(SITES, 0.62)
    assert frame["scope"].tolist() == ["site", "site", "work order"]
    assert frame["gold_accuracy"].iloc[-1] == pytest.approx((9 + 25.5) / 40)
    assert frame["n_gold"].tolist() == [10, 30, 40]
    assert np.isnan(frame["agreement_alpha"].iloc[0]) and frame["agreement_alpha"].iloc[-1] == 0.62
    empty = quality_frame(None, None)
    assert len(empty) == 1 and np.isnan(empty["gold_accuracy"].iloc[0])


# --- Checks, in pandas ---------------------------------------------------------------------------------


def test_good_classification_passes() -> None:
    outcome = validate_with_pandas(
        good_classification(), make_work_order(), site_scores=SITES, alpha=0.7, accepted_items=["i0", "i1", "i2", "i3"]
    )
    assert outcome.success, failed(outcome)
    assert outcome.engine == "pandas" and outcome.data_docs_dir is None
    assert outcome.contract_version == load_contract(TaskType.IMAGE_CLASSIFICATION, "output").version
    names = {r.name for r in outcome.results}
    assert {
        "expect_column_values_to_be_in_set(label)",
        "expect_column_values_to_be_between(confidence)",
        "expect_column_values_to_be_unique(item_id)",
        "expect_column_values_to_be_in_set(answer_valid)",
        "expect_column_pair_values_to_be_equal(answer_label, label)",
        "expect_table_row_count_to_equal",
        "expect_column_values_to_be_between(gold_accuracy)",
        "expect_column_values_to_be_between(agreement_alpha)",
    } <= names


def _bad_label() -> pd.DataFrame:
    frame = good_classification()
    frame.loc[2, ["answer", "label"]] = ['{"label":"horse"}', "horse"]
    return frame


def _bad_confidence() -> pd.DataFrame:
    return good_classification().assign(confidence=[0.9, 1.2, 0.5, -0.1])


def _bad_json() -> pd.DataFrame:
    frame = good_classification()
    frame.loc[1, "answer"] = "{not json"
    return frame


def _label_drift() -> pd.DataFrame:
    frame = good_classification()
    frame.loc[0, "label"] = "dog"
    return frame


def _duplicate() -> pd.DataFrame:
    frame = good_classification()
    frame.loc[3, "item_id"] = "i0"
    return frame


CASES: dict[str, tuple[Any, dict[str, int | None]]] = {
    "label outside the set": (
        _bad_label,
        {"expect_column_values_to_be_in_set(label)": 1, "expect_column_values_to_be_in_set(answer_label)": 1},
    ),
    "confidence outside [0, 1]": (_bad_confidence, {"expect_column_values_to_be_between(confidence)": 2}),
    "answer is not JSON": (
        _bad_json,
        {
            "expect_column_values_to_be_in_set(answer_valid)": 1,
            "expect_column_pair_values_to_be_equal(answer_label, label)": 1,
        },
    ),
    "label drifts from the answer": (_label_drift, {"expect_column_pair_values_to_be_equal(answer_label, label)": 1}),
    # i3 is missing and i0 is there twice: the count is right, uniqueness catches it.
    "duplicate item": (_duplicate, {"expect_column_values_to_be_unique(item_id)": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_classification_fails_naming_the_check(case: str) -> None:
    make, expected = CASES[case]
    outcome = validate_with_pandas(make(), make_work_order(), accepted_items=["i0", "i1", "i2", "i3"])
    assert not outcome.success
    assert failed(outcome) == expected


def test_detection_box_outside_the_image_fails() -> None:
    box = {"label": "cat", "x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0}
    answers = [
        {"boxes": [box]},
        {"boxes": [{**box, "x": 90.0}]},
        {"boxes": [{**box, "height": 0.0}]},
        {"boxes": [{**box, "label": "fox"}]},
        {"boxes": []},
    ]
    frame = consolidated(answers, method=pd.array(["box_clusters"] * 5, dtype="str"))
    outcome = validate_with_pandas(frame, make_work_order("object_detection"))
    assert failed(outcome) == {
        "expect_column_values_to_be_between(box_max_right)": 1,
        "expect_column_values_to_be_between(box_min_height)": 1,
        "expect_column_values_to_be_in_set(answer_valid)": 1,  # height 0 breaks the schema's exclusiveMinimum
        "expect_column_values_to_be_between(box_labels_outside)": 1,
    }
    first = next(r for r in outcome.failed if r.name.endswith("(box_max_right)"))
    assert first.examples == (110.0,)


@pytest.mark.parametrize(
    ("task_type", "answer", "method"),
    [
        ("audio_transcription", {"text": "habari"}, "text_medoid"),
        ("listing_verification", {"fields": {"phone": "+254700000000", "open_now": True}}, "field_majority"),
    ],
)
def test_other_task_types_pass_and_catch_a_bad_shape(task_type: str, answer: dict[str, Any], method: str) -> None:
    frame = consolidated([answer, answer], method=pd.array([method] * 2, dtype="str"))
    assert validate_with_pandas(frame, make_work_order(task_type)).success
    frame.loc[1, "answer"] = json.dumps({"something": "else"})
    assert failed(validate_with_pandas(frame, make_work_order(task_type))) == {
        "expect_column_values_to_be_in_set(answer_valid)": 1
    }


@pytest.mark.parametrize(
    ("accepted", "rework", "expected"),
    [
        (["i0", "i1", "i2", "i3"], [], {}),
        (["i0", "i1", "i2", "i3", "i4"], ["i4"], {}),  # missing, but waiting for rework
        (["i0", "i1", "i2", "i3", "i4"], ["i1"], {"expect_table_row_count_to_equal": None}),
        (
            ["i0", "i1", "i2"],
            [],
            {"expect_column_values_to_be_in_set(accepted)": 1, "expect_table_row_count_to_equal": None},
        ),
    ],
)
def test_coverage(accepted: list[str], rework: list[str], expected: dict[str, int | None]) -> None:
    outcome = validate_with_pandas(
        good_classification(), make_work_order(), accepted_items=accepted, rework_items=rework
    )
    assert failed(outcome) == expected
    count = next(r for r in outcome.results if r.name == "expect_table_row_count_to_equal")
    assert count.observed_value == 4


def test_quality_thresholds() -> None:
    sites = SITES.assign(gold_accuracy=[0.7, 0.9])
    outcome = validate_with_pandas(good_classification(), make_work_order(), site_scores=sites, alpha=0.4)
    assert failed(outcome) == {
        "expect_column_values_to_be_between(gold_accuracy)": 1,
        "expect_column_values_to_be_between(agreement_alpha)": 1,
    }
    assert {r.frame for r in outcome.failed} == {"quality"}


def test_unmeasurable_alpha_and_sites_without_gold_pass() -> None:
    sites = SITES.assign(n_gold=[0, 0], gold_accuracy=[np.nan, np.nan])
    assert validate_with_pandas(good_classification(), make_work_order(), site_scores=sites, alpha=float("nan")).success


def test_a_contract_of_another_task_type_is_refused() -> None:
    with pytest.raises(ValueError, match="expected image_classification output"):
        build_validation(
            good_classification(), make_work_order(), contract=load_contract("text_classification", "output")
        )


# --- Great Expectations ---------------------------------------------------------------------------------


def _all_defects() -> ValidationInput:
    frame = _bad_confidence()
    frame.loc[2, ["answer", "label"]] = ['{"label":"horse"}', "horse"]
    frame.loc[3, "item_id"] = " \t"
    return build_validation(
        frame,
        make_work_order(),
        site_scores=SITES.assign(gold_accuracy=[0.7, 0.9]),
        alpha=0.3,
        accepted_items=["i0", "i1", "i2", "i3", "i9"],
    )


def test_great_expectations_and_pandas_agree(tmp_path: Path) -> None:
    validation = _all_defects()
    gx_outcome = run_gx(validation, tmp_path / "docs")
    pandas_outcome = run_pandas(validation)
    assert [r.name for r in gx_outcome.results] == [r.name for r in pandas_outcome.results]
    assert [r.success for r in gx_outcome.results] == [r.success for r in pandas_outcome.results]
    assert [r.unexpected_count for r in gx_outcome.results] == [r.unexpected_count for r in pandas_outcome.results]
    assert failed(gx_outcome) == {
        "expect_column_values_to_match_regex(item_id)": 1,
        "expect_column_values_to_be_in_set(label)": 1,
        "expect_column_values_to_be_between(confidence)": 2,
        "expect_column_values_to_be_in_set(answer_label)": 1,
        "expect_column_values_to_be_in_set(accepted)": 1,
        "expect_table_row_count_to_equal": None,
        "expect_column_values_to_be_between(gold_accuracy)": 1,  # site-a (pooled: 34 of 40 = 0.85)
        "expect_column_values_to_be_between(agreement_alpha)": 1,
    }
    label = next(r for r in gx_outcome.failed if r.name == "expect_column_values_to_be_in_set(label)")
    assert label.examples == ("horse",) and label.error is None
    assert next(r for r in gx_outcome.failed if r.name == "expect_table_row_count_to_equal").observed_value == 4


def test_great_expectations_builds_data_docs_and_reruns(tmp_path: Path) -> None:
    docs = tmp_path / "data-docs"
    first = validate_output(good_classification(), make_work_order(), docs_dir=docs, site_scores=SITES, alpha=0.7)
    assert first.success and first.engine == "great_expectations"
    assert first.data_docs_dir == docs and first.index_page == "index.html"
    index = (docs / first.index_page).read_text()
    assert "acme-0042.output" in index and "acme-0042.quality" in index
    assert list((docs / "validations").rglob("*.html"))
    # A second run in the same process (same names) works, and its result joins the same site.
    second = validate_output(_bad_label(), make_work_order(), docs_dir=docs, run_name="rerun")
    assert not second.success
    assert "expect_column_values_to_be_in_set(label)" in failed(second)
    assert any("rerun" in p.as_posix() for p in (docs / "validations").rglob("*.html"))
