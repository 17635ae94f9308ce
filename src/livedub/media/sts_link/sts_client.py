"""The media-service side of the STS Socket.IO protocol: one `StsClient` per stream.

`dub(segment)` sends one `fragment:data` and waits for its `fragment:processed`, bounded by the segment's deadline
(`segment.deadline`, else `STS_TIMEOUT_MS`). It never raises: whenever the dub cannot arrive in time (STS
unreachable, circuit open, timeout, error, undecodable audio) it returns a fallback at once, and the worker fills
the slot with the original audio. A segment's deadline also goes to STS (`deadline_ms`), which serves the most
urgent fragment first and answers TIMEOUT at once for work that can no longer be on time; such late drops do not
count toward opening the circuit breaker (see sts_faults.py).

The connection is kept by a background task: connect, `stream:init`, wait for `stream:ready`; on any drop it
reconnects with exponential back-off (capped at RECONNECT_MAX_S) and sends `stream:init` again.

Recovery after an STS restart: while there is no session, segments are not held against the circuit breaker (the
connection state already makes them fall back; counting them opened the breaker just as STS came back, for a whole
cooldown). A segment arriving without a session waits for one while its dub could still be on time, so the first
segments after a reconnect are dubbed at once, and a new session clears the failures of the lost one.

Several target languages (WORKER_TARGET_LANGUAGES): one session with all of them in `config.target_languages`; the
STS answers each fragment once per target (`fragment:processed.target_language`), and `dub_targets` hands each
target's outcome to the worker as it arrives. A seed STS (no `target_languages` capability) dubs the first target
only: its answers carry no language and belong to the first target; the other targets fall back at once
(`target_unsupported`). The circuit breaker judges a fragment once: healthy if any target was.

Dub chunks: where stream:ready announces `dub_chunks`, the client asks for them (`config.dub_chunks`; the first
stream:init to an STS not yet known to make them goes without, and is sent again with it once stream:ready announced
the capability, before any fragment; a seed STS never sees it set). The STS then sends each target's dub in
`fragment:chunk` pieces as it is made, a clause at a time, before its `fragment:processed`: each piece is decoded as
the whole dub is and handed to `dub_targets`' `on_chunk`, in order, all before that target's outcome. A malformed
piece (does not validate, out of order, does not decode) is an error (`errors{type="sts_bad_chunk"}` or
`sts_invalid_event`) and ends the pieces of that target (the whole dub still comes with the outcome); one for a
fragment no longer waited for is ignored. In such a session the STS owes a dub's first chunk by the fragment's deadline
and the rest as it plays: its `fragment:processed` by the deadline + the dub's longest length (the fragment + the
overrun), and the client waits for it as long (the muxer decides on its own clock whether a dub still plays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeVar

import socketio
from pydantic import ValidationError

from livedub.deadline import ANSWER_MARGIN_S, Deadline
from livedub.media.metrics import METRICS, WorkerMetrics
from livedub.media.settings import MediaSettings
from livedub.media.sts_link.backoff import ExponentialBackoff, SendThrottle
from livedub.media.sts_link.circuit_breaker import BreakerState, CircuitBreaker
from livedub.media.sts_link.sts_audio import dub_pcm, segment_payload
from livedub.media.sts_link.sts_faults import StsVerdict, code_verdict, processed_verdict
from livedub.media.sts_link.sts_pool import FixedEndpoint, StsEndpoint
from livedub.media.types import AudioSegment, DubChunkAudio, DubOutcome, DubStatus, OnChunk, OnOutcome
from livedub.protocol import (
    AudioFormat,
    AudioPayload,
    Backpressure,
    Capability,
    DubChunk,
    ErrorCode,
    ErrorEvent,
    Event,
    EventName,
    FragmentAck,
    FragmentData,
    FragmentProcessed,
    FragmentStatus,
    StreamComplete,
    StreamConfig,
    StreamControl,
    StreamInit,
    StreamReady,
)

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

# Reconnect back-off: short enough that a restarted STS is found within a couple of seconds of being healthy; a
# refused connect costs nothing, so a few streams retrying every 2 s are no load.
RECONNECT_INITIAL_S = 0.25
RECONNECT_MAX_S = 2.0


class FallbackReason(StrEnum):
    CIRCUIT_OPEN = "circuit_open"
    STS_UNAVAILABLE = "sts_unavailable"
    TIMEOUT = "timeout"
    BACKPRESSURE = "backpressure"  # no in-flight slot / send window before the deadline
    DISCONNECTED = "disconnected"  # the connection dropped while the fragment was in flight
    STS_ERROR = "sts_error"  # an `error` event named the fragment
    FAILED = "failed"  # fragment:processed with status failed or without audio
    LATE = "late"  # could no longer be on time: dropped before sending, or STS answered TIMEOUT
    BAD_AUDIO = "bad_audio"  # dubbed audio that does not decode
    CLOSED = "closed"
    INTERNAL = "internal_error"
    TARGET_UNSUPPORTED = "target_unsupported"  # the STS does not dub several targets (a seed STS): first only


class _FragmentLost(Exception):
    def __init__(self, reason: FallbackReason, verdict: StsVerdict = StsVerdict.FAULT) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.verdict = verdict


@dataclass
class _Chunks:
    """The pieces (`fragment:chunk`) of one target's dub handed on so far."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # pieces, then the answer, handled in arrival order
    next_index: int = 0
    handed_on: int = 0
    broken: bool = False  # a malformed piece came: no more pieces for this target


