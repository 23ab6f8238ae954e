"""Routing's domain objects built directly: providers with their data policies, deployments,
served models, group overrides, and a health board on the in-process bus."""

from __future__ import annotations

import random
from collections.abc import Iterable

from sluicegate.core.clock import ManualClock
from sluicegate.core.invalidation import MemoryInvalidationBus
from sluicegate.providers.catalog import ModelPrice
from sluicegate.providers.deployment import DataPolicy, ModelRoute, ProviderConfig, ServedModel
from sluicegate.routing.balance import Balancer
from sluicegate.routing.health import HealthBoard, HealthRules
from sluicegate.routing.overrides import EffectiveRouting, RoutingOverride, effective
from sluicegate.routing.plan import Router

# One USD per million tokens, in nano-USD per million tokens.
USD = 1_000_000_000


def provider(
    name: str,
    *,
    zdr: bool = False,
    no_training: bool = False,
    no_prompt_logging: bool = False,
    certifications: Iterable[str] = (),
    region: str | None = None,
) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        type="openai",
        base_url=f"http://127.0.0.1:9/{name}",
        api_key=None,
        api_version=None,
        headers=(),
        max_connections=10,
        timeout_seconds=None,
        policy=DataPolicy(
            zdr=zdr,
            no_training=no_training,
            no_prompt_logging=no_prompt_logging,
            certifications=frozenset(certifications),
            region=region,
        ),
    )


def price(
    input_nusd: int = USD, output_nusd: int = 2 * USD, cached_nusd: int | None = None
) -> ModelPrice:
    return ModelPrice(
        input_nusd_per_mtok=input_nusd,
        output_nusd_per_mtok=output_nusd,
        cached_input_nusd_per_mtok=input_nusd if cached_nusd is None else cached_nusd,
    )


def route(
    model: str,
    upstream: ProviderConfig,
    *,
    deployment: str | None = None,
    cost: ModelPrice | None = None,
    region: str | None = None,
    priority: int = 0,
    weight: int = 1,
    rpm: int | None = None,
    tpm: int | None = None,
    max_output_tokens: int = 4096,
    context_window: int = 128_000,
) -> ModelRoute:
    """A deployment of `model` on `upstream`; its region falls back to the provider's, as the
    providers file resolves it."""
    return ModelRoute(
        id=model,
        provider=upstream,
        upstream_model=model,
        mode="chat",
        price=cost or price(),
        context_window=context_window,
        max_output_tokens=max_output_tokens,
        catalog_id=None,
        deployment=deployment or f"{upstream.name}/{model}",
        region=region or upstream.policy.region,
        priority=priority,
        weight=weight,
        rpm=rpm,
        tpm=tpm,
    )


def served(model: str, *routes: ModelRoute, strategy: str = "priority") -> ServedModel:
    return ServedModel(id=model, mode="chat", deployments=routes, strategy=strategy)


def override(group: str = "grp_team", **fields: object) -> EffectiveRouting:
    """The override in force when one group, `group`, sets `fields`."""
    return effective([(group, RoutingOverride(**fields))])  # type: ignore[arg-type]


def memory_board(clock: ManualClock, rules: HealthRules | None = None) -> HealthBoard:
    """A health board of one process, listening to its own announcements."""
    bus = MemoryInvalidationBus()
    board = HealthBoard(rules or HealthRules(), clock, bus)
    bus.subscribe(board.on_message)
    return board


def router(clock: ManualClock | None = None, rules: HealthRules | None = None) -> Router:
    return Router(memory_board(clock or ManualClock(), rules), Balancer(random.Random(0)))


def names(routes: Iterable[ModelRoute]) -> list[str]:
    return [r.deployment for r in routes]
