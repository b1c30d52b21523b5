import base64
import io
import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flows.core.models import WorkOrder
from flows.qa import charts
from flows.qa.agreement import krippendorff_alpha, per_group
from flows.qa.report import (
    QAReport,
    agreement_by,
    answers_vs_reference,
    collect_report,
    confusion_matrix,
    exclusion_reasons,
    gold_accuracy_trend,
    render_qa_markdown,
    render_qa_report,
    top_confusions,
)
from flows.qa.rework import select_rework
from flows.qa.scores import annotator_scores, site_scores
from flows.qa.validate import ExpectationOutcome, ValidationOutcome

pytestmark = pytest.mark.unit

CLASSES = ["cat", "dog", "bird"]
DATA_DOCS = "https://s3.example.org/kazi/acme-0042/qa/round=0/data-docs/index.html?X-Amz-Signature=ab&X-Amz-Expires=60"
LS_PROJECT = "http://127.0.0.1:28380/projects/7"


def make_work_order() -> WorkOrder:
    return WorkOrder.model_validate(
        {
            "id": "acme-0042",
            "client_id": "acme",
            "source": {"uri": "s3://client-in/batch-1", "format": "csv"},
            "task_type": "image_classification",
            "columns": {"media_uri": "uri"},
            "label_schema": {"classes": CLASSES},
            "deadline": datetime(2026, 12, 1, tzinfo=UTC),
            "price_per_item": 0.1,
            "pay_per_task": 0.02,
            "delivery": {"uri": "s3://client-out/acme-0042"},
            "qa": {"min_confidence": 0.7, "min_gold_accuracy": 0.8, "min_agreement": 0.5},
        }
    )


def make_log() -> pd.DataFrame:
    """Two sites; ``kib-03`` (at nairobi-kibera) answers at random; g1..g2 are gold items."""
    start = pd.Timestamp("2026-11-20 08:00", tz="UTC")
    rows = [
        # item, site, annotator, label, minutes after start
        ("i1", "nairobi-kibera", "kib-01", "cat", 0), ("i1", "nairobi-kibera", "kib-02", "cat", 5),
        ("i1", "nairobi-kibera", "kib-03", "bird", 9),
        ("i2", "nairobi-kibera", "kib-01", "dog", 20), ("i2", "nairobi-kibera", "kib-02", "dog", 25),
        ("i2", "nairobi-kibera", "kib-03", "cat", 27),
        ("i3", "gulu-north", "gul-01", "cat", 60), ("i3", "gulu-north", "gul-02", "dog", 65),
        ("i3", "gulu-north", "gul-03", "bird", 70),
        ("i4", "gulu-north", "gul-01", "bird", 120), ("i4", "gulu-north", "gul-02", "bird", 125),
        ("i4", "gulu-north", "gul-03", "bird", 130),
        ("g1", "nairobi-kibera", "kib-01", "cat", 30), ("g1", "nairobi-kibera", "kib-02", "cat", 35),
        ("g1", "nairobi-kibera", "kib-03", "dog", 40),
        ("g2", "gulu-north", "gul-01", "dog", 180), ("g2", "gulu-north", "gul-02", "dog", 185),
        ("g2", "gulu-north", "gul-03", "cat", 190),
    ]  # fmt: skip
    return pd.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "batch_id": ["b-kib" if r[1] == "nairobi-kibera" else "b-gul" for r in rows],
            "site_id": [r[1] for r in rows],
            "annotator": [r[2] for r in rows],
            "label": [r[3] for r in rows],
            "answer": [json.dumps({"label": r[3]}) for r in rows],
            "skipped": [False] * len(rows),
            "lead_time_s": [12.0 + k for k in range(len(rows))],
            "created_at": [start + pd.Timedelta(minutes=r[4]) for r in rows],
            "updated_at": [start + pd.Timedelta(minutes=r[4] + 1) for r in rows],
        }
    )


GOLD = pd.Series({"g1": "cat", "g2": "dog"})
CONSOLIDATED = pd.DataFrame(
    {
        "item_id": ["i1", "i2", "i3", "i4", "g1", "g2"],
        "answer": [json.dumps({"label": v}) for v in ["cat", "dog", "cat", "bird", "cat", "dog"]],
        "label": ["cat", "dog", "cat", "bird", "cat", "dog"],
        "confidence": [0.97, 0.95, 0.41, 0.99, 1.0, 1.0],
        "n_annotators": [3, 3, 3, 3, 3, 3],
        "method": ["dawid_skene"] * 6,
        "sites": ["nairobi-kibera", "nairobi-kibera", "gulu-north", "gulu-north", "nairobi-kibera", "gulu-north"],
        "needs_rework": [False, False, True, False, False, False],
    }
)


