"""The engine's stages: small objects with one job each and typed input and output.

    Recognise:  Utterance            -> Transcript   (ASRBackend, window by window)
    Place:      Transcript           -> Slot         (where the speech is, how far the dub may run)
    Translate:  Transcript           -> Translation  (Translator)
    Synthesise: Translation + Slot   -> Speech       (VoiceBank: the voice asked for, at a rate chosen from the text)
    Fit:        Speech + Slot        -> FittedDub    (time-stretch towards the span, placed at the speech start)

Backend exceptions propagate; the engine maps them to `StageFailed` of the stage that raised them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

import numpy as np

from livedub.dubbing.audio import (
    fit_duration,
    place,
    resample,
)
from livedub.dubbing.interfaces import (
    NO_CONTEXT,
    ASRBackend,
    ClauseTranslator,
    FloatAudio,
    TranslationContext,
    Translator,
    TTSBackend,
)
from livedub.dubbing.pacing import SpeakingPace, choose_speed
from livedub.dubbing.translate.base import split_clauses
from livedub.dubbing.tts.bank import ANY_LANGUAGE, UnknownVoiceError, VoiceBank
from livedub.dubbing.values import (
    FitStatus,
    FittedDub,
    Slot,
    Speech,
    StageFailed,
    Transcript,
    Translation,
    Utterance,
)
from livedub.languages import VoiceRef

ASR_WINDOW_S = 28.0  # Whisper decodes 30 s windows; longer utterances are transcribed window by window
SILENCE_THRESHOLD = 1e-3  # amplitude under which TTS output counts as leading/trailing silence
MIN_SPEECH_S = 0.3  # a shorter ASR span is not a usable duration reference


class Recognise:
    stage = "asr"

    def __init__(self, asr: ASRBackend) -> None:
        self.asr = asr

    def __call__(self, utterance: Utterance, language: str) -> Transcript:
        rate = self.asr.sample_rate
        audio = resample(utterance.audio, utterance.sample_rate, rate)
        window = int(ASR_WINDOW_S * rate)
        if len(audio) <= window:
            return self.asr.transcribe(audio, language)
        texts: list[str] = []
        segments: list[tuple[float, float, str]] = []
        for start in range(0, len(audio), window):
            part = self.asr.transcribe(audio[start : start + window], language)
            offset = start / rate
            segments += [(s + offset, e + offset, text) for s, e, text in part.segments]
            texts += [part.text] if part.text else []
        return Transcript(text=" ".join(texts), language=language, segments=segments)


class Place:
    """The slot of the dub: the recognised speech (first segment start to last segment end), clamped to the
    utterance; the whole utterance when the ASR gave no usable timing."""

    stage = "place"

    def __call__(self, transcript: Transcript, duration_s: float, overrun_s: float = 0.0) -> Slot:
        start, end = 0.0, duration_s
        if transcript.segments:
            start = min(max(0.0, transcript.segments[0][0]), duration_s)
            end = min(max(start, transcript.segments[-1][1]), duration_s)
            if end - start < MIN_SPEECH_S:
                start, end = 0.0, duration_s
        return Slot(start_s=start, span_s=end - start, room_s=duration_s - start, overrun_s=max(0.0, overrun_s))


class Translate:
    stage = "translation"

    def __init__(self, translators: dict[tuple[str, str], Translator]) -> None:
        self.translators = translators

    def __call__(self, transcript: Transcript, target: str, context: TranslationContext = NO_CONTEXT) -> Translation:
        translator = self.translators[(transcript.language, target)]
        text = translator.translate(transcript.text, transcript.language, target, context).strip()
        if not text:
            raise StageFailed(self.stage, "empty translation", retryable=True)
        return Translation(text=text, language=target)

    def clauses(self, transcript: Transcript, target: str, context: TranslationContext = NO_CONTEXT) -> Iterator[str]:
        """The translation clause by clause: as the translator makes them where it declares it can (`streaming`: a
        `ClauseTranslator`, with "" while it writes one), else its whole translation split into clauses."""
        translator = self.translators[(transcript.language, target)]
        if translator.capabilities.streaming:
            streaming = cast(ClauseTranslator, translator)  # what `streaming` declares
            produced: Iterable[str] = streaming.translate_clauses(transcript.text, transcript.language, target, context)
        else:
            produced = split_clauses(translator.translate(transcript.text, transcript.language, target, context))
        said = False
        for clause in produced:
            said = said or bool(clause.strip())
            yield clause.strip()  # "" while a clause is being written: a moment the caller may stop it
        if not said:
            raise StageFailed(self.stage, "empty translation", retryable=True)


class Synthesise:
    """One synthesis per phrase, in the voice asked for (the language's default when none is, or when the name is
    not one of its voices). A voice that declares `speaking_rate` is asked for the rate that makes the dub last the
    speech span, predicted from the text by that voice's learnt pace (each synthesis refines it)."""

    stage = "tts"

    def __init__(self, tts: VoiceBank | TTSBackend, pace: SpeakingPace | None = None, language: str = ANY_LANGUAGE):
        """`tts`: the voice bank, or one backend (its default voice, any language); `pace`: the default voice's
        pace to start from."""
        self.voices = tts if isinstance(tts, VoiceBank) else VoiceBank.of({ANY_LANGUAGE: tts})
        self.language = language
        self._paces: dict[VoiceRef, SpeakingPace] = {}
        if pace is not None:
            self.pace = pace

    @property
    def tts(self) -> TTSBackend:
        """The backend of the default voice."""
        return self.voices.backend(self.language)

    @property
    def pace(self) -> SpeakingPace:
        """The default voice's learnt pace."""
        return self.pace_of(self.voices.default(self.language))

    @pace.setter
    def pace(self, pace: SpeakingPace) -> None:
        self._paces[self.voices.default(self.language)] = pace

    def pace_of(self, voice: VoiceRef) -> SpeakingPace:
        return self._paces.setdefault(voice, SpeakingPace())

    def voice(self, language: str, voice: VoiceRef | str | None) -> VoiceRef:
        """The voice that will speak: `voice` when it is one of the language's, else the default (a client's
        voice_profile is a wish, not a requirement)."""
        try:
            return self.voices.resolve(language, voice)
        except UnknownVoiceError:
            return self.voices.default(language)

    def predicted_s(self, translation: Translation, slot: Slot, voice: VoiceRef | str | None = None) -> float:
        """How long the speech will be (its voice's pace, at the rate it will be asked for)."""
        ref = self.voice(translation.language, voice)
        return self.pace_of(ref).predict_s(translation.text, self._speed(translation, slot, ref))

    def speed_for(self, translation: Translation, slot: Slot, ref: VoiceRef) -> float:
        """The rate `ref` will be asked for to make `translation` last the slot's span (1 without rate control)."""
        return self._speed(translation, slot, ref)

    def _speed(self, translation: Translation, slot: Slot, ref: VoiceRef) -> float:
        rated = self.voices.capabilities(translation.language, ref).speaking_rate
        return choose_speed(self.pace_of(ref).predict_s(translation.text), slot) if rated else 1.0

    def __call__(
        self, translation: Translation, slot: Slot, voice: VoiceRef | str | None = None, speed: float | None = None
    ) -> Speech:
        """`speed`: the rate to ask for (a clause of a longer dub: the whole dub's rate); default: the one that
        makes `translation` last the slot's span."""
        language = translation.language
        ref = self.voice(language, voice)
        pace = self.pace_of(ref)
        if speed is None or not self.voices.capabilities(language, ref).speaking_rate:
            speed = self._speed(translation, slot, ref)
        voiced = self.voices.synthesize(translation.text, language, ref, speed)
        audio = trim_silence(voiced.audio)
        if len(audio) == 0:
            raise StageFailed(self.stage, "synthesiser produced no audio", retryable=True)
        speech = Speech(audio=audio, sample_rate=voiced.sample_rate, speed=voiced.speed, voice=str(ref))
        pace.observe(translation.text, speech.duration_s, voiced.speed)
        return speech


