"""A group's routing override and how overrides along a key's chain combine: the nearest group
that sets a field wins that field (org -> divisions -> teams -> projects)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, Protocol

from sluicegate.providers.deployment import CERTIFICATIONS, DATA_POLICIES

__all__ = ["CERTIFICATIONS", "DATA_POLICIES", "EffectiveRouting", "RoutingOverride", "effective"]

CostAction = Literal["refuse", "cheaper"]


@dataclass(frozen=True, slots=True)
class RoutingOverride:
    """The fields one group sets; None leaves the field to the groups above it."""

    provider_order: tuple[str, ...] | None = None
    allowed_providers: tuple[str, ...] | None = None
    ignored_providers: tuple[str, ...] | None = None
    required_policies: frozenset[str] | None = None  # of DATA_POLICIES
    required_certifications: frozenset[str] | None = None  # of CERTIFICATIONS
    allowed_regions: tuple[str, ...] | None = None
    fallbacks: tuple[str, ...] | None = None  # model ids, tried in order after the asked one
    max_cost_per_request_nusd: int | None = None
    on_cost_exceeded: CostAction | None = None


OVERRIDE_FIELDS = tuple(f.name for f in fields(RoutingOverride))


@dataclass(frozen=True, slots=True)
class EffectiveRouting:
    """The override in force for one group: each field from the nearest group that sets it,
    and which group that was (`source`, field -> group id), so a refusal can name it."""

    override: RoutingOverride = RoutingOverride()
    source: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.source


NO_OVERRIDE = EffectiveRouting()


def effective(chain: Sequence[tuple[str, RoutingOverride]]) -> EffectiveRouting:
    """Combine the overrides of a chain of groups given root first: (group id, override)."""
    values: dict[str, object] = {}
    source: dict[str, str] = {}
    for group_id, override in chain:
        for name in OVERRIDE_FIELDS:
            value = getattr(override, name)
            if value is not None:
                values[name] = value
                source[name] = group_id
    if not source:
        return NO_OVERRIDE
    return EffectiveRouting(RoutingOverride(**values), source)  # type: ignore[arg-type]


class ChainOverrides(Protocol):
    """One org's overrides, as the proxy reads them (routing/cache.py)."""

    def for_chain(self, group_chain: tuple[str, ...]) -> EffectiveRouting:
        """The override in force for a key whose group chain (root first) is `group_chain`."""
        ...


class OverrideSource(Protocol):
    async def get(self, org_id: str) -> ChainOverrides: ...
