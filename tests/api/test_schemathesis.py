"""Schemathesis over the admin API's own OpenAPI document, against a real gateway process on
Postgres and Redis: whatever it sends, the gateway never answers 500, and every answer matches
the documented status codes, content type and schema.

The caller is a platform admin who owns a real organization, so generated requests get past
authentication and the tenant check into the handlers; other ids stay random (they are 404s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sluicegate.runtime import Runtime
from tests.admin import make_person
from tests.conftest import GatewayStarter, make_settings
from tests.support import ServerProcess

# Enough to walk every operation's parameters and bodies (derandomized: the same cases on every
# run); the whole run stays under a minute. Raise it locally for a deeper search.
EXAMPLES_PER_OPERATION = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Target:
    gateway: ServerProcess
    headers: dict[str, str]
    org_id: str


@pytest.fixture(scope="module")
def target(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
) -> Iterator[Target]:
    import httpx

    gateway_settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, redis_prefix=redis_prefix
    )
    starter = GatewayStarter(tmp_path_factory.mktemp("schemathesis"), [])
    gateway = starter(gateway_settings)

    async def person() -> dict[str, str]:
        runtime = Runtime.build(gateway_settings)
        try:
            return (await make_person(runtime, platform_admin=True)).headers
        finally:
            await runtime.close()

    headers = asyncio.run(person())
    org = httpx.post(
        f"{gateway.base_url}/api/v1/orgs", json={"name": "Fuzzed"}, headers=headers
    ).json()
    yield Target(gateway, headers, org["id"])
    for server in starter.started:
        server.stop()


@pytest.fixture(scope="module")
def admin_schema(target: Target) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{target.gateway.base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("admin_schema").include(path_regex="^/api/v1/")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_admin_api_never_answers_500_and_keeps_its_documented_shape(
    case: Case, target: Target
) -> None:
    path_parameters = case.path_parameters or {}
    deleting_the_org = case.method == "DELETE" and case.path == "/api/v1/orgs/{org_id}"
    if "org_id" in path_parameters and not deleting_the_org:
        path_parameters["org_id"] = target.org_id
    headers = dict(target.headers)
    if case.path in ("/api/v1/auth/logout", "/api/v1/auth/sessions/revoke-all"):
        headers = {}  # would end the fuzzer's own token; answered 401, still checked
    response = case.call(base_url=target.gateway.base_url, headers=headers, timeout=30)
    case.validate_response(response, checks=CHECKS)
