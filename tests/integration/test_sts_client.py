"""StsClient against the real STS server (echo pipeline) and against scripted failures.

Echo: every dubbed fragment comes back with exactly the audio sent. Faults: no STS -> immediate fallbacks, then
the circuit breaker opens; STS started later -> the client reconnects, re-inits, and dubbing resumes.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from media_testkit import (
    FakeSts,
    echo_sts_app,
    fresh_metrics,
    media_settings,
    noise_segment,
    sample,
    serve_asgi,
)

from livedub.media.backoff import ExponentialBackoff
from livedub.media.circuit_breaker import BreakerState
from livedub.media.sts_audio import downmix_to_mono
from livedub.media.sts_client import StsClient
from livedub.media.types import DubStatus
from livedub.stack import free_port

pytestmark = pytest.mark.integration

FAST_BACKOFF = ExponentialBackoff(initial_s=0.05, max_s=0.3)


def make_client(port: int, metrics=None, **settings: object) -> StsClient:
    config = media_settings(STS_SERVICE_URL=f"http://127.0.0.1:{port}", **settings)
    return StsClient("s1", config, metrics or fresh_metrics(), backoff=FAST_BACKOFF, connect_timeout_s=5)


@pytest.mark.parametrize(("audio_format", "channels"), [("pcm_s16le", 1), ("pcm_s16le", 2), ("m4a", 1), ("m4a", 2)])
async def test_echo_returns_audio_of_equal_length(audio_format: str, channels: int) -> None:
    port = free_port()
    metrics = fresh_metrics()
    async with serve_asgi(echo_sts_app(), port):
        client = make_client(port, metrics, STS_AUDIO_FORMAT=audio_format)
        await client.start()
        try:
            assert await client.wait_ready(10)
            segments = [noise_segment(seq, seconds=1.5, channels=channels) for seq in range(3)]
            outcomes = [await client.dub(segment) for segment in segments]
        finally:
            await client.close()
    for segment, outcome in zip(segments, outcomes, strict=True):
        assert outcome.status is DubStatus.DUBBED, outcome.reason
        assert outcome.pcm is not None
        assert outcome.pcm.shape == segment.pcm.shape
        sent = downmix_to_mono(segment.pcm)[:, 0]  # STS gets mono; the dub comes back on every channel
        for channel in range(channels):
            if audio_format == "pcm_s16le":
                assert np.array_equal(outcome.pcm[:, channel], sent)
            else:  # lossy, but aligned: the priming delay must not shift the dub
                assert np.corrcoef(outcome.pcm[:, channel].astype(float), sent.astype(float))[0, 1] > 0.9
    assert sample(metrics, "sts_fragments_sent_total", stream_id="s1") == 3
    assert sample(metrics, "sts_fragments_processed_total", stream_id="s1", status="success") == 3
    assert sample(metrics, "sts_round_trip_seconds_count", stream_id="s1") == 3


async def test_concurrent_dubs_respect_the_inflight_limit_and_all_come_back() -> None:
    port = free_port()
    async with serve_asgi(echo_sts_app(), port):
        client = make_client(port, STS_MAX_INFLIGHT=2)
        await client.start()
        try:
            assert await client.wait_ready(10)
            segments = [noise_segment(seq, seconds=0.5) for seq in range(6)]
            outcomes = await asyncio.gather(*(client.dub(s) for s in segments))
        finally:
            await client.close()
    assert [o.status for o in outcomes] == [DubStatus.DUBBED] * 6
    assert [o.sequence_number for o in outcomes] == list(range(6))


async def test_api_key_is_presented_and_a_wrong_key_means_fallback() -> None:
    port = free_port()
    async with serve_asgi(echo_sts_app(api_key="k3y"), port):
        good = make_client(port, STS_API_KEY="k3y")
        bad = make_client(port, STS_API_KEY="nope")
        await good.start()
        await bad.start()
        try:
            assert await good.wait_ready(10)
            assert not await bad.wait_ready(1.0)
            assert (await good.dub(noise_segment(0))).status is DubStatus.DUBBED
            outcome = await bad.dub(noise_segment(0))
            assert outcome.status is DubStatus.FALLBACK and outcome.reason == "sts_unavailable"
        finally:
            await good.close()
            await bad.close()


async def test_no_sts_opens_the_breaker_then_dubbing_resumes_when_sts_starts() -> None:
    port = free_port()  # nothing listens here yet
    metrics = fresh_metrics()
    client = make_client(port, metrics, CIRCUIT_BREAKER_THRESHOLD=2, CIRCUIT_BREAKER_COOLDOWN_MS=300)
    await client.start()
    try:
        reasons = [(await client.dub(noise_segment(seq))).reason for seq in range(4)]
        assert reasons == ["sts_unavailable", "sts_unavailable", "circuit_open", "circuit_open"]
        assert sample(metrics, "circuit_breaker_state", stream_id="s1") == BreakerState.OPEN
        assert sample(metrics, "fallbacks_total", stream_id="s1", reason="circuit_open") == 2

        async with serve_asgi(echo_sts_app(), port):
            assert await client.wait_ready(15)  # reconnected with back-off and re-sent stream:init
            await asyncio.sleep(0.35)  # let the cooldown pass: the next dub is the half-open trial
            seq = 4
            outcome = await client.dub(noise_segment(seq))
            assert outcome.status is DubStatus.DUBBED, outcome.reason
            assert sample(metrics, "circuit_breaker_state", stream_id="s1") == BreakerState.CLOSED
            assert sample(metrics, "sts_fragments_processed_total", stream_id="s1", status="success") == 1
    finally:
        await client.close()


async def test_unanswered_fragment_falls_back_at_its_deadline() -> None:
    port = free_port()
    fake = FakeSts("silent")
    metrics = fresh_metrics()
    async with serve_asgi(fake.app, port):
        client = make_client(port, metrics, STS_TIMEOUT_MS=300, CIRCUIT_BREAKER_THRESHOLD=2)
        await client.start()
        try:
            assert await client.wait_ready(10)
            first = await client.dub(noise_segment(0))
            second = await client.dub(noise_segment(1))
            third = await client.dub(noise_segment(2))
        finally:
            await client.close()
    assert (first.reason, second.reason, third.reason) == ("timeout", "timeout", "circuit_open")
    assert len(fake.fragments) == 2
    assert sample(metrics, "errors_total", stream_id="s1", type="sts_timeout") == 2
    assert sample(metrics, "sts_inflight", stream_id="s1") == 0


async def test_error_event_for_a_fragment_falls_back() -> None:
    port = free_port()
    async with serve_asgi(FakeSts("error").app, port):
        client = make_client(port)
        await client.start()
        try:
            assert await client.wait_ready(10)
            outcome = await client.dub(noise_segment(0))
        finally:
            await client.close()
    assert outcome.status is DubStatus.FALLBACK and outcome.reason == "sts_error"


async def test_connection_drop_fails_inflight_fragment_and_reconnects_with_a_new_init() -> None:
    port = free_port()
    fake = FakeSts("drop")
    async with serve_asgi(fake.app, port):
        client = make_client(port)
        await client.start()
        try:
            assert await client.wait_ready(10)
            outcome = await client.dub(noise_segment(0))
            assert outcome.reason == "disconnected"
            # The drop cleared `ready`; it comes back only with the stream:ready answering a second stream:init.
            assert await client.wait_ready(10)
            assert fake.inits == 2
        finally:
            await client.close()
