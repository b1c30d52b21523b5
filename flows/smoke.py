"""A smoke flow: proves S3 and Label Studio answer, through the same adapters every stage uses."""

from __future__ import annotations

import uuid

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from flows.core import prefect_fixes  # noqa: F401  (applied on import: see the module)
from flows.core.labelstudio import LabelStudioClient, ProjectSpec
from flows.core.s3 import ObjectStore
from flows.core.settings import load_settings

SMOKE_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="label" toName="text"><Choice value="ok"/><Choice value="not ok"/></Choices>
</View>"""


class SmokeResult(BaseModel):
    s3_uri: str
    sha256: str
    label_studio_project: int
    label_studio_url: str
    tasks: int


@task(name="s3 round trip")
def s3_round_trip(run_id: str) -> tuple[str, str]:
    logger = get_run_logger()
    settings = load_settings()
    store = ObjectStore(settings)
    store.check()
    key = f"smoke/{run_id}.txt"
    payload = f"kazi smoke {run_id}".encode()
    info = store.put_bytes(settings.workspace_bucket, key, payload)
    back = store.get_bytes(settings.workspace_bucket, key)
    if back != payload:
        raise RuntimeError(f"S3 returned different bytes for {info.uri}")
    logger.info("Wrote and read back %s (sha256 %s)", info.uri, info.sha256)
    return info.uri, info.sha256 or ""


@task(name="label studio project")
def label_studio_project() -> tuple[int, int]:
    logger = get_run_logger()
    ls = LabelStudioClient.from_settings(load_settings())
    ls.check()
    project_id, created = ls.ensure_project(
        ProjectSpec(key="kazi-smoke", title="Kazi smoke test", label_config=SMOKE_CONFIG)
    )
    imported = ls.import_missing(project_id, [{"data": {"text": "Is the stack up?", "kazi_task_key": "smoke-1"}}])
    tasks = len(ls.task_keys(project_id))
    logger.info(
        "Label Studio project %s %s at %s (%d task, %d new)",
        project_id,
        "created" if created else "reused",
        ls.url,
        tasks,
        imported,
    )
    return project_id, tasks


@flow(name="kazi-smoke", log_prints=True)
def smoke(run_id: str | None = None) -> SmokeResult:
    """Write to and read from S3, and find-or-create a Label Studio project."""
    settings = load_settings()
    run_id = run_id or uuid.uuid4().hex[:12]
    uri, digest = s3_round_trip(run_id)
    project_id, tasks = label_studio_project()
    result = SmokeResult(
        s3_uri=uri,
        sha256=digest,
        label_studio_project=project_id,
        label_studio_url=f"{settings.label_studio_url}/projects/{project_id}",
        tasks=tasks,
    )
    create_markdown_artifact(
        key="kazi-smoke",
        markdown=f"## Kazi smoke test\n\n- S3 object: `{uri}` (sha256 `{digest[:16]}…`)\n"
        f"- Label Studio project: [{project_id}]({result.label_studio_url}) with {tasks} task(s)\n",
        description="Kazi smoke test",
    )
    return result
