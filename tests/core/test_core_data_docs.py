"""Data Docs that read offline: no CDN, text status marks, an index with ordinary links."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from flows.core.data_docs import index_html, make_offline, offline_page, result_page

pytestmark = pytest.mark.unit

PAGE = """<html><head>
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<link rel="shortcut icon" href="../static/images/favicon.ico"/>
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script>var local = 1;</script>
</head><body>
<p>Status: <i class="fas fa-times text-danger" aria-hidden="true"></i> Failed</p>
<td><i class="fas fa-check-circle text-success" aria-hidden="true"></i></td>
<i class="fas fa-info"></i>
</body></html>"""


def test_a_page_loses_its_cdn_and_gets_text_marks() -> None:
    out = offline_page(PAGE)
    assert "https://" not in out
    assert 'href="../static/images/favicon.ico"' in out  # local links stay, for publish_site to sign
    assert "var local = 1;" in out
    assert '<span class="kazi-fail" title="failed">&#10008;</span> Failed' in out
    assert '<span class="kazi-pass" title="passed">&#10004;</span>' in out
    assert "fa-info" not in out
    assert out.count("<style>") == 1 and out.index("<style>") < out.index("</head>")


def test_result_page_reads_suite_status_and_counts(tmp_path: Path) -> None:
    page = tmp_path / "validations" / "wo-1" / "output" / "wo-1-qa-round-0" / "20261123T040602.341312Z" / "b.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        "<p>Status: <span>&#10008;</span> Failed</p><table><tr><td>Evaluated Expectations</td><td>28</td></tr>"
        "<tr><td>Unsuccessful Expectations</td><td>3</td></tr></table>"
    )
    r = result_page(tmp_path, page)
    assert (r.suite, r.run_name, r.run_time) == ("wo-1.output", "wo-1-qa-round-0", "2026-11-23 04:06:02 UTC")
    assert (r.succeeded, r.evaluated, r.unsuccessful) == (False, 28, 3)
    html = index_html("Output checks of wo-1", [r], ["expectations/wo-1/output.html"])
    assert f'<a href="{r.path}">wo-1.output</a>' in html
    assert "&#10008; failed" in html and "3 of 28" in html
    assert '<a href="expectations/wo-1/output.html">wo-1.output</a>' in html


def test_real_great_expectations_docs_become_readable_offline(tmp_path: Path) -> None:
    import great_expectations as gx

    from flows.core.gx import docs_context, run_checkpoint

    context = docs_context(tmp_path)
    suite = gx.ExpectationSuite(
        name="wo-2.output",
        expectations=[
            gx.expectations.ExpectColumnValuesToNotBeNull(column="label"),
            gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=["cat", "dog"]),
        ],
    )
    frame = pd.DataFrame({"label": ["cat", "dog", "cow"]})
    result = run_checkpoint(context, suite, frame, name="wo-2-output", run_name="wo-2-qa-round-0")
    assert result.success is False
    index = make_offline(tmp_path, "Output checks of wo-2")
    for page in tmp_path.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r"<(link|script)\b[^>]*(href|src)=[\"']https?://", text), page
        assert "fa-check-circle" not in text and "fa-times" not in text
    text = index.read_text()
    assert "wo-2.output" in text and "&#10008; failed" in text and "1 of 2" in text
    link = re.search(r'<a href="(validations/[^"]+\.html)">wo-2.output</a>', text)
    assert link is not None and (tmp_path / link.group(1)).is_file()


def test_one_suite_validates_two_frames_in_one_context(tmp_path: Path) -> None:
    """The second checkpoint finds the suite already stored (added by the first) and uses it."""
    import great_expectations as gx

    from flows.core.gx import docs_context, run_checkpoint

    context = docs_context(tmp_path)

    def suite() -> gx.ExpectationSuite:
        return gx.ExpectationSuite(
            name="wo-3.output",
            expectations=[gx.expectations.ExpectColumnValuesToBeInSet(column="label", value_set=["cat", "dog"])],
        )

    first = run_checkpoint(context, suite(), pd.DataFrame({"label": ["cat", "dog"]}), name="a", run_name="r")
    second = run_checkpoint(context, suite(), pd.DataFrame({"label": ["cow"]}), name="b", run_name="r")
    assert first.success is True and second.success is False
    assert [s.name for s in context.suites.all()] == ["wo-3.output"]
