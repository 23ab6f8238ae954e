"""Mounts every capability's admin routes under /api/v1 and installs the error handlers."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from sluicegate.api.errors import install_error_handlers
from sluicegate.audit import routes as audit_routes
from sluicegate.credits import routes as credits_routes
from sluicegate.guard import budget_routes, policy_routes
from sluicegate.identity import routes as identity_routes
from sluicegate.keys import routes as keys_routes
from sluicegate.orgs import routes as orgs_routes

PREFIX = "/api/v1"


def _admin_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    for module in (
        identity_routes,
        orgs_routes,
        keys_routes,
        audit_routes,
        budget_routes,
        policy_routes,
        credits_routes,
    ):
        router.include_router(module.router)
    return router


# Built once per process: FastAPI prepares a router's routes (parameters, response models) the
# first time it is included and reuses that work for every app that includes it again, which
# makes create_app cheap after the first call (tests build hundreds of apps).
ADMIN_ROUTER = _admin_router()


def mount(app: FastAPI) -> None:
    app.include_router(ADMIN_ROUTER)
    install_error_handlers(app)
