"""The impact report: what each partner site's workers earned per hour, against the local living wage.

Definitions (per site, over one work order's annotation log):

* **tasks**: answered annotations (skipped ones are not paid). Every answer is paid, gold and rework
  answers included, because the worker cannot tell them apart.
* **hours**: the sum of Label Studio ``lead_time`` over all the site's annotations, skipped ones included
  (skipping takes time too), divided by 3600. Label Studio's lead time is the time the task was open in the
  labelling editor, accumulated over edits: *active* labelling time, without breaks, training or waiting.
  Pay per active hour is therefore an upper bound on pay per hour at work, so a site flagged here is
  certainly below the living wage, while a site just above it may still be below it per shift hour.
  A missing or negative lead time is replaced by the site's median lead time, and counted.
* **earnings**: tasks x the work order's ``pay_per_task`` (USD, paid to the site).
* **effective hourly pay**: earnings / hours, in USD and in the site's currency.
* **living wage**: the site's :class:`~flows.core.models.ImpactRecord` benchmark, in its currency. Sites not
  paid in USD are compared through ``fx_to_usd`` (USD per one unit of the currency, e.g. ``{"KES":
  0.0077}``), which the caller supplies with the rates of the pay period; the rates used are in the report.

A site whose effective hourly pay is below its living wage is flagged, and its id is returned in
``suspend``: it takes no new work until someone has reviewed why.

Privacy: figures are per site only, never per worker. A site with fewer than ``min_workers`` (default 3)
distinct workers is not shown on its own, since its figures would come close to describing individuals
(k-anonymity with k = ``min_workers``). Such sites are pooled into one "other sites" row; when the pool is
still below k, the smallest shown site joins it, so subtracting the shown rows from the totals never
isolates a small group. When fewer than k workers took part at all, every figure is suppressed. The
suspension decision itself uses every site's own figures.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment
from matplotlib.figure import Figure

from flows.core.models import ImpactRecord

OTHER_SITES = "other sites"

#: Columns of :attr:`ImpactReport.sites`, in order.
SITE_COLUMNS = [
    "site_id",
    "country",
    "currency",
    "n_sites",
    "workers",
    "tasks",
    "items",
    "hours",
    "lead_times_imputed",
    "earnings_usd",
    "effective_hourly_usd",
    "living_wage_usd",
    "effective_hourly_local",
    "living_wage_local",
    "hourly_wage_local",
    "ratio_to_living_wage",
    "below_living_wage",
    "pooled",
]


@dataclass(frozen=True)
class ImpactReport:
    """Published figures (k-anonymous), plus the decisions taken on every site's own figures.

    Attributes:
        sites: One row per shown site, then at most one pooled row (:data:`SITE_COLUMNS`).
        totals: Sites, workers, tasks, hours, earnings and effective hourly pay over all sites (None when
            suppressed).
        suspend: Sites paid below their living wage: ineligible for new work until reviewed.
        unverifiable: Sites with answered tasks but no recorded time, whose pay cannot be checked.
        pay_per_task: The rate used (USD).
        fx_to_usd: The exchange rates used.
        min_workers: The k of k-anonymity.
    """

    sites: pd.DataFrame
    totals: dict[str, float | int | None]
    suspend: frozenset[str]
    unverifiable: frozenset[str]
    pay_per_task: float
    fx_to_usd: dict[str, float] = field(default_factory=dict)
    min_workers: int = 3


def compute_impact(
    annotations: pd.DataFrame,
    pay_per_task: float,
    impacts: Mapping[str, ImpactRecord],
    fx_to_usd: Mapping[str, float] | None = None,
    *,
    countries: Mapping[str, str] | None = None,
    min_workers: int = 3,
) -> ImpactReport:
    """Per-site pay against the living wage, with k-anonymous publication (see the module docstring).

    Args:
        annotations: The annotation log (``site_id``, ``annotator``, ``item_id``, ``lead_time_s``,
            ``skipped``).
        pay_per_task: USD paid per answered task (``WorkOrder.pay_per_task``).
        impacts: Each site's impact record (wage, living wage, currency), by site id.
        fx_to_usd: USD per unit of each non-USD currency in use.
        countries: Site id -> ISO country code, for display.
        min_workers: Smallest number of distinct workers a shown figure may describe.

    Returns:
        The :class:`ImpactReport`.
    """
    if min_workers < 1:
        raise ValueError("min_workers must be at least 1")
    if pay_per_task < 0:
        raise ValueError("pay_per_task cannot be negative")
    per_site = _per_site(annotations, pay_per_task)
    unknown = sorted(set(per_site.index) - set(impacts))
    if unknown:
        raise ValueError(f"no impact record for site(s) {unknown}")
    rates = _rates(per_site.index, impacts, fx_to_usd or {})

    rec = pd.DataFrame(
        {
            "currency": [impacts[s].currency for s in per_site.index],
            "living_wage_local": [impacts[s].living_wage for s in per_site.index],
            "hourly_wage_local": [impacts[s].hourly_wage for s in per_site.index],
            "country": [(countries or {}).get(s) for s in per_site.index],
        },
        index=per_site.index,
    )
    fx = rec["currency"].map(rates).astype("float64")
    sites = per_site.join(rec)
    sites["effective_hourly_usd"] = _ratio(sites["earnings_usd"], sites["hours"])
    sites["living_wage_usd"] = sites["living_wage_local"] * fx
    sites["effective_hourly_local"] = sites["effective_hourly_usd"] / fx
    sites["ratio_to_living_wage"] = sites["effective_hourly_usd"] / sites["living_wage_usd"]
    checked = sites["effective_hourly_usd"].notna()
    sites["below_living_wage"] = (sites["effective_hourly_usd"] < sites["living_wage_usd"]).where(checked)
    suspend = frozenset(sites.index[sites["below_living_wage"].eq(True)])
    unverifiable = frozenset(sites.index[~checked & sites["tasks"].gt(0)])

    shown, pool = _k_anonymous_groups(sites["workers"], min_workers)
    published = sites.loc[shown].assign(n_sites=1, pooled=False).reset_index(names="site_id")
    rows = [published]
    if pool:
        rows.append(_pooled_row(sites.loc[pool], annotations, suppressed=False))
    total_workers = int(_distinct_workers(annotations))
    if total_workers < min_workers:
        rows = [_pooled_row(sites, annotations, suppressed=True)] if len(sites) else []
        totals: dict[str, float | int | None] = dict.fromkeys(
            ["sites", "workers", "tasks", "hours", "earnings_usd", "effective_hourly_usd"]
        )
    else:
        hours = float(sites["hours"].sum())
        earnings = float(sites["earnings_usd"].sum())
        totals = {
            "sites": len(sites),
            "workers": total_workers,
            "tasks": int(sites["tasks"].sum()),
            "hours": hours,
            "earnings_usd": earnings,
            "effective_hourly_usd": earnings / hours if hours > 0 else None,
        }
    frame = pd.concat([r for r in rows if len(r)], ignore_index=True) if rows else pd.DataFrame()
    frame = frame.reindex(columns=SITE_COLUMNS)
    return ImpactReport(
        sites=frame,
        totals=totals,
        suspend=suspend,
        unverifiable=unverifiable,
        pay_per_task=pay_per_task,
        fx_to_usd={c: rates[c] for c in sorted(set(rec["currency"]))},
        min_workers=min_workers,
    )


def _per_site(annotations: pd.DataFrame, pay_per_task: float) -> pd.DataFrame:
    a = annotations[["site_id", "annotator", "item_id", "lead_time_s", "skipped"]]
    lead = pd.to_numeric(a["lead_time_s"], errors="coerce").astype("float64")
    lead = lead.where(lead >= 0)
    median = lead.groupby(a["site_id"]).transform("median")
    answered = ~a["skipped"].astype(bool)
    work = pd.DataFrame(
        {
            "site_id": a["site_id"],
            "annotator": a["annotator"],
            "answered_item": a["item_id"].where(answered),
            "answered": answered.astype("int64"),
            "seconds": lead.fillna(median).fillna(0.0),
            "imputed": lead.isna().astype("int64"),
        }
    )
    g = work.groupby("site_id", sort=True)
    out = pd.DataFrame(
        {
            "workers": g["annotator"].nunique(),
            "tasks": g["answered"].sum(),
            "items": g["answered_item"].nunique(),
            "hours": g["seconds"].sum() / 3600.0,
            "lead_times_imputed": g["imputed"].sum(),
        }
    )
    out["earnings_usd"] = out["tasks"] * float(pay_per_task)
    out.index.name = "site_id"
    return out


def _rates(site_ids: pd.Index, impacts: Mapping[str, ImpactRecord], fx: Mapping[str, float]) -> dict[str, float]:
    currencies = {impacts[s].currency for s in site_ids}
    missing = sorted(c for c in currencies if c != "USD" and c not in fx)
    if missing:
        raise ValueError(f"fx_to_usd has no rate for {missing}")
    bad = sorted(c for c in currencies if c != "USD" and not fx[c] > 0)
    if bad:
        raise ValueError(f"fx_to_usd rates must be positive: {bad}")
    return {c: 1.0 if c == "USD" else float(fx[c]) for c in currencies}


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den).where(den > 0)


def _distinct_workers(annotations: pd.DataFrame) -> int:
    return int(annotations[["site_id", "annotator"]].drop_duplicates().shape[0])


def _k_anonymous_groups(workers: pd.Series, k: int) -> tuple[list[str], list[str]]:
    """Sites shown on their own, and the pool; the pool is empty or has at least k workers if it can."""
    ordered = workers.sort_index()
    pool = [s for s, w in ordered.items() if w < k]
    shown = [s for s in ordered.index if s not in pool]
    # Pool too small: fold in the smallest shown site (fewest workers, then id) until it is big enough.
    while pool and ordered[pool].sum() < k and shown:
        smallest = min(shown, key=lambda s: (ordered[s], s))
        shown.remove(smallest)
        pool.append(smallest)
    return shown, sorted(pool)


def _pooled_row(sites: pd.DataFrame, annotations: pd.DataFrame, *, suppressed: bool) -> pd.DataFrame:
    """One row for several sites: sums in USD; wage comparisons do not pool across currencies."""
    members = set(sites.index)
    workers = _distinct_workers(annotations[annotations["site_id"].isin(members)])
    row: dict[str, Any] = dict.fromkeys(SITE_COLUMNS)
    row.update(site_id=OTHER_SITES, n_sites=len(members), pooled=True, currency="USD")
    if not suppressed:
        hours = float(sites["hours"].sum())
        earnings = float(sites["earnings_usd"].sum())
        row.update(
            workers=workers,
            tasks=int(sites["tasks"].sum()),
            items=int(sites["items"].sum()),
            hours=hours,
            lead_times_imputed=int(sites["lead_times_imputed"].sum()),
            earnings_usd=earnings,
            effective_hourly_usd=earnings / hours if hours > 0 else None,
        )
    return pd.DataFrame([row])


# --- The one-page report ---------------------------------------------------------------------------

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
 body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem; margin: 2rem auto;
        padding: 0 1rem; color: #1f2933; line-height: 1.5; }
 h1 { font-size: 1.6rem; margin-bottom: .2rem; } .sub { color: #52606d; margin-top: 0; }
 .summary { font-size: 1.1rem; background: #f5f7fa; padding: 1rem; border-radius: .4rem; }
 table { border-collapse: collapse; width: 100%; margin: 1rem 0; font-size: .95rem; }
 th, td { padding: .4rem .5rem; border-bottom: 1px solid #d9e2ec; text-align: right; }
 th:first-child, td:first-child, td.text { text-align: left; }
 .below { color: #b42318; font-weight: 600; } .ok { color: #1b7a3b; }
 img { max-width: 100%; } .notes { color: #3e4c59; font-size: .92rem; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="sub">{{ subtitle }}</p>
<p class="summary">{{ summary }}</p>
{% if flagged %}<p class="below">{{ flagged }}</p>{% endif %}
{% if chart %}<img alt="Pay per hour against the living wage, by site"
 src="data:image/png;base64,{{ chart }}">{% endif %}
<table>
<thead><tr><th>Site</th><th>Country</th><th>Workers</th><th>Tasks</th><th>Hours</th><th>Earned (USD)</th>
<th>Pay per hour (USD)</th><th>Living wage per hour (USD)</th><th>Pay per hour (local)</th>
<th>Living wage (local)</th><th>Status</th></tr></thead>
<tbody>
{% for r in rows %}<tr><td>{{ r.site }}</td><td class="text">{{ r.country }}</td><td>{{ r.workers }}</td>
<td>{{ r.tasks }}</td><td>{{ r.hours }}</td><td>{{ r.earnings }}</td><td>{{ r.pay }}</td><td>{{ r.living }}</td>
<td>{{ r.pay_local }}</td><td>{{ r.living_local }}</td><td class="text {{ r.css }}">{{ r.status }}</td></tr>
{% endfor %}</tbody>
</table>
<div class="notes">
<h2>How to read this</h2>
<ul>
<li><b>Tasks</b> are answers given; every answer is paid {{ rate }}.</li>
<li><b>Hours</b> are active labelling time, measured by the labelling tool while a task is open. Breaks,
training and waiting are not included, so pay per hour at work is somewhat lower than shown here.</li>
<li><b>Pay per hour</b> is what the site earned divided by those hours. It is compared with the local
<b>living wage</b>, the hourly income a worker needs for a decent standard of living where they live.</li>
<li>A site below the living wage is paused for new work until we have reviewed it with the site.</li>
<li>No figure here describes an individual. Sites with fewer than {{ k }} workers are shown together as
"{{ other }}".</li>
{% if fx %}<li>Exchange rates used (US dollars per unit): {{ fx }}.</li>{% endif %}
</ul>
</div>
</body>
</html>
"""


