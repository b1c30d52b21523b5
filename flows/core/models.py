"""Domain models shared by every stage: work orders, partner sites, and the typed results stages hand on.

Anything read from outside Kazi (a work order, the partner registry) forbids unknown fields, so a typo
in a YAML file is an error naming the field instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

SLUG = r"^[a-z0-9][a-z0-9-]{1,62}$"


def _s3_uri(value: str) -> str:
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?", value):
        raise ValueError(f"{value!r} is not an s3://bucket/prefix URI")
    return value


S3Uri = Annotated[str, AfterValidator(_s3_uri)]


class Strict(BaseModel):
    """Base for models read from outside: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Work order ---------------------------------------------------------------------------------


class TaskType(StrEnum):
    IMAGE_CLASSIFICATION = "image_classification"
    OBJECT_DETECTION = "object_detection"
    TEXT_CLASSIFICATION = "text_classification"
    AUDIO_TRANSCRIPTION = "audio_transcription"
    LISTING_VERIFICATION = "listing_verification"


class SourceFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"
    PARQUET = "parquet"


class DeliveryFormat(StrEnum):
    JSONL = "jsonl"
    PARQUET = "parquet"
    CSV = "csv"
    COCO = "coco"
    LABEL_STUDIO = "label_studio"
    GROUND_TRUTH = "ground_truth"


class FieldKind(StrEnum):
    TEXT = "text"
    PHONE = "phone"
    EMAIL = "email"
    URL = "url"
    BOOLEAN = "boolean"


class SourceSpec(Strict):
    uri: S3Uri = Field(description="s3://bucket/prefix: one object, or every object under the prefix.")
    format: SourceFormat = Field(description="File format; a .gz suffix means gzip-compressed.")


class ColumnMapping(Strict):
    item_id: str | None = Field(
        default=None, description="Column holding the client's item id; empty means a content hash is used."
    )
    text: str | None = Field(default=None, description="Column with the text to label (text tasks).")
    media_uri: str | None = Field(default=None, description="Column with the s3:// URI of an image or audio.")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Listing verification: task field name -> client column holding its current value.",
    )


