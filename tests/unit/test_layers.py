"""The import graph of src/livedub, read with `ast` (nothing is imported): no module imports upward or in a circle,
the engine imports none of the services, the two services meet only through their shared layers, and the product
never imports its test tooling (livedub.testing).

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "livedub"
TESTING = "livedub.testing"
DUBBING = "livedub.dubbing"

# Lowest first; a subpackage (or top-level module) may import its own layer's neighbours and the layers below.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"paths", "lifetime", "languages", "deadline", "protocol", "models", "mediaserver"}),
    frozenset({"dubbing"}),
    frozenset({"sts", "media"}),
    frozenset({"stack", "observe", "analysis", "fixture"}),
    frozenset({"demo", "cli", "settings_doc"}),
    frozenset({"testing"}),
)
# Subpackages of one layer that must not import each other (they meet through the layers below).
APART = (("livedub.media", "livedub.sts"), ("livedub.sts", "livedub.media"))


@dataclass(frozen=True)
class ImportEdge:
    importer: str  # module name
    imported: str  # module name as written (a `from a import b` also counts as importing a.b)
    where: str  # path:line, for the failure message

    def between(self) -> tuple[str, str]:
        return top_level(self.importer), top_level(self.imported)


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.AST, package: str) -> list[str]:
    """The modules an import statement names; a relative import resolved against `package`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_edges(src: Path, root: str = ROOT) -> list[ImportEdge]:
    """Every import of a `root` module by a `root` module under `src`."""
    edges: list[ImportEdge] = []
    for path in sorted((src / root).rglob("*.py")):
        module = module_name(path, src)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for imported in imported_modules(node, package):
                if imported == root or imported.startswith(root + "."):
                    edges.append(ImportEdge(module, imported, f"{path.relative_to(src)}:{node.lineno}"))
    return edges


@cache
def livedub_edges() -> tuple[ImportEdge, ...]:
    return tuple(import_edges(SRC))


def top_level(module: str) -> str:
    """`livedub.media` for livedub.media.pipeline.worker; `livedub` for the root package itself."""
    return ".".join(module.split(".")[:2])


def subpackage_graph(edges: Iterable[ImportEdge]) -> dict[str, set[str]]:
    """Which subpackage imports which (self-imports and the root package left out)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        importer, imported = edge.between()
        graph.setdefault(importer, set())
        if importer != imported and imported != ROOT:
            graph[importer].add(imported)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as a path that ends where it starts ([] when there is none)."""
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for imported in sorted(graph.get(node, ())):
            cycle = walk(imported, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return []

    for start in sorted(graph):
        cycle = walk(start, [])
        if cycle:
            return cycle
    return []


def reaches(graph: dict[str, set[str]], start: str, target: str) -> list[str]:
    """An import path from `start` to `target` ([] when none)."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for imported in sorted(graph.get(node, ())):
            if imported not in paths:
                paths[imported] = [*paths[node], imported]
                queue.append(imported)
    return paths.get(target, [])


def layer_of(subpackage: str) -> int:
    name = subpackage.removeprefix(ROOT + ".")
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f"{subpackage} is in no layer: add it to LAYERS in {Path(__file__).name}")


def upward_imports(edges: Iterable[ImportEdge]) -> list[str]:
    found = []
    for edge in edges:
        importer, imported = edge.between()
        if ROOT in (importer, imported):
            continue
        if layer_of(imported) > layer_of(importer):
            found.append(f"{edge.where}: {edge.importer} imports {edge.imported} (a higher layer)")
    return found


def dubbing_imports_of_services(edges: Iterable[ImportEdge]) -> list[str]:
    services = ("livedub.protocol", "livedub.sts", "livedub.media")
    return [
        f"{edge.where}: {edge.imported}"
        for edge in edges
        if edge.between()[0] == DUBBING and edge.between()[1] in services
    ]


# --- the graph reader itself, on a made-up package ---


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_reader_resolves_relative_and_lazy_imports_and_finds_a_circle(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a/__init__.py": "from .inner import thing\n",
            "pkg/a/inner.py": "def f():\n    from pkg.b import x  # lazy\n",
            "pkg/b/__init__.py": "from ..a import inner\nimport os\n",
            "pkg/c.py": "from pkg import a\n",
        },
    )
    edges = import_edges(tmp_path, root="pkg")
    pairs = {(edge.importer, edge.imported) for edge in edges}
    assert ("pkg.a", "pkg.a.inner") in pairs
    assert ("pkg.a.inner", "pkg.b") in pairs
    assert ("pkg.b", "pkg.a.inner") in pairs
    assert ("pkg.c", "pkg.a") in pairs
    assert not any("os" in imported for _, imported in pairs)
    graph = {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    assert find_cycle({"pkg.c": {"pkg.a"}, "pkg.a": {"pkg.b"}}) == []
    assert reaches(graph, "pkg.c", "pkg.b") == ["pkg.c", "pkg.a", "pkg.b"]
    assert reaches(graph, "pkg.b", "pkg.c") == []


# --- the rules, on src/livedub ---


def test_the_product_never_imports_its_test_tooling() -> None:
    offenders = [
        f"{edge.where}: {edge.importer} imports {edge.imported}"
        for edge in livedub_edges()
        if top_level(edge.imported) == TESTING and top_level(edge.importer) != TESTING
    ]
    assert offenders == []


def test_no_subpackage_imports_a_higher_layer() -> None:
    assert upward_imports(livedub_edges()) == []


def test_dubbing_imports_none_of_protocol_sts_media() -> None:
    assert dubbing_imports_of_services(livedub_edges()) == []


def test_no_import_circle_between_subpackages() -> None:
    cycle = find_cycle(subpackage_graph(livedub_edges()))
    if cycle:
        print("import circle:", " -> ".join(cycle))
    assert cycle == [], " -> ".join(cycle)


@pytest.mark.parametrize(("importer", "imported"), APART)
def test_media_and_sts_do_not_import_each_other(importer: str, imported: str) -> None:
    direct = [edge.where for edge in livedub_edges() if edge.between() == (importer, imported)]
    assert direct == []


@pytest.mark.parametrize(("importer", "imported"), APART)
def test_media_and_sts_meet_only_through_the_shared_layers(importer: str, imported: str) -> None:
    path = reaches(subpackage_graph(livedub_edges()), importer, imported)
    assert path == [], " -> ".join(path)