def render_impact_html(report: ImpactReport, *, title: str, subtitle: str = "") -> str:
    """A one-page HTML report for non-engineers: a summary, a bar chart and a table.

    Args:
        report: From :func:`compute_impact`.
        title: Page heading, e.g. "Impact report: acme-0042".
        subtitle: A line under it, e.g. the period and the date it was produced (passed in, so the page
            is reproducible).
    """
    env = Environment(autoescape=True, keep_trailing_newline=True)
    t = report.totals
    if t["workers"] is None:
        summary = f"Fewer than {report.min_workers} workers took part, so figures are withheld to protect them."
    else:
        per_hour = "n/a" if t["effective_hourly_usd"] is None else _money(t["effective_hourly_usd"])
        summary = (
            f"{t['workers']} workers at {t['sites']} partner site(s) gave {t['tasks']:,} answers in "
            f"{t['hours']:,.1f} hours of active labelling and earned {_money(t['earnings_usd'])}: "
            f"{per_hour} per hour on average."
        )
    shown_below = report.sites.loc[report.sites["below_living_wage"].eq(True), "site_id"].tolist()
    flagged = f"Below the living wage, paused for review: {', '.join(shown_below)}." if shown_below else ""
    if len(report.suspend) > len(shown_below):
        flagged = (flagged + " " if flagged else "") + (
            "Another site whose figures are not shown on their own is also paused for review."
        )
    rows = [_table_row(r) for r in report.sites.to_dict("records")]
    return env.from_string(_TEMPLATE).render(
        title=title,
        subtitle=subtitle,
        summary=summary,
        flagged=flagged,
        chart=_chart_png_base64(report.sites),
        rows=rows,
        rate=_money(report.pay_per_task),
        k=report.min_workers,
        other=OTHER_SITES,
        fx=", ".join(f"{c} {v:g}" for c, v in report.fx_to_usd.items() if c != "USD"),
    )


