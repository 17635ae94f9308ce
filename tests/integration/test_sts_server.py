"""The STS server over a real uvicorn + a real Socket.IO client, with a fake FragmentProcessor (no models).

The fake is steered per fragment through `metadata`: `hold` names a gate the processing waits on (so tests decide
the order in which fragments finish, without sleeping), and audio starting with b"GARBAGE" does not decode.
A held fragment is also the "artificially slow" one of the deadline tests: it ignores its deadline.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import socketio
from sts_testkit import Recorder, init_payload, pcm_fragment, running_server

from livedub.deadline import NO_DEADLINE, Deadline
from livedub.dubbing.interfaces import UnsupportedLanguageError
from livedub.protocol import (
    AudioFormat,
    AudioPayload,
    DubChunk,
    ErrorCode,
    FragmentData,
    FragmentError,
    FragmentProcessed,
    FragmentStatus,
    StageTimings,
    StreamConfig,
)
from livedub.sts.payload_audio import encode_audio
from livedub.sts.pipeline import EchoPipeline
from livedub.sts.processor import MainTargetOnly

pytestmark = pytest.mark.integration


class FakeProcessor(MainTargetOnly):
    """Echoes the audio back as the 'dub'; records when each fragment starts and finishes."""

    def __init__(self, *, warm: bool = True) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.warmup_gate = threading.Event()
        if warm:
            self.warmup_gate.set()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.deadline_left_s: dict[str, float] = {}  # time left to its deadline when each fragment started
        self._lock = threading.Condition()

    def gate(self, name: str) -> threading.Event:
        with self._lock:
            return self.gates.setdefault(name, threading.Event())

    def release_all(self) -> None:
        with self._lock:
            for gate in self.gates.values():
                gate.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (off the event loop) until `condition()` holds for the fragments started/finished so far."""

        def wait() -> bool:
            with self._lock:
                return self._lock.wait_for(condition, timeout=20)

        assert await asyncio.to_thread(wait), "processor never reached the expected state"

    def check_languages(self, source: str, target: str) -> None:
        if (source, target) not in {("en", "es"), ("es", "en")}:
            raise UnsupportedLanguageError(f"unsupported language pair {source}->{target}")

    def process(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE
    ) -> FragmentProcessed:
        with self._lock:
            self.deadline_left_s[fragment.fragment_id] = deadline.remaining()
            self.started.append(fragment.fragment_id)
            self._lock.notify_all()
        hold = (fragment.metadata or {}).get("hold")
        if hold:
            self.gate(hold).wait(30)
        try:
            if fragment.audio.decode_bytes().startswith(b"GARBAGE"):
                return FragmentProcessed(
                    fragment_id=fragment.fragment_id,
                    stream_id=fragment.stream_id,
                    sequence_number=fragment.sequence_number,
                    status=FragmentStatus.FAILED,
                    error=FragmentError(
                        stage="decode", code=ErrorCode.INVALID_AUDIO_FORMAT, message="m4a data does not decode"
                    ),
                )
            return FragmentProcessed(
                fragment_id=fragment.fragment_id,
                stream_id=fragment.stream_id,
                sequence_number=fragment.sequence_number,
                status=FragmentStatus.SUCCESS,
                dubbed_audio=fragment.audio,
                transcript=f"text {fragment.sequence_number}",
                translated_text=f"texto {fragment.sequence_number}",
                processing_time_ms=5.0,
                stage_timings=StageTimings(asr_ms=2.0, translation_ms=1.0, tts_ms=2.0),
            )
        finally:
            with self._lock:
                self.finished.append(fragment.fragment_id)
                self._lock.notify_all()

    def warmup(self) -> None:
        self.warmup_gate.wait(30)

    def describe(self) -> dict[str, Any]:
        return {"pipeline": "fake", "asr": "fake-asr", "translators": {"en-es": "fake-mt"}, "tts": {"es": "fake-tts"}}


async def _ready(client: Recorder, stream_id: str, **config: Any) -> dict[str, Any]:
    after = len(client.events)
    await client.emit("stream:init", init_payload(stream_id, **config))
    return await client.next_event("stream:ready", after, stream_id=stream_id)


