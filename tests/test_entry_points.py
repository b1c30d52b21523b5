"""Every flow module and entry point imports, so a broken entry point fails fast."""

import importlib
import pkgutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

import flows

SAMPLE_REGISTRY = Path(__file__).resolve().parents[1] / "data_contracts" / "sample_registry.yaml"

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


def test_sites_lists_eligibility_with_reasons(capsys, tmp_path) -> None:
    from flows.cli import main

    # The sample registry, with nairobi's audit a month before today: `kazi sites` screens on today's date,
    # and the sample's own audit date lapses one day.
    raw = yaml.safe_load(SAMPLE_REGISTRY.read_text())
    (nairobi,) = [site for site in raw["sites"] if site["id"] == "nairobi"]
    nairobi["impact"]["last_audit"] = (datetime.now(UTC) - timedelta(days=30)).date()
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(raw))
    assert main(["sites", "--registry", str(registry), "--task-type", "image_classification"]) == 0
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
