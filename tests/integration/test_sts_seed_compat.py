"""Issue 9, seed protocol fidelity: each point as a regression test over a real uvicorn STS and real Socket.IO
clients, plus one strict spec-016 client's whole conversation against the echo pipeline.

The strict client checks the wire with plain dicts (no livedub models), as a client written from the seed's spec
would.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest
from sts_testkit import Recorder, init_payload, pcm_fragment, running_server
from test_sts_server import FakeProcessor

from livedub.sts.pipeline import EchoPipeline

pytestmark = pytest.mark.integration

SEVERITIES = {"warning", "error", "fatal"}


async def _ready(client: Recorder, payload: dict[str, Any]) -> dict[str, Any]:
    after = len(client.events)
    await client.emit("stream:init", payload)
    return await client.next_event("stream:ready", after, stream_id=payload["stream_id"])


def _watch_disconnect(client: Recorder) -> asyncio.Event:
    """An event set when the server drops the client (register right after connecting)."""
    gone = asyncio.Event()
    client.sio.on("disconnect", lambda *_: gone.set())
    return gone


# ---------------------------------------------------------------- 1. disconnect after stream:complete


async def test_the_server_disconnects_a_client_after_its_stream_completed() -> None:
    async with running_server(FakeProcessor(), auto_disconnect_delay_s=0.5) as srv:
        done = await Recorder().connect(srv.url)
        done_gone = _watch_disconnect(done)
        await _ready(done, init_payload("done"))
        await done.emit("fragment:data", pcm_fragment("done", 0))
        await done.count("fragment:processed", 1)
        await done.emit("stream:end", {"stream_id": "done"})
        await done.next_event("stream:complete", 0)
        completed_at = time.monotonic()
        await asyncio.wait_for(done_gone.wait(), 5.0)
        closed_after_s = time.monotonic() - completed_at

        # A connection that opens another stream in the meantime stays.
        busy = await Recorder().connect(srv.url)
        await _ready(busy, init_payload("first"))
        await busy.emit("stream:end", {"stream_id": "first"})
        await busy.next_event("stream:complete", 0)
        await _ready(busy, init_payload("second"))
        await asyncio.sleep(1.0)
        assert busy.sio.connected
        await busy.emit("fragment:data", pcm_fragment("second", 0))
        assert (await busy.count("fragment:processed", 1))[0]["stream_id"] == "second"
        await busy.close()
    assert 0.4 <= closed_after_s < 2.0


async def _complete_one_stream(url: str, stream_id: str) -> tuple[Recorder, asyncio.Event, float]:
    """A client that opens a stream, has one fragment dubbed and ends it: (client, its disconnect, completed at)."""
    client = await Recorder().connect(url)
    gone = _watch_disconnect(client)
    await _ready(client, init_payload(stream_id))
    await client.emit("fragment:data", pcm_fragment(stream_id, 0))
    await client.count("fragment:processed", 1)
    await client.emit("stream:end", {"stream_id": stream_id})
    await client.next_event("stream:complete", 0)
    return client, gone, time.monotonic()


async def test_auto_disconnect_delay_set_as_the_seed_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's echo suite (`test_stream_complete_auto_disconnect`): delay 1 s, disconnected within 3 s."""
    monkeypatch.setenv("AUTO_DISCONNECT_DELAY", "1")
    async with running_server(FakeProcessor()) as srv:
        assert srv.server.settings.auto_disconnect_delay_s == 1.0
        _client, gone, completed_at = await _complete_one_stream(srv.url, "seed")
        await asyncio.wait_for(gone.wait(), 3.0)
        closed_after_s = time.monotonic() - completed_at
    assert 0.8 <= closed_after_s < 3.0


