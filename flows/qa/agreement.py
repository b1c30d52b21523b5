"""Inter-annotator agreement: Krippendorff's alpha and pairwise agreement, vectorised.

Both read long answers (one row per unit and annotator). Units with fewer than two values carry no
information on agreement and are left out, as in Krippendorff's definition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

Level = Literal["nominal", "interval"]


@dataclass(frozen=True)
class _Pairable:
    """Values of units with at least two values, as codes."""

    unit: np.ndarray
    m: np.ndarray  # values per unit, indexed by unit code
    value: np.ndarray  # value codes (nominal) or the values themselves (interval)
    n_values: int  # distinct nominal values


def _pairable(answers: pd.DataFrame, value_col: str, unit_col: str, numeric: bool) -> _Pairable:
    missing = [c for c in (unit_col, value_col) if c not in answers.columns]
    if missing:
        raise ValueError(f"answers lack the column(s) {missing}")
    present = answers[[unit_col, value_col]].dropna()
    unit, _ = pd.factorize(present[unit_col])
    m = np.bincount(unit)
    keep = m[unit] >= 2
    unit = unit[keep]
    if numeric:
        try:
            value = present[value_col].to_numpy(dtype=np.float64)[keep]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"interval alpha needs numeric values in {value_col!r}") from exc
        return _Pairable(unit=unit, m=m, value=value, n_values=0)
    codes, uniques = pd.factorize(present[value_col])
    return _Pairable(unit=unit, m=m, value=codes[keep].astype(np.int64), n_values=len(uniques))


def _unit_value_counts(p: _Pairable) -> sp.csr_matrix:
    """Sparse (unit x value) counts, duplicates summed."""
    counts = sp.csr_matrix(
        (np.ones(p.unit.size, dtype=np.float64), (p.unit, p.value)), shape=(p.m.size, max(p.n_values, 1))
    )
    counts.sum_duplicates()
    return counts


def krippendorff_alpha(
    answers: pd.DataFrame,
    level: Level = "nominal",
    value_col: str = "label",
    unit_col: str = "item_id",
) -> float:
    """Krippendorff's alpha, 1 - observed / expected disagreement.

    Nominal: disagreement is any difference (computed from the coincidence matrix's diagonal). Interval:
    squared difference, summed per unit from the sums of values and of squares, so no pair is enumerated.

    Args:
        answers: One row per unit and annotator; missing values are ignored.
        level: ``nominal`` (labels) or ``interval`` (numbers).
        value_col: Column holding the values.
        unit_col: Column naming the unit (item).

    Returns:
        Alpha, 1 for perfect agreement, 0 for chance, negative for systematic disagreement. NaN when it is
        undefined: no unit has two values, or all values are the same (no expected disagreement);
        the caller decides what an unmeasurable work order means.
    """
    if level not in ("nominal", "interval"):
        raise ValueError(f"level must be 'nominal' or 'interval', got {level!r}")
    p = _pairable(answers, value_col, unit_col, numeric=level == "interval")
    n = p.unit.size
    if n == 0:
        return float("nan")
    m = p.m.astype(np.float64)
    if level == "nominal":
        counts = _unit_value_counts(p)
        per_unit_sq = np.asarray(counts.multiply(counts).sum(axis=1)).ravel()
        pairable = p.m >= 2
        observed = np.sum((m[pairable] ** 2 - per_unit_sq[pairable]) / (m[pairable] - 1)) / n
        totals = np.bincount(p.value, minlength=p.n_values).astype(np.float64)
        expected = (float(n) ** 2 - np.sum(totals**2)) / (n * (n - 1))
    else:
        # Centre first: m * S2 - S1**2 cancels catastrophically on large raw values.
        v = p.value - p.value.mean()
        s1 = np.bincount(p.unit, weights=v, minlength=p.m.size)
        s2 = np.bincount(p.unit, weights=v * v, minlength=p.m.size)
        pairable = p.m >= 2
        observed = np.sum(2 * (m[pairable] * s2[pairable] - s1[pairable] ** 2) / (m[pairable] - 1)) / n
        expected = 2 * (n * np.sum(v * v) - np.sum(v) ** 2) / (n * (n - 1))
    if expected <= 0:
        return float("nan")
    return float(1.0 - observed / expected)


def pairwise_agreement(answers: pd.DataFrame, value_col: str = "label", unit_col: str = "item_id") -> float:
    """Share of annotator pairs on a unit who gave the same value, averaged over units with two or more values.

    NaN when no unit has two values.
    """
    p = _pairable(answers, value_col, unit_col, numeric=False)
    if p.unit.size == 0:
        return float("nan")
    counts = _unit_value_counts(p)
    same = np.asarray((counts.multiply(counts) - counts).sum(axis=1)).ravel()
    m = p.m.astype(np.float64)
    pairable = p.m >= 2
    return float(np.mean(same[pairable] / (m[pairable] * (m[pairable] - 1))))


def per_group(
    answers: pd.DataFrame,
    by: str | Sequence[str],
    measure: Callable[..., float] = krippendorff_alpha,
    **kwargs: Any,
) -> pd.Series:
    """``measure`` (alpha by default) computed separately for each group, e.g. per batch or per site.

    Example: ``per_group(log, "site_id", krippendorff_alpha, level="nominal")``.

    Returns:
        Indexed by the group key(s), in sorted order.
    """
    keys = [by] if isinstance(by, str) else list(by)
    result = {name: measure(group, **kwargs) for name, group in answers.groupby(keys if len(keys) > 1 else keys[0])}
    index = (
        pd.MultiIndex.from_tuples(list(result), names=keys) if len(keys) > 1 else pd.Index(list(result), name=keys[0])
    )
    return pd.Series(list(result.values()), index=index, dtype=np.float64, name=getattr(measure, "__name__", None))
