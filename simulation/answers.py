"""Simulated annotators and the answers they give, in Label Studio's own ``result`` JSON.

Every function here is pure: it takes the ground truth of one task, an :class:`AnnotatorProfile` and a
``numpy.random.Generator`` and returns what that annotator would submit. The control names match Kazi's
label configs (``flows/split/label_configs.py``): classification ``label`` (choices) on ``image`` or
``text``, detection ``box`` (rectanglelabels) on ``image``, transcription ``transcription`` (textarea) on
``audio``, listing verification ``field_<name>`` (textarea, or choices for boolean fields) on
``fields_<name>`` and ``listing_valid`` (choices ``yes``/``no``) on the first field.

Ground truth is Kazi's normalised answer: ``{"label": ...}``, ``{"boxes": [{"label", "x", "y", "width",
"height"}, ...]}`` (percent of the image), ``{"text": ...}`` or ``{"fields": {...}, "listing_valid": bool}``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flows.core.models import FieldKind, FieldSpec, TaskType

#: Mean seconds a typical annotator spends on one task; a profile's ``pace`` multiplies it. Roughly the
#: inverse of the demo sites' measured items per hour.
TYPICAL_SECONDS: dict[TaskType, float] = {
    TaskType.IMAGE_CLASSIFICATION: 20.0,
    TaskType.TEXT_CLASSIFICATION: 30.0,
    TaskType.OBJECT_DETECTION: 110.0,
    TaskType.AUDIO_TRANSCRIPTION: 380.0,
    TaskType.LISTING_VERIFICATION: 150.0,
}

#: Object tag a classification answer points at, per task type.
CLASSIFICATION_TARGET: dict[TaskType, str] = {
    TaskType.IMAGE_CLASSIFICATION: "image",
    TaskType.TEXT_CLASSIFICATION: "text",
}

BOOLEAN_CHOICES = ("yes", "no")

_REGION_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"
_TYPO_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz"))
_SPAM_WORDS = ("the", "ok", "yes", "no", "hello", "asante", "sawa", "maybe", "one", "two", "test", "hmm")
#: Truncation of box jitter, in standard deviations: a sloppy box is never absurdly far from its object.
JITTER_CLIP = 3.0
_MIN_BOX = 0.5
# Honest accuracy ~ Beta(12, 1.6): mean 0.88, most between 0.75 and 0.98.
_BETA_A, _BETA_B = 12.0, 1.6


@dataclass(frozen=True)
class AnnotatorProfile:
    """How one simulated annotator works.

    Attributes:
        id: Stable id, also the Label Studio username (``<id>@...``).
        site_id: Partner site the annotator works at.
        accuracy: Probability of the right class / listing verdict (ignored for spammers).
        is_spammer: Answers at random, fast.
        confusions: ``{true_class: (confused_class, prob)}``: mistakes ``true_class`` for
            ``confused_class`` with probability ``prob`` before accuracy applies.
        box_jitter: Standard deviation of each box edge, as a fraction of the box's size.
        miss_rate: Probability of leaving out a true box.
        extra_rate: Mean number of spurious boxes per image (Poisson).
        typo_rate: Per-character probability of a substituted or dropped character.
        field_error_rate: Per-field probability of a wrong value (the stale shown value, or a typo).
        skip_rate: Probability of skipping a task (Label Studio's "was_cancelled").
        pace: Mean time per task as a multiple of :data:`TYPICAL_SECONDS`.
        pace_sigma: Spread of the lognormal time per task.
    """

    id: str
    site_id: str
    accuracy: float = 0.9
    is_spammer: bool = False
    confusions: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    box_jitter: float = 0.04
    miss_rate: float = 0.03
    extra_rate: float = 0.02
    typo_rate: float = 0.01
    field_error_rate: float = 0.04
    skip_rate: float = 0.02
    pace: float = 1.0
    pace_sigma: float = 0.45

    def __post_init__(self) -> None:
        for name in ("accuracy", "box_jitter", "miss_rate", "typo_rate", "field_error_rate", "skip_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"profile {self.id}: {name} must be in [0, 1], got {value}")
        if self.extra_rate < 0 or self.pace <= 0 or self.pace_sigma < 0:
            raise ValueError(f"profile {self.id}: extra_rate and pace_sigma must be >= 0 and pace > 0")
        for true_class, (confused, prob) in self.confusions.items():
            if not 0.0 <= prob <= 1.0 or confused == true_class:
                raise ValueError(f"profile {self.id}: bad confusion {true_class!r} -> {confused!r} ({prob})")

    def perfect(self) -> AnnotatorProfile:
        """The same person on their best day: always right, no jitter, no typos, no skips."""
        return AnnotatorProfile(
            id=self.id,
            site_id=self.site_id,
            accuracy=1.0,
            box_jitter=0.0,
            miss_rate=0.0,
            extra_rate=0.0,
            typo_rate=0.0,
            field_error_rate=0.0,
            skip_rate=0.0,
            pace=self.pace,
            pace_sigma=self.pace_sigma,
        )

    def careless(self) -> AnnotatorProfile:
        """The same person not paying attention: answers at random."""
        return AnnotatorProfile(id=self.id, site_id=self.site_id, accuracy=0.0, is_spammer=True, pace=self.pace)


@dataclass(frozen=True)
class SimulatedAnswer:
    """What an annotator submits for one task."""

    result: list[dict[str, Any]]
    lead_time: float
    was_cancelled: bool = False


@dataclass(frozen=True)
class TaskContext:
    """What an answer depends on besides the truth: the label set, the fields and what the task shows."""

    task_type: TaskType
    classes: tuple[str, ...] = ()
    fields: tuple[FieldSpec, ...] = ()
    shown: Mapping[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None


def keyed_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator keyed by a seed and names: the same inputs give the same stream, in any order of calls.

    Philox is a counter-based generator made for independent keyed streams, and keying it costs a third
    of seeding a default generator (this runs once per simulated answer).
    """
    low = 0
    for name in names:
        low = (low * 0x9E3779B1 + zlib.crc32(name.encode())) & 0xFFFFFFFFFFFFFFFF
    key = np.array([seed & 0xFFFFFFFFFFFFFFFF, low], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


def answer_rng(seed: int, profile_id: str, item_id: str) -> np.random.Generator:
    """The generator of one annotator's answer to one item: independent of the order tasks are worked in."""
    return keyed_rng(seed, profile_id, item_id)


def region_id(rng: np.random.Generator) -> str:
    """A 10-character region id like the ones Label Studio's editor makes."""
    bits = int(rng.integers(0, 1 << 60))
    return "".join(_REGION_ALPHABET[(bits >> (6 * k)) & 63] for k in range(10))


def lead_time(profile: AnnotatorProfile, task_type: TaskType, rng: np.random.Generator) -> float:
    """Seconds spent on one task: lognormal with mean ``TYPICAL_SECONDS[task_type] * pace``."""
    mean = TYPICAL_SECONDS[task_type] * profile.pace * (0.25 if profile.is_spammer else 1.0)
    sigma = profile.pace_sigma
    return round(float(rng.lognormal(math.log(mean) - sigma * sigma / 2, sigma)), 3)


# --- classification --------------------------------------------------------------------------


def choose_label(true_label: str, profile: AnnotatorProfile, classes: Sequence[str], rng: np.random.Generator) -> str:
    """The class an annotator picks for an item of class ``true_label``.

    Spammers pick uniformly. Others first fall for their confusion of ``true_label`` (if any), then answer
    right with their accuracy, else pick one of the other classes uniformly.
    """
    if not classes:
        raise ValueError("choose_label needs at least one class")
    if profile.is_spammer:
        return str(classes[int(rng.integers(len(classes)))])
    confused = profile.confusions.get(true_label)
    u_confuse, u_right = rng.random(), rng.random()
    if confused is not None and confused[0] in classes and u_confuse < confused[1]:
        return confused[0]
    others = [c for c in classes if c != true_label]
    if u_right < profile.accuracy or not others:
        return true_label
    return str(others[int(rng.integers(len(others)))])


def choices_region(from_name: str, to_name: str, choices: Sequence[str], rng: np.random.Generator) -> dict[str, Any]:
    return {
        "id": region_id(rng),
        "from_name": from_name,
        "to_name": to_name,
        "type": "choices",
        "origin": "manual",
        "value": {"choices": list(choices)},
    }


def textarea_region(from_name: str, to_name: str, text: str, rng: np.random.Generator) -> dict[str, Any]:
    return {
        "id": region_id(rng),
        "from_name": from_name,
        "to_name": to_name,
        "type": "textarea",
        "origin": "manual",
        "value": {"text": [text]},
    }


def classification_result(
    true_label: str,
    profile: AnnotatorProfile,
    classes: Sequence[str],
    rng: np.random.Generator,
    *,
    to_name: str = "image",
) -> list[dict[str, Any]]:
    """A single-choice ``label`` answer."""
    return [choices_region("label", to_name, [choose_label(true_label, profile, classes, rng)], rng)]


# --- object detection ------------------------------------------------------------------------


def _random_box(rng: np.random.Generator) -> tuple[float, float, float, float]:
    w, h = rng.uniform(5, 35, size=2)
    x, y = rng.uniform(0, 100 - w), rng.uniform(0, 100 - h)
    return float(x), float(y), float(w), float(h)


def jitter_box(box: Mapping[str, Any], jitter: float, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A sloppy copy of ``box``: each edge moves by a truncated normal of ``jitter`` times the box size.

    The result stays inside the image (0..100) and keeps a minimal size.
    """
    x, y, w, h = (float(box[k]) for k in ("x", "y", "width", "height"))
    noise = np.clip(rng.standard_normal(4), -JITTER_CLIP, JITTER_CLIP) * jitter
    x1, x2 = x + noise[0] * w, x + w + noise[1] * w
    y1, y2 = y + noise[2] * h, y + h + noise[3] * h
    x1, x2 = float(np.clip(min(x1, x2), 0, 100)), float(np.clip(max(x1, x2), 0, 100))
    y1, y2 = float(np.clip(min(y1, y2), 0, 100)), float(np.clip(max(y1, y2), 0, 100))
    if x2 - x1 < _MIN_BOX:
        x1 = min(x1, 100 - _MIN_BOX)
        x2 = x1 + _MIN_BOX
    if y2 - y1 < _MIN_BOX:
        y1 = min(y1, 100 - _MIN_BOX)
        y2 = y1 + _MIN_BOX
    return x1, y1, x2 - x1, y2 - y1


def rectangle_region(
    label: str, box: tuple[float, float, float, float], size: tuple[int, int], rng: np.random.Generator
) -> dict[str, Any]:
    x, y, w, h = box
    return {
        "id": region_id(rng),
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
        "original_width": int(size[0]),
        "original_height": int(size[1]),
        "image_rotation": 0,
        "value": {
            "x": round(x, 4),
            "y": round(y, 4),
            "width": round(w, 4),
            "height": round(h, 4),
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def detection_result(
    true_boxes: Sequence[Mapping[str, Any]],
    profile: AnnotatorProfile,
    classes: Sequence[str],
    rng: np.random.Generator,
    *,
    image_size: tuple[int, int],
) -> list[dict[str, Any]]:
    """Rectangles for the true boxes: some missed, each jittered and labelled, plus a few spurious ones.

    A spammer draws one to three boxes anywhere with random labels.
    """
    if profile.is_spammer:
        return [
            rectangle_region(str(classes[int(rng.integers(len(classes)))]), _random_box(rng), image_size, rng)
            for _ in range(int(rng.integers(1, 4)))
        ]
    regions = []
    for box in true_boxes:
        if rng.random() < profile.miss_rate:
            continue
        label = choose_label(str(box["label"]), profile, classes, rng)
        regions.append(rectangle_region(label, jitter_box(box, profile.box_jitter, rng), image_size, rng))
    for _ in range(int(rng.poisson(profile.extra_rate))):
        label = str(classes[int(rng.integers(len(classes)))])
        regions.append(rectangle_region(label, _random_box(rng), image_size, rng))
    return regions


# --- transcription ---------------------------------------------------------------------------


def add_typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """Each character is, with probability ``rate``, replaced by a random letter or dropped (half each)."""
    if not text or rate <= 0:
        return text
    chars = np.array(list(text))
    hit = rng.random(chars.size) < rate
    drop = hit & (rng.random(chars.size) < 0.5)
    swap = hit & ~drop
    chars[swap] = rng.choice(_TYPO_ALPHABET, int(swap.sum()))
    return "".join(chars[~drop])


def transcription_result(text: str, profile: AnnotatorProfile, rng: np.random.Generator) -> list[dict[str, Any]]:
    """A ``transcription`` answer: the true text with typos, or word salad from a spammer."""
    if profile.is_spammer:
        n = int(rng.integers(1, 6))
        typed = " ".join(str(w) for w in rng.choice(np.array(_SPAM_WORDS), n))
    else:
        typed = add_typos(text, profile.typo_rate, rng)
    return [textarea_region("transcription", "audio", typed, rng)]


# --- listing verification ----------------------------------------------------------------------


def _as_shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def restyle(value: str, kind: FieldKind, rng: np.random.Generator) -> str:
    """The same value typed the way people type it (spacing, case, scheme): equal after normalisation."""
    if not value:
        return value
    if kind == FieldKind.PHONE:
        digits = "".join(ch for ch in value if ch.isdigit())
        if len(digits) >= 9 and rng.random() < 0.5:
            lead = "+" if value.strip().startswith("+") else ""
            return f"{lead}{digits[:3]} {digits[3:6]} {digits[6:9]} {digits[9:]}".strip()
        return value
    if kind == FieldKind.EMAIL and rng.random() < 0.2:
        return value[:1].upper() + value[1:]
    if kind == FieldKind.URL and rng.random() < 0.3:
        return value.removeprefix("https://").removeprefix("http://").rstrip("/")
    return value


def _field_answer(
    spec: FieldSpec, true_value: Any, shown: Any, profile: AnnotatorProfile, rng: np.random.Generator
) -> str:
    truth, shown_text = _as_shown(true_value), _as_shown(shown)
    if profile.is_spammer:
        # A spammer does not check anything: they confirm what is shown.
        return shown_text
    if spec.kind == FieldKind.BOOLEAN:
        wrong = rng.random() < profile.field_error_rate
        return ({"yes": "no", "no": "yes"}.get(truth, truth)) if wrong else truth
    if rng.random() < profile.field_error_rate:
        # The usual mistake is not checking and keeping the stale value; else a slip of the keyboard.
        if shown_text != truth:
            return shown_text
        return add_typos(truth, max(profile.typo_rate, 0.15), rng) or truth
    return restyle(add_typos(truth, profile.typo_rate / 4, rng), spec.kind, rng)


def listing_result(
    truth: Mapping[str, Any],
    profile: AnnotatorProfile,
    fields: Sequence[FieldSpec],
    shown: Mapping[str, Any],
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Verified values of every field, plus the ``listing_valid`` verdict.

    Args:
        truth: ``{"fields": {name: value}, "listing_valid": bool}``.
        profile: The annotator.
        fields: The work order's fields, in config order.
        shown: The task data: ``fields_<name>`` holds the value the client has on file.
        rng: Random generator.
    """
    if not fields:
        raise ValueError("listing_result needs at least one field")
    true_fields = truth.get("fields", {})
    regions = []
    for spec in fields:
        typed = _field_answer(spec, true_fields.get(spec.name), shown.get(f"fields_{spec.name}"), profile, rng)
        to_name = f"fields_{spec.name}"
        if spec.kind == FieldKind.BOOLEAN:
            if typed in BOOLEAN_CHOICES:
                regions.append(choices_region(f"field_{spec.name}", to_name, [typed], rng))
        elif typed:
            regions.append(textarea_region(f"field_{spec.name}", to_name, typed, rng))
    valid = bool(truth.get("listing_valid", True))
    if profile.is_spammer:
        verdict = bool(rng.random() < 0.5)
    else:
        verdict = valid if rng.random() < profile.accuracy else not valid
    regions.append(choices_region("listing_valid", f"fields_{fields[0].name}", ["yes" if verdict else "no"], rng))
    return regions


# --- one task --------------------------------------------------------------------------------


def answer_result(
    truth: Mapping[str, Any], profile: AnnotatorProfile, context: TaskContext, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """The ``result`` list an annotator submits for a task whose true answer is ``truth``."""
    task_type = context.task_type
    if task_type in CLASSIFICATION_TARGET:
        return classification_result(
            str(truth["label"]), profile, context.classes, rng, to_name=CLASSIFICATION_TARGET[task_type]
        )
    if task_type == TaskType.OBJECT_DETECTION:
        if context.image_size is None:
            raise ValueError("object detection answers need the image size")
        return detection_result(truth.get("boxes", []), profile, context.classes, rng, image_size=context.image_size)
    if task_type == TaskType.AUDIO_TRANSCRIPTION:
        return transcription_result(str(truth.get("text", "")), profile, rng)
    if task_type == TaskType.LISTING_VERIFICATION:
        return listing_result(truth, profile, context.fields, context.shown, rng)
    raise ValueError(f"no simulated answers for task type {task_type}")


def simulate_answer(
    truth: Mapping[str, Any], profile: AnnotatorProfile, context: TaskContext, rng: np.random.Generator
) -> SimulatedAnswer:
    """One annotator's submission for one task: a skip (empty result, cancelled) or an answer, with its time."""
    skipped = bool(rng.random() < profile.skip_rate)
    seconds = lead_time(profile, context.task_type, rng)
    if skipped:
        return SimulatedAnswer(result=[], lead_time=round(seconds * 0.3, 3), was_cancelled=True)
    return SimulatedAnswer(result=answer_result(truth, profile, context, rng), lead_time=seconds)


# --- a workforce of profiles -----------------------------------------------------------------


def make_profiles(
    site_ids: Sequence[str],
    n_per_site: int,
    spammer_share: float = 0.1,
    seed: int = 0,
    *,
    confusable: Sequence[tuple[str, str]] = (),
    site_skill_sd: float = 0.03,
    mean_accuracy: float | None = None,
) -> list[AnnotatorProfile]:
    """Annotator profiles for each site, with a realistic spread of skill.

    Honest accuracy is Beta(12, 1.6) (mean about 0.88, most between 0.75 and 0.98) shifted by a per-site
    offset; the other error rates grow with ``1 - accuracy``. About half of the honest annotators mix up each
    pair in ``confusable`` (both directions). Spammers are ``round(spammer_share * n)`` per site.

    Args:
        site_ids: Partner sites; profile ids are ``<site>-a<NN>``.
        n_per_site: Annotators per site.
        spammer_share: Share of each site's annotators who answer at random.
        seed: The same seed gives the same profiles.
        confusable: Class pairs that are easy to mix up.
        site_skill_sd: Standard deviation of the per-site accuracy offset.
        mean_accuracy: Centre honest accuracy here instead (a site's measured gold accuracy, say).
    """
    if n_per_site < 1:
        raise ValueError(f"n_per_site must be at least 1, got {n_per_site}")
    if not 0.0 <= spammer_share <= 1.0:
        raise ValueError(f"spammer_share must be in [0, 1], got {spammer_share}")
    if len(set(site_ids)) != len(site_ids):
        raise ValueError("site_ids must be unique")
    if mean_accuracy is not None and not 0.5 <= mean_accuracy <= 1.0:
        raise ValueError(f"mean_accuracy must be in [0.5, 1], got {mean_accuracy}")
    centre = 0.0 if mean_accuracy is None else mean_accuracy - _BETA_A / (_BETA_A + _BETA_B)
    rng = np.random.default_rng(seed)
    width = max(2, len(str(n_per_site - 1)))
    profiles: list[AnnotatorProfile] = []
    for site in site_ids:
        offset = centre + rng.normal(0.0, site_skill_sd)
        n_spam = round(spammer_share * n_per_site)
        spam = np.zeros(n_per_site, dtype=bool)
        spam[rng.permutation(n_per_site)[:n_spam]] = True
        for i in range(n_per_site):
            acc = float(np.clip(rng.beta(_BETA_A, _BETA_B) + offset, 0.55, 0.995))
            err = 1.0 - acc
            confusions: dict[str, tuple[str, float]] = {}
            for a, b in confusable:
                if rng.random() < 0.5:
                    p = float(rng.uniform(0.05, 0.3))
                    confusions[a], confusions[b] = (b, p), (a, p)
            pace = float(rng.lognormal(0.0, 0.25))
            skip = float(rng.uniform(0.0, 0.04))
            profiles.append(
                AnnotatorProfile(
                    id=f"{site}-a{i:0{width}d}",
                    site_id=site,
                    accuracy=0.0 if spam[i] else round(acc, 4),
                    is_spammer=bool(spam[i]),
                    confusions={} if spam[i] else confusions,
                    box_jitter=round(0.015 + 0.25 * err * float(rng.uniform(0.5, 1.5)), 4),
                    miss_rate=round(min(0.5, 0.01 + 0.3 * err), 4),
                    extra_rate=round(0.01 + 0.2 * err, 4),
                    typo_rate=round(min(0.3, 0.003 + 0.1 * err * float(rng.uniform(0.5, 1.5))), 4),
                    field_error_rate=round(min(0.5, 0.01 + 0.5 * err), 4),
                    skip_rate=round(skip, 4),
                    pace=round(pace, 3),
                )
            )
    return profiles
