"""The services of the local stack, built from :class:`~flows.core.settings.Settings`.

Everything binds to 127.0.0.1 and keeps its data and logs under ``settings.stack_dir``; the Label
Studio virtual environment is shared between stacks under ``settings.tools_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flows.core.settings import Settings, local_label_studio_token
from flows.stack.process import ManagedProcess, StackError, tail

LABEL_STUDIO_REQUIREMENTS = Path(__file__).with_name("label-studio-requirements.txt")
HOST = "127.0.0.1"


def _bin(name: str) -> str:
    """An executable of the running environment (the project venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` is not installed: run the README's set-up (make demo / make test).")
    return found


def _http_ok(url: str, expect: tuple[int, ...] = (200,)) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code in expect
    except httpx.HTTPError:
        return False


# --- SeaweedFS ----------------------------------------------------------------------------------


def seaweedfs(settings: Settings) -> ManagedProcess:
    p = settings.ports
    workdir = settings.stack_dir / "s3"
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3-identities.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "kazi",
                        "credentials": [
                            {
                                "accessKey": settings.s3_access_key_id,
                                "secretKey": settings.s3_secret_access_key.get_secret_value(),
                            }
                        ],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    argv = [
        _bin("weed"),
        "mini",
        f"-dir={data}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-master.port={p.weed_master}",
        f"-master.port.grpc={p.weed_master_grpc}",
        f"-volume.port={p.weed_volume}",
        f"-volume.port.grpc={p.weed_volume_grpc}",
        f"-filer.port={p.weed_filer}",
        f"-filer.port.grpc={p.weed_filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.port={p.s3}",
        f"-s3.port.grpc={p.s3_grpc}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-admin.port={p.weed_admin}",
        f"-admin.port.grpc={p.weed_admin_grpc}",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-master.telemetry=false",
        "-s3.autoCreateBucket=false",
        f"-s3.config={config}",
    ]

    def healthy() -> bool:
        # An anonymous request is refused with 403 once the S3 gateway is up with credentials.
        return _http_ok(f"http://{HOST}:{p.s3}/", expect=(403,))

    return ManagedProcess("seaweedfs", argv, workdir, healthy, env={"TMPDIR": str(workdir)})


# --- Label Studio -------------------------------------------------------------------------------


def _label_studio_version() -> str:
    """What names an installed Label Studio: a digest of the committed requirements."""
    return hashlib.sha256(LABEL_STUDIO_REQUIREMENTS.read_bytes()).hexdigest()[:16]


def label_studio_venv(settings: Settings) -> Path:
    """Create (once) Label Studio's own virtual environment from the committed requirements."""
    venv = settings.tools_dir / "label-studio"
    digest = _label_studio_version()
    stamp = venv / ".kazi-installed"
    if stamp.exists() and stamp.read_text() == digest:
        return venv
    log = settings.tools_dir / "label-studio-install.log"
    settings.tools_dir.mkdir(parents=True, exist_ok=True)
    uv = _bin("uv")
    with log.open("wb") as out:
        for argv in (
            [uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(venv)],
            [
                uv,
                "pip",
                "install",
                # No --compile-bytecode: it compiles every module of every package (14 s), where the first
                # start compiles the ones Label Studio imports (5 s more on the database template).
                "--python",
                str(venv / "bin" / "python"),
                "-r",
                str(LABEL_STUDIO_REQUIREMENTS),
            ],
        ):
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode:
                raise StackError(f"Installing Label Studio failed; see {log}:\n{tail(log)}")
    stamp.write_text(digest)
    return venv


@dataclass(frozen=True)
class LabelStudioInstance:
    index: int
    url: str
    workdir: Path

    @property
    def name(self) -> str:
        return f"label-studio-{'abcd'[self.index]}"

    @property
    def initialised(self) -> Path:
        """Stamp written once the instance's one-time init succeeded."""
        return self.workdir / ".kazi-initialised"


def label_studio_instances(settings: Settings) -> list[LabelStudioInstance]:
    return [
        LabelStudioInstance(
            i,
            f"http://{HOST}:{settings.ports.label_studio(i)}",
            settings.stack_dir / f"label-studio-{'abcd'[i]}",
        )
        for i in range(settings.stack_label_studio_instances)
    ]


def _label_studio_base_env(workdir: Path) -> dict[str, str]:
    """What every Label Studio process of the stack runs with: its data under ``workdir``, SQLite, quiet."""
    return {
        "LABEL_STUDIO_BASE_DATA_DIR": str(workdir / "data"),
        "DJANGO_DB": "sqlite",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "LOG_LEVEL": "WARNING",
        "TMPDIR": str(workdir),
    }


def _label_studio_env(settings: Settings, inst: LabelStudioInstance) -> dict[str, str]:
    return {
        **_label_studio_base_env(inst.workdir),
        # The local S3 server lives on loopback, which Label Studio bans as SSRF protection by
        # default; allow it on the local stack only (link-local stays banned).
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": "169.254.0.0/16,fe80::/10",
        "LABEL_STUDIO_HOST": inst.url,
        # A stable key per instance, so browser sessions survive a restart of the stack.
        "SECRET_KEY": hashlib.sha256(
            f"{settings.stack_admin_password.get_secret_value()}:{inst.url}".encode()
        ).hexdigest(),
    }


_MIGRATE = (
    "from label_studio.server import _setup_env, _apply_database_migrations; _setup_env(); _apply_database_migrations()"
)
_DB_FILE = "label_studio.sqlite3"


def label_studio_template_db(settings: Settings, venv: Path) -> Path | None:
    """A migrated Label Studio database without users, made once per Label Studio version (in the tools
    folder, shared by every stack), that new instances start from.

    ``label-studio init`` spends about 35 s of CPU on Django's migrations; two instances doing it at once on
    two cores took about a minute and a half of the first ``make test``. With the template they migrate
    nothing and init takes about 5 s each. The migration runs Label Studio's own start-up code (its
    ``server`` module); if that ever fails, instances are initialised the long way (None is returned).
    """
    digest = _label_studio_version()
    folder = settings.tools_dir / f"label-studio-db-{digest}"
    db = folder / "data" / _DB_FILE
    if db.exists():
        return db
    settings.tools_dir.mkdir(parents=True, exist_ok=True)
    building = settings.tools_dir / f".label-studio-db-{digest}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    env = {**os.environ, **_label_studio_base_env(building), "SECRET_KEY": os.urandom(16).hex()}
    with (building / "migrate.log").open("wb") as log:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", _MIGRATE],
            cwd=building,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0 or not (building / "data" / _DB_FILE).exists():
        shutil.rmtree(building, ignore_errors=True)
        return None
    try:
        building.rename(folder)  # atomic: a stack starting at the same time sees all of it or nothing
    except OSError:  # another stack made it first
        shutil.rmtree(building, ignore_errors=True)
    return db if db.exists() else None


def init_label_studio(
    settings: Settings, inst: LabelStudioInstance, venv: Path, template_db: Path | None = None
) -> subprocess.Popen[bytes] | None:
    """Start the one-time, non-interactive init of an instance (admin user + API token), from a copy of
    ``template_db`` when there is one (see :func:`label_studio_template_db`)."""
    if inst.initialised.exists():
        return None
    inst.workdir.mkdir(parents=True, exist_ok=True)
    data = inst.workdir / "data"
    if template_db is not None and not (data / _DB_FILE).exists():
        data.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template_db, data / _DB_FILE)
    log = (inst.workdir / "init.log").open("ab")
    argv = [
        str(venv / "bin" / "label-studio"),
        "init",
        "-q",
        "--username",
        settings.stack_admin_email,
        "--password",
        settings.stack_admin_password.get_secret_value(),
        "--user-token",
        local_label_studio_token(settings, inst.index).get_secret_value(),
        "--enable-legacy-api-token",
    ]
    return subprocess.Popen(
        argv,
        cwd=inst.workdir,
        env={**os.environ, **_label_studio_env(settings, inst)},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def label_studio(settings: Settings, inst: LabelStudioInstance, venv: Path) -> ManagedProcess:
    port = settings.ports.label_studio(inst.index)
    argv = [
        str(venv / "bin" / "label-studio"),
        "start",
        "--internal-host",
        HOST,
        "-p",
        str(port),
        "--no-browser",
    ]
    return ManagedProcess(
        inst.name,
        argv,
        inst.workdir,
        lambda: _http_ok(f"{inst.url}/health"),
        env=_label_studio_env(settings, inst),
    )


# --- Prefect ------------------------------------------------------------------------------------


def prefect_env(settings: Settings) -> dict[str, str]:
    port = settings.ports.prefect
    return {
        "PREFECT_HOME": str(settings.stack_dir / "prefect"),
        "PREFECT_SERVER_API_HOST": HOST,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_URL": f"http://{HOST}:{port}/api",
        "PREFECT_UI_API_URL": f"http://{HOST}:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }


def prefect_server(settings: Settings) -> ManagedProcess:
    port = settings.ports.prefect
    argv = [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    workdir = settings.stack_dir / "prefect"
    return ManagedProcess(
        "prefect-server",
        argv,
        workdir,
        lambda: _http_ok(f"http://{HOST}:{port}/api/health"),
        env=prefect_env(settings),
    )


def worker_online(workers: list[dict[str, Any]], name: str) -> bool:
    """Whether the pool's worker ``name`` is online, from the API's ``workers/filter`` answer."""
    return any(w.get("status") == "ONLINE" and w.get("name") == name for w in workers)


def prefect_worker(settings: Settings) -> ManagedProcess:
    """A process worker serving the work pool: it runs deployment flow runs as subprocesses.

    It inherits the stack's ``KAZI_*`` environment, so flow runs reach the same S3 and Label Studio.
    More machines scale out by starting the same command against the same API and pool.
    """
    port = settings.ports.prefect
    pool = settings.work_pool
    name = f"{pool}-worker-1"

    def healthy() -> bool:
        # An online worker of the pool, not the pool's status: after a server restart the pool can read
        # READY from a worker that died long ago, and nothing would pick the runs up. The record itself
        # stays ONLINE for a while after the worker stops, hence also ``needs_own_process``.
        try:
            resp = httpx.post(f"http://{HOST}:{port}/api/work_pools/{pool}/workers/filter", json={}, timeout=2.0)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and worker_online(resp.json(), name)

    workdir = settings.stack_dir / "prefect"
    env = prefect_env(settings) | {
        "KAZI_STACK_DIR": str(settings.stack_dir),
        "KAZI_STACK_PORT_BASE": str(settings.stack_port_base),
        "KAZI_TOOLS_DIR": str(settings.tools_dir),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    argv = [_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", name]
    return ManagedProcess("prefect-worker", argv, workdir, healthy, env=env, needs_own_process=True)


# --- The whole stack ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StackStatus:
    name: str
    url: str
    running: bool
    log: Path


class LocalStack:
    """Bring the local stack up (reusing what runs), report on it, and tear it down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _processes(self, venv: Path | None = None) -> Iterator[tuple[ManagedProcess, str]]:
        s = self.settings
        yield seaweedfs(s), f"http://{HOST}:{s.ports.s3}"
        venv = venv or s.tools_dir / "label-studio"
        for inst in label_studio_instances(s):
            yield label_studio(s, inst, venv), inst.url
        yield prefect_server(s), f"http://{HOST}:{s.ports.prefect}"
        yield prefect_worker(s), f"http://{HOST}:{s.ports.prefect}/work-pools/work-pool/{s.work_pool}"

    def up(self, progress: bool = True) -> list[StackStatus]:
        s = self.settings
        s.stack_dir.mkdir(parents=True, exist_ok=True)
        say = print if progress else (lambda *_a, **_k: None)
        started = time.monotonic()
        deadline = started + s.stack_start_timeout_seconds
        # Start what needs no set-up first, so it warms up while Label Studio installs.
        s3 = seaweedfs(s)
        prefect = prefect_server(s)
        for proc in (s3, prefect):
            if proc.start():
                say(f"  starting {proc.name} (log: {proc.log_path})")
        say("  checking Label Studio's environment ...")
        venv = label_studio_venv(s)
        instances = label_studio_instances(s)
        template_db = None
        if any(not inst.initialised.exists() for inst in instances):
            say("  preparing Label Studio's database (first run only, about 40 s)")
            template_db = label_studio_template_db(s, venv)
        inits = [(inst, init_label_studio(s, inst, venv, template_db)) for inst in instances]
        for inst, popen in inits:
            if popen is None:
                continue
            say(f"  initialising {inst.name} (first run only)")
        for inst, popen in inits:
            if popen is None:
                continue
            if popen.wait() != 0:
                raise StackError(
                    f"Label Studio init failed for {inst.name}; see {inst.workdir / 'init.log'}:\n"
                    f"{tail(inst.workdir / 'init.log')}"
                )
            inst.initialised.write_text("ok")
        ls_procs = [label_studio(s, inst, venv) for inst in instances]
        for proc in ls_procs:
            if proc.start():
                say(f"  starting {proc.name} (log: {proc.log_path})")
        procs = [s3, prefect, *ls_procs]
        with ThreadPoolExecutor(len(procs)) as pool:
            for fut in [pool.submit(p.wait_healthy, deadline) for p in procs]:
                fut.result()
        # The worker needs the server; it creates its work pool on first start.
        worker = prefect_worker(s)
        if worker.start():
            say(f"  starting {worker.name} for work pool {s.work_pool!r} (log: {worker.log_path})")
        worker.wait_healthy(deadline)
        say(f"  local stack healthy in {time.monotonic() - started:.0f} s")
        return self.status()

    def status(self) -> list[StackStatus]:
        return [StackStatus(proc.name, url, proc.is_healthy(), proc.log_path) for proc, url in self._processes()]

    def down(self) -> list[str]:
        stopped = []
        for proc, _ in reversed(list(self._processes())):
            if proc.stop():
                stopped.append(proc.name)
        return stopped
