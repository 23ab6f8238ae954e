"""Request and response shapes of API keys. The secret appears only in KeyCreated."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.api.fields import Id, Label, ModelPattern, Moment
from sluicegate.keys.service import MAX_ALLOWED_MODELS, MAX_GRACE_PERIOD

AllowedModels = Field(
    default=None,
    max_length=MAX_ALLOWED_MODELS,
    description="model ids or glob patterns (e.g. 'gpt-4o-*'); null: every model",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyCreate(Strict):
    name: Label
    group_id: Id
    owner_user_id: Id | None = Field(default=None, description="absent: yourself")
    allowed_models: list[ModelPattern] | None = AllowedModels
    expires_at: Moment | None = Field(default=None, description="absent: never expires")


class KeyUpdate(Strict):
    name: Label | None = None
    status: Literal["active", "disabled"] | None = None
    allowed_models: list[ModelPattern] | None = AllowedModels
    expires_at: Moment | None = Field(default=None, description="null: never expires")


class KeyRotate(Strict):
    grace_period_seconds: int = Field(
        default=0,
        ge=0,
        le=int(MAX_GRACE_PERIOD.total_seconds()),
        description="how long the old secret keeps working; 0: it stops at once",
    )


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    prefix: str = Field(description="the secret's first 12 characters, to tell keys apart")
    name: str
    group_id: str
    owner_user_id: str
    status: Literal["active", "disabled", "revoked"]
    allowed_models: list[str] | None
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret, shown only in this response; store it now")
    previous_key_expires_at: datetime | None = Field(
        default=None, description="after a rotation: until when the old secret still works"
    )
