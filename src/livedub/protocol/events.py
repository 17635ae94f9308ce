"""Pydantic models of every Socket.IO event exchanged between media-service and STS."""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
import unicodedata
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeGuard, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "CLIENT_EVENTS",
    "GLOSSARY_MAX_ENTRIES",
    "GLOSSARY_MAX_TERM_CHARS",
    "MAX_SEQUENCE_NUMBER",
    "SERVER_EVENTS",
    "AudioFormat",
    "AudioPayload",
    "Backpressure",
    "BackpressureAction",
    "BackpressureSeverity",
    "Capability",
    "DubChunk",
    "ErrorCode",
    "ErrorEvent",
    "ErrorSeverity",
    "ErrorSimulation",
    "ErrorSimulationAck",
    "ErrorSimulationRule",
    "ErrorStage",
    "Event",
    "EventName",
    "FragmentAck",
    "FragmentAckStatus",
    "FragmentData",
    "FragmentError",
    "FragmentMetadata",
    "FragmentProcessed",
    "FragmentStatus",
    "GlossaryEntry",
    "Millis",
    "MonitorSubscribe",
    "StageTimings",
    "StreamComplete",
    "StreamConfig",
    "StreamControl",
    "StreamInit",
    "StreamReady",
    "clean_term",
    "is_error_stage",
    "now_ms",
]


def now_ms() -> int:
    """Wall-clock timestamp in milliseconds, as the seed protocol uses."""
    return int(time.time() * 1000)


# Largest sequence number accepted: a signed 32-bit integer (68 years of one fragment a second), so that every
# peer's integer type holds it.
MAX_SEQUENCE_NUMBER = 2**31 - 1


def _whole_ms(value: Any) -> Any:
    """Timing fields are whole milliseconds on the wire (the seed's integers); finer values are rounded."""
    if isinstance(value, float) and math.isfinite(value):
        return round(value)
    return value


Millis = Annotated[int, BeforeValidator(_whole_ms)]
"""Whole milliseconds: an integer on the wire; a float given by our own code (or a peer) is rounded."""


