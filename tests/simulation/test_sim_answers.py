from __future__ import annotations

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from flows.core.models import FieldKind, FieldSpec, TaskType
from simulation.answers import (
    JITTER_CLIP,
    TYPICAL_SECONDS,
    AnnotatorProfile,
    TaskContext,
    add_typos,
    answer_result,
    answer_rng,
    choose_label,
    detection_result,
    jitter_box,
    lead_time,
    listing_result,
    make_profiles,
    simulate_answer,
)

pytestmark = pytest.mark.unit

CLASSES = ("car", "person", "bicycle")
FIELDS = (
    FieldSpec(name="business_name", kind=FieldKind.TEXT),
    FieldSpec(name="phone", kind=FieldKind.PHONE),
    FieldSpec(name="open_sunday", kind=FieldKind.BOOLEAN),
)


def _profile(**kwargs: object) -> AnnotatorProfile:
    return AnnotatorProfile(id="s-a00", site_id="s", **kwargs)  # type: ignore[arg-type]


def test_spammer_answers_are_uniform_over_classes() -> None:
    spammer = _profile(is_spammer=True, accuracy=0.0)
    rng = np.random.default_rng(1)
    picks = [choose_label("car", spammer, CLASSES, rng) for _ in range(9000)]
    shares = {c: picks.count(c) / len(picks) for c in CLASSES}
    assert set(picks) == set(CLASSES)
    for share in shares.values():
        assert share == pytest.approx(1 / 3, abs=0.025)


@pytest.mark.parametrize("accuracy", [0.6, 0.9, 0.98])
def test_accurate_annotator_hits_their_accuracy(accuracy: float) -> None:
    profile = _profile(accuracy=accuracy)
    rng = np.random.default_rng(2)
    truth = rng.choice(np.array(CLASSES), 6000)
    picks = np.array([choose_label(str(t), profile, CLASSES, rng) for t in truth])
    assert (picks == truth).mean() == pytest.approx(accuracy, abs=0.02)
    # Errors are spread over the other classes.
    wrong = picks[(picks != truth) & (truth == "car")]
    assert set(wrong) <= {"person", "bicycle"}


def test_confusion_pair_pulls_answers_to_the_partner() -> None:
    profile = _profile(accuracy=0.9, confusions={"car": ("bicycle", 0.3)})
    rng = np.random.default_rng(3)
    picks = [choose_label("car", profile, CLASSES, rng) for _ in range(8000)]
    # P(bicycle | car) = 0.3 + 0.7 * 0.1 / 2; P(car | car) = 0.7 * 0.9.
    assert picks.count("bicycle") / len(picks) == pytest.approx(0.3 + 0.7 * 0.05, abs=0.02)
    assert picks.count("car") / len(picks) == pytest.approx(0.63, abs=0.02)
    # Other true classes are unaffected.
    other = [choose_label("person", profile, CLASSES, rng) for _ in range(4000)]
    assert other.count("person") / len(other) == pytest.approx(0.9, abs=0.02)


def test_classification_result_is_label_studio_choices() -> None:
    result = answer_result(
        {"label": "person"},
        _profile(accuracy=1.0),
        TaskContext(TaskType.TEXT_CLASSIFICATION, CLASSES),
        answer_rng(0, "a", "i"),
    )
    assert len(result) == 1
    region = result[0]
    assert {k: region[k] for k in ("from_name", "to_name", "type", "origin")} == {
        "from_name": "label",
        "to_name": "text",
        "type": "choices",
        "origin": "manual",
    }
    assert region["value"] == {"choices": ["person"]}
    assert isinstance(region["id"], str) and len(region["id"]) == 10


