"""The per-fragment STS pipeline: decode → ASR → translation → TTS → duration fit → encode.

`DubbingPipeline` runs the real models; `EchoPipeline` returns each fragment's audio unchanged (A/V tests).
Both implement `livedub.sts.interfaces.FragmentProcessor`; `build_processor(settings)` picks one.

Duration rule: the dub replaces the speech the ASR found in the fragment (first segment start to last segment end).
It is time-stretched towards that span (speed-up capped by STS_MAX_SPEEDUP, slow-down by STS_MAX_SLOWDOWN), placed
where the speech started and padded/trimmed to exactly the fragment's length. A dub that cannot reach the span
within the speed-up cap may run on into the pause after the speech, up to the fragment's end (the room); a
synthesiser that can speak faster or slower is asked to first, since natural prosody beats a large time-stretch.
The remaining variance against the target (span, or room when it spills) sets the status: success within ±10 %,
partial within ±20 %, failed beyond. `metadata` carries the fragment's
duration (`original_duration_ms`), the returned audio's (`dubbed_duration_ms`, always equal), the variance and the
speed ratio, plus `speech_duration_ms` and `dubbed_speech_duration_ms` (what the variance compares).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from livedub.protocol import (
    AudioPayload,
    ErrorCode,
    FragmentData,
    FragmentError,
    FragmentMetadata,
    FragmentProcessed,
    FragmentStatus,
    StageTimings,
    StreamConfig,
)
from livedub.sts.audio import decode_audio, encode_audio, fit_duration, place, resample
from livedub.sts.interfaces import (
    ASRBackend,
    FloatAudio,
    FragmentProcessor,
    InvalidAudioError,
    Transcript,
    Translator,
    TTSBackend,
    UnsupportedLanguageError,
)
from livedub.sts.settings import StsSettings

log = logging.getLogger(__name__)

SUPPORTED_PAIRS: tuple[tuple[str, str], ...] = (("en", "es"), ("es", "en"))
ASR_WINDOW_S = 28.0  # Whisper decodes 30 s windows; longer fragments are transcribed window by window
SILENCE_THRESHOLD = 1e-3  # amplitude under which TTS output counts as leading/trailing silence
MIN_SPEECH_S = 0.3  # a shorter ASR span is not a usable duration reference
MIN_TTS_SPEED = 0.75  # slowest speaking rate asked of a synthesiser (then time-stretch may slow it further)
MAX_TTS_SPEED = 1.25  # fastest speaking rate asked of a synthesiser (then time-stretch may speed it up further)

T = TypeVar("T")


class StageError(Exception):
    """A failed stage, already mapped to its protocol error."""

    def __init__(self, stage: str, code: ErrorCode, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.error = FragmentError(stage=stage, code=code, message=message, retryable=retryable)  # type: ignore[arg-type]


@dataclass
class _DecodedFragment:
    native: FloatAudio  # mono, at the payload's sample rate: the length the dub must have
    sample_rate: int


def _decode(fragment: FragmentData) -> _DecodedFragment:
    payload = fragment.audio
    try:
        data = payload.decode_bytes()
        native = decode_audio(data, payload.format, payload.sample_rate_hz, payload.channels, payload.sample_rate_hz)
    except InvalidAudioError as exc:
        raise StageError("decode", ErrorCode.INVALID_AUDIO_FORMAT, str(exc), retryable=False) from exc
    except ValueError as exc:  # bad base64
        raise StageError("decode", ErrorCode.INVALID_AUDIO_FORMAT, str(exc), retryable=False) from exc
    rate = payload.sample_rate_hz
    if payload.duration_ms > 0:
        # m4a decodes to up to one AAC frame (1024 samples) more than was encoded: keep the declared length when
        # it is close (5 %, 50 ms or two frames); otherwise the payload does not match its declared duration.
        declared = round(payload.duration_ms * rate / 1000)
        if abs(declared - len(native)) > max(0.05 * declared, 0.05 * rate, 2048):
            raise StageError(
                "decode",
                ErrorCode.INVALID_AUDIO_FORMAT,
                f"audio decodes to {len(native) / rate * 1000:.0f} ms, declared {payload.duration_ms:.0f} ms",
                retryable=False,
            )
        native = np.pad(native, (0, max(0, declared - len(native))))[:declared]
    return _DecodedFragment(native=native, sample_rate=rate)


def _trim_silence(audio: FloatAudio) -> FloatAudio:
    """Drop the synthesiser's leading/trailing silence so that only speech is fitted."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE_THRESHOLD)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio[:0]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


