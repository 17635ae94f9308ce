"""Whether a `fragment:data` is accepted: a pure function of the payload, the stream it names and the limits.

`admit` decides, the transport acts: an `Admitted` fragment is run, a `Refused` one is answered with `error` (and
its stream, when known, stops waiting for its sequence number where `skip` says so). The checks run in the order
of the seed's ladder: payload shape, size, fields, stream, pause, audio bytes, sequence number, in-flight limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from livedub.protocol import AudioFormat, ErrorCode, ErrorEvent, ErrorSeverity, FragmentData
from livedub.sts.session import HIGH_MAX_INFLIGHT, SequenceRejected, SessionState

_AUDIO_FORMAT_FIELDS = {"format", "sample_rate_hz", "channels"}


class AdmittingSession(Protocol):
    """What admission reads of a stream's session."""

    @property
    def state(self) -> SessionState: ...

    @property
    def inflight(self) -> int: ...

    def check_sequence(self, seq: int) -> None:
        """Raise SequenceRejected for a number already seen or passed."""


S = TypeVar("S", bound=AdmittingSession)


@dataclass(frozen=True)
class Admitted(Generic[S]):
    fragment: FragmentData
    session: S


@dataclass(frozen=True)
class Refused(Generic[S]):
    code: ErrorCode
    message: str
    stream_id: str | None = None
    fragment_id: str | None = None
    severity: ErrorSeverity = ErrorSeverity.ERROR
    retryable: bool = False
    charged_to: S | None = None  # the stream that counts the refusal (None: no stream of this connection)
    skip: int | None = None  # the sequence number it stops waiting for (None: the client may send it again)

    def event(self) -> ErrorEvent:
        return ErrorEvent(
            code=self.code,
            message=self.message,
            severity=self.severity,
            retryable=self.retryable,
            stream_id=self.stream_id,
            fragment_id=self.fragment_id,
        )


def admit(
    data: Any, owned: Callable[[str], S | None], *, max_fragment_bytes: int, mirrors_audio: bool
) -> Admitted[S] | Refused[S]:
    """Accept or refuse a `fragment:data` payload. `owned(stream_id)`: the connection's session of that stream.
    `mirrors_audio`: the processor sends the payload back as it is, so its bytes are not checked."""
    parsed = _parse(data, owned, max_fragment_bytes)
    if isinstance(parsed, Refused):
        return parsed
    return _check_session(parsed, owned(parsed.stream_id), mirrors_audio)


def _parse(data: Any, owned: Callable[[str], S | None], limit: int) -> FragmentData | Refused[S]:
    if not isinstance(data, dict):
        return Refused(ErrorCode.INVALID_EVENT, "fragment:data payload must be an object")
    stream_id, fragment_id = raw_str(data, "stream_id"), raw_str(data, "fragment_id")
    # Refused before its fields are known: its stream (if any) stops waiting for its sequence number (if any).
    session, seq = (owned(stream_id) if stream_id else None), raw_int(data, "sequence_number")
    audio = data.get("audio")
    encoded = audio.get("data_base64") if isinstance(audio, dict) else None
    if isinstance(encoded, str) and (size := decoded_base64_length(encoded)) > limit:
        message = f"audio is {size} bytes, limit {limit}"
        return Refused(ErrorCode.PAYLOAD_TOO_LARGE, message, stream_id, fragment_id, charged_to=session, skip=seq)
    try:
        return FragmentData.model_validate(data)
    except ValidationError as exc:
        code = ErrorCode.INVALID_AUDIO_FORMAT if _is_audio_format_error(exc) else ErrorCode.INVALID_EVENT
        message = f"invalid fragment:data: {validation_summary(exc)}"
        return Refused(code, message, stream_id, fragment_id, charged_to=session, skip=seq)


def _check_session(fragment: FragmentData, session: S | None, mirrors_audio: bool) -> Admitted[S] | Refused[S]:
    ids = {"stream_id": fragment.stream_id, "fragment_id": fragment.fragment_id}
    if session is None or session.state is SessionState.ENDING:
        message = f"stream {fragment.stream_id!r} is not initialised on this connection (or has ended)"
        return Refused(ErrorCode.STREAM_NOT_FOUND, message, **ids)
    if session.state is SessionState.PAUSED:
        message = "stream is paused; send stream:resume, then this fragment again"
        return _retry_later(ErrorCode.STREAM_PAUSED, message, fragment, session)
    seq = fragment.sequence_number
    if not mirrors_audio and (problem := audio_problem(fragment)):
        return Refused(ErrorCode.INVALID_AUDIO_FORMAT, problem, **ids, charged_to=session, skip=seq)
    try:
        session.check_sequence(seq)
    except SequenceRejected as exc:
        return Refused(ErrorCode.INVALID_EVENT, str(exc), **ids, charged_to=session)
    if session.inflight + 1 > HIGH_MAX_INFLIGHT:
        # Not skipped in the order buffer: the client may retry this sequence number after a pause.
        message = f"{session.inflight} fragments in flight (limit {HIGH_MAX_INFLIGHT}); pause and retry"
        return _retry_later(ErrorCode.BACKPRESSURE_EXCEEDED, message, fragment, session)
    return Admitted(fragment, session)


def _retry_later(code: ErrorCode, message: str, fragment: FragmentData, session: S) -> Refused[S]:
    """A refusal the client may send again later (a warning; its sequence number stays awaited)."""
    return Refused(code, message, fragment.stream_id, fragment.fragment_id, ErrorSeverity.WARNING, True, session)


def audio_problem(fragment: FragmentData) -> str | None:
    """Cheap checks of the audio bytes (decoding the codec is the processor's job)."""
    try:
        raw = fragment.audio.decode_bytes()
    except ValueError as exc:
        return str(exc)
    if not raw:
        return "audio.data_base64 is empty"
    if fragment.audio.format is AudioFormat.PCM_S16LE and len(raw) % (2 * fragment.audio.channels):
        channels = fragment.audio.channels
        return f"pcm_s16le data of {len(raw)} bytes is not a whole number of {channels}-channel 16-bit frames"
    return None


def decoded_base64_length(data_base64: str) -> int:
    """Length of the bytes a (padded, whitespace-free) base64 string decodes to, without decoding it."""
    padding = 2 if data_base64.endswith("==") else 1 if data_base64.endswith("=") else 0
    return len(data_base64) * 3 // 4 - padding


def raw_str(data: Any, key: str) -> str | None:
    """A string field of a payload not validated (yet, or at all)."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def raw_int(data: Any, key: str) -> int | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def validation_summary(exc: ValidationError) -> str:
    """A pydantic error in one line: `field: message; ...`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors())


def _is_audio_format_error(exc: ValidationError) -> bool:
    return any(
        len(e["loc"]) >= 2 and e["loc"][0] == "audio" and e["loc"][1] in _AUDIO_FORMAT_FIELDS for e in exc.errors()
    )
