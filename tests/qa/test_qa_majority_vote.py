import pandas as pd
import pytest

from flows.qa.consolidate.majority_vote import encode_answers, majority_vote

pytestmark = pytest.mark.unit

CLASSES = ["cat", "dog", "bird"]


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label"])


@pytest.mark.parametrize(
    ("rows", "label", "confidence", "n"),
    [
        ([("i", "a", "dog"), ("i", "b", "dog"), ("i", "c", "cat")], "dog", 2 / 3, 3),
        ([("i", "a", "bird")], "bird", 1.0, 1),
        ([("i", "a", "dog"), ("i", "b", "cat")], "cat", 0.5, 2),  # tie: "cat" is listed first
        ([("i", "a", "bird"), ("i", "b", "dog"), ("i", "c", "cat")], "cat", 1 / 3, 3),  # all disagree
        ([("i", "a", "bird"), ("i", "b", "dog")], "dog", 0.5, 2),  # tie: "dog" before "bird"
    ],
)
def test_majority_vote_label_confidence_and_ties(
    rows: list[tuple[str, str, str]], label: str, confidence: float, n: int
) -> None:
    result = majority_vote(frame(rows), CLASSES)
    assert result.loc["i", "label"] == label
    assert result.loc["i", "confidence"] == pytest.approx(confidence)
    assert result.loc["i", "n_annotators"] == n


def test_majority_vote_tie_break_follows_class_order_not_row_order() -> None:
    rows = [("i", "a", "dog"), ("i", "b", "cat")]
    forward = majority_vote(frame(rows), ["dog", "cat"])
    backward = majority_vote(frame(rows[::-1]), ["dog", "cat"])
    assert forward.loc["i", "label"] == backward.loc["i", "label"] == "dog"


def test_majority_vote_keeps_first_appearance_order_and_index_name() -> None:
    result = majority_vote(frame([("z", "a", "cat"), ("b", "a", "dog"), ("z", "b", "cat")]), CLASSES)
    assert list(result.index) == ["z", "b"]
    assert result.index.name == "item_id"
    assert list(result.columns) == ["label", "confidence", "n_annotators"]


def test_majority_vote_clamps_gold_items() -> None:
    answers = frame([("g", "a", "dog"), ("g", "b", "dog"), ("i", "a", "cat")])
    result = majority_vote(answers, CLASSES, gold=pd.Series({"g": "bird", "not-answered": "cat"}))
    assert result.loc["g", "label"] == "bird"
    assert result.loc["g", "confidence"] == 1.0
    assert result.loc["i", "label"] == "cat"
    assert "not-answered" not in result.index


def test_majority_vote_does_not_mutate_input() -> None:
    answers = frame([("i", "a", "dog"), ("i", "b", "cat")])
    before = answers.copy()
    majority_vote(answers, CLASSES, gold=pd.Series({"i": "cat"}))
    pd.testing.assert_frame_equal(answers, before)


def test_unknown_label_names_label_and_item() -> None:
    with pytest.raises(ValueError, match=r"'horse' of item 'i2' is not one of the classes"):
        majority_vote(frame([("i1", "a", "cat"), ("i2", "a", "horse")]), CLASSES)


def test_unknown_gold_label_names_label_and_item() -> None:
    with pytest.raises(ValueError, match=r"gold label 'cow' of item 'g' is not one of the classes"):
        majority_vote(frame([("g", "a", "cat")]), CLASSES, gold=pd.Series({"g": "cow"}))


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([("i", "a", "cat"), ("i", "a", "dog")], id="different-labels"),
        pytest.param([("i", "a", "cat"), ("i", "a", "cat")], id="same-label"),
        pytest.param(
            [("h", "a", "cat"), ("h", "b", "cat"), ("i", "c", "dog"), ("i", "b", "bird"), ("i", "c", "cat")],
            id="later-item",
        ),
    ],
)
def test_duplicate_answer_is_an_error(rows: list[tuple[str, str, str]]) -> None:
    who = rows[-1][1]
    with pytest.raises(ValueError, match=rf"annotator '{who}' answered item 'i' more than once"):
        majority_vote(frame(rows), CLASSES)


@pytest.mark.parametrize("classes", [[], ["cat", "cat"]])
def test_bad_classes(classes: list[str]) -> None:
    with pytest.raises(ValueError, match="classes must be non-empty and unique"):
        majority_vote(frame([("i", "a", "cat")]), classes)


def test_missing_column() -> None:
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['label'\]"):
        majority_vote(pd.DataFrame({"item_id": ["i"], "annotator": ["a"]}), CLASSES)


def test_empty_answers() -> None:
    result = majority_vote(frame([]), CLASSES)
    assert result.empty
    assert list(result.columns) == ["label", "confidence", "n_annotators"]


def test_encode_answers_codes() -> None:
    enc = encode_answers(frame([("i", "a", "dog"), ("j", "b", "cat"), ("i", "b", "bird")]), CLASSES)
    assert enc.item.tolist() == [0, 1, 0]
    assert enc.annotator.tolist() == [0, 1, 1]
    assert enc.label.tolist() == [1, 0, 2]
    assert enc.vote_counts().tolist() == [[0, 1, 1], [1, 0, 0]]