async def test_in_order_delivery_when_fragments_finish_out_of_order() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=3) as srv:
        client = await Recorder().connect(srv.url)
        ready = await _ready(client, "s")
        assert ready["max_inflight"] == 3 and ready["capabilities"]["in_order_delivery"] is True
        await client.emit("fragment:data", pcm_fragment("s", 0, metadata={"hold": "first"}))
        await client.emit("fragment:data", pcm_fragment("s", 1))
        await client.emit("fragment:data", pcm_fragment("s", 2))
        await processor.until(lambda: {"s-1", "s-2"} <= set(processor.finished))
        assert client.of("fragment:processed") == []  # 1 and 2 are done but must wait for 0
        # s-0 runs (held): its `processing` ack comes while it does.
        await client.wait_for(
            lambda _: any(a["status"] == "processing" and a["fragment_id"] == "s-0" for a in client.of("fragment:ack"))
        )
        processor.gate("first").set()
        processed = await client.count("fragment:processed", 3)
        await client.emit("stream:end", {"stream_id": "s"})
        complete = await client.next_event("stream:complete", 0)
        await client.close()
    assert processor.finished.index("s-0") > processor.finished.index("s-2")  # really finished out of order
    assert [p["sequence_number"] for p in processed] == [0, 1, 2]
    assert [p["status"] for p in processed] == ["success"] * 3
    assert processed[1]["translated_text"] == "texto 1" and processed[1]["dubbed_audio"]["format"] == "pcm_s16le"
    acks = client.of("fragment:ack")
    first_acks = [a for a in acks if a["status"] == "queued"]
    assert [a["fragment_id"] for a in first_acks] == ["s-0", "s-1", "s-2"]
    assert all(a["queue_position"] == 0 for a in first_acks)  # three threads: nothing waits
    assert {a["fragment_id"] for a in acks if a["status"] == "processing"} <= {"s-0", "s-1", "s-2"}
    assert ("processing", "s-0") in [(a["status"], a["fragment_id"]) for a in acks]  # s-0 was held while running
    assert complete["total_fragments"] == 3 and complete["statistics"]["success_count"] == 3
    assert complete["total_duration_ms"] == pytest.approx(300.0)
    # Every fragment's ack precedes its fragment:processed.
    names = [(e, p.get("fragment_id"), p.get("status")) for e, p in client.events]
    for fid in ("s-0", "s-1", "s-2"):
        queued = names.index(("fragment:ack", fid, "queued"))
        assert queued < names.index(("fragment:processed", fid, "success"))
        if ("fragment:ack", fid, "processing") in names:
            assert (
                queued
                < names.index(("fragment:ack", fid, "processing"))
                < names.index(("fragment:processed", fid, "success"))
            )


