"""Sample client datasets with known truth: images, texts, business listings and audio clips.

Each generator is deterministic for a seed and returns a :class:`SampleDataset`: the client's rows (what the
client would upload as CSV, JSONL or Parquet, with ``s3://`` URIs for media), the media objects to upload
(key -> bytes), the ground truth in Kazi's normalised form and a set of gold candidates (items whose known
answer the client hands over). Nothing here touches S3 or Label Studio.
"""

from __future__ import annotations

import csv
import io
import json
import math
import wave
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image, ImageDraw

from flows.core.models import ColumnMapping, FieldKind, FieldSpec, LabelSchema, TaskType
from simulation.answers import TaskContext

DEFAULT_BUCKET = "kazi-demo-client"


@dataclass(frozen=True)
class Truth:
    """The right answer to every item of a dataset, and what answering needs to know.

    ``answers`` maps item id -> normalised answer: ``{"label"}``, ``{"boxes": [...]}``, ``{"text"}`` or
    ``{"fields": {...}, "listing_valid": bool}``. ``image_sizes`` (item id -> (width, height)) is set for
    image datasets, since Label Studio's rectangles carry the original image size.
    """

    task_type: TaskType
    answers: Mapping[str, Mapping[str, Any]]
    classes: tuple[str, ...] = ()
    fields: tuple[FieldSpec, ...] = ()
    image_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def context(self, item_id: str, shown: Mapping[str, Any] | None = None) -> TaskContext:
        """What an annotator needs besides the truth to answer ``item_id``."""
        return TaskContext(
            task_type=self.task_type,
            classes=self.classes,
            fields=self.fields,
            shown=dict(shown or {}),
            image_size=self.image_sizes.get(item_id),
        )

    def frame(self) -> pd.DataFrame:
        """One row per item: item_id, answer (canonical JSON) and label (classification only, else null)."""
        ids = list(self.answers)
        return pd.DataFrame(
            {
                "item_id": pd.array(ids, dtype="str"),
                "answer": pd.array([answer_json(self.answers[i]) for i in ids], dtype="str"),
                "label": pd.array([self.answers[i].get("label") for i in ids], dtype="str"),
            }
        )


def answer_json(answer: Mapping[str, Any]) -> str:
    """The canonical JSON of a normalised answer: sorted keys, no spaces, unicode kept."""
    return json.dumps(answer, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class SampleDataset:
    """A client's dataset with its truth, ready to upload and to turn into a work order."""

    name: str
    rows: list[dict[str, Any]]
    media: dict[str, bytes]
    truth: Truth
    gold: list[str]
    columns: ColumnMapping
    label_schema: LabelSchema
    confusable: tuple[tuple[str, str], ...] = ()

    @property
    def task_type(self) -> TaskType:
        return self.truth.task_type

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows)

    def jsonl(self) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows).encode()

    def csv(self) -> bytes:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.rows[0]) if self.rows else [], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in self.rows)
        return buffer.getvalue().encode()

    def gold_rows(self) -> list[dict[str, Any]]:
        """Known-answer rows for the work order's gold file: item_id, answer (JSON) and label if any."""
        out = []
        for item_id in self.gold:
            answer = self.truth.answers[item_id]
            row: dict[str, Any] = {"item_id": item_id, "answer": answer_json(answer)}
            if "label" in answer:
                row["label"] = answer["label"]
            out.append(row)
        return out

    def gold_jsonl(self) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.gold_rows()).encode()


