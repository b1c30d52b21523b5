"""Consensus bounding boxes for object detection.

Boxes are in Label Studio's convention: ``x``, ``y`` (top-left), ``width``, ``height`` in percent (0..100)
of the image. IoU is the same in percent as in pixels (both axes scale every area alike), so the image
size is never needed. Rotation is ignored.

Per item and label, boxes of different annotators are clustered by complete linkage: pairs are visited
from the highest IoU down and two clusters join only if they share no annotator (one box per annotator per
cluster) and every box of one overlaps every box of the other by at least the threshold. Unlike greedy
chaining, this never glues two separate objects through a sloppy box between them, and unlike matching
annotator by annotator, the result does not depend on the order of the annotators.

The candidate pairs and their IoUs, the merged boxes and the confidences are computed for all items at
once; only the union of clusters walks the (few) candidate pairs in Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

BOX_KEYS = ("x", "y", "width", "height")


@dataclass(frozen=True)
class _FlatBoxes:
    """All boxes of all answers, one row each, sorted by item then label."""

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    corners: np.ndarray  # (n, 4): x1, y1, x2, y2


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` with every box in ``b``; corners (x1, y1, x2, y2); 0 where the union is empty."""
    return _iou(a[:, None, :], b[None, :, :])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of broadcastable corner arrays (last axis x1, y1, x2, y2)."""
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _box_list(value: Any) -> list[Mapping[str, Any]]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, Mapping):
        raise ValueError(f"boxes must be a list of boxes, got a single mapping {value!r}")
    return list(value)


def _flatten(
    item_codes: np.ndarray, annotator_codes: np.ndarray, boxes: Iterable[Any], item_ids: pd.Index, labels: pd.Index
) -> _FlatBoxes:
    item, annotator, label, coords = [], [], [], []
    label_code = {name: i for i, name in enumerate(labels)}
    for it, ann, value in zip(item_codes.tolist(), annotator_codes.tolist(), boxes, strict=True):
        for box in _box_list(value):
            try:
                name = box["label"]
                x, y, w, h = (float(box[key]) for key in BOX_KEYS)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"box {box!r} of item {item_ids[it]!r} needs label, x, y, width, height (numbers)"
                ) from exc
            if name not in label_code:
                raise ValueError(f"box label {name!r} of item {item_ids[it]!r} is not one of {list(labels)}")
            if w < 0 or h < 0 or not math.isfinite(x + y + w + h):
                raise ValueError(f"box {box!r} of item {item_ids[it]!r} has a negative or non-finite size")
            item.append(it)
            annotator.append(ann)
            label.append(label_code[name])
            coords.append((x, y, x + w, y + h))
    item_a, label_a = np.asarray(item, dtype=np.int64), np.asarray(label, dtype=np.int64)
    order = np.lexsort((label_a, item_a))
    return _FlatBoxes(
        item=item_a[order],
        annotator=np.asarray(annotator, dtype=np.int64)[order],
        label=label_a[order],
        corners=np.asarray(coords, dtype=np.float64).reshape(-1, 4)[order],
    )


def _cluster(group: np.ndarray, annotator: np.ndarray, corners: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Complete-linkage cluster of every box (the index of its cluster's first box); ``group`` sorted."""
    n = group.size
    # Every pair (i, j), i < j, within a group: box i pairs with the boxes after it up to its group's end.
    end = np.searchsorted(group, group, side="right")
    after = end - np.arange(n) - 1
    i = np.repeat(np.arange(n), after)
    j = i + 1 + np.arange(i.size) - np.repeat(np.cumsum(after) - after, after)
    iou = _iou(corners[i], corners[j])
    ok = (annotator[i] != annotator[j]) & (iou >= iou_threshold)
    i, j, iou = i[ok], j[ok], iou[ok]
    order = np.lexsort((j, i, -iou))
    linked = set(zip(i.tolist(), j.tolist(), strict=True))

    cluster = list(range(n))
    members: dict[int, list[int]] = {}
    for a, b in zip(i[order].tolist(), j[order].tolist(), strict=True):
        ca, cb = cluster[a], cluster[b]
        if ca == cb:
            continue
        ma, mb = members.get(ca, [ca]), members.get(cb, [cb])
        # Two boxes of one annotator are never linked, so this also keeps one box per annotator.
        if not all((x, y) in linked if x < y else (y, x) in linked for x in ma for y in mb):
            continue
        first, second = min(ca, cb), max(ca, cb)
        merged = sorted(ma + mb)
        members[first] = merged
        members.pop(second, None)
        for box in merged:
            cluster[box] = first
    return np.asarray(cluster, dtype=np.int64)


def cluster_boxes(corners: np.ndarray, annotator: np.ndarray, iou_threshold: float) -> list[np.ndarray]:
    """Complete-linkage clusters of one item's boxes of one label, at most one box per annotator each.

    Returns:
        Index arrays into ``corners``, one per cluster, in order of their first box.
    """
    root = _cluster(np.zeros(len(corners), dtype=np.int64), np.asarray(annotator), corners, iou_threshold)
    return [np.flatnonzero(root == r) for r in np.unique(root)]


