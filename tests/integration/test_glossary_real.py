"""Glossaries with the real translators: the LLM of the model cache and the Debian apertium data."""

from __future__ import annotations

import pytest

from livedub.dubbing.glossary import contains
from livedub.dubbing.interfaces import TranslationContext
from livedub.dubbing.translate import ApertiumTranslator, LlmTranslator
from livedub.dubbing.translate.llm import leaked_example
from livedub.sts.settings import StsSettings

pytestmark = pytest.mark.integration

TERMS = (("pound key", "tecla de número"), ("Acme Support", "Acme Support"), ("voicemail", "buzón de voz"))


@pytest.fixture(scope="module")
def llm() -> LlmTranslator:
    from livedub.dubbing.model_files import cpu_threads, resolve_model

    settings = StsSettings()
    return LlmTranslator(resolve_model(settings.llm_model), settings.llm_context, cpu_threads(settings.cpu_threads))


def test_apertium_puts_the_glossary_translation_in_place() -> None:
    apertium = ApertiumTranslator()
    context = TranslationContext(glossary=TERMS)
    text = "Please call Acme Support and press the pound key."
    plain = apertium.translate(text, "en", "es")
    assert "tecla de número" not in plain and "Acme Support" not in plain  # apertium alone says otherwise
    spanish = apertium.translate(text, "en", "es", context)
    assert "Acme Support" in spanish and "tecla de número" in spanish, spanish
    assert "Zqx" not in spanish and "*" not in spanish
    assert contains(spanish, "pulsa") or contains(spanish, "prensa") or "llama" in spanish.lower(), spanish
    # Through Spanish into French (two modes): the placeholder survives both.
    french = apertium.translate("Check your voicemail now.", "en", "fr", TranslationContext(glossary=TERMS))
    assert "buzón de voz" in french and "Zqx" not in french, french


def test_the_llm_honours_the_glossary(llm: LlmTranslator) -> None:
    context = TranslationContext(glossary=TERMS)
    text = "Please enter your password followed by the pound key."
    spanish = llm.translate(text, "en", "es", context)
    assert "tecla de número" in spanish.lower(), spanish
    assert contains(spanish, "contraseña"), spanish
    kept = llm.translate("Thank you for calling Acme Support.", "en", "es", context)
    assert "Acme Support" in kept, kept


def test_the_llm_with_the_previous_phrases_stays_on_topic(llm: LlmTranslator) -> None:
    context = TranslationContext(
        previous=(("Agent login.", "Inicio de sesión del agente."),), glossary=(("agent", "agente"),)
    )
    text = "Please enter your agent number followed by the pound key."
    spanish = llm.translate(text, "en", "es", context)
    assert contains(spanish, "agente"), spanish
    assert not leaked_example(spanish, text, "en", "es"), spanish
