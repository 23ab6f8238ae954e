"""The layers of DESIGN §2 (docs/architecture.md), held by import-linter's contracts in
pyproject.toml: run on the source as it is, and on a copy given a deliberate upward import, to
show the contract notices one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
LINT = (
    "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
)
# Generous: building the import graph takes about a second on an idle machine.
LINT_TIMEOUT_SECONDS = 300


def _lint(source_root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [sys.executable, "-c", LINT],
        cwd=ROOT,  # pyproject.toml's contracts
        env=env,
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT_SECONDS,
    )


def _copy_of_the_package(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "sluicegate",
        source / "sluicegate",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return source


def test_every_layer_contract_is_kept() -> None:
    result = _lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    source = _copy_of_the_package(tmp_path)
    # Keys telling alerts directly that a key was created, instead of announcing an event.
    service = source / "sluicegate" / "keys" / "service.py"
    service.write_text(service.read_text() + "\nfrom sluicegate.alerts import lifecycle  # noqa\n")

    result = _lint(source)

    assert result.returncode != 0
    assert "Layers: imports point down" in result.stdout
    assert "sluicegate.keys.service -> sluicegate.alerts.lifecycle" in result.stdout


def test_a_new_package_must_be_given_a_layer(tmp_path: Path) -> None:
    source = _copy_of_the_package(tmp_path)
    newcomer = source / "sluicegate" / "newcomer"
    newcomer.mkdir()
    (newcomer / "__init__.py").write_text('"""A package no layer names yet."""\n')

    result = _lint(source)

    assert result.returncode != 0
    assert "sluicegate.newcomer" in result.stdout + result.stderr


def test_no_package_reaches_itself_through_others() -> None:
    """Layers forbid cycles between layers; this also holds among the wiring's own modules
    (siblings in one layer) and inside none: the package graph is a DAG."""
    graph = grimp.build_graph("sluicegate", cache_dir=None)
    top = {module.split(".")[1] for module in graph.modules if module.count(".") >= 1}
    edges: dict[str, set[str]] = {name: set() for name in top}
    for module in graph.modules:
        if module.count(".") < 1:
            continue
        source = module.split(".")[1]
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.count(".") >= 1 and imported.split(".")[1] != source:
                edges[source].add(imported.split(".")[1])
    cycles = [(a, b) for a in sorted(edges) for b in sorted(edges[a]) if a in _reachable(edges, b)]
    assert cycles == []


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen
