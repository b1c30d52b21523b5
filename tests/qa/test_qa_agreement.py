import krippendorff
import numpy as np
import pandas as pd
import pytest

from flows.qa.agreement import Level, krippendorff_alpha, pairwise_agreement, per_group

pytestmark = pytest.mark.unit

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers x 12 units
# with missing values. Published results: nominal 0.743, interval 0.849.
TEXTBOOK = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)


def long(matrix: np.ndarray) -> pd.DataFrame:
    coders, units = np.nonzero(~np.isnan(matrix))
    return pd.DataFrame(
        {
            "item_id": [f"u{u}" for u in units],
            "annotator": [f"c{c}" for c in coders],
            "label": matrix[coders, units],
        }
    )


@pytest.mark.parametrize(("level", "expected"), [("nominal", 0.743), ("interval", 0.849)])
def test_krippendorff_textbook_example(level: Level, expected: float) -> None:
    assert krippendorff_alpha(long(TEXTBOOK), level=level) == pytest.approx(expected, abs=5e-4)


def test_nominal_alpha_by_hand() -> None:
    # Units: (a, a), (a, b), (b, b). n = 6, n_a = n_b = 3.
    # D_o = (0 + 2/1 + 0) / 6 = 1/3; D_e = (36 - 18) / 30 = 0.6; alpha = 1 - (1/3)/0.6 = 4/9.
    answers = pd.DataFrame(
        {"item_id": ["1", "1", "2", "2", "3", "3"], "annotator": list("xyxyxy"), "label": list("aababb")}
    )
    assert krippendorff_alpha(answers) == pytest.approx(4 / 9)


def test_interval_alpha_by_hand() -> None:
    # Units: (1, 2), (3, 3). n = 4, values 1, 2, 3, 3 (mean 2.25).
    # D_o = (2 * 1 / 1 + 0) / 4 = 0.5; D_e = 2 * (4 * 23 - 81) / 12 = 11/6; alpha = 1 - 0.5 / (11/6) = 8/11.
    answers = pd.DataFrame({"item_id": ["1", "1", "2", "2"], "annotator": list("xyxy"), "label": [1, 2, 3, 3]})
    assert krippendorff_alpha(answers, level="interval") == pytest.approx(8 / 11)


@pytest.mark.parametrize("level", ["nominal", "interval"])
def test_perfect_agreement_is_one(level: Level) -> None:
    answers = pd.DataFrame({"item_id": list("aabbcc"), "annotator": list("xyxyxy"), "label": [1, 1, 2, 2, 3, 3]})
    assert krippendorff_alpha(answers, level=level) == 1.0


def test_systematic_disagreement_is_negative() -> None:
    answers = pd.DataFrame({"item_id": list("aabb"), "annotator": list("xyxy"), "label": list("pqpq")})
    assert krippendorff_alpha(answers) < 0


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param(["a", "a", "a", "a"], id="one-value"),
        pytest.param(["a", None, "b", None], id="no-pairable-unit"),
    ],
)
def test_undefined_alpha_is_nan(labels: list[str | None]) -> None:
    answers = pd.DataFrame({"item_id": list("aabb"), "annotator": list("xyxy"), "label": labels})
    assert np.isnan(krippendorff_alpha(answers))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("level", ["nominal", "interval"])
def test_alpha_matches_krippendorff_package_on_random_data(seed: int, level: Level) -> None:
    rng = np.random.default_rng(seed)
    matrix = rng.integers(1, 6, size=(5, 60)).astype(float)
    # Correlated coders, so alpha is far from 0, and missing values, so units differ in size.
    matrix[1:] = np.where(rng.random((4, 60)) < 0.6, matrix[0], matrix[1:])
    matrix[rng.random(matrix.shape) < 0.25] = NAN
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)
    assert krippendorff_alpha(long(matrix), level=level) == pytest.approx(expected, abs=1e-12)


def test_string_labels_equal_numeric_codes() -> None:
    numeric = long(TEXTBOOK)
    named = numeric.assign(label=numeric["label"].map(lambda v: f"class-{int(v)}"))
    assert krippendorff_alpha(named) == pytest.approx(krippendorff_alpha(numeric))


def test_alpha_errors() -> None:
    answers = pd.DataFrame({"item_id": ["a", "a"], "annotator": ["x", "y"], "label": ["p", "q"]})
    with pytest.raises(ValueError, match="level must be"):
        krippendorff_alpha(answers, level="ordinal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval alpha needs numeric values"):
        krippendorff_alpha(answers, level="interval")
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['score'\]"):
        krippendorff_alpha(answers, value_col="score")


def test_pairwise_agreement_by_hand() -> None:
    # Unit 1: (a, a, b): 1 agreeing pair of 3. Unit 2: (c, c): 1 of 1. Unit 3: single value, left out.
    answers = pd.DataFrame(
        {"item_id": ["1", "1", "1", "2", "2", "3"], "annotator": list("xyzxyx"), "label": list("aabccd")}
    )
    assert pairwise_agreement(answers) == pytest.approx((1 / 3 + 1) / 2)


def test_pairwise_agreement_textbook() -> None:
    # Per unit with two or more values (11 units); hand count of agreeing pairs / all pairs.
    # u1 (2, 2, 3, 2) and u7 (1, 1, 2, 1): 3 of 6 pairs; u5 (1, 2, 3, 4): none; the rest unanimous.
    shares = [1, 0.5, 1, 1, 1, 0, 1, 0.5, 1, 1, 1]
    assert pairwise_agreement(long(TEXTBOOK)) == pytest.approx(np.mean(shares))


def test_pairwise_agreement_without_pairs_is_nan() -> None:
    assert np.isnan(pairwise_agreement(pd.DataFrame({"item_id": ["a"], "annotator": ["x"], "label": ["p"]})))


def test_per_group() -> None:
    answers = long(TEXTBOOK).assign(site=lambda f: np.where(f["annotator"].isin(["c0", "c1"]), "s1", "s2"))
    alpha = per_group(answers, "site")
    assert list(alpha.index) == ["s1", "s2"]
    for site in ("s1", "s2"):
        assert alpha[site] == pytest.approx(krippendorff_alpha(answers[answers["site"] == site]))
    pairwise = per_group(answers, ["site", "annotator"], pairwise_agreement)
    assert pairwise.index.names == ["site", "annotator"]
    assert pairwise.isna().all()  # one annotator per group: no pairs