@pytest.mark.parametrize("path", ["/ws/sts", "/socket.io"])
async def test_seed_echo_suite_auto_disconnect_on_both_paths(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """The seed's own `test_stream_complete_auto_disconnect` step by step: its echo server's configuration
    (auto_disconnect_delay=1, as the setting AUTO_DISCONNECT_DELAY), a client on either Socket.IO path that opens a
    stream with an empty config, ends it without a fragment, and must be gone within 3 s."""
    monkeypatch.setenv("AUTO_DISCONNECT_DELAY", "1")
    async with running_server(EchoPipeline()) as srv:
        client = await Recorder().connect(srv.url, socketio_path=path)
        gone = _watch_disconnect(client)
        await client.emit("stream:init", {"stream_id": "auto-disconnect-test", "worker_id": "worker-1", "config": {}})
        await asyncio.sleep(0.2)
        await client.emit("stream:end", {"stream_id": "auto-disconnect-test"})
        await asyncio.wait_for(gone.wait(), 3.0)
        assert not client.sio.connected


async def test_auto_disconnect_delay_defaults_to_five_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTO_DISCONNECT_DELAY", raising=False)
    async with running_server(FakeProcessor()) as srv:
        client, gone, completed_at = await _complete_one_stream(srv.url, "default")
        await asyncio.sleep(3.0)
        assert client.sio.connected and not gone.is_set()
        await asyncio.wait_for(gone.wait(), 5.0)
        closed_after_s = time.monotonic() - completed_at
    assert 4.5 <= closed_after_s < 7.0


# ---------------------------------------------------------------- 2. top-level max_inflight / timeout_ms


async def test_top_level_max_inflight_and_timeout_ms_are_granted_and_echoed() -> None:
    processor = FakeProcessor()
    async with running_server(processor) as srv:
        client = await Recorder().connect(srv.url)
        seed = {"stream_id": "seed", "worker_id": "w", "config": {"format": "pcm_s16le"}}
        assert (await _ready(client, {**seed, "max_inflight": 5}))["max_inflight"] == 5
        assert (await _ready(client, {**seed, "max_inflight": 10}))["max_inflight"] == 10
        both = {**seed, "max_inflight": 7, "config": {"format": "pcm_s16le", "max_inflight": 2}}
        assert (await _ready(client, both))["max_inflight"] == 7  # the top level wins
        assert (await _ready(client, init_payload("livedub", max_inflight=4)))["max_inflight"] == 4

        await _ready(client, {**seed, "stream_id": "t", "timeout_ms": 20000})
        await client.emit("fragment:data", pcm_fragment("t", 0))
        await client.count("fragment:processed", 1, stream_id="t")
        await client.close()
    assert 19.0 < processor.deadline_left_s["t-0"] <= 20.0  # the top-level timeout_ms is the fragment's budget


# ---------------------------------------------------------------- 3. queued first, then processing


async def test_the_first_ack_is_queued_and_processing_follows() -> None:
    processor = FakeProcessor()
    async with running_server(processor, worker_threads=1) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, init_payload("s", timeout_ms=60000))
        await client.emit("fragment:data", pcm_fragment("s", 0, metadata={"hold": "a"}))
        await client.emit("fragment:data", pcm_fragment("s", 1))
        await processor.until(lambda: "s-0" in processor.started)
        await client.wait_for(lambda _: len(client.of("fragment:ack")) >= 3)
        processor.release_all()
        await client.count("fragment:processed", 2)
        await client.close()
    acks = [(a["fragment_id"], a["status"], a["queue_position"]) for a in client.of("fragment:ack")]
    assert [a for a in acks if a[1] == "queued"] == [("s-0", "queued", 0), ("s-1", "queued", 0)]
    assert ("s-0", "processing", None) in acks
    events = [(e, p.get("fragment_id"), p.get("status")) for e, p in client.events]
    for fid in ("s-0", "s-1"):
        mine = [(e, status) for e, f, status in events if f == fid]
        assert mine[0] == ("fragment:ack", "queued")  # the first ack is always queued
        assert mine[-1] == ("fragment:processed", "success")  # every ack precedes the result


# ---------------------------------------------------------------- 4. the worker's fragment:ack


