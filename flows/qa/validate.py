"""Validation of QA's output: the consolidated answers against the task type's output contract, and the
quality thresholds of the work order.

The checks are declared once (:func:`build_validation`) and run two ways, with the same meaning:

* :func:`run_gx` / :func:`validate_output`: Great Expectations in an ephemeral context, with a Checkpoint
  whose ``UpdateDataDocsAction`` writes Data Docs to a local folder (the flow uploads it).
* :func:`run_pandas` / :func:`validate_with_pandas`: the same checks in plain pandas, for tests and the
  benchmark (``bench/validation.py``).

The column rules come from the task type's output contract (``data_contracts/<task_type>/output.yaml``,
read by :mod:`flows.core.contracts`): required, allowed values (the work order's classes for ``label``),
numeric ranges (confidence in [0, 1]), uniqueness. The contract's JSON Schema of one answer is compiled
(:func:`compile_schema`, the subset the contracts use; any other keyword is refused, never ignored) and
applied to each distinct answer once. Two frames are checked:

* ``output``: one row per consolidated item (:data:`flows.core.schemas.CONSOLIDATED`), plus helper columns
  flattened from the ``answer`` JSON so that column expectations can check it: ``answer_valid`` (the
  answer fits the contract's JSON Schema), ``answer_label`` (the label inside the answer, where the task
  type has one) and, for object detection, per item extremes of its boxes (``box_min_x``,
  ``box_max_right`` = the largest x + width, ``box_min_width`` ... and ``box_labels_outside``, the boxes
  whose label is not a class). Extremes are enough: every box is inside 0..100 exactly when the smallest
  left edge is >= 0 and the largest right edge is <= 100.
* ``quality``: one row per partner site and one for the whole work order: gold accuracy (checked against
  ``min_gold_accuracy`` on every row) and Krippendorff's alpha (on the work-order row only: the
  threshold is per work order, so site rows leave it empty and column checks skip empty values).

Coverage: every accepted item has a consolidated row unless it waits for rework without any answer.
That is an exact row count (accepted items minus those waiting) together with "every item_id is
accepted" and "item_id is unique"; the expected count is written into the check's description.

Null values pass every check but ``not_null``, in both engines, as in Great Expectations.

Great Expectations takes seconds to import, so it is imported only inside the functions that run it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from flows.core.contracts import Contract, load_contract
from flows.core.gx import INDEX_PAGE, build_docs, docs_context, run_checkpoint
from flows.core.models import QAThresholds, TaskType, WorkOrder

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult

FrameName = Literal["output", "quality"]
CheckKind = Literal["column_exists", "not_null", "not_blank", "in_set", "between", "unique", "row_count", "pair_equal"]

#: Great Expectations' name of each kind of check.
GX_TYPES: Mapping[CheckKind, str] = {
    "column_exists": "expect_column_to_exist",
    "not_null": "expect_column_values_to_not_be_null",
    "not_blank": "expect_column_values_to_match_regex",
    "in_set": "expect_column_values_to_be_in_set",
    "between": "expect_column_values_to_be_between",
    "unique": "expect_column_values_to_be_unique",
    "row_count": "expect_table_row_count_to_equal",
    "pair_equal": "expect_column_pair_values_to_be_equal",
}

#: Box coordinates are rounded to 4 decimals by annotate; sums are rounded to this many so that
#: 30.1234 + 69.8766 is 100, not 100.00000000000001.
EDGE_DECIMALS = 6

WORK_ORDER_SCOPE = "work order"
_EXAMPLES = 5

_CLASSIFICATION = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION})
_BOX_COLUMNS = (
    "box_count",
    "box_min_x",
    "box_min_y",
    "box_max_right",
    "box_max_bottom",
    "box_min_width",
    "box_min_height",
    "box_labels_outside",
)


# --- Declared checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check on one frame, in terms both engines run."""

    frame: FrameName
    kind: CheckKind
    column: str | None = None
    column_b: str | None = None
    value_set: tuple[Any, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    strict_min: bool = False
    value: int | None = None
    description: str = ""

    @property
    def name(self) -> str:
        """GX's expectation type with the column(s), e.g. ``expect_column_values_to_be_in_set(label)``."""
        columns = ", ".join(c for c in (self.column, self.column_b) if c)
        return f"{GX_TYPES[self.kind]}({columns})" if columns else GX_TYPES[self.kind]


@dataclass(frozen=True)
class ValidationInput:
    """The frames to check and the checks, ready for either engine."""

    work_order_id: str
    frames: Mapping[FrameName, pd.DataFrame]
    checks: tuple[Check, ...]
    contract_version: str = ""


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one check."""

    name: str
    frame: FrameName
    success: bool
    observed_value: Any = None
    unexpected_count: int | None = None
    examples: tuple[Any, ...] = ()
    description: str = ""
    error: str | None = None


@dataclass(frozen=True)
class ValidationOutcome:
    """Every check's result; where Great Expectations ran, the local Data Docs folder and its index page.

    Attributes:
        success: Every check passed.
        results: One per check, in declaration order.
        data_docs_dir: Local folder of the Data Docs site (None for the pandas engine).
        index_page: The index page, relative to ``data_docs_dir``.
        contract_version: Version of the output contract the checks came from.
    """

    success: bool
    results: tuple[ExpectationOutcome, ...]
    data_docs_dir: Path | None = None
    index_page: str | None = None
    contract_version: str = ""
    engine: Literal["great_expectations", "pandas"] = "great_expectations"
    seconds: float = field(default=0.0, compare=False)

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(r for r in self.results if not r.success)

    def as_records(self) -> list[dict[str, Any]]:
        """One plain dict per check (e.g. for a Prefect table artifact)."""
        return [
            {
                "check": r.name,
                "frame": r.frame,
                "success": r.success,
                "unexpected": r.unexpected_count,
                "observed": r.observed_value,
                "examples": ", ".join(str(e) for e in r.examples),
                "what": r.description,
            }
            for r in self.results
        ]


# --- The answer's JSON Schema (the subset output contracts use) --------------------------------------

_SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "enum",
        "description",
        "title",
    }
)


def check_schema_keywords(schema: Mapping[str, Any], path: str = "answer") -> None:
    """Refuse JSON Schema keywords :func:`answer_problem` does not implement, so none is silently ignored."""
    unknown = sorted(set(schema) - _SCHEMA_KEYWORDS)
    if unknown:
        raise ValueError(
            f"output contract: JSON Schema keyword(s) {unknown} at {path} are not supported by "
            "flows/qa/validate.py; use the supported subset or extend answer_problem"
        )
    for name, sub in (schema.get("properties") or {}).items():
        check_schema_keywords(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        sub = schema.get(key)
        if isinstance(sub, Mapping):
            check_schema_keywords(sub, f"{path}.{key}")


def _is_number(v: Any) -> bool:
    """A finite JSON number (not a boolean: ``type(True) is bool``); ``v - v`` is NaN for NaN and infinities."""
    t = type(v)
    return (t is float or t is int) and v - v == 0


_TYPE_TESTS = {
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": lambda v: _is_number(v) and float(v).is_integer(),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


# A compiled check returns None when the value fits, else (path below the checked value, what is wrong).
_Compiled = Callable[[Any], "tuple[str, str] | None"]


def _type_test(types: Sequence[str]) -> Callable[[Any], bool]:
    if any(t not in _TYPE_TESTS for t in types):
        raise ValueError(f"output contract: unknown JSON Schema type in {list(types)}")
    tests = [_TYPE_TESTS[t] for t in types]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(test(v) for test in tests)


def compile_schema(schema: Mapping[str, Any]) -> _Compiled:
    """``schema`` (the subset :func:`check_schema_keywords` allows) as one function, built once.

    Compiling takes the keyword look-ups out of the per-answer work: a box list is checked about four times
    faster than by walking the schema for every answer.
    """
    checks: list[_Compiled] = []
    declared = schema.get("type")
    if declared is not None:
        types = [declared] if isinstance(declared, str) else list(declared)
        is_type, wanted = _type_test(types), f"is not {' or '.join(types)}"
        checks.append(lambda v: None if is_type(v) else ("", wanted))
    if "enum" in schema:
        enum = list(schema["enum"])
        checks.append(lambda v: None if v in enum else ("", f"is not one of {enum}"))
    min_length, max_length = schema.get("minLength"), schema.get("maxLength")
    if min_length is not None or max_length is not None:

        def check_length(v: Any) -> tuple[str, str] | None:
            if type(v) is str:
                if min_length is not None and len(v) < min_length:
                    return "", f"is shorter than {min_length}"
                if max_length is not None and len(v) > max_length:
                    return "", f"is longer than {max_length}"
            return None

        checks.append(check_length)
    bounds = [schema.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")]
    if any(b is not None for b in bounds):
        low, high, above, below = bounds

        # One function for all bounds: boxes have four numbers each, checked millions of times.
        def check_bounds(v: Any) -> tuple[str, str] | None:
            if not _is_number(v):
                return None
            if low is not None and v < low:
                return "", f"is below {low}"
            if high is not None and v > high:
                return "", f"is above {high}"
            if above is not None and v <= above:
                return "", f"is not above {above}"
            if below is not None and v >= below:
                return "", f"is not below {below}"
            return None

        checks.append(check_bounds)
    if "required" in schema or "properties" in schema or "additionalProperties" in schema:
        required = tuple(schema.get("required", ()))
        properties = {k: compile_schema(sub) for k, sub in (schema.get("properties") or {}).items()}
        extra = schema.get("additionalProperties", True)
        other = compile_schema(extra) if isinstance(extra, Mapping) else None

        def check_object(v: Any) -> tuple[str, str] | None:
            if not isinstance(v, dict):
                return None
            for key in required:
                if key not in v:
                    return "", f"lacks {key!r}"
            for key, item in v.items():
                sub = properties.get(key)
                if sub is None:
                    if extra is False:
                        return "", f"has an unexpected key {key!r}"
                    sub = other
                if sub is not None and (problem := sub(item)) is not None:
                    return f".{key}{problem[0]}", problem[1]
            return None

        checks.append(check_object)
    if isinstance(schema.get("items"), Mapping):
        each = compile_schema(schema["items"])

        def check_items(v: Any) -> tuple[str, str] | None:
            if not isinstance(v, list):
                return None
            for i, item in enumerate(v):
                if (problem := each(item)) is not None:
                    return f"[{i}]{problem[0]}", problem[1]
            return None

        checks.append(check_items)

    if len(checks) == 1:
        return checks[0]

    def check(v: Any) -> tuple[str, str] | None:
        for c in checks:
            if (problem := c(v)) is not None:
                return problem
        return None

    return check


def answer_problem(value: Any, schema: Mapping[str, Any] | _Compiled, path: str = "answer") -> str | None:
    """The first way ``value`` breaks ``schema`` (a JSON Schema subset, or :func:`compile_schema`'s result),
    or None when it fits."""
    compiled = schema if callable(schema) else compile_schema(schema)
    problem = compiled(value)
    return None if problem is None else f"{path}{problem[0]} {problem[1]}"


# --- Frames ---------------------------------------------------------------------------------------


def _answer_facts(text: str, schema: _Compiled | None, classes: frozenset[str] | None, boxes: bool) -> tuple[Any, ...]:
    """(answer_valid, answer_label, *box extremes) of one answer's JSON text."""
    nan = float("nan")
    no_boxes = (nan,) * len(_BOX_COLUMNS) if boxes else ()
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return (False, None, *no_boxes)
    valid = isinstance(value, dict) and (schema is None or schema(value) is None)
    if not isinstance(value, dict):
        return (False, None, *no_boxes)
    label = value.get("label") if isinstance(value.get("label"), str) else None
    if not boxes:
        return (valid, label)
    raw = value.get("boxes")
    if not isinstance(raw, list):
        return (valid, label, *no_boxes)
    items: list[Any] = raw
    coords = [
        (b["x"], b["y"], b["width"], b["height"], b.get("label"))
        for b in items
        if type(b) is dict
        and _is_number(b.get("x"))
        and _is_number(b.get("y"))
        and _is_number(b.get("width"))
        and _is_number(b.get("height"))
    ]
    if not coords:
        return (valid, label, float(len(items)), *(nan,) * (len(_BOX_COLUMNS) - 2), 0.0)
    xs, ys, ws, hs, labels = zip(*coords, strict=True)
    outside = sum(1 for lb in labels if classes is not None and lb not in classes)
    return (
        valid,
        label,
        float(len(items)),
        float(min(xs)),
        float(min(ys)),
        round(max(x + w for x, w in zip(xs, ws, strict=True)), EDGE_DECIMALS),
        round(max(y + h for y, h in zip(ys, hs, strict=True)), EDGE_DECIMALS),
        float(min(ws)),
        float(min(hs)),
        float(outside),
    )


def _ids(values: Iterable[str]) -> pa.Array:
    """Ids as an Arrow string array (zero-copy from pandas' Arrow-backed strings); pandas' ``isin`` on
    those boxes every value, Arrow's ``is_in`` does not."""
    if isinstance(values, pd.Series | pd.Index):
        array = pa.array(values.astype("str"), type=pa.string())
    elif isinstance(values, pa.ChunkedArray):
        array = values.combine_chunks()
    elif isinstance(values, pa.Array):
        array = values
    else:
        array = pa.array(list(values), type=pa.string())
    return array.cast(pa.string())


def _distinct_ids(values: Iterable[str]) -> pa.Array:
    return pc.unique(_ids(values).drop_null())


def output_frame(
    consolidated: pd.DataFrame,
    task_type: TaskType | str,
    *,
    classes: Sequence[str] = (),
    answer_schema: Mapping[str, Any] | None = None,
    accepted_items: Iterable[str] | None = None,
) -> pd.DataFrame:
    """``consolidated`` with the helper columns the output checks read (see the module docstring).

    Each distinct answer is parsed once: classification answers have a handful of distinct values, so
    a million rows cost one factorisation; boxes and texts are parsed one by one.

    Args:
        consolidated: One row per item (``flows.core.schemas.CONSOLIDATED``); not modified.
        task_type: Decides which helper columns there are.
        classes: The work order's classes (answer labels and box labels are checked against them).
        answer_schema: The contract's JSON Schema of one answer; without it ``answer_valid`` only
            requires a JSON object.
        accepted_items: When given, adds ``accepted``: the item is one of them.
    """
    task = TaskType(task_type)
    if "answer" not in consolidated.columns:
        raise ValueError("consolidated lacks the column 'answer'")
    boxes = task == TaskType.OBJECT_DETECTION
    class_set = frozenset(classes) if classes else None
    codes, uniques = pd.factorize(consolidated["answer"], use_na_sentinel=True)
    compiled = compile_schema(answer_schema) if answer_schema is not None else None
    facts = [_answer_facts(str(u), compiled, class_set, boxes) for u in uniques]
    names = ["answer_valid", *(_BOX_COLUMNS if boxes else ())]
    columns = dict(zip(["answer_valid", "answer_label", *_BOX_COLUMNS], zip(*facts, strict=True), strict=False))
    if task in _CLASSIFICATION or (task == TaskType.AUDIO_TRANSCRIPTION and classes):
        names.insert(1, "answer_label")
    # A null answer (code -1) takes the appended last entry: null facts.
    take = np.where(codes >= 0, codes, len(uniques))
    out = consolidated.copy()
    for name in names:
        values = list(columns.get(name, ()))
        if name == "answer_valid":
            out[name] = pd.array(np.asarray([*values, None], dtype=object)[take], dtype="boolean")
        elif name == "answer_label":
            out[name] = pd.array(np.asarray([*values, None], dtype=object)[take], dtype="str")
        else:
            out[name] = np.asarray([*values, np.nan], dtype=np.float64)[take]
    if accepted_items is not None:
        accepted = _distinct_ids(accepted_items)
        present = pc.is_in(_ids(consolidated["item_id"]), value_set=accepted)
        out["accepted"] = pc.fill_null(present, False).to_numpy(zero_copy_only=False)
    return out


def quality_frame(site_scores: pd.DataFrame | None, alpha: float | None) -> pd.DataFrame:
    """One row per site (gold accuracy) and one for the work order (pooled gold accuracy and alpha).

    Args:
        site_scores: ``flows.qa.scores.site_scores`` (indexed by site_id, with n_gold and gold_accuracy).
        alpha: Krippendorff's alpha of the work order (NaN or None when it could not be measured).
    """
    rows: list[dict[str, Any]] = []
    if site_scores is not None and len(site_scores):
        n_gold = site_scores["n_gold"].to_numpy(dtype=np.float64)
        accuracy = site_scores["gold_accuracy"].to_numpy(dtype=np.float64)
        for site, n, acc in zip(site_scores.index.astype(str), n_gold, accuracy, strict=True):
            rows.append(
                {"scope": "site", "site_id": site, "n_gold": int(n), "gold_accuracy": acc, "agreement_alpha": np.nan}
            )
        # Pooled over the sites whose accuracy is judged (a site with too few gold answers is not yet).
        judged = ~np.isnan(accuracy)
        correct = float((accuracy[judged] * n_gold[judged]).sum())
        total = float(n_gold[judged].sum())
        pooled = correct / total if total > 0 else np.nan
    else:
        total, pooled = 0.0, np.nan
    rows.append(
        {
            "scope": WORK_ORDER_SCOPE,
            "site_id": "all sites",
            "n_gold": int(total),
            "gold_accuracy": pooled,
            "agreement_alpha": np.nan if alpha is None else float(alpha),
        }
    )
    frame = pd.DataFrame(rows)
    frame["n_gold"] = frame["n_gold"].astype(np.int64)
    return frame


def _contract_checks(contract: Contract, classes: Sequence[str], columns: Iterable[str]) -> list[Check]:
    checks: list[Check] = []
    present = set(columns)
    for column, rule in contract.columns.items():
        if column not in present and not rule.required:
            continue
        what = rule.description or column
        checks.append(Check("output", "column_exists", column, description=f"{column} is there"))
        if rule.required:
            checks.append(Check("output", "not_null", column, description=f"every item has {column}"))
            if rule.type == "string":
                checks.append(Check("output", "not_blank", column, description=f"{column} is not blank"))
        allowed = rule.allowed_values
        if rule.allowed_from_work_order == "label_schema.classes":
            allowed = list(classes)
        if allowed is not None:
            checks.append(
                Check("output", "in_set", column, value_set=tuple(allowed), description=f"{what}: an allowed value")
            )
        if rule.min_value is not None or rule.max_value is not None:
            checks.append(
                Check(
                    "output",
                    "between",
                    column,
                    min_value=rule.min_value,
                    max_value=rule.max_value,
                    description=f"{column} between {rule.min_value} and {rule.max_value}",
                )
            )
        if rule.unique:
            checks.append(Check("output", "unique", column, description=f"no two rows share an {column}"))
    return checks


def _answer_checks(task: TaskType, contract: Contract, classes: Sequence[str], columns: Iterable[str]) -> list[Check]:
    present = set(columns)
    checks = [
        Check(
            "output",
            "in_set",
            "answer_valid",
            value_set=(True,),
            description="the answer JSON has the shape the output contract declares",
        )
    ]
    if "answer_label" in present and classes:
        checks.append(
            Check(
                "output",
                "in_set",
                "answer_label",
                value_set=tuple(classes),
                description="the label inside the answer is one of the work order's classes",
            )
        )
    if "answer_label" in present and "label" in present and task in _CLASSIFICATION:
        checks.append(
            Check("output", "pair_equal", "answer_label", "label", description="label repeats the answer's label")
        )
    if task == TaskType.OBJECT_DETECTION:
        inside = contract.answer is not None and contract.answer.boxes_within_image
        for column in ("box_min_x", "box_min_y"):
            checks.append(
                Check(
                    "output",
                    "between",
                    column,
                    min_value=0.0,
                    max_value=100.0,
                    description="boxes start inside the image",
                )
            )
        if inside:
            for column in ("box_max_right", "box_max_bottom"):
                checks.append(
                    Check(
                        "output",
                        "between",
                        column,
                        min_value=0.0,
                        max_value=100.0,
                        description="boxes end inside the image (x + width, y + height <= 100)",
                    )
                )
        for column in ("box_min_width", "box_min_height"):
            checks.append(
                Check(
                    "output",
                    "between",
                    column,
                    min_value=0.0,
                    strict_min=True,
                    description="every box has a size (> 0)",
                )
            )
        if classes:
            checks.append(
                Check(
                    "output",
                    "between",
                    "box_labels_outside",
                    min_value=0,
                    max_value=0,
                    description="every box label is one of the work order's classes",
                )
            )
    return checks


def build_validation(
    consolidated: pd.DataFrame,
    work_order: WorkOrder,
    *,
    site_scores: pd.DataFrame | None = None,
    alpha: float | None = None,
    accepted_items: Iterable[str] | None = None,
    rework_items: Iterable[str] = (),
    contract: Contract | None = None,
) -> ValidationInput:
    """The frames and checks of a work order's output (pure; nothing is run).

    Args:
        consolidated: The consolidated answers to deliver (``flows.core.schemas.CONSOLIDATED``), without
            gold items: split allocates gold items as gold only, so they are not accepted client items.
        work_order: Task type, classes and thresholds.
        site_scores: Per site gold accuracy (``flows.qa.scores.site_scores``); with ``alpha``, the quality
            frame. Without both, only the work-order row is checked (and passes with no evidence).
        alpha: Krippendorff's alpha of the work order.
        accepted_items: The ingested client items (gold items left out); when given, coverage is checked.
        rework_items: Items sent to rework: an accepted item may lack a row only when it is one of them.
        contract: The output contract (default: ``data_contracts/<task_type>/output.yaml``).
    """
    task = work_order.task_type
    contract = contract or load_contract(task, "output")
    if contract.kind != "output" or contract.task_type != task:
        raise ValueError(f"contract is {contract.task_type.value} {contract.kind}, expected {task.value} output")
    schema = contract.answer.json_schema if contract.answer is not None else None
    if schema is not None:
        check_schema_keywords(schema)
    classes = list(work_order.label_schema.classes)
    accepted = None if accepted_items is None else _distinct_ids(accepted_items)
    out = output_frame(consolidated, task, classes=classes, answer_schema=schema, accepted_items=accepted)
    checks = _contract_checks(contract, classes, out.columns)
    checks += _answer_checks(task, contract, classes, out.columns)
    if accepted is not None:
        waiting = _distinct_ids(rework_items)
        waiting = waiting.filter(pc.is_in(waiting, value_set=accepted))
        without_row = waiting.filter(pc.invert(pc.is_in(waiting, value_set=_ids(consolidated["item_id"]))))
        expected = len(accepted) - len(without_row)
        checks += [
            Check("output", "in_set", "accepted", value_set=(True,), description="every item is an accepted item"),
            Check(
                "output",
                "row_count",
                value=expected,
                description=(
                    f"coverage: {len(accepted):,} accepted items, {len(without_row):,} of them waiting for "
                    f"rework without an answer, so {expected:,} consolidated rows"
                ),
            ),
        ]
    thresholds: QAThresholds = work_order.qa
    checks += [
        Check(
            "quality",
            "between",
            "gold_accuracy",
            min_value=thresholds.min_gold_accuracy,
            max_value=1.0,
            description=f"gold accuracy of every site and overall >= {thresholds.min_gold_accuracy}",
        ),
        Check(
            "quality",
            "between",
            "agreement_alpha",
            min_value=thresholds.min_agreement,
            max_value=1.0,
            description=f"Krippendorff's alpha of the work order >= {thresholds.min_agreement}",
        ),
    ]
    return ValidationInput(
        work_order_id=work_order.id,
        frames={"output": out, "quality": quality_frame(site_scores, alpha)},
        checks=tuple(checks),
        contract_version=contract.version,
    )


# --- Great Expectations -------------------------------------------------------------------------------


def _expectation(check: Check) -> Any:
    import great_expectations.expectations as gxe

    classes: dict[CheckKind, Any] = {
        "column_exists": gxe.ExpectColumnToExist,
        "not_null": gxe.ExpectColumnValuesToNotBeNull,
        "not_blank": gxe.ExpectColumnValuesToMatchRegex,
        "in_set": gxe.ExpectColumnValuesToBeInSet,
        "between": gxe.ExpectColumnValuesToBeBetween,
        "unique": gxe.ExpectColumnValuesToBeUnique,
        "row_count": gxe.ExpectTableRowCountToEqual,
        "pair_equal": gxe.ExpectColumnPairValuesToBeEqual,
    }
    kw: dict[str, Any] = {"description": check.description} if check.description else {}
    if check.kind == "row_count":
        kw["value"] = check.value
    elif check.kind == "pair_equal":
        kw.update(column_A=check.column, column_B=check.column_b)
    else:
        kw["column"] = check.column
    if check.kind == "not_blank":
        kw["regex"] = r"\S"
    elif check.kind == "in_set":
        kw["value_set"] = list(check.value_set)
    elif check.kind == "between":
        kw.update(min_value=check.min_value, max_value=check.max_value, strict_min=check.strict_min)
    return classes[check.kind](**kw)


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so outcomes compare and serialise plainly."""
    return value.item() if isinstance(value, np.generic) else value


def _outcome(check: Check, result: ExpectationValidationResult) -> ExpectationOutcome:
    info = result.exception_info or {}
    error = info.get("exception_message") if info.get("raised_exception") else None
    body = result.result or {}
    count = body.get("unexpected_count")
    return ExpectationOutcome(
        name=check.name,
        frame=check.frame,
        success=bool(result.success),
        observed_value=_plain(body.get("observed_value")),
        unexpected_count=None if count is None else int(count),
        examples=()
        if check.kind == "not_null"
        else tuple(_plain(v) for v in body.get("partial_unexpected_list") or ())[:_EXAMPLES],
        description=check.description,
        error=error,
    )


def run_gx(validation: ValidationInput, docs_dir: Path, *, run_name: str | None = None) -> ValidationOutcome:
    """Run the checks with Great Expectations and build Data Docs into ``docs_dir``.

    Every call uses a fresh ephemeral context, so it can run any number of times in one process. The Data
    Docs site is a folder of static files; a second run into the same folder adds its results to the index.
    """
    import great_expectations as gx

    start = time.perf_counter()
    docs_dir = Path(docs_dir)
    context = docs_context(docs_dir)
    run_name = run_name or f"{validation.work_order_id}-{uuid.uuid4().hex[:8]}"
    outcomes: dict[int, ExpectationOutcome] = {}
    for frame_name, frame in validation.frames.items():
        indexed = [(i, c) for i, c in enumerate(validation.checks) if c.frame == frame_name]
        if not indexed:
            continue
        suite = gx.ExpectationSuite(
            name=f"{validation.work_order_id}.{frame_name}",
            expectations=[_expectation(c) for _, c in indexed],
            meta={"contract_version": validation.contract_version, "work_order_id": validation.work_order_id},
        )
        result = run_checkpoint(
            context,
            suite,
            frame,
            name=frame_name,
            run_name=run_name,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": _EXAMPLES},
            update_docs=False,
        )
        # Results do not come back in suite order: match them through the ids the stored suite gave its
        # expectations.
        stored = context.suites.get(suite.name)
        by_id = {e.id: (i, c) for (i, c), e in zip(indexed, stored.expectations, strict=True)}
        for suite_result in result.run_results.values():
            for expectation_result in suite_result.results:
                config = expectation_result.expectation_config
                if config is None or config.id not in by_id:
                    raise RuntimeError(f"Great Expectations returned a result for an unknown expectation: {config}")
                i, check = by_id[config.id]
                outcomes[i] = _outcome(check, expectation_result)
        missing = [c.name for i, c in indexed if i not in outcomes]
        if missing:
            raise RuntimeError(f"Great Expectations returned no result for {missing}")
    build_docs(context)  # once, for every frame's checkpoint
    results = tuple(outcomes[i] for i in sorted(outcomes))
    if not (docs_dir / INDEX_PAGE).is_file():
        raise RuntimeError(f"Great Expectations wrote no Data Docs index to {docs_dir}")
    return ValidationOutcome(
        success=all(r.success for r in results),
        results=results,
        data_docs_dir=docs_dir,
        index_page=INDEX_PAGE,
        contract_version=validation.contract_version,
        engine="great_expectations",
        seconds=time.perf_counter() - start,
    )


# --- pandas --------------------------------------------------------------------------------------------


def _unexpected(check: Check, frame: pd.DataFrame) -> ExpectationOutcome:
    """The check in pandas: the rows failing it (nulls pass every check but not_null)."""
    assert check.column is not None
    column = frame[check.column]
    present = column.notna().to_numpy()
    if check.kind == "not_null":
        bad = ~present
    elif check.kind == "not_blank":
        # Same rule as the regex \S: some character that is not white space (strip removes Unicode white space).
        text = column.astype("str")
        bad = present & (text.str.strip().str.len() == 0).fillna(False).to_numpy(dtype=bool)
    elif check.kind == "in_set":
        bad = present & ~column.isin(list(check.value_set)).to_numpy(dtype=bool)
    elif check.kind == "between":
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            low = np.zeros(len(values), dtype=bool)
            if check.min_value is not None:
                low = values <= check.min_value if check.strict_min else values < check.min_value
            high = values > check.max_value if check.max_value is not None else np.zeros(len(values), dtype=bool)
        bad = present & (low | high)
    elif check.kind == "unique":
        bad = present & column.duplicated(keep=False).to_numpy()
    elif check.kind == "pair_equal":
        assert check.column_b is not None
        other = frame[check.column_b]
        both_missing = ~present & other.isna().to_numpy()
        equal = (column == other).fillna(False).to_numpy(dtype=bool)
        bad = ~both_missing & ~equal
    else:
        raise ValueError(f"{check.kind!r} is not a column check")
    idx = np.flatnonzero(bad)
    examples = tuple(_plain(v) for v in column.iloc[idx[:_EXAMPLES]].tolist()) if check.kind != "not_null" else ()
    return ExpectationOutcome(
        name=check.name,
        frame=check.frame,
        success=idx.size == 0,
        unexpected_count=int(idx.size),
        examples=examples,
        description=check.description,
    )


def _pandas_check(check: Check, frame: pd.DataFrame) -> ExpectationOutcome:
    if check.kind == "row_count":
        return ExpectationOutcome(
            name=check.name,
            frame=check.frame,
            success=len(frame) == check.value,
            observed_value=len(frame),
            description=check.description,
        )
    if (
        check.column is None
        or check.column not in frame.columns
        or (check.column_b and check.column_b not in frame.columns)
    ):
        missing = check.column_b if check.column in frame.columns else check.column
        return ExpectationOutcome(
            name=check.name,
            frame=check.frame,
            success=False,
            description=check.description,
            error=None if check.kind == "column_exists" else f"no column {missing!r}",
        )
    if check.kind == "column_exists":
        return ExpectationOutcome(name=check.name, frame=check.frame, success=True, description=check.description)
    return _unexpected(check, frame)


def run_pandas(validation: ValidationInput) -> ValidationOutcome:
    """The same checks as :func:`run_gx`, in plain pandas, without Data Docs."""
    start = time.perf_counter()
    results = tuple(_pandas_check(c, validation.frames[c.frame]) for c in validation.checks)
    return ValidationOutcome(
        success=all(r.success for r in results),
        results=results,
        contract_version=validation.contract_version,
        engine="pandas",
        seconds=time.perf_counter() - start,
    )


def validate_output(
    consolidated: pd.DataFrame,
    work_order: WorkOrder,
    *,
    docs_dir: Path,
    site_scores: pd.DataFrame | None = None,
    alpha: float | None = None,
    accepted_items: Iterable[str] | None = None,
    rework_items: Iterable[str] = (),
    contract: Contract | None = None,
    run_name: str | None = None,
) -> ValidationOutcome:
    """Validate QA's output with Great Expectations; Data Docs go to ``docs_dir`` (see :func:`build_validation`)."""
    validation = build_validation(
        consolidated,
        work_order,
        site_scores=site_scores,
        alpha=alpha,
        accepted_items=accepted_items,
        rework_items=rework_items,
        contract=contract,
    )
    return run_gx(validation, docs_dir, run_name=run_name)


def validate_with_pandas(
    consolidated: pd.DataFrame,
    work_order: WorkOrder,
    *,
    site_scores: pd.DataFrame | None = None,
    alpha: float | None = None,
    accepted_items: Iterable[str] | None = None,
    rework_items: Iterable[str] = (),
    contract: Contract | None = None,
) -> ValidationOutcome:
    """The checks of :func:`validate_output` in plain pandas (no Data Docs)."""
    validation = build_validation(
        consolidated,
        work_order,
        site_scores=site_scores,
        alpha=alpha,
        accepted_items=accepted_items,
        rework_items=rework_items,
        contract=contract,
    )
    return run_pandas(validation)
