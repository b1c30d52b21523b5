"""The bulk formats: JSON Lines, Parquet and CSV. One row per item, built column-wise with Arrow.

All three carry the same logical row, so a client can switch formats without relearning the layout:

``item_id`` | ``record`` (the client's original fields) | ``answer`` | ``confidence`` |
``lineage`` (``sites``, ``n_annotators``, ``method``, ``qa_version``)

JSON Lines nests ``record``, ``answer`` and ``lineage`` as objects; Parquet stores them as struct columns;
CSV flattens them into dotted columns (``record.price``, ``answer.label``, ``lineage.sites``), the way
``pandas.json_normalize`` would. Putting the client's fields under ``record`` means a client column called
``answer`` or ``confidence`` never collides with ours.
"""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from flows.deliver.formats.deliverable import (
    DeliveryContext,
    answers,
    deliverable_table,
    site_ids,
    sites_json,
)
from flows.deliver.formats.json_arrow import (
    combine,
    concat_lines,
    flatten_struct,
    json_number,
    json_quote,
    json_raw,
    json_string_lists,
    objects_to_struct,
    per_unique,
)

LINEAGE = pa.struct(
    [
        pa.field("sites", pa.list_(pa.string())),
        pa.field("n_annotators", pa.int32()),
        pa.field("method", pa.string()),
        pa.field("qa_version", pa.string()),
    ]
)

#: Parquet settings are fixed so the same rows give the same bytes. pyarrow writes no timestamp into the
#: file; its footer's ``created_by`` names the pyarrow version, so bytes are stable for a given pyarrow.
PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "row_group_size": 1 << 20,
}

#: Cells starting with these can be run as formulas by Excel, LibreOffice and Google Sheets (OWASP, "CSV
#: Injection"). A cell that is entirely a number (``-12.5``, ``+3``) is left alone: it cannot carry a
#: formula, and quoting it would turn every negative number into text.
_FORMULA_START = r"^[=+\-@\t\r]"
_PLAIN_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def write_jsonl(frame: pd.DataFrame, ctx: DeliveryContext) -> tuple[bytes, int]:
    """One JSON object per line, ``record`` and ``answer`` spliced in exactly as stored (no re-encoding)."""
    t = deliverable_table(frame)
    lines = concat_lines(
        [
            '{"item_id":',
            json_quote(t["item_id"]),
            ',"record":',
            json_raw(t["record"], "record"),
            ',"answer":',
            json_raw(t["answer"], "answer"),
            ',"confidence":',
            json_number(t["confidence"]),
            ',"lineage":{"sites":',
            sites_json(t["sites"]),
            ',"n_annotators":',
            json_number(t["n_annotators"]),
            ',"method":',
            per_unique(json_quote, t["method"]),
            ',"qa_version":',
            per_unique(json_quote, t["qa_version"]),
            "}}\n",
        ]
    )
    return lines, t.num_rows


def parquet_table(frame: pd.DataFrame, ctx: DeliveryContext) -> pa.Table:
    """The Arrow table the Parquet file holds: declared Kazi columns, client fields as a struct."""
    t = deliverable_table(frame)
    record = objects_to_struct(t["record"])
    if record.type.num_fields == 0:
        record = combine(t["record"])  # Parquet cannot store a struct without fields: keep the JSON text.
    answer = answers(t, ctx.task_type)
    if answer.type.num_fields == 0:
        answer = combine(t["answer"])
    lineage = pa.StructArray.from_arrays(
        [site_ids(t["sites"]), combine(t["n_annotators"]), combine(t["method"]), combine(t["qa_version"])],
        fields=list(LINEAGE),
    )
    schema = pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("record", record.type, nullable=False, metadata={"kazi": "client fields, unchanged"}),
            pa.field("answer", answer.type, nullable=False, metadata={"kazi": "consolidated answer"}),
            pa.field("confidence", pa.float64()),
            pa.field("lineage", LINEAGE, nullable=False),
        ],
        metadata={"kazi.deliverable": "1", "kazi.task_type": ctx.task_type.value},
    )
    return pa.Table.from_arrays(
        [combine(t["item_id"]), record, answer, combine(t["confidence"]), lineage], schema=schema
    )


def write_parquet(frame: pd.DataFrame, ctx: DeliveryContext) -> tuple[bytes, int]:
    """Parquet with a declared schema, no pandas index or metadata, fixed compression (zstd level 3)."""
    table = parquet_table(frame, ctx)
    sink = io.BytesIO()
    pq.write_table(table, sink, **PARQUET_OPTIONS)
    return sink.getvalue(), table.num_rows


def write_csv(frame: pd.DataFrame, ctx: DeliveryContext) -> tuple[bytes, int]:
    """CSV, UTF-8, header row, strings always double-quoted; formula-like cells escaped (see below).

    Nested values are flattened into dotted columns: a classification gives ``answer.label``, a listing
    verification one ``answer.fields.<name>`` per field; lists (detection boxes, ``lineage.sites``) are
    JSON text in one cell. Every text cell beginning with ``=``, ``+``, ``-``, ``@``, tab or carriage
    return gets a leading single quote (OWASP's advice against CSV injection), unless the whole cell is a
    plain number. A reader that wants the original value strips that one quote from such cells.
    """
    table = parquet_table(frame, ctx)
    columns: list[tuple[str, pa.Array]] = [("item_id", combine(table["item_id"]))]
    for name in ("record", "answer"):
        col = combine(table[name])
        columns.extend(flatten_struct(col, name) if pa.types.is_struct(col.type) else [(name, col)])
    columns.append(("confidence", combine(table["confidence"])))
    lineage = combine(table["lineage"])
    for f, child in zip(LINEAGE, lineage.flatten(), strict=True):
        columns.append((f"lineage.{f.name}", json_string_lists(child) if f.name == "sites" else child))
    names = [escape_formulas(pa.array([n])).to_pylist()[0] for n, _ in columns]
    arrays = [escape_formulas(a) if _is_text(a.type) else a for _, a in columns]
    sink = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_arrays(arrays, names=names), sink, pa_csv.WriteOptions(quoting_style="needed"))
    return sink.getvalue(), table.num_rows


def escape_formulas(values: pa.Array) -> pa.Array:
    """Prefix ``'`` to text cells a spreadsheet would evaluate as a formula (plain numbers excepted)."""
    s = pc.cast(values, pa.large_string())
    risky = pc.and_(
        pc.match_substring_regex(s, _FORMULA_START),
        pc.invert(pc.match_substring_regex(s, _PLAIN_NUMBER)),
    )
    quoted = pc.binary_join_element_wise(pa.scalar("'", pa.large_string()), s, pa.scalar("", pa.large_string()))
    return pc.if_else(pc.fill_null(risky, False), quoted, s)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)