async def test_bad_inputs_get_their_error_codes_and_the_session_keeps_working() -> None:
    processor = FakeProcessor()
    async with running_server(processor, max_fragment_bytes=4096) as srv:
        client = await Recorder().connect(srv.url)
        bystander = await Recorder().connect(srv.url)
        await _ready(bystander, "other")

        async def expect_error(event: str, payload: Any, code: ErrorCode, **match: Any) -> dict[str, Any]:
            after = len(client.events)
            await client.emit(event, payload)
            error = await client.next_event("error", after)
            assert error["code"] == code.value, error
            assert {"message", "severity", "retryable"} <= set(error)
            for key, value in match.items():
                assert error.get(key) == value, (key, error)
            return error

        await expect_error("stream:init", "not an object", ErrorCode.INVALID_CONFIG)
        await expect_error("stream:init", {"worker_id": "w"}, ErrorCode.INVALID_CONFIG)
        await expect_error("stream:init", init_payload("s", max_inflight=50), ErrorCode.INVALID_CONFIG, stream_id="s")
        await expect_error(
            "stream:init", init_payload("s", target_language="de"), ErrorCode.UNSUPPORTED_LANGUAGE, stream_id="s"
        )
        await _ready(client, "s")

        await expect_error("fragment:data", ["a", "list"], ErrorCode.INVALID_EVENT)
        await expect_error(
            "fragment:data", {"stream_id": "s", "fragment_id": "x"}, ErrorCode.INVALID_EVENT, fragment_id="x"
        )
        await expect_error(
            "fragment:data", {**pcm_fragment("s", 0), "sequence_number": "zero"}, ErrorCode.INVALID_EVENT
        )
        unknown_format = pcm_fragment("s", 0)
        unknown_format["audio"]["format"] = "mp3"
        await expect_error("fragment:data", unknown_format, ErrorCode.INVALID_AUDIO_FORMAT)
        bad_base64 = pcm_fragment("s", 0)
        bad_base64["audio"]["data_base64"] = "%%% not base64 %%%"
        await expect_error("fragment:data", bad_base64, ErrorCode.INVALID_AUDIO_FORMAT, fragment_id="s-0")
        await expect_error("fragment:data", pcm_fragment("s", 1, pcm=b"\x00\x01\x02"), ErrorCode.INVALID_AUDIO_FORMAT)
        await expect_error(
            "fragment:data", pcm_fragment("s", 2, pcm=b"\x00" * 5000), ErrorCode.PAYLOAD_TOO_LARGE, fragment_id="s-2"
        )
        await expect_error("fragment:data", pcm_fragment("nope", 0), ErrorCode.STREAM_NOT_FOUND, stream_id="nope")
        await expect_error("fragment:data", pcm_fragment("other", 0), ErrorCode.STREAM_NOT_FOUND)  # not its stream
        # Valid base64 that is no audio: accepted, then the processor's decode fails -> error + failed fragment.
        await expect_error(
            "fragment:data",
            pcm_fragment("s", 3, pcm=b"GARBAGE!" * 4, audio_format="m4a"),
            ErrorCode.INVALID_AUDIO_FORMAT,
            fragment_id="s-3",
        )
        await expect_error("stream:pause", {"reason": "no id"}, ErrorCode.INVALID_EVENT)
        await expect_error("stream:end", {"stream_id": "nope"}, ErrorCode.STREAM_NOT_FOUND)
        await expect_error("what:ever", {"x": 1}, ErrorCode.INVALID_EVENT)
        await expect_error("monitor:subscribe", {"stream_id": 5}, ErrorCode.INVALID_EVENT)

        # Paused streams refuse fragments (retryable) until resumed.
        await client.emit("stream:pause", {"stream_id": "s"})
        paused = await expect_error("fragment:data", pcm_fragment("s", 4), ErrorCode.STREAM_PAUSED)
        assert (paused["retryable"], paused["severity"], paused["fragment_id"]) == (True, "warning", "s-4")
        await client.emit("stream:resume", {"stream_id": "s"})

        # The session still works: the failed fragment 3 and the good fragment 4 come back, in order.
        await client.emit("fragment:data", pcm_fragment("s", 4))
        processed = await client.count("fragment:processed", 2, stream_id="s")
        assert [(p["sequence_number"], p["status"]) for p in processed] == [(3, "failed"), (4, "success")]
        assert processed[0]["error"]["code"] == "INVALID_AUDIO_FORMAT"
        await expect_error("fragment:data", pcm_fragment("s", 4), ErrorCode.INVALID_EVENT)  # already passed
        # ...and so does the other client's session.
        await bystander.emit("fragment:data", pcm_fragment("other", 0))
        assert (await bystander.count("fragment:processed", 1))[0]["status"] == "success"
        assert bystander.of("error") == []
        await client.emit("stream:end", {"stream_id": "s"})
        complete = await client.next_event("stream:complete", 0, stream_id="s")
        assert (complete["statistics"]["success_count"], complete["statistics"]["failed_count"]) == (1, 1)
        await client.close()
        await bystander.close()


async def test_api_key_is_required_when_configured() -> None:
    async with running_server(FakeProcessor(), api_key="s3cret") as srv:
        for kwargs in ({}, {"auth": {"token": "wrong"}}):
            client = Recorder()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await client.connect(srv.url, **kwargs)
            [refusal] = client.of("connect_error")
            assert refusal["message"] == "UNAUTHORIZED" and refusal["data"]["code"] == "UNAUTHORIZED"
        for url, kwargs in [
            (srv.url, {"auth": {"token": "s3cret"}}),
            (srv.url, {"headers": {"X-API-Key": "s3cret"}}),
            (f"{srv.url}?api_key=s3cret", {}),
        ]:
            client = await Recorder().connect(url, **kwargs)
            await _ready(client, "s")  # an authorised client can work
            await client.close()
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{srv.url}/metrics")).text
        assert 'sts_errors_total{code="UNAUTHORIZED",stage="connect"} 2.0' in metrics


async def test_backpressure_events_and_rejection_over_ten_in_flight() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=1) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, "s", max_inflight=3, timeout_ms=60000)
        await client.emit("fragment:data", pcm_fragment("s", 0, metadata={"hold": "first"}))
        for seq in range(1, 11):
            await client.emit("fragment:data", pcm_fragment("s", seq))
        rejection = await client.next_event("error", 0)
        assert rejection["code"] == "BACKPRESSURE_EXCEEDED" and rejection["fragment_id"] == "s-10"
        assert rejection["retryable"] is True
        await client.count("fragment:ack", 10)
        acks = [a for a in client.of("fragment:ack") if a["status"] == "queued"]
        assert [a["fragment_id"] for a in acks] == [f"s-{i}" for i in range(10)]
        assert [a["queue_position"] for a in acks[:3]] == [0, 0, 1]  # s-0 takes the free thread, s-1 is next
        assert [a["fragment_id"] for a in client.of("fragment:ack") if a["status"] == "processing"][:1] == ["s-0"]
        raised = [(b["current_inflight"], b["severity"], b["action"]) for b in client.of("backpressure")]
        assert client.of("backpressure")[-1]["queue_depth"] == 9  # s-0 runs, nine wait for the thread
        assert raised[0] == (4, "medium", "slow_down")
        assert (7, "high", "pause") in raised and raised[-1] == (10, "high", "pause")
        assert all(b["max_inflight"] == 3 for b in client.of("backpressure"))

        processor.gate("first").set()
        await client.count("fragment:processed", 10)
        relief = await client.wait_for(lambda _: [b for b in client.of("backpressure") if b["action"] == "none"])
        assert relief[-1]["severity"] == "low"
        # The refused fragment may be sent again once the pressure is gone.
        await client.emit("fragment:data", pcm_fragment("s", 10))
        processed = await client.count("fragment:processed", 11)
        assert [p["sequence_number"] for p in processed] == list(range(11))
        await client.close()


async def test_inference_does_not_block_the_event_loop() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=1) as srv:
        first = await Recorder().connect(srv.url)
        await _ready(first, "a", timeout_ms=60000)
        await first.emit("fragment:data", pcm_fragment("a", 0, metadata={"hold": "a"}))
        await processor.until(lambda: "a-0" in processor.started)  # the only inference thread is now busy

        second = await Recorder().connect(srv.url)
        ready = await _ready(second, "b", timeout_ms=60000)
        assert ready["stream_id"] == "b"
        await second.emit("fragment:data", pcm_fragment("b", 0))
        ack = await second.next_event("fragment:ack", 0)
        assert (ack["status"], ack["queue_position"]) == ("queued", 0)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{srv.url}/health")).status_code == 200
            assert (await http.get(f"{srv.url}/metrics")).status_code == 200
        assert "a-0" not in processor.finished  # all of the above happened while a-0 was being processed

        processor.gate("a").set()
        assert (await first.count("fragment:processed", 1))[0]["status"] == "success"
        assert (await second.count("fragment:processed", 1))[0]["status"] == "success"
        await first.close()
        await second.close()


async def test_fragment_timeout_fails_that_fragment_only() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=2) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, "s", timeout_ms=300)
        await client.emit("fragment:data", pcm_fragment("s", 0, metadata={"hold": "stuck"}))
        await client.emit("fragment:data", pcm_fragment("s", 1))
        processed = await client.count("fragment:processed", 2)
        assert [(p["sequence_number"], p["status"]) for p in processed] == [(0, "failed"), (1, "success")]
        assert processed[0]["error"]["code"] == "TIMEOUT" and processed[0]["error"]["stage"] == "timeout"
        processor.gate("stuck").set()
        await processor.until(lambda: "s-0" in processor.finished)
        await client.emit("fragment:data", pcm_fragment("s", 2))
        processed = await client.count("fragment:processed", 3)
        assert [p["sequence_number"] for p in processed] == [0, 1, 2]  # the late real result of 0 was dropped
        await client.close()


async def test_a_worker_that_leaves_frees_its_stream_for_a_new_connection() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=1) as srv:
        first = await Recorder().connect(srv.url)
        await _ready(first, "s", timeout_ms=60000)
        await first.emit("fragment:data", pcm_fragment("s", 0, metadata={"hold": "slow"}))
        await first.emit("fragment:data", pcm_fragment("s", 1))
        await processor.until(lambda: "s-0" in processor.started)
        await first.close()  # gone with two fragments in flight
        processor.gate("slow").set()

        second = await Recorder().connect(srv.url)  # e.g. the worker reconnecting
        await _ready(second, "s", timeout_ms=60000)
        await second.emit("fragment:data", pcm_fragment("s", 7))
        assert (await second.count("fragment:processed", 1))[0]["sequence_number"] == 7
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{srv.url}/metrics")).text.splitlines()
        await second.close()
    assert "sts_active_sessions 1.0" in metrics and "sts_fragments_inflight 0.0" in metrics
    assert "sts_connected_clients 1.0" in metrics
    assert first.of("fragment:processed") == []


