"""The data card README: sections, figures, escaping, no personal data."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.core.models import WorkOrder
from flows.deliver.data_card import Workforce, confidence_table, render_data_card, summarise_workforce

pytestmark = pytest.mark.unit

WORK_ORDER = WorkOrder.model_validate(
    {
        "id": "acme-0042",
        "client_id": "acme",
        "source": {"uri": "s3://acme-in/batch", "format": "csv"},
        "task_type": "image_classification",
        "columns": {"media_uri": "url"},
        "label_schema": {"classes": ["cat", "dog|wolf"]},
        "instructions": "Pick the animal.\n\nIgnore <b>toys</b> | stuffed animals.",
        "overlap": 3,
        "gold": {"rate": 0.05},
        "deadline": "2026-12-01T00:00:00Z",
        "price_per_item": 0.1,
        "pay_per_task": 0.03,
        "delivery": {"uri": "s3://acme-out/labels"},
    }
)

DELIVERED = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d"],
        "label": ["cat", "cat", "dog|wolf", "cat"],
        "confidence": [0.95, 0.8, 0.6, 1.0],
        "n_annotators": [3, 3, 5, 1],
        "method": ["dawid_skene"] * 4,
    }
)
COUNTS = {
    "accepted": 6,
    "delivered": 4,
    "reworked_and_delivered": 1,
    "excluded": 2,
    "excluded_by_reason": {"failed_qa": 1, "no_answer": 1},
}
FILES = [{"name": "labels.jsonl", "rows": 4, "size": 1234, "sha256": "ab" * 32}]


def card(**overrides: object) -> str:
    args: dict = {
        "version": "v1",
        "counts": COUNTS,
        "delivered": DELIVERED,
        "workforce": Workforce(sites=2, countries=("KE", "UG"), workers=17),
        "agreement": 0.812,
        "gold_accuracy": 0.934,
        "files": FILES,
        "limits": ["Night-time images are few."],
    }
    args.update(overrides)
    return render_data_card(WORK_ORDER, **args)


def test_card_has_every_section_and_the_key_figures() -> None:
    text = card()
    for heading in [
        "## What was labelled",
        "## How it was labelled",
        "## Who labelled it",
        "## Quality",
        "## Counts",
        "## Files",
        "## Known limits",
    ]:
        assert heading in text
    assert text.startswith("# acme / acme-0042: labelled data, version v1")
    assert "Items delivered: **4**" in text
    assert "answered independently by **3** annotator(s)" in text
    assert "Dawid-Skene" in text
    assert "About **5%** of tasks were gold tasks" in text
    assert "17 trained annotators at 2 impact-sourcing partner site(s), in KE, UG." in text
    assert "Krippendorff's alpha): 0.812 (work order threshold 0.50)" in text
    assert "Accuracy on gold tasks: 93.4%" in text
    assert "| Accepted | 6 |" in text and "| Excluded: failed\\_qa | 1 |" in text
    assert f"| `labels.jsonl` | 4 | 1,234 | `{'ab' * 32}` |" in text
    assert "- Night-time images are few." in text


def test_card_explains_csv_escaping_only_when_a_csv_is_delivered() -> None:
    assert "single quote" not in card()
    csv_file = {"name": "labels.csv", "rows": 4, "size": 99, "sha256": "cd" * 32}
    assert "has a single quote (`'`) put in front" in card(files=[*FILES, csv_file])


def test_card_derives_limits_from_the_data() -> None:
    text = card()
    assert "2 accepted item(s) are not in this delivery" in text
    assert "1 delivered item(s) have confidence below 0.70." in text
    assert "1 item(s) rest on a single answer" in text


def test_card_escapes_client_text() -> None:
    text = card()
    assert "> Ignore \\<b\\>toys\\</b\\> \\| stuffed animals." in text
    assert "| dog\\|wolf | 1 | 25.0% |" in text
    assert "`dog|wolf`" in text


def test_card_is_reproducible_and_dates_only_when_asked() -> None:
    assert card() == card()
    assert "Generated" not in card()
    assert "Generated 2026-11-01." in card(generated_at="2026-11-01")


def test_card_without_quality_measurements() -> None:
    text = card(agreement=None, gold_accuracy=None)
    assert "Krippendorff's alpha): not measured" in text
    assert "Accuracy on gold tasks: not measured" in text


def test_confidence_table_bands_include_one_in_the_top_band() -> None:
    table = confidence_table(pd.Series([0.1, 0.5, 0.69, 0.7, 0.95, 1.0, None]))
    assert table["band"].tolist() == ["0.00–0.50", "0.50–0.70", "0.70–0.90", "0.90–1.00", "not computed"]
    assert table["items"].tolist() == [1, 2, 1, 2, 1]
    assert table["share"].sum() == pytest.approx(1.0)


def test_summarise_workforce_counts_without_names() -> None:
    log = pd.DataFrame({"site_id": ["s1", "s1", "s2", "s2"], "annotator": ["p1", "p1", "p1", "p2"]})
    summary = summarise_workforce(log, {"s1": "KE", "s2": "KE", "s3": "UG"})
    assert summary == Workforce(sites=2, countries=("KE",), workers=3)
