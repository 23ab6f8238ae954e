"""A request's route plan: group overrides are hard filters no request field loosens, request
preferences narrow further, order and fallbacks set the order, and cooling deployments are
routed around while another remains."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.core.clock import ManualClock
from sluicegate.providers.catalog import ModelPrice
from sluicegate.providers.deployment import (
    CERTIFICATIONS,
    DATA_POLICIES,
    STRATEGIES,
    ModelRoute,
    ServedModel,
)
from sluicegate.routing.balance import Balancer
from sluicegate.routing.health import HealthRules
from sluicegate.routing.overrides import NO_OVERRIDE, EffectiveRouting, RoutingOverride, effective
from sluicegate.routing.plan import NoRoute, Router, within_ceiling, worst_case
from sluicegate.routing.preferences import NO_PREFERENCES, Preferences
from tests.routing.builders import (
    USD,
    memory_board,
    names,
    override,
    price,
    provider,
    route,
    router,
    served,
)

OPENAI = provider("openai", no_training=True)
AZURE = provider("azure", zdr=True, no_training=True, no_prompt_logging=True, region="eu")
ANTHROPIC = provider("anthropic", zdr=True, certifications={"soc2"}, region="us")

GPT = served(
    "gpt-4o",
    route("gpt-4o", OPENAI),
    route("gpt-4o", AZURE),
    route("gpt-4o", ANTHROPIC),
)
CLAUDE = served("claude", route("claude", ANTHROPIC), route("claude", AZURE))
RULES = HealthRules(allowed_fails=1, cooldown_seconds=30)


def refusal(
    chain: list[ServedModel], preferences: Preferences, routing: EffectiveRouting
) -> NoRoute:
    with pytest.raises(NoRoute) as caught:
        router().plan(chain, preferences, routing)
    return caught.value


# --- compliance is hard -------------------------------------------------------------------

REGIONS = (None, "us", "eu")
PROVIDER_NAMES = ("p0", "p1", "p2", "p3", "p4")

policies = st.builds(
    provider,
    st.sampled_from(PROVIDER_NAMES),
    zdr=st.booleans(),
    no_training=st.booleans(),
    no_prompt_logging=st.booleans(),
    certifications=st.frozensets(st.sampled_from(CERTIFICATIONS)),
    region=st.sampled_from(REGIONS),
)
prices = st.builds(price, st.integers(0, 20 * USD), st.integers(0, 60 * USD))
names_of_providers = st.lists(st.sampled_from(PROVIDER_NAMES), max_size=3, unique=True)


@st.composite
def chains(draw: st.DrawFn) -> list[ServedModel]:
    """One to three models; each deployment on one of a handful of providers."""
    by_name = {p.name: p for p in draw(st.lists(policies, min_size=1, max_size=5))}
    chain = []
    for model in ("asked", "fallback-1", "fallback-2")[: draw(st.integers(1, 3))]:
        upstreams = draw(st.lists(st.sampled_from(sorted(by_name)), min_size=1, max_size=4))
        routes = [
            route(model, by_name[name], deployment=f"{model}-{i}", cost=draw(prices))
            for i, name in enumerate(upstreams)
        ]
        chain.append(served(model, *routes, strategy=draw(st.sampled_from(STRATEGIES))))
    return chain


request_preferences = st.builds(
    Preferences,
    order=st.none() | names_of_providers.map(tuple),
    allow_fallbacks=st.booleans(),
    only=st.none() | names_of_providers.map(tuple),
    ignore=st.none() | names_of_providers.map(tuple),
    requires=st.frozensets(st.sampled_from(DATA_POLICIES)),
    max_input_price=st.none() | st.integers(0, 20 * USD),
    max_output_price=st.none() | st.integers(0, 60 * USD),
    sort=st.none() | st.sampled_from(("price", "latency", "throughput")),
)

group_overrides = st.builds(
    RoutingOverride,
    provider_order=st.none() | names_of_providers.map(tuple),
    allowed_providers=st.none() | names_of_providers.map(tuple),
    ignored_providers=st.none() | names_of_providers.map(tuple),
    required_policies=st.none() | st.frozensets(st.sampled_from(DATA_POLICIES)),
    required_certifications=st.none() | st.frozensets(st.sampled_from(CERTIFICATIONS)),
    allowed_regions=st.none() | st.lists(st.sampled_from(("us", "eu")), unique=True).map(tuple),
)


def override_keeps(routing: RoutingOverride, r: ModelRoute) -> bool:
    policy = r.provider.policy
    return (
        (routing.allowed_providers is None or r.provider.name in routing.allowed_providers)
        and r.provider.name not in (routing.ignored_providers or ())
        and all(policy.meets(p) for p in routing.required_policies or ())
        and all(c in policy.certifications for c in routing.required_certifications or ())
        and (routing.allowed_regions is None or r.region in routing.allowed_regions)
    )


def request_keeps(wanted: Preferences, r: ModelRoute) -> bool:
    return (
        (wanted.only is None or r.provider.name in wanted.only)
        and r.provider.name not in (wanted.ignore or ())
        and all(r.provider.policy.meets(p) for p in wanted.requires)
        and (
            wanted.max_input_price is None or r.price.input_nusd_per_mtok <= wanted.max_input_price
        )
        and (
            wanted.max_output_price is None
            or r.price.output_nusd_per_mtok <= wanted.max_output_price
        )
    )


@settings(max_examples=300)
@given(chains(), request_preferences, st.frozensets(st.sampled_from(DATA_POLICIES)))
def test_an_override_requiring_zdr_is_never_loosened_by_the_request(
    chain: list[ServedModel], wanted: Preferences, more: frozenset[str]
) -> None:
    required = frozenset({"zdr"}) | more
    routing = override("grp_legal", required_policies=required)
    try:
        candidates = router().plan(chain, wanted, routing)
    except NoRoute as refused:
        assert refused.kind == "compliance"
        compliant = [
            r
            for s in chain
            for r in s.deployments
            if all(r.provider.policy.meets(p) for p in required)
        ]
        if not compliant:  # the override emptied it, and the refusal says which of its parts
            assert refused.requirement.startswith(
                "the routing override of group grp_legal: required_policies "
            )
        else:  # the request's own fields did
            assert refused.requirement.startswith("provider.")
        return
    assert candidates
    assert all(r.provider.policy.zdr for r in candidates)


@settings(max_examples=300)
@given(chains(), request_preferences | st.just(NO_PREFERENCES), group_overrides)
def test_every_candidate_passes_every_filter_and_a_refusal_means_none_could(
    chain: list[ServedModel], wanted: Preferences, group: RoutingOverride
) -> None:
    routing = effective([("grp_org", group)])
    passing = [
        r
        for s in chain
        for r in s.deployments
        if override_keeps(group, r) and request_keeps(wanted, r)
    ]
    order = wanted.order or group.provider_order
    if order and not wanted.allow_fallbacks:
        passing = [r for r in passing if r.provider.name in order]
    try:
        candidates = router().plan(chain, wanted, routing)
    except NoRoute as refused:
        assert refused.kind == "compliance"
        assert not passing, f"refused ({refused.requirement}) though {names(passing)} qualify"
        return
    assert candidates, "a plan is never empty"
    assert len(set(names(candidates))) == len(candidates)
    assert set(names(candidates)) <= set(names(passing))
    models = [s.id for s in chain]
    positions = [models.index(r.id) for r in candidates]
    assert positions == sorted(positions), "a fallback model before the one asked for"


def test_a_refusal_names_the_override_requirement_and_its_group() -> None:
    chain = [served("gpt-4o", route("gpt-4o", OPENAI))]
    refused = refusal(chain, NO_PREFERENCES, override("grp_legal", required_policies={"zdr"}))
    assert refused.kind == "compliance"
    assert refused.requirement == "the routing override of group grp_legal: required_policies zdr"


def test_a_refusal_names_the_filter_that_emptied_the_set_not_an_earlier_one() -> None:
    routing = override("grp_legal", allowed_providers=("openai",), required_policies={"zdr"})
    refused = refusal([GPT], NO_PREFERENCES, routing)
    assert refused.requirement == "the routing override of group grp_legal: required_policies zdr"
    routing = override("grp_legal", allowed_providers=("mistral",), required_policies={"zdr"})
    refused = refusal([GPT], NO_PREFERENCES, routing)
    assert refused.requirement == (
        "the routing override of group grp_legal: allowed_providers ['mistral']"
    )


def test_the_nearest_group_narrowing_a_list_is_the_one_named() -> None:
    """A team narrows the org's regions to what both allow; it cannot widen them."""
    routing = effective(
        [
            ("grp_org", RoutingOverride(allowed_regions=("us", "apac"))),
            ("grp_team", RoutingOverride(allowed_regions=("apac", "eu"))),
        ]
    )
    assert routing.override.allowed_regions == ("apac",)
    refused = refusal([GPT], NO_PREFERENCES, routing)
    assert refused.requirement == "the routing override of group grp_team: allowed_regions ['apac']"


