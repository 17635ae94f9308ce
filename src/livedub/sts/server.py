"""The STS Socket.IO service: python-socketio `AsyncServer` (ASGI) + FastAPI (`/health`, `/metrics`) under uvicorn.

Event names and payloads are exactly the models of `livedub.protocol`; see docs/protocol.md.
Inference runs on a bounded set of threads, never on the event loop, most urgent fragment first (see scheduler.py).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hmac
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import socketio
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from livedub.protocol import (
    AudioFormat,
    Capability,
    ErrorCode,
    ErrorEvent,
    ErrorSeverity,
    EventName,
    FragmentAck,
    FragmentAckStatus,
    FragmentData,
    FragmentProcessed,
    MonitorSubscribe,
    StreamConfig,
    StreamControl,
    StreamInit,
    StreamReady,
)
from livedub.sts.deadline import Deadline
from livedub.sts.interfaces import FragmentProcessor, UnsupportedLanguageError
from livedub.sts.metrics import METRICS_CONTENT_TYPE, StsMetrics
from livedub.sts.scheduler import DeadlineExpired, DeadlineRunner
from livedub.sts.session import (
    DEFAULT_GAP_TIMEOUT_S,
    HIGH_MAX_INFLIGHT,
    SequenceRejected,
    SessionState,
    StreamSession,
    failed_result,
    fragment_budget_s,
)
from livedub.sts.settings import StsSettings

log = logging.getLogger(__name__)

MONITOR_ALL_ROOM = "monitor:*"
# Room for the monitors of one stream; stream ids are free text, the prefix keeps them apart from sids.
MONITOR_ROOM_PREFIX = "monitor:stream:"
# Room names a stream's events go to besides the worker: see `monitor:subscribe` in docs/protocol.md.
_JSON_ENVELOPE_BYTES = 64 * 1024


def monitor_room(stream_id: str) -> str:
    return MONITOR_ROOM_PREFIX + stream_id


def engineio_buffer_bytes(max_fragment_bytes: int) -> int:
    """Largest Engine.IO message accepted. Twice the base64 size of the largest fragment, so that a fragment a bit
    over the limit still arrives and gets a polite PAYLOAD_TOO_LARGE instead of a dropped connection."""
    return 2 * math.ceil(max_fragment_bytes * 4 / 3) + _JSON_ENVELOPE_BYTES


def decoded_base64_length(data_base64: str) -> int:
    """Length of the bytes a (padded, whitespace-free) base64 string decodes to, without decoding it."""
    padding = 2 if data_base64.endswith("==") else 1 if data_base64.endswith("=") else 0
    return len(data_base64) * 3 // 4 - padding


def _raw_str(data: Any, key: str) -> str | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _raw_int(data: Any, key: str) -> int | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors())


_AUDIO_FORMAT_FIELDS = {"format", "sample_rate_hz", "channels"}


def _is_audio_format_error(exc: ValidationError) -> bool:
    return any(
        len(e["loc"]) >= 2 and e["loc"][0] == "audio" and e["loc"][1] in _AUDIO_FORMAT_FIELDS for e in exc.errors()
    )


class StsServer:
    """Socket.IO handlers and shared state: sessions, the processor, the inference pool, metrics."""

    def __init__(
        self,
        settings: StsSettings,
        *,
        processor: FragmentProcessor | None = None,
        processor_factory: Callable[[], FragmentProcessor] | None = None,
        metrics: StsMetrics | None = None,
        gap_timeout_s: float = DEFAULT_GAP_TIMEOUT_S,
    ) -> None:
        if (processor is None) == (processor_factory is None):
            raise ValueError("give exactly one of processor and processor_factory")
        self.settings = settings
        self.processor = processor
        self._processor_factory = processor_factory
        self.metrics = metrics or StsMetrics()
        self.gap_timeout_s = gap_timeout_s
        self.runner = DeadlineRunner(settings.worker_threads)
        self.sessions: dict[str, StreamSession] = {}
        self.ready = False
        self.startup_error: str | None = None
        self._processor_built = asyncio.Event()
        # Warm-up over, successfully or not. A threading.Event: fragment jobs wait on it in the pool.
        self._models_settled = threading.Event()
        self._startup_task: asyncio.Task[None] | None = None
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            max_http_buffer_size=engineio_buffer_bytes(settings.max_fragment_bytes),
            logger=False,
            engineio_logger=False,
        )
        self._register_handlers()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._startup_task = asyncio.get_running_loop().create_task(self._load_and_warm_up())

    async def stop(self) -> None:
        if self._startup_task is not None:
            self._startup_task.cancel()
        self._models_settled.set()  # let queued fragment jobs finish (they fail) instead of hanging the pool
        for session in list(self.sessions.values()):
            self._drop_session(session)
        self.runner.shutdown()

    async def _load_and_warm_up(self) -> None:
        started = time.monotonic()
        try:
            if self.processor is None:
                assert self._processor_factory is not None
                self.processor = await self.runner.run(self._processor_factory)
            self._processor_built.set()
            await self.runner.run(self.processor.warmup)
            self.ready = True
            self.metrics.models_ready.set(1)
            log.info("models loaded and warmed up in %.1f s", time.monotonic() - started)
        except Exception as exc:
            self.startup_error = f"{type(exc).__name__}: {exc}"
            log.exception("model loading / warm-up failed")
        finally:
            self._processor_built.set()  # also on failure: stream:init must not wait forever
            self._models_settled.set()

    def health(self) -> tuple[int, dict[str, Any]]:
        if not self.ready or self.processor is None:
            status = "failed" if self.startup_error else "loading"
            body: dict[str, Any] = {"status": status}
            if self.startup_error:
                body["error"] = self.startup_error
            return 503, body
        return 200, {
            "status": "ok",
            "models": self.processor.describe(),
            "pipeline": self.settings.pipeline,
            "worker_threads": self.runner.workers,
            "active_sessions": len(self.sessions),
        }

    # ------------------------------------------------------------ emission

    async def _emit(self, event: str, payload: dict[str, Any], *, sid: str, stream_id: str | None = None) -> None:
        """Send to the client, plus a copy to the monitors of `stream_id` (one copy per socket)."""
        rooms = [sid]
        if stream_id is not None:
            rooms += [monitor_room(stream_id), MONITOR_ALL_ROOM]
        await self.sio.emit(event, payload, to=rooms)

    async def _error(
        self,
        sid: str,
        code: ErrorCode,
        message: str,
        *,
        stream_id: str | None = None,
        fragment_id: str | None = None,
        severity: ErrorSeverity = ErrorSeverity.MEDIUM,
        retryable: bool = False,
        stage: str = "protocol",
    ) -> None:
        self.metrics.errors.labels(stage=stage, code=code.value).inc()
        log.info("error %s to %s (stream %s, fragment %s): %s", code.value, sid, stream_id, fragment_id, message)
        event = ErrorEvent(
            code=code,
            message=message,
            severity=severity,
            retryable=retryable,
            stream_id=stream_id,
            fragment_id=fragment_id,
        )
        await self._emit(EventName.ERROR, event.to_wire(), sid=sid, stream_id=stream_id)

    def _session_emitter(self, sid: str, stream_id: str) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
        async def emit(event: str, payload: dict[str, Any]) -> None:
            await self._emit(event, payload, sid=sid, stream_id=stream_id)

        return emit

    # ------------------------------------------------------------ handlers

    def _register_handlers(self) -> None:
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        for event, handler in {
            EventName.STREAM_INIT: self._on_stream_init,
            EventName.FRAGMENT_DATA: self._on_fragment_data,
            EventName.STREAM_PAUSE: self._on_stream_pause,
            EventName.STREAM_RESUME: self._on_stream_resume,
            EventName.STREAM_END: self._on_stream_end,
            EventName.MONITOR_SUBSCRIBE: self._on_monitor_subscribe,
        }.items():
            self.sio.on(event, self._guarded(event, handler))
        self.sio.on("*", self._on_unknown_event)

    def _guarded(self, event: str, handler: Callable[[str, Any], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Missing payloads become None, extra arguments are ignored, and a bug in a handler answers INTERNAL_ERROR
        to that client instead of vanishing into the Socket.IO task."""

        @functools.wraps(handler)
        async def guarded(sid: str, data: Any = None, *_extra: Any) -> Any:
            try:
                return await handler(sid, data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("handler of %s failed", event)
                await self._error(
                    sid,
                    ErrorCode.INTERNAL_ERROR,
                    f"{event}: {type(exc).__name__}: {exc}",
                    stream_id=_raw_str(data, "stream_id"),
                    fragment_id=_raw_str(data, "fragment_id"),
                    severity=ErrorSeverity.HIGH,
                    stage="server",
                )
                return None

        return guarded

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        expected = self.settings.api_key
        if expected and not any(hmac.compare_digest(expected, key) for key in self._presented_keys(environ, auth)):
            self.metrics.errors.labels(stage="connect", code=ErrorCode.UNAUTHORIZED.value).inc()
            log.warning("refused connection %s: missing or wrong API key", sid)
            refusal = ErrorEvent(
                code=ErrorCode.UNAUTHORIZED, message="missing or invalid API key", severity=ErrorSeverity.FATAL
            )
            raise socketio.exceptions.ConnectionRefusedError(ErrorCode.UNAUTHORIZED.value, refusal.to_wire())
        self.metrics.connected_clients.inc()

    @staticmethod
    def _presented_keys(environ: dict[str, Any], auth: Any) -> list[str]:
        keys: list[str] = []
        if isinstance(auth, dict) and isinstance(auth.get("token"), str):
            keys.append(auth["token"])
        if header := environ.get("HTTP_X_API_KEY"):
            keys.append(str(header))
        keys += parse_qs(environ.get("QUERY_STRING", "")).get("api_key", [])
        return keys

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.metrics.connected_clients.dec()
        for session in [s for s in self.sessions.values() if s.sid == sid]:
            log.info("client %s gone (%s): closing stream %s", sid, reason, session.stream_id)
            self._drop_session(session)

    async def _on_unknown_event(self, event: str, sid: str, *_args: Any) -> None:
        await self._error(sid, ErrorCode.INVALID_EVENT, f"unknown event {event!r}", severity=ErrorSeverity.LOW)

    async def _on_stream_init(self, sid: str, data: Any) -> None:
        if not isinstance(data, dict):
            await self._error(sid, ErrorCode.INVALID_CONFIG, "stream:init payload must be an object")
            return
        try:
            init = StreamInit.model_validate(data)
        except ValidationError as exc:
            await self._error(
                sid,
                ErrorCode.INVALID_CONFIG,
                f"invalid stream:init: {_short(exc)}",
                stream_id=_raw_str(data, "stream_id"),
            )
            return
        await self._processor_built.wait()  # only while the models are still loading
        if self.processor is None:
            await self._error(
                sid,
                ErrorCode.INTERNAL_ERROR,
                f"the models did not load: {self.startup_error}",
                stream_id=init.stream_id,
                severity=ErrorSeverity.FATAL,
                stage="server",
            )
            return
        config = init.config
        try:
            self.processor.check_languages(config.source_language, config.target_language)
        except UnsupportedLanguageError as exc:
            await self._error(sid, ErrorCode.UNSUPPORTED_LANGUAGE, str(exc), stream_id=init.stream_id)
            return
        previous = self.sessions.get(init.stream_id)
        if previous is not None:
            log.info("stream %s re-initialised by %s: replacing its session", init.stream_id, sid)
            self._drop_session(previous)
        session = StreamSession(
            stream_id=init.stream_id,
            worker_id=init.worker_id,
            sid=sid,
            config=config,
            emit=self._session_emitter(sid, init.stream_id),
            metrics=self.metrics,
            gap_timeout_s=self.gap_timeout_s,
        )
        self.sessions[init.stream_id] = session
        self.metrics.active_sessions.inc()
        log.info(
            "stream %s ready (worker %r, %s->%s, session %s)",
            init.stream_id,
            init.worker_id,
            config.source_language,
            config.target_language,
            session.session_id,
        )
        ready = StreamReady(
            stream_id=init.stream_id,
            session_id=session.session_id,
            max_inflight=config.max_inflight,
            capabilities=self._capabilities(),
        )
        await self._emit(EventName.STREAM_READY, ready.to_wire(), sid=sid, stream_id=init.stream_id)

    def _capabilities(self) -> dict[str, Any]:
        assert self.processor is not None
        return {
            Capability.FORMATS: [f.value for f in AudioFormat],
            Capability.MAX_FRAGMENT_BYTES: self.settings.max_fragment_bytes,
            Capability.MAX_INFLIGHT_LIMIT: HIGH_MAX_INFLIGHT,
            Capability.IN_ORDER_DELIVERY: True,
            Capability.ASYNC_DELIVERY: True,
            Capability.BATCH_PROCESSING: False,
            Capability.MONITOR_ROOM: True,
            Capability.MODELS: self.processor.describe() if self.ready else {},
            # livedub extensions: fragment:data.deadline_ms (most urgent first, late work answered TIMEOUT at
            # once) and stream:init config.dub_overrun_ms.
            Capability.DEADLINE: True,
            Capability.DUB_OVERRUN: True,
        }

    def _owned_session(self, sid: str, stream_id: str) -> StreamSession | None:
        session = self.sessions.get(stream_id)
        return session if session is not None and session.sid == sid else None

    async def _on_fragment_data(self, sid: str, data: Any) -> None:
        # Everything up to `session.accept` runs without awaiting: Socket.IO starts one task per event in arrival
        # order, so fragments are accepted in the order they were sent.
        arrived_at = time.monotonic()  # the fragment's deadline counts from here
        if not isinstance(data, dict):
            await self._error(sid, ErrorCode.INVALID_EVENT, "fragment:data payload must be an object")
            return
        stream_id, fragment_id = _raw_str(data, "stream_id"), _raw_str(data, "fragment_id")
        owned = self._owned_session(sid, stream_id) if stream_id else None
        audio = data.get("audio")
        encoded = audio.get("data_base64") if isinstance(audio, dict) else None
        limit = self.settings.max_fragment_bytes
        if isinstance(encoded, str) and decoded_base64_length(encoded) > limit:
            await self._reject(
                sid,
                owned,
                _raw_int(data, "sequence_number"),
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"audio is {decoded_base64_length(encoded)} bytes, limit {limit}",
                stream_id=stream_id,
                fragment_id=fragment_id,
            )
            return
        try:
            fragment = FragmentData.model_validate(data)
        except ValidationError as exc:
            code = ErrorCode.INVALID_AUDIO_FORMAT if _is_audio_format_error(exc) else ErrorCode.INVALID_EVENT
            await self._reject(
                sid,
                owned,
                _raw_int(data, "sequence_number"),
                code,
                f"invalid fragment:data: {_short(exc)}",
                stream_id=stream_id,
                fragment_id=fragment_id,
            )
            return
        session = self._owned_session(sid, fragment.stream_id)
        if session is None or session.state is SessionState.ENDING:
            await self._error(
                sid,
                ErrorCode.STREAM_NOT_FOUND,
                f"stream {fragment.stream_id!r} is not initialised on this connection (or has ended)",
                stream_id=fragment.stream_id,
                fragment_id=fragment.fragment_id,
            )
            return
        seq = fragment.sequence_number
        if session.state is SessionState.PAUSED:
            await self._reject(
                sid,
                session,
                None,
                ErrorCode.INVALID_EVENT,
                "stream is paused; send stream:resume",
                stream_id=fragment.stream_id,
                fragment_id=fragment.fragment_id,
                retryable=True,
            )
            return
        if problem := self._audio_problem(fragment):
            await self._reject(
                sid,
                session,
                seq,
                ErrorCode.INVALID_AUDIO_FORMAT,
                problem,
                stream_id=fragment.stream_id,
                fragment_id=fragment.fragment_id,
            )
            return
        try:
            session.check_sequence(seq)
        except SequenceRejected as exc:
            await self._reject(
                sid,
                session,
                None,
                ErrorCode.INVALID_EVENT,
                str(exc),
                stream_id=fragment.stream_id,
                fragment_id=fragment.fragment_id,
            )
            return
        if session.inflight + 1 > HIGH_MAX_INFLIGHT:
            # Not skipped in the order buffer: the client may retry this sequence number after a pause.
            await self._reject(
                sid,
                session,
                None,
                ErrorCode.BACKPRESSURE_EXCEEDED,
                f"{session.inflight} fragments in flight (limit {HIGH_MAX_INFLIGHT}); pause and retry",
                stream_id=fragment.stream_id,
                fragment_id=fragment.fragment_id,
                severity=ErrorSeverity.HIGH,
                retryable=True,
            )
            return

        deadline = session.accept(fragment, arrived_at)
        # Submitted here, before any await, so the queue positions of back-to-back fragments are exact.
        job = self.runner.submit(self._process_blocking, fragment, session.config, deadline, deadline=deadline)
        ahead = self.runner.queue_position(job)
        if ahead is None and not self._models_settled.is_set():
            ahead = 0  # a free thread, but the job will wait there for the warm-up
        # The ack is sent before the result is awaited, so it always precedes the fragment's fragment:processed.
        await self._emit(
            EventName.FRAGMENT_ACK, self._ack_for(fragment, ahead).to_wire(), sid=sid, stream_id=session.stream_id
        )
        if session.state is SessionState.CLOSED:  # client left while the ack was sent
            job.cancel()
            return
        task = asyncio.get_running_loop().create_task(self._process(session, fragment, job, deadline))
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)
        if (backpressure := session.backpressure_after_accept()) is not None:
            await self._emit(EventName.BACKPRESSURE, backpressure.to_wire(), sid=sid, stream_id=session.stream_id)

    def _audio_problem(self, fragment: FragmentData) -> str | None:
        """Cheap checks of the audio bytes (decoding the codec is the processor's job)."""
        try:
            raw = fragment.audio.decode_bytes()
        except ValueError as exc:
            return str(exc)
        if not raw:
            return "audio.data_base64 is empty"
        if fragment.audio.format is AudioFormat.PCM_S16LE and len(raw) % (2 * fragment.audio.channels):
            channels = fragment.audio.channels
            return f"pcm_s16le data of {len(raw)} bytes is not a whole number of {channels}-channel 16-bit frames"
        return None

    @staticmethod
    def _ack_for(fragment: FragmentData, ahead: int | None) -> FragmentAck:
        if ahead is None:
            return FragmentAck(fragment_id=fragment.fragment_id, status=FragmentAckStatus.PROCESSING)
        return FragmentAck(fragment_id=fragment.fragment_id, status=FragmentAckStatus.QUEUED, queue_position=ahead)

    async def _reject(
        self,
        sid: str,
        session: StreamSession | None,
        seq: int | None,
        code: ErrorCode,
        message: str,
        *,
        stream_id: str | None,
        fragment_id: str | None,
        severity: ErrorSeverity = ErrorSeverity.MEDIUM,
        retryable: bool = False,
    ) -> None:
        """Refuse a fragment: `error` to the client, and (for a known sequence number) stop waiting for it."""
        await self._error(
            sid, code, message, stream_id=stream_id, fragment_id=fragment_id, severity=severity, retryable=retryable
        )
        if session is not None:
            await session.reject(seq)

    def _process_blocking(self, fragment: FragmentData, config: StreamConfig, deadline: float) -> FragmentProcessed:
        """Runs on an inference thread. Fragments that arrive during warm-up wait for it here."""
        self._models_settled.wait()
        if self.processor is None:
            raise RuntimeError(f"the models did not load: {self.startup_error}")
        if time.monotonic() >= deadline:
            raise DeadlineExpired("deadline passed while the models were warming up")
        return self.processor.process(fragment, config, deadline=Deadline(deadline))

    async def _process(
        self, session: StreamSession, fragment: FragmentData, job: Future[FragmentProcessed], deadline: float
    ) -> None:
        started = time.monotonic()
        try:
            # The answer is due at the deadline: a fragment still queued then is taken out of the queue, a running
            # one is left to finish on its own (its result is dropped) while a fresh thread serves the queue.
            if job.done():  # e.g. refused by the runner: its deadline had passed on arrival
                result = job.result()
            else:
                result = await asyncio.wait_for(asyncio.wrap_future(job), max(0.0, deadline - started))
            result = result.model_copy(
                update={
                    "fragment_id": fragment.fragment_id,
                    "stream_id": fragment.stream_id,
                    "sequence_number": fragment.sequence_number,
                }
            )
        except DeadlineExpired as exc:
            result = self._timeout_result(fragment, str(exc), started)
        except TimeoutError:
            if job.cancel():
                message = "deadline passed before processing started"
            else:
                self.runner.abandon(job)
                message = f"not processed within {fragment_budget_s(fragment, session.config) * 1000:.0f} ms"
            result = self._timeout_result(fragment, message, started)
        except Exception as exc:  # the processor should not raise; if it does, the fragment fails, not the server
            log.exception("processor raised on fragment %s", fragment.fragment_id)
            result = failed_result(
                fragment,
                "pipeline",
                ErrorCode.INTERNAL_ERROR,
                f"{type(exc).__name__}: {exc}",
                retryable=False,
                processing_time_ms=(time.monotonic() - started) * 1000.0,
            )
        await session.complete(result)

    @staticmethod
    def _timeout_result(fragment: FragmentData, message: str, started: float) -> FragmentProcessed:
        processing_time_ms = (time.monotonic() - started) * 1000.0
        return failed_result(
            fragment, "timeout", ErrorCode.TIMEOUT, message, retryable=True, processing_time_ms=processing_time_ms
        )

    async def _on_stream_pause(self, sid: str, data: Any) -> None:
        if (session := await self._control_session(sid, data, EventName.STREAM_PAUSE)) is None:
            return
        if session.state is SessionState.ACTIVE:
            session.state = SessionState.PAUSED
            log.info("stream %s paused", session.stream_id)

    async def _on_stream_resume(self, sid: str, data: Any) -> None:
        if (session := await self._control_session(sid, data, EventName.STREAM_RESUME)) is None:
            return
        if session.state is SessionState.PAUSED:
            session.state = SessionState.ACTIVE
            log.info("stream %s resumed", session.stream_id)

    async def _on_stream_end(self, sid: str, data: Any) -> None:
        session = await self._control_session(sid, data, EventName.STREAM_END)
        if session is None or session.state is SessionState.ENDING:
            return
        session.state = SessionState.ENDING
        # Every accepted fragment is answered by its timeout at the latest; the margin covers gap releases.
        drain_timeout_s = session.drain_timeout_s(self.gap_timeout_s + 5.0)
        if not await session.wait_drained(drain_timeout_s):
            log.warning("stream %s ended with %d fragments unanswered", session.stream_id, session.inflight)
        complete = session.complete_event()
        await self._emit(EventName.STREAM_COMPLETE, complete.to_wire(), sid=sid, stream_id=session.stream_id)
        log.info("stream %s complete: %s", session.stream_id, complete.statistics)
        self._drop_session(session)

    async def _control_session(self, sid: str, data: Any, event: str) -> StreamSession | None:
        try:
            control = StreamControl.model_validate(data)
        except ValidationError as exc:
            await self._error(
                sid, ErrorCode.INVALID_EVENT, f"invalid {event}: {_short(exc)}", stream_id=_raw_str(data, "stream_id")
            )
            return None
        session = self._owned_session(sid, control.stream_id)
        if session is None:
            await self._error(
                sid,
                ErrorCode.STREAM_NOT_FOUND,
                f"stream {control.stream_id!r} is not initialised on this connection",
                stream_id=control.stream_id,
            )
        return session

    async def _on_monitor_subscribe(self, sid: str, data: Any) -> dict[str, Any] | None:
        try:
            request = MonitorSubscribe.model_validate(data if data is not None else {})
        except ValidationError as exc:
            await self._error(sid, ErrorCode.INVALID_EVENT, f"invalid monitor:subscribe: {_short(exc)}")
            return None
        room = MONITOR_ALL_ROOM if request.stream_id is None else monitor_room(request.stream_id)
        await self.sio.enter_room(sid, room)
        log.info("monitor %s subscribed to %s", sid, room)
        # Returned as the Socket.IO acknowledgement, so `await client.call("monitor:subscribe", ...)` confirms.
        return {"subscribed": True, "stream_id": request.stream_id}

    def _drop_session(self, session: StreamSession) -> None:
        session.close()
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]
            self.metrics.active_sessions.dec()


