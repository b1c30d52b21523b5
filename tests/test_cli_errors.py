"""Bad configuration fails fast with one clear line naming the setting, not a traceback."""

import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.labelstudio


def kazi(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *args: str) -> subprocess.CompletedProcess[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"KAZI_S3_SECRET_ACCESS_KEY": "wrong-secret"}, "KAZI_S3_SECRET_ACCESS_KEY"),
        ({"KAZI_WORKSPACE_BUCKET": "kazi-no-such-bucket"}, "KAZI_WORKSPACE_BUCKET"),
        ({"KAZI_S3_ENDPOINT_URL": "http://127.0.0.1:9"}, "KAZI_S3_ENDPOINT_URL"),
        ({"KAZI_LABEL_STUDIO_URL": "http://127.0.0.1:9"}, "kazi stack up"),
        ({"KAZI_LABEL_STUDIO_TOKEN": "0" * 40}, "KAZI_LABEL_STUDIO_TOKEN"),
    ],
)
def test_bad_configuration_fails_in_one_line(stack_settings, monkeypatch, env, setting) -> None:
    started = time.monotonic()
    proc = kazi(env, monkeypatch, "smoke", "--no-stack")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kazi: error:") and setting in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert elapsed < 60
    for secret in env.values():
        if "secret" in secret or secret == "0" * 40:
            assert secret not in proc.stderr + proc.stdout
