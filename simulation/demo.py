"""The main job: a whole work order on the embedded stack, with a simulated workforce.

``make demo`` runs ``python -m simulation.demo``. It brings the local stack up, registers the deployments,
uploads a sample client dataset with its gold items and a partner registry, onboards simulated annotators
(a spammer among them) on each site's Label Studio, starts the work-order deployment through the
Prefect API as a data engineer would from the UI, and works the tasks like people would while the flow
runs. It ends by printing where to look.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml

from flows.core.labelstudio import LabelStudioClient
from flows.core.models import (
    DeliverySpec,
    GoldSpec,
    PartnerRegistry,
    QAThresholds,
    SourceFormat,
    SourceSpec,
    TaskType,
    WorkOrder,
)
from flows.core.refs import item_refs
from flows.core.s3 import ObjectStore, parse_uri
from flows.core.settings import REPO_ROOT, Settings, export_prefect_env, load_settings, local_label_studio_token
from flows.core.workspace import default_registry_uri
from simulation.datasets import DEFAULT_BUCKET, SampleDataset, sample_dataset
from simulation.registry import onboard, registry_profiles, site_sessions
from simulation.workforce import SimulatedWorkforce

CLIENT_BUCKET = "acme-data"
DELIVERY_BUCKET = "acme-deliveries"
SAMPLE_REGISTRY = REPO_ROOT / "data_contracts" / "sample_registry.yaml"
#: Sites of the sample registry that get a local Label Studio instance (by index); the others are
#: passed over by the screening and never contacted.
LOCAL_SITES = {"nairobi": 0, "dadaab": 1}
#: The day the sample registry's dates describe (its audits are judged as on this day).
SAMPLE_AS_OF = date(2026, 11, 23)


def dated_to(raw: dict[str, Any], today: date, as_of: date = SAMPLE_AS_OF) -> dict[str, Any]:
    """The sample registry's audit dates moved by ``today - as_of``: the same sites are eligible (and lahore's
    audit is lapsed by as many days) whenever the demo runs, instead of the sample's audits lapsing one
    by one from March 2027."""
    shift = today - as_of
    for site in raw["sites"]:
        impact = site.get("impact") or {}
        if impact.get("last_audit") is not None:
            last = impact["last_audit"]
            impact["last_audit"] = (last if isinstance(last, date) else date.fromisoformat(str(last))) + shift
    return raw


def demo_registry(settings: Settings, today: date | None = None) -> PartnerRegistry:
    """The sample registry dated to ``today`` (default: the current date, UTC), with the two eligible sites
    pointed at the local Label Studio instances."""
    from flows.stack.services import label_studio_instances

    instances = label_studio_instances(settings)
    raw: dict[str, Any] = dated_to(yaml.safe_load(SAMPLE_REGISTRY.read_text()), today or datetime.now(UTC).date())
    for site in raw["sites"]:
        if site["id"] in LOCAL_SITES:
            site["label_studio"]["url"] = instances[LOCAL_SITES[site["id"]]].url
    return PartnerRegistry.model_validate(raw)


def save_site_tokens(settings: Settings, registry: PartnerRegistry) -> None:
    """Each local site's admin token as a Prefect Secret block, which flows resolve by name."""
    from prefect.blocks.system import Secret

    for site in registry.sites:
        if site.id in LOCAL_SITES:
            token = local_label_studio_token(settings, LOCAL_SITES[site.id])
            Secret(value=token).save(site.label_studio.token_secret.replace("_", "-"), overwrite=True)


def upload_dataset(store: ObjectStore, dataset: SampleDataset, work_order_id: str) -> tuple[str, str]:
    """Put the client's files where a client would: source CSV, media objects and the gold file."""
    for bucket in (CLIENT_BUCKET, DELIVERY_BUCKET, DEFAULT_BUCKET):
        store.ensure_bucket(bucket)
    prefix = f"incoming/{work_order_id}"
    # The dataset's media URIs point into its own media bucket, as a client's would.
    for key, data in dataset.media.items():
        store.put_bytes(DEFAULT_BUCKET, key, data)
    store.put_bytes(CLIENT_BUCKET, f"{prefix}/source/items.csv", dataset.csv())
    store.put_bytes(CLIENT_BUCKET, f"gold/{work_order_id}/gold.jsonl", dataset.gold_jsonl())
    return f"s3://{CLIENT_BUCKET}/{prefix}/source/", f"s3://{CLIENT_BUCKET}/gold/{work_order_id}/gold.jsonl"


def make_work_order(work_order_id: str, dataset: SampleDataset, source_uri: str, gold_uri: str) -> WorkOrder:
    return WorkOrder(
        id=work_order_id,
        client_id="acme",
        source=SourceSpec(uri=source_uri, format=SourceFormat.CSV),
        task_type=dataset.task_type,
        columns=dataset.columns,
        label_schema=dataset.label_schema,
        instructions="Look at the whole picture and choose the one object that fills most of it.",
        overlap=3,
        overlap_across_sites=False,
        gold=GoldSpec(uri=gold_uri, rate=0.1),
        qa=QAThresholds(min_confidence=0.7, min_gold_accuracy=0.7, min_agreement=0.4, max_rework_rounds=1),
        deadline=datetime.now(UTC) + timedelta(days=3),
        price_per_item=0.12,
        pay_per_task=0.03,
        delivery=DeliverySpec(uri=f"s3://{DELIVERY_BUCKET}/deliveries"),
        seed=7,
    )


