"""The dubbing engine's stages with stand-in backends: typed values, pacing, the fit with overrun, deadlines."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from livedub.deadline import Deadline
from livedub.dubbing import (
    Dub,
    DubEngine,
    Fit,
    FitStatus,
    Place,
    SpeakingPace,
    Speech,
    StageCosts,
    StageFailed,
    Synthesise,
    TooLate,
    Transcript,
    Translation,
    Utterance,
    choose_speed,
)
from livedub.dubbing.chunks import CLAUSE_PAUSE_S, DubChunk
from livedub.dubbing.costs import CHARS_PER_SPEECH_S, OPTIMISM, Work
from livedub.dubbing.interfaces import NO_CONTEXT, FloatAudio, TranslationContext
from livedub.dubbing.translate.registry import TranslatorCapabilities
from livedub.dubbing.tts.bank import VoiceBank
from livedub.dubbing.tts.registry import TTSCapabilities
from livedub.dubbing.values import Slot
from livedub.languages import VoiceRef

pytestmark = pytest.mark.unit

RATE = 48000


def tone(seconds: float, rate: int = RATE) -> FloatAudio:
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


class FakeASR:
    name, sample_rate = "fake-asr", 16000

    def __init__(self, span: tuple[float, float] = (0.5, 4.5)) -> None:
        self.span, self.calls = span, 0

    def transcribe(self, audio: FloatAudio, language: str) -> Transcript:
        self.calls += 1
        if np.abs(audio).max() < 1e-3:
            return Transcript("", language)
        # As many characters as usual speech has in the utterance: the text stages' costs count it as its length.
        text = ("hello there " * 100)[: round(CHARS_PER_SPEECH_S * len(audio) / self.sample_rate)]
        return Transcript(text, language, [(*self.span, text)])


class FakeTranslator:
    name = "fake-mt"
    capabilities = TranslatorCapabilities(languages=frozenset({"en", "es", "fr", "it"}))

    def __init__(self) -> None:
        self.calls = 0

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        self.calls += 1
        return ("hola a todos ustedes " * 100)[: max(20, len(text))].strip()  # as long as the text, 20+ characters


class ShortTranslator(FakeTranslator):
    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        return "hola a todos ustedes"  # 20 characters


class PacedTTS:
    """Speaks `chars_per_s` characters per second at speed 1; `speed` scales that, like Kokoro's speed input."""

    name, sample_rate = "paced-tts", 24000
    capabilities = TTSCapabilities(languages=None, speaking_rate=True)

    def __init__(self, chars_per_s: float = 5.0) -> None:
        self.chars_per_s, self.speeds = chars_per_s, []  # type: ignore[var-annotated]

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
        self.speeds.append(speed)
        silence = np.zeros(1200, np.float32)
        return np.concatenate([silence, tone(len(text) / self.chars_per_s / speed, self.sample_rate), silence])


def engine(tts: PacedTTS | None = None, asr: FakeASR | None = None, costs: StageCosts | None = None) -> DubEngine:
    return DubEngine(
        asr or FakeASR(),
        {("en", "es"): FakeTranslator()},
        {"es": tts or PacedTTS()},
        max_speedup=1.35,
        max_slowdown=1.35,
        costs=costs,
    )


def utterance(seconds: float = 6.0) -> Utterance:
    return Utterance(tone(seconds), RATE)


# ---------------------------------------------------------------- stages


def test_place_finds_the_speech_span_and_the_room() -> None:
    slot = Place()(Transcript("hi", "en", [(0.5, 2.0, "hi"), (2.5, 4.5, "there")]), 6.0, overrun_s=1.5)
    assert (slot.start_s, slot.span_s, slot.room_s, slot.overrun_s, slot.limit_s) == (0.5, 4.0, 5.5, 1.5, 7.0)
    unknown = Place()(Transcript("hi", "en"), 6.0)
    assert (unknown.start_s, unknown.span_s) == (0.0, 6.0)


def test_pace_learns_characters_per_second_at_the_natural_rate() -> None:
    pace = SpeakingPace(chars_per_s=14.0)
    pace.observe("x" * 20, seconds=2.0, speed=2.0)  # 4 s at speed 1: 5 chars/s replaces the prior
    assert pace.chars_per_s == pytest.approx(5.0)
    assert pace.predict_s("x" * 10) == pytest.approx(2.0)
    pace.observe("x" * 10, seconds=1.0, speed=1.0)  # 10 chars/s, averaged in
    assert 5.0 < pace.chars_per_s < 10.0


