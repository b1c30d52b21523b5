import pytest
from pydantic import SecretStr

from flows.core.settings import Settings, local_label_studio_token, local_stack_settings

pytestmark = pytest.mark.unit


def test_reads_prefixed_environment_and_nested_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAZI_S3_ENDPOINT_URL", "http://s3.example:9000")
    monkeypatch.setenv("KAZI_S3_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("KAZI_SECRETS__LS_TOKEN_NAIROBI", "token-abc")
    monkeypatch.setenv("KAZI_WORKSPACE_BUCKET", "acme-ws")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.s3_endpoint_url == "http://s3.example:9000"
    assert s.workspace_bucket == "acme-ws"
    assert s.s3_secret_access_key.get_secret_value() == "very-secret-value"
    token = s.secret("ls_token_nairobi")
    assert token is not None and token.get_secret_value() == "token-abc"
    assert s.secret("LS_TOKEN_NAIROBI") == token
    assert s.secret("unknown") is None


def test_secrets_never_appear_in_repr_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAZI_S3_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("KAZI_SECRETS__LS_TOKEN_A", "token-abc")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "very-secret-value" not in text
        assert "token-abc" not in text


def test_local_stack_fills_unset_endpoints_from_ports() -> None:
    s = local_stack_settings(Settings(_env_file=None, stack_port_base=40000))  # type: ignore[call-arg]
    assert s.s3_endpoint_url == "http://127.0.0.1:40005"
    assert s.prefect_api_url == "http://127.0.0.1:40000/api"
    assert s.label_studio_url == "http://127.0.0.1:40001"
    assert isinstance(s.label_studio_token, SecretStr)


def test_each_local_label_studio_instance_has_its_own_token() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    tokens = {local_label_studio_token(s, i).get_secret_value() for i in range(3)}
    assert len(tokens) == 3
    assert all(len(t) == 40 for t in tokens)


def test_two_stacks_get_disjoint_ports() -> None:
    a = Settings(_env_file=None, stack_port_base=18300).ports  # type: ignore[call-arg]
    b = Settings(_env_file=None, stack_port_base=28300).ports  # type: ignore[call-arg]
    named = [getattr(a, n) for n in dir(a) if n.startswith(("s3", "weed", "prefect"))]
    named += [a.label_studio(i) for i in range(4)]
    assert len(set(named)) == len(named) == 15
    assert set(named) == set(a.all())
    assert not set(a.all()) & set(b.all())


def test_relative_stack_dir_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Services start in their own working directory, so a relative path given on the command line must not reach them.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAZI_STACK_DIR", ".state/mine")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.stack_dir == tmp_path / ".state" / "mine"