def _check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _pick(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Exactly ``round(share * n)`` of ``n`` positions, as a boolean mask."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: round(share * n)]] = True
    return mask


def _gold(rng: np.random.Generator, ids: Sequence[str], share: float, eligible: np.ndarray | None = None) -> list[str]:
    """``round(share * n)`` gold candidates, drawn from the eligible items first (clear-cut ones)."""
    _check_share("gold_share", share)
    order = rng.permutation(len(ids))
    if eligible is not None:
        order = np.concatenate([order[eligible[order]], order[~eligible[order]]])
    picked = sorted(order[: round(share * len(ids))])
    return [ids[i] for i in picked]


# --- images --------------------------------------------------------------------------------------

#: How each class is drawn: shape, RGB colour (saturated, so no background pixel has it) and
#: width / height ratio range.
SHAPES: dict[str, tuple[str, tuple[int, int, int], tuple[float, float]]] = {
    "car": ("rectangle", (214, 39, 40), (1.6, 2.4)),
    "person": ("ellipse", (31, 119, 180), (0.35, 0.55)),
    "bicycle": ("triangle", (44, 160, 44), (1.1, 1.5)),
    "truck": ("rectangle", (148, 103, 189), (2.2, 3.0)),
    "dog": ("ellipse", (255, 127, 14), (1.3, 1.8)),
    "tree": ("triangle", (23, 190, 207), (0.6, 0.9)),
}
IMAGE_CLASSES = ("car", "person", "bicycle")


@dataclass(frozen=True)
class DrawnObject:
    label: str
    left: int
    top: int
    right: int  # exclusive
    bottom: int  # exclusive

    @property
    def area(self) -> int:
        return (self.right - self.left) * (self.bottom - self.top)

    def percent(self, width: int, height: int) -> dict[str, Any]:
        """Label Studio's box: top-left corner and size in percent of the image."""
        return {
            "label": self.label,
            "x": round(100.0 * self.left / width, 4),
            "y": round(100.0 * self.top / height, 4),
            "width": round(100.0 * (self.right - self.left) / width, 4),
            "height": round(100.0 * (self.bottom - self.top) / height, 4),
        }


def _overlap(a: DrawnObject, b: DrawnObject) -> float:
    ix = max(0, min(a.right, b.right) - max(a.left, b.left))
    iy = max(0, min(a.bottom, b.bottom) - max(a.top, b.top))
    return ix * iy / min(a.area, b.area)


def _place(
    rng: np.random.Generator, label: str, size: tuple[int, int], scale: tuple[float, float], placed: list[DrawnObject]
) -> DrawnObject | None:
    width, height = size
    lo, hi = SHAPES[label][2]
    for _ in range(20):
        aspect = rng.uniform(lo, hi)
        area = rng.uniform(*scale) * width * height
        w = int(min(width - 2, max(8, math.sqrt(area * aspect))))
        h = int(min(height - 2, max(8, area / max(w, 1))))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        obj = DrawnObject(label, left, top, left + w, top + h)
        if all(_overlap(obj, other) < 0.25 for other in placed):
            return obj
    return None


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A grey scene: a sky-to-ground gradient, a horizon and some clutter lines (grey, never a class colour)."""
    width, height = size
    top, bottom = int(rng.integers(170, 235)), int(rng.integers(70, 130))
    column = np.linspace(top, bottom, height).astype(np.uint8)
    grey = np.repeat(np.repeat(column[:, None], width, axis=1)[:, :, None], 3, axis=2)
    image = Image.fromarray(grey, "RGB")
    draw = ImageDraw.Draw(image)
    horizon = int(rng.integers(height // 3, 2 * height // 3))
    draw.line([(0, horizon), (width, horizon)], fill=(90, 90, 90), width=2)
    for _ in range(int(rng.integers(2, 6))):
        x0, x1 = (int(v) for v in rng.integers(0, width, 2))
        y0, y1 = (int(v) for v in rng.integers(horizon, height, 2))
        g = int(rng.integers(60, 200))
        draw.line([(x0, y0), (x1, y1)], fill=(g, g, g), width=1)
    return image


def _draw(image: Image.Image, obj: DrawnObject) -> None:
    shape, colour, _ = SHAPES[obj.label]
    draw = ImageDraw.Draw(image)
    box = (obj.left, obj.top, obj.right - 1, obj.bottom - 1)
    if shape == "rectangle":
        draw.rectangle(box, fill=colour)
    elif shape == "ellipse":
        draw.ellipse(box, fill=colour)
    else:
        apex = ((obj.left + obj.right - 1) // 2, obj.top)
        draw.polygon([(obj.left, obj.bottom - 1), (obj.right - 1, obj.bottom - 1), apex], fill=colour)


def render_scene(
    rng: np.random.Generator,
    classes: Sequence[str],
    size: tuple[int, int],
    n_objects: int,
    *,
    dominant: str | None = None,
) -> tuple[bytes, list[DrawnObject]]:
    """A PNG of ``n_objects`` shapes on a grey scene, and the objects drawn (in drawing order).

    With ``dominant``, the first object is of that class and large (20-40 % of the image) and the others
    are small (2-6 %), so the image's class is clear-cut.
    """
    image = _background(rng, size)
    placed: list[DrawnObject] = []
    for i in range(n_objects):
        if dominant is not None:
            label, scale = (dominant, (0.2, 0.4)) if i == 0 else (str(rng.choice(classes)), (0.02, 0.06))
        else:
            label, scale = str(rng.choice(classes)), (0.03, 0.15)
        obj = _place(rng, label, size, scale, placed)
        if obj is not None:
            placed.append(obj)
    # The dominant object is drawn last so the small ones never hide it.
    order = placed[1:] + placed[:1] if dominant is not None else placed
    for obj in order:
        _draw(image, obj)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue(), placed


def _image_rows(
    rng: np.random.Generator, ids: list[str], keys: list[str], bucket: str, size: tuple[int, int]
) -> list[dict[str, Any]]:
    cameras = np.array(["gate-1", "gate-2", "yard-north", "yard-south"])
    start = pd.Timestamp("2026-10-01T06:00:00Z")
    seconds = np.sort(rng.integers(0, 30 * 24 * 3600, len(ids)))
    return [
        {
            "image_id": item_id,
            "image_uri": f"s3://{bucket}/{key}",
            "camera": str(rng.choice(cameras)),
            "captured_at": (start + pd.Timedelta(seconds=int(s))).isoformat(),
            "width": size[0],
            "height": size[1],
        }
        for item_id, key, s in zip(ids, keys, seconds, strict=True)
    ]


def _check_classes(classes: Sequence[str]) -> None:
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or len(classes) < 2:
        raise ValueError(f"image classes must be at least two of {sorted(SHAPES)}, got {list(classes)}")


def image_classification_dataset(
    n: int,
    *,
    seed: int = 0,
    classes: Sequence[str] = IMAGE_CLASSES,
    size: tuple[int, int] = (320, 240),
    bucket: str = DEFAULT_BUCKET,
    prefix: str = "acme/images",
    gold_share: float = 0.1,
) -> SampleDataset:
    """Images with one large object (the class) and up to two small distractors."""
    _check_classes(classes)
    rng = np.random.default_rng(seed)
    ids = [f"img-{i:05d}" for i in range(n)]
    keys = [f"{prefix.strip('/')}/{i}.png" for i in ids]
    media, answers, sizes = {}, {}, {}
    for item_id, key in zip(ids, keys, strict=True):
        label = str(rng.choice(classes))
        png, _ = render_scene(rng, classes, size, int(rng.integers(1, 4)), dominant=label)
        media[key] = png
        answers[item_id] = {"label": label}
        sizes[item_id] = size
    return SampleDataset(
        name="image_classification",
        rows=_image_rows(rng, ids, keys, bucket, size),
        media=media,
        truth=Truth(TaskType.IMAGE_CLASSIFICATION, answers, classes=tuple(classes), image_sizes=sizes),
        gold=_gold(rng, ids, gold_share),
        columns=ColumnMapping(item_id="image_id", media_uri="image_uri"),
        label_schema=LabelSchema(classes=list(classes)),
        confusable=((classes[0], classes[1]),),
    )


def object_detection_dataset(
    n: int,
    *,
    seed: int = 0,
    classes: Sequence[str] = IMAGE_CLASSES,
    size: tuple[int, int] = (320, 240),
    max_objects: int = 4,
    bucket: str = DEFAULT_BUCKET,
    prefix: str = "acme/scenes",
    gold_share: float = 0.1,
) -> SampleDataset:
    """Scenes of one to ``max_objects`` shapes; the truth is every object's box, in percent."""
    _check_classes(classes)
    if max_objects < 1:
        raise ValueError(f"max_objects must be at least 1, got {max_objects}")
    rng = np.random.default_rng(seed)
    ids = [f"scene-{i:05d}" for i in range(n)]
    keys = [f"{prefix.strip('/')}/{i}.png" for i in ids]
    media, answers, sizes, few = {}, {}, {}, np.zeros(n, dtype=bool)
    for j, (item_id, key) in enumerate(zip(ids, keys, strict=True)):
        png, objects = render_scene(rng, classes, size, int(rng.integers(1, max_objects + 1)))
        media[key] = png
        answers[item_id] = {"boxes": [o.percent(*size) for o in objects]}
        sizes[item_id] = size
        few[j] = len(objects) <= 2
    return SampleDataset(
        name="object_detection",
        rows=_image_rows(rng, ids, keys, bucket, size),
        media=media,
        truth=Truth(TaskType.OBJECT_DETECTION, answers, classes=tuple(classes), image_sizes=sizes),
        gold=_gold(rng, ids, gold_share, eligible=few),
        columns=ColumnMapping(item_id="image_id", media_uri="image_uri"),
        label_schema=LabelSchema(classes=list(classes)),
        confusable=((classes[0], classes[1]),),
    )


# --- texts ---------------------------------------------------------------------------------------

TextKind = Literal["sentiment", "topic", "moderation"]

_NAMES = ("Wanjiru", "Otieno", "José", "Zoë", "Amina", "Chloé", "Mwangi", "Fatuma", "Björn", "Nadia", "Ọlá", "Hodan")
_PLACES = ("Nairobi", "Mombasa", "Kisumu", "Dadaab", "Eldoret", "Zürich", "São Paulo", "Garissa", "Nakuru")
_PRODUCTS = ("the solar lamp", "my M-Pesa transfer", "the delivery", "the phone case", "the maize flour", "the app")

_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "sentiment": {
        "positive": (
            "I love {product}, it works perfectly! 🙂",
            "Asante sana, {name} in {place} was so helpful.",
            "Great service from {place}, {product} arrived early.",
            "Excellent quality, {product} is worth every shilling.",
            "{name} fixed everything in five minutes — brilliant.",
        ),
        "negative": (
            "{product} broke after two days, very disappointed. 😡",
            "Terrible service in {place}, nobody answered my calls.",
            "I want a refund: {product} never arrived.",
            "Worst experience ever, {name} was rude to me.",
            "Pole sana to myself, {product} is a waste of money.",
        ),
        "neutral": (
            "I bought {product} in {place} last week.",
            "{name} said the shop opens at 9 on Monday.",
            "Is {product} available in {place}?",
            "The order number for {product} is {number}.",
            "I collected {product} from the {place} branch.",
        ),
    },
    "topic": {
        "billing": (
            "I was charged twice for {product}.",
            "Why is my invoice {number} higher than last month?",
            "Please refund the fee for {product}, {name}.",
        ),
        "delivery": (
            "{product} is still not delivered to {place}.",
            "The rider could not find my house in {place}.",
            "Can you deliver {product} before Friday?",
        ),
        "technical": (
            "{product} shows an error when I log in.",
            "The screen stays black after the update.",
            "{name} says the app crashes on Android in {place}.",
        ),
        "account": (
            "Please change the phone number on my account.",
            "I forgot my PIN, {name} could not reset it.",
            "How do I close my account in {place}?",
        ),
    },
    "moderation": {
        "ok": (
            "Thanks {name}, see you in {place} tomorrow.",
            "Does anyone know if {product} comes in blue?",
            "The meeting in {place} moved to 3 pm.",
        ),
        "spam": (
            "WIN BIG!!! Click http://win-{number}.example now 💰💰",
            "Cheap {product} — send 500 to {number} today only!!!",
            "Earn $$$ from home, DM {name} for the secret 🔥",
        ),
        "abusive": (
            "{name} you are an idiot, get lost.",
            "People from {place} are all thieves.",
            "Shut up {name}, nobody wants you here.",
        ),
    },
}