def test_speed_is_chosen_from_the_predicted_length_within_the_synthesisers_range() -> None:
    slot = Slot(start_s=0.0, span_s=4.0, room_s=5.0)
    assert choose_speed(4.4, slot) == pytest.approx(1.1)
    assert choose_speed(8.0, slot) == 1.25  # the rest is the fit's time-stretch
    assert choose_speed(2.0, slot) == 0.75
    assert choose_speed(0.0, slot) == 1.0


def test_one_synthesis_at_the_rate_that_fits_the_span() -> None:
    tts = PacedTTS(chars_per_s=5.0)
    synthesise = Synthesise(tts, SpeakingPace(chars_per_s=5.0))  # a pace already learnt
    speech = synthesise(Translation("x" * 22, "es"), Slot(0.0, 4.0, 5.0))  # 4.4 s natural for a 4 s span
    assert tts.speeds == [pytest.approx(1.1)]
    assert speech.speed == pytest.approx(1.1) and speech.duration_s == pytest.approx(4.0, abs=0.01)


def test_synthesis_without_audio_fails_the_tts_stage() -> None:
    class Mute(PacedTTS):
        def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
            return np.zeros(100, np.float32)

    with pytest.raises(StageFailed) as failed:
        Synthesise(Mute())(Translation("hola", "es"), Slot(0.0, 1.0, 1.0))
    assert failed.value.stage == "tts" and failed.value.retryable


def speech(seconds: float) -> Speech:
    return Speech(tone(seconds, 24000), 24000, 1.0)


def test_fit_without_overrun_returns_exactly_the_utterance() -> None:
    fitted = Fit(1.35, 1.35)(speech(6.0), Slot(0.5, 4.0, 5.5), utterance(6.0))
    assert len(fitted.audio) == 6 * RATE
    assert fitted.speed_ratio == pytest.approx(1.35, abs=0.01)  # into the pause after the span, at the cap
    assert fitted.status is FitStatus.SUCCESS
    loud = np.flatnonzero(np.abs(fitted.audio) > 0.05)
    assert abs(loud[0] / RATE - 0.5) < 0.02  # placed where the speech started


def test_fit_with_overrun_runs_past_the_utterance_end_instead_of_failing() -> None:
    # 9.5 s of speech for a 4 s span: 7.04 s at the 1.35x cap, 1.54 s more than the 5.5 s room.
    seed = Fit(1.35, 1.35)(speech(9.5), Slot(0.5, 4.0, 5.5), utterance(6.0))
    assert seed.status is FitStatus.FAILED and len(seed.audio) == 6 * RATE
    fitted = Fit(1.35, 1.35)(speech(9.5), Slot(0.5, 4.0, 5.5, overrun_s=2.0), utterance(6.0))
    assert fitted.status is FitStatus.SUCCESS
    assert fitted.speech_s == pytest.approx(9.5 / 1.35, abs=0.02)
    assert fitted.duration_s == pytest.approx(0.5 + 9.5 / 1.35, abs=0.02)  # from the utterance start
    assert np.abs(fitted.audio[: round(0.45 * RATE)]).max() < 1e-3  # the dub starts at the speech start


def test_fit_with_overrun_never_runs_past_the_overrun_and_keeps_short_dubs_at_the_utterance_length() -> None:
    long = Fit(1.35, 1.35)(speech(20.0), Slot(0.5, 4.0, 5.5, overrun_s=1.0), utterance(6.0))
    assert long.duration_s == pytest.approx(7.0, abs=0.001)
    short = Fit(1.35, 1.35)(speech(4.0), Slot(0.5, 4.0, 5.5, overrun_s=1.0), utterance(6.0))
    assert short.duration_s == pytest.approx(6.0, abs=0.001)


# ---------------------------------------------------------------- the engine


def test_the_engine_runs_the_stages_in_order_and_times_them() -> None:
    dub = engine().dub(utterance(), "en", "es")
    assert dub.transcript.text.startswith("hello there")
    assert dub.translation is not None and dub.translation.text.startswith("hola a todos ustedes")
    assert dub.slot == Slot(0.5, 4.0, 5.5, 0.0)
    assert set(dub.seconds) == {"asr", "translation", "tts", "fit"}
    assert dub.fitted.sample_rate == RATE and len(dub.fitted.audio) == 6 * RATE