def _table_row(r: dict[str, Any]) -> dict[str, str]:
    below = r["below_living_wage"]
    if r["pooled"]:
        status, css = f"{r['n_sites']} sites together", ""
    elif below is True:
        status, css = "Below living wage: paused for review", "below"
    elif below is False:
        status, css = "At or above living wage", "ok"
    else:
        status, css = "No time recorded", ""
    local = r["currency"] or ""
    return {
        "site": str(r["site_id"]),
        "country": r["country"] or "",
        "workers": _count(r["workers"]),
        "tasks": _count(r["tasks"]),
        "hours": "" if _missing(r["hours"]) else f"{r['hours']:,.1f}",
        "earnings": _money(r["earnings_usd"]),
        "pay": _money(r["effective_hourly_usd"]),
        "living": _money(r["living_wage_usd"]),
        "pay_local": "" if r["pooled"] else _amount(r["effective_hourly_local"], local),
        "living_local": "" if r["pooled"] else _amount(r["living_wage_local"], local),
        "status": status,
        "css": css,
    }


def _chart_png_base64(sites: pd.DataFrame) -> str:
    data = sites[sites["effective_hourly_usd"].notna()]
    if data.empty:
        return ""
    fig = Figure(figsize=(8, 0.6 * len(data) + 1.6), dpi=100)
    ax = fig.subplots()
    y = np.arange(len(data))
    pay = data["effective_hourly_usd"].astype(float).to_numpy()
    living = data["living_wage_usd"].astype(float).to_numpy()
    colors = ["#b42318" if b is True else "#2f6fdf" for b in data["below_living_wage"]]
    paid = ax.barh(y - 0.2, pay, height=0.4, color=colors, label="Pay per active hour (USD)")
    bench = ax.barh(y + 0.2, np.nan_to_num(living), height=0.4, color="#9aa5b1", label="Living wage per hour (USD)")
    ax.bar_label(paid, labels=[f"${v:,.2f}" for v in pay], padding=3, fontsize=9)
    ax.bar_label(bench, labels=["" if np.isnan(v) else f"${v:,.2f}" for v in living], padding=3, fontsize=9)
    ax.margins(x=0.15)
    ax.set_yticks(y, [str(s) for s in data["site_id"]])
    ax.invert_yaxis()
    ax.set_xlabel("US dollars per hour")
    ax.legend(loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _money(v: Any) -> str:
    return "" if _missing(v) else f"${float(v):,.2f}"


def _amount(v: Any, currency: str) -> str:
    return "" if _missing(v) else f"{float(v):,.2f} {currency}"


def _count(v: Any) -> str:
    return "" if _missing(v) else f"{int(v):,}"