def text_classification_dataset(
    n: int,
    *,
    seed: int = 0,
    kind: TextKind = "sentiment",
    gold_share: float = 0.1,
) -> SampleDataset:
    """Short customer texts from templates with clear labels (some emoji and non-ASCII names)."""
    if kind not in _TEMPLATES:
        raise ValueError(f"kind must be one of {sorted(_TEMPLATES)}, got {kind!r}")
    templates = _TEMPLATES[kind]
    classes = tuple(templates)
    rng = np.random.default_rng(seed)
    ids = [f"msg-{i:05d}" for i in range(n)]
    channels = np.array(["sms", "whatsapp", "email", "web"])
    rows, answers = [], {}
    for item_id in ids:
        label = str(rng.choice(classes))
        template = str(rng.choice(np.array(templates[label])))
        text = template.format(
            name=str(rng.choice(_NAMES)),
            place=str(rng.choice(_PLACES)),
            product=str(rng.choice(_PRODUCTS)),
            number=int(rng.integers(1000, 99999)),
        )
        rows.append({"message_id": item_id, "text": text, "channel": str(rng.choice(channels))})
        answers[item_id] = {"label": label}
    return SampleDataset(
        name=f"text_{kind}",
        rows=rows,
        media={},
        truth=Truth(TaskType.TEXT_CLASSIFICATION, answers, classes=classes),
        gold=_gold(rng, ids, gold_share),
        columns=ColumnMapping(item_id="message_id", text="text"),
        label_schema=LabelSchema(classes=list(classes)),
        confusable=((classes[0], classes[-1]),),
    )


