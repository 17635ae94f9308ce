"""In-order emission: results leave in sequence order whatever order they finish in, and gaps cannot block."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from livedub.protocol import AudioFormat, AudioPayload, ErrorCode, FragmentData, FragmentProcessed, StreamConfig
from livedub.sts.metrics import StsMetrics
from livedub.sts.session import InOrderBuffer, SequenceRejected, StreamSession, failed_result

pytestmark = pytest.mark.unit


def test_out_of_order_completion_is_released_in_order() -> None:
    buffer: InOrderBuffer[str] = InOrderBuffer()
    for seq in range(4):
        buffer.expect(seq)
    assert buffer.complete(2, "c") == []
    assert buffer.complete(1, "b") == []
    assert buffer.complete(0, "a") == ["a", "b", "c"]
    assert buffer.inflight == 1
    assert buffer.complete(3, "d") == ["d"]
    assert buffer.inflight == 0


def test_random_completion_orders_always_release_in_sequence() -> None:
    rng = random.Random(7)
    for _ in range(200):
        buffer: InOrderBuffer[int] = InOrderBuffer()
        start = rng.randrange(0, 50)
        seqs = list(range(start, start + rng.randrange(1, 12)))
        for seq in seqs:
            buffer.expect(seq)
        finish_order = seqs[:]
        rng.shuffle(finish_order)
        released: list[int] = []
        for seq in finish_order:
            released += buffer.complete(seq, seq)
        assert released == seqs


def test_first_sequence_number_starts_the_stream() -> None:
    buffer: InOrderBuffer[str] = InOrderBuffer()
    buffer.expect(40)  # a worker that reconnects mid-stream does not start at 0
    assert buffer.complete(40, "x") == ["x"]
    assert buffer.next_sequence == 41


def test_skipped_sequence_does_not_block() -> None:
    buffer: InOrderBuffer[str] = InOrderBuffer()
    buffer.expect(0)
    buffer.expect(2)
    assert buffer.complete(2, "c") == []
    assert buffer.complete(0, "a") == ["a"]
    assert buffer.skip(1) == ["c"]


def test_skip_of_the_very_first_sequence() -> None:
    buffer: InOrderBuffer[str] = InOrderBuffer()
    assert buffer.skip(0) == []
    buffer.expect(1)
    assert buffer.complete(1, "b") == ["b"]


def test_gap_is_detected_and_released() -> None:
    buffer: InOrderBuffer[str] = InOrderBuffer()
    buffer.expect(0)
    buffer.expect(2)  # 1 never arrives
    buffer.expect(3)
    assert buffer.complete(0, "a") == ["a"]
    assert buffer.complete(3, "d") == []
    assert buffer.has_gap()
    assert buffer.release_gap() == []  # 2 is still running: nothing to release yet, but the gap is gone
    assert not buffer.has_gap()
    assert buffer.complete(2, "c") == ["c", "d"]


def test_no_gap_while_the_next_one_is_running() -> None:
    buffer: InOrderBuffer[str] = InOrderBuffer()
    buffer.expect(0)
    buffer.expect(1)
    buffer.complete(1, "b")
    assert not buffer.has_gap()
    assert buffer.release_gap() == []


def test_duplicates_and_passed_numbers_are_rejected() -> None:
    buffer: InOrderBuffer[str] = InOrderBuffer()
    buffer.expect(0)
    with pytest.raises(SequenceRejected):
        buffer.expect(0)
    buffer.complete(0, "a")
    with pytest.raises(SequenceRejected, match="already passed"):
        buffer.expect(0)
    buffer.expect(2)
    buffer.complete(2, "c")
    with pytest.raises(SequenceRejected):
        buffer.expect(2)  # finished, waiting for 1


def test_late_result_nobody_waits_for_is_dropped() -> None:
    buffer: InOrderBuffer[str] = InOrderBuffer()
    buffer.expect(0)
    assert buffer.complete(0, "timeout") == ["timeout"]
    assert buffer.complete(0, "late real result") == []


# ---------------------------------------------------------------- StreamSession (asyncio)


def _fragment(seq: int) -> FragmentData:
    audio = AudioPayload.from_bytes(
        b"\0\0" * 160, format=AudioFormat.PCM_S16LE, sample_rate_hz=16000, channels=1, duration_ms=10.0
    )
    return FragmentData(fragment_id=f"f{seq}", stream_id="s", sequence_number=seq, audio=audio)


def _ok(seq: int) -> FragmentProcessed:
    return FragmentProcessed(fragment_id=f"f{seq}", stream_id="s", sequence_number=seq, status="success")


def _session(sent: list[tuple[str, dict[str, Any]]], gap_timeout_s: float = 0.05) -> StreamSession:
    async def emit(event: str, payload: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a real emit yields; interleavings must not reorder
        sent.append((event, payload))

    return StreamSession(
        stream_id="s",
        worker_id="w",
        sid="sid",
        config=StreamConfig(),
        emit=emit,
        metrics=StsMetrics(),
        gap_timeout_s=gap_timeout_s,
    )


def _processed_seqs(sent: list[tuple[str, dict[str, Any]]]) -> list[int]:
    return [p["sequence_number"] for e, p in sent if e == "fragment:processed"]


async def test_session_emits_in_order_under_concurrent_completions() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    session = _session(sent)
    for seq in range(6):
        session.accept(_fragment(seq))
    await asyncio.gather(*(session.complete(_ok(seq)) for seq in (5, 3, 4, 1, 0, 2)))
    assert _processed_seqs(sent) == [0, 1, 2, 3, 4, 5]
    assert await session.wait_drained(1.0)
    assert session.complete_event().total_fragments == 6


async def test_session_releases_after_a_gap_timeout() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    session = _session(sent, gap_timeout_s=0.05)
    session.accept(_fragment(0))
    session.accept(_fragment(2))  # 1 was lost on the way
    await session.complete(_ok(2))
    await session.complete(_ok(0))
    assert _processed_seqs(sent) == [0]
    assert await session.wait_drained(5.0)
    assert _processed_seqs(sent) == [0, 2]


async def test_session_statistics_count_failures_and_timeouts() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    session = _session(sent)
    session.accept(_fragment(0))
    session.accept(_fragment(1))
    await session.complete(
        failed_result(_fragment(1), "timeout", ErrorCode.TIMEOUT, "slow", retryable=True, processing_time_ms=8000.0)
    )
    await session.complete(_ok(0))
    stats = session.complete_event().statistics
    assert (stats["success_count"], stats["failed_count"], stats["timeout_count"]) == (1, 1, 1)
    assert session.complete_event().total_duration_ms == 20.0


async def test_closed_session_emits_nothing() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    session = _session(sent)
    session.accept(_fragment(0))
    session.close()
    await session.complete(_ok(0))
    assert sent == []
