"""The guardrail rules of one org as the proxy uses them, cached per process and dropped over the
invalidation bus when a budget, policy or guard setting changes.

For each key (with its group chain and owner) the rules resolve once into `KeyRules`: the scopes
from narrowest to widest (key, member, each group from the key's up, org), their budgets, rate
limits and the effective policy. A request's plan is then built from cached pieces: counters of
the current periods (rebuilt when a period ends) plus the request's amount and tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import Clock
from sluicegate.core.invalidation import GUARD_TOPIC, ORG_TOPIC
from sluicegate.core.money import nanos_to_usd
from sluicegate.core.org_cache import CachePolicy, OrgCache
from sluicegate.core.timezones import zone
from sluicegate.guard import repository
from sluicegate.guard.counters import (
    BudgetCounter,
    Check,
    CreditCounter,
    Plan,
    RateCounter,
    SpendScope,
    credit_counter,
)
from sluicegate.guard.models import Budget
from sluicegate.guard.periods import period_bounds
from sluicegate.guard.policy import Bound, EffectivePolicy, PolicyRule

# Backstop only: changes arrive over the bus within milliseconds.
RULES_TTL_SECONDS = 30.0
# As for keys (keys/lookup.py): rules loaded this recently serve through a database outage, and
# the database is asked again at most this often meanwhile.
STALE_IF_ERROR_SECONDS = 600.0
RETRY_AFTER_ERROR_SECONDS = 2.0
# Counters of a period are kept a day past its end, so a request settling late still finds them.
PERIOD_GRACE = timedelta(days=1)
# Keys whose resolved rules one org snapshot keeps; beyond it, the oldest are dropped.
MAX_KEYS_PER_ORG = 50_000

PERIOD_WORDS = {"day": "daily", "week": "weekly", "month": "monthly", "total": "total"}


@dataclass(frozen=True, slots=True)
class BudgetRule:
    id: str
    scope_type: str
    scope_id: str
    period: str
    limit: int
    hard: bool
    thresholds: tuple[int, ...] = ()

    @classmethod
    def of(cls, row: Budget) -> BudgetRule:
        return cls(
            row.id,
            row.scope_type,
            row.scope_id,
            row.period,
            row.limit_nusd,
            row.enforcement == "hard",
            tuple(sorted(set(row.thresholds or ()))),
        )


@dataclass(frozen=True, slots=True)
class Scope:
    kind: str  # key | member | group | org
    id: str
    budgets: tuple[tuple[BudgetRule, str], ...]  # (rule, subject: user id for member defaults)
    rates: tuple[RateCounter, ...]


@dataclass(slots=True)
class KeyRules:
    """Everything one key's requests are judged by, resolved once per rules snapshot."""

    org_id: str
    scopes: tuple[Scope, ...]
    policy: EffectivePolicy
    credit: CreditCounter
    credit_enforced: bool
    zone: ZoneInfo
    # Nothing to check: no budgets, no rate limits, credit not enforced. Such requests neither
    # reserve nor settle; while credit is not enforced no credit counter is kept (turning
    # enforcement on drops and rebuilds it from the ledger).
    empty: bool = field(init=False)
    # The checks of the current periods, valid until the first of them ends.
    _checks: tuple[Check, ...] = ()
    _valid_until: datetime | None = None
    _memo: dict[str, Any] = field(default_factory=dict)

    def checks(self, now: datetime) -> tuple[Check, ...]:
        until = self._valid_until
        if until is not None and now < until:
            return self._checks
        checks: list[Check] = []
        ends: list[datetime] = []
        for scope in self.scopes:
            for rule, subject in scope.budgets:
                counter = budget_counter(
                    self.org_id, rule, scope.kind, scope.id, self.zone, now, subject
                )
                if counter.spend.end is not None:
                    ends.append(counter.spend.end)
                checks.append(counter)
            checks.extend(scope.rates)
        if self.credit_enforced:
            checks.append(self.credit)
        self._checks = tuple(checks)
        self._valid_until = min(ends) if ends else datetime.max.replace(tzinfo=UTC)
        self._memo = {}
        return self._checks

    def plan(self, request_id: str, amount: int, tokens: int, now: datetime) -> Plan:
        checks = self.checks(now)
        return Plan(self.org_id, request_id, amount, tokens, checks, self.credit, self._memo)

    def __post_init__(self) -> None:
        self.empty = not self.credit_enforced and not any(
            scope.budgets or scope.rates for scope in self.scopes
        )


def budget_counter(
    org_id: str,
    rule: BudgetRule,
    scope_kind: str,
    scope_id: str,
    zone: ZoneInfo,
    now: datetime,
    subject: str = "",
) -> BudgetCounter:
    """The counter of `rule` for the period containing `now`, holding the spend of the scope;
    for the org's default member budget, `subject` is the member, who has a counter of their
    own (and whose spend it holds)."""
    bounds = period_bounds(rule.period, zone, now)
    start = end = None
    start_ms = expire_ms = 0
    if bounds is not None:
        start, end = bounds
        start_ms = int(start.timestamp() * 1000)
        expire_ms = int((end + PERIOD_GRACE).timestamp() * 1000)
    return BudgetCounter(
        key=f"{{{org_id}}}:b:{rule.id}:{subject or '-'}:{start_ms}",
        budget_id=rule.id,
        limit=rule.limit,
        hard=rule.hard,
        expire_at_ms=expire_ms,
        spend=SpendScope(org_id, scope_kind, subject or scope_id, start, end),
        thresholds=rule.thresholds,
    )


