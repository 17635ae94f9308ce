"""What the STS sends: each event to its client and a copy to the monitors of its stream, and `error` events."""

from __future__ import annotations

import logging
from typing import Any

import socketio

from livedub.protocol import ErrorCode, ErrorEvent, ErrorSeverity, EventName
from livedub.sts.metrics import StsMetrics
from livedub.sts.session import EmitFn

log = logging.getLogger(__name__)

MONITOR_ALL_ROOM = "monitor:*"
# Room for the monitors of one stream; stream ids are free text, the prefix keeps them apart from sids.
MONITOR_ROOM_PREFIX = "monitor:stream:"


def monitor_room(stream_id: str) -> str:
    """The room a stream's events are copied to (see `monitor:subscribe` in docs/protocol.md)."""
    return MONITOR_ROOM_PREFIX + stream_id


class Outbox:
    def __init__(self, sio: socketio.AsyncServer, metrics: StsMetrics) -> None:
        self.sio = sio
        self.metrics = metrics

    async def emit(self, event: str, payload: dict[str, Any], *, sid: str, stream_id: str | None = None) -> None:
        """Send to the client, plus a copy to the monitors of `stream_id` (one copy per socket)."""
        rooms = [sid]
        if stream_id is not None:
            rooms += [monitor_room(stream_id), MONITOR_ALL_ROOM]
        await self.sio.emit(event, payload, to=rooms)

    def to_stream(self, sid: str, stream_id: str) -> EmitFn:
        """What a session emits with: to its client and the stream's monitors."""

        async def emit(event: str, payload: dict[str, Any]) -> None:
            await self.emit(event, payload, sid=sid, stream_id=stream_id)

        return emit

    async def error(
        self,
        sid: str,
        code: ErrorCode,
        message: str,
        *,
        stream_id: str | None = None,
        fragment_id: str | None = None,
        severity: ErrorSeverity = ErrorSeverity.ERROR,
        stage: str = "protocol",
    ) -> None:
        event = ErrorEvent(
            code=code, message=message, severity=severity, retryable=False, stream_id=stream_id, fragment_id=fragment_id
        )
        await self.send_error(sid, event, stage=stage)

    async def send_error(self, sid: str, event: ErrorEvent, *, stage: str = "protocol") -> None:
        """`error` to the client (and the monitors of its stream), counted by stage and code."""
        self.metrics.errors.labels(stage=stage, code=event.code.value).inc()
        log.info(
            "error %s to %s (stream %s, fragment %s): %s",
            event.code.value, sid, event.stream_id, event.fragment_id, event.message,
        )  # fmt: skip
        await self.emit(EventName.ERROR, event.to_wire(), sid=sid, stream_id=event.stream_id)