async def test_the_workers_received_ack_is_accepted_silently() -> None:
    async with running_server(FakeProcessor()) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, init_payload("s"))
        await client.emit("fragment:data", pcm_fragment("s", 0))
        [processed] = await client.count("fragment:processed", 1)
        await client.emit(
            "fragment:ack", {"fragment_id": processed["fragment_id"], "status": "received", "timestamp": 1}
        )
        await client.emit("fragment:data", pcm_fragment("s", 1))  # the session goes on
        await client.count("fragment:processed", 2)
        assert client.of("error") == []
        after = len(client.events)
        await client.emit("fragment:ack", {"status": "received"})  # no fragment_id: malformed
        error = await client.next_event("error", after)
        await client.close()
    assert (error["code"], error["severity"]) == ("INVALID_EVENT", "warning")


# ---------------------------------------------------------------- 5. config:error_simulation


async def test_error_simulation_fails_and_delays_chosen_fragments_in_the_echo_pipeline() -> None:
    async with running_server(EchoPipeline(), worker_threads=2) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, init_payload("e", timeout_ms=600))
        rules = {
            "enabled": True,
            "rules": [
                {"trigger": "sequence_number", "value": 1, "error_code": "MODEL_ERROR", "stage": "asr"},
                {"trigger": "fragment_id", "value": "e-2", "error_code": "TIMEOUT", "error_message": "too slow"},
                {"trigger": "sequence_number", "value": 3, "delay_ms": 5000},  # past its 600 ms: TIMEOUT
                {"trigger": "nth_fragment", "value": 5, "error_code": "GPU_OOM", "retryable": False},
            ],
        }
        ack = await client.sio.call("config:error_simulation", rules, timeout=10)
        emitted = await client.next_event("config:error_simulation:ack", 0)
        sent_at = time.monotonic()
        for seq in range(6):
            await client.emit("fragment:data", pcm_fragment("e", seq))
        processed = await client.count("fragment:processed", 6)
        took_s = time.monotonic() - sent_at
        # Rules replaced by an empty, disabled set: everything is echoed again.
        cleared = await client.sio.call("config:error_simulation", {"enabled": False}, timeout=10)
        await client.emit("fragment:data", pcm_fragment("e", 6))
        after_clear = (await client.count("fragment:processed", 7))[6]
        await client.close()
    assert ack == emitted == {"status": "accepted", "rules_count": 4, "message": None}
    assert cleared["status"] == "accepted"
    outcome = [(p["status"], p["error"] and (p["error"]["code"], p["error"]["stage"])) for p in processed]
    assert outcome == [
        ("success", None),
        ("failed", ("MODEL_ERROR", "asr")),
        ("failed", ("TIMEOUT", "timeout")),
        ("failed", ("TIMEOUT", "timeout")),  # held past its deadline: answered at the deadline
        ("failed", ("GPU_OOM", "pipeline")),  # the 5th fragment of the stream
        ("success", None),
    ]
    assert processed[2]["error"]["message"] == "too slow" and processed[4]["error"]["retryable"] is False
    assert took_s < 3.0  # the 5 s delay did not hold the answer past the deadline
    assert after_clear["status"] == "success"


async def test_error_simulation_is_refused_by_the_dubbing_pipeline_and_checked() -> None:
    async with running_server(FakeProcessor()) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, init_payload("d"))
        rules = {"enabled": True, "rules": [{"trigger": "sequence_number", "value": 0, "error_code": "TIMEOUT"}]}
        ack = await client.sio.call("config:error_simulation", rules, timeout=10)
        error = await client.next_event("error", 0)
        await client.emit("fragment:data", pcm_fragment("d", 0))
        [processed] = await client.count("fragment:processed", 1)
        await client.close()
    assert (ack["status"], ack["rules_count"]) == ("rejected", 0) and "echo pipeline only" in ack["message"]
    assert error["code"] == "INVALID_CONFIG" and "echo pipeline only" in error["message"]
    assert processed["status"] == "success"  # never failed on purpose

    async with running_server(EchoPipeline()) as srv:
        client = await Recorder().connect(srv.url)
        no_stream = await client.sio.call("config:error_simulation", rules, timeout=10)
        await _ready(client, init_payload("e"))
        invalid = await client.sio.call(
            "config:error_simulation", {"enabled": True, "rules": [{"trigger": "nth_fragment", "value": 0}]}, timeout=10
        )
        # livedub: rules for a stream that is not initialised yet (a test harness configures before the worker).
        ahead = await client.sio.call("config:error_simulation", {**rules, "stream_id": "later"}, timeout=10)
        await _ready(client, init_payload("later"))
        await client.emit("fragment:data", pcm_fragment("later", 0))
        [later] = await client.count("fragment:processed", 1)
        await client.close()
    assert no_stream["status"] == "rejected" and "no stream" in no_stream["message"]
    assert invalid["status"] == "rejected" and "nth_fragment" in invalid["message"]
    assert ahead == {"status": "accepted", "rules_count": 1, "message": None}
    assert later["error"]["code"] == "TIMEOUT"


