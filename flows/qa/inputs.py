"""QA's inputs: read from the workspace, then shaped for the pure QA modules.

Readers take an :class:`~flows.core.s3.ObjectStore` and a URI; the shaping functions take frames and return
new ones (their inputs are never modified). What the earlier stages left:

* ``annotate/log/*.parquet``: the append-only annotation log (:data:`flows.core.schemas.ANNOTATIONS`), one
  row per version of an annotation. :func:`latest_versions` keeps the current version of each, and
  :func:`answer_log` one row per (item, annotator): the latest answer across rounds, else the latest skip.
* ``split/gold.parquet``: known answers (``item_id``, ``answer``; ``label`` when present). The client's
  ``answer`` may be a JSON object (``{"label": "cat"}``), a JSON string or plain text; :func:`gold_values`
  reads all three.
* ``split/round=<r>/assignments.parquet``: the plan (:data:`flows.core.schemas.ASSIGNMENTS`).
* ``ingest/result.json``: where the accepted items are (only their ids are read).
* ``split/projects.json``: the Label Studio projects, for links in the report.

Comparable values. Gold accuracy, agreement with consensus and the majority test compare answers for
equality, so each answer gets a ``value``: the label (classification); the text, case-folded with white
space collapsed (transcription); the fields, normalised the same way, as canonical JSON (listing
verification). Boxes have no value: two detection answers match only after pairing boxes by overlap, so
detection annotators are not scored on gold by equality (their ``value`` is null and no one is flagged).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from flows.core.models import TaskType
from flows.core.s3 import ObjectNotFound, ObjectStore, parse_uri
from flows.core.schemas import ANNOTATIONS, ASSIGNMENTS
from flows.core.workspace import read_json, read_table
from flows.qa.rework import REASONS, REWORK_COLUMNS

CLASSIFICATION = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION})

_ROUND_KEY = re.compile(r"/round=(?P<round>\d+)/assignments\.parquet$")


class QAInputError(RuntimeError):
    """An input of the QA stage is missing or inconsistent; the message says which and what to do."""


# --- Reading -------------------------------------------------------------------------------------------


def parquet_paths(store: ObjectStore, uri: str) -> list[str]:
    """``bucket/key`` of the Parquet object at ``uri``, or of every one under a prefix, sorted."""
    bucket, key = parse_uri(uri)
    if key.endswith(".parquet"):
        return [f"{bucket}/{key}"] if store.head(bucket, key) is not None else []
    prefix = key.rstrip("/") + "/"
    return sorted(f"{bucket}/{o.key}" for o in store.list_objects(bucket, prefix) if o.key.endswith(".parquet"))


def read_parquet(store: ObjectStore, uri: str, schema: pa.Schema, columns: Iterable[str] | None = None) -> pa.Table:
    """Every Parquet object at or under ``uri`` as ``schema`` (an empty table when there is none)."""
    cols = list(columns) if columns is not None else schema.names
    paths = parquet_paths(store, uri)
    if not paths:
        return schema.empty_table().select(cols)
    return ds.dataset(paths, schema=schema, format="parquet", filesystem=store.filesystem).to_table(columns=cols)


def read_annotation_log(store: ObjectStore, uri: str) -> pa.Table:
    """The annotation log under ``uri`` (a prefix ending in ``/``), every version of every annotation."""
    return read_parquet(store, uri, ANNOTATIONS)


def read_gold(store: ObjectStore, uri: str) -> pd.DataFrame:
    """Split's gold answers: item_id, answer, label (null where the file has none); empty without a gold set."""
    bucket, key = parse_uri(uri)
    if store.head(bucket, key) is None:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in ("item_id", "answer", "label")})
    table = read_table(store, uri)
    if "item_id" not in table.column_names or "answer" not in table.column_names:
        raise QAInputError(
            f"{uri} has columns {table.column_names}, not item_id and answer: rerun the split stage, which writes it."
        )
    label = table["label"] if "label" in table.column_names else pa.nulls(table.num_rows, pa.string())
    return pd.DataFrame(
        {
            "item_id": pd.array(table["item_id"].cast(pa.string()), dtype="str"),
            "answer": pd.array(table["answer"].cast(pa.string()), dtype="str"),
            "label": pd.array(pc.cast(label, pa.string()), dtype="str"),
        }
    )


def read_assignments(store: ObjectStore, split_uri: str, up_to_round: int) -> pd.DataFrame:
    """The assignment manifests of rounds 0..``up_to_round`` under ``split_uri`` (``.../split``), as one frame."""
    bucket, key = parse_uri(split_uri.rstrip("/") + "/")
    keys = [
        o.key
        for o in store.list_objects(bucket, key)
        if (m := _ROUND_KEY.search(o.key)) is not None and int(m["round"]) <= up_to_round
    ]
    if not keys:
        return ASSIGNMENTS.empty_table().to_pandas()
    tables = [read_parquet(store, f"s3://{bucket}/{k}", ASSIGNMENTS) for k in sorted(keys)]
    return pa.concat_tables(tables).to_pandas()


