"""Great Expectations Data Docs that read offline, from a private bucket, through presigned links.

GX builds pages that pull Bootstrap, Font Awesome, jQuery and bootstrap-table from public CDNs, and its
index page fills its results table with JavaScript whose row links are not ``href`` attributes. Where the
CDNs are out of reach (these machines, many partner networks), the pages render unstyled, the status
icons are blank and the index shows no results; and even with the CDNs, the index's links point at
unsigned private objects. So after GX builds a site, :func:`make_offline` rewrites it:

- external stylesheets and scripts are dropped, and one small stylesheet is inlined in each page;
- the status icons become text marks (a check or a cross), so a status never depends on a font;
- ``index.html`` becomes a plain page that lists every validation result with its status and figures,
  with ordinary links that :func:`flows.core.publish.publish_site` signs.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from flows.core.gx import INDEX_PAGE
from flows.core.publish import publish_site
from flows.core.s3 import ObjectStore

_EXTERNAL_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']https?://[^>]*>", re.I)
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']https?://[^>]*>\s*</script>", re.I | re.S)
_ICON = re.compile(r"<i\b[^>]*class=\"(?P<cls>[^\"]*\bfa[srb]?\b[^\"]*)\"[^>]*>\s*</i>", re.I)
_TAGS = re.compile(r"<[^>]+>")

#: Enough of Bootstrap's classes, as GX's pages use them, for a readable page.
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2933;
  background: #f7f8fa; font-size: 15px; line-height: 1.45; }
a { color: #0b5cad; }
.container-fluid { padding: 16px 28px; }
.row { display: flex; flex-wrap: wrap; }
.col-12, .col-6 { box-sizing: border-box; }
.col-12 { width: 100%; } .col-6 { width: 50%; }
.col-lg-2, .col-md-2 { width: 17%; box-sizing: border-box; padding-right: 16px; }
.col-md-10, .col-lg-10 { width: 83%; box-sizing: border-box; }
.d-none { display: none; } .d-md-block, .d-sm-block { display: block; }
.navbar { background: #fff; border-bottom: 1px solid #d9dee5; padding: 8px 28px; display: flex; gap: 12px; }
.navbar-brand img { display: none; }
.breadcrumb { list-style: none; display: flex; gap: 6px; margin: 0; padding: 0; }
.breadcrumb-item + .breadcrumb-item::before { content: "/ "; color: #7b8794; }
.nav { list-style: none; padding: 0; margin: 0; }
.nav-link { display: block; padding: 3px 6px; text-decoration: none; }
.card { background: #fff; border: 1px solid #d9dee5; border-radius: 6px; margin-bottom: 14px; }
.card-header { padding: 8px 12px; border-bottom: 1px solid #d9dee5; font-weight: 600; }
.card-body { padding: 12px; }
.collapse { display: none; }
.ge-section { background: #fff; border: 1px solid #d9dee5; border-radius: 6px; margin: 0 0 14px 0;
  padding: 10px 14px; }
.alert { background: #eef2f7; border-radius: 4px; padding: 6px 10px; margin: 6px 0; }
table, .table { border-collapse: collapse; width: 100%; margin: 6px 0; background: #fff; }
th, td { border-bottom: 1px solid #e4e7eb; padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: #f0f3f7; }
.table-responsive { overflow-x: auto; }
.btn, .btn-group, form, .NO-CACHE, footer { display: none; }
.text-success, .kazi-pass { color: #1a7f37; font-weight: 700; }
.text-danger, .kazi-fail { color: #b42318; font-weight: 700; }
.badge { padding: 1px 6px; border-radius: 8px; font-size: 13px; }
.kazi-status-pass { background: #dcfce7; color: #14532d; }
.kazi-status-fail { background: #fee2e2; color: #7f1d1d; }
h1, h2, h3, h4, h5, h6 { margin: 10px 0 6px; }
"""


def _style_tag() -> str:
    return f"<style>{STYLE}</style>"


def offline_page(text: str) -> str:
    """One GX page without CDN stylesheets and scripts, with text status marks and the inline style."""
    text = _EXTERNAL_SCRIPT.sub("", text)
    text = _EXTERNAL_LINK.sub("", text)

    def mark(m: re.Match[str]) -> str:
        cls = m.group("cls")
        if "fa-check" in cls:
            return '<span class="kazi-pass" title="passed">&#10004;</span>'
        if "fa-times" in cls or "fa-exclamation" in cls or "fa-x" in cls:
            return '<span class="kazi-fail" title="failed">&#10008;</span>'
        return ""

    text = _ICON.sub(mark, text)
    if "</head>" in text:
        return text.replace("</head>", _style_tag() + "</head>", 1)
    return _style_tag() + text


@dataclass(frozen=True)
class ResultPage:
    """One validation result page of the site, as the index lists it."""

    path: str
    suite: str
    run_name: str
    run_time: str
    succeeded: bool | None
    evaluated: int | None
    unsuccessful: int | None


