"""The small parts of the STS edge: the one reply builder, a processor's declared features, a session's state."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest

from livedub.protocol import (
    ErrorCode,
    FragmentData,
    FragmentProcessed,
    FragmentStatus,
    StreamConfig,
)
from livedub.sts.features import ProcessorFeatures
from livedub.sts.metrics import StsMetrics
from livedub.sts.pipeline import EchoPipeline
from livedub.sts.replies import Failure, failed_result, reply
from livedub.sts.session import SessionState, StreamSession
from livedub.sts.settings import StsSettings

pytestmark = pytest.mark.unit


def fragment(seq: int = 3) -> FragmentData:
    audio = {"format": "pcm_s16le", "sample_rate_hz": 16000, "channels": 1, "duration_ms": 250.0,
             "data_base64": base64.b64encode(b"\x00\x01" * 4).decode()}  # fmt: skip
    return FragmentData.model_validate(
        {"fragment_id": f"f{seq}", "stream_id": "s", "sequence_number": seq, "timestamp": 0, "audio": audio}
    )


def test_one_builder_addresses_answers_and_builds_failures() -> None:
    answer = FragmentProcessed(fragment_id="?", stream_id="?", sequence_number=0, status=FragmentStatus.PARTIAL)
    addressed = reply(fragment(), answer, "fr")
    assert (addressed.fragment_id, addressed.stream_id, addressed.sequence_number) == ("f3", "s", 3)
    assert (addressed.status, addressed.target_language) == (FragmentStatus.PARTIAL, "fr")
    assert reply(fragment(), answer.model_copy(update={"target_language": "it"})).target_language == "it"

    late = reply(fragment(), Failure.timeout("too late", time.monotonic() - 0.2), "es")
    assert late.status is FragmentStatus.FAILED and late.target_language == "es"
    assert late.error is not None and (late.error.code, late.error.stage, late.error.retryable) == (
        ErrorCode.TIMEOUT, "timeout", True,
    )  # fmt: skip
    assert late.processing_time_ms >= 200 and late.metadata.original_duration_ms == 250.0
    crash = reply(fragment(), Failure.crash(RuntimeError("boom"), time.monotonic()))
    assert crash.error is not None and crash.error.message == "RuntimeError: boom" and not crash.error.retryable
    missing = reply(fragment(), Failure.unanswered("de"), "de")
    assert missing.error is not None and missing.error.message == "no answer for target de"
    legacy = failed_result(fragment(), "pipeline", ErrorCode.INTERNAL_ERROR, "x", retryable=False, processing_time_ms=1)
    assert legacy == reply(fragment(), Failure("pipeline", ErrorCode.INTERNAL_ERROR, "x", False, 1.0))


class Bare:
    def check_languages(self, source: str, target: str) -> None: ...


class Prepared(Bare):
    def __init__(self) -> None:
        self.prepared: list[Any] = []
        self.forgotten: list[str] = []

    def prepare(self, source: str, targets: list[str]) -> None:
        self.prepared.append((source, targets))

    def end_stream(self, stream_id: str) -> None:
        self.forgotten.append(stream_id)

    def usual_time_s(self, audio_s: float) -> float:
        return audio_s / 2


def test_features_are_read_once_from_declared_protocols() -> None:
    bare = ProcessorFeatures.of(Bare())
    bare.prepare("en", ["es"])  # no-ops
    bare.end_stream("s")
    assert bare.usual_time_s is None and bare.error_simulator is None and not bare.mirrors_audio

    processor = Prepared()
    features = ProcessorFeatures.of(processor)
    features.prepare("en", ["es", "fr"])
    features.end_stream("s")
    assert processor.prepared == [("en", ["es", "fr"])] and processor.forgotten == ["s"]
    assert features.usual_time_s is not None and features.usual_time_s(3.0) == 1.5

    echo = EchoPipeline()
    assert ProcessorFeatures.of(echo).mirrors_audio
    assert ProcessorFeatures.of(echo).error_simulator is echo.error_simulation


def test_the_session_owns_pause_resume_and_end() -> None:
    async def scenario() -> None:
        async def emit(_event: str, _payload: dict[str, Any]) -> None:
            return None

        config = StreamConfig(source_language="en", target_language="es")
        session = StreamSession(stream_id="s", worker_id="w", sid="c", config=config, emit=emit, metrics=StsMetrics())
        assert not session.resume() and session.state is SessionState.ACTIVE
        assert session.pause() and session.state is SessionState.PAUSED
        assert not session.pause()
        assert session.resume() and session.state is SessionState.ACTIVE
        assert session.begin_end() and session.state is SessionState.ENDING
        assert not session.begin_end() and not session.pause() and not session.resume()
        session.close()
        assert session.closed and not session.begin_end()

    asyncio.run(scenario())


def test_auto_disconnect_delay_is_a_seed_named_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTO_DISCONNECT_DELAY", raising=False)
    assert StsSettings(_env_file=None).auto_disconnect_delay_s == 5.0  # type: ignore[call-arg]
    monkeypatch.setenv("AUTO_DISCONNECT_DELAY", "1")
    assert StsSettings(_env_file=None).auto_disconnect_delay_s == 1.0  # type: ignore[call-arg]
    monkeypatch.setenv("AUTO_DISCONNECT_DELAY", "-1")
    with pytest.raises(ValueError, match="AUTO_DISCONNECT_DELAY"):
        StsSettings(_env_file=None)  # type: ignore[call-arg]