class Fit:
    """Time-stretch the speech towards its span (within the caps) and place it at the speech start.

    Without overrun the result is exactly the utterance's length (the seed's rule); with overrun it is as long as
    the dub needs, at most the utterance plus the overrun.
    """

    stage = "fit"

    def __init__(self, max_speedup: float, max_slowdown: float) -> None:
        self.max_speedup = max_speedup
        self.max_slowdown = max_slowdown

    def __call__(self, speech: Speech, slot: Slot, utterance: Utterance) -> FittedDub:
        rate = utterance.sample_rate
        audio = resample(speech.audio, speech.sample_rate, rate)
        target_s = fit_target(len(audio) / rate, slot.span_s, slot.limit_s, self.max_speedup)
        fit = fit_duration(audio, rate, max(1, round(target_s * rate)), self.max_speedup, self.max_slowdown)
        start = round(slot.start_s * rate)
        total = dub_samples(utterance, slot, start + len(fit.audio))
        return FittedDub(
            audio=place(fit.audio, total, start),
            sample_rate=rate,
            speech_s=len(fit.audio) / rate,
            target_s=target_s,
            speed_ratio=fit.speed_ratio,
            variance_percent=fit.variance_percent,
            status=FitStatus(fit.status.value),  # the one success/partial/failed rule: sts.audio.duration_status
        )


def dub_samples(utterance: Utterance, slot: Slot, speech_end: int) -> int:
    """How long a dub whose speech ends at sample `speech_end` is: the utterance's length, or with overrun as long
    as the speech needs, at most the utterance plus the overrun."""
    total = len(utterance.audio)
    if slot.overrun_s > 0:
        total = min(total + round(slot.overrun_s * utterance.sample_rate), max(total, speech_end))
    return total


def silence(utterance: Utterance) -> FittedDub:
    """The dub of an utterance without speech: silence of its length."""
    return FittedDub(
        audio=np.zeros(len(utterance.audio), dtype=np.float32),
        sample_rate=utterance.sample_rate,
        speech_s=0.0,
        target_s=0.0,
        speed_ratio=1.0,
        variance_percent=0.0,
        status=FitStatus.SUCCESS,
    )


def fit_target(dub_s: float, span_s: float, limit_s: float, max_speedup: float) -> float:
    """Length to fit the dub to: the speech span when the capped speed-up reaches it, else as much of the room
    (span start to the utterance end, plus any overrun) as the capped speed-up needs."""
    if dub_s <= span_s * max_speedup:
        return span_s
    return min(limit_s, dub_s / max_speedup)


def trim_silence(audio: FloatAudio) -> FloatAudio:
    """Drop the synthesiser's leading/trailing silence so that only speech is fitted."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE_THRESHOLD)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio[:0]
