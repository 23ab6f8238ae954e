"""Mounts every capability's admin routes under /api/v1 and installs the error handlers."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from sluicegate.api.errors import install_error_handlers
from sluicegate.audit import routes as audit_routes
from sluicegate.identity import routes as identity_routes
from sluicegate.keys import routes as keys_routes
from sluicegate.orgs import routes as orgs_routes

PREFIX = "/api/v1"


def mount(app: FastAPI) -> None:
    api = APIRouter(prefix=PREFIX)
    for module in (identity_routes, orgs_routes, keys_routes, audit_routes):
        api.include_router(module.router)
    app.include_router(api)
    install_error_handlers(app)