class EchoPipeline:
    """Returns each fragment's own audio as its dub (status success): for A/V sync tests without models."""

    def check_languages(self, source: str, target: str) -> None:
        if not source or not target:
            raise UnsupportedLanguageError("source and target language are required")

    def process(self, fragment: FragmentData, config: StreamConfig) -> FragmentProcessed:
        started = time.perf_counter()
        try:
            decoded = _decode(fragment)  # validates the audio like the real pipeline does
        except StageError as exc:
            return _failed(fragment, exc.error, started)
        duration_ms = _ms(len(decoded.native) / decoded.sample_rate)
        return FragmentProcessed(
            fragment_id=fragment.fragment_id,
            stream_id=fragment.stream_id,
            sequence_number=fragment.sequence_number,
            status=FragmentStatus.SUCCESS,
            dubbed_audio=fragment.audio,
            processing_time_ms=_ms(time.perf_counter() - started),
            metadata=FragmentMetadata(
                original_duration_ms=duration_ms, dubbed_duration_ms=duration_ms, duration_variance_percent=0.0
            ),
        )

    def warmup(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"pipeline": "echo", "loaded": True, "supported_pairs": ["*"]}


def _failed(fragment: FragmentData, error: FragmentError, started: float, **fields: Any) -> FragmentProcessed:
    return FragmentProcessed(
        fragment_id=fragment.fragment_id,
        stream_id=fragment.stream_id,
        sequence_number=fragment.sequence_number,
        status=FragmentStatus.FAILED,
        error=error,
        processing_time_ms=_ms(time.perf_counter() - started),
        **fields,
    )


