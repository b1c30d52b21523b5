"""The deliver stage: the client's versioned delivery, Kazi's impact report, and the workers' signed records.

Order of work, each step safe to repeat:

1. **Inputs.** QA's result (the ``qa`` parameter, else ``qa/result.json``), checked first: a failed QA goes
   out only with a QA lead's approval, which is then recorded in the manifest and the data card. Ingest's
   result and the annotation log (latest version of every annotation).
2. **Package** (:mod:`flows.deliver.package`), to ``<delivery uri>/<work order id>/v<N>/``: the data files
   in the work order's formats, the QA report, the validation results and the data card, then
   ``manifest.json`` last, with a conditional write. Nothing in a delivery folder is ever overwritten. Same
   content as the newest version: nothing is written. New content (rework after a delivery): a new
   version, the old one untouched. A folder left without manifest by a run that died is completed by the
   rerun, under the same number. The package module's docstring has the rules.
3. **Impact report** (Kazi-internal, never in the client's package): pay per hour against the living wage
   per partner site, to ``deliver/impact/index.html`` in the workspace. A site paid below its living wage is
   suspended in the partner registry (``impact.suspended: true``) until someone reviews it. Each site is
   suspended once per work order (``deliver/impact/suspensions.json``), so a rerun does not undo a
   reviewer's decision to lift it.
4. **Worker records**, signed with Ed25519 (key: sha256 of ``KAZI_WORKER_RECORD_SIGNING_SEED``), to
   ``deliver/worker-records/<pseudonymous id>.json``, with the public key at ``public_key.pem`` beside them.
   Ed25519 signatures are deterministic, so a rerun writes the same bytes.
5. **Artifacts**: the delivery note (presigned links with a bounded expiry), the files table, the link to
   the impact report. Then ``deliver/result.json``, last.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, SecretStr

from flows.core import prefect_fixes  # noqa: F401  (applied on import: see the module)
from flows.core.models import DeliveryResult, IngestResult, PartnerRegistry, QAResult, WorkOrder
from flows.core.s3 import ObjectStore, parse_uri
from flows.core.schemas import CONSOLIDATED
from flows.core.settings import load_settings
from flows.core.startup import tune_gc_after_imports
from flows.core.workspace import (
    default_registry_uri,
    load_registry,
    load_stage_result,
    read_json,
    workspace,
    write_json,
    write_model,
)
from flows.deliver.impact import compute_impact, render_impact_html
from flows.deliver.package import (
    Commit,
    DeliveryError,
    check_release,
    commit_package,
    label_creation_date,
    prepare_package,
    read_annotation_log,
    read_gold,
    read_parquet,
)
from flows.deliver.worker_record import annotation_outcomes, build_worker_records, sign_record

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PackageOutcome(BaseModel):
    """What the package task hands on: where the delivery is and what it holds. No bytes, no secrets."""

    version: str
    outcome: str
    manifest_uri: str
    prefix_uri: str
    files: list[dict[str, Any]]
    counts: dict[str, Any]
    restored: list[str] = Field(default_factory=list)
    abandoned: dict[str, str] = Field(default_factory=dict)
    approval_note: str | None = None


class ImpactOutcome(BaseModel):
    report_uri: str
    report_url: str
    suspend: list[str] = Field(description="Sites paid below their living wage in this work order.")
    newly_suspended: list[str] = Field(description="Sites this run suspended in the registry.")
    lifted: list[str] = Field(description="Sites this work order suspended before and a reviewer reinstated.")
    unassessed: dict[str, str] = Field(description="Site id -> why its pay could not be assessed.")


class WorkerRecordsOutcome(BaseModel):
    prefix_uri: str
    public_key_uri: str
    records: int


# --- Inputs --------------------------------------------------------------------------------------


@task(name="load qa result", task_run_name="load qa result of {work_order.id}", cache_policy=NO_CACHE)
def load_qa_result(work_order: WorkOrder) -> QAResult:
    return load_stage_result(load_settings(), work_order, "qa", QAResult)


@task(name="load ingest result", task_run_name="load ingest result of {work_order.id}", cache_policy=NO_CACHE)
def load_ingest_result(work_order: WorkOrder) -> IngestResult:
    return load_stage_result(load_settings(), work_order, "ingest", IngestResult)


@task(name="load annotation log", task_run_name="load annotation log of {work_order.id}", cache_policy=NO_CACHE)
def load_annotations(work_order: WorkOrder) -> pd.DataFrame:
    """The annotation log, one row per annotation (its latest version)."""
    settings = load_settings()
    log = read_annotation_log(ObjectStore(settings), workspace(settings, work_order).uri("annotate", "log") + "/")
    get_run_logger().info(
        "Annotation log of %s: %d annotations by %d workers at %d sites",
        work_order.id,
        len(log),
        log[["site_id", "annotator"]].drop_duplicates().shape[0],
        log["site_id"].nunique(),
    )
    return log


# --- Package -------------------------------------------------------------------------------------


@task(name="write delivery package", task_run_name="package {work_order.id}", cache_policy=NO_CACHE)
def write_package(
    work_order: WorkOrder, qa: QAResult, ingest: IngestResult, annotations: pd.DataFrame, registry_uri: str | None
) -> PackageOutcome:
    """Build every file of the delivery and write it as a version (or find the version that holds it)."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    registry = load_registry(store, registry_uri or default_registry_uri(settings))
    prepared = prepare_package(
        store,
        work_order,
        qa,
        ingest,
        annotations,
        countries={s.id: s.country for s in registry.sites},
        image_sizes_uri=ws.uri("deliver", "image-sizes.parquet"),
    )
    if prepared.image_size_failures:
        uri, why = next(iter(prepared.image_size_failures.items()))
        logger.warning(
            "%d image(s) have no readable size (e.g. %s: %s); COCO lists them without width/height.",
            len(prepared.image_size_failures),
            uri,
            why,
        )
    commit = commit_package(store, prepared)
    _log_commit(work_order, commit, prepared.fingerprint)
    counts = prepared.counts
    logger.info(
        "Counts of %s: %d accepted = %d delivered (%d after rework) + %d excluded %s",
        work_order.id,
        counts["accepted"],
        counts["delivered"],
        counts["reworked_and_delivered"],
        counts["excluded"],
        counts["excluded_by_reason"],
    )
    return PackageOutcome(
        version=commit.version,
        outcome=commit.outcome,
        manifest_uri=commit.manifest_uri,
        prefix_uri=commit.prefix_uri,
        files=commit.manifest["files"],
        counts=commit.manifest["counts"],
        restored=list(commit.restored),
        abandoned=commit.abandoned,
        approval_note=prepared.approval_note,
    )


