"""Label Studio export JSON -> rows of the annotation log (:data:`flows.core.schemas.ANNOTATIONS`).

One row per annotation. The control names are those of ``flows/split/label_configs.py`` (from_name ->
result type): ``label`` (choices) for classification, ``box`` (rectanglelabels) for object detection,
``transcription`` (textarea, plus an optional ``label`` choice) for audio, ``field_<name>`` (textarea, or
choices for boolean fields) and ``listing_valid`` (choices) for listing verification; every task type may also
carry ``field_<name>`` controls. The normalised ``answer`` JSON per task type:

=====================  =================================================================================
classification         ``{"label": "cat"}`` (+ ``"fields": {...}`` when the schema has fields)
object_detection       ``{"boxes": [{"label", "x", "y", "width", "height"}]}``: percent of the image,
                       rounded to 4 decimals (1/10,000 of a percent: under a pixel for images up to
                       1,000,000 px wide) and written fixed-point (``12.4000``); ``"rotation"`` only
                       when it is not 0
audio_transcription    ``{"text": "..."}`` (+ ``"label"`` and ``"fields"`` when the config has them)
listing_verification   ``{"fields": {"phone": "+254...", "open": true}, "listing_valid": true}``
=====================  =================================================================================

A textarea answer with several lines submitted is joined with newlines. ``yes``/``no`` choices (boolean
fields, ``listing_valid``) become JSON booleans. A field left empty is simply absent from ``fields``
(Label Studio stores no result for an empty textarea); QA reads absent as "no value".

Skips. An annotation is ``skipped`` (answer and label null) when Label Studio marks it ``was_cancelled``, or
when its result is empty: every control is required, so an empty result is a skip in all task types but
object detection, where an empty result is the answer "no objects here" (``{"boxes": []}``).

Malformed results raise, never become flagged rows. The label configs are Kazi's own, so a result Kazi does
not recognise (unknown from_name, wrong result type, two choices where one is allowed, a label outside the
schema, a missing required control) means the config was edited in Label Studio or the two have drifted
apart: delivering a silently dropped or guessed answer would be worse than a stopped pull. The error lists
every problem of the export (project, task and annotation id, what is wrong), so one run shows them all.

Speed: one pass over the annotations appends to plain column lists; answers of classification are memoised
per label; timestamps are parsed by Arrow in one vectorised cast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import SecretStr

from flows.core.models import TaskType
from flows.core.schemas import ANNOTATIONS

from .pseudonym import Pseudonymiser

#: Choices read as booleans (``flows.split.label_configs.BOOLEAN_CHOICES``).
BOOLEAN_CHOICES: Mapping[str, bool] = {"yes": True, "no": False}
FIELD_PREFIX = "field_"
MAX_LISTED_PROBLEMS = 20

_TS = pa.timestamp("us", tz="UTC")


class MalformedExport(ValueError):
    """The export holds results Kazi's label configs cannot have produced; ``problems`` lists each one."""

    def __init__(self, project_id: int, problems: Sequence[str]) -> None:
        self.project_id = project_id
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:MAX_LISTED_PROBLEMS])
        more = len(self.problems) - MAX_LISTED_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"Label Studio project {project_id}: {len(self.problems)} malformed annotation(s); was the label "
            f"config changed in Label Studio?\n{shown}{tail}"
        )


class _Bad(Exception):
    """One malformed result; the caller adds project, task and annotation ids."""


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _one_choice(r: Mapping[str, Any], name: str) -> str:
    if r.get("type") != "choices":
        raise _Bad(f"control {name!r} should give a 'choices' result, got type {r.get('type')!r}")
    try:
        choices = r["value"]["choices"]
    except (KeyError, TypeError):
        raise _Bad(f"choices result of {name!r} has no value.choices") from None
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
        raise _Bad(f"control {name!r} takes exactly one choice, got {choices!r}")
    return choices[0]


def _text(r: Mapping[str, Any], name: str) -> str:
    if r.get("type") != "textarea":
        raise _Bad(f"control {name!r} should give a 'textarea' result, got type {r.get('type')!r}")
    try:
        text = r["value"]["text"]
    except (KeyError, TypeError):
        raise _Bad(f"textarea result of {name!r} has no value.text") from None
    if isinstance(text, str):
        return text
    if isinstance(text, list) and all(isinstance(t, str) for t in text):
        return "\n".join(text)
    raise _Bad(f"textarea result of {name!r} should hold text, got {text!r}")


