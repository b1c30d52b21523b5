"""Label configs: well-formed XML for every task type, escaped values, and the names annotate relies on."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateNotFound

from flows.core.models import TaskType, WorkOrder
from flows.split.label_configs import BOOLEAN_CHOICES, CONTRACTS_DIR, data_keys, render_label_config, template_path

pytestmark = pytest.mark.unit

TRICKY = ["cat", 'R&D <"beta">', "it's", "a > b & c", "$5 plan", "two\nlines", "Ümlaut ✓"]
INSTRUCTIONS = 'Label every <item> & "quote" it.\n\n$price is not a variable\n  indented line  '


def make_work_order(task_type: TaskType, **over: Any) -> WorkOrder:
    schema: dict[str, Any] = {"classes": TRICKY}
    if task_type == TaskType.AUDIO_TRANSCRIPTION:
        schema = {}
    if task_type == TaskType.LISTING_VERIFICATION:
        schema = {
            "fields": [
                {"name": "phone", "kind": "phone", "required": True},
                {"name": "website", "kind": "url"},
                {"name": "open_now", "kind": "boolean"},
            ]
        }
    spec: dict[str, Any] = {
        "id": "acme-0042",
        "client_id": "acme",
        "source": {"uri": "s3://client-in/batch-1", "format": "csv"},
        "task_type": task_type,
        "columns": {"media_uri": "uri", "text": "body"},
        "label_schema": schema,
        "instructions": INSTRUCTIONS,
        "deadline": datetime(2026, 12, 1, tzinfo=UTC),
        "price_per_item": 0.1,
        "pay_per_task": 0.02,
        "delivery": {"uri": "s3://client-out/acme-0042"},
    }
    spec.update(over)
    return WorkOrder.model_validate(spec)


def controls(root: ET.Element) -> dict[str, tuple[str, str | None]]:
    """from_name -> (tag, to_name) of every control tag."""
    tags = {"Choices", "RectangleLabels", "TextArea", "Labels"}
    return {e.attrib["name"]: (e.tag, e.get("toName")) for e in root.iter() if e.tag in tags}


@pytest.mark.parametrize("task_type", list(TaskType))
def test_every_task_type_has_a_template_and_renders_well_formed_xml(task_type: TaskType) -> None:
    assert template_path(task_type).is_file()
    root = ET.fromstring(render_label_config(make_work_order(task_type)))
    assert root.tag == "View"
    headers = [e.attrib["value"] for e in root.iter("Header")]
    assert headers[:4] == [
        "Instructions",
        'Label every <item> & "quote" it.',
        "\u00a0$price is not a variable",
        "indented line",
    ]


@pytest.mark.parametrize(
    ("task_type", "label_tag", "expected"),
    [
        (TaskType.IMAGE_CLASSIFICATION, "Choice", {"label": ("Choices", "image")}),
        (TaskType.TEXT_CLASSIFICATION, "Choice", {"label": ("Choices", "text")}),
        (TaskType.OBJECT_DETECTION, "Label", {"box": ("RectangleLabels", "image")}),
    ],
)
def test_classes_survive_escaping_and_controls_have_documented_names(
    task_type: TaskType, label_tag: str, expected: dict[str, tuple[str, str]]
) -> None:
    root = ET.fromstring(render_label_config(make_work_order(task_type)))
    assert [e.attrib["value"] for e in root.iter(label_tag)] == TRICKY
    assert controls(root) == expected


def test_audio_transcription_names() -> None:
    root = ET.fromstring(render_label_config(make_work_order(TaskType.AUDIO_TRANSCRIPTION)))
    assert controls(root) == {"transcription": ("TextArea", "audio")}
    assert root.find("Audio").attrib == {"name": "audio", "value": "$audio"}  # type: ignore[union-attr]
    with_classes = make_work_order(TaskType.AUDIO_TRANSCRIPTION, label_schema={"classes": ["clear", "noisy"]})
    root = ET.fromstring(render_label_config(with_classes))
    assert controls(root) == {"transcription": ("TextArea", "audio"), "label": ("Choices", "audio")}


def test_listing_verification_shows_current_values_and_asks_for_each_field() -> None:
    root = ET.fromstring(render_label_config(make_work_order(TaskType.LISTING_VERIFICATION)))
    assert controls(root) == {
        "field_phone": ("TextArea", "fields_phone"),
        "field_website": ("TextArea", "fields_website"),
        "field_open_now": ("Choices", "fields_open_now"),
        "listing_valid": ("Choices", "fields_phone"),
    }
    shown = {e.attrib["name"]: e.attrib["value"] for e in root.iter("Text")}
    assert shown == {f"fields_{n}": f"$fields_{n}" for n in ("phone", "website", "open_now")}
    by_name = {e.attrib["name"]: e for e in root.iter() if "name" in e.attrib}
    assert by_name["field_phone"].get("required") == "true"
    assert by_name["field_website"].get("required") is None
    assert by_name["field_phone"].get("perRegion") == "false"
    for name in ("field_open_now", "listing_valid"):
        assert tuple(c.attrib["value"] for c in by_name[name].iter("Choice")) == BOOLEAN_CHOICES


def test_extra_fields_on_other_task_types_attach_to_the_main_object() -> None:
    schema = {"classes": ["cat"], "fields": [{"name": "notes"}, {"name": "blurry", "kind": "boolean"}]}
    root = ET.fromstring(render_label_config(make_work_order(TaskType.IMAGE_CLASSIFICATION, label_schema=schema)))
    assert controls(root) == {
        "label": ("Choices", "image"),
        "field_notes": ("TextArea", "image"),
        "field_blurry": ("Choices", "image"),
    }


@pytest.mark.parametrize(
    ("task_type", "keys"),
    [
        (TaskType.IMAGE_CLASSIFICATION, ["image"]),
        (TaskType.OBJECT_DETECTION, ["image"]),
        (TaskType.TEXT_CLASSIFICATION, ["text"]),
        (TaskType.AUDIO_TRANSCRIPTION, ["audio"]),
        (TaskType.LISTING_VERIFICATION, ["fields_phone", "fields_website", "fields_open_now"]),
    ],
)
def test_data_keys_match_the_config(task_type: TaskType, keys: list[str]) -> None:
    work_order = make_work_order(task_type)
    assert data_keys(work_order) == keys
    root = ET.fromstring(render_label_config(work_order))
    read = [e.attrib["value"][1:] for e in root.iter() if e.tag in {"Image", "Text", "Audio"}]
    assert sorted(read) == sorted(keys)


@pytest.mark.parametrize(
    ("classes", "message"),
    [(["ok", "   "], "empty class name"), (["ok", "bell\x07"], "characters XML cannot carry")],
)
def test_unusable_class_names_are_refused(classes: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_label_config(make_work_order(TaskType.IMAGE_CLASSIFICATION, label_schema={"classes": classes}))


def test_control_characters_in_instructions_are_dropped() -> None:
    work_order = make_work_order(TaskType.TEXT_CLASSIFICATION, instructions="Read\x00 carefully\x1b.")
    root = ET.fromstring(render_label_config(work_order))
    assert [e.attrib["value"] for e in root.iter("Header")][:2] == ["Instructions", "Read carefully."]


def test_no_instructions_no_instruction_block() -> None:
    root = ET.fromstring(render_label_config(make_work_order(TaskType.TEXT_CLASSIFICATION, instructions="")))
    assert [e.attrib["value"] for e in root.iter("Header")] == []


def test_missing_template_is_an_error(tmp_path: Path) -> None:
    assert CONTRACTS_DIR.is_dir()
    with pytest.raises(TemplateNotFound):
        render_label_config(make_work_order(TaskType.TEXT_CLASSIFICATION), contracts_dir=tmp_path)
