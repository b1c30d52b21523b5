from __future__ import annotations

import io
import json
import wave
from datetime import datetime

import numpy as np
import pyarrow.json as pj
import pytest
from PIL import Image

from flows.core.models import TaskType, WorkOrder
from flows.split.label_configs import render_label_config
from simulation.datasets import (
    LISTING_FIELDS,
    SHAPES,
    SampleDataset,
    audio_transcription_dataset,
    image_classification_dataset,
    listing_verification_dataset,
    object_detection_dataset,
    sample_dataset,
    text_classification_dataset,
    tone_wav,
)

pytestmark = pytest.mark.unit


def _pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def _colour_mask(pixels: np.ndarray, label: str) -> np.ndarray:
    return (pixels == np.array(SHAPES[label][1], dtype=np.uint8)).all(axis=2)


def _box_mask(shape: tuple[int, ...], boxes: list[dict[str, float]]) -> np.ndarray:
    height, width = shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    for b in boxes:
        left, top = round(b["x"] * width / 100), round(b["y"] * height / 100)
        right, bottom = round((b["x"] + b["width"]) * width / 100), round((b["y"] + b["height"]) * height / 100)
        mask[top:bottom, left:right] = True
    return mask


def test_detection_pngs_decode_and_objects_sit_inside_their_truth_boxes() -> None:
    data = object_detection_dataset(30, seed=1)
    assert len(data.rows) == 30 and len(data.media) == 30
    for row in data.rows:
        key = row["image_uri"].removeprefix("s3://kazi-demo-client/")
        pixels = _pixels(data.media[key])
        assert pixels.shape == (240, 320, 3)
        boxes = data.truth.answers[row["image_id"]]["boxes"]
        assert boxes
        for label in {b["label"] for b in boxes}:
            own = [b for b in boxes if b["label"] == label]
            colour = _colour_mask(pixels, label)
            # Every pixel of the class colour lies in a box of that class ...
            assert not (colour & ~_box_mask(pixels.shape, own)).any()
            # ... and every box holds its object, visible.
            for b in own:
                assert (colour & _box_mask(pixels.shape, [b])).sum() > 0.3 * b["width"] * b["height"] * 320 * 240 / 1e4
        assert all(b["x"] >= 0 and b["x"] + b["width"] <= 100 and b["y"] + b["height"] <= 100 for b in boxes)
        assert data.truth.image_sizes[row["image_id"]] == (320, 240)


def test_classification_images_show_their_class_most() -> None:
    data = image_classification_dataset(30, seed=2, classes=("car", "person", "bicycle", "dog"))
    for row in data.rows:
        pixels = _pixels(data.media[row["image_uri"].split("/", 3)[3]])
        label = data.truth.answers[row["image_id"]]["label"]
        counts = {c: int(_colour_mask(pixels, c).sum()) for c in data.truth.classes}
        assert max(counts, key=counts.__getitem__) == label
        assert counts[label] > 0.08 * 320 * 240  # a triangle fills half its 20-40 % box


def test_wav_clips_parse_with_the_wave_module() -> None:
    data = audio_transcription_dataset(5, seed=3, sample_rate=8000)
    for row in data.rows:
        with wave.open(io.BytesIO(data.media[row["audio_uri"].split("/", 3)[3]])) as wav:
            assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
            assert wav.getnframes() / 8000 == pytest.approx(row["duration_s"], abs=0.01)
            frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        assert np.abs(frames).max() > 10_000  # real tones, not silence
        assert data.truth.answers[row["clip_id"]]["text"]


def test_tone_wav_length_grows_with_words() -> None:
    short, long = tone_wav(["hi"]), tone_wav(["hi", "there", "friend"])
    assert len(long) > len(short) > 44