def _boolean(choice: str, name: str) -> bool:
    try:
        return BOOLEAN_CHOICES[choice]
    except KeyError:
        raise _Bad(f"control {name!r} answers {'/'.join(BOOLEAN_CHOICES)}, got {choice!r}") from None


def _field(r: Mapping[str, Any], name: str, fields: dict[str, Any]) -> None:
    key = name[len(FIELD_PREFIX) :]
    if key in fields:
        raise _Bad(f"control {name!r} answered twice")
    if r.get("type") == "choices":
        fields[key] = _boolean(_one_choice(r, name), name)
    else:
        fields[key] = _text(r, name)


def _check_class(label: str, classes: frozenset[str] | None, what: str) -> None:
    if classes is not None and label not in classes:
        raise _Bad(f"{what} {label!r} is not one of the work order's classes")


def _box_json(r: Mapping[str, Any], label_json: Callable[[str], str]) -> str:
    """One rectanglelabels result as the JSON text of a Kazi box (built directly: this is the hot path)."""
    if r.get("type") != "rectanglelabels":
        raise _Bad(f"control 'box' should give a 'rectanglelabels' result, got type {r.get('type')!r}")
    v = r.get("value")
    if not isinstance(v, Mapping):
        raise _Bad("rectanglelabels result has no value")
    labels = v.get("rectanglelabels")
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        raise _Bad(f"a box takes exactly one label, got {labels!r}")
    try:
        x, y, w, h = float(v["x"]), float(v["y"]), float(v["width"]), float(v["height"])
        rotation = float(v.get("rotation") or 0.0)
    except (KeyError, TypeError, ValueError):
        raise _Bad(f"a box needs numeric x, y, width, height, got {dict(v)!r}") from None
    # z - z == 0 is False exactly for inf and nan.
    if not (x - x == 0 and y - y == 0 and w - w == 0 and h - h == 0 and rotation - rotation == 0) or w < 0 or h < 0:
        raise _Bad(f"box has a negative or non-finite size: {dict(v)!r}")
    # Fixed-point text is valid JSON, correctly rounded, and much cheaper than round() + repr().
    text = f'{{"label":{label_json(labels[0])},"x":{x:.4f},"y":{y:.4f},"width":{w:.4f},"height":{h:.4f}'
    if rotation:
        return f'{text},"rotation":{rotation:.4f}}}'
    return text + "}"


# A parser turns a non-empty result into (answer JSON, label column value) or raises _Bad.
_Parser = Callable[[list[Any]], tuple[str, str | None]]


def _classification_parser(classes: frozenset[str] | None) -> _Parser:
    memo: dict[str, str] = {}

    def parse(result: list[Any]) -> tuple[str, str | None]:
        if len(result) == 1:  # the hot path: one choice, no fields
            r = result[0]
            if r.get("from_name") == "label":
                label = _one_choice(r, "label")
                answer = memo.get(label)
                if answer is None:
                    _check_class(label, classes, "label")
                    answer = memo[label] = _dumps({"label": label})
                return answer, label
        found: str | None = None
        fields: dict[str, Any] = {}
        for r in result:
            name = r.get("from_name")
            if name == "label":
                if found is not None:
                    raise _Bad("control 'label' answered twice")
                found = _one_choice(r, name)
            elif isinstance(name, str) and name.startswith(FIELD_PREFIX):
                _field(r, name, fields)
            else:
                raise _Bad(f"unknown control {name!r} (expected 'label' or 'field_<name>')")
        if found is None:
            raise _Bad("required control 'label' is missing")
        _check_class(found, classes, "label")
        return _dumps({"label": found, "fields": fields} if fields else {"label": found}), found

    return parse


def _detection_parser(classes: frozenset[str] | None) -> _Parser:
    memo: dict[str, str] = {}

    def label_json(label: str) -> str:
        found = memo.get(label)
        if found is None:
            _check_class(label, classes, "box label")
            found = memo[label] = _dumps(label)
        return found

    def parse(result: list[Any]) -> tuple[str, str | None]:
        boxes: list[str] = []
        fields: dict[str, Any] = {}
        for r in result:
            name = r.get("from_name")
            if name == "box":
                boxes.append(_box_json(r, label_json))
            elif isinstance(name, str) and name.startswith(FIELD_PREFIX):
                _field(r, name, fields)
            else:
                raise _Bad(f"unknown control {name!r} (expected 'box' or 'field_<name>')")
        listed = ",".join(boxes)
        if fields:
            return f'{{"boxes":[{listed}],"fields":{_dumps(fields)}}}', None
        return f'{{"boxes":[{listed}]}}', None

    return parse