@dataclass
class _Pending:
    sent_at: float
    futures: dict[str, asyncio.Future[FragmentProcessed]]  # per target language served
    segment: AudioSegment | None = None
    on_chunk: OnChunk | None = None
    chunks: dict[str, _Chunks] = field(default_factory=dict)  # per target language served
    answer_after_s: float = 0.0  # how long after the deadline the STS may answer (a session with dub chunks)

    def pieces(self, language: str) -> _Chunks:
        return self.chunks.setdefault(language, _Chunks())


def _combined(verdicts: list[StsVerdict]) -> StsVerdict:
    """One verdict per fragment: healthy if any target was; else a fault if any was; else late."""
    for verdict in (StsVerdict.HEALTHY, StsVerdict.FAULT):
        if verdict in verdicts:
            return verdict
    return StsVerdict.LATE


class StsClient:
    """`DubClient` over python-socketio's AsyncClient, for one stream."""

    def __init__(
        self,
        stream_id: str,
        settings: MediaSettings,
        metrics: WorkerMetrics = METRICS,
        *,
        targets: Sequence[str],
        connect_timeout_s: float = 5.0,
        init_timeout_s: float = 30.0,
        backoff: ExponentialBackoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        dub_overrun_ms: int = 0,
        answer_margin_s: float = ANSWER_MARGIN_S,
        endpoint: StsEndpoint | None = None,
    ) -> None:
        """`targets`: the stream plan's target languages (the first on `out`); `endpoint`: where to connect (an STS
        pool places the stream and moves it when its STS fails); default: STS_SERVICE_URL."""
        if not targets:
            raise ValueError(f"stream {stream_id}: an STS client needs at least one target language")
        self.stream_id = stream_id
        self.settings = settings
        self.metrics = metrics
        self.connect_timeout_s = connect_timeout_s
        # STS answers stream:init only once its models are loaded: wait on the same connection, not in a retry loop.
        self.init_timeout_s = init_timeout_s
        self._backoff = backoff or ExponentialBackoff(initial_s=RECONNECT_INITIAL_S, max_s=RECONNECT_MAX_S)
        self._clock = clock
        self._endpoint: StsEndpoint = endpoint or FixedEndpoint(settings.sts_service_url)
        self._format = AudioFormat(settings.sts_audio_format)
        self._timeout_s = settings.sts_timeout_ms / 1000
        self._dub_overrun_ms = dub_overrun_ms
        self._answer_margin_s = answer_margin_s
        self.targets = list(targets)  # the languages asked for, the first on `out`
        self._served = self.targets[:1]  # those the STS dubs: all once stream:ready announced target_languages
        self._sts_has_deadlines = False  # stream:ready announced `deadline`: STS answers by each deadline_ms
        self._asked_chunks = False  # the last stream:init asked for dub chunks
        self._dub_chunks = False  # the session sends dub chunks (asked for, and the STS announced them)
        self._chunk_urls: set[str] = set()  # endpoints whose last stream:ready announced `dub_chunks`
        self._init_answered = asyncio.Event()
        self._breaker_gauge = metrics.circuit_breaker_state.labels(stream_id=stream_id)
        self._breaker_gauge.set(BreakerState.CLOSED)
        self._breaker = CircuitBreaker(
            settings.circuit_breaker_threshold,
            settings.circuit_breaker_cooldown_ms / 1000,
            clock=clock,
            on_change=self._on_breaker_change,
        )
        self._throttle = SendThrottle()
        # reconnection=False: the connection task below owns reconnects (also for the very first connect).
        # request_timeout: leaving a frozen STS (a pool moves the stream) waits this long for its socket, not 5 s.
        self._sio = socketio.AsyncClient(reconnection=False, handle_sigint=False, request_timeout=2)
        self._emit_lock = asyncio.Lock()  # AsyncClient.emit must not run concurrently
        self._slots = asyncio.Condition()
        self._inflight_limit = settings.sts_max_inflight
        self._slots_taken = 0
        self._pending: dict[str, _Pending] = {}
        self._ready = asyncio.Event()
        self._connection_lost = asyncio.Event()
        self._completed = asyncio.Event()
        self._session_id: str | None = None
        self._last_error: str | None = None
        self._connection_task: asyncio.Task[None] | None = None
        self._closed = False
        self._fragment_prefix = uuid.uuid4().hex[:8]
        self._background: set[asyncio.Task[Any]] = set()
        self._register_handlers()
        metrics.sts_inflight.labels(stream_id=stream_id).set(0)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start connecting in the background; returns at once (dub() falls back until STS is ready)."""
        if self._connection_task is None:
            self._connection_task = asyncio.create_task(self._keep_connected(), name=f"sts-{self.stream_id}")

    async def wait_ready(self, within_s: float) -> bool:
        """Wait until `stream:ready` arrived (for callers that prefer to start with STS up)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), within_s)
        return self._ready.is_set()

    async def close(self) -> None:
        """Send `stream:end`, give STS a moment to answer `stream:complete`, then disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._ready.is_set():
            try:
                await self._emit(EventName.STREAM_END, StreamControl(stream_id=self.stream_id, reason="input ended"))
                await asyncio.wait_for(self._completed.wait(), 2.0)
            except (TimeoutError, socketio.exceptions.SocketIOError):
                pass
        with contextlib.suppress(Exception):  # best effort: the peer may already be gone
            await self._sio.disconnect()
        if self._connection_task is not None:
            self._connection_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connection_task
            with contextlib.suppress(Exception):  # it may have connected meanwhile
                await self._sio.disconnect()
        self._ready.clear()
        self._fail_pending(FallbackReason.CLOSED)
        await self._endpoint.close()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def status(self) -> dict[str, Any]:
        return {
            "connected": self._sio.connected,
            "ready": self.ready,
            "session_id": self._session_id,
            "circuit_breaker": self._breaker.state.name.lower(),
            "consecutive_failures": self._breaker.consecutive_failures,
            "inflight": len(self._pending),
            "last_error": self._last_error,
            "target_languages": list(self.targets),
            "served_languages": list(self._served),
            "dub_chunks": self._dub_chunks,
            "endpoint": self._endpoint.current(),
        }

    # ------------------------------------------------------------------ dubbing

    async def dub_targets(self, segment: AudioSegment, on_outcome: OnOutcome, on_chunk: OnChunk | None = None) -> None:
        """One outcome per target language through `on_outcome`, each as soon as it is known; where the session sends
        dub chunks, each target's pieces through `on_chunk` before its outcome. Never raises."""
        decided: set[str | None] = set()

        def emit(outcome: DubOutcome) -> None:
            if outcome.language in decided:
                return
            decided.add(outcome.language)
            try:
                on_outcome(outcome)
            except Exception:  # the worker's callback: its bug must not stop the other targets
                log.exception("[%s] handling the %s outcome of fragment %d failed", self.stream_id,
                              outcome.language, segment.sequence_number)  # fmt: skip

        try:
            await self._dub(segment, emit, on_chunk)
        except Exception:  # dub_targets() must never raise: a bug here must not stop the stream
            log.exception("[%s] STS client failed on fragment %d", self.stream_id, segment.sequence_number)
            self.metrics.errors.labels(stream_id=self.stream_id, type="sts_client_internal").inc()
        for language in self.targets:  # whatever a failure above left undecided
            if language not in decided:
                emit(self._fallback(segment, FallbackReason.INTERNAL, language))

    def _fall_back_all(self, segment: AudioSegment, reason: FallbackReason, emit: OnOutcome) -> None:
        for language in self.targets:
            emit(self._fallback(segment, reason, language))

    async def _dub(self, segment: AudioSegment, emit: OnOutcome, on_chunk: OnChunk | None = None) -> None:
        useful = segment.deadline  # when the dub stops being useful; none: the seed rule, STS_TIMEOUT_MS from now
        if self._closed:
            return self._fall_back_all(segment, FallbackReason.CLOSED, emit)
        if self._too_late(useful):
            return self._fall_back_all(segment, FallbackReason.LATE, emit)
        if not await self._wait_for_session(useful):
            # no session: not the breaker's business
            return self._fall_back_all(segment, FallbackReason.STS_UNAVAILABLE, emit)
        if self._breaker.state is BreakerState.OPEN:
            return self._fall_back_all(segment, FallbackReason.CIRCUIT_OPEN, emit)

        deadline = useful.or_after(self._timeout_s)
        if not await self._take_slot(deadline):
            return self._fall_back_all(segment, FallbackReason.BACKPRESSURE, emit)
        try:
            wait_s = self._throttle.reserve(asyncio.get_running_loop().time())
            if wait_s >= deadline.remaining():
                return self._fall_back_all(segment, FallbackReason.BACKPRESSURE, emit)
            await asyncio.sleep(wait_s)
            if self._too_late(useful):
                return self._fall_back_all(segment, FallbackReason.LATE, emit)
            # Claimed only now, right before sending, so a half-open trial is never left hanging.
            if not self._breaker.allow_request():
                return self._fall_back_all(segment, FallbackReason.CIRCUIT_OPEN, emit)
            if not self._ready.is_set():
                self._breaker.record_dropped()  # releases the trial it may have claimed, undecided
                return self._fall_back_all(segment, FallbackReason.STS_UNAVAILABLE, emit)
            return await self._send_and_wait(segment, deadline, emit, on_chunk)
        finally:
            await self._release_slot()

    async def _wait_for_session(self, useful: Deadline) -> bool:
        """Whether a session is ready, waiting for one (a reconnect) while the dub could still be on time.

        Without a deadline (the seed rule) there is no time to spare: no session means fall back at once."""
        if self._ready.is_set():
            return True
        if not useful.is_set:
            return False
        wait_s = useful.earlier(self._answer_margin_s).remaining()
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait_s)
        return self._ready.is_set() and not self._too_late(useful)

    def _too_late(self, useful: Deadline) -> bool:
        """No time left for STS to answer before the dub stops being useful (not worth sending)."""
        return useful.earlier(self._answer_margin_s).expired()

    async def _send_and_wait(
        self,
        segment: AudioSegment,
        deadline: Deadline,
        emit: OnOutcome,
        on_chunk: OnChunk | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        payload = await self._encode(segment)
        fragment = FragmentData(
            fragment_id=f"{self.stream_id}-{self._fragment_prefix}-{segment.sequence_number}",
            stream_id=self.stream_id,
            sequence_number=segment.sequence_number,
            audio=payload,
            metadata={"start_sample": segment.start_sample, "sample_rate": segment.sample_rate},
            # Counted from STS's receipt, which is about now; the margin is for the way back.
            deadline_ms=segment.deadline.earlier(self._answer_margin_s).to_wire(),
        )
        served = list(self._served)
        for language in self.targets:
            if language not in served:
                emit(self._fallback(segment, FallbackReason.TARGET_UNSUPPORTED, language))
        pending = _Pending(
            sent_at=self._clock(),
            futures={language: loop.create_future() for language in served},
            segment=segment,
            on_chunk=on_chunk,
            # With chunks the first is due by the deadline, the rest as the dub plays (at most the fragment + overrun)
            answer_after_s=(segment.duration_ms + self._dub_overrun_ms) / 1000 if self._dub_chunks else 0.0,
        )
        self._pending[fragment.fragment_id] = pending
        self._update_inflight()
        sent_at = deadline.clock()
        try:
            try:
                await self._emit(EventName.FRAGMENT_DATA, fragment)
            except socketio.exceptions.SocketIOError as exc:
                log.warning("[%s] sending fragment %d failed: %s", self.stream_id, segment.sequence_number, exc)
                self._breaker.record_dropped()  # the connection dropped: the reconnect decides, not the breaker
                return self._fall_back_all(segment, FallbackReason.STS_UNAVAILABLE, emit)
            self.metrics.sts_fragments_sent.labels(stream_id=self.stream_id).inc()
            verdicts = await self._collect(segment, pending, deadline, sent_at, emit)
        finally:
            self._pending.pop(fragment.fragment_id, None)
            self._update_inflight()
        # The breaker guards against a failing STS: a TIMEOUT answer (late work dropped) is not held against it.
        self._judge(_combined(verdicts))

    async def _collect(
        self,
        segment: AudioSegment,
        pending: _Pending,
        deadline: Deadline,
        sent_at: float,
        emit: OnOutcome,
    ) -> list[StsVerdict]:
        """Hand each target's answer on as it comes; at the deadline (+ `answer_after_s` in a session with dub chunks)
        the missing ones time out. The verdicts."""
        waiting = {future: language for language, future in pending.futures.items()}
        verdicts: list[StsVerdict] = []
        answer_by = deadline.later(pending.answer_after_s)
        while waiting:
            done, _ = await asyncio.wait(
                waiting, timeout=max(0.0, answer_by.remaining()), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                verdicts.append(StsVerdict.FAULT if self._owed_answer(segment.deadline, sent_at) else StsVerdict.LATE)
                self.metrics.errors.labels(stream_id=self.stream_id, type="sts_timeout").inc()
                for language in waiting.values():
                    emit(self._chunked(self._fallback(segment, FallbackReason.TIMEOUT, language), pending))
                break
            for future in done:
                language = waiting.pop(future)
                lost = future.exception()
                if isinstance(lost, _FragmentLost):
                    verdicts.append(lost.verdict)
                    emit(self._chunked(self._fallback(segment, lost.reason, language), pending))
                    continue
                processed = future.result()
                verdicts.append(processed_verdict(processed))
                outcome = await self._outcome(segment, processed, self._clock() - pending.sent_at, language)
                emit(self._chunked(outcome, pending))
        return verdicts

    @staticmethod
    def _chunked(outcome: DubOutcome, pending: _Pending) -> DubOutcome:
        pieces = pending.chunks.get(outcome.language or "")
        if pieces is not None:
            outcome.chunks = pieces.handed_on
        return outcome

    def _owed_answer(self, useful: Deadline, sent_at: float) -> bool:
        """Whether STS should have answered by now, when the wait for a fragment ran out (else: a late drop)."""
        if useful.at is None or self._sts_has_deadlines:
            return True  # waited the full STS_TIMEOUT_MS, or STS promised an answer (if only TIMEOUT) by its deadline
        return useful.at >= sent_at + self._timeout_s  # a seed STS has until timeout_ms to answer

    def _judge(self, verdict: StsVerdict) -> None:
        if verdict is StsVerdict.FAULT:
            self._breaker.record_failure()
        elif verdict is StsVerdict.LATE:
            self._breaker.record_dropped()
        else:
            self._breaker.record_success()

    async def _outcome(
        self, segment: AudioSegment, processed: FragmentProcessed, round_trip_s: float, language: str
    ) -> DubOutcome:
        self.metrics.sts_round_trip_seconds.labels(stream_id=self.stream_id).observe(round_trip_s)
        meta = processed.metadata
        timings = processed.stage_timings
        details = {
            "transcript": processed.transcript,
            "translated_text": processed.translated_text,
            "round_trip_s": round_trip_s,
            "language": language,
            "voice": meta.voice,
            "speech_start_ms": meta.speech_start_ms,
            "speech_end_ms": meta.speech_end_ms,
            "stage_ms": {"asr": timings.asr_ms, "translation": timings.translation_ms, "tts": timings.tts_ms},
            "translator": meta.translator,
            "voice_tier": meta.voice_tier,
        }
        if processed.status is FragmentStatus.FAILED or processed.dubbed_audio is None:
            detail = processed.error.message if processed.error else "no dubbed audio"
            log.info("[%s] fragment %d (%s) not dubbed: %s", self.stream_id, segment.sequence_number, language, detail)
            late = processed.error is not None and processed.error.code is ErrorCode.TIMEOUT
            reason = FallbackReason.LATE if late else FallbackReason.FAILED
            outcome = self._fallback(segment, reason, language, sts_status=processed.status.value)
            return replace(outcome, **details)
        try:
            pcm = await asyncio.to_thread(dub_pcm, processed.dubbed_audio, segment)
        except ValueError as exc:
            log.warning("[%s] dubbed audio of fragment %d: %s", self.stream_id, segment.sequence_number, exc)
            self.metrics.errors.labels(stream_id=self.stream_id, type="sts_bad_audio").inc()
            outcome = self._fallback(segment, FallbackReason.BAD_AUDIO, language, sts_status=processed.status.value)
            return replace(outcome, **details)
        return DubOutcome(
            sequence_number=segment.sequence_number,
            status=DubStatus.DUBBED,
            pcm=pcm,
            sts_status=processed.status.value,
            **details,  # type: ignore[arg-type]
        )

    async def _encode(self, segment: AudioSegment) -> AudioPayload:
        if self._format is AudioFormat.PCM_S16LE:
            return segment_payload(segment, self._format)
        return await asyncio.to_thread(segment_payload, segment, self._format)  # AAC encoding: off the loop

    def _fallback(
        self, segment: AudioSegment, reason: FallbackReason, language: str, sts_status: str | None = None
    ) -> DubOutcome:
        # Counted in `fallbacks` by the muxer, which decides what each phrase plays (a reason per phrase, once).
        if reason is not FallbackReason.TARGET_UNSUPPORTED:
            log.info(
                "stream %s: fragment %d%s falls back to the original audio (%s%s)",
                self.stream_id,
                segment.sequence_number,
                f" ({language})" if len(self.targets) > 1 else "",
                reason.value,
                f", STS status {sts_status}" if sts_status else "",
            )
        return DubOutcome(
            sequence_number=segment.sequence_number,
            status=DubStatus.FALLBACK,
            reason=reason.value,
            sts_status=sts_status,
            language=language,
        )

    async def _take_slot(self, deadline: Deadline) -> bool:
        async with self._slots:
            try:
                await asyncio.wait_for(
                    self._slots.wait_for(lambda: self._slots_taken < self._inflight_limit),
                    max(0.0, deadline.remaining()),
                )
            except TimeoutError:
                return False
            self._slots_taken += 1
            return True

    async def _release_slot(self) -> None:
        async with self._slots:
            self._slots_taken -= 1
            self._slots.notify_all()

    def _update_inflight(self) -> None:
        self.metrics.sts_inflight.labels(stream_id=self.stream_id).set(len(self._pending))

    # ------------------------------------------------------------------ connection

    async def _keep_connected(self) -> None:
        auth = {"token": self.settings.sts_api_key} if self.settings.sts_api_key else None
        while not self._closed:
            self._connection_lost.clear()
            url = await self._endpoint.url()  # placed once, sticky until it fails
            try:
                await self._sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=self.connect_timeout_s)
            except Exception as exc:  # ConnectionError, but also e.g. a malformed URL: keep trying, keep logging
                self._note_connection_problem(f"connect to {url} failed: {exc!r}")
                self._endpoint.report_failure("connect")
                with contextlib.suppress(Exception):
                    await self._sio.disconnect()  # a half-open engine.io session would block the next connect
                await asyncio.sleep(self._backoff.next_delay())
                continue
            if await self._init_stream(url):
                self._backoff.reset()
                self._endpoint.report_ready()
                log.info("[%s] STS session %s ready at %s", self.stream_id, self._session_id, url)
                await self._wait_connection_lost()
                if not self._closed and not self._completed.is_set():
                    self._endpoint.report_failure("disconnected")
            else:
                self._endpoint.report_failure("init")
                await self._sio.disconnect()
            if not self._closed:
                await asyncio.sleep(self._backoff.next_delay())

    async def _wait_connection_lost(self) -> None:
        """Until the connection drops, or the pool moves the stream off a live but dead-ended endpoint (hung, or
        failing every fragment): then leave it, so the next connect starts clean. Our own events, not
        AsyncClient.wait(): cancelling this task must not cancel engineio's tasks."""
        lost = asyncio.ensure_future(self._connection_lost.wait())
        moved = asyncio.ensure_future(self._endpoint.wait_lost())
        try:
            await asyncio.wait({lost, moved}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            moved.cancel()
        if not self._connection_lost.is_set():
            with contextlib.suppress(Exception):
                await self._sio.disconnect()  # fires _on_disconnect: pending fragments fall back at once

    async def _init_stream(self, url: str) -> bool:
        """stream:init until stream:ready. Dub chunks are asked for at once from an endpoint whose last session
        announced them; else, when this stream:ready announces them, stream:init goes again with them (the same
        session, re-initialised before any fragment)."""
        self._ready.clear()
        try:
            for ask in dict.fromkeys((url in self._chunk_urls, True)):
                self._asked_chunks = ask
                self._init_answered.clear()
                init = StreamInit(
                    stream_id=self.stream_id,
                    worker_id=f"{socket.gethostname()}-{os.getpid()}",
                    config=self._config(dub_chunks=ask),
                )
                await self._emit(EventName.STREAM_INIT, init)
                await asyncio.wait_for(self._init_answered.wait(), self.init_timeout_s)
                if self._ready.is_set():
                    break
        except (TimeoutError, socketio.exceptions.SocketIOError) as exc:
            self._note_connection_problem(f"stream:init not answered: {self._last_error or exc!r}")
            return False
        if self._dub_chunks:
            self._chunk_urls.add(url)
        else:
            self._chunk_urls.discard(url)
        return self._ready.is_set()

    def _config(self, dub_chunks: bool = False) -> StreamConfig:
        s = self.settings
        return StreamConfig(
            source_language=s.source_language,
            target_language=self.targets[0],
            # Only with several targets: a stream with one looks exactly like the seed's, which a seed STS (that
            # knows no livedub extension and may refuse unknown fields) must accept. Inside, `config.targets` is the
            # list either way.
            target_languages=self.targets if len(self.targets) > 1 else None,
            voice_profile=s.voice_profile,
            format=self._format,
            sample_rate_hz=s.audio_sample_rate,
            channels=1,  # fragments are sent as mono, see _encode
            chunk_duration_ms=s.segment_duration_ms if s.segment_policy == "fixed" else s.segment_max_ms,
            max_inflight=s.sts_max_inflight,
            timeout_ms=s.sts_timeout_ms,
            dub_overrun_ms=self._dub_overrun_ms,
            dub_chunks=dub_chunks,
        )

    def _note_connection_problem(self, message: str) -> None:
        if message != self._last_error:  # log each distinct problem once, not at every retry
            log.warning("[%s] STS: %s", self.stream_id, message)
        self._last_error = message
        self.metrics.errors.labels(stream_id=self.stream_id, type="sts_connect").inc()

    async def _emit(self, event: str, payload: Event) -> None:
        async with self._emit_lock:
            await self._sio.emit(event, payload.to_wire())

    def _fail_pending(self, reason: FallbackReason) -> None:
        for pending in self._pending.values():
            for future in pending.futures.values():
                if not future.done():
                    future.set_exception(_FragmentLost(reason))

    # ------------------------------------------------------------------ events from STS

    def _register_handlers(self) -> None:
        self._sio.on("disconnect", self._on_disconnect)  # Socket.IO's own event, not the protocol's
        self._sio.on(EventName.STREAM_READY, self._on_stream_ready)
        self._sio.on(EventName.FRAGMENT_ACK, self._on_fragment_ack)
        self._sio.on(EventName.FRAGMENT_PROCESSED, self._on_fragment_processed)
        self._sio.on(EventName.FRAGMENT_CHUNK, self._on_fragment_chunk)
        self._sio.on(EventName.BACKPRESSURE, self._on_backpressure)
        self._sio.on(EventName.STREAM_COMPLETE, self._on_stream_complete)
        self._sio.on(EventName.ERROR, self._on_error)

    def _parse(self, model: type[E], data: Any) -> E | None:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            log.warning("[%s] invalid %s from STS: %s", self.stream_id, model.__name__, exc)
            self.metrics.errors.labels(stream_id=self.stream_id, type="sts_invalid_event").inc()
            return None

    async def _on_disconnect(self, *_: Any) -> None:
        if self._closed or self._completed.is_set():
            log.info("[%s] STS session ended", self.stream_id)  # a clean end (ours, or after stream:complete)
        elif self._ready.is_set():
            log.warning("[%s] STS connection lost; %d fragment(s) in flight", self.stream_id, len(self._pending))
        self._ready.clear()
        self._connection_lost.set()
        self._throttle.reset()
        self._fail_pending(FallbackReason.DISCONNECTED)

    async def _on_stream_ready(self, data: Any) -> None:
        ready = self._parse(StreamReady, data)
        if ready is None:
            return
        self._session_id = ready.session_id
        self._sts_has_deadlines = ready.supports(Capability.DEADLINE)
        offers_chunks = ready.supports(Capability.DUB_CHUNKS)
        self._dub_chunks = offers_chunks and self._asked_chunks
        if offers_chunks and not self._asked_chunks:
            self._init_answered.set()  # _init_stream asks again, for the chunks: not ready yet
            return
        self._served = self.targets if ready.supports(Capability.TARGET_LANGUAGES) else self.targets[:1]
        if len(self._served) < len(self.targets):
            log.warning(
                "[%s] the STS dubs one target language per stream: %s only (%s keep the original voice)",
                self.stream_id, self._served[0], ", ".join(self.targets[1:]),
            )  # fmt: skip
        self._last_error = None
        self._breaker.new_session()  # the lost connection's failures are not this session's
        async with self._slots:
            self._inflight_limit = max(1, min(self.settings.sts_max_inflight, ready.max_inflight))
            self._slots.notify_all()
        self._ready.set()
        self._init_answered.set()

    async def _on_fragment_ack(self, data: Any) -> None:
        ack = self._parse(FragmentAck, data)
        if ack is not None:
            log.debug("[%s] %s %s (queue %s)", self.stream_id, ack.fragment_id, ack.status, ack.queue_position)

    async def _on_fragment_processed(self, data: Any) -> None:
        processed = self._parse(FragmentProcessed, data)
        if processed is None:
            return
        self.metrics.sts_fragments_processed.labels(stream_id=self.stream_id, status=processed.status.value).inc()
        pending = self._pending.get(processed.fragment_id)
        # A seed STS names no language: its answer is the first target's.
        language = processed.target_language or self._served[0]
        future = pending.futures.get(language) if pending is not None else None
        if pending is not None and future is not None and language in pending.chunks:
            async with pending.chunks[language].lock:  # after the pieces that came before it are handed on
                pass
        if future is None or future.done():
            # Its deadline passed and the slot was already filled with the original audio.
            self.metrics.errors.labels(stream_id=self.stream_id, type="sts_late").inc()
            return
        future.set_result(processed)

    async def _on_fragment_chunk(self, data: Any) -> None:
        """A piece of a dub: decoded and handed on in order (see the module's docstring); never raises."""
        chunk = self._parse(DubChunk, data)
        if chunk is None:
            return
        pending = self._pending.get(chunk.fragment_id)
        future = pending.futures.get(chunk.target_language) if pending is not None else None
        if pending is None or future is None or future.done() or pending.on_chunk is None:
            log.debug("[%s] chunk %d of %s (%s) ignored: not waited for", self.stream_id, chunk.index,
                      chunk.fragment_id, chunk.target_language)  # fmt: skip
            return
        pieces = pending.pieces(chunk.target_language)
        async with pieces.lock:
            if future.done() or pieces.broken:
                return
            if chunk.index != pieces.next_index:
                self._bad_chunk(chunk, pieces, f"index {chunk.index} where {pieces.next_index} was due")
                return
            pieces.next_index += 1
            segment = pending.segment
            assert segment is not None
            try:
                if chunk.audio.format is AudioFormat.PCM_S16LE:
                    pcm = dub_pcm(chunk.audio, segment)
                else:
                    pcm = await asyncio.to_thread(dub_pcm, chunk.audio, segment)  # AAC decoding: off the loop
            except ValueError as exc:
                self._bad_chunk(chunk, pieces, f"audio: {exc}")
                return
            if future.done():
                return
            piece = DubChunkAudio(
                sequence_number=segment.sequence_number,
                language=chunk.target_language,
                index=chunk.index,
                offset_samples=round(chunk.offset_ms * segment.sample_rate / 1000),
                pcm=pcm,
                text=chunk.text,
                final=chunk.final,
            )
            try:
                pending.on_chunk(piece)
            except Exception:  # the worker's callback: its bug must not stop the stream
                log.exception("[%s] handling chunk %d of fragment %d (%s) failed", self.stream_id, chunk.index,
                              segment.sequence_number, chunk.target_language)  # fmt: skip
            pieces.handed_on += 1

    def _bad_chunk(self, chunk: DubChunk, pieces: _Chunks, problem: str) -> None:
        log.warning("[%s] chunk %d of %s (%s) unusable (%s): no more chunks of that dub", self.stream_id,
                    chunk.index, chunk.fragment_id, chunk.target_language, problem)  # fmt: skip
        self.metrics.errors.labels(stream_id=self.stream_id, type="sts_bad_chunk").inc()
        pieces.broken = True

    async def _on_backpressure(self, data: Any) -> None:
        event = self._parse(Backpressure, data)
        if event is not None:
            log.info("[%s] STS backpressure: %s (%s)", self.stream_id, event.action, event.severity)
            self._throttle.apply(event, asyncio.get_running_loop().time())

    async def _on_stream_complete(self, data: Any) -> None:
        if self._parse(StreamComplete, data) is not None:
            self._completed.set()

    async def _on_error(self, data: Any) -> None:
        error = self._parse(ErrorEvent, data)
        if error is None:
            return
        self._last_error = f"{error.code}: {error.message}"
        self.metrics.errors.labels(stream_id=self.stream_id, type=f"sts_{error.code.value.lower()}").inc()
        pending = self._pending.get(error.fragment_id) if error.fragment_id else None
        if pending is not None:  # the fragment failed: every target still waiting for it
            for future in pending.futures.values():
                if not future.done():
                    future.set_exception(_FragmentLost(FallbackReason.STS_ERROR, code_verdict(error.code)))
            return
        log.warning("[%s] STS error %s: %s", self.stream_id, error.code, error.message)
        if error.code is ErrorCode.STREAM_NOT_FOUND and self._ready.is_set() and not self._closed:
            # STS forgot the session: drop the connection, the connection task reconnects and sends stream:init.
            task = asyncio.create_task(self._sio.disconnect())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _on_breaker_change(self, state: BreakerState) -> None:
        self._breaker_gauge.set(state)
        log.warning("[%s] STS circuit breaker %s", self.stream_id, state.name.lower())
        if state is BreakerState.OPEN and not self._closed:
            self._endpoint.report_failure("circuit_open")  # a pool moves the stream to another STS