class FieldSpec(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    kind: FieldKind = FieldKind.TEXT
    required: bool = False


class LabelSchema(Strict):
    classes: list[str] = Field(default_factory=list, description="Allowed labels (classes or box labels).")
    fields: list[FieldSpec] = Field(default_factory=list, description="Fields to fill in (data entry).")

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("classes must be unique")
        return v


class GoldSpec(Strict):
    uri: S3Uri | None = Field(
        default=None, description="Known-answer items (CSV/JSONL/Parquet with item_id and answer columns)."
    )
    rate: float = Field(default=0.05, ge=0, le=0.5, description="Share of tasks that are gold items.")


class QAThresholds(Strict):
    min_confidence: float = Field(default=0.7, ge=0, le=1, description="Below this an item goes to rework.")
    min_gold_accuracy: float = Field(default=0.8, ge=0, le=1, description="Per annotator and per site.")
    min_agreement: float = Field(default=0.5, ge=-1, le=1, description="Krippendorff's alpha per work order.")
    box_iou: float = Field(default=0.5, gt=0, le=1, description="IoU at which two boxes are the same object.")
    max_rework_rounds: int = Field(default=2, ge=0, le=5)
    method: Literal["dawid_skene", "one_coin", "majority_vote"] = "dawid_skene"


class DeliverySpec(Strict):
    uri: S3Uri = Field(description="Client delivery location, s3://bucket/prefix.")
    formats: list[DeliveryFormat] = Field(default_factory=lambda: [DeliveryFormat.JSONL, DeliveryFormat.PARQUET])


class WorkOrder(Strict):
    """A client's job, end to end. Also the parameter form of every Kazi flow in the Prefect UI."""

    id: str = Field(pattern=SLUG, description="Work-order id, e.g. acme-0042.")
    client_id: str = Field(pattern=SLUG, description="Client id, e.g. acme.")
    source: SourceSpec
    task_type: TaskType
    columns: ColumnMapping = Field(default_factory=ColumnMapping)
    label_schema: LabelSchema = Field(default_factory=LabelSchema)
    instructions: str = Field(default="", max_length=20_000)
    overlap: int = Field(default=3, ge=1, le=9, description="Answers per item (k).")
    overlap_across_sites: bool = Field(
        default=False, description="Require the k answers of an item to come from different sites."
    )
    gold: GoldSpec = Field(default_factory=GoldSpec)
    qa: QAThresholds = Field(default_factory=QAThresholds)
    deadline: datetime
    price_per_item: float = Field(ge=0, description="Client price per delivered item (USD).")
    pay_per_task: float = Field(ge=0, description="Paid to the partner site per answered task (USD).")
    delivery: DeliverySpec
    seed: int = Field(default=0, description="Seed for batching, gold mixing and allocation.")

    @model_validator(mode="after")
    def _columns_fit_task(self) -> WorkOrder:
        needs_media = self.task_type in {
            TaskType.IMAGE_CLASSIFICATION,
            TaskType.OBJECT_DETECTION,
            TaskType.AUDIO_TRANSCRIPTION,
        }
        if needs_media and not self.columns.media_uri:
            raise ValueError(f"task_type {self.task_type} needs columns.media_uri")
        if self.task_type == TaskType.TEXT_CLASSIFICATION and not self.columns.text:
            raise ValueError("task_type text_classification needs columns.text")
        classy = {TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION, TaskType.OBJECT_DETECTION}
        if self.task_type in classy and len(self.label_schema.classes) < 1:
            raise ValueError(f"task_type {self.task_type} needs label_schema.classes")
        if self.task_type == TaskType.LISTING_VERIFICATION and not self.label_schema.fields:
            raise ValueError("task_type listing_verification needs label_schema.fields")
        return self

    @classmethod
    def from_yaml(cls, text: str) -> WorkOrder:
        return cls.model_validate(yaml.safe_load(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --- Partner sites ------------------------------------------------------------------------------


class AuditStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    PENDING = "pending"


class LabelStudioRef(Strict):
    url: str = Field(description="Base URL of the site's Label Studio instance.")
    token_secret: str = Field(
        pattern=r"^[a-z0-9_]+$",
        description="Name of the secret holding the API token: KAZI_SECRETS__<NAME> or a Prefect Secret block.",
    )


class Capacity(Strict):
    annotators: int = Field(ge=0)
    hours_per_day: float = Field(ge=0, le=24)
    items_per_hour: dict[TaskType, float] = Field(
        default_factory=dict, description="Measured tasks per annotator-hour, per task type."
    )


class ImpactRecord(Strict):
    hourly_wage: float = Field(ge=0, description="Hourly wage paid to workers (local currency).")
    living_wage: float = Field(gt=0, description="Local living-wage benchmark per hour (same currency).")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    last_audit: date
    audit_status: AuditStatus
    audit_valid_days: int = Field(default=365, ge=1)
    suspended: bool = False
    lab_seats: int = Field(default=0, ge=0, description="Computer-lab seats.")


class PartnerSite(Strict):
    id: str = Field(pattern=SLUG)
    name: str
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2.")
    timezone: str
    label_studio: LabelStudioRef
    capacity: Capacity
    task_types: list[TaskType]
    languages: list[str] = Field(default_factory=lambda: ["en"])
    impact: ImpactRecord
    gold_accuracy: float | None = Field(default=None, ge=0, le=1, description="Measured quality record.")
    shift_start_hour: int = Field(default=8, ge=0, le=23, description="Local hour the working day starts.")


class PartnerRegistry(Strict):
    sites: list[PartnerSite]
    fx_to_usd: dict[str, float] = Field(
        default_factory=dict,
        description="USD per unit of each site currency, for comparing pay with living wages (e.g. KES: 0.0077).",
    )

    @field_validator("sites")
    @classmethod
    def _unique_ids(cls, v: list[PartnerSite]) -> list[PartnerSite]:
        ids = [s.id for s in v]
        if len(set(ids)) != len(ids):
            raise ValueError("partner site ids must be unique")
        return v

    @classmethod
    def from_yaml(cls, text: str) -> PartnerRegistry:
        return cls.model_validate(yaml.safe_load(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def site(self, site_id: str) -> PartnerSite:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(f"no partner site {site_id!r} in the registry")


# --- What stages hand on ------------------------------------------------------------------------


class Workspace(BaseModel):
    """Where a work order's state lives in the workspace bucket: one prefix per stage."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    work_order_id: str

    @property
    def root(self) -> str:
        return f"work-orders/{self.work_order_id}"

    def key(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


class IngestResult(BaseModel):
    work_order_id: str
    ingest_version: str = Field(description="Content hash of the source objects: a changed input is a new version.")
    items_uri: str
    quarantine_uri: str
    duplicates_uri: str
    manifest_uri: str
    rows_read: int
    accepted: int
    quarantined: int
    duplicates: int
    files_quarantined: int
    data_docs_uri: str | None = None
    validation_success: bool = True


class SplitResult(BaseModel):
    work_order_id: str
    plan_uri: str
    batches: int
    tasks: int
    gold_tasks: int
    projects: dict[str, int] = Field(description="batch_key -> Label Studio project id")
    sites_used: list[str]
    sites_passed_over: dict[str, str] = Field(description="site id -> why it got no work")


class AnnotateResult(BaseModel):
    work_order_id: str
    log_uri: str
    status_uri: str
    annotations: int
    new_annotations: int
    done: bool
    moved_batches: list[str] = Field(default_factory=list)


class QAResult(BaseModel):
    work_order_id: str
    round_number: int = 0
    results_uri: str = Field(description="Consolidated answers (schemas.CONSOLIDATED), one row per item.")
    report_uri: str = Field(description="Presigned link to the QA report (HTML).")
    report_key: str = Field(description="Workspace key of the QA report, for the delivery package.")
    validation_uri: str = Field(description="Great Expectations validation results (JSON) in the workspace.")
    data_docs_uri: str | None
    passed: bool
    approved: bool | None = Field(default=None, description="A QA lead's decision when validation failed.")
    approved_by: str | None = None
    approval_comment: str | None = None
    items: int
    rework_items: int
    rework_uri: str | None = Field(default=None, description="Items sent to rework, with the reason.")
    excluded_annotators: list[str] = Field(default_factory=list)
    agreement: float | None = None
    gold_accuracy: float | None = None


class DeliveryResult(BaseModel):
    work_order_id: str
    version: str
    manifest_uri: str
    files: int
    delivered_items: int
    impact_report_uri: str
