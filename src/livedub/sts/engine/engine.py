"""The dubbing engine: runs the stages in order, times them, and drops work that can no longer be on time.

    engine = DubEngine(asr, {("en", "es"): translator}, voice_bank, max_speedup=1.35, max_slowdown=1.35)
    dub = engine.dub(Utterance(audio, 48000), "en", "es", overrun_s=1.0, deadline=Deadline.after(3.0))
    dub.fitted.audio  # mono float at 48 kHz, from the utterance start

Before each stage the deadline is checked against the expected cost of the stages still to run (`StageCosts`,
learnt as the engine runs): work that cannot finish in time stops at once with `TooLate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

from livedub.sts.deadline import NO_DEADLINE, Deadline, DeadlineExceeded
from livedub.sts.engine.costs import StageCosts, Work
from livedub.sts.engine.stages import Fit, Place, Recognise, Synthesise, Translate, silence
from livedub.sts.engine.values import Dub, DubProgress, Slot, StageFailed, TooLate, Transcript, Utterance
from livedub.sts.interfaces import ASRBackend, Translator, TTSBackend
from livedub.sts.languages import LANGUAGES, VoiceRef
from livedub.sts.tts.bank import VoiceBank

log = logging.getLogger(__name__)

T = TypeVar("T")
WARMUP_SOURCE_S = 5.0  # about how long the warm-up sentence takes to say
STAGES = ("asr", "translation", "tts", "fit")  # in order; deadline checks sum the cost of the ones left
# Under deadline pressure the fast translator (Apertium) stands in for the main one (the LLM), and the language's
# fast voice (espeak-ng) for its usual voices (Kokoro): a dub in plainer words or a plainer voice beats the original.
FAST_STAGES = ("asr", "translation_fast", "tts", "fit")
# Work on a phrase may take this much longer than the phrase lasts and still keep up: phrases are cut at pauses, so a
# stream is not speech from end to end (the fixtures' speech fills ~70 % of their time).
REAL_TIME_HEADROOM = 1.3


@dataclass(frozen=True)
class TargetDub:
    """One target language's answer for an utterance: its dub, or why there is none."""

    target: str
    result: Dub | StageFailed