def _when(stamp: str) -> str:
    """GX's ``20261123T040603.536263Z`` as ``2026-11-23 04:06:03 UTC``."""
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?:\.\d+)?Z", stamp)
    return f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]}:{m[6]} UTC" if m else stamp


def _plain(text: str) -> str:
    """A page's visible text on one line."""
    text = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(_TAGS.sub(" ", text)))


def result_page(docs_dir: Path, page: Path) -> ResultPage:
    """What a validation result page says: suite, run, status and counts (``None`` where it says nothing)."""
    rel = page.relative_to(docs_dir).as_posix()
    # validations/<suite parts...>/<run name>/<run time>/<batch>.html
    parts = rel.split("/")
    suite, run_name, run_time = ".".join(parts[1:-3]), parts[-3], parts[-2]
    text = _plain(page.read_text(encoding="utf-8", errors="replace"))
    status = re.search(r"Status:\W*(Succeeded|Failed)", text)

    def count(label: str) -> int | None:
        m = re.search(rf"{label}\s+(\d+)", text)
        return int(m.group(1)) if m else None

    return ResultPage(
        path=rel,
        suite=suite,
        run_name=run_name,
        run_time=_when(run_time),
        succeeded=None if status is None else status.group(1) == "Succeeded",
        evaluated=count("Evaluated Expectations"),
        unsuccessful=count("Unsuccessful Expectations"),
    )


def index_html(title: str, results: list[ResultPage], suites: list[str]) -> str:
    """The landing page: every validation result with its status, then the expectation suites."""
    rows = []
    for r in results:
        if r.succeeded is None:
            badge = '<span class="badge">unknown</span>'
        elif r.succeeded:
            badge = '<span class="badge kazi-status-pass">&#10004; passed</span>'
        else:
            badge = '<span class="badge kazi-status-fail">&#10008; failed</span>'
        failed = "-" if r.unsuccessful is None else f"{r.unsuccessful} of {r.evaluated}"
        rows.append(
            f'<tr><td><a href="{html.escape(r.path)}">{html.escape(r.suite)}</a></td><td>{badge}</td>'
            f"<td>{failed}</td><td>{html.escape(r.run_name)}</td><td>{html.escape(r.run_time)}</td></tr>"
        )
    suite_items = "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(name)}</a></li>' for name, path in _suite_links(suites)
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>{_style_tag()}</head><body><div class='container-fluid'>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Great Expectations checked every row against the expectations below. Open a result to see each "
        "check, what was expected and what was found.</p>"
        "<h2>Validation results</h2><table><tr><th>checks</th><th>status</th><th>failed checks</th>"
        f"<th>run</th><th>run time</th></tr>{''.join(rows) or '<tr><td colspan=5>none</td></tr>'}</table>"
        f"<h2>Expectation suites</h2><ul>{suite_items or '<li>none</li>'}</ul>"
        "</div></body></html>"
    )


def _suite_links(paths: list[str]) -> list[tuple[str, str]]:
    # expectations/<suite parts...>.html
    return [(".".join(p.removesuffix(".html").split("/")[1:]), p) for p in paths]


def make_offline(docs_dir: Path, title: str) -> Path:
    """Rewrite the GX site in ``docs_dir`` to read offline; returns its new index page."""
    for page in docs_dir.rglob("*.html"):
        page.write_text(offline_page(page.read_text(encoding="utf-8", errors="replace")), encoding="utf-8")
    results = sorted(
        (result_page(docs_dir, p) for p in docs_dir.glob("validations/**/*.html")),
        key=lambda r: (r.run_time, r.suite),
        reverse=True,
    )
    suites = sorted(p.relative_to(docs_dir).as_posix() for p in docs_dir.glob("expectations/**/*.html"))
    index = docs_dir / INDEX_PAGE
    index.write_text(index_html(title, results, suites), encoding="utf-8")
    return index


def publish_data_docs(store: ObjectStore, docs_dir: Path, bucket: str, prefix: str, title: str) -> str:
    """Make the site in ``docs_dir`` offline-readable and publish it in place of any earlier one.

    Earlier pages under ``prefix`` are removed first: a rerun after a crash would otherwise leave the dead
    run's pages (their paths hold a timestamp) listed nowhere. Returns the signed link to the index page.
    """
    make_offline(docs_dir, title)
    prefix = prefix.rstrip("/")
    store.delete_prefix(bucket, prefix + "/")
    # Only what the pages link to: GX copies 4.1 MB of static files (tutorial GIFs, fonts) into every
    # site, and after make_offline the pages use one of them (the favicon): 25 files became 6, and an
    # ingest's publish 0.14-0.17 s -> 0.03 s.
    return publish_site(store, docs_dir, bucket, prefix, index=INDEX_PAGE, only_linked=True)