async def test_monitor_room_receives_copies() -> None:
    async with running_server(FakeProcessor()) as srv:
        one_stream = await Recorder().connect(srv.url)
        every_stream = await Recorder().connect(srv.url)
        assert await one_stream.sio.call("monitor:subscribe", {"stream_id": "watched"}, timeout=10) == {
            "subscribed": True,
            "stream_id": "watched",
        }
        assert (await every_stream.sio.call("monitor:subscribe", {}, timeout=10))["subscribed"] is True

        worker = await Recorder().connect(srv.url)
        for stream_id in ("watched", "unwatched"):
            await _ready(worker, stream_id)
            await worker.emit("fragment:data", {**pcm_fragment(stream_id, 0), "audio": "broken"})
            await worker.emit("fragment:data", pcm_fragment(stream_id, 1))
            await worker.count("fragment:processed", 1, stream_id=stream_id)
            await worker.emit("stream:end", {"stream_id": stream_id})
            await worker.next_event("stream:complete", 0, stream_id=stream_id)
        await every_stream.count("stream:complete", 2)
        await one_stream.count("stream:complete", 1)

        def names(recorder: Recorder, stream_id: str) -> list[str]:
            # A fast fragment may or may not get its `processing` ack (it may be done first): only the first counts.
            return [
                e
                for e, p in recorder.events
                if p.get("stream_id") == stream_id
                or (e == "fragment:ack" and p["status"] == "queued" and p["fragment_id"].startswith(stream_id))
            ]

        expected = ["stream:ready", "error", "fragment:ack", "fragment:processed", "stream:complete"]
        assert names(worker, "watched") == expected
        assert names(one_stream, "watched") == expected
        assert names(one_stream, "unwatched") == []
        assert names(every_stream, "watched") == expected and names(every_stream, "unwatched") == expected
        copy = one_stream.of("fragment:processed")[0]
        assert copy == worker.of("fragment:processed", "watched")[0]
        for recorder in (one_stream, every_stream, worker):
            await recorder.close()


async def test_health_is_503_until_warm_and_metrics_count_work() -> None:
    processor = FakeProcessor(warm=False)
    async with running_server(processor) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        loading = await http.get("/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        client = await Recorder().connect(srv.url)
        await _ready(client, "s")
        await client.emit("fragment:data", pcm_fragment("s", 0))
        ack = await client.next_event("fragment:ack", 0)
        assert ack["status"] == "queued"  # waits for the warm-up
        assert (await http.get("/metrics")).text.count("sts_models_ready 0.0") == 1

        processor.warmup_gate.set()
        await client.count("fragment:processed", 1)
        healthy = await http.get("/health")
        assert healthy.status_code == 200
        assert healthy.json()["status"] == "ok" and healthy.json()["models"] == processor.describe()

        await client.emit("fragment:data", pcm_fragment("nope", 0))
        await client.next_event("error", 0)
        metrics = (await http.get("/metrics")).text
        await client.close()
    for line in [
        "sts_models_ready 1.0",
        'sts_fragments_processed_total{status="success"} 1.0',
        "sts_fragment_processing_seconds_count 1.0",
        'sts_stage_seconds_count{stage="asr"} 1.0',
        'sts_stage_seconds_count{stage="translation"} 1.0',
        'sts_stage_seconds_count{stage="tts"} 1.0',
        "sts_fragments_inflight 0.0",
        "sts_active_sessions 1.0",
        'sts_errors_total{code="STREAM_NOT_FOUND",stage="protocol"} 1.0',
    ]:
        assert line in metrics.splitlines(), line


async def test_echo_pipeline_mirrors_payloads_as_they_are() -> None:
    """Seed fidelity 9: the real EchoPipeline mirrors each payload byte for byte, audio or not (as the seed's echo
    service does); only the dubbing pipeline validates the audio (see the next test)."""
    rate = 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    m4a = AudioPayload.from_bytes(
        encode_audio(tone, rate, AudioFormat.M4A),
        format=AudioFormat.M4A,
        sample_rate_hz=rate,
        channels=1,
        duration_ms=1000.0,
    )
    async with running_server(EchoPipeline()) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, "e", format="m4a", sample_rate_hz=rate)
        sent = [
            {"fragment_id": "e-0", "stream_id": "e", "sequence_number": 0, "audio": m4a.to_wire()},
            pcm_fragment("e", 1, pcm=b"RIFF, but not audio at all" * 10, audio_format="m4a"),
            pcm_fragment("e", 2, pcm=b"\x00\x01\x02"),  # not whole 16-bit samples
            pcm_fragment("e", 3, pcm=bytes(range(256))),
        ]
        for fragment in sent:
            await client.emit("fragment:data", fragment)
        processed = await client.count("fragment:processed", 4)
        await client.close()
    assert client.of("error") == []
    for fragment, result in zip(sent, processed, strict=True):
        assert result["status"] == "success" and result["dubbed_audio"] == fragment["audio"]
        assert result["metadata"]["original_duration_ms"] == fragment["audio"]["duration_ms"]


async def test_the_dubbing_pipeline_keeps_validating_audio() -> None:
    """The same payloads at a dubbing processor: misaligned PCM is refused, undecodable audio fails (and its error
    follows the fragment:processed that settles it)."""
    async with running_server(FakeProcessor()) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, "d")
        await client.emit("fragment:data", pcm_fragment("d", 0, pcm=b"\x00\x01\x02"))
        refused = await client.next_event("error", 0, fragment_id="d-0")
        await client.emit("fragment:data", pcm_fragment("d", 1, pcm=b"GARBAGE!" * 4, audio_format="m4a"))
        [failed] = await client.count("fragment:processed", 1)
        error = await client.next_event("error", 0, fragment_id="d-1")
        await client.close()
    assert refused["code"] == "INVALID_AUDIO_FORMAT"
    assert (failed["status"], failed["error"]["code"]) == ("failed", "INVALID_AUDIO_FORMAT")
    assert error["code"] == "INVALID_AUDIO_FORMAT"
    order = [(e, p.get("fragment_id")) for e, p in client.events]
    assert order.index(("fragment:processed", "d-1")) < order.index(("error", "d-1"))


# ---------------------------------------------------------------- deadlines (fragment:data.deadline_ms)


async def test_a_slow_fragment_costs_only_itself() -> None:
    """One inference thread; fragment 0 stalls far past its deadline. Its TIMEOUT goes out at its deadline, and
    its neighbours are dubbed while it is still stuck (a fresh thread serves the queue)."""
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=1) as srv:
        client = await Recorder().connect(srv.url)
        ready = await _ready(client, "s", timeout_ms=60000)
        assert ready["capabilities"]["deadline"] is True and ready["capabilities"]["dub_overrun"] is True
        sent_at = time.monotonic()
        await client.emit("fragment:data", {**pcm_fragment("s", 0, metadata={"hold": "stuck"}), "deadline_ms": 1000})
        await client.emit("fragment:data", {**pcm_fragment("s", 1), "deadline_ms": 15000})
        await client.emit("fragment:data", {**pcm_fragment("s", 2), "deadline_ms": 15000})
        first = await client.next_event("fragment:processed", 0, sequence_number=0)
        answered_after_s = time.monotonic() - sent_at
        processed = await client.count("fragment:processed", 3)
        stuck_meanwhile = "s-0" not in processor.finished
        processor.release_all()
        await processor.until(lambda: "s-0" in processor.finished)
        await client.emit("fragment:data", {**pcm_fragment("s", 3), "deadline_ms": 5000})
        after = (await client.count("fragment:processed", 4))[3]
        await client.close()
    assert first["status"] == "failed"
    assert (first["error"]["code"], first["error"]["stage"], first["error"]["retryable"]) == (
        "TIMEOUT",
        "timeout",
        True,
    )
    assert 0.9 <= answered_after_s < 3.0  # at its deadline, not when the stuck work ends
    assert [(p["sequence_number"], p["status"]) for p in processed] == [(0, "failed"), (1, "success"), (2, "success")]
    assert stuck_meanwhile  # the neighbours were dubbed while fragment 0 still held its old thread
    assert after["status"] == "success"  # and the pool is whole again once it returned


