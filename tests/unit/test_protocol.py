"""Every protocol event survives the wire (to_wire -> JSON -> model_validate) and bad payloads are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from livedub.protocol import (
    CLIENT_EVENTS,
    MAX_SEQUENCE_NUMBER,
    SERVER_EVENTS,
    AudioFormat,
    AudioPayload,
    Backpressure,
    BackpressureAction,
    BackpressureSeverity,
    Capability,
    DubChunk,
    ErrorCode,
    ErrorEvent,
    ErrorSeverity,
    ErrorSimulation,
    ErrorSimulationAck,
    ErrorSimulationRule,
    Event,
    EventName,
    FragmentAck,
    FragmentAckStatus,
    FragmentData,
    FragmentError,
    FragmentMetadata,
    FragmentProcessed,
    FragmentStatus,
    MonitorSubscribe,
    StageTimings,
    StreamComplete,
    StreamConfig,
    StreamControl,
    StreamInit,
    StreamReady,
)

pytestmark = pytest.mark.unit

AUDIO = AudioPayload.from_bytes(
    b"\x01\x00\xff\x7f" * 8, format=AudioFormat.PCM_S16LE, sample_rate_hz=16000, channels=1, duration_ms=1.0
)

# One representative, fully populated payload per event name.
SAMPLES: dict[str, Event] = {
    "stream:init": StreamInit(
        stream_id="s1",
        worker_id="w1",
        config=StreamConfig(
            source_language="en",
            target_language="es",
            format=AudioFormat.PCM_S16LE,
            sample_rate_hz=16000,
            max_inflight=5,
            timeout_ms=9000,
        ),
    ),
    "fragment:data": FragmentData(
        fragment_id="f1", stream_id="s1", sequence_number=7, timestamp=1234, audio=AUDIO, metadata={"pts_ms": 42000}
    ),
    "stream:pause": StreamControl(stream_id="s1", reason="backpressure"),
    "stream:resume": StreamControl(stream_id="s1"),
    "stream:end": StreamControl(stream_id="s1", reason="source ended"),
    "monitor:subscribe": MonitorSubscribe(stream_id="s1"),
    "config:error_simulation": ErrorSimulation(
        enabled=True,
        rules=[
            ErrorSimulationRule(trigger="sequence_number", value=3, error_code=ErrorCode.MODEL_ERROR, stage="asr"),
            ErrorSimulationRule(trigger="nth_fragment", value=2, delay_ms=500, count=1),
        ],
    ),
    "config:error_simulation:ack": ErrorSimulationAck(status="accepted", rules_count=2),
    "stream:ready": StreamReady(stream_id="s1", session_id="abc", max_inflight=3, capabilities={"formats": ["m4a"]}),
    "fragment:ack": FragmentAck(fragment_id="f1", status=FragmentAckStatus.QUEUED, timestamp=1, queue_position=2),
    "fragment:processed": FragmentProcessed(
        fragment_id="f1",
        stream_id="s1",
        sequence_number=7,
        status=FragmentStatus.PARTIAL,
        dubbed_audio=AUDIO,
        transcript="hello",
        translated_text="hola",
        processing_time_ms=812,
        stage_timings=StageTimings(asr_ms=300, translation_ms=200, tts_ms=250),
        error=FragmentError(stage="tts", code=ErrorCode.TTS_SYNTHESIS_FAILED, message="x", retryable=True),
        metadata=FragmentMetadata(
            original_duration_ms=6000, dubbed_duration_ms=6900, duration_variance_percent=15.0, speed_ratio=1.2
        ),
    ),
    "fragment:chunk": DubChunk(
        fragment_id="f1",
        stream_id="s1",
        sequence_number=7,
        target_language="es",
        index=1,
        offset_ms=1450,
        audio=AUDIO,
        text="y vuelva a marcar.",
        final=True,
    ),
    "backpressure": Backpressure(
        stream_id="s1",
        severity=BackpressureSeverity.MEDIUM,
        action=BackpressureAction.SLOW_DOWN,
        current_inflight=5,
        max_inflight=3,
        queue_depth=2,
        recommended_delay_ms=500,
    ),
    "stream:complete": StreamComplete(
        stream_id="s1", total_fragments=3, total_duration_ms=18000, statistics={"success_count": 3}
    ),
    "error": ErrorEvent(
        code=ErrorCode.STREAM_NOT_FOUND,
        message="no such stream",
        severity=ErrorSeverity.LOW,
        retryable=False,
        stream_id="s1",
        fragment_id="f1",
    ),
}


def test_samples_cover_every_event() -> None:
    assert set(SAMPLES) == set(CLIENT_EVENTS) | set(SERVER_EVENTS)


@pytest.mark.parametrize("event", sorted(SAMPLES))
def test_round_trip_through_json(event: str) -> None:
    model = {**CLIENT_EVENTS, **SERVER_EVENTS}[event]
    sample = SAMPLES[event]
    assert isinstance(sample, model)
    wire = json.loads(json.dumps(sample.to_wire()))
    again = model.model_validate(wire)
    assert again == sample
    assert again.to_wire() == wire


def test_wire_uses_plain_strings_and_null_for_absent_optionals() -> None:
    """Seed fidelity 8: the STS sends absent optional fields as null, like the seed's servers; client events leave
    them out (a seed server never sees livedub's extension fields, not even as null)."""
    wire = FragmentAck(fragment_id="f", status=FragmentAckStatus.PROCESSING, timestamp=5).to_wire()
    assert wire == {"fragment_id": "f", "status": "processing", "timestamp": 5, "queue_position": None}
    processed = FragmentProcessed(fragment_id="f", stream_id="s", sequence_number=0, status=FragmentStatus.FAILED)
    wire = processed.to_wire()
    assert {k: wire[k] for k in ("dubbed_audio", "transcript", "translated_text", "error")} == dict.fromkeys(
        ("dubbed_audio", "transcript", "translated_text", "error")
    )
    error = ErrorEvent(code=ErrorCode.TIMEOUT, message="m").to_wire()
    assert (error["stream_id"], error["fragment_id"], error["severity"]) == (None, None, "error")
    assert "reason" not in StreamControl(stream_id="s").to_wire()


def test_timing_fields_are_integers() -> None:
    """Seed fidelity 8: processing_time_ms, total_duration_ms and stage_timings.* are whole milliseconds."""
    processed = FragmentProcessed(
        fragment_id="f",
        stream_id="s",
        sequence_number=0,
        status=FragmentStatus.SUCCESS,
        processing_time_ms=812.6,
        stage_timings=StageTimings(asr_ms=300.4, translation_ms=0.5, tts_ms=250),
    )
    wire = json.loads(json.dumps(processed.to_wire()))
    assert wire["processing_time_ms"] == 813 and isinstance(wire["processing_time_ms"], int)
    assert wire["stage_timings"] == {"asr_ms": 300, "translation_ms": 0, "tts_ms": 250}
    assert all(isinstance(v, int) for v in wire["stage_timings"].values())
    complete = StreamComplete(stream_id="s", total_fragments=1, total_duration_ms=999.7).to_wire()
    assert complete["total_duration_ms"] == 1000 and isinstance(complete["total_duration_ms"], int)
    with pytest.raises(ValidationError):
        StageTimings.model_validate({"asr_ms": "slow"})


def test_error_severities_are_the_seeds() -> None:
    """Seed fidelity 6: warning / error / fatal on the wire; livedub's old names read as their seed level."""
    assert [s.value for s in ErrorSeverity] == ["warning", "error", "fatal"]
    assert ErrorSeverity.LOW is ErrorSeverity.WARNING and ErrorSeverity.HIGH is ErrorSeverity.ERROR
    for old, new in (("low", "warning"), ("medium", "error"), ("high", "error"), ("fatal", "fatal")):
        assert ErrorEvent.model_validate({"code": "TIMEOUT", "message": "m", "severity": old}).severity == new
    with pytest.raises(ValidationError):
        ErrorEvent.model_validate({"code": "TIMEOUT", "message": "m", "severity": "panic"})


def test_top_level_max_inflight_and_timeout_ms_win() -> None:
    """Seed fidelity 2: spec 016 sends them at the top level of stream:init; livedub's clients in config."""
    top = StreamInit.model_validate({"stream_id": "s", "max_inflight": 5, "timeout_ms": 20000})
    assert (top.config.max_inflight, top.config.timeout_ms) == (5, 20000)
    both = StreamInit.model_validate(
        {"stream_id": "s", "max_inflight": 10, "config": {"max_inflight": 2, "timeout_ms": 4000}}
    )
    assert (both.config.max_inflight, both.config.timeout_ms) == (10, 4000)
    assert StreamInit.model_validate({"stream_id": "s", "config": {"max_inflight": 4}}).config.max_inflight == 4
    for bad in ({"max_inflight": 11}, {"max_inflight": 0}, {"timeout_ms": 5}):
        with pytest.raises(ValidationError):
            StreamInit.model_validate({"stream_id": "s", **bad})


def test_sequence_numbers_are_bounded() -> None:
    base = {"fragment_id": "f", "stream_id": "s", "audio": AUDIO.to_wire()}
    assert FragmentData.model_validate({**base, "sequence_number": MAX_SEQUENCE_NUMBER}).sequence_number == 2**31 - 1
    for too_big in (MAX_SEQUENCE_NUMBER + 1, 2**70):
        with pytest.raises(ValidationError):
            FragmentData.model_validate({**base, "sequence_number": too_big})


def test_worker_acks_and_error_simulation_rules_validate() -> None:
    ack = FragmentAck.model_validate({"fragment_id": "f", "status": "received", "timestamp": 1})
    assert ack.status is FragmentAckStatus.RECEIVED
    seed_rule = {"trigger": "nth_fragment", "value": 3, "error_code": "TIMEOUT", "stage": "asr"}
    assert ErrorSimulation.model_validate({"enabled": True, "rules": [seed_rule]}).rules[0].value == 3
    for bad in (
        {"trigger": "nth_fragment", "value": 0},
        {"trigger": "sequence_number", "value": "three"},
        {"trigger": "fragment_id", "value": 3},
        {"error_code": "NOT_A_CODE"},
        {"delay_ms": -1},
    ):
        with pytest.raises(ValidationError):
            ErrorSimulationRule.model_validate(bad)


def test_unknown_fields_from_the_seed_peer_are_kept() -> None:
    init = StreamInit.model_validate({"stream_id": "s", "config": {"domain_hints": ["sports"]}, "extra": 1})
    assert init.to_wire()["extra"] == 1
    assert init.config.to_wire()["domain_hints"] == ["sports"]


def test_stream_init_defaults_match_the_seed() -> None:
    config = StreamInit.model_validate({"stream_id": "s"}).config
    assert (config.max_inflight, config.timeout_ms, config.format) == (3, 8000, AudioFormat.M4A)


def test_audio_bytes_round_trip_and_bad_base64() -> None:
    assert AUDIO.decode_bytes() == b"\x01\x00\xff\x7f" * 8
    bad = AUDIO.model_copy(update={"data_base64": "not base64!!"})
    with pytest.raises(ValueError, match="base64"):
        bad.decode_bytes()


def test_long_error_messages_are_cut() -> None:
    assert len(ErrorEvent(code=ErrorCode.TIMEOUT, message="x" * 5000).message) == 2000


INVALID: list[tuple[type[Event], dict[str, Any]]] = [
    (StreamInit, {}),
    (StreamInit, {"stream_id": ""}),
    (StreamInit, {"stream_id": "s", "config": {"max_inflight": 11}}),
    (StreamInit, {"stream_id": "s", "config": {"max_inflight": 0}}),
    (StreamInit, {"stream_id": "s", "config": {"format": "mp3"}}),
    (StreamInit, {"stream_id": "s", "config": {"sample_rate_hz": 100}}),
    (StreamInit, {"stream_id": "s", "config": "fast"}),
    (FragmentData, {"fragment_id": "f", "stream_id": "s", "sequence_number": 0}),
    (FragmentData, {"fragment_id": "f", "stream_id": "s", "sequence_number": -1, "audio": AUDIO.to_wire()}),
    (FragmentData, {"fragment_id": "f", "stream_id": "s", "sequence_number": "zero", "audio": AUDIO.to_wire()}),
    (
        FragmentData,
        {"fragment_id": "f", "stream_id": "s", "sequence_number": 0, "audio": {**AUDIO.to_wire(), "channels": 0}},
    ),
    (StreamControl, {"reason": "x"}),
    (FragmentAck, {"fragment_id": "f", "status": "done"}),
    (FragmentProcessed, {"fragment_id": "f", "stream_id": "s", "sequence_number": 0, "status": "ok"}),
    (FragmentError, {"stage": "mixing", "code": "TIMEOUT", "message": "m"}),
    (
        Backpressure,
        {"stream_id": "s", "severity": "extreme", "action": "pause", "current_inflight": 1, "max_inflight": 3},
    ),
    (ErrorEvent, {"code": "NOT_A_CODE", "message": "m"}),
]


@pytest.mark.parametrize(("model", "payload"), INVALID, ids=[f"{m.__name__}-{i}" for i, (m, _) in enumerate(INVALID)])
def test_invalid_payloads_are_refused(model: type[Event], payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(payload)


def test_event_names_are_defined_once() -> None:
    assert set(EventName) == set(CLIENT_EVENTS) | set(SERVER_EVENTS)
    assert set(CLIENT_EVENTS) & set(SERVER_EVENTS) == {EventName.FRAGMENT_ACK}  # the worker's ack: `received`
    assert CLIENT_EVENTS[EventName.FRAGMENT_ACK] is SERVER_EVENTS[EventName.FRAGMENT_ACK]
    assert EventName.FRAGMENT_DATA == "fragment:data" and f"{EventName.STREAM_READY}" == "stream:ready"


def test_extension_fields_are_absent_from_the_wire_unless_set() -> None:
    seed_fragment = FragmentData(fragment_id="f", stream_id="s", sequence_number=0, audio=AUDIO)
    assert "deadline_ms" not in seed_fragment.to_wire()  # a seed client's wire is unchanged
    assert FragmentData.model_validate(seed_fragment.to_wire()).deadline_ms is None
    timed = seed_fragment.model_copy(update={"deadline_ms": 2500})
    assert FragmentData.model_validate(json.loads(json.dumps(timed.to_wire()))).deadline_ms == 2500
    assert StreamConfig().dub_overrun_ms == 0  # the seed's behaviour: the dub has the fragment's duration
    assert StreamConfig.model_validate({"dub_overrun_ms": 1500}).dub_overrun_ms == 1500
    for bad in ({"deadline_ms": -1}, {"deadline_ms": "soon"}):
        with pytest.raises(ValidationError):
            FragmentData.model_validate({**seed_fragment.to_wire(), **bad})
    with pytest.raises(ValidationError):
        StreamConfig.model_validate({"dub_overrun_ms": -5})


def test_capabilities_are_read_as_announced() -> None:
    ready = StreamReady(stream_id="s", session_id="x", max_inflight=3, capabilities={"deadline": True})
    assert ready.supports(Capability.DEADLINE) and not ready.supports(Capability.DUB_OVERRUN)
    seed = StreamReady.model_validate({"stream_id": "s", "session_id": "x", "max_inflight": 3})
    assert not seed.supports(Capability.DEADLINE)  # a seed server announces nothing: no deadlines


def test_protocol_doc_is_generated_from_these_models() -> None:
    from livedub.sts import protocol_doc

    text = protocol_doc.DOC_PATH.read_text(encoding="utf-8")
    assert protocol_doc.render(text) == text, "docs/protocol.md is stale: run python -m livedub.sts.protocol_doc"
    for event in SAMPLES:
        assert f"| `{event}` |" in text
    for code in ErrorCode:
        assert f"| `{code.value}` |" in text
