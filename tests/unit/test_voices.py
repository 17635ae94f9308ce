"""The per-stream voice stage (livedub.dubbing.voices) over fake embeddings and a fake voice bank."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from livedub.dubbing import voices as voices_module
from livedub.dubbing.interfaces import NO_CONTEXT, TranslationContext
from livedub.dubbing.speaker import SpeakerSample, _unit
from livedub.dubbing.translate.registry import TranslatorCapabilities
from livedub.dubbing.tts.registry import TTSCapabilities
from livedub.dubbing.voices import VoicePicker, pin_of
from livedub.languages import VoiceRef

pytestmark = pytest.mark.unit

DIM = 16


def direction(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def voice_of(seed: int, k: int = 0) -> np.ndarray:
    """'Audio' of a phrase by speaker `seed`: its direction plus a little noise (the fake embedder reads it)."""
    noisy = direction(seed) + 0.08 * np.random.default_rng(1000 + 31 * seed + k).standard_normal(DIM)
    return noisy.astype(np.float32)


class FakeEmbedder:
    digest = "fake"
    min_speech_s = 1.0

    def sample(self, audio: np.ndarray, rate: int) -> SpeakerSample | None:
        return None if len(audio) == 0 else SpeakerSample(_unit(audio), 3.0)

    def embed(self, audio: np.ndarray, rate: int) -> np.ndarray | None:
        return None if len(audio) == 0 else _unit(audio)


@dataclass
class Spoken:
    audio: np.ndarray
    sample_rate: int


MALE = VoiceRef("kokoro", "jm_kumo", "male")
FEMALE = VoiceRef("kokoro", "jf_alpha", "female")
FEMALE2 = VoiceRef("kokoro", "jf_nezumi", "female")


class FakeBank:
    """es: three voices (a male default); en: one. Voice 'k' sounds like direction(k)."""

    sounds: ClassVar[dict[VoiceRef, int]] = {MALE: 1, FEMALE: 2, FEMALE2: 3}

    def __init__(self) -> None:
        self.said: list[tuple[str, VoiceRef]] = []

    def voices(self, language: str) -> list[VoiceRef]:
        return [MALE, FEMALE, FEMALE2] if language == "es" else [MALE]

    def synthesize(self, text: str, language: str, voice: VoiceRef | str | None = None) -> Spoken:
        assert isinstance(voice, VoiceRef)
        self.said.append((language, voice))
        return Spoken(direction(self.sounds[voice]), 24000)


@pytest.fixture
def picker(tmp_path: Path) -> VoicePicker:
    return VoicePicker(FakeBank(), FakeEmbedder(), cache_dir=tmp_path)  # type: ignore[arg-type]


def test_the_default_voice_speaks_until_someone_was_heard(picker: VoicePicker) -> None:
    stream = picker.stream("s1")
    assert stream.observe(np.zeros(0, np.float32), 16000).status == "no_speech"
    decision = stream.decide("es")
    assert (decision.voice, decision.reason, decision.changed) == (MALE, "default", False)


def test_a_female_speaker_gets_the_nearest_female_voice_in_every_target(picker: VoicePicker) -> None:
    stream = picker.stream("s1")
    stream.observe(voice_of(2), 16000)
    decision = stream.decide("es")
    assert (decision.voice, decision.reason, decision.speaker) == (FEMALE, "matched", 0)
    assert not decision.changed  # the stream's first voice in this language: nothing was said before it
    assert stream("en") == MALE  # a language with one voice: that voice


def test_a_speaker_keeps_a_voice_and_a_new_speaker_changes_it_after_hysteresis(picker: VoicePicker) -> None:
    stream = picker.stream("s1")
    spoken = []
    for k, who in enumerate([2, 2, 2, 3, 2, 3, 3, 3, 2, 2]):
        stream.observe(voice_of(who, k), 16000)
        decision = stream.decide("es")
        spoken.append((decision.voice.voice, decision.reason, decision.changed))
    assert [s[0] for s in spoken] == ["jf_alpha"] * 6 + ["jf_nezumi"] * 2 + ["jf_nezumi", "jf_alpha"]
    assert [s[2] for s in spoken] == [False] * 6 + [True, False, False, True]
    assert [s[1] for s in spoken[5:8]] == ["kept", "matched", "kept"]
    assert spoken[9][1] == "kept"  # speaker 0 is back: the voice they had


def test_the_decision_says_changed_only_when_the_voice_changes(picker: VoicePicker) -> None:
    stream = picker.stream("s1")
    assert stream.decide("es").changed is False  # first: the default, nothing said before
    stream.observe(voice_of(1), 16000)  # a male speaker: the default voice stays
    assert stream.decide("es").voice == MALE and stream.decide("es").changed is False


def test_a_pin_bypasses_matching(picker: VoicePicker) -> None:
    stream = picker.stream("s1", voice_profile="kokoro:jf_nezumi")
    assert stream.observe(voice_of(2), 16000) is None  # nothing embedded
    decision = stream.decide("es")
    assert (decision.voice, decision.reason) == (FEMALE2, "pinned")
    assert stream.decide("en").voice == MALE and stream.decide("en").reason == "default"  # not a voice of en
    assert picker.stream("s2", voice_profile="jf_alpha").decide("es").voice == FEMALE  # the voice name alone


def test_matching_switched_off_speaks_the_default(tmp_path: Path) -> None:
    picker = VoicePicker(FakeBank(), voice_match=False, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert picker.embedder is None  # no model loaded
    stream = picker.stream("s1")
    stream.observe(voice_of(2), 16000)
    assert stream.decide("es").voice == MALE
    assert pin_of("default", voice_match=False) == "default" and pin_of("default") is None
    assert pin_of("kokoro:jf_alpha", voice_match=False) == "kokoro:jf_alpha"


def test_warm_up_synthesises_each_reference_once(picker: VoicePicker) -> None:
    bank: FakeBank = picker.bank  # type: ignore[assignment]
    assert picker.warm_up(["es", "en"]) == {"es": 3}  # en has one voice: nothing to choose, nothing to hear
    assert len(bank.said) == 3
    stream = picker.stream("s1")
    stream.observe(voice_of(3), 16000)
    assert stream("es") == FEMALE2 and stream("en") == MALE and len(bank.said) == 3


def test_streams_are_apart_and_bounded(tmp_path: Path) -> None:
    picker = VoicePicker(FakeBank(), FakeEmbedder(), cache_dir=tmp_path, max_streams=2)  # type: ignore[arg-type]
    a, b = picker.stream("a"), picker.stream("b")
    a.observe(voice_of(2), 16000)
    b.observe(voice_of(3), 16000)
    assert (a("es"), b("es")) == (FEMALE, FEMALE2)
    assert picker.stream("a") is a
    picker.stream("c")  # "b" was used least recently
    assert picker.stream("a") is a and picker.stream("b") is not b
    picker.forget("a")
    assert picker.stream("a") is not a


def test_an_embedder_failure_keeps_the_voice(picker: VoicePicker, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = picker.stream("s1")
    stream.observe(voice_of(2), 16000)
    assert stream("es") == FEMALE

    def broken(audio: np.ndarray, rate: int) -> None:
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(picker.embedder, "sample", broken)
    assert stream.observe(voice_of(3), 16000) is None
    assert stream("es") == FEMALE


def test_reference_sentence_comes_from_the_language_table() -> None:
    from livedub.languages import LANGUAGES

    assert voices_module.reference_sentence("fr").startswith(LANGUAGES["fr"].warmup)


def test_a_failing_choice_falls_back_to_the_default_voice(picker: VoicePicker) -> None:
    """The engine calls the stream per target outside its own error handling: the call must never raise."""
    stream = picker.stream("s1")
    stream.observe(voice_of(2), 16000)
    assert stream("es") == FEMALE

    def broken(language: str) -> list[VoiceRef]:
        raise LookupError("no voice speaks xx")

    picker.bank.voices = broken  # type: ignore[method-assign]
    assert stream("es") == "default"


class MarkedTTS:
    """Speech whose first DIM samples carry the voice's direction (what PrefixEmbedder reads), then a tone."""

    name, sample_rate = "marked", 24000
    capabilities = TTSCapabilities(languages=None, speaking_rate=True)

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> np.ndarray:
        t = np.arange(int(24000 * len(text) / 14 / speed)) / 24000
        return np.concatenate([0.1 * direction(self.seed), 0.3 * np.sin(2 * np.pi * 200 * t)]).astype(np.float32)


