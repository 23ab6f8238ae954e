"""A group's routing override and how overrides along a key's chain combine (org -> divisions
-> teams -> projects).

Preferences are inherited and overridden: the nearest group that sets `provider_order`,
`fallbacks` or `on_cost_exceeded` wins that field. Restrictions only tighten on the way down, so
a group can add to what the groups above it require and never take it away: required data
policies, certifications and ignored providers add up; allowed providers and regions are what
every group that sets them allows; the cost ceiling is the lowest one set (with the action of
the group that set it, unless a nearer group says otherwise)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

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
_SETS = frozenset({"required_policies", "required_certifications"})


def override_from(values: Mapping[str, Any]) -> RoutingOverride:
    """An override from stored or received values (lists, or None for "not set here")."""
    given: dict[str, Any] = {}
    for name in OVERRIDE_FIELDS:
        value = values.get(name)
        if isinstance(value, list | tuple | set | frozenset):
            value = frozenset(value) if name in _SETS else tuple(value)
        given[name] = value
    return RoutingOverride(**given)


_ADDED_UP = frozenset({"ignored_providers", "required_policies", "required_certifications"})
_NARROWED = frozenset({"allowed_providers", "allowed_regions"})


@dataclass(frozen=True, slots=True)
class EffectiveRouting:
    """The override in force for one group, with the nearest group that set each field
    (`source`, field -> group id) and the group that first required each data policy or
    certification (`origin`, requirement -> group id), so a refusal can name them."""

    override: RoutingOverride = RoutingOverride()
    source: dict[str, str] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.source


NO_OVERRIDE = EffectiveRouting()


def effective(chain: Sequence[tuple[str, RoutingOverride]]) -> EffectiveRouting:
    """Combine the overrides of a chain of groups given root first: (group id, override)."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    origin: dict[str, str] = {}
    ceiling_action: object = None
    for group_id, override in chain:
        for name in OVERRIDE_FIELDS:
            value = getattr(override, name)
            if value is None:
                continue
            held = values.get(name)
            if held is not None and name in _ADDED_UP:
                value = held | value if isinstance(value, frozenset) else _union(held, value)
            elif held is not None and name in _NARROWED:
                value = tuple(item for item in value if item in held)
            elif held is not None and name == "max_cost_per_request_nusd" and held <= value:
                continue  # a higher ceiling below a lower one changes nothing
            if name == "max_cost_per_request_nusd":
                ceiling_action = override.on_cost_exceeded
            values[name] = value
            source[name] = group_id
        for requirement in (
            (override.required_policies or ()),
            (override.required_certifications or ()),
        ):
            for item in requirement:
                origin.setdefault(item, group_id)
    if not source:
        return NO_OVERRIDE
    if ceiling_action is not None and source.get("on_cost_exceeded") != source.get(
        "max_cost_per_request_nusd"
    ):
        # The ceiling in force comes with its own group's action, unless a nearer group set one.
        nearest = source.get("on_cost_exceeded")
        ceiling_group = source["max_cost_per_request_nusd"]
        if nearest is None or _above(chain, nearest, ceiling_group):
            values["on_cost_exceeded"] = ceiling_action
            source["on_cost_exceeded"] = ceiling_group
    return EffectiveRouting(RoutingOverride(**values), source, origin)


def _union(held: tuple[str, ...], value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*held, *value)))


def _above(chain: Sequence[tuple[str, RoutingOverride]], group: str, other: str) -> bool:
    """Whether `group` comes before `other` in the chain (is an ancestor of it)."""
    order = [group_id for group_id, _ in chain]
    return order.index(group) < order.index(other)


class ChainOverrides(Protocol):
    """One org's overrides, as the proxy reads them (routing/cache.py)."""

    def for_chain(self, group_chain: tuple[str, ...]) -> EffectiveRouting:
        """The override in force for a key whose group chain (root first) is `group_chain`."""
        ...


class OverrideSource(Protocol):
    async def get(self, org_id: str) -> ChainOverrides: ...
