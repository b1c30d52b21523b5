"""The QA stage: consolidate the answers, score annotators and sites on gold, validate, report, pick rework.

Order of work, each step safe to repeat (the same inputs give the same tables, byte for byte):

1. **Inputs** (:mod:`flows.qa.inputs`): the latest version of every annotation, then one row per (item,
   annotator): their latest answer across rounds (skips only where they never answered); gold answers;
   the assignment manifests of rounds 0..r; the accepted items' ids; the partner registry.
2. **Assess** (:func:`assess_round`, pure, over the pure modules of this package, in this order):

   * Annotators are scored on gold with every answer counting (:mod:`flows.qa.scores`). Those whose
     accuracy is below ``qa.min_gold_accuracy`` are excluded: with fewer than ``MIN_GOLD_ANSWERS`` gold
     answers their gold accuracy is topped up with the accuracy Dawid-Skene estimates for them (classification).
   * The answers that still count are consolidated (:func:`flows.qa.consolidate.consolidate`), gold items
     clamped to their known answer. Gold items are then dropped: they are never delivered nor reworked.
   * Rework (:func:`flows.qa.rework.select_rework`): low confidence, no majority, too few answers left after
     an exclusion or skips, and items nobody has answered yet. The review round goes to the best eligible
     site: one that got work in split's plan, is neither suspended nor unknown in the registry, and whose
     effective gold accuracy is not below the threshold (when none is, the best active site of the plan,
     with a warning). Its predictions are the previous answers.
   * Sites are scored on the answers that count (flagged annotators' answers are excluded and their items
     reworked): that is the site's quality (the registry's ``gold_accuracy``, the threshold "per site"), so a
     site that finds and removes its spammer passes. Agreement (Krippendorff's alpha, classification) is
     measured on the same answers.

3. **Tables** under ``qa/round=<r>/``: ``consolidated.parquet`` (:data:`flows.core.schemas.CONSOLIDATED`,
   sorted by item_id), ``annotator_scores.parquet``, ``site_scores.parquet``, ``rework.parquet``
   (:data:`REWORK`). The sites' gold accuracy of this round is written back to the partner registry (sites
   with at least ``MIN_GOLD_ANSWERS`` gold answers), where allocation reads it next time.
4. **Validation** with Great Expectations (:mod:`flows.qa.validate`); its Data Docs are published to
   ``qa/round=<r>/data-docs/`` and its results to ``qa/round=<r>/validation.json`` (``{"success": ...,
   "results": [one record per check]}``, copied into the client's delivery). In a round that rework
   follows, items waiting for rework do not fail coverage. In the last round (``round_number ==
   qa.max_rework_rounds``) the items still needing rework are not deliverable: they stay in
   ``consolidated.parquet`` with ``needs_rework`` (deliver excludes them as failed QA), are left out of the
   validated frame, and so fail the coverage check, which names how many.

   Agreement that cannot be measured (alpha is NaN): with fewer than two counted answers on every item there
   is nothing to measure, and the gate does not fail. With items answered twice or more, alpha is NaN only
   when every answer carries the same label: no variation, so agreement cannot be told from everyone
   clicking the same choice, and the gate fails (check ``agreement_measurable`` in validation.json) so a QA
   lead looks. Task types other than classification have no alpha; their disagreement shows in confidence.
5. **Report**: the QA report (:mod:`flows.qa.report`) at ``qa/round=<r>/report/index.html``; Prefect
   artifacts (the report as Markdown, tables of site scores and validation results, links). Then
   ``qa/round=<r>/result.json`` and ``qa/result.json``, last.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.core import prefect_fixes  # noqa: F401  (applied on import: see the module)
from flows.core.data_docs import publish_data_docs
from flows.core.models import AnnotateResult, IngestResult, PartnerRegistry, QAResult, TaskType, WorkOrder
from flows.core.s3 import ObjectNotFound, ObjectStore, parse_uri
from flows.core.schemas import CONSOLIDATED
from flows.core.settings import load_settings
from flows.core.startup import tune_gc_after_imports
from flows.core.workspace import (
    default_registry_uri,
    load_registry,
    read_model_or_none,
    workspace,
    write_json,
    write_model,
    write_table,
)
from flows.qa.agreement import krippendorff_alpha
from flows.qa.consolidate import ConsolidationParams, consolidate, dawid_skene
from flows.qa.inputs import (
    CLASSIFICATION,
    QAInputError,
    answer_log,
    answer_sites,
    comparable_values,
    gold_values,
    latest_versions,
    read_annotation_log,
    read_assignments,
    read_gold,
    read_item_ids,
    read_projects,
    site_progress,
    unanswered_rework,
)
from flows.qa.report import QAReport, collect_report, exclusion_reasons, render_qa_markdown, render_qa_report
from flows.qa.rework import reason_counts, rework_round_items, select_rework
from flows.qa.scores import annotator_scores, effective_accuracy, flag_annotators, site_scores
from flows.qa.validate import ExpectationOutcome, ValidationOutcome, validate_output

#: Gold answers an annotator or site needs before gold accuracy alone judges them (fewer: topped up with
#: an estimate, see flows.qa.scores.effective_accuracy), and before a site's accuracy goes to the registry.
MIN_GOLD_ANSWERS = 10

#: ``qa/round=<r>/rework.parquet``: the review round's input, one row per item, in order of confidence.
REWORK = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("site_id", pa.string()),
        pa.field("round", pa.int16(), nullable=False),
        pa.field("predictions", pa.string(), nullable=False, metadata={"json": "array"}),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

AGREEMENT_GATE = "agreement_measurable"


@dataclass(frozen=True)
class QAInputs:
    """What the earlier stages left, read and shaped (see :mod:`flows.qa.inputs`)."""

    log: pd.DataFrame
    gold: pd.Series
    gold_ids: list[str]
    accepted: pa.Array
    assignments: pd.DataFrame
    projects: dict[str, dict[str, Any]]
    registry: PartnerRegistry
    registry_uri: str


@dataclass(frozen=True)
class Assessment:
    """The outcome of consolidation, scoring and rework selection for one round (no I/O)."""

    consolidated: pd.DataFrame
    rework: pd.DataFrame
    rework_round: pd.DataFrame
    annotator_scores: pd.DataFrame
    site_scores: pd.DataFrame
    excluded: dict[str, str]
    alpha: float
    alpha_needed: bool
    rework_site: str | None
    eligible_sites: list[str]


@dataclass(frozen=True)
class Validated:
    outcome: ValidationOutcome
    passed: bool
    validation_uri: str
    data_docs_url: str


@dataclass(frozen=True)
class Written:
    results_uri: str
    rework_uri: str


# --- Inputs ----------------------------------------------------------------------------------------


def _round(round_number: int) -> str:
    return f"round={round_number}"


@task(name="load qa inputs", task_run_name="load qa inputs of {work_order.id}", cache_policy=NO_CACHE)
def load_inputs(
    work_order: WorkOrder, annotate: AnnotateResult | None, round_number: int, registry_uri: str | None
) -> QAInputs:
    """The annotation log (one row per item and annotator), gold, the plan, the accepted items, the registry."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    if annotate is None:
        annotate = read_model_or_none(store, ws.uri("annotate", "result.json"), AnnotateResult)
        if annotate is None:
            raise ObjectNotFound(
                f"No annotate result at {ws.uri('annotate', 'result.json')}: run the annotate stage for "
                f"{work_order.id} first, or pass `annotate`."
            )
    ingest = read_model_or_none(store, ws.uri("ingest", "result.json"), IngestResult)
    if ingest is None:
        raise ObjectNotFound(f"No ingest result at {ws.uri('ingest', 'result.json')}: run the ingest stage first.")

    raw = read_annotation_log(store, annotate.log_uri)
    latest = latest_versions(raw)
    log = answer_log(latest)
    log["value"] = comparable_values(log["answer"], work_order.task_type, log["label"])
    if work_order.task_type in CLASSIFICATION:
        # The consolidators read ``label``; annotate sets it, older log parts may have it only in the JSON.
        log["label"] = log["value"]
    gold = read_gold(store, ws.uri("split", "gold.parquet"))
    known = gold_values(gold, work_order.task_type)
    gold_ids = sorted(set(gold["item_id"].astype(str)))
    unreadable = len(gold_ids) - len(known)
    # Detection answers have no comparable value at all (see flows.qa.inputs): nothing is unreadable there.
    if unreadable and work_order.task_type != TaskType.OBJECT_DETECTION:
        logger.warning(
            "%s: %d gold answer(s) in split/gold.parquet have no readable %s answer; those items are not scored.",
            work_order.id,
            unreadable,
            work_order.task_type.value,
        )
    item_ids = read_item_ids(store, ingest.items_uri, ingest.accepted)
    if gold_ids:
        item_ids = item_ids.filter(pc.invert(pc.is_in(item_ids, value_set=pa.array(gold_ids, pa.string()))))
    assignments = read_assignments(store, ws.uri("split"), round_number)
    if assignments.empty and log.empty:
        raise QAInputError(
            f"{work_order.id}: split planned no tasks and the annotation log at {annotate.log_uri} is empty: "
            "run the split and annotate stages first."
        )
    registry_uri = registry_uri or default_registry_uri(settings)
    registry = load_registry(store, registry_uri)
    logger.info(
        "%s round %d: %d versions in the annotation log, %d current; %d answers and %d skips by %d annotators "
        "at %d sites; %d gold items; %d accepted items.",
        work_order.id,
        round_number,
        raw.num_rows,
        latest.num_rows,
        int((~log["skipped"]).sum()),
        int(log["skipped"].sum()),
        log["annotator"].nunique(),
        log["site_id"].nunique(),
        len(gold_ids),
        len(item_ids),
    )
    return QAInputs(
        log=log,
        gold=known,
        gold_ids=gold_ids,
        accepted=item_ids,
        assignments=assignments,
        projects=read_projects(store, ws.uri("split", "projects.json")),
        registry=registry,
        registry_uri=registry_uri,
    )