def test_a_requirement_is_named_after_the_group_that_first_set_it() -> None:
    routing = effective(
        [
            ("grp_org", RoutingOverride(required_certifications=frozenset({"hipaa"}))),
            ("grp_team", RoutingOverride(required_policies=frozenset({"zdr"}))),
            # A project cannot drop what the org requires.
            ("grp_project", RoutingOverride(required_certifications=frozenset())),
        ]
    )
    assert routing.override.required_certifications == frozenset({"hipaa"})
    refused = refusal([GPT, CLAUDE], NO_PREFERENCES, routing)
    assert refused.requirement == (
        "the routing override of group grp_org: required_certifications hipaa"
    )


def test_a_request_cannot_reach_a_provider_the_override_ignores() -> None:
    routing = override("grp_team", ignored_providers=("openai",))
    wanted = Preferences(only=("openai",))
    refused = refusal([GPT], wanted, routing)
    assert refused.kind == "compliance"
    assert refused.requirement == "provider.only"


def test_a_certification_required_by_the_override_leaves_only_providers_holding_it() -> None:
    plan = router().plan([GPT], NO_PREFERENCES, override(required_certifications={"soc2"}))
    assert names(plan) == ["anthropic/gpt-4o"]


def test_a_refusal_by_the_request_names_the_request_field() -> None:
    wanted = Preferences(only=("mistral",))
    assert refusal([GPT], wanted, NO_OVERRIDE).requirement == "provider.only"
    wanted = Preferences(max_input_price=USD // 2)
    assert refusal([GPT], wanted, NO_OVERRIDE).requirement == "provider.max_price.prompt"
    wanted = Preferences(only=("openai",), requires=frozenset({"zdr"}))
    assert refusal([GPT], wanted, NO_OVERRIDE).requirement == "provider.zdr (zdr)"
    wanted = Preferences(only=("openai",), requires=frozenset({"no_training", "no_prompt_logging"}))
    assert refusal([GPT], wanted, NO_OVERRIDE).requirement == (
        "provider.data_collection (no_prompt_logging)"
    )


# --- order and fallbacks ------------------------------------------------------------------


def test_one_model_with_one_deployment_is_planned_as_it_is() -> None:
    only_one = served("gpt-4o", route("gpt-4o", OPENAI))
    assert router().plan([only_one], NO_PREFERENCES, NO_OVERRIDE) == [only_one.primary]


def test_request_order_puts_the_named_providers_first_in_the_order_named() -> None:
    plan = router().plan([GPT], Preferences(order=("anthropic", "azure")), NO_OVERRIDE)
    assert names(plan) == ["anthropic/gpt-4o", "azure/gpt-4o", "openai/gpt-4o"]


def test_allow_fallbacks_false_with_order_keeps_only_the_named_providers() -> None:
    wanted = Preferences(order=("anthropic",), allow_fallbacks=False)
    assert names(router().plan([GPT, CLAUDE], wanted, NO_OVERRIDE)) == [
        "anthropic/gpt-4o",
        "anthropic/claude",
    ]


def test_allow_fallbacks_false_with_order_naming_no_deployment_is_refused_saying_so() -> None:
    wanted = Preferences(order=("mistral",), allow_fallbacks=False)
    refused = refusal([GPT], wanted, NO_OVERRIDE)
    assert refused.requirement == "provider.order with provider.allow_fallbacks false"


def test_the_override_order_applies_when_the_request_names_none() -> None:
    routing = override(provider_order=("azure",))
    assert names(router().plan([GPT], NO_PREFERENCES, routing))[0] == "azure/gpt-4o"
    wanted = Preferences(order=("anthropic",))
    assert names(router().plan([GPT], wanted, routing))[0] == "anthropic/gpt-4o"


def test_fallback_models_come_after_every_deployment_of_the_model_asked_for() -> None:
    plan = router().plan([GPT, CLAUDE], NO_PREFERENCES, NO_OVERRIDE)
    assert names(plan) == names(GPT.deployments) + names(CLAUDE.deployments)


def test_an_order_naming_a_provider_does_not_pull_a_fallback_model_ahead() -> None:
    plan = router().plan([GPT, CLAUDE], Preferences(order=("anthropic",)), NO_OVERRIDE)
    assert [r.id for r in plan] == ["gpt-4o"] * 3 + ["claude"] * 2
    assert names(plan)[0] == "anthropic/gpt-4o"


def test_the_request_filters_every_model_of_the_chain() -> None:
    plan = router().plan([GPT, CLAUDE], Preferences(ignore=("anthropic",)), NO_OVERRIDE)
    assert names(plan) == ["openai/gpt-4o", "azure/gpt-4o", "azure/claude"]


# --- health -------------------------------------------------------------------------------


async def test_a_cooling_deployment_is_left_out_while_others_remain() -> None:
    clock = ManualClock()
    plans = Router(memory_board(clock, RULES), Balancer())
    await plans.health.failed("openai/gpt-4o")
    assert names(plans.plan([GPT], NO_PREFERENCES, NO_OVERRIDE)) == [
        "azure/gpt-4o",
        "anthropic/gpt-4o",
    ]
    clock.advance(RULES.cooldown_seconds)  # over: on probation, planned again
    assert len(plans.plan([GPT], NO_PREFERENCES, NO_OVERRIDE)) == 3


async def test_when_every_deployment_cools_the_request_waits_for_the_soonest() -> None:
    clock = ManualClock()
    plans = Router(memory_board(clock, RULES), Balancer())
    await plans.health.failed("openai/gpt-4o")
    clock.advance(10)
    await plans.health.failed("azure/gpt-4o")
    await plans.health.failed("anthropic/gpt-4o")
    with pytest.raises(NoRoute) as caught:
        plans.plan([GPT], NO_PREFERENCES, NO_OVERRIDE)
    assert caught.value.kind == "cooling_down"
    assert caught.value.retry_after == 20  # openai's cooldown ends first
    assert "openai/gpt-4o" in caught.value.requirement


async def test_retry_after_is_at_least_a_second() -> None:
    clock = ManualClock()
    plans = Router(memory_board(clock, RULES), Balancer())
    for deployment in names(GPT.deployments):
        await plans.health.failed(deployment)
    clock.advance(RULES.cooldown_seconds - 0.2)
    with pytest.raises(NoRoute) as caught:
        plans.plan([GPT], NO_PREFERENCES, NO_OVERRIDE)
    assert caught.value.retry_after == 1


@given(
    st.lists(st.none() | st.integers(0, 120_000), min_size=3, max_size=3),
    st.integers(0, 120_000),
)
def test_a_plan_has_no_cooling_deployment_unless_all_cool_and_then_says_when_to_retry(
    cooled_at_ms: list[int | None], later_ms: int
) -> None:
    """Each deployment fails (cooling it for 30 s) at its own time, or never; then a plan."""
    clock = ManualClock()
    board = memory_board(clock, RULES)
    plans = Router(board, Balancer())
    failures = sorted(
        (offset, d) for offset, d in zip(cooled_at_ms, names(GPT.deployments)) if offset is not None
    )
    elapsed_ms = 0
    for offset, deployment in failures:
        clock.advance((offset - elapsed_ms) / 1000)
        elapsed_ms = offset
        asyncio.run(board.failed(deployment))
    clock.advance(later_ms / 1000)
    now = board.now_ms()
    cooling = {d: board.cooling_until(d, now) for d in names(GPT.deployments)}
    try:
        plan = plans.plan([GPT], NO_PREFERENCES, NO_OVERRIDE)
    except NoRoute as refused:
        assert refused.kind == "cooling_down"
        assert all(until is not None for until in cooling.values())
        soonest = min(until for until in cooling.values() if until is not None)
        assert refused.retry_after is not None and refused.retry_after >= 1
        assert now + refused.retry_after * 1000 >= soonest > now + (refused.retry_after - 1) * 1000
        return
    assert plan
    assert all(cooling[r.deployment] is None for r in plan)
    assert len(plan) == sum(until is None for until in cooling.values())


async def test_a_single_candidate_is_never_blocked_by_its_cooldown() -> None:
    clock = ManualClock()
    plans = Router(memory_board(clock, RULES), Balancer())
    for deployment in names(GPT.deployments):
        await plans.health.failed(deployment)
    only_one = served("gpt-4o", route("gpt-4o", OPENAI))
    assert names(plans.plan([only_one], NO_PREFERENCES, NO_OVERRIDE)) == ["openai/gpt-4o"]
    wanted = Preferences(only=("azure",))  # one left after the filters
    assert names(plans.plan([GPT], wanted, NO_OVERRIDE)) == ["azure/gpt-4o"]


# --- the cost ceiling -----------------------------------------------------------------------

CHEAP = route("gpt-4o", OPENAI, cost=price(USD, USD))
DEAR = route("gpt-4o", AZURE, cost=price(10 * USD, 10 * USD))


def cost(r: ModelRoute) -> int:
    return r.price.cost_nanos(1_000, 1_000)


def ceiling(action: str | None) -> EffectiveRouting:
    return override("grp_finance", max_cost_per_request_nusd=cost(CHEAP), on_cost_exceeded=action)


def test_without_a_ceiling_every_candidate_goes_through() -> None:
    assert within_ceiling([DEAR, CHEAP], cost, NO_OVERRIDE) == [DEAR, CHEAP]


@pytest.mark.parametrize("action", [None, "refuse", "cheaper"])
def test_dearer_fallbacks_are_left_out_when_the_model_asked_for_fits(action: str | None) -> None:
    assert within_ceiling([CHEAP, DEAR], cost, ceiling(action)) == [CHEAP]


@pytest.mark.parametrize("action", [None, "refuse"])
def test_refuse_refuses_when_the_model_asked_for_exceeds_the_ceiling(action: str | None) -> None:
    with pytest.raises(NoRoute) as caught:
        within_ceiling([DEAR, CHEAP], cost, ceiling(action))
    assert caught.value.kind == "cost_ceiling"
    assert caught.value.requirement.startswith(
        "the routing override of group grp_finance allows at most 0.002000000 USD per request"
    )


def test_a_refusal_by_the_ceiling_quotes_what_the_model_asked_for_may_cost() -> None:
    """Under `refuse` the model asked for is what exceeds the ceiling, so its cost is the one
    a person needs to see (DEAR: 0.02 USD), not that of a cheaper fallback left unused."""
    with pytest.raises(NoRoute) as caught:
        within_ceiling([DEAR, CHEAP], cost, ceiling("refuse"))
    assert caught.value.requirement.endswith("this request may cost up to 0.020000000 USD"), (
        "BUG (src/sluicegate/routing/plan.py within_ceiling): the refusal quotes the cheapest "
        "candidate's cost, which is within the ceiling it says was exceeded"
    )


def test_cheaper_goes_on_to_the_deployments_under_the_ceiling() -> None:
    assert within_ceiling([DEAR, CHEAP], cost, ceiling("cheaper")) == [CHEAP]


def test_cheaper_refuses_when_nothing_is_under_the_ceiling() -> None:
    with pytest.raises(NoRoute) as caught:
        within_ceiling([DEAR], cost, ceiling("cheaper"))
    assert caught.value.kind == "cost_ceiling"


# --- the worst case ---------------------------------------------------------------------------


@st.composite
def priced_routes(draw: st.DrawFn) -> ModelRoute:
    input_nusd = draw(st.integers(0, 100 * USD))
    cost = price(
        input_nusd, draw(st.integers(0, 200 * USD)), draw(st.integers(0, input_nusd))
    )  # the providers file keeps a cached price at most the input price
    return route("m", OPENAI, cost=cost, max_output_tokens=draw(st.integers(1, 200_000)))


@given(
    st.lists(priced_routes(), min_size=1, max_size=6),
    st.integers(0, 2_000_000),
    st.integers(0, 200_000),
    st.data(),
)
def test_the_worst_case_costs_at_least_what_any_candidate_does(
    candidates: list[ModelRoute], prompt: int, completion: int, data: st.DataObject
) -> None:
    worst = worst_case(candidates)
    cached = data.draw(st.integers(0, prompt))
    for candidate in candidates:
        assert worst.price.cost_nanos(prompt, completion) >= candidate.price.cost_nanos(
            prompt, completion
        )
        assert worst.price.cost_nanos(prompt, completion, cached) >= candidate.price.cost_nanos(
            prompt, completion, cached
        )
    assert worst.max_output_tokens == max(r.max_output_tokens for r in candidates)
    assert worst.context_window == max(r.context_window for r in candidates)


def test_the_worst_case_of_one_candidate_is_that_candidate() -> None:
    assert worst_case([CHEAP]) is CHEAP


def test_the_worst_case_is_the_first_candidate_priced_as_the_dearest() -> None:
    worst = worst_case([CHEAP, DEAR])
    assert worst.deployment == CHEAP.deployment
    assert worst.price == ModelPrice(10 * USD, 10 * USD, 10 * USD)