class DubbingPipeline:
    """ASR → translation → TTS with the backends the settings name, loaded once and shared by every stream.

    Backends can be injected (tests); the rest are built from the settings on first use or by `warmup()`.
    Each backend serialises its own inference with a lock, so several worker threads may call `process`.
    """

    def __init__(
        self,
        settings: StsSettings | None = None,
        *,
        asr: ASRBackend | None = None,
        translators: dict[tuple[str, str], Translator] | None = None,
        tts: dict[str, TTSBackend] | None = None,
        pairs: tuple[tuple[str, str], ...] = SUPPORTED_PAIRS,
    ) -> None:
        """`pairs` limits the served (and loaded) directions, e.g. to one for `livedub dub-file`."""
        unknown = set(pairs) - set(SUPPORTED_PAIRS)
        if unknown:
            raise UnsupportedLanguageError(f"unsupported language pairs {sorted(unknown)}")
        self.pairs = tuple(pairs)
        self.settings = settings or StsSettings()
        self._asr = asr
        self._translators: dict[tuple[str, str], Translator] = dict(translators or {})
        self._tts: dict[str, TTSBackend] = dict(tts or {})
        self._load_lock = threading.Lock()
        self._loaded = False
        self._warm = False

    # ------------------------------------------------------------------ models

    def _translator_kind(self, source: str, target: str) -> str:
        return {("en", "es"): self.settings.translator_en_es, ("es", "en"): self.settings.translator_es_en}[
            (source, target)
        ]

    def _tts_kind(self, language: str) -> str:
        return {"en": self.settings.tts_en, "es": self.settings.tts_es}[language]

    def load(self) -> None:
        """Build every backend the settings name (once; shared instances where two directions use the same one)."""
        with self._load_lock:
            if self._loaded:
                return
            from livedub.sts import asr, translate, tts
            from livedub.sts.model_files import cpu_threads, resolve_model, resolve_model_dir

            s = self.settings
            threads = cpu_threads(s.cpu_threads)
            if self._asr is None:
                self._asr = asr.WhisperASR(
                    resolve_model_dir(s.asr_model), s.asr_device, s.asr_beam_size, s.asr_vad, threads
                )
            translator_by_kind: dict[str, Translator] = {}
            tts_by_kind: dict[str, TTSBackend] = {}
            builders: dict[str, Callable[[], Any]] = {
                "llm": lambda: translate.LlmTranslator(resolve_model(s.llm_model), s.llm_context, threads),
                "apertium": lambda: translate.ApertiumTranslator(s.apertium_binary),
                "deepl": lambda: translate.DeepLTranslator(s.deepl_api_key, s.deepl_api_url),
                "piper": lambda: tts.PiperTTS(resolve_model(s.piper_voice)),
                "kokoro": lambda: tts.KokoroTTS(resolve_model_dir(s.kokoro_model), s.kokoro_voice, cpu_threads=threads),
                "espeak-ng": lambda: tts.EspeakTTS(s.espeak_binary),
            }
            for pair in self.pairs:
                if pair not in self._translators:
                    kind = self._translator_kind(*pair)
                    self._translators[pair] = _shared(translator_by_kind, kind, builders[kind])
            for language in {target for _, target in self.pairs}:
                if language not in self._tts:
                    kind = self._tts_kind(language)
                    self._tts[language] = _shared(tts_by_kind, kind, builders[kind])
            self._loaded = True
            log.info("STS models loaded: %s", self.describe())

    def warmup(self) -> None:
        """Load the models and run each once (the first inference of a model is slow)."""
        self.load()
        assert self._asr is not None
        for (source, target), translator in self._translators.items():
            translator.translate("Hello." if source == "en" else "Hola.", source, target)
        for language, backend in self._tts.items():
            sample = backend.synthesize("Hello, thank you." if language == "en" else "Hola, gracias.", language)
        self._asr.transcribe(resample(sample, backend.sample_rate, self._asr.sample_rate), language)
        self._warm = True

    def describe(self) -> dict[str, Any]:
        return {
            "pipeline": "dub",
            "loaded": self._loaded,
            "warm": self._warm,
            "asr": getattr(self._asr, "name", self.settings.asr_model),
            "translators": {
                f"{s}-{t}": getattr(self._translators.get((s, t)), "name", self._translator_kind(s, t))
                for s, t in self.pairs
            },
            "tts": {
                lang: getattr(self._tts.get(lang), "name", self._tts_kind(lang))
                for lang in sorted({t for _, t in self.pairs})
            },
            "supported_pairs": [f"{s}-{t}" for s, t in self.pairs],
            "max_speedup": self.settings.max_speedup,
        }

    # ------------------------------------------------------------------ processing

    def check_languages(self, source: str, target: str) -> None:
        if (source, target) not in self.pairs:
            supported = ", ".join(f"{s}->{t}" for s, t in self.pairs)
            raise UnsupportedLanguageError(f"unsupported language pair {source}->{target}; supported: {supported}")

    def process(self, fragment: FragmentData, config: StreamConfig) -> FragmentProcessed:
        started = time.perf_counter()
        timings = StageTimings()
        transcript: Transcript | None = None
        translated: str | None = None
        try:
            self.check_languages(config.source_language, config.target_language)
        except UnsupportedLanguageError as exc:
            error = FragmentError(stage="pipeline", code=ErrorCode.UNSUPPORTED_LANGUAGE, message=str(exc))
            return _failed(fragment, error, started)
        try:
            decoded = _decode(fragment)
            _run_stage("pipeline", ErrorCode.INTERNAL_ERROR, self.load)
            assert self._asr is not None
            original_s = len(decoded.native) / decoded.sample_rate

            stage_started = time.perf_counter()
            transcript = _run_stage(
                "asr", ErrorCode.ASR_FAILED, lambda: self._transcribe(decoded, config.source_language)
            )
            timings.asr_ms = _ms(time.perf_counter() - stage_started)
            if not transcript.text.strip():
                return self._silence(fragment, decoded, timings, started)

            stage_started = time.perf_counter()
            translator = self._translators[(config.source_language, config.target_language)]
            translated = _run_stage(
                "translation",
                ErrorCode.TRANSLATION_FAILED,
                lambda: translator.translate(transcript.text, config.source_language, config.target_language),
            )
            timings.translation_ms = _ms(time.perf_counter() - stage_started)
            if not translated.strip():
                raise StageError("translation", ErrorCode.TRANSLATION_FAILED, "empty translation", retryable=True)

            stage_started = time.perf_counter()
            tts = self._tts[config.target_language]
            span_start_s, span_s = _speech_span(transcript, original_s)
            room_s = original_s - span_start_s
            speech = self._synthesize(tts, translated, config.target_language, config.voice_profile, span_s, room_s)
            timings.tts_ms = _ms(time.perf_counter() - stage_started)

            # Fit the dub to the speech it replaces, at the fragment's own sample rate.
            speech = resample(speech, tts.sample_rate, decoded.sample_rate)
            target_s = fit_target(len(speech) / decoded.sample_rate, span_s, room_s, self.settings.max_speedup)
            fit = fit_duration(
                speech,
                decoded.sample_rate,
                max(1, round(target_s * decoded.sample_rate)),
                self.settings.max_speedup,
                self.settings.max_slowdown,
            )
            dub = place(fit.audio, len(decoded.native), round(span_start_s * decoded.sample_rate))
            dubbed_audio = self._encode(fragment, dub, decoded.sample_rate)
        except StageError as exc:
            if exc.error.stage != "decode":
                log.warning("fragment %s failed at %s: %s", fragment.fragment_id, exc.error.stage, exc.error.message)
            return _failed(
                fragment,
                exc.error,
                started,
                transcript=transcript.text if transcript else None,
                translated_text=translated,
                stage_timings=timings,
            )

        status = fit.status
        error = None
        if status is FragmentStatus.FAILED:
            error = FragmentError(
                stage="fit",
                code=ErrorCode.TTS_SYNTHESIS_FAILED,
                message=f"dub is {fit.variance_percent:+.0f} % off the speech duration after a {fit.speed_ratio:.2f}x "
                f"time-stretch (limits: {self.settings.max_speedup}x faster, {self.settings.max_slowdown}x slower)",
                retryable=False,
            )
        return FragmentProcessed(
            fragment_id=fragment.fragment_id,
            stream_id=fragment.stream_id,
            sequence_number=fragment.sequence_number,
            status=status,
            dubbed_audio=dubbed_audio,
            transcript=transcript.text,
            translated_text=translated,
            processing_time_ms=_ms(time.perf_counter() - started),
            stage_timings=timings,
            error=error,
            metadata=FragmentMetadata(
                original_duration_ms=_ms(original_s),
                dubbed_duration_ms=_ms(len(dub) / decoded.sample_rate),
                duration_variance_percent=round(fit.variance_percent, 1),
                speed_ratio=round(fit.speed_ratio, 3),
                speech_duration_ms=_ms(span_s),  # type: ignore[call-arg]
                dubbed_speech_duration_ms=_ms(len(fit.audio) / decoded.sample_rate),  # type: ignore[call-arg]
            ),
        )

    def _synthesize(
        self, tts: TTSBackend, text: str, language: str, voice: str, target_s: float, room_s: float
    ) -> FloatAudio:
        """Synthesise without the synthesiser's edge silence. When the backend can change its speaking rate, a dub
        much shorter than the speech it replaces is spoken again more slowly, and one that would not fit the room
        even at the speed-up cap is spoken again faster (natural prosody beats a large time-stretch)."""

        def speak(speed: float) -> FloatAudio:
            def call() -> FloatAudio:
                if speed == 1.0:
                    return tts.synthesize(text, language, voice)
                return tts.synthesize(text, language, voice, speed=speed)  # type: ignore[call-arg]

            audio = _trim_silence(np.asarray(_run_stage("tts", ErrorCode.TTS_SYNTHESIS_FAILED, call), np.float32))
            if len(audio) == 0:
                raise StageError("tts", ErrorCode.TTS_SYNTHESIS_FAILED, "synthesiser produced no audio", True)
            return audio

        speech = speak(1.0)
        if "speed" not in inspect.signature(tts.synthesize).parameters:
            return speech
        natural_s = len(speech) / tts.sample_rate
        if natural_s / target_s < 1.0 / self.settings.max_slowdown:
            speech = speak(max(MIN_TTS_SPEED, natural_s / target_s))
        elif natural_s / room_s > self.settings.max_speedup:
            speech = speak(min(MAX_TTS_SPEED, natural_s / (room_s * self.settings.max_speedup)))
        return speech

    def _transcribe(self, decoded: _DecodedFragment, language: str) -> Transcript:
        assert self._asr is not None
        rate = self._asr.sample_rate
        audio = resample(decoded.native, decoded.sample_rate, rate)
        window = int(ASR_WINDOW_S * rate)
        if len(audio) <= window:
            return self._asr.transcribe(audio, language)
        texts: list[str] = []
        segments: list[tuple[float, float, str]] = []
        for start in range(0, len(audio), window):
            part = self._asr.transcribe(audio[start : start + window], language)
            offset = start / rate
            segments += [(s + offset, e + offset, text) for s, e, text in part.segments]
            texts += [part.text] if part.text else []
        return Transcript(text=" ".join(texts), language=language, segments=segments)

    def _silence(
        self, fragment: FragmentData, decoded: _DecodedFragment, timings: StageTimings, started: float
    ) -> FragmentProcessed:
        duration_ms = _ms(len(decoded.native) / decoded.sample_rate)
        silence = np.zeros(len(decoded.native), dtype=np.float32)
        return FragmentProcessed(
            fragment_id=fragment.fragment_id,
            stream_id=fragment.stream_id,
            sequence_number=fragment.sequence_number,
            status=FragmentStatus.SUCCESS,
            dubbed_audio=self._encode(fragment, silence, decoded.sample_rate),
            transcript="",
            translated_text="",
            processing_time_ms=_ms(time.perf_counter() - started),
            stage_timings=timings,
            metadata=FragmentMetadata(original_duration_ms=duration_ms, dubbed_duration_ms=duration_ms),
        )

    @staticmethod
    def _encode(fragment: FragmentData, audio: FloatAudio, sample_rate: int) -> AudioPayload:
        payload = fragment.audio
        try:
            data = encode_audio(audio, sample_rate, payload.format, payload.channels)
        except Exception as exc:
            raise StageError("encode", ErrorCode.INTERNAL_ERROR, f"encoding the dub failed: {exc}", True) from exc
        return AudioPayload.from_bytes(
            data,
            format=payload.format,
            sample_rate_hz=sample_rate,
            channels=payload.channels,
            duration_ms=_ms(len(audio) / sample_rate),
        )