def read_item_ids(store: ObjectStore, items_uri: str, expected: int) -> pa.Array:
    """The ids of the accepted items (``ingest``'s ``items_uri``); there must be ``expected`` of them."""
    table = read_parquet(store, items_uri, pa.schema([pa.field("item_id", pa.string(), nullable=False)]))
    if table.num_rows != expected:
        raise QAInputError(
            f"ingest accepted {expected:,} items but {items_uri} holds {table.num_rows:,}: the items and ingest's "
            "result.json disagree; rerun the ingest stage for this work order."
        )
    return table["item_id"].combine_chunks()


def read_projects(store: ObjectStore, uri: str) -> dict[str, dict[str, Any]]:
    """``split/projects.json`` (project key -> site_id, project_id, url), or ``{}`` when split wrote none."""
    try:
        found = read_json(store, uri)
    except ObjectNotFound:
        return {}
    if not isinstance(found, dict):
        raise QAInputError(f"{uri} is not a JSON object of projects: rerun the split stage, which writes it.")
    return found


# --- Shaping -------------------------------------------------------------------------------------------


def latest_versions(log: pa.Table) -> pa.Table:
    """The current version of every annotation: per (site_id, annotation_id) the row with the latest
    ``updated_at``. Rows come out sorted by site and annotation id."""
    if log.num_rows == 0:
        return log
    ordered = log.take(
        pc.sort_indices(
            log, sort_keys=[("site_id", "ascending"), ("annotation_id", "ascending"), ("updated_at", "descending")]
        )
    )
    site = ordered["site_id"].combine_chunks()
    ann = ordered["annotation_id"].combine_chunks()
    n = ordered.num_rows
    repeat = pc.and_(pc.equal(site.slice(1), site.slice(0, n - 1)), pc.equal(ann.slice(1), ann.slice(0, n - 1)))
    return ordered.filter(pa.concat_arrays([pa.array([True]), pc.invert(repeat)]))


def answer_log(latest: pa.Table) -> pd.DataFrame:
    """One row per (item, annotator): their latest answer across rounds, or their latest skip if they never
    answered. The consolidators accept one answer per item and annotator; scores read the skips.

    An answer is a row that is not skipped and has an ``answer``. "Latest" is the highest round, then the
    latest ``updated_at``, then the highest annotation id. Rows come out sorted by item_id, annotator.
    """
    if latest.num_rows == 0:
        return _frame(latest)
    answered = pc.and_(pc.invert(latest["skipped"]), pc.is_valid(latest["answer"])).combine_chunks()
    table = latest.append_column("_answered", answered)
    ordered = table.take(
        pc.sort_indices(
            table,
            sort_keys=[
                ("item_id", "ascending"),
                ("annotator", "ascending"),
                ("_answered", "descending"),
                ("round", "descending"),
                ("updated_at", "descending"),
                ("annotation_id", "descending"),
            ],
        )
    )
    item = ordered["item_id"].combine_chunks()
    who = ordered["annotator"].combine_chunks()
    n = ordered.num_rows
    same = pc.and_(pc.equal(item.slice(1), item.slice(0, n - 1)), pc.equal(who.slice(1), who.slice(0, n - 1)))
    first = ordered.filter(pa.concat_arrays([pa.array([True]), pc.invert(same)]))
    # A skip that is the only row of its (item, annotator) stays a skip; a row without an answer is one too.
    skipped = pc.invert(first["_answered"])
    first = first.set_column(first.schema.get_field_index("skipped"), "skipped", skipped)
    return _frame(first.drop_columns(["_answered"]))


def _frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    for name in ("created_at", "updated_at"):
        if name in frame.columns:
            frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame.reset_index(drop=True)


def _normalise_text(value: Any) -> str | None:
    return None if value is None else " ".join(str(value).casefold().split())


def _value_of(answer: Any, task_type: TaskType) -> str | None:
    """The comparable value of one answer (see the module docstring)."""
    if not isinstance(answer, str):
        return None
    try:
        parsed = json.loads(answer)
    except ValueError:
        # A client's gold answer may be the bare label.
        return answer if task_type in CLASSIFICATION else None
    if task_type in CLASSIFICATION:
        if isinstance(parsed, dict):
            label = parsed.get("label")
            return label if isinstance(label, str) else None
        return parsed if isinstance(parsed, str) else None
    if not isinstance(parsed, dict):
        return None
    if task_type == TaskType.AUDIO_TRANSCRIPTION:
        return _normalise_text(parsed.get("text"))
    if task_type == TaskType.LISTING_VERIFICATION:
        fields = parsed.get("fields")
        if not isinstance(fields, dict):
            return None
        canon = {k: _normalise_text(v) for k, v in fields.items() if v is not None}
        return json.dumps(canon, sort_keys=True, ensure_ascii=False)
    return None


