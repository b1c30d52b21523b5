"""Every flow module and entry point imports, so a broken entry point fails fast."""

import importlib
import pkgutil

import pytest

import flows

pytestmark = pytest.mark.unit


def test_every_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(flows.__path__, "flows.")]
    assert "flows.smoke" in names and "flows.cli" in names
    for name in names:
        importlib.import_module(name)


def test_cli_help_lists_the_commands(capsys) -> None:
    from flows.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("stack", "demo", "smoke"):
        assert command in out


def test_sites_lists_eligibility_with_reasons(capsys) -> None:
    from flows.cli import main

    assert (
        main(["sites", "--registry", "data_contracts/sample_registry.yaml", "--task-type", "image_classification"]) == 0
    )
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[3:] if line.strip()}
    assert lines["nairobi"].endswith("yes")
    assert "below the local living wage" in lines["port-au-prince"]
    assert "audit lapsed" in lines["lahore"]


def test_every_deployment_entrypoint_is_a_flow() -> None:
    from prefect.flows import Flow, load_flow_from_entrypoint

    from flows.deployments import DEPLOYMENTS

    for spec in DEPLOYMENTS:
        loaded = load_flow_from_entrypoint(spec.entrypoint)
        assert isinstance(loaded, Flow), spec.entrypoint