class PrefixEmbedder(FakeEmbedder):
    def sample(self, audio: np.ndarray, rate: int) -> SpeakerSample | None:
        return SpeakerSample(_unit(audio[:DIM]), 3.0)

    def embed(self, audio: np.ndarray, rate: int) -> np.ndarray | None:
        return _unit(audio[:DIM])


def test_the_engine_speaks_each_target_with_the_streams_voice(tmp_path: Path) -> None:
    """The wiring proposed for the pipeline: observe the fragment, then `dub_each(voice=stream)`."""
    from livedub.dubbing import DubEngine, Utterance
    from livedub.dubbing.tts.bank import VoiceBank

    class ASR:
        name, sample_rate = "asr", 16000

        def transcribe(self, audio: np.ndarray, language: str):  # type: ignore[no-untyped-def]
            from livedub.dubbing.values import Transcript

            return Transcript("hello there", language, [(0.2, 2.8, "hello there")])

    class MT:
        name = "mt"
        capabilities = TranslatorCapabilities(pairs=frozenset({("en", "es")}))

        def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
            return "hola a todos"

    bank = VoiceBank({"es": [(MALE, MarkedTTS(1)), (FEMALE, MarkedTTS(2))], "fr": [(FEMALE2, MarkedTTS(3))]})
    engine = DubEngine(ASR(), {("en", "es"): MT(), ("en", "fr"): MT()}, bank, max_speedup=1.35, max_slowdown=1.35)
    picker = VoicePicker(engine.voices, PrefixEmbedder(), cache_dir=tmp_path)  # type: ignore[arg-type]
    assert picker.warm_up(["es", "fr"]) == {"es": 2}
    stream = picker.stream("s1")
    t = np.arange(48000 * 3) / 48000
    audio = np.concatenate([0.1 * voice_of(2), 0.3 * np.sin(2 * np.pi * 220 * t)]).astype(np.float32)
    stream.observe(audio, 48000)
    answers = {a.target: a.result for a in engine.dub_each(Utterance(audio, 48000), "en", ["es", "fr"], voice=stream)}
    assert (answers["es"].voice, answers["fr"].voice) == (str(FEMALE), str(FEMALE2))  # type: ignore[union-attr]
