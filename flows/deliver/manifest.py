"""The delivery manifest (what was delivered, with checksums) and the count reconciliation.

The manifest lists every delivered file with its size, row count and SHA-256, so the client (or
:func:`verify`) can prove each file arrived whole. :func:`reconcile` proves no item was lost on the way:
every item accepted at ingest is either delivered or excluded with a reason, never both, never neither.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pandas as pd

from flows.core.models import WorkOrder

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ReconciliationError(ValueError):
    """Accepted items do not add up to delivered plus excluded."""


def build_manifest(
    files: Sequence[tuple[str, bytes, int]],
    work_order: WorkOrder,
    version: str,
    schema_version: str,
    contract_version: str,
    counts: Mapping[str, Any],
    created_at: str | None = None,
) -> dict[str, Any]:
    """Describe a delivery: one entry per file (name, size in bytes, rows, sha256), sorted by name.

    Args:
        files: ``(name, bytes, row_count)`` for every file delivered, as the format writers return them.
        work_order: The work order delivered.
        version: Delivery version (e.g. a content hash of the deliverable, or ``v3``).
        schema_version: Version of the deliverable's table layout.
        contract_version: Version of the work order's data contract the output was validated against.
        counts: The reconciliation figures (:func:`reconcile`'s result).
        created_at: ISO timestamp to record; omitted when None so the manifest is reproducible.

    Returns:
        A JSON-ready dict; :func:`manifest_bytes` gives its canonical encoding.
    """
    names = [name for name, _, _ in files]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate file names in delivery: {dup}")
    entries = [
        {"name": name, "size": len(body), "rows": int(rows), "sha256": hashlib.sha256(body).hexdigest()}
        for name, body, rows in sorted(files, key=lambda f: f[0])
    ]
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "work_order_id": work_order.id,
        "client_id": work_order.client_id,
        "task_type": work_order.task_type.value,
        "version": version,
        "schema_version": schema_version,
        "contract_version": contract_version,
        "counts": dict(counts),
        "files": entries,
        "total_size": sum(e["size"] for e in entries),
    }
    if created_at is not None:
        manifest["created_at"] = created_at
    return manifest


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical, human-readable encoding: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def verify(manifest: Mapping[str, Any], read_bytes: Callable[[str], bytes]) -> list[str]:
    """Re-read every listed file and compare size and SHA-256; returns the problems (empty when sound).

    Args:
        manifest: A manifest from :func:`build_manifest` (or parsed from its JSON).
        read_bytes: Returns a file's bytes by its manifest name; may raise (``FileNotFoundError``,
            ``KeyError``, an S3 ``NoSuchKey``), which is reported as the file missing.
    """
    problems = []
    for entry in manifest["files"]:
        name = entry["name"]
        try:
            body = read_bytes(name)
        except Exception as exc:  # any reader failure means the file cannot be verified
            problems.append(f"{name}: cannot be read ({type(exc).__name__}: {exc})")
            continue
        if len(body) != entry["size"]:
            problems.append(f"{name}: size {len(body)} bytes, manifest says {entry['size']}")
        digest = hashlib.sha256(body).hexdigest()
        if digest != entry["sha256"]:
            problems.append(f"{name}: sha256 {digest}, manifest says {entry['sha256']}")
    return problems


def reconcile(
    accepted: Collection[str] | pd.Series,
    delivered: Collection[str] | pd.Series,
    reworked_and_delivered: Collection[str] | pd.Series,
    excluded: pd.DataFrame,
) -> dict[str, Any]:
    """Check that accepted = delivered + excluded, item by item, and return the counts.

    ``reworked_and_delivered`` are the items that went through at least one rework round and were then
    delivered. They are a subset of ``delivered`` (already counted there), reported separately so the
    client sees how much of the delivery needed a second look.

    Args:
        accepted: Item ids accepted at ingest (quarantined and duplicate rows are not accepted).
        delivered: Item ids in the delivery.
        reworked_and_delivered: Delivered item ids that had rework.
        excluded: ``item_id`` and ``reason`` of accepted items not delivered.

    Returns:
        ``accepted``, ``delivered``, ``reworked_and_delivered``, ``excluded`` and ``excluded_by_reason``.

    Raises:
        ReconciliationError: naming the counts and example ids of whatever does not add up.
    """
    acc = _ids(accepted, "accepted")
    dlv = _ids(delivered, "delivered")
    rwk = _ids(reworked_and_delivered, "reworked_and_delivered")
    exc = _ids(excluded["item_id"], "excluded")

    problems = []
    for label, ids in (
        ("delivered and excluded", dlv.intersection(exc)),
        ("accepted but neither delivered nor excluded", acc.difference(dlv.union(exc))),
        ("delivered but not accepted", dlv.difference(acc)),
        ("excluded but not accepted", exc.difference(acc)),
        ("reworked but not delivered", rwk.difference(dlv)),
    ):
        if len(ids):
            problems.append(f"{len(ids)} item(s) {label}, e.g. {list(ids.sort_values()[:5])}")
    if problems:
        raise ReconciliationError(
            f"accepted {len(acc)} != delivered {len(dlv)} + excluded {len(exc)}: " + "; ".join(problems)
        )
    reasons = excluded["reason"].value_counts().sort_index()
    return {
        "accepted": len(acc),
        "delivered": len(dlv),
        "reworked_and_delivered": len(rwk),
        "excluded": len(exc),
        "excluded_by_reason": {str(k): int(v) for k, v in reasons.items()},
    }


def reworked_item_ids(annotations: pd.DataFrame) -> pd.Series:
    """Items with any annotation from a rework round (``round`` > 0), sorted, each once."""
    ids = annotations.loc[annotations["round"] > 0, "item_id"].drop_duplicates()
    return ids.sort_values(kind="stable").reset_index(drop=True)


def _ids(values: Collection[str] | pd.Series, what: str) -> pd.Index:
    # A hashed index: numpy's set functions on object arrays compare every pair (minutes at 100k items).
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype="str")
    index = pd.Index(series.astype("str"))
    if not index.is_unique:
        raise ReconciliationError(f"{what} lists {len(index) - index.nunique()} item id(s) more than once")
    return index.sort_values()
