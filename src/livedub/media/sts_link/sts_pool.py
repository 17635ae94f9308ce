"""Several STS endpoints for one media-service: placement, stickiness, failover (issue 12).

`STS_SERVICE_URLS=http://sts-a:3000,http://sts-b:3000` (a single `STS_SERVICE_URL` still works). Each stream is
placed on the least loaded healthy endpoint (their `/health`: `active_sessions`, then `fragments_inflight`) and
stays there for its life, so its context lives in one place. When its endpoint dies (connection lost, connect or
`stream:init` refused), stops answering (its `/health` times out `STS_POOL_DOWN_AFTER` times in a row while
another endpoint is healthy) or keeps failing fragments (the circuit breaker opens), the stream is placed again on
another healthy endpoint; the worker plays the original audio meanwhile and the STS client sends `stream:init` to
the new endpoint, with no new publish.

The STS client sees one `StsEndpoint` per stream (`url()`, `report_ready()`, `report_failure()`, `wait_lost()`):
it never waits on a dead endpoint phrase after phrase, because a failure moves the stream at once.

Each worker process places its own stream from a fresh poll of every endpoint (so the counts are the STS's own,
across all media-services); ties go by a hash of the stream id, so streams started together spread out. The
media-service process runs a `StsPoolMonitor` for the per-endpoint metrics and the `sts_endpoints` of /v1/streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import weakref
import zlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)


class StsPoolSettings(BaseSettings):
    """The pool's own settings (the media-service's `MediaSettings` keep `STS_SERVICE_URL`)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    sts_service_urls: str = Field(
        "",
        validation_alias="STS_SERVICE_URLS",
        description="Comma-separated STS endpoints; each stream goes to the least loaded healthy one and moves when"
        " it fails. Empty: `STS_SERVICE_URL` alone.",
    )
    health_interval_ms: int = Field(
        1000,
        ge=100,
        validation_alias="STS_POOL_HEALTH_INTERVAL_MS",
        description="How often endpoints' /health is read.",
    )
    health_timeout_ms: int = Field(
        1500, ge=100, validation_alias="STS_POOL_HEALTH_TIMEOUT_MS", description="A /health slower than this failed."
    )
    down_after: int = Field(
        2,
        ge=1,
        validation_alias="STS_POOL_DOWN_AFTER",
        description="Failed /health in a row that move a stream off its endpoint (when another one is healthy).",
    )
    avoid_ms: int = Field(
        30000,
        ge=0,
        validation_alias="STS_POOL_AVOID_MS",
        description="After failing a stream, an endpoint gets it back only if no other one is healthy for this long.",
    )

    def urls(self, fallback: str) -> list[str]:
        urls = [u.strip().rstrip("/") for u in self.sts_service_urls.split(",") if u.strip()]
        return list(dict.fromkeys(urls)) or [fallback.rstrip("/")]


class EndpointState(IntEnum):
    """Values of the `media_service_sts_endpoint_state` gauge."""

    HEALTHY = 0
    LOADING = 1  # answers /health 503 while its models load: not placeable yet
    DOWN = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class EndpointHealth:
    url: str
    state: EndpointState
    sessions: int = 0
    inflight: int = 0
    worker_threads: int | None = None
    error: str | None = None
    checked_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state.name.lower(),
            "sessions": self.sessions,
            "fragments_inflight": self.inflight,
            "worker_threads": self.worker_threads,
            "error": self.error,
        }


async def check_health(
    client: httpx.AsyncClient, url: str, clock: Callable[[], float] = time.monotonic
) -> EndpointHealth:
    """One `GET <url>/health`; every way of failing is a DOWN with its reason."""
    try:
        response = await client.get(url + "/health")
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return EndpointHealth(url, EndpointState.DOWN, error=f"{type(exc).__name__}: {exc}"[:200], checked_at=clock())
    if not isinstance(body, dict):
        return EndpointHealth(url, EndpointState.DOWN, error="health is not a JSON object", checked_at=clock())
    if response.status_code == 200 and body.get("status") == "ok":
        return EndpointHealth(
            url,
            EndpointState.HEALTHY,
            sessions=_count(body.get("active_sessions")),
            inflight=_count(body.get("fragments_inflight")),
            worker_threads=body.get("worker_threads") if isinstance(body.get("worker_threads"), int) else None,
            checked_at=clock(),
        )
    state = EndpointState.LOADING if body.get("status") == "loading" else EndpointState.DOWN
    return EndpointHealth(url, state, error=str(body.get("error") or body.get("status"))[:200], checked_at=clock())


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


