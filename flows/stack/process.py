"""A supervised background process: pid file, log file, health check, clean stop.

Processes start in their own session so that stopping kills the whole process group
(Label Studio and the Prefect server each spawn children).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """A local-stack service could not be started or reached; the message says what to do."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join("    " + line for line in text[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    with contextlib.suppress(FileNotFoundError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass
class ManagedProcess:
    """One long-running service of the local stack."""

    name: str
    argv: list[str]
    workdir: Path
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    #: The health check cannot tell this process from an earlier one that died: only a live process of
    #: ours counts as up (a worker's record on the Prefect server reads ONLINE for 90 s after it stops).
    needs_own_process: bool = False

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_healthy(self) -> bool:
        if self.needs_own_process and self.pid() is None:
            return False
        try:
            return self.healthy()
        except Exception:
            return False

    def start(self) -> bool:
        """Start unless already running; returns True when a new process was launched."""
        if self.pid() is not None or self.is_healthy():
            return False
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            log.write(f"\n--- kazi: starting {self.name}: {' '.join(self.argv)}\n".encode())
            proc = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(str(proc.pid))
        return True

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.is_healthy():
                return
            if self.pid() is None and not self.is_healthy():
                raise StackError(
                    f"{self.name} exited during start-up. Its log {self.log_path} ends with:\n{tail(self.log_path)}"
                )
            time.sleep(0.5)
        raise StackError(
            f"{self.name} did not become healthy in time. Check its log {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self, grace_seconds: float = 20.0) -> bool:
        """Stop the process group; returns True when something was running."""
        pid = self.pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        self.pid_path.unlink(missing_ok=True)
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Only zombies left means the group is gone for our purposes.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
