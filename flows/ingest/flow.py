"""The ingest flow: a client's dataset in S3 -> canonical items, quarantine and duplicates, reconciled.

Orchestration only; reading, checking, normalising and deduplicating live in ``read``, ``contract``,
``normalise`` and ``dedupe``. A run is one *ingest version*, named by the content of the source objects
(their SHA-256), the column mapping and the contract. Rerunning on the same input finds the finished
version and rewrites nothing; a changed input is a new version beside the old one.

Every row is checked against the contract by the row checker while it streams by; Great Expectations then
validates a uniform sample of the accepted items against the same contract (:mod:`flows.ingest.sample`)
and the counts of every file read (each record accepted, quarantined or a duplicate), for the report and
the Data Docs. Nothing is read back: memory stays flat whatever the input size.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.core import prefect_fixes  # noqa: F401  (applied on import: see the module)
from flows.core.contracts import load_contract
from flows.core.data_docs import publish_data_docs
from flows.core.gx import build_docs, docs_context, run_checkpoint
from flows.core.malloc import bound_heap_growth
from flows.core.models import IngestResult, SourceFormat, WorkOrder
from flows.core.s3 import ObjectStore, S3Error, parse_uri
from flows.core.settings import load_settings
from flows.core.startup import tune_gc_after_imports
from flows.core.workspace import read_model_or_none, workspace, write_json, write_model
from flows.ingest.contract import (
    build_suite,
    gx_frame,
    reconciliation_frame,
    reconciliation_suite,
)
from flows.ingest.dedupe import Reconciliation, SeenState, ingest_batches
from flows.ingest.media import media_check
from flows.ingest.read import RawBatch, iter_batches
from flows.ingest.sample import SAMPLE_ROWS, ItemSample
from flows.ingest.sink import IngestSink, QuarantineTally, quarantine_summary
from flows.ingest.source_files import SourceFiles


@dataclass(frozen=True)
class SourceObject:
    uri: str
    size: int
    etag: str
    sha256: str = ""  # filled in by canonicalise, from the bytes it read


@task(name="list sources", task_run_name="{work_order.id} / list sources", cache_policy=NO_CACHE)
def list_sources(work_order: WorkOrder) -> list[SourceObject]:
    """Every object under the source URI, with its size and ETag, in key order."""
    store = ObjectStore(load_settings())
    bucket, prefix = parse_uri(work_order.source.uri)
    single = store.head(bucket, prefix) if prefix and not prefix.endswith("/") else None
    # A prefix names a folder: "in" must not also take "inbox/..." or "in-old.csv".
    folder = prefix if not prefix or prefix.endswith("/") else f"{prefix}/"
    infos = (
        [single]
        if single is not None
        else [o for o in store.list_objects(bucket, folder) if not (o.key.endswith("/") and o.size == 0)]
    )
    if not infos:
        raise S3Error(
            f"No objects under {work_order.source.uri}: check the work order's source.uri and that the client's "
            "upload finished."
        )
    return [SourceObject(i.uri, i.size, i.etag) for i in sorted(infos, key=lambda i: i.key)]


def ingest_version(work_order: WorkOrder, sources: list[SourceObject], contract_version: str) -> str:
    """Name of an ingest: same objects (key, size, ETag), mapping and contract -> same version.

    S3 gives every new write of an object a new ETag (the MD5 of a single-part upload), so a changed
    input gives a new version, and an untouched one the same. An identical re-upload whose ETag differs
    (a multipart upload with other part sizes, or SSE-KMS) is ingested again as a new version.
    """
    basis = {
        "sources": [(s.uri, s.size, s.etag) for s in sources],
        "format": work_order.source.format.value,
        "columns": work_order.columns.model_dump(mode="json"),
        "classes": work_order.label_schema.classes,
        "fields": [f.name for f in work_order.label_schema.fields],
        "contract": contract_version,
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Canonicalised:
    """What canonicalise hands on besides the tables in S3: the counts, the sample Great Expectations
    validates, and what the report shows of the quarantine."""

    recon: Reconciliation
    sample: pa.Table
    quarantine_head: pa.Table
    quarantine_fields: list[tuple[str, int]]
    sources: list[SourceObject]  # with the SHA-256 of each, for the manifest


@task(name="canonicalise", task_run_name="{work_order.id} / canonicalise {version}", cache_policy=NO_CACHE)
def canonicalise(work_order: WorkOrder, sources: list[SourceObject], version: str) -> Canonicalised:
    """Stream every source file through read -> check -> normalise -> dedupe into the version's tables.

    Each object is read once, at the ETag it was listed with, and hashed as it is read
    (:mod:`flows.ingest.source_files`). The objects go through one pipeline, one after the other, so the
    next object is opened (a Parquet file downloaded) and its first batches read while the last batches of
    the one before are deduplicated and written, instead of the pipeline emptying at every object.
    """
    bound_heap_growth()  # resident memory that does not grow with the input: see flows.core.malloc
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    contract = load_contract(work_order.task_type, "input")
    check = media_check(store) if work_order.columns.media_uri else None
    seen = SeenState()
    sample = ItemSample(SAMPLE_ROWS)
    quarantine = QuarantineTally()
    recon = Reconciliation()
    root = f"{ws.bucket}/{ws.key('ingest', version)}"
    # A run that died before its result.json may have left items a rerun would not overwrite: parts past
    # the rerun's last, or files of an earlier layout (items/shard=NN/ before parts in ingest order).
    # Readers take every Parquet object under items/, so the version's items start empty.
    store.delete_prefix(ws.bucket, ws.key("ingest", version, "items") + "/")
    hashed: list[SourceObject] = []
    done_files = 0
    try:
        with IngestSink(store.filesystem, root, upload=store.upload_file) as sink:
            batches = source_batches(store, sources, work_order.source.format, hashed)
            for batch in ingest_batches(batches, work_order, contract, seen, media_check=check):
                sink.write_items(batch.accepted)
                sink.write_quarantine(batch.quarantined)
                sink.write_duplicates(batch.duplicates)
                sample.add(batch.accepted, batch.content_keys)
                quarantine.add(batch.quarantined)
                recon = recon.add(batch)
                if batch.last:
                    done_files += 1
                    # Give Arrow's freed pages back after each file: the CSV reader's blocks otherwise pile
                    # up in the allocator (canonicalise of 5M CSV rows: peak 980 -> 917 MB, same speed).
                    pa.default_memory_pool().release_unused()
                    logger.info(
                        "%d/%d %s: %d rows read so far, %d accepted, %d quarantined, %d duplicates",
                        done_files,
                        len(sources),
                        batch.source_object,
                        recon.rows_read,
                        recon.accepted,
                        recon.quarantined,
                        recon.duplicates,
                    )
    finally:
        seen.close()
    # Arrow's allocator keeps freed pages for reuse; validation allocates through malloc (pandas, GX), so
    # give them back now rather than hold them idle through the rest of the run.
    pa.default_memory_pool().release_unused()
    return Canonicalised(recon.check(), sample.table(), quarantine.head, quarantine.fields, hashed)


def source_batches(
    store: ObjectStore, sources: list[SourceObject], fmt: SourceFormat, hashed: list[SourceObject]
) -> Iterator[RawBatch]:
    """The raw batches of every source object in turn, each object read at its listed ETag; each object,
    with its SHA-256, is appended to ``hashed`` once its last batch has been taken."""
    for source in sources:
        with SourceFiles(store, source.uri, source.etag) as files:
            yield from iter_batches(files.fs, files.path, fmt, name=source.uri)
            hashed.append(replace(source, sha256=files.sha256()))


@task(name="validate items", task_run_name="{work_order.id} / validate {version}", cache_policy=NO_CACHE)
def validate_items(
    work_order: WorkOrder, version: str, done: Canonicalised
) -> tuple[bool, str | None, list[dict[str, object]]]:
    """Great Expectations over the sample of accepted items and the counts of every file; Data Docs
    published next to the items."""
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    contract = load_contract(work_order.task_type, "input")
    fields = [f.name for f in work_order.label_schema.fields]
    suite = build_suite(
        contract, field_names=fields, classes=work_order.label_schema.classes, name=f"{work_order.id}.input"
    )
    checks = [
        (suite, gx_frame(done.sample, fields), f"{work_order.id}-items-sample"),
        (
            reconciliation_suite(f"{work_order.id}.reconciliation"),
            reconciliation_frame(done.recon.files),
            f"{work_order.id}-reconciliation",
        ),
    ]
    success = True
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="kazi-gx-") as tmp:
        context = docs_context(Path(tmp))
        for check_suite, frame, name in checks:
            result = run_checkpoint(
                context, check_suite, frame, name=name, run_name=f"ingest-{version}", update_docs=False
            )
            success = success and bool(result.success)
            for suite_result in result.run_results.values():
                for r in suite_result.results:
                    config = r.expectation_config
                    kwargs: dict[str, Any] = dict(config.kwargs) if config else {}
                    got: dict[str, Any] = r.result or {}
                    rows.append(
                        {
                            "validation": name,
                            "expectation": config.type if config else "?",
                            "column": kwargs.get("column") or "",
                            "success": bool(r.success),
                            "rows": got.get("element_count", len(frame)),
                            "unexpected": got.get("unexpected_count") or 0,
                        }
                    )
        build_docs(context)  # once, for both checkpoints
        url = publish_data_docs(
            store,
            Path(tmp),
            ws.bucket,
            ws.key("ingest", version, "data-docs"),
            title=f"Input checks of {work_order.id}, ingest version {version[:12]}",
        )
    return success, url, rows


def _report(work_order: WorkOrder, result: IngestResult, done: Canonicalised) -> str:
    recon = done.recon
    lines = [
        f"## Ingest of {work_order.id} (version `{result.ingest_version}`)",
        "",
        "| rows read | accepted | quarantined | duplicates | files quarantined |",
        "|---:|---:|---:|---:|---:|",
        f"| {result.rows_read:,} | {result.accepted:,} | {result.quarantined:,} | {result.duplicates:,} | "
        f"{result.files_quarantined:,} |",
        "",
        f"**Reconciled:** {result.rows_read:,} read = {result.accepted:,} accepted + {result.quarantined:,} "
        f"quarantined + {result.duplicates:,} duplicates.",
        f"**Validation (Great Expectations):** {'passed' if result.validation_success else 'FAILED'}"
        + (f" — [Data Docs]({result.data_docs_uri})" if result.data_docs_uri else ""),
        f"Every row read was checked against the input contract by the row checker; Great Expectations "
        f"validated the same contract on a uniform sample of {done.sample.num_rows:,} of the "
        f"{result.accepted:,} accepted items, and the counts of each of the {recon.files_read:,} files read.",
    ]
    if recon.file_errors:
        lines += ["", "Files that could not be read (quarantined whole; fix or re-upload them):"]
        lines += [f"- `{f}`: {why}" for f, why in recon.file_errors]
    if recon.empty_files:
        lines += ["", "Empty files: " + ", ".join(f"`{f}`" for f in recon.empty_files)]
    reasons = done.quarantine_fields
    if reasons:
        lines += ["", "Quarantined rows by field:", ""] + [f"- {field}: {n:,}" for field, n in reasons]
    return "\n".join(lines)


@flow(name="ingest", flow_run_name="{work_order.id} / ingest", log_prints=True)
def ingest_flow(work_order: WorkOrder) -> IngestResult:
    """Take a client's dataset in: validate, normalise to canonical Parquet, quarantine, reconcile."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    store.put_bytes(ws.bucket, ws.key("work_order.yaml"), work_order.to_yaml().encode())
    contract = load_contract(work_order.task_type, "input")
    sources = list_sources(work_order)
    version = ingest_version(work_order, sources, contract.version or "")
    done = read_model_or_none(store, ws.uri("ingest", version, "result.json"), IngestResult)
    if done is not None:
        logger.info("%s: ingest version %s is already complete; nothing rewritten.", work_order.id, version)
        write_model(store, ws.uri("ingest", "result.json"), done)
        return done

    canonical = canonicalise(work_order, sources, version)
    recon = canonical.recon
    success, docs_url, expectations = validate_items(work_order, version, canonical)
    sources = canonical.sources
    write_json(
        store,
        ws.uri("ingest", version, "manifest.json"),
        {
            "work_order_id": work_order.id,
            "ingest_version": version,
            "contract_version": contract.version,
            "sources": [s.__dict__ for s in sources],
            "counts": {
                "rows_read": recon.rows_read,
                "accepted": recon.accepted,
                "quarantined": recon.quarantined,
                "duplicates": recon.duplicates,
                "files_read": recon.files_read,
                "files_quarantined": recon.files_quarantined,
            },
            "files": [
                dict(zip(("uri", "rows_read", "accepted", "quarantined", "duplicates"), f, strict=True))
                for f in recon.files
            ],
            "file_errors": [list(e) for e in recon.file_errors],
            "empty_files": list(recon.empty_files),
            "encodings": [list(e) for e in recon.encodings],
            "notes": [list(n) for n in recon.notes],
        },
    )
    result = IngestResult(
        work_order_id=work_order.id,
        ingest_version=version,
        items_uri=ws.uri("ingest", version, "items") + "/",
        quarantine_uri=ws.uri("ingest", version, "quarantine.parquet"),
        duplicates_uri=ws.uri("ingest", version, "duplicates.parquet"),
        manifest_uri=ws.uri("ingest", version, "manifest.json"),
        rows_read=recon.rows_read,
        accepted=recon.accepted,
        quarantined=recon.quarantined,
        duplicates=recon.duplicates,
        files_quarantined=recon.files_quarantined,
        data_docs_uri=docs_url,
        validation_success=success,
    )
    create_markdown_artifact(
        key=f"{work_order.id}-ingest",
        markdown=_report(work_order, result, canonical),
        description=f"Ingest report of {work_order.id}",
    )
    if canonical.quarantine_head.num_rows:
        create_table_artifact(
            key=f"{work_order.id}-ingest-quarantine",
            table=quarantine_summary(canonical.quarantine_head),
            description="First quarantined rows: file, row, field and reason",
        )
    create_table_artifact(
        key=f"{work_order.id}-ingest-validation",
        table=expectations,
        description="Great Expectations checks: a sample of the accepted items, and the counts of every file",
    )
    if docs_url:
        create_link_artifact(
            key=f"{work_order.id}-ingest-data-docs", link=docs_url, link_text="Data Docs of the input validation"
        )
    # result.json last: a version without it is unfinished, and a rerun redoes it with the same keys.
    write_model(store, ws.uri("ingest", version, "result.json"), result)
    write_model(store, ws.uri("ingest", "result.json"), result)
    logger.info(
        "%s: %d rows read = %d accepted + %d quarantined + %d duplicates (version %s)",
        work_order.id,
        result.rows_read,
        result.accepted,
        result.quarantined,
        result.duplicates,
        version,
    )
    return result


tune_gc_after_imports()  # this module's imports are done: see flows.core.startup
