import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from flows.core.settings import Settings, StackPorts, load_settings
from flows.stack.services import LocalStack, seaweedfs

pytestmark = pytest.mark.e2e


def listening(ports: set[int]) -> dict[int, set[str]]:
    """Addresses listening on ``ports``, from /proc/net/tcp{,6} (hex address:port, state 0A = LISTEN)."""
    found: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) in ports:
                found.setdefault(int(port_hex, 16), set()).add(addr)
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the services bind: TIME_WAIT is no clash
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base() -> int:
    """A stack port base whose every port is free now and clear of the test stack's; outside the ephemeral
    range if it can be, where the kernel hands ports to outgoing connections at any moment."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    taken = set(load_settings().ports.all())
    blocks = [StackPorts(base=base).all() for base in range(20_000, 55_000, 100)]
    for ports in sorted(blocks, key=lambda ports: ports[-1] >= low and ports[0] <= high):
        if not taken & set(ports) and all(_bindable(p) for p in ports):
            return ports[0]
    raise AssertionError("no free block of ports for a second stack")


def test_up_again_reuses_running_services(stack_settings) -> None:
    stack = LocalStack(stack_settings)
    before = {p.name: p.pid() for p, _ in stack._processes()}
    statuses = stack.up(progress=False)
    assert all(s.running for s in statuses)
    assert {p.name: p.pid() for p, _ in stack._processes()} == before


def test_services_listen_on_loopback_only(stack_settings) -> None:
    found = listening(set(stack_settings.ports.all()))
    assert stack_settings.ports.s3 in found and stack_settings.ports.prefect in found
    for port, addrs in found.items():
        # 0100007F is 127.0.0.1 in /proc's little-endian hex; anything else (0.0.0.0, ::) is exposed.
        assert addrs == {"0100007F"}, f"port {port} listens on {addrs}"


def test_prefect_ui_is_served(stack_settings) -> None:
    base = stack_settings.prefect_api_url.removesuffix("/api")
    page = httpx.get(base + "/")
    assert page.status_code == 200 and "<title>" in page.text
    scripts = re.findall(r'src="(/[^"]+\.js)"', page.text)
    assert scripts, "the UI page references no script"
    assert httpx.get(base + scripts[0]).status_code == 200


def test_a_second_stack_uses_its_own_ports_and_folder(tmp_path) -> None:
    base = free_port_base()
    other = Settings(_env_file=None, stack_dir=tmp_path / "other", stack_port_base=base)  # type: ignore[call-arg]
    proc = seaweedfs(other)
    assert proc.start()
    try:
        proc.wait_healthy(time.monotonic() + 60)
        assert (tmp_path / "other" / "s3" / "seaweedfs.log").exists()
        assert set(listening({other.ports.s3})) == {other.ports.s3}
    finally:
        assert proc.stop()
    assert not listening(set(other.ports.all()))
