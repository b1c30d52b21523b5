import numpy as np
import pandas as pd
import pytest

from flows.qa.scores import annotator_scores, effective_accuracy, flag_annotators, site_scores

pytestmark = pytest.mark.unit


@pytest.fixture
def log() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i1", "i1", "i2", "i2", "g1", "g1", "i3"],
            "site_id": ["s1", "s1", "s2", "s1", "s2", "s1", "s2", "s2"],
            "annotator": ["a", "b", "c", "a", "c", "a", "c", "c"],
            "label": ["cat", "dog", "cat", "dog", None, "cat", "dog", "cat"],
            "skipped": [False, False, False, False, True, False, False, False],
            "lead_time_s": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        }
    )


CONSENSUS = pd.DataFrame({"item_id": ["i1", "i2", "g1", "i3"], "label": ["cat", "dog", "cat", "cat"]})
GOLD = pd.Series({"g1": "cat"})


def test_annotator_scores_by_hand(log: pd.DataFrame) -> None:
    s = annotator_scores(log, CONSENSUS, GOLD, {"i1"})
    assert list(s.index) == ["a", "b", "c"]
    assert s["site_id"].tolist() == ["s1", "s1", "s2"]
    assert s["n_tasks"].tolist() == [3, 1, 4]
    assert s["n_answers"].tolist() == [3, 1, 3]
    assert s["skip_rate"].tolist() == [0, 0, 0.25]
    assert s["n_gold"].tolist() == [1, 0, 1]
    assert s.loc["a", "gold_accuracy"] == 1.0 and np.isnan(s.loc["b", "gold_accuracy"])
    assert s.loc["c", "gold_accuracy"] == 0.0
    assert s["consensus_agreement"].tolist() == pytest.approx([1.0, 0.0, 2 / 3])
    assert s["median_lead_time_s"].tolist() == [4.0, 2.0, 7.0]  # skipped task (5 s) left out
    assert s["rework_rate"].tolist() == pytest.approx([1 / 3, 1.0, 1 / 3])


def test_site_scores_by_hand(log: pd.DataFrame) -> None:
    s = site_scores(log, CONSENSUS.set_index("item_id"), GOLD, ["i1"])
    assert list(s.index) == ["s1", "s2"]
    assert "site_id" not in s.columns
    assert s["n_answers"].tolist() == [4, 3]
    assert s["consensus_agreement"].tolist() == pytest.approx([0.75, 2 / 3])
    assert s["gold_accuracy"].tolist() == [1.0, 0.0]


def test_scores_without_gold_or_rework(log: pd.DataFrame) -> None:
    s = annotator_scores(log, CONSENSUS)
    assert s["gold_accuracy"].isna().all() and (s["n_gold"] == 0).all()
    assert (s["rework_rate"] == 0).all()


def test_scores_do_not_mutate_inputs(log: pd.DataFrame) -> None:
    before = log.copy()
    annotator_scores(log, CONSENSUS, GOLD, {"i1"})
    pd.testing.assert_frame_equal(log, before)


def test_score_errors(log: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"log lacks the column\(s\) \['skipped'\]"):
        annotator_scores(log.drop(columns="skipped"), CONSENSUS)
    with pytest.raises(ValueError, match="consolidated lacks the column 'label'"):
        annotator_scores(log, CONSENSUS.rename(columns={"label": "x"}))


def scores_frame(rows: dict[str, tuple[int, float, int, float]]) -> pd.DataFrame:
    """annotator -> (n_gold, gold_accuracy, n_answers, consensus_agreement)."""
    return pd.DataFrame.from_dict(
        rows, orient="index", columns=["n_gold", "gold_accuracy", "n_answers", "consensus_agreement"]
    )


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ((20, 0.9, 100, 0.5), 0.9),  # enough gold: gold accuracy alone
        ((0, np.nan, 100, 0.7), 0.7),  # no gold: the fallback
        ((2, 0.5, 100, 0.9), (1 + 8 * 0.9) / 10),  # 2 gold answers, 8 imputed at the fallback
        ((0, np.nan, 5, 0.0), np.nan),  # too little work to judge
        ((0, np.nan, 100, np.nan), np.nan),  # no evidence at all
    ],
)
def test_effective_accuracy(row: tuple[int, float, int, float], expected: float) -> None:
    value = effective_accuracy(scores_frame({"a": row}), min_gold_answers=10)["a"]
    assert value == pytest.approx(expected, nan_ok=True)


def test_effective_accuracy_prefers_the_model_estimate() -> None:
    scores = scores_frame({"a": (0, np.nan, 100, 0.9), "b": (0, np.nan, 100, 0.9)})
    estimate = pd.Series({"a": 0.3})
    value = effective_accuracy(scores, 10, estimate)
    assert value.tolist() == pytest.approx([0.3, 0.9])


def test_flag_annotators_is_robust_to_few_gold_items() -> None:
    scores = scores_frame(
        {
            "good": (20, 0.95, 200, 0.9),
            "spammer": (20, 0.35, 200, 0.4),
            "unlucky": (1, 0.0, 200, 0.92),  # missed their only gold item
            "quiet-spammer": (1, 1.0, 200, 0.3),  # lucky on gold, far from consensus
            "newcomer": (0, np.nan, 3, 0.0),
        }
    )
    assert flag_annotators(scores, min_gold_accuracy=0.8) == ["quiet-spammer", "spammer"]


def test_flag_annotators_error() -> None:
    with pytest.raises(ValueError, match="min_gold_answers must be at least 1"):
        flag_annotators(scores_frame({"a": (0, np.nan, 1, 1.0)}), 0.8, min_gold_answers=0)
