"""Tested as a person would use it: a work order started from the Prefect UI, its QA report and Data Docs.

Headless Chromium (Debian's) driven by Playwright: open the Prefect UI, find the work-order deployment,
start a run through its parameter form, wait for it to finish, open the QA report and the Data Docs
linked from the run, and save screenshots of each under ``.state/screenshots/``. A simulated workforce
with spammers answers the tasks in Label Studio meanwhile, as in ``make demo``; the test ends by checking
what the whole work order left behind (spammers excluded, a review round, a verified delivery).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.browser_pages import UI_TIMEOUT_MS, PrefectUI, launch_chromium, new_page, numbered, screenshot

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / ".state" / "screenshots"
ITEMS = 30
#: The run takes one to three minutes here, depending on the load; past this the test fails, never hangs.
RUN_DEADLINE_SECONDS = 360
SUBMIT_ATTEMPTS = 3
#: Tall enough for a run's header, graph and the list under its tabs in one screenshot.
RUN_PAGE_HEIGHT = 1700
ARTIFACTS_PAGE_HEIGHT = 1150


def _submit(ui: PrefectUI, run_name: str) -> str:
    """Submit the form as a person would: again when the UI reports a failure, a few times at most.

    The test stack's Prefect server keeps its database in SQLite; under the load of concurrent tests it
    can answer 503 ("database is locked"), which Prefect's Python client retries and the UI does not.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    for _attempt in range(SUBMIT_ATTEMPTS):
        flow_run_id = ui.submit(run_name)
        if flow_run_id is not None:
            return flow_run_id
        with get_client(sync_client=True) as client:
            made = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])))
        if made:
            # It was created after all: submitting again would start the work order twice.
            return str(made[0].id)
        print(f"the Prefect UI could not create the flow run {run_name!r}; submitting again")
        ui.page.wait_for_timeout(2000)
    pytest.fail(f"the Prefect UI failed to create the flow run {run_name!r} {SUBMIT_ATTEMPTS} times")


def _wait_until_final(flow_run_id: str, workforce: Any, deadline_seconds: float) -> tuple[str, str]:
    """Poll the run until its state is final (returns its type and message); a pause at the QA gate, a
    failed workforce or the deadline fails the test."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + deadline_seconds
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(uuid.UUID(flow_run_id)).state
            if state is not None and state.is_final():
                return state.type.value, state.message or ""
            if state is not None and state.is_paused():
                pytest.fail(
                    f"flow run {flow_run_id} paused at the QA gate: validation failed and it waits for a QA lead. "
                    "With the work order's thresholds it should pass; read its QA report."
                )
            if workforce.error is not None:
                raise workforce.error
            if time.monotonic() > deadline:
                pytest.fail(
                    f"flow run {flow_run_id} still {state.type.value if state else 'without a state'} after "
                    f"{deadline_seconds:.0f} s ({workforce.answers} simulated answers)"
                )
            time.sleep(2)


def _cancel_unless_final(flow_run_id: str) -> None:
    """A run the test gave up on must not keep a work order going on the shared stack."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(flow_run_id)).state
        if state is None or not state.is_final():
            client.set_flow_run_state(uuid.UUID(flow_run_id), Cancelling(), force=True)


