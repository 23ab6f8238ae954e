"""HTTP routes of the credit pool under /api/v1/orgs/{org_id}/credits."""

from __future__ import annotations

from fastapi import APIRouter

from sluicegate.api.errors import STANDARD_ERRORS

router = APIRouter(prefix="/orgs/{org_id}/credits", tags=["credits"], responses=STANDARD_ERRORS)
