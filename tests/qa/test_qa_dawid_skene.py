import numpy as np
import pandas as pd
import pytest

from flows.qa.consolidate.dawid_skene import dawid_skene
from flows.qa.consolidate.majority_vote import majority_vote
from simulation.crowd import simulate_classification

pytestmark = pytest.mark.unit

CLASSES = ["cat", "dog", "bird"]


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label"])


def accuracy(items: pd.DataFrame, truth: pd.Series) -> float:
    return float((items["label"] == truth.reindex(items.index)).mean())


@pytest.fixture(scope="module")
def spammy_crowd() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    return simulate_classification(3000, CLASSES, 30, overlap=3, spammer_share=0.3, seed=7)


@pytest.mark.parametrize("model", ["full", "one_coin"])
def test_dawid_skene_beats_majority_vote_with_30_percent_spammers(
    spammy_crowd: tuple[pd.DataFrame, pd.Series, pd.DataFrame], model: str
) -> None:
    answers, truth, _ = spammy_crowd
    ds = dawid_skene(answers, CLASSES, model=model)  # type: ignore[arg-type]
    mv = majority_vote(answers, CLASSES)
    assert accuracy(ds.items, truth) > accuracy(mv, truth) + 0.05


@pytest.mark.parametrize("model", ["full", "one_coin"])
def test_dawid_skene_downweights_spammers(
    spammy_crowd: tuple[pd.DataFrame, pd.Series, pd.DataFrame], model: str
) -> None:
    answers, _, profiles = spammy_crowd
    est = dawid_skene(answers, CLASSES, model=model).annotators["accuracy"]  # type: ignore[arg-type]
    est = est.reindex(profiles.index)
    assert est[profiles["is_spammer"]].max() < est[~profiles["is_spammer"]].median()
    # The estimate tracks the simulated accuracy of each annotator.
    assert np.corrcoef(est, profiles["accuracy"])[0, 1] > 0.9


def test_dawid_skene_result_shapes_and_invariants(spammy_crowd: tuple[pd.DataFrame, pd.Series, pd.DataFrame]) -> None:
    answers, _, _ = spammy_crowd
    result = dawid_skene(answers, CLASSES)
    n_annotators = answers["annotator"].nunique()
    assert result.confusion.shape == (n_annotators, 3, 3)
    np.testing.assert_allclose(result.confusion.sum(axis=2), 1.0)
    np.testing.assert_allclose(result.posterior.sum(axis=1), 1.0)
    assert result.priors.sum() == pytest.approx(1.0)
    assert list(result.priors.index) == CLASSES
    assert result.converged and 1 <= result.iterations < 100
    assert (result.items["confidence"] == result.posterior.max(axis=1)).all()
    assert result.annotators["n_answers"].sum() == len(answers)
    assert list(result.items.index) == list(pd.unique(answers["item_id"]))


def test_one_coin_confusion_is_per_annotator_accuracy(
    spammy_crowd: tuple[pd.DataFrame, pd.Series, pd.DataFrame],
) -> None:
    answers, _, _ = spammy_crowd
    result = dawid_skene(answers, CLASSES, model="one_coin")
    assert result.confusion.shape == (answers["annotator"].nunique(),)
    np.testing.assert_allclose(result.confusion, result.annotators["accuracy"])


def test_unanimous_items_get_their_label() -> None:
    rows = [(f"i{i}", a, CLASSES[i % 3]) for i in range(9) for a in ("a", "b", "c")]
    result = dawid_skene(frame(rows), CLASSES)
    assert result.items["label"].tolist() == [CLASSES[i % 3] for i in range(9)]
    assert (result.items["confidence"] > 0.99).all()
    np.testing.assert_allclose(result.annotators["accuracy"], 1.0)


def test_reliable_annotators_outvote_a_contrarian() -> None:
    # a and b agree everywhere; c always says "bird", which is never the truth: a 1-of-3 vote with
    # majority vote, and no vote at all once DS has learnt c's confusion.
    rows = []
    for i in range(20):
        truth = CLASSES[i % 2]
        rows += [(f"i{i}", "a", truth), (f"i{i}", "b", truth), (f"i{i}", "c", "bird")]
    result = dawid_skene(frame(rows), CLASSES)
    assert (result.items["label"] != "bird").all()
    acc = result.annotators["accuracy"]
    assert acc["a"] == pytest.approx(1.0, abs=1e-3)
    assert acc["c"] < 0.01


def test_gold_items_are_clamped_and_calibrate() -> None:
    rows = [("g1", "a", "dog"), ("g1", "b", "dog"), ("i1", "a", "dog"), ("i1", "b", "cat")]
    gold = pd.Series({"g1": "cat"})
    result = dawid_skene(frame(rows), CLASSES, gold=gold)
    assert result.items.loc["g1", "label"] == "cat"
    assert result.items.loc["g1", "confidence"] == 1.0
    np.testing.assert_allclose(result.posterior[0], [1.0, 0.0, 0.0])


def test_single_annotator_item() -> None:
    result = dawid_skene(frame([("i", "a", "dog")]), CLASSES)
    assert result.items.loc["i", "label"] == "dog"
    assert result.items.loc["i", "n_annotators"] == 1


def test_all_disagree_ties_follow_class_order() -> None:
    rows = [("i", "a", "bird"), ("i", "b", "dog"), ("i", "c", "cat")]
    result = dawid_skene(frame(rows), CLASSES)
    assert result.items.loc["i", "label"] == "cat"
    assert result.items.loc["i", "confidence"] == pytest.approx(1 / 3)


def test_result_does_not_depend_on_row_order(spammy_crowd: tuple[pd.DataFrame, pd.Series, pd.DataFrame]) -> None:
    answers, _, _ = spammy_crowd
    a = dawid_skene(answers, CLASSES).items
    b = dawid_skene(answers.sample(frac=1.0, random_state=1), CLASSES).items.reindex(a.index)
    assert (a["label"] == b["label"]).all()
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=1e-9)


def test_unknown_label_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"label 'fish' of item 'i' is not one of the classes"):
        dawid_skene(frame([("i", "a", "fish")]), CLASSES)


def test_unknown_model_is_an_error() -> None:
    with pytest.raises(ValueError, match="model must be 'full' or 'one_coin'"):
        dawid_skene(frame([("i", "a", "cat")]), CLASSES, model="two_coin")  # type: ignore[arg-type]


def test_empty_answers() -> None:
    result = dawid_skene(frame([]), CLASSES)
    assert result.items.empty and result.iterations == 0
    assert result.priors.tolist() == pytest.approx([1 / 3] * 3)


def test_max_iter_bounds_iterations(spammy_crowd: tuple[pd.DataFrame, pd.Series, pd.DataFrame]) -> None:
    answers, _, _ = spammy_crowd
    result = dawid_skene(answers, CLASSES, max_iter=2, tol=0.0)
    assert result.iterations == 2 and not result.converged
