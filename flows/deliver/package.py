"""The client's delivery in S3: read what the earlier stages left, build the files, write an immutable version.

A delivery lives at ``<work_order.delivery.uri>/<work order id>/v<N>/``:

- the data files, one per requested format (``labels.jsonl``, ``labels.parquet``, ``coco.json`` ...),
- ``qa-report.html`` (QA's report, copied), ``validation.json`` (QA's validation results, copied),
- ``README.md`` (the data card),
- ``manifest.json``, written last: every other file with its size, row count and SHA-256, the counts that
  reconcile with ingest, and the content fingerprint.

**A version exists when its manifest does.** A client (and Kazi) reads only folders that have one;
``manifest.json`` is the commit point, written with a conditional PUT (``If-None-Match: *``) so it is
written once and never replaced.

**Nothing in a delivery folder is ever overwritten.** Every file is written only when its key is missing
(conditional PUT); when the key exists with the same SHA-256 it is left as it is, and when it holds other
bytes the folder belongs to other content and this run moves on to the next version number. So two runs,
even at the same time, cannot mix their files: each commits only a folder whose every file is its own.

**Which version.** The content fingerprint is the SHA-256 of the ``sha256sum``-style listing of the data
files (``<sha256>  <name>`` per line, sorted by name); the documents (report, data card) do not count.

1. The newest committed version has the same fingerprint: nothing to do. Its files are checked (HEAD) and
   one that is missing, or whose size or recorded SHA-256 differs from the manifest, is written back when
   this run holds exactly the manifest's bytes for it. A rerun therefore writes nothing and adds no version.
2. Otherwise the content is new (say, rework after a delivery): a new version. A folder newer than the last
   commit that has files but no manifest (a run died between the files and the manifest) is tried first:
   the same inputs give the same bytes, so the rerun completes it under the same number. If it holds other
   content it is left alone (reported as abandoned) and the next free number is used.

Rows are reproducible: no clock goes into the files. The one date in them (COCO ``date_created``, Ground
Truth ``creation-date``) is when the last answer was given, taken from the annotation log.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from PIL import UnidentifiedImageError

from flows.core.contracts import load_contract
from flows.core.models import DeliveryFormat, IngestResult, QAResult, TaskType, WorkOrder
from flows.core.s3 import ObjectNotFound, ObjectStore, PreconditionFailed, S3Error, parse_uri, sha256_hex
from flows.core.schemas import ANNOTATIONS, CONSOLIDATED, ITEMS
from flows.core.workspace import read_table, table_bytes
from flows.deliver.data_card import Workforce, render_data_card, summarise_workforce
from flows.deliver.formats import FORMAT_WRITERS, DeliveryContext, build_deliverable, read_image_size, write_formats
from flows.deliver.manifest import (
    MANIFEST_NAME,
    ReconciliationError,
    build_manifest,
    manifest_bytes,
    reconcile,
    reworked_item_ids,
)

#: Version of the deliverable's row layout (the Parquet files' ``kazi.deliverable`` metadata).
SCHEMA_VERSION = "1"
QA_REPORT_NAME = "qa-report.html"
VALIDATION_NAME = "validation.json"
DATA_CARD_NAME = "README.md"
#: Enough for the header of a JPEG, PNG or WebP; larger reads only when an image's metadata is bigger.
IMAGE_HEAD_BYTES = 64 * 1024
_IMAGE_READS = (IMAGE_HEAD_BYTES, 1024 * 1024, 16 * 1024 * 1024)
#: Formats that need pixel sizes: COCO always, Label Studio and Ground Truth for boxes.
_SIZED = {DeliveryFormat.COCO}
_SIZED_BOXES = {DeliveryFormat.LABEL_STUDIO, DeliveryFormat.GROUND_TRUTH}
_IMAGE_TASKS = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.OBJECT_DETECTION})
_VERSION_KEY = re.compile(r"^v(?P<n>[1-9][0-9]*)/(?P<name>[^/]+)$")
_MAX_VERSION_ATTEMPTS = 20
_ITEM_COLUMNS = ["item_id", "media_uri", "text", "fields", "record"]
IMAGE_SIZES = pa.schema(
    [
        pa.field("media_uri", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)


class DeliveryError(RuntimeError):
    """A delivery cannot be made; the message says what to fix."""


class DeliveryBlocked(DeliveryError):
    """QA's validation failed and no QA lead approved the delivery."""


