"""Impact report arithmetic on hand-computed cases, k-anonymity, and the HTML page."""

from __future__ import annotations

import base64
import re
from datetime import date

import pandas as pd
import pytest

from flows.core.models import AuditStatus, ImpactRecord
from flows.deliver.impact import OTHER_SITES, compute_impact, render_impact_html

pytestmark = pytest.mark.unit


def record(living: float, currency: str = "USD", wage: float | None = None) -> ImpactRecord:
    return ImpactRecord(
        hourly_wage=wage if wage is not None else living,
        living_wage=living,
        currency=currency,
        last_audit=date(2026, 6, 1),
        audit_status=AuditStatus.PASSED,
    )


def log(rows: list[tuple[str, str, float | None, bool]]) -> pd.DataFrame:
    """Annotation log rows: (site, annotator, lead_time_s, skipped); every row a new item."""
    return pd.DataFrame(
        {
            "item_id": [f"item-{i}" for i in range(len(rows))],
            "site_id": [r[0] for r in rows],
            "annotator": [r[1] for r in rows],
            "lead_time_s": pd.Series([r[2] for r in rows], dtype="float64"),
            "skipped": [r[3] for r in rows],
        }
    )


def tasks(
    site: str, workers: list[str], n: int, seconds: float, skipped: bool = False
) -> list[tuple[str, str, float | None, bool]]:
    return [(site, workers[i % len(workers)], seconds, skipped) for i in range(n)]


# pay 0.50 USD per answered task.
# site-a (USD, living 6.00): 3 workers, 30 answers x 120 s + 2 skips x 900 s = 1.5 h; 15 USD -> 10.00/h.
# site-b (KES, living 300 = 3.00 USD at 0.01): 4 workers, 8 answers x 900 s = 2 h; 4 USD -> 2.00/h: below.
# site-c (USD, living 5.00): 2 workers, 4 answers x 360 s = 0.4 h; 2 USD -> 5.00/h: equal, not below.
# site-d (USD, living 20.00): 1 worker, 2 answers x 1800 s = 1 h; 1 USD -> 1.00/h: below (hidden: pooled).
ANNOTATIONS = log(
    tasks("site-a", ["w1", "w2", "w3"], 30, 120)
    + tasks("site-a", ["w1", "w2"], 2, 900, skipped=True)
    + tasks("site-b", ["x1", "x2", "x3", "x4"], 8, 900)
    + tasks("site-c", ["y1", "y2"], 4, 360)
    + tasks("site-d", ["z1"], 2, 1800)
)
IMPACTS = {
    "site-a": record(6.0, wage=7.0),
    "site-b": record(300.0, "KES"),
    "site-c": record(5.0),
    "site-d": record(20.0),
}
FX = {"KES": 0.01}


def by_site(frame: pd.DataFrame) -> dict[str, dict]:
    return {r["site_id"]: r for r in frame.to_dict("records")}


def test_per_site_arithmetic_and_living_wage_flags() -> None:
    report = compute_impact(ANNOTATIONS, 0.5, IMPACTS, FX, countries={"site-a": "KE", "site-b": "KE"})
    rows = by_site(report.sites)
    assert list(rows) == ["site-a", "site-b", OTHER_SITES]

    a = rows["site-a"]
    assert (a["workers"], a["tasks"], a["items"]) == (3, 30, 30)
    assert a["hours"] == pytest.approx(1.5)
    assert a["earnings_usd"] == pytest.approx(15.0)
    assert a["effective_hourly_usd"] == pytest.approx(10.0)
    assert a["living_wage_usd"] == pytest.approx(6.0)
    assert a["ratio_to_living_wage"] == pytest.approx(10 / 6)
    assert a["hourly_wage_local"] == 7.0
    assert a["below_living_wage"] is False
    assert a["country"] == "KE"

    b = rows["site-b"]
    assert b["currency"] == "KES"
    assert b["hours"] == pytest.approx(2.0)
    assert b["effective_hourly_usd"] == pytest.approx(2.0)
    assert b["living_wage_usd"] == pytest.approx(3.0)
    assert b["effective_hourly_local"] == pytest.approx(200.0)
    assert b["living_wage_local"] == 300.0
    assert b["below_living_wage"] is True

    assert report.suspend == frozenset({"site-b", "site-d"})
    assert report.unverifiable == frozenset()
    assert report.fx_to_usd == {"KES": 0.01, "USD": 1.0}


def test_small_sites_are_pooled_not_shown() -> None:
    report = compute_impact(ANNOTATIONS, 0.5, IMPACTS, FX)
    pool = by_site(report.sites)[OTHER_SITES]
    # site-c (2 workers) + site-d (1 worker) = 3 workers: 6 answers, 1.4 h, 3 USD.
    assert (pool["n_sites"], pool["workers"], pool["tasks"]) == (2, 3, 6)
    assert pool["hours"] == pytest.approx(1.4)
    assert pool["earnings_usd"] == pytest.approx(3.0)
    assert pool["effective_hourly_usd"] == pytest.approx(3 / 1.4)
    assert pool["pooled"] is True
    assert pd.isna(pool["living_wage_usd"])
    assert pd.isna(pool["below_living_wage"])
    assert not {"site-c", "site-d"} & set(report.sites["site_id"])


