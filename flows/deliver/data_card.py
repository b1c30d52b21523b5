"""The data card: a README in Markdown that travels with every delivery.

It tells the client what was labelled, how, by whom (in aggregate: sites, countries, number of workers,
never names), how good the labels are, how the counts add up, and what the data cannot be trusted for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from flows.core.models import TaskType, WorkOrder

CONFIDENCE_BINS = (0.0, 0.5, 0.7, 0.9, 1.0)

_TASK_WORDS = {
    TaskType.IMAGE_CLASSIFICATION: "Each image was given one class",
    TaskType.OBJECT_DETECTION: "Each object of interest in each image was boxed and given a class",
    TaskType.TEXT_CLASSIFICATION: "Each text was given one class",
    TaskType.AUDIO_TRANSCRIPTION: "Each audio clip was transcribed",
    TaskType.LISTING_VERIFICATION: "Each listing's fields were checked and corrected",
}

_METHOD_WORDS = {
    "dawid_skene": (
        "Dawid-Skene: answers are weighted by each annotator's estimated accuracy per class, learned from "
        "the data, and the most probable answer is kept"
    ),
    "one_coin": (
        "one-coin model: answers are weighted by each annotator's estimated overall accuracy, learned from the data"
    ),
    "majority_vote": "majority vote: the answer most annotators gave is kept",
}


@dataclass(frozen=True)
class Workforce:
    """Who did the work, in aggregate only."""

    sites: int
    countries: tuple[str, ...]
    workers: int


def summarise_workforce(annotations: pd.DataFrame, site_countries: Mapping[str, str]) -> Workforce:
    """Count sites, their countries and distinct (pseudonymous) workers in the annotation log."""
    site_ids = sorted(annotations["site_id"].dropna().unique())
    countries = tuple(sorted({site_countries[s] for s in site_ids if s in site_countries}))
    workers = annotations[["site_id", "annotator"]].drop_duplicates().shape[0]
    return Workforce(sites=len(site_ids), countries=countries, workers=int(workers))


def confidence_table(confidence: pd.Series, bins: Sequence[float] = CONFIDENCE_BINS) -> pd.DataFrame:
    """Items per confidence band (last band closed at 1.0), with shares; missing confidence counted apart."""
    values = pd.to_numeric(confidence, errors="coerce").astype("float64")
    known = values.dropna().to_numpy()
    edges = np.asarray(bins, dtype=np.float64)
    labels = [f"{lo:.2f}–{hi:.2f}" for lo, hi in pairwise(bins)]
    # Bands are [lo, hi) except the last, which also holds hi (a confidence of exactly 1.0).
    band = np.clip(np.searchsorted(edges, known, side="right") - 1, 0, len(labels) - 1)
    counts = np.bincount(band, minlength=len(labels))
    rows = pd.DataFrame({"band": labels, "items": counts.astype(np.int64)})
    missing = int(values.isna().sum())
    if missing:
        rows = pd.concat([rows, pd.DataFrame({"band": ["not computed"], "items": [missing]})], ignore_index=True)
    total = max(int(rows["items"].sum()), 1)
    rows["share"] = rows["items"] / total
    return rows


def render_data_card(
    work_order: WorkOrder,
    *,
    version: str,
    counts: Mapping[str, Any],
    delivered: pd.DataFrame,
    workforce: Workforce,
    agreement: float | None,
    gold_accuracy: float | None,
    files: Sequence[Mapping[str, Any]],
    limits: Sequence[str] = (),
    generated_at: str | None = None,
) -> str:
    """The data card as Markdown.

    Args:
        work_order: The work order delivered.
        version: The delivery version.
        counts: :func:`flows.deliver.manifest.reconcile`'s figures.
        delivered: The delivered rows (``confidence``, ``n_annotators``, ``method``; ``label`` for
            classification), e.g. the deliverable frame.
        workforce: :func:`summarise_workforce`'s aggregate.
        agreement: Inter-annotator agreement (Krippendorff's alpha) over the work order, if measured.
        gold_accuracy: Share of gold (known-answer) tasks answered correctly, over all workers.
        files: The manifest's file entries (``name``, ``rows``, ``size``, ``sha256``).
        limits: Known limits to add to the ones derived here.
        generated_at: Date to print; omitted when None so the card is reproducible.

    Returns:
        Markdown text.
    """
    wo = work_order
    qa = wo.qa
    n = len(delivered)
    out: list[str] = [f"# {_md(wo.client_id)} / {_md(wo.id)}: labelled data, version {_md(version)}", ""]
    if generated_at:
        out += [f"Generated {_md(generated_at)}.", ""]

    out += ["## What was labelled", "", f"{_TASK_WORDS[wo.task_type]} ({wo.task_type.value}).", ""]
    out += [f"- Items delivered: **{n:,}**"]
    if wo.label_schema.classes:
        out += [f"- Classes: {', '.join(f'`{_code(c)}`' for c in wo.label_schema.classes)}"]
    if wo.label_schema.fields:
        names = ", ".join(
            f"`{_code(f.name)}` ({f.kind.value}{', required' if f.required else ''})" for f in wo.label_schema.fields
        )
        out += [f"- Fields: {names}"]
    if wo.instructions.strip():
        out += ["", "Instructions given to annotators (first lines):", ""]
        out += [f"> {_md(line)}" if line.strip() else ">" for line in wo.instructions.strip().splitlines()[:12]]
    out += [""]

    methods = sorted(delivered["method"].dropna().unique()) if "method" in delivered else []
    method_text = "; ".join(_METHOD_WORDS.get(m, m) for m in methods) or _METHOD_WORDS.get(qa.method, qa.method)
    out += ["## How it was labelled", ""]
    out += [
        f"- Each item was answered independently by **{wo.overlap}** annotator(s)"
        + (", each from a different partner site." if wo.overlap_across_sites else "."),
        f"- Answers were combined by {method_text}.",
        f"- About **{wo.gold.rate:.0%}** of tasks were gold tasks (known answers, unannounced) used to "
        "measure each annotator's accuracy.",
        f"- Items whose combined answer had confidence below **{qa.min_confidence:.2f}** were sent back "
        f"for more answers, up to {qa.max_rework_rounds} time(s).",
        f"- Annotators below **{qa.min_gold_accuracy:.0%}** gold accuracy had their answers excluded.",
    ]
    if "n_annotators" in delivered and n:
        per_item = pd.to_numeric(delivered["n_annotators"]).describe()
        out += [
            f"- Answers per delivered item: median {per_item['50%']:g}, "
            f"min {per_item['min']:g}, max {per_item['max']:g}."
        ]
    out += [""]

    out += ["## Who labelled it", ""]
    countries = ", ".join(workforce.countries) if workforce.countries else "not recorded"
    out += [
        f"{workforce.workers:,} trained annotators at {workforce.sites} impact-sourcing partner site(s), "
        f"in {countries}. Annotators are identified only by pseudonymous ids; this delivery contains no "
        "names or other personal data about them. Partner sites are audited for fair pay against the local "
        "living wage.",
        "",
    ]

    out += ["## Quality", ""]
    out += [
        f"- Agreement between annotators (Krippendorff's alpha): {_num(agreement)}"
        + (f" (work order threshold {qa.min_agreement:.2f})" if agreement is not None else ""),
        f"- Accuracy on gold tasks: {_pct(gold_accuracy)}",
    ]
    conf = pd.to_numeric(delivered["confidence"], errors="coerce") if "confidence" in delivered else pd.Series()
    if conf.notna().any():
        out += [
            f"- Confidence of the combined answers: mean {conf.mean():.3f}, median {conf.median():.3f}, "
            f"lowest {conf.min():.3f}.",
            "",
            "| Confidence | Items | Share |",
            "|---|---:|---:|",
        ]
        out += [f"| {r.band} | {r.items:,} | {r.share:.1%} |" for r in confidence_table(conf).itertuples()]
    if wo.task_type in (TaskType.IMAGE_CLASSIFICATION, TaskType.TEXT_CLASSIFICATION) and "label" in delivered and n:
        dist = delivered["label"].value_counts().sort_index()
        out += ["", "| Class | Items | Share |", "|---|---:|---:|"]
        out += [f"| {_cell(k)} | {v:,} | {v / n:.1%} |" for k, v in dist.items()]
    out += [""]

    out += ["## Counts", "", "| | Items |", "|---|---:|"]
    for key in ("accepted", "delivered", "reworked_and_delivered", "excluded"):
        if key in counts:
            out += [f"| {key.replace('_', ' ').capitalize()} | {int(counts[key]):,} |"]
    for reason, k in dict(counts.get("excluded_by_reason", {})).items():
        out += [f"| Excluded: {_cell(reason)} | {int(k):,} |"]
    out += [
        "",
        "Every item accepted at intake is either delivered or excluded with a reason "
        "(accepted = delivered + excluded); reworked items are counted within delivered.",
        "",
    ]

    out += ["## Files", "", "| File | Rows | Bytes | SHA-256 |", "|---|---:|---:|---|"]
    out += [f"| `{_code(f['name'])}` | {int(f['rows']):,} | {int(f['size']):,} | `{f['sha256']}` |" for f in files]
    out += ["", "Check a file with `sha256sum FILE` against the last column or `manifest.json`."]
    if any(str(f["name"]).endswith(".csv") for f in files):
        out += [
            "",
            "In CSV files, a text cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return has a "
            "single quote (`'`) put in front, so that spreadsheets show it instead of running it as a formula "
            "(OWASP's advice against CSV injection); cells that are plain numbers are left alone. Remove that "
            "one quote to get the original value. Nested values are in dotted columns (`answer.label`); lists "
            "are JSON.",
        ]
    out += [""]

    out += ["## Known limits", ""]
    out += [f"- {_md(line)}" for line in [*_derived_limits(wo, counts, conf, delivered), *limits]] or [
        "- None recorded."
    ]
    out += [""]
    return "\n".join(out)


def _derived_limits(wo: WorkOrder, counts: Mapping[str, Any], conf: pd.Series, delivered: pd.DataFrame) -> list[str]:
    out = []
    excluded = int(counts.get("excluded", 0))
    if excluded:
        out.append(
            f"{excluded:,} accepted item(s) are not in this delivery (see the counts above); a sample built "
            "from it may under-represent hard cases."
        )
    if conf.notna().any():
        low = int((conf < wo.qa.min_confidence).sum())
        if low:
            out.append(f"{low:,} delivered item(s) have confidence below {wo.qa.min_confidence:.2f}.")
    if "n_annotators" in delivered:
        single = int((pd.to_numeric(delivered["n_annotators"]) < 2).sum())
        if single:
            out.append(f"{single:,} item(s) rest on a single answer; their confidence says little.")
    out.append(
        "Labels reflect the instructions above as understood by annotators; ambiguous items may be labelled "
        "differently by another team."
    )
    return out


def _md(text: str) -> str:
    """Escape Markdown in free text coming from clients (instructions, names)."""
    out = str(text)
    for ch in "\\`*_[]<>|#":
        out = out.replace(ch, f"\\{ch}")
    return out


def _cell(text: object) -> str:
    return _md(str(text)).replace("\n", " ")


def _code(text: str) -> str:
    return str(text).replace("`", "'").replace("\n", " ")


def _num(v: float | None) -> str:
    return "not measured" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "not measured" if v is None else f"{v:.1%}"
