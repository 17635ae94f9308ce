"""The dubbing engine: runs the stages in order, times them, and drops work that can no longer be on time.

    engine = DubEngine(asr, {("en", "es"): translator}, voice_bank, max_speedup=1.35, max_slowdown=1.35)
    dub = engine.dub(Utterance(audio, 48000), "en", "es", overrun_s=1.0, deadline=Deadline.after(3.0))
    dub.fitted.audio  # mono float at 48 kHz, from the utterance start

Before each stage the deadline is checked against the expected cost of the stages still to run (`StageCosts`,
learnt as the engine runs): work that cannot finish in time stops at once with `TooLate`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

from livedub.deadline import NO_DEADLINE, Deadline, DeadlineExceeded
from livedub.dubbing.audio import fit_duration, resample
from livedub.dubbing.chunks import (
    CLAUSE_PAUSE_S,
    DubChunk,
    FirstClauseLate,
    OnChunk,
    assemble,
    clauses_on_a_lane,
)
from livedub.dubbing.costs import StageCosts, Work
from livedub.dubbing.interfaces import (
    NO_CONTEXT,
    ASRBackend,
    BackendError,
    FloatAudio,
    TranslationContext,
    Translator,
    TTSBackend,
)
from livedub.dubbing.stages import Fit, Place, Recognise, Synthesise, Translate, dub_samples, silence
from livedub.dubbing.tiers import Offer, TierPolicy, voice_path
from livedub.dubbing.tts.bank import VoiceBank
from livedub.dubbing.tts.registry import fast_voice_loss
from livedub.dubbing.values import (
    Dub,
    DubProgress,
    Slot,
    Speech,
    Stage,
    StageFailed,
    TooLate,
    Transcript,
    Translation,
    TranslatorTier,
    Utterance,
    VoiceTier,
)
from livedub.languages import LANGUAGES, VoiceRef

log = logging.getLogger(__name__)

T = TypeVar("T")
WARMUP_SOURCE_S = 5.0  # about how long the warm-up sentence takes to say
STAGES = (Stage.ASR, Stage.TRANSLATION, Stage.TTS, Stage.FIT)  # in order; deadline checks sum the cost of the ones left
# Under deadline pressure the fast translator (Apertium) stands in for the main one (the LLM), and the language's
# fast voice (SVOX Pico) for its usual voices (Kokoro): a dub in plainer words or a plainer voice beats the original.
# Which tier a phrase gets: livedub.dubbing.tiers.
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
        self._locks: dict[int, threading.Lock] = {}  # per backend: one phrase at a time on each
        self._ratios: dict[tuple[str, str], float] = {}  # translation length per transcript length, per direction
        self._locks_lock = threading.Lock()

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
        context: Callable[[str], TranslationContext] | None = None,
        on_chunk: OnChunk | None = None,
    ) -> Iterator[TargetDub]:
        """Transcribe once, then translate and speak for each target in turn, yielding each target's answer (a
        `Dub`, or the `StageFailed` that stopped it, with its progress) as soon as it is ready. A failed target does
        not stop the next; a failed ASR fails them all. `voice` is one of the target's voices (`self.voices`; a
        VoiceRef or its `backend:voice` text; anything else: the default), or a function of the target. `context`
        gives each target's translation context (the stream's previous phrases, its glossary). With `on_chunk`, each
        dub is also spoken clause by clause as its words come, each chunk handed over as soon as it is made
        (`livedub.dubbing.chunks`); its answer is then the chunks together."""
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
        reserves = [self._reserve_s(transcript, utterance, source, target) for target in by_loss]
        for index, target in enumerate(by_loss):
            progress = DubProgress(transcript=transcript, slot=slot, seconds=dict(heard.seconds))
            spoken_by = voice(target) if callable(voice) else voice
            prefer_fast = index >= main_for
            told = context(target) if context is not None else NO_CONTEXT
            later_s = sum(reserves[index + 1 :])
            try:
                dub = self._speak(
                    utterance, transcript, slot, target, spoken_by, deadline, progress, prefer_fast, told, later_s,
                    on_chunk,
                )  # fmt: skip
                yield TargetDub(target, dub)
            except StageFailed as exc:
                exc.progress = progress
                yield TargetDub(target, exc)

    def _reserve_s(self, transcript: Transcript, utterance: Utterance, source: str, target: str) -> float:
        """The least a target costs once the transcript is known: kept free while the targets before it speak."""
        offer = Offer.of(
            fast_translator=(source, target) in self.translate_fast.translators,
            fast_voice=self.voices.fast_voice(target) is not None,
        )
        return self.tiers.cheapest_after_asr(Work(utterance.duration_s, len(transcript.text)), offer)

    def _fast_voice_loss(self, target: str) -> float:
        """What a phrase loses in the target's fast voice (its round-trip WER); everything without one."""
        return fast_voice_loss(target) if self.voices.fast_voice(target) is not None else 1.0

    def _translate_of(self, tier: TranslatorTier) -> Translate:
        """The translation stage over the translators of `tier`."""
        return self.translate if tier is TranslatorTier.MAIN else self.translate_fast

    @property
    def tiers(self) -> TierPolicy:
        return TierPolicy(self.costs)

    def usual_time_s(self, audio_s: float) -> float:
        """What dubbing `audio_s` of audio usually takes on the cheapest path (learnt average costs). Work started
        with less time left mostly ends past its deadline, after using the machine for nothing."""
        cheapest = self._cheapest(bool(self.translate_fast.translators), self.voices.languages)
        return self.costs.expected(cheapest, audio_s)

    def _cheapest(self, fast_translation: bool, targets: Iterable[str]) -> tuple[Stage, ...]:
        """The cheapest stages there are: with the fast translator if it serves, a fast voice if a target has one."""
        fast_voice = any(self.voices.fast_voice(target) for target in targets)
        return Offer.of(fast_translator=fast_translation, fast_voice=fast_voice).cheapest_path()

    def _main_translations_affordable(self, targets: int) -> int:
        """How many targets (the first ones) can have the main translator while the work on a phrase still keeps up
        with the stream (learnt costs per second of audio, within REAL_TIME_HEADROOM); the others take the fast
        one. One target always may: its deadline decides alone, as before."""
        if targets <= 1:
            return targets
        # The voice is given up before the words: the targets' cheapest voice counts here.
        fast_voice = any(self.voices.fast_voice(t) for t in self.voices.languages)
        voice = voice_path(VoiceTier.FAST if fast_voice else VoiceTier.USUAL)
        main = self.costs.expected((Stage.TRANSLATION, *voice), 1.0)
        fast = self.costs.expected((Stage.FAST_TRANSLATION, *voice), 1.0)
        asr = self.costs.expected((Stage.ASR,), 1.0)
        for main_count in range(targets, -1, -1):
            if asr + main_count * main + (targets - main_count) * fast <= REAL_TIME_HEADROOM:
                return main_count
        return 0

    def _run(
        self, stage: Stage, left: tuple[Stage, ...], work: Work, deadline: Deadline, progress: DubProgress,
        call: Callable[[], T], done: Callable[[T], Work] | None = None, backend: object = None,
    ) -> T:  # fmt: skip
        """One stage: check the deadline against the stages `left` (this one first), run it on `backend` once no
        other phrase uses it, learn its cost (on the work `done` says it did, by default `work`). Phrases on
        several threads share the backends: the wait for one counts against the deadline, not as its cost."""
        self._check(deadline, left, work)
        with self._backend_lock(backend):
            if backend is not None:
                self._check(deadline, left, work)  # the wait may have used up the time
            started = time.perf_counter()
            value = _as_stage(stage, call)
            progress.seconds[stage] = elapsed = time.perf_counter() - started
        self.costs.observe(stage, elapsed, done(value) if done else work)
        return value

    def _backend_lock(self, backend: object) -> contextlib.AbstractContextManager[object]:
        if backend is None:
            return contextlib.nullcontext()
        with self._locks_lock:
            return self._locks.setdefault(id(backend), threading.Lock())

    def _path(self, source: str, target: str) -> tuple[Stage, ...]:
        """The cheapest way through, until the translator and the voice are chosen."""
        return self._cheapest((source, target) in self.translate_fast.translators, [target])

    def _hear(
        self, utterance: Utterance, source: str, first_target: str, deadline: Deadline, progress: DubProgress
    ) -> Transcript:
        path = self._path(source, first_target)
        transcript = self._run(
            Stage.ASR, path, Work(utterance.duration_s), deadline, progress, lambda: self.recognise(utterance, source),
            backend=self.recognise.asr,
        )  # fmt: skip
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
        context: TranslationContext = NO_CONTEXT,
        later_s: float = 0.0,
        on_chunk: OnChunk | None = None,
    ) -> Dub:
        """Translate and speak for one target, in the best tiers that the deadline affords (`TierPolicy`), with
        `later_s` kept for the targets still to come; clause by clause when `on_chunk` takes the chunks."""
        if slot is None:  # no words heard: nothing to say
            return Dub(transcript, None, None, silence(utterance), progress.seconds)
        work = Work(utterance.duration_s, len(transcript.text))  # the words to say are known from here on
        chunked = on_chunk is not None
        chosen = self._choose_translator(work, transcript, target, voice, deadline, prefer_fast, later_s, chunked)
        if on_chunk is None:
            return self._speak_whole(utterance, transcript, slot, target, chosen, work, deadline, progress, context,
                                     later_s)  # fmt: skip
        return self._speak_chunked_or_stand_in(utterance, transcript, slot, target, chosen, deadline, progress,
                                               context, later_s, on_chunk)  # fmt: skip

    def _choose_translator(
        self, work: Work, transcript: Transcript, target: str, voice: VoiceRef | str | None, deadline: Deadline,
        prefer_fast: bool, later_s: float, chunked: bool,
    ) -> Chosen:  # fmt: skip
        """The translator tier of one target, chosen before its words are known, and the voices it may speak in."""
        usual_voice = self.synthesise[target].voice(target, voice)
        fast_voice = self.voices.fast_voice(target, like=usual_voice)
        fast_ref = fast_voice if fast_voice is not None and fast_voice != usual_voice else None
        offer = Offer.of(
            fast_translator=(transcript.language, target) in self.translate_fast.translators,
            fast_voice=fast_ref is not None,
        )
        share = first_share(transcript.text) if chunked else 1.0
        if prefer_fast:  # this phrase's later targets cannot all afford the main translator
            translator = offer.cheapest_translator
        else:
            translator = self.tiers.translator(work, deadline, offer, later_s=later_s, share=share, stoppable=chunked)
        # Only a dub in chunks can stop its main translator and let the fast one stand in.
        may_fall_back = (
            chunked and translator is TranslatorTier.MAIN and offer.cheapest_translator is not TranslatorTier.MAIN
        )
        translate = self._translate_of(translator)
        return Chosen(translator, translate, voice, fast_ref, share, offer, may_fall_back=may_fall_back)

    def _speak_chunked_or_stand_in(
        self, utterance: Utterance, transcript: Transcript, slot: Slot, target: str, chosen: Chosen,
        deadline: Deadline, progress: DubProgress, context: TranslationContext, later_s: float, on_chunk: OnChunk,
    ) -> Dub:  # fmt: skip
        """The dub in chunks; again with the fast translator when the main one gave no clause in time."""
        try:
            return self._speak_in_chunks(utterance, transcript, slot, target, chosen, deadline, progress,
                                         context, later_s, on_chunk)  # fmt: skip
        except FirstClauseLate:  # the main translator was stopped: the fast one says it, still in time
            log.info("%s: the main translator gave no clause in time; the fast one stands in", target)
            stand_in = chosen.offer.cheapest_translator
            chosen = replace(chosen, translator=stand_in, translate=self._translate_of(stand_in),
                             may_fall_back=False)  # fmt: skip
            return self._speak_in_chunks(utterance, transcript, slot, target, chosen, deadline, progress,
                                         context, later_s, on_chunk)  # fmt: skip

    def _speak_whole(
        self, utterance: Utterance, transcript: Transcript, slot: Slot, target: str, chosen: Chosen, work: Work,
        deadline: Deadline, progress: DubProgress, context: TranslationContext, later_s: float,
    ) -> Dub:  # fmt: skip
        """The whole translation first, then the voice chosen on the dub its words predict, spoken and fitted."""
        synthesise = self.synthesise[target]
        voice_tier = chosen.offer.cheapest_voice  # until the voice is chosen, the cheapest way on

        def run(stage: Stage, call: Callable[[], T], done: Callable[[T], Work] | None = None, on: object = None) -> T:
            # `voice_tier` and `work` as they stand when the stage runs: the voice is chosen after the translation.
            path = (Stage.ASR, chosen.stage, *voice_path(voice_tier))
            return self._run(stage, path[path.index(stage) :], work, deadline, progress, call, done, on)

        backend = chosen.translate.translators[(transcript.language, target)]
        translation = progress.translation = run(
            chosen.stage, lambda: chosen.translate(transcript, target, context), on=backend
        )
        self._learn_length(transcript, translation)
        voice_tier, spoken_by, work = self._whole_voice(translation, slot, target, chosen, work, deadline, later_s)
        speech = run(
            Stage.of_voice(voice_tier),
            lambda: synthesise(translation, slot, spoken_by),
            lambda s: replace(work, dub_s=s.duration_s),
            on=self.voices.backend(target, synthesise.voice(target, spoken_by)),
        )
        fitted = run(Stage.FIT, lambda: self.fit(speech, slot, utterance))
        return Dub(transcript, translation, slot, fitted, progress.seconds, speech.voice, chosen.translator, voice_tier)

    def _whole_voice(
        self, translation: Translation, slot: Slot, target: str, chosen: Chosen, work: Work, deadline: Deadline,
        later_s: float,
    ) -> tuple[VoiceTier, VoiceRef | str | None, Work]:  # fmt: skip
        """The voice tier for a known translation, on the dub each voice's pace predicts: the tier, the voice that
        speaks and the work of its dub."""
        synthesise = self.synthesise[target]
        usual = replace(work, dub_s=synthesise.predicted_s(translation, slot, chosen.voice))
        fast = usual
        if chosen.fast_voice is not None:
            fast = replace(work, dub_s=synthesise.predicted_s(translation, slot, chosen.fast_voice))
        tier = self.tiers.voice(usual, fast, deadline, chosen.offer, later_s=later_s)
        return (tier, chosen.voice, usual) if tier is VoiceTier.USUAL else (tier, chosen.fast_voice, fast)

    def _speak_in_chunks(
        self,
        utterance: Utterance,
        transcript: Transcript,
        slot: Slot,
        target: str,
        chosen: Chosen,
        deadline: Deadline,
        progress: DubProgress,
        context: TranslationContext,
        later_s: float,
        on_chunk: OnChunk,
    ) -> Dub:
        """The translation on a lane thread, clause by clause; each clause spoken here as it comes and handed to
        `on_chunk` at once. The voice is chosen before the words are known, on the dub's predicted length."""
        voice = self._chunk_voice(utterance, transcript, slot, target, chosen, deadline, later_s)
        translator = chosen.translate.translators[(transcript.language, target)]

        def produce() -> Iterator[str]:
            with self._backend_lock(translator):
                started = time.perf_counter()
                try:
                    yield from chosen.translate.clauses(transcript, target, context)
                finally:  # a stopped translation too: it took at least this long
                    progress.seconds[chosen.stage] = time.perf_counter() - started

        chunks: list[DubChunk] = []
        seconds = {voice.stage: 0.0, Stage.FIT: 0.0}
        first_by = self._first_clause_by(utterance, transcript, deadline) if chosen.may_fall_back else None
        asked_at = time.monotonic()
        try:
            for index, (clause, last) in enumerate(clauses_on_a_lane(produce, first_by)):
                start_s = chunks[-1].end_s + CLAUSE_PAUSE_S if chunks else slot.start_s
                # A later clause is due when the ones before it have played.
                # The last clause ends the dub where the speech it replaces ends (within the fit's caps).
                ends_in_s = slot.start_s + slot.span_s - start_s if last else None
                audio = self._speak_clause(clause, voice, deadline.later(start_s - slot.start_s), seconds, ends_in_s)
                audio = self._squeeze(audio, utterance.duration_s + slot.overrun_s - start_s, voice)
                if len(audio) == 0:
                    break  # no room left for more of the dub
                chunks.append(DubChunk(index, start_s, audio, voice.rate, clause, final=last))
                on_chunk(target, chunks[-1])
        except FirstClauseLate:
            # It ran at least this long without a clause: what its cost estimate should learn.
            self.costs.observe(chosen.stage, time.monotonic() - asked_at, Work(1.0, len(transcript.text)))
            raise
        except Exception as exc:
            if not chunks:
                raise exc if isinstance(exc, StageFailed) else StageFailed(chosen.stage, repr(exc)) from exc
            log.info("dub stopped after %d chunks: %s", len(chunks), exc)  # what was spoken stands
        return self._chunked_dub(utterance, transcript, slot, target, chunks, chosen, voice, seconds, progress)

    def _first_clause_by(self, utterance: Utterance, transcript: Transcript, deadline: Deadline) -> float | None:
        """When the main translator's first clause must have come (time.monotonic) for the fast translator and voice
        to still say the phrase in time, should it be stopped then (their likely cost, and a margin)."""
        if deadline.at is None:
            return None
        work = Work(utterance.duration_s, len(transcript.text))
        stand_in = (Stage.of_translator(TranslatorTier.FAST), *voice_path(VoiceTier.FAST))
        reserve = self.costs.likely_max(stand_in, work) + FALLBACK_MARGIN_S
        return time.monotonic() + deadline.remaining() - reserve

    def _chunk_voice(
        self, utterance: Utterance, transcript: Transcript, slot: Slot, target: str, chosen: Chosen,
        deadline: Deadline, later_s: float,
    ) -> ChunkVoice:  # fmt: skip
        """The voice of a dub in chunks, its rate and time-stretch: chosen on the length the transcript predicts."""
        synthesise = self.synthesise[target]
        work = Work(utterance.duration_s, len(transcript.text))
        # The words are not known yet: about as many characters as translations into `target` usually have.
        guess = Translation("x" * round(self._length_ratio(transcript.language, target) * len(transcript.text)), target)
        usual = replace(work, dub_s=synthesise.predicted_s(guess, slot, chosen.voice))
        fast = usual
        if chosen.fast_voice is not None:
            fast = replace(work, dub_s=synthesise.predicted_s(guess, slot, chosen.fast_voice))
        tier = self.tiers.voice_in_chunks(
            usual, fast, chosen.translator, deadline, chosen.offer, share=chosen.share, later_s=later_s
        )
        usual_tier = tier is VoiceTier.USUAL
        ref = synthesise.voice(target, chosen.voice if usual_tier else chosen.fast_voice)
        self._check(deadline, (chosen.stage, *voice_path(tier)), usual if usual_tier else fast)
        speed = synthesise.speed_for(guess, slot, ref)
        stretch = clamp_ratio(synthesise.pace_of(ref).predict_s(guess.text, speed), slot, self.fit)
        return ChunkVoice(tier, ref, synthesise, speed, stretch, utterance.sample_rate, slot, target)

    def _squeeze(self, audio: FloatAudio, room_s: float, voice: ChunkVoice) -> FloatAudio:
        """A chunk that would run past the room left for the dub: sped up further, within the fit's cap, then cut."""
        room = max(0, round(room_s * voice.rate))
        if len(audio) <= room:
            return audio
        if room > 0 and voice.stretch < self.fit.max_speedup:
            audio = fit_duration(audio, voice.rate, room, self.fit.max_speedup / voice.stretch, 1.0).audio
        return audio[:room]

    def _length_ratio(self, source: str, target: str) -> float:
        """Characters of translation per character of transcript, learnt per direction (Spanish ~1.15 x English)."""
        return self._ratios.get((source, target), 1.1)

    def _learn_length(self, transcript: Transcript, translation: Translation) -> None:
        if len(transcript.text) >= 10:
            key = (transcript.language, translation.language)
            ratio = len(translation.text) / len(transcript.text)
            self._ratios[key] = 0.3 * ratio + 0.7 * self._ratios.get(key, ratio)

    def _speak_clause(
        self, clause: str, voice: ChunkVoice, due: Deadline, seconds: dict[str, float], lasts_s: float | None = None
    ) -> FloatAudio:
        """One clause in the dub's voice, at its rate, at the utterance's rate (timed in `seconds`): stretched as
        every clause of the dub, or (`lasts_s`, the last clause) to last that long, within the fit's caps."""
        text = Translation(clause, voice.target)
        predicted = voice.synthesise.predicted_s(text, voice.slot, voice.ref)
        self._check(due, voice_path(voice.tier), Work(predicted, len(clause), dub_s=predicted))
        with self._backend_lock(self.voices.backend(voice.target, voice.ref)):
            started = time.perf_counter()
            speech = _as_stage(voice.stage, lambda: voice.synthesise(text, voice.slot, voice.ref, voice.speed))
            seconds[voice.stage] += time.perf_counter() - started
        started = time.perf_counter()
        stretch = voice.stretch
        if lasts_s is not None:
            natural_s = len(speech.audio) / speech.sample_rate
            stretch = (
                clamp_ratio(natural_s, replace(voice.slot, span_s=lasts_s), self.fit)
                if lasts_s > 0
                else self.fit.max_speedup
            )
        audio = _as_stage(Stage.FIT, lambda: stretch_to(speech, voice.rate, stretch, self.fit))
        seconds[Stage.FIT] += time.perf_counter() - started
        return audio

    def _chunked_dub(
        self, utterance: Utterance, transcript: Transcript, slot: Slot, target: str, chunks: list[DubChunk],
        chosen: Chosen, voice: ChunkVoice, seconds: dict[str, float], progress: DubProgress,
    ) -> Dub:  # fmt: skip
        """The dub that the chunks make together, with the stage costs learnt from it."""
        translation = progress.translation = Translation(" ".join(chunk.text for chunk in chunks), target)
        self._learn_length(transcript, translation)
        progress.seconds.update(seconds)
        rate = utterance.sample_rate
        said = Work(utterance.duration_s, len(transcript.text))
        if chosen.stage in progress.seconds:
            self.costs.observe(chosen.stage, progress.seconds[chosen.stage], said)
        spoken = replace(said, dub_s=sum(len(chunk.audio) for chunk in chunks) / rate)
        for stage, spent in seconds.items():
            self.costs.observe(stage, spent, spoken)
        total = dub_samples(utterance, slot, round(chunks[-1].end_s * rate))
        fitted = assemble(chunks, slot, total, rate, voice.stretch)
        return Dub(
            transcript, translation, slot, fitted, progress.seconds, str(voice.ref), chosen.translator, voice.tier
        )

    def _check(self, deadline: Deadline, left: tuple[Stage, ...], work: Work) -> None:
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
        translation = self._timed(Stage.TRANSLATION, said, lambda: self.translate(sentence, target))
        if (source, target) in self.translate_fast.translators:
            self._timed(Stage.FAST_TRANSLATION, said, lambda: self.translate_fast(sentence, target))
        synthesise = self.synthesise[target]
        for voice in self.voices.voices(target):  # each voice's pace, heard once at its natural rate
            if (target, voice) not in self._heard_voices:
                synthesise(translation, _slot(synthesise.pace_of(voice).predict_s(translation.text)), voice)
                self._heard_voices.add((target, voice))
        natural = synthesise(translation, _slot(synthesise.pace.predict_s(translation.text)), None)
        spoken = Utterance(natural.audio, natural.sample_rate)
        slot = _slot(0.9 * natural.duration_s)  # a dub that needs a faster rate, as most do
        speech = self._timed(
            Stage.TTS, said, lambda: synthesise(translation, slot, None), lambda s: replace(said, dub_s=s.duration_s)
        )
        for fast_voice in self.voices.fast_voices(target):  # each one's pace at its natural rate (once)
            if (target, fast_voice) not in self._heard_voices:
                synthesise(translation, _slot(synthesise.pace_of(fast_voice).predict_s(translation.text)), fast_voice)
                self._heard_voices.add((target, fast_voice))
        fast_voice = self.voices.fast_voice(target)
        if fast_voice is not None:  # its cost on the same dub
            self._timed(
                Stage.FAST_TTS,
                said,
                lambda: synthesise(translation, slot, fast_voice),
                lambda s: replace(said, dub_s=s.duration_s),
            )
        heard = Work(natural.duration_s)
        self._timed(Stage.FIT, heard, lambda: self.fit(speech, slot, spoken))
        self._timed(Stage.ASR, heard, lambda: self.recognise(spoken, target))

    def _timed(self, stage: Stage, work: Work, call: Callable[[], T], done: Callable[[T], Work] | None = None) -> T:
        started = time.perf_counter()
        value = call()
        self.costs.observe(stage, time.perf_counter() - started, done(value) if done else work)
        return value


