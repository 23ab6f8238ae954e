"""create_app(settings): the ASGI application with its lifespan, health, readiness and metrics.

Capabilities mount their routers here; the proxy lives under /v1 and the admin API under /api/v1.
"""

from __future__ import annotations

import gc
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from sluicegate import __version__, admin_api
from sluicegate.core.logs import configure_logging
from sluicegate.core.metrics import CONTENT_TYPE, render_metrics
from sluicegate.core.request_context import RequestContextMiddleware
from sluicegate.core.responses import JSONBody
from sluicegate.providers.config import ProviderSettings
from sluicegate.proxy import routes as proxy_routes
from sluicegate.proxy.pipeline import Pipeline
from sluicegate.proxy.state import ProxyState
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings, load_provider_settings, load_settings
from sluicegate.usage_worker import UsageWorker

METRICS_REFUSAL = "GET /metrics needs 'Authorization: Bearer <SLUICEGATE_METRICS_TOKEN>'."
# Where the API documentation pages' scripts and styles are served.
DOCS_ASSETS = "/docs-assets"


class Gateway(FastAPI):
    """FastAPI with the request-context middleware outermost and the proxy's endpoints answered
    directly inside it (`proxy.routes.DirectRoutes`), ahead of FastAPI's own layers."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestContextMiddleware(proxy_routes.DirectRoutes(super().build_middleware_stack()))


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    providers: ProviderSettings | None = None,
    *,
    freeze_heap: bool = False,
) -> Gateway:
    """Build the app. A given `runtime` is used as is (and left open); otherwise one is built.
    Providers come from the SLUICEGATE_PROVIDERS file unless given. `freeze_heap` (a server
    process of its own) moves everything alive after start-up out of the garbage collector's
    sight: its full collections otherwise walk the whole heap of modules, models and pools
    (seen: +190 ms on every other analytics answer of a year's points)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        active = runtime or Runtime.build(settings)
        await active.start()
        loaded = providers or load_provider_settings(settings)
        proxy = ProxyState.build(settings, active, loaded)
        await proxy.start()
        app.state.runtime = active
        # The admin API checks the provider names and model ids it is given against these.
        app.state.providers = loaded
        app.state.pipeline = Pipeline(proxy)
        worker = UsageWorker(active) if settings.run_worker else None
        app.state.worker = worker
        if worker is not None:
            await worker.start()
        if freeze_heap:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await proxy.close()
            if worker is not None:
                await worker.close()
            if owned:
                await active.close()

    app = Gateway(
        title="Sluicegate",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _mount_docs(app)
    proxy_routes.mount(app)
    admin_api.mount(app, settings.max_admin_body_bytes)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up and serving. Says nothing about its dependencies."""
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> Response:
        """200 when the database and Redis answer; 503 naming whichever does not."""
        active: Runtime = request.app.state.runtime
        database = await active.check_database()
        redis = await active.check_redis()
        checks = {
            "database": "ok" if database is None else f"down: {database}",
            "redis": ("in-process" if active.redis is None else "ok")
            if redis is None
            else f"down: {redis}",
        }
        down = [name for name, problem in (("database", database), ("redis", redis)) if problem]
        if down:
            body = {"status": "unavailable", "down": down, "checks": checks}
            return JSONBody(body, status_code=503)
        return JSONBody({"status": "ready", "checks": checks})

    @app.get("/metrics", tags=["operations"])
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition format; with SLUICEGATE_METRICS_TOKEN set, only for
        `Authorization: Bearer <that token>`."""
        token = settings.metrics_token
        if token is not None:
            presented = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(presented.encode(), token.get_secret_value().encode()):
                return JSONBody(
                    {"error": {"code": "unauthenticated", "message": METRICS_REFUSAL}},
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
        return Response(render_metrics(), media_type=CONTENT_TYPE)

    return app


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, their scripts and styles served from here (a
    package ships them), so the pages work without access to a CDN."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")))
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers: each worker process reads the same environment."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings, freeze_heap=True)
