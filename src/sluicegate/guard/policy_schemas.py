"""Request and response shapes of policies, their bindings and the effective policy of a key."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from sluicegate.api.fields import Id, Label, ModelPattern
from sluicegate.guard.policy_checks import (
    DESCRIPTION_LENGTH,
    MAX_MAX_TOKENS,
    MAX_NETWORKS,
    MAX_PATTERNS,
    MAX_RPM,
    MAX_TPM,
)
from sluicegate.guard.policy_service import AppliedPolicy, KeyPolicy, PolicyView

TargetType = Literal["group", "member", "key"]
# Line breaks and tabs are welcome in a description; other control characters are not.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters other than line breaks and tabs")
    return value


Description = Annotated[
    str, StringConstraints(max_length=DESCRIPTION_LENGTH), AfterValidator(_no_control)
]
# Checked and normalized by the service, which names the entry it cannot read.
Network = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    Field(examples=["10.0.0.0/8", "203.0.113.7", "2001:db8::/32"]),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyFields(Strict):
    description: Description | None = None
    allowed_models: list[ModelPattern] | None = Field(
        default=None,
        max_length=MAX_PATTERNS,
        description="model ids or glob patterns (e.g. 'anthropic/*'); a model must match one. "
        "null: no allow-list",
    )
    blocked_models: list[ModelPattern] | None = Field(
        default=None,
        max_length=MAX_PATTERNS,
        description="model ids or glob patterns no request may use; null: none",
    )
    ip_allowlist: list[Network] | None = Field(
        default=None,
        max_length=MAX_NETWORKS,
        description="IPv4/IPv6 addresses or CIDR networks callers must come from (stored "
        "normalized); null: any address",
    )
    rpm: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RPM,
        description="requests per minute of the scope it is bound to (a group: all its traffic)",
    )
    tpm: int | None = Field(
        default=None, ge=1, le=MAX_TPM, description="tokens per minute of the scope it is bound to"
    )
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_MAX_TOKENS, description="the most output one request may ask for"
    )


class PolicyCreate(PolicyFields):
    name: Label


class PolicyUpdate(PolicyFields):
    """Only the fields sent change; null clears a rule (or the description)."""

    name: Label | None = None


class BindingCreate(Strict):
    target_type: TargetType
    target_id: Id = Field(description="a group id, a member's user id, or a key id")


class BindingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    policy_id: str
    target_type: TargetType
    target_id: str
    created_at: datetime


class PolicyOut(BaseModel):
    id: str
    name: str
    description: str | None
    allowed_models: list[str] | None
    blocked_models: list[str] | None
    ip_allowlist: list[str] | None
    rpm: int | None
    tpm: int | None
    max_tokens: int | None
    bindings: list[BindingOut]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: PolicyView) -> PolicyOut:
        policy = view.policy
        return cls(
            id=policy.id,
            name=policy.name,
            description=policy.description,
            allowed_models=policy.allowed_models,
            blocked_models=policy.blocked_models,
            ip_allowlist=policy.ip_allowlist,
            rpm=policy.rpm,
            tpm=policy.tpm,
            max_tokens=policy.max_tokens,
            bindings=[BindingOut.model_validate(b) for b in view.bindings],
            created_at=policy.created_at,
            updated_at=policy.updated_at,
        )


# --- the effective policy of a key -----------------------------------------------------------


class BoundTo(BaseModel):
    target_type: TargetType
    target_id: str


class AppliedPolicyOut(BaseModel):
    id: str
    name: str
    bound_to: BoundTo
    allowed_models: list[str] | None
    blocked_models: list[str]
    ip_allowlist: list[str] | None
    rpm: int | None
    tpm: int | None
    max_tokens: int | None

    @classmethod
    def of(cls, applied: AppliedPolicy) -> AppliedPolicyOut:
        rule = applied.rule
        networks = rule.ip_allowlist
        return cls(
            id=rule.id,
            name=rule.name,
            bound_to=BoundTo(target_type=applied.target_type, target_id=applied.target_id),
            allowed_models=list(rule.allowed_models) if rule.allowed_models is not None else None,
            blocked_models=list(rule.blocked_models),
            ip_allowlist=[str(n) for n in networks] if networks is not None else None,
            rpm=rule.rpm,
            tpm=rule.tpm,
            max_tokens=rule.max_tokens,
        )


class AllowList(BaseModel):
    policy_id: str
    patterns: list[str]


class IpAllowList(BaseModel):
    policy_id: str
    networks: list[str]


class TokenCap(BaseModel):
    value: int
    policy_id: str


class RateLimitOut(BaseModel):
    scope: Literal["key", "member", "group", "org"]
    scope_id: str = Field(description="the key, user, group or org id")
    rpm: int | None
    tpm: int | None


class KeyPolicyOut(BaseModel):
    key_id: str
    policies: list[AppliedPolicyOut] = Field(
        description="every policy along the key's chain, narrowest scope first (key, member, "
        "its groups from its own up, the org: policies bound to the root group)"
    )
    allowed_models: list[AllowList] = Field(
        description="the allow-lists that apply; a model must match every one of them"
    )
    blocked_models: list[str] = Field(description="every pattern any of the policies blocks")
    ip_allowlists: list[IpAllowList] = Field(
        description="a caller's address must be inside every one of them"
    )
    max_tokens: TokenCap | None = Field(description="the smallest cap and the policy setting it")
    rate_limits: list[RateLimitOut] = Field(
        description="per scope, the smallest rpm and tpm of the policies bound there; a group's "
        "limits hold for all of its traffic together"
    )

    @classmethod
    def of(cls, view: KeyPolicy) -> KeyPolicyOut:
        cap = view.max_tokens
        return cls(
            key_id=view.key_id,
            policies=[AppliedPolicyOut.of(a) for a in view.applied],
            allowed_models=[
                AllowList(policy_id=a.rule.id, patterns=list(a.rule.allowed_models or ()))
                for a in view.allow_lists
            ],
            blocked_models=view.blocked_models,
            ip_allowlists=[
                IpAllowList(
                    policy_id=a.rule.id, networks=[str(n) for n in a.rule.ip_allowlist or ()]
                )
                for a in view.ip_allowlists
            ],
            max_tokens=(
                TokenCap(value=cap.rule.max_tokens or 0, policy_id=cap.rule.id)
                if cap is not None
                else None
            ),
            rate_limits=[
                RateLimitOut(scope=r.scope, scope_id=r.scope_id, rpm=r.rpm, tpm=r.tpm)
                for r in view.rate_limits
            ],
        )