def prepare_work_order(
    settings: Settings, store: ObjectStore, task_type: TaskType, n_items: int, work_order_id: str, seed: int = 7
) -> tuple[PartnerRegistry, SampleDataset, WorkOrder]:
    """Everything a client and the operations team set up before a work order runs.

    The partner registry (with the local sites' tokens as Prefect Secret blocks) is uploaded to the
    workspace, the client's dataset, media and gold file to the client's bucket.
    """
    registry = demo_registry(settings)
    save_site_tokens(settings, registry)
    store.put_bytes(*parse_uri(default_registry_uri(settings)), registry.to_yaml().encode())
    dataset = sample_dataset(task_type, n_items, seed=seed)
    source_uri, gold_uri = upload_dataset(store, dataset, work_order_id)
    return registry, dataset, make_work_order(work_order_id, dataset, source_uri, gold_uri)


class Workforce(threading.Thread):
    """Simulated annotators working every open project of the work order until told to stop."""

    def __init__(
        self, settings: Settings, registry: PartnerRegistry, dataset: SampleDataset, work_order: WorkOrder
    ) -> None:
        super().__init__(name="simulated-workforce", daemon=True)
        self.settings = settings
        self.registry = registry
        self.work_order = work_order
        self.stop = threading.Event()
        self.answers = 0
        self.error: Exception | None = None
        profiles = registry_profiles(
            registry, sites=list(LOCAL_SITES), max_per_site=6, spammer_share=0.2, seed=work_order.seed
        )
        self.profiles = profiles
        item_ids = list(dataset.truth.answers)
        refs = item_refs(item_ids, settings.pseudonym_key).to_pylist()
        self.workforce = SimulatedWorkforce(
            profiles, dataset.truth, seed=work_order.seed, refs=dict(zip(refs, item_ids, strict=True))
        )

    def run(self) -> None:
        try:
            accounts = onboard(self.registry, self.settings, self.profiles)
            sessions = site_sessions(self.registry, accounts)
            admins = {
                s.id: LabelStudioClient.for_site(s, self.settings) for s in self.registry.sites if s.id in LOCAL_SITES
            }
            while not self.stop.is_set():
                worked = 0
                for site_id, admin in admins.items():
                    for project in admin.projects():
                        if project.key and project.key.startswith(f"{self.work_order.id}--"):
                            done = self.workforce.work(project.id, sessions[site_id])
                            worked += len(done)
                self.answers += worked
                if not worked:
                    self.stop.wait(3)
        except Exception as exc:  # surfaced by the main thread
            self.error = exc


def run_demo(task_type: TaskType, n_items: int, timeout_seconds: float) -> int:
    from flows.cli import prefect_api, print_where_to_look, stack_up
    from flows.deployments import register
    from flows.run import follow, start_work_order
    from flows.status import collect, render

    started = time.monotonic()
    settings = load_settings()
    stack_up(settings)
    store = ObjectStore(settings)
    work_order_id = f"acme-{datetime.now(UTC):%m%d%H%M}"
    with prefect_api(settings):
        print("Registering deployments ...")
        for name in register(settings):
            print(f"  {name}")
        registry, dataset, work_order = prepare_work_order(settings, store, task_type, n_items, work_order_id)
        examples = REPO_ROOT / ".state" / "work_orders"
        examples.mkdir(parents=True, exist_ok=True)
        example = examples / f"{work_order_id}.yaml"
        example.write_text(work_order.to_yaml())
        print(f"Work order {work_order_id}: {n_items} {task_type.value} items from {work_order.source.uri}")
        print(f"  (saved as {example.relative_to(REPO_ROOT)}; `kazi run` takes such a file)")

        workforce = Workforce(settings, registry, dataset, work_order)
        workforce.start()
        print("Starting the work-order deployment on the work pool (as from the Prefect UI) ...")
        run = start_work_order(settings, work_order, again=True, sync_interval_seconds=5)
        print(f"  flow run: {run.url}")
        try:
            state = follow(
                settings,
                work_order_id,
                run.id,
                timeout_seconds=timeout_seconds,
                extra=lambda: _workforce_note(workforce),
            )
        finally:
            workforce.stop.set()
            workforce.join(timeout=30)
        status = collect(settings, work_order_id)
    elapsed = time.monotonic() - started
    print(
        f"\nWork order {work_order_id} finished as {state} in {elapsed:.0f} s ({workforce.answers} simulated answers)."
    )
    print(render(status))
    print_where_to_look(settings)
    print(f"  This run         {run.url}")
    if status.qa_report_url:
        print(f"  QA report        {status.qa_report_url}")
    if status.qa and status.qa.data_docs_uri:
        print(f"  Data Docs        {status.qa.data_docs_uri}")
    if status.deliver:
        print(f"  Delivery         {status.deliver.manifest_uri}")
        print(f"  Impact report    {_presigned(store, status.deliver.impact_report_uri)}")
    if workforce.error:
        print(f"simulated workforce failed: {workforce.error}", file=sys.stderr)
        return 1
    return 0 if state == "COMPLETED" else 1


def _workforce_note(workforce: Workforce) -> str:
    if workforce.error:
        raise workforce.error
    return f"{workforce.answers} answers from the simulated workforce"


def _presigned(store: ObjectStore, uri: str) -> str:
    """A browser link for an s3:// URI (links already presigned pass through)."""
    if not uri.startswith("s3://"):
        return uri
    return store.presign_get(*parse_uri(uri))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.demo", description=__doc__)
    parser.add_argument("--task-type", default=TaskType.IMAGE_CLASSIFICATION.value, choices=[t.value for t in TaskType])
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)
    # Process-wide and before Prefect is imported (it reads its settings then), so every thread's Prefect
    # calls, the workforce's Secret lookups included, reach the stack's server.
    export_prefect_env(load_settings())
    return run_demo(TaskType(args.task_type), args.items, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
