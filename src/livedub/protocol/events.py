"""Pydantic models of every Socket.IO event exchanged between media-service and STS."""

from __future__ import annotations

import base64
import binascii
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CLIENT_EVENTS",
    "SERVER_EVENTS",
    "AudioFormat",
    "AudioPayload",
    "Backpressure",
    "BackpressureAction",
    "BackpressureSeverity",
    "Capability",
    "ErrorCode",
    "ErrorEvent",
    "ErrorSeverity",
    "Event",
    "EventName",
    "FragmentAck",
    "FragmentAckStatus",
    "FragmentData",
    "FragmentError",
    "FragmentMetadata",
    "FragmentProcessed",
    "FragmentStatus",
    "MonitorSubscribe",
    "StageTimings",
    "StreamComplete",
    "StreamConfig",
    "StreamControl",
    "StreamInit",
    "StreamReady",
    "now_ms",
]


def now_ms() -> int:
    """Wall-clock timestamp in milliseconds, as the seed protocol uses."""
    return int(time.time() * 1000)


class Event(BaseModel):
    """Base of every event: unknown fields are kept (forward compatibility with the seed peer)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


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
    # Not in the seed list; used for events that do not validate against this module.
    INVALID_EVENT = "INVALID_EVENT"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class ErrorSeverity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    FATAL = "fatal"


# ---------------------------------------------------------------- client -> STS


class StreamConfig(Event):
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


class StreamInit(Event):
    stream_id: str = Field(min_length=1, max_length=256)
    worker_id: str = Field("", max_length=256)
    config: StreamConfig = Field(default_factory=StreamConfig)


class AudioPayload(Event):
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


class FragmentData(Event):
    fragment_id: str = Field(min_length=1, max_length=256)
    stream_id: str = Field(min_length=1, max_length=256)
    sequence_number: int = Field(ge=0)
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


class StreamControl(Event):
    """Payload of `stream:pause`, `stream:resume` and `stream:end`."""

    stream_id: str = Field(min_length=1, max_length=256)
    reason: str | None = None


class MonitorSubscribe(Event):
    """`monitor:subscribe`: join the read-only room that mirrors a stream's (or every stream's) events.

    Not part of the seed protocol; observers (tests, dashboards) use it, workers never do.
    """

    stream_id: str | None = None


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
    asr_ms: float = 0.0
    translation_ms: float = 0.0
    tts_ms: float = 0.0


class FragmentError(Event):
    stage: Literal["decode", "asr", "translation", "tts", "fit", "encode", "pipeline", "timeout"]
    code: ErrorCode
    message: str
    retryable: bool = False


class FragmentMetadata(Event):
    original_duration_ms: float = 0.0
    dubbed_duration_ms: float = 0.0
    duration_variance_percent: float = 0.0
    speed_ratio: float = 1.0


class FragmentProcessed(Event):
    fragment_id: str
    stream_id: str
    sequence_number: int
    status: FragmentStatus
    dubbed_audio: AudioPayload | None = None
    transcript: str | None = None
    translated_text: str | None = None
    processing_time_ms: float = 0.0
    stage_timings: StageTimings = Field(default_factory=StageTimings)
    error: FragmentError | None = None
    metadata: FragmentMetadata = Field(default_factory=FragmentMetadata)


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
    recommended_delay_ms: int | None = None


class StreamComplete(Event):
    stream_id: str
    total_fragments: int
    total_duration_ms: float
    statistics: dict[str, Any] = Field(default_factory=dict)


class ErrorEvent(Event):
    code: ErrorCode
    message: str
    severity: ErrorSeverity = ErrorSeverity.MEDIUM
    retryable: bool = False
    stream_id: str | None = None
    fragment_id: str | None = None

    @field_validator("message")
    @classmethod
    def _short_message(cls, v: str) -> str:
        return v[:2000]


class EventName(StrEnum):
    """Every Socket.IO event name of the protocol (a StrEnum: each member is its wire string)."""

    # client -> STS
    STREAM_INIT = "stream:init"
    FRAGMENT_DATA = "fragment:data"
    STREAM_PAUSE = "stream:pause"
    STREAM_RESUME = "stream:resume"
    STREAM_END = "stream:end"
    MONITOR_SUBSCRIBE = "monitor:subscribe"
    # STS -> client
    STREAM_READY = "stream:ready"
    FRAGMENT_ACK = "fragment:ack"
    FRAGMENT_PROCESSED = "fragment:processed"
    BACKPRESSURE = "backpressure"
    STREAM_COMPLETE = "stream:complete"
    ERROR = "error"


# Event name -> payload model, per direction.
CLIENT_EVENTS: dict[EventName, type[Event]] = {
    EventName.STREAM_INIT: StreamInit,
    EventName.FRAGMENT_DATA: FragmentData,
    EventName.STREAM_PAUSE: StreamControl,
    EventName.STREAM_RESUME: StreamControl,
    EventName.STREAM_END: StreamControl,
    EventName.MONITOR_SUBSCRIBE: MonitorSubscribe,
}
SERVER_EVENTS: dict[EventName, type[Event]] = {
    EventName.STREAM_READY: StreamReady,
    EventName.FRAGMENT_ACK: FragmentAck,
    EventName.FRAGMENT_PROCESSED: FragmentProcessed,
    EventName.BACKPRESSURE: Backpressure,
    EventName.STREAM_COMPLETE: StreamComplete,
    EventName.ERROR: ErrorEvent,
}
