"""A review round: QA's rework list as an assignment manifest and batches, one project per site and round.

Pure. QA chose the items, the site (the best-scoring eligible one) and the previous answers, shown to the
reviewer as Label Studio predictions. Each reworked item gets ``answers`` new answers, which the next QA
round consolidates together with the earlier ones.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from flows.core.models import WorkOrder
from flows.core.schemas import ASSIGNMENTS

REWORK_COLUMNS = ("item_id", "site_id", "predictions")


def review_answers(work_order: WorkOrder) -> int:
    """New answers per reworked item: enough to outvote one remaining disagreement."""
    return max(1, work_order.overlap - 1)


def rework_plan(
    work_order: WorkOrder, rework: pa.Table, round_number: int, due_at: datetime
) -> tuple[pa.Table, list[dict[str, object]]]:
    """The round's assignment rows (schemas.ASSIGNMENTS) and its batches, one per site.

    Args:
        work_order: The work order (overlap, id).
        rework: QA's rework list, at least ``item_id``, ``site_id``.
        round_number: The review round (1 for the first).
        due_at: When the review is due.

    Returns:
        The assignment rows and the batch rows (``split.flow.BATCHES`` columns).
    """
    missing = [c for c in ("item_id", "site_id") if c not in rework.column_names]
    if missing:
        raise ValueError(f"the rework list lacks columns {missing}")
    if round_number < 1:
        raise ValueError(f"review rounds count from 1, got {round_number}")
    k = review_answers(work_order)
    rows: dict[str, list[object]] = {name: [] for name in ASSIGNMENTS.names}
    batches: list[dict[str, object]] = []
    for site in sorted(set(rework.column("site_id").to_pylist())):
        items = sorted(set(rework.filter(pc.equal(rework["site_id"], site)).column("item_id").to_pylist()))
        batch_id = f"r{round_number}"
        project_key = f"{work_order.id}--{site}--{batch_id}"
        for item in items:
            for slot in range(k):
                rows["item_id"].append(item)
                rows["batch_id"].append(batch_id)
                rows["site_id"].append(site)
                rows["project_key"].append(project_key)
                rows["slot"].append(slot)
                rows["is_gold"].append(False)
                rows["round"].append(round_number)
        batches.append(
            {
                "batch_id": batch_id,
                "site_id": site,
                "project_key": project_key,
                "n_tasks": len(items),
                "n_gold": 0,
                "max_annotations": k,
                "n_answers": len(items) * k,
                "due_at": due_at,
            }
        )
    return pa.table(rows, schema=ASSIGNMENTS), batches
