"""The ``kazi`` command: what data engineers do from a terminal."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flows.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from flows.core.models import WorkOrder
    from flows.stack.services import LocalStack


def _stack(settings: Settings) -> LocalStack:
    from flows.stack.services import LocalStack

    return LocalStack(settings)


@contextmanager
def prefect_api(settings: Settings) -> Iterator[None]:
    """Point Prefect clients at the configured API for the duration of a command."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    updates = {PREFECT_SERVER_ANALYTICS_ENABLED: False}
    if settings.prefect_api_url:
        updates[PREFECT_API_URL] = settings.prefect_api_url  # type: ignore[assignment]
    with temporary_settings(updates=updates):
        yield


def stack_up(settings: Settings) -> None:
    from flows.core.s3 import ObjectStore

    print("Bringing up the local stack (S3, Label Studio, Prefect) ...")
    _stack(settings).up()
    ObjectStore(settings).ensure_bucket(settings.workspace_bucket)


def preflight(settings: Settings) -> None:
    """Check S3 and Label Studio before any flow runs, so bad configuration fails in one line."""
    from flows.core.labelstudio import LabelStudioClient
    from flows.core.s3 import ObjectStore

    ObjectStore(settings).check()
    LabelStudioClient.from_settings(settings).check()


def print_where_to_look(settings: Settings) -> None:
    from flows.stack.services import label_studio_instances

    print("\nWhere to look:")
    print(f"  Prefect UI      {settings.prefect_api_url.removesuffix('/api') if settings.prefect_api_url else '-'}")
    for inst in label_studio_instances(settings):
        login = f"log in as {settings.stack_admin_email}, password from KAZI_STACK_ADMIN_PASSWORD"
        print(f"  Label Studio    {inst.url}  ({login})")
    print(f"  S3 endpoint     {settings.s3_endpoint_url}  (bucket {settings.workspace_bucket})")


