"""Which partner sites may take a work order, and in words why the others may not.

Impact sourcing is the point of Kazi: a site that pays below the local living wage, whose social audit
has lapsed or failed, or that is suspended gets no work, however cheap or fast it is. Every reason is
spelled out with its figures so the passed-over list in the plan explains itself to an operator.
"""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flows.core.models import AuditStatus, PartnerRegistry, PartnerSite, WorkOrder


def check_site(site: PartnerSite, work_order: WorkOrder, today: date) -> list[str]:
    """Reasons ``site`` is passed over for ``work_order`` on ``today``; empty means eligible.

    Args:
        site: The partner site.
        work_order: The work order to staff.
        today: The date the audit's validity is judged on.

    Returns:
        One plain-language reason per failed rule, in a fixed order.
    """
    reasons = impact_reasons(site, today)
    if work_order.task_type not in site.task_types:
        skills = ", ".join(t.value for t in site.task_types) or "none"
        reasons.append(f"lacks the {work_order.task_type.value} skill (has: {skills})")
    reasons.extend(_capacity_reasons(site, work_order))
    try:
        ZoneInfo(site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        reasons.append(f"unknown time zone {site.timezone!r}: its shifts cannot be placed")
    return reasons


def impact_reasons(site: PartnerSite, today: date) -> list[str]:
    """Reasons from the social-impact screening alone (wage, audit, suspension); empty means it passes."""
    reasons: list[str] = []
    impact = site.impact
    if impact.hourly_wage < impact.living_wage:
        reasons.append(
            f"pays {impact.hourly_wage:,.2f} {impact.currency}/h, below the local living wage of "
            f"{impact.living_wage:,.2f} {impact.currency}/h"
        )
    valid_until = impact.last_audit + timedelta(days=impact.audit_valid_days)
    if today > valid_until:
        ago = (today - impact.last_audit).days
        reasons.append(
            f"audit lapsed: last audit {impact.last_audit.isoformat()}, {ago} days ago "
            f"(valid for {impact.audit_valid_days} days, until {valid_until.isoformat()})"
        )
    if impact.audit_status != AuditStatus.PASSED:
        reasons.append(f"audit status is {impact.audit_status.value}, not passed")
    if impact.suspended:
        reasons.append("site is suspended")
    return reasons


def _capacity_reasons(site: PartnerSite, work_order: WorkOrder) -> list[str]:
    cap = site.capacity
    task_type = work_order.task_type
    zero = []
    if cap.annotators == 0:
        zero.append("0 annotators")
    if cap.hours_per_day == 0:
        zero.append("0 hours per day")
    if cap.items_per_hour.get(task_type) == 0:
        zero.append(f"0 {task_type.value} tasks per hour")
    if zero:
        return [f"zero capacity: {', '.join(zero)}"]
    if not work_order.overlap_across_sites and cap.annotators < work_order.overlap:
        # The k answers of an item stay at one site and Label Studio needs k distinct annotators for them.
        return [
            f"has {cap.annotators} annotators, fewer than the overlap of {work_order.overlap} distinct "
            "annotators each item needs at one site"
        ]
    return []


def eligible_sites(
    registry: PartnerRegistry, work_order: WorkOrder, today: date
) -> tuple[list[PartnerSite], dict[str, str]]:
    """Split the registry into eligible sites (registry order) and passed-over site id -> reasons."""
    eligible: list[PartnerSite] = []
    passed_over: dict[str, str] = {}
    for site in registry.sites:
        reasons = check_site(site, work_order, today)
        if reasons:
            passed_over[site.id] = "; ".join(reasons)
        else:
            eligible.append(site)
    return eligible, passed_over
