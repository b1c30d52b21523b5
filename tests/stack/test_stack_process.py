import socket
import sys
import time

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
