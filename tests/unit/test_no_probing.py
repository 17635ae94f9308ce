"""Two shapes the code keeps out (issue 18): optional features found by `getattr(obj, "name", default)` or
`hasattr(obj, "name")` at the services' seams (what a seam offers is declared by a protocol or a dataclass
instead), and functions of 80 lines or more anywhere in the product."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src" / "livedub"
SERVICES = (SRC / "media", SRC / "sts")
MAX_FUNCTION_LINES = 80

# (file under src/livedub, attribute): the only 3-argument getattr calls with a literal name allowed, each with why.
ALLOWED_PROBES = {
    # Describing a type annotation for docs/protocol.md: `__name__` exists on classes but not on every typing
    # construct; this reads Python's own metadata of arbitrary types, it probes no service object.
    ("sts/protocol_doc.py", "__name__"),
}


def _python_files(*roots: Path) -> list[Path]:
    return sorted(path for root in roots for path in root.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


PROBE_ARITY = {"getattr": 3, "hasattr": 2}  # getattr with a default; hasattr always asks "is it there?"


def literal_probes(tree: ast.AST) -> list[tuple[int, str]]:
    """`getattr(x, "<literal>", default)` and `hasattr(x, "<literal>")` calls: (line, attribute)."""
    probes = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and len(node.args) == PROBE_ARITY.get(node.func.id)
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            probes.append((node.lineno, node.args[1].value))
    return probes


def long_functions(tree: ast.AST, limit: int = MAX_FUNCTION_LINES) -> list[tuple[int, str, int]]:
    """Functions and methods of `limit` lines or more (decorators not counted): (line, name, length)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length >= limit:
                found.append((node.lineno, node.name, length))
    return found


def test_the_checks_see_what_they_look_for() -> None:
    probe = ast.parse(
        'value = getattr(settings, "targets", None)\nother = getattr(obj, name, None)\n'
        'found = hasattr(runner, "hold_output")\nplain = getattr(obj, "x")\n'
    )
    # a computed name is reflection, and a 2-argument getattr fails loudly: neither is a feature probe
    assert literal_probes(probe) == [(1, "targets"), (3, "hold_output")]
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    assert long_functions(ast.parse(f"def long():\n{body}\n")) == [(1, "long", MAX_FUNCTION_LINES)]
    assert long_functions(ast.parse("def short():\n    return 1\n")) == []


def test_no_getattr_feature_probing_in_the_services() -> None:
    found = [
        f"{_relative(path)}:{line}: getattr(..., {name!r}, ...)"
        for path in _python_files(*SERVICES)
        for line, name in literal_probes(ast.parse(path.read_text(), str(path)))
        if (_relative(path), name) not in ALLOWED_PROBES
    ]
    assert not found, "declare what the seam offers (a protocol, a dataclass) instead of probing:\n" + "\n".join(found)


def test_the_allow_list_holds_only_probes_that_are_there() -> None:
    present = {
        (_relative(path), name)
        for path in _python_files(*SERVICES)
        for _, name in literal_probes(ast.parse(path.read_text(), str(path)))
    }
    assert ALLOWED_PROBES <= present, f"no longer needed: {sorted(ALLOWED_PROBES - present)}"


def test_every_function_is_under_80_lines() -> None:
    found = [
        f"{_relative(path)}:{line}: {name} has {length} lines"
        for path in _python_files(SRC)
        for line, name, length in long_functions(ast.parse(path.read_text(), str(path)))
    ]
    assert not found, f"split these into smaller functions (< {MAX_FUNCTION_LINES} lines):\n" + "\n".join(found)
