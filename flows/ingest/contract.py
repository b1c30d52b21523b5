"""A data contract applied two ways: row by row to split a batch, and by Great Expectations on the result.

The same declared rules (:mod:`flows.core.contracts`) drive both:

* :func:`check_rows` runs per batch, vectorised in ``pyarrow.compute``, and names the row, the field and
  the reason of every failure, so rejected rows can be quarantined. Uniqueness is not checked here at
  ingest: duplicates are reported by :mod:`flows.ingest.dedupe`, across batches and files.
* :func:`build_suite` turns the contract into a Great Expectations suite, validated on a uniform sample
  of the accepted items of a run (:mod:`flows.ingest.sample`) for the report and Data Docs: a second,
  independent implementation of the same rules over what the row checker let through.
  :func:`reconciliation_suite` has Great Expectations check the counts of every file read as well.

The semantics agree: regexes are searched (RE2 and Python ``re`` both), lengths count characters, null
values pass every rule but ``required``, and ``required`` strings must also not be blank.

Great Expectations takes seconds to import, so it is imported only inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from flows.core.arrays import combine
from flows.core.contracts import Contract, Rule

if TYPE_CHECKING:
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.data_context import AbstractDataContext

FAILURES = pa.schema(
    [
        pa.field("row", pa.int64(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)
FIELDS_PREFIX = "fields."
_SNIPPET = 60


def check_rows(
    table: pa.Table,
    contract: Contract,
    *,
    missing: Mapping[str, str] | None = None,
    classes: Sequence[str] | None = None,
    check_unique: bool = True,
) -> pa.Table:
    """Every rule every row breaks, as (row index in ``table``, field, reason), in column then row order.

    Args:
        table: The checked columns (canonical names; listing fields as ``fields.<name>``).
        contract: The rules.
        missing: Canonical column -> client column that the source file lacks: every row fails a
            required one; an optional one is null (report it from ``CanonicalBatch.missing``).
        classes: The work order's label classes, for rules with ``allowed_from_work_order``.
        check_unique: Check ``unique`` rules (off at ingest, where dedupe reports duplicates).

    Returns:
        A table with schema :data:`FAILURES`.
    """
    missing = dict(missing or {})
    n = table.num_rows
    parts: list[tuple[np.ndarray, str, list[str]]] = []
    rules: list[tuple[str, Rule]] = list(contract.columns.items())
    if contract.listing_fields is not None:
        rules += [(c, contract.listing_fields) for c in table.column_names if c.startswith(FIELDS_PREFIX)]
    for name, rule in rules:
        if name in missing:
            if not rule.required:
                continue  # an optional column: its values are null, the file is reported (not quarantined)
            why = f"column {missing[name]!r} (mapped to {name}) is missing from the file"
            parts.append((np.arange(n, dtype=np.int64), name, [why] * n))
            continue
        if name not in table.column_names:
            if rule.required:
                parts.append((np.arange(n, dtype=np.int64), name, [f"{name} is missing: no such column"] * n))
            continue
        col = combine(table.column(name))
        parts += [(rows, name, reasons) for rows, reasons in _rule_failures(col, name, rule, classes, check_unique)]
    if not parts:
        return FAILURES.empty_table()
    return pa.table(
        {
            "row": pa.array(np.concatenate([p[0] for p in parts]), pa.int64()),
            "field": pa.array([p[1] for p in parts for _ in range(len(p[0]))], pa.string()),
            "reason": pa.array([r for p in parts for r in p[2]], pa.string()),
        },
        schema=FAILURES,
    )


def first_failures(failures: pa.Table) -> pa.Table:
    """One row per failing row: the first failing field, and every reason joined with ``; ``."""
    if failures.num_rows == 0:
        return failures
    rows = failures.column("row").to_numpy()
    order = np.argsort(rows, kind="stable")
    if len(rows) < 2 or bool(np.all(np.diff(rows[order]) > 0)):
        return failures.take(pa.array(order))  # one failure a row, the usual case: no grouping needed
    df = failures.to_pandas()
    grouped = df.groupby("row", sort=True)
    out = pd.DataFrame({"field": grouped["field"].first(), "reason": grouped["reason"].agg("; ".join)})
    return pa.table(
        {
            "row": pa.array(out.index.to_numpy(dtype=np.int64), pa.int64()),
            "field": pa.array(out["field"].tolist(), pa.string()),
            "reason": pa.array(out["reason"].tolist(), pa.string()),
        },
        schema=FAILURES,
    )


def _snippet(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _rows_where(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))


def blank_mask(col: pa.Array) -> pa.Array:
    """True where a string is empty or all whitespace (null stays null), without trimming a copy."""
    return pc.or_(pc.equal(pc.binary_length(col), 0), pc.utf8_is_space(col))


def _longer_than(col: pa.Array, limit: int) -> np.ndarray:
    """Rows with more than ``limit`` characters; only values of more than ``limit`` bytes are counted."""
    # A character is at least one byte, so a value of at most `limit` bytes passes without decoding.
    suspects = _rows_where(pc.greater(pc.binary_length(col), limit))
    if len(suspects) == 0:
        return suspects
    chars = pc.utf8_length(col.take(pa.array(suspects, pa.int64())))
    return suspects[_rows_where(pc.greater(chars, limit))]


def _rule_failures(
    col: pa.Array, name: str, rule: Rule, classes: Sequence[str] | None, check_unique: bool
) -> list[tuple[np.ndarray, list[str]]]:
    out: list[tuple[np.ndarray, list[str]]] = []

    def add(rows: np.ndarray, why: Callable[[Any], str]) -> None:
        if len(rows):
            values = col.take(pa.array(rows)).to_pylist()
            out.append((rows, [why(v) for v in values]))

    is_text = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    if rule.required:
        add(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)), lambda _: f"{name} is missing")
        if is_text:
            add(_rows_where(blank_mask(col)), lambda v: f"{name} is blank: {_snippet(v)}")
    numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)
    if rule.type in ("integer", "number") and not numeric:
        add(_rows_where(col.is_valid()), lambda v: f"{name} is not a {rule.type}: {_snippet(v)}")
        return out
    if rule.type == "integer" and numeric and not pa.types.is_integer(col.type):
        frac = pc.not_equal(col, pc.floor(col))
        add(_rows_where(frac), lambda v: f"{name} is not a whole number: {v}")
    if rule.type == "boolean" and not pa.types.is_boolean(col.type):
        add(_rows_where(col.is_valid()), lambda v: f"{name} is not true/false: {_snippet(v)}")
        return out
    if rule.type == "string" and not is_text:
        add(_rows_where(col.is_valid()), lambda v: f"{name} is not text: {_snippet(v)}")
        return out
    if is_text and rule.min_length is not None:
        lo = rule.min_length
        add(
            _rows_where(pc.less(pc.utf8_length(col), lo)),
            lambda v: f"{name} is shorter than {lo:,} characters ({len(v):,})",
        )
    if is_text and rule.max_length is not None:
        hi = rule.max_length
        add(_longer_than(col, hi), lambda v: f"{name} is longer than {hi:,} characters ({len(v):,})")
    if is_text and rule.regex is not None:
        hint = rule.regex_hint or f"matching {rule.regex}"
        bad = pc.invert(pc.match_substring_regex(col, rule.regex))
        add(_rows_where(bad), lambda v: f"{name} is not {hint}: {_snippet(v)}")
    allowed = rule.allowed_values
    if rule.allowed_from_work_order == "label_schema.classes" and classes is not None:
        allowed = list(classes)
    if allowed is not None:
        as_str = col if is_text else pc.cast(col, pa.string())
        bad = pc.invert(pc.is_in(as_str, value_set=pa.array(allowed, as_str.type)))
        add(
            _rows_where(pc.and_(bad, col.is_valid())),
            lambda v: f"{name} is not one of the allowed values: {_snippet(v)}",
        )
    if numeric and rule.min_value is not None:
        low = rule.min_value
        add(_rows_where(pc.less(col, low)), lambda v: f"{name} is below {low}: {v}")
    if numeric and rule.max_value is not None:
        high = rule.max_value
        add(_rows_where(pc.greater(col, high)), lambda v: f"{name} is above {high}: {v}")
    if check_unique and rule.unique and col.null_count < len(col):
        dup = col.to_pandas().duplicated(keep="first").to_numpy() & col.is_valid().to_numpy(zero_copy_only=False)
        add(np.flatnonzero(dup), lambda v: f"{name} repeats an earlier row's value: {_snippet(v)}")
    return out


#: Given media URIs, says why each one that cannot be shown to annotators cannot (URIs not named are fine).
MediaCheck = Callable[[list[str]], Mapping[str, str]]
MISSING = "points at a missing object"


def media_problems(
    uris: pa.Array | pa.ChunkedArray, check: MediaCheck, *, chunk: int = 1000
) -> tuple[np.ndarray, list[str]]:
    """Rows whose media object cannot be used, and why (null URIs are not looked up).

    Args:
        uris: ``media_uri`` values.
        check: Given URIs, returns ``{uri: problem}`` for those that cannot be used, e.g. ``MISSING`` or
            a refused read. Called with each distinct URI once, ``chunk`` at a time.
        chunk: URIs per ``check`` call.

    Returns:
        (row indices, reason of each: ``media_uri <problem>: <uri>``).
    """
    col = combine(uris)
    distinct = [u for u in pc.unique(col.drop_null()).to_pylist() if u is not None]
    problems: dict[str, str] = {}
    for i in range(0, len(distinct), chunk):
        batch = distinct[i : i + chunk]
        found = check(batch)
        problems.update({u: found[u] for u in batch if u in found})
    if not problems:
        return np.zeros(0, np.int64), []
    bad = pc.is_in(col, value_set=pa.array(sorted(problems), pa.string()))
    rows = np.flatnonzero(pc.fill_null(bad, False).to_numpy(zero_copy_only=False))
    values = col.take(pa.array(rows, pa.int64())).to_pylist()
    return rows, [f"media_uri {problems[u]}: {u}" for u in values]


def check_from_exists(exists: Callable[[list[str]], set[str]]) -> MediaCheck:
    """A :data:`MediaCheck` from a function that returns the subset of URIs that exist."""

    def check(uris: list[str]) -> dict[str, str]:
        found = set(exists(uris))
        return {u: MISSING for u in uris if u not in found}

    return check


def missing_media(
    uris: pa.Array | pa.ChunkedArray, exists: Callable[[list[str]], set[str]], *, chunk: int = 1000
) -> np.ndarray:
    """Which rows point at a media object that does not exist (null URIs are not "missing").

    Args:
        uris: ``media_uri`` values.
        exists: Given URIs, returns the subset that exists (e.g. S3 HEAD or a prefix listing). Called
            with each distinct URI once, ``chunk`` at a time.
        chunk: URIs per ``exists`` call.

    Returns:
        Boolean mask, True where the object is missing.
    """
    rows, _ = media_problems(uris, check_from_exists(exists), chunk=chunk)
    mask = np.zeros(len(uris), dtype=bool)
    mask[rows] = True
    return mask


# --- Great Expectations -----------------------------------------------------------------------------


def build_suite(
    contract: Contract,
    *,
    field_names: Sequence[str] = (),
    classes: Sequence[str] | None = None,
    name: str | None = None,
) -> ExpectationSuite:
    """The contract as a Great Expectations suite (not yet added to any context).

    Args:
        contract: The rules.
        field_names: Listing field names, checked as columns ``fields.<name>`` (see :func:`gx_frame`).
        classes: The work order's label classes, for ``allowed_from_work_order`` rules (skipped without).
        name: Suite name; default ``<task_type>.<kind>.<version>``.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[Any] = []
    rules = list(contract.columns.items())
    if contract.listing_fields is not None:
        rules += [(f"{FIELDS_PREFIX}{f}", contract.listing_fields) for f in field_names]
    for column, rule in rules:
        expectations.append(gxe.ExpectColumnToExist(column=column))
        if rule.required:
            expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
            if rule.type == "string":
                expectations.append(gxe.ExpectColumnValuesToMatchRegex(column=column, regex=r"\S"))
        if rule.min_length is not None or rule.max_length is not None:
            expectations.append(
                gxe.ExpectColumnValueLengthsToBeBetween(
                    column=column, min_value=rule.min_length, max_value=rule.max_length
                )
            )
        if rule.regex is not None:
            expectations.append(gxe.ExpectColumnValuesToMatchRegex(column=column, regex=rule.regex))
        allowed = rule.allowed_values
        if rule.allowed_from_work_order == "label_schema.classes" and classes is not None:
            allowed = list(classes)
        if allowed is not None:
            expectations.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(allowed)))
        if rule.min_value is not None or rule.max_value is not None:
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(column=column, min_value=rule.min_value, max_value=rule.max_value)
            )
        if rule.unique:
            expectations.append(gxe.ExpectColumnValuesToBeUnique(column=column))
    return gx.ExpectationSuite(
        name=name or f"{contract.task_type.value}.{contract.kind}.{contract.version or 'unversioned'}",
        expectations=expectations,
        meta={"contract_version": contract.version, "task_type": contract.task_type.value, "kind": contract.kind},
    )