def make_report(**over: Any) -> QAReport:
    work_order = make_work_order()
    log = make_log()
    excluded = ["kib-03"]
    rework = select_rework(
        CONSOLIDATED, log, work_order.qa, min_answers=3, excluded_annotators=excluded, gold_items=GOLD.index
    )
    kept = log[~log["annotator"].isin(excluded)]
    people = annotator_scores(log, CONSOLIDATED, GOLD, rework["item_id"])
    sites = site_scores(kept, CONSOLIDATED, GOLD, rework["item_id"])
    validation = ValidationOutcome(
        success=False,
        results=(
            ExpectationOutcome("expect_column_values_to_be_unique(item_id)", "output", True, unexpected_count=0),
            ExpectationOutcome(
                "expect_column_values_to_be_between(confidence)",
                "output",
                False,
                unexpected_count=1,
                examples=(1.2,),
                description="confidence between 0 and 1",
            ),
        ),
    )
    args: dict[str, Any] = {
        "round": 0,
        "passed": False,
        "items": 4,
        "consolidated": CONSOLIDATED,
        "rework": rework,
        "log": log,
        "site_scores": sites,
        "annotator_scores": people,
        "excluded": {"kib-03": "gold accuracy 0% (0 of 1 gold items right), below 80%"},
        "alpha": 0.42,
        "gold": GOLD,
        "validation": validation,
        "data_docs_url": DATA_DOCS,
        "label_studio_projects": {"nairobi-kibera round 0": LS_PROJECT},
        "progress": pd.DataFrame({"site_id": ["nairobi-kibera", "gulu-north"], "done": [9, 6], "total": [9, 12]}),
        "generated_at": datetime(2026, 11, 21, 9, 30, tzinfo=UTC),
    }
    args.update(over)
    return collect_report(work_order, **args)


