"""Data contracts: the YAML loader, the row-level checker and the Great Expectations suite agree."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from flows.core.contracts import CONTRACTS_DIR, Contract, Rule, contract_path, load_contract, parse_contract
from flows.core.models import TaskType
from flows.ingest.contract import build_suite, check_rows, first_failures, gx_frame, missing_media, validate_with_gx

pytestmark = pytest.mark.unit

S3 = "s3://client-bucket/images/a.jpg"


def contract(**columns: dict[str, Any]) -> Contract:
    return Contract.model_validate(
        {"kind": "output", "task_type": "image_classification", "columns": columns, "version": "test"}
    )


def failures(table: pa.Table, c: Contract, **kw: Any) -> list[tuple[int, str, str]]:
    out = check_rows(table, c, **kw)
    return list(zip(out["row"].to_pylist(), out["field"].to_pylist(), out["reason"].to_pylist(), strict=True))


# --- loading --------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_type", list(TaskType))
@pytest.mark.parametrize("kind", ["input", "output"])
def test_every_task_type_has_both_contracts(task_type: TaskType, kind: str) -> None:
    c = load_contract(task_type, kind)  # type: ignore[arg-type]
    assert c.task_type == task_type and c.kind == kind
    assert c.version == hashlib.sha256(contract_path(task_type, kind).read_bytes()).hexdigest()[:12]
    assert c.columns["item_id"].required
    if kind == "output":
        assert c.answer is not None and c.columns["confidence"].max_value == 1
    else:
        assert c.answer is None


def test_contract_files_are_only_the_declared_ones() -> None:
    for task_type in TaskType:
        names = {p.name for p in (CONTRACTS_DIR / task_type.value).glob("*.yaml")}
        assert {"input.yaml", "output.yaml"} <= names


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("kind: input\ntask_type: image_classification\ncolumns: {item_id: {requird: true}}\n", "requird"),
        ("kind: input\ntask_type: image_classification\ncolumns: {x: {regex: '(?=a)b'}}\n", "RE2"),
        ("kind: input\ntask_type: image_classification\ncolumns: {x: {regex: '('}}\n", "Python"),
        ("kind: input\ntask_type: image_classification\ncolumns: {x: {type: number, max_length: 3}}\n", "string"),
        ("kind: input\ntask_type: image_classification\ncolumns: {x: {min_length: 5, max_length: 3}}\n", "min_length"),
        ("kind: input\ntask_type: image_classification\ncolumns: {x: {min_value: 1}}\n", "integer and number"),
        ("kind: input\ntask_type: nope\ncolumns: {}\n", "task_type"),
        ("kind: input\ntask_type: image_classification\nversion: abc\ncolumns: {}\n", "version"),
        ("- just a list\n", "mapping"),
        ("kind: input\ntask_type: image_classification\ncolumns: {}\nanswer: {json_schema: {}}\n", "answer"),
    ],
)
def test_bad_contracts_are_refused_with_the_reason(yaml_text: str, message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        parse_contract(yaml_text.encode())


def test_a_contract_in_the_wrong_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "text_classification"
    folder.mkdir()
    (folder / "input.yaml").write_text("kind: input\ntask_type: image_classification\ncolumns: {}\n")
    with pytest.raises(ValueError, match="expected text_classification input"):
        load_contract("text_classification", "input", root=tmp_path)


def test_version_changes_with_the_bytes() -> None:
    a = parse_contract(b"kind: input\ntask_type: image_classification\ncolumns: {}\n")
    b = parse_contract(b"kind: input\ntask_type: image_classification\ncolumns: {}\n# note\n")
    assert len(a.version) == 12 and a.version != b.version


# --- each task type: a valid row passes, an invalid one names its field -------------------------

VALID: dict[TaskType, dict[str, str | None]] = {
    TaskType.IMAGE_CLASSIFICATION: {"item_id": "a1", "media_uri": S3, "text": None},
    TaskType.OBJECT_DETECTION: {"item_id": "a1", "media_uri": S3, "text": "caption"},
    TaskType.AUDIO_TRANSCRIPTION: {"item_id": "a1", "media_uri": "s3://audio-bkt/clips/1.wav", "text": None},
    TaskType.TEXT_CLASSIFICATION: {"item_id": "a1", "media_uri": None, "text": "Is this spam?"},
    TaskType.LISTING_VERIFICATION: {"item_id": "a1", "media_uri": None, "text": None, "fields.phone": "+254"},
}
INVALID: dict[TaskType, tuple[dict[str, str], str]] = {
    TaskType.IMAGE_CLASSIFICATION: ({"media_uri": "https://example.com/a.jpg"}, "media_uri"),
    TaskType.OBJECT_DETECTION: ({"media_uri": "s3://Bad_Bucket/a.jpg"}, "media_uri"),
    TaskType.AUDIO_TRANSCRIPTION: ({"media_uri": "s3://audio-bkt/clips/"}, "media_uri"),
    TaskType.TEXT_CLASSIFICATION: ({"text": "   "}, "text"),
    TaskType.LISTING_VERIFICATION: ({"fields.phone": "9" * 2001}, "fields.phone"),
}


@pytest.mark.parametrize("task_type", list(TaskType))
def test_each_task_type_accepts_a_valid_row_and_names_the_field_of_an_invalid_one(task_type: TaskType) -> None:
    c = load_contract(task_type)
    good = VALID[task_type]
    change, field = INVALID[task_type]
    bad = {**good, **change}
    no_id = {**good, "item_id": None}
    table = pa.Table.from_pylist([good, bad, no_id], schema=pa.schema([(k, pa.string()) for k in good]))
    got = first_failures(check_rows(table, c, check_unique=False))
    assert got["row"].to_pylist() == [1, 2]
    assert got["field"].to_pylist() == [field, "item_id"]
    assert got["reason"][0].as_py().startswith(field)


# --- rules, one at a time -------------------------------------------------------------------------


def test_required_catches_null_and_blank() -> None:
    c = contract(item_id={"required": True})
    table = pa.table({"item_id": ["a", None, " \t", ""]})
    assert failures(table, c) == [
        (1, "item_id", "item_id is missing"),
        (2, "item_id", "item_id is blank: ' \\t'"),
        (3, "item_id", "item_id is blank: ''"),
    ]


def test_lengths_count_characters_not_bytes() -> None:
    c = contract(t={"min_length": 2, "max_length": 3})
    table = pa.table({"t": ["üü", "ü", "üüüü", None]})
    assert failures(table, c) == [
        (1, "t", "t is shorter than 2 characters (1)"),
        (2, "t", "t is longer than 3 characters (4)"),
    ]


def test_regex_is_searched_and_uses_the_hint() -> None:
    c = contract(u={"regex": "^s3://", "regex_hint": "an S3 URI"}, v={"regex": "b"})
    table = pa.table({"u": [S3, "http://x", None], "v": ["abc", "xyz", "b"]})
    assert failures(table, c) == [(1, "u", "u is not an S3 URI: 'http://x'"), (1, "v", "v is not matching b: 'xyz'")]


def test_long_values_are_cut_in_reasons() -> None:
    c = contract(t={"max_length": 5})
    reason = failures(pa.table({"t": ["y" * 500]}), c)[0][2]
    assert reason.startswith("t is longer than 5 characters (500)") and len(reason) < 100
    reason = failures(pa.table({"t": ["z" * 500]}), contract(t={"regex": "^a"}))[0][2]
    assert reason.endswith("...") and len(reason) < 120


def test_allowed_values_and_classes_from_the_work_order() -> None:
    c = contract(method={"allowed_values": ["a", "b"]}, label={"allowed_from_work_order": "label_schema.classes"})
    table = pa.table({"method": ["a", "c", None], "label": ["cat", "dog", "cow"]})
    assert failures(table, c) == [(1, "method", "method is not one of the allowed values: 'c'")]
    assert failures(table, c, classes=["cat", "dog"])[1:] == [
        (2, "label", "label is not one of the allowed values: 'cow'")
    ]


def test_numbers_integers_and_booleans() -> None:
    c = contract(
        conf={"type": "number", "min_value": 0, "max_value": 1},
        n={"type": "integer", "min_value": 1},
        flag={"type": "boolean"},
    )
    table = pa.table({"conf": [0.5, -0.1, 1.5, None], "n": [1.0, 0.0, 2.5, 3.0], "flag": ["true", None, None, None]})
    assert failures(table, c) == [
        (1, "conf", "conf is below 0.0: -0.1"),
        (2, "conf", "conf is above 1.0: 1.5"),
        (2, "n", "n is not a whole number: 2.5"),
        (1, "n", "n is below 1.0: 0.0"),
        (0, "flag", "flag is not true/false: 'true'"),
    ]
    assert failures(pa.table({"conf": ["0.5"]}), contract(conf={"type": "number"})) == [
        (0, "conf", "conf is not a number: '0.5'")
    ]


def test_unique_is_checked_unless_dedupe_does_it() -> None:
    c = contract(item_id={"unique": True})
    table = pa.table({"item_id": ["a", "b", "a", None, None, "a"]})
    assert failures(table, c) == [
        (2, "item_id", "item_id repeats an earlier row's value: 'a'"),
        (5, "item_id", "item_id repeats an earlier row's value: 'a'"),
    ]
    assert failures(table, c, check_unique=False) == []


def test_missing_columns() -> None:
    c = contract(item_id={"required": True}, text={})
    table = pa.table({"other": ["1", "2"]})
    assert failures(table, c) == [
        (0, "item_id", "item_id is missing: no such column"),
        (1, "item_id", "item_id is missing: no such column"),
    ]
    table = pa.table({"item_id": ["1"], "text": pa.nulls(1, pa.string())})
    assert failures(table, c, missing={"item_id": "sku", "text": "caption"}) == [
        (0, "item_id", "column 'sku' (mapped to item_id) is missing from the file")
    ]


def test_first_failures_keeps_one_row_per_record() -> None:
    c = contract(a={"required": True}, b={"max_length": 1})
    table = pa.table({"a": [None, "x", None], "b": ["long", "k", "x"]})
    got = first_failures(check_rows(table, c))
    assert got.to_pylist() == [
        {"row": 0, "field": "a", "reason": "a is missing; b is longer than 1 characters (4)"},
        {"row": 2, "field": "a", "reason": "a is missing"},
    ]
    assert first_failures(check_rows(pa.table({"a": ["x"], "b": ["y"]}), c)).num_rows == 0


def test_first_failures_of_rows_failing_once_each_come_in_row_order() -> None:
    c = contract(a={"required": True}, b={"max_length": 1})
    table = pa.table({"a": ["x", None, "y"], "b": ["long", "k", "z"]})  # checked column by column: a, then b
    assert first_failures(check_rows(table, c)).to_pylist() == [
        {"row": 0, "field": "b", "reason": "b is longer than 1 characters (4)"},
        {"row": 1, "field": "a", "reason": "a is missing"},
    ]


@pytest.mark.parametrize(
    ("value", "too_long"),
    [("abc", False), ("abcd", True), ("ééé", False), ("éééé", True), ("😀😀😀", False), ("\u00a0\u00a0\u00a0a", True)],
)
def test_max_length_counts_characters_not_bytes(value: str, too_long: bool) -> None:
    got = check_rows(pa.table({"a": [value, None]}), contract(a={"max_length": 3}))
    assert got["row"].to_pylist() == ([0] if too_long else [])


@pytest.mark.parametrize(
    ("value", "blank"), [("", True), (" \t\r\n", True), ("\u00a0\u3000", True), ("\u200b", False), (" x ", False)]
)
def test_blank_is_empty_or_unicode_whitespace_only(value: str, blank: bool) -> None:
    got = check_rows(pa.table({"a": [value]}), contract(a={"required": True}))
    assert got["reason"].to_pylist() == ([f"a is blank: {value!r}"] if blank else [])


# --- media that is not there ----------------------------------------------------------------------


def test_missing_media_asks_for_each_distinct_uri_in_chunks() -> None:
    calls: list[list[str]] = []
    existing = {f"s3://b/{i}.jpg" for i in range(0, 10, 2)}

    def exists(uris: list[str]) -> set[str]:
        calls.append(list(uris))
        return {u for u in uris if u in existing} | {"s3://b/not-asked.jpg"}

    uris = pa.array([f"s3://b/{i}.jpg" for i in range(10)] + ["s3://b/1.jpg", None])
    mask = missing_media(uris, exists, chunk=4)
    assert mask.tolist() == [i % 2 == 1 for i in range(10)] + [True, False]
    assert [len(c) for c in calls] == [4, 4, 2]
    assert sorted(u for c in calls for u in c) == sorted({f"s3://b/{i}.jpg" for i in range(10)})


def test_missing_media_with_nothing_to_check() -> None:
    assert missing_media(pa.array([None, None], pa.string()), lambda u: set()).tolist() == [False, False]


# --- Great Expectations ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gx_context() -> Iterator[Any]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    yield context


def test_build_suite_has_one_expectation_per_declared_rule() -> None:
    suite = build_suite(load_contract("image_classification"))
    kinds = sorted((e.expectation_type, getattr(e, "column", None)) for e in suite.expectations)
    assert ("expect_column_values_to_match_regex", "media_uri") in kinds
    assert ("expect_column_values_to_be_unique", "item_id") in kinds
    assert ("expect_column_value_lengths_to_be_between", "text") in kinds
    assert ("expect_column_values_to_not_be_null", "media_uri") in kinds
    assert ("expect_column_values_to_not_be_null", "text") not in kinds
    assert suite.meta["contract_version"] == load_contract("image_classification").version


def test_suite_for_listing_fields_and_label_classes() -> None:
    listing = build_suite(load_contract("listing_verification"), field_names=["phone"])
    assert ("expect_column_value_lengths_to_be_between", "fields.phone") in {
        (e.expectation_type, getattr(e, "column", None)) for e in listing.expectations
    }
    output = build_suite(load_contract("image_classification", "output"), classes=["cat", "dog"])
    in_set = [e for e in output.expectations if e.expectation_type == "expect_column_values_to_be_in_set"]
    assert {getattr(e, "column", None): sorted(getattr(e, "value_set", [])) for e in in_set} == {
        "label": ["cat", "dog"],
        "method": sorted(["dawid_skene", "one_coin", "majority_vote"]),
    }


def test_gx_and_the_row_checker_agree(gx_context: Any) -> None:
    c = load_contract("image_classification")
    frame = pa.table(
        {
            "item_id": ["a1", "a2", "a3", "a2", "a\x005"],
            "media_uri": [S3, "http://x/y.jpg", S3, S3, S3],
            "text": ["ok", None, "t" * 10_001, "", "fine"],
        }
    )
    rows = check_rows(frame, c)
    result = validate_with_gx(frame.to_pandas(), build_suite(c), gx_context)
    assert not result.success
    unexpected: dict[tuple[str, str], int] = {}
    for r in result.results:
        if not r.success:
            config = r.expectation_config
            assert config is not None
            key = (config.type, config.kwargs["column"])
            unexpected[key] = r.result["unexpected_count"]
    assert unexpected == {
        ("expect_column_values_to_match_regex", "media_uri"): 1,
        ("expect_column_value_lengths_to_be_between", "text"): 1,
        ("expect_column_values_to_be_unique", "item_id"): 2,
        ("expect_column_values_to_match_regex", "item_id"): 1,
    }
    by_field = pd.Series(rows["field"].to_pylist()).value_counts().to_dict()
    assert by_field == {"media_uri": 1, "text": 1, "item_id": 2}  # the checker flags the repeat, not the first


def test_gx_passes_clean_items_and_is_rerunnable(gx_context: Any) -> None:
    c = load_contract("text_classification")
    df = pd.DataFrame({"item_id": ["a", "b"], "text": ["x", "y"], "media_uri": [None, S3]})
    suite = build_suite(c)
    assert validate_with_gx(df, suite, gx_context).success
    assert validate_with_gx(df, suite, gx_context).success
    assert not validate_with_gx(df.assign(text=["x", " "]), suite, gx_context).success


def test_gx_frame_flattens_listing_fields(gx_context: Any) -> None:
    items = pa.table(
        {
            "item_id": ["1", "2", "3"],
            "fields": ['{"phone":"+254 7","name":"2024-01-01"}', None, '{"phone":null,"name":"Duka \\"A\\""}'],
        }
    )
    df = gx_frame(items, ["phone", "name"])
    assert df["fields.phone"].tolist()[0] == "+254 7"
    assert pd.isna(df["fields.phone"].tolist()[1]) and pd.isna(df["fields.phone"].tolist()[2])
    assert df["fields.name"].tolist()[0] == "2024-01-01"  # a string, not a date
    assert df["fields.name"].tolist()[2] == 'Duka "A"'
    listing = load_contract("listing_verification")
    ok = validate_with_gx(
        df.assign(text=None, media_uri=None), build_suite(listing, field_names=["phone", "name"]), gx_context
    )
    assert ok.success


def test_rule_defaults_are_permissive() -> None:
    table = pa.table({"x": [None, "", "anything"]})
    assert failures(table, contract(x={})) == []
    assert Rule().required is False


def test_numeric_rules_on_many_rows_are_vectorised() -> None:
    n = 200_000
    conf = np.linspace(-0.5, 1.5, n)
    got = check_rows(pa.table({"conf": conf}), contract(conf={"type": "number", "min_value": 0, "max_value": 1}))
    assert got.num_rows == int(((conf < 0) | (conf > 1)).sum())


# --- output contracts: the answer shapes QA will check --------------------------------------------

ANSWERS = {
    TaskType.IMAGE_CLASSIFICATION: ({"label": "cat"}, {"label": ""}),
    TaskType.TEXT_CLASSIFICATION: ({"label": "spam", "fields": {"lang": "sw"}}, {"labels": ["spam"]}),
    TaskType.OBJECT_DETECTION: (
        {"boxes": [{"label": "car", "x": 10.5, "y": 0, "width": 20, "height": 99.5}]},
        {"boxes": [{"label": "car", "x": -1, "y": 0, "width": 20, "height": 10}]},
    ),
    TaskType.AUDIO_TRANSCRIPTION: ({"text": "habari yako", "label": "sw"}, {"text": None}),
    TaskType.LISTING_VERIFICATION: (
        {"fields": {"phone": "+254 700", "open": True, "fax": None}, "listing_valid": True},
        {"fields": {"phone": ["a", "b"]}},
    ),
}


@pytest.mark.parametrize("task_type", list(TaskType))
def test_output_answer_schemas_accept_the_normalised_answers(task_type: TaskType) -> None:
    import jsonschema

    spec = load_contract(task_type, "output").answer
    assert spec is not None
    jsonschema.Draft202012Validator.check_schema(spec.json_schema)
    validator = jsonschema.Draft202012Validator(spec.json_schema)
    good, bad = ANSWERS[task_type]
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors(bad)) != []
    assert spec.boxes_within_image == (task_type == TaskType.OBJECT_DETECTION)


def test_a_checkpoint_can_reuse_the_validation_and_build_data_docs(gx_context: Any, tmp_path: Path) -> None:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(tmp_path / "docs")},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    gx_context.add_data_docs_site(site_name="kazi_test_site", site_config=site)
    suite = build_suite(load_contract("audio_transcription"))
    df = pd.DataFrame({"item_id": ["a"], "media_uri": ["s3://audio-bkt/a.wav"], "text": [None]})
    assert validate_with_gx(df, suite, gx_context).success
    definition = gx_context.validation_definitions.get(f"{suite.name}.validation")
    checkpoint = gx_context.checkpoints.add_or_update(
        gx.Checkpoint(
            name="ingest-docs", validation_definitions=[definition], actions=[UpdateDataDocsAction(name="docs")]
        )
    )
    assert checkpoint.run(batch_parameters={"dataframe": df}).success
    assert (tmp_path / "docs" / "index.html").exists()
