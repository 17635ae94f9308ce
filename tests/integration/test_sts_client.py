"""StsClient against the real STS server (echo pipeline) and against scripted failures.

Echo: every dubbed fragment comes back with exactly the audio sent. Faults: no STS -> immediate fallbacks, then
the circuit breaker opens; STS started later -> the client reconnects, re-inits, and dubbing resumes.
Deadlines: a segment's deadline reaches STS as deadline_ms; work dropped as too late does not open the breaker,
STS faults do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from typing import Any

import numpy as np
import pytest
from dub_kit import outcome_of
from media_testkit import (
    FakeSts,
    echo_sts_app,
    fresh_metrics,
    media_settings,
    noise_segment,
    sample,
    serve_asgi,
)

from livedub.deadline import NO_DEADLINE, Deadline
from livedub.media.sts_link.backoff import ExponentialBackoff
from livedub.media.sts_link.circuit_breaker import BreakerState
from livedub.media.sts_link.sts_client import StsClient
from livedub.media.types import AudioSegment, DubStatus
from livedub.protocol import ErrorCode, FragmentData, FragmentProcessed, StreamConfig
from livedub.protocol.codec import downmix_to_mono
from livedub.stack import free_port
from livedub.sts.pipeline import EchoPipeline
from livedub.sts.server import create_app
from livedub.sts.session import failed_result
from livedub.sts.settings import StsSettings

pytestmark = pytest.mark.integration

FAST_BACKOFF = ExponentialBackoff(initial_s=0.05, max_s=0.3)


def make_client(port: int, metrics=None, **settings: object) -> StsClient:
    config = media_settings(STS_SERVICE_URL=f"http://127.0.0.1:{port}", **settings)
    return StsClient(
        "s1", config, metrics or fresh_metrics(), targets=config.targets, backoff=FAST_BACKOFF, connect_timeout_s=5
    )


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
            outcomes = [await outcome_of(client, segment) for segment in segments]
        finally:
            await client.close()
    for segment, outcome in zip(segments, outcomes, strict=True):
        assert outcome.status is DubStatus.DUBBED, outcome.reason
        assert outcome.pcm is not None
        assert outcome.pcm.shape == (segment.num_samples, 1)  # mono until the muxer mixes it onto every channel
        sent = downmix_to_mono(segment.pcm)[:, 0]  # STS gets mono
        if audio_format == "pcm_s16le":
            assert np.array_equal(outcome.pcm[:, 0], sent)
        else:  # lossy, but aligned: the priming delay must not shift the dub
            assert np.corrcoef(outcome.pcm[:, 0].astype(float), sent.astype(float))[0, 1] > 0.9
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
            outcomes = await asyncio.gather(*(outcome_of(client, s) for s in segments))
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
            assert (await outcome_of(good, noise_segment(0))).status is DubStatus.DUBBED
            outcome = await outcome_of(bad, noise_segment(0))
            assert outcome.status is DubStatus.FALLBACK and outcome.reason == "sts_unavailable"
        finally:
            await good.close()
            await bad.close()


async def test_no_sts_falls_back_without_opening_the_breaker_then_dubbing_resumes_when_sts_starts() -> None:
    port = free_port()  # nothing listens here yet
    metrics = fresh_metrics()
    client = make_client(port, metrics, CIRCUIT_BREAKER_THRESHOLD=2, CIRCUIT_BREAKER_COOLDOWN_MS=60000)
    await client.start()
    try:
        reasons = [(await outcome_of(client, noise_segment(seq))).reason for seq in range(4)]
        assert reasons == ["sts_unavailable"] * 4
        # No session is not an STS fault: counting it opened the breaker just as STS came back (issue 9, item 6).
        assert sample(metrics, "circuit_breaker_state", stream_id="s1") == BreakerState.CLOSED

        async with serve_asgi(echo_sts_app(), port):
            assert await client.wait_ready(15)  # reconnected with back-off and re-sent stream:init
            outcome = await outcome_of(client, noise_segment(4))  # at once: no cooldown to sit out
            assert outcome.status is DubStatus.DUBBED, outcome.reason
            assert sample(metrics, "circuit_breaker_state", stream_id="s1") == BreakerState.CLOSED
            assert sample(metrics, "sts_fragments_processed_total", stream_id="s1", status="success") == 1
    finally:
        await client.close()


async def test_a_segment_waits_for_the_reconnect_while_its_dub_can_be_on_time() -> None:
    port = free_port()
    client = make_client(port)
    await client.start()
    try:
        assert (await outcome_of(client, with_deadline(0, 0.3))).reason == "sts_unavailable"  # nothing comes in time
        waiting = asyncio.create_task(outcome_of(client, with_deadline(1, 8.0)))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        async with serve_asgi(echo_sts_app(), port):
            outcome = await asyncio.wait_for(waiting, 8.0)
            assert outcome.status is DubStatus.DUBBED, outcome.reason
    finally:
        await client.close()


async def test_an_open_breaker_tries_at_once_on_a_new_session() -> None:
    """An STS that failed (breaker open, long cooldown) is restarted: its new session gets a trial at once."""
    port = free_port()
    metrics = fresh_metrics()
    client = make_client(port, metrics, CIRCUIT_BREAKER_THRESHOLD=1, CIRCUIT_BREAKER_COOLDOWN_MS=60000)
    await client.start()
    try:
        async with serve_asgi(deadline_app(DeadlineEcho("fail")), port):
            assert await client.wait_ready(10)
            assert (await outcome_of(client, noise_segment(0))).reason == "failed"
            assert (await outcome_of(client, noise_segment(1))).reason == "circuit_open"
        async with serve_asgi(echo_sts_app(), port):  # the restarted STS
            assert await client.wait_ready(15)
            outcome = await outcome_of(client, noise_segment(2))
            assert outcome.status is DubStatus.DUBBED, outcome.reason
            assert sample(metrics, "circuit_breaker_state", stream_id="s1") == BreakerState.CLOSED
    finally:
        await client.close()


async def test_a_clean_end_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9 nit: closing the client after its stream ended logged WARNING "STS connection lost"."""
    port = free_port()
    async with serve_asgi(echo_sts_app(), port):
        client = make_client(port)
        await client.start()
        assert await client.wait_ready(10)
        assert (await outcome_of(client, noise_segment(0))).status is DubStatus.DUBBED
        with caplog.at_level(logging.INFO, logger="livedub.media.sts_link.sts_client"):
            await client.close()
    records = [r for r in caplog.records if r.name == "livedub.media.sts_link.sts_client"]
    assert not [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert any("session ended" in r.getMessage() for r in records)


async def test_unanswered_fragment_falls_back_at_its_deadline() -> None:
    port = free_port()
    fake = FakeSts("silent")
    metrics = fresh_metrics()
    async with serve_asgi(fake.app, port):
        client = make_client(port, metrics, STS_TIMEOUT_MS=300, CIRCUIT_BREAKER_THRESHOLD=2)
        await client.start()
        try:
            assert await client.wait_ready(10)
            first = await outcome_of(client, noise_segment(0))
            second = await outcome_of(client, noise_segment(1))
            third = await outcome_of(client, noise_segment(2))
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
            outcome = await outcome_of(client, noise_segment(0))
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
            outcome = await outcome_of(client, noise_segment(0))
            assert outcome.reason == "disconnected"
            # The drop cleared `ready`; it comes back only with the stream:ready answering a second stream:init.
            assert await client.wait_ready(10)
            assert fake.inits == 2
        finally:
            await client.close()


# ---------------------------------------------------------------- deadlines and the breaker


class DeadlineEcho(EchoPipeline):
    """The echo pipeline, recording what each fragment asked for; `stall` makes every fragment hang (ignoring its
    deadline) and `fail` answers INTERNAL_ERROR, to tell late drops from faults."""

    def __init__(self, mode: str = "echo", stall: set[int] | None = None) -> None:
        self.mode = mode
        self.stall = stall or set()  # sequence numbers that hang (mode "echo")
        self.seen: list[tuple[int | None, int, float]] = []  # (deadline_ms, dub_overrun_ms, deadline left in s)
        self.release = threading.Event()

    def process(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE
    ) -> FragmentProcessed:
        self.seen.append((fragment.deadline_ms, config.dub_overrun_ms, deadline.remaining()))
        if self.mode == "stall" or fragment.sequence_number in self.stall:
            self.release.wait(30)
        if self.mode == "fail":
            return failed_result(fragment, "pipeline", ErrorCode.INTERNAL_ERROR, "boom", retryable=False,
                                 processing_time_ms=1.0)  # fmt: skip
        return super().process(fragment, config, deadline)


def deadline_app(processor: DeadlineEcho) -> Any:
    settings = StsSettings(_env_file=None).model_copy(update={"api_key": "", "worker_threads": 1})  # type: ignore[call-arg]
    return create_app(processor, settings)


def client_at(url: str, metrics: Any, **settings: Any) -> StsClient:
    overrun = settings.pop("dub_overrun_ms", 0)
    config = media_settings(STS_SERVICE_URL=url, **settings)
    return StsClient(
        "s1", config, metrics, targets=config.targets, backoff=FAST_BACKOFF, connect_timeout_s=5,
        dub_overrun_ms=overrun,
    )  # fmt: skip


def with_deadline(seq: int, deadline_s: float | None) -> AudioSegment:
    return dataclasses.replace(noise_segment(seq, seconds=0.5), deadline=Deadline.after(deadline_s))


async def test_segment_deadline_and_dub_overrun_reach_sts() -> None:
    processor = DeadlineEcho()
    async with serve_asgi(deadline_app(processor)) as url:
        client = client_at(url, fresh_metrics(), dub_overrun_ms=1500, STS_AUDIO_FORMAT="pcm_s16le")
        await client.start()
        try:
            assert await client.wait_ready(10)
            timed = await outcome_of(client, with_deadline(0, 3.0))
            seed_like = await outcome_of(client, with_deadline(1, None))
        finally:
            await client.close()
    assert (timed.status, seed_like.status) == (DubStatus.DUBBED, DubStatus.DUBBED)
    (deadline_ms, overrun_ms, left_s), (no_deadline, _, seed_left_s) = processor.seen
    assert overrun_ms == 1500
    assert 2000 <= deadline_ms <= 3000 - 100  # what is left of 3 s, less the margin for the answer
    assert left_s <= deadline_ms / 1000
    assert no_deadline is None and seed_left_s > 7.0  # without a deadline: STS_TIMEOUT_MS (8 s) applies


async def test_late_drops_answered_by_sts_do_not_open_the_breaker() -> None:
    processor = DeadlineEcho("stall")
    metrics = fresh_metrics()
    async with serve_asgi(deadline_app(processor)) as url:
        client = client_at(url, metrics, CIRCUIT_BREAKER_THRESHOLD=2)
        await client.start()
        try:
            assert await client.wait_ready(10)
            outcomes = [await outcome_of(client, with_deadline(seq, 0.6)) for seq in range(4)]
            state = sample(metrics, "circuit_breaker_state", stream_id="s1")
        finally:
            processor.release.set()
            await client.close()
    assert [o.reason for o in outcomes] == ["late"] * 4  # STS answered TIMEOUT at each deadline
    assert [o.sts_status for o in outcomes] == ["failed"] * 4
    assert state == BreakerState.CLOSED


async def test_one_stuck_fragment_costs_only_its_own_dub() -> None:
    """The issue's fault case through client and server: one inference thread, fragment 1 hangs; its neighbours,
    sent at the same time, are dubbed, and the breaker stays closed."""
    processor = DeadlineEcho(stall={1})
    metrics = fresh_metrics()
    async with serve_asgi(deadline_app(processor)) as url:
        client = client_at(url, metrics, CIRCUIT_BREAKER_THRESHOLD=1, STS_MAX_INFLIGHT=4)
        await client.start()
        try:
            assert await client.wait_ready(10)
            outcomes = await asyncio.gather(*(outcome_of(client, with_deadline(seq, 1.0 + seq)) for seq in range(4)))
            state = sample(metrics, "circuit_breaker_state", stream_id="s1")
        finally:
            processor.release.set()
            await client.close()
    assert [o.status for o in outcomes] == [DubStatus.DUBBED, DubStatus.FALLBACK, DubStatus.DUBBED, DubStatus.DUBBED]
    assert outcomes[1].reason == "late"
    assert state == BreakerState.CLOSED


async def test_sts_faults_still_open_the_breaker() -> None:
    metrics = fresh_metrics()
    async with serve_asgi(deadline_app(DeadlineEcho("fail"))) as url:
        client = client_at(url, metrics, CIRCUIT_BREAKER_THRESHOLD=2)
        await client.start()
        try:
            assert await client.wait_ready(10)
            reasons = [(await outcome_of(client, with_deadline(seq, 2.0))).reason for seq in range(3)]
        finally:
            await client.close()
    assert reasons == ["failed", "failed", "circuit_open"]
    assert sample(metrics, "circuit_breaker_state", stream_id="s1") == BreakerState.OPEN


async def test_a_segment_without_time_left_is_dropped_before_sending() -> None:
    processor = DeadlineEcho()
    metrics = fresh_metrics()
    async with serve_asgi(deadline_app(processor)) as url:
        client = client_at(url, metrics, CIRCUIT_BREAKER_THRESHOLD=1)
        await client.start()
        try:
            assert await client.wait_ready(10)
            outcomes = [await outcome_of(client, with_deadline(seq, s)) for seq, s in enumerate([0.05, 0.0, -1.0])]
            after = await outcome_of(client, with_deadline(3, 2.0))
        finally:
            await client.close()
    assert [o.reason for o in outcomes] == ["late"] * 3
    assert processor.seen[1:] == [] and len(processor.seen) == 1  # only the last one was sent
    assert after.status is DubStatus.DUBBED  # the breaker (threshold 1) did not open
    assert sample(metrics, "sts_fragments_sent_total", stream_id="s1") == 1


async def test_giving_up_before_a_seed_sts_had_to_answer_is_a_late_drop() -> None:
    """A seed STS (no `deadline` capability) is owed an answer only by STS_TIMEOUT_MS: a segment deadline that runs
    out earlier is the client's late drop, not an STS fault; waiting the full timeout still is one."""
    fake = FakeSts("silent")
    metrics = fresh_metrics()
    async with serve_asgi(fake.app) as url:
        client = client_at(url, metrics, STS_TIMEOUT_MS=1000, CIRCUIT_BREAKER_THRESHOLD=2)
        await client.start()
        try:
            assert await client.wait_ready(10)
            early = [(await outcome_of(client, with_deadline(seq, 0.5))).reason for seq in range(3)]
            assert sample(metrics, "circuit_breaker_state", stream_id="s1") == BreakerState.CLOSED
            full = [(await outcome_of(client, with_deadline(seq, None))).reason for seq in range(3, 6)]
        finally:
            await client.close()
    assert early == ["timeout"] * 3
    assert "deadline_ms" not in fake.fragments[3] and fake.fragments[0]["deadline_ms"] <= 400
    assert full == ["timeout", "timeout", "circuit_open"]
