"""Events that cross STS replicas go through Redis (issue 12): `REDIS_URL` set -> python-socketio's
`AsyncRedisManager`, else the in-process manager (None here).

What must cross: the monitor rooms. A monitor connected to replica 1 subscribes to `monitor:stream:<id>` (or
`monitor:*`); the stream may live on replica 2, whose emits to that room reach replica 1 through Redis. Everything
else stays local: a worker's own events go straight to its socket (it is connected to the replica that serves it),
so a slow or absent Redis never delays a dub, and the dub audio is published only when a monitor room is named.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import socketio
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from socketio.packet import Packet

log = logging.getLogger(__name__)

# Redis connection options: a Redis that does not answer must not hold an emit for long (it is awaited after the
# local delivery, but it holds the handler that emitted).
REDIS_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0, "health_check_interval": 15}


class FanoutSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    redis_url: str = Field(
        "",
        validation_alias="REDIS_URL",
        description="Redis shared by the STS replicas (`redis://host:6379/0`): monitors see every replica's streams."
        " Empty: one replica, events stay in process.",
    )
    redis_channel: str = Field(
        "livedub-sts",
        validation_alias="REDIS_CHANNEL",
        description="Redis pub/sub channel of the STS replicas (the same in all of them).",
    )


class LocalFirstRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """`AsyncRedisManager` that delivers to local sockets itself and publishes only the rooms that may have
    members elsewhere (anything but the sid of a socket connected here)."""

    name = "livedub-redis"

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if kwargs.get("ignore_queue") or callback is not None or room is None:
            # Broadcasts and callbacks: the base class's way (every host, acks routed back through Redis).
            await super().emit(
                event, data, namespace=namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        namespace = namespace or "/"
        rooms = [room] if isinstance(room, str) else list(room)
        await super().emit(event, data, namespace=namespace, room=rooms, skip_sid=skip_sid, ignore_queue=True)
        remote = [r for r in rooms if not self.is_connected(r, namespace)]
        if remote:
            await self._publish(_emit_message(event, data, namespace, remote, skip_sid, self.host_id))


def _emit_message(
    event: str, data: Any, namespace: str, rooms: list[str], skip_sid: Any, host_id: str
) -> dict[str, Any]:
    """The message `AsyncPubSubManager.emit` publishes (same fields, so every replica's listener handles it)."""
    args = list(data) if isinstance(data, tuple) else [data]
    binary = Packet.data_is_binary(args)
    if binary:
        args, attachments = Packet.deconstruct_binary(args)
        args = [args, *[base64.b64encode(a).decode() for a in attachments]]
    return {
        "method": "emit",
        "event": event,
        "data": args,
        "binary": binary,
        "namespace": namespace,
        "room": rooms,
        "skip_sid": skip_sid,
        "callback": None,
        "host_id": host_id,
    }


def client_manager(settings: FanoutSettings | None = None) -> socketio.AsyncRedisManager | None:
    """The Socket.IO client manager for the STS server: Redis when `REDIS_URL` is set, else None (in process)."""
    settings = settings or FanoutSettings()
    if not settings.redis_url:
        return None
    log.info("STS events fan out through Redis (channel %s)", settings.redis_channel)
    return LocalFirstRedisManager(settings.redis_url, channel=settings.redis_channel, redis_options=dict(REDIS_OPTIONS))
