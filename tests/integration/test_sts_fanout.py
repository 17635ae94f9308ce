"""Redis fan-out of the STS events (issue 12), with a real `redis-server` started on a free port (never a mock).

1. Two Socket.IO servers in this process, each with its own `LocalFirstRedisManager` (two replicas as far as
   python-socketio knows): a monitor on replica 1 sees what replica 2 emits to a stream's monitor rooms; the worker
   gets its own event once; the worker's event does not wait for Redis (Redis stopped: still delivered).
2. Two real STS processes (`livedub sts --pipeline echo`) sharing Redis: a monitor subscribed on replica 1 sees the
   `fragment:processed` of a stream served by replica 2.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from media_testkit import serve_asgi
from redis import asyncio as aioredis
from redis_testkit import REDIS_SERVER, running_redis
from sts_testkit import Recorder, init_payload, pcm_fragment

import livedub.sts.server as sts_server
from livedub.stack import free_port
from livedub.sts.fanout import FanoutSettings, LocalFirstRedisManager, client_manager

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (Debian package redis-server)"),
]

CHANNEL = "livedub-sts-test"


def test_no_redis_url_no_manager() -> None:
    assert client_manager(FanoutSettings(REDIS_URL="")) is None
    manager = client_manager(FanoutSettings(REDIS_URL="redis://127.0.0.1:1/0", REDIS_CHANNEL="c"))
    assert isinstance(manager, LocalFirstRedisManager) and manager.channel == "c"


async def wait_subscribers(redis_url: str, channel: str, count: int, within_s: float = 10.0) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(within_s):
            while (await redis.pubsub_numsub(channel))[0][1] < count:  # noqa: ASYNC110 - polling Redis
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


def replica_app(redis_url: str) -> Any:
    """A replica as small as the STS's emission: `work` answers to the sender and the stream's monitor rooms."""
    manager = client_manager(FanoutSettings(REDIS_URL=redis_url, REDIS_CHANNEL=CHANNEL))
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)

    @sio.on("watch")
    async def watch(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    @sio.on("work")
    async def work(sid: str, stream_id: str) -> None:
        rooms = [sid, sts_server.monitor_room(stream_id), sts_server.MONITOR_ALL_ROOM]
        await sio.emit("done", {"stream_id": stream_id, "by": sid}, to=rooms)

    return socketio.ASGIApp(sio)


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Recorder]:
    recorder = await Recorder().connect(url)
    try:
        yield recorder
    finally:
        await recorder.close()


async def test_monitor_on_one_replica_sees_events_of_the_other(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis_url:
        async with serve_asgi(replica_app(redis_url)) as one, serve_asgi(replica_app(redis_url)) as two:
            async with client(one) as watcher, client(one) as watch_all, client(two) as worker:
                assert await watcher.sio.call("watch", sts_server.monitor_room("s1"), timeout=5)
                assert await watch_all.sio.call("watch", sts_server.MONITOR_ALL_ROOM, timeout=5)
                assert await worker.sio.call("watch", sts_server.MONITOR_ALL_ROOM, timeout=5)  # worker and monitor
                await wait_subscribers(redis_url, CHANNEL, 2)

                await worker.emit("work", "s1")
                await worker.emit("work", "s2")
                await watcher.count("done", 1, within_s=5, stream_id="s1")
                await watch_all.count("done", 2, within_s=5)
                await worker.count("done", 2, within_s=5)
                await asyncio.sleep(0.3)  # nothing more arrives: one copy per socket
                assert len(watcher.of("done")) == 1  # s2 is not its stream
                assert len(watch_all.of("done")) == 2
                assert len(worker.of("done")) == 2  # its own events, once although it is also in monitor:*


async def test_without_redis_the_worker_still_gets_its_events(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis_url:
        async with serve_asgi(replica_app(redis_url)) as one, client(one) as worker:
            await wait_subscribers(redis_url, CHANNEL, 1)
    # Redis is gone now; the replica keeps serving its own client at once.
    async with serve_asgi(replica_app(redis_url)) as one, client(one) as worker:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await worker.emit("work", "s1")
        await worker.count("done", 1, within_s=5)
        assert loop.time() - started < 1.0


def start_replica(port: int, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STS_API_KEY": "", "STS_MONITOR_KEY": "", "REDIS_URL": redis_url, "REDIS_CHANNEL": CHANNEL}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "livedub.cli", "sts", "--host", "127.0.0.1", "--port", str(port),
             "--pipeline", "echo", "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


async def wait_healthy(url: str, within_s: float = 60.0) -> None:
    async with httpx.AsyncClient(timeout=0.5) as http, asyncio.timeout(within_s):
        while True:
            try:
                if (await http.get(url + "/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


@pytest.mark.skipif(
    not hasattr(sts_server, "client_manager"),
    reason="sts/server.py does not build the Socket.IO manager with livedub.sts.fanout.client_manager yet",
)
async def test_two_sts_processes_share_monitor_rooms_through_redis(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis_url:
        ports = [free_port(), free_port()]
        replicas = [start_replica(p, redis_url, tmp_path / f"sts{i}.log") for i, p in enumerate(ports)]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        try:
            for url in urls:
                await wait_healthy(url)
            async with client(urls[0]) as monitor, client(urls[1]) as worker:
                ack = await monitor.sio.call("monitor:subscribe", {"stream_id": "far"}, timeout=10)
                assert ack["subscribed"] is True
                await wait_subscribers(redis_url, CHANNEL, 2)
                await worker.emit("stream:init", init_payload("far"))
                await worker.count("stream:ready", 1)
                for seq in range(3):
                    await worker.emit("fragment:data", pcm_fragment("far", seq))
                seen = await monitor.count("fragment:processed", 3, within_s=20, stream_id="far")
                assert sorted(p["sequence_number"] for p in seen) == [0, 1, 2]
                assert len(worker.of("fragment:processed", "far")) == 3
                assert not monitor.of("fragment:processed", "near")
        finally:
            for replica in replicas:
                replica.terminate()
            for replica in replicas:
                replica.wait(15)
