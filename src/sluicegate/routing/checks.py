"""What a routing override must be before it is stored: it sets something, its cost ceiling says
what happens beyond it, and every provider, fallback model and region it names is one the
providers file configures (a typo would otherwise block or misroute requests without a word)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sluicegate.core.errors import InvalidInput
from sluicegate.providers.config import ProviderSettings
from sluicegate.routing.overrides import RoutingOverride

# The fields that name providers of the providers file.
PROVIDER_FIELDS = ("provider_order", "allowed_providers", "ignored_providers")
# How many known names an error message lists before it stops.
LISTED_NAMES = 20


def check_override(override: RoutingOverride, providers: ProviderSettings) -> RoutingOverride:
    """The override to store, or InvalidInput (422) naming the field (and the entry) at fault.

    Provider names and model ids are checked when the gateway has a providers file; without
    one it serves nothing, and there is nothing to check them against.
    """
    if override == RoutingOverride():
        raise InvalidInput(
            "body: the override sets nothing; set at least one field, or DELETE the group's "
            "override to inherit every field from the groups above",
            details={"field": "body"},
        )
    if override.max_cost_per_request_nusd is not None and override.on_cost_exceeded is None:
        override = replace(override, on_cost_exceeded="refuse")
    if providers.providers:
        for field in PROVIDER_FIELDS:
            names: tuple[str, ...] = getattr(override, field) or ()
            _known(field, names, providers.providers, "provider")
    if providers.models:
        _known("fallbacks", override.fallbacks or (), providers.models, "model")
    if providers.providers and override.allowed_regions is not None:
        _known("allowed_regions", override.allowed_regions, declared_regions(providers), "region")
    return override


def declared_regions(providers: ProviderSettings) -> dict[str, None]:
    """The regions the providers file declares, its providers' and its deployments' own, in the
    order it names them."""
    regions = [config.policy.region for config in providers.providers.values()]
    regions += [
        route.region for served in providers.models.values() for route in served.deployments
    ]
    return {region: None for region in regions if region is not None}


def _known(field: str, names: tuple[str, ...], configured: Mapping[str, object], kind: str) -> None:
    for name in names:
        if name not in configured:
            listed = list(configured)
            shown = ", ".join(listed[:LISTED_NAMES])
            if len(listed) > LISTED_NAMES:
                shown += ", ..."
            raise InvalidInput(
                f"{field}: '{name}' is not a {kind} of this gateway's providers file "
                f"(configured: {shown or 'none'})",
                details={"field": field, "entry": name},
            )
