"""The sample Great Expectations validates: fixed size, uniform over content hashes, order-independent."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flows.ingest.sample import ItemSample

pytestmark = pytest.mark.unit


def items(ids: list[str], hashes: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "item_id": ids,
            "text": [f"t-{i}" for i in ids],
            "media_uri": pa.nulls(n, pa.string()),
            "fields": pa.nulls(n, pa.string()),
            "content_hash": hashes,
        }
    )


def test_the_k_smallest_content_hashes_are_kept_in_order() -> None:
    sample = ItemSample(3)
    sample.add(items(["a", "b", "c", "d"], ["9", "2", "7", "4"]))
    sample.add(items(["e", "f"], ["1", "8"]))
    got = sample.table()
    assert got.column_names == ["item_id", "text", "media_uri", "fields"]
    assert got["item_id"].to_pylist() == ["e", "b", "d"]
    assert sample.seen == 6


@pytest.mark.parametrize("k", [1, 5, 64])
def test_the_sample_does_not_depend_on_batch_order_or_size(k: int) -> None:
    ids = [f"id-{i:04d}" for i in range(500)]
    hashes = [f"{(i * 7919) % 1000:04d}" for i in range(500)]  # a few ties on the hash: id decides
    hashes[10] = hashes[20]
    one = ItemSample(k)
    one.add(items(ids, hashes))
    other = ItemSample(k)
    for start in reversed(range(0, 500, 37)):
        other.add(items(ids[start : start + 37], hashes[start : start + 37]))
    assert one.table().equals(other.table())
    assert one.table().num_rows == k


def test_an_empty_sample_has_the_item_columns() -> None:
    got = ItemSample(5).table()
    assert got.num_rows == 0
    assert got.schema.names == ["item_id", "text", "media_uri", "fields"]


def test_a_sample_holds_at_least_one_row() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        ItemSample(0)
