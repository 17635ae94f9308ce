"""The engine's stages: small objects with one job each and typed input and output.

    Recognise:  Utterance            -> Transcript   (ASRBackend, window by window)
    Place:      Transcript           -> Slot         (where the speech is, how far the dub may run)
    Translate:  Transcript           -> Translation  (Translator)
    Synthesise: Translation + Slot   -> Speech       (TTSBackend, one synthesis at a rate chosen from the text)
    Fit:        Speech + Slot        -> FittedDub    (time-stretch towards the span, placed at the speech start)

Backend exceptions propagate; the engine maps them to `StageFailed` of the stage that raised them.
"""

from __future__ import annotations

import inspect

import numpy as np

from livedub.sts.audio import (
    fit_duration,
    place,
    resample,
)
from livedub.sts.engine.pacing import SpeakingPace, choose_speed
from livedub.sts.engine.values import (
    FitStatus,
    FittedDub,
    Slot,
    Speech,
    StageFailed,
    Transcript,
    Translation,
    Utterance,
)
from livedub.sts.interfaces import ASRBackend, FloatAudio, Translator, TTSBackend

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

    def __call__(self, transcript: Transcript, target: str) -> Translation:
        translator = self.translators[(transcript.language, target)]
        text = translator.translate(transcript.text, transcript.language, target).strip()
        if not text:
            raise StageFailed(self.stage, "empty translation", retryable=True)
        return Translation(text=text, language=target)


class Synthesise:
    """One synthesis per phrase. A synthesiser that takes a `speed` is asked for the rate that makes the dub last
    the speech span, predicted from the text by the voice's learnt pace (each synthesis refines it)."""

    stage = "tts"

    def __init__(self, tts: TTSBackend, pace: SpeakingPace | None = None) -> None:
        self.tts = tts
        self.pace = pace or SpeakingPace()
        self.has_speed = "speed" in inspect.signature(tts.synthesize).parameters

    def __call__(self, translation: Translation, slot: Slot, voice: str = "default") -> Speech:
        speed = choose_speed(self.pace.predict_s(translation.text), slot) if self.has_speed else 1.0
        if speed == 1.0:
            raw = self.tts.synthesize(translation.text, translation.language, voice)
        else:
            raw = self.tts.synthesize(translation.text, translation.language, voice, speed=speed)  # type: ignore[call-arg]
        audio = trim_silence(np.asarray(raw, dtype=np.float32))
        if len(audio) == 0:
            raise StageFailed(self.stage, "synthesiser produced no audio", retryable=True)
        speech = Speech(audio=audio, sample_rate=self.tts.sample_rate, speed=speed)
        self.pace.observe(translation.text, speech.duration_s, speed)
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
        total = len(utterance.audio)
        if slot.overrun_s > 0:
            total = min(total + round(slot.overrun_s * rate), max(total, start + len(fit.audio)))
        return FittedDub(
            audio=place(fit.audio, total, start),
            sample_rate=rate,
            speech_s=len(fit.audio) / rate,
            target_s=target_s,
            speed_ratio=fit.speed_ratio,
            variance_percent=fit.variance_percent,
            status=FitStatus(fit.status.value),  # the one success/partial/failed rule: sts.audio.duration_status
        )


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
