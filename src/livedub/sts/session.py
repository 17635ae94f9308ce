"""Per-stream state of the STS server: in-order emission, backpressure, statistics, the phrases just translated.

`InOrderBuffer` and `backpressure_level` are pure (unit-tested on their own); `StreamSession` adds the asyncio
parts: an emission lock so `fragment:processed` leaves strictly in sequence order, and a gap timer so a sequence
number that never arrives cannot hold back the ones after it forever.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from livedub.deadline import Deadline
from livedub.protocol import (
    Backpressure,
    BackpressureAction,
    BackpressureSeverity,
    ErrorCode,
    ErrorEvent,
    ErrorSeverity,
    EventName,
    FragmentData,
    FragmentError,
    FragmentProcessed,
    FragmentStatus,
    StreamComplete,
    StreamConfig,
)
from livedub.sts.metrics import StsMetrics
from livedub.sts.replies import failed_result as failed_result  # where tests and callers have found it

log = logging.getLogger(__name__)

T = TypeVar("T")

# In-flight thresholds per stream (the seed's): 1-3 low, 4-6 medium, 7-10 high, more is rejected.
LOW_MAX_INFLIGHT = 3
MEDIUM_MAX_INFLIGHT = 6
HIGH_MAX_INFLIGHT = 10
RECOMMENDED_DELAY_MS = {
    BackpressureSeverity.LOW: None,
    BackpressureSeverity.MEDIUM: 500,
    BackpressureSeverity.HIGH: 2000,
}
# How long a missing sequence number may hold back later results. Socket.IO keeps one connection's events in
# order, so a number that has not arrived when a later one has is almost surely never coming (rejected, skipped).
DEFAULT_GAP_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class BackpressureLevel:
    severity: BackpressureSeverity
    action: BackpressureAction
    recommended_delay_ms: int | None


def backpressure_level(inflight: int) -> BackpressureLevel | None:
    """Severity and action for a stream with `inflight` fragments in flight; None once over the hard limit."""
    if inflight <= LOW_MAX_INFLIGHT:
        severity, action = BackpressureSeverity.LOW, BackpressureAction.NONE
    elif inflight <= MEDIUM_MAX_INFLIGHT:
        severity, action = BackpressureSeverity.MEDIUM, BackpressureAction.SLOW_DOWN
    elif inflight <= HIGH_MAX_INFLIGHT:
        severity, action = BackpressureSeverity.HIGH, BackpressureAction.PAUSE
    else:
        return None
    return BackpressureLevel(severity, action, RECOMMENDED_DELAY_MS[severity])


class SequenceRejected(ValueError):
    """A fragment whose sequence number is a duplicate or already passed."""


class InOrderBuffer(Generic[T]):
    """Holds finished results until every earlier sequence number has been released.

    The first sequence number seen (expected or skipped) starts the stream. A number can be `expect`ed (accepted,
    result to come), `complete`d (result in), or `skip`ped (will never come). `release_gap` gives up on numbers that
    were never seen, so later results are not blocked forever.
    """

    def __init__(self) -> None:
        self._next: int | None = None
        self._pending: set[int] = set()
        self._ready: dict[int, T] = {}
        self._skipped: set[int] = set()

    @property
    def next_sequence(self) -> int | None:
        return self._next

    @property
    def inflight(self) -> int:
        """Accepted and not yet released (still running, or finished and waiting for earlier ones)."""
        return len(self._pending) + len(self._ready)

    def check(self, seq: int) -> None:
        """Raise SequenceRejected if `seq` cannot be accepted (already seen or already passed)."""
        if self._next is not None and seq < self._next:
            raise SequenceRejected(f"sequence_number {seq} already passed (next is {self._next})")
        if seq in self._pending or seq in self._ready or seq in self._skipped:
            raise SequenceRejected(f"sequence_number {seq} was already received")

    def expect(self, seq: int) -> None:
        self.check(seq)
        if self._next is None:
            self._next = seq
        self._pending.add(seq)

    def complete(self, seq: int, item: T) -> list[T]:
        """Record a result; return the results now releasable, in order. A result nobody waits for is dropped."""
        if seq not in self._pending:
            return []
        self._pending.discard(seq)
        self._ready[seq] = item
        return self._drain()

    def skip(self, seq: int) -> list[T]:
        """`seq` will never produce a result (rejected before acceptance)."""
        if self._next is None:
            self._next = seq + 1
            return []
        if seq < self._next or seq in self._pending or seq in self._ready:
            return []
        self._skipped.add(seq)
        return self._drain()

    def has_gap(self) -> bool:
        """True when later numbers are waiting on one that was never seen."""
        if self._next is None or not (self._pending or self._ready):
            return False
        return self._next not in self._pending and self._next not in self._ready and self._next not in self._skipped

    def release_gap(self) -> list[T]:
        """Give up on unseen numbers before the earliest accepted one; return what that releases."""
        if not self.has_gap():
            return []
        self._next = min(self._pending | set(self._ready))
        self._skipped = {s for s in self._skipped if s > self._next}
        return self._drain()

    def _drain(self) -> list[T]:
        released: list[T] = []
        assert self._next is not None
        while True:
            if self._next in self._ready:
                released.append(self._ready.pop(self._next))
            elif self._next in self._skipped:
                self._skipped.discard(self._next)
            else:
                return released
            self._next += 1


@dataclass
class StreamStatistics:
    """Totals reported in `stream:complete`."""

    success_count: int = 0
    partial_count: int = 0
    failed_count: int = 0
    rejected_count: int = 0
    timeout_count: int = 0
    audio_duration_ms: float = 0.0
    processing_times_ms: list[float] = field(default_factory=list)

    @property
    def total_fragments(self) -> int:
        return self.success_count + self.partial_count + self.failed_count

    def record(self, result: FragmentProcessed, original_duration_ms: float) -> None:
        if result.status is FragmentStatus.SUCCESS:
            self.success_count += 1
        elif result.status is FragmentStatus.PARTIAL:
            self.partial_count += 1
        else:
            self.failed_count += 1
        if result.error is not None and result.error.code is ErrorCode.TIMEOUT:
            self.timeout_count += 1
        self.audio_duration_ms += original_duration_ms
        self.processing_times_ms.append(result.processing_time_ms)

    def to_dict(self) -> dict[str, Any]:
        times = sorted(self.processing_times_ms)
        avg = sum(times) / len(times) if times else 0.0
        # Nearest-rank percentile: small samples, no interpolation needed.
        p95 = times[max(0, math.ceil(0.95 * len(times)) - 1)] if times else 0.0
        return {
            "total_fragments": self.total_fragments,
            "success_count": self.success_count,
            "partial_count": self.partial_count,
            "failed_count": self.failed_count,
            "timeout_count": self.timeout_count,
            "rejected_count": self.rejected_count,
            "avg_processing_time_ms": round(avg, 1),
            "p95_processing_time_ms": round(p95, 1),
        }


class SessionState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ENDING = "ending"
    CLOSED = "closed"


# (event name, wire payload) -> sends it to the stream's client and its monitors.
EmitFn = Callable[[str, dict[str, Any]], Awaitable[None]]


def fragment_budget_s(fragment: FragmentData, config: StreamConfig) -> float:
    """Seconds after its arrival by which a fragment must be answered: its `deadline_ms`, else `timeout_ms`."""
    budget_ms = fragment.deadline_ms if fragment.deadline_ms is not None else config.timeout_ms
    return budget_ms / 1000.0


def dub_length_s(fragment: FragmentData, config: StreamConfig) -> float:
    """The longest a fragment's dub may play: the fragment plus the overrun its stream allows."""
    return (fragment.audio.duration_ms + config.dub_overrun_ms) / 1000.0


