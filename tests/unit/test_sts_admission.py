"""The STS's admission of a `fragment:data` (livedub.sts.admission.admit) as a plain function: one row per rung of
the ladder, in its order, with a fake session."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import pytest

from livedub.protocol import ErrorCode, ErrorSeverity, FragmentData
from livedub.sts.admission import Admitted, Refused, admit, audio_problem, decoded_base64_length
from livedub.sts.session import HIGH_MAX_INFLIGHT, SequenceRejected, SessionState

pytestmark = pytest.mark.unit

LIMIT = 1000


@dataclass
class FakeSession:
    state: SessionState = SessionState.ACTIVE
    inflight: int = 0
    seen: set[int] = field(default_factory=set)

    def check_sequence(self, seq: int) -> None:
        if seq in self.seen:
            raise SequenceRejected(f"sequence_number {seq} was already received")


def payload(pcm: bytes = b"\x00\x10" * 100, **fields: Any) -> dict[str, Any]:
    audio = {"format": "pcm_s16le", "sample_rate_hz": 16000, "channels": 1, "duration_ms": len(pcm) / 32.0,
             "data_base64": base64.b64encode(pcm).decode("ascii")}  # fmt: skip
    data = {"fragment_id": "f7", "stream_id": "s", "sequence_number": 7, "timestamp": 0, "audio": audio}
    return {**data, **fields}


def bad_audio(**audio: Any) -> dict[str, Any]:
    data = payload()
    return {**data, "audio": {**data["audio"], **audio}}


# (case, payload, session of stream "s" (None: not this connection's), mirrors_audio,
#  expected code (None: admitted), severity, retryable, charged to the session, sequence number skipped)
CASES = [
    ("accepted", payload(), FakeSession(), False, None, None, None, None, None),
    ("not an object", ["x"], FakeSession(), False, ErrorCode.INVALID_EVENT, ErrorSeverity.ERROR, False, False, None),
    ("too large", payload(pcm=b"\x00" * 1200), FakeSession(), False, ErrorCode.PAYLOAD_TOO_LARGE,
     ErrorSeverity.ERROR, False, True, 7),
    ("too large, stream unknown", payload(pcm=b"\x00" * 1200), None, False, ErrorCode.PAYLOAD_TOO_LARGE,
     ErrorSeverity.ERROR, False, False, 7),
    ("missing field", {**payload(), "timestamp": "soon"}, FakeSession(), False, ErrorCode.INVALID_EVENT,
     ErrorSeverity.ERROR, False, True, 7),
    ("bad audio format field", bad_audio(format="mp3"), FakeSession(), False, ErrorCode.INVALID_AUDIO_FORMAT,
     ErrorSeverity.ERROR, False, True, 7),
    ("unknown stream", payload(), None, False, ErrorCode.STREAM_NOT_FOUND, ErrorSeverity.ERROR, False, False, None),
    ("ending stream", payload(), FakeSession(SessionState.ENDING), False, ErrorCode.STREAM_NOT_FOUND,
     ErrorSeverity.ERROR, False, False, None),
    ("paused stream", payload(), FakeSession(SessionState.PAUSED), False, ErrorCode.STREAM_PAUSED,
     ErrorSeverity.WARNING, True, True, None),
    ("odd pcm bytes", payload(pcm=b"\x00" * 101), FakeSession(), False, ErrorCode.INVALID_AUDIO_FORMAT,
     ErrorSeverity.ERROR, False, True, 7),
    ("odd pcm bytes, mirrored", payload(pcm=b"\x00" * 101), FakeSession(), True, None, None, None, None, None),
    ("empty audio", bad_audio(data_base64=""), FakeSession(), False, ErrorCode.INVALID_AUDIO_FORMAT,
     ErrorSeverity.ERROR, False, True, 7),
    ("sequence seen", payload(), FakeSession(seen={7}), False, ErrorCode.INVALID_EVENT, ErrorSeverity.ERROR, False,
     True, None),
    ("in-flight limit", payload(), FakeSession(inflight=HIGH_MAX_INFLIGHT), False, ErrorCode.BACKPRESSURE_EXCEEDED,
     ErrorSeverity.WARNING, True, True, None),
    ("just under the limit", payload(), FakeSession(inflight=HIGH_MAX_INFLIGHT - 1), False, None, None, None, None,
     None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "session", "mirrors", "code", "severity", "retryable", "charged", "skip"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_admission_ladder(
    data: Any,
    session: FakeSession | None,
    mirrors: bool,
    code: ErrorCode | None,
    severity: ErrorSeverity | None,
    retryable: bool | None,
    charged: bool | None,
    skip: int | None,
) -> None:
    def owned(stream_id: str) -> FakeSession | None:
        return session if stream_id == "s" else None

    decision = admit(data, owned, max_fragment_bytes=LIMIT, mirrors_audio=mirrors)
    if code is None:
        assert isinstance(decision, Admitted)
        assert decision.session is session and decision.fragment.sequence_number == 7
        return
    assert isinstance(decision, Refused)
    assert (decision.code, decision.severity, decision.retryable) == (code, severity, retryable)
    assert decision.charged_to is session if charged else decision.charged_to is None, decision
    assert decision.skip == skip
    event = decision.event()
    assert event.code is code and event.message == decision.message
    if isinstance(data, dict):
        assert (event.stream_id, event.fragment_id) == ("s", "f7")


def test_admission_only_reads_the_session() -> None:
    session = FakeSession(inflight=3)
    before = (session.state, session.inflight, set(session.seen))
    for data in (payload(), payload(pcm=b"\x00" * 101), payload(pcm=b"\x00" * 1200)):
        admit(data, lambda _s: session, max_fragment_bytes=LIMIT, mirrors_audio=False)
    assert (session.state, session.inflight, session.seen) == before


def test_decoded_length_and_audio_checks() -> None:
    for raw in (b"", b"a", b"ab", b"abc", b"abcd"):
        assert decoded_base64_length(base64.b64encode(raw).decode()) == len(raw)
    stereo = FragmentData.model_validate(bad_audio(channels=2, data_base64=base64.b64encode(b"\x00" * 6).decode()))
    assert "2-channel" in (audio_problem(stereo) or "")
    assert audio_problem(FragmentData.model_validate(payload())) is None
