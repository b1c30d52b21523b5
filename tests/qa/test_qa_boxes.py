from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.qa.consolidate.boxes import cluster_boxes, consolidate_boxes, iou_matrix

pytestmark = pytest.mark.unit


def box(x: float, y: float, w: float, h: float, label: str = "car") -> dict[str, Any]:
    return {"label": label, "x": x, "y": y, "width": w, "height": h}


def frame(rows: list[tuple[str, str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "boxes"])


def corners(*boxes: tuple[float, float, float, float]) -> np.ndarray:
    return np.array([(x, y, x + w, y + h) for x, y, w, h in boxes], dtype=float)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),  # identical
        ((0, 0, 10, 10), (5, 0, 10, 10), 50 / 150),  # half overlap
        ((0, 0, 10, 10), (10, 0, 10, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (20, 20, 5, 5), 0.0),  # disjoint
        ((0, 0, 10, 10), (2, 2, 5, 5), 25 / 100),  # contained
        ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),  # zero area: empty union is 0, not NaN
    ],
)
def test_iou_edge_cases(a: tuple[float, ...], b: tuple[float, ...], expected: float) -> None:
    value = iou_matrix(corners(a), corners(b))  # type: ignore[arg-type]
    assert value.shape == (1, 1)
    assert value[0, 0] == pytest.approx(expected)


def test_iou_matrix_is_pairwise() -> None:
    a = corners((0, 0, 10, 10), (50, 50, 10, 10))
    b = corners((0, 0, 10, 10), (5, 0, 10, 10), (50, 50, 10, 10))
    np.testing.assert_allclose(iou_matrix(a, b), np.array([[1, 1 / 3, 0], [0, 0, 1]]))


def test_cluster_one_box_per_annotator_per_cluster() -> None:
    # Annotator 0 drew two nearly identical boxes: they must not land in one cluster.
    c = corners((0, 0, 10, 10), (0.5, 0, 10, 10), (0, 0, 10, 10))
    clusters = cluster_boxes(c, np.array([0, 0, 1]), 0.5)
    assert sorted(map(list, clusters)) == [[0, 2], [1]]


def test_cluster_complete_linkage_does_not_chain() -> None:
    # a overlaps b and b overlaps c at IoU 0.6, but a and c only at ~0.3: a chain, not one object.
    c = corners((0, 0, 10, 10), (2.5, 0, 10, 10), (5, 0, 10, 10))
    clusters = cluster_boxes(c, np.array([0, 1, 2]), 0.5)
    assert len(clusters) == 2


def test_three_annotators_agree_on_one_box() -> None:
    answers = frame(
        [
            ("i", "a", [box(10, 10, 20, 20)]),
            ("i", "b", [box(12, 10, 20, 20)]),
            ("i", "c", [box(8, 10, 20, 20)]),
        ]
    )
    result = consolidate_boxes(answers)
    [merged] = result.loc["i", "boxes"]
    assert merged["label"] == "car"
    assert (merged["x"], merged["y"], merged["width"], merged["height"]) == (10, 10, 20, 20)
    assert merged["n_annotators"] == 3
    mean_iou = (1 + 2 * (18 * 20) / (22 * 20)) / 3
    assert merged["confidence"] == pytest.approx(mean_iou, abs=1e-6)
    assert result.loc["i", "confidence"] == pytest.approx(mean_iou, abs=1e-6)
    assert result.loc["i", "n_annotators"] == 3


def test_minority_box_is_dropped_and_lowers_item_confidence() -> None:
    answers = frame(
        [
            ("i", "a", [box(10, 10, 20, 20), box(60, 60, 10, 10)]),
            ("i", "b", [box(10, 10, 20, 20)]),
            ("i", "c", [box(10, 10, 20, 20)]),
        ]
    )
    result = consolidate_boxes(answers)
    assert len(result.loc["i", "boxes"]) == 1
    # The dropped box: 2 of 3 annotators agreed it is not there.
    assert result.loc["i", "confidence"] == pytest.approx(2 / 3)


def test_empty_box_sets_are_no_object_votes() -> None:
    answers = frame([("i", "a", [box(10, 10, 20, 20)]), ("i", "b", []), ("i", "c", None)])
    result = consolidate_boxes(answers)
    assert result.loc["i", "boxes"] == []
    assert result.loc["i", "n_annotators"] == 3
    assert result.loc["i", "confidence"] == pytest.approx(2 / 3)