def _transcription_parser(classes: frozenset[str] | None) -> _Parser:
    def parse(result: list[Any]) -> tuple[str, str | None]:
        text: str | None = None
        label: str | None = None
        fields: dict[str, Any] = {}
        for r in result:
            name = r.get("from_name")
            if name == "transcription":
                if text is not None:
                    raise _Bad("control 'transcription' answered twice")
                text = _text(r, name)
            elif name == "label":
                if label is not None:
                    raise _Bad("control 'label' answered twice")
                label = _one_choice(r, name)
                _check_class(label, classes, "label")
            elif isinstance(name, str) and name.startswith(FIELD_PREFIX):
                _field(r, name, fields)
            else:
                raise _Bad(f"unknown control {name!r} (expected 'transcription', 'label' or 'field_<name>')")
        if text is None:
            raise _Bad("required control 'transcription' is missing")
        answer: dict[str, Any] = {"text": text}
        if label is not None:
            answer["label"] = label
        if fields:
            answer["fields"] = fields
        return _dumps(answer), None

    return parse


def _listing_parser(classes: frozenset[str] | None) -> _Parser:
    def parse(result: list[Any]) -> tuple[str, str | None]:
        valid: bool | None = None
        fields: dict[str, Any] = {}
        for r in result:
            name = r.get("from_name")
            if name == "listing_valid":
                if valid is not None:
                    raise _Bad("control 'listing_valid' answered twice")
                valid = _boolean(_one_choice(r, name), name)
            elif isinstance(name, str) and name.startswith(FIELD_PREFIX):
                _field(r, name, fields)
            else:
                raise _Bad(f"unknown control {name!r} (expected 'listing_valid' or 'field_<name>')")
        if valid is None:
            raise _Bad("required control 'listing_valid' is missing")
        return _dumps({"fields": fields, "listing_valid": valid}), None

    return parse


_PARSERS: dict[TaskType, Callable[[frozenset[str] | None], _Parser]] = {
    TaskType.IMAGE_CLASSIFICATION: _classification_parser,
    TaskType.TEXT_CLASSIFICATION: _classification_parser,
    TaskType.OBJECT_DETECTION: _detection_parser,
    TaskType.AUDIO_TRANSCRIPTION: _transcription_parser,
    TaskType.LISTING_VERIFICATION: _listing_parser,
}


def _user_id(completed_by: Any) -> int:
    # Label Studio exports completed_by as the user id, or (some versions, some export options) as a user
    # object; only the numeric id is read, never the email beside it.
    if isinstance(completed_by, Mapping):
        completed_by = completed_by.get("id")
    if isinstance(completed_by, bool) or completed_by is None:
        raise _Bad(f"completed_by has no user id: {completed_by!r}")
    try:
        return int(completed_by)
    except (TypeError, ValueError):
        raise _Bad(f"completed_by has no integer user id: {completed_by!r}") from None


def _timestamps(values: list[str | None], what: str) -> pa.Array:
    """ISO 8601 strings -> UTC timestamps; Arrow's cast first, pandas for the odd forms Arrow refuses."""
    try:
        raw = pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        odd = next(v for v in values if v is not None and not isinstance(v, str))
        raise ValueError(f"{what} holds a value that is not an ISO 8601 string: {odd!r}") from None
    try:
        return raw.cast(_TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Arrow wants an offset and at most microseconds; pandas also reads naive times (taken as UTC).
    try:
        parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} holds a value that is not an ISO 8601 time: {exc}") from None
    return pa.array(parsed.dt.as_unit("us"), _TS)