@dataclass(frozen=True)
class PackageFile:
    """One file of a delivery, in memory."""

    name: str
    body: bytes
    rows: int | None
    content_type: str
    kind: Literal["data", "document"]

    @cached_property
    def sha256(self) -> str:
        return sha256_hex(self.body)

    def entry(self) -> dict[str, Any]:
        return {"name": self.name, "size": len(self.body), "rows": self.rows, "sha256": self.sha256}


# --- Reading the earlier stages' output ----------------------------------------------------------------


def _parquet_paths(store: ObjectStore, uri: str) -> list[str]:
    bucket, key = parse_uri(uri)
    if key.endswith(".parquet"):
        if store.head(bucket, key) is None:
            raise ObjectNotFound(f"No Parquet object at {uri}: run the stage that writes it for this work order.")
        return [f"{bucket}/{key}"]
    prefix = key.rstrip("/") + "/"
    return sorted(f"{bucket}/{o.key}" for o in store.list_objects(bucket, prefix) if o.key.endswith(".parquet"))


def read_parquet(store: ObjectStore, uri: str, schema: pa.Schema, columns: Sequence[str] | None = None) -> pa.Table:
    """A Parquet object or every Parquet object under a prefix (folders too, e.g. ``shard=NN/``), as ``schema``.

    Returns an empty table when a prefix holds no Parquet object.
    """
    paths = _parquet_paths(store, uri)
    cols = list(columns) if columns is not None else schema.names
    if not paths:
        return schema.empty_table().select(cols)
    return ds.dataset(paths, schema=schema, format="parquet", filesystem=store.filesystem).to_table(columns=cols)


def read_items(store: ObjectStore, ingest: IngestResult) -> pd.DataFrame:
    """The canonical items accepted at ingest; their number must be ingest's ``accepted``."""
    table = read_parquet(store, ingest.items_uri, ITEMS, _ITEM_COLUMNS)
    if table.num_rows != ingest.accepted:
        raise ReconciliationError(
            f"ingest accepted {ingest.accepted:,} items but {ingest.items_uri} holds {table.num_rows:,}: "
            "the items and ingest's result.json disagree; rerun the ingest stage for this work order."
        )
    return table.to_pandas()


def latest_annotations(log: pa.Table) -> pa.Table:
    """The current version of every annotation: per (site_id, annotation_id), the latest ``updated_at``.

    The log is append-only, so an edited annotation appears once per version. Rows come out sorted by
    site and annotation id.
    """
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
    keep = pa.concat_arrays([pa.array([True]), pc.invert(repeat)])
    return ordered.filter(keep)


def read_annotation_log(store: ObjectStore, uri: str) -> pd.DataFrame:
    """Every part of the annotation log under ``uri``, latest version of each annotation (pandas)."""
    return latest_annotations(read_parquet(store, uri, ANNOTATIONS)).to_pandas()


def read_gold(store: ObjectStore, uri: str) -> pd.DataFrame:
    """Split's gold answers (``item_id``, ``answer``); empty when the work order has no gold set."""
    bucket, key = parse_uri(uri)
    if store.head(bucket, key) is None:
        return pd.DataFrame({"item_id": pd.Series(dtype="str"), "answer": pd.Series(dtype="str")})
    return read_table(store, uri).select(["item_id", "answer"]).to_pandas()


def read_consolidated(store: ObjectStore, qa: QAResult) -> pd.DataFrame:
    return read_parquet(store, qa.results_uri, CONSOLIDATED).to_pandas()


def label_creation_date(annotations: pd.DataFrame) -> str | None:
    """When the last answer was given (UTC, ISO 8601 to the second): the date the labels carry."""
    if annotations.empty:
        return None
    last = pd.Timestamp(annotations["updated_at"].max())
    if pd.isna(last):
        return None
    last = last.tz_localize(UTC) if last.tzinfo is None else last.tz_convert(UTC)
    return last.strftime("%Y-%m-%dT%H:%M:%S")


