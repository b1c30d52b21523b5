"""The simulated workforce of a partner registry: profiles per site, and their users on each site's Label Studio."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence

from flows.core.labelstudio import resolve_secret
from flows.core.models import PartnerRegistry
from flows.core.settings import Settings
from simulation.answers import AnnotatorProfile, make_profiles
from simulation.labelstudio_users import Account, AnnotatorSession, ensure_annotators, sessions


def registry_profiles(
    registry: PartnerRegistry,
    *,
    sites: Iterable[str] | None = None,
    max_per_site: int = 8,
    spammer_share: float = 0.1,
    seed: int = 0,
    confusable: Sequence[tuple[str, str]] = (),
) -> list[AnnotatorProfile]:
    """Profiles for each site: as many as its annotators (at most ``max_per_site``), centred on its measured
    gold accuracy when it has one.

    Each site's profiles depend on the seed and the site id only, so adding a site changes no one else.
    """
    if max_per_site < 1:
        raise ValueError(f"max_per_site must be at least 1, got {max_per_site}")
    wanted = None if sites is None else set(sites)
    profiles: list[AnnotatorProfile] = []
    for site in registry.sites:
        if wanted is not None and site.id not in wanted:
            continue
        n = min(max_per_site, site.capacity.annotators)
        if n == 0:
            continue
        profiles += make_profiles(
            [site.id],
            n,
            spammer_share,
            seed=(seed * 1_000_003 + zlib.crc32(site.id.encode())) & 0xFFFFFFFF,
            confusable=confusable,
            mean_accuracy=site.gold_accuracy,
        )
    if wanted is not None and (missing := wanted - {p.site_id for p in profiles}):
        raise ValueError(f"no profiles for sites {sorted(missing)}: unknown, or no annotators")
    return profiles


def onboard(
    registry: PartnerRegistry, settings: Settings, profiles: Sequence[AnnotatorProfile]
) -> dict[str, dict[str, Account]]:
    """Every profile as a user of its site's Label Studio: ``{site_id: {profile_id: Account}}``.

    The site's admin token is the site's token secret (``KAZI_SECRETS__<NAME>`` or a Prefect Secret block).
    """
    by_site: dict[str, list[AnnotatorProfile]] = {}
    for profile in profiles:
        by_site.setdefault(profile.site_id, []).append(profile)
    accounts: dict[str, dict[str, Account]] = {}
    for site_id, members in by_site.items():
        site = registry.site(site_id)
        token = resolve_secret(settings, site.label_studio.token_secret)
        accounts[site_id] = ensure_annotators(site.label_studio.url, token, members)
    return accounts


def site_sessions(
    registry: PartnerRegistry, accounts: Mapping[str, Mapping[str, Account]]
) -> dict[str, dict[str, AnnotatorSession]]:
    """An :class:`AnnotatorSession` per annotator, grouped by site: ``{site_id: {profile_id: session}}``."""
    return {
        site_id: sessions(registry.site(site_id).label_studio.url, members) for site_id, members in accounts.items()
    }
