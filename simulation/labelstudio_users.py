"""Simulated annotators as real Label Studio users, each working with their own API token.

How people join a Label Studio 1.23 Community instance, and so how the simulation does it:

- The admin's ``POST /api/users/`` (SDK ``users.create``) makes a user *without a password*: nobody can
  log in as it, and there is no way to set one through the API (``PATCH /api/users/{id}/`` ignores a
  ``password``, and ``PATCH /api/current-user`` does not exist in the Community edition). Another user's
  API token cannot be read by the admin either.
- So each annotator signs up through the organisation's invite link (``GET /api/invite`` ->
  ``/user/signup/?token=...``), a Django form that wants the ``csrftoken`` cookie echoed as
  ``csrfmiddlewaretoken``; Label Studio sets the username to the e-mail's local part. The session is then
  logged in, and ``GET /api/current-user/token`` returns the user's own (legacy) API token.
- On a rerun the user exists: log in at ``/user/login/`` the same way (e-mail, password, CSRF) and read the
  token again. Passwords are derived from a key (by default the admin token) and the e-mail, so nothing
  needs storing.

Answering in bulk (for big benchmarks, see :meth:`simulation.workforce.SimulatedWorkforce.work_bulk`): the
Community edition has no bulk annotation endpoint, but it imports predictions in bulk
(``POST /api/projects/{id}/import/predictions``) and its Data Manager action ``predictions_to_annotations``
turns a project's predictions of one ``model_version`` into annotations owned by *the calling user*, in one
``bulk_create``. So each annotator's planned answers go in as predictions tagged with a model version of
their own, and that annotator, with their own token, converts them. Annotations made this way have no
``lead_time`` (null) and are never skips; a prediction already converted is not converted again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from pydantic import SecretStr

from flows.core.labelstudio import LabelStudioError
from simulation.answers import AnnotatorProfile, SimulatedAnswer

DEFAULT_DOMAIN = "sim.kazi.local"
#: The Data Manager action that turns predictions into annotations of the calling user.
CONVERT_ACTION = "predictions_to_annotations"
_CREATED = re.compile(r"Created (\d+) annotations")


class Account(NamedTuple):
    """A simulated annotator's Label Studio user id and own API token."""

    user_id: int
    token: SecretStr


def annotator_email(profile_id: str, domain: str = DEFAULT_DOMAIN) -> str:
    return f"{profile_id.lower()}@{domain}"


def annotator_password(key: SecretStr, email: str) -> SecretStr:
    """A stable password per user, derived from ``key``: a rerun logs in without storing anything."""
    digest = hmac.new(key.get_secret_value().encode(), email.lower().encode(), hashlib.sha256).hexdigest()
    return SecretStr(f"Kz-{digest[:32]}")


def _csrf(session: httpx.Client, path: str) -> str:
    response = session.get(path)
    response.raise_for_status()
    token = session.cookies.get("csrftoken")
    if not token:
        raise LabelStudioError(f"Label Studio at {session.base_url} set no csrftoken cookie on {path}")
    return str(token)


def _post_form(session: httpx.Client, path: str, data: Mapping[str, str]) -> httpx.Response:
    csrf = _csrf(session, path)
    return session.post(
        path,
        data={**data, "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{session.base_url}{path}"},
        follow_redirects=False,
    )


def _own_token(session: httpx.Client, email: str) -> str:
    response = session.get("/api/current-user/token")
    if response.status_code != 200:
        # A user whose token was revoked has none (Label Studio answers 500): make a new one, as the user
        # would from their account page.
        csrf = session.cookies.get("csrftoken") or ""
        response = session.post(
            "/api/current-user/reset-token/",
            headers={"X-CSRFToken": csrf, "Referer": f"{session.base_url}/user/account"},
        )
    if response.status_code not in (200, 201):
        raise LabelStudioError(f"{email} is logged in but has no API token ({response.status_code})")
    return str(response.json()["token"])


