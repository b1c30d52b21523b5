import numpy as np
import pandas as pd
import pytest

from simulation.crowd import simulate_classification

pytestmark = pytest.mark.unit

CLASSES = ["a", "b", "c", "d"]


def test_same_seed_same_crowd_other_seed_other_crowd() -> None:
    one = simulate_classification(500, CLASSES, 20, seed=3)
    two = simulate_classification(500, CLASSES, 20, seed=3)
    other = simulate_classification(500, CLASSES, 20, seed=4)
    for x, y in zip(one, two, strict=True):
        pd.testing.assert_frame_equal(pd.DataFrame(x), pd.DataFrame(y))
    assert not one[0].equals(other[0])


def test_shape_overlap_and_distinct_annotators() -> None:
    answers, truth, profiles = simulate_classification(1000, CLASSES, 12, overlap=5, seed=0)
    assert list(answers.columns) == ["item_id", "annotator", "label"]
    assert len(answers) == 5000 and len(truth) == 1000
    assert (answers.groupby("item_id")["annotator"].nunique() == 5).all()
    assert set(answers["label"]) <= set(CLASSES)
    assert profiles["n_answers"].sum() == 5000
    assert profiles["n_answers"].tolist() == answers["annotator"].value_counts().reindex(profiles.index).tolist()
    assert str(answers["item_id"].dtype) == "str"


def test_accuracy_and_spammers() -> None:
    answers, truth, profiles = simulate_classification(
        20000, CLASSES, 20, overlap=3, accuracy=(9, 1), spammer_share=0.25, seed=1
    )
    assert profiles["is_spammer"].sum() == 5
    right = answers["label"].to_numpy() == truth.reindex(answers["item_id"]).to_numpy()
    observed = pd.Series(right).groupby(answers["annotator"].to_numpy()).mean().reindex(profiles.index)
    np.testing.assert_allclose(observed, profiles["accuracy"], atol=0.04)
    assert observed[profiles["is_spammer"]].between(0.2, 0.3).all()


def test_confusion_pairs_steer_errors() -> None:
    answers, truth, _ = simulate_classification(
        20000, CLASSES, 10, accuracy=(5, 5), spammer_share=0, confusion_pairs=[("a", "b")], seed=2
    )
    true = truth.reindex(answers["item_id"]).to_numpy()
    wrong_on_a = answers["label"].to_numpy()[(true == "a") & (answers["label"].to_numpy() != "a")]
    share_b = (wrong_on_a == "b").mean()
    assert share_b == pytest.approx(0.8 + 0.2 / 3, abs=0.03)


def test_class_weights() -> None:
    _, truth, _ = simulate_classification(20000, ["x", "y"], 5, class_weights=[0.9, 0.1], seed=0)
    assert (truth == "x").mean() == pytest.approx(0.9, abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ["a"]}, "at least two classes"),
        ({"overlap": 30}, "overlap must be between 1 and n_annotators"),
        ({"spammer_share": 1.5}, "spammer_share must be in"),
        ({"confusion_pairs": [("a", "z")]}, "names a class not in classes"),
    ],
)
def test_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"n_items": 10, "classes": CLASSES, "n_annotators": 20} | kwargs
    with pytest.raises(ValueError, match=message):
        simulate_classification(**args)  # type: ignore[arg-type]
