"""The S3 adapter: one boto3 client and one ``pyarrow.fs.S3FileSystem`` over the same settings.

Every write records the object's SHA-256 in its metadata (and sends Content-MD5, so the server checks
the bytes it got). Errors are translated into :class:`S3Error` with one line that names the setting
or object to fix, instead of a botocore traceback.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import mimetypes
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import boto3
import pyarrow.fs as pafs
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from flows.core.settings import Settings

_PART = 8 << 20  # multipart part size of file uploads

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MULTIPART_THRESHOLD = 64 * 1024 * 1024


class S3Error(RuntimeError):
    """An S3 call failed; the message says which setting or object to fix."""


class ObjectNotFound(S3Error):
    pass


class PreconditionFailed(S3Error):
    """A conditional request failed: a write found the object already there, or a read found it replaced."""


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    sha256: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise S3Error(f"{uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None, region: str, access_key_id: str, secret_access_key: str) -> S3Client:
    """One boto3 client per endpoint and credentials in a process, shared by every :class:`ObjectStore`
    (boto3 clients are thread-safe). A flow run's tasks each build their own store, and a new client cost
    0.014 s each (the process's first, 0.09 s).
    """
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            # SeaweedFS and many S3-compatible servers reject the flexible CRC checksums
            # that recent botocore adds by default; Content-MD5 + our SHA-256 cover integrity.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=32,
        ),
    )


class ObjectStore:
    """Kazi's view of S3. Build it once per flow run and pass it in."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: S3Client | None = None
        self._fs: pafs.S3FileSystem | None = None

    # -- clients -----------------------------------------------------------------------------
    @property
    def client(self) -> S3Client:
        if self._client is None:
            s = self.settings
            self._client = _client(
                s.s3_endpoint_url, s.s3_region, s.s3_access_key_id, s.s3_secret_access_key.get_secret_value()
            )
        return self._client

    @property
    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow filesystem over the same endpoint and credentials (for streaming Parquet)."""
        if self._fs is None:
            s = self.settings
            kwargs: dict[str, Any] = {
                "access_key": s.s3_access_key_id,
                "secret_key": s.s3_secret_access_key.get_secret_value(),
                "region": s.s3_region,
                "connect_timeout": 5,
                "request_timeout": 60,
            }
            if s.s3_endpoint_url:
                parsed = urlparse(s.s3_endpoint_url)
                kwargs["endpoint_override"] = parsed.netloc
                kwargs["scheme"] = parsed.scheme or "https"
            self._fs = pafs.S3FileSystem(**kwargs)
        return self._fs

    # -- error translation -----------------------------------------------------------------
    def _explain(self, exc: Exception, bucket: str, key: str | None = None) -> S3Error:
        s = self.settings
        where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
        if isinstance(exc, EndpointConnectionError):
            return S3Error(
                f"Cannot reach S3 at {s.s3_endpoint_url or 'AWS'}: check KAZI_S3_ENDPOINT_URL "
                "(for the local stack run `kazi stack up`)."
            )
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}:
                return S3Error(
                    f"S3 refused the credentials for {where} ({code}): check KAZI_S3_ACCESS_KEY_ID and "
                    "KAZI_S3_SECRET_ACCESS_KEY."
                )
            if code in {"NoSuchBucket"} or (code == "404" and key is None):
                return S3Error(
                    f"S3 bucket {bucket!r} does not exist: create it or fix the setting that names it "
                    "(KAZI_WORKSPACE_BUCKET for Kazi's workspace, the work order's URIs for client data)."
                )
            if code in {"NoSuchKey", "404", "NotFound"}:
                return ObjectNotFound(f"No object at {where}.")
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return PreconditionFailed(f"{where} already exists (a conditional write refused to overwrite it).")
            return S3Error(f"S3 error on {where}: {code}: {exc.response.get('Error', {}).get('Message', '')}")
        return S3Error(f"S3 error on {where}: {exc}")

    # -- buckets -----------------------------------------------------------------------------
    def check(self, bucket: str | None = None) -> None:
        """Fail fast with one clear line when S3 is unreachable, credentials are wrong or the bucket is missing."""
        bucket = bucket or self.settings.workspace_bucket
        try:
            self.client.head_bucket(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, bucket) from None

    def ensure_bucket(self, bucket: str) -> None:
        try:
            self.client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in {"404", "NoSuchBucket", "NotFound"}:
                raise self._explain(exc, bucket) from None
        except BotoCoreError as exc:
            raise self._explain(exc, bucket) from None
        try:
            self.client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._explain(exc, bucket) from None

    # -- objects -----------------------------------------------------------------------------
    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        if_none_match: bool = False,
    ) -> ObjectInfo:
        """Write one object with its SHA-256 in metadata; ``if_none_match`` refuses to overwrite."""
        digest = sha256_hex(data)
        kwargs: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Body": data,
            "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "Metadata": {"sha256": digest},
            "ContentType": content_type or mimetypes.guess_type(key)[0] or "application/octet-stream",
        }
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        try:
            resp = self.client.put_object(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, bucket, key) from None
        return ObjectInfo(bucket, key, len(data), resp["ETag"].strip('"'), digest)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, bucket, key) from None

    def open_version(self, bucket: str, key: str, etag: str) -> Any:
        """The body of an object, streaming, only if its ETag is still ``etag`` (a conditional GET).

        Raises:
            PreconditionFailed: the object was replaced since its ETag was read; the message says what to do.
        """
        # An entity tag is quoted in HTTP (S3 lists ETags quoted; ObjectInfo keeps them bare).
        quoted = etag if etag.startswith('"') else f'"{etag}"'
        try:
            return self.client.get_object(Bucket=bucket, Key=key, IfMatch=quoted)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise PreconditionFailed(
                    f"s3://{bucket}/{key} changed while it was being ingested (its ETag is no longer {etag}): run "
                    "the ingest again once the client's upload has finished; it will make a new ingest version."
                ) from None
            raise self._explain(exc, bucket, key) from None
        except BotoCoreError as exc:
            raise self._explain(exc, bucket, key) from None

    def get_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end - 1`` of an object (a ranged GET; fewer when the object is shorter).

        Reads only what it needs, e.g. an image's header for its pixel size. A range starting at or past
        the end of the object gives ``b""``.
        """
        if start < 0 or end <= start:
            raise ValueError(f"bad byte range {start}..{end} for s3://{bucket}/{key}")
        try:
            resp = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            return resp["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in {"InvalidRange", "416"}:
                return b""
            raise self._explain(exc, bucket, key) from None
        except BotoCoreError as exc:
            raise self._explain(exc, bucket, key) from None

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            resp = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            err = self._explain(exc, bucket, key)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from None
        except BotoCoreError as exc:
            raise self._explain(exc, bucket, key) from None
        return ObjectInfo(
            bucket,
            key,
            resp["ContentLength"],
            resp["ETag"].strip('"'),
            resp.get("Metadata", {}).get("sha256"),
        )

    def list_objects(self, bucket: str, prefix: str = "", *, page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, following pagination."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(bucket, obj["Key"], obj["Size"], obj["ETag"].strip('"'))
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, bucket, prefix) from None

    def existing(self, uris: Iterable[str], workers: int = 16) -> set[str]:
        """The subset of ``uris`` that exist (HEAD requests in parallel)."""
        uris = list(dict.fromkeys(uris))

        def exists(uri: str) -> str | None:
            try:
                bucket, key = parse_uri(uri)
            except S3Error:
                return None
            return uri if self.head(bucket, key) is not None else None

        with ThreadPoolExecutor(workers) as pool:
            return {u for u in pool.map(exists, uris) if u is not None}

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        keys = [o.key for o in self.list_objects(bucket, prefix)]
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            try:
                self.client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk]})
            except (ClientError, BotoCoreError) as exc:
                raise self._explain(exc, bucket, prefix) from None
        return len(keys)

    def presign_get(self, bucket: str, key: str, expires_in: int | None = None) -> str:
        expires = expires_in or self.settings.presign_expiry_seconds
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
        )

    def upload_file(self, local: Path, path: str) -> None:
        """Upload a local file to ``path`` (``bucket/key``) with boto3's managed transfer: multipart in
        8 MB parts, two at a time, so memory stays at about 16 MB whatever the file's size (pyarrow's S3
        output stream buffers parts without back-pressure: measured +200 MB for a file of 10M rows).
        """
        bucket, key = path.split("/", 1)
        config = TransferConfig(multipart_threshold=_PART, multipart_chunksize=_PART, max_concurrency=2)
        try:
            self.client.upload_file(str(local), bucket, key, Config=config)
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._explain(exc, bucket, key) from None

    def upload_dir(self, local_dir: Path, bucket: str, prefix: str) -> list[ObjectInfo]:
        """Upload a folder (e.g. Great Expectations Data Docs) with the right Content-Types."""
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())

        def put(path: Path) -> ObjectInfo:
            key = f"{prefix.rstrip('/')}/{path.relative_to(local_dir).as_posix()}"
            return self.put_bytes(bucket, key, path.read_bytes())

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(put, files))
