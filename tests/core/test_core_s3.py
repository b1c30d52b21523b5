import hashlib
import time

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from flows.core.s3 import ObjectNotFound, ObjectStore, PreconditionFailed, S3Error, parse_uri
from flows.core.settings import load_settings

pytestmark = pytest.mark.s3


def test_put_records_sha256_and_reads_back(store, stack_settings, s3_prefix) -> None:
    bucket = stack_settings.workspace_bucket
    data = b"kazi \x00 bytes \xff"
    info = store.put_bytes(bucket, s3_prefix + "a.bin", data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.etag == hashlib.md5(data).hexdigest()
    head = store.head(bucket, s3_prefix + "a.bin")
    assert head is not None and head.sha256 == info.sha256 and head.size == len(data)
    assert store.get_bytes(bucket, s3_prefix + "a.bin") == data


def test_conditional_write_refuses_to_overwrite(store, stack_settings, s3_prefix) -> None:
    bucket = stack_settings.workspace_bucket
    store.put_bytes(bucket, s3_prefix + "m.json", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed, match="already exists"):
        store.put_bytes(bucket, s3_prefix + "m.json", b"second", if_none_match=True)
    assert store.get_bytes(bucket, s3_prefix + "m.json") == b"first"


def test_list_follows_pagination(store, stack_settings, s3_prefix) -> None:
    bucket = stack_settings.workspace_bucket
    for i in range(23):
        store.put_bytes(bucket, f"{s3_prefix}p/{i:03d}", b"x")
    keys = [o.key for o in store.list_objects(bucket, s3_prefix + "p/", page_size=5)]
    assert keys == [f"{s3_prefix}p/{i:03d}" for i in range(23)]


def test_upload_file_sends_a_large_file_in_parts_and_names_a_missing_bucket(
    store, stack_settings, s3_prefix, tmp_path
) -> None:
    bucket = stack_settings.workspace_bucket
    local = tmp_path / "big.bin"
    data = bytes(range(256)) * (20 * 4096 + 7)  # about 21 MB: three 8 MB parts
    local.write_bytes(data)
    store.upload_file(local, f"{bucket}/{s3_prefix}big.bin")
    head = store.head(bucket, s3_prefix + "big.bin")
    assert head is not None and head.size == len(data) and head.etag.endswith("-3")  # a multipart upload
    assert store.get_bytes(bucket, s3_prefix + "big.bin") == data
    with pytest.raises(S3Error, match="kazi-no-such-bucket"):
        store.upload_file(local, "kazi-no-such-bucket/x.bin")


def test_missing_key_and_missing_bucket_errors(store, stack_settings, s3_prefix) -> None:
    bucket = stack_settings.workspace_bucket
    with pytest.raises(ObjectNotFound, match=s3_prefix + "nope"):
        store.get_bytes(bucket, s3_prefix + "nope")
    assert store.head(bucket, s3_prefix + "nope") is None
    with pytest.raises(S3Error, match=r"bucket 'kazi-no-such-bucket' does not exist.*KAZI_WORKSPACE_BUCKET"):
        store.check("kazi-no-such-bucket")


def test_bad_credentials_fail_fast_naming_the_setting(stack_settings) -> None:
    bad = ObjectStore(stack_settings.model_copy(update={"s3_secret_access_key": SecretStr("wrong")}))
    started = time.monotonic()
    with pytest.raises(S3Error, match="KAZI_S3_SECRET_ACCESS_KEY"):
        bad.check()
    assert time.monotonic() - started < 10


def test_unreachable_endpoint_names_the_setting(stack_settings) -> None:
    bad = ObjectStore(stack_settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9"}))
    with pytest.raises(S3Error, match="KAZI_S3_ENDPOINT_URL"):
        bad.check()


def test_anonymous_access_is_refused(stack_settings) -> None:
    assert httpx.get(f"{stack_settings.s3_endpoint_url}/{stack_settings.workspace_bucket}/").status_code == 403


def test_pyarrow_filesystem_shares_endpoint_and_credentials(store, stack_settings, s3_prefix) -> None:
    path = f"{stack_settings.workspace_bucket}/{s3_prefix}t.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), path, filesystem=store.filesystem)
    assert pq.read_table(path, filesystem=store.filesystem).column("x").to_pylist() == list(range(1000))
    assert store.head(stack_settings.workspace_bucket, s3_prefix + "t.parquet") is not None


def test_existing_and_presigned_urls(store, stack_settings, s3_prefix) -> None:
    bucket = stack_settings.workspace_bucket
    store.put_bytes(bucket, s3_prefix + "img.png", b"png")
    present = f"s3://{bucket}/{s3_prefix}img.png"
    absent = f"s3://{bucket}/{s3_prefix}missing.png"
    assert store.existing([present, absent, "not-a-uri"]) == {present}
    url = store.presign_get(bucket, s3_prefix + "img.png", expires_in=60)
    assert httpx.get(url).content == b"png"
    short = store.presign_get(bucket, s3_prefix + "img.png", expires_in=1)
    time.sleep(2.1)
    assert httpx.get(short).status_code == 403


def test_parse_uri() -> None:
    assert parse_uri("s3://b/k/x.csv") == ("b", "k/x.csv")
    with pytest.raises(S3Error):
        parse_uri("http://b/k")


def test_stores_with_the_same_endpoint_and_credentials_share_one_client() -> None:
    settings = load_settings()
    one, two = ObjectStore(settings), ObjectStore(settings)
    assert one.client is two.client  # a flow run's tasks each build a store: one client between them
    other = settings.model_copy(update={"s3_secret_access_key": SecretStr("another-secret")})
    assert ObjectStore(other).client is not one.client
    assert ObjectStore(other).client.meta.endpoint_url == one.client.meta.endpoint_url