def sign_up(url: str, invite_path: str, email: str, password: SecretStr, *, timeout: float = 30.0) -> str:
    """Sign up through an invite link like a new annotator; returns the new user's API token."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as session:
        response = _post_form(session, invite_path, {"email": email, "password": password.get_secret_value()})
        if response.status_code != 302:
            detail = "the user already exists" if "already exists" in response.text else "the form was refused"
            raise LabelStudioError(f"Label Studio at {url} did not sign up {email}: {detail}")
        return _own_token(session, email)


def log_in(url: str, email: str, password: SecretStr, *, timeout: float = 30.0) -> str:
    """Log in with e-mail and password like a person; returns the user's API token."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout) as session:
        response = _post_form(session, "/user/login/", {"email": email, "password": password.get_secret_value()})
        if response.status_code != 302:
            raise LabelStudioError(
                f"Label Studio at {url} refused the login of {email}: the user exists with another password "
                "(made by hand, or with another password key?). Delete the user or pass its password key."
            )
        return _own_token(session, email)


def _admin(url: str, admin_token: SecretStr, timeout: float) -> httpx.Client:
    return httpx.Client(
        base_url=url.rstrip("/"),
        headers={"Authorization": f"Token {admin_token.get_secret_value()}"},
        timeout=timeout,
    )


def _checked(response: httpx.Response, what: str) -> Any:
    if response.status_code == 401:
        raise LabelStudioError(f"Label Studio at {response.url.host}:{response.url.port} refused the admin token")
    if response.status_code >= 400:
        raise LabelStudioError(f"Label Studio answered {response.status_code} to {what}: {response.text[:300]}")
    return response.json() if response.content else None


def ensure_annotators(
    url: str,
    admin_token: SecretStr,
    profiles: Iterable[AnnotatorProfile],
    *,
    domain: str = DEFAULT_DOMAIN,
    password_key: SecretStr | None = None,
    timeout: float = 30.0,
) -> dict[str, Account]:
    """A Label Studio user and API token per profile: signed up once, logged in on every later run.

    Args:
        url: The Label Studio instance (one partner site's).
        admin_token: The instance owner's API token, for the invite link and the user list.
        profiles: The annotators working on this instance.
        domain: E-mail domain; the e-mail is ``<profile id>@<domain>``.
        password_key: Key the passwords derive from; the admin token when omitted.
        timeout: Seconds per HTTP call.

    Returns:
        ``{profile_id: Account(user_id, token)}``.

    Raises:
        LabelStudioError: the instance is unreachable, refuses the admin token, or a user exists whose
            password does not derive from ``password_key``.
    """
    key = password_key or admin_token
    try:
        with _admin(url, admin_token, timeout) as admin:
            users = _checked(admin.get("/api/users/"), "list users")
            by_email = {str(u["email"]).lower(): int(u["id"]) for u in users}
            invite_path: str | None = None
            accounts: dict[str, Account] = {}
            for profile in profiles:
                email = annotator_email(profile.id, domain)
                password = annotator_password(key, email)
                if email in by_email:
                    token = log_in(url, email, password, timeout=timeout)
                else:
                    if invite_path is None:
                        invite_path = str(_checked(admin.get("/api/invite"), "get the invite link")["invite_url"])
                    try:
                        token = sign_up(url, invite_path, email, password, timeout=timeout)
                    except LabelStudioError as refused:
                        # Signed up since the list was read, by a workforce beside this one (Label Studio
                        # then refuses the form): log in as that user; anything else is the refusal.
                        try:
                            token = log_in(url, email, password, timeout=timeout)
                        except LabelStudioError:
                            raise refused from None
                    by_email[email] = _whoami(url, token, timeout)["id"]
                    _checked(
                        admin.patch(
                            f"/api/users/{by_email[email]}/",
                            json={"first_name": profile.site_id, "last_name": profile.id},
                        ),
                        f"name user {email}",
                    )
                accounts[profile.id] = Account(by_email[email], SecretStr(token))
            return accounts
    except httpx.HTTPError as exc:
        raise LabelStudioError(
            f"Label Studio at {url} is not reachable ({type(exc).__name__}): is it running?"
        ) from None


def _whoami(url: str, token: str, timeout: float) -> dict[str, Any]:
    response = httpx.get(
        f"{url.rstrip('/')}/api/current-user/whoami", headers={"Authorization": f"Token {token}"}, timeout=timeout
    )
    result: dict[str, Any] = _checked(response, "whoami")
    return result


def delete_annotators(url: str, admin_token: SecretStr, user_ids: Sequence[int], *, timeout: float = 30.0) -> int:
    """Delete simulated users (the instance owner cannot be deleted); returns how many went."""
    deleted = 0
    with _admin(url, admin_token, timeout) as admin:
        for user_id in user_ids:
            response = admin.delete(f"/api/users/{user_id}/")
            if response.status_code == 204:
                deleted += 1
            elif response.status_code != 404:
                _checked(response, f"delete user {user_id}")
    return deleted


