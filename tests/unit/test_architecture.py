"""The house's import rules (``tests/import_rules.py``) hold for the tree, and the checker
catches each kind of breach when one is planted."""

from pathlib import Path

import pytest

from tests.import_rules import import_circles, read_tree, rule_breaches

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tree() -> dict[str, str]:
    return read_tree(ROOT)


def test_services_keep_their_import_rules(tree: dict[str, str]) -> None:
    assert rule_breaches(tree) == []


def test_no_import_circle_in_the_project(tree: dict[str, str]) -> None:
    assert import_circles(tree) == []


def test_every_services_package_says_what_it_owns_and_may_import(tree: dict[str, str]) -> None:
    import ast

    packages = [m for m in tree if m.startswith("services.") and m.count(".") == 1]
    assert len(packages) >= 11
    for package in packages:
        docstring = ast.get_docstring(ast.parse(tree[package])) or ""
        assert "May import" in docstring, f"{package}/__init__.py: say what it may import"


def _planted(tree: dict[str, str], module: str, source: str) -> dict[str, str]:
    return {**tree, module: source}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("services.clinic.x", "import torch\n", "imports no protocol, web or torch"),
        ("services.intake.x", "from pynetdicom import AE\n", "imports no protocol"),
        ("services.study.x", "from fastapi import APIRouter\n", "imports no protocol"),
        ("services.screening.x", "def f():\n    import celery\n", "imports no protocol"),
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