def check_release(qa: QAResult) -> str | None:
    """Raise :class:`DeliveryBlocked` unless QA passed or a QA lead approved; returns the approval note."""
    if qa.passed:
        return None
    if qa.approved is not True:
        decision = "rejected it" if qa.approved is False else "has not approved it"
        raise DeliveryBlocked(
            f"QA validation of {qa.work_order_id} (round {qa.round_number}) failed and a QA lead {decision}: "
            f"nothing is delivered. Read the QA report ({qa.report_key}) and either fix the causes and rerun QA, "
            "or record an approval (approved, approved_by, approval_comment) in the QA result."
        )
    who = qa.approved_by or "a QA lead"
    why = f": “{qa.approval_comment}”" if qa.approval_comment else ""
    return (
        f"QA validation did not pass every check; {who} approved this delivery{why}. "
        f"See {QA_REPORT_NAME} and {VALIDATION_NAME} for the checks that failed."
    )


# --- Image sizes (ranged reads) ------------------------------------------------------------------------


def _image_size(store: ObjectStore, uri: str) -> tuple[int, int] | str:
    """Pixel size of one image from as few leading bytes as its header needs, or why it is unknown."""
    try:
        bucket, key = parse_uri(uri)
    except S3Error:
        return "not an s3:// URI"
    try:
        for size in _IMAGE_READS:
            head = store.get_range(bucket, key, 0, size)
            try:
                return read_image_size(head)
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                if len(head) < size:  # the whole object was read: it is not an image PIL knows
                    return f"not a readable image ({type(exc).__name__})"
        return f"no image header in the first {_IMAGE_READS[-1]:,} bytes"
    except ObjectNotFound:
        return "object not found"


