"""The sample Great Expectations validates: fixed size, uniform over content keys, order-independent."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from flows.ingest.sample import ItemSample

pytestmark = pytest.mark.unit


def items(ids: list[str]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "item_id": ids,
            "text": [f"t-{i}" for i in ids],
            "media_uri": pa.nulls(n, pa.string()),
            "fields": pa.nulls(n, pa.string()),
            "record": [f'{{"id":"{i}"}}' for i in ids],
        }
    )


def keys(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def test_the_k_smallest_content_keys_are_kept_in_order() -> None:
    sample = ItemSample(3)
    sample.add(items(["a", "b", "c", "d"]), keys([9, 2, 7, 4]))
    sample.add(items(["e", "f"]), keys([1, 2**64 - 1]))
    got = sample.table()
    assert got.column_names == ["item_id", "text", "media_uri", "fields"]
    assert got["item_id"].to_pylist() == ["e", "b", "d"]
    assert sample.seen == 6


@pytest.mark.parametrize("k", [1, 5, 64])
def test_the_sample_does_not_depend_on_batch_order_or_size(k: int) -> None:
    ids = [f"id-{i:04d}" for i in range(500)]
    values = [(i * 7919) % 1000 for i in range(500)]  # a few ties on the key: the id decides
    values[10] = values[20]
    one = ItemSample(k)
    one.add(items(ids), keys(values))
    other = ItemSample(k)
    for start in reversed(range(0, 500, 37)):
        other.add(items(ids[start : start + 37]), keys(values[start : start + 37]))
    assert one.table().equals(other.table())
    assert one.table().num_rows == k
    ranked = sorted(zip(values, ids, strict=True))[:k]
    assert one.table()["item_id"].to_pylist() == [i for _, i in ranked]


def test_an_empty_sample_has_the_item_columns() -> None:
    got = ItemSample(5).table()
    assert got.num_rows == 0
    assert got.schema.names == ["item_id", "text", "media_uri", "fields"]


def test_a_sample_holds_at_least_one_row() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        ItemSample(0)


def test_every_item_needs_its_content_key() -> None:
    with pytest.raises(ValueError, match="2 items but 1 content keys"):
        ItemSample(5).add(items(["a", "b"]), keys([1]))
