from pathlib import Path

import pytest

from livedub.settings_doc import render, splice

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_setting_as_the_models_define_it() -> None:
    text = README.read_text()
    assert splice(text) == text, "README settings are stale: python -m livedub.settings_doc --write README.md"
    for line in render().splitlines():
        if line.startswith("| `"):
            assert line in text
