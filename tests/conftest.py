"""Every test is marked by the folder it lives in (tests/unit -> unit, tests/integration -> integration,
tests/e2e -> e2e), so `-m unit` finds a test whose file forgot its `pytestmark`. A file's own markers stay."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
MARKER_OF_FOLDER = {"unit": "unit", "integration": "integration", "e2e": "e2e"}


def folder_marker(test_path: Path) -> str | None:
    """The marker of the tests/ folder that holds `test_path`; None for a test outside those folders."""
    try:
        folder = test_path.resolve().relative_to(TESTS_DIR).parts[0]
    except (ValueError, IndexError):
        return None
    return MARKER_OF_FOLDER.get(folder)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = folder_marker(item.path)
        if marker is not None and item.get_closest_marker(marker) is None:
            item.add_marker(marker)