async def test_expired_fragments_are_answered_at_once_without_processing() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=1) as srv:
        busy = await Recorder().connect(srv.url)
        await _ready(busy, "busy", timeout_ms=60000)
        await busy.emit("fragment:data", pcm_fragment("busy", 0, metadata={"hold": "busy"}))
        await processor.until(lambda: "busy-0" in processor.started)  # the only thread is taken

        client = await Recorder().connect(srv.url)
        await _ready(client, "late", timeout_ms=60000)
        sent_at = time.monotonic()
        await client.emit("fragment:data", {**pcm_fragment("late", 0), "deadline_ms": 0})
        expired = await client.next_event("fragment:processed", 0, sequence_number=0)
        zero_after_s = time.monotonic() - sent_at
        sent_at = time.monotonic()
        await client.emit("fragment:data", {**pcm_fragment("late", 1), "deadline_ms": 400})
        queued_out = await client.next_event("fragment:processed", 0, sequence_number=1)
        queued_after_s = time.monotonic() - sent_at
        assert "busy-0" not in processor.finished  # all of the above while the thread was still busy
        processor.release_all()
        await busy.count("fragment:processed", 1)
        await client.emit("stream:end", {"stream_id": "late"})
        complete = await client.next_event("stream:complete", 0)
        await client.close()
        await busy.close()
    for result in (expired, queued_out):
        assert result["status"] == "failed"
        assert (result["error"]["code"], result["error"]["stage"], result["error"]["retryable"]) == (
            "TIMEOUT",
            "timeout",
            True,
        )
        assert "before processing started" in result["error"]["message"]
    assert zero_after_s < 1.0  # deadline_ms=0: answered on arrival
    assert 0.35 <= queued_after_s < 1.5  # at its deadline, still queued behind the busy thread
    assert not {"late-0", "late-1"} & set(processor.started)  # never run
    assert complete["statistics"]["timeout_count"] == 2


async def test_the_most_urgent_fragment_is_served_first_across_streams() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=1) as srv:
        client = await Recorder().connect(srv.url)
        for stream_id in ("hold", "relaxed", "urgent"):
            await _ready(client, stream_id, timeout_ms=60000)
        await client.emit("fragment:data", pcm_fragment("hold", 0, metadata={"hold": "h"}))
        await processor.until(lambda: "hold-0" in processor.started)
        await client.emit("fragment:data", {**pcm_fragment("relaxed", 0), "deadline_ms": 20000})
        await client.emit("fragment:data", {**pcm_fragment("urgent", 0), "deadline_ms": 10000})  # later, more urgent
        queued = await client.wait_for(
            lambda _: len(q := [a for a in client.of("fragment:ack") if a["status"] == "queued"]) >= 3 and q
        )
        acks = {a["fragment_id"]: a for a in queued}
        processor.gate("h").set()
        await client.count("fragment:processed", 3)
        await client.close()
    assert processor.started == ["hold-0", "urgent-0", "relaxed-0"]
    assert (acks["relaxed-0"]["status"], acks["relaxed-0"]["queue_position"]) == ("queued", 0)
    assert (acks["urgent-0"]["status"], acks["urgent-0"]["queue_position"]) == ("queued", 0)  # goes ahead
    assert 9.0 < processor.deadline_left_s["urgent-0"] <= 10.0  # the pipeline gets the fragment's deadline


async def test_a_seed_client_without_deadlines_keeps_the_timeout_ms_rule() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=1) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, "seed", timeout_ms=5000)  # no dub_overrun_ms, no deadline_ms: a seed worker
        await client.emit("fragment:data", pcm_fragment("seed", 0))
        assert (await client.count("fragment:processed", 1))[0]["status"] == "success"
        assert 4.0 < processor.deadline_left_s["seed-0"] <= 5.0  # arrival + timeout_ms

        await _ready(client, "slow", timeout_ms=400)
        sent_at = time.monotonic()
        await client.emit("fragment:data", pcm_fragment("slow", 0, metadata={"hold": "slow"}))
        [processed] = await client.count("fragment:processed", 1, stream_id="slow")
        took_s = time.monotonic() - sent_at
        processor.release_all()
        await client.close()
    assert (processed["status"], processed["error"]["code"]) == ("failed", "TIMEOUT")
    assert processed["error"]["message"] == "not processed within 400 ms"
    assert 0.35 <= took_s < 2.0


class TwoTargetProcessor(FakeProcessor):
    """Answers each target in turn; the French answer of a fragment can be held (metadata `hold_fr`)."""

    def check_languages(self, source: str, target: str) -> None:
        if target not in {"es", "fr"}:
            raise UnsupportedLanguageError(f"unsupported language pair {source}->{target}")

    def process_each(self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE) -> Any:
        for target in config.targets:
            hold = (fragment.metadata or {}).get(f"hold_{target}")
            if hold:
                self.gate(hold).wait(30)
            yield self.process(fragment, config, deadline).model_copy(
                update={"target_language": target, "translated_text": f"{target} {fragment.sequence_number}"}
            )


