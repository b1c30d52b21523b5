"""Portable, signed work records for pseudonymous workers.

A worker record says what one pseudonymous worker did: tasks by task type, hours of active labelling,
accuracy on gold (known-answer) tasks, and agreement with the consolidated answer. It names no person:
``worker`` is the pseudonymous annotator id that only the partner site can map to a name. Kazi signs it
with Ed25519 so that a worker can show it to a future employer, who checks it with Kazi's public key.

The signature covers the canonical JSON (sorted keys, no spaces, UTF-8) of
``{"algorithm": "Ed25519", "key_id": ..., "record": ...}``, so changing any of the three, down to the
record's smallest field, breaks it. ``key_id`` is the first 16 hex digits of the SHA-256 of the raw
public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from flows.core.models import TaskType
from flows.deliver.formats.json_arrow import objects_to_struct

ALGORITHM = "Ed25519"
RECORD_VERSION = 1
_SIGNED_KEYS = frozenset({"record", "signature", "algorithm", "key_id"})
_CLASSIFICATION = frozenset({TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION})


# --- Per-annotation outcomes -----------------------------------------------------------------------


def annotation_outcomes(
    annotations: pd.DataFrame,
    consensus: pd.DataFrame,
    gold: pd.DataFrame,
    task_type: TaskType,
    *,
    box_iou: float = 0.5,
) -> pd.DataFrame:
    """Whether each answer matched the gold answer (gold tasks) or the consolidated answer (the rest).

    Matching per task type: classification compares labels; transcription compares text after case
    folding and collapsing whitespace; listing verification compares every field the same way;
    detection needs the same number of boxes, paired one to one (greedily, best overlap first, as COCO
    evaluation pairs them) with the same label at IoU >= ``box_iou``. Detection and listing answers are
    compared one by one in Python (boxes must be paired, fields normalised); labels and texts are
    compared as columns.

    Args:
        annotations: The annotation log (``item_id``, ``annotator``, ``site_id``, ``answer``, ``label``,
            ``lead_time_s``, ``skipped``).
        consensus: QA's consolidated answers (``item_id``, ``answer``, ``label``).
        gold: Known answers (``item_id``, ``answer``; ``label`` optional).
        task_type: The work order's task type.
        box_iou: IoU at which two boxes are the same object.

    Returns:
        One row per annotation: ``annotator``, ``site_id``, ``task_type``, ``lead_time_s``, ``skipped``,
        ``is_gold``, ``gold_correct`` and ``agrees``; the last two are nullable booleans, null where they
        do not apply (a gold task has no consensus to agree with) or the task was skipped.
    """
    a = annotations.reset_index(drop=True)
    is_gold = a["item_id"].isin(gold["item_id"])
    answered = ~a["skipped"].astype(bool) & a["answer"].notna()
    gold_match = _matches(a, gold, task_type, box_iou)
    cons_match = _matches(a, consensus, task_type, box_iou)
    return pd.DataFrame(
        {
            "annotator": a["annotator"],
            "site_id": a["site_id"],
            "task_type": task_type.value,
            "lead_time_s": pd.to_numeric(a["lead_time_s"], errors="coerce").astype("float64"),
            "skipped": a["skipped"].astype(bool),
            "is_gold": is_gold,
            "gold_correct": gold_match.where(is_gold & answered).astype("boolean"),
            "agrees": cons_match.where(~is_gold & answered).astype("boolean"),
        }
    )


def _matches(a: pd.DataFrame, reference: pd.DataFrame, task_type: TaskType, box_iou: float) -> pd.Series:
    """Per annotation: does it match the reference answer of its item (NA where the item has none)."""
    ref = reference.drop_duplicates("item_id").set_index("item_id")
    ref_answer = a["item_id"].map(ref["answer"])
    has_ref = ref_answer.notna()
    if task_type in _CLASSIFICATION:
        ref_label = a["item_id"].map(ref["label"]) if "label" in ref else pd.Series(None, index=a.index)
        out = _labels(a["label"], a["answer"]).eq(_labels(ref_label, ref_answer))
    elif task_type == TaskType.AUDIO_TRANSCRIPTION:
        out = _norm(_text_field(a["answer"], "text")).eq(_norm(_text_field(ref_answer, "text")))
    elif task_type == TaskType.LISTING_VERIFICATION:
        out = _canon_fields(a["answer"]).eq(_canon_fields(ref_answer))
    else:
        pairs = zip(a["answer"], ref_answer, strict=True)
        out = pd.Series(
            [isinstance(m, str) and isinstance(r, str) and _boxes_match(m, r, box_iou) for m, r in pairs],
            index=a.index,
        )
    return out.fillna(False).astype(bool).where(has_ref)


def _labels(label: pd.Series, answer: pd.Series) -> pd.Series:
    """The ``label`` column, or the answer's ``label`` where the column is empty."""
    return label.astype("str").where(label.notna(), _text_field(answer, "label"))


def _text_field(answer: pd.Series, name: str) -> pd.Series:
    """One top-level field of JSON answers, as text (NA where absent or where there is no answer)."""
    texts = pa.array([v if isinstance(v, str) else None for v in answer], pa.large_string())
    struct = objects_to_struct(texts)
    if name not in {f.name for f in struct.type}:
        return pd.Series(None, index=answer.index, dtype="str")
    values = struct.field(name).to_pylist()
    return pd.Series([None if v is None else str(v) for v in values], index=answer.index, dtype="str")


def _norm(text: pd.Series) -> pd.Series:
    return text.astype("str").str.casefold().str.replace(r"\s+", " ", regex=True).str.strip()


