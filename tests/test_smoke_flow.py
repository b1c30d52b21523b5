import asyncio
import logging
import time

import pytest

pytestmark = pytest.mark.prefect


async def flow_run_logs(flow_run_id) -> list[str]:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200, offset=0
        )
    return [log.message for log in logs]


def test_smoke_flow_writes_s3_creates_a_project_and_logs_no_secret(stack_settings, store, caplog) -> None:

    from flows.core.s3 import parse_uri
    from flows.smoke import smoke

    caplog.set_level(logging.DEBUG)
    state = smoke(return_state=True)
    result = state.result()
    bucket, key = parse_uri(result.s3_uri)
    assert store.head(bucket, key).sha256 == result.sha256
    assert result.tasks == 1 and result.label_studio_project > 0

    messages: list[str] = []
    # Logs reach the server in batches, from a background thread: wait for both lines, not just the first,
    # and long enough for a server that other tests' runs keep busy.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        messages = asyncio.run(flow_run_logs(state.state_details.flow_run_id))
        if any("Wrote and read back" in m for m in messages) and any("Label Studio project" in m for m in messages):
            break
        time.sleep(0.5)
    assert any("Wrote and read back" in m for m in messages), messages
    assert any("Label Studio project" in m for m in messages)
    secrets = [
        stack_settings.s3_secret_access_key.get_secret_value(),
        stack_settings.label_studio_token.get_secret_value(),
        stack_settings.stack_admin_password.get_secret_value(),
    ]
    everything = "\n".join(messages + [r.getMessage() for r in caplog.records] + [caplog.text])
    for secret in secrets:
        assert secret not in everything
