"""Presigned media URLs for Label Studio tasks.

Label Studio shows an image or a clip by loading its URL in the annotator's browser, so a task's media URL
must be reachable from that browser without Kazi's S3 credentials: a presigned S3 GET URL, valid for
``Settings.presign_expiry_seconds`` (at most 7 days, SigV4's limit). A work order annotated for longer needs
its tasks' URLs signed again; the URL is not the item's identity (the ``item`` ref is), so that is safe.

Signing is local arithmetic, but botocore takes about half a millisecond per URL, which is 25 s for 50,000
tasks. :class:`Presigner` therefore signs with SigV4 itself (one SHA-256 and one HMAC per URL, the
signing key cached per day), and proves the shortcut per bucket first: it asks botocore for one URL and
recomputes that URL's signature from the same date; only if the two agree does it sign the rest itself,
otherwise it leaves every URL of that bucket to botocore. Either way the URL is one botocore would give.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import parse_qs, quote, urlsplit

from flows.core.s3 import ObjectStore

_ALGORITHM = "AWS4-HMAC-SHA256"
_PROBE_KEY = "kazi-presign-probe"
#: Keys made only of these characters are the same URI-encoded (what most media keys look like).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.~/-]*")


@dataclass
class _Endpoint:
    """Where a bucket's objects are addressed: ``scheme://netloc{path_prefix}/{key}``."""

    scheme: str
    netloc: str
    path_prefix: str
    fast: bool

    @cached_property
    def headers_block(self) -> str:
        """The end of a canonical request: signed headers and the payload marker."""
        return f"host:{self.netloc}\n\nhost\nUNSIGNED-PAYLOAD"

    @cached_property
    def base(self) -> str:
        return f"{self.scheme}://{self.netloc}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class _Hmac:
    """HMAC-SHA256 under one key, from pre-keyed inner and outer hashes (RFC 2104).

    Copying two keyed ``hashlib`` states costs about a third of ``hmac.HMAC.copy``, which matters at 50,000
    URLs a run.
    """

    def __init__(self, key: bytes) -> None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``, the key taken literally (``?`` and ``#`` included)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI of an object")
    return bucket, key


class Presigner:
    """``s3://bucket/key`` -> a presigned GET URL valid for ``expires_in`` seconds.

    ``http(s)://`` URIs are returned unchanged (already loadable by a browser). Build one per task run;
    it holds the S3 credentials and must never become a Prefect parameter.
    """

    def __init__(self, store: ObjectStore, expires_in: int | None = None, *, clock: Callable[[], float] = time.time):
        settings = store.settings
        self.expires_in = int(expires_in or settings.presign_expiry_seconds)
        if not 1 <= self.expires_in <= 7 * 24 * 3600:
            raise ValueError(f"presigned URLs last 1 s to 7 days (SigV4), got {self.expires_in} s")
        self._store = store
        self._access_key = settings.s3_access_key_id
        self._secret = settings.s3_secret_access_key
        self._region = settings.s3_region
        self._clock = clock
        self._endpoints: dict[str, _Endpoint] = {}
        self._day_macs: dict[str, _Hmac] = {}
        # What is the same for every URL signed in the same second: date, query string, string-to-sign head.
        self._second = -1
        self._amz_date = ""
        self._query = ""
        self._to_sign_head = ""

    def __call__(self, uri: str) -> str:
        if uri.startswith(("http://", "https://")):
            return uri
        bucket, key = split_s3_uri(uri)
        endpoint = self._endpoints.get(bucket) or self._probe(bucket)
        if not endpoint.fast:
            return self._store.presign_get(bucket, key, self.expires_in)
        second = int(self._clock())
        if second != self._second:
            self._at(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)))
            self._second = second
        return self._sign(endpoint, key)

    def _at(self, amz_date: str) -> None:
        """Prepare the per-second parts for ``amz_date``."""
        scope = f"{amz_date[:8]}/{self._region}/s3/aws4_request"
        self._amz_date = amz_date
        self._query = (
            f"X-Amz-Algorithm={_ALGORITHM}&X-Amz-Credential={quote(f'{self._access_key}/{scope}', safe='-_.~')}"
            f"&X-Amz-Date={amz_date}&X-Amz-Expires={self.expires_in}&X-Amz-SignedHeaders=host"
        )
        self._to_sign_head = f"{_ALGORITHM}\n{amz_date}\n{scope}\n"
        self._second = -1

    def _day_mac(self, day: str) -> _Hmac:
        """The SigV4 signing key of ``day`` as a keyed HMAC to copy (the chain of four HMACs, once a day)."""
        found = self._day_macs.get(day)
        if found is None:
            key = _hmac(("AWS4" + self._secret.get_secret_value()).encode(), day)
            for part in (self._region, "s3", "aws4_request"):
                key = _hmac(key, part)
            found = self._day_macs[day] = _Hmac(key)
        return found

    def _sign(self, endpoint: _Endpoint, key: str) -> str:
        path = f"{endpoint.path_prefix}/{key if _PLAIN_KEY.fullmatch(key) else quote(key, safe='/~')}"
        canonical = f"GET\n{path}\n{self._query}\n{endpoint.headers_block}"
        to_sign = self._to_sign_head + hashlib.sha256(canonical.encode()).hexdigest()
        signature = self._day_mac(self._amz_date[:8]).hexdigest(to_sign.encode())
        return f"{endpoint.base}{path}?{self._query}&X-Amz-Signature={signature}"

    def _probe(self, bucket: str) -> _Endpoint:
        """Learn the bucket's URL shape from one botocore URL and check this signer reproduces it."""
        reference = self._store.presign_get(bucket, _PROBE_KEY, self.expires_in)
        parts = urlsplit(reference)
        query = parse_qs(parts.query)
        prefix = parts.path.removesuffix(f"/{_PROBE_KEY}")
        endpoint = _Endpoint(parts.scheme, parts.netloc, prefix, fast=True)
        dates = query.get("X-Amz-Date", [])
        agrees = False
        if len(dates) == 1 and parts.path.endswith(f"/{_PROBE_KEY}") and "X-Amz-Security-Token" not in query:
            self._at(dates[0])
            agrees = self._sign(endpoint, _PROBE_KEY) == reference
        if not agrees:
            endpoint = _Endpoint(parts.scheme, parts.netloc, prefix, fast=False)
        self._endpoints[bucket] = endpoint
        return endpoint

    @property
    def fast_buckets(self) -> list[str]:
        """Buckets this presigner signs itself (the others go through botocore)."""
        return [b for b, e in self._endpoints.items() if e.fast]
