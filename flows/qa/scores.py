"""Quality scores per annotator and per partner site, and which annotators to exclude."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

LOG_COLUMNS = ("item_id", "site_id", "annotator", "skipped", "lead_time_s")

SCORE_COLUMNS = (
    "n_tasks",
    "n_answers",
    "skip_rate",
    "n_gold",
    "gold_accuracy",
    "consensus_agreement",
    "median_lead_time_s",
    "rework_rate",
)


def _consensus(consolidated: pd.DataFrame, value_col: str) -> pd.Series:
    frame = consolidated.set_index("item_id") if "item_id" in consolidated.columns else consolidated
    if value_col not in frame.columns:
        raise ValueError(f"consolidated lacks the column {value_col!r}")
    return frame[value_col]


def score(
    log: pd.DataFrame,
    consolidated: pd.DataFrame,
    gold: pd.Series | None = None,
    rework_items: Iterable[str] = (),
    by: Literal["annotator", "site_id"] = "annotator",
    value_col: str = "label",
) -> pd.DataFrame:
    """Quality of each annotator's (or site's) work.

    Args:
        log: The annotation log (``flows.core.schemas.ANNOTATIONS``): item_id, site_id, annotator,
            ``value_col``, skipped, lead_time_s; one row per task answered or skipped.
        consolidated: Consensus per item: item_id (column or index) and ``value_col``.
        gold: Known answers, item_id -> value.
        rework_items: Items sent back for rework.
        by: ``annotator`` or ``site_id``.
        value_col: The answer column compared with gold and consensus (``label`` for classification).

    Returns:
        Indexed by ``by``: n_tasks (rows, skips included), n_answers (not skipped), skip_rate, n_gold (answers
        on gold items), gold_accuracy (NaN without gold answers), consensus_agreement (share of answers equal
        to the item's consensus; the annotator's own vote is part of that consensus, so it reads a little
        high with small overlap), median_lead_time_s (answered tasks), rework_rate (share of the distinct
        items they answered that went to rework). Per annotator also site_id (their most frequent site).
    """
    missing = [c for c in (*LOG_COLUMNS, value_col) if c not in log.columns]
    if missing:
        raise ValueError(f"log lacks the column(s) {missing}")
    if by not in ("annotator", "site_id"):
        raise ValueError(f"by must be 'annotator' or 'site_id', got {by!r}")
    skipped = log["skipped"].fillna(False).to_numpy(dtype=bool)
    answered = log.loc[~skipped]
    item = answered["item_id"]
    value = answered[value_col]

    consensus = _consensus(consolidated, value_col).reindex(item).to_numpy(dtype=object, na_value=None)
    has_consensus = pd.notna(consensus)
    known = gold if gold is not None else pd.Series(dtype=object)
    gold_value = known.reindex(item).to_numpy(dtype=object, na_value=None)
    is_gold = pd.notna(gold_value)
    rework = item.isin(set(rework_items)).to_numpy()
    values = value.to_numpy(dtype=object, na_value=None)

    per_answer = pd.DataFrame(
        {
            "key": answered[by].to_numpy(),
            "gold": is_gold,
            "gold_hit": is_gold & (values == gold_value),
            "cons": has_consensus,
            "cons_hit": has_consensus & (values == consensus),
            "lead": answered["lead_time_s"].to_numpy(dtype=np.float64),
        }
    )
    grouped = per_answer.groupby("key", sort=True)
    sums = grouped[["gold", "gold_hit", "cons", "cons_hit"]].sum()
    tasks = log.groupby(by, sort=True).size()
    skips = pd.Series(skipped, index=log.index).groupby(log[by]).sum()
    distinct = answered.assign(rework=rework).drop_duplicates([by, "item_id"]).groupby(by)["rework"]

    out = pd.DataFrame(index=pd.Index(tasks.index, name=by))
    out["n_tasks"] = tasks.astype(np.int64)
    out["n_answers"] = (tasks - skips.reindex(tasks.index, fill_value=0)).astype(np.int64)
    out["skip_rate"] = skips.reindex(tasks.index, fill_value=0) / tasks
    n_gold = sums["gold"].reindex(out.index, fill_value=0)
    out["n_gold"] = n_gold.astype(np.int64)
    out["gold_accuracy"] = sums["gold_hit"].reindex(out.index) / n_gold.where(n_gold > 0)
    n_cons = sums["cons"].reindex(out.index, fill_value=0)
    out["consensus_agreement"] = sums["cons_hit"].reindex(out.index) / n_cons.where(n_cons > 0)
    out["median_lead_time_s"] = grouped["lead"].median().reindex(out.index)
    out["rework_rate"] = distinct.mean().reindex(out.index).astype(np.float64)
    if by == "annotator":
        site = log.groupby(["annotator", "site_id"]).size().reset_index(name="n")
        site = site.sort_values(["annotator", "n", "site_id"], ascending=[True, False, True])
        out.insert(0, "site_id", site.drop_duplicates("annotator").set_index("annotator")["site_id"])
    return out


def annotator_scores(
    log: pd.DataFrame,
    consolidated: pd.DataFrame,
    gold: pd.Series | None = None,
    rework_items: Iterable[str] = (),
    value_col: str = "label",
) -> pd.DataFrame:
    return score(log, consolidated, gold, rework_items, by="annotator", value_col=value_col)


def site_scores(
    log: pd.DataFrame,
    consolidated: pd.DataFrame,
    gold: pd.Series | None = None,
    rework_items: Iterable[str] = (),
    value_col: str = "label",
) -> pd.DataFrame:
    return score(log, consolidated, gold, rework_items, by="site_id", value_col=value_col)


def effective_accuracy(
    scores: pd.DataFrame, min_gold_answers: int = 10, estimated_accuracy: pd.Series | None = None
) -> pd.Series:
    """Gold accuracy, topped up with an estimate when there are too few gold answers to trust it alone.

    With at least ``min_gold_answers`` gold answers this is the gold accuracy. With fewer, the missing gold
    answers are imputed at the fallback accuracy: ``(gold_correct + (min_gold_answers - n_gold) * fallback)
    / min_gold_answers``, so a single unlucky gold item cannot exclude anyone, and the estimate moves
    smoothly to pure gold accuracy as gold answers accumulate. The fallback is ``estimated_accuracy`` (e.g.
    Dawid-Skene's per-annotator accuracy) where given, else agreement with consensus.

    Returns:
        Indexed like ``scores``; NaN where there is no evidence to judge by: fewer than ``min_gold_answers``
        gold answers and either no fallback or fewer than ``min_gold_answers`` answers in all.
    """
    if min_gold_answers < 1:
        raise ValueError(f"min_gold_answers must be at least 1, got {min_gold_answers}")
    n_gold = scores["n_gold"].to_numpy(dtype=np.float64)
    correct = np.nan_to_num(scores["gold_accuracy"].to_numpy(dtype=np.float64)) * n_gold
    fallback = scores["consensus_agreement"].to_numpy(dtype=np.float64)
    if estimated_accuracy is not None:
        estimate = estimated_accuracy.reindex(scores.index).to_numpy(dtype=np.float64)
        fallback = np.where(np.isnan(estimate), fallback, estimate)
    enough_gold = n_gold >= min_gold_answers
    topped_up = (correct + (min_gold_answers - n_gold) * fallback) / min_gold_answers
    judgeable = scores["n_answers"].to_numpy() >= min_gold_answers
    blended = np.where(judgeable, topped_up, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(enough_gold, correct / np.maximum(n_gold, 1), blended)
    return pd.Series(value, index=scores.index, name="effective_accuracy")


def flag_annotators(
    scores: pd.DataFrame,
    min_gold_accuracy: float,
    min_gold_answers: int = 10,
    estimated_accuracy: pd.Series | None = None,
) -> list[str]:
    """Annotators (or sites, given site scores) whose effective accuracy is below ``min_gold_accuracy``.

    See ``effective_accuracy`` for how few gold answers are handled; those with no evidence either way are
    never flagged.

    Returns:
        Their ids, sorted.
    """
    accuracy = effective_accuracy(scores, min_gold_answers, estimated_accuracy)
    return sorted(str(i) for i in accuracy.index[accuracy.to_numpy() < min_gold_accuracy])
