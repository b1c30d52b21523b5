import json

import pandas as pd
import pytest

from flows.core.models import FieldKind, FieldSpec, TaskType
from flows.core.schemas import CONSOLIDATED
from flows.qa.consolidate import CONSOLIDATED_COLUMNS, CONSOLIDATORS, ConsolidationParams, consolidate

pytestmark = pytest.mark.unit

CLASSES = ("cat", "dog")


def test_every_task_type_has_a_rule() -> None:
    assert set(CONSOLIDATORS) == set(TaskType)


def test_columns_match_the_declared_schema_minus_what_the_flow_adds() -> None:
    assert list(CONSOLIDATED_COLUMNS) == [n for n in CONSOLIDATED.names if n not in {"sites", "needs_rework"}]


@pytest.mark.parametrize("method", ["majority_vote", "dawid_skene", "one_coin"])
@pytest.mark.parametrize("task_type", [TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION])
def test_classification(task_type: TaskType, method: str) -> None:
    answers = pd.DataFrame(
        {"item_id": ["i", "i", "i", "j"], "annotator": ["a", "b", "c", "a"], "label": ["dog", "dog", "cat", "cat"]}
    )
    params = ConsolidationParams(classes=CLASSES, method=method)  # type: ignore[arg-type]
    result = consolidate(task_type, answers, params)
    assert list(result.columns) == list(CONSOLIDATED_COLUMNS)
    assert result["item_id"].tolist() == ["i", "j"]
    assert result["label"].tolist() == ["dog", "cat"]
    assert [json.loads(a) for a in result["answer"]] == [{"label": "dog"}, {"label": "cat"}]
    assert result["n_annotators"].tolist() == [3, 1]
    assert (result["method"] == method).all()
    assert result["confidence"].between(0, 1).all()
    assert str(result["n_annotators"].dtype) == "int32"


def test_classification_reads_the_json_answer_column_and_applies_gold() -> None:
    answers = pd.DataFrame(
        {"item_id": ["g", "g"], "annotator": ["a", "b"], "answer": ['{"label": "dog"}', '{"label": "dog"}']}
    )
    params = ConsolidationParams(classes=CLASSES, method="majority_vote", gold=pd.Series({"g": "cat"}))
    result = consolidate("image_classification", answers, params)
    assert result.loc[0, "label"] == "cat" and result.loc[0, "confidence"] == 1.0


def test_boxes() -> None:
    boxes = [{"label": "car", "x": 1, "y": 2, "width": 3, "height": 4}]
    answers = pd.DataFrame({"item_id": ["i", "i"], "annotator": ["a", "b"], "boxes": [boxes, boxes]})
    result = consolidate(TaskType.OBJECT_DETECTION, answers, ConsolidationParams(classes=("car",)))
    [merged] = json.loads(result.loc[0, "answer"])["boxes"]
    assert (merged["label"], merged["x"], merged["width"]) == ("car", 1, 3)
    assert pd.isna(result.loc[0, "label"])
    assert result.loc[0, "method"] == "box_clusters"


def test_transcription_from_json_answers() -> None:
    answers = pd.DataFrame(
        {"item_id": ["i", "i"], "annotator": ["a", "b"], "answer": ['{"text": "Jambo"}', '{"text": "jambo "}']}
    )
    result = consolidate(TaskType.AUDIO_TRANSCRIPTION, answers)
    assert json.loads(result.loc[0, "answer"]) == {"text": "Jambo"}
    assert result.loc[0, "confidence"] == 1.0
    assert result.loc[0, "method"] == "text_medoid"


def test_fields() -> None:
    specs = (FieldSpec(name="phone", kind=FieldKind.PHONE, required=True),)
    answers = pd.DataFrame(
        {"item_id": ["i", "i"], "annotator": ["a", "b"], "fields": [{"phone": "+1 2"}, {"phone": "+12"}]}
    )
    result = consolidate(TaskType.LISTING_VERIFICATION, answers, ConsolidationParams(fields=specs))
    assert json.loads(result.loc[0, "answer"]) == {"fields": {"phone": "+12"}}
    assert result.loc[0, "method"] == "field_majority"


def test_unknown_task_type() -> None:
    with pytest.raises(ValueError, match="not a valid TaskType"):
        consolidate("sentiment", pd.DataFrame())


def test_missing_answer_column() -> None:
    with pytest.raises(ValueError, match=r"need a 'text' column or an 'answer' column"):
        consolidate(TaskType.AUDIO_TRANSCRIPTION, pd.DataFrame({"item_id": ["i"], "annotator": ["a"]}))


def test_params_from_work_order() -> None:
    from datetime import UTC, datetime

    from flows.core.models import WorkOrder

    order = WorkOrder.model_validate(
        {
            "id": "acme-0001",
            "client_id": "acme",
            "source": {"uri": "s3://inbox/x", "format": "csv"},
            "task_type": "image_classification",
            "columns": {"media_uri": "url"},
            "label_schema": {"classes": ["cat", "dog"]},
            "qa": {"method": "one_coin", "box_iou": 0.7},
            "deadline": datetime(2030, 1, 1, tzinfo=UTC),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": "s3://outbox/x"},
        }
    )
    params = ConsolidationParams.from_work_order(order)
    assert params.classes == ("cat", "dog")
    assert params.method == "one_coin"
    assert params.box_iou == 0.7
