"""A voice or a translator is one module and its registration: a backend registered from here (a test module) is
built by the engine's builders, and the voice bank and the tier policy pick it up by what it declares (its fast
voices, its fast role)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from livedub.deadline import Deadline
from livedub.dubbing.costs import StageCosts
from livedub.dubbing.interfaces import NO_CONTEXT, FloatAudio, Transcript, TranslationContext
from livedub.dubbing.models import (
    NotAFastTranslatorError,
    fast_translator_kind,
    load_engine,
    load_voices,
    translator_kind,
    voices_of,
)
from livedub.dubbing.settings import EngineSettings
from livedub.dubbing.translate import registry as translators
from livedub.dubbing.tts import registry as voices
from livedub.dubbing.tts.registry import FastVoices, TTSCapabilities, VoiceBackendSpec, fast_voice_loss, fast_voices_of
from livedub.dubbing.values import VoiceTier
from livedub.languages import VoiceRef

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class HumSettings:
    pitch_hz: float = 120.0


class HumTTS:
    """A voice that hums at its settings' pitch, as long as the text, at the rate asked."""

    name, sample_rate = "hum", 16000
    capabilities = TTSCapabilities(languages=frozenset({"es", "fr"}), speaking_rate=True)

    def __init__(self, settings: HumSettings) -> None:
        self.settings, self.speeds = settings, []  # type: ignore[var-annotated]

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
        self.speeds.append(speed)
        t = np.arange(round(self.sample_rate * len(text) / 15 / speed)) / self.sample_rate
        return (0.3 * np.sin(2 * np.pi * self.settings.pitch_hz * t)).astype(np.float32)


class EchoTranslator:
    name = "echo-mt"
    capabilities = translators.TranslatorCapabilities(pairs=frozenset({("en", "es")}))

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        return f"[{target}] {text}"


class WordsASR:
    name, sample_rate = "words", 16000

    def transcribe(self, audio: FloatAudio, language: str) -> Transcript:
        return Transcript("hello there my friend", language, [(0.2, 1.8, "hello there my friend")])


@pytest.fixture
def hum() -> Iterator[VoiceBackendSpec]:
    spec = voices.register(
        VoiceBackendSpec(
            "hum",
            HumTTS.capabilities,
            HumSettings,
            build=lambda settings, _voice: HumTTS(settings),
            default_voice=lambda language: VoiceRef("hum", f"{language}-low", "male"),
        )
    )
    translators.register(
        translators.TranslatorSpec("echo-mt", EchoTranslator.capabilities, type(None), lambda _: EchoTranslator())
    )
    yield spec
    voices.unregister("hum")
    translators.unregister("echo-mt")


def test_a_registered_voice_is_built_with_its_own_settings_and_declares_its_rate(hum: VoiceBackendSpec) -> None:
    settings = EngineSettings(
        voice_pins={"es": (VoiceRef("hum", "default"),)}, fast_voice=False, backends={"hum": HumSettings(200.0)}
    )
    assert "hum" in voices.backend_names()
    assert voices_of(settings, "es") == [VoiceRef("hum", "es-low", "male")]  # its default_voice
    bank = load_voices(settings, ["es"])
    backend = bank.backend("es")
    assert isinstance(backend, HumTTS) and backend.settings.pitch_hz == 200.0
    assert bank.capabilities("es").speaking_rate  # declared, not probed
    assert bank.synthesize("hola amigo", "es", speed=1.2).speed == 1.2
    with pytest.raises(ValueError, match="does not speak"):
        load_voices(EngineSettings(voice_pins={"it": (VoiceRef("hum", "it-x"),)}, fast_voice=False), ["it"])


def test_a_registered_translator_is_chosen_by_its_declared_pairs_and_dubs(hum: VoiceBackendSpec) -> None:
    settings = EngineSettings(
        translator="echo-mt", fast_translator="", voice_pins={"es": (VoiceRef("hum", "default"),)}, fast_voice=False
    )
    assert translator_kind(settings, "en", "es") == "echo-mt"
    assert translator_kind(settings, "en", "fr") != "echo-mt"  # not a pair it declares
    engine = load_engine(settings, (("en", "es"),), asr=WordsASR())
    from livedub.dubbing import Utterance

    dub = engine.dub(Utterance(np.zeros(32000, np.float32), 16000), "en", "es")
    assert dub.translation is not None and dub.translation.text == "[es] hello there my friend"
    assert dub.voice == "hum:es-low"
    assert dub.translator.value == "main" and dub.voice_tier.value == "usual"


class ChirpTTS(HumTTS):
    """A cheap, high voice: the fast voice a test module declares for Spanish."""

    name = "chirp"


QUICK = (VoiceRef("chirp", "es-quick", "female"), VoiceRef("chirp", "es-quick-low", "male"))