# --- Assess ----------------------------------------------------------------------------------------


def _with_values(consolidated: pd.DataFrame, work_order: WorkOrder) -> pd.DataFrame:
    """Consolidated answers with the comparable ``value`` the scores compare answers against."""
    label = consolidated["label"] if "label" in consolidated.columns else None
    return consolidated.assign(value=comparable_values(consolidated["answer"], work_order.task_type, label))


def _candidate_sites(work_order: WorkOrder, inputs: QAInputs, notes: list[str]) -> list[str]:
    """The plan's active sites: registered and not suspended (the log's sites when there is no plan)."""
    planned = inputs.assignments["site_id"] if not inputs.assignments.empty else inputs.log["site_id"]
    plan = sorted(pc.unique(_ids(planned)).drop_null().to_pylist())
    known = {s.id: s for s in inputs.registry.sites}
    unknown = [s for s in plan if s not in known]
    if unknown:
        notes.append(
            f"{work_order.id}: site(s) {', '.join(unknown)} of the plan are not in the partner registry "
            f"{inputs.registry_uri}: they get no rework."
        )
    return [s for s in plan if s in known and not known[s].impact.suspended]


def _ids(values: pd.Series | list[str]) -> pa.Array:
    return pa.array(values, type=pa.string(), from_pandas=True)


