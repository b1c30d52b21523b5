"""The Label Studio adapter: a narrow wrapper over ``label-studio-sdk``.

Kazi uses few of the SDK's calls on purpose: find-or-create a project by Kazi's own key, import tasks
that are not there yet, export a project, delete a project. Label Studio's import does not
deduplicate, so :meth:`LabelStudioClient.import_missing` asks the project which task keys it already
holds and imports only the rest: a rerun after a crash creates each task exactly once.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from pydantic import SecretStr

from flows.core.models import PartnerSite
from flows.core.schemas import TASK_KEY
from flows.core.settings import Settings

_KEY_MARKER = re.compile(r"\[kazi:([^\]]+)\]")
IMPORT_CHUNK = 5_000


def _loads(data: bytes) -> Any:
    """``json.loads`` with the cyclic garbage collector paused, then put back as it was.

    An export of 20,000 tasks is millions of new dicts and lists, none of them cyclic; collections that the
    allocations trigger mid-parse rescan them all and make the parse 2-3x slower.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(data)
    finally:
        if enabled:
            gc.enable()


class LabelStudioError(RuntimeError):
    """A Label Studio call failed; the message names the instance (and site) and what to do."""


class SecretNotFound(LabelStudioError):
    pass


def resolve_secret(settings: Settings, name: str) -> SecretStr:
    """A named secret: ``KAZI_SECRETS__<NAME>`` first, then a Prefect Secret block of that name."""
    found = settings.secret(name)
    if found is not None:
        return found
    block_name = name.replace("_", "-")
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(block_name).get()  # type: ignore[union-attr]
    except Exception:
        raise SecretNotFound(
            f"Secret {name!r} not found: set KAZI_SECRETS__{name.upper()} or create a Prefect Secret block "
            f"named {block_name!r}."
        ) from None
    return SecretStr(str(value))


@dataclass(frozen=True)
class ProjectSpec:
    """What Kazi asks of a Label Studio project."""

    key: str
    title: str
    label_config: str
    instructions: str = ""
    maximum_annotations: int = 1

    @property
    def description(self) -> str:
        return f"{self.title} [kazi:{self.key}]"


@dataclass(frozen=True)
class Project:
    id: int
    key: str | None
    title: str
    task_count: int