class Event(BaseModel):
    """Base of every event: unknown fields are kept (forward compatibility with the seed peer).

    On the wire, absent optional fields of STS -> client events are `null` (as the seed's servers send them);
    client -> STS events omit them, so that livedub's extension fields never reach a seed server as `null`.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    wire_omits_none: ClassVar[bool] = False

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=self.wire_omits_none)


class ClientEvent(Event):
    """A client -> STS payload: absent optional fields are left out of the wire."""

    wire_omits_none: ClassVar[bool] = True


class AudioFormat(StrEnum):
    PCM_S16LE = "pcm_s16le"
    M4A = "m4a"


class ErrorCode(StrEnum):
    STREAM_NOT_FOUND = "STREAM_NOT_FOUND"
    INVALID_CONFIG = "INVALID_CONFIG"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"
    INVALID_AUDIO_FORMAT = "INVALID_AUDIO_FORMAT"
    TIMEOUT = "TIMEOUT"
    BACKPRESSURE_EXCEEDED = "BACKPRESSURE_EXCEEDED"
    ASR_FAILED = "ASR_FAILED"
    TRANSLATION_FAILED = "TRANSLATION_FAILED"
    TTS_SYNTHESIS_FAILED = "TTS_SYNTHESIS_FAILED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNAUTHORIZED = "UNAUTHORIZED"
    # The seed's: a fragment sent while its stream is paused (retryable: send it again after stream:resume).
    STREAM_PAUSED = "STREAM_PAUSED"
    # The seed's model failures (its echo service simulates them, see config:error_simulation).
    MODEL_ERROR = "MODEL_ERROR"
    GPU_OOM = "GPU_OOM"
    # Not in the seed list; used for events that do not validate against this module.
    INVALID_EVENT = "INVALID_EVENT"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class ErrorSeverity(StrEnum):
    """The seed's three levels. LOW/MEDIUM/HIGH are aliases kept for livedub code written before them; the old
    wire values `low`/`medium`/`high` (livedub before seed fidelity) are still read, as warning/error/error."""

    WARNING = "warning"
    ERROR = "error"
    FATAL = "fatal"
    LOW = "warning"
    MEDIUM = "error"
    HIGH = "error"

    @classmethod
    def _missing_(cls, value: object) -> ErrorSeverity | None:
        legacy = {"low": cls.WARNING, "medium": cls.ERROR, "high": cls.ERROR}
        return legacy.get(value) if isinstance(value, str) else None


# ---------------------------------------------------------------- client -> STS


# Bounds of a stream's glossary (stream:init config.glossary): entries per target language, characters per term.
GLOSSARY_MAX_ENTRIES = 100
GLOSSARY_MAX_TERM_CHARS = 80
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>")  # chat-template markers such as <|im_end|>


def clean_term(value: Any) -> Any:
    """A glossary term as text that cannot break a prompt: control characters (newlines included) become spaces,
    chat-template markers (`<|...|>`) go, runs of spaces shrink to one; the length is checked afterwards."""
    if not isinstance(value, str):
        return value
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in value)
    return " ".join(_SPECIAL_TOKEN.sub(" ", text).split())


GlossaryTerm = Annotated[
    str,
    StringConstraints(min_length=1, max_length=GLOSSARY_MAX_TERM_CHARS, pattern=r"\w"),
    BeforeValidator(clean_term),
]


class GlossaryEntry(BaseModel):
    """A term of the source language and the translation it must have (the term itself: kept as it is)."""

    source: GlossaryTerm = Field(
        description=f"The term as spoken (matched whole words, any case); 1 to {GLOSSARY_MAX_TERM_CHARS} characters "
        "with a letter or digit, once control characters and `<|...|>` markers are taken out."
    )
    target: GlossaryTerm = Field(
        description="Its required translation (same bounds); equal to `source`: kept untranslated."
    )


class StreamConfig(ClientEvent):
    source_language: str = "en"
    target_language: str = "es"
    voice_profile: str = "default"
    format: AudioFormat = AudioFormat.M4A
    sample_rate_hz: int = Field(48000, ge=8000, le=192000)
    channels: int = Field(1, ge=1, le=8)
    chunk_duration_ms: int = Field(6000, ge=100, le=60000)
    max_inflight: int = Field(3, ge=1, le=10)
    timeout_ms: int = Field(8000, ge=100, le=600000)
    # livedub extension (announced in stream:ready.capabilities.dub_overrun): how far past its fragment's end a dub
    # may run, for clients that place dubs on their own timeline. 0 = the seed's behaviour: exactly the fragment.
    dub_overrun_ms: int = Field(
        0,
        ge=0,
        le=60000,
        description="livedub extension (capability `dub_overrun`): how far past its fragment's end a dub may run; "
        "0, or absent as from seed clients: exactly the fragment's duration.",
    )
    # livedub extension (announced in stream:ready.capabilities.target_languages): dub into several languages at
    # once. Each fragment is transcribed once and answered once per target (`fragment:processed.target_language`).
    target_languages: list[str] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="livedub extension (capability `target_languages`): dub into each of these languages (one "
        "`fragment:processed` per fragment and target, each target in sequence order on its own); the first is "
        "also `target_language`. Absent, as from seed clients: `target_language` alone.",
    )

    # livedub extension: terms each target language must translate a given way (names, brands, jargon).
    glossary: (
        dict[
            Annotated[str, Field(min_length=2, max_length=16)],
            Annotated[list[GlossaryEntry], Field(max_length=GLOSSARY_MAX_ENTRIES)],
        ]
        | None
    ) = Field(
        None,
        max_length=8,
        description="livedub extension: per target language, a list of [GlossaryEntry](#glossaryentry): terms that "
        f"must be translated as given (target = source: kept as spoken); at most {GLOSSARY_MAX_ENTRIES} per language, "
        f"terms of at most {GLOSSARY_MAX_TERM_CHARS} characters (control characters and newlines become spaces). A "
        "stream's entry overrides the server's STS_GLOSSARY_FILE for the same term.",
    )

    # livedub extension (announced in stream:ready.capabilities.dub_chunks): the dub's audio as it is made.
    dub_chunks: bool = Field(
        False,
        description="livedub extension (capability `dub_chunks`): also send each dub's audio in `fragment:chunk` "
        "events as it is made (a clause at a time), before its `fragment:processed`. Absent, as from seed clients: "
        "no chunks, exactly one `fragment:processed` per fragment and target with the whole dub.",
    )

    @model_validator(mode="after")
    def _first_target_is_target_language(self) -> StreamConfig:
        if self.target_languages:
            targets = list(dict.fromkeys(code.strip() for code in self.target_languages if code.strip()))
            if not targets:
                raise ValueError("target_languages holds no language code")
            self.target_languages = targets
            self.target_language = targets[0]
        return self

    @property
    def targets(self) -> list[str]:
        """The languages to dub into, the main one first."""
        return list(self.target_languages or [self.target_language])


class StreamInit(ClientEvent):
    stream_id: str = Field(min_length=1, max_length=256)
    worker_id: str = Field(
        "",
        max_length=256,
        description="The worker's identity: a second connection may take the stream over only with the same one.",
    )
    config: StreamConfig = Field(default_factory=StreamConfig)
    # Spec 016 puts these two at the top level; livedub clients send them in `config`. Both are read, the top level
    # wins, and `config` holds the value in force after validation.
    max_inflight: int | None = Field(
        None, ge=1, le=10, description="Spec 016's place for `config.max_inflight`; wins over it when both are given."
    )
    timeout_ms: int | None = Field(
        None,
        ge=100,
        le=600000,
        description="Spec 016's place for `config.timeout_ms`; wins over it when both are given.",
    )

    @model_validator(mode="after")
    def _top_level_wins(self) -> StreamInit:
        update = {
            k: v for k, v in (("max_inflight", self.max_inflight), ("timeout_ms", self.timeout_ms)) if v is not None
        }
        if update:
            self.config = self.config.model_copy(update=update)
        return self


class AudioPayload(ClientEvent):
    format: AudioFormat
    sample_rate_hz: int = Field(ge=8000, le=192000)
    channels: int = Field(1, ge=1, le=8)
    duration_ms: float = Field(ge=0)
    data_base64: str

    def decode_bytes(self) -> bytes:
        """Raw audio bytes; raises ValueError on bad base64."""
        try:
            return base64.b64decode(self.data_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"audio.data_base64 is not valid base64: {exc}") from exc

    @classmethod
    def from_bytes(
        cls, data: bytes, *, format: AudioFormat, sample_rate_hz: int, channels: int, duration_ms: float
    ) -> AudioPayload:
        return cls(
            format=format,
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            duration_ms=duration_ms,
            data_base64=base64.b64encode(data).decode("ascii"),
        )


class FragmentData(ClientEvent):
    fragment_id: str = Field(min_length=1, max_length=256)
    stream_id: str = Field(min_length=1, max_length=256)
    sequence_number: int = Field(ge=0, le=MAX_SEQUENCE_NUMBER)
    timestamp: int = Field(default_factory=now_ms)
    audio: AudioPayload
    metadata: dict[str, Any] | None = None
    # livedub extension (announced in stream:ready.capabilities.deadline): the dub is useful only if it is back
    # within this many milliseconds of the fragment's arrival. The STS serves the most urgent fragment first and
    # answers TIMEOUT at once for work that can no longer be on time. Absent: `timeout_ms` of the stream.
    deadline_ms: int | None = Field(
        None,
        ge=0,
        le=600000,
        description="livedub extension (capability `deadline`): the dub is useful only if answered within this many "
        "ms of the fragment's arrival; most urgent first, TIMEOUT at once for work that cannot be on time. Absent, "
        "as from seed clients: the stream's `timeout_ms`.",
    )


class StreamControl(ClientEvent):
    """Payload of `stream:pause`, `stream:resume` and `stream:end`."""

    stream_id: str = Field(min_length=1, max_length=256)
    reason: str | None = None


class MonitorSubscribe(ClientEvent):
    """`monitor:subscribe`: join the read-only room that mirrors a stream's (or every stream's) events.

    Not part of the seed protocol; observers (tests, dashboards) use it, workers never do.
    """

    stream_id: str | None = None
    key: str | None = Field(
        None, description="The monitor key (`STS_MONITOR_KEY`), unless given at connect like the API key."
    )


class ErrorSimulationRule(ClientEvent):
    """One rule of `config:error_simulation` (the seed echo service's test hook): which fragments, what happens."""

    trigger: Literal["sequence_number", "fragment_id", "nth_fragment"] | None = Field(
        None,
        description="How fragments are chosen: by `sequence_number`, by `fragment_id`, or every `value`-th fragment "
        "of the stream (`nth_fragment`); absent: every fragment.",
    )
    value: int | str | None = Field(None, description="The sequence number, fragment id, or N of the trigger.")
    error_code: ErrorCode | None = Field(
        None, description="The error the chosen fragments fail with (absent: they succeed, after `delay_ms`)."
    )
    error_message: str = Field("Simulated error", max_length=2000)
    retryable: bool = True
    stage: Literal["asr", "translation", "tts"] | None = None
    delay_ms: int = Field(0, ge=0, le=600000, description="livedub: hold the chosen fragments this long first.")
    count: int | None = Field(None, ge=1, description="livedub: apply to at most this many fragments.")

    @model_validator(mode="after")
    def _value_fits_trigger(self) -> ErrorSimulationRule:
        if self.trigger in ("sequence_number", "nth_fragment") and not (
            isinstance(self.value, int) and self.value >= (0 if self.trigger == "sequence_number" else 1)
        ):
            raise ValueError(f"trigger {self.trigger} needs an integer value (N >= 1 for nth_fragment)")
        if self.trigger == "fragment_id" and not isinstance(self.value, str):
            raise ValueError("trigger fragment_id needs a string value")
        return self


class ErrorSimulation(ClientEvent):
    """`config:error_simulation`: echo pipeline only. Replaces the rules of `stream_id` (default: every stream of
    this connection)."""

    enabled: bool = False
    rules: list[ErrorSimulationRule] = Field(default_factory=list, max_length=100)
    stream_id: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="livedub: the stream the rules are for (it may be initialised later; another connection's "
        "stream needs monitor access). Absent: the streams of this connection, as in the seed.",
    )


# ---------------------------------------------------------------- STS -> client


class Capability(StrEnum):
    """Keys of `stream:ready.capabilities`."""

    FORMATS = "formats"
    MAX_FRAGMENT_BYTES = "max_fragment_bytes"
    MAX_INFLIGHT_LIMIT = "max_inflight_limit"
    IN_ORDER_DELIVERY = "in_order_delivery"
    ASYNC_DELIVERY = "async_delivery"
    BATCH_PROCESSING = "batch_processing"
    MONITOR_ROOM = "monitor_room"
    MODELS = "models"
    # livedub extensions: the server honours fragment:data.deadline_ms / stream:init config.dub_overrun_ms.
    DEADLINE = "deadline"
    DUB_OVERRUN = "dub_overrun"
    # livedub extension: stream:init config.target_languages; each fragment:processed names its target_language.
    TARGET_LANGUAGES = "target_languages"
    # livedub extension: stream:init config.dub_chunks; the dub's audio comes in fragment:chunk events as it is made.
    DUB_CHUNKS = "dub_chunks"


class StreamReady(Event):
    stream_id: str
    session_id: str
    max_inflight: int
    capabilities: dict[str, Any] = Field(default_factory=dict)

    def supports(self, capability: Capability) -> bool:
        """True when the server announced `capability` as `true` (absent, as from a seed server: False)."""
        return self.capabilities.get(capability) is True


class FragmentAckStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    RECEIVED = "received"  # worker -> STS (spec 016): the worker got a fragment:processed


class FragmentAck(Event):
    fragment_id: str
    status: FragmentAckStatus
    timestamp: int = Field(default_factory=now_ms)
    queue_position: int | None = None


class FragmentStatus(StrEnum):
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"


class StageTimings(Event):
    asr_ms: Millis = 0
    translation_ms: Millis = 0
    tts_ms: Millis = 0


ErrorStage = Literal["decode", "asr", "translation", "tts", "fit", "encode", "pipeline", "timeout"]
"""Where a fragment failed: a step of the pipeline, or `timeout` (its deadline passed)."""


def is_error_stage(name: str) -> TypeGuard[ErrorStage]:
    return name in get_args(ErrorStage)


class FragmentError(Event):
    stage: ErrorStage
    code: ErrorCode
    message: str
    retryable: bool = False


class FragmentMetadata(Event):
    original_duration_ms: float = 0.0
    dubbed_duration_ms: float = 0.0
    duration_variance_percent: float = 0.0
    speed_ratio: float = 1.0
    # livedub extensions: where the ASR heard speech inside the fragment (captions are timed by it) and the voice
    # that spoke the dub (it follows the speaker).
    speech_start_ms: float | None = Field(None, description="livedub: start of the speech inside the fragment.")
    speech_end_ms: float | None = Field(None, description="livedub: end of the speech inside the fragment.")
    voice: str | None = Field(None, description="livedub: the voice that spoke the dub, `backend:voice`.")
    speech_duration_ms: float | None = Field(
        None, description="livedub: the speech the dub replaces (what `duration_variance_percent` compares)."
    )
    dubbed_speech_duration_ms: float | None = Field(
        None, description="livedub: the dubbed speech after its time-stretch."
    )
    translator: Literal["main", "fast"] | None = Field(
        None,
        description="livedub: which translator tier made the words: `main` (the LLM, or the configured translator) "
        "or `fast` (Apertium, when the main one could not be on time).",
    )
    voice_tier: Literal["usual", "fast"] | None = Field(
        None,
        description="livedub: `usual` when one of the language's voices spoke (it follows the speaker), `fast` when "
        "its fast voice did (SVOX Pico or Piper: the usual one could not be on time).",
    )


