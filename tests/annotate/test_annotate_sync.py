"""Incremental sync of the annotation log: new rows, edited versions, replays, latest versions, part names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from pydantic import SecretStr

from flows.annotate.normalise import export_to_rows
from flows.annotate.sync import latest_versions, log_keys, new_rows, part_name
from flows.core.models import TaskType
from flows.core.schemas import ANNOTATIONS

pytestmark = pytest.mark.unit

KEY = SecretStr("test-pseudonym-key")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def export(annotations: list[tuple[int, str, datetime]], site: str = "nairobi") -> pa.Table:
    """Normalised rows of a classification export: (annotation_id, label, updated_at) per annotation."""
    tasks: list[dict[str, Any]] = [
        {
            "id": 100 + ann_id,
            "data": {"item_id": f"item-{ann_id}", "batch_id": "r0-b0000"},
            "annotations": [
                {
                    "id": ann_id,
                    "completed_by": 7,
                    "result": [
                        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
                    ],
                    "was_cancelled": False,
                    "lead_time": 3.0,
                    "created_at": iso(T0),
                    "updated_at": iso(updated),
                }
            ],
        }
        for ann_id, label, updated in annotations
    ]
    return export_to_rows(tasks, task_type=TaskType.IMAGE_CLASSIFICATION, site_id=site, project_id=1, key=KEY)


def versions(table: pa.Table) -> list[tuple[str, int, str | None]]:
    return [(r["site_id"], r["annotation_id"], r["label"]) for r in table.to_pylist()]


FIRST = [(1, "cat", T0), (2, "dog", T0), (3, "cat", T0 + timedelta(minutes=1))]


def test_empty_log_takes_everything_in_canonical_order() -> None:
    rows = new_rows(set(), export(list(reversed(FIRST))))
    assert versions(rows) == [("nairobi", 1, "cat"), ("nairobi", 2, "dog"), ("nairobi", 3, "cat")]
    assert rows.schema.equals(ANNOTATIONS)


@pytest.mark.parametrize("as_set", [False, True])
def test_nothing_new_gives_zero_rows(as_set: bool) -> None:
    log = export(FIRST)
    known: Any = {(r["site_id"], r["annotation_id"], r["updated_at"]) for r in log.to_pylist()} if as_set else log
    assert new_rows(known, export(FIRST)).num_rows == 0


def test_edited_annotation_gives_one_new_version() -> None:
    log = export(FIRST)
    edited = export([(1, "cat", T0), (2, "cat", T0 + timedelta(hours=1)), (3, "cat", T0 + timedelta(minutes=1))])
    rows = new_rows(log, edited)
    assert versions(rows) == [("nairobi", 2, "cat")]
    assert rows["updated_at"].to_pylist() == [T0 + timedelta(hours=1)]


def test_new_annotation_beside_old_ones() -> None:
    log = export(FIRST)
    rows = new_rows(log_keys(log), export([*FIRST, (4, "dog", T0)]))
    assert versions(rows) == [("nairobi", 4, "dog")]


def test_replaying_the_same_export_twice_never_duplicates() -> None:
    log = pa.concat_tables([new_rows(set(), export(FIRST))])
    again = new_rows(log, export(FIRST))
    assert again.num_rows == 0
    log = pa.concat_tables([log, again])
    assert log.num_rows == 3
    # The same version twice inside one export (a task read twice) is taken once.
    doubled = pa.concat_tables([export([(5, "dog", T0)]), export([(5, "dog", T0)])])
    assert versions(new_rows(log, doubled)) == [("nairobi", 5, "dog")]


def test_an_older_version_is_not_new() -> None:
    log = export([(1, "dog", T0 + timedelta(hours=2))])
    assert new_rows(log, export([(1, "cat", T0)])).num_rows == 0


def test_same_annotation_id_at_another_site_is_another_annotation() -> None:
    log = export(FIRST, site="nairobi")
    rows = new_rows(log, export(FIRST, site="kampala"))
    assert versions(rows) == [("kampala", 1, "cat"), ("kampala", 2, "dog"), ("kampala", 3, "cat")]


def test_new_rows_rejects_tables_without_keys() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        new_rows(pa.table({"annotation_id": [1]}), export(FIRST))


def test_latest_versions_keeps_the_last_edit_and_drops_duplicates() -> None:
    v1 = export([(1, "cat", T0), (2, "dog", T0)])
    v2 = export([(1, "dog", T0 + timedelta(hours=1))])
    other_site = export([(1, "bird", T0)], site="kampala")
    log = pa.concat_tables([v2, v1, other_site, v1])  # v1 twice: a part read twice
    latest = latest_versions(log)
    assert versions(latest) == [("kampala", 1, "bird"), ("nairobi", 1, "dog"), ("nairobi", 2, "dog")]
    assert latest.schema.equals(ANNOTATIONS)
    assert latest_versions(log.slice(0, 0)).num_rows == 0


def test_log_keys_is_compact() -> None:
    log = pa.concat_tables([export([(1, "cat", T0)]), export([(1, "dog", T0 + timedelta(hours=1))])])
    keys = log_keys(log)
    assert keys.column_names == ["site_id", "annotation_id", "updated_at"]
    assert keys.to_pylist() == [{"site_id": "nairobi", "annotation_id": 1, "updated_at": T0 + timedelta(hours=1)}]


def test_part_name_is_deterministic_and_content_addressed() -> None:
    rows = new_rows(set(), export(FIRST))
    name = part_name(rows)
    assert name.startswith("part-") and name.endswith(".parquet") and len(name) == len("part-") + 32 + 8
    # Same content, built again and chunked differently: same name.
    rebuilt = pa.concat_tables([rows.slice(0, 1), rows.slice(1)])
    assert rebuilt.column("item_id").num_chunks == 2
    assert part_name(rebuilt) == name
    assert part_name(new_rows(set(), export(list(reversed(FIRST))))) == name
    # Any change of a value, of nullness or of the rows gives another name.
    assert part_name(rows.slice(1)) != name
    changed = rows.set_column(
        rows.schema.get_field_index("lead_time_s"), "lead_time_s", pa.array([3.0, 3.0, 3.5], pa.float64())
    )
    assert part_name(changed) != name
    nulled = rows.set_column(
        rows.schema.get_field_index("lead_time_s"), "lead_time_s", pa.array([3.0, 3.0, None], pa.float64())
    )
    assert part_name(nulled) != name
    shifted = rows.set_column(
        rows.schema.get_field_index("item_id"), "item_id", pa.array(["item-1i", "tem-2", "item-3"])
    )
    assert part_name(shifted) != name  # the same characters split differently between rows


def test_part_name_known_value_is_stable_across_processes() -> None:
    # A fixed table has a fixed name: a regression check that the hash reads values, not memory.
    table = pa.table({"a": pa.array([1, None, 3], pa.int64()), "b": pa.array(["x", "yy", None])})
    assert part_name(table) == "part-959d4fa3f782b307454c2df1160a7c45.parquet"
    # A slice's buffers start mid-way; the name must not notice.
    wider = pa.table({"a": pa.array([0, 1, None, 3], pa.int64()), "b": pa.array(["zzz", "x", "yy", None])})
    assert part_name(wider.slice(1)) == part_name(table)


def test_inputs_are_not_mutated() -> None:
    log = export(FIRST)
    incoming = export([*FIRST, (4, "dog", T0)])
    before = (log.to_pylist(), incoming.to_pylist())
    new_rows(log, incoming)
    latest_versions(pa.concat_tables([log, incoming]))
    assert (log.to_pylist(), incoming.to_pylist()) == before