def _log_commit(work_order: WorkOrder, commit: Commit, fingerprint: str) -> None:
    logger = get_run_logger()
    short = fingerprint[:12]
    if commit.outcome == "unchanged":
        logger.info(
            "%s: the newest delivery %s already holds this content (fingerprint %s); nothing written%s.",
            work_order.id,
            commit.version,
            short,
            f", restored missing {', '.join(commit.restored)}" if commit.restored else "",
        )
    elif commit.outcome == "completed":
        logger.info("%s: completed %s, left without manifest by an earlier run.", work_order.id, commit.version)
    elif commit.outcome == "concurrent":
        logger.info("%s: another run committed this content as %s meanwhile.", work_order.id, commit.version)
    else:
        logger.info("%s: delivered %s (fingerprint %s) at %s", work_order.id, commit.version, short, commit.prefix_uri)
    for version, why in sorted(commit.abandoned.items()):
        logger.warning(
            "%s: %s has files but no manifest.json (%s): it is not a delivery and was left alone; an operator "
            "may delete it.",
            work_order.id,
            version,
            why,
        )


# --- Impact --------------------------------------------------------------------------------------


@task(name="impact report", task_run_name="impact report of {work_order.id}", cache_policy=NO_CACHE)
def publish_impact(
    work_order: WorkOrder,
    annotations: pd.DataFrame,
    registry_uri: str | None,
    fx_to_usd: dict[str, float] | None,
) -> ImpactOutcome:
    """Pay per hour against the living wage per site; suspend the sites below it until reviewed."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    registry_uri = registry_uri or default_registry_uri(settings)
    registry = load_registry(store, registry_uri)
    known = {s.id: s for s in registry.sites}
    used = sorted(str(s) for s in annotations["site_id"].unique())
    unknown = [s for s in used if s not in known]
    if unknown:
        raise DeliveryError(
            f"The annotation log of {work_order.id} names site(s) {unknown} that are not in the partner registry "
            f"{registry_uri}: restore their entries (with their impact records) and rerun."
        )
    # The registry keeps the reviewed rates; a run may override them for its pay period.
    rates = {**registry.fx_to_usd, **(fx_to_usd or {})}
    unassessed = {
        s: f"no exchange rate for {known[s].impact.currency}: add it to fx_to_usd in the registry"
        for s in used
        if known[s].impact.currency != "USD" and known[s].impact.currency not in rates
    }
    assessed = annotations[~annotations["site_id"].isin(list(unassessed))]
    report = compute_impact(
        assessed,
        work_order.pay_per_task,
        {s: known[s].impact for s in used if s not in unassessed},
        rates,
        countries={s: known[s].country for s in used},
    )
    html = render_impact_html(
        report, title=f"Impact report: {work_order.id}", subtitle=_impact_subtitle(work_order, annotations, unassessed)
    )
    key = ws.key("deliver", "impact", "index.html")
    store.put_bytes(settings.workspace_bucket, key, html.encode("utf-8"), content_type="text/html; charset=utf-8")
    url = store.presign_get(settings.workspace_bucket, key)

    newly, lifted = _suspend(store, work_order, registry, registry_uri, sorted(report.suspend))
    if unassessed:
        logger.warning(
            "%s: pay not assessed at %s", work_order.id, "; ".join(f"{k}: {v}" for k, v in unassessed.items())
        )
    outcome = ImpactOutcome(
        report_uri=f"s3://{settings.workspace_bucket}/{key}",
        report_url=url,
        suspend=sorted(report.suspend),
        newly_suspended=newly,
        lifted=lifted,
        unassessed=unassessed,
    )
    _impact_artifacts(work_order, outcome, report.sites, sorted(report.unverifiable))
    return outcome


def _impact_subtitle(work_order: WorkOrder, annotations: pd.DataFrame, unassessed: dict[str, str]) -> str:
    parts = [f"Work order {work_order.id} for {work_order.client_id}"]
    if not annotations.empty:
        times = pd.to_datetime(annotations["updated_at"], utc=True)
        parts.append(f"answers given {times.min():%d %b %Y} to {times.max():%d %b %Y}")
    parts.append(f"paid ${work_order.pay_per_task:,.2f} per answer")
    text = ", ".join(parts) + "."
    if unassessed:
        text += " Not assessed: " + "; ".join(f"{k} ({v})" for k, v in unassessed.items()) + "."
    return text


def _suspend(
    store: ObjectStore, work_order: WorkOrder, registry: PartnerRegistry, registry_uri: str, below: list[str]
) -> tuple[list[str], list[str]]:
    """Mark ``below`` suspended in the registry, once per work order; returns (newly suspended, lifted)."""
    logger = get_run_logger()
    settings = store.settings
    record_uri = workspace(settings, work_order).uri("deliver", "impact", "suspensions.json")
    bucket, key = parse_uri(record_uri)
    recorded: dict[str, Any] = read_json(store, record_uri) if store.head(bucket, key) is not None else {}
    by_id = {s.id: s for s in registry.sites}
    lifted = sorted(s for s in recorded if s in by_id and not by_id[s].impact.suspended)
    if lifted:
        logger.info(
            "%s: %s were suspended by an earlier run of this delivery and have since been reinstated by a reviewer; "
            "they are not suspended again for the same work order.",
            work_order.id,
            ", ".join(lifted),
        )
    fresh = [s for s in below if s not in recorded]
    again = [s for s in below if s in recorded]
    if again:
        logger.info(
            "%s: %s still below the living wage; already suspended for this work order by an earlier run.",
            work_order.id,
            ", ".join(again),
        )
    flip = [s for s in fresh if not by_id[s].impact.suspended]
    if flip:
        sites = [
            s.model_copy(update={"impact": s.impact.model_copy(update={"suspended": True})}) if s.id in flip else s
            for s in registry.sites
        ]
        store.put_bytes(
            *parse_uri(registry_uri),
            registry.model_copy(update={"sites": sites}).to_yaml().encode("utf-8"),
            content_type="application/yaml",
        )
        logger.warning(
            "%s: %s paid below the local living wage per active hour of labelling in this work order. They are "
            "suspended in the partner registry %s (impact.suspended: true) and get no new work until someone "
            "reviews the pay with the site and sets it back to false. (The registry was rewritten from its "
            "parsed form: YAML comments are not kept.)",
            work_order.id,
            ", ".join(flip),
            registry_uri,
        )
    if fresh:
        # Recorded after the registry write: a run that dies in between suspends again, which is idempotent.
        recorded.update({s: {"reason": "paid below the living wage", "work_order_id": work_order.id} for s in fresh})
        write_json(store, record_uri, recorded)
    return flip, lifted


def _impact_artifacts(
    work_order: WorkOrder, outcome: ImpactOutcome, sites: pd.DataFrame, unverifiable: list[str]
) -> None:
    create_link_artifact(
        key=f"{work_order.id}-deliver-impact",
        link=outcome.report_url,
        link_text=f"Impact report of {work_order.id}",
        description="Kazi-internal: pay per hour against the living wage, per partner site (k-anonymous)",
    )
    lines = [f"## Impact of {work_order.id}", ""]
    if outcome.suspend:
        lines += [
            f"**Below the living wage, suspended until reviewed:** {', '.join(outcome.suspend)}"
            + (f" (suspended by this run: {', '.join(outcome.newly_suspended)})" if outcome.newly_suspended else ""),
            "",
        ]
    else:
        lines += ["Every assessed site paid at least its living wage per active hour.", ""]
    if outcome.lifted:
        lines += [f"Reinstated by a reviewer since an earlier run: {', '.join(outcome.lifted)}.", ""]
    for site, why in outcome.unassessed.items():
        lines += [f"- {site}: not assessed ({why})"]
    for site in unverifiable:
        lines += [f"- {site}: answers but no recorded time; pay cannot be checked"]
    shown = sites[["site_id", "workers", "tasks", "effective_hourly_usd", "living_wage_usd", "below_living_wage"]]
    lines += [
        "",
        "| Site | Workers | Tasks | Pay per hour (USD) | Living wage (USD) | Below |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in shown.to_dict("records"):
        lines.append(
            f"| {r['site_id']} | {_fmt(r['workers'], '{:,.0f}')} | {_fmt(r['tasks'], '{:,.0f}')} | "
            f"{_fmt(r['effective_hourly_usd'], '${:,.2f}')} | {_fmt(r['living_wage_usd'], '${:,.2f}')} | "
            f"{'yes' if r['below_living_wage'] is True else ''} |"
        )
    lines += ["", f"[Open the report]({outcome.report_url}) (link expires)."]
    create_markdown_artifact(
        key=f"{work_order.id}-deliver-impact-summary",
        markdown="\n".join(lines),
        description="Sites below the living wage (suspended until reviewed) and the published figures",
    )


def _fmt(value: Any, pattern: str) -> str:
    return "" if value is None or pd.isna(value) else pattern.format(float(value))


# --- Worker records ------------------------------------------------------------------------------


def signing_key(seed: SecretStr) -> tuple[bytes, bytes]:
    """Kazi's Ed25519 key pair as PEM (private PKCS#8, public SubjectPublicKeyInfo): the key is sha256(seed)."""
    private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.get_secret_value().encode()).digest())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