def create_app(
    processor: FragmentProcessor | None,
    settings: StsSettings,
    *,
    processor_factory: Callable[[], FragmentProcessor] | None = None,
    metrics: StsMetrics | None = None,
    gap_timeout_s: float = DEFAULT_GAP_TIMEOUT_S,
) -> socketio.ASGIApp:
    """The ASGI app: Socket.IO at /socket.io, plus /health and /metrics.

    Give a ready `processor`, or a `processor_factory` that loads the models (run in the inference pool at startup,
    so /health answers 503 meanwhile). The `StsServer` is reachable as `app.sts_server`.
    """
    server = StsServer(
        settings, processor=processor, processor_factory=processor_factory, metrics=metrics, gap_timeout_s=gap_timeout_s
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    api = FastAPI(title="livedub STS", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/health")
    async def health() -> JSONResponse:
        status, body = server.health()
        return JSONResponse(body, status_code=status)

    @api.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(server.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    app = socketio.ASGIApp(server.sio, other_asgi_app=api)
    app.sts_server = server  # type: ignore[attr-defined]
    return app


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="livedub sts", description="Run the STS (speech-to-speech) service.")
    parser.add_argument("--host", help="bind address (STS_HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (STS_PORT, default 3000)")
    parser.add_argument(
        "--pipeline", choices=["dub", "echo"], help="dub (ASR, translation, TTS) or echo (STS_PIPELINE)"
    )
    parser.add_argument("--workers", type=int, help="fragments processed at once (STS_WORKER_THREADS)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    overrides = {"host": args.host, "port": args.port, "pipeline": args.pipeline, "worker_threads": args.workers}
    settings = StsSettings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from livedub.sts.pipeline import build_processor  # heavy imports (models) only when serving

    app = create_app(None, settings, processor_factory=lambda: build_processor(settings))
    log.info(
        "STS service on %s:%d (pipeline %s, %d worker thread(s))",
        settings.host,
        settings.port,
        settings.pipeline,
        settings.worker_threads,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        ws_max_size=engineio_buffer_bytes(settings.max_fragment_bytes) + _JSON_ENVELOPE_BYTES,
    )
    return 0