# ---------------------------------------------------------------- 7. STREAM_PAUSED


async def test_a_fragment_sent_while_paused_gets_stream_paused() -> None:
    async with running_server(FakeProcessor()) as srv:
        client = await Recorder().connect(srv.url)
        await _ready(client, init_payload("s"))
        await client.emit("stream:pause", {"stream_id": "s"})
        await client.emit("fragment:data", pcm_fragment("s", 0))
        error = await client.next_event("error", 0)
        await client.emit("stream:resume", {"stream_id": "s"})
        await client.emit("fragment:data", pcm_fragment("s", 0))  # the same fragment, retried
        [processed] = await client.count("fragment:processed", 1)
        await client.close()
    assert (error["code"], error["retryable"], error["severity"]) == ("STREAM_PAUSED", True, "warning")
    assert (error["stream_id"], error["fragment_id"]) == ("s", "s-0")
    assert processed["status"] == "success" and processed["sequence_number"] == 0


# ---------------------------------------------------------------- 10. the /ws/sts path


async def test_socketio_is_served_at_ws_sts_and_socket_io() -> None:
    async with running_server(EchoPipeline()) as srv:
        for path in ("/ws/sts", "/socket.io", "ws/sts"):
            client = await Recorder().connect(srv.url, socketio_path=path)
            await _ready(client, init_payload(f"p{len(path)}"))
            await client.emit("fragment:data", pcm_fragment(f"p{len(path)}", 0))
            assert (await client.count("fragment:processed", 1))[0]["status"] == "success"
            await client.close()


# ---------------------------------------------------------------- a strict spec-016 client, start to end


class StrictSeedClient:
    """Plays a spec-016 worker's conversation and asserts what such a client asserts, on plain dicts."""

    def __init__(self) -> None:
        self.rec = Recorder()
        self.problems: list[str] = []

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            self.problems.append(what)

    def check_error(self, error: dict[str, Any]) -> None:
        self.expect(error["severity"] in SEVERITIES, f"severity {error['severity']!r}")
        for key in ("code", "message", "retryable", "stream_id", "fragment_id"):
            self.expect(key in error, f"error lacks {key}")

    def check_processed(self, processed: dict[str, Any]) -> None:
        for key in ("dubbed_audio", "transcript", "translated_text", "error", "processing_time_ms", "stage_timings"):
            self.expect(key in processed, f"fragment:processed lacks {key} (absent optionals must be null)")
        self.expect(type(processed["processing_time_ms"]) is int, "processing_time_ms is not an integer")
        for stage, value in processed["stage_timings"].items():
            self.expect(type(value) is int, f"stage_timings.{stage} is not an integer")


def _seed_fragment(seq: int, pcm: bytes = b"\x01\x02" * 1600) -> dict[str, Any]:
    return {
        "fragment_id": f"seed-{seq}",
        "stream_id": "seed",
        "sequence_number": seq,
        "timestamp": int(time.time() * 1000),
        "audio": {
            "format": "pcm_s16le",
            "sample_rate_hz": 16000,
            "channels": 1,
            "duration_ms": len(pcm) // 32,
            "data_base64": base64.b64encode(pcm).decode("ascii"),
        },
    }