@pytest.mark.parametrize(("n", "stale_share", "closed_share"), [(50, 0.3, 0.1), (40, 0.0, 0.25), (33, 0.5, 0.0)])
def test_listing_truth_differs_in_the_configured_share(n: int, stale_share: float, closed_share: float) -> None:
    data = listing_verification_dataset(n, seed=4, stale_share=stale_share, closed_share=closed_share)
    names = [f.name for f in LISTING_FIELDS]
    stale, closed = set(), set()
    for row in data.rows:
        truth = data.truth.answers[row["listing_id"]]
        if any(row[name] != truth["fields"][name] for name in names):
            stale.add(row["listing_id"])
        if not truth["listing_valid"]:
            closed.add(row["listing_id"])
    assert len(stale) == round(stale_share * n)
    assert len(closed) == round(closed_share * n)
    assert not stale & closed
    assert data.columns.fields == {name: name for name in names}


def test_text_dataset_labels_and_unicode() -> None:
    data = text_classification_dataset(200, seed=5)
    assert set(data.truth.classes) == {"positive", "negative", "neutral"}
    assert {a["label"] for a in data.truth.answers.values()} == set(data.truth.classes)
    assert any(not r["text"].isascii() for r in data.rows)
    topic = text_classification_dataset(20, seed=5, kind="moderation")
    assert set(topic.truth.classes) == {"ok", "spam", "abusive"}


@pytest.mark.parametrize("task_type", list(TaskType))
def test_datasets_are_deterministic_for_a_seed(task_type: TaskType) -> None:
    first, again, other = (sample_dataset(task_type, 12, seed=s) for s in (7, 7, 8))
    assert first.rows == again.rows and first.media == again.media and first.truth == again.truth
    assert first.gold == again.gold
    assert first.rows != other.rows


@pytest.mark.parametrize("task_type", list(TaskType))
def test_datasets_fit_a_work_order_and_its_label_config(task_type: TaskType) -> None:
    data = sample_dataset(task_type, 20, seed=1, gold_share=0.2)
    work_order = WorkOrder(
        id="acme-0001",
        client_id="acme",
        source={"uri": "s3://kazi-demo-client/acme/in.jsonl", "format": "jsonl"},
        task_type=task_type,
        columns=data.columns,
        label_schema=data.label_schema,
        deadline=datetime(2027, 1, 1),
        price_per_item=0.1,
        pay_per_task=0.02,
        delivery={"uri": "s3://kazi-demo-client/acme/out"},
    )
    assert "<View>" in render_label_config(work_order)
    item_col = data.columns.item_id
    assert item_col is not None
    assert [r[item_col] for r in data.rows] == list(data.truth.answers)
    # Client files: JSONL reads back with pyarrow, CSV has a header and one line per row.
    table = pj.read_json(io.BytesIO(data.jsonl()))
    assert table.num_rows == 20 and item_col in table.column_names
    assert data.csv().decode().count("\n") == 21
    assert data.table().num_rows == 20
    assert len(data.gold) == 4 and set(data.gold) <= set(data.truth.answers)
    for row in data.gold_rows():
        assert json.loads(row["answer"]) == data.truth.answers[row["item_id"]]
    frame = data.truth.frame()
    assert list(frame.columns) == ["item_id", "answer", "label"] and len(frame) == 20


def test_detection_gold_prefers_simple_scenes() -> None:
    data = object_detection_dataset(40, seed=9, gold_share=0.1)
    assert all(len(data.truth.answers[i]["boxes"]) <= 2 for i in data.gold)


def test_media_keys_follow_bucket_and_prefix() -> None:
    data: SampleDataset = image_classification_dataset(3, seed=1, bucket="client-bucket", prefix="/acme/batch-7/")
    assert sorted(data.media) == [f"acme/batch-7/img-0000{i}.png" for i in range(3)]
    assert data.rows[0]["image_uri"] == "s3://client-bucket/acme/batch-7/img-00000.png"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: text_classification_dataset(5, kind="weather"), "kind"),  # type: ignore[arg-type]
        (lambda: listing_verification_dataset(5, stale_share=1.2), "stale_share"),
        (lambda: listing_verification_dataset(5, stale_share=0.7, closed_share=0.5), "at most 1"),
        (lambda: image_classification_dataset(5, classes=("car", "spaceship")), "image classes"),
        (lambda: image_classification_dataset(5, classes=("car",)), "image classes"),
        (lambda: object_detection_dataset(5, max_objects=0), "max_objects"),
        (lambda: text_classification_dataset(5, gold_share=2.0), "gold_share"),
    ],
)
def test_dataset_errors(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]
