"""The STS edge of the dubbing engine: fragment payloads in, `fragment:processed` out.

`DubbingPipeline` decodes a fragment's audio, runs the engine (`livedub.dubbing`: ASR → translation → TTS →
fit) and maps the engine's typed answer, or its failure, to the protocol; `EchoPipeline` returns each fragment's
audio unchanged (A/V tests). Both implement `livedub.sts.processor.FragmentProcessor`; `build_processor(settings)`
picks one.

Duration rule (the engine's `Fit`): the dub replaces the speech the ASR found in the fragment (first segment start
to last segment end). The synthesiser is asked for the speaking rate that makes it last that span (predicted from
the text), then the dub is time-stretched towards the span (speed-up capped by STS_MAX_SPEEDUP, slow-down by
STS_MAX_SLOWDOWN) and placed where the speech started. A dub that cannot reach the span within the cap runs on into
the pause after the speech, up to the fragment's end, and with `dub_overrun_ms` up to that much past it. The
returned audio is exactly the fragment's length when `dub_overrun_ms` is 0 (the seed's rule), else as long as the
dub needs (at most fragment + overrun). The remaining variance against the target (span, or room when it spills)
sets the status: success within ±10 %, partial within ±20 %, failed beyond. `metadata` carries the fragment's
duration (`original_duration_ms`), the returned audio's (`dubbed_duration_ms`), the variance and the speed ratio,
plus `speech_duration_ms` and `dubbed_speech_duration_ms` (what the variance compares).

Each target's translation gets the stream's context (`TranslationContext`): its last phrases in that direction
(`PhraseMemory`, only those translated, forgotten at stream end: `end_stream`) and its glossary (STS_GLOSSARY_FILE
merged with the stream's `config.glossary`, the stream's entry winning for the same term).

A `Deadline` bounds each fragment: before every stage the engine compares the time left with what the remaining
stages are expected to cost, and work that cannot be on time is answered at once with TIMEOUT (retryable).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from livedub.deadline import NO_DEADLINE, Deadline
from livedub.dubbing import Dub, DubEngine, DubProgress, StageFailed, TooLate, Utterance, fit_target
from livedub.dubbing.chunks import DubChunk as EngineChunk
from livedub.dubbing.glossary import merge
from livedub.dubbing.interfaces import ASRBackend, FloatAudio, TranslationContext, Translator, TTSBackend
from livedub.dubbing.speaker import EmbedderMissingError, SpeakerEmbedder
from livedub.dubbing.values import TRANSLATION_STAGES, VOICE_STAGES, Stage, seconds_of, step_of
from livedub.dubbing.voices import VoicePicker
from livedub.languages import UnsupportedLanguageError, parse_pair, supported_pairs
from livedub.protocol import (
    AudioPayload,
    DubChunk,
    ErrorCode,
    ErrorStage,
    FragmentData,
    FragmentError,
    FragmentMetadata,
    FragmentProcessed,
    FragmentStatus,
    StageTimings,
    StreamConfig,
    is_error_stage,
)
from livedub.sts.backends import load_engine
from livedub.sts.glossary_file import stream_entries
from livedub.sts.payload_audio import InvalidAudioError, decode_audio, encode_audio
from livedub.sts.processor import FragmentProcessor
from livedub.sts.session import PhraseMemory
from livedub.sts.settings import StsSettings

log = logging.getLogger(__name__)

SUPPORTED_PAIRS: tuple[tuple[str, str], ...] = supported_pairs()  # every pair of the language table

# The protocol error of each engine stage.
STAGE_ERRORS: dict[ErrorStage, ErrorCode] = {
    "asr": ErrorCode.ASR_FAILED,
    "translation": ErrorCode.TRANSLATION_FAILED,
    "tts": ErrorCode.TTS_SYNTHESIS_FAILED,
    "fit": ErrorCode.INTERNAL_ERROR,
    "timeout": ErrorCode.TIMEOUT,
}

__all__ = ["SUPPORTED_PAIRS", "DubbingPipeline", "EchoPipeline", "build_processor", "fit_target"]


class StageError(Exception):
    """A failed stage at the edge (decode, encode, loading), already mapped to its protocol error."""

    def __init__(self, stage: ErrorStage, code: ErrorCode, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.error = FragmentError(stage=stage, code=code, message=message, retryable=retryable)


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


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


class EchoPipeline:
    """Returns each fragment's own payload as its dub (status success), byte for byte and never decoded, whatever
    the bytes are (the seed's echo service does the same): for A/V sync tests without models.

    `error_simulation` holds the failure rules of `config:error_simulation`, which only this pipeline offers.
    """

    # The server skips its checks of the audio bytes (base64, alignment) for this pipeline: they are mirrored.
    mirrors_audio = True

    @property
    def error_simulation(self) -> Any:
        """The `ErrorSimulator` of this pipeline, created on first use (subclasses need not call __init__)."""
        from livedub.sts.error_simulation import ErrorSimulator

        simulator = self.__dict__.get("_error_simulation")
        return simulator if simulator is not None else self.__dict__.setdefault("_error_simulation", ErrorSimulator())

    def check_languages(self, source: str, target: str) -> None:
        if not source or not target:
            raise UnsupportedLanguageError("source and target language are required")

    def process_each(
        self,
        fragment: FragmentData,
        config: StreamConfig,
        deadline: Deadline = NO_DEADLINE,
        on_chunk: Callable[[DubChunk], object] | None = None,
    ) -> Iterator[FragmentProcessed]:
        """The same echo for every target (simulated failures apply to each); no chunks: the echo is whole."""
        first = self.process(fragment, config, deadline)
        for target in config.targets:
            yield first.model_copy(update={"target_language": target})

    def process(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE
    ) -> FragmentProcessed:
        """Echoing costs nothing; the deadline bounds only a simulated delay."""
        started = time.perf_counter()
        rule = self.error_simulation.match(fragment)
        if rule is not None:
            self.error_simulation.hold(rule, deadline)
            if rule.error_code is not None:
                stage = "timeout" if rule.error_code is ErrorCode.TIMEOUT else rule.stage or "pipeline"
                error = FragmentError(
                    stage=stage, code=rule.error_code, message=rule.error_message, retryable=rule.retryable
                )
                metadata = FragmentMetadata(original_duration_ms=fragment.audio.duration_ms)
                return _failed(fragment, error, started, metadata=metadata)
        duration_ms = fragment.audio.duration_ms  # as declared: the bytes are not decoded
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


def _timings(seconds: dict[str, float]) -> StageTimings:
    """The wire's three timings from the engine's stages (each tier of a translator or voice is a stage of its own:
    the best tier's time where it ran)."""
    return StageTimings(
        asr_ms=_ms(seconds.get(Stage.ASR, 0.0)),
        translation_ms=_ms(seconds_of(seconds, TRANSLATION_STAGES)),
        tts_ms=_ms(seconds_of(seconds, VOICE_STAGES)),
    )


class DubbingPipeline:
    """The engine with the backends the settings name, loaded once and shared by every stream.

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
        pairs: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        """`pairs` limits the served (and loaded) directions, e.g. to one for `livedub dub-file`; default: those of
        the injected translators, else every pair of the language table."""
        pairs = pairs or (tuple(translators) if translators else SUPPORTED_PAIRS)
        unknown = set(pairs) - set(SUPPORTED_PAIRS)
        if unknown:
            raise UnsupportedLanguageError(f"unsupported language pairs {sorted(unknown)}")
        self.pairs = tuple(pairs)
        self.settings = settings or StsSettings()
        self._injected: dict[str, Any] = {"asr": asr, "translators": translators, "tts": tts}
        self._engine: DubEngine | None = None
        self._load_lock = threading.Lock()
        self._warm_lock = threading.Lock()  # one warm-up at a time (start-up, or a stream's new pair)
        self._voices: VoicePicker | None = None
        self._voices_lock = threading.Lock()
        self._warm = False
        self.memory = PhraseMemory()  # each stream's last translated phrases, per direction
        self._glossary = self.settings.glossary()  # STS_GLOSSARY_FILE, per pair

    # ------------------------------------------------------------------ models

    @property
    def engine(self) -> DubEngine:
        """The engine (models load on first use)."""
        self.load()
        assert self._engine is not None
        return self._engine

    def load(self) -> None:
        """Build every backend the settings name (once; shared instances where two directions use the same one)."""
        with self._load_lock:
            if self._engine is None:
                self._engine = load_engine(self.settings, self.pairs, **self._injected)
                log.info("STS models loaded: %s", self.describe())

    def warmup(self) -> None:
        """Load the models and run every stage of the STS_WARMUP_PAIRS on a realistic sentence (the first inference
        of a model, and of each new input size, is slow); other pairs warm up when a stream first asks for them."""
        wanted = tuple(parse_pair(p) for p in self.settings.warmup_pairs.split(",") if p.strip())
        pairs = tuple(pair for pair in wanted if pair in self.pairs) or self.pairs[:1]
        with self._warm_lock:
            self.engine.warm_up(pairs)
            self.voices.warm_up(sorted({target for _, target in pairs}))
        self._warm = True

    def prepare(self, source: str, targets: list[str]) -> None:
        """Warm up the pairs a new stream needs that are not warm yet (blocking: seconds per pair)."""
        with self._warm_lock:
            self.engine.warm_up(tuple((source, target) for target in targets if (source, target) in self.pairs))
            self.voices.warm_up(targets)

    @property
    def voices(self) -> VoicePicker:
        """Per-stream voice choice over the engine's voice bank (STS_VOICE_MATCH; the embedder loads on first
        use). Without the embedder the languages' default voices speak, as before."""
        with self._voices_lock:
            if self._voices is None:
                try:
                    # The embedder runs where STS_DEVICE says, as every other model does (livedub.dubbing.device).
                    embedder = SpeakerEmbedder(device=self.settings.device) if self.settings.voice_match else None
                    self._voices = VoicePicker(self.engine.voices, embedder, voice_match=self.settings.voice_match)
                except (EmbedderMissingError, OSError) as exc:
                    log.warning("voices will not follow the speaker: %s", exc)
                    self._voices = VoicePicker(self.engine.voices, voice_match=False)
            return self._voices

    def usual_time_s(self, audio_s: float) -> float:
        """What a fragment of `audio_s` usually takes on the cheapest path, once the models are loaded: one that
        cannot start this long before its deadline is not worth starting (the server's queue lets it expire)."""
        return self._engine.usual_time_s(audio_s) if self._engine is not None else 0.0

    def describe(self) -> dict[str, Any]:
        engine = self._engine
        return {
            "pipeline": "dub",
            "loaded": engine is not None,
            "warm": self._warm,
            "asr": engine.recognise.asr.name if engine else self.settings.asr_model,
            # Backend names once loaded (the settings' choices before).
            "translators": (
                {f"{s}-{t}": engine.translate.translators[(s, t)].name for s, t in self.pairs}
                if engine
                else self.settings.translator
            ),
            "voices": engine.voices.names() if engine else self.settings.tts_voices or "language table",
            "warm_pairs": sorted(f"{s}-{t}" for s, t in engine.warm_pairs) if engine else [],
            "supported_pairs": [f"{s}-{t}" for s, t in self.pairs],
            "max_speedup": self.settings.max_speedup,
            "stage_costs": engine.costs.snapshot() if engine else {},
        }

    # ------------------------------------------------------------------ processing

    def check_languages(self, source: str, target: str) -> None:
        if (source, target) not in self.pairs:
            supported = ", ".join(f"{s}->{t}" for s, t in self.pairs)
            raise UnsupportedLanguageError(f"unsupported language pair {source}->{target}; supported: {supported}")

    def process(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE
    ) -> FragmentProcessed:
        """The answer for the main target (`config.target_language`)."""
        main_only = config.model_copy(update={"target_languages": [config.target_language]})
        return next(self.process_each(fragment, main_only, deadline))

    def process_each(
        self,
        fragment: FragmentData,
        config: StreamConfig,
        deadline: Deadline = NO_DEADLINE,
        on_chunk: Callable[[DubChunk], object] | None = None,
    ) -> Iterator[FragmentProcessed]:
        """One answer per target of `config`, each as soon as it is ready: the fragment is transcribed once,
        translated and spoken per target; with `on_chunk`, each dub is spoken clause by clause and every chunk is
        handed over (as a `fragment:chunk` payload) as soon as it is made."""
        started = time.perf_counter()
        targets = config.targets
        try:
            for target in targets:
                self.check_languages(config.source_language, target)
        except UnsupportedLanguageError as exc:
            error = FragmentError(stage="pipeline", code=ErrorCode.UNSUPPORTED_LANGUAGE, message=str(exc))
            for target in targets:
                yield _failed(fragment, error, started, target_language=target)
            return
        try:
            decoded = _decode(fragment)
            engine = self._loaded_engine()
        except StageError as exc:
            for target in targets:
                yield _failed(fragment, exc.error, started, target_language=target)
            return
        # Who speaks (a speaker embedding of this fragment) picks each target's voice; a voice_profile pins one.
        stream_voices = self.voices.stream(fragment.stream_id, config.voice_profile)
        stream_voices.observe(decoded.native, decoded.sample_rate)
        answers = engine.dub_each(
            Utterance(decoded.native, decoded.sample_rate),
            config.source_language,
            targets,
            voice=stream_voices,
            overrun_s=config.dub_overrun_ms / 1000.0,
            deadline=deadline,
            context=lambda target: self.context(fragment, config, target),
            on_chunk=None if on_chunk is None else functools.partial(self._chunk, fragment, decoded, on_chunk),
        )
        for answer in answers:
            result = answer.result
            if isinstance(result, Dub) and result.translation is not None:
                self.memory.remember(
                    fragment.stream_id,
                    config.source_language,
                    answer.target,
                    fragment.sequence_number,
                    result.transcript.text,
                    result.translation.text,
                )
            yield self._answer(fragment, answer.target, result, decoded, started)

    def context(self, fragment: FragmentData, config: StreamConfig, target: str) -> TranslationContext:
        """What the translator of `target` knows beyond the fragment: the stream's last translated phrases in this
        direction (before this fragment) and the glossary (the file's, the stream's entries winning)."""
        source = config.source_language
        return TranslationContext(
            previous=self.memory.previous(
                fragment.stream_id, source, target, before=fragment.sequence_number, limit=self.settings.context_phrases
            ),
            glossary=merge(self._glossary.get((source, target), ()), stream_entries(config.glossary, target)),
        )

    def _chunk(
        self,
        fragment: FragmentData,
        decoded: _DecodedFragment,
        on_chunk: Callable[[DubChunk], object],
        target: str,
        chunk: EngineChunk,
    ) -> None:
        """An engine chunk as a `fragment:chunk` payload, in the fragment's format; one that cannot be encoded is
        skipped (its answer still carries the whole dub)."""
        try:
            audio = self._encode(fragment, chunk.audio, decoded.sample_rate)
        except StageError as exc:
            log.warning("chunk %d of fragment %s not sent: %s", chunk.index, fragment.fragment_id, exc)
            return
        on_chunk(
            DubChunk(
                fragment_id=fragment.fragment_id,
                stream_id=fragment.stream_id,
                sequence_number=fragment.sequence_number,
                target_language=target,
                index=chunk.index,
                offset_ms=_ms(chunk.start_s),
                audio=audio,
                text=chunk.text,
                final=chunk.final,
            )
        )

    def end_stream(self, stream_id: str) -> None:
        """The stream ended: forget its phrases (a stream of the same id starts without context)."""
        self.memory.forget(stream_id)

    def _answer(
        self,
        fragment: FragmentData,
        target: str,
        result: Dub | StageFailed,
        decoded: _DecodedFragment,
        started: float,
    ) -> FragmentProcessed:
        if isinstance(result, StageFailed):
            return self._stage_failed(fragment, result, started).model_copy(update={"target_language": target})
        try:
            dubbed_audio = self._encode(fragment, result.fitted.audio, decoded.sample_rate)
        except StageError as exc:
            return _failed(fragment, exc.error, started, target_language=target)
        processed = self._processed(fragment, result, dubbed_audio, len(decoded.native) / decoded.sample_rate, started)
        return processed.model_copy(update={"target_language": target})

    def _loaded_engine(self) -> DubEngine:
        try:
            return self.engine
        except Exception as exc:
            raise StageError("pipeline", ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", True) from exc

    def _stage_failed(self, fragment: FragmentData, exc: StageFailed, started: float) -> FragmentProcessed:
        progress: DubProgress = exc.progress
        if isinstance(exc, TooLate):
            spent = {stage: round(seconds, 2) for stage, seconds in progress.seconds.items()}
            log.info("fragment %s dropped before %s: %s (spent %s)", fragment.fragment_id, exc.before_stage, exc, spent)
        else:
            log.warning("fragment %s failed at %s: %s", fragment.fragment_id, exc.stage, exc)
        step = step_of(exc.stage)
        stage: ErrorStage = step if is_error_stage(step) else "pipeline"
        error = FragmentError(
            stage=stage,
            code=STAGE_ERRORS.get(stage, ErrorCode.INTERNAL_ERROR),
            message=str(exc),
            retryable=exc.retryable,
        )
        return _failed(
            fragment,
            error,
            started,
            transcript=progress.transcript.text if progress.transcript else None,
            translated_text=progress.translation.text if progress.translation else None,
            stage_timings=_timings(progress.seconds),
        )

    def _processed(
        self, fragment: FragmentData, dub: Dub, dubbed_audio: AudioPayload, original_s: float, started: float
    ) -> FragmentProcessed:
        fitted = dub.fitted
        status = FragmentStatus(fitted.status.value)
        error = None
        if status is FragmentStatus.FAILED:
            error = FragmentError(
                stage="fit",
                code=ErrorCode.TTS_SYNTHESIS_FAILED,
                message=f"dub is {fitted.variance_percent:+.0f} % off the speech duration after a "
                f"{fitted.speed_ratio:.2f}x time-stretch (limits: {self.settings.max_speedup}x faster, "
                f"{self.settings.max_slowdown}x slower)",
                retryable=False,
            )
        metadata = FragmentMetadata(original_duration_ms=_ms(original_s), dubbed_duration_ms=_ms(fitted.duration_s))
        if dub.translation is not None and dub.slot is not None:
            metadata = FragmentMetadata(
                original_duration_ms=_ms(original_s),
                dubbed_duration_ms=_ms(fitted.duration_s),
                duration_variance_percent=round(fitted.variance_percent, 1),
                speed_ratio=round(fitted.speed_ratio, 3),
                voice=dub.voice or None,
                speech_start_ms=_ms(dub.slot.start_s),
                speech_end_ms=_ms(dub.slot.start_s + dub.slot.span_s),
                speech_duration_ms=_ms(dub.slot.span_s),
                dubbed_speech_duration_ms=_ms(fitted.speech_s),
                translator=dub.translator.value,
                voice_tier=dub.voice_tier.value,
            )
        return FragmentProcessed(
            fragment_id=fragment.fragment_id,
            stream_id=fragment.stream_id,
            sequence_number=fragment.sequence_number,
            status=status,
            dubbed_audio=dubbed_audio,
            transcript=dub.transcript.text,
            translated_text=dub.translation.text if dub.translation else "",
            processing_time_ms=_ms(time.perf_counter() - started),
            stage_timings=_timings(dub.seconds),
            error=error,
            metadata=metadata,
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


def build_processor(settings: StsSettings | None = None) -> FragmentProcessor:
    """The processor STS_PIPELINE names. Models load on `warmup()` (or on the first fragment)."""
    settings = settings or StsSettings()
    if settings.pipeline == "echo":
        return EchoPipeline()
    return DubbingPipeline(settings)