def test_totals_cover_every_site() -> None:
    t = compute_impact(ANNOTATIONS, 0.5, IMPACTS, FX).totals
    assert t == {
        "sites": 4,
        "workers": 10,
        "tasks": 44,
        "hours": pytest.approx(4.9),
        "earnings_usd": pytest.approx(22.0),
        "effective_hourly_usd": pytest.approx(22.0 / 4.9),
    }


def test_a_pool_below_k_absorbs_the_smallest_shown_site() -> None:
    without_d = ANNOTATIONS[ANNOTATIONS["site_id"] != "site-d"]
    report = compute_impact(without_d, 0.5, IMPACTS, FX)
    rows = by_site(report.sites)
    # site-c alone has 2 workers; site-a (3 workers) is smaller than site-b (4) and joins the pool.
    assert list(rows) == ["site-b", OTHER_SITES]
    assert (rows[OTHER_SITES]["n_sites"], rows[OTHER_SITES]["workers"], rows[OTHER_SITES]["tasks"]) == (2, 5, 34)
    assert rows[OTHER_SITES]["hours"] == pytest.approx(1.9)


def test_everything_is_suppressed_below_k_workers_in_total() -> None:
    small = log(tasks("site-d", ["z1"], 2, 1800) + tasks("site-c", ["y1"], 1, 3600))
    report = compute_impact(small, 0.5, IMPACTS)
    assert report.totals == dict.fromkeys(
        ["sites", "workers", "tasks", "hours", "earnings_usd", "effective_hourly_usd"]
    )
    (row,) = report.sites.to_dict("records")
    assert row["site_id"] == OTHER_SITES
    assert pd.isna(row["workers"]) and pd.isna(row["tasks"]) and pd.isna(row["effective_hourly_usd"])
    # The decision still uses each site's own figures: 1 USD/h and 0.5 USD/h are below 20 and 5.
    assert report.suspend == frozenset({"site-d", "site-c"})


def test_missing_and_negative_lead_times_take_the_site_median() -> None:
    rows = [
        ("site-a", w, s, False) for w, s in zip(["w1", "w2", "w3", "w1", "w2"], [100, 200, None, 300, -5], strict=True)
    ]
    report = compute_impact(log(rows), 0.5, IMPACTS)
    a = by_site(report.sites)["site-a"]
    # median of 100, 200, 300 = 200; 100 + 200 + 200 + 300 + 200 = 1000 s.
    assert a["hours"] == pytest.approx(1000 / 3600)
    assert a["lead_times_imputed"] == 2


def test_a_site_without_recorded_time_is_unverifiable_not_suspended() -> None:
    rows = tasks("site-a", ["w1", "w2", "w3"], 3, 60) + [("site-c", w, None, False) for w in ["y1", "y2", "y3"]]
    report = compute_impact(log(rows), 0.5, IMPACTS)
    c = by_site(report.sites)["site-c"]
    assert c["hours"] == 0
    assert pd.isna(c["effective_hourly_usd"])
    assert pd.isna(c["below_living_wage"])
    assert report.unverifiable == frozenset({"site-c"})
    assert "site-c" not in report.suspend


@pytest.mark.parametrize(
    ("fx", "impacts", "kwargs", "message"),
    [
        ({}, IMPACTS, {}, r"fx_to_usd has no rate for \['KES'\]"),
        ({"KES": 0.0}, IMPACTS, {}, "must be positive"),
        (FX, {k: v for k, v in IMPACTS.items() if k != "site-c"}, {}, r"no impact record for site\(s\) \['site-c'\]"),
        (FX, IMPACTS, {"min_workers": 0}, "min_workers"),
    ],
)
def test_compute_impact_errors(fx: dict, impacts: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_impact(ANNOTATIONS, 0.5, impacts, fx, **kwargs)


def test_html_report_has_chart_table_flags_and_no_worker_ids() -> None:
    report = compute_impact(ANNOTATIONS, 0.5, IMPACTS, FX, countries={"site-a": "KE", "site-b": "UG"})
    html = render_impact_html(report, title="Impact <acme-0042>", subtitle="November 2026")
    assert "Impact &lt;acme-0042&gt;" in html and "<acme-0042>" not in html
    assert "10 workers at 4 partner site(s) gave 44 answers in 4.9 hours" in html
    assert "Below the living wage, paused for review: site-b." in html
    assert "Another site whose figures are not shown on their own is also paused" in html
    assert "$10.00" in html and "200.00 KES" in html and "KES 0.01" in html
    png = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert png is not None
    assert base64.b64decode(png.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    for worker in ["w1", "x1", "y1", "z1"]:
        assert f">{worker}<" not in html and f" {worker} " not in html


def test_html_report_is_reproducible_and_handles_suppression() -> None:
    report = compute_impact(ANNOTATIONS, 0.5, IMPACTS, FX)
    assert render_impact_html(report, title="t") == render_impact_html(report, title="t")
    hidden = compute_impact(log(tasks("site-a", ["w1"], 2, 60)), 0.5, IMPACTS)
    html = render_impact_html(hidden, title="t")
    assert "Fewer than 3 workers took part" in html
    assert "data:image/png" not in html
