"""Canonical items: records as JSON, ids, id keys, digests, shards, safe S3 key parts."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flows.core.models import ColumnMapping
from flows.core.schemas import ITEMS
from flows.ingest.normalise import (
    N_SHARDS,
    as_text,
    content_digest,
    digest,
    hex_digest,
    id_key,
    json_escape,
    json_objects,
    normalise,
    safe_key_part,
)
from flows.ingest.read import RawBatch

pytestmark = pytest.mark.unit

#: In the spirit of the "big list of naughty strings".
NAUGHTY = [
    "",
    " ",
    "null",
    "None",
    "undefined",
    "0",
    "-1e309",
    "' OR '1'='1'; DROP TABLE items; --",
    '"; alert(1); "',
    "<script>alert('x')</script>",
    "\\",
    "\\\\\\n",
    '"',
    "\n\r\t\b\f\v",
    "\x00",
    "a\x00b",
    "\x01\x1f\x7f\x80\x9f",
    "\u202eevil\u202c RTL override",
    "مرحبا بالعالم",
    "שָׁלוֹם",
    "zero\u200bwidth\u200d\ufeffjoiners",
    "😀👩🏽‍💻🏳️‍🌈",
    "Ṱ̺̺̕o͞ ̷i̲̬͇̪͙n̝̗͕v̟̜̘̦͟o̶̙̰̠kè͚̮̺̪̹̱̤ ̖t̝͕̳̣̻̪͞h̼͓̲̦̳̘̲e͇̣̰̦̬͎ ̢̼̻̱̘h͚͎͙̜̣̲ͅi̦̲̣̰̤v̻͍e̺̭̳̪̰-m̢iͅn̖̺̞̲̯̰d̵̼̟͙̩̼̘̳",
    "\u2028\u2029",
    "../../etc/passwd",
    "%00%2e%2e%2f",
    "${jndi:ldap://x}",
    "𝕿𝖍𝖊 𝖖𝖚𝖎𝖈𝖐",
    "ｆｕｌｌｗｉｄｔｈ",
    "x" * 1000,
]


def raw_batch(table: pa.Table, source: str = "s3://in/f.csv") -> RawBatch:
    return RawBatch(
        source_object=source,
        table=table,
        rows=np.arange(1, table.num_rows + 1, dtype=np.int64),
        rejected=pa.table({}),
        encoding="utf-8",
    )


def test_json_objects_match_json_dumps_for_naughty_strings() -> None:
    values = pa.array(NAUGHTY, pa.string())
    reversed_values = pa.array(NAUGHTY[::-1], pa.string())
    out = json_objects(
        ["value", 'k"e\\y\n', "ü"], [values, reversed_values, pa.array([None] * len(NAUGHTY), pa.string())]
    )
    for i, text in enumerate(out.to_pylist()):
        row = {"value": NAUGHTY[i], 'k"e\\y\n': NAUGHTY[::-1][i], "ü": None}
        assert text == json.dumps(row, ensure_ascii=False, separators=(",", ":"))
        assert json.loads(text) == row


@pytest.mark.parametrize("value", NAUGHTY)
def test_json_escape_round_trips_each_naughty_string(value: str) -> None:
    escaped = json_escape(pa.array([value, None]))
    assert escaped[1].as_py() is None
    assert json.loads('"' + escaped[0].as_py() + '"') == value


def test_json_objects_of_no_columns_and_of_no_rows() -> None:
    assert json_objects([], []).to_pylist() == []
    assert json_objects(["a"], [pa.array([], pa.string())]).to_pylist() == []


def test_normalise_maps_columns_and_keeps_the_record_in_file_order() -> None:
    table = pa.table(
        {
            "zeta": ["z1", "z2"],
            "sku": ["  A-1 ", "b-2"],
            "img": [" s3://bkt/a.jpg ", "s3://bkt/b.jpg"],
            "caption": ["  keep  spaces ", ""],
        }
    )
    canon = normalise(raw_batch(table), ColumnMapping(item_id="sku", media_uri="img", text="caption"))
    items = canon.items
    assert items.schema.names == ITEMS.names
    assert items["item_id"].to_pylist() == ["A-1", "b-2"]
    assert items["client_item_id"].to_pylist() == ["  A-1 ", "b-2"]
    assert items["media_uri"].to_pylist() == ["s3://bkt/a.jpg", "s3://bkt/b.jpg"]
    assert items["text"].to_pylist() == ["  keep  spaces ", ""]
    assert items["record"].to_pylist()[0] == (
        '{"zeta":"z1","sku":"  A-1 ","img":" s3://bkt/a.jpg ","caption":"  keep  spaces "}'
    )
    assert items["source_object"].to_pylist() == ["s3://in/f.csv"] * 2
    assert items["source_row"].to_pylist() == [1, 2]
    assert items["fields"].null_count == 2
    assert canon.missing == {}
    assert items.cast(ITEMS).num_rows == 2


def test_naughty_strings_survive_in_record_and_text() -> None:
    ids = [f"id-{i}" for i in range(len(NAUGHTY))]
    table = pa.table({"id": ids, "text": NAUGHTY})
    canon = normalise(raw_batch(table), ColumnMapping(item_id="id", text="text"))
    assert canon.items["text"].to_pylist() == NAUGHTY
    assert [json.loads(r)["text"] for r in canon.items["record"].to_pylist()] == NAUGHTY


def test_blank_ids_are_null_and_blank_media_is_null() -> None:
    table = pa.table({"id": ["   ", "", "x"], "img": ["", "  ", "s3://b/k"]})
    items = normalise(raw_batch(table), ColumnMapping(item_id="id", media_uri="img")).items
    assert items["item_id"].to_pylist() == [None, None, "x"]
    assert items["media_uri"].to_pylist() == [None, None, "s3://b/k"]


def test_digest_ids_without_an_id_column() -> None:
    table = pa.table({"text": ["same", "same", "other"], "n": ["1", "1", "1"]})
    items = normalise(raw_batch(table), ColumnMapping(text="text")).items
    ids = items["item_id"].to_pylist()
    assert all(i.startswith("h-") and len(i) == 26 and int(i[2:], 16) >= 0 for i in ids)
    assert ids[0] == ids[1] != ids[2]
    assert items["client_item_id"].null_count == 3
    again = normalise(raw_batch(table, "s3://elsewhere/x.csv"), ColumnMapping(text="text")).items
    assert again["item_id"].to_pylist() == ids  # a function of the row, not of where it came from


def test_listing_fields_are_a_json_object_in_mapping_order() -> None:
    table = pa.table({"id": ["1", "2"], "tel": ["+254 700", None], "name": ["Duka", 'Kiosk "A"']})
    canon = normalise(raw_batch(table), ColumnMapping(item_id="id", fields={"name": "name", "phone": "tel"}))
    assert canon.items["fields"].to_pylist() == [
        '{"name":"Duka","phone":"+254 700"}',
        '{"name":"Kiosk \\"A\\"","phone":null}',
    ]
    assert canon.check.column_names == ["item_id", "text", "media_uri", "fields.name", "fields.phone"]


def test_missing_mapped_columns_are_reported_and_null() -> None:
    table = pa.table({"id": ["1"]})
    canon = normalise(raw_batch(table), ColumnMapping(item_id="id", media_uri="image", fields={"phone": "tel"}))
    assert canon.missing == {"media_uri": "image", "fields.phone": "tel"}
    assert canon.items["media_uri"].to_pylist() == [None]
    assert canon.items["fields"].to_pylist() == ['{"phone":null}']
    assert not canon.has_content[0]


def test_content_keys_follow_the_payload_not_the_id() -> None:
    table = pa.table({"id": ["a", "b", "c", "d"], "t": ["x", "x", "y", " "], "extra": ["1", "2", "3", "4"]})
    canon = normalise(raw_batch(table), ColumnMapping(item_id="id", text="t"))
    keys = [tuple(k) for k in canon.content_keys.tolist()]
    assert keys[0] == keys[1] != keys[2]
    assert canon.has_content.tolist() == [True, True, True, False]
    assert "content_hash" not in canon.items.column_names  # recomputed when needed, never stored


@pytest.mark.parametrize(
    ("a", "b"),
    [("A1", "a1"), (" A1", "A1 "), ("\tA1\n", "a1"), ("É", "e\u0301"), ("ÉCOLE", "école"), ("İd", "i̇d")],
)
def test_id_keys_ignore_case_surrounding_whitespace_and_normal_form(a: str, b: str) -> None:
    keys = id_key(pa.array([a, b])).to_pylist()
    assert keys[0] == keys[1]


@pytest.mark.parametrize(("a", "b"), [("A 1", "A1"), ("a-1", "a_1"), ("１", "1")])
def test_id_keys_keep_real_differences(a: str, b: str) -> None:
    keys = id_key(pa.array([a, b])).to_pylist()
    assert keys[0] != keys[1]


def test_shards_are_stable_and_in_range() -> None:
    table = pa.table({"id": [f"item-{i}" for i in range(2_000)]})
    shards = normalise(raw_batch(table), ColumnMapping(item_id="id")).items["shard"].to_numpy()
    assert shards.min() >= 0 and shards.max() < N_SHARDS
    assert len(np.unique(shards)) == N_SHARDS  # spread over every shard
    again = normalise(raw_batch(table.slice(1_000)), ColumnMapping(item_id="id")).items["shard"].to_numpy()
    assert (again == shards[1_000:]).all()
    upper = pa.table({"id": [f"ITEM-{i}" for i in range(2_000)]})
    assert (normalise(raw_batch(upper), ColumnMapping(item_id="id")).items["shard"].to_numpy() == shards).all()


# --- digests --------------------------------------------------------------------------------------

TRICKY = [
    "",
    "\x00",
    "\x00\x00",
    "a",
    "a\x00",
    "abcdefgh",
    "abcdefgh\x00",
    "abcdefg",
    "abcdefghabcdefgh",
    "12345678abcdefgh",
    "abcdefgh12345678",
    "hgfedcba",
    "ab",
    "ba",
    "x" * 64,
    "x" * 65,
    "ü",
]


_MASK = (1 << 64) - 1


def fmix(x: int) -> int:
    """SplitMix64's finaliser, in Python."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def reference_digest(values: list[str | None]) -> list[tuple[int, int]]:
    """The digest's definition, one value at a time in Python (see :func:`flows.ingest.normalise.digest`)."""
    mask = _MASK
    out = []
    for value in values:
        if value is None:
            out.append((0x6E756C6C6E756C6C, 0x4E554C4C4E554C4C))
            continue
        data = value.encode("utf-8")
        hx = ha = 0
        for pos, start in enumerate(range(0, len(data), 8), start=1):
            word = int.from_bytes(data[start : start + 8].ljust(8, b"\0"), "little")
            mixed = fmix(((pos * 0x9E3779B97F4A7C15) & mask) ^ word)
            hx ^= mixed
            ha = (ha + mixed) & mask
        n = len(data)
        out.append(
            (
                fmix(hx ^ ((n * 0x94D049BB133111EB) & mask) ^ 0x243F6A8885A308D3),
                fmix((ha + n * 0x9E3779B97F4A7C15 + 0x13198A2E03707344) & mask),
            )
        )
    return out


