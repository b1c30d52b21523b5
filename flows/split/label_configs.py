"""Label Studio labelling configurations, rendered from a work order's label schema.

One Jinja2 template per task type lives in ``data_contracts/<task_type>/label_config.xml``. Every value
taken from the work order (class names, field names, instructions) is XML-escaped, so a class called
``R&D <"beta">`` is a label, not markup.

The names annotate parses results by (``from_name`` = control tag, ``to_name`` = object tag):

======================  ==================  ============================  ==========================
task type               data keys           from_name (result type)       to_name
======================  ==================  ============================  ==========================
image_classification    ``image``           ``label`` (choices)           ``image``
text_classification     ``text``            ``label`` (choices)           ``text``
object_detection        ``image``           ``box`` (rectanglelabels)     ``image``
audio_transcription     ``audio``           ``transcription`` (textarea)  ``audio``
                                            ``label`` (choices), only
                                            when the schema has classes
listing_verification    ``fields_<name>``   ``field_<name>`` (textarea,   ``fields_<name>``
                                            or choices for boolean)
                                            ``listing_valid`` (choices)   ``fields_<first field>``
======================  ==================  ============================  ==========================

Fields of the label schema on the other task types are ``field_<name>`` controls on the main object
(``image``, ``text`` or ``audio``). Boolean fields and ``listing_valid`` answer with
:data:`BOOLEAN_CHOICES`. In listing verification the annotator sees each field's current value and
types the verified value (copying it when it is right), so an empty answer never means "unchanged".
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from jinja2 import ChoiceLoader, DictLoader, Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from flows.core.models import FieldKind, TaskType, WorkOrder

#: Where the templates live: ``data_contracts/<task_type>/label_config.xml`` at the repository root.
CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "data_contracts"

#: Answers of boolean fields and of ``listing_valid``.
BOOLEAN_CHOICES = ("yes", "no")

#: The object tag (and data key) each task type shows.
MAIN_OBJECT: dict[TaskType, str] = {
    TaskType.IMAGE_CLASSIFICATION: "image",
    TaskType.OBJECT_DETECTION: "image",
    TaskType.TEXT_CLASSIFICATION: "text",
    TaskType.AUDIO_TRANSCRIPTION: "audio",
}

# XML 1.0 cannot carry these characters at all, escaped or not.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_MACROS = """\
{% macro instructions(paragraphs) -%}
{% if paragraphs %}
  <View style="margin-bottom: 1em">
    <Header value="Instructions" size="4"/>
{% for p in paragraphs %}
    <Header value="{{ p|xa }}" size="5" style="font-weight: normal; margin: 0.25em 0"/>
{% endfor %}
  </View>
{% endif %}
{%- endmacro %}

{% macro field_control(f, to_name) -%}
{% if f.kind == "boolean" %}
    <Choices name="field_{{ f.name }}" toName="{{ to_name }}" choice="single-radio" showInLine="true"\
{% if f.required %} required="true"{% endif %}>
{% for c in boolean_choices %}
      <Choice value="{{ c }}"/>
{% endfor %}
    </Choices>
{% else %}
    <TextArea name="field_{{ f.name }}" toName="{{ to_name }}" perRegion="false" editable="true" \
maxSubmissions="1" rows="1" placeholder="{{ f.placeholder|xa }}"{% if f.required %} required="true"{% endif %}/>
{% endif %}
{%- endmacro %}

{% macro fields(schema_fields, to_name) -%}
{% for f in schema_fields %}
  <View style="margin-bottom: 0.75em">
    <Header value="{{ f.title|xa }}" size="5"/>
{{ field_control(f, to_name) }}
  </View>
{% endfor %}
{%- endmacro %}
"""


def _xml_attr(value: object) -> Markup:
    """Escape for a double-quoted XML attribute, keeping newlines and tabs (a parser would fold them)."""
    text = str(escape(str(value)))
    return Markup(text.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


@lru_cache(maxsize=4)
def _environment(contracts_dir: Path) -> Environment:
    env = Environment(
        loader=ChoiceLoader([DictLoader({"kazi_macros.xml": _MACROS}), FileSystemLoader(contracts_dir)]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["xa"] = _xml_attr
    return env


def template_path(task_type: TaskType, contracts_dir: Path = CONTRACTS_DIR) -> Path:
    return contracts_dir / task_type.value / "label_config.xml"


def data_keys(work_order: WorkOrder) -> list[str]:
    """The task data keys the work order's label config reads (``$key``), in config order."""
    if work_order.task_type == TaskType.LISTING_VERIFICATION:
        return [f"fields_{f.name}" for f in work_order.label_schema.fields]
    return [MAIN_OBJECT[work_order.task_type]]


def _paragraphs(instructions: str) -> list[str]:
    lines = [line.strip() for line in _NOT_XML.sub("", instructions).splitlines()]
    # Label Studio reads a Header value starting with "$" as a data key; a no-break space keeps it literal.
    return [f"\u00a0{line}" if line.startswith("$") else line for line in lines if line]


def _check_classes(classes: list[str]) -> None:
    for c in classes:
        if not c.strip():
            raise ValueError("label_schema.classes has an empty class name")
        if _NOT_XML.search(c):
            raise ValueError(f"class name {c!r} has characters XML cannot carry (control characters)")


def render_label_config(work_order: WorkOrder, *, contracts_dir: Path = CONTRACTS_DIR) -> str:
    """The Label Studio XML config for the work order's task type, label schema and instructions.

    Raises:
        ValueError: a class name is empty or holds characters XML cannot carry.
        jinja2.TemplateNotFound: no template for the task type under ``contracts_dir``.
    """
    schema = work_order.label_schema
    _check_classes(schema.classes)
    schema_fields = [
        {
            "name": f.name,
            "kind": f.kind.value,
            "required": f.required,
            "title": f"{f.name.replace('_', ' ').capitalize()} ({f.kind.value})" + (", required" if f.required else ""),
            "placeholder": f"Type the verified {f.name.replace('_', ' ')}"
            + (" (empty if it has none)" if f.kind != FieldKind.BOOLEAN and not f.required else ""),
        }
        for f in schema.fields
    ]
    template = _environment(contracts_dir).get_template(f"{work_order.task_type.value}/label_config.xml")
    xml = template.render(
        classes=schema.classes,
        schema_fields=schema_fields,
        paragraphs=_paragraphs(work_order.instructions),
        boolean_choices=BOOLEAN_CHOICES,
    )
    # Blank lines left by template blocks carry no meaning (attribute newlines are escaped as &#10;).
    return "\n".join(line for line in xml.splitlines() if line.strip()) + "\n"
