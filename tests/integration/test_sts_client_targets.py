"""StsClient with several target languages: one session with every target in its config, one outcome per target as
each arrives (a slow target holds back no other), a seed STS (no `target_languages` capability) dubs the first only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio
from dub_kit import outcome_of
from media_testkit import fresh_metrics, media_settings, noise_segment, serve_asgi

from livedub.deadline import NO_DEADLINE, Deadline
from livedub.media.sts_link.backoff import ExponentialBackoff
from livedub.media.sts_link.sts_client import StsClient
from livedub.media.types import DubOutcome, DubStatus
from livedub.protocol import FragmentData, FragmentProcessed, StreamConfig, StreamReady
from livedub.stack import free_port
from livedub.sts.pipeline import EchoPipeline
from livedub.sts.server import create_app
from livedub.sts.settings import StsSettings

pytestmark = pytest.mark.integration

FAST_BACKOFF = ExponentialBackoff(initial_s=0.05, max_s=0.3)
SLOW_S = 1.5


class SlowFrench(EchoPipeline):
    """Echo, with the French answer SLOW_S after the others (a slow translator or TTS)."""

    def process_each(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE, on_chunk: Any = None
    ) -> Iterator[FragmentProcessed]:
        for answer in super().process_each(fragment, config, deadline, on_chunk):
            if answer.target_language == "fr":
                time.sleep(SLOW_S)
            yield answer


def sts_app(pipeline: EchoPipeline) -> Any:
    settings = StsSettings(_env_file=None).model_copy(update={"worker_threads": 1})  # type: ignore[call-arg]
    return create_app(pipeline, settings)


def make_client(port: int, targets: str) -> StsClient:
    settings = media_settings(STS_SERVICE_URL=f"http://127.0.0.1:{port}", WORKER_TARGET_LANGUAGES=targets)
    return StsClient(
        "s1", settings, fresh_metrics(), targets=settings.targets, backoff=FAST_BACKOFF, connect_timeout_s=5
    )


async def dub_all(
    client: StsClient, seq: int, deadline_s: float | None = None, seconds: float = 1.0
) -> list[tuple[float, DubOutcome]]:
    """Every target's outcome with the time it arrived (seconds after the call)."""
    started = time.monotonic()
    got: list[tuple[float, DubOutcome]] = []
    segment = noise_segment(seq, seconds=seconds)
    if deadline_s is not None:
        segment = dataclasses.replace(segment, deadline=Deadline.after(deadline_s))
    await client.dub_targets(segment, lambda outcome: got.append((time.monotonic() - started, outcome)))
    return got


async def test_each_target_is_dubbed_and_a_slow_one_holds_back_no_other() -> None:
    port = free_port()
    async with serve_asgi(sts_app(SlowFrench()), port):
        client = make_client(port, "es,fr")
        await client.start()
        try:
            assert await client.wait_ready(10)
            assert client.status()["served_languages"] == ["es", "fr"]
            results = [await dub_all(client, seq) for seq in range(2)]
        finally:
            await client.close()
    for got in results:
        assert [o.language for _, o in got] == ["es", "fr"]  # Spanish first, French when it comes
        assert all(o.status is DubStatus.DUBBED and o.pcm is not None for _, o in got)
        (t_es, _), (t_fr, _) = got
        assert t_es < 1.0 and t_fr >= SLOW_S  # Spanish was handed on while French was still being made
        assert t_fr - t_es >= SLOW_S * 0.8


async def test_a_target_missing_its_deadline_times_out_alone() -> None:
    port = free_port()
    async with serve_asgi(sts_app(SlowFrench()), port):
        client = make_client(port, "es,fr")
        await client.start()
        try:
            assert await client.wait_ready(10)
            # The STS makes dub chunks: a dub is due by its deadline with its first chunk, its answer by the deadline
            # + the dub's length (0.5 + 0.5 s here), still before the slow French one.
            got = await dub_all(client, 0, deadline_s=0.5, seconds=0.5)
        finally:
            await client.close()
    outcomes = {o.language: o for _, o in got}
    assert outcomes["es"].status is DubStatus.DUBBED
    assert outcomes["fr"].status is DubStatus.FALLBACK and outcomes["fr"].reason in {"late", "timeout"}
    assert client.status()["circuit_breaker"] == "closed"  # the fragment was healthy in Spanish


class SeedSts:
    """A seed STS: announces no livedub capability, answers once per fragment without a language (echo)."""

    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []
        self.sio = socketio.AsyncServer(async_mode="asgi", max_http_buffer_size=20_000_000)
        self.app = socketio.ASGIApp(self.sio)
        self.sio.on("stream:init", self._on_init)
        self.sio.on("fragment:data", self._on_fragment)

    async def _on_init(self, sid: str, data: dict[str, Any]) -> None:
        self.configs.append(data.get("config", {}))
        ready = StreamReady(stream_id=data["stream_id"], session_id="seed", max_inflight=3)
        await self.sio.emit("stream:ready", ready.to_wire(), to=sid)

    async def _on_fragment(self, sid: str, data: dict[str, Any]) -> None:
        answer = {key: data[key] for key in ("fragment_id", "stream_id", "sequence_number")}
        answer |= {"status": "success", "dubbed_audio": data["audio"], "transcript": "hi", "translated_text": "hola"}
        await self.sio.emit("fragment:processed", answer, to=sid)


async def test_a_seed_sts_dubs_the_first_target_only() -> None:
    port = free_port()
    seed = SeedSts()
    async with serve_asgi(seed.app, port):
        client = make_client(port, "es,fr")
        await client.start()
        try:
            assert await client.wait_ready(10)
            got = await asyncio.wait_for(dub_all(client, 0), 5)
        finally:
            await client.close()
    assert seed.configs[0]["target_language"] == "es"
    assert client.status()["served_languages"] == ["es"]
    outcomes = {o.language: o for _, o in got}
    assert outcomes["es"].status is DubStatus.DUBBED and outcomes["es"].translated_text == "hola"
    assert outcomes["fr"].status is DubStatus.FALLBACK and outcomes["fr"].reason == "target_unsupported"


async def test_one_target_sends_the_seed_config() -> None:
    port = free_port()
    seed = SeedSts()
    async with serve_asgi(seed.app, port):
        client = make_client(port, "")
        await client.start()
        try:
            assert await client.wait_ready(10)
            outcome = await outcome_of(client, noise_segment(0))
        finally:
            await client.close()
    assert "target_languages" not in seed.configs[0] or seed.configs[0]["target_languages"] is None
    assert outcome.status is DubStatus.DUBBED and outcome.language == "es"