class FragmentProcessed(Event):
    fragment_id: str
    stream_id: str
    sequence_number: int
    status: FragmentStatus
    dubbed_audio: AudioPayload | None = None
    transcript: str | None = None
    translated_text: str | None = None
    processing_time_ms: Millis = 0
    stage_timings: StageTimings = Field(default_factory=StageTimings)
    error: FragmentError | None = None
    metadata: FragmentMetadata = Field(default_factory=FragmentMetadata)
    target_language: str | None = Field(
        None,
        description="livedub extension (capability `target_languages`): the language of this answer; one "
        "`fragment:processed` per fragment and target language.",
    )


class DubChunk(Event):
    """`fragment:chunk` (livedub extension, capability `dub_chunks`, only to clients that asked with
    `config.dub_chunks`): a piece of a dub, sent as soon as it is spoken, while the rest is still being translated and
    synthesised. The chunks of one fragment and target come in `index` order; each plays at `offset_ms` from the
    fragment's start, and together they are the dub that the fragment's `fragment:processed` then carries whole
    (a client that played the chunks need not play it again). A dub that fails or runs late after some chunks ends
    with its `fragment:processed` (status failed): the chunks sent stay valid."""

    fragment_id: str
    stream_id: str
    sequence_number: int
    target_language: str
    index: int = Field(ge=0, description="0 for the dub's first chunk, then 1, 2, ...")
    offset_ms: float = Field(ge=0, description="where the chunk's audio starts, from the fragment's start")
    audio: AudioPayload = Field(description="the chunk's audio, in the stream's format and sample rate")
    text: str = Field("", description="the words the chunk says (a clause of the translation)")
    final: bool = Field(False, description="true on the dub's last chunk")


