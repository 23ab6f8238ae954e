"""HTTP routes of budgets under /api/v1/orgs/{org_id}/budgets."""

from __future__ import annotations

from fastapi import APIRouter

from sluicegate.api.errors import STANDARD_ERRORS

router = APIRouter(prefix="/orgs/{org_id}/budgets", tags=["budgets"], responses=STANDARD_ERRORS)