def read_image_sizes(
    store: ObjectStore, uris: Iterable[str], workers: int = 16
) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Pixel sizes of images in S3, from a ranged GET of each header (in parallel).

    Returns:
        ``uri -> (width, height)`` for the images read, and ``uri -> reason`` for those that could not be.
    """
    todo = sorted(set(uris))
    sizes: dict[str, tuple[int, int]] = {}
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(workers) as pool:
        for uri, got in zip(todo, pool.map(lambda u: _image_size(store, u), todo), strict=True):
            if isinstance(got, str):
                failed[uri] = got
            else:
                sizes[uri] = got
    return sizes, failed


def cached_image_sizes(
    store: ObjectStore, uris: Iterable[str], cache_uri: str
) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """:func:`read_image_sizes`, remembering what was read in ``cache_uri`` so a rerun reads no image twice.

    Failures are not cached: a fixed image is read again next time.
    """
    wanted = set(uris)
    bucket, key = parse_uri(cache_uri)
    known: dict[str, tuple[int, int]] = {}
    if store.head(bucket, key) is not None:
        cache = read_table(store, cache_uri, IMAGE_SIZES).to_pydict()
        rows = zip(cache["media_uri"], cache["width"], cache["height"], strict=True)
        known = {u: (int(w), int(h)) for u, w, h in rows}
    fresh, failed = read_image_sizes(store, wanted - set(known))
    if fresh:
        merged = {**known, **fresh}
        ordered = sorted(merged)
        table = pa.Table.from_pydict(
            {
                "media_uri": ordered,
                "width": [merged[u][0] for u in ordered],
                "height": [merged[u][1] for u in ordered],
            },
            schema=IMAGE_SIZES,
        )
        store.put_bytes(bucket, key, table_bytes(table), content_type="application/vnd.apache.parquet")
        known = merged
    return {u: known[u] for u in wanted if u in known}, failed


def needs_image_sizes(work_order: WorkOrder) -> bool:
    formats = set(work_order.delivery.formats)
    if work_order.task_type not in _IMAGE_TASKS:
        return False
    boxes = work_order.task_type == TaskType.OBJECT_DETECTION
    return bool(formats & _SIZED) or (boxes and bool(formats & _SIZED_BOXES))


# --- Building the package ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedPackage:
    """Everything a delivery version holds, except what depends on its version number (data card, manifest)."""

    work_order: WorkOrder
    qa: QAResult
    intake: dict[str, Any]
    data: tuple[PackageFile, ...]
    qa_report: PackageFile
    validation: PackageFile
    counts: dict[str, Any]
    delivered: pd.DataFrame = field(repr=False)
    workforce: Workforce
    contract_version: str
    creation_date: str | None
    approval_note: str | None
    image_size_failures: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return content_fingerprint(self.data)

    def documents(self, version: str) -> list[PackageFile]:
        """The report, the validation results and the data card of ``version``."""
        card = render_data_card(
            self.work_order,
            version=version,
            counts=self.counts,
            delivered=self.delivered,
            workforce=self.workforce,
            agreement=self.qa.agreement,
            gold_accuracy=self.qa.gold_accuracy,
            files=[f.entry() for f in self.data],
            limits=[self.approval_note] if self.approval_note else [],
        )
        readme = PackageFile(DATA_CARD_NAME, card.encode("utf-8"), None, "text/markdown; charset=utf-8", "document")
        return [self.qa_report, self.validation, readme]

    def manifest(self, version: str, files: Sequence[PackageFile], created_at: str) -> dict[str, Any]:
        """The manifest of ``version`` listing ``files``; documents have ``rows`` null."""
        wo = self.work_order
        manifest = build_manifest(
            [(f.name, f.body, f.rows or 0) for f in files],
            wo,
            version,
            SCHEMA_VERSION,
            self.contract_version,
            self.counts,
            created_at=created_at,
        )
        kinds = {f.name: f for f in files}
        for entry in manifest["files"]:
            entry["rows"] = kinds[entry["name"]].rows
        manifest["content_fingerprint"] = self.fingerprint
        manifest["data_files"] = sorted(f.name for f in self.data)
        manifest["formats"] = [f.value for f in dict.fromkeys(wo.delivery.formats)]
        manifest["ingest"] = self.intake
        manifest["labels_created"] = self.creation_date
        manifest["qa"] = {
            "round": self.qa.round_number,
            "passed": self.qa.passed,
            "approved": self.qa.approved,
            "approved_by": self.qa.approved_by,
            "approval_comment": self.qa.approval_comment,
            "agreement": self.qa.agreement,
            "gold_accuracy": self.qa.gold_accuracy,
        }
        return manifest


def content_fingerprint(data: Iterable[PackageFile]) -> str:
    """SHA-256 of the ``sha256sum`` listing (``<sha256>  <name>``, sorted by name) of the data files."""
    listing = "".join(f"{f.sha256}  {f.name}\n" for f in sorted(data, key=lambda f: f.name))
    return sha256_hex(listing.encode())


def prepare_package(
    store: ObjectStore,
    work_order: WorkOrder,
    qa: QAResult,
    ingest: IngestResult,
    annotations: pd.DataFrame,
    *,
    countries: Mapping[str, str],
    image_sizes_uri: str,
) -> PreparedPackage:
    """Read the items, QA's answers and documents, and build every file of the delivery in memory.

    Args:
        store: The object store.
        work_order: The work order delivered.
        qa: QA's result (answers, report, validation, approval).
        ingest: Ingest's result (canonical items and the accepted count to reconcile with).
        annotations: The annotation log, latest versions (for rework lineage, workforce and the label date).
        countries: Partner site id -> country, for the data card.
        image_sizes_uri: Where pixel sizes read from image headers are remembered between runs.

    Raises:
        DeliveryBlocked: QA failed without a QA lead's approval.
        ReconciliationError: accepted items do not add up to delivered plus excluded.
        DeliveryError: nothing to deliver, or a QA document is missing.
    """
    approval_note = check_release(qa)
    items = read_items(store, ingest)
    consolidated = read_consolidated(store, qa)
    deliverable = build_deliverable(items, consolidated, f"round-{qa.round_number}")
    frame = deliverable.frame
    if frame.empty:
        reasons = deliverable.excluded["reason"].value_counts().to_dict()
        raise DeliveryError(
            f"{work_order.id}: none of the {len(items):,} accepted items has a deliverable answer "
            f"(excluded: {reasons}); nothing to deliver. Check QA's results at {qa.results_uri}."
        )
    reworked = reworked_item_ids(annotations) if not annotations.empty else pd.Series([], dtype="str")
    reworked = reworked[reworked.isin(frame["item_id"])]
    counts = reconcile(items["item_id"], frame["item_id"], reworked, deliverable.excluded)

    creation_date = label_creation_date(annotations)
    sizes: dict[str, tuple[int, int]] = {}
    failures: dict[str, str] = {}
    if needs_image_sizes(work_order):
        uris = frame["media_uri"].dropna().astype("str")
        sizes, failures = cached_image_sizes(store, uris[uris.str.startswith("s3://")], image_sizes_uri)
    ctx = DeliveryContext.from_work_order(work_order, creation_date=creation_date, image_sizes=sizes)
    try:
        written = write_formats(frame, ctx, work_order.delivery.formats)
    except ValueError as exc:
        hint = f" ({len(failures)} image(s) unreadable, e.g. {next(iter(failures.items()))})" if failures else ""
        raise DeliveryError(f"{work_order.id}: cannot write the delivery files: {exc}{hint}") from exc
    content_types = {spec.file_name: spec.content_type for spec in FORMAT_WRITERS.values()}
    data = tuple(PackageFile(name, body, rows, content_types[name], "data") for name, body, rows in written)

    ws_bucket = store.settings.workspace_bucket
    report = _document(store, f"s3://{ws_bucket}/{qa.report_key}", QA_REPORT_NAME, "text/html; charset=utf-8")
    validation = _document(store, qa.validation_uri, VALIDATION_NAME, "application/json")
    return PreparedPackage(
        work_order=work_order,
        qa=qa,
        intake={
            "version": ingest.ingest_version,
            "rows_read": ingest.rows_read,
            "accepted": ingest.accepted,
            "quarantined": ingest.quarantined,
            "duplicates": ingest.duplicates,
        },
        data=data,
        qa_report=report,
        validation=validation,
        counts=counts,
        delivered=frame,
        workforce=summarise_workforce(annotations, countries),
        contract_version=load_contract(work_order.task_type, "output").version,
        creation_date=creation_date,
        approval_note=approval_note,
        image_size_failures=failures,
    )


def _document(store: ObjectStore, uri: str, name: str, content_type: str) -> PackageFile:
    try:
        body = store.get_bytes(*parse_uri(uri))
    except ObjectNotFound:
        raise DeliveryError(
            f"QA's {name.split('.')[0]} is missing at {uri}: rerun the QA stage for this work order."
        ) from None
    return PackageFile(name, body, None, content_type, "document")


# --- Writing a version ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    """What :func:`commit_package` did.

    Attributes:
        version: ``v<N>`` of the delivery that holds this content.
        manifest_uri: Its manifest.
        manifest: The manifest (as committed, possibly by an earlier or concurrent run).
        outcome: ``created`` (new version), ``completed`` (a folder an earlier run left without manifest),
            ``unchanged`` (the newest version already has this content) or ``concurrent`` (another run
            committed the same content while this one was writing).
        restored: Files of an unchanged version that were missing and written again.
        abandoned: ``v<N>`` -> why: folders without manifest that this run did not complete.
    """

    version: str
    manifest_uri: str
    manifest: dict[str, Any]
    outcome: Literal["created", "completed", "unchanged", "concurrent"]
    restored: tuple[str, ...] = ()
    abandoned: dict[str, str] = field(default_factory=dict)

    @property
    def prefix_uri(self) -> str:
        return self.manifest_uri.removesuffix(MANIFEST_NAME)


def delivery_root(work_order: WorkOrder) -> tuple[str, str]:
    """``(bucket, key prefix)`` of the work order's deliveries: ``<delivery uri>/<work order id>``."""
    bucket, key = parse_uri(work_order.delivery.uri)
    return bucket, posixpath.join(key.strip("/"), work_order.id) if key.strip("/") else work_order.id


