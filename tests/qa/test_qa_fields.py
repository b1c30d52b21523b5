from typing import Any

import pandas as pd
import pytest

from flows.core.models import FieldKind, FieldSpec
from flows.qa.consolidate.fields import consolidate_fields, normalise_field

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (FieldKind.PHONE, "+254 (712) 345-678", "+254712345678"),
        (FieldKind.PHONE, "0712.345.678", "0712345678"),
        (FieldKind.PHONE, " +1-800-FLOWERS ", "+1800"),
        (FieldKind.PHONE, "n/a", None),
        (FieldKind.PHONE, 712345678, "712345678"),
        (FieldKind.EMAIL, "  Info@Example.CO.KE ", "info@example.co.ke"),
        (FieldKind.EMAIL, "mailto:Shop@x.org", "shop@x.org"),
        (FieldKind.URL, "Example.com/Menu/", "http://example.com/Menu"),
        (FieldKind.URL, "HTTPS://Example.COM:443/", "https://example.com"),
        (FieldKind.URL, "http://example.com:80/a?q=1", "http://example.com/a?q=1"),
        (FieldKind.URL, "http://example.com:8080/", "http://example.com:8080"),
        (FieldKind.URL, "https://example.com:80", "https://example.com:80"),
        (FieldKind.URL, "//cdn.example.com/x", "http://cdn.example.com/x"),
        (FieldKind.URL, "http://User@Example.com", "http://user@example.com"),
        (FieldKind.URL, "http://[::1]:80/", "http://[::1]"),
        (FieldKind.BOOLEAN, "Yes", True),
        (FieldKind.BOOLEAN, " valid ", True),
        (FieldKind.BOOLEAN, "1", True),
        (FieldKind.BOOLEAN, True, True),
        (FieldKind.BOOLEAN, "Invalid", False),
        (FieldKind.BOOLEAN, "no", False),
        (FieldKind.BOOLEAN, 0, False),
        (FieldKind.BOOLEAN, "FALSE", False),
        (FieldKind.TEXT, "  Mama   Oliech\tRestaurant ", "mama oliech restaurant"),
        (FieldKind.TEXT, "STRASSE", "strasse"),
        (FieldKind.TEXT, "   ", None),
        (FieldKind.TEXT, None, None),
        (FieldKind.TEXT, float("nan"), None),
    ],
)
def test_normalise_field(kind: FieldKind, raw: Any, expected: Any) -> None:
    assert normalise_field(kind, raw) == expected


def test_boolean_rejects_other_values() -> None:
    with pytest.raises(ValueError, match="'maybe' is not a yes/no value"):
        normalise_field(FieldKind.BOOLEAN, "maybe")


SPECS = [
    FieldSpec(name="name", kind=FieldKind.TEXT, required=True),
    FieldSpec(name="phone", kind=FieldKind.PHONE, required=True),
    FieldSpec(name="open", kind=FieldKind.BOOLEAN),
]


def frame(rows: list[tuple[str, str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "fields"])


def test_majority_of_normalised_values() -> None:
    answers = frame(
        [
            ("i", "a", {"name": "Mama Oliech", "phone": "+254 712 345 678", "open": "yes"}),
            ("i", "b", {"name": "mama  oliech", "phone": "+254712345678", "open": "no"}),
            ("i", "c", {"name": "Mama Oliech's", "phone": "0712 345 678", "open": "valid"}),
        ]
    )
    result = consolidate_fields(answers, SPECS)
    assert result.loc["i", "fields"] == {"name": "mama oliech", "phone": "+254712345678", "open": True}
    conf = result.loc["i", "field_confidence"]
    assert conf == pytest.approx({"name": 2 / 3, "phone": 2 / 3, "open": 2 / 3})
    assert result.loc["i", "confidence"] == pytest.approx(2 / 3)
    assert result.loc["i", "n_annotators"] == 3


def test_item_confidence_is_min_over_required_fields_only() -> None:
    answers = frame(
        [
            ("i", "a", {"name": "x", "phone": "1", "open": "yes"}),
            ("i", "b", {"name": "x", "phone": "1", "open": "no"}),
        ]
    )
    result = consolidate_fields(answers, SPECS)
    assert result.loc["i", "field_confidence"]["open"] == 0.5
    assert result.loc["i", "confidence"] == 1.0


def test_without_required_fields_all_fields_count() -> None:
    specs = [FieldSpec(name="a"), FieldSpec(name="b")]
    answers = frame([("i", "x", {"a": "1", "b": "1"}), ("i", "y", {"a": "1", "b": "2"})])
    assert consolidate_fields(answers, specs).loc["i", "confidence"] == 0.5


def test_missing_and_blank_values_vote_for_none_and_lose_ties() -> None:
    answers = frame([("i", "a", {"name": "Duka", "phone": ""}), ("i", "b", {"name": None})])
    result = consolidate_fields(answers, SPECS)
    assert result.loc["i", "fields"] == {"name": "duka", "phone": None, "open": None}
    assert result.loc["i", "field_confidence"] == {"name": 0.5, "phone": 1.0, "open": 1.0}


def test_ties_between_values_are_deterministic() -> None:
    rows = [("i", "a", {"name": "b"}), ("i", "b", {"name": "a"})]
    first = consolidate_fields(frame(rows), SPECS).loc["i", "fields"]["name"]
    second = consolidate_fields(frame(rows[::-1]), SPECS).loc["i", "fields"]["name"]
    assert first == second == "a"


def test_single_annotator_and_item_order() -> None:
    answers = frame([("z", "a", {"name": "One"}), ("y", "a", {"name": "Two"}), ("z", "b", {"name": "one"})])
    result = consolidate_fields(answers, SPECS)
    assert list(result.index) == ["z", "y"]
    assert result.loc["y", "fields"]["name"] == "two"
    assert result.loc["y", "n_annotators"] == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nmae": "typo"}, r"item 'i' has field\(s\) \['nmae'\] not in the specs"),
        ({"open": "perhaps"}, r"field 'open' of item 'i': 'perhaps' is not a yes/no value"),
        ("name=x", "fields must be a mapping"),
    ],
)
def test_errors(fields: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        consolidate_fields(frame([("i", "a", fields)]), SPECS)


def test_needs_specs() -> None:
    with pytest.raises(ValueError, match="at least one field spec"):
        consolidate_fields(frame([("i", "a", {})]), [])
