"""`livedub media`: the media-service HTTP API (FastAPI, port 8080).

- `GET /health`: status, worker count, STS reachability.
- `GET /metrics`: Prometheus exposition of `livedub.media.metrics`.
- `GET /v1/streams`: one entry per worker (state, lag, fragments, STS session).
- `POST /v1/nginx/on_publish`, `/v1/nginx/on_publish_done`: nginx-rtmp `on_publish*` callbacks (form-encoded).
  2xx lets the publisher in, 403 refuses it (bad key, stream limit, unexpected name).
- `POST /v1/mediamtx/events/ready`, `/v1/mediamtx/events/not-ready`: MediaMTX `runOnReady`/`runOnNotReady`
  hooks (JSON, see `MediaMtxEvent`).
- `POST /v1/mediamtx/auth`: MediaMTX `authHTTPAddress` (publish key and stream limit, checked before publishing).
- `GET /ui/`: the operator's page (media/service/operator.py); its controls need MONITOR_TOKEN.
- `GET /hls/<id>/master.m3u8` (and its playlists, segments, WebVTT), `GET /v1/streams/<id>/captions` and
  `/v1/streams/<id>/phrases` (server-sent events): the stream's outputs beside RTMP (media/service/outputs_http.py).

Access (access.py): hooks only from loopback or with MEDIA_HOOK_SECRET; /v1/streams and /metrics from loopback
or with MEDIA_API_TOKEN; /health open. The service binds loopback unless `--public`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from livedub.media.service import operator, outputs_http
from livedub.media.service.access import HOOK_SECRET_HEADER, HOOK_SECRET_PARAM, ApiAccess, PublishPolicy
from livedub.media.service.app_state import MediaAppState, install_state
from livedub.media.service.hooks import StreamName, StreamRole, key_from_query, parse_stream_name
from livedub.media.service.manager import WorkerManager
from livedub.media.settings import MediaSettings
from livedub.media.sts_link.sts_pool import StsPoolMonitor
from livedub.media.sts_link.sts_probe import StsProbe
from livedub.mediaserver.stat import parse_rtmp_stat

log = logging.getLogger(__name__)


class MediaMtxEvent(BaseModel):
    """Body of the MediaMTX hooks, built by curl from MediaMTX's environment (deploy/mediamtx.yml).

    `{"path": "$MTX_PATH", "source_type": "$MTX_SOURCE_TYPE", "source_id": "$MTX_SOURCE_ID", "query": "$MTX_QUERY"}`;
    camelCase names (`sourceType`, `sourceId`) are accepted too.
    """

    model_config = ConfigDict(extra="allow")

    path: str
    source_type: str = Field("", validation_alias=AliasChoices("source_type", "sourceType"))
    source_id: str = Field("", validation_alias=AliasChoices("source_id", "sourceId"))
    query: str = ""


class MediaMtxAuthRequest(BaseModel):
    """Body MediaMTX posts to `authHTTPAddress`."""

    model_config = ConfigDict(extra="allow")

    action: str
    path: str = ""
    ip: str = ""
    user: str = ""
    password: str = ""
    query: str = ""
    protocol: str = ""
    id: str | None = None


def _refused(reason: str, status_code: int = 403, **extra: Any) -> JSONResponse:
    return JSONResponse({"allowed": False, "reason": reason, **extra}, status_code=status_code)


def player_joined(stat_xml: str, application: str, stream_name: str) -> bool:
    """Whether nginx-rtmp's /stat lists a livedub worker playing `application/stream_name` (other players, such as
    viewers of the original, do not count)."""
    try:
        stream = parse_rtmp_stat(stat_xml, application).get(stream_name)
    except ElementTree.ParseError:
        return False
    return stream is not None and stream.worker_players > 0


async def wait_for_player(stat_url: str, application: str, stream_name: str, timeout_s: float) -> bool:
    """Poll /stat until the worker's ingest has issued `play` (or the timeout passes)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get(stat_url)
                if player_joined(response.text, application, stream_name):
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    return False


def _allowed(reason: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"allowed": True, "reason": reason, **extra})


