"""The streams of one STS: opened by `stream:init`, ended by `stream:end`, dropped when their connection leaves.

A connection whose stream completed is closed AUTO_DISCONNECT_DELAY seconds later (the seed's servers do the same),
unless it has opened another stream by then.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livedub.protocol import (
    AudioFormat,
    Capability,
    ErrorCode,
    ErrorSeverity,
    ErrorSimulation,
    ErrorSimulationAck,
    EventName,
    StreamInit,
    StreamReady,
)
from livedub.sts.access import same_key
from livedub.sts.host import ProcessorHost
from livedub.sts.metrics import StsMetrics
from livedub.sts.outbox import Outbox
from livedub.sts.processor import UnsupportedLanguageError
from livedub.sts.scheduler import DeadlineRunner
from livedub.sts.session import HIGH_MAX_INFLIGHT, StreamSession
from livedub.sts.settings import StsSettings

log = logging.getLogger(__name__)

# Every accepted fragment is answered by its timeout at the latest; this margin (past the gap timeout) covers the
# releases of sequence numbers that never came.
_DRAIN_MARGIN_S = 5.0


class StreamDesk:
    def __init__(
        self,
        settings: StsSettings,
        *,
        host: ProcessorHost,
        runner: DeadlineRunner,
        outbox: Outbox,
        metrics: StsMetrics,
        gap_timeout_s: float,
        disconnect: Callable[[str], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.host = host
        self.runner = runner
        self.outbox = outbox
        self.metrics = metrics
        self.gap_timeout_s = gap_timeout_s
        self._disconnect = disconnect
        self.sessions: dict[str, StreamSession] = {}
        self._closers: dict[str, asyncio.Task[None]] = {}  # sid -> its disconnect after stream:complete

    def owned(self, sid: str, stream_id: str) -> StreamSession | None:
        """The stream `stream_id` if connection `sid` opened it."""
        session = self.sessions.get(stream_id)
        return session if session is not None and session.sid == sid else None

    def of_connection(self, sid: str) -> list[StreamSession]:
        return [s for s in self.sessions.values() if s.sid == sid]

    # ------------------------------------------------------------ stream:init

    async def open(self, sid: str, init: StreamInit) -> None:
        """Open (or re-open, or take over) `init.stream_id` for connection `sid` and answer `stream:ready`, or
        refuse it with `error`."""
        if not await self._may_open(sid, init):
            return
        self.cancel_close(sid)
        session = self._new_session(sid, init)
        self.sessions[init.stream_id] = session
        self.metrics.active_sessions.inc()
        config = init.config
        log.info(
            "stream %s ready (worker %r, %s->%s, session %s)",
            init.stream_id, init.worker_id, config.source_language, config.target_language, session.session_id,
        )  # fmt: skip
        ready = StreamReady(
            stream_id=init.stream_id,
            session_id=session.session_id,
            max_inflight=config.max_inflight,
            capabilities=self.capabilities(),
        )
        await self.outbox.emit(EventName.STREAM_READY, ready.to_wire(), sid=sid, stream_id=init.stream_id)

    async def _may_open(self, sid: str, init: StreamInit) -> bool:
        await self.host.built.wait()  # only while the models are still loading
        config = init.config  # max_inflight / timeout_ms of the top level (spec 016) already merged in
        if (processor := self.host.processor) is None:
            message = f"the models did not load: {self.host.startup_error}"
            await self.outbox.error(sid, ErrorCode.INTERNAL_ERROR, message, stream_id=init.stream_id,
                                    severity=ErrorSeverity.FATAL, stage="server")  # fmt: skip
            return False
        try:
            for target in config.targets:
                processor.check_languages(config.source_language, target)
        except UnsupportedLanguageError as exc:
            await self.outbox.error(sid, ErrorCode.UNSUPPORTED_LANGUAGE, str(exc), stream_id=init.stream_id)
            return False
        # A pair no stream has used yet warms up first (seconds).
        await asyncio.to_thread(self.host.features.prepare, config.source_language, config.targets)
        previous = self.sessions.get(init.stream_id)
        if previous is None or previous.sid == sid or (init.worker_id and same_key(previous.worker_id, init.worker_id)):
            return True
        # A stream belongs to the connection that opened it; only the same worker may take it over.
        message = (
            f"stream {init.stream_id!r} belongs to another connection; only its own worker (same worker_id) may "
            "take it over"
        )
        await self.outbox.error(sid, ErrorCode.UNAUTHORIZED, message, stream_id=init.stream_id, stage="takeover")
        return False

    def _new_session(self, sid: str, init: StreamInit) -> StreamSession:
        session = StreamSession(
            stream_id=init.stream_id,
            worker_id=init.worker_id,
            sid=sid,
            config=init.config,
            emit=self.outbox.to_stream(sid, init.stream_id),
            metrics=self.metrics,
            gap_timeout_s=self.gap_timeout_s,
            queue_depth=functools.partial(self.runner.queued, init.stream_id),
        )
        if (previous := self.sessions.get(init.stream_id)) is not None:
            how = "re-initialised" if previous.sid == sid else f"taken over from {previous.sid} by its worker"
            log.info("stream %s %s (connection %s): resuming its session", init.stream_id, how, sid)
            self.drop(previous)
            session.resume_from(previous)
        return session

    def capabilities(self) -> dict[str, Any]:
        return {
            Capability.FORMATS: [f.value for f in AudioFormat],
            Capability.MAX_FRAGMENT_BYTES: self.settings.max_fragment_bytes,
            Capability.MAX_INFLIGHT_LIMIT: HIGH_MAX_INFLIGHT,
            Capability.IN_ORDER_DELIVERY: True,
            Capability.ASYNC_DELIVERY: True,
            Capability.BATCH_PROCESSING: False,
            Capability.MONITOR_ROOM: True,
            Capability.MODELS: self.host.models(),
            # livedub extensions: fragment:data.deadline_ms (most urgent first, late work answered TIMEOUT at
            # once) and stream:init config.dub_overrun_ms.
            Capability.DEADLINE: True,
            Capability.DUB_OVERRUN: True,
            Capability.TARGET_LANGUAGES: True,
            Capability.DUB_CHUNKS: True,
        }

    # ------------------------------------------------------------ stream:end, disconnect

    async def end(self, session: StreamSession) -> None:
        """`stream:end`: wait for every fragment in flight, answer `stream:complete`, close the session."""
        if not session.begin_end():
            return
        if not await session.wait_drained(session.drain_timeout_s(self.gap_timeout_s + _DRAIN_MARGIN_S)):
            log.warning("stream %s ended with %d fragments unanswered", session.stream_id, session.inflight)
        complete = session.complete_event()
        wire = complete.to_wire()
        await self.outbox.emit(EventName.STREAM_COMPLETE, wire, sid=session.sid, stream_id=session.stream_id)
        log.info("stream %s complete: %s", session.stream_id, complete.statistics)
        self.host.features.end_stream(session.stream_id)  # the processor forgets the stream's translation context
        self.drop(session)
        self._close_later(session.sid)

    def drop(self, session: StreamSession) -> None:
        session.close()
        if self.sessions.get(session.stream_id) is session:
            del self.sessions[session.stream_id]
            self.metrics.active_sessions.dec()

    def connection_gone(self, sid: str, reason: Any) -> None:
        self.cancel_close(sid)
        for session in self.of_connection(sid):
            log.info("client %s gone (%s): closing stream %s", sid, reason, session.stream_id)
            self.drop(session)

    def stop(self) -> None:
        for closer in list(self._closers.values()):
            closer.cancel()
        for session in list(self.sessions.values()):
            self.drop(session)

    def _close_later(self, sid: str) -> None:
        """Disconnect `sid` after AUTO_DISCONNECT_DELAY, unless it opens (or still has) a stream by then."""
        if not self.settings.auto_disconnect_delay_s or self.of_connection(sid):
            return
        self.cancel_close(sid)
        self._closers[sid] = asyncio.get_running_loop().create_task(self._disconnect_idle(sid))

    def cancel_close(self, sid: str) -> None:
        if (closer := self._closers.pop(sid, None)) is not None:
            closer.cancel()

    async def _disconnect_idle(self, sid: str) -> None:
        delay_s = self.settings.auto_disconnect_delay_s
        await asyncio.sleep(delay_s)
        self._closers.pop(sid, None)
        if not self.of_connection(sid):
            log.info("closing connection %s: its stream completed %.1f s ago", sid, delay_s)
            await self._disconnect(sid)

    # ------------------------------------------------------------ config:error_simulation

    async def simulate_errors(self, sid: str, request: ErrorSimulation, *, may_monitor: bool) -> ErrorSimulationAck:
        """Set the echo pipeline's failure rules of one stream (another connection's needs `may_monitor`), or of
        every stream of the connection."""
        simulator = self.host.features.error_simulator
        assert simulator is not None  # the transport refuses the request first
        if request.stream_id is not None:
            if self.owned(sid, request.stream_id) is None and not may_monitor:
                message = f"stream {request.stream_id!r} is not this connection's (needs the monitor key)"
                await self.outbox.error(sid, ErrorCode.UNAUTHORIZED, message, stream_id=request.stream_id,
                                        stage="monitor")  # fmt: skip
                return ErrorSimulationAck(status="rejected", rules_count=0, message=message)
            targets = [request.stream_id]
        elif not (targets := [s.stream_id for s in self.of_connection(sid)]):
            message = "cannot configure error simulation: no stream on this connection (send stream:init first)"
            await self.outbox.error(sid, ErrorCode.STREAM_NOT_FOUND, message)
            return ErrorSimulationAck(status="rejected", rules_count=0, message=message)
        for stream_id in targets:
            simulator.configure(stream_id, request)
        log.info("error simulation for %s: enabled=%s, %d rule(s)", targets, request.enabled, len(request.rules))
        return ErrorSimulationAck(status="accepted", rules_count=len(request.rules))
