"""The proxy's refusals come from one catalogue (proxy/refusals.py): every site raises one of them
by name, each renders an OpenAI-shaped error, and docs/proxy.md lists exactly them for clients."""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import types
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sluicegate.providers.base import Endpoint
from sluicegate.proxy.refusals import Refusal, catalogue

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "src" / "sluicegate"
CATALOGUE = PACKAGE / "proxy" / "refusals.py"
# Upstream errors passed through as the provider worded them: its answers, not refusals of ours.
PASSTHROUGH = PACKAGE / "proxy" / "upstream_errors.py"
REFUSALS = catalogue()

SAMPLES: dict[object, object] = {
    str: "sample",
    int: 7,
    bool: True,
    object: "sample",
    datetime: datetime(2025, 1, 2, tzinfo=UTC),
    Endpoint: Endpoint.CHAT,
}


def _calls(path: Path, name: str) -> list[int]:
    """Lines of `path` that call `name` (as a bare name or an attribute)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                lines.append(node.lineno)
    return lines


def test_only_the_catalogue_constructs_proxy_errors() -> None:
    offenders = {
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in PACKAGE.rglob("*.py")
        if path != CATALOGUE
        for line in _calls(path, "ProxyError")
    }
    assert offenders == set(), "raise a refusal of proxy/refusals.py instead"


def test_only_upstream_errors_pass_an_upstream_body_through() -> None:
    offenders = {
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in PACKAGE.rglob("*.py")
        if path != PASSTHROUGH
        for line in _calls(path, "from_body")
    }
    assert offenders == set()


def _sample(annotation: object) -> object:
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return SAMPLES[annotation]


def _fields(refusal: Refusal[Any]) -> dict[str, object]:
    hints = typing.get_type_hints(refusal.message)
    hints.pop("return")
    return {name: _sample(annotation) for name, annotation in hints.items()}


def test_the_catalogue_is_not_empty_and_names_are_unique() -> None:
    names = [refusal.name for refusal in REFUSALS]
    assert len(names) > 30 and len(set(names)) == len(names)


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda r: r.name)
def test_every_refusal_renders_an_openai_shaped_error(refusal: Refusal[Any]) -> None:
    parameters = inspect.signature(refusal.message).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), (
        "fields are keywords only, so a site names each one"
    )
    fields = _fields(refusal)
    error = refusal.error(**fields)
    assert error.status == refusal.status and 400 <= error.status < 600
    assert error.body == {
        "message": error.body["message"],
        "type": refusal.type,
        "param": fields[refusal.param_from] if refusal.param_from else refusal.param,
        "code": refusal.code,
    }
    assert isinstance(error.body["message"], str) and error.body["message"]
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in error.headers.items())
    assert error.error_type == refusal.error_type
    assert error.error_type in {refusal.code, "invalid_request", "credit_exhausted", "rate_limited"}
    if refusal.status == 429:
        assert error.headers, "a rate limit answers with OpenAI's x-ratelimit-* headers"


# --- the table of docs/proxy.md -------------------------------------------------------------

TICKED = re.compile(r"`([^`]+)`")


def documented() -> set[tuple[int, str, str | None]]:
    """(status, type, code) of every row of the table under '## Errors' whose code cell is ours
    (in backticks; `null` for none). A cell with several values (`requests` or `tokens`) stands
    for each of them."""
    text = (ROOT / "docs" / "proxy.md").read_text()
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header, _, *body = rows
    assert [cell.strip() for cell in header.strip("|").split("|")][:3] == [
        "status",
        "type",
        "code",
    ]
    answers = set()
    for row in body:
        status, kind, code = (cell.strip() for cell in row.strip("|").split("|")[:3])
        codes = TICKED.findall(code)
        if not codes:
            continue  # an upstream answer passed through as the provider worded it
        types = TICKED.findall(kind)
        assert types, row
        for one_type, one_code in itertools.product(types, codes):
            answers.add((int(status), one_type, None if one_code == "null" else one_code))
    return answers


def test_the_docs_list_every_refusal_of_the_catalogue_and_nothing_else() -> None:
    declared = {(refusal.status, refusal.type, refusal.code) for refusal in REFUSALS}
    listed = documented()
    assert declared - listed == set(), "refusals missing from the table of docs/proxy.md"
    assert listed - declared == set(), "rows of docs/proxy.md that no refusal answers with"