def test_digests_follow_their_definition() -> None:
    rng = np.random.default_rng(3)
    alphabet = list('abcXYZ019 \x00\n"\\üé日本🙂')
    values: list[str | None] = [*TRICKY, None]
    values += ["".join(rng.choice(alphabet, int(size))) for size in rng.integers(0, 40, 300)]
    values += [None if rng.random() < 0.1 else v for v in values[:50]]
    arr = pa.array(values, pa.string())
    assert [tuple(d) for d in digest(arr).tolist()] == reference_digest(values)
    assert [tuple(d) for d in digest(arr.slice(7, 100)).tolist()] == reference_digest(values[7:107])
    large = arr.cast(pa.large_string())
    assert [tuple(d) for d in digest(large).tolist()] == reference_digest(values)


def test_digests_are_pinned() -> None:
    # Shards and content-hash item ids derive from these: a change here moves every item of every client.
    got = digest(pa.array(["", "a", "IMG-000000001", "Zoë from Zürich 🙂", "x" * 65, None]))
    assert [(hex(int(a)), hex(int(b))) for a, b in got] == [
        ("0xe9e0033e3badaf36", "0xdfc7a99951f24649"),
        ("0xc7e735c54bf996d0", "0x87549339fa56ec75"),
        ("0x72af55ed7110ad8e", "0x3f6aaa297e75ded9"),
        ("0xf4ba432e3db7a6de", "0x6dc9442d0eeca3cc"),
        ("0x8f1cb8b1ca3551d6", "0x20ed3d5e4ad560a2"),
        ("0x6e756c6c6e756c6c", "0x4e554c4c4e554c4c"),
    ]


