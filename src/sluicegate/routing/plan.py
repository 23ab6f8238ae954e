"""One request's route plan: the deployments to try, in order, across the model asked for and its
fallback models, after every filter the group overrides and the request itself set.

Filters are hard: compliance (required data policies, certifications, regions, allowed and
ignored providers) comes from the key's group chain and no request field can loosen it; the
request's own `provider` fields only narrow further. When a filter leaves nothing, the request
is refused naming that filter, and nothing is sent upstream. Deployments cooling down are left
out while another candidate remains (routing/health.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sluicegate.core.money import nanos_to_usd
from sluicegate.providers.catalog import ModelPrice
from sluicegate.providers.deployment import ModelRoute, ServedModel
from sluicegate.routing.balance import Balancer
from sluicegate.routing.health import HealthBoard
from sluicegate.routing.overrides import EffectiveRouting
from sluicegate.routing.preferences import Preferences


class NoRoute(Exception):
    """No deployment may serve the request. `kind`: compliance (403), cost_ceiling (403) or
    cooling_down (503, with `retry_after` seconds)."""

    def __init__(self, kind: str, requirement: str, retry_after: int | None = None) -> None:
        super().__init__(requirement)
        self.kind = kind
        self.requirement = requirement
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Filter:
    describe: str
    keeps: Callable[[ModelRoute], bool]


class Router:
    def __init__(self, health: HealthBoard, balancer: Balancer) -> None:
        self.health = health
        self.balancer = balancer

    def plan(
        self,
        chain: Sequence[ServedModel],
        preferences: Preferences,
        override: EffectiveRouting,
    ) -> list[ModelRoute]:
        """The candidates in the order to try them; NoRoute when none may serve."""
        if (
            len(chain) == 1
            and len(chain[0].deployments) == 1
            and preferences.empty
            and override.empty
            and self.health.all_healthy
        ):
            return [chain[0].primary]  # one model, one deployment: nothing to choose
        filters = _filters(override, preferences)
        now_ms = self.health.now_ms()
        order = preferences.order or override.override.provider_order
        candidates: list[ModelRoute] = []
        for served in chain:
            kept = list(served.deployments)
            for rule in filters:
                kept = [route for route in kept if rule.keeps(route)]
            ranked = self.balancer.order(kept, served.strategy, preferences.sort, now_ms)
            if order:
                ranked = _in_order(ranked, order, only=not preferences.allow_fallbacks)
            elif not preferences.allow_fallbacks:
                ranked = ranked[:1]
            candidates.extend(ranked)
        if not candidates:
            raise NoRoute("compliance", _emptied_by(chain, filters, preferences, order))
        return self._healthy(candidates, now_ms)

    def _healthy(self, candidates: list[ModelRoute], now_ms: int) -> list[ModelRoute]:
        if self.health.all_healthy or len(candidates) == 1:
            return candidates  # the only way is never closed by a cooldown
        health = self.health
        ready = [r for r in candidates if health.cooling_until(r.deployment, now_ms) is None]
        if ready:
            return ready
        soonest = min(health.cooling_until(r.deployment, now_ms) or now_ms for r in candidates)
        wait = max((soonest - now_ms + 999) // 1000, 1)
        names = ", ".join(dict.fromkeys(r.deployment for r in candidates))
        raise NoRoute("cooling_down", f"every deployment is cooling down ({names})", wait)


def within_ceiling(
    candidates: list[ModelRoute],
    worst_cost: Callable[[ModelRoute], int],
    override: EffectiveRouting,
) -> list[ModelRoute]:
    """The candidates a group's per-request cost ceiling lets through: with `refuse` (the
    default) the request is refused when the model asked for exceeds it, and dearer fallbacks
    are left out; with `cheaper`, every deployment over it is left out."""
    ceiling = override.override.max_cost_per_request_nusd
    if ceiling is None:
        return candidates
    kept = [route for route in candidates if worst_cost(route) <= ceiling]
    refuse = override.override.on_cost_exceeded != "cheaper"
    asked = worst_cost(candidates[0])
    if kept and not (refuse and asked > ceiling):
        return kept
    # What exceeded it: the model asked for (refuse), or even the cheapest deployment (cheaper).
    quoted = asked if refuse else min(worst_cost(route) for route in candidates)
    group = override.source.get("max_cost_per_request_nusd", "?")
    raise NoRoute(
        "cost_ceiling",
        f"the routing override of group {group} allows at most "
        f"{nanos_to_usd(ceiling)} USD per request; this request may cost up to "
        f"{nanos_to_usd(quoted)} USD",
    )


def worst_case(candidates: Sequence[ModelRoute]) -> ModelRoute:
    """A route priced and sized as the dearest of the candidates in every part, so that a
    reservation made for it covers whichever deployment ends up serving."""
    first = candidates[0]
    if len(candidates) == 1:
        return first
    prices = [route.price for route in candidates]
    dearest_input = max(p.input_nusd_per_mtok for p in prices)
    price = ModelPrice(
        input_nusd_per_mtok=dearest_input,
        output_nusd_per_mtok=max(p.output_nusd_per_mtok for p in prices),
        cached_input_nusd_per_mtok=dearest_input,
    )
    return replace(
        first,
        price=price,
        max_output_tokens=max(route.max_output_tokens for route in candidates),
        context_window=max(route.context_window for route in candidates),
    )


def _filters(override: EffectiveRouting, preferences: Preferences) -> list[_Filter]:
    rules: list[_Filter] = []
    wanted = override.override

    def named(field: str) -> str:
        return f"the routing override of group {override.source.get(field, '?')}: {field}"

    if wanted.allowed_providers is not None:
        allowed = frozenset(wanted.allowed_providers)
        rules.append(
            _Filter(
                f"{named('allowed_providers')} {sorted(allowed)}",
                lambda r: r.provider.name in allowed,
            )
        )
    if wanted.ignored_providers:
        ignored = frozenset(wanted.ignored_providers)
        rules.append(_Filter(named("ignored_providers"), lambda r: r.provider.name not in ignored))

    def required(field: str, item: str) -> str:
        group = override.origin.get(item, override.source.get(field, "?"))
        return f"the routing override of group {group}: {field} {item}"

    for policy in sorted(wanted.required_policies or ()):
        rules.append(_Filter(required("required_policies", policy), _meets(policy)))
    for certification in sorted(wanted.required_certifications or ()):
        rules.append(
            _Filter(required("required_certifications", certification), _meets(certification))
        )
    if wanted.allowed_regions is not None:
        regions = frozenset(wanted.allowed_regions)
        rules.append(
            _Filter(f"{named('allowed_regions')} {sorted(regions)}", lambda r: r.region in regions)
        )
    if preferences.empty:
        return rules
    if preferences.only is not None:
        only = frozenset(preferences.only)
        rules.append(_Filter("provider.only", lambda r: r.provider.name in only))
    if preferences.ignore:
        ignore = frozenset(preferences.ignore)
        rules.append(_Filter("provider.ignore", lambda r: r.provider.name not in ignore))
    for policy in sorted(preferences.requires):
        field = "provider.zdr" if policy == "zdr" else "provider.data_collection"
        rules.append(_Filter(f"{field} ({policy})", _meets(policy)))
    top_input, top_output = preferences.max_input_price, preferences.max_output_price
    if top_input is not None:
        rules.append(
            _Filter("provider.max_price.prompt", lambda r: r.price.input_nusd_per_mtok <= top_input)
        )
    if top_output is not None:
        rules.append(
            _Filter(
                "provider.max_price.completion",
                lambda r: r.price.output_nusd_per_mtok <= top_output,
            )
        )
    return rules


def _meets(requirement: str) -> Callable[[ModelRoute], bool]:
    return lambda route: route.provider.policy.meets(requirement)


def _in_order(ranked: list[ModelRoute], order: Sequence[str], *, only: bool) -> list[ModelRoute]:
    """The named providers' deployments first, in the order named; the rest after (or not at
    all when the request allows no fallbacks)."""
    position = {name: index for index, name in enumerate(order)}
    named = sorted(
        (r for r in ranked if r.provider.name in position), key=lambda r: position[r.provider.name]
    )
    if only:
        return named
    return named + [r for r in ranked if r.provider.name not in position]


def _emptied_by(
    chain: Sequence[ServedModel],
    filters: Sequence[_Filter],
    preferences: Preferences,
    order: Sequence[str] | None,
) -> str:
    """The first filter after which no deployment of any model in the chain was left."""
    routes = [route for served in chain for route in served.deployments]
    for rule in filters:
        routes = [route for route in routes if rule.keeps(route)]
        if not routes:
            return rule.describe
    if order and not preferences.allow_fallbacks:
        return "provider.order with provider.allow_fallbacks false"
    return "the request's provider preferences"
