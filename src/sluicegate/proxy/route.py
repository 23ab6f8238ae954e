"""Stage 3's routing half: the model asked for, its fallback models (the request's `models`, else
the group override's, else the providers file's), the key's group override and the request's
`provider` preferences -> the call's candidates, in the order to try them (routing/plan.py)."""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from sluicegate.keys.lookup import AuthContext
from sluicegate.providers.base import Endpoint
from sluicegate.providers.deployment import ServedModel
from sluicegate.proxy import refusals
from sluicegate.proxy.requests import ProxyCall
from sluicegate.routing.overrides import EffectiveRouting
from sluicegate.routing.plan import NoRoute, Router
from sluicegate.routing.preferences import BadPreference, Preferences, take_preferences

MODE_OF = {Endpoint.CHAT: "chat", Endpoint.COMPLETIONS: "chat", Endpoint.EMBEDDINGS: "embedding"}


def key_allows(context: AuthContext, model: str) -> bool:
    allowed = context.allowed_models
    return allowed is None or any(fnmatchcase(model, pattern) for pattern in allowed)


class RoutePlanner:
    def __init__(self, models: Mapping[str, ServedModel], router: Router) -> None:
        self.models = models
        self.router = router

    def plan(self, call: ProxyCall, body: dict[str, Any], override: EffectiveRouting) -> None:
        """Set the call's candidates (and route: the first), or refuse it."""
        try:
            preferences = take_preferences(body)
        except BadPreference as exc:
            raise refusals.ROUTING_FIELD_INVALID.error(field=exc.field, problem=str(exc)) from None
        served = self.served(call.context, call.endpoint, call.requested_model)
        chain = [served, *self._fallbacks(call, served, preferences, override)]
        try:
            call.candidates = self.router.plan(chain, preferences, override)
        except NoRoute as exc:
            raise refusal_of(exc) from None
        call.route = call.candidates[0]
        if served.context_window_fallbacks:
            wider = [
                self.models[model_id]
                for model_id in served.context_window_fallbacks
                if key_allows(call.context, model_id)
            ]
            try:
                call.context_candidates = self.router.plan(wider, preferences, override)
            except NoRoute:
                call.context_candidates = []

    def served(self, context: AuthContext, endpoint: Endpoint, model: str) -> ServedModel:
        """The model asked for, if it exists, the key may use it and it serves this endpoint."""
        served = self.models.get(model)
        if served is None:
            raise refusals.MODEL_NOT_FOUND.error(model=model)
        if not key_allows(context, model):
            raise refusals.MODEL_NOT_ALLOWED_FOR_KEY.error(model=model)
        if served.mode != MODE_OF[endpoint]:
            raise refusals.MODEL_OF_OTHER_MODE.error(
                model=model, mode=served.mode, endpoint=endpoint
            )
        return served

    def _fallbacks(
        self,
        call: ProxyCall,
        served: ServedModel,
        preferences: Preferences,
        override: EffectiveRouting,
    ) -> list[ServedModel]:
        if preferences.models:
            # Asked for by name: each must be one the request could have asked for itself.
            named = [m for m in preferences.models if m != served.id]
            return [self.served(call.context, call.endpoint, model_id) for model_id in named]
        configured = override.override.fallbacks
        if configured is None:
            configured = served.fallbacks
        chain: list[ServedModel] = []
        for model_id in configured:
            other = self.models.get(model_id)
            # A fallback set above the key never reaches a model the key may not use.
            if (
                other is not None
                and other.id != served.id
                and other.mode == served.mode
                and key_allows(call.context, model_id)
            ):
                chain.append(other)
        return chain


def refusal_of(no_route: NoRoute) -> Exception:
    """The proxy's refusal for a plan that found no deployment."""
    if no_route.kind == "cooling_down":
        return refusals.DEPLOYMENTS_COOLING_DOWN.error(
            reason=no_route.requirement, retry_after=no_route.retry_after or 1
        )
    if no_route.kind == "cost_ceiling":
        return refusals.COST_CEILING_EXCEEDED.error(reason=no_route.requirement)
    return refusals.NO_COMPLIANT_PROVIDER.error(requirement=no_route.requirement)