def test_content_keys_are_pinned() -> None:
    # Content duplicates and the sample of accepted items derive from these (values of the numpy version).
    text = pa.array(["Zoë from Zürich 🙂", "", None, "hello", "hello"])
    media = pa.array([None, "s3://b/k.jpg", None, None, "s3://b/k.jpg"])
    fields = pa.array([None, None, '{"name":"x"}', None, None])
    got = content_digest(text, media, fields)
    assert [(hex(int(a)), hex(int(b))) for a, b in got] == [
        ("0x1ff272cf83325ab9", "0x6d7b222cb41c4240"),
        ("0x5e9cafeb422e2ce9", "0x48623dea5e9c5fe4"),
        ("0xfce5d027eed581a4", "0xc46f9a70cca492e8"),
        ("0x19d94202bdf4e288", "0x36ff6b6fa656febd"),
        ("0x6d9d6bc0cd236a8f", "0xf85e267c6bbf19b"),
    ]


def test_content_keys_follow_their_definition() -> None:
    """Each part's digest folded in, in order, from (0, K3):
    hi = fmix(hi ^ (d_hi + i*K1)), lo = fmix(lo + (d_lo ^ i*K2))."""
    mask = _MASK
    rng = np.random.default_rng(5)
    parts = [[None if rng.random() < 0.3 else f"v{int(rng.integers(0, 9))}" for _ in range(200)] for _ in range(3)]
    want = []
    for row in zip(*(reference_digest(p) for p in parts), strict=True):
        hi, lo = 0, 0x94D049BB133111EB
        for i, (d_hi, d_lo) in enumerate(row, start=1):
            hi = fmix(hi ^ ((d_hi + i * 0x9E3779B97F4A7C15) & mask))
            lo = fmix((lo + (d_lo ^ ((i * 0xBF58476D1CE4E5B9) & mask))) & mask)
        want.append((hi, lo))
    got = content_digest(*(pa.array(p, pa.string()) for p in parts))
    assert [tuple(d) for d in got.tolist()] == want
    sliced = content_digest(*(pa.array(p, pa.string()).slice(50, 100) for p in parts))
    assert [tuple(d) for d in sliced.tolist()] == want[50:150]