@task(name="worker records", task_run_name="worker records of {work_order.id}", cache_policy=NO_CACHE)
def issue_worker_records(work_order: WorkOrder, qa: QAResult, annotations: pd.DataFrame) -> WorkerRecordsOutcome:
    """One signed record per pseudonymous worker, in the workspace (never in the client's package)."""
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    bucket = settings.workspace_bucket
    private_pem, public_pem = signing_key(settings.worker_record_signing_seed)
    public_key = ws.key("deliver", "worker-records", "public_key.pem")
    store.put_bytes(bucket, public_key, public_pem, content_type="application/x-pem-file")
    records: list[dict[str, Any]] = []
    if not annotations.empty:
        consensus = read_parquet(store, qa.results_uri, CONSOLIDATED, ["item_id", "answer", "label"]).to_pandas()
        gold = read_gold(store, ws.uri("split", "gold.parquet"))
        outcomes = annotation_outcomes(
            annotations, consensus, gold, work_order.task_type, box_iou=work_order.qa.box_iou
        )
        issued_at = label_creation_date(annotations) or ""
        records = build_worker_records(outcomes, issued_at=issued_at, work_order_ids=[work_order.id])

    def put(record: dict[str, Any]) -> None:
        signed = sign_record(record, private_pem)
        name = (
            record["worker"]
            if _SAFE_NAME.match(record["worker"])
            else hashlib.sha256(record["worker"].encode()).hexdigest()
        )
        body = (json.dumps(signed, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        store.put_bytes(
            bucket, ws.key("deliver", "worker-records", f"{name}.json"), body, content_type="application/json"
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, records))
    get_run_logger().info(
        "%s: %d signed worker records at %s (verify with public_key.pem beside them)",
        work_order.id,
        len(records),
        ws.uri("deliver", "worker-records") + "/",
    )
    return WorkerRecordsOutcome(
        prefix_uri=ws.uri("deliver", "worker-records") + "/",
        public_key_uri=f"s3://{bucket}/{public_key}",
        records=len(records),
    )


# --- Delivery note and result --------------------------------------------------------------------


@task(name="delivery note", task_run_name="delivery note of {work_order.id}", cache_policy=NO_CACHE)
def announce_delivery(work_order: WorkOrder, package: PackageOutcome) -> None:
    """The delivery note (presigned download links) and the files table, as Prefect artifacts."""
    settings = load_settings()
    store = ObjectStore(settings)
    bucket, prefix = parse_uri(package.prefix_uri)
    expiry = settings.presign_expiry_seconds
    until = datetime.now(UTC) + timedelta(seconds=expiry)

    def link(name: str) -> str:
        return store.presign_get(bucket, f"{prefix}{name}", expiry)

    status = {
        "created": "New delivery.",
        "completed": "Completed a delivery an earlier run had left without its manifest.",
        "unchanged": "Nothing new: this is the newest delivery and it already holds this content.",
        "concurrent": "Another run delivered this content at the same time; this is that delivery.",
    }[package.outcome]
    c = package.counts
    lines = [
        f"## Delivery {package.version} of {work_order.id} for {work_order.client_id}",
        "",
        status,
        "",
        f"Location: `{package.prefix_uri}`. The download links below expire after {_duration(expiry)} "
        f"(at {until:%Y-%m-%d %H:%M} UTC).",
        "",
        f"- [manifest.json]({link('manifest.json')}): every file with its size, rows and SHA-256",
        "",
        "| File | Rows | Size | SHA-256 |",
        "|---|---:|---:|---|",
    ]
    for f in package.files:
        rows = "" if f["rows"] is None else f"{f['rows']:,}"
        lines.append(f"| [{f['name']}]({link(f['name'])}) | {rows} | {_size(f['size'])} | `{f['sha256'][:16]}…` |")
    lines += [
        "",
        f"**Counts:** {c['accepted']:,} items accepted = {c['delivered']:,} delivered "
        f"({c['reworked_and_delivered']:,} of them after rework) + {c['excluded']:,} excluded"
        + (f" ({', '.join(f'{k}: {v:,}' for k, v in c['excluded_by_reason'].items())})" if c["excluded"] else "")
        + ".",
    ]
    if package.approval_note:
        lines += ["", f"**QA approval:** {package.approval_note}"]
    create_markdown_artifact(
        key=f"{work_order.id}-deliver-note",
        markdown="\n".join(lines),
        description=f"Delivery note of {work_order.id} {package.version}, with download links",
    )
    create_table_artifact(
        key=f"{work_order.id}-deliver-files",
        table=[
            {"file": f["name"], "rows": f["rows"], "bytes": f["size"], "sha256": f["sha256"]} for f in package.files
        ],
        description=f"Files of {work_order.id} {package.version} (manifest.json lists the same)",
    )


def _duration(seconds: int) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds / 3600:g} hours"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