# --- listings ------------------------------------------------------------------------------------

LISTING_FIELDS = (
    FieldSpec(name="business_name", kind=FieldKind.TEXT, required=True),
    FieldSpec(name="phone", kind=FieldKind.PHONE, required=True),
    FieldSpec(name="email", kind=FieldKind.EMAIL),
    FieldSpec(name="website", kind=FieldKind.URL),
)
_OWNERS = ("Mama Njeri", "Baraka", "Kamau", "Wafula", "Halima", "Achieng", "Abdi", "Nyambura", "Omondi", "Zawadi")
_TRADES = (
    ("Hardware", "hardware"),
    ("Salon & Spa", "salon"),
    ("Pharmacy", "pharmacy"),
    ("Butchery", "butchery"),
    ("Cyber Café", "cyber"),
    ("Tailoring", "tailor"),
    ("Auto Spares", "autospares"),
    ("Mini-Mart", "minimart"),
)
_AREAS = ("Eastleigh", "Kibera", "Githurai", "Westlands", "Kawangware", "Likoni", "Ifo", "Hagadera", "Kondele")
_TLDS = (".co.ke", ".com", ".ke")


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _phone(rng: np.random.Generator) -> str:
    return f"+2547{int(rng.integers(0, 100_000_000)):08d}"