def test_nobody_drew_anything() -> None:
    result = consolidate_boxes(frame([("i", "a", []), ("i", "b", [])]))
    assert result.loc["i", "boxes"] == []
    assert result.loc["i", "confidence"] == 1.0


def test_boxes_of_different_labels_never_merge() -> None:
    answers = frame(
        [
            ("i", "a", [box(10, 10, 20, 20, "car")]),
            ("i", "b", [box(10, 10, 20, 20, "truck")]),
            ("i", "c", [box(10, 10, 20, 20, "car")]),
        ]
    )
    result = consolidate_boxes(answers, classes=["car", "truck"])
    assert [b["label"] for b in result.loc["i", "boxes"]] == ["car"]
    assert result.loc["i", "boxes"][0]["n_annotators"] == 2


def test_two_objects_each_kept() -> None:
    two = [box(10, 10, 20, 20), box(60, 60, 10, 10, "person")]
    answers = frame([("i", "a", two), ("i", "b", two[::-1])])
    result = consolidate_boxes(answers)
    assert [b["label"] for b in result.loc["i", "boxes"]] == ["car", "person"]
    assert result.loc["i", "confidence"] == pytest.approx(1.0)


@pytest.mark.parametrize(("quorum", "kept"), [(None, 0), (1, 1), (2, 0)])
def test_quorum(quorum: int | None, kept: int) -> None:
    answers = frame([("i", "a", [box(10, 10, 20, 20)]), ("i", "b", [])])
    assert len(consolidate_boxes(answers, quorum=quorum).loc["i", "boxes"]) == kept


def test_weights_pull_coordinates_and_share() -> None:
    answers = frame([("i", "a", [box(10, 10, 20, 20)]), ("i", "b", [box(14, 10, 20, 20)])])
    result = consolidate_boxes(answers, weights=pd.Series({"a": 3.0, "b": 1.0}))
    [merged] = result.loc["i", "boxes"]
    assert merged["x"] == pytest.approx(11.0)


def test_iou_threshold_decides_matching() -> None:
    answers = frame([("i", "a", [box(0, 0, 10, 10)]), ("i", "b", [box(5, 0, 10, 10)])])  # IoU 1/3
    assert len(consolidate_boxes(answers, iou_threshold=0.5).loc["i", "boxes"]) == 0
    assert len(consolidate_boxes(answers, iou_threshold=0.3).loc["i", "boxes"]) == 1


def test_single_annotator() -> None:
    result = consolidate_boxes(frame([("i", "a", [box(10, 10, 20, 20)])]))
    assert len(result.loc["i", "boxes"]) == 1
    assert result.loc["i", "n_annotators"] == 1


def test_items_keep_order_and_do_not_mix() -> None:
    answers = frame([("z", "a", [box(0, 0, 10, 10)]), ("y", "a", []), ("z", "b", [box(0, 0, 10, 10)])])
    result = consolidate_boxes(answers)
    assert list(result.index) == ["z", "y"]
    assert len(result.loc["z", "boxes"]) == 1 and result.loc["y", "boxes"] == []


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([box(0, 0, 10, 10, "horse")], r"box label 'horse' of item 'i' is not one of \['car'\]"),
        ([{"label": "car", "x": 0}], r"of item 'i' needs label, x, y, width, height"),
        ([box(0, 0, -1, 10)], r"of item 'i' has a negative or non-finite size"),
        (box(0, 0, 1, 1), "must be a list of boxes"),
    ],
)
def test_bad_boxes(boxes: Any, message: str) -> None:
    answers = pd.DataFrame({"item_id": ["i"], "annotator": ["a"], "boxes": [boxes]})
    with pytest.raises(ValueError, match=message):
        consolidate_boxes(answers, classes=["car"])


def test_bad_arguments() -> None:
    answers = frame([("i", "a", [])])
    with pytest.raises(ValueError, match="iou_threshold"):
        consolidate_boxes(answers, iou_threshold=0)
    with pytest.raises(ValueError, match="quorum"):
        consolidate_boxes(answers, quorum=0)
    with pytest.raises(ValueError, match="weights lack annotator 'a'"):
        consolidate_boxes(answers, weights=pd.Series({"b": 1.0}))
    with pytest.raises(ValueError, match="weights must be > 0"):
        consolidate_boxes(answers, weights=pd.Series({"a": 0.0}))
    with pytest.raises(ValueError, match="more than once"):
        consolidate_boxes(frame([("i", "a", []), ("i", "a", [])]))