class StreamSession:
    """One `stream:init`ed stream, owned by one Socket.IO client (`sid`)."""

    def __init__(
        self,
        *,
        stream_id: str,
        worker_id: str,
        sid: str,
        config: StreamConfig,
        emit: EmitFn,
        metrics: StsMetrics,
        gap_timeout_s: float = DEFAULT_GAP_TIMEOUT_S,
        queue_depth: Callable[[], int] = lambda: 0,
    ) -> None:
        """`queue_depth()`: how many of the stream's fragments wait for an inference thread (for `backpressure`)."""
        self.stream_id = stream_id
        self.worker_id = worker_id
        self.sid = sid
        self.config = config
        self.session_id = uuid.uuid4().hex
        self.state = SessionState.ACTIVE
        self.stats = StreamStatistics()
        self.started_at = time.monotonic()
        self._emit = emit
        self._metrics = metrics
        self._gap_timeout_s = gap_timeout_s
        self._queue_depth = queue_depth
        # One in-order buffer per target language: each target's answers leave in sequence order on their own.
        self.targets = config.targets
        self._buffers: dict[str, InOrderBuffer[FragmentProcessed]] = {t: InOrderBuffer() for t in self.targets}
        self._answers_left: dict[str, int] = {}  # fragment_id -> targets not yet emitted
        self._durations_ms: dict[str, float] = {}
        self._received_at: dict[str, float] = {}
        self._emit_lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self._drained.set()
        self._gap_timer: asyncio.TimerHandle | None = None
        self._last_severity = BackpressureSeverity.LOW
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_deadline = 0.0  # latest deadline of an accepted fragment (monotonic): answered by then at most

    def resume_from(self, previous: StreamSession) -> None:
        """Continue `previous` (the same stream re-initialised, or taken over by its own worker): same session_id,
        statistics and start time. What `previous` had in flight is not carried: its answers went to its client."""
        self.session_id = previous.session_id
        self.stats = previous.stats
        self.started_at = previous.started_at

    # ------------------------------------------------------------ state

    def pause(self) -> bool:
        """`stream:pause`: fragments are refused (STREAM_PAUSED) until resumed; True when it paused the stream."""
        return self._move(SessionState.ACTIVE, SessionState.PAUSED)

    def resume(self) -> bool:
        """`stream:resume`: fragments are accepted again; True when the stream was paused."""
        return self._move(SessionState.PAUSED, SessionState.ACTIVE)

    def begin_end(self) -> bool:
        """`stream:end`: no more fragments; True the first time (the caller then drains and completes it)."""
        if self.state in (SessionState.ENDING, SessionState.CLOSED):
            return False
        self.state = SessionState.ENDING
        return True

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    def _move(self, before: SessionState, after: SessionState) -> bool:
        if self.state is not before:
            return False
        self.state = after
        log.info("stream %s %s", self.stream_id, "paused" if after is SessionState.PAUSED else "resumed")
        return True

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep `task` (work of this stream) until it ends; `close` cancels it."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ acceptance

    @property
    def inflight(self) -> int:
        return max(buffer.inflight for buffer in self._buffers.values())

    def check_sequence(self, seq: int) -> None:
        self._buffers[self.targets[0]].check(seq)

    def accept(self, fragment: FragmentData, arrived_at: float | None = None) -> Deadline:
        """Register an accepted fragment (its result will be emitted in sequence order); return its deadline: arrival
        (`time.monotonic()`) + `deadline_ms` of the fragment, or + the stream's `timeout_ms` for clients that do not
        send one (the seed's rule).
        """
        arrived_at = time.monotonic() if arrived_at is None else arrived_at
        for buffer in self._buffers.values():
            buffer.expect(fragment.sequence_number)
        self._answers_left[fragment.fragment_id] = len(self.targets)
        self._durations_ms[fragment.fragment_id] = fragment.audio.duration_ms
        self._received_at[fragment.fragment_id] = arrived_at
        budget_s = fragment_budget_s(fragment, self.config)
        self.last_deadline = max(self.last_deadline, arrived_at + budget_s)
        self._metrics.fragments_inflight.inc()
        self._drained.clear()
        self._update_gap_timer()
        return Deadline.from_wire(budget_s * 1000, arrived_at)

    async def reject(self, seq: int | None) -> None:
        """A fragment of this stream was refused before acceptance; don't wait for its sequence number."""
        self.stats.rejected_count += 1
        if seq is None:
            return
        async with self._emit_lock:
            for buffer in self._buffers.values():
                await self._emit_released(buffer.skip(seq))

    def backpressure_after_accept(self) -> Backpressure | None:
        """The `backpressure` event to send after an accept: on every change, and on each fragment while raised."""
        level = backpressure_level(self.inflight)
        if level is None:  # callers refuse before going over the limit
            return None
        changed = level.severity is not self._last_severity
        self._last_severity = level.severity
        if not changed and level.severity is BackpressureSeverity.LOW:
            return None
        return self._backpressure_event(level)

    def _backpressure_event(self, level: BackpressureLevel) -> Backpressure:
        return Backpressure(
            stream_id=self.stream_id,
            severity=level.severity,
            action=level.action,
            current_inflight=self.inflight,
            max_inflight=self.config.max_inflight,
            queue_depth=self._queue_depth(),
            recommended_delay_ms=level.recommended_delay_ms,
        )

    # ------------------------------------------------------------ results

    async def complete(self, result: FragmentProcessed) -> None:
        """Record a fragment's answer for one target (`target_language`, else the main one) and emit everything
        of that target that is now in order."""
        buffer = self._buffers.get(result.target_language or self.targets[0])
        if buffer is None:
            log.warning("stream %s: answer for %r, not a target of the stream", self.stream_id, result.target_language)
            return
        async with self._emit_lock:
            await self._emit_released(buffer.complete(result.sequence_number, result))

    async def _emit_released(self, released: list[FragmentProcessed]) -> None:
        # Caller holds _emit_lock: results leave in the order the buffer released them.
        for result in released:
            received_at = self._received_at.get(result.fragment_id, time.monotonic())
            if result.target_language in {None, self.targets[0]}:  # the statistics count fragments, not answers
                self.stats.record(result, self._durations_ms.get(result.fragment_id, 0.0))
            self._metrics.observe_processed(result, time.monotonic() - received_at)
            self._answered(result.fragment_id)
            if self.state is not SessionState.CLOSED:
                await self._emit(EventName.FRAGMENT_PROCESSED, result.to_wire())
                if result.error is not None and result.error.code is ErrorCode.INVALID_AUDIO_FORMAT:
                    # Bad input is also reported as an `error`, after the fragment:processed that settles the
                    # fragment (a client matching errors by fragment_id has its answer already).
                    await self._emit(EventName.ERROR, self._audio_error(result, result.error).to_wire())
        if released:
            await self._emit_relief()
        self._update_gap_timer()
        if self.inflight == 0:
            self._drained.set()

    def _answered(self, fragment_id: str) -> None:
        """One more target answered; the fragment is settled when every target is."""
        left = self._answers_left.get(fragment_id, 1) - 1
        if left > 0:
            self._answers_left[fragment_id] = left
            return
        self._answers_left.pop(fragment_id, None)
        self._received_at.pop(fragment_id, None)
        self._durations_ms.pop(fragment_id, None)
        self._metrics.fragments_inflight.dec()

    def _audio_error(self, result: FragmentProcessed, error: FragmentError) -> ErrorEvent:
        return ErrorEvent(
            code=error.code,
            message=error.message,
            severity=ErrorSeverity.ERROR,
            retryable=error.retryable,
            stream_id=self.stream_id,
            fragment_id=result.fragment_id,
        )

    async def _emit_relief(self) -> None:
        """Tell the client when its backpressure drops (e.g. back to low: it may resume)."""
        level = backpressure_level(self.inflight)
        if level is None or level.severity is self._last_severity:
            return
        self._last_severity = level.severity
        if self.state is not SessionState.CLOSED:
            await self._emit(EventName.BACKPRESSURE, self._backpressure_event(level).to_wire())

    # ------------------------------------------------------------ gaps

    def _update_gap_timer(self) -> None:
        if any(buffer.has_gap() for buffer in self._buffers.values()) and self.state is not SessionState.CLOSED:
            if self._gap_timer is None:
                self._gap_timer = asyncio.get_running_loop().call_later(self._gap_timeout_s, self._on_gap_timeout)
        elif self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def _on_gap_timeout(self) -> None:
        self._gap_timer = None
        self.track(asyncio.get_running_loop().create_task(self._release_gap()))

    async def _release_gap(self) -> None:
        async with self._emit_lock:
            for buffer in self._buffers.values():
                missing = buffer.next_sequence if buffer.has_gap() else None
                if missing is not None:
                    log.warning(
                        "stream %s: sequence %s never arrived, releasing later results", self.stream_id, missing
                    )
                await self._emit_released(buffer.release_gap())

    # ------------------------------------------------------------ end of stream

    def drain_timeout_s(self, margin_s: float) -> float:
        """How long `stream:end` waits: until the latest accepted deadline (and at least `timeout_ms`), + margin."""
        latest = max(self.last_deadline - time.monotonic(), self.config.timeout_ms / 1000.0)
        return latest + margin_s

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until every accepted fragment has been answered; False on timeout."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def complete_event(self) -> StreamComplete:
        return StreamComplete(
            stream_id=self.stream_id,
            total_fragments=self.stats.total_fragments,
            total_duration_ms=self.stats.audio_duration_ms,
            statistics={
                **self.stats.to_dict(),
                "session_id": self.session_id,
                "wall_time_ms": round((time.monotonic() - self.started_at) * 1000.0, 1),
            },
        )

    def close(self) -> None:
        """Stop emitting and cancel the work still running for this stream (client gone or stream replaced)."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        for task in list(self.tasks):
            task.cancel()
        # What was in flight will never be answered: take it off the gauge.
        self._metrics.fragments_inflight.dec(len(self._answers_left))
        self._answers_left.clear()
        self._buffers = {t: InOrderBuffer() for t in self.targets}
        self._drained.set()


class PhraseMemory:
    """The last phrases each stream translated, per direction: the translation context of its next phrases.

    Only successful translations are remembered, with their sequence number: a phrase's context is the phrases of
    lower numbers (fragments may finish out of order when several run at once). The context is a window that grows
    a phrase at a time and starts again from the newest phrase when it is full: each call's prompt then begins with
    the previous call's whole prompt and answer, which llama.cpp still holds evaluated, so the context costs only the
    new phrase's tokens (a window sliding by one would change the prompt after the example every time: measured
    ~0.7 s more per phrase on 2 cores). Bounded: `keep` phrases per direction, `max_streams` streams (the least
    recently used is forgotten first); `forget` at stream end. Thread-safe (inference threads remember, the server
    forgets)."""

    def __init__(self, keep: int = 8, max_streams: int = 256) -> None:
        self.keep = keep
        self.max_streams = max_streams
        # per stream and direction: how many phrases were kept in all, and the last ones (sequence, text, translation)
        self._streams: OrderedDict[str, dict[tuple[str, str], tuple[int, list[tuple[int, str, str]]]]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, stream_id: str, source: str, target: str, sequence: int, text: str, translation: str) -> None:
        if not text.strip() or not translation.strip():
            return
        with self._lock:
            directions = self._streams.setdefault(stream_id, {})
            self._streams.move_to_end(stream_id)
            count, phrases = directions.get((source, target), (0, []))
            if any(p[0] == sequence for p in phrases):
                return  # a retry of a phrase already kept
            phrases.append((sequence, text, translation))
            phrases.sort(key=lambda p: p[0])
            del phrases[: -self.keep]
            directions[(source, target)] = (count + 1, phrases)
            while len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)

    def previous(
        self, stream_id: str, source: str, target: str, before: int | None = None, limit: int = 2
    ) -> tuple[tuple[str, str], ...]:
        """The context window of a phrase numbered `before`: the last (source text, translation) phrases of the
        direction numbered below it, as many as the window holds now (1 to `limit`, growing by one per phrase kept
        and starting again after `limit`), oldest first."""
        if limit <= 0:
            return ()
        with self._lock:
            count, phrases = self._streams.get(stream_id, {}).get((source, target), (0, []))
            earlier = [(text, tr) for seq, text, tr in phrases if before is None or seq < before]
        window = (count - 1) % limit + 1 if count else 0
        return tuple(earlier[-window:]) if window else ()

    def forget(self, stream_id: str) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)

    def __len__(self) -> int:
        return len(self._streams)
