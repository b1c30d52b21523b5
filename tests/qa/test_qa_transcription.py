from collections.abc import Sequence

import pandas as pd
import pytest

from flows.qa.consolidate.transcription import (
    SINGLE_ANSWER_CONFIDENCE,
    consolidate_transcriptions,
    medoid,
    normalise_text,
)

pytestmark = pytest.mark.unit


def frame(rows: Sequence[tuple[str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "text"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  Hello   World \n", "hello world"), ("ÉCOLE\tNdogo", "école ndogo"), (None, ""), ("", "")],
)
def test_normalise_text(raw: str | None, expected: str) -> None:
    assert normalise_text(raw) == expected


def test_one_annotator_has_no_agreement_evidence() -> None:
    result = consolidate_transcriptions(frame([("i", "a", "  Habari  yako ")]))
    assert result.loc["i", "text"] == "Habari yako"
    assert result.loc["i", "confidence"] == SINGLE_ANSWER_CONFIDENCE
    assert result.loc["i", "n_annotators"] == 1


def test_two_annotators_tie_goes_to_first_annotator_id() -> None:
    # "abcd" vs "abce": normalised distance 1/4, both equally central.
    rows = [("i", "b", "abce"), ("i", "a", "abcd")]
    result = consolidate_transcriptions(frame(rows))
    assert result.loc["i", "text"] == "abcd"
    assert result.loc["i", "confidence"] == pytest.approx(0.75)


def test_three_annotators_medoid_and_confidence() -> None:
    rows = [("i", "a", "the cat sat"), ("i", "b", "The  cat sat"), ("i", "c", "the bat sat")]
    result = consolidate_transcriptions(frame(rows))
    # a and b are equal after normalisation (distance 0); c is 1 edit of 11 from both.
    assert result.loc["i", "text"] == "the cat sat"
    assert result.loc["i", "confidence"] == pytest.approx((1.0 + 10 / 11) / 2)


def test_identical_texts_have_full_confidence() -> None:
    result = consolidate_transcriptions(frame([("i", "a", "Asante"), ("i", "b", "asante ")]))
    assert result.loc["i", "confidence"] == pytest.approx(1.0)


def test_all_different() -> None:
    result = consolidate_transcriptions(frame([("i", "a", "abc"), ("i", "b", "xyz"), ("i", "c", "")]))
    assert result.loc["i", "confidence"] == pytest.approx(0.0)


def test_medoid_function() -> None:
    assert medoid(["kitten", "sitting", "kitten"]) == (0, pytest.approx((1 + (1 - 3 / 7)) / 2))
    assert medoid(["solo"]) == (0, SINGLE_ANSWER_CONFIDENCE)


def test_items_are_independent_and_keep_order() -> None:
    rows = [("y", "a", "one"), ("x", "a", "two"), ("y", "b", "one")]
    result = consolidate_transcriptions(frame(rows))
    assert list(result.index) == ["y", "x"]
    assert result["text"].tolist() == ["one", "two"]
    assert result["n_annotators"].tolist() == [2, 1]


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['text'\]"):
        consolidate_transcriptions(pd.DataFrame({"item_id": ["i"], "annotator": ["a"]}))
    with pytest.raises(ValueError, match="more than once"):
        consolidate_transcriptions(frame([("i", "a", "x"), ("i", "a", "y")]))
