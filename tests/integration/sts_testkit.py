"""Helpers for the STS server tests: an in-process uvicorn server on a free port, and a recording Socket.IO client."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import socketio
from media_testkit import serve_asgi

from livedub.sts.processor import FragmentProcessor
from livedub.sts.server import StsServer, create_app
from livedub.sts.settings import StsSettings

Payload = dict[str, Any]


def isolated_settings(**overrides: Any) -> StsSettings:
    """Settings independent of the caller's environment and .env file."""
    base = StsSettings(_env_file=None)  # type: ignore[call-arg]
    return base.model_copy(update={"api_key": "", "worker_threads": 1, **overrides})


@dataclass
class RunningServer:
    url: str
    server: StsServer


@asynccontextmanager
async def running_server(
    processor: FragmentProcessor, *, gap_timeout_s: float = 1.0, **settings: Any
) -> AsyncIterator[RunningServer]:
    app = create_app(processor, isolated_settings(**settings), gap_timeout_s=gap_timeout_s)
    async with serve_asgi(app) as url:
        yield RunningServer(url, app.sts_server)


class Recorder:
    """A Socket.IO client that keeps every event it receives, in order."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Payload]] = []
        self._changed = asyncio.Event()

        @self.sio.on("*")
        async def record(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            self._changed.set()

        @self.sio.on("connect_error")
        async def refused(data: Any = None) -> None:
            self.events.append(("connect_error", data))

    async def connect(self, url: str, **kwargs: Any) -> Recorder:
        await self.sio.connect(url, transports=["websocket"], wait_timeout=10, **kwargs)
        return self

    async def close(self) -> None:
        await self.sio.disconnect()

    async def emit(self, event: str, data: Any) -> None:
        await self.sio.emit(event, data)

    def of(self, event: str, stream_id: str | None = None) -> list[Payload]:
        return [p for e, p in self.events if e == event and (stream_id is None or p.get("stream_id") == stream_id)]

    async def wait_for(self, predicate: Callable[[list[tuple[str, Payload]]], Any], within_s: float = 20.0) -> Any:
        """Wait until `predicate(events)` is truthy; return its value."""
        async with asyncio.timeout(within_s):
            while not (result := predicate(self.events)):
                self._changed.clear()
                await self._changed.wait()
        return result

    async def next_event(self, event: str, after: int, within_s: float = 20.0, **match: Any) -> Payload:
        """The first `event` received at index >= `after` whose fields equal `match`."""

        def find(events: list[tuple[str, Payload]]) -> Payload | None:
            for name, payload in events[after:]:
                if name == event and all(payload.get(k) == v for k, v in match.items()):
                    return payload
            return None

        return await self.wait_for(find, within_s)

    async def count(self, event: str, n: int, within_s: float = 30.0, stream_id: str | None = None) -> list[Payload]:
        return await self.wait_for(lambda _: len(got := self.of(event, stream_id)) >= n and got, within_s)


def pcm_fragment(
    stream_id: str,
    seq: int,
    *,
    pcm: bytes = b"\x00\x10" * 1600,
    metadata: Payload | None = None,
    fragment_id: str | None = None,
    audio_format: str = "pcm_s16le",
) -> Payload:
    """A fragment:data payload (0.1 s of 16 kHz mono by default)."""
    payload: Payload = {
        "fragment_id": fragment_id or f"{stream_id}-{seq}",
        "stream_id": stream_id,
        "sequence_number": seq,
        "timestamp": 0,
        "audio": {
            "format": audio_format,
            "sample_rate_hz": 16000,
            "channels": 1,
            "duration_ms": len(pcm) / 32.0,
            "data_base64": base64.b64encode(pcm).decode("ascii"),
        },
    }
    if metadata is not None:
        payload["metadata"] = metadata
    return payload


def init_payload(stream_id: str, **config: Any) -> Payload:
    return {
        "stream_id": stream_id,
        "worker_id": "test-worker",
        "config": {
            "source_language": "en",
            "target_language": "es",
            "format": "pcm_s16le",
            "sample_rate_hz": 16000,
            "channels": 1,
            **config,
        },
    }
