import re
from pathlib import Path

import httpx
import pytest

from flows.core.publish import linked_files, publish_site, rewrite_links
from flows.core.s3 import ObjectStore
from flows.core.settings import Settings

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


def site_with_unused_files(root: Path) -> None:
    """Pages, a stylesheet they use and the font it uses, and static files nothing links to."""
    (root / "validations").mkdir()
    (root / "static" / "styles").mkdir(parents=True)
    (root / "static" / "images").mkdir()
    (root / "index.html").write_text('<a href="validations/run.html">run</a><link href="static/styles/site.css">')
    (root / "validations" / "run.html").write_text(
        '<a href="../index.html">back</a><img src="../static/images/ok.png">'
    )
    (root / "static" / "styles" / "site.css").write_text("@font-face { src: url('font.otf') }")
    (root / "static" / "styles" / "font.otf").write_bytes(b"font")
    (root / "static" / "images" / "ok.png").write_bytes(b"png")
    (root / "static" / "images" / "tutorial.gif").write_bytes(b"g" * 100_000)
    (root / "static" / "styles" / "unused.css").write_text("body { background: url('../images/tutorial.gif') }")
    (root / "orphan.html").write_text("<p>a page nothing links to is still a page</p>")


@pytest.mark.unit
def test_linked_files_are_the_pages_and_what_they_use_through_stylesheets(tmp_path: Path) -> None:
    site_with_unused_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in linked_files(tmp_path)] == [
        "index.html",
        "orphan.html",
        "static/images/ok.png",
        "static/styles/font.otf",
        "static/styles/site.css",
        "validations/run.html",
    ]


@pytest.mark.s3
def test_a_site_published_with_only_linked_files_leaves_the_unused_ones_out(
    store: ObjectStore, stack_settings: Settings, s3_prefix: str, tmp_path: Path
) -> None:
    site_with_unused_files(tmp_path)
    bucket = stack_settings.workspace_bucket
    url = publish_site(store, tmp_path, bucket, s3_prefix + "lean", only_linked=True)
    keys = sorted(o.key.removeprefix(s3_prefix + "lean/") for o in store.list_objects(bucket, s3_prefix + "lean/"))
    assert keys == [p.relative_to(tmp_path).as_posix() for p in linked_files(tmp_path)]
    page = httpx.get(re.search(r'href="([^"]+)"', httpx.get(url).text).group(1))  # type: ignore[union-attr]
    image = re.search(r'src="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert httpx.get(image).content == b"png"  # a linked file went up and its signed link works


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