class LabelStudioClient:
    """One Label Studio instance, as seen with one API token."""

    def __init__(self, url: str, token: SecretStr, *, site_id: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.site_id = site_id
        self._token = token
        self._sdk = LabelStudio(base_url=self.url, api_key=token.get_secret_value(), timeout=timeout)

    @classmethod
    def for_site(cls, site: PartnerSite, settings: Settings) -> LabelStudioClient:
        return cls(site.label_studio.url, resolve_secret(settings, site.label_studio.token_secret), site_id=site.id)

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStudioClient:
        if not settings.label_studio_url or settings.label_studio_token is None:
            raise LabelStudioError(
                "Label Studio is not configured: set KAZI_LABEL_STUDIO_URL and KAZI_LABEL_STUDIO_TOKEN."
            )
        return cls(settings.label_studio_url, settings.label_studio_token)

    @property
    def _who(self) -> str:
        return f"Label Studio at {self.url}" + (f" (site {self.site_id})" if self.site_id else "")

    def _fail(self, what: str, exc: Exception) -> LabelStudioError:
        if isinstance(exc, ApiError):
            if exc.status_code == 401:
                return LabelStudioError(
                    f"{self._who} refused the API token while trying to {what}: check the site's token secret "
                    "(KAZI_LABEL_STUDIO_TOKEN or KAZI_SECRETS__<name>)."
                )
            return LabelStudioError(f"{self._who} answered {exc.status_code} while trying to {what}: {exc.body}")
        if isinstance(exc, httpx.HTTPError):
            return LabelStudioError(
                f"{self._who} is not reachable while trying to {what} ({type(exc).__name__}): is it running? "
                "For the local stack run `kazi stack up`."
            )
        return LabelStudioError(f"{self._who} failed to {what}: {exc}")

    # -- health ------------------------------------------------------------------------------
    def check(self) -> None:
        """Fail fast with one clear line when the instance is down or the token is wrong."""
        try:
            self._sdk.users.whoami()
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail("check the connection", exc) from None

    # -- projects ----------------------------------------------------------------------------
    def projects(self) -> list[Project]:
        try:
            out = []
            for p in self._sdk.projects.list(page_size=500):  # type: ignore[var-annotated]
                match = _KEY_MARKER.search(p.description or "")
                out.append(Project(p.id or 0, match.group(1) if match else None, p.title or "", p.task_number or 0))
            return out
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail("list projects", exc) from None

    def find_project(self, key: str) -> Project | None:
        for p in self.projects():
            if p.key == key:
                return p
        return None

    def ensure_project(self, spec: ProjectSpec, known: dict[str, Project] | None = None) -> tuple[int, bool]:
        """Find the project with Kazi key ``spec.key`` or create it; returns (id, created)."""
        existing = (known or {}).get(spec.key) if known is not None else self.find_project(spec.key)
        if existing is not None:
            return existing.id, False
        try:
            project = self._sdk.projects.create(
                title=spec.title[:50],
                description=spec.description,
                label_config=spec.label_config,
                expert_instruction=spec.instructions,
                show_instruction=bool(spec.instructions),
                maximum_annotations=spec.maximum_annotations,
                show_skip_button=True,
                enable_empty_annotation=False,
            )
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail(f"create project {spec.key}", exc) from None
        assert project.id is not None
        return project.id, True

    def delete_project(self, project_id: int) -> None:
        try:
            self._sdk.projects.delete(id=project_id)
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail(f"delete project {project_id}", exc) from None

    # -- tasks -------------------------------------------------------------------------------
    def export(self, project_id: int, *, all_tasks: bool = False, export_type: str = "JSON") -> list[dict[str, Any]]:
        """The project's tasks (with annotations) through the export API in one streamed call."""
        try:
            chunks = self._sdk.projects.exports.download_sync(
                id=project_id, export_type=export_type, download_all_tasks=all_tasks
            )
            data = b"".join(chunks)
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail(f"export project {project_id}", exc) from None
        result: list[dict[str, Any]] = _loads(data) if data else []
        return result

    def task_keys(self, project_id: int) -> set[str]:
        """Kazi task keys already present in the project."""
        return {t["data"][TASK_KEY] for t in self.export(project_id, all_tasks=True) if TASK_KEY in t.get("data", {})}

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> int:
        try:
            resp = self._sdk.projects.import_tasks(id=project_id, request=list(tasks))  # type: ignore[arg-type]
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail(f"import {len(tasks)} tasks into project {project_id}", exc) from None
        return int(resp.task_count or 0)

    def import_tasks_json(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> int:
        """:meth:`import_tasks` with the body serialised here: same endpoint, same auth, same result.

        The SDK walks every task through its type-annotation converter before encoding it, about a fifth of
        an import's time for plain ``{"data": {...}}`` dicts, which go out unchanged anyway. The request
        still goes through the SDK's own HTTP client, so its auth headers (legacy or JWT token) apply.
        """
        what = f"import {len(tasks)} tasks into project {project_id}"
        body = json.dumps(list(tasks), ensure_ascii=False, separators=(",", ":")).encode()
        try:
            resp = self._sdk._client_wrapper.httpx_client.request(
                f"api/projects/{project_id}/import",
                method="POST",
                content=body,
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise self._fail(what, exc) from None
        if not 200 <= resp.status_code < 300:
            raise self._fail(what, ApiError(status_code=resp.status_code, headers=dict(resp.headers), body=resp.text))
        return int(resp.json().get("task_count") or 0)

    def import_missing(
        self,
        project_id: int,
        tasks: Iterable[dict[str, Any]],
        *,
        chunk: int = IMPORT_CHUNK,
        fresh: bool = False,
    ) -> int:
        """Import the tasks whose ``kazi_task_key`` the project does not hold yet; returns how many.

        Each chunk is one import call, which Label Studio commits in one transaction, so a crash
        leaves whole chunks behind and the next run imports exactly the rest. ``fresh`` skips the
        key lookup for a project this run has just created.
        """
        present = set() if fresh else self.task_keys(project_id)
        todo = [t for t in tasks if t["data"][TASK_KEY] not in present]
        imported = 0
        for i in range(0, len(todo), chunk):
            imported += self.import_tasks(project_id, todo[i : i + chunk])
        return imported