def cmd_stack(args: argparse.Namespace) -> int:
    settings = load_settings()
    stack = _stack(settings)
    if args.action == "up":
        stack_up(settings)
        print_where_to_look(settings)
    elif args.action == "down":
        stopped = stack.down()
        print("Stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    else:
        for st in stack.status():
            print(f"  {st.name:16} {'up  ' if st.running else 'down'}  {st.url:28} log: {st.log}")
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.local_stack and not args.no_stack:
        stack_up(settings)
    preflight(settings)
    with prefect_api(settings):
        from flows.smoke import smoke

        started = time.monotonic()
        result = smoke()
    print(f"\nSmoke flow finished in {time.monotonic() - started:.1f} s:")
    print(f"  S3 object              {result.s3_uri}")
    print(f"  Label Studio project   {result.label_studio_url}")
    print_where_to_look(settings)
    return 0


def _load_registry_text(source: str, settings: Settings) -> str:
    from pathlib import Path

    if source.startswith("s3://"):
        from flows.core.s3 import ObjectStore, parse_uri

        bucket, key = parse_uri(source)
        return ObjectStore(settings).get_bytes(bucket, key).decode()
    return Path(source).read_text()


def cmd_sites(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from flows.core.models import PartnerRegistry
    from flows.core.workspace import default_registry_uri
    from flows.split.eligibility import impact_reasons

    settings = load_settings()
    source = args.registry or default_registry_uri(settings)
    registry = PartnerRegistry.from_yaml(_load_registry_text(source, settings))
    today = datetime.now(UTC).date()
    print(f"Partner sites in {source} (screened on {today.isoformat()}):\n")
    print(f"  {'site':16} {'country':7} {'wage/h':>14} {'living wage/h':>14}  {'audit':10}  eligible")
    for site in registry.sites:
        imp = site.impact
        reasons = impact_reasons(site, today)
        if args.task_type and args.task_type not in {t.value for t in site.task_types}:
            reasons.append(f"lacks the {args.task_type} skill")
        verdict = "yes" if not reasons else "no: " + "; ".join(reasons)
        print(
            f"  {site.id:16} {site.country:7} {imp.hourly_wage:>10,.2f} {imp.currency} "
            f"{imp.living_wage:>10,.2f} {imp.currency}  {imp.last_audit.isoformat():10}  {verdict}"
        )
    return 0


def _load_work_order(source: str, settings: Settings) -> WorkOrder:
    """A work order from a YAML file or s3:// URI; an invalid one is a one-line error per field."""
    from pydantic import ValidationError

    from flows.core.models import WorkOrder

    try:
        return WorkOrder.from_yaml(_load_registry_text(source, settings))
    except FileNotFoundError:
        raise UsageError(f"{source}: no such file") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"{source} is not a valid work order: {problems}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from flows.core.settings import export_prefect_env

    settings = load_settings()
    export_prefect_env(settings)  # before Prefect is imported: it reads its settings then
    work_order = _load_work_order(args.work_order, settings)
    if settings.local_stack and not args.no_stack:
        stack_up(settings)
    preflight(settings)
    from flows.run import follow, start_work_order

    extra = {"sync_interval_seconds": args.sync_every} if args.sync_every else {}
    run = start_work_order(settings, work_order, registry_uri=args.registry, again=args.again, **extra)
    print(f"Work order {work_order.id} started: {run.url}")
    if args.no_wait:
        print(f"Follow it in the Prefect UI, or with: kazi status {work_order.id}")
        return 0
    state = follow(settings, work_order.id, run.id, timeout_seconds=args.timeout)
    from flows.status import collect, render

    print()
    print(render(collect(settings, work_order.id)))
    return 0 if state == "COMPLETED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from flows.core.settings import export_prefect_env

    settings = load_settings()
    export_prefect_env(settings)
    from flows.status import collect, render

    status = collect(settings, args.work_order_id, with_runs=not args.no_runs)
    print(render(status))
    return 0 if status.found or status.runs else 1


class UsageError(Exception):
    """A mistake in what the user asked for; the message says how to fix it."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kazi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="bring the local stack up, down, or show its status")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=cmd_stack)

    for name, helptext in [
        ("smoke", "bring the stack up and run the smoke flow (S3 round trip + a Label Studio project)"),
        ("demo", "bring the stack up and run the main job on the embedded stack"),
    ]:
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--no-stack", action="store_true", help="do not start the local stack")
        p.set_defaults(func=cmd_smoke)

    p = sub.add_parser("run", help="run a work order from a YAML file (or s3:// URI) on the work pool's workers")
    p.add_argument("work_order", metavar="WORK_ORDER.yaml")
    p.add_argument("--registry", help="partner registry URI (default: the workspace registry)")
    p.add_argument("--no-wait", action="store_true", help="start the run and return")
    p.add_argument("--again", action="store_true", help="start even if a run of this work order is under way")
    p.add_argument("--sync-every", type=float, metavar="SECONDS", help="how often annotations are synced (default 15)")
    p.add_argument("--timeout", type=float, default=24 * 3600, help="stop following after this many seconds")
    p.add_argument("--no-stack", action="store_true", help="do not start the local stack")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="show a work order's stages, progress, reports and flow runs")
    p.add_argument("work_order_id", metavar="WORK_ORDER_ID")
    p.add_argument("--no-runs", action="store_true", help="only the workspace, not Prefect's flow runs")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("sites", help="list partner sites and whether they may get work")
    p.add_argument("--registry", help="registry YAML: a file or s3:// URI (default: the workspace registry)")
    p.add_argument("--task-type", help="also check the skill for this task type")
    p.set_defaults(func=cmd_sites)

    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Known failures carry a message that says what to do; print that line, not a traceback.
        from flows.core.labelstudio import LabelStudioError
        from flows.core.s3 import S3Error
        from flows.run import RunError
        from flows.stack.process import StackError

        if isinstance(exc, UsageError):
            print(f"kazi: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, S3Error | LabelStudioError | StackError | RunError):
            print(f"kazi: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