@pytest.mark.parametrize(
    "box",
    [
        {"x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0},
        {"x": 0.0, "y": 0.0, "width": 5.0, "height": 5.0},
        {"x": 90.0, "y": 92.0, "width": 10.0, "height": 8.0},
        {"x": 0.0, "y": 0.0, "width": 100.0, "height": 100.0},
    ],
)
def test_box_jitter_is_bounded_and_inside_the_image(box: dict[str, float]) -> None:
    rng = np.random.default_rng(4)
    jitter = 0.1
    for _ in range(2000):
        x, y, w, h = jitter_box(box, jitter, rng)
        assert x >= 0.0 and x + w <= 100.0 + 1e-9
        assert y >= 0.0 and y + h <= 100.0 + 1e-9
        assert w > 0 and h > 0
        bound_x, bound_y = JITTER_CLIP * jitter * box["width"] + 1e-9, JITTER_CLIP * jitter * box["height"] + 1e-9
        assert abs(x - box["x"]) <= bound_x and abs(x + w - box["x"] - box["width"]) <= bound_x
        assert abs(y - box["y"]) <= bound_y and abs(y + h - box["y"] - box["height"]) <= bound_y


def test_zero_jitter_copies_the_box() -> None:
    box = {"x": 12.5, "y": 33.0, "width": 20.0, "height": 10.0}
    assert jitter_box(box, 0.0, np.random.default_rng(0)) == (12.5, 33.0, 20.0, 10.0)


def test_detection_result_format_misses_and_extras() -> None:
    boxes = [{"label": "car", "x": 10.0, "y": 10.0, "width": 20.0, "height": 10.0}] * 4
    perfect = _profile(accuracy=1.0, box_jitter=0.0, miss_rate=0.0, extra_rate=0.0)
    result = detection_result(boxes, perfect, CLASSES, np.random.default_rng(0), image_size=(320, 240))
    assert len(result) == 4
    region = result[0]
    assert region["type"] == "rectanglelabels" and region["from_name"] == "box" and region["to_name"] == "image"
    assert (region["original_width"], region["original_height"]) == (320, 240)
    assert region["value"] == {
        "x": 10.0,
        "y": 10.0,
        "width": 20.0,
        "height": 10.0,
        "rotation": 0,
        "rectanglelabels": ["car"],
    }
    rng = np.random.default_rng(5)
    misser = _profile(accuracy=1.0, miss_rate=0.25, extra_rate=0.0)
    kept = [len(detection_result(boxes, misser, CLASSES, rng, image_size=(10, 10))) for _ in range(2000)]
    assert np.mean(kept) == pytest.approx(3.0, abs=0.08)
    extra = _profile(accuracy=1.0, miss_rate=0.0, extra_rate=0.5)
    counts = [len(detection_result(boxes[:1], extra, CLASSES, rng, image_size=(10, 10))) for _ in range(3000)]
    assert np.mean(counts) == pytest.approx(1.5, abs=0.05)


def test_spammer_boxes_are_in_the_class_set_and_the_image() -> None:
    spammer = _profile(is_spammer=True, accuracy=0.0)
    rng = np.random.default_rng(6)
    for _ in range(300):
        regions = detection_result([], spammer, CLASSES, rng, image_size=(64, 48))
        assert 1 <= len(regions) <= 3
        for r in regions:
            v = r["value"]
            assert v["rectanglelabels"][0] in CLASSES
            assert v["x"] >= 0 and v["x"] + v["width"] <= 100 and v["y"] >= 0 and v["y"] + v["height"] <= 100


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.1])
def test_typo_rate(rate: float) -> None:
    rng = np.random.default_rng(7)
    text = "please deliver three bags of maize to kisumu " * 400
    typed = add_typos(text, rate, rng)
    # Each hit is one edit (a substitution may draw the same letter: 1 in 26 are no change).
    assert Levenshtein.distance(text, typed) / len(text) == pytest.approx(rate * (1 - 0.5 / 26), abs=0.006)


def test_transcription_result_is_textarea() -> None:
    context = TaskContext(TaskType.AUDIO_TRANSCRIPTION)
    result = answer_result({"text": "habari yako"}, _profile(typo_rate=0.0), context, np.random.default_rng(0))
    assert [(r["from_name"], r["to_name"], r["type"], r["value"]) for r in result] == [
        ("transcription", "audio", "textarea", {"text": ["habari yako"]})
    ]