def scan_versions(store: ObjectStore, bucket: str, root: str) -> dict[int, set[str]]:
    """Version number -> names of the files in its folder, for every ``v<N>/`` under ``root``."""
    found: dict[int, set[str]] = {}
    for obj in store.list_objects(bucket, f"{root}/"):
        m = _VERSION_KEY.match(obj.key[len(root) + 1 :])
        if m:
            found.setdefault(int(m["n"]), set()).add(m["name"])
    return found


def commit_package(store: ObjectStore, prepared: PreparedPackage, *, now: datetime | None = None) -> Commit:
    """Write ``prepared`` as a delivery version, or find the version that already holds it (module docstring).

    Args:
        store: The object store.
        prepared: The files, from :func:`prepare_package`.
        now: Commit time recorded in a new manifest (``created_at``); the manifest is written once, so
            this is the only place a clock appears.
    """
    bucket, root = delivery_root(prepared.work_order)
    fp = prepared.fingerprint
    versions = scan_versions(store, bucket, root)
    committed = sorted(n for n, names in versions.items() if MANIFEST_NAME in names)
    latest = committed[-1] if committed else 0
    abandoned = {f"v{n}": "older than the newest delivery" for n in versions if n < latest and n not in committed}

    if latest:
        manifest = _read_manifest(store, bucket, root, latest)
        if manifest.get("content_fingerprint") == fp:
            version = f"v{latest}"
            ours = [*prepared.data, *prepared.documents(version)]
            restored = _restore(store, bucket, f"{root}/{version}", manifest, ours)
            uri = _uri(bucket, root, latest, MANIFEST_NAME)
            return Commit(version, uri, manifest, "unchanged", restored, abandoned)

    pending = [n for n in sorted(versions) if n > latest and n not in committed]
    candidates = [*pending, *range(max(versions, default=0) + 1, max(versions, default=0) + 1 + _MAX_VERSION_ATTEMPTS)]
    created_at = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for n in candidates:
        version = f"v{n}"
        prefix = f"{root}/{version}"
        files = [*sorted(prepared.data, key=lambda f: f.name), *prepared.documents(version)]
        conflict = _place(store, bucket, prefix, files)
        if conflict:
            abandoned[version] = f"holds other content ({conflict})"
            continue
        manifest = prepared.manifest(version, files, created_at)
        key = f"{prefix}/{MANIFEST_NAME}"
        try:
            store.put_bytes(bucket, key, manifest_bytes(manifest), content_type="application/json", if_none_match=True)
        except PreconditionFailed:
            theirs = _read_manifest(store, bucket, root, n)
            if theirs.get("content_fingerprint") == fp:
                return Commit(version, _uri(bucket, root, n, MANIFEST_NAME), theirs, "concurrent", (), abandoned)
            abandoned[version] = "another run committed other content there"
            continue
        outcome: Literal["created", "completed"] = "completed" if n in versions else "created"
        return Commit(version, _uri(bucket, root, n, MANIFEST_NAME), manifest, outcome, (), abandoned)
    raise DeliveryError(
        f"{prepared.work_order.id}: no free delivery version under s3://{bucket}/{root}/ after "
        f"{len(candidates)} attempts ({abandoned}); remove abandoned folders without manifest.json and rerun."
    )