@pytest.fixture
def chirp(hum: VoiceBackendSpec) -> Iterator[VoiceBackendSpec]:
    spec = voices.register(
        VoiceBackendSpec(
            "chirp",
            ChirpTTS.capabilities,
            HumSettings,
            build=lambda _settings, _voice: ChirpTTS(HumSettings(800.0)),
            fast_voices=(FastVoices("es", QUICK, loss=0.01),),  # understood better than Pico's Spanish (4.7 %)
        )
    )
    yield spec
    voices.unregister("chirp")


def test_the_fast_voices_are_declared_by_the_backends_that_speak_them() -> None:
    assert fast_voices_of("es") == (VoiceRef("pico", "es-ES", "female"), VoiceRef("pico", "es-ES+low", "male"))
    assert [str(v) for v in fast_voices_of("en")] == ["piper:piper-en_US-joe-medium"]
    assert {code: fast_voice_loss(code) for code in ("en", "es", "fr", "it")} == {
        "en": 0.009, "es": 0.047, "fr": 0.157, "it": 0.089,
    }  # fmt: skip
    assert fast_voices_of("de") == () and fast_voice_loss("de") == 1.0  # nobody declares one: it loses everything
    with pytest.raises(ValueError, match="another backend"):
        VoiceBackendSpec(
            "hum", HumTTS.capabilities, HumSettings, build=HumTTS, fast_voices=(FastVoices("es", QUICK, 0.1),)
        )
    with pytest.raises(ValueError, match="none named"):
        FastVoices("es", (), 0.1)


def test_a_fast_voice_registered_from_a_module_stands_in_under_a_short_deadline(chirp: VoiceBackendSpec) -> None:
    # The declaration that loses least is the language's fast voice: the test's own beats Pico's.
    assert fast_voices_of("es") == QUICK and fast_voice_loss("es") == 0.01
    settings = EngineSettings(
        translator="echo-mt", fast_translator="", voice_pins={"es": (VoiceRef("hum", "default"),)}
    )
    engine = load_engine(settings, (("en", "es"),), asr=WordsASR())
    assert engine.voices.fast_voices("es") == list(QUICK) and isinstance(
        engine.voices.backend("es", QUICK[1]), ChirpTTS
    )
    from livedub.dubbing import Utterance

    clock = Clock()
    # 2 s of audio: the usual voice takes (0.4 + 0.05) * 2 = 0.9 s on average, the fast one 0.12 s.
    priors = {"asr": 0.0, "translation": 0.0, "tts": 0.4, "tts_fast": 0.01, "fit": 0.05}
    phrase = Utterance(np.zeros(32000, np.float32), 16000)
    engine.costs = StageCosts(priors=priors)
    pressed = engine.dub(phrase, "en", "es", deadline=Deadline(clock.now + 0.5, clock))
    assert pressed.voice_tier is VoiceTier.FAST and pressed.voice == "chirp:es-quick-low"  # the usual one's gender
    engine.costs = StageCosts(priors=priors)
    relaxed = engine.dub(phrase, "en", "es", deadline=Deadline(clock.now + 3.0, clock))
    assert relaxed.voice_tier is VoiceTier.USUAL and relaxed.voice == "hum:es-low"
    voices.unregister("chirp")
    assert fast_voices_of("es")[0].backend == "pico"  # the backend gone, Pico's stands in again


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class QuickTranslator(EchoTranslator):
    name = "quick-mt"
    capabilities = translators.TranslatorCapabilities(pairs=frozenset({("en", "es")}), fast=True)


def test_the_fast_translator_is_one_that_declares_the_role(hum: VoiceBackendSpec) -> None:
    assert "apertium" in translators.fast_translator_names() and "llm" not in translators.fast_translator_names()
    assert fast_translator_kind(EngineSettings(), "en", "es") == "apertium"  # the default declares it
    with pytest.raises(NotAFastTranslatorError, match=r"'echo-mt' does not declare the fast role.*apertium"):
        fast_translator_kind(EngineSettings(fast_translator="echo-mt"), "en", "es")
    pinned = {"es": (VoiceRef("hum", "default"),)}
    with pytest.raises(NotAFastTranslatorError, match="'llm'"):  # refused when the engine is built, not at a phrase
        load_engine(EngineSettings(fast_translator="llm", voice_pins=pinned, fast_voice=False), (), asr=WordsASR())
    translators.register(
        translators.TranslatorSpec("quick-mt", QuickTranslator.capabilities, type(None), lambda _: QuickTranslator())
    )
    try:
        settings = EngineSettings(translator="echo-mt", fast_translator="quick-mt", voice_pins=pinned, fast_voice=False)
        engine = load_engine(settings, (("en", "es"),), asr=WordsASR())
        assert isinstance(engine.translate_fast.translators[("en", "es")], QuickTranslator)
    finally:
        translators.unregister("quick-mt")
