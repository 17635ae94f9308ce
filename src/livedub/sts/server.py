"""The STS Socket.IO service: python-socketio `AsyncServer` (ASGI) + FastAPI (`/health`, `/metrics`) under uvicorn.

Event names and payloads are exactly the models of `livedub.protocol`; see docs/protocol.md.
Inference runs on a bounded set of threads, never on the event loop, most urgent fragment first and fairly across
streams (see scheduler.py). Socket.IO is served at `/socket.io` (the seed servers' path) and `/ws/sts` (spec 016's).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hmac
import ipaddress
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import socketio
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from livedub.dubbing.deadline import Deadline
from livedub.sts.processor import FragmentProcessor, UnsupportedLanguageError, answers_of
from livedub.protocol import (
    AudioFormat,
    Capability,
    DubChunk,
    ErrorCode,
    ErrorEvent,
    ErrorSeverity,
    ErrorSimulation,
    ErrorSimulationAck,
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
from livedub.sts.fanout import client_manager
from livedub.sts.metrics import METRICS_CONTENT_TYPE, StsMetrics
from livedub.sts.scheduler import DeadlineExpired, DeadlineRunner
from livedub.sts.session import (
    DEFAULT_GAP_TIMEOUT_S,
    HIGH_MAX_INFLIGHT,
    SequenceRejected,
    SessionState,
    StreamSession,
    dub_length_s,
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
# The seed's servers close a connection about 5 s after its stream:complete; so does this one (when the connection
# has no other stream by then). None: never.
DISCONNECT_AFTER_COMPLETE_S: float | None = 5.0
# Socket.IO paths served: the seed servers' default, and spec 016's.
SOCKETIO_PATH = "socket.io"
SPEC_SOCKETIO_PATH = "ws/sts"


def _settle(answers: dict[str, asyncio.Future[FragmentProcessed]], result: FragmentProcessed) -> None:
    """On the loop: hand a target's answer to whoever waits for it (nobody, once its time has passed)."""
    answer = answers.get(result.target_language or "")
    if answer is not None and not answer.done():
        answer.set_result(result)


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


