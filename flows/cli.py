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
        from flows.stack.process import StackError

        if isinstance(exc, S3Error | LabelStudioError | StackError):
            print(f"kazi: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
