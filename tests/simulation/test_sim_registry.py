from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from flows.core.models import PartnerRegistry
from simulation.registry import registry_profiles

pytestmark = pytest.mark.unit

REGISTRY = PartnerRegistry.from_yaml(
    (Path(__file__).resolve().parents[2] / "data_contracts" / "sample_registry.yaml").read_text()
)


def test_profiles_per_site_follow_capacity_and_gold_accuracy() -> None:
    profiles = registry_profiles(REGISTRY, max_per_site=30, spammer_share=0.0, seed=1)
    counts = {s.id: sum(p.site_id == s.id for p in profiles) for s in REGISTRY.sites}
    assert counts == {"nairobi": 30, "dadaab": 18, "port-au-prince": 25, "lahore": 30}
    nairobi = np.array([p.accuracy for p in profiles if p.site_id == "nairobi"])
    assert nairobi.mean() == pytest.approx(0.93, abs=0.04)
    assert profiles == registry_profiles(REGISTRY, max_per_site=30, spammer_share=0.0, seed=1)


def test_a_site_s_profiles_do_not_depend_on_the_others() -> None:
    alone = registry_profiles(REGISTRY, sites=["dadaab"], seed=2)
    together = registry_profiles(REGISTRY, seed=2)
    assert alone == [p for p in together if p.site_id == "dadaab"]
    assert len(alone) == 8


@pytest.mark.parametrize(("kwargs", "match"), [({"sites": ["atlantis"]}, "atlantis"), ({"max_per_site": 0}, "max_per")])
def test_registry_profiles_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        registry_profiles(REGISTRY, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("today", [date(2026, 11, 23), date(2027, 6, 20), date(2030, 1, 2)])
def test_the_demo_registry_screens_the_same_sites_whenever_the_demo_runs(today: date) -> None:
    from flows.core.models import TaskType
    from flows.core.settings import Settings
    from flows.split.eligibility import eligible_sites
    from simulation.datasets import sample_dataset
    from simulation.demo import demo_registry, make_work_order

    # The sample's own audits lapse one by one from March 2027 (dadaab's first): the demo's are dated to today.
    registry = demo_registry(Settings(_env_file=None), today=today)  # type: ignore[call-arg]
    dataset = sample_dataset(TaskType.IMAGE_CLASSIFICATION, 5, seed=1)
    work_order = make_work_order("demo-0001", dataset, "s3://acme-data/x/", "s3://acme-data/g.jsonl")
    eligible, passed_over = eligible_sites(registry, work_order, today)
    assert [s.id for s in eligible] == ["nairobi", "dadaab"]
    assert passed_over["lahore"].startswith("audit lapsed: last audit ")
    assert ", 794 days ago" in passed_over["lahore"]
    assert registry.site("nairobi").impact.last_audit == date(2026, 6, 15) + (today - date(2026, 11, 23))
