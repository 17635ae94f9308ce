"""Apertium with the real Debian language data: English ↔ French through Spanish (two modes in a row)."""

from __future__ import annotations

import pytest

from livedub.dubbing.translate.apertium import CHAINS, ApertiumTranslator

pytestmark = pytest.mark.integration


def test_english_and_french_translate_through_spanish() -> None:
    apertium = ApertiumTranslator()
    assert CHAINS[("en", "fr")] == ("eng-spa", "es-fr") and CHAINS[("fr", "en")] == ("fr-es", "spa-eng")
    french = apertium.translate("Please leave your message after the tone.", "en", "fr").lower()
    assert {"votre", "message", "après"} <= set(french.replace(",", " ").replace(".", " ").split()), french
    english = apertium.translate("Veuillez laisser votre message après le bip.", "fr", "en").lower()
    assert {"your", "message", "after"} <= set(english.replace(".", " ").split()), english
