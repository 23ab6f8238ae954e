"""HTTP routes of policies under /api/v1/orgs/{org_id}/policies."""

from __future__ import annotations

from fastapi import APIRouter

from sluicegate.api.errors import STANDARD_ERRORS

router = APIRouter(prefix="/orgs/{org_id}", tags=["policies"], responses=STANDARD_ERRORS)