def test_listing_result_perfect_annotator_types_the_truth() -> None:
    truth = {
        "fields": {"business_name": "Baraka Salon", "phone": "+254712345678", "open_sunday": True},
        "listing_valid": False,
    }
    shown = {"fields_business_name": "Baraka Salon", "fields_phone": "+254700000000", "fields_open_sunday": "yes"}
    perfect = _profile(accuracy=1.0, field_error_rate=0.0, typo_rate=0.0)
    result = listing_result(truth, perfect, FIELDS, shown, np.random.default_rng(1))
    by_name = {r["from_name"]: r for r in result}
    assert set(by_name) == {"field_business_name", "field_phone", "field_open_sunday", "listing_valid"}
    assert by_name["field_business_name"]["value"] == {"text": ["Baraka Salon"]}
    assert by_name["field_business_name"]["to_name"] == "fields_business_name"
    phone = by_name["field_phone"]["value"]["text"][0]
    assert "".join(ch for ch in phone if ch.isdigit() or ch == "+") == "+254712345678"
    assert by_name["field_open_sunday"]["type"] == "choices"
    assert by_name["field_open_sunday"]["value"] == {"choices": ["yes"]}
    assert by_name["listing_valid"]["value"] == {"choices": ["no"]}
    assert by_name["listing_valid"]["to_name"] == "fields_business_name"


def test_listing_spammer_confirms_what_is_shown() -> None:
    truth = {
        "fields": {"business_name": "Baraka Salon", "phone": "+254712345678", "open_sunday": False},
        "listing_valid": True,
    }
    shown = {"fields_business_name": "Old Name", "fields_phone": "+254700000000", "fields_open_sunday": "yes"}
    spammer = _profile(is_spammer=True, accuracy=0.0)
    rng = np.random.default_rng(2)
    verdicts = []
    for _ in range(400):
        by_name = {r["from_name"]: r["value"] for r in listing_result(truth, spammer, FIELDS, shown, rng)}
        assert by_name["field_business_name"] == {"text": ["Old Name"]}
        assert by_name["field_phone"] == {"text": ["+254700000000"]}
        verdicts.append(by_name["listing_valid"]["choices"][0])
    assert verdicts.count("yes") / len(verdicts) == pytest.approx(0.5, abs=0.08)


def test_listing_field_errors_keep_the_stale_value() -> None:
    truth = {"fields": {"business_name": "A", "phone": "+254712345678", "open_sunday": True}, "listing_valid": True}
    shown = {"fields_business_name": "A", "fields_phone": "+254700000000", "fields_open_sunday": "yes"}
    sloppy = _profile(accuracy=1.0, field_error_rate=0.4, typo_rate=0.0)
    rng = np.random.default_rng(3)
    stale = 0
    for _ in range(2000):
        by_name = {r["from_name"]: r["value"] for r in listing_result(truth, sloppy, FIELDS, shown, rng)}
        digits = "".join(ch for ch in by_name["field_phone"]["text"][0] if ch.isdigit())
        stale += digits == "254700000000"
    assert stale / 2000 == pytest.approx(0.4, abs=0.03)


def test_skip_gives_an_empty_cancelled_answer() -> None:
    context = TaskContext(TaskType.IMAGE_CLASSIFICATION, CLASSES)
    answer = simulate_answer({"label": "car"}, _profile(skip_rate=1.0), context, np.random.default_rng(0))
    assert answer.was_cancelled and answer.result == [] and answer.lead_time > 0
    answer = simulate_answer({"label": "car"}, _profile(skip_rate=0.0), context, np.random.default_rng(0))
    assert not answer.was_cancelled and answer.result


