"""The media-service's modules import one another without a circle (late imports inside functions count too), and
its parts by role only downward: service -> pipeline -> outputs / sts_link -> the shared base (settings, metrics,
types at the package's root)."""

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
            if node.module == PACKAGE:  # from livedub.media.service import operator
                names |= {f"{PACKAGE}.{alias.name}" for alias in node.names}
            elif node.module.startswith(f"{PACKAGE}."):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith(f"{PACKAGE}.")}
    return names


def module_name(path: Path) -> str:
    return ".".join([PACKAGE, *path.relative_to(MEDIA).with_suffix("").parts])


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in MEDIA.rglob("*.py") if path.stem != "__init__"}
    return {name: media_imports(path) & set(modules) for name, path in modules.items()}


# Each role may import the roles after it in this list, never one before it (and the base from anywhere).
ROLES = ("service", "pipeline", "outputs", "sts_link")
SIDE_BY_SIDE = frozenset({"outputs", "sts_link"})  # neither imports the other


def role_of(module: str) -> str:
    part = module.removeprefix(f"{PACKAGE}.").split(".")[0]
    return part if part in ROLES else "base"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for source, targets in edges.items():
        for target in targets:
            a, b = role_of(source), role_of(target)
            if a == b or b == "base":
                continue
            if a == "base" or ROLES.index(b) < ROLES.index(a) or {a, b} == SIDE_BY_SIDE:
                found.append(f"{source} -> {target}")
    return sorted(found)


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
    assert f"{PACKAGE}.service.operator" in edges and f"{PACKAGE}.service.app" in edges
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_media_roles_import_only_downward() -> None:
    edges = graph()
    assert {role_of(name) for name in edges} == {*ROLES, "base"}  # the check sees every role
    assert upward_imports(edges) == []
    assert upward_imports({f"{PACKAGE}.outputs.hls": {f"{PACKAGE}.pipeline.muxer"}}) != []  # it can fail


def test_every_secret_is_compared_in_the_access_module() -> None:
    """Access checks live in one module: no other media module compares secrets."""
    comparing = sorted(path.name for path in MEDIA.rglob("*.py") if "compare_digest" in path.read_text())
    assert comparing == ["access.py"]