def fit_target(dub_s: float, span_s: float, room_s: float, max_speedup: float) -> float:
    """Length to fit the dub to: the speech span when the capped speed-up reaches it, else as much of the room
    (span start to fragment end) as the capped speed-up needs."""
    if dub_s <= span_s * max_speedup:
        return span_s
    return min(room_s, dub_s / max_speedup)


def _speech_span(transcript: Transcript, duration_s: float) -> tuple[float, float]:
    """(start, length) in seconds of the recognised speech, clamped to the fragment; whole fragment if unknown."""
    if not transcript.segments:
        return 0.0, duration_s
    start = min(max(0.0, transcript.segments[0][0]), duration_s)
    end = min(max(start, transcript.segments[-1][1]), duration_s)
    if end - start < MIN_SPEECH_S:
        return 0.0, duration_s
    return start, end - start


def _run_stage(stage: str, code: ErrorCode, call: Callable[[], T]) -> T:
    """Run one model stage; any exception becomes that stage's protocol error."""
    try:
        return call()
    except StageError:
        raise
    except Exception as exc:
        retryable = bool(getattr(exc, "retryable", True))  # unknown failures may be transient: let the client retry
        raise StageError(stage, code, f"{type(exc).__name__}: {exc}", retryable) from exc


def _shared(cache: dict[str, Any], kind: str, build: Callable[[], Any]) -> Any:
    if kind not in cache:
        cache[kind] = build()
    return cache[kind]


def build_processor(settings: StsSettings | None = None) -> FragmentProcessor:
    """The processor STS_PIPELINE names. Models load on `warmup()` (or on the first fragment)."""
    settings = settings or StsSettings()
    if settings.pipeline == "echo":
        return EchoPipeline()
    return DubbingPipeline(settings)
