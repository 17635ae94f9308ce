"""The language table, the backends' declared capabilities, the voice bank and the settings that name backends."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.dubbing.interfaces import FloatAudio, UnsupportedLanguageError
from livedub.dubbing.translate import (
    ApertiumTranslator,
    DeepLTranslator,
    GoogleTranslator,
    LlmTranslator,
    TranslatorCapabilities,
)
from livedub.dubbing.tts import EspeakTTS, KokoroTTS, TTSCapabilities, UnknownVoiceError, VoiceBank
from livedub.languages import LANGUAGES, VoiceRef, check_pair, language, parse_pair, supported_pairs
from livedub.sts.settings import StsSettings, parse_assignments

pytestmark = pytest.mark.unit


def test_every_pair_of_en_es_fr_it_is_supported() -> None:
    assert {"en", "es", "fr", "it"} <= set(LANGUAGES)
    pairs = set(supported_pairs())
    assert {(s, t) for s in "en es fr it".split() for t in "en es fr it".split() if s != t} <= pairs
    assert all(s != t for s, t in pairs)
    for source, target in pairs:
        check_pair(source, target)


@pytest.mark.parametrize(("source", "target"), [("en", "ru"), ("de", "en"), ("en", "en"), ("", "es")])
def test_an_unsupported_pair_is_refused(source: str, target: str) -> None:
    with pytest.raises(UnsupportedLanguageError):
        check_pair(source, target)


def test_every_row_is_complete_and_has_a_female_and_a_male_voice() -> None:
    for code, row in LANGUAGES.items():
        assert row.code == code and row.whisper and row.espeak and row.name and row.native_name
        assert row.translators and row.voices
        assert row.example.endswith("?") and len(row.warmup.split()) >= 10
        genders = {voice.gender for voice in row.voices}
        assert {"female", "male"} <= genders, code
    # The one-shot example is the same sentence everywhere (any pair has an example).
    assert LANGUAGES["en"].example == "Could you tell me where the train station is?"
    assert language("fr").native_name == "Français"
    with pytest.raises(UnsupportedLanguageError, match="ru"):
        language("ru")


def test_voice_refs_and_pairs_parse() -> None:
    assert VoiceRef.parse(" espeak-ng:fr-fr+f3 ") == VoiceRef("espeak-ng", "fr-fr+f3")
    assert str(VoiceRef("kokoro", "jf_alpha", "female")) == "kokoro:jf_alpha"
    assert parse_pair("en-es") == ("en", "es")
    for bad in ("kokoro", ":x", "kokoro:"):
        with pytest.raises(ValueError):
            VoiceRef.parse(bad)
    with pytest.raises(ValueError):
        parse_pair("enes")


def test_translators_declare_the_pairs_they_translate() -> None:
    assert LlmTranslator.capabilities.supports("fr", "it") and LlmTranslator.capabilities.supports("it", "en")
    assert not LlmTranslator.capabilities.supports("en", "ru") and not LlmTranslator.capabilities.supports("en", "en")
    apertium = ApertiumTranslator.capabilities
    assert apertium.supports("en", "es") and apertium.supports("fr", "es") and apertium.supports("es", "fr")
    assert apertium.supports("en", "fr") and apertium.supports("fr", "en")  # two modes, through Spanish
    assert not apertium.supports("it", "en") and not apertium.supports("en", "it")
    assert DeepLTranslator.capabilities.supports("it", "fr") and GoogleTranslator.capabilities.supports("en", "ru")
    # The LLM gives its words clause by clause as it writes them (a ClauseTranslator); the others whole.
    assert LlmTranslator.capabilities.streaming is True
    assert "translate_clauses" in vars(LlmTranslator) and "translate_clauses" not in vars(ApertiumTranslator)
    for cls in (ApertiumTranslator, DeepLTranslator, GoogleTranslator):
        assert isinstance(cls.capabilities, TranslatorCapabilities) and cls.capabilities.streaming is False
    for cls in (EspeakTTS, KokoroTTS):
        assert cls.capabilities.speaking_rate and cls.capabilities.speaks("it") and not cls.capabilities.streaming


def test_settings_name_backends_per_pair_and_voices_per_language() -> None:
    settings = StsSettings(
        STS_TRANSLATOR="apertium",
        STS_TRANSLATOR_OVERRIDES="en-es=llm, fr-it=google",
        STS_TTS_VOICES="fr=espeak-ng:fr-fr,en=piper:default,en=kokoro",
    )
    assert settings.translator == "apertium"
    assert settings.translator_override_map() == {("en", "es"): "llm", ("fr", "it"): "google"}
    assert settings.voice_pins() == {
        "fr": [VoiceRef("espeak-ng", "fr-fr")],
        "en": [VoiceRef("piper", "default"), VoiceRef("kokoro", "default")],
    }
    assert StsSettings().translator == "llm" and StsSettings().translator_override_map() == {}
    assert parse_assignments("a=1,,b = 2 ") == [("a", "1"), ("b", "2")]


@pytest.mark.parametrize(
    "env",
    [
        {"STS_TRANSLATOR": "babelfish"},
        {"STS_TRANSLATOR_OVERRIDES": "en-es=babelfish"},
        {"STS_TRANSLATOR_OVERRIDES": "enes=llm"},
        {"STS_TRANSLATOR_OVERRIDES": "en-es"},
        {"STS_TTS_VOICES": "fr=festival:x"},
        {"STS_TTS_VOICES": "fr"},
    ],
)
def test_bad_backend_settings_fail_at_startup(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        StsSettings(**env)  # type: ignore[arg-type]


class Tone:
    """A synthesiser that records what it was asked; `rate`: whether it declares rate control."""

    def __init__(self, name: str, sample_rate: int, rate: bool) -> None:
        self.name, self.sample_rate, self.calls = name, sample_rate, []  # type: ignore[var-annotated]
        self.capabilities = TTSCapabilities(languages=None, speaking_rate=rate)

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
        self.calls.append((text, language, voice, speed))
        return np.ones(self.sample_rate // 10, np.float32)


def test_the_voice_bank_holds_several_backends_per_language() -> None:
    piper, kokoro, espeak = Tone("piper", 22050, True), Tone("kokoro", 24000, True), Tone("espeak-ng", 22050, False)
    joe, alpha = VoiceRef("piper", "joe", "male"), VoiceRef("kokoro", "jf_alpha", "female")
    fr = VoiceRef("espeak-ng", "fr-fr", "male")
    bank = VoiceBank({"en": [(joe, piper), (alpha, kokoro)], "fr": [(fr, espeak)]})
    assert bank.voices("en") == [joe, alpha] and bank.default("en") == joe and bank.languages == ("en", "fr")
    voiced = bank.synthesize("Hello.", "en", alpha, speed=1.2)
    assert (voiced.sample_rate, voiced.voice, voiced.speed) == (24000, alpha, 1.2)
    assert kokoro.calls == [("Hello.", "en", "jf_alpha", 1.2)]
    assert bank.synthesize("Hello.", "en", "kokoro:jf_alpha").voice == alpha  # by its text too
    assert bank.synthesize("Hello.", "en").voice == joe  # the default
    # A backend without rate control is asked at its own rate (the engine then time-stretches).
    assert bank.synthesize("Bonjour.", "fr", None, speed=1.3).speed == 1.0 and espeak.calls[-1][3] == 1.0
    with pytest.raises(UnknownVoiceError):
        bank.synthesize("Ciao.", "it")
    with pytest.raises(UnknownVoiceError):
        bank.synthesize("Bonjour.", "fr", alpha)  # a voice of another language
    assert bank.names() == {"en": ["piper:joe", "kokoro:jf_alpha"], "fr": ["espeak-ng:fr-fr"]}


def test_an_injected_backend_is_a_one_voice_bank() -> None:
    plain = Tone("fake", 16000, True)  # a backend declares its rate control (no probing of its signature)
    bank = VoiceBank.of({"es": plain})
    assert bank.voices("es") == [VoiceRef("fake", "default")]
    assert bank.capabilities("es").speaking_rate
    assert bank.synthesize("Hola.", "es", "default", 0.9).speed == 0.9
    with pytest.raises(ValueError):
        VoiceBank({"es": []})
