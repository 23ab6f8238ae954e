"""HTTP routes of the proxy under /v1: each hands the request to the pipeline."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from sluicegate.providers.base import Endpoint
from sluicegate.proxy import refusals
from sluicegate.proxy.errors import ProxyError
from sluicegate.proxy.pipeline import Pipeline

log = logging.getLogger("sluicegate.proxy")


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def _endpoint(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            return await _pipeline(request).handle(request, endpoint)
        except ProxyError as error:
            return error.response()
        except Exception:
            # A bug of ours: logged with its traceback, answered in the shape SDKs understand.
            log.exception("unexpected error in the proxy pipeline")
            return refusals.INTERNAL_ERROR.error().response()

    handle.__name__ = f"proxy_{endpoint.name.lower()}"
    return handle


async def list_models(request: Request) -> Response:
    try:
        return await _pipeline(request).models(request)
    except ProxyError as error:
        return error.response()


async def unknown_path(request: Request) -> Response:
    return refusals.UNKNOWN_PATH.error(path=request.url.path).response()


class _Template(NamedTuple):
    """What the request-context middleware reads of a matched route: its path template."""

    path: str


class DirectRoutes:
    """The proxy's POST endpoints, answered before FastAPI's middleware and router: an exact
    path match sends the request straight to the pipeline's handler, everything else (other
    methods and paths, the admin API, the lifespan) goes to the app. FastAPI's layers add
    nothing the pipeline needs (it reads its own body with its own limit, and turns every error
    into an OpenAI-shaped answer) and cost about a sixth of a proxied request's CPU. The same
    routes stay registered with FastAPI for the OpenAPI document and the 405s."""

    __slots__ = ("app", "handlers")

    def __init__(self, app: Any) -> None:
        self.app = app
        self.handlers = {
            f"/v1/{e.value}": (_endpoint(e), _Template(f"/v1/{e.value}")) for e in Endpoint
        }

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self.handlers.get(scope["path"])
            if found is not None:
                handle, scope["route"] = found
                response = await handle(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def mount(app: FastAPI) -> None:
    router = APIRouter(prefix="/v1", tags=["proxy"])
    for endpoint in Endpoint:
        router.add_api_route(
            f"/{endpoint.value}",
            _endpoint(endpoint),
            methods=["POST"],
            include_in_schema=True,
            summary=f"OpenAI-compatible /v1/{endpoint.value}",
        )
    router.add_api_route("/models", list_models, methods=["GET"], summary="Models this key may use")
    router.add_api_route(
        "/{path:path}",
        unknown_path,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    app.include_router(router)
