"""Checking that the media a dataset points at exist and can be read (S3 HEAD per URI, in parallel)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from botocore.exceptions import BotoCoreError, ClientError

from flows.core.s3 import ObjectStore, S3Error, parse_uri
from flows.ingest.contract import MISSING, MediaCheck

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_REFUSED = {"403", "AccessDenied", "Forbidden", "AllAccessDisabled"}


def _head_media(store: ObjectStore, bucket: str, key: str) -> None:
    store.client.head_object(Bucket=bucket, Key=key)


def media_check(store: ObjectStore, workers: int = 16) -> MediaCheck:
    """HEAD each media URI: a missing object or a bucket Kazi may not read is a problem of the row (it is
    quarantined with the reason); any other S3 error fails the ingest, as a rerun may well pass."""

    def one(uri: str) -> tuple[str, str | None]:
        try:
            bucket, key = parse_uri(uri)
        except S3Error:
            return uri, None  # not an s3:// URI: the contract's regex has quarantined it already
        try:
            _head_media(store, bucket, key)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                return uri, MISSING
            if code in _REFUSED:
                return uri, (
                    f"cannot be read: S3 refused Kazi access to bucket {bucket!r} ({code}); give Kazi's S3 "
                    "user (KAZI_S3_ACCESS_KEY_ID) read access (s3:GetObject) to it, or copy the media to a bucket "
                    "it can read, then run the ingest again"
                )
            raise S3Error(f"S3 error on {uri} while checking media: {code}: {e}") from None
        except BotoCoreError as e:
            raise S3Error(f"S3 error on {uri} while checking media: {e}") from None
        return uri, None

    def check(uris: list[str]) -> dict[str, str]:
        with ThreadPoolExecutor(workers) as pool:
            return {uri: problem for uri, problem in pool.map(one, uris) if problem is not None}

    return check