def _canon_fields(answer: pd.Series) -> pd.Series:
    def canon(text: object) -> str | None:
        if not isinstance(text, str):
            return None
        fields = json.loads(text).get("fields") or {}
        norm = {k: " ".join(str(v).casefold().split()) for k, v in fields.items() if v is not None}
        return json.dumps(norm, sort_keys=True)

    return pd.Series([canon(t) for t in answer], index=answer.index, dtype="str")


def _boxes_match(mine: str, theirs: str, threshold: float) -> bool:
    a = json.loads(mine).get("boxes") or []
    b = json.loads(theirs).get("boxes") or []
    if len(a) != len(b):
        return False
    if not a:
        return True
    iou = _iou_matrix(np.array([_xyxy(x) for x in a]), np.array([_xyxy(y) for y in b]))
    same_label = np.array([[x.get("label") == y.get("label") for y in b] for x in a])
    iou = np.where(same_label, iou, 0.0)
    taken_a: set[int] = set()
    taken_b: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(b))
        if iou[i, j] < threshold:
            break
        if i not in taken_a and j not in taken_b:
            taken_a.add(i)
            taken_b.add(j)
    return len(taken_a) == len(a)


def _xyxy(box: Mapping[str, Any]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(box[k]) for k in ("x", "y", "width", "height"))
    return x, y, x + w, y + h


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


# --- Records ---------------------------------------------------------------------------------------


def build_worker_records(
    outcomes: pd.DataFrame,
    *,
    issued_at: str,
    issuer: str = "kazi",
    work_order_ids: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One record per pseudonymous worker, sorted by worker id.

    Args:
        outcomes: :func:`annotation_outcomes` rows, possibly from several work orders concatenated.
        issued_at: ISO timestamp of issue (passed in, so records are reproducible).
        issuer: Who vouches for the record.
        work_order_ids: The work orders the outcomes cover.

    Returns:
        JSON-ready dicts: ``worker``, ``sites``, ``tasks`` (answered), ``tasks_by_type``, ``hours``,
        ``gold`` (``answered``, ``correct``, ``accuracy``), ``agreement`` (``compared``, ``agreed``,
        ``rate``), and the issue details. Rates are None where nothing was measured.
    """
    o = outcomes
    answered = ~o["skipped"].astype(bool)
    work = pd.DataFrame(
        {
            "worker": o["annotator"],
            "site_id": o["site_id"],
            "task_type": o["task_type"],
            "answered": answered.astype("int64"),
            "seconds": o["lead_time_s"].where(o["lead_time_s"] >= 0).fillna(0.0),
            "gold_n": o["gold_correct"].notna().astype("int64"),
            "gold_ok": o["gold_correct"].fillna(False).astype("int64"),
            "agree_n": o["agrees"].notna().astype("int64"),
            "agree_ok": o["agrees"].fillna(False).astype("int64"),
        }
    )
    sums = work.groupby("worker", sort=True)[["answered", "seconds", "gold_n", "gold_ok", "agree_n", "agree_ok"]].sum()
    by_type = work[answered].groupby(["worker", "task_type"], sort=True)["answered"].sum()
    sites = work.groupby("worker", sort=True)["site_id"].unique()
    records = []
    for worker, row in sums.iterrows():  # one row per worker, not per annotation
        types = by_type.loc[worker] if worker in by_type.index.get_level_values(0) else pd.Series(dtype="int64")
        records.append(
            {
                "record_version": RECORD_VERSION,
                "worker": str(worker),
                "sites": sorted(str(s) for s in sites.loc[worker]),
                "work_orders": sorted(work_order_ids),
                "tasks": int(row["answered"]),
                "tasks_by_type": {str(k): int(v) for k, v in types.items()},
                "hours": round(float(row["seconds"]) / 3600.0, 2),
                "gold": _rate(int(row["gold_n"]), int(row["gold_ok"]), "answered", "correct", "accuracy"),
                "agreement": _rate(int(row["agree_n"]), int(row["agree_ok"]), "compared", "agreed", "rate"),
                "issuer": issuer,
                "issued_at": issued_at,
            }
        )
    return records


def _rate(n: int, ok: int, n_key: str, ok_key: str, rate_key: str) -> dict[str, int | float | None]:
    return {n_key: n, ok_key: ok, rate_key: round(ok / n, 4) if n else None}


# --- Signing ---------------------------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN: the bytes that are signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as PEM: (private PKCS#8, unencrypted; public SubjectPublicKeyInfo)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def sign_record(record: Mapping[str, Any], private_key_pem: bytes) -> dict[str, Any]:
    """``{"record", "signature" (base64), "algorithm": "Ed25519", "key_id"}`` for one record."""
    private = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError("sign_record needs an Ed25519 private key")
    kid = key_id(private.public_key())
    body = dict(record)
    signature = private.sign(_payload(body, kid))
    return {
        "record": body,
        "signature": base64.b64encode(signature).decode("ascii"),
        "algorithm": ALGORITHM,
        "key_id": kid,
    }


def verify_record(signed: Mapping[str, Any], public_key_pem: bytes) -> bool:
    """True when ``signed`` is exactly what :func:`sign_record` produced with this key's private half."""
    public = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("verify_record needs an Ed25519 public key")
    if set(signed) != _SIGNED_KEYS or signed["algorithm"] != ALGORITHM or signed["key_id"] != key_id(public):
        return False
    if not isinstance(signed["record"], Mapping) or not isinstance(signed["signature"], str):
        return False
    try:
        signature = base64.b64decode(signed["signature"], validate=True)
        public.verify(signature, _payload(signed["record"], signed["key_id"]))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _payload(record: Mapping[str, Any], kid: str) -> bytes:
    return canonical_json({"algorithm": ALGORITHM, "key_id": kid, "record": record})
