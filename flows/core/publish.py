"""Publish a static HTML site (Great Expectations Data Docs, QA reports) to a private S3 bucket.

Buckets stay private, so a link in a Prefect artifact must be presigned. A presigned page cannot
follow its own relative links to other private objects. So every relative ``href``/``src`` in
the uploaded HTML and CSS is rewritten to that object's presigned URL. All of them share one
bounded expiry, and the whole site opens from the one link to its index page.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from flows.core.s3 import ObjectStore

_REF = re.compile(r"""(?P<attr>\b(?:href|src)\s*=\s*)(?P<q>["'])(?P<url>[^"'#?]+)(?P<rest>[^"']*)(?P=q)""")
_CSS_URL = re.compile(r"""url\((?P<q>["']?)(?P<url>[^)"'#?]+)(?P<rest>[^)"']*)(?P=q)\)""")
_TEXT_SUFFIXES = {".html", ".htm", ".css"}


def _is_relative(url: str) -> bool:
    return not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^/|^//", url)


def _resolve(url: str, page_key: str) -> str | None:
    """The key a link of the page (or stylesheet) at ``page_key`` points at; None when it leaves the site."""
    if not _is_relative(url):
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(page_key), url))


def _local_targets(text: str, page_key: str) -> set[str]:
    """Keys of the relative links in ``text`` (a page or stylesheet at ``page_key``), resolved."""
    urls = [m.group("url") for m in _REF.finditer(text)] + [m.group("url") for m in _CSS_URL.finditer(text)]
    return {key for key in (_resolve(url, page_key) for url in urls) if key is not None}


def linked_files(local_dir: Path) -> list[Path]:
    """Every page (HTML) under ``local_dir`` and the files the pages link to, directly or through a
    stylesheet, in path order: what a reader of the site can reach."""
    files = {p.relative_to(local_dir).as_posix(): p for p in local_dir.rglob("*") if p.is_file()}
    todo = [key for key, p in files.items() if p.suffix in {".html", ".htm"}]
    keep = set(todo)
    while todo:
        key = todo.pop()
        if files[key].suffix not in _TEXT_SUFFIXES:
            continue
        for target in _local_targets(files[key].read_text(encoding="utf-8", errors="replace"), key):
            if target in files and target not in keep:
                keep.add(target)
                todo.append(target)
    return sorted(files[key] for key in keep)


def rewrite_links(text: str, page_key: str, signed: dict[str, str]) -> str:
    """Replace relative links of ``page_key`` that resolve to a published key with its signed URL."""

    def target(url: str) -> str | None:
        key = _resolve(url, page_key)
        return None if key is None else signed.get(key)

    def html_ref(m: re.Match[str]) -> str:
        new = target(m.group("url"))
        return m.group(0) if new is None else f"{m.group('attr')}{m.group('q')}{new}{m.group('q')}"

    def css_ref(m: re.Match[str]) -> str:
        new = target(m.group("url"))
        return m.group(0) if new is None else f"url('{new}')"

    return _CSS_URL.sub(css_ref, _REF.sub(html_ref, text))


def publish_site(
    store: ObjectStore,
    local_dir: Path,
    bucket: str,
    prefix: str,
    *,
    index: str = "index.html",
    only_linked: bool = False,
) -> str:
    """Upload ``local_dir`` under ``prefix`` with links rewritten; returns the index page's signed URL.

    With ``only_linked``, only the pages and the files they link to go up (:func:`linked_files`): a
    Great Expectations site carries 4 MB of images and fonts none of its pages use.
    """
    prefix = prefix.rstrip("/")
    files = linked_files(local_dir) if only_linked else sorted(p for p in local_dir.rglob("*") if p.is_file())
    keys = {p: f"{prefix}/{p.relative_to(local_dir).as_posix()}" for p in files}
    signed = {key: store.presign_get(bucket, key) for key in keys.values()}
    for path, key in keys.items():
        data = path.read_bytes()
        if path.suffix in _TEXT_SUFFIXES:
            data = rewrite_links(data.decode("utf-8", errors="replace"), key, signed).encode("utf-8")
        store.put_bytes(bucket, key, data)
    index_key = f"{prefix}/{index}"
    if index_key not in signed:
        raise FileNotFoundError(f"{local_dir} has no {index}")
    return signed[index_key]
