"""The Socket.IO handlers of the STS: each reads its payload and hands it on (admission, streams, fragments).

Missing payloads become None, extra arguments are ignored, and a bug in a handler answers INTERNAL_ERROR to that
client instead of vanishing into the Socket.IO task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from pydantic import ValidationError

from livedub.protocol import (
    ErrorCode,
    ErrorEvent,
    ErrorSeverity,
    ErrorSimulation,
    ErrorSimulationAck,
    EventName,
    FragmentAck,
    MonitorSubscribe,
    StreamControl,
    StreamInit,
)
from livedub.sts import access
from livedub.sts.admission import Refused, admit, raw_str, validation_summary
from livedub.sts.fragments import FragmentFlow
from livedub.sts.metrics import StsMetrics
from livedub.sts.outbox import MONITOR_ALL_ROOM, Outbox, monitor_room
from livedub.sts.session import StreamSession
from livedub.sts.settings import StsSettings
from livedub.sts.streams import StreamDesk

log = logging.getLogger(__name__)

Handler = Callable[[str, Any], Awaitable[Any]]


class SocketTransport:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        settings: StsSettings,
        metrics: StsMetrics,
        desk: StreamDesk,
        flow: FragmentFlow,
    ) -> None:
        self.sio, self.settings, self.metrics, self.desk, self.flow = sio, settings, metrics, desk, flow
        self.outbox: Outbox = desk.outbox
        self._peers: dict[str, access.Peer] = {}

    def register(self) -> None:
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

    def _guarded(self, event: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(handler)
        async def guarded(sid: str, data: Any = None, *_extra: Any) -> Any:
            try:
                return await handler(sid, data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("handler of %s failed", event)
                await self.outbox.error(
                    sid, ErrorCode.INTERNAL_ERROR, f"{event}: {type(exc).__name__}: {exc}",
                    stream_id=raw_str(data, "stream_id"), fragment_id=raw_str(data, "fragment_id"), stage="server",
                )  # fmt: skip
                return None

        return guarded

    # ------------------------------------------------------------ connection

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        peer = access.peer_of(environ, auth)
        if not access.may_connect(self.settings.api_key, peer):
            self.metrics.errors.labels(stage="connect", code=ErrorCode.UNAUTHORIZED.value).inc()
            log.warning("refused connection %s: missing or wrong API key", sid)
            refusal = ErrorEvent(
                code=ErrorCode.UNAUTHORIZED, message="missing or invalid API key", severity=ErrorSeverity.FATAL
            )
            raise socketio.exceptions.ConnectionRefusedError(ErrorCode.UNAUTHORIZED.value, refusal.to_wire())
        self._peers[sid] = peer
        self.metrics.connected_clients.inc()

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.metrics.connected_clients.dec()
        self._peers.pop(sid, None)
        self.desk.connection_gone(sid, reason)

    async def _on_unknown_event(self, event: str, sid: str, *_args: Any) -> None:
        message = f"unknown event {event!r}"
        await self.outbox.error(sid, ErrorCode.INVALID_EVENT, message, severity=ErrorSeverity.WARNING)

    def _may_monitor(self, sid: str, key: str | None) -> bool:
        settings = self.settings
        peer = self._peers.get(sid)
        return access.may_monitor(peer, monitor_key=settings.monitor_key, api_key=settings.api_key, key=key)

    # ------------------------------------------------------------ streams

    async def _on_stream_init(self, sid: str, data: Any) -> None:
        if not isinstance(data, dict):
            await self.outbox.error(sid, ErrorCode.INVALID_CONFIG, "stream:init payload must be an object")
            return
        try:
            init = StreamInit.model_validate(data)
        except ValidationError as exc:
            message = f"invalid stream:init: {validation_summary(exc)}"
            await self.outbox.error(sid, ErrorCode.INVALID_CONFIG, message, stream_id=raw_str(data, "stream_id"))
            return
        await self.desk.open(sid, init)

    async def _on_fragment_data(self, sid: str, data: Any) -> None:
        # Everything up to the fragment's acceptance runs without awaiting: Socket.IO starts one task per event in
        # arrival order, so fragments are accepted in the order they were sent.
        arrived_at = time.monotonic()  # the fragment's deadline counts from here
        decision = admit(
            data,
            functools.partial(self.desk.owned, sid),
            max_fragment_bytes=self.settings.max_fragment_bytes,
            mirrors_audio=self.desk.host.features.mirrors_audio,
        )
        if isinstance(decision, Refused):
            await self.outbox.send_error(sid, decision.event())
            if decision.charged_to is not None:
                await decision.charged_to.reject(decision.skip)
            return
        await self.flow.run(decision.session, decision.fragment, arrived_at)

    async def _on_stream_pause(self, sid: str, data: Any) -> None:
        if (session := await self._control_session(sid, data, EventName.STREAM_PAUSE)) is not None:
            session.pause()

    async def _on_stream_resume(self, sid: str, data: Any) -> None:
        if (session := await self._control_session(sid, data, EventName.STREAM_RESUME)) is not None:
            session.resume()

    async def _on_stream_end(self, sid: str, data: Any) -> None:
        if (session := await self._control_session(sid, data, EventName.STREAM_END)) is not None:
            await self.desk.end(session)

    async def _control_session(self, sid: str, data: Any, event: str) -> StreamSession | None:
        try:
            control = StreamControl.model_validate(data)
        except ValidationError as exc:
            message = f"invalid {event}: {validation_summary(exc)}"
            await self.outbox.error(sid, ErrorCode.INVALID_EVENT, message, stream_id=raw_str(data, "stream_id"))
            return None
        session = self.desk.owned(sid, control.stream_id)
        if session is None:
            message = f"stream {control.stream_id!r} is not initialised on this connection"
            await self.outbox.error(sid, ErrorCode.STREAM_NOT_FOUND, message, stream_id=control.stream_id)
        return session

    # ------------------------------------------------------------ monitors, acks, error simulation

    async def _on_monitor_subscribe(self, sid: str, data: Any) -> dict[str, Any] | None:
        try:
            request = MonitorSubscribe.model_validate(data if data is not None else {})
        except ValidationError as exc:
            await self.outbox.error(
                sid, ErrorCode.INVALID_EVENT, f"invalid monitor:subscribe: {validation_summary(exc)}"
            )
            return None
        if not self._may_monitor(sid, request.key):
            log.warning("refused monitor:subscribe from %s: no monitor key", sid)
            message = (
                "monitor:subscribe needs the monitor key (STS_MONITOR_KEY) or the API key; with neither configured, "
                "only local (loopback) connections may monitor"
            )
            await self.outbox.error(sid, ErrorCode.UNAUTHORIZED, message, stream_id=request.stream_id, stage="monitor")
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
            message = f"invalid fragment:ack: {validation_summary(exc)}"
            await self.outbox.error(sid, ErrorCode.INVALID_EVENT, message, severity=ErrorSeverity.WARNING)
            return
        log.debug("connection %s: fragment %s %s", sid, ack.fragment_id, ack.status)

    async def _on_error_simulation(self, sid: str, data: Any) -> dict[str, Any]:
        """`config:error_simulation` (echo pipeline only): answered by `config:error_simulation:ack` (also returned as
        the Socket.IO acknowledgement)."""
        ack = await self._configure_error_simulation(sid, data)
        await self.sio.emit(EventName.CONFIG_ERROR_SIMULATION_ACK, ack.to_wire(), to=sid)
        return ack.to_wire()

    async def _configure_error_simulation(self, sid: str, data: Any) -> ErrorSimulationAck:
        await self.desk.host.built.wait()
        if self.desk.host.features.error_simulator is None:
            message = (
                "config:error_simulation is offered by the echo pipeline only (STS_PIPELINE=echo); this STS runs "
                f"the {self.settings.pipeline} pipeline, whose dubs are never failed on purpose"
            )
            await self.outbox.error(sid, ErrorCode.INVALID_CONFIG, message, stream_id=raw_str(data, "stream_id"))
            return ErrorSimulationAck(status="rejected", rules_count=0, message=message)
        try:
            request = ErrorSimulation.model_validate(data)
        except ValidationError as exc:
            message = f"invalid configuration: {validation_summary(exc)}"
            return ErrorSimulationAck(status="rejected", rules_count=0, message=message)
        return await self.desk.simulate_errors(sid, request, may_monitor=self._may_monitor(sid, None))
