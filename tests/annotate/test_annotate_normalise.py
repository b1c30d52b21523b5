"""Label Studio export -> annotation-log rows, for every task type, from hand-written export JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from pydantic import SecretStr

from flows.annotate.normalise import MalformedExport, export_to_rows
from flows.annotate.pseudonym import pseudonymise
from flows.core.models import TaskType
from flows.core.schemas import ANNOTATIONS

pytestmark = pytest.mark.unit

KEY = SecretStr("test-pseudonym-key")
SITE = "nairobi"


def annotation(
    ann_id: int,
    result: list[dict[str, Any]],
    *,
    user: Any = 7,
    cancelled: bool = False,
    created: str = "2026-11-23T09:15:02.123456Z",
    updated: str | None = "2026-11-23T09:15:02.223456Z",
    lead_time: float | None = 4.288,
) -> dict[str, Any]:
    """An annotation as Label Studio 1.23 exports it (JSON export type)."""
    return {
        "id": ann_id,
        "completed_by": user,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": created,
        "updated_at": updated,
        "draft_created_at": None,
        "lead_time": lead_time,
        "prediction": {},
        "result_count": len(result),
        "unique_id": f"4b0e8c6f-{ann_id:04d}",
        "import_id": None,
        "last_action": None,
        "bulk_created": False,
        "task": 1,
        "project": 3,
        "updated_by": user if isinstance(user, int) else None,
        "parent_prediction": None,
        "parent_annotation": None,
        "last_created_by": None,
    }


def task(task_id: int, item: str, annotations: list[dict[str, Any]], **data: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "annotations": annotations,
        "file_upload": None,
        "drafts": [],
        "predictions": [],
        "data": {
            "item_id": item,
            "batch_id": "r0-b0001",
            "kazi_task_key": f"acme-0042--{SITE}--r0-b0001/{item}",
            **data,
        },
        "meta": {},
        "created_at": "2026-11-23T08:00:00.000000Z",
        "updated_at": "2026-11-23T09:15:02.300000Z",
        "inner_id": task_id,
        "total_annotations": len(annotations),
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": 3,
        "updated_by": None,
        "comment_authors": [],
    }


def choice(name: str, to_name: str, value: str, rid: str = "aB3dE5fG7h") -> dict[str, Any]:
    return {
        "value": {"choices": [value]},
        "id": rid,
        "from_name": name,
        "to_name": to_name,
        "type": "choices",
        "origin": "manual",
    }


def textarea(name: str, to_name: str, *lines: str) -> dict[str, Any]:
    return {
        "value": {"text": list(lines)},
        "id": f"t{name[:6]}",
        "from_name": name,
        "to_name": to_name,
        "type": "textarea",
        "origin": "manual",
    }


def rect(label: str, x: float, y: float, w: float, h: float, rotation: float = 0) -> dict[str, Any]:
    return {
        "original_width": 1280,
        "original_height": 853,
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
        "id": "Dx_aB91ISN",
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
    }


def rows(tasks: list[dict[str, Any]], task_type: TaskType, **kw: Any) -> list[dict[str, Any]]:
    table = export_to_rows(tasks, task_type=task_type, site_id=SITE, project_id=3, key=KEY, **kw)
    assert table.schema.equals(ANNOTATIONS)
    return table.to_pylist()


@pytest.mark.parametrize(
    ("task_type", "to_name", "data"),
    [
        (TaskType.IMAGE_CLASSIFICATION, "image", {"image": "https://s3.local/img/1.jpg?X-Amz-Signature=abc"}),
        (TaskType.TEXT_CLASSIFICATION, "text", {"text": "Great phone, battery lasts two days."}),
    ],
)
def test_classification_rows(task_type: TaskType, to_name: str, data: dict[str, Any]) -> None:
    export = [
        task(
            101,
            "item-a",
            [
                annotation(501, [choice("label", to_name, "cat")]),
                annotation(502, [choice("label", to_name, "dog")], user=8),
            ],
            **data,
        ),
        task(102, "item-b", [], **data),
    ]
    out = rows(export, task_type)
    assert [r["annotation_id"] for r in out] == [501, 502]
    first = out[0]
    assert first["item_id"] == "item-a"
    assert first["batch_id"] == "r0-b0001"
    assert first["site_id"] == SITE
    assert first["project_id"] == 3
    assert first["task_id"] == 101
    assert json.loads(first["answer"]) == {"label": "cat"}
    assert first["label"] == "cat"
    assert out[1]["label"] == "dog"
    assert first["skipped"] is False
    assert first["lead_time_s"] == pytest.approx(4.288)
    assert first["created_at"] == datetime(2026, 11, 23, 9, 15, 2, 123456, tzinfo=UTC)
    assert first["updated_at"] == datetime(2026, 11, 23, 9, 15, 2, 223456, tzinfo=UTC)
    assert first["round"] == 0
    assert first["annotator"] == pseudonymise(SITE, 7, KEY)
    assert out[1]["annotator"] == pseudonymise(SITE, 8, KEY)


def test_classification_with_fields_and_classes_checked() -> None:
    result = [
        choice("label", "image", "cat"),
        textarea("field_notes", "image", "blurry", "left side"),
        choice("field_is_outdoor", "image", "no"),
    ]
    out = rows([task(1, "i", [annotation(1, result)])], TaskType.IMAGE_CLASSIFICATION, classes=["cat", "dog"])
    assert json.loads(out[0]["answer"]) == {
        "label": "cat",
        "fields": {"notes": "blurry\nleft side", "is_outdoor": False},
    }
    with pytest.raises(MalformedExport, match="'cow' is not one of the work order's classes"):
        rows(
            [task(1, "i", [annotation(1, [choice("label", "image", "cow")])])],
            TaskType.IMAGE_CLASSIFICATION,
            classes=["cat", "dog"],
        )


def test_object_detection_boxes_in_percent_rounded() -> None:
    result = [
        rect("car", 50.812345678, 5.869797225186766, 12.4, 10.458911419423693),
        rect("person", 1.0, 2.0, 3.0, 4.0, rotation=12.5),
    ]
    out = rows([task(7, "img-1", [annotation(70, result)], image="https://x/1.jpg")], TaskType.OBJECT_DETECTION)
    assert json.loads(out[0]["answer"]) == {
        "boxes": [
            {"label": "car", "x": 50.8123, "y": 5.8698, "width": 12.4, "height": 10.4589},
            {"label": "person", "x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0, "rotation": 12.5},
        ]
    }
    assert out[0]["label"] is None
    assert out[0]["skipped"] is False


def test_object_detection_empty_result_means_no_objects_not_a_skip() -> None:
    export = [task(7, "img-1", [annotation(70, []), annotation(71, [], cancelled=True)], image="https://x/1.jpg")]
    out = rows(export, TaskType.OBJECT_DETECTION)
    assert (json.loads(out[0]["answer"]), out[0]["skipped"]) == ({"boxes": []}, False)
    assert (out[1]["answer"], out[1]["skipped"]) == (None, True)


def test_audio_transcription() -> None:
    result = [textarea("transcription", "audio", "Habari ya asubuhi"), choice("label", "audio", "swahili")]
    out = rows(
        [task(3, "clip-9", [annotation(30, result, lead_time=41.5)], audio="https://x/a.wav")],
        TaskType.AUDIO_TRANSCRIPTION,
    )
    assert json.loads(out[0]["answer"]) == {"text": "Habari ya asubuhi", "label": "swahili"}
    assert out[0]["label"] is None  # the label column is for classification only
    assert out[0]["lead_time_s"] == 41.5
    plain = rows(
        [task(3, "clip-9", [annotation(31, [textarea("transcription", "audio", "")])])], TaskType.AUDIO_TRANSCRIPTION
    )
    assert json.loads(plain[0]["answer"]) == {"text": ""}


def test_listing_verification() -> None:
    result = [
        textarea("field_phone", "fields_phone", "+254 712 345 678"),
        textarea("field_website", "fields_website", "https://mamaoliech.co.ke"),
        choice("field_open_sundays", "fields_open_sundays", "yes"),
        choice("listing_valid", "fields_phone", "no"),
    ]
    out = rows([task(4, "biz-1", [annotation(40, result)], fields_phone="0712345678")], TaskType.LISTING_VERIFICATION)
    assert json.loads(out[0]["answer"]) == {
        "fields": {"phone": "+254 712 345 678", "website": "https://mamaoliech.co.ke", "open_sundays": True},
        "listing_valid": False,
    }
    assert out[0]["label"] is None


@pytest.mark.parametrize("task_type", list(TaskType))
def test_cancelled_is_skipped_with_null_answer(task_type: TaskType) -> None:
    out = rows([task(1, "i", [annotation(1, [], cancelled=True, lead_time=None)])], task_type)
    assert out[0]["skipped"] is True
    assert out[0]["answer"] is None and out[0]["label"] is None and out[0]["lead_time_s"] is None


@pytest.mark.parametrize(
    "task_type",
    [
        TaskType.IMAGE_CLASSIFICATION,
        TaskType.TEXT_CLASSIFICATION,
        TaskType.AUDIO_TRANSCRIPTION,
        TaskType.LISTING_VERIFICATION,
    ],
)
def test_empty_result_is_a_skip_where_answers_are_required(task_type: TaskType) -> None:
    out = rows([task(1, "i", [annotation(1, [])])], task_type)
    assert out[0]["skipped"] is True and out[0]["answer"] is None


def test_cancelled_with_a_result_is_still_skipped() -> None:
    out = rows(
        [task(1, "i", [annotation(1, [choice("label", "image", "cat")], cancelled=True)])],
        TaskType.IMAGE_CLASSIFICATION,
    )
    assert (out[0]["skipped"], out[0]["label"]) == (True, None)


@pytest.mark.parametrize(
    "user", [7, {"id": 7, "first_name": "", "last_name": "", "avatar": None, "email": "amina@nairobi.example"}, "7"]
)
def test_completed_by_int_or_dict_same_pseudonym(user: Any) -> None:
    out = rows(
        [task(1, "i", [annotation(1, [choice("label", "image", "cat")], user=user)])], TaskType.IMAGE_CLASSIFICATION
    )
    assert out[0]["annotator"] == pseudonymise(SITE, 7, KEY)
    assert "amina" not in out[0]["annotator"] and out[0]["annotator"] != "7"


def test_string_ids_and_timestamps_without_fraction_or_in_other_offsets() -> None:
    a = annotation(1, [choice("label", "image", "cat")], created="2026-11-23T12:15:02+03:00", updated=None)
    a["id"] = "1001"
    out = rows([task(1, "i", [a])], TaskType.IMAGE_CLASSIFICATION)
    assert out[0]["annotation_id"] == 1001
    assert out[0]["created_at"] == datetime(2026, 11, 23, 9, 15, 2, tzinfo=UTC)
    assert out[0]["updated_at"] == out[0]["created_at"]  # no updated_at: created_at stands in


def test_naive_timestamp_taken_as_utc() -> None:
    a = annotation(1, [choice("label", "image", "cat")], created="2026-11-23T09:15:02", updated="2026-11-23T09:15:03")
    out = rows([task(1, "i", [a])], TaskType.IMAGE_CLASSIFICATION)
    assert out[0]["updated_at"] == datetime(2026, 11, 23, 9, 15, 3, tzinfo=UTC)


def test_round_is_written() -> None:
    out = rows(
        [task(1, "i", [annotation(1, [choice("label", "image", "cat")])])], TaskType.IMAGE_CLASSIFICATION, round=2
    )
    assert out[0]["round"] == 2


def test_empty_export_gives_an_empty_table_with_the_schema() -> None:
    table = export_to_rows([], task_type=TaskType.OBJECT_DETECTION, site_id=SITE, project_id=3, key=KEY)
    assert table.num_rows == 0 and table.schema.equals(ANNOTATIONS)


MALFORMED = [
    (TaskType.IMAGE_CLASSIFICATION, [choice("labels", "image", "cat")], "unknown control 'labels'"),
    (TaskType.IMAGE_CLASSIFICATION, [textarea("label", "image", "cat")], "should give a 'choices' result"),
    (
        TaskType.IMAGE_CLASSIFICATION,
        [{**choice("label", "image", "cat"), "value": {"choices": ["cat", "dog"]}}],
        "takes exactly one choice",
    ),
    (
        TaskType.IMAGE_CLASSIFICATION,
        [choice("label", "image", "cat"), choice("label", "image", "dog", "x2")],
        "'label' answered twice",
    ),
    (TaskType.TEXT_CLASSIFICATION, [textarea("field_notes", "text", "hm")], "required control 'label' is missing"),
    (TaskType.OBJECT_DETECTION, [{**rect("car", 1, 2, 3, 4), "type": "polygonlabels"}], "'rectanglelabels' result"),
    (
        TaskType.OBJECT_DETECTION,
        [
            {
                **rect("car", 1, 2, 3, 4),
                "value": {"x": 1, "y": 2, "width": 3, "height": 4, "rectanglelabels": ["a", "b"]},
            }
        ],
        "exactly one label",
    ),
    (
        TaskType.OBJECT_DETECTION,
        [{**rect("car", 1, 2, 3, 4), "value": {"x": 1, "y": 2, "width": -3, "height": 4, "rectanglelabels": ["a"]}}],
        "negative or non-finite",
    ),
    (
        TaskType.OBJECT_DETECTION,
        [
            {
                **rect("car", 1, 2, 3, 4),
                "value": {"x": "left", "y": 2, "width": 3, "height": 4, "rectanglelabels": ["a"]},
            }
        ],
        "numeric x, y, width, height",
    ),
    (TaskType.AUDIO_TRANSCRIPTION, [choice("label", "audio", "swahili")], "'transcription' is missing"),
    (
        TaskType.AUDIO_TRANSCRIPTION,
        [{**textarea("transcription", "audio"), "value": {"text": [3]}}],
        "should hold text",
    ),
    (TaskType.LISTING_VERIFICATION, [textarea("field_phone", "fields_phone", "1")], "'listing_valid' is missing"),
    (TaskType.LISTING_VERIFICATION, [choice("listing_valid", "fields_phone", "maybe")], "answers yes/no, got 'maybe'"),
    (
        TaskType.LISTING_VERIFICATION,
        [
            textarea("field_phone", "fields_phone", "1"),
            textarea("field_phone", "fields_phone", "2"),
            choice("listing_valid", "fields_phone", "yes"),
        ],
        "'field_phone' answered twice",
    ),
]


@pytest.mark.parametrize(("task_type", "result", "message"), MALFORMED)
def test_malformed_results_raise_naming_project_task_and_annotation(
    task_type: TaskType, result: list[dict[str, Any]], message: str
) -> None:
    export = [task(55, "i", [annotation(900, result)])]
    with pytest.raises(MalformedExport, match=message) as caught:
        rows(export, task_type)
    text = str(caught.value)
    assert "project 3" in text and "task 55" in text and "annotation 900" in text
    assert caught.value.project_id == 3 and len(caught.value.problems) == 1


def test_every_problem_is_listed_once() -> None:
    bad = [choice("nope", "image", "cat")]
    export = [task(i, f"i{i}", [annotation(i, bad)]) for i in range(1, 26)]
    with pytest.raises(MalformedExport) as caught:
        rows(export, TaskType.IMAGE_CLASSIFICATION)
    assert len(caught.value.problems) == 25
    assert "and 5 more" in str(caught.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t["data"].pop("item_id"), "lacks item_id or batch_id"),
        (lambda t: t["annotations"][0].update(completed_by=None), "completed_by has no user id"),
        (lambda t: t["annotations"][0].update(completed_by={"email": "a@b.c"}), "completed_by has no user id"),
        (lambda t: t["annotations"][0].update(result={"oops": 1}), "result should be a list"),
        (lambda t: t["annotations"][0].update(completed_by=True), "completed_by has no user id"),
        (lambda t: t["annotations"].append("not an annotation"), "unreadable annotation"),
        (lambda t: t["annotations"][0].update(lead_time="slow"), "unreadable annotation"),
        (lambda t: t["annotations"][0].update(updated_at=None, created_at=None), "no updated_at nor created_at"),
    ],
)
def test_unreadable_tasks_and_annotations(mutate: Any, message: str) -> None:
    t = task(1, "i", [annotation(1, [choice("label", "image", "cat")])])
    mutate(t)
    with pytest.raises(MalformedExport, match=message):
        rows([t], TaskType.IMAGE_CLASSIFICATION)


@pytest.mark.parametrize(
    ("updated", "message"),
    [
        ("yesterday", "updated_at holds a value that is not an ISO 8601 time"),
        (1763889302, "updated_at holds a value that is not an ISO 8601 string: 1763889302"),
    ],
)
def test_bad_timestamp_is_an_error(updated: Any, message: str) -> None:
    t = task(1, "i", [annotation(1, [choice("label", "image", "cat")], updated=updated)])
    with pytest.raises(ValueError, match=message):
        rows([t], TaskType.IMAGE_CLASSIFICATION)


def test_input_is_not_mutated() -> None:
    export = [task(1, "i", [annotation(1, [rect("car", 1.123456, 2, 3, 4)])])]
    before = json.dumps(export, sort_keys=True)
    rows(export, TaskType.OBJECT_DETECTION)
    assert json.dumps(export, sort_keys=True) == before


def test_output_is_an_arrow_table_in_export_order() -> None:
    export = [
        task(i, f"i{i}", [annotation(10 * i + j, [choice("label", "image", "cat")], user=j) for j in range(3)])
        for i in range(1, 4)
    ]
    table = export_to_rows(export, task_type=TaskType.IMAGE_CLASSIFICATION, site_id=SITE, project_id=3, key=KEY)
    assert isinstance(table, pa.Table)
    assert table["annotation_id"].to_pylist() == [10, 11, 12, 20, 21, 22, 30, 31, 32]
    assert len(set(table["annotator"].to_pylist())) == 3
