"""The house's import rules, read from the source with ``ast`` (nothing is imported).

- ``services/`` is the domain core: it imports no DICOM, Celery, HTTP or torch library and
  no edge package (the gateway, the worker, the web application, the reports, the model code).
- Its shared kernel packages (``SHARED``) may be imported at any depth by any context, and
  import each other only downwards (``SHARED`` lists what each may use).
- A context imports another context only through that context's package (its ``__init__``,
  which re-exports what the others use) and only where ``CONTEXTS`` allows it.
- No import circle anywhere in the project's packages, counting imports inside functions and
  under ``TYPE_CHECKING``: a circle that only works because one side imports late is still one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_PACKAGES = ("services", "webapp", "worker", "dicom_gateway", "reports", "ml", "eyescreen")

# Shared kernel: package -> the shared packages it may import.
SHARED: dict[str, set[str]] = {
    "db": set(),
    "statistics": set(),
    "kernel": {"db"},
    "taxonomy": {"kernel"},
}

# Contexts: package -> the contexts it may import (through their faces), besides the kernel.
CONTEXTS: dict[str, set[str]] = {
    "intake": set(),
    "workflow": set(),
    "screening": set(),
    "access": set(),
    "reporting": {"screening"},
    "clinic": {"access", "reporting", "screening"},  # screening: the Quality verdicts
    "study": {"clinic", "reporting", "screening"},  # screening: the Quality verdicts
    "operations": {"clinic", "workflow"},
}

# Libraries the domain core must not import (protocols, brokers, web, the network itself).
FORBIDDEN_IN_SERVICES = (
    "pydicom", "pynetdicom", "highdicom", "celery", "kombu", "redis", "fastapi", "starlette",
    "uvicorn", "httpx", "requests", "http", "urllib.request", "torch", "torchvision",
    "hl7apy", "socket", "ssl", "urllib3", "smtplib",
    "webapp", "worker", "dicom_gateway", "reports", "ml", "eyescreen",
)  # fmt: skip


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module (or package) name imported
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_tree(root: Path, packages: Iterable[str] = PROJECT_PACKAGES) -> dict[str, str]:
    """Module name -> source, for every Python file of the given packages."""
    sources: dict[str, str] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            sources[module_name(root, path)] = path.read_text()
    return sources


def imports_of(module: str, source: str, modules: Mapping[str, str]) -> Iterator[Import]:
    """Every import in a module, resolved to the project's modules where it names one
    (``from pkg import submodule`` is an import of the submodule)."""
    is_package = any(m.startswith(module + ".") for m in modules)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _literal_import(node):
            yield Import(module, _literal_import(node), node.lineno)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.module, node.level)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if candidate in modules else base
                yield Import(module, target, node.lineno)


def _literal_import(call: ast.Call) -> str:
    """The module named by ``importlib.import_module("x")`` or ``__import__("x")``, if any."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name not in {"import_module", "__import__"} or not call.args:
        return ""
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, name] if name else anchor)


def _top(name: str) -> str:
    return name.split(".")[0]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def allowed_imports(package: str) -> set[str]:
    """The ``services`` packages a services package may import besides itself."""
    if package in SHARED:
        return set(SHARED[package])
    return set(CONTEXTS[package]) | set(SHARED)


def contexts_used(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """For each services package, the other services packages its modules import."""
    used: dict[str, set[str]] = {}
    for module, source in sources.items():
        parts = module.split(".")
        if parts[0] != "services" or len(parts) < 2:
            continue
        for imp in imports_of(module, source, sources):
            target = imp.target.split(".")
            if target[0] == "services" and len(target) > 1 and target[1] != parts[1]:
                used.setdefault(parts[1], set()).add(target[1])
    return used


def rule_breaches(sources: Mapping[str, str]) -> list[str]:
    """What breaks the rules of ``services/``, one line each, naming module, line and target."""
    breaches: list[str] = []
    for module, source in sources.items():
        if not _within(module, "services"):
            continue
        parts = module.split(".")
        own = parts[1] if len(parts) > 1 else None
        for imp in imports_of(module, source, sources):
            where = f"{module}:{imp.line} imports {imp.target}"
            if any(_within(imp.target, banned) for banned in FORBIDDEN_IN_SERVICES):
                breaches.append(f"{where}: the domain core imports no protocol, web or torch")
                continue
            if not _within(imp.target, "services") or own is None:
                continue
            target_parts = imp.target.split(".")
            other = target_parts[1] if len(target_parts) > 1 else None
            if other is None or other == own:
                continue
            breaches.extend(_context_breach(where, own, other, imp.target))
    return breaches


def _context_breach(where: str, own: str, other: str, target: str) -> list[str]:
    if other in SHARED:
        allowed = SHARED.get(own)
        if allowed is not None and other not in allowed:
            return [f"{where}: shared package {own} may import only {sorted(allowed)}"]
        return []
    if other not in CONTEXTS:
        return [f"{where}: {other} is neither a context nor a shared package"]
    if own in SHARED:
        return [f"{where}: the shared kernel imports no context"]
    if other not in CONTEXTS.get(own, set()):
        return [f"{where}: context {own} may not depend on {other}"]
    if target != f"services.{other}":
        return [f"{where}: reach {other} through services.{other} (its exports), not its modules"]
    return []


def import_circles(sources: Mapping[str, str]) -> list[list[str]]:
    """Each set of the project's modules that import each other in a circle (Tarjan). Importing
    ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` first: those count as imports too,
    unless the importer lives inside them."""
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, source in sources.items():
        for imp in imports_of(module, source, sources):
            for target in (*_ancestors(imp.target), imp.target):
                if target in sources and target != module and not _within(module, target):
                    graph[module].add(target)
    return [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
