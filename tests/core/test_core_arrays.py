"""flows.core.arrays: one contiguous array, and no copy when there is nothing to combine."""

from __future__ import annotations

import pyarrow as pa
import pytest

from flows.core.arrays import combine

pytestmark = pytest.mark.unit


def test_one_chunk_is_returned_as_it_is_without_a_copy() -> None:
    chunk = pa.array(["a", "bc", None, "def"]).slice(1)
    got = combine(pa.chunked_array([chunk]))
    assert got.equals(chunk)
    # The same buffers: combine_chunks would have copied them.
    assert got.buffers()[2].address == chunk.buffers()[2].address
    assert pa.chunked_array([chunk]).combine_chunks().buffers()[2].address != chunk.buffers()[2].address


def test_several_chunks_are_concatenated_and_an_array_is_itself() -> None:
    parts = pa.chunked_array([pa.array([1, 2]), pa.array([3]), pa.array([], pa.int64())])
    assert combine(parts).to_pylist() == [1, 2, 3]
    assert isinstance(combine(parts), pa.Array)
    assert combine(pa.chunked_array([], pa.string())).to_pylist() == []
    array = pa.array([1.5])
    assert combine(array) is array
