"""Consensus transcription: the medoid of the annotators' texts under normalised edit distance."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

#: Confidence of an item transcribed by one annotator. One text carries no evidence of agreement either
#: way, so it scores a coin's worth: below the default ``min_confidence`` (0.7), such an item goes to
#: rework for a second opinion unless the work order deliberately accepts lower confidence.
SINGLE_ANSWER_CONFIDENCE = 0.5

_SPACE = re.compile(r"\s+")


def collapse_whitespace(text: Any) -> str:
    """Runs of whitespace to one space, stripped; None and NaN are the empty text."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    return _SPACE.sub(" ", str(text)).strip()


def normalise_text(text: Any) -> str:
    """The form texts are compared in: whitespace collapsed and case folded."""
    return collapse_whitespace(text).casefold()


def medoid(texts: list[str]) -> tuple[int, float]:
    """Index of the medoid of ``texts`` and the mean similarity of the others to it.

    The medoid has the least total normalised Levenshtein distance to the others; ties go to the first.
    With one text the similarity is ``SINGLE_ANSWER_CONFIDENCE``.
    """
    return _medoid([normalise_text(t) for t in texts])


def _medoid(normalised: list[str]) -> tuple[int, float]:
    if len(normalised) == 1:
        return 0, SINGLE_ANSWER_CONFIDENCE
    total = cdist(normalised, normalised, scorer=Levenshtein.normalized_distance, dtype=np.float64).sum(axis=1)
    best = int(total.argmin())
    # The medoid's distance to itself is 0, so its row sum is the sum over the others.
    return best, 1.0 - float(total[best]) / (len(normalised) - 1)


def consolidate_transcriptions(answers: pd.DataFrame, text_col: str = "text") -> pd.DataFrame:
    """Consensus text per item.

    Texts are compared with whitespace collapsed and case folded; the consensus is the medoid annotator's
    own text with whitespace collapsed (case kept). Ties between equally central texts go to the
    annotator whose id sorts first, so the result does not depend on the order of the rows.

    Args:
        answers: Columns item_id, annotator and ``text_col``; one answer per item and annotator.
        text_col: Column holding the transcriptions (None counts as an empty transcription).

    Returns:
        Indexed by item_id (order of first appearance): text, confidence (mean similarity, 1 - normalised
        edit distance, of the other texts to the consensus; ``SINGLE_ANSWER_CONFIDENCE`` for one
        annotator), n_annotators.
    """
    missing = [c for c in ("item_id", "annotator", text_col) if c not in answers.columns]
    if missing:
        raise ValueError(f"answers lack the column(s) {missing}")
    if answers.duplicated(["item_id", "annotator"]).any():
        dup = answers.duplicated(["item_id", "annotator"]).to_numpy().argmax()
        raise ValueError(
            f"annotator {answers['annotator'].iloc[dup]!r} answered item {answers['item_id'].iloc[dup]!r} "
            "more than once; keep one answer per item and annotator"
        )
    item_codes, item_ids = pd.factorize(answers["item_id"])
    annotator_rank, _ = pd.factorize(answers["annotator"], sort=True)
    order = np.lexsort((annotator_rank, item_codes))
    codes = item_codes[order]
    texts = [collapse_whitespace(t) for t in answers[text_col].to_numpy(dtype=object)[order]]
    normalised = [t.casefold() for t in texts]
    bounds = np.searchsorted(codes, np.arange(len(item_ids) + 1))
    consensus: list[str] = []
    confidence = np.empty(len(item_ids))
    for it in range(len(item_ids)):
        lo, hi = bounds[it], bounds[it + 1]
        best, similarity = _medoid(normalised[lo:hi])
        consensus.append(texts[lo + best])
        confidence[it] = similarity
    return pd.DataFrame(
        {
            "text": pd.array(consensus, dtype="str"),
            "confidence": confidence,
            "n_annotators": np.diff(bounds).astype(np.int64),
        },
        index=pd.Index(item_ids, name="item_id"),
    )
