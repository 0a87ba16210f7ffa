"""Disease taxonomy trees, loaded from data files; the network's heads are generated from them.

A node's level is its depth (roots are level 1). Adding a level means adding nodes whose parent
is a level-2 node; nothing in the code changes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from services.kernel.errors import TaxonomyError


class Route(StrEnum):
    """Which model reads a photograph: one per photo type, each with its taxonomy."""

    FUNDUS = "fundus"
    ANTERIOR = "anterior"


ROUTES: tuple[str, ...] = tuple(Route)


@dataclass(frozen=True)
class Node:
    """One class of the taxonomy: code, name, parent, level, and whether it means normal."""

    code: str
    name: str
    parent: str | None
    level: int
    normal: bool = False
    extension: bool = False


@dataclass(frozen=True)
class Taxonomy:
    """The disease tree of one photo type; the network's heads are generated from it."""

    name: str
    version: str
    nodes: tuple[Node, ...]
    description: str = ""
    _by_code: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_code", {n.code: n for n in self.nodes})

    @property
    def depth(self) -> int:
        """The number of levels."""
        return max(n.level for n in self.nodes)

    def level(self, level: int) -> list[Node]:
        """Nodes of one level (1-based), in file order: the column order of that level's head."""
        return [n for n in self.nodes if n.level == level]

    def level_codes(self, level: int) -> list[str]:
        """The codes of one level, in head column order."""
        return [n.code for n in self.level(level)]

    @property
    def codes(self) -> list[str]:
        """Every code, level by level: the order of a flattened probability vector."""
        return [c for lvl in range(1, self.depth + 1) for c in self.level_codes(lvl)]

    def has(self, code: str) -> bool:
        """Whether the code is in the taxonomy."""
        return code in self._by_code

    def level_sizes(self) -> list[int]:
        """Number of classes per level, level 1 first: the widths of the network's heads."""
        return [len(self.level(lvl)) for lvl in range(1, self.depth + 1)]

    def node(self, code: str) -> Node:
        """The node of a code; an unknown code raises ``TaxonomyError``."""
        try:
            return self._by_code[code]
        except KeyError:
            raise TaxonomyError(f"unknown code {code!r} in taxonomy {self.name!r}") from None

    def ancestors(self, code: str) -> list[str]:
        """The code's parent, grandparent, ... up to level 1."""
        chain = []
        parent = self.node(code).parent
        while parent is not None:
            chain.append(parent)
            parent = self.node(parent).parent
        return chain

    def children(self, code: str) -> list[Node]:
        """The nodes whose parent is the code."""
        return [n for n in self.nodes if n.parent == code]

    def with_ancestors(self, codes: set[str] | list[str]) -> set[str]:
        """The codes and all their ancestors."""
        closed = set(codes)
        for code in codes:
            closed.update(self.ancestors(code))
        return closed

    def parent_index(self, level: int) -> list[int]:
        """For each node of ``level`` (>= 2), the column of its parent in ``level - 1``."""
        parents = self.level_codes(level - 1)
        return [parents.index(n.parent) for n in self.level(level) if n.parent is not None]

    def to_dict(self) -> dict[str, Any]:
        """The taxonomy as stored in checkpoints and files."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "nodes": [
                {"code": n.code, "name": n.name, "parent": n.parent}
                | ({"normal": True} if n.normal else {})
                | ({"extension": True} if n.extension else {})
                for n in self.nodes
            ],
        }


def parse_taxonomy(data: dict[str, Any], source: str = "<taxonomy>") -> Taxonomy:
    """Build and validate a taxonomy; errors name the offending code."""
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise TaxonomyError(f"{source}: 'nodes' must be a non-empty list")
    parents: dict[str, str | None] = {}
    for i, raw in enumerate(raw_nodes):
        code = raw.get("code")
        if not code or not isinstance(code, str):
            raise TaxonomyError(f"{source}: node #{i + 1} has no code")
        if code in parents:
            raise TaxonomyError(f"{source}: duplicate code {code!r}")
        parents[code] = raw.get("parent")
    for code, parent in parents.items():
        if parent is not None and parent not in parents:
            raise TaxonomyError(f"{source}: {code!r} has unknown parent {parent!r}")
    levels = {code: _depth(code, parents, source) for code in parents}
    nodes = tuple(
        Node(
            code=raw["code"],
            name=str(raw.get("name") or raw["code"]),
            parent=raw.get("parent"),
            level=levels[raw["code"]],
            normal=bool(raw.get("normal", False)),
            extension=bool(raw.get("extension", False)),
        )
        for raw in raw_nodes
    )
    return Taxonomy(
        name=str(data.get("name", "")),
        version=str(data.get("version", "")),
        nodes=nodes,
        description=str(data.get("description", "")),
    )


def _depth(code: str, parents: dict[str, str | None], source: str) -> int:
    seen = [code]
    parent = parents[code]
    while parent is not None:
        if parent in seen:
            raise TaxonomyError(f"{source}: cycle through {' -> '.join([*seen, parent])}")
        seen.append(parent)
        parent = parents[parent]
    return len(seen)


def load_taxonomy(name_or_path: str | Path) -> Taxonomy:
    """Load a shipped tree by route name (``fundus``, ``anterior``) or any JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        return parse_taxonomy(json.loads(path.read_text()), str(path))
    return _shipped(str(name_or_path))


@functools.lru_cache(maxsize=8)
def _shipped(name_or_path: str) -> Taxonomy:
    """A shipped tree, parsed once per process (it is read for every image and every eye)."""
    resource = resources.files("services.taxonomy").joinpath(f"{name_or_path}.json")
    if not resource.is_file():
        raise TaxonomyError(f"no taxonomy named {name_or_path!r}; shipped: {', '.join(ROUTES)}")
    return parse_taxonomy(json.loads(resource.read_text()), str(name_or_path))


def route_of_code(code: str) -> str:
    """The route whose shipped taxonomy holds this code (codes are unique across routes)."""
    for route in ROUTES:
        if load_taxonomy(route).has(code):
            return route
    raise TaxonomyError(f"no shipped taxonomy has the code {code!r}")


def level_of_code(code: str) -> int:
    """The level of a code in its shipped taxonomy (1 for the roots)."""
    return load_taxonomy(route_of_code(code)).node(code).level