async def check_all(client: httpx.AsyncClient, urls: Iterable[str]) -> list[EndpointHealth]:
    return list(await asyncio.gather(*(check_health(client, url) for url in urls)))


DNS_PREFIX = "dns+"


async def expand(urls: Iterable[str]) -> list[str]:
    """The endpoints now: `dns+http://sts-headless:3000` is every address the name resolves to (a Kubernetes headless
    Service lists its ready pods), read again at each call; other URLs as they are. A name that does not resolve
    gives none (the pool sees fewer endpoints, not an error)."""
    loop = asyncio.get_running_loop()
    found: list[str] = []
    for url in urls:
        if not url.startswith(DNS_PREFIX):
            found.append(url)
            continue
        parsed = httpx.URL(url[len(DNS_PREFIX) :])
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            infos = await loop.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("STS endpoints %s: %s", url, exc)
            continue
        for address in sorted({info[4][0] for info in infos}):
            host = f"[{address}]" if ":" in address else address
            found.append(f"{parsed.scheme}://{host}:{port}")
    return list(dict.fromkeys(found))


def is_dynamic(urls: list[str]) -> bool:
    return any(url.startswith(DNS_PREFIX) for url in urls)


def tie_break(stream_id: str, url: str) -> int:
    """Rendezvous hash: equal loads spread streams over endpoints the same way in every process."""
    return zlib.crc32(f"{stream_id}|{url}".encode())


def choose(stream_id: str, health: list[EndpointHealth], avoid: Collection[str] = ()) -> EndpointHealth | None:
    """Least loaded healthy endpoint (sessions, then fragments in flight), endpoints in `avoid` only if no other one
    is healthy; None when none is healthy."""
    healthy = [h for h in health if h.state is EndpointState.HEALTHY]
    preferred = [h for h in healthy if h.url not in avoid] or healthy
    if not preferred:
        return None
    return min(preferred, key=lambda h: (h.sessions, h.inflight, tie_break(stream_id, h.url)))


# ---------------------------------------------------------------------------------------------- metrics


