import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows.stack.process import ManagedProcess, StackError, pid_alive

pytestmark = pytest.mark.unit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_server(tmp_path, port: int) -> ManagedProcess:
    return ManagedProcess(
        "web",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        tmp_path,
        lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200,
    )


def test_start_twice_reuses_and_stop_leaves_nothing(tmp_path) -> None:
    proc = http_server(tmp_path, free_port())
    assert proc.start() is True
    proc.wait_healthy(time.monotonic() + 20)
    pid = proc.pid()
    assert pid is not None and pid_alive(pid)
    assert proc.start() is False  # already running: reused
    assert proc.pid() == pid
    assert proc.stop() is True
    assert not pid_alive(pid)
    assert not proc.is_healthy()
    assert proc.stop() is False
    assert proc.log_path.exists()


def test_a_service_that_dies_names_its_log(tmp_path) -> None:
    proc = ManagedProcess(
        "broken",
        [sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"],
        tmp_path,
        lambda: False,
    )
    proc.start()
    with pytest.raises(StackError, match=r"broken exited during start-up\. Its log .*broken\.log ends with") as err:
        proc.wait_healthy(time.monotonic() + 20)
    assert "bad flag" in str(err.value)


def test_a_service_that_never_gets_healthy_times_out_naming_its_log(tmp_path) -> None:
    proc = ManagedProcess("slow", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, lambda: False)
    proc.start()
    try:
        with pytest.raises(StackError, match=r"slow did not become healthy in time\. Check its log"):
            proc.wait_healthy(time.monotonic() + 1.5)
    finally:
        proc.stop()


def test_a_process_whose_check_cannot_tell_it_from_a_dead_one_is_up_only_while_it_runs(tmp_path) -> None:
    # A worker stopped a moment ago still reads ONLINE on the server: it must be started again, not reused.
    proc = ManagedProcess(
        "worker", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, lambda: True, needs_own_process=True
    )
    assert not proc.is_healthy()
    assert proc.start() is True
    try:
        proc.wait_healthy(time.monotonic() + 20)
        assert proc.is_healthy()
        assert proc.start() is False  # running: reused
    finally:
        assert proc.stop() is True
    assert not proc.is_healthy()


@pytest.mark.parametrize(
    ("workers", "online"),
    [
        ([{"name": "kazi-local-worker-1", "status": "ONLINE"}], True),
        # After a server restart the pool reads READY, but its worker died long ago: nothing picks runs up.
        ([{"name": "kazi-local-worker-1", "status": "OFFLINE"}], False),
        ([{"name": "someone-else", "status": "ONLINE"}], False),
        ([], False),
    ],
)
def test_the_worker_counts_as_up_only_when_it_is_online(workers, online) -> None:
    from flows.stack.services import worker_online

    assert worker_online(workers, "kazi-local-worker-1") is online


def fake_venv(tmp_path: Path, python_body: str) -> Path:
    """A stand-in for Label Studio's environment: ``bin/python`` and ``bin/label-studio`` shell scripts."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, body in (("python", python_body), ("label-studio", "exit 0")):
        script = venv / "bin" / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return venv


def test_label_studio_instances_start_from_one_migrated_database(tmp_path) -> None:
    from flows.core.settings import Settings
    from flows.stack.services import init_label_studio, label_studio_instances, label_studio_template_db

    settings = Settings(_env_file=None, stack_dir=tmp_path / "stack", tools_dir=tmp_path / "tools")  # type: ignore[call-arg]
    # The "migration" writes a database once; run again, it would fail: the template must be reused.
    venv = fake_venv(
        tmp_path,
        f'test -e "{tmp_path}/ran" && exit 3; touch "{tmp_path}/ran"; mkdir -p "$LABEL_STUDIO_BASE_DATA_DIR"; '
        'printf migrated > "$LABEL_STUDIO_BASE_DATA_DIR/label_studio.sqlite3"',
    )
    db = label_studio_template_db(settings, venv)
    assert db is not None and db.read_text() == "migrated"
    assert label_studio_template_db(settings, venv) == db
    assert [p.name for p in (tmp_path / "tools").iterdir()] == [db.parent.parent.name]  # no half-built folder
    for inst in label_studio_instances(settings):
        popen = init_label_studio(settings, inst, venv, db)
        assert popen is not None and popen.wait() == 0
        assert (inst.workdir / "data" / "label_studio.sqlite3").read_text() == "migrated"


def test_a_failed_migration_leaves_no_template_and_instances_init_the_long_way(tmp_path) -> None:
    from flows.core.settings import Settings
    from flows.stack.services import label_studio_template_db

    settings = Settings(_env_file=None, stack_dir=tmp_path / "stack", tools_dir=tmp_path / "tools")  # type: ignore[call-arg]
    assert label_studio_template_db(settings, fake_venv(tmp_path, "exit 1")) is None
    assert list((tmp_path / "tools").iterdir()) == []