def test_silence_is_dubbed_with_silence_without_translating() -> None:
    eng = engine()
    dub = eng.dub(Utterance(np.zeros(3 * RATE, np.float32), RATE), "en", "es")
    assert dub.translation is None and not dub.fitted.audio.any() and len(dub.fitted.audio) == 3 * RATE
    assert set(dub.seconds) == {"asr"}


def test_a_failing_backend_fails_its_stage_with_what_was_done_so_far() -> None:
    class Broken(PacedTTS):
        def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
            raise RuntimeError("no voice")

    with pytest.raises(StageFailed) as failed:
        engine(tts=Broken()).dub(utterance(), "en", "es")
    assert failed.value.stage == "tts" and "no voice" in str(failed.value)
    assert failed.value.progress.translation is not None and "asr" in failed.value.progress.seconds


def test_warm_up_runs_every_stage_and_calibrates_the_pace() -> None:
    tts, asr = PacedTTS(chars_per_s=9.0), FakeASR()
    eng = engine(tts=tts, asr=asr)
    eng.warm_up()
    assert asr.calls == 1
    assert tts.speeds[0] == 1.0  # the voice is heard at its natural rate first
    assert eng.synthesise["es"].pace.chars_per_s == pytest.approx(9.0, rel=0.02)
    assert {"asr", "translation", "tts", "fit"} <= set(eng.costs.snapshot())
    tts.speeds.clear()
    eng.translate.translators[("en", "es")] = ShortTranslator()
    dub = eng.dub(utterance(), "en", "es")  # 20 chars = 2.2 s natural for a 4 s span: one synthesis, slower
    assert tts.speeds == [0.75]
    assert dub.fitted.speed_ratio == pytest.approx(2.96 / 4.0, abs=0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_work_that_cannot_be_on_time_stops_before_the_stage_at_once() -> None:
    clock = Clock()
    costs = StageCosts(priors={"asr": 0.1, "translation": 0.2, "tts": 0.2, "fit": 0.0})  # 3 s for 6 s of audio
    asr = FakeASR()
    with pytest.raises(TooLate) as late:  # even at twice the average pace (1.5 s) it could not be on time
        engine(asr=asr, costs=costs).dub(utterance(), "en", "es", deadline=Deadline(clock.now + 1.2, clock))
    assert late.value.before_stage == "asr" and late.value.stage == "timeout" and late.value.retryable
    assert asr.calls == 0  # nothing was computed
    dub = engine(asr=asr, costs=costs).dub(utterance(), "en", "es", deadline=Deadline(clock.now + 1.8, clock))
    assert dub.translation is not None


def test_the_deadline_is_checked_against_the_stages_left() -> None:
    clock = Clock()
    # For 6 s of audio: translation 0.6 s, TTS 1.5 s expected.
    costs = StageCosts(priors={"asr": 0.0, "translation": 0.1, "tts": 0.25, "fit": 0.0})

    class SlowTranslator(FakeTranslator):
        def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
            clock.now += 1.0  # a slow translation: 0.5 s left afterwards, 1.5 s of TTS expected (0.75 s at best)
            return super().translate(text, source, target, context)

    tts = PacedTTS()
    eng = DubEngine(FakeASR(), {("en", "es"): SlowTranslator()}, {"es": tts}, max_speedup=1.35, max_slowdown=1.35)
    eng.costs = costs
    with pytest.raises(TooLate) as late:
        eng.dub(utterance(), "en", "es", deadline=Deadline(clock.now + 1.5, clock))
    assert late.value.before_stage == "tts" and tts.speeds == []
    assert late.value.progress.translation is not None  # what was done is reported


def test_stage_costs_are_an_average_per_second_of_audio() -> None:
    costs = StageCosts(alpha=0.5, priors={"asr": 1.0})
    costs.observe("asr", 0.6, 6.0)  # the first measurement replaces the prior
    assert costs.rate("asr") == pytest.approx(0.1)
    costs.observe("asr", 1.8, 6.0)
    assert costs.rate("asr") == pytest.approx(0.2)
    assert costs.needed(["asr", "unknown"], 3.0) == pytest.approx(OPTIMISM * 0.6)  # a lower bound


def test_text_stages_cost_what_the_words_take_to_say_not_the_phrase_length() -> None:
    costs = StageCosts(priors={"asr": 0.1, "tts": 0.5})
    said = Work(audio_s=1.0, chars=45)  # "Please try again, or press one for the menu." in one quick second
    assert costs.expected(["asr"], said) == pytest.approx(0.1)  # the audio is short
    assert costs.expected(["tts"], said) == pytest.approx(0.5 * 45 / CHARS_PER_SPEECH_S)  # the sentence is not
    assert costs.expected(["tts"], Work(audio_s=1.0)) == pytest.approx(0.5)  # before the words are known
    costs.observe("tts", 3.0, said)  # learnt per second of usual speech: 3 s over 3 s of words
    assert costs.rate("tts") == pytest.approx(1.0)


def test_drops_on_the_estimate_alone_relax_it_so_one_bad_estimate_cannot_drop_everything() -> None:
    clock = Clock()
    costs = StageCosts(priors={"asr": 0.1, "translation": 0.2, "tts": 0.2, "fit": 0.0})  # 3 s for 6 s of audio
    asr = FakeASR()
    drops = 0
    while True:
        try:
            engine(asr=asr, costs=costs).dub(utterance(), "en", "es", deadline=Deadline(clock.now + 1.0, clock))
            break
        except TooLate:
            drops += 1
    assert 1 <= drops <= 5 and asr.calls == 1  # the estimate came down until the work was tried
    expired = StageCosts(priors={"asr": 0.1})
    with pytest.raises(TooLate):
        engine(asr=asr, costs=expired).dub(utterance(), "en", "es", deadline=Deadline(clock.now - 0.1, clock))
    assert expired.rate("asr") == pytest.approx(0.1)  # an expired deadline says nothing about the estimate


def test_under_deadline_pressure_the_fast_translator_stands_in() -> None:
    clock = Clock()
    # 6 s of audio: after ASR the main path takes (0.3 + 0.2) * 6 = 3 s on average, the fast one 1.3 s (0.66 at best).
    costs = StageCosts(priors={"asr": 0.0, "translation": 0.3, "translation_fast": 0.02, "tts": 0.2, "fit": 0.0})
    main, fast = FakeTranslator(), FakeTranslator()
    eng = DubEngine(
        FakeASR(), {("en", "es"): main}, {"es": PacedTTS()}, max_speedup=1.35, max_slowdown=1.35, costs=costs,
        fast_translators={("en", "es"): fast},
    )  # fmt: skip
    pressed = eng.dub(utterance(), "en", "es", deadline=Deadline(clock.now + 2.5, clock))
    assert (main.calls, fast.calls) == (0, 1) and "translation_fast" in pressed.seconds
    relaxed = eng.dub(utterance(), "en", "es", deadline=Deadline(clock.now + 5.0, clock))
    assert (main.calls, fast.calls) == (1, 1) and "translation" in relaxed.seconds
    eng.costs = StageCosts(priors={"asr": 0.0, "translation": 0.3, "translation_fast": 0.02, "tts": 0.2, "fit": 0.0})
    with pytest.raises(TooLate) as late:  # not even the fast path can be on time
        eng.dub(utterance(), "en", "es", deadline=Deadline(clock.now + 0.5, clock))
    assert late.value.before_stage == "asr" and fast.calls == 1


def test_under_deadline_pressure_the_fast_voice_speaks_and_the_usual_one_when_there_is_time() -> None:
    clock = Clock()
    # 6 s of audio, translation free: the usual voice takes (0.4 + 0.05) * 6 = 2.7 s on average, the fast one 0.36 s.
    priors = {"asr": 0.0, "translation": 0.0, "tts": 0.4, "tts_fast": 0.01, "fit": 0.05}
    usual, fast = PacedTTS(), PacedTTS()
    kumo, robot = VoiceRef("kokoro", "jm_kumo", "male"), VoiceRef("espeak-ng", "es", "male")
    bank = VoiceBank({"es": [(kumo, usual)]}, {"es": [(robot, fast)]})
    eng = DubEngine(
        FakeASR(), {("en", "es"): FakeTranslator()}, bank, max_speedup=1.35, max_slowdown=1.35,
        costs=StageCosts(priors=priors),
    )  # fmt: skip
    assert bank.voices("es") == [kumo] and bank.fast_voice("es") == robot  # a stand-in, not a voice to pick
    assert eng.usual_time_s(6.0) == pytest.approx(0.36)  # what the scheduler reckons with: the cheapest way
    pressed = eng.dub(utterance(), "en", "es", deadline=Deadline(clock.now + 2.0, clock))
    assert pressed.voice == str(robot) and "tts_fast" in pressed.seconds and len(fast.speeds) == 1
    eng.costs = StageCosts(priors=priors)
    relaxed = eng.dub(utterance(), "en", "es", deadline=Deadline(clock.now + 3.0, clock))
    assert relaxed.voice == str(kumo) and "tts" in relaxed.seconds and len(usual.speeds) == 1
    # Runs of the usual voice that came out slower than their average (a busy machine) raise the bar above it.
    costs = eng.costs = StageCosts(priors=priors)
    for seconds in (2.4, 4.8, 2.4, 4.8):
        costs.observe("tts", seconds, Work(6.0, 90))
    average, likely = costs.expected(["tts", "fit"], Work(6.0, 90)), costs.likely_max(["tts", "fit"], Work(6.0, 90))
    assert likely > 1.3 * average
    busy = eng.dub(utterance(), "en", "es", deadline=Deadline(clock.now + (average + likely) / 2, clock))
    assert busy.voice == str(robot)
    eng.costs = StageCosts(priors=priors)
    with pytest.raises(TooLate):  # not even the fast voice can be on time: dropped at once
        eng.dub(utterance(), "en", "es", deadline=Deadline(clock.now + 0.1, clock))
    assert len(fast.speeds) == 2


class FailingTranslator(FakeTranslator):
    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        raise RuntimeError("no French today")


def test_each_target_is_dubbed_from_one_transcription_and_one_failure_stays_its_own() -> None:
    asr = FakeASR()
    many = DubEngine(
        asr,
        {("en", "es"): FakeTranslator(), ("en", "fr"): FailingTranslator(), ("en", "it"): FakeTranslator()},
        {language: PacedTTS() for language in ("es", "fr", "it")},
        max_speedup=1.35,
        max_slowdown=1.35,
    )
    voices: list[str] = []

    def voice_of(target: str) -> str:
        voices.append(target)
        return "default"

    answers = list(many.dub_each(Utterance(tone(5.0), RATE), "en", ["es", "fr", "it"], voice=voice_of))
    assert asr.calls == 1
    assert [a.target for a in answers] == ["es", "fr", "it"]
    assert isinstance(answers[1].result, StageFailed) and answers[1].result.stage == "translation"
    assert answers[1].result.progress.transcript is not None  # what was heard travels with the failure
    for answer in (answers[0], answers[2]):
        assert not isinstance(answer.result, StageFailed)
        assert answer.result.translation is not None and answer.result.translation.language == answer.target
        assert answer.result.seconds.keys() >= {"asr", "translation", "tts", "fit"}
    assert voices == ["es", "fr", "it"]


def test_a_failed_transcription_fails_every_target() -> None:
    class BrokenASR(FakeASR):
        def transcribe(self, audio: FloatAudio, language: str) -> Transcript:
            raise RuntimeError("decoder crashed")

    many = DubEngine(
        BrokenASR(),
        {("en", "es"): FakeTranslator(), ("en", "fr"): FakeTranslator()},
        {"es": PacedTTS(), "fr": PacedTTS()},
        max_speedup=1.35,
        max_slowdown=1.35,
    )
    answers = list(many.dub_each(Utterance(tone(3.0), RATE), "en", ["es", "fr"]))
    assert [(a.target, getattr(a.result, "stage", None)) for a in answers] == [("es", "asr"), ("fr", "asr")]


def test_when_every_target_cannot_have_the_main_translator_the_later_ones_take_the_fast_one() -> None:
    def engine_with(costs: StageCosts) -> DubEngine:
        return DubEngine(
            FakeASR(),
            {("en", "es"): FakeTranslator(), ("en", "fr"): FakeTranslator()},
            {"es": PacedTTS(), "fr": PacedTTS()},
            max_speedup=1.35,
            max_slowdown=1.35,
            costs=costs,
            fast_translators={("en", "es"): FakeTranslator(), ("en", "fr"): FakeTranslator()},
        )

    def paths(eng: DubEngine) -> list[str]:
        answers = list(eng.dub_each(Utterance(tone(5.0), RATE), "en", ["es", "fr"]))
        return ["fast" if "translation_fast" in a.result.seconds else "main" for a in answers]  # type: ignore[union-attr]

    # Per second of audio: 0.1 + 0.7 (main) + 0.21 (fast) = 1.01 keeps up, 0.1 + 2 x 0.7 = 1.5 does not.
    dear = StageCosts(priors={"asr": 0.1, "translation": 0.5, "translation_fast": 0.01, "tts": 0.2, "fit": 0.0})
    assert paths(engine_with(dear)) == ["main", "fast"]
    # 0.1 + 2 x 0.3: both can have the main one.
    cheap = StageCosts(priors={"asr": 0.1, "translation": 0.15, "translation_fast": 0.01, "tts": 0.15, "fit": 0.0})
    assert paths(engine_with(cheap)) == ["main", "main"]
    # 0.1 + 1.3 + 0.55 is too much, 0.1 + 2 x 0.55 keeps up: both take the fast one.
    slow = StageCosts(priors={"asr": 0.1, "translation": 0.8, "translation_fast": 0.05, "tts": 0.5, "fit": 0.0})
    assert paths(engine_with(slow)) == ["fast", "fast"]


def test_targets_that_lose_most_in_their_fast_voice_are_spoken_first() -> None:
    # Spanish is well understood in its fast voice (Pico, 4.7 % WER), French less (15.7 %): when time is short,
    # French takes the usual voice first and Spanish the fast one, not the other way round.
    voices, fast = {}, {}
    for language in ("es", "fr"):
        voices[language] = [(VoiceRef("kokoro", "jm_kumo", "male"), PacedTTS())]
        fast[language] = [(VoiceRef("espeak-ng", language, "male"), PacedTTS())]
    translators = {("en", "es"): FakeTranslator(), ("en", "fr"): FakeTranslator()}
    eng = DubEngine(FakeASR(), translators, VoiceBank(voices, fast), max_speedup=1.35, max_slowdown=1.35)
    answers = list(eng.dub_each(utterance(), "en", ["es", "fr"]))
    assert [a.target for a in answers] == ["fr", "es"]
    pairs = {("en", "es"): FakeTranslator(), ("en", "fr"): FakeTranslator()}
    plain = DubEngine(FakeASR(), pairs, {"es": PacedTTS(), "fr": PacedTTS()}, max_speedup=1.35, max_slowdown=1.35)
    assert [a.target for a in plain.dub_each(utterance(), "en", ["es", "fr"])] == ["es", "fr"]


class TimedTranslator(FakeTranslator):
    """Takes `seconds` of the test's clock."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        self.clock.now += self.seconds
        return super().translate(text, source, target, context)


# 6 s of audio: the LLM takes 1.8 s, Kokoro 0.4 s per second of dub, Apertium and the fast voice almost nothing.
TIER_PRIORS = {"asr": 0.0, "translation": 0.3, "translation_fast": 0.01, "tts": 0.4, "tts_fast": 0.01, "fit": 0.0}


def tiered_engine(clock: Clock) -> tuple[DubEngine, FakeTranslator, FakeTranslator, VoiceRef, VoiceRef]:
    """The costs learnt from the stand-ins' real (instant) runs are reset before each dub: `dub_with`."""
    priors = TIER_PRIORS
    main, fast = TimedTranslator(clock, 1.8), TimedTranslator(clock, 0.06)
    kumo, pico = VoiceRef("kokoro", "jm_kumo", "male"), VoiceRef("pico", "es-ES", "male")
    bank = VoiceBank({"es": [(kumo, PacedTTS())]}, {"es": [(pico, PacedTTS())]})
    eng = DubEngine(
        FakeASR(), {("en", "es"): main}, bank, max_speedup=1.35, max_slowdown=1.35, costs=StageCosts(priors=priors),
        fast_translators={("en", "es"): fast},
    )  # fmt: skip
    return eng, main, fast, kumo, pico


def dub_with(eng: DubEngine, deadline: Deadline) -> Dub:
    eng.costs = StageCosts(priors=TIER_PRIORS)
    return eng.dub(utterance(), "en", "es", deadline=deadline)


def test_the_words_are_kept_before_the_natural_voice() -> None:
    # With 3 s left the LLM and the usual voice do not both fit: the LLM's words are kept, the fast voice speaks.
    clock = Clock()
    eng, main, fast, kumo, pico = tiered_engine(clock)
    dub = dub_with(eng, Deadline(clock.now + 3.0, clock))
    assert (main.calls, fast.calls) == (1, 0) and dub.voice == str(pico)
    roomy = dub_with(eng, Deadline(clock.now + 8.0, clock))
    assert (main.calls, fast.calls) == (2, 0) and roomy.voice == str(kumo)
    tight = dub_with(eng, Deadline(clock.now + 1.0, clock))
    assert (main.calls, fast.calls) == (2, 1) and tight.voice == str(pico)


def test_an_upgrade_must_leave_the_work_queued_behind_on_time() -> None:
    # Plenty of time for this phrase, but the phrases waiting behind it could start only so much later than planned.
    clock = Clock()
    eng, main, fast, kumo, pico = tiered_engine(clock)
    slack = [0.5]  # neither the LLM (1.7 s more than Apertium) nor the natural voice may take that time from them
    deadline = Deadline(clock.now + 60.0, clock, backlog=lambda: slack[0])
    pressed = dub_with(eng, deadline)
    assert (main.calls, fast.calls) == (0, 1) and pressed.voice == str(pico)
    slack[0] = 1.9  # room for the LLM's extra time, not for the natural voice's
    words = dub_with(eng, deadline)
    assert (main.calls, fast.calls) == (1, 1) and words.voice == str(pico)
    slack[0] = float("inf")
    both = dub_with(eng, deadline)
    assert main.calls == 2 and both.voice == str(kumo)


class ClauseByClause(FakeTranslator):
    """Gives its translation a clause at a time, as an LLM streams it; records when each clause was given."""

    capabilities = TranslatorCapabilities(languages=frozenset({"en", "es"}), streaming=True)

    def __init__(self, clauses: list[str], gap_s: float = 0.0) -> None:
        super().__init__()
        self.clauses, self.gap_s, self.given_at = clauses, gap_s, []  # type: ignore[var-annotated]

    def translate_clauses(
        self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT
    ) -> Iterator[str]:
        for clause in self.clauses:
            time.sleep(self.gap_s)
            self.given_at.append(time.monotonic())
            yield clause


def test_a_dub_in_chunks_starts_with_its_first_clause_and_the_chunks_make_the_dub() -> None:
    clauses = ["Por favor, compruebe el número", "y vuelva a marcar más tarde,", "muchas gracias."]
    translator = ClauseByClause(clauses, gap_s=0.05)
    eng = DubEngine(
        FakeASR(), {("en", "es"): translator}, {"es": PacedTTS(chars_per_s=15.0)}, max_speedup=1.35,
        max_slowdown=1.35,
    )  # fmt: skip
    chunks: list[tuple[str, DubChunk, float]] = []
    answers = list(
        eng.dub_each(utterance(6.0), "en", ["es"], on_chunk=lambda t, c: chunks.append((t, c, time.monotonic())))
    )
    dub = answers[0].result
    assert isinstance(dub, Dub) and dub.translation is not None
    assert [c.text for _, c, _ in chunks] == clauses
    assert [c.index for _, c, _ in chunks] == [0, 1, 2] and [c.final for _, c, _ in chunks] == [False, False, True]
    # The first chunk was out before the translator gave its last clause: speech and words overlap.
    assert chunks[0][2] < translator.given_at[-1]
    # Chunks follow each other from the speech start, a breath apart, and together they are the returned dub.
    first, second = chunks[0][1], chunks[1][1]
    assert first.start_s == pytest.approx(0.5)  # FakeASR's speech starts at 0.5 s
    assert second.start_s == pytest.approx(first.end_s + CLAUSE_PAUSE_S)
    assembled = np.zeros_like(dub.fitted.audio)
    for _, chunk, _ in chunks:
        start = round(chunk.start_s * RATE)
        assembled[start : start + len(chunk.audio)] += chunk.audio
    assert np.allclose(assembled, dub.fitted.audio)
    assert dub.translation.text == " ".join(clauses) and "tts" in dub.seconds and "translation" in dub.seconds


def test_a_translator_without_clauses_is_spoken_in_clauses_of_its_whole_translation() -> None:
    class Whole(FakeTranslator):
        def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
            return "Buenos días a todos, bienvenidos al programa de hoy. Empezamos ya."

    eng = DubEngine(FakeASR(), {("en", "es"): Whole()}, {"es": PacedTTS()}, max_speedup=1.35, max_slowdown=1.35)
    texts: list[str] = []
    dub = eng.dub(utterance(), "en", "es")  # without on_chunk: one dub, as before
    assert dub.translation is not None and texts == []
    answer = next(eng.dub_each(utterance(), "en", ["es"], on_chunk=lambda _, c: texts.append(c.text)))
    assert texts == ["Buenos días a todos,", "bienvenidos al programa de hoy. Empezamos ya."]
    assert isinstance(answer.result, Dub)


def test_a_translation_that_fails_after_a_chunk_keeps_what_was_spoken() -> None:
    class Broken(ClauseByClause):
        def translate_clauses(
            self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT
        ) -> Iterator[str]:
            yield "Por favor, compruebe el número"
            raise RuntimeError("the model ran out of context")

    eng = DubEngine(FakeASR(), {("en", "es"): Broken([])}, {"es": PacedTTS()}, max_speedup=1.35, max_slowdown=1.35)
    chunks: list[DubChunk] = []
    answer = next(eng.dub_each(utterance(), "en", ["es"], on_chunk=lambda _, c: chunks.append(c)))
    assert len(chunks) == 1 and isinstance(answer.result, Dub)
    assert answer.result.translation is not None and answer.result.translation.text == "Por favor, compruebe el número"

    class Dead(ClauseByClause):
        def translate_clauses(
            self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT
        ) -> Iterator[str]:
            raise RuntimeError("no model")
            yield ""

    eng = DubEngine(FakeASR(), {("en", "es"): Dead([])}, {"es": PacedTTS()}, max_speedup=1.35, max_slowdown=1.35)
    failed = next(eng.dub_each(utterance(), "en", ["es"], on_chunk=lambda _, c: None)).result
    assert isinstance(failed, StageFailed) and failed.stage == "translation"


def test_a_main_translator_without_a_clause_in_time_is_stopped_and_the_fast_one_stands_in() -> None:
    class Stalling(FakeTranslator):
        """Writes token after token and never finishes a clause (a slow LLM on a busy machine)."""

        capabilities = TranslatorCapabilities(languages=frozenset({"en", "es"}), streaming=True)

        def __init__(self) -> None:
            super().__init__()
            self.tokens = 0

        def translate_clauses(
            self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT
        ) -> Iterator[str]:
            while self.tokens < 500:
                time.sleep(0.01)
                self.tokens += 1
                yield ""
            yield "demasiado tarde"

    stalling, fast = Stalling(), FakeTranslator()
    priors = {"asr": 0.0, "translation": 0.01, "translation_fast": 0.01, "tts": 0.01, "tts_fast": 0.01, "fit": 0.0}
    eng = DubEngine(
        FakeASR(), {("en", "es"): stalling}, {"es": PacedTTS()}, max_speedup=1.35, max_slowdown=1.35,
        costs=StageCosts(priors=priors), fast_translators={("en", "es"): fast},
    )  # fmt: skip
    chunks: list[DubChunk] = []
    started = time.monotonic()
    answer = next(
        eng.dub_each(utterance(), "en", ["es"], deadline=Deadline.after(1.0), on_chunk=lambda _, c: chunks.append(c))
    )
    assert isinstance(answer.result, Dub) and fast.calls == 1 and chunks
    assert "translation_fast" in answer.result.seconds and time.monotonic() - started < 1.0
    time.sleep(0.05)
    stopped_at = stalling.tokens
    time.sleep(0.1)
    assert stalling.tokens == stopped_at < 500  # the main translator was stopped, not left running
    assert eng.costs.rate("translation") > 0.01  # and its estimate learnt that it was slow


def test_the_last_chunk_ends_the_dub_where_the_speech_ends_as_a_whole_dub_would() -> None:
    # One clause, its length mispredicted (a voice twice as slow as its pace says): the chunk is fitted to the
    # speech span as the whole dub is, not stretched by the prediction alone.
    class Slow(PacedTTS):
        def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
            return super().synthesize(text + " " + text[: len(text) // 3], language, voice, speed)

    eng = DubEngine(FakeASR(), {("en", "es"): FakeTranslator()}, {"es": Slow(chars_per_s=20.0)}, max_speedup=1.35,
                    max_slowdown=1.35)  # fmt: skip
    chunks: list[DubChunk] = []
    answer = next(eng.dub_each(utterance(), "en", ["es"], on_chunk=lambda _, c: chunks.append(c)))
    dub = answer.result
    assert isinstance(dub, Dub) and len(chunks) == 1 and chunks[0].final
    assert dub.fitted.status.value == "success", dub.fitted.variance_percent  # within 10 % of the 4 s span