def _uri(bucket: str, root: str, n: int, name: str) -> str:
    return f"s3://{bucket}/{root}/v{n}/{name}"


def _read_manifest(store: ObjectStore, bucket: str, root: str, n: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(store.get_bytes(bucket, f"{root}/v{n}/{MANIFEST_NAME}"))
    return data


def _stored_sha(store: ObjectStore, bucket: str, key: str) -> str | None:
    """SHA-256 of an object (from its metadata, else by reading it), or None when it does not exist."""
    info = store.head(bucket, key)
    if info is None:
        return None
    if info.sha256:
        return info.sha256
    return sha256_hex(store.get_bytes(bucket, key))


def _place(store: ObjectStore, bucket: str, prefix: str, files: Sequence[PackageFile]) -> str | None:
    """Write each file whose key is missing; None when every file now holds our bytes, else the first conflict."""
    for f in files:
        key = f"{prefix}/{f.name}"
        existing = _stored_sha(store, bucket, key)
        if existing is None:
            try:
                store.put_bytes(bucket, key, f.body, content_type=f.content_type, if_none_match=True)
                continue
            except PreconditionFailed:  # written by a concurrent run since the HEAD
                existing = _stored_sha(store, bucket, key)
        if existing != f.sha256:
            return f"{f.name} differs"
    return None


def _restore(
    store: ObjectStore, bucket: str, prefix: str, manifest: Mapping[str, Any], ours: Sequence[PackageFile]
) -> tuple[str, ...]:
    """Write back a committed version's missing or damaged files, where this run has the very same bytes."""
    by_sha = {f.sha256: f for f in ours}
    restored = []
    for entry in manifest["files"]:
        key = f"{prefix}/{entry['name']}"
        info = store.head(bucket, key)
        if info is not None and info.size == entry["size"] and info.sha256 in (None, entry["sha256"]):
            continue
        mine = by_sha.get(entry["sha256"])
        if mine is None:
            continue  # cannot restore bytes this run does not have; verify() reports it
        store.put_bytes(bucket, key, mine.body, content_type=mine.content_type)
        restored.append(entry["name"])
    return tuple(restored)


def package_reader(store: ObjectStore, manifest_uri: str) -> Callable[[str], bytes]:
    """A ``read_bytes(name)`` over a delivery folder, for :func:`flows.deliver.manifest.verify`."""
    bucket, key = parse_uri(manifest_uri)
    folder = key.rsplit("/", 1)[0]

    def read(name: str) -> bytes:
        return store.get_bytes(bucket, f"{folder}/{name}")

    return read