class Page(HTMLParser):
    """What a reader (and a browser) would load from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.rows: list[list[str]] = []
        self.row_classes: list[str] = []
        self._row: list[str] | None = None
        self._ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "img":
            self.images.append(a)
        if "href" in a:
            self.links.append(a["href"])
        if "src" in a and tag != "img":
            self.links.append(a["src"])
        if "id" in a:
            self._ids.append(a["id"])
        if tag == "tr":
            self._row = []
            self.row_classes.append(a.get("class", ""))
            self.rows.append(self._row)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())
            if self._row is not None:
                self._row.append(data.strip())

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def assert_png(data: bytes) -> tuple[int, int]:
    assert data.startswith(charts.PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


# --- The HTML report ------------------------------------------------------------------------------


def test_report_renders_a_realistic_case() -> None:
    page = parse(render_qa_report(make_report()))
    text = page.all_text
    assert "FAILED" in text
    assert "Quality report: work order acme-0042" in text
    for site in ("nairobi-kibera", "gulu-north"):
        assert site in text
    assert "Krippendorff's alpha within each batch: 1 = perfect agreement, 0 = no better than chance" in text
    # The flagged annotator: highlighted, marked EXCLUDED, with the reason.
    flagged = [row for row, cls in zip(page.rows, page.row_classes, strict=True) if row and row[0] == "kib-03"]
    assert len(flagged) == 1 and page.row_classes[page.rows.index(flagged[0])] == "bad"
    assert "EXCLUDED" in flagged[0] and "gold accuracy 0% (0 of 1 gold items right), below 80%" in flagged[0]
    # A failing check is named, with what it checks and how many rows fail.
    assert "expect_column_values_to_be_between(confidence)" in text and "confidence between 0 and 1" in text
    # The rework queue: the uncertain item, with the reasons in words.
    why = {row[0]: row[1] for row in page.rows if len(row) == 4 and row[0] in {"i1", "i2", "i3"}}
    assert why == {
        "i3": "the consensus answer is uncertain; the annotators disagree: no answer has a majority",
        "i1": "answers by excluded annotators were removed, leaving too few",
        "i2": "answers by excluded annotators were removed, leaving too few",
    }


def test_report_is_self_contained() -> None:
    page = parse(render_qa_report(make_report()))
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert len(page.images) == 4  # scorecard, progress, confusion, confidence
    # Five gold answers that count (kib-03 is excluded) make no trend: a sentence says so instead of a chart.
    assert "Only 5 gold answers so far, given between 08:30 and 11:10 UTC on 20 Nov 2026: too few" in page.all_text
    for image in page.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        width, height = assert_png(base64.b64decode(image["src"][len(prefix) :]))
        assert width > 200 and height > 100
        assert image["alt"]
    external = [u for u in page.links if u.lower().startswith(("http://", "https://", "//"))]
    assert sorted(external) == sorted([DATA_DOCS, LS_PROJECT])  # parsed back: &amp; is &


@pytest.mark.parametrize(
    ("over", "verdict"),
    [
        ({"passed": True}, "PASSED"),
        ({"passed": False}, "FAILED"),
        (
            {"passed": False, "approved_by": "Amina Njeri", "approval_comment": "Site re-trained."},
            "APPROVED BY Amina Njeri",
        ),
    ],
)
def test_verdict(over: dict[str, Any], verdict: str) -> None:
    report = make_report(**over)
    assert report.verdict == verdict
    page = parse(render_qa_report(report))
    assert verdict in page.text  # a text node of its own: the banner
    assert page.text[page.text.index(verdict) + 1] == report_line(over)
    assert f"QA report: acme-0042 (round 0): {verdict}" in page.text
    if "approval_comment" in over:
        assert "Comment: “Site re-trained.”" in page.all_text


def report_line(over: dict[str, Any]) -> str:
    # Round 0 of at most 2 review rounds, with 3 items to rework: they go to round 1 before anything is delivered.
    then = " 3 items go to review round 1 first, and QA runs again after it."
    if "approved_by" in over:
        return "Amina Njeri approved these results although some checks failed." + then
    if over["passed"]:
        return (
            "Every check passed so far. 3 items go to review round 1 first; the results are delivered after QA of "
            "that round."
        )
    return (
        "Some checks failed (marked FAIL below). The results are held until they pass or a QA lead approves them."
        + then
    )


def test_key_figures() -> None:
    report = make_report()
    assert report.ready == 3  # i1, i2 lost kib-03's answers and i3 is uncertain: all three wait for rework
    assert report.gold_accuracy == pytest.approx(4 / 5)  # answers that count: 2 of 2 on g1, 2 of 3 on g2
    page = parse(render_qa_report(report))
    figures = page.text[page.text.index("Key figures") + 1 :][:15]
    assert figures[:3] == ["4", "Items", "items accepted into this work order"]
    assert "0.42" in figures and "Rework queue" in figures


def test_text_from_data_is_escaped() -> None:
    report = make_report(
        excluded={"kib-03": '<script>alert("x")</script>'},
        label_studio_projects={"<b>site</b>": LS_PROJECT},
    )
    html = render_qa_report(report)
    page = parse(html)
    assert "script" not in page.tags and "b" not in page.tags
    assert '<script>alert("x")</script>' in page.all_text


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "/relative/index.html"])
def test_only_http_links(url: str) -> None:
    with pytest.raises(ValueError, match="only http"):
        render_qa_report(make_report(data_docs_url=url))


def test_report_with_little_data() -> None:
    empty_rework = select_rework(CONSOLIDATED.iloc[:0], make_log().iloc[:0], make_work_order().qa, min_answers=3)
    report = QAReport(
        work_order=make_work_order(),
        round=1,
        passed=True,
        items=0,
        consolidated=CONSOLIDATED.iloc[:0],
        rework=empty_rework,
        site_scores=pd.DataFrame(columns=["n_gold", "gold_accuracy"]),
        annotator_scores=pd.DataFrame(columns=["site_id", "gold_accuracy"]),
    )
    page = parse(render_qa_report(report))
    assert "PASSED" in page.text and "No items need rework." in page.text
    assert "not measurable (too few overlapping answers)" in page.all_text
    assert page.images == []


def test_annotator_table_is_capped_but_keeps_every_flagged_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flows.qa.report.MAX_ROWS", 2)
    report = make_report(excluded={"kib-03": "spam", "gul-03": "spam", "gul-02": "spam"})
    page = parse(render_qa_report(report))
    shown = [
        row[0] for row in page.rows if row and row[0] in {"kib-01", "kib-02", "kib-03", "gul-01", "gul-02", "gul-03"}
    ]
    assert set(shown) == {"kib-03", "gul-03", "gul-02"}
    assert "3 more annotators are not shown; none of them is excluded." in page.all_text


# --- Markdown ----------------------------------------------------------------------------------------


def test_markdown_summary() -> None:
    md = render_qa_markdown(make_report())
    assert md.startswith("# QA FAILED: acme-0042, round 0\n")
    assert "| Rework queue | 3 | sent to review round 1 |" in md
    assert "## Rework queue: review round 1\n\n3 items are sent to review round 1 (round 1 of at most 2)." in md
    assert "| nairobi-kibera | OK |" in md and "| gulu-north |" in md
    assert "| `kib-03` | gold accuracy 0% (0 of 1 gold items right), below 80% |" in md
    assert "| **FAIL** | Output checks (Great Expectations) | 1 of 2 passed; the failures are listed below |" in md
    assert f"- [Output checks in detail (Great Expectations Data Docs)]({DATA_DOCS})" in md
    assert "data:image" not in md


def test_markdown_escapes_table_pipes() -> None:
    md = render_qa_markdown(make_report(excluded={"kib-03": "a | b"}))
    assert "| `kib-03` | a \\| b |" in md


# --- Figures --------------------------------------------------------------------------------------------


def test_gold_accuracy_trend_by_hand() -> None:
    trend = gold_accuracy_trend(make_log(), GOLD)
    assert list(trend.columns) == ["bucket", "bucket_end", "site_id", "n_gold", "gold_accuracy", "first_at", "last_at"]
    # g1 at 08:30-08:40 (2 of 3 right), g2 at 11:00-11:10 (2 of 3). No period gives 5 answers a point: the finest
    # with the most per point is 15 minutes (two points of 3; 5 minutes would give six points of 1).
    assert trend["bucket"].dt.strftime("%H:%M").tolist() == ["08:30", "11:00"]
    assert trend["bucket_end"].dt.strftime("%H:%M").tolist() == ["08:45", "11:15"]
    assert trend["first_at"].dt.strftime("%H:%M").tolist() == ["08:30", "11:00"]
    assert trend["last_at"].dt.strftime("%H:%M").tolist() == ["08:40", "11:10"]
    assert trend["site_id"].tolist() == ["nairobi-kibera", "gulu-north"]
    assert trend["n_gold"].tolist() == [3, 3]
    assert trend["gold_accuracy"].tolist() == pytest.approx([2 / 3, 2 / 3])
    daily = gold_accuracy_trend(make_log(), GOLD, freq="1D")
    assert daily["n_gold"].tolist() == [3, 3] and daily["bucket"].dt.hour.tolist() == [0, 0]


def test_gold_accuracy_trend_without_gold_answers() -> None:
    assert gold_accuracy_trend(make_log(), pd.Series({"nope": "cat"})).empty
    with pytest.raises(ValueError, match="created_at or updated_at"):
        gold_accuracy_trend(make_log().drop(columns=["created_at", "updated_at"]), GOLD)


def test_confusion_matrix_by_hand() -> None:
    matrix = confusion_matrix(["cat", "cat", "dog", "dog", None], ["cat", "dog", "dog", "fox", "cat"], CLASSES)
    assert list(matrix.index) == ["cat", "dog", "bird", "fox"]  # a value outside the classes shows up
    assert matrix.loc["cat"].tolist() == [1, 1, 0, 0]
    assert matrix.loc["dog"].tolist() == [0, 1, 0, 1]
    assert int(matrix.to_numpy().sum()) == 4  # the pair with a missing value is left out
    top = top_confusions(matrix, 5)
    assert top.to_dict("records") == [
        {"reference": "cat", "given": "dog", "count": 1, "share": 0.5},
        {"reference": "dog", "given": "fox", "count": 1, "share": 0.5},
    ]
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix(["a"], ["a", "b"])


def test_answers_vs_gold() -> None:
    matrix = answers_vs_reference(make_log(), GOLD, CLASSES)
    assert matrix.loc["cat"].tolist() == [2, 1, 0]  # g1: cat, cat, dog
    assert matrix.loc["dog"].tolist() == [1, 2, 0]  # g2: dog, dog, cat


def test_agreement_by_batch() -> None:
    out = agreement_by(make_log(), "batch_id")
    assert list(out.columns) == ["batch_id", "alpha", "items", "answers"]
    log = make_log()
    expected = {}
    for batch, rows in log.groupby("batch_id"):
        wide = rows.pivot(index="annotator", columns="item_id", values="label")
        codes = wide.apply(lambda c: c.map({k: i for i, k in enumerate(CLASSES)})).to_numpy(dtype=float)
        expected[batch] = krippendorff.alpha(reliability_data=codes, level_of_measurement="nominal")
    assert out["batch_id"].tolist() == sorted(expected, key=expected.__getitem__)  # lowest alpha first
    assert out["alpha"].tolist() == pytest.approx(sorted(expected.values()))
    assert out["items"].tolist() == [3, 3] and out["answers"].tolist() == [9, 9]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agreement_by_matches_alpha_group_by_group(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 600
    log = pd.DataFrame(
        {
            "item_id": rng.integers(0, 120, n).astype(str),
            "site_id": rng.choice(["s1", "s2", "s3", "s4"], n),
            "label": rng.choice(["a", "b", "c", None], n, p=[0.5, 0.3, 0.15, 0.05]),
            "skipped": rng.random(n) < 0.05,
        }
    )
    log.loc[log["site_id"] == "s4", "label"] = "a"  # one value only: no expected disagreement, alpha undefined
    out = agreement_by(log, "site_id").set_index("site_id")
    answered = log[~log["skipped"] & log["label"].notna()]
    expected = per_group(answered, "site_id", krippendorff_alpha, level="nominal")
    assert out["alpha"].reindex(expected.index).to_numpy() == pytest.approx(expected.to_numpy(), nan_ok=True)
    assert np.isnan(out.loc["s4", "alpha"]) and out.index[-1] == "s4"  # unmeasurable last
    assert out["answers"].to_dict() == answered.groupby("site_id").size().to_dict()
    assert out["items"].to_dict() == answered.groupby("site_id")["item_id"].nunique().to_dict()


def test_exclusion_reasons_in_words() -> None:
    scores = pd.DataFrame(
        {
            "n_gold": [20, 2],
            "gold_accuracy": [0.5, 0.0],
            "consensus_agreement": [0.6, 0.4],
            "n_answers": [100, 50],
        },
        index=pd.Index(["p1", "p2"], name="annotator"),
    )
    reasons = exclusion_reasons(scores, ["p1", "p2", "p9"], 0.8)
    assert reasons == {
        "p1": "gold accuracy 50% (10 of 20 gold items right), below 80%",
        "p2": "estimated accuracy 32% (only 2 gold items, topped up with agreement with the consensus), below 80%",
        "p9": "excluded (no scores in this round)",
    }


# --- Charts ---------------------------------------------------------------------------------------------

SITES = pd.DataFrame(
    {"gold_accuracy": [0.91, 0.72, np.nan], "consensus_agreement": [0.88, 0.7, 0.9], "alpha": [0.7, 0.3, np.nan]},
    index=pd.Index(["nairobi-kibera", "gulu-north", "new-site"], name="site_id"),
)


@pytest.mark.parametrize(
    "draw",
    [
        lambda: charts.site_scorecard_chart(SITES, min_gold_accuracy=0.8, min_agreement=0.5),
        lambda: charts.site_scorecard_chart(SITES.drop(columns="alpha"), min_gold_accuracy=0.8),
        lambda: charts.site_scorecard_chart(SITES.iloc[:0], min_gold_accuracy=0.8),
        lambda: charts.confusion_matrix_chart(confusion_matrix(["a", "b", "b"], ["a", "a", "b"])),
        lambda: charts.confusion_matrix_chart(pd.DataFrame()),
        lambda: charts.gold_trend_chart(gold_accuracy_trend(make_log(), GOLD), min_gold_accuracy=0.8),
        lambda: charts.gold_trend_chart(gold_accuracy_trend(make_log(), pd.Series({"x": "y"})), min_gold_accuracy=0.8),
        lambda: charts.confidence_histogram(np.linspace(0, 1, 101), min_confidence=0.7),
        lambda: charts.confidence_histogram([np.nan], min_confidence=0.7),
        lambda: charts.site_progress_chart(pd.DataFrame({"site_id": ["a", "b"], "done": [5, 0], "total": [10, 0]})),
        lambda: charts.site_progress_chart(pd.DataFrame({"site_id": [], "done": [], "total": []})),
    ],
)
def test_charts_are_png(draw: Any) -> None:
    width, height = assert_png(draw())
    assert width >= 400 and height >= 150


def test_charts_are_deterministic() -> None:
    first = charts.confidence_histogram([0.2, 0.9, 0.95], min_confidence=0.7)
    assert charts.confidence_histogram([0.2, 0.9, 0.95], min_confidence=0.7) == first


def test_data_uri() -> None:
    png = charts.confidence_histogram([0.5], min_confidence=0.7)
    uri = charts.data_uri(png)
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",", 1)[1]) == png
    with pytest.raises(ValueError, match="not PNG"):
        charts.data_uri(b"GIF89a")
