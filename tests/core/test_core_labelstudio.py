import pytest
from pydantic import SecretStr

from flows.core.labelstudio import LabelStudioClient, LabelStudioError, ProjectSpec
from flows.core.settings import local_label_studio_token

pytestmark = pytest.mark.labelstudio

CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="label" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>"""


def tasks(n: int) -> list[dict]:
    return [{"data": {"text": f"t{i}", "kazi_task_key": f"k{i}"}} for i in range(n)]


def test_ensure_project_is_idempotent(ls_client, ls_cleanup, unique) -> None:
    spec = ProjectSpec(key=f"test-{unique}", title=f"test {unique}", label_config=CONFIG, maximum_annotations=2)
    pid, created = ls_client.ensure_project(spec)
    ls_cleanup.append(pid)
    again, created_again = ls_client.ensure_project(spec)
    assert created and not created_again and again == pid
    assert [p.id for p in ls_client.projects() if p.key == spec.key] == [pid]


def test_import_missing_never_duplicates(ls_client, ls_cleanup, unique) -> None:
    pid, _ = ls_client.ensure_project(ProjectSpec(key=f"imp-{unique}", title="imp", label_config=CONFIG))
    ls_cleanup.append(pid)
    assert ls_client.import_missing(pid, tasks(60), chunk=25) == 60
    # A rerun (as after a crash part-way) imports only what is missing.
    assert ls_client.import_missing(pid, tasks(100), chunk=25) == 40
    assert ls_client.import_missing(pid, tasks(100)) == 0
    exported = ls_client.export(pid, all_tasks=True)
    keys = [t["data"]["kazi_task_key"] for t in exported]
    assert sorted(keys) == sorted(f"k{i}" for i in range(100))


def test_wrong_token_and_down_instance_fail_with_one_clear_line(stack_settings) -> None:
    bad = LabelStudioClient(stack_settings.label_studio_url, SecretStr("0" * 40), site_id="nairobi")
    with pytest.raises(LabelStudioError, match=r"\(site nairobi\) refused the API token"):
        bad.check()
    down = LabelStudioClient("http://127.0.0.1:9", stack_settings.label_studio_token)
    with pytest.raises(LabelStudioError, match="not reachable"):
        down.check()


def test_instances_do_not_accept_each_others_tokens(stack_settings) -> None:
    from flows.stack.services import label_studio_instances

    a, b = label_studio_instances(stack_settings)[:2]
    token_a = local_label_studio_token(stack_settings, 0)
    token_b = local_label_studio_token(stack_settings, 1)
    LabelStudioClient(a.url, token_a).check()
    LabelStudioClient(b.url, token_b).check()
    with pytest.raises(LabelStudioError, match="refused the API token"):
        LabelStudioClient(b.url, token_a).projects()
    with pytest.raises(LabelStudioError, match="refused the API token"):
        LabelStudioClient(a.url, token_b).projects()
