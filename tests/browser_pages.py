"""Page helpers for the browser test: Debian's Chromium, driven by Playwright through Prefect's UI.

Selectors are the words a person reads on screen (role and visible name) wherever the UI gives them;
CSS classes only where it gives none (the icon-only menu of the parameters, the run-name input).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Playwright, ViewportSize, expect

CHROMIUM = Path("/usr/bin/chromium")
#: Playwright's own browser download does not work here: Debian's Chromium, without sandbox or GPU,
#: and without its background traffic.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}
#: Every step waits at most this long for the UI (milliseconds); the SPA renders in a few seconds.
UI_TIMEOUT_MS = 30_000
_FLOW_RUN_URL = re.compile(r"/runs/flow-run/(?P<id>[0-9a-f-]{36})")
#: A deployment's own page (not its run form, which is under it).
_DEPLOYMENT_URL = re.compile(r"/deployments/deployment/[0-9a-f-]{36}(\?|$)")
#: How long one of a deployment's run lists is watched before the other is looked at (seconds).
_LIST_SECONDS = 3.0


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless; says which command installs it when it is missing."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(
            f"{CHROMIUM} is missing: run scripts/bootstrap.sh --browser (it installs Debian's chromium)"
        )
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))


def new_page(browser: Browser) -> Page:
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


def screenshot(page: Page, directory: Path, name: str, *, full_page: bool = False, height: int | None = None) -> Path:
    """Save a PNG of the page (``height``: of a taller window, for once) and print where it is."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if height:
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    try:
        page.screenshot(path=str(path), full_page=full_page)
    finally:
        if height:
            page.set_viewport_size(VIEWPORT)
    print(f"screenshot: {path}")
    return path


def exact_name(text: str) -> re.Pattern[str]:
    """An exact accessible name as a pattern; Playwright hands it to JavaScript, where "/" ends a regex."""
    return re.compile("^" + re.escape(text).replace("/", r"\/") + "$")


def numbered(text: str) -> re.Pattern[str]:
    """This text, a space and a number (as in "acme-1 / qa round 2"), as an exact accessible name."""
    return re.compile(exact_name(text).pattern.removesuffix("$") + r" \d+$")


class PrefectUI:
    """What a data engineer does in the Prefect UI, one method per step."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")

    def open_deployment(self, deployment: str) -> None:
        """From the Deployments page, search for the deployment and open it."""
        page = self.page
        page.goto(f"{self.base_url}/deployments")
        page.get_by_placeholder("Search deployments").fill(deployment)
        # The table re-renders once the search applies: wait for the one matching row (and the header).
        expect(page.get_by_role("row")).to_have_count(2)
        # The row links the deployment and its flow, here under the same name: take the deployment's.
        page.locator('a[href*="/deployments/deployment/"]').filter(has_text=exact_name(deployment)).click()
        page.wait_for_url(re.compile(r"/deployments/deployment/"))
        expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()

    def open_custom_run_form(self) -> None:
        """Run -> Custom run: the deployment's parameter form."""
        page = self.page
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_role("button", name="Custom run", exact=True).click()
        expect(page.get_by_role("heading", name="Parameters", exact=True)).to_be_visible()

    def fill_parameters_as_json(self, parameters: dict[str, Any], run_name: str) -> None:
        """Name the run, switch the parameters to JSON input and type them in."""
        page = self.page
        # The "Run Name" label is not tied to its input (its `for` names no element).
        page.locator(".flow-run-name-input input").fill(run_name)
        # The menu next to "Parameters" opens from an icon without an accessible name.
        page.locator(".flow-run-create-form-v2__header").get_by_role("button").click()
        page.get_by_role("button", name="Use JSON input", exact=True).click()
        editor = page.locator(".schema-form-property-kind-json textarea").first
        text = json.dumps(parameters, indent=2)
        editor.fill(text)
        expect(editor).to_have_value(text)

    def form_height(self) -> int:
        """Height of the whole form, for a screenshot that shows every parameter and Submit."""
        return int(self.page.evaluate("() => document.querySelector('form').scrollHeight")) + 200

    def submit(self, run_name: str) -> str | None:
        """Submit the form and open the new run from the deployment's page.

        Returns:
            The flow run's id, or None when the UI reports that creating it failed.
        """
        page = self.page
        failed = page.get_by_text("Something went wrong trying to create a flow run", exact=True)
        failures = failed.count()
        # The UI goes back to the deployment, which lists the new run (its toast is gone in seconds): under
        # "Upcoming" while it is Scheduled, under "Runs" once a worker has taken it, as a person would look.
        new_run = page.get_by_role("link", name=run_name, exact=True)
        tabs = ("Runs", "Upcoming")
        shown = 0
        page.get_by_role("button", name="Submit", exact=True).click()
        now = time.monotonic()
        deadline, switch_at = now + UI_TIMEOUT_MS / 1000, now + _LIST_SECONDS
        while time.monotonic() < deadline:
            if new_run.count():
                print(f"the deployment lists the run {run_name!r} under {tabs[shown]}")
                new_run.first.click()
                page.wait_for_url(_FLOW_RUN_URL)
                found = _FLOW_RUN_URL.search(page.url)
                assert found, page.url
                return found.group("id")
            if failed.count() > failures:
                return None
            if time.monotonic() >= switch_at and _DEPLOYMENT_URL.search(page.url):
                shown = 1 - shown
                self.open_tab(tabs[shown])
                switch_at = time.monotonic() + _LIST_SECONDS
            page.wait_for_timeout(200)
        raise TimeoutError(
            f"after Submit the UI neither listed the run {run_name!r} nor reported an error ({page.url})"
        )

    def open_flow_run(self, flow_run_id: str) -> None:
        self.page.goto(f"{self.base_url}/runs/flow-run/{flow_run_id}")

    def open_tab(self, name: str) -> None:
        """A tab of a run's page (Logs, Subflow Runs, Artifacts ...)."""
        self.page.get_by_role("tablist").get_by_text(name, exact=True).click()

    def open_subflow_run(self, name: str | re.Pattern[str]) -> None:
        """From the Subflow Runs tab, the newest run with this name (the list is newest first)."""
        pattern = name if isinstance(name, re.Pattern) else exact_name(name)
        self.page.get_by_role("link", name=pattern).first.click()
        self.page.wait_for_url(_FLOW_RUN_URL)

    def open_artifact(self, key: str) -> None:
        """From a run's Artifacts tab, the artifact card with this key."""
        page = self.page
        page.get_by_role("link").filter(has=page.get_by_text(key, exact=True)).click()
        page.wait_for_url(re.compile(r"/artifacts/artifact/"))

    def follow_link_to_new_tab(self, name: str | re.Pattern[str]) -> Page:
        """Click a link that opens in a new tab (as the artifacts' links do) and wait for the page there."""
        page = self.page
        pattern = name if isinstance(name, re.Pattern) else exact_name(name)
        with page.expect_popup() as popup:
            page.get_by_role("link", name=pattern).click()
        tab = popup.value
        tab.set_default_timeout(UI_TIMEOUT_MS)
        tab.set_viewport_size(VIEWPORT)
        tab.wait_for_load_state()
        return tab