def comparable_values(answer: pd.Series, task_type: TaskType | str, label: pd.Series | None = None) -> pd.Series:
    """Each answer's comparable value (see the module docstring); ``label`` wins where it is set.

    Each distinct answer text is parsed once: classification answers take a handful of values.
    """
    task = TaskType(task_type)
    codes, uniques = pd.factorize(answer.astype("str"), use_na_sentinel=True)
    parsed = np.asarray([*(_value_of(u, task) for u in uniques), None], dtype=object)
    values = pd.Series(parsed[np.where(codes >= 0, codes, len(uniques))], index=answer.index, dtype="str")
    if label is not None and task in CLASSIFICATION:
        values = label.astype("str").where(label.notna(), values)
    return values


def gold_values(gold: pd.DataFrame, task_type: TaskType | str) -> pd.Series:
    """Known answers as item_id -> comparable value (items whose answer cannot be read are left out)."""
    values = comparable_values(gold["answer"], task_type, gold["label"] if "label" in gold.columns else None)
    out = pd.Series(values.to_numpy(), index=pd.Index(gold["item_id"].astype("str"), name="item_id"), dtype="str")
    out = out[out.notna().to_numpy()]
    return out[~out.index.duplicated(keep="first")].rename("value")


def unanswered_rework(item_ids: Iterable[str]) -> pd.DataFrame:
    """Rework rows (:data:`flows.qa.rework.REWORK_COLUMNS`) for items nobody has answered or skipped yet:
    the reason is ``too_few_answers``, with no answer and no confidence."""
    ids = pd.array(sorted(set(item_ids)), dtype="str")
    n = len(ids)
    frame = pd.DataFrame(
        {
            "item_id": ids,
            "reason": pd.array(["too_few_answers"] * n, dtype="str"),
            **{code: np.full(n, code == "too_few_answers") for code in REASONS},
            "confidence": np.full(n, np.nan),
            "n_answers": np.zeros(n, dtype=np.int64),
            "n_excluded": np.zeros(n, dtype=np.int64),
            "top_share": np.full(n, np.nan),
        }
    )
    return frame.loc[:, list(REWORK_COLUMNS)]


def answer_sites(answers: pd.DataFrame) -> pd.Series:
    """item_id -> the distinct site ids of its answers, sorted and comma-separated (items in order of first
    appearance).

    A work order has a handful of sites, so each item's sites are one bit mask and each distinct mask is
    joined once: a string join per item took half a minute at a million items.
    """
    item_codes, items = _dictionary(answers["item_id"])
    site_codes, sites = _dictionary(answers["site_id"])
    names = np.asarray(sites.to_pylist(), dtype=object)
    order = np.argsort(names)
    index = pd.Index(pd.array(items, dtype="str"), name="item_id")
    if len(names) > 62:
        pairs = pd.DataFrame({"item": item_codes, "site": names[site_codes]}).drop_duplicates()
        joined = pairs.sort_values(["item", "site"]).groupby("item", sort=True)["site"].agg(",".join)
        return pd.Series(joined.reindex(np.arange(len(items))).to_numpy(), index=index, dtype="str")
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    mask = np.zeros(len(items), dtype=np.int64)
    np.bitwise_or.at(mask, item_codes, np.left_shift(np.int64(1), rank[site_codes]))
    distinct, inverse = np.unique(mask, return_inverse=True)
    ordered = names[order]
    labels = np.asarray(
        [",".join(ordered[[b for b in range(len(ordered)) if (int(m) >> b) & 1]]) for m in distinct], dtype=object
    )
    return pd.Series(labels[inverse], index=index, dtype="str")


def _dictionary(values: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """Dictionary codes and the distinct values, in order of first appearance (Arrow hashes strings faster)."""
    array = pa.array(values, type=pa.string(), from_pandas=True)
    encoded = pc.dictionary_encode(array)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def site_progress(assignments: pd.DataFrame, log: pd.DataFrame) -> pd.DataFrame:
    """site_id, done (tasks answered or skipped), total (tasks assigned), for the report.

    Done counts the answer log's rows per site, at most the site's assigned tasks (an answer moved between
    sites after an SLA move counts where it was given).
    """
    total = assignments.groupby("site_id").size()
    done = log.groupby("site_id").size().reindex(total.index, fill_value=0)
    return pd.DataFrame(
        {
            "site_id": pd.array(total.index.astype(str), dtype="str"),
            "done": np.minimum(done.to_numpy(), total.to_numpy()).astype(np.int64),
            "total": total.to_numpy().astype(np.int64),
        }
    )