def judgeable(site_scores: pd.DataFrame) -> pd.DataFrame:
    """Site scores for the gate: a gold accuracy on fewer than ``MIN_GOLD_ANSWERS`` gold answers is noise
    (one miss in three reads as 67 %), so it is not judged yet; agreement still is, and the report shows it.
    """
    if "n_gold" not in site_scores.columns:
        return site_scores
    thin = site_scores["n_gold"].fillna(0) < MIN_GOLD_ANSWERS
    return site_scores.assign(gold_accuracy=site_scores["gold_accuracy"].mask(thin))


def assess_round(work_order: WorkOrder, inputs: QAInputs, round_number: int) -> tuple[Assessment, list[str]]:
    """Score on gold, exclude, consolidate, select rework and build the review round (see the module doc).

    Pure: reads ``inputs``, returns the assessment and the warnings for the flow log.
    """
    notes: list[str] = []
    qa = work_order.qa
    classification = work_order.task_type in CLASSIFICATION
    log = inputs.log
    answers = log.loc[~log["skipped"].to_numpy(dtype=bool)]
    if classification:
        answers = answers.loc[answers["label"].notna().to_numpy()]
    gold_labels = inputs.gold if classification and len(inputs.gold) else None
    params = ConsolidationParams.from_work_order(work_order, gold=gold_labels)

    # Everyone counts for the first estimate, on which the exclusions are decided.
    estimated: pd.Series | None = None
    if classification:
        model: Literal["full", "one_coin"] = "one_coin" if qa.method == "one_coin" else "full"
        first = dawid_skene(answers, work_order.label_schema.classes, gold=gold_labels, model=model)
        estimated = first.annotators["accuracy"]
        prelim = pd.DataFrame({"item_id": first.items.index.astype(str), "value": first.items["label"].to_numpy()})
    else:
        prelim = _with_values(consolidate(work_order.task_type, answers, params), work_order)
    judged = annotator_scores(log, prelim, inputs.gold, value_col="value")
    flagged = flag_annotators(judged, qa.min_gold_accuracy, MIN_GOLD_ANSWERS, estimated)
    excluded = exclusion_reasons(
        judged, flagged, qa.min_gold_accuracy, min_gold_answers=MIN_GOLD_ANSWERS, estimated_accuracy=estimated
    )

    kept = answers.loc[~answers["annotator"].isin(flagged).to_numpy()]
    everything = consolidate(work_order.task_type, kept, params)
    gold_ids = _ids(inputs.gold_ids)
    on_gold = pc.is_in(_ids(everything["item_id"]), value_set=gold_ids).to_numpy(zero_copy_only=False)
    consolidated = everything.loc[~on_gold]

    rework = select_rework(
        consolidated, log, qa, min_answers=work_order.overlap, excluded_annotators=flagged, gold_items=inputs.gold_ids
    )
    seen = pa.chunked_array([_ids(log["item_id"]), _ids(consolidated["item_id"])], type=pa.string())
    never = inputs.accepted.filter(pc.invert(pc.is_in(inputs.accepted, value_set=pc.unique(seen))))
    if len(never):
        notes.append(
            f"{work_order.id}: {len(never):,} accepted item(s) have no answer and no skip yet "
            f"(e.g. {never[0].as_py()}); they go to rework."
        )
        rework = pd.concat([rework, unanswered_rework(never.to_pylist())], ignore_index=True)
    waiting = _ids(rework["item_id"])

    ids = consolidated["item_id"]
    consolidated = consolidated.assign(
        sites=pd.array(answer_sites(kept).reindex(ids).to_numpy(dtype=object), dtype="str"),
        needs_rework=pc.is_in(_ids(ids), value_set=waiting).to_numpy(zero_copy_only=False),
    )
    consolidated = consolidated.sort_values("item_id", kind="stable").reset_index(drop=True)

    reference = _with_values(everything, work_order)
    rework_ids = rework["item_id"]
    people = annotator_scores(log, reference, inputs.gold, rework_ids, value_col="value")
    people["effective_accuracy"] = effective_accuracy(judged, MIN_GOLD_ANSWERS, estimated).reindex(people.index)
    people["excluded"] = people.index.isin(flagged)
    # A site's quality is that of the answers it delivers: flagged annotators' answers are excluded (and their
    # items reworked), so they do not count against the site's gate; their own scores stay in the report.
    # A site whose every answer was excluded keeps its all-answer figures: it is failing, not unmeasured.
    counted = log.loc[~log["annotator"].isin(flagged).to_numpy()]
    all_answers = site_scores(log, reference, inputs.gold, rework_ids, value_col="value")
    sites = site_scores(counted, reference, inputs.gold, rework_ids, value_col="value").combine_first(all_answers)
    below = flag_annotators(sites, qa.min_gold_accuracy, MIN_GOLD_ANSWERS)

    alpha, needed = float("nan"), False
    if classification:
        alpha = krippendorff_alpha(kept, value_col="label")
        needed = bool((kept.groupby("item_id").size() >= 2).any())

    active = _candidate_sites(work_order, inputs, notes)
    eligible = [s for s in active if s not in below]
    rework_round = REWORK.empty_table().to_pandas()
    rework_site: str | None = None
    if len(rework):
        if not eligible:
            notes.append(
                f"{work_order.id}: no site of the plan is in good standing for rework (below the gold accuracy "
                f"threshold: {', '.join(below) or 'none'}); the review round is proposed to the best of the "
                f"active sites ({', '.join(active) or 'none'})."
            )
        candidates = eligible or active
        if candidates:
            built = rework_round_items(
                work_order,
                rework,
                everything,
                sites,
                candidates,
                round_number + 1,
                log=log,
                excluded_annotators=flagged,
            )
            rework_round = built.assign(reason=rework["reason"].to_numpy())
            rework_site = str(built["site_id"].iloc[0])
        else:
            notes.append(
                f"{work_order.id}: no site of the plan is active in the partner registry: rework.parquet names "
                "no site; choose one by hand for the rework round."
            )
            rework_round = pd.DataFrame(
                {
                    "item_id": rework["item_id"].astype("str"),
                    "site_id": pd.array([None] * len(rework), dtype="str"),
                    "round": np.full(len(rework), round_number + 1, dtype=np.int16),
                    "predictions": pd.array(["[]"] * len(rework), dtype="str"),
                    "reason": rework["reason"].astype("str"),
                }
            )
    assessment = Assessment(
        consolidated=consolidated,
        rework=rework,
        rework_round=rework_round,
        annotator_scores=people,
        site_scores=sites,
        excluded=excluded,
        alpha=alpha,
        alpha_needed=needed,
        rework_site=rework_site,
        eligible_sites=eligible,
    )
    return assessment, notes


