"""Prefect deployments of Kazi's flows, served by workers of one work pool.

Each deployment points at this checkout (``from_source`` with a local path), so a process worker on
this machine runs the code as it is. On more machines, check out the same commit at the same path
(or switch ``source`` to the git URL) and start ``prefect worker start --pool <KAZI_WORK_POOL>`` there
with the same ``KAZI_*`` environment; Prefect hands each flow run to one free worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.core.settings import REPO_ROOT, Settings


@dataclass(frozen=True)
class DeploymentSpec:
    entrypoint: str
    name: str
    description: str
    tags: tuple[str, ...] = ("kazi",)


DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        "flows/work_order.py:work_order_flow",
        "work-order",
        "Run a work order end to end: ingest, split, annotate, QA with rework, deliver.",
    ),
    DeploymentSpec("flows/ingest/flow.py:ingest_flow", "ingest", "Ingest a work order's source data."),
    DeploymentSpec("flows/split/flow.py:split_flow", "split", "Allocate items to partner sites; create projects."),
    DeploymentSpec("flows/annotate/flow.py:annotate_flow", "annotate", "Sync annotations, progress and SLA moves."),
    DeploymentSpec("flows/qa/flow.py:qa_flow", "qa", "Consolidate, score, validate and report quality."),
    DeploymentSpec("flows/deliver/flow.py:deliver_flow", "deliver", "Export the delivery and the impact report."),
    DeploymentSpec("flows/smoke.py:smoke", "smoke", "Check that S3 and Label Studio answer."),
)


def register(settings: Settings) -> list[str]:
    """Create or update every deployment; returns ``flow-name/deployment-name`` of each."""
    from prefect import flow

    names = []
    for spec in DEPLOYMENTS:
        loaded = flow.from_source(source=str(REPO_ROOT), entrypoint=spec.entrypoint)
        loaded.deploy(  # type: ignore[union-attr]
            name=spec.name,
            work_pool_name=settings.work_pool,
            description=spec.description,
            tags=list(spec.tags),
            print_next_steps=False,
            ignore_warnings=True,
        )
        names.append(f"{loaded.name}/{spec.name}")  # type: ignore[union-attr]
    return names
