"""The house's import rules (``tests/import_rules.py``) hold for the tree, and the checker
catches each kind of breach when one is planted."""

import re
from pathlib import Path

import pytest

from tests.import_rules import (
    CONTEXTS,
    SHARED,
    allowed_imports,
    contexts_used,
    import_circles,
    read_tree,
    rule_breaches,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tree() -> dict[str, str]:
    return read_tree(ROOT)


def test_services_keep_their_import_rules(tree: dict[str, str]) -> None:
    assert rule_breaches(tree) == []


def test_no_import_circle_in_the_project(tree: dict[str, str]) -> None:
    assert import_circles(tree) == []


def _packages(tree: dict[str, str]) -> list[str]:
    return sorted(m.split(".")[1] for m in tree if m.startswith("services.") and m.count(".") == 1)


def test_every_services_package_is_a_context_or_shared(tree: dict[str, str]) -> None:
    assert set(_packages(tree)) == set(SHARED) | set(CONTEXTS)


def test_every_package_says_truly_what_it_may_import(tree: dict[str, str]) -> None:
    """The "May import:" sentence of each ``__init__`` names exactly the packages the rules
    allow besides the shared kernel, and every allowed edge is used (no stale permissions)."""
    import ast

    used = contexts_used(tree)
    for package in _packages(tree):
        docstring = ast.get_docstring(ast.parse(tree[f"services.{package}"])) or ""
        sentence = re.search(r"May import:(.*?)(?:\.\s|\.$)", docstring, re.S)
        assert sentence, f"services/{package}/__init__.py: say what it may import"
        named = set(re.findall(r"``services\.(\w+)``", sentence.group(1)))
        allowed = allowed_imports(package) - (set() if package in SHARED else set(SHARED))
        assert named == allowed, f"services/{package}/__init__.py names {named}, rules {allowed}"
        uses = used.get(package, set()) - (set() if package in SHARED else set(SHARED))
        assert uses == allowed, f"services.{package} may import {allowed} but imports {uses}"


def test_contexts_depend_on_each_other_without_a_circle() -> None:
    graph = {name: set(edges) for name, edges in CONTEXTS.items()}
    seen: set[str] = set()
    while graph:
        leaves = [name for name, edges in graph.items() if not edges - seen]
        assert leaves, f"circle among contexts: {sorted(graph)}"
        for name in leaves:
            seen.add(name)
            del graph[name]


def _planted(tree: dict[str, str], module: str, source: str) -> dict[str, str]:
    return {**tree, module: source}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("services.clinic.x", "import torch\n", "imports no protocol, web or torch"),
        ("services.intake.x", "from pynetdicom import AE\n", "imports no protocol"),
        ("services.study.x", "from fastapi import APIRouter\n", "imports no protocol"),
        ("services.screening.x", "def f():\n    import celery\n", "imports no protocol"),
        (
            "services.clinic.x",
            "import importlib\nimportlib.import_module('pydicom')\n",
            "imports no protocol",
        ),
        ("services.intake.x", "from services.clinic import eye_of\n", "may not depend on clinic"),
        (
            "services.study.x",
            "from services.clinic.grading import eye_of\n",
            "reach clinic through services.clinic",
        ),
        ("services.study.x", "from ..clinic.triage import Conflict\n", "reach clinic through"),
        ("services.db.x", "from services.kernel import outbox\n", "may import only []"),
        ("services.kernel.x", "from services.clinic import eye_of\n", "imports no context"),
    ],
)
def test_the_checker_names_a_planted_breach(
    tree: dict[str, str], module: str, source: str, expected: str
) -> None:
    breaches = rule_breaches(_planted(tree, module, source))
    assert len(breaches) == 1 and module in breaches[0] and expected in breaches[0], breaches


def test_the_checker_finds_a_circle_through_a_package_face(tree: dict[str, str]) -> None:
    """Importing ``services.clinic.escalation`` runs ``services/clinic/__init__`` first, which
    imports triage, which imports ``services.reporting``: a circle although no module names
    the other directly."""
    planted = _planted(
        tree,
        "services.reporting.predictions",
        tree["services.reporting.predictions"] + "\nfrom services.clinic.escalation import x\n",
    )
    circles = import_circles(planted)
    assert any("services.clinic" in c and "services.reporting" in c for c in circles), circles


def test_the_checker_finds_an_edge_circle_of_the_web_application(tree: dict[str, str]) -> None:
    planted = _planted(
        tree, "webapp.grading_pages", tree["webapp.grading_pages"] + "\nfrom . import app\n"
    )
    assert any({"webapp.app", "webapp.grading_pages"} <= set(c) for c in import_circles(planted))


def test_the_checker_finds_a_circle_made_by_a_late_import(tree: dict[str, str]) -> None:
    planted = _planted(
        tree,
        "services.kernel.errors",
        tree["services.kernel.errors"] + "\ndef f():\n    from services.kernel import settings\n",
    )
    planted = _planted(
        planted,
        "services.kernel.settings",
        tree["services.kernel.settings"] + "\nif False:\n"
        "    from services.kernel.errors import StorageFull\n",
    )
    assert ["services.kernel.errors", "services.kernel.settings"] in import_circles(planted)


def test_the_architecture_page_draws_the_contexts_as_the_rules_have_them() -> None:
    page = (ROOT / "docs/architecture.md").read_text()
    chart = page[page.index("flowchart BT") :].split("```")[0]
    drawn = set(re.findall(r"^  (\w+) --> (\w+)$", chart, re.M))
    ruled = {(a, b) for a, deps in CONTEXTS.items() for b in deps}
    ruled |= {(a, "kernel") for a, deps in CONTEXTS.items() if not deps}
    assert drawn == ruled