def same_key(expected: str, presented: str) -> bool:
    """Constant-time comparison of two keys (bytes: `hmac.compare_digest` refuses non-ASCII str)."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass"))


def is_loopback_peer(environ: dict[str, Any]) -> bool:
    """Whether the connection comes from this host. From the ASGI scope's client address: Engine.IO's own
    `REMOTE_ADDR` is a placeholder under ASGI. No address (e.g. a Unix socket is not used here): not loopback."""
    client = (environ.get("asgi.scope") or {}).get("client")
    if not client:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@dataclass
class _Peer:
    """What a connection showed at connect: the keys it presented and whether it is local."""

    keys: list[str]
    loopback: bool


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
        disconnect_after_complete_s: float | None = DISCONNECT_AFTER_COMPLETE_S,
    ) -> None:
        if (processor is None) == (processor_factory is None):
            raise ValueError("give exactly one of processor and processor_factory")
        self.settings = settings
        self.processor = processor
        self._processor_factory = processor_factory
        self.metrics = metrics or StsMetrics()
        self.gap_timeout_s = gap_timeout_s
        self.disconnect_after_complete_s = disconnect_after_complete_s
        self.runner = DeadlineRunner(settings.worker_threads)
        self.sessions: dict[str, StreamSession] = {}
        self._peers: dict[str, _Peer] = {}
        self._closers: dict[str, asyncio.Task[None]] = {}  # sid -> its disconnect after stream:complete
        self.ready = False
        self.startup_error: str | None = None
        self._processor_built = asyncio.Event()
        # Warm-up over, successfully or not. A threading.Event: fragment jobs wait on it in the pool.
        self._models_settled = threading.Event()
        self._startup_task: asyncio.Task[None] | None = None
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=client_manager(),  # Redis (REDIS_URL): monitors see streams on every replica
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
        for closer in list(self._closers.values()):
            closer.cancel()
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
            "fragments_inflight": sum(session.inflight for session in self.sessions.values()),
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
        severity: ErrorSeverity = ErrorSeverity.ERROR,
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
            EventName.FRAGMENT_ACK: self._on_worker_ack,
            EventName.CONFIG_ERROR_SIMULATION: self._on_error_simulation,
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
                    severity=ErrorSeverity.ERROR,
                    stage="server",
                )
                return None

        return guarded

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        expected = self.settings.api_key
        presented = self._presented_keys(environ, auth)
        if expected and not any(same_key(expected, key) for key in presented):
            self.metrics.errors.labels(stage="connect", code=ErrorCode.UNAUTHORIZED.value).inc()
            log.warning("refused connection %s: missing or wrong API key", sid)
            refusal = ErrorEvent(
                code=ErrorCode.UNAUTHORIZED, message="missing or invalid API key", severity=ErrorSeverity.FATAL
            )
            raise socketio.exceptions.ConnectionRefusedError(ErrorCode.UNAUTHORIZED.value, refusal.to_wire())
        self._peers[sid] = _Peer(keys=presented, loopback=is_loopback_peer(environ))
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
        self._peers.pop(sid, None)
        if (closer := self._closers.pop(sid, None)) is not None:
            closer.cancel()
        for session in [s for s in self.sessions.values() if s.sid == sid]:
            log.info("client %s gone (%s): closing stream %s", sid, reason, session.stream_id)
            self._drop_session(session)

    async def _on_unknown_event(self, event: str, sid: str, *_args: Any) -> None:
        await self._error(sid, ErrorCode.INVALID_EVENT, f"unknown event {event!r}", severity=ErrorSeverity.WARNING)

    def _may_monitor(self, sid: str, key: str | None) -> bool:
        """Monitoring needs the monitor key or the API key (at connect, or `key` in the request); with neither
        configured, a loopback connection."""
        peer = self._peers.get(sid)
        if peer is None:
            return False
        accepted = [k for k in (self.settings.monitor_key, self.settings.api_key) if k]
        if not accepted:
            return peer.loopback
        presented = [*peer.keys, *([key] if key else [])]
        return any(same_key(a, k) for a in accepted for k in presented)

    # ------------------------------------------------------------ disconnect after stream:complete

    def _close_later(self, sid: str) -> None:
        """Disconnect `sid` after DISCONNECT_AFTER_COMPLETE_S, unless it opens (or still has) a stream by then."""
        if self.disconnect_after_complete_s is None or any(s.sid == sid for s in self.sessions.values()):
            return
        self._cancel_close(sid)
        self._closers[sid] = asyncio.get_running_loop().create_task(self._disconnect_idle(sid))

    def _cancel_close(self, sid: str) -> None:
        if (closer := self._closers.pop(sid, None)) is not None:
            closer.cancel()

    async def _disconnect_idle(self, sid: str) -> None:
        assert self.disconnect_after_complete_s is not None
        await asyncio.sleep(self.disconnect_after_complete_s)
        self._closers.pop(sid, None)
        if not any(s.sid == sid for s in self.sessions.values()):
            log.info("closing connection %s: its stream completed %.1f s ago", sid, self.disconnect_after_complete_s)
            await self.sio.disconnect(sid)

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
        config = init.config  # max_inflight / timeout_ms of the top level (spec 016) already merged in
        try:
            for target in config.targets:
                self.processor.check_languages(config.source_language, target)
        except UnsupportedLanguageError as exc:
            await self._error(sid, ErrorCode.UNSUPPORTED_LANGUAGE, str(exc), stream_id=init.stream_id)
            return
        prepare = getattr(self.processor, "prepare", None)
        if prepare is not None:  # a pair no stream has used yet warms up first (seconds)
            await asyncio.to_thread(prepare, config.source_language, config.targets)
        previous = self.sessions.get(init.stream_id)
        if (
            previous is not None
            and previous.sid != sid
            and not (init.worker_id and same_key(previous.worker_id, init.worker_id))
        ):
            # A stream belongs to the connection that opened it; only the same worker may take it over.
            await self._error(
                sid,
                ErrorCode.UNAUTHORIZED,
                f"stream {init.stream_id!r} belongs to another connection; only its own worker (same worker_id) may "
                "take it over",
                stream_id=init.stream_id,
                stage="takeover",
            )
            return
        self._cancel_close(sid)
        session = StreamSession(
            stream_id=init.stream_id,
            worker_id=init.worker_id,
            sid=sid,
            config=config,
            emit=self._session_emitter(sid, init.stream_id),
            metrics=self.metrics,
            gap_timeout_s=self.gap_timeout_s,
            queue_depth=functools.partial(self.runner.queued, init.stream_id),
        )
        if previous is not None:
            how = "re-initialised" if previous.sid == sid else f"taken over from {previous.sid} by its worker"
            log.info("stream %s %s (connection %s): resuming its session", init.stream_id, how, sid)
            self._drop_session(previous)
            session.resume_from(previous)
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
            Capability.TARGET_LANGUAGES: True,
            Capability.DUB_CHUNKS: True,
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
                ErrorCode.STREAM_PAUSED,
                "stream is paused; send stream:resume, then this fragment again",
                stream_id=fragment.stream_id,
                fragment_id=fragment.fragment_id,
                severity=ErrorSeverity.WARNING,
                retryable=True,
            )
            return
        # The echo pipeline mirrors the payload as it is, whatever the bytes; the dubbing pipeline decodes them.
        mirrors_audio = getattr(self.processor, "mirrors_audio", False) is True
        if not mirrors_audio and (problem := self._audio_problem(fragment)):
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
                severity=ErrorSeverity.WARNING,
                retryable=True,
            )
            return

        deadline = session.accept(fragment, arrived_at)
        loop = asyncio.get_running_loop()
        started = asyncio.Event()  # set (from the inference thread) when the fragment's processing starts
        # One future per target: the inference thread settles each as soon as that target's answer is ready.
        answers: dict[str, asyncio.Future[FragmentProcessed]] = {t: loop.create_future() for t in session.targets}
        usual_time = getattr(self.processor, "usual_time_s", None)
        start_by = deadline - usual_time(fragment.audio.duration_ms / 1000) if usual_time is not None else None
        # Submitted here, before any await, so the queue positions of back-to-back fragments are exact.
        on_chunk = None
        if session.config.dub_chunks:
            on_chunk = functools.partial(loop.call_soon_threadsafe, self._send_chunk, session, answers)
        job = self.runner.submit(
            self._process_blocking,
            fragment,
            session.config,
            deadline,
            functools.partial(loop.call_soon_threadsafe, _settle, answers),
            on_chunk,
            deadline=deadline,
            key=session.stream_id,
            start_by=start_by,
            on_start=lambda: loop.call_soon_threadsafe(started.set),
        )
        # The first ack is always `queued` (seed clients assert it); `processing` follows when a thread starts it.
        # It is sent before the result is awaited, so it always precedes the fragment's fragment:processed.
        ack = FragmentAck(
            fragment_id=fragment.fragment_id,
            status=FragmentAckStatus.QUEUED,
            queue_position=self.runner.queue_position(job) or 0,
        )
        await self._emit(EventName.FRAGMENT_ACK, ack.to_wire(), sid=sid, stream_id=session.stream_id)
        if session.state is SessionState.CLOSED:  # client left while the ack was sent
            job.cancel()
            return
        task = loop.create_task(self._process(session, fragment, job, answers, deadline, started))
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
        severity: ErrorSeverity = ErrorSeverity.ERROR,
        retryable: bool = False,
    ) -> None:
        """Refuse a fragment: `error` to the client, and (for a known sequence number) stop waiting for it."""
        await self._error(
            sid, code, message, stream_id=stream_id, fragment_id=fragment_id, severity=severity, retryable=retryable
        )
        if session is not None:
            await session.reject(seq)

    def _send_chunk(
        self, session: StreamSession, answers: dict[str, asyncio.Future[FragmentProcessed]], chunk: DubChunk
    ) -> None:
        """On the loop: send a dub's chunk, unless its target was answered already (a chunk never follows its
        `fragment:processed`) or the client left."""
        answer = answers.get(chunk.target_language)
        if answer is None or answer.done() or session.state is SessionState.CLOSED:
            return
        task = asyncio.ensure_future(
            self._emit(EventName.FRAGMENT_CHUNK, chunk.to_wire(), sid=session.sid, stream_id=session.stream_id)
        )
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    def _process_blocking(
        self,
        fragment: FragmentData,
        config: StreamConfig,
        deadline: float,
        deliver: Callable[[FragmentProcessed], object],
        on_chunk: Callable[[DubChunk], object] | None = None,
    ) -> list[FragmentProcessed]:
        """Runs on an inference thread; `deliver`s each target's answer as soon as it is ready. Fragments that arrive
        during warm-up wait for it here."""
        self._models_settled.wait()
        if self.processor is None:
            raise RuntimeError(f"the models did not load: {self.startup_error}")
        if time.monotonic() >= deadline:
            raise DeadlineExpired("deadline passed while the models were warming up")
        results = []
        budget = Deadline(deadline, backlog=self.runner.slack_s)  # the phrase's, and the work queued behind it
        for result in answers_of(self.processor, fragment, config, budget, on_chunk):
            deliver(result)
            results.append(result)
        return results

    async def _process(
        self,
        session: StreamSession,
        fragment: FragmentData,
        job: Future[list[FragmentProcessed]],
        answers: dict[str, asyncio.Future[FragmentProcessed]],
        deadline: float,
        processing: asyncio.Event,
    ) -> None:
        """Emit each target's answer as it comes; at the deadline, or when the job ends, the targets still
        unanswered get the failure that ended it."""
        emitters = [asyncio.ensure_future(self._emit_answer(session, fragment, answer)) for answer in answers.values()]
        try:
            results, failure = await self._job_outcome(session, fragment, job, deadline, processing)
            for result in results:  # answers whose hand-over to the loop has not run yet
                _settle(answers, result)
            for target, answer in answers.items():
                if not answer.done():
                    missing = failure or failed_result(
                        fragment, "pipeline", ErrorCode.INTERNAL_ERROR, f"no answer for target {target}",
                        retryable=False, processing_time_ms=0.0,
                    )  # fmt: skip
                    answer.set_result(missing.model_copy(update={"target_language": target}))
            await asyncio.gather(*emitters)
        finally:
            for emitter in emitters:
                emitter.cancel()

    async def _emit_answer(
        self, session: StreamSession, fragment: FragmentData, answer: asyncio.Future[FragmentProcessed]
    ) -> None:
        result = await answer
        identity = {
            "fragment_id": fragment.fragment_id,
            "stream_id": fragment.stream_id,
            "sequence_number": fragment.sequence_number,
        }
        await session.complete(result.model_copy(update=identity))

    async def _job_outcome(
        self,
        session: StreamSession,
        fragment: FragmentData,
        job: Future[list[FragmentProcessed]],
        deadline: float,
        processing: asyncio.Event,
    ) -> tuple[list[FragmentProcessed], FragmentProcessed | None]:
        """Wait for the job: its answers, and the failed result for the targets it did not answer (None when it
        ended normally)."""
        started = time.monotonic()
        try:
            # The answers are due at the deadline: a fragment still queued then is taken out of the queue, a running
            # one is left to finish on its own (its results are dropped) while a fresh thread serves the queue.
            if job.done():  # e.g. refused by the runner: its deadline had passed on arrival
                return job.result(), None
            # A dub in chunks is due by the deadline only with its first chunk; the rest as it plays.
            answer_by = deadline + (dub_length_s(fragment, session.config) if session.config.dub_chunks else 0.0)
            async with asyncio.timeout(max(0.0, answer_by - started)):
                return await self._await_job(session, fragment, job, processing), None
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
        return [], result

    async def _await_job(
        self,
        session: StreamSession,
        fragment: FragmentData,
        job: Future[list[FragmentProcessed]],
        processing: asyncio.Event,
    ) -> list[FragmentProcessed]:
        """The job's result; on the way, the `processing` ack when a thread starts it (unless it is done already)."""
        result = asyncio.wrap_future(job)
        started = asyncio.ensure_future(processing.wait())
        try:
            await asyncio.wait({result, started}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the deadline passed: stop waiting, as `await result` would have
            result.cancel()
            raise
        finally:
            started.cancel()
        if not result.done() and processing.is_set() and session.state is not SessionState.CLOSED:
            ack = FragmentAck(fragment_id=fragment.fragment_id, status=FragmentAckStatus.PROCESSING)
            await self._emit(EventName.FRAGMENT_ACK, ack.to_wire(), sid=session.sid, stream_id=session.stream_id)
        return await result

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
        end_stream = getattr(self.processor, "end_stream", None)
        if end_stream is not None:  # the processor forgets the stream's translation context
            end_stream(session.stream_id)
        self._drop_session(session)
        self._close_later(sid)

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
        if not self._may_monitor(sid, request.key):
            log.warning("refused monitor:subscribe from %s: no monitor key", sid)
            await self._error(
                sid,
                ErrorCode.UNAUTHORIZED,
                "monitor:subscribe needs the monitor key (STS_MONITOR_KEY) or the API key; with neither configured, "
                "only local (loopback) connections may monitor",
                stream_id=request.stream_id,
                stage="monitor",
            )
            return {"subscribed": False, "stream_id": request.stream_id, "error": ErrorCode.UNAUTHORIZED.value}
        room = MONITOR_ALL_ROOM if request.stream_id is None else monitor_room(request.stream_id)
        await self.sio.enter_room(sid, room)
        log.info("monitor %s subscribed to %s", sid, room)
        # Returned as the Socket.IO acknowledgement, so `await client.call("monitor:subscribe", ...)` confirms.
        return {"subscribed": True, "stream_id": request.stream_id}

    async def _on_worker_ack(self, sid: str, data: Any) -> None:
        """Spec 016's worker -> STS `fragment:ack` (status `received`): accepted, nothing to answer."""
        try:
            ack = FragmentAck.model_validate(data)
        except ValidationError as exc:
            await self._error(
                sid, ErrorCode.INVALID_EVENT, f"invalid fragment:ack: {_short(exc)}", severity=ErrorSeverity.WARNING
            )
            return
        log.debug("connection %s: fragment %s %s", sid, ack.fragment_id, ack.status)

    async def _on_error_simulation(self, sid: str, data: Any) -> dict[str, Any]:
        """`config:error_simulation` (echo pipeline only): answered by `config:error_simulation:ack` (also returned as
        the Socket.IO acknowledgement)."""
        ack = await self._configure_error_simulation(sid, data)
        await self.sio.emit(EventName.CONFIG_ERROR_SIMULATION_ACK, ack.to_wire(), to=sid)
        return ack.to_wire()

    async def _configure_error_simulation(self, sid: str, data: Any) -> ErrorSimulationAck:
        await self._processor_built.wait()
        simulator = getattr(self.processor, "error_simulation", None)
        if simulator is None:
            message = (
                "config:error_simulation is offered by the echo pipeline only (STS_PIPELINE=echo); this STS runs "
                f"the {self.settings.pipeline} pipeline, whose dubs are never failed on purpose"
            )
            await self._error(sid, ErrorCode.INVALID_CONFIG, message, stream_id=_raw_str(data, "stream_id"))
            return ErrorSimulationAck(status="rejected", rules_count=0, message=message)
        try:
            request = ErrorSimulation.model_validate(data)
        except ValidationError as exc:
            return ErrorSimulationAck(status="rejected", rules_count=0, message=f"invalid configuration: {_short(exc)}")
        if request.stream_id is not None:
            owned = self._owned_session(sid, request.stream_id) is not None
            if not owned and not self._may_monitor(sid, None):
                message = f"stream {request.stream_id!r} is not this connection's (needs the monitor key)"
                await self._error(sid, ErrorCode.UNAUTHORIZED, message, stream_id=request.stream_id, stage="monitor")
                return ErrorSimulationAck(status="rejected", rules_count=0, message=message)
            targets = [request.stream_id]
        else:
            targets = [s.stream_id for s in self.sessions.values() if s.sid == sid]
            if not targets:
                message = "cannot configure error simulation: no stream on this connection (send stream:init first)"
                await self._error(sid, ErrorCode.STREAM_NOT_FOUND, message)
                return ErrorSimulationAck(status="rejected", rules_count=0, message=message)
        for stream_id in targets:
            simulator.configure(stream_id, request)
        log.info("error simulation for %s: enabled=%s, %d rule(s)", targets, request.enabled, len(request.rules))
        return ErrorSimulationAck(status="accepted", rules_count=len(request.rules))

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
    disconnect_after_complete_s: float | None = DISCONNECT_AFTER_COMPLETE_S,
) -> StsApp:
    """The ASGI app: Socket.IO at /socket.io and /ws/sts, plus /health and /metrics.

    Give a ready `processor`, or a `processor_factory` that loads the models (run in the inference pool at startup,
    so /health answers 503 meanwhile). The `StsServer` is reachable as `app.sts_server`.
    """
    server = StsServer(
        settings,
        processor=processor,
        processor_factory=processor_factory,
        metrics=metrics,
        gap_timeout_s=gap_timeout_s,
        disconnect_after_complete_s=disconnect_after_complete_s,
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

    return StsApp(socketio.ASGIApp(server.sio, other_asgi_app=api, socketio_path=SOCKETIO_PATH), server)


class StsApp:
    """The Socket.IO ASGI app, also reachable at spec 016's path: `/ws/sts/...` is served as `/socket.io/...`."""

    def __init__(self, app: socketio.ASGIApp, server: StsServer) -> None:
        self.app = app
        self.sts_server = server

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            prefix = "/" + SPEC_SOCKETIO_PATH
            if path == prefix or path.startswith(prefix + "/"):
                path = "/" + SOCKETIO_PATH + path[len(prefix) :]
                scope = {**scope, "path": path, "raw_path": path.encode("ascii", "ignore")}
        await self.app(scope, receive, send)


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
    # CTranslate2 (Whisper) waits in OpenMP barriers: passive waiting yields the core on a busy machine instead of
    # spinning on it (set before the library loads; a value from the environment wins).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