@task(name="write delivery result", task_run_name="write delivery result of {work_order.id}", cache_policy=NO_CACHE)
def write_result(work_order: WorkOrder, package: PackageOutcome, impact: ImpactOutcome) -> DeliveryResult:
    settings = load_settings()
    result = DeliveryResult(
        work_order_id=work_order.id,
        version=package.version,
        manifest_uri=package.manifest_uri,
        files=len(package.files),
        delivered_items=int(package.counts["delivered"]),
        impact_report_uri=impact.report_uri,
    )
    write_model(ObjectStore(settings), workspace(settings, work_order).uri("deliver", "result.json"), result)
    return result


# --- The flow ------------------------------------------------------------------------------------


@flow(name="deliver", flow_run_name="{work_order.id} / deliver")
def deliver_flow(
    work_order: WorkOrder,
    qa: QAResult | None = None,
    registry_uri: str | None = None,
    fx_to_usd: dict[str, float] | None = None,
) -> DeliveryResult:
    """Deliver the work order's labels to the client, with manifest and checksums; report impact; sign records.

    Args:
        work_order: The work order.
        qa: QA's result; read from the workspace when missing. A failed QA needs ``approved`` true.
        registry_uri: The partner registry; the workspace's ``registry/partner_sites.yaml`` when missing.
        fx_to_usd: USD per unit of each non-USD currency the partner sites are paid in, for the pay period
            (e.g. ``{"KES": 0.0077}``). A site whose currency has no rate is reported as not assessed.
    """
    qa = qa or load_qa_result(work_order)
    check_release(qa)
    ingest = load_ingest_result(work_order)
    annotations = load_annotations(work_order)
    package = write_package(work_order, qa, ingest, annotations, registry_uri)
    impact = publish_impact(work_order, annotations, registry_uri, fx_to_usd)
    issue_worker_records(work_order, qa, annotations)
    announce_delivery(work_order, package)
    return write_result(work_order, package, impact)


tune_gc_after_imports()  # this module's imports are done: see flows.core.startup