def export_to_rows(
    tasks: Iterable[Mapping[str, Any]],
    *,
    task_type: TaskType,
    site_id: str,
    project_id: int,
    key: SecretStr,
    round: int = 0,
    classes: Sequence[str] | None = None,
) -> pa.Table:
    """One Label Studio project's export as annotation-log rows, one per annotation.

    Args:
        tasks: The export (``[{"id", "data", "annotations": [...]}, ...]``), as parsed from JSON. Each task's
            data carries ``item_id`` and ``batch_id``. Tasks without annotations give no rows.
        task_type: Decides how results are read (see the module docstring).
        site_id: The partner site whose Label Studio this is; also keys the annotator pseudonyms.
        project_id: The Label Studio project id, written to every row and named in errors.
        key: HMAC key for :mod:`flows.annotate.pseudonym` (``Settings.pseudonym_key``).
        round: The QA round the project belongs to.
        classes: When given, a label or box label outside them is malformed.

    Returns:
        A table with the :data:`flows.core.schemas.ANNOTATIONS` schema, in export order.

    Raises:
        MalformedExport: Some results do not fit the task type's label config; lists every one.
    """
    parse = _PARSERS[task_type](frozenset(classes) if classes is not None else None)
    empty_is_skip = task_type != TaskType.OBJECT_DETECTION
    pseudonymiser = Pseudonymiser(key)
    annotators: dict[int, str] = {}

    item_ids: list[str] = []
    batch_ids: list[str] = []
    task_ids: list[int] = []
    annotation_ids: list[int] = []
    annotator_col: list[str] = []
    answers: list[str | None] = []
    labels: list[str | None] = []
    lead_times: list[float | None] = []
    created: list[str | None] = []
    updated: list[str | None] = []
    skipped: list[bool] = []
    problems: list[str] = []

    for task in tasks:
        task_id = task.get("id")
        data = task.get("data")
        item_id = data.get("item_id") if isinstance(data, Mapping) else None
        batch_id = data.get("batch_id") if isinstance(data, Mapping) else None
        annotations = task.get("annotations") or ()
        if not annotations:
            continue
        if not isinstance(item_id, str) or not isinstance(batch_id, str) or task_id is None:
            problems.append(f"task {task_id}: data lacks item_id or batch_id (not a Kazi task?)")
            continue
        for a in annotations:
            annotation_id = None
            try:
                annotation_id = a.get("id")
                user = a.get("completed_by")
                # type() rather than isinstance(): True is an int, but not user 1.
                annotator = annotators.get(user) if type(user) is int else None
                if annotator is None:
                    annotator = pseudonymiser(site_id, _user_id(user))
                    if type(user) is int:
                        annotators[user] = annotator
                result = a.get("result") or []
                if a.get("was_cancelled") or (not result and empty_is_skip):
                    answer, label, skip = None, None, True
                else:
                    if not isinstance(result, list):
                        raise _Bad(f"result should be a list, got {type(result).__name__}")
                    answer, label = parse(result)
                    skip = False
                lead = a.get("lead_time")
                lead_s = None if lead is None else float(lead)
                row_ids = int(task_id), int(annotation_id)
            except _Bad as exc:
                problems.append(f"task {task_id}, annotation {annotation_id}: {exc}")
                continue
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problems.append(f"task {task_id}, annotation {annotation_id}: unreadable annotation ({exc!r})")
                continue
            item_ids.append(item_id)
            batch_ids.append(batch_id)
            task_ids.append(row_ids[0])
            annotation_ids.append(row_ids[1])
            annotator_col.append(annotator)
            answers.append(answer)
            labels.append(label)
            lead_times.append(lead_s)
            created.append(a.get("created_at"))
            updated.append(a.get("updated_at") or a.get("created_at"))
            skipped.append(skip)
            if updated[-1] is None:
                problems.append(f"task {task_id}, annotation {annotation_id}: no updated_at nor created_at")

    if problems:
        raise MalformedExport(project_id, problems)
    n = len(item_ids)
    columns = [
        pa.array(item_ids, pa.string()),
        pa.array(batch_ids, pa.string()),
        pa.repeat(pa.scalar(site_id, pa.string()), n),
        pa.repeat(pa.scalar(project_id, pa.int64()), n),
        pa.array(task_ids, pa.int64()),
        pa.array(annotation_ids, pa.int64()),
        pa.array(annotator_col, pa.string()),
        pa.array(answers, pa.string()),
        pa.array(labels, pa.string()),
        pa.array(lead_times, pa.float64()),
        _timestamps(created, f"project {project_id}: created_at"),
        _timestamps(updated, f"project {project_id}: updated_at"),
        pa.array(skipped, pa.bool_()),
        pa.repeat(pa.scalar(round, pa.int16()), n),
    ]
    return pa.Table.from_arrays(columns, schema=ANNOTATIONS)
