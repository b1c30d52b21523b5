"""Reading and writing Kazi's workspace: typed JSON records and Parquet tables in S3.

Layout under ``s3://<workspace_bucket>/work-orders/<work order id>/`` (see docs/architecture.md):
``ingest/``, ``split/``, ``annotate/``, ``qa/``, ``deliver/``, each with a ``result.json`` holding the
stage's typed result, so any stage can be rerun alone.
"""

from __future__ import annotations

import io
import json
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from flows.core.models import PartnerRegistry, WorkOrder, Workspace
from flows.core.s3 import ObjectInfo, ObjectNotFound, ObjectStore, parse_uri
from flows.core.settings import Settings

M = TypeVar("M", bound=BaseModel)

REGISTRY_KEY = "registry/partner_sites.yaml"


def workspace(settings: Settings, work_order: WorkOrder | str) -> Workspace:
    wo_id = work_order if isinstance(work_order, str) else work_order.id
    return Workspace(bucket=settings.workspace_bucket, work_order_id=wo_id)


def default_registry_uri(settings: Settings) -> str:
    return f"s3://{settings.workspace_bucket}/{REGISTRY_KEY}"


def write_model(store: ObjectStore, uri: str, model: BaseModel) -> ObjectInfo:
    bucket, key = parse_uri(uri)
    data = model.model_dump_json(indent=2).encode()
    return store.put_bytes(bucket, key, data, content_type="application/json")


def read_model(store: ObjectStore, uri: str, cls: type[M]) -> M:
    bucket, key = parse_uri(uri)
    return cls.model_validate_json(store.get_bytes(bucket, key))


def read_model_or_none(store: ObjectStore, uri: str, cls: type[M]) -> M | None:
    try:
        return read_model(store, uri, cls)
    except ObjectNotFound:
        return None


def load_stage_result(settings: Settings, work_order: WorkOrder | str, stage: str, cls: type[M]) -> M:
    """A stage's ``result.json``; a missing one says which stage to run first."""
    uri = workspace(settings, work_order).uri(stage, "result.json")
    found = read_model_or_none(ObjectStore(settings), uri, cls)
    if found is None:
        raise ObjectNotFound(f"No {stage} result at {uri}: run the {stage} stage first, or pass `{stage}`.")
    return found


def write_json(store: ObjectStore, uri: str, payload: Any) -> ObjectInfo:
    bucket, key = parse_uri(uri)
    data = json.dumps(payload, indent=2, sort_keys=True, default=str).encode()
    return store.put_bytes(bucket, key, data, content_type="application/json")


def read_json(store: ObjectStore, uri: str) -> Any:
    bucket, key = parse_uri(uri)
    return json.loads(store.get_bytes(bucket, key))


def table_bytes(table: pa.Table) -> bytes:
    """Parquet bytes with fixed settings, so the same table always gives the same bytes."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True, store_schema=True)
    return sink.getvalue()


def write_table(store: ObjectStore, uri: str, table: pa.Table, *, if_none_match: bool = False) -> ObjectInfo:
    """One Parquet object (small and medium tables; stream big ones through ``store.filesystem``)."""
    bucket, key = parse_uri(uri)
    return store.put_bytes(
        bucket, key, table_bytes(table), content_type="application/vnd.apache.parquet", if_none_match=if_none_match
    )


def read_table(store: ObjectStore, uri: str, schema: pa.Schema | None = None) -> pa.Table:
    """A Parquet object, or every Parquet object under a prefix ending in ``/``."""
    bucket, key = parse_uri(uri)
    if key.endswith("/"):
        parts = [o.key for o in store.list_objects(bucket, key) if o.key.endswith(".parquet")]
        if not parts:
            if schema is None:
                raise ObjectNotFound(f"No Parquet objects under {uri}.")
            return schema.empty_table()
        return pa.concat_tables(
            [pq.read_table(io.BytesIO(store.get_bytes(bucket, k)), schema=schema) for k in parts],
            promote_options="default",
        )
    return pq.read_table(io.BytesIO(store.get_bytes(bucket, key)), schema=schema)


def load_registry(store: ObjectStore, uri: str) -> PartnerRegistry:
    bucket, key = parse_uri(uri)
    try:
        text = store.get_bytes(bucket, key).decode()
    except ObjectNotFound:
        raise ObjectNotFound(
            f"No partner registry at {uri}: upload one (see data_contracts/sample_registry.yaml) or pass registry_uri."
        ) from None
    return PartnerRegistry.from_yaml(text)
