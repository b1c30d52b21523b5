"""Dawid-Skene EM for classification, vectorised with sparse matrix products.

The answers are one sparse indicator matrix ``A`` (items x (annotator, label) pairs). Each EM step is two
products with it: the E-step's per-item log-likelihoods are ``A @ log E`` and the M-step's soft confusion
counts are ``A.T @ q``. Nothing is materialised per answer and class, so 1,000,000 items x 3 answers x 5
classes stay near a few hundred MB.

The model and its stopping rule follow crowd-kit's ``DawidSkene`` (Dawid & Skene 1979): initialised from
the soft majority vote, confusion entries clipped at 1e-10, stop when the evidence lower bound per answer
gains less than ``tol``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from flows.qa.consolidate.majority_vote import EncodedAnswers, encode_answers, item_frame

_EPS = 1e-10

Model = Literal["full", "one_coin"]


@dataclass(frozen=True)
class DawidSkeneResult:
    """What the EM found.

    Attributes:
        items: Indexed by item_id: label (most probable), confidence (its posterior), n_annotators.
        annotators: Indexed by annotator: accuracy (expected share of their answers that are right: the
            trace of their soft confusion counts over their answers), n_answers.
        confusion: ``full``: shape (annotators, K, K), ``confusion[w, true, answered]``, rows sum to 1.
            ``one_coin``: shape (annotators,), each annotator's probability of answering right.
        priors: Estimated share of each class, indexed by class.
        posterior: Shape (items, K), each item's class probabilities, rows in the order of ``items``.
        iterations: EM iterations run.
        converged: Whether the lower bound settled before ``max_iter``.
    """

    items: pd.DataFrame
    annotators: pd.DataFrame
    confusion: np.ndarray
    priors: pd.Series
    posterior: np.ndarray
    iterations: int
    converged: bool


def _clamp(q: np.ndarray, enc: EncodedAnswers) -> None:
    if enc.gold_item.size:
        q[enc.gold_item] = 0.0
        q[enc.gold_item, enc.gold_label] = 1.0


def _full_log_confusion(counts: np.ndarray, observed: np.ndarray, k: int) -> np.ndarray:
    """log P(answer l | true c) per (annotator, l) row and true class c column, from soft counts.

    Pairs an annotator never answered keep probability 0 (their rows are never read), as in crowd-kit.
    """
    counts = np.where(observed[:, None], np.maximum(counts, _EPS), 0.0)
    per_worker = counts.reshape(-1, k, k)
    probs = per_worker / per_worker.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        logs = np.log(probs).reshape(-1, k)
    logs[~observed] = 0.0
    return logs


def _row_max(x: np.ndarray) -> np.ndarray:
    """Row maxima; column by column because numpy reduces a short trailing axis slowly."""
    out = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        np.maximum(out, x[:, c], out=out)
    return out


def _one_coin_skill(q: np.ndarray, enc: EncodedAnswers, n_answers: np.ndarray) -> np.ndarray:
    hits = q[enc.item, enc.label]
    return np.bincount(enc.annotator, weights=hits, minlength=enc.n_annotators) / np.maximum(n_answers, 1)


def _one_coin_log_confusion(skill: np.ndarray, k: int) -> np.ndarray:
    right = np.clip(skill, _EPS, 1 - _EPS)
    wrong = np.clip((1 - skill) / max(k - 1, 1), _EPS, 1 - _EPS)
    logs = np.broadcast_to(np.log(wrong)[:, None, None], (skill.size, k, k)).copy()
    idx = np.arange(k)
    logs[:, idx, idx] = np.log(right)[:, None]
    return logs.reshape(-1, k)


def _priors(values: np.ndarray, enc: EncodedAnswers) -> pd.Series:
    return pd.Series(values, index=pd.Index(list(enc.classes), dtype="str", name="label"), name="prior")


def _empty_result(enc: EncodedAnswers) -> DawidSkeneResult:
    k = enc.n_classes
    none = np.empty(0, dtype=np.int64)
    return DawidSkeneResult(
        items=item_frame(enc, none, np.empty(0), none),
        annotators=pd.DataFrame(
            {"accuracy": np.empty(0), "n_answers": none}, index=pd.Index([], dtype="str", name="annotator")
        ),
        confusion=np.empty((0, k, k)),
        priors=_priors(np.full(k, 1.0 / k), enc),
        posterior=np.empty((0, k)),
        iterations=0,
        converged=True,
    )


def dawid_skene(
    answers: pd.DataFrame,
    classes: Sequence[str],
    gold: pd.Series | None = None,
    model: Model = "full",
    max_iter: int = 100,
    tol: float = 1e-5,
) -> DawidSkeneResult:
    """Estimate true labels and annotator confusion with EM.

    Args:
        answers: Columns item_id, annotator, label; one answer per item and annotator, skips removed.
        classes: The allowed labels; ties between equally probable classes go to the one listed first.
        gold: Known answers, item_id -> label. Their posteriors are clamped to the known label in every
            E-step, so they calibrate the annotators' confusion; items without answers are ignored.
        model: ``full`` estimates a K x K confusion matrix per annotator; ``one_coin`` one accuracy per
            annotator (errors spread evenly over the other classes), steadier when annotators answer few items.
        max_iter: Most EM iterations.
        tol: Stop when the evidence lower bound per answer gains less than this.

    Returns:
        A DawidSkeneResult; ``items`` is indexed by item_id in order of first appearance.
    """
    if model not in ("full", "one_coin"):
        raise ValueError(f"model must be 'full' or 'one_coin', got {model!r}")
    enc = encode_answers(answers, classes, gold)
    if enc.n_items == 0:
        return _empty_result(enc)
    k = enc.n_classes
    n_answers_per_worker = np.bincount(enc.annotator, minlength=enc.n_annotators)
    votes = enc.vote_counts()
    n_per_item = votes.sum(axis=1)
    m = max(enc.item.size, 1)

    a = enc.indicator
    a_t = a.T.tocsr()
    observed = np.bincount(enc.annotator * k + enc.label, minlength=enc.n_annotators * k) > 0

    def m_step(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if model == "full":
            counts = a_t @ q
            return _full_log_confusion(counts, observed, k), counts
        skill = _one_coin_skill(q, enc, n_answers_per_worker)
        return _one_coin_log_confusion(skill, k), skill

    q = votes / np.maximum(n_per_item, 1)[:, None]
    _clamp(q, enc)
    priors = q.mean(axis=0)
    log_e, stats = m_step(q)
    loglik = a @ log_e

    gold_rows = np.zeros(enc.n_items, dtype=bool)
    gold_rows[enc.gold_item] = True
    rows = np.arange(enc.n_items)
    bound = -np.inf
    iterations, converged = 0, False
    for _ in range(max_iter):
        iterations += 1
        # E-step in place on the (items x K) logits: these passes dominate the time at 1M items.
        logits = loglik
        logits += np.log(np.maximum(priors, _EPS))
        logits -= _row_max(logits)[:, None]
        q = np.exp(logits)
        norm = np.einsum("ij->i", q)
        q /= norm[:, None]
        # Entropy without log(q): log q = logits - log(norm); clamped gold rows have none.
        entropy = np.log(norm) - np.einsum("ij,ij->i", q, logits)
        entropy[gold_rows] = 0.0
        _clamp(q, enc)
        priors = q.mean(axis=0)
        log_e, stats = m_step(q)
        # The next E-step needs this product too, so the bound costs one reduction more.
        loglik = a @ log_e
        expected = np.einsum("ij,ij->", q, loglik) + q.sum(axis=0) @ np.log(np.maximum(priors, _EPS))
        new_bound = float((expected + entropy.sum()) / m)
        if new_bound - bound < tol:
            converged = True
            break
        bound = new_bound

    label = q.argmax(axis=1)
    confidence = q[rows, label]
    if model == "full":
        per_worker = stats.reshape(enc.n_annotators, k, k)
        accuracy = np.trace(per_worker, axis1=1, axis2=2) / np.maximum(n_answers_per_worker, 1)
        confusion = np.exp(log_e.reshape(enc.n_annotators, k, k)) * observed.reshape(enc.n_annotators, k, 1)
        confusion = confusion.transpose(0, 2, 1)
    else:
        accuracy = stats
        confusion = stats
    annotators = pd.DataFrame(
        {"accuracy": accuracy, "n_answers": n_answers_per_worker.astype(np.int64)}, index=enc.annotators
    )
    return DawidSkeneResult(
        items=item_frame(enc, label, confidence, n_per_item),
        annotators=annotators,
        confusion=confusion,
        priors=_priors(priors, enc),
        posterior=q,
        iterations=iterations,
        converged=converged,
    )
