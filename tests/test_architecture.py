"""The dependency arrows of STYLE.md, checked on the source: a cycle means a piece is misplaced."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "sluicegate"


def _imported(node: ast.ImportFrom) -> set[str]:
    """`module` and `module.a`, `module.b` of `from module import a, b`: `from sluicegate.alerts
    import outbox_repository` imports a module too. A name that is a class or a function is
    counted as well, harmlessly: it is named for no kind of module the checks look for."""
    assert node.module is not None
    return {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(_imported(node))
    return {name for name in names if name == "sluicegate" or name.startswith("sluicegate.")}


def _is_a(name: str, *kinds: str) -> bool:
    """Whether module `name` is one of a capability's `kinds` of file: `repository.py` and every
    `<something>_repository.py` (`alerts/outbox_repository.py`) are both repositories."""
    last = name.rsplit(".", 1)[-1]
    return any(last == kind or last.endswith(f"_{kind}") for kind in kinds)


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("core"), ids=lambda p: p.name)
def test_core_imports_nothing_else_of_ours(path: Path) -> None:
    outside = {name for name in _imports(path) if not name.startswith("sluicegate.core")}
    assert outside == set(), f"{path.name} imports {outside}"


def test_nothing_but_the_app_and_cli_import_the_mock_upstream() -> None:
    offenders = [
        path.relative_to(PACKAGE)
        for path in PACKAGE.rglob("*.py")
        if "mockupstream" not in path.parts
        and path.name != "cli.py"
        and any(name.startswith("sluicegate.mockupstream") for name in _imports(path))
    ]
    assert offenders == []


@pytest.mark.parametrize("path", _modules("mockupstream"), ids=lambda p: p.name)
def test_the_mock_upstream_stands_alone(path: Path) -> None:
    outside = {name for name in _imports(path) if not name.startswith("sluicegate.mockupstream")}
    assert outside == set(), f"{path.name} imports {outside}"


def test_no_module_reads_the_environment_outside_settings_and_cli() -> None:
    allowed = {"settings.py", "cli.py", "metrics.py", "env.py"}
    offenders = [
        path.relative_to(PACKAGE)
        for path in PACKAGE.rglob("*.py")
        if path.name not in allowed and "os.environ" in path.read_text()
    ]
    assert offenders == []


@pytest.mark.parametrize("path", _modules("proxy"), ids=lambda p: p.name)
def test_the_proxy_never_calls_an_admin_service(path: Path) -> None:
    admin = {name for name in _imports(path) if _is_a(name, "service", "routes")}
    assert admin == set(), f"{path.name} imports {admin}"


def test_only_the_app_mounts_the_proxy() -> None:
    offenders = [
        path.relative_to(PACKAGE)
        for path in PACKAGE.rglob("*.py")
        if "proxy" not in path.parts
        and path.name != "app.py"
        and any(name.startswith("sluicegate.proxy") for name in _imports(path))
    ]
    assert offenders == []


def _all_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(_imported(node))
    return names


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_reaches_into_another_capabilitys_repository(path: Path) -> None:
    """Services call other services; only a capability's own code queries its repository."""
    own = path.relative_to(PACKAGE).parts[0]
    foreign = {
        name for name in _imports(path) if _is_a(name, "repository") and name.split(".")[1] != own
    }
    assert foreign == set(), f"{path.relative_to(PACKAGE)} imports {foreign}"


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*routes.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_routes_speak_http_only(path: Path) -> None:
    """A route parses, calls services, shapes the answer: no SQL of its own."""
    reached = {
        name
        for name in _all_imports(path)
        if _is_a(name, "repository", "models") or name.startswith("sqlalchemy")
    }
    assert reached == set(), f"{path.relative_to(PACKAGE)} imports {reached}"


def test_every_admin_permission_is_decided_in_one_place() -> None:
    """Roles are judged by orgs.authorize alone. Besides it only identity raises 403 (platform
    admin, current password) and accepting an invitation (signed in to another address)."""
    allowed = {"orgs/authorize.py", "identity/service.py", "orgs/invitation_service.py"}
    raisers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "raise PermissionDenied" in path.read_text()
    }
    assert raisers <= allowed, raisers - allowed