class DubEngine:
    """ASR → translation → TTS → fit over backends that are already built (shared, each serialising itself)."""

    def __init__(
        self,
        asr: ASRBackend,
        translators: dict[tuple[str, str], Translator],
        tts: VoiceBank | dict[str, TTSBackend],
        *,
        max_speedup: float,
        max_slowdown: float,
        costs: StageCosts | None = None,
        fast_translators: dict[tuple[str, str], Translator] | None = None,
    ) -> None:
        self.recognise = Recognise(asr)
        self.place = Place()
        self.translate = Translate(translators)
        self.translate_fast = Translate(fast_translators or {})
        # Every voice of every target language (several per language: a picker may choose per speaker); one
        # learnt pace per language and voice.
        self.voices = tts if isinstance(tts, VoiceBank) else VoiceBank.of(tts)
        self.synthesise = {language: Synthesise(self.voices, language=language) for language in self.voices.languages}
        self.fit = Fit(max_speedup, max_slowdown)
        self.costs = costs or StageCosts()
        self.pairs = tuple(translators)
        self.warm_pairs: set[tuple[str, str]] = set()
        self._heard_voices: set[tuple[str, VoiceRef]] = set()

    def dub(
        self,
        utterance: Utterance,
        source: str,
        target: str,
        *,
        voice: VoiceRef | str | None = "default",
        overrun_s: float = 0.0,
        deadline: Deadline = NO_DEADLINE,
    ) -> Dub:
        """Raises StageFailed (TooLate when the deadline cannot be met), with what was done so far attached."""
        answer = next(self.dub_each(utterance, source, [target], voice=voice, overrun_s=overrun_s, deadline=deadline))
        if isinstance(answer.result, StageFailed):
            raise answer.result
        return answer.result

    def dub_each(
        self,
        utterance: Utterance,
        source: str,
        targets: list[str],
        *,
        voice: VoiceRef | str | Callable[[str], VoiceRef | str | None] | None = "default",
        overrun_s: float = 0.0,
        deadline: Deadline = NO_DEADLINE,
    ) -> Iterator[TargetDub]:
        """Transcribe once, then translate and speak for each target in turn, yielding each target's answer (a
        `Dub`, or the `StageFailed` that stopped it, with its progress) as soon as it is ready. A failed target does
        not stop the next; a failed ASR fails them all. `voice` is one of the target's voices (`self.voices`; a
        VoiceRef or its `backend:voice` text; anything else: the default), or a function of the target."""
        heard = DubProgress()
        try:
            transcript = self._hear(utterance, source, targets[0], deadline, heard)
        except StageFailed as exc:
            exc.progress = heard
            for target in targets:
                yield TargetDub(target, exc)
            return
        slot = None if not transcript.text.strip() else self.place(transcript, utterance.duration_s, overrun_s)
        main_for = self._main_translations_affordable(len(targets))
        # When time runs short the later targets take the fast voice: the ones that lose most in it speak first.
        by_loss = sorted(targets, key=lambda t: -self._fast_voice_loss(t))
        for index, target in enumerate(by_loss):
            progress = DubProgress(transcript=transcript, slot=slot, seconds=dict(heard.seconds))
            spoken_by = voice(target) if callable(voice) else voice
            prefer_fast = index >= main_for
            try:
                dub = self._speak(utterance, transcript, slot, target, spoken_by, deadline, progress, prefer_fast)
                yield TargetDub(target, dub)
            except StageFailed as exc:
                exc.progress = progress
                yield TargetDub(target, exc)

    def _fast_voice_loss(self, target: str) -> float:
        """What a phrase loses in the target's fast voice (its round-trip WER); everything without one."""
        has_fast_voice = self.voices.fast_voice(target) is not None and target in LANGUAGES
        return LANGUAGES[target].fast_voice_wer if has_fast_voice else 1.0

    def usual_time_s(self, audio_s: float) -> float:
        """What dubbing `audio_s` of audio usually takes on the cheapest path (learnt average costs). Work started
        with less time left mostly ends past its deadline, after using the machine for nothing."""
        cheapest = self._cheapest(bool(self.translate_fast.translators), self.voices.languages)
        return self.costs.expected(cheapest, audio_s)

    def _cheapest(self, fast_translation: bool, targets: Iterable[str]) -> tuple[str, ...]:
        """The cheapest stages there are: with the fast translator if it serves, a fast voice if a target has one."""
        fast_voice = any(self.voices.fast_voice(target) for target in targets)
        translation = "translation_fast" if fast_translation else "translation"
        return ("asr", translation, "tts_fast" if fast_voice else "tts", "fit")

    def _main_translations_affordable(self, targets: int) -> int:
        """How many targets (the first ones) can have the main translator while the work on a phrase still keeps up
        with the stream (learnt costs per second of audio, within REAL_TIME_HEADROOM); the others take the fast
        one. One target always may: its deadline decides alone, as before."""
        if targets <= 1:
            return targets
        main, fast = self.costs.expected(STAGES[1:], 1.0), self.costs.expected(FAST_STAGES[1:], 1.0)
        asr = self.costs.expected(("asr",), 1.0)
        for main_count in range(targets, -1, -1):
            if asr + main_count * main + (targets - main_count) * fast <= REAL_TIME_HEADROOM:
                return main_count
        return 0

    def _run(
        self, stage: str, left: tuple[str, ...], work: Work, deadline: Deadline, progress: DubProgress,
        call: Callable[[], T], done: Callable[[T], Work] | None = None,
    ) -> T:  # fmt: skip
        """One stage: check the deadline against the stages `left` (this one first), run it, learn its cost (on
        the work `done` says it did, by default `work`)."""
        self._check(deadline, left, work)
        started = time.perf_counter()
        value = _as_stage(stage, call)
        progress.seconds[stage] = elapsed = time.perf_counter() - started
        self.costs.observe(stage, elapsed, done(value) if done else work)
        return value

    def _path(self, source: str, target: str) -> tuple[str, ...]:
        """The cheapest way through, until the translator and the voice are chosen."""
        return self._cheapest((source, target) in self.translate_fast.translators, [target])

    def _hear(
        self, utterance: Utterance, source: str, first_target: str, deadline: Deadline, progress: DubProgress
    ) -> Transcript:
        path = self._path(source, first_target)
        transcript = self._run(
            "asr", path, Work(utterance.duration_s), deadline, progress, lambda: self.recognise(utterance, source)
        )
        progress.transcript = transcript
        return transcript

    def _speak(
        self,
        utterance: Utterance,
        transcript: Transcript,
        slot: Slot | None,
        target: str,
        voice: VoiceRef | str | None,
        deadline: Deadline,
        progress: DubProgress,
        prefer_fast: bool = False,
    ) -> Dub:
        if slot is None:  # no words heard: nothing to say
            return Dub(transcript, None, None, silence(utterance), progress.seconds)
        work = Work(utterance.duration_s, len(transcript.text))  # the words to say are known from here on
        synthesise = self.synthesise[target]
        usual_voice = synthesise.voice(target, voice)
        fast_voice = self.voices.fast_voice(target, like=usual_voice)
        may_switch_voice = fast_voice is not None and fast_voice != usual_voice
        # Where a fast voice could stand in, the usual voice must be on time in all but its slowest runs: a dub past its
        # deadline loses the whole phrase, the fast voice only naturalness (with the average alone, 2 of 15 phrases
        # were lost on a 2-core VM with one core loaded).
        cost = self.costs.likely_max if may_switch_voice else self.costs.expected
        voice_s = cost(("tts", "fit"), work)
        has_fast = (transcript.language, target) in self.translate_fast.translators
        # The main translator only when it is expected to be on time, and affordable, with time left for the usual
        # voice: a natural voice matters more than the better words.
        main_s = cost(("translation",), work) + voice_s
        fast = has_fast and (prefer_fast or deadline.remaining() <= main_s)
        translation_stage = "translation_fast" if fast else "translation"
        translate = self.translate_fast if fast else self.translate
        tts_stage = "tts_fast" if may_switch_voice else "tts"  # until the voice is chosen, the cheapest way on

        def run(stage: str, call: Callable[[], T], done: Callable[[T], Work] | None = None) -> T:
            path = ("asr", translation_stage, tts_stage, "fit")
            return self._run(stage, path[path.index(stage) :], work, deadline, progress, call, done)

        translation = progress.translation = run(translation_stage, lambda: translate(transcript, target))
        # The usual voice only when it is likely to be on time on the dub its pace predicts; else the fast one.
        work = replace(work, dub_s=synthesise.predicted_s(translation, slot, voice))
        if may_switch_voice and deadline.remaining() > cost(("tts", "fit"), work):
            tts_stage = "tts"
        spoken_by = fast_voice if tts_stage == "tts_fast" else voice
        if tts_stage == "tts_fast":
            work = replace(work, dub_s=synthesise.predicted_s(translation, slot, fast_voice))
        speech = run(
            tts_stage, lambda: synthesise(translation, slot, spoken_by), lambda s: replace(work, dub_s=s.duration_s)
        )
        fitted = run("fit", lambda: self.fit(speech, slot, utterance))
        return Dub(transcript, translation, slot, fitted, progress.seconds, speech.voice)

    def _check(self, deadline: Deadline, left: tuple[str, ...], work: Work) -> None:
        if deadline.at is None:
            return
        stage = left[0]
        try:
            deadline.check(stage, self.costs.needed(left, work))
        except DeadlineExceeded as exc:
            if deadline.remaining() > 0:  # dropped on the estimate: let it learn that it may be too pessimistic
                self.costs.relax(left)
            raise TooLate(stage, str(exc)) from exc

    def warm_up(self, pairs: tuple[tuple[str, str], ...] | None = None) -> None:
        """Run every stage of each pair (default: all) on a realistic sentence (a few seconds of speech), so that the
        first real phrase is as fast as the tenth, and the stage costs start from measurements. A pair warmed
        already is skipped."""
        for source, target in self.pairs if pairs is None else pairs:
            if (source, target) not in self.warm_pairs:
                self._warm_pair(source, target)
                self.warm_pairs.add((source, target))
        log.info(
            "engine warm for %s: stage costs (s per s of audio) %s", sorted(self.warm_pairs), self.costs.snapshot()
        )

    def _warm_pair(self, source: str, target: str) -> None:
        sentence = _said(source)
        said = Work(WARMUP_SOURCE_S, len(sentence.text))
        translation = self._timed("translation", said, lambda: self.translate(sentence, target))
        if (source, target) in self.translate_fast.translators:
            self._timed("translation_fast", said, lambda: self.translate_fast(sentence, target))
        synthesise = self.synthesise[target]
        for voice in self.voices.voices(target):  # each voice's pace, heard once at its natural rate
            if (target, voice) not in self._heard_voices:
                synthesise(translation, _slot(synthesise.pace_of(voice).predict_s(translation.text)), voice)
                self._heard_voices.add((target, voice))
        natural = synthesise(translation, _slot(synthesise.pace.predict_s(translation.text)), None)
        spoken = Utterance(natural.audio, natural.sample_rate)
        slot = _slot(0.9 * natural.duration_s)  # a dub that needs a faster rate, as most do
        speech = self._timed(
            "tts", said, lambda: synthesise(translation, slot, None), lambda s: replace(said, dub_s=s.duration_s)
        )
        for fast_voice in self.voices.fast_voices(target):  # each one's pace at its natural rate (once)
            if (target, fast_voice) not in self._heard_voices:
                synthesise(translation, _slot(synthesise.pace_of(fast_voice).predict_s(translation.text)), fast_voice)
                self._heard_voices.add((target, fast_voice))
        fast_voice = self.voices.fast_voice(target)
        if fast_voice is not None:  # its cost on the same dub
            self._timed(
                "tts_fast",
                said,
                lambda: synthesise(translation, slot, fast_voice),
                lambda s: replace(said, dub_s=s.duration_s),
            )
        heard = Work(natural.duration_s)
        self._timed("fit", heard, lambda: self.fit(speech, slot, spoken))
        self._timed("asr", heard, lambda: self.recognise(spoken, target))

    def _timed(self, stage: str, work: Work, call: Callable[[], T], done: Callable[[T], Work] | None = None) -> T:
        started = time.perf_counter()
        value = call()
        self.costs.observe(stage, time.perf_counter() - started, done(value) if done else work)
        return value


def _said(language: str) -> Transcript:
    return Transcript(LANGUAGES[language].warmup, language)


def _slot(span_s: float) -> Slot:
    return Slot(start_s=0.0, span_s=span_s, room_s=span_s + 0.5)


def _as_stage(stage: str, call: Callable[[], T]) -> T:
    """Run one stage; any exception becomes a StageFailed of that stage."""
    try:
        return call()
    except StageFailed:
        raise
    except Exception as exc:
        retryable = bool(getattr(exc, "retryable", True))  # unknown failures may be transient: let the client retry
        raise StageFailed(stage, f"{type(exc).__name__}: {exc}", retryable) from exc


__all__ = ["STAGES", "DubEngine", "TargetDub"]
