"""Wiring: mounts every capability's admin routes under /api/v1 and installs the error handlers
(api/ is the plumbing those routes share and imports no capability; this assembles them)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from sluicegate.alerts import log_routes as alert_log_routes
from sluicegate.alerts import routes as alert_routes
from sluicegate.analytics import feed_routes, insights_routes
from sluicegate.analytics import routes as analytics_routes
from sluicegate.api.body_limits import BodyLimits
from sluicegate.api.errors import install_error_handlers
from sluicegate.audit_trail import routes as audit_routes
from sluicegate.credits import routes as credits_routes
from sluicegate.guard import budget_routes, policy_routes
from sluicegate.identity import routes as identity_routes
from sluicegate.keys import routes as keys_routes
from sluicegate.orgs import me_routes
from sluicegate.orgs import routes as orgs_routes
from sluicegate.routing import routes as routing_routes

PREFIX = "/api/v1"


def _admin_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    for module in (
        identity_routes,
        me_routes,
        orgs_routes,
        keys_routes,
        audit_routes,
        budget_routes,
        policy_routes,
        routing_routes,
        credits_routes,
        analytics_routes,
        feed_routes,
        insights_routes,
        alert_routes,
        alert_log_routes,  # last: its /alerts/{alert_id} would shadow fixed /alerts/... paths
    ):
        router.include_router(module.router)
    return router


ADMIN_ROUTER = _admin_router()


def _prepared_routes(router: APIRouter) -> list[BaseRoute]:
    """The router's routes as an app serves them, prepared once per process.

    Preparing a route (its parameters and response models as pydantic validators) costs about
    0.3 s for the whole admin API, once per app that includes the router, and FastAPI does it
    either when the router is included or when the first request arrives, depending on its
    version. Tests build hundreds of apps: every app shares these prepared routes instead. They
    hold nothing of an app's own: handlers reach the app's state through the request.
    """
    host = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    host.include_router(router)
    return list(host.router.routes)


ADMIN_ROUTES = _prepared_routes(ADMIN_ROUTER)


def mount(app: FastAPI, max_body_bytes: int) -> None:
    app.router.routes.extend(ADMIN_ROUTES)
    install_error_handlers(app)
    app.add_middleware(BodyLimits, limit=max_body_bytes)