def consolidate_boxes(
    answers: pd.DataFrame,
    *,
    iou_threshold: float = 0.5,
    weights: pd.Series | None = None,
    quorum: int | None = None,
    classes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Consensus boxes per item.

    Args:
        answers: Columns item_id, annotator, boxes (a list of ``{label, x, y, width, height}``; an empty list
            or None is a vote for "no objects"). One answer per item and annotator.
        iou_threshold: IoU at which two annotators' boxes are the same object.
        weights: Annotator -> weight (> 0) for merging coordinates and for the support share; equal when
            omitted. Every annotator of ``answers`` must have one.
        quorum: Annotators who must draw an object for it to be kept; default a strict majority of the
            item's annotators (2 of 2 or 3, 3 of 4 or 5).
        classes: Allowed box labels; when omitted, any label is accepted.

    Returns:
        Indexed by item_id (order of first appearance): boxes (consensus boxes sorted by label, in the order
        of ``classes`` or alphabetical, then y, x; each with the weighted-mean coordinates, ``confidence`` =
        weighted share of the item's annotators who drew it x mean IoU of their boxes with the merged box,
        and ``n_annotators`` who drew it), confidence (the weakest decision on the item: the lowest kept-box
        confidence, or for an object dropped for lack of quorum, the share that did not draw it; 1 when
        nobody drew anything), n_annotators.
    """
    missing = [c for c in ("item_id", "annotator", "boxes") if c not in answers.columns]
    if missing:
        raise ValueError(f"answers lack the column(s) {missing}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if quorum is not None and quorum < 1:
        raise ValueError(f"quorum must be at least 1, got {quorum}")
    item_codes, item_ids = pd.factorize(answers["item_id"])
    annotator_codes, annotator_ids = pd.factorize(answers["annotator"])
    pairs = pd.Series(item_codes.astype(np.int64) * max(len(annotator_ids), 1) + annotator_codes)
    if pairs.duplicated().any():
        dup = pairs.duplicated().to_numpy().argmax()
        raise ValueError(
            f"annotator {answers['annotator'].iloc[dup]!r} answered item {answers['item_id'].iloc[dup]!r} "
            "more than once; keep one answer per item and annotator"
        )
    if weights is None:
        weight = np.ones(len(annotator_ids))
    else:
        weight = weights.reindex(annotator_ids).to_numpy(dtype=np.float64)
        if np.isnan(weight).any():
            raise ValueError(f"weights lack annotator {annotator_ids[np.isnan(weight).argmax()]!r}")
        if (weight <= 0).any():
            raise ValueError(f"weights must be > 0; annotator {annotator_ids[(weight <= 0).argmax()]!r} has not")

    if classes is None:
        seen = {b["label"] for v in answers["boxes"] for b in _box_list(v) if isinstance(b, Mapping) and "label" in b}
        labels = pd.Index(sorted(seen, key=str))
    else:
        labels = pd.Index(list(classes))
    flat = _flatten(item_codes, annotator_codes, answers["boxes"], item_ids, labels)

    n_items = len(item_ids)
    n_annotators = np.bincount(item_codes, minlength=n_items)
    total_weight = np.bincount(item_codes, weights=weight[annotator_codes], minlength=n_items)
    need = np.full(n_items, quorum) if quorum is not None else n_annotators // 2 + 1

    root = _cluster(flat.item * max(len(labels), 1) + flat.label, flat.annotator, flat.corners, iou_threshold)
    cluster, first_box = pd.factorize(root)
    n_clusters = len(first_box)
    w = weight[flat.annotator]
    support = np.bincount(cluster, weights=w, minlength=n_clusters)
    merged = (
        np.column_stack([np.bincount(cluster, weights=w * flat.corners[:, c], minlength=n_clusters) for c in range(4)])
        / support[:, None]
    )
    size = np.bincount(cluster, minlength=n_clusters)
    fit = np.bincount(cluster, weights=_iou(flat.corners, merged[cluster]), minlength=n_clusters) / np.maximum(size, 1)
    c_item = flat.item[first_box]
    c_label = flat.label[first_box]
    share = support / total_weight[c_item]
    kept = size >= need[c_item]
    decision = np.where(kept, share * fit, 1.0 - share)
    item_conf = np.ones(n_items)
    np.minimum.at(item_conf, c_item, decision)

    out_boxes: list[list[dict[str, Any]]] = [[] for _ in range(n_items)]
    keep = np.flatnonzero(kept)
    keep = keep[np.lexsort((merged[keep, 0], merged[keep, 1], c_label[keep], c_item[keep]))]
    label_names = labels.tolist()
    for it, lab, (x1, y1, x2, y2), conf, n in zip(
        c_item[keep].tolist(),
        c_label[keep].tolist(),
        merged[keep].tolist(),
        decision[keep].tolist(),
        size[keep].tolist(),
        strict=True,
    ):
        out_boxes[it].append(
            {
                "label": label_names[lab],
                "x": round(x1, 4),
                "y": round(y1, 4),
                "width": round(x2 - x1, 4),
                "height": round(y2 - y1, 4),
                "confidence": round(conf, 6),
                "n_annotators": n,
            }
        )
    return pd.DataFrame(
        {"boxes": out_boxes, "confidence": item_conf, "n_annotators": n_annotators.astype(np.int64)},
        index=pd.Index(item_ids, name="item_id"),
    )