def test_digests_differ_for_different_values_and_match_for_equal_ones() -> None:
    d = digest(pa.array([*TRICKY, None, *TRICKY]))
    first = [tuple(x) for x in d[: len(TRICKY) + 1].tolist()]
    assert len(set(first)) == len(TRICKY) + 1  # null has its own digest, unlike ""
    assert [tuple(x) for x in d[len(TRICKY) + 1 :].tolist()] == first[:-1]


def test_digest_of_a_slice_equals_digest_of_a_copy() -> None:
    arr = pa.array([*TRICKY, *TRICKY])
    sliced = arr.slice(3, 20)
    copy = pa.array(sliced.to_pylist())
    assert (digest(sliced) == digest(copy)).all()


def test_digests_do_not_collide_on_a_million_similar_values() -> None:
    values = pa.array([f"IMG-{i:09d}" for i in range(1_000_000)])
    d = digest(values)
    assert len(np.unique(d[:, 0])) == 1_000_000
    assert len(np.unique(d[:, 1])) == 1_000_000


def test_hex_digest() -> None:
    d = np.array([[0x0123456789ABCDEF, 0xFEDCBA9876543210]], dtype=np.uint64)
    assert hex_digest(d).to_pylist() == ["0123456789abcdeffedcba9876543210"]
    assert hex_digest(d, 24, prefix="h-").to_pylist() == ["h-0123456789abcdeffedcba98"]
    assert hex_digest(np.zeros((0, 2), np.uint64)).to_pylist() == []


# --- safe key parts -------------------------------------------------------------------------------

KEYS = ["a b", "../etc/passwd", "..", ".", "/", "a/b", "%2F", "ünï 😀", "A1", "a1", "x" * 400, "=", "", "\x00", "~x"]


@pytest.mark.parametrize("item_id", KEYS)
def test_safe_key_part_is_one_safe_segment(item_id: str) -> None:
    part = safe_key_part(item_id)
    assert "/" not in part and " " not in part and part not in ("", ".", "..")
    assert all(c.isascii() and c.isprintable() for c in part)
    assert len(part) <= 170
    if len(item_id) < 50 and item_id not in ("", ".", ".."):
        assert urllib.parse.unquote(part) == item_id


