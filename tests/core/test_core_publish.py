import re

import httpx
import pytest

from flows.core.publish import publish_site, rewrite_links

SIGNED = {
    "docs/run1/index.html": "https://s3/x/index?sig=1",
    "docs/run1/static/app.css": "https://s3/x/app.css?sig=2",
    "docs/run1/validations/a/b.html": "https://s3/x/b?sig=3",
    "docs/run1/static/logo.png": "https://s3/x/logo?sig=4",
}


@pytest.mark.unit
def test_rewrites_relative_links_that_resolve_to_published_keys() -> None:
    html = (
        '<a href="../../index.html">home</a> <link href="../../static/app.css" rel="stylesheet">'
        '<a href="https://example.org/x">ext</a> <a href="#top">top</a> <img src="/abs.png">'
        '<a href="../../missing.html">gone</a>'
    )
    out = rewrite_links(html, "docs/run1/validations/a/b.html", SIGNED)
    assert 'href="https://s3/x/index?sig=1"' in out
    assert 'href="https://s3/x/app.css?sig=2"' in out
    assert 'href="https://example.org/x"' in out and 'href="#top"' in out and 'src="/abs.png"' in out
    assert 'href="../../missing.html"' in out


@pytest.mark.unit
def test_rewrites_css_urls() -> None:
    css = "body { background: url('logo.png') } .x { background: url(data:image/png;base64,AAA) }"
    out = rewrite_links(css, "docs/run1/static/app.css", SIGNED)
    assert "url('https://s3/x/logo?sig=4')" in out and "url(data:image/png;base64,AAA)" in out


@pytest.mark.s3
def test_published_site_opens_and_its_links_work(store, stack_settings, s3_prefix, tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text('<a href="sub/page.html">page</a>')
    (tmp_path / "sub" / "page.html").write_text('<a href="../index.html">back</a><p>validation page</p>')
    url = publish_site(store, tmp_path, stack_settings.workspace_bucket, s3_prefix + "site")
    index = httpx.get(url)
    assert index.status_code == 200
    link = re.search(r'href="([^"]+)"', index.text).group(1)  # type: ignore[union-attr]
    page = httpx.get(link)
    assert page.status_code == 200 and "validation page" in page.text
    back = re.search(r'href="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert httpx.get(back).status_code == 200
    # Without a signature the bucket stays private.
    assert httpx.get(url.split("?")[0]).status_code == 403