class BackpressureSeverity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class BackpressureAction(StrEnum):
    NONE = "none"
    SLOW_DOWN = "slow_down"
    PAUSE = "pause"


class Backpressure(Event):
    stream_id: str
    severity: BackpressureSeverity
    action: BackpressureAction
    current_inflight: int
    max_inflight: int
    queue_depth: int = Field(0, ge=0, description="Fragments of this stream waiting for an inference thread.")
    recommended_delay_ms: int | None = None


class StreamComplete(Event):
    stream_id: str
    total_fragments: int
    total_duration_ms: Millis
    statistics: dict[str, Any] = Field(default_factory=dict)


class ErrorEvent(Event):
    code: ErrorCode
    message: str
    severity: ErrorSeverity = ErrorSeverity.ERROR
    retryable: bool = False
    stream_id: str | None = None
    fragment_id: str | None = None

    @field_validator("message")
    @classmethod
    def _short_message(cls, v: str) -> str:
        return v[:2000]


class ErrorSimulationAck(Event):
    status: Literal["accepted", "rejected"]
    rules_count: int = Field(ge=0)
    message: str | None = None


class EventName(StrEnum):
    """Every Socket.IO event name of the protocol (a StrEnum: each member is its wire string)."""

    # client -> STS
    STREAM_INIT = "stream:init"
    FRAGMENT_DATA = "fragment:data"
    STREAM_PAUSE = "stream:pause"
    STREAM_RESUME = "stream:resume"
    STREAM_END = "stream:end"
    MONITOR_SUBSCRIBE = "monitor:subscribe"
    CONFIG_ERROR_SIMULATION = "config:error_simulation"
    # STS -> client
    STREAM_READY = "stream:ready"
    FRAGMENT_ACK = "fragment:ack"
    FRAGMENT_PROCESSED = "fragment:processed"
    FRAGMENT_CHUNK = "fragment:chunk"
    BACKPRESSURE = "backpressure"
    STREAM_COMPLETE = "stream:complete"
    ERROR = "error"
    CONFIG_ERROR_SIMULATION_ACK = "config:error_simulation:ack"


# Event name -> payload model, per direction. `fragment:ack` goes both ways (the worker's is status `received`).
CLIENT_EVENTS: dict[EventName, type[Event]] = {
    EventName.STREAM_INIT: StreamInit,
    EventName.FRAGMENT_DATA: FragmentData,
    EventName.FRAGMENT_ACK: FragmentAck,
    EventName.STREAM_PAUSE: StreamControl,
    EventName.STREAM_RESUME: StreamControl,
    EventName.STREAM_END: StreamControl,
    EventName.MONITOR_SUBSCRIBE: MonitorSubscribe,
    EventName.CONFIG_ERROR_SIMULATION: ErrorSimulation,
}
SERVER_EVENTS: dict[EventName, type[Event]] = {
    EventName.STREAM_READY: StreamReady,
    EventName.FRAGMENT_ACK: FragmentAck,
    EventName.FRAGMENT_PROCESSED: FragmentProcessed,
    EventName.FRAGMENT_CHUNK: DubChunk,
    EventName.BACKPRESSURE: Backpressure,
    EventName.STREAM_COMPLETE: StreamComplete,
    EventName.ERROR: ErrorEvent,
    EventName.CONFIG_ERROR_SIMULATION_ACK: ErrorSimulationAck,
}