@task(
    name="assess answers",
    task_run_name="assess answers of {work_order.id} round {round_number}",
    cache_policy=NO_CACHE,
)
def assess(work_order: WorkOrder, inputs: QAInputs, round_number: int) -> Assessment:
    """:func:`assess_round`, with its warnings in the flow log."""
    logger = get_run_logger()
    assessment, notes = assess_round(work_order, inputs, round_number)
    for note in notes:
        logger.warning(note)
    if work_order.task_type not in CLASSIFICATION:
        logger.info(
            "%s: %s answers are compared by equality of their normalised value; without one (object "
            "detection) annotators are not scored on gold and never excluded.",
            work_order.id,
            work_order.task_type.value,
        )
    return assessment


# --- Tables and the registry -------------------------------------------------------------------------


def _scores_table(scores: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(scores.reset_index(), preserve_index=False).replace_schema_metadata(None)


@task(
    name="write qa tables",
    task_run_name="write qa tables of {work_order.id} round {round_number}",
    cache_policy=NO_CACHE,
)
def write_tables(work_order: WorkOrder, round_number: int, assessment: Assessment) -> Written:
    """consolidated.parquet, the score tables and rework.parquet of the round (same input, same bytes)."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    r = _round(round_number)
    consolidated = pa.Table.from_pandas(
        assessment.consolidated.loc[:, CONSOLIDATED.names], schema=CONSOLIDATED, preserve_index=False
    ).replace_schema_metadata(None)
    results_uri = ws.uri("qa", r, "consolidated.parquet")
    write_table(store, results_uri, consolidated)
    write_table(store, ws.uri("qa", r, "annotator_scores.parquet"), _scores_table(assessment.annotator_scores))
    write_table(store, ws.uri("qa", r, "site_scores.parquet"), _scores_table(assessment.site_scores))
    rework_uri = ws.uri("qa", r, "rework.parquet")
    rework = pa.Table.from_pandas(
        assessment.rework_round.loc[:, REWORK.names], schema=REWORK, preserve_index=False
    ).replace_schema_metadata(None)
    write_table(store, rework_uri, rework)
    counts = reason_counts(assessment.rework) if len(assessment.rework) else None
    logger.info(
        "%s round %d: %d consolidated items at %s; %d to rework%s%s.",
        work_order.id,
        round_number,
        consolidated.num_rows,
        results_uri,
        rework.num_rows,
        f" at {assessment.rework_site}" if assessment.rework_site else "",
        " (" + ", ".join(f"{k}: {v}" for k, v in counts.items() if v) + ")" if counts is not None else "",
    )
    return Written(results_uri=results_uri, rework_uri=rework_uri)


@task(name="record site quality", task_run_name="record site quality of {work_order.id}", cache_policy=NO_CACHE)
def record_site_quality(work_order: WorkOrder, site_scores: pd.DataFrame, registry_uri: str) -> dict[str, float]:
    """Write each site's gold accuracy of this round into the partner registry (allocation reads it).

    Only sites with at least ``MIN_GOLD_ANSWERS`` gold answers; the registry is written only when a value
    changes, from its parsed form (YAML comments are not kept).
    """
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    registry = load_registry(store, registry_uri)
    measured = {
        str(site): round(float(row["gold_accuracy"]), 4)
        for site, row in site_scores.iterrows()
        if int(row["n_gold"]) >= MIN_GOLD_ANSWERS and not math.isnan(float(row["gold_accuracy"]))
    }
    known = {s.id for s in registry.sites}
    missing = sorted(set(measured) - known)
    if missing:
        logger.warning(
            "%s: site(s) %s are not in the partner registry %s: their gold accuracy is not recorded.",
            work_order.id,
            ", ".join(missing),
            registry_uri,
        )
    changed = {s: v for s, v in measured.items() if s in known and registry.site(s).gold_accuracy != v}
    thin = sorted(str(s) for s in site_scores.index if str(s) not in measured)
    if changed:
        sites = [
            s.model_copy(update={"gold_accuracy": changed[s.id]}) if s.id in changed else s for s in registry.sites
        ]
        store.put_bytes(
            *parse_uri(registry_uri),
            registry.model_copy(update={"sites": sites}).to_yaml().encode("utf-8"),
            content_type="application/yaml",
        )
    recorded = {s: v for s, v in measured.items() if s in known}
    logger.info(
        "%s: partner registry %s: gold_accuracy %s%s%s.",
        work_order.id,
        registry_uri,
        ", ".join(f"{s} {v:.1%}" for s, v in sorted(recorded.items())) or "not updated",
        " (unchanged)" if recorded and not changed else "",
        f"; too few gold answers (< {MIN_GOLD_ANSWERS}) to record {', '.join(thin)}" if thin else "",
    )
    return recorded


# --- Validation ------------------------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    """Plain JSON values: NaN and infinities as null, numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _agreement_gate(work_order: WorkOrder, assessment: Assessment) -> ExpectationOutcome | None:
    """The check for an alpha that is NaN (see the module doc); None when alpha was measured."""
    if not math.isnan(assessment.alpha):
        return None
    if work_order.task_type not in CLASSIFICATION:
        success, why = True, "no agreement measure for this task type: disagreement shows in confidence"
    elif not assessment.alpha_needed:
        success, why = True, "not measurable: no item has two answers that count"
    else:
        success, why = (
            False,
            "not measurable although items have two or more answers: every answer has the same label, so "
            "agreement cannot be told from annotators all clicking the same choice",
        )
    return ExpectationOutcome(
        name=AGREEMENT_GATE, frame="quality", success=success, observed_value=None, description=why
    )


@task(
    name="validate output",
    task_run_name="validate output of {work_order.id} round {round_number}",
    cache_policy=NO_CACHE,
)
def validate(work_order: WorkOrder, round_number: int, assessment: Assessment, accepted: pa.Array) -> Validated:
    """Great Expectations on the round's output; Data Docs and validation.json to the workspace."""
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    r = _round(round_number)
    last = round_number >= work_order.qa.max_rework_rounds
    cons = assessment.consolidated
    if last:
        # Items still unresolved after the last review round are excluded from delivery explicitly, each with
        # its reason (the delivery reconciles them); coverage holds for every other accepted item.
        checked = cons.loc[~cons["needs_rework"].to_numpy(dtype=bool)]
        waiting: list[str] = assessment.rework["item_id"].astype(str).tolist()
        if len(assessment.rework):
            logger.warning(
                "%s: last round (%d of max_rework_rounds %d): %d item(s) still need rework and are excluded from "
                "delivery with their reasons (%s).",
                work_order.id,
                round_number,
                work_order.qa.max_rework_rounds,
                len(assessment.rework),
                ws.uri("qa", r, "rework.parquet"),
            )
    else:
        checked = cons
        waiting = assessment.rework["item_id"].astype(str).tolist()
    alpha = None if math.isnan(assessment.alpha) else assessment.alpha
    with tempfile.TemporaryDirectory(prefix="kazi-qa-docs-") as tmp:
        outcome = validate_output(
            checked,
            work_order,
            docs_dir=Path(tmp),
            site_scores=judgeable(assessment.site_scores),
            alpha=alpha,
            accepted_items=accepted,
            rework_items=waiting,
            run_name=f"{work_order.id}-qa-round-{round_number}",
        )
        docs_url = publish_data_docs(
            store,
            Path(tmp),
            settings.workspace_bucket,
            ws.key("qa", r, "data-docs"),
            title=f"Output checks of {work_order.id}, QA round {round_number}",
        )
    gate = _agreement_gate(work_order, assessment)
    if gate is not None:
        outcome = replace(outcome, success=outcome.success and gate.success, results=(*outcome.results, gate))
    validation_uri = ws.uri("qa", r, "validation.json")
    write_json(
        store,
        validation_uri,
        _json_ready(
            {
                "work_order_id": work_order.id,
                "round": round_number,
                "success": outcome.success,
                "contract_version": outcome.contract_version,
                "engine": outcome.engine,
                "results": outcome.as_records(),
            }
        ),
    )
    failed = [f.name for f in outcome.failed]
    if failed:
        logger.warning("%s round %d: validation failed: %s.", work_order.id, round_number, "; ".join(failed))
    else:
        logger.info("%s round %d: all %d checks passed.", work_order.id, round_number, len(outcome.results))
    return Validated(outcome=outcome, passed=outcome.success, validation_uri=validation_uri, data_docs_url=docs_url)


# --- Report and artifacts ----------------------------------------------------------------------------


def _ls_links(projects: dict[str, dict[str, Any]]) -> dict[str, str]:
    links = {}
    for key, project in sorted(projects.items()):
        url = str(project.get("url") or "")
        if url.lower().startswith(("http://", "https://")):
            links[f"{key} ({project.get('site_id', '?')})"] = url
    return links


def build_report(
    work_order: WorkOrder, round_number: int, inputs: QAInputs, assessment: Assessment, validated: Validated
) -> QAReport:
    """The QA report's content (pure): what was measured, and what the gate judged of it.

    The report's checks come from the gate's outcome (``validated``) and from the same site scores the gate
    checked (:func:`judgeable`), so a site with too few gold answers reads "not judged yet" there too.
    """
    return collect_report(
        work_order,
        round=round_number,
        passed=validated.passed,
        items=len(inputs.accepted),
        consolidated=assessment.consolidated,
        rework=assessment.rework,
        log=inputs.log,
        site_scores=assessment.site_scores,
        judged_sites=judgeable(assessment.site_scores),
        min_gold_answers=MIN_GOLD_ANSWERS,
        rework_site=assessment.rework_site,
        annotator_scores=assessment.annotator_scores,
        excluded=assessment.excluded,
        alpha=assessment.alpha,
        gold=inputs.gold if work_order.task_type in CLASSIFICATION else None,
        validation=validated.outcome,
        data_docs_url=validated.data_docs_url,
        label_studio_projects=_ls_links(inputs.projects),
        progress=site_progress(inputs.assignments, inputs.log) if not inputs.assignments.empty else None,
    )


@task(
    name="publish qa report",
    task_run_name="publish qa report of {work_order.id} round {round_number}",
    cache_policy=NO_CACHE,
)
def publish_report(
    work_order: WorkOrder, round_number: int, inputs: QAInputs, assessment: Assessment, validated: Validated
) -> tuple[str, str]:
    """The QA report at ``qa/round=<r>/report/index.html`` and the Prefect artifacts; (presigned URL, key)."""
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    report = build_report(work_order, round_number, inputs, assessment, validated)
    key = ws.key("qa", _round(round_number), "report", "index.html")
    store.put_bytes(
        settings.workspace_bucket,
        key,
        render_qa_report(report).encode("utf-8"),
        content_type="text/html; charset=utf-8",
    )
    url = store.presign_get(settings.workspace_bucket, key)

    create_markdown_artifact(
        key=f"{work_order.id}-qa",
        markdown=render_qa_markdown(report),
        description=f"QA of {work_order.id}, round {round_number}",
    )
    judged = judgeable(assessment.site_scores)
    site_rows = _json_ready(
        [
            {"site_id": str(site), **row, "gold_accuracy_judged": judged.at[site, "gold_accuracy"]}
            for site, row in assessment.site_scores.to_dict("index").items()
        ]
    )
    create_table_artifact(
        key=f"{work_order.id}-qa-sites",
        table=site_rows,
        description=(
            f"Partner sites' scores in {work_order.id} round {round_number} (answers that count); "
            "gold_accuracy_judged is empty where the gate does not judge a site yet "
            f"(< {MIN_GOLD_ANSWERS} gold answers)"
        ),
    )
    create_table_artifact(
        key=f"{work_order.id}-qa-validation",
        table=_json_ready(validated.outcome.as_records()),
        description=f"Output checks of {work_order.id} round {round_number}",
    )
    create_link_artifact(
        key=f"{work_order.id}-qa-report",
        link=url,
        link_text=f"QA report of {work_order.id}, round {round_number}",
        description="One page for the QA lead: verdict, sites, annotators, agreement, rework (link expires)",
    )
    create_link_artifact(
        key=f"{work_order.id}-qa-data-docs",
        link=validated.data_docs_url,
        link_text=f"Great Expectations Data Docs of {work_order.id}, round {round_number}",
        description="Every output check in detail (link expires)",
    )
    return url, key


@task(
    name="write qa result",
    task_run_name="write qa result of {work_order.id} round {round_number}",
    cache_policy=NO_CACHE,
)
def write_result(
    work_order: WorkOrder,
    round_number: int,
    inputs: QAInputs,
    assessment: Assessment,
    written: Written,
    validated: Validated,
    report: tuple[str, str],
) -> QAResult:
    """``qa/round=<r>/result.json``, then ``qa/result.json`` (the latest round), last."""
    settings = load_settings()
    store = ObjectStore(settings)
    ws = workspace(settings, work_order)
    scores = assessment.site_scores
    n_gold = scores["n_gold"].to_numpy(dtype=np.float64) if len(scores) else np.zeros(0)
    pooled = None
    if n_gold.sum() > 0:
        correct = np.nan_to_num(scores["gold_accuracy"].to_numpy(dtype=np.float64)) * n_gold
        pooled = float(correct.sum() / n_gold.sum())
    result = QAResult(
        work_order_id=work_order.id,
        round_number=round_number,
        results_uri=written.results_uri,
        report_uri=report[0],
        report_key=report[1],
        validation_uri=validated.validation_uri,
        data_docs_uri=validated.data_docs_url,
        passed=validated.passed,
        items=len(inputs.accepted),
        rework_items=len(assessment.rework),
        rework_uri=written.rework_uri,
        excluded_annotators=sorted(assessment.excluded),
        agreement=None if math.isnan(assessment.alpha) else assessment.alpha,
        gold_accuracy=pooled,
    )
    write_model(store, ws.uri("qa", _round(round_number), "result.json"), result)
    write_model(store, ws.uri("qa", "result.json"), result)
    return result


# --- The flow --------------------------------------------------------------------------------------


@flow(name="qa", flow_run_name="{work_order.id} / qa round {round_number}")
def qa_flow(
    work_order: WorkOrder,
    annotate: AnnotateResult | None = None,
    round_number: int = 0,
    registry_uri: str | None = None,
) -> QAResult:
    """Consolidate, score, validate and report one QA round of a work order; pick the items to rework.

    Args:
        work_order: The work order.
        annotate: Annotate's result (where the log is); read from the workspace when missing.
        round_number: 0 for the first pass, then one per rework round.
        registry_uri: The partner registry; the workspace's ``registry/partner_sites.yaml`` when missing.
    """
    inputs = load_inputs(work_order, annotate, round_number, registry_uri)
    assessment = assess(work_order, inputs, round_number)
    written = write_tables(work_order, round_number, assessment)
    record_site_quality(work_order, assessment.site_scores, inputs.registry_uri)
    validated = validate(work_order, round_number, assessment, inputs.accepted)
    report = publish_report(work_order, round_number, inputs, assessment, validated)
    return write_result(work_order, round_number, inputs, assessment, written, validated, report)


tune_gc_after_imports()  # this module's imports are done: see flows.core.startup