def _listing(rng: np.random.Generator) -> tuple[dict[str, str | None], str, str]:
    owner = str(rng.choice(_OWNERS))
    trade, trade_slug = _TRADES[int(rng.integers(len(_TRADES)))]
    area = str(rng.choice(_AREAS))
    name = f"{owner} {trade} {area}"
    domain = f"{_slug(owner)}{trade_slug}{rng.choice(_TLDS)}"
    has_email, has_site = rng.random() < 0.85, rng.random() < 0.6
    values: dict[str, str | None] = {
        "business_name": name,
        "phone": _phone(rng),
        "email": f"info@{domain}" if has_email else None,
        "website": f"https://www.{domain}" if has_site else None,
    }
    return values, trade, area


def _stale(rng: np.random.Generator, truth: Mapping[str, str | None]) -> dict[str, str | None]:
    """What the client has on file when it is out of date: one or two fields from an older time."""
    shown = dict(truth)
    changeable = ["phone", "business_name"] + [f for f in ("email", "website") if truth[f]]
    for name in rng.choice(np.array(changeable), int(rng.integers(1, 3)), replace=False):
        value = truth[str(name)]
        assert value is not None
        if name == "phone":
            shown["phone"] = _phone(rng)
        elif name == "business_name":
            shown["business_name"] = value.rsplit(" ", 1)[0] + " " + str(rng.choice(_AREAS))
            if shown["business_name"] == value:
                shown["business_name"] = value + " Ltd"
        elif name == "email":
            shown["email"] = value.replace("info@", "sales@")
        else:
            shown["website"] = value.replace("https://www.", "http://old.")
    return shown


def listing_verification_dataset(
    n: int,
    *,
    seed: int = 0,
    stale_share: float = 0.3,
    closed_share: float = 0.1,
    gold_share: float = 0.1,
) -> SampleDataset:
    """Business listings to verify: exactly ``round(stale_share * n)`` rows show an outdated value in one or
    two fields, and ``round(closed_share * n)`` (other) rows are businesses that have closed.

    The truth of a stale row holds the current values; a closed business keeps its last values and has
    ``listing_valid`` false.
    """
    _check_share("stale_share", stale_share)
    _check_share("closed_share", closed_share)
    if stale_share + closed_share > 1.0:
        raise ValueError("stale_share + closed_share must be at most 1")
    rng = np.random.default_rng(seed)
    ids = [f"lst-{i:05d}" for i in range(n)]
    order = rng.permutation(n)
    n_stale, n_closed = round(stale_share * n), round(closed_share * n)
    stale = np.zeros(n, dtype=bool)
    closed = np.zeros(n, dtype=bool)
    stale[order[:n_stale]] = True
    closed[order[n_stale : n_stale + n_closed]] = True
    rows, answers = [], {}
    for j, item_id in enumerate(ids):
        truth, trade, area = _listing(rng)
        shown = _stale(rng, truth) if stale[j] else dict(truth)
        rows.append({"listing_id": item_id, **shown, "category": trade, "area": area})
        answers[item_id] = {"fields": truth, "listing_valid": not bool(closed[j])}
    return SampleDataset(
        name="listing_verification",
        rows=rows,
        media={},
        truth=Truth(TaskType.LISTING_VERIFICATION, answers, fields=LISTING_FIELDS),
        gold=_gold(rng, ids, gold_share),
        columns=ColumnMapping(item_id="listing_id", fields={f.name: f.name for f in LISTING_FIELDS}),
        label_schema=LabelSchema(fields=list(LISTING_FIELDS)),
    )


