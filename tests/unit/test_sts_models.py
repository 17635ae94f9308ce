"""Backends picked from the language table and the settings (no model is loaded: injected stand-ins)."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.dubbing.interfaces import NO_CONTEXT, FloatAudio, Transcript, TranslationContext, UnsupportedLanguageError
from livedub.dubbing.tts.registry import TTSCapabilities, fast_voices_of
from livedub.languages import LANGUAGES, VoiceRef
from livedub.sts.backends import fast_translator_kind, load_engine, translator_kind, tts_kind, voices_of
from livedub.sts.settings import StsSettings

pytestmark = pytest.mark.unit


def test_the_translator_of_a_pair_is_the_override_then_the_default_then_the_table() -> None:
    settings = StsSettings(STS_TRANSLATOR="llm", STS_TRANSLATOR_OVERRIDES="en-es=apertium,fr-it=google")
    assert translator_kind(settings, "en", "es") == "apertium"
    assert translator_kind(settings, "fr", "it") == "google"
    assert translator_kind(settings, "en", "fr") == "llm"
    # apertium as the default: on pairs without an apertium mode the target's preferred translator stands in.
    fast_first = StsSettings(STS_TRANSLATOR="apertium")
    assert translator_kind(fast_first, "es", "fr") == "apertium"
    assert translator_kind(fast_first, "en", "it") == LANGUAGES["it"].translators[0] == "llm"
    # An override names its pair: a translator that cannot do it is refused, not replaced.
    with pytest.raises(ValueError, match="apertium cannot translate en->it"):
        translator_kind(StsSettings(STS_TRANSLATOR_OVERRIDES="en-it=apertium"), "en", "it")


def test_an_unsupported_pair_has_no_translator() -> None:
    for source, target in (("en", "ru"), ("de", "en"), ("en", "en")):
        with pytest.raises(UnsupportedLanguageError):
            translator_kind(StsSettings(), source, target)


def test_the_fast_stand_in_only_where_it_can_translate() -> None:
    settings = StsSettings(STS_FAST_TRANSLATOR="apertium")
    assert fast_translator_kind(settings, "en", "es") == "apertium"
    assert fast_translator_kind(settings, "fr", "es") == "apertium"
    assert fast_translator_kind(settings, "en", "fr") == "apertium"  # through Spanish
    assert fast_translator_kind(settings, "en", "it") is None  # no apertium mode
    assert fast_translator_kind(StsSettings(STS_FAST_TRANSLATOR=""), "en", "es") is None
    same = StsSettings(STS_TRANSLATOR_OVERRIDES="en-es=apertium", STS_FAST_TRANSLATOR="apertium")
    assert fast_translator_kind(same, "en", "es") is None  # the main one already is the fast one


def test_voices_come_from_the_table_unless_pinned() -> None:
    assert voices_of(StsSettings(), "fr") == list(LANGUAGES["fr"].voices)
    assert tts_kind(StsSettings(), "en") == str(LANGUAGES["en"].voices[0])
    pinned = StsSettings(STS_TTS_VOICES="fr=espeak-ng,en=kokoro:jf_alpha,en=piper:default")
    assert voices_of(pinned, "fr") == [VoiceRef("espeak-ng", LANGUAGES["fr"].espeak, "male")]
    en = voices_of(pinned, "en")
    assert [str(v) for v in en] == ["kokoro:jf_alpha", "piper:piper-en_US-joe-medium"]
    assert [v.gender for v in en] == ["female", "male"]  # genders from the table
    assert voices_of(pinned, "it") == list(LANGUAGES["it"].voices)
    with pytest.raises(ValueError, match="Piper voice"):
        voices_of(StsSettings(STS_TTS_VOICES="it=piper"), "it")


class Stand:
    name, sample_rate = "stand-in", 16000
    capabilities = TTSCapabilities(languages=None, speaking_rate=False)

    def transcribe(self, audio: FloatAudio, language: str) -> Transcript:
        return Transcript("", language)

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        return text

    def synthesize(self, text: str, language: str, voice: str = "default") -> FloatAudio:
        return np.zeros(10, np.float32)


def test_load_engine_uses_injected_backends_and_refuses_unsupported_pairs() -> None:
    stand = Stand()
    pairs = (("en", "fr"), ("en", "it"))
    engine = load_engine(
        StsSettings(), pairs, asr=stand, translators=dict.fromkeys(pairs, stand), tts={"fr": stand, "it": stand}
    )
    assert set(engine.translate.translators) == set(pairs) and engine.translate_fast.translators == {}
    assert engine.voices.voices("fr") == [VoiceRef("stand-in", "default")]
    with pytest.raises(UnsupportedLanguageError):
        load_engine(StsSettings(), (("en", "ru"),), asr=stand, translators={("en", "ru"): stand}, tts={"ru": stand})


def test_every_language_has_a_fast_voice_unless_turned_off() -> None:
    # espeak-ng and Pico need no model: the bank is real, only the other voices are stand-ins.
    stand = Stand()
    pairs = (("en", "es"), ("en", "fr"))
    engine = load_engine(
        StsSettings(STS_TTS_VOICES="es=espeak-ng:es+f3,fr=espeak-ng:fr-fr+f3"), pairs, asr=stand,
        translators=dict.fromkeys(pairs, stand),
    )  # fmt: skip
    for language in ("es", "fr"):
        fast = fast_voices_of(language)
        assert engine.voices.fast_voice(language) == fast[0]  # the first
        for ref in fast:  # the one of the usual voice's gender
            assert engine.voices.fast_voice(language, like=VoiceRef("kokoro", "any", ref.gender)) == ref
        assert not set(engine.voices.fast_voices(language)) & set(engine.voices.voices(language))  # not to pick
    assert all(fast_voices_of(code) for code in LANGUAGES)
    off = load_engine(
        StsSettings(STS_FAST_VOICE="false", STS_TTS_VOICES="es=espeak-ng:es+f3"), (("en", "es"),), asr=stand,
        translators={("en", "es"): stand},
    )  # fmt: skip
    assert off.voices.fast_voice("es") is None and off.voices.fast_voices("es") == []
