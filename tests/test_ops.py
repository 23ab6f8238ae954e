"""The operator files: docker-compose.yml, Dockerfile and .env.example agree with each other.

No Docker engine runs where the tests run, so the files are parsed and checked, not started.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "redis", "migrate", "gateway", "worker"}


@pytest.mark.parametrize("service", ["postgres", "redis", "gateway", "worker"])
def test_long_running_services_have_healthchecks(compose: dict[str, Any], service: str) -> None:
    check = compose["services"][service]["healthcheck"]
    assert check["test"] and check["interval"] and check["retries"] >= 3


def test_postgres_keeps_its_data_in_a_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["postgres"]["volumes"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in volumes)
    assert volumes[0].split(":")[0] in compose["volumes"]


def test_migration_runs_once_after_postgres_is_healthy(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_gateway_waits_for_migration_and_healthy_dependencies(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    env = gateway["environment"]
    assert env["SLUICEGATE_MIGRATE_ON_START"] == "false"
    assert env["SLUICEGATE_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["SLUICEGATE_REDIS_URL"].startswith("redis://redis:")
    assert env["SLUICEGATE_HOST"] == "0.0.0.0"
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])


def test_one_worker_service_drains_usage_for_the_gateways(compose: dict[str, Any]) -> None:
    gateway, worker = compose["services"]["gateway"], compose["services"]["worker"]
    assert gateway["environment"]["SLUICEGATE_RUN_WORKER"] == "false"
    assert worker["command"][0] == "worker"
    assert worker["depends_on"] == gateway["depends_on"]
    assert (
        worker["environment"]["SLUICEGATE_REDIS_URL"]
        == gateway["environment"]["SLUICEGATE_REDIS_URL"]
    )
    # Queued usage events live in Redis until drained: Redis must keep them across a restart.
    assert "--appendonly" in compose["services"]["redis"]["command"]


def test_every_variable_compose_requires_is_in_env_example(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert required and required <= example


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) >= 2 and all("slim" in image for image in stages)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*", text, re.MULTILINE)
    assert "/healthz" in text
    assert re.search(r'^ENTRYPOINT \["sluicegate"\]', text, re.MULTILINE)


def test_dockerignore_keeps_secrets_and_local_data_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "*.db", "*.secret", ".git"} <= set(ignored)


def env_example() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )


def test_the_gateway_serves_the_mounted_providers_file_with_its_keys(
    compose: dict[str, Any],
) -> None:
    gateway = compose["services"]["gateway"]
    env = gateway["environment"]
    mounts = [volume.rsplit(":", 2) for volume in gateway["volumes"]]
    mounted = {target: source for source, target, mode in mounts if mode == "ro"}
    assert env["SLUICEGATE_PROVIDERS"] in mounted
    assert mounted[env["SLUICEGATE_PROVIDERS"]] == "${SLUICEGATE_PROVIDERS_FILE:-./providers.yaml}"
    assert env_example()["SLUICEGATE_PROVIDERS_FILE"] == "./providers.yaml"
    # Every key the example providers file names reaches the gateway, and is in .env.example.
    example = yaml.safe_load((ROOT / "providers.example.yaml").read_text())
    named = {provider["api_key_env"] for provider in example["providers"]}
    passed = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY"}
    assert named <= passed
    for variable in passed:
        assert env[variable] == f"${{{variable}:-}}"
        assert variable in env_example()
    # The file a provider key may be written into stays out of images.
    assert "providers.yaml" in (ROOT / ".dockerignore").read_text().split()


def test_the_example_providers_file_loads_and_serves_priced_models() -> None:
    from sluicegate.providers.config import load_providers

    loaded = load_providers(ROOT / "providers.example.yaml", {"OPENAI_API_KEY": "sk-test"})
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= set(loaded.models)
    routes = [route for served in loaded.models.values() for route in served.deployments]
    assert all(route.price.input_nusd_per_mtok > 0 for route in routes)


def test_compose_documents_its_version_and_the_bootstrap_step() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "Compose v2" in text
    command = "docker compose run --rm gateway bootstrap --email"
    assert command in text
    assert command in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    ("variable", "setting"),
    [("SLUICEGATE_SECRET_KEY", "SLUICEGATE_SECRET_KEY"), ("POSTGRES_PASSWORD", "DATABASE_URL")],
)
def test_the_example_placeholders_are_refused_at_start(
    variable: str, setting: str, tmp_path: Path
) -> None:
    from tests.support import run_cli

    value = env_example()[variable]
    env = (
        {"SLUICEGATE_SECRET_KEY": value}
        if setting == "SLUICEGATE_SECRET_KEY"
        else {"SLUICEGATE_DATABASE_URL": f"postgresql+asyncpg://sluicegate:{value}@127.0.0.1/x"}
    )
    done = run_cli("migrate", env=env, cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "placeholder of .env.example" in line
    assert value not in line
    assert not list(tmp_path.iterdir()), "nothing is created"


def test_the_readme_is_short_and_links_every_page_of_the_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert pages
    for page in pages:
        assert f"(docs/{page})" in readme, page
    # Links between the pages point at pages that exist.
    for path in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([a-z-]+\.md)(?:#[a-z0-9-]+)?\)", path.read_text()):
            assert (ROOT / "docs" / target).is_file(), f"{path.name} -> {target}"
