"""The layers of DESIGN §2 (docs/architecture.md), held by import-linter's contracts in
pyproject.toml: run on the source as it is, and on a copy given a deliberate upward import, to
show the contract notices one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    newcomer = source / "sluicegate" / "routing"
    newcomer.mkdir()
    (newcomer / "__init__.py").write_text('"""Somewhere to route requests."""\n')

    result = _lint(source)

    assert result.returncode != 0
    assert "sluicegate.routing" in result.stdout + result.stderr