async def test_a_strict_spec_016_client_conversation_with_the_echo_sts() -> None:
    client = StrictSeedClient()
    rec = client.rec
    async with running_server(EchoPipeline(), worker_threads=1) as srv:  # the default 5 s disconnect
        await rec.connect(srv.url, socketio_path="/ws/sts")
        gone = _watch_disconnect(rec)
        init = {
            "stream_id": "seed",
            "worker_id": "seed-worker-1",
            "config": {"source_language": "en", "target_language": "es", "format": "pcm_s16le"},
            "max_inflight": 5,
            "timeout_ms": 20000,
        }
        ready = await _ready(rec, init)
        client.expect(ready["max_inflight"] == 5, f"granted max_inflight {ready['max_inflight']}")

        # A delayed fragment 1 holds the only thread, so 2..5 pile up: backpressure.
        simulation = {
            "enabled": True,
            "rules": [
                {"trigger": "sequence_number", "value": 1, "error_code": "MODEL_ERROR", "stage": "tts"},
                {"trigger": "sequence_number", "value": 2, "delay_ms": 600},
            ],
        }
        await rec.emit("config:error_simulation", simulation)
        sim_ack = await rec.next_event("config:error_simulation:ack", 0)
        client.expect(sim_ack == {"status": "accepted", "rules_count": 2, "message": None}, f"ack {sim_ack}")

        undecodable = _seed_fragment(0, pcm=b"\xff\xfe\x00")  # odd bytes: the echo mirrors them as they are
        await rec.emit("fragment:data", undecodable)
        for seq in range(1, 7):
            await rec.emit("fragment:data", _seed_fragment(seq))
        processed = await rec.count("fragment:processed", 7)
        for result in processed:
            client.check_processed(result)
            await rec.emit("fragment:ack", {"fragment_id": result["fragment_id"], "status": "received", "timestamp": 0})
        first_acks: dict[str, str] = {}
        for ack in rec.of("fragment:ack"):
            first_acks.setdefault(ack["fragment_id"], ack["status"])
        client.expect(set(first_acks.values()) == {"queued"}, f"first acks {first_acks}")
        client.expect(processed[0]["dubbed_audio"] == undecodable["audio"], "the payload was not mirrored")
        client.expect(processed[0]["transcript"] is None, "transcript not null")
        client.expect(processed[1]["error"]["code"] == "MODEL_ERROR", "simulated MODEL_ERROR missing")
        client.expect([p["sequence_number"] for p in processed] == list(range(7)), "out of order")
        pressure = rec.of("backpressure")
        client.expect(bool(pressure), "no backpressure while 5 fragments waited")
        for event in pressure:
            client.expect(type(event.get("queue_depth")) is int, f"backpressure without queue_depth: {event}")

        await rec.emit("stream:pause", {"stream_id": "seed"})
        after = len(rec.events)
        await rec.emit("fragment:data", _seed_fragment(7))
        paused = await rec.next_event("error", after)
        client.check_error(paused)
        client.expect((paused["code"], paused["retryable"]) == ("STREAM_PAUSED", True), f"paused: {paused}")
        await rec.emit("stream:resume", {"stream_id": "seed"})
        await rec.emit("fragment:data", _seed_fragment(7))
        await rec.count("fragment:processed", 8)

        await rec.emit("stream:end", {"stream_id": "seed"})
        complete = await rec.next_event("stream:complete", 0)
        completed_at = time.monotonic()
        client.expect(type(complete["total_duration_ms"]) is int, "total_duration_ms is not an integer")
        await asyncio.wait_for(gone.wait(), 10.0)
        closed_after_s = time.monotonic() - completed_at
    for error in rec.of("error"):
        client.check_error(error)
    client.expect([e["code"] for e in rec.of("error")] == ["STREAM_PAUSED"], f"errors {rec.of('error')}")
    assert client.problems == []
    assert 4.0 <= closed_after_s <= 7.0  # "auto-closes after 5 s"
