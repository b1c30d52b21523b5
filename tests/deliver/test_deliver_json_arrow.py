"""JSON text <-> Arrow helpers behind the writers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from flows.deliver.formats.deliverable import site_ids
from flows.deliver.formats.json_arrow import (
    concat_lines,
    join_bytes,
    join_skip,
    json_lists,
    json_number,
    json_quote,
    json_values,
    object_inner,
    objects_to_struct,
    per_unique,
    without_keys,
)

pytestmark = pytest.mark.unit

TRICKY = ["plain", 'quote " here', "back \\ slash", "new\nline", "tab\t", "\x00\x1f", "ünïcødé ✓", "\u2028", ""]


@pytest.mark.parametrize("text", TRICKY)
def test_json_quote_matches_the_json_module(text: str) -> None:
    assert json_quote(pa.array([text])).to_pylist() == [json.dumps(text, ensure_ascii=False)]


def test_json_quote_null_is_json_null() -> None:
    assert json_quote(pa.array([None, "x"], pa.string())).to_pylist() == ["null", '"x"']


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.1, 1.0, None, float("nan"), float("inf")], ["0.1", "1", "null", "null", "null"]),
        ([3, None], ["3", "null"]),
    ],
)
def test_json_number(values: list[float | None], expected: list[str]) -> None:
    out = json_number(pa.array(values)).to_pylist()
    assert out == expected
    assert [json.loads(v) for v in out[:1]] == [values[0]]


def test_join_skip_keeps_rows_whose_parts_are_all_null() -> None:
    # pyarrow 22's own skip mode drops such rows; ours must keep every row aligned.
    a = pa.array([None, "a", "b"])
    b = pa.array([None, None, "c"])
    assert join_skip([a, b], ",").to_pylist() == ["", "a", "b,c"]
    assert join_skip(["{", a, b], ",").to_pylist() == ["{", "{,a", "{,b,c"]


def test_json_lists_groups_elements_by_offsets() -> None:
    out = json_lists(np.array([0, 2, 2, 3]), pa.array(["1", '"x"', "{}"]))
    assert [json.loads(v) for v in out.to_pylist()] == [[1, "x"], [], [{}]]


def test_object_inner_and_without_keys() -> None:
    assert object_inner(pa.array(['{"a":1,"b":2}', " { } ", "{}"])).to_pylist() == ['"a":1,"b":2', None, None]
    out = without_keys(pa.array(['{"a":1,"item_id":2}', '{"b":"item_id is a word"}']), ["item_id"])
    assert [json.loads(v) for v in out.to_pylist()] == [{"a": 1}, {"b": "item_id is a word"}]


def test_concat_and_join_bytes() -> None:
    assert concat_lines(['{"v":', json_quote(pa.array(["x", "y"])), "}\n"]) == b'{"v":"x"}\n{"v":"y"}\n'
    assert join_bytes(pa.array(["a", "b", "c"]), ",") == b"a,b,c"
    assert join_bytes(pa.array([], pa.string()), ",") == b""


def test_per_unique_maps_nulls_too() -> None:
    assert per_unique(json_quote, pa.chunked_array([["x", None, "x"]])).to_pylist() == ['"x"', "null", '"x"']


def test_objects_to_struct_keeps_date_strings_and_nulls() -> None:
    texts = pa.array(['{"d":"2024-01-05","n":{"t":"2020-01-01T00:00:00"}}', None, '{"d":"later"}'])
    struct = objects_to_struct(texts)
    assert struct.type.field("d").type == pa.string()
    assert struct.to_pylist() == [
        {"d": "2024-01-05", "n": {"t": "2020-01-01T00:00:00"}},
        None,
        {"d": "later", "n": None},
    ]


def test_objects_to_struct_mixed_types_become_text() -> None:
    struct = objects_to_struct(pa.array(['{"a":1,"b":true}', '{"a":"x","b":false}', '{"a":{"q":[1]}}']))
    assert struct.to_pylist() == [{"a": "1", "b": True}, {"a": "x", "b": False}, {"a": '{"q":[1]}', "b": None}]


def test_objects_to_struct_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="not JSON objects"):
        objects_to_struct(pa.array(['{"a":1}', "[1]"]))


def test_objects_to_struct_handles_long_lines() -> None:
    long = json.dumps({"blob": "x" * 3_000_000})
    assert objects_to_struct(pa.array([long, "{}"])).to_pylist()[0] == {"blob": "x" * 3_000_000}


@pytest.mark.parametrize(
    ("sites", "expected"),
    [("a,b", ["a", "b"]), ('["x", "y"]', ["x", "y"]), ("", []), (None, []), ("solo", ["solo"])],
)
def test_site_ids_accepts_csv_and_json_lists(sites: str | None, expected: list[str]) -> None:
    assert site_ids(pa.chunked_array([pa.array([sites], pa.string())])).to_pylist() == [expected]


def test_json_number_round_trips_every_double() -> None:
    values = np.random.default_rng(7).random(2000) * 10.0 ** np.random.default_rng(8).integers(-12, 12, 2000)
    out = json_number(pa.array(values)).to_pylist()
    assert [json.loads(v) for v in out] == values.tolist()


def test_json_values_encodes_nested_columns_like_the_json_module() -> None:
    column = pa.array(
        [
            {"boxes": [{"label": "car", "x": 1.5}, {"label": None, "x": 2.0}], "note": 'say "hi"', "ok": True},
            None,
            {"boxes": [], "note": None, "ok": False},
        ]
    )
    out = json_values(column).to_pylist()
    assert [json.loads(v) for v in out] == column.to_pylist()
    assert json_values(pa.array([[1, 2], None, []]).slice(1)).to_pylist() == ["null", "[]"]