@dataclass(frozen=True)
class Chosen:
    """A target's translator tier (decided before its words) and the voices it may speak in."""

    translator: TranslatorTier
    translate: Translate
    voice: VoiceRef | str | None  # the usual voice asked for
    fast_voice: VoiceRef | None  # its stand-in, if the language has one
    share: float  # the part of the dub due by the deadline
    offer: Offer  # the tiers that serve the target
    may_fall_back: bool = False  # the fast translator stands in if this one gives no clause in time

    @property
    def stage(self) -> Stage:
        return Stage.of_translator(self.translator)


@dataclass(frozen=True)
class ChunkVoice:
    """How every clause of a dub in chunks is spoken: one voice, one rate, one time-stretch."""

    tier: VoiceTier  # the usual voice or the fast one
    ref: VoiceRef
    synthesise: Synthesise
    speed: float  # the rate asked of the voice
    stretch: float  # the time-stretch of each chunk
    rate: int  # the utterance's sample rate
    slot: Slot
    target: str

    @property
    def stage(self) -> Stage:
        return Stage.of_voice(self.tier)


FALLBACK_MARGIN_S = 0.3  # kept for the stand-in after a stopped translation (its start, the first chunk's trip)


FIRST_CLAUSE_CHARS = 40  # about what a first clause says: a dub in chunks is due by its deadline only that far