def test_safe_key_parts_are_distinct() -> None:
    parts = [safe_key_part(k) for k in [*KEYS, "x" * 401, "%2E", "=empty"]]
    assert len(set(parts)) == len(parts)


# --- Parquet values as text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (pa.array([1, None, -3]), ["1", None, "-3"]),
        (pa.array([1.5, 100.0, None]), ["1.5", "100", None]),
        (pa.array([True, False, None]), ["true", "false", None]),
        (pa.array([dt.date(2024, 1, 2)]), ["2024-01-02"]),
        (pa.array([dt.datetime(2024, 1, 2, 3, 4, 5)], pa.timestamp("s")), ["2024-01-02 03:04:05"]),
        (pa.array([Decimal("1.50")], pa.decimal128(5, 2)), ["1.50"]),
        (pa.array([b"ok", b"\xff\x00", None]), ["ok", "base64:/wA=", None]),
        (pa.array(["a", "b", "a"]).dictionary_encode(), ["a", "b", "a"]),
        (pa.array([[1, 2], None, []]), ["[1,2]", None, "[]"]),
        (pa.array([{"k": "v", "n": 1}]), ['{"k":"v","n":1}']),
        (pa.nulls(2), [None, None]),
        (pa.chunked_array([["a"], ["b"]]), ["a", "b"]),
        (pa.array(["x"], pa.large_string()), ["x"]),
    ],
)
def test_as_text(array: pa.Array, expected: list[str | None]) -> None:
    out = as_text(array)
    assert out.type == pa.string()
    assert out.to_pylist() == expected


def test_repeated_strings_are_built_once_and_sliced_for_each_batch() -> None:
    from flows.ingest import normalise as module

    module._repeats.clear()
    first = module.repeat_string("s3://b/naïve file.csv", 5)
    assert first.to_pylist() == ["s3://b/naïve file.csv"] * 5
    later = module.repeat_string("s3://b/naïve file.csv", 3)
    assert later.to_pylist() == ["s3://b/naïve file.csv"] * 3
    assert later.buffers()[2].address == first.buffers()[2].address  # the same copies, not new ones
    assert module.repeat_string("", 4).to_pylist() == [""] * 4
    assert module.repeat_string("x", 0).to_pylist() == []
    big = module.DEFAULT_BATCH_ROWS + 7
    assert module.repeat_string("ab", big).to_pylist() == ["ab"] * big
    long = "k" * (module._REPEATS_BYTES // module.DEFAULT_BATCH_ROWS)  # too long to keep: built to size
    assert module.repeat_string(long, 2).to_pylist() == [long, long]
    assert long not in module._repeats
    assert sum(a.nbytes for a in module._repeats.values()) <= module._REPEATS_BYTES


def test_json_objects_of_many_columns_are_joined_block_by_block() -> None:
    # 300 columns: the rows are joined in blocks (3,495 rows here), which must meet without a seam.
    names = [f"c {c}" for c in range(300)]
    cols = [pa.array([f"v{i}-{c}" if (i + c) % 11 else f'q"{i}' for i in range(4_000)]) for c in range(300)]
    got = json_objects(names, cols)
    got.validate(full=True)
    for i in (0, 3_494, 3_495, 3_999):
        row = {name: col[i].as_py() for name, col in zip(names, cols, strict=True)}
        assert got[i].as_py() == json.dumps(row, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("seed", range(6))
def test_take_rows_gives_what_arrows_filter_gives(seed: int) -> None:
    from flows.ingest.normalise import take_rows

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3_000))
    words = ["", "a", "naïve", "Zoë 🙂", "x" * 300, '{"id":"7","text":"ok"}']
    values = [words[i] for i in rng.integers(0, len(words), n)]
    keep = rng.random(n) < [0.995, 0.5, 0.0, 1.0, 0.9, 0.05][seed]
    mask = pa.array(keep)
    whole = pa.array(values, pa.string())
    # A slice (its offsets do not start at 0), values with nulls, another type: all as Arrow filters them.
    sliced = pa.array(["skip", *values], pa.string()).slice(1)
    with_nulls = pa.array([None if i % 7 == 0 else v for i, v in enumerate(values)], pa.string())
    for col in (whole, sliced, with_nulls, pa.array(values, pa.large_string()), pa.array(range(n), pa.int64())):
        got = take_rows(col, keep)
        got.validate(full=True)
        assert got.equals(pc.filter(col, mask))