async def test_each_target_is_answered_in_order_on_its_own() -> None:
    processor = TwoTargetProcessor()
    async with running_server(processor, worker_threads=2) as srv:
        client = await Recorder().connect(srv.url)
        ready = await _ready(client, "s", target_languages=["es", "fr"])
        assert ready["capabilities"]["target_languages"] is True
        await client.emit("fragment:data", pcm_fragment("s", 0, metadata={"hold_fr": "fr0"}))
        await client.emit("fragment:data", pcm_fragment("s", 1))
        # Spanish answers leave while fragment 0's French answer is held; French 1 waits for French 0.
        spanish = await client.wait_for(
            lambda _: (
                len(got := [p for p in client.of("fragment:processed") if p["target_language"] == "es"]) >= 2 and got
            )
        )
        assert [p["sequence_number"] for p in spanish] == [0, 1]
        assert [p["translated_text"] for p in spanish] == ["es 0", "es 1"]
        await processor.until(lambda: "s-1" in processor.finished)
        assert not [p for p in client.of("fragment:processed") if p["target_language"] == "fr"]
        processor.gate("fr0").set()
        processed = await client.count("fragment:processed", 4)
        french = [p for p in processed if p["target_language"] == "fr"]
        assert [(p["sequence_number"], p["translated_text"]) for p in french] == [(0, "fr 0"), (1, "fr 1")]
        await client.emit("stream:end", {"stream_id": "s"})
        complete = await client.next_event("stream:complete", 0)
        await client.close()
    assert complete["total_fragments"] == 2  # fragments, not answers


async def test_an_unsupported_target_among_several_is_refused_at_init() -> None:
    async with running_server(TwoTargetProcessor()) as srv:
        client = await Recorder().connect(srv.url)
        await client.emit("stream:init", init_payload("s", target_languages=["es", "de"]))
        error = await client.next_event("error", 0)
        await client.close()
    assert error["code"] == ErrorCode.UNSUPPORTED_LANGUAGE.value and "de" in error["message"]


async def test_a_seed_client_gets_one_answer_per_fragment() -> None:
    async with running_server(TwoTargetProcessor()) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, "s", target_language="fr")
        await client.emit("fragment:data", pcm_fragment("s", 0))
        [processed] = await client.count("fragment:processed", 1)
        await asyncio.sleep(0.3)
        assert len(client.of("fragment:processed")) == 1
        await client.close()
    assert processed["target_language"] == "fr" and processed["translated_text"] == "fr 0"


class ChunkingEcho(EchoPipeline):
    """Echoes each fragment, first handing over its audio in two chunks (a dub spoken clause by clause)."""

    def process_each(
        self,
        fragment: FragmentData,
        config: StreamConfig,
        deadline: Deadline = NO_DEADLINE,
        on_chunk: Callable[[DubChunk], object] | None = None,
    ) -> Iterator[FragmentProcessed]:
        if on_chunk is not None:
            for index, text in enumerate(("uno,", "dos.")):
                on_chunk(
                    DubChunk(
                        fragment_id=fragment.fragment_id,
                        stream_id=fragment.stream_id,
                        sequence_number=fragment.sequence_number,
                        target_language=config.target_language,
                        index=index,
                        offset_ms=50.0 * index,
                        audio=fragment.audio,
                        text=text,
                        final=index == 1,
                    )
                )
                time.sleep(0.05)
        yield from super().process_each(fragment, config, deadline)


async def test_a_client_that_asks_for_chunks_gets_them_before_the_whole_dub() -> None:
    async with running_server(ChunkingEcho()) as srv:
        chunked, seed = await Recorder().connect(srv.url), await Recorder().connect(srv.url)
        ready = await _ready(chunked, "c", dub_chunks=True)
        await _ready(seed, "s")
        assert ready["capabilities"]["dub_chunks"] is True
        await chunked.emit("fragment:data", pcm_fragment("c", 0))
        await seed.emit("fragment:data", pcm_fragment("s", 0))
        await chunked.count("fragment:processed", 1)
        await seed.count("fragment:processed", 1)
        await asyncio.sleep(0.2)
        await chunked.close()
        await seed.close()
    names = [name for name, _ in chunked.events if name in {"fragment:chunk", "fragment:processed"}]
    assert names == ["fragment:chunk", "fragment:chunk", "fragment:processed"]
    chunks = chunked.of("fragment:chunk")
    assert [(c["index"], c["text"], c["final"], c["offset_ms"]) for c in chunks] == [
        (0, "uno,", False, 0),
        (1, "dos.", True, 50),
    ]
    assert chunks[0]["target_language"] == "es" and chunks[0]["sequence_number"] == 0
    assert seed.of("fragment:chunk") == [] and len(seed.of("fragment:processed")) == 1  # the seed's contract