def first_share(text: str) -> float:
    """The share of a dub in chunks that must be out by the deadline: its first clause, about."""
    return min(1.0, FIRST_CLAUSE_CHARS / max(1, len(text)))


def clamp_ratio(predicted_s: float, slot: Slot, fit: Fit) -> float:
    """The time-stretch of every chunk of a dub: the one that brings its predicted length to the speech span,
    within the caps (chunks cannot be stretched as a whole: they are out before the last is made)."""
    if predicted_s <= 0 or slot.span_s <= 0:
        return 1.0
    return min(fit.max_speedup, max(1.0 / fit.max_slowdown, predicted_s / slot.span_s))


def stretch_to(speech: Speech, rate: int, ratio: float, fit: Fit) -> FloatAudio:
    """`speech` at the utterance's `rate`, played `ratio` times faster (pitch kept), within the fit's caps."""
    audio = resample(speech.audio, speech.sample_rate, rate)
    ratio = min(fit.max_speedup, max(1.0 / fit.max_slowdown, ratio))
    if abs(ratio - 1.0) < 0.01 or len(audio) == 0:
        return audio
    return fit_duration(audio, rate, max(1, round(len(audio) / ratio)), fit.max_speedup, fit.max_slowdown).audio


def _said(language: str) -> Transcript:
    return Transcript(LANGUAGES[language].warmup, language)


def _slot(span_s: float) -> Slot:
    return Slot(start_s=0.0, span_s=span_s, room_s=span_s + 0.5)


def _as_stage(stage: Stage, call: Callable[[], T]) -> T:
    """Run one stage; any exception becomes a StageFailed of that stage."""
    try:
        return call()
    except StageFailed:
        raise
    except Exception as exc:
        retryable = exc.retryable if isinstance(exc, BackendError) else True  # others may be transient: retry
        raise StageFailed(stage, f"{type(exc).__name__}: {exc}", retryable) from exc


__all__ = ["STAGES", "DubEngine", "TargetDub"]