RECONCILIATION_COLUMNS = ("source_object", "rows_read", "accepted", "quarantined", "duplicates")


def reconciliation_frame(files: Sequence[tuple[str, int, int, int, int]]) -> pd.DataFrame:
    """Counts of each file read (see ``Reconciliation.files``), with ``accounted`` = the three outcomes."""
    df = pd.DataFrame(list(files), columns=list(RECONCILIATION_COLUMNS))
    for column in RECONCILIATION_COLUMNS[1:]:
        df[column] = df[column].astype("int64")
    df["accounted"] = df["accepted"] + df["quarantined"] + df["duplicates"]
    return df


def reconciliation_suite(name: str) -> ExpectationSuite:
    """Every record of every file read is accepted, quarantined or a duplicate, once (see
    :func:`reconciliation_frame`)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations: list[Any] = [
        gxe.ExpectColumnPairValuesToBeEqual(column_A="rows_read", column_B="accounted"),
        gxe.ExpectColumnValuesToBeUnique(column="source_object"),
    ]
    expectations += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in RECONCILIATION_COLUMNS[1:]]
    return gx.ExpectationSuite(name=name, expectations=expectations)


def gx_frame(items: pa.Table, field_names: Sequence[str] = ()) -> pd.DataFrame:
    """Items as the pandas frame :func:`build_suite` expects: listing fields flattened to ``fields.<name>``."""
    df = items.to_pandas()
    if not field_names or "fields" not in items.column_names:
        return df
    fields = pc.fill_null(combine(items.column("fields")), "{}")
    # The data buffer of a string array is its values back to back: with a newline after each, JSON Lines.
    lines = pc.binary_join_element_wise(fields, "\n", "").cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64, count=len(lines) + 1, offset=lines.offset * 8)
    payload = pa.py_buffer(lines.buffers()[2])[int(offsets[0]) : int(offsets[-1])] if len(lines) else b""
    schema = pa.schema([pa.field(f, pa.string()) for f in field_names])
    parsed = (
        pj.read_json(
            pa.BufferReader(payload),
            read_options=pj.ReadOptions(block_size=len(payload) + 1),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        if len(payload)
        else schema.empty_table()
    )
    for f in field_names:
        df[f"{FIELDS_PREFIX}{f}"] = parsed.column(f).to_pandas()
    return df


def validate_with_gx(
    df: pd.DataFrame, suite: ExpectationSuite, context: AbstractDataContext | None = None
) -> ExpectationSuiteValidationResult:
    """Validate a frame against a suite in ``context`` (default: a fresh ephemeral one, progress bars off).

    The suite, a pandas data source ``kazi``, an asset and a validation definition named after the suite
    are added (or updated) in the context, so a Checkpoint with ``UpdateDataDocsAction`` can reuse them.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.datasource.fluent import PandasDatasource

    if context is None:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = context.suites.add_or_update(suite)
    # add_or_update_pandas would replace the source and drop its assets: look it up first.
    names = {d.name for d in context.data_sources.all().values()}
    source = context.data_sources.get("kazi") if "kazi" in names else context.data_sources.add_pandas(name="kazi")
    if not isinstance(source, PandasDatasource):
        raise TypeError(f"data source 'kazi' in this context is a {type(source).__name__}, not pandas")
    asset_name = f"{suite.name}.frame"
    if asset_name in source.get_asset_names():
        batch_definition = source.get_asset(asset_name).get_batch_definition("whole")
    else:
        batch_definition = source.add_dataframe_asset(name=asset_name).add_batch_definition_whole_dataframe("whole")
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{suite.name}.validation", data=batch_definition, suite=suite)
    )
    return definition.run(batch_parameters={"dataframe": df})