@pytest.mark.parametrize("task_type", list(TaskType))
def test_lead_time_mean_follows_pace(task_type: TaskType) -> None:
    profile = _profile(pace=1.5, pace_sigma=0.4)
    rng = np.random.default_rng(8)
    times = np.array([lead_time(profile, task_type, rng) for _ in range(6000)])
    assert (times > 0).all()
    assert times.mean() == pytest.approx(TYPICAL_SECONDS[task_type] * 1.5, rel=0.04)


def test_answers_are_deterministic_for_a_seed() -> None:
    context = TaskContext(TaskType.OBJECT_DETECTION, CLASSES, image_size=(320, 240))
    truth = {"boxes": [{"label": "car", "x": 10, "y": 10, "width": 30, "height": 20}]}
    profile = _profile(extra_rate=0.5)
    first = simulate_answer(truth, profile, context, answer_rng(7, "s-a00", "img-1"))
    again = simulate_answer(truth, profile, context, answer_rng(7, "s-a00", "img-1"))
    other = simulate_answer(truth, profile, context, answer_rng(8, "s-a00", "img-1"))
    assert first == again
    assert first != other


def test_answer_errors() -> None:
    with pytest.raises(ValueError, match="image size"):
        answer_result(
            {"boxes": []}, _profile(), TaskContext(TaskType.OBJECT_DETECTION, CLASSES), answer_rng(0, "a", "b")
        )
    with pytest.raises(ValueError, match="at least one class"):
        choose_label("car", _profile(), (), np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least one field"):
        listing_result({}, _profile(), (), {}, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"accuracy": 1.5}, "accuracy"),
        ({"skip_rate": -0.1}, "skip_rate"),
        ({"pace": 0.0}, "pace"),
        ({"confusions": {"car": ("car", 0.2)}}, "confusion"),
        ({"confusions": {"car": ("bicycle", 2.0)}}, "confusion"),
    ],
)
def test_profile_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _profile(**kwargs)


def test_make_profiles_spread_and_spammers() -> None:
    profiles = make_profiles(["nairobi", "dadaab"], 20, spammer_share=0.1, seed=3, confusable=[("car", "bicycle")])
    assert len(profiles) == 40
    assert [p.id for p in profiles[:2]] == ["nairobi-a00", "nairobi-a01"]
    assert len({p.id for p in profiles}) == 40
    for site in ("nairobi", "dadaab"):
        assert sum(p.is_spammer for p in profiles if p.site_id == site) == 2
    honest = np.array([p.accuracy for p in profiles if not p.is_spammer])
    assert 0.8 < honest.mean() < 0.95
    assert honest.min() >= 0.55 and honest.max() <= 0.995 and honest.std() > 0.02
    confused = [p for p in profiles if p.confusions]
    assert confused and all(
        p.confusions["car"][0] == "bicycle" and p.confusions["bicycle"][0] == "car" for p in confused
    )
    assert all(not p.confusions for p in profiles if p.is_spammer)
    assert make_profiles(["nairobi", "dadaab"], 20, 0.1, seed=3, confusable=[("car", "bicycle")]) == profiles
    assert make_profiles(["nairobi", "dadaab"], 20, 0.1, seed=4) != profiles


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((["a"], 0, 0.1), "n_per_site"),
        ((["a"], 3, 1.5), "spammer_share"),
        ((["a", "a"], 3, 0.1), "unique"),
    ],
)
def test_make_profiles_errors(args: tuple[list[str], int, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_profiles(*args)


@pytest.mark.parametrize("mean", [0.7, 0.93])
def test_make_profiles_centres_accuracy_on_a_given_mean(mean: float) -> None:
    profiles = make_profiles(["s"], 400, spammer_share=0.0, seed=5, site_skill_sd=0.0, mean_accuracy=mean)
    assert np.mean([p.accuracy for p in profiles]) == pytest.approx(mean, abs=0.015)
    with pytest.raises(ValueError, match="mean_accuracy"):
        make_profiles(["s"], 3, mean_accuracy=0.2)
