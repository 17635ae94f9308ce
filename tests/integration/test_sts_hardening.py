"""Issue 9 hardening, STS side: stream ownership (no takeover by another connection, a worker may resume its own
stream), monitor access (monitor key or API key; loopback only without keys), and fair sharing of the inference
threads between streams. Real uvicorn servers and real Socket.IO clients.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from sts_testkit import Recorder, init_payload, isolated_settings, pcm_fragment, running_server
from test_sts_server import FakeProcessor

from livedub.deadline import NO_DEADLINE, Deadline
from livedub.observe import StsMonitor
from livedub.protocol import FragmentData, FragmentProcessed, StreamConfig
from livedub.sts.server import create_app

pytestmark = pytest.mark.integration


async def _ready(client: Recorder, stream_id: str, worker_id: str = "test-worker", **config: Any) -> dict[str, Any]:
    after = len(client.events)
    await client.emit("stream:init", {**init_payload(stream_id, **config), "worker_id": worker_id})
    return await client.next_event("stream:ready", after, stream_id=stream_id)


async def _init_error(client: Recorder, stream_id: str, worker_id: str) -> dict[str, Any]:
    after = len(client.events)
    await client.emit("stream:init", {**init_payload(stream_id), "worker_id": worker_id})
    return await client.next_event("error", after)


# ---------------------------------------------------------------- ownership


async def test_another_connection_cannot_take_a_stream_over() -> None:
    async with running_server(FakeProcessor()) as srv:
        owner = await Recorder().connect(srv.url)
        ready = await _ready(owner, "cam1", worker_id="worker-a")
        intruder = await Recorder().connect(srv.url)
        for worker_id in ("worker-b", ""):
            refused = await _init_error(intruder, "cam1", worker_id)
            assert (refused["code"], refused["stream_id"]) == ("UNAUTHORIZED", "cam1")
            assert "worker-a" not in refused["message"]  # the owner's identity is not handed out
        # The intruder can neither send nor steer for it; the owner is untouched.
        await intruder.emit("fragment:data", pcm_fragment("cam1", 0))
        assert (await intruder.next_event("error", 2))["code"] == "STREAM_NOT_FOUND"
        await intruder.emit("stream:end", {"stream_id": "cam1"})
        await owner.emit("fragment:data", pcm_fragment("cam1", 0))
        [processed] = await owner.count("fragment:processed", 1)
        assert processed["status"] == "success" and owner.of("error") == []
        assert intruder.of("fragment:processed") == [] and intruder.of("stream:ready") == []
        assert srv.server.sessions["cam1"].session_id == ready["session_id"]
        await intruder.close()
        await owner.close()


async def test_an_anonymous_stream_cannot_be_taken_over_either() -> None:
    async with running_server(FakeProcessor()) as srv:
        owner = await Recorder().connect(srv.url)
        await _ready(owner, "anon", worker_id="")
        other = await Recorder().connect(srv.url)
        assert (await _init_error(other, "anon", ""))["code"] == "UNAUTHORIZED"
        await other.close()
        await owner.close()


async def test_the_same_worker_resumes_its_stream_from_a_new_connection() -> None:
    """A worker whose old connection lingers (half-open) reconnects: the same worker_id takes the stream over."""
    async with running_server(FakeProcessor()) as srv:
        old = await Recorder().connect(srv.url)
        first = await _ready(old, "cam1", worker_id="host-1234")
        await old.emit("fragment:data", pcm_fragment("cam1", 0))
        await old.count("fragment:processed", 1)

        new = await Recorder().connect(srv.url)
        resumed = await _ready(new, "cam1", worker_id="host-1234")
        assert resumed["session_id"] == first["session_id"]
        await new.emit("fragment:data", pcm_fragment("cam1", 1))
        assert (await new.count("fragment:processed", 1))[0]["sequence_number"] == 1
        await old.emit("fragment:data", pcm_fragment("cam1", 2))  # the stale connection has lost it
        assert (await old.next_event("error", 0))["code"] == "STREAM_NOT_FOUND"
        await new.emit("stream:end", {"stream_id": "cam1"})
        complete = await new.next_event("stream:complete", 0)
        await new.close()
        await old.close()
    assert complete["statistics"]["success_count"] == 2  # the resumed session kept its statistics


# ---------------------------------------------------------------- monitor access


async def _subscribe(client: Recorder, payload: dict[str, Any]) -> dict[str, Any]:
    return await client.sio.call("monitor:subscribe", payload, timeout=10)


async def _watch_one_stream(srv_url: str, monitor: Recorder) -> list[str]:
    worker = await Recorder().connect(srv_url)
    await _ready(worker, "private")
    await worker.emit("fragment:data", pcm_fragment("private", 0))
    await worker.count("fragment:processed", 1)
    await asyncio.sleep(0.2)  # copies, if any, would have arrived
    await worker.close()
    return [e for e, p in monitor.events if e != "error"]


async def test_monitoring_needs_the_monitor_key_when_one_is_set() -> None:
    async with running_server(FakeProcessor(), monitor_key="m0n") as srv:
        nosy = await Recorder().connect(srv.url)  # loopback, but a key is configured: not enough
        refused = await _subscribe(nosy, {})
        assert refused == {"subscribed": False, "stream_id": None, "error": "UNAUTHORIZED"}
        assert (await nosy.next_event("error", 0))["code"] == "UNAUTHORIZED"
        wrong = await _subscribe(nosy, {"stream_id": "private", "key": "guess"})
        assert wrong["subscribed"] is False
        assert await _watch_one_stream(srv.url, nosy) == []  # nothing leaked

        in_payload = await Recorder().connect(srv.url)
        assert (await _subscribe(in_payload, {"key": "m0n"}))["subscribed"] is True
        at_connect = await Recorder().connect(srv.url, auth={"token": "m0n"})
        assert (await _subscribe(at_connect, {"stream_id": "private"}))["subscribed"] is True
        await _watch_one_stream(srv.url, in_payload)
        assert "fragment:processed" in [e for e, _ in in_payload.events]
        assert "fragment:processed" in [e for e, _ in at_connect.events]
        for client in (nosy, in_payload, at_connect):
            await client.close()


async def test_the_api_key_also_opens_the_monitor_room() -> None:
    async with running_server(FakeProcessor(), api_key="k3y", monitor_key="m0n") as srv:
        monitor = await Recorder().connect(srv.url, auth={"token": "k3y"})
        assert (await _subscribe(monitor, {}))["subscribed"] is True
        await monitor.close()


async def test_livedubs_own_monitor_still_works() -> None:
    """StsMonitor (demo, e2e) from loopback without keys, and with the monitor key passed as its api_key."""
    async with running_server(FakeProcessor()) as srv:
        monitor = await asyncio.to_thread(StsMonitor(srv.url, "s").start)
        try:
            assert monitor.subscribed == {"subscribed": True, "stream_id": "s"}
        finally:
            await asyncio.to_thread(monitor.stop)
    async with running_server(FakeProcessor(), monitor_key="m0n") as srv:
        keyed = await asyncio.to_thread(StsMonitor(srv.url, "s", api_key="m0n").start)
        bare = await asyncio.to_thread(StsMonitor(srv.url, "s").start)
        try:
            assert keyed.subscribed is not None and keyed.subscribed["subscribed"] is True
            assert bare.subscribed is not None and bare.subscribed["subscribed"] is False
        finally:
            await asyncio.to_thread(keyed.stop)
            await asyncio.to_thread(bare.stop)


def _non_loopback_address() -> str | None:
    """An address of this host that is not loopback (no packet is sent: a UDP connect only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@asynccontextmanager
async def _serve_on_all_interfaces(app: Any) -> AsyncIterator[int]:
    server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


async def test_without_keys_only_loopback_clients_may_monitor() -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    app = create_app(FakeProcessor(), isolated_settings())
    async with _serve_on_all_interfaces(app) as port:
        remote = await Recorder().connect(f"http://{address}:{port}")
        local = await Recorder().connect(f"http://127.0.0.1:{port}")
        assert (await _subscribe(remote, {}))["subscribed"] is False
        assert (await remote.next_event("error", 0))["code"] == "UNAUTHORIZED"
        assert (await _subscribe(local, {}))["subscribed"] is True
        # The remote client may still work as a worker (only monitoring is local-only).
        await _ready(remote, "w")
        await remote.emit("fragment:data", pcm_fragment("w", 0))
        assert (await remote.count("fragment:processed", 1))[0]["status"] == "success"
        assert (await local.count("fragment:processed", 1))[0]["stream_id"] == "w"
        await remote.close()
        await local.close()


# ---------------------------------------------------------------- fair sharing


class SteadyProcessor(FakeProcessor):
    """Every fragment takes the same time (held ones wait for their gate as in FakeProcessor)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def process(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE
    ) -> FragmentProcessed:
        if not (fragment.metadata or {}).get("hold"):
            time.sleep(self.seconds)
        return super().process(fragment, config, deadline)


async def test_a_stream_with_more_urgent_work_cannot_starve_another() -> None:
    """One thread, 0.25 s per fragment. Stream a queues ten fragments (its limit) due in 2.3 s, stream b three due
    in 2.45 s: by deadline alone b waits behind all of a until a's deadline, and every b fragment misses (measured
    with FAIR_LEAD = inf: b 0 of 3, a 9 of 10). Shared fairly, b runs after at most two of a's and all of b is dubbed
    in time (measured: b 3 of 3, a 6 of 10)."""
    processor = SteadyProcessor(0.25)
    async with running_server(processor, worker_threads=1) as srv:
        client = await Recorder().connect(srv.url)
        for stream_id in ("hold", "a", "b"):
            await _ready(client, stream_id, timeout_ms=60000)
        await client.emit("fragment:data", pcm_fragment("hold", 0, metadata={"hold": "h"}))
        await processor.until(lambda: "hold-0" in processor.started)
        for seq in range(10):
            await client.emit("fragment:data", {**pcm_fragment("a", seq), "deadline_ms": 2300})
        for seq in range(3):
            await client.emit("fragment:data", {**pcm_fragment("b", seq), "deadline_ms": 2450})
        await client.wait_for(lambda _: len([a for a in client.of("fragment:ack") if a["status"] == "queued"]) >= 14)
        processor.gate("h").set()
        b_results = await client.count("fragment:processed", 3, stream_id="b", within_s=20)
        a_results = await client.count("fragment:processed", 10, stream_id="a", within_s=20)
        await client.close()
    order = [f for f in processor.started if not f.startswith("hold")]
    assert order[:7] == ["a-0", "a-1", "b-0", "a-2", "b-1", "a-3", "b-2"]
    assert [p["status"] for p in b_results] == ["success"] * 3
    assert sum(p["status"] == "success" for p in a_results) >= 5  # a keeps its share
