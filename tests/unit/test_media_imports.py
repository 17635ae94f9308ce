"""The media-service's modules import one another without a circle (late imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

MEDIA = Path(__file__).resolve().parents[2] / "src" / "livedub" / "media"
PACKAGE = "livedub.media"


def media_imports(path: Path) -> set[str]:
    """The livedub.media modules that `path` imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == PACKAGE:  # from livedub.media import operator
                names |= {f"{PACKAGE}.{alias.name}" for alias in node.names}
            elif node.module.startswith(f"{PACKAGE}."):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith(f"{PACKAGE}.")}
    return names


def graph() -> dict[str, set[str]]:
    modules = {f"{PACKAGE}.{path.stem}": path for path in MEDIA.glob("*.py") if path.stem != "__init__"}
    return {name: media_imports(path) & set(modules) for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first again at the end), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        for target in sorted(edges.get(name, ())):
            cycle = visit(target, [*path, name])
            if cycle is not None:
                return cycle
        done.add(name)
        return None

    for start in sorted(edges):
        cycle = visit(start, [])
        if cycle is not None:
            return cycle
    return None


def test_the_checker_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_media_modules_import_each_other_without_a_circle() -> None:
    edges = graph()
    assert f"{PACKAGE}.operator" in edges and f"{PACKAGE}.app" in edges
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_every_secret_is_compared_in_the_access_module() -> None:
    """Access checks live in one module: no other media module compares secrets."""
    comparing = sorted(path.name for path in MEDIA.glob("*.py") if "compare_digest" in path.read_text())
    assert comparing == ["access.py"]