def _images_load(page: Page) -> bool:
    """Every image on the page loaded (a chart that did not is a broken picture in the report)."""
    return bool(page.evaluate("() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))


def test_work_order_started_from_the_prefect_ui_shows_its_qa_report_and_data_docs(
    stack_settings, store, gate_run
) -> None:
    # gate_run: the approval test's work order, started now so that it goes through the worker beside
    # this one (see tests/conftest.py); this test does not look at it.
    from flows.core.models import TaskType
    from flows.run import ensure_deployments
    from simulation.demo import Workforce, prepare_work_order

    ensure_deployments(stack_settings)
    wo_id = f"ui-{uuid.uuid4().hex[:8]}"
    registry, dataset, work_order = prepare_work_order(
        stack_settings, store, TaskType.IMAGE_CLASSIFICATION, ITEMS, wo_id, seed=23
    )
    parameters = {"work_order": work_order.model_dump(mode="json"), "sync_interval_seconds": 2, "max_wait_seconds": 240}
    run_name = f"{wo_id} / work order"
    base_url = stack_settings.prefect_api_url.removesuffix("/api")

    workforce = Workforce(stack_settings, registry, dataset, work_order)
    workforce.start()
    flow_run_id: str | None = None
    try:
        with sync_playwright() as playwright:
            try:
                browser = launch_chromium(playwright)
            except FileNotFoundError as exc:
                pytest.fail(str(exc))
            page = new_page(browser)
            ui = PrefectUI(page, base_url)
            # Assertions wait as long as page steps do: the SPA is slower while other tests load the stack.
            expect.set_options(timeout=UI_TIMEOUT_MS)
            try:
                # A data engineer finds the deployment and starts it from its parameter form.
                ui.open_deployment("work-order")
                ui.open_custom_run_form()
                ui.fill_parameters_as_json(parameters, run_name=run_name)
                screenshot(page, SCREENSHOTS, "01-run-form.png", height=ui.form_height())
                flow_run_id = _submit(ui, run_name)

                final, message = _wait_until_final(flow_run_id, workforce, RUN_DEADLINE_SECONDS)
                assert final == "COMPLETED", f"flow run {base_url}/runs/flow-run/{flow_run_id} ended {final}: {message}"

                # The finished run: every stage a completed subflow run, delivery last.
                ui.open_flow_run(flow_run_id)
                expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
                ui.open_tab("Subflow Runs")
                expect(page.get_by_role("link", name=f"{wo_id} / deliver", exact=True)).to_be_visible()
                screenshot(page, SCREENSHOTS, "02-finished-run.png", height=RUN_PAGE_HEIGHT)

                # The QA lead's links are artifacts of the last QA round.
                ui.open_subflow_run(numbered(f"{wo_id} / qa round"))
                ui.open_tab("Artifacts")
                expect(page.get_by_text(f"{wo_id}-qa-data-docs", exact=True)).to_be_visible()
                screenshot(page, SCREENSHOTS, "02b-qa-run-artifacts.png", height=ARTIFACTS_PAGE_HEIGHT)

                ui.open_artifact(f"{wo_id}-qa-report")
                report = ui.follow_link_to_new_tab(numbered(f"QA report of {wo_id}, round"))
                expect(report.get_by_role("heading", name=f"Quality report: work order {wo_id}")).to_be_visible()
                screenshot(report, SCREENSHOTS, "03-qa-report.png", full_page=True)
                expect(report.get_by_text("PASSED", exact=True)).to_be_visible()
                for site in ("nairobi", "dadaab"):
                    expect(report.get_by_role("cell", name=site, exact=True).first).to_be_visible()
                assert _images_load(report), "a chart of the QA report did not load"
                report.close()

                page.go_back()
                ui.open_tab("Artifacts")
                ui.open_artifact(f"{wo_id}-qa-data-docs")
                docs = ui.follow_link_to_new_tab(numbered(f"Great Expectations Data Docs of {wo_id}, round"))
                shot = screenshot(docs, SCREENSHOTS, "04-data-docs.png", full_page=True)
                # What a reader sees: every validation result of the round with its verdict, linked.
                unreadable = f"the Data Docs linked from the run do not list the output checks' result: {shot}"
                body = expect(docs.locator("body"), message=unreadable)
                body.to_contain_text(f"Output checks of {wo_id}", use_inner_text=True)
                body.to_contain_text(re.compile(r"passed\s+0 of \d+"), use_inner_text=True)
                # ... and one click away, each check of the output suite with what was found.
                docs.get_by_role("link", name=f"{wo_id}.output", exact=True).first.click()
                expect(docs.get_by_text(re.compile(r"Status:\W*Succeeded"))).to_be_visible()
                expect(docs.get_by_text("no two rows share an item_id")).to_be_visible()
                screenshot(docs, SCREENSHOTS, "05-data-docs-output.png", full_page=True)
                docs.close()
            except BaseException:
                with contextlib.suppress(Exception):  # the original error matters more than this picture
                    screenshot(page, SCREENSHOTS, "failure.png")
                raise
            finally:
                browser.close()
    finally:
        workforce.stop.set()
        workforce.join(timeout=30)
        if flow_run_id is not None:
            _cancel_unless_final(flow_run_id)
    assert workforce.error is None
    assert_work_order_outcome(stack_settings, store, wo_id)


def assert_work_order_outcome(settings: Any, store: Any, wo_id: str) -> None:
    """What the run left behind: the spammers flagged and their items reviewed, a passing QA, a delivery whose
    every file verifies, and the run's own progress bar and summary."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.core.models import DeliveryResult, QAResult
    from flows.core.s3 import parse_uri
    from flows.core.workspace import read_json, read_model, read_table, workspace
    from flows.deliver.manifest import verify

    ws = workspace(settings, wo_id)
    qa = read_model(store, ws.uri("qa", "result.json"), QAResult)
    assert qa.passed
    # The simulated workforce has spammers: they were flagged, their answers excluded, and the items they
    # touched went to a review round.
    round0 = read_model(store, ws.uri("qa", "round=0", "result.json"), QAResult)
    assert round0.excluded_annotators
    first = read_table(store, ws.uri("qa", "round=0", "rework.parquet")).to_pandas()
    assert first["reason"].str.contains("excluded_annotator").any()
    review = read_table(store, ws.uri("split", "round=1", "assignments.parquet"))
    assert set(review.column("item_id").to_pylist()) == set(first["item_id"])
    # Every delivered file is complete and its checksum verifies.
    delivery = read_model(store, ws.uri("deliver", "result.json"), DeliveryResult)
    assert delivery.delivered_items > 0
    bucket, key = parse_uri(delivery.manifest_uri)
    manifest = read_json(store, delivery.manifest_uri)
    prefix = key.rsplit("/", 1)[0]
    assert verify(manifest, lambda name: store.get_bytes(bucket, f"{prefix}/{name}")) == []
    # The run ends with its progress at 100% and a summary linking every report.
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{wo_id}-stages", f"{wo_id}-summary"]))
        )
    by_key = {a.key: a for a in found}
    assert by_key[f"{wo_id}-stages"].data == 100.0
    summary = str(by_key[f"{wo_id}-summary"].data)
    assert f"## {wo_id}: delivered {delivery.delivered_items:,} items" in summary
    assert "| QA report | [open](http" in summary and "| Impact report | [open](http" in summary
    assert delivery.manifest_uri in summary