async def _form(request: Request) -> dict[str, str]:
    """nginx-rtmp posts application/x-www-form-urlencoded; the publish URL's query arrives as extra fields."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


class PublishHooks:
    """The media server's publish hooks (nginx-rtmp and MediaMTX): who may publish, and which worker starts or
    stops."""

    def __init__(self, settings: MediaSettings, manager: WorkerManager) -> None:
        self.settings = settings
        self.manager = manager
        self.policy = PublishPolicy(settings.publish_key)

    def worker_active(self, stream_id: str) -> bool:
        handle = self.manager.get(stream_id)
        return handle is not None and handle.active

    async def admit(self, name: StreamName, addr: str, key: str | None, source: str) -> JSONResponse:
        decision = self.policy.authorize(name, addr, key, own_worker_active=self.worker_active(name.stream_id))
        if not decision.allowed:
            log.warning("refused publish of %s/%s from %s: %s", name.stream_id, name.role, addr, decision.reason)
            return _refused(decision.reason, stream_id=name.stream_id)
        if name.role is StreamRole.OUTPUT:
            return _allowed(decision.reason, stream_id=name.stream_id)  # our own publisher: nothing to start
        started = await self.manager.start_stream(name.stream_id, source=source)
        if not started.accepted:
            return _refused(started.reason, stream_id=name.stream_id)
        if source == "nginx" and self.settings.publish_join_wait_ms:
            await self._wait_for_worker_to_play(name.stream_id)
        return _allowed(started.reason, stream_id=name.stream_id)

    async def _wait_for_worker_to_play(self, stream_id: str) -> None:
        """nginx-rtmp holds the publisher until its hook answers and has no GOP cache: a worker that joins after the
        first packets loses everything up to the next keyframe. The hook answers once the worker is playing."""
        wait_ms = self.settings.publish_join_wait_ms
        joined = await wait_for_player(self.settings.media_server_stat_url, "live", f"{stream_id}/in", wait_ms / 1000)
        if not joined:
            log.warning("worker for %s not listed as a player within %d ms", stream_id, wait_ms)

    async def unpublished(self, name: StreamName | None) -> JSONResponse:
        """A publisher left: stop the worker of an input stream."""
        if name is not None and name.role is StreamRole.INPUT:
            stopped = await self.manager.stop_stream(name.stream_id)
            return JSONResponse({"stream_id": name.stream_id, "stopped": stopped})
        return JSONResponse({"stopped": False})

    async def mediamtx_ready(self, event: MediaMtxEvent) -> JSONResponse:
        name = parse_stream_name(event.path)
        if name is None:
            return _refused(f"unexpected path {event.path!r}: publish to live/<id>/in", status_code=400)
        if name.role is StreamRole.OUTPUT:
            return _allowed("output path: nothing to start", stream_id=name.stream_id)
        # MediaMTX already authenticated the publisher through /v1/mediamtx/auth.
        started = await self.manager.start_stream(name.stream_id, source=f"mediamtx:{event.source_type}")
        if not started.accepted:
            return _refused(started.reason, stream_id=name.stream_id)
        return _allowed(started.reason, stream_id=name.stream_id)

    def mediamtx_auth(self, auth: MediaMtxAuthRequest) -> JSONResponse:
        if auth.action != "publish":
            return _allowed(f"{auth.action} is not restricted")
        name = parse_stream_name(auth.path)
        if name is None:
            return _refused(f"unexpected path {auth.path!r}: publish to live/<id>/in")
        key = key_from_query(auth.query) or auth.password or None
        decision = self.policy.authorize(name, auth.ip, key, own_worker_active=self.worker_active(name.stream_id))
        if not decision.allowed:
            return _refused(decision.reason, stream_id=name.stream_id)
        if name.role is StreamRole.INPUT and not self.worker_active(name.stream_id):
            if self.manager.active_count() >= self.manager.max_streams:
                return _refused(f"stream limit reached ({self.manager.max_streams} concurrent streams)")
        return _allowed(decision.reason, stream_id=name.stream_id)


def add_hook_routes(app: FastAPI, hooks: PublishHooks) -> None:
    """`/v1/nginx/on_publish*` (form-encoded) and `/v1/mediamtx/*` (JSON). On the app itself, not an included
    router: FastAPI lists an included router as one opaque entry of `app.routes`."""

    @app.post("/v1/nginx/on_publish")
    async def nginx_on_publish(request: Request) -> JSONResponse:
        form = await _form(request)
        name = parse_stream_name(form.get("name", ""))
        if name is None or form.get("app", "live") != "live":
            return _refused(f"unexpected stream {form.get('app')}/{form.get('name')}: publish to live/<id>/in")
        key = form.get("key") or key_from_query(form.get("args", ""))
        return await hooks.admit(name, form.get("addr", ""), key, source="nginx")

    @app.post("/v1/nginx/on_publish_done")
    async def nginx_on_publish_done(request: Request) -> JSONResponse:
        form = await _form(request)
        return await hooks.unpublished(parse_stream_name(form.get("name", "")))

    @app.post("/v1/mediamtx/events/ready")
    async def mediamtx_ready(event: MediaMtxEvent) -> JSONResponse:
        return await hooks.mediamtx_ready(event)

    @app.post("/v1/mediamtx/events/not-ready")
    async def mediamtx_not_ready(event: MediaMtxEvent) -> JSONResponse:
        return await hooks.unpublished(parse_stream_name(event.path))

    @app.post("/v1/mediamtx/auth")
    async def mediamtx_auth(auth: MediaMtxAuthRequest) -> JSONResponse:
        return hooks.mediamtx_auth(auth)


def add_service_routes(app: FastAPI, state: MediaAppState, sts_probe: StsProbe) -> None:
    """`/health`, `/metrics`, `/v1/streams` (on the app itself, as the hooks)."""
    manager = state.manager

    @app.get("/health")
    async def health() -> dict[str, Any]:
        sts = await sts_probe.check()
        streams = manager.list_streams()
        sts["connected_streams"] = sum(1 for s in streams if (s.get("sts") or {}).get("ready"))
        return {
            # Without STS the service still works (original audio passes through): degraded, not down.
            "status": "ok" if sts.get("ready") else "degraded",
            "workers": {"active": manager.active_count(), "max": manager.max_streams, "listed": len(streams)},
            "sts": sts,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(manager.metrics_view), media_type=CONTENT_TYPE_LATEST)  # type: ignore[arg-type]

    @app.get("/v1/streams")
    async def streams() -> dict[str, Any]:
        listed = manager.list_streams()
        return {
            "streams": listed,
            "max_concurrent_streams": manager.max_streams,
            "sts_endpoints": state.sts_pool.snapshot(listed),  # placement, health and load of each STS endpoint
        }


RequestHandler = Callable[[Request], Awaitable[Response]]


def access_guard(access: ApiAccess) -> Callable[[Request, RequestHandler], Awaitable[Response]]:
    """The HTTP middleware that applies media/service/access.py's rule to every request."""

    async def guard(request: Request, call_next: RequestHandler) -> Response:
        client_host = request.client.host if request.client else ""
        decision = access.check(
            request.url.path,
            client_host,
            hook_secret=request.headers.get(HOOK_SECRET_HEADER) or request.query_params.get(HOOK_SECRET_PARAM),
            authorization=request.headers.get("authorization"),
        )
        if decision.allowed:
            return await call_next(request)
        log.warning("refused %s %s from %s: %s", request.method, request.url.path, client_host, decision.reason)
        headers = {"WWW-Authenticate": "Bearer"} if decision.status_code == 401 else None
        return JSONResponse({"detail": decision.reason}, status_code=decision.status_code, headers=headers)

    return guard