class AnnotatorSession:
    """One annotator at work on one Label Studio instance, through the API with their own token."""

    def __init__(self, url: str, account: Account, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.user_id = account.user_id
        self._token = account.token
        self._timeout = timeout
        self._sdk = LabelStudio(base_url=self.url, api_key=account.token.get_secret_value(), timeout=timeout)

    def _fail(self, what: str, exc: Exception) -> LabelStudioError:
        if isinstance(exc, ApiError):
            return LabelStudioError(
                f"Label Studio at {self.url} answered {exc.status_code} to user {self.user_id} trying to {what}: "
                f"{exc.body}"
            )
        return LabelStudioError(f"Label Studio at {self.url} failed for user {self.user_id} to {what}: {exc}")

    def whoami(self) -> int:
        try:
            me = self._sdk.users.whoami()
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail("say who they are", exc) from None
        return int(me.id or 0)

    def maximum_annotations(self, project_id: int) -> int:
        try:
            project = self._sdk.projects.get(id=project_id)
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail(f"open project {project_id}", exc) from None
        return int(project.maximum_annotations or 1)

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations (the export API: one call, about a second)."""
        try:
            data = b"".join(
                self._sdk.projects.exports.download_sync(id=project_id, export_type="JSON", download_all_tasks=True)
            )
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail(f"list the tasks of project {project_id}", exc) from None
        result: list[dict[str, Any]] = json.loads(data) if data else []
        return result

    def submit(self, task_id: int, answer: SimulatedAnswer) -> int:
        """Submit (or skip) a task; returns the annotation id."""
        try:
            created = self._sdk.annotations.create(
                id=task_id, result=answer.result, lead_time=answer.lead_time, was_cancelled=answer.was_cancelled
            )
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail(f"annotate task {task_id}", exc) from None
        return int(created.id or 0)

    def edit(self, annotation_id: int, result: list[dict[str, Any]], lead_time: float) -> None:
        """Change an earlier answer, as an annotator does when they spot their own mistake."""
        try:
            self._sdk.annotations.update(id=annotation_id, result=result, lead_time=lead_time, was_cancelled=False)
        except (ApiError, httpx.HTTPError) as exc:
            raise self._fail(f"edit annotation {annotation_id}", exc) from None

    # -- the bulk path ------------------------------------------------------------------------
    def _post(self, what: str, path: str, body: Any, params: Mapping[str, str | int] | None = None) -> Any:
        """A JSON POST with this user's token (the SDK's typed models cost more than these calls)."""
        try:
            response = httpx.post(
                f"{self.url}{path}",
                params=params,
                content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
                headers={
                    "Authorization": f"Token {self._token.get_secret_value()}",
                    "Content-Type": "application/json",
                },
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise self._fail(what, exc) from None
        if response.status_code >= 400:
            raise LabelStudioError(
                f"Label Studio at {self.url} answered {response.status_code} to user {self.user_id} trying to "
                f"{what}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    def import_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]]) -> int:
        """Import ``[{"task", "result", "model_version"}, ...]`` in one call; returns how many were created."""
        if not predictions:
            return 0
        answer = self._post(
            f"import {len(predictions)} predictions into project {project_id}",
            f"/api/projects/{project_id}/import/predictions",
            list(predictions),
        )
        return int((answer or {}).get("created", 0))

    def convert_predictions(self, project_id: int, model_version: str) -> int:
        """Turn the project's unconverted predictions of ``model_version`` into annotations of this user.

        Returns:
            How many annotations Label Studio created.
        """
        answer = self._post(
            f"convert the predictions {model_version!r} of project {project_id} into annotations",
            "/api/dm/actions",
            {"selectedItems": {"all": True, "excluded": []}, "model_version": model_version},
            params={"id": CONVERT_ACTION, "project": project_id},
        )
        found = _CREATED.search(str((answer or {}).get("detail", "")))
        if found is None:
            raise LabelStudioError(
                f"Label Studio at {self.url} gave an unexpected answer to {CONVERT_ACTION}: {str(answer)[:300]}"
            )
        return int(found.group(1))


def sessions(url: str, accounts: Mapping[str, Account]) -> dict[str, AnnotatorSession]:
    """An :class:`AnnotatorSession` per profile id."""
    return {profile_id: AnnotatorSession(url, account) for profile_id, account in accounts.items()}