class _StreamMetrics:
    """Per-stream counters, in the worker process's registry (label `stream_id`: the parent merges children)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        prefix = "media_service_worker_sts_endpoint_"
        self.placements = Counter(
            prefix + "placements",
            "Times the stream was placed on the endpoint",
            ["stream_id", "endpoint"],
            registry=registry,
        )
        self.failures = Counter(
            prefix + "failures",
            "Endpoint failures that moved the stream, by reason",
            ["stream_id", "endpoint", "reason"],
            registry=registry,
        )
        self.current = Gauge(
            prefix + "current", "1 for the endpoint the stream is on", ["stream_id", "endpoint"], registry=registry
        )


_STREAM_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _StreamMetrics] = weakref.WeakKeyDictionary()


def stream_metrics(registry: CollectorRegistry) -> _StreamMetrics:
    """One set per registry (prometheus_client refuses a second registration of a name)."""
    metrics = _STREAM_METRICS.get(registry)
    if metrics is None:
        metrics = _STREAM_METRICS[registry] = _StreamMetrics(registry)
    return metrics


# ---------------------------------------------------------------------------------------------- per stream


class StsEndpoint(Protocol):
    """What the STS client needs: where to connect, and what became of it."""

    async def url(self) -> str:
        """Where to connect now: placed on the first call and after a failure, the same URL otherwise."""
        ...

    def report_ready(self) -> None:
        """`stream:ready` arrived from `url()`."""
        ...

    def report_failure(self, reason: str) -> None:
        """`url()` failed the stream (connect, init, disconnected, circuit_open): the next `url()` moves it."""
        ...

    async def wait_lost(self) -> None:
        """Returns when the stream should leave its endpoint although the connection is up (found dead)."""
        ...

    def current(self) -> str | None: ...

    async def close(self) -> None: ...


class FixedEndpoint:
    """One STS URL (the seed's `STS_SERVICE_URL`): nothing to move to, so it is never lost."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def url(self) -> str:
        return self._url

    def report_ready(self) -> None:
        return None

    def report_failure(self, reason: str) -> None:
        return None

    async def wait_lost(self) -> None:
        await asyncio.Event().wait()

    def current(self) -> str | None:
        return self._url

    async def close(self) -> None:
        return None


class PooledEndpoint:
    """A stream's place in the pool: sticky, moved on failure, its own endpoint's /health watched meanwhile."""

    def __init__(
        self,
        stream_id: str,
        urls: list[str],
        settings: StsPoolSettings,
        registry: CollectorRegistry | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("no STS endpoint")
        self.stream_id = stream_id
        self.urls = urls
        self.settings = settings
        self._metrics = stream_metrics(registry) if registry is not None else None
        self._http = http
        self._own_http = http is None
        self._clock = clock
        self._current: str | None = None
        self._failed_at: dict[str, float] = {}
        self._lost = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._rotation = 0
        self.placements: list[str] = []  # every placement, in order (status, tests)

    def current(self) -> str | None:
        return self._current

    async def url(self) -> str:
        if self._current is not None and not self._lost.is_set():
            return self._current
        self._lost.clear()
        self._set_current(await self._place())
        assert self._current is not None
        return self._current

    def report_ready(self) -> None:
        if self._current is not None:
            self._failed_at.pop(self._current, None)
        self._start_watch()

    def report_failure(self, reason: str) -> None:
        if self._current is None or self._lost.is_set():
            return
        log.warning("[%s] STS endpoint %s failed (%s): placing the stream again", self.stream_id, self._current, reason)
        self._failed_at[self._current] = self._clock()
        if self._metrics is not None:
            self._metrics.failures.labels(stream_id=self.stream_id, endpoint=self._current, reason=reason).inc()
        self._lost.set()

    async def wait_lost(self) -> None:
        await self._lost.wait()

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self._http is not None and self._own_http:
            await self._http.aclose()
            self._http = None
        if self._metrics is not None and self._current is not None:
            self._metrics.current.labels(stream_id=self.stream_id, endpoint=self._current).set(0)

    def status(self) -> dict[str, Any]:
        return {"endpoint": self._current, "placements": list(self.placements)}

    # ------------------------------------------------------------------ placement

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.settings.health_timeout_ms / 1000)
        return self._http

    def _avoided(self) -> set[str]:
        now, window = self._clock(), self.settings.avoid_ms / 1000
        return {url for url, at in self._failed_at.items() if now - at < window}

    async def _place(self) -> str:
        urls = await expand(self.urls) or self.urls
        if len(urls) == 1:
            return urls[0]
        health = await check_all(self._client(), urls)
        chosen = choose(self.stream_id, health, self._avoided())
        if chosen is not None:
            return chosen.url
        # None healthy: loading ones first (they will be), else each in turn (a refused connect is quick).
        loading = [h.url for h in health if h.state is EndpointState.LOADING]
        candidates = loading or [u for u in urls if u != self._current] or urls
        self._rotation += 1
        return candidates[self._rotation % len(candidates)]

    def _set_current(self, url: str) -> None:
        if self._metrics is not None:
            if self._current is not None and self._current != url:
                self._metrics.current.labels(stream_id=self.stream_id, endpoint=self._current).set(0)
            self._metrics.current.labels(stream_id=self.stream_id, endpoint=url).set(1)
            self._metrics.placements.labels(stream_id=self.stream_id, endpoint=url).inc()
        if self._current != url:
            log.info("[%s] stream placed on STS endpoint %s", self.stream_id, url)
        self._current = url
        self.placements.append(url)

    # ------------------------------------------------------------------ watching the endpoint in use

    def _start_watch(self) -> None:
        if (len(self.urls) > 1 or is_dynamic(self.urls)) and (self._watch_task is None or self._watch_task.done()):
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(), name=f"sts-pool-{self.stream_id}")

    async def _watch(self) -> None:
        """A connected endpoint that stops answering (hung, partitioned) keeps its socket open for a long time:
        its /health tells sooner. Moves only when another endpoint is healthy (moving to nothing helps nobody)."""
        failures = 0
        interval = self.settings.health_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            url = self._current
            if url is None or self._lost.is_set():
                failures = 0
                continue
            health = await check_health(self._client(), url)
            failures = 0 if health.state is EndpointState.HEALTHY else failures + 1
            if failures < self.settings.down_after:
                continue
            others = await check_all(self._client(), [u for u in await expand(self.urls) if u != url])
            if url == self._current and any(h.state is EndpointState.HEALTHY for h in others):
                self.report_failure("health")
                failures = 0


def stream_endpoint(stream_id: str, fallback_url: str, registry: CollectorRegistry | None = None) -> StsEndpoint:
    """The endpoint object for a stream's STS client: pooled when `STS_SERVICE_URLS` names several."""
    settings = StsPoolSettings()
    urls = settings.urls(fallback_url)
    if len(urls) == 1 and not is_dynamic(urls):
        return FixedEndpoint(urls[0])
    return PooledEndpoint(stream_id, urls, settings, registry)


# ---------------------------------------------------------------------------------------------- media-service side


