"""Policies as the proxy applies them: every policy bound along a key's chain (org, groups,
member, key) applies, so the effective policy is their intersection and the most restrictive rule
wins. Each denial names the policy and where it is bound."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

IPNetwork = IPv4Network | IPv6Network
# Per-model decisions are cached per effective policy; a flood of made-up model names must not
# grow that cache without bound.
MAX_CACHED_MODELS = 256


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One policy as loaded for the proxy. None: no rule of that kind."""

    id: str
    name: str
    allowed_models: tuple[str, ...] | None
    blocked_models: tuple[str, ...]
    ip_allowlist: tuple[IPNetwork, ...] | None
    rpm: int | None
    tpm: int | None
    max_tokens: int | None

    @classmethod
    def build(
        cls,
        id: str,
        name: str,
        allowed_models: list[str] | None,
        blocked_models: list[str] | None,
        ip_allowlist: list[str] | None,
        rpm: int | None,
        tpm: int | None,
        max_tokens: int | None,
    ) -> PolicyRule:
        networks = None
        if ip_allowlist is not None:
            networks = tuple(ip_network(entry, strict=False) for entry in ip_allowlist)
        return cls(
            id,
            name,
            tuple(allowed_models) if allowed_models is not None else None,
            tuple(blocked_models or ()),
            networks,
            rpm,
            tpm,
            max_tokens,
        )


@dataclass(frozen=True, slots=True)
class Bound:
    """A policy where it applies: bound to (target_type, target_id); `where` says it in words."""

    rule: PolicyRule
    where: str
    target_type: str
    target_id: str

    def describe(self) -> str:
        return f"policy '{self.rule.name}' ({self.rule.id}) on {self.where}"


class EffectivePolicy:
    """Every policy bound along one key's chain, checked together."""

    __slots__ = ("_models", "bound", "ip_rules", "max_tokens")

    def __init__(self, bound: tuple[Bound, ...]) -> None:
        self.bound = bound
        self.ip_rules = tuple(b for b in bound if b.rule.ip_allowlist is not None)
        caps = [b for b in bound if b.rule.max_tokens is not None]
        self.max_tokens: Bound | None = (
            min(caps, key=lambda b: b.rule.max_tokens or 0) if caps else None
        )
        self._models: dict[str, str | None] = {}

    @property
    def empty(self) -> bool:
        return not self.bound

    def model_denial(self, model: str) -> str | None:
        """Why `model` may not be used here, or None."""
        if not self.bound:
            return None
        cached = self._models.get(model, "")
        if cached != "":
            return cached
        denial = self._judge_model(model)
        if len(self._models) >= MAX_CACHED_MODELS:
            self._models.clear()
        self._models[model] = denial
        return denial

    def _judge_model(self, model: str) -> str | None:
        for bound in self.bound:
            rule = bound.rule
            for pattern in rule.blocked_models:
                if fnmatchcase(model, pattern):
                    return f"The model '{model}' is blocked by {bound.describe()} ('{pattern}')."
            allowed = rule.allowed_models
            if allowed is not None and not any(fnmatchcase(model, p) for p in allowed):
                return f"The model '{model}' is not among the models allowed by {bound.describe()}."
        return None

    def ip_denial(self, address: str | None) -> str | None:
        """Why a caller at `address` may not call here, or None."""
        if not self.ip_rules:
            return None
        try:
            ip = ip_address(address) if address else None
        except ValueError:
            ip = None
        for bound in self.ip_rules:
            networks = bound.rule.ip_allowlist or ()
            if ip is None or not any(ip in network for network in networks):
                shown = address or "an unknown address"
                return f"Calls from {shown} are not allowed by {bound.describe()}."
        return None

    def allows_models(self, model: str) -> bool:
        return self.model_denial(model) is None


# The policy of a key nothing is bound to.
NO_POLICY = EffectivePolicy(())


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]
) -> str | None:
    """The caller's address: the peer, unless the peer is a trusted proxy, in which case the
    right-most X-Forwarded-For entry that is not itself a trusted proxy."""
    if not trusted or not forwarded_for or not _within(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _within(address: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    if not address:
        return False
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
