"""The one place Kazi reads its environment.

Every endpoint, credential and local-stack knob is a field here. Secrets are ``SecretStr`` so that
``repr``, logs and Prefect artifacts show ``**********`` instead of the value.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class StackPorts(BaseModel):
    """Ports of the embedded local stack, all derived from one base so two stacks never collide."""

    base: int

    @property
    def prefect(self) -> int:
        return self.base

    def label_studio(self, index: int) -> int:
        return self.base + 1 + index

    @property
    def s3(self) -> int:
        return self.base + 5

    @property
    def s3_grpc(self) -> int:
        return self.base + 6

    @property
    def weed_master(self) -> int:
        return self.base + 7

    @property
    def weed_master_grpc(self) -> int:
        return self.base + 8

    @property
    def weed_volume(self) -> int:
        return self.base + 9

    @property
    def weed_volume_grpc(self) -> int:
        return self.base + 10

    @property
    def weed_filer(self) -> int:
        return self.base + 11

    @property
    def weed_filer_grpc(self) -> int:
        return self.base + 12

    @property
    def weed_admin(self) -> int:
        return self.base + 13

    @property
    def weed_admin_grpc(self) -> int:
        return self.base + 14

    def all(self) -> list[int]:
        """Every port a stack may bind (up to four Label Studio instances)."""
        return list(range(self.base, self.base + 15))


class Settings(BaseSettings):
    """All configuration, from ``KAZI_*`` environment variables (and an optional ``.env`` file).

    Nested values use ``__``: ``KAZI_SECRETS__LS_TOKEN_NAIROBI=...`` puts the secret
    ``ls_token_nairobi`` in :attr:`secrets`.
    """

    model_config = SettingsConfigDict(
        env_prefix="KAZI_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        case_sensitive=False,
    )

    local_stack: bool = Field(
        default=True,
        description="Fill unset endpoints and tokens from the embedded local stack. Set false in production.",
    )

    # --- S3 -------------------------------------------------------------------------------------
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint, e.g. http://127.0.0.1:18305. Empty means AWS."
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: str = Field(default="kazi-local", description="S3 access key id.")
    s3_secret_access_key: SecretStr = Field(default=SecretStr("kazi-local-secret-change-me"))
    workspace_bucket: str = Field(default="kazi-workspace", description="Bucket for Kazi's own state.")
    presign_expiry_seconds: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)

    # --- Label Studio ---------------------------------------------------------------------------
    label_studio_url: str | None = Field(
        default=None, description="Label Studio used by the smoke flow; partner sites name their own."
    )
    label_studio_token: SecretStr | None = None
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Named secrets (e.g. each partner site's Label Studio token), looked up before "
        "Prefect Secret blocks of the same name.",
    )

    pseudonym_key: SecretStr = Field(
        default=SecretStr("kazi-local-pseudonym-key-change-me"),
        description="HMAC key that turns Label Studio user ids into pseudonymous annotator ids.",
    )

    worker_record_signing_seed: SecretStr = Field(
        default=SecretStr("kazi-local-worker-record-seed-change-me"),
        description="Seed of the Ed25519 key that signs worker records (the key is sha256 of it).",
    )

    # --- Prefect --------------------------------------------------------------------------------
    prefect_api_url: str | None = Field(default=None, description="Prefect API, e.g. http://127.0.0.1:18300/api")
    work_pool: str = "kazi-local"

    # --- Local stack ----------------------------------------------------------------------------
    stack_dir: Path = Field(default=REPO_ROOT / ".state" / "dev", description="State of the local stack.")
    tools_dir: Path = Field(default=REPO_ROOT / ".state" / "tools", description="Shared tool venvs.")
    stack_port_base: int = Field(default=18300, ge=1024, le=55000)
    stack_label_studio_instances: int = Field(default=2, ge=1, le=4)
    stack_admin_email: str = "admin@kazi.local"
    stack_admin_password: SecretStr = Field(default=SecretStr("kazi-admin-change-me"))
    stack_start_timeout_seconds: float = 240.0

    @field_validator("stack_dir", "tools_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Services run with their own working directory: a relative path would point somewhere else for them.
        return value.expanduser().absolute()

    @cached_property
    def ports(self) -> StackPorts:
        return StackPorts(base=self.stack_port_base)

    def secret(self, name: str) -> SecretStr | None:
        """A named secret from the environment, or None (callers may then try a Prefect Secret block)."""
        return self.secrets.get(name.lower())

    def is_local_stack(self) -> bool:
        return self.s3_endpoint_url is None or self.s3_endpoint_url.startswith(("http://127.0.0.1", "http://localhost"))


def load_settings() -> Settings:
    """The settings every entry point uses: the environment, completed from the local stack if enabled."""
    settings = Settings()
    return local_stack_settings(settings) if settings.local_stack else settings


def local_stack_settings(base: Settings | None = None) -> Settings:
    """Settings pointed at the embedded local stack described by ``base``'s stack fields."""
    base = base or Settings()
    ports = base.ports
    return base.model_copy(
        update={
            "s3_endpoint_url": base.s3_endpoint_url or f"http://127.0.0.1:{ports.s3}",
            "label_studio_url": base.label_studio_url or f"http://127.0.0.1:{ports.label_studio(0)}",
            "label_studio_token": base.label_studio_token or local_label_studio_token(base, 0),
            "prefect_api_url": base.prefect_api_url or f"http://127.0.0.1:{ports.prefect}/api",
        }
    )


def local_label_studio_token(settings: Settings, index: int) -> SecretStr:
    """The API token of local Label Studio instance ``index``: derived from the admin password.

    Each instance gets its own token, so one instance's token is refused by another.
    """
    import hashlib

    raw = f"{settings.stack_admin_password.get_secret_value()}:{settings.stack_port_base}:{index}"
    return SecretStr(hashlib.sha1(raw.encode()).hexdigest())


def export_prefect_env(settings: Settings) -> dict[str, str]:
    """Environment that points Prefect clients and child processes at the configured API.

    Prefect reads its own ``PREFECT_*`` variables; this is the one place Kazi sets them.
    """
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LOG_PRINTS": "true",
    }
    if settings.prefect_api_url:
        env["PREFECT_API_URL"] = settings.prefect_api_url
    os.environ.update(env)
    return env