class _PoolMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        prefix = "media_service_sts_endpoint_"
        self.state = Gauge(prefix + "state", "0 healthy, 1 loading, 2 down, 3 unknown", ["endpoint"], registry=registry)
        self.sessions = Gauge(
            prefix + "sessions", "Stream sessions on the endpoint (all clients)", ["endpoint"], registry=registry
        )
        self.inflight = Gauge(
            prefix + "inflight", "Fragments in flight on the endpoint", ["endpoint"], registry=registry
        )
        self.streams = Gauge(
            prefix + "streams", "This service's streams placed on the endpoint", ["endpoint"], registry=registry
        )
        self.health_failures = Counter(
            prefix + "health_failures", "Failed /health checks of the endpoint", ["endpoint"], registry=registry
        )


_POOL_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _PoolMetrics] = weakref.WeakKeyDictionary()


class StsPoolMonitor:
    """The media-service's view of the pool: every endpoint's /health on a timer, metrics, /v1/streams section."""

    def __init__(self, urls: list[str], registry: CollectorRegistry, settings: StsPoolSettings | None = None) -> None:
        self.urls = urls  # as configured (`dns+` names included)
        self.settings = settings or StsPoolSettings()
        metrics = _POOL_METRICS.get(registry)
        if metrics is None:
            metrics = _POOL_METRICS[registry] = _PoolMetrics(registry)
        self.metrics = metrics
        self._health: dict[str, EndpointHealth] = {}
        self._failures: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._track([u for u in urls if not u.startswith(DNS_PREFIX)])

    @classmethod
    def from_env(cls, fallback_url: str, registry: CollectorRegistry) -> StsPoolMonitor:
        settings = StsPoolSettings()
        return cls(settings.urls(fallback_url), registry, settings)

    async def start(self) -> bool:
        """Start polling; False when it runs already (e.g. a second lifespan of the same app: leave it alone)."""
        if self._task is not None:
            return False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sts-pool-monitor")
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _track(self, endpoints: list[str]) -> None:
        """Follow `endpoints` from now on; endpoints gone from DNS leave the metrics (a pod scaled away)."""
        for url in [u for u in self._health if u not in endpoints]:
            del self._health[url], self._failures[url]
            for gauge in (self.metrics.state, self.metrics.sessions, self.metrics.inflight, self.metrics.streams):
                with contextlib.suppress(KeyError):
                    gauge.remove(url)
        for url in endpoints:
            if url not in self._health:
                self._health[url] = EndpointHealth(url, EndpointState.UNKNOWN)
                self._failures[url] = 0
                self.metrics.state.labels(endpoint=url).set(EndpointState.UNKNOWN)
                self.metrics.streams.labels(endpoint=url).set(0)

    async def poll_once(self, client: httpx.AsyncClient) -> None:
        endpoints = await expand(self.urls)
        self._track(endpoints)
        for health in await check_all(client, endpoints):
            self._health[health.url] = health
            self.metrics.state.labels(endpoint=health.url).set(health.state)
            self.metrics.sessions.labels(endpoint=health.url).set(health.sessions)
            self.metrics.inflight.labels(endpoint=health.url).set(health.inflight)
            if health.state is EndpointState.DOWN:
                self._failures[health.url] += 1
                self.metrics.health_failures.labels(endpoint=health.url).inc()

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.settings.health_timeout_ms / 1000) as client:
            while True:
                try:
                    await self.poll_once(client)
                except Exception:  # the monitor must outlive any surprise; the next poll tries again
                    log.exception("STS pool health poll failed")
                await asyncio.sleep(self.settings.health_interval_ms / 1000)

    def healthy(self) -> bool:
        """Any endpoint healthy at the last poll (for the media-service's /health)."""
        return any(h.state is EndpointState.HEALTHY for h in self._health.values())

    def snapshot(self, streams: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
        """`sts_endpoints` of /v1/streams: each endpoint's health and this service's streams on it (from each
        stream's `sts.endpoint` status)."""
        placed: dict[str, list[str]] = {url: [] for url in self._health}
        for stream in streams:
            sts = stream.get("sts") if isinstance(stream.get("sts"), dict) else None
            endpoint = (sts or {}).get("endpoint")
            if isinstance(endpoint, str) and endpoint in placed:
                placed[endpoint].append(str(stream.get("stream_id", "")))
        rows = []
        for url, health in self._health.items():
            self.metrics.streams.labels(endpoint=url).set(len(placed[url]))
            rows.append({**health.as_dict(), "health_failures": self._failures[url], "streams": sorted(placed[url])})
        return rows