# --- audio ---------------------------------------------------------------------------------------

_PHRASES = (
    "please deliver {count} bags of {goods} to {place}",
    "the {goods} arrived in {place} this morning",
    "call me back about the {goods} order",
    "habari yako, the {goods} are ready in {place}",
    "we need {count} more crates of {goods}",
    "the truck to {place} leaves at {count} o'clock",
)
_GOODS = ("maize", "rice", "beans", "sugar", "cooking oil", "soap", "water", "blankets")
_COUNTS = ("two", "three", "four", "five", "six", "ten", "twelve")


def tone_wav(words: Sequence[str], *, sample_rate: int = 8000, seed: int = 0) -> bytes:
    """A mono 16-bit WAV with one tone burst per word (pitch from the word, length from its size), with
    pauses between words: audio that any player (and Label Studio's Audio tag) loads."""
    rng = np.random.default_rng(seed)
    pieces = [np.zeros(int(0.15 * sample_rate))]
    for word in words:
        duration = min(0.6, 0.12 + 0.05 * len(word))
        t = np.arange(int(duration * sample_rate)) / sample_rate
        freq = 220.0 + (zlib.crc32(word.encode()) % 600)
        envelope = np.sin(np.pi * t / duration) ** 2
        pieces.append(0.5 * envelope * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size))
        pieces.append(np.zeros(int(rng.uniform(0.06, 0.2) * sample_rate)))
    signal = np.clip(np.concatenate(pieces), -1.0, 1.0)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes((signal * 32767).astype("<i2").tobytes())
    return out.getvalue()


def audio_transcription_dataset(
    n: int,
    *,
    seed: int = 0,
    sample_rate: int = 8000,
    bucket: str = DEFAULT_BUCKET,
    prefix: str = "acme/calls",
    gold_share: float = 0.1,
) -> SampleDataset:
    """Short voice-note-like clips (tone bursts, one per word) with their transcript as truth."""
    rng = np.random.default_rng(seed)
    ids = [f"clip-{i:05d}" for i in range(n)]
    speakers = np.array(["caller-a", "caller-b", "depot", "driver"])
    rows, media, answers = [], {}, {}
    for item_id in ids:
        text = str(rng.choice(np.array(_PHRASES))).format(
            count=str(rng.choice(_COUNTS)), goods=str(rng.choice(_GOODS)), place=str(rng.choice(_PLACES))
        )
        key = f"{prefix.strip('/')}/{item_id}.wav"
        data = tone_wav(text.split(), sample_rate=sample_rate, seed=int(rng.integers(2**31)))
        media[key] = data
        duration = (len(data) - 44) / (2 * sample_rate)
        rows.append(
            {
                "clip_id": item_id,
                "audio_uri": f"s3://{bucket}/{key}",
                "speaker": str(rng.choice(speakers)),
                "duration_s": round(duration, 2),
            }
        )
        answers[item_id] = {"text": text}
    return SampleDataset(
        name="audio_transcription",
        rows=rows,
        media=media,
        truth=Truth(TaskType.AUDIO_TRANSCRIPTION, answers),
        gold=_gold(rng, ids, gold_share),
        columns=ColumnMapping(item_id="clip_id", media_uri="audio_uri"),
        label_schema=LabelSchema(),
    )


def sample_dataset(task_type: TaskType, n: int, *, seed: int = 0, **kwargs: Any) -> SampleDataset:
    """The sample dataset of a task type (keyword arguments go to its generator)."""
    makers = {
        TaskType.IMAGE_CLASSIFICATION: image_classification_dataset,
        TaskType.OBJECT_DETECTION: object_detection_dataset,
        TaskType.TEXT_CLASSIFICATION: text_classification_dataset,
        TaskType.LISTING_VERIFICATION: listing_verification_dataset,
        TaskType.AUDIO_TRANSCRIPTION: audio_transcription_dataset,
    }
    maker: Any = makers[task_type]
    result: SampleDataset = maker(n, seed=seed, **kwargs)
    return result
