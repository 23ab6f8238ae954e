"""Request and response shapes of routing overrides, the routing in force at a group, and the
routing of a key. Money: a decimal USD string out; string or number in."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from sluicegate.api.fields import USD, Label, ModelPattern
from sluicegate.routing.models import RoutingOverrideRow
from sluicegate.routing.overrides import (
    CERTIFICATIONS,
    DATA_POLICIES,
    RoutingOverride,
    override_from,
)
from sluicegate.routing.service import GroupRouting, KeyRouting, fields_view, source_view

# DATA_POLICIES and CERTIFICATIONS, spelled out for the OpenAPI document.
DataPolicy = Literal["zdr", "no_training", "no_prompt_logging"]
Certification = Literal["soc2", "iso27001", "gdpr", "hipaa"]
CostAction = Literal["refuse", "cheaper"]
# Far more than a gateway configures: the bounds only keep a request's size sane.
MAX_PROVIDERS = 50
MAX_REGIONS = 50
MAX_FALLBACKS = 10


def _unique(values: list[str]) -> list[str]:
    """The entries in the order given, each once."""
    return list(dict.fromkeys(values))


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must not contain control characters")
    return value


def _named(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("must name at least one; null (or leaving it out) inherits it instead")
    return values


# A provider's name in the providers file; a model id clients send as "model".
ProviderName = Label
ModelId = ModelPattern
# As the providers file spells a region (providers' and deployments' `region`).
Region = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=32),
    AfterValidator(_printable),
    Field(examples=["eu", "us-east-1"]),
]
Providers = Annotated[list[ProviderName], Field(max_length=MAX_PROVIDERS), AfterValidator(_unique)]
Fallbacks = Annotated[list[ModelId], Field(max_length=MAX_FALLBACKS), AfterValidator(_unique)]
Regions = Annotated[
    list[Region], Field(max_length=MAX_REGIONS), AfterValidator(_unique), AfterValidator(_named)
]


class RoutingPut(BaseModel):
    """Every field is optional: null or left out, the group does not set it and inherits it from
    the groups above (the nearest group that sets a field wins that field)."""

    model_config = ConfigDict(extra="forbid")

    provider_order: Providers | None = Field(
        default=None, description="providers to try first, in this order (names of the file)"
    )
    allowed_providers: Annotated[Providers, AfterValidator(_named)] | None = Field(
        default=None, description="the only providers requests may reach"
    )
    ignored_providers: Providers | None = Field(
        default=None, description="providers requests never reach"
    )
    required_policies: list[DataPolicy] | None = Field(
        default=None,
        max_length=len(DATA_POLICIES),
        description="what a provider must promise about the data it is sent",
    )
    required_certifications: list[Certification] | None = Field(
        default=None,
        max_length=len(CERTIFICATIONS),
        description="certifications a provider must hold",
    )
    allowed_regions: Regions | None = Field(
        default=None, description="the only regions requests may be served from"
    )
    fallbacks: Fallbacks | None = Field(
        default=None,
        description="model ids tried in this order when the asked model fails before answering",
    )
    max_cost_per_request_usd: USD | None = Field(
        default=None, description="the most one request may cost, in USD (more than 0)"
    )
    on_cost_exceeded: CostAction | None = Field(
        default=None,
        description="beyond the ceiling: refuse the request, or serve it with a cheaper model; "
        "refuse when a ceiling is set and this is left out",
    )

    def as_override(self) -> RoutingOverride:
        values = self.model_dump()
        values["max_cost_per_request_nusd"] = values.pop("max_cost_per_request_usd")
        return override_from(values)

    @field_validator("max_cost_per_request_usd")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError("must be more than 0 USD")
        return value


class OverrideFields(BaseModel):
    provider_order: list[str] | None
    allowed_providers: list[str] | None
    ignored_providers: list[str] | None
    required_policies: list[DataPolicy] | None
    required_certifications: list[Certification] | None
    allowed_regions: list[str] | None
    fallbacks: list[str] | None
    max_cost_per_request_usd: str | None = Field(examples=["0.250000000"])
    on_cost_exceeded: CostAction | None


class OverrideOut(OverrideFields):
    """A group's own override: the fields it sets (null: inherited)."""

    id: str
    group_id: str
    created_at: datetime
    updated_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, row: RoutingOverrideRow) -> OverrideOut:
        return cls(
            id=row.id,
            group_id=row.group_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            created_by=row.created_by,
            **fields_view(row.as_override()),
        )


class EffectiveOut(OverrideFields):
    """The routing in force: each field from the nearest group that sets it (null: no group
    does)."""

    source: dict[str, str] = Field(
        description="each field set, and the id of the group it comes from"
    )


class GroupRoutingOut(BaseModel):
    group_id: str
    override: OverrideOut | None = Field(description="what this group sets itself; null: nothing")
    effective: EffectiveOut

    @classmethod
    def of(cls, view: GroupRouting) -> GroupRoutingOut:
        routing = view.effective
        return cls(
            group_id=view.group_id,
            override=None if view.override is None else OverrideOut.of(view.override),
            effective=EffectiveOut(**fields_view(routing.override), source=source_view(routing)),
        )


class KeyRoutingOut(EffectiveOut):
    """The routing a key's requests are served with, from its group chain."""

    key_id: str
    group_id: str

    @classmethod
    def of(cls, view: KeyRouting) -> KeyRoutingOut:
        routing = view.effective
        return cls(
            key_id=view.key_id,
            group_id=view.group_id,
            source=source_view(routing),
            **fields_view(routing.override),
        )