def lifespan_of(state: MediaAppState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Poll the STS endpoints while the app runs; stop every worker when it ends."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        polling = await state.sts_pool.start()
        yield
        if polling:
            await state.sts_pool.stop()
        await state.manager.shutdown()

    return lifespan


def create_app(settings: MediaSettings | None = None, manager: WorkerManager | None = None) -> FastAPI:
    settings = settings or MediaSettings()
    manager = manager or WorkerManager(settings)
    sts_pool = StsPoolMonitor.from_env(settings.sts_service_url, manager.metrics.registry)
    state = MediaAppState(settings=settings, manager=manager, sts_pool=sts_pool)
    app = FastAPI(title="livedub media-service", lifespan=lifespan_of(state))
    install_state(app, state)
    app.middleware("http")(
        access_guard(ApiAccess(settings.media_hook_secret, settings.media_api_token, settings.monitor_token))
    )
    app.include_router(operator.router)
    app.include_router(outputs_http.router)
    add_service_routes(app, state, StsProbe(settings.sts_service_url))
    add_hook_routes(app, PublishHooks(settings, manager))
    return app


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="livedub media", description="Run the media-service (workers + HTTP API).")
    parser.add_argument("--host", help="bind address (default MEDIA_HOST or 127.0.0.1)")
    parser.add_argument(
        "--public",
        action="store_true",
        help="bind 0.0.0.0 (hooks from other hosts need MEDIA_HOOK_SECRET, /v1/streams and /metrics MEDIA_API_TOKEN)",
    )
    parser.add_argument("--port", type=int, help="HTTP port (default MEDIA_PORT or 8080)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = MediaSettings()
    host = args.host or ("0.0.0.0" if args.public else settings.media_host)
    port = args.port or settings.media_port
    print(f"media-service on http://{host}:{port} (STS {settings.sts_service_url})", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
