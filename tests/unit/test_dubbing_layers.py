"""The engine (livedub/dubbing) stands alone: none of its modules imports the protocol, the STS or the
media-service (issue 18). Read from the source with `ast`, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DUBBING = Path(__file__).resolve().parents[2] / "src" / "livedub" / "dubbing"
FORBIDDEN = ("livedub.protocol", "livedub.sts", "livedub.media")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def forbidden(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in FORBIDDEN)


def test_the_engine_imports_nothing_of_the_services() -> None:
    files = sorted(DUBBING.rglob("*.py"))
    assert len(files) > 20  # the package is where this test thinks it is
    upward = [
        f"{path.relative_to(DUBBING)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(ast.parse(path.read_text(encoding="utf-8")))
        if forbidden(module)
    ]
    assert upward == []


def test_the_check_sees_an_upward_import() -> None:
    tree = ast.parse("def f():\n    from livedub.sts.settings import StsSettings\nimport livedub.protocol\n")
    assert {module for _, module in imported_modules(tree) if forbidden(module)} == {
        "livedub.sts.settings",
        "livedub.sts.settings.StsSettings",
        "livedub.protocol",
    }
    assert not forbidden("livedub.stsx") and not forbidden("livedub.languages")
