"""The STS Socket.IO service: python-socketio `AsyncServer` (ASGI) + FastAPI (`/health`, `/metrics`) under uvicorn.

Event names and payloads are exactly the models of `livedub.protocol`; see docs/protocol.md.
Inference runs on a bounded set of threads, never on the event loop, most urgent fragment first and fairly across
streams (see scheduler.py). Socket.IO is served at `/socket.io` (the seed servers' path) and `/ws/sts` (spec 016's).

The parts: `transport` (the Socket.IO handlers), `admission` (whether a fragment is accepted, a pure function),
`streams` (sessions opened, ended, dropped), `fragments` (an accepted fragment to its answers), `replies` (the one
builder of `fragment:processed`), `host` (the processor, its loading and features), `access`, `outbox`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import socketio
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from livedub.sts.fanout import client_manager
from livedub.sts.fragments import FragmentFlow
from livedub.sts.host import ProcessorHost
from livedub.sts.metrics import METRICS_CONTENT_TYPE, StsMetrics
from livedub.sts.outbox import MONITOR_ALL_ROOM as MONITOR_ALL_ROOM
from livedub.sts.outbox import Outbox
from livedub.sts.outbox import monitor_room as monitor_room
from livedub.sts.processor import FragmentProcessor
from livedub.sts.scheduler import DeadlineRunner
from livedub.sts.session import DEFAULT_GAP_TIMEOUT_S, StreamSession
from livedub.sts.settings import StsSettings
from livedub.sts.streams import StreamDesk
from livedub.sts.transport import SocketTransport

log = logging.getLogger(__name__)

_JSON_ENVELOPE_BYTES = 64 * 1024
# Socket.IO paths served: the seed servers' default, and spec 016's.
SOCKETIO_PATH = "socket.io"
SPEC_SOCKETIO_PATH = "ws/sts"


def engineio_buffer_bytes(max_fragment_bytes: int) -> int:
    """Largest Engine.IO message accepted. Twice the base64 size of the largest fragment, so that a fragment a bit
    over the limit still arrives and gets a polite PAYLOAD_TOO_LARGE instead of a dropped connection."""
    return 2 * math.ceil(max_fragment_bytes * 4 / 3) + _JSON_ENVELOPE_BYTES


class StsServer:
    """The STS's parts, put together: the processor's host, the inference pool, the streams, the handlers."""

    def __init__(
        self,
        settings: StsSettings,
        *,
        processor: FragmentProcessor | None = None,
        processor_factory: Callable[[], FragmentProcessor] | None = None,
        metrics: StsMetrics | None = None,
        gap_timeout_s: float = DEFAULT_GAP_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or StsMetrics()
        self.runner = DeadlineRunner(settings.worker_threads)
        self.host = ProcessorHost(processor, processor_factory, self.runner, self.metrics)
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=client_manager(),  # Redis (REDIS_URL): monitors see streams on every replica
            max_http_buffer_size=engineio_buffer_bytes(settings.max_fragment_bytes),
            logger=False,
            engineio_logger=False,
        )
        outbox = Outbox(self.sio, self.metrics)
        self.streams = StreamDesk(settings, host=self.host, runner=self.runner, outbox=outbox, metrics=self.metrics,
                                  gap_timeout_s=gap_timeout_s, disconnect=self.sio.disconnect)  # fmt: skip
        flow = FragmentFlow(self.runner, outbox, self.host)
        SocketTransport(self.sio, settings, self.metrics, self.streams, flow).register()
        self._startup: asyncio.Task[None] | None = None

    @property
    def sessions(self) -> dict[str, StreamSession]:
        return self.streams.sessions

    async def start(self) -> None:
        self._startup = asyncio.get_running_loop().create_task(self.host.load_and_warm_up())

    async def stop(self) -> None:
        if self._startup is not None:
            self._startup.cancel()
        self.host.release_waiters()
        self.streams.stop()
        self.runner.shutdown()

    def health(self) -> tuple[int, dict[str, Any]]:
        host = self.host
        if not host.ready or host.processor is None:
            body: dict[str, Any] = {"status": "failed" if host.startup_error else "loading"}
            if host.startup_error:
                body["error"] = host.startup_error
            return 503, body
        from livedub.dubbing.device import placements  # each loaded model's device, and why (a fallback's reason)

        return 200, {
            "status": "ok",
            "models": host.processor.describe(),
            "devices": placements(),
            "pipeline": self.settings.pipeline,
            "worker_threads": self.runner.workers,
            "active_sessions": len(self.sessions),
            "fragments_inflight": sum(session.inflight for session in self.sessions.values()),
        }


def create_app(
    processor: FragmentProcessor | None,
    settings: StsSettings,
    *,
    processor_factory: Callable[[], FragmentProcessor] | None = None,
    metrics: StsMetrics | None = None,
    gap_timeout_s: float = DEFAULT_GAP_TIMEOUT_S,
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