@dataclass
class OrgRules:
    """A snapshot of one org's guardrails."""

    org_id: str
    zone: ZoneInfo
    credit_enforced: bool
    budgets: dict[tuple[str, str], list[BudgetRule]]
    member_defaults: list[BudgetRule]
    policies: dict[tuple[str, str], list[PolicyRule]]
    names: dict[tuple[str, str], str]
    budgets_by_id: dict[str, BudgetRule] = field(default_factory=dict)
    _keys: dict[tuple[str, tuple[str, ...], str], KeyRules] = field(default_factory=dict)

    def for_key(self, key_id: str, owner_user_id: str, group_chain: tuple[str, ...]) -> KeyRules:
        cache_key = (key_id, group_chain, owner_user_id)
        rules = self._keys.get(cache_key)
        if rules is None:
            if len(self._keys) >= MAX_KEYS_PER_ORG:
                self._keys.clear()
            rules = self._keys[cache_key] = self._resolve(key_id, owner_user_id, group_chain)
        return rules

    def _resolve(self, key_id: str, owner_user_id: str, group_chain: tuple[str, ...]) -> KeyRules:
        root = group_chain[0]
        targets = [
            ("key", key_id, "key", key_id),
            ("member", owner_user_id, "member", owner_user_id),
        ]
        targets += [("group", g, "group", g) for g in reversed(group_chain[1:])]
        targets.append(("org", self.org_id, "group", root))
        scopes = []
        bound: list[Bound] = []
        for kind, scope_id, target_type, target_id in targets:
            budgets = [(rule, "") for rule in self.budgets.get((kind, scope_id), [])]
            if kind == "member":
                own = {rule.period for rule, _ in budgets}
                budgets += [
                    (rule, owner_user_id) for rule in self.member_defaults if rule.period not in own
                ]
            policies = self.policies.get((target_type, target_id), [])
            where = self.describe_scope(kind, scope_id)
            bound.extend(Bound(policy, where, target_type, target_id) for policy in policies)
            rates = []
            rpm = [p.rpm for p in policies if p.rpm is not None]
            tpm = [p.tpm for p in policies if p.tpm is not None]
            base = f"{{{self.org_id}}}:rl:{kind}:{scope_id}"
            if rpm:
                rates.append(RateCounter(f"{base}:rpm", min(rpm), False, kind, scope_id))
            if tpm:
                rates.append(RateCounter(f"{base}:tpm", min(tpm), True, kind, scope_id))
            scopes.append(Scope(kind, scope_id, tuple(budgets), tuple(rates)))
        return KeyRules(
            org_id=self.org_id,
            scopes=tuple(scopes),
            policy=EffectivePolicy(tuple(bound)),
            credit=credit_counter(self.org_id),
            credit_enforced=self.credit_enforced,
            zone=self.zone,
        )

    def describe_scope(self, kind: str, scope_id: str) -> str:
        if kind == "org":
            return "the organization"
        name = self.names.get((kind, scope_id))
        if kind == "member":
            return f"member {name} ({scope_id})" if name else f"member {scope_id}"
        return f"{kind} '{name}' ({scope_id})" if name else f"{kind} {scope_id}"

    def describe_budget(self, counter: BudgetCounter) -> str:
        """E.g. "the monthly budget of key 'ci' (key_...): 10.000000000 USD"."""
        rule = self.budgets_by_id.get(counter.budget_id)
        period = f"{PERIOD_WORDS[rule.period]} " if rule else ""
        scope = self.describe_scope(counter.spend.kind, counter.spend.id)
        if rule is not None and rule.scope_type == "member_default":
            scope += " (the org's default member budget)"
        return f"the {period}budget of {scope}: {nanos_to_usd(counter.limit)} USD"


async def load_org_rules(session: AsyncSession, org_id: str) -> OrgRules | None:
    """The snapshot of a live org; None for an unknown or deleted one."""
    settings = await repository.guard_settings(session, org_id)
    if settings is None:
        return None
    timezone, credit_enforced = settings
    budgets: dict[tuple[str, str], list[BudgetRule]] = {}
    defaults: list[BudgetRule] = []
    by_id: dict[str, BudgetRule] = {}
    for row in await repository.budgets_of_org(session, org_id):
        rule = BudgetRule.of(row)
        by_id[rule.id] = rule
        if row.scope_type == "member_default":
            defaults.append(rule)
        else:
            budgets.setdefault((row.scope_type, row.scope_id), []).append(rule)
    policies: dict[tuple[str, str], list[PolicyRule]] = {}
    for binding, policy in await repository.bound_policies(session, org_id):
        policy_rule = PolicyRule.build(
            policy.id,
            policy.name,
            policy.allowed_models,
            policy.blocked_models,
            policy.ip_allowlist,
            policy.rpm,
            policy.tpm,
            policy.max_tokens,
        )
        policies.setdefault((binding.target_type, binding.target_id), []).append(policy_rule)
    named = [*budgets, *policies]
    names = await repository.scope_names(
        session,
        org_id,
        [i for kind, i in named if kind == "group"],
        [i for kind, i in named if kind == "key"],
        [i for kind, i in named if kind == "member"],
    )
    return OrgRules(
        org_id, zone(timezone), credit_enforced, budgets, defaults, policies, names, by_id
    )


class RulesCache(OrgCache[OrgRules | None]):
    """Org rules by org id (core/org_cache.py: loaded on first use, dropped over the bus on
    GUARD_TOPIC or ORG_TOPIC, served stale through a database outage, as keys are, see
    keys/lookup.py STALE_IF_ERROR_SECONDS)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        super().__init__(
            sessions,
            clock,
            load_org_rules,
            (GUARD_TOPIC, ORG_TOPIC),
            CachePolicy(RULES_TTL_SECONDS, STALE_IF_ERROR_SECONDS, RETRY_AFTER_ERROR_SECONDS),
        )
